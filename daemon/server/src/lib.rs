//! `tcpd_daemon`: the user-space TCP/IP daemon `tcpd`, as a library.
//!
//! The `tcpd` binary (src/main.rs) only calls [`main`]. The daemon is a
//! library so that other crates can link its handler layer: the cargo-fuzz
//! targets in `daemon/server/fuzz` drive the real services through the
//! in-process harness (`fuzzing`, built with the `fuzzing` feature). Nothing
//! else is public API.
//!
//! Startup order (each step needs the previous one):
//! 1. configuration (flags over `--config` TOML over defaults), logging;
//! 2. the TUN device, created and configured here (host-side address,
//!    netmask, MTU, up) so the kernel routes the prefix into it;
//! 3. the API's Unix socket (mode 0660, optional group; stale files replaced,
//!    a live daemon on the same path is a fatal error);
//! 4. privilege drop (see [`privileges`]) — before any thread exists;
//! 5. the driver (owns the stack) and the gRPC server, both on the main
//!    thread's current-thread runtime (`--driver-thread on`: the driver on
//!    a thread and runtime of its own);
//! 6. `READY=1` to systemd when `NOTIFY_SOCKET` is set.
//!
//! SIGTERM/SIGINT: stop serving, reset every connection (the RSTs are written
//! to the TUN before exit), remove the socket file, exit 0.

// The few system calls no safe crate API covers (ioctls, SO_COOKIE,
// SCM_RIGHTS adoption...) live in tcpd-sys (daemon/sys).
#![forbid(unsafe_code)]

mod admin_service;
mod admission;
mod api_server;
mod authority;
mod busy_poll;
mod capture_hub;
mod config;
mod convert;
mod driver;
mod errno;
mod fd_link;
mod fd_service;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod idle;
mod impair;
#[cfg(test)]
mod inprocess_tests;
mod intake;
mod limits;
mod link;
mod logging;
mod ops;
mod privileges;
mod session;
mod shards;
mod socket_file;
mod socket_service;
mod sockets;
mod stream_up;
mod taps;
mod trace_hub;

use admin_service::{AdminService, DaemonInfo};
use clap::Parser;
use config::{Cli, Settings};
use driver::Driver;
use session::SessionAcceptor;
use socket_file::SocketFile;
use socket_service::{SocketRoutes, SocketService, StreamRoute};
use sockets::Clock;
use std::process::ExitCode;
use tcpd_proto::v2::admin_service_server::AdminServiceServer;
use tcpd_stack::{Stack, StackConfig};

/// HTTP/2 stream window: how much Stream data may be in flight per RPC
/// before flow control pushes back on the writer.
const STREAM_WINDOW: u32 = 1 << 20;
/// Largest HTTP/2 frame clients may send (RFC 9113 §6.5.2
/// SETTINGS_MAX_FRAME_SIZE; 16 KiB by default): a whole 64 KiB Stream `data`
/// message travels as one DATA frame instead of four. Measured in
/// tcpd-bench (bulk, client sends, interleaved A/B): the daemon's CPU per GB
/// falls from 0.96-1.01 to 0.80-0.89 s. No frame can exceed the stream
/// window anyway.
const MAX_FRAME_SIZE: u32 = STREAM_WINDOW;
/// HTTP/2 connection window (all RPCs of one session together). It bounds
/// the memory one session can make the daemon buffer, and must leave room for
/// many Streams at once: with 1 MiB per stream, 64 sockets whose peers are
/// slow (stream windows full) still leave the session's other sockets moving.
const CONNECTION_WINDOW: u32 = 64 << 20;

/// The stack's configuration, with secrets from the OS random source.
fn stack_config(settings: &Settings) -> anyhow::Result<StackConfig> {
    use rand::TryRngCore;
    let mut config = StackConfig::new(settings.address, settings.prefix_len);
    config.addresses6 = settings.ipv6.iter().map(|v6| v6.address).collect();
    config.mtu = settings.mtu;
    config.msl = settings.msl;
    let mut os = rand::rngs::OsRng;
    // RFC 6528 §3: the ISN function's secret key must be unguessable.
    os.try_fill_bytes(&mut config.isn_secret)?;
    config.rng_seed = os.try_next_u64()?;
    if let Some(n) = settings.syn_retries {
        config.socket_defaults.syn_retries = n;
    }
    config.local_port_range = settings.local_port_range;
    if settings.local_port_range.same_parity_ends() {
        // Linux's sysctl warns the same way: the scans take an even number
        // of ports, so the range's last port is never picked.
        tracing::warn!(
            range = %settings.local_port_range,
            "--ip-local-port-range: both ends have the same parity, its last port is never used"
        );
    }
    settings.limits.apply_to_stack(&mut config);
    Ok(config)
}

