//! The workloads: kernel-side servers (the peer in both topologies) and
//! client loops generic over how the client reaches TCP ([`Dialer`]: the
//! kernel's sockets, or tcpd through `tcpd-client`).
//!
//! Every server runs on its own thread inside the peer's namespace, on a
//! current-thread tokio runtime pinned to the peer CPU; every client loop runs
//! the same way on the client CPU. Loops are bounded by a duration or a count.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Netns;
use crate::bench::{percentile, pin_current_thread};
use tcpd::test_support::CSocket;

/// Size of each write in bulk transfers.
pub const CHUNK: usize = 64 * 1024;

/// How a client reaches TCP.
pub trait Dialer: Clone + Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Opens a connection to `addr`; `nodelay` turns Nagle off
    /// (request/response workloads).
    fn connect(
        &self,
        addr: SocketAddr,
        nodelay: bool,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// The Linux kernel's own sockets (the client thread sits in the client namespace).
#[derive(Clone, Copy, Debug)]
pub struct KernelDialer;

impl Dialer for KernelDialer {
    type Stream = tokio::net::TcpStream;
    async fn connect(&self, addr: SocketAddr, nodelay: bool) -> io::Result<Self::Stream> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(nodelay)?;
        Ok(s)
    }
}

/// tcpd through the Rust client library (`tcpd_client::TcpStream`, the
/// Stream RPC data path), on the process-wide session from `$TCPD_SOCKET`.
#[derive(Clone, Copy, Debug)]
pub struct TcpdDialer;

impl Dialer for TcpdDialer {
    type Stream = tcpd_client::TcpStream;
    async fn connect(&self, addr: SocketAddr, nodelay: bool) -> io::Result<Self::Stream> {
        let s = session().await?.tcp_connect(addr).await?;
        if nodelay {
            s.set_nodelay(true)?;
        }
        Ok(s)
    }
}

/// tcpd through the Rust client library on a session of the library's own
/// runtime (threads `tcpd-client-io`) — where a current-thread runtime's
/// default session lived before round 7. The idle rows use it so that they
/// measure what they always did: 100 000 dropped streams closed one by one
/// by the library after the client's runtime is gone (on the caller's own
/// session the runtime's end would end the session, and the daemon would
/// close them all in one sweep instead).
#[derive(Clone, Copy, Debug)]
pub struct TcpdLibraryDialer;

impl Dialer for TcpdLibraryDialer {
    type Stream = tcpd_client::TcpStream;
    async fn connect(&self, addr: SocketAddr, nodelay: bool) -> io::Result<Self::Stream> {
        // The blocking API's default session is the library's; asked for
        // from a runtime's thread it still returns at once once opened.
        let client = tcpd_client::blocking::shared_client()?;
        let s = client.tcp_connect(addr).await?;
        if nodelay {
            s.set_nodelay(true)?;
        }
        Ok(s)
    }
}

std::thread_local! {
    /// This client thread's own session (see [`session`]).
    static CALLER_SESSION: std::cell::RefCell<Option<tcpd_client::Client>> =
        const { std::cell::RefCell::new(None) };
}

/// The session the tcpd rows use: the library's default one
/// ([`tcpd_client::Client::shared`]: the client thread's current-thread
/// runtime's own since round 7; on the library's runtime, one hop to its
/// `tcpd-client-io` thread away, with `TCPD_CLIENT_RUNTIME=library` — the
/// A/B switch for where the client's HTTP/2 runs), or with
/// `TCPD_BENCH_CALLER_SESSION` set, a session opened explicitly on the
/// calling thread's runtime ([`tcpd_client::Client::connect`]).
pub async fn session() -> io::Result<tcpd_client::Client> {
    if std::env::var_os("TCPD_BENCH_CALLER_SESSION").is_none() {
        return tcpd_client::Client::shared().await;
    }
    if let Some(client) = CALLER_SESSION.with(|c| c.borrow().clone()) {
        return Ok(client);
    }
    let client = tcpd_client::Client::connect(tcpd_proto::socket_path_from_env()).await?;
    CALLER_SESSION.with(|c| *c.borrow_mut() = Some(client.clone()));
    Ok(client)
}

