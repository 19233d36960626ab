//! `tcpctl`: the admin CLI of tcpd, as a library so its rendering can be
//! tested without a daemon.
//!
//! Data flow: [`cli`] parses the command line; [`commands`] calls the
//! daemon's Admin service (tcpd.v2, over its Unix socket) and hands the
//! replies to [`render`] (human tables, pure functions) or [`json`] (the
//! stable `--json` schema); [`filter`] and [`state`] select connections;
//! [`owner`] turns uids/pids into names; [`error`] maps every failure to one
//! exit code; [`trace`] draws a connection (live or replayed) as the
//! seed's ladder diagram with `tcpd-trace`.

#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod error;
pub mod filter;
pub mod json;
pub mod metrics;
pub mod owner;
pub mod render;
pub mod state;
pub mod trace;

pub use render::{Options, render_table};
