//! Blocking (`std::net`-style) sockets for code without async.
//!
//! [`TcpStream`] implements `std::io::Read` + `Write`; [`TcpListener`] has
//! `accept` and `incoming`. They wrap the async types and wait on the
//! library's own I/O runtime, so they need no tokio runtime from the caller.
//!
//! Inside async code they do not panic (unlike tokio's `block_on`), but they
//! block the executor thread for as long as the call waits — exactly like a
//! `std::net::TcpStream` would. Use the async types there, or
//! `tokio::task::spawn_blocking`.
//!
//! ```no_run
//! use std::io::{Read, Write};
//!
//! let mut stream = tcpd_client::blocking::TcpStream::connect("10.0.0.1:7")?;
//! stream.write_all(b"ping")?;
//! stream.shutdown(std::net::Shutdown::Write)?;
//! let mut reply = String::new();
//! stream.read_to_string(&mut reply)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::Client;
use crate::addr::{self, ToSocketAddrs};
use crate::runtime::{Home, block_on, block_on_at};

/// Opens a session with the daemon at `path` (see [`Client::connect`]).
pub fn connect_client(path: impl AsRef<Path>) -> io::Result<Client> {
    block_on(Client::connect(path))?
}

/// The process-wide default session (see [`Client::shared`]).
pub fn shared_client() -> io::Result<Client> {
    block_on(Client::shared())?
}

/// Runs `future`, giving up with `EAGAIN` after `timeout` (the errno Linux
/// reports when `SO_RCVTIMEO`/`SO_SNDTIMEO` expire).
fn block_on_with_timeout<T>(
    home: &Home,
    timeout: Option<Duration>,
    future: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match timeout {
        None => block_on_at(home, future)?,
        Some(limit) => block_on_at(home, async move {
            match tokio::time::timeout(limit, future).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::from_raw_os_error(tcpd_proto::errno::EAGAIN)),
            }
        })?,
    }
}

/// A blocking TCP connection through tcpd, with the API of
/// `std::net::TcpStream` (`Read`/`Write` also for `&TcpStream`).
#[derive(Debug)]
pub struct TcpStream {
    inner: crate::TcpStream,
    timeouts: Mutex<Timeouts>,
    nonblocking: AtomicBool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Timeouts {
    read: Option<Duration>,
    write: Option<Duration>,
}

/// `EINVAL` for a zero timeout, as std's `set_read_timeout` gives.
fn check_timeout(timeout: Option<Duration>) -> io::Result<()> {
    if timeout == Some(Duration::ZERO) {
        return Err(io::Error::from_raw_os_error(tcpd_proto::errno::EINVAL));
    }
    Ok(())
}

impl TcpStream {
    /// Connects through the process-wide session.
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let client = shared_client()?;
        TcpStream::connect_with(&client, addr)
    }

    /// Connects through `client`.
    pub fn connect_with<A: ToSocketAddrs>(client: &Client, addr: A) -> io::Result<TcpStream> {
        let targets = addr::resolve_sync(&addr)?;
        let inner = block_on_at(
            client.home(),
            crate::TcpStream::connect_any(client, &targets),
        )??;
        Ok(TcpStream::from_async(inner))
    }

