//! `tcpd-client`: use tcpd's TCP from Rust.
//!
//! (The full client lands here; this file starts with the connection helpers
//! every client of the daemon shares.)

pub mod transport;

pub use transport::{connect_channel, status_to_io};
