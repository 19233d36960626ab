//! `tcpd-client`: TCP through the tcpd daemon, from Rust.
//!
//! tcpd is a user-space TCP/IPv4 stack running as a daemon; programs use its
//! sockets through a gRPC API on a Unix socket (`$TCPD_SOCKET`, default
//! `/run/tcpd/tcpd.sock`). This crate hides that API behind the types Rust
//! programs already know:
//!
//! | here | like | notes |
//! | --- | --- | --- |
//! | [`TcpStream`] | `tokio::net::TcpStream` | same signatures: `AsyncRead` + `AsyncWrite`, `readable`/`try_read`, `writable`/`try_write`, `ready`, `peek`, `split`/`into_split`/`reunite`, sync `set_nodelay`/`local_addr`... |
//! | [`TcpListener`] | `tokio::net::TcpListener` | `bind`, `accept`, `local_addr`, `incoming` |
//! | [`TcpSocket`] | `tokio::net::TcpSocket` | options, `bind`, `connect`, `listen` |
//! | [`blocking::TcpStream`], [`blocking::TcpListener`] | `std::net` | `Read` + `Write` (also for `&TcpStream`), no runtime needed |
//! | [`Socket`] | the BSD calls | one method per RPC, for shims and tests |
//! | [`Client`] | — | one session with the daemon (one HTTP/2 connection) |
//!
//! Code written against `tokio::net` compiles against this crate with only
//! the `use` line changed (`e2e/tests/tokio_api.rs` checks it); the
//! differences users can observe are listed in the crate's README.
//!
//! Errors from the network are `io::Error::from_raw_os_error(errno)` with
//! the errno Linux would give (`ECONNREFUSED`, `EADDRINUSE`,
//! `ECONNRESET`...), so `err.kind()` and `err.raw_os_error()` work as with
//! kernel sockets. Failing to reach the daemon (no socket, no permission,
//! the daemon restarting) is a different error: its message starts with
//! "tcpd daemon at PATH:" (or "tcpd daemon:"), [`is_daemon_error`] is true
//! for it, and its kind is never `ConnectionReset`/`ConnectionRefused`.
//!
//! Data moves over one bidirectional Stream RPC per connection: writes and
//! reads cost no round trip each, and back-pressure is end to end (a slow
//! reader closes the TCP window; a slow peer makes `write` wait).
//!
//! # Connecting
//!
//! ```no_run
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let mut stream = tcpd_client::TcpStream::connect("10.7.0.1:80").await?;
//! stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
//! let mut response = Vec::new();
//! stream.read_to_end(&mut response).await?;
//! println!("{}", String::from_utf8_lossy(&response));
//! # Ok(()) }
//! ```
//!
//! # Listening
//!
//! ```no_run
//! use tokio::io::AsyncWriteExt;
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let listener = tcpd_client::TcpListener::bind("0.0.0.0:7000").await?;
//! println!("listening on {}", listener.local_addr()?);
//! loop {
//!     let (mut stream, peer) = listener.accept().await?;
//!     tokio::spawn(async move {
//!         let _ = stream.write_all(format!("hello {peer}\n").as_bytes()).await;
//!         let _ = stream.shutdown().await;
//!     });
//! }
//! # }
//! ```
//!
//! # Sessions
//!
//! The free constructors use a process-wide session opened on first use
//! ([`Client::shared`]). To pick the daemon explicitly, or to keep groups of
//! sockets in separate sessions, use a [`Client`]:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let client = tcpd_client::Client::connect("/tmp/tcpd-test.sock").await?;
//! let listener = client.tcp_bind("0.0.0.0:0").await?;
//! let port = listener.local_addr()?.port();
//! # let _ = port; Ok(()) }
//! ```
//!
//! A session opened inside a tokio runtime — with [`Client::connect`], or
//! the default session the free constructors (`TcpStream::connect`,
//! `TcpListener::bind`) use there, one per runtime — runs its I/O on that
//! runtime (no private thread pool in between, as with `tokio::net`, and
//! like `tokio::net`'s sockets it stops with that runtime). Sessions opened
//! outside any runtime (the blocking API) run on a small runtime owned by
//! this crate (threads named `tcpd-client-io`), so they work from plain
//! threads and across runtimes. A blocking call on the thread of a
//! current-thread runtime, for a session living on that runtime, cannot be
//! served: it fails at once with `ErrorKind::Deadlock` (use the async API
//! there, or `spawn_blocking`).

