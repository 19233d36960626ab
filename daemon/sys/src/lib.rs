//! The daemon's few system calls that no safe wrapper covers.
//!
//! tcpd (`daemon/server`) forbids unsafe code; what it needs from the
//! kernel beyond nix, tokio, tun and std lives here, each as a safe function
//! whose soundness does not depend on its caller:
//!
//! - [`add_ipv6_address`]: `SIOCSIFADDR` on an `AF_INET6` socket (nix has
//!   no typed wrapper for `struct in6_ifreq`);
//! - [`set_tun_offload`]: `TUNSETOFFLOAD` on the TUN device;
//! - [`tun_features`]: `TUNGETFEATURES` (the `IFF_*` flags the kernel's TUN
//!   driver offers);
//! - [`open_tun_queue`]: one queue of a multi-queue TUN device
//!   (`TUNSETIFF` with `IFF_MULTI_QUEUE`, which the `tun` crate refuses);
//! - [`tun_fd`]: the TUN device's descriptor as a [`BorrowedFd`] (the `tun`
//!   crate implements `AsRawFd` only, and its `write_vectored` writes only
//!   the first slice);
//! - [`socket_cookie`], [`socket_domain`]: `getsockopt(SO_COOKIE)` and
//!   `getsockopt(SO_DOMAIN)` (not in nix's typed socket options);
//! - [`recv_with_fds`]: `recvmsg(2)` whose `SCM_RIGHTS` descriptors come
//!   back owned (nix hands out bare `RawFd`s);
//! - [`Readable`]: a descriptor registered with tokio for reading
//!   (`AsyncFd::register_with_interest` is unsafe since tokio 1.54).
//!
//! Invariants every unsafe block here relies on, stated once:
//! - a descriptor is only ever passed to the kernel while something owns
//!   or borrows it (`OwnedFd`, `BorrowedFd`, a `&tun::Device`), so it is
//!   open and is the one meant;
//! - memory handed to the kernel is a local, fully initialised value of
//!   exactly the size the call is told, alive across the call;
//! - a descriptor becomes an `OwnedFd` only when the kernel has just
//!   installed it in this process for this call (`SCM_RIGHTS`), so nothing
//!   else owns it;
//! - a descriptor registered with tokio is owned by the registration and
//!   never reachable mutably, so it stays open and the same until the
//!   registration is dropped.
//!
//! Each unsafe block carries its own SAFETY comment. Nothing else belongs
//! here: whatever a safe crate API can do stays in tcpd.

use std::io::{self, IoSliceMut};
use std::net::Ipv6Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, socket,
};

// SIOCSIFADDR on an AF_INET6 socket takes a `struct in6_ifreq` and adds
// that address to the interface (Linux addrconf_add_ifaddr).
nix::ioctl_write_ptr_bad!(siocsifaddr_in6, libc::SIOCSIFADDR, libc::in6_ifreq);
// TUNSETOFFLOAD = _IOW('T', 208, unsigned int) (linux/if_tun.h); the
// argument is the flag word itself, passed by value.
nix::ioctl_write_int!(tun_set_offload, b'T', 208);
// TUNGETFEATURES = _IOR('T', 207, unsigned int) (linux/if_tun.h): the
// kernel writes the flag word it supports.
nix::ioctl_read!(tun_get_features, b'T', 207, libc::c_uint);
// TUNSETIFF = _IOW('T', 202, int) (linux/if_tun.h), though its argument is
// a pointer to a `struct ifreq` the kernel also writes the name back into
// (hence "bad": the size in the code is an int's, not the ifreq's).
nix::ioctl_readwrite_bad!(
    tun_set_iff,
    nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
    libc::ifreq
);

