//! Bounded busy-polling while the daemon's answer is outstanding
//! (`TCPD_BUSY_POLL_US`).
//!
//! Every call to the daemon ends with the daemon's answer waking the
//! thread that waits for it. A thread that sleeps in `epoll_wait` on an
//! otherwise idle CPU costs the waker a system call and an inter-processor
//! interrupt, and itself the return from idle: ~17 µs per wake-up of a
//! halted vCPU on the virtual machines tcpd is measured on
//! (e2e/BENCHMARKS.md, "Where the unary call and the connection still
//! go"), more than the daemon's whole work on a control call. So while a
//! unary call or a Stream open is outstanding, [`spin`] keeps the waiting
//! thread from sleeping for up to a bounded window: its future yields to
//! the runtime with `tokio::task::yield_now`, which tokio's schedulers
//! defer; a runtime whose only runnable task is deferred polls its I/O
//! driver with a zero timeout (`epoll_wait(.., 0)`) instead of blocking in
//! it, so the answer is picked up by a running thread. This is Linux's
//! `SO_BUSY_POLL` / `net.core.busy_read` (poll for a bounded time before
//! sleeping in a blocking read) applied to the daemon's answers; the
//! daemon does the same after its work (tcpd's `--busy-poll-us`).
//!
//! Invariants:
//! - A thread spins only while one of its calls is outstanding, and at most
//!   the window per call: after it the call waits as any future does. An
//!   idle client never spins.
//! - Every round gives the CPU away first (`sched_yield`), so a thread
//!   runnable on the same CPU — the library's own I/O thread that reads the
//!   answer, the kernel peer — can run. Under `SCHED_FIFO` it runs at once;
//!   under the default scheduler `sched_yield` is only a hint, and on the
//!   quiet measuring machine the spin then gained nothing and slowed
//!   hyper's keep-alive GETs, which is why it is off by default for
//!   sessions whose answers another thread reads
//!   ([`DEFAULT_BUSY_POLL_US`]). A current-thread runtime's own session
//!   has no such thread: the spinning thread is the one that reads the
//!   answer, and it spins by default ([`DEFAULT_CALLER_BUSY_POLL_US`]).
//! - A wait whose `sched_yield` ran another task (it took longer than an
//!   uncontended one can) stops spinning: the CPU is wanted, as when
//!   Linux's busy-poll loop sees `need_resched()`. On a loaded machine
//!   the spin would otherwise take turns of a scheduler slice with other
//!   programs (a unary call of 100-230 µs instead of 50 with no spin,
//!   measured); `TCPD_BUSY_POLL_STOP_CONTENDED=0` keeps spinning (A/B).
//! - Window 0 turns it off: the call's future is awaited unchanged.

use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::runtime::Home;

/// The environment variable that sets the window, in microseconds
/// (0 turns busy-polling off); read once, when the first session opens.
pub const BUSY_POLL_ENV: &str = "TCPD_BUSY_POLL_US";

/// The default window, in microseconds, when [`BUSY_POLL_ENV`] is unset,
/// of a session whose answers are read by another thread than the one
/// waiting for them (the library's runtime: blocking callers; a
/// multi-thread runtime): off, as Linux's `net.core.busy_read` is. On the
/// quiet measuring machine such a spin paid only when the waiting threads
/// ran under `SCHED_FIFO` (unary call 62 -> 31 µs, Rust connections 0.42x
/// -> 0.81x the kernel's rate); under the default scheduler the spinning
/// caller kept the CPU the library's I/O thread needed, gained nothing and
/// cost hyper's keep-alive GETs a third of their rate (e2e/BENCHMARKS.md
/// "Round 6: quiet A/B of the client's busy-poll").
pub const DEFAULT_BUSY_POLL_US: u64 = 0;

/// The default window, in microseconds, when [`BUSY_POLL_ENV`] is unset,
/// of a session living on a current-thread runtime and waited for there:
/// the thread that spins is the one that reads the answer, so it starves
/// no thread of this process, and the answer is picked up by a running
/// CPU instead of waking a halted one (e2e/BENCHMARKS.md "Round 7").
pub const DEFAULT_CALLER_BUSY_POLL_US: u64 = 200;

/// A `sched_yield` that took longer than this ran another task: the CPU is
/// wanted, and the wait stops spinning (Linux's busy-poll loop likewise
/// ends at `need_resched()`). An uncontended `sched_yield` returns in
/// about a microsecond here; a task switch there and back costs several,
/// and the task that got the CPU usually keeps it for a slice (ms).
const YIELD_RAN_ANOTHER: Duration = Duration::from_micros(15);

/// The environment variable that, set to `0`, keeps a wait spinning after
/// a `sched_yield` ran another task (the rule before round 7; an A/B
/// switch); [`Client::with_busy_poll_stop_contended`](crate::Client::with_busy_poll_stop_contended)
/// sets it per session. Read once.
pub const BUSY_POLL_CONTENDED_ENV: &str = "TCPD_BUSY_POLL_STOP_CONTENDED";

