//! The harness's own guarantees: namespaces are private and always removed.

use std::process::Command;

use tcpd_e2e::{Netns, require_privileges};

fn namespaces() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn namespace_is_removed_on_drop_even_after_a_panic() {
    if !require_privileges("namespace_is_removed_on_drop_even_after_a_panic") {
        return;
    }
    let ns = Netns::new("harness").expect("create namespace");
    let name = ns.name().to_string();
    assert!(namespaces().contains(&name));
    // A thread inside the namespace sees only its own loopback interface.
    let links = ns.within(|| {
        std::fs::read_dir("/sys/class/net")
            .map(|d| d.count())
            .unwrap_or(0)
    });
    assert!(links >= 1);
    let result = std::panic::catch_unwind(move || {
        let _guard = ns;
        panic!("test failure inside the namespace");
    });
    assert!(result.is_err());
    assert!(
        !namespaces().contains(&name),
        "namespace {name} left behind"
    );
}

#[test]
fn kernel_tcp_works_inside_a_namespace() {
    if !require_privileges("kernel_tcp_works_inside_a_namespace") {
        return;
    }
    let ns = Netns::new("harness-tcp").expect("create namespace");
    let echoed = ns.within(|| {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut b = [0u8; 5];
            s.read_exact(&mut b).expect("read");
            s.write_all(&b).expect("write");
        });
        let mut c = std::net::TcpStream::connect(addr).expect("connect");
        c.write_all(b"hello").expect("write");
        let mut b = [0u8; 5];
        c.read_exact(&mut b).expect("read");
        t.join().expect("server");
        b
    });
    assert_eq!(&echoed, b"hello");
}

/// The stuck test [`a_stuck_test_is_stopped_by_the_watchdog`] runs in a child
/// process: it starts a daemon and then waits forever.
#[test]
#[ignore = "run only by a_stuck_test_is_stopped_by_the_watchdog, in a child process"]
fn stuck_test_for_the_watchdog() {
    let ns = Netns::new("harness-stuck").expect("create namespace");
    let _daemon = tcpd_e2e::Daemon::start(&ns, &[]).expect("start tcpd");
    println!("NAMESPACE={}", ns.name());
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

#[test]
fn a_stuck_test_is_stopped_by_the_watchdog() {
    if !require_privileges("a_stuck_test_is_stopped_by_the_watchdog") {
        return;
    }
    let out = Command::new(std::env::current_exe().expect("current_exe"))
        .args([
            "--ignored",
            "--exact",
            "stuck_test_for_the_watchdog",
            "--nocapture",
        ])
        .env(tcpd_e2e::watchdog::LIMIT_ENV, "3")
        .output()
        .expect("run the stuck test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(101),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // The report names the test and shows both views of the sockets.
    assert!(
        stderr.contains("test `stuck_test_for_the_watchdog` still running after 3s"),
        "{stderr}"
    );
    assert!(stderr.contains("kernel sockets (ss -tanoi)"), "{stderr}");
    // tcpctl reached the stuck daemon: its table header (ss says "Process").
    assert!(stderr.contains("tcpctl ls"), "{stderr}");
    assert!(stderr.contains("Owner"), "tcpctl output missing: {stderr}");
    // The daemon log's tail, with the line it writes when ready.
    assert!(stderr.contains("tcpd.log"), "{stderr}");
    assert!(
        stderr.contains("tcpd ready"),
        "daemon log missing: {stderr}"
    );
    // ...and the namespace the stuck test created is gone.
    let name = stdout
        .lines()
        .find_map(|l| l.strip_prefix("NAMESPACE="))
        .expect("the stuck test printed its namespace");
    assert!(!namespaces().contains(name), "namespace {name} left behind");
}
