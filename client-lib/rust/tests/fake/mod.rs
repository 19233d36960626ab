//! An in-process stand-in for the tcpd daemon, for client unit tests.
//!
//! It implements the `tcpd.v1.Socket` service over a Unix socket in a temp
//! dir with an in-memory loopback instead of a TCP stack: connecting to a
//! port with a listener pairs two sockets whose byte pipes feed each other.
//! Each pipe holds at most [`PIPE_CAPACITY`] bytes, so a reader that stops
//! reading stops the writer (the back-pressure path the real daemon has).
//! Every up frame of every Stream RPC is logged, so tests can check what the
//! client sent. Close waits (briefly) for the socket's Stream up side to end,
//! so data queued before a close is delivered first.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tcpd_proto::errno;
use tcpd_proto::errno_status;
use tcpd_proto::v1::socket_server::{Socket as SocketService, SocketServer};
use tcpd_proto::v1::{self, stream_down, stream_up};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Bytes one direction of a fake connection buffers.
pub const PIPE_CAPACITY: usize = 64 * 1024;

/// The fake's own address, used as every socket's local address.
pub const FAKE_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

/// One direction of a connection.
#[derive(Default)]
pub struct Pipe {
    state: Mutex<PipeState>,
    changed: Notify,
}

#[derive(Default)]
struct PipeState {
    buf: VecDeque<u8>,
    fin: bool,
    error: Option<i32>,
    /// The reading socket was closed: its Stream ends.
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pipe {
    async fn push(&self, mut data: &[u8]) {
        while !data.is_empty() {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut st = lock(&self.state);
                let room = PIPE_CAPACITY.saturating_sub(st.buf.len());
                if room > 0 {
                    let n = room.min(data.len());
                    st.buf.extend(&data[..n]);
                    data = &data[n..];
                    self.changed.notify_waiters();
                    continue;
                }
            }
            changed.await;
        }
    }

    fn set_fin(&self) {
        lock(&self.state).fin = true;
        self.changed.notify_waiters();
    }

    fn set_error(&self, errno: i32) {
        lock(&self.state).error = Some(errno);
        self.changed.notify_waiters();
    }

    fn set_closed(&self) {
        lock(&self.state).closed = true;
        self.changed.notify_waiters();
    }

    /// Next down frame: data (≤ 64 KiB), eof, or error; waits for one.
    /// `None` once the reading socket is closed.
    async fn pull(&self) -> Option<stream_down::Frame> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut st = lock(&self.state);
                if st.closed {
                    return None;
                }
                if let Some(e) = st.error.take() {
                    return Some(stream_down::Frame::Error(v1::Errno {
                        number: e,
                        name: tcpd_proto::errno_name(e).into(),
                    }));
                }
                if !st.buf.is_empty() {
                    let n = st.buf.len().min(64 * 1024);
                    let data: Vec<u8> = st.buf.drain(..n).collect();
                    self.changed.notify_waiters();
                    return Some(stream_down::Frame::Data(data));
                }
                if st.fin {
                    return Some(stream_down::Frame::Eof(true));
                }
            }
            changed.await;
        }
    }

    fn readable(&self) -> bool {
        let st = lock(&self.state);
        !st.buf.is_empty() || st.fin || st.error.is_some()
    }
}

struct Conn {
    /// Bytes for this socket to read.
    incoming: Arc<Pipe>,
    /// Bytes this socket sends (the peer's `incoming`).
    outgoing: Arc<Pipe>,
}

/// A listener's queue of accepted (handle, peer).
type AcceptQueue = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<(u64, SocketAddrV4)>>>;

