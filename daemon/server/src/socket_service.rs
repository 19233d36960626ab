//! The `tcpd.v2.SocketService`: unary socket calls, and the `Stream` RPC
//! that carries one connected socket's whole life.
//!
//! Handlers own no socket state: each validates its request, identifies the
//! session from the request extensions, and sends one typed [`Op`] to the
//! driver, which answers it or parks it until the socket's readiness
//! changes. Every failure is an errno-bearing `google.rpc.Status`
//! ([`crate::errno`]).
//!
//! A Stream (see the proto) is, after `open`, its response stream
//! ([`StreamBody`]), polled by hyper's task for the HTTP/2 stream: no task
//! of its own. The up side applies client frames in order (Write ops that
//! park until the bytes are queued, shutdowns, `flush` answered with
//! `flushed`), the down side yields the data of its parked Read op. hyper's
//! polls move both; the up side's wake-ups go to the service's one up pump
//! task, so a client that leaves received data unread (hyper stops polling
//! once the client's HTTP/2 window is used up) still has its writes applied. `close` — or the end of the up side —
//! closes the socket after everything before it, and the response ends:
//! OK after a close, the connection's error otherwise. A Stream dropped
//! before that (its client reset it) has its socket closed by the driver.
//!
//! The server adds the service as [`SocketRoutes`] (tonic's generated
//! service for the unary calls) and serves the Stream RPC itself through
//! [`StreamRoute`], below tonic: the up side's messages are read from the
//! request body by [`crate::stream_up::UpFrames`] (a `data` payload stays
//! a slice of the HTTP/2 DATA frame it came in), the Stream holds its
//! session's in-flight guard and intake budget itself, and the response
//! goes out through [`DownBody`], which sends each `data` message as its
//! few header bytes followed by the payload's own `Bytes` (the receive
//! queue's slice of a TUN read), where tonic's prost encoder would copy the
//! payload into its buffer (`tcpd_proto::stream_data`; the bytes on the
//! wire are the same). An idle Stream thus holds its state (one
//! allocation, shared with its up side's waker) and hyper's and h2's
//! per-stream parts, and no per-request wrapper or buffer.
//! `TCPD_STREAM_DECODE=tonic` ([`STREAM_DECODE_ENV`]) routes Streams
//! through tonic as before (A/B switch).

use crate::convert;
use crate::errno::Errno;
use crate::idle::{Activity, InFlightGuard};
use crate::ops::{
    Control, DriverHandle, Op, OpCall, ReadData, SocketSetup, StreamReader, StreamReply, Submit,
    WriteData,
};
use crate::session::{SessionConnection, SessionInfo};
use crate::shards::Shards;
use crate::sockets::MAX_READ;
use crate::stream_up::{UpError, UpFrames, UpMessage, UpSource};
use bytes::{Bytes, BytesMut};
use http_body::Frame;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;
use tcpd_proto::errno::{EINVAL, EIO};
use tcpd_proto::stream_data;
use tcpd_proto::stream_data::STREAM_PATH;
use tcpd_proto::v2;
use tcpd_proto::v2::socket_service_server::{SocketService as SocketApi, SocketServiceServer};
use tcpd_proto::v2::{stream_open, stream_request, stream_response};
use tcpd_stack::{SendFlags, Shutdown};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Largest `data` frame the Stream RPC sends down (proto: at most 64 KiB).
pub const STREAM_CHUNK: usize = 64 * 1024;
/// Most frames one read of a Stream's down side takes from the socket: the
/// daemon reads again once they are out (the rest of the back-pressure is
/// HTTP/2 flow control).
const STREAM_DOWN_QUEUE: usize = 4;
/// Most bytes of up `data` frames, already received, that one Write op
/// carries (see [`batch_data`]). Four frames: a few driver round trips
/// fewer per megabyte, while a parked write still holds little of the
/// session's `buffered_bytes` quota (64 MiB: 256 blocked streams).
const STREAM_UP_BATCH: usize = 4 * STREAM_CHUNK;

type Reply<T> = Result<Response<T>, Status>;

/// The session a request arrived on (set by [`crate::session::SessionStream`]).
pub fn session_of<T>(request: &Request<T>) -> Result<SessionInfo, Status> {
    request
        .extensions()
        .get::<SessionInfo>()
        .copied()
        .ok_or_else(|| Errno::new(EIO, "request without a session").into_status())
}

/// The SocketService.
#[derive(Debug, Clone)]
pub struct SocketService {
    /// Every call goes to the shard of its socket.
    shards: Shards,
    /// Per shard, what its Streams share (one pointer each: the shard's
    /// driver and an up pump).
    streams: Arc<[Arc<StreamContext>]>,
}

impl SocketService {
    pub fn new(shards: Shards) -> Self {
        let streams = shards
            .drivers()
            .iter()
            .map(|driver| StreamContext::new(Arc::clone(driver)))
            .collect();
        SocketService { shards, streams }
    }
}

fn setup(
    handle: u64,
    options: &[v2::OptionSetting],
    bind: Option<&v2::SocketAddress>,
    family: i32,
) -> Result<SocketSetup, Errno> {
    Ok(SocketSetup {
        handle: (handle != 0).then_some(handle),
        options: convert::options(options)?,
        bind: convert::optional_addr(bind)?,
        family: convert::family(family)?,
    })
}

impl SocketService {
    /// What the Streams of `handle`'s shard share.
    fn stream_context(&self, handle: u64) -> &Arc<StreamContext> {
        self.streams
            .get(crate::shards::shard_of(handle))
            .unwrap_or(&self.streams[0])
    }
}

