//! Fuzz target `http2_authority`: client bytes through the HTTP/2 `:authority` rewrite
//! (authority.rs); what the server sees must not depend on how the reads
//! were split.
//!
//! The scenario and its checks: `tcpd_daemon::fuzzing::http2_authority`. How to run:
//! `../README.md`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpd_daemon::fuzzing::http2_authority(data));
