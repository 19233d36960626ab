//! `tcpd-proto`: the tcpd.v1 wire API shared by the daemon and every client.
//!
//! Owns the generated protobuf messages and tonic services (module [`v1`]) and
//! the one convention every failure follows: a [`tonic::Status`] whose
//! `details` carry an encoded [`v1::Errno`]. [`errno_status`] builds such a
//! status; [`status_errno`] reads the errno back (clients turn it into
//! `io::Error::from_raw_os_error` or C `errno`).

#![allow(missing_debug_implementations)]

/// Generated code for package `tcpd.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("tcpd.v1");
}

use prost::Message;

/// Default path of the daemon's Unix socket.
pub const DEFAULT_SOCKET_PATH: &str = "/run/tcpd/tcpd.sock";

/// Environment variable clients read to find the daemon's socket.
pub const SOCKET_ENV: &str = "TCPD_SOCKET";

/// The socket path a client should use: `$TCPD_SOCKET`, else the default.
pub fn socket_path_from_env() -> String {
    std::env::var(SOCKET_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_SOCKET_PATH.to_string())
}

/// Builds the status for a failed call carrying `errno` (a Linux errno number).
///
/// `message` is free text for humans; the errno is authoritative.
pub fn errno_status(errno: i32, message: impl Into<String>) -> tonic::Status {
    let name = errno_name(errno);
    let details = v1::Errno {
        number: errno,
        name: name.to_string(),
    }
    .encode_to_vec();
    let mut message = message.into();
    if message.is_empty() {
        message = name.to_string();
    }
    tonic::Status::with_details(errno_code(errno), message, details.into())
}

/// Reads the errno carried by a status built with [`errno_status`].
///
/// Statuses without errno details (transport failures, a daemon that went
/// away) map to a best guess from the gRPC code, so a client always has an
/// errno to report.
pub fn status_errno(status: &tonic::Status) -> i32 {
    if let Ok(errno) = v1::Errno::decode(status.details())
        && errno.number != 0
    {
        return errno.number;
    }
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => errno::EINVAL,
        Code::NotFound => errno::EBADF,
        Code::AlreadyExists => errno::EEXIST,
        Code::PermissionDenied | Code::Unauthenticated => errno::EPERM,
        Code::ResourceExhausted => errno::ENOBUFS,
        Code::DeadlineExceeded => errno::ETIMEDOUT,
        Code::Unavailable => errno::ECONNREFUSED,
        Code::Cancelled => errno::ECANCELED,
        Code::Unimplemented => errno::EOPNOTSUPP,
        _ => errno::EIO,
    }
}

/// Coarse gRPC code for an errno; clients should read the errno, not this.
fn errno_code(e: i32) -> tonic::Code {
    use tonic::Code;
    match e {
        errno::EINVAL | errno::EAFNOSUPPORT | errno::ENOPROTOOPT => Code::InvalidArgument,
        errno::EBADF | errno::ENOTSOCK | errno::ENOENT => Code::NotFound,
        errno::EADDRINUSE | errno::EISCONN | errno::EALREADY => Code::AlreadyExists,
        errno::EACCES | errno::EPERM => Code::PermissionDenied,
        errno::ENOBUFS | errno::ENOMEM | errno::EMFILE => Code::ResourceExhausted,
        errno::ETIMEDOUT => Code::DeadlineExceeded,
        errno::EAGAIN | errno::EINPROGRESS => Code::Unavailable,
        errno::ENOTCONN | errno::EPIPE | errno::ECONNRESET | errno::ECONNREFUSED => {
            Code::FailedPrecondition
        }
        errno::EOPNOTSUPP => Code::Unimplemented,
        _ => Code::Unknown,
    }
}