#[tonic::async_trait]
impl SocketApi for SocketService {
    async fn socket(&self, request: Request<v2::SocketRequest>) -> Reply<v2::SocketResponse> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let setup = setup(0, &req.options, req.bind.as_ref(), req.family)?;
        let (handle, local) = self
            .shards
            .pick()
            .call(s, |reply| Op::Socket { setup, reply })
            .await?;
        Ok(Response::new(v2::SocketResponse {
            handle,
            local: Some(local.into()),
        }))
    }

    async fn bind(&self, request: Request<v2::BindRequest>) -> Reply<v2::BindResponse> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let addr = convert::socket_addr(req.address.as_ref())?;
        let local = self
            .shards
            .call(req.handle, s, |reply| Op::Bind {
                handle: req.handle,
                addr,
                reply,
            })
            .await?;
        Ok(Response::new(v2::BindResponse {
            local: Some(local.into()),
        }))
    }

    async fn listen(&self, request: Request<v2::ListenRequest>) -> Reply<v2::ListenResponse> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let setup = setup(req.handle, &req.options, req.bind.as_ref(), req.family)?;
        let (handle, local) = self.shards.listen(s, setup, req.backlog).await?;
        Ok(Response::new(v2::ListenResponse {
            handle,
            local: Some(local.into()),
        }))
    }

    async fn accept(&self, request: Request<v2::AcceptRequest>) -> Reply<v2::AcceptResponse> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let c = self.shards.accept(s, req.handle, !req.nonblocking).await?;
        Ok(Response::new(v2::AcceptResponse {
            handle: c.handle,
            peer: Some(c.peer.into()),
            local: Some(c.local.into()),
        }))
    }

    async fn connect(&self, request: Request<v2::ConnectRequest>) -> Reply<v2::ConnectResponse> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let remote = convert::socket_addr(req.address.as_ref())?;
        if req.handle == 0 {
            return Err(Errno::bad_handle().into_status());
        }
        let options = convert::options(&req.options).map_err(Errno::into_status)?;
        let c = self
            .shards
            .call(req.handle, s, |reply| Op::Connect {
                setup: SocketSetup {
                    handle: Some(req.handle),
                    options,
                    ..SocketSetup::default()
                },
                remote,
                wait: !req.nonblocking,
                reply,
            })
            .await?;
        Ok(Response::new(v2::ConnectResponse {
            local: Some(c.local.into()),
        }))
    }

    async fn read(&self, request: Request<v2::ReadRequest>) -> Reply<v2::ReadResponse> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let max_len = usize::try_from(req.max_len)
            .unwrap_or(MAX_READ)
            .min(MAX_READ);
        if req.oob {
            // MSG_OOB: the urgent byte; never waits (Linux's tcp_recv_urg).
            let data = self
                .shards
                .call(req.handle, s, |reply| Op::ReadUrgent {
                    handle: req.handle,
                    peek: req.peek,
                    reply,
                })
                .await?;
            let eof = data.is_empty();
            return Ok(Response::new(v2::ReadResponse {
                data: data.into_iter().take(max_len).collect(),
                eof,
            }));
        }
        if max_len == 0 {
            // read(2) of zero bytes returns 0 without touching the socket.
            self.shards
                .call(req.handle, s, |reply| Op::Address {
                    handle: req.handle,
                    peer: false,
                    reply,
                })
                .await?;
            return Ok(Response::new(v2::ReadResponse {
                data: Bytes::new(),
                eof: false,
            }));
        }
        let data = self
            .shards
            .call(req.handle, s, |reply| Op::Read {
                handle: req.handle,
                max_len,
                peek: req.peek,
                wait: !req.nonblocking,
                reply,
            })
            .await?;
        let eof = data.is_empty();
        Ok(Response::new(v2::ReadResponse {
            data: data.into_bytes(),
            eof,
        }))
    }

    async fn write(&self, request: Request<v2::WriteRequest>) -> Reply<v2::WriteResponse> {
        let s = session_of(&request)?;
        // The extensions keep the message's intake budget
        // (`intake::HeldIntake`) until this call is answered.
        let (_, _held_intake, req) = request.into_parts();
        let written = self
            .shards
            .call(req.handle, s, |reply| Op::Write {
                handle: req.handle,
                data: req.data.into(),
                flags: convert::send_flags(req.flags),
                wait: !req.nonblocking,
                reply,
            })
            .await?;
        Ok(Response::new(v2::WriteResponse {
            written: u32::try_from(written).unwrap_or(u32::MAX),
        }))
    }

    async fn shutdown(&self, request: Request<v2::ShutdownRequest>) -> Reply<v2::ShutdownResponse> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let how = convert::shutdown_how(req.how)?;
        self.shards
            .call(req.handle, s, |reply| Op::Shutdown {
                handle: req.handle,
                how,
                reply,
            })
            .await?;
        Ok(Response::new(v2::ShutdownResponse {}))
    }

    async fn close(&self, request: Request<v2::CloseRequest>) -> Reply<v2::CloseResponse> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        self.shards.close(s, req.handle, req.abort).await?;
        Ok(Response::new(v2::CloseResponse {}))
    }

    async fn get_socket_name(
        &self,
        request: Request<v2::GetSocketNameRequest>,
    ) -> Reply<v2::GetSocketNameResponse> {
        let s = session_of(&request)?;
        let handle = request.into_inner().handle;
        let addr = self
            .shards
            .call(handle, s, |reply| Op::Address {
                handle,
                peer: false,
                reply,
            })
            .await?;
        Ok(Response::new(v2::GetSocketNameResponse {
            address: Some(addr.into()),
        }))
    }

    async fn get_peer_name(
        &self,
        request: Request<v2::GetPeerNameRequest>,
    ) -> Reply<v2::GetPeerNameResponse> {
        let s = session_of(&request)?;
        let handle = request.into_inner().handle;
        let addr = self
            .shards
            .call(handle, s, |reply| Op::Address {
                handle,
                peer: true,
                reply,
            })
            .await?;
        Ok(Response::new(v2::GetPeerNameResponse {
            address: Some(addr.into()),
        }))
    }

    async fn set_option(
        &self,
        request: Request<v2::SetOptionRequest>,
    ) -> Reply<v2::SetOptionResponse> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let option = convert::option_to_set(req.option, req.value.as_ref())?;
        self.shards
            .call(req.handle, s, |reply| Op::SetOption {
                handle: req.handle,
                option,
                reply,
            })
            .await?;
        Ok(Response::new(v2::SetOptionResponse {}))
    }

    async fn get_option(
        &self,
        request: Request<v2::GetOptionRequest>,
    ) -> Reply<v2::GetOptionResponse> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        if req.option == v2::SocketOption::TcpInfo as i32 {
            // TCP_INFO is a struct, not a SockOption: its own op.
            let info = self
                .shards
                .call(req.handle, s, |reply| Op::TcpInfo {
                    handle: req.handle,
                    reply,
                })
                .await?;
            return Ok(Response::new(v2::GetOptionResponse {
                value: Some(v2::OptionValue {
                    value: Some(v2::option_value::Value::TcpInfo(convert::tcp_info(&info))),
                }),
            }));
        }
        let name = convert::option_name(req.option)?;
        let value = self
            .shards
            .call(req.handle, s, |reply| Op::GetOption {
                handle: req.handle,
                name,
                reply,
            })
            .await?;
        Ok(Response::new(v2::GetOptionResponse {
            value: Some(convert::option_value(value)),
        }))
    }

    async fn poll(&self, request: Request<v2::PollRequest>) -> Reply<v2::PollResponse> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let entries: Vec<(u64, u32)> = req.entries.iter().map(|e| (e.handle, e.events)).collect();
        let poll = |park: bool| self.shards.poll(s, entries.clone(), park);
        let ready = match u64::try_from(req.timeout_ms) {
            // poll(2) with a zero timeout reports the current events without
            // waiting; a timer must not race the driver's answer.
            Ok(0) => poll(false).await?,
            // With a timeout: park; when it expires (dropping the call
            // cancels the parked poll), report the events as they are then,
            // which are all zero unless they changed in the meantime.
            Ok(ms) => match tokio::time::timeout(Duration::from_millis(ms), poll(true)).await {
                Ok(ready) => ready?,
                Err(_) => poll(false).await?,
            },
            Err(_) => poll(true).await?,
        };
        let entries = entries
            .iter()
            .zip(ready)
            .map(|(&(handle, _), events)| v2::PollEntry { handle, events })
            .collect();
        Ok(Response::new(v2::PollResponse { entries }))
    }

    async fn open_fd_channel(
        &self,
        request: Request<v2::OpenFdChannelRequest>,
    ) -> Reply<v2::OpenFdChannelResponse> {
        let s = session_of(&request)?;
        let token = self
            .shards
            .single("the fd channel")?
            .call(s, |reply| Op::FdToken { reply })
            .await?;
        Ok(Response::new(v2::OpenFdChannelResponse {
            token: token.to_vec(),
        }))
    }

    type StreamStream = StreamBody;

    async fn stream(
        &self,
        request: Request<Streaming<v2::StreamRequest>>,
    ) -> Reply<Self::StreamStream> {
        let s = session_of(&request)?;
        // A request without its connection's record (in-process tests)
        // gets one of its own, which never ends.
        let session = match request.extensions().get::<SessionConnection>() {
            Some(c) => Arc::clone(&c.activity),
            None => Arc::new(Activity::new(s, 0)),
        };
        let up = UpSource::Tonic(Box::new(request.into_inner()));
        Ok(Response::new(
            self.open_stream(InFlightGuard::new(session), up).await?,
        ))
    }
}

