//! Golden tests: the exact human layout of `ls`, `ls -i`, `stats`, `status`
//! and `watch`, and the exact `--json` field names, from fixed daemon replies.
//!
//! Expected output lives in `tests/golden/*.txt`; run with `UPDATE_GOLDEN=1`
//! to rewrite those files after an intended layout change (then review the
//! diff).

use std::collections::HashMap;
use std::path::PathBuf;

use tcpctl::json::{ConnectionJson, StatsJson, StatusJson, WatchEventJson};
use tcpctl::owner::FixedOwners;
use tcpctl::render::{WatchRenderer, render_stats, render_status};
use tcpctl::{Options, render_table};
use tcpd_proto::v2::{
    ConnectionInfo, Counter, SocketAddress, StateChange, StatsResponse, StatusResponse, TcpState,
};

fn addr(a: [u8; 4], port: u32) -> Option<SocketAddress> {
    Some(SocketAddress {
        ip: a.to_vec(),
        port,
        ..SocketAddress::default()
    })
}

fn owners() -> FixedOwners {
    FixedOwners {
        users: HashMap::from([
            (0, "root".to_string()),
            (1000, "alice".to_string()),
            (1001, "bob".to_string()),
        ]),
        processes: HashMap::from([(4242, "httpd".to_string()), (5151, "curl".to_string())]),
    }
}

/// Sockets covering every column shape: a listener, a busy connection, a
/// handshake, an ownerless TIME-WAIT, an unknown user and process, and wide
/// addresses with large counters.
fn connections() -> Vec<ConnectionInfo> {
    let established = ConnectionInfo {
        handle: 7,
        state: TcpState::Established as i32,
        state_name: "ESTABLISHED".into(),
        local: addr([10, 0, 0, 1], 8080),
        remote: addr([10, 0, 0, 2], 40312),
        owner_uid: 1000,
        owner_gid: 1000,
        owner_pid: 4242,
        recv_queue: 0,
        send_queue: 14480,
        srtt_us: 1234,
        rttvar_us: 617,
        rto_us: 201_000,
        cwnd: 14600,
        ssthresh: u64::from(u32::MAX),
        retransmits: 0,
        bytes_sent: 1_048_576,
        bytes_received: 512,
        congestion: "cubic".into(),
        mss: 1460,
        snd_wnd: 64_240,
        rcv_wnd: 262_144,
        ..Default::default()
    };
    vec![
        ConnectionInfo {
            handle: 3,
            state: TcpState::Listen as i32,
            state_name: "LISTEN".into(),
            local: addr([0, 0, 0, 0], 8080),
            remote: addr([0, 0, 0, 0], 0),
            owner_uid: 1000,
            owner_gid: 1000,
            owner_pid: 4242,
            congestion: "cubic".into(),
            listen_backlog: 128,
            accept_queue: 2,
            ..Default::default()
        },
        established.clone(),
        ConnectionInfo {
            handle: 9,
            state: TcpState::SynSent as i32,
            state_name: "SYN-SENT".into(),
            local: addr([10, 0, 0, 1], 49152),
            remote: addr([10, 0, 0, 2], 22),
            owner_uid: 1001,
            owner_pid: 5151,
            rto_us: 1_000_000,
            cwnd: 14600,
            ssthresh: u64::from(u32::MAX),
            congestion: "newreno".into(),
            mss: 536,
            ..Default::default()
        },
        ConnectionInfo {
            handle: 0,
            state: TcpState::TimeWait as i32,
            state_name: "TIME-WAIT".into(),
            local: addr([10, 0, 0, 1], 49153),
            remote: addr([10, 0, 0, 2], 80),
            bytes_sent: 77,
            bytes_received: 1500,
            congestion: "cubic".into(),
            mss: 1460,
            ..Default::default()
        },
        ConnectionInfo {
            handle: 12,
            state: TcpState::CloseWait as i32,
            state_name: "CLOSE-WAIT".into(),
            local: addr([10, 0, 0, 1], 65535),
            remote: addr([10, 0, 0, 3], 54321),
            owner_uid: 31337,
            owner_pid: 999_999,
            recv_queue: 1_234_567,
            send_queue: 0,
            srtt_us: 250_000,
            rttvar_us: 125_500,
            rto_us: 750_000,
            cwnd: 2_920_000,
            ssthresh: 1_460_000,
            retransmits: 42,
            bytes_sent: 98_765_432_100,
            bytes_received: 12_345_678_901,
            congestion: "cubic".into(),
            mss: 1448,
            ..Default::default()
        },
    ]
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Compares `actual` with the golden file, or rewrites it under UPDATE_GOLDEN.
fn check_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0") {
        std::fs::create_dir_all(path.parent().expect("golden dir has a parent"))
            .expect("create golden dir");
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "{name} differs from {} (UPDATE_GOLDEN=1 regenerates)\n--- actual ---\n{actual}",
        path.display()
    );
}

