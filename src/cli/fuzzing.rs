//! Fuzz entry points for the CLI's parsers: each takes arbitrary bytes and must never
//! panic. Exercised over seeds and mutations by the unit test below.

use super::{config, dates, format, mime, query};

/// Search query parsing and evaluation-independent analysis: bytes split on NUL/space
/// into argv tokens.
pub fn fuzz_query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let argv: Vec<String> = text.split([' ', '\0']).map(String::from).collect();
    if let Ok(q) = query::Query::parse_at(&argv, 1_700_000_000) {
        let _ = q.mailbox_patterns();
        let _ = q.expunge_check("expunge");
        let _ = q.match_mailbox("INBOX", None, '/');
        let _ = q.needs_content();
    }
    for s in text.split(' ') {
        let _ = dates::parse_human_timestamp(s, 1_700_000_000);
        let _ = query::parse_size(s);
        let _ = query::SeqSet::parse(s);
    }
}

/// Dovecot config text.
pub fn fuzz_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(mut cfg) =
        config::Config::parse_str(&text, std::path::Path::new("/nonexistent/fuzz.conf"))
    {
        cfg.set_override("namespace/x/separator", "/");
        let _ = cfg.inbox_namespace();
    }
    let vars = config::Vars {
        user: "u@d".into(),
        home: Some("/h".into()),
    };
    let _ = config::expand_vars(&text, &vars);
}

/// A message: header parsing, decoding, dates, addresses and the body search walker.
pub fn fuzz_message(data: &[u8]) {
    let mut input = data;
    let Ok((block, rest)) = mime::read_header_block(&mut input) else {
        return;
    };
    let fields = mime::parse_header_fields(&block);
    for f in &fields {
        let _ = mime::decoded_header(&f.value);
        let _ = mime::parse_addresses(&f.value);
        let _ = dates::parse_rfc822_date(&f.value);
    }
    let _ = mime::search_message_text(&block, rest.clone(), &mut input, "needle", true);
    let mut json = Vec::new();
    format::json_escape(data, &mut json);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic mutations: truncations, byte flips and splices.
    fn mutations(seed: &[u8]) -> Vec<Vec<u8>> {
        let mut out = vec![seed.to_vec()];
        let mut x: u32 = 0x9e37_79b9;
        for i in 0..400 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut m = seed.to_vec();
            if m.is_empty() {
                m.push(x as u8);
            }
            let pos = x as usize % m.len();
            match i % 4 {
                0 => m.truncate(pos),
                1 => m[pos] = (x >> 8) as u8,
                2 => {
                    let tail = m[pos..].to_vec();
                    m.extend_from_slice(&tail);
                }
                _ => {
                    const SPECIAL: &[u8] = b"=?\n\t(\")%{*:\xff-";
                    m.insert(pos, SPECIAL[(x as usize >> 4) % SPECIAL.len()])
                }
            }
            out.push(m);
        }
        out
    }

    #[test]
    fn parsers_survive_seeds_and_mutations() {
        let queries: &[&[u8]] = &[
            b"mailbox INBOX ( uid 1:* or not seen ) larger 1k since 2024-03-05",
            b"header subject x or text y or body z sentbefore 1-Jan-2024 savedon 1d",
            b"( ( ( not not ) ) or or 1,2:* uid 4294967295:0 smaller 99999999999999999999t",
            b"mailbox-guid 00 guid x keyword k unkeyword k new old modseq 1 x-mailbox &AP-",
        ];
        let configs: &[&[u8]] = &[
            b"mail_location = maildir:~/M:INDEX=%h/i\nnamespace inbox {\n separator = /\n inbox = yes\n}\n",
            b"a = \"q\\\"x\" # c\n!include_try /nonexistent/*.conf\nx {\n y {\n}\n}\n%{user}%{home}%",
        ];
        let messages: &[&[u8]] = &[
            b"Subject: =?UTF-8?B?R3LDvMOfZQ==?=\nFrom: \"A, B\" <a@b>, (c) d@e\nDate: Tue, 05 Mar 2024 10:20:30 +0100\n\nbody\n",
            b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\nContent-Type: multipart/alternative; boundary=c\n\n--c\nContent-Transfer-Encoding: base64\n\naGk=\n--c--\n--b--\n",
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=E9=\r\n=ZZ\r\n",
        ];
        for seed in queries {
            for m in mutations(seed) {
                fuzz_query(&m);
            }
        }
        for seed in configs {
            for m in mutations(seed) {
                fuzz_config(&m);
            }
        }
        for seed in messages {
            for m in mutations(seed) {
                fuzz_message(&m);
            }
        }
    }
}
