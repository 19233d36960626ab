//! The `tcpctl` binary against a scripted Admin service on a Unix socket:
//! output, filters, `kill` requests, and every documented exit code — no
//! daemon, no root, no network needed.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tcpd_proto::v2::admin_service_server::{
    AdminService as Admin, AdminServiceServer as AdminServer,
};
use tcpd_proto::v2::{
    AbortRequest, AbortResponse, ConnectionInfo, Counter, ListConnectionsRequest,
    ListConnectionsResponse, SocketAddress, StateChange, StatsRequest, StatsResponse,
    StatusRequest, StatusResponse, TcpState, TraceEvent, TraceRequest, TraceResponse, WatchRequest,
    WatchResponse,
};
use tcpd_proto::v2::{CaptureRequest, CaptureResponse};
use tcpd_proto::{errno, errno_status};
use tonic::{Request, Response, Status};

fn addr(a: [u8; 4], port: u32) -> Option<SocketAddress> {
    Some(SocketAddress {
        ip: a.to_vec(),
        port,
        ..SocketAddress::default()
    })
}

fn conn(
    state: TcpState,
    local: Option<SocketAddress>,
    remote: Option<SocketAddress>,
) -> ConnectionInfo {
    ConnectionInfo {
        handle: 1,
        state: state as i32,
        local,
        remote,
        owner_uid: 0,
        owner_pid: 1,
        congestion: "cubic".into(),
        mss: 1460,
        ..Default::default()
    }
}

/// What the scripted daemon holds and what it was asked.
#[derive(Default)]
struct Script {
    deny_abort: bool,
    aborts: Mutex<Vec<AbortRequest>>,
}

struct MockAdmin(Arc<Script>);

fn connections() -> Vec<ConnectionInfo> {
    let mut listener = conn(
        TcpState::Listen,
        addr([10, 0, 0, 1], 8080),
        addr([0, 0, 0, 0], 0),
    );
    listener.listen_backlog = 16;
    let mut busy = conn(
        TcpState::Established,
        addr([10, 0, 0, 1], 8080),
        addr([10, 0, 0, 2], 40000),
    );
    busy.send_queue = 4096;
    busy.bytes_sent = 1_000_000;
    vec![
        busy,
        listener,
        conn(
            TcpState::CloseWait,
            addr([10, 0, 0, 1], 8080),
            addr([10, 0, 0, 2], 40001),
        ),
        conn(
            TcpState::CloseWait,
            addr([10, 0, 0, 1], 9090),
            addr([10, 0, 0, 2], 40002),
        ),
        conn(
            TcpState::TimeWait,
            addr([10, 0, 0, 1], 49152),
            addr([10, 0, 0, 2], 80),
        ),
    ]
}

