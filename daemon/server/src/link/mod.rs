//! The link: everything between the stack and the TUN device.
//!
//! [`Link`] owns the TUN file descriptor (registered with the driver's tokio
//! runtime), the optional [`Impairer`] and the packet buffers. The driver
//! calls it at three points of its loop:
//! - [`Link::recv`] (awaited in the driver's `select!`), then
//!   [`Link::ingest_batch`]: the first packet and up to [`RX_BATCH`] more
//!   non-blocking reads go to the stack, through the impairer if any;
//! - [`Link::release_due`]: impaired packets whose hold time is over;
//! - [`Link::transmit`]: drains the stack's packets into TUN writes,
//!   through the impairer if any.
//!
//! Tap points ([`Taps`]: captures, traces, impairer counters): every packet
//! the stack receives passes through `to_stack` (the stack's view, inbound),
//! every packet the stack emits is seen in [`Link::transmit`] (outbound);
//! every packet read from the TUN in [`Link::ingest_batch`] (the link's view,
//! inbound, virtio-net header stripped) and every packet written to it by
//! `link_out` (outbound); the impairer's verdict on each goes to
//! [`Taps::impaired`].
//!
//! Offload ([`tun`] opens the device): with a virtio-net header on the TUN,
//! reads are parsed with [`VirtioNetRepr::parse`] (a header that does not fit
//! its packet is dropped and counted as the stack's `drop_offload`) and
//! handed to [`Stack::handle_packet_offload`]. Writes come from
//! [`Stack::poll_transmit_vectored`] (with or without offload): the stack
//! writes the IP and TCP headers into `tx_buf` and lends the payload in
//! place from the connection's send buffer, and one `writev(2)` sends the
//! virtio-net header (when the device takes one), the headers and the
//! payload slices — no user-space copy of the payload. Only while a capture
//! runs does the stack write whole packets (the capture sees them).
//!
//! With an impairer, impairment stays per wire packet: coalesced packets read
//! from the TUN are cut into MSS-sized packets with complete checksums
//! ([`virtio::segment_tcp`], what the kernel's software GSO does) before
//! the impairer sees them, partial checksums are completed
//! ([`virtio::complete_checksum`]) so that `corrupt` is caught, and the stack
//! transmits plain MSS-sized packets ([`Stack::poll_transmit`]) that leave
//! with an all-zero header. Loss, duplication, reordering and corruption thus
//! act on exactly the packets a 1500-byte wire would carry; only the
//! syscall savings of offload are lost under impairment.
//!
//! Invariant: TUN writes never wait. They hand the packet to the kernel's
//! receive path and do not block in practice; a failed write is counted and
//! the packet dropped (TCP recovers).

pub mod netlink;
pub mod steer;
pub mod tun;

use crate::impair::{Direction, Impairer};
use crate::taps::Taps;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::IoSlice;
use tcpd_stack::wire::virtio::{self, HEADER_LEN as VNET_HDR_LEN};
use tcpd_stack::wire::{Checksum, VirtioNetRepr};
use tcpd_stack::{DropReason, Instant, Stack};

/// Packets read from the TUN per wake-up before the driver flushes.
pub const RX_BATCH: usize = 64;
/// Room for the largest packet a TUN read may return (a 64 KiB super-segment
/// behind its virtio-net header).
const RX_BUFFER: usize = VNET_HDR_LEN + 65536;
/// A read of at least this many bytes (a super-segment) goes to the stack
/// as the buffer it was read into ([`Stack::handle_packet_shared`]): its
/// payload is read by the application as a slice of it, with no copy in
/// between, and the link reads on into a new buffer. Smaller reads are
/// copied by the stack and the buffer is reused, so a kept buffer is always
/// at least half payload (what the receive window's accounting assumes).
const RX_SHARE_MIN: usize = RX_BUFFER / 2;
/// Buffers handed to the stack that the link keeps an eye on, to read into
/// again once the stack and the readers have let go of them (a buffer used
/// again is already initialized: no zeroing of a fresh 64 KiB per read).
/// Enough for a full 6 MiB receive window of 32 KiB reads and then some:
/// a window-limited bulk receiver holds that many.
const RX_LENT_MAX: usize = 256;
/// Of those, at most this many free ones are kept for later reads (the
/// rest are let go at the next transmission).
const RX_SPARE_MAX: usize = 4;
/// Room for the largest packet the stack may emit (the same).
const TX_BUFFER: usize = VNET_HDR_LEN + 65536;

