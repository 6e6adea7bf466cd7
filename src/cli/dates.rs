//! Date handling as doveadm does it: local-time formatting (`TZ` respected), RFC 822
//! `Date:` parsing (src/lib-mail/message-date.c) and the search date grammar
//! (`mail_parse_human_timestamp`, src/lib-storage/mail-storage.c).

use jiff::tz::TimeZone;
use jiff::Timestamp;

fn system_tz() -> TimeZone {
    TimeZone::system()
}

/// `YYYY-MM-DD HH:MM:SS` of a UNIX time in the local time zone (doveadm's unixdate2str).
pub fn format_local(t: i64) -> String {
    let tz = system_tz();
    match Timestamp::from_second(t) {
        Ok(ts) => ts.to_zoned(tz).strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => t.to_string(),
    }
}

/// Offset of local time from UTC at `t`, in seconds.
pub fn local_offset(t: i64) -> i64 {
    match Timestamp::from_second(t) {
        Ok(ts) => system_tz().to_offset(ts).seconds() as i64,
        Err(_) => 0,
    }
}

/// `date.sent` value: the instant in local time, then the header's own zone
/// (`2024-03-05 09:20:30 (+0100)`), as doveadm-mail-fetch.c prints it.
pub fn format_sent(t: i64, tz_minutes: i32) -> String {
    let sign = if tz_minutes < 0 { '-' } else { '+' };
    let tz = tz_minutes.unsigned_abs();
    format!("{} ({sign}{:02}{:02})", format_local(t), tz / 60, tz % 60)
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

fn month_index(s: &str) -> Option<u32> {
    let p = s.as_bytes().get(..3)?.to_ascii_lowercase();
    MONTHS
        .iter()
        .position(|m| m.as_bytes() == p.as_slice())
        .map(|i| i as u32)
}

/// Days since 1970-01-01 of a proleptic Gregorian date; month 0-based and may be out of
/// range (normalised into the year like mktime does), day may be 0 or past the month's end.
fn days_from_civil(year: i64, month0: i64, day: i64) -> i64 {
    let y = year + month0.div_euclid(12);
    let m = month0.rem_euclid(12) + 1; // 1..=12
                                       // Howard Hinnant's algorithm, for the 1st of the month, then add day-1.
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468 + (day - 1)
}

/// UTC mktime of a civil date-time (utc_mktime).
pub fn utc_mktime(year: i64, month0: i64, day: i64, h: i64, mi: i64, s: i64) -> i64 {
    days_from_civil(year, month0, day) * 86400 + h * 3600 + mi * 60 + s
}

/// Local mktime of midnight with `tm_isdst = 0`, as mail_parse_human_timestamp calls it:
/// the wall clock is taken as standard time, so during DST the instant is 01:00 DST.
fn local_midnight_std(year: i64, month0: i64, day: i64) -> i64 {
    let wall = utc_mktime(year, month0, day, 0, 0, 0);
    let tz = system_tz();
    // First guess with the offset in force around that wall time.
    let guess = wall - local_offset(wall);
    let t = wall - local_offset(guess);
    match Timestamp::from_second(t) {
        Ok(ts) => {
            let info = tz.to_offset_info(ts);
            if info.dst().is_dst() {
                // tm_isdst = 0 on a DST date: glibc treats the wall time as standard time.
                t + 3600
            } else {
                t
            }
        }
        Err(_) => t,
    }
}

/// Parses an IMAP date `d-Mon-yyyy` / `dd-Mon-yyyy` (optionally led by a space) to UTC
/// midnight (imap_parse_date, src/lib-imap/imap-date.c).
pub fn parse_imap_date(s: &str) -> Option<i64> {
    let s = s.strip_prefix(' ').unwrap_or(s);
    let b = s.as_bytes();
    let (day, rest) = if b.len() >= 2 && b[0].is_ascii_digit() && b[1] == b'-' {
        ((b[0] - b'0') as i64, &s[2..])
    } else if b.len() >= 3 && b[0].is_ascii_digit() && b[1].is_ascii_digit() && b[2] == b'-' {
        (((b[0] - b'0') * 10 + (b[1] - b'0')) as i64, &s[3..])
    } else {
        return None;
    };
    let month = month_index(rest)?;
    let rest = &rest[3..];
    let rest = rest.strip_prefix('-')?;
    let y = rest.as_bytes();
    if y.len() != 4 || !y.iter().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let year: i64 = rest.parse().ok()?;
    Some(utc_mktime(year, month as i64, day, 0, 0, 0))
}

/// Parses a time interval as settings_get_time: a number and a unit (`s`/`secs`,
/// `m`/`mins`, `h`/`hours`, `d`/`days`, `w`/`weeks`, any prefix of the long names, a space
/// allowed between). A bare `0` is allowed.
pub fn parse_interval(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let num: u64 = s[..digits].parse().ok()?;
    let unit = s[digits..].trim_start_matches(' ');
    if unit.is_empty() {
        return if num == 0 { Some(0) } else { None };
    }
    let lower = unit.to_ascii_lowercase();
    let prefix_of = |long: &str| long.starts_with(&lower);
    let mult: u64 = match lower.as_bytes()[0] {
        b's' if prefix_of("secs") || prefix_of("seconds") => 1,
        b'm' if prefix_of("mins") || prefix_of("minutes") => 60,
        b'h' if prefix_of("hours") => 3600,
        b'd' if prefix_of("days") => 86400,
        b'w' if prefix_of("weeks") => 7 * 86400,
        _ => return None,
    };
    let secs = num.checked_mul(mult)?;
    if secs > u32::MAX as u64 {
        return None;
    }
    Some(secs)
}

/// A search date: the UNIX time and whether it is compared in UTC (unix times and
/// intervals) or against local wall-clock dates (`YYYY-MM-DD` and IMAP dates).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SearchDate {
    pub time: i64,
    pub utc: bool,
}

