//! Output formatters, byte-compatible with doveadm's (src/doveadm/doveadm-print*.c).
//!
//! A command declares columns, then prints values row by row: each value is either a
//! plain string (C string semantics in doveadm: cut at the first NUL) or a stream printed
//! chunk by chunk and closed by an empty chunk. The formatter decides how values, titles
//! and record separators are laid out.

use std::io::{self, Read, Write};

/// The formatter names doveadm knows (`-f NAME`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FormatterKind {
    Flow,
    Tab,
    Table,
    Json,
    Pager,
}

impl FormatterKind {
    pub fn parse(name: &str) -> Option<FormatterKind> {
        Some(match name {
            "flow" => FormatterKind::Flow,
            "tab" => FormatterKind::Tab,
            "table" => FormatterKind::Table,
            "json" => FormatterKind::Json,
            "pager" => FormatterKind::Pager,
            _ => return None,
        })
    }
}

/// One output column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The title (and, for json, the key).
    pub title: String,
    /// DOVEADM_PRINT_HEADER_FLAG_HIDE_TITLE: flow and pager print only the value.
    pub hide_title: bool,
}

impl Column {
    pub fn new(title: impl Into<String>) -> Column {
        Column {
            title: title.into(),
            hide_title: false,
        }
    }
    pub fn hidden(title: impl Into<String>) -> Column {
        Column {
            title: title.into(),
            hide_title: true,
        }
    }
}

/// Size of the chunks a stream value is printed in: doveadm prints what its input stream
/// hands out, 8 KiB blocks (IO_BLOCK_SIZE) from the start of the value for Maildir files
/// (observed). Only the tab formatter's output depends on the chunking (a `\t` before
/// each chunk).
pub const STREAM_CHUNK: usize = 8192;

/// A doveadm-style printer writing to `out`.
pub struct Printer {
    out: Box<dyn Write>,
    fmt: Box<dyn Formatter>,
    columns: Vec<Column>,
    stream_open: bool,
    finished: bool,
}

/// The per-formatter part: receives plain values, stream chunks (an empty chunk ends the
/// stream) and the final flush, like doveadm's `struct doveadm_print_vfuncs`.
trait Formatter {
    fn print(&mut self, out: &mut dyn Write, cols: &[Column], value: &[u8]) -> io::Result<()>;
    fn print_stream(
        &mut self,
        out: &mut dyn Write,
        cols: &[Column],
        chunk: &[u8],
    ) -> io::Result<()>;
    fn flush(&mut self, out: &mut dyn Write, cols: &[Column]) -> io::Result<()>;
    /// Fatal error message when the formatter cannot print a stream chunk (table).
    fn stream_error(&self, _chunk: &[u8]) -> Option<&'static str> {
        None
    }
}

/// Cuts a plain value at its first NUL, as doveadm's `const char *` values are.
fn c_str(value: &[u8]) -> &[u8] {
    match value.iter().position(|&b| b == 0) {
        Some(n) => &value[..n],
        None => value,
    }
}

impl Printer {
    /// A printer of `kind` over `columns`. The tab formatter writes its title line right
    /// away (doveadm sends titles when the columns are declared).
    pub fn new(kind: FormatterKind, columns: Vec<Column>, mut out: Box<dyn Write>) -> Printer {
        let fmt: Box<dyn Formatter> = match kind {
            FormatterKind::Flow => Box::new(Flow::default()),
            FormatterKind::Pager => Box::new(Pager {
                first_page: true,
                ..Pager::default()
            }),
            FormatterKind::Tab => {
                let titles: Vec<&str> = columns.iter().map(|c| c.title.as_str()).collect();
                // Write errors surface again at the first print/flush.
                let _ = out.write_all(titles.join("\t").as_bytes());
                Box::new(Tab::default())
            }
            FormatterKind::Json => Box::new(Json {
                first_row: true,
                ..Json::default()
            }),
            FormatterKind::Table => Box::new(Table::new(&columns)),
        };
        Printer {
            out,
            fmt,
            columns,
            stream_open: false,
            finished: false,
        }
    }

