//! `tcpd-proto`: the tcpd.v2 wire API shared by the daemon and every client.
//!
//! Owns the generated protobuf messages and tonic services (module [`v2`]),
//! the encoded descriptor set for server reflection ([`FILE_DESCRIPTOR_SET`]),
//! and the one convention every failure follows: a [`tonic::Status`] whose
//! details are a standard `google.rpc.Status` carrying
//! `ErrorInfo { reason: "ECONNREFUSED", domain: "tcpd", metadata: { errno: "111" } }`
//! (built with `tonic-types`, so grpcurl and other-language clients read it).
//! [`errno_status`] builds such a status; [`status_errno`] reads the errno
//! back. Errno numbers and names come from `libc`/`nix`, never a hand table.
//! The shared vocabulary (`tcpd-types`: states, options, poll bits) meets
//! the wire enums in [`vocab`], and is re-exported as [`types`].

#![forbid(unsafe_code)]
#![allow(missing_debug_implementations)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use tonic_types::{ErrorDetails, StatusExt};

pub mod codec;
pub mod stream_data;
pub mod vocab;
pub use tcpd_types as types;

/// Generated code for package `tcpd.v2`.
pub mod v2 {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("tcpd.v2");
}

/// The encoded `FileDescriptorSet` of tcpd.v2, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tcpd_v2_descriptor.bin"));

/// Default path of the daemon's Unix socket.
pub const DEFAULT_SOCKET_PATH: &str = "/run/tcpd/tcpd.sock";

/// Environment variable clients read to find the daemon's socket.
pub const SOCKET_ENV: &str = "TCPD_SOCKET";

/// The `ErrorInfo.domain` of every tcpd error.
pub const ERROR_DOMAIN: &str = "tcpd";

/// The `ErrorInfo.metadata` key holding the errno number.
pub const ERRNO_KEY: &str = "errno";

/// The socket path a client should use: `$TCPD_SOCKET`, else the default.
pub fn socket_path_from_env() -> String {
    std::env::var(SOCKET_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_SOCKET_PATH.to_string())
}

/// Linux errno numbers, from `libc` (re-exported so every crate names them
/// the same way).
pub mod errno {
    #![allow(missing_docs)]
    pub use libc::{
        EACCES, EADDRINUSE, EADDRNOTAVAIL, EAFNOSUPPORT, EAGAIN, EALREADY, EBADF, EBUSY, ECANCELED,
        ECONNABORTED, ECONNREFUSED, ECONNRESET, EDESTADDRREQ, EEXIST, EFAULT, EHOSTUNREACH,
        EINPROGRESS, EINTR, EINVAL, EIO, EISCONN, EMFILE, EMSGSIZE, ENETUNREACH, ENOBUFS, ENOENT,
        ENOMEM, ENOPROTOOPT, ENOTCONN, ENOTSOCK, EOPNOTSUPP, EPERM, EPIPE, EPROTO, ETIMEDOUT,
    };
}

/// Symbolic name of an errno number ("ECONNREFUSED"), from `nix`; the
/// number itself ("errno 4095") for one Linux does not define.
pub fn errno_name(e: i32) -> String {
    match nix::errno::Errno::from_raw(e) {
        nix::errno::Errno::UnknownErrno => format!("errno {e}"),
        known => format!("{known:?}"),
    }
}

/// The errno number for a symbolic name, if Linux defines it.
pub fn errno_from_name(name: &str) -> Option<i32> {
    // Linux errno numbers are below 134; scan them rather than keep a table.
    (1..256).find(|&n| errno_name(n) == name)
}

/// Builds the status for a failed call carrying `errno` (a Linux errno number).
///
/// `message` is free text for humans; the errno is authoritative.
pub fn errno_status(errno: i32, message: impl Into<String>) -> tonic::Status {
    let name = errno_name(errno);
    let mut message = message.into();
    if message.is_empty() {
        message.clone_from(&name);
    }
    let details = ErrorDetails::with_error_info(
        name,
        ERROR_DOMAIN,
        HashMap::from([(ERRNO_KEY.to_string(), errno.to_string())]),
    );
    tonic::Status::with_error_details(errno_code(errno), message, details)
}

/// Reads the errno carried by a status built with [`errno_status`]; `None`
/// when the status carries none (it came from the transport, not tcpd).
pub fn status_errno(status: &tonic::Status) -> Option<i32> {
    let details = status.get_error_details();
    let info = details.error_info()?;
    if info.domain != ERROR_DOMAIN {
        return None;
    }
    info.metadata
        .get(ERRNO_KEY)
        .and_then(|n| n.parse().ok())
        .or_else(|| errno_from_name(&info.reason))
        .filter(|n| *n != 0)
}