/// Accept-queue length of every benchmark listener. The default of the
/// listening helpers (128) overflows when 64 connects arrive at once: the
/// kernel then drops SYNs (`ListenOverflows`) and each costs a 1 s SYN
/// retransmission (RFC 6298 §2.1 initial RTO), which would be measured as
/// slowness of the side under test. The kernel caps it at
/// `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: u32 = 4096;

/// A kernel listener on `addr` with [`LISTEN_BACKLOG`] and `SO_REUSEADDR`.
fn listen(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    listen_with(addr, None)
}

/// [`listen`] with TCP_CONGESTION set to `congestion`, if given.
fn listen_with(addr: SocketAddr, congestion: Option<&str>) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if let Some(name) = congestion {
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::TcpCongestion,
            &std::ffi::OsString::from(name),
        )
        .map_err(io::Error::from)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What a kernel-side server does with each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// Reads to EOF, then writes the byte count (u64, big-endian) and closes.
    Sink,
    /// Writes for the given time, then closes.
    Source(Duration),
    /// Echoes everything back (Nagle off) until EOF.
    Echo,
    /// Reads one byte, writes one byte, closes (the server closes first).
    OneShot,
    /// Keeps the connection open until the server stops.
    Hold,
    /// HTTP/1.1 (hyper's server, keep-alive): every request gets a 13-byte
    /// "hello, world" body.
    Http,
}

/// SO_SNDBUF of every [`ServerKind::Source`] connection (tcpd-bench
/// `--source-sndbuf`, a diagnostic): unset, the kernel autotunes it up to
/// `tcp_wmem[2]` (4 MiB), and a receiver slower than the source leaves that
/// much unsent data waiting in it.
pub static SOURCE_SNDBUF: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// A running server; stops (and closes its connections) on drop.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts a server of `kind` on `ip:port` inside `ns`, pinned to `cpu`.
    pub fn start(
        ns: &Netns,
        ip: impl Into<IpAddr>,
        port: u16,
        kind: ServerKind,
        cpu: usize,
    ) -> io::Result<Server> {
        Server::start_with_congestion(ns, ip, port, kind, cpu, None)
    }

    /// [`Server::start`] whose connections use the congestion control
    /// `congestion` (TCP_CONGESTION on the listener, which accepted sockets
    /// inherit) instead of the namespace's default.
    pub fn start_with_congestion(
        ns: &Netns,
        ip: impl Into<IpAddr>,
        port: u16,
        kind: ServerKind,
        cpu: usize,
        congestion: Option<&'static str>,
    ) -> io::Result<Server> {
        let addr = SocketAddr::new(ip.into(), port);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let thread = ns.spawn(move || {
            pin_current_thread(cpu);
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match listen_with(addr, congestion) {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut held = Vec::new();
                let accept_loop = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            // EMFILE and the like: back off instead of spinning.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        match kind {
                            ServerKind::Hold => held.push(stream),
                            kind => {
                                tokio::spawn(serve(stream, kind));
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = accept_loop => {}
                    _ = stop_rx => {}
                }
            });
        });
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("server thread died"))??;
        Ok(Server {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(mut stream: tokio::net::TcpStream, kind: ServerKind) {
    let mut buf = vec![0u8; CHUNK];
    match kind {
        ServerKind::Sink => {
            let mut total: u64 = 0;
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let _ = stream.write_all(&total.to_be_bytes()).await;
            let _ = stream.shutdown().await;
        }
        ServerKind::Source(d) => {
            if let Some(size) = SOURCE_SNDBUF.get() {
                // The kernel doubles it, as for any SO_SNDBUF.
                let _ =
                    nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::SndBuf, size);
            }
            let start = Instant::now();
            while start.elapsed() < d {
                if stream.write_all(&buf).await.is_err() {
                    return;
                }
            }
            let _ = stream.shutdown().await;
        }
        ServerKind::Echo => {
            let _ = stream.set_nodelay(true);
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
        ServerKind::OneShot => {
            let _ = stream.set_nodelay(true);
            if stream.read_exact(&mut buf[..1]).await.is_ok() {
                let _ = stream.write_all(&buf[..1]).await;
            }
            let _ = stream.shutdown().await;
        }
        ServerKind::Http => {
            let _ = stream.set_nodelay(true);
            let service = hyper::service::service_fn(|_request| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(HTTP_BODY),
                )))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        }
        ServerKind::Hold => {}
    }
}

