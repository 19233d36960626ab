//! The `tcpd.v1.Socket` service: the socket API, one RPC per socket call,
//! plus `Poll` and the bulk `Stream` data path.
//!
//! Handlers own no state: each one validates its request, identifies the
//! session from the request extensions, and runs a typed operation on the
//! driver ([`crate::driver::Core`]). Blocking calls wait on readiness
//! watches handed out by the driver, never by polling. Every failure is an
//! errno-bearing status built by [`crate::errno`].

use crate::convert;
use crate::driver::{Attempt, Core, DriverHandle, MAX_READ};
use crate::errno::Errno;
use crate::session::{SessionId, SessionInfo};
use bytes::Bytes;
use futures::FutureExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tcpd_proto::errno::{EINPROGRESS, EINVAL, EIO};
use tcpd_proto::v1;
use tcpd_proto::v1::socket_server::Socket;
use tcpd_proto::v1::{stream_down, stream_up};
use tcpd_stack::{Readiness, Shutdown};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Largest `data` frame the Stream RPC sends down (proto: at most 64 KiB).
pub const STREAM_CHUNK: usize = 64 * 1024;
/// Down frames buffered per stream before the daemon stops reading the
/// socket (the rest of the back-pressure is HTTP/2 flow control).
const STREAM_DOWN_QUEUE: usize = 4;
/// poll(2)'s POLLNVAL: the handle is not a socket of this session.
const POLLNVAL: u32 = 0x20;

type Reply<T> = Result<Response<T>, Status>;

/// The session a request arrived on (set by [`crate::session::SessionStream`]).
pub fn session_of<T>(request: &Request<T>) -> Result<SessionInfo, Status> {
    request
        .extensions()
        .get::<SessionInfo>()
        .copied()
        .ok_or_else(|| Errno::new(EIO, "request without a session").into_status())
}

/// Queues all of `data`, waiting for send-buffer space as needed. Returns
/// the bytes queued and, if it stopped early, why.
async fn write_all(
    driver: &DriverHandle,
    session: SessionInfo,
    handle: u64,
    data: Bytes,
) -> (usize, Option<Errno>) {
    let mut written = 0;
    while written < data.len() {
        let rest = data.slice(written..);
        let result = driver
            .call_blocking(move |core: &mut Core| core.write(session, handle, &rest, true))
            .await;
        match result {
            Ok(n) => written += n,
            Err(e) => return (written, Some(e)),
        }
    }
    (written, None)
}

/// How long Close waits for a Stream's up half to queue the data its client
/// sent before the Close (see [`Uploads`]).
const CLOSE_DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// The up halves of open Streams, by (session, handle).
///
/// A client ends a Stream's up side and then calls Close, but the two travel
/// separately: frames the client already sent may still sit in HTTP/2
/// buffers, or in `stream_up` waiting for send-buffer space, when Close
/// arrives. Closing at once would lose that tail of the data, so Close first
/// waits (bounded by [`CLOSE_DRAIN_LIMIT`]) until the socket's up half has
/// finished. The lock guards only this map, never the stack.
#[derive(Debug, Default, Clone)]
struct Uploads(Arc<Mutex<UploadWatchers>>);

/// Per (session, handle): a watcher that sees the up half finish.
type UploadWatchers = HashMap<(SessionId, u64), watch::Receiver<()>>;

impl Uploads {
    /// Registers the up half of a Stream; it counts as running until the
    /// returned guard is dropped.
    fn start(&self, session: SessionId, handle: u64) -> UploadGuard {
        let (done, watcher) = watch::channel(());
        if let Ok(mut map) = self.0.lock() {
            map.insert((session, handle), watcher.clone());
        }
        UploadGuard {
            uploads: self.clone(),
            key: (session, handle),
            watcher,
            _done: done,
        }
    }

    /// Waits until the up half of (session, handle), if any, has finished.
    async fn drained(&self, session: SessionId, handle: u64) {
        let watcher = self
            .0
            .lock()
            .ok()
            .and_then(|map| map.get(&(session, handle)).cloned());
        if let Some(mut watcher) = watcher {
            // `changed` fails once the guard's sender is dropped.
            let finished = async { while watcher.changed().await.is_ok() {} };
            if tokio::time::timeout(CLOSE_DRAIN_LIMIT, finished)
                .await
                .is_err()
            {
                tracing::warn!(
                    handle,
                    "closing while the socket's Stream is still queuing data"
                );
            }
        }
    }
}

