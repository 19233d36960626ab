//! The fd channel: the daemon's second Unix socket (the API socket's path
//! + `.fd`), where local clients receive their sockets as file descriptors.
//!
//! Protocol: `tcpd_proto::fd_channel`. A connection must first present a
//! token from the `OpenFdChannel` RPC, from a process of the same uid as the
//! RPC's session (SO_PEERCRED, and the same pid when the kernel names both),
//! within `--fd-hello-timeout-ms` (5 s by default); the connection then acts for that session only,
//! so a client can never obtain another session's socket. The hello is
//! read here (an async task); the bound connection then goes to the driver
//! ([`Op::FdBind`]), which serves it as one more source of its epoll: each
//! request ([`BoundChannel`], parsed into a [`ChannelCall`]) runs as the
//! typed [`Op`] it stands for, on the driver's thread, with no hop between
//! threads. Descriptors cross with `SCM_RIGHTS` (at most two per request,
//! sockets only: anything else is refused and closed on the blocking
//! pool). `Connect` never waits for the handshake: the client waits on its
//! own descriptor (see `DESIGN-fds.md`), so the channel never blocks. A
//! channel's requests are answered as they come, until its socket is
//! drained (each costs the client a round trip: a client that does not
//! read its responses loses the channel).
//!
//! Bounds: at most `--fd-max-unauthenticated` (64 by default) connections
//! may be waiting for their hello (others are closed at once, counted as
//! `api_fd_refused_unauthenticated`; timeouts as `api_fd_hello_timeouts`);
//! tokens are one per session.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tcpd_proto::fd_channel::{MAX_CONNECT_PAYLOAD, REQUEST_LEN, RESPONSE_LEN, Request, Response};
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::convert;
use crate::errno::Errno;
use crate::fd_link::{ClientPair, socket_cookie};
use crate::ops::{DriverHandle, Op};
use crate::session::{Credentials, SessionInfo};

/// The fd channel's bounds (`--fd-max-unauthenticated`, `--fd-hello-timeout-ms`).
#[derive(Clone, Copy, Debug)]
pub struct FdChannelLimits {
    /// Connections waiting for their hello at once.
    pub max_unauthenticated: usize,
    /// Time a new connection has to present its token.
    pub hello_timeout: Duration,
}

/// Releases a waiting connection's place in the `api_fd_unauthenticated` gauge.
struct Waiting {
    driver: DriverHandle,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.driver.limit_counters().fd_waiting(false);
    }
}

/// Accepts fd-channel connections until the listener fails.
pub async fn serve(listener: UnixListener, driver: DriverHandle, limits: FdChannelLimits) {
    let waiting = Arc::new(Semaphore::new(limits.max_unauthenticated.max(1)));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "fd channel: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&waiting).try_acquire_owned() else {
            driver
                .limit_counters()
                .count(crate::limits::ApiLimit::FdUnauthenticated);
            continue;
        };
        driver.limit_counters().fd_waiting(true);
        let permit = Waiting {
            driver: driver.clone(),
            _permit: permit,
        };
        let driver = driver.clone();
        tokio::spawn(async move {
            let session =
                match tokio::time::timeout(limits.hello_timeout, hello(&stream, &driver)).await {
                    Ok(Ok(Some(session))) => session,
                    Ok(Ok(None)) => return,
                    Err(_) => {
                        driver
                            .limit_counters()
                            .count(crate::limits::ApiLimit::FdHelloTimeout);
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "fd channel: hello failed");
                        return;
                    }
                };
            drop(permit);
            // From now on the driver serves the channel itself (one of its
            // epoll's sources): a request costs no hop between threads.
            let stream = match stream.into_std() {
                Ok(stream) => OwnedFd::from(stream),
                Err(e) => {
                    tracing::debug!(error = %e, "fd channel: cannot hand over");
                    return;
                }
            };
            if let Err(e) = driver
                .call(session, |reply| Op::FdBind { stream, reply })
                .await
            {
                tracing::debug!(error = %e, "fd channel: not bound");
            }
        });
    }
}

/// Reads the hello and binds the connection to its token's session.
async fn hello(stream: &UnixStream, driver: &DriverHandle) -> io::Result<Option<SessionInfo>> {
    let cred = stream.peer_cred()?;
    let creds = Credentials {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid().unwrap_or(0),
        admin: false,
    };
    let Some((Some(Request::Hello { token }), _)) = recv_request(stream).await? else {
        return Ok(None);
    };
    let bound = driver
        .call(DriverHandle::no_session(), |reply| Op::FdHello {
            token,
            creds,
            reply,
        })
        .await;
    match bound {
        Ok(session) => {
            send_response(
                stream,
                Response {
                    errno: 0,
                    handle: 0,
                },
                None,
            )
            .await?;
            Ok(Some(session))
        }
        Err(e) => {
            send_response(stream, failure(&e), None).await?;
            Ok(None)
        }
    }
}

