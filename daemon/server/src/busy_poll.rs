//! Bounded busy-polling before the runtime sleeps (`--busy-poll-us`).
//!
//! Waking a thread that sleeps costs the waker's system call, an
//! inter-processor interrupt and the wakee's return from idle; on the
//! virtual machines tcpd is measured on that is ~17 µs per wake-up of a
//! halted vCPU (e2e/BENCHMARKS.md, "Where the unary call and the connection
//! still go"), more than all the daemon's own work on a small request. A
//! request/response exchange through tcpd wakes the daemon once per
//! request and once per reply of the kernel peer. So, after a driver turn
//! that did work, a [`BusyPoll`] task keeps the daemon's runtime from
//! sleeping for up to the window: it yields (`tokio::task::yield_now`,
//! which tokio's current-thread scheduler defers; with a deferred task and
//! nothing else to run the scheduler polls its I/O driver with a zero
//! timeout, `epoll_wait(.., 0)`, instead of blocking in it), so the next
//! client request, fd-link byte or TUN packet is picked up by a running
//! thread. This is Linux's `net.core.busy_poll` / `SO_BUSY_POLL` idea (poll
//! the device for a bounded time before sleeping) applied to all the
//! daemon's event sources at once.
//!
//! Invariants:
//! - The daemon spins only after work: a driver turn woken by the TUN, an
//!   op, an fd link, a session event or a control message (not by its
//!   timer) starts or extends a spin; a spin ends `window` after the last
//!   such turn. An idle daemon never spins.
//! - Every spin iteration gives the CPU away (`sched_yield`) before polling
//!   again, so a process runnable on the same CPU — the kernel peer a
//!   request was just written to, under `SCHED_FIFO` too — runs at once
//!   instead of waiting for the spin to end.
//! - Adaptive: a spin that found nothing (no turn while it ran) halves the
//!   next spin's window, down to 1/16 of it; a spin that found work restores
//!   it, and so does work that arrives within the full window after the
//!   last turn a shortened spin saw (the full window would have caught it:
//!   without this rule a request/response loop whose requests come 5-50 µs
//!   apart stayed at 1/16 for good once a few idle spins had shortened it,
//!   and the daemon slept between every two calls). So traffic that
//!   arrives too seldom to be caught costs a sixteenth of the window per
//!   event, not the whole of it.
//!
//! With `--driver-thread on` the spin runs on the driver's thread (it sees
//! the TUN, the fd links and the op channel); the API thread sleeps as
//! before.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The default window, in microseconds: see daemon/DESIGN-multicore.md
/// "Busy-polling" for the measurements that chose it.
pub const DEFAULT_BUSY_POLL_US: u64 = 50;

/// The admin Stats names of [`BusyPoll::counters`]: spins that found work,
/// spins that found none, and the wall time of both in µs.
pub const COUNTER_NAMES: [&str; 3] = [
    "busy_poll_spins_useful",
    "busy_poll_spins_useless",
    "busy_poll_spin_us",
];

/// Spins are at least this fraction of the window (as a shift: 1/16).
const MIN_WINDOW_SHIFT: u32 = 4;

/// The shared state of one runtime's spin task; see the module docs.
#[derive(Debug)]
pub struct BusyPoll {
    window: Duration,
    /// Driver turns that did work, ever (the spin compares snapshots).
    turns: AtomicU64,
    /// A spin is running (or has been asked for): no need to notify.
    spinning: AtomicBool,
    wake: Notify,
    /// Counters for tuning (the admin Stats' `busy_poll_*`): spins that
    /// found work, spins that did not, and the wall time of both, in µs.
    useful: AtomicU64,
    useless: AtomicU64,
    spun_us: AtomicU64,
    /// Restore the full window for work within it of the last turn (see
    /// the module docs); `TCPD_BUSY_POLL_RECOVER=0` turns that rule off, an
    /// A/B switch for benchmarks.
    recover: bool,
    /// The window of the latest spin, in µs (for tests).
    #[cfg(test)]
    last_window_us: AtomicU64,
    /// The clock: `Instant::now`, or in tests one that does not depend on
    /// the machine's load.
    now: fn() -> Instant,
}

