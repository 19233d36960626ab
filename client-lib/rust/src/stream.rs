//! [`TcpStream`]: a connected socket whose whole life is one Stream RPC.
//!
//! Framing (see `StreamRequest`/`StreamResponse` in the proto): the stream
//! is opened by connecting or accepting, and the daemon answers `opened`
//! once the socket is connected. After that every `poll_write` becomes one
//! up `data` frame of at most [`MAX_UP_FRAME`] bytes, pushed through a
//! bounded queue of [`UP_QUEUE_FRAMES`] frames into the RPC's request body;
//! `poll_flush` sends `flush` and completes when the daemon answers
//! `flushed` with a count covering every byte written (the data is in the
//! daemon's send buffer); `poll_shutdown` sends `shutdown_write` behind the
//! data and flushes.
//!
//! Down frames are read by a pump task (on the library's runtime) that owns
//! the response stream: data and EOF go to the read side through a bounded
//! queue, `flushed` counts to the write side, and the stream's final status
//! (the connection's error) is recorded for both sides. The pump keeps the
//! response open until the daemon ends it, so a close never cuts data the
//! daemon has not yet taken.
//!
//! Errors as Linux: the connection's error (ECONNRESET...) is reported once,
//! to whichever of read or write comes first; after it reads return 0 and
//! writes EPIPE.
//!
//! Closing (explicit [`TcpStream::close`] or the last drop): a `close` frame
//! carrying the number of bytes the application consumed goes up behind all
//! written data, and the up side ends. The daemon resets the connection
//! when data remained unread (what the daemon handed out exceeds what was
//! consumed, or its own queue is not empty), as Linux does, and finishes
//! the FIN otherwise.

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::StreamExt;
use futures::task::AtomicWaker;
use tcpd_proto::errno;
use tcpd_proto::v2::{self, stream_open, stream_request, stream_response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::PollSender;

use crate::addr::{self, ToSocketAddrsV4};
use crate::sockopt::{OptionName, SockOption};
use crate::transport::status_to_io;
use crate::{Client, runtime};

/// Largest up `data` frame; bigger writes are split (the daemon's down
/// frames use the same 64 KiB bound).
pub const MAX_UP_FRAME: usize = 64 * 1024;

/// Frames the client queues ahead of the gRPC request body. With
/// [`MAX_UP_FRAME`] this bounds client-side buffering to 1 MiB per stream,
/// on top of the HTTP/2 window.
pub const UP_QUEUE_FRAMES: usize = 16;

/// Down items queued between the pump and the read side.
const DOWN_QUEUE: usize = 4;

/// What the pump hands the read side.
enum DownItem {
    Data(Vec<u8>),
    Eof,
}

/// The connection's error, reported once (to read or write, whichever
/// comes first), as Linux's `sk_err`.
#[derive(Debug, Default)]
struct Terminal {
    /// The errno, once the daemon reported one.
    errno: Mutex<Option<i32>>,
    /// Whether it has been reported to the application.
    reported: AtomicBool,
}

impl Terminal {
    fn set(&self, e: i32) {
        if let Ok(mut slot) = self.errno.lock()
            && slot.is_none()
        {
            *slot = Some(e);
        }
    }

    /// The pending error, consumed by this call.
    fn take(&self) -> Option<io::Error> {
        let e = self.errno.lock().ok().and_then(|slot| *slot)?;
        if self.reported.swap(true, Ordering::SeqCst) {
            None
        } else {
            Some(io::Error::from_raw_os_error(e))
        }
    }

    fn failed(&self) -> bool {
        self.errno.lock().ok().is_some_and(|slot| slot.is_some())
    }
}

/// What the pump tells the write side (and `close`).
#[derive(Debug, Default)]
struct Flushed {
    /// The daemon's latest `flushed` count.
    count: AtomicU64,
    /// Bytes the write side has queued (what a flush waits for).
    written: AtomicU64,
    /// The write side's last `poll_flush` returned `Pending`.
    waiting: AtomicBool,
    /// The response stream has ended.
    done: AtomicBool,
    waker: AtomicWaker,
}

impl Flushed {
    fn update(&self, count: u64) {
        self.count.store(count, Ordering::SeqCst);
        self.waker.wake();
    }

    fn finish(&self) {
        self.done.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// A flush the writer waits for is already complete but not yet
    /// reported to it: the daemon said `flushed` before this end of stream,
    /// so the application must see the flush finish first.
    fn completion_unreported(&self) -> bool {
        self.waiting.load(Ordering::SeqCst)
            && self.count.load(Ordering::SeqCst) >= self.written.load(Ordering::SeqCst)
    }
}

/// How many times in a row the read side holds back the end of the stream
/// for an unreported flush (see [`ReadState::hold_end`]); bounds the wait
/// when the writer stopped polling its flush.
const END_HOLD_LIMIT: u32 = 16;

/// What the halves share; dropping the last one closes the socket.
struct Shared {
    client: Client,
    handle: u64,
    local: SocketAddrV4,
    peer: SocketAddrV4,
    /// Bytes handed to the application by reads.
    consumed: AtomicU64,
    /// Send RST instead of FIN on close (SO_LINGER 0 was set).
    abort: AtomicBool,
    terminal: Arc<Terminal>,
    /// Kept for the close frame; the up side ends when this is dropped.
    up: Mutex<Option<mpsc::Sender<v2::StreamRequest>>>,
}

impl Shared {
    /// Sends `close` (once) behind everything written; the daemon then
    /// closes the socket and ends the stream.
    fn close(&self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let up = self.up.lock().ok()?.take()?;
        let frame = v2::StreamRequest {
            frame: Some(stream_request::Frame::Close(v2::StreamClose {
                consumed: self.consumed.load(Ordering::SeqCst),
                abort: self.abort.load(Ordering::SeqCst),
            })),
        };
        Some(async move {
            let _ = up.send(frame).await;
        })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(close) = self.close() {
            // Without a runtime the session's end closes the socket instead.
            let _ = runtime::spawn(close);
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("handle", &self.handle)
            .field("local", &self.local)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// State of the reading side.
struct ReadState {
    rx: mpsc::Receiver<DownItem>,
    pending: Vec<u8>,
    pos: usize,
    /// EOF was delivered (or the error was): reads return 0.
    finished: bool,
    /// The end (EOF or the connection's error) has arrived, not yet reported.
    end: Option<Option<io::Error>>,
    /// Consecutive polls that held the end back.
    held: u32,
    flushed: Arc<Flushed>,
    shared: Arc<Shared>,
}

impl ReadState {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.pos < self.pending.len() {
                let n = buf.remaining().min(self.pending.len() - self.pos);
                buf.put_slice(&self.pending[self.pos..self.pos + n]);
                self.pos += n;
                self.shared.consumed.fetch_add(n as u64, Ordering::SeqCst);
                return Poll::Ready(Ok(()));
            }
            if self.finished {
                return Poll::Ready(Ok(()));
            }
            if self.end.is_some() {
                if self.hold_end(cx) {
                    return Poll::Pending;
                }
                self.finished = true;
                return Poll::Ready(match self.end.take().flatten() {
                    Some(e) => Err(e),
                    None => Ok(()),
                });
            }
            match ready!(self.rx.poll_recv(cx)) {
                Some(DownItem::Data(data)) => {
                    self.pending = data;
                    self.pos = 0;
                }
                Some(DownItem::Eof) => self.end = Some(None),
                // The stream ended: with an error (reported once), or after close.
                None => self.end = Some(self.shared.terminal.take()),
            }
        }
    }

    /// Whether to hold the end of the stream back for now. The daemon
    /// answered a flush before this end arrived; an application that polls
    /// reads before flushes (hyper does) would otherwise see the peer's EOF
    /// while its response still looks unflushed, and call the connection
    /// closed mid-message — with a kernel socket the flush had completed
    /// long before. So the read waits (waking itself) until the writer has
    /// seen its flush complete, at most [`END_HOLD_LIMIT`] times in a row.
    fn hold_end(&mut self, cx: &mut Context<'_>) -> bool {
        if self.held < END_HOLD_LIMIT && self.flushed.completion_unreported() {
            self.held += 1;
            cx.waker().wake_by_ref();
            return true;
        }
        self.held = 0;
        false
    }

    /// Whether a read would not wait (data, EOF or an error is pending).
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pos < self.pending.len() || self.finished || self.end.is_some() {
            return Poll::Ready(Ok(()));
        }
        match ready!(self.rx.poll_recv(cx)) {
            Some(DownItem::Data(data)) => {
                self.pending = data;
                self.pos = 0;
            }
            Some(DownItem::Eof) => self.end = Some(None),
            None => self.end = Some(self.shared.terminal.take()),
        }
        Poll::Ready(Ok(()))
    }
}

/// State of the writing side.
struct WriteState {
    tx: PollSender<v2::StreamRequest>,
    /// Bytes queued up so far.
    written: u64,
    /// The daemon's `flushed` count.
    flushed: Arc<Flushed>,
    /// The `written` count a `flush` frame was sent for.
    flush_requested: u64,
    /// `shutdown_write` has been queued; later writes fail with EPIPE.
    write_shut: bool,
    shared: Arc<Shared>,
}

impl WriteState {
    /// The error for a write that finds the stream gone: the connection's
    /// error once, EPIPE after.
    fn closed_error(&self) -> io::Error {
        self.shared
            .terminal
            .take()
            .unwrap_or_else(|| io::Error::from_raw_os_error(errno::EPIPE))
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        frame: v2::StreamRequest,
    ) -> Poll<io::Result<()>> {
        if ready!(self.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(self.closed_error()));
        }
        if self.tx.send_item(frame).is_err() {
            return Poll::Ready(Err(self.closed_error()));
        }
        Poll::Ready(Ok(()))
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
        if self.shared.terminal.failed() {
            return Poll::Ready(Err(self.closed_error()));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
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
        let frame = v2::StreamRequest {
            frame: Some(stream_request::Frame::Data(data)),
        };
        if self.tx.send_item(frame).is_err() {
            return Poll::Ready(Err(self.closed_error()));
        }
        self.written += n as u64;
        self.flushed.written.store(self.written, Ordering::SeqCst);
        Poll::Ready(Ok(n))
    }

    /// Completes when every byte written is in the daemon's send buffer.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = self.poll_flush_inner(cx);
        self.flushed
            .waiting
            .store(result.is_pending(), Ordering::SeqCst);
        result
    }

    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.flushed.count.load(Ordering::SeqCst) >= self.written {
            return Poll::Ready(Ok(()));
        }
        if self.flush_requested < self.written {
            let frame = v2::StreamRequest {
                frame: Some(stream_request::Frame::Flush(true)),
            };
            ready!(self.poll_send(cx, frame))?;
            self.flush_requested = self.written;
        }
        self.flushed.waker.register(cx.waker());
        if self.flushed.count.load(Ordering::SeqCst) >= self.written {
            return Poll::Ready(Ok(()));
        }
        if self.flushed.done.load(Ordering::SeqCst) {
            return Poll::Ready(Err(self.closed_error()));
        }
        Poll::Pending
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.write_shut {
            let frame = v2::StreamRequest {
                frame: Some(stream_request::Frame::ShutdownWrite(true)),
            };
            ready!(self.poll_send(cx, frame))?;
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
        self.tx.abort_send();
        if let Some(sender) = self.tx.get_ref().cloned() {
            let _ = runtime::spawn(async move {
                let frame = v2::StreamRequest {
                    frame: Some(stream_request::Frame::ShutdownWrite(true)),
                };
                let _ = sender.send(frame).await;
            });
        }
    }
}

/// Reads the response stream to its end: data to the read side, `flushed`
/// to the write side, the final error to both.
async fn pump(
    mut frames: tonic::Streaming<v2::StreamResponse>,
    data: mpsc::Sender<DownItem>,
    flushed: Arc<Flushed>,
    terminal: Arc<Terminal>,
) {
    // Once the read side is gone, data is dropped (the close frame tells
    // the daemon how much was consumed).
    let mut reader = Some(data);
    while let Some(frame) = frames.next().await {
        match frame {
            Ok(v2::StreamResponse { frame: Some(frame) }) => match frame {
                stream_response::Frame::Data(bytes) => {
                    if let Some(tx) = &reader
                        && tx.send(DownItem::Data(bytes)).await.is_err()
                    {
                        reader = None;
                    }
                }
                stream_response::Frame::Eof(_) => {
                    if let Some(tx) = reader.take() {
                        let _ = tx.send(DownItem::Eof).await;
                    }
                }
                stream_response::Frame::Flushed(n) => flushed.update(n),
                stream_response::Frame::Opened(_) => {}
            },
            // A frame kind newer than this client: skip it.
            Ok(v2::StreamResponse { frame: None }) => {}
            Err(status) => {
                let err = status_to_io(status);
                terminal.set(err.raw_os_error().unwrap_or(errno::ECONNABORTED));
                break;
            }
        }
    }
    // Dropping `reader` wakes the read side.
    flushed.finish();
}

/// A TCP connection through tcpd, like `tokio::net::TcpStream`.
///
/// Reading and writing go through [`AsyncRead`]/[`AsyncWrite`] (use
/// `tokio::io::AsyncReadExt`/`AsyncWriteExt`). `flush()` completes when the
/// written data is in the daemon's send buffer; `shutdown()` half-closes
/// (FIN after the queued data). Dropping the stream closes the socket:
/// FIN after the written data, or RST when received data was left unread
/// (as Linux does).
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
    read: ReadState,
    write: WriteState,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.read.shared.fmt(f)
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
            let connect = v2::StreamConnect {
                remote: Some(target.into()),
                ..Default::default()
            };
            match TcpStream::open(client, stream_open::How::Connect(connect)).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Opens the Stream RPC (connect or accept) and waits for `opened`.
    pub(crate) async fn open(client: &Client, how: stream_open::How) -> io::Result<TcpStream> {
        let (tx, rx) = mpsc::channel(UP_QUEUE_FRAMES);
        let open = v2::StreamRequest {
            frame: Some(stream_request::Frame::Open(v2::StreamOpen {
                how: Some(how),
            })),
        };
        // A fresh queue always has room for its first frame.
        let _ = tx.try_send(open);
        let mut rpc = client.rpc();
        let terminal = Arc::new(Terminal::default());
        let (data_tx, data_rx) = mpsc::channel(DOWN_QUEUE);
        let flushed = Arc::new(Flushed::default());
        let flushed_tx = Arc::clone(&flushed);
        let pump_terminal = Arc::clone(&terminal);
        // The RPC and its pump run on the library's runtime: they outlive
        // the caller's runtime and keep the close path alive after a drop.
        let opened = runtime::run(async move {
            let mut frames = rpc
                .stream(ReceiverStream::new(rx))
                .await
                .map_err(status_to_io)?
                .into_inner();
            let opened = match frames.next().await {
                Some(Ok(v2::StreamResponse {
                    frame: Some(stream_response::Frame::Opened(o)),
                })) => o,
                Some(Err(status)) => return Err(status_to_io(status)),
                _ => return Err(io::Error::from_raw_os_error(errno::EPROTO)),
            };
            tokio::spawn(pump(frames, data_tx, flushed_tx, pump_terminal));
            Ok(opened)
        })
        .await??;
        let addr = |a: Option<v2::SocketAddress>| match a.map(|a| a.to_std()) {
            Some(Ok(std::net::SocketAddr::V4(a))) => Ok(a),
            _ => Err(io::Error::from_raw_os_error(errno::EPROTO)),
        };
        let shared = Arc::new(Shared {
            client: client.clone(),
            handle: opened.handle,
            local: addr(opened.local)?,
            peer: addr(opened.peer)?,
            consumed: AtomicU64::new(0),
            abort: AtomicBool::new(false),
            terminal,
            up: Mutex::new(Some(tx.clone())),
        });
        Ok(TcpStream {
            read: ReadState {
                rx: data_rx,
                pending: Vec::new(),
                pos: 0,
                finished: false,
                end: None,
                held: 0,
                flushed: Arc::clone(&flushed),
                shared: Arc::clone(&shared),
            },
            write: WriteState {
                tx: PollSender::new(tx),
                written: 0,
                flushed,
                flush_requested: 0,
                write_shut: false,
                shared,
            },
        })
    }

    fn shared(&self) -> &Shared {
        &self.read.shared
    }

    /// The remote address (from the connection's opening).
    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.shared().peer)
    }

    /// The local address (from the connection's opening).
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.shared().local)
    }

    /// The daemon's handle of this socket.
    pub fn handle(&self) -> u64 {
        self.shared().handle
    }

    /// The session this stream belongs to.
    pub fn client(&self) -> &Client {
        &self.shared().client
    }

    /// TCP_NODELAY (disable Nagle's algorithm).
    pub async fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.set_option(SockOption::NoDelay(nodelay)).await
    }

    /// Whether TCP_NODELAY is set.
    pub async fn nodelay(&self) -> io::Result<bool> {
        match self.option(OptionName::NoDelay).await? {
            SockOption::NoDelay(b) => Ok(b),
            _ => Err(io::Error::from_raw_os_error(errno::EPROTO)),
        }
    }

    /// SO_KEEPALIVE with TCP_KEEPIDLE `idle`; `None` turns keepalive off.
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
        self.shared()
            .abort
            .store(linger == Some(Duration::ZERO), Ordering::SeqCst);
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

    /// setsockopt(2).
    pub async fn set_option(&self, option: SockOption) -> io::Result<()> {
        crate::socket::set_option(self.client(), self.handle(), option).await
    }

    /// getsockopt(2).
    pub async fn option(&self, name: OptionName) -> io::Result<SockOption> {
        crate::socket::get_option(self.client(), self.handle(), name).await
    }

    /// shutdown(2): `Write` sends FIN after the queued data; `Read` and
    /// `Both` also stop the receive side.
    pub async fn shutdown_with(&mut self, how: Shutdown) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.shutdown().await?;
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            let frame = v2::StreamRequest {
                frame: Some(stream_request::Frame::ShutdownRead(true)),
            };
            futures::future::poll_fn(|cx| self.write.poll_send(cx, frame.clone())).await?;
        }
        Ok(())
    }

    /// Waits until a read would not block (data, EOF or an error).
    pub async fn readable(&mut self) -> io::Result<()> {
        futures::future::poll_fn(|cx| self.read.poll_read_ready(cx)).await
    }

    /// Closes the socket: FIN after the written data, RST if received data
    /// was left unread. Returns once the daemon has taken the close (its
    /// queued data continues in the background, as with close(2)).
    pub async fn close(self) -> io::Result<()> {
        let TcpStream { read, write } = self;
        let ended = Arc::clone(&write.flushed);
        let shared = Arc::clone(&read.shared);
        drop(read);
        drop(write);
        if let Some(close) = shared.close() {
            close.await;
        }
        drop(shared);
        // The pump drops its side when the daemon ends the stream, which it
        // does once the socket is closed.
        futures::future::poll_fn(|cx| {
            ended.waker.register(cx.waker());
            if ended.done.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        Ok(())
    }

    /// Borrowed halves, usable concurrently (like `tokio::net::TcpStream::split`).
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        (ReadHalf(&mut self.read), WriteHalf(&mut self.write))
    }

    /// Owned halves; the socket closes when both are dropped.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let TcpStream { read, write } = self;
        (
            OwnedReadHalf { read },
            OwnedWriteHalf { write: Some(write) },
        )
    }
}