impl SocketService {
    /// A Stream's start: reads its first up message, which must be `open`,
    /// then connects or accepts; the Stream's body drives the rest.
    async fn open_stream(
        &self,
        session: InFlightGuard,
        mut up: UpSource,
    ) -> Result<StreamBody, Status> {
        let s = session.info;
        let first = std::future::poll_fn(|cx| up.poll_message(cx, &session.intake)).await;
        let open = match first {
            Ok(Some(v2::StreamRequest {
                frame: Some(stream_request::Frame::Open(v2::StreamOpen { how: Some(how), .. })),
            })) => how,
            Err(UpError::Bad(e)) => return Err(e.into_status()),
            Err(UpError::Gone(Some(status))) => return Err(status),
            _ => {
                return Err(Errno::new(
                    EINVAL,
                    "the first Stream frame must be `open` (connect or accept)",
                )
                .into_status());
            }
        };
        let connected = match open {
            stream_open::How::Connect(c) => {
                let setup = setup(c.handle, &c.options, c.bind.as_ref(), c.family)?;
                let remote = convert::socket_addr(c.remote.as_ref())?;
                // A client that drops the Stream before the handshake ends
                // drops this future: the guard has the connect aborted.
                let driver = self.shards.for_setup(&setup);
                let guard = driver.abandon_guard(s.id);
                let connected = driver
                    .call(s, |reply| Op::Connect {
                        setup,
                        remote,
                        wait: true,
                        reply,
                    })
                    .await;
                guard.disarm();
                connected?
            }
            stream_open::How::Accept(a) => self.shards.accept(s, a.listener, true).await?,
        };
        Ok(StreamBody::new(
            self.stream_context(connected.handle),
            session,
            up,
            connected,
        ))
    }
}

/// The environment variable that, set to `prost` in the daemon's
/// environment, has Stream responses encoded by tonic's prost codec as
/// before [`DownBody`] (an A/B switch for benchmarks); the requests are
/// then decoded by tonic too.
pub const STREAM_ENCODE_ENV: &str = "TCPD_STREAM_ENCODE";

/// The environment variable that, set to `tonic` in the daemon's
/// environment, has the Stream RPC routed by tonic and its requests decoded
/// by tonic's `Streaming` (with the per-request layers of
/// [`crate::idle::SessionLayer`]), as before [`StreamRoute`] (an A/B switch
/// for benchmarks); responses still go out through [`DownBody`].
pub const STREAM_DECODE_ENV: &str = "TCPD_STREAM_DECODE";

/// The Stream RPC below tonic's routes: the API server hands it every
/// request for the Stream's path, with the session's connection record,
/// and it serves it without tonic's router, decoder or per-request
/// wrappers — the up side read by [`crate::stream_up::UpFrames`], the
/// in-flight guard and intake budget held by the Stream itself
/// ([`crate::idle`]), the response a [`DownBody`]. One Stream per connected
/// socket makes every byte kept per request a byte per idle connection
/// (e2e/BENCHMARKS.md, "Round 8: 100 000 idle connections").
#[derive(Debug, Clone)]
pub struct StreamRoute {
    service: Arc<SocketService>,
}

impl StreamRoute {
    /// The Stream RPC's path.
    pub const PATH: &'static str = STREAM_PATH;

    /// The route, unless the environment asks for tonic's
    /// ([`STREAM_DECODE_ENV`], [`STREAM_ENCODE_ENV`]).
    pub fn from_env(service: &SocketService) -> Option<StreamRoute> {
        let tonic_decode = std::env::var_os(STREAM_DECODE_ENV).is_some_and(|v| v == "tonic");
        let prost_encode = std::env::var_os(STREAM_ENCODE_ENV).is_some_and(|v| v == "prost");
        (!tonic_decode && !prost_encode).then(|| StreamRoute {
            service: Arc::new(service.clone()),
        })
    }

    /// Serves one Stream request: its response body once open, or the
    /// status of a failed open (sent as a trailers-only response).
    pub async fn serve(
        self,
        request: http::Request<hyper::body::Incoming>,
        connection: SessionConnection,
    ) -> Result<DownBody, Status> {
        // Counted from the request's arrival, as the session layer counts.
        let session = InFlightGuard::new(connection.activity);
        let (parts, body) = request.into_parts();
        if let Some(encoding) = parts.headers.get("grpc-encoding")
            && encoding != "identity"
        {
            // No compression is enabled, as in the generated service.
            return Err(Status::unimplemented(format!(
                "Content is compressed with `{encoding:?}` which isn't supported"
            )));
        }
        // The headers (and the buffers their values point into) go now.
        drop(parts);
        let up = UpSource::Frames(UpFrames::new(body));
        let stream = self.service.open_stream(session, up).await?;
        Ok(DownBody::new(stream))
    }
}

/// The SocketService as the gRPC server serves it: the generated service,
/// whose `Stream` responses are encoded by [`DownBody`] instead of tonic's
/// codec (see the module docs). Requests are decoded by tonic as before.
#[derive(Debug, Clone)]
pub struct SocketRoutes {
    generated: SocketServiceServer<SocketService>,
    service: SocketService,
    /// [`STREAM_ENCODE_ENV`] asked for tonic's encoder.
    prost_encode: bool,
}

impl SocketRoutes {
    pub fn new(service: SocketService) -> SocketRoutes {
        SocketRoutes {
            generated: SocketServiceServer::new(service.clone()),
            service,
            prost_encode: std::env::var_os(STREAM_ENCODE_ENV).is_some_and(|v| v == "prost"),
        }
    }
}

