//! TCP sequence numbers: 32-bit values compared modulo 2^32 (RFC 9293 §3.4).
//!
//! All sequence-space arithmetic in the stack goes through [`SeqNum`]; raw
//! `u32` comparisons are wrong at the wrap and are never used. Comparison is
//! only meaningful between numbers less than 2^31 apart, which TCP's window
//! limits (RFC 7323 §2.3: windows < 2^30) guarantee.

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A TCP sequence (or acknowledgement) number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNum(pub u32);

impl SeqNum {
    /// The number's raw value, for the wire.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Distance from `earlier` to `self` in sequence space, assuming
    /// `earlier <= self`; a negative distance saturates to 0.
    pub fn since(self, earlier: SeqNum) -> usize {
        let d = self.0.wrapping_sub(earlier.0) as i32;
        if d < 0 { 0 } else { d as usize }
    }

    /// Signed distance from `other` to `self`.
    pub fn diff(self, other: SeqNum) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// `self < other` modulo 2^32.
    pub fn lt(self, other: SeqNum) -> bool {
        self.diff(other) < 0
    }

    /// `self <= other` modulo 2^32.
    pub fn le(self, other: SeqNum) -> bool {
        self.diff(other) <= 0
    }

    /// `self > other` modulo 2^32.
    pub fn gt(self, other: SeqNum) -> bool {
        self.diff(other) > 0
    }

    /// `self >= other` modulo 2^32.
    pub fn ge(self, other: SeqNum) -> bool {
        self.diff(other) >= 0
    }

    /// `start <= self < end` modulo 2^32 (an empty range contains nothing).
    pub fn in_range(self, start: SeqNum, end: SeqNum) -> bool {
        start.le(self) && self.lt(end)
    }

    /// `start <= self <= end` modulo 2^32.
    pub fn in_range_inclusive(self, start: SeqNum, end: SeqNum) -> bool {
        start.le(self) && self.le(end)
    }

    /// The later of two sequence numbers.
    pub fn max(self, other: SeqNum) -> SeqNum {
        if self.ge(other) { self } else { other }
    }

    /// The earlier of two sequence numbers.
    pub fn min(self, other: SeqNum) -> SeqNum {
        if self.le(other) { self } else { other }
    }

    /// Orders two numbers in sequence space (not a total order over all u32s,
    /// so `SeqNum` deliberately does not implement `Ord`).
    pub fn seq_cmp(self, other: SeqNum) -> Ordering {
        self.diff(other).cmp(&0)
    }
}

impl Add<usize> for SeqNum {
    type Output = SeqNum;
    fn add(self, n: usize) -> SeqNum {
        // Sequence space wraps; truncating a length to 32 bits is the point.
        SeqNum(self.0.wrapping_add(n as u32))
    }
}

impl AddAssign<usize> for SeqNum {
    fn add_assign(&mut self, n: usize) {
        *self = *self + n;
    }
}

impl Sub<usize> for SeqNum {
    type Output = SeqNum;
    fn sub(self, n: usize) -> SeqNum {
        SeqNum(self.0.wrapping_sub(n as u32))
    }
}

impl fmt::Debug for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SeqNum({})", self.0)
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compares_across_the_wrap() {
        let a = SeqNum(u32::MAX - 1);
        let b = a + 5;
        assert_eq!(b.0, 3);
        assert!(a.lt(b));
        assert!(b.gt(a));
        assert_eq!(b.since(a), 5);
        assert_eq!(a.since(b), 0);
        assert!(SeqNum(0).in_range(a, b));
        assert!(!b.in_range(a, b));
        assert!(b.in_range_inclusive(a, b));
        assert_eq!(a.max(b), b);
        assert_eq!(a.min(b), a);
    }

    proptest! {
        #[test]
        fn add_then_since_is_identity(base: u32, n in 0usize..(1 << 31)) {
            let s = SeqNum(base);
            prop_assert_eq!((s + n).since(s), n);
            prop_assert!((s + n).ge(s));
        }
    }
}