fn options(owners: &FixedOwners, info: bool) -> Options<'_> {
    Options {
        info,
        color: false,
        width: 80,
        owners,
    }
}

fn assert_fits(text: &str, width: usize) {
    for line in text.lines() {
        assert!(
            line.chars().count() <= width,
            "line wider than {width}: {line:?}"
        );
        assert_eq!(line, line.trim_end(), "trailing spaces: {line:?}");
    }
}

#[test]
fn ls_plain() {
    let owners = owners();
    let table = render_table(&connections(), &options(&owners, false));
    assert_fits(&table, 80);
    check_golden("ls.txt", &table);
}

#[test]
fn ls_info() {
    let owners = owners();
    let table = render_table(&connections(), &options(&owners, true));
    assert_fits(&table, 80);
    check_golden("ls_info.txt", &table);
}

/// The widest addresses still line up and are never cut, even when the row
/// cannot fit 80 columns any more.
#[test]
fn ls_wide_addresses_are_not_truncated() {
    let owners = owners();
    let mut conns = connections();
    conns[4].local = addr([192, 168, 100, 200], 65535);
    conns[4].remote = addr([172, 16, 254, 253], 54321);
    let table = render_table(&conns, &options(&owners, true));
    assert!(table.contains("192.168.100.200:65535 172.16.254.253:54321"));
    check_golden("ls_wide.txt", &table);
}

#[test]
fn ls_empty_is_just_the_header() {
    let owners = owners();
    let table = render_table(&[], &options(&owners, true));
    assert_eq!(
        table,
        "State Recv-Q Send-Q Local Address Peer Address Owner\n"
    );
}

#[test]
fn ls_colour_keeps_alignment() {
    let owners = owners();
    let plain = render_table(&connections(), &options(&owners, false));
    let coloured = render_table(
        &connections(),
        &Options {
            color: true,
            ..options(&owners, false)
        },
    );
    assert!(coloured.contains("\u{1b}[32mESTABLISHED\u{1b}[0m"));
    assert!(coloured.contains("\u{1b}[36mLISTEN\u{1b}[0m"));
    assert!(coloured.contains("\u{1b}[2mTIME-WAIT\u{1b}[0m"));
    // Removing the escapes gives back exactly the plain table.
    let stripped = coloured
        .replace("\u{1b}[32m", "")
        .replace("\u{1b}[36m", "")
        .replace("\u{1b}[33m", "")
        .replace("\u{1b}[35m", "")
        .replace("\u{1b}[2m", "")
        .replace("\u{1b}[0m", "");
    assert_eq!(stripped, plain);
}

fn stats() -> StatsResponse {
    let counter = |name: &str, value: u64| Counter {
        name: name.into(),
        value,
    };
    StatsResponse {
        counters: vec![
            counter("segments_in", 123_456),
            counter("segments_out", 120_001),
            counter("retransmits", 17),
            counter("rst_sent", 3),
            counter("rst_received", 1),
            counter("checksum_errors", 2),
            counter("active_opens", 40),
            counter("passive_opens", 12),
            counter("drop_no_listener", 5),
            counter("drop_out_of_window", 9),
            counter("syn_cookies_sent", 0),
            counter("syncookies_sent", 98_035),
            counter("listen_overflows", 2),
            counter("orphan_resets", 32),
            counter("api_refused_per_uid", 5),
        ],
        states: vec![
            counter("LISTEN", 1),
            counter("ESTABLISHED", 2),
            counter("TIME-WAIT", 4),
        ],
    }
}