/// Linux errno numbers used by tcpd (x86_64/aarch64 values, which agree).
pub mod errno {
    #![allow(missing_docs)]
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EINTR: i32 = 4;
    pub const EIO: i32 = 5;
    pub const EBADF: i32 = 9;
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const EACCES: i32 = 13;
    pub const EFAULT: i32 = 14;
    pub const EEXIST: i32 = 17;
    pub const EINVAL: i32 = 22;
    pub const EMFILE: i32 = 24;
    pub const EPIPE: i32 = 32;
    pub const ENOTSOCK: i32 = 88;
    pub const EDESTADDRREQ: i32 = 89;
    pub const EMSGSIZE: i32 = 90;
    pub const ENOPROTOOPT: i32 = 92;
    pub const EOPNOTSUPP: i32 = 95;
    pub const EAFNOSUPPORT: i32 = 97;
    pub const EADDRINUSE: i32 = 98;
    pub const EADDRNOTAVAIL: i32 = 99;
    pub const ENETUNREACH: i32 = 101;
    pub const ECONNABORTED: i32 = 103;
    pub const ECONNRESET: i32 = 104;
    pub const ENOBUFS: i32 = 105;
    pub const EISCONN: i32 = 106;
    pub const ENOTCONN: i32 = 107;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
    pub const EHOSTUNREACH: i32 = 113;
    pub const EALREADY: i32 = 114;
    pub const EINPROGRESS: i32 = 115;
    pub const ECANCELED: i32 = 125;
}

/// Symbolic name of an errno number ("EUNKNOWN" for numbers tcpd never uses).
pub fn errno_name(e: i32) -> &'static str {
    use errno::*;
    match e {
        EPERM => "EPERM",
        EINTR => "EINTR",
        EIO => "EIO",
        EBADF => "EBADF",
        ENOENT => "ENOENT",
        EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM",
        EACCES => "EACCES",
        EFAULT => "EFAULT",
        EEXIST => "EEXIST",
        EINVAL => "EINVAL",
        EMFILE => "EMFILE",
        EPIPE => "EPIPE",
        ENOTSOCK => "ENOTSOCK",
        EDESTADDRREQ => "EDESTADDRREQ",
        EMSGSIZE => "EMSGSIZE",
        ENOPROTOOPT => "ENOPROTOOPT",
        EOPNOTSUPP => "EOPNOTSUPP",
        EAFNOSUPPORT => "EAFNOSUPPORT",
        EADDRINUSE => "EADDRINUSE",
        EADDRNOTAVAIL => "EADDRNOTAVAIL",
        ENETUNREACH => "ENETUNREACH",
        ECONNABORTED => "ECONNABORTED",
        ECONNRESET => "ECONNRESET",
        ENOBUFS => "ENOBUFS",
        EISCONN => "EISCONN",
        ENOTCONN => "ENOTCONN",
        ETIMEDOUT => "ETIMEDOUT",
        ECONNREFUSED => "ECONNREFUSED",
        EHOSTUNREACH => "EHOSTUNREACH",
        EALREADY => "EALREADY",
        EINPROGRESS => "EINPROGRESS",
        ECANCELED => "ECANCELED",
        _ => "EUNKNOWN",
    }
}

/// Conversions between [`v1::SockAddr`] and `std::net::SocketAddrV4`.
impl From<std::net::SocketAddrV4> for v1::SockAddr {
    fn from(a: std::net::SocketAddrV4) -> Self {
        v1::SockAddr {
            ip: u32::from(*a.ip()),
            port: u32::from(a.port()),
        }
    }
}

impl v1::SockAddr {
    /// The address as a std type; `None` when the port does not fit 16 bits.
    pub fn to_std(&self) -> Option<std::net::SocketAddrV4> {
        let port = u16::try_from(self.port).ok()?;
        Some(std::net::SocketAddrV4::new(self.ip.into(), port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_round_trips_through_status() {
        let st = errno_status(errno::ECONNREFUSED, "connect");
        assert_eq!(status_errno(&st), errno::ECONNREFUSED);
        assert_eq!(st.message(), "connect");
        let st = errno_status(errno::EAGAIN, "");
        assert_eq!(st.message(), "EAGAIN");
        assert_eq!(status_errno(&st), errno::EAGAIN);
    }

    #[test]
    fn statuses_without_details_still_map() {
        let st = tonic::Status::unavailable("gone");
        assert_eq!(status_errno(&st), errno::ECONNREFUSED);
    }

    #[test]
    fn sockaddr_conversion() {
        let a = std::net::SocketAddrV4::new([10, 0, 0, 1].into(), 80);
        let p = v1::SockAddr::from(a);
        assert_eq!(p.ip, 0x0a00_0001);
        assert_eq!(p.to_std(), Some(a));
        assert_eq!(v1::SockAddr { ip: 1, port: 70000 }.to_std(), None);
    }
}