/// The body the [`ServerKind::Http`] server answers with.
pub const HTTP_BODY: &[u8] = b"hello, world\n";

/// One GET with hyper's HTTP/1.1 client on an open connection; checks the
/// answer.
async fn http_get(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    addr: SocketAddr,
) -> io::Result<()> {
    use http_body_util::BodyExt;
    let request = hyper::Request::get("/")
        .header(hyper::header::HOST, addr.to_string())
        .body(http_body_util::Empty::new())
        .map_err(io::Error::other)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(io::Error::other)?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes();
    if status != hyper::StatusCode::OK || body.as_ref() != HTTP_BODY {
        return Err(io::Error::other(format!(
            "unexpected answer: {status} {body:?}"
        )));
    }
    Ok(())
}

/// hyper's HTTP/1.1 client over a stream of `d` (TCP_NODELAY on, as
/// hyper-util's and tonic's connectors set it).
async fn http_connect<D: Dialer>(
    d: &D,
    addr: SocketAddr,
) -> io::Result<hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>> {
    let stream = d.connect(addr, true).await?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// hyper HTTP/1.1 GETs per second for `dur`: on one keep-alive
/// connection, or each on a new connection.
pub async fn http_gets<D: Dialer>(
    d: D,
    addr: SocketAddr,
    dur: Duration,
    new_connection: bool,
) -> io::Result<f64> {
    let start = Instant::now();
    let mut n = 0u64;
    let mut sender = None;
    let mut steps = (new_connection && std::env::var_os("TCPD_BENCH_STEPS").is_some())
        .then(|| Vec::with_capacity(16 * 1024));
    while start.elapsed() < dur {
        let t = Instant::now();
        if sender.is_none() || new_connection {
            sender = Some(http_connect(&d, addr).await?);
        }
        let connected = Instant::now();
        if let Some(sender) = sender.as_mut() {
            http_get(sender, addr).await?;
        }
        n += 1;
        if let Some(steps) = steps.as_mut() {
            let got = Instant::now();
            // The connection ends in the background (hyper's task): the
            // rest of the loop until the next connect starts.
            sender = None;
            tokio::task::yield_now().await;
            let us = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e6;
            steps.push([
                us(t, connected),
                us(connected, got),
                0.0,
                0.0,
                us(got, Instant::now()),
            ]);
        }
    }
    if let Some(mut steps) = steps {
        print_step_medians(
            &format!(
                "hyper new connection per GET, {}",
                std::any::type_name::<D>()
            ),
            [
                "connect + handshake",
                "GET",
                "-",
                "-",
                "drop (to the next connect)",
            ],
            &mut steps,
        );
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// A [`ServerKind::Hold`] server in a child process (this same program,
/// re-run with `--hold-helper`), for idle-connection counts beyond what one
/// process may hold: every accepted connection is a descriptor, and
/// `RLIMIT_NOFILE` caps a process (raising the hard limit needs
/// `CAP_SYS_RESOURCE`). The child stops when its stdin closes, and is
/// killed on drop.
#[derive(Debug)]
pub struct HoldProcess {
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl HoldProcess {
    /// Starts `program --hold-helper <ns> --hold-addr <ip:port> --hold-cpu
    /// <cpu>` and waits for its "ready" line (the listener is bound).
    pub fn start(
        program: &std::path::Path,
        ns: &Netns,
        addr: SocketAddr,
        cpu: usize,
    ) -> io::Result<HoldProcess> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(program)
            .arg("--hold-helper")
            .arg(ns.name())
            .arg("--hold-addr")
            .arg(addr.to_string())
            .arg("--hold-cpu")
            .arg(cpu.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let ready = child
            .stdout
            .take()
            .map(|out| {
                let mut line = String::new();
                std::io::BufReader::new(out)
                    .read_line(&mut line)
                    .map(|_| line)
            })
            .transpose()?;
        let held = HoldProcess { addr, child };
        match ready.as_deref().map(str::trim) {
            Some("ready") => Ok(held),
            other => Err(io::Error::other(format!(
                "hold helper for {addr} did not start (said {other:?})"
            ))),
        }
    }
}

impl Drop for HoldProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `--hold-helper` side of [`HoldProcess`]: enters namespace `ns`,
/// listens on `addr`, says "ready" on stdout, and holds every connection it
/// accepts until stdin reaches end of file.
pub fn hold_helper_main(ns: &str, addr: SocketAddr, cpu: usize) -> io::Result<()> {
    use std::io::Write;
    use std::os::fd::AsFd;
    let netns = std::fs::File::open(std::path::Path::new("/run/netns").join(ns))?;
    nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
    pin_current_thread(cpu);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = listen(addr)?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "ready")?;
            out.flush()?;
        }
        let mut held = Vec::new();
        let accept_loop = async {
            loop {
                match listener.accept().await {
                    // Held out of tokio's reactor: the peer's FIN then wakes
                    // no one here, so closing many connections costs this
                    // process (which shares tcpd's CPU) nothing.
                    Ok((stream, _)) => match stream.into_std() {
                        Ok(stream) => held.push(stream),
                        Err(_) => continue,
                    },
                    // EMFILE and the like: back off instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        };
        let parent_gone = async {
            let _ = tokio::task::spawn_blocking(|| {
                std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())
            })
            .await;
        };
        tokio::select! {
            () = accept_loop => {}
            () = parent_gone => {}
        }
        Ok(())
    })
}

/// Runs `f` to completion on a client thread: optionally inside `ns`, pinned
/// to `cpu`, on a current-thread tokio runtime. Gives up after `limit` (see
/// [`run_blocking_client`]).
pub fn run_client<T: Send + 'static, F: Future<Output = io::Result<T>> + 'static>(
    ns: Option<&Netns>,
    cpu: usize,
    limit: Duration,
    f: impl FnOnce() -> F + Send + 'static,
) -> io::Result<T> {
    run_blocking_client(ns, cpu, limit, move || -> io::Result<T> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(f())
    })
}

/// Runs the blocking `f` on a client thread, optionally inside `ns`, pinned
/// to `cpu`, and waits at most `limit` for its result.
///
/// A loop that hangs (a lost wake-up, a peer that never answers) becomes a
/// `TimedOut` error instead of a benchmark that never ends; the stuck thread
/// is abandoned (it dies with the process, which then reports the error and
/// removes its namespaces).
pub fn run_blocking_client<T: Send + 'static>(
    ns: Option<&Netns>,
    cpu: usize,
    limit: Duration,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let body = move || {
        pin_current_thread(cpu);
        // The receiver is gone only when the caller already gave up.
        let _ = done_tx.send(f());
    };
    let handle = match ns {
        Some(ns) => ns.spawn(body),
        None => std::thread::spawn(body),
    };
    match done_rx.recv_timeout(limit) {
        Ok(result) => {
            let _ = handle.join();
            result
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("client loop still running after {limit:?}; abandoned"),
        )),
        // The sender was dropped without a result: the thread panicked.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let _ = handle.join();
            Err(io::Error::other("client thread panicked"))
        }
    }
}

