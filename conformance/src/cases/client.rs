//! S: client frames.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{ack_id, answer, body, drain, error_for, subscriber};
use crate::{CaseResult, Ctx, Fail, check, chose, pass};

pub async fn s1(ctx: Arc<Ctx>) -> CaseResult {
    let e = error_for(&ctx, "SEND\ncontent-type:text/plain\n\nnowhere\0").await?;
    pass(format!("{} then close", e.summary()))
}

pub async fn s2(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("s2");
    let mut c = subscriber(&ctx, "1", &q, "auto").await?;
    c.send(format!(
        "SEND\ndestination:{q}\nx-user-a:1\nx-user-b:two words\nmy-header:é\n\nx\0"
    ))
    .await?;
    let m = c.message().await?;
    for (k, v) in [
        ("x-user-a", "1"),
        ("x-user-b", "two words"),
        ("my-header", "é"),
    ] {
        check(m.header(k).as_deref() == Some(v), || {
            format!("{k} arrived as {:?}", m.header(k))
        })?;
    }
    pass("three user headers passed through")
}

pub async fn s3(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("s3");
    let mut c = subscriber(&ctx, "1", &q, "auto").await?;
    c.send(format!(
        "BEGIN\ntransaction:t1\n\n\0SEND\ndestination:{q}\ntransaction:t1\n\nin-t1\0"
    ))
    .await?;
    c.silence(ctx.opts.quiet, "a transactional SEND must wait for COMMIT")
        .await?;
    c.send("COMMIT\ntransaction:t1\nreceipt:c1\n\n\0").await?;
    let before = c.until_receipt("c1").await?;
    let got = if before.is_empty() {
        c.message().await?
    } else {
        c.frame().await?
    };
    check(body(&got) == "in-t1", || {
        format!("after COMMIT got body {:?}", body(&got))
    })?;
    c.send(format!(
        "BEGIN\ntransaction:t2\n\n\0SEND\ndestination:{q}\ntransaction:t2\n\nin-t2\0ABORT\ntransaction:t2\nreceipt:a2\n\n\0"
    ))
    .await?;
    c.until_receipt("a2").await?;
    c.silence(ctx.opts.quiet, "an aborted SEND must never arrive")
        .await?;
    pass("held until COMMIT; discarded on ABORT")
}

pub async fn s4(ctx: Arc<Ctx>) -> CaseResult {
    error_for(
        &ctx,
        &format!("SUBSCRIBE\ndestination:{}\n\n\0", ctx.queue("s4")),
    )
    .await
    .map_err(|e| e.context("SUBSCRIBE without id"))?;
    error_for(&ctx, "SUBSCRIBE\nid:1\n\n\0")
        .await
        .map_err(|e| e.context("SUBSCRIBE without destination"))?;
    pass("both got ERROR then close")
}

pub async fn s5(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = subscriber(&ctx, "dup", &ctx.queue("s5a"), "auto").await?;
    c.send(format!(
        "SUBSCRIBE\nid:dup\ndestination:{}\nreceipt:r\n\n\0",
        ctx.queue("s5b")
    ))
    .await?;
    let got = answer(&mut c, ctx.opts.wait).await?;
    check(got.starts_with("ERROR"), || {
        format!("second SUBSCRIBE id:dup got: {got}")
    })?;
    pass(got)
}

pub async fn s6(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.connect().await?;
    c.send(format!(
        "SUBSCRIBE\nid:1\ndestination:{}\nack:bogus\nreceipt:r\n\n\0",
        ctx.queue("s6")
    ))
    .await?;
    let got = answer(&mut c, ctx.opts.wait).await?;
    check(got.starts_with("ERROR"), || format!("ack:bogus got: {got}"))?;
    pass(got)
}

/// Publishes `n` numbered messages to `q`, subscribes in `mode`, receives them, acks
/// the given (0-based) ones, disconnects; returns what a new consumer then gets.
async fn ack_then_reconsume(
    ctx: &Ctx,
    q: &str,
    mode: &str,
    ack: &[usize],
) -> Result<BTreeSet<String>, Fail> {
    let mut p = ctx.connect().await?;
    for i in 0..3 {
        p.publish(q, &format!("m{i}")).await?;
    }
    let mut c = subscriber(ctx, "1", q, mode).await?;
    let ms = c.messages(3).await?;
    for &i in ack {
        let id = ack_id(&ms[i])?;
        c.send(format!("ACK\nid:{id}\nreceipt:ack{i}\n\n\0"))
            .await?;
        c.until_receipt(&format!("ack{i}")).await?;
    }
    c.disconnect().await;
    let mut again = subscriber(ctx, "2", q, "auto").await?;
    Ok(drain(&mut again, ctx.opts.quiet * 2)
        .await?
        .iter()
        .map(body)
        .collect())
}

