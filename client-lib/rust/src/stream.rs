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
//! Socket options set through the sync setters (`set_nodelay`, `set_linger`,
//! `set_keepalive`) travel as `set_option` frames on the same stream, so
//! they apply after every byte written before the call and before every
//! byte written after it, as setsockopt(2) between two write(2)s. They are
//! fire and forget: the value is checked here (against the shared
//! `tcpd_types` ranges) and cached for the getters. When the up queue is
//! full the frame waits in [`Up::control`], which every later frame
//! (data, flush, shutdown, close) drains first.
//!
//! Closing (explicit [`TcpStream::close`] or the last drop): a `close` frame
//! carrying the number of bytes the application consumed goes up behind all
//! written data, and the up side ends. The daemon resets the connection
//! when data remained unread (what the daemon handed out exceeds what was
//! consumed, or its own queue is not empty), as Linux does, and finishes
//! the FIN otherwise.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::task::AtomicWaker;
use tcpd_proto::errno;
use tcpd_proto::v2::{self, stream_open, stream_request, stream_response};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf, Ready};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::addr::{self, ToSocketAddrs};
use crate::down::{self, DownFrames};
use crate::sockopt::{OptionName, SendFlags, SockOption, TcpInfo};
use crate::{Client, busy_poll, runtime};
use tcpd_proto::stream_data::DownPart;

/// Largest up `data` frame; bigger writes are split (the daemon's down
/// frames use the same 64 KiB bound).
pub const MAX_UP_FRAME: usize = 64 * 1024;

/// Frames the client queues ahead of the gRPC request body. With
/// [`MAX_UP_FRAME`] this bounds client-side buffering to 1 MiB per stream,
/// on top of the HTTP/2 window.
pub const UP_QUEUE_FRAMES: usize = 16;

/// Down items queued between the pump and the read side.
const DOWN_QUEUE: usize = 4;

/// Most bytes the pump reads past a full read side while a flush waits for
/// the daemon's `flushed` answer, which travels behind the received data on
/// the socket's one Stream. Once the answer is due, the daemon sends it
/// before any data it has not yet sent, so it is behind at most the HTTP/2
/// stream window (1 MiB) and the down queue. But the answer is due only
/// when the peer has taken the written bytes into the daemon's send
/// buffer, and a slowly reading peer can meanwhile send more than this:
/// then the flush completes without its answer, as a kernel socket's flush
/// (which never waits) does, instead of waiting for the application to
/// read what it will read only after the flush.
const FLUSH_READ_AHEAD: usize = 4 << 20;

/// What the pump hands the read side.
enum DownItem {
    Data(Bytes),
    Eof,
}

/// The connection's error, reported once (to read or write, whichever
/// comes first), as Linux's `sk_err` — or the error of losing the daemon,
/// which names it (never disguised as a network errno).
#[derive(Debug, Default)]
struct Terminal {
    /// The error, until reported.
    error: Mutex<Option<io::Error>>,
    /// An error has been set (it may have been reported since).
    failed: AtomicBool,
    /// Whether it has been reported to the application.
    reported: AtomicBool,
}