/// Marks one running up half; removes its entry when dropped.
struct UploadGuard {
    uploads: Uploads,
    key: (SessionId, u64),
    watcher: watch::Receiver<()>,
    _done: watch::Sender<()>,
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.uploads.0.lock() {
            // A newer Stream on the same handle may have replaced this entry.
            if map
                .get(&self.key)
                .is_some_and(|w| w.same_channel(&self.watcher))
            {
                map.remove(&self.key);
            }
        }
    }
}

/// The Socket service.
#[derive(Debug, Clone)]
pub struct SocketService {
    driver: DriverHandle,
    uploads: Uploads,
}

impl SocketService {
    pub fn new(driver: DriverHandle) -> Self {
        SocketService {
            driver,
            uploads: Uploads::default(),
        }
    }
}

#[tonic::async_trait]
impl Socket for SocketService {
    async fn socket(&self, request: Request<v1::SocketRequest>) -> Reply<v1::SocketReply> {
        let s = session_of(&request)?;
        let handle = self.driver.call(move |c| c.socket(s)).await??;
        Ok(Response::new(v1::SocketReply { handle }))
    }

    async fn bind(&self, request: Request<v1::BindRequest>) -> Reply<v1::Empty> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let addr = convert::socket_addr(req.addr.as_ref())?;
        self.driver
            .call(move |c| c.bind(s, req.handle, addr))
            .await??;
        Ok(Response::new(v1::Empty {}))
    }

    async fn listen(&self, request: Request<v1::ListenRequest>) -> Reply<v1::Empty> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        self.driver
            .call(move |c| c.listen(s, req.handle, req.backlog))
            .await??;
        Ok(Response::new(v1::Empty {}))
    }

    async fn accept(&self, request: Request<v1::AcceptRequest>) -> Reply<v1::AcceptReply> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let wait = !req.nonblocking;
        let (handle, peer) = self
            .driver
            .call_blocking(move |c: &mut Core| c.accept(s, req.handle, wait))
            .await?;
        Ok(Response::new(v1::AcceptReply {
            handle,
            peer: Some(peer.into()),
        }))
    }

    async fn connect(&self, request: Request<v1::ConnectRequest>) -> Reply<v1::Empty> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let addr = convert::socket_addr(req.addr.as_ref())?;
        let handle = req.handle;
        self.driver
            .call(move |c| c.connect(s, handle, addr))
            .await??;
        if req.nonblocking {
            // POSIX: the handshake goes on; Poll reports OUT or ERR, SO_ERROR the outcome.
            return Err(Errno::new(EINPROGRESS, "connection in progress").into_status());
        }
        self.driver
            .call_blocking(move |c: &mut Core| c.connect_outcome(s, handle))
            .await?;
        Ok(Response::new(v1::Empty {}))
    }

    async fn read(&self, request: Request<v1::ReadRequest>) -> Reply<v1::ReadReply> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let max_len = usize::try_from(req.max_len)
            .unwrap_or(MAX_READ)
            .min(MAX_READ);
        if max_len == 0 {
            // read(2) of zero bytes returns 0 without touching the socket.
            self.driver.call(move |c| c.check(s, req.handle)).await??;
            return Ok(Response::new(v1::ReadReply {
                data: Vec::new(),
                eof: false,
            }));
        }
        let wait = !req.nonblocking;
        let data = self
            .driver
            .call_blocking(move |c: &mut Core| c.read(s, req.handle, max_len, req.peek, wait))
            .await?;
        let eof = data.is_empty();
        Ok(Response::new(v1::ReadReply { data, eof }))
    }

    async fn write(&self, request: Request<v1::WriteRequest>) -> Reply<v1::WriteReply> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let handle = req.handle;
        let data = Bytes::from(req.data);
        if data.is_empty() {
            self.driver.call(move |c| c.check(s, handle)).await??;
            return Ok(Response::new(v1::WriteReply { written: 0 }));
        }
        let written = if req.nonblocking {
            self.driver
                .call(move |c| match c.write(s, handle, &data, false) {
                    Attempt::Ready(r) => r,
                    // Not asked to wait, so the driver never blocks; treat it as EAGAIN.
                    Attempt::Blocked(_) => Err(Errno::from(tcpd_stack::SendError::WouldBlock)),
                })
                .await??
        } else {
            match write_all(&self.driver, s, handle, data).await {
                // write(2): a partial write reports the count, the error comes next time.
                (n, Some(_)) if n > 0 => n,
                (_, Some(e)) => return Err(e.into_status()),
                (n, None) => n,
            }
        };
        Ok(Response::new(v1::WriteReply {
            written: u32::try_from(written).unwrap_or(u32::MAX),
        }))
    }

    async fn shutdown(&self, request: Request<v1::ShutdownRequest>) -> Reply<v1::Empty> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let how = convert::shutdown_how(req.how)?;
        self.driver
            .call(move |c| c.shutdown(s, req.handle, how))
            .await??;
        Ok(Response::new(v1::Empty {}))
    }

    async fn close(&self, request: Request<v1::HandleRequest>) -> Reply<v1::Empty> {
        let s = session_of(&request)?;
        let handle = request.into_inner().handle;
        self.uploads.drained(s.id, handle).await;
        self.driver.call(move |c| c.close(s, handle)).await??;
        Ok(Response::new(v1::Empty {}))
    }

    async fn get_sock_name(&self, request: Request<v1::HandleRequest>) -> Reply<v1::SockAddrReply> {
        let s = session_of(&request)?;
        let handle = request.into_inner().handle;
        let addr = self
            .driver
            .call(move |c| c.address(s, handle, false))
            .await??;
        Ok(Response::new(v1::SockAddrReply {
            addr: Some(addr.into()),
        }))
    }

    async fn get_peer_name(&self, request: Request<v1::HandleRequest>) -> Reply<v1::SockAddrReply> {
        let s = session_of(&request)?;
        let handle = request.into_inner().handle;
        let addr = self
            .driver
            .call(move |c| c.address(s, handle, true))
            .await??;
        Ok(Response::new(v1::SockAddrReply {
            addr: Some(addr.into()),
        }))
    }

    async fn set_option(&self, request: Request<v1::SetOptionRequest>) -> Reply<v1::Empty> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let option = convert::option_to_set(req.option, req.value.as_ref())?;
        self.driver
            .call(move |c| c.set_option(s, req.handle, option))
            .await??;
        Ok(Response::new(v1::Empty {}))
    }

    async fn get_option(
        &self,
        request: Request<v1::GetOptionRequest>,
    ) -> Reply<v1::GetOptionReply> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let name = convert::option_name(req.option)?;
        let value = self
            .driver
            .call(move |c| c.get_option(s, req.handle, name))
            .await??;
        Ok(Response::new(v1::GetOptionReply {
            value: Some(convert::option_value(value)),
        }))
    }

    async fn poll(&self, request: Request<v1::PollRequest>) -> Reply<v1::PollReply> {
        let s = session_of(&request)?;
        let req = request.into_inner();
        let handles: Vec<u64> = req.entries.iter().map(|e| e.handle).collect();
        let mut watches = self
            .driver
            .call(move |c| c.poll_subscribe(s, &handles))
            .await?;
        let deadline = u64::try_from(req.timeout_ms)
            .ok()
            .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
        loop {
            // poll(2): ERR and HUP are reported whether asked for or not.
            let always = (Readiness::ERR | Readiness::HUP).0;
            let ready: Vec<u32> = req
                .entries
                .iter()
                .zip(watches.iter_mut())
                .map(|(entry, watch)| match watch {
                    Some(rx) if rx.has_changed().is_ok() => {
                        rx.borrow_and_update().0 & (entry.events | always)
                    }
                    // Unknown, foreign, or closed while we waited.
                    _ => POLLNVAL,
                })
                .collect();
            let timed_out = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
            if ready.iter().any(|r| *r != 0) || timed_out {
                let entries = req
                    .entries
                    .iter()
                    .zip(ready)
                    .map(|(e, events)| v1::PollEntry {
                        handle: e.handle,
                        events,
                    })
                    .collect();
                return Ok(Response::new(v1::PollReply { entries }));
            }
            let changes: Vec<_> = watches
                .iter_mut()
                .flatten()
                .map(|rx| rx.changed().boxed())
                .collect();
            let any_change = async {
                if changes.is_empty() {
                    std::future::pending::<()>().await;
                } else {
                    let _ = futures::future::select_all(changes).await;
                }
            };
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = any_change => {}
                () = sleep => {}
            }
        }
    }

    type StreamStream = ReceiverStream<Result<v1::StreamDown, Status>>;

    async fn stream(&self, request: Request<Streaming<v1::StreamUp>>) -> Reply<Self::StreamStream> {
        let s = session_of(&request)?;
        let mut up = request.into_inner();
        let handle = match up.message().await? {
            Some(v1::StreamUp {
                frame: Some(stream_up::Frame::Open(handle)),
            }) => handle,
            _ => {
                return Err(
                    Errno::new(EINVAL, "the first Stream frame must be `open`").into_status()
                );
            }
        };
        self.driver.call(move |c| c.check(s, handle)).await??;
        let (down_tx, down_rx) = mpsc::channel(STREAM_DOWN_QUEUE);
        let down = tokio::spawn(stream_down(self.driver.clone(), s, handle, down_tx.clone()));
        let upload = self.uploads.start(s.id, handle);
        tokio::spawn(stream_up(
            upload,
            self.driver.clone(),
            s,
            handle,
            up,
            down_tx,
            down.abort_handle(),
        ));
        Ok(Response::new(ReceiverStream::new(down_rx)))
    }
}

