//! Time helpers: UTC formatting for names and JSON, local calendar facts for the backup policy,
//! and parsing of the `--at TIME` and `DUR` forms of the CLI contract.
//!
//! Times are carried as nanoseconds since the Unix epoch (`i64`). Local time comes from the C
//! library (`localtime_r`/`mktime`), so it follows `TZ` like every other Unix tool.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

/// A broken-down calendar time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Monday … 6 = Sunday.
    pub weekday: u32,
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// UTC calendar time of an instant.
pub fn utc(ns: i64) -> Civil {
    let secs = ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem / 60 % 60) as u32,
        second: (rem % 60) as u32,
        weekday: (days + 3).rem_euclid(7) as u32,
    }
}

/// Local calendar time of an instant (follows `TZ`).
pub fn local(ns: i64) -> Civil {
    let secs = ns.div_euclid(1_000_000_000) as libc::time_t;
    // SAFETY: localtime_r writes into the tm we own and reads only `secs`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return utc(ns);
    }
    Civil {
        year: tm.tm_year as i64 + 1900,
        month: tm.tm_mon as u32 + 1,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
        weekday: ((tm.tm_wday + 6) % 7) as u32,
    }
}

/// `2026-11-26T06:21:39Z` (RFC 3339, UTC, whole seconds).
pub fn rfc3339(ns: i64) -> String {
    let c = utc(ns);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `20261126T062139Z`, the timestamp used in archive names.
pub fn compact_utc(ns: i64) -> String {
    let c = utc(ns);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Parses `--at TIME`: RFC 3339 (`2026-11-26T06:21:39Z`, `…+01:00`) or
/// `YYYY-MM-DD[ HH:MM[:SS]]` in local time. Returns nanoseconds since the epoch.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let bad = || format!("bad time '{s}': expected RFC 3339 or YYYY-MM-DD[ HH:MM[:SS]]");
    let s = s.trim();
    // The date is the first 10 bytes; a character straddling that cut cannot be one anyway.
    let cut = s.len().min(10);
    if !s.is_char_boundary(cut) {
        return Err(bad());
    }
    let (date, rest) = s.split_at(cut);
    let mut it = date.split('-');
    let (y, mo, d) = match (it.next(), it.next(), it.next()) {
        (Some(y), Some(m), Some(d)) if y.len() == 4 && m.len() == 2 && d.len() == 2 => (
            y.parse::<i64>().map_err(|_| bad())?,
            m.parse::<u32>().map_err(|_| bad())?,
            d.parse::<u32>().map_err(|_| bad())?,
        ),
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return Err(format!("bad time '{s}': {y:04}-{mo:02} has no day {d}"));
    }
    let rest = rest.trim_start_matches([' ', 'T', 't']);
    let (clock, zone) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let mut parts = clock.split(':').filter(|p| !p.is_empty());
    let hh = parts
        .next()
        .map(|p| p.parse::<u32>())
        .transpose()
        .map_err(|_| bad())?;
    let mm = parts
        .next()
        .map(|p| p.parse::<u32>())
        .transpose()
        .map_err(|_| bad())?;
    let ss_text = parts.next();
    if parts.next().is_some() || (hh.is_some() && mm.is_none()) {
        return Err(bad());
    }
    let (ss, frac_ns) = match ss_text {
        None => (0, 0),
        Some(t) => {
            let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
            let ss = whole.parse::<u32>().map_err(|_| bad())?;
            let mut ns = 0i64;
            for (i, c) in frac.chars().take(9).enumerate() {
                let d = c.to_digit(10).ok_or_else(bad)? as i64;
                ns += d * 10i64.pow(8 - i as u32);
            }
            (ss, ns)
        }
    };
    let (hh, mm) = (hh.unwrap_or(0), mm.unwrap_or(0));
    if hh > 23 || mm > 59 || ss > 60 {
        return Err(bad());
    }
    let secs = match zone {
        Some(z) => {
            let offset = if z.eq_ignore_ascii_case("z") {
                0
            } else {
                let sign = if z.starts_with('-') { -1 } else { 1 };
                let (oh, om) = z[1..].split_once(':').ok_or_else(bad)?;
                let oh: i64 = oh.parse().map_err(|_| bad())?;
                let om: i64 = om.parse().map_err(|_| bad())?;
                sign * (oh * 3600 + om * 60)
            };
            days_from_civil(y, mo, d) * 86_400 + (hh * 3600 + mm * 60 + ss) as i64 - offset
        }
        None => {
            // SAFETY: mktime reads and normalises the tm we own.
            let mut tm: libc::tm = unsafe { std::mem::zeroed() };
            tm.tm_year = (y - 1900) as libc::c_int;
            tm.tm_mon = mo as libc::c_int - 1;
            tm.tm_mday = d as libc::c_int;
            tm.tm_hour = hh as libc::c_int;
            tm.tm_min = mm as libc::c_int;
            tm.tm_sec = ss as libc::c_int;
            tm.tm_isdst = -1;
            let t = unsafe { libc::mktime(&mut tm) };
            if t == -1 {
                return Err(bad());
            }
            t as i64
        }
    };
    // Beyond what nanoseconds since 1970 hold in an i64 (1677 to 2262): the far ends, so a
    // far-future time means "the newest" and a far-past one matches nothing.
    Ok(secs
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac_ns))
        .unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX }))
}

/// The number of days in a month of the proleptic Gregorian calendar.
fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Parses a duration such as `500ms`, `2s`, `1m30s`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration '{s}': expected e.g. 500ms, 2s, 1m30s, 1h");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
            "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(d).ok_or_else(bad)?;
    }
    if total > MAX_DURATION {
        return Err(format!(
            "duration '{s}' is out of range (at most 36500d, 100 years)"
        ));
    }
    Ok(total)
}

/// A duration as the options write it: `500ms`, `30s`, `1m30s`, `2h`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.subsec_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

/// The longest duration any option takes: far beyond any real wait, and small enough that a
/// deadline (`Instant` + duration) or a float of seconds never overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(36_500 * 86_400);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(0).weekday, 3); // Thursday
        let t = parse_time("2026-11-26T06:21:39Z").unwrap();
        assert_eq!(rfc3339(t), "2026-11-26T06:21:39Z");
        assert_eq!(utc(t).weekday, 3);
        assert_eq!(compact_utc(t), "20261126T062139Z");
        let t2 = parse_time("2026-11-26T07:21:39+01:00").unwrap();
        assert_eq!(t, t2);
        assert!(parse_time("2026-11-26").is_ok());
        assert!(parse_time("2026-11-26 10:30").is_ok());
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2026-13-01").is_err());
        for days in [-800_000i64, -1, 0, 59, 10_000, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    /// Found by fuzz/time_parse: a multi-byte character across byte 10 panicked in split_at.
    #[test]
    fn a_character_across_the_date_cut_is_an_error() {
        assert!(parse_time("2026-11-2\u{e9}").is_err());
        assert!(parse_time("99\0\x0c\x01\x0c\x11\0\u{5c8}").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }
}