/// The TUN device and the impairer; see the module docs.
pub struct Link {
    tun: ::tun::AsyncDevice,
    impairer: Option<Impairer>,
    /// Reads and writes carry a virtio-net header.
    vnet_hdr: bool,
    rx_buf: BytesMut,
    /// Buffers lent to the stack (frames), see [`RX_LENT_MAX`].
    rx_lent: VecDeque<Bytes>,
    /// Header room (when `vnet_hdr`) followed by the stack's packet.
    tx_buf: Vec<u8>,
    /// Packets cut from a super-segment for the impairer.
    split_buf: Vec<u8>,
    write_errors: u64,
    /// With several shards: what to pass to another shard ([`steer`]).
    steering: Option<steer::Steering>,
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
    /// Registers `device` with the current tokio runtime; `vnet_hdr`: the
    /// device was opened with `IFF_VNET_HDR`.
    pub fn new(
        device: ::tun::Device,
        vnet_hdr: bool,
        impairer: Option<Impairer>,
    ) -> std::io::Result<Link> {
        Ok(Link {
            tun: ::tun::AsyncDevice::new(device)?,
            impairer,
            vnet_hdr,
            rx_buf: BytesMut::zeroed(RX_BUFFER),
            rx_lent: VecDeque::new(),
            tx_buf: vec![0u8; TX_BUFFER],
            split_buf: Vec::new(),
            write_errors: 0,
            steering: None,
        })
    }

    /// Passes packets that belong to another shard to it (see [`steer`]).
    pub fn set_steering(&mut self, steering: Option<steer::Steering>) {
        self.steering = steering;
    }

    /// A TUN read another shard passed on (see [`steer`]), fed to `stack`
    /// as if read here.
    pub fn ingest_forwarded(
        &mut self,
        frame: &[u8],
        now: Instant,
        stack: &mut Stack,
        taps: &mut Taps,
    ) {
        let Some(buf) = self.rx_buf.get_mut(..frame.len()) else {
            return;
        };
        buf.copy_from_slice(frame);
        self.ingest_here(frame.len(), now, stack, taps);
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
        self.tun.recv(&mut self.rx_buf[..]).await
    }

    /// Feeds the packet [`Link::recv`] returned, then up to [`RX_BATCH`] - 1
    /// more that are ready without waiting, to `stack`.
    /// `taps` see each packet on both sides of the impairer and its verdict.
    pub fn ingest_batch(
        &mut self,
        first_len: usize,
        now: Instant,
        stack: &mut Stack,
        taps: &mut Taps,
    ) {
        self.ingest(first_len, now, stack, taps);
        self.ingest_ready(RX_BATCH - 1, now, stack, taps);
    }

    /// Feeds up to `max` packets that are ready without waiting to `stack`;
    /// returns how many there were.
    pub fn ingest_ready(
        &mut self,
        max: usize,
        now: Instant,
        stack: &mut Stack,
        taps: &mut Taps,
    ) -> usize {
        for read in 0..max {
            let device: &::tun::Device = &self.tun;
            match device.recv(&mut self.rx_buf[..]) {
                Ok(n) => self.ingest(n, now, stack, taps),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return read,
                Err(e) => {
                    tracing::warn!(error = %e, "TUN read failed");
                    return read;
                }
            }
        }
        max
    }

    /// One packet read from the TUN (in `rx_buf[..len]`).
    fn ingest(&mut self, len: usize, now: Instant, stack: &mut Stack, taps: &mut Taps) {
        if let Some(steering) = self.steering.as_mut()
            && len < RX_SHARE_MIN
            && let Some(frame) = self.rx_buf.get(..len)
            && steering.forward(frame, if self.vnet_hdr { VNET_HDR_LEN } else { 0 })
        {
            return;
        }
        self.ingest_here(len, now, stack, taps);
    }

