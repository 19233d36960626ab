//! Packet impairment on the TUN link, for testing the stack under bad
//! networks without `netem` (this machine's kernel has none).
//!
//! `--impair loss=5%,delay=10ms,jitter=5ms,reorder=2%,duplicate=1%,corrupt=0.5%,seed=N`
//! applies to packets in both directions: incoming packets before the stack
//! sees them, outgoing ones after the stack emits them. Per packet, in order:
//! - `loss`: dropped with this probability;
//! - `duplicate`: a second copy is made with this probability;
//! - each copy: `corrupt` flips one random bit with this probability (the
//!   IPv4/TCP checksums of the receiver must catch it);
//! - each copy is held for `delay` ± a uniform `jitter`, plus, with
//!   probability `reorder`, an extra `max(delay, 5 ms)`, so that it overtakes
//!   nothing but is overtaken by the packets behind it.
//!
//! Held packets wait in a queue ordered by release time (ties in arrival
//! order); the driver calls [`Impairer::release_due`] from its timer at
//! [`Impairer::next_release`]. The RNG is seeded (`seed=N`, else from the OS)
//! so a run can be replayed. Invariants: a packet is delivered at most twice,
//! never before its arrival time, and never modified except by `corrupt`.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::Duration;
use tcpd_stack::Instant;

/// Extra hold for reordered packets when no base delay is configured.
const MIN_REORDER_EXTRA: Duration = Duration::from_millis(5);

/// A parsed `--impair` value. Probabilities are fractions in [0, 1].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImpairSpec {
    pub loss: f64,
    pub delay: Duration,
    pub jitter: Duration,
    pub reorder: f64,
    pub duplicate: f64,
    pub corrupt: f64,
    /// RNG seed; `None` draws one from the OS at start.
    pub seed: Option<u64>,
}

/// Why an `--impair` value was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImpairParseError {
    #[error("expected KEY=VALUE, got {0:?}")]
    NotKeyValue(String),
    #[error("unknown key {0:?} (known: loss, delay, jitter, reorder, duplicate, corrupt, seed)")]
    UnknownKey(String),
    #[error("key {0:?} given twice")]
    Duplicate(String),
    #[error("{key}: {value:?} is not a percentage between 0% and 100% (e.g. 5% or 0.5%)")]
    Percentage { key: String, value: String },
    #[error("{key}: {value:?} is not a duration (e.g. 10ms, 500us, 1s)")]
    Duration { key: String, value: String },
    #[error("seed: {0:?} is not an unsigned integer")]
    Seed(String),
}

fn parse_percentage(key: &str, value: &str) -> Result<f64, ImpairParseError> {
    let bad = || ImpairParseError::Percentage {
        key: key.to_string(),
        value: value.to_string(),
    };
    let number = value.strip_suffix('%').ok_or_else(bad)?;
    let percent: f64 = number.trim().parse().map_err(|_| bad())?;
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err(bad());
    }
    Ok(percent / 100.0)
}

fn parse_duration(key: &str, value: &str) -> Result<Duration, ImpairParseError> {
    let bad = || ImpairParseError::Duration {
        key: key.to_string(),
        value: value.to_string(),
    };
    let (number, unit_micros) = if let Some(n) = value.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return Err(bad());
    };
    let amount: f64 = number.trim().parse().map_err(|_| bad())?;
    let micros = amount * unit_micros;
    // At most an hour: anything longer is a typo, not a test.
    if !micros.is_finite() || !(0.0..=3.6e9).contains(&micros) {
        return Err(bad());
    }
    Ok(Duration::from_micros(micros.round() as u64))
}

