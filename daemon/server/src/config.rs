//! Daemon configuration: command-line flags, an optional TOML file with the
//! same keys, and the defaults. Flags win over the file, the file over the
//! defaults. The result, [`Settings`], is validated once here (address and
//! prefix, MTU range, impairment syntax) so the rest of the daemon never sees
//! a malformed value.

use crate::impair::ImpairSpec;
use crate::limits::{LimitError, LimitFlags, Limits};
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;
use tcpd_stack::{Ipv6Net, LocalPortRange};

/// Smallest MTU tcpd accepts: IPv4 requires every link to carry 576-byte
/// datagrams (RFC 791 §3.1, RFC 1122 §3.3.3).
pub const MIN_MTU: u16 = 576;
/// Largest MTU accepted (a TUN device takes up to 64 KiB packets).
pub const MAX_MTU: u16 = 65535;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A switch written `on` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    On,
    Off,
}

/// Command-line flags. Every value is optional so the TOML file can supply it.
#[derive(Debug, Parser, Default)]
#[command(
    name = "tcpd",
    version,
    about = "User-space TCP/IP daemon (IPv4 and IPv6): owns a TUN device and serves a socket API over gRPC"
)]
pub struct Cli {
    /// TOML file with the same keys as the long flags (flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// TUN device name [default: tcpd0].
    #[arg(long, value_name = "NAME")]
    pub tun: Option<String>,
    /// tcpd's own address and prefix [default: 10.77.0.2/24].
    #[arg(long, value_name = "A.B.C.D/LEN")]
    pub address: Option<String>,
    /// Kernel side of the TUN [default: 10.77.0.1].
    #[arg(long, value_name = "A.B.C.D")]
    pub host_address: Option<Ipv4Addr>,
    /// tcpd's own IPv6 address and prefix, or `none` for IPv4 only [default: fd00:77::2/64].
    #[arg(long, value_name = "ADDR/LEN")]
    pub address6: Option<String>,
    /// Kernel side of the TUN over IPv6 [default: the prefix's first address, ::1].
    #[arg(long, value_name = "ADDR")]
    pub host_address6: Option<Ipv6Addr>,
    /// Link MTU [default: 1500].
    #[arg(long, value_name = "N")]
    pub mtu: Option<u16>,
    /// Unix socket path of the API [default: /run/tcpd/tcpd.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Group owning the socket (mode is always 0660).
    #[arg(long, value_name = "NAME")]
    pub socket_group: Option<String>,
    /// Log format [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level or tracing filter (RUST_LOG overrides) [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Maximum segment lifetime in ms; TIME-WAIT lasts twice this [default: 30000].
    #[arg(long, value_name = "MS")]
    pub msl_ms: Option<u64>,
    /// SYN retransmissions before connect fails with ETIMEDOUT [default: 6].
    #[arg(long, value_name = "N")]
    pub syn_retries: Option<u32>,
    /// Local ports connect, bind to port 0 and listen without bind pick from, as Linux's net.ipv4.ip_local_port_range (LOW >= 1024) [default: 32768,60999].
    #[arg(long, value_name = "LOW,HIGH")]
    pub ip_local_port_range: Option<String>,
    /// Packet impairment on the TUN, e.g. loss=5%,delay=10ms,jitter=5ms,reorder=2%,duplicate=1%,corrupt=0.5%,seed=N.
    #[arg(long, value_name = "SPEC")]
    pub impair: Option<String>,
    /// Drop to this user (and its primary group) once the TUN and socket are open.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Resource limits (the file's `[limits]` table).
    #[command(flatten)]
    pub limits: LimitFlags,
    /// TUN segmentation/checksum offload (virtio-net header, TSO) [default: on].
    #[arg(long, value_enum)]
    pub offload: Option<Switch>,
    /// Run the stack driver on a thread of its own instead of beside the API server [default: off].
    #[arg(long, value_enum)]
    pub driver_thread: Option<Switch>,
    /// Microseconds the daemon keeps polling its sockets and TUN without sleeping after a turn that did work (a sleeping CPU's wake-up costs more than a small request); 0 = never spin [default: 50].
    #[arg(long, value_name = "US")]
    pub busy_poll_us: Option<u64>,
    /// Stack shards: N > 1 opens the TUN with N queues (IFF_MULTI_QUEUE), each served by a driver on a thread of its own with its own stack; the kernel steers each flow to one queue. A prototype: the fd channel (libtcpd, tcpd-run) and Capture need 1 [default: 1].
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Sockets one API session may hold; beyond, EMFILE [default: 4096].
    #[arg(long, value_name = "N")]
    pub session_max_sockets: Option<usize>,
    /// Calls one API session may have blocked in the daemon; beyond, EAGAIN [default: 8192].
    #[arg(long, value_name = "N")]
    pub session_max_blocked_calls: Option<usize>,
    /// Bytes one API session's sockets may buffer in the stack plus its blocked writes' payloads: at it, its writes block and its windows stop growing; blocked writes' payloads beyond it get ENOBUFS [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub session_max_buffered_bytes: Option<usize>,
    /// Calls one API session may have queued for the driver; further calls wait for the session's own slots [default: 16].
    #[arg(long, value_name = "N")]
    pub session_op_slots: Option<usize>,
    /// Sockets all API sessions of one non-root uid may hold; beyond, EMFILE [default: 16384].
    #[arg(long, value_name = "N")]
    pub uid_max_sockets: Option<usize>,
    /// Bytes of large requests (over 64 KiB) one API session may have in the daemon, a Write until answered; beyond, ENOBUFS [default: 33554432].
    #[arg(long, value_name = "BYTES")]
    pub session_max_intake_bytes: Option<usize>,
}

