//! Packets that reached the wrong shard's TUN queue, passed to the right one.
//!
//! The kernel picks the queue of a packet it sends into a multi-queue TUN
//! by the flow's recorded queue — the one tcpd last wrote the flow's
//! packets on — or, for a flow it has not seen tcpd write, by a hash
//! (drivers/net/tun.c, `tun_automq_select_queue`). It records the queue
//! only after its own receive path has run (`tun_flow_update` follows
//! `netif_receive_skb` in `tun_get_user`), and a peer on this host answers
//! inside that receive path: the SYN-ACK (or RST) answering a connect's
//! SYN leaves before the kernel knows the flow's queue, so it goes by the
//! hash, to any shard. Every later packet of the flow follows tcpd's
//! writes.
//!
//! So a shard hands a SYN-ACK or RST addressed to a port of another shard's
//! ephemeral slice ([`crate::shards::port_slice`]: connects take their
//! local port from their shard's slice) to that shard instead of its own
//! stack, which would answer it with a RST. Nothing else is checked: data
//! of tcpd's connections follows the recorded queue, and a connection the
//! kernel opens belongs to the shard its SYN reached.
//!
//! Limits: a connect from an explicitly bound port (outside the slices)
//! gets no such help — its SYN-ACK reaches its shard only when the hash
//! says so, else it is refused and retried after the SYN's timeout.

use bytes::Bytes;
use tcpd_stack::LocalPortRange;
use tokio::sync::mpsc;

/// Packets one shard may have waiting for another (beyond, dropped: TCP
/// retransmits the SYN).
pub const FORWARD_QUEUE: usize = 1024;

/// One shard's part of the steering: who owns which ports, and the way to
/// every other shard.
#[derive(Debug)]
pub struct Steering {
    /// This shard's index.
    me: usize,
    /// Every shard's slice of the ephemeral range, by index.
    slices: Vec<LocalPortRange>,
    /// Every shard's inbox (this one's included, unused).
    peers: Vec<mpsc::Sender<Bytes>>,
    /// Packets passed on, and dropped because the owner's inbox was full.
    pub forwarded: u64,
    pub dropped: u64,
}

impl Steering {
    /// The steering of the shards whose connects use `slices`, and each
    /// one's inbox: the packets other shards pass to it.
    pub fn for_shards(slices: &[LocalPortRange]) -> Vec<(Steering, mpsc::Receiver<Bytes>)> {
        let (peers, inboxes): (Vec<_>, Vec<_>) =
            slices.iter().map(|_| mpsc::channel(FORWARD_QUEUE)).unzip();
        inboxes
            .into_iter()
            .enumerate()
            .map(|(me, inbox)| {
                let steering = Steering {
                    me,
                    slices: slices.to_vec(),
                    peers: peers.clone(),
                    forwarded: 0,
                    dropped: 0,
                };
                (steering, inbox)
            })
            .collect()
    }

    /// Passes `frame` (the TUN read: `header_len` bytes of virtio-net
    /// header, then the IP packet) to the shard that owns it, if that is
    /// another one; false if it is this shard's.
    pub fn forward(&mut self, frame: &[u8], header_len: usize) -> bool {
        let Some(packet) = frame.get(header_len..) else {
            return false;
        };
        let Some(owner) =
            owner_port(packet).and_then(|port| self.slices.iter().position(|s| s.contains(port)))
        else {
            return false;
        };
        if owner == self.me {
            return false;
        }
        match self.peers[owner].try_send(Bytes::copy_from_slice(frame)) {
            Ok(()) => self.forwarded += 1,
            Err(_) => self.dropped += 1,
        }
        true
    }
}

/// TCP flag bits (RFC 9293 §3.1).
const RST: u8 = 0x04;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// The destination port of a TCP SYN-ACK or RST (what may reach the wrong
/// shard, see the module docs), or `None` for anything else. Reads only
/// fixed offsets; a short or odd packet is `None` (the stack judges it).
fn owner_port(packet: &[u8]) -> Option<u16> {
    let tcp = match packet.first()? >> 4 {
        4 if packet.get(9) == Some(&6) => usize::from(packet[0] & 0x0f) * 4,
        // IPv6 with TCP right after the fixed header (no extension headers).
        6 if packet.get(6) == Some(&6) => 40,
        _ => return None,
    };
    let flags = *packet.get(tcp + 13)?;
    let steered = flags & RST != 0 || (flags & SYN != 0 && flags & ACK != 0);
    if !steered {
        return None;
    }
    Some(u16::from_be_bytes([
        *packet.get(tcp + 2)?,
        *packet.get(tcp + 3)?,
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_tcp(dst_port: u16, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = 6;
        p[22..24].copy_from_slice(&dst_port.to_be_bytes());
        p[33] = flags;
        p
    }

    #[test]
    fn a_syn_ack_or_rst_for_another_shards_port_goes_to_that_shard() {
        let slices = [
            LocalPortRange::new(32768, 46883).expect("a range"),
            LocalPortRange::new(46884, 60999).expect("a range"),
        ];
        let mut shards = Steering::for_shards(&slices);
        let (mut one, mut inbox) = shards.pop().expect("two");
        let (mut zero, _) = shards.pop().expect("two");
        let zero = &mut zero;
        // Shard 0 keeps what is its own and what no slice owns.
        assert!(!zero.forward(&ipv4_tcp(33000, SYN | ACK), 0));
        assert!(!zero.forward(&ipv4_tcp(8080, SYN | ACK), 0));
        // ... and data, which follows the queue tcpd writes on.
        assert!(!zero.forward(&ipv4_tcp(50000, ACK), 0));
        // A SYN-ACK or RST for shard 1's port goes to shard 1, header and all.
        let mut framed = vec![9u8; 10];
        framed.extend(ipv4_tcp(50000, SYN | ACK));
        assert!(zero.forward(&framed, 10));
        assert!(zero.forward(&ipv4_tcp(50000, RST | ACK), 0));
        assert_eq!(zero.forwarded, 2);
        assert_eq!(inbox.try_recv().expect("passed on"), framed);
        assert!(inbox.try_recv().is_ok());
        assert!(!one.forward(&framed, 10), "shard 1 keeps its own");
        // Short or odd packets stay (the stack drops them).
        assert!(!zero.forward(&[0x45, 0, 0], 0));
        assert!(!zero.forward(&[], 0));
        let mut v6 = vec![0u8; 60];
        v6[0] = 0x60;
        v6[6] = 6;
        v6[42..44].copy_from_slice(&50000u16.to_be_bytes());
        v6[53] = RST;
        assert!(zero.forward(&v6, 0));
    }
}
