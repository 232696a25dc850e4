//! RFC 3339 UTC timestamps with nanoseconds, formatted by hand (no date crate in a
//! binary that must stay small).
//!
//! The form is fixed-width, `2026-11-22T10:04:05.000000123Z`: always nine fraction digits
//! and `Z`. kubelet and `berth logs` parse any RFC 3339 fraction; the fixed width keeps
//! log lines sortable as text. (Go's RFC3339Nano, which containerd writes, trims trailing
//! zeros instead; both are valid RFC 3339.)

use std::time::{SystemTime, UNIX_EPOCH};

/// Length of a formatted timestamp.
pub const LEN: usize = 30;

/// Seconds and nanoseconds since the Unix epoch, from `clock_gettime(CLOCK_REALTIME)`.
pub fn now() -> (i64, u32) {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        // A clock before 1970: clamp rather than print a negative year.
        Err(_) => (0, 0),
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Formats `secs.nanos` since the epoch as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
/// Years outside 0..=9999 are clamped to that range's ends (not reachable from a sane clock).
pub fn format(secs: i64, nanos: u32) -> [u8; LEN] {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u64;
    let (year, month, day) = civil_from_days(days);
    let year = year.clamp(0, 9999) as u64;
    let mut out = *b"0000-00-00T00:00:00.000000000Z";
    digits(&mut out[0..4], year);
    digits(&mut out[5..7], u64::from(month));
    digits(&mut out[8..10], u64::from(day));
    digits(&mut out[11..13], rem / 3600);
    digits(&mut out[14..16], rem % 3600 / 60);
    digits(&mut out[17..19], rem % 60);
    digits(&mut out[20..29], u64::from(nanos.min(999_999_999)));
    out
}

/// The current time, formatted.
pub fn now_formatted() -> [u8; LEN] {
    let (s, n) = now();
    format(s, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(secs: i64, nanos: u32) -> String {
        String::from_utf8(format(secs, nanos).to_vec()).unwrap()
    }

    #[test]
    fn epoch() {
        assert_eq!(f(0, 0), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn known_instants() {
        assert_eq!(f(1_234_567_890, 5), "2009-02-13T23:31:30.000000005Z");
        assert_eq!(f(951_782_400, 0), "2000-02-29T00:00:00.000000000Z");
        assert_eq!(
            f(1_709_251_199, 999_999_999),
            "2024-02-29T23:59:59.999999999Z"
        );
        assert_eq!(f(4_102_444_800, 0), "2100-01-01T00:00:00.000000000Z");
        // 2100 is not a leap year: the day after Feb 28 is Mar 1.
        assert_eq!(f(4_107_542_400, 0), "2100-03-01T00:00:00.000000000Z");
        assert_eq!(
            f(1_795_305_600, 123_456_789),
            "2026-11-22T00:00:00.123456789Z"
        );
        assert_eq!(f(-1, 0), "1969-12-31T23:59:59.000000000Z");
    }

    #[test]
    fn consecutive_days_advance_the_calendar_by_one() {
        // Walk 1900..2200 day by day: the date must step by exactly one day each time.
        let mut prev = civil_from_days(-25_567); // 1900-01-01
        assert_eq!(prev, (1900, 1, 1));
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_len = |y: i64, m: u32| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        for d in -25_566..84_000 {
            let cur = civil_from_days(d);
            let (y, m, day) = prev;
            let expected = if day < month_len(y, m) {
                (y, m, day + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
            assert_eq!(cur, expected, "day {d}");
            prev = cur;
        }
    }

    #[test]
    fn now_is_well_formed() {
        let s = String::from_utf8(now_formatted().to_vec()).unwrap();
        assert_eq!(s.len(), LEN);
        assert!(s.starts_with("20"), "{s}");
        assert!(s.ends_with('Z'));
    }
}