    /// Connects to one address, giving up with `ETIMEDOUT` after `timeout`
    /// (std's `connect_timeout`).
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        check_timeout(Some(timeout))?;
        let client = shared_client()?;
        let targets = [*addr];
        let connect = crate::TcpStream::connect_any(&client, &targets);
        let inner = block_on_at(client.home(), async move {
            match tokio::time::timeout(timeout, connect).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::from_raw_os_error(tcpd_proto::errno::ETIMEDOUT)),
            }
        })??;
        Ok(TcpStream::from_async(inner))
    }

    /// Wraps an async stream.
    pub fn from_async(inner: crate::TcpStream) -> TcpStream {
        TcpStream {
            inner,
            timeouts: Mutex::new(Timeouts::default()),
            nonblocking: AtomicBool::new(false),
        }
    }

    /// The async stream inside.
    pub fn into_async(self) -> crate::TcpStream {
        self.inner
    }

    /// Where the stream's session runs (what a blocking call waits on).
    fn home(&self) -> &Home {
        self.inner.client().home()
    }

    fn timeouts(&self) -> Timeouts {
        *self.timeouts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The daemon's handle of the socket.
    pub fn handle(&self) -> u64 {
        self.inner.handle()
    }

    /// shutdown(2); the write direction is ordered after data written so far.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        block_on_at(self.home(), self.inner.shutdown_with(how))?
    }

    /// Sets `TCP_NODELAY` (ordered with the data, see [`crate::TcpStream::set_nodelay`]).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.set_nodelay(nodelay)
    }

    /// Reads `TCP_NODELAY`.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.nodelay()
    }

    /// Sets `SO_LINGER`.
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        self.inner.set_linger(linger)
    }

    /// Reads `SO_LINGER`.
    pub fn linger(&self) -> io::Result<Option<Duration>> {
        self.inner.linger()
    }

    /// `IP_TTL` (always 64 with tcpd).
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.ttl()
    }

    /// `IP_TTL`: only 64 (`ENOPROTOOPT` otherwise).
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.set_ttl(ttl)
    }

    /// Reads and clears `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.take_error()
    }

    /// Non-blocking mode: reads and writes that would wait fail with
    /// `WouldBlock` instead.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.nonblocking.store(nonblocking, Ordering::SeqCst);
        Ok(())
    }

    /// Receives data without consuming it (MSG_PEEK).
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.nonblocking.load(Ordering::SeqCst) {
            let mut read = tokio::io::ReadBuf::new(buf);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            return match self.inner.poll_peek(&mut cx, &mut read) {
                std::task::Poll::Ready(r) => r,
                std::task::Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
            };
        }
        block_on_with_timeout(self.home(), self.timeouts().read, self.inner.peek(buf))
    }

    /// Bounds how long a read waits (`None`: forever); an expired read fails
    /// with `EAGAIN` (`WouldBlock`) like `SO_RCVTIMEO`. A zero duration is
    /// `EINVAL`, as in std.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.timeouts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read = timeout;
        Ok(())
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.timeouts().read)
    }

    /// Bounds how long a write waits for queue space, like `SO_SNDTIMEO`.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.timeouts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write = timeout;
        Ok(())
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.timeouts().write)
    }

    fn read_shared(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.nonblocking.load(Ordering::SeqCst) {
            return self.inner.try_read(buf);
        }
        block_on_with_timeout(self.home(), self.timeouts().read, async {
            loop {
                self.inner.readable().await?;
                match self.inner.try_read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    result => return result,
                }
            }
        })
    }

    fn write_shared(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        if self.nonblocking.load(Ordering::SeqCst) {
            return self.inner.try_write_vectored(bufs);
        }
        block_on_with_timeout(self.home(), self.timeouts().write, async {
            loop {
                self.inner.writable().await?;
                match self.inner.try_write_vectored(bufs) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    result => return result,
                }
            }
        })
    }

    fn flush_shared(&self) -> io::Result<()> {
        let flush = futures::future::poll_fn(|cx| self.inner.poll_flush_shared(cx));
        block_on_with_timeout(self.home(), self.timeouts().write, flush)
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_shared(buf)
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_shared(buf)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_shared(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.write_shared(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_shared()
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_shared(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.write_shared(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_shared()
    }
}

/// A blocking TCP listener through tcpd, with the API of
/// `std::net::TcpListener`.
#[derive(Debug)]
pub struct TcpListener {
    inner: crate::TcpListener,
}

impl TcpListener {
    /// Binds and listens through the process-wide session.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        let client = shared_client()?;
        TcpListener::bind_with(&client, addr)
    }

    /// Binds and listens through `client`.
    pub fn bind_with<A: ToSocketAddrs>(client: &Client, addr: A) -> io::Result<TcpListener> {
        let targets = addr::resolve_sync(&addr)?;
        let inner = block_on_at(
            client.home(),
            crate::TcpListener::bind_any(client, &targets),
        )??;
        Ok(TcpListener { inner })
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = block_on_at(self.inner.client().home(), self.inner.accept())??;
        Ok((TcpStream::from_async(stream), peer))
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// `IP_TTL` (always 64 with tcpd).
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.ttl()
    }

    /// `IP_TTL`: only 64 (`ENOPROTOOPT` otherwise).
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.set_ttl(ttl)
    }

    /// The daemon's handle of the listening socket.
    pub fn handle(&self) -> u64 {
        self.inner.handle()
    }

    /// The async listener inside.
    pub fn into_async(self) -> crate::TcpListener {
        self.inner
    }

    /// An endless iterator over accepted connections.
    pub fn incoming(&self) -> impl Iterator<Item = io::Result<TcpStream>> + '_ {
        std::iter::repeat_with(move || self.accept().map(|(stream, _)| stream))
    }
}