impl ImpairSpec {
    /// Parses `key=value[,key=value...]`.
    pub fn parse(text: &str) -> Result<ImpairSpec, ImpairParseError> {
        let mut spec = ImpairSpec::default();
        let mut seen: Vec<String> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| ImpairParseError::NotKeyValue(item.to_string()))?;
            let (key, value) = (key.trim(), value.trim());
            if seen.iter().any(|k| k == key) {
                return Err(ImpairParseError::Duplicate(key.to_string()));
            }
            seen.push(key.to_string());
            match key {
                "loss" => spec.loss = parse_percentage(key, value)?,
                "reorder" => spec.reorder = parse_percentage(key, value)?,
                "duplicate" => spec.duplicate = parse_percentage(key, value)?,
                "corrupt" => spec.corrupt = parse_percentage(key, value)?,
                "delay" => spec.delay = parse_duration(key, value)?,
                "jitter" => spec.jitter = parse_duration(key, value)?,
                "seed" => {
                    spec.seed = Some(
                        value
                            .parse()
                            .map_err(|_| ImpairParseError::Seed(value.to_string()))?,
                    )
                }
                other => return Err(ImpairParseError::UnknownKey(other.to_string())),
            }
        }
        Ok(spec)
    }

    /// Whether the spec changes nothing (then the driver skips it).
    pub fn is_noop(&self) -> bool {
        self.loss == 0.0
            && self.delay.is_zero()
            && self.jitter.is_zero()
            && self.reorder == 0.0
            && self.duplicate == 0.0
            && self.corrupt == 0.0
    }
}

impl fmt::Display for ImpairSpec {
    /// The canonical form, listing only the non-zero settings (and the seed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        for (key, p) in [
            ("loss", self.loss),
            ("reorder", self.reorder),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
        ] {
            if p > 0.0 {
                parts.push(format!("{key}={}%", p * 100.0));
            }
        }
        for (key, d) in [("delay", self.delay), ("jitter", self.jitter)] {
            if !d.is_zero() {
                parts.push(format!("{key}={}us", d.as_micros()));
            }
        }
        if let Some(seed) = self.seed {
            parts.push(format!("seed={seed}"));
        }
        f.write_str(&parts.join(","))
    }
}

/// Which way a packet crosses the TUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// From the kernel to the stack.
    Inbound,
    /// From the stack to the kernel.
    Outbound,
}

/// What [`Impairer::process`] did to one packet (for traces and captures).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Impairment {
    pub dropped: bool,
    pub duplicated: bool,
    /// A copy had one bit flipped.
    pub corrupted: bool,
    /// A copy was held by the reorder extra.
    pub reordered: bool,
    /// How long the first copy is held (zero: delivered at once).
    pub delay: Duration,
}

impl Impairment {
    /// Whether the packet went through untouched.
    pub fn is_clean(&self) -> bool {
        *self == Impairment::default()
    }
}

/// A packet waiting for its release time.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    release_at: Instant,
    /// Arrival order, so equal release times keep FIFO order.
    sequence: u64,
    direction: Direction,
    packet: Vec<u8>,
}

/// Applies an [`ImpairSpec`] to packets; owns the RNG and the hold queue.
#[derive(Debug)]
pub struct Impairer {
    spec: ImpairSpec,
    rng: SmallRng,
    held: BinaryHeap<Reverse<Held>>,
    next_sequence: u64,
}

impl Impairer {
    /// An impairer with the spec's seed, or one from the OS random source.
    pub fn new(spec: ImpairSpec) -> Impairer {
        let rng = match spec.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        Impairer {
            spec,
            rng,
            held: BinaryHeap::new(),
            next_sequence: 0,
        }
    }

