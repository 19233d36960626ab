//! One TCP connection: the transmission control block (RFC 9293 §3.3.1) and
//! the event processing of RFC 9293 §3.10, sans-IO.
//!
//! The stack owns every `Connection` and routes to it the segments of its
//! 4-tuple (checksum already verified), the user calls, and timeouts. A
//! connection never touches other connections or the IP layer: it emits whole
//! TCP segments (header, options, payload, checksum) through
//! [`Connection::poll_transmit`] and says when it next needs time through
//! [`Connection::poll_timeout`].
//!
//! Layout of the module:
//! - this file: the TCB, construction (active and passive open), the user
//!   calls (RFC 9293 §3.10.1–§3.10.6), readiness, options and counters;
//! - `input`: SEGMENT ARRIVES (RFC 9293 §3.10.7) with RFC 5961, RFC 7323
//!   (PAWS, TS.Recent), loss detection on ACKs: RACK (RFC 8985) with SACK,
//!   duplicate ACKs and NewReno (RFC 5681/6582) without;
//! - `output`: what to send next: SYN, retransmissions of lost segments,
//!   a tail-loss probe, data (Nagle, SWS avoidance, cwnd or PRR), FIN,
//!   probes, ACKs, RST — one segment per call;
//! - `timers`: retransmission (RFC 6298), RACK reordering and TLP probe
//!   timers (RFC 8985), persist, delayed ACK, keepalive, TIME-WAIT;
//! - `sent`: per-segment records of what is in flight (SACKed, lost, when sent);
//! - `recovery`: RACK, TLP and PRR (RFC 6937) state, and the undo of a
//!   spurious window reduction (RFC 3522, RFC 3708).
//!
//! Sequence-space invariants (all comparisons through [`SeqNum`]):
//! - `iss` is our SYN; `send_buf_seq` is the sequence number of the first byte
//!   in the send buffer (`iss + 1` until data is acknowledged); the data ends
//!   at `data_end() = send_buf_seq + send_buf.len()`, and our FIN (once
//!   queued) occupies `data_end()`.
//! - `snd_una <= tx_next <= snd_nxt`: `snd_nxt` is RFC 9293's SND.NXT (the
//!   highest sequence number sent, plus one); `tx_next` is where the next new
//!   transmission starts. They differ only while our SYN is being resent.
//!   Data is retransmitted from the `sent` records marked lost (after a
//!   timeout: all of them not SACKed, RFC 6298 §5.4's go-back-N).
//! - `rcv_nxt <= rcv_adv_right`: the right edge we advertised, which never
//!   moves left (RFC 9293 §3.8.6.2.2, RFC 7323 §2.4).

mod input;
mod output;
mod recovery;
mod sent;
#[cfg(test)]
mod tests;
mod timers;
mod urgent;

use crate::config::{OptionTime, SocketOptions};
use crate::error::{ConnError, RecvError, SendError, SocketError};
use crate::seq::SeqNum;
use crate::socket::{
    CaState, MemoryLevel, Readiness, RecoveryInfo, SendFlags, Shutdown, SockOption, TcpInfo,
    TcpInfoOptions,
};
use crate::tcp::TcpState;
use crate::tcp::buffer::{RecvBuffer, SendBuffer, copy_to_two};
use crate::tcp::congestion::{CongestionControl, Controller};
use crate::tcp::rtt::{RttEstimator, SYN_LOSS_RTO};
use crate::time::{Duration, Instant, OptionDuration};
use crate::trace::Note;
use crate::wire::TcpRepr;
use bytes::Bytes;
use core::net::{IpAddr, SocketAddr};
use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use recovery::{Prr, Rack, Tlp, Undo};
use sent::SentQueue;
use urgent::UrgentMark;

/// IPv4 plus TCP fixed headers: MSS = MTU - 40 (RFC 9293 §3.7.1, RFC 879).
const IPV4_TCP_HEADERS: usize = 40;
/// IPv6 plus TCP fixed headers: MSS = MTU - 60 (RFC 8200 §8.3; tcpd sends
/// no extension headers).
const IPV6_TCP_HEADERS: usize = 60;
/// The send MSS when the peer's SYN carries no MSS option (RFC 9293 §3.7.1:
/// 536 for IPv4).
const DEFAULT_IPV4_MSS: usize = 536;
/// The same for IPv6 (RFC 9293 §3.7.1, RFC 8200 §8.3: 1280 - 60).
const DEFAULT_IPV6_MSS: usize = 1220;
/// IPv6's minimum link MTU (RFC 8200 §5): a Packet Too Big below it is
/// ignored (RFC 8201 §4).
const IPV6_MIN_MTU: usize = 1280;

/// IP and TCP fixed headers for a connection to `remote`.
fn ip_tcp_headers(remote: &SocketAddr) -> usize {
    match remote {
        SocketAddr::V4(_) => IPV4_TCP_HEADERS,
        SocketAddr::V6(_) => IPV6_TCP_HEADERS,
    }
}

/// The default send MSS of `remote`'s family (RFC 9293 §3.7.1).
fn default_mss(remote: &SocketAddr) -> usize {
    match remote {
        SocketAddr::V4(_) => DEFAULT_IPV4_MSS,
        SocketAddr::V6(_) => DEFAULT_IPV6_MSS,
    }
}
/// Smallest send MSS we accept from a peer's option or an ICMP "fragmentation
/// needed" (Linux's TCP_MIN_MSS), so a hostile MSS of 0 or 1 cannot make us
/// send one-byte segments.
const MIN_SEND_MSS: usize = 88;
/// Bytes a timestamps option takes in every segment once negotiated:
/// 10 plus 2 NOPs (RFC 7323 §3.2, Appendix A layout).
const TIMESTAMP_OPTION_LEN: usize = 12;
/// Largest window-scale shift (RFC 7323 §2.3).
const MAX_WINDOW_SHIFT: u8 = 14;
/// The largest value of the 16-bit window field (RFC 9293 §3.1).
const MAX_WINDOW_FIELD: usize = u16::MAX as usize;
/// Duplicate ACKs that trigger fast retransmit (RFC 5681 §3.2, DupThresh of
/// RFC 6675 §2).
const DUP_ACK_THRESHOLD: u32 = 3;
/// How long TCP_CORK or MSG_MORE hold a partial segment at most (Linux:
/// "a 200 millisecond ceiling on the time for which output is corked").
const CORK_TIMEOUT: Duration = Duration::from_millis(200);
/// MSG_EOR record ends remembered at most; older ones are forgotten (their
/// boundaries may then be coalesced), so a flood of tiny records cannot
/// grow memory.
const MAX_EOR_MARKS: usize = 1024;
/// ACK points of one batch remembered at most in quick-ACK mode (see
/// `ack_points`).
const MAX_ACK_POINTS: usize = 8;
/// "Quick ACK" segments acknowledged at once after the connection starts or
/// after a reordering event, like Linux's TCP_MAX_QUICKACKS: while the peer
/// is in slow start its cwnd is small, and delaying every other ACK would
/// slow it down (RFC 5681 §4.2 allows ACKing every segment).
const QUICK_ACK_SEGMENTS: u32 = 16;
/// At most one ACK per this interval answers invalid segments without data
/// (RFC 5961 §7 throttling; Linux's tcp_invalid_ratelimit default).
const INVALID_ACK_INTERVAL: Duration = Duration::from_millis(500);
/// TS.Recent is invalid after 24 days of idleness (RFC 7323 §5.5).
const PAWS_IDLE_LIMIT: Duration = Duration::from_secs(24 * 24 * 60 * 60);

/// Stack-wide timing and limits a connection needs (copied from `StackConfig`).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionConfig {
    /// Link MTU: the MSS we advertise is `mtu - 40` (RFC 9293 §3.7.1).
    pub mtu: u16,
    pub msl: Duration,
    pub max_retries: u32,
    pub min_rto: Duration,
    pub max_rto: Duration,
    pub initial_rto: Duration,
    pub delayed_ack: Duration,
    /// SYN,ACK retransmissions of a passive open (Linux tcp_synack_retries);
    /// an active open's SYN uses the socket's TCP_SYNCNT instead.
    pub synack_retries: u32,
    /// Retransmissions (and zero-window probes) of an orphan — a
    /// connection closed by its user with data or FIN still unacknowledged —
    /// before it is dropped (Linux tcp_orphan_retries; its 0 means 8).
    pub orphan_retries: u32,
    /// How long a closed socket waits in FIN-WAIT-2 for the peer's FIN
    /// (Linux tcp_fin_timeout).
    pub fin_timeout: Duration,
    /// Receive-buffer autotuning maximum (tcp_rmem[2]); sets the window scale.
    pub rmem_max: usize,
    /// Send-buffer autotuning maximum (tcp_wmem[2]).
    pub wmem_max: usize,
}

/// Payload bytes one super-segment carries at most: what fits a 64 KiB IPv4
/// packet (total length 65535, RFC 791 §3.1) with the largest headers.
pub const MAX_SUPER_SEGMENT: usize = 65535 - 20 - crate::wire::tcp::MAX_HEADER_LEN;

/// Slices [`Connection::recv_with`] hands over at most (a vectored write's
/// iovec count; far below `IOV_MAX`, and enough for a 64 KiB-per-slice
/// receive queue's whole window).
pub const RECV_IO_SLICES: usize = 64;

/// What the link does for the segments a connection emits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxOffload {
    /// The link cuts TCP super-segments into MSS-sized ones (TSO/GSO).
    pub segmentation: bool,
    /// The link completes checksums left partial (virtio-net NEEDS_CSUM).
    pub checksum: bool,
    /// The payload stays in the send buffer: only the headers are written
    /// to the caller's buffer, and the caller sends the payload from
    /// where it is ([`SegmentOffload::payload_apart`],
    /// [`Connection::payload_slices`]) with a vectored write.
    pub vectored: bool,
}

/// What the link must do with one emitted segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentOffload {
    /// Payload bytes per wire segment, when the segment carries more (a
    /// super-segment); each wire segment but the last carries exactly this.
    pub gso_size: Option<u16>,
    /// The checksum field holds only the pseudo-header sum.
    pub partial_checksum: bool,
    /// TCP header bytes (options included).
    pub header_len: usize,
    /// With [`TxOffload::vectored`]: the payload, which follows the header
    /// on the wire but was not written after it, as (offset from the front
    /// of the send buffer, length); see [`Connection::payload_slices`].
    pub payload_apart: Option<(usize, usize)>,
}

