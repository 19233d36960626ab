//! The one place where failures become Linux errno numbers.
//!
//! The stack reports one small error enum per operation (see
//! `tcpd_stack::error`); the daemon adds a few failures of its own (a handle
//! owned by another session, a privileged port, malformed requests). Every
//! one of them is converted here, exactly once, into an [`Errno`]; the gRPC
//! handlers turn an [`Errno`] into a `tonic::Status` whose details are a
//! `google.rpc.Status` with the errno's `ErrorInfo` ([`tcpd_proto::errno_status`]). Nothing else in the daemon picks
//! errno numbers for stack errors.

use tcpd_proto::errno::*;
use tcpd_stack::{
    AcceptError, BindError, ConnError, ConnectError, ListenError, RecvError, SendError,
    ShutdownError, SocketError,
};

/// A failed operation: a Linux errno number and a short human explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Errno {
    /// The errno number as on Linux.
    pub number: i32,
    /// Free text for humans (the errno is authoritative).
    pub message: String,
}

impl Errno {
    /// An errno with an explanation.
    pub fn new(number: i32, message: impl Into<String>) -> Self {
        Errno {
            number,
            message: message.into(),
        }
    }

    /// EBADF: unknown handle, or a handle that belongs to another session.
    pub fn bad_handle() -> Self {
        Errno::new(EBADF, "no such socket in this session")
    }

    /// The OS error of a failed system call (EIO when it has none).
    pub fn from_io(e: &std::io::Error) -> Self {
        Errno::new(
            e.raw_os_error().unwrap_or(tcpd_proto::errno::EIO),
            e.to_string(),
        )
    }

    /// EINVAL with an explanation (malformed request fields).
    pub fn invalid(message: impl Into<String>) -> Self {
        Errno::new(EINVAL, message)
    }

    /// Whether this is EAGAIN (the operation would block).
    pub fn would_block(&self) -> bool {
        self.number == EAGAIN
    }

    /// The gRPC status carrying this errno in its details.
    pub fn into_status(self) -> tonic::Status {
        tcpd_proto::errno_status(self.number, self.message)
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({})",
            self.message,
            tcpd_proto::errno_name(self.number)
        )
    }
}

impl From<Errno> for tonic::Status {
    fn from(e: Errno) -> Self {
        e.into_status()
    }
}

/// The errno a connection failure is reported with (read(2), write(2),
/// connect(2) and SO_ERROR all use the same numbers on Linux).
pub fn conn_error_errno(e: ConnError) -> i32 {
    match e {
        ConnError::Refused => ECONNREFUSED,
        ConnError::Reset => ECONNRESET,
        ConnError::TimedOut => ETIMEDOUT,
        ConnError::HostUnreachable => EHOSTUNREACH,
        ConnError::Aborted => ECONNABORTED,
    }
}

impl From<ConnError> for Errno {
    fn from(e: ConnError) -> Self {
        Errno::new(conn_error_errno(e), e.to_string())
    }
}

impl From<BindError> for Errno {
    fn from(e: BindError) -> Self {
        let n = match e {
            BindError::BadHandle => EBADF,
            BindError::AlreadyBound => EINVAL,
            BindError::AddrInUse => EADDRINUSE,
            BindError::AddrNotAvailable => EADDRNOTAVAIL,
            BindError::AddrFamily => EAFNOSUPPORT,
            BindError::Invalid => EINVAL,
        };
        Errno::new(n, e.to_string())
    }
}

impl From<ListenError> for Errno {
    fn from(e: ListenError) -> Self {
        let n = match e {
            ListenError::BadHandle => EBADF,
            ListenError::InvalidState => EINVAL,
            ListenError::AddrInUse => EADDRINUSE,
        };
        Errno::new(n, e.to_string())
    }
}

impl From<AcceptError> for Errno {
    fn from(e: AcceptError) -> Self {
        let n = match e {
            AcceptError::BadHandle => EBADF,
            AcceptError::NotListening => EINVAL,
            AcceptError::WouldBlock => EAGAIN,
        };
        Errno::new(n, e.to_string())
    }
}

impl From<ConnectError> for Errno {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Failed(c) => Errno::from(c),
            ConnectError::BadHandle => Errno::new(EBADF, e.to_string()),
            ConnectError::AlreadyConnected => Errno::new(EISCONN, e.to_string()),
            ConnectError::InProgress => Errno::new(EALREADY, e.to_string()),
            ConnectError::Invalid => Errno::new(EINVAL, e.to_string()),
            ConnectError::AddrNotAvailable => Errno::new(EADDRNOTAVAIL, e.to_string()),
            ConnectError::AddrFamily => Errno::new(EAFNOSUPPORT, e.to_string()),
            ConnectError::NetUnreachable => Errno::new(ENETUNREACH, e.to_string()),
        }
    }
}