/// Opens one queue of the multi-queue TUN device `name` (layer 3, no packet
/// information; `vnet_hdr`: every read and write carries a virtio-net
/// header), creating the device on the first call: `/dev/net/tun` +
/// `TUNSETIFF(IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE [| IFF_VNET_HDR])`.
/// Every queue of a device must be opened with the same flags. The device
/// is not configured (address, MTU, up): see `tun::AbstractDevice`.
pub fn open_tun_queue(name: &str, vnet_hdr: bool, mtu: u16) -> io::Result<tun::Device> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    let mut flags = libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;
    if vnet_hdr {
        flags |= libc::IFF_VNET_HDR;
    }
    // An all-zero ifreq is valid (a union of plain integers and arrays).
    let mut request = libc::ifreq {
        ifr_name: [0; libc::IFNAMSIZ],
        ifr_ifru: libc::__c_anonymous_ifr_ifru {
            ifru_flags: flags as libc::c_short,
        },
    };
    for (to, from) in request.ifr_name.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    // SAFETY: the fd is `file`, open and owned for the whole call;
    // `request` is a fully initialised ifreq (a NUL-terminated name within
    // IFNAMSIZ, the flags) that lives across the call and is lent mutably;
    // the kernel reads it and writes back only the name, within the struct.
    unsafe { tun_set_iff(file.as_raw_fd(), &mut request) }?;
    let mut config = tun::Configuration::default();
    config
        .tun_name(name)
        .mtu(mtu)
        .raw_fd(std::os::fd::IntoRawFd::into_raw_fd(file))
        .close_fd_on_drop(true);
    tun::Device::new(&config).map_err(io::Error::other)
}

/// Adds `host/prefix_len` to the interface with index `ifindex` (and with
/// it the prefix route into that interface).
pub fn add_ipv6_address(ifindex: u32, host: Ipv6Addr, prefix_len: u8) -> nix::Result<()> {
    let socket = socket(
        AddressFamily::Inet6,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let request = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr {
            s6_addr: host.octets(),
        },
        ifr6_prefixlen: u32::from(prefix_len),
        ifr6_ifindex: i32::try_from(ifindex).map_err(|_| nix::errno::Errno::ENODEV)?,
    };
    // SAFETY: the fd is the socket just opened and owned for the whole
    // call; `request` is a fully initialised in6_ifreq that lives across
    // the call and the kernel only reads it.
    unsafe { siocsifaddr_in6(socket.as_raw_fd(), &request) }?;
    Ok(())
}

/// `TUNSETOFFLOAD(flags)` on the TUN device (`TUN_F_*` bits).
pub fn set_tun_offload(device: &tun::Device, flags: u32) -> nix::Result<()> {
    // SAFETY: the fd is the open TUN device `device` borrows for the whole
    // call; TUNSETOFFLOAD reads its argument as a plain integer (no pointer
    // is passed), so no memory is shared with the kernel.
    unsafe {
        tun_set_offload(
            device.as_raw_fd(),
            nix::sys::ioctl::ioctl_param_type::from(flags),
        )
    }?;
    Ok(())
}

/// `TUNGETFEATURES`: the `IFF_*` flags `TUNSETIFF` accepts, asked on a
/// `/dev/net/tun` descriptor of its own (before any device is made).
pub fn tun_features() -> io::Result<u32> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut features: libc::c_uint = 0;
    // SAFETY: the fd is `file`, open and owned for the whole call;
    // `features` is an initialised c_uint, the size the request code
    // names, lent mutably across the call for the kernel to write.
    unsafe { tun_get_features(file.as_raw_fd(), &mut features) }?;
    Ok(features)
}

/// The TUN device's descriptor, borrowed for as long as the device is (for
/// `writev(2)` through nix, which takes `AsFd`).
pub fn tun_fd(device: &tun::Device) -> BorrowedFd<'_> {
    // SAFETY: `device` owns its descriptor and keeps it open while it
    // lives (it closes it only when dropped); the borrow cannot outlive
    // `device`.
    unsafe { BorrowedFd::borrow_raw(device.as_raw_fd()) }
}

/// An `int` option of the socket `fd` at level `SOL_SOCKET`.
fn int_option(fd: BorrowedFd<'_>, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a local int and
    // `len` says how many; `fd` is borrowed, so open, for the call.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// The address family of the socket `fd` (`getsockopt(SO_DOMAIN)`, an
/// `AF_*` number); `ENOTSOCK` for anything but a socket.
pub fn socket_domain(fd: impl AsFd) -> io::Result<libc::c_int> {
    int_option(fd.as_fd(), libc::SO_DOMAIN)
}

/// The kernel's cookie of the socket `fd` (`getsockopt(SO_COOKIE)`, Linux
/// 4.12+): a 64-bit number unique to one socket for the life of the
/// system, never reused. Fails with `ENOTSOCK` for anything but a socket,
/// without blocking whatever the descriptor is.
pub fn socket_cookie(fd: impl AsFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a local u64 and
    // `len` says how many; the descriptor is borrowed, so open, for the call.
    let r = unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<u64>() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(cookie)
}

/// Most descriptors one `SCM_RIGHTS` message can carry on Linux
/// (`SCM_MAX_FD`, include/net/scm.h); an `AF_UNIX` read never returns
/// descriptors of two messages at once.
const SCM_MAX_FD: usize = 253;

/// One non-blocking `recvmsg(2)` on `sock` into `buf`. Returns the bytes
/// read and the descriptors that came with them (`SCM_RIGHTS`, received
/// close-on-exec), each now owned by the caller: dropping one closes it.
/// There is room for every descriptor a message can carry, so the kernel
/// never truncates the control data (nix reports a truncated one as
/// `ENOBUFS` without giving out the descriptors it installed, which would
/// leak them).
pub fn recv_with_fds(sock: impl AsFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    let msg = recvmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            fds.extend(received.into_iter().map(|raw| {
                // SAFETY: `raw` comes from the SCM_RIGHTS message recvmsg(2)
                // just returned: a new descriptor installed in this process
                // for this call, which nothing else owns; it is adopted
                // exactly once.
                unsafe { OwnedFd::from_raw_fd(raw) }
            }));
        }
    }
    Ok((msg.bytes, fds))
}

