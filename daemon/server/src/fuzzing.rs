//! The daemon's gRPC handlers in one process, without a TUN, shared by the
//! unit tests (`inprocess_tests`, `sockets::tests`) and the cargo-fuzz
//! targets in `daemon/server/fuzz` (feature `fuzzing`):
//! - [`facade`]/[`shuttle`]: real [`Sockets`] facades whose packets are
//!   carried by hand between two stacks;
//! - [`Harness`]: the real `SocketService`/`AdminService` over a facade,
//!   driven by a loop that carries the stack's packets to a second stack
//!   (the peer, with a listener on port 80) instead of a TUN;
//! - the fuzz entry points, each a whole scenario checked for the issue-16
//!   invariants — never a panic, never another session's socket touched:
//!   [`decode_requests`] (bytes as every request message), [`handler_calls`]
//!   (bytes as a sequence of unary/admin calls), [`stream_frames`] (bytes as
//!   the up half of a Stream RPC, gRPC framing included) and
//!   [`http2_authority`] (bytes through the `:authority` rewrite).
//!
//! Time: the scenarios run on a paused tokio clock (auto-advanced when
//! every task waits), so a blocking call dropped after [`CALL_LIMIT`] costs
//! no real time; the stacks' own clock is real.

// Some helpers serve only the unit tests.
#![cfg_attr(not(test), allow(dead_code))]

use crate::admin_service::{AdminService, DaemonInfo};
use crate::admission::{Admission, AdmissionLimits};
use crate::ops::{Control, DriverHandle, Op, Queued, SessionSlots};
use crate::session::{Credentials, SessionEvent, SessionId, SessionInfo};
use crate::shards::Shards;
use crate::socket_service::SocketService;
use crate::sockets::{Clock, Quotas, Sockets};
use prost::Message;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tcpd_proto::v2;
use tcpd_proto::v2::admin_service_server::AdminService as AdminApi;
use tcpd_proto::v2::socket_service_server::SocketService as SocketApi;
use tcpd_stack::{Stack, StackConfig};
use tokio::sync::{broadcast, mpsc};

/// The daemon's address in the harness.
pub(crate) const A: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
/// The peer's address.
pub(crate) const B: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);

/// A socket facade over a real stack at `address`, seeded by `seed`.
pub(crate) fn facade(address: Ipv4Addr, seed: u64, quotas: Quotas) -> Sockets {
    let clock = Clock::start();
    let mut config = StackConfig::new(address, 24);
    config.rng_seed = seed;
    config.isn_secret = [seed as u8; 16];
    let (state_changes, _) = broadcast::channel(16);
    Sockets::new(
        Stack::new(config, clock.now()),
        clock,
        quotas,
        state_changes,
    )
}

/// A session of `uid` started on `s`.
pub(crate) fn session(s: &mut Sockets, id: u64, uid: u32) -> SessionInfo {
    let info = SessionInfo {
        id: SessionId(id),
        creds: Credentials {
            uid,
            gid: uid,
            pid: 100,
            admin: false,
        },
    };
    s.session_started(info.id);
    info
}

/// Moves every pending packet of `from` into `to`; true if any moved.
fn carry(from: &mut Sockets, to: &mut Sockets) -> bool {
    let mut buf = vec![0u8; 2048];
    let mut moved = false;
    let now = from.now();
    while let Some(n) = from.stack_and_taps().0.poll_transmit(now, &mut buf) {
        let now = to.now();
        to.stack_and_taps().0.handle_packet(now, &buf[..n]);
        moved = true;
    }
    moved
}

/// Carries packets both ways until both stacks are quiet, publishing
/// events (which completes parked ops) as the driver does.
pub(crate) fn shuttle(a: &mut Sockets, b: &mut Sockets) {
    loop {
        let moved = carry(a, b) | carry(b, a);
        let a_events = a.publish_events();
        let b_events = b.publish_events();
        if !moved && !a_events && !b_events {
            break;
        }
    }
}

/// The peer's listening port.
pub(crate) const PEER_PORT: u16 = 80;

