//! Admission of API client connections: how many a uid and everybody
//! together may hold, the slots kept for operators, the HTTP/2 handshake
//! deadline, and the file-descriptor budget behind them.
//!
//! Every accepted connection costs the daemon a file descriptor and some
//! HTTP/2 state. Without bounds, one member of the socket's group could hold
//! all of them (issue 16: ~20 000 idle connections exhausted the fd limit and
//! `tcpctl status` timed out). The rules:
//! - an unprivileged uid may hold `max_clients_per_uid` connections;
//! - unprivileged connections together may hold `max_clients`;
//! - root and the daemon's own uid ("operators") are not limited per uid;
//!   all connections together, operators' included, may hold
//!   `max_clients + RESERVED_SLOTS`, so `tcpctl` run as root still gets in
//!   when the unprivileged ones fill `max_clients`;
//! - `max_clients + RESERVED_SLOTS + FD_HEADROOM` must fit the fd limit,
//!   which [`raise_fd_limit`] raises to its hard limit at start; a
//!   `max_clients` that does not fit is lowered (and logged).
//!
//! A refused connection is closed at once, before any HTTP/2 byte, and
//! counted. Invariant: `total`, `unprivileged` and `per_uid` count exactly
//! the live [`Permit`]s (a permit gives its slot back when dropped).

use crate::session::Credentials;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connections kept for operators beyond `max_clients`.
pub const RESERVED_SLOTS: usize = 16;
/// File descriptors the daemon needs besides client connections (TUN,
/// listening socket, epoll, eventfds, log, a few spare).
pub const FD_HEADROOM: u64 = 64;

/// The configured bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionLimits {
    pub max_clients: usize,
    pub max_clients_per_uid: usize,
    /// An HTTP/2 connection must send its preface within this.
    pub handshake_timeout: Duration,
    /// `--admin-group`: its members are operators too.
    pub admin_gid: Option<u32>,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    PerUid,
    Total,
}

/// The API's counters, for `tcpctl stats` (names start with `api_`).
#[derive(Debug, Default)]
pub struct ApiCounters {
    pub refused_per_uid: AtomicU64,
    pub refused_total: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    pub idle_drops: AtomicU64,
    pub keepalive_drops: AtomicU64,
    logged_idle: AtomicBool,
    logged_keepalive: AtomicBool,
    logged_per_uid: AtomicBool,
    logged_total: AtomicBool,
    logged_handshake: AtomicBool,
}

#[derive(Debug, Default)]
struct Counts {
    /// Every connection, operators' included.
    total: usize,
    /// Connections of non-operators (bounded by `max_clients`).
    unprivileged: usize,
    /// Per non-operator uid.
    per_uid: HashMap<u32, usize>,
}

/// Shared by the acceptor (admits) and every session (gives back).
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    operator_uid: u32,
    counts: Mutex<Counts>,
    pub counters: ApiCounters,
}

/// A connection's slot; released on drop.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    /// `None` for an operator's connection.
    uid: Option<u32>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.admission.lock();
        counts.total = counts.total.saturating_sub(1);
        let Some(uid) = self.uid else {
            return;
        };
        counts.unprivileged = counts.unprivileged.saturating_sub(1);
        if let Some(n) = counts.per_uid.get_mut(&uid) {
            *n -= 1;
            if *n == 0 {
                counts.per_uid.remove(&uid);
            }
        }
    }
}

