//! Generates the benchmark store of `scripts/bench` (issue: performance), deterministically.
//!
//! ```text
//! gen_bench_store create DIR [MESSAGES]   # a Maildir++ store (default 28,000 messages)
//! gen_bench_store change DIR BATCH [N]    # N new INBOX messages + N flag changes (default 100)
//! gen_bench_store big DIR MIB             # a store of 20 small messages and one of MIB MiB
//! ```
//!
//! The store: INBOX plus four folders (`Sent`, `Archive`, `Archive.2023` — nested —, and the
//! non-ASCII `Entwürfe`, mUTF-7 `Entw&APw-rfe`). Sizes follow a log-normal curve (median
//! ~4.5 KB, from 1 KB up to 200 KB) plus four messages with 2–5 MB base64 attachments, so
//! 28,000 messages come to about 225 MB as in the issue. Headers are what a delivered message
//! carries (Return-Path, Received, DKIM-style long lines, MIME); flags and keywords are mixed
//! (70% \Seen, 10% \Answered, 5% \Flagged, drafts in Entwürfe, 8% with keywords from
//! `dovecot-keywords`). The same arguments always give the same bytes, names and mtimes.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// xorshift64*: small, deterministic, good enough for picking sizes and words.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A standard normal deviate (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

const FOLDERS: [(&str, u64); 5] = [
    ("", 60),
    (".Sent", 15),
    (".Archive", 10),
    (".Archive.2023", 10),
    (".Entw&APw-rfe", 5),
];
const KEYWORDS: [&str; 4] = ["$Forwarded", "Junk", "NonJunk", "$label1"];
const WORDS: [&str; 24] = [
    "the",
    "meeting",
    "report",
    "quarterly",
    "attached",
    "please",
    "review",
    "invoice",
    "schedule",
    "project",
    "update",
    "regards",
    "thanks",
    "server",
    "migration",
    "mailbox",
    "tomorrow",
    "budget",
    "draft",
    "customer",
    "deadline",
    "office",
    "network",
    "agenda",
];
const NAMES: [&str; 8] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
];
/// 2023-01-01T00:00:00Z; received dates spread over two years from here.
const EPOCH_START: u64 = 1_672_531_200;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("create") if args.len() >= 2 => {
            number(args.get(2), 28_000).and_then(|n| create(Path::new(&args[1]), n))
        }
        Some("change") if args.len() >= 3 => number(args.get(2), 1).and_then(|batch| {
            number(args.get(3), 100).and_then(|n| change(Path::new(&args[1]), batch, n))
        }),
        Some("big") if args.len() >= 3 => {
            number(args.get(2), 200).and_then(|mib| big(Path::new(&args[1]), mib))
        }
        _ => {
            eprintln!(
                "usage: gen_bench_store create DIR [MESSAGES] | change DIR BATCH [N] | big DIR MIB"
            );
            std::process::exit(64);
        }
    };
    if let Err(e) = result {
        eprintln!("gen_bench_store: {e}");
        std::process::exit(1);
    }
}

/// A numeric argument, `default` when absent; anything else is an error.
fn number(arg: Option<&String>, default: u64) -> io::Result<u64> {
    match arg {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| io::Error::other(format!("not a number: {s:?}"))),
    }
}

fn make_maildir(dir: &Path) -> io::Result<()> {
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    Ok(())
}

fn create(root: &Path, count: u64) -> io::Result<()> {
    if root.exists() {
        return Err(io::Error::other(format!("{} exists", root.display())));
    }
    for (folder, _) in FOLDERS {
        let dir = root.join(folder);
        make_maildir(&dir)?;
        if !folder.is_empty() {
            fs::write(dir.join("maildirfolder"), b"")?;
        }
        let mut kw = String::new();
        for (i, k) in KEYWORDS.iter().enumerate() {
            kw.push_str(&format!("{i} {k}\n"));
        }
        fs::write(dir.join("dovecot-keywords"), kw)?;
    }
    fs::write(
        root.join("subscriptions"),
        "Sent\nArchive\nArchive.2023\nEntw&APw-rfe\n",
    )?;
    let mut rng = Rng::new(28_000);
    let total_weight: u64 = FOLDERS.iter().map(|f| f.1).sum();
    // four big ones, spread through the store
    let big_at: Vec<u64> = (1..=4).map(|i| i * count / 5).collect();
    for i in 0..count {
        let mut pick = rng.below(total_weight);
        let mut folder = FOLDERS[0].0;
        for (f, w) in FOLDERS {
            if pick < w {
                folder = f;
                break;
            }
            pick -= w;
        }
        let attachment = if big_at.contains(&i) {
            (2 + rng.below(4)) * 1024 * 1024
        } else {
            0
        };
        let body_size = if attachment > 0 {
            2_000
        } else {
            ((4_500f64.ln() + 1.0 * rng.normal()).exp() as u64).clamp(600, 199_000)
        };
        let flags = pick_flags(&mut rng, folder);
        write_message(
            &root.join(folder),
            "cur",
            i,
            &mut rng,
            body_size,
            attachment,
            &flags,
        )?;
    }
    Ok(())
}