pub(crate) fn info(id: u64, uid: u32) -> SessionInfo {
    SessionInfo {
        id: SessionId(id),
        creds: Credentials {
            uid,
            gid: uid,
            pid: 4000 + id as i32,
            admin: false,
        },
    }
}

pub(crate) fn request<T>(session: SessionInfo, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.extensions_mut().insert(session);
    r
}

pub(crate) fn addr(a: SocketAddrV4) -> v2::SocketAddress {
    v2::SocketAddress::from(a)
}

/// An in-process daemon: see the module docs.
pub(crate) struct Harness {
    pub(crate) driver: DriverHandle,
    pub(crate) socket: SocketService,
    pub(crate) admin: AdminService,
    /// The session of every op, in the order the driver ran them.
    pub(crate) order: Arc<Mutex<Vec<SessionId>>>,
}

struct Inbox {
    ops: mpsc::Receiver<Queued>,
    control: mpsc::UnboundedReceiver<Control>,
    sessions: mpsc::UnboundedReceiver<SessionEvent>,
    slots: Arc<SessionSlots>,
}

impl Harness {
    /// The harness and its driver loop (not started: spawn it).
    pub(crate) fn new(quotas: Quotas) -> (Harness, impl Future<Output = ()> + Send + 'static) {
        let (ops_tx, ops) = mpsc::channel(crate::ops::OP_CHANNEL_CAPACITY);
        let (sessions_tx, sessions) = mpsc::unbounded_channel();
        let (control, control_rx) = mpsc::unbounded_channel::<Control>();
        let (state_changes, _) = broadcast::channel(64);
        let slots = Arc::new(SessionSlots::new(quotas.op_slots));
        let driver = DriverHandle {
            ops: ops_tx,
            slots: slots.clone(),
            limit_counters: Arc::default(),
            control,
            sessions: sessions_tx,
            state_changes,
        };
        let order = Arc::new(Mutex::new(Vec::new()));
        let daemon = facade(A, 1, quotas);
        let inbox = Inbox {
            ops,
            control: control_rx,
            sessions,
            slots,
        };
        let run = drive(daemon, inbox, order.clone());
        let admission = Admission::new(
            AdmissionLimits {
                max_clients: 64,
                max_clients_per_uid: 64,
                handshake_timeout: Duration::from_secs(5),
                admin_gid: None,
            },
            0,
        );
        let daemon_info = DaemonInfo {
            tun_name: "fake0".into(),
            address: A,
            prefix_len: 24,
            host_address: B,
            ipv6: None,
            mtu: 1500,
            socket_path: "/nonexistent".into(),
            impairment: String::new(),
            started: std::time::Instant::now(),
        };
        let harness = Harness {
            socket: SocketService::new(Shards::new(vec![driver.clone()])),
            admin: AdminService::new(Shards::new(vec![driver.clone()]), daemon_info, admission),
            driver,
            order,
        };
        (harness, run)
    }

    pub(crate) fn start_session(&self, session: SessionInfo) {
        self.driver
            .sessions
            .send(SessionEvent::Started(session.id))
            .expect("the harness's driver loop runs");
    }

    pub(crate) fn end_session(&self, session: SessionInfo) {
        self.driver
            .sessions
            .send(SessionEvent::Ended(session.id))
            .expect("the harness's driver loop runs");
    }
}