fn stop_when_contended() -> bool {
    static STOP: OnceLock<bool> = OnceLock::new();
    *STOP.get_or_init(|| std::env::var(BUSY_POLL_CONTENDED_ENV).map_or(true, |v| v.trim() != "0"))
}

/// How a session's waits busy-poll (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// At most this long per answer; zero: never.
    pub(crate) window: Duration,
    /// A wait whose `sched_yield` ran another task stops spinning.
    pub(crate) stop_contended: bool,
}

/// The policy of a session living at `home`: the window from
/// [`BUSY_POLL_ENV`] when set (for every session), else the default for
/// where it lives; the contention rule from [`BUSY_POLL_CONTENDED_ENV`].
pub(crate) fn policy_for(home: &Home) -> Policy {
    static FROM_ENV: OnceLock<Option<Duration>> = OnceLock::new();
    let from_env = *FROM_ENV.get_or_init(|| {
        std::env::var(BUSY_POLL_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_micros)
    });
    let window = from_env.unwrap_or_else(|| {
        Duration::from_micros(if home.is_current_thread_caller() {
            DEFAULT_CALLER_BUSY_POLL_US
        } else {
            DEFAULT_BUSY_POLL_US
        })
    });
    Policy {
        window,
        stop_contended: stop_when_contended(),
    }
}

/// Awaits `future`, busy-polling for at most the policy's window while it
/// is pending (see the module docs); a zero window awaits it plainly.
pub(crate) async fn spin<F: Future>(policy: Policy, future: F) -> F::Output {
    spin_giving_cpu_by(policy, future, sched_yield).await
}

/// Gives the CPU away (`sched_yield`); how long it took.
fn sched_yield() -> Duration {
    let start = Instant::now();
    std::thread::yield_now();
    start.elapsed()
}

/// [`spin`] with the way each round gives the CPU away and learns how long
/// that took ([`sched_yield`] in the library; the tests pass one whose
/// outcome does not depend on the host's scheduler or load).
async fn spin_giving_cpu_by<F: Future>(
    policy: Policy,
    future: F,
    give_cpu_away: fn() -> Duration,
) -> F::Output {
    let mut future = pin!(future);
    if policy.window.is_zero() {
        return future.await;
    }
    let mut spin = Spin::default();
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        spin.pending_giving_cpu_by(policy, cx, give_cpu_away);
        Poll::Pending
    })
    .await
}

/// The spin of one wait, for code that polls by hand (a read waiting for
/// the answer to what it wrote).
#[derive(Debug, Default)]
pub(crate) struct Spin {
    /// When the wait began (its first pending poll).
    started: Option<Instant>,
    /// A `sched_yield` of this wait ran another task: it spins no more.
    contended: bool,
}

impl Spin {
    /// Called each time the awaited thing is still pending, before
    /// returning `Pending`: within the policy's window of the wait's start, gives the
    /// CPU away and asks to be polled again once the runtime has polled its
    /// I/O without sleeping (tokio defers this wake-up; outside a tokio
    /// scheduler it is a plain wake, and the executor polls again at
    /// once). Whether the wait still spins (false once the window is over,
    /// or once giving the CPU away ran another task — the CPU is
    /// contended, and spinning would only take turns with that task: the
    /// caller waits for its real wake-up).
    pub(crate) fn pending(&mut self, policy: Policy, cx: &mut Context<'_>) -> bool {
        self.pending_giving_cpu_by(policy, cx, sched_yield)
    }

    /// [`Spin::pending`] with the way the CPU is given away.
    fn pending_giving_cpu_by(
        &mut self,
        policy: Policy,
        cx: &mut Context<'_>,
        give_cpu_away: fn() -> Duration,
    ) -> bool {
        if self.contended {
            return false;
        }
        let now = Instant::now();
        let start = *self.started.get_or_insert(now);
        if now.duration_since(start) >= policy.window {
            return false;
        }
        let given_away = give_cpu_away();
        if policy.stop_contended && given_away > YIELD_RAN_ANOTHER {
            self.contended = true;
            return false;
        }
        let _ = pin!(tokio::task::yield_now()).poll(cx);
        true
    }