impl From<SendError> for Errno {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Failed(c) => Errno::from(c),
            SendError::BadHandle => Errno::new(EBADF, e.to_string()),
            SendError::NotConnected => Errno::new(ENOTCONN, e.to_string()),
            SendError::WouldBlock => Errno::new(EAGAIN, e.to_string()),
            SendError::BrokenPipe => Errno::new(EPIPE, e.to_string()),
        }
    }
}

impl From<RecvError> for Errno {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Failed(c) => Errno::from(c),
            RecvError::BadHandle => Errno::new(EBADF, e.to_string()),
            RecvError::NotConnected => Errno::new(ENOTCONN, e.to_string()),
            RecvError::WouldBlock => Errno::new(EAGAIN, e.to_string()),
            RecvError::NoUrgentData => Errno::new(EINVAL, e.to_string()),
        }
    }
}

impl From<ShutdownError> for Errno {
    fn from(e: ShutdownError) -> Self {
        let n = match e {
            ShutdownError::BadHandle => EBADF,
            ShutdownError::NotConnected => ENOTCONN,
        };
        Errno::new(n, e.to_string())
    }
}

impl From<SocketError> for Errno {
    fn from(e: SocketError) -> Self {
        let n = match e {
            SocketError::BadHandle => EBADF,
            SocketError::NotConnected => ENOTCONN,
            SocketError::UnsupportedOption => ENOPROTOOPT,
            SocketError::InvalidValue => EINVAL,
        };
        Errno::new(n, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_map_like_linux() {
        assert_eq!(conn_error_errno(ConnError::Refused), 111);
        assert_eq!(conn_error_errno(ConnError::Reset), 104);
        assert_eq!(conn_error_errno(ConnError::TimedOut), 110);
        assert_eq!(conn_error_errno(ConnError::HostUnreachable), 113);
        assert_eq!(conn_error_errno(ConnError::Aborted), 103);
    }

    #[test]
    fn operation_errors_map_to_their_documented_errno() {
        assert_eq!(Errno::from(BindError::AddrInUse).number, EADDRINUSE);
        assert_eq!(Errno::from(BindError::AlreadyBound).number, EINVAL);
        assert_eq!(
            Errno::from(BindError::AddrNotAvailable).number,
            EADDRNOTAVAIL
        );
        assert_eq!(Errno::from(ListenError::InvalidState).number, EINVAL);
        assert_eq!(Errno::from(AcceptError::WouldBlock).number, EAGAIN);
        assert_eq!(Errno::from(AcceptError::NotListening).number, EINVAL);
        assert_eq!(Errno::from(ConnectError::InProgress).number, EALREADY);
        assert_eq!(Errno::from(ConnectError::AlreadyConnected).number, EISCONN);
        assert_eq!(
            Errno::from(ConnectError::Failed(ConnError::Refused)).number,
            ECONNREFUSED
        );
        assert_eq!(Errno::from(SendError::BrokenPipe).number, EPIPE);
        assert_eq!(Errno::from(SendError::NotConnected).number, ENOTCONN);
        assert_eq!(
            Errno::from(SendError::Failed(ConnError::Reset)).number,
            ECONNRESET
        );
        assert_eq!(Errno::from(RecvError::WouldBlock).number, EAGAIN);
        assert_eq!(
            Errno::from(RecvError::Failed(ConnError::TimedOut)).number,
            ETIMEDOUT
        );
        assert_eq!(Errno::from(ShutdownError::NotConnected).number, ENOTCONN);
        assert_eq!(
            Errno::from(SocketError::UnsupportedOption).number,
            ENOPROTOOPT
        );
        assert_eq!(Errno::from(SocketError::InvalidValue).number, EINVAL);
        assert_eq!(Errno::from(SocketError::BadHandle).number, EBADF);
    }

    #[test]
    fn status_carries_the_errno() {
        let status = Errno::from(ConnectError::Failed(ConnError::Refused)).into_status();
        assert_eq!(tcpd_proto::status_errno(&status), Some(ECONNREFUSED));
        assert!(Errno::from(RecvError::WouldBlock).would_block());
    }
}
