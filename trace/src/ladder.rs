//! The ladder diagram: a connection drawn as the seed draws it (RFC 9293
//! §3.5's figures), one row per segment, tcpd's state on the left, the
//! peer's inferred state on the right:
//!
//! ```text
//!         tcpd 10.0.0.1:40000                            peer 10.0.0.2:80
//!     1.  CLOSED                                                LISTEN
//!     2.  SYN-SENT    --> <SEQ=100><CTL=SYN>                --> SYN-RECEIVED
//!     3.  ESTABLISHED <-- <SEQ=300><ACK=101><CTL=SYN,ACK>   <-- SYN-RECEIVED
//! ```
//!
//! Columns: a prefix of 8 (the seed's row number, or the time in seconds
//! since the first event), tcpd's state (11 + 1), the arrow (`-->` out, `<--`
//! in; `==>` a retransmission by tcpd; `--X`/`X--` a packet the link
//! impairer dropped), the segment `<SEQ=..><ACK=..><CTL=..><DATA=len>` in a
//! field that is 33 wide at 80 columns and grows with the width, the arrow
//! again, and the peer's state. Window (in bytes, scaled) and options (`<WIN=..>`, `<MSS=..>`,
//! `<WS=..>`, `<SACK-OK>`, `<SACK=l-r,..>`, `<TS=val,ecr>` on SYNs) follow
//! the segment when they fit, else on a continuation row below it. Marks
//! (`[rtx]`, `[dup]`, `[delayed 5ms]`, drops by tcpd with their reason...)
//! end the row or, when they do not fit, get a row of their own; timer
//! fires, loss recovery and state changes without a segment (the seed's
//! `(Close)`, `(2 MSL)`) are rows of their own.
//!
//! Invariants: a row is emitted once its segment's consequences are known
//! (the state changes and drops that follow an arriving segment belong to
//! its row), so rows come out one event late; [`Ladder::finish`] flushes.
//! Sequence numbers are relative to each side's ISN unless `absolute`.

use crate::event::{Dir, Event, Kind, Segment};
use crate::peer::PeerModel;
use anstyle::{AnsiColor, Style};
use std::fmt::Write as _;
use std::net::SocketAddr;
use tcpd_stack::TcpState;

/// The default terminal width.
pub const DEFAULT_WIDTH: usize = 80;
/// Width of the row prefix (row number or time).
const PREFIX: usize = 8;
/// tcpd's state column, with its trailing space.
const LEFT: usize = 12;
/// The segment field at 80 columns (the seed's).
const SEGMENT_AT_80: usize = 33;

/// How to draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LadderOptions {
    /// Terminal width in columns (at least 60 is useful).
    pub width: usize,
    /// Raw sequence numbers instead of numbers relative to each ISN.
    pub absolute: bool,
    /// Times since the first event instead of the seed's row numbers.
    pub times: bool,
    /// Only what the seed shows: no window, options or link marks.
    pub brief: bool,
    /// ANSI colours.
    pub color: bool,
    /// Timestamps option on every segment, not only on SYNs.
    pub verbose: bool,
}

impl Default for LadderOptions {
    fn default() -> Self {
        LadderOptions {
            width: DEFAULT_WIDTH,
            absolute: false,
            times: true,
            brief: false,
            color: false,
            verbose: false,
        }
    }
}

/// A segment row waiting for its consequences.
#[derive(Debug)]
struct Pending {
    t_us: u64,
    seg: Segment,
    /// Number the row gets (0: continuation of a numbered row above).
    numbered: bool,
    marks: Vec<String>,
    dropped_by_link: bool,
    /// tcpd discarded it (a drop note followed): it tells nothing about the
    /// peer's state (it may be old, or forged).
    dropped_by_tcpd: bool,
}

/// The renderer of one connection's ladder. Feed it events in order with
/// [`Ladder::push`]; it returns the finished rows.
#[derive(Debug)]
pub struct Ladder {
    options: LadderOptions,
    conn: Option<(SocketAddr, SocketAddr)>,
    ours: Option<TcpState>,
    peer: Option<PeerModel>,
    iss: Option<u32>,
    irs: Option<u32>,
    t0: Option<u64>,
    row: usize,
    pending: Option<Pending>,
    /// Marks for an arriving segment the link reported before the stack saw it.
    inbound_marks: Vec<(Segment, Vec<String>)>,
    /// A mark for the next segment tcpd sends (e.g. a challenge ACK).
    next_out_mark: Option<String>,
    /// The segment that opened a "(Close)" row: the next row is its continuation.
    continuation: bool,
    last_window: [Option<u16>; 2],
    /// Window-scale shifts offered in each direction's SYN (in, out);
    /// windows are shown in bytes once both SYNs offered one (RFC 7323 §2.2).
    window_scale: [Option<u8>; 2],
}

