//! Errors, one small enum per socket operation. The core never speaks errno;
//! the daemon maps each variant to one exactly once, at its boundary (the
//! errno each variant stands for is noted on it).

/// Why an established or connecting connection failed; reported once through
/// the next operation or SO_ERROR, like a socket's pending error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ConnError {
    /// RST in answer to our SYN (ECONNREFUSED).
    #[error("connection refused")]
    Refused,
    /// RST on a synchronized connection (ECONNRESET).
    #[error("connection reset by peer")]
    Reset,
    /// Retransmissions or keepalive probes exhausted (ETIMEDOUT).
    #[error("connection timed out")]
    TimedOut,
    /// ICMP destination unreachable (EHOSTUNREACH), reported for a connecting socket.
    #[error("host unreachable")]
    HostUnreachable,
    /// Aborted locally by the administrator (ECONNABORTED).
    #[error("connection aborted")]
    Aborted,
}

/// bind(2) failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// EBADF
    #[error("no such socket")]
    BadHandle,
    /// EINVAL: already bound, or listening/connected.
    #[error("socket already bound")]
    AlreadyBound,
    /// EADDRINUSE
    #[error("address in use")]
    AddrInUse,
    /// EADDRNOTAVAIL: not one of the stack's addresses nor the unspecified one.
    #[error("address not available")]
    AddrNotAvailable,
    /// EAFNOSUPPORT: an address of the other family (an IPv4 address for
    /// an IPv6 socket or the reverse).
    #[error("address family not supported")]
    AddrFamily,
    /// EINVAL: an IPv4-mapped address on an IPV6_V6ONLY socket.
    #[error("invalid address")]
    Invalid,
}

/// listen(2) failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// EBADF
    #[error("no such socket")]
    BadHandle,
    /// EINVAL: connected or connecting.
    #[error("socket is connected")]
    InvalidState,
    /// EADDRINUSE: the automatic bind found no free port, or the port is taken.
    #[error("address in use")]
    AddrInUse,
}

/// accept(2) failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// EBADF
    #[error("no such socket")]
    BadHandle,
    /// EINVAL: not listening.
    #[error("socket is not listening")]
    NotListening,
    /// EAGAIN: no completed connection yet.
    #[error("no connection to accept")]
    WouldBlock,
}

/// connect(2) failures that are known at once; later failures arrive as [`ConnError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// EBADF
    #[error("no such socket")]
    BadHandle,
    /// EISCONN
    #[error("already connected")]
    AlreadyConnected,
    /// EALREADY: a connect is in progress.
    #[error("connect already in progress")]
    InProgress,
    /// EINVAL: listening socket, or a port/address of 0.
    #[error("invalid address or socket state")]
    Invalid,
    /// EADDRNOTAVAIL: no ephemeral port left for this destination, or a
    /// connect to a broadcast/multicast/own address.
    #[error("address not available")]
    AddrNotAvailable,
    /// EAFNOSUPPORT: an address of the other family (as for bind).
    #[error("address family not supported")]
    AddrFamily,
    /// ENETUNREACH: no address of the destination's family to send from
    /// (IPv6 not configured), or an IPv4-mapped destination on an
    /// IPV6_V6ONLY socket (as Linux).
    #[error("network unreachable")]
    NetUnreachable,
    /// A previous connect on this socket failed (the pending error, once).
    #[error("{0}")]
    Failed(ConnError),
}

/// send(2) failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// EBADF
    #[error("no such socket")]
    BadHandle,
    /// ENOTCONN: never connected, or still connecting.
    #[error("not connected")]
    NotConnected,
    /// EAGAIN: the send buffer is full.
    #[error("send buffer full")]
    WouldBlock,
    /// EPIPE: the sending side was shut down or the connection closed.
    #[error("broken pipe")]
    BrokenPipe,
    /// The connection failed (ECONNRESET, ETIMEDOUT...).
    #[error("{0}")]
    Failed(ConnError),
}

/// recv(2) failures. End of stream is `Ok(0)`, not an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// EBADF
    #[error("no such socket")]
    BadHandle,
    /// ENOTCONN
    #[error("not connected")]
    NotConnected,
    /// EAGAIN: no data yet.
    #[error("no data available")]
    WouldBlock,
    /// EINVAL: MSG_OOB with no urgent byte to read (none came, it was
    /// read already, or SO_OOBINLINE keeps it in the stream).
    #[error("no urgent data to read")]
    NoUrgentData,
    /// The connection failed (ECONNRESET, ETIMEDOUT, ECONNREFUSED...).
    #[error("{0}")]
    Failed(ConnError),
}

/// shutdown(2) failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShutdownError {
    /// EBADF
    #[error("no such socket")]
    BadHandle,
    /// ENOTCONN
    #[error("not connected")]
    NotConnected,
}

/// Failures of close, addresses, options and info: the handle or the option.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SocketError {
    /// EBADF
    #[error("no such socket")]
    BadHandle,
    /// ENOTCONN (getpeername on an unconnected socket)
    #[error("not connected")]
    NotConnected,
    /// ENOPROTOOPT: the option cannot be read or set.
    #[error("option not supported")]
    UnsupportedOption,
    /// EINVAL: the value is out of range.
    #[error("invalid option value")]
    InvalidValue,
}
