//! Destination and bind addresses: what `connect` and `bind` accept.
//!
//! tcpd speaks IPv4 only, so everything resolves to [`SocketAddrV4`]s. The
//! [`ToSocketAddrsV4`] trait mirrors `std::net::ToSocketAddrs`: literals
//! (`"10.0.0.1:80"`, `(Ipv4Addr, u16)`, `SocketAddrV4`...) never touch a
//! resolver; host names (`("example.test", 80)`, `"example.test:80"`) are
//! resolved with the system resolver in this process and only their IPv4
//! results are kept. IPv6 literals fail with `EAFNOSUPPORT`, as connect(2) on
//! an `AF_INET` socket does; malformed text fails with `EINVAL`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use tcpd_proto::errno;

mod sealed {
    use std::net::SocketAddrV4;

    /// A not-yet-resolved address: either final IPv4 addresses or a host
    /// name to look up. (Public only inside this private module.)
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Target {
        /// Literal addresses, tried in order.
        Addrs(Vec<SocketAddrV4>),
        /// A name for the resolver, with the port to pair its results with.
        Host(String, u16),
    }

    /// Keeps [`super::ToSocketAddrsV4`] implementable only here, so its
    /// method can stay crate-private.
    pub trait Sealed {
        fn target(&self) -> std::io::Result<Target>;
    }
}

pub(crate) use sealed::Target;

/// Values usable as an IPv4 socket address for tcpd (see the module docs).
///
/// Implemented for `SocketAddrV4`, `SocketAddr` (IPv4 only), `(Ipv4Addr, u16)`,
/// `([u8; 4], u16)`, `(&str, u16)`, `(String, u16)`, `&str`, `String`,
/// `&[SocketAddrV4]` and references to these.
pub trait ToSocketAddrsV4: sealed::Sealed {}

impl<T: sealed::Sealed + ?Sized> ToSocketAddrsV4 for T {}

fn ipv6_unsupported() -> io::Error {
    io::Error::from_raw_os_error(errno::EAFNOSUPPORT)
}

fn invalid() -> io::Error {
    io::Error::from_raw_os_error(errno::EINVAL)
}

impl sealed::Sealed for SocketAddrV4 {
    fn target(&self) -> io::Result<Target> {
        Ok(Target::Addrs(vec![*self]))
    }
}

impl sealed::Sealed for SocketAddr {
    fn target(&self) -> io::Result<Target> {
        match self {
            SocketAddr::V4(v4) => Ok(Target::Addrs(vec![*v4])),
            SocketAddr::V6(_) => Err(ipv6_unsupported()),
        }
    }
}

impl sealed::Sealed for (Ipv4Addr, u16) {
    fn target(&self) -> io::Result<Target> {
        Ok(Target::Addrs(vec![SocketAddrV4::new(self.0, self.1)]))
    }
}

impl sealed::Sealed for ([u8; 4], u16) {
    fn target(&self) -> io::Result<Target> {
        Ok(Target::Addrs(vec![SocketAddrV4::new(
            self.0.into(),
            self.1,
        )]))
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

impl sealed::Sealed for [SocketAddrV4] {
    fn target(&self) -> io::Result<Target> {
        Ok(Target::Addrs(self.to_vec()))
    }
}

impl<T: sealed::Sealed + ?Sized> sealed::Sealed for &T {
    fn target(&self) -> io::Result<Target> {
        (**self).target()
    }
}

/// `host` is an IPv4 literal or a name; IPv6 literals are refused.
fn host_port_target(host: &str, port: u16) -> io::Result<Target> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Target::Addrs(vec![SocketAddrV4::new(ip, port)]));
    }
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(ipv6_unsupported());
    }
    if host.is_empty() {
        return Err(invalid());
    }
    Ok(Target::Host(host.to_string(), port))
}

