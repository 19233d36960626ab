//! [`Socket`]: the daemon's socket calls, one method per RPC.
//!
//! This is the BSD-socket-shaped layer (what a C shim maps `socket`, `bind`,
//! `listen`, `accept`, `connect`, `read`, `write`, `shutdown`, `close`,
//! `getsockopt`/`setsockopt`, `getsockname`/`getpeername` onto). Each method
//! is exactly one unary call, so it is simple but pays a round trip per call;
//! bulk data should go through [`TcpStream`](crate::TcpStream), which rides
//! the Stream RPC (see [`Socket::into_stream`]).
//!
//! Ownership: a `Socket` owns its daemon handle and closes it when dropped
//! (the `Close` call is sent in the background on the library's runtime).
//! [`Socket::into_raw_handle`] / [`Socket::from_raw_handle`] move that
//! ownership in and out, like `IntoRawFd` / `FromRawFd`.

use std::io;
use std::net::{Shutdown, SocketAddr};

use tcpd_proto::v2;

use crate::sockopt::{EPROTO, OptionName, SendFlags, SockOption, TcpInfo};
use crate::{Client, TcpStream};

/// Upper bound the daemon puts on one `Read` (1 MiB, see the proto).
pub const MAX_READ_LEN: usize = 1024 * 1024;

/// One socket of a session, with its raw calls.
#[derive(Debug)]
pub struct Socket {
    client: Client,
    /// `None` once ownership has been given away.
    handle: Option<u64>,
}

/// How [`Socket::read`] behaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadFlags {
    /// Fail with `EAGAIN` instead of waiting for data (`O_NONBLOCK`).
    pub nonblocking: bool,
    /// Leave the data in the receive queue (`MSG_PEEK`).
    pub peek: bool,
    /// Read the urgent byte (`MSG_OOB`): `EINVAL` when there is none (or
    /// `SO_OOBINLINE` is on), `EAGAIN` while it has not arrived; never waits.
    pub oob: bool,
}

/// Converts the daemon's address reply, refusing malformed ones.
pub(crate) fn addr_from_wire(addr: Option<v2::SocketAddress>) -> io::Result<SocketAddr> {
    match addr.map(|a| a.to_std()) {
        Some(Ok(a)) => Ok(a),
        _ => Err(io::Error::from_raw_os_error(EPROTO)),
    }
}

impl Socket {
    /// Creates an unbound socket in `client`'s session (socket(2)).
    pub async fn new(client: &Client) -> io::Result<Socket> {
        let reply = client
            .answer(client.rpc().socket(v2::SocketRequest::default()))
            .await
            .map_err(|s| client.to_io(s))?
            .into_inner();
        Ok(Socket::from_raw_handle(client.clone(), reply.handle))
    }

    /// Takes ownership of `handle`, a socket of `client`'s session.
    pub fn from_raw_handle(client: Client, handle: u64) -> Socket {
        Socket {
            client,
            handle: Some(handle),
        }
    }

    /// Gives up ownership: the handle is no longer closed on drop.
    pub fn into_raw_handle(mut self) -> u64 {
        self.handle.take().unwrap_or(0)
    }

    /// The daemon's handle for this socket.
    pub fn handle(&self) -> u64 {
        self.handle.unwrap_or(0)
    }

    /// The session this socket belongs to.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// bind(2).
    pub async fn bind(&self, addr: impl Into<SocketAddr>) -> io::Result<()> {
        let request = v2::BindRequest {
            handle: self.handle(),
            address: Some(addr.into().into()),
        };
        self.client
            .answer(self.client.rpc().bind(request))
            .await
            .map_err(|s| self.client.to_io(s))?;
        Ok(())
    }

    /// listen(2); `backlog <= 0` picks the daemon's small default.
    pub async fn listen(&self, backlog: i32) -> io::Result<()> {
        let request = v2::ListenRequest {
            handle: self.handle(),
            backlog,
            ..Default::default()
        };
        self.client
            .answer(self.client.rpc().listen(request))
            .await
            .map_err(|s| self.client.to_io(s))?;
        Ok(())
    }

