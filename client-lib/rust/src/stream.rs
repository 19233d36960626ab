//! [`TcpStream`]: a connected socket whose data moves over the Stream RPC.
//!
//! Framing (see `StreamUp`/`StreamDown` in the proto): the first up frame is
//! `open(handle)`; after it every `poll_write` becomes one up `data` frame of
//! at most [`MAX_UP_FRAME`] bytes, pushed through a bounded queue of
//! [`UP_QUEUE_FRAMES`] frames into the RPC's request body, and
//! `poll_shutdown` becomes one `shutdown_write` frame queued *behind* the
//! data. Down `data` frames are handed to `poll_read` as they arrive, `eof`
//! becomes a 0-byte read, and an `error` frame becomes one
//! `io::Error::from_raw_os_error(errno)` followed by EOF (as Linux reports
//! ECONNRESET once). No unary call is made per read or write.
//!
//! Back-pressure: the daemon takes the next up frame only when the previous
//! one is in the socket's send buffer, HTTP/2 flow control stops the request
//! body, the bounded queue fills, and `poll_write` returns `Pending`. The same
//! holds downstream with the per-stream HTTP/2 window
//! ([`STREAM_WINDOW`](crate::transport::STREAM_WINDOW)).
//!
//! Closing (explicit [`TcpStream::close`] or the last drop): wait until the
//! daemon has answered the Stream RPC, wait for the up queue to drain, end
//! the up side, send `Close`, and only then let go of the down stream after
//! the daemon ends it. Dropping the down (response) half earlier would make
//! h2 reset the whole HTTP/2 stream (RFC 9113 §8.1) and discard up data it
//! still buffers. The daemon must in turn finish a Stream's received up
//! frames before acting on `Close`.
//!
//! Invariants:
//! - Frames enter the queue only from the write half, in call order; the
//!   close path only waits for the queue to drain, so the daemon sees data,
//!   then `shutdown_write`, then (on another RPC) `Close`.
//! - The down stream is never dropped while the socket is open: EOF and
//!   error frames only mark the read side finished.
//! - `poll_flush` is `Ready` once every queued frame has been taken by the
//!   gRPC request body (handed to HTTP/2), not when the peer has it.
//! - A pending flush never outlives the next write: its claim on every queue
//!   slot is dropped first, or the (fair) queue would starve the writer.
//! - The daemon handle is closed exactly once, when the last part (stream or
//!   both owned halves) is dropped.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddrV4};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::StreamExt;
use sync_wrapper::SyncWrapper;
use tcpd_proto::errno;
use tcpd_proto::v1::{self, stream_down, stream_up};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::PollSender;
use tonic::Streaming;

use crate::addr::{self, ToSocketAddrsV4};
use crate::socket::{self, Socket};
use crate::sockopt::{OptionName, SockOption};
use crate::transport::carries_errno;
use crate::{Client, runtime};

/// Largest up `data` frame; bigger writes are split (the daemon's down
/// frames use the same 64 KiB bound).
pub const MAX_UP_FRAME: usize = 64 * 1024;

/// Frames the client queues ahead of the gRPC request body. With
/// [`MAX_UP_FRAME`] this bounds client-side buffering to 1 MiB per stream,
/// on top of the HTTP/2 window.
pub const UP_QUEUE_FRAMES: usize = 16;

type DownStream = Streaming<v1::StreamDown>;
type OpenResult = Result<tonic::Response<DownStream>, tonic::Status>;

/// What the read half and the write half share.
struct Shared {
    client: Client,
    handle: u64,
    peer: SocketAddrV4,
    /// Taken by the first of [`TcpStream::close`] and `Drop`.
    close: Mutex<Option<ClosePath>>,
}

/// How long a closed stream's down side is drained, waiting for the daemon
/// to end it, before it is dropped regardless.
const CLOSE_DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// The down stream of a dropped read side, waiting for the close path.
type ParkedDown = Arc<Mutex<Option<Down>>>;

/// Everything needed to close the socket without losing written data.
struct ClosePath {
    client: Client,
    handle: u64,
    /// A sender kept so the close path can wait for queued frames to drain.
    up: mpsc::Sender<v1::StreamUp>,
    /// Becomes `true` once the daemon has answered the Stream RPC (so it
    /// knows the stream belongs to this handle before Close arrives).
    opened: watch::Receiver<bool>,
    /// Where the read side leaves the down stream when it is dropped, so
    /// the close path can keep it alive until the daemon ends it.
    parked_down: ParkedDown,
}

