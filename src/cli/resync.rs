//! `mailsync force-resync [-u USER] [-f] MASK` (doveadm force-resync): offline repair
//! (`mailsync_dbox::rebuild`). mdbox: the map and every mailbox index rebuilt from the
//! `m.N` files — as Dovecot, where resyncing any mdbox mailbox rebuilds the whole
//! storage, whatever MASK selects. sdbox: the indexes of the mailboxes matching MASK
//! rebuilt from their `u.N` files. Maildir (`mailsync_maildir::resync`): the uidlist of
//! each mailbox matching MASK rebuilt from the files, keeping every UID a well-formed
//! record still gives, then the index synced. mbox is not implemented yet: refused with
//! exit 64.

use std::ffi::OsString;
use std::io::Write;

use clap::Args;

use super::purge::{user_location, OpsCli};
use super::{exit, SharedWriter};

#[derive(Args, Debug)]
pub struct ResyncArgs {
    /// Run as this user instead of $USER.
    #[arg(short = 'u', value_name = "USER")]
    pub user: Option<String>,
    /// Fsck: also check the storage files (always done for mdbox).
    #[arg(short = 'f')]
    pub fsck: bool,
    /// Mailbox mask (mdbox: the whole storage is rebuilt).
    #[arg(required = true, value_name = "MASK")]
    pub mask: String,
}

pub fn run(
    cli: &OpsCli,
    args: &ResyncArgs,
    err: &mut SharedWriter,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> i32 {
    let (loc, opts, user) = match user_location(cli, args.user.as_deref(), env) {
        Ok(x) => x,
        Err((code, msg)) => {
            let _ = writeln!(err, "Fatal: {msg}");
            return code;
        }
    };
    if loc.driver == "maildir" {
        return run_maildir(cli, args, err, &loc, &opts, &user);
    }
    if loc.driver != "mdbox" && loc.driver != "sdbox" {
        let _ = writeln!(
            err,
            "mailsync({user}): Error: force-resync is not supported yet for {}",
            loc.driver
        );
        return exit::USAGE;
    }
    let store = match mailsync_dbox::DboxStore::open(&loc, &opts) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(
                err,
                "mailsync({user}): Error: Initializing mail storage from mail_location setting failed: {}",
                super::storage_error_text(&e)
            );
            return exit::TEMPFAIL;
        }
    };
    let result = if loc.driver == "mdbox" {
        mailsync_dbox::rebuild::rebuild_mdbox(store.layout()).map(|s| format!("{s:?}"))
    } else {
        mailsync_dbox::rebuild::rebuild_sdbox(store.layout(), &args.mask)
            .map(|n| format!("{n} messages indexed"))
    };
    match result {
        Ok(stats) => {
            if cli.debug {
                let _ = writeln!(err, "mailsync({user}): Debug: force-resync: {stats}");
            }
            exit::OK
        }
        Err(e) => {
            let _ = writeln!(
                err,
                "mailsync({user}): Error: Forcing a resync failed: {}",
                super::storage_error_text(&e)
            );
            e.kind().exit_code()
        }
    }
}

fn run_maildir(
    cli: &OpsCli,
    args: &ResyncArgs,
    err: &mut SharedWriter,
    loc: &mailstore::Location,
    opts: &mailstore::StoreOptions,
    user: &str,
) -> i32 {
    let store = match mailsync_maildir::MaildirStore::open(loc, opts) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(
                err,
                "mailsync({user}): Error: Initializing mail storage from mail_location setting failed: {}",
                super::storage_error_text(&e)
            );
            return exit::TEMPFAIL;
        }
    };
    match mailsync_maildir::resync::force_resync(&store, &args.mask) {
        Ok(done) => {
            for mb in &done {
                for fix in &mb.fixes {
                    let _ = writeln!(
                        err,
                        "mailsync({user}): Warning: Mailbox {}: dovecot-uidlist: {fix}",
                        mb.name
                    );
                }
                if cli.debug {
                    let _ = writeln!(
                        err,
                        "mailsync({user}): Debug: force-resync {}: {} UIDs kept, {} new",
                        mb.name, mb.kept, mb.renumbered
                    );
                }
            }
            exit::OK
        }
        Err(e) => {
            let _ = writeln!(
                err,
                "mailsync({user}): Error: Forcing a resync failed: {}",
                super::storage_error_text(&e)
            );
            e.kind().exit_code()
        }
    }
}