/// The driver loop: ops and session events to the facade, timers, packets
/// carried to and from the peer, whose listener accepts and drains
/// everything.
async fn drive(mut daemon: Sockets, mut inbox: Inbox, order: Arc<Mutex<Vec<SessionId>>>) {
    let mut peer = facade(B, 2, Quotas::default());
    let peer_session = session(&mut peer, 1, 0);
    let listener = {
        let (reply, mut rx) = tokio::sync::oneshot::channel();
        peer.execute(crate::ops::Request {
            session: peer_session,
            op: Op::Listen {
                setup: crate::ops::SocketSetup {
                    bind: Some(SocketAddrV4::new(B, PEER_PORT).into()),
                    ..Default::default()
                },
                backlog: 128,
                reply,
            },
        });
        rx.try_recv().expect("answered").expect("peer listens").0
    };
    let mut accepted: Vec<u64> = Vec::new();
    loop {
        tokio::select! {
            biased;
            Some(event) = inbox.sessions.recv() => match event {
                SessionEvent::Started(id) => daemon.session_started(id),
                SessionEvent::Ended(id) => {
                    daemon.session_ended(id);
                    inbox.slots.forget(id);
                }
            },
            queued = inbox.ops.recv() => {
                let Some(queued) = queued else { return };
                order.lock().expect("not poisoned").push(queued.request.session.id);
                daemon.execute(queued.request);
            }
            Some(control) = inbox.control.recv() => match control {
                Control::ConnectAbandoned(id) => daemon.connect_abandoned(id),
                Control::Close(request) => daemon.execute(request),
                Control::Terminate(done) => {
                    daemon.abort_everything();
                    let _ = done.send(());
                }
            },
            () = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
        for s in [&mut daemon, &mut peer] {
            let now = s.now();
            let (stack, _) = s.stack_and_taps();
            if stack.poll_timeout().is_some_and(|at| at <= now) {
                stack.handle_timeout(now);
            }
        }
        serve_peer(&mut peer, peer_session, listener, &mut accepted);
        shuttle(&mut daemon, &mut peer);
    }
}

/// The peer accepts every connection and reads everything (keeping at most
/// 32 connections; older ones are closed).
fn serve_peer(peer: &mut Sockets, session: SessionInfo, listener: u64, accepted: &mut Vec<u64>) {
    let mut run = |op: Op| {
        peer.execute(crate::ops::Request { session, op });
    };
    let (reply, mut rx) = tokio::sync::oneshot::channel();
    run(Op::Accept {
        handle: listener,
        wait: false,
        reply,
    });
    if let Ok(Ok(c)) = rx.try_recv() {
        accepted.push(c.handle);
    }
    if accepted.len() > 32 {
        let (reply, _) = tokio::sync::oneshot::channel();
        run(Op::Close {
            handle: accepted.remove(0),
            abort: false,
            consumed: None,
            reply,
        });
    }
    for &h in accepted.iter() {
        let (reply, _) = tokio::sync::oneshot::channel();
        run(Op::Read {
            handle: h,
            max_len: 1 << 20,
            peek: false,
            wait: false,
            reply,
        });
    }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

/// A current-thread runtime on a paused clock (see the module docs).
pub(crate) fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
}

/// A request body fed by the test: each message is one DATA frame.
pub(crate) struct FedBody(mpsc::UnboundedReceiver<bytes::Bytes>);

impl http_body::Body for FedBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|data| data.map(|d| Ok(http_body::Frame::data(d))))
    }
}

/// One Stream frame in gRPC framing (flag, length, message).
pub(crate) fn grpc_message(frame: v2::StreamRequest) -> bytes::Bytes {
    let message = frame.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(
        &u32::try_from(message.len())
            .expect("a small message")
            .to_be_bytes(),
    );
    out.extend_from_slice(&message);
    out.into()
}

/// A Stream RPC's request stream whose frames the test sends on the
/// returned channel.
pub(crate) fn fed_up_stream() -> (
    mpsc::UnboundedSender<bytes::Bytes>,
    tonic::Streaming<v2::StreamRequest>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let streaming = tonic::Streaming::new_request(
        tonic_prost::ProstDecoder::<v2::StreamRequest>::new(tcpd_proto::codec::buffer_settings()),
        FedBody(rx),
        None,
        None,
    );
    (tx, streaming)
}

/// One call of the attacking session.
#[derive(Clone, Debug)]
pub(crate) enum Call {
    Socket(v2::SocketRequest),
    Bind(v2::BindRequest),
    Listen(v2::ListenRequest),
    Accept(v2::AcceptRequest),
    Connect(v2::ConnectRequest),
    Read(v2::ReadRequest),
    Write(v2::WriteRequest),
    Shutdown(v2::ShutdownRequest),
    Close(v2::CloseRequest),
    GetSocketName(v2::GetSocketNameRequest),
    GetPeerName(v2::GetPeerNameRequest),
    SetOption(v2::SetOptionRequest),
    GetOption(v2::GetOptionRequest),
    Poll(v2::PollRequest),
    ListConnections,
    Stats,
    Status,
    Abort(v2::AbortRequest),
    /// Arbitrary bytes, decoded as request message number `.0` (when they
    /// decode).
    Raw(u8, Vec<u8>),
}

