//! D: what users rely on beyond the spec text: queue and topic semantics, redelivery,
//! ordering.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{body, drain, subscriber};
use crate::{CaseResult, Ctx, Fail, check, pass};

/// Pipelines `n` SENDs numbered `0..n` with one receipt on the last.
async fn send_numbered(c: &mut crate::Conn, destination: &str, n: usize) -> Result<(), Fail> {
    let mut bytes = String::new();
    for i in 0..n {
        let receipt = if i + 1 == n { "receipt:last\n" } else { "" };
        bytes.push_str(&format!(
            "SEND\ndestination:{destination}\n{receipt}\n{i}\0"
        ));
    }
    c.send(bytes).await?;
    c.until_receipt("last").await.map(|_| ())
}

fn numbers(frames: &[crate::wire::Frame]) -> Vec<usize> {
    frames.iter().filter_map(|f| body(f).parse().ok()).collect()
}

pub async fn d1(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("d1");
    let mut a = subscriber(&ctx, "a", &q, "auto").await?;
    let mut b = subscriber(&ctx, "b", &q, "auto").await?;
    let mut p = ctx.connect().await?;
    send_numbered(&mut p, &q, 40).await?;
    let got_a = numbers(&drain(&mut a, ctx.opts.quiet).await?);
    let got_b = numbers(&drain(&mut b, ctx.opts.quiet).await?);
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for n in got_a.iter().chain(&got_b) {
        *seen.entry(*n).or_default() += 1;
    }
    let dup: Vec<_> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    let missing: Vec<_> = (0..40).filter(|n| !seen.contains_key(n)).collect();
    check(dup.is_empty() && missing.is_empty(), || {
        format!("duplicated {dup:?}, missing {missing:?}")
    })?;
    pass(format!(
        "40 messages: {} to one consumer, {} to the other, none twice",
        got_a.len(),
        got_b.len()
    ))
}

pub async fn d2(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("d2");
    let mut p = ctx.connect().await?;
    send_numbered(&mut p, &q, 3).await?;
    p.disconnect().await;
    let mut c = subscriber(&ctx, "1", &q, "auto").await?;
    let got = numbers(&c.messages(3).await?);
    check(got == [0, 1, 2], || format!("got {got:?}"))?;
    pass("3 messages sent before any consumer were all delivered to a later one")
}

pub async fn d3(ctx: Arc<Ctx>) -> CaseResult {
    let t = ctx.topic("d3");
    let mut subs = Vec::new();
    for i in 0..3 {
        subs.push(subscriber(&ctx, &format!("s{i}"), &t, "auto").await?);
    }
    let mut p = ctx.connect().await?;
    send_numbered(&mut p, &t, 5).await?;
    for (i, s) in subs.iter_mut().enumerate() {
        let got = numbers(
            &s.messages(5)
                .await
                .map_err(|e| e.context(&format!("subscriber {i}")))?,
        );
        check(got == [0, 1, 2, 3, 4], || {
            format!("subscriber {i} got {got:?}")
        })?;
    }
    pass("3 subscribers each got all 5 messages")
}

pub async fn d4(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("d4");
    let mut a = subscriber(&ctx, "a", &q, "client-individual").await?;
    let mut p = ctx.connect().await?;
    p.publish(&q, "unacked").await?;
    a.message().await?;
    drop(a); // no DISCONNECT, no ACK: the connection just goes
    let mut b = subscriber(&ctx, "b", &q, "client-individual").await?;
    let m = b
        .message()
        .await
        .map_err(|e| e.context("after the first consumer dropped"))?;
    check(body(&m) == "unacked", || format!("got {:?}", body(&m)))?;
    let marks: Vec<String> = ["redelivered", "redelivery-count", "message-id"]
        .iter()
        .filter_map(|h| m.header(h).map(|v| format!("{h}:{v}")))
        .collect();
    pass(format!(
        "redelivered to the next consumer ({})",
        marks.join(", ")
    ))
}

pub async fn d5(ctx: Arc<Ctx>) -> CaseResult {
    let n = 200;
    let q = ctx.queue("d5");
    let t = ctx.topic("d5");
    let mut c = ctx.connect().await?;
    c.subscribe("q", &q, "auto").await?;
    c.subscribe("t", &t, "auto").await?;
    let mut p = ctx.connect().await?;
    send_numbered(&mut p, &q, n).await?;
    send_numbered(&mut p, &t, n).await?;
    let frames = c.messages(2 * n).await?;
    for sub in ["q", "t"] {
        let got: Vec<usize> = numbers(
            &frames
                .iter()
                .filter(|f| f.header("subscription").as_deref() == Some(sub))
                .cloned()
                .collect::<Vec<_>>(),
        );
        check(got == (0..n).collect::<Vec<_>>(), || {
            let first_bad = got.iter().enumerate().find(|(i, v)| *i != **v);
            format!(
                "{sub}: out of order or missing at {first_bad:?} ({} received)",
                got.len()
            )
        })?;
    }
    pass(format!("{n} queue and {n} topic messages in send order"))
}

pub async fn d6(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.connect().await?;
    let t = ctx.topic("d6");
    let mut bytes = String::new();
    for i in 0..50 {
        bytes.push_str(&match i % 3 {
            0 => format!("SEND\ndestination:{t}\nreceipt:{i}\n\nx\0"),
            1 => format!("BEGIN\ntransaction:t{i}\nreceipt:{i}\n\n\0"),
            _ => format!("ABORT\ntransaction:t{}\nreceipt:{i}\n\n\0", i - 1),
        });
    }
    c.send(bytes).await?;
    let mut got = Vec::new();
    for _ in 0..50 {
        let r = c.expect("RECEIPT").await?;
        got.push(r.header("receipt-id").unwrap_or_default());
    }
    let want: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    check(got == want, || format!("receipts came back as {got:?}"))?;
    pass("50 pipelined SEND/BEGIN/ABORT receipts in order")
}
