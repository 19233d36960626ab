//! The link: everything between the stack and the TUN device.
//!
//! [`Link`] owns the TUN file descriptor (registered with the driver's tokio
//! runtime), the optional [`Impairer`] and the packet buffers. The driver
//! calls it at three points of its loop:
//! - [`Link::recv`] (awaited in the driver's `select!`), then
//!   [`Link::ingest_batch`]: the first packet and up to [`RX_BATCH`] more
//!   non-blocking reads go to the stack, through the impairer if any;
//! - [`Link::release_due`]: impaired packets whose hold time is over;
//! - [`Link::transmit`]: drains [`Stack::poll_transmit`] into TUN writes,
//!   through the impairer if any.
//!
//! Tap points (for capture): every packet the stack receives passes through
//! `to_stack`, every packet written to the TUN through `to_tun`; packets the
//! stack emits enter the impairer in [`Link::transmit`] and packets read from
//! the TUN in [`Link::ingest_batch`].
//!
//! Invariant: TUN writes never wait. They hand the packet to the kernel's
//! receive path and do not block in practice; a failed write is counted and
//! the packet dropped (TCP recovers).

pub mod tun;

use crate::impair::{Direction, Impairer};
use crate::trace_hub::TraceHub;
use tcpd_stack::{Instant, Stack};

/// Packets read from the TUN per wake-up before the driver flushes.
pub const RX_BATCH: usize = 64;
/// Room for the largest packet a TUN read may return.
const RX_BUFFER: usize = 65536;

/// The TUN device and the impairer; see the module docs.
pub struct Link {
    tun: ::tun::AsyncDevice,
    impairer: Option<Impairer>,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    write_errors: u64,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("impairer", &self.impairer)
            .field("write_errors", &self.write_errors)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Registers `device` with the current tokio runtime. `mtu` sizes the
    /// transmit buffer (the stack never emits more than the MTU).
    pub fn new(
        device: ::tun::Device,
        impairer: Option<Impairer>,
        mtu: usize,
    ) -> std::io::Result<Link> {
        Ok(Link {
            tun: ::tun::AsyncDevice::new(device)?,
            impairer,
            rx_buf: vec![0u8; RX_BUFFER],
            tx_buf: vec![0u8; mtu.max(1500)],
            write_errors: 0,
        })
    }

    /// When the impairer next releases a held packet.
    pub fn next_release(&self) -> Option<Instant> {
        self.impairer.as_ref().and_then(Impairer::next_release)
    }

    /// Stops impairing; held packets are dropped (used at shutdown so the
    /// final RSTs leave at once).
    pub fn disable_impairer(&mut self) {
        self.impairer = None;
    }

    /// Waits for the first packet of a batch; its length is passed to
    /// [`Link::ingest_batch`]. Cancel-safe (nothing is read until ready).
    pub async fn recv(&mut self) -> std::io::Result<usize> {
        self.tun.recv(&mut self.rx_buf).await
    }

    /// Feeds the packet [`Link::recv`] returned, then up to [`RX_BATCH`] - 1
    /// more that are ready without waiting, to `stack`.
    /// Traced connections learn what the impairer did (`traces`).
    pub fn ingest_batch(
        &mut self,
        first_len: usize,
        now: Instant,
        stack: &mut Stack,
        traces: &mut TraceHub,
    ) {
        self.ingest(first_len, now, stack, traces);
        for _ in 1..RX_BATCH {
            let device: &::tun::Device = &self.tun;
            match device.recv(&mut self.rx_buf) {
                Ok(n) => self.ingest(n, now, stack, traces),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(error = %e, "TUN read failed");
                    break;
                }
            }
        }
    }

    /// One packet read from the TUN (in `rx_buf[..len]`).
    fn ingest(&mut self, len: usize, now: Instant, stack: &mut Stack, traces: &mut TraceHub) {
        let packet = &self.rx_buf[..len];
        match self.impairer.as_mut() {
            Some(impairer) => {
                let done = impairer.process(now, Direction::Inbound, packet, |_, p| {
                    to_stack(stack, now, p)
                });
                traces.link_event(stack, now, Direction::Inbound, packet, done);
            }
            None => to_stack(stack, now, packet),
        }
    }

    /// Delivers the impaired packets whose hold time is over.
    pub fn release_due(&mut self, now: Instant, stack: &mut Stack) {
        let Link {
            tun,
            impairer,
            write_errors,
            ..
        } = self;
        if let Some(impairer) = impairer.as_mut() {
            impairer.release_due(now, |direction, p| match direction {
                Direction::Inbound => to_stack(stack, now, p),
                Direction::Outbound => to_tun(tun, write_errors, p),
            });
        }
    }

    /// Writes every packet the stack has to send. A traced connection's
    /// record of each packet is pumped to `traces` before the impairer's
    /// verdict on it.
    pub fn transmit(&mut self, now: Instant, stack: &mut Stack, traces: &mut TraceHub) {
        let Link {
            tun,
            impairer,
            tx_buf,
            write_errors,
            ..
        } = self;
        while let Some(n) = stack.poll_transmit(now, tx_buf) {
            let packet = &tx_buf[..n];
            if !traces.is_empty() {
                traces.pump(stack);
            }
            match impairer.as_mut() {
                Some(impairer) => {
                    let done = impairer.process(now, Direction::Outbound, packet, |_, p| {
                        to_tun(tun, write_errors, p)
                    });
                    traces.link_event(stack, now, Direction::Outbound, packet, done);
                }
                None => to_tun(tun, write_errors, packet),
            }
        }
    }
}

/// A packet (after impairment) into the stack.
fn to_stack(stack: &mut Stack, now: Instant, packet: &[u8]) {
    stack.handle_packet(now, packet);
}

/// A packet (after impairment) onto the TUN, without waiting.
fn to_tun(tun: &::tun::AsyncDevice, write_errors: &mut u64, packet: &[u8]) {
    let device: &::tun::Device = tun;
    if let Err(e) = device.send(packet) {
        *write_errors += 1;
        if *write_errors < 10 || write_errors.is_power_of_two() {
            tracing::warn!(error = %e, count = *write_errors, "TUN write failed; packet dropped");
        }
    }
}
