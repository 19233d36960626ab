//! A stand-in daemon for testing libtcpd without root: it serves the
//! `tcpd.v1.Socket` RPCs over a Unix socket exactly as the proto specifies,
//! but backs every socket with a *kernel* TCP socket on loopback.
//!
//! It exists to test the C shim's side of the contract (errno transport,
//! blocking vs non-blocking flags, Poll, fd handling, threads) on any
//! machine; the real daemon is exercised by `e2e/tests/c_shim.rs`.
//! All kernel sockets are non-blocking and registered with tokio's
//! `AsyncFd`, so a blocking RPC waits on readiness and is cancelled by
//! dropping it, as the daemon's are. The `Stream` RPC is not offered.

#![allow(clippy::unwrap_used)] // test support: a failed lock or setup is a test failure

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tcpd_proto::errno_status;
use tcpd_proto::v1::socket_server::{Socket, SocketServer};
use tcpd_proto::v1::*;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tonic::{Request, Response, Status};

type RpcResult<T> = Result<Response<T>, Status>;

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn fail(errno: i32) -> Status {
    errno_status(errno, "")
}

/// Runs a libc call returning -1 on error; maps failure to the errno.
fn check(ret: libc::c_int) -> Result<libc::c_int, i32> {
    if ret < 0 { Err(last_errno()) } else { Ok(ret) }
}

