//! tcpd's model of the peer's state: what RFC 9293 §3.10.7 says the far end
//! must be in, given the segments it sent and the ones it received. It is an
//! inference (the peer is not asked), shown as such by the ladder.
//!
//! Rules (RFC 9293 §3.10.7.2–§3.10.7.4, the seed's diagrams): a SYN moves a
//! listener to SYN-RECEIVED and a SYN,ACK a SYN-SENT end to ESTABLISHED; the
//! ACK of its SYN moves SYN-RECEIVED to ESTABLISHED; sending a FIN moves
//! ESTABLISHED to FIN-WAIT-1 and CLOSE-WAIT to LAST-ACK; the ACK of its FIN
//! moves FIN-WAIT-1 to FIN-WAIT-2, CLOSING to TIME-WAIT and LAST-ACK to
//! CLOSED; receiving a FIN moves ESTABLISHED to CLOSE-WAIT, FIN-WAIT-1 to
//! CLOSING and FIN-WAIT-2 to TIME-WAIT (the ACK part of a segment is
//! processed before its FIN, RFC 9293 §3.10.7.4 fifth and eighth checks); a
//! RST either way ends in CLOSED. The ladder applies an arriving segment
//! only if tcpd accepted it: one tcpd discarded (out of window, a RST that
//! earned a challenge ACK...) may be old or forged and says nothing of the
//! peer.

use crate::event::Segment;
use tcpd_stack::{SeqNum, TcpState};

/// The inferred peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerModel {
    pub state: TcpState,
    /// The sequence number of the peer's SYN, once seen.
    peer_syn: Option<u32>,
    /// The sequence number the peer's FIN occupies, once it sent one.
    peer_fin: Option<u32>,
}

impl PeerModel {
    pub fn new(state: TcpState) -> PeerModel {
        PeerModel {
            state,
            peer_syn: None,
            peer_fin: None,
        }
    }

    /// The peer's state to assume when tracing starts with tcpd in `ours`.
    pub fn counterpart(ours: TcpState) -> TcpState {
        match ours {
            TcpState::Closed => TcpState::Listen,
            TcpState::Listen => TcpState::Closed,
            TcpState::SynSent => TcpState::SynReceived,
            TcpState::SynReceived => TcpState::SynSent,
            TcpState::Established => TcpState::Established,
            TcpState::FinWait1 | TcpState::FinWait2 => TcpState::CloseWait,
            TcpState::CloseWait => TcpState::FinWait2,
            TcpState::Closing => TcpState::Closing,
            TcpState::LastAck => TcpState::FinWait2,
            TcpState::TimeWait => TcpState::LastAck,
        }
    }

    /// Sets what is known of the peer's initial sequence number.
    pub fn set_peer_syn(&mut self, irs: u32) {
        self.peer_syn = Some(irs);
    }

    /// The peer sent `seg` (an inbound segment, whether tcpd got it or not).
    pub fn peer_sent(&mut self, seg: &Segment) {
        let flags = seg.tcp_flags();
        if flags.rst() {
            self.state = TcpState::Closed;
            return;
        }
        if flags.syn() {
            self.peer_syn = Some(seg.seq);
            self.state = if flags.ack() {
                TcpState::SynReceived
            } else {
                TcpState::SynSent
            };
        }
        if flags.fin() {
            self.peer_fin = Some(seg.seq.wrapping_add(seg.len + u32::from(flags.syn())));
            self.state = match self.state {
                TcpState::Established | TcpState::SynReceived => TcpState::FinWait1,
                TcpState::CloseWait => TcpState::LastAck,
                other => other,
            };
        }
    }

    /// The peer received `seg` (an outbound segment that was not lost).
    pub fn peer_received(&mut self, seg: &Segment) {
        let flags = seg.tcp_flags();
        if flags.rst() {
            self.state = TcpState::Closed;
            return;
        }
        if flags.syn() {
            self.state = match (self.state, flags.ack()) {
                (TcpState::SynSent, true) => TcpState::Established,
                (TcpState::Listen | TcpState::Closed | TcpState::SynSent, false) => {
                    TcpState::SynReceived
                }
                (other, _) => other,
            };
        } else if let Some(ack) = seg.ack {
            let acks = |seq: Option<u32>| seq.is_some_and(|s| SeqNum(ack).gt(SeqNum(s)));
            if self.state == TcpState::SynReceived && acks(self.peer_syn) {
                self.state = TcpState::Established;
            }
            if acks(self.peer_fin) {
                self.state = match self.state {
                    TcpState::FinWait1 => TcpState::FinWait2,
                    TcpState::Closing => TcpState::TimeWait,
                    TcpState::LastAck => TcpState::Closed,
                    other => other,
                };
            }
        }
        if flags.fin() {
            self.state = match self.state {
                TcpState::Established | TcpState::SynReceived => TcpState::CloseWait,
                TcpState::FinWait1 => TcpState::Closing,
                TcpState::FinWait2 => TcpState::TimeWait,
                other => other,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Dir;

    fn seg(dir: Dir, seq: u32, ack: Option<u32>, flags: &str) -> Segment {
        Segment {
            dir,
            seq,
            ack,
            flags: flags.into(),
            win: 0,
            len: 0,
            mss: None,
            ws: None,
            sack_ok: false,
            sack: Vec::new(),
            ts: None,
            rtx: false,
        }
    }

    #[test]
    fn the_seeds_close_sequence() {
        let mut peer = PeerModel::new(TcpState::Established);
        peer.peer_received(&seg(Dir::Out, 100, Some(300), "FIN,ACK"));
        assert_eq!(peer.state, TcpState::CloseWait);
        peer.peer_sent(&seg(Dir::In, 300, Some(101), "ACK"));
        assert_eq!(peer.state, TcpState::CloseWait);
        peer.peer_sent(&seg(Dir::In, 300, Some(101), "FIN,ACK"));
        assert_eq!(peer.state, TcpState::LastAck);
        peer.peer_received(&seg(Dir::Out, 101, Some(301), "ACK"));
        assert_eq!(peer.state, TcpState::Closed);
    }

    #[test]
    fn simultaneous_close_and_active_close_by_the_peer() {
        let mut peer = PeerModel::new(TcpState::Established);
        peer.peer_sent(&seg(Dir::In, 500, Some(100), "FIN,ACK"));
        assert_eq!(peer.state, TcpState::FinWait1);
        peer.peer_received(&seg(Dir::Out, 100, Some(500), "FIN,ACK"));
        assert_eq!(peer.state, TcpState::Closing, "our FIN crossed theirs");
        peer.peer_received(&seg(Dir::Out, 101, Some(501), "ACK"));
        assert_eq!(peer.state, TcpState::TimeWait);

        let mut peer = PeerModel::new(TcpState::Established);
        peer.peer_sent(&seg(Dir::In, 500, Some(100), "FIN,ACK"));
        peer.peer_received(&seg(Dir::Out, 100, Some(501), "FIN,ACK"));
        assert_eq!(peer.state, TcpState::TimeWait, "ACK before FIN");
    }

    #[test]
    fn passive_open_and_reset() {
        let mut peer = PeerModel::new(TcpState::Closed);
        peer.peer_sent(&seg(Dir::In, 300, None, "SYN"));
        assert_eq!(peer.state, TcpState::SynSent);
        peer.peer_received(&seg(Dir::Out, 100, Some(301), "SYN,ACK"));
        assert_eq!(peer.state, TcpState::Established);
        peer.peer_received(&seg(Dir::Out, 101, None, "RST"));
        assert_eq!(peer.state, TcpState::Closed);
    }
}
