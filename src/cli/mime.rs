//! Message parsing the CLI needs: the header block (read from the front of the message
//! stream, never the whole message), header lookup, unfolding, RFC 2047 decoding, address
//! lists, and a streaming MIME walker that feeds decoded body text to a substring search.

use std::io::{self, BufRead, BufReader, Read};

/// Upper bound for one header block kept in memory (Dovecot caps a header line at 10 MiB
/// by default via message_header_parser; 64 MiB here is a safety bound, not a limit mail
/// is expected to reach).
const MAX_HEADER_BLOCK: usize = 64 << 20;

/// Reads the header block from the start of `input`: everything up to and including the
/// first empty line (`\n` or `\r\n`), or the whole input when there is none. Returns the
/// header bytes and the bytes read past it (the start of the body).
pub fn read_header_block(input: &mut dyn Read) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let mut scan_from = 0;
    loop {
        if let Some(end) = find_header_end(&data, scan_from) {
            let rest = data.split_off(end);
            return Ok((data, rest));
        }
        scan_from = data.len().saturating_sub(3);
        if data.len() > MAX_HEADER_BLOCK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "header block too large",
            ));
        }
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok((data, Vec::new()));
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// Offset just past the blank line ending the header, if `data` contains it.
fn find_header_end(data: &[u8], from: usize) -> Option<usize> {
    // An empty first line means no headers.
    if data.first() == Some(&b'\n') {
        return Some(1);
    }
    if data.starts_with(b"\r\n") {
        return Some(2);
    }
    let mut i = from.max(1);
    while i < data.len() {
        if data[i] == b'\n' {
            // previous line ended at i-1 or i-2 (CR)
            if data[i - 1] == b'\n' {
                return Some(i + 1);
            }
            if data[i - 1] == b'\r' && i >= 2 && data[i - 2] == b'\n' {
                return Some(i + 1);
            }
        }
        i += 1;
    }
    None
}

/// One header field: name as written, raw value (folds kept, leading whitespace and the
/// final line break removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderField {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Splits a header block into fields. Lines without a colon are skipped.
pub fn parse_header_fields(block: &[u8]) -> Vec<HeaderField> {
    let mut fields: Vec<HeaderField> = Vec::new();
    let mut lines = block.split_inclusive(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let trimmed = strip_eol(line);
        if trimmed.is_empty() {
            break;
        }
        if trimmed[0] == b' ' || trimmed[0] == b'\t' {
            // continuation of a line without a field: ignore
            continue;
        }
        let Some(colon) = trimmed.iter().position(|&b| b == b':') else {
            continue;
        };
        let mut name = trimmed[..colon].to_vec();
        while name.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
            name.pop();
        }
        let mut value = trimmed[colon + 1..].to_vec();
        let lead = value
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        value.drain(..lead);
        while let Some(next) = lines.peek() {
            if next.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                value.push(b'\n');
                value.extend_from_slice(strip_eol(next));
                lines.next();
            } else {
                break;
            }
        }
        fields.push(HeaderField { name, value });
    }
    fields
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// All values of header `name` (case-insensitive), in order.
pub fn header_values<'a>(fields: &'a [HeaderField], name: &str) -> Vec<&'a [u8]> {
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
        .map(|f| f.value.as_slice())
        .collect()
}

