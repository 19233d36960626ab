//! `tcpd-types`: the words every part of tcpd shares, defined once.
//!
//! - [`TcpState`]: the RFC 9293 §3.3.2 connection states and their names
//!   ("SYN-RECEIVED", "TIME-WAIT"), used by the stack, the daemon's admin
//!   API, `tcpctl` and the trace renderer; [`TcpStates`], a set of them
//!   (bitflags), for state filters.
//! - [`PollFlags`]: poll(2) readiness bits with Linux's values, which the
//!   stack reports, the daemon passes through the wire unchanged
//!   (`tcpd.v2.PollEvent` has the same numbers) and the clients hand out.
//! - [`OptionName`]: the socket options tcpd supports, with their Linux
//!   `(level, optname)` pair, C name and the C value's shape and range
//!   ([`ValueKind`]) — what setsockopt(2) validates before touching a socket.
//! - [`SendFlags`]: the send(2) flags tcpd acts on (`MSG_OOB`, `MSG_EOR`,
//!   `MSG_MORE`) with Linux's values, from the C shim to the stack.
//!
//! This crate has no I/O and no wire format: the conversions to and from the
//! protobuf enums live at the boundary, in `tcpd-proto`, which depends on
//! this crate. Errno numbers and names are not here: they come from
//! `libc`/`nix` (see `tcpd_proto::errno`).

#![forbid(unsafe_code)]

mod option;
mod poll;
mod send;
mod state;

pub use option::{OptionName, ValueKind};
pub use poll::PollFlags;
pub use send::SendFlags;
pub use state::{TcpState, TcpStates};