#[tonic::async_trait]
impl Admin for MockAdmin {
    async fn list_connections(
        &self,
        _: Request<ListConnectionsRequest>,
    ) -> Result<Response<ListConnectionsResponse>, Status> {
        Ok(Response::new(ListConnectionsResponse {
            connections: connections(),
        }))
    }

    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        Ok(Response::new(StatsResponse {
            counters: vec![
                Counter {
                    name: "segments_in".into(),
                    value: 10,
                },
                Counter {
                    name: "drop_bad_checksum".into(),
                    value: 2,
                },
                Counter {
                    name: "api_sessions".into(),
                    value: 3,
                },
                Counter {
                    name: "api_refused_total".into(),
                    value: 4,
                },
            ],
            states: vec![Counter {
                name: "ESTABLISHED".into(),
                value: 1,
            }],
        }))
    }

    type WatchStream = futures::stream::BoxStream<'static, Result<WatchResponse, Status>>;

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        use futures::StreamExt;
        let change = |old: TcpState, new: TcpState, port: u32| {
            Ok(WatchResponse {
                change: Some(StateChange {
                    timestamp_us: 1_767_323_045_678_901,
                    local: addr([10, 0, 0, 1], port),
                    remote: addr([10, 0, 0, 2], 80),
                    old_state: old as i32,
                    new_state: new as i32,
                    handle: 5,
                }),
            })
        };
        let events = vec![
            change(TcpState::Closed, TcpState::SynSent, 50000),
            change(TcpState::SynSent, TcpState::Established, 50000),
            change(TcpState::Established, TcpState::CloseWait, 50001),
        ];
        // Three events, then the stream stays open like a quiet daemon.
        let stream = futures::stream::iter(events).chain(futures::stream::pending());
        Ok(Response::new(stream.boxed()))
    }

    type CaptureStream = futures::stream::BoxStream<'static, Result<CaptureResponse, Status>>;

    /// Capture is root-only in the daemon; the mock refuses like it does
    /// for a non-root caller.
    async fn capture(
        &self,
        _: Request<CaptureRequest>,
    ) -> Result<Response<Self::CaptureStream>, Status> {
        Err(errno_status(errno::EPERM, "capturing needs root"))
    }

    type TraceStream = futures::stream::BoxStream<'static, Result<TraceResponse, Status>>;

    /// The seed's handshake (ISNs 100 and 300) as the daemon streams it, then
    /// the end of the stream.
    async fn trace(&self, _: Request<TraceRequest>) -> Result<Response<Self::TraceStream>, Status> {
        use futures::StreamExt;
        use tcpd_proto::v2::trace_event::Event;
        use tcpd_proto::v2::{TraceDirection, TraceSegment, TraceStateChange};
        let event = |t: u64, event: Event| {
            Ok(TraceResponse {
                event: Some(TraceEvent {
                    time_us: t,
                    local: addr([10, 0, 0, 1], 40000),
                    remote: addr([10, 0, 0, 2], 80),
                    event: Some(event),
                }),
            })
        };
        let segment = |dir: TraceDirection, seq: u32, ack: u32, flags: u32| {
            Event::Segment(TraceSegment {
                direction: dir as i32,
                seq,
                ack,
                flags,
                window: 65535,
                window_scale: -1,
                ..TraceSegment::default()
            })
        };
        let state = |old: TcpState, new: TcpState| {
            Event::State(TraceStateChange {
                old_state: old as i32,
                new_state: new as i32,
            })
        };
        let events = vec![
            event(1_000, state(TcpState::Closed, TcpState::SynSent)),
            event(1_000, segment(TraceDirection::Out, 100, 0, 0x02)),
            event(1_250, segment(TraceDirection::In, 300, 101, 0x12)),
            event(1_250, state(TcpState::SynSent, TcpState::Established)),
            event(1_260, segment(TraceDirection::Out, 101, 301, 0x10)),
        ];
        Ok(Response::new(futures::stream::iter(events).boxed()))
    }

    async fn abort(
        &self,
        request: Request<AbortRequest>,
    ) -> Result<Response<AbortResponse>, Status> {
        if self.0.deny_abort {
            return Err(errno_status(errno::EPERM, "abort is for root only"));
        }
        let request = request.into_inner();
        let known = connections()
            .iter()
            .any(|c| c.local == request.local && c.remote == request.remote);
        self.0.aborts.lock().expect("abort log lock").push(request);
        Ok(Response::new(AbortResponse {
            aborted: u32::from(known),
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse {
            version: "9.9.9".into(),
            uptime_ms: 61_000,
            tun_name: "tcpd-mock".into(),
            address: addr([10, 0, 0, 1], 0),
            prefix_len: 24,
            host_address: addr([10, 0, 0, 2], 0),
            mtu: 1500,
            socket_path: "/mock.sock".into(),
            pid: 77,
            impairment: "loss 1%".into(),
            address6: Some(SocketAddress {
                ip: "fd00:77::2"
                    .parse::<std::net::Ipv6Addr>()
                    .expect("ip")
                    .octets()
                    .to_vec(),
                ..SocketAddress::default()
            }),
            prefix_len6: 64,
            host_address6: None,
        }))
    }
}

/// A scripted daemon serving on its own socket until the test process ends.
struct MockDaemon {
    socket: PathBuf,
    script: Arc<Script>,
}

impl MockDaemon {
    fn start(deny_abort: bool) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let socket = std::env::temp_dir().join(format!(
            "tcpctl-mock-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&socket);
        let script = Arc::new(Script {
            deny_abort,
            ..Default::default()
        });
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind mock socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let served = Arc::clone(&script);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("mock runtime");
            runtime.block_on(async move {
                let listener =
                    tokio::net::UnixListener::from_std(listener).expect("tokio listener");
                tonic::transport::Server::builder()
                    .add_service(AdminServer::new(MockAdmin(served)))
                    .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                    .await
                    .expect("mock server");
            });
        });
        MockDaemon { socket, script }
    }

    fn tcpctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tcpctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("TCPD_SOCKET")
            .output()
            .expect("run tcpctl")
    }

    fn aborts(&self) -> Vec<AbortRequest> {
        self.script.aborts.lock().expect("abort log lock").clone()
    }
}