impl tonic::server::NamedService for SocketRoutes {
    const NAME: &'static str =
        <SocketServiceServer<SocketService> as tonic::server::NamedService>::NAME;
}

impl tower::Service<http::Request<tonic::body::Body>> for SocketRoutes {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        // The API server sends Streams to [`StreamRoute`] unless the
        // environment asks for tonic's decoder (or encoder).
        if request.uri().path() != STREAM_PATH || self.prost_encode {
            return tower::Service::call(&mut self.generated, request);
        }
        let service = self.service.clone();
        Box::pin(async move { Ok(service.serve_stream(request).await) })
    }
}

impl SocketService {
    /// The Stream RPC with its response encoded by [`DownBody`]: what
    /// tonic's generated route does (request decoded by tonic, the handler,
    /// `content-type`, a trailers-only response for a failed open), with
    /// our encoder for the response.
    async fn serve_stream(
        &self,
        request: http::Request<tonic::body::Body>,
    ) -> http::Response<tonic::body::Body> {
        if let Some(encoding) = request.headers().get("grpc-encoding")
            && encoding != "identity"
        {
            // No compression is enabled, as in the generated service.
            return Status::unimplemented(format!(
                "Content is compressed with `{encoding:?}` which isn't supported"
            ))
            .into_http();
        }
        let (parts, body) = request.into_parts();
        let decoder = tonic::codec::Codec::decoder(&mut tcpd_proto::codec::LeanCodec::<
            v2::StreamResponse,
            v2::StreamRequest,
        >::default());
        let up = Streaming::new_request(decoder, body, None, None);
        let request = Request::from_http(http::Request::from_parts(parts, up));
        match SocketApi::stream(self, request).await {
            Ok(response) => {
                let (metadata, body, _) = response.into_parts();
                let mut response = http::Response::new(tonic::body::Body::new(DownBody::new(body)));
                *response.headers_mut() = metadata.into_headers();
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/grpc"),
                );
                response
            }
            Err(status) => status.into_http(),
        }
    }
}

/// A Stream's response as an HTTP body: each `data` message as two DATA
/// chunks, its header ([`stream_data::data_prefix`]: gRPC prefix, field key,
/// length) and the payload `Bytes` itself, which hyper and h2 pass to the
/// socket's `writev` without copying; other messages encoded whole; the
/// final status as trailers (`grpc-status` 0 when the Stream ends with OK),
/// after which the Stream's state is dropped.
///
/// One pointer: the payload between its header and itself waits in the
/// Stream's state ([`DownFrames`]), and a body whose state is gone has
/// sent its trailers.
pub struct DownBody {
    stream: StreamBody,
}

impl DownBody {
    fn new(stream: StreamBody) -> DownBody {
        DownBody { stream }
    }
}

/// The trailers frame carrying `status`.
fn trailers(status: &Status) -> Result<Frame<Bytes>, Status> {
    let mut trailers = http::HeaderMap::new();
    status.add_header(&mut trailers)?;
    Ok(Frame::trailers(trailers))
}

impl http_body::Body for DownBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let shared = &self.stream.shared;
        let mut guard = shared.lock();
        let Some(state) = guard.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(payload) = state.take_payload() {
            return Poll::Ready(Some(Ok(Frame::data(payload))));
        }
        let end = match ready!(state.poll_down_stream(shared, cx)) {
            Some(Ok(v2::StreamResponse {
                frame: Some(stream_response::Frame::Data(data)),
            })) if !data.is_empty() => {
                let head = stream_data::data_prefix(data.len());
                state.stash_payload(data);
                return Poll::Ready(Some(Ok(Frame::data(head))));
            }
            Some(Ok(message)) => {
                return Poll::Ready(Some(Ok(Frame::data(stream_data::encode_message(&message)))));
            }
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        // The close was answered: the state goes (outside the lock: its
        // parts may wake tasks) and the trailers end the response.
        let state = guard.take();
        drop(guard);
        drop(state);
        Poll::Ready(Some(trailers(&end)))
    }

    fn is_end_stream(&self) -> bool {
        self.stream.shared.lock().is_none()
    }
}

/// What the Stream RPC's response stream yields.
type DownItem = Result<v2::StreamResponse, Status>;

/// What every Stream of a [`SocketService`] shares: the driver, and the
/// queue of the up pump (see [`StreamBody`]).
pub(crate) struct StreamContext {
    driver: Arc<DriverHandle>,
    /// Streams whose up side was woken, for [`up_pump`]. A Stream is in it
    /// at most once ([`StreamShared::in_pump_queue`]), so the queue holds
    /// at most as many entries as there are Streams, which the sessions'
    /// socket quotas bound.
    pump: mpsc::UnboundedSender<Arc<StreamShared>>,
    /// The pump's end of the queue until the first Stream starts the pump
    /// on the API runtime.
    pump_start: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Arc<StreamShared>>>>,
}

impl std::fmt::Debug for StreamContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamContext").finish_non_exhaustive()
    }
}

impl StreamContext {
    fn new(driver: Arc<DriverHandle>) -> Arc<StreamContext> {
        let (pump, queue) = mpsc::unbounded_channel();
        Arc::new(StreamContext {
            driver,
            pump,
            pump_start: std::sync::Mutex::new(Some(queue)),
        })
    }

    /// Starts the up pump on the current runtime, the first time.
    fn start_pump(&self) {
        let queue = self
            .pump_start
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(queue) = queue {
            tokio::spawn(up_pump(queue));
        }
    }
}

/// The one task that applies the up frames of Streams whose up side was
/// woken (see [`StreamBody`]): a Stream at a time, each until its up side
/// has to wait again. No Stream has a task of its own.
async fn up_pump(mut queue: mpsc::UnboundedReceiver<Arc<StreamShared>>) {
    while let Some(stream) = queue.recv().await {
        stream.pump_up();
    }
}

/// One Stream after `open`: the RPC's response stream, which also drives
/// the socket's up side. See the module docs.
///
/// No task of its own. hyper runs a task per HTTP/2 stream that polls the
/// response body: that task drives the down side (the parked read's data,
/// control frames, the end). The up side — the request's frames applied
/// in order — must not depend on it: hyper polls the body only while the
/// client's HTTP/2 window for the response has room, and a client that
/// leaves what it received unread (as a program may leave a kernel
/// socket's receive queue unread) would stop its own writes. So the up
/// side's futures (the request stream, the op of the frame being applied)
/// are polled with a waker of the Stream's own ([`StreamShared`]'s `Wake`),
/// which queues the Stream for the daemon's one [`up_pump`] task: the up
/// side advances whether or not hyper polls, hyper's polls also advance it
/// (in line, no extra hop when hyper polls anyway), and what the up side
/// leaves for the down side (a `flushed` notice, the close) wakes hyper's
/// task through the waker of its last poll. The state is behind a mutex in
/// one allocation shared with those wakers; uncontended (both tasks run on
/// the API runtime's one thread by default).
///
/// Order within hyper's poll: a pending control frame (`opened`,
/// `flushed`, `eof`) goes out first, then the up side applies client frames
/// until one has to wait (an op in flight, no frame yet), then the down
/// side yields the next data frame of its read, or parks the next read.
/// Each side keeps at most one op in the driver, so up frames apply in
/// order and down data goes out in order.
///
/// Back-pressure: the down side reads again only once the frames of its
/// last read (at most [`STREAM_DOWN_QUEUE`] frames) are out; the rest stays
/// in the socket, where the stack's receive buffer closes the TCP window as
/// a kernel socket's unread receive queue does. Data the client has not
/// read is bounded by its HTTP/2 stream window (tcpd-client: 1 MiB), one
/// read's frames and hyper's one held chunk; the up side goes on meanwhile.
pub struct StreamBody {
    shared: Arc<StreamShared>,
}