    /// Prints a plain value into the next column.
    pub fn value(&mut self, value: impl AsRef<[u8]>) -> io::Result<()> {
        debug_assert!(!self.stream_open);
        if self.columns.is_empty() {
            return Ok(());
        }
        self.fmt
            .print(&mut *self.out, &self.columns, c_str(value.as_ref()))
    }

    /// Prints one chunk of a stream value. An empty chunk ends the stream.
    pub fn stream_chunk(&mut self, chunk: &[u8]) -> Result<(), PrintError> {
        if self.columns.is_empty() {
            return Ok(());
        }
        if let Some(msg) = self.fmt.stream_error(chunk) {
            return Err(PrintError::Fatal(msg));
        }
        self.stream_open = !chunk.is_empty();
        self.fmt
            .print_stream(&mut *self.out, &self.columns, chunk)
            .map_err(PrintError::Write)
    }

    /// Prints a whole stream value from `input` in chunks of [`STREAM_CHUNK`] bytes, then
    /// ends it. A read error still ends the stream (as doveadm_print_istream does) and is
    /// returned as [`PrintError::Read`] for the caller to log.
    pub fn stream(&mut self, input: &mut dyn Read) -> Result<(), PrintError> {
        let mut buf = vec![0u8; STREAM_CHUNK];
        let mut read_error = None;
        loop {
            let n = match fill(input, &mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            };
            self.stream_chunk(&buf[..n])?;
        }
        self.stream_chunk(b"")?;
        match read_error {
            Some(e) => Err(PrintError::Read(e)),
            None => Ok(()),
        }
    }

    /// Flushes buffered output (table rows, json's closing bracket, a partial record).
    pub fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.fmt.flush(&mut *self.out, &self.columns)?;
        self.out.flush()
    }
}

/// Reads until `buf` is full or EOF, so chunk boundaries don't depend on pipe timing.
fn fill(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Why printing a value failed.
#[derive(Debug)]
pub enum PrintError {
    /// Writing the output failed.
    Write(io::Error),
    /// Reading the stream value failed (the value was closed anyway).
    Read(io::Error),
    /// The formatter can't print this value (doveadm i_fatal()s).
    Fatal(&'static str),
}

impl std::fmt::Display for PrintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrintError::Write(e) => write!(f, "write(stdout) failed: {e}"),
            PrintError::Read(e) => write!(f, "{e}"),
            PrintError::Fatal(m) => f.write_str(m),
        }
    }
}

// ---------------------------------------------------------------- flow

/// `title=value` separated by spaces, `\n` after the last column (doveadm-print-flow.c).
#[derive(Default)]
struct Flow {
    idx: usize,
    streaming: bool,
}

impl Flow {
    fn next(&mut self, out: &mut dyn Write, cols: &[Column]) -> io::Result<()> {
        self.idx += 1;
        if self.idx < cols.len() {
            out.write_all(b" ")
        } else {
            self.idx = 0;
            out.write_all(b"\n")
        }
    }
}

impl Formatter for Flow {
    fn print(&mut self, out: &mut dyn Write, cols: &[Column], value: &[u8]) -> io::Result<()> {
        write_title(out, &cols[self.idx], b"=")?;
        out.write_all(value)?;
        self.next(out, cols)
    }
    fn print_stream(
        &mut self,
        out: &mut dyn Write,
        cols: &[Column],
        chunk: &[u8],
    ) -> io::Result<()> {
        if titled_stream_chunk(out, &mut self.streaming, &cols[self.idx], b"=", chunk)? {
            self.next(out, cols)?;
        }
        Ok(())
    }
    fn flush(&mut self, out: &mut dyn Write, _cols: &[Column]) -> io::Result<()> {
        end_partial_row(out, &mut self.idx)
    }
}

/// Writes a column's title followed by `separator`, unless the column hides its title
/// (flow and pager).
fn write_title(out: &mut dyn Write, col: &Column, separator: &[u8]) -> io::Result<()> {
    if !col.hide_title {
        out.write_all(col.title.as_bytes())?;
        out.write_all(separator)?;
    }
    Ok(())
}