impl Drop for MockDaemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("utf-8 stderr")
}

#[test]
fn ls_json_lists_every_socket_listeners_first() {
    let daemon = MockDaemon::start(false);
    let output = daemon.tcpctl(&["ls", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json array");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0]["state"], "LISTEN");
    assert_eq!(rows[0]["listen_backlog"], 16);
    let busy = rows
        .iter()
        .find(|r| r["state"] == "ESTABLISHED")
        .expect("established row");
    assert_eq!(busy["local"], "10.0.0.1:8080");
    assert_eq!(busy["remote"], "10.0.0.2:40000");
    assert_eq!(busy["send_queue"], 4096);
    assert_eq!(busy["owner_user"], "root");
}

#[test]
fn ls_filters_by_state_group_port_and_listening() {
    let daemon = MockDaemon::start(false);
    let states = |args: &[&str]| -> Vec<String> {
        let output = daemon.tcpctl(args);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let rows: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
        rows.as_array()
            .expect("array")
            .iter()
            .map(|r| format!("{} {}", r["state"].as_str().unwrap_or("?"), r["remote"]))
            .collect()
    };
    assert_eq!(states(&["ls", "-l", "--json"]), ["LISTEN \"0.0.0.0:0\""]);
    assert_eq!(
        states(&["ls", "--json", "--state", "close_wait", "--port", "8080"]),
        ["CLOSE-WAIT \"10.0.0.2:40001\""]
    );
    assert_eq!(
        states(&["ls", "--json", "--state", "synchronized"]).len(),
        4
    );
    assert_eq!(states(&["ls", "--json", "--port", "80"]).len(), 1);
    assert_eq!(states(&["ls", "--json", "--uid", "1000"]).len(), 0);
}

#[test]
fn ls_human_table_has_aligned_columns() {
    let daemon = MockDaemon::start(false);
    let output = daemon.tcpctl(&["ls", "--color", "always", "--state", "established"]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("State"));
    assert!(
        lines[1].starts_with("\u{1b}[32mESTABLISHED\u{1b}[0m"),
        "{text}"
    );
    assert!(lines[1].contains("10.0.0.1:8080"));
    // Piped output is not coloured in auto mode.
    let plain = stdout(&daemon.tcpctl(&["ls"]));
    assert!(!plain.contains('\u{1b}'));
}

#[test]
fn stats_and_status() {
    let daemon = MockDaemon::start(false);
    let output = daemon.tcpctl(&["stats", "--json"]);
    assert_eq!(output.status.code(), Some(0));
    let stats: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
    assert_eq!(stats["counters"]["segments_in"], 10);
    assert_eq!(stats["drops"]["bad_checksum"], 2);
    assert_eq!(stats["states"]["ESTABLISHED"], 1);
    let text = stdout(&daemon.tcpctl(&["stats"]));
    assert!(text.contains("Drops by reason\n  bad checksum"), "{text}");

    let output = daemon.tcpctl(&["status"]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    assert!(text.contains("version        9.9.9"), "{text}");
    assert!(text.contains("uptime         1m 1s"), "{text}");
    assert!(text.contains("impairment     loss 1%"), "{text}");
    assert!(text.contains("address6       fd00:77::2/64"), "{text}");
    assert!(text.contains("host address6  none"), "{text}");
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&daemon.tcpctl(&["status", "--json"]))).expect("json");
    assert_eq!(status["tun_name"], "tcpd-mock");
    assert_eq!(status["pid"], 77);
    assert_eq!(status["address6"], "fd00:77::2");
    assert_eq!(status["prefix_len6"], 64);
}

#[test]
fn watch_counts_filters_and_times_out() {
    let daemon = MockDaemon::start(false);
    let output = daemon.tcpctl(&["watch", "--json", "--count", "2"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let lines: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one object per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[1]["old"].as_str(), lines[1]["new"].as_str()),
        (Some("SYN-SENT"), Some("ESTABLISHED"))
    );
    assert_eq!(lines[0]["ts"], "2026-01-02T03:04:05.678Z");

    let output = daemon.tcpctl(&["watch", "--count", "1", "--port", "50001"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stdout(&output).ends_with("ESTABLISHED -> CLOSE-WAIT\n"),
        "{}",
        stdout(&output)
    );

    // Only three events ever come: --count 5 must time out with exit 1.
    // The timeout runs from before the subscription, so it leaves a loaded
    // machine time to start tcpctl and deliver the three (0.5 s did not).
    let output = daemon.tcpctl(&["watch", "--count", "5", "--timeout", "3"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output).lines().count(), 3);
    assert!(stderr(&output).contains("timed out after 3 of 5 events"));
    // Without --count, a timeout is a normal end.
    let output = daemon.tcpctl(&["watch", "--timeout", "0.3"]);
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn trace_draws_the_seeds_handshake_and_json_lines() {
    let daemon = MockDaemon::start(false);
    let output = daemon.tcpctl(&["trace", "--absolute", "--no-time", "--brief"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let rows: Vec<String> = text.lines().map(squash).collect();
    for want in [
        "1. CLOSED LISTEN",
        "2. SYN-SENT --> <SEQ=100><CTL=SYN> --> SYN-RECEIVED",
        "3. ESTABLISHED <-- <SEQ=300><ACK=101><CTL=SYN,ACK> <-- SYN-RECEIVED",
        "4. ESTABLISHED --> <SEQ=101><ACK=301><CTL=ACK> --> ESTABLISHED",
    ] {
        assert!(
            rows.iter().any(|r| r == want),
            "missing {want:?} in\n{text}"
        );
    }
    let output = daemon.tcpctl(&["trace", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[1]["type"], "segment");
    assert_eq!(lines[1]["flags"], "SYN");
    assert_eq!(lines[1]["seq"], 100);
    assert_eq!(lines[2]["ack"], 101);
    assert_eq!(lines[3]["new"], "ESTABLISHED");
    // The JSON lines replay into the same ladder (no daemon needed).
    let dir = std::env::temp_dir().join(format!("tcpctl-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("trace.jsonl");
    std::fs::write(&file, stdout(&output)).expect("write trace");
    let replay = Command::new(env!("CARGO_BIN_EXE_tcpctl"))
        .args([
            "--socket",
            "/nonexistent",
            "trace",
            "--absolute",
            "--no-time",
            "--brief",
            "--replay",
        ])
        .arg(&file)
        .output()
        .expect("replay");
    assert!(replay.status.success(), "{}", stderr(&replay));
    assert_eq!(stdout(&replay), text);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn capture_refused_by_the_daemon_exits_4() {
    let daemon = MockDaemon::start(false);
    let dir = std::env::temp_dir().join(format!("tcpctl-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("c.pcapng");
    let output = daemon.tcpctl(&["capture", "-w", file.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stats_prometheus_parses_with_types_and_labels() {
    let daemon = MockDaemon::start(false);
    let output = daemon.tcpctl(&["stats", "--prometheus"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition text");
    let value = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(value("tcpd_segments_in_total", None), Some(10.0), "{text}");
    assert_eq!(
        value("tcpd_drops_total", Some(("reason", "bad_checksum"))),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value("tcpd_connections", Some(("state", "ESTABLISHED"))),
        Some(1.0),
        "{text}"
    );
    assert!(matches!(
        scrape
            .samples
            .iter()
            .find(|s| s.metric == "tcpd_connections")
            .map(|s| &s.value),
        Some(prometheus_parse::Value::Gauge(_))
    ));
    assert!(matches!(
        scrape
            .samples
            .iter()
            .find(|s| s.metric == "tcpd_segments_in_total")
            .map(|s| &s.value),
        Some(prometheus_parse::Value::Counter(_))
    ));
    assert!(
        scrape.docs.contains_key("tcpd_segments_in_total"),
        "HELP lines"
    );
    // A level is a gauge without `_total`; a name that is a total already
    // gets no second suffix.
    assert_eq!(value("tcpd_api_sessions", None), Some(3.0), "{text}");
    assert!(matches!(
        scrape
            .samples
            .iter()
            .find(|s| s.metric == "tcpd_api_sessions")
            .map(|s| &s.value),
        Some(prometheus_parse::Value::Gauge(_))
    ));
    assert_eq!(value("tcpd_api_refused_total", None), Some(4.0), "{text}");
    assert!(!text.contains("_total_total"), "{text}");
}

#[test]
fn kill_by_tuple_and_by_filter() {
    let daemon = MockDaemon::start(false);
    let output = daemon.tcpctl(&["kill", "10.0.0.1:8080", "10.0.0.2:40000"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "reset 10.0.0.1:8080 10.0.0.2:40000\n");

    // Unknown 4-tuple: the daemon aborts nothing, tcpctl says so with exit 1.
    let output = daemon.tcpctl(&["kill", "10.0.0.1:1", "10.0.0.2:2"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("no connection 10.0.0.1:1 10.0.0.2:2"));

    // Filter: port 8080 in any connected state — the listener is skipped.
    let before = daemon.aborts().len();
    let output = daemon.tcpctl(&["kill", "--json", "--state", "connected", "--port", "8080"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
    assert_eq!(report["aborted"], 2);
    let sent: Vec<(u32, u32)> = daemon.aborts()[before..]
        .iter()
        .map(|a| {
            (
                a.local.as_ref().map_or(0, |l| l.port),
                a.remote.as_ref().map_or(0, |r| r.port),
            )
        })
        .collect();
    assert_eq!(sent, [(8080, 40000), (8080, 40001)]);

    // A filter that matches nothing sends nothing.
    let before = daemon.aborts().len();
    let output = daemon.tcpctl(&["kill", "--port", "1"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(daemon.aborts().len(), before);
}

#[test]
fn kill_refused_by_the_daemon_exits_4() {
    let daemon = MockDaemon::start(true);
    let output = daemon.tcpctl(&["kill", "10.0.0.1:8080", "10.0.0.2:40000"]);
    assert_eq!(output.status.code(), Some(4));
    let message = stderr(&output);
    assert!(message.contains("permission denied (EPERM)"), "{message}");
}

#[test]
fn unreachable_daemon_exits_3_with_a_hint() {
    let missing = std::env::temp_dir().join(format!("tcpctl-nowhere-{}.sock", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_tcpctl"))
        .args(["ls"])
        .env("TCPD_SOCKET", &missing)
        .output()
        .expect("run tcpctl");
    assert_eq!(output.status.code(), Some(3));
    let message = stderr(&output);
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(message.contains("is tcpd running? set TCPD_SOCKET or pass --socket"));
}

#[test]
fn usage_help_and_completions() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tcpctl"))
            .args(args)
            .output()
            .expect("run tcpctl")
    };
    assert_eq!(run(&["ls", "--state", "bogus"]).status.code(), Some(2));
    assert_eq!(run(&["kill"]).status.code(), Some(2));
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let help = stdout(&help);
    assert!(
        help.contains("Exit codes:") && help.contains("Examples:"),
        "{help}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let output = run(&["completions", shell]);
        assert_eq!(output.status.code(), Some(0));
        let script = stdout(&output);
        assert!(
            script.contains("tcpctl") && script.contains("watch"),
            "{shell}"
        );
    }
}

/// `--color auto` colours on a terminal only, and never with NO_COLOR set.
/// Runs tcpctl under `script(1)` to give it a pseudo-terminal; skips when
/// util-linux's `script` is not installed.
#[test]
fn auto_colour_needs_a_terminal() {
    if !std::path::Path::new("/usr/bin/script").exists() {
        eprintln!("SKIPPED auto_colour_needs_a_terminal: /usr/bin/script is missing");
        return;
    }
    let daemon = MockDaemon::start(false);
    let on_tty = |no_color: bool| -> String {
        let command_line = format!(
            "{} --socket {} ls --state established",
            env!("CARGO_BIN_EXE_tcpctl"),
            daemon.socket.display()
        );
        let mut script = Command::new("/usr/bin/script");
        script
            .args(["-qec", &command_line, "/dev/null"])
            .env_remove("NO_COLOR")
            .env("TERM", "xterm");
        if no_color {
            script.env("NO_COLOR", "1");
        }
        let output = script.output().expect("run script");
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        stdout(&output)
    };
    let coloured = on_tty(false);
    assert!(
        coloured.contains("\u{1b}[32mESTABLISHED\u{1b}[0m"),
        "{coloured:?}"
    );
    let plain = on_tty(true);
    assert!(
        plain.contains("ESTABLISHED") && !plain.contains("\u{1b}[32m"),
        "{plain:?}"
    );
}
