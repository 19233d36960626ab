//! The driver: the one task that owns the stack.
//!
//! Everything that touches [`tcpd_stack::Stack`] runs here, on one task, so
//! no lock guards it. The driver `select!`s over four sources:
//! - the link ([`crate::link::Link`]: the TUN device and the impairer):
//!   packets are read in batches and fed to the stack;
//! - the bounded op channel: gRPC handlers send typed [`Op`](crate::ops::Op)s
//!   with a oneshot reply; [`Sockets`] runs them or parks them per socket;
//! - session starts/ends and the final shutdown (unbounded: they come from
//!   `Drop` and must not be lost);
//! - the fd links' epoll descriptor ([`crate::fd_link`]): sockets used as
//!   file descriptors whose daemon end became readable or writable;
//! - the timer: the earlier of the stack's [`Stack::poll_timeout`] and the
//!   impairer's next release.
//!
//! After each wake-up the driver has the link release held packets, runs due
//! timers, drains the stack's events into [`Sockets::publish_events`] (which
//! completes parked ops, possibly giving the stack more to send), and has
//! the link drain [`Stack::poll_transmit`] into TUN writes, again until the
//! events complete nothing more. A turn
//! woken by anything but the timer is noted as work for the busy-poller
//! ([`crate::busy_poll`]), which then keeps the runtime from sleeping for
//! a while.

use crate::busy_poll::BusyPoll;
use crate::impair::Impairer;
use crate::limits::LimitLog;
use crate::link::steer::Steering;
use crate::link::{Link, RX_BATCH};
use crate::ops::{Control, DriverHandle, OP_CHANNEL_CAPACITY, Queued, SessionSlots, StateChange};
use crate::session::SessionEvent;
use crate::sockets::{Clock, Quotas, Sockets};
use std::time::Duration;
use tcpd_stack::Stack;
use tokio::sync::{broadcast, mpsc, oneshot};

/// Ops run per wake-up before the driver flushes.
const OP_BATCH: usize = 64;
/// Capacity of the admin Watch broadcast; slower watchers lose the oldest events.
const STATE_CHANGE_CAPACITY: usize = 4096;

/// What every shard's driver reports into together: the admin Watch feed
/// and the counters of limits enforced outside the drivers.
#[derive(Debug)]
pub struct SharedFeeds {
    state_changes: broadcast::Sender<StateChange>,
    limit_counters: std::sync::Arc<crate::limits::ApiLimitCounters>,
}

impl SharedFeeds {
    pub fn new() -> SharedFeeds {
        SharedFeeds {
            state_changes: broadcast::channel::<StateChange>(STATE_CHANGE_CAPACITY).0,
            limit_counters: std::sync::Arc::default(),
        }
    }
}

/// The channels the driver listens on.
struct Inbox {
    ops: mpsc::Receiver<Queued>,
    /// The sessions' op-channel slots (forgotten when a session ends).
    slots: std::sync::Arc<SessionSlots>,
    sessions: mpsc::UnboundedReceiver<SessionEvent>,
    control: mpsc::UnboundedReceiver<Control>,
}

