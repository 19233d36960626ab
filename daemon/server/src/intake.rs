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
//! The Stream RPC does not pass this wrapper: its up side
//! ([`crate::stream_up`]) charges the messages it gathers whole with
//! [`Budget::take`] the same way, and never gathers `data` payloads.
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

    /// The budget for a message of `len` bytes (more than [`FREE_MESSAGE`]),
    /// held until the permit is dropped; ENOBUFS at once when the budget
    /// cannot cover it (see the module docs).
    pub fn take(&self, len: usize) -> Result<OwnedSemaphorePermit, Errno> {
        // A message larger than the whole budget may come alone.
        let units = len.div_ceil(UNIT).min(self.units as usize) as u32;
        self.permits
            .clone()
            .try_acquire_many_owned(units)
            .map_err(|_| {
                if REFUSALS.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        len,
                        limit = self.bytes(),
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
                        self.bytes()
                    ),
                )
            })
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
    /// passes. Stops at the first error of `start`, and right after a
    /// prefix announcing a message of [`SPLIT_AT`] bytes or more: returns
    /// how much of `data` it walked (see [`IntakeBody`] for why).
    fn walk<E>(
        &mut self,
        data: &[u8],
        mut start: impl FnMut(usize) -> Result<(), E>,
        mut end: impl FnMut(),
    ) -> Result<usize, E> {
        let mut at = 0;
        while at < data.len() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len() - at);
                self.remaining -= n;
                at += n;
                if self.remaining == 0 {
                    end();
                }
                continue;
            }
            let n = (5 - self.prefix_len).min(data.len() - at);
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[at..at + n]);
            self.prefix_len += n;
            at += n;
            if self.prefix_len == 5 {
                self.prefix_len = 0;
                let p = self.prefix;
                let len = u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize;
                start(len)?;
                self.remaining = len;
                if len == 0 {
                    end();
                }
                if len >= SPLIT_AT {
                    break;
                }
            }
        }
        Ok(at)
    }
}

/// A message of at least this many bytes starts a new data frame (see
/// [`IntakeBody`]).
const SPLIT_AT: usize = 4096;

/// A request body charged against its session's intake budget.
///
/// It also cuts every data frame right after the prefix of a message of
/// [`SPLIT_AT`] bytes or more (`Bytes` slices: no copy), so that tonic's
/// decoder sees each such message's prefix at the end of a frame. tonic
/// copies every frame into its per-RPC buffer and, on reading a prefix,
/// reserves the whole message length *beyond* what the buffer already
/// holds: when the message came in the same frame as its prefix (how a
/// client sends a 64 KiB Stream `data` frame), that reservation moves the
/// message, already copied once, into a new allocation — a second copy
/// of every byte sent through a Stream (measured: 9 % of the daemon's CPU
/// with 100 streams). Cut after the prefix, the buffer is empty when the
/// reservation comes, so it is one allocation of the message's size and
/// the message's bytes are copied once.
struct IntakeBody {
    inner: tonic::body::Body,
    /// The rest of a data frame cut after a prefix, to yield next.
    pending: Option<Bytes>,
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
            pending: None,
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

    /// Charges the messages of `data` up to where [`Framing::walk`]
    /// stopped; returns how many bytes that is.
    fn account(&mut self, data: &[u8]) -> Result<usize, tonic::Status> {
        let (budget, held, keep) = (&self.budget, &mut self.held, &self.keep);
        let mut taken: Option<OwnedSemaphorePermit> = None;
        let result = self.framing.walk(
            data,
            |len| {
                if len <= FREE_MESSAGE {
                    return Ok(());
                }
                taken = Some(budget.take(len).map_err(Errno::into_status)?);
                Ok(())
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
        let mut data = match self.pending.take() {
            Some(rest) => rest,
            None => match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            },
        };
        let walked = match self.account(&data) {
            Ok(n) => n,
            Err(status) => return Poll::Ready(Some(Err(status))),
        };
        if walked < data.len() {
            self.pending = Some(data.split_off(walked));
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let pending = self.pending.as_ref().map_or(0, |p| p.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + pending);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + pending);
        }
        hint
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
        for mut piece in data.chunks(chunk) {
            while !piece.is_empty() {
                let n = f
                    .walk::<()>(
                        piece,
                        |len| {
                            starts.push(len);
                            Ok(())
                        },
                        || ends += 1,
                    )
                    .unwrap();
                piece = &piece[n..];
            }
        }
        (starts, ends)
    }

    /// Charges all of `data` (each call walks up to a large prefix).
    fn feed(body: &mut IntakeBody, mut data: &[u8]) -> Result<(), tonic::Status> {
        while !data.is_empty() {
            let n = body.account(data)?;
            data = &data[n..];
        }
        Ok(())
    }

    /// A request body of the given data frames.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl HttpBody for Frames {
        type Data = Bytes;
        type Error = tonic::Status;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
            Poll::Ready(self.0.pop_front().map(|d| Ok(Frame::data(d))))
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// Every frame is cut right after the prefix of a large message (and
    /// nowhere else), so tonic's buffer is empty when it reserves the
    /// message; nothing is lost or reordered.
    #[test]
    fn frames_are_cut_after_the_prefixes_of_large_messages() {
        let mut data = message(3);
        data.extend(message(70_000));
        data.extend(message(10));
        data.extend(message(SPLIT_AT));
        let frames = [&data[..100], &data[100..70_020], &data[70_020..]];
        let inner = Frames(frames.iter().map(|f| Bytes::copy_from_slice(f)).collect());
        let mut body = IntakeBody::new(tonic::body::Body::new(inner), Budget::new(SESSION_INTAKE));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out: Vec<Bytes> = Vec::new();
        while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
            out.push(frame.unwrap().into_data().unwrap());
        }
        assert!(body.is_end_stream());
        let lens: Vec<usize> = out.iter().map(Bytes::len).collect();
        // Prefixes end at 13 (70 000 bytes) and 70 033 (SPLIT_AT bytes);
        // the 10-byte message's, at 70 018, is no cut.
        assert_eq!(lens, [13, 87, 69_920, 13, SPLIT_AT]);
        assert_eq!(out.concat(), data);
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
        feed(&mut a, &big[..10]).unwrap();
        feed(&mut b, &big[..10]).unwrap();
        assert_eq!(budget.permits.available_permits(), 0);
        let refused = feed(&mut c, &big[..10]).unwrap_err();
        assert_eq!(tcpd_proto::status_errno(&refused), Some(ENOBUFS));
        // Small messages pass regardless.
        c = IntakeBody::new(body(), budget.clone());
        feed(&mut c, &message(1000)).unwrap();
        // a's last byte gives its share back.
        feed(&mut a, &big[10..]).unwrap();
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
        feed(&mut a, &big[..10]).unwrap();
        feed(&mut a, &big[10..]).unwrap();
        drop(a);
        assert_eq!(
            budget.permits.available_permits(),
            all * 3 / 4,
            "read, not answered"
        );
        let whole = HeldIntake::default();
        let mut b = IntakeBody::new(tonic::body::Body::empty(), budget.clone())
            .keeping_in(Some(whole.clone()));
        feed(&mut b, &big).unwrap();
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