fn error_frame(e: &Errno) -> v1::StreamDown {
    v1::StreamDown {
        frame: Some(stream_down::Frame::Error(v1::Errno {
            number: e.number,
            name: tcpd_proto::errno_name(e.number).to_string(),
        })),
    }
}

/// The down half of a Stream: socket → client, one read of at most
/// [`STREAM_CHUNK`] at a time, only while the client consumes.
async fn stream_down(
    driver: DriverHandle,
    session: SessionInfo,
    handle: u64,
    tx: mpsc::Sender<Result<v1::StreamDown, Status>>,
) {
    loop {
        let read = driver
            .call_blocking(move |c: &mut Core| c.read(session, handle, STREAM_CHUNK, false, true));
        let result = tokio::select! {
            r = read => r,
            // The client went away: stop reading (the socket stays open until Close).
            () = tx.closed() => return,
        };
        let frame = match result {
            Ok(data) if data.is_empty() => stream_down::Frame::Eof(true),
            Ok(data) => stream_down::Frame::Data(data),
            Err(e) => {
                let _ = tx.send(Ok(error_frame(&e))).await;
                return;
            }
        };
        let last = matches!(frame, stream_down::Frame::Eof(_));
        if tx
            .send(Ok(v1::StreamDown { frame: Some(frame) }))
            .await
            .is_err()
            || last
        {
            return;
        }
    }
}

