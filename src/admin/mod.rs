//! The admin listener: health, Prometheus metrics, a JSON API, and the dashboard.
//!
//! It is its own port (`admin.listen`, loopback by default), served by the same HTTP
//! front as the WebSocket listener (`http`): its `/ws` is STOMP over WebSocket into
//! this same broker, so the dashboard — a STOMP client reading `/sys/stats` — needs
//! this one port, and works through an SSH tunnel to it. Every other path goes to the
//! axum router built here.
//!
//! - `GET /healthz`, `GET /readyz`: no credentials (probes carry none).
//! - `GET /metrics`: Prometheus text ([`prometheus`]); admin credentials unless
//!   `admin.public_metrics`.
//! - `/api/…`: the JSON API, described by `src/admin/openapi.json` (served at
//!   `/openapi.json`); HTTP Basic as one of `admin.users`, checked like a STOMP login
//!   (argon2, and the failed-login limit per address). Requests that change
//!   something must come from the admin's own origin when they carry an `Origin`, so a
//!   web page elsewhere cannot use a browser's cached credentials.
//! - `/`, `/dashboard/…`: the dashboard's files (`admin.dashboard_dir`).
//!
//! [`stats`] computes rates every `admin.stats_interval_ms` and publishes the
//! `/sys/stats` snapshot when anyone subscribes to it.

mod api;
mod log;
mod prometheus;
mod stats;
mod views;

pub use log::{LogLevel, ReloadableFilter, install_log_level};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::session::Shared;

/// The OpenAPI description of the admin API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What every admin request can reach.
pub(crate) struct AdminState {
    pub shared: Arc<Shared>,
    pub started: Instant,
    pub listeners: views::Listeners,
    /// Broker-wide and per-destination rates, from the last stats tick.
    rates: Mutex<(views::Rates, Arc<HashMap<String, views::Rates>>)>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("listeners", &self.listeners)
            .finish()
    }
}

impl AdminState {
    pub(crate) fn new(shared: Arc<Shared>, listeners: views::Listeners) -> Arc<AdminState> {
        Arc::new(AdminState {
            shared,
            started: Instant::now(),
            listeners,
            rates: Mutex::default(),
        })
    }

    fn rates(&self) -> (views::Rates, Arc<HashMap<String, views::Rates>>) {
        self.rates.lock().expect("rates lock poisoned").clone()
    }

    fn set_rates(&self, all: views::Rates, per_dest: HashMap<String, views::Rates>) {
        *self.rates.lock().expect("rates lock poisoned") = (all, Arc::new(per_dest));
    }
}

/// The client's address, put into each request's extensions by the HTTP front.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerIp(pub IpAddr);

pub(crate) use api::{app, same_origin};
pub(crate) use stats::run as run_stats;
pub(crate) use views::Listeners;
