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
    spin_on(HOST, policy, future).await
}

/// What a spin asks of the machine it runs on: the time, and giving the
/// CPU away. The library's is [`HOST`]; the tests pass one whose clock and
/// yields do not depend on the host's scheduler or load.
#[derive(Debug, Clone, Copy)]
struct Host {
    now: fn() -> Instant,
    /// Gives the CPU away; how long that took.
    give_cpu_away: fn() -> Duration,
}

/// The real clock and `sched_yield`.
const HOST: Host = Host {
    now: Instant::now,
    give_cpu_away: sched_yield,
};

/// Gives the CPU away (`sched_yield`); how long it took.
fn sched_yield() -> Duration {
    let start = Instant::now();
    std::thread::yield_now();
    start.elapsed()
}

/// [`spin`] on `host`.
async fn spin_on<F: Future>(host: Host, policy: Policy, future: F) -> F::Output {
    let mut future = pin!(future);
    if policy.window.is_zero() {
        return future.await;
    }
    let mut spin = Spin::default();
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        spin.pending_on(host, policy, cx);
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
        self.pending_on(HOST, policy, cx)
    }

    /// [`Spin::pending`] on `host`.
    fn pending_on(&mut self, host: Host, policy: Policy, cx: &mut Context<'_>) -> bool {
        if self.contended {
            return false;
        }
        let now = (host.now)();
        let start = *self.started.get_or_insert(now);
        if now.duration_since(start) >= policy.window {
            return false;
        }
        let given_away = (host.give_cpu_away)();
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

    // Whether a real `sched_yield` runs one of the other threads is the
    // host scheduler's choice (CFS and EEVDF treat it as a hint, and a CI
    // container's CPU share changes it), and how many polls fit a window of
    // real time depends on the machine's load (a poll delayed past the
    // window's end by a preemption made a 5 ms spin look 3.5 ms long under
    // four CPU burners). So the tests spin on a host whose clock moves 1 ms
    // at every reading and whose yields have a fixed outcome: every count
    // is exact. The measured effect of the rules is in e2e/BENCHMARKS.md
    // ("Round 7").

    /// A clock that moves 1 ms at every reading (per thread: each test runs
    /// on a thread of its own), whatever the machine does meanwhile.
    fn clock_moving_1ms_a_reading() -> Instant {
        thread_local! {
            static READINGS: (Instant, std::cell::Cell<u64>) =
                (Instant::now(), std::cell::Cell::new(0));
        }
        READINGS.with(|(base, readings)| {
            let n = readings.get();
            readings.set(n + 1);
            *base + Duration::from_millis(n)
        })
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

    /// A host where giving the CPU away never runs another task.
    const IDLE_HOST: Host = Host {
        now: clock_moving_1ms_a_reading,
        give_cpu_away: yield_that_ran_nothing,
    };

    /// A host where giving the CPU away always runs another task.
    const BUSY_HOST: Host = Host {
        now: clock_moving_1ms_a_reading,
        give_cpu_away: yield_that_ran_another_task,
    };

    /// How many times the spin on `host` polls a wait that is never woken,
    /// under `policy`; waits 100 ms of real time, far more than any spin on
    /// the test clock lasts.
    async fn polls_of_a_wait_never_woken(host: Host, policy: Policy) -> u64 {
        let polls = std::cell::Cell::new(0);
        let never = std::future::poll_fn(|_| {
            polls.set(polls.get() + 1);
            Poll::<()>::Pending
        });
        let pending =
            gives_up_after(Duration::from_millis(100), spin_on(host, policy, never)).await;
        assert!(pending, "never completes");
        polls.get()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_pending_call_is_polled_again_until_the_window_ends_then_waits() {
        let window = Duration::from_millis(5);
        let uncontended = Policy {
            window,
            stop_contended: false,
        };
        // The first poll starts the window (reading 0 ms) and asks for
        // another; so does each poll that reads 1..4 ms; the one that reads
        // 5 ms ends the spin, and nothing polls the wait again (it is never
        // woken) in the rest of the 100 ms.
        let polls = polls_of_a_wait_never_woken(IDLE_HOST, uncontended).await;
        assert_eq!(polls, 6, "one poll per ms of the window, and the last");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_wait_whose_yield_ran_another_task_stops_spinning() {
        let contended = Policy {
            window: Duration::from_millis(200),
            stop_contended: true,
        };
        // A window of 200 ms would see 201 polls; the first yield that ran
        // another task ends the spin, and the future is polled again only
        // when woken (never, here).
        let polls = polls_of_a_wait_never_woken(BUSY_HOST, contended).await;
        assert_eq!(polls, 1, "polled again after a contended yield");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn with_the_rule_off_a_contended_wait_spins_its_window() {
        let keep_spinning = Policy {
            window: Duration::from_millis(20),
            stop_contended: false,
        };
        let polls = polls_of_a_wait_never_woken(BUSY_HOST, keep_spinning).await;
        assert_eq!(polls, 21, "the whole window, as if uncontended");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn uncontended_yields_keep_the_wait_spinning() {
        let contended_rule_on = Policy {
            window: Duration::from_millis(5),
            stop_contended: true,
        };
        let polls = polls_of_a_wait_never_woken(IDLE_HOST, contended_rule_on).await;
        assert_eq!(polls, 6, "the whole window: no yield was contended");
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