impl Admission {
    /// `operator_uid` is the daemon's own uid (after any privilege drop).
    pub fn new(limits: AdmissionLimits, operator_uid: u32) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            operator_uid,
            counts: Mutex::new(Counts::default()),
            counters: ApiCounters::default(),
        })
    }

    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Root, the daemon's own user, and members of `--admin-group`.
    pub fn is_operator(&self, creds: &Credentials) -> bool {
        creds.uid == 0 || creds.uid == self.operator_uid || creds.admin
    }

    /// Whether `creds` belong to a member of `--admin-group`: by the
    /// connection's primary group (SO_PEERCRED), or as a supplementary
    /// member in the account database (the daemon cannot see a peer
    /// process's groups under the unit's ProtectProc=invisible).
    pub fn is_admin(&self, creds: &Credentials) -> bool {
        let Some(group) = self.limits.admin_gid else {
            return false;
        };
        if creds.gid == group {
            return true;
        }
        use nix::unistd::{Gid, Uid, User, getgrouplist};
        let Ok(Some(user)) = User::from_uid(Uid::from_raw(creds.uid)) else {
            return false;
        };
        let Ok(name) = std::ffi::CString::new(user.name) else {
            return false;
        };
        getgrouplist(&name, user.gid).is_ok_and(|groups| groups.contains(&Gid::from_raw(group)))
    }

    /// A slot for a new connection from `creds`, or why not (counted, and
    /// logged the first time each rule bites).
    pub fn admit(self: &Arc<Self>, creds: &Credentials) -> Result<Permit, Refusal> {
        let operator = self.is_operator(creds);
        let mut counts = self.lock();
        let refusal = if operator {
            (counts.total >= self.limits.max_clients + RESERVED_SLOTS).then_some(Refusal::Total)
        } else if counts.per_uid.get(&creds.uid).copied().unwrap_or(0)
            >= self.limits.max_clients_per_uid
        {
            Some(Refusal::PerUid)
        } else {
            (counts.unprivileged >= self.limits.max_clients).then_some(Refusal::Total)
        };
        if let Some(refusal) = refusal {
            drop(counts);
            self.count_refusal(refusal, creds);
            return Err(refusal);
        }
        counts.total += 1;
        if !operator {
            counts.unprivileged += 1;
            *counts.per_uid.entry(creds.uid).or_insert(0) += 1;
        }
        Ok(Permit {
            admission: self.clone(),
            uid: (!operator).then_some(creds.uid),
        })
    }

    fn count_refusal(&self, refusal: Refusal, creds: &Credentials) {
        let c = &self.counters;
        let (counter, logged, what) = match refusal {
            Refusal::PerUid => (
                &c.refused_per_uid,
                &c.logged_per_uid,
                "a uid reached --max-clients-per-uid: its further API connections are refused",
            ),
            Refusal::Total => (
                &c.refused_total,
                &c.logged_total,
                "the API reached --max-clients: further connections are refused (root keeps reserved slots)",
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if !logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                uid = creds.uid,
                pid = creds.pid,
                "{what} (logged once; `tcpctl stats` counts every refusal)"
            );
        }
    }

    /// Counts (and the first time, logs) a connection dropped for not
    /// completing the HTTP/2 handshake in time.
    pub fn count_handshake_timeout(&self, creds: &Credentials) {
        let c = &self.counters;
        c.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
        if !c.logged_handshake.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                uid = creds.uid,
                pid = creds.pid,
                timeout = ?self.limits.handshake_timeout,
                "an API connection sent no HTTP/2 preface in time and was dropped \
                 (logged once; `tcpctl stats` counts every one)"
            );
        }
    }

    /// Counts (and the first time, logs) a session dropped for idleness.
    pub fn count_idle_drop(&self, creds: &Credentials) {
        let c = &self.counters;
        c.idle_drops.fetch_add(1, Ordering::Relaxed);
        if !c.logged_idle.swap(true, Ordering::Relaxed) {
            tracing::info!(
                uid = creds.uid,
                pid = creds.pid,
                "an API connection with no RPC and no socket for --idle-timeout-ms was dropped \
                 (logged once; `tcpctl stats` counts every one)"
            );
        }
    }

    /// Counts (and the first time, logs) a session dropped because it
    /// left a keepalive PING unanswered.
    pub fn count_keepalive_drop(&self, creds: &Credentials) {
        let c = &self.counters;
        c.keepalive_drops.fetch_add(1, Ordering::Relaxed);
        if !c.logged_keepalive.swap(true, Ordering::Relaxed) {
            tracing::info!(
                uid = creds.uid,
                pid = creds.pid,
                "an API connection did not answer an HTTP/2 keepalive PING in time and was \
                 dropped (logged once; `tcpctl stats` counts every one)"
            );
        }
    }

    /// The `api_` counters and the current number of connections, for Stats.
    pub fn named_counters(&self) -> Vec<(String, u64)> {
        let c = &self.counters;
        let total = self.lock().total as u64;
        vec![
            ("api_clients".into(), total),
            (
                "api_refused_per_uid".into(),
                c.refused_per_uid.load(Ordering::Relaxed),
            ),
            (
                "api_refused_total".into(),
                c.refused_total.load(Ordering::Relaxed),
            ),
            (
                "api_handshake_timeouts".into(),
                c.handshake_timeouts.load(Ordering::Relaxed),
            ),
            (
                "api_idle_drops".into(),
                c.idle_drops.load(Ordering::Relaxed),
            ),
            (
                "api_keepalive_drops".into(),
                c.keepalive_drops.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the new
/// soft limit (the old one if raising failed, which is logged).
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the file-descriptor limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the file-descriptor limit");
            1024
        }
    }
}

