//! tcpctl's failures and the exit codes they map to.
//!
//! Every failure becomes one [`CliError`] at the point it happens; the process
//! boundary ([`CliError::exit_code`]) is the only place exit codes are chosen:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | any other error (RPC failure, nothing matched `kill`, `watch` timeout) |
//! | 2 | usage error (reported by clap) |
//! | 3 | the daemon is not reachable at the socket path |
//! | 4 | permission denied (EPERM/EACCES) |

use std::io;
use std::path::{Path, PathBuf};

use tcpd_proto::{errno, errno_name, status_errno};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: any failure not listed below.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: bad command line (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: no daemon at the socket path.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: the daemon or the socket refused us (EPERM/EACCES).
pub const EXIT_PERMISSION: u8 = 4;

const UNREACHABLE_HINT: &str = "is tcpd running? set TCPD_SOCKET or pass --socket";

/// Everything that can make tcpctl fail.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Connecting to the daemon's Unix socket failed (ENOENT, ECONNREFUSED...)
    /// or the daemon went away mid-call.
    #[error("cannot reach tcpd at {}: {source} ({UNREACHABLE_HINT})", path.display())]
    Unreachable {
        /// The socket path tried.
        path: PathBuf,
        /// What connect(2) or the transport said.
        source: io::Error,
    },
    /// The socket's permissions keep us out (EACCES on connect).
    #[error(
        "permission denied connecting to {}: {source} (the socket is group-restricted: \
         run as root or as a member of the daemon's group)",
        path.display()
    )]
    SocketPermission {
        /// The socket path tried.
        path: PathBuf,
        /// What connect(2) said.
        source: io::Error,
    },
    /// The daemon refused the operation with EPERM/EACCES.
    #[error("{operation}: permission denied ({errno_name}){hint}")]
    Denied {
        /// What was attempted.
        operation: String,
        /// EPERM or EACCES.
        errno_name: String,
        /// Extra advice, starting with "; " when present.
        hint: String,
    },
    /// The daemon answered with any other error.
    #[error("{operation}: {message} ({errno_name})")]
    Rpc {
        /// What was attempted.
        operation: String,
        /// The daemon's message.
        message: String,
        /// Symbolic errno.
        errno_name: String,
    },
    /// The daemon did not answer in time.
    #[error("{operation}: tcpd at {} did not answer within {seconds} s", path.display())]
    NoAnswer {
        /// What was attempted.
        operation: String,
        /// The socket path.
        path: PathBuf,
        /// The limit.
        seconds: u64,
    },
    /// `kill` found nothing to abort.
    #[error("{0}")]
    NothingMatched(String),
    /// `watch --count N --timeout S` saw fewer than N events in time.
    #[error("watch: timed out after {seen} of {wanted} events")]
    WatchTimeout {
        /// Events printed.
        seen: u64,
        /// Events asked for.
        wanted: u64,
    },
    /// Writing our own output failed.
    #[error("writing output: {0}")]
    Output(#[source] io::Error),
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Unreachable { .. } => EXIT_UNREACHABLE,
            CliError::SocketPermission { .. } | CliError::Denied { .. } => EXIT_PERMISSION,
            CliError::Rpc { .. }
            | CliError::NoAnswer { .. }
            | CliError::NothingMatched(_)
            | CliError::WatchTimeout { .. }
            | CliError::Output(_) => EXIT_FAILURE,
        }
    }

    /// Classifies a failed connect to the daemon's socket.
    pub fn from_connect(path: &Path, source: io::Error) -> Self {
        let denied = matches!(source.raw_os_error(), Some(libc::EACCES | libc::EPERM))
            || source.kind() == io::ErrorKind::PermissionDenied;
        if denied {
            CliError::SocketPermission {
                path: path.to_path_buf(),
                source,
            }
        } else {
            CliError::Unreachable {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    /// Classifies a failed RPC: the errno the daemon sent decides, and a
    /// transport failure without one (the daemon died) counts as unreachable.
    pub fn from_status(operation: &str, path: &Path, status: &tonic::Status) -> Self {
        let number = status_errno(status);
        if number.is_none()
            && matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            )
        {
            return CliError::Unreachable {
                path: path.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    status.message().to_string(),
                ),
            };
        }
        // No tcpd errno: a status from the gRPC layer itself.
        let number = number.unwrap_or(match status.code() {
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => errno::EPERM,
            tonic::Code::InvalidArgument => errno::EINVAL,
            _ => errno::EIO,
        });
        match number {
            errno::EPERM | errno::EACCES => CliError::Denied {
                operation: operation.to_string(),
                errno_name: errno_name(number),
                hint: String::new(),
            },
            _ => CliError::Rpc {
                operation: operation.to_string(),
                message: printable(status.message()),
                errno_name: errno_name(number),
            },
        }
    }

    /// Whether this is the reader of our output going away (`| head`), which
    /// is not worth an error message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Daemon-supplied text without control characters, bounded.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(512).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcpd_proto::errno_status;

    fn path() -> PathBuf {
        PathBuf::from("/run/tcpd/tcpd.sock")
    }

    #[test]
    fn connect_failures() {
        let missing = CliError::from_connect(&path(), io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(missing.exit_code(), EXIT_UNREACHABLE);
        let text = missing.to_string();
        assert!(text.contains("/run/tcpd/tcpd.sock"), "{text}");
        assert!(
            text.contains("TCPD_SOCKET") && text.contains("--socket"),
            "{text}"
        );
        let refused =
            CliError::from_connect(&path(), io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert_eq!(refused.exit_code(), EXIT_UNREACHABLE);
        let denied = CliError::from_connect(&path(), io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(denied.exit_code(), EXIT_PERMISSION);
    }

    #[test]
    fn rpc_failures_map_by_errno() {
        let eperm =
            CliError::from_status("abort", &path(), &errno_status(errno::EPERM, "root only"));
        assert_eq!(eperm.exit_code(), EXIT_PERMISSION);
        assert!(eperm.to_string().contains("EPERM"));
        let einval = CliError::from_status(
            "abort",
            &path(),
            &errno_status(errno::EINVAL, "bad address"),
        );
        assert_eq!(einval.exit_code(), EXIT_FAILURE);
        assert_eq!(einval.to_string(), "abort: bad address (EINVAL)");
        let gone = CliError::from_status("ls", &path(), &tonic::Status::unavailable("broken pipe"));
        assert_eq!(gone.exit_code(), EXIT_UNREACHABLE);
        let denied_plain =
            CliError::from_status("abort", &path(), &tonic::Status::permission_denied("no"));
        assert_eq!(denied_plain.exit_code(), EXIT_PERMISSION);
    }
}