impl Terminal {
    fn set(&self, e: io::Error) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.failed.swap(true, Ordering::SeqCst) {
            *slot = Some(e);
        }
    }

    /// The pending error, consumed by this call.
    fn take(&self) -> Option<io::Error> {
        if !self.failed.load(Ordering::SeqCst) || self.reported.swap(true, Ordering::SeqCst) {
            return None;
        }
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
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
    /// The pump holds [`FLUSH_READ_AHEAD`] bytes the application has not
    /// read: a flush's answer behind more received data would wait for
    /// the application to read, so flushes complete without it.
    read_ahead_full: AtomicBool,
    waker: AtomicWaker,
    /// Wakes the pump when a flush starts waiting (it may have to read
    /// past a full read side to find the answer).
    pump: tokio::sync::Notify,
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

    /// Notes how much the pump holds unread (see [`Flushed::read_ahead_full`]).
    fn note_read_ahead(&self, bytes: usize) {
        let full = bytes >= FLUSH_READ_AHEAD;
        if self.read_ahead_full.swap(full, Ordering::SeqCst) != full && full {
            self.waker.wake();
        }
    }

    /// A flush waits for an answer the pump has not seen yet.
    fn awaiting_answer(&self) -> bool {
        self.waiting.load(Ordering::SeqCst)
            && self.count.load(Ordering::SeqCst) < self.written.load(Ordering::SeqCst)
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

/// IP_TTL of a socket whose TTL was not set (Linux's default, 64).
pub const DEFAULT_TTL: u32 = 64;

/// The `set_ttl` of tcpd's types: the `IP_TTL` option for `ttl`, which must
/// be 1..=255 (`EINVAL` otherwise, as Linux's `ip_setsockopt`).
pub(crate) fn check_ttl(ttl: u32) -> io::Result<SockOption> {
    match i32::try_from(ttl) {
        Ok(ttl @ 1..=255) => Ok(SockOption::IpTtl(ttl)),
        _ => Err(io::Error::from_raw_os_error(errno::EINVAL)),
    }
}

/// Options cached on this side for the sync getters, as set through this
/// library (or inherited from the listener or [`crate::TcpSocket`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cached {
    pub(crate) nodelay: bool,
    pub(crate) linger: Option<Duration>,
    /// `IP_TTL` if set (`None`: the default).
    pub(crate) ttl: Option<u8>,
}

impl Cached {
    /// Folds an option being set into the cache.
    pub(crate) fn note(&mut self, option: &SockOption) {
        match option {
            SockOption::NoDelay(on) => self.nodelay = *on,
            SockOption::Linger(l) => self.linger = l.map(|s| Duration::from_secs(u64::from(s))),
            SockOption::IpTtl(ttl) => self.ttl = u8::try_from(*ttl).ok().filter(|&t| t > 0),
            _ => {}
        }
    }

    /// `IP_TTL` as getsockopt reports it.
    pub(crate) fn ttl(&self) -> u32 {
        self.ttl.map_or(DEFAULT_TTL, u32::from)
    }
}

/// The up direction's sender, shared by the writer, the sync setters and
/// close.
#[derive(Default)]
struct Up {
    /// `None` once close took it; the up side ends when the writer's
    /// sender is gone too.
    sender: Option<mpsc::Sender<v2::StreamRequest>>,
    /// Control frames that found the queue full: sent, in order, before
    /// any frame queued after them (see the module docs).
    control: VecDeque<v2::StreamRequest>,
}

/// What the stream and its halves share; dropping the last one closes the
/// socket.
struct Shared {
    client: Client,
    handle: u64,
    local: SocketAddr,
    peer: SocketAddr,
    /// Bytes handed to the application by reads.
    consumed: AtomicU64,
    /// Send RST instead of FIN on close (SO_LINGER 0 was set).
    abort: AtomicBool,
    cached: Mutex<Cached>,
    terminal: Arc<Terminal>,
    /// Shared with the control-frame helper task (through a `Weak`).
    up: Arc<Mutex<Up>>,
    /// Data was written since the read side last received something: a
    /// read that finds nothing waits for an answer, and busy-polls for it
    /// (see `busy_poll`; a read with nothing written before it, as on an
    /// idle connection, never spins).
    answer_due: AtomicBool,
    /// The read side's task while a read waits: woken when data is written
    /// (an answer becomes due), so a read polled before the write in the
    /// same task (hyper polls its read first) starts busy-polling.
    read_waiting: AtomicWaker,
}

impl Shared {
    /// Data was just written: an answer is due (see `answer_due`).
    /// Nothing to do with busy-polling off (the default): no read spins,
    /// so a write need not wake the reading task.
    fn note_written(&self) {
        if self.client.busy_poll().is_zero() {
            return;
        }
        if !self.answer_due.swap(true, Ordering::Relaxed) {
            self.read_waiting.wake();
        }
    }
}

/// Locks `m`, ignoring poisoning (no code panics while holding these locks;
/// if one did, the data is still consistent: plain fields, no invariants
/// spanning an unwind).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Sends `close` (once) behind everything written and every control
    /// frame; the daemon then closes the socket and ends the stream.
    fn close(&self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let (up, control) = {
            let mut up = lock(&self.up);
            let sender = up.sender.take()?;
            (sender, std::mem::take(&mut up.control))
        };
        let frame = v2::StreamRequest {
            frame: Some(stream_request::Frame::Close(v2::StreamClose {
                consumed: self.consumed.load(Ordering::SeqCst),
                abort: self.abort.load(Ordering::SeqCst),
            })),
        };
        Some(async move {
            for f in control {
                if up.send(f).await.is_err() {
                    return;
                }
            }
            let _ = up.send(frame).await;
        })
    }

    /// setsockopt(2) in order with the data: queued at once when there is
    /// room, else behind the control frames already waiting (a helper task
    /// sends them as room appears, unless a writer does first).
    fn set_in_stream(&self, option: SockOption) {
        lock(&self.cached).note(&option);
        if let SockOption::Linger(l) = option {
            self.abort.store(l == Some(0), Ordering::SeqCst);
        }
        let frame = v2::StreamRequest {
            frame: Some(stream_request::Frame::SetOption(v2::OptionSetting {
                option: crate::sockopt::wire_name(option.name()),
                value: Some(option.to_wire()),
            })),
        };
        let mut up = lock(&self.up);
        let Some(sender) = up.sender.clone() else {
            // Closing: the option no longer matters.
            return;
        };
        if up.control.is_empty() {
            match sender.try_send(frame) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(frame)) => up.control.push_back(frame),
            }
        } else {
            up.control.push_back(frame);
            // A helper is already draining.
            return;
        }
        drop(up);
        spawn_control_drain(sender, Arc::downgrade(&self.up));
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(close) = self.close() {
            // Without a runtime the session's end closes the socket instead.
            let _ = self.client.home().spawn(close);
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
    pending: Bytes,
    pos: usize,
    /// EOF was delivered (or the error was): reads return 0.
    finished: bool,
    /// The end (EOF or the connection's error) has arrived, not yet reported.
    end: Option<Option<io::Error>>,
    /// Consecutive polls that held the end back.
    held: u32,
    flushed: Arc<Flushed>,
    /// The busy-poll of a read waiting for an answer.
    spin: busy_poll::Spin,
}

impl ReadState {
    fn poll_read(
        &mut self,
        shared: &Shared,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.pos < self.pending.len() {
                let n = buf.remaining().min(self.pending.len() - self.pos);
                buf.put_slice(&self.pending[self.pos..self.pos + n]);
                self.pos += n;
                shared.consumed.fetch_add(n as u64, Ordering::SeqCst);
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
            let item = match self.rx.poll_recv(cx) {
                Poll::Ready(item) => item,
                Poll::Pending => {
                    self.busy_poll(shared, cx);
                    return Poll::Pending;
                }
            };
            self.take_item(shared, item);
        }
    }

    /// A read found nothing: busy-polls while an answer to written data is
    /// due, for at most the session's window per answer (see `busy_poll`).
    fn busy_poll(&mut self, shared: &Shared, cx: &mut Context<'_>) {
        if shared.client.busy_poll().is_zero() {
            return;
        }
        shared.read_waiting.register(cx.waker());
        if shared.answer_due.load(Ordering::Relaxed)
            && !self.spin.pending(shared.client.busy_poll_policy(), cx)
        {
            // The window is over: wait plainly until the next write.
            shared.answer_due.store(false, Ordering::Relaxed);
            self.spin.reset();
        }
    }