/// A Stream's state, shared by its [`StreamBody`] (hyper's handle) and the
/// wakers of its up side. `None` once hyper dropped the body: the wakers
/// still held by the request stream or the driver find nothing to do, and
/// the state they would otherwise keep alive (a cycle through the request
/// stream's waker) is gone.
pub(crate) struct StreamShared {
    context: Arc<StreamContext>,
    /// The Stream waits in the up pump's queue: further wakes before its
    /// turn add nothing (its turn polls every future of the up side).
    in_pump_queue: AtomicBool,
    /// The driver dropped the down side's read unanswered (see
    /// [`StreamReader::dropped`]); the up pump's turn tells the down side.
    read_dropped: AtomicBool,
    state: std::sync::Mutex<Option<StreamState>>,
}

struct StreamState {
    /// The session: who (for the ops), whether the client went away with
    /// its whole session (see [`StreamState::begin_close`]), its intake
    /// budget; counted in flight while the Stream lives ([`crate::idle`]).
    session: InFlightGuard,
    handle: u64,
    up: UpSource,
    /// Up data bytes queued in the socket so far (answers `flush`).
    queued: u64,
    /// The op of the up frame being applied.
    up_op: UpOp,
    down: DownState,
    /// What a Stream holds now and then; `None` while it holds none of it.
    rare: Option<Box<Rare>>,
    /// The waker of hyper's last poll: the up pump wakes it when it leaves
    /// something for the down side.
    hyper: Option<Waker>,
}

/// A Stream's rarely held parts, in one box allocated while one of them is
/// there (every idle Stream would hold their room otherwise).
#[derive(Default)]
struct Rare {
    /// A message taken while batching data that did not join the batch,
    /// applied next.
    next: Option<UpMessage>,
    /// A control frame to send before anything else (`opened`, `flushed`);
    /// the up side waits while it is there.
    notice: Option<v2::StreamResponse>,
    /// Set once the Stream is closing.
    closing: Option<Closing>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.next.is_none() && self.notice.is_none() && self.closing.is_none()
    }
}

/// The op of the up frame being applied, if any.
enum UpOp {
    None,
    /// A write (its byte count adds to `queued`).
    Write(OpCall<usize>),
    /// A shutdown.
    Shutdown(OpCall<()>),
    /// A `set_option` (the option's number: a refusal is only logged).
    SetOption(OpCall<()>, i32),
}

/// The down side. Its reads are [`Op::StreamRead`]s, which the driver
/// answers into this state ([`StreamReader`] for [`StreamShared`]): no
/// oneshot per read, nothing allocated for the read an idle Stream keeps
/// parked.
enum DownState {
    /// No read in the driver: the next poll parks one.
    Idle,
    /// A read waiting to be sent (its session's op slots or the op channel
    /// were full).
    Sending(Box<Submit>),
    /// A read in (maybe parked in) the driver, which answers it by setting
    /// `Frames`, `Eof` or `Failed` and waking hyper's task.
    Reading,
    /// The frames of the last read not yet sent (boxed: an idle Stream's
    /// down side is `Reading`).
    Frames(Box<DownFrames>),
    /// The last read found the end of the stream: the count of bytes
    /// queued goes out next (see [`StreamState::poll_down`]), then `eof`.
    Eof,
    /// The count went out: `eof` next.
    EofCounted,
    /// The last read failed: the close starts.
    Failed(Box<Errno>),
    /// `eof` was sent (the up side may go on), or the Stream is closing.
    Ended,
}

impl DownState {
    /// A read is on its way to the driver or in it.
    fn reading(&self) -> bool {
        matches!(self, DownState::Sending(_) | DownState::Reading)
    }
}

/// The frames of one read, on their way out.
struct DownFrames {
    frames: std::vec::IntoIter<Bytes>,
    /// The payload of the `data` message whose header [`DownBody`] sent
    /// last: it goes out next, whatever else happens (the close keeps it).
    payload: Option<Bytes>,
}

/// A Stream whose up side ended (`close`, the client's end, an error): its
/// socket's close, then the end of the response.
struct Closing {
    /// The `Close` op; `None` once answered, or when the driver's sweep of
    /// an ended session closes the socket.
    close: Option<OpCall<()>>,
    abort: bool,
    consumed: Option<u64>,
    /// The error the response ends with (the first one).
    failure: Option<Errno>,
    /// The client went away with its session: no status to send.
    swept: bool,
}

impl StreamBody {
    fn new(
        context: &Arc<StreamContext>,
        session: InFlightGuard,
        up: UpSource,
        connected: crate::ops::Connected,
    ) -> StreamBody {
        context.start_pump();
        let opened = v2::StreamResponse {
            frame: Some(stream_response::Frame::Opened(v2::StreamOpened {
                handle: connected.handle,
                local: Some(connected.local.into()),
                peer: Some(connected.peer.into()),
            })),
        };
        let state = StreamState {
            session,
            handle: connected.handle,
            up,
            queued: 0,
            up_op: UpOp::None,
            down: DownState::Idle,
            rare: Some(Box::new(Rare {
                notice: Some(opened),
                ..Rare::default()
            })),
            hyper: None,
        };
        StreamBody {
            shared: Arc::new(StreamShared {
                context: Arc::clone(context),
                in_pump_queue: AtomicBool::new(false),
                read_dropped: AtomicBool::new(false),
                state: std::sync::Mutex::new(Some(state)),
            }),
        }
    }
}

