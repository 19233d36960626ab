//! Request intake: bounds the bytes of large request messages a session
//! can have the daemon receive at once.
//!
//! tonic reads a unary request's whole message into memory before the
//! handler runs, so the daemon's per-session quota on parked writes
//! ([`crate::sockets::Quotas::buffered_bytes`]) comes too late on its own:
//! 256 concurrent 4 MB Writes to a peer that never reads were all received
//! (1 GB) before the quota refused most of them. The session layer
//! ([`crate::idle::SessionLayer`]) wraps every request body ([`charge`]),
//! which then follows its gRPC message framing (a 5-byte prefix:
//! compressed flag and big-endian length, then the message). A message
//! larger than [`FREE_MESSAGE`] must take its length from the session's
//! intake budget (`--session-max-intake-bytes`, default [`SESSION_INTAKE`])
//! when its prefix arrives, and gives it back once its last byte has been
//! read (a Write: once answered, below); when the budget cannot cover it,
//! the call fails at once with ENOBUFS, before its bytes are read (hyper then
//! resets the stream and HTTP/2 flow control returns its window), so the
//! budget never waits and no call can hold it while waiting for another.
//! Small messages (every Stream frame, every control call) are free: they
//! are bounded by HTTP/2 flow control (the connection window) while in
//! reception, and by the session's op slots and parked-write quota after.
//!
//! A unary Write keeps its message's budget until it is answered, not only
//! until its last byte is read: the body moves the permit into a
//! [`HeldIntake`] in the request's extensions, which the handler holds
//! while the driver runs (or parks) the write. So a session's large Write
//! payloads in the daemon — in reception, waiting for an op slot, in the op
//! channel or parked — never exceed [`SESSION_INTAKE`] together, by
//! construction rather than by how fast the driver drains them.

use crate::errno::Errno;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use tcpd_proto::errno::ENOBUFS;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Messages up to this size need no budget (a Stream data frame is at most
/// 64 KiB).
pub const FREE_MESSAGE: usize = 64 * 1024 + 64;

/// Bytes of large messages one session may have in the daemon at once, by
/// default (`--session-max-intake-bytes`): room for eight 4 MB writes (the
/// gRPC message limit is 4 MiB).
pub const SESSION_INTAKE: usize = 32 << 20;

/// Calls the intake budget refused, daemon-wide (`api_refused_intake` in
/// `tcpctl stats`); the first is logged.
static REFUSALS: AtomicU64 = AtomicU64::new(0);

/// See [`REFUSALS`].
pub fn refusals() -> u64 {
    REFUSALS.load(Ordering::Relaxed)
}

/// The budget is counted in units of this many bytes (semaphore permits).
const UNIT: usize = 1024;

/// A session's intake budget (one per session, in its [`crate::idle::Activity`]).
#[derive(Debug, Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    /// The budget's size in units.
    units: u32,
}

impl Budget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: usize) -> Budget {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX >> 4);
        Budget {
            permits: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    fn bytes(&self) -> usize {
        self.units as usize * UNIT
    }
}

/// The RPC whose message stays charged until it is answered.
const HOLDING_PATH: &str = "/tcpd.v2.SocketService/Write";

/// The intake budget a call keeps until it is answered (see the module
/// docs): in the request's extensions; dropping the last clone gives it
/// back.
#[derive(Clone, Debug, Default)]
pub struct HeldIntake(Arc<std::sync::Mutex<Vec<OwnedSemaphorePermit>>>);

impl HeldIntake {
    fn keep(&self, permit: OwnedSemaphorePermit) {
        if let Ok(mut held) = self.0.lock() {
            held.push(permit);
        }
    }
}

/// `request` with its body charged against the session intake `budget`
/// (see the module docs); a unary Write also gets the [`HeldIntake`] its
/// handler keeps until it answers.
pub fn charge(
    mut request: http::Request<tonic::body::Body>,
    budget: Budget,
) -> http::Request<tonic::body::Body> {
    let keep = (request.uri().path() == HOLDING_PATH).then(|| {
        let keep = HeldIntake::default();
        request.extensions_mut().insert(keep.clone());
        keep
    });
    request.map(|body| tonic::body::Body::new(IntakeBody::new(body, budget).keeping_in(keep)))
}

/// Follows a request body's gRPC messages (see the module docs).
#[derive(Debug, Default)]
struct Framing {
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
}

impl Framing {
    /// Walks `data`; calls `start` with the length of each message whose
    /// prefix completes in it, `end` when the current message's last byte
    /// passes. Stops at the first error of `start`.
    fn walk<E>(
        &mut self,
        mut data: &[u8],
        mut start: impl FnMut(usize) -> Result<(), E>,
        mut end: impl FnMut(),
    ) -> Result<(), E> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                if self.remaining == 0 {
                    end();
                }
                continue;
            }
            let n = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == 5 {
                self.prefix_len = 0;
                let p = self.prefix;
                let len = u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize;
                start(len)?;
                self.remaining = len;
                if len == 0 {
                    end();
                }
            }
        }
        Ok(())
    }
}

/// A request body charged against its session's intake budget.
struct IntakeBody {
    inner: tonic::body::Body,
    budget: Budget,
    framing: Framing,
    /// The budget the message in reception holds, if it is a large one.
    held: Option<OwnedSemaphorePermit>,
    /// Where a read message's budget goes instead of back (a unary Write).
    keep: Option<HeldIntake>,
}

impl IntakeBody {
    fn new(inner: tonic::body::Body, budget: Budget) -> Self {
        IntakeBody {
            inner,
            budget,
            framing: Framing::default(),
            held: None,
            keep: None,
        }
    }

