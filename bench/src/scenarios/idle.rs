//! `idle`: K connections that CONNECT with `heart-beat:H,H`, subscribe to nothing and
//! send an EOL about every H ms (jittered). Broker RSS is sampled before opening and
//! 2 s after the last connection is up; the difference over K is the cost of an idle
//! connection. Sockets are spread over source addresses 127.0.0.1..127.0.0.N so that
//! 50,000 connections do not exhaust one address's ephemeral ports.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};

use super::{Ctx, Outcome, finish_row, goodbye};
use crate::cli::IdleArgs;
use crate::client::{self, Reader, Writer};
use crate::proc::{self, Sample};
use crate::report::Row;

pub async fn run(ctx: Arc<Ctx>, a: IdleArgs) -> anyhow::Result<Row> {
    let k = a.connections.max(1);
    let nofile = proc::raise_nofile();
    if (k as u64) + 64 > nofile {
        bail!(
            "--connections {k} needs about {} file descriptors but RLIMIT_NOFILE allows {nofile} \
             (hard limit); raise it (ulimit -Hn / limits.conf) or open fewer connections",
            k + 64
        );
    }
    let per_ip = a.per_source_ip.max(1);
    let sources = k.div_ceil(per_ip);
    if sources > 1 && !matches!(ctx.ep.addr.ip(), IpAddr::V4(_)) {
        bail!("more than {per_ip} connections need an IPv4 loopback --url (127.0.0.x sources)");
    }
    if sources > 250 {
        bail!("too many source addresses needed ({sources}); raise --per-source-ip");
    }
    if ctx.g.pid.is_none() {
        eprintln!("note: without --pid there is no broker RSS to report");
    }
    let hb = if ctx.g.raw { 0 } else { a.heartbeat_ms };
    eprintln!(
        "idle: {k} connections, heart-beat {hb} ms, over {sources} source address(es), hold {} s",
        a.hold_seconds
    );
    let rss_before = ctx.g.pid.map(proc::rss_kib).transpose()?;
    let before = Sample::take(ctx.g.pid)?;
    let t0 = Instant::now();
    let deadline = t0 + ctx.max_time();
    let opened = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));

    // Progress on stderr while connecting.
    let progress = {
        let opened = opened.clone();
        let stop = ctx.stop.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                let n = opened.load(Ordering::Relaxed);
                if n != last {
                    eprintln!("  {n}/{k} connected");
                    last = n;
                }
                if n as usize >= k {
                    break;
                }
            }
        })
    };

    let base_opts = {
        let mut o = ctx.opts();
        o.heartbeat_ms = hb;
        o.small = true;
        o
    };
    let mut errors = 0usize;
    let mut first_error = None;
    let mut connects = stream::iter(0..k)
        .map(|i| {
            let mut opts = base_opts.clone();
            if sources > 1 {
                opts.source_ip = Some(Ipv4Addr::new(127, 0, 0, 1 + (i / per_ip) as u8));
            }
            let ctx = ctx.clone();
            let opened = opened.clone();
            let dropped = dropped.clone();
            async move {
                let conn = client::open(&ctx.ep, &opts).await?;
                opened.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(hold(ctx, conn, hb, i as u64, dropped));
                anyhow::Ok(())
            }
        })
        .buffer_unordered(ctx.g.connect_concurrency.max(1));
    loop {
        let next = tokio::time::timeout_at(deadline.into(), connects.next()).await;
        match next {
            Err(_) => {
                ctx.fail(format!(
                    "time cap: only {} of {k} connections opened in {:.0} s",
                    opened.load(Ordering::Relaxed),
                    ctx.g.max_seconds
                ));
                break;
            }
            Ok(None) => break,
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => {
                errors += 1;
                if first_error.is_none() {
                    first_error = Some(format!("{e:#}"));
                }
                // A few refused connects are reported; many means the broker is full.
                if errors >= 16 {
                    break;
                }
            }
        }
        if ctx.stop.is_cancelled() {
            break;
        }
    }
    drop(connects);
    progress.abort();
    let n_open = opened.load(Ordering::Relaxed);
    if let Some(e) = first_error {
        ctx.fail(format!(
            "{errors} connection(s) failed ({n_open} of {k} open); first: {e}"
        ));
    }
    let connect_s = t0.elapsed().as_secs_f64();
    if ctx.failure().is_none() {
        eprintln!("  all {k} connected in {connect_s:.1} s; settling 2 s");
        settle(&ctx, Duration::from_secs(2)).await;
    }
    let rss_after = ctx.g.pid.map(proc::rss_kib).transpose()?;
    if ctx.failure().is_none() && a.hold_seconds > 0 {
        eprintln!("  holding {} s", a.hold_seconds);
        settle(&ctx, Duration::from_secs(a.hold_seconds)).await;
    }
    let after = Sample::take(ctx.g.pid)?;
    let total_s = t0.elapsed().as_secs_f64();
    ctx.stop.cancel();
    // Give the holders a moment to say goodbye.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctx.check().context("idle")?;

    let mut row = ctx.row(
        "idle",
        format!(
            "conns={k} hb={hb}ms hold={}s sources={sources}",
            a.hold_seconds
        ),
    );
    finish_row(
        &ctx,
        &mut row,
        before,
        after,
        total_s,
        0,
        0,
        Outcome::Complete,
    );
    row.msg_per_s = 0.0;
    row.msg_per_broker_cpu_s = None;
    row.connections = Some(n_open);
    row.connect_s = Some(connect_s);
    if let (Some(b), Some(a2)) = (rss_before, rss_after) {
        row.rss_before_kib = Some(b);
        row.kib_per_conn = Some((a2 as f64 - b as f64) / k as f64);
    }
    if row.kib_per_conn.is_some_and(|k| k < 0.5) {
        row.note = Some(
            "broker RSS hardly grew: its allocator probably reused memory freed by earlier \
             runs; measure idle on a freshly started broker"
                .into(),
        );
    }
    let d = dropped.load(Ordering::Relaxed);
    if d > 0 {
        row.note = Some(format!("{d} connections closed by the broker while idle"));
    }
    Ok(row)
}

