//! The `Date` header value: IMF-fixdate (RFC 9110 §5.6.7) formatting and a per-thread cache.
//!
//! Formatting is done by hand from the unix time (days → civil date with Howard Hinnant's
//! `civil_from_days`), so it needs no time crate and no allocation. [`now`] reads the
//! clock once and reformats only when the unix second has changed since the last call on
//! this thread.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(super) const DATE_LEN: usize = 29;

/// An IMF-fixdate, ASCII, exactly [`DATE_LEN`] bytes.
pub(super) type HttpDate = [u8; DATE_LEN];

thread_local! {
    /// (unix second, its formatted date) last produced on this thread.
    static CACHE: Cell<(u64, HttpDate)> = const { Cell::new((u64::MAX, [0; DATE_LEN])) };
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The current date, from this thread's cache; reads the clock once per call and
/// reformats only when the second has changed.
pub(super) fn now() -> HttpDate {
    let secs = unix_secs();
    CACHE.with(|c| {
        let (cached_secs, cached) = c.get();
        if cached_secs == secs {
            cached
        } else {
            let fresh = format(secs);
            c.set((secs, fresh));
            fresh
        }
    })
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic Gregorian.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn put2(dst: &mut [u8], v: u64) {
    dst[0] = b'0' + (v / 10 % 10) as u8;
    dst[1] = b'0' + (v % 10) as u8;
}

/// Formats `secs` (unix time) as an IMF-fixdate. Years past 9999 wrap to four digits
/// (never panics).
pub(super) fn format(secs: u64) -> HttpDate {
    const WEEKDAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let sod = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut d = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    d[0..3].copy_from_slice(WEEKDAYS[(days % 7) as usize]);
    put2(&mut d[5..7], day);
    d[8..11].copy_from_slice(MONTHS[(month - 1) as usize % 12]);
    put2(&mut d[12..14], year / 100);
    put2(&mut d[14..16], year);
    put2(&mut d[17..19], sod / 3600);
    put2(&mut d[20..22], sod / 60 % 60);
    put2(&mut d[23..25], sod % 60);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_timestamps() {
        let cases: &[(u64, &str)] = &[
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_000_000_000, "Sun, 09 Sep 2001 01:46:40 GMT"),
            (1_709_164_800, "Thu, 29 Feb 2024 00:00:00 GMT"),
            (2_147_483_647, "Tue, 19 Jan 2038 03:14:07 GMT"),
            (4_102_444_800, "Fri, 01 Jan 2100 00:00:00 GMT"),
            (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 GMT"),
        ];
        for &(secs, want) in cases {
            assert_eq!(std::str::from_utf8(&format(secs)).unwrap(), want, "{secs}");
        }
    }

    /// Checks the IMF-fixdate shape: `Www, DD Mon YYYY HH:MM:SS GMT`, fields in range.
    fn assert_well_formed(d: &HttpDate) {
        let s = std::str::from_utf8(d).expect("ASCII");
        let two = |at: usize| s[at..at + 2].parse::<u32>().expect("two digits");
        assert!(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&&s[0..3]), "{s}");
        assert_eq!((&s[3..5], &s[7..8], &s[11..12], &s[16..17]), (", ", " ", " ", " "), "{s}");
        assert!((1..=31).contains(&two(5)), "{s}");
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct"];
        assert!(months.contains(&&s[8..11]) || ["Nov", "Dec"].contains(&&s[8..11]), "{s}");
        assert!(s[12..16].bytes().all(|b| b.is_ascii_digit()), "{s}");
        assert_eq!((&s[19..20], &s[22..23], &s[25..]), (":", ":", " GMT"), "{s}");
        assert!(two(17) < 24 && two(20) < 60 && two(23) < 60, "{s}");
    }

    #[test]
    fn never_panics_on_extreme_times() {
        assert_well_formed(&format(u64::MAX));
        let midnight = format(u64::MAX / 86_400 * 86_400);
        assert_well_formed(&midnight);
        assert_eq!(&midnight[16..], b" 00:00:00 GMT");
        // Years past 9999 wrap to four digits: 10000-01-01 (a Saturday, as 2000-01-01:
        // 400 Gregorian years are a whole number of weeks).
        assert_eq!(&format(253_402_300_800), b"Sat, 01 Jan 0000 00:00:00 GMT");
        for secs in [0, 59, 86_399, 951_782_400, 1_700_000_000] {
            assert_well_formed(&format(secs));
        }
    }

    /// The protocol's tick warms this thread's cache with the current second.
    #[test]
    fn protocol_tick_refreshes_the_cache() {
        use crate::proto::Protocol;
        CACHE.with(|c| c.set((u64::MAX, [0; DATE_LEN])));
        let before = unix_secs();
        crate::proto::http::Http::default().tick();
        let after = unix_secs();
        let (secs, date) = CACHE.with(|c| c.get());
        assert!((before..=after).contains(&secs), "cached second {secs}, now {before}..{after}");
        assert_eq!(date, format(secs));
    }

    #[test]
    fn now_is_well_formed_and_cached() {
        let a = now();
        assert!(a.ends_with(b" GMT"));
        assert_eq!(a[3], b',');
        let b = now();
        // Same second (almost always) gives the same bytes; a new second a later date.
        assert!(a == b || format(unix_secs()) == b);
    }
}
