//! [`TcpListener`]: a listening socket that yields [`TcpStream`]s.
//!
//! `bind` is socket + `SO_REUSEADDR` (as tokio sets it) + bind + listen with
//! a backlog of [`DEFAULT_BACKLOG`]; the bound address is read back once
//! (so port 0 gives the chosen port) and cached. Each accepted connection
//! gets its own Stream RPC, started as soon as it is accepted.

use std::io;
use std::net::SocketAddr;

use futures::Stream;

use crate::addr::{self, ToSocketAddrs};
use crate::sockopt::{OptionName, SockOption};
use crate::stream::Cached;
use crate::{Client, Socket, TcpStream};

/// Backlog used by [`TcpListener::bind`] (the daemon clamps it to its own
/// maximum, as Linux clamps to `somaxconn`).
pub const DEFAULT_BACKLOG: i32 = 1024;

/// A TCP listener through tcpd, like `tokio::net::TcpListener`.
///
/// ```no_run
/// use tokio::io::AsyncWriteExt;
///
/// # async fn demo() -> std::io::Result<()> {
/// let listener = tcpd_client::TcpListener::bind("0.0.0.0:8080").await?;
/// loop {
///     let (mut stream, peer) = listener.accept().await?;
///     tokio::spawn(async move {
///         let greeting = format!("hello {peer}\n");
///         let _ = stream.write_all(greeting.as_bytes()).await;
///     });
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct TcpListener {
    socket: Socket,
    local: SocketAddr,
    /// Options accepted connections inherit, as far as this library set
    /// them (Linux copies the listener's options into accepted sockets).
    inherited: std::sync::Mutex<Cached>,
}

impl TcpListener {
    /// Binds and listens on `addr` through the process-wide session
    /// ([`Client::shared`]). With several addresses, the first that binds
    /// wins.
    pub async fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        let targets = addr::resolve(&addr).await?;
        let client = Client::shared().await?;
        TcpListener::bind_any(&client, &targets).await
    }

    pub(crate) async fn bind_any(
        client: &Client,
        targets: &[SocketAddr],
    ) -> io::Result<TcpListener> {
        let mut last = io::Error::from_raw_os_error(tcpd_proto::errno::EINVAL);
        for &target in targets {
            match TcpListener::bind_one(client, target).await {
                Ok(listener) => return Ok(listener),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// socket + SO_REUSEADDR (as tokio and std set for listeners) + bind +
    /// listen, in one call.
    async fn bind_one(client: &Client, addr: SocketAddr) -> io::Result<TcpListener> {
        let request = tcpd_proto::v2::ListenRequest {
            handle: 0,
            options: vec![tcpd_proto::v2::OptionSetting {
                option: crate::sockopt::wire_name(OptionName::ReuseAddr),
                value: Some(SockOption::ReuseAddr(true).to_wire()),
            }],
            bind: Some(addr.into()),
            backlog: DEFAULT_BACKLOG,
            ..Default::default()
        };
        let reply = client
            .answer(client.rpc().listen(request))
            .await
            .map_err(|s| client.to_io(s))?
            .into_inner();
        let socket = Socket::from_raw_handle(client.clone(), reply.handle);
        let local = crate::socket::addr_from_wire(reply.local)?;
        Ok(TcpListener {
            socket,
            local,
            inherited: Default::default(),
        })
    }

    /// A listener from its parts (for [`crate::TcpSocket::listen`]).
    pub(crate) fn from_parts(socket: Socket, local: SocketAddr, inherited: Cached) -> TcpListener {
        TcpListener {
            socket,
            local,
            inherited: std::sync::Mutex::new(inherited),
        }
    }

    /// Turns a socket that is already listening into a listener.
    pub async fn from_socket(socket: Socket) -> io::Result<TcpListener> {
        let local = socket.local_addr().await?;
        Ok(TcpListener {
            socket,
            local,
            inherited: Default::default(),
        })
    }

    /// Waits for the next connection (accept(2)).
    ///
    /// Cancel safety: see [`Socket::accept`].
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let accept = tcpd_proto::v2::StreamAccept {
            listener: self.socket.handle(),
        };
        let how = tcpd_proto::v2::stream_open::How::Accept(accept);
        let inherited = *self.inherited();
        let stream = TcpStream::open(self.socket.client(), how, inherited).await?;
        let peer = stream.peer_addr()?;
        Ok((stream, peer))
    }

    /// The bound address (cached at bind time).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn inherited(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.inherited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `IP_TTL` of the listener (and of the connections it accepts): as
    /// set through this library, else [`crate::stream::DEFAULT_TTL`] (64).
    pub fn ttl(&self) -> io::Result<u32> {
        Ok(self.inherited().ttl())
    }

    /// `IP_TTL` (1..=255, `EINVAL` otherwise): one call to the daemon,
    /// waited for on the calling thread (as the syscall blocks it);
    /// accepted connections inherit it, as on Linux.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        let option = crate::stream::check_ttl(ttl)?;
        crate::runtime::block_on_at(self.client().home(), self.socket.set_option(option.clone()))??;
        self.inherited().note(&option);
        Ok(())
    }

    /// The daemon's handle of the listening socket.
    pub fn handle(&self) -> u64 {
        self.socket.handle()
    }

    /// The session the listener belongs to.
    pub fn client(&self) -> &Client {
        self.socket.client()
    }

    /// The accepted connections as an endless stream.
    pub fn incoming(&self) -> impl Stream<Item = io::Result<TcpStream>> + '_ {
        futures::stream::unfold(self, |listener| async move {
            let next = listener.accept().await.map(|(stream, _)| stream);
            Some((next, listener))
        })
    }
}