/// Result of a bulk transfer.
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    pub bytes: u64,
    pub seconds: f64,
}

impl Transfer {
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.seconds / 1e9
    }
}

/// Client sends for `dur` to a [`ServerKind::Sink`]; the count the server
/// received (it answers after EOF) over the time until that answer.
pub async fn bulk_send<D: Dialer>(d: D, addr: SocketAddr, dur: Duration) -> io::Result<Transfer> {
    let mut s = d.connect(addr, false).await?;
    let buf = vec![0x5a_u8; CHUNK];
    let start = Instant::now();
    while start.elapsed() < dur {
        s.write_all(&buf).await?;
    }
    s.shutdown().await?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await?;
    Ok(Transfer {
        bytes: u64::from_be_bytes(count),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Client reads from a [`ServerKind::Source`] until EOF.
pub async fn bulk_recv<D: Dialer>(d: D, addr: SocketAddr) -> io::Result<Transfer> {
    let mut s = d.connect(addr, false).await?;
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    let mut start = None;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        start.get_or_insert_with(Instant::now);
        bytes += n as u64;
    }
    let seconds = start.map_or(f64::NAN, |s| s.elapsed().as_secs_f64());
    Ok(Transfer { bytes, seconds })
}

/// Request/response figures.
#[derive(Clone, Copy, Debug)]
pub struct PingPong {
    pub transactions_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl PingPong {
    /// From each round trip's time (µs) over `seconds` in all.
    fn from_latencies(mut lat: Vec<f64>, seconds: f64) -> PingPong {
        let n = lat.len();
        lat.sort_by(f64::total_cmp);
        PingPong {
            transactions_per_s: n as f64 / seconds,
            p50_us: percentile(&lat, 50.0),
            p99_us: percentile(&lat, 99.0),
        }
    }
}

/// 1-byte ping-pong against a [`ServerKind::Echo`] for `dur`.
pub async fn request_response<D: Dialer>(
    d: D,
    addr: SocketAddr,
    dur: Duration,
) -> io::Result<PingPong> {
    let mut s = d.connect(addr, true).await?;
    let mut lat = Vec::with_capacity(100_000);
    let mut byte = [0u8; 1];
    let start = Instant::now();
    while start.elapsed() < dur {
        let t = Instant::now();
        s.write_all(&byte).await?;
        s.read_exact(&mut byte).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(PingPong::from_latencies(lat, start.elapsed().as_secs_f64()))
}

/// Connection-rate figures.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionRate {
    pub per_second: f64,
    /// Median time of one connect + exchange + close: unlike the rate, not
    /// moved by rare stalls (a lost SYN costs a 1 s retransmission timeout).
    pub p50_us: f64,
}

impl ConnectionRate {
    fn from_latencies(mut lat: Vec<f64>, seconds: f64) -> ConnectionRate {
        let n = lat.len();
        lat.sort_by(f64::total_cmp);
        ConnectionRate {
            per_second: n as f64 / seconds,
            p50_us: percentile(&lat, 50.0),
        }
    }
}

/// Connections per second: connect, 1-byte exchange, close (the server
/// closes first, so TIME-WAIT stays on the server side), for `dur`. With
/// `TCPD_BENCH_STEPS` set, also prints the median of each step to stderr.
pub async fn connection_rate<D: Dialer>(
    d: D,
    addr: SocketAddr,
    dur: Duration,
) -> io::Result<ConnectionRate> {
    let start = Instant::now();
    let mut lat = Vec::with_capacity(16 * 1024);
    let mut steps = std::env::var_os("TCPD_BENCH_STEPS").map(|_| Vec::with_capacity(16 * 1024));
    let mut byte = [1u8; 1];
    while start.elapsed() < dur {
        let t = Instant::now();
        let mut mark = t;
        let mut lap = || {
            let now = Instant::now();
            let us = (now - mark).as_secs_f64() * 1e6;
            mark = now;
            us
        };
        let mut s = d.connect(addr, true).await?;
        let connect = lap();
        s.write_all(&byte).await?;
        let write = lap();
        s.read_exact(&mut byte).await?;
        let echo = lap();
        // Wait for the server's FIN so the connection is really over.
        let mut rest = [0u8; 1];
        let _ = s.read(&mut rest).await?;
        let fin = lap();
        drop(s);
        let close = lap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        if let Some(steps) = steps.as_mut() {
            steps.push([connect, write, echo, fin, close]);
        }
    }
    if let Some(mut steps) = steps {
        print_step_medians(std::any::type_name::<D>(), CONNECTION_STEPS, &mut steps);
    }
    Ok(ConnectionRate::from_latencies(
        lat,
        start.elapsed().as_secs_f64(),
    ))
}

/// Opens `count` connections to [`ServerKind::Hold`] servers, 64 at a time,
/// spread round-robin over `addrs` (several server ports lift the limit one
/// client address and one server port put on the number of connections: the
/// ephemeral port range); returns them (still open) and the seconds it took.
pub async fn open_idle<D: Dialer>(
    d: D,
    addrs: &[SocketAddr],
    count: usize,
) -> io::Result<(Vec<D::Stream>, f64)> {
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no server address",
        ));
    }
    let start = Instant::now();
    let mut open = Vec::with_capacity(count);
    let mut set = tokio::task::JoinSet::new();
    let mut started = 0;
    while open.len() < count {
        while started < count && set.len() < 64 {
            let d = d.clone();
            let addr = addrs[started % addrs.len()];
            set.spawn(async move { d.connect(addr, false).await });
            started += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(s))) => open.push(s),
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) => return Err(io::Error::other(e)),
            None => break,
        }
    }
    Ok((open, start.elapsed().as_secs_f64()))
}