    /// Stores what the pump handed over (`None`: the stream ended).
    fn take_item(&mut self, shared: &Shared, item: Option<DownItem>) {
        shared.answer_due.store(false, Ordering::Relaxed);
        self.spin.reset();
        match item {
            Some(DownItem::Data(data)) => {
                self.pending = data;
                self.pos = 0;
            }
            Some(DownItem::Eof) => self.end = Some(None),
            // The stream ended: with an error (reported once), or after close.
            None => self.end = Some(shared.terminal.take()),
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
    fn poll_read_ready(&mut self, shared: &Shared, cx: &mut Context<'_>) -> Poll<()> {
        if !self.is_ready() {
            let item = ready!(self.rx.poll_recv(cx));
            self.take_item(shared, item);
        }
        Poll::Ready(())
    }

    fn is_ready(&self) -> bool {
        self.pos < self.pending.len() || self.finished || self.end.is_some()
    }

    /// The read side has seen the end (EOF or error).
    fn is_closed(&self) -> bool {
        self.pos >= self.pending.len() && (self.finished || self.end.is_some())
    }

    /// Copies pending data without consuming it (MSG_PEEK); 0 at EOF. An
    /// error ending the stream is reported (once) by peek too, as Linux's
    /// `recv(MSG_PEEK)` reports and clears `sk_err`.
    fn poll_peek(
        &mut self,
        shared: &Shared,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_read_ready(shared, cx));
        if self.pos < self.pending.len() {
            let n = buf.remaining().min(self.pending.len() - self.pos);
            buf.put_slice(&self.pending[self.pos..self.pos + n]);
            return Poll::Ready(Ok(n));
        }
        if let Some(Some(_)) = &self.end {
            self.finished = true;
            if let Some(Some(e)) = self.end.take() {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(0))
    }

    /// A read that never waits: `WouldBlock` when nothing is pending.
    fn try_read(&mut self, shared: &Shared, buf: &mut ReadBuf<'_>) -> io::Result<()> {
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_read(shared, &mut cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
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
}

impl WriteState {
    /// The error for a write that finds the stream gone: the connection's
    /// error once, EPIPE after.
    fn closed_error(shared: &Shared) -> io::Error {
        shared
            .terminal
            .take()
            .unwrap_or_else(|| io::Error::from_raw_os_error(errno::EPIPE))
    }

    /// Reserves room for one frame, first sending the control frames that
    /// wait (they go before anything queued after them).
    fn poll_room(&mut self, shared: &Shared, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if ready!(self.tx.poll_reserve(cx)).is_err() {
                return Poll::Ready(Err(WriteState::closed_error(shared)));
            }
            let next = lock(&shared.up).control.pop_front();
            match next {
                Some(frame) => {
                    if self.tx.send_item(frame).is_err() {
                        return Poll::Ready(Err(WriteState::closed_error(shared)));
                    }
                }
                None => return Poll::Ready(Ok(())),
            }
        }
    }

    fn poll_send(
        &mut self,
        shared: &Shared,
        cx: &mut Context<'_>,
        frame: v2::StreamRequest,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_room(shared, cx))?;
        if self.tx.send_item(frame).is_err() {
            return Poll::Ready(Err(WriteState::closed_error(shared)));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_frame(
        &mut self,
        shared: &Shared,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_frame_with(shared, cx, bufs, SendFlags::empty())
    }

    /// A data frame; with send(2) flags, a `write` frame carrying them.
    fn poll_write_frame_with(
        &mut self,
        shared: &Shared,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
        flags: SendFlags,
    ) -> Poll<io::Result<usize>> {
        if self.write_shut {
            // write(2) after shutdown(SHUT_WR).
            return Poll::Ready(Err(io::Error::from_raw_os_error(errno::EPIPE)));
        }
        if shared.terminal.failed() {
            return Poll::Ready(Err(WriteState::closed_error(shared)));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        ready!(self.poll_room(shared, cx))?;
        let mut data = Vec::with_capacity(total.min(MAX_UP_FRAME));
        for b in bufs {
            let room = MAX_UP_FRAME - data.len();
            if room == 0 {
                break;
            }
            data.extend_from_slice(&b[..b.len().min(room)]);
        }
        let n = data.len();
        let frame = if flags.is_empty() {
            stream_request::Frame::Data(data.into())
        } else {
            stream_request::Frame::Write(v2::StreamWrite {
                data: data.into(),
                flags: flags.bits(),
            })
        };
        let frame = v2::StreamRequest { frame: Some(frame) };
        if self.tx.send_item(frame).is_err() {
            return Poll::Ready(Err(WriteState::closed_error(shared)));
        }
        self.written += n as u64;
        self.flushed.written.store(self.written, Ordering::SeqCst);
        shared.note_written();
        Poll::Ready(Ok(n))
    }

    /// A write that never waits: `WouldBlock` when the up queue is full.
    fn try_write(&mut self, shared: &Shared, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_write_frame(shared, &mut cx, bufs) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Ready when a write would not wait (room reserved, or an error).
    fn poll_write_ready(&mut self, shared: &Shared, cx: &mut Context<'_>) -> Poll<()> {
        if self.write_shut || shared.terminal.failed() {
            return Poll::Ready(());
        }
        let _ = ready!(self.poll_room(shared, cx));
        Poll::Ready(())
    }

    /// Completes when every byte written is in the daemon's send buffer.
    fn poll_flush(&mut self, shared: &Shared, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = self.poll_flush_inner(shared, cx);
        let pending = result.is_pending();
        if self.flushed.waiting.swap(pending, Ordering::SeqCst) != pending && pending {
            self.flushed.pump.notify_one();
        }
        result
    }

    fn poll_flush_inner(&mut self, shared: &Shared, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.flushed.count.load(Ordering::SeqCst) >= self.written {
            return Poll::Ready(Ok(()));
        }
        if self.flushed.read_ahead_full.load(Ordering::SeqCst) {
            // The answer is behind more unread data than the pump holds
            // (see FLUSH_READ_AHEAD).
            return Poll::Ready(Ok(()));
        }
        if self.flush_requested < self.written {
            let frame = v2::StreamRequest {
                frame: Some(stream_request::Frame::Flush(true)),
            };
            ready!(self.poll_send(shared, cx, frame))?;
            self.flush_requested = self.written;
        }
        self.flushed.waker.register(cx.waker());
        if self.flushed.count.load(Ordering::SeqCst) >= self.written
            || self.flushed.read_ahead_full.load(Ordering::SeqCst)
        {
            return Poll::Ready(Ok(()));
        }
        if self.flushed.done.load(Ordering::SeqCst) {
            return Poll::Ready(Err(WriteState::closed_error(shared)));
        }
        Poll::Pending
    }

    fn poll_shutdown(&mut self, shared: &Shared, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.write_shut {
            let frame = v2::StreamRequest {
                frame: Some(stream_request::Frame::ShutdownWrite(true)),
            };
            ready!(self.poll_send(shared, cx, frame))?;
            self.write_shut = true;
        }
        self.poll_flush(shared, cx)
    }

    /// Queues `shutdown_write` from a destructor (owned write half), behind
    /// the waiting control frames.
    fn shutdown_in_background(&mut self, shared: &Shared) {
        if self.write_shut {
            return;
        }
        self.write_shut = true;
        self.tx.abort_send();
        let frame = v2::StreamRequest {
            frame: Some(stream_request::Frame::ShutdownWrite(true)),
        };
        let mut up = lock(&shared.up);
        if up.control.is_empty() {
            if let Some(sender) = self.tx.get_ref() {
                match sender.try_send(frame) {
                    Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
                    Err(mpsc::error::TrySendError::Full(frame)) => up.control.push_back(frame),
                }
            }
        } else {
            up.control.push_back(frame);
            return;
        }
        drop(up);
        if let Some(sender) = self.tx.get_ref().cloned() {
            spawn_control_drain(sender, Arc::downgrade(&shared.up));
        }
    }
}

/// Sends the waiting control frames as room appears (see [`Up::control`]).
fn spawn_control_drain(sender: mpsc::Sender<v2::StreamRequest>, up: std::sync::Weak<Mutex<Up>>) {
    let _ = runtime::spawn(async move {
        loop {
            let Ok(permit) = sender.reserve().await else {
                return;
            };
            let Some(up) = up.upgrade() else {
                return;
            };
            let mut up = lock(&up);
            match up.control.pop_front() {
                Some(f) => permit.send(f),
                None => return,
            }
        }
    });
}

/// What woke the pump.
enum PumpStep<'a> {
    /// Room in the read side's queue (`None`: the read side is gone).
    Room(Option<mpsc::Permit<'a, DownItem>>),
    /// The next response part (`None`: the stream ended).
    Frame(Option<Result<DownPart, tonic::Status>>),
    /// A flush started waiting for its answer.
    FlushWaits,
}

/// Reads the response stream to its end: data to the read side, `flushed`
/// to the write side, the final error to both.
///
/// Data goes to the read side through a bounded queue, which is what holds
/// the daemon (HTTP/2 flow control, then TCP's window) when the application
/// does not read. But a flush's answer comes behind that data: while a
/// flush waits, the pump keeps reading past a full read side (up to
/// [`FLUSH_READ_AHEAD`] bytes, handed over in order later) so that the
/// answer is seen — `flush`/`shutdown` never wait for the application to
/// read, as on a kernel socket.
async fn pump(
    client: Client,
    mut frames: DownFrames,
    data: mpsc::Sender<DownItem>,
    flushed: Arc<Flushed>,
    terminal: Arc<Terminal>,
) {
    // Once the read side is gone, data is dropped (the close frame tells
    // the daemon how much was consumed).
    let mut reader = Some(data);
    // Read, not yet handed over; after EOF nothing more is taken.
    let mut ahead: VecDeque<DownItem> = VecDeque::new();
    let mut ahead_bytes = 0usize;
    let mut eof = false;
    loop {
        if eof && ahead.is_empty() {
            // Dropping `reader` after the EOF item ends the read side's queue.
            reader = None;
        }
        // In a block: the permit in `step` borrows `reader`, which the
        // loop may clear afterwards.
        let read_side_gone = {
            let room = async {
                match &reader {
                    Some(tx) => tx.reserve().await.ok(),
                    None => None,
                }
            };
            let read_on =
                ahead.is_empty() || (ahead_bytes < FLUSH_READ_AHEAD && flushed.awaiting_answer());
            let step = tokio::select! {
                biased;
                permit = room, if !ahead.is_empty() => PumpStep::Room(permit),
                frame = frames.next(), if read_on => PumpStep::Frame(frame),
                // A flush started waiting: read on past the full read side.
                () = flushed.pump.notified(), if !read_on => PumpStep::FlushWaits,
            };
            let gone = matches!(step, PumpStep::Room(None));
            match step {
                PumpStep::Room(Some(permit)) => {
                    if let Some(item) = ahead.pop_front() {
                        if let DownItem::Data(bytes) = &item {
                            ahead_bytes -= bytes.len();
                        }
                        permit.send(item);
                    }
                }
                // The read side is gone.
                PumpStep::Room(None) => {}
                // Payload as received (a slice of the HTTP/2 frame).
                PumpStep::Frame(Some(Ok(DownPart::Data(bytes)))) => {
                    if reader.is_some() && !eof {
                        ahead_bytes += bytes.len();
                        ahead.push_back(DownItem::Data(bytes));
                    }
                }
                PumpStep::Frame(Some(Ok(DownPart::Message(v2::StreamResponse {
                    frame: Some(frame),
                })))) => match frame {
                    stream_response::Frame::Data(bytes) => {
                        if reader.is_some() && !eof && !bytes.is_empty() {
                            ahead_bytes += bytes.len();
                            ahead.push_back(DownItem::Data(bytes));
                        }
                    }
                    stream_response::Frame::Eof(_) => {
                        if reader.is_some() && !eof {
                            ahead.push_back(DownItem::Eof);
                        }
                        eof = true;
                    }
                    stream_response::Frame::Flushed(n) => flushed.update(n),
                    stream_response::Frame::Opened(_) => {}
                },
                // A frame kind newer than this client: skip it.
                PumpStep::Frame(Some(Ok(DownPart::Message(v2::StreamResponse {
                    frame: None,
                })))) => {}
                PumpStep::Frame(Some(Err(status))) => {
                    terminal.set(client.to_io(status));
                    break;
                }
                PumpStep::Frame(None) => break,
                PumpStep::FlushWaits => {}
            }
            gone
        };
        if read_side_gone {
            reader = None;
            ahead.clear();
            ahead_bytes = 0;
        }
        flushed.note_read_ahead(ahead_bytes);
    }
    flushed.finish();
    // What was read ahead still goes to the read side, in order; dropping
    // `reader` then wakes it with the end.
    if let Some(tx) = reader {
        for item in ahead {
            if tx.send(item).await.is_err() {
                break;
            }
        }
    }
}

/// A TCP connection through tcpd, with the API of `tokio::net::TcpStream`.
///
/// Reading and writing go through [`AsyncRead`]/[`AsyncWrite`] (use
/// `tokio::io::AsyncReadExt`/`AsyncWriteExt`), or `readable`/`try_read`,
/// `writable`/`try_write`, `ready`, `peek` as on tokio's type. `flush()`
/// completes when the written data is in the daemon's send buffer;
/// `shutdown()` half-closes (FIN after the queued data). Dropping the
/// stream closes the socket: FIN after the written data, or RST when
/// received data was left unread (as Linux does).
///
/// ```no_run
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # async fn demo() -> std::io::Result<()> {
/// let mut stream = tcpd_client::TcpStream::connect("10.0.0.1:7").await?;
/// stream.set_nodelay(true)?;
/// stream.write_all(b"ping").await?;
/// stream.shutdown().await?; // FIN: the echo server ends its reply
/// let mut reply = Vec::new();
/// stream.read_to_end(&mut reply).await?;
/// assert_eq!(reply, b"ping");
/// # Ok(()) }
/// ```
pub struct TcpStream {
    shared: Arc<Shared>,
    read: Mutex<ReadState>,
    write: Mutex<WriteState>,
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
    pub async fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let targets = addr::resolve(&addr).await?;
        let client = Client::shared().await?;
        TcpStream::connect_any(&client, &targets).await
    }

    /// Tries `targets` in order through `client`.
    pub(crate) async fn connect_any(
        client: &Client,
        targets: &[SocketAddr],
    ) -> io::Result<TcpStream> {
        let mut last = io::Error::from_raw_os_error(errno::EINVAL);
        for &target in targets {
            let connect = v2::StreamConnect {
                remote: Some(target.into()),
                ..Default::default()
            };
            let how = stream_open::How::Connect(connect);
            match TcpStream::open(client, how, Cached::default()).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Opens the Stream RPC (connect or accept) and waits for `opened`;
    /// `cached` are the options the socket starts with, as far as this
    /// library set them.
    pub(crate) async fn open(
        client: &Client,
        how: stream_open::How,
        cached: Cached,
    ) -> io::Result<TcpStream> {
        let (tx, rx) = mpsc::channel(UP_QUEUE_FRAMES);
        let open = v2::StreamRequest {
            frame: Some(stream_request::Frame::Open(v2::StreamOpen {
                how: Some(how),
            })),
        };
        // A fresh queue always has room for its first frame.
        let _ = tx.try_send(open);
        let pump_client = client.clone();
        let terminal = Arc::new(Terminal::default());
        let (data_tx, data_rx) = mpsc::channel(DOWN_QUEUE);
        let flushed = Arc::new(Flushed::default());
        let flushed_tx = Arc::clone(&flushed);
        let pump_terminal = Arc::clone(&terminal);
        // The RPC and its pump run where the session lives (the runtime it
        // was opened on, or the library's), as does the close after a drop.
        let opened = client
            .home()
            .run_answer(client.busy_poll_policy(), async move {
                let mut frames = down::open(&pump_client, rx)
                    .await
                    .map_err(|s| pump_client.to_io(s))?;
                let opened = match frames.next().await {
                    Some(Ok(DownPart::Message(v2::StreamResponse {
                        frame: Some(stream_response::Frame::Opened(o)),
                    }))) => o,
                    Some(Err(status)) => return Err(pump_client.to_io(status)),
                    _ => return Err(io::Error::from_raw_os_error(errno::EPROTO)),
                };
                tokio::spawn(pump(
                    pump_client,
                    frames,
                    data_tx,
                    flushed_tx,
                    pump_terminal,
                ));
                Ok(opened)
            })
            .await??;
        let shared = Arc::new(Shared {
            client: client.clone(),
            handle: opened.handle,
            local: crate::socket::addr_from_wire(opened.local)?,
            peer: crate::socket::addr_from_wire(opened.peer)?,
            consumed: AtomicU64::new(0),
            abort: AtomicBool::new(cached.linger == Some(Duration::ZERO)),
            cached: Mutex::new(cached),
            terminal,
            up: Arc::new(Mutex::new(Up {
                sender: Some(tx.clone()),
                control: VecDeque::new(),
            })),
            answer_due: AtomicBool::new(false),
            read_waiting: AtomicWaker::new(),
        });
        Ok(TcpStream {
            shared,
            read: Mutex::new(ReadState {
                rx: data_rx,
                pending: Bytes::new(),
                pos: 0,
                finished: false,
                end: None,
                held: 0,
                flushed: Arc::clone(&flushed),
                spin: busy_poll::Spin::default(),
            }),
            write: Mutex::new(WriteState {
                tx: PollSender::new(tx),
                written: 0,
                flushed,
                flush_requested: 0,
                write_shut: false,
            }),
        })
    }

    /// The remote address (from the connection's opening).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.shared.peer)
    }

    /// The local address (from the connection's opening).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.shared.local)
    }

    /// The daemon's handle of this socket.
    pub fn handle(&self) -> u64 {
        self.shared.handle
    }

    /// The session this stream belongs to.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// Sets TCP_NODELAY (disables Nagle's algorithm) for the data written
    /// after this call; see the module docs for how it is ordered.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.shared.set_in_stream(SockOption::NoDelay(nodelay));
        Ok(())
    }

    /// Whether TCP_NODELAY is set (as set through this library).
    pub fn nodelay(&self) -> io::Result<bool> {
        Ok(lock(&self.shared.cached).nodelay)
    }

    /// Sets `SO_LINGER` (`Some(ZERO)`: close resets the connection).
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        let secs = linger.map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        self.shared.set_in_stream(SockOption::Linger(secs));
        Ok(())
    }

    /// `SO_LINGER` as set through this library.
    pub fn linger(&self) -> io::Result<Option<Duration>> {
        Ok(lock(&self.shared.cached).linger)
    }

    /// `IP_TTL`: as set through this library (or inherited from the
    /// listener or [`crate::TcpSocket`]), else [`DEFAULT_TTL`] (64).
    pub fn ttl(&self) -> io::Result<u32> {
        Ok(lock(&self.shared.cached).ttl())
    }

    /// `IP_TTL` (1..=255, `EINVAL` otherwise), for the packets of the data
    /// written after it; ordered with the data like
    /// [`TcpStream::set_nodelay`].
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.shared.set_in_stream(check_ttl(ttl)?);
        Ok(())
    }

    /// `SO_KEEPALIVE` with `TCP_KEEPIDLE` `idle` (whole seconds,
    /// 1..=32767); `None` turns keepalive off. Ordered with the data like
    /// [`TcpStream::set_nodelay`].
    pub fn set_keepalive(&self, idle: Option<Duration>) -> io::Result<()> {
        match idle {
            None => self.shared.set_in_stream(SockOption::KeepAlive(false)),
            Some(idle) => {
                let secs = idle.as_secs().max(1);
                let secs = OptionName::KeepIdle
                    .kind()
                    .accept_int(i64::try_from(secs).unwrap_or(i64::MAX))
                    .and_then(|s| u32::try_from(s).ok())
                    .ok_or_else(|| io::Error::from_raw_os_error(errno::EINVAL))?;
                self.shared.set_in_stream(SockOption::KeepIdle(secs));
                self.shared.set_in_stream(SockOption::KeepAlive(true));
            }
        }
        Ok(())
    }

    /// Takes the connection's pending error (`SO_ERROR`): the error that
    /// ended it, if no read or write has reported it yet.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(self.shared.terminal.take())
    }

    /// setsockopt(2) through a unary call that waits for the daemon's answer
    /// (any option, errors reported; not ordered with data in flight).
    pub async fn set_option(&self, option: SockOption) -> io::Result<()> {
        crate::socket::set_option(self.client(), self.handle(), option.clone()).await?;
        lock(&self.shared.cached).note(&option);
        if let SockOption::Linger(l) = option {
            self.shared.abort.store(l == Some(0), Ordering::SeqCst);
        }
        Ok(())
    }

    /// getsockopt(2) through a unary call.
    pub async fn option(&self, name: OptionName) -> io::Result<SockOption> {
        crate::socket::get_option(self.client(), self.handle(), name).await
    }

    /// getsockopt(TCP_INFO): Linux's `struct tcp_info` fields, as of now.
    pub async fn tcp_info(&self) -> io::Result<TcpInfo> {
        crate::socket::tcp_info(self.client(), self.handle()).await
    }

    /// send(2) with flags: writes up to 64 KiB of `data` as one frame
    /// carrying `MSG_MORE`, `MSG_EOR` or `MSG_OOB` (the last byte written
    /// is then the urgent byte); returns how much was taken. In order with
    /// the `AsyncWrite` side; `flush` covers it too.
    ///
    /// Urgent data *received* on a stream: the daemon reads the socket for
    /// the client, so as on Linux for a reader that does not ask for it,
    /// the urgent byte is skipped unless `SO_OOBINLINE` is set (then it is
    /// in the data, where the reads stop before it). The raw
    /// [`crate::Socket`] API reads it with `ReadFlags { oob: true, .. }`.
    pub async fn send_with_flags(&self, data: &[u8], flags: SendFlags) -> io::Result<usize> {
        let bufs = [io::IoSlice::new(data)];
        futures::future::poll_fn(|cx| {
            lock(&self.write).poll_write_frame_with(&self.shared, cx, &bufs, flags)
        })
        .await
    }

    /// shutdown(2): `Write` sends FIN after the queued data; `Read` and
    /// `Both` also stop the receive side.
    pub async fn shutdown_with(&self, how: Shutdown) -> io::Result<()> {
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            futures::future::poll_fn(|cx| lock(&self.write).poll_shutdown(&self.shared, cx))
                .await?;
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            let frame = v2::StreamRequest {
                frame: Some(stream_request::Frame::ShutdownRead(true)),
            };
            futures::future::poll_fn(|cx| {
                lock(&self.write).poll_send(&self.shared, cx, frame.clone())
            })
            .await?;
        }
        Ok(())
    }

