//! The subset of Dovecot's configuration that the mail commands need: `mail_location`
//! and the inbox namespace's `separator`, read from a Dovecot config file (`-c`) and
//! `-o key=value` overrides.
//!
//! Syntax (src/lib-settings/settings-parser.c, src/config/config-parser.c): `key = value`
//! lines, `#` comments, `"quoted"` values, `section [name] {` ... `}` blocks (nested), and
//! `!include FILE` / `!include_try FILE` (relative to the including file, `*`/`?` globs
//! in the last path component). Other settings are kept but unused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::mime::unescape_backslashes;

/// One `namespace NAME { ... }` block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub settings: BTreeMap<String, String>,
}

impl Namespace {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(|s| s.as_str())
    }
    fn is_inbox(&self) -> bool {
        self.get("inbox").is_some_and(|v| v == "yes")
    }
}

/// Parsed settings. Values are raw (unexpanded) strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Top-level `key = value` settings.
    pub settings: BTreeMap<String, String>,
    /// Namespace blocks in file order.
    pub namespaces: Vec<Namespace>,
}

/// A config file error, naming the file and line.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

const MAX_INCLUDE_DEPTH: usize = 16;

impl Config {
    /// Reads and parses `path` with its includes.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        let mut sections = Vec::new();
        cfg.load_file(path, &mut sections, 0)?;
        if !sections.is_empty() {
            return Err(ConfigError(format!(
                "Error in configuration file {}: Missing '}}'",
                path.display()
            )));
        }
        Ok(cfg)
    }

    /// Parses config text (for tests and `-c` files); `origin` names it in errors and is
    /// the base of relative includes.
    pub fn parse_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        let mut sections = Vec::new();
        cfg.parse_text(text, origin, &mut sections, 0)?;
        if !sections.is_empty() {
            return Err(ConfigError(format!(
                "Error in configuration file {}: Missing '}}'",
                origin.display()
            )));
        }
        Ok(cfg)
    }

    fn load_file(
        &mut self,
        path: &Path,
        sections: &mut Vec<Section>,
        depth: usize,
    ) -> Result<(), ConfigError> {
        if depth > MAX_INCLUDE_DEPTH {
            return Err(ConfigError(format!(
                "Error in configuration file {}: Recursive include file",
                path.display()
            )));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| ConfigError(format!("open({}) failed: {e}", path.display())))?;
        let text = String::from_utf8_lossy(&bytes);
        self.parse_text(&text, path, sections, depth)
    }

    fn parse_text(
        &mut self,
        text: &str,
        origin: &Path,
        sections: &mut Vec<Section>,
        depth: usize,
    ) -> Result<(), ConfigError> {
        let err = |line: usize, msg: &str| {
            ConfigError(format!(
                "Error in configuration file {} line {line}: {msg}",
                origin.display()
            ))
        };
        let mut pending = String::new();
        for (i, raw_line) in text.lines().enumerate() {
            let lineno = i + 1;
            // A trailing backslash continues the line.
            if let Some(stripped) = raw_line.strip_suffix('\\') {
                pending.push_str(stripped);
                continue;
            }
            pending.push_str(raw_line);
            let line = std::mem::take(&mut pending);
            let line = strip_comment(&line);
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix('!') {
                let (directive, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                let arg = unquote(arg.trim());
                let required = match directive {
                    "include" => true,
                    "include_try" => false,
                    _ => return Err(err(lineno, &format!("Unknown directive !{directive}"))),
                };
                let base = origin.parent().unwrap_or(Path::new("."));
                let target = if Path::new(&arg).is_absolute() {
                    PathBuf::from(&arg)
                } else {
                    base.join(&arg)
                };
                let files = expand_glob(&target);
                if files.is_empty() && required && !has_glob(&target) {
                    return Err(err(
                        lineno,
                        &format!(
                            "stat({}) failed: No such file or directory",
                            target.display()
                        ),
                    ));
                }
                for f in files {
                    match self.load_file(&f, sections, depth + 1) {
                        Ok(()) => {}
                        Err(_) if !required && !f.exists() => {}
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            if line == "}" {
                if sections.pop().is_none() {
                    return Err(err(lineno, "Unexpected '}'"));
                }
                continue;
            }
            if let Some(head) = line.strip_suffix('{') {
                let mut words = head.split_whitespace();
                let kind = words.next().unwrap_or("").to_string();
                let name = unquote(words.next().unwrap_or(""));
                if kind == "namespace" && sections.is_empty() {
                    let idx = match self.namespaces.iter().position(|n| n.name == name) {
                        Some(idx) => idx,
                        None => {
                            self.namespaces.push(Namespace {
                                name: name.clone(),
                                settings: BTreeMap::new(),
                            });
                            self.namespaces.len() - 1
                        }
                    };
                    sections.push(Section::Namespace(idx));
                } else {
                    sections.push(Section::Other);
                }
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(err(lineno, "Expecting '='"));
            };
            let key = key.trim().to_string();
            let value = unquote(value.trim());
            match sections.last() {
                None => {
                    self.settings.insert(key, value);
                }
                Some(Section::Namespace(idx)) => {
                    self.namespaces[*idx].settings.insert(key, value);
                }
                Some(Section::Other) => {}
            }
        }
        Ok(())
    }

    /// Applies one `-o key=value`: a top-level key, or `namespace/NAME/KEY` (created
    /// when the config has no such namespace: doveadm ignores the override then).
    pub fn set_override(&mut self, key: &str, value: &str) {
        if let Some(rest) = key.strip_prefix("namespace/") {
            if let Some((name, setting)) = rest.split_once('/') {
                let ns = match self.namespaces.iter_mut().position(|n| n.name == name) {
                    Some(i) => &mut self.namespaces[i],
                    None => {
                        self.namespaces.push(Namespace {
                            name: name.to_string(),
                            settings: BTreeMap::new(),
                        });
                        self.namespaces.last_mut().unwrap()
                    }
                };
                ns.settings.insert(setting.to_string(), value.to_string());
                return;
            }
        }
        self.settings.insert(key.to_string(), value.to_string());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(|s| s.as_str())
    }

    /// The namespace mail commands work in: the one with `inbox = yes`, else the one with
    /// an empty prefix, else the first.
    pub fn inbox_namespace(&self) -> Option<&Namespace> {
        self.namespaces
            .iter()
            .find(|n| n.is_inbox())
            .or_else(|| {
                self.namespaces
                    .iter()
                    .find(|n| n.get("prefix").unwrap_or("").is_empty())
            })
            .or_else(|| self.namespaces.first())
    }
}

enum Section {
    Namespace(usize),
    Other,
}

/// Removes a `#` comment that is not inside double quotes.
fn strip_comment(line: &str) -> &str {
    let mut in_quotes = false;
    let mut prev_backslash = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' if !prev_backslash => in_quotes = !in_quotes,
            '#' if !in_quotes => return &line[..i],
            _ => {}
        }
        prev_backslash = c == '\\' && !prev_backslash;
    }
    line
}

/// Removes surrounding double or single quotes, resolving `\"` and `\\` inside.
fn unquote(value: &str) -> String {
    let bytes = value.as_bytes();
    if bytes.len() >= 2
        && ((bytes[0] == b'"' && bytes[bytes.len() - 1] == b'"')
            || (bytes[0] == b'\'' && bytes[bytes.len() - 1] == b'\''))
    {
        unescape_backslashes(&value[1..value.len() - 1])
    } else {
        value.to_string()
    }
}

fn has_glob(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy().contains(['*', '?']))
        .unwrap_or(false)
}

