//! Fuzz target `handler_calls`: bytes as a sequence of unary SocketService and
//! AdminService calls of one session against the real handlers and socket
//! facade (a second stack as the peer, no TUN), while another session's
//! listener and connection must stay untouched.
//!
//! The scenario and its checks: `tcpd_daemon::fuzzing::handler_calls`. How to run:
//! `../README.md`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpd_daemon::fuzzing::handler_calls(data));