/// mail_parse_human_timestamp: `YYYY-MM-DD` (local midnight), IMAP date, UNIX time, or an
/// interval before `now`.
pub fn parse_human_timestamp(s: &str, now: i64) -> Option<SearchDate> {
    let b = s.as_bytes();
    if b.len() == 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5].is_ascii_digit()
        && b[6].is_ascii_digit()
        && b[7] == b'-'
        && b[8].is_ascii_digit()
        && b[9].is_ascii_digit()
    {
        let year: i64 = s[..4].parse().ok()?;
        let month: i64 = s[5..7].parse().ok()?;
        let day: i64 = s[8..10].parse().ok()?;
        return Some(SearchDate {
            time: local_midnight_std(year, month - 1, day),
            utc: false,
        });
    }
    if let Some(t) = parse_imap_date(s) {
        return Some(SearchDate {
            time: t,
            utc: false,
        });
    }
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
        return s.parse().ok().map(|t| SearchDate { time: t, utc: true });
    }
    parse_interval(s).map(|secs| SearchDate {
        time: now - secs as i64,
        utc: true,
    })
}

/// Parses an RFC 822 `Date:` value to (UNIX time, zone offset in minutes), like
/// message_date_parse: `[Day,] DD Mon YY[YY] HH:MM[:SS] [zone]`. Unknown zone names count
/// as +0000.
pub fn parse_rfc822_date(value: &[u8]) -> Option<(i64, i32)> {
    let text = String::from_utf8_lossy(value);
    // Drop comments "(...)" and split into tokens.
    let mut clean = String::with_capacity(text.len());
    let mut depth = 0;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            ',' => clean.push(' '),
            _ => clean.push(c),
        }
    }
    let mut tokens = clean.split_whitespace().peekable();
    let first = *tokens.peek()?;
    if first.chars().next()?.is_ascii_alphabetic() {
        tokens.next(); // day name
    }
    let day: i64 = tokens.next()?.parse().ok()?;
    let month = month_index(tokens.next()?)? as i64;
    let year_s = tokens.next()?;
    if year_s.len() > 4 {
        return None;
    }
    let mut year: i64 = year_s.parse().ok()?;
    if year_s.len() == 2 {
        year += if year < 70 { 2000 } else { 1900 };
    } else if year_s.len() == 3 {
        year += 1900;
    }
    let time = tokens.next()?;
    let mut parts = time.split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let mi: i64 = parts.next()?.parse().ok()?;
    let s: i64 = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..=60).contains(&s) {
        return None;
    }
    if !(1..=31).contains(&day) {
        return None;
    }
    let tz = match tokens.next() {
        None => 0,
        Some(z) => parse_zone(z),
    };
    let t = utc_mktime(year, month, day, h, mi, s) - tz as i64 * 60;
    Some((t, tz))
}

