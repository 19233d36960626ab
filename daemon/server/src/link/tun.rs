//! Creating and configuring the TUN device (needs CAP_NET_ADMIN).
//!
//! The device is created with the host-side address, netmask and MTU and
//! brought up, so the kernel routes tcpd's prefix into it. IPv6 is switched
//! off on it (tcpd speaks IPv4 only).

use crate::config::{self, Settings};

/// Creates and configures the TUN device named in `settings`.
pub fn open(settings: &Settings) -> anyhow::Result<tun::Device> {
    let mut cfg = tun::Configuration::default();
    cfg.tun_name(&settings.tun)
        .address(settings.host_address)
        .netmask(config::netmask(settings.prefix_len))
        .mtu(settings.mtu)
        .up();
    let device = tun::create(&cfg)
        .map_err(|e| anyhow::anyhow!("cannot create TUN device {}: {e}", settings.tun))?;
    // tcpd speaks IPv4 only: keep the kernel from sending IPv6 (router
    // solicitations, MLD) into the TUN. Best effort: IPv6 may be disabled.
    let ipv6_switch = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", settings.tun);
    if let Err(e) = std::fs::write(&ipv6_switch, b"1") {
        tracing::debug!(error = %e, "cannot disable IPv6 on the TUN");
    }
    Ok(device)
}
