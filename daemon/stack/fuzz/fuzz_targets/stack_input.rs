//! cargo-fuzz target `stack_input`: a `Stack` with open connections (a
//! listener, an accepted ESTABLISHED connection with data in flight, a
//! connection in SYN-SENT) fed a sequence of operations decoded from the
//! input — raw packets, checksum-valid TCP segments near the live sequence
//! numbers, ICMP, IPv6 with extension-header chains (TCP, ICMPv6 echo and
//! errors, unknown protocols), mutated valid packets, clock jumps and user calls — by the
//! driver shared with `tests/stack_fuzz.rs`. It panics on any stack panic or
//! broken invariant (invalid emitted packet, endless transmit, stale timer).
//!
//! Run (needs a nightly toolchain and cargo-fuzz):
//!
//! ```text
//! cd daemon/stack/fuzz
//! cargo +nightly fuzz run stack_input -- -max_total_time=60
//! ```
//!
//! The stable-toolchain counterpart that `cargo test` runs is
//! `tests/stack_fuzz.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_driver/mod.rs"]
mod fuzz_driver;

fuzz_target!(|data: &[u8]| {
    fuzz_driver::Harness::new().run(data);
});
