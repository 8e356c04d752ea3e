//! `fanout`: N topic subscribers, one publisher. Delivered msg/s counts every MESSAGE
//! received by every subscriber, from the first send to the last delivery.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::{
    Ctx, Outcome, PubPlan, PubStats, RxStats, SendFrame, Stamp, check_progress, elapsed,
    finish_row, goodbye, open_many, publish, rand_tag, unstamp, wait_for,
};
use crate::cli::FanoutArgs;
use crate::client::{Reader, Writer};
use crate::proc::Sample;
use crate::report::Row;
use crate::scan::Cmd;

pub async fn run(ctx: Arc<Ctx>, a: FanoutArgs) -> anyhow::Result<Row> {
    if ctx.g.raw && a.size < super::STAMP_LEN {
        anyhow::bail!(
            "--raw fanout needs --size of at least {} (a sequence number)",
            super::STAMP_LEN
        );
    }
    let count = ctx.messages(100_000);
    let n = a.subscribers.max(1);
    let dest = format!("/topic/bench-{}", rand_tag());
    eprintln!(
        "fanout: {n} subscribers on {dest}, {count} messages of {} bytes",
        a.size
    );
    let subs = open_many(
        &ctx,
        n,
        "subscriber",
        Some((dest.clone(), vec![("ack", "auto".to_string())])),
    )
    .await?;
    let publisher = open_many(&ctx, 1, "publisher", None).await?.pop().unwrap();
    if ctx.g.raw {
        // No receipts: give the relay time to register the subscribers.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let frame = Arc::new(SendFrame::new(&dest, a.size, &[]));
    let rx = Arc::new(RxStats::with_slots(if ctx.g.raw { n } else { 0 }));
    let receivers: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let track = if ctx.g.raw {
                Track::Seq(i)
            } else {
                Track::Count
            };
            tokio::spawn(receive(ctx.clone(), c, count, rx.clone(), track))
        })
        .collect();

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
            rate: None,
            stamp: if ctx.g.raw { Stamp::Seq } else { Stamp::None },
            deadline,
            raw_flow: ctx.g.raw.then(|| rx.clone()),
        },
        stats.clone(),
    ));
    let expected = count * n as u64;
    let outcome = wait_for(
        &ctx,
        &rx,
        expected,
        deadline,
        std::slice::from_ref(&stats),
        Duration::from_secs(1),
    )
    .await;
    let after = Sample::take(ctx.g.pid)?;
    let elapsed_s = elapsed(&ctx, t0, &rx);
    ctx.stop.cancel();
    for h in receivers {
        let _ = h.await;
    }
    ctx.check()?;
    let delivered = rx.received.load(Ordering::Acquire);
    check_progress(outcome, delivered)?;
    let mut row = ctx.row("fanout", format!("subs={n} size={} msgs={count}", a.size));
    row.sent = stats.sent.load(Ordering::Acquire);
    finish_row(
        &ctx, &mut row, before, after, elapsed_s, delivered, expected, outcome,
    );
    row.note = loss_note(outcome, row.loss);
    Ok(row)
}

/// What a receiver records besides the count.
pub enum Track {
    Count,
    /// Receive − send time of each message.
    Latency(Histogram<u64>),
    /// The highest sequence number, in this slot (raw-mode flow control).
    Seq(usize),
}

/// A receiving connection: counts MESSAGE frames (and SEND frames, in raw mode) until
/// `expected` arrived or the run stops; with a histogram, records the latency of each.
pub async fn receive(
    ctx: Arc<Ctx>,
    (mut r, w): (Reader, Writer),
    expected: u64,
    rx: Arc<RxStats>,
    track: Track,
) -> Option<Histogram<u64>> {
    let (mut hist, seq) = match track {
        Track::Count => (None, None),
        Track::Latency(h) => (Some(h), None),
        Track::Seq(slot) => (None, Some(slot)),
    };
    let mut got = 0u64;
    let mut bad_stamps = 0u64;
    while got < expected {
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            res = r.fill() => match res {
                Ok(true) => {}
                Ok(false) => { ctx.fail("subscriber: broker closed the connection"); break }
                Err(e) => { ctx.fail(format!("subscriber read: {e:#}")); break }
            }
        }
        let now = ctx.now_ns();
        let mut n = 0u64;
        let mut max_seq = 0u64;
        let res = r.drain(false, |f, buf| {
            if matches!(f.cmd, Cmd::Message | Cmd::Send) {
                n += 1;
                if seq.is_some() {
                    match unstamp(&buf[f.body.clone()]) {
                        Some(s) => max_seq = max_seq.max(s + 1),
                        None => bad_stamps += 1,
                    }
                }
                if let Some(h) = hist.as_mut() {
                    match unstamp(&buf[f.body.clone()]) {
                        Some(sent) => h.saturating_record(now.saturating_sub(sent).max(1)),
                        None => bad_stamps += 1,
                    }
                }
            }
            true
        });
        if let Err(e) = res {
            ctx.fail(format!("subscriber: {e:#}"));
            break;
        }
        if n > 0 {
            got += n;
            rx.received.fetch_add(n, Ordering::AcqRel);
            rx.last_rx_ns.fetch_max(now, Ordering::AcqRel);
            if let Some(slot) = seq {
                if rx.seqs[slot].fetch_max(max_seq, Ordering::AcqRel) < max_seq {
                    rx.progress.notify_one();
                }
            }
        }
    }
    if bad_stamps > 0 {
        eprintln!("warning: {bad_stamps} messages without a readable timestamp");
    }
    if got >= expected {
        // Done: wait for the others before closing.
        ctx.stop.cancelled().await;
    }
    goodbye(Some(r), w, ctx.g.raw).await;
    hist
}

/// Outcome-independent sanity note for topic loss.
pub fn loss_note(outcome: Outcome, loss: u64) -> Option<String> {
    (loss > 0).then(|| {
        format!(
            "{loss} deliveries missing ({}): topics may drop for slow subscribers",
            outcome.as_str()
        )
    })
}
