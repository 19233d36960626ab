//! `tcpd-nc` against the in-process fake daemon: connect and listen modes,
//! half-close on stdin EOF, exit codes and errno messages.

mod fake;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use fake::{FAKE_IP, Fake};
use tcpd_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NC: &str = env!("CARGO_BIN_EXE_tcpd-nc");

#[tokio::test]
async fn connect_mode_sends_stdin_half_closes_and_prints_the_reply() {
    let fake = Fake::start();
    let client = Client::connect(&fake.path).await.expect("session");
    let listener = client.tcp_bind("0.0.0.0:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        // Ends only because tcpd-nc half-closes after stdin's EOF.
        stream
            .read_to_end(&mut request)
            .await
            .expect("read request");
        stream.write_all(b"reply to: ").await.expect("write");
        stream.write_all(&request).await.expect("write");
        stream.close().await.expect("close");
    });
    let path = fake.path.clone();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(NC)
            .args([
                "-s",
                path.to_str().expect("utf-8 path"),
                &FAKE_IP.to_string(),
                &port.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tcpd-nc");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"hello\n")
            .expect("feed stdin");
        child.wait_with_output().expect("tcpd-nc output")
    })
    .await
    .expect("join");
    server.await.expect("server");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    assert_eq!(output.stdout, b"reply to: hello\n");
    assert!(output.status.success(), "{:?}", output.status);
}

#[test]
fn errors_exit_1_naming_the_errno() {
    let fake = Fake::start();
    let path = fake.path.to_str().expect("utf-8 path").to_string();
    let out = Command::new(NC)
        .args(["-s", &path, "10.99.0.1", "9"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "tcpd-nc: connect: Connection refused (ECONNREFUSED)\n"
    );

    let out = Command::new(NC)
        .args(["-s", "/nonexistent/tcpd.sock", "10.99.0.1", "9"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "tcpd-nc: daemon /nonexistent/tcpd.sock: No such file or directory (ENOENT)\n"
    );

    let out = Command::new(NC)
        .args(["-s", &path, "10.99.0.1"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(1),
        "connect mode needs HOST and PORT"
    );
    let out = Command::new(NC).args(["-k", "80"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "-k without -l is a usage error");
}

#[tokio::test]
async fn listen_mode_accepts_one_connection_and_copies_both_ways() {
    let fake = Fake::start();
    let path = fake.path.clone();
    let mut child = Command::new(NC)
        .args(["-s", path.to_str().expect("utf-8 path"), "-l", "7001"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tcpd-nc -l");
    let client = Client::connect(&path).await.expect("session");
    // Wait for the listener.
    let mut stream = None;
    for _ in 0..200 {
        match client.tcp_connect((FAKE_IP, 7001)).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let mut stream = stream.expect("tcpd-nc never listened");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"to the client\n").expect("stdin");
    drop(stdin); // EOF: tcpd-nc half-closes
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.expect("read");
    assert_eq!(got, b"to the client\n");
    stream.write_all(b"to stdout\n").await.expect("write");
    stream.shutdown().await.expect("shutdown");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
        .await
        .expect("join");
    assert_eq!(output.stdout, b"to stdout\n");
    assert!(
        output.status.success(),
        "{:?} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
