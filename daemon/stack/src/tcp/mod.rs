//! TCP: the per-connection machinery of RFC 9293 and its companions.
//!
//! - [`TcpState`]: the RFC 9293 §3.3.2 states and their names.
//! - [`connection`]: one connection's TCB and state machine (sans-IO).
//! - [`congestion`]: the congestion-control trait with NewReno and CUBIC.
//! - [`rtt`]: the RFC 6298 retransmission-timeout estimator.
//! - [`buffer`]: send buffer and receive buffer with out-of-order reassembly.
//! - [`isn`]: RFC 6528 initial sequence numbers.

pub mod buffer;
pub mod congestion;
pub mod connection;
pub mod isn;
pub mod rtt;

/// The connection states of RFC 9293 §3.3.2 (defined once, in `tcpd-types`,
/// for the stack, the daemon and every client).
pub use tcpd_types::TcpState;
