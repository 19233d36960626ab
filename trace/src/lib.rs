//! `tcpd-trace`: the vocabulary of tcpd's traces, shared by the daemon and
//! `tcpctl`.
//!
//! - [`event`]: the trace event model (one [`Event`] per segment, state
//!   change, timer fire, drop or impairer action), its JSON form (the
//!   documented schema of `tcpctl trace --json`), and its construction from
//!   the stack's [`tcpd_stack::TraceRecord`];
//! - [`proto`]: conversion to and from the Admin API's `TraceEvent`;
//! - [`peer`]: the peer's state, inferred from the segments (RFC 9293);
//! - [`ladder`]: the renderer that draws a connection as the seed's ladder
//!   diagram;
//! - [`capture`]: pcapng with two interfaces (the stack's view and the
//!   link's, either side of the impairer) for `tcpctl capture`.

#![forbid(unsafe_code)]

pub mod capture;
pub mod event;
pub mod ladder;
pub mod peer;
pub mod proto;

pub use event::{Dir, Event, Kind, Segment};
pub use ladder::{Ladder, LadderOptions, render_all};