/// The daemon's entry point: parse the command line, run until SIGTERM.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tcpd: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(&settings);
    match run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tcpd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut settings: Settings) -> anyhow::Result<()> {
    // SIGTERM/SIGINT wait (blocked, pending) until serve() has installed
    // its handlers: the API socket accepts connections from the moment it
    // is bound, and a stop asked for in between must still remove the
    // socket files and reset connections, not kill the process with the
    // default action. Threads started from here on inherit the mask; the
    // main thread unblocks it in serve().
    termination_signals(nix::sys::signal::SigmaskHow::SIG_BLOCK);
    // Look the user up first: a typo must fail before anything is created.
    let user = settings
        .user
        .as_deref()
        .map(privileges::lookup_user)
        .transpose()?;
    // The socket first: a second daemon on the same path must fail with
    // "another tcpd is listening", not with whatever the TUN says.
    let socket = SocketFile::bind(&settings.socket, settings.socket_group.as_deref())?;
    // The fd channel's socket (fd_service), same mode and group.
    let fd_path = std::path::PathBuf::from(tcpd_proto::fd_socket_path(
        &settings.socket.display().to_string(),
    ));
    let fd_socket = match SocketFile::bind(&fd_path, settings.socket_group.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            socket_file::remove(&socket.path);
            return Err(e.into());
        }
    };
    let tun = match link::tun::open(&settings) {
        Ok(tun) => tun,
        // The default IPv6 prefix on a kernel or namespace without IPv6:
        // run IPv4 only rather than not at all (an asked-for one fails).
        Err(e)
            if settings.ipv6.is_some_and(|v6| !v6.explicit) && e.is::<link::tun::Ipv6Refused>() =>
        {
            tracing::warn!(
                error = %e,
                "IPv6 is unavailable on this host; running IPv4 only (--address6 none silences this)"
            );
            settings.ipv6 = None;
            match link::tun::open(&settings) {
                Ok(tun) => tun,
                Err(e) => {
                    socket_file::remove(&socket.path);
                    socket_file::remove(&fd_socket.path);
                    return Err(e);
                }
            }
        }
        Err(e) => {
            socket_file::remove(&socket.path);
            socket_file::remove(&fd_socket.path);
            return Err(e);
        }
    };
    if let Some(user) = &user {
        let mut paths = vec![socket.path.as_path(), fd_socket.path.as_path()];
        if let Some(dir) = &socket.created_dir {
            paths.push(dir.as_path());
        }
        privileges::hand_over(user, &paths)?;
    }
    privileges::drop_privileges(user.as_ref())?;
    let admission = client_admission(&settings);

    let clock = Clock::start();
    let mut config = stack_config(&settings)?;
    config.offload = tun.offload;
    let impair_spec = settings
        .impair
        .clone()
        .filter(|spec| !spec.is_noop() || spec.seed.is_some());
    let impairment = impair_spec
        .as_ref()
        .map(|spec| impair::Impairer::new(spec.clone()).spec().to_string())
        .unwrap_or_default();
    tracing::info!(
        segmentation = tun.offload.segmentation,
        checksum = tun.offload.checksum,
        shards = settings.shards,
        "TUN offload"
    );
    // The daemon's list of shards (shards.rs): shard K has its own stack,
    // whose handles carry tag K and whose connects use its slice of the
    // port range, and its own TUN queue. One by default: tag 0, the whole
    // range, the one queue.
    let feeds = driver::SharedFeeds::new();
    let shard_count = settings.shards;
    let mut drivers = Vec::with_capacity(shard_count);
    let mut handles = Vec::with_capacity(shard_count);
    let slices: Vec<_> = (0..shard_count)
        .map(|index| shards::port_slice(config.local_port_range, index, shard_count))
        .collect();
    let mut steering = link::steer::Steering::for_shards(&slices).into_iter();
    for (index, device) in std::iter::once(tun.device).chain(tun.queues).enumerate() {
        let mut config = config.clone();
        config.handle_tag = shards::handle_tag(index);
        config.local_port_range = slices[index];
        config.rng_seed ^= index as u64;
        let (mut driver, handle) = Driver::new(
            Stack::new(config, clock.now()),
            clock,
            device,
            tun.vnet_hdr,
            impair_spec.clone().map(impair::Impairer::new),
            settings.quotas,
            &feeds,
        );
        // The spin runs on the driver's runtime (see busy_poll.rs).
        let busy_poll = busy_poll::BusyPoll::new(settings.busy_poll_us);
        driver.set_busy_poll(busy_poll.clone());
        if let Some((steering, inbox)) = steering.next()
            && shard_count > 1
        {
            driver.set_steering(steering, inbox);
        }
        drivers.push((driver, busy_poll));
        handles.push(handle);
    }
    let busy_polls = drivers
        .iter()
        .filter_map(|(_, poll)| poll.clone())
        .collect();
    let shards = shards::Shards::new(handles).with_busy_polls(busy_polls);

    // One thread by default: the driver is a task on the API server's
    // current-thread runtime, so an op and its reply never cross threads
    // (no wake-up, no context switch per call). `--driver-thread on` gives
    // it a thread of its own, which lets stack work and gRPC work use two
    // cores when the daemon is not confined to one; see
    // daemon/DESIGN-multicore.md "One thread or two" for the figures.
    // The shards after the first always run on threads of their own.
    let (driver_done_tx, driver_done) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut local_driver = None;
    for (index, (driver, busy_poll)) in drivers.into_iter().enumerate() {
        if index == 0 && !settings.driver_thread {
            local_driver = Some((driver, busy_poll));
            continue;
        }
        let done = driver_done_tx.clone();
        let name = match index {
            0 => "tcpd-driver".to_string(),
            k => format!("tcpd-shard-{k}"),
        };
        std::thread::Builder::new().name(name).spawn(move || {
            let outcome = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    if let Some(busy_poll) = busy_poll {
                        rt.spawn(busy_poll.run());
                    }
                    driver_outcome(rt.block_on(driver.run()))
                }
                Err(e) => format!("cannot start the driver runtime: {e}"),
            };
            let _ = done.send(outcome);
        })?;
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let info = DaemonInfo {
        tun_name: settings.tun.clone(),
        address: settings.address,
        prefix_len: settings.prefix_len,
        host_address: settings.host_address,
        ipv6: settings.ipv6,
        mtu: settings.mtu,
        socket_path: settings.socket.display().to_string(),
        impairment,
        started: std::time::Instant::now(),
    };
    let socket_path = socket.path.clone();
    let server = ServeParams {
        info,
        admission,
        keepalive: settings.limits.keepalive,
        keepalive_timeout: settings.limits.keepalive_timeout,
        idle_timeout: settings.limits.idle_timeout,
        intake_bytes: settings.intake_bytes,
        fd_listener: fd_socket.listener,
        fd_limits: fd_service::FdChannelLimits {
            max_unauthenticated: settings.limits.fd_max_unauthenticated as usize,
            hello_timeout: settings.limits.fd_hello_timeout,
        },
    };
    if let Some((driver, busy_poll)) = local_driver {
        if let Some(busy_poll) = busy_poll {
            rt.spawn(busy_poll.run());
        }
        let done = driver_done_tx.clone();
        rt.spawn(async move {
            let _ = done.send(driver_outcome(driver.run().await));
        });
    }
    let result = rt.block_on(serve(socket, shards, server, driver_done));
    socket_file::remove(&socket_path);
    socket_file::remove(&fd_socket.path);
    // Exit without waiting for connection tasks still parked in the runtime.
    drop(rt);
    result
}

