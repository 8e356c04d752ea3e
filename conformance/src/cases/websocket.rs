//! W: the WebSocket binding (RFC 6455 plus what browser clients need).

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;

use super::{body, subscriber};
use crate::conn::{Closed, Event, WsKind};
use crate::{CaseResult, Conn, Ctx, Fail, check, chose, pass};

pub async fn w1(ctx: Arc<Ctx>) -> CaseResult {
    let all = ["v12.stomp", "v11.stomp", "v10.stomp"];
    let (_, chosen) = ctx.open_ws(&all).await?;
    let chosen_all = chosen.clone().unwrap_or_default();
    check(all.contains(&chosen_all.as_str()), || {
        format!("offered {}, server answered {chosen:?}", all.join(", "))
    })?;
    let (_, chosen) = ctx.open_ws(&["v11.stomp"]).await?;
    check(chosen.as_deref() == Some("v11.stomp"), || {
        format!("offered only v11.stomp, server answered {chosen:?}")
    })?;
    let (_, chosen) = ctx
        .open_ws(&[])
        .await
        .map_err(|e| e.context("handshake offering no subprotocol"))?;
    check(chosen.is_none(), || {
        format!("offered none, server answered {chosen:?}")
    })?;
    pass(format!(
        "all three offered → {chosen_all}; v11.stomp alone → v11.stomp; none → no header"
    ))
}

pub async fn w1_highest(ctx: Arc<Ctx>) -> CaseResult {
    // Offered lowest first: the order of the offer must not pull the version down.
    let offer = ["v10.stomp", "v11.stomp", "v12.stomp"];
    let (_, chosen) = ctx.open_ws(&offer).await?;
    check(chosen.as_deref() == Some("v12.stomp"), || {
        format!("offered {}, server answered {chosen:?}", offer.join(", "))
    })?;
    pass("v12.stomp chosen from an offer listing it last")
}

pub async fn w2(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("w2");
    let mut c = subscriber(&ctx, "1", &q, "auto").await?;
    let frame = format!("SEND\ndestination:{q}\n\nsplit\0");
    let (a, rest) = frame.split_at(3);
    let (b, d) = rest.split_at(rest.len() - 3);
    for part in [a, b, d] {
        c.send_ws(Message::text(part)).await?;
    }
    let m = c.message().await?;
    check(body(&m) == "split", || {
        format!("frame in three messages arrived as {:?}", body(&m))
    })?;
    c.send_ws(Message::text(format!(
        "SEND\ndestination:{q}\n\none\0SEND\ndestination:{q}\n\ntwo\0"
    )))
    .await?;
    let got: Vec<String> = c.messages(2).await?.iter().map(body).collect();
    check(got == ["one", "two"], || {
        format!("two frames in one message arrived as {got:?}")
    })?;
    pass("a frame in three messages, and two frames in one message")
}

pub async fn w3(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("w3");
    let mut c = subscriber(&ctx, "1", &q, "auto").await?;
    c.send_ws(Message::text(format!("SEND\ndestination:{q}\n\nas-text\0")))
        .await?;
    c.send_ws(Message::binary(
        format!("SEND\ndestination:{q}\n\nas-binary\0").into_bytes(),
    ))
    .await?;
    let got: Vec<String> = c.messages(2).await?.iter().map(body).collect();
    check(got == ["as-text", "as-binary"], || format!("got {got:?}"))?;
    pass("a text and a binary message each carried a SEND")
}

pub async fn w3_type(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("w3t");
    let mut c = subscriber(&ctx, "1", &q, "auto").await?;
    c.publish(&q, "utf-8 text").await?;
    c.message().await?;
    let kinds: Vec<WsKind> = c.ws_messages.iter().map(|(k, _)| *k).collect();
    let text = kinds.iter().filter(|k| **k == WsKind::Text).count();
    let binary = kinds.len() - text;
    let choice = match (text, binary) {
        (_, 0) => "text",
        (0, _) => "binary",
        _ => "text and binary",
    };
    chose(
        choice,
        format!("{text} text and {binary} binary messages for CONNECTED, RECEIPTs and a MESSAGE"),
    )
}

/// One masked WebSocket frame written by hand.
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// Whether an ERROR came first, and the Close code the connection ended with.
async fn ending(c: &mut Conn) -> Result<(bool, Closed), Fail> {
    let mut error = false;
    loop {
        match c.next_within(c.wait).await {
            Ok(Event::Frame(f)) if f.is("ERROR") => error = true,
            Ok(Event::Frame(f)) => {
                return Err(Fail::new(format!(
                    "expected ERROR/Close, got {}",
                    f.summary()
                )));
            }
            Ok(Event::Closed(how)) => return Ok((error, how)),
            Ok(Event::Timeout) => return Err(Fail::new("connection stayed open")),
            // Bytes after the ERROR that are not STOMP: only the Close matters here.
            Err(e) => return Err(e),
        }
    }
}

pub async fn w4(ctx: Arc<Ctx>) -> CaseResult {
    let meaningful =
        |how: &Closed| matches!(how, Closed::WsClose(Some(1002 | 1007 | 1008 | 1009 | 1011)));
    // A text message that is not UTF-8: RFC 6455 §8.1 says fail the connection (1007).
    let mut c = ctx.connect().await?;
    c.send_raw_ws_bytes(&masked_frame(0x1, &[b'S', 0xc3, 0x28, 0xff]))
        .await?;
    let (error1, how1) = ending(&mut c)
        .await
        .map_err(|e| e.context("invalid UTF-8 in a text message"))?;
    // A STOMP protocol error over WebSocket.
    let mut c = ctx.connect().await?;
    c.send(format!(
        "SEND\ndestination:{}\nx-bad:a\\tb\n\nx\0",
        ctx.queue("w4")
    ))
    .await?;
    let (error2, how2) = ending(&mut c)
        .await
        .map_err(|e| e.context("bad STOMP escape"))?;
    let detail = format!(
        "invalid UTF-8 text: {}{how1}; STOMP error: {}{how2}",
        if error1 { "ERROR, then " } else { "" },
        if error2 { "ERROR, then " } else { "" }
    );
    check(meaningful(&how1) && meaningful(&how2) && error2, || {
        detail.clone()
    })?;
    pass(detail)
}

pub async fn w5(ctx: Arc<Ctx>) -> CaseResult {
    let mut results = Vec::new();
    for (protocol, want) in [("v10.stomp", "1.0"), ("v11.stomp", "1.1")] {
        let (mut c, chosen) = ctx.open_ws(&[protocol]).await?;
        check(chosen.as_deref() == Some(protocol), || {
            format!("offered {protocol}, got {chosen:?}")
        })?;
        c.send(ctx.connect_frame("1.0,1.1,1.2", "")).await?;
        let f = c
            .expect("CONNECTED")
            .await
            .map_err(|e| e.context(protocol))?;
        let v = f.header("version").unwrap_or_else(|| "1.0".into());
        check(v == want, || {
            format!("{protocol} with accept-version 1.0,1.1,1.2 negotiated {v}, want {want}")
        })?;
        results.push(format!("{protocol} → {v}"));
    }
    pass(results.join("; "))
}
