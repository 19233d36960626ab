//! Sockets as real file descriptors: the daemon's end of one socketpair per
//! socket, pumped straight into and out of the stack's buffers by the driver.
//!
//! A local client (libtcpd) makes an `AF_UNIX` `SOCK_STREAM` socketpair and
//! hands the daemon one end with its first control call on the fd channel
//! ([`crate::fd_service`]: `Connect`, `Adopt`; [`FdLinks::adopt`]), or asks
//! the daemon for one (`New`, [`FdLinks::create`]: the daemon makes the pair,
//! keeps one end here and passes the other with `SCM_RIGHTS`). Bytes the
//! client writes are read here into the stack's send buffer; bytes the
//! stack receives are written to the client. No RPC per byte, no thread in
//! the client: `poll`, `epoll`, `read`, `writev`, `fork`... work natively on
//! the client's end. See `daemon/server/DESIGN-fds.md` for the whole design.
//!
//! What the client's end means:
//! - readable: data, EOF (the peer's FIN: this end was shut for writing),
//!   or, on a listener, one signal byte while its accept queue is non-empty;
//! - writable: the pair's buffer (`CLIENT_SNDBUF`) has room. A new socket
//!   is handed out *full* (filler bytes written from its end before it
//!   leaves), so it is not writable until the connection is established,
//!   when the filler is discarded here: a non-blocking connect completes as
//!   POSIX says (writable, then `SO_ERROR`). Accepted sockets have no filler;
//! - a failed connection: before it was established (refused, SYN
//!   timeout), this end is closed with the filler unread, so the kernel
//!   sets `ECONNRESET` on the client's end (`POLLERR|POLLHUP`, a failed
//!   first read); after (RST, timeout), this end is shut down both ways
//!   after unread client bytes are discarded, so the client sees
//!   `POLLIN|POLLOUT|POLLHUP`, reads EOF and writes `EPIPE`. Either way the
//!   errno (ECONNRESET, ETIMEDOUT, ECONNREFUSED) stays pending in the stack
//!   for `SO_ERROR` (libtcpd's `tcpd_read`/`tcpd_write` ask for it).
//!
//! A claim names a socket by the socket cookie of its client end
//! ([`socket_cookie`]), which only a process holding that descriptor can
//! present.
//!
//! Closing: when every copy of the client's end is closed this end reports
//! `EPOLLHUP`, and the socket is closed as close(2) would: reset when data
//! was left unread (the stack's buffer, bytes waiting here, or the kernel's
//! `ECONNRESET` on this end, which Linux sets when the client's end died
//! with unread bytes in its queue), FIN otherwise.
//!
//! Readiness of the daemon's ends reaches the driver through one epoll
//! instance (edge-triggered), itself registered with tokio: one readiness
//! source in the driver however many sockets there are.
//!
//! No bytes wait here: the client's bytes are read straight into the
//! stack's send buffer (`Stack::send_in_place`, one `readv`), received
//! bytes are written to the pair straight from the stack's receive queue
//! (`Stack::recv_with`, one `writev` of its slices, which are the TUN
//! reads' own buffers), and whatever the pair does not take stays in the
//! stack, where it is charged to the owner's buffered bytes like any
//! socket's. The pair itself holds at most its socket buffers (see
//! [`DAEMON_SNDBUF`]).

use std::collections::HashMap;
use std::io::{self, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, getsockopt, setsockopt, socketpair, sockopt,
};
use tcpd_stack::{Instant, Readiness, SocketHandle, Stack};

/// Largest amount read from a pair at once.
pub const CHUNK: usize = 128 * 1024;
/// Largest amount offered to a pair in one `writev` (it takes what fits).
const TO_CLIENT_MAX: usize = 1024 * 1024;
/// SO_SNDBUF of a new socket's client end (the kernel doubles it): how much
/// the client can write ahead of the daemon, on top of the stack's send
/// buffer, and so the filler a new socket is handed out with. libtcpd
/// raises it to [`tcpd_proto::fd_channel::CONNECTED_SNDBUF`] once the
/// connection is established (the filler is gone then). libtcpd makes its
/// own pairs (`Adopt`, `Connect`) with the same sizes.
const CLIENT_SNDBUF: usize = tcpd_proto::fd_channel::NEW_SNDBUF;
/// SO_SNDBUF of the daemon's end: how much received data waits in the pair
/// for the client, on top of the stack's receive buffer.
const DAEMON_SNDBUF: usize = tcpd_proto::fd_channel::DAEMON_SNDBUF;
/// Ready ends handled per epoll wait.
const EVENTS: usize = 256;