/// Blocks or unblocks SIGTERM and SIGINT for the calling thread.
fn termination_signals(how: nix::sys::signal::SigmaskHow) {
    use nix::sys::signal::{SigSet, Signal, pthread_sigmask};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    if let Err(e) = pthread_sigmask(how, Some(&set), None) {
        tracing::warn!(error = %e, "cannot change the signal mask for SIGTERM/SIGINT");
    }
}

/// How the driver ended, for the "stack driver stopped" error ("" when
/// it ended as asked).
fn driver_outcome(result: std::io::Result<()>) -> String {
    match result {
        Ok(()) => String::new(),
        Err(e) => format!("driver failed: {e}"),
    }
}

/// The API's admission limits, with `max_clients` fitted below the fd limit
/// (raised to its hard limit first).
fn client_admission(settings: &Settings) -> std::sync::Arc<admission::Admission> {
    let fd_limit = admission::raise_fd_limit();
    let wanted = settings.limits.max_clients as usize;
    let max_clients = admission::fit_to_fd_limit(wanted, fd_limit);
    if max_clients < wanted {
        tracing::warn!(
            wanted,
            max_clients,
            fd_limit,
            "--max-clients lowered to fit the file-descriptor limit"
        );
    }
    let limits = admission::AdmissionLimits {
        max_clients,
        max_clients_per_uid: settings.limits.max_clients_per_uid as usize,
        handshake_timeout: settings.limits.handshake_timeout,
        admin_gid: settings.limits.admin_gid,
    };
    admission::Admission::new(limits, nix::unistd::geteuid().as_raw())
}

/// What the API server needs besides the socket and the driver.
struct ServeParams {
    info: DaemonInfo,
    admission: std::sync::Arc<admission::Admission>,
    keepalive: Option<std::time::Duration>,
    keepalive_timeout: std::time::Duration,
    idle_timeout: Option<std::time::Duration>,
    /// Each session's intake budget (`--session-max-intake-bytes`).
    intake_bytes: usize,
    /// The fd channel's socket (fd_service).
    fd_listener: std::os::unix::net::UnixListener,
    fd_limits: fd_service::FdChannelLimits,
}

