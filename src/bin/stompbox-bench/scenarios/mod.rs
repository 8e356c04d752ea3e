//! Scenarios and what they share: the run context, the pre-encoded SEND frame, the
//! windowed publisher, and the wait for completion.

pub mod fanout;
pub mod idle;
pub mod latency;
pub mod queue;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt, stream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::cli::Global;
use crate::client::{self, ConnectOpts, Endpoint, Reader, Writer};
use crate::proc::Sample;
use crate::report::Row;
use crate::scan::Cmd;

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
                "{}{}",
                self.ep.transport(),
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

/// The SEND frame, encoded once. Over the wire it is `SEND\n` + `rest`; a receipt
/// request is spliced in after the command line; the latency timestamp (16 hex digits)
/// is patched into the first body bytes of a copy.
pub struct SendFrame {
    pub full: Bytes,
    rest: Bytes,
    /// Offset of the first body byte in `full`.
    body_at: usize,
}

const SEND_LINE: &[u8] = b"SEND\n";
pub const STAMP_LEN: usize = 16;

impl SendFrame {
    pub fn new(destination: &str, size: usize, extra: &[(&str, &str)]) -> SendFrame {
        let mut rest = BytesMut::with_capacity(128 + size);
        rest.put_slice(b"destination:");
        rest.put_slice(destination.as_bytes());
        rest.put_slice(b"\n");
        for (k, v) in extra {
            rest.put_slice(k.as_bytes());
            rest.put_u8(b':');
            rest.put_slice(v.as_bytes());
            rest.put_u8(b'\n');
        }
        rest.put_slice(format!("content-length:{size}\n\n").as_bytes());
        let body_in_rest = rest.len();
        // A printable body; 'x' repeated.
        rest.put_bytes(b'x', size);
        rest.put_u8(0);
        let rest = rest.freeze();
        let mut full = BytesMut::with_capacity(SEND_LINE.len() + rest.len());
        full.put_slice(SEND_LINE);
        full.put_slice(&rest);
        SendFrame {
            full: full.freeze(),
            rest,
            body_at: SEND_LINE.len() + body_in_rest,
        }
    }

    /// Stages one SEND, with a receipt request and/or a timestamp.
    #[inline]
    pub fn push(&self, w: &mut Writer, receipt: Option<u64>, stamp: Option<&[u8; STAMP_LEN]>) {
        match (receipt, stamp) {
            (None, None) => w.push_shared(&self.full),
            (None, Some(s)) => w.push_patched(&self.full, self.body_at, s),
            (Some(id), stamp) => {
                let mut line = [0u8; 40];
                let n = receipt_line(&mut line, id);
                let body_at = SEND_LINE.len() + n + (self.body_at - SEND_LINE.len());
                let mut buf = BytesMut::with_capacity(self.full.len() + n);
                buf.put_slice(SEND_LINE);
                buf.put_slice(&line[..n]);
                buf.put_slice(&self.rest);
                if let Some(s) = stamp {
                    buf[body_at..body_at + STAMP_LEN].copy_from_slice(s);
                }
                w.push_parts(&[&buf]);
            }
        }
    }
}

/// Writes `receipt:r<id>\n` into `out`; returns its length.
fn receipt_line(out: &mut [u8; 40], id: u64) -> usize {
    let prefix = b"receipt:r";
    out[..prefix.len()].copy_from_slice(prefix);
    let mut n = prefix.len();
    let mut digits = [0u8; 20];
    let mut d = 0;
    let mut v = id;
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for k in (0..d).rev() {
        out[n] = digits[k];
        n += 1;
    }
    out[n] = b'\n';
    n + 1
}

/// Nanoseconds as 16 lowercase hex digits.
#[inline]
pub fn stamp(ns: u64) -> [u8; STAMP_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; STAMP_LEN];
    for (i, o) in out.iter_mut().enumerate() {
        *o = HEX[((ns >> ((15 - i) * 4)) & 0xf) as usize];
    }
    out
}

