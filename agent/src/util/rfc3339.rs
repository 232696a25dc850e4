//! RFC 3339 UTC timestamps: the times in container records, health files, plans and
//! reports are written by [`format`] (whole seconds) or [`format_millis`], and read
//! back, with whatever fraction and offset another writer used, by [`parse`].
//! Pure but for [`now`]; no time zone data: berth writes UTC only.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `t` (since the epoch) with milliseconds, `YYYY-MM-DDTHH:MM:SS.mmmZ`: probes an
/// interval apart are told apart even when the interval is short.
pub fn format_millis(t: Duration) -> String {
    let whole = format(t.as_secs());
    let base = whole.strip_suffix('Z').unwrap_or(&whole);
    format!("{base}.{:03}Z", t.subsec_millis())
}

/// The current time, [`format`]ted.
pub fn now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format(secs)
}

/// Parses an RFC 3339 time (`2026-11-22T10:04:05Z`, with any fraction and `Z` or an
/// offset) into Unix seconds and nanoseconds.
pub fn parse(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 9)];
        nanos = digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32);
    }
    let offset = match &s[i..] {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(o.as_bytes()[0], b'+' | b'-') && o.as_bytes()[3] == b':' => {
            let mins = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if o.starts_with('-') { -mins } else { mins }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset * 60;
    Some((secs, nanos))
}

/// [`parse`], whole Unix seconds; `None` before 1970 too.
pub fn parse_secs(s: &str) -> Option<u64> {
    parse(s).and_then(|(secs, _)| u64::try_from(secs).ok())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of days since 1970-01-01, the inverse of
/// [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(format(0), "1970-01-01T00:00:00Z");
        assert_eq!(format(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(format(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(
            format_millis(Duration::from_millis(1_795_000_000_250)),
            "2026-11-18T11:06:40.250Z"
        );
        assert!(parse(&now()).is_some());
    }

    #[test]
    fn parses_fractions_and_offsets() {
        let base = 1_795_000_000; // 2026-11-18T11:06:40Z
        assert_eq!(parse(&format(base)), Some((base as i64, 0)));
        assert_eq!(
            parse("2026-11-18T11:06:40.000000123Z"),
            Some((base as i64, 123))
        );
        assert_eq!(
            parse("2026-11-18T11:06:40.5Z"),
            Some((base as i64, 500_000_000))
        );
        assert_eq!(parse("2026-11-18T12:06:40+01:00"), Some((base as i64, 0)));
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(parse("2000-02-29T00:00:00Z"), Some((951_782_400, 0)));
        assert_eq!(parse_secs("2026-11-18T11:06:40.999Z"), Some(base));
        assert_eq!(parse_secs("1969-12-31T23:59:59Z"), None);
        for bad in [
            "",
            "yesterday",
            "2026-11-18",
            "2026-13-18T11:06:40Z",
            "2026-11-18T11:06:40",
            "2026-11-18T11:06:40.Z",
            "2026-11-18T11:06:4xZ",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips() {
        for secs in [0u64, 951_782_400, 1_795_000_000, 4_102_444_800] {
            assert_eq!(parse_secs(&format(secs)), Some(secs));
        }
    }
}