impl BusyPoll {
    /// A busy-poller spinning up to `window_us` µs; `None` when 0 (off).
    pub fn new(window_us: u64) -> Option<Arc<BusyPoll>> {
        let recover = std::env::var_os("TCPD_BUSY_POLL_RECOVER").is_none_or(|v| v != "0");
        BusyPoll::with(window_us, recover, Instant::now)
    }

    /// [`BusyPoll::new`] with the recovery rule (module docs) on or off, on
    /// clock `now`.
    fn with(window_us: u64, recover: bool, now: fn() -> Instant) -> Option<Arc<BusyPoll>> {
        (window_us > 0).then(|| {
            Arc::new(BusyPoll {
                window: Duration::from_micros(window_us),
                turns: AtomicU64::new(0),
                spinning: AtomicBool::new(false),
                wake: Notify::new(),
                useful: AtomicU64::new(0),
                useless: AtomicU64::new(0),
                spun_us: AtomicU64::new(0),
                recover,
                #[cfg(test)]
                last_window_us: AtomicU64::new(0),
                now,
            })
        })
    }

    /// Called by the driver after a turn that did work: starts a spin, or
    /// extends the running one.
    pub fn note_work(&self) {
        self.turns.fetch_add(1, Relaxed);
        if !self.spinning.swap(true, Relaxed) {
            self.wake.notify_one();
        }
    }

    /// (spins that found work, spins that found none) so far.
    #[cfg(test)]
    pub fn spins(&self) -> (u64, u64) {
        (self.useful.load(Relaxed), self.useless.load(Relaxed))
    }

    /// The counters of the spins that have ended, named by
    /// [`COUNTER_NAMES`]: a spin is counted when it ends, so one running now
    /// is not. Every spin lasts at least its window (1/16 of
    /// `--busy-poll-us` at the shortest), which makes `busy_poll_spin_us` a
    /// wall-clock measure of the spinning that no load on the machine can
    /// shorten.
    pub fn counters(&self) -> [u64; 3] {
        [
            self.useful.load(Relaxed),
            self.useless.load(Relaxed),
            self.spun_us.load(Relaxed),
        ]
    }

    /// The spin task: sleeps until work is noted, spins, and again. Spawn it
    /// on the runtime whose sleeping it should prevent (the driver's).
    pub async fn run(self: Arc<BusyPoll>) {
        let mut shift = 0;
        let mut last_turn: Option<Instant> = None;
        loop {
            self.wake.notified().await;
            // The notification wakes this task on the turn that noted it:
            // a turn within the full window of the last one a shortened
            // spin saw is one the full window would have caught.
            if self.recover && last_turn.is_some_and(|t| (self.now)() - t < self.window) {
                shift = 0;
            }
            let window = self.window / (1 << shift);
            #[cfg(test)]
            self.last_window_us
                .store(window.as_micros() as u64, Relaxed);
            let started = (self.now)();
            let (found, last) = self.spin(window).await;
            let spun = (self.now)() - started;
            self.spun_us.fetch_add(spun.as_micros() as u64, Relaxed);
            last_turn = Some(last);
            if found {
                self.useful.fetch_add(1, Relaxed);
                shift = 0;
            } else {
                self.useless.fetch_add(1, Relaxed);
                shift = (shift + 1).min(MIN_WINDOW_SHIFT);
            }
        }
    }