/// Prints one chunk of a stream value the flow and pager way: the title before the first
/// chunk, then the chunks as they are. Returns true when `chunk` is the empty one that ends
/// the stream.
fn titled_stream_chunk(
    out: &mut dyn Write,
    streaming: &mut bool,
    col: &Column,
    title_separator: &[u8],
    chunk: &[u8],
) -> io::Result<bool> {
    if !*streaming {
        write_title(out, col, title_separator)?;
    }
    out.write_all(chunk)?;
    *streaming = !chunk.is_empty();
    Ok(chunk.is_empty())
}

/// Ends a row cut short at the end of the output with a newline (flow and pager).
fn end_partial_row(out: &mut dyn Write, idx: &mut usize) -> io::Result<()> {
    if *idx != 0 {
        out.write_all(b"\n")?;
        *idx = 0;
    }
    Ok(())
}

// ---------------------------------------------------------------- pager

/// `title: value` lines, streams as `title:\n` + raw bytes, records separated by `\f\n`
/// (doveadm-print-pager.c).
#[derive(Default)]
struct Pager {
    idx: usize,
    streaming: bool,
    first_page: bool,
}

impl Pager {
    fn next(&mut self, cols: &[Column]) {
        self.idx += 1;
        if self.idx == cols.len() {
            self.idx = 0;
        }
    }
}

impl Formatter for Pager {
    fn print(&mut self, out: &mut dyn Write, cols: &[Column], value: &[u8]) -> io::Result<()> {
        if self.idx == 0 && !self.first_page {
            out.write_all(b"\x0c\n")?;
        }
        self.first_page = false;
        write_title(out, &cols[self.idx], b": ")?;
        out.write_all(value)?;
        out.write_all(b"\n")?;
        self.next(cols);
        Ok(())
    }
    fn print_stream(
        &mut self,
        out: &mut dyn Write,
        cols: &[Column],
        chunk: &[u8],
    ) -> io::Result<()> {
        // doveadm-print-pager.c prints no form feed before a record that starts with a
        // stream; replicated.
        if titled_stream_chunk(out, &mut self.streaming, &cols[self.idx], b":\n", chunk)? {
            self.next(cols);
        }
        Ok(())
    }
    fn flush(&mut self, out: &mut dyn Write, _cols: &[Column]) -> io::Result<()> {
        end_partial_row(out, &mut self.idx)
    }
}

// ---------------------------------------------------------------- tab

/// Title line, then values joined by `\t` (doveadm-print-tab.c). Replicates doveadm's
/// stream quirk: every stream chunk is preceded by `\t` unless the stream is in the first
/// column, and the end of a stream prints an empty value, i.e. one more `\t` (or the row's
/// `\n` when it is the last column).
#[derive(Default)]
struct Tab {
    idx: usize,
    header_written: bool,
}

impl Tab {
    fn flush_header(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if !self.header_written {
            out.write_all(b"\n")?;
            self.header_written = true;
        }
        Ok(())
    }
    /// What goes before a value or stream chunk: the end of the title line, then a `\t`
    /// unless in the first column.
    fn before_value(&mut self, out: &mut dyn Write) -> io::Result<()> {
        self.flush_header(out)?;
        if self.idx > 0 {
            out.write_all(b"\t")?;
        }
        Ok(())
    }
}

impl Formatter for Tab {
    fn print(&mut self, out: &mut dyn Write, cols: &[Column], value: &[u8]) -> io::Result<()> {
        self.before_value(out)?;
        out.write_all(value)?;
        self.idx += 1;
        if self.idx == cols.len() {
            self.idx = 0;
            out.write_all(b"\n")?;
        }
        Ok(())
    }
    fn print_stream(
        &mut self,
        out: &mut dyn Write,
        cols: &[Column],
        chunk: &[u8],
    ) -> io::Result<()> {
        if chunk.is_empty() {
            return self.print(out, cols, b"");
        }
        self.before_value(out)?;
        out.write_all(chunk)
    }
    fn flush(&mut self, out: &mut dyn Write, _cols: &[Column]) -> io::Result<()> {
        self.flush_header(out)
    }
}

// ---------------------------------------------------------------- json

/// `[{"title":"value",...},...]`, every value a JSON string, no trailing newline
/// (doveadm-print-json.c, escaping from json_append_escaped_data in src/lib/json-parser.c).
#[derive(Default)]
struct Json {
    idx: usize,
    first_row: bool,
    in_stream: bool,
    /// Bytes of a UTF-8 sequence cut by a chunk boundary, kept for the next chunk.
    pending: Vec<u8>,
}