impl ClosePath {
    /// Data already written must reach the daemon before Close, or a
    /// graceful close would lose it. So: wait until the daemon has attached
    /// the Stream RPC to the handle and every queued frame has been handed
    /// to HTTP/2, end the up side (the last sender is dropped here) so the
    /// daemon can finish the stream's frames, then send Close. Each wait
    /// ends early if the Stream RPC is gone.
    async fn run(self) -> io::Result<()> {
        let ClosePath {
            client,
            handle,
            up,
            mut opened,
            parked_down,
        } = self;
        let _ = opened.wait_for(|done| *done).await;
        let _ = up.reserve_many(up.max_capacity()).await;
        drop(up);
        let result = socket::close_handle(&client, handle).await;
        // Dropping the response half of an HTTP/2 stream whose request half
        // still has DATA buffered makes h2 reset it (RST_STREAM CANCEL, RFC
        // 9113 §8.1), discarding that data. So the down stream lives until
        // the daemon ends it after Close.
        let parked = parked_down.lock().ok().and_then(|mut slot| slot.take());
        let _ = runtime::spawn(async move {
            let _ = tokio::time::timeout(CLOSE_DRAIN_LIMIT, drain_down(parked)).await;
        });
        result
    }
}

impl Shared {
    fn take_close_path(&self) -> Option<ClosePath> {
        self.close.lock().ok().and_then(|mut slot| slot.take())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(path) = self.take_close_path() {
            // Without a runtime the session's end closes the socket instead.
            let _ = runtime::spawn(path.run());
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("handle", &self.handle)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// The down direction of the Stream RPC.
enum Down {
    /// The RPC is being opened on the I/O runtime.
    Opening(JoinHandle<OpenResult>),
    /// Frames arrive here (boxed: the decoder state is large).
    Open(Box<SyncWrapper<DownStream>>),
    /// EOF, a delivered error, or the RPC ended: reads return 0.
    Done,
}

/// Reads a parked down stream to its end, discarding what arrives.
async fn drain_down(down: Option<Down>) {
    let mut frames = match down {
        Some(Down::Open(frames)) => frames.into_inner(),
        Some(Down::Opening(task)) => match task.await {
            Ok(Ok(response)) => response.into_inner(),
            _ => return,
        },
        Some(Down::Done) | None => return,
    };
    while let Some(Ok(_)) = frames.next().await {}
}

/// State of the reading side.
struct ReadState {
    down: Down,
    /// EOF or a terminal error was delivered: reads return 0. The down
    /// stream is kept (not dropped) until close, see [`CLOSE_DRAIN_LIMIT`].
    finished: bool,
    /// Shared with [`Shared`]; filled when this state is dropped.
    parked_down: ParkedDown,
    /// Bytes of the last data frame not yet read, from `pos`.
    pending: Vec<u8>,
    pos: usize,
    /// The errno that ended the Stream RPC, shared with the write side so
    /// writes that find the queue closed report it (`EPIPE` when none).
    terminal: Arc<OnceLock<i32>>,
}

/// Maps a failed Stream RPC: the daemon's errno when it sent one; a session
/// that broke underneath looks like a reset connection.
fn stream_status_error(status: &tonic::Status) -> io::Error {
    if carries_errno(status) {
        io::Error::from_raw_os_error(tcpd_proto::status_errno(status))
    } else if status.code() == tonic::Code::Unimplemented {
        io::Error::from_raw_os_error(errno::EOPNOTSUPP)
    } else {
        io::Error::from_raw_os_error(errno::ECONNRESET)
    }
}

impl ReadState {
    fn finish_with(&mut self, errno: i32) -> io::Error {
        self.finished = true;
        let _ = self.terminal.set(errno);
        io::Error::from_raw_os_error(errno)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.pos < self.pending.len() {
                let n = buf.remaining().min(self.pending.len() - self.pos);
                buf.put_slice(&self.pending[self.pos..self.pos + n]);
                self.pos += n;
                return Poll::Ready(Ok(()));
            }
            if self.finished {
                return Poll::Ready(Ok(()));
            }
            match &mut self.down {
                Down::Done => return Poll::Ready(Ok(())),
                Down::Opening(task) => match ready!(Pin::new(task).poll(cx)) {
                    Ok(Ok(response)) => {
                        self.down = Down::Open(Box::new(SyncWrapper::new(response.into_inner())));
                    }
                    Ok(Err(status)) => {
                        self.down = Down::Done;
                        let err = stream_status_error(&status);
                        let errno = err.raw_os_error().unwrap_or(errno::EIO);
                        return Poll::Ready(Err(self.finish_with(errno)));
                    }
                    Err(_) => {
                        self.down = Down::Done;
                        return Poll::Ready(Err(self.finish_with(errno::ECANCELED)));
                    }
                },
                Down::Open(frames) => match ready!(frames.get_mut().poll_next_unpin(cx)) {
                    Some(Ok(v1::StreamDown { frame })) => match frame {
                        Some(stream_down::Frame::Data(data)) => {
                            self.pending = data;
                            self.pos = 0;
                        }
                        Some(stream_down::Frame::Eof(_)) => {
                            self.finished = true;
                            return Poll::Ready(Ok(()));
                        }
                        Some(stream_down::Frame::Error(e)) => {
                            // A zero errno would read as success: call it EIO.
                            let errno = if e.number > 0 { e.number } else { errno::EIO };
                            return Poll::Ready(Err(self.finish_with(errno)));
                        }
                        // A frame kind newer than this client: skip it.
                        None => {}
                    },
                    Some(Err(status)) => {
                        let err = stream_status_error(&status);
                        let errno = err.raw_os_error().unwrap_or(errno::EIO);
                        return Poll::Ready(Err(self.finish_with(errno)));
                    }
                    // The daemon ended the stream without a frame: EOF.
                    None => {
                        self.down = Down::Done;
                        return Poll::Ready(Ok(()));
                    }
                },
            }
        }
    }
}

impl Drop for ReadState {
    fn drop(&mut self) {
        let down = std::mem::replace(&mut self.down, Down::Done);
        if let Ok(mut slot) = self.parked_down.lock() {
            *slot = Some(down);
        }
    }
}

/// A future that completes when the up queue is empty (`true`) or closed
/// (`false`).
type DrainFuture = SyncWrapper<Pin<Box<dyn Future<Output = bool> + Send>>>;

/// State of the writing side.
struct WriteState {
    tx: PollSender<v1::StreamUp>,
    drain: Option<DrainFuture>,
    /// `shutdown_write` has been queued; later writes fail with EPIPE.
    write_shut: bool,
    terminal: Arc<OnceLock<i32>>,
}

impl WriteState {
    /// The error for a write that finds the RPC gone.
    fn closed_error(&self) -> io::Error {
        io::Error::from_raw_os_error(self.terminal.get().copied().unwrap_or(errno::EPIPE))
    }

    fn poll_write_frame(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.write_shut {
            // write(2) after shutdown(SHUT_WR).
            return Poll::Ready(Err(io::Error::from_raw_os_error(errno::EPIPE)));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        // An unfinished flush must not keep its claim on the queue's slots
        // (the semaphore is fair: it would starve this write forever).
        self.drain = None;
        if ready!(self.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(self.closed_error()));
        }
        let mut data = Vec::with_capacity(total.min(MAX_UP_FRAME));
        for b in bufs {
            let room = MAX_UP_FRAME - data.len();
            if room == 0 {
                break;
            }
            data.extend_from_slice(&b[..b.len().min(room)]);
        }
        let n = data.len();
        let frame = v1::StreamUp {
            frame: Some(stream_up::Frame::Data(data)),
        };
        if self.tx.send_item(frame).is_err() {
            return Poll::Ready(Err(self.closed_error()));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Some(drain) = &mut self.drain {
                let drained = ready!(drain.get_mut().as_mut().poll(cx));
                self.drain = None;
                return Poll::Ready(if drained {
                    Ok(())
                } else {
                    Err(self.closed_error())
                });
            }
            // A slot reserved by an abandoned write would never drain.
            self.tx.abort_send();
            let Some(sender) = self.tx.get_ref() else {
                return Poll::Ready(Ok(()));
            };
            if sender.capacity() == sender.max_capacity() {
                return Poll::Ready(Ok(()));
            }
            let sender = sender.clone();
            let drain: Pin<Box<dyn Future<Output = bool> + Send>> = Box::pin(async move {
                // All permits free again means every frame was taken.
                sender.reserve_many(sender.max_capacity()).await.is_ok()
            });
            self.drain = Some(SyncWrapper::new(drain));
        }
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.write_shut {
            self.drain = None;
            if ready!(self.tx.poll_reserve(cx)).is_err() {
                return Poll::Ready(Err(self.closed_error()));
            }
            let frame = v1::StreamUp {
                frame: Some(stream_up::Frame::ShutdownWrite(true)),
            };
            if self.tx.send_item(frame).is_err() {
                return Poll::Ready(Err(self.closed_error()));
            }
            self.write_shut = true;
        }
        self.poll_flush(cx)
    }

    /// Queues `shutdown_write` from a destructor (owned write half).
    fn shutdown_in_background(&mut self) {
        if self.write_shut {
            return;
        }
        self.write_shut = true;
        self.drain = None;
        self.tx.abort_send();
        if let Some(sender) = self.tx.get_ref().cloned() {
            let _ = runtime::spawn(async move {
                let frame = v1::StreamUp {
                    frame: Some(stream_up::Frame::ShutdownWrite(true)),
                };
                let _ = sender.send(frame).await;
            });
        }
    }
}

/// A TCP connection through tcpd, like `tokio::net::TcpStream`.
///
/// Reading and writing go through [`AsyncRead`]/[`AsyncWrite`] (use
/// `tokio::io::AsyncReadExt`/`AsyncWriteExt`). `shutdown()` from
/// `AsyncWriteExt` half-closes (FIN after the queued data). Dropping the
/// stream closes the socket in the background after queued data has been
/// handed to the daemon. Calls that need the daemon's answer
/// ([`local_addr`](Self::local_addr), options) are `async`, unlike tokio's.
///
/// ```no_run
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # async fn demo() -> std::io::Result<()> {
/// let mut stream = tcpd_client::TcpStream::connect("10.0.0.1:7").await?;
/// stream.write_all(b"ping").await?;
/// stream.shutdown().await?; // FIN: the echo server ends its reply
/// let mut reply = Vec::new();
/// stream.read_to_end(&mut reply).await?;
/// assert_eq!(reply, b"ping");
/// # Ok(()) }
/// ```
pub struct TcpStream {
    // Field order is drop order: the read side parks its down stream
    // before the last `Shared` reference starts the close path.
    read: ReadState,
    write: WriteState,
    shared: Arc<Shared>,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl TcpStream {
    /// Opens a connection to `addr` through the process-wide session
    /// ([`Client::shared`]). With several addresses (a host name), each is
    /// tried in turn and the last error is returned.
    pub async fn connect<A: ToSocketAddrsV4>(addr: A) -> io::Result<TcpStream> {
        let targets = addr::resolve(&addr).await?;
        let client = Client::shared().await?;
        TcpStream::connect_any(&client, &targets).await
    }

    /// Tries `targets` in order through `client`.
    pub(crate) async fn connect_any(
        client: &Client,
        targets: &[SocketAddrV4],
    ) -> io::Result<TcpStream> {
        let mut last = io::Error::from_raw_os_error(errno::EINVAL);
        for &target in targets {
            match client.connect_socket(target).await {
                Ok(socket) => return Ok(TcpStream::from_connected(socket, target)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Wraps a connected socket and starts its Stream RPC in the background
    /// (the first read waits for it; writes queue meanwhile).
    pub(crate) fn from_connected(socket: Socket, peer: SocketAddrV4) -> TcpStream {
        let client = socket.client().clone();
        let handle = socket.into_raw_handle();
        let (tx, rx) = mpsc::channel(UP_QUEUE_FRAMES);
        let open = v1::StreamUp {
            frame: Some(stream_up::Frame::Open(handle)),
        };
        // A fresh queue always has room for its first frame.
        let _ = tx.try_send(open);
        let terminal = Arc::new(OnceLock::new());
        let rpc = client.rpc();
        let open_terminal = Arc::clone(&terminal);
        let (opened_tx, opened) = watch::channel(false);
        let down = match runtime::spawn(async move {
            let mut rpc = rpc;
            let result = rpc.stream(ReceiverStream::new(rx)).await;
            if let Err(status) = &result {
                let errno = stream_status_error(status)
                    .raw_os_error()
                    .unwrap_or(errno::EIO);
                let _ = open_terminal.set(errno);
            }
            opened_tx.send_replace(true);
            result
        }) {
            Ok(task) => Down::Opening(task),
            Err(_) => {
                let _ = terminal.set(errno::ENOMEM);
                Down::Done
            }
        };
        let parked_down: ParkedDown = Arc::new(Mutex::new(None));
        let close = ClosePath {
            client: client.clone(),
            handle,
            up: tx.clone(),
            opened,
            parked_down: Arc::clone(&parked_down),
        };
        let shared = Arc::new(Shared {
            client,
            handle,
            peer,
            close: Mutex::new(Some(close)),
        });
        TcpStream {
            shared,
            read: ReadState {
                down,
                finished: false,
                parked_down,
                pending: Vec::new(),
                pos: 0,
                terminal: Arc::clone(&terminal),
            },
            write: WriteState {
                tx: PollSender::new(tx),
                drain: None,
                write_shut: false,
                terminal,
            },
        }
    }

    /// The remote address (known since connect/accept; no call is made).
    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.shared.peer)
    }

    /// The local address (getsockname(2); one call to the daemon).
    pub async fn local_addr(&self) -> io::Result<SocketAddrV4> {
        socket::local_addr(&self.shared.client, self.shared.handle).await
    }

    /// The daemon's handle of this socket.
    pub fn handle(&self) -> u64 {
        self.shared.handle
    }

    /// The session this stream belongs to.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// Sets `TCP_NODELAY` (disables Nagle's algorithm, RFC 9293 §3.7.4).
    pub async fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.set_option(SockOption::NoDelay(nodelay)).await
    }

    /// Reads `TCP_NODELAY`.
    pub async fn nodelay(&self) -> io::Result<bool> {
        match self.option(OptionName::NoDelay).await? {
            SockOption::NoDelay(b) => Ok(b),
            _ => Err(io::Error::from_raw_os_error(crate::sockopt::EPROTO)),
        }
    }

    /// Enables keep-alive probes after `idle` seconds without traffic
    /// (`SO_KEEPALIVE` + `TCP_KEEPIDLE`, RFC 9293 §3.8.4), or disables them.
    pub async fn set_keepalive(&self, idle: Option<Duration>) -> io::Result<()> {
        match idle {
            None => self.set_option(SockOption::KeepAlive(false)).await,
            Some(idle) => {
                // TCP_KEEPIDLE is whole seconds, at least 1.
                let secs = u32::try_from(idle.as_secs()).unwrap_or(u32::MAX).max(1);
                self.set_option(SockOption::KeepIdle(secs)).await?;
                self.set_option(SockOption::KeepAlive(true)).await
            }
        }
    }

    /// Sets `SO_LINGER` (`Some(ZERO)`: close resets the connection).
    pub async fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        let secs = linger.map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        self.set_option(SockOption::Linger(secs)).await
    }

    /// Reads `SO_LINGER`.
    pub async fn linger(&self) -> io::Result<Option<Duration>> {
        match self.option(OptionName::Linger).await? {
            SockOption::Linger(l) => Ok(l.map(|s| Duration::from_secs(u64::from(s)))),
            _ => Err(io::Error::from_raw_os_error(crate::sockopt::EPROTO)),
        }
    }

    /// Reads and clears the pending error (`SO_ERROR`).
    pub async fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self.option(OptionName::Error).await? {
            SockOption::Error(0) => Ok(None),
            SockOption::Error(e) => Ok(Some(io::Error::from_raw_os_error(e))),
            _ => Err(io::Error::from_raw_os_error(crate::sockopt::EPROTO)),
        }
    }

    /// setsockopt(2) with any [`SockOption`].
    pub async fn set_option(&self, option: SockOption) -> io::Result<()> {
        socket::set_option(&self.shared.client, self.shared.handle, option).await
    }

    /// getsockopt(2) for any [`OptionName`].
    pub async fn option(&self, name: OptionName) -> io::Result<SockOption> {
        socket::get_option(&self.shared.client, self.shared.handle, name).await
    }

    /// shutdown(2) with std's [`Shutdown`]. The write direction is a
    /// `shutdown_write` frame queued after the data already written (the
    /// same as `AsyncWriteExt::shutdown`); the read direction is a
    /// `Shutdown` call.
    pub async fn shutdown_with(&mut self, how: Shutdown) -> io::Result<()> {
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            std::future::poll_fn(|cx| self.write.poll_shutdown(cx)).await?;
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            let read_only = v1::ShutdownRequest {
                handle: self.shared.handle,
                how: v1::ShutdownHow::Read as i32,
            };
            self.shared
                .client
                .rpc()
                .shutdown(read_only)
                .await
                .map_err(crate::status_to_io)?;
        }
        Ok(())
    }

    /// Closes the socket and waits for the daemon's answer (dropping the
    /// stream does the same in the background, without reporting errors).
    ///
    /// Data written before is handed to the daemon first, so a graceful
    /// close still delivers it (FIN after the data, RFC 9293 §3.6); unread
    /// received data makes the daemon reset the connection, as Linux does.
    pub async fn close(self) -> io::Result<()> {
        let shared = Arc::clone(&self.shared);
        // Parks the down stream and drops the write side's senders.
        drop(self);
        match shared.take_close_path() {
            Some(path) => path.run().await,
            None => Ok(()),
        }
    }

    /// Borrowed halves, usable concurrently (e.g. in `tokio::join!`).
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        (
            ReadHalf {
                shared: &self.shared,
                read: &mut self.read,
            },
            WriteHalf {
                shared: &self.shared,
                write: &mut self.write,
            },
        )
    }