/// Linux's `AF_INET6` = 10; 0 (older clients) and `AF_INET` = 2 are IPv4.
fn family_of(family: i32) -> Result<tcpd_stack::IpFamily, Errno> {
    match family {
        0 | 2 => Ok(tcpd_stack::IpFamily::V4),
        10 => Ok(tcpd_stack::IpFamily::V6),
        _ => Err(Errno::new(
            tcpd_proto::errno::EAFNOSUPPORT,
            "address family not supported",
        )),
    }
}

/// A client-made socketpair from a request's descriptors: the daemon's end
/// first, then the client's (whose cookie is all the daemon keeps of it).
fn client_pair(fds: &mut Vec<OwnedFd>, filler: u32) -> Result<ClientPair, Errno> {
    if fds.len() != 2 {
        return Err(Errno::invalid(
            "a new socket's pair carries two descriptors",
        ));
    }
    let client = fds.pop().ok_or_else(|| Errno::invalid("no client end"))?;
    let daemon_end = fds.pop().ok_or_else(|| Errno::invalid("no daemon end"))?;
    let client_cookie = socket_cookie(&client).map_err(|e| Errno::from_io(&e))?;
    Ok(ClientPair {
        daemon_end,
        client_cookie,
        filler: usize::try_from(filler).unwrap_or(usize::MAX),
    })
}

/// One request of a bound channel, parsed and checked, for the driver
/// ([`crate::sockets::Sockets`] answers it with a [`Response`]).
#[derive(Debug)]
pub enum ChannelCall {
    New {
        family: tcpd_stack::IpFamily,
    },
    Attach {
        handle: u64,
    },
    Claim {
        fd: OwnedFd,
    },
    Adopt {
        family: tcpd_stack::IpFamily,
        pair: ClientPair,
    },
    Connect {
        handle: u64,
        pair: Option<(tcpd_stack::IpFamily, ClientPair)>,
        remote: std::net::SocketAddr,
        options: Vec<tcpd_stack::SockOption>,
    },
    /// A request that fails before the driver looks at it.
    Refused(Errno),
}

/// What a bound channel has next.
#[derive(Debug)]
pub enum Next {
    Call(ChannelCall),
    /// Nothing complete yet.
    Wait,
    /// An unknown request kind or an oversized one: end the channel.
    Close,
}

/// Bytes a bound channel may hold unparsed: one request and its payload.
const MAX_BUFFERED: usize = REQUEST_LEN + MAX_CONNECT_PAYLOAD as usize;

