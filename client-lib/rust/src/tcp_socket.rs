//! [`TcpSocket`]: a socket configured before it connects or listens, with
//! the API of `tokio::net::TcpSocket`.
//!
//! tokio's `TcpSocket` methods are synchronous system calls. Here the
//! daemon's socket is created lazily: options set before anything needs the
//! daemon are checked (against the ranges setsockopt accepts, from
//! `tcpd_types`) and kept, then sent with the one request that creates the
//! socket — `connect` (socket + options + connect: one round trip, the
//! `StreamConnect` of the connection's stream) or `listen` (socket +
//! options + bind + listen: one `Listen` call). `bind`, `local_addr`,
//! `take_error` and the getters of options not set here need the daemon's
//! socket: they create it (one `Socket` call with the options and the bind
//! address) and wait for the daemon's answer, blocking the calling thread
//! for that round trip as a system call would. After that, setters and
//! getters are one unary call each.

use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tcpd_proto::{errno, v2};

use crate::runtime::{block_on, block_on_at};
use crate::sockopt::{OptionName, SockOption, wire_name};
use crate::stream::{Cached, check_ttl};
use crate::{Client, Socket, TcpListener, TcpStream};

/// A TCP socket not yet connected or listening (tokio's `TcpSocket`).
#[derive(Debug)]
pub struct TcpSocket {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None`: the process-wide session, opened when first needed.
    client: Option<Client>,
    /// The daemon's socket, once something needed it.
    socket: Option<Socket>,
    /// Its bound address, once bound.
    local: Option<SocketAddr>,
    /// Options set before the socket existed, in order.
    pending: Vec<SockOption>,
    /// What the connection or listener starts with (sync getters).
    cached: Cached,
    /// The daemon socket's family (socket(2)'s domain); unspecified: that
    /// of the address bound or connected to.
    family: v2::AddressFamily,
}

fn to_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl TcpSocket {
    /// A new IPv4 socket in the process-wide session ([`Client::shared`]).
    pub fn new_v4() -> io::Result<TcpSocket> {
        Ok(TcpSocket::in_session(None, v2::AddressFamily::Inet))
    }

    /// A new IPv6 socket in the process-wide session: it reaches IPv4 too
    /// through IPv4-mapped addresses, and listening on `[::]` it accepts
    /// IPv4 unless `IPV6_V6ONLY` is set (as Linux's).
    pub fn new_v6() -> io::Result<TcpSocket> {
        Ok(TcpSocket::in_session(None, v2::AddressFamily::Inet6))
    }

    /// A new socket in `client`'s session, of the family of the address it
    /// is bound or connected to.
    pub fn new_in(client: &Client) -> TcpSocket {
        TcpSocket::in_session(Some(client.clone()), v2::AddressFamily::Unspecified)
    }

    fn in_session(client: Option<Client>, family: v2::AddressFamily) -> TcpSocket {
        TcpSocket {
            inner: Mutex::new(Inner {
                client,
                socket: None,
                local: None,
                pending: Vec::new(),
                cached: Cached::default(),
                family,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// setsockopt(2): kept until the socket exists, else one call.
    fn set(&self, option: SockOption) -> io::Result<()> {
        check(&option)?;
        let mut inner = self.lock();
        inner.cached.note(&option);
        match &inner.socket {
            Some(socket) => block_on_at(socket.client().home(), socket.set_option(option))?,
            None => {
                inner.pending.push(option);
                Ok(())
            }
        }
    }

    /// getsockopt(2): the value set here, else the daemon's.
    fn get(&self, name: OptionName) -> io::Result<SockOption> {
        let mut inner = self.lock();
        if inner.socket.is_none()
            && let Some(set) = inner.pending.iter().rev().find(|o| o.name() == name)
        {
            return Ok(set.clone());
        }
        let socket = inner.socket()?;
        block_on_at(socket.client().home(), socket.get_option(name))?
    }

    /// `SO_KEEPALIVE`.
    pub fn set_keepalive(&self, keepalive: bool) -> io::Result<()> {
        self.set(SockOption::KeepAlive(keepalive))
    }

    /// `SO_KEEPALIVE`.
    pub fn keepalive(&self) -> io::Result<bool> {
        match self.get(OptionName::KeepAlive)? {
            SockOption::KeepAlive(on) => Ok(on),
            _ => Err(io::Error::from_raw_os_error(errno::EPROTO)),
        }
    }

    /// `SO_REUSEADDR`.
    pub fn set_reuseaddr(&self, reuseaddr: bool) -> io::Result<()> {
        self.set(SockOption::ReuseAddr(reuseaddr))
    }

    /// `SO_REUSEADDR`.
    pub fn reuseaddr(&self) -> io::Result<bool> {
        match self.get(OptionName::ReuseAddr)? {
            SockOption::ReuseAddr(on) => Ok(on),
            _ => Err(io::Error::from_raw_os_error(errno::EPROTO)),
        }
    }

    /// `SO_REUSEPORT`: tcpd has no load-balanced listeners, so this fails
    /// with `ENOPROTOOPT` (as a kernel without the option would).
    pub fn set_reuseport(&self, _reuseport: bool) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(errno::ENOPROTOOPT))
    }

    /// `SO_REUSEPORT`: always off with tcpd.
    pub fn reuseport(&self) -> io::Result<bool> {
        Ok(false)
    }

    /// `SO_SNDBUF` (the daemon clamps it as Linux does).
    pub fn set_send_buffer_size(&self, size: u32) -> io::Result<()> {
        self.set(SockOption::SendBuffer(size))
    }

    /// `SO_SNDBUF`.
    pub fn send_buffer_size(&self) -> io::Result<u32> {
        match self.get(OptionName::SendBuffer)? {
            SockOption::SendBuffer(n) => Ok(n),
            _ => Err(io::Error::from_raw_os_error(errno::EPROTO)),
        }
    }

    /// `SO_RCVBUF` (the daemon clamps it as Linux does).
    pub fn set_recv_buffer_size(&self, size: u32) -> io::Result<()> {
        self.set(SockOption::RecvBuffer(size))
    }

    /// `SO_RCVBUF`.
    pub fn recv_buffer_size(&self) -> io::Result<u32> {
        match self.get(OptionName::RecvBuffer)? {
            SockOption::RecvBuffer(n) => Ok(n),
            _ => Err(io::Error::from_raw_os_error(errno::EPROTO)),
        }
    }

    /// `SO_LINGER`.
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        self.set(SockOption::Linger(linger.map(|d| to_u32(d.as_secs()))))
    }

    /// `SO_LINGER`.
    pub fn linger(&self) -> io::Result<Option<Duration>> {
        match self.get(OptionName::Linger)? {
            SockOption::Linger(l) => Ok(l.map(|s| Duration::from_secs(u64::from(s)))),
            _ => Err(io::Error::from_raw_os_error(errno::EPROTO)),
        }
    }

    /// `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.set(SockOption::NoDelay(nodelay))
    }

    /// `TCP_NODELAY`.
    pub fn nodelay(&self) -> io::Result<bool> {
        match self.get(OptionName::NoDelay)? {
            SockOption::NoDelay(on) => Ok(on),
            _ => Err(io::Error::from_raw_os_error(errno::EPROTO)),
        }
    }

    /// `IP_TTL` (1..=255, `EINVAL` otherwise).
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.set(check_ttl(ttl)?)
    }

    /// getsockname(2): the bound address (`0.0.0.0:0` before `bind`).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        let mut inner = self.lock();
        if let Some(local) = inner.local {
            return Ok(local);
        }
        let socket = inner.socket()?;
        block_on_at(socket.client().home(), socket.local_addr())?
    }

    /// `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self.get(OptionName::Error)? {
            SockOption::Error(0) => Ok(None),
            SockOption::Error(e) => Ok(Some(io::Error::from_raw_os_error(e))),
            _ => Err(io::Error::from_raw_os_error(errno::EPROTO)),
        }
    }

    /// bind(2), waiting for the daemon (`EADDRINUSE` is reported here).
    pub fn bind(&self, addr: SocketAddr) -> io::Result<()> {
        let mut inner = self.lock();
        match &inner.socket {
            Some(socket) => {
                let home = socket.client().home();
                block_on_at(home, socket.bind(addr))??;
                let local = block_on_at(home, socket.local_addr())??;
                inner.local = Some(local);
            }
            None => inner.create(Some(addr))?,
        }
        Ok(())
    }

    /// Connects (socket + options + connect in one round trip when nothing
    /// created the socket before), yielding the stream.
    pub async fn connect(self, addr: SocketAddr) -> io::Result<TcpStream> {
        let mut inner = self
            .inner
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        // Nothing needed the daemon yet: the socket is made by this async
        // call, so it can live in the caller runtime's own session (the
        // synchronous calls below must use one that a blocked thread
        // cannot stop: see `Inner::client`).
        let client = match (&inner.client, &inner.socket) {
            (None, None) => Client::shared().await?,
            _ => inner.client()?,
        };
        let cached = inner.cached;
        let (handle, options) = match inner.socket.take() {
            // The socket is handed to the stream (which closes it).
            Some(socket) => (socket.into_raw_handle(), Vec::new()),
            None => (0, settings(&inner.pending)),
        };
        let connect = v2::StreamConnect {
            handle,
            options,
            bind: None,
            remote: Some(addr.into()),
            family: inner.family as i32,
        };
        TcpStream::open(&client, v2::stream_open::How::Connect(connect), cached).await
    }

    /// listen(2) (socket + options + listen in one call when nothing
    /// created the socket before); `backlog` is clamped by the daemon.
    pub fn listen(self, backlog: u32) -> io::Result<TcpListener> {
        let mut inner = self
            .inner
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let client = inner.client()?;
        let (handle, options, bind) = match &inner.socket {
            Some(socket) => (socket.handle(), Vec::new(), None),
            // Linux binds an unbound listening socket to a free port.
            None => (0, settings(&inner.pending), None),
        };
        let request = v2::ListenRequest {
            handle,
            options,
            bind,
            backlog: i32::try_from(backlog).unwrap_or(i32::MAX),
            family: inner.family as i32,
        };
        let rpc_client = client.clone();
        let reply = block_on_at(client.home(), async move {
            rpc_client.answer(rpc_client.rpc().listen(request)).await
        })?
        .map_err(|s| client.to_io(s))?
        .into_inner();
        let socket = match inner.socket.take() {
            Some(socket) => socket,
            None => Socket::from_raw_handle(client, reply.handle),
        };
        let local = crate::socket::addr_from_wire(reply.local)?;
        Ok(TcpListener::from_parts(socket, local, inner.cached))
    }
}