/// The TOML file: the long flag names as keys (kebab-case), all optional.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    pub tun: Option<String>,
    pub address: Option<String>,
    pub host_address: Option<Ipv4Addr>,
    pub address6: Option<String>,
    pub host_address6: Option<Ipv6Addr>,
    pub mtu: Option<u16>,
    pub socket: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub msl_ms: Option<u64>,
    pub syn_retries: Option<u32>,
    pub ip_local_port_range: Option<String>,
    pub impair: Option<String>,
    pub user: Option<String>,
    pub limits: Option<LimitFlags>,
    pub offload: Option<Switch>,
    pub driver_thread: Option<Switch>,
    pub busy_poll_us: Option<u64>,
    pub shards: Option<usize>,
    pub session_max_sockets: Option<usize>,
    pub session_max_blocked_calls: Option<usize>,
    pub session_max_buffered_bytes: Option<usize>,
    pub session_op_slots: Option<usize>,
    pub uid_max_sockets: Option<usize>,
    pub session_max_intake_bytes: Option<usize>,
}

/// The validated configuration the daemon runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub tun: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub host_address: Ipv4Addr,
    /// tcpd's IPv6 address and prefix, and the kernel side's (`None`:
    /// IPv4 only).
    pub ipv6: Option<Ipv6Settings>,
    pub mtu: u16,
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub msl: Duration,
    pub syn_retries: Option<u32>,
    /// Where ephemeral ports come from (`--ip-local-port-range`).
    pub local_port_range: LocalPortRange,
    pub impair: Option<ImpairSpec>,
    pub user: Option<String>,
    pub limits: Limits,
    /// Ask for TUN offload (the link falls back when the kernel refuses).
    pub offload: bool,
    /// The driver on a thread of its own (`--driver-thread on`) rather
    /// than as a task on the API server's thread (see `lib.rs`).
    pub driver_thread: bool,
    /// The busy-poll window in µs, 0 = off ([`crate::busy_poll`]).
    pub busy_poll_us: u64,
    /// Stack shards (TUN queues and drivers; [`crate::shards`]), >= 1.
    pub shards: usize,
    pub quotas: crate::sockets::Quotas,
    /// Each API session's intake budget ([`crate::intake`]), in bytes.
    pub intake_bytes: usize,
}

/// The IPv6 side of the TUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Settings {
    /// tcpd's address and prefix.
    pub address: Ipv6Net,
    /// The kernel side's address (same prefix).
    pub host: Ipv6Addr,
    /// Asked for (flag or config key) rather than the default. A default
    /// IPv6 that the kernel refuses (IPv6 disabled, as in many containers)
    /// falls back to IPv4 only with a warning; an asked-for one fails.
    pub explicit: bool,
}