#[derive(Default)]
struct Sock {
    local: Option<SocketAddrV4>,
    peer: Option<SocketAddrV4>,
    conn: Option<Arc<Conn>>,
    accept_queue: Option<AcceptQueue>,
    options: HashMap<i32, v1::OptionValue>,
    /// The Stream RPC's up-side task, awaited by Close.
    up_task: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Inner {
    next_handle: u64,
    next_port: u16,
    sockets: HashMap<u64, Sock>,
    /// port → the listener's queue of accepted (handle, peer).
    listeners: HashMap<u16, mpsc::UnboundedSender<(u64, SocketAddrV4)>>,
}

/// Shared state of the fake, inspectable by tests.
#[derive(Default)]
pub struct State {
    inner: Mutex<Inner>,
    /// (handle, "data:<len>" | "shutdown_write") for every up frame.
    pub frames: Mutex<Vec<(u64, String)>>,
    /// Handles closed by a Close call, in order.
    pub closed: Mutex<Vec<u64>>,
}

impl State {
    fn alloc(&self) -> u64 {
        let mut inner = lock(&self.inner);
        inner.next_handle += 1;
        let h = inner.next_handle;
        inner.sockets.insert(h, Sock::default());
        h
    }

    /// Makes the next read of `handle`'s stream fail with `errno` (as if
    /// the peer had reset the connection).
    pub fn inject_error(&self, handle: u64, errno: i32) {
        let inner = lock(&self.inner);
        if let Some(conn) = inner.sockets.get(&handle).and_then(|s| s.conn.clone()) {
            conn.incoming.set_error(errno);
        }
    }

    /// Whether `handle` is still open.
    pub fn is_open(&self, handle: u64) -> bool {
        lock(&self.inner).sockets.contains_key(&handle)
    }

