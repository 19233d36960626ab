//! The fd channel: the daemon's second Unix socket (the API socket's path
//! + `.fd`), where local clients receive their sockets as file descriptors.
//!
//! Protocol: `tcpd_proto::fd_channel`. A connection must first present a
//! token from the `OpenFdChannel` RPC, from a process of the same uid as the
//! RPC's session (SO_PEERCRED, and the same pid when the kernel names both),
//! within `--fd-hello-timeout-ms` (5 s by default); the connection then acts for that session only,
//! so a client can never obtain another session's socket. Each request is a
//! typed [`Op`] to the driver; descriptors cross with `SCM_RIGHTS`.
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
use tcpd_proto::fd_channel::{REQUEST_LEN, RESPONSE_LEN, Request, Response};
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::errno::Errno;
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

/// Serves one bound connection's requests, in order, until it closes.
async fn channel(
    stream: &UnixStream,
    driver: &DriverHandle,
    session: SessionInfo,
) -> io::Result<()> {
    while let Some((request, fd)) = recv_request(stream).await? {
        let (response, out) = match request {
            Some(Request::New { family }) => {
                // Linux's AF_INET6 = 10; 0 (older clients) and AF_INET = 2 are IPv4.
                let family = match family {
                    0 | 2 => Some(tcpd_stack::IpFamily::V4),
                    10 => Some(tcpd_stack::IpFamily::V6),
                    _ => None,
                };
                match family {
                    Some(family) => {
                        match driver
                            .call(session, |reply| Op::FdNew { family, reply })
                            .await
                        {
                            Ok((handle, fd)) => (Response { errno: 0, handle }, Some(fd)),
                            Err(e) => (failure(&e), None),
                        }
                    }
                    None => (
                        failure(&Errno::new(
                            tcpd_proto::errno::EAFNOSUPPORT,
                            "address family not supported",
                        )),
                        None,
                    ),
                }
            }
            Some(Request::Attach { handle }) => {
                match driver
                    .call(session, |reply| Op::FdAttach { handle, reply })
                    .await
                {
                    Ok(fd) => (Response { errno: 0, handle }, Some(fd)),
                    Err(e) => (failure(&e), None),
                }
            }
            Some(Request::Claim) => match fd {
                Some(fd) => match driver
                    .call(session, |reply| Op::FdClaim { fd, reply })
                    .await
                {
                    Ok(handle) => (Response { errno: 0, handle }, None),
                    Err(e) => (failure(&e), None),
                },
                None => (
                    failure(&Errno::invalid("a claim carries a descriptor")),
                    None,
                ),
            },
            Some(Request::Hello { .. }) => (failure(&Errno::invalid("already bound")), None),
            None => return Ok(()),
        };
        send_response(stream, response, out.as_ref()).await?;
    }
    Ok(())
}

/// The next request and the descriptor sent with it; `None` at EOF.
/// `Some((None, _))`: an unknown request kind.
async fn recv_request(
    stream: &UnixStream,
) -> io::Result<Option<(Option<Request>, Option<OwnedFd>)>> {
    let mut buf = [0u8; REQUEST_LEN];
    let mut got = 0;
    let mut fd = None;
    while got < REQUEST_LEN {
        stream.readable().await?;
        match stream.try_io(Interest::READABLE, || {
            recv_with_fd(stream.as_raw_fd(), &mut buf[got..], &mut fd)
        }) {
            Ok(0) => return Ok(None),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some((Request::decode(&buf), fd)))
}

/// One recvmsg(2); the first descriptor received is kept in `fd` (any
/// other is closed).
fn recv_with_fd(sock: RawFd, buf: &mut [u8], fd: &mut Option<OwnedFd>) -> io::Result<usize> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = recvmsg::<()>(
        sock,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                let owned = adopt(raw);
                if fd.is_none() {
                    *fd = Some(owned);
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