/// The daemon's side of one socket's pair.
#[derive(Debug)]
struct FdLink {
    /// `None` once closed: a connection that failed before it was
    /// established (see [`fail`]).
    end: Option<UnixStream>,
    /// Socket cookie (`SO_COOKIE`) of the client's end: how a claim names
    /// the socket. Unlike an inode number it is never reused and cannot be
    /// matched by a descriptor of another kind (see [`socket_cookie`]).
    client_cookie: u64,
    /// Filler bytes still to discard before the client's data.
    filler: usize,
    /// The peer's FIN was passed on (this end is shut for writing).
    sent_eof: bool,
    /// The client shut its end for writing (shutdown or close).
    client_eof: bool,
    /// The connection failed; this end is shut both ways and unregistered.
    failed: bool,
    /// Listener: a signal byte is (or may be) in the client's queue.
    accept_signal: bool,
}

/// A socketpair the client made for a new socket: the end the daemon
/// keeps, the cookie of the client's end, and the filler the client wrote
/// from its end (see the module docs).
#[derive(Debug)]
pub struct ClientPair {
    pub daemon_end: OwnedFd,
    pub client_cookie: u64,
    pub filler: usize,
}

/// What a pump found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pumped {
    /// The socket goes on.
    Open,
    /// Every copy of the client's end is closed: close the socket (reset
    /// when data was left unread).
    ClientClosed { unread: bool },
}