    /// accept(2): the new connection's socket and its peer. Non-blocking
    /// fails with `EAGAIN` when no connection is waiting.
    ///
    /// Cancel safety: dropping the future while the daemon waits asks it to
    /// give up; a connection accepted at that very moment may stay with the
    /// session until it ends.
    pub async fn accept(&self, nonblocking: bool) -> io::Result<(Socket, SocketAddr)> {
        let request = v2::AcceptRequest {
            handle: self.handle(),
            nonblocking,
        };
        let reply = self
            .client
            .answer(self.client.rpc().accept(request))
            .await
            .map_err(|s| self.client.to_io(s))?
            .into_inner();
        let socket = Socket::from_raw_handle(self.client.clone(), reply.handle);
        let peer = addr_from_wire(reply.peer)?;
        Ok((socket, peer))
    }

    /// connect(2). Non-blocking returns `EINPROGRESS` at once; completion
    /// shows as `PollFlags::OUT` (or `ERR`) and the outcome as
    /// [`OptionName::Error`].
    pub async fn connect(&self, addr: impl Into<SocketAddr>, nonblocking: bool) -> io::Result<()> {
        let request = v2::ConnectRequest {
            handle: self.handle(),
            address: Some(addr.into().into()),
            nonblocking,
            options: Vec::new(),
        };
        self.client
            .answer(self.client.rpc().connect(request))
            .await
            .map_err(|s| self.client.to_io(s))?;
        Ok(())
    }

    /// read(2)/recv(2): at most `max_len` bytes (capped at
    /// [`MAX_READ_LEN`]); an empty result is end of stream.
    pub async fn read(&self, max_len: usize, flags: ReadFlags) -> io::Result<Vec<u8>> {
        let request = v2::ReadRequest {
            handle: self.handle(),
            max_len: u32::try_from(max_len.min(MAX_READ_LEN)).unwrap_or(u32::MAX),
            nonblocking: flags.nonblocking,
            peek: flags.peek,
            oob: flags.oob,
        };
        let reply = self
            .client
            .answer(self.client.rpc().read(request))
            .await
            .map_err(|s| self.client.to_io(s))?
            .into_inner();
        Ok(reply.data.into())
    }

    /// write(2): blocking queues all of `data` (or fails); non-blocking
    /// queues what fits and fails with `EAGAIN` if nothing does. Returns the
    /// number of bytes queued.
    pub async fn write(&self, data: &[u8], nonblocking: bool) -> io::Result<usize> {
        self.write_with_flags(data, nonblocking, SendFlags::empty())
            .await
    }

    /// send(2) with flags (`MSG_MORE`, `MSG_EOR`, `MSG_OOB`), otherwise as
    /// [`Socket::write`].
    pub async fn write_with_flags(
        &self,
        data: &[u8],
        nonblocking: bool,
        flags: SendFlags,
    ) -> io::Result<usize> {
        let request = v2::WriteRequest {
            handle: self.handle(),
            data: bytes::Bytes::copy_from_slice(data),
            nonblocking,
            flags: flags.bits(),
        };
        let reply = self
            .client
            .answer(self.client.rpc().write(request))
            .await
            .map_err(|s| self.client.to_io(s))?
            .into_inner();
        usize::try_from(reply.written)
            .ok()
            .filter(|n| *n <= data.len())
            .ok_or_else(|| io::Error::from_raw_os_error(EPROTO))
    }