impl Json {
    fn value_header(&mut self, out: &mut dyn Write, cols: &[Column]) -> io::Result<()> {
        if self.idx == 0 {
            if self.first_row {
                self.first_row = false;
                out.write_all(b"[")?;
            } else {
                out.write_all(b",")?;
            }
            out.write_all(b"{")?;
        } else {
            out.write_all(b",")?;
        }
        let mut key = Vec::new();
        json_escape(cols[self.idx].title.as_bytes(), &mut key);
        out.write_all(b"\"")?;
        out.write_all(&key)?;
        out.write_all(b"\":")
    }
    fn value_footer(&mut self, out: &mut dyn Write, cols: &[Column]) -> io::Result<()> {
        self.idx += 1;
        if self.idx == cols.len() {
            self.idx = 0;
            out.write_all(b"}")?;
        }
        Ok(())
    }
}

impl Formatter for Json {
    fn print(&mut self, out: &mut dyn Write, cols: &[Column], value: &[u8]) -> io::Result<()> {
        self.value_header(out, cols)?;
        let mut buf = Vec::with_capacity(value.len() + 2);
        buf.push(b'"');
        json_escape(value, &mut buf);
        buf.push(b'"');
        out.write_all(&buf)?;
        self.value_footer(out, cols)
    }
    fn print_stream(
        &mut self,
        out: &mut dyn Write,
        cols: &[Column],
        chunk: &[u8],
    ) -> io::Result<()> {
        if !self.in_stream {
            self.value_header(out, cols)?;
            out.write_all(b"\"")?;
            self.in_stream = true;
        }
        let mut buf = Vec::with_capacity(chunk.len() + 16);
        if chunk.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            json_escape(&rest, &mut buf);
            buf.push(b'"');
            out.write_all(&buf)?;
            self.in_stream = false;
            return self.value_footer(out, cols);
        }
        // Deviation for correctness: a UTF-8 character split across two chunks is kept
        // whole (doveadm would print U+FFFD for each of its bytes).
        let mut data = std::mem::take(&mut self.pending);
        data.extend_from_slice(chunk);
        let keep = incomplete_utf8_tail(&data);
        self.pending = data[data.len() - keep..].to_vec();
        json_escape(&data[..data.len() - keep], &mut buf);
        out.write_all(&buf)
    }
    fn flush(&mut self, out: &mut dyn Write, _cols: &[Column]) -> io::Result<()> {
        if self.first_row {
            out.write_all(b"[]")
        } else {
            out.write_all(b"]")
        }
    }
}