/// A descriptor registered with the current tokio runtime for reading; it
/// owns the descriptor and closes it when dropped.
#[derive(Debug)]
pub struct Readable(tokio::io::unix::AsyncFd<OwnedFd>);

impl Readable {
    /// Registers `fd` with the current runtime (panics outside one, as
    /// tokio does) for [`tokio::io::Interest::READABLE`].
    pub fn register(fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: an OwnedFd is an open descriptor that it alone closes,
        // when the AsyncFd drops it; its as_raw_fd never changes, and
        // `Readable` never hands out `&mut` to it (no get_mut/into_inner),
        // so it cannot be swapped or closed while registered.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        registered.map(Self).map_err(io::Error::from)
    }

    /// Waits until the descriptor is readable; see
    /// [`tokio::io::unix::AsyncFd::readable`].
    pub async fn readable(&self) -> io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, OwnedFd>> {
        self.0.readable().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{ControlMessage, sendmsg, socketpair};
    use std::io::IoSlice;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair")
    }

    #[test]
    fn cookie_and_domain_of_a_socket_and_not_of_a_file() {
        let (a, b) = pair();
        let (ca, cb) = (socket_cookie(&a).expect("a"), socket_cookie(&b).expect("b"));
        assert_ne!(ca, cb);
        assert_eq!(socket_cookie(&a).expect("again"), ca);
        assert_eq!(socket_domain(&a).expect("domain"), libc::AF_UNIX);
        let file = std::fs::File::open("/proc/self/stat").expect("file");
        let e = socket_cookie(&file).expect_err("a file has no cookie");
        assert_eq!(e.raw_os_error(), Some(libc::ENOTSOCK));
        assert!(socket_domain(&file).is_err());
    }

    #[test]
    fn received_descriptors_are_owned_and_never_truncated() {
        let (tx, rx) = pair();
        let (x, y) = pair();
        let (z, _w) = pair();
        let raws = [x.as_raw_fd(), y.as_raw_fd(), z.as_raw_fd()];
        let sent = sendmsg::<()>(
            tx.as_raw_fd(),
            &[IoSlice::new(b"hi")],
            &[ControlMessage::ScmRights(&raws)],
            MsgFlags::empty(),
            None,
        )
        .expect("sendmsg");
        assert_eq!(sent, 2);
        let mut buf = [0u8; 8];
        let (n, fds) = recv_with_fds(&rx, &mut buf).expect("recvmsg");
        assert_eq!(&buf[..n], b"hi");
        let cookies = |fds: &[OwnedFd]| -> Vec<u64> {
            fds.iter()
                .map(|fd| socket_cookie(fd).expect("cookie"))
                .collect()
        };
        assert_eq!(cookies(&fds), cookies(&[x, y, z]));
        let many: Vec<OwnedFd> = (0..SCM_MAX_FD).map(|_| pair().0).collect();
        let raws: Vec<RawFd> = many.iter().map(AsRawFd::as_raw_fd).collect();
        sendmsg::<()>(
            tx.as_raw_fd(),
            &[IoSlice::new(b"!")],
            &[ControlMessage::ScmRights(&raws)],
            MsgFlags::empty(),
            None,
        )
        .expect("sendmsg of SCM_MAX_FD descriptors");
        let (n, fds) = recv_with_fds(&rx, &mut buf).expect("not truncated");
        assert_eq!((n, cookies(&fds)), (1, cookies(&many)));
        let e = recv_with_fds(&rx, &mut buf).expect_err("nothing more");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }
}
