//! The daemon's side of `tcpctl capture`: Admin Capture subscribers and the
//! pcapng each one receives (see `tcpd_trace::capture` for the format: the
//! stack's view and the link's view as two interfaces).
//!
//! The link calls [`CaptureHub::packet`] at its four tap points; packets
//! are serialized into the subscriber's pending chunk, and the driver calls
//! [`CaptureHub::flush`] at the end of each turn. Invariants: the driver
//! never waits — while the channel is full the pending chunk keeps
//! growing (a single-threaded daemon drains the channel only between
//! driver turns, so one small chunk per turn would fill it at once), and
//! only a full chunk the channel has no room for is dropped and its
//! packets counted, and the count is written into the stream as Interface
//! Statistics (`isb_ifdrop`) once there is room; a pending chunk never
//! exceeds [`MAX_CHUNK`] bytes (it is flushed or dropped before); a
//! subscriber whose client went away is removed at the next flush.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tcpd_proto::v2;
use tcpd_stack::Instant;
use tcpd_trace::capture::{CaptureFilter, CapturePoint, CaptureWriter};
use tokio::sync::mpsc;

/// Chunks buffered per subscriber: at most 256 × [`MAX_CHUNK`] = 64 MiB
/// while `tcpctl capture` lags (capture is root only, as tcpdump's
/// `-B` buffer is the operator's choice; Linux's `AF_PACKET` drops too).
pub const CAPTURE_CHANNEL: usize = 256;
/// Largest chunk kept pending within a driver turn.
const MAX_CHUNK: usize = 256 * 1024;

#[derive(Debug)]
struct Subscriber {
    writer: CaptureWriter,
    filter: CaptureFilter,
    tx: mpsc::Sender<v2::CaptureResponse>,
    /// Packets dropped because the client read too slowly.
    dropped: u64,
    /// The drop count last written into the stream.
    reported: u64,
}

/// Capture subscribers.
#[derive(Debug)]
pub struct CaptureHub {
    subscribers: Vec<Subscriber>,
    /// Wall-clock time of the stack's instant zero (pcapng wants epoch times).
    epoch_offset: Duration,
}

impl CaptureHub {
    /// A hub for a daemon whose stack clock reads `now` at this moment.
    pub fn new(now: Instant) -> CaptureHub {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        CaptureHub {
            subscribers: Vec::new(),
            epoch_offset: wall.saturating_sub(Duration::from_micros(now.total_micros())),
        }
    }

    /// A new subscriber; its first chunk (section and interfaces) is queued at once.
    pub fn add(&mut self, filter: CaptureFilter, tx: mpsc::Sender<v2::CaptureResponse>) {
        let mut writer = CaptureWriter::new();
        let header = writer.take();
        // The channel is new and empty: the header always fits.
        let _ = tx.try_send(v2::CaptureResponse { pcapng: header });
        self.subscribers.push(Subscriber {
            writer,
            filter,
            tx,
            dropped: 0,
            reported: 0,
        });
    }

    /// Whether a capture runs (the link must then see whole packets).
    pub fn is_active(&self) -> bool {
        !self.subscribers.is_empty()
    }

    /// One packet at a tap point; `inbound` is towards the stack.
    pub fn packet(&mut self, point: CapturePoint, inbound: bool, now: Instant, packet: &[u8]) {
        if self.subscribers.is_empty() {
            return;
        }
        let time = self.epoch_offset + Duration::from_micros(now.total_micros());
        for sub in &mut self.subscribers {
            if !sub.filter.matches(packet) {
                continue;
            }
            sub.writer.packet(point, inbound, time, packet);
            if sub.writer.pending_bytes() >= MAX_CHUNK {
                Self::send(sub, time);
            }
        }
    }

    fn send(sub: &mut Subscriber, time: Duration) {
        if sub.writer.pending_bytes() == 0 {
            return;
        }
        if sub.tx.capacity() == 0 {
            // No room: keep coalescing until the chunk is full, then drop it.
            if sub.writer.pending_bytes() >= MAX_CHUNK {
                sub.dropped += sub.writer.discard();
            }
            return;
        }
        if sub.dropped != sub.reported {
            sub.writer.statistics(time, sub.dropped);
            sub.reported = sub.dropped;
        }
        let chunk = v2::CaptureResponse {
            pcapng: sub.writer.take(),
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = sub.tx.try_send(chunk) {
            // Raced with nothing (the driver is the only sender); count anyway.
            sub.dropped += 1;
        }
    }

    /// End of a driver turn: sends pending chunks, forgets departed clients.
    pub fn flush(&mut self, now: Instant) {
        if self.subscribers.is_empty() {
            return;
        }
        let time = self.epoch_offset + Duration::from_micros(now.total_micros());
        self.subscribers.retain(|sub| !sub.tx.is_closed());
        for sub in &mut self.subscribers {
            Self::send(sub, time);
        }
    }

    /// Packets dropped for slow readers, over all current subscribers.
    pub fn dropped(&self) -> u64 {
        self.subscribers.iter().map(|s| s.dropped).sum()
    }
}
