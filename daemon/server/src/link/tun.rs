//! Creating and configuring the TUN device (needs CAP_NET_ADMIN).
//!
//! The device is created with the host-side address, netmask and MTU and
//! brought up, so the kernel routes tcpd's prefix into it. IPv6 is switched
//! off on it (tcpd speaks IPv4 only).
//!
//! Offload (on unless `--offload off`): the device is opened with
//! `IFF_VNET_HDR`, so every read and write starts with a 10-byte
//! `virtio_net_hdr` (Linux's default `TUNSETVNETHDRSZ`), and
//! `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4)` tells the kernel it may hand tcpd
//! coalesced TCP segments of up to 64 KiB with partial checksums, and that
//! tcpd's own writes may be such super-segments. If the kernel refuses the
//! ioctl, one line is logged and the link runs without offload (the header
//! stays, all-zero: a plain packet with a complete checksum).

use crate::config::{self, Settings};
use tcpd_stack::LinkOffload;

/// `TUN_F_*` offload bits of `TUNSETOFFLOAD` (linux/if_tun.h).
mod tun_f {
    /// The device may hand out packets with partial checksums (NEEDS_CSUM).
    pub const CSUM: u32 = 0x01;
    /// ... and TCPv4 super-segments (implies CSUM).
    pub const TSO4: u32 = 0x02;
}

// TUNSETOFFLOAD = _IOW('T', 208, unsigned int) (linux/if_tun.h); the
// argument is the flag word itself, passed by value.
nix::ioctl_write_int!(tun_set_offload, b'T', 208);

/// The opened device and what its link does.
pub struct TunDevice {
    pub device: tun::Device,
    /// Reads and writes carry a virtio-net header.
    pub vnet_hdr: bool,
    /// What the kernel agreed to do (all off without offload).
    pub offload: LinkOffload,
}

impl std::fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunDevice")
            .field("vnet_hdr", &self.vnet_hdr)
            .field("offload", &self.offload)
            .finish_non_exhaustive()
    }
}

/// Creates and configures the TUN device named in `settings`.
pub fn open(settings: &Settings) -> anyhow::Result<TunDevice> {
    let mut cfg = tun::Configuration::default();
    cfg.tun_name(&settings.tun)
        .address(settings.host_address)
        .netmask(config::netmask(settings.prefix_len))
        .mtu(settings.mtu)
        .up();
    if settings.offload {
        cfg.platform_config(|p| {
            p.vnet_hdr(true);
        });
    }
    let device = tun::create(&cfg)
        .map_err(|e| anyhow::anyhow!("cannot create TUN device {}: {e}", settings.tun))?;
    // tcpd speaks IPv4 only: keep the kernel from sending IPv6 (router
    // solicitations, MLD) into the TUN. Best effort: IPv6 may be disabled.
    let ipv6_switch = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", settings.tun);
    if let Err(e) = std::fs::write(&ipv6_switch, b"1") {
        tracing::debug!(error = %e, "cannot disable IPv6 on the TUN");
    }
    let offload = if settings.offload {
        match set_offload(&device, tun_f::CSUM | tun_f::TSO4) {
            Ok(()) => LinkOffload {
                segmentation: true,
                checksum: true,
            },
            Err(e) => {
                tracing::warn!(error = %e, "TUN offload refused (TUNSETOFFLOAD); running without");
                LinkOffload::default()
            }
        }
    } else {
        LinkOffload::default()
    };
    Ok(TunDevice {
        device,
        vnet_hdr: settings.offload,
        offload,
    })
}

/// `TUNSETOFFLOAD` on the device.
#[allow(unsafe_code)]
fn set_offload(device: &tun::Device, flags: u32) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is the open TUN device `device` borrows for the whole
    // call; TUNSETOFFLOAD reads its argument as a plain integer (no pointer
    // is passed), so no memory is shared with the kernel.
    unsafe {
        tun_set_offload(
            device.as_raw_fd(),
            nix::sys::ioctl::ioctl_param_type::from(flags),
        )
    }
    .map(|_| ())
}
