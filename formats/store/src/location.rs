//! Dovecot mail location strings: `DRIVER:PATH[:KEY=VALUE...]` (src/lib-storage/mailbox-list.c,
//! mailbox_list_settings_parse). `::` inside a value is a literal `:`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A parsed mail location, with `~` already expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// `maildir`, `mbox`, `sdbox`, `mdbox`, ...
    pub driver: String,
    /// The root directory (or file for mbox).
    pub root: PathBuf,
    /// `KEY=VALUE` options in order, keys upper-cased as Dovecot compares them.
    pub options: Vec<(String, String)>,
}

impl Location {
    /// Parses `spec`, expanding a leading `~` (in the path and in option values) to `home`.
    /// A relative root is taken relative to `home`, as doveadm does.
    pub fn parse(spec: &str, home: Option<&Path>) -> Result<Location> {
        let (driver, rest) = spec
            .split_once(':')
            .ok_or_else(|| Error::Params(format!("Invalid mail location (no driver): {spec}")))?;
        if driver.is_empty() || !driver.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::Params(format!(
                "Unknown mail storage driver {driver}"
            )));
        }
        let parts = split_unescaped(rest);
        let mut parts = parts.into_iter();
        let root = parts.next().unwrap_or_default();
        if root.is_empty() {
            return Err(Error::Params("Root mail directory not given".into()));
        }
        let root = expand_home(&root, home, true)?;
        let mut options = Vec::new();
        for p in parts {
            if p.is_empty() {
                continue;
            }
            let (k, v) = match p.split_once('=') {
                Some((k, v)) => (k.to_ascii_uppercase(), v.to_string()),
                None => (p.to_ascii_uppercase(), String::new()),
            };
            // `INDEX=MEMORY` is a keyword (in-memory indexes), not a path.
            let is_keyword = k == "INDEX" && v == "MEMORY";
            let v = if !is_keyword
                && matches!(
                    k.as_str(),
                    "INBOX" | "INDEX" | "CONTROL" | "ALT" | "VOLATILEDIR"
                ) {
                expand_home(&v, home, true)?.to_string_lossy().into_owned()
            } else {
                v
            };
            options.push((k, v));
        }
        Ok(Location {
            driver: driver.to_ascii_lowercase(),
            root,
            options,
        })
    }

    /// The last value given for `key` (upper-case).
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Errors when an option is not in `known`: Dovecot refuses unknown settings.
    pub fn check_options(&self, known: &[&str]) -> Result<()> {
        for (k, _) in &self.options {
            if !known.contains(&k.as_str()) {
                return Err(Error::Params(format!("Unknown setting: {k}")));
            }
        }
        Ok(())
    }
}

fn split_unescaped(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' {
            if chars.peek() == Some(&':') {
                chars.next();
                out.last_mut().unwrap().push(':');
            } else {
                out.push(String::new());
            }
        } else {
            out.last_mut().unwrap().push(c);
        }
    }
    out
}

fn expand_home(p: &str, home: Option<&Path>, relative_to_home: bool) -> Result<PathBuf> {
    if p == "~" || p.starts_with("~/") {
        let home =
            home.ok_or_else(|| Error::Params(format!("Home directory not set, can't expand {p}")))?;
        return Ok(if p == "~" {
            home.to_path_buf()
        } else {
            home.join(&p[2..])
        });
    }
    let path = PathBuf::from(p);
    if relative_to_home && path.is_relative() && !p.is_empty() {
        if let Some(home) = home {
            return Ok(home.join(path));
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_driver_root_and_options() {
        let l = Location::parse(
            "maildir:~/Maildir:LAYOUT=fs:INBOX=~/inbox:index=/idx",
            Some(Path::new("/home/u")),
        )
        .unwrap();
        assert_eq!(l.driver, "maildir");
        assert_eq!(l.root, PathBuf::from("/home/u/Maildir"));
        assert_eq!(l.option("LAYOUT"), Some("fs"));
        assert_eq!(l.option("INBOX"), Some("/home/u/inbox"));
        assert_eq!(l.option("INDEX"), Some("/idx"));
    }

    #[test]
    fn double_colon_is_literal() {
        let l = Location::parse("maildir:/a::b:LAYOUT=fs", None).unwrap();
        assert_eq!(l.root, PathBuf::from("/a:b"));
    }

    #[test]
    fn missing_root_is_an_error() {
        let e = Location::parse("maildir:", None).unwrap_err();
        assert!(
            e.to_string().contains("Root mail directory not given"),
            "{e}"
        );
        assert!(Location::parse("nodriver", None).is_err());
    }

    #[test]
    fn index_memory_is_a_keyword_not_a_path() {
        let l = Location::parse("maildir:~/M:INDEX=MEMORY", Some(Path::new("/h"))).unwrap();
        assert_eq!(l.option("INDEX"), Some("MEMORY"));
        let l = Location::parse("maildir:~/M:INDEX=mem", Some(Path::new("/h"))).unwrap();
        assert_eq!(l.option("INDEX"), Some("/h/mem"));
    }

    #[test]
    fn relative_root_is_under_home() {
        let l = Location::parse("maildir:rel/x", Some(Path::new("/h"))).unwrap();
        assert_eq!(l.root, PathBuf::from("/h/rel/x"));
    }
}
