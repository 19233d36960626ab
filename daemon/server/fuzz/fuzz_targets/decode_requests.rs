//! Fuzz target `decode_requests`: arbitrary bytes decoded as every request message of
//! both services and as an fd-channel request; what decodes must re-encode
//! to the same message.
//!
//! The scenario and its checks: `tcpd_daemon::fuzzing::decode_requests`. How to run:
//! `../README.md`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpd_daemon::fuzzing::decode_requests(data));