/// The gRPC code for an errno, chosen so retry policies behave: only a
/// daemon that does not answer is UNAVAILABLE (retryable); "try again
/// later" socket states (EAGAIN, EINPROGRESS) are FAILED_PRECONDITION, and
/// connection failures ABORTED, which no default policy retries.
pub fn errno_code(e: i32) -> tonic::Code {
    use errno::*;
    use tonic::Code;
    match e {
        EINVAL | EAFNOSUPPORT | ENOPROTOOPT | EDESTADDRREQ | EMSGSIZE | EFAULT => {
            Code::InvalidArgument
        }
        EBADF | ENOTSOCK | ENOENT => Code::NotFound,
        EADDRINUSE | EISCONN | EALREADY | EEXIST => Code::AlreadyExists,
        EACCES | EPERM => Code::PermissionDenied,
        ENOBUFS | ENOMEM | EMFILE => Code::ResourceExhausted,
        ETIMEDOUT => Code::DeadlineExceeded,
        EAGAIN | EINPROGRESS | ENOTCONN | EPIPE | EBUSY | EADDRNOTAVAIL => Code::FailedPrecondition,
        ECONNRESET | ECONNREFUSED | ECONNABORTED | EHOSTUNREACH | ENETUNREACH => Code::Aborted,
        ECANCELED => Code::Cancelled,
        EOPNOTSUPP => Code::Unimplemented,
        _ => Code::Unknown,
    }
}

/// Why a wire address could not become a `std` one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// `ip` is neither empty, 4 nor 16 octets.
    BadLength(usize),
    /// The port does not fit 16 bits.
    BadPort(u32),
}

impl std::fmt::Display for AddressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressError::BadLength(n) => write!(f, "address of {n} octets (need 4 or 16)"),
            AddressError::BadPort(p) => write!(f, "port {p} out of range"),
        }
    }
}

impl std::error::Error for AddressError {}

impl From<SocketAddr> for v2::SocketAddress {
    fn from(a: SocketAddr) -> Self {
        match a {
            SocketAddr::V4(a) => v2::SocketAddress {
                ip: a.ip().octets().to_vec(),
                port: u32::from(a.port()),
                flowinfo: 0,
                scope_id: 0,
            },
            SocketAddr::V6(a) => v2::SocketAddress {
                ip: a.ip().octets().to_vec(),
                port: u32::from(a.port()),
                flowinfo: a.flowinfo(),
                scope_id: a.scope_id(),
            },
        }
    }
}

impl From<std::net::SocketAddrV4> for v2::SocketAddress {
    fn from(a: std::net::SocketAddrV4) -> Self {
        SocketAddr::V4(a).into()
    }
}

impl v2::SocketAddress {
    /// The address as a std type (empty `ip` is 0.0.0.0).
    pub fn to_std(&self) -> Result<SocketAddr, AddressError> {
        let port = u16::try_from(self.port).map_err(|_| AddressError::BadPort(self.port))?;
        let ip = match self.ip.len() {
            0 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            4 => {
                let mut o = [0u8; 4];
                o.copy_from_slice(&self.ip);
                IpAddr::V4(o.into())
            }
            16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&self.ip);
                let ip = Ipv6Addr::from(o);
                return Ok(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    self.flowinfo,
                    self.scope_id,
                )));
            }
            n => return Err(AddressError::BadLength(n)),
        };
        Ok(SocketAddr::new(ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_round_trips_through_google_rpc_status() {
        let st = errno_status(errno::ECONNREFUSED, "connect");
        assert_eq!(status_errno(&st), Some(errno::ECONNREFUSED));
        assert_eq!(st.message(), "connect");
        assert_eq!(st.code(), tonic::Code::Aborted);
        let details = st.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "ECONNREFUSED");
        assert_eq!(info.domain, "tcpd");
        assert_eq!(info.metadata.get("errno").map(String::as_str), Some("111"));
        let st = errno_status(errno::EAGAIN, "");
        assert_eq!(st.message(), "EAGAIN");
        assert_ne!(
            st.code(),
            tonic::Code::Unavailable,
            "EAGAIN must not be retried"
        );
        assert_eq!(status_errno(&st), Some(errno::EAGAIN));
    }

    #[test]
    fn statuses_without_details_carry_no_errno() {
        assert_eq!(status_errno(&tonic::Status::unavailable("gone")), None);
    }

    #[test]
    fn errno_names_come_from_nix() {
        assert_eq!(errno_name(libc::ECONNRESET), "ECONNRESET");
        assert_eq!(errno_name(libc::ENOENT), "ENOENT");
        assert_eq!(errno_name(4095), "errno 4095");
        assert_eq!(errno_from_name("EPIPE"), Some(libc::EPIPE));
    }

    #[test]
    fn address_conversion() {
        let a: SocketAddr = "10.0.0.1:80".parse().expect("addr");
        let p = v2::SocketAddress::from(a);
        assert_eq!(p.ip, vec![10, 0, 0, 1]);
        assert_eq!(p.to_std(), Ok(a));
        let a6: SocketAddr = "[fd00::1]:443".parse().expect("addr");
        assert_eq!(v2::SocketAddress::from(a6).to_std(), Ok(a6));
        let bad = v2::SocketAddress {
            ip: vec![1, 2, 3],
            port: 1,
            ..Default::default()
        };
        assert_eq!(bad.to_std(), Err(AddressError::BadLength(3)));
        let bad = v2::SocketAddress {
            port: 70000,
            ..Default::default()
        };
        assert_eq!(bad.to_std(), Err(AddressError::BadPort(70000)));
        assert_eq!(
            v2::SocketAddress::default().to_std(),
            Ok("0.0.0.0:0".parse().expect("addr"))
        );
    }
}

