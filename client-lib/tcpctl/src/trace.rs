//! `tcpctl trace`: one connection as the seed's ladder diagram, live from
//! the daemon's Admin Trace stream or replayed from a `--json` file; and
//! `tcpctl capture`: the daemon's pcapng stream into a file.
//!
//! Owns the request (selection → `TraceRequest`), the stop conditions
//! (stream end when tcpd's side is CLOSED, `--count`, `--timeout`) and the
//! choice between drawn rows and JSON lines; drawing is `tcpd_trace::Ladder`.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

use tcpd_proto::v2::admin_service_client::AdminServiceClient as AdminClient;
use tcpd_proto::v2::{CaptureRequest, SocketAddress as SockAddr, TraceRequest};
use tcpd_trace::{Event, Ladder, LadderOptions};
use tonic::transport::Channel;

use crate::cli::{CaptureArgs, TraceArgs};
use crate::error::CliError;

fn sock(addr: Option<SocketAddr>) -> SockAddr {
    let addr = addr.unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)));
    addr.into()
}

fn options(args: &TraceArgs, color: bool, width: usize) -> LadderOptions {
    LadderOptions {
        width: args.width.unwrap_or(width).max(40),
        absolute: args.absolute,
        times: !args.no_time,
        brief: args.brief,
        color,
        verbose: args.verbose,
    }
}

fn emit(out: &mut dyn Write, rows: &[String]) -> Result<(), CliError> {
    for row in rows {
        writeln!(out, "{row}").map_err(CliError::Output)?;
    }
    out.flush().map_err(CliError::Output)
}

/// Writes one event: a JSON line, or the ladder rows it completes.
fn show(
    event: &Event,
    ladder: &mut Ladder,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if json {
        writeln!(out, "{}", event.to_json()).map_err(CliError::Output)?;
        return out.flush().map_err(CliError::Output);
    }
    let rows = ladder.push(event);
    emit(out, &rows)
}

/// Draws the events of a `--json` file (one object per line; blank lines
/// and lines starting with `#` are skipped) or of a `tcpctl capture` pcapng
/// file (one connection: the first that LOCAL REMOTE / --port select).
pub fn replay(
    path: &Path,
    args: &TraceArgs,
    json: bool,
    color: bool,
    width: usize,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let failed = |operation: String, message: String, errno_name: &str| CliError::Rpc {
        operation,
        message,
        errno_name: errno_name.to_string(),
    };
    let name = path.display();
    let bytes = std::fs::read(path)
        .map_err(|e| failed(format!("replay {name}"), e.to_string(), "ENOENT"))?;
    let events = if bytes.starts_with(&tcpd_trace::capture::PCAPNG_MAGIC) {
        // A `tcpctl capture` file: the stack's view, states inferred.
        let (local, remote, port) = (args.local, args.remote, args.port);
        tcpd_trace::capture::events_from_pcapng(&bytes, |l, r| {
            // A mapped address names the IPv4 connection it stands for.
            let same = |a: SocketAddr, b: SocketAddr| {
                a.ip().to_canonical() == b.ip().to_canonical() && a.port() == b.port()
            };
            local.is_none_or(|a| same(a, l))
                && remote.is_none_or(|a| same(a, r))
                && port.is_none_or(|p| p == l.port() || p == r.port())
        })
        .map_err(|message| failed(format!("replay {name}"), message, "EINVAL"))?
    } else {
        let mut events = Vec::new();
        for (number, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let event: Event = serde_json::from_str(line).map_err(|e| {
                failed(
                    format!("replay {name}:{}", number + 1),
                    e.to_string(),
                    "EINVAL",
                )
            })?;
            events.push(event);
        }
        events
    };
    let mut ladder = Ladder::new(options(args, color, width));
    for event in &events {
        show(event, &mut ladder, json, out)?;
    }
    if !json {
        emit(out, &ladder.finish())?;
    }
    Ok(())
}

