//! `queue`: P producers share M messages to one queue; C consumers (subscribed first,
//! with a high `prefetch-count`) consume them, acknowledging per the ack mode. Queues
//! must not lose messages: anything missing at the end is reported as loss.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::BufMut;

use super::{
    Ctx, PubPlan, PubStats, RxStats, SendFrame, Stamp, check_progress, elapsed, finish_row,
    goodbye, open_many, publish, rand_tag, wait_for,
};
use crate::cli::{AckMode, QueueArgs};
use crate::client::{Reader, Writer};
use crate::proc::Sample;
use crate::report::Row;
use crate::scan::Cmd;

pub async fn run(ctx: Arc<Ctx>, a: QueueArgs) -> anyhow::Result<Row> {
    if ctx.g.raw {
        bail!("queue has no --raw variant (a relay has no queues)");
    }
    let count = ctx.messages(100_000);
    let (p, c) = (a.producers.max(1), a.consumers.max(1));
    let dest = format!("/queue/bench-{}", rand_tag());
    eprintln!(
        "queue: {p} producers, {c} consumers (ack {}) on {dest}, {count} messages of {} bytes",
        a.ack.as_str(),
        a.size
    );
    let consumers = open_many(
        &ctx,
        c,
        "consumer",
        Some((
            dest.clone(),
            vec![
                ("ack", a.ack.as_str().to_string()),
                ("prefetch-count", a.prefetch.to_string()),
                ("activemq.prefetchSize", a.prefetch.to_string()),
            ],
        )),
    )
    .await?;
    let producers = open_many(&ctx, p, "producer", None).await?;
    let extra: &[(&str, &str)] = if a.persistent {
        &[("persistent", "true")]
    } else {
        &[]
    };
    let frame = Arc::new(SendFrame::new(&dest, a.size, extra));
    let rx = Arc::new(RxStats::default());
    let receivers: Vec<_> = consumers
        .into_iter()
        .map(|conn| {
            tokio::spawn(consume(
                ctx.clone(),
                conn,
                a.ack,
                a.ack_every.max(1),
                rx.clone(),
            ))
        })
        .collect();

    let before = Sample::take(ctx.g.pid)?;
    let t0 = ctx.now_ns();
    let deadline = Instant::now() + ctx.max_time();
    let mut pubs = Vec::new();
    for (i, conn) in producers.into_iter().enumerate() {
        let share = count / p as u64 + u64::from((i as u64) < count % p as u64);
        let stats = Arc::new(PubStats::default());
        pubs.push(stats.clone());
        tokio::spawn(publish(
            ctx.clone(),
            conn,
            frame.clone(),
            PubPlan {
                count: share,
                rate: None,
                stamp: Stamp::None,
                deadline,
                raw_flow: None,
            },
            stats,
        ));
    }
    // Queues keep messages: only the time cap (or a long silence) ends an incomplete run.
    let outcome = wait_for(&ctx, &rx, count, deadline, &pubs, Duration::from_secs(5)).await;
    let after = Sample::take(ctx.g.pid)?;
    let elapsed_s = elapsed(&ctx, t0, &rx);
    ctx.stop.cancel();
    for h in receivers {
        let _ = h.await;
    }
    ctx.check()?;
    let delivered = rx.received.load(Ordering::Acquire);
    check_progress(outcome, delivered)?;
    let sent: u64 = pubs.iter().map(|s| s.sent.load(Ordering::Acquire)).sum();
    let mut row = ctx.row(
        "queue",
        format!(
            "prod={p} cons={c} ack={}{} size={} msgs={count} prefetch={}",
            a.ack.as_str(),
            if a.persistent { " persistent" } else { "" },
            a.size,
            a.prefetch
        ),
    );
    row.sent = sent;
    finish_row(
        &ctx, &mut row, before, after, elapsed_s, delivered, count, outcome,
    );
    if delivered < sent {
        row.note = Some(format!(
            "QUEUE LOSS: {} of {sent} sent messages were not consumed ({})",
            sent - delivered,
            outcome.as_str()
        ));
    } else if delivered > count {
        row.note = Some(format!("{} duplicate deliveries", delivered - count));
    }
    Ok(row)
}

/// A consumer: counts MESSAGE frames; ACKs each (client-individual) or every
/// `ack_every`-th cumulatively (client). ACKs found in one read are written together.
async fn consume(
    ctx: Arc<Ctx>,
    (mut r, mut w): (Reader, Writer),
    ack: AckMode,
    ack_every: u64,
    rx: Arc<RxStats>,
) {
    let want_ack = ack != AckMode::Auto;
    let mut got = 0u64;
    // The last ack id seen but not yet acknowledged (client mode), reused buffer.
    let mut last_ack: Vec<u8> = Vec::with_capacity(64);
    let mut unacked = false;
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            res = r.fill() => match res {
                Ok(true) => {}
                Ok(false) => { ctx.fail("consumer: broker closed the connection"); break }
                Err(e) => { ctx.fail(format!("consumer read: {e:#}")); break }
            }
        }
        let now = ctx.now_ns();
        let mut n = 0u64;
        let mut missing_ack = false;
        let res = r.drain(want_ack, |f, buf| {
            if f.cmd != Cmd::Message {
                return true;
            }
            n += 1;
            if want_ack {
                let Some(id) = f.ack.clone() else {
                    missing_ack = true;
                    return true;
                };
                let id = &buf[id];
                match ack {
                    AckMode::ClientIndividual => push_ack(&mut w, id),
                    AckMode::Client => {
                        if (got + n) % ack_every == 0 {
                            push_ack(&mut w, id);
                            unacked = false;
                        } else {
                            last_ack.clear();
                            last_ack.extend_from_slice(id);
                            unacked = true;
                        }
                    }
                    AckMode::Auto => {}
                }
            }
            true
        });
        if let Err(e) = res {
            ctx.fail(format!("consumer: {e:#}"));
            break;
        }
        if missing_ack {
            ctx.fail("consumer: MESSAGE without an ack header in a client ack mode");
            break;
        }
        if !w.is_empty() {
            if let Err(e) = w.flush().await {
                ctx.fail(format!("consumer write: {e:#}"));
                break;
            }
        }
        if n > 0 {
            got += n;
            rx.received.fetch_add(n, Ordering::AcqRel);
            rx.last_rx_ns.fetch_max(now, Ordering::AcqRel);
        }
    }
    // Settle the tail so the broker does not redeliver it after we leave.
    if unacked {
        push_ack(&mut w, &last_ack);
    }
    goodbye(Some(r), w, false).await;
}

#[inline]
fn push_ack(w: &mut Writer, id: &[u8]) {
    w.frame(|s| {
        s.put_slice(b"ACK\nid:");
        s.put_slice(id);
        s.put_slice(b"\n\n\0");
    });
}
