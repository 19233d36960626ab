//! Running a parsed command against the daemon's Admin service.
//!
//! Owns the session with the daemon (one channel per run), the RPC timeouts,
//! and the choice between human and `--json` output. Rendering itself lives
//! in [`crate::render`] and [`crate::json`]; failures become [`CliError`]s
//! here, once, where the RPC or connect fails.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::CommandFactory;
use tcpd_proto::types::TcpState;
use tcpd_proto::v2::admin_service_client::AdminServiceClient as AdminClient;
use tcpd_proto::v2::{
    AbortRequest, ConnectionInfo, ListConnectionsRequest, SocketAddress, StatsRequest,
    StatusRequest, WatchRequest,
};
use tonic::transport::Channel;

use crate::cli::{Cli, ColorChoice, Command, KillArgs, LsArgs, WatchArgs};
use crate::error::CliError;
use crate::filter::ConnFilter;
use crate::json::{
    ConnectionJson, KillJson, KillTargetJson, StatsJson, StatusJson, WatchEventJson,
};
use crate::owner::SystemOwners;
use crate::render::{
    DEFAULT_WIDTH, Options, WatchRenderer, addr_text, ip_of, render_stats, render_status,
    render_table, wire_addr,
};
use crate::state::decode_state;

/// How long a unary Admin call may take before tcpctl gives up.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `cli`, writing its output to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    let color = use_color(cli.color, std::io::stdout().is_terminal());
    if let Command::Completions { shell } = cli.command {
        let mut command = Cli::command();
        clap_complete::generate(shell, &mut command, "tcpctl", out);
        return Ok(());
    }
    if let Command::Trace(args) = &cli.command
        && let Some(path) = &args.replay
    {
        return crate::trace::replay(path, args, cli.json, color, terminal_width(), out);
    }
    let mut session = Session::connect(&cli.socket).await?;
    match &cli.command {
        Command::Ls(args) => session.ls(args, cli.json, color, out).await,
        Command::Watch(args) => session.watch(args, cli.json, color, out).await,
        Command::Trace(args) => {
            crate::trace::live(
                &mut session.admin,
                &session.path,
                args,
                cli.json,
                color,
                terminal_width(),
                out,
            )
            .await
        }
        Command::Capture(args) => {
            crate::trace::capture(&mut session.admin, &session.path, args, out).await
        }
        Command::Stats(args) => session.stats(cli.json, args.prometheus, color, out).await,
        Command::Kill(args) => session.kill(args, cli.json, out).await,
        Command::Status => session.status(cli.json, out).await,
        Command::Completions { .. } => Ok(()),
    }
}

/// Whether to colour: `always`/`never` as told; `auto` only on a terminal,
/// and not when NO_COLOR is set (no-color.org) or TERM is `dumb`.
pub fn use_color(choice: ColorChoice, stdout_is_tty: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
            stdout_is_tty && !no_color && !dumb
        }
    }
}

/// Terminal width for wrapping `-i` lines: `$COLUMNS` when set and sane.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|w| (20..=1000).contains(w))
        .unwrap_or(DEFAULT_WIDTH)
}

fn write_out(out: &mut dyn Write, text: &str) -> Result<(), CliError> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

fn write_json<T: serde::Serialize>(out: &mut dyn Write, value: &T) -> Result<(), CliError> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
    text.push('\n');
    write_out(out, &text)
}

/// The order `ls` prints sockets in: listeners first, then by local and
/// remote address, so repeated runs are comparable.
pub fn sort_connections(conns: &mut [ConnectionInfo]) {
    let key = |c: &ConnectionInfo| {
        let addr = |a: Option<&SocketAddress>| {
            a.map_or((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), |a| {
                (ip_of(a), a.port)
            })
        };
        (
            decode_state(c.state) != Some(TcpState::Listen),
            addr(c.local.as_ref()),
            addr(c.remote.as_ref()),
            c.handle,
        )
    };
    conns.sort_by_key(key);
}

/// One run's session with the daemon.
struct Session {
    admin: AdminClient<Channel>,
    path: PathBuf,
}

impl Session {
    async fn connect(path: &Path) -> Result<Self, CliError> {
        let channel = tcpd_client::connect_channel(path)
            .await
            .map_err(|e| CliError::from_connect(path, e))?;
        Ok(Session {
            admin: AdminClient::new(channel),
            path: path.to_path_buf(),
        })
    }