    /// Owned halves, movable to different tasks. Dropping the write half
    /// half-closes (like tokio's); the socket closes when both are dropped.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let TcpStream {
            shared,
            read,
            write,
        } = self;
        (
            OwnedReadHalf {
                shared: Arc::clone(&shared),
                read,
            },
            OwnedWriteHalf { shared, write },
        )
    }
}

/// The reading half of [`TcpStream::split`].
pub struct ReadHalf<'a> {
    shared: &'a Shared,
    read: &'a mut ReadState,
}

/// The writing half of [`TcpStream::split`].
pub struct WriteHalf<'a> {
    shared: &'a Shared,
    write: &'a mut WriteState,
}

/// The reading half of [`TcpStream::into_split`].
pub struct OwnedReadHalf {
    read: ReadState,
    shared: Arc<Shared>,
}

/// The writing half of [`TcpStream::into_split`]; dropping it queues
/// `shutdown_write` (FIN after the data), as tokio's does.
pub struct OwnedWriteHalf {
    write: WriteState,
    shared: Arc<Shared>,
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        self.write.shutdown_in_background();
    }
}

macro_rules! half_impls {
    ($($half:ty),*) => {$(
        impl fmt::Debug for $half {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($half))
                    .field("handle", &self.shared.handle)
                    .field("peer", &self.shared.peer)
                    .finish_non_exhaustive()
            }
        }

        impl $half {
            /// The remote address.
            pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
                Ok(self.shared.peer)
            }

            /// The local address (one call to the daemon).
            pub async fn local_addr(&self) -> io::Result<SocketAddrV4> {
                socket::local_addr(&self.shared.client, self.shared.handle).await
            }

            /// The daemon's handle of the socket.
            pub fn handle(&self) -> u64 {
                self.shared.handle
            }
        }
    )*};
}