/// The path of the daemon's fd socket for the API socket at `api`: the same
/// path with `.fd` appended (`/run/tcpd/tcpd.sock.fd`).
pub fn fd_socket_path(api: &str) -> String {
    format!("{api}.fd")
}

/// The fd channel's wire format: fixed-size little-endian messages on a
/// Unix stream socket, file descriptors riding along with `SCM_RIGHTS`.
///
/// A client first sends [`Request::Hello`] with the token of an
/// `OpenFdChannel` RPC; the daemon answers errno 0 and from then on runs
/// the channel's requests for that RPC's session, one at a time, each
/// answered by one [`Response`]:
/// - [`Request::New`]: socket(2) in the session, of `family` (Linux's
///   `AF_INET` or `AF_INET6`; 0 is `AF_INET`); the response carries the
///   handle and the client's end of a socketpair (`SCM_RIGHTS`);
/// - [`Request::Attach`]: a socketpair end for a socket the session already
///   owns without one (an accepted connection); the response carries it;
/// - [`Request::Claim`]: sent with a socketpair end (`SCM_RIGHTS`) that the
///   daemon handed out earlier, possibly to another process (fork): the
///   session becomes a co-owner; the response carries the handle.
/// - [`Request::Adopt`]: socket(2) with a socketpair the *client* made,
///   sent with both ends (`SCM_RIGHTS`: the daemon's end first, then the
///   client's, whose socket cookie names the socket from then on; the
///   daemon keeps the first and drops its copy of the second). `filler`:
///   bytes the client wrote from its end before (see `DESIGN-fds.md`). A
///   client end already known to the daemon is `EEXIST` (a forked copy
///   registered it first: claim it instead). The response carries the
///   handle.
/// - [`Request::Connect`]: connect(2), never waiting for the handshake:
///   followed by `payload_len` bytes, a protobuf `v2.ConnectRequest`
///   (`handle`, `address`, `options`; `nonblocking` is ignored). Handle 0:
///   the request carries a client-made pair as `Adopt` does and makes a new
///   socket of `family` first. The response's errno is `EINPROGRESS` while
///   the handshake goes on (the client's end turns writable when it is
///   established, or reports `POLLHUP` when it failed: then `SO_ERROR`),
///   and its handle is the socket's, also when the connect failed after a
///   new socket was made.
pub mod fd_channel {
    /// Bytes of a session token.
    pub const TOKEN_LEN: usize = 16;
    /// SO_SNDBUF of a connected socket's client end (the kernel doubles
    /// it): set by the daemon on accepted sockets, by the client once its
    /// connect completed (a new socket starts small: it is handed out full).
    pub const CONNECTED_SNDBUF: usize = 256 * 1024;
    /// SO_SNDBUF of a new socket's client end (the kernel doubles it): the
    /// filler it is handed out full of (about 8 KiB, copied in and thrown
    /// away once per connection: 32 KiB cost a C connection ~20 µs more,
    /// round 4), until the connection is established and the end gets
    /// [`CONNECTED_SNDBUF`] (libtcpd: after a blocking connect, `SO_ERROR`
    /// read 0, or its first write that went through).
    pub const NEW_SNDBUF: usize = 4 * 1024;
    /// SO_SNDBUF of the daemon's end: how much received data waits in the
    /// pair for the client, on top of the stack's receive buffer.
    pub const DAEMON_SNDBUF: usize = 256 * 1024;
    /// Bytes of every request.
    pub const REQUEST_LEN: usize = 32;
    /// Bytes of every response.
    pub const RESPONSE_LEN: usize = 16;

    const HELLO: u32 = 1;
    const NEW: u32 = 2;
    const ATTACH: u32 = 3;
    const CLAIM: u32 = 4;
    const ADOPT: u32 = 5;
    const CONNECT: u32 = 6;
    /// Largest `Connect` payload the daemon reads (a `v2.ConnectRequest`
    /// with its options is a few hundred bytes).
    pub const MAX_CONNECT_PAYLOAD: u32 = 64 * 1024;