    /// The up frames logged for `handle`.
    pub fn frames_of(&self, handle: u64) -> Vec<String> {
        lock(&self.frames)
            .iter()
            .filter(|(h, _)| *h == handle)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

fn ebadf() -> Status {
    errno_status(errno::EBADF, "unknown handle")
}

/// The service implementation.
#[derive(Clone)]
pub struct FakeService {
    pub state: Arc<State>,
}

#[tonic::async_trait]
impl SocketService for FakeService {
    async fn socket(
        &self,
        _: Request<v1::SocketRequest>,
    ) -> Result<Response<v1::SocketReply>, Status> {
        Ok(Response::new(v1::SocketReply {
            handle: self.state.alloc(),
        }))
    }

    async fn bind(&self, r: Request<v1::BindRequest>) -> Result<Response<v1::Empty>, Status> {
        let r = r.into_inner();
        let mut inner = lock(&self.state.inner);
        let mut addr = r
            .addr
            .and_then(|a| a.to_std())
            .ok_or_else(|| errno_status(errno::EINVAL, ""))?;
        if addr.port() == 0 {
            inner.next_port += 1;
            addr.set_port(40_000 + inner.next_port);
        }
        if inner.listeners.contains_key(&addr.port()) {
            return Err(errno_status(errno::EADDRINUSE, "bind"));
        }
        let sock = inner.sockets.get_mut(&r.handle).ok_or_else(ebadf)?;
        sock.local = Some(SocketAddrV4::new(FAKE_IP, addr.port()));
        Ok(Response::new(v1::Empty {}))
    }

    async fn listen(&self, r: Request<v1::ListenRequest>) -> Result<Response<v1::Empty>, Status> {
        let r = r.into_inner();
        let mut inner = lock(&self.state.inner);
        let sock = inner.sockets.get_mut(&r.handle).ok_or_else(ebadf)?;
        let port = sock
            .local
            .map(|a| a.port())
            .ok_or_else(|| errno_status(errno::EINVAL, ""))?;
        let (tx, rx) = mpsc::unbounded_channel();
        sock.accept_queue = Some(Arc::new(tokio::sync::Mutex::new(rx)));
        inner.listeners.insert(port, tx);
        Ok(Response::new(v1::Empty {}))
    }

    async fn accept(
        &self,
        r: Request<v1::AcceptRequest>,
    ) -> Result<Response<v1::AcceptReply>, Status> {
        let r = r.into_inner();
        let queue = {
            let inner = lock(&self.state.inner);
            let sock = inner.sockets.get(&r.handle).ok_or_else(ebadf)?;
            sock.accept_queue
                .clone()
                .ok_or_else(|| errno_status(errno::EINVAL, "not listening"))?
        };
        let mut queue = queue.lock().await;
        let next = if r.nonblocking {
            queue
                .try_recv()
                .map_err(|_| errno_status(errno::EAGAIN, ""))?
        } else {
            queue
                .recv()
                .await
                .ok_or_else(|| errno_status(errno::EBADF, ""))?
        };
        Ok(Response::new(v1::AcceptReply {
            handle: next.0,
            peer: Some(next.1.into()),
        }))
    }

    async fn connect(&self, r: Request<v1::ConnectRequest>) -> Result<Response<v1::Empty>, Status> {
        let r = r.into_inner();
        let target = r
            .addr
            .and_then(|a| a.to_std())
            .ok_or_else(|| errno_status(errno::EINVAL, ""))?;
        let mut inner = lock(&self.state.inner);
        if !inner.sockets.contains_key(&r.handle) {
            return Err(ebadf());
        }
        let Some(queue) = inner.listeners.get(&target.port()).cloned() else {
            return Err(errno_status(errno::ECONNREFUSED, "connect"));
        };
        inner.next_port += 1;
        let local = SocketAddrV4::new(FAKE_IP, 50_000 + inner.next_port);
        let a_to_b = Arc::new(Pipe::default());
        let b_to_a = Arc::new(Pipe::default());
        inner.next_handle += 1;
        let accepted = inner.next_handle;
        inner.sockets.insert(
            accepted,
            Sock {
                local: Some(SocketAddrV4::new(FAKE_IP, target.port())),
                peer: Some(local),
                conn: Some(Arc::new(Conn {
                    incoming: Arc::clone(&a_to_b),
                    outgoing: Arc::clone(&b_to_a),
                })),
                ..Sock::default()
            },
        );
        let sock = inner.sockets.get_mut(&r.handle).ok_or_else(ebadf)?;
        sock.local = Some(local);
        sock.peer = Some(target);
        sock.conn = Some(Arc::new(Conn {
            incoming: b_to_a,
            outgoing: a_to_b,
        }));
        let _ = queue.send((accepted, local));
        Ok(Response::new(v1::Empty {}))
    }

    async fn read(&self, r: Request<v1::ReadRequest>) -> Result<Response<v1::ReadReply>, Status> {
        let r = r.into_inner();
        let conn = self.conn_of(r.handle)?;
        let mut st = lock(&conn.incoming.state);
        if st.buf.is_empty() {
            if st.fin {
                return Ok(Response::new(v1::ReadReply {
                    data: vec![],
                    eof: true,
                }));
            }
            return Err(errno_status(errno::EAGAIN, ""));
        }
        let n = st.buf.len().min(r.max_len as usize);
        let data: Vec<u8> = if r.peek {
            st.buf.iter().take(n).copied().collect()
        } else {
            st.buf.drain(..n).collect()
        };
        Ok(Response::new(v1::ReadReply { data, eof: false }))
    }

    async fn write(
        &self,
        r: Request<v1::WriteRequest>,
    ) -> Result<Response<v1::WriteReply>, Status> {
        let r = r.into_inner();
        let conn = self.conn_of(r.handle)?;
        conn.outgoing.push(&r.data).await;
        Ok(Response::new(v1::WriteReply {
            written: r.data.len() as u32,
        }))
    }

    async fn shutdown(
        &self,
        r: Request<v1::ShutdownRequest>,
    ) -> Result<Response<v1::Empty>, Status> {
        let r = r.into_inner();
        let conn = self.conn_of(r.handle)?;
        if r.how == v1::ShutdownHow::Write as i32 || r.how == v1::ShutdownHow::Both as i32 {
            conn.outgoing.set_fin();
        }
        lock(&self.state.frames).push((r.handle, format!("shutdown_rpc:{}", r.how)));
        Ok(Response::new(v1::Empty {}))
    }

    async fn close(&self, r: Request<v1::HandleRequest>) -> Result<Response<v1::Empty>, Status> {
        let handle = r.into_inner().handle;
        let up_task = {
            let mut inner = lock(&self.state.inner);
            let sock = inner.sockets.get_mut(&handle).ok_or_else(ebadf)?;
            sock.up_task.take()
        };
        // Let frames already sent on the Stream RPC land first.
        if let Some(task) = up_task {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        let mut inner = lock(&self.state.inner);
        let sock = inner.sockets.remove(&handle).ok_or_else(ebadf)?;
        if let Some(conn) = sock.conn {
            conn.outgoing.set_fin();
            conn.incoming.set_closed();
        }
        if sock.accept_queue.is_some()
            && let Some(port) = sock.local.map(|a| a.port())
        {
            inner.listeners.remove(&port);
        }
        lock(&self.state.closed).push(handle);
        Ok(Response::new(v1::Empty {}))
    }

    async fn get_sock_name(
        &self,
        r: Request<v1::HandleRequest>,
    ) -> Result<Response<v1::SockAddrReply>, Status> {
        let inner = lock(&self.state.inner);
        let sock = inner
            .sockets
            .get(&r.into_inner().handle)
            .ok_or_else(ebadf)?;
        let addr = sock
            .local
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        Ok(Response::new(v1::SockAddrReply {
            addr: Some(addr.into()),
        }))
    }

    async fn get_peer_name(
        &self,
        r: Request<v1::HandleRequest>,
    ) -> Result<Response<v1::SockAddrReply>, Status> {
        let inner = lock(&self.state.inner);
        let sock = inner
            .sockets
            .get(&r.into_inner().handle)
            .ok_or_else(ebadf)?;
        let addr = sock.peer.ok_or_else(|| errno_status(errno::ENOTCONN, ""))?;
        Ok(Response::new(v1::SockAddrReply {
            addr: Some(addr.into()),
        }))
    }

    async fn set_option(
        &self,
        r: Request<v1::SetOptionRequest>,
    ) -> Result<Response<v1::Empty>, Status> {
        let r = r.into_inner();
        if r.option == v1::SockOpt::SoError as i32 || r.option == v1::SockOpt::TcpMaxseg as i32 {
            return Err(errno_status(errno::ENOPROTOOPT, "get only"));
        }
        let mut inner = lock(&self.state.inner);
        let sock = inner.sockets.get_mut(&r.handle).ok_or_else(ebadf)?;
        let value = r.value.ok_or_else(|| errno_status(errno::EINVAL, ""))?;
        sock.options.insert(r.option, value);
        Ok(Response::new(v1::Empty {}))
    }

    async fn get_option(
        &self,
        r: Request<v1::GetOptionRequest>,
    ) -> Result<Response<v1::GetOptionReply>, Status> {
        let r = r.into_inner();
        let inner = lock(&self.state.inner);
        let sock = inner.sockets.get(&r.handle).ok_or_else(ebadf)?;
        use v1::option_value::Value;
        let value = match sock.options.get(&r.option) {
            Some(v) => v.clone(),
            None if r.option == v1::SockOpt::SoError as i32 => v1::OptionValue {
                value: Some(Value::Int(0)),
            },
            None if r.option == v1::SockOpt::SoLinger as i32 => v1::OptionValue {
                value: Some(Value::Linger(v1::Linger {
                    enabled: false,
                    seconds: 0,
                })),
            },
            None => v1::OptionValue {
                value: Some(Value::Flag(false)),
            },
        };
        Ok(Response::new(v1::GetOptionReply { value: Some(value) }))
    }

    async fn poll(&self, r: Request<v1::PollRequest>) -> Result<Response<v1::PollReply>, Status> {
        let r = r.into_inner();
        let inner = lock(&self.state.inner);
        let entries = r
            .entries
            .iter()
            .map(|e| {
                let ready = match inner.sockets.get(&e.handle) {
                    None => 32,
                    Some(sock) => match &sock.conn {
                        Some(conn) => {
                            let mut bits = 4 & e.events;
                            if conn.incoming.readable() {
                                bits |= 1 & e.events;
                            }
                            bits
                        }
                        None => 0,
                    },
                };
                v1::PollEntry {
                    handle: e.handle,
                    events: ready,
                }
            })
            .collect();
        Ok(Response::new(v1::PollReply { entries }))
    }

    type StreamStream = ReceiverStream<Result<v1::StreamDown, Status>>;

    async fn stream(
        &self,
        r: Request<Streaming<v1::StreamUp>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut up = r.into_inner();
        let first = up.message().await?.and_then(|m| m.frame);
        let Some(stream_up::Frame::Open(handle)) = first else {
            return Err(errno_status(errno::EINVAL, "first frame must be open"));
        };
        let conn = self.conn_of(handle)?;
        let (down_tx, down_rx) = mpsc::channel(1);
        // Down side: pipe → frames, until eof or error.
        let down_conn = Arc::clone(&conn);
        tokio::spawn(async move {
            loop {
                let frame = down_conn.incoming.pull().await;
                let Some(frame) = frame else { break };
                let last = !matches!(frame, stream_down::Frame::Data(_));
                if down_tx
                    .send(Ok(v1::StreamDown { frame: Some(frame) }))
                    .await
                    .is_err()
                    || last
                {
                    break;
                }
            }
        });
        // Up side: frames → pipe, in order, one at a time.
        let state = Arc::clone(&self.state);
        let up_task = tokio::spawn(async move {
            loop {
                let msg = match up.message().await {
                    Ok(Some(msg)) => msg,
                    Ok(None) => {
                        lock(&state.frames).push((handle, "END".into()));
                        break;
                    }
                    Err(e) => {
                        lock(&state.frames).push((handle, format!("ERR {e:?}")));
                        break;
                    }
                };
                match msg.frame {
                    Some(stream_up::Frame::Data(data)) => {
                        lock(&state.frames).push((handle, format!("data:{}", data.len())));
                        conn.outgoing.push(&data).await;
                    }
                    Some(stream_up::Frame::ShutdownWrite(_)) => {
                        lock(&state.frames).push((handle, "shutdown_write".into()));
                        conn.outgoing.set_fin();
                    }
                    _ => lock(&state.frames).push((handle, "other".into())),
                }
            }
        });
        if let Some(sock) = lock(&self.state.inner).sockets.get_mut(&handle) {
            sock.up_task = Some(up_task);
        }
        Ok(Response::new(ReceiverStream::new(down_rx)))
    }
}

impl FakeService {
    fn conn_of(&self, handle: u64) -> Result<Arc<Conn>, Status> {
        let inner = lock(&self.state.inner);
        let sock = inner.sockets.get(&handle).ok_or_else(ebadf)?;
        sock.conn
            .clone()
            .ok_or_else(|| errno_status(errno::ENOTCONN, ""))
    }
}

/// A running fake daemon.
pub struct Fake {
    pub state: Arc<State>,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        // Tests drop the fake from async code, where a blocking shutdown panics.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Fake {
    /// Starts the fake on its own runtime (so it outlives any test runtime).
    pub fn start() -> Fake {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tcpd.sock");
        let state = Arc::new(State::default());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("fake runtime");
        let service = FakeService {
            state: Arc::clone(&state),
        };
        let listener = {
            let _guard = runtime.enter();
            tokio::net::UnixListener::bind(&path).expect("bind fake socket")
        };
        runtime.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(SocketServer::new(service))
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await;
        });
        Fake {
            state,
            path,
            _dir: dir,
            runtime: Some(runtime),
        }
    }
}