    /// One packet read from the TUN (in `rx_buf[..len]`) for this shard.
    fn ingest_here(&mut self, len: usize, now: Instant, stack: &mut Stack, taps: &mut Taps) {
        if self.vnet_hdr && self.impairer.is_none() && (RX_SHARE_MIN..=RX_BUFFER).contains(&len) {
            return self.ingest_shared(len, now, stack, taps);
        }
        let Some(read) = self.rx_buf.get_mut(..len) else {
            return;
        };
        if !self.vnet_hdr {
            taps.link_in(now, read);
            match self.impairer.as_mut() {
                Some(impairer) => impair_inbound(impairer, now, stack, taps, read),
                None => to_stack(stack, taps, now, read, &VirtioNetRepr::PLAIN),
            }
            return;
        }
        let header = match VirtioNetRepr::parse(read) {
            Ok((header, _)) => header,
            Err(e) => {
                tracing::trace!(error = %e, "bad virtio-net header from the TUN");
                return stack.count_link_drop(DropReason::Offload);
            }
        };
        let packet = &mut read[VNET_HDR_LEN..];
        taps.link_in(now, packet);
        let Some(impairer) = self.impairer.as_mut() else {
            return to_stack(stack, taps, now, packet, &header);
        };
        // Impairment acts on wire packets: undo the offloads first.
        if let Some(gso) = header.gso {
            let split = virtio::segment_tcp(packet, gso.size, &mut self.split_buf, |p| {
                impair_inbound(impairer, now, stack, taps, p);
            });
            if split.is_err() {
                stack.count_link_drop(DropReason::Offload);
            }
            return;
        }
        if let Checksum::Partial { start, offset } = header.checksum
            && virtio::complete_checksum(packet, start, offset).is_err()
        {
            return stack.count_link_drop(DropReason::Offload);
        }
        impair_inbound(impairer, now, stack, taps, packet);
    }

    /// A large read (see [`RX_SHARE_MIN`]) handed to the stack as the
    /// buffer it is; the next read goes into a new one.
    fn ingest_shared(&mut self, len: usize, now: Instant, stack: &mut Stack, taps: &mut Taps) {
        let next = self.next_rx_buffer();
        // Lent whole (not cut to the read): once free it is read into again
        // as it is, with no zeroing of the bytes past this read.
        let buffer = std::mem::replace(&mut self.rx_buf, next).freeze();
        let frame = buffer.slice(..len);
        if self.rx_lent.len() >= RX_LENT_MAX {
            self.rx_lent.pop_front();
        }
        self.rx_lent.push_back(buffer);
        let header = match VirtioNetRepr::parse(&frame) {
            Ok((header, _)) => header,
            Err(e) => {
                tracing::trace!(error = %e, "bad virtio-net header from the TUN");
                return stack.count_link_drop(DropReason::Offload);
            }
        };
        let packet = frame.slice(VNET_HDR_LEN..);
        taps.link_in(now, &packet);
        taps.stack_in(now, &packet);
        stack.handle_packet_shared(now, packet, &header);
    }

    /// A buffer to read into: the oldest lent one if nobody holds it any
    /// more (readers consume in order, so the oldest frees first; it was
    /// lent whole, so it is used as it is), else a new, zeroed one.
    fn next_rx_buffer(&mut self) -> BytesMut {
        if self.rx_lent.front().is_some_and(Bytes::is_unique)
            && let Some(buffer) = self.rx_lent.pop_front()
            && let Ok(buf) = buffer.try_into_mut()
            && buf.len() == RX_BUFFER
        {
            return buf;
        }
        BytesMut::zeroed(RX_BUFFER)
    }

    /// Delivers the impaired packets whose hold time is over.
    pub fn release_due(&mut self, now: Instant, stack: &mut Stack, taps: &mut Taps) {
        let Link {
            tun,
            impairer,
            vnet_hdr,
            split_buf,
            write_errors,
            ..
        } = self;
        if let Some(impairer) = impairer.as_mut() {
            impairer.release_due(now, |direction, p| match direction {
                Direction::Inbound => to_stack(stack, taps, now, p, &VirtioNetRepr::PLAIN),
                Direction::Outbound => {
                    plain_to_tun(tun, taps, now, *vnet_hdr, split_buf, write_errors, p);
                }
            });
        }
    }

