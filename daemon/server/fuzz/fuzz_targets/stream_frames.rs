//! Fuzz target `stream_frames`: bytes as the up half of one Stream RPC (gRPC framing
//! included) of an attacking session; the stream must end once its up half
//! ends, leave no socket behind and never touch another session's sockets.
//!
//! The scenario and its checks: `tcpd_daemon::fuzzing::stream_frames`. How to run:
//! `../README.md`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpd_daemon::fuzzing::stream_frames(data));