    /// Waits until a read would not block (data, EOF or an error).
    pub async fn readable(&self) -> io::Result<()> {
        futures::future::poll_fn(|cx| self.poll_read_ready(cx)).await
    }

    /// Polls for read readiness (as tokio's `poll_read_ready`).
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.read).poll_read_ready(&self.shared, cx).map(Ok)
    }

    /// Waits until a write would not block (room in the up queue, or an
    /// error to report).
    pub async fn writable(&self) -> io::Result<()> {
        futures::future::poll_fn(|cx| self.poll_write_ready(cx)).await
    }

    /// Polls for write readiness (as tokio's `poll_write_ready`).
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.write).poll_write_ready(&self.shared, cx).map(Ok)
    }

    /// Waits for any of `interest` (as tokio's `ready`).
    pub async fn ready(&self, interest: Interest) -> io::Result<Ready> {
        futures::future::poll_fn(|cx| self.poll_ready(interest, cx)).await
    }

    fn poll_ready(&self, interest: Interest, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        let mut ready = Ready::EMPTY;
        if interest.is_readable() {
            let mut read = lock(&self.read);
            if read.poll_read_ready(&self.shared, cx).is_ready() {
                ready |= Ready::READABLE;
                if read.is_closed() {
                    ready |= Ready::READ_CLOSED;
                }
            }
        }
        if interest.is_writable() {
            let mut write = lock(&self.write);
            if write.poll_write_ready(&self.shared, cx).is_ready() {
                ready |= Ready::WRITABLE;
                if write.write_shut || self.shared.terminal.failed() {
                    ready |= Ready::WRITE_CLOSED;
                }
            }
        }
        if ready.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(Ok(ready))
        }
    }

    /// Reads what is there without waiting; `WouldBlock` when nothing is
    /// (as tokio's `try_read`). 0 means end of stream.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        lock(&self.read).try_read(&self.shared, &mut buf)?;
        Ok(buf.filled().len())
    }

    /// As [`TcpStream::try_read`], into the first non-empty buffer.
    pub fn try_read_vectored(&self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        match bufs.iter_mut().find(|b| !b.is_empty()) {
            Some(buf) => self.try_read(buf),
            None => Ok(0),
        }
    }

    /// As [`TcpStream::try_read`], appending to `buf`'s spare capacity.
    pub fn try_read_buf<B: bytes::BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        let chunk = buf.chunk_mut();
        let mut tmp = vec![0u8; chunk.len().min(MAX_UP_FRAME)];
        let n = self.try_read(&mut tmp)?;
        buf.put_slice(&tmp[..n]);
        Ok(n)
    }

    /// Writes what fits without waiting; `WouldBlock` when the up queue is
    /// full (as tokio's `try_write`).
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.write).try_write(&self.shared, &[io::IoSlice::new(buf)])
    }

    /// As [`TcpStream::try_write`], gathering `bufs`.
    pub fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        lock(&self.write).try_write(&self.shared, bufs)
    }

    /// Receives data without consuming it (MSG_PEEK), waiting for some.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        futures::future::poll_fn(|cx| self.poll_peek(cx, &mut buf)).await
    }

    /// Polls for data to peek at (as tokio's `poll_peek`).
    pub fn poll_peek(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<usize>> {
        lock(&self.read).poll_peek(&self.shared, cx, buf)
    }

    /// Closes the socket: FIN after the written data, RST if received data
    /// was left unread. Returns once the daemon has taken the close (its
    /// queued data continues in the background, as with close(2)).
    pub async fn close(self) -> io::Result<()> {
        let TcpStream {
            shared,
            read,
            write,
        } = self;
        let ended = Arc::clone(&lock(&write).flushed);
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

    /// Borrowed halves, usable concurrently (as tokio's `split`).
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        (ReadHalf(self), WriteHalf(self))
    }

    /// Owned halves (as tokio's `into_split`); dropping the write half
    /// half-closes, the socket closes when both are gone.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let inner = Arc::new(self);
        (
            OwnedReadHalf {
                inner: Arc::clone(&inner),
            },
            OwnedWriteHalf {
                inner,
                shutdown_on_drop: true,
            },
        )
    }

    fn read_state(&mut self) -> &mut ReadState {
        self.read.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&mut self) -> &mut WriteState {
        self.write.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shared = Arc::clone(&this.shared);
        this.read_state().poll_read(&shared, cx, buf)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let shared = Arc::clone(&this.shared);
        this.write_state()
            .poll_write_frame(&shared, cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let shared = Arc::clone(&this.shared);
        this.write_state().poll_write_frame(&shared, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shared = Arc::clone(&this.shared);
        this.write_state().poll_flush(&shared, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shared = Arc::clone(&this.shared);
        this.write_state().poll_shutdown(&shared, cx)
    }
}

/// `AsyncRead`/`AsyncWrite` through a `&TcpStream` (the halves), locking
/// the side's state for each poll.
impl TcpStream {
    pub(crate) fn poll_read_shared(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        lock(&self.read).poll_read(&self.shared, cx, buf)
    }

    pub(crate) fn poll_write_shared(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        lock(&self.write).poll_write_frame(&self.shared, cx, bufs)
    }

    pub(crate) fn poll_flush_shared(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.write).poll_flush(&self.shared, cx)
    }

    pub(crate) fn poll_shutdown_shared(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.write).poll_shutdown(&self.shared, cx)
    }
}

