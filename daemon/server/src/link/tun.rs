//! Creating and configuring the TUN device (needs CAP_NET_ADMIN).
//!
//! The device is created with the host-side address, netmask and MTU and
//! brought up, so the kernel routes tcpd's prefix into it. With IPv6
//! (`--address6`, on by default) the kernel side also gets its IPv6
//! address and prefix (SIOCSIFADDR on an AF_INET6 socket, which also adds
//! the prefix route). Before the device goes up, the kernel is told by
//! rtnetlink to generate no IPv6 link-local address on it
//! ([`super::netlink`], `addr_gen_mode` none; the sysctl is the fallback),
//! so it sends no router solicitations, MLD reports or DAD probes into the
//! TUN (tcpd would count them as not for it) — this works under the systemd
//! unit, whose ProtectKernelTunables= makes /proc/sys read-only.
//! `disable_ipv6 = 0` is written best effort (a new device starts with the
//! `default` value, 0 on Linux). The TUN is a layer-3 link: no neighbour
//! discovery. Without `--address6`, `disable_ipv6 = 1` is written instead
//! (best effort: with no link-local address and no IPv6 address the kernel
//! sends nothing into the TUN anyway).
//!
//! Offload (on unless `--offload off`): the device is opened with
//! `IFF_VNET_HDR`, so every read and write starts with a 10-byte
//! `virtio_net_hdr` (Linux's default `TUNSETVNETHDRSZ`), and
//! `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)` tells the kernel it
//! may hand tcpd coalesced TCP segments of up to 64 KiB with partial
//! checksums, over either family, and that tcpd's own writes may be such
//! super-segments. If the kernel's TUN driver does not offer
//! `IFF_VNET_HDR` (`TUNGETFEATURES`, or the query fails, as QEMU reads it),
//! the device is made without the header; if it refuses the ioctl, the
//! header stays, all-zero (a plain packet with a complete checksum). Either
//! way one line is logged and the link runs without offload.
//!
//! Shards (`--shards N`, N > 1): the device is created with
//! `IFF_MULTI_QUEUE` and opened N times ([`tcpd_sys::open_tun_queue`]),
//! one queue per shard; the configuration above is done once, through the
//! first queue (address, MTU and offload belong to the device).

use crate::config::{self, Settings};
use tcpd_stack::LinkOffload;

/// `TUN_F_*` offload bits of `TUNSETOFFLOAD` (linux/if_tun.h).
mod tun_f {
    /// The device may hand out packets with partial checksums (NEEDS_CSUM).
    pub const CSUM: u32 = 0x01;
    /// ... and TCPv4 super-segments (implies CSUM).
    pub const TSO4: u32 = 0x02;
    /// ... and TCPv6 super-segments (implies CSUM).
    pub const TSO6: u32 = 0x04;
}

/// The opened device and what its link does.
pub struct TunDevice {
    pub device: tun::Device,
    /// The other queues of a multi-queue device (one per shard after the
    /// first); empty with one shard.
    pub queues: Vec<tun::Device>,
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

/// The kernel refused IPv6 on the TUN (the device itself was fine): the
/// caller may retry with IPv4 only.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Ipv6Refused(String);

/// Creates and configures the TUN device named in `settings`.
pub fn open(settings: &Settings) -> anyhow::Result<TunDevice> {
    let vnet_hdr = settings.offload && vnet_hdr_offered();
    let mut cfg = tun::Configuration::default();
    cfg.tun_name(&settings.tun)
        .address(settings.host_address)
        .netmask(config::netmask(settings.prefix_len))
        .mtu(settings.mtu);
    if vnet_hdr {
        cfg.platform_config(|p| {
            p.vnet_hdr(true);
        });
    }
    let cannot = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!("cannot create TUN device {}: {e}", settings.tun)
    };
    use tun::AbstractDevice;
    let mut device = if settings.shards > 1 {
        let mut first = tcpd_sys::open_tun_queue(&settings.tun, vnet_hdr, settings.mtu)
            .map_err(|e| cannot(&e))?;
        first.configure(&cfg).map_err(|e| cannot(&e))?;
        first
    } else {
        tun::create(&cfg).map_err(|e| cannot(&e))?
    };
    let queues = (1..settings.shards)
        .map(|_| tcpd_sys::open_tun_queue(&settings.tun, vnet_hdr, settings.mtu))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| anyhow::anyhow!("cannot open another queue of {}: {e}", settings.tun))?;
    // Before the device goes up, so the kernel generates no link-local
    // address (and sends nothing) when IPv6 starts on it. By rtnetlink, which
    // the hardened unit allows (its ProtectKernelTunables= makes /proc/sys
    // read-only); the sysctl is the fallback.
    let sysctl = |name: &str, value: &[u8]| {
        let path = format!("/proc/sys/net/ipv6/conf/{}/{name}", settings.tun);
        if let Err(e) = std::fs::write(&path, value) {
            tracing::debug!(error = %e, path, "cannot set an IPv6 sysctl of the TUN");
        }
    };
    if let Err(e) = super::netlink::disable_link_local(&settings.tun) {
        tracing::debug!(error = %e, "rtnetlink: cannot turn the TUN's IPv6 link-local off");
        sysctl("addr_gen_mode", b"1");
    }
    match settings.ipv6 {
        // A new device starts with `default/disable_ipv6` (0 unless the host
        // turned IPv6 off; then adding the address below fails and the
        // default configuration falls back to IPv4 only).
        Some(_) => sysctl("disable_ipv6", b"0"),
        // IPv4 only: keep the kernel from sending IPv6 into the TUN (without
        // /proc/sys, the missing link-local address already does).
        None => sysctl("disable_ipv6", b"1"),
    }
    device
        .enabled(true)
        .map_err(|e| anyhow::anyhow!("cannot bring {} up: {e}", settings.tun))?;
    if let Some(v6) = settings.ipv6 {
        add_ipv6_address(&settings.tun, v6.host, v6.address.prefix_len()).map_err(|e| {
            anyhow::Error::new(Ipv6Refused(format!(
                "cannot give {} its IPv6 address {}/{} (IPv6 disabled in this kernel or \
                 namespace? --address6 none runs IPv4 only): {e}",
                settings.tun,
                v6.host,
                v6.address.prefix_len()
            )))
        })?;
    }
    let offload = if vnet_hdr {
        match tcpd_sys::set_tun_offload(&device, tun_f::CSUM | tun_f::TSO4 | tun_f::TSO6) {
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
        queues,
        vnet_hdr,
        offload,
    })
}

/// Whether the kernel's TUN driver offers `IFF_VNET_HDR`; logs the one
/// fallback line when not (a failed query counts as "no", as QEMU reads
/// it: drivers older than the query lack the header too).
fn vnet_hdr_offered() -> bool {
    let refusal = match tcpd_sys::tun_features() {
        Ok(features) if features & libc::IFF_VNET_HDR as u32 != 0 => return true,
        Ok(features) => format!("features {features:#x}"),
        Err(e) => e.to_string(),
    };
    tracing::warn!(
        error = %refusal,
        "TUN offload refused (no IFF_VNET_HDR in TUNGETFEATURES); running without"
    );
    false
}

/// Adds `host/prefix_len` to the interface `name` (and with it the prefix
/// route into the TUN).
fn add_ipv6_address(name: &str, host: std::net::Ipv6Addr, prefix_len: u8) -> anyhow::Result<()> {
    let index = nix::net::if_::if_nametoindex(name)?;
    tcpd_sys::add_ipv6_address(index, host, prefix_len)?;
    Ok(())
}