    /// Writes every packet the stack has to send; returns how many it
    /// took from the stack. A traced connection's record of each packet is
    /// pumped to `taps.traces` before the impairer's verdict on it.
    pub fn transmit(&mut self, now: Instant, stack: &mut Stack, taps: &mut Taps) -> usize {
        let Link {
            tun,
            impairer,
            vnet_hdr,
            tx_buf,
            split_buf,
            write_errors,
            rx_lent,
            ..
        } = self;
        let mut sent = 0;
        release_spares(rx_lent);
        if let Some(impairer) = impairer.as_mut() {
            // Plain MSS-sized packets, impaired one by one (module docs).
            while let Some(n) = stack.poll_transmit(now, tx_buf) {
                sent += 1;
                let packet = &tx_buf[..n];
                if !taps.traces.is_empty() {
                    taps.traces.pump(stack);
                }
                taps.stack_out(now, packet);
                let done = impairer.process(now, Direction::Outbound, packet, |_, p| {
                    plain_to_tun(tun, taps, now, *vnet_hdr, split_buf, write_errors, p);
                });
                taps.impaired(stack, now, Direction::Outbound, packet, done);
            }
        } else {
            // One writev per packet: the virtio-net header (if the device
            // takes one), the stack's IP and TCP headers, and the payload
            // in place in the connection's send buffer — no copy of ours.
            // A capture sees whole packets: the stack then writes them
            // whole into `tx_buf` (one copy, only while a capture runs).
            let whole = taps.captures.is_active();
            let (vnet, packet_buf) = tx_buf.split_at_mut(if *vnet_hdr { VNET_HDR_LEN } else { 0 });
            while let Some(tx) = stack.poll_transmit_vectored(now, packet_buf, whole) {
                sent += 1;
                if whole {
                    taps.stack_out(now, tx.head);
                    taps.link_out(now, tx.head);
                }
                if *vnet_hdr {
                    tx.offload.emit(vnet);
                }
                let parts = [&vnet[..], tx.head, tx.payload[0], tx.payload[1]];
                let mut iov = [IoSlice::new(&[]); 4];
                let mut count = 0;
                for part in parts.into_iter().filter(|p| !p.is_empty()) {
                    iov[count] = IoSlice::new(part);
                    count += 1;
                }
                let written = nix::sys::uio::writev(tcpd_sys::tun_fd(tun), &iov[..count]);
                if let Err(e) = written {
                    tun_write_failed(write_errors, e.into());
                }
                if !taps.traces.is_empty() {
                    taps.traces.pump(stack);
                }
            }
        }
        sent
    }
}

/// Lets go of free lent buffers at the front beyond [`RX_SPARE_MAX`] (an
/// idle link keeps at most that many).
fn release_spares(rx_lent: &mut VecDeque<Bytes>) {
    let free = rx_lent.iter().take_while(|frame| frame.is_unique()).count();
    if free > RX_SPARE_MAX {
        rx_lent.drain(RX_SPARE_MAX..free);
    }
}

/// A wire-sized packet from the TUN through the impairer into the stack;
/// traced connections learn the impairer's verdict.
fn impair_inbound(
    impairer: &mut Impairer,
    now: Instant,
    stack: &mut Stack,
    taps: &mut Taps,
    packet: &[u8],
) {
    let done = impairer.process(now, Direction::Inbound, packet, |_, p| {
        to_stack(stack, taps, now, p, &VirtioNetRepr::PLAIN)
    });
    taps.impaired(stack, now, Direction::Inbound, packet, done);
}

/// A packet (after impairment) into the stack.
fn to_stack(
    stack: &mut Stack,
    taps: &mut Taps,
    now: Instant,
    packet: &[u8],
    header: &VirtioNetRepr,
) {
    taps.stack_in(now, packet);
    stack.handle_packet_offload(now, packet, header);
}

/// A plain packet (complete checksums, at most the MTU) onto the TUN, behind
/// an all-zero virtio-net header if the device takes one (staged in `scratch`).
fn plain_to_tun(
    tun: &::tun::AsyncDevice,
    taps: &mut Taps,
    now: Instant,
    vnet_hdr: bool,
    scratch: &mut Vec<u8>,
    write_errors: &mut u64,
    packet: &[u8],
) {
    taps.link_out(now, packet);
    if vnet_hdr {
        scratch.clear();
        scratch.resize(VNET_HDR_LEN, 0);
        scratch.extend_from_slice(packet);
        to_tun(tun, write_errors, scratch);
    } else {
        to_tun(tun, write_errors, packet);
    }
}

/// Bytes (virtio-net header included, if any) onto the TUN, without waiting.
fn to_tun(tun: &::tun::AsyncDevice, write_errors: &mut u64, packet: &[u8]) {
    let device: &::tun::Device = tun;
    if let Err(e) = device.send(packet) {
        tun_write_failed(write_errors, e);
    }
}

/// A TUN write failed: counted, logged now and then; the packet is lost
/// (TCP recovers).
fn tun_write_failed(write_errors: &mut u64, e: std::io::Error) {
    *write_errors += 1;
    if *write_errors < 10 || write_errors.is_power_of_two() {
        tracing::warn!(error = %e, count = *write_errors, "TUN write failed; packet dropped");
    }
}