/// The read half of [`TcpStream::split`].
pub struct ReadHalf<'a>(&'a mut ReadState);

/// The write half of [`TcpStream::split`].
pub struct WriteHalf<'a>(&'a mut WriteState);

impl fmt::Debug for ReadHalf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.shared.fmt(f)
    }
}

impl fmt::Debug for WriteHalf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.shared.fmt(f)
    }
}

/// The read half of [`TcpStream::into_split`].
pub struct OwnedReadHalf {
    read: ReadState,
}

/// The write half of [`TcpStream::into_split`]. Dropping it half-closes
/// (FIN after the queued data), as tokio's does.
pub struct OwnedWriteHalf {
    /// `None` only after [`OwnedReadHalf::reunite`] took it.
    write: Option<WriteState>,
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        if let Some(write) = &mut self.write {
            write.shutdown_in_background();
        }
    }
}

impl fmt::Debug for OwnedReadHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.read.shared.fmt(f)
    }
}

impl fmt::Debug for OwnedWriteHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedWriteHalf").finish_non_exhaustive()
    }
}

impl OwnedWriteHalf {
    fn state(&mut self) -> io::Result<&mut WriteState> {
        self.write
            .as_mut()
            .ok_or_else(|| io::Error::from_raw_os_error(errno::EBADF))
    }