impl StreamShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<StreamState>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The waker the up side's futures are polled with.
    fn up_waker(self: &Arc<Self>) -> Waker {
        Waker::from(Arc::clone(self))
    }

    /// The up pump's turn: applies client frames until one has to wait,
    /// and wakes hyper's task if that left something for the down side.
    fn pump_up(self: &Arc<Self>) {
        // Cleared before polling: a wake from here on queues the Stream
        // again.
        self.in_pump_queue.swap(false, Ordering::AcqRel);
        let mut state = self.lock();
        let Some(state) = state.as_mut() else {
            return;
        };
        if self.read_dropped.swap(false, Ordering::AcqRel)
            && matches!(state.down, DownState::Reading)
        {
            // The driver dropped the read unanswered (its socket closed
            // under it, the driver stopped): EBADF, as a dropped reply.
            state.down = DownState::Failed(Box::new(Errno::bad_handle()));
            if let Some(hyper) = &state.hyper {
                hyper.wake_by_ref();
            }
        }
        if state.up_waits() {
            // hyper's task has it: the notice goes out first, or the
            // Stream is closing.
            return;
        }
        let waker = self.up_waker();
        state.poll_up(&self.context.driver, &mut Context::from_waker(&waker));
        if state.up_waits()
            && let Some(hyper) = &state.hyper
        {
            hyper.wake_by_ref();
        }
    }
}

impl std::task::Wake for StreamShared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.in_pump_queue.swap(true, Ordering::AcqRel) {
            return;
        }
        // A send fails only once the pump is gone (the runtime stopping).
        let _ = self.context.pump.send(Arc::clone(self));
    }
}

/// The driver answers the down side's reads here (see [`DownState`]).
impl StreamReader for StreamShared {
    fn max_len(&self) -> usize {
        STREAM_CHUNK * STREAM_DOWN_QUEUE
    }

    fn wants(&self) -> bool {
        self.lock().as_ref().is_some_and(|s| s.down.reading())
    }

    fn deliver(&self, result: Result<ReadData, Errno>) {
        let down = match result {
            Ok(data) if data.is_empty() => DownState::Eof,
            Ok(data) => DownState::Frames(Box::new(DownFrames {
                frames: frames_of(data).into_iter(),
                payload: None,
            })),
            Err(e) => DownState::Failed(Box::new(e)),
        };
        let hyper = {
            let mut state = self.lock();
            match state.as_mut() {
                // A Stream that stopped reading drops the answer, as a
                // oneshot whose receiver is gone.
                Some(state) if state.down.reading() => {
                    state.down = down;
                    state.hyper.clone()
                }
                _ => None,
            }
        };
        if let Some(hyper) = hyper {
            hyper.wake();
        }
    }

    fn dropped(self: Arc<Self>) {
        // Never the state's lock here: the read may be dropped while it is
        // held (a read still waiting to be sent, dropped by the close).
        self.read_dropped.store(true, Ordering::Release);
        std::task::Wake::wake(self);
    }
}