/// [`SegmentOffload`] as a connection keeps it between emitting a segment
/// and returning it: 20 bytes instead of 40 in every TCB (a TCP header
/// is at most 60 bytes; payload offsets and lengths are within the send
/// buffer, below 4 GiB).
#[derive(Clone, Copy, Debug, Default)]
struct Emitted {
    gso_size: Option<u16>,
    header_len: u8,
    partial_checksum: bool,
    payload_apart: Option<(u32, u32)>,
}

impl Emitted {
    fn offload(self) -> SegmentOffload {
        SegmentOffload {
            gso_size: self.gso_size,
            partial_checksum: self.partial_checksum,
            header_len: usize::from(self.header_len),
            payload_apart: self
                .payload_apart
                .map(|(at, len)| (at as usize, len as usize)),
        }
    }
}

/// What a new connection starts from.
#[derive(Clone, Debug)]
pub struct ConnectionParams {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Our initial send sequence number (RFC 6528, from the stack).
    pub iss: SeqNum,
    /// Per-connection offset added to the timestamp clock (RFC 7323 §5.4).
    pub ts_offset: u32,
    pub options: SocketOptions,
    /// Shared by all the stack's connections (one copy, not one each).
    pub config: Arc<ConnectionConfig>,
}

/// Per-connection counters and estimator values, for the admin API.
///
/// `bytes_sent` counts payload bytes transmitted, retransmissions included
/// (Linux's tcpi_bytes_sent); `bytes_received` counts payload bytes that
/// arrived in order (tcpi_bytes_received).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    pub recv_queue: usize,
    pub send_queue: usize,
    pub srtt: Duration,
    pub rttvar: Duration,
    pub rto: Duration,
    pub cwnd: usize,
    pub ssthresh: usize,
    pub retransmits: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub mss: u16,
    /// The peer's receive window, bytes (SND.WND, scaled).
    pub snd_wnd: usize,
    /// The window we last advertised, bytes (RCV.WND: our right edge less RCV.NXT).
    pub rcv_wnd: usize,
    pub segments_in: u64,
    pub segments_out: u64,
    /// Arriving segments discarded without their content being used: out
    /// of window, PAWS-rejected, unacceptable ACK, RST or SYN answered by a
    /// challenge ACK, no ACK bit, or anything reaching a CLOSED connection
    /// (RFC 9293 §3.10.7). The stack counts them as `drop_unacceptable`.
    pub segments_discarded: u64,
    pub recovery: RecoveryInfo,
}

/// What a connection counts; the rest of [`ConnectionStats`] is read off
/// its state when asked (a third of the size, kept by every connection).
///
/// Byte counts are 64-bit; segment and event counts are 32-bit and wrap,
/// as Linux keeps them in `struct tcp_sock` (`u32 segs_in`, `segs_out`,
/// `total_retrans`, `total_rto`, ...; `u64 bytes_sent`, `bytes_received`)
/// and reports them in `struct tcp_info`'s `__u32` fields. Whoever
/// accumulates them (the stack's counters) adds wrapping differences.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    bytes_sent: u64,
    bytes_received: u64,
    retransmits: u32,
    segments_in: u32,
    segments_out: u32,
    segments_discarded: u32,
    rto_timeouts: u32,
    fast_recoveries: u32,
    undos: u32,
    spurious_rtos: u32,
}

/// How soon an acknowledgement must be sent (RFC 9293 §3.8.6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AckDue {
    /// Nothing received since our last ACK.
    No,
    /// Delayed ACK: by this time at the latest.
    By(Instant),
    /// Two full-sized segments' worth arrived since our last ACK (RFC 5681
    /// §4.2): the ACK goes at the next transmit opportunity if the reader
    /// has caught up or the window moves right by what arrived, else with
    /// the reader's next read; by this time at the latest (Linux's
    /// `__tcp_ack_snd_check` and `tcp_cleanup_rbuf`, see
    /// `Connection::owed_ack_is_due`).
    Owed(Instant),
    /// At the next transmit opportunity.
    Now,
}

/// A reset to send; `ack` set means `<CTL=RST,ACK>` with that number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PendingRst {
    seq: SeqNum,
    ack: Option<SeqNum>,
}

/// A probe segment `<SEQ=SND.UNA-1><ACK=RCV.NXT>` is due: it lies just left
/// of the peer's window, so the peer answers it with an ACK carrying its
/// current window (RFC 1122 §4.2.3.6 keepalive; Linux's zero-window probe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProbeDue {
    No,
    ZeroWindow,
    Keepalive,
}

/// One connection.
#[derive(Debug)]
pub struct Connection {
    /// The 4-tuple, as addresses and ports (38 bytes instead of two
    /// `SocketAddr`s' 64): a connection's addresses never carry an IPv6
    /// flow label or scope id (the stack makes them from packets and from
    /// connect's canonical address), so [`Connection::local`] and
    /// [`Connection::remote`] rebuild them exactly.
    local_ip: IpAddr,
    remote_ip: IpAddr,
    local_port: u16,
    remote_port: u16,
    config: Arc<ConnectionConfig>,
    options: SocketOptions,
    state: TcpState,
    state_changes: StateChanges,
    /// Notes for the trace, kept only while a trace follows us (`Some`;
    /// boxed: one pointer for the connections nobody traces).
    // Boxed on purpose: the point is one pointer instead of a Vec's 24 B.
    #[allow(clippy::box_collection)]
    notes: Option<Box<Vec<Note>>>,
    /// We sent the first SYN (connect), as opposed to answering one.
    active_open: bool,

    // --- Send sequence space (RFC 9293 §3.3.1) ---
    iss: SeqNum,
    snd_una: SeqNum,
    /// RFC 9293 SND.NXT: one past the highest sequence number ever sent.
    snd_nxt: SeqNum,
    /// Where the next transmission from the queue starts (see module doc).
    tx_next: SeqNum,
    /// SND.WND in bytes (already scaled).
    snd_wnd: u32,
    /// The largest window the peer ever offered (RFC 1122 §4.2.3.4 Max(SND.WND),
    /// RFC 5961 §5.2 MAX.SND.WND).
    max_snd_wnd: u32,
    snd_wl1: SeqNum,
    snd_wl2: SeqNum,
    send_buf: SendBuffer,
    /// Sequence number of `send_buf`'s first byte.
    send_buf_seq: SeqNum,
    /// The user asked for a FIN after the queued data (CLOSE / shutdown(WR)).
    fin_queued: bool,

    // --- Receive sequence space ---
    irs: SeqNum,
    rcv_nxt: SeqNum,
    /// RCV.NXT + the window we last advertised (never moves left).
    rcv_adv_right: SeqNum,
    recv_buf: RecvBuffer,
    /// A FIN that arrived beyond a hole, at this sequence number.
    peer_fin_at: Option<SeqNum>,
    fin_received: bool,

    // --- Negotiated options ---
    /// MSS we advertise: mtu - 40 (RFC 9293 §3.7.1).
    adv_mss: u32,
    /// Largest segment payload the path takes, before options:
    /// min(peer MSS or 536, mtu - 40), lowered by ICMP (RFC 1191).
    path_mss: u32,
    /// Effective send MSS: `path_mss` minus the timestamps option when on
    /// (RFC 9293 §3.7.1 "Eff.snd.MSS").
    send_mss: u32,
    /// Estimate of the peer's segment size, for "full-sized" in the delayed-ACK rule.
    rcv_mss: u32,
    /// Shift applied to the peer's window field (RFC 7323 §2.3 Snd.Wind.Shift).
    snd_wscale: u8,
    /// Shift applied to our window field (Rcv.Wind.Shift).
    rcv_wscale: u8,
    /// Both SYNs carried the window-scale option (RFC 7323 §2.2).
    ws_enabled: bool,
    ts_enabled: bool,
    ts_offset: u32,
    /// TS.Recent and when it was last updated (RFC 7323 §4.3, §5.5).
    ts_recent: u32,
    ts_recent_at: Instant,
    /// Last.ACK.sent (RFC 7323 §4.3).
    last_ack_sent: SeqNum,
    sack_enabled: bool,

    // --- User side ---
    write_shut: bool,
    read_shut: bool,
    /// close(2) was called: the user holds no handle any more.
    user_closed: bool,
    pending_error: Option<ConnError>,

    // --- Output obligations ---
    ack_due: AckDue,
    /// In-order payload bytes received since our last ACK.
    bytes_since_ack: u32,
    /// RCV.NXT at earlier points of the current batch where a quick ACK
    /// was owed, sent before the ACK of RCV.NXT (see `schedule_data_ack`).
    ack_points: RareQueue<SeqNum>,
    /// RCV.NXT when the latest ACK was owed.
    last_ack_point: SeqNum,
    /// While set, `write` sends this acknowledgment number (an older ACK point).
    ack_point: Option<SeqNum>,
    quick_acks: u32,
    pending_rst: Option<PendingRst>,
    probe_due: ProbeDue,
    /// The persist timer expired with a small but non-zero window: send what
    /// fits despite SWS avoidance (RFC 1122 §4.2.3.4 override timeout).
    force_send: bool,

    // --- Timers ---
    rtx_deadline: Option<Instant>,
    /// Consecutive timeouts of the current retransmission series.
    retries: u32,
    persist_deadline: Option<Instant>,
    persist_backoff: u32,
    /// Persist probes sent since the peer last answered.
    persist_probes: u32,
    keepalive_deadline: Option<Instant>,
    keepalive_probes: u32,
    /// TIME-WAIT (2×MSL) or the FIN-WAIT-2 timeout of a closed socket.
    close_deadline: Option<Instant>,
    /// When SND.UNA last advanced (or data first went out): the base of TCP_USER_TIMEOUT.
    last_progress: Instant,
    /// When data was last sent: the idle test of RFC 5681 §4.1.
    last_data_sent: Option<Instant>,
    /// When in-order data and an ACK last arrived (TCP_INFO's last_*_recv).
    last_data_recv: Option<Instant>,
    last_ack_recv: Option<Instant>,
    /// Bytes of ours the peer acknowledged (tcpi_bytes_acked).
    bytes_acked: u64,
    /// Our SYN or SYN,ACK was sent more than once (a timeout, or the peer
    /// retransmitted its SYN): RFC 6298 §5.7 and RFC 5681 §3.1 apply once
    /// the connection is established.
    syn_retransmitted: bool,