/// A Raw call as the typed call its bytes decode to, if they do.
pub(crate) fn decode_raw(kind: u8, bytes: &[u8]) -> Option<Call> {
    Some(match kind {
        0 => Call::Socket(v2::SocketRequest::decode(bytes).ok()?),
        1 => Call::Bind(v2::BindRequest::decode(bytes).ok()?),
        2 => Call::Listen(v2::ListenRequest::decode(bytes).ok()?),
        3 => Call::Accept(v2::AcceptRequest::decode(bytes).ok()?),
        4 => Call::Connect(v2::ConnectRequest::decode(bytes).ok()?),
        5 => Call::Read(v2::ReadRequest::decode(bytes).ok()?),
        6 => Call::Write(v2::WriteRequest::decode(bytes).ok()?),
        7 => Call::Shutdown(v2::ShutdownRequest::decode(bytes).ok()?),
        8 => Call::Close(v2::CloseRequest::decode(bytes).ok()?),
        9 => Call::GetSocketName(v2::GetSocketNameRequest::decode(bytes).ok()?),
        10 => Call::GetPeerName(v2::GetPeerNameRequest::decode(bytes).ok()?),
        11 => Call::SetOption(v2::SetOptionRequest::decode(bytes).ok()?),
        12 => Call::GetOption(v2::GetOptionRequest::decode(bytes).ok()?),
        _ => Call::Poll(v2::PollRequest::decode(bytes).ok()?),
    })
}

/// The handle a call names, if it names one.
pub(crate) fn target(call: &Call) -> Option<u64> {
    match call {
        Call::Bind(r) => Some(r.handle),
        Call::Listen(r) if r.handle != 0 => Some(r.handle),
        Call::Accept(r) => Some(r.handle),
        Call::Connect(r) if r.handle != 0 => Some(r.handle),
        Call::Read(r) => Some(r.handle),
        Call::Write(r) => Some(r.handle),
        Call::Shutdown(r) => Some(r.handle),
        Call::Close(r) => Some(r.handle),
        Call::GetSocketName(r) => Some(r.handle),
        Call::GetPeerName(r) => Some(r.handle),
        Call::SetOption(r) => Some(r.handle),
        Call::GetOption(r) => Some(r.handle),
        _ => None,
    }
}

/// How long a call may take before it is dropped (the caller "goes away").
pub(crate) const CALL_LIMIT: Duration = Duration::from_millis(20);

/// Runs `call` for `session`: whether it succeeded, and for Poll the events
/// reported per entry. `None` when it was dropped at [`CALL_LIMIT`].
pub(crate) async fn perform(
    h: &Harness,
    session: SessionInfo,
    call: Call,
) -> Option<(bool, Vec<u32>)> {
    let (s, a) = (&h.socket, &h.admin);
    fn ok<T>(r: Result<T, tonic::Status>) -> (bool, Vec<u32>) {
        (r.is_ok(), Vec::new())
    }
    let work = async move {
        match call {
            Call::Socket(r) => ok(s.socket(request(session, r)).await),
            Call::Bind(r) => ok(s.bind(request(session, r)).await),
            Call::Listen(r) => ok(s.listen(request(session, r)).await),
            Call::Accept(r) => ok(s.accept(request(session, r)).await),
            Call::Connect(r) => ok(s.connect(request(session, r)).await),
            Call::Read(r) => ok(s.read(request(session, r)).await),
            Call::Write(r) => ok(s.write(request(session, r)).await),
            Call::Shutdown(r) => ok(s.shutdown(request(session, r)).await),
            Call::Close(r) => ok(s.close(request(session, r)).await),
            Call::GetSocketName(r) => ok(s.get_socket_name(request(session, r)).await),
            Call::GetPeerName(r) => ok(s.get_peer_name(request(session, r)).await),
            Call::SetOption(r) => ok(s.set_option(request(session, r)).await),
            Call::GetOption(r) => ok(s.get_option(request(session, r)).await),
            Call::Poll(r) => match s.poll(request(session, r)).await {
                Ok(resp) => (
                    true,
                    resp.into_inner().entries.iter().map(|e| e.events).collect(),
                ),
                Err(_) => (false, Vec::new()),
            },
            Call::ListConnections => ok(a
                .list_connections(request(session, v2::ListConnectionsRequest {}))
                .await),
            Call::Stats => ok(a.stats(request(session, v2::StatsRequest {})).await),
            Call::Status => ok(a.status(request(session, v2::StatusRequest {})).await),
            Call::Abort(r) => ok(a.abort(request(session, r)).await),
            Call::Raw(..) => unreachable!("decoded before"),
        }
    };
    tokio::time::timeout(CALL_LIMIT, work).await.ok()
}

