//! Initial sequence numbers per RFC 6528 §3: ISN = M + F(localip, localport,
//! remoteip, remoteport, secretkey), with M a 4-microsecond timer and F a
//! keyed hash (SipHash-2-4 here). The key comes from the caller (the OS random
//! source in the daemon, a fixed value in tests).

use crate::seq::SeqNum;
use crate::time::Instant;
use core::net::SocketAddrV4;

/// Generates ISNs from a secret key.
#[derive(Clone, Debug)]
pub struct IsnGenerator {
    key: [u8; 16],
}

impl IsnGenerator {
    pub fn new(key: [u8; 16]) -> Self {
        IsnGenerator { key }
    }

    /// The ISN for a connection between `local` and `remote` at `now`.
    pub fn isn(&self, local: SocketAddrV4, remote: SocketAddrV4, now: Instant) -> SeqNum {
        let _ = (local, remote, now, self.key);
        todo!("helper: RFC 6528")
    }
}