async fn serve(
    socket: SocketFile,
    shards: shards::Shards,
    params: ServeParams,
    mut driver_done: tokio::sync::mpsc::UnboundedReceiver<String>,
) -> anyhow::Result<()> {
    let ServeParams {
        info,
        admission,
        keepalive,
        keepalive_timeout,
        idle_timeout,
        intake_bytes,
        fd_listener,
        fd_limits,
    } = params;
    let fd_listener = tokio::net::UnixListener::from_std(fd_listener)?;
    // The fd channel is served by the first shard (with several shards
    // it refuses to open: see shards.rs).
    tokio::spawn(fd_service::serve(
        fd_listener,
        ops::DriverHandle::clone(shards.first()),
        fd_limits,
    ));
    let idle_policy = session::IdlePolicy {
        timeout: idle_timeout,
        // hyper drops a connection silent for the interval plus the PING's
        // timeout; nothing tells us why, so the session infers it.
        keepalive_drop_after: keepalive.map(|interval| interval + keepalive_timeout),
        intake_bytes,
        owns_sockets: {
            let shards = shards.clone();
            std::sync::Arc::new(move |id| {
                let shards = shards.clone();
                Box::pin(async move { shards.session_owns_sockets(id).await })
            })
        },
    };
    use tokio::signal::unix::{SignalKind, signal};
    let listener = tokio::net::UnixListener::from_std(socket.listener)?;
    let acceptor = SessionAcceptor::new(
        listener,
        shards.session_events(),
        admission.clone(),
        idle_policy,
    );
    let closing = acceptor.closing();
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    // A stop that arrived while starting is delivered now, to the handlers.
    termination_signals(nix::sys::signal::SigmaskHow::SIG_UNBLOCK);
    tracing::info!(
        tun = %info.tun_name,
        address = %format!("{}/{}", info.address, info.prefix_len),
        host = %info.host_address,
        address6 = %info.ipv6.map_or("none".to_string(), |v6| v6.address.to_string()),
        host6 = %info.ipv6.map_or("none".to_string(), |v6| v6.host.to_string()),
        mtu = info.mtu,
        socket = %info.socket_path,
        impairment = %info.impairment,
        "tcpd ready"
    );
    // `systemctl status tcpd` shows this line ("Status:").
    let ipv6 = info.ipv6.map_or(String::new(), |v6| {
        format!(" {}, host {}", v6.address, v6.host)
    });
    let status = format!(
        "{} {}/{}, host {},{ipv6} API {}",
        info.tun_name, info.address, info.prefix_len, info.host_address, info.socket_path
    );
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tcpd_proto::FILE_DESCRIPTOR_SET)
    };
    // tonic's routes, served by hyper directly (see `api_server` for why),
    // and the Stream RPC below them (`socket_service::StreamRoute`).
    let sockets = SocketService::new(shards.clone());
    let stream_route = StreamRoute::from_env(&sockets);
    let routes = tonic::service::Routes::new(SocketRoutes::new(sockets))
        .add_service(AdminServiceServer::new(AdminService::new(
            shards.clone(),
            info,
            admission,
        )))
        // Server reflection (grpc.reflection.v1 and v1alpha): grpcurl and
        // other generic clients need no .proto file.
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .prepare();
    let server = api_server::serve(
        acceptor.into_stream(),
        tower::Layer::layer(&idle::SessionLayer, routes),
        stream_route,
        api_server::Http2Settings {
            initial_stream_window: STREAM_WINDOW,
            initial_connection_window: CONNECTION_WINDOW,
            max_frame_size: MAX_FRAME_SIZE,
            // RFC 9113 §6.7 PING: finds clients that hang without closing.
            keepalive_interval: keepalive,
            keepalive_timeout,
        },
    );
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ])
    {
        tracing::warn!(error = %e, "sd_notify READY=1 failed");
    }
    tokio::select! {
        () = server => {
            anyhow::bail!("the RPC server stopped unexpectedly");
        }
        outcome = driver_done.recv() => {
            let reason = outcome.unwrap_or_default();
            anyhow::bail!("the stack driver stopped: {reason}");
        }
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
    }
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("stopping: resetting every connection"),
        ]);
    }
    // The server future is dropped: no new sessions or RPCs. The sessions'
    // connections stop carrying anything (their tasks may still run while
    // the driver, a task of this runtime, answers their parked calls), then
    // everything is reset.
    closing.store(true, std::sync::atomic::Ordering::Relaxed);
    shards.terminate().await;
    tracing::info!("all connections reset; exiting");
    Ok(())
}
