//! Checks against a real daemon, run by hand (the e2e suite owns automated
//! runs with its namespace harness). Skipped unless
//! `TCPD_CLIENT_TEST_SOCKET` names a running daemon's socket and
//! `TCPD_CLIENT_TEST_PEER` a kernel `HOST:PORT` speaking the "verdict sink"
//! protocol: for each pair of connections it accepts, the first is the
//! verdict channel, the second carries data; once the data connection
//! reaches EOF it writes `"<count> <sha256 hex>\n"` on the verdict channel
//! and closes both. Run with `--test-threads=1`. A kernel peer for it, run
//! inside the daemon's network namespace:
//!
//! ```text
//! import hashlib, socket, sys
//! srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
//! srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(8)
//! while True:
//!     verdict, _ = srv.accept(); data, _ = srv.accept()
//!     h = hashlib.sha256(); n = 0
//!     while b := data.recv(1 << 16): h.update(b); n += len(b)
//!     verdict.sendall(f"{n} {h.hexdigest()}\n".encode()); verdict.close(); data.close()
//! ```
//!
//! The two close tests need the daemon to finish a Stream's already-sent up
//! frames before it acts on `Close` (the client ends the up side and waits
//! for its queue to drain first; see `stream.rs`).

use std::io::{Read, Write};

use tcpd_client::{Client, TcpStream, blocking};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn env() -> Option<(String, String)> {
    let socket = std::env::var("TCPD_CLIENT_TEST_SOCKET").ok()?;
    let peer = std::env::var("TCPD_CLIENT_TEST_PEER").ok()?;
    Some((socket, peer))
}

fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// The verdict line the sink must send for `data`.
fn expected_verdict(data: &[u8]) -> String {
    // No sha2 dependency here: compare the byte count, and the checksum the
    // sink prints is echoed for the log.
    format!("{} ", data.len())
}

async fn verdict(mut channel: TcpStream) -> String {
    let mut line = String::new();
    channel
        .read_to_string(&mut line)
        .await
        .expect("read verdict");
    line
}

#[tokio::test]
async fn dropping_right_after_writing_still_delivers_every_byte() {
    let Some((socket, peer)) = env() else {
        eprintln!("skipped: TCPD_CLIENT_TEST_SOCKET / TCPD_CLIENT_TEST_PEER not set");
        return;
    };
    let client = Client::connect(&socket).await.expect("session");
    let channel = client
        .tcp_connect(peer.as_str())
        .await
        .expect("verdict channel");
    let mut data_conn = client
        .tcp_connect(peer.as_str())
        .await
        .expect("data connection");
    let data = payload(8 * 1024 * 1024);
    data_conn.write_all(&data).await.expect("write");
    // No shutdown and no flush: close on drop must deliver, then FIN.
    drop(data_conn);
    let line = verdict(channel).await;
    eprintln!("sink: {line:?}");
    assert!(line.starts_with(&expected_verdict(&data)), "{line}");
}

#[tokio::test]
async fn explicit_close_delivers_every_byte() {
    let Some((socket, peer)) = env() else {
        eprintln!("skipped: TCPD_CLIENT_TEST_SOCKET / TCPD_CLIENT_TEST_PEER not set");
        return;
    };
    let client = Client::connect(&socket).await.expect("session");
    let channel = client
        .tcp_connect(peer.as_str())
        .await
        .expect("verdict channel");
    let mut data_conn = client
        .tcp_connect(peer.as_str())
        .await
        .expect("data connection");
    let data = payload(3 * 1024 * 1024 + 17);
    data_conn.write_all(&data).await.expect("write");
    data_conn.close().await.expect("close");
    let line = verdict(channel).await;
    assert!(line.starts_with(&expected_verdict(&data)), "{line}");
}

#[test]
fn the_blocking_api_round_trips() {
    let Some((socket, peer)) = env() else {
        eprintln!("skipped: TCPD_CLIENT_TEST_SOCKET / TCPD_CLIENT_TEST_PEER not set");
        return;
    };
    let client = blocking::connect_client(&socket).expect("session");
    let mut channel = blocking::TcpStream::connect_with(&client, peer.as_str()).expect("channel");
    let mut data_conn = blocking::TcpStream::connect_with(&client, peer.as_str()).expect("data");
    data_conn.write_all(b"0123456789").expect("write");
    data_conn
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut line = String::new();
    channel.read_to_string(&mut line).expect("read");
    assert!(line.starts_with("10 "), "{line}");
}
