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

/// Per-stream HTTP/2 receive window: how much received data one socket may
/// have in flight between the daemon and an application that does not read.
pub const STREAM_WINDOW: u32 = 1024 * 1024;

/// Connection-level HTTP/2 receive window: 2^31-1, the largest RFC 9113
/// §6.9.1 allows, so that only the per-stream windows bound buffering.
pub const CONNECTION_WINDOW: u32 = (1 << 31) - 1;

/// Opens a session with the daemon listening on the Unix socket `path`.
///
/// Fails with the connect(2) error of the Unix socket (ENOENT, ECONNREFUSED,
/// EACCES...) so callers can tell "daemon not running" from other failures.
pub async fn connect_channel(path: impl AsRef<Path>) -> io::Result<Channel> {
    connect_channel_with(path, || {}).await
}

/// As [`connect_channel`], and calls `on_connect` once for every Unix
/// connection the channel makes: the first one (the probe that reports a
/// missing daemon) and every later one tonic makes after losing the
/// previous connection.
///
/// Each such connection is a new session, whose daemon knows nothing of the
/// sockets of the one before; a caller that keeps socket handles across
/// calls (the C shim) counts sessions here to tell stale handles from live
/// ones.
pub async fn connect_channel_with(
    path: impl AsRef<Path>,
    on_connect: impl Fn() + Send + Sync + 'static,
) -> io::Result<Channel> {
    let path = path.as_ref().to_path_buf();
    // Fail early, with the OS error, if the daemon is not there: the lazy
    // tonic connector would report a vaguer transport error later.
    let probe = UnixStream::connect(&path).await?;
    let mut first = Some(probe);
    let on_connect = std::sync::Arc::new(on_connect);
    // The URI is required by the API but unused: the connector ignores it.
    let endpoint = Endpoint::try_from("http://tcpd.invalid")
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
        // Every connected socket keeps one Stream RPC open, so one slow
        // reader must not starve the session: each stream may hold at most
        // STREAM_WINDOW unread bytes, and the connection-wide window is the
        // HTTP/2 maximum (RFC 9113 §6.9.1) so it never becomes the limit.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // The largest DATA frame the daemon may send us (RFC 9113 §6.5.2
        // SETTINGS_MAX_FRAME_SIZE, 16 KiB by default): a 64 KiB Stream
        // message arrives as one frame instead of four — the receive-side
        // twin of the daemon's own setting (see MAX_FRAME_SIZE in tcpd's
        // lib.rs). No frame can exceed the stream window anyway.
        .max_frame_size(STREAM_WINDOW);
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            let reuse = first.take();
            let on_connect = std::sync::Arc::clone(&on_connect);
            async move {
                let stream = match reuse {
                    Some(s) => s,
                    None => UnixStream::connect(&path).await?,
                };
                on_connect();
                Ok::<_, io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e))
}

/// Turns a failed call into the `io::Error` the daemon meant:
/// `io::Error::from_raw_os_error` of the errno in its `google.rpc.ErrorInfo`
/// (see `tcpd_proto::errno_status`), so `raw_os_error()` gives the errno back.
///
/// A status without tcpd's errno did not come from the socket layer but from
/// reaching the daemon: that error says so ("tcpd daemon: ...") and keeps the
/// OS error of the Unix socket (ENOENT, ECONNREFUSED...) as its source when
/// there is one, so it is never mistaken for a peer's reset
/// ([`is_daemon_error`] tells them apart).
pub fn status_to_io(status: tonic::Status) -> io::Error {
    status_to_io_at("", status)
}

/// As [`status_to_io`], naming the daemon's socket `path` in the error
/// for a daemon that could not be reached ("tcpd daemon at PATH: ...").
pub fn status_to_io_at(path: &str, status: tonic::Status) -> io::Error {
    if let Some(errno) = tcpd_proto::status_errno(&status) {
        return io::Error::from_raw_os_error(errno);
    }
    daemon_error(path, &status)
}

/// The error for a call that failed on the way to the daemon at `path`.
pub(crate) fn daemon_error(path: &str, status: &tonic::Status) -> io::Error {
    let kind = match transport_os_error(status) {
        Some(errno) => io::Error::from_raw_os_error(errno).kind(),
        None if status.code() == tonic::Code::Unimplemented => io::ErrorKind::Unsupported,
        None => io::ErrorKind::Other,
    };
    // Never ConnectionReset/ConnectionRefused: those mean the TCP peer.
    let kind = match kind {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionRefused
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => io::ErrorKind::NotConnected,
        k => k,
    };
    let at = if path.is_empty() {
        String::new()
    } else {
        format!(" at {path}")
    };
    io::Error::new(
        kind,
        DaemonError(format!("tcpd daemon{at}: {}", status.message())),
    )
}

/// The error for a daemon that cannot be reached at `path`: "tcpd daemon at
/// PATH: No such file or directory (os error 2)", of a kind that is never a
/// peer's (ENOENT stays NotFound, EACCES PermissionDenied; a refused Unix
/// connect becomes NotConnected).
pub fn unreachable(path: &str, e: io::Error) -> io::Error {
    let kind = match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionRefused
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => io::ErrorKind::NotConnected,
        k => k,
    };
    io::Error::new(kind, DaemonError(format!("tcpd daemon at {path}: {e}")))
}

/// An error reaching the daemon (as opposed to a network error).
#[derive(Debug)]
pub struct DaemonError(pub String);

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DaemonError {}

/// Whether `err` came from reaching the daemon rather than from the network.
pub fn is_daemon_error(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<DaemonError>())
}

/// The OS error at the bottom of a transport failure, if there is one.
fn transport_os_error(status: &tonic::Status) -> Option<i32> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(errno) = err
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(errno);
        }
        source = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counter() -> (Arc<AtomicUsize>, impl Fn() + Send + Sync + 'static) {
        let count = Arc::new(AtomicUsize::new(0));
        let bump = Arc::clone(&count);
        (count, move || {
            bump.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[tokio::test]
    async fn the_probe_connection_counts_as_the_first_session() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tcpd.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        // Accept and hold connections; no HTTP/2 is needed until a request.
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let (count, on_connect) = counter();
        let _channel = connect_channel_with(&path, on_connect)
            .await
            .expect("channel over the listening socket");
        assert_eq!(count.load(Ordering::SeqCst), 1);
        server.abort();
    }

    #[tokio::test]
    async fn a_missing_daemon_fails_with_enoent_and_no_session() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (count, on_connect) = counter();
        let err = connect_channel_with(dir.path().join("missing.sock"), on_connect)
            .await
            .expect_err("nobody there");
        // connect(2) says ENOENT, which std reports as NotFound.
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.raw_os_error().is_some(), "the OS error itself: {err}");
        assert_eq!(count.load(Ordering::SeqCst), 0);
    }
}
