//! `/metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! Written by hand: the format is a few line shapes, and rendering straight from the
//! broker's own atomics at scrape time keeps every hot path free of a metrics
//! library's label lookups. `promtool check metrics` runs over the output in
//! `tests/admin.rs`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::AtomicU64;

use super::AdminState;
use crate::metrics::{ALL_COMMANDS, ERROR_REASONS, Histogram, Metrics};
use crate::router::OTHER;

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value as f64);
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, "histogram", help);
        let (counts, sum) = h.snapshot();
        let bucket = format!("{name}_bucket");
        for (bound, n) in h.bounds.iter().zip(&counts) {
            self.sample(&bucket, &[("le", &bound.to_string())], *n as f64);
        }
        let total = *counts.last().expect("the +Inf bucket") as f64;
        self.sample(&bucket, &[("le", "+Inf")], total);
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], total);
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn get(c: &AtomicU64) -> f64 {
    Metrics::get(c) as f64
}

/// The whole exposition.
pub(super) fn render(state: &AdminState) -> String {
    let router = &state.shared.router;
    let m = router.metrics();
    let mut out = Out(String::with_capacity(16 * 1024));

    // Connections.
    let mut by: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
    for conn in state.shared.connections.all() {
        let v = conn.view();
        let version = v.version.map_or("none", |v| v.as_str());
        *by.entry((v.transport, version)).or_default() += 1;
    }
    out.family(
        "stompbox_connections",
        "gauge",
        "Open connections by transport and negotiated STOMP version (none: before CONNECTED).",
    );
    for ((transport, version), n) in &by {
        out.sample(
            "stompbox_connections",
            &[("transport", transport), ("version", version)],
            *n as f64,
        );
    }
    out.counter(
        "stompbox_connections_opened_total",
        "Connections accepted since start.",
        Metrics::get(&m.connections_total),
    );

    // Frames and bytes by command.
    for (name, help, counters) in [
        (
            "stompbox_frames_received_total",
            "Frames received, by command.",
            &m.frames_in,
        ),
        (
            "stompbox_received_bytes_total",
            "Bytes of frames received (headers and body), by command.",
            &m.bytes_in,
        ),
        (
            "stompbox_frames_sent_total",
            "Frames written, by command.",
            &m.frames_out,
        ),
        (
            "stompbox_sent_bytes_total",
            "Bytes of frames written, by command.",
            &m.bytes_out,
        ),
    ] {
        out.family(name, "counter", help);
        for (c, n) in ALL_COMMANDS.iter().zip(counters.iter()) {
            out.sample(name, &[("command", c.as_str())], get(n));
        }
    }

    // Messages per destination (the label set is bounded: see `router::StatsIndex`).
    let dests = router.stats().all();
    type Field = fn(&crate::router::DestStats) -> &AtomicU64;
    let per_dest: [(&str, &str, Field); 8] = [
        (
            "stompbox_messages_published_total",
            "Messages accepted, by destination.",
            |s| &s.published,
        ),
        (
            "stompbox_messages_delivered_total",
            "Deliveries handed to subscribers, by destination.",
            |s| &s.delivered,
        ),
        (
            "stompbox_messages_acked_total",
            "Deliveries settled by ACK, by destination.",
            |s| &s.acked,
        ),
        (
            "stompbox_messages_nacked_total",
            "Deliveries refused by NACK, by destination.",
            |s| &s.nacked,
        ),
        (
            "stompbox_messages_redelivered_total",
            "Queue messages delivered again, by destination.",
            |s| &s.redelivered,
        ),
        (
            "stompbox_messages_expired_total",
            "Queue messages that expired before delivery, by destination.",
            |s| &s.expired,
        ),
        (
            "stompbox_messages_dead_lettered_total",
            "Messages moved to a dead-letter queue, by the destination they left.",
            |s| &s.dead_lettered,
        ),
        (
            "stompbox_messages_dropped_total",
            "Messages dropped (slow topic subscriber, drop-oldest overflow, no receiver), by destination.",
            |s| &s.dropped,
        ),
    ];
    for (name, help, field) in per_dest {
        out.family(name, "counter", help);
        for (dest, s) in &dests {
            out.sample(name, &[("destination", dest)], get(field(s)));
        }
    }

    // Queue gauges, with unlabelled queues summed into `other`.
    let mut queues: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    for d in router
        .destinations()
        .into_iter()
        .filter(|d| d.kind != "topic")
    {
        let label = if router.stats().is_other(&d.stats) {
            OTHER.to_owned()
        } else {
            d.name
        };
        let e = queues.entry(label).or_default();
        e[0] += d.depth;
        e[1] += d.bytes;
        e[2] += d.unacked;
        e[3] += d.consumers;
    }
    for (i, name, help) in [
        (
            0,
            "stompbox_queue_messages",
            "Messages waiting in the queue (delayed ones included).",
        ),
        (
            1,
            "stompbox_queue_bytes",
            "Bytes the queue holds, waiting and unacknowledged messages.",
        ),
        (
            2,
            "stompbox_queue_unacked_messages",
            "Deliveries from the queue not yet settled.",
        ),
        (3, "stompbox_queue_consumers", "Consumers of the queue."),
    ] {
        out.family(name, "gauge", help);
        for (q, v) in &queues {
            out.sample(name, &[("destination", q)], v[i] as f64);
        }
    }

    // Slow consumers, heart-beats, errors.
    out.family(
        "stompbox_slow_consumer_events_total",
        "counter",
        "Slow-consumer events: a publisher's grace ran out (grace_expired), a topic message dropped for one (dropped), one disconnected (disconnected).",
    );
    for (event, c) in [
        ("grace_expired", &m.slow_consumer_graces),
        ("dropped", &m.slow_consumer_drops),
        ("disconnected", &m.slow_consumer_disconnects),
    ] {
        out.sample(
            "stompbox_slow_consumer_events_total",
            &[("event", event)],
            get(c),
        );
    }
    out.counter(
        "stompbox_heartbeat_timeouts_total",
        "Connections closed because the client sent nothing within its heart-beat interval.",
        Metrics::get(&m.heartbeat_timeouts),
    );
    out.family(
        "stompbox_errors_total",
        "counter",
        "Connections closed with an ERROR frame, by reason (the WebSocket close code's meaning).",
    );
    for (reason, c) in ERROR_REASONS.iter().zip(m.errors.iter()) {
        out.sample("stompbox_errors_total", &[("reason", reason)], get(c));
    }

    // Store.
    out.counter(
        "stompbox_store_commits_total",
        "Store write transactions committed, one fsync each.",
        Metrics::get(&m.store_commits),
    );
    out.counter(
        "stompbox_store_operations_total",
        "Store operations committed (message writes, deletes, redelivery counts).",
        Metrics::get(&m.store_ops),
    );
    out.counter(
        "stompbox_store_failures_total",
        "Store commits that failed.",
        Metrics::get(&m.store_failures),
    );
    out.counter(
        "stompbox_store_recovered_messages_total",
        "Persistent messages loaded from the store at start.",
        Metrics::get(&m.store_recovered),
    );
    out.histogram(
        "stompbox_store_batch_operations",
        "Operations per store commit.",
        &m.store_batch,
    );
    out.histogram(
        "stompbox_store_commit_seconds",
        "Time per store commit, fsync included.",
        &m.store_commit_seconds,
    );

    // Latency, memory, uptime.
    out.histogram(
        "stompbox_publish_to_deliver_seconds",
        "Time from a SEND being accepted to its MESSAGE being handed to a subscriber's connection.",
        &m.publish_to_deliver_seconds,
    );
    let memory = router.memory();
    out.gauge(
        "stompbox_memory_bytes",
        "Bytes held for messages and buffers (the gauge behind memory.high_watermark_bytes).",
        memory.used() as f64,
    );
    out.gauge(
        "stompbox_memory_high_watermark_bytes",
        "memory.high_watermark_bytes.",
        state.shared.config.memory.high_watermark_bytes as f64,
    );
    out.counter(
        "stompbox_memory_alarms_total",
        "Times held bytes rose above the high watermark.",
        Metrics::get(&m.memory_alarms),
    );
    out.gauge(
        "stompbox_uptime_seconds",
        "Seconds since the broker started.",
        state.started.elapsed().as_secs_f64(),
    );
    out.0
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