    // --- RTT and congestion ---
    rtt: RttEstimator,
    /// The segment being timed for an RTT sample without timestamps: its end
    /// and when it was sent (RFC 6298 §3, Karn: cleared on retransmission).
    rtt_timed: Option<(SeqNum, Instant)>,
    /// The TSval carried by our most recent retransmission (SYN or data),
    /// while timestamps are on. An ACK echoing an older TSecr reports on a
    /// transmission from before it and gives no RTT sample (RFC 7323 §4.1,
    /// Karn / RFC 6298 §3, the Eifel check of RFC 3522 §3.2). Cleared once a
    /// sample echoing it (or later) was taken.
    rtx_tsval: Option<u32>,
    cc: Controller,
    dup_acks: u32,
    in_recovery: bool,
    /// RFC 6582 "recover": SND.NXT when loss recovery began.
    recover: SeqNum,
    /// SND.NXT at the last retransmission timeout: no fast retransmit until
    /// an ACK covers more than this (RFC 6582 §4).
    rto_recover: Option<SeqNum>,
    /// Without SACK, the bytes duplicate ACKs say have left the network
    /// during recovery (one SMSS each, RFC 6937 §3's DeliveredData estimate;
    /// Linux counts them as "sacked" the same way).
    reno_dup_bytes: u32,
    /// What is in flight and the loss recovery around it; `None` until
    /// the first data or FIN goes out (see [`Flight`]).
    flight: Option<Box<Flight>>,
    /// The last window reduction, while it may still prove spurious
    /// (boxed: rare, and every idle connection would carry its room).
    undo: Option<Box<Undo>>,
    /// MSG_MORE was given on the last send: hold partial segments.
    more_pending: bool,
    /// Whether a cork's time came (until the next write starts a new hold;
    /// the deadline is [`Occasional::cork_deadline`]).
    cork_released: bool,
    /// Ends of records written with MSG_EOR still unsent: no segment
    /// crosses one (oldest first).
    eor_marks: RareQueue<SeqNum>,
    /// State of occasional features (see [`Occasional`]); `None` until one
    /// is used.
    occasional: Option<Box<Occasional>>,
    /// The end of the last segment shorter than the MSS that we sent
    /// (Minshall's Nagle variant; Linux's `snd_sml`).
    last_small_end: Option<SeqNum>,
    /// Receive autotuning (Linux's DRS, `tcp_rcv_space_adjust`): the
    /// receiver's RTT estimate from echoed timestamps, the bytes the
    /// application read, and the last measurement (bytes read per RTT).
    /// The read counts are 32-bit and wrap: only their difference over one
    /// measurement is used, as Linux's `copied_seq - rcvq_space.seq` (u32).
    rcv_rtt: OptionDuration,
    bytes_read: u32,
    rcvq_space: u32,
    rcvq_read: u32,
    rcvq_time: Instant,
    /// The largest flight since SND.UNA passed `max_flight_seq` (a window
    /// of data ago): whether cwnd was in use (Linux's `max_packets_out`).
    max_flight: u32,
    max_flight_seq: SeqNum,

    /// What the link does with emitted segments, for the current
    /// [`Connection::poll_transmit_with`] call only (default otherwise).
    tx_offload: TxOffload,
    /// What the segment just emitted asks of the link.
    tx_emitted: Emitted,
    counters: Counters,

    // --- Memory (see [`MemoryLevel`]) ---
    /// The level the stack's user set for this socket (a session's quota).
    memory_user: MemoryLevel,
    /// The stack-wide level (`tcp_mem`).
    memory_global: MemoryLevel,
    /// Data segments dropped at `MemoryLevel::Exhausted` (Linux's
    /// TCPRcvQDrop), not yet added to the stack's counter.
    memory_drops: u32,
}

/// What a connection needs only for occasional features — urgent data,
/// corking, TCP_DEFER_ACCEPT, answers to invalid segments, duplicate-data
/// reports — boxed together: 8 bytes in every TCB instead of 56, and
/// allocated the first time one is used (then kept, like [`Flight`]).
/// While it is `None`, every field reads as `None` ([`IDLE_OCCASIONAL`]).
#[derive(Debug, Default)]
struct Occasional {
    /// The send urgent pointer (one past the last urgent byte, see `urgent`).
    snd_up: Option<SeqNum>,
    /// The urgent byte the peer announced (see `urgent`).
    rcv_urgent: Option<UrgentMark>,
    /// A passive open under the listener's TCP_DEFER_ACCEPT: until this
    /// time, it waits off the accept queue for the peer's first data.
    defer_accept_until: Option<Instant>,
    /// When a cork (TCP_CORK or MSG_MORE) stops holding partial segments.
    cork_deadline: Option<Instant>,
    /// When an invalid segment was last answered (see `INVALID_ACK_INTERVAL`).
    last_invalid_ack: Option<Instant>,
    /// Duplicate data just received, reported once as a D-SACK (RFC 2883).
    pending_dsack: Option<(SeqNum, SeqNum)>,
}

/// What a connection without [`Occasional`] state reads.
static IDLE_OCCASIONAL: Occasional = Occasional {
    snd_up: None,
    rcv_urgent: None,
    defer_accept_until: None,
    cork_deadline: None,
    last_invalid_ack: None,
    pending_dsack: None,
};

/// State transitions not yet drained by the stack: one pointer (8 bytes
/// instead of an empty `Vec`'s 24) for the whole of a connection's life
/// but the moments between a transition and the stack's drain.
#[derive(Debug, Default)]
// Boxed on purpose: the point is one pointer instead of a Vec's 24 B.
#[allow(clippy::box_collection)]
struct StateChanges(Option<Box<Vec<(TcpState, TcpState)>>>);

impl StateChanges {
    fn push(&mut self, change: (TcpState, TcpState)) {
        self.0.get_or_insert_with(Box::default).push(change);
    }

    /// Room held for undrained transitions (none once drained).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |changes| changes.capacity())
    }
}

/// A queue a connection rarely uses (ACK points of a batch, MSG_EOR
/// marks): one pointer until its first element, so an idle connection's
/// TCB does not carry two empty `VecDeque`s (32 bytes each). Once used, it
/// keeps its allocation.
#[derive(Debug)]
// Boxed on purpose: the point is one pointer instead of a VecDeque's 32 B.
#[allow(clippy::box_collection)]
struct RareQueue<T>(Option<Box<VecDeque<T>>>);

impl<T> Default for RareQueue<T> {
    fn default() -> Self {
        RareQueue(None)
    }
}

impl<T> RareQueue<T> {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    fn front(&self) -> Option<&T> {
        self.0.as_ref().and_then(|q| q.front())
    }

    fn pop_front(&mut self) -> Option<T> {
        self.0.as_mut().and_then(|q| q.pop_front())
    }

    fn push_back(&mut self, value: T) {
        self.0.get_or_insert_with(Box::default).push_back(value);
    }

    fn clear(&mut self) {
        if let Some(q) = &mut self.0 {
            q.clear();
        }
    }
}

/// The send side's loss-detection state: the per-segment records of what
/// is in flight, RACK, TLP and PRR. Boxed and allocated when the first data
/// or FIN is sent: a connection that never sends (and every connection
/// during its handshake: the SYN has no record) carries one pointer instead
/// of ~210 bytes. Once allocated it stays (RACK's minimum RTT and
/// reordering window, TLP's counters persist for the connection's life).
///
/// Invariant: while it is `None`, nothing but our SYN was ever sent, so
/// RACK.fack is SND.UNA ([`Connection::rack_fack`]) and every record
/// queue, timer and probe is empty ([`IDLE_FLIGHT`]).
#[derive(Debug)]
struct Flight {
    /// What is in flight, segment by segment.
    sent: SentQueue,
    rack: Rack,
    tlp: Tlp,
    /// Proportional rate reduction during fast recovery.
    prr: Prr,
}

impl Flight {
    const fn new(snd_una: SeqNum) -> Flight {
        Flight {
            sent: SentQueue::new(),
            rack: Rack::new(snd_una),
            tlp: Tlp::IDLE,
            prr: Prr::IDLE,
        }
    }
}

/// What a connection without a [`Flight`] reads: nothing in flight.
static IDLE_FLIGHT: Flight = Flight::new(SeqNum(0));