    fn shared(&self) -> Option<&Shared> {
        self.write.as_ref().map(|w| &*w.shared)
    }
}

impl OwnedReadHalf {
    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.read.shared.peer)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.read.shared.local)
    }

    /// The daemon's handle of this socket.
    pub fn handle(&self) -> u64 {
        self.read.shared.handle
    }

    /// Puts the halves back together (`tokio`'s `reunite`); fails if they
    /// come from different streams.
    #[allow(clippy::result_large_err)] // tokio's signature: the halves come back by value.
    pub fn reunite(self, mut other: OwnedWriteHalf) -> Result<TcpStream, ReuniteError> {
        let same = other
            .write
            .as_ref()
            .is_some_and(|w| Arc::ptr_eq(&self.read.shared, &w.shared));
        match other.write.take() {
            Some(write) if same => Ok(TcpStream {
                read: self.read,
                write,
            }),
            write => {
                other.write = write;
                Err(ReuniteError(self, other))
            }
        }
    }
}

/// The halves given to [`OwnedReadHalf::reunite`] were not of one stream.
#[derive(Debug)]
pub struct ReuniteError(pub OwnedReadHalf, pub OwnedWriteHalf);

impl fmt::Display for ReuniteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tried to reunite halves that are not from the same socket")
    }
}