/// The victim's sockets and what must stay true of them.
pub(crate) struct Victim {
    pub(crate) session: SessionInfo,
    pub(crate) listener: u64,
    pub(crate) listen_addr: SocketAddrV4,
    pub(crate) connected: u64,
    pub(crate) rcvbuf: Option<v2::OptionValue>,
}

pub(crate) async fn victim(h: &Harness) -> Victim {
    let session = info(2, 1001);
    h.start_session(session);
    let s = &h.socket;
    let listen_addr = SocketAddrV4::new(A, 5000);
    let listener = s
        .listen(request(
            session,
            v2::ListenRequest {
                bind: Some(addr(listen_addr)),
                backlog: 8,
                ..Default::default()
            },
        ))
        .await
        .expect("victim listens")
        .into_inner()
        .handle;
    let connected = s
        .socket(request(session, v2::SocketRequest::default()))
        .await
        .expect("victim socket")
        .into_inner()
        .handle;
    s.connect(request(
        session,
        v2::ConnectRequest {
            handle: connected,
            address: Some(addr(SocketAddrV4::new(B, PEER_PORT))),
            nonblocking: false,
            options: Vec::new(),
        },
    ))
    .await
    .expect("victim connects to the peer");
    s.set_option(request(
        session,
        v2::SetOptionRequest {
            handle: connected,
            option: v2::SocketOption::SoRcvbuf as i32,
            value: Some(v2::OptionValue {
                value: Some(v2::option_value::Value::Int(65536)),
            }),
        },
    ))
    .await
    .expect("victim sets SO_RCVBUF");
    let rcvbuf = get_rcvbuf(h, session, connected).await;
    Victim {
        session,
        listener,
        listen_addr,
        connected,
        rcvbuf,
    }
}

pub(crate) async fn get_rcvbuf(
    h: &Harness,
    session: SessionInfo,
    handle: u64,
) -> Option<v2::OptionValue> {
    h.socket
        .get_option(request(
            session,
            v2::GetOptionRequest {
                handle,
                option: v2::SocketOption::SoRcvbuf as i32,
            },
        ))
        .await
        .expect("victim's SO_RCVBUF")
        .into_inner()
        .value
}

impl Victim {
    pub(crate) fn owns(&self, handle: u64) -> bool {
        handle == self.listener || handle == self.connected
    }

    /// The victim's sockets are as it left them.
    pub(crate) async fn check(&self, h: &Harness) {
        let s = &h.socket;
        let local = s
            .get_socket_name(request(
                self.session,
                v2::GetSocketNameRequest {
                    handle: self.listener,
                },
            ))
            .await
            .expect("the victim's listener is still its own")
            .into_inner()
            .address;
        assert_eq!(local, Some(addr(self.listen_addr)));
        let peer = s
            .get_peer_name(request(
                self.session,
                v2::GetPeerNameRequest {
                    handle: self.connected,
                },
            ))
            .await
            .expect("the victim's connection is still connected")
            .into_inner()
            .address;
        assert_eq!(peer, Some(addr(SocketAddrV4::new(B, PEER_PORT))));
        assert_eq!(
            get_rcvbuf(h, self.session, self.connected).await,
            self.rcvbuf
        );
        let written = s
            .write(request(
                self.session,
                v2::WriteRequest {
                    handle: self.connected,
                    data: b"still mine".to_vec().into(),
                    nonblocking: true,
                    flags: 0,
                },
            ))
            .await
            .expect("the victim can still write")
            .into_inner()
            .written;
        assert_eq!(written, 10);
    }
}

