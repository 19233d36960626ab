//! `tcpd-nc`: netcat over tcpd.
//!
//! `tcpd-nc HOST PORT` connects (to each address HOST resolves to, in
//! order, until one answers); `tcpd-nc -l [ADDR] PORT` listens and accepts
//! one connection (`-k`: one after another, forever). `-4`/`-6` keep to one
//! family, as netcat's: names resolve to that family only, and `-l` without
//! ADDR listens on `0.0.0.0` (`-4`, and the default) or `::` (`-6`: IPv6,
//! and IPv4 as IPv4-mapped addresses, Linux's default). Either way
//! stdin is copied to the connection and the connection to stdout; stdin's
//! EOF half-closes the connection (shutdown write, so the peer reads EOF) and
//! the program ends when the connection's read side ends.
//!
//! Exit status: 0 on success, 1 on any error, with a message naming the
//! errno on stderr (`tcpd-nc: connect: Connection refused (ECONNREFUSED)`),
//! 2 for usage errors.

#![forbid(unsafe_code)]

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tcpd_client::{Client, TcpStream, describe_error};
use tokio::io::{AsyncWriteExt, stdout};
use tokio::sync::mpsc;

/// netcat over the tcpd user-space TCP stack.
#[derive(Debug, Parser)]
#[command(
    name = "tcpd-nc",
    version,
    after_help = "Examples:\n  tcpd-nc 10.77.0.1 80 < request.txt\n  tcpd-nc -6 fd00:77::1 80 < request.txt\n  tcpd-nc -l 7000 > received.bin\n  tcpd-nc -l -6 7000\n  tcpd-nc -l -k 10.77.0.2 7000"
)]
struct Args {
    /// IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    ipv4: bool,

    /// IPv6 only (with -l and no ADDR: listen on `::`).
    #[arg(short = '6')]
    ipv6: bool,

    /// Listen for a connection instead of connecting.
    #[arg(short = 'l', long)]
    listen: bool,

    /// With -l: after a connection ends, accept the next one.
    #[arg(short = 'k', long = "keep-open", requires = "listen")]
    keep_open: bool,

    /// The daemon's Unix socket [default: $TCPD_SOCKET or /run/tcpd/tcpd.sock].
    #[arg(short = 's', long = "socket", value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Report connections on stderr.
    #[arg(short = 'v', long)]
    verbose: bool,

    #[arg(
        value_name = "ADDRESS",
        required = true,
        num_args = 1..=2,
        help = "HOST PORT to connect to, or with -l: [ADDR] PORT to listen on"
    )]
    address: Vec<String>,
}

/// A failure worth exiting for: what was being done, and why.
#[derive(Debug)]
struct Failure {
    doing: String,
    error: io::Error,
}

impl Failure {
    fn new(doing: impl Into<String>, error: io::Error) -> Failure {
        Failure {
            doing: doing.into(),
            error,
        }
    }
}

/// Largest stdin read forwarded as one chunk.
const STDIN_CHUNK: usize = 64 * 1024;

/// How long the final close may take before the program exits anyway.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tcpd-nc: runtime: {}", describe_error(&e));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    let code = match result {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!(
                "tcpd-nc: {}: {}",
                failure.doing,
                describe_error(&failure.error)
            );
            1
        }
    };
    // The stdin thread may sit in a blocking read forever: do not join it.
    std::process::exit(code)
}

/// Parses a port argument (1..=65535, or 0 for "any" when listening).
fn parse_port(text: &str) -> Result<u16, Failure> {
    text.parse().map_err(|_| {
        Failure::new(
            format!("invalid port {text:?}"),
            io::Error::from_raw_os_error(tcpd_proto::errno::EINVAL),
        )
    })
}

