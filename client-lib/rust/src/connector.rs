//! [`Connector`]: HTTP and gRPC clients over tcpd (features `hyper` and
//! `tonic`, off by default).
//!
//! A `tower::Service<Uri>` that connects to the URI's host and port
//! through tcpd and yields the stream wrapped for hyper
//! (`hyper_util::rt::TokioIo`). Like tonic's own connector it sets
//! `TCP_NODELAY` (request/response protocols over a Nagle-delayed socket
//! wait for the peer's delayed ACK on every small write: tens of requests
//! per second instead of thousands); [`Connector::set_nodelay`] turns it
//! off.
//!
//! - hyper (feature `hyper`):
//!   `hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(Connector::new())`
//!   — `http://` URIs (default port 80); TLS would wrap this connector.
//! - tonic (feature `tonic`): [`Connector::channel`], or
//!   `Endpoint::connect_with_connector(Connector::new())`.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tonic::transport::Uri;

use crate::{Client, TcpStream};

/// Connects `Uri`s through tcpd (see the module docs).
#[derive(Debug, Clone)]
pub struct Connector {
    /// `None`: the process-wide session.
    client: Option<Client>,
    nodelay: bool,
}

impl Default for Connector {
    fn default() -> Self {
        Connector::new()
    }
}

impl Connector {
    /// A connector using the process-wide session, with `TCP_NODELAY`.
    pub fn new() -> Connector {
        Connector {
            client: None,
            nodelay: true,
        }
    }

    /// A connector using `client`'s session.
    pub fn with_client(client: Client) -> Connector {
        Connector {
            client: Some(client),
            nodelay: true,
        }
    }

    /// Whether connections get `TCP_NODELAY` (default: yes).
    pub fn set_nodelay(&mut self, nodelay: bool) -> &mut Connector {
        self.nodelay = nodelay;
        self
    }

    /// A tonic channel to `uri` (e.g. `"http://10.77.0.1:50051"`) through
    /// tcpd.
    #[cfg(feature = "tonic")]
    pub async fn channel(&self, uri: &str) -> io::Result<tonic::transport::Channel> {
        let endpoint = tonic::transport::Endpoint::from_shared(uri.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        endpoint
            .connect_with_connector(self.clone())
            .await
            .map_err(io::Error::other)
    }
}

/// The host and port a URI names (`http` defaults to 80, `https` to 443).
fn target(uri: &Uri) -> io::Result<(String, u16)> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}"));
    let host = uri.host().ok_or_else(invalid)?;
    // IPv6 literals come bracketed in URIs.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    Ok((host.to_string(), port))
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (host, port) = target(&uri)?;
            let client = match this.client {
                Some(client) => client,
                None => Client::shared().await?,
            };
            let stream = match host.parse::<IpAddr>() {
                Ok(ip) => client.tcp_connect((ip, port)).await?,
                Err(_) => client.tcp_connect((host.as_str(), port)).await?,
            };
            if this.nodelay {
                stream.set_nodelay(true)?;
            }
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(feature = "hyper")]
impl hyper_util::client::legacy::connect::Connection for TcpStream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_give_host_and_port() {
        let t = |s: &str| target(&s.parse::<Uri>().expect("uri")).expect("target");
        assert_eq!(t("http://10.0.0.1:8080/x"), ("10.0.0.1".into(), 8080));
        assert_eq!(t("http://example.test/"), ("example.test".into(), 80));
        assert_eq!(t("https://example.test/"), ("example.test".into(), 443));
        assert_eq!(t("http://[fd00::1]:9/"), ("fd00::1".into(), 9));
        assert!(target(&"/relative".parse::<Uri>().expect("uri")).is_err());
    }
}