half_impls!(ReadHalf<'_>, WriteHalf<'_>, OwnedReadHalf, OwnedWriteHalf);

macro_rules! read_impls {
    ($($reader:ty),*) => {$(
        impl AsyncRead for $reader {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                self.get_mut().read.poll_read(cx, buf)
            }
        }
    )*};
}

read_impls!(TcpStream, ReadHalf<'_>, OwnedReadHalf);

macro_rules! write_impls {
    ($($half:ty),*) => {$(
        impl AsyncWrite for $half {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                self.get_mut().write.poll_write_frame(cx, &[io::IoSlice::new(buf)])
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.get_mut().write.poll_write_frame(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.get_mut().write.poll_flush(cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.get_mut().write.poll_shutdown(cx)
            }
        }
    )*};
}

write_impls!(TcpStream, WriteHalf<'_>, OwnedWriteHalf);

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn stream_types_are_send_and_sync_like_tokio_s() {
        assert_send_sync::<TcpStream>();
        assert_send_sync::<OwnedReadHalf>();
        assert_send_sync::<OwnedWriteHalf>();
    }

    #[test]
    fn broken_sessions_read_as_resets_and_daemon_errnos_pass_through() {
        let from_daemon = tcpd_proto::errno_status(errno::ETIMEDOUT, "");
        assert_eq!(
            stream_status_error(&from_daemon).raw_os_error(),
            Some(errno::ETIMEDOUT)
        );
        let broken = tonic::Status::unknown("h2 protocol error");
        assert_eq!(
            stream_status_error(&broken).raw_os_error(),
            Some(errno::ECONNRESET)
        );
        let old_daemon = tonic::Status::unimplemented("no Stream");
        assert_eq!(
            stream_status_error(&old_daemon).raw_os_error(),
            Some(errno::EOPNOTSUPP)
        );
    }
}
