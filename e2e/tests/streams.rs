//! Many concurrent bulk streams on one client session (the `tcpd-bench`
//! "100 concurrent streams" workload, shortened) on the process-wide
//! session: every stream must finish and every byte must arrive. (The
//! deterministic test of the stall that once stopped this workload, a
//! Stream half keeping a session slot, is in the daemon's
//! `inprocess_tests`.)

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener};
use std::time::{Duration, Instant};

use tcpd_e2e::{Env, HOST_ADDR};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STREAMS: usize = 100;
const CHUNK: usize = 64 * 1024;

#[test]
fn a_hundred_concurrent_bulk_streams_on_one_session_all_finish() {
    let Some(env) = Env::setup("streams-100", &[]) else {
        return;
    };
    // Kernel sink: per connection, count bytes until EOF, answer the count.
    let port = 7501;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sink = env.ns.spawn(move || {
        let listener = TcpListener::bind(SocketAddrV4::new(HOST_ADDR, port)).expect("listen");
        ready_tx.send(()).expect("ready");
        let mut workers = Vec::new();
        for _ in 0..STREAMS {
            let (mut s, _) = listener.accept().expect("accept");
            workers.push(std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(60)))
                    .expect("timeout");
                let mut buf = vec![0u8; CHUNK];
                let mut total = 0u64;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(e) => panic!("sink read after {total} bytes: {e}"),
                    }
                }
                s.write_all(&total.to_be_bytes()).expect("answer");
                total
            }));
        }
        workers
            .into_iter()
            .map(|w| w.join().expect("sink worker"))
            .sum::<u64>()
    });
    ready_rx.recv().expect("sink ready");
    // A current-thread runtime, as tcpd-bench's client uses: the library's
    // driver tasks share the one thread with the hundred writers.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    // A default session on the library's runtime (what a current-thread
    // runtime's `TcpStream::connect` used before round 7, and does with
    // TCPD_CLIENT_RUNTIME=library; see `Client::shared`), here named by
    // `set_shared` rather than `$TCPD_SOCKET`.
    let default = tcpd_client::blocking::connect_client(env.daemon.socket()).expect("session");
    assert!(
        tcpd_client::Client::set_shared(default).is_ok(),
        "first default session"
    );
    let sent = rt.block_on(async {
        let client = tcpd_client::Client::shared().await.expect("session");
        let mut set = tokio::task::JoinSet::new();
        for i in 0..STREAMS {
            let client = client.clone();
            set.spawn(async move {
                let mut s = client
                    .tcp_connect(SocketAddrV4::new(HOST_ADDR, port))
                    .await
                    .unwrap_or_else(|e| panic!("stream {i}: connect: {e}"));
                let buf = vec![0x5a_u8; CHUNK];
                let mut sent = 0u64;
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(1) {
                    s.write_all(&buf)
                        .await
                        .unwrap_or_else(|e| panic!("stream {i}: write after {sent}: {e}"));
                    sent += CHUNK as u64;
                }
                s.shutdown().await.expect("shutdown");
                let mut count = [0u8; 8];
                s.read_exact(&mut count)
                    .await
                    .unwrap_or_else(|e| panic!("stream {i}: count: {e}"));
                assert_eq!(
                    u64::from_be_bytes(count),
                    sent,
                    "stream {i}: bytes received"
                );
                sent
            });
        }
        let mut total = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while let Some(r) = tokio::time::timeout_at(deadline, set.join_next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {STREAMS} streams still running after 90 s",
                    set.len()
                )
            })
        {
            total += r.expect("stream task");
        }
        total
    });
    let received = sink.join().expect("sink");
    assert_eq!(received, sent);
    eprintln!(
        "{STREAMS} streams: {} MiB in {:.1} s",
        sent >> 20,
        started.elapsed().as_secs_f64()
    );
}
