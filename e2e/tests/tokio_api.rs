//! tcpd-client is a drop-in for `tokio::net`: the code in
//! `tokio_api/code.rs` is compiled twice, against `tokio::net` and against
//! `tcpd_client`, with only the `use` line differing — then run over the
//! kernel's loopback (tokio) and through the daemon to the kernel in a
//! namespace (tcpd), with the same results.

mod with_tokio {
    #![allow(dead_code)]
    use std::io;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};

    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    include!("tokio_api/code.rs");
}

mod with_tcpd {
    #![allow(dead_code)]
    use std::io;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};

    use tcpd_client::{TcpListener, TcpSocket, TcpStream};

    include!("tokio_api/code.rs");
}

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Mutex;
use std::time::Duration;

use tcpd_e2e::{Env, HOST_ADDR, TCPD_ADDR, payload, runtime};

const LIMIT: Duration = Duration::from_secs(60);

/// What a stalled echo leaves to look at: the client's last step, the
/// kernel's view of the connection (`ss -tin` in the namespace), tcpd's
/// (`tcpctl ls`) and the end of the daemon's log. A rare stall (once, under
/// the whole suite's load) was seen here with nothing but "timed out".
fn stall_report(env: Option<&Env>, progress: &Mutex<String>) -> String {
    let step = progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(env) = env else {
        return format!("stalled at: {step}");
    };
    let run = |mut cmd: std::process::Command| {
        cmd.output().map_or_else(
            |e| format!("({e})"),
            |o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            },
        )
    };
    let mut ss = env.ns.command("ss");
    ss.args(["-tin"]);
    let log = env.daemon.log_text();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    format!(
        "stalled at: {step}\n--- kernel (ss -tin):\n{}\n--- tcpd (tcpctl ls):\n{}\n--- daemon log (last 40 lines):\n{}",
        run(ss),
        run(env.daemon.tcpctl(&["ls"])),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

#[test]
fn the_same_code_runs_on_tokio_net_and_on_tcpd() {
    let msg = payload(200_000, 12);
    let rt = runtime();

    // tokio::net over the loopback, as a reference.
    let progress = Mutex::new(String::new());
    let echoed = rt.block_on(async {
        let addr = with_tokio::echo_server("127.0.0.1:0".parse().expect("addr"), 1)
            .await
            .expect("tokio listener");
        tokio::time::timeout(LIMIT, with_tokio::echo_client(addr, &msg, &progress))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "tokio echo over loopback took over {LIMIT:?}: {}",
                    stall_report(None, &progress)
                )
            })
    });
    assert_eq!(echoed.expect("tokio echo"), msg);

    let Some(env) = Env::setup("tokio-api", &[]) else {
        return;
    };
    rt.block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        assert!(
            tcpd_client::Client::set_shared(client).is_ok(),
            "first default session"
        );
    });

    // tcpd as the client: the kernel echoes in the namespace.
    let echo_port = 7501;
    let (listening_tx, listening_rx) = std::sync::mpsc::channel();
    let peer = env.ns.spawn(move || {
        use std::io::{Read, Write};
        let listener =
            std::net::TcpListener::bind(SocketAddrV4::new(HOST_ADDR, echo_port)).expect("listen");
        listening_tx.send(()).expect("listening");
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut buf = vec![0u8; 65536];
        loop {
            let n = s.read(&mut buf).expect("kernel read");
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).expect("kernel echo");
        }
    });
    // The kernel listens before tcpd connects (a fixed pause lost that
    // race on a loaded machine: connection refused).
    listening_rx
        .recv_timeout(LIMIT)
        .expect("the kernel listener started");
    let target = SocketAddr::from((HOST_ADDR, echo_port));
    let echoed = rt.block_on(async {
        // The report is taken while the client still holds its connection.
        let client = with_tcpd::echo_client(target, &msg, &progress);
        tokio::pin!(client);
        tokio::select! {
            echoed = &mut client => echoed,
            () = tokio::time::sleep(LIMIT) => panic!(
                "tcpd echo client took over {LIMIT:?}: {}",
                stall_report(Some(&env), &progress)
            ),
        }
    });
    assert_eq!(echoed.expect("tcpd echo"), msg);
    peer.join().expect("kernel peer");

    // tcpd as the server (TcpSocket bind + listen), the kernel as client.
    let local = rt
        .block_on(with_tcpd::echo_server(
            SocketAddr::from((TCPD_ADDR, 7502)),
            1,
        ))
        .expect("tcpd listener");
    assert_eq!(local, SocketAddr::from((TCPD_ADDR, 7502)));
    let back = env.ns.within(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(&local, LIMIT).expect("kernel connect");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        s.write_all(b"through tcpd").expect("kernel write");
        s.shutdown(std::net::Shutdown::Write).expect("FIN");
        let mut back = Vec::new();
        s.read_to_end(&mut back).expect("kernel read");
        back
    });
    assert_eq!(back, b"through tcpd");
}