/// Parses [`stamp`]'s output.
#[inline]
pub fn unstamp(b: &[u8]) -> Option<u64> {
    if b.len() < STAMP_LEN {
        return None;
    }
    let mut v = 0u64;
    for &c in &b[..STAMP_LEN] {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

/// Publisher progress, shared with the coordinator.
#[derive(Default)]
pub struct PubStats {
    pub sent: AtomicU64,
    pub receipts: AtomicU64,
    /// Set (to 1) when the publisher has finished (all sent and receipted, or stopped).
    pub done: AtomicU64,
}

/// How a publisher paces itself.
pub struct PubPlan {
    pub count: u64,
    /// Messages per second; `None` = as fast as the window allows.
    pub rate: Option<f64>,
    /// Patch a send timestamp into each body.
    pub stamp: bool,
    pub deadline: Instant,
}

/// Publishes `plan.count` messages on one connection: batches of `receipt_every`
/// frames written per flush, the last of each batch asking for a receipt, at most
/// `window` receipts outstanding. A task reads the receipts. In raw mode there are no
/// receipts: batches are written flat out.
pub async fn publish(
    ctx: Arc<Ctx>,
    conn: (Reader, Writer),
    frame: Arc<SendFrame>,
    plan: PubPlan,
    stats: Arc<PubStats>,
) {
    if let Err(e) = publish_inner(&ctx, conn, &frame, &plan, &stats).await {
        ctx.fail(format!("publisher: {e:#}"));
    }
    stats.done.store(1, Ordering::Release);
}

async fn publish_inner(
    ctx: &Arc<Ctx>,
    (mut r, mut w): (Reader, Writer),
    frame: &SendFrame,
    plan: &PubPlan,
    stats: &Arc<PubStats>,
) -> anyhow::Result<()> {
    let raw = ctx.g.raw;
    let every = ctx.g.receipt_every.max(1) as u64;
    let window = Arc::new(Semaphore::new(ctx.g.window.max(1)));
    // The receipt reader: counts RECEIPTs, returns window permits, fails on ERROR.
    let reader = {
        let ctx = ctx.clone();
        let window = window.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = ctx.stop.cancelled() => break,
                    res = r.fill() => match res {
                        Ok(true) => {}
                        Ok(false) => { if !raw { ctx.fail("publisher: broker closed the connection"); } break }
                        Err(e) => { ctx.fail(format!("publisher read: {e:#}")); break }
                    }
                }
                let mut n = 0;
                if let Err(e) = r.drain(false, |f, _| {
                    if f.cmd == Cmd::Receipt {
                        n += 1;
                    }
                    true
                }) {
                    ctx.fail(format!("publisher: {e:#}"));
                    break;
                }
                if n > 0 {
                    stats.receipts.fetch_add(n, Ordering::AcqRel);
                    window.add_permits(n as usize);
                }
            }
            r
        })
    };

    let start = Instant::now();
    let mut i = 0u64;
    let mut receipts_asked = 0u64;
    while i < plan.count && !ctx.stop.is_cancelled() {
        let now = Instant::now();
        if now >= plan.deadline {
            break;
        }
        let mut n = plan.count - i;
        if let Some(rate) = plan.rate {
            let due = (now.duration_since(start).as_secs_f64() * rate) as u64 + 1;
            if due <= i {
                let next = start + Duration::from_secs_f64(i as f64 / rate);
                tokio::select! {
                    _ = ctx.stop.cancelled() => break,
                    _ = tokio::time::sleep_until(next.into()) => {}
                }
                continue;
            }
            n = n.min(due - i);
        }
        n = n.min(every - i % every);
        let ts = plan.stamp.then(|| stamp(ctx.now_ns()));
        for j in i..i + n {
            let wants_receipt = !raw && ((j + 1) % every == 0 || j + 1 == plan.count);
            if wants_receipt {
                match window.clone().try_acquire_owned() {
                    Ok(p) => p.forget(),
                    Err(_) => {
                        w.flush().await?;
                        tokio::select! {
                            _ = ctx.stop.cancelled() => return Ok(()),
                            p = window.clone().acquire_owned() => p?.forget(),
                        }
                    }
                }
                receipts_asked += 1;
            }
            frame.push(&mut w, wants_receipt.then_some(j), ts.as_ref());
        }
        w.flush().await?;
        i += n;
        stats.sent.store(i, Ordering::Release);
    }
    // Wait for the outstanding receipts (bounded by the deadline).
    if !raw {
        while stats.receipts.load(Ordering::Acquire) < receipts_asked {
            if ctx.stop.is_cancelled() || Instant::now() >= plan.deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    stats.done.store(1, Ordering::Release);
    // Keep the connection open until the run stops (closing early could, on some
    // brokers, race with deliveries of what we sent).
    ctx.stop.cancelled().await;
    let r = reader.await.ok();
    goodbye(r, w, raw).await;
    Ok(())
}

/// Best-effort DISCONNECT and close.
pub async fn goodbye(r: Option<Reader>, mut w: Writer, raw: bool) {
    if !raw {
        w.push_parts(&[b"DISCONNECT\n\n\0"]);
        let _ = tokio::time::timeout(Duration::from_millis(500), w.flush()).await;
    }
    drop(r);
}

/// Delivery counters shared by all receiving tasks.
#[derive(Default)]
pub struct RxStats {
    pub received: AtomicU64,
    /// Latest receive time, ns since `Ctx::base`.
    pub last_rx_ns: AtomicU64,
}

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
    if let (Some(a), Some(b)) = (after.broker_cpu, before.broker_cpu) {
        let cpu = a - b;
        row.broker_cpu_s = Some(cpu);
        row.msg_per_broker_cpu_s = (cpu > 0.0).then(|| delivered as f64 / cpu);
    }
    if let Some(pid) = ctx.g.pid {
        row.broker_rss_kib = crate::proc::rss_kib(pid).ok();
        row.broker_hwm_kib = crate::proc::hwm_kib(pid).ok();
    }
    row.tool_cpu_s = after.tool_cpu - before.tool_cpu;
    row.tool_cpu_pct = if elapsed_s > 0.0 {
        100.0 * row.tool_cpu_s / elapsed_s
    } else {
        0.0
    };
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
