//! The stats tick: every `admin.stats_interval_ms`, rates from the counters' deltas,
//! and a `/sys/stats` snapshot for its subscribers (built only when there are some).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{AdminState, views};
use crate::frame::Headers;
use crate::metrics::Metrics;
use crate::router::Publisher;
use crate::session::STATS_TOPIC;

/// Counters at one tick: (published, delivered), broker-wide and per destination.
struct Sample {
    at: Instant,
    totals: (u64, u64),
    per_dest: HashMap<String, (u64, u64)>,
}

/// Runs until `stop`.
pub(crate) async fn run(state: Arc<AdminState>, stop: CancellationToken) {
    let admin = &state.shared.config.admin;
    let every = Duration::from_millis(admin.stats_interval_ms);
    let max_rows = admin.stats_max_rows;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Sample> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let router = &state.shared.router;
        let m = router.metrics();
        let now = Instant::now();
        let totals = (Metrics::get(&m.messages_in), Metrics::get(&m.messages_out));
        let per_dest: HashMap<String, (u64, u64)> = router
            .stats()
            .all()
            .into_iter()
            .map(|(name, s)| {
                (
                    name,
                    (Metrics::get(&s.published), Metrics::get(&s.delivered)),
                )
            })
            .collect();
        if let Some(before) = &last {
            let secs = now.duration_since(before.at).as_secs_f64().max(1e-3);
            let rate = |now: (u64, u64), then: (u64, u64)| views::Rates {
                published_per_s: now.0.saturating_sub(then.0) as f64 / secs,
                delivered_per_s: now.1.saturating_sub(then.1) as f64 / secs,
            };
            let dest_rates = per_dest
                .iter()
                .map(|(name, v)| {
                    let then = before.per_dest.get(name).copied().unwrap_or((0, 0));
                    (name.clone(), rate(*v, then))
                })
                .collect();
            state.set_rates(rate(totals, before.totals), dest_rates);
        }
        last = Some(Sample {
            at: now,
            totals,
            per_dest,
        });
        if router.has_subscribers(STATS_TOPIC) {
            let snapshot = views::snapshot(&state, max_rows);
            let body = match serde_json::to_vec(&snapshot) {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    tracing::warn!(cause = %e, "cannot encode the stats snapshot");
                    continue;
                }
            };
            let mut headers = Headers::new();
            headers.push("content-type", "application/json");
            // A subscriber with a full outbox misses this one; the next comes soon.
            router.publish_system(STATS_TOPIC, headers, body, Publisher::Stats);
        }
    }
}