#![forbid(unsafe_code)]

pub mod addr;
pub mod blocking;
mod busy_poll;
mod client;
#[cfg(any(feature = "hyper", feature = "tonic"))]
pub mod connector;
mod down;
mod listener;
mod runtime;
mod socket;
mod sockopt;
mod stream;
mod tcp_socket;
pub mod transport;

pub use addr::ToSocketAddrs;
pub use busy_poll::{
    BUSY_POLL_CONTENDED_ENV, BUSY_POLL_ENV, DEFAULT_BUSY_POLL_US, DEFAULT_CALLER_BUSY_POLL_US,
};
pub use client::Client;
pub use listener::{DEFAULT_BACKLOG, TcpListener};
pub use runtime::CLIENT_RUNTIME_ENV;
pub use socket::{MAX_READ_LEN, ReadFlags, Socket};
pub use sockopt::{OptionName, PollFlags, SendFlags, SockOption, TcpInfo};
pub use stream::{
    DEFAULT_TTL, MAX_UP_FRAME, OwnedReadHalf, OwnedWriteHalf, ReadHalf, ReuniteError, TcpStream,
    UP_QUEUE_FRAMES, WriteHalf,
};
pub use tcp_socket::TcpSocket;

/// Modules named as tokio's, so `tcpd_client::tcp::OwnedReadHalf` reads as
/// `tokio::net::tcp::OwnedReadHalf`.
pub mod tcp {
    pub use crate::stream::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, ReuniteError, WriteHalf};
}
pub use transport::{connect_channel, connect_channel_with, is_daemon_error, status_to_io};

/// Describes an error the way `tcpd-nc` and `tcpctl` print it:
/// `"Connection refused (ECONNREFUSED)"` for OS errors, the plain message
/// otherwise.
pub fn describe_error(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(errno) => {
            let text = err.to_string();
            // std renders "Connection refused (os error 111)": keep the text.
            let text = text
                .strip_suffix(&format!(" (os error {errno})"))
                .unwrap_or(&text)
                .to_string();
            format!("{text} ({})", errno_label(errno))
        }
        None => err.to_string(),
    }
}

/// The symbolic errno name (from `nix`), or "errno N" for unknown numbers.
fn errno_label(errno: i32) -> String {
    tcpd_proto::errno_name(errno)
}

use std::io;

#[cfg(test)]
mod tests {
    use super::*;
    use tcpd_proto::errno;

    #[test]
    fn errors_print_with_their_errno_name() {
        let e = io::Error::from_raw_os_error(errno::ECONNREFUSED);
        assert_eq!(describe_error(&e), "Connection refused (ECONNREFUSED)");
        let e = io::Error::from_raw_os_error(errno::EADDRINUSE);
        assert_eq!(describe_error(&e), "Address already in use (EADDRINUSE)");
        assert_eq!(
            describe_error(&io::Error::from_raw_os_error(2)),
            "No such file or directory (ENOENT)"
        );
        assert_eq!(
            describe_error(&io::Error::from_raw_os_error(4095)),
            "Unknown error 4095 (errno 4095)"
        );
        assert_eq!(
            describe_error(&io::Error::from_raw_os_error(61)),
            "No data available (ENODATA)"
        );
        assert_eq!(describe_error(&io::Error::other("plain")), "plain");
    }

    #[test]
    fn statuses_become_raw_os_errors() {
        let st = tcpd_proto::errno_status(errno::EADDRINUSE, "bind");
        let e = status_to_io(st);
        assert_eq!(e.raw_os_error(), Some(errno::EADDRINUSE));
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        // No errno details: an error reaching the daemon, never a peer's reset.
        let e = status_to_io(tonic::Status::unavailable("daemon gone"));
        assert!(transport::is_daemon_error(&e), "{e}");
        assert_ne!(e.kind(), io::ErrorKind::ConnectionReset);
        assert!(e.to_string().contains("tcpd daemon"), "{e}");
    }
}