/// Every socket's pair; see the module docs.
#[derive(Debug)]
pub struct FdLinks {
    epoll: Epoll,
    links: HashMap<SocketHandle, FdLink>,
    by_cookie: HashMap<u64, SocketHandle>,
    scratch: Vec<u8>,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// The kernel's cookie of a socket ([`tcpd_sys::socket_cookie`], Linux
/// 4.12+): a 64-bit number unique to one socket for the life of the system,
/// never reused. A claim names its socket by the cookie of the descriptor
/// it carries, so only a process holding that very socket's descriptor can
/// claim it. (An inode number would not do: `st_ino` is only unique within
/// one file system, so a regular file or pipe with the same number — an
/// attacker can look the number up in `/proc/net/unix` and make files
/// until one matches — would have named another user's socket.) Fails
/// with `ENOTSOCK` for anything but a socket, without blocking whatever
/// the descriptor is (no `fstat`, which a FUSE file could stall).
pub use tcpd_sys::socket_cookie;

/// Whether `end` reports POLLHUP: its peer is gone (or both are shut).
fn hung_up(end: &UnixStream) -> bool {
    let mut fds = [PollFd::new(end.as_fd(), PollFlags::empty())];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

impl FdLinks {
    pub fn new() -> io::Result<FdLinks> {
        Ok(FdLinks {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            links: HashMap::new(),
            by_cookie: HashMap::new(),
            scratch: vec![0u8; CHUNK],
        })
    }

    /// A second descriptor of the epoll instance, for the driver to wait on.
    pub fn readiness_fd(&self) -> io::Result<OwnedFd> {
        self.epoll.0.try_clone()
    }

    pub fn contains(&self, h: SocketHandle) -> bool {
        self.links.contains_key(&h)
    }

    /// Whether `h` has a pair whose connection has not failed (such a
    /// socket lives as long as the client holds its end).
    pub fn is_live(&self, h: SocketHandle) -> bool {
        self.links.get(&h).is_some_and(|l| !l.failed)
    }

    /// The socket whose client end has the socket cookie `cookie`.
    pub fn by_client_cookie(&self, cookie: u64) -> Option<SocketHandle> {
        self.by_cookie.get(&cookie).copied()
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Creates `h`'s pair and returns the client's end (blocking, not
    /// close-on-exec: the flags travel with it). `fill`: hand it out full,
    /// unwritable until the connection is established (see module docs).
    pub fn create(&mut self, h: SocketHandle, fill: bool) -> io::Result<OwnedFd> {
        let (daemon, client) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        )?;
        let client_sndbuf = if fill {
            CLIENT_SNDBUF
        } else {
            tcpd_proto::fd_channel::CONNECTED_SNDBUF
        };
        setsockopt(&client, sockopt::SndBuf, &client_sndbuf)?;
        setsockopt(&daemon, sockopt::SndBuf, &DAEMON_SNDBUF)?;
        let client_cookie = socket_cookie(&client)?;
        let mut client = UnixStream::from(client);
        let mut filler = 0;
        if fill {
            let zeros = &self.scratch[..CHUNK];
            loop {
                match client.write(zeros) {
                    Ok(n) => filler += n,
                    Err(e) if would_block(&e) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        // The client gets a blocking socket, as socket(2) returns.
        fcntl(client.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_RDWR))?;
        self.register(h, daemon, client_cookie, filler)?;
        Ok(OwnedFd::from(client))
    }

    /// Takes `pair`, a socketpair the client made (`Adopt`, `Connect`
    /// with handle 0), as `h`'s. Its daemon end must be an `AF_UNIX`
    /// stream socket other than the client's end (else `EINVAL`); a client
    /// end the daemon knows already is `EEXIST` (a forked copy of the
    /// client registered the same pair first).
    pub fn adopt(&mut self, h: SocketHandle, pair: ClientPair) -> io::Result<()> {
        let ClientPair {
            daemon_end,
            client_cookie,
            filler,
        } = pair;
        if self.by_cookie.contains_key(&client_cookie) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let stream_socket = tcpd_sys::socket_domain(&daemon_end)? == libc::AF_UNIX
            && getsockopt(&daemon_end, sockopt::SockType)? == SockType::Stream
            && !getsockopt(&daemon_end, sockopt::AcceptConn)?
            && socket_cookie(&daemon_end)? != client_cookie;
        if !stream_socket {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // The client closes its copy once the request is answered; the
        // flag is the open file's, so it holds for ours.
        fcntl(
            daemon_end.as_raw_fd(),
            FcntlArg::F_SETFL(OFlag::O_RDWR | OFlag::O_NONBLOCK),
        )?;
        setsockopt(&daemon_end, sockopt::SndBuf, &DAEMON_SNDBUF)?;
        self.register(h, daemon_end, client_cookie, filler)
    }

    /// Watches `end` as `h`'s daemon end.
    fn register(
        &mut self,
        h: SocketHandle,
        end: OwnedFd,
        client_cookie: u64,
        filler: usize,
    ) -> io::Result<()> {
        let end = UnixStream::from(end);
        self.epoll.add(
            &end,
            EpollEvent::new(
                EpollFlags::EPOLLIN
                    | EpollFlags::EPOLLOUT
                    | EpollFlags::EPOLLRDHUP
                    | EpollFlags::EPOLLET,
                h.0,
            ),
        )?;
        self.links.insert(
            h,
            FdLink {
                end: Some(end),
                client_cookie,
                filler,
                sent_eof: false,
                client_eof: false,
                failed: false,
                accept_signal: false,
            },
        );
        self.by_cookie.insert(client_cookie, h);
        Ok(())
    }

    /// Watches another descriptor (an fd channel) in the same epoll:
    /// [`FdLinks::ready`] reports it as `SocketHandle(token)`.
    pub fn watch(&self, fd: &impl AsFd, token: u64) -> io::Result<()> {
        self.epoll.add(
            fd,
            EpollEvent::new(
                EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET,
                token,
            ),
        )?;
        Ok(())
    }

    /// Stops watching a descriptor given to [`FdLinks::watch`].
    pub fn unwatch(&self, fd: &impl AsFd) {
        let _ = self.epoll.delete(fd);
    }

    /// Forgets `h`'s pair (the socket is closed); the client sees EOF.
    pub fn remove(&mut self, h: SocketHandle) {
        if let Some(link) = self.links.remove(&h) {
            self.by_cookie.remove(&link.client_cookie);
            if !link.failed
                && let Some(end) = &link.end
            {
                let _ = self.epoll.delete(end);
            }
        }
    }

    /// The sockets whose ends reported readiness since the last call, with
    /// whether the client hung up (EPOLLHUP).
    pub fn ready(&mut self) -> Vec<(SocketHandle, bool)> {
        let mut out = Vec::new();
        let mut events = [EpollEvent::empty(); EVENTS];
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "epoll_wait on the fd links failed");
                    0
                }
            };
            out.extend(events[..n].iter().map(|e| {
                (
                    SocketHandle(e.data()),
                    e.events().contains(EpollFlags::EPOLLHUP),
                )
            }));
            if n < EVENTS {
                return out;
            }
        }
    }

    /// A listener's accept op ran: the client drained its signal byte
    /// before asking (libtcpd does); signal again if more are queued.
    pub fn accepted(&mut self, stack: &Stack, h: SocketHandle) {
        if let Some(link) = self.links.get_mut(&h) {
            link.accept_signal = false;
            signal_listener(link, stack, h);
        }
    }

    /// Moves what can move between `h`'s pair and the stack; see the module
    /// docs. `hup`: the end reported EPOLLHUP.
    pub fn pump(&mut self, stack: &mut Stack, now: Instant, h: SocketHandle, hup: bool) -> Pumped {
        let Some(link) = self.links.get_mut(&h) else {
            return Pumped::Open;
        };
        if link.failed {
            return Pumped::Open;
        }
        let Some(end) = link.end.as_mut() else {
            return Pumped::Open;
        };
        let Ok(ready) = stack.readiness(h) else {
            return Pumped::Open;
        };
        if !stack.is_connection(h) {
            // Not a connection: an unconnected socket or a listener.
            if hup {
                return Pumped::ClientClosed { unread: false };
            }
            signal_listener(link, stack, h);
            return Pumped::Open;
        }
        let scratch = &mut self.scratch;
        let connecting = !ready.intersects(Readiness::OUT | Readiness::ERR | Readiness::HUP)
            && link.filler > 0
            && !ready.contains(Readiness::IN);
        if ready.contains(Readiness::ERR) {
            // What arrived before the error (an RST after the peer's
            // answer) reaches the client first, as on Linux; the pair's
            // room wakes us when it is full. Leave the error pending for
            // SO_ERROR; tell the client once the data is out.
            if link.filler == 0 && !deliver_readable(end, stack, now, h) {
                return Pumped::Open;
            }
            fail(&self.epoll, link);
            return Pumped::Open;
        }
        if connecting {
            return if hup {
                Pumped::ClientClosed { unread: false }
            } else {
                Pumped::Open
            };
        }
        // Client -> stack: read straight into the socket's send buffer
        // (`Stack::send_in_place`: one readv, no copy through a buffer of
        // ours), until the pair is drained or the send buffer is full.
        let mut unread_reset = false;
        while !link.client_eof {
            let read = if link.filler > 0 {
                end.read(&mut scratch[..link.filler.min(CHUNK)])
            } else {
                let mut outcome = None;
                let queued = stack.send_in_place(now, h, CHUNK, |a, b| {
                    let r = end.read_vectored(&mut [IoSliceMut::new(a), IoSliceMut::new(b)]);
                    let n = r.as_ref().map_or(0, |n| *n);
                    outcome = Some(r);
                    n
                });
                match (outcome, queued) {
                    (Some(read), _) => read,
                    // The send buffer is full: its room wakes us again.
                    (None, Err(tcpd_stack::SendError::WouldBlock) | Ok(_)) => break,
                    // The connection cannot send any more (shut down or
                    // closing): what the client writes is lost, as on
                    // Linux after the peer's reset.
                    (None, Err(_)) => end.read(&mut scratch[..CHUNK]),
                }
            };
            match read {
                Ok(0) => {
                    link.client_eof = true;
                    if hup || hung_up(end) {
                        break;
                    }
                    // shutdown(SHUT_WR) by the client: FIN after its data.
                    let _ = stack.shutdown(now, h, tcpd_stack::Shutdown::Write);
                }
                // Read on until EAGAIN even after a short read: the end of
                // the client's bytes (EOF) may already be queued behind
                // them, and it raises no new edge.
                Ok(n) if link.filler > 0 => link.filler -= n,
                Ok(_) => {}
                Err(e) if would_block(&e) => break,
                Err(e) => {
                    // ECONNRESET: the client's end died with unread bytes.
                    unread_reset = e.raw_os_error() == Some(libc::ECONNRESET);
                    link.client_eof = true;
                    break;
                }
            }
        }
        if link.client_eof && (hup || unread_reset || hung_up(end)) {
            let unread = unread_reset || stack.socket_info(h).is_ok_and(|i| i.recv_queue > 0);
            return Pumped::ClientClosed { unread };
        }
        // Stack -> client: one writev of the receive queue's slices (the
        // TUN's frames themselves, no copy of ours); the stack drops only
        // what the pair accepted, the rest stays queued (and charged) there
        // until the pair has room again.
        while !link.sent_eof {
            let mut wrote = None;
            let took = stack.recv_with(now, h, TO_CLIENT_MAX, |slices| {
                let offered = slices.iter().map(|s| s.len()).sum();
                let r = end.write_vectored(slices);
                let n = match &r {
                    Ok(n) => *n,
                    Err(e) if would_block(e) => 0,
                    // EPIPE: the client shut its end for reading; what it
                    // would have read is discarded, as before the pair.
                    Err(_) => offered,
                };
                wrote = Some((r, offered));
                n
            });
            match (took, wrote) {
                (Ok(_), Some((Ok(n), offered))) if n == offered => {}
                // The pair is full: its room wakes us again.
                (Ok(_), Some((Ok(_), _))) => break,
                (Ok(_), Some((Err(e), _))) if would_block(&e) => break,
                (Ok(_), Some((Err(_), _))) => {}
                (Ok(_), None) => {
                    // End of stream: the peer's FIN.
                    link.sent_eof = true;
                    let _ = end.shutdown(std::net::Shutdown::Write);
                }
                (Err(tcpd_stack::RecvError::WouldBlock), _) => break,
                (Err(_), _) => {
                    fail(&self.epoll, link);
                    return Pumped::Open;
                }
            }
        }
        Pumped::Open
    }
}

/// Writes what is readable on `h` to the client's end, stopping before the
/// stack would answer with its pending error (a read past the data takes
/// it, and SO_ERROR must still report it); whether all of it went (false:
/// the pair is full).
fn deliver_readable(
    end: &mut UnixStream,
    stack: &mut Stack,
    now: Instant,
    h: SocketHandle,
) -> bool {
    while stack.socket_info(h).is_ok_and(|info| info.recv_queue > 0) {
        let mut full = false;
        let took = stack.recv_with(now, h, TO_CLIENT_MAX, |slices| {
            let offered = slices.iter().map(|s| s.len()).sum();
            match end.write_vectored(slices) {
                Ok(n) => {
                    full = n < offered;
                    n
                }
                Err(e) if would_block(&e) => {
                    full = true;
                    0
                }
                // The client shut its end for reading: discarded.
                Err(_) => offered,
            }
        });
        if full || took.is_err() {
            return !full;
        }
    }
    true
}

/// Writes a listener's signal byte when its accept queue is non-empty.
fn signal_listener(link: &mut FdLink, stack: &Stack, h: SocketHandle) {
    if link.accept_signal || !stack.readiness(h).is_ok_and(|r| r.contains(Readiness::IN)) {
        return;
    }
    if stack.is_connection(h) {
        return;
    }
    let Some(end) = link.end.as_mut() else {
        return;
    };
    match end.write(&[1]) {
        Ok(_) => link.accept_signal = true,
        Err(e) if would_block(&e) => link.accept_signal = true,
        Err(_) => {}
    }
}

/// The connection failed; stop watching this end (its HUP is our own now)
/// and tell the client:
/// - before it was established (refused, timed out: the filler is still
///   unread here), by closing this end with the filler in it: the kernel
///   then sets `ECONNRESET` on the client's end, which reports
///   `POLLERR|POLLHUP` (then `POLLOUT`, once the filler is freed) and fails
///   its first read with `ECONNRESET` — Linux's view of a failed connect
///   (libtcpd turns that into `SO_ERROR`'s errno);
/// - after, by discarding what the client sent (so its end becomes
///   writable) and shutting this end both ways: the client sees
///   `POLLIN|POLLOUT|POLLHUP`, EOF and `EPIPE` (no `POLLERR`: nothing of
///   the client's is left unread to make the kernel report one).
fn fail(epoll: &Epoll, link: &mut FdLink) {
    link.failed = true;
    let Some(end) = link.end.as_mut() else {
        return;
    };
    let _ = epoll.delete(&*end);
    if link.filler > 0 {
        link.filler = 0;
        link.end = None;
        return;
    }
    // Drain before shutting: the client's poll then sees POLLOUT together
    // with POLLHUP (a waiter woken by the HUP alone would miss POLLOUT).
    let mut sink = [0u8; 4096];
    while let Ok(n) = end.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    let _ = end.shutdown(std::net::Shutdown::Both);
}