    /// Spins until `window` has passed without a new turn; whether any turn
    /// happened meanwhile, and when the spin last saw one (its start).
    async fn spin(&self, window: Duration) -> (bool, Instant) {
        let mut seen = self.turns.load(Relaxed);
        let mut found = false;
        let mut last_turn = (self.now)();
        let mut deadline = last_turn + window;
        loop {
            // Every task the last turn woke (a reply's write to its client)
            // runs first; then, with nothing else to run, the runtime
            // polls its sources without blocking and resumes this task.
            tokio::task::yield_now().await;
            let turns = self.turns.load(Relaxed);
            let now = (self.now)();
            if turns != seen {
                seen = turns;
                found = true;
                last_turn = now;
                deadline = now + self.window;
            } else if now < deadline {
                // Nothing happened since the last round: let whatever else
                // may run on this CPU run (see module docs) before polling
                // again.
                std::thread::yield_now();
            } else {
                self.spinning.store(false, Relaxed);
                // A turn noted between the load and the store found the
                // flag still set and did not notify: keep spinning for it.
                if self.turns.load(Relaxed) == seen {
                    return (found, last_turn);
                }
                self.spinning.store(true, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_off() {
        assert!(BusyPoll::new(0).is_none());
        assert!(BusyPoll::new(1).is_some());
    }

    /// A clock that moves 1 ms at every reading and jumps when told
    /// ([`pass`]), whatever the machine does meanwhile: how soon a loaded
    /// machine runs the test's task again cannot end a spin early or make
    /// a gap look longer. Per thread: each test runs its runtime on a
    /// thread of its own.
    mod test_clock {
        use std::cell::Cell;
        use std::time::{Duration, Instant};

        thread_local! {
            static CLOCK: (Instant, Cell<Duration>) = (Instant::now(), Cell::new(Duration::ZERO));
        }

        pub fn now() -> Instant {
            CLOCK.with(|(base, since)| {
                let t = since.get();
                since.set(t + Duration::from_millis(1));
                *base + t
            })
        }

        pub fn pass(time: Duration) {
            CLOCK.with(|(_, since)| since.set(since.get() + time));
        }
    }

    /// Work noted while a spin runs extends it and counts it useful; a
    /// spin with nothing after its start is useless; nothing noted, no spin.
    #[tokio::test(flavor = "current_thread")]
    async fn spins_follow_work_and_stop() {
        let poll = BusyPoll::with(100_000, true, test_clock::now).expect("on");
        let spinner = tokio::spawn(poll.clone().run());
        tokio::task::yield_now().await;
        assert_eq!(poll.spins(), (0, 0), "no work, no spin");
        // One turn: a spin that sees nothing more.
        poll.note_work();
        while poll.spins() == (0, 0) {
            tokio::task::yield_now().await;
        }
        assert_eq!(poll.spins(), (0, 1));
        // A turn, then another one while spinning (a few readings of the
        // clock into its 100): useful.
        poll.note_work();
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        poll.note_work();
        while poll.spins() == (0, 1) {
            tokio::task::yield_now().await;
        }
        assert_eq!(poll.spins(), (1, 1));
        assert!(!poll.spinning.load(Relaxed));
        // Each spin lasted at least its window (100 ms: the second came
        // within the full window of the first, so it was not shortened).
        let [_, _, spun] = poll.counters();
        assert!(spun >= 200_000, "spun {spun} µs in two 100 ms spins");
        spinner.abort();
    }

    /// Spins that found nothing shorten the window to 1/16 when the next
    /// work comes later than the full window; work arriving within the full
    /// window of the last turn restores it (with the recovery rule), or
    /// leaves it short (without: the round-5 rule).
    #[tokio::test(flavor = "current_thread")]
    async fn work_within_the_full_window_restores_it() {
        for recover in [true, false] {
            // 240 ms: 15 ms at 1/16.
            let poll = BusyPoll::with(240_000, recover, test_clock::now).expect("on");
            let spinner = tokio::spawn(poll.clone().run());
            let useless_spin = || async {
                let before = poll.spins().1;
                poll.note_work();
                while poll.spins().1 == before {
                    tokio::task::yield_now().await;
                }
            };
            for _ in 0..=MIN_WINDOW_SHIFT {
                useless_spin().await;
                // Later than the full window: nothing a spin could catch.
                test_clock::pass(Duration::from_millis(300));
            }
            useless_spin().await;
            assert_eq!(poll.last_window_us.load(Relaxed), 15_000, "1/16");
            // Within the full window of the last turn (the spin's 15 ms and
            // 75), past the shortened one.
            test_clock::pass(Duration::from_millis(75));
            useless_spin().await;
            let expect = if recover { 240_000 } else { 15_000 };
            assert_eq!(
                poll.last_window_us.load(Relaxed),
                expect,
                "recover: {recover}"
            );
            spinner.abort();
        }
    }
}
