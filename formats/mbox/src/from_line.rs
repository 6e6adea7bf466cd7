//! The From_ line: parsing exactly as Dovecot's `mbox_from_parse` accepts it and writing as
//! `mbox_from_create` does (src/lib-mail/mbox-from.c).

use jiff::tz::TimeZone;
use jiff::Timestamp;

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// A parsed From_ line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FromLine {
    /// The envelope sender, as written.
    pub sender: Vec<u8>,
    /// The date as UNIX time.
    pub time: i64,
}

/// Bytes of the line with out-of-range reads answering 0, so the fixed-offset checks of the
/// C parser (which may look a few bytes past a short line) fail instead of panicking.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn at(&self, i: usize) -> u8 {
        self.data.get(self.pos + i).copied().unwrap_or(0)
    }
    fn digit(&self, i: usize) -> Option<i64> {
        let c = self.at(i);
        c.is_ascii_digit().then(|| (c - b'0') as i64)
    }
}

fn month_at(c: &Cursor<'_>) -> Option<i64> {
    let three = [c.at(0), c.at(1), c.at(2)];
    let mut month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(&three))
        .map(|m| m as i64);
    if month.is_none() && &three == b"???" {
        month = Some(0);
    }
    if c.at(3) != b' ' {
        return None;
    }
    month
}

fn year_at(c: &Cursor<'_>) -> Option<i64> {
    Some(c.digit(0)? * 1000 + c.digit(1)? * 100 + c.digit(2)? * 10 + c.digit(3)?)
}

/// Parses what follows `From ` on a From_ line (`line` may include the line ending).
/// Returns `None` where Dovecot's mbox_from_parse returns -1.
pub fn parse(line: &[u8]) -> Option<FromLine> {
    let end = line.len();
    let mut c = Cursor { data: line, pos: 0 };
    // sender, possibly starting with a quoted part
    if c.pos < end && line[c.pos] == b'"' {
        let mut esc = false;
        c.pos += 1;
        while c.pos < end && (line[c.pos] != b'"' || esc) {
            if matches!(line[c.pos], b'\r' | b'\n') {
                return None;
            }
            esc = line[c.pos] == b'\\';
            c.pos += 1;
        }
        c.pos += 1;
    }
    while c.pos < end && line[c.pos] != b' ' {
        if matches!(line[c.pos], b'\r' | b'\n') {
            return None;
        }
        c.pos += 1;
    }
    let sender = line[..c.pos.min(end)].to_vec();
    while c.pos < end && line[c.pos] == b' ' {
        c.pos += 1;
    }
    if c.pos + 29 - 3 - 5 > end {
        return None;
    }
    c.pos += 4; // weekday
    let (mut mday, month, mut year);
    let alt_stamp;
    if let Some(m) = month_at(&c) {
        alt_stamp = false;
        month = m;
        c.pos += 4;
        if c.at(0) == b' ' {
            c.pos += 1;
        }
        if c.at(1) == b' ' {
            mday = c.digit(0)?;
            c.pos += 2;
        } else {
            if c.at(2) != b' ' {
                return None;
            }
            mday = c.digit(0)? * 10 + c.digit(1)?;
            c.pos += 3;
        }
        year = 0;
    } else {
        // alternate stamp: "Thu, 9 Nov 2002 22:33:52"
        alt_stamp = true;
        c.pos += 1;
        mday = c.digit(0)?;
        c.pos += 1;
        if let Some(d) = c.digit(0) {
            mday = mday * 10 + d;
            c.pos += 1;
        }
        if c.at(0) != b' ' {
            return None;
        }
        c.pos += 1;
        month = month_at(&c)?;
        c.pos += 4;
        year = year_at(&c)?;
        c.pos += 5;
    }
    if mday == 0 {
        mday = 1;
    }
    if c.at(2) != b':' {
        return None;
    }
    let hour = c.digit(0)? * 10 + c.digit(1)?;
    c.pos += 3;
    let min = c.digit(0)? * 10 + c.digit(1)?;
    c.pos += 2;
    let mut sec = 0;
    if c.at(0) == b':' {
        c.pos += 1;
        sec = c.digit(0)? * 10 + c.digit(1)?;
        c.pos += 2;
        if !alt_stamp {
            if c.at(0) != b' ' {
                return None;
            }
            c.pos += 1;
        }
    } else if !alt_stamp {
        if c.at(0) != b' ' {
            return None;
        }
        c.pos += 1;
    }
    let mut tz_secs: Option<i64> = None;
    if !alt_stamp && (0..4).any(|i| c.digit(i).is_none()) {
        // named timezone (or a numeric one before the year, which the C code also just
        // skips here): skip to the next space
        while c.pos < end && line[c.pos] != b' ' {
            if matches!(line[c.pos], b'\r' | b'\n') {
                return None;
            }
            c.pos += 1;
        }
        if c.pos + 5 > end {
            return None;
        }
        c.pos += 1;
    }
    if !alt_stamp {
        year = year_at(&c)?;
        c.pos += 4;
    }
    if c.pos < end
        && c.at(0) == b' '
        && matches!(c.at(1), b'-' | b'+')
        && (2..6).all(|i| c.digit(i).is_some())
    {
        let v = c.digit(2)? * 36000 + c.digit(3)? * 3600 + c.digit(4)? * 600 + c.digit(5)? * 60;
        tz_secs = Some(if c.at(1) == b'-' { -v } else { v });
    }
    let naive = civil_seconds(year, month, mday, hour, min, sec)?;
    let time = match tz_secs {
        Some(off) => naive - off,
        None => naive - local_offset_at(naive),
    };
    Some(FromLine { sender, time })
}

