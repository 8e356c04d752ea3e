//! Results: a human-readable table and, with `--json`, one JSON object per line.

use serde::Serialize;

/// One result line.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    pub label: String,
    pub scenario: String,
    pub transport: String,
    pub params: String,
    /// complete | time-cap | stalled
    pub outcome: String,
    /// Messages the publisher(s) wrote.
    pub sent: u64,
    /// Deliveries expected (messages x subscribers for fanout).
    pub expected: u64,
    pub delivered: u64,
    pub loss: u64,
    pub loss_pct: f64,
    pub elapsed_s: f64,
    /// Delivered (or consumed) messages per second.
    pub msg_per_s: f64,
    pub broker_cpu_s: Option<f64>,
    /// Broker CPU / wall time between the samples (100 = one core).
    pub broker_cpu_pct: Option<f64>,
    pub msg_per_broker_cpu_s: Option<f64>,
    pub broker_rss_kib: Option<u64>,
    pub broker_hwm_kib: Option<u64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub max_us: Option<f64>,
    pub mean_us: Option<f64>,
    pub connections: Option<u64>,
    pub connect_s: Option<f64>,
    pub rss_before_kib: Option<u64>,
    pub kib_per_conn: Option<f64>,
    pub tool_cpu_s: f64,
    /// Tool CPU / wall time between the samples: near 100 x --threads, the tool was
    /// the bottleneck.
    pub tool_cpu_pct: f64,
    pub note: Option<String>,
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Prints the table (to stderr when `json` so stdout stays machine-readable), then the
/// JSON lines on stdout.
pub fn print(rows: &[Row], json: bool, threads: usize) {
    let mut out = String::new();
    let header = [
        "label",
        "scenario",
        "transport",
        "params",
        "outcome",
        "deliv/expect",
        "loss",
        "secs",
        "msg/s",
        "brk-cpu-s(%)",
        "msg/brk-cpu-s",
        "brk-rss-MiB",
        "p50/p99/p99.9/max us",
        "KiB/conn",
        "tool-cpu-s(%)",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                if r.label.is_empty() {
                    "-".into()
                } else {
                    r.label.clone()
                },
                r.scenario.clone(),
                r.transport.clone(),
                r.params.clone(),
                r.outcome.clone(),
                if r.scenario == "idle" {
                    opt(r.connections, |c| format!("{c} conns"))
                } else {
                    format!("{}/{}", r.delivered, r.expected)
                },
                if r.scenario == "idle" {
                    "-".into()
                } else {
                    format!("{} ({:.2}%)", r.loss, r.loss_pct)
                },
                format!("{:.3}", r.elapsed_s),
                if r.scenario == "idle" {
                    "-".into()
                } else {
                    si(r.msg_per_s)
                },
                match (r.broker_cpu_s, r.broker_cpu_pct) {
                    (Some(c), Some(p)) => format!("{c:.2} ({p:.0}%)"),
                    _ => "-".into(),
                },
                opt(r.msg_per_broker_cpu_s, si),
                opt(r.broker_rss_kib, |k| format!("{:.1}", k as f64 / 1024.0)),
                match (r.p50_us, r.p99_us, r.p999_us, r.max_us) {
                    (Some(a), Some(b), Some(c), Some(d)) => format!("{a:.0}/{b:.0}/{c:.0}/{d:.0}"),
                    _ => "-".into(),
                },
                opt(r.kib_per_conn, |k| format!("{k:.1}")),
                format!("{:.2} ({:.0}%)", r.tool_cpu_s, r.tool_cpu_pct),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: Vec<&str>| -> String {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    out.push_str(&line(header.to_vec()));
    out.push('\n');
    for (r, c) in rows.iter().zip(&cells) {
        out.push_str(&line(c.iter().map(String::as_str).collect()));
        out.push('\n');
        if let Some(n) = &r.note {
            out.push_str(&format!("  note: {n}\n"));
        }
        if r.tool_cpu_pct >= 90.0 * threads as f64 {
            out.push_str(&format!(
                "  warning: the tool used {:.0}% CPU with --threads {threads}: it may be the bottleneck\n",
                r.tool_cpu_pct
            ));
        }
    }
    if json {
        eprint!("{out}");
        for r in rows {
            println!("{}", serde_json::to_string(r).expect("row serializes"));
        }
    } else {
        print!("{out}");
    }
}
