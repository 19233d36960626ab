//! The API's Unix socket file: created mode 0660 (optionally group-owned),
//! replacing a stale file left by a dead daemon, refusing to start when a
//! live daemon already listens on it, and removed again at shutdown.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Mode of the socket file: owner and group may connect, nobody else.
const SOCKET_MODE: u32 = 0o660;
/// Mode of a parent directory tcpd creates itself.
const DIR_MODE: u32 = 0o755;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketFileError {
    #[error("another tcpd is listening on {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("unknown group {0:?} for --socket-group")]
    UnknownGroup(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SocketFileError {
    let path = path.to_path_buf();
    move |source| SocketFileError::Io { what, path, source }
}

/// A bound listener and what tcpd created for it.
#[derive(Debug)]
pub struct SocketFile {
    pub listener: UnixListener,
    pub path: PathBuf,
    /// The parent directory, when tcpd created it (so it may hand it to --user).
    pub created_dir: Option<PathBuf>,
}

impl SocketFile {
    /// Binds `path` (see the module docs) and applies mode and group.
    pub fn bind(path: &Path, group: Option<&str>) -> Result<SocketFile, SocketFileError> {
        let gid = group
            .map(|name| match nix::unistd::Group::from_name(name) {
                Ok(Some(g)) => Ok(g.gid),
                _ => Err(SocketFileError::UnknownGroup(name.to_string())),
            })
            .transpose()?;
        let mut created_dir = None;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(io_error("cannot create", dir))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
                .map_err(io_error("cannot chmod", dir))?;
            created_dir = Some(dir.to_path_buf());
        }
        remove_if_stale(path)?;
        // Create the socket with its final mode: no window where others could connect.
        let old_umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
            0o777 & !SOCKET_MODE,
        ));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old_umask);
        let listener = bound.map_err(io_error("cannot bind", path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(io_error("cannot chmod", path))?;
        if let Some(gid) = gid {
            nix::unistd::chown(path, None, Some(gid))
                .map_err(|e| io_error("cannot chgrp", path)(io::Error::from(e)))?;
        }
        listener
            .set_nonblocking(true)
            .map_err(io_error("cannot configure", path))?;
        Ok(SocketFile {
            listener,
            path: path.to_path_buf(),
            created_dir,
        })
    }
}

/// Removes a socket file nobody listens on; fails if a daemon answers.
fn remove_if_stale(path: &Path) -> Result<(), SocketFileError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("cannot inspect", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketFileError::NotASocket(path.to_path_buf()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(SocketFileError::InUse(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale socket file");
            std::fs::remove_file(path).map_err(io_error("cannot remove stale", path))
        }
        Err(e) => Err(io_error("cannot probe", path)(e)),
    }
}

/// Removes the socket file at shutdown (best effort).
pub fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove socket file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tcpd-sockfile-{}-{name}", std::process::id()))
    }

    #[test]
    fn binds_with_mode_0660_and_detects_live_and_stale_sockets() {
        let dir = temp_path("dir");
        let path = dir.join("sub").join("tcpd.sock");
        let first = SocketFile::bind(&path, None).expect("first bind");
        let mode = std::fs::metadata(&path)
            .expect("socket exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o660);
        assert_eq!(first.created_dir.as_deref(), path.parent());
        // A live listener blocks a second daemon.
        match SocketFile::bind(&path, None) {
            Err(SocketFileError::InUse(p)) => assert_eq!(p, path),
            other => panic!("expected InUse, got {other:?}"),
        }
        // Once the first one is gone, its file is stale and gets replaced.
        drop(first);
        let second = SocketFile::bind(&path, None).expect("stale file replaced");
        drop(second);
        remove(&path);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_to_replace_a_regular_file() {
        let path = temp_path("regular");
        std::fs::write(&path, b"x").expect("write");
        assert!(matches!(
            SocketFile::bind(&path, None),
            Err(SocketFileError::NotASocket(_))
        ));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn unknown_group_is_an_error() {
        let path = temp_path("group");
        assert!(matches!(
            SocketFile::bind(&path, Some("no-such-group-tcpd")),
            Err(SocketFileError::UnknownGroup(_))
        ));
    }
}