/// The read half of [`TcpStream::split`].
#[derive(Debug)]
pub struct ReadHalf<'a>(&'a TcpStream);

/// The write half of [`TcpStream::split`].
#[derive(Debug)]
pub struct WriteHalf<'a>(&'a TcpStream);

/// The read half of [`TcpStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    inner: Arc<TcpStream>,
}

/// The write half of [`TcpStream::into_split`]. Dropping it half-closes
/// (FIN after the queued data), as tokio's does.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    inner: Arc<TcpStream>,
    shutdown_on_drop: bool,
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        if self.shutdown_on_drop {
            lock(&self.inner.write).shutdown_in_background(&self.inner.shared);
        }
    }
}

impl OwnedReadHalf {
    /// Puts the halves back together (tokio's `reunite`); fails if they
    /// come from different streams.
    #[allow(clippy::result_large_err)] // tokio's signature: the halves come back by value.
    pub fn reunite(self, other: OwnedWriteHalf) -> Result<TcpStream, ReuniteError> {
        reunite(self, other)
    }
}

impl OwnedWriteHalf {
    /// Puts the halves back together (tokio's `reunite`).
    #[allow(clippy::result_large_err)] // tokio's signature: the halves come back by value.
    pub fn reunite(self, other: OwnedReadHalf) -> Result<TcpStream, ReuniteError> {
        reunite(other, self)
    }