#[test]
fn stats_text() {
    let text = render_stats(&stats(), false);
    assert_fits(&text, 80);
    check_golden("stats.txt", &text);
}

#[test]
fn stats_json() {
    let stats = StatsJson::from(&stats());
    let value = serde_json::to_value(&stats).expect("serialize");
    check_golden(
        "stats.json",
        &format!(
            "{}\n",
            serde_json::to_string_pretty(&stats).expect("pretty")
        ),
    );
    assert_eq!(value["counters"]["segments_in"], 123_456);
    assert_eq!(value["drops"]["no_listener"], 5);
    assert_eq!(value["states"]["TIME-WAIT"], 4);
    assert_eq!(value["states"]["SYN-RECEIVED"], 0);
    assert_eq!(value["states"].as_object().expect("map").len(), 11);
}

fn changes() -> Vec<StateChange> {
    let base = 1_767_323_045_678_901u64; // 2026-01-02T03:04:05.678901Z
    let change =
        |offset_us: u64, local, remote, old: TcpState, new: TcpState, handle| StateChange {
            timestamp_us: base + offset_us,
            local,
            remote,
            old_state: old as i32,
            new_state: new as i32,
            handle,
        };
    vec![
        change(
            0,
            addr([10, 0, 0, 1], 49152),
            addr([10, 0, 0, 2], 80),
            TcpState::Closed,
            TcpState::SynSent,
            9,
        ),
        change(
            1_250,
            addr([10, 0, 0, 1], 49152),
            addr([10, 0, 0, 2], 80),
            TcpState::SynSent,
            TcpState::Established,
            9,
        ),
        change(
            2_000_999,
            addr([10, 0, 0, 1], 8080),
            addr([192, 168, 100, 200], 54321),
            TcpState::Established,
            TcpState::CloseWait,
            12,
        ),
        change(
            2_001_000,
            addr([10, 0, 0, 1], 49152),
            addr([10, 0, 0, 2], 80),
            TcpState::FinWait2,
            TcpState::TimeWait,
            0,
        ),
    ]
}

#[test]
fn watch_lines() {
    let mut renderer = WatchRenderer::new();
    let text: String = changes()
        .iter()
        .map(|c| format!("{}\n", renderer.line(c, false)))
        .collect();
    // RFC 3339 timestamps take 24 columns: lines with long addresses and
    // state names may pass 80 columns, so only the layout is pinned here.
    check_golden("watch.txt", &text);
}

#[test]
fn watch_json_lines() {
    let text: String = changes()
        .iter()
        .map(|c| {
            format!(
                "{}\n",
                serde_json::to_string(&WatchEventJson::from(c)).expect("serialize")
            )
        })
        .collect();
    check_golden("watch.jsonl", &text);
    let first: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("a line")).expect("json");
    let line = text.lines().next().expect("a line");
    let watch_fields = ["ts", "ts_us", "local", "remote", "old", "new", "handle"];
    let positions: Vec<usize> = watch_fields
        .iter()
        .map(|key| line.find(&format!("\"{key}\":")).expect("key present"))
        .collect();
    assert!(positions.is_sorted(), "field order changed: {line}");
    assert_eq!(first.as_object().expect("object").len(), watch_fields.len());
    assert_eq!(first["ts"], "2026-01-02T03:04:05.678Z");
    assert_eq!(first["old"], "CLOSED");
    assert_eq!(first["new"], "SYN-SENT");
}

