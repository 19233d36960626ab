//! Destination and bind addresses: what `connect` and `bind` accept.
//!
//! [`ToSocketAddrs`] mirrors `tokio::net::ToSocketAddrs` (and
//! `std::net::ToSocketAddrs`): literals (`"10.0.0.1:80"`, `"[fd00::1]:80"`,
//! `(IpAddr, u16)`, `SocketAddr`...) never touch a resolver; host names
//! (`("example.test", 80)`, `"example.test:80"`) are resolved with the system
//! resolver in this process (on a blocking thread for async callers) and
//! every result is tried in order. Addresses are `std::net::SocketAddr`; the
//! daemon decides what it supports (an IPv6 address on a daemon without IPv6
//! fails with `EAFNOSUPPORT`, as on a kernel built without it). Malformed
//! text fails with `EINVAL`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use tcpd_proto::errno;

mod sealed {
    use std::net::SocketAddr;

    /// A not-yet-resolved address: either final addresses or a host name
    /// to look up. (Public only inside this private module.)
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Target {
        /// Literal addresses, tried in order.
        Addrs(Vec<SocketAddr>),
        /// A name for the resolver, with the port to pair its results with.
        Host(String, u16),
    }

    /// Keeps [`super::ToSocketAddrs`] implementable only here, so its
    /// method can stay crate-private (as tokio's does).
    pub trait Sealed {
        fn target(&self) -> std::io::Result<Target>;
    }
}

pub(crate) use sealed::Target;

/// Values usable as a socket address for tcpd, like
/// `tokio::net::ToSocketAddrs`.
///
/// Implemented for `SocketAddr`, `SocketAddrV4`, `SocketAddrV6`,
/// `(IpAddr, u16)`, `(Ipv4Addr, u16)`, `(Ipv6Addr, u16)`, `(&str, u16)`,
/// `(String, u16)`, `&str`, `String`, `&[SocketAddr]` and references to
/// these.
pub trait ToSocketAddrs: sealed::Sealed {}

impl<T: sealed::Sealed + ?Sized> ToSocketAddrs for T {}

fn invalid() -> io::Error {
    io::Error::from_raw_os_error(errno::EINVAL)
}

fn one(addr: SocketAddr) -> io::Result<Target> {
    Ok(Target::Addrs(vec![addr]))
}

impl sealed::Sealed for SocketAddr {
    fn target(&self) -> io::Result<Target> {
        one(*self)
    }
}

impl sealed::Sealed for SocketAddrV4 {
    fn target(&self) -> io::Result<Target> {
        one(SocketAddr::V4(*self))
    }
}

impl sealed::Sealed for SocketAddrV6 {
    fn target(&self) -> io::Result<Target> {
        one(SocketAddr::V6(*self))
    }
}

impl sealed::Sealed for (IpAddr, u16) {
    fn target(&self) -> io::Result<Target> {
        one(SocketAddr::new(self.0, self.1))
    }
}

impl sealed::Sealed for (Ipv4Addr, u16) {
    fn target(&self) -> io::Result<Target> {
        one(SocketAddr::new(IpAddr::V4(self.0), self.1))
    }
}

impl sealed::Sealed for (Ipv6Addr, u16) {
    fn target(&self) -> io::Result<Target> {
        one(SocketAddr::new(IpAddr::V6(self.0), self.1))
    }
}

impl sealed::Sealed for (&str, u16) {
    fn target(&self) -> io::Result<Target> {
        host_port_target(self.0, self.1)
    }
}

impl sealed::Sealed for (String, u16) {
    fn target(&self) -> io::Result<Target> {
        host_port_target(&self.0, self.1)
    }
}

impl sealed::Sealed for str {
    fn target(&self) -> io::Result<Target> {
        parse_target(self)
    }
}

impl sealed::Sealed for String {
    fn target(&self) -> io::Result<Target> {
        parse_target(self)
    }
}

impl sealed::Sealed for [SocketAddr] {
    fn target(&self) -> io::Result<Target> {
        Ok(Target::Addrs(self.to_vec()))
    }
}

impl<T: sealed::Sealed + ?Sized> sealed::Sealed for &T {
    fn target(&self) -> io::Result<Target> {
        (**self).target()
    }
}

/// `host` is an IP literal or a name.
fn host_port_target(host: &str, port: u16) -> io::Result<Target> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return one(SocketAddr::new(ip, port));
    }
    if host.is_empty() {
        return Err(invalid());
    }
    Ok(Target::Host(host.to_string(), port))
}

