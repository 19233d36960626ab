//! Criterion micro-benchmarks of the RPC path between a client and a real
//! tcpd, without the network where possible:
//!
//! - `unary GetSockName (Socket)`: one client → daemon → client round trip
//!   through `tcpd-client`'s low-level [`tcpd_client::Socket`];
//! - `unary GetSocketName (raw tonic)`: the same call on the generated
//!   `SocketClient`, to separate the library's cost from gRPC's;
//! - `stream 1-byte echo`: one byte written and read back through a
//!   [`tcpd_client::TcpStream`] (the Stream RPC data path) to a kernel echo
//!   server on the far side of tcpd's TUN — the RPC cost plus two trips
//!   through tcpd's stack and the TUN;
//! - `kernel getsockname(2)`: the kernel's figure for the trivial call.
//!
//! Runs only as root (a namespace, a TUN, a daemon from the same target
//! directory: build it first with `cargo build --release -p tcpd`);
//! otherwise prints why and exits 0 (under `CI=true`, fails). Pinning as in
//! `tcpd-bench`: this process on CPU 0, the daemon and the echo server on
//! CPU 1. `cargo bench -p tcpd-e2e --bench rpc -- --quick` takes seconds.

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::Criterion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tcpd_e2e::bench::workloads::{Server, ServerKind};
use tcpd_e2e::bench::{pin_current_thread, pin_process};
use tcpd_e2e::{Daemon, HOST_ADDR, Netns};

const CLIENT_CPU: usize = 0;
const PEER_CPU: usize = 1;
/// Port of the kernel echo server inside the namespace.
const ECHO_PORT: u16 = 7007;

/// Skips (exit 0) with `why`, or fails under `CI=true`.
fn skip(why: &str) -> ! {
    if tcpd_e2e::in_ci() {
        eprintln!("rpc bench: cannot run under CI=true: {why}");
        std::process::exit(1);
    }
    eprintln!("SKIPPED rpc bench: {why}");
    std::process::exit(0);
}

/// The `tcpd` binary next to this bench's `deps/` directory, if built.
fn tcpd_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("tcpd");
    path.exists().then_some(path)
}

/// Everything the benchmarks talk to; torn down (daemon killed, namespace
/// removed) on drop, the server first.
struct Setup {
    _echo: Server,
    daemon: Daemon,
    _ns: Netns,
}

fn setup() -> anyhow::Result<Setup> {
    let ns = Netns::new("bench-rpc")?;
    let daemon = Daemon::start(&ns, &[])?;
    if let Some(pid) = daemon.pid() {
        pin_process(pid, PEER_CPU)?;
    }
    let echo = Server::start(&ns, HOST_ADDR, ECHO_PORT, ServerKind::Echo, PEER_CPU)?;
    Ok(Setup {
        _echo: echo,
        daemon,
        _ns: ns,
    })
}

/// Times `iters` runs of `call` inside one `block_on` (no per-iteration
/// runtime entry), panicking on the first error: a failing call would make
/// the figure meaningless.
fn time_async<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, mut call: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            call().await.expect("benchmarked call failed");
        }
        start.elapsed()
    })
}

fn main() -> anyhow::Result<()> {
    if !tcpd_e2e::require_privileges("rpc bench") {
        // require_privileges said why (and panics itself under CI=true).
        return Ok(());
    }
    if tcpd_binary().is_none() {
        skip("no tcpd binary in this target directory (cargo build --release -p tcpd first)");
    }
    pin_current_thread(CLIENT_CPU);
    let setup = setup()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let echo_addr = SocketAddrV4::new(HOST_ADDR, ECHO_PORT);
    let (client, socket, stream) = rt.block_on(async {
        let client = tcpd_client::Client::connect(setup.daemon.socket()).await?;
        let socket = tcpd_client::Socket::new(&client).await?;
        let stream = client.tcp_connect(echo_addr).await?;
        stream.set_nodelay(true)?;
        anyhow::Ok((client, socket, stream))
    })?;
    let handle = socket.handle();
    let mut stream = stream;
    let kernel_socket = std::net::TcpListener::bind(("127.0.0.1", 0))?;

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    {
        let mut group = criterion.benchmark_group("rpc");
        group.bench_function("unary GetSockName (Socket)", |b| {
            b.iter_custom(|iters| {
                time_async(&rt, iters, || async { socket.local_addr().await.map(drop) })
            });
        });
        group.bench_function("unary GetSocketName (raw tonic)", |b| {
            b.iter_custom(|iters| {
                time_async(&rt, iters, || {
                    let mut rpc = client.rpc();
                    async move {
                        rpc.get_socket_name(tcpd_proto::v2::GetSocketNameRequest { handle })
                            .await
                            .map(drop)
                            .map_err(tcpd_client::status_to_io)
                    }
                })
            });
        });
        group.bench_function("stream 1-byte echo (TcpStream via TUN)", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut byte = [0x42u8; 1];
                    let start = Instant::now();
                    for _ in 0..iters {
                        stream.write_all(&byte).await.expect("echo write");
                        stream.read_exact(&mut byte).await.expect("echo read");
                    }
                    start.elapsed()
                })
            });
        });
        group.bench_function("kernel getsockname(2)", |b| {
            b.iter(|| kernel_socket.local_addr().map(drop));
        });
        group.finish();
    }
    criterion.final_summary();
    rt.block_on(socket.close())?;
    drop(stream);
    drop(setup);
    Ok(())
}