fn status() -> StatusResponse {
    StatusResponse {
        version: "0.1.0".into(),
        uptime_ms: 3_723_456,
        tun_name: "tcpd0".into(),
        address: addr([10, 0, 0, 1], 0),
        prefix_len: 24,
        host_address: addr([10, 0, 0, 2], 0),
        mtu: 1500,
        socket_path: "/run/tcpd/tcpd.sock".into(),
        pid: 4321,
        impairment: String::new(),
        ..Default::default()
    }
}

#[test]
fn status_text_and_json() {
    check_golden("status.txt", &render_status(&status()));
    let value = serde_json::to_value(StatusJson::from(&status())).expect("serialize");
    assert_eq!(value["address"], "10.0.0.1");
    assert_eq!(value["host_address"], "10.0.0.2");
    assert_eq!(value["impairment"], serde_json::Value::Null);
    assert_eq!(value["uptime_ms"], 3_723_456);
}

/// The documented `ls --json` field names, in order. Changing this list is a
/// breaking change of the published schema (README.md).
const LS_JSON_FIELDS: [&str; 33] = [
    "state",
    "local",
    "remote",
    "handle",
    "owner_uid",
    "owner_gid",
    "owner_pid",
    "owner_user",
    "owner_process",
    "recv_queue",
    "send_queue",
    "srtt_us",
    "rttvar_us",
    "rto_us",
    "cwnd",
    "ssthresh",
    "retransmits",
    "bytes_sent",
    "bytes_received",
    "congestion",
    "mss",
    "listen_backlog",
    "accept_queue",
    "snd_wnd",
    "rcv_wnd",
    "rto_timeouts",
    "fast_recoveries",
    "in_recovery",
    "tlp_probes",
    "dsacks_received",
    "reorder_window_us",
    "recv_buffer",
    "send_buffer",
];

#[test]
fn ls_json_field_names_and_values() {
    let owners = owners();
    let rows: Vec<ConnectionJson> = connections()
        .iter()
        .map(|c| ConnectionJson::new(c, &owners))
        .collect();
    let value = serde_json::to_value(&rows).expect("serialize");
    let array = value.as_array().expect("ls --json is an array");
    assert_eq!(array.len(), 5);
    for (row, info) in array.iter().zip(connections()) {
        let mut keys: Vec<&str> = row
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut documented = LS_JSON_FIELDS.to_vec();
        documented.sort_unstable();
        assert_eq!(keys, documented);
        // serde_json's Value sorts keys; the text keeps declaration order.
        let text = serde_json::to_string(&ConnectionJson::new(&info, &owners)).expect("json");
        let positions: Vec<usize> = LS_JSON_FIELDS
            .iter()
            .map(|key| text.find(&format!("\"{key}\":")).expect("key present"))
            .collect();
        assert!(positions.is_sorted(), "field order changed: {text}");
    }
    let listener = &array[0];
    assert_eq!(listener["state"], "LISTEN");
    assert_eq!(listener["local"], "0.0.0.0:8080");
    assert_eq!(listener["remote"], "0.0.0.0:0");
    assert_eq!(listener["owner_user"], "alice");
    assert_eq!(listener["owner_process"], "httpd");
    assert_eq!(listener["listen_backlog"], 128);
    let established = &array[1];
    assert_eq!(established["state"], "ESTABLISHED");
    assert_eq!(established["remote"], "10.0.0.2:40312");
    assert_eq!(established["send_queue"], 14480);
    assert_eq!(established["srtt_us"], 1234);
    let time_wait = &array[3];
    assert_eq!(time_wait["state"], "TIME-WAIT");
    assert_eq!(time_wait["handle"], 0);
    assert_eq!(time_wait["owner_user"], serde_json::Value::Null);
    let unknown_owner = &array[4];
    assert_eq!(unknown_owner["state"], "CLOSE-WAIT");
    assert_eq!(unknown_owner["owner_user"], serde_json::Value::Null);
    assert_eq!(unknown_owner["owner_uid"], 31337);
    assert_eq!(unknown_owner["bytes_sent"], 98_765_432_100u64);
    check_golden(
        "ls.json",
        &format!("{}\n", serde_json::to_string_pretty(&rows).expect("pretty")),
    );
}