fn to_c(addr: &SockAddr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: (addr.port as u16).to_be(),
        sin_addr: libc::in_addr {
            s_addr: addr.ip.to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn from_c(addr: &libc::sockaddr_in) -> SockAddr {
    SockAddr {
        ip: u32::from_be(addr.sin_addr.s_addr),
        port: u32::from(u16::from_be(addr.sin_port)),
    }
}

/// A kernel socket the stand-in owns (non-blocking).
#[derive(Debug)]
struct KernelSocket {
    fd: OwnedFd,
}

/// A non-owning view of an fd, for a short-lived readiness registration.
#[derive(Debug)]
struct Borrowed(RawFd);

impl AsRawFd for Borrowed {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl KernelSocket {
    fn new(fd: RawFd) -> Arc<Self> {
        // SAFETY: fd was just created by socket/accept4 and is ours.
        Arc::new(KernelSocket {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }
    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
    /// Waits until the socket is readable or writable. The epoll
    /// registration is made afresh for each wait, so it sees the socket's
    /// current state (a socket registered before listen/connect would keep
    /// tokio's sticky "closed" readiness from its unconnected HUP).
    async fn wait(&self, interest: Interest) -> Result<(), Status> {
        // SAFETY: the fd stays open while `self` lives, which outlasts the
        // registration dropped at the end of this function.
        let registered = unsafe { AsyncFd::register_with_interest(Borrowed(self.raw()), interest) }
            .map_err(|_| fail(libc::EIO))?;
        let ready = if interest.is_readable() {
            registered.readable().await.map(drop)
        } else {
            registered.writable().await.map(drop)
        };
        ready.map_err(|_| fail(libc::EIO))
    }
}

/// The kernel-backed Socket service.
#[derive(Debug, Default)]
pub struct KernelDaemon {
    sockets: Mutex<HashMap<u64, Arc<KernelSocket>>>,
    next: AtomicU64,
}

impl KernelDaemon {
    fn get(&self, handle: u64) -> Result<Arc<KernelSocket>, Status> {
        self.sockets
            .lock()
            .unwrap()
            .get(&handle)
            .cloned()
            .ok_or_else(|| fail(libc::EBADF))
    }
    fn add(&self, sock: Arc<KernelSocket>) -> u64 {
        let handle = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.sockets.lock().unwrap().insert(handle, sock);
        handle
    }
}

fn name(fd: RawFd, peer: bool) -> Result<SockAddr, Status> {
    // SAFETY: zeroed sockaddr_in is valid; the kernel fills it.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let p = (&raw mut sa).cast();
    // SAFETY: p/len describe the local buffer.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    check(r).map_err(fail)?;
    Ok(from_c(&sa))
}

fn kernel_option(opt: SockOpt) -> Option<(i32, i32)> {
    Some(match opt {
        SockOpt::SoReuseaddr => (libc::SOL_SOCKET, libc::SO_REUSEADDR),
        SockOpt::SoKeepalive => (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
        SockOpt::SoRcvbuf => (libc::SOL_SOCKET, libc::SO_RCVBUF),
        SockOpt::SoSndbuf => (libc::SOL_SOCKET, libc::SO_SNDBUF),
        SockOpt::SoLinger => (libc::SOL_SOCKET, libc::SO_LINGER),
        SockOpt::SoError => (libc::SOL_SOCKET, libc::SO_ERROR),
        SockOpt::TcpNodelay => (libc::IPPROTO_TCP, libc::TCP_NODELAY),
        SockOpt::TcpKeepidle => (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
        SockOpt::TcpKeepintvl => (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
        SockOpt::TcpKeepcnt => (libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
        SockOpt::TcpMaxseg => (libc::IPPROTO_TCP, libc::TCP_MAXSEG),
        SockOpt::TcpSyncnt => (libc::IPPROTO_TCP, libc::TCP_SYNCNT),
        SockOpt::TcpUserTimeout => (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
        SockOpt::TcpCongestion => (libc::IPPROTO_TCP, libc::TCP_CONGESTION),
        SockOpt::Unspecified => return None,
    })
}

fn is_flag(opt: SockOpt) -> bool {
    matches!(
        opt,
        SockOpt::SoReuseaddr | SockOpt::SoKeepalive | SockOpt::TcpNodelay
    )
}

#[tonic::async_trait]
impl Socket for KernelDaemon {
    async fn socket(&self, _: Request<SocketRequest>) -> RpcResult<SocketReply> {
        // SAFETY: plain syscall.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        let fd = check(fd).map_err(fail)?;
        let sock = KernelSocket::new(fd);
        Ok(Response::new(SocketReply {
            handle: self.add(sock),
        }))
    }

    async fn bind(&self, r: Request<BindRequest>) -> RpcResult<Empty> {
        let r = r.into_inner();
        let sock = self.get(r.handle)?;
        let sa = to_c(&r.addr.unwrap_or_default());
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: valid local sockaddr.
        check(unsafe { libc::bind(sock.raw(), (&raw const sa).cast(), len) }).map_err(fail)?;
        Ok(Response::new(Empty {}))
    }

    async fn listen(&self, r: Request<ListenRequest>) -> RpcResult<Empty> {
        let r = r.into_inner();
        let sock = self.get(r.handle)?;
        // SAFETY: plain syscall.
        check(unsafe { libc::listen(sock.raw(), r.backlog.max(16)) }).map_err(fail)?;
        Ok(Response::new(Empty {}))
    }

    async fn accept(&self, r: Request<AcceptRequest>) -> RpcResult<AcceptReply> {
        let r = r.into_inner();
        let sock = self.get(r.handle)?;
        loop {
            // SAFETY: zeroed sockaddr_in; the kernel fills it.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // SAFETY: valid buffers.
            let fd = unsafe {
                libc::accept4(
                    sock.raw(),
                    (&raw mut sa).cast(),
                    &mut len,
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            match check(fd) {
                Ok(fd) => {
                    let new = KernelSocket::new(fd);
                    return Ok(Response::new(AcceptReply {
                        handle: self.add(new),
                        peer: Some(from_c(&sa)),
                    }));
                }
                Err(libc::EAGAIN) if !r.nonblocking => {
                    sock.wait(Interest::READABLE).await?;
                }
                Err(e) => return Err(fail(e)),
            }
        }
    }

    async fn connect(&self, r: Request<ConnectRequest>) -> RpcResult<Empty> {
        let r = r.into_inner();
        let sock = self.get(r.handle)?;
        let sa = to_c(&r.addr.unwrap_or_default());
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: valid local sockaddr.
        match check(unsafe { libc::connect(sock.raw(), (&raw const sa).cast(), len) }) {
            Ok(_) => Ok(Response::new(Empty {})),
            Err(libc::EINPROGRESS) if !r.nonblocking => {
                sock.wait(Interest::WRITABLE).await?;
                let mut err: libc::c_int = 0;
                let mut elen = 4 as libc::socklen_t;
                // SAFETY: valid int buffer.
                unsafe {
                    libc::getsockopt(
                        sock.raw(),
                        libc::SOL_SOCKET,
                        libc::SO_ERROR,
                        (&raw mut err).cast(),
                        &mut elen,
                    )
                };
                if err != 0 {
                    Err(fail(err))
                } else {
                    Ok(Response::new(Empty {}))
                }
            }
            Err(e) => Err(fail(e)),
        }
    }

    async fn read(&self, r: Request<ReadRequest>) -> RpcResult<ReadReply> {
        let r = r.into_inner();
        let sock = self.get(r.handle)?;
        let mut buf = vec![0u8; r.max_len.min(1 << 20) as usize];
        let flags = libc::MSG_DONTWAIT | if r.peek { libc::MSG_PEEK } else { 0 };
        loop {
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::recv(sock.raw(), buf.as_mut_ptr().cast(), buf.len(), flags) };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(Response::new(ReadReply {
                    eof: n == 0,
                    data: buf,
                }));
            }
            match last_errno() {
                libc::EAGAIN if !r.nonblocking => {
                    sock.wait(Interest::READABLE).await?;
                }
                e => return Err(fail(e)),
            }
        }
    }

    async fn write(&self, r: Request<WriteRequest>) -> RpcResult<WriteReply> {
        let r = r.into_inner();
        let sock = self.get(r.handle)?;
        let mut sent = 0usize;
        while sent < r.data.len() {
            let rest = &r.data[sent..];
            // SAFETY: rest is readable for its length.
            let n = unsafe {
                libc::send(
                    sock.raw(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                sent += n as usize;
                if r.nonblocking {
                    break;
                }
                continue;
            }
            match last_errno() {
                libc::EAGAIN if r.nonblocking && sent > 0 => break,
                libc::EAGAIN if !r.nonblocking => {
                    sock.wait(Interest::WRITABLE).await?;
                }
                e if sent > 0 => {
                    let _ = e;
                    break;
                }
                e => return Err(fail(e)),
            }
        }
        Ok(Response::new(WriteReply {
            written: sent as u32,
        }))
    }

    async fn shutdown(&self, r: Request<ShutdownRequest>) -> RpcResult<Empty> {
        let r = r.into_inner();
        let sock = self.get(r.handle)?;
        let how = match ShutdownHow::try_from(r.how) {
            Ok(ShutdownHow::Read) => libc::SHUT_RD,
            Ok(ShutdownHow::Write) => libc::SHUT_WR,
            Ok(ShutdownHow::Both) => libc::SHUT_RDWR,
            _ => return Err(fail(libc::EINVAL)),
        };
        // SAFETY: plain syscall.
        check(unsafe { libc::shutdown(sock.raw(), how) }).map_err(fail)?;
        Ok(Response::new(Empty {}))
    }

    async fn close(&self, r: Request<HandleRequest>) -> RpcResult<Empty> {
        let handle = r.into_inner().handle;
        self.sockets
            .lock()
            .unwrap()
            .remove(&handle)
            .ok_or_else(|| fail(libc::EBADF))?;
        Ok(Response::new(Empty {}))
    }

    async fn get_sock_name(&self, r: Request<HandleRequest>) -> RpcResult<SockAddrReply> {
        let sock = self.get(r.into_inner().handle)?;
        Ok(Response::new(SockAddrReply {
            addr: Some(name(sock.raw(), false)?),
        }))
    }

    async fn get_peer_name(&self, r: Request<HandleRequest>) -> RpcResult<SockAddrReply> {
        let sock = self.get(r.into_inner().handle)?;
        Ok(Response::new(SockAddrReply {
            addr: Some(name(sock.raw(), true)?),
        }))
    }

    async fn set_option(&self, r: Request<SetOptionRequest>) -> RpcResult<Empty> {
        let r = r.into_inner();
        let sock = self.get(r.handle)?;
        let opt = SockOpt::try_from(r.option).map_err(|_| fail(libc::ENOPROTOOPT))?;
        let (level, name) = kernel_option(opt).ok_or_else(|| fail(libc::ENOPROTOOPT))?;
        let value = r
            .value
            .and_then(|v| v.value)
            .ok_or_else(|| fail(libc::EINVAL))?;
        let bytes: Vec<u8> = match value {
            option_value::Value::Flag(b) => i32::from(b).to_ne_bytes().to_vec(),
            option_value::Value::Int(i) => (i as i32).to_ne_bytes().to_vec(),
            option_value::Value::Linger(l) => {
                let mut v = i32::from(l.enabled).to_ne_bytes().to_vec();
                v.extend_from_slice(&(l.seconds as i32).to_ne_bytes());
                v
            }
            option_value::Value::Text(t) => t.into_bytes(),
        };
        // SAFETY: bytes is readable for its length.
        check(unsafe {
            libc::setsockopt(
                sock.raw(),
                level,
                name,
                bytes.as_ptr().cast(),
                bytes.len() as u32,
            )
        })
        .map_err(fail)?;
        Ok(Response::new(Empty {}))
    }

    async fn get_option(&self, r: Request<GetOptionRequest>) -> RpcResult<GetOptionReply> {
        let r = r.into_inner();
        let sock = self.get(r.handle)?;
        let opt = SockOpt::try_from(r.option).map_err(|_| fail(libc::ENOPROTOOPT))?;
        let (level, name) = kernel_option(opt).ok_or_else(|| fail(libc::ENOPROTOOPT))?;
        let mut buf = [0u8; 16];
        let mut len = buf.len() as libc::socklen_t;
        // SAFETY: buf is writable for len bytes.
        check(unsafe {
            libc::getsockopt(sock.raw(), level, name, buf.as_mut_ptr().cast(), &mut len)
        })
        .map_err(fail)?;
        let int_at =
            |at: usize| i32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let value = match opt {
            SockOpt::SoLinger => option_value::Value::Linger(Linger {
                enabled: int_at(0) != 0,
                seconds: int_at(4) as u32,
            }),
            SockOpt::TcpCongestion => {
                let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                option_value::Value::Text(String::from_utf8_lossy(&buf[..end]).into_owned())
            }
            o if is_flag(o) => option_value::Value::Flag(int_at(0) != 0),
            _ => option_value::Value::Int(i64::from(int_at(0))),
        };
        Ok(Response::new(GetOptionReply {
            value: Some(OptionValue { value: Some(value) }),
        }))
    }

    async fn poll(&self, r: Request<PollRequest>) -> RpcResult<PollReply> {
        let r = r.into_inner();
        let sockets: Vec<Option<Arc<KernelSocket>>> =
            r.entries.iter().map(|e| self.get(e.handle).ok()).collect();
        let deadline = u64::try_from(r.timeout_ms)
            .ok()
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        loop {
            let mut fds: Vec<libc::pollfd> = r
                .entries
                .iter()
                .zip(&sockets)
                .map(|(e, s)| libc::pollfd {
                    fd: s.as_ref().map_or(-1, |s| s.raw()),
                    events: e.events as i16,
                    revents: 0,
                })
                .collect();
            // SAFETY: fds is a valid array; zero timeout never blocks.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
            let entries: Vec<PollEntry> = fds
                .iter()
                .zip(&r.entries)
                .map(|(p, e)| PollEntry {
                    handle: e.handle,
                    events: if p.fd < 0 {
                        libc::POLLNVAL as u32
                    } else {
                        p.revents as u16 as u32
                    },
                })
                .collect();
            let any = entries.iter().any(|e| e.events != 0);
            if any || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Response::new(PollReply { entries }));
            }
            // Polling in short steps keeps the RPC cancellable by dropping it.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    type StreamStream = tokio_stream::Empty<Result<StreamDown, Status>>;

    async fn stream(
        &self,
        _: Request<tonic::Streaming<StreamUp>>,
    ) -> RpcResult<Self::StreamStream> {
        Err(Status::unimplemented("the kernel stand-in has no Stream"))
    }
}

/// A running stand-in daemon; stops when dropped.
#[derive(Debug)]
pub struct RunningDaemon {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for RunningDaemon {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Starts the stand-in on the Unix socket `path` (removed first if present).
pub fn start(path: &Path) -> RunningDaemon {
    let _ = std::fs::remove_file(path);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = {
        let _enter = runtime.enter();
        tokio::net::UnixListener::bind(path).unwrap()
    };
    runtime.spawn(async move {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        tonic::transport::Server::builder()
            .add_service(SocketServer::new(KernelDaemon::default()))
            .serve_with_incoming(incoming)
            .await
    });
    RunningDaemon {
        runtime: Some(runtime),
    }
}