    /// Awaits a unary call with [`RPC_TIMEOUT`], mapping failures.
    async fn unary<T>(
        &self,
        operation: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CliError> {
        match tokio::time::timeout(RPC_TIMEOUT, call).await {
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) => Err(CliError::from_status(operation, &self.path, &status)),
            Err(_elapsed) => Err(CliError::NoAnswer {
                operation: operation.to_string(),
                path: self.path.clone(),
                seconds: RPC_TIMEOUT.as_secs(),
            }),
        }
    }

    async fn list(&mut self) -> Result<Vec<ConnectionInfo>, CliError> {
        let mut admin = self.admin.clone();
        let reply = self
            .unary(
                "list connections",
                admin.list_connections(ListConnectionsRequest {}),
            )
            .await?;
        let mut conns = reply.connections;
        sort_connections(&mut conns);
        Ok(conns)
    }

    async fn ls(
        &mut self,
        args: &LsArgs,
        json: bool,
        color: bool,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        let filter = ConnFilter::new(
            &args.filter.state,
            args.listening,
            args.filter.port,
            args.filter.uid,
        )
        .with_family(args.filter.family());
        let conns: Vec<ConnectionInfo> = self
            .list()
            .await?
            .into_iter()
            .filter(|c| filter.matches(c))
            .collect();
        let owners = SystemOwners::new();
        if json {
            let rows: Vec<ConnectionJson> = conns
                .iter()
                .map(|c| ConnectionJson::new(c, &owners))
                .collect();
            return write_json(out, &rows);
        }
        let options = Options {
            info: args.info,
            color,
            width: terminal_width(),
            owners: &owners,
        };
        write_out(out, &render_table(&conns, &options))
    }

    async fn stats(
        &mut self,
        json: bool,
        prometheus: bool,
        color: bool,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        let mut admin = self.admin.clone();
        let stats = self.unary("stats", admin.stats(StatsRequest {})).await?;
        if prometheus {
            write_out(out, &crate::metrics::prometheus(&stats))
        } else if json {
            write_json(out, &StatsJson::from(&stats))
        } else {
            write_out(out, &render_stats(&stats, color))
        }
    }

    async fn status(&mut self, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
        let mut admin = self.admin.clone();
        let status = self.unary("status", admin.status(StatusRequest {})).await?;
        if json {
            write_json(out, &StatusJson::from(&status))
        } else {
            write_out(out, &render_status(&status))
        }
    }

