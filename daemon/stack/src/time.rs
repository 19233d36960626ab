//! Time as the stack sees it: an [`Instant`] on a clock the caller owns.
//!
//! The stack never reads a clock. Every entry point takes `now: Instant`; the
//! daemon derives it from a monotonic clock, tests from a virtual one. The
//! only invariant is that successive `now` values never go backwards.

use core::fmt;
use core::num::NonZeroU64;
use core::ops::{Add, AddAssign, Sub};
pub use core::time::Duration;

/// A point in time, in microseconds since an arbitrary epoch chosen by the caller.
///
/// Stored as microseconds plus one in a `NonZeroU64`, so that an
/// `Option<Instant>` — a connection has a dozen (timers, "last sent") —
/// takes 8 bytes rather than 16. The last representable instant is
/// `u64::MAX - 1` microseconds (half a million years), where arithmetic
/// saturates.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    micros_plus_one: NonZeroU64,
}

/// The largest microsecond count an [`Instant`] holds.
const MAX_MICROS: u64 = u64::MAX - 1;

impl Instant {
    /// The epoch of the caller's clock.
    pub const ZERO: Instant = Instant::from_micros(0);

    /// An instant `micros` microseconds after the epoch (saturating at
    /// `u64::MAX - 1`).
    pub const fn from_micros(micros: u64) -> Self {
        let micros = if micros > MAX_MICROS {
            MAX_MICROS
        } else {
            micros
        };
        Instant {
            micros_plus_one: NonZeroU64::MIN.saturating_add(micros),
        }
    }

    /// An instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Instant::from_micros(millis.saturating_mul(1000))
    }

    /// Microseconds since the epoch.
    pub const fn total_micros(self) -> u64 {
        self.micros_plus_one.get() - 1
    }

    /// Milliseconds since the epoch (truncated).
    pub const fn total_millis(self) -> u64 {
        self.total_micros() / 1000
    }

    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.total_micros().saturating_sub(earlier.total_micros()))
    }
}

impl Default for Instant {
    /// The epoch.
    fn default() -> Self {
        Instant::ZERO
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instant")
            .field("micros", &self.total_micros())
            .finish()
    }
}

fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant::from_micros(self.total_micros().saturating_add(duration_micros(d)))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        Instant::from_micros(self.total_micros().saturating_sub(duration_micros(d)))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating: an `earlier` that is later gives zero.
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

/// An `Option<Duration>` in 8 bytes instead of 16, for the durations a
/// connection keeps (RTT estimates): nanoseconds plus one in a
/// `NonZeroU64`, so `None` is the niche. Exact for durations below 584
/// years; longer ones saturate there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OptionDuration(Option<NonZeroU64>);

impl OptionDuration {
    pub(crate) const NONE: OptionDuration = OptionDuration(None);

    pub(crate) fn new(duration: Option<Duration>) -> OptionDuration {
        OptionDuration(duration.map(|d| {
            let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1);
            NonZeroU64::MIN.saturating_add(nanos.min(u64::MAX - 1))
        }))
    }

    pub(crate) fn get(self) -> Option<Duration> {
        self.0.map(|n| Duration::from_nanos(n.get() - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_millis(5);
        assert_eq!(t.total_micros(), 5000);
        assert_eq!((t + Duration::from_millis(1)).total_millis(), 6);
        assert_eq!(Instant::ZERO - t, Duration::ZERO);
        assert_eq!(t - Instant::ZERO, Duration::from_millis(5));
        assert_eq!((Instant::ZERO - Duration::from_secs(1)), Instant::ZERO);
        assert_eq!(Instant::default(), Instant::ZERO);
        let last = Instant::from_micros(u64::MAX);
        assert_eq!(last.total_micros(), u64::MAX - 1);
        assert_eq!(last + Duration::from_secs(1), last);
        assert!(Instant::ZERO < Instant::from_micros(1));
    }

    #[test]
    fn an_optional_duration_round_trips_in_one_word() {
        assert_eq!(size_of::<OptionDuration>(), 8);
        for d in [
            None,
            Some(Duration::ZERO),
            Some(Duration::new(3, 141_592_653)),
        ] {
            assert_eq!(OptionDuration::new(d).get(), d);
        }
    }

    /// An unset timer costs no more than a set one (see [`Instant`]).
    #[test]
    fn an_optional_instant_is_one_word() {
        assert_eq!(size_of::<Option<Instant>>(), 8);
    }
}
