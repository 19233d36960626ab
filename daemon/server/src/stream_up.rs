//! The Stream RPC's up direction as the daemon reads it: the request body's
//! gRPC messages, one at a time, for [`crate::socket_service`]'s Stream.
//!
//! [`UpFrames`] reads the HTTP/2 request body (hyper's `Incoming`) frame
//! by frame into a [`tcpd_proto::stream_data::UpDecoder`]: a `data`
//! message's payload comes out as slices of the DATA frames h2 received
//! (no copy into a decode buffer, as tonic's `Streaming` makes), every
//! other message decoded by prost. Between messages it holds no buffer:
//! an idle Stream keeps the body handle and the decoder's fields.
//!
//! What the per-request layers did for this RPC is folded in here:
//! - intake ([`crate::intake`]): a message gathered whole (anything but
//!   `data`: a `write` with flags may carry megabytes) larger than
//!   [`FREE_MESSAGE`] holds its length of the session's intake budget from
//!   its prefix to its last byte, and fails at once with ENOBUFS when the
//!   budget cannot cover it. A `data` message needs no budget: its payload
//!   is never gathered — its parts go to the socket's Write op as they
//!   arrive, bounded by HTTP/2 flow control and the Stream's one op in
//!   flight;
//! - framing: no frame cutting is needed (nothing is copied into a buffer
//!   that a reservation could move).
//!
//! Bad input ends the Stream with a clear errno (never a panic, never a
//! buffer past [`MAX_MESSAGE`]): a compressed message (none is negotiated)
//! or one that prost cannot decode, EINVAL; a message longer than
//! [`MAX_MESSAGE`], EMSGSIZE (judged from its prefix, before any of it is
//! gathered); a body that ends inside a message, EINVAL.
//!
//! [`UpSource::Tonic`] keeps tonic's decoder for an A/B switch
//! (`TCPD_STREAM_DECODE=tonic`, see [`crate::socket_service`]).

use crate::errno::Errno;
use crate::intake::{Budget, FREE_MESSAGE};
use bytes::Bytes;
use http_body::Body as _;
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tcpd_proto::errno::{EINVAL, EMSGSIZE};
use tcpd_proto::stream_data::{MAX_MESSAGE, Part, UpDecoder};
use tcpd_proto::v2;
use tokio::sync::OwnedSemaphorePermit;
use tokio_stream::Stream;
use tonic::Streaming;

/// Why the up side gives no more messages.
#[derive(Debug)]
pub enum UpError {
    /// The client's side went away (its request body failed: a reset
    /// stream, a lost connection; or tonic's decoder failed, which is what
    /// the tonic path always reported this way): as its end, no status to
    /// send anyone.
    Gone(Option<tonic::Status>),
    /// The client sent bytes that are not a Stream request: the Stream ends
    /// with this error.
    Bad(Errno),
}

/// One up message, the end (`None`), or why there is none.
pub type UpMessage = Result<Option<v2::StreamRequest>, UpError>;

/// Where a Stream's up messages come from.
pub enum UpSource {
    /// The request body, read by the daemon (see the module docs).
    Frames(UpFrames),
    /// tonic's decoder (boxed: the A/B switch's path only).
    Tonic(Box<Streaming<v2::StreamRequest>>),
}

impl UpSource {
    /// The next up message; `budget` is the session's intake budget.
    pub fn poll_message(&mut self, cx: &mut Context<'_>, budget: &Budget) -> Poll<UpMessage> {
        match self {
            UpSource::Frames(frames) => frames.poll_message(cx, budget),
            UpSource::Tonic(streaming) => {
                Poll::Ready(match ready!(Pin::new(&mut **streaming).poll_next(cx)) {
                    Some(Ok(message)) => Ok(Some(message)),
                    Some(Err(status)) => Err(UpError::Gone(Some(status))),
                    None => Ok(None),
                })
            }
        }
    }
}

/// A Stream's request body and its decoder (see the module docs).
pub struct UpFrames {
    body: Incoming,
    decoder: UpDecoder,
    /// The intake budget held by a large message being gathered.
    held: Option<OwnedSemaphorePermit>,
    /// The body ended (or failed, or an error was reported): nothing more
    /// is read from it.
    ended: bool,
}

impl UpFrames {
    pub fn new(body: Incoming) -> UpFrames {
        UpFrames {
            body,
            decoder: UpDecoder::new(),
            held: None,
            ended: false,
        }
    }

    fn poll_message(&mut self, cx: &mut Context<'_>, budget: &Budget) -> Poll<UpMessage> {
        loop {
            match self.decoder.next_part() {
                Ok(Some(Part::Data(payload))) => return Poll::Ready(Ok(Some(data(payload)))),
                Ok(Some(Part::Message(message))) => {
                    self.held = None;
                    return Poll::Ready(Ok(Some(message)));
                }
                Ok(None) => {}
                Err(status) => return Poll::Ready(self.fail(bad(&status))),
            }
            match self.decoder.gathering() {
                Some(len) if len > FREE_MESSAGE && self.held.is_none() => match budget.take(len) {
                    Ok(permit) => self.held = Some(permit),
                    Err(e) => return Poll::Ready(self.fail(e)),
                },
                Some(_) => {}
                None => self.held = None,
            }
            if self.ended {
                return Poll::Ready(if self.decoder.at_boundary() {
                    Ok(None)
                } else {
                    self.fail(Errno::invalid(
                        "the Stream request ended inside a message (truncated)",
                    ))
                });
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers (gRPC clients send none) are ignored.
                    if let Ok(bytes) = frame.into_data() {
                        self.decoder.feed(bytes);
                    }
                }
                Some(Err(e)) => {
                    self.ended = true;
                    self.decoder = UpDecoder::new();
                    self.held = None;
                    return Poll::Ready(Err(UpError::Gone(Some(tonic::Status::from_error(
                        Box::new(e),
                    )))));
                }
                None => self.ended = true,
            }
        }
    }

    /// Reports `e` once; the up side then ends (a later poll: `None`).
    fn fail(&mut self, e: Errno) -> UpMessage {
        self.ended = true;
        self.decoder = UpDecoder::new();
        self.held = None;
        Err(UpError::Bad(e))
    }
}

/// The up message `data` carrying `payload` (a part of one).
fn data(payload: Bytes) -> v2::StreamRequest {
    v2::StreamRequest {
        frame: Some(v2::stream_request::Frame::Data(payload)),
    }
}

/// The errno of a decoding failure.
fn bad(status: &tonic::Status) -> Errno {
    let number = if status.code() == tonic::Code::ResourceExhausted {
        EMSGSIZE
    } else {
        EINVAL
    };
    Errno::new(number, status.message())
}

const _: () = assert!(MAX_MESSAGE >= FREE_MESSAGE);
