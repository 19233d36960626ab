//! The `tcpd` binary: all of the daemon lives in the library
//! `tcpd_daemon` (src/lib.rs).

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tcpd_daemon::main()
}
