//! `latency`: one publisher at a fixed rate, one topic subscriber. Each body starts
//! with the send time (ns since the run's base `Instant`, 16 hex digits, stamped just
//! before the batch is written); the subscriber records receive − send in an
//! HdrHistogram.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;

use super::fanout::{Track, loss_note, receive};
use super::{
    Ctx, PubPlan, PubStats, RxStats, STAMP_LEN, SendFrame, Stamp, check_progress, elapsed,
    finish_row, open_many, publish, rand_tag, wait_for,
};
use crate::cli::LatencyArgs;
use crate::proc::Sample;
use crate::report::Row;

pub async fn run(ctx: Arc<Ctx>, a: LatencyArgs) -> anyhow::Result<Row> {
    if a.size < STAMP_LEN {
        bail!("--size must be at least {STAMP_LEN} (the timestamp)");
    }
    if a.rate == 0 {
        bail!("--rate must be positive");
    }
    let count = ctx.messages(a.rate * a.seconds);
    if a.seconds as f64 + 2.0 > ctx.g.max_seconds {
        eprintln!(
            "note: --max-seconds {} caps the run below --seconds {} + drain",
            ctx.g.max_seconds, a.seconds
        );
    }
    let dest = format!("/topic/bench-lat-{}", rand_tag());
    eprintln!(
        "latency: {count} messages at {} msg/s of {} bytes on {dest}",
        a.rate, a.size
    );
    let sub = open_many(
        &ctx,
        1,
        "subscriber",
        Some((dest.clone(), vec![("ack", "auto".to_string())])),
    )
    .await?
    .pop()
    .unwrap();
    let publisher = open_many(&ctx, 1, "publisher", None).await?.pop().unwrap();
    if ctx.g.raw {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let frame = Arc::new(SendFrame::new(&dest, a.size, &[]));
    let rx = Arc::new(RxStats::default());
    // 1 ns .. 60 s, 3 significant digits.
    let hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let receiver = tokio::spawn(receive(
        ctx.clone(),
        sub,
        count,
        rx.clone(),
        Track::Latency(hist),
    ));

    let before = Sample::take(ctx.g.pid)?;
    let t0 = ctx.now_ns();
    let deadline = Instant::now() + ctx.max_time();
    let stats = Arc::new(PubStats::default());
    tokio::spawn(publish(
        ctx.clone(),
        publisher,
        frame,
        PubPlan {
            count,
            rate: Some(a.rate as f64),
            stamp: Stamp::Time,
            deadline,
            raw_flow: None,
        },
        stats.clone(),
    ));
    let outcome = wait_for(
        &ctx,
        &rx,
        count,
        deadline,
        std::slice::from_ref(&stats),
        Duration::from_secs(1),
    )
    .await;
    let after = Sample::take(ctx.g.pid)?;
    let elapsed_s = elapsed(&ctx, t0, &rx);
    ctx.stop.cancel();
    let hist = receiver.await.ok().flatten();
    ctx.check()?;
    let delivered = rx.received.load(Ordering::Acquire);
    check_progress(outcome, delivered)?;
    let sent = stats.sent.load(Ordering::Acquire);
    let mut row = ctx.row(
        "latency",
        format!("rate={} secs={} size={}", a.rate, a.seconds, a.size),
    );
    row.sent = sent;
    finish_row(
        &ctx, &mut row, before, after, elapsed_s, delivered, count, outcome,
    );
    if let Some(h) = hist.filter(|h| !h.is_empty()) {
        let us = |ns: u64| ns as f64 / 1000.0;
        row.p50_us = Some(us(h.value_at_quantile(0.50)));
        row.p99_us = Some(us(h.value_at_quantile(0.99)));
        row.p999_us = Some(us(h.value_at_quantile(0.999)));
        row.max_us = Some(us(h.max()));
        row.mean_us = Some(h.mean() / 1000.0);
    }
    row.note = loss_note(outcome, count.saturating_sub(delivered));
    if sent < count {
        row.note = Some(format!(
            "publisher sent only {sent} of {count} (window or time cap){}",
            row.note.map(|n| format!("; {n}")).unwrap_or_default()
        ));
    }
    if a.rate > 2000 {
        // tokio timers tick per millisecond: each tick writes the messages due together.
        let burst = format!(
            "paced in 1 ms ticks: ~{} messages written together per tick, latencies include that burst",
            a.rate / 1000
        );
        row.note = Some(match row.note {
            Some(n) => format!("{n}; {burst}"),
            None => burst,
        });
    }
    Ok(row)
}