/// The driver task; see the module docs.
pub struct Driver {
    core: Sockets,
    device: tun::Device,
    vnet_hdr: bool,
    impairer: Option<Impairer>,
    inbox: Inbox,
    busy_poll: Option<std::sync::Arc<BusyPoll>>,
    /// With several shards: packets to pass on, and those passed here.
    steering: Option<(Steering, mpsc::Receiver<bytes::Bytes>)>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("vnet_hdr", &self.vnet_hdr)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver for `stack` over the TUN `device` (`vnet_hdr`: opened with a
    /// virtio-net header, see [`crate::link`]), and the handle to command it.
    /// `shared`: what all shards of the daemon send into together.
    pub fn new(
        stack: Stack,
        clock: Clock,
        device: tun::Device,
        vnet_hdr: bool,
        impairer: Option<Impairer>,
        quotas: Quotas,
        shared: &SharedFeeds,
    ) -> (Driver, DriverHandle) {
        let (ops_tx, ops) = mpsc::channel(OP_CHANNEL_CAPACITY);
        let (sessions_tx, sessions) = mpsc::unbounded_channel();
        let (control_tx, control) = mpsc::unbounded_channel();
        let state_changes = shared.state_changes.clone();
        let slots = std::sync::Arc::new(SessionSlots::new(quotas.op_slots));
        let driver = Driver {
            core: Sockets::new(stack, clock, quotas, state_changes.clone()),
            device,
            vnet_hdr,
            impairer,
            inbox: Inbox {
                ops,
                slots: slots.clone(),
                sessions,
                control,
            },
            busy_poll: None,
            steering: None,
        };
        let handle = DriverHandle {
            ops: ops_tx,
            slots,
            limit_counters: shared.limit_counters.clone(),
            control: control_tx,
            sessions: sessions_tx,
            state_changes,
        };
        (driver, handle)
    }

    /// Notes every turn that did work to `busy_poll`, whose
    /// [`BusyPoll::run`] must run on the same runtime as [`Driver::run`].
    pub fn set_busy_poll(&mut self, busy_poll: Option<std::sync::Arc<BusyPoll>>) {
        self.busy_poll = busy_poll;
    }

    /// Makes this one shard of several (see [`crate::link::steer`]).
    pub fn set_steering(&mut self, steering: Steering, inbox: mpsc::Receiver<bytes::Bytes>) {
        self.steering = Some((steering, inbox));
    }

    /// Runs until [`Control::Terminate`] or until every [`DriverHandle`] is
    /// gone. Must run inside the tokio runtime that will drive the TUN.
    pub async fn run(self) -> std::io::Result<()> {
        let Driver {
            core,
            device,
            vnet_hdr,
            impairer,
            inbox,
            busy_poll,
            steering,
        } = self;
        let fd_readiness = tcpd_sys::Readable::register(core.fd_readiness()?)?;
        let mut link = Link::new(device, vnet_hdr, impairer)?;
        let (steering, forwarded) = steering.unzip();
        link.set_steering(steering);
        let mut running = Running {
            core,
            fd_readiness,
            link,
            inbox,
            forwarded,
            limit_log: LimitLog::default(),
            busy_poll,
        };
        running.run().await;
        Ok(())
    }
}

/// The driver once its TUN is registered with the runtime.
struct Running {
    core: Sockets,
    /// The fd links' epoll instance ([`crate::fd_link`]), as tokio sees it.
    fd_readiness: tcpd_sys::Readable,
    link: Link,
    inbox: Inbox,
    /// Packets other shards passed to this one ([`crate::link::steer`]).
    forwarded: Option<mpsc::Receiver<bytes::Bytes>>,
    limit_log: LimitLog,
    busy_poll: Option<std::sync::Arc<BusyPoll>>,
}

impl Running {
    async fn run(&mut self) {
        loop {
            let deadline = match (self.core.stack().poll_timeout(), self.link.next_release()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep_until = deadline.map(|d| self.core.clock().deadline(d));
            tokio::select! {
                received = self.link.recv() => match received {
                    Ok(n) => {
                        let now = self.core.now();
                        let (stack, taps) = self.core.stack_and_taps();
                        self.link.ingest_batch(n, now, stack, taps);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TUN read failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                Some(frame) = async {
                    match self.forwarded.as_mut() {
                        Some(inbox) => inbox.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let now = self.core.now();
                    let (stack, taps) = self.core.stack_and_taps();
                    self.link.ingest_forwarded(&frame, now, stack, taps);
                }
                request = self.inbox.ops.recv() => {
                    let Some(request) = request else { return };
                    if let Some(done) = self.queued_terminate() {
                        self.terminate(done);
                        return;
                    }
                    self.execute(request);
                    for _ in 1..OP_BATCH {
                        let Ok(request) = self.inbox.ops.try_recv() else { break };
                        self.execute(request);
                    }
                }
                ready = self.fd_readiness.readable() => {
                    // Clear first, then drain: an end that becomes ready
                    // after the drain wakes the epoll descriptor again.
                    if let Ok(mut guard) = ready {
                        guard.clear_ready();
                    }
                    self.core.pump_fds();
                }
                event = self.inbox.sessions.recv() => match event {
                    Some(event) => {
                        if let Some(done) = self.queued_terminate() {
                            self.terminate(done);
                            return;
                        }
                        self.session_event(event);
                    }
                    None => return,
                },
                control = self.inbox.control.recv() => {
                    let Some(control) = control else { return };
                    let terminate = match control {
                        Control::Terminate(done) => Some(done),
                        other => self.queued_terminate().or_else(|| {
                            self.run_control(other);
                            None
                        }),
                    };
                    if let Some(done) = terminate {
                        self.terminate(done);
                        return;
                    }
                }
                () = async {
                    match sleep_until {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    // Timers alone (retransmissions, keepalives, TIME-WAIT)
                    // are not traffic to wait for: no spin after them.
                    self.flush();
                    continue;
                }
            }
            self.flush();
            if let Some(busy_poll) = &self.busy_poll {
                busy_poll.note_work();
            }
        }
    }

    /// Runs one op, after every session event sent before it: a session
    /// announces its start before its first request, but on another
    /// channel, so the op must not overtake it.
    fn execute(&mut self, queued: Queued) {
        while let Ok(event) = self.inbox.sessions.try_recv() {
            self.session_event(event);
        }
        let id = queued.request.session.id;
        // The session's slot is free again once its op runs.
        self.core.execute(queued.request);
        if !self.core.has_session(id) {
            // A call that outlived its session re-created its slots.
            self.inbox.slots.forget(id);
        }
    }

    fn session_event(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::Started(id) => self.core.session_started(id),
            SessionEvent::Ended(id) => {
                self.core.session_ended(id);
                self.inbox.slots.forget(id);
            }
        }
    }

    /// A Terminate already queued when a session's end, an op or another
    /// control message is about to run. At shutdown the sessions end and
    /// their Streams close while the daemon asks its drivers to reset
    /// everything; the driver's select takes ready branches in random
    /// order, so a session's end could close its connections gracefully
    /// first, and the peer read a FIN before the RST (e2e
    /// `second_daemon_on_the_same_socket_is_refused_and_sigterm_cleans_up`,
    /// under load). Control messages queued ahead of a Terminate are moot
    /// (it resets everything); without one they run now, in order.
    fn queued_terminate(&mut self) -> Option<oneshot::Sender<()>> {
        let mut ahead = Vec::new();
        while let Ok(control) = self.inbox.control.try_recv() {
            match control {
                Control::Terminate(done) => return Some(done),
                other => ahead.push(other),
            }
        }
        for control in ahead {
            self.run_control(control);
        }
        None
    }

    /// Runs a control message other than Terminate (which ends the loop:
    /// see [`Running::run`]).
    fn run_control(&mut self, control: Control) {
        match control {
            Control::ConnectAbandoned(id) => self.core.connect_abandoned(id),
            Control::Close(request) => self.core.execute(request),
            Control::Terminate(done) => self.terminate(done),
        }
    }

    /// Resets everything, sends the RSTs unimpaired, and reports done.
    fn terminate(&mut self, done: oneshot::Sender<()>) {
        self.core.abort_everything();
        // Held packets would never leave: send the RSTs unimpaired.
        self.link.disable_impairer();
        self.flush();
        let _ = done.send(());
    }

    /// Held packets, timers, transmissions and events, in that order.
    fn flush(&mut self) {
        let now = self.core.now();
        let (stack, taps) = self.core.stack_and_taps();
        self.link.release_due(now, stack, taps);
        if stack.poll_timeout().is_some_and(|at| at <= now) {
            stack.handle_timeout(now);
        }
        // Completing parked ops (a write refilling the send buffer, a read
        // opening the window) gives the stack more to send: go round until
        // the events complete nothing more. They are completed before the
        // first transmission: the data that arrived in this turn is then
        // read before it is acknowledged, and one ACK carries both the
        // acknowledgment and the window the read opened (rather than an
        // ACK with the shrunken window, then a window update).
        self.core.publish_events();
        let mut read_back = true;
        loop {
            let (stack, taps) = self.core.stack_and_taps();
            let sent = self.link.transmit(now, stack, taps);
            // A peer on this host answers inside our TUN write (the kernel
            // runs its receive path in the writer's system call): a SYN's
            // SYN-ACK or RST, a request's reply, are already queued on the
            // TUN. Take them now, once per flush, so a connect to a local
            // peer completes in the turn that started it (its caller is
            // answered without another wake-up of this task, and a refused
            // connect is failed before its EINPROGRESS reaches the client).
            let answered = sent > 0
                && std::mem::take(&mut read_back)
                && self.link.ingest_ready(RX_BATCH, now, stack, taps) > 0;
            taps.traces.pump(stack);
            if !self.core.publish_events() && !answered {
                break;
            }
        }
        let (stack, taps) = self.core.stack_and_taps();
        taps.traces.sweep(stack);
        taps.captures.flush(now);
        self.limit_log.note(self.core.stack().stats(), now);
    }
}