/// Parses `"a.b.c.d:port"`, `"[v6]:port"` or `"name:port"`.
pub(crate) fn parse_target(text: &str) -> io::Result<Target> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return one(addr);
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    if host.contains(':') {
        // An unbracketed IPv6 literal with a port is ambiguous: std refuses it too.
        return Err(invalid());
    }
    host_port_target(host, port)
}

/// The target's addresses, asking the system resolver for host names
/// (this blocks; async callers run it on a blocking thread).
pub(crate) fn resolve_blocking(target: Target) -> io::Result<Vec<SocketAddr>> {
    match target {
        Target::Addrs(addrs) if addrs.is_empty() => Err(invalid()),
        Target::Addrs(addrs) => Ok(addrs),
        Target::Host(host, port) => {
            let found: Vec<SocketAddr> =
                std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))?.collect();
            if found.is_empty() {
                Err(io::Error::from_raw_os_error(errno::EADDRNOTAVAIL))
            } else {
                Ok(found)
            }
        }
    }
}

/// Resolves `addr` without blocking the calling executor.
pub(crate) async fn resolve<A: ToSocketAddrs + ?Sized>(addr: &A) -> io::Result<Vec<SocketAddr>> {
    match sealed::Sealed::target(addr)? {
        Target::Host(host, port) => {
            let target = Target::Host(host, port);
            crate::runtime::handle()?
                .spawn_blocking(move || resolve_blocking(target))
                .await
                .map_err(|_| io::Error::from_raw_os_error(errno::ECANCELED))?
        }
        literal => resolve_blocking(literal),
    }
}

/// Synchronous resolution, for the blocking API.
pub(crate) fn resolve_sync<A: ToSocketAddrs + ?Sized>(addr: &A) -> io::Result<Vec<SocketAddr>> {
    resolve_blocking(sealed::Sealed::target(addr)?)
}

#[cfg(test)]
mod tests {
    use super::sealed::Sealed;
    use super::*;

    fn errno_of(r: io::Result<Target>) -> Option<i32> {
        r.err().and_then(|e| e.raw_os_error())
    }

    #[test]
    fn literals_parse_without_resolver() {
        let want: SocketAddr = "10.0.0.2:8080".parse().expect("literal");
        let v4 = Some(Target::Addrs(vec![want]));
        assert_eq!("10.0.0.2:8080".target().ok(), v4);
        assert_eq!(("10.0.0.2", 8080).target().ok(), v4);
        assert_eq!((Ipv4Addr::new(10, 0, 0, 2), 8080).target().ok(), v4);
        assert_eq!((IpAddr::from([10, 0, 0, 2]), 8080).target().ok(), v4);
        assert_eq!(want.target().ok(), v4);
        assert_eq!(String::from("10.0.0.2:8080").target().ok(), v4);
        let by_ref: &SocketAddr = &want;
        assert_eq!(Sealed::target(&by_ref).ok(), v4);
        let six: SocketAddr = "[fd00::1]:80".parse().expect("literal");
        let v6 = Some(Target::Addrs(vec![six]));
        assert_eq!("[fd00::1]:80".target().ok(), v6);
        assert_eq!(("fd00::1", 80).target().ok(), v6);
        assert_eq!(six.target().ok(), v6);
    }

    #[test]
    fn names_are_left_for_the_resolver() {
        assert_eq!(
            "db.example.test:5432".target().ok(),
            Some(Target::Host("db.example.test".into(), 5432))
        );
        assert_eq!(
            ("db.example.test", 1).target().ok(),
            Some(Target::Host("db.example.test".into(), 1))
        );
    }

    #[test]
    fn malformed_text_is_einval() {
        for bad in [
            "10.0.0.1",
            "10.0.0.1:",
            "10.0.0.1:65536",
            "10.0.0.1:http",
            ":80",
            "fd00::1:80",
            "",
        ] {
            assert_eq!(errno_of(bad.target()), Some(errno::EINVAL), "{bad:?}");
        }
        let empty: &[SocketAddr] = &[];
        assert_eq!(
            resolve_sync(empty).err().and_then(|e| e.raw_os_error()),
            Some(errno::EINVAL)
        );
    }

    #[test]
    fn localhost_resolves() {
        // /etc/hosts always maps localhost; no network is involved.
        let addrs = resolve_sync("localhost:7").expect("localhost resolves");
        assert!(addrs.iter().all(|a| a.port() == 7));
        assert!(addrs.contains(&SocketAddr::from((Ipv4Addr::LOCALHOST, 7))));
    }
}
