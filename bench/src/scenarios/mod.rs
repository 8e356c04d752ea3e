//! Scenarios and what they share: the run context, the pre-encoded SEND frame, the
//! windowed publisher, and the wait for completion.

pub mod fanout;
pub mod idle;
pub mod latency;
mod publish;
pub mod queue;

pub use publish::{PubPlan, PubStats, STAMP_LEN, SendFrame, Stamp, goodbye, publish, unstamp};

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use tokio_util::sync::CancellationToken;

use crate::cli::Global;
use crate::client::{self, ConnectOpts, Endpoint, Reader, Writer};
use crate::proc::Sample;
use crate::report::Row;

/// Everything a scenario needs from the command line, plus run-wide state.
pub struct Ctx {
    pub g: Global,
    pub ep: Endpoint,
    /// Cancelled on completion, time cap or failure: every task stops.
    pub stop: CancellationToken,
    failure: Mutex<Option<String>>,
    /// Timestamps are nanoseconds since this instant.
    pub base: Instant,
}

impl Ctx {
    pub fn new(g: Global, ep: Endpoint) -> Arc<Ctx> {
        Arc::new(Ctx {
            g,
            ep,
            stop: CancellationToken::new(),
            failure: Mutex::new(None),
            base: Instant::now(),
        })
    }

    /// Records the first failure and stops the run.
    pub fn fail(&self, msg: impl Into<String>) {
        let mut slot = self.failure.lock().unwrap();
        if slot.is_none() {
            *slot = Some(msg.into());
        }
        self.stop.cancel();
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap().clone()
    }

