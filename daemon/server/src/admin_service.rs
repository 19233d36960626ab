//! The `tcpd.v2.AdminService` service: connection listing, counters, the state
//! change feed, administrative aborts (root only) and daemon status.
//!
//! Least privilege, as `ss` on Linux: every caller sees every connection's
//! addresses, state and TCP counters; only root sees who owns a socket
//! that is not its own. For other users' sockets a non-root caller gets
//! handle 0 and owner gid/pid 0 (so no process name either), in
//! ListConnections and in Watch. The owner uid stays visible (`ss -e`
//! shows it). Abort (kill) is root's alone. Any RPC added here that reveals
//! per-socket ownership or traffic (traces, captures) follows the same rule:
//! root sees all, others only their own sockets' details.

use crate::admission::Admission;
use crate::convert;
use crate::errno::Errno;
use crate::ops::{Op, StateChange};
use crate::session::Credentials;
use crate::shards::Shards;
use crate::socket_service::session_of;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::pin::Pin;
use std::sync::Arc;
use tcpd_proto::errno::EPERM;
use tcpd_proto::v2;
use tcpd_proto::v2::admin_service_server::AdminService as Admin;
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

/// Fixed facts about this daemon, reported by Status.
#[derive(Clone, Debug)]
pub struct DaemonInfo {
    pub tun_name: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub host_address: Ipv4Addr,
    /// The TUN's IPv6 side, if any.
    pub ipv6: Option<crate::config::Ipv6Settings>,
    pub mtu: u16,
    pub socket_path: String,
    /// The canonical impairment spec, "" when none.
    pub impairment: String,
    pub started: std::time::Instant,
}

/// The Admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    shards: Shards,
    info: DaemonInfo,
    admission: Arc<Admission>,
}

impl AdminService {
    pub fn new(shards: Shards, info: DaemonInfo, admission: Arc<Admission>) -> Self {
        AdminService {
            shards,
            info,
            admission,
        }
    }
}