/// Parses `"a.b.c.d:port"`, `"[v6]:port"` (refused) or `"name:port"`.
pub(crate) fn parse_target(text: &str) -> io::Result<Target> {
    if let Ok(v4) = text.parse::<SocketAddrV4>() {
        return Ok(Target::Addrs(vec![v4]));
    }
    if text.parse::<SocketAddr>().is_ok() {
        return Err(ipv6_unsupported());
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    host_port_target(host, port)
}

/// The target's addresses, asking the system resolver for host names
/// (this blocks; async callers run it on a blocking thread).
pub(crate) fn resolve_blocking(target: Target) -> io::Result<Vec<SocketAddrV4>> {
    match target {
        Target::Addrs(addrs) if addrs.is_empty() => Err(invalid()),
        Target::Addrs(addrs) => Ok(addrs),
        Target::Host(host, port) => {
            let found: Vec<SocketAddrV4> =
                std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))?
                    .filter_map(|a| match a {
                        SocketAddr::V4(v4) => Some(v4),
                        SocketAddr::V6(_) => None,
                    })
                    .collect();
            if found.is_empty() {
                // The name exists but has no IPv4 address.
                Err(io::Error::from_raw_os_error(errno::EADDRNOTAVAIL))
            } else {
                Ok(found)
            }
        }
    }
}

/// Resolves `addr` without blocking the calling executor.
pub(crate) async fn resolve<A: ToSocketAddrsV4 + ?Sized>(
    addr: &A,
) -> io::Result<Vec<SocketAddrV4>> {
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
pub(crate) fn resolve_sync<A: ToSocketAddrsV4 + ?Sized>(addr: &A) -> io::Result<Vec<SocketAddrV4>> {
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
        let want = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 8080);
        assert_eq!(
            "10.0.0.2:8080".target().ok(),
            Some(Target::Addrs(vec![want]))
        );
        assert_eq!(
            ("10.0.0.2", 8080).target().ok(),
            Some(Target::Addrs(vec![want]))
        );
        assert_eq!(
            (Ipv4Addr::new(10, 0, 0, 2), 8080).target().ok(),
            Some(Target::Addrs(vec![want]))
        );
        assert_eq!(
            ([10, 0, 0, 2], 8080).target().ok(),
            Some(Target::Addrs(vec![want]))
        );
        assert_eq!(
            SocketAddr::V4(want).target().ok(),
            Some(Target::Addrs(vec![want]))
        );
        assert_eq!(
            String::from("10.0.0.2:8080").target().ok(),
            Some(Target::Addrs(vec![want]))
        );
        let by_ref: &SocketAddrV4 = &want;
        assert_eq!(
            Sealed::target(&by_ref).ok(),
            Some(Target::Addrs(vec![want]))
        );
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
    fn ipv6_is_refused_like_an_af_inet_socket() {
        assert_eq!(errno_of("[::1]:80".target()), Some(errno::EAFNOSUPPORT));
        assert_eq!(errno_of(("::1", 80).target()), Some(errno::EAFNOSUPPORT));
        let v6: SocketAddr = "[::1]:80".parse().expect("literal");
        assert_eq!(errno_of(v6.target()), Some(errno::EAFNOSUPPORT));
    }

    #[test]
    fn malformed_text_is_einval() {
        for bad in [
            "10.0.0.1",
            "10.0.0.1:",
            "10.0.0.1:65536",
            "10.0.0.1:http",
            ":80",
            "",
        ] {
            assert_eq!(errno_of(bad.target()), Some(errno::EINVAL), "{bad:?}");
        }
        let empty: &[SocketAddrV4] = &[];
        assert_eq!(
            resolve_sync(empty).err().and_then(|e| e.raw_os_error()),
            Some(errno::EINVAL)
        );
    }

    #[test]
    fn localhost_resolves_to_ipv4_only() {
        // /etc/hosts always maps localhost; no network is involved.
        let addrs = resolve_sync("localhost:7").expect("localhost resolves");
        assert!(addrs.iter().all(|a| a.port() == 7));
        assert!(addrs.contains(&SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7)));
    }
}
