//! The process-wide default session (`Client::shared`, used by the free
//! constructors) found through `$TCPD_SOCKET`, and shared by tests that
//! each run on their own runtime.

mod fake;

use std::sync::OnceLock;

use fake::{FAKE_IP, Fake};
use tcpd_client::{TcpListener, TcpStream, blocking};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One fake daemon for the whole test binary, announced in `$TCPD_SOCKET`.
fn fake() -> &'static Fake {
    static FAKE: OnceLock<Fake> = OnceLock::new();
    FAKE.get_or_init(|| {
        let fake = Fake::start();
        // SAFETY: runs once, inside `get_or_init`, before any code of this
        // binary reads the environment; no other thread touches it here.
        unsafe { std::env::set_var(tcpd_proto::SOCKET_ENV, &fake.path) };
        fake
    })
}

#[tokio::test]
async fn free_constructors_use_the_socket_from_the_environment() {
    let _ = fake();
    let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (connected, accepted) =
        tokio::join!(TcpStream::connect((FAKE_IP, port)), listener.accept());
    let mut a = connected.expect("connect");
    let (mut b, _) = accepted.expect("accept");
    a.write_all(b"via the shared session").await.expect("write");
    a.shutdown().await.expect("shutdown");
    let mut got = String::new();
    b.read_to_string(&mut got).await.expect("read");
    assert_eq!(got, "via the shared session");
}

#[tokio::test]
async fn the_shared_session_survives_the_runtime_of_an_earlier_test() {
    let _ = fake();
    // Whichever test ran first created the session on its runtime's watch;
    // it must keep working here, on another runtime.
    for _ in 0..3 {
        let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
        assert_eq!(listener.local_addr().expect("addr").ip(), &FAKE_IP);
    }
}

#[test]
fn blocking_free_constructors_share_it_too() {
    let _ = fake();
    let listener = blocking::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let stream = blocking::TcpStream::connect((FAKE_IP, port)).expect("connect");
    let (accepted, peer) = listener.accept().expect("accept");
    assert_eq!(stream.local_addr().expect("local"), peer);
    assert_eq!(accepted.peer_addr().expect("peer"), peer);
}
