//! The one rtnetlink request the daemon makes: "generate no IPv6 link-local
//! address on the TUN" (`IFLA_INET6_ADDR_GEN_MODE = IN6_ADDR_GEN_MODE_NONE`
//! in an `RTM_SETLINK`), the same setting as the sysctl
//! `net/ipv6/conf/<tun>/addr_gen_mode = 1`, which the hardened systemd unit
//! cannot write (`ProtectKernelTunables=` makes `/proc/sys` read-only).
//!
//! Why it matters: without a link-local address the kernel sends no router
//! solicitations into the TUN (Linux sends them when the link-local
//! address's DAD completes, addrconf_dad_completed), and on the TUN
//! (`IFF_NOARP`) it joins no solicited-node group, so it sends no MLD
//! reports and no DAD probes either: the only IPv6 packets the kernel puts
//! into the TUN are the ones routed to tcpd's prefix.
//!
//! The message is built here (four fixed headers, 48 bytes) rather than with
//! an rtnetlink crate: it is the only netlink the daemon speaks. Needs
//! CAP_NET_ADMIN and `AF_NETLINK` (the unit allows it for this).

use std::io;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

/// `IFLA_AF_SPEC` (linux/if_link.h): per-address-family link attributes.
const IFLA_AF_SPEC: u16 = 26;
/// `IFLA_INET6_ADDR_GEN_MODE` (linux/if_link.h), inside `AF_INET6`.
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
/// `IN6_ADDR_GEN_MODE_NONE` (linux/if_link.h): no link-local address.
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;

/// The `RTM_SETLINK` request for interface `index` (sequence number 1).
fn set_addr_gen_mode_none(index: u32) -> Vec<u8> {
    // rtattr: u16 length (header included, padding excluded), u16 type.
    let mode_attr_len: u16 = 4 + 1; // padded to 8
    let inet6_len: u16 = 4 + 8;
    let af_spec_len: u16 = 4 + inet6_len;
    let total: u32 = 16 + 16 + u32::from(af_spec_len);
    let mut msg = Vec::with_capacity(total as usize);
    // struct nlmsghdr
    msg.extend_from_slice(&total.to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_SETLINK.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // nlmsg_seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel
    // struct ifinfomsg: family AF_UNSPEC, pad, type, index, flags, change
    msg.extend_from_slice(&[0, 0, 0, 0]);
    msg.extend_from_slice(&index.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE: u8 } }
    msg.extend_from_slice(&af_spec_len.to_ne_bytes());
    msg.extend_from_slice(&IFLA_AF_SPEC.to_ne_bytes());
    msg.extend_from_slice(&inet6_len.to_ne_bytes());
    msg.extend_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
    msg.extend_from_slice(&mode_attr_len.to_ne_bytes());
    msg.extend_from_slice(&IFLA_INET6_ADDR_GEN_MODE.to_ne_bytes());
    msg.extend_from_slice(&[IN6_ADDR_GEN_MODE_NONE, 0, 0, 0]);
    debug_assert_eq!(msg.len(), total as usize);
    msg
}

/// Tells the kernel to generate no IPv6 link-local address on `name`
/// (before the device goes up). Waits for the kernel's acknowledgement.
pub fn disable_link_local(name: &str) -> io::Result<()> {
    let index = nix::net::if_::if_nametoindex(name)?;
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    let kernel = NetlinkAddr::new(0, 0);
    sendto(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &set_addr_gen_mode_none(index),
        &kernel,
        MsgFlags::empty(),
    )?;
    // The acknowledgement: an NLMSG_ERROR whose error is 0 (or -errno).
    let mut reply = [0u8; 1024];
    let n = recv(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &mut reply,
        MsgFlags::empty(),
    )?;
    ack_error(&reply[..n])
}

/// The result an `NLMSG_ERROR` acknowledgement carries.
fn ack_error(reply: &[u8]) -> io::Result<()> {
    let field = |at: usize, len: usize| reply.get(at..at + len);
    let kind = field(4, 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let error = field(16, 4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match (kind, error) {
        (Some(k), Some(0)) if i32::from(k) == libc::NLMSG_ERROR => Ok(()),
        (Some(k), Some(e)) if i32::from(k) == libc::NLMSG_ERROR => {
            Err(io::Error::from_raw_os_error(-e))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected rtnetlink reply",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_48_bytes_with_nested_attributes() {
        let msg = set_addr_gen_mode_none(7);
        assert_eq!(msg.len(), 48);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 48);
        assert_eq!(u32::from_ne_bytes(msg[20..24].try_into().unwrap()), 7);
        // IFLA_AF_SPEC(16) > AF_INET6(12) > ADDR_GEN_MODE(5) = NONE.
        assert_eq!(u16::from_ne_bytes(msg[32..34].try_into().unwrap()), 16);
        assert_eq!(u16::from_ne_bytes(msg[36..38].try_into().unwrap()), 12);
        assert_eq!(u16::from_ne_bytes(msg[38..40].try_into().unwrap()), 10);
        assert_eq!(msg[44], IN6_ADDR_GEN_MODE_NONE);
    }

    #[test]
    fn acknowledgements_decode() {
        let mut ack = [0u8; 36];
        ack[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        assert!(ack_error(&ack).is_ok());
        ack[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            ack_error(&ack).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert!(ack_error(&ack[..10]).is_err());
    }
}