/// The default IPv6 prefix: a unique local address (RFC 4193) beside the
/// IPv4 default 10.77.0.0/24.
pub const DEFAULT_ADDRESS6: &str = "fd00:77::2/64";

/// A configuration error, reported before anything is opened.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid --address {0:?}: expected A.B.C.D/LEN with LEN in 1..=30")]
    Address(String),
    #[error("invalid --shards {0}: expected 1 to {max}", max = crate::shards::MAX_SHARDS)]
    Shards(usize),
    #[error("--host-address {host} is not inside {address}/{prefix_len} or equals tcpd's address")]
    HostAddress {
        host: Ipv4Addr,
        address: Ipv4Addr,
        prefix_len: u8,
    },
    #[error(
        "invalid --address6 {0:?}: expected ADDR/LEN (a unicast IPv6 address, LEN in 1..=126) or none"
    )]
    Address6(String),
    #[error("--host-address6 {host} is not inside {address} or equals tcpd's address")]
    HostAddress6 { host: Ipv6Addr, address: Ipv6Net },
    #[error(
        "--mtu {0} is below IPv6's minimum of 1280 (RFC 8200 §5): raise it or set --address6 none"
    )]
    Mtu6(u16),
    #[error("invalid --mtu {0}: must be in {MIN_MTU}..={MAX_MTU}")]
    Mtu(u16),
    #[error("invalid --tun {0:?}: must be 1..=15 characters without '/' or whitespace")]
    TunName(String),
    #[error("invalid --impair: {0}")]
    Impair(String),
    #[error(
        "invalid --ip-local-port-range {0:?}: expected LOW,HIGH with 1024 <= LOW <= HIGH <= 65535 (as Linux's sysctl)"
    )]
    PortRange(String),
    #[error("invalid --msl-ms 0: must be positive")]
    Msl,
    #[error("invalid --session-op-slots 0: must be positive")]
    OpSlots,
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// Parses `A.B.C.D/LEN`. Prefixes longer than /30 leave no room for the
/// host side plus tcpd on one link.
pub fn parse_address(s: &str) -> Result<(Ipv4Addr, u8), ConfigError> {
    let bad = || ConfigError::Address(s.to_string());
    let (ip, len) = s.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.trim().parse().map_err(|_| bad())?;
    let len: u8 = len.trim().parse().map_err(|_| bad())?;
    if !(1..=30).contains(&len) {
        return Err(bad());
    }
    Ok((ip, len))
}

/// Parses `ADDR/LEN` for IPv6, or `none` (IPv4 only). The address must be
/// unicast and not the prefix's first (the subnet-router anycast address,
/// RFC 4291 §2.6.1); /127 and /128 leave no room for the host side.
pub fn parse_address6(s: &str) -> Result<Option<Ipv6Net>, ConfigError> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") || s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let bad = || ConfigError::Address6(s.to_string());
    let net: Ipv6Net = s.parse().map_err(|_| bad())?;
    let ip = net.addr();
    if !(1..=126).contains(&net.prefix_len())
        || ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.to_ipv4_mapped().is_some()
        || ip == net.network()
    {
        return Err(bad());
    }
    Ok(Some(net))
}

/// Parses `LOW,HIGH` (or the sysctl's own `LOW HIGH`) for
/// `--ip-local-port-range`. Linux's sysctl refuses LOW > HIGH and a LOW
/// below `ip_unprivileged_port_start` (1024 by default).
pub fn parse_port_range(s: &str) -> Result<LocalPortRange, ConfigError> {
    let bad = || ConfigError::PortRange(s.to_string());
    let mut parts = s
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty());
    let (Some(low), Some(high), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let low: u16 = low.parse().map_err(|_| bad())?;
    let high: u16 = high.parse().map_err(|_| bad())?;
    if low < 1024 {
        return Err(bad());
    }
    LocalPortRange::new(low, high).ok_or_else(bad)
}

/// The default host side of `net`: the prefix's first address after the
/// subnet-router anycast one (`::1`), or the next if that is tcpd's.
fn default_host6(net: Ipv6Net) -> Ipv6Addr {
    let first = u128::from(net.network()) + 1;
    let host = if first == u128::from(net.addr()) {
        first + 1
    } else {
        first
    };
    Ipv6Addr::from(host)
}

