#!/bin/sh
# Benchmark (issue #4 point 5): save N messages (default 20000) into a fresh mdbox store
# with `mailsync save`, then read them all back with `mailsync fetch`, and print the
# wall-clock seconds of each phase. Not a test: run it by hand on an otherwise idle
# machine, with a release binary:
#
#   cargo build --release && scripts/bench-mdbox.sh [N] [path/to/mailsync]
#
# Each save is one process (as an MDA would run it), so the figure includes process
# start-up and the per-save fsyncs. Messages are ~2 KiB, 100 distinct bodies.
set -eu
N=${1:-20000}
BIN=${2:-target/release/mailsync}
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release)" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-mdbox.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LOC="mdbox:$WORK/mdbox"
mkdir -p "$WORK/msgs"
i=0
while [ $i -lt 100 ]; do
    {
        printf 'From: sender%d@example.com\nTo: rcpt@example.org\nSubject: bench %d\n' $i $i
        printf 'Message-ID: <%d@bench>\nDate: Tue, 05 Mar 2024 10:20:30 +0100\n\n' $i
        j=0
        while [ $j -lt 30 ]; do
            printf 'line %d of body %d, padding padding padding padding padding\n' $j $i
            j=$((j + 1))
        done
    } > "$WORK/msgs/$i.eml"
    i=$((i + 1))
done
now() { date +%s.%N; }
export USER=${USER:-bench} HOME=$WORK
start=$(now)
i=0
while [ $i -lt "$N" ]; do
    "$BIN" -o "mail_location=$LOC" save -m INBOX "$WORK/msgs/$((i % 100)).eml"
    i=$((i + 1))
done
saved=$(now)
count=$("$BIN" -o "mail_location=$LOC" -f flow fetch "uid size.physical text" mailbox INBOX all | grep -c '^uid=')
read_done=$(now)
[ "$count" -eq "$N" ] || { echo "read back $count messages, expected $N" >&2; exit 1; }
du_kib=$(du -sk "$WORK/mdbox/storage" | cut -f1)
files=$(ls "$WORK/mdbox/storage" | grep -c '^m\.')
awk -v n="$N" -v a="$start" -v b="$saved" -v c="$read_done" -v du="$du_kib" -v f="$files" 'BEGIN {
    printf "saved %d messages in %.1f s (%.0f/s); read all back in %.1f s; storage %d KiB in %d m.N files\n",
        n, b - a, n / (b - a), c - b, du, f
}'