pub async fn s7(ctx: Arc<Ctx>) -> CaseResult {
    let left = ack_then_reconsume(&ctx, &ctx.queue("s7c"), "client", &[2]).await?;
    check(left.is_empty(), || {
        format!(
            "client mode: ACK of the 3rd message left {left:?} unacked (ACK must be cumulative)"
        )
    })?;
    let left = ack_then_reconsume(&ctx, &ctx.queue("s7i"), "client-individual", &[1]).await?;
    let want: BTreeSet<String> = ["m0".to_string(), "m2".to_string()].into();
    check(left == want, || {
        format!("client-individual: after ACK of m1 a new consumer got {left:?}, want m0 and m2")
    })?;
    pass("client ACK acked all three; client-individual ACK acked only its own")
}

pub async fn s8(ctx: Arc<Ctx>) -> CaseResult {
    let t = ctx.topic("s8");
    let mut c = subscriber(&ctx, "s", &t, "auto").await?;
    c.send("UNSUBSCRIBE\nid:s\nreceipt:u\n\n\0").await?;
    c.until_receipt("u").await?;
    let mut p = ctx.connect().await?;
    p.publish(&t, "after").await?;
    c.silence(ctx.opts.quiet, "no MESSAGE after UNSUBSCRIBE")
        .await?;
    pass("nothing delivered after UNSUBSCRIBE")
}

pub async fn s8_unknown(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.connect().await?;
    c.send("UNSUBSCRIBE\nid:no-such-subscription\nreceipt:u\n\n\0")
        .await?;
    let got = answer(&mut c, ctx.opts.wait).await?;
    match got.as_str() {
        "ERROR + close" => chose("ERROR", got),
        // The close (or not) after an ERROR is E1's to judge.
        "ERROR (connection kept open)" => chose("ERROR, left open", got),
        "RECEIPT" => chose("RECEIPT (ignored)", got),
        _ => Err(Fail::new(format!(
            "UNSUBSCRIBE of an unknown id got: {got}"
        ))),
    }
}

pub async fn s9(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("s9");
    let mut c = subscriber(&ctx, "1", &q, "client-individual").await?;
    let mut p = ctx.connect().await?;
    p.publish(&q, "x").await?;
    let m = c.message().await?;
    let id = ack_id(&m)?;
    c.send(format!("ACK\nid:{id}\nreceipt:r\n\n\0")).await?;
    c.until_receipt("r").await?;
    pass(format!("ACK id:{id} accepted"))
}

pub async fn s9_unknown(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.connect().await?;
    c.send("ACK\nid:no-such-ack\nreceipt:r\n\n\0").await?;
    let unknown = answer(&mut c, ctx.opts.wait).await?;
    check(unknown.starts_with("ERROR"), || {
        format!("ACK of an unknown id got: {unknown}")
    })?;
    let q = ctx.queue("s9u");
    let mut c = subscriber(&ctx, "1", &q, "client-individual").await?;
    c.publish(&q, "x").await?;
    let m = c.message().await?;
    let id = ack_id(&m)?;
    c.send(format!("ACK\nid:{id}\nreceipt:r1\n\n\0")).await?;
    c.until_receipt("r1").await?;
    c.send(format!("ACK\nid:{id}\nreceipt:r2\n\n\0")).await?;
    let twice = answer(&mut c, ctx.opts.wait).await?;
    check(twice.starts_with("ERROR"), || {
        format!("second ACK of the same id got: {twice}")
    })?;
    pass(format!("unknown id: {unknown}; acked twice: {twice}"))
}

pub async fn s10(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("s10");
    let mut p = ctx.connect().await?;
    p.publish(&q, "n0").await?;
    p.publish(&q, "n1").await?;
    let mut c = subscriber(&ctx, "1", &q, "client").await?;
    let ms = c.messages(2).await?;
    let id = ack_id(&ms[1])?;
    c.send(format!("NACK\nid:{id}\nreceipt:n\n\n\0")).await?;
    c.until_receipt("n").await?;
    let again: Vec<String> = drain(&mut c, ctx.opts.quiet * 2)
        .await?
        .iter()
        .map(body)
        .collect();
    let redelivered = !again.is_empty();
    let mut d = subscriber(&ctx, "2", &q, "auto").await?;
    let later: Vec<String> = drain(&mut d, ctx.opts.quiet)
        .await?
        .iter()
        .map(body)
        .collect();
    let detail = format!(
        "after NACK of n1 (client mode): same subscriber got {again:?}, a new consumer {later:?}"
    );
    match (
        redelivered || !later.is_empty(),
        again.len().max(later.len()),
    ) {
        (true, 2) => chose("redelivers, cumulative", detail),
        (true, _) => chose("redelivers", detail),
        (false, _) => chose("drops or dead-letters", detail),
    }
}

pub async fn s11(ctx: Arc<Ctx>) -> CaseResult {
    let e = error_for(&ctx, "BEGIN\n\n\0").await?;
    pass(format!("{} then close", e.summary()))
}

pub async fn s11_dup(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.connect().await?;
    c.send("BEGIN\ntransaction:t\nreceipt:b1\n\n\0").await?;
    c.until_receipt("b1").await?;
    c.send("BEGIN\ntransaction:t\nreceipt:b2\n\n\0").await?;
    let got = answer(&mut c, ctx.opts.wait).await?;
    check(got.starts_with("ERROR"), || {
        format!("duplicate BEGIN got: {got}")
    })?;
    pass(got)
}