/// The up half of a Stream: client → socket. The next frame is read only
/// once the previous one is fully queued, so HTTP/2 flow control carries
/// the back-pressure to the writer.
async fn stream_up(
    _upload: UploadGuard,
    driver: DriverHandle,
    session: SessionInfo,
    handle: u64,
    mut up: Streaming<v1::StreamUp>,
    tx: mpsc::Sender<Result<v1::StreamDown, Status>>,
    down: tokio::task::AbortHandle,
) {
    loop {
        let frame = match up.message().await {
            Ok(Some(v1::StreamUp { frame: Some(frame) })) => frame,
            // End of the up side (or the client vanished): nothing happens to the socket.
            Ok(None) | Err(_) => return,
            Ok(Some(v1::StreamUp { frame: None })) => {
                fail_stream(&tx, &down, Errno::invalid("empty Stream frame")).await;
                return;
            }
        };
        let failure = match frame {
            stream_up::Frame::Data(data) => {
                write_all(&driver, session, handle, Bytes::from(data))
                    .await
                    .1
            }
            stream_up::Frame::ShutdownWrite(true) => driver
                .call(move |c| c.shutdown(session, handle, Shutdown::Write))
                .await
                .and_then(|r| r)
                .err(),
            stream_up::Frame::ShutdownWrite(false) => None,
            stream_up::Frame::Open(_) => Some(Errno::invalid("Stream already open")),
        };
        if let Some(e) = failure {
            fail_stream(&tx, &down, e).await;
            return;
        }
    }
}

/// Ends a Stream with a terminal error frame.
async fn fail_stream(
    tx: &mpsc::Sender<Result<v1::StreamDown, Status>>,
    down: &tokio::task::AbortHandle,
    e: Errno,
) {
    down.abort();
    let _ = tx.send(Ok(error_frame(&e))).await;
}