    /// Drops the half without the half-close (tokio's `forget`).
    pub fn forget(mut self) {
        self.shutdown_on_drop = false;
    }
}

#[allow(clippy::result_large_err)]
fn reunite(read: OwnedReadHalf, mut write: OwnedWriteHalf) -> Result<TcpStream, ReuniteError> {
    if !Arc::ptr_eq(&read.inner, &write.inner) {
        return Err(ReuniteError(read, write));
    }
    write.shutdown_on_drop = false;
    let inner = Arc::clone(&write.inner);
    drop(write);
    drop(read);
    // Both halves are gone: this is the last reference. (Were it not, the
    // halves come back as they were rather than anything panicking.)
    Arc::try_unwrap(inner).map_err(|inner| {
        ReuniteError(
            OwnedReadHalf {
                inner: Arc::clone(&inner),
            },
            OwnedWriteHalf {
                inner,
                shutdown_on_drop: true,
            },
        )
    })
}

/// The halves given to `reunite` were not of one stream.
#[derive(Debug)]
pub struct ReuniteError(pub OwnedReadHalf, pub OwnedWriteHalf);

impl fmt::Display for ReuniteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tried to reunite halves that are not from the same socket")
    }
}

impl std::error::Error for ReuniteError {}

/// The methods tokio's halves share with the stream, through `$this.$s`
/// (the `&TcpStream`).
macro_rules! half_common {
    ($ty:ty, |$this:ident| $s:expr) => {
        impl $ty {
            /// The remote address.
            pub fn peer_addr(&self) -> io::Result<SocketAddr> {
                let $this = self;
                $s.peer_addr()
            }

            /// The local address.
            pub fn local_addr(&self) -> io::Result<SocketAddr> {
                let $this = self;
                $s.local_addr()
            }

            /// The daemon's handle of this socket.
            pub fn handle(&self) -> u64 {
                let $this = self;
                $s.handle()
            }

            /// Waits for any of `interest` (as tokio's `ready`).
            pub async fn ready(&self, interest: Interest) -> io::Result<Ready> {
                let $this = self;
                $s.ready(interest).await
            }
        }
    };
}

