//! M: server frames; E: ERROR and closing.

use std::sync::Arc;

use super::{error_reply, subscriber};
use crate::conn::Event;
use crate::{CaseResult, Ctx, Fail, check, pass};

pub async fn m1(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("m1");
    let mut c = subscriber(&ctx, "sub-m1", &q, "auto").await?;
    c.send(format!(
        "SEND\ndestination:{q}\n\na\0SEND\ndestination:{q}\n\nb\0"
    ))
    .await?;
    let ms = c.messages(2).await?;
    for m in &ms {
        check(
            m.header("destination").as_deref() == Some(q.as_str()),
            || format!("destination {:?}, want {q}", m.header("destination")),
        )?;
        check(
            m.header("subscription").as_deref() == Some("sub-m1"),
            || format!("subscription {:?}, want sub-m1", m.header("subscription")),
        )?;
        check(m.header("message-id").is_some(), || {
            "MESSAGE without message-id".into()
        })?;
    }
    check(
        ms[0].header("message-id") != ms[1].header("message-id"),
        || {
            format!(
                "two messages share message-id {:?}",
                ms[0].header("message-id")
            )
        },
    )?;
    pass("destination, subscription and distinct message-ids present")
}

pub async fn m2(ctx: Arc<Ctx>) -> CaseResult {
    for mode in ["client", "client-individual"] {
        let q = ctx.queue(&format!("m2-{mode}"));
        let mut c = subscriber(&ctx, "1", &q, mode).await?;
        c.publish(&q, "x").await?;
        let m = c.message().await?;
        check(m.header("ack").is_some(), || {
            format!("{mode} MESSAGE has no ack header")
        })?;
    }
    pass("ack header present in client and client-individual modes")
}

pub async fn m3(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.connect().await?;
    c.send("BEGIN\ntransaction:t\nreceipt:m3-receipt\n\n\0")
        .await?;
    let r = c.expect("RECEIPT").await?;
    check(
        r.header("receipt-id").as_deref() == Some("m3-receipt"),
        || format!("receipt-id {:?}", r.header("receipt-id")),
    )?;
    pass("receipt-id:m3-receipt")
}

pub async fn e1(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.connect().await?;
    c.send("SEND\n\nno destination\0").await?;
    let (e, closed) = c.expect_error_and_close().await?;
    pass(format!("{} then {closed}", e.summary()))
}

pub async fn e1_message(ctx: Arc<Ctx>) -> CaseResult {
    let e = error_reply(&ctx, "SEND\n\nno destination\0").await?;
    let m = e.header("message");
    check(m.as_deref().is_some_and(|m| !m.is_empty()), || {
        "ERROR without a message header".into()
    })?;
    pass(format!("message:{}", m.unwrap_or_default()))
}

pub async fn e1_receipt(ctx: Arc<Ctx>) -> CaseResult {
    let e = error_reply(&ctx, "SEND\nreceipt:e1-receipt\n\nno destination\0").await?;
    check(
        e.header("receipt-id").as_deref() == Some("e1-receipt"),
        || {
            format!(
                "ERROR receipt-id is {:?}, want e1-receipt",
                e.header("receipt-id")
            )
        },
    )?;
    pass("receipt-id:e1-receipt")
}

pub async fn e2(ctx: Arc<Ctx>) -> CaseResult {
    // Clients that connect, send, disconnect and go, as fast as they can.
    let rounds = 30;
    for i in 0..rounds {
        let mut c = ctx.open().await?;
        let mut bytes = ctx.connect_frame("1.2", "").into_bytes();
        bytes.extend_from_slice(b"DISCONNECT\nreceipt:bye\n\n\0");
        c.send(&bytes).await?;
        c.expect("CONNECTED")
            .await
            .map_err(|e| e.context(&format!("round {i}")))?;
        let r = c
            .expect("RECEIPT")
            .await
            .map_err(|e| e.context(&format!("round {i}")))?;
        check(r.header("receipt-id").as_deref() == Some("bye"), || {
            format!("round {i}: {}", r.summary())
        })?;
    }
    // A bad frame followed by much more data: the ERROR must still arrive (a close
    // with unread input resets the connection and can destroy it).
    let mut c = ctx.connect().await?;
    let mut bytes = b"SEND\n\nno destination\0".to_vec();
    let junk = format!(
        "SEND\ndestination:{}\n\n{}\0",
        ctx.topic("e2"),
        "j".repeat(1000)
    );
    for _ in 0..256 {
        bytes.extend_from_slice(junk.as_bytes());
    }
    let _ = c.send(&bytes).await;
    match c.next_within(ctx.opts.wait).await? {
        Event::Frame(f) if f.is("ERROR") => {}
        other => {
            return Err(Fail::new(format!(
                "bad frame followed by 256 KB: expected ERROR, got {other:?}"
            )));
        }
    }
    pass(format!(
        "{rounds} connect+disconnect rounds each got CONNECTED and RECEIPT; ERROR arrived ahead of 256 KB of unread input"
    ))
}