    /// shutdown(2).
    pub async fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => v2::ShutdownHow::Read,
            Shutdown::Write => v2::ShutdownHow::Write,
            Shutdown::Both => v2::ShutdownHow::Both,
        };
        let request = v2::ShutdownRequest {
            handle: self.handle(),
            how: how as i32,
        };
        self.client
            .answer(self.client.rpc().shutdown(request))
            .await
            .map_err(|s| self.client.to_io(s))?;
        Ok(())
    }

    /// close(2), waiting for the daemon's answer (dropping closes too, in
    /// the background, without reporting errors).
    pub async fn close(mut self) -> io::Result<()> {
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        close_handle(&self.client, handle).await
    }

    /// setsockopt(2).
    pub async fn set_option(&self, option: SockOption) -> io::Result<()> {
        set_option(&self.client, self.handle(), option).await
    }

    /// getsockopt(2).
    pub async fn get_option(&self, name: OptionName) -> io::Result<SockOption> {
        get_option(&self.client, self.handle(), name).await
    }

    /// getsockopt(TCP_INFO): Linux's `struct tcp_info` fields.
    pub async fn tcp_info(&self) -> io::Result<TcpInfo> {
        tcp_info(&self.client, self.handle()).await
    }

    /// getsockname(2).
    pub async fn local_addr(&self) -> io::Result<SocketAddr> {
        local_addr(&self.client, self.handle()).await
    }

    /// getpeername(2); `ENOTCONN` when not connected.
    pub async fn peer_addr(&self) -> io::Result<SocketAddr> {
        let request = v2::GetPeerNameRequest {
            handle: self.handle(),
        };
        let reply = self
            .client
            .answer(self.client.rpc().get_peer_name(request))
            .await
            .map_err(|s| self.client.to_io(s))?
            .into_inner();
        addr_from_wire(reply.address)
    }

    /// Connects this (unconnected, possibly bound and configured) socket to
    /// `addr` on its own Stream RPC: the fast data path, as
    /// `tokio::net::TcpSocket::connect`.
    pub async fn connect_stream(mut self, addr: impl Into<SocketAddr>) -> io::Result<TcpStream> {
        let handle = self.handle();
        let connect = v2::StreamConnect {
            handle,
            remote: Some(addr.into().into()),
            ..Default::default()
        };
        let how = v2::stream_open::How::Connect(connect);
        let stream = TcpStream::open(&self.client, how, Default::default()).await?;
        // The stream owns the socket now.
        self.handle = None;
        Ok(stream)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            close_in_background(self.client.clone(), handle);
        }
    }
}

/// The `Close` call.
pub(crate) async fn close_handle(client: &Client, handle: u64) -> io::Result<()> {
    client
        .answer(client.rpc().close(v2::CloseRequest {
            handle,
            abort: false,
        }))
        .await
        .map_err(|s| client.to_io(s))?;
    Ok(())
}

/// Sends `Close` without waiting; errors (a session already gone, which
/// closed the socket anyway) have no one to be reported to.
pub(crate) fn close_in_background(client: Client, handle: u64) {
    // If the runtime cannot start, the session's end still closes the socket.
    let home = client.home().clone();
    let _ = home.spawn(async move {
        let _ = close_handle(&client, handle).await;
    });
}

/// getsockopt(2) on a raw handle.
pub(crate) async fn get_option(
    client: &Client,
    handle: u64,
    name: OptionName,
) -> io::Result<SockOption> {
    let request = v2::GetOptionRequest {
        handle,
        option: crate::sockopt::wire_name(name),
    };
    let reply = client
        .answer(client.rpc().get_option(request))
        .await
        .map_err(|s| client.to_io(s))?
        .into_inner();
    SockOption::from_wire(name, reply.value)
}

/// getsockopt(TCP_INFO) on a raw handle.
pub(crate) async fn tcp_info(client: &Client, handle: u64) -> io::Result<TcpInfo> {
    match get_option(client, handle, OptionName::TcpInfo).await? {
        SockOption::TcpInfo(info) => Ok(*info),
        _ => Err(io::Error::from_raw_os_error(EPROTO)),
    }
}

/// setsockopt(2) on a raw handle.
pub(crate) async fn set_option(client: &Client, handle: u64, option: SockOption) -> io::Result<()> {
    let request = v2::SetOptionRequest {
        handle,
        option: crate::sockopt::wire_name(option.name()),
        value: Some(option.to_wire()),
    };
    client
        .answer(client.rpc().set_option(request))
        .await
        .map_err(|s| client.to_io(s))?;
    Ok(())
}

/// getsockname(2) on a raw handle.
pub(crate) async fn local_addr(client: &Client, handle: u64) -> io::Result<SocketAddr> {
    let reply = client
        .answer(
            client
                .rpc()
                .get_socket_name(v2::GetSocketNameRequest { handle }),
        )
        .await
        .map_err(|s| client.to_io(s))?
        .into_inner();
    addr_from_wire(reply.address)
}
