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
//!   hyper's keep-alive GETs, which is why it is off by default
//!   ([`DEFAULT_BUSY_POLL_US`]).
//! - Window 0 (the default) turns it off: the call's future is awaited
//!   unchanged.

use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The environment variable that sets the window, in microseconds
/// (0 turns busy-polling off); read once, when the first session opens.
pub const BUSY_POLL_ENV: &str = "TCPD_BUSY_POLL_US";

/// The default window, in microseconds, when [`BUSY_POLL_ENV`] is unset:
/// off, as Linux's `net.core.busy_read` is. On the quiet measuring machine
/// the spin pays only when the waiting threads run under `SCHED_FIFO`
/// (unary call 62 -> 31 µs, Rust connections 0.42x -> 0.81x the kernel's
/// rate); under the default scheduler it gained nothing and cost hyper's
/// keep-alive GETs a third of their rate (e2e/BENCHMARKS.md "Round 6:
/// quiet A/B of the client's busy-poll"). 200 µs is the window those
/// measurements used.
pub const DEFAULT_BUSY_POLL_US: u64 = 0;

/// The window from the environment (or the default).
pub(crate) fn window_from_env() -> Duration {
    static WINDOW: OnceLock<Duration> = OnceLock::new();
    *WINDOW.get_or_init(|| {
        let us = std::env::var(BUSY_POLL_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_BUSY_POLL_US);
        Duration::from_micros(us)
    })
}

/// Awaits `future`, busy-polling for at most `window` while it is pending
/// (see the module docs); `window` zero awaits it plainly.
pub(crate) async fn spin<F: Future>(window: Duration, future: F) -> F::Output {
    let mut future = pin!(future);
    if window.is_zero() {
        return future.await;
    }
    let mut spin = Spin::default();
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        spin.pending(window, cx);
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
}

impl Spin {
    /// Called each time the awaited thing is still pending, before
    /// returning `Pending`: within `window` of the wait's start, gives the
    /// CPU away and asks to be polled again once the runtime has polled its
    /// I/O without sleeping (tokio defers this wake-up; outside a tokio
    /// scheduler it is a plain wake, and the executor polls again at
    /// once). Whether the wait still spins (false once the window is over:
    /// the caller waits for its real wake-up).
    pub(crate) fn pending(&mut self, window: Duration, cx: &mut Context<'_>) -> bool {
        let now = Instant::now();
        let start = *self.started.get_or_insert(now);
        if now.duration_since(start) >= window {
            return false;
        }
        std::thread::yield_now();
        let _ = pin!(tokio::task::yield_now()).poll(cx);
        true
    }

    /// The wait is over: the next one starts a new window.
    pub(crate) fn reset(&mut self) {
        self.started = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_pending_call_is_polled_again_until_the_window_ends_then_waits() {
        // A future that is never woken: with the spin it is polled many
        // times during the window, then no more.
        let polls = std::cell::Cell::new(0u32);
        let last = std::cell::Cell::new(Instant::now());
        let never = std::future::poll_fn(|_| {
            polls.set(polls.get() + 1);
            last.set(Instant::now());
            Poll::<()>::Pending
        });
        let start = Instant::now();
        assert!(
            gives_up_after(
                Duration::from_millis(60),
                spin(Duration::from_millis(5), never)
            )
            .await,
            "never completes"
        );
        assert!(
            polls.get() > 10,
            "polled {} times while spinning",
            polls.get()
        );
        // The spin stops at the window's end (slack for a loaded machine
        // that deschedules the thread mid-round); the timeout fires 60 ms in.
        let spun = last.get().duration_since(start);
        assert!(spun >= Duration::from_millis(5), "{spun:?}");
        assert!(spun < Duration::from_millis(50), "kept polling: {spun:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn window_zero_polls_only_when_woken() {
        let polls = std::cell::Cell::new(0u32);
        let never = std::future::poll_fn(|_| {
            polls.set(polls.get() + 1);
            Poll::<()>::Pending
        });
        assert!(gives_up_after(Duration::from_millis(10), spin(Duration::ZERO, never)).await);
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
        assert_eq!(spin(Duration::from_millis(1), rx).await, Ok(7));
    }
}