// ------------------------------------------------------------- scenarios

/// The quotas of every session in the scenarios: small, so that a short
/// input reaches each limit.
pub(crate) const FUZZ_QUOTAS: Quotas = Quotas {
    sockets: 16,
    pending_ops: 32,
    buffered_bytes: 1 << 20,
    sockets_per_uid: 32,
    op_slots: crate::ops::SESSION_QUEUE_SLOTS,
};

/// Records one input may hold (bounds the time of one run).
const MAX_RECORDS: usize = 64;

/// Record kinds of [`handler_calls`] after the 14 SocketService requests
/// numbered as in [`decode_raw`].
const KIND_LIST_CONNECTIONS: u8 = 14;
const KIND_STATS: u8 = 15;
const KIND_STATUS: u8 = 16;
const KIND_ABORT: u8 = 17;
/// Kinds in all (a record's kind byte is taken modulo this).
const KINDS: u8 = 18;

/// Fuzz input as records `[kind][len][len bytes]`, at most
/// [`MAX_RECORDS`]; a short last record takes what is left.
fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&kind, rest) = data.split_first()?;
        let (len, rest) = match rest.split_first() {
            Some((&len, rest)) => (usize::from(len), rest),
            None => (0, rest),
        };
        let (body, rest) = rest.split_at(len.min(rest.len()));
        data = rest;
        Some((kind, body))
    })
    .take(MAX_RECORDS)
}

/// The calls of a [`handler_calls`] input: each record's body decoded as
/// the request its kind names (records that do not decode are skipped).
pub(crate) fn parse_calls(data: &[u8]) -> Vec<Call> {
    records(data)
        .filter_map(|(kind, body)| match kind % KINDS {
            KIND_LIST_CONNECTIONS => Some(Call::ListConnections),
            KIND_STATS => Some(Call::Stats),
            KIND_STATUS => Some(Call::Status),
            KIND_ABORT => v2::AbortRequest::decode(body).ok().map(Call::Abort),
            kind => decode_raw(kind, body),
        })
        .collect()
}

/// The inverse of [`parse_calls`] (seed inputs for the fuzzer); a message
/// longer than a record holds is cut, so it may not decode.
pub(crate) fn encode_calls(calls: &[Call]) -> Vec<u8> {
    let mut out = Vec::new();
    for call in calls {
        let (kind, body) = match call {
            Call::Socket(r) => (0, r.encode_to_vec()),
            Call::Bind(r) => (1, r.encode_to_vec()),
            Call::Listen(r) => (2, r.encode_to_vec()),
            Call::Accept(r) => (3, r.encode_to_vec()),
            Call::Connect(r) => (4, r.encode_to_vec()),
            Call::Read(r) => (5, r.encode_to_vec()),
            Call::Write(r) => (6, r.encode_to_vec()),
            Call::Shutdown(r) => (7, r.encode_to_vec()),
            Call::Close(r) => (8, r.encode_to_vec()),
            Call::GetSocketName(r) => (9, r.encode_to_vec()),
            Call::GetPeerName(r) => (10, r.encode_to_vec()),
            Call::SetOption(r) => (11, r.encode_to_vec()),
            Call::GetOption(r) => (12, r.encode_to_vec()),
            Call::Poll(r) => (13, r.encode_to_vec()),
            Call::ListConnections => (KIND_LIST_CONNECTIONS, Vec::new()),
            Call::Stats => (KIND_STATS, Vec::new()),
            Call::Status => (KIND_STATUS, Vec::new()),
            Call::Abort(r) => (KIND_ABORT, r.encode_to_vec()),
            Call::Raw(kind, bytes) => (*kind, bytes.clone()),
        };
        let body = &body[..body.len().min(usize::from(u8::MAX))];
        out.push(kind);
        out.push(body.len() as u8);
        out.extend_from_slice(body);
    }
    out
}

