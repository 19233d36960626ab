//! Urgent data (RFC 9293 §3.8.5, MUST-30/31), with Linux's semantics.
//!
//! RFC 6093 §3 explains that implementations read the urgent pointer as
//! pointing one byte *past* the last urgent byte (the BSD reading), that
//! only one byte of "urgent data" can be taken out of band, and that Linux
//! does both by default (`tcp_stdurg` = 0). tcpd does what Linux does:
//!
//! Sending: `send(MSG_OOB)` makes the last byte written the urgent byte; the
//! send urgent pointer `snd_up` is one past it. Every segment sent while
//! SND.UNA has not passed it and whose sequence number is below it carries
//! URG with the pointer `snd_up - SEG.SEQ` (at most 0xFFFF). Urgent mode
//! pushes: Nagle and TCP_CORK do not hold data then (Linux's
//! `tcp_nagle_test`), and no super-segment carries the flag (each wire
//! segment gets its own pointer).
//!
//! Receiving (`tcp_check_urg`/`tcp_urg`): the urgent byte is at
//! `SEG.SEQ + SEG.UP - 1` (`SEG.SEQ` for a zero pointer). A pointer to data
//! already received or read, or not beyond the current mark, is ignored. The
//! byte is captured from the segment that carries it. Reads stop before the
//! mark (a read never crosses it); a read at the mark skips the urgent byte
//! unless SO_OOBINLINE is on; `recv(MSG_OOB)` returns it once (EINVAL when
//! there is none, it was read, or SO_OOBINLINE is on; EAGAIN while it has
//! not arrived). `SIOCATMARK` is true when the next read starts at the
//! mark; POLLPRI while the byte waits.
//!
//! Deliberate differences from Linux: (1) Linux forgets the urgent byte once
//! a plain read passes the mark (MSG_OOB is EINVAL after); tcpd keeps it
//! for MSG_OOB until it is read or a new mark replaces it, because for
//! streamed and descriptor-backed sockets the daemon, not the application,
//! does the plain reads, as soon as data arrives. (2) Linux sends SIGURG
//! to the owner; a daemon has no owner process to signal (POLLPRI is the
//! notification).
//!
//! Invariant: once the read position passes a mark, the mark is `passed`
//! and no longer compared with sequence numbers (which would wrap).

use super::Connection;
use crate::error::RecvError;
use crate::seq::SeqNum;
use crate::tcp::TcpState;
use crate::wire::TcpRepr;

/// The urgent byte announced by the peer (Linux's `urg_seq`/`urg_data`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct UrgentMark {
    /// Sequence number of the urgent byte.
    pub(super) seq: SeqNum,
    /// The byte, once the segment carrying it arrived (TCP_URG_VALID).
    pub(super) byte: Option<u8>,
    /// Read with MSG_OOB already (TCP_URG_READ).
    pub(super) read: bool,
    /// The read position has passed the mark.
    pub(super) passed: bool,
}

impl Connection {
    /// After `send(MSG_OOB)` queued data: its last byte is urgent.
    pub(super) fn mark_urgent_sent(&mut self) {
        self.occasional_mut().snd_up = Some(self.data_end());
    }

    /// Urgent mode: SND.UNA has not passed the send urgent pointer.
    pub(super) fn urgent_mode(&self) -> bool {
        self.occasional()
            .snd_up
            .is_some_and(|up| up.gt(self.snd_una))
    }

    /// The urgent pointer field for a segment starting at `seq`, when it
    /// must carry URG (Linux's `__tcp_transmit_skb`).
    pub(super) fn urgent_pointer(&mut self, seq: SeqNum) -> Option<u16> {
        let up = self.occasional().snd_up?;
        if !up.gt(self.snd_una) {
            // Everything up to the urgent byte is acknowledged.
            self.set_occasional(None, |o| &mut o.snd_up);
            return None;
        }
        up.gt(seq)
            .then(|| u16::try_from(up.since(seq)).unwrap_or(u16::MAX))
    }

    /// Where the next read starts (Linux's `copied_seq`): the in-order data
    /// end less what is readable.
    fn read_seq(&self) -> SeqNum {
        let data_end = if self.fin_received {
            self.rcv_nxt - 1
        } else {
            self.rcv_nxt
        };
        data_end - self.recv_buf.readable()
    }

    /// RFC 9293 §3.10.7.4 sixth check (URG) and the capture of the urgent
    /// byte, for an acceptable segment, before its text is queued.
    pub(super) fn on_urgent(&mut self, seg: &TcpRepr<'_>) {
        let receiving = matches!(
            self.state,
            TcpState::Established | TcpState::FinWait1 | TcpState::FinWait2
        ) && !self.fin_received;
        if !receiving {
            return;
        }
        if seg.flags.urg() {
            self.check_urgent_pointer(seg);
        }
        // The byte comes with whatever segment covers it (`tcp_urg`).
        if let Some(mark) = self
            .occasional
            .as_deref_mut()
            .and_then(|o| o.rcv_urgent.as_mut())
            && mark.byte.is_none()
            && mark.seq.ge(seg.seq)
            && let Some(&byte) = seg.payload.get(mark.seq.since(seg.seq))
        {
            mark.byte = Some(byte);
        }
    }

