//! A standard gRPC client with its defaults: Debian's python3-grpcio drives
//! the daemon over its Unix socket (e2e/tests/grpc_python/client.py).
//!
//! The client has no .proto file: it lists the services and loads the
//! message types through server reflection (grpc.reflection.v1, encoded by
//! hand since Debian packages no grpcio-reflection), reads
//! `AdminService.Status`, connects to a kernel peer across the TUN and
//! exchanges bytes with unary Socket/Connect/Write/Read/Close calls and
//! with a Stream RPC (grpcio's `stream_stream`: open by connect, data both
//! ways, close, OK — the daemon reads the Stream's frames itself), and
//! reads the `google.rpc.Status` + `ErrorInfo` details of failing calls
//! (ECONNREFUSED from a closed kernel port, EBADF from a double close). It
//! does so three times: with grpcio's default `:authority`, with the
//! percent-encoded socket path that grpc C-core ≥ 1.58 sends by default
//! (Python, C++, Ruby clients newer than Debian's), and with the raw path
//! grpc-java sends — each rejected by the HTTP/2 layer (RST_STREAM
//! PROTOCOL_ERROR) before daemon/server/src/authority.rs.
//!
//! Needs root and python3-grpcio (installed by .ci/run): skips without,
//! except under CI=true.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use tcpd_e2e::{Env, HOST_ADDR, in_ci, kernel_listener};

/// The interpreter with Debian's python3-grpcio (not a pyenv shim).
const PYTHON: &str = "/usr/bin/python3";

fn grpcio_available() -> bool {
    Command::new(PYTHON)
        .args(["-c", "import grpc, google.protobuf"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn python_grpcio_with_defaults_uses_reflection_calls_and_reads_error_info() {
    if !grpcio_available() {
        assert!(
            !in_ci(),
            "python3-grpcio is missing under CI=true (.ci/run installs it)"
        );
        eprintln!("SKIPPED: {PYTHON} cannot import grpc (apt-get install python3-grpcio)");
        return;
    }
    let Some(env) = Env::setup("grpcpy", &[]) else {
        return;
    };
    let (listener, addr) = kernel_listener(&env.ns);
    // The kernel peer: three sessions, each sends 17 bytes and reads them
    // back in upper case twice (unary calls, then a Stream).
    let peer = std::thread::spawn(move || {
        for _ in 0..6 {
            let (mut conn, _) = listener.accept().expect("accept the client's connection");
            conn.set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut buf = [0u8; 17];
            conn.read_exact(&mut buf).expect("the client's 17 bytes");
            conn.write_all(&buf.to_ascii_uppercase()).expect("answer");
        }
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc_python/client.py");
    let mut child = Command::new(PYTHON)
        .arg(script)
        .arg(env.daemon.socket())
        .arg(HOST_ADDR.to_string())
        .arg(addr.port().to_string())
        // Nothing listens on port 1 of the kernel side: RST, ECONNREFUSED.
        .arg("1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the python client");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the python client") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("reap the python client");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    println!("{out}");
    assert!(
        status.success() && out.contains("all checks passed"),
        "python grpcio client failed ({status}):\n{out}\n{err}"
    );
    peer.join().expect("kernel peer");
}