/// Whether `caller` may see the owner details (handle, pid, gid) of a
/// socket owned by `owner_uid`: root sees all, others their own.
pub(crate) fn sees_owner(caller: &Credentials, owner_uid: u32) -> bool {
    caller.is_root() || caller.uid == owner_uid
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn counters(pairs: Vec<(String, u64)>) -> Vec<v2::Counter> {
    pairs
        .into_iter()
        .map(|(name, value)| v2::Counter { name, value })
        .collect()
}

type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<v2::WatchResponse, Status>> + Send>>;
type TraceStream = Pin<Box<dyn futures::Stream<Item = Result<v2::TraceResponse, Status>> + Send>>;
type CaptureStream =
    Pin<Box<dyn futures::Stream<Item = Result<v2::CaptureResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_connections(
        &self,
        request: Request<v2::ListConnectionsRequest>,
    ) -> Result<Response<v2::ListConnectionsResponse>, Status> {
        let session = session_of(&request)?;
        let caller = session.creds;
        let rows = self.shards.connections(session).await?;
        let connections = rows
            .into_iter()
            .map(|(mut info, mut owner)| {
                if let Some(o) = owner.as_mut()
                    && !sees_owner(&caller, o.uid)
                {
                    o.gid = 0;
                    o.pid = 0;
                    info.handle = None;
                }
                (info, owner)
            })
            .map(|(info, owner)| v2::ConnectionInfo {
                handle: info.handle.map_or(0, |h| h.0),
                state: convert::tcp_state(info.state) as i32,
                state_name: info.state.name().to_string(),
                local: Some(info.local.into()),
                remote: Some(info.remote.into()),
                owner_uid: owner.map_or(0, |o| o.uid),
                owner_gid: owner.map_or(0, |o| o.gid),
                owner_pid: owner.map_or(0, |o| o.pid),
                recv_queue: to_u64(info.recv_queue),
                send_queue: to_u64(info.send_queue),
                srtt_us: micros(info.srtt),
                rttvar_us: micros(info.rttvar),
                rto_us: micros(info.rto),
                cwnd: to_u64(info.cwnd),
                ssthresh: to_u64(info.ssthresh),
                retransmits: info.retransmits,
                bytes_sent: info.bytes_sent,
                bytes_received: info.bytes_received,
                congestion: info.congestion.name().to_string(),
                mss: u32::from(info.mss),
                listen_backlog: info.listen_backlog,
                accept_queue: info.accept_queue,
                snd_wnd: to_u64(info.snd_wnd),
                rcv_wnd: to_u64(info.rcv_wnd),
                rto_timeouts: info.recovery.rto_timeouts,
                fast_recoveries: info.recovery.fast_recoveries,
                in_recovery: info.recovery.in_recovery,
                tlp_probes: info.recovery.tlp_probes,
                dsacks_received: info.recovery.dsacks_received,
                reorder_window_us: micros(info.recovery.reorder_window),
                recv_buffer: to_u64(info.recovery.recv_buffer),
                send_buffer: to_u64(info.recovery.send_buffer),
            })
            .collect();
        Ok(Response::new(v2::ListConnectionsResponse { connections }))
    }

    async fn stats(
        &self,
        request: Request<v2::StatsRequest>,
    ) -> Result<Response<v2::StatsResponse>, Status> {
        let mut snapshot = self.shards.stats(session_of(&request)?).await?;
        snapshot.counters.extend(self.admission.named_counters());
        snapshot
            .counters
            .extend(self.shards.first().limit_counters().named());
        snapshot
            .counters
            .push(("api_refused_intake".to_string(), crate::intake::refusals()));
        Ok(Response::new(v2::StatsResponse {
            counters: counters(snapshot.counters),
            states: counters(snapshot.per_state),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<v2::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = session_of(&request)?.creds;
        let rx = self.shards.first().watch_state_changes();
        let stream = futures::stream::unfold(rx, move |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(mut change) => {
                        if change
                            .owner_uid
                            .is_some_and(|uid| !sees_owner(&caller, uid))
                        {
                            change.handle = 0;
                        }
                        return Some((Ok(state_change(change)), rx));
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "a Watch client fell behind; events skipped");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type TraceStream = TraceStream;

    async fn trace(
        &self,
        request: Request<v2::TraceRequest>,
    ) -> Result<Response<Self::TraceStream>, Status> {
        let session = session_of(&request)?;
        let req = request.into_inner();
        let unspecified = v2::SocketAddress::default();
        let local = convert::socket_addr(Some(req.local.as_ref().unwrap_or(&unspecified)))?;
        let remote = convert::socket_addr(Some(req.remote.as_ref().unwrap_or(&unspecified)))?;
        let port = match u16::try_from(req.port) {
            Ok(0) => None,
            Ok(port) => Some(port),
            Err(_) => {
                return Err(
                    Errno::new(tcpd_proto::errno::EINVAL, "port out of range").into_status()
                );
            }
        };
        let filter = tcpd_stack::TraceFilter {
            local,
            remote,
            port,
            next_only: req.next,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(crate::trace_hub::TRACE_CHANNEL);
        self.shards.trace(session, filter, tx).await?;
        tracing::debug!(%local, %remote, ?port, next = req.next, uid = session.creds.uid, "trace started");
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|event| Ok(v2::TraceResponse { event: Some(event) }));
        Ok(Response::new(Box::pin(stream)))
    }

    type CaptureStream = CaptureStream;

    async fn capture(
        &self,
        request: Request<v2::CaptureRequest>,
    ) -> Result<Response<Self::CaptureStream>, Status> {
        let session = session_of(&request)?;
        let text = request.into_inner().filter;
        let filter = tcpd_trace::capture::CaptureFilter::parse(&text)
            .map_err(|e| Errno::new(tcpd_proto::errno::EINVAL, e).into_status())?;
        let (tx, rx) = tokio::sync::mpsc::channel(crate::capture_hub::CAPTURE_CHANNEL);
        self.shards
            .single("Capture")?
            .call(session, |reply| Op::Capture { filter, tx, reply })
            .await?;
        tracing::info!(filter = %text, uid = session.creds.uid, "capture started");
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn abort(
        &self,
        request: Request<v2::AbortRequest>,
    ) -> Result<Response<v2::AbortResponse>, Status> {
        let session = session_of(&request)?;
        if !session.creds.is_root() {
            return Err(Errno::new(EPERM, "Abort is for root only").into_status());
        }
        let req = request.into_inner();
        let local = convert::socket_addr(req.local.as_ref())?;
        let remote = convert::socket_addr(req.remote.as_ref())?;
        let aborted = self.shards.abort(session, local, remote).await?;
        tracing::info!(%local, %remote, aborted, uid = session.creds.uid, "admin abort");
        Ok(Response::new(v2::AbortResponse {
            aborted: u32::try_from(aborted).unwrap_or(u32::MAX),
        }))
    }

    async fn status(
        &self,
        _request: Request<v2::StatusRequest>,
    ) -> Result<Response<v2::StatusResponse>, Status> {
        let info = &self.info;
        Ok(Response::new(v2::StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_ms: u64::try_from(info.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            tun_name: info.tun_name.clone(),
            address: Some(SocketAddrV4::new(info.address, 0).into()),
            prefix_len: u32::from(info.prefix_len),
            host_address: Some(SocketAddrV4::new(info.host_address, 0).into()),
            mtu: u32::from(info.mtu),
            socket_path: info.socket_path.clone(),
            pid: std::process::id(),
            impairment: info.impairment.clone(),
            address6: info
                .ipv6
                .map(|v6| std::net::SocketAddr::from((v6.address.addr(), 0)).into()),
            prefix_len6: info.ipv6.map_or(0, |v6| u32::from(v6.address.prefix_len())),
            host_address6: info
                .ipv6
                .map(|v6| std::net::SocketAddr::from((v6.host, 0)).into()),
        }))
    }
}

/// The Watch frame for a state change (the driver knows no proto).
fn state_change(change: StateChange) -> v2::WatchResponse {
    v2::WatchResponse {
        change: Some(v2::StateChange {
            timestamp_us: change.timestamp_us,
            local: Some(change.local.into()),
            remote: Some(change.remote.into()),
            old_state: convert::tcp_state(change.old) as i32,
            new_state: convert::tcp_state(change.new) as i32,
            handle: change.handle,
        }),
    }
}