    /// Errors out if anything failed.
    pub fn check(&self) -> anyhow::Result<()> {
        match self.failure() {
            Some(f) => Err(anyhow!(f)),
            None => Ok(()),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    pub fn opts(&self) -> ConnectOpts {
        ConnectOpts {
            login: self.g.login.clone(),
            passcode: self.g.passcode.clone(),
            host: self.g.host.clone(),
            heartbeat_ms: 0,
            raw: self.g.raw,
            small: false,
            source_ip: None,
            tungstenite: self.g.ws_client == crate::cli::WsClient::Tungstenite,
        }
    }

    pub fn messages(&self, default: u64) -> u64 {
        self.g.messages.unwrap_or(default)
    }

    pub fn max_time(&self) -> Duration {
        Duration::from_secs_f64(self.g.max_seconds.max(0.1))
    }

    /// A base row with the common fields filled in.
    pub fn row(&self, scenario: &str, params: String) -> Row {
        Row {
            label: self.g.label.clone(),
            scenario: scenario.to_string(),
            transport: format!(
                "{}{}{}",
                self.ep.transport(),
                if self.ep.ws_url.is_some() && self.g.ws_client == crate::cli::WsClient::Tungstenite
                {
                    "-tungstenite"
                } else {
                    ""
                },
                if self.g.raw { "-raw" } else { "" }
            ),
            params,
            ..Row::default()
        }
    }
}

/// A short random hex tag for unique destination names.
pub fn rand_tag() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut x = t ^ ((std::process::id() as u64) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    format!("{:012x}", x & 0xffff_ffff_ffff)
}

/// Opens `n` connections, at most `concurrency` handshakes at once.
pub async fn open_many(
    ctx: &Arc<Ctx>,
    n: usize,
    what: &str,
    subscribe: Option<(String, Vec<(&'static str, String)>)>,
) -> anyhow::Result<Vec<(Reader, Writer)>> {
    let opts = ctx.opts();
    let raw = ctx.g.raw;
    let conns: Vec<(Reader, Writer)> = stream::iter(0..n)
        .map(|i| {
            let opts = opts.clone();
            let subscribe = subscribe.clone();
            async move {
                let (mut r, mut w) = client::open(&ctx.ep, &opts).await?;
                if let (Some((dest, extra)), false) = (subscribe, raw) {
                    let extra: Vec<(&str, String)> = extra;
                    client::subscribe(&mut r, &mut w, &dest, &i.to_string(), &extra).await?;
                }
                anyhow::Ok((r, w))
            }
        })
        .buffer_unordered(ctx.g.connect_concurrency.max(1))
        .try_collect()
        .await
        .map_err(|e| e.context(format!("opening {what} connections")))?;
    Ok(conns)
}

/// Delivery counters shared by all receiving tasks.
#[derive(Default)]
pub struct RxStats {
    pub received: AtomicU64,
    /// Latest receive time, ns since `Ctx::base`.
    pub last_rx_ns: AtomicU64,
    /// Raw mode: per subscriber, 1 + the highest sequence number it received.
    pub seqs: Box<[AtomicU64]>,
    /// Raw mode: signalled when `max_seq` moves.
    pub progress: tokio::sync::Notify,
}

impl RxStats {
    /// With one sequence slot per subscriber (raw-mode flow control).
    pub fn with_slots(n: usize) -> RxStats {
        RxStats {
            seqs: (0..n).map(|_| AtomicU64::new(0)).collect(),
            ..RxStats::default()
        }
    }

    /// The sequence number every subscriber has reached (drops skipped over).
    pub fn min_seq(&self) -> u64 {
        self.seqs
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// Raw mode: proceed anyway after this long without delivery progress (everything in
/// flight may have been dropped).
pub(crate) const RAW_STALL: Duration = Duration::from_millis(20);

/// How the wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    TimeCap,
    /// The publisher finished and nothing arrived for a while (topic drops).
    Stalled,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::TimeCap => "time-cap",
            Outcome::Stalled => "stalled",
            Outcome::Failed => "failed",
        }
    }
}

/// Waits until `target` messages were received, the deadline passes, the run fails, or
/// the publishers are done and nothing more arrived for `quiet`.
pub async fn wait_for(
    ctx: &Ctx,
    rx: &RxStats,
    target: u64,
    deadline: Instant,
    pubs: &[Arc<PubStats>],
    quiet: Duration,
) -> Outcome {
    let mut last = 0;
    let mut last_change = Instant::now();
    loop {
        if ctx.stop.is_cancelled() {
            return if rx.received.load(Ordering::Acquire) >= target {
                Outcome::Complete
            } else {
                Outcome::Failed
            };
        }
        let got = rx.received.load(Ordering::Acquire);
        let now = Instant::now();
        if got >= target {
            return Outcome::Complete;
        }
        if now >= deadline {
            return Outcome::TimeCap;
        }
        if got != last {
            last = got;
            last_change = now;
        }
        let pubs_done = pubs.iter().all(|p| p.done.load(Ordering::Acquire) == 1);
        if pubs_done && now.duration_since(last_change) >= quiet {
            return Outcome::Stalled;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Elapsed measured time: from `t0` to the last delivery (or now, when none).
pub fn elapsed(ctx: &Ctx, t0_ns: u64, rx: &RxStats) -> f64 {
    let last = rx.last_rx_ns.load(Ordering::Acquire);
    let end = if last > t0_ns { last } else { ctx.now_ns() };
    (end - t0_ns) as f64 / 1e9
}

/// Fills the common measurement fields of `row`.
#[allow(clippy::too_many_arguments)]
pub fn finish_row(
    ctx: &Ctx,
    row: &mut Row,
    before: Sample,
    after: Sample,
    elapsed_s: f64,
    delivered: u64,
    expected: u64,
    outcome: Outcome,
) {
    row.expected = expected;
    row.delivered = delivered;
    row.loss = expected.saturating_sub(delivered);
    row.loss_pct = if expected > 0 {
        100.0 * row.loss as f64 / expected as f64
    } else {
        0.0
    };
    row.elapsed_s = elapsed_s;
    row.msg_per_s = if elapsed_s > 0.0 {
        delivered as f64 / elapsed_s
    } else {
        0.0
    };
    // CPU shares are over the wall time between the two samples (which may include a
    // quiet tail after the last delivery).
    let wall = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    if let (Some(a), Some(b)) = (after.broker_cpu, before.broker_cpu) {
        let cpu = a - b;
        row.broker_cpu_s = Some(cpu);
        row.broker_cpu_pct = Some(100.0 * cpu / wall);
        row.msg_per_broker_cpu_s = (cpu > 0.0).then(|| delivered as f64 / cpu);
    }
    if let Some(pid) = ctx.g.pid {
        row.broker_rss_kib = crate::proc::rss_kib(pid).ok();
        row.broker_hwm_kib = crate::proc::hwm_kib(pid).ok();
    }
    row.tool_cpu_s = after.tool_cpu - before.tool_cpu;
    row.tool_cpu_pct = 100.0 * row.tool_cpu_s / wall;
    row.outcome = outcome.as_str().to_string();
}

/// Fails a run that timed out without any progress.
pub fn check_progress(outcome: Outcome, delivered: u64) -> anyhow::Result<()> {
    if delivered == 0 && matches!(outcome, Outcome::TimeCap | Outcome::Stalled) {
        bail!(
            "no message was delivered before the run ended ({})",
            outcome.as_str()
        );
    }
    Ok(())
}