pub async fn s11_unknown(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.connect().await?;
    c.send("COMMIT\ntransaction:never-begun\nreceipt:c\n\n\0")
        .await?;
    let got = answer(&mut c, ctx.opts.wait).await?;
    check(got.starts_with("ERROR"), || {
        format!("COMMIT of an unknown transaction got: {got}")
    })?;
    pass(got)
}

pub async fn s11_abort(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("s11a");
    // Clean DISCONNECT with the transaction open.
    let mut c = ctx.connect().await?;
    c.send(format!(
        "BEGIN\ntransaction:t\n\n\0SEND\ndestination:{q}\ntransaction:t\n\nvia-disconnect\0"
    ))
    .await?;
    c.disconnect().await;
    // Connection dropped with the transaction open. The receipt that shows the SEND was
    // read rides on a frame of its own: a transactional SEND's receipt may wait for the
    // COMMIT (RabbitMQ sends it then), and here no COMMIT comes.
    let mut c = ctx.connect().await?;
    c.send(format!(
        "BEGIN\ntransaction:t\n\n\0SEND\ndestination:{q}\ntransaction:t\n\nvia-drop\0BEGIN\ntransaction:t2\nreceipt:s\n\n\0"
    ))
    .await?;
    c.until_receipt("s").await?;
    drop(c);
    let mut s = subscriber(&ctx, "1", &q, "auto").await?;
    s.silence(ctx.opts.quiet * 2, "an uncommitted SEND must be discarded")
        .await?;
    pass("nothing delivered after DISCONNECT or a dropped connection")
}

pub async fn s12(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("s12");
    let mut sub = subscriber(&ctx, "1", &q, "auto").await?;
    let mut c = ctx.connect().await?;
    c.send(format!(
        "DISCONNECT\nreceipt:bye\n\n\0SEND\ndestination:{q}\n\nafter-disconnect\0"
    ))
    .await?;
    let r = c.expect("RECEIPT").await?;
    check(r.header("receipt-id").as_deref() == Some("bye"), || {
        format!("receipt-id {:?}", r.header("receipt-id"))
    })?;
    let closed = c.closed_within(ctx.opts.wait).await?;
    sub.silence(ctx.opts.quiet, "a SEND after DISCONNECT must be ignored")
        .await?;
    pass(match closed {
        Some(how) => format!("RECEIPT, then the server closed ({how}); later SEND ignored"),
        None => "RECEIPT; server left the close to the client; later SEND ignored".into(),
    })
}

pub async fn s13(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("s13");
    let mut c = ctx.connect().await?;
    let frames = [
        format!("SUBSCRIBE\nid:1\ndestination:{q}\nack:client-individual\nreceipt:subscribe\n\n\0"),
        format!("SEND\ndestination:{q}\nreceipt:send\n\nx\0"),
        "BEGIN\ntransaction:t\nreceipt:begin\n\n\0".to_string(),
        "COMMIT\ntransaction:t\nreceipt:commit\n\n\0".to_string(),
        "BEGIN\ntransaction:t2\nreceipt:begin2\n\n\0".to_string(),
        "ABORT\ntransaction:t2\nreceipt:abort\n\n\0".to_string(),
    ];
    for f in &frames {
        let id = f
            .split("receipt:")
            .nth(1)
            .and_then(|s| s.split('\n').next())
            .unwrap_or_default();
        c.send(f).await?;
        c.until_receipt(id).await.map_err(|e| e.context(id))?;
    }
    let m = c.message().await?;
    let ack = ack_id(&m)?;
    c.send(format!("ACK\nid:{ack}\nreceipt:ack\n\n\0")).await?;
    c.until_receipt("ack").await?;
    c.send("UNSUBSCRIBE\nid:1\nreceipt:unsubscribe\n\n\0")
        .await?;
    c.until_receipt("unsubscribe").await?;
    pass("SUBSCRIBE, SEND, BEGIN, COMMIT, ABORT, ACK, UNSUBSCRIBE all answered")
}

pub async fn s13_order(ctx: Arc<Ctx>) -> CaseResult {
    let t = ctx.topic("s13o");
    let mut c = subscriber(&ctx, "1", &t, "auto").await?;
    c.send(format!("SEND\ndestination:{t}\nreceipt:r\n\nx\0"))
        .await?;
    let first = c.frame().await?;
    check(first.is("MESSAGE"), || {
        format!(
            "{} arrived before the MESSAGE the SEND caused",
            first.summary()
        )
    })?;
    c.expect("RECEIPT").await?;
    pass("MESSAGE, then RECEIPT")
}

pub async fn s14(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.connect().await?;
    c.send("FROB\nreceipt:f\n\n\0").await?;
    let got = answer(&mut c, ctx.opts.wait).await?;
    match got.as_str() {
        "ERROR + close" => chose("ERROR + close", got),
        // The close (or not) after an ERROR is E1's to judge.
        "ERROR (connection kept open)" => chose("ERROR, left open", got),
        "no answer" | "RECEIPT" => chose("ignored", got),
        _ => Err(Fail::new(format!("unknown command got: {got}"))),
    }
}
