//! The `tcpd.v2.SocketService`: unary socket calls, and the `Stream` RPC
//! that carries one connected socket's whole life.
//!
//! Handlers own no socket state: each validates its request, identifies the
//! session from the request extensions, and sends one typed [`Op`] to the
//! driver, which answers it or parks it until the socket's readiness
//! changes. Every failure is an errno-bearing `google.rpc.Status`
//! ([`crate::errno`]).
//!
//! A Stream (see the proto) runs as one task per socket: after `open`, its
//! down half loops on parked Read ops and its up half applies frames in
//! order (Write ops that park until the bytes are queued, shutdowns,
//! `flush` answered with `flushed`). `close` — or the end of the up side —
//! closes the socket after everything before it, and the task ends the
//! response stream: OK after a close, the connection's error otherwise.

use crate::convert;
use crate::errno::Errno;
use crate::idle::Activity;
use crate::ops::{DriverHandle, Op, ReadData, SocketSetup, WriteData};
use crate::session::{SessionConnection, SessionInfo};
use crate::sockets::MAX_READ;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::SinkExt;
use futures::channel::mpsc;
use std::sync::Arc;
use std::time::Duration;
use tcpd_proto::errno::{EINVAL, EIO};
use tcpd_proto::v2;
use tcpd_proto::v2::socket_service_server::SocketService as SocketApi;
use tcpd_proto::v2::{stream_open, stream_request, stream_response};
use tcpd_stack::{SendFlags, Shutdown};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Largest `data` frame the Stream RPC sends down (proto: at most 64 KiB).
pub const STREAM_CHUNK: usize = 64 * 1024;
/// Down frames buffered per stream before the daemon stops reading the
/// socket (the rest of the back-pressure is HTTP/2 flow control).
const STREAM_DOWN_QUEUE: usize = 4;
/// The down channel's shared buffer: futures' bounded channel holds its
/// buffer plus one frame per sender, and a Stream has two (its down and
/// its up half), so it holds [`STREAM_DOWN_QUEUE`] frames.
const DOWN_BUFFER: usize = STREAM_DOWN_QUEUE - 2;
/// Most bytes of up `data` frames, already received, that one Write op
/// carries (see [`stream_up`]). Four frames: a few driver round trips
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
    /// Shared with every Stream's task (one pointer each, not a handle of
    /// six).
    driver: Arc<DriverHandle>,
}

