//! The Stream RPC's call, with its responses read without tonic's decode
//! buffer.
//!
//! tonic's `Streaming` copies every HTTP/2 DATA frame into a buffer of its
//! own and decodes messages from there, so a received byte was copied once
//! there and once more into the application's buffer. Here the request
//! side is tonic's as for any call (its encoder, the channel's headers and
//! origin), and the response body is read frame by frame into
//! `tcpd_proto::stream_data::DownDecoder`, which yields a `data` message's
//! payload as slices of the frames h2 received ([`DownPart::Data`]): the
//! only copy left in this process is the one into the reader's buffer.
//!
//! The final status is read as tonic reads it: a trailers-only response's
//! `grpc-status`, else the trailers' (a missing one is an error), a body
//! error as its `Status`. `TCPD_CLIENT_DECODE=prost` in the environment
//! makes Streams use tonic's generated call instead (an A/B switch for
//! benchmarks).

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};

use futures::Stream;
use http_body::Body as _;
use tcpd_proto::stream_data::{DownDecoder, DownPart};
use tcpd_proto::v2;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::codec::{Codec, EncodeBody};
use tower::Service as _;

use crate::Client;

/// The environment variable that, set to `prost`, has Streams decoded by
/// tonic's codec (see the module docs).
pub const CLIENT_DECODE_ENV: &str = "TCPD_CLIENT_DECODE";

/// Whether [`CLIENT_DECODE_ENV`] asks for tonic's decoder (read once).
fn tonic_decode() -> bool {
    static TONIC: OnceLock<bool> = OnceLock::new();
    *TONIC.get_or_init(|| std::env::var_os(CLIENT_DECODE_ENV).is_some_and(|v| v == "prost"))
}

/// A Stream's responses: payload slices and other messages, then the end
/// (`None` after an OK status, an error otherwise).
pub(crate) struct DownFrames {
    inner: Inner,
}

enum Inner {
    Raw {
        body: tonic::body::Body,
        decoder: DownDecoder,
        ended: bool,
    },
    Tonic(tonic::Streaming<v2::StreamResponse>),
}

/// Calls the Stream RPC of `client`'s session with the up frames of `up`.
pub(crate) async fn open(
    client: &Client,
    up: mpsc::Receiver<v2::StreamRequest>,
) -> Result<DownFrames, Status> {
    if tonic_decode() {
        let frames = client.rpc().stream(ReceiverStream::new(up)).await?;
        return Ok(DownFrames {
            inner: Inner::Tonic(frames.into_inner()),
        });
    }
    let mut codec =
        tcpd_proto::codec::LeanCodec::<v2::StreamRequest, v2::StreamResponse>::default();
    let body = EncodeBody::new_client(codec.encoder(), ReceiverStream::new(up).map(Ok), None, None);
    let request = tcpd_proto::stream_data::stream_request(tonic::body::Body::new(body));
    let mut channel = client.channel();
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
    let response = channel
        .call(request)
        .await
        .map_err(|e| Status::from_error(Box::new(e)))?;
    // A trailers-only response: the status is in the headers.
    let ended = match Status::from_header_map(response.headers()) {
        Some(status) if status.code() != tonic::Code::Ok => return Err(status),
        Some(_) => true,
        None => false,
    };
    Ok(DownFrames {
        inner: Inner::Raw {
            body: response.into_body(),
            decoder: DownDecoder::new(),
            ended,
        },
    })
}

impl Stream for DownFrames {
    type Item = Result<DownPart, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let (body, decoder, ended) = match &mut self.inner {
            Inner::Tonic(frames) => {
                return Pin::new(frames)
                    .poll_next(cx)
                    .map(|m| m.map(|m| m.map(DownPart::Message)));
            }
            Inner::Raw {
                body,
                decoder,
                ended,
            } => (body, decoder, ended),
        };
        loop {
            if *ended {
                return Poll::Ready(None);
            }
            match decoder.next_part() {
                Ok(Some(part)) => return Poll::Ready(Some(Ok(part))),
                Ok(None) => {}
                Err(status) => {
                    *ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
            }
            let frame = match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(status)) => {
                    *ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
                None => {
                    *ended = true;
                    return Poll::Ready(Some(Err(Status::unknown(
                        "protocol error: the Stream ended without a grpc-status trailer",
                    ))));
                }
            };
            let trailers = match frame.into_data() {
                Ok(data) => {
                    decoder.feed(data);
                    continue;
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => trailers,
                    // Neither data nor trailers: nothing for us.
                    Err(_) => continue,
                },
            };
            *ended = true;
            if !decoder.at_boundary() {
                return Poll::Ready(Some(Err(Status::internal(
                    "the Stream ended inside a message",
                ))));
            }
            return Poll::Ready(match Status::from_header_map(&trailers) {
                Some(status) if status.code() == tonic::Code::Ok => None,
                Some(status) => Some(Err(status)),
                None => Some(Err(Status::unknown(
                    "protocol error: the Stream's trailers carry no grpc-status",
                ))),
            });
        }
    }
}