    /// A segment with URG: a new mark (Linux's `tcp_check_urg`).
    fn check_urgent_pointer(&mut self, seg: &TcpRepr<'_>) {
        // RFC 6093 §3: the pointer is one past the urgent byte.
        let ptr = seg.seq + usize::from(seg.urgent.saturating_sub(1));
        let read_seq = self.read_seq();
        // Data already read, or already received: not a new mark.
        if ptr.lt(read_seq) || ptr.lt(self.rcv_nxt) {
            return;
        }
        if let Some(old) = self.occasional().rcv_urgent.filter(|old| !old.passed) {
            if !ptr.gt(old.seq) {
                return;
            }
            // The old urgent byte sits at the read position and will never
            // be read out of band now: step over it so it does not show up
            // as data (unless it is inline data anyway).
            if old.seq == read_seq && !self.options.oob_inline && self.recv_buf.readable() > 0 {
                self.recv_buf.skip(1);
            }
        }
        self.occasional_mut().rcv_urgent = Some(UrgentMark {
            seq: ptr,
            byte: None,
            read: false,
            passed: false,
        });
    }

    /// How a read of up to `want` bytes treats the mark: bytes to skip
    /// first (the urgent byte when at the mark and not inline) and the most
    /// bytes to return (a read stops before the mark).
    pub(super) fn urgent_read_plan(&self, want: usize) -> (usize, usize) {
        let Some(mark) = self.occasional().rcv_urgent.filter(|mark| !mark.passed) else {
            return (0, want);
        };
        let read_seq = self.read_seq();
        if mark.seq == read_seq {
            (usize::from(!self.options.oob_inline), want)
        } else if mark.seq.gt(read_seq) {
            (0, want.min(mark.seq.since(read_seq)))
        } else {
            (0, want)
        }
    }

    /// After a read consumed data: a mark the read position passed is
    /// `passed`; gone once its byte was also read out of band.
    pub(super) fn urgent_after_read(&mut self) {
        let read_seq = self.read_seq();
        if let Some(mark) = self
            .occasional
            .as_deref_mut()
            .and_then(|o| o.rcv_urgent.as_mut())
            && !mark.passed
            && mark.seq.lt(read_seq)
        {
            mark.passed = true;
            if mark.read {
                self.set_occasional(None, |o| &mut o.rcv_urgent);
            }
        }
    }

    /// Readable bytes as poll sees them: at the mark, a urgent byte that
    /// reads will skip does not count (Linux's tcp_poll `target++`).
    pub(super) fn readable_for_poll(&self) -> usize {
        let readable = self.recv_buf.readable();
        match self.occasional().rcv_urgent {
            Some(mark)
                if !mark.passed && mark.seq == self.read_seq() && !self.options.oob_inline =>
            {
                readable.saturating_sub(1)
            }
            _ => readable,
        }
    }

    /// The urgent byte waits for `recv(MSG_OOB)` (POLLPRI).
    pub(super) fn urgent_pending(&self) -> bool {
        self.occasional()
            .rcv_urgent
            .is_some_and(|mark| mark.byte.is_some() && !mark.read)
    }

    /// `recv(MSG_OOB)` (Linux's `tcp_recv_urg`): the urgent byte, or
    /// `None` for end of stream; with `peek` it stays readable.
    pub fn recv_urgent(&mut self, peek: bool) -> Result<Option<u8>, RecvError> {
        if self.options.oob_inline {
            return Err(RecvError::NoUrgentData);
        }
        let Some(mark) = self
            .occasional
            .as_deref_mut()
            .and_then(|o| o.rcv_urgent.as_mut())
        else {
            return Err(RecvError::NoUrgentData);
        };
        if mark.read {
            return Err(RecvError::NoUrgentData);
        }
        if let Some(byte) = mark.byte {
            if !peek {
                mark.read = true;
                if mark.passed {
                    self.set_occasional(None, |o| &mut o.rcv_urgent);
                }
            }
            return Ok(Some(byte));
        }
        if self.state == TcpState::Closed || self.read_shut || self.fin_received {
            return Ok(None);
        }
        Err(RecvError::WouldBlock)
    }

    /// SIOCATMARK: the next read starts at the urgent mark.
    pub fn at_mark(&self) -> bool {
        self.occasional()
            .rcv_urgent
            .is_some_and(|mark| !mark.passed && mark.seq == self.read_seq())
    }
}