/// Expands `*`/`?` in the last component of `path`, sorted; a path without wildcards is
/// returned as is when it exists.
fn expand_glob(path: &Path) -> Vec<PathBuf> {
    if !has_glob(path) {
        return if path.exists() {
            vec![path.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    // A pattern ending in `..` (`/etc/*/..`) has no file name: it matches nothing.
    let Some(pattern) = path.file_name() else {
        return Vec::new();
    };
    let pattern = pattern.to_string_lossy().into_owned();
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if glob_match(pattern.as_bytes(), name.as_bytes()) {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    match pat.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob_match(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob_match(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob_match(rest, &s[1..]),
    }
}

/// Values for `%` variables (src/lib/var-expand.c, mail user variables).
#[derive(Clone, Debug, Default)]
pub struct Vars {
    pub user: String,
    pub home: Option<String>,
}

/// Expands `%u` (user), `%n` (user part before `@`), `%d` (domain part after `@`), `%h`
/// (home), `%%` (a `%`) and the long forms `%{user}`, `%{username}`, `%{domain}`,
/// `%{home}`. Unknown variables are kept literally.
pub fn expand_vars(value: &str, vars: &Vars) -> String {
    let (username, domain) = match vars.user.split_once('@') {
        Some((n, d)) => (n.to_string(), d.to_string()),
        None => (vars.user.clone(), String::new()),
    };
    let home = vars.home.clone().unwrap_or_default();
    // Each variable by its long name; the short forms are the same values.
    let long = |name: &str| match name {
        "user" => Some(vars.user.as_str()),
        "username" => Some(username.as_str()),
        "domain" => Some(domain.as_str()),
        "home" => Some(home.as_str()),
        _ => None,
    };
    let mut out = String::with_capacity(value.len());
    let mut chars = value.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(&(_, n)) = chars.peek() else {
            out.push('%');
            break;
        };
        chars.next();
        let short = match n {
            '%' => Some("%"),
            'u' => long("user"),
            'n' => long("username"),
            'd' => long("domain"),
            'h' => long("home"),
            _ => None,
        };
        if let Some(s) = short {
            out.push_str(s);
            continue;
        }
        if n == '{' {
            let rest = &value[i + 2..];
            if let Some(end) = rest.find('}') {
                if let Some(s) = long(&rest[..end]) {
                    out.push_str(s);
                    // skip the name and the closing brace
                    for _ in 0..=rest[..end].chars().count() {
                        chars.next();
                    }
                    continue;
                }
            }
        }
        out.push('%');
        out.push(n);
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn glob_ending_in_dot_dot_matches_nothing_instead_of_panicking() {
        assert!(expand_glob(Path::new("/etc/*/..")).is_empty());
    }

    use super::*;

    #[test]
    fn parses_settings_comments_quotes_and_namespaces() {
        let text = r#"
# comment
mail_location = maildir:~/Maildir # trailing comment
first_valid_uid = 0
quoted = "a # not comment"
namespace inbox {
  inbox = yes
  separator = /
  mailbox Sent {
    special_use = \Sent
  }
}
service imap {
  inet_listener { port = 0 }
}
"#;
        let cfg = Config::parse_str(text, Path::new("/x/dovecot.conf")).unwrap();
        assert_eq!(cfg.get("mail_location"), Some("maildir:~/Maildir"));
        assert_eq!(cfg.get("quoted"), Some("a # not comment"));
        assert_eq!(cfg.get("port"), None);
        let ns = cfg.inbox_namespace().unwrap();
        assert_eq!(ns.name, "inbox");
        assert_eq!(ns.get("separator"), Some("/"));
        assert_eq!(ns.get("special_use"), None);
    }

    #[test]
    fn includes_are_relative_and_include_try_tolerates_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("base.conf"),
            "mail_location = mbox:~/mail\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(dir.path().join("conf.d/10-a.conf"), "a = 1\n").unwrap();
        std::fs::write(dir.path().join("conf.d/20-b.conf"), "a = 2\n").unwrap();
        std::fs::write(
            dir.path().join("main.conf"),
            "!include base.conf\n!include conf.d/*.conf\n!include_try missing.conf\n",
        )
        .unwrap();
        let cfg = Config::load(&dir.path().join("main.conf")).unwrap();
        assert_eq!(cfg.get("mail_location"), Some("mbox:~/mail"));
        assert_eq!(cfg.get("a"), Some("2"));

        std::fs::write(dir.path().join("bad.conf"), "!include nope.conf\n").unwrap();
        let e = Config::load(&dir.path().join("bad.conf")).unwrap_err();
        assert!(e.0.contains("nope.conf"), "{e}");
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let e = Config::parse_str("a = 1\nbogus line\n", Path::new("/c.conf")).unwrap_err();
        assert_eq!(
            e.0,
            "Error in configuration file /c.conf line 2: Expecting '='"
        );
        let e = Config::parse_str("x {\n", Path::new("/c.conf")).unwrap_err();
        assert!(e.0.contains("Missing '}'"), "{e}");
        let e = Config::parse_str("}\n", Path::new("/c.conf")).unwrap_err();
        assert!(e.0.contains("Unexpected '}'"), "{e}");
    }

    #[test]
    fn overrides_set_top_level_and_namespace_keys() {
        let mut cfg =
            Config::parse_str("namespace inbox {\n inbox = yes\n}\n", Path::new("/c")).unwrap();
        cfg.set_override("mail_location", "maildir:/m");
        cfg.set_override("namespace/inbox/separator", "/");
        assert_eq!(cfg.get("mail_location"), Some("maildir:/m"));
        assert_eq!(cfg.inbox_namespace().unwrap().get("separator"), Some("/"));
        let mut empty = Config::default();
        empty.set_override("namespace/x/separator", ".");
        assert_eq!(empty.inbox_namespace().unwrap().get("separator"), Some("."));
    }

    #[test]
    fn expands_user_home_and_percent() {
        let vars = Vars {
            user: "alice@example.org".into(),
            home: Some("/home/alice".into()),
        };
        assert_eq!(
            expand_vars("maildir:/x/%u/%n/%d:INDEX=%h/idx:%%u:%{user}:%{home}:%z", &vars),
            "maildir:/x/alice@example.org/alice/example.org:INDEX=/home/alice/idx:%u:alice@example.org:/home/alice:%z"
        );
        assert_eq!(expand_vars("100%", &vars), "100%");
    }
}