    /// The spec in use.
    pub fn spec(&self) -> &ImpairSpec {
        &self.spec
    }

    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.rng.random::<f64>() < probability
    }

    /// How long one copy is held: delay ± jitter, plus the reorder extra
    /// (the flag says whether it was added).
    fn hold_time(&mut self) -> (Duration, bool) {
        let base = self.spec.delay.as_micros() as i128;
        let jitter = self.spec.jitter.as_micros() as i128;
        let mut micros = base;
        if jitter > 0 {
            micros += self.rng.random_range(-jitter..=jitter);
        }
        let reordered = self.chance(self.spec.reorder);
        if reordered {
            micros += self.spec.delay.max(MIN_REORDER_EXTRA).as_micros() as i128;
        }
        (Duration::from_micros(micros.max(0) as u64), reordered)
    }

    /// Impairs one packet arriving at `now`. Copies due at once are passed
    /// to `deliver`; the others are queued for [`Impairer::release_due`].
    /// Returns what was done to it.
    pub fn process(
        &mut self,
        now: Instant,
        direction: Direction,
        packet: &[u8],
        mut deliver: impl FnMut(Direction, &[u8]),
    ) -> Impairment {
        let mut done = Impairment::default();
        if self.chance(self.spec.loss) {
            done.dropped = true;
            return done;
        }
        let copies = if self.chance(self.spec.duplicate) {
            done.duplicated = true;
            2
        } else {
            1
        };
        for copy_index in 0..copies {
            let corrupt = self.chance(self.spec.corrupt) && !packet.is_empty();
            let (hold, reordered) = self.hold_time();
            done.corrupted |= corrupt;
            done.reordered |= reordered;
            if copy_index == 0 {
                done.delay = hold;
            }
            if hold.is_zero() && !corrupt {
                deliver(direction, packet);
                continue;
            }
            let mut copy = packet.to_vec();
            if corrupt {
                let bit = self.rng.random_range(0..copy.len() * 8);
                copy[bit / 8] ^= 1 << (bit % 8);
            }
            if hold.is_zero() {
                deliver(direction, &copy);
            } else {
                self.held.push(Reverse(Held {
                    release_at: now + hold,
                    sequence: self.next_sequence,
                    direction,
                    packet: copy,
                }));
                self.next_sequence += 1;
            }
        }
        done
    }

    /// When the next held packet is due.
    pub fn next_release(&self) -> Option<Instant> {
        self.held.peek().map(|Reverse(h)| h.release_at)
    }

    /// Passes every packet due at `now` to `deliver`, earliest first.
    pub fn release_due(&mut self, now: Instant, mut deliver: impl FnMut(Direction, &[u8])) {
        while let Some(Reverse(head)) = self.held.peek() {
            if head.release_at > now {
                break;
            }
            if let Some(Reverse(held)) = self.held.pop() {
                deliver(held.direction, &held.packet);
            }
        }
    }

    /// Packets currently held.
    #[cfg(test)]
    pub fn held_count(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_full_syntax() {
        let spec = ImpairSpec::parse(
            "loss=5%,delay=10ms,jitter=5ms,reorder=2%,duplicate=1%,corrupt=0.5%,seed=42",
        )
        .expect("valid spec");
        assert!((spec.loss - 0.05).abs() < 1e-12);
        assert_eq!(spec.delay, Duration::from_millis(10));
        assert_eq!(spec.jitter, Duration::from_millis(5));
        assert!((spec.reorder - 0.02).abs() < 1e-12);
        assert!((spec.duplicate - 0.01).abs() < 1e-12);
        assert!((spec.corrupt - 0.005).abs() < 1e-12);
        assert_eq!(spec.seed, Some(42));
        assert!(!spec.is_noop());
        // Display round-trips.
        assert_eq!(ImpairSpec::parse(&spec.to_string()), Ok(spec));
        assert_eq!(
            ImpairSpec::parse("delay=1s, jitter=250us").map(|s| (s.delay, s.jitter)),
            Ok((Duration::from_secs(1), Duration::from_micros(250)))
        );
        assert!(ImpairSpec::parse("").expect("empty is valid").is_noop());
    }

    #[test]
    fn rejects_bad_specs_with_a_reason() {
        use ImpairParseError::*;
        assert!(matches!(ImpairSpec::parse("loss"), Err(NotKeyValue(_))));
        assert!(matches!(ImpairSpec::parse("lose=5%"), Err(UnknownKey(_))));
        assert!(matches!(
            ImpairSpec::parse("loss=5"),
            Err(Percentage { .. })
        ));
        assert!(matches!(
            ImpairSpec::parse("loss=101%"),
            Err(Percentage { .. })
        ));
        assert!(matches!(
            ImpairSpec::parse("loss=-1%"),
            Err(Percentage { .. })
        ));
        assert!(matches!(
            ImpairSpec::parse("loss=NaN%"),
            Err(Percentage { .. })
        ));
        assert!(matches!(
            ImpairSpec::parse("delay=10"),
            Err(Duration { .. })
        ));
        assert!(matches!(
            ImpairSpec::parse("delay=-1ms"),
            Err(Duration { .. })
        ));
        assert!(matches!(ImpairSpec::parse("seed=x"), Err(Seed(_))));
        assert!(matches!(
            ImpairSpec::parse("loss=1%,loss=2%"),
            Err(ImpairParseError::Duplicate(_))
        ));
    }

    fn collect(
        imp: &mut Impairer,
        now: Instant,
        packet: &[u8],
        out: &mut Vec<(Direction, Vec<u8>)>,
    ) {
        imp.process(now, Direction::Outbound, packet, |d, p| {
            out.push((d, p.to_vec()))
        });
    }

    #[test]
    fn delay_holds_packets_until_due_in_fifo_order() {
        let spec = ImpairSpec::parse("delay=10ms,seed=1").expect("valid");
        let mut imp = Impairer::new(spec);
        let mut out = Vec::new();
        collect(&mut imp, Instant::from_millis(0), b"a", &mut out);
        collect(&mut imp, Instant::from_millis(0), b"b", &mut out);
        collect(&mut imp, Instant::from_millis(3), b"c", &mut out);
        assert!(out.is_empty());
        assert_eq!(imp.next_release(), Some(Instant::from_millis(10)));
        imp.release_due(Instant::from_millis(9), |d, p| out.push((d, p.to_vec())));
        assert!(out.is_empty());
        imp.release_due(Instant::from_millis(10), |d, p| out.push((d, p.to_vec())));
        assert_eq!(
            out,
            vec![
                (Direction::Outbound, b"a".to_vec()),
                (Direction::Outbound, b"b".to_vec())
            ]
        );
        assert_eq!(imp.next_release(), Some(Instant::from_millis(13)));
        imp.release_due(Instant::from_millis(20), |d, p| out.push((d, p.to_vec())));
        assert_eq!(out.len(), 3);
        assert_eq!(imp.held_count(), 0);
        assert_eq!(imp.next_release(), None);
    }

    #[test]
    fn rates_are_close_to_the_spec_and_replayable() {
        let run = || {
            let spec =
                ImpairSpec::parse("loss=10%,duplicate=5%,corrupt=20%,seed=7").expect("valid");
            let mut imp = Impairer::new(spec);
            let packet = [0u8; 100];
            let mut out = Vec::new();
            for _ in 0..20_000 {
                collect(&mut imp, Instant::ZERO, &packet, &mut out);
            }
            out
        };
        let out = run();
        // Expected deliveries: 20000 × 0.9 × 1.05 = 18900.
        assert!((18_400..19_400).contains(&out.len()), "{}", out.len());
        let corrupted: Vec<_> = out.iter().filter(|(_, p)| p != &vec![0u8; 100]).collect();
        // Each corrupted copy has exactly one bit flipped.
        for (_, p) in &corrupted {
            let ones: u32 = p.iter().map(|b| b.count_ones()).sum();
            assert_eq!(ones, 1);
        }
        let ratio = corrupted.len() as f64 / out.len() as f64;
        assert!((0.18..0.22).contains(&ratio), "{ratio}");
        // Same seed, same outcome.
        assert_eq!(run(), out);
    }

    #[test]
    fn reorder_lets_later_packets_overtake() {
        let spec = ImpairSpec::parse("reorder=50%,seed=3").expect("valid");
        let mut imp = Impairer::new(spec);
        let mut out = Vec::new();
        for i in 0..100u8 {
            collect(&mut imp, Instant::from_micros(u64::from(i)), &[i], &mut out);
        }
        let immediate = out.len();
        assert!((30..70).contains(&immediate), "{immediate}");
        // Held ones come out 5 ms later, after every immediate one.
        imp.release_due(Instant::from_millis(4), |d, p| out.push((d, p.to_vec())));
        assert_eq!(out.len(), immediate);
        imp.release_due(Instant::from_millis(6), |d, p| out.push((d, p.to_vec())));
        assert_eq!(out.len(), 100);
        let order: Vec<u8> = out.iter().map(|(_, p)| p[0]).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<u8>>());
        assert_ne!(order, sorted);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let spec = ImpairSpec::parse("delay=10ms,jitter=4ms,seed=9").expect("valid");
        let mut imp = Impairer::new(spec);
        let mut out = Vec::new();
        for _ in 0..1000 {
            collect(&mut imp, Instant::ZERO, b"x", &mut out);
        }
        imp.release_due(Instant::from_micros(5_999), |d, p| {
            out.push((d, p.to_vec()))
        });
        assert!(out.is_empty());
        imp.release_due(Instant::from_millis(14), |d, p| out.push((d, p.to_vec())));
        assert_eq!(out.len(), 1000);
    }
}
