//! The API's Unix-socket connection, registered with the runtime for
//! readability only ([`UnixConnection`]); both the daemon's sessions and
//! `tcpd-client`'s channel run HTTP/2 over it.
//!
//! Why not `tokio::net::UnixStream`: it registers its socket for
//! `EPOLLIN | EPOLLOUT` (edge-triggered). On an AF_UNIX stream every read
//! that frees room in the socket's queue calls the *writer's* write-space
//! callback (Linux `unix_write_space`, from `recvmsg`), which wakes every
//! epoll instance waiting for `EPOLLOUT` on it. So when the daemon reads a
//! request, the client's idle runtime thread is woken for nothing, and the
//! client's read of the answer wakes the daemon's: four cross-CPU wake-ups
//! per unary call instead of two (about 17 µs each on the VMs we measure
//! on; e2e/BENCHMARKS.md "Where the unary call and the connection still
//! go").
//!
//! Here the socket is registered for `EPOLLIN` only, and writability is
//! asked for only while a write is blocked: writes go straight to the
//! socket, and after one returns `EAGAIN` a duplicate of the descriptor is
//! registered for `EPOLLOUT` (epoll keys a registration by descriptor *and*
//! open file description, so the duplicate is a second registration of
//! the same socket, independent of the first). That registration is
//! dropped again after the next write that goes through whole; while
//! writes keep filling the socket (bulk transfers) it stays.
//!
//! Reads go through `tokio::net::unix::pipe::Receiver`, which reads any
//! descriptor with `read(2)` into the caller's uninitialised buffer and
//! registers it for readability only — the one safe way tokio offers to
//! read into a `ReadBuf` without first zeroing it (64 KiB of zeroing costs
//! 8 µs here). `read(2)` on a connected stream socket is `recv(2)` with no
//! flags.
//!
//! Invariants: bytes are written in the order the writes are called and
//! read in the order they arrive (one socket, no buffering here); the
//! socket is closed when the connection is dropped (every duplicate is
//! owned by it).

use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;

/// A connected AF_UNIX stream socket registered for readability only, with
/// writability asked for only while a write is blocked (see the module
/// docs). Must be created and used inside a tokio runtime with I/O enabled.
#[derive(Debug)]
pub struct UnixConnection {
    /// Reads: the socket, registered for `EPOLLIN` only.
    reader: pipe::Receiver,
    /// Writes and shutdown: a duplicate of the descriptor, not registered.
    writer: UnixStream,
    /// While a write is blocked: another duplicate, registered for
    /// `EPOLLOUT` only (tokio's pipe writer registers just that, and
    /// writes any descriptor with `write(2)`/`writev(2)`).
    write_wait: Option<pipe::Sender>,
}

impl UnixConnection {
    /// Wraps a connected socket (made non-blocking here).
    pub fn new(stream: UnixStream) -> io::Result<UnixConnection> {
        stream.set_nonblocking(true)?;
        let writer = stream.try_clone()?;
        let reader = pipe::Receiver::from_owned_fd_unchecked(OwnedFd::from(stream))?;
        Ok(UnixConnection {
            reader,
            writer,
            write_wait: None,
        })
    }

    /// Wraps a tokio socket, taking it out of the runtime's registration
    /// (which includes `EPOLLOUT`) first.
    pub fn from_tokio(stream: tokio::net::UnixStream) -> io::Result<UnixConnection> {
        UnixConnection::new(stream.into_std()?)
    }

    /// The socket, for calls that read its state (credentials, addresses).
    pub fn socket(&self) -> &UnixStream {
        &self.writer
    }

    /// Whether a writability registration is live (a write blocked and no
    /// write has gone through whole since).
    pub fn waiting_for_writability(&self) -> bool {
        self.write_wait.is_some()
    }

    /// One write of `bytes`: tried at once; after `EAGAIN`, retried when
    /// the writability registration (made then) reports room.
    fn poll_write_bytes(
        &mut self,
        cx: &mut Context<'_>,
        bytes: Bytes<'_>,
    ) -> Poll<io::Result<usize>> {
        loop {
            let Some(wait) = self.write_wait.as_ref() else {
                match bytes.write_to(&self.writer) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Registered after the EAGAIN: epoll reports the
                        // socket at once if room appeared in between.
                        let dup = OwnedFd::from(self.writer.try_clone()?);
                        self.write_wait = Some(pipe::Sender::from_owned_fd_unchecked(dup)?);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    done => return Poll::Ready(done),
                }
            };
            ready!(wait.poll_write_ready(cx))?;
            match bytes.try_write_to(wait) {
                // Readiness was cleared: wait for the next report.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(n) if n == bytes.len() => {
                    // The queue took everything: stop listening for room.
                    self.write_wait = None;
                    return Poll::Ready(Ok(n));
                }
                done => return Poll::Ready(done),
            }
        }
    }
}