/// Unfolds a header value as MESSAGE_HEADER_PARSER_FLAG_CLEAN_ONELINE does
/// (src/lib-mail/message-header-parser.c): line breaks are dropped, and a continuation
/// line starting with a tab gets a space instead of that tab.
pub fn unfold(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'\r' => {}
            b'\n' => {
                if value.get(i + 1) == Some(&b'\t') {
                    out.push(b' ');
                    i += 1;
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Converts bytes in `charset` to UTF-8; unknown charsets and invalid UTF-8 are converted
/// lossily.
pub fn charset_to_utf8(charset: &str, data: &[u8]) -> String {
    let cs = charset.trim().trim_matches('"');
    if cs.eq_ignore_ascii_case("utf-8") || cs.eq_ignore_ascii_case("utf8") || cs.is_empty() {
        return String::from_utf8_lossy(data).into_owned();
    }
    if cs.eq_ignore_ascii_case("us-ascii") || cs.eq_ignore_ascii_case("ascii") {
        if let Ok(s) = std::str::from_utf8(data) {
            return s.to_string();
        }
    }
    match mail_parser::decoders::charsets::map::charset_decoder(cs.as_bytes()) {
        Some(decode) => decode(data),
        None => String::from_utf8_lossy(data).into_owned(),
    }
}

/// Decodes base64 leniently, as a search over damaged mail should: bytes outside the
/// alphabet (whitespace, garbage) are skipped and decoding stops at the first `=`.
pub fn base64_decode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in data {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => continue,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes RFC 2047 `Q` encoding (`_` is a space).
fn q_decode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'_' => out.push(b' '),
            b'=' if i + 2 < data.len() => match (hex_val(data[i + 1]), hex_val(data[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'='),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Decodes one quoted-printable line (without its line break); returns the bytes and
/// whether the line ended with a soft break (`=`).
fn qp_decode_line(line: &[u8]) -> (Vec<u8>, bool) {
    let mut line = line;
    while line.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
        line = &line[..line.len() - 1];
    }
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        if line[i] == b'=' {
            if i + 1 == line.len() {
                return (out, true);
            }
            if i + 2 < line.len() {
                if let (Some(h), Some(l)) = (hex_val(line[i + 1]), hex_val(line[i + 2])) {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(line[i]);
        i += 1;
    }
    (out, false)
}

/// Decodes RFC 2047 encoded words in a header value to UTF-8 (message_header_decode_utf8):
/// whitespace between two encoded words is dropped; text outside encoded words is kept
/// (invalid UTF-8 converted lossily).
pub fn decode_rfc2047(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut i = 0;
    let mut last_was_encoded = false;
    let mut plain_start = 0;
    while i < value.len() {
        if value[i] == b'=' && value.get(i + 1) == Some(&b'?') {
            if let Some((decoded, end)) = parse_encoded_word(value, i) {
                // flush plain text before, dropping whitespace between encoded words
                let plain = &value[plain_start..i];
                let only_ws = plain.iter().all(|b| b.is_ascii_whitespace());
                if !(last_was_encoded && only_ws) {
                    out.push_str(&String::from_utf8_lossy(plain));
                }
                out.push_str(&decoded);
                i = end;
                plain_start = end;
                last_was_encoded = true;
                continue;
            }
        }
        if !value[i].is_ascii_whitespace() {
            last_was_encoded = false;
        }
        i += 1;
    }
    out.push_str(&String::from_utf8_lossy(&value[plain_start..]));
    out
}

/// Parses `=?charset?enc?text?=` at `start`; returns the decoded text and the end offset.
fn parse_encoded_word(value: &[u8], start: usize) -> Option<(String, usize)> {
    let rest = &value[start + 2..];
    let q1 = rest.iter().position(|&b| b == b'?')?;
    let charset = std::str::from_utf8(&rest[..q1]).ok()?;
    // RFC 2231 language suffix: charset*lang
    let charset = charset.split('*').next().unwrap_or(charset);
    let enc = *rest.get(q1 + 1)?;
    if rest.get(q1 + 2) != Some(&b'?') {
        return None;
    }
    let text_start = q1 + 3;
    let text_len = rest[text_start..].windows(2).position(|w| w == b"?=")?;
    let text = &rest[text_start..text_start + text_len];
    if text.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let bytes = match enc {
        b'B' | b'b' => base64_decode(text),
        b'Q' | b'q' => q_decode(text),
        _ => return None,
    };
    let end = start + 2 + text_start + text_len + 2;
    Some((charset_to_utf8(charset, &bytes), end))
}

/// A header value as searched: unfolded and decoded to UTF-8.
pub fn decoded_header(value: &[u8]) -> String {
    decode_rfc2047(&unfold(value))
}

/// One parsed address (message_address_parse), enough for `hdr.X.address*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Address {
    pub name: Option<String>,
    pub mailbox: Option<String>,
    pub domain: Option<String>,
}

/// Parses an address list: `a@b, "Name" <c@d>, Name <e@f>, group: g@h;`.
pub fn parse_addresses(value: &[u8]) -> Vec<Address> {
    let text = String::from_utf8_lossy(&unfold(value)).into_owned();
    let mut items = Vec::new();
    let mut cur = String::new();
    let (mut in_q, mut in_angle, mut depth) = (false, false, 0);
    let mut prev_bs = false;
    for c in text.chars() {
        match c {
            '"' if !prev_bs && depth == 0 => in_q = !in_q,
            '(' if !in_q => depth += 1,
            ')' if !in_q && depth > 0 => depth -= 1,
            '<' if !in_q && depth == 0 => in_angle = true,
            '>' if !in_q && depth == 0 => in_angle = false,
            ',' | ';' if !in_q && !in_angle && depth == 0 => {
                items.push(std::mem::take(&mut cur));
                prev_bs = false;
                continue;
            }
            ':' if !in_q && !in_angle && depth == 0 => {
                // group name: drop it
                cur.clear();
                prev_bs = false;
                continue;
            }
            _ => {}
        }
        prev_bs = c == '\\' && !prev_bs;
        cur.push(c);
    }
    items.push(cur);
    items
        .into_iter()
        .filter_map(|item| {
            let item = strip_comments(&item);
            let item = item.trim();
            if item.is_empty() {
                return None;
            }
            let (name, addr) = match (item.find('<'), item.rfind('>')) {
                (Some(l), Some(r)) if l < r => {
                    let name = item[..l].trim();
                    let name = unquote(name);
                    (
                        if name.is_empty() { None } else { Some(name) },
                        item[l + 1..r].trim().to_string(),
                    )
                }
                _ => (None, item.to_string()),
            };
            // drop a source route "@a,@b:"
            let addr = addr.rsplit(':').next().unwrap_or(&addr).to_string();
            let (mailbox, domain) = match addr.rfind('@') {
                Some(at) => (Some(unquote(&addr[..at])), Some(addr[at + 1..].to_string())),
                None => (Some(unquote(&addr)), None),
            };
            Some(Address {
                name,
                mailbox,
                domain,
            })
        })
        .collect()
}

fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut depth, mut in_q, mut prev_bs) = (0, false, false);
    for c in s.chars() {
        match c {
            '"' if !prev_bs && depth == 0 => in_q = !in_q,
            '(' if !in_q => {
                depth += 1;
                continue;
            }
            ')' if !in_q && depth > 0 => {
                depth -= 1;
                continue;
            }
            _ => {}
        }
        prev_bs = c == '\\' && !prev_bs;
        if depth == 0 {
            out.push(c);
        }
    }
    out
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        unescape_backslashes(&s[1..s.len() - 1])
    } else {
        s.to_string()
    }
}

/// The inside of a quoted string with its backslash escapes resolved: `\x` is `x` for any
/// `x`, a lone `\` at the end is dropped (RFC 5322 quoted-pairs; Dovecot's config strings).
pub fn unescape_backslashes(quoted: &str) -> String {
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ------------------------------------------------------------ text search

/// Case-insensitive comparison form of text: Unicode lower case (Dovecot compares with
/// i;unicode-casemap; lower-casing covers the same ground for search terms in practice).
pub fn fold_case(s: &str) -> String {
    s.to_lowercase()
}

/// Streaming substring search over text fed in pieces: keeps the last characters of the
/// previous piece so a match across two pieces is found, without keeping the whole text.
pub struct StreamSearch {
    needle: String,
    needle_chars: usize,
    tail: String,
    pub found: bool,
}

impl StreamSearch {
    pub fn new(needle: &str) -> StreamSearch {
        let needle = fold_case(needle);
        StreamSearch {
            needle_chars: needle.chars().count(),
            needle,
            tail: String::new(),
            found: false,
        }
    }

    /// Feeds the next piece of text.
    pub fn feed(&mut self, text: &str) {
        if self.found {
            return;
        }
        if self.needle.is_empty() {
            self.found = true;
            return;
        }
        let mut hay = std::mem::take(&mut self.tail);
        hay.push_str(&fold_case(text));
        if hay.contains(&self.needle) {
            self.found = true;
            return;
        }
        // keep needle_chars - 1 characters for the next piece
        let keep = self.needle_chars.saturating_sub(1);
        let total = hay.chars().count();
        let skip = total.saturating_sub(keep);
        self.tail = hay.chars().skip(skip).collect();
    }

    /// Starts a new, unrelated text (a new MIME part): no match across the boundary.
    pub fn reset_context(&mut self) {
        self.tail.clear();
    }
}

/// Content-Type/Content-Transfer-Encoding facts of one MIME part.
#[derive(Clone, Debug, Default)]
struct PartInfo {
    multipart_boundary: Option<Vec<u8>>,
    message_rfc822: bool,
    charset: String,
    encoding: Encoding,
    text: bool,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
enum Encoding {
    #[default]
    Plain,
    QuotedPrintable,
    Base64,
}

/// Extracts a parameter (`boundary`, `charset`) from a Content-Type value.
fn content_type_param(value: &str, param: &str) -> Option<String> {
    for part in value.split(';').skip(1) {
        let (k, v) = part.split_once('=')?;
        if k.trim().eq_ignore_ascii_case(param) {
            let v = v.trim();
            return Some(unquote(v));
        }
    }
    None
}

fn part_info(fields: &[HeaderField], default_text: bool) -> PartInfo {
    let ct = header_values(fields, "Content-Type")
        .first()
        .map(|v| String::from_utf8_lossy(&unfold(v)).into_owned());
    let cte = header_values(fields, "Content-Transfer-Encoding")
        .first()
        .map(|v| {
            String::from_utf8_lossy(&unfold(v))
                .trim()
                .to_ascii_lowercase()
        });
    let mut info = PartInfo {
        text: default_text,
        charset: "us-ascii".into(),
        ..PartInfo::default()
    };
    if let Some(ct) = ct {
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if mime.starts_with("multipart/") {
            info.multipart_boundary = content_type_param(&ct, "boundary").map(|b| b.into_bytes());
            info.text = false;
        } else if mime == "message/rfc822" {
            info.message_rfc822 = true;
            info.text = false;
        } else {
            info.text = mime.starts_with("text/") || mime.is_empty();
        }
        if let Some(cs) = content_type_param(&ct, "charset") {
            info.charset = cs;
        }
    }
    info.encoding = match cte.as_deref() {
        Some("quoted-printable") => Encoding::QuotedPrintable,
        Some("base64") => Encoding::Base64,
        _ => Encoding::Plain,
    };
    info
}

/// Longest line handled as one piece while walking a body; longer lines are processed in
/// pieces of this size (their boundaries can then not be recognised, which is fine: a
/// MIME boundary line is short).
const MAX_LINE: usize = 64 * 1024;

/// Searches the decoded text of a message for `needle`, streaming: `body` = bodies of the
/// text parts (SEARCH BODY), `with_headers` also searches the decoded headers of every
/// part (SEARCH TEXT). `header_block`/`rest` are what [`read_header_block`] returned and
/// `input` the remaining stream.
pub fn search_message_text(
    header_block: &[u8],
    rest: Vec<u8>,
    input: &mut dyn Read,
    needle: &str,
    with_headers: bool,
) -> io::Result<bool> {
    let mut search = StreamSearch::new(needle);
    let fields = parse_header_fields(header_block);
    if with_headers {
        search_headers(&fields, &mut search);
        if search.found {
            return Ok(true);
        }
    }
    let top = part_info(&fields, true);
    let chained = io::Cursor::new(rest).chain(input);
    let mut reader = BufReader::with_capacity(MAX_LINE, chained);
    let mut walker = Walker {
        search: &mut search,
        with_headers,
        boundaries: Vec::new(),
    };
    walker.walk_part(&mut reader, top)?;
    Ok(search.found)
}

fn search_headers(fields: &[HeaderField], search: &mut StreamSearch) {
    for f in fields {
        search.reset_context();
        let mut line = String::from_utf8_lossy(&f.name).into_owned();
        line.push_str(": ");
        line.push_str(&decoded_header(&f.value));
        search.feed(&line);
        if search.found {
            return;
        }
    }
    search.reset_context();
}

struct Walker<'a> {
    search: &'a mut StreamSearch,
    with_headers: bool,
    /// Boundaries of the enclosing multiparts, innermost last.
    boundaries: Vec<Vec<u8>>,
}

/// What ended a part body.
enum PartEnd {
    Eof,
    /// Boundary at this depth in `boundaries`; `true` when it is the closing `--b--`.
    Boundary(usize, bool),
}

impl Walker<'_> {
    /// Reads one line (with its `\n`), at most MAX_LINE bytes.
    fn read_line(reader: &mut dyn BufRead, line: &mut Vec<u8>) -> io::Result<usize> {
        line.clear();
        loop {
            let buf = match reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(line.len());
            }
            let room = MAX_LINE - line.len();
            let take = buf.len().min(room);
            if let Some(nl) = buf[..take].iter().position(|&b| b == b'\n') {
                line.extend_from_slice(&buf[..=nl]);
                reader.consume(nl + 1);
                return Ok(line.len());
            }
            line.extend_from_slice(&buf[..take]);
            reader.consume(take);
            if line.len() >= MAX_LINE {
                return Ok(line.len());
            }
        }
    }

    fn boundary_of(&self, line: &[u8]) -> Option<(usize, bool)> {
        let l = strip_eol(line);
        let rest = l.strip_prefix(b"--")?;
        for (depth, b) in self.boundaries.iter().enumerate().rev() {
            if let Some(after) = rest.strip_prefix(b.as_slice()) {
                let after_trim: Vec<u8> = after
                    .iter()
                    .copied()
                    .filter(|c| *c != b' ' && *c != b'\t')
                    .collect();
                if after_trim.is_empty() {
                    return Some((depth, false));
                }
                if after_trim == b"--" {
                    return Some((depth, true));
                }
            }
        }
        None
    }

    /// Walks a part whose header is already parsed into `info`; returns what ended it.
    fn walk_part(&mut self, reader: &mut dyn BufRead, info: PartInfo) -> io::Result<PartEnd> {
        self.search.reset_context();
        if let Some(boundary) = info.multipart_boundary.clone() {
            return self.walk_multipart(reader, boundary);
        }
        if info.message_rfc822 {
            return match self.read_part_header(reader)? {
                None => Ok(PartEnd::Eof),
                Some(Err(end)) => Ok(end),
                Some(Ok(fields)) => {
                    if self.with_headers {
                        search_headers(&fields, self.search);
                    }
                    self.walk_part(reader, part_info(&fields, true))
                }
            };
        }
        let mut line = Vec::new();
        let mut b64_carry: Vec<u8> = Vec::new();
        let mut qp_pending: Vec<u8> = Vec::new();
        loop {
            if Self::read_line(reader, &mut line)? == 0 {
                self.flush_b64(&info, &mut b64_carry);
                return Ok(PartEnd::Eof);
            }
            if let Some((depth, closing)) = self.boundary_of(&line) {
                self.flush_b64(&info, &mut b64_carry);
                return Ok(PartEnd::Boundary(depth, closing));
            }
            if self.search.found || !info.text {
                continue;
            }
            let decoded: Vec<u8> = match info.encoding {
                Encoding::Plain => line.clone(),
                Encoding::QuotedPrintable => {
                    let had_nl = line.ends_with(b"\n");
                    let (mut d, soft) = qp_decode_line(strip_eol(&line));
                    if !soft && had_nl {
                        d.push(b'\n');
                    }
                    let mut all = std::mem::take(&mut qp_pending);
                    all.extend_from_slice(&d);
                    all
                }
                Encoding::Base64 => {
                    b64_carry.extend(line.iter().copied().filter(|c| {
                        c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/' || *c == b'='
                    }));
                    let whole = b64_carry.len() / 4 * 4;
                    let chunk: Vec<u8> = b64_carry.drain(..whole).collect();
                    base64_decode(&chunk)
                }
            };
            self.feed_bytes(&info.charset, &decoded);
        }
    }

    fn flush_b64(&mut self, info: &PartInfo, carry: &mut Vec<u8>) {
        if !carry.is_empty() && info.text && !self.search.found {
            let d = base64_decode(carry);
            self.feed_bytes(&info.charset, &d);
        }
        carry.clear();
    }

    fn feed_bytes(&mut self, charset: &str, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let text = charset_to_utf8(charset, data);
        self.search.feed(&text);
    }

    /// Reads a part header up to its blank line. `None` at EOF; `Err(end)` when a
    /// boundary came first.
    #[allow(clippy::type_complexity)]
    fn read_part_header(
        &mut self,
        reader: &mut dyn BufRead,
    ) -> io::Result<Option<Result<Vec<HeaderField>, PartEnd>>> {
        let mut block = Vec::new();
        let mut line = Vec::new();
        loop {
            if Self::read_line(reader, &mut line)? == 0 {
                return Ok(if block.is_empty() {
                    None
                } else {
                    Some(Ok(parse_header_fields(&block)))
                });
            }
            if let Some((depth, closing)) = self.boundary_of(&line) {
                return Ok(Some(Err(PartEnd::Boundary(depth, closing))));
            }
            if strip_eol(&line).is_empty() {
                return Ok(Some(Ok(parse_header_fields(&block))));
            }
            if block.len() < MAX_HEADER_BLOCK {
                block.extend_from_slice(&line);
            }
        }
    }

    fn walk_multipart(
        &mut self,
        reader: &mut dyn BufRead,
        boundary: Vec<u8>,
    ) -> io::Result<PartEnd> {
        self.boundaries.push(boundary);
        let my_depth = self.boundaries.len() - 1;
        let mut line = Vec::new();
        // preamble: skip to the first boundary
        let mut end = loop {
            if Self::read_line(reader, &mut line)? == 0 {
                self.boundaries.pop();
                return Ok(PartEnd::Eof);
            }
            if let Some((depth, closing)) = self.boundary_of(&line) {
                break PartEnd::Boundary(depth, closing);
            }
        };
        loop {
            match end {
                PartEnd::Eof => {
                    self.boundaries.pop();
                    return Ok(PartEnd::Eof);
                }
                PartEnd::Boundary(depth, closing) if depth < my_depth => {
                    self.boundaries.truncate(depth + 1);
                    return Ok(PartEnd::Boundary(depth, closing));
                }
                PartEnd::Boundary(_, true) => {
                    // epilogue: skip until an outer boundary or EOF
                    self.boundaries.pop();
                    loop {
                        if Self::read_line(reader, &mut line)? == 0 {
                            return Ok(PartEnd::Eof);
                        }
                        if let Some((depth, closing)) = self.boundary_of(&line) {
                            return Ok(PartEnd::Boundary(depth, closing));
                        }
                    }
                }
                PartEnd::Boundary(_, false) => {
                    // a new child part
                    let header = self.read_part_header(reader)?;
                    end = match header {
                        None => PartEnd::Eof,
                        Some(Err(e)) => e,
                        Some(Ok(fields)) => {
                            if self.with_headers {
                                search_headers(&fields, self.search);
                            }
                            self.walk_part(reader, part_info(&fields, true))?
                        }
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_block_split_lf_crlf_and_none() {
        let msg = b"A: 1\nB: 2\n\nbody\n";
        let (h, rest) = read_header_block(&mut &msg[..]).unwrap();
        assert_eq!(h, b"A: 1\nB: 2\n\n");
        assert_eq!(rest, b"body\n");
        let msg = b"A: 1\r\n\r\nbody";
        let (h, rest) = read_header_block(&mut &msg[..]).unwrap();
        assert_eq!(h, b"A: 1\r\n\r\n");
        assert_eq!(rest, b"body");
        let (h, rest) = read_header_block(&mut &b"A: 1\n"[..]).unwrap();
        assert_eq!((h.as_slice(), rest.as_slice()), (&b"A: 1\n"[..], &b""[..]));
        let (h, rest) = read_header_block(&mut &b"\nbody"[..]).unwrap();
        assert_eq!((h.as_slice(), rest.as_slice()), (&b"\n"[..], &b"body"[..]));
    }

    #[test]
    fn header_split_across_reads() {
        // a reader that returns one byte at a time
        struct OneByte<'a>(&'a [u8]);
        impl Read for OneByte<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let (h, rest) = read_header_block(&mut OneByte(b"A: 1\r\n\r\nxy")).unwrap();
        assert_eq!(h, b"A: 1\r\n\r\n");
        assert_eq!(rest, b"");
    }

    #[test]
    fn unfold_turns_a_folding_tab_into_a_space() {
        assert_eq!(unfold(b"a\tb\n  c\n\td\r\n\te"), b"a\tb  c d e");
    }

    #[test]
    fn fields_keep_folds_raw() {
        let f = parse_header_fields(b"Subject: hello\n world folded\nX-A:b\nSubject:  two\n\n");
        assert_eq!(
            header_values(&f, "subject"),
            vec![&b"hello\n world folded"[..], b"two"]
        );
        assert_eq!(header_values(&f, "X-A"), vec![&b"b"[..]]);
        assert_eq!(
            decoded_header(b"hello\n world folded"),
            "hello world folded"
        );
    }

    #[test]
    fn rfc2047_words() {
        assert_eq!(decode_rfc2047(b"=?UTF-8?B?R3LDvMOfZQ==?="), "Grüße");
        assert_eq!(
            decode_rfc2047(b"=?iso-8859-1?Q?J=F6rg?= <j@x>"),
            "Jörg <j@x>"
        );
        assert_eq!(decode_rfc2047(b"=?utf-8?q?a?= =?utf-8?q?b?= c"), "ab c");
        assert_eq!(decode_rfc2047(b"plain =?bogus"), "plain =?bogus");
        assert_eq!(decode_rfc2047(b"a_b =?utf-8?q?x_y?="), "a_b x y");
    }

    #[test]
    fn addresses() {
        let a =
            parse_addresses(b"\"Doe, J\" <j@x.org>, b@y (comment),\n =?UTF-8?Q?J=C3=B6rg?= <jo@z>");
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].name.as_deref(), Some("Doe, J"));
        assert_eq!(a[0].mailbox.as_deref(), Some("j"));
        assert_eq!(a[0].domain.as_deref(), Some("x.org"));
        assert_eq!(a[1].name, None);
        assert_eq!(a[1].domain.as_deref(), Some("y"));
        assert_eq!(a[2].name.as_deref(), Some("=?UTF-8?Q?J=C3=B6rg?="));
    }

    fn search(msg: &[u8], needle: &str, text: bool) -> bool {
        let mut input = msg;
        let (h, rest) = read_header_block(&mut input).unwrap();
        search_message_text(&h, rest, &mut input, needle, text).unwrap()
    }

    #[test]
    fn body_search_plain_latin1_qp_base64() {
        assert!(search(b"Subject: x\n\nHello World\n", "world", false));
        assert!(!search(b"Subject: world\n\nHello\n", "world", false));
        assert!(search(b"Subject: world\n\nHello\n", "WORLD", true));
        assert!(search(
            b"Content-Type: text/plain; charset=iso-8859-1\n\ncaf\xe9\n",
            "\u{c9}",
            false
        ));
        assert!(search(
            b"Content-Transfer-Encoding: quoted-printable\n\nsplit=\n word\n",
            "split word",
            false
        ));
        assert!(search(
            b"Content-Transfer-Encoding: base64\n\naGVsbG8g\nd29ybGQ=\n",
            "hello world",
            false
        ));
    }

    #[test]
    fn body_search_walks_multipart_and_skips_non_text() {
        let msg = b"Content-Type: multipart/mixed; boundary=\"b1\"\n\npreamble\n--b1\nContent-Type: text/plain\n\nfirst part\n--b1\nContent-Type: application/octet-stream\n\nsecretbinary\n--b1\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\nw6l0w6k=\n--b1--\nepilogue\n";
        assert!(search(msg, "first part", false));
        assert!(search(msg, "\u{e9}t\u{e9}", false));
        assert!(!search(msg, "secretbinary", false));
        assert!(!search(msg, "preamble", false));
        assert!(search(msg, "application/octet", true));
        assert!(!search(msg, "application/octet", false));
    }

    #[test]
    fn stream_search_finds_across_pieces() {
        let mut s = StreamSearch::new("abcDEF");
        s.feed("xxab");
        assert!(!s.found);
        s.feed("cdeF yy");
        assert!(s.found);
        let mut s = StreamSearch::new("ab");
        s.feed("a");
        s.reset_context();
        s.feed("b");
        assert!(!s.found);
    }

    #[test]
    fn long_body_search_is_chunked() {
        let mut msg = b"Subject: x\n\n".to_vec();
        for i in 0..20000 {
            msg.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        msg.extend_from_slice(b"needle at end");
        assert!(search(&msg, "NEEDLE at", false));
        assert!(!search(&msg, "haystack", false));
    }
}