/// One session (uid 1000) makes `calls` against the real handlers while
/// another session (uid 1001) holds a listener and a connection: every
/// call naming one of the victim's handles fails, a poll of them reports
/// POLLNVAL, and the victim's sockets are as it left them, before and after
/// the attacker's session ends. Nothing may panic.
pub(crate) fn run_calls(calls: Vec<Call>) {
    paused_runtime().block_on(async {
        let (h, run) = Harness::new(FUZZ_QUOTAS);
        tokio::spawn(run);
        let victim = victim(&h).await;
        let attacker = info(3, 1000);
        h.start_session(attacker);
        for call in calls {
            let call = match call {
                Call::Raw(kind, bytes) => match decode_raw(kind, &bytes) {
                    Some(c) => c,
                    None => continue,
                },
                c => c,
            };
            let named = target(&call);
            let polled: Vec<u64> = match &call {
                Call::Poll(r) => r.entries.iter().map(|e| e.handle).collect(),
                _ => Vec::new(),
            };
            let Some((ok, events)) = perform(&h, attacker, call.clone()).await else {
                continue;
            };
            if let Some(handle) = named {
                assert!(
                    !(ok && victim.owns(handle)),
                    "{call:?} succeeded on the other session's socket"
                );
            }
            for (handle, events) in polled.iter().zip(&events) {
                if victim.owns(*handle) {
                    assert_eq!(*events, crate::sockets::POLLNVAL, "{call:?}");
                }
            }
        }
        victim.check(&h).await;
        // The attacker's end closes its sockets; the victim's stay.
        h.end_session(attacker);
        victim.check(&h).await;
    });
}

/// Fuzz entry: `data` as a sequence of calls ([`parse_calls`]), run by
/// [`run_calls`].
pub fn handler_calls(data: &[u8]) {
    run_calls(parse_calls(data));
}

/// `M` decoded from `bytes`, if it decodes; then encoding it and decoding
/// that gives the same message.
fn decodes_stably<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(message) = M::decode(bytes) {
        let again = M::decode(message.encode_to_vec().as_slice())
            .unwrap_or_else(|e| panic!("{message:?} re-encoded does not decode: {e}"));
        assert_eq!(again, message);
    }
}

/// Fuzz entry: `data` decoded as every request message of both services
/// (and as an fd-channel request): prost decodes or fails, never panics,
/// and what decodes survives a re-encoding unchanged.
pub fn decode_requests(data: &[u8]) {
    decodes_stably::<v2::SocketRequest>(data);
    decodes_stably::<v2::BindRequest>(data);
    decodes_stably::<v2::ListenRequest>(data);
    decodes_stably::<v2::AcceptRequest>(data);
    decodes_stably::<v2::ConnectRequest>(data);
    decodes_stably::<v2::ReadRequest>(data);
    decodes_stably::<v2::WriteRequest>(data);
    decodes_stably::<v2::ShutdownRequest>(data);
    decodes_stably::<v2::CloseRequest>(data);
    decodes_stably::<v2::GetSocketNameRequest>(data);
    decodes_stably::<v2::GetPeerNameRequest>(data);
    decodes_stably::<v2::SetOptionRequest>(data);
    decodes_stably::<v2::GetOptionRequest>(data);
    decodes_stably::<v2::PollRequest>(data);
    decodes_stably::<v2::StreamRequest>(data);
    decodes_stably::<v2::OpenFdChannelRequest>(data);
    decodes_stably::<v2::ListConnectionsRequest>(data);
    decodes_stably::<v2::StatsRequest>(data);
    decodes_stably::<v2::WatchRequest>(data);
    decodes_stably::<v2::AbortRequest>(data);
    decodes_stably::<v2::StatusRequest>(data);
    decodes_stably::<v2::TraceRequest>(data);
    decodes_stably::<v2::CaptureRequest>(data);
    use tcpd_proto::fd_channel::{REQUEST_LEN, Request};
    if let Some(bytes) = data.first_chunk::<REQUEST_LEN>()
        && let Some(request) = Request::decode(bytes)
    {
        assert_eq!(Request::decode(&request.encode()), Some(request));
    }
}