    /// Read messages keep their budget in `keep` (see [`HeldIntake`]).
    fn keeping_in(mut self, keep: Option<HeldIntake>) -> Self {
        self.keep = keep;
        self
    }

    fn account(&mut self, data: &[u8]) -> Result<(), tonic::Status> {
        let (budget, held, keep) = (&self.budget, &mut self.held, &self.keep);
        let mut taken: Option<OwnedSemaphorePermit> = None;
        let result = self.framing.walk(
            data,
            |len| {
                if len <= FREE_MESSAGE {
                    return Ok(());
                }
                // A message larger than the whole budget may come alone.
                let units = len.div_ceil(UNIT).min(budget.units as usize) as u32;
                match budget.permits.clone().try_acquire_many_owned(units) {
                    Ok(permit) => {
                        taken = Some(permit);
                        Ok(())
                    }
                    Err(_) => Err({
                        if REFUSALS.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::warn!(
                                len,
                                limit = budget.bytes(),
                                "a session's large requests reached its intake budget \
                                 (--session-max-intake-bytes): calls past it fail with ENOBUFS \
                                 (logged once; `tcpctl stats` counts every refusal)"
                            );
                        }
                        Errno::new(
                            ENOBUFS,
                            format!(
                                "a {len}-byte request while this session's large requests \
                                 (in reception, or Writes not yet answered) already hold most \
                                 of its {} bytes",
                                budget.bytes()
                            ),
                        )
                        .into_status()
                    }),
                }
            },
            || {
                if let (Some(permit), Some(keep)) = (held.take(), keep) {
                    keep.keep(permit);
                }
            },
        );
        if let Some(permit) = taken {
            // Held until the message's last byte (possibly in this frame:
            // then `end` already ran for it and the permit goes now).
            if self.framing.remaining > 0 {
                self.held = Some(permit);
            } else if let Some(keep) = &self.keep {
                keep.keep(permit);
            }
        }
        result
    }
}

impl HttpBody for IntakeBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && let Err(status) = self.account(data)
        {
            return Poll::Ready(Some(Err(status)));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len));
        m
    }

    /// Feeds `data` in `chunk`-byte pieces; returns (starts, ends).
    fn walk(data: &[u8], chunk: usize) -> (Vec<usize>, usize) {
        let mut f = Framing::default();
        let mut starts = Vec::new();
        let mut ends = 0;
        for piece in data.chunks(chunk) {
            f.walk::<()>(
                piece,
                |len| {
                    starts.push(len);
                    Ok(())
                },
                || ends += 1,
            )
            .unwrap();
        }
        (starts, ends)
    }

    #[test]
    fn framing_follows_messages_across_any_split() {
        let mut data = message(3);
        data.extend(message(0));
        data.extend(message(100_000));
        data.extend(message(1));
        for chunk in [1, 2, 5, 6, 4096, 1 << 20] {
            assert_eq!(
                walk(&data, chunk),
                (vec![3, 0, 100_000, 1], 4),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn large_messages_take_budget_until_read_and_fail_when_it_is_spent() {
        let budget = Budget::new(SESSION_INTAKE);
        let big = message(SESSION_INTAKE / 2);
        let body = || tonic::body::Body::empty();
        let mut a = IntakeBody::new(body(), budget.clone());
        let mut b = IntakeBody::new(body(), budget.clone());
        let mut c = IntakeBody::new(body(), budget.clone());
        a.account(&big[..10]).unwrap();
        b.account(&big[..10]).unwrap();
        assert_eq!(budget.permits.available_permits(), 0);
        let refused = c.account(&big[..10]).unwrap_err();
        assert_eq!(tcpd_proto::status_errno(&refused), Some(ENOBUFS));
        // Small messages pass regardless.
        c = IntakeBody::new(body(), budget.clone());
        c.account(&message(1000)).unwrap();
        // a's last byte gives its share back.
        a.account(&big[10..]).unwrap();
        assert_eq!(
            budget.permits.available_permits(),
            SESSION_INTAKE / UNIT / 2
        );
        // A dropped body (the call went away) gives its share back too.
        drop(b);
        assert_eq!(budget.permits.available_permits(), SESSION_INTAKE / UNIT);
    }

    /// A unary Write's message keeps its budget after it is read, until the
    /// call lets go of its extensions (it is answered), whether its last
    /// byte came in a later frame or in the frame that started it.
    #[test]
    fn a_write_keeps_its_budget_until_answered() {
        let budget = Budget::new(SESSION_INTAKE);
        let all = SESSION_INTAKE / UNIT;
        let big = message(SESSION_INTAKE / 4);
        let keep = HeldIntake::default();
        let mut a = IntakeBody::new(tonic::body::Body::empty(), budget.clone())
            .keeping_in(Some(keep.clone()));
        a.account(&big[..10]).unwrap();
        a.account(&big[10..]).unwrap();
        drop(a);
        assert_eq!(
            budget.permits.available_permits(),
            all * 3 / 4,
            "read, not answered"
        );
        let whole = HeldIntake::default();
        let mut b = IntakeBody::new(tonic::body::Body::empty(), budget.clone())
            .keeping_in(Some(whole.clone()));
        b.account(&big).unwrap();
        drop(b);
        assert_eq!(budget.permits.available_permits(), all / 2);
        drop(keep);
        drop(whole);
        assert_eq!(
            budget.permits.available_permits(),
            all,
            "answered: given back"
        );
    }
}