/// Length of a trailing, possibly complete-later UTF-8 sequence start (0..=3 bytes).
fn incomplete_utf8_tail(data: &[u8]) -> usize {
    let n = data.len();
    for back in 1..=3.min(n) {
        let b = data[n - back];
        if b & 0xc0 == 0x80 {
            continue;
        }
        let need = match b {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return 0,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// Escapes bytes as doveadm's json_append_escaped_data(): `\b \f \n \r \t \" \\`, other
/// controls as `\u00xx`, U+2028/U+2029 as `\u2028`/`\u2029`, valid UTF-8 as is, and each
/// byte of an invalid sequence as U+FFFD.
pub fn json_escape(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\u{8}' => out.extend_from_slice(b"\\b"),
                '\u{c}' => out.extend_from_slice(b"\\f"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                c if (c as u32) < 0x20 => {
                    out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
                }
                '\u{2028}' | '\u{2029}' => {
                    out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
                }
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        for _ in chunk.invalid() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
}

// ---------------------------------------------------------------- table

const TABLE_COLUMNS: usize = 80;
const TABLE_MAX_BUFFER_LINES: usize = 100;

/// Padded columns (doveadm-print-table.c): the first 100 rows are buffered to compute the
/// widths; the terminal width is taken as 80 (doveadm asks the tty; 80 is its value when
/// stdout is not a terminal, the case that matters for diffing).
struct Table {
    lengths: Vec<usize>,
    min_lengths: Vec<usize>,
    max_lengths: Vec<usize>,
    buffered: Vec<Vec<u8>>,
    lengths_set: bool,
    stream: Vec<u8>,
    idx: usize,
}

fn utf8_len(s: &[u8]) -> usize {
    s.iter().filter(|&&b| b & 0xc0 != 0x80).count()
}

impl Table {
    fn new(cols: &[Column]) -> Table {
        let lens: Vec<usize> = cols.iter().map(|c| c.title.len()).collect();
        Table {
            lengths: lens.clone(),
            min_lengths: lens.clone(),
            max_lengths: lens,
            buffered: Vec::new(),
            lengths_set: false,
            stream: Vec::new(),
            idx: 0,
        }
    }

    fn calc_lengths(&mut self, ncols: usize) {
        self.lengths_set = true;
        for (i, v) in self.buffered.iter().enumerate() {
            let c = i % ncols;
            let len = utf8_len(v);
            if self.min_lengths[c] > len {
                self.min_lengths[c] = len;
            }
            if self.max_lengths[c] < len {
                self.max_lengths[c] = len;
                self.lengths[c] = len;
            }
        }
        let mut max_length: usize = self.max_lengths.iter().map(|l| l + 1).sum::<usize>();
        max_length -= 1;
        while max_length > TABLE_COLUMNS {
            let orig = max_length;
            let mut i = ncols - 1;
            loop {
                let diff = self.lengths[i] - self.min_lengths[i];
                if max_length - diff <= TABLE_COLUMNS {
                    let diff = max_length - TABLE_COLUMNS;
                    self.lengths[i] -= diff;
                    max_length -= diff;
                    break;
                }
                if diff > 0 {
                    // doveadm shrinks the width but never updates max_length here, so
                    // the loop only ends through the branch above or by giving up.
                    self.lengths[i] -= if diff == 1 { 1 } else { diff / 2 };
                }
                if i == 0 {
                    break;
                }
                i -= 1;
            }
            if max_length == orig {
                break;
            }
        }
        if max_length < TABLE_COLUMNS {
            // No column has the EXPAND flag in the mail commands: the last one grows.
            self.lengths[ncols - 1] += (TABLE_COLUMNS - max_length) / 2;
        }
    }

    fn print_next(&mut self, out: &mut dyn Write, ncols: usize, value: &[u8]) -> io::Result<()> {
        let width = self.lengths[self.idx];
        out.write_all(value)?;
        let len = utf8_len(value);
        for _ in len..width {
            out.write_all(b" ")?;
        }
        self.idx += 1;
        if self.idx == ncols {
            self.idx = 0;
            out.write_all(b"\n")
        } else {
            out.write_all(b" ")
        }
    }

    fn buffer_flush(&mut self, out: &mut dyn Write, cols: &[Column]) -> io::Result<()> {
        self.calc_lengths(cols.len());
        if !cols.iter().all(|c| c.hide_title) {
            for (i, c) in cols.iter().enumerate() {
                if i > 0 {
                    out.write_all(b" ")?;
                }
                out.write_all(c.title.as_bytes())?;
                for _ in c.title.len()..self.lengths[i] {
                    out.write_all(b" ")?;
                }
            }
            out.write_all(b"\n")?;
        }
        let values = std::mem::take(&mut self.buffered);
        for v in values {
            self.print_next(out, cols.len(), &v)?;
        }
        Ok(())
    }
}

impl Formatter for Table {
    fn print(&mut self, out: &mut dyn Write, cols: &[Column], value: &[u8]) -> io::Result<()> {
        if !self.lengths_set {
            if self.buffered.len() / cols.len() < TABLE_MAX_BUFFER_LINES {
                self.buffered.push(value.to_vec());
                return Ok(());
            }
            self.buffer_flush(out, cols)?;
        }
        self.print_next(out, cols.len(), value)
    }
    fn print_stream(
        &mut self,
        out: &mut dyn Write,
        cols: &[Column],
        chunk: &[u8],
    ) -> io::Result<()> {
        if !chunk.is_empty() {
            self.stream.extend_from_slice(chunk);
            Ok(())
        } else {
            let v = std::mem::take(&mut self.stream);
            self.print(out, cols, c_str(&v))
        }
    }
    fn flush(&mut self, out: &mut dyn Write, cols: &[Column]) -> io::Result<()> {
        if !self.lengths_set && !cols.is_empty() {
            self.buffer_flush(out, cols)?;
        }
        Ok(())
    }
    fn stream_error(&self, chunk: &[u8]) -> Option<&'static str> {
        if chunk.contains(&b'\n') {
            Some("table formatter doesn't support multi-line values")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::MemoryOutput;

    enum V<'a> {
        P(&'a [u8]),
        S(&'a [&'a [u8]]),
    }

    /// Runs `rows` through a printer of `kind` and returns the bytes written.
    fn run(kind: FormatterKind, cols: Vec<Column>, rows: &[Vec<V>]) -> Vec<u8> {
        let sink = MemoryOutput::default();
        let mut p = Printer::new(kind, cols, Box::new(sink.clone()));
        for row in rows {
            for v in row {
                match v {
                    V::P(s) => p.value(s).unwrap(),
                    V::S(chunks) => {
                        for c in chunks.iter() {
                            p.stream_chunk(c).unwrap();
                        }
                        p.stream_chunk(b"").unwrap();
                    }
                }
            }
        }
        p.finish().unwrap();
        sink.contents()
    }

    fn fetch_cols() -> Vec<Column> {
        vec![
            Column::new("uid"),
            Column::new("flags"),
            Column::new("body"),
        ]
    }

    fn fetch_rows() -> Vec<Vec<V<'static>>> {
        vec![
            vec![
                V::P(b"1"),
                V::P(b"\\Seen"),
                V::S(&[b"line one\n", b"line two\n"]),
            ],
            vec![V::P(b"2"), V::P(b""), V::S(&[b"x"])],
        ]
    }

    #[test]
    fn pager_separates_records_with_form_feed_and_glues_streams() {
        let out = run(FormatterKind::Pager, fetch_cols(), &fetch_rows());
        assert_eq!(
            out,
            b"uid: 1\nflags: \\Seen\nbody:\nline one\nline two\n\x0c\nuid: 2\nflags: \nbody:\nx"
        );
    }

    #[test]
    fn pager_hidden_title_prints_value_only() {
        let out = run(
            FormatterKind::Pager,
            vec![Column::hidden("mailbox"), Column::new("messages")],
            &[
                vec![V::P(b"INBOX"), V::P(b"3")],
                vec![V::P(b"Sub"), V::P(b"0")],
            ],
        );
        assert_eq!(out, b"INBOX\nmessages: 3\n\x0c\nSub\nmessages: 0\n");
    }

    #[test]
    fn flow_joins_with_spaces_and_adds_newline_after_last_stream() {
        let out = run(FormatterKind::Flow, fetch_cols(), &fetch_rows());
        assert_eq!(
            out,
            b"uid=1 flags=\\Seen body=line one\nline two\n\nuid=2 flags= body=x\n"
        );
        let out = run(
            FormatterKind::Flow,
            vec![Column::hidden("mailbox-guid"), Column::hidden("uid")],
            &[vec![V::P(b"abc"), V::P(b"7")]],
        );
        assert_eq!(out, b"abc 7\n");
    }

    #[test]
    fn tab_prints_titles_and_replicates_stream_tabs() {
        let out = run(FormatterKind::Tab, fetch_cols(), &fetch_rows());
        assert_eq!(
            out,
            b"uid\tflags\tbody\n1\t\\Seen\tline one\n\tline two\n\t\n2\t\tx\t\n".to_vec()
        );
        // first-column stream: no tab before chunks
        let out = run(
            FormatterKind::Tab,
            vec![Column::new("body"), Column::new("uid")],
            &[vec![V::S(&[b"a\n"]), V::P(b"1")]],
        );
        assert_eq!(out, b"body\tuid\na\n\t1\n");
    }

    #[test]
    fn tab_without_rows_prints_title_line_only() {
        let out = run(
            FormatterKind::Tab,
            vec![Column::new("uid"), Column::new("flags")],
            &[],
        );
        assert_eq!(out, b"uid\tflags\n");
        let out = run(FormatterKind::Tab, vec![], &[]);
        assert_eq!(out, b"\n");
    }

    #[test]
    fn json_escapes_like_doveadm() {
        let out = run(
            FormatterKind::Json,
            vec![Column::new("a\"k"), Column::new("v")],
            &[vec![
                V::P(b"q\"\\\n\t\r\x08\x0c\x01\x1f/\x7f"),
                V::P(b"ok\xc3\xa9\xe9\xff\xe2\x80\xa8"),
            ]],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[{\"a\\\"k\":\"q\\\"\\\\\\n\\t\\r\\b\\f\\u0001\\u001f/\x7f\",\"v\":\"ok\u{e9}\u{fffd}\u{fffd}\\u2028\"}]"
        );
    }

    #[test]
    fn json_plain_value_stops_at_nul_but_stream_keeps_it() {
        let out = run(
            FormatterKind::Json,
            vec![Column::new("p"), Column::new("s")],
            &[vec![V::P(b"ab\0cd"), V::S(&[b"x\0y"])]],
        );
        assert_eq!(out, b"[{\"p\":\"ab\",\"s\":\"x\\u0000y\"}]");
    }

    #[test]
    fn json_stream_keeps_utf8_split_across_chunks() {
        let out = run(
            FormatterKind::Json,
            vec![Column::new("s")],
            &[vec![V::S(&[b"a\xc3", b"\xa9b\xe2\x82"])]],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[{\"s\":\"a\u{e9}b\u{fffd}\u{fffd}\"}]"
        );
    }

    #[test]
    fn json_without_rows_is_empty_array_and_rows_are_comma_separated() {
        assert_eq!(run(FormatterKind::Json, vec![Column::new("x")], &[]), b"[]");
        let out = run(
            FormatterKind::Json,
            vec![Column::hidden("mailbox")],
            &[vec![V::P(b"A")], vec![V::P(b"B")]],
        );
        assert_eq!(out, b"[{\"mailbox\":\"A\"},{\"mailbox\":\"B\"}]");
    }

    #[test]
    fn table_pads_columns_and_widens_last() {
        let out = run(
            FormatterKind::Table,
            vec![
                Column::hidden("mailbox"),
                Column::new("messages"),
                Column::new("vsize"),
            ],
            &[vec![V::P(b"Sub1"), V::P(b"0"), V::P(b"0")]],
        );
        // widths 7 8 5 => used 22, last column gets (80-22)/2 = 29 more
        let expected = format!(
            "{:<7} {:<8} {:<34}\n{:<7} {:<8} {:<34}\n",
            "mailbox", "messages", "vsize", "Sub1", "0", "0"
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn table_all_hidden_titles_prints_no_header_and_counts_utf8_chars() {
        let out = run(
            FormatterKind::Table,
            vec![Column::hidden("mailbox")],
            &[vec![V::P("Entwürfe".as_bytes())], vec![V::P(b"INBOX")]],
        );
        // width = 8 chars, + (80-8)/2 = 44
        let expected = format!("{:<44}\n{:<44}\n", "Entwürfe", "INBOX");
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn table_rejects_multiline_stream() {
        let sink = MemoryOutput::default();
        let mut p = Printer::new(
            FormatterKind::Table,
            vec![Column::new("body")],
            Box::new(sink.clone()),
        );
        match p.stream_chunk(b"a\nb") {
            Err(PrintError::Fatal(m)) => {
                assert_eq!(m, "table formatter doesn't support multi-line values")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flow_partial_record_is_terminated_at_finish() {
        // doveadm already sent the separating space when the record is cut short.
        let out = run(
            FormatterKind::Flow,
            vec![Column::new("a"), Column::new("b")],
            &[vec![V::P(b"1")]],
        );
        assert_eq!(out, b"a=1 \n");
    }

    #[test]
    fn incomplete_tail_detection() {
        assert_eq!(incomplete_utf8_tail(b"a\xc3"), 1);
        assert_eq!(incomplete_utf8_tail(b"a\xe2\x82"), 2);
        assert_eq!(incomplete_utf8_tail(b"a\xe2\x82\xac"), 0);
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
        assert_eq!(incomplete_utf8_tail(b"\xff"), 0);
    }
}