/// The netmask of a prefix length (1..=32).
pub fn netmask(prefix_len: u8) -> Ipv4Addr {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    Ipv4Addr::from(bits)
}

/// Whether `a` and `b` lie in the same prefix.
pub fn same_prefix(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::from(netmask(prefix_len));
    u32::from(a) & mask == u32::from(b) & mask
}

impl Settings {
    /// Merges flags over the file over the defaults and validates the result.
    pub fn resolve(cli: &Cli, file: FileConfig) -> Result<Settings, ConfigError> {
        let tun = cli
            .tun
            .clone()
            .or(file.tun)
            .unwrap_or_else(|| "tcpd0".to_string());
        // Linux interface names: at most IFNAMSIZ-1 = 15 bytes, no '/' or spaces.
        if tun.is_empty()
            || tun.len() > 15
            || tun.contains('/')
            || tun.chars().any(char::is_whitespace)
        {
            return Err(ConfigError::TunName(tun));
        }
        let address_text = cli
            .address
            .clone()
            .or(file.address)
            .unwrap_or_else(|| "10.77.0.2/24".to_string());
        let (address, prefix_len) = parse_address(&address_text)?;
        let host_address = cli
            .host_address
            .or(file.host_address)
            .unwrap_or(Ipv4Addr::new(10, 77, 0, 1));
        if host_address == address || !same_prefix(host_address, address, prefix_len) {
            return Err(ConfigError::HostAddress {
                host: host_address,
                address,
                prefix_len,
            });
        }
        let mtu = cli.mtu.or(file.mtu).unwrap_or(1500);
        if mtu < MIN_MTU {
            return Err(ConfigError::Mtu(mtu));
        }
        let address6_text = cli.address6.clone().or(file.address6);
        let explicit6 = address6_text.is_some();
        let address6 = parse_address6(address6_text.as_deref().unwrap_or(DEFAULT_ADDRESS6))?;
        let ipv6 = match address6 {
            // RFC 8200 §5: IPv6 needs 1280-byte links. An explicit address
            // on a smaller MTU is an error; the default just stays off.
            Some(_) if mtu < tcpd_stack::wire::ipv6::MIN_MTU && explicit6 => {
                return Err(ConfigError::Mtu6(mtu));
            }
            Some(_) if mtu < tcpd_stack::wire::ipv6::MIN_MTU => None,
            Some(address) => {
                let host = cli
                    .host_address6
                    .or(file.host_address6)
                    .unwrap_or_else(|| default_host6(address));
                if host == address.addr() || !address.contains(&host) {
                    return Err(ConfigError::HostAddress6 { host, address });
                }
                Some(Ipv6Settings {
                    address,
                    host,
                    explicit: explicit6,
                })
            }
            None => None,
        };
        let msl_ms = cli.msl_ms.or(file.msl_ms).unwrap_or(30_000);
        if msl_ms == 0 {
            return Err(ConfigError::Msl);
        }
        let local_port_range = match cli
            .ip_local_port_range
            .as_deref()
            .or(file.ip_local_port_range.as_deref())
        {
            Some(text) => parse_port_range(text)?,
            None => LocalPortRange::LINUX_DEFAULT,
        };
        let impair = match cli.impair.clone().or(file.impair) {
            Some(text) if !text.trim().is_empty() => {
                Some(ImpairSpec::parse(&text).map_err(|e| ConfigError::Impair(e.to_string()))?)
            }
            _ => None,
        };
        Ok(Settings {
            tun,
            address,
            prefix_len,
            host_address,
            ipv6,
            mtu,
            socket: cli
                .socket
                .clone()
                .or(file.socket)
                .unwrap_or_else(|| PathBuf::from(tcpd_proto::DEFAULT_SOCKET_PATH)),
            socket_group: cli.socket_group.clone().or(file.socket_group),
            log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
            log_level: cli
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_string()),
            msl: Duration::from_millis(msl_ms),
            syn_retries: cli.syn_retries.or(file.syn_retries),
            local_port_range,
            impair,
            user: cli.user.clone().or(file.user),
            limits: Limits::resolve(&cli.limits, file.limits.as_ref())?,
            offload: cli.offload.or(file.offload).unwrap_or(Switch::On) == Switch::On,
            driver_thread: cli
                .driver_thread
                .or(file.driver_thread)
                .unwrap_or(Switch::Off)
                == Switch::On,
            busy_poll_us: cli
                .busy_poll_us
                .or(file.busy_poll_us)
                .unwrap_or(crate::busy_poll::DEFAULT_BUSY_POLL_US),
            shards: match cli.shards.or(file.shards).unwrap_or(1) {
                n @ 1..=crate::shards::MAX_SHARDS => n,
                n => return Err(ConfigError::Shards(n)),
            },
            quotas: {
                let d = crate::sockets::Quotas::default();
                crate::sockets::Quotas {
                    sockets: cli
                        .session_max_sockets
                        .or(file.session_max_sockets)
                        .unwrap_or(d.sockets),
                    pending_ops: cli
                        .session_max_blocked_calls
                        .or(file.session_max_blocked_calls)
                        .unwrap_or(d.pending_ops),
                    buffered_bytes: cli
                        .session_max_buffered_bytes
                        .or(file.session_max_buffered_bytes)
                        .unwrap_or(d.buffered_bytes),
                    sockets_per_uid: cli
                        .uid_max_sockets
                        .or(file.uid_max_sockets)
                        .unwrap_or(d.sockets_per_uid),
                    op_slots: match cli.session_op_slots.or(file.session_op_slots) {
                        Some(0) => return Err(ConfigError::OpSlots),
                        Some(n) => n.min(crate::ops::OP_CHANNEL_CAPACITY),
                        None => d.op_slots,
                    },
                }
            },
            intake_bytes: cli
                .session_max_intake_bytes
                .or(file.session_max_intake_bytes)
                .unwrap_or(crate::intake::SESSION_INTAKE),
        })
    }

    /// Reads the file named by `--config` (if any) and resolves.
    pub fn load(cli: &Cli) -> Result<Settings, ConfigError> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source: Box::new(source),
                })?
            }
            None => FileConfig::default(),
        };
        Settings::resolve(cli, file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["tcpd"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("flags parse")
    }

    #[test]
    fn defaults() {
        let s = Settings::resolve(&cli(&[]), FileConfig::default()).expect("valid");
        assert_eq!(s.tun, "tcpd0");
        assert_eq!(s.address, Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(s.prefix_len, 24);
        assert_eq!(s.host_address, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(s.mtu, 1500);
        assert_eq!(s.socket, PathBuf::from("/run/tcpd/tcpd.sock"));
        assert_eq!(s.msl, Duration::from_secs(30));
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.impair, None);
        assert_eq!(s.user, None);
        assert!(s.offload);
        assert_eq!(s.local_port_range, LocalPortRange::LINUX_DEFAULT);
    }

    #[test]
    fn the_local_port_range_is_a_flag_and_a_key() {
        let range = |first, last| LocalPortRange::new(first, last).expect("range");
        let resolve = |args: &[&str], key: Option<&str>| {
            let file = FileConfig {
                ip_local_port_range: key.map(str::to_string),
                ..FileConfig::default()
            };
            Settings::resolve(&cli(args), file).map(|s| s.local_port_range)
        };
        let flag = |text: &str| resolve(&["--ip-local-port-range", text], None);
        assert_eq!(flag("40000,40999").expect("comma"), range(40000, 40999));
        assert_eq!(
            flag("1024 65535").expect("the sysctl's form"),
            range(1024, 65535)
        );
        assert_eq!(flag("5000,5000").expect("one port"), range(5000, 5000));
        for bad in [
            "",
            "40000",
            "40000,",
            "2,1",
            "1023,2000",
            "0,10",
            "40000,70000",
            "1,2,3",
            "a,b",
        ] {
            assert!(
                matches!(flag(bad), Err(ConfigError::PortRange(_))),
                "{bad:?} accepted"
            );
        }
        assert_eq!(
            resolve(&[], Some("50000,50999")).expect("key"),
            range(50000, 50999)
        );
        assert_eq!(
            resolve(
                &["--ip-local-port-range", "40000,40001"],
                Some("50000,50999")
            )
            .expect("flag wins"),
            range(40000, 40001)
        );
    }

    #[test]
    fn the_intake_budget_is_a_flag_and_a_key() {
        let s = Settings::resolve(&cli(&[]), FileConfig::default()).expect("valid");
        assert_eq!(s.intake_bytes, crate::intake::SESSION_INTAKE);
        let file = FileConfig {
            session_max_intake_bytes: Some(1 << 20),
            ..FileConfig::default()
        };
        let s = Settings::resolve(&cli(&[]), file).expect("valid");
        assert_eq!(s.intake_bytes, 1 << 20);
        let file = FileConfig {
            session_max_intake_bytes: Some(1 << 20),
            ..FileConfig::default()
        };
        let s =
            Settings::resolve(&cli(&["--session-max-intake-bytes", "4096"]), file).expect("valid");
        assert_eq!(s.intake_bytes, 4096, "the flag wins");
    }

    #[test]
    fn op_slots_are_a_flag_and_a_key() {
        let s = Settings::resolve(&cli(&[]), FileConfig::default()).expect("valid");
        assert_eq!(s.quotas.op_slots, crate::ops::SESSION_QUEUE_SLOTS);
        let file = FileConfig {
            session_op_slots: Some(4),
            ..FileConfig::default()
        };
        assert_eq!(
            Settings::resolve(&cli(&[]), file)
                .expect("valid")
                .quotas
                .op_slots,
            4
        );
        let s = Settings::resolve(&cli(&["--session-op-slots", "2"]), FileConfig::default())
            .expect("valid");
        assert_eq!(s.quotas.op_slots, 2);
        assert!(
            Settings::resolve(&cli(&["--session-op-slots", "0"]), FileConfig::default()).is_err()
        );
    }

    /// The shipped systemd/tcpd.toml, every commented-out key switched on,
    /// is a valid configuration (its keys are the flags' names).
    #[test]
    fn the_shipped_config_file_parses_with_every_key_on() {
        let text = include_str!("../../../systemd/tcpd.toml");
        let on: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let file: FileConfig = toml::from_str(&on).expect("every key known");
        // `user` and `admin-group` name accounts that must exist when
        // resolved; the example names need not exist here.
        let limits = file.limits.map(|l| LimitFlags {
            admin_group: None,
            ..l
        });
        let file = FileConfig {
            user: None,
            limits,
            ..file
        };
        let s = Settings::resolve(&cli(&[]), file).expect("valid values");
        assert_eq!(s.quotas.op_slots, 16);
        assert_eq!(s.limits.fd_max_unauthenticated, 64);
    }

    #[test]
    fn ipv6_defaults_flags_and_errors() {
        let s = Settings::resolve(&cli(&[]), FileConfig::default()).expect("valid");
        let v6 = s.ipv6.expect("IPv6 on by default");
        assert!(!v6.explicit, "the default may fall back to IPv4 only");
        assert_eq!(v6.address, "fd00:77::2/64".parse::<Ipv6Net>().expect("net"));
        assert_eq!(v6.host, "fd00:77::1".parse::<Ipv6Addr>().expect("ip"));
        // Only the address given: the host side is the prefix's ::1.
        let s = Settings::resolve(&cli(&["--address6", "fd12:3::9/48"]), FileConfig::default())
            .expect("valid");
        assert_eq!(
            s.ipv6.map(|v| v.host),
            Some("fd12:3::1".parse().expect("ip"))
        );
        // tcpd at ::1: the host side moves to ::2.
        let s = Settings::resolve(&cli(&["--address6", "fd12::1/64"]), FileConfig::default())
            .expect("valid");
        assert_eq!(s.ipv6.map(|v| v.host), Some("fd12::2".parse().expect("ip")));
        assert!(s.ipv6.is_some_and(|v| v.explicit), "asked for: no fallback");
        let file: FileConfig = toml::from_str("address6 = \"none\"\n").expect("toml parses");
        assert_eq!(
            Settings::resolve(&cli(&[]), file).expect("valid").ipv6,
            None
        );
        for bad in [
            "fd00::/64",
            "fd00::2/128",
            "ff02::1/64",
            "10.0.0.1/24",
            "fd00::2",
        ] {
            assert!(
                matches!(
                    Settings::resolve(&cli(&["--address6", bad]), FileConfig::default()),
                    Err(ConfigError::Address6(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Settings::resolve(&cli(&["--host-address6", "fd01::1"]), FileConfig::default()),
            Err(ConfigError::HostAddress6 { .. })
        ));
        // Below 1280 the default stays off; an explicit address is an error.
        let s = Settings::resolve(&cli(&["--mtu", "1000"]), FileConfig::default()).expect("ok");
        assert_eq!(s.ipv6, None);
        assert!(matches!(
            Settings::resolve(
                &cli(&["--mtu", "1000", "--address6", "fd00::2/64"]),
                FileConfig::default()
            ),
            Err(ConfigError::Mtu6(1000))
        ));
    }

    #[test]
    fn flags_win_over_file() {
        let file: FileConfig = toml::from_str(
            r#"
            tun = "filetun"
            address = "192.168.5.9/16"
            host-address = "192.168.0.1"
            mtu = 9000
            socket = "/tmp/x.sock"
            log-format = "json"
            msl-ms = 500
            syn-retries = 2
            impair = "loss=1%"
            user = "nobody"
            offload = "off"
            driver-thread = "on"
            busy-poll-us = 20
            "#,
        )
        .expect("toml parses");
        let s =
            Settings::resolve(&cli(&["--tun", "flagtun", "--mtu", "1400"]), file).expect("valid");
        assert_eq!(s.tun, "flagtun");
        assert_eq!(s.mtu, 1400);
        assert_eq!(s.address, Ipv4Addr::new(192, 168, 5, 9));
        assert_eq!(s.prefix_len, 16);
        assert_eq!(s.host_address, Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(s.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.msl, Duration::from_millis(500));
        assert_eq!(s.syn_retries, Some(2));
        assert!(s.impair.is_some());
        assert_eq!(s.user.as_deref(), Some("nobody"));
        assert!(!s.offload);
        assert!(s.driver_thread);
        assert_eq!(s.busy_poll_us, 20);
        let s = Settings::resolve(&cli(&["--offload", "on"]), FileConfig::default()).expect("ok");
        assert!(s.offload);
        assert!(!s.driver_thread, "one thread by default");
        assert_eq!(s.busy_poll_us, crate::busy_poll::DEFAULT_BUSY_POLL_US);
        let s =
            Settings::resolve(&cli(&["--busy-poll-us", "0"]), FileConfig::default()).expect("ok");
        assert_eq!(s.busy_poll_us, 0, "0 turns it off");
        assert_eq!(s.shards, 1, "one shard by default");
        let s = Settings::resolve(&cli(&["--shards", "2"]), FileConfig::default()).expect("ok");
        assert_eq!(s.shards, 2);
        let file: FileConfig = toml::from_str("shards = 3").expect("a config key");
        assert_eq!(Settings::resolve(&cli(&[]), file).expect("ok").shards, 3);
        assert!(Settings::resolve(&cli(&["--shards", "0"]), FileConfig::default()).is_err());
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("tunn = \"x\"").is_err());
    }

    #[test]
    fn invalid_values_are_rejected() {
        let bad = |args: &[&str]| Settings::resolve(&cli(args), FileConfig::default()).is_err();
        assert!(bad(&["--address", "10.0.0.1"]));
        assert!(bad(&["--address", "10.0.0.1/33"]));
        assert!(bad(&["--address", "10.0.0.256/24"]));
        assert!(bad(&["--address", "10.0.0.1/31"]));
        assert!(bad(&["--host-address", "10.78.0.1"]));
        assert!(bad(&["--host-address", "10.77.0.2"]));
        assert!(bad(&["--mtu", "100"]));
        assert!(bad(&["--tun", "a-very-long-interface-name"]));
        assert!(bad(&["--impair", "loss=500%"]));
        assert!(bad(&["--msl-ms", "0"]));
        assert!(Cli::try_parse_from(["tcpd", "--mtu", "70000"]).is_err());
    }

    #[test]
    fn netmask_and_prefix() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(1), Ipv4Addr::new(128, 0, 0, 0));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert!(same_prefix(
            Ipv4Addr::new(10, 77, 0, 1),
            Ipv4Addr::new(10, 77, 0, 200),
            24
        ));
        assert!(!same_prefix(
            Ipv4Addr::new(10, 77, 1, 1),
            Ipv4Addr::new(10, 77, 0, 200),
            24
        ));
    }
}
