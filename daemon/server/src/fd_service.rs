//! The fd channel: the daemon's second Unix socket (the API socket's path
//! + `.fd`), where local clients receive their sockets as file descriptors.
//!
//! Protocol: `tcpd_proto::fd_channel`. A connection must first present a
//! token from the `OpenFdChannel` RPC, from a process of the same uid as the
//! RPC's session (SO_PEERCRED, and the same pid when the kernel names both),
//! within `--fd-hello-timeout-ms` (5 s by default); the connection then acts for that session only,
//! so a client can never obtain another session's socket. Each request is a
//! typed [`Op`] to the driver; descriptors cross with `SCM_RIGHTS` (at most
//! two per request, sockets only: anything else is refused and closed off
//! the async workers). `Connect` never waits for the handshake: the client
//! waits on its own descriptor (see `DESIGN-fds.md`), so one thread's
//! connect never holds up the channel for the process's other threads.
//!
//! Bounds: at most `--fd-max-unauthenticated` (64 by default) connections
//! may be waiting for their hello (others are closed at once, counted as
//! `api_fd_refused_unauthenticated`; timeouts as `api_fd_hello_timeouts`);
//! tokens are one per session.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
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
            if let Err(e) = channel(&stream, &driver, session).await {
                tracing::debug!(error = %e, "fd channel ended");
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

fn failure(e: &Errno) -> Response {
    Response {
        errno: e.number,
        handle: 0,
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

/// Serves one bound connection's requests, in order, until it closes.
async fn channel(
    stream: &UnixStream,
    driver: &DriverHandle,
    session: SessionInfo,
) -> io::Result<()> {
    while let Some((request, mut fds)) = recv_request(stream).await? {
        let (response, out) = match request {
            Some(Request::New { family }) => match family_of(family) {
                Ok(family) => match driver
                    .call(session, |reply| Op::FdNew { family, reply })
                    .await
                {
                    Ok((handle, fd)) => (Response { errno: 0, handle }, Some(fd)),
                    Err(e) => (failure(&e), None),
                },
                Err(e) => (failure(&e), None),
            },
            Some(Request::Attach { handle }) => {
                match driver
                    .call(session, |reply| Op::FdAttach { handle, reply })
                    .await
                {
                    Ok(fd) => (Response { errno: 0, handle }, Some(fd)),
                    Err(e) => (failure(&e), None),
                }
            }
            Some(Request::Claim) => match fds.pop() {
                Some(fd) => match driver
                    .call(session, |reply| Op::FdClaim { fd, reply })
                    .await
                {
                    Ok(handle) => (Response { errno: 0, handle }, None),
                    Err(e) => (failure(&e), None),
                },
                None => (
                    failure(&Errno::new(
                        tcpd_proto::errno::ENOTSOCK,
                        "a claim carries a socket's descriptor",
                    )),
                    None,
                ),
            },
            Some(Request::Adopt { family, filler }) => {
                let made = match (family_of(family), client_pair(&mut fds, filler)) {
                    (Ok(family), Ok(pair)) => {
                        driver
                            .call(session, |reply| Op::FdAdopt {
                                family,
                                pair,
                                reply,
                            })
                            .await
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
                match made {
                    Ok(handle) => (Response { errno: 0, handle }, None),
                    Err(e) => (failure(&e), None),
                }
            }
            Some(Request::Connect {
                family,
                payload_len,
                filler,
            }) => {
                let payload = recv_payload(stream, payload_len).await?;
                (
                    connect(driver, session, family, filler, &payload, fds).await,
                    None,
                )
            }
            Some(Request::Hello { .. }) => (failure(&Errno::invalid("already bound")), None),
            None => return Ok(()),
        };
        send_response(stream, response, out.as_ref()).await?;
    }
    Ok(())
}

/// A `Connect` request: a `v2.ConnectRequest` in `payload`, and for handle
/// 0 the new socket's pair in `fds`.
async fn connect(
    driver: &DriverHandle,
    session: SessionInfo,
    family: i32,
    filler: u32,
    payload: &[u8],
    mut fds: Vec<OwnedFd>,
) -> Response {
    let parsed = (|| {
        let req = <tcpd_proto::v2::ConnectRequest as prost::Message>::decode(payload)
            .map_err(|_| Errno::invalid("malformed ConnectRequest"))?;
        let remote = convert::socket_addr(req.address.as_ref())?;
        let options = convert::options(&req.options)?;
        let pair = if req.handle == 0 {
            Some((family_of(family)?, client_pair(&mut fds, filler)?))
        } else {
            None
        };
        Ok::<_, Errno>((req.handle, pair, remote, options))
    })();
    let (handle, pair, remote, options) = match parsed {
        Ok(p) => p,
        Err(e) => return failure(&e),
    };
    match driver
        .call(session, |reply| Op::FdConnect {
            handle,
            pair,
            remote,
            options,
            reply,
        })
        .await
    {
        Ok((handle, outcome)) => Response {
            errno: outcome.err().map_or(0, |e| e.number),
            handle,
        },
        Err(e) => failure(&e),
    }
}

/// The `len` bytes that follow a `Connect` request.
async fn recv_payload(stream: &UnixStream, len: u32) -> io::Result<Vec<u8>> {
    if len > MAX_CONNECT_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "Connect payload too large",
        ));
    }
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    while got < buf.len() {
        stream.readable().await?;
        match stream.try_io(Interest::READABLE, || {
            nix::sys::socket::recv(stream.as_raw_fd(), &mut buf[got..], MsgFlags::MSG_DONTWAIT)
                .map_err(io::Error::from)
        }) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

/// `fd` if it is a socket. Anything else a client sent is closed on the
/// blocking pool, never here: close(2) of a FUSE file waits for its server
/// (FLUSH), which a hostile client controls; a socket closes at once.
fn only_sockets(fd: OwnedFd) -> Option<OwnedFd> {
    if socket_cookie(&fd).is_ok() {
        return Some(fd);
    }
    tokio::task::spawn_blocking(move || drop(fd));
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
            recv_with_fds(stream.as_raw_fd(), &mut buf[got..], &mut fds)
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
fn recv_with_fds(sock: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = recvmsg::<()>(
        sock,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            for raw in received {
                if let Some(fd) = only_sockets(adopt(raw))
                    && fds.len() < MAX_FDS
                {
                    fds.push(fd);
                }
            }
        }
    }
    Ok(msg.bytes)
}

/// Takes ownership of a descriptor the kernel just installed for us.
#[allow(unsafe_code)]
fn adopt(raw: RawFd) -> OwnedFd {
    // SAFETY: `raw` comes from an SCM_RIGHTS message recvmsg(2) just
    // returned: a new descriptor in this process that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(raw) }
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