    async fn watch(
        &mut self,
        args: &WatchArgs,
        json: bool,
        color: bool,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut admin = self.admin.clone();
        let subscribe = admin.watch(WatchRequest {});
        let mut stream =
            match deadline {
                Some(at) => tokio::time::timeout_at(at, subscribe).await.map_err(|_| {
                    CliError::NoAnswer {
                        operation: "watch".into(),
                        path: self.path.clone(),
                        seconds: args.timeout.map_or(0, |t| t.as_secs()),
                    }
                })?,
                None => subscribe.await,
            }
            .map_err(|s| CliError::from_status("watch", &self.path, &s))?
            .into_inner();
        // Tells a human (and tests) that the subscription is live.
        eprintln!(
            "tcpctl: watching TCP state changes of tcpd at {}",
            self.path.display()
        );

        let mut renderer = WatchRenderer::new();
        let mut seen = 0u64;
        let port = args.port.map(u32::from);
        while args.count.is_none_or(|wanted| seen < wanted) {
            let next = match deadline {
                Some(at) => match tokio::time::timeout_at(at, stream.message()).await {
                    Ok(next) => next,
                    Err(_elapsed) => {
                        return match args.count {
                            Some(wanted) => Err(CliError::WatchTimeout { seen, wanted }),
                            None => Ok(()),
                        };
                    }
                },
                None => stream.message().await,
            };
            let change = match next {
                Ok(Some(tcpd_proto::v2::WatchResponse {
                    change: Some(change),
                })) => change,
                // A frame newer than this tcpctl: skip it.
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return Err(CliError::Unreachable {
                        path: self.path.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "tcpd ended the watch stream",
                        ),
                    });
                }
                Err(status) => return Err(CliError::from_status("watch", &self.path, &status)),
            };
            if let Some(port) = port {
                let ports = [
                    change.local.as_ref().map_or(0, |a| a.port),
                    change.remote.as_ref().map_or(0, |a| a.port),
                ];
                if !ports.contains(&port) {
                    continue;
                }
            }
            seen += 1;
            let line = if json {
                serde_json::to_string(&WatchEventJson::from(&change))
                    .map_err(|e| CliError::Output(std::io::Error::other(e)))?
            } else {
                renderer.line(&change, color)
            };
            write_out(out, &format!("{line}\n"))?;
        }
        Ok(())
    }

    async fn kill(
        &mut self,
        args: &KillArgs,
        json: bool,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        let targets: Vec<(SocketAddress, SocketAddress)> = match (args.local, args.remote) {
            (Some(local), Some(remote)) => vec![(local.into(), remote.into())],
            _ => {
                let filter =
                    ConnFilter::new(&args.filter.state, false, args.filter.port, args.filter.uid)
                        .with_family(args.filter.family());
                let tuples: BTreeSet<((IpAddr, u32), (IpAddr, u32))> = self
                    .list()
                    .await?
                    .iter()
                    .filter(|c| filter.matches(c))
                    .filter_map(|c| {
                        let local = c.local.as_ref()?;
                        let remote = c.remote.as_ref()?;
                        // No peer (a listener, an unconnected socket): no one
                        // to send a RST to.
                        (remote.port != 0)
                            .then_some(((ip_of(local), local.port), (ip_of(remote), remote.port)))
                    })
                    .collect();
                tuples
                    .into_iter()
                    .map(|((lip, lport), (rip, rport))| {
                        (wire_addr(lip, lport), wire_addr(rip, rport))
                    })
                    .collect()
            }
        };
        if targets.is_empty() {
            return Err(CliError::NothingMatched(
                "kill: no connection with a peer matches the filter".into(),
            ));
        }
        let is_root = nix::unistd::geteuid().is_root();
        let mut report = KillJson {
            aborted: 0,
            targets: Vec::new(),
        };
        for (local, remote) in targets {
            let mut admin = self.admin.clone();
            let request = AbortRequest {
                local: Some(local.clone()),
                remote: Some(remote.clone()),
            };
            let reply = match self.unary("kill", admin.abort(request)).await {
                Ok(reply) => reply,
                Err(CliError::Denied {
                    operation,
                    errno_name,
                    ..
                }) => {
                    let hint = if is_root {
                        String::new()
                    } else {
                        "; resetting connections needs root (try sudo)".to_string()
                    };
                    return Err(CliError::Denied {
                        operation,
                        errno_name,
                        hint,
                    });
                }
                Err(other) => return Err(other),
            };
            report.aborted += u64::from(reply.aborted);
            report.targets.push(KillTargetJson {
                local: addr_text(Some(&local)),
                remote: addr_text(Some(&remote)),
                aborted: reply.aborted,
            });
        }
        if json {
            write_json(out, &report)?;
        } else {
            let mut text = String::new();
            for target in report.targets.iter().filter(|t| t.aborted > 0) {
                text.push_str(&format!("reset {} {}\n", target.local, target.remote));
            }
            write_out(out, &text)?;
        }
        if report.aborted == 0 {
            let what = match (args.local, args.remote) {
                (Some(local), Some(remote)) => format!("no connection {local} {remote}"),
                _ => "the matching connections closed before they could be reset".to_string(),
            };
            return Err(CliError::NothingMatched(format!("kill: {what}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcpd_proto::v2::TcpState;

    #[test]
    fn explicit_colour_choices_ignore_the_terminal() {
        assert!(use_color(ColorChoice::Always, false));
        assert!(!use_color(ColorChoice::Never, true));
        assert!(!use_color(ColorChoice::Auto, false));
    }

    #[test]
    fn listeners_sort_first_then_by_address() {
        let conn = |state: TcpState, lport: u32, rport: u32| ConnectionInfo {
            state: state as i32,
            local: Some(wire_addr(IpAddr::V4(Ipv4Addr::from(1)), lport)),
            remote: Some(wire_addr(IpAddr::V4(Ipv4Addr::from(2)), rport)),
            ..Default::default()
        };
        let mut conns = vec![
            conn(TcpState::Established, 9000, 5),
            conn(TcpState::Established, 80, 7),
            conn(TcpState::Listen, 9000, 0),
            conn(TcpState::TimeWait, 80, 6),
        ];
        sort_connections(&mut conns);
        let order: Vec<(u32, u32)> = conns
            .iter()
            .map(|c| {
                (
                    c.local.as_ref().map_or(0, |a| a.port),
                    c.remote.as_ref().map_or(0, |a| a.port),
                )
            })
            .collect();
        assert_eq!(order, [(9000, 0), (80, 6), (80, 7), (9000, 5)]);
    }
}