fn pick_flags(rng: &mut Rng, folder: &str) -> String {
    let mut flags = String::new();
    if folder.starts_with(".Entw") {
        flags.push('D');
    }
    if rng.below(100) < 5 {
        flags.push('F');
    }
    if rng.below(100) < 10 {
        flags.push('R');
    }
    if folder == ".Sent" || rng.below(100) < 70 {
        flags.push('S');
    }
    if rng.below(100) < 8 {
        // keyword letters a.. map to dovecot-keywords lines 0..
        flags.push((b'a' + rng.below(KEYWORDS.len() as u64) as u8) as char);
        if rng.below(3) == 0 {
            flags.push('c');
        }
    }
    let mut v: Vec<char> = flags.chars().collect();
    v.sort_unstable();
    v.dedup();
    v.into_iter().collect()
}

/// Writes one message into `dir/sub` (cur with `:2,FLAGS`, new without) and returns its path.
fn write_message(
    dir: &Path,
    sub: &str,
    n: u64,
    rng: &mut Rng,
    body_size: u64,
    attachment: u64,
    flags: &str,
) -> io::Result<PathBuf> {
    let received = received_at(n, rng);
    let bytes = message_bytes(n, rng, received, body_size, attachment);
    let base = format!("{received}.M{n}P4242.bench,S={}", bytes.len());
    let name = if sub == "cur" {
        format!("{base}:2,{flags}")
    } else {
        base
    };
    let path = dir.join(sub).join(name);
    let mut f = fs::File::create(&path)?;
    f.write_all(&bytes)?;
    f.set_modified(UNIX_EPOCH + Duration::from_secs(received))?;
    Ok(path)
}

/// Received dates: the store's messages spread over 2023–2024 (~2,000 s apart, wrapping
/// around for stores over ~31,000 messages); a change
/// batch's new mail (numbers from `CHANGE_BASE`) arrives a day per batch after 2025-01-01.
fn received_at(n: u64, rng: &mut Rng) -> u64 {
    if n >= CHANGE_BASE {
        let (batch, i) = (n / CHANGE_BASE, n % CHANGE_BASE);
        EPOCH_START + 2 * 365 * 86_400 + batch * 86_400 + i * 60 + rng.below(50)
    } else {
        EPOCH_START + (n * 2_000) % (2 * 365 * 86_400) + rng.below(1_500)
    }
}

/// Message numbers of change batch `b` start at `b * CHANGE_BASE`.
const CHANGE_BASE: u64 = 10_000_000;

