//! The connection to the daemon and the one error conversion every client uses.
//!
//! One [`tonic::transport::Channel`] is one HTTP/2 connection over the
//! daemon's Unix socket, and therefore one *session*: the sockets it creates
//! belong to it and are closed by the daemon when it drops.

use std::io;
use std::path::Path;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Opens a session with the daemon listening on the Unix socket `path`.
///
/// Fails with the connect(2) error of the Unix socket (ENOENT, ECONNREFUSED,
/// EACCES...) so callers can tell "daemon not running" from other failures.
pub async fn connect_channel(path: impl AsRef<Path>) -> io::Result<Channel> {
    let path = path.as_ref().to_path_buf();
    // Fail early, with the OS error, if the daemon is not there: the lazy
    // tonic connector would report a vaguer transport error later.
    let probe = UnixStream::connect(&path).await?;
    let mut first = Some(probe);
    // The URI is required by the API but unused: the connector ignores it.
    let endpoint = Endpoint::try_from("http://tcpd.invalid")
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            let reuse = first.take();
            async move {
                let stream = match reuse {
                    Some(s) => s,
                    None => UnixStream::connect(&path).await?,
                };
                Ok::<_, io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e))
}

/// Turns a failed call into the `io::Error` the daemon meant:
/// `io::Error::from_raw_os_error` of the errno it carried (see
/// `tcpd_proto::errno_status`), so `raw_os_error()` gives the errno back.
pub fn status_to_io(status: tonic::Status) -> io::Error {
    io::Error::from_raw_os_error(tcpd_proto::status_errno(&status))
}