    /// The wait is over: the next one starts a new window.
    pub(crate) fn reset(&mut self) {
        self.started = None;
        self.contended = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_pending_call_is_polled_again_until_the_window_ends_then_waits() {
        // A future that is never woken: with the spin it is polled again
        // and again during the window, then no more. A loaded machine that
        // deschedules the thread (the tests run beside each other) changes
        // how many polls the window holds, not the outcome.
        let window = Duration::from_millis(5);
        let start = Instant::now();
        let polls = std::cell::Cell::new(0u32);
        let last = std::cell::Cell::new(start);
        let never = std::future::poll_fn(|_| {
            polls.set(polls.get() + 1);
            last.set(Instant::now());
            Poll::<()>::Pending
        });
        let uncontended = Policy {
            window,
            stop_contended: false,
        };
        assert!(
            gives_up_after(
                Duration::from_millis(1000),
                spin_giving_cpu_by(uncontended, never, yield_that_ran_nothing),
            )
            .await,
            "never completes"
        );
        // Polled again without a wake: spinning.
        assert!(polls.get() >= 2, "polled {} times", polls.get());
        // Until the window's end...
        let spun = last.get().duration_since(start);
        assert!(spun >= window, "{spun:?}");
        // ...and then no more: nothing polled it in the second half of the
        // 1 s wait (a thread descheduled mid-window polls a little later;
        // a CI container throttled by its CPU quota waits out a period,
        // 100 ms, never that long).
        assert!(spun < Duration::from_millis(500), "kept polling: {spun:?}");
    }

    /// A `sched_yield` that ran another task for a while: it took well
    /// over [`YIELD_RAN_ANOTHER`].
    fn yield_that_ran_another_task() -> Duration {
        YIELD_RAN_ANOTHER * 10
    }

    /// An uncontended `sched_yield`: it returned at once.
    fn yield_that_ran_nothing() -> Duration {
        Duration::ZERO
    }

    /// How many times the spin polls a wait that is never woken, under
    /// `policy`, each round giving the CPU away by `give_cpu_away`; waits
    /// the window and 50 ms more.
    async fn polls_of_a_wait_never_woken(policy: Policy, give_cpu_away: fn() -> Duration) -> u32 {
        let polls = std::cell::Cell::new(0u32);
        let never = std::future::poll_fn(|_| {
            polls.set(polls.get() + 1);
            Poll::<()>::Pending
        });
        let pending = gives_up_after(
            policy.window + Duration::from_millis(50),
            spin_giving_cpu_by(policy, never, give_cpu_away),
        )
        .await;
        assert!(pending, "never completes");
        polls.get()
    }

    // Whether a real `sched_yield` runs one of the other threads is the
    // host scheduler's choice (CFS and EEVDF treat it as a hint, and a CI
    // container's CPU share changes it), so these tests give the CPU away
    // by a function whose outcome is fixed; the measured effect of the
    // rule is in e2e/BENCHMARKS.md ("Round 7").
    #[tokio::test(flavor = "current_thread")]
    async fn a_wait_whose_yield_ran_another_task_stops_spinning() {
        let contended = Policy {
            window: Duration::from_millis(200),
            stop_contended: true,
        };
        // A window of 200 ms would see hundreds of polls; the first yield
        // that ran another task ends the spin, and the future is polled
        // again only when woken (never, here).
        let polls = polls_of_a_wait_never_woken(contended, yield_that_ran_another_task).await;
        assert_eq!(polls, 1, "polled again after a contended yield");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn with_the_rule_off_a_contended_wait_spins_its_window() {
        let keep_spinning = Policy {
            window: Duration::from_millis(20),
            stop_contended: false,
        };
        let polls = polls_of_a_wait_never_woken(keep_spinning, yield_that_ran_another_task).await;
        // Polled again without a wake (the rule would have stopped it after
        // the first poll; how many more the window holds depends on the
        // machine's load).
        assert!(polls >= 2, "polled {polls} times");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn uncontended_yields_keep_the_wait_spinning() {
        let contended_rule_on = Policy {
            window: Duration::from_millis(5),
            stop_contended: true,
        };
        let polls = polls_of_a_wait_never_woken(contended_rule_on, yield_that_ran_nothing).await;
        // Polled again without a wake: still spinning after the yields
        // (a contended one would have ended it at the first poll).
        assert!(polls >= 2, "polled {polls} times");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn window_zero_polls_only_when_woken() {
        let polls = std::cell::Cell::new(0u32);
        let never = std::future::poll_fn(|_| {
            polls.set(polls.get() + 1);
            Poll::<()>::Pending
        });
        let off = Policy {
            window: Duration::ZERO,
            stop_contended: true,
        };
        assert!(gives_up_after(Duration::from_millis(10), spin(off, never)).await);
        assert_eq!(polls.get(), 1);
    }

    /// Whether `future` was still pending after `limit` (unlike tokio's
    /// `timeout`, the expiry does not poll it once more).
    async fn gives_up_after(limit: Duration, future: impl Future<Output = ()>) -> bool {
        tokio::select! {
            biased;
            () = tokio::time::sleep(limit) => true,
            () = future => false,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_ready_answer_comes_through() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let _ = tx.send(7);
        });
        let policy = Policy {
            window: Duration::from_millis(1),
            stop_contended: true,
        };
        assert_eq!(spin(policy, rx).await, Ok(7));
    }
}