impl SocketService {
    pub fn new(driver: DriverHandle) -> Self {
        SocketService {
            driver: Arc::new(driver),
        }
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

#[tonic::async_trait]
impl SocketApi for SocketService {
    async fn socket(&self, request: Request<v2::SocketRequest>) -> Reply<v2::SocketResponse> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let setup = setup(0, &req.options, req.bind.as_ref(), req.family)?;
        let (handle, local) = self
            .driver
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
            .driver
            .call(s, |reply| Op::Bind {
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
        let (handle, local) = self
            .driver
            .call(s, |reply| Op::Listen {
                setup,
                backlog: req.backlog,
                reply,
            })
            .await?;
        Ok(Response::new(v2::ListenResponse {
            handle,
            local: Some(local.into()),
        }))
    }

    async fn accept(&self, request: Request<v2::AcceptRequest>) -> Reply<v2::AcceptResponse> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let c = self
            .driver
            .call(s, |reply| Op::Accept {
                handle: req.handle,
                wait: !req.nonblocking,
                reply,
            })
            .await?;
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
            .driver
            .call(s, |reply| Op::Connect {
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
                .driver
                .call(s, |reply| Op::ReadUrgent {
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
            self.driver
                .call(s, |reply| Op::Address {
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
            .driver
            .call(s, |reply| Op::Read {
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
            .driver
            .call(s, |reply| Op::Write {
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
        self.driver
            .call(s, |reply| Op::Shutdown {
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
        self.driver
            .call(s, |reply| Op::Close {
                handle: req.handle,
                abort: req.abort,
                consumed: None,
                reply,
            })
            .await?;
        Ok(Response::new(v2::CloseResponse {}))
    }

    async fn get_socket_name(
        &self,
        request: Request<v2::GetSocketNameRequest>,
    ) -> Reply<v2::GetSocketNameResponse> {
        let s = session_of(&request)?;
        let handle = request.into_inner().handle;
        let addr = self
            .driver
            .call(s, |reply| Op::Address {
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
            .driver
            .call(s, |reply| Op::Address {
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
        self.driver
            .call(s, |reply| Op::SetOption {
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
                .driver
                .call(s, |reply| Op::TcpInfo {
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
            .driver
            .call(s, |reply| Op::GetOption {
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
        let poll = |park: bool| {
            let entries = entries.clone();
            self.driver.call(s, move |reply| Op::Poll {
                entries,
                park,
                reply,
            })
        };
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
        let token = self.driver.call(s, |reply| Op::FdToken { reply }).await?;
        Ok(Response::new(v2::OpenFdChannelResponse {
            token: token.to_vec(),
        }))
    }

    type StreamStream = DownStream;

    async fn stream(
        &self,
        request: Request<Streaming<v2::StreamRequest>>,
    ) -> Reply<Self::StreamStream> {
        let s = session_of(&request)?;
        let activity = request
            .extensions()
            .get::<SessionConnection>()
            .map(|c| Arc::clone(&c.activity));
        let mut up = request.into_inner();
        let open = match up.message().await? {
            Some(v2::StreamRequest {
                frame: Some(stream_request::Frame::Open(v2::StreamOpen { how: Some(how), .. })),
            }) => how,
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
                let guard = self.driver.abandon_guard(s.id);
                let connected = self
                    .driver
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
            stream_open::How::Accept(a) => {
                self.driver
                    .call(s, |reply| Op::Accept {
                        handle: a.listener,
                        wait: true,
                        reply,
                    })
                    .await?
            }
        };
        let (mut tx, rx) = mpsc::channel(DOWN_BUFFER);
        let opened = v2::StreamResponse {
            frame: Some(stream_response::Frame::Opened(v2::StreamOpened {
                handle: connected.handle,
                local: Some(connected.local.into()),
                peer: Some(connected.peer.into()),
            })),
        };
        // The channel is empty: this cannot fail or wait.
        let _ = tx.try_send(Box::new(Ok(opened)));
        tokio::spawn(run_stream(
            Arc::clone(&self.driver),
            s,
            activity,
            connected.handle,
            up,
            tx,
        ));
        Ok(Response::new(rx.map(unbox_down as fn(Down) -> DownItem)))
    }
}

/// A frame (or the final error) of a Stream's down side, boxed: the
/// channel (futures' bounded mpsc, a linked queue) keeps an empty node
/// of its item's size at all times, so with the ~180-byte item itself
/// every idle stream would hold it.
///
/// Not tokio's mpsc: its channel is cache-padded (512 bytes) and
/// allocates its slots 32 at a time (288 bytes more with boxed items);
/// an idle connection held 800 bytes of channel, futures' takes ~250.
type Down = Box<Result<v2::StreamResponse, Status>>;
type DownTx = mpsc::Sender<Down>;
/// The response stream of the Stream RPC.
pub type DownStream = tokio_stream::adapters::Map<mpsc::Receiver<Down>, fn(Down) -> DownItem>;
type DownItem = Result<v2::StreamResponse, Status>;

// The channel's item is boxed on purpose (see `Down`).
#[allow(clippy::boxed_local)]
fn unbox_down(item: Down) -> DownItem {
    *item
}

/// What `Streaming::message` gives: a frame, the end, or an error.
type UpMessage = Result<Option<v2::StreamRequest>, Status>;

/// How the up half of a Stream ended.
enum UpEnd {
    /// `close` arrived after everything before it.
    Close { consumed: u64, abort: bool },
    /// The client ended its side or went away without `close`.
    Gone,
    /// A frame failed (EPIPE, ECONNRESET...) or was malformed.
    Failed(Errno),
}

/// How the down half of a Stream ended.
enum DownEnd {
    /// The peer's FIN was delivered; the up half may go on.
    Eof,
    /// The connection failed; the stream ends with this error.
    Failed(Errno),
    /// The client stopped reading the response (went away).
    Gone,
}

/// One Stream after `open`; see the module docs.
// Not an `async fn` on purpose (see the body).
#[allow(clippy::manual_async_fn)]
pub(crate) fn run_stream(
    driver: Arc<DriverHandle>,
    session: SessionInfo,
    activity: Option<Arc<Activity>>,
    handle: u64,
    mut up: Streaming<v2::StreamRequest>,
    tx: DownTx,
) -> impl Future<Output = ()> + Send + 'static {
    // An `async move` block rather than an `async fn`: an async fn's
    // future keeps its arguments twice (as given, and as the body's
    // locals), 320 bytes more per connection here.
    async move {
        // Both halves are dropped at the end of this block, before the close
        // below. A half left alive but no longer polled could sit in a driver
        // call's queue for a session slot (`ops::SessionSlots`): the slot it is
        // then granted would be neither used nor returned, and sixteen such
        // streams would stop every call of their session (seen with 100
        // concurrent streams closing at once). Dropping the down half cancels
        // its read; bytes it took from the socket count as handed out, so a
        // close with them unconsumed resets, as close(2) with unread data does.
        let mut tx = tx;
        let (end, failure) = {
            // The up half sends `flushed` frames on a sender of its own.
            let mut up_tx = tx.clone();
            // Pinned where they are made: a pinned copy of a future made
            // first (`tokio::pin!`) would keep room for both in this task.
            let mut down = std::pin::pin!(stream_down(&driver, session, handle, &mut tx));
            let mut up = std::pin::pin!(stream_up(&driver, session, handle, &mut up, &mut up_tx));
            tokio::select! {
                end = &mut up => (end, None),
                down_end = &mut down => match down_end {
                    DownEnd::Eof => (up.await, None),
                    DownEnd::Failed(e) => (UpEnd::Gone, Some(e)),
                    DownEnd::Gone => (UpEnd::Gone, None),
                },
            }
        };
        drop(up);
        let (consumed, abort, failure) = match end {
            UpEnd::Close { consumed, abort } => (Some(consumed), abort, failure),
            UpEnd::Gone => (None, false, failure),
            UpEnd::Failed(e) => (None, false, Some(e)),
        };
        // The client went away with its whole session (every Stream of it
        // ends at once): the driver closes the session's sockets itself, as
        // the kernel closes an exiting process's descriptors, in one sweep
        // (`Sockets::session_ended`, the same close as this one without
        // `consumed` or `abort`). Sending 100 000 `Close` ops that would
        // wait for the session's slots, only to find their sockets gone, made
        // most of the cost of closing 100 000 connections at once. An explicit
        // `close` (with its `consumed`/`abort`) still goes to the driver.
        let swept = consumed.is_none() && !abort && activity.is_some_and(|a| a.ended());
        let closed = if swept {
            Ok(())
        } else {
            driver
                .call(session, |reply| Op::Close {
                    handle,
                    abort,
                    consumed,
                    reply,
                })
                .await
        };
        // Without an error, dropping `tx` ends the response stream with OK.
        // A client that went away (its session ended: every Stream of it
        // closes at once) is sent nothing: the status would be built (its
        // details encoded) for nobody.
        if let Some(e) = failure.or(closed.err())
            && !tx.is_closed()
        {
            let _ = Box::pin(tx.send(Box::new(Err(e.into_status())))).await;
        }
    }
}

/// Socket → client: one parked read at a time, only while the client
/// consumes. A read takes as many frames ([`STREAM_CHUNK`] each) as the
/// down queue holds; its chunks become the frames without copying (a
/// super-segment's payload, as the TUN read left it; only short chunks
/// are joined, see [`frames_of`]): one driver
/// round trip (and one wake-up of this task) moves up to
/// `STREAM_DOWN_QUEUE` frames when the socket has that much buffered.
/// Once the client falls behind (a frame had to wait for room), reads
/// take one frame until the frames of a read go without waiting again, so
/// what the task holds beyond the queue stays small, and the rest stays
/// in the socket where the quotas see it.
async fn stream_down(
    driver: &DriverHandle,
    session: SessionInfo,
    handle: u64,
    tx: &mut DownTx,
) -> DownEnd {
    let mut slots = STREAM_DOWN_QUEUE;
    loop {
        match room(tx).await {
            Ok(waited) if waited => slots = 1,
            Ok(_) => {}
            Err(_) => return DownEnd::Gone,
        }
        let read = driver.call(session, |reply| Op::Read {
            handle,
            max_len: STREAM_CHUNK * slots,
            peek: false,
            wait: true,
            reply,
        });
        let data = match read.await {
            Ok(data) if data.is_empty() => {
                let _ = tx.start_send(Box::new(Ok(v2::StreamResponse {
                    frame: Some(stream_response::Frame::Eof(true)),
                })));
                return DownEnd::Eof;
            }
            Ok(data) => data,
            Err(e) => return DownEnd::Failed(e),
        };
        let mut frames = frames_of(data).into_iter();
        if let Some(first) = frames.next()
            && tx.start_send(data_frame(first)).is_err()
        {
            return DownEnd::Gone;
        }
        slots = STREAM_DOWN_QUEUE;
        for frame in frames {
            match room(tx).await {
                Ok(waited) if waited => slots = 1,
                Ok(_) => {}
                Err(_) => return DownEnd::Gone,
            }
            if tx.start_send(data_frame(frame)).is_err() {
                return DownEnd::Gone;
            }
        }
    }
}

/// Waits until `tx` may send a frame; whether that meant waiting (the
/// queue was full). An error: the client stopped reading the response.
async fn room(tx: &mut DownTx) -> Result<bool, mpsc::SendError> {
    let mut waited = false;
    futures::future::poll_fn(|cx| {
        let ready = tx.poll_ready(cx);
        waited |= ready.is_pending();
        ready
    })
    .await?;
    Ok(waited)
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

fn data_frame(data: Bytes) -> Down {
    Box::new(Ok(v2::StreamResponse {
        frame: Some(stream_response::Frame::Data(data)),
    }))
}

/// Client → socket, frame by frame, in order. The next frame is read only
/// once the previous one is done, so HTTP/2 flow control carries the
/// back-pressure to the writer.
///
/// Waiting for a frame is the state an idle connection's task sits in, so
/// it holds little: each frame is applied by a boxed [`apply_frame`]
/// future that exists only while the frame is being applied.
async fn stream_up(
    driver: &DriverHandle,
    session: SessionInfo,
    handle: u64,
    up: &mut Streaming<v2::StreamRequest>,
    tx: &mut DownTx,
) -> UpEnd {
    let mut queued: u64 = 0;
    // A message taken from `up` while batching that did not join the batch
    // (boxed: it is rare, and the task would hold its room at all times).
    let mut next: Option<Box<UpMessage>> = None;
    loop {
        // In a block: the message's room ends with it, before the frame
        // is applied.
        let frame = {
            let message = match next.take() {
                Some(message) => *message,
                None => up.message().await,
            };
            match message {
                Ok(Some(v2::StreamRequest { frame: Some(frame) })) => frame,
                Ok(None) | Err(_) => {
                    tracing::trace!(handle, queued, "stream up: client side ended");
                    return UpEnd::Gone;
                }
                Ok(Some(v2::StreamRequest { frame: None })) => {
                    return UpEnd::Failed(Errno::invalid("empty Stream frame"));
                }
            }
        };
        tracing::trace!(
            handle,
            queued,
            frame = frame_kind(&frame),
            "stream up: frame"
        );
        let step = UpStep {
            driver,
            session,
            handle,
            tx: &mut *tx,
        };
        if let Some(end) = Box::pin(step.apply_frame(frame, up, &mut next, &mut queued)).await {
            return end;
        }
    }
}

/// What [`UpStep::apply_frame`] needs of its Stream.
struct UpStep<'a> {
    driver: &'a DriverHandle,
    session: SessionInfo,
    handle: u64,
    tx: &'a mut DownTx,
}

impl UpStep<'_> {
    /// Applies one up frame; `Some` ends the up half.
    async fn apply_frame(
        self,
        frame: stream_request::Frame,
        up: &mut Streaming<v2::StreamRequest>,
        next: &mut Option<Box<UpMessage>>,
        queued: &mut u64,
    ) -> Option<UpEnd> {
        let UpStep {
            driver,
            session,
            handle,
            tx,
        } = self;
        let result = match frame {
            stream_request::Frame::Data(data) => {
                let data = batch_data(up, data, next);
                driver
                    .call(session, |reply| Op::Write {
                        handle,
                        data,
                        flags: SendFlags::empty(),
                        wait: true,
                        reply,
                    })
                    .await
                    .map(|n| *queued += n as u64)
            }
            stream_request::Frame::Write(write) => driver
                .call(session, |reply| Op::Write {
                    handle,
                    data: write.data.into(),
                    flags: convert::send_flags(write.flags),
                    wait: true,
                    reply,
                })
                .await
                .map(|n| *queued += n as u64),
            stream_request::Frame::Flush(_) => {
                let flushed = v2::StreamResponse {
                    frame: Some(stream_response::Frame::Flushed(*queued)),
                };
                if tx.send(Box::new(Ok(flushed))).await.is_err() {
                    return Some(UpEnd::Gone);
                }
                Ok(())
            }
            stream_request::Frame::ShutdownWrite(true) => {
                shutdown(driver, session, handle, Shutdown::Write).await
            }
            stream_request::Frame::ShutdownRead(true) => {
                shutdown(driver, session, handle, Shutdown::Read).await
            }
            stream_request::Frame::ShutdownWrite(false)
            | stream_request::Frame::ShutdownRead(false) => Ok(()),
            stream_request::Frame::Close(c) => {
                return Some(UpEnd::Close {
                    consumed: c.consumed,
                    abort: c.abort,
                });
            }
            stream_request::Frame::SetOption(setting) => {
                set_option_in_stream(driver, session, handle, &setting).await;
                Ok(())
            }
            stream_request::Frame::Open(_) => Err(Errno::invalid("Stream already open")),
        };
        result.err().map(UpEnd::Failed)
    }
}

/// `first` and the up `data` frames that follow it and have already
/// arrived (taken without waiting), up to [`STREAM_UP_BATCH`] bytes, as
/// one write: per megabyte, fewer driver round trips and, with a 64 KiB
/// frame a little over a 64 KiB super-segment's payload, fewer short
/// segment tails on the TUN. A message that does not join (another kind
/// of frame, the end of the stream, an error) is left in `next`.
fn batch_data(
    up: &mut Streaming<v2::StreamRequest>,
    first: Bytes,
    next: &mut Option<Box<UpMessage>>,
) -> WriteData {
    let mut data = WriteData::from(first);
    while data.len() < STREAM_UP_BATCH {
        // `message` is cancel safe: a frame not complete yet stays in `up`.
        match up.message().now_or_never() {
            None => break,
            Some(Ok(Some(v2::StreamRequest {
                frame: Some(stream_request::Frame::Data(more)),
            }))) => data.push(more),
            Some(other) => {
                *next = Some(Box::new(other));
                break;
            }
        }
    }
    data
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

/// A `set_option` frame: applied in order with the data; there is no
/// answer on the stream, so a refusal is logged (the client checked the
/// value against the ranges setsockopt accepts) and the stream goes on.
async fn set_option_in_stream(
    driver: &DriverHandle,
    session: SessionInfo,
    handle: u64,
    setting: &v2::OptionSetting,
) {
    let result = match convert::option_to_set(setting.option, setting.value.as_ref()) {
        Ok(option) => {
            driver
                .call(session, |reply| Op::SetOption {
                    handle,
                    option,
                    reply,
                })
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::debug!(handle, option = setting.option, error = %e, "in-stream set_option refused");
    }
}

async fn shutdown(
    driver: &DriverHandle,
    session: SessionInfo,
    handle: u64,
    how: Shutdown,
) -> Result<(), Errno> {
    driver
        .call(session, |reply| Op::Shutdown { handle, how, reply })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::{Harness, fed_up_stream};
    use crate::sockets::Quotas;

    /// What a Stream's task may take (its future; tokio adds a header of
    /// about 100 bytes). Every idle connection has one: at 4.2 KB in a
    /// release build (before `DriverHandle::call` boxed its sending, the
    /// up half its per-frame work, and `run_stream` stopped being an
    /// `async fn`) it was the largest item of an idle connection's cost,
    /// ahead of the stack's whole connection. 1.15 KB in a debug build now
    /// (1.26 KB with tokio's header in a release build).
    const STREAM_TASK_LIMIT: usize = 1280;

    fn print_sizes(driver: &DriverHandle, task: usize) {
        eprintln!(
            "Stream task {task} B (up half {} B, down half {} B), Streaming {} B, \
             call future {} B, Op {} B, down item {} B",
            std::mem::size_of_val(&stream_up(
                driver,
                DriverHandle::no_session(),
                1,
                &mut fed_up_stream().1,
                &mut mpsc::channel(1).0,
            )),
            std::mem::size_of_val(&stream_down(
                driver,
                DriverHandle::no_session(),
                1,
                &mut mpsc::channel(1).0,
            )),
            std::mem::size_of::<Streaming<v2::StreamRequest>>(),
            std::mem::size_of_val(&driver.call(DriverHandle::no_session(), |reply| Op::Read {
                handle: 1,
                max_len: 1,
                peek: false,
                wait: true,
                reply,
            })),
            std::mem::size_of::<Op>(),
            std::mem::size_of::<Down>(),
        );
    }

    #[test]
    fn a_streams_task_stays_small() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let (h, _run) = Harness::new(Quotas::default());
            let (_feed, up) = fed_up_stream();
            let (tx, _rx) = mpsc::channel(DOWN_BUFFER);
            let task = run_stream(
                Arc::new(h.driver.clone()),
                DriverHandle::no_session(),
                Some(Arc::new(Activity::default())),
                1,
                up,
                tx,
            );
            let size = std::mem::size_of_val(&task);
            print_sizes(&h.driver, size);
            assert!(
                size <= STREAM_TASK_LIMIT,
                "a Stream's task takes {size} bytes per connection (limit {STREAM_TASK_LIMIT})"
            );
            // The channel keeps an empty node of its item's size.
            assert_eq!(std::mem::size_of::<Down>(), std::mem::size_of::<usize>());
        });
    }
}