/// Sleeps, returning early if the run stops.
async fn settle(ctx: &Ctx, d: Duration) {
    tokio::select! {
        _ = ctx.stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// xorshift64*: a jitter source per connection, no allocation, no crate.
fn next_rand(state: &mut u64) -> f64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}

/// One idle connection: answers the heart-beat contract, reads (and discards) broker
/// heart-beats, and fails the run on ERROR or close.
async fn hold(
    ctx: Arc<Ctx>,
    (mut r, mut w): (Reader, Writer),
    hb_ms: u64,
    seed: u64,
    dropped: Arc<AtomicU64>,
) {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let period = Duration::from_millis(hb_ms.max(1));
    // First beat somewhere in the first period, then every 75–95 % of it.
    let mut next = Instant::now() + period.mul_f64(0.1 + 0.8 * next_rand(&mut rng));
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            _ = tokio::time::sleep_until(next.into()), if hb_ms > 0 => {
                w.push_heartbeat();
                if let Err(e) = w.flush().await {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    ctx.fail(format!("idle connection write: {e:#}"));
                    return;
                }
                next = Instant::now() + period.mul_f64(0.75 + 0.2 * next_rand(&mut rng));
            }
            res = r.fill() => {
                let res = res.and_then(|open| {
                    r.drain(false, |_, _| true)?;
                    Ok(open)
                });
                match res {
                    Ok(true) => {}
                    Ok(false) => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        ctx.fail("idle connection closed by the broker");
                        return;
                    }
                    Err(e) => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        ctx.fail(format!("idle connection: {e:#}"));
                        return;
                    }
                }
            }
        }
    }
    goodbye(Some(r), w, ctx.g.raw).await;
}