/// `max_clients` lowered, if needed, so that every client connection plus
/// the reserved slots and the daemon's own descriptors fit `fd_limit`.
pub fn fit_to_fd_limit(max_clients: usize, fd_limit: u64) -> usize {
    let room = fd_limit.saturating_sub(FD_HEADROOM + RESERVED_SLOTS as u64);
    max_clients
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(uid: u32) -> Credentials {
        Credentials {
            uid,
            gid: uid,
            pid: 1,
            admin: false,
        }
    }

    fn admission(total: usize, per_uid: usize) -> Arc<Admission> {
        Admission::new(
            AdmissionLimits {
                max_clients: total,
                max_clients_per_uid: per_uid,
                handshake_timeout: Duration::from_secs(1),
                admin_gid: Some(4242),
            },
            999,
        )
    }

    /// `--admin-group` (gid 4242 here): a member by its primary group is an
    /// operator, not limited per uid; a non-member of the same uid range is.
    #[test]
    fn admin_group_members_are_operators() {
        let a = admission(2, 1);
        let member = Credentials {
            gid: 4242,
            ..creds(2000)
        };
        assert!(a.is_admin(&member));
        assert!(!a.is_admin(&creds(2001)));
        let member = Credentials {
            admin: a.is_admin(&member),
            ..member
        };
        let held: Vec<_> = (0..4).map(|_| a.admit(&member).expect("admin")).collect();
        let user = a.admit(&creds(2001)).expect("members take no user's slot");
        assert_eq!(a.admit(&creds(2001)).unwrap_err(), Refusal::PerUid);
        drop((held, user));
    }

    #[test]
    fn per_uid_and_total_limits_with_operator_reserve() {
        let a = admission(5, 3);
        let first: Vec<_> = (0..3).map(|_| a.admit(&creds(1000)).expect("ok")).collect();
        assert_eq!(a.admit(&creds(1000)).unwrap_err(), Refusal::PerUid);
        let second: Vec<_> = (0..2).map(|_| a.admit(&creds(1001)).expect("ok")).collect();
        assert_eq!(a.admit(&creds(1002)).unwrap_err(), Refusal::Total);
        // Operators get in beyond max_clients, up to the reserve.
        let ops: Vec<_> = (0..RESERVED_SLOTS)
            .map(|i| {
                a.admit(&creds(if i % 2 == 0 { 0 } else { 999 }))
                    .expect("operator")
            })
            .collect();
        assert_eq!(a.admit(&creds(0)).unwrap_err(), Refusal::Total);
        drop(ops);
        // Slots come back when connections end.
        drop(first);
        assert!(a.admit(&creds(1000)).is_ok());
        drop(second);
        let named = a.named_counters();
        assert!(named.contains(&("api_refused_per_uid".into(), 1)));
        assert!(named.contains(&("api_refused_total".into(), 2)));
        assert!(named.contains(&("api_clients".into(), 0)));
    }

    #[test]
    fn max_clients_fits_the_fd_limit() {
        assert_eq!(fit_to_fd_limit(4096, 1024), 1024 - 64 - 16);
        assert_eq!(fit_to_fd_limit(4096, 1 << 20), 4096);
        assert_eq!(fit_to_fd_limit(4096, 10), 1);
    }
}
