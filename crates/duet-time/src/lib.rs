//! Time for duet's pure cores.
//!
//! Pure crates never read a clock: the shell (or the simulator) passes the current [`Instant`] in.
//! Durations are plain [`std::time::Duration`]s; [`parse_duration`] and [`format_duration`] are the
//! one textual form (`"100ms"`, `"3s"`, `"1m30s"`) used by configs, logs and the CLI.
#![forbid(unsafe_code)]

use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::time::Duration;

/// A point on a monotonic clock, in nanoseconds since an arbitrary origin.
///
/// The shell maps `std::time::Instant` onto it; the simulator starts at zero and jumps.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin of the clock.
    pub const ZERO: Instant = Instant(0);

    /// An instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating: an earlier minus a later instant is zero.
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T+{}", format_duration(Duration::from_nanos(self.0)))
    }
}

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError(String);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DurationError {}

/// Parses durations such as `"100ms"`, `"3s"`, `"1.5s"`, `"2m"`, `"1h30m"`, `"250us"`.
///
/// A number without a unit is rejected: `"5"` is ambiguous in a config file.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError(
            "empty duration; write e.g. \"100ms\" or \"3s\"".into(),
        ));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(DurationError(format!(
                "invalid duration {text:?}: expected a number"
            )));
        }
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per_unit: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(DurationError(format!(
                    "invalid duration {text:?}: missing unit (ms, s, m, h)"
                )));
            }
            other => {
                return Err(DurationError(format!(
                    "invalid duration {text:?}: unknown unit {other:?} (use ns, us, ms, s, m, h)"
                )));
            }
        };
        let value: f64 = num
            .parse()
            .map_err(|_| DurationError(format!("invalid duration {text:?}: bad number {num:?}")))?;
        let nanos = value * nanos_per_unit;
        if !nanos.is_finite() || nanos > 1e18 {
            return Err(DurationError(format!(
                "invalid duration {text:?}: too large"
            )));
        }
        total += Duration::from_nanos(nanos.round() as u64);
        rest = tail;
    }
    Ok(total)
}

/// Formats a duration in the shortest exact form [`parse_duration`] reads back:
/// `100ms`, `3s`, `1.5s`, `2m`.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    for (unit, per) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
    ] {
        if nanos.is_multiple_of(per) {
            return format!("{}{unit}", nanos / per);
        }
    }
    if nanos >= 1_000_000_000 && nanos.is_multiple_of(1_000_000) {
        let ms = nanos / 1_000_000;
        let text = format!("{}.{:03}", ms / 1000, ms % 1000);
        return format!("{}s", text.trim_end_matches('0'));
    }
    for (unit, per) in [("ms", 1_000_000u128), ("us", 1_000)] {
        if nanos.is_multiple_of(per) {
            return format!("{}{unit}", nanos / per);
        }
    }
    format!("{nanos}ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_with_reason() {
        assert!(
            parse_duration("5")
                .unwrap_err()
                .to_string()
                .contains("missing unit")
        );
        assert!(
            parse_duration("5x")
                .unwrap_err()
                .to_string()
                .contains("unknown unit")
        );
        assert!(
            parse_duration("")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(
            parse_duration("ms")
                .unwrap_err()
                .to_string()
                .contains("expected a number")
        );
        assert!(parse_duration("1..2s").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for ms in [
            0u64, 1, 10, 100, 999, 1000, 1500, 60_000, 90_000, 3_600_000, 1234,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{ms} ms");
        }
        assert_eq!(format_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn instant_arithmetic_saturates() {
        let a = Instant::from_nanos(5);
        let b = a + Duration::from_nanos(10);
        assert_eq!(b - a, Duration::from_nanos(10));
        assert_eq!(a - b, Duration::ZERO);
    }
}