/// Seconds since the epoch of a civil date-time read as UTC, normalizing out-of-range
/// fields the way mktime does (day 31 of a 30-day month rolls over).
fn civil_seconds(year: i64, month0: i64, mday: i64, hour: i64, min: i64, sec: i64) -> Option<i64> {
    let first = jiff::civil::Date::new(i16::try_from(year).ok()?, (month0 + 1) as i8, 1).ok()?;
    let days_from_epoch = first
        .since(jiff::civil::Date::constant(1970, 1, 1))
        .ok()?
        .get_days() as i64;
    Some((days_from_epoch + mday - 1) * 86400 + hour * 3600 + min * 60 + sec)
}

/// The local time zone's UTC offset (seconds east) for a local civil time given as naive
/// seconds: the offset in effect at that instant, as mktime resolves it.
fn local_offset_at(naive: i64) -> i64 {
    let tz = TimeZone::system();
    let guess = Timestamp::from_second(naive).unwrap_or(Timestamp::UNIX_EPOCH);
    let off = tz.to_offset(guess).seconds() as i64;
    let again = Timestamp::from_second(naive - off).unwrap_or(Timestamp::UNIX_EPOCH);
    tz.to_offset(again).seconds() as i64
}

/// The From_ line Dovecot writes (mbox_from_create): `From <sender>  Www Mmm dd hh:mm:ss yyyy\n`
/// in local time, day zero-padded.
pub fn create(sender: &[u8], time: i64) -> Vec<u8> {
    let ts = Timestamp::from_second(time).unwrap_or(Timestamp::UNIX_EPOCH);
    let dt = ts.to_zoned(TimeZone::system()).datetime();
    let wday = dt.date().weekday().to_sunday_zero_offset() as usize;
    let mut out = b"From ".to_vec();
    out.extend_from_slice(sender);
    out.extend_from_slice(b"  ");
    out.extend_from_slice(
        format!(
            "{} {} {:02} {:02}:{:02}:{:02} {:04}\n",
            WEEKDAYS[wday],
            String::from_utf8_lossy(MONTHS[(dt.month() - 1) as usize]),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.year()
        )
        .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Option<i64> {
        parse(s.as_bytes()).map(|f| f.time)
    }

    #[test]
    fn accepts_the_variants_dovecot_accepts() {
        // explicit numeric zone after the year
        assert_eq!(t("a@b Thu Nov  9 22:33:52 2001 +0300\n"), Some(1005334432));
        assert_eq!(t("a@b Thu Nov 09 22:33:52 2001 -0000"), Some(1005345232));
        // named zone before year, no seconds
        assert!(t("a@b Thu Nov  9 22:33 EST 2001").is_some());
        // alternate stamp
        assert!(t("a@b Thu, 9 Nov 2001 22:33:52").is_some());
        // quoted sender with spaces
        let f = parse(b"\"a b\"@c Thu Nov  9 22:33:52 2001 +0000").unwrap();
        assert_eq!(f.sender, b"\"a b\"@c");
        // trailing extra info (cpython mailbox_01)
        assert!(t("foo@bar.com Wed Feb 25 16:53:48 2009 extra info").is_some());
    }

    #[test]
    fn rejects_what_dovecot_rejects() {
        assert_eq!(t("time to time"), None);
        assert_eq!(t("a@b Thu Nov  9 2001"), None);
        assert_eq!(t("a@b Thu Xyz  9 22:33:52 2001 +0000"), None);
        assert_eq!(t(""), None);
        assert_eq!(t("a@b\nThu Nov  9 22:33:52 2001"), None);
    }

    #[test]
    fn created_line_parses_back() {
        let line = create(b"MAILER-DAEMON", 1_000_000_000);
        assert!(line.starts_with(b"From MAILER-DAEMON  "));
        assert_eq!(parse(&line[5..]).unwrap().time, 1_000_000_000);
    }
}