/// A channel bound to a session, served by the driver (non-blocking,
/// edge-triggered in the fd links' epoll): requests are parsed from what
/// [`BoundChannel::fill`] read, answered one by one by the driver, and the
/// responses written at once (a client that does not read its responses
/// loses the channel).
#[derive(Debug)]
pub struct BoundChannel {
    stream: std::os::unix::net::UnixStream,
    pub session: SessionInfo,
    inbuf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl BoundChannel {
    pub fn new(stream: OwnedFd, session: SessionInfo) -> io::Result<BoundChannel> {
        let stream = std::os::unix::net::UnixStream::from(stream);
        stream.set_nonblocking(true)?;
        Ok(BoundChannel {
            stream,
            session,
            inbuf: Vec::new(),
            fds: Vec::new(),
        })
    }

    pub fn socket(&self) -> &std::os::unix::net::UnixStream {
        &self.stream
    }

    /// Reads what the client sent, up to one request's worth unparsed;
    /// false at EOF or on an error (end the channel).
    pub fn fill(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        while self.inbuf.len() < MAX_BUFFERED {
            let room = (MAX_BUFFERED - self.inbuf.len()).min(buf.len());
            match recv_with_fds(self.stream.as_fd(), &mut buf[..room], &mut self.fds) {
                Ok(0) => return false,
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// The next complete request, with the descriptors received so far.
    pub fn next(&mut self) -> Next {
        let Some(header) = self.inbuf.first_chunk::<REQUEST_LEN>() else {
            return Next::Wait;
        };
        let Some(request) = Request::decode(header) else {
            return Next::Close;
        };
        let payload_len = match request {
            Request::Connect { payload_len, .. } if payload_len > MAX_CONNECT_PAYLOAD => {
                return Next::Close;
            }
            Request::Connect { payload_len, .. } => payload_len as usize,
            _ => 0,
        };
        let need = REQUEST_LEN + payload_len;
        if self.inbuf.len() < need {
            return Next::Wait;
        }
        let payload: Vec<u8> = self.inbuf.drain(..need).skip(REQUEST_LEN).collect();
        let fds = std::mem::take(&mut self.fds);
        Next::Call(parse(request, &payload, fds))
    }

    /// Writes a response, with `fd` attached; false if it did not fit
    /// (the client does not read its responses) or the channel broke.
    pub fn respond(&self, response: Response, fd: Option<&OwnedFd>) -> bool {
        let bytes = response.encode();
        let raw = fd.map(|f| [f.as_raw_fd()]);
        let cmsgs: Vec<ControlMessage<'_>> = raw
            .as_ref()
            .map(|f| ControlMessage::ScmRights(f))
            .into_iter()
            .collect();
        loop {
            match sendmsg::<()>(
                self.stream.as_raw_fd(),
                &[IoSlice::new(&bytes)],
                &cmsgs,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(n) => return n == RESPONSE_LEN,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
    }
}

/// A request and what came with it, as the driver's call.
fn parse(request: Request, payload: &[u8], mut fds: Vec<OwnedFd>) -> ChannelCall {
    let call = (|| {
        Ok::<_, Errno>(match request {
            Request::New { family } => ChannelCall::New {
                family: family_of(family)?,
            },
            Request::Attach { handle } => ChannelCall::Attach { handle },
            Request::Claim => ChannelCall::Claim {
                fd: fds.pop().ok_or_else(|| {
                    Errno::new(
                        tcpd_proto::errno::ENOTSOCK,
                        "a claim carries a socket's descriptor",
                    )
                })?,
            },
            Request::Adopt { family, filler } => ChannelCall::Adopt {
                family: family_of(family)?,
                pair: client_pair(&mut fds, filler)?,
            },
            Request::Connect { family, filler, .. } => {
                let req = <tcpd_proto::v2::ConnectRequest as prost::Message>::decode(payload)
                    .map_err(|_| Errno::invalid("malformed ConnectRequest"))?;
                let pair = if req.handle == 0 {
                    Some((family_of(family)?, client_pair(&mut fds, filler)?))
                } else {
                    None
                };
                ChannelCall::Connect {
                    handle: req.handle,
                    pair,
                    remote: convert::socket_addr(req.address.as_ref())?,
                    options: convert::options(&req.options)?,
                }
            }
            Request::Hello { .. } => return Err(Errno::invalid("already bound")),
        })
    })();
    call.unwrap_or_else(ChannelCall::Refused)
}

/// The response to a failed request.
pub fn failure(e: &Errno) -> Response {
    Response {
        errno: e.number,
        handle: 0,
    }
}

/// `fd` if it is a socket. Anything else a client sent is closed on the
/// blocking pool, never here: close(2) of a FUSE file waits for its server
/// (FLUSH), which a hostile client controls; a socket closes at once.
fn only_sockets(fd: OwnedFd) -> Option<OwnedFd> {
    if socket_cookie(&fd).is_ok() {
        return Some(fd);
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || drop(fd))),
        // Outside a runtime (unit tests): a thread of its own.
        Err(_) => drop(std::thread::spawn(move || drop(fd))),
    }
    None
}

/// The next request and the descriptors sent with it (at most
/// [`MAX_FDS`], sockets only: anything else is closed off this task, see
/// [`only_sockets`]); `None` at EOF. `Some((None, _))`: an unknown request
/// kind.
async fn recv_request(stream: &UnixStream) -> io::Result<Option<(Option<Request>, Vec<OwnedFd>)>> {
    let mut buf = [0u8; REQUEST_LEN];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < REQUEST_LEN {
        stream.readable().await?;
        match stream.try_io(Interest::READABLE, || {
            recv_with_fds(stream.as_fd(), &mut buf[got..], &mut fds)
        }) {
            Ok(0) => return Ok(None),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some((Request::decode(&buf), fds)))
}

/// Descriptors one request may carry (a client-made pair).
const MAX_FDS: usize = 2;

/// One recvmsg(2); received sockets are added to `fds` up to [`MAX_FDS`]
/// (anything else is closed, see [`only_sockets`]).
fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let (n, received) = tcpd_sys::recv_with_fds(sock, buf)?;
    for fd in received {
        if let Some(fd) = only_sockets(fd)
            && fds.len() < MAX_FDS
        {
            fds.push(fd);
        }
    }
    Ok(n)
}

/// Sends a response, with `fd` attached to its first byte.
async fn send_response(
    stream: &UnixStream,
    response: Response,
    fd: Option<&OwnedFd>,
) -> io::Result<()> {
    let bytes = response.encode();
    let mut sent = 0;
    while sent < RESPONSE_LEN {
        stream.writable().await?;
        let raw = fd.map(AsRawFd::as_raw_fd);
        match stream.try_io(Interest::WRITABLE, || {
            let fds = raw.map(|r| [r]);
            let cmsgs: Vec<ControlMessage<'_>> = match (&fds, sent) {
                (Some(f), 0) => vec![ControlMessage::ScmRights(f)],
                _ => Vec::new(),
            };
            sendmsg::<()>(
                stream.as_raw_fd(),
                &[IoSlice::new(&bytes[sent..])],
                &cmsgs,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from)
        }) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
