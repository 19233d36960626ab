//! Dropping privileges once the TUN is open and the socket bound.
//!
//! Policy: tcpd needs CAP_NET_ADMIN only to create the TUN device; the open
//! file descriptor keeps working without it. So after setup tcpd always
//! gives up every capability (bounding, ambient, inheritable, permitted,
//! effective sets) and sets no_new_privs. With `--user NAME` it also switches
//! to that user and its primary group (supplementary groups: that group
//! only). Without `--user` the uid stays as started (a hand-started root
//! daemon stays uid 0, but without capabilities); the systemd unit passes
//! `--user`. Capabilities are per thread, so this runs before any thread
//! is spawned (the runtimes are built afterwards).

use caps::CapSet;
use nix::unistd::{Gid, Uid, User};
use std::path::Path;

/// Why privileges could not be dropped; tcpd refuses to run on in that case.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("unknown user {0:?} for --user")]
    UnknownUser(String),
    #[error("cannot {what}: {source}")]
    Sys {
        what: &'static str,
        source: nix::Error,
    },
    #[error("cannot clear capabilities: {0}")]
    Caps(String),
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> PrivilegeError {
    move |source| PrivilegeError::Sys { what, source }
}

/// The user to switch to, looked up before anything changes.
pub fn lookup_user(name: &str) -> Result<User, PrivilegeError> {
    match User::from_name(name) {
        Ok(Some(user)) => Ok(user),
        _ => Err(PrivilegeError::UnknownUser(name.to_string())),
    }
}

/// Hands `paths` (the socket file, a directory tcpd created) to `user` so
/// the unprivileged daemon can remove the socket at exit.
pub fn hand_over(user: &User, paths: &[&Path]) -> Result<(), PrivilegeError> {
    for path in paths {
        nix::unistd::chown(*path, Some(user.uid), None).map_err(sys("chown to --user"))?;
    }
    Ok(())
}

/// Switches to `user` (if any) and clears every capability; see the module docs.
pub fn drop_privileges(user: Option<&User>) -> Result<(), PrivilegeError> {
    let running_as_root = Uid::effective().is_root();
    if running_as_root {
        // The bounding set can only shrink while CAP_SETPCAP is still effective.
        if let Err(e) = caps::clear(None, CapSet::Bounding) {
            tracing::debug!(error = %e, "could not clear the bounding capability set");
        }
    }
    if let Some(user) = user {
        let gid: Gid = user.gid;
        nix::unistd::setgroups(&[gid]).map_err(sys("setgroups"))?;
        nix::unistd::setresgid(gid, gid, gid).map_err(sys("setgid"))?;
        nix::unistd::setresuid(user.uid, user.uid, user.uid).map_err(sys("setuid"))?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| PrivilegeError::Caps(e.to_string()))?;
    }
    // PR_SET_NO_NEW_PRIVS (prctl(2)): execve can never grant privileges again.
    nix::sys::prctl::set_no_new_privs().map_err(sys("set no_new_privs"))?;
    if user.is_some() && (Uid::effective().is_root() || Uid::current().is_root()) {
        return Err(PrivilegeError::Caps("still root after setuid".to_string()));
    }
    Ok(())
}
