//! The connection's timers: retransmission (RFC 6298 §5), persist (RFC 9293
//! §3.8.6.1), delayed ACK (RFC 9293 §3.8.6.3), keepalive (RFC 1122
//! §4.2.3.6), TIME-WAIT (RFC 9293 §3.3.2: 2×MSL) and the FIN-WAIT-2 timeout
//! of a closed socket. Orphans (closed by their user) give up after
//! `orphan_retries` retransmissions or zero-window probes (Linux). Each is an `Option<Instant>` deadline (the delayed
//! ACK lives in `AckDue::By` and `AckDue::Owed`); `poll_timeout` is their minimum.

use super::recovery::Undo;
use super::{AckDue, Connection, ProbeDue};
use crate::error::ConnError;
use crate::tcp::TcpState;
use crate::tcp::congestion::CongestionControl;
use crate::time::{Duration, Instant};
use crate::trace::Note;

/// Cap on the persist backoff exponent (the interval is capped by max_rto anyway).
const MAX_PERSIST_BACKOFF: u32 = 16;

impl Connection {
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let delayed_ack = match self.ack_due {
            AckDue::By(t) | AckDue::Owed(t) => Some(t),
            AckDue::No | AckDue::Now => None,
        };
        [
            self.rtx_deadline,
            self.flight().rack.reo_deadline,
            self.flight().tlp.deadline,
            self.persist_deadline,
            self.keepalive_deadline,
            self.close_deadline,
            delayed_ack,
            self.occasional()
                .cork_deadline
                .filter(|_| self.options.cork || self.more_pending),
            self.occasional()
                .defer_accept_until
                .filter(|_| self.accept_deferred()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(super) fn run_timers(&mut self, now: Instant) {
        if let Some(t) = self.close_deadline
            && now >= t
        {
            self.close_deadline = None;
            if self.state == TcpState::TimeWait {
                // 2×MSL elapsed (RFC 9293 §3.10.8).
                self.enter_closed(None);
                return;
            }
            if self.state == TcpState::FinWait2 {
                // The peer never sent its FIN to a closed socket (Linux
                // tcp_fin_timeout); counted by the stack as an orphan timeout.
                self.enter_closed(Some(ConnError::TimedOut));
                return;
            }
        }
        if let AckDue::By(t) | AckDue::Owed(t) = self.ack_due
            && now >= t
        {
            self.ack_due = AckDue::Now;
        }
        if let Some(t) = self.occasional().defer_accept_until
            && now >= t
        {
            // TCP_DEFER_ACCEPT's time is up: accept it without data.
            self.set_occasional(None, |o| &mut o.defer_accept_until);
        }
        if let Some(t) = self.rtx_deadline
            && now >= t
        {
            self.rtx_deadline = None;
            self.on_retransmission_timeout(now);
        }
        if let Some(t) = self.occasional().cork_deadline
            && now >= t
        {
            // The cork's 200 ms ran out: what it held goes (`corked` is false now).
            self.set_occasional(None, |o| &mut o.cork_deadline);
            self.cork_released = true;
            self.more_pending = false;
        }
        if let Some(t) = self.flight().rack.reo_deadline
            && now >= t
        {
            // RFC 8985 §6.3: the reordering window has passed for a
            // segment sent before the RACK segment.
            self.flight_mut().rack.reo_deadline = None;
            self.rack_detect_loss(now);
        }
        if let Some(t) = self.flight().tlp.deadline
            && now >= t
        {
            self.flight_mut().tlp.deadline = None;
            self.on_probe_timeout();
        }
        if let Some(t) = self.persist_deadline
            && now >= t
        {
            self.persist_deadline = None;
            self.on_persist_timeout();
        }
        if let Some(t) = self.keepalive_deadline
            && now >= t
        {
            self.keepalive_deadline = None;
            self.on_keepalive_timeout(now);
        }
    }

    /// The retransmission deadline from `now`: the current RTO, but never
    /// past TCP_USER_TIMEOUT (RFC 5482; Linux clamps the same way).
    pub(super) fn rto_deadline(&self, now: Instant) -> Instant {
        let deadline = now + self.rtt.rto();
        match self.options.user_timeout {
            Some(uto) => deadline.min((self.last_progress + uto.get()).max(now)),
            None => deadline,
        }
    }

    /// RFC 6298 §5.4–§5.6, RFC 5681 §3.1, RFC 6582 §4, RFC 2018 §8.
    fn on_retransmission_timeout(&mut self, now: Instant) {
        match self.state {
            TcpState::SynSent | TcpState::SynReceived if self.snd_una == self.iss => {
                // The SYN (or SYN,ACK) went unanswered: resend it with the
                // backed-off RTO, up to syn_retries times (Linux TCP_SYNCNT),
                // or synack_retries for a passive open (tcp_synack_retries).
                let limit = if self.active_open {
                    self.options.syn_retries
                } else {
                    self.config.synack_retries
                };
                if self.retries >= limit {
                    self.enter_closed(Some(ConnError::TimedOut));
                    return;
                }
                self.retries += 1;
                self.note(Note::RtoFired {
                    backoff: self.retries,
                });
                self.rtt.backoff();
                self.rtt_timed = None;
                self.syn_retransmitted = true;
                self.tx_next = self.iss;
                self.rtx_deadline = Some(now + self.rtt.rto());
            }
            TcpState::Established
            | TcpState::FinWait1
            | TcpState::CloseWait
            | TcpState::Closing
            | TcpState::LastAck => {
                if self.snd_una == self.snd_nxt {
                    return;
                }
                let user_timeout_expired = self
                    .options
                    .user_timeout
                    .is_some_and(|uto| now - self.last_progress >= uto.get());
                // An orphan gives up sooner (Linux tcp_orphan_retries).
                let max_retries = if self.user_closed {
                    self.config.orphan_retries.min(self.config.max_retries)
                } else {
                    self.config.max_retries
                };
                if user_timeout_expired || self.retries >= max_retries {
                    // RFC 1122 §4.2.3.5 R2 / RFC 5482: give up.
                    self.enter_closed(Some(ConnError::TimedOut));
                    return;
                }
                self.retries += 1;
                self.note(Note::RtoFired {
                    backoff: self.retries,
                });
                // RFC 5681 §3.1 eq. (4): cwnd = 1 SMSS, and ssthresh cut
                // once per window of data (RFC 5681 §3.1: "MUST NOT be
                // reduced further" on a retransmission timing out again;
                // Linux's tcp_enter_loss also skips it when fast recovery
                // already reduced it for this window).
                let window_already_reduced = (self.in_recovery && self.snd_una.lt(self.recover))
                    || self.rto_recover.is_some_and(|guard| self.snd_una.le(guard));
                // The controller before the reduction, in case the timeout
                // proves spurious (RFC 3522 §2, a delay spike; RFC 4015 §3).
                // A timeout inside an episode joins it (Linux's
                // `tcp_enter_loss` keeps its undo state then).
                match &mut self.undo {
                    Some(undo) if window_already_reduced => undo.after_timeout = true,
                    _ => {
                        self.undo =
                            Some(Box::new(Undo::begin(self.cc.clone(), self.snd_una, true)));
                    }
                }
                self.cc
                    .on_retransmission_timeout(now, !window_already_reduced);
                // RFC 6298 §5.5: back off.
                self.rtt.backoff();
                self.rtt_timed = None;
                if self.in_recovery {
                    self.flight_mut().rack.on_recovery_exit();
                }
                self.in_recovery = false;
                self.reno_dup_bytes = 0;
                self.dup_acks = 0;
                self.rto_recover = Some(self.snd_nxt);
                self.counters.rto_timeouts = self.counters.rto_timeouts.wrapping_add(1);
                // RFC 6298 §5.4: retransmit the earliest unacknowledged
                // segment, and go back N: everything not SACKed is deemed
                // lost and follows as cwnd allows (RFC 8985 §6.3 marks
                // those sent more than RACK.rtt + reo_wnd ago, which after
                // an RTO is all of them). SACK marks are kept unless the
                // peer reneged (see `SentQueue::mark_all_lost`).
                self.flight_mut().sent.mark_all_lost();
                self.flight_mut().tlp.end_seq = None;
                self.flight_mut().tlp.deadline = None;
                self.flight_mut().tlp.due = false;
                self.flight_mut().rack.reo_deadline = None;
                // §5.6: restart the timer with the backed-off RTO.
                self.rtx_deadline = Some(self.rto_deadline(now));
            }
            _ => {}
        }
    }

    /// The probe timeout expired (RFC 8985 §7.3): a probe is due if data is
    /// still in flight and no recovery started meanwhile.
    fn on_probe_timeout(&mut self) {
        if matches!(
            self.state,
            TcpState::Established
                | TcpState::FinWait1
                | TcpState::CloseWait
                | TcpState::Closing
                | TcpState::LastAck
        ) && self.snd_una != self.snd_nxt
            && !self.in_recovery
            && self.rto_recover.is_none()
            && self.flight().tlp.end_seq.is_none()
        {
            self.note(Note::TlpFired);
            self.flight_mut().tlp.due = true;
        }
    }

    /// Persist timer interval: the RTO doubled per unanswered probe, at most max_rto.
    pub(super) fn persist_interval(&self) -> Duration {
        let base = self.rtt.rto();
        base.checked_mul(1u32 << self.persist_backoff.min(MAX_PERSIST_BACKOFF))
            .unwrap_or(self.config.max_rto)
            .min(self.config.max_rto)
    }

    /// RFC 9293 §3.8.6.1 (zero window) and RFC 1122 §4.2.3.4 (override of
    /// sender SWS avoidance for a small window).
    fn on_persist_timeout(&mut self) {
        if !matches!(
            self.state,
            TcpState::Established | TcpState::CloseWait | TcpState::FinWait1 | TcpState::LastAck
        ) {
            return;
        }
        self.note(Note::PersistFired);
        self.persist_probes += 1;
        // An orphan whose peer keeps its window shut (answering every probe)
        // is dropped after orphan_retries probes in a row: nobody will read
        // what it holds (Linux tcp_probe_timer, for orphans).
        let orphan_gives_up =
            self.user_closed && self.persist_backoff >= self.config.orphan_retries;
        if self.persist_probes > self.config.max_retries || orphan_gives_up {
            // Nobody answers our probes (Linux tcp_probe_timer gives up after
            // tcp_retries2 unanswered probes).
            self.enter_closed(Some(ConnError::TimedOut));
            return;
        }
        self.persist_backoff = (self.persist_backoff + 1).min(MAX_PERSIST_BACKOFF);
        if self.snd_wnd() == 0 {
            self.probe_due = ProbeDue::ZeroWindow;
        } else {
            self.force_send = true;
        }
        // `transmit` re-arms the timer while the window still blocks us.
    }

    /// Keepalive (RFC 1122 §4.2.3.6): probe after keep_idle of silence, every
    /// keep_interval; keep_count unanswered probes end the connection.
    fn on_keepalive_timeout(&mut self, now: Instant) {
        if !self.options.keepalive || !self.keepalive_state() {
            return;
        }
        if self.snd_nxt != self.snd_una || !self.send_buf.is_empty() {
            // Data is outstanding: retransmission and persist timers watch
            // the peer (Linux skips the probe the same way).
            self.keepalive_deadline = Some(now + self.options.keep_idle.get());
            return;
        }
        if self.keepalive_probes >= self.options.keep_count {
            self.queue_rst(self.snd_nxt, None);
            self.enter_closed(Some(ConnError::TimedOut));
            return;
        }
        self.note(Note::KeepaliveFired);
        self.keepalive_probes += 1;
        self.probe_due = ProbeDue::Keepalive;
        self.keepalive_deadline = Some(now + self.options.keep_interval.get());
    }

    /// States in which keepalive runs: synchronized and not yet closing down
    /// on our side's timers.
    fn keepalive_state(&self) -> bool {
        matches!(
            self.state,
            TcpState::Established | TcpState::CloseWait | TcpState::FinWait1 | TcpState::FinWait2
        )
    }

    /// (Re)starts the keepalive idle timer from `now`, or stops it.
    pub(super) fn arm_keepalive(&mut self, now: Instant) {
        self.keepalive_deadline = (self.options.keepalive && self.keepalive_state())
            .then(|| now + self.options.keep_idle.get());
    }

    /// TIME-WAIT (RFC 9293 §3.3.2): 2×MSL, every other timer off.
    pub(super) fn enter_time_wait(&mut self, now: Instant) {
        self.set_state(TcpState::TimeWait);
        self.close_deadline = Some(now + self.config.msl * 2);
        self.rtx_deadline = None;
        self.persist_deadline = None;
        self.keepalive_deadline = None;
        self.probe_due = ProbeDue::No;
    }

    /// How long a closed socket waits in FIN-WAIT-2 for the peer's FIN
    /// (Linux tcp_fin_timeout, 60 s by default).
    pub(super) fn fin_wait_2_timeout(&self) -> Duration {
        self.config.fin_timeout
    }
}