/// What one `poll_write` or `poll_write_vectored` writes.
#[derive(Clone, Copy)]
enum Bytes<'a> {
    One(&'a [u8]),
    Vectored(&'a [IoSlice<'a>]),
}

impl Bytes<'_> {
    fn len(&self) -> usize {
        match self {
            Bytes::One(buf) => buf.len(),
            Bytes::Vectored(bufs) => bufs.iter().map(|b| b.len()).sum(),
        }
    }

    /// `write(2)`/`writev(2)` on the unregistered descriptor.
    fn write_to(&self, mut socket: &UnixStream) -> io::Result<usize> {
        match self {
            Bytes::One(buf) => socket.write(buf),
            Bytes::Vectored(bufs) => socket.write_vectored(bufs),
        }
    }

    /// The same through the writability registration (clears its
    /// readiness on `EAGAIN`).
    fn try_write_to(&self, wait: &pipe::Sender) -> io::Result<usize> {
        match self {
            Bytes::One(buf) => wait.try_write(buf),
            Bytes::Vectored(bufs) => wait.try_write_vectored(bufs),
        }
    }
}

impl AsyncRead for UnixConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for UnixConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_bytes(cx, Bytes::One(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_bytes(cx, Bytes::Vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.writer.shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (UnixConnection, UnixConnection) {
        let (a, b) = UnixStream::pair().expect("socketpair");
        (
            UnixConnection::new(a).expect("wrap"),
            UnixConnection::new(b).expect("wrap"),
        )
    }

    /// Byte `i` of the test pattern: position-dependent, so a lost,
    /// repeated or reordered chunk changes what the reader sees.
    fn pattern(i: usize) -> u8 {
        (i.wrapping_mul(131) ^ (i >> 11)) as u8
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_writer_blocked_on_a_full_socket_resumes_when_the_peer_reads() {
        let (mut writer, mut reader) = pair();
        // Fill the socket until a write would block.
        let chunk = vec![7u8; 64 * 1024];
        let mut queued = 0usize;
        loop {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            match Pin::new(&mut writer).poll_write(&mut cx, &chunk) {
                Poll::Ready(Ok(n)) => queued += n,
                Poll::Ready(Err(e)) => panic!("write failed: {e}"),
                Poll::Pending => break,
            }
        }
        assert!(queued > 0);
        assert!(
            writer.waiting_for_writability(),
            "a blocked write registers for room"
        );
        // The blocked write finishes once the peer drains the socket.
        let blocked = chunk.clone();
        let write = tokio::spawn(async move {
            writer.write_all(&blocked).await.expect("write");
            writer
        });
        let mut got = vec![0u8; queued + chunk.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            reader.read_exact(&mut got),
        )
        .await
        .expect("reader not starved")
        .expect("read");
        let writer = tokio::time::timeout(std::time::Duration::from_secs(10), write)
            .await
            .expect("the blocked write resumed")
            .expect("join");
        assert!(got.iter().all(|&b| b == 7));
        // The next write that goes through whole drops the registration.
        let mut writer = writer;
        writer.write_all(b"x").await.expect("write");
        assert!(!writer.waiting_for_writability());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bytes_arrive_whole_and_in_order_both_ways_through_full_sockets() {
        const TOTAL: usize = 8 * 1024 * 1024;
        let (a, b) = pair();
        let (a_read, a_write) = tokio::io::split(a);
        let (b_read, b_write) = tokio::io::split(b);
        // Writers use odd chunk sizes and vectored writes; readers read
        // slowly at first, so both sockets fill and writes block often.
        let send = |mut w: tokio::io::WriteHalf<UnixConnection>| async move {
            let data: Vec<u8> = (0..TOTAL).map(pattern).collect();
            let mut at = 0;
            let mut step = 1usize;
            while at < TOTAL {
                let end = (at + step).min(TOTAL);
                let mid = at + (end - at) / 2;
                let slices = [IoSlice::new(&data[at..mid]), IoSlice::new(&data[mid..end])];
                let n = w.write_vectored(&slices).await.expect("write");
                at += n;
                step = (step * 7 + 13) % 200_003 + 1;
            }
            w.shutdown().await.expect("shutdown");
        };
        let receive = |mut r: tokio::io::ReadHalf<UnixConnection>| async move {
            let mut got = Vec::with_capacity(TOTAL);
            let mut buf = vec![0u8; 100_000];
            let mut reads = 0u32;
            loop {
                if reads < 20 {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                reads += 1;
                let n = r.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            got
        };
        let both = async {
            tokio::join!(
                send(a_write),
                send(b_write),
                receive(a_read),
                receive(b_read)
            )
        };
        let ((), (), from_b, from_a) =
            tokio::time::timeout(std::time::Duration::from_secs(60), both)
                .await
                .expect("transfer finished");
        for got in [from_a, from_b] {
            assert_eq!(got.len(), TOTAL);
            if let Some(i) = (0..TOTAL).find(|&i| got[i] != pattern(i)) {
                panic!("byte {i} differs");
            }
        }
    }
}