async fn run(args: Args) -> Result<(), Failure> {
    let path = args
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(tcpd_proto::socket_path_from_env()));
    let client = Client::connect(&path)
        .await
        .map_err(|e| Failure::new(format!("daemon {}", path.display()), e))?;
    let mut stdin = StdinSource::spawn();

    if args.listen {
        let (host, port) = match args.address.as_slice() {
            [port] if args.ipv6 => ("::", parse_port(port)?),
            [port] => ("0.0.0.0", parse_port(port)?),
            [host, port] => (host.as_str(), parse_port(port)?),
            _ => {
                return Err(Failure::new(
                    "usage: tcpd-nc -l [ADDR] PORT",
                    io::Error::from_raw_os_error(tcpd_proto::errno::EINVAL),
                ));
            }
        };
        let listener = client
            .tcp_bind((host, port))
            .await
            .map_err(|e| Failure::new("bind", e))?;
        if args.verbose
            && let Ok(local) = listener.local_addr()
        {
            eprintln!("tcpd-nc: listening on {local}");
        }
        loop {
            let (stream, peer) = listener
                .accept()
                .await
                .map_err(|e| Failure::new("accept", e))?;
            if args.verbose {
                eprintln!("tcpd-nc: connection from {peer}");
            }
            let outcome = pump(stream, &mut stdin).await;
            if !args.keep_open {
                return outcome;
            }
            if let Err(failure) = outcome {
                // One broken connection does not end a -k listener.
                eprintln!(
                    "tcpd-nc: {}: {}",
                    failure.doing,
                    describe_error(&failure.error)
                );
            }
        }
    } else {
        let [host, port] = args.address.as_slice() else {
            return Err(Failure::new(
                "usage: tcpd-nc HOST PORT",
                io::Error::from_raw_os_error(tcpd_proto::errno::EINVAL),
            ));
        };
        let port = parse_port(port)?;
        let stream = connect(&client, &args, host, port).await?;
        if args.verbose {
            eprintln!("tcpd-nc: connected to {host}:{port}");
        }
        pump(stream, &mut stdin).await
    }
}

/// Connects to the first address of `host` (of the family `-4`/`-6`
/// select) that answers, as tokio's `TcpStream::connect` tries each.
async fn connect(
    client: &Client,
    args: &Args,
    host: &str,
    port: u16,
) -> Result<TcpStream, Failure> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Failure::new(format!("resolve {host}"), e))?
        .filter(|a| !(args.ipv4 && a.is_ipv6() || args.ipv6 && a.is_ipv4()));
    let mut last = None;
    for addr in addrs {
        match client.tcp_connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => Failure::new("connect", e),
        None => Failure::new(
            format!("resolve {host}: no address of the family asked for"),
            io::Error::from_raw_os_error(tcpd_proto::errno::EADDRNOTAVAIL),
        ),
    })
}

/// Copies stdin → `stream` and `stream` → stdout until the stream's read
/// side ends; half-closes after stdin's EOF; then closes the socket.
async fn pump(mut stream: TcpStream, stdin: &mut StdinSource) -> Result<(), Failure> {
    let mut write_error = None;
    let read_result = {
        let (mut reader, mut writer) = stream.split();
        let upload = async {
            while let Some(chunk) = stdin.next().await {
                writer.write_all(&chunk).await?;
            }
            // stdin ended: FIN after everything sent.
            writer.shutdown().await
        };
        let download = async {
            let mut out = stdout();
            tokio::io::copy(&mut reader, &mut out).await?;
            out.flush().await
        };
        tokio::pin!(upload, download);
        let mut upload_done = false;
        loop {
            tokio::select! {
                result = &mut download => break result,
                result = &mut upload, if !upload_done => {
                    upload_done = true;
                    // Keep reading: the peer may still answer (or report
                    // why it stopped taking data).
                    if let Err(e) = result {
                        write_error = Some(e);
                    }
                }
            }
        }
    };
    let close = tokio::time::timeout(CLOSE_LIMIT, stream.close()).await;
    read_result.map_err(|e| Failure::new("read", e))?;
    if let Some(e) = write_error {
        return Err(Failure::new("write", e));
    }
    match close {
        Ok(result) => result.map_err(|e| Failure::new("close", e)),
        // The daemon did not answer in time; the session's end closes it.
        Err(_) => Ok(()),
    }
}

/// stdin, read on a dedicated thread (a blocking read cannot be cancelled,
/// so it must not hold up the runtime) and handed over in chunks.
struct StdinSource {
    chunks: mpsc::Receiver<Vec<u8>>,
    ended: bool,
}

impl StdinSource {
    fn spawn() -> StdinSource {
        let (tx, chunks) = mpsc::channel(4);
        let spawned = std::thread::Builder::new()
            .name("tcpd-nc-stdin".into())
            .spawn(move || {
                let mut stdin = io::stdin().lock();
                let mut buf = vec![0u8; STDIN_CHUNK];
                loop {
                    match stdin.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if tx.blocking_send(buf[..n].to_vec()).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            eprintln!("tcpd-nc: stdin: {}", describe_error(&e));
                            break;
                        }
                    }
                }
            });
        let ended = spawned.is_err();
        StdinSource { chunks, ended }
    }

    /// The next chunk, or `None` at (and after) EOF.
    async fn next(&mut self) -> Option<Vec<u8>> {
        if self.ended {
            return None;
        }
        let chunk = self.chunks.recv().await;
        self.ended = chunk.is_none();
        chunk
    }
}
