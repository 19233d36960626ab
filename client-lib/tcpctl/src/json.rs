//! `--json` output: the stable, documented schema of every command.
//!
//! These structs ARE the schema (documented in the crate's README.md): field
//! names and meanings only ever grow, never change. States use the RFC 9293
//! §3.3.2 spelling, addresses `"a.b.c.d:port"`, times microseconds or
//! RFC 3339 UTC strings, sizes bytes.

use std::collections::BTreeMap;

use serde::Serialize;
use tcpd_proto::v2::{ConnectionInfo, StateChange, StatsResponse, StatusResponse};

use crate::owner::{OwnerLookup, has_owner};
use crate::render::{addr_text, format_timestamp_us};
use crate::state::{connection_state_label, state_label};
use tcpd_proto::types::TcpStates;

/// One socket in `tcpctl ls --json` (the output is an array of these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionJson {
    /// RFC 9293 state name, e.g. `"ESTABLISHED"`, `"TIME-WAIT"`.
    pub state: String,
    /// Local address, `"ip:port"`.
    pub local: String,
    /// Remote address, `"ip:port"` (`"0.0.0.0:0"` for a listener).
    pub remote: String,
    /// The daemon's socket handle; 0 when no application holds the socket.
    pub handle: u64,
    /// Owner uid as the daemon saw it.
    pub owner_uid: u32,
    /// Owner gid as the daemon saw it.
    pub owner_gid: u32,
    /// Owner pid as the daemon saw it (0 when unknown).
    pub owner_pid: i32,
    /// Login name of `owner_uid`, or null when unknown or there is no owner.
    pub owner_user: Option<String>,
    /// Command name of `owner_pid` (from /proc), or null when unreadable.
    pub owner_process: Option<String>,
    /// Bytes received, not yet read by the application.
    pub recv_queue: u64,
    /// Bytes queued, not yet acknowledged by the peer.
    pub send_queue: u64,
    /// Smoothed round-trip time, microseconds (RFC 6298).
    pub srtt_us: u64,
    /// Round-trip time variation, microseconds (RFC 6298).
    pub rttvar_us: u64,
    /// Retransmission timeout, microseconds (RFC 6298).
    pub rto_us: u64,
    /// Congestion window, bytes (RFC 5681).
    pub cwnd: u64,
    /// Slow-start threshold, bytes (RFC 5681).
    pub ssthresh: u64,
    /// Segments retransmitted over the connection's life.
    pub retransmits: u64,
    /// Payload bytes sent, retransmissions included (Linux's
    /// `tcpi_bytes_sent`).
    pub bytes_sent: u64,
    /// Payload bytes delivered in order.
    pub bytes_received: u64,
    /// Congestion control algorithm, e.g. `"cubic"`, `"newreno"`.
    pub congestion: String,
    /// Effective send MSS, bytes.
    pub mss: u32,
    /// For a listener: its backlog; else 0.
    pub listen_backlog: u32,
    /// For a listener: completed connections waiting for accept; else 0.
    pub accept_queue: u32,
    /// The peer's receive window, bytes (SND.WND).
    pub snd_wnd: u64,
    /// The window tcpd last advertised, bytes (RCV.WND).
    pub rcv_wnd: u64,
    /// Retransmission timeouts.
    pub rto_timeouts: u64,
    /// Fast-recovery (PRR) episodes, and whether one is under way.
    pub fast_recoveries: u64,
    pub in_recovery: bool,
    /// Tail-loss probes sent.
    pub tlp_probes: u64,
    /// D-SACKs received.
    pub dsacks_received: u64,
    /// RACK's reordering window, µs.
    pub reorder_window_us: u64,
    /// Receive and send buffer sizes (autotuned unless set), bytes.
    pub recv_buffer: u64,
    pub send_buffer: u64,
}

impl ConnectionJson {
    /// The JSON view of one connection, with owner names looked up.
    pub fn new(info: &ConnectionInfo, owners: &dyn OwnerLookup) -> Self {
        let owned = has_owner(info);
        ConnectionJson {
            state: connection_state_label(info),
            local: addr_text(info.local.as_ref()),
            remote: addr_text(info.remote.as_ref()),
            handle: info.handle,
            owner_uid: info.owner_uid,
            owner_gid: info.owner_gid,
            owner_pid: info.owner_pid,
            owner_user: owned.then(|| owners.user_name(info.owner_uid)).flatten(),
            owner_process: (owned && info.owner_pid > 0)
                .then(|| owners.process_name(info.owner_pid))
                .flatten(),
            recv_queue: info.recv_queue,
            send_queue: info.send_queue,
            srtt_us: info.srtt_us,
            rttvar_us: info.rttvar_us,
            rto_us: info.rto_us,
            cwnd: info.cwnd,
            ssthresh: info.ssthresh,
            retransmits: info.retransmits,
            bytes_sent: info.bytes_sent,
            bytes_received: info.bytes_received,
            congestion: info.congestion.clone(),
            mss: info.mss,
            listen_backlog: info.listen_backlog,
            accept_queue: info.accept_queue,
            snd_wnd: info.snd_wnd,
            rcv_wnd: info.rcv_wnd,
            rto_timeouts: info.rto_timeouts,
            fast_recoveries: info.fast_recoveries,
            in_recovery: info.in_recovery,
            tlp_probes: info.tlp_probes,
            dsacks_received: info.dsacks_received,
            reorder_window_us: info.reorder_window_us,
            recv_buffer: info.recv_buffer,
            send_buffer: info.send_buffer,
        }
    }
}

