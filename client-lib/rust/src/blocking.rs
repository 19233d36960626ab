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
use std::net::{Shutdown, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Client;
use crate::addr::{self, ToSocketAddrsV4};
use crate::runtime::block_on;

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
    timeout: Option<Duration>,
    future: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match timeout {
        None => block_on(future)?,
        Some(limit) => block_on(async move {
            match tokio::time::timeout(limit, future).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::from_raw_os_error(tcpd_proto::errno::EAGAIN)),
            }
        })?,
    }
}

/// A blocking TCP connection through tcpd, like `std::net::TcpStream`.
#[derive(Debug)]
pub struct TcpStream {
    inner: crate::TcpStream,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl TcpStream {
    /// Connects through the process-wide session.
    pub fn connect<A: ToSocketAddrsV4>(addr: A) -> io::Result<TcpStream> {
        let client = shared_client()?;
        TcpStream::connect_with(&client, addr)
    }

    /// Connects through `client`.
    pub fn connect_with<A: ToSocketAddrsV4>(client: &Client, addr: A) -> io::Result<TcpStream> {
        let targets = addr::resolve_sync(&addr)?;
        let inner = block_on(crate::TcpStream::connect_any(client, &targets))??;
        Ok(TcpStream::from_async(inner))
    }

    /// Wraps an async stream.
    pub fn from_async(inner: crate::TcpStream) -> TcpStream {
        TcpStream {
            inner,
            read_timeout: None,
            write_timeout: None,
        }
    }

    /// The async stream inside.
    pub fn into_async(self) -> crate::TcpStream {
        self.inner
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        self.inner.peer_addr()
    }

    /// The local address (one call to the daemon).
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        self.inner.local_addr()
    }

    /// The daemon's handle of the socket.
    pub fn handle(&self) -> u64 {
        self.inner.handle()
    }

    /// shutdown(2); the write direction is ordered after data written so far.
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        block_on(self.inner.shutdown_with(how))?
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        block_on(self.inner.set_nodelay(nodelay))?
    }

    /// Reads `TCP_NODELAY`.
    pub fn nodelay(&self) -> io::Result<bool> {
        block_on(self.inner.nodelay())?
    }

    /// Sets `SO_LINGER`.
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        block_on(self.inner.set_linger(linger))?
    }

    /// Reads and clears `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        block_on(self.inner.take_error())?
    }

    /// Bounds how long a read waits (`None`: forever); an expired read fails
    /// with `EAGAIN` (`WouldBlock`) like `SO_RCVTIMEO`. A zero duration is
    /// `EINVAL`, as in std.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(io::Error::from_raw_os_error(tcpd_proto::errno::EINVAL));
        }
        self.read_timeout = timeout;
        Ok(())
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.read_timeout)
    }

    /// Bounds how long a write waits for queue space, like `SO_SNDTIMEO`.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(io::Error::from_raw_os_error(tcpd_proto::errno::EINVAL));
        }
        self.write_timeout = timeout;
        Ok(())
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.write_timeout)
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let inner = &mut self.inner;
        block_on_with_timeout(self.read_timeout, inner.read(buf))
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let inner = &mut self.inner;
        block_on_with_timeout(self.write_timeout, inner.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let inner = &mut self.inner;
        block_on_with_timeout(self.write_timeout, inner.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        let inner = &mut self.inner;
        block_on_with_timeout(self.write_timeout, inner.flush())
    }
}

/// A blocking TCP listener through tcpd, like `std::net::TcpListener`.
#[derive(Debug)]
pub struct TcpListener {
    inner: crate::TcpListener,
}

impl TcpListener {
    /// Binds and listens through the process-wide session.
    pub fn bind<A: ToSocketAddrsV4>(addr: A) -> io::Result<TcpListener> {
        let client = shared_client()?;
        TcpListener::bind_with(&client, addr)
    }

    /// Binds and listens through `client`.
    pub fn bind_with<A: ToSocketAddrsV4>(client: &Client, addr: A) -> io::Result<TcpListener> {
        let targets = addr::resolve_sync(&addr)?;
        let inner = block_on(crate::TcpListener::bind_any(client, &targets))??;
        Ok(TcpListener { inner })
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddrV4)> {
        let (stream, peer) = block_on(self.inner.accept())??;
        Ok((TcpStream::from_async(stream), peer))
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        self.inner.local_addr()
    }

    /// The daemon's handle of the listening socket.
    pub fn handle(&self) -> u64 {
        self.inner.handle()
    }

    /// An endless iterator over accepted connections.
    pub fn incoming(&self) -> impl Iterator<Item = io::Result<TcpStream>> + '_ {
        std::iter::repeat_with(move || self.accept().map(|(stream, _)| stream))
    }
}