impl Inner {
    /// The socket's session: the one it was made in, else the default
    /// session as seen from [`block_on`] — the library's (a synchronous
    /// call waits for the daemon on this thread, and a session living on
    /// the current-thread runtime this thread may run could not answer).
    fn client(&mut self) -> io::Result<Client> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = block_on(Client::shared())??;
        self.client = Some(client.clone());
        Ok(client)
    }

    /// The daemon's socket, created (with the pending options) if needed.
    fn socket(&mut self) -> io::Result<&Socket> {
        if self.socket.is_none() {
            self.create(None)?;
        }
        self.socket
            .as_ref()
            .ok_or_else(|| io::Error::from_raw_os_error(errno::EBADF))
    }

    /// One `Socket` call: socket + pending options + bind.
    fn create(&mut self, bind: Option<SocketAddr>) -> io::Result<()> {
        let client = self.client()?;
        let request = v2::SocketRequest {
            options: settings(&self.pending),
            bind: bind.map(Into::into),
            family: self.family as i32,
        };
        let rpc_client = client.clone();
        let reply = block_on_at(client.home(), async move {
            rpc_client.answer(rpc_client.rpc().socket(request)).await
        })?
        .map_err(|s| client.to_io(s))?
        .into_inner();
        self.socket = Some(Socket::from_raw_handle(client, reply.handle));
        self.pending.clear();
        if bind.is_some() {
            self.local = Some(crate::socket::addr_from_wire(reply.local)?);
        }
        Ok(())
    }
}

/// The wire form of options, in order.
fn settings(options: &[SockOption]) -> Vec<v2::OptionSetting> {
    options
        .iter()
        .map(|o| v2::OptionSetting {
            option: wire_name(o.name()),
            value: Some(o.to_wire()),
        })
        .collect()
}

/// Checks an option's value against what setsockopt accepts (so a queued
/// option cannot fail later, where nobody would see the error).
fn check(option: &SockOption) -> io::Result<()> {
    let kind = option.name().kind();
    let ok = match option.to_wire().value {
        Some(v2::option_value::Value::Int(i)) => kind.accept_int(i).is_some(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(errno::EINVAL))
    }
}