impl std::error::Error for ReuniteError {}

impl OwnedWriteHalf {
    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        self.shared()
            .map(|s| s.peer)
            .ok_or_else(|| io::Error::from_raw_os_error(errno::EBADF))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        self.shared()
            .map(|s| s.local)
            .ok_or_else(|| io::Error::from_raw_os_error(errno::EBADF))
    }

    /// The daemon's handle of this socket.
    pub fn handle(&self) -> u64 {
        self.shared().map_or(0, |s| s.handle)
    }
}

/// `AsyncRead` for a type whose read state `$state` (an expression over
/// `$this: &mut Self`) is reached through it.
macro_rules! async_read_via {
    ($ty:ty, |$this:ident| $state:expr) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                let $this = self.get_mut();
                $state.poll_read(cx, buf)
            }
        }
    };
}

/// `AsyncWrite` for a type whose write state `$state` (an expression over
/// `$this: &mut Self`, possibly failing with `?`) is reached through it.
macro_rules! async_write_via {
    ($ty:ty, |$this:ident| $state:expr) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let $this = self.get_mut();
                $state.poll_write_frame(cx, &[io::IoSlice::new(buf)])
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                let $this = self.get_mut();
                $state.poll_write_frame(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let $this = self.get_mut();
                $state.poll_flush(cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let $this = self.get_mut();
                $state.poll_shutdown(cx)
            }
        }
    };
}

async_read_via!(TcpStream, |this| this.read);
async_write_via!(TcpStream, |this| this.write);
async_read_via!(ReadHalf<'_>, |this| this.0);
async_write_via!(WriteHalf<'_>, |this| this.0);
async_read_via!(OwnedReadHalf, |this| this.read);
async_write_via!(OwnedWriteHalf, |this| this.state()?);