impl Ladder {
    pub fn new(options: LadderOptions) -> Ladder {
        Ladder {
            options,
            conn: None,
            ours: None,
            peer: None,
            iss: None,
            irs: None,
            t0: None,
            row: 0,
            pending: None,
            inbound_marks: Vec::new(),
            next_out_mark: None,
            continuation: false,
            last_window: [None; 2],
            window_scale: [None; 2],
        }
    }

    /// The connection being drawn (the first one seen; others are ignored).
    pub fn connection(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.conn
    }

    /// tcpd's current state, once known.
    pub fn state(&self) -> Option<TcpState> {
        self.ours
    }

    fn segment_width(&self) -> usize {
        SEGMENT_AT_80.max(
            self.options
                .width
                .saturating_sub(DEFAULT_WIDTH - SEGMENT_AT_80),
        )
    }

    /// Column where the peer's state starts.
    fn right_column(&self) -> usize {
        PREFIX + LEFT + 4 + self.segment_width() + 5
    }

    fn paint(&self, style: Style, text: &str) -> String {
        if self.options.color {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_string()
        }
    }

    fn header(&self, local: SocketAddr, remote: SocketAddr) -> String {
        let left = format!("tcpd {local}");
        let mut right = format!("peer {remote}");
        let inferred = " (inferred)";
        let column = self.right_column();
        if column + right.len() + inferred.len() <= self.options.width {
            right.push_str(inferred);
        }
        let start = column.min(self.options.width.saturating_sub(right.len()));
        let mut line = format!("{}{left}", " ".repeat(PREFIX));
        let pad = start.saturating_sub(line.len()).max(2);
        line.push_str(&" ".repeat(pad));
        line.push_str(&right);
        let mut header = self.paint(Style::new().bold(), &line);
        if !right.ends_with(inferred) {
            // The peer's states are tcpd's inference: say so under its name.
            let under = start.min(self.options.width.saturating_sub(inferred.len()));
            header.push('\n');
            header.push_str(&" ".repeat(under));
            header.push_str(inferred.trim_start());
        }
        header
    }

    /// The row prefix: a row number, the time, or blanks for a continuation.
    fn prefix(&mut self, t_us: u64, numbered: bool) -> String {
        if self.options.times {
            let t0 = *self.t0.get_or_insert(t_us);
            let secs = t_us.saturating_sub(t0) as f64 / 1e6;
            if numbered {
                format!("{secs:>7.3} ")
            } else {
                " ".repeat(PREFIX)
            }
        } else if numbered {
            self.row += 1;
            format!("{:>5}.  ", self.row)
        } else {
            " ".repeat(PREFIX)
        }
    }