impl StreamState {
    /// Whether the up side waits for hyper's task: a notice to send first,
    /// or the Stream closing.
    fn up_waits(&self) -> bool {
        self.rare
            .as_ref()
            .is_some_and(|r| r.notice.is_some() || r.closing.is_some())
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Takes one of the rare parts, freeing the box once it is empty.
    fn take_rare<T>(&mut self, part: impl FnOnce(&mut Rare) -> Option<T>) -> Option<T> {
        let rare = self.rare.as_mut()?;
        let taken = part(rare);
        if rare.is_empty() {
            self.rare = None;
        }
        taken
    }

    fn closing(&mut self) -> Option<&mut Closing> {
        self.rare.as_mut().and_then(|r| r.closing.as_mut())
    }

    /// Applies client frames until one has to wait; may start the close or
    /// leave a `flushed` notice. `cx` is the up side's own waker's.
    fn poll_up(&mut self, driver: &DriverHandle, cx: &mut Context<'_>) {
        loop {
            match &mut self.up_op {
                UpOp::None => {}
                UpOp::Write(call) => match Pin::new(call).poll(cx) {
                    Poll::Pending => return,
                    Poll::Ready(Ok(n)) => self.queued += n as u64,
                    Poll::Ready(Err(e)) => return self.begin_close(driver, None, false, Some(e)),
                },
                UpOp::Shutdown(call) => match Pin::new(call).poll(cx) {
                    Poll::Pending => return,
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return self.begin_close(driver, None, false, Some(e)),
                },
                UpOp::SetOption(call, option) => match Pin::new(call).poll(cx) {
                    Poll::Pending => return,
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => tracing::debug!(handle = self.handle,
                        option = *option, error = %e, "in-stream set_option refused"),
                },
            }
            self.up_op = UpOp::None;
            let message = match self.take_rare(|r| r.next.take()) {
                Some(message) => message,
                None => match self.up.poll_message(cx, &self.session.intake) {
                    Poll::Pending => return,
                    Poll::Ready(message) => message,
                },
            };
            let frame = match message {
                Ok(Some(v2::StreamRequest { frame: Some(frame) })) => frame,
                Ok(None) | Err(UpError::Gone(_)) => {
                    tracing::trace!(
                        handle = self.handle,
                        queued = self.queued,
                        "stream up: client side ended"
                    );
                    return self.begin_close(driver, None, false, None);
                }
                Err(UpError::Bad(e)) => {
                    tracing::debug!(handle = self.handle, error = %e, "stream up: bad input");
                    return self.begin_close(driver, None, false, Some(e));
                }
                Ok(Some(v2::StreamRequest { frame: None })) => {
                    let e = Errno::invalid("empty Stream frame");
                    return self.begin_close(driver, None, false, Some(e));
                }
            };
            tracing::trace!(
                handle = self.handle,
                queued = self.queued,
                frame = frame_kind(&frame),
                "stream up: frame"
            );
            self.apply(driver, cx, frame);
            if self.up_waits() {
                return;
            }
        }
    }

    /// Starts what one up frame asks: an op (in `up_op`), a `flushed`
    /// notice, or the close.
    fn apply(&mut self, driver: &DriverHandle, cx: &mut Context<'_>, frame: stream_request::Frame) {
        let (session, handle) = (self.session.info, self.handle);
        self.up_op = match frame {
            stream_request::Frame::Data(data) => {
                let (data, next) = batch_data(cx, &mut self.up, &self.session.intake, data);
                if let Some(next) = next {
                    self.rare().next = Some(next);
                }
                UpOp::Write(driver.start(session, |reply| Op::Write {
                    handle,
                    data,
                    flags: SendFlags::empty(),
                    wait: true,
                    reply,
                }))
            }
            stream_request::Frame::Write(write) => {
                UpOp::Write(driver.start(session, |reply| Op::Write {
                    handle,
                    data: write.data.into(),
                    flags: convert::send_flags(write.flags),
                    wait: true,
                    reply,
                }))
            }
            stream_request::Frame::Flush(_) => {
                let queued = self.queued;
                self.rare().notice = Some(v2::StreamResponse {
                    frame: Some(stream_response::Frame::Flushed(queued)),
                });
                UpOp::None
            }
            stream_request::Frame::ShutdownWrite(true) => {
                UpOp::Shutdown(driver.start(session, |reply| Op::Shutdown {
                    handle,
                    how: Shutdown::Write,
                    reply,
                }))
            }
            stream_request::Frame::ShutdownRead(true) => {
                UpOp::Shutdown(driver.start(session, |reply| Op::Shutdown {
                    handle,
                    how: Shutdown::Read,
                    reply,
                }))
            }
            stream_request::Frame::ShutdownWrite(false)
            | stream_request::Frame::ShutdownRead(false) => UpOp::None,
            stream_request::Frame::Close(c) => {
                return self.begin_close(driver, Some(c.consumed), c.abort, None);
            }
            // Applied in order with the data; there is no answer on the
            // stream, so a refusal is logged (the client checked the value
            // against the ranges setsockopt accepts) and the stream goes on.
            stream_request::Frame::SetOption(setting) => {
                match convert::option_to_set(setting.option, setting.value.as_ref()) {
                    Ok(option) => UpOp::SetOption(
                        driver.start(session, |reply| Op::SetOption {
                            handle,
                            option,
                            reply,
                        }),
                        setting.option,
                    ),
                    Err(e) => {
                        tracing::debug!(handle, option = setting.option, error = %e,
                            "in-stream set_option refused");
                        UpOp::None
                    }
                }
            }
            stream_request::Frame::Open(_) => {
                let e = Errno::invalid("Stream already open");
                return self.begin_close(driver, None, false, Some(e));
            }
        };
    }

    /// The next data frame (or `eof`) of the down side, parking a read when
    /// the last one's frames are out. A failed read starts the close.
    fn poll_down(
        &mut self,
        shared: &Arc<StreamShared>,
        driver: &DriverHandle,
        cx: &mut Context<'_>,
    ) -> Poll<v2::StreamResponse> {
        loop {
            match &mut self.down {
                DownState::Ended => return Poll::Pending,
                DownState::Frames(frames) => match frames.frames.next() {
                    Some(data) => {
                        return Poll::Ready(v2::StreamResponse {
                            frame: Some(stream_response::Frame::Data(data)),
                        });
                    }
                    None => self.down = DownState::Idle,
                },
                DownState::Idle => {
                    let reader: Arc<dyn StreamReader> = shared.clone();
                    let request = crate::ops::Request {
                        session: self.session.info,
                        op: Op::StreamRead {
                            handle: self.handle,
                            reply: StreamReply::new(reader),
                        },
                    };
                    self.down = match driver.send(request) {
                        None => DownState::Reading,
                        Some(submit) => DownState::Sending(Box::new(submit)),
                    };
                }
                // Sent while this poll holds the state: the driver cannot
                // have answered yet.
                DownState::Sending(submit) => match ready!(submit.as_mut().as_mut().poll(cx)) {
                    Ok(()) => self.down = DownState::Reading,
                    Err(e) => {
                        self.begin_close(driver, None, false, Some(e));
                        return Poll::Pending;
                    }
                },
                // hyper's task is woken with the answer.
                DownState::Reading => return Poll::Pending,
                DownState::Eof => {
                    self.down = DownState::EofCounted;
                    // Unasked, a `flushed` with every byte queued so far
                    // goes before `eof` (tcpd.proto, "Down"): the up side
                    // has just applied what the driver finished, so the
                    // count holds every byte the peer could have answered
                    // with its FIN. A client whose `flush` is still on its
                    // way here learns that its data was queued first. hyper
                    // polls reads before flushes: shown the peer's EOF while
                    // its response still looked unflushed, it called the
                    // connection closed mid-message (with a kernel socket,
                    // write had queued the data and flush is a no-op).
                    if self.queued > 0 {
                        return Poll::Ready(v2::StreamResponse {
                            frame: Some(stream_response::Frame::Flushed(self.queued)),
                        });
                    }
                }
                DownState::EofCounted => {
                    self.down = DownState::Ended;
                    return Poll::Ready(v2::StreamResponse {
                        frame: Some(stream_response::Frame::Eof(true)),
                    });
                }
                DownState::Failed(_) => {
                    let DownState::Failed(e) = std::mem::replace(&mut self.down, DownState::Ended)
                    else {
                        unreachable!("matched above")
                    };
                    self.begin_close(driver, None, false, Some(*e));
                    return Poll::Pending;
                }
            }
        }
    }

    /// Ends both sides and sends the socket's close behind everything the
    /// up side applied.
    ///
    /// The down side's read is cancelled: bytes it took from the socket
    /// count as handed out, so a close with them unconsumed resets, as
    /// close(2) with unread data does. An up op still waiting for a session
    /// slot is dropped with its claim on the slot.
    ///
    /// The client went away with its whole session (every Stream of it ends
    /// at once): the driver closes the session's sockets itself, as the
    /// kernel closes an exiting process's descriptors, in one sweep
    /// (`Sockets::session_ended`, the same close as this one without
    /// `consumed` or `abort`), so no `Close` op is sent. An explicit `close`
    /// (with its `consumed`/`abort`) still goes to the driver.
    fn begin_close(
        &mut self,
        driver: &DriverHandle,
        consumed: Option<u64>,
        abort: bool,
        failure: Option<Errno>,
    ) {
        self.up_op = UpOp::None;
        self.down = match std::mem::replace(&mut self.down, DownState::Ended) {
            // A payload whose header is out must follow it.
            DownState::Frames(mut frames) if frames.payload.is_some() => {
                frames.frames = Vec::new().into_iter();
                DownState::Frames(frames)
            }
            _ => DownState::Ended,
        };
        let swept = consumed.is_none() && !abort && self.session.ended();
        let handle = self.handle;
        let close = (!swept).then(|| {
            driver.start(self.session.info, |reply| Op::Close {
                handle,
                abort,
                consumed,
                reply,
            })
        });
        let rare = self.rare();
        rare.next = None;
        rare.closing = Some(Closing {
            close,
            abort,
            consumed,
            failure,
            swept,
        });
    }

    /// The payload [`DownBody`] sent the header of, if it is not out yet.
    fn take_payload(&mut self) -> Option<Bytes> {
        let DownState::Frames(frames) = &mut self.down else {
            return None;
        };
        let payload = frames.payload.take()?;
        if frames.frames.len() == 0 && self.closing().is_some() {
            self.down = DownState::Ended;
        }
        Some(payload)
    }

    /// Keeps `payload` (of the `data` message just taken from the down
    /// side's frames) for [`DownBody`]'s next poll.
    fn stash_payload(&mut self, payload: Bytes) {
        match &mut self.down {
            DownState::Frames(frames) => frames.payload = Some(payload),
            other => {
                *other = DownState::Frames(Box::new(DownFrames {
                    frames: Vec::new().into_iter(),
                    payload: Some(payload),
                }));
            }
        }
    }

    /// hyper's poll (see [`StreamBody`]): `cx` is hyper's, `up` the up
    /// side's own.
    fn poll_down_stream(
        &mut self,
        shared: &Arc<StreamShared>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<DownItem>> {
        let driver = &shared.context.driver;
        if !self.hyper.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.hyper = Some(cx.waker().clone());
        }
        loop {
            if let Some(notice) = self.take_rare(|r| r.notice.take()) {
                // The up side waited for it: it goes on now (a next notice
                // waits for the next poll), so it is left waiting on its
                // own waker even if hyper does not poll again soon.
                if self.closing().is_none() {
                    let waker = shared.up_waker();
                    self.poll_up(driver, &mut Context::from_waker(&waker));
                }
                return Poll::Ready(Some(Ok(notice)));
            }
            if let Some(closing) = self.closing() {
                if let Some(close) = &mut closing.close {
                    let closed = ready!(Pin::new(close).poll(cx));
                    closing.close = None;
                    if let Err(e) = closed {
                        closing.failure.get_or_insert(e);
                    }
                }
                // Without an error the response ends with OK. A client that
                // went away with its session is sent nothing: the status
                // would be built (its details encoded) for nobody.
                return Poll::Ready(match closing.failure.take() {
                    Some(e) if !closing.swept => Some(Err(e.into_status())),
                    _ => None,
                });
            }
            let waker = shared.up_waker();
            self.poll_up(driver, &mut Context::from_waker(&waker));
            if self.up_waits() {
                continue;
            }
            match self.poll_down(shared, driver, cx) {
                Poll::Ready(frame) => return Poll::Ready(Some(Ok(frame))),
                // A failed read started the close.
                Poll::Pending if self.closing().is_some() => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Stream for StreamBody {
    type Item = DownItem;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<DownItem>> {
        let shared = &self.shared;
        let mut state = shared.lock();
        match state.as_mut() {
            Some(state) => state.poll_down_stream(shared, cx),
            None => Poll::Ready(None),
        }
    }
}

impl Drop for StreamBody {
    /// hyper drops the response when it ended, when its client resets the
    /// stream or the API connection goes. The state goes with it (the up
    /// side's wakers may outlive it); a socket whose close did not reach
    /// the driver is closed through the control channel (no op slot to
    /// wait for).
    fn drop(&mut self) {
        let Some(state) = self.shared.lock().take() else {
            return;
        };
        let (abort, consumed) = match state.rare.as_ref().and_then(|r| r.closing.as_ref()) {
            None => (false, None),
            Some(c) if c.close.as_ref().is_some_and(|close| !close.sent()) => (c.abort, c.consumed),
            Some(_) => return,
        };
        if consumed.is_none() && !abort && state.session.ended() {
            return;
        }
        let request = crate::ops::Request {
            session: state.session.info,
            op: Op::Close {
                handle: state.handle,
                abort,
                consumed,
                reply: tokio::sync::oneshot::channel().0,
            },
        };
        let _ = self
            .shared
            .context
            .driver
            .control
            .send(Control::Close(request));
    }
}

/// A chunk this long goes out as a frame of its own; shorter ones are
/// joined with their neighbours (one copy of few bytes beats a frame each).
const FRAME_JOIN_BELOW: usize = STREAM_CHUNK / 4;

/// The Stream frames for one read: each chunk as it is (cut at
/// [`STREAM_CHUNK`]), runs of chunks shorter than [`FRAME_JOIN_BELOW`]
/// joined up to [`STREAM_CHUNK`].
fn frames_of(data: ReadData) -> Vec<Bytes> {
    let mut frames = Vec::new();
    let mut joined = BytesMut::new();
    for mut chunk in data.into_chunks() {
        if chunk.len() < FRAME_JOIN_BELOW && joined.len() + chunk.len() <= STREAM_CHUNK {
            joined.extend_from_slice(&chunk);
            continue;
        }
        if !joined.is_empty() {
            frames.push(joined.split().freeze());
        }
        while chunk.len() > STREAM_CHUNK {
            frames.push(chunk.split_to(STREAM_CHUNK));
        }
        if chunk.len() < FRAME_JOIN_BELOW {
            joined.extend_from_slice(&chunk);
        } else {
            frames.push(chunk);
        }
    }
    if !joined.is_empty() {
        frames.push(joined.freeze());
    }
    frames
}

/// `first` and the up `data` frames that follow it and have already
/// arrived (taken without waiting), up to [`STREAM_UP_BATCH`] bytes, as
/// one write: per megabyte, fewer driver round trips and, with a 64 KiB
/// frame a little over a 64 KiB super-segment's payload, fewer short
/// segment tails on the TUN. Also returns a message taken that does not
/// join (another kind of frame, the end of the stream, an error).
fn batch_data(
    cx: &mut Context<'_>,
    up: &mut UpSource,
    budget: &crate::intake::Budget,
    first: Bytes,
) -> (WriteData, Option<UpMessage>) {
    let mut data = WriteData::from(first);
    while data.len() < STREAM_UP_BATCH {
        match up.poll_message(cx, budget) {
            Poll::Pending => break,
            Poll::Ready(Ok(Some(v2::StreamRequest {
                frame: Some(stream_request::Frame::Data(more)),
            }))) => data.push(more),
            Poll::Ready(other) => return (data, Some(other)),
        }
    }
    (data, None)
}

fn frame_kind(frame: &stream_request::Frame) -> &'static str {
    match frame {
        stream_request::Frame::Data(_) => "data",
        stream_request::Frame::Write(_) => "write",
        stream_request::Frame::Flush(_) => "flush",
        stream_request::Frame::ShutdownWrite(_) => "shutdown_write",
        stream_request::Frame::ShutdownRead(_) => "shutdown_read",
        stream_request::Frame::Close(_) => "close",
        stream_request::Frame::SetOption(_) => "set_option",
        stream_request::Frame::Open(_) => "open",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a Stream may take (every idle connection has one): hyper's
    /// handle plus the shared state (Arc counts included). It was a
    /// spawned task of 1.26 KB (tokio's header included, release build)
    /// plus a ~175-byte down channel before the response body drove the
    /// socket itself, 384 bytes in round 6 (inline in hyper's body), 376
    /// in round 7 with tonic's `Streaming` (232 B) as its up side; 312 with
    /// the daemon's own reader (`UpSource`, 168 B) — and no longer boxed in
    /// tonic's body wrappers.
    const STREAM_BODY_LIMIT: usize = 312;

    #[test]
    fn a_streams_body_stays_small() {
        const ARC_COUNTS: usize = 2 * std::mem::size_of::<usize>();
        let size =
            std::mem::size_of::<StreamBody>() + ARC_COUNTS + std::mem::size_of::<StreamShared>();
        eprintln!(
            "Stream {size} B: state {} B, up {} B (decoder {} B), up op {} B, down {} B, \
             OpCall {} B, Op {} B",
            std::mem::size_of::<StreamState>(),
            std::mem::size_of::<UpSource>(),
            std::mem::size_of::<tcpd_proto::stream_data::UpDecoder>(),
            std::mem::size_of::<UpOp>(),
            std::mem::size_of::<DownState>(),
            std::mem::size_of::<OpCall<ReadData>>(),
            std::mem::size_of::<Op>(),
        );
        assert!(
            size <= STREAM_BODY_LIMIT,
            "a Stream takes {size} bytes per connection (limit {STREAM_BODY_LIMIT})"
        );
    }
}