fn message_bytes(n: u64, rng: &mut Rng, received: u64, body_size: u64, attachment: u64) -> Vec<u8> {
    let from = NAMES[rng.below(NAMES.len() as u64) as usize];
    let to = NAMES[rng.below(NAMES.len() as u64) as usize];
    let date = rfc2822(received);
    let mut m = String::new();
    m.push_str(&format!("Return-Path: <{from}@example.com>\n"));
    m.push_str(&format!(
        "Received: from mx{}.example.com (mx.example.com [192.0.2.{}])\n\tby mail.example.org \
         (Postfix) with ESMTPS id {:X}\n\tfor <{to}@example.org>; {date}\n",
        n % 7,
        n % 250,
        rng.next() & 0xFFFF_FFFF
    ));
    m.push_str(&format!(
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=s1;\n\t\
         h=from:to:subject:date:message-id; bh={:016x}{:016x}=;\n\tb={:016x}{:016x}{:016x}\n",
        rng.next(),
        rng.next(),
        rng.next(),
        rng.next(),
        rng.next()
    ));
    m.push_str(&format!(
        "From: {} <{from}@example.com>\n",
        capitalize(from)
    ));
    m.push_str(&format!("To: {} <{to}@example.org>\n", capitalize(to)));
    let subject: Vec<&str> = (0..4 + rng.below(6))
        .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
        .collect();
    m.push_str(&format!("Subject: {} #{n}\n", subject.join(" ")));
    m.push_str(&format!("Date: {date}\n"));
    m.push_str(&format!("Message-ID: <{n}.{:x}@example.com>\n", rng.next()));
    m.push_str("MIME-Version: 1.0\n");
    let boundary = format!("=_bench_{n:08x}");
    if attachment > 0 {
        m.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"{boundary}\"\n\n--{boundary}\n\
             Content-Type: text/plain; charset=utf-8\n\n"
        ));
    } else {
        m.push_str("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n");
    }
    let mut out = m.into_bytes();
    let target = out.len() as u64 + body_size;
    let mut line = String::new();
    while (out.len() as u64) < target {
        line.clear();
        while line.len() < 60 {
            line.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
            line.push(' ');
        }
        line.push('\n');
        out.extend_from_slice(line.as_bytes());
    }
    if attachment > 0 {
        out.extend_from_slice(
            format!(
                "\n--{boundary}\nContent-Type: application/octet-stream; name=\"data{n}.bin\"\n\
                 Content-Transfer-Encoding: base64\nContent-Disposition: attachment\n\n"
            )
            .as_bytes(),
        );
        let mut raw = vec![0u8; 57];
        let mut left = attachment * 3 / 4;
        while left > 0 {
            for b in raw.iter_mut() {
                *b = rng.next() as u8;
            }
            out.extend_from_slice(base64_line(&raw).as_bytes());
            left = left.saturating_sub(57);
        }
        out.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
    }
    out
}

fn base64_line(raw: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(77);
    for c in raw.chunks(3) {
        let v = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s.push('\n');
    s
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// RFC 2822 date of a unix time, in UTC.
fn rfc2822(t: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = t / 86_400;
    let secs = t % 86_400;
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Batch `batch` of changes: `n` new messages in INBOX/new and `n` flag changes (toggling
/// \Flagged, spread over INBOX/cur by a stride). Renames keep the base name, as a client's
/// flag change does.
fn change(root: &Path, batch: u64, n: u64) -> io::Result<()> {
    let mut rng = Rng::new(1_000 + batch);
    for i in 0..n {
        let id = CHANGE_BASE * batch + i;
        let size = ((4_500f64.ln() + rng.normal()).exp() as u64).clamp(600, 199_000);
        write_message(root, "new", id, &mut rng, size, 0, "")?;
    }
    let cur = root.join("cur");
    let mut names: Vec<_> = fs::read_dir(&cur)?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    if names.is_empty() {
        return Ok(());
    }
    let stride = (names.len() as u64 / n.max(1)).max(1) as usize;
    let offset = (batch as usize * 7) % stride;
    let flagged = names
        .iter()
        .skip(offset)
        .step_by(stride)
        .filter(|name| name.to_string_lossy().contains(":2,"))
        .take(n as usize);
    for name in flagged {
        let s = name.to_string_lossy();
        let Some((base, flags)) = s.split_once(":2,") else {
            continue;
        };
        let mut f: Vec<char> = flags.chars().collect();
        if let Some(p) = f.iter().position(|&c| c == 'F') {
            f.remove(p);
        } else {
            f.push('F');
            f.sort_unstable();
        }
        let new: String = f.into_iter().collect();
        fs::rename(cur.join(name), cur.join(format!("{base}:2,{new}")))?;
    }
    Ok(())
}

/// A store of 20 small messages plus, when `mib` > 0, one message of `mib` MiB.
fn big(root: &Path, mib: u64) -> io::Result<()> {
    make_maildir(root)?;
    let mut rng = Rng::new(7);
    for i in 0..20 {
        write_message(root, "cur", i, &mut rng, 3_000, 0, "S")?;
    }
    if mib > 0 {
        write_message(root, "cur", 20, &mut rng, 2_000, mib * 1024 * 1024, "S")?;
    }
    Ok(())
}