    fn state_name(state: Option<TcpState>) -> &'static str {
        state.map_or("?", TcpState::name)
    }

    /// A row with tcpd's state on the left and, optionally, the peer's on the right.
    fn state_row(&mut self, t_us: u64, ours: Option<TcpState>, peer: Option<TcpState>) -> String {
        let mut line = self.prefix(t_us, true);
        line.push_str(&self.paint(Style::new().bold(), Self::state_name(ours)));
        if let Some(peer) = peer {
            let visible = PREFIX + Self::state_name(ours).len();
            let pad = self.right_column().saturating_sub(visible);
            line.push_str(&" ".repeat(pad));
            line.push_str(&self.paint(Style::new().dimmed(), peer.name()));
        }
        line
    }

    /// A note row: indented under the segment column.
    fn note_row(&mut self, t_us: u64, text: &str, style: Style) -> String {
        let mut line = self.prefix(t_us, true);
        line.push_str(&" ".repeat(LEFT + 4));
        line.push_str(&self.paint(style, &format!("** {text}")));
        line
    }

    /// Relative (or absolute) numbers: our sequence space is based at the
    /// ISS, the peer's at the IRS.
    fn number(&self, value: u32, ours: bool) -> u32 {
        if self.options.absolute {
            return value;
        }
        let base = if ours { self.iss } else { self.irs };
        base.map_or(value, |b| value.wrapping_sub(b))
    }

    /// `<SEQ=..><ACK=..><CTL=..><DATA=..>` and the extras worth showing.
    fn segment_text(&mut self, seg: &Segment) -> (String, Vec<String>) {
        let out = seg.dir == Dir::Out;
        let mut core = format!("<SEQ={}>", self.number(seg.seq, out));
        if let Some(ack) = seg.ack {
            let _ = write!(core, "<ACK={}>", self.number(ack, !out));
        }
        let _ = write!(core, "<CTL={}>", seg.flags);
        if seg.len > 0 {
            let _ = write!(core, "<DATA={}>", seg.len);
        }
        let mut extras = Vec::new();
        if self.options.brief {
            return (core, extras);
        }
        let slot = usize::from(out);
        let window_changed = self.last_window[slot] != Some(seg.win);
        self.last_window[slot] = Some(seg.win);
        let syn = seg.tcp_flags().syn();
        if syn {
            self.window_scale[slot] = seg.ws;
        }
        if syn || window_changed || seg.win == 0 {
            // A SYN's window is never scaled; later ones are, once agreed.
            let shift = match self.window_scale {
                [Some(_), Some(_)] if !syn => self.window_scale[slot].unwrap_or(0).min(14),
                _ => 0,
            };
            extras.push(format!("<WIN={}>", u32::from(seg.win) << shift));
        }
        if let Some(mss) = seg.mss {
            extras.push(format!("<MSS={mss}>"));
        }
        if let Some(ws) = seg.ws {
            extras.push(format!("<WS={ws}>"));
        }
        if seg.sack_ok {
            extras.push("<SACK-OK>".into());
        }
        if !seg.sack.is_empty() {
            // SACK blocks name the receiver's view of the sender's space:
            // an arriving segment's blocks are in our sequence space.
            let blocks: Vec<String> = seg
                .sack
                .iter()
                .map(|[l, r]| format!("{}-{}", self.number(*l, !out), self.number(*r, !out)))
                .collect();
            extras.push(format!("<SACK={}>", blocks.join(",")));
        }
        if let Some([val, ecr]) = seg.ts
            && (syn || self.options.verbose)
        {
            extras.push(format!("<TS={val},{ecr}>"));
        }
        (core, extras)
    }

    fn ensure_started(&mut self, event: &Event) -> bool {
        match self.conn {
            None => {
                self.conn = Some((event.local, event.remote));
                true
            }
            Some(conn) => conn == (event.local, event.remote),
        }
    }

    /// The header, once, before the first row.
    fn header_once(&mut self, rows: &mut Vec<String>, event: &Event) {
        if self.ours.is_none() && self.peer.is_none() {
            rows.push(self.header(event.local, event.remote));
        }
    }

    /// Consumes one event; returns the rows it completed.
    pub fn push(&mut self, event: &Event) -> Vec<String> {
        let mut rows = Vec::new();
        if !self.ensure_started(event) {
            return rows;
        }
        match &event.kind {
            Kind::Start { state, iss, irs } => {
                self.flush(&mut rows);
                self.header_once(&mut rows, event);
                let ours = TcpState::from_name(state);
                self.iss.get_or_insert(*iss);
                if let Some(irs) = irs {
                    self.irs.get_or_insert(*irs);
                }
                let mut peer =
                    PeerModel::new(PeerModel::counterpart(ours.unwrap_or(TcpState::Closed)));
                if let Some(irs) = irs {
                    peer.set_peer_syn(*irs);
                }
                self.ours = ours;
                self.peer = Some(peer);
                let peer_state = self.peer.as_ref().map(|p| p.state);
                rows.push(self.state_row(event.t_us, ours, peer_state));
            }
            Kind::Segment(seg) => {
                self.flush(&mut rows);
                self.begin_segment(&mut rows, event, seg);
            }
            Kind::State { old, new } => self.on_state(&mut rows, event, old, new),
            Kind::Note {
                note,
                reason,
                backoff,
            } => self.on_note(&mut rows, event, note, reason.as_deref(), *backoff),
            Kind::Link {
                segment,
                dropped,
                duplicated,
                corrupted,
                reordered,
                delay_us,
            } => {
                let mut marks = Vec::new();
                if *duplicated {
                    marks.push("dup".to_string());
                }
                if *corrupted {
                    marks.push("corrupted".to_string());
                }
                if *reordered {
                    marks.push("reordered".to_string());
                }
                if *delay_us > 0 && !*dropped {
                    marks.push(format!("delayed {}", human_delay(*delay_us)));
                }
                if *dropped {
                    marks.push("dropped by impairer".to_string());
                }
                if !self.options.brief {
                    self.on_link(&mut rows, event, segment, marks, *dropped);
                }
            }
            Kind::Lost { count } => {
                self.flush(&mut rows);
                let text = format!("{count} events lost: the reader was too slow");
                rows.push(self.note_row(
                    event.t_us,
                    &text,
                    Style::new().fg_color(Some(AnsiColor::Red.into())),
                ));
            }
        }
        rows
    }

    /// Rows still held back (call at the end of a stream).
    pub fn finish(&mut self) -> Vec<String> {
        let mut rows = Vec::new();
        self.flush(&mut rows);
        rows
    }

    fn begin_segment(&mut self, rows: &mut Vec<String>, event: &Event, seg: &Segment) {
        if self.ours.is_none() {
            // The first event: a SYN tells who opened; anything else
            // (tracing a connection already running) starts from the model.
            self.header_once(rows, event);
            let flags = seg.tcp_flags();
            let ours = match (seg.dir, flags.syn(), flags.ack()) {
                (Dir::In, true, false) => TcpState::Listen,
                (Dir::Out, true, false) => TcpState::Closed,
                _ => TcpState::Established,
            };
            self.ours = Some(ours);
            self.peer = Some(PeerModel::new(PeerModel::counterpart(ours)));
            rows.push(self.state_row(event.t_us, Some(ours), Some(PeerModel::counterpart(ours))));
        }
        let flags = seg.tcp_flags();
        match seg.dir {
            Dir::Out if flags.syn() => {
                self.iss.get_or_insert(seg.seq);
            }
            Dir::In if flags.syn() => {
                self.irs.get_or_insert(seg.seq);
            }
            Dir::Out => {
                self.iss.get_or_insert(seg.seq.wrapping_sub(1));
            }
            Dir::In => {
                self.irs.get_or_insert(seg.seq.wrapping_sub(1));
            }
        }
        let mut marks = Vec::new();
        if seg.rtx {
            marks.push("rtx".to_string());
        }
        if seg.dir == Dir::Out
            && let Some(mark) = self.next_out_mark.take()
        {
            marks.push(mark);
        }
        if seg.dir == Dir::In
            && let Some(i) = self
                .inbound_marks
                .iter()
                .position(|(s, _)| same_segment(s, seg))
        {
            let (_, link_marks) = self.inbound_marks.remove(i);
            marks.extend(link_marks);
        }
        let numbered = !std::mem::take(&mut self.continuation);
        self.pending = Some(Pending {
            t_us: event.t_us,
            seg: seg.clone(),
            numbered,
            marks,
            dropped_by_link: false,
            dropped_by_tcpd: false,
        });
    }

    fn on_state(&mut self, rows: &mut Vec<String>, event: &Event, old: &str, new: &str) {
        let (old, new) = (TcpState::from_name(old), TcpState::from_name(new));
        if self.ours.is_none() {
            // The first event is tcpd's own open: the seed's row 1.
            self.header_once(rows, event);
            let first = old.unwrap_or(TcpState::Closed);
            self.ours = Some(first);
            self.peer = Some(PeerModel::new(PeerModel::counterpart(first)));
            rows.push(self.state_row(event.t_us, Some(first), Some(PeerModel::counterpart(first))));
            self.ours = new;
            return;
        }
        if self.pending.as_ref().is_some_and(|p| p.seg.dir == Dir::In) {
            // A consequence of the segment that just arrived: its row shows it.
            self.ours = new;
            return;
        }
        self.flush(rows);
        self.ours = new;
        match (old, new) {
            (
                Some(TcpState::Established | TcpState::CloseWait | TcpState::SynReceived),
                Some(TcpState::FinWait1 | TcpState::LastAck),
            ) => {
                let mut line = self.prefix(event.t_us, true);
                line.push_str(&self.paint(Style::new().italic(), "(Close)"));
                rows.push(line);
                self.continuation = true;
            }
            (Some(TcpState::TimeWait), Some(TcpState::Closed)) => {
                let mut line = self.prefix(event.t_us, true);
                line.push_str(&self.paint(Style::new().italic(), "(2 MSL)"));
                rows.push(line);
                let mut line = " ".repeat(PREFIX);
                line.push_str(&self.paint(Style::new().bold(), "CLOSED"));
                rows.push(line);
            }
            (Some(TcpState::Closed), Some(TcpState::SynSent)) => {}
            _ => {
                let text = format!(
                    "state {} -> {}",
                    Self::state_name(old),
                    Self::state_name(new)
                );
                rows.push(self.note_row(event.t_us, &text, Style::new().bold()));
            }
        }
    }

    fn on_note(
        &mut self,
        rows: &mut Vec<String>,
        event: &Event,
        note: &str,
        reason: Option<&str>,
        backoff: Option<u32>,
    ) {
        let warn = Style::new().fg_color(Some(AnsiColor::Yellow.into()));
        let bad = Style::new().fg_color(Some(AnsiColor::Red.into()));
        match note {
            "drop" => {
                let reason = reason.unwrap_or("unacceptable").replace('_', "-");
                let mark = format!("dropped by tcpd: {reason}");
                match &mut self.pending {
                    Some(p) if p.seg.dir == Dir::In => {
                        p.marks.push(mark);
                        p.dropped_by_tcpd = true;
                    }
                    _ => {
                        self.flush(rows);
                        rows.push(self.note_row(event.t_us, &mark, bad));
                    }
                }
            }
            "challenge_ack" => {
                if let Some(p) = &mut self.pending
                    && p.seg.dir == Dir::In
                {
                    p.marks.push("challenge ACK follows".into());
                }
                self.next_out_mark = Some("challenge ACK".into());
            }
            _ => {
                self.flush(rows);
                let text = match note {
                    "rto" => format!(
                        "RTO fired (backoff {}): retransmit from SND.UNA",
                        backoff.unwrap_or(1)
                    ),
                    "tlp" => "TLP fired: tail loss probe".into(),
                    "persist" => "persist timer fired: window probe".into(),
                    "keepalive" => "keepalive timer fired: probe".into(),
                    "recovery_enter" => "fast retransmit: loss recovery begins".into(),
                    "recovery_exit" => "loss recovery ends (full ACK)".into(),
                    other => other.replace('_', " "),
                };
                rows.push(self.note_row(event.t_us, &text, warn));
            }
        }
    }

    fn on_link(
        &mut self,
        rows: &mut Vec<String>,
        event: &Event,
        segment: &Segment,
        marks: Vec<String>,
        dropped: bool,
    ) {
        if segment.dir == Dir::Out {
            if let Some(p) = &mut self.pending
                && p.seg.dir == Dir::Out
                && same_segment(&p.seg, segment)
            {
                p.marks.extend(marks);
                p.dropped_by_link |= dropped;
                return;
            }
            // The stack's row is gone already: a row of its own.
            self.flush(rows);
            self.begin_segment(rows, event, segment);
            if let Some(p) = &mut self.pending {
                p.marks.extend(marks);
                p.dropped_by_link = dropped;
            }
            return;
        }
        if dropped {
            // The peer sent it; tcpd never saw it.
            self.flush(rows);
            self.begin_segment(rows, event, segment);
            if let Some(p) = &mut self.pending {
                p.marks.extend(marks);
                p.dropped_by_link = true;
            }
        } else {
            self.inbound_marks.push((segment.clone(), marks));
            if self.inbound_marks.len() > 64 {
                self.inbound_marks.remove(0);
            }
        }
    }

    /// Emits the pending segment row (and its continuation and mark rows).
    fn flush(&mut self, rows: &mut Vec<String>) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let seg = &p.seg;
        // The peer's view changes with what it sent, and with what it got.
        let peer_before = self.peer.as_ref().map(|m| m.state);
        if let Some(peer) = &mut self.peer {
            match seg.dir {
                Dir::In if !p.dropped_by_tcpd => peer.peer_sent(seg),
                Dir::In => {}
                Dir::Out if !p.dropped_by_link => peer.peer_received(seg),
                Dir::Out => {}
            }
        }
        let peer_state = self.peer.as_ref().map(|m| m.state);
        if seg.dir == Dir::In
            && peer_before != peer_state
            && matches!(peer_state, Some(TcpState::LastAck | TcpState::FinWait1))
        {
            // The peer's application closed: the seed's right-hand "(Close)".
            let column = self.right_column();
            rows.push(format!(
                "{}{}",
                " ".repeat(column),
                self.paint(Style::new().italic(), "(Close)")
            ));
        }
        let (core, extras) = self.segment_text(seg);
        let field = self.segment_width();
        let mut text = core.clone();
        let mut leftover = Vec::new();
        for extra in extras {
            if leftover.is_empty() && text.len() + extra.len() <= field {
                text.push_str(&extra);
            } else {
                leftover.push(extra);
            }
        }
        let arrow = match (seg.dir, seg.rtx, p.dropped_by_link) {
            (Dir::Out, _, true) => "--X",
            (Dir::In, _, true) => "X--",
            (Dir::Out, true, false) => "==>",
            (Dir::Out, false, false) => "-->",
            (Dir::In, _, false) => "<--",
        };
        let arrow_style = match (seg.dir, seg.rtx, p.dropped_by_link) {
            (_, _, true) => Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
            (Dir::Out, true, _) => Style::new().fg_color(Some(AnsiColor::Yellow.into())).bold(),
            (Dir::Out, false, _) => Style::new().fg_color(Some(AnsiColor::Green.into())),
            (Dir::In, _, _) => Style::new().fg_color(Some(AnsiColor::Cyan.into())),
        };
        let ours = Self::state_name(self.ours);
        let peer = Self::state_name(peer_state);
        let mut line = self.prefix(p.t_us, p.numbered);
        let mut visible = PREFIX;
        line.push_str(&self.paint(Style::new().bold(), &format!("{ours:<11}")));
        line.push(' ');
        line.push_str(&self.paint(arrow_style, arrow));
        line.push(' ');
        line.push_str(&text);
        visible += LEFT.max(ours.len() + 1) + 4 + text.len();
        let pad = (PREFIX + LEFT + 4 + field).saturating_sub(visible) + 1;
        line.push_str(&" ".repeat(pad));
        visible += pad;
        line.push_str(&self.paint(arrow_style, arrow));
        line.push(' ');
        visible += 4;
        line.push_str(&self.paint(Style::new().dimmed(), peer));
        visible += peer.len();
        let marks = if self.options.brief {
            Vec::new()
        } else {
            p.marks
        };
        let mark_text = if marks.is_empty() {
            String::new()
        } else {
            format!("[{}]", marks.join(", "))
        };
        let mark_style = Style::new().fg_color(Some(AnsiColor::Yellow.into()));
        let marks_inline =
            !mark_text.is_empty() && visible + 2 + mark_text.len() <= self.options.width;
        if marks_inline {
            line.push_str("  ");
            line.push_str(&self.paint(mark_style, &mark_text));
        }
        rows.push(line);
        if !leftover.is_empty() {
            let indent = PREFIX + LEFT + 4;
            let room = self.options.width.saturating_sub(indent).max(20);
            let mut row = String::new();
            for extra in leftover {
                if !row.is_empty() && row.len() + extra.len() > room {
                    rows.push(format!("{}{row}", " ".repeat(indent)));
                    row.clear();
                }
                row.push_str(&extra);
            }
            rows.push(format!("{}{row}", " ".repeat(indent)));
        }
        if !mark_text.is_empty() && !marks_inline {
            let indent = PREFIX + LEFT + 4;
            rows.push(format!(
                "{}{}",
                " ".repeat(indent),
                self.paint(mark_style, &format!("^ {mark_text}"))
            ));
        }
    }
}

/// Whether two trace segments are the same packet.
fn same_segment(a: &Segment, b: &Segment) -> bool {
    a.dir == b.dir && a.seq == b.seq && a.ack == b.ack && a.len == b.len && a.flags == b.flags
}

fn human_delay(micros: u64) -> String {
    if micros >= 1000 {
        format!("{}ms", micros / 1000)
    } else {
        format!("{micros}us")
    }
}

/// Renders a whole event sequence (replay, tests): every row, in order.
pub fn render_all(events: &[Event], options: LadderOptions) -> Vec<String> {
    let mut ladder = Ladder::new(options);
    let mut rows = Vec::new();
    for event in events {
        rows.extend(ladder.push(event));
    }
    rows.extend(ladder.finish());
    rows
}