    /// One request; see the module docs.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Request {
        Hello {
            token: [u8; TOKEN_LEN],
        },
        /// `family`: bytes 4..8 (0, the value of older clients, is AF_INET).
        New {
            family: i32,
        },
        Attach {
            handle: u64,
        },
        Claim,
        /// `family`: bytes 4..8; `filler`: bytes 12..16.
        Adopt {
            family: i32,
            filler: u32,
        },
        /// `family`: bytes 4..8; `payload_len`: bytes 8..12; `filler`:
        /// bytes 12..16 (the last two only for a client-made pair).
        Connect {
            family: i32,
            payload_len: u32,
            filler: u32,
        },
    }

    impl Request {
        pub fn encode(&self) -> [u8; REQUEST_LEN] {
            let mut out = [0u8; REQUEST_LEN];
            let kind = match self {
                Request::Hello { token } => {
                    out[8..8 + TOKEN_LEN].copy_from_slice(token);
                    HELLO
                }
                Request::New { family } => {
                    out[4..8].copy_from_slice(&family.to_le_bytes());
                    NEW
                }
                Request::Attach { handle } => {
                    out[8..16].copy_from_slice(&handle.to_le_bytes());
                    ATTACH
                }
                Request::Claim => CLAIM,
                Request::Adopt { family, filler } => {
                    out[4..8].copy_from_slice(&family.to_le_bytes());
                    out[12..16].copy_from_slice(&filler.to_le_bytes());
                    ADOPT
                }
                Request::Connect {
                    family,
                    payload_len,
                    filler,
                } => {
                    out[4..8].copy_from_slice(&family.to_le_bytes());
                    out[8..12].copy_from_slice(&payload_len.to_le_bytes());
                    out[12..16].copy_from_slice(&filler.to_le_bytes());
                    CONNECT
                }
            };
            out[..4].copy_from_slice(&kind.to_le_bytes());
            out
        }

        /// `None` for an unknown kind (the daemon then ends the channel).
        pub fn decode(bytes: &[u8; REQUEST_LEN]) -> Option<Request> {
            let word = |at: usize| {
                u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
            };
            let mut handle = [0u8; 8];
            handle.copy_from_slice(&bytes[8..16]);
            match word(0) {
                HELLO => {
                    let mut token = [0u8; TOKEN_LEN];
                    token.copy_from_slice(&bytes[8..8 + TOKEN_LEN]);
                    Some(Request::Hello { token })
                }
                NEW => Some(Request::New {
                    family: word(4) as i32,
                }),
                ADOPT => Some(Request::Adopt {
                    family: word(4) as i32,
                    filler: word(12),
                }),
                CONNECT => Some(Request::Connect {
                    family: word(4) as i32,
                    payload_len: word(8),
                    filler: word(12),
                }),
                ATTACH => Some(Request::Attach {
                    handle: u64::from_le_bytes(handle),
                }),
                CLAIM => Some(Request::Claim),
                _ => None,
            }
        }
    }

    /// The answer to one request: errno 0 and the socket's handle, or the
    /// errno of the failure (handle 0, no descriptor).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Response {
        pub errno: i32,
        pub handle: u64,
    }

    impl Response {
        pub fn encode(&self) -> [u8; RESPONSE_LEN] {
            let mut out = [0u8; RESPONSE_LEN];
            out[..4].copy_from_slice(&self.errno.to_le_bytes());
            out[8..16].copy_from_slice(&self.handle.to_le_bytes());
            out
        }

        pub fn decode(bytes: &[u8; RESPONSE_LEN]) -> Response {
            let mut errno = [0u8; 4];
            errno.copy_from_slice(&bytes[..4]);
            let mut handle = [0u8; 8];
            handle.copy_from_slice(&bytes[8..16]);
            Response {
                errno: i32::from_le_bytes(errno),
                handle: u64::from_le_bytes(handle),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn requests_and_responses_round_trip() {
            for r in [
                Request::Hello {
                    token: [7; TOKEN_LEN],
                },
                Request::New { family: 10 },
                Request::Attach {
                    handle: 0x0102_0304_0506_0708,
                },
                Request::Claim,
                Request::Adopt {
                    family: 10,
                    filler: 65_536,
                },
                Request::Connect {
                    family: 2,
                    payload_len: 40,
                    filler: 3,
                },
                Request::Connect {
                    family: -1,
                    payload_len: u32::MAX,
                    filler: 0,
                },
            ] {
                assert_eq!(Request::decode(&r.encode()), Some(r));
            }
            assert_eq!(Request::decode(&[0xff; REQUEST_LEN]), None);
            let r = Response {
                errno: 24,
                handle: 9,
            };
            assert_eq!(Response::decode(&r.encode()), r);
        }
    }
}