/// tokio's read-half methods, through `$this.$s` (the `&TcpStream`).
macro_rules! read_half {
    ($ty:ty, |$this:ident| $s:expr) => {
        half_common!($ty, |$this| $s);

        impl $ty {
            /// Waits until a read would not block.
            pub async fn readable(&self) -> io::Result<()> {
                let $this = self;
                $s.readable().await
            }

            /// As [`TcpStream::try_read`].
            pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                let $this = self;
                $s.try_read(buf)
            }

            /// As [`TcpStream::try_read_vectored`].
            pub fn try_read_vectored(&self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
                let $this = self;
                $s.try_read_vectored(bufs)
            }

            /// As [`TcpStream::try_read_buf`].
            pub fn try_read_buf<B: bytes::BufMut>(&self, buf: &mut B) -> io::Result<usize> {
                let $this = self;
                $s.try_read_buf(buf)
            }

            /// As [`TcpStream::peek`].
            pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
                let $this = self;
                $s.peek(buf).await
            }

            /// As [`TcpStream::poll_peek`].
            pub fn poll_peek(
                &self,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<usize>> {
                let $this = self;
                $s.poll_peek(cx, buf)
            }
        }

        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                let $this = &*self;
                $s.poll_read_shared(cx, buf)
            }
        }
    };
}

/// tokio's write-half methods, through `$this.$s` (the `&TcpStream`).
macro_rules! write_half {
    ($ty:ty, |$this:ident| $s:expr) => {
        half_common!($ty, |$this| $s);

        impl $ty {
            /// Waits until a write would not block.
            pub async fn writable(&self) -> io::Result<()> {
                let $this = self;
                $s.writable().await
            }

            /// As [`TcpStream::try_write`].
            pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                let $this = self;
                $s.try_write(buf)
            }

            /// As [`TcpStream::try_write_vectored`].
            pub fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
                let $this = self;
                $s.try_write_vectored(bufs)
            }
        }

        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let $this = &*self;
                $s.poll_write_shared(cx, &[io::IoSlice::new(buf)])
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                let $this = &*self;
                $s.poll_write_shared(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let $this = &*self;
                $s.poll_flush_shared(cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let $this = &*self;
                $s.poll_shutdown_shared(cx)
            }
        }
    };
}

read_half!(ReadHalf<'_>, |this| this.0);
write_half!(WriteHalf<'_>, |this| this.0);
read_half!(OwnedReadHalf, |this| this.inner);
write_half!(OwnedWriteHalf, |this| this.inner);