/// One line of `tcpctl watch --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchEventJson {
    /// When the transition happened, RFC 3339 UTC with milliseconds.
    pub ts: String,
    /// The same instant, microseconds since the Unix epoch.
    pub ts_us: u64,
    /// Local address, `"ip:port"`.
    pub local: String,
    /// Remote address, `"ip:port"`.
    pub remote: String,
    /// State before the transition (RFC 9293 name).
    pub old: String,
    /// State after the transition (RFC 9293 name).
    pub new: String,
    /// The daemon's socket handle; 0 when no application holds the socket.
    pub handle: u64,
}

impl From<&StateChange> for WatchEventJson {
    fn from(change: &StateChange) -> Self {
        WatchEventJson {
            ts: format_timestamp_us(change.timestamp_us),
            ts_us: change.timestamp_us,
            local: addr_text(change.local.as_ref()),
            remote: addr_text(change.remote.as_ref()),
            old: state_label(change.old_state, ""),
            new: state_label(change.new_state, ""),
            handle: change.handle,
        }
    }
}

/// `tcpctl stats --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsJson {
    /// Every daemon counter by its snake_case name (`segments_in`,
    /// `segments_out`, `retransmits`, `rst_sent`, `rst_received`,
    /// `checksum_errors`, `active_opens`, `passive_opens`, `drop_<reason>`).
    pub counters: BTreeMap<String, u64>,
    /// Just the `drop_<reason>` counters, keyed by `<reason>`.
    pub drops: BTreeMap<String, u64>,
    /// Current connections per state; every RFC 9293 state is present.
    pub states: BTreeMap<String, u64>,
}

impl From<&StatsResponse> for StatsJson {
    fn from(stats: &StatsResponse) -> Self {
        let mut counters = BTreeMap::new();
        let mut drops = BTreeMap::new();
        for counter in &stats.counters {
            *counters.entry(counter.name.clone()).or_insert(0u64) += counter.value;
            if let Some(reason) = counter.name.strip_prefix("drop_") {
                *drops.entry(reason.to_string()).or_insert(0u64) += counter.value;
            }
        }
        let mut states: BTreeMap<String, u64> = TcpStates::all()
            .states()
            .map(|s| (s.name().to_string(), 0))
            .collect();
        for counter in &stats.states {
            let known = TcpStates::all()
                .states()
                .map(|s| s.name())
                .find(|name| counter.name.eq_ignore_ascii_case(name));
            let key = known.map_or_else(|| counter.name.clone(), str::to_string);
            *states.entry(key).or_insert(0) += counter.value;
        }
        StatsJson {
            counters,
            drops,
            states,
        }
    }
}

/// `tcpctl status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusJson {
    /// Daemon version.
    pub version: String,
    /// Daemon pid.
    pub pid: u32,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// The daemon's Unix socket path.
    pub socket_path: String,
    /// TUN device name.
    pub tun_name: String,
    /// TUN MTU, bytes.
    pub mtu: u32,
    /// tcpd's own IPv4 address.
    pub address: String,
    /// Prefix length of the TUN network.
    pub prefix_len: u32,
    /// The kernel side of the TUN.
    pub host_address: String,
    /// tcpd's IPv6 address, or null without IPv6.
    pub address6: Option<String>,
    pub prefix_len6: Option<u32>,
    /// The kernel side of the TUN over IPv6, or null.
    pub host_address6: Option<String>,
    /// Configured impairment (loss, delay...), or null when none.
    pub impairment: Option<String>,
}

impl From<&StatusResponse> for StatusJson {
    fn from(status: &StatusResponse) -> Self {
        let ip = |a: Option<&tcpd_proto::v2::SocketAddress>| {
            a.map_or("0.0.0.0".to_string(), |a| {
                crate::render::ip_of(a).to_string()
            })
        };
        StatusJson {
            version: status.version.clone(),
            pid: status.pid,
            uptime_ms: status.uptime_ms,
            socket_path: status.socket_path.clone(),
            tun_name: status.tun_name.clone(),
            mtu: status.mtu,
            address: ip(status.address.as_ref()),
            prefix_len: status.prefix_len,
            host_address: ip(status.host_address.as_ref()),
            address6: status
                .address6
                .as_ref()
                .map(|a| crate::render::ip_of(a).to_string()),
            prefix_len6: status.address6.as_ref().map(|_| status.prefix_len6),
            host_address6: status
                .host_address6
                .as_ref()
                .map(|a| crate::render::ip_of(a).to_string()),
            impairment: (!status.impairment.is_empty()).then(|| status.impairment.clone()),
        }
    }
}

/// `tcpctl kill --json`: one entry per 4-tuple tcpctl asked the daemon to abort.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KillJson {
    /// Connections the daemon reset, summed over `targets`.
    pub aborted: u64,
    /// Every Abort request sent, in order.
    pub targets: Vec<KillTargetJson>,
}

/// One Abort request of `tcpctl kill --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KillTargetJson {
    /// Local address, `"ip:port"`.
    pub local: String,
    /// Remote address, `"ip:port"`.
    pub remote: String,
    /// How many connections the daemon reset for this 4-tuple.
    pub aborted: u32,
}