fn parse_zone(z: &str) -> i32 {
    let b = z.as_bytes();
    if b.len() == 5 && (b[0] == b'+' || b[0] == b'-') && b[1..].iter().all(u8::is_ascii_digit) {
        let hh = ((b[1] - b'0') * 10 + (b[2] - b'0')) as i32;
        let mm = ((b[3] - b'0') * 10 + (b[4] - b'0')) as i32;
        let v = hh * 60 + mm;
        return if b[0] == b'-' { -v } else { v };
    }
    match z.to_ascii_uppercase().as_str() {
        "UT" | "GMT" | "UTC" | "Z" => 0,
        "EST" => -5 * 60,
        "EDT" => -4 * 60,
        "CST" => -6 * 60,
        "CDT" => -5 * 60,
        "MST" => -7 * 60,
        "MDT" => -6 * 60,
        "PST" => -8 * 60,
        "PDT" => -7 * 60,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(utc_mktime(1970, 0, 1, 0, 0, 0), 0);
        assert_eq!(utc_mktime(2024, 2, 5, 9, 20, 30), 1709630430);
        // month 13 normalises into the next year, as mktime does
        assert_eq!(
            utc_mktime(2024, 12, 1, 0, 0, 0),
            utc_mktime(2025, 0, 1, 0, 0, 0)
        );
    }

    #[test]
    fn rfc822_dates_with_zones() {
        assert_eq!(
            parse_rfc822_date(b"Tue, 05 Mar 2024 10:20:30 +0100"),
            Some((1709630430, 60))
        );
        assert_eq!(
            parse_rfc822_date(b"5 Mar 2024 04:20:30 -0500 (EST)"),
            Some((1709630430, -300))
        );
        assert_eq!(
            parse_rfc822_date(b"5 Mar 24 09:20:30 GMT"),
            Some((1709630430, 0))
        );
        assert_eq!(
            parse_rfc822_date(b"5 Mar 2024 09:20 +0000"),
            Some((1709630400, 0))
        );
        assert_eq!(parse_rfc822_date(b"garbage"), None);
        assert_eq!(parse_rfc822_date(b""), None);
    }

    #[test]
    fn imap_dates() {
        assert_eq!(parse_imap_date("1-Jan-2024"), Some(1704067200));
        assert_eq!(parse_imap_date("01-jan-2024"), Some(1704067200));
        assert_eq!(parse_imap_date("01-Foo-2024"), None);
        assert_eq!(parse_imap_date("01-Jan-24"), None);
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1d"), Some(86400));
        assert_eq!(parse_interval("30mins"), Some(1800));
        assert_eq!(parse_interval("2w"), Some(14 * 86400));
        assert_eq!(parse_interval("2weeks"), Some(14 * 86400));
        assert_eq!(parse_interval("1h"), Some(3600));
        assert_eq!(parse_interval("5 secs"), Some(5));
        assert_eq!(parse_interval("1year"), None);
        assert_eq!(parse_interval("1"), None);
        assert_eq!(parse_interval("yesterday"), None);
    }

    #[test]
    fn human_timestamps() {
        let now = 1_800_000_000;
        assert_eq!(
            parse_human_timestamp("1709630430", now),
            Some(SearchDate {
                time: 1709630430,
                utc: true
            })
        );
        assert_eq!(
            parse_human_timestamp("1d", now),
            Some(SearchDate {
                time: now - 86400,
                utc: true
            })
        );
        assert_eq!(
            parse_human_timestamp("1-Jan-2024", now),
            Some(SearchDate {
                time: 1704067200,
                utc: false
            })
        );
        let d = parse_human_timestamp("2024-03-05", now).unwrap();
        assert!(!d.utc);
        // local midnight: within a day of the UTC midnight
        assert!((d.time - 1709596800).abs() <= 14 * 3600, "{d:?}");
        assert!(parse_human_timestamp("2024-13-01", now).is_some());
        for bad in [
            "yesterday",
            "1year",
            "2024-03-05T10:00",
            "2024-03-05 10:00:00",
            "",
        ] {
            assert_eq!(parse_human_timestamp(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn sent_format_has_header_zone() {
        let s = format_sent(0, -90);
        assert!(s.ends_with(" (-0130)"), "{s}");
        assert_eq!(
            format_sent(0, 60).len(),
            "1970-01-01 00:00:00 (+0100)".len()
        );
    }
}
