//! Who owns a socket: uid → user name, pid → process name.
//!
//! The daemon reports the uid/pid it saw (peer credentials at connect time);
//! names are looked up here, on the admin's machine, through the
//! [`OwnerLookup`] trait so that rendering stays a pure function in tests
//! ([`FixedOwners`]) and reads the system only in the CLI ([`SystemOwners`]).
//!
//! Process names come from `/proc/PID/comm`, which may be unreadable (hidepid)
//! or belong to a newer process that reused the pid; the name is a hint, the
//! pid is the fact.

use std::cell::RefCell;
use std::collections::HashMap;

use tcpd_proto::v2::ConnectionInfo;

/// Resolves owner ids to names.
pub trait OwnerLookup {
    /// The login name of `uid`, if the user database knows it.
    fn user_name(&self, uid: u32) -> Option<String>;
    /// The command name of process `pid`, if it is readable.
    fn process_name(&self, pid: i32) -> Option<String>;
}

/// Lookups against the running system (passwd via `getpwuid_r`, `/proc`).
/// Results are cached per uid/pid for one run.
#[derive(Debug, Default)]
pub struct SystemOwners {
    users: RefCell<HashMap<u32, Option<String>>>,
    processes: RefCell<HashMap<i32, Option<String>>>,
}

impl SystemOwners {
    /// A lookup with empty caches.
    pub fn new() -> Self {
        Self::default()
    }
}

impl OwnerLookup for SystemOwners {
    fn user_name(&self, uid: u32) -> Option<String> {
        self.users
            .borrow_mut()
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|user| printable(&user.name))
            })
            .clone()
    }

    fn process_name(&self, pid: i32) -> Option<String> {
        if pid <= 0 {
            return None;
        }
        self.processes
            .borrow_mut()
            .entry(pid)
            .or_insert_with(|| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .ok()
                    .map(|comm| printable(comm.trim_end_matches('\n')))
                    .filter(|comm| !comm.is_empty())
            })
            .clone()
    }
}

/// A fixed table of names, for tests and golden files.
#[derive(Debug, Default, Clone)]
pub struct FixedOwners {
    /// uid → user name.
    pub users: HashMap<u32, String>,
    /// pid → process name.
    pub processes: HashMap<i32, String>,
}

impl OwnerLookup for FixedOwners {
    fn user_name(&self, uid: u32) -> Option<String> {
        self.users.get(&uid).cloned()
    }

    fn process_name(&self, pid: i32) -> Option<String> {
        self.processes.get(&pid).cloned()
    }
}

/// Whether the daemon reported an owner at all: a connection without a user
/// handle (TIME-WAIT after close, a handshake in a listener's queue) may come
/// with all-zero credentials, which must not read as "root".
pub fn has_owner(info: &ConnectionInfo) -> bool {
    info.handle != 0 || info.owner_pid > 0 || info.owner_uid != 0
}

/// The owner column: `user comm[pid]`, `user [pid]` when the process name is
/// unknown, the numeric uid when the user is unknown, `-` when there is no
/// owner.
pub fn owner_label(info: &ConnectionInfo, lookup: &dyn OwnerLookup) -> String {
    if !has_owner(info) {
        return "-".to_string();
    }
    let user = lookup
        .user_name(info.owner_uid)
        .unwrap_or_else(|| info.owner_uid.to_string());
    if info.owner_pid <= 0 {
        return user;
    }
    match lookup.process_name(info.owner_pid) {
        Some(comm) => format!("{user} {comm}[{}]", info.owner_pid),
        None => format!("{user} [{}]", info.owner_pid),
    }
}

/// Drops control characters from names that end up on a terminal.
fn printable(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> FixedOwners {
        FixedOwners {
            users: HashMap::from([(0, "root".to_string()), (1000, "alice".to_string())]),
            processes: HashMap::from([(4242, "curl".to_string())]),
        }
    }

    #[test]
    fn labels() {
        let lookup = fixed();
        let mut info = ConnectionInfo {
            handle: 7,
            owner_uid: 1000,
            owner_pid: 4242,
            ..Default::default()
        };
        assert_eq!(owner_label(&info, &lookup), "alice curl[4242]");
        info.owner_pid = 17;
        assert_eq!(owner_label(&info, &lookup), "alice [17]");
        info.owner_pid = 0;
        info.owner_uid = 31337;
        assert_eq!(owner_label(&info, &lookup), "31337");
        let orphan = ConnectionInfo::default();
        assert_eq!(owner_label(&orphan, &lookup), "-");
    }

    #[test]
    fn system_lookup_knows_root_and_this_process() {
        let lookup = SystemOwners::new();
        assert_eq!(lookup.user_name(0).as_deref(), Some("root"));
        let me = i32::try_from(std::process::id()).expect("pid fits i32");
        let comm = lookup
            .process_name(me)
            .expect("own /proc/PID/comm is readable");
        assert!(!comm.is_empty() && !comm.contains('\n'));
        assert_eq!(lookup.process_name(0), None);
        assert_eq!(lookup.process_name(-5), None);
    }
}