/// A window, MSS or byte count in the TCB's 32 bits. Windows are below
/// 2^30 (a 16-bit field scaled by at most 14, RFC 7323 §2.3), segment sizes
/// below 2^16 (RFC 9293 §3.7.1), and the byte counts kept this way (bytes
/// since our last ACK, duplicate-ACK bytes, the largest flight, the
/// receive-space measurement) within one window; Linux keeps the same
/// quantities in `u32`s of `struct tcp_sock` (`snd_wnd`, `max_window`,
/// `mss_cache`, `advmss`, `rcvq_space.space`, ...). Saturating, never
/// reached.
fn narrow(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The window-scale shift to offer: the smallest that lets the 16-bit field
/// describe the whole receive buffer, at most 14 (RFC 7323 §2.2, §2.3).
fn window_shift_for(buffer: usize) -> u8 {
    let mut shift = 0u8;
    while shift < MAX_WINDOW_SHIFT && (MAX_WINDOW_FIELD << shift) < buffer {
        shift += 1;
    }
    shift
}

/// Accessors of the TCB's 32-bit fields (see [`narrow`]) as the `usize`s
/// the code computes with.
macro_rules! widened {
    ($($field:ident),*) => {
        impl Connection {
            $(
                fn $field(&self) -> usize {
                    self.$field as usize
                }
            )*
        }
    };
}

widened!(
    snd_wnd,
    max_snd_wnd,
    adv_mss,
    path_mss,
    send_mss,
    rcv_mss,
    bytes_since_ack,
    reno_dup_bytes,
    rcvq_space,
    max_flight
);

impl Connection {
    /// The occasional features' state (see [`Occasional`]).
    fn occasional(&self) -> &Occasional {
        self.occasional.as_deref().unwrap_or(&IDLE_OCCASIONAL)
    }

    /// The occasional features' state, allocated on first use.
    fn occasional_mut(&mut self) -> &mut Occasional {
        self.occasional.get_or_insert_with(Box::default)
    }

    /// Sets one occasional field, allocating only for a value (a `None`
    /// where there is no [`Occasional`] is already `None`).
    fn set_occasional<T>(
        &mut self,
        value: Option<T>,
        field: impl FnOnce(&mut Occasional) -> &mut Option<T>,
    ) {
        if value.is_some() || self.occasional.is_some() {
            *field(self.occasional_mut()) = value;
        }
    }

    /// The loss-detection state, empty until something was sent.
    fn flight(&self) -> &Flight {
        self.flight.as_deref().unwrap_or(&IDLE_FLIGHT)
    }

    /// The loss-detection state, allocated on first use (see [`Flight`]).
    fn flight_mut(&mut self) -> &mut Flight {
        let snd_una = self.snd_una;
        self.flight
            .get_or_insert_with(|| Box::new(Flight::new(snd_una)))
    }

    /// RACK.fack: the highest sequence number delivered (SND.UNA while
    /// nothing beyond the SYN was ever sent).
    fn rack_fack(&self) -> SeqNum {
        self.flight.as_ref().map_or(self.snd_una, |f| f.rack.fack)
    }

    fn new(params: ConnectionParams, now: Instant, active_open: bool) -> Connection {
        let config = params.config;
        let options = params.options;
        // RFC 9293 §3.7.1: MTU - 40 (IPv6: - 60), clamped by TCP_MAXSEG as Linux does.
        let adv_mss = usize::from(config.mtu)
            .saturating_sub(ip_tcp_headers(&params.remote))
            .min(options.max_segment.map_or(usize::MAX, usize::from))
            .max(1);
        let path_mss = default_mss(&params.remote).min(adv_mss);
        let iss = params.iss;
        Connection {
            local_ip: params.local.ip(),
            remote_ip: params.remote.ip(),
            local_port: params.local.port(),
            remote_port: params.remote.port(),
            config: Arc::clone(&config),
            options,
            state: if active_open {
                TcpState::SynSent
            } else {
                TcpState::SynReceived
            },
            state_changes: StateChanges::default(),
            notes: None,
            active_open,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            tx_next: iss,
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: SeqNum(0),
            snd_wl2: iss,
            send_buf: SendBuffer::new(options.send_buffer),
            send_buf_seq: iss + 1,
            fin_queued: false,
            irs: SeqNum(0),
            rcv_nxt: SeqNum(0),
            rcv_adv_right: SeqNum(0),
            recv_buf: RecvBuffer::new(options.recv_buffer),
            peer_fin_at: None,
            fin_received: false,
            adv_mss: narrow(adv_mss),
            path_mss: narrow(path_mss),
            send_mss: narrow(path_mss),
            rcv_mss: narrow(path_mss),
            snd_wscale: 0,
            // RFC 7323 §2.3: the shift is fixed at the SYN, so it must fit
            // the largest buffer autotuning may reach (Linux's
            // tcp_select_initial_window: 7 for 6 MiB), or the user's
            // SO_RCVBUF when set.
            rcv_wscale: window_shift_for(if options.recv_buffer_locked {
                options.recv_buffer
            } else {
                options.recv_buffer.max(config.rmem_max)
            }),
            ws_enabled: false,
            ts_enabled: false,
            ts_offset: params.ts_offset,
            ts_recent: 0,
            ts_recent_at: now,
            last_ack_sent: SeqNum(0),
            sack_enabled: false,
            write_shut: false,
            read_shut: false,
            user_closed: false,
            pending_error: None,
            ack_due: AckDue::No,
            bytes_since_ack: 0,
            ack_points: RareQueue::default(),
            last_ack_point: SeqNum(0),
            ack_point: None,
            quick_acks: QUICK_ACK_SEGMENTS,
            pending_rst: None,
            probe_due: ProbeDue::No,
            force_send: false,
            rtx_deadline: None,
            retries: 0,
            persist_deadline: None,
            persist_backoff: 0,
            persist_probes: 0,
            keepalive_deadline: None,
            keepalive_probes: 0,
            close_deadline: None,
            last_progress: now,
            last_data_sent: None,
            last_data_recv: None,
            last_ack_recv: None,
            bytes_acked: 0,
            syn_retransmitted: false,
            rtt: RttEstimator::new(config.initial_rto, config.min_rto, config.max_rto),
            rtt_timed: None,
            rtx_tsval: None,
            cc: Controller::new(options.congestion, path_mss),
            dup_acks: 0,
            in_recovery: false,
            recover: iss,
            rto_recover: None,
            reno_dup_bytes: 0,
            flight: None,
            undo: None,
            more_pending: false,
            cork_released: false,
            occasional: None,
            eor_marks: RareQueue::default(),
            last_small_end: None,
            rcv_rtt: OptionDuration::NONE,
            bytes_read: 0,
            rcvq_space: 0,
            rcvq_read: 0,
            rcvq_time: now,
            max_flight: 0,
            max_flight_seq: iss,
            tx_offload: TxOffload::default(),
            tx_emitted: Emitted::default(),
            counters: Counters::default(),
            memory_user: MemoryLevel::Normal,
            memory_global: MemoryLevel::Normal,
            memory_drops: 0,
        }
    }

    /// Active open (RFC 9293 §3.10.1): SYN-SENT with a SYN ready to send.
    pub fn connect(params: ConnectionParams, now: Instant) -> Connection {
        let mut conn = Connection::new(params, now, true);
        // The stack reports CLOSED -> SYN-SENT for the watch stream.
        conn.state_changes
            .push((TcpState::Closed, TcpState::SynSent));
        conn
    }

    /// Passive open: a listener received an acceptable SYN (RFC 9293
    /// §3.10.7.2, LISTEN, third check). SYN-RECEIVED with a SYN-ACK ready.
    pub fn accept_syn(params: ConnectionParams, syn: &TcpRepr<'_>, now: Instant) -> Connection {
        let mut conn = Connection::new(params, now, false);
        conn.state_changes
            .push((TcpState::Listen, TcpState::SynReceived));
        // RFC 9293 §3.10.7.2: RCV.NXT = SEG.SEQ+1, IRS = SEG.SEQ; the SYN's
        // window is never scaled (RFC 7323 §2.2). Data on a SYN is not
        // queued (no TCP Fast Open): the peer retransmits it after the handshake.
        conn.irs = syn.seq;
        conn.rcv_nxt = syn.seq + 1;
        conn.rcv_adv_right = conn.rcv_nxt;
        conn.last_ack_sent = conn.rcv_nxt;
        conn.negotiate_options(syn, now);
        conn.snd_wnd = narrow(usize::from(syn.window));
        conn.max_snd_wnd = narrow(conn.snd_wnd());
        conn.snd_wl1 = syn.seq;
        conn
    }

    /// Records the peer's SYN options and derives what both sides use
    /// (RFC 9293 §3.7.1 MSS, RFC 7323 §2.2/§3.2, RFC 2018 §2).
    fn negotiate_options(&mut self, syn: &TcpRepr<'_>, now: Instant) {
        let opts = &syn.options;
        // RFC 7323 §2.2: scaling only if both SYNs carry the option; a
        // received shift above 14 is used as 14 (§2.3).
        self.ws_enabled = opts.window_scale.is_some();
        match opts.window_scale {
            Some(shift) => self.snd_wscale = shift.min(MAX_WINDOW_SHIFT),
            None => {
                self.snd_wscale = 0;
                self.rcv_wscale = 0;
            }
        }
        // RFC 7323 §3.2: timestamps only if the SYN carried them.
        if let Some((tsval, _)) = opts.timestamp {
            self.ts_enabled = true;
            self.ts_recent = tsval;
            self.ts_recent_at = now;
        } else {
            self.ts_enabled = false;
        }
        self.sack_enabled = opts.sack_permitted;
        // RFC 9293 §3.7.1: without the option the peer takes 536 bytes.
        let peer_mss = opts.mss.map_or(default_mss(&self.remote()), usize::from);
        self.path_mss = narrow(
            peer_mss
                .min(self.adv_mss())
                .max(MIN_SEND_MSS.min(self.adv_mss())),
        );
        self.update_send_mss();
        self.rcv_mss = narrow(self.adv_mss().min(default_mss(&self.remote())));
    }

    /// Eff.snd.MSS: path MSS less the options every segment carries (RFC 9293 §3.7.1).
    fn update_send_mss(&mut self) {
        let options = if self.ts_enabled {
            TIMESTAMP_OPTION_LEN
        } else {
            0
        };
        self.send_mss = narrow(self.path_mss().saturating_sub(options).max(1));
        self.cc.set_mss(self.send_mss());
    }

    /// Sequence number one past the last queued data byte (where our FIN goes).
    fn data_end(&self) -> SeqNum {
        self.send_buf_seq + self.send_buf.len()
    }

    /// Our FIN has been sent (it occupies `data_end()`).
    fn fin_sent(&self) -> bool {
        self.fin_queued && self.snd_nxt.gt(self.data_end())
    }

    /// Our FIN has been acknowledged.
    fn fin_acked(&self) -> bool {
        self.fin_queued && self.snd_una.gt(self.data_end())
    }

    /// The window we currently promise: RCV.WND of RFC 9293 §3.3.1.
    fn rcv_wnd(&self) -> usize {
        self.rcv_adv_right.since(self.rcv_nxt)
    }

    /// Moves to `new`, recording the transition for the watch stream.
    fn set_state(&mut self, new: TcpState) {
        if self.state != new {
            tracing::debug!(from = self.state.name(), to = new.name(), "state change");
            self.state_changes.push((self.state, new));
            self.state = new;
        }
    }

    /// The handshake completed (RFC 9293 §3.10.7.3 / §3.10.7.4 SYN-RECEIVED).
    fn establish(&mut self, now: Instant) {
        self.set_state(TcpState::Established);
        self.cc = Controller::new(self.options.congestion, self.send_mss());
        if self.syn_retransmitted {
            // RFC 6298 §5.7: a SYN or SYN,ACK timed out and no RTT sample
            // came from the handshake: data transmission starts at a 3 s RTO
            // (the backed-off SYN RTO, or a 1 s initial one, would be wrong).
            if !self.rtt.has_sample() {
                self.rtt.reset_to(SYN_LOSS_RTO);
            }
            // RFC 5681 §3.1 / RFC 6928 §2: the initial window is one segment.
            self.cc.on_syn_loss();
        }
        self.quick_acks = QUICK_ACK_SEGMENTS;
        self.retries = 0;
        self.last_progress = now;
        // Linux's tcp_init_buffer_space: the first measurement of the
        // receive rate starts from ten segments.
        self.rcvq_space = narrow((10 * self.adv_mss()).min(self.recv_buf.capacity()));
        self.rcvq_time = now;
        self.expand_send_buffer();
        self.arm_keepalive(now);
        if !self.active_open {
            let until = self.options.defer_accept.map(|d| now + d.get());
            self.set_occasional(until, |o| &mut o.defer_accept_until);
        }
        // A shutdown(WR) issued in SYN-RECEIVED was queued until now
        // (RFC 9293 §3.10.4, SYN-RECEIVED: "queue for processing after
        // entering ESTABLISHED state").
        if self.fin_queued {
            self.set_state(TcpState::FinWait1);
        }
    }

    /// Ends the connection: CLOSED, timers off, both directions shut; `error`
    /// becomes the pending error (RFC 9293 §3.10.7.4 RST handling, §3.10.5).
    fn enter_closed(&mut self, error: Option<ConnError>) {
        if let Some(e) = error {
            self.pending_error = Some(e);
        }
        self.set_state(TcpState::Closed);
        self.write_shut = true;
        self.read_shut = true;
        self.rtx_deadline = None;
        self.persist_deadline = None;
        self.keepalive_deadline = None;
        self.close_deadline = None;
        self.ack_due = AckDue::No;
        self.probe_due = ProbeDue::No;
        self.force_send = false;
        if let Some(flight) = self.flight.as_deref_mut() {
            flight.rack.reo_deadline = None;
            flight.tlp.deadline = None;
            flight.tlp.due = false;
        }
    }

    /// Queues `<SEQ=seq><CTL=RST>` (or RST,ACK with `ack`).
    fn queue_rst(&mut self, seq: SeqNum, ack: Option<SeqNum>) {
        self.pending_rst = Some(PendingRst { seq, ack });
    }

    /// Asks for an immediate ACK.
    fn ack_now(&mut self) {
        self.ack_due = AckDue::Now;
    }

    /// Whether a synchronized-state RST is owed when we abort (RFC 9293
    /// §3.10.5: SYN-RECEIVED, ESTABLISHED, FIN-WAIT-1/2, CLOSE-WAIT).
    fn abort_sends_rst(&self) -> bool {
        matches!(
            self.state,
            TcpState::SynReceived
                | TcpState::Established
                | TcpState::FinWait1
                | TcpState::FinWait2
                | TcpState::CloseWait
        )
    }

    /// Discards readable data (after shutdown(RD), or a reset flushing the
    /// queues per RFC 9293 §3.10.7.4).
    fn discard_readable(&mut self) {
        self.recv_buf.skip(self.recv_buf.readable());
    }

    /// A segment of this connection's 4-tuple arrived (RFC 9293 §3.10.7).
    /// Whether it was discarded shows in [`Connection::segments_discarded`].
    pub fn handle_segment(&mut self, now: Instant, seg: &TcpRepr<'_>) {
        self.on_segment(now, seg, None);
    }

    /// [`Connection::handle_segment`] for a segment whose payload lies in
    /// `frame`: in-order payload may be queued as a slice of it, not copied
    /// (see [`RecvBuffer::write_shared`]).
    pub fn handle_segment_in(&mut self, now: Instant, seg: &TcpRepr<'_>, frame: &Bytes) {
        self.on_segment(now, seg, Some(frame));
    }

    /// How many arriving segments were discarded so far (see
    /// [`ConnectionStats::segments_discarded`]); cheap, for the stack's
    /// per-segment drop accounting.
    pub fn segments_discarded(&self) -> u64 {
        u64::from(self.counters.segments_discarded)
    }

    /// Retransmitted segments so far (wrapping, see [`Counters`]); cheap,
    /// for the stack's per-segment accounting.
    pub fn retransmit_count(&self) -> u32 {
        self.counters.retransmits
    }

    /// ICMP destination unreachable quoting one of our segments with `quoted_seq`.
    /// Code 4 (fragmentation needed) lowers the MSS to `next_hop_mtu - 40`
    /// (RFC 1191); others are soft errors (RFC 1122 §4.2.3.9) that only fail
    /// a connection still in SYN-SENT.
    pub fn handle_icmp_unreachable(
        &mut self,
        now: Instant,
        code: u8,
        next_hop_mtu: u16,
        quoted_seq: SeqNum,
    ) {
        /// ICMP code "fragmentation needed and DF set" (RFC 792, RFC 1191).
        const FRAGMENTATION_NEEDED: u8 = 4;
        if code == FRAGMENTATION_NEEDED {
            self.handle_packet_too_big(now, u32::from(next_hop_mtu), quoted_seq);
        } else {
            self.handle_unreachable(now, quoted_seq);
        }
    }

    /// A path MTU report quoting one of our segments with `quoted_seq`:
    /// ICMP "fragmentation needed" (RFC 1191) or ICMPv6 Packet Too Big (RFC
    /// 8201). The MSS drops to `mtu` less the IP and TCP headers when that
    /// is smaller, and what was sent is resent at the new size.
    pub fn handle_packet_too_big(&mut self, now: Instant, mtu: u32, quoted_seq: SeqNum) {
        let _ = now;
        // RFC 5927 §4.1: only believe ICMP that quotes data in flight.
        if !quoted_seq.in_range(self.snd_una, self.snd_nxt) {
            return;
        }
        let mtu = usize::try_from(mtu).unwrap_or(usize::MAX);
        // RFC 8201 §4: a Packet Too Big reporting less than IPv6's minimum
        // link MTU is discarded (no fragment header is added instead: RFC
        // 8021 deprecated atomic fragments).
        if self.remote_ip.is_ipv6() && mtu < IPV6_MIN_MTU {
            return;
        }
        let new_mss = mtu
            .saturating_sub(ip_tcp_headers(&self.remote()))
            .max(MIN_SEND_MSS);
        if new_mss < self.path_mss() {
            self.path_mss = narrow(new_mss);
            self.update_send_mss();
            // RFC 1191 §6.5, RFC 8201 §4: resend what was too big, at once;
            // this is not congestion, so cwnd stays.
            if self.state.is_synchronized()
                && let Some(flight) = self.flight.as_deref_mut()
            {
                flight.sent.mark_all_lost();
            }
        }
    }

    /// ICMP or ICMPv6 destination unreachable (other than a path MTU report)
    /// quoting one of our segments: a soft error (RFC 1122 §4.2.3.9, RFC
    /// 5461 §4) that only fails a connection still in SYN-SENT, as Linux.
    pub fn handle_unreachable(&mut self, now: Instant, quoted_seq: SeqNum) {
        let _ = now;
        // RFC 5927 §4.1: only believe ICMP that quotes data in flight.
        if !quoted_seq.in_range(self.snd_una, self.snd_nxt) {
            return;
        }
        if self.state == TcpState::SynSent {
            self.enter_closed(Some(ConnError::HostUnreachable));
        }
    }

    /// Writes the next segment to send (TCP header + options + payload, with
    /// the checksum) into `buf` and returns its length; `None` when nothing is
    /// due. `buf` holds at least `mtu - 20` bytes.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.poll_transmit_with(now, buf, TxOffload::default())
            .map(|(n, _)| n)
    }

    /// [`Connection::poll_transmit`] over a link that does `offload`: with
    /// segmentation, new data goes out as super-segments of up to
    /// [`MAX_SUPER_SEGMENT`] payload bytes (as much as `buf` holds), which
    /// the link cuts into MSS-sized segments; the returned
    /// [`SegmentOffload`] says what the link must do with this one.
    pub fn poll_transmit_with(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        offload: TxOffload,
    ) -> Option<(usize, SegmentOffload)> {
        self.tx_offload = offload;
        self.tx_emitted = Emitted::default();
        let sent = self.transmit(now, buf);
        self.tx_offload = TxOffload::default();
        sent.map(|n| (n, self.tx_emitted.offload()))
    }

    /// The send buffer's bytes a segment emitted with
    /// [`TxOffload::vectored`] carries ([`SegmentOffload::payload_apart`]),
    /// in place: valid until the next call that changes the connection.
    pub fn payload_slices(&self, (offset, len): (usize, usize)) -> [&[u8]; 2] {
        self.send_buf.slices_at(offset, len)
    }

    /// When [`Connection::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_deadline()
    }

    /// Runs whatever timers have expired at `now` (retransmission, delayed
    /// ACK, persist, keepalive, TIME-WAIT...).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.run_timers(now);
    }

    /// Queues bytes for sending (RFC 9293 §3.10.2).
    pub fn send(&mut self, now: Instant, data: &[u8]) -> Result<usize, SendError> {
        self.send_with(now, data, SendFlags::empty())
    }

    /// [`Connection::send`] with MSG_MORE / MSG_EOR / MSG_OOB.
    pub fn send_with(
        &mut self,
        now: Instant,
        data: &[u8],
        flags: SendFlags,
    ) -> Result<usize, SendError> {
        self.send_in_place(now, data.len(), flags, |a, b| copy_to_two(data, a, b))
    }

    /// [`Connection::send_with`] of up to `max` bytes that `write` puts
    /// straight into the send buffer: it gets the free space (at most
    /// `max`) as two slices and returns how many bytes it wrote at their
    /// front. `WouldBlock` when nothing was queued (no room, or `write`
    /// wrote nothing).
    pub fn send_in_place(
        &mut self,
        now: Instant,
        max: usize,
        flags: SendFlags,
        write: impl FnOnce(&mut [u8], &mut [u8]) -> usize,
    ) -> Result<usize, SendError> {
        if let Some(e) = self.pending_error.take() {
            return Err(SendError::Failed(e));
        }
        match self.state {
            // RFC 9293 §3.10.2 allows queueing before the handshake ends;
            // like Linux we make the caller wait for the connect instead.
            TcpState::SynSent | TcpState::SynReceived if !self.write_shut => {
                return Err(SendError::WouldBlock);
            }
            TcpState::Established | TcpState::CloseWait if !self.write_shut => {}
            // RFC 9293 §3.10.2: "connection closing" once CLOSE was issued.
            _ => return Err(SendError::BrokenPipe),
        }
        if max == 0 {
            return Ok(0);
        }
        if !self.below_notsent_lowat() || self.memory_level() >= MemoryLevel::Full {
            return Err(SendError::WouldBlock);
        }
        let n = self.send_buf.fill(max, write);
        if n == 0 {
            return Err(SendError::WouldBlock);
        }
        // MSG_MORE holds a partial segment like TCP_CORK until a send
        // without it; the hold starts now (Linux's 200 ms ceiling).
        self.more_pending = flags.contains(SendFlags::MORE);
        if (self.more_pending || self.options.cork) && self.occasional().cork_deadline.is_none() {
            self.occasional_mut().cork_deadline = Some(now + CORK_TIMEOUT);
            self.cork_released = false;
        }
        if flags.contains(SendFlags::OOB) {
            self.mark_urgent_sent();
        }
        if flags.contains(SendFlags::EOR) && n == max {
            // No coalescing across the end of a record (Linux's MSG_EOR).
            if self.eor_marks.len() >= MAX_EOR_MARKS {
                self.eor_marks.pop_front();
            }
            self.eor_marks.push_back(self.data_end());
        }
        Ok(n)
    }

    /// Whether partial segments are held: TCP_CORK or a pending MSG_MORE,
    /// for at most [`CORK_TIMEOUT`].
    pub(super) fn corked(&self, now: Instant) -> bool {
        (self.options.cork || self.more_pending)
            && !self.cork_released
            && self
                .occasional()
                .cork_deadline
                .is_none_or(|deadline| now < deadline)
    }

    /// Reads in-order bytes (RFC 9293 §3.10.3); `Ok(0)` is end of stream.
    pub fn recv(&mut self, now: Instant, out: &mut [u8], peek: bool) -> Result<usize, RecvError> {
        let len = out.len();
        self.read_with(now, len, peek, |buf, skip, limit| {
            if peek {
                buf.peek_at(skip, &mut out[..limit])
            } else {
                buf.read(&mut out[..limit])
            }
        })
    }

    /// [`Connection::recv`] without copying: moves up to `max` in-order
    /// bytes to `out` as slices of the receive queue (a frame's payload
    /// handed over by the link is read as the slice it was queued as).
    pub fn recv_bytes(
        &mut self,
        now: Instant,
        max: usize,
        out: &mut Vec<Bytes>,
    ) -> Result<usize, RecvError> {
        self.read_with(now, max, false, |buf, _, limit| buf.read_bytes(limit, out))
    }

    /// [`Connection::recv`] into a vectored write: `write` gets up to `max`
    /// in-order bytes as at most [`RECV_IO_SLICES`] slices of the receive
    /// queue and returns how many of them it took (e.g. what `writev(2)`
    /// accepted); only those are consumed. `write` is called once when
    /// bytes are readable, else not at all: `Ok(0)` without a call is end
    /// of stream.
    pub fn recv_with(
        &mut self,
        now: Instant,
        max: usize,
        write: impl FnOnce(&[IoSlice<'_>]) -> usize,
    ) -> Result<usize, RecvError> {
        self.read_with(now, max, false, |buf, _, limit| {
            let mut slices = [IoSlice::new(&[]); RECV_IO_SLICES];
            let (count, bytes) = buf.readable_io_slices(limit, &mut slices);
            let taken = write(&slices[..count]).min(bytes);
            buf.skip(taken)
        })
    }

    /// A read of up to `len` bytes: `take(buffer, skip, limit)` moves or
    /// copies at most `limit` readable bytes (after `skip` when peeking;
    /// otherwise skipped bytes are already gone) and returns the count.
    fn read_with(
        &mut self,
        now: Instant,
        len: usize,
        peek: bool,
        take: impl FnOnce(&mut RecvBuffer, usize, usize) -> usize,
    ) -> Result<usize, RecvError> {
        // The order is Linux's (tcp_recvmsg): bytes that arrived are read
        // first, even after a reset or a timeout; then end of stream, once
        // the FIN is in; only then the pending error. (RFC 9293 §3.10.7.4
        // would flush the queues on RST, a "should"; Linux keeps them, and
        // a program reads the reply its peer sent before resetting.)
        //
        // A read never crosses the urgent mark; at the mark it skips the
        // urgent byte unless SO_OOBINLINE (see `urgent`).
        let (skip, limit) = self.urgent_read_plan(len);
        if self.recv_buf.readable() > skip && limit > 0 {
            if peek {
                return Ok(take(&mut self.recv_buf, skip, limit));
            }
            self.recv_buf.skip(skip);
            let n = take(&mut self.recv_buf, 0, limit);
            self.bytes_read = self.bytes_read.wrapping_add((skip + n) as u32);
            self.urgent_after_read();
            self.rcv_space_adjust(now);
            self.window_update_after_read();
            return Ok(n);
        }
        if skip > 0 && !peek && self.recv_buf.readable() > 0 {
            // Only the urgent byte is here: a read steps over it (and
            // forgets the mark) and waits for what follows, as Linux.
            self.recv_buf.skip(skip);
            self.bytes_read = self.bytes_read.wrapping_add(skip as u32);
            self.urgent_after_read();
        }
        if self.fin_received {
            return Ok(0);
        }
        if let Some(e) = self.pending_error.take() {
            return Err(RecvError::Failed(e));
        }
        if len == 0 || self.read_shut || self.state == TcpState::Closed {
            return Ok(0);
        }
        Err(RecvError::WouldBlock)
    }

    /// The application's reads opened the receive window: advertise it at
    /// once if it grew by at least min(RCV.BUFF/2, MSS) (RFC 9293
    /// §3.8.6.2.2, RFC 1122 §4.2.3.3) and the peer sees less than half the
    /// buffer (Linux's refinement: a wide-open window needs no extra ACK;
    /// the increase rides on the next ACK).
    ///
    /// An ACK owed for two full-sized segments and held because the
    /// window did not move (see [`AckDue::Owed`]) goes now, as Linux's
    /// `tcp_cleanup_rbuf` sends it when the reader reads ("once-per-two-
    /// segments ACK was not sent by tcp_input.c").
    fn window_update_after_read(&mut self) {
        if !matches!(
            self.state,
            TcpState::Established | TcpState::FinWait1 | TcpState::FinWait2
        ) {
            return;
        }
        if matches!(self.ack_due, AckDue::Owed(_)) {
            self.ack_now();
            return;
        }
        let advertised = self.rcv_wnd();
        let threshold = self.sws_threshold();
        let free = self.recv_buf.window();
        if free >= advertised + threshold && advertised < self.recv_buf.capacity() / 2 {
            self.ack_now();
        }
    }

    /// Receive-buffer autotuning, as Linux's `tcp_rcv_space_adjust` (DRS):
    /// once per receiver RTT, if the application read more than in the
    /// previous one, size the buffer for twice that plus sixteen segments,
    /// plus twice the growth (the sender may still be in slow start), up to
    /// `rmem_max`. SO_RCVBUF set by the user fixes the size (Linux's
    /// SOCK_RCVBUF_LOCK). Our buffer counts payload only, so the sizes are
    /// Linux's before its per-skb overhead factor.
    fn rcv_space_adjust(&mut self, now: Instant) {
        // Linux grows no buffer under memory pressure (tcp_rcv_space_adjust
        // via tcp_under_memory_pressure / sk_rmem_schedule).
        if self.options.recv_buffer_locked
            || self.rcvq_space() == 0
            || self.memory_level() > MemoryLevel::Normal
        {
            return;
        }
        let srtt = self.rtt.has_sample().then(|| self.rtt.srtt());
        let Some(rtt) = self.rcv_rtt.get().or(srtt) else {
            return;
        };
        if now - self.rcvq_time < rtt.max(Duration::from_millis(1)) {
            return;
        }
        let copied = self.bytes_read.wrapping_sub(self.rcvq_read) as usize;
        if copied > self.rcvq_space() {
            let mut rcvwin = 2 * copied + 16 * self.adv_mss();
            let grow = rcvwin.saturating_mul(copied - self.rcvq_space()) / self.rcvq_space();
            rcvwin = rcvwin.saturating_add(2 * grow);
            let target = rcvwin.min(self.config.rmem_max);
            if target > self.recv_buf.capacity() {
                self.recv_buf.set_capacity(target);
                self.options.recv_buffer = target;
            }
            self.rcvq_space = narrow(copied);
        }
        self.rcvq_read = self.bytes_read;
        self.rcvq_time = now;
    }

    /// A receiver RTT sample from an echoed timestamp on arriving data
    /// (Linux's `tcp_rcv_rtt_measure_ts`): the peer echoes the TSval of
    /// our latest ACK, so now - TSecr is about one round trip.
    pub(super) fn rcv_rtt_sample(&mut self, now: Instant, tsecr: u32) {
        let elapsed = self.ts_now(now).wrapping_sub(tsecr);
        if tsecr == 0 || (elapsed as i32) < 0 {
            return;
        }
        let sample = Duration::from_millis(u64::from(elapsed));
        // An EWMA with gain 1/8, like SRTT (RFC 6298 §2.3).
        self.rcv_rtt = OptionDuration::new(Some(match self.rcv_rtt.get() {
            Some(rtt) => (rtt * 7 + sample) / 8,
            None => sample,
        }));
    }

    /// Send-buffer autotuning with Linux's `tcp_sndbuf_expand` numbers:
    /// two windows (CUBIC's fast-recovery cushion) of at least ten
    /// segments, each segment counted as Linux's worst-case memory per MSS
    /// (MSS plus header room and shared info, rounded up to a power of two,
    /// plus the skb: 4352 bytes for a 1460 MSS), up to `wmem_max`, unless
    /// the user set SO_SNDBUF. Linux charges GSO buffers about their
    /// payload, so for bulk writes this is also about what it lets an
    /// application queue. It only grows.
    pub(super) fn expand_send_buffer(&mut self) {
        /// Linux's MAX_TCP_HEADER and SKB_DATA_ALIGN(skb_shared_info) (x86-64).
        const HEADER_ROOM: usize = 320 + 320;
        /// SKB_DATA_ALIGN(sizeof(struct sk_buff)).
        const SKB: usize = 256;
        /// TCP_INIT_CWND.
        const MIN_SEGMENTS: usize = 10;
        // Linux's tcp_should_expand_sndbuf: not under memory pressure.
        if self.options.send_buffer_locked || self.memory_level() > MemoryLevel::Normal {
            return;
        }
        let per_mss = (self.path_mss() + HEADER_ROOM).next_power_of_two() + SKB;
        let segments = (self.cc.cwnd() / self.send_mss().max(1)).max(MIN_SEGMENTS);
        let target = (2 * segments * per_mss)
            .max(crate::config::TCP_WMEM[1])
            .min(self.config.wmem_max);
        if target > self.send_buf.capacity() {
            self.send_buf.set_capacity(target);
            self.options.send_buffer = target;
        }
    }

    /// Receiver SWS threshold: min(RCV.BUFF/2, MSS) (RFC 9293 §3.8.6.2.2).
    fn sws_threshold(&self) -> usize {
        (self.recv_buf.capacity() / 2).min(self.adv_mss()).max(1)
    }

    /// shutdown(2): `Write` sends FIN after queued data; `Read` discards
    /// further data.
    pub fn shutdown(&mut self, now: Instant, how: Shutdown) {
        let _ = now;
        if matches!(how, Shutdown::Read | Shutdown::Both) && !self.read_shut {
            self.read_shut = true;
            self.discard_readable();
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) && !self.write_shut {
            self.write_shut = true;
            // RFC 9293 §3.10.4 CLOSE, per state.
            match self.state {
                // "Delete the TCB": nothing was synchronized.
                TcpState::SynSent => self.enter_closed(None),
                // FIN once ESTABLISHED is reached (see `establish`).
                TcpState::SynReceived => self.fin_queued = true,
                TcpState::Established => {
                    self.fin_queued = true;
                    self.set_state(TcpState::FinWait1);
                }
                TcpState::CloseWait => {
                    self.fin_queued = true;
                    self.set_state(TcpState::LastAck);
                }
                // Already closing: "error: connection closing".
                _ => {}
            }
        }
    }

    /// close(2) by the user (RFC 9293 §3.10.4): FIN after queued data, or RST
    /// at once when unread data remains or linger is zero (as Linux).
    pub fn close(&mut self, now: Instant) {
        self.user_closed = true;
        let unread = self.recv_buf.readable() > 0;
        let linger_zero = self.options.linger == Some(OptionTime::ZERO);
        if self.state == TcpState::Closed || self.state == TcpState::Listen {
            return;
        }
        if (unread || linger_zero) && self.state != TcpState::SynSent {
            // RFC 2525 §2.17 / Linux tcp_close: data the application never
            // read is lost; tell the peer with RST instead of a FIN.
            if self.abort_sends_rst() {
                self.queue_rst(self.snd_nxt, None);
            }
            self.enter_closed(None);
            return;
        }
        self.shutdown(now, Shutdown::Both);
        // A closed socket in FIN-WAIT-2 waits for the peer's FIN only so long.
        if self.state == TcpState::FinWait2 {
            self.close_deadline = Some(now + self.fin_wait_2_timeout());
        }
    }

    /// ABORT (RFC 9293 §3.10.5): RST if synchronized, then CLOSED; `why` becomes the pending error.
    pub fn abort(&mut self, now: Instant, why: ConnError) {
        let _ = now;
        if self.state == TcpState::Closed {
            return;
        }
        if self.abort_sends_rst() {
            self.queue_rst(self.snd_nxt, None);
        }
        self.enter_closed(Some(why));
    }

    pub fn state(&self) -> TcpState {
        self.state
    }

    /// An orphan: closed by its user (no handle left) but still alive on
    /// the wire, holding data or a FIN to deliver (FIN-WAIT-1/2, CLOSING,
    /// LAST-ACK). TIME-WAIT and CLOSED connections are not orphans.
    pub fn is_orphan(&self) -> bool {
        self.user_closed && !matches!(self.state, TcpState::Closed | TcpState::TimeWait)
    }

    /// Bytes the connection holds in its buffers (queued to send or
    /// retransmit, received and unread, and out-of-order data held beyond a
    /// hole), for memory accounting.
    pub fn buffered_bytes(&self) -> usize {
        self.send_buf.len() + self.recv_buf.held_len()
    }

    /// The memory level in force: the stricter of the socket's and the stack's.
    pub fn memory_level(&self) -> MemoryLevel {
        self.memory_user.max(self.memory_global)
    }

    /// Sets the socket's level (`user`) and/or the stack-wide one
    /// (`global`). When the level in force relaxes and the window may open
    /// by the SWS threshold, a window update goes out at once (the peer may
    /// sit on a zero window, probing only at its persist interval).
    pub fn set_memory_level(&mut self, user: Option<MemoryLevel>, global: Option<MemoryLevel>) {
        let before = self.memory_level();
        if let Some(level) = user {
            self.memory_user = level;
        }
        if let Some(level) = global {
            self.memory_global = level;
        }
        if self.memory_level() < before {
            self.window_update_after_read();
        }
    }

    /// Data segments dropped at `MemoryLevel::Exhausted` since the last call.
    pub fn take_memory_drops(&mut self) -> u64 {
        u64::from(std::mem::take(&mut self.memory_drops))
    }

    /// The pending error, without clearing it (see [`Connection::take_error`]).
    pub fn peek_error(&self) -> Option<ConnError> {
        self.pending_error
    }

    /// True once CLOSED with nothing left to send: the stack may forget it.
    pub fn is_finished(&self) -> bool {
        self.state == TcpState::Closed && self.pending_rst.is_none()
    }

    pub fn local(&self) -> SocketAddr {
        SocketAddr::new(self.local_ip, self.local_port)
    }

    pub fn remote(&self) -> SocketAddr {
        SocketAddr::new(self.remote_ip, self.remote_port)
    }

    /// Whether this TIME-WAIT connection may give way to a new incarnation
    /// opened by `syn` (RFC 9293 §3.6.1 / RFC 1122 §4.2.2.13: the new SYN's
    /// sequence number is above RCV.NXT; RFC 6191: or its timestamp is newer).
    /// The stack asks before routing a SYN to a listener.
    pub fn time_wait_accepts_syn(&self, syn: &TcpRepr<'_>) -> bool {
        if self.state != TcpState::TimeWait || !syn.flags.syn() || syn.flags.ack() {
            return false;
        }
        match (self.ts_enabled, syn.options.timestamp) {
            (true, Some((tsval, _))) => tsval.wrapping_sub(self.ts_recent) as i32 > 0,
            _ => syn.seq.gt(self.rcv_nxt),
        }
    }

    /// Current readiness (poll bits), following Linux's tcp_poll.
    pub fn readiness(&self) -> Readiness {
        let mut ready = Readiness::empty();
        let connecting = matches!(self.state, TcpState::SynSent | TcpState::SynReceived);
        let closed = self.state == TcpState::Closed;
        let read_done = self.fin_received || self.read_shut;
        // SO_RCVLOWAT: readable once that many bytes are in (Linux's tcp_poll).
        let enough = self.readable_for_poll() >= self.options.recv_lowat.max(1);
        if enough || read_done || self.pending_error.is_some() || closed {
            ready |= Readiness::IN;
        }
        if read_done {
            ready |= Readiness::RDHUP;
        }
        if self.urgent_pending() {
            ready |= Readiness::PRI;
        }
        if self.pending_error.is_some() {
            ready |= Readiness::ERR;
        }
        if closed || (self.write_shut && read_done) {
            ready |= Readiness::HUP;
        }
        if !connecting || closed {
            // Writable: EPIPE/error is ready to be reported, or the send buffer
            // has at least a third free (Linux's sk_stream_wspace >= queued/2).
            if self.write_shut
                || closed
                || (self.send_space()
                    && self.below_notsent_lowat()
                    && self.memory_level() < MemoryLevel::Full)
            {
                ready |= Readiness::OUT;
            }
        }
        ready
    }

    /// Send-buffer space for writability (Linux's sk_stream_wspace >= queued/2).
    fn send_space(&self) -> bool {
        self.send_buf.free() >= self.send_buf.capacity() / 3
    }

    /// TCP_NOTSENT_LOWAT: fewer unsent bytes queued than the mark (Linux's
    /// tcp_stream_memory_free).
    fn below_notsent_lowat(&self) -> bool {
        self.options
            .notsent_lowat
            .is_none_or(|lowat| self.data_end().since(self.snd_nxt) < lowat as usize)
    }

    /// Takes the pending error (SO_ERROR semantics).
    pub fn take_error(&mut self) -> Option<ConnError> {
        self.pending_error.take()
    }

    /// Records `note` for a trace that follows this connection, and logs it
    /// (a `tracing` debug event; nearly free when disabled).
    fn note(&mut self, note: Note) {
        crate::trace::emit_log(note);
        if let Some(notes) = &mut self.notes {
            notes.push(note);
        }
    }

    /// Whether a trace follows this connection (its notes are then kept for
    /// [`Connection::drain_notes`]).
    pub fn set_traced(&mut self, traced: bool) {
        if !traced {
            self.notes = None;
        } else if self.notes.is_none() {
            self.notes = Some(Box::default());
        }
    }

    /// Appends the notes since the last call, oldest first.
    pub fn drain_notes(&mut self, out: &mut Vec<Note>) {
        if let Some(notes) = &mut self.notes {
            out.append(notes);
        }
    }

    /// The initial send sequence number and, once the peer's SYN was seen,
    /// the initial receive sequence number (for traces: relative numbers).
    pub fn initial_sequence_numbers(&self) -> (SeqNum, Option<SeqNum>) {
        let synchronized_or_syn_seen = self.state != TcpState::SynSent;
        (self.iss, synchronized_or_syn_seen.then_some(self.irs))
    }

    /// Appends the state transitions since the last call, oldest first.
    pub fn drain_state_changes(&mut self, out: &mut Vec<(TcpState, TcpState)>) {
        // A connection changes state a handful of times in its life: it
        // keeps no buffer between them (see [`StateChanges`]).
        if let Some(changes) = self.state_changes.0.take() {
            out.extend_from_slice(&changes);
        }
    }

    pub fn options(&self) -> &SocketOptions {
        &self.options
    }

    /// Applies an option; buffer sizes and timers take effect at once.
    pub fn set_option(&mut self, now: Instant, option: SockOption) -> Result<(), SocketError> {
        match option {
            SockOption::ReuseAddr(v) => self.options.reuse_addr = v,
            SockOption::NoDelay(v) => self.options.nodelay = v,
            SockOption::KeepAlive(v) => {
                self.options.keepalive = v;
                self.keepalive_probes = 0;
                self.arm_keepalive(now);
            }
            SockOption::KeepIdle(d) | SockOption::KeepInterval(d) if d.is_zero() => {
                return Err(SocketError::InvalidValue);
            }
            SockOption::KeepIdle(d) => {
                self.options.keep_idle = d.into();
                self.arm_keepalive(now);
            }
            SockOption::KeepInterval(d) => self.options.keep_interval = d.into(),
            SockOption::KeepCount(0) => return Err(SocketError::InvalidValue),
            SockOption::KeepCount(n) => self.options.keep_count = n,
            SockOption::RecvBuffer(0) | SockOption::SendBuffer(0) => {
                return Err(SocketError::InvalidValue);
            }
            SockOption::RecvBuffer(n) => {
                self.options.recv_buffer = n;
                self.options.recv_buffer_locked = true;
                self.recv_buf.set_capacity(n);
            }
            SockOption::SendBuffer(n) => {
                self.options.send_buffer = n;
                self.options.send_buffer_locked = true;
                self.send_buf.set_capacity(n);
            }
            SockOption::Linger(l) => self.options.linger = l.map(OptionTime::from),
            SockOption::Congestion(alg) => {
                if alg != self.options.congestion {
                    self.options.congestion = alg;
                    self.cc = Controller::new(alg, self.send_mss());
                }
            }
            SockOption::SynCount(n) => self.options.syn_retries = n,
            SockOption::UserTimeout(t) => self.options.user_timeout = t.map(OptionTime::from),
            SockOption::Cork(v) => {
                self.options.cork = v;
                // Uncorking pushes what was held (Linux tcp_push_pending_frames).
                self.set_occasional(v.then(|| now + CORK_TIMEOUT), |o| &mut o.cork_deadline);
                self.cork_released = false;
            }
            SockOption::NotSentLowat(n) => self.options.notsent_lowat = n,
            SockOption::RecvLowat(n) => self.options.recv_lowat = n,
            // The stack refuses it on a connected socket (EINVAL, as Linux
            // once bound); nothing changes here.
            SockOption::V6Only(_) => return Err(SocketError::InvalidValue),
            SockOption::QuickAck(on) => {
                // Linux: quick-ACK mode on (and an ACK owed goes at once),
                // or back to delayed ACKs; not a lasting setting.
                if on {
                    self.quick_acks = QUICK_ACK_SEGMENTS;
                    if matches!(self.ack_due, AckDue::By(_) | AckDue::Owed(_)) {
                        self.ack_now();
                    }
                } else {
                    self.quick_acks = 0;
                }
            }
            // Linux keeps user_mss for later; the MSS of a connection is
            // fixed at the handshake (only PMTU discovery lowers it).
            SockOption::MaxSegment(n) => self.options.max_segment = (n != 0).then_some(n),
            SockOption::DeferAccept(d) => self.options.defer_accept = d.map(OptionTime::from),
            SockOption::OobInline(v) => self.options.oob_inline = v,
            SockOption::IpTos(tos) => self.options.ip_tos = tos,
            SockOption::IpTtl(ttl) => self.options.ip_ttl = ttl,
            SockOption::MtuDiscover(mode) => self.options.pmtu_discovery = mode,
            SockOption::Error(_) | SockOption::AtMark(_) => {
                return Err(SocketError::UnsupportedOption);
            }
        }
        Ok(())
    }

    /// TCP_DEFER_ACCEPT holds this passive open off the accept queue: it
    /// is established, the peer has sent neither data nor FIN, and the
    /// listener's time has not run out. Linux keeps such a connection a
    /// request socket (it drops the handshake's bare ACK and resends the
    /// SYN,ACK at the end of the period); tcpd completes the handshake and
    /// only delays the accept, which is what the application sees.
    pub fn accept_deferred(&self) -> bool {
        self.occasional().defer_accept_until.is_some()
            && self.state == TcpState::Established
            && self.recv_buf.readable() == 0
            && !self.fin_received
    }

    /// Whether quick-ACK mode is on (TCP_QUICKACK's reading).
    pub fn quick_ack(&self) -> bool {
        self.quick_acks > 0
    }

    /// TCP_INFO (Linux's `tcp_info`), as of `now`.
    pub fn tcp_info(&self, now: Instant) -> TcpInfo {
        let us = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        let ms_since = |t: Option<Instant>| {
            t.map_or(0, |t| {
                u32::try_from((now - t).as_millis()).unwrap_or(u32::MAX)
            })
        };
        let mss = self.send_mss().max(1);
        let segs = |bytes: usize| u32::try_from(bytes.div_ceil(mss)).unwrap_or(u32::MAX);
        let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let small = |n: u32| u8::try_from(n).unwrap_or(u8::MAX);
        let mut options = TcpInfoOptions::empty();
        options.set(TcpInfoOptions::TIMESTAMPS, self.ts_enabled);
        options.set(TcpInfoOptions::SACK, self.sack_enabled);
        options.set(TcpInfoOptions::WSCALE, self.ws_enabled);
        let ca_state = if self.rto_recover.is_some() {
            CaState::Loss
        } else if self.in_recovery {
            CaState::Recovery
        } else if self.flight().sent.sacked_bytes() > 0 || self.dup_acks > 0 {
            CaState::Disorder
        } else {
            CaState::Open
        };
        let srtt = self.rtt.srtt();
        let flight = self.snd_nxt.since(self.snd_una);
        let retrans_in_flight: usize = self.flight().sent.retransmitted_in_flight();
        let ssthresh = self.cc.ssthresh();
        TcpInfo {
            state: self.state,
            ca_state,
            retransmits: small(self.retries),
            probes: small(self.persist_probes.max(self.keepalive_probes)),
            backoff: small(self.rtt.backoffs()),
            options,
            snd_wscale: if self.ws_enabled { self.snd_wscale } else { 0 },
            rcv_wscale: if self.ws_enabled { self.rcv_wscale } else { 0 },
            rto_us: us(self.rtt.rto()),
            ato_us: us(self.config.delayed_ack),
            snd_mss: count(self.send_mss() as u64),
            rcv_mss: count(self.rcv_mss() as u64),
            unacked: segs(flight),
            sacked: segs(self.flight().sent.sacked_bytes()),
            lost: segs(self.flight().sent.lost_bytes()),
            retrans: segs(retrans_in_flight),
            last_data_sent_ms: ms_since(self.last_data_sent),
            last_data_recv_ms: ms_since(self.last_data_recv),
            last_ack_recv_ms: ms_since(self.last_ack_recv),
            pmtu: count((self.path_mss() + ip_tcp_headers(&self.remote())) as u64),
            rcv_ssthresh: count(self.recv_buf.capacity() as u64),
            rtt_us: us(srtt),
            rttvar_us: us(self.rtt.rttvar()),
            snd_ssthresh: if ssthresh == usize::MAX {
                // Linux reports TCP_INFINITE_SSTHRESH.
                0x7fff_ffff
            } else {
                segs(ssthresh)
            },
            snd_cwnd: segs(self.effective_cwnd()),
            advmss: count(self.adv_mss() as u64),
            reordering: 3,
            rcv_rtt_us: self.rcv_rtt.get().map_or(0, us),
            rcv_space: count(self.rcvq_space() as u64),
            total_retrans: self.counters.retransmits,
            bytes_acked: self.bytes_acked,
            bytes_received: self.counters.bytes_received,
            bytes_sent: self.counters.bytes_sent,
            segs_out: self.counters.segments_out,
            segs_in: self.counters.segments_in,
            notsent_bytes: count(self.data_end().since(self.snd_nxt) as u64),
            min_rtt_us: self.flight().rack.min_rtt.map_or(0, us),
            delivery_rate: if srtt.is_zero() {
                0
            } else {
                (self.effective_cwnd().min(flight.max(mss)) as f64 / srtt.as_secs_f64()) as u64
            },
            dsack_dups: count(self.flight().rack.dsacks),
            snd_wnd: count(self.snd_wnd() as u64),
            rcv_wnd: count(self.rcv_wnd() as u64),
        }
    }

    /// Undos so far, and how many of them undid a timeout (the stack's
    /// `cwnd_undos` / `spurious_rtos`; cheaper than [`Connection::stats`]).
    pub fn undo_counts(&self) -> (u32, u32) {
        (self.counters.undos, self.counters.spurious_rtos)
    }

    pub fn stats(&self) -> ConnectionStats {
        let c = &self.counters;
        ConnectionStats {
            recv_queue: self.recv_buf.readable(),
            send_queue: self.send_buf.len(),
            srtt: self.rtt.srtt(),
            rttvar: self.rtt.rttvar(),
            rto: self.rtt.rto(),
            cwnd: self.effective_cwnd(),
            recovery: RecoveryInfo {
                tlp_probes: self.flight().tlp.probes,
                tlp_recoveries: self.flight().tlp.recoveries,
                dsacks_received: self.flight().rack.dsacks,
                reorder_window: self.flight().rack.reo_wnd(
                    self.in_recovery,
                    self.flight().sent.sacked_segments(),
                    self.rtt.srtt(),
                ),
                in_recovery: self.in_recovery,
                unacked: self.snd_nxt.since(self.snd_una),
                sacked: self.flight().sent.sacked_bytes(),
                lost: self.flight().sent.lost_bytes(),
                recv_buffer: self.recv_buf.capacity(),
                send_buffer: self.send_buf.capacity(),
                rto_timeouts: u64::from(c.rto_timeouts),
                fast_recoveries: u64::from(c.fast_recoveries),
                undos: u64::from(c.undos),
                spurious_rtos: u64::from(c.spurious_rtos),
            },
            ssthresh: self.cc.ssthresh(),
            mss: u16::try_from(self.send_mss()).unwrap_or(u16::MAX),
            snd_wnd: self.snd_wnd(),
            rcv_wnd: self.rcv_wnd(),
            retransmits: u64::from(c.retransmits),
            bytes_sent: c.bytes_sent,
            bytes_received: c.bytes_received,
            segments_in: u64::from(c.segments_in),
            segments_out: u64::from(c.segments_out),
            segments_discarded: u64::from(c.segments_discarded),
        }
    }
}
