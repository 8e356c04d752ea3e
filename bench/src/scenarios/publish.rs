//! Publishing: the SEND frame encoded once, and the windowed publisher.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Semaphore;

use super::{Ctx, RAW_STALL, RxStats};
use crate::client::{Reader, Writer};
use crate::scan::Cmd;

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
    /// What to patch into the first 16 body bytes.
    pub stamp: Stamp,
    pub deadline: Instant,
    /// Raw mode flow control: stay at most `window x receipt_every` messages ahead of
    /// the slowest subscriber's highest received sequence number.
    pub raw_flow: Option<Arc<RxStats>>,
}

/// The first 16 body bytes of each SEND.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// The shared pre-encoded frame, unpatched.
    None,
    /// Send time, ns since `Ctx::base` (latency).
    Time,
    /// Message sequence number (raw-mode flow control).
    Seq,
}

/// Publishes `plan.count` messages on one connection: batches of `receipt_every`
/// frames written per flush, the last of each batch asking for a receipt, at most
/// `window` receipts outstanding. A task reads the receipts. In raw mode there are no
/// receipts: with `raw_flow`, each body carries its sequence number and the publisher
/// stays at most `window x receipt_every` messages ahead of the slowest subscriber.
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
        if let Some(rx) = &plan.raw_flow {
            let ahead = (ctx.g.window.max(1) as u64) * every;
            let mut waited = Duration::ZERO;
            while i >= rx.min_seq().saturating_add(ahead) && waited < RAW_STALL {
                w.flush().await?;
                let t = Instant::now();
                tokio::select! {
                    _ = ctx.stop.cancelled() => return Ok(()),
                    _ = rx.progress.notified() => {}
                    _ = tokio::time::sleep(RAW_STALL) => {}
                }
                waited += t.elapsed();
            }
        }
        let ts = (plan.stamp == Stamp::Time).then(|| stamp(ctx.now_ns()));
        for j in i..i + n {
            let seq = (plan.stamp == Stamp::Seq).then(|| stamp(j));
            let ts = ts.as_ref().or(seq.as_ref());
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
            frame.push(&mut w, wants_receipt.then_some(j), ts);
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
