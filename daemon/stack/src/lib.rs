//! `tcpd-stack`: the sans-IO TCP/IP core of tcpd, over IPv4 and IPv6.
//!
//! No sockets, no threads, no clock: IP packets go in through
//! [`Stack::handle_packet`] and come out of [`Stack::poll_transmit`]; time is
//! an argument ([`time::Instant`]); the next wake-up is
//! [`Stack::poll_timeout`]; readiness is reported by [`Stack::poll_event`].
//! The daemon is thin glue around it; tests drive it with a virtual clock.
//!
//! Layout:
//! - [`wire`]: IPv4, IPv6, TCP, ICMPv4, ICMPv6 checked views and parse/emit.
//! - [`seq`]: wrapping sequence numbers.
//! - [`tcp`]: states, the connection state machine, buffers, RTO, congestion control, ISNs.
//! - [`stack`]: the interface, demultiplexing, listeners, ports, the socket API.
//! - [`socket`], [`error`], [`config`], [`stats`]: the vocabulary of the API.
//! - [`trace`]: per-connection trace records (segments, states, timer fires,
//!   drops) for the ladder diagram of `tcpctl trace`; `tracing` spans and
//!   events for logs.

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod seq;
pub mod socket;
pub mod stack;
pub mod stats;
pub mod tcp;
pub mod time;
pub mod trace;
pub mod wire;

pub use config::{
    CongestionAlgorithm, LinkOffload, LocalPortRange, OptionTime, SocketOptions, StackConfig,
    SynCookieMode,
};
pub use error::{
    AcceptError, BindError, ConnError, ConnectError, ListenError, RecvError, SendError,
    ShutdownError, SocketError,
};
pub use ipnet::Ipv6Net;
pub use seq::SeqNum;
pub use socket::{
    CaState, IpFamily, MemoryLevel, OptionName, PmtuDiscovery, Readiness, RecoveryInfo, SendFlags,
    Shutdown, SockOption, SocketHandle, SocketInfo, StackEvent, TcpInfo, TcpInfoOptions,
};
pub use stack::{Stack, Transmit};
pub use stats::{DropReason, Stats};
pub use tcp::TcpState;
pub use time::{Duration, Instant};
pub use trace::{TraceEvent, TraceFilter, TraceRecord};