/// `streams` concurrent [`bulk_send`]s for `dur`; total throughput.
pub async fn parallel_streams<D: Dialer>(
    d: D,
    addr: SocketAddr,
    streams: usize,
    dur: Duration,
) -> io::Result<Transfer> {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let d = d.clone();
        set.spawn(async move { bulk_send(d, addr, dur).await });
    }
    let mut bytes = 0;
    while let Some(r) = set.join_next().await {
        bytes += r.map_err(io::Error::other)??.bytes;
    }
    Ok(Transfer {
        bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Connections per second through the C shim (`libtcpd`'s `tcpd_socket`,
/// `tcpd_connect`, `tcpd_write`, `tcpd_read`, `tcpd_close`), the same
/// exchange as [`connection_rate`]: what a C program pays. Blocking; the
/// shim reaches the daemon at `$TCPD_SOCKET`.
///
/// With `TCPD_BENCH_STEPS` set in the environment, also prints the median
/// time of each step (connect with socket and option, write, echo, FIN,
/// close) to stderr: where one connection's time goes.
pub fn c_shim_connection_rate(addr: SocketAddr, dur: Duration) -> io::Result<ConnectionRate> {
    let start = Instant::now();
    let mut lat = Vec::with_capacity(16 * 1024);
    let mut steps = std::env::var_os("TCPD_BENCH_STEPS").map(|_| Vec::with_capacity(16 * 1024));
    while start.elapsed() < dur {
        let t = Instant::now();
        let step = c_shim_one_connection(addr)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        if let Some(steps) = steps.as_mut() {
            steps.push(step);
        }
    }
    if let Some(mut steps) = steps {
        print_step_medians("C shim", CONNECTION_STEPS, &mut steps);
    }
    Ok(ConnectionRate::from_latencies(
        lat,
        start.elapsed().as_secs_f64(),
    ))
}

/// The steps of one connection [`print_step_medians`] names.
const CONNECTION_STEPS: [&str; 5] = ["connect", "write", "echo", "FIN", "close"];

/// Prints (stderr) the median of each step of one operation (for a
/// connection [`CONNECTION_STEPS`]; the C shim's connect includes its
/// socket and option calls).
fn print_step_medians(what: &str, names: [&str; 5], steps: &mut [[f64; 5]]) {
    let mut median = |i: usize| {
        steps.sort_by(|a, b| a[i].total_cmp(&b[i]));
        steps.get(steps.len() / 2).map_or(0.0, |s| s[i])
    };
    let p: Vec<String> = (0..5)
        .map(|i| format!("{} {:.1}", names[i], median(i)))
        .collect();
    eprintln!("{what} steps p50 (us): {}", p.join(", "));
}

/// One connect, 1-byte exchange, wait for the server's FIN, close, through the C ABI.
/// Returns each step's time in µs (see [`c_shim_connection_rate`]).
fn c_shim_one_connection(addr: SocketAddr) -> io::Result<[f64; 5]> {
    let mut t = Instant::now();
    let mut lap = || {
        let us = t.elapsed().as_secs_f64() * 1e6;
        t = Instant::now();
        us
    };
    let s = c_shim_connect(addr, true)?;
    let connect = lap();
    let mut byte = [1u8; 1];
    s.write_all(&byte)?;
    let write = lap();
    s.read_exact(&mut byte)?;
    let echo = lap();
    // Wait for the server's FIN (read returns 0), as connection_rate does.
    s.read(&mut byte)?;
    let fin = lap();
    drop(s);
    Ok([connect, write, echo, fin, lap()])
}

/// A connected C-shim socket (Nagle off when `nodelay`, as the Rust rows),
/// through the C entry points (their safe Rust face).
fn c_shim_connect(addr: SocketAddr, nodelay: bool) -> io::Result<CSocket> {
    CSocket::connect(addr, nodelay)
}

/// [`bulk_send`] through the C shim (blocking; `$TCPD_SOCKET`).
pub fn c_shim_bulk_send(addr: SocketAddr, dur: Duration) -> io::Result<Transfer> {
    let s = c_shim_connect(addr, false)?;
    let buf = vec![0x5a_u8; CHUNK];
    let start = Instant::now();
    while start.elapsed() < dur {
        s.write_all(&buf)?;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count)?;
    Ok(Transfer {
        bytes: u64::from_be_bytes(count),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// [`bulk_recv`] through the C shim (blocking; `$TCPD_SOCKET`).
pub fn c_shim_bulk_recv(addr: SocketAddr) -> io::Result<Transfer> {
    let s = c_shim_connect(addr, false)?;
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    let mut start = None;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        start.get_or_insert_with(Instant::now);
        bytes += n as u64;
    }
    let seconds = start.map_or(f64::NAN, |s| s.elapsed().as_secs_f64());
    Ok(Transfer { bytes, seconds })
}

/// [`request_response`] through the C shim (blocking; `$TCPD_SOCKET`).
pub fn c_shim_request_response(addr: SocketAddr, dur: Duration) -> io::Result<PingPong> {
    let s = c_shim_connect(addr, true)?;
    let mut lat = Vec::with_capacity(100_000);
    let mut byte = [0u8; 1];
    let start = Instant::now();
    while start.elapsed() < dur {
        let t = Instant::now();
        s.write_all(&byte)?;
        s.read_exact(&mut byte)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(PingPong::from_latencies(lat, start.elapsed().as_secs_f64()))
}

/// Mean time of one getsockname(2) on a kernel socket, in microseconds,
/// over calls for `dur` (the kernel's figure for a trivial socket call).
pub fn kernel_getsockname_us(dur: Duration) -> io::Result<f64> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < dur {
        // std's local_addr is one getsockname(2) per call.
        for _ in 0..64 {
            std::hint::black_box(listener.local_addr()?);
        }
        calls += 64;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / calls as f64)
}

/// Mean time of one `GetSockName` unary RPC through `tcpd-client`'s
/// [`tcpd_client::Socket`], in microseconds, over calls for `dur`: the
/// cost of a client → daemon → client round trip without the network.
pub async fn tcpd_getsockname_us(dur: Duration) -> io::Result<f64> {
    let client = session().await?;
    let socket = tcpd_client::Socket::new(&client).await?;
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < dur {
        std::hint::black_box(socket.local_addr().await?);
        calls += 1;
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / calls as f64;
    socket.close().await?;
    Ok(us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_rate_counts_per_second_and_takes_the_median() {
        let r = ConnectionRate::from_latencies(vec![300.0, 100.0, 200.0], 2.0);
        assert_eq!(r.per_second, 1.5);
        assert_eq!(r.p50_us, 200.0);
    }

    #[test]
    fn blocking_client_returns_the_result_or_times_out() {
        let v = run_blocking_client(None, 0, Duration::from_secs(5), || Ok(7)).unwrap();
        assert_eq!(v, 7);
        let err = run_blocking_client(None, 0, Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_millis(500));
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