/// Follows a connection live.
pub async fn live(
    admin: &mut AdminClient<Channel>,
    path: &Path,
    args: &TraceArgs,
    json: bool,
    color: bool,
    width: usize,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let request = TraceRequest {
        local: Some(sock(args.local)),
        remote: Some(sock(args.remote)),
        port: args.port.map_or(0, u32::from),
        next: args.next,
    };
    let mut stream = admin
        .trace(request)
        .await
        .map_err(|s| CliError::from_status("trace", path, &s))?
        .into_inner();
    // Tells a human (and tests) that the trace is live.
    eprintln!("tcpctl: tracing (the connection is drawn once it shows up; ^C to stop)");
    let mut ladder = Ladder::new(options(args, color, width));
    let mut seen = 0u64;
    while args.count.is_none_or(|wanted| seen < wanted) {
        let next = match deadline {
            Some(at) => match tokio::time::timeout_at(at, stream.message()).await {
                Ok(next) => next,
                Err(_elapsed) => break,
            },
            None => stream.message().await,
        };
        let message = match next {
            Ok(Some(tcpd_proto::v2::TraceResponse {
                event: Some(message),
            })) => message,
            // A frame newer than this tcpctl: skip it.
            Ok(Some(_)) => continue,
            // The daemon ends the stream when the connection is gone.
            Ok(None) => break,
            Err(status) => return Err(CliError::from_status("trace", path, &status)),
        };
        let Some(event) = tcpd_trace::proto::from_proto(&message) else {
            continue;
        };
        seen += 1;
        show(&event, &mut ladder, json, out)?;
    }
    if !json {
        emit(out, &ladder.finish())?;
    }
    Ok(())
}

/// Streams the daemon's pcapng into `-w FILE` (or `out` for `-`) until ^C,
/// `--timeout`, or the end of the stream.
pub async fn capture(
    admin: &mut AdminClient<Channel>,
    path: &Path,
    args: &CaptureArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let to_stdout = args.write.as_os_str() == "-";
    if to_stdout && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(CliError::Rpc {
            operation: "capture".into(),
            message: "refusing to write pcapng to a terminal; use -w FILE or a pipe".into(),
            errno_name: "EINVAL".to_string(),
        });
    }
    let mut stream = admin
        .capture(CaptureRequest {
            filter: args.filter.clone(),
        })
        .await
        .map_err(|s| CliError::from_status("capture", path, &s))?
        .into_inner();
    let mut file = if to_stdout {
        None
    } else {
        Some(std::fs::File::create(&args.write).map_err(CliError::Output)?)
    };
    // Listening for ^C from before the "capturing" line on, for the whole
    // capture: a listener made anew each turn (as `ctrl_c()` would be)
    // misses a SIGINT that comes while a chunk is being written, and before
    // its first poll the signal still kills the process.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| CliError::Rpc {
        operation: "capture".into(),
        message: format!("cannot listen for ^C: {e}"),
        errno_name: e
            .raw_os_error()
            .map_or_else(|| "EIO".to_string(), tcpd_proto::errno_name),
    })?;
    eprintln!(
        "tcpctl: capturing to {} (^C to stop)",
        if to_stdout {
            "standard output".to_string()
        } else {
            args.write.display().to_string()
        }
    );
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut bytes = 0usize;
    loop {
        let stop = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            next = stream.message() => next,
            _ = interrupt.recv() => break,
            () = stop => break,
        };
        match next {
            Ok(Some(chunk)) => {
                bytes += chunk.pcapng.len();
                let sink: &mut dyn Write = match file.as_mut() {
                    Some(f) => f,
                    None => &mut *out,
                };
                sink.write_all(&chunk.pcapng).map_err(CliError::Output)?;
                sink.flush().map_err(CliError::Output)?;
            }
            Ok(None) => break,
            Err(status) => return Err(CliError::from_status("capture", path, &status)),
        }
    }
    eprintln!("tcpctl: {bytes} bytes of pcapng written");
    Ok(())
}
