//! `libtcpd.so`: tcpd's TCP for C programs, with BSD-socket signatures.
//!
//! A sockets program is ported by renaming its calls (`socket` →
//! `tcpd_socket`, `poll` → `tcpd_poll`, ...) and linking `-ltcpd`. Every
//! call maps onto one unary RPC of the daemon's `tcpd.v2.SocketService` service
//! with POSIX semantics: -1 and `errno` on failure (the errno the daemon
//! sent), blocking unless `O_NONBLOCK`/`MSG_DONTWAIT`.
//!
//! Modules:
//! - `ffi`: errno and the panic-proof wrapper every entry point uses;
//! - `session`: the per-process runtime and daemon session (fork rule);
//! - `fdtable`: fd numbers the library reserves for its sockets;
//! - `sockaddr`, `options`: C value conversions;
//! - `api`, `poll`: the entry points;
//! - `test_support` (feature `test-support`): a safe Rust face of the
//!   entry points, so Rust test and benchmark code needs no `unsafe`.
//!
//! The C header `include/tcpd.h` is generated from this crate by cbindgen
//! (see `build.rs`) and committed; a test keeps it current.

mod api;
mod fdtable;
mod ffi;
mod options;
mod poll;
mod session;
mod sockaddr;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use api::*;
pub use poll::tcpd_poll;