/// One record of a [`stream_frames`] input as DATA frame bytes: an even
/// kind frames the body as one gRPC message (5-byte prefix), an odd kind
/// passes it as it is (so the framing itself is fuzzed too).
fn stream_chunk(kind: u8, body: &[u8]) -> bytes::Bytes {
    if kind & 1 == 0 {
        let mut out = Vec::with_capacity(5 + body.len());
        out.push(0);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
        out.into()
    } else {
        bytes::Bytes::copy_from_slice(body)
    }
}

/// Reads the response stream until it ends (then `None`) or nothing comes
/// for `limit`.
async fn drain<S>(down: &mut Option<S>, limit: Duration)
where
    S: tokio_stream::Stream + Unpin,
{
    use tokio_stream::StreamExt;
    while let Some(stream) = down.as_mut() {
        match tokio::time::timeout(limit, stream.next()).await {
            Ok(Some(_)) => {}
            Ok(None) => *down = None,
            Err(_) => break,
        }
    }
}

/// Fuzz entry: `data` as the up half of one Stream RPC of an attacking
/// session (records as in [`handler_calls`], each one DATA frame, see
/// [`stream_chunk`]; a kind with bit 1 set also reads the responses that
/// are ready). The victim's sockets stay untouched; once the client ends
/// its half, the stream ends and the attacker's session owns no socket.
pub fn stream_frames(data: &[u8]) {
    paused_runtime().block_on(async {
        let (h, run) = Harness::new(FUZZ_QUOTAS);
        tokio::spawn(run);
        let victim = victim(&h).await;
        let attacker = info(3, 1000);
        h.start_session(attacker);
        let mut records = records(data);
        let (up, streaming) = fed_up_stream();
        // The handler reads the first frame (`open`) before it answers.
        if let Some((kind, body)) = records.next() {
            let _ = up.send(stream_chunk(kind, body));
        }
        let opened =
            tokio::time::timeout(CALL_LIMIT, h.socket.stream(request(attacker, streaming))).await;
        let mut down = match opened {
            Ok(Ok(response)) => Some(response.into_inner()),
            _ => None,
        };
        let was_opened = down.is_some();
        for (kind, body) in records {
            let _ = up.send(stream_chunk(kind, body));
            if kind & 2 != 0 {
                drain(&mut down, CALL_LIMIT).await;
            }
        }
        drop(up);
        drain(&mut down, Duration::from_secs(10)).await;
        assert!(down.is_none(), "the stream outlived its up half by 10 s");
        // The stream's close ran: nothing of the attacker's is left. (Not
        // when the client gave up before the stream opened: a connect still
        // waiting for its SYN,ACK keeps its socket until it fails, and the
        // session's end closes it — found by this target.)
        if was_opened {
            let owns = h
                .driver
                .call(attacker, |reply| Op::OwnsSockets { reply })
                .await;
            assert_eq!(owns, Ok(false), "a socket outlived its stream");
        }
        victim.check(&h).await;
        h.end_session(attacker);
        victim.check(&h).await;
    });
}

/// What the server reads through an `:authority` fix fed `input` in
/// pieces of `chunk` bytes, as the session's socket reader does.
pub(crate) fn authority_rewrite(
    input: &[u8],
    chunk: usize,
) -> Result<Vec<u8>, crate::authority::FixError> {
    let mut fix = crate::authority::AuthorityFix::new();
    let mut seen = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        let n = fix.pass_len(piece);
        seen.extend_from_slice(&piece[..n]);
        fix.absorb(&piece[n..])?;
        let mut buf = vec![0; fix.pending()];
        let taken = fix.take(&mut buf);
        seen.extend_from_slice(&buf[..taken]);
    }
    Ok(seen)
}

/// Fuzz entry: bytes from a client through the HTTP/2 `:authority` rewrite
/// (`authority.rs`), after the connection preface: the first byte sets the
/// read size; what the server sees must not depend on how the input was
/// split into reads.
pub fn http2_authority(data: &[u8]) {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let mut input = crate::authority::PREFACE.to_vec();
    input.extend_from_slice(rest);
    let pieces = authority_rewrite(&input, usize::from(chunk));
    let whole = authority_rewrite(&input, input.len());
    match (pieces, whole) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "read size {chunk} changed the bytes"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("read size {chunk}: {a:?} but in one read {b:?}"),
    }
}
