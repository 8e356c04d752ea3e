//! F: frames and header encoding; B: bodies and content-length.

use std::sync::Arc;

use super::{after_error, answer, body, error_for, error_reply, subscriber};
use crate::conn::Event;
use crate::{CaseResult, Ctx, Fail, check, chose, pass};

pub async fn f1(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.open().await?;
    c.send(ctx.connect_frame("1.2", "").replace('\n', "\r\n"))
        .await?;
    let f = c.frame().await?;
    check(f.is("CONNECTED"), || {
        format!("CRLF CONNECT got {}", f.summary())
    })?;
    let q = ctx.queue("f1");
    c.send(format!(
        "SUBSCRIBE\r\nid:1\r\ndestination:{q}\r\nreceipt:r1\r\n\r\n\0"
    ))
    .await?;
    c.until_receipt("r1").await?;
    c.send(format!(
        "SEND\r\ndestination:{q}\r\ncontent-type:text/plain\r\n\r\nhello\0"
    ))
    .await?;
    let m = c.message().await?;
    check(body(&m) == "hello", || format!("body {:?}", body(&m)))?;
    pass("CONNECT, SUBSCRIBE and SEND written with CRLF were understood")
}

pub async fn f2(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("f2");
    let mut sub = subscriber(&ctx, "1", &q, "auto").await?;
    let mut c = ctx.connect().await?;
    c.send(format!("send\ndestination:{q}\nreceipt:r\n\nlower\0"))
        .await?;
    let got = answer(&mut c, ctx.opts.wait).await?;
    sub.silence(
        ctx.opts.quiet,
        "a lower-case `send` must not be taken as SEND",
    )
    .await?;
    pass(format!("`send` got: {got}; nothing delivered"))
}

pub async fn f3(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("f3");
    let mut c = subscriber(&ctx, "1", &q, "auto").await?;
    c.send(format!(
        "SEND\ndestination:{q}\n\none\0\n\n\r\n\nSEND\ndestination:{q}\n\ntwo\0\n"
    ))
    .await?;
    let got: Vec<String> = c.messages(2).await?.iter().map(body).collect();
    check(got == ["one", "two"], || format!("bodies {got:?}"))?;
    pass("two SENDs separated by EOLs gave two messages")
}

pub async fn f4(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("f4");
    let mut c = subscriber(&ctx, "1", &q, "auto").await?;
    c.send(format!(
        "SEND\ndestination:{q}\nx-esc:a\\cb\\\\c\\nd\\re\n\nx\0"
    ))
    .await?;
    let m = c.message().await?;
    let decoded = m.header("x-esc");
    check(decoded.as_deref() == Some("a:b\\c\nd\re"), || {
        format!("x-esc decoded to {decoded:?}, want \"a:b\\\\c\\nd\\re\"")
    })?;
    let raw = m
        .raw_header("x-esc")
        .map(|r| String::from_utf8_lossy(r).into_owned());
    check(raw.as_deref() == Some("a\\cb\\\\c\\nd\\re"), || {
        format!("MESSAGE carries x-esc as {raw:?} on the wire, want a\\cb\\\\c\\nd\\re")
    })?;
    pass("\\c \\\\ \\n \\r decoded, and re-encoded on MESSAGE")
}

pub async fn f4_connect(ctx: Arc<Ctx>) -> CaseResult {
    // `\t` would be an undefined escape anywhere else; in CONNECT it is two literal bytes.
    let mut c = ctx.open().await?;
    c.send(ctx.connect_frame("1.2", "x-literal:p\\cw\\t\\\n"))
        .await?;
    let f = c.frame().await?;
    check(f.is("CONNECTED"), || {
        format!(
            "CONNECT with header value p\\cw\\t\\ got {} (it was unescaped)",
            f.summary()
        )
    })?;
    pass("a CONNECT value p\\cw\\t\\ was accepted as literal bytes")
}

pub async fn f5(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("f5");
    let tab = error_for(&ctx, &format!("SEND\ndestination:{q}\nx-bad:a\\tb\n\nx\0"))
        .await
        .map_err(|e| e.context("SEND with x-bad:a\\tb"))?;
    error_for(&ctx, &format!("SEND\ndestination:{q}\nx-bad:ab\\\n\nx\0"))
        .await
        .map_err(|e| e.context("SEND with a trailing backslash"))?;
    pass(format!("both got ERROR then close ({})", tab.summary()))
}

pub async fn f6(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("f6");
    let mut c = ctx.connect().await?;
    c.send(format!(
        "SUBSCRIBE\nid:1\ndestination:{q}\nreceipt:r\\c1\\\\2\n\n\0"
    ))
    .await?;
    let r = c.expect("RECEIPT").await?;
    let raw = r
        .raw_header("receipt-id")
        .map(|v| String::from_utf8_lossy(v).into_owned());
    check(raw.as_deref() == Some("r\\c1\\\\2"), || {
        format!("RECEIPT for receipt r\\c1\\\\2 carries receipt-id {raw:?} on the wire")
    })?;
    c.send(format!("SEND\ndestination:{q}\nx-nl:line1\\nline2\n\nx\0"))
        .await?;
    let m = c.message().await?;
    let raw = m
        .raw_header("x-nl")
        .map(|v| String::from_utf8_lossy(v).into_owned());
    check(raw.as_deref() == Some("line1\\nline2"), || {
        format!("MESSAGE carries x-nl as {raw:?}, want line1\\nline2")
    })?;
    pass("receipt-id and MESSAGE headers escaped on the way out")
}

pub async fn f7(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("f7");
    let mut c = subscriber(&ctx, "1", &q, "auto").await?;
    c.send(format!(
        "SEND\ndestination:{q}\nx-pad: bar \nx-tabs:\tv\t\n\nx\0"
    ))
    .await?;
    let m = c.message().await?;
    check(m.header("x-pad").as_deref() == Some(" bar "), || {
        format!("x-pad: bar  arrived as {:?}", m.header("x-pad"))
    })?;
    check(m.header("x-tabs").as_deref() == Some("\tv\t"), || {
        format!("x-tabs arrived as {:?}", m.header("x-tabs"))
    })?;
    pass("spaces and tabs around values kept")
}

pub async fn f8(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("f8");
    let mut c = ctx.connect().await?;
    c.send(format!(
        "SUBSCRIBE\nid:1\ndestination:{q}\nreceipt:r\n\nbody\0"
    ))
    .await?;
    let got = answer(&mut c, ctx.opts.wait).await?;
    check(got == "ERROR + close", || {
        format!("SUBSCRIBE with a body got: {got}")
    })?;
    pass("ERROR then close")
}

/// Sends a frame far over any sane limit, in chunks so a broker that stops reading
/// does not block the write forever; returns what came back.
async fn oversized(ctx: &Ctx, head: String, filler: usize, tail: &str) -> Result<String, Fail> {
    let mut c = ctx.connect().await?;
    c.send(head).await?;
    let chunk = vec![b'a'; 64 * 1024];
    let mut left = filler;
    while left > 0 {
        let n = left.min(chunk.len());
        if c.send(&chunk[..n]).await.is_err() {
            break;
        }
        left -= n;
        if let Event::Frame(f) = c.next_within(std::time::Duration::ZERO).await? {
            return finish(&mut c, f).await;
        }
    }
    let _ = c.send(tail).await;
    match c.next_within(ctx.opts.wait).await? {
        Event::Frame(f) => finish(&mut c, f).await,
        Event::Closed(e) => Ok(format!("closed without ERROR ({e})")),
        Event::Timeout => Ok("no answer".into()),
    }
}

async fn finish(c: &mut crate::Conn, f: crate::wire::Frame) -> Result<String, Fail> {
    if f.is("ERROR") {
        return after_error(c).await;
    }
    Ok(format!("accepted ({})", f.command))
}

pub async fn f9(ctx: Arc<Ctx>) -> CaseResult {
    // To a topic nobody listens on: a broker that accepts stores nothing.
    let t = ctx.topic("f9");
    let headers: String = (0..10_000).map(|i| format!("x-h{i}:v\n")).collect();
    let count = oversized(
        &ctx,
        format!("SEND\ndestination:{t}\nreceipt:r\n{headers}\n"),
        0,
        "x\0",
    )
    .await?;
    let line = oversized(
        &ctx,
        format!("SEND\ndestination:{t}\nreceipt:r\nx-long:"),
        1 << 20,
        "\n\nx\0",
    )
    .await?;
    let body = oversized(
        &ctx,
        format!(
            "SEND\ndestination:{t}\nreceipt:r\ncontent-length:{}\n\n",
            64 << 20
        ),
        64 << 20,
        "\0",
    )
    .await?;
    let detail = format!("10,000 headers: {count}; 1 MiB header line: {line}; 64 MiB body: {body}");
    let results = [&count, &line, &body];
    check(
        results
            .iter()
            .all(|r| *r == "ERROR + close" || r.starts_with("accepted")),
        || detail.clone(),
    )?;
    if results.iter().all(|r| r.starts_with("accepted")) {
        return chose("no limit hit", detail);
    }
    pass(detail)
}

pub async fn f10(ctx: Arc<Ctx>) -> CaseResult {
    let (qa, qb) = (ctx.queue("f10a"), ctx.queue("f10b"));
    let mut c = ctx.connect().await?;
    c.subscribe("a", &qa, "auto").await?;
    c.subscribe("b", &qb, "auto").await?;
    c.send(format!(
        "SEND\ndestination:{qa}\ndestination:{qb}\nx-r:1\nx-r:2\n\nx\0"
    ))
    .await?;
    let m = c.message().await?;
    check(m.header("subscription").as_deref() == Some("a"), || {
        format!(
            "delivered to {:?}, the second destination",
            m.header("destination")
        )
    })?;
    check(m.header("x-r").as_deref() == Some("1"), || {
        format!("x-r is {:?}, want the first value 1", m.header("x-r"))
    })?;
    c.silence(ctx.opts.quiet, "one message expected").await?;
    pass("first destination and first x-r value used")
}

pub async fn f11(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("f11");
    error_for(
        &ctx,
        &format!("SEND\ndestination:{q}\nno-colon-here\n\nx\0"),
    )
    .await
    .map_err(|e| e.context("header line without a colon"))?;
    error_for(&ctx, &format!("SEND\ndestination:{q}\n:empty-name\n\nx\0"))
        .await
        .map_err(|e| e.context("header line with an empty name"))?;
    pass("both malformed lines got ERROR then close")
}

pub async fn f11_colon(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("f11c");
    let mut c = subscriber(&ctx, "1", &q, "auto").await?;
    c.send(format!("SEND\ndestination:{q}\nx-c:a:b\n\nx\0"))
        .await?;
    match c.next_within(ctx.opts.wait).await? {
        Event::Frame(m) if m.is("MESSAGE") => {
            check(m.header("x-c").as_deref() == Some("a:b"), || {
                format!("x-c:a:b arrived as x-c = {:?}", m.header("x-c"))
            })?;
            pass("x-c:a:b arrived as a:b")
        }
        Event::Frame(e) if e.is("ERROR") => {
            pass("raw colon in a 1.2 value rejected (strict reading of the grammar)")
        }
        other => Err(Fail::new(format!("SEND x-c:a:b got {other:?}"))),
    }
}

pub async fn b1(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("b1");
    let mut c = subscriber(&ctx, "1", &q, "auto").await?;
    c.send(format!(
        "SEND\ndestination:{q}\ncontent-length:3\n\n\0\0\0\0"
    ))
    .await?;
    let m = c.message().await?;
    check(&m.body[..] == b"\0\0\0", || {
        format!("body {:?}, want three NULs", m.body)
    })?;
    error_for(
        &ctx,
        &format!("SEND\ndestination:{q}\ncontent-length:3\n\nabcd\0"),
    )
    .await
    .map_err(|e| e.context("content-length 3 followed by a 4th byte instead of NUL"))?;
    pass("three NULs delivered; a wrong byte after the body got ERROR")
}

pub async fn b2(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("b2");
    let mut c = subscriber(&ctx, "1", &q, "auto").await?;
    let text = "é€😀";
    c.send(format!(
        "SEND\ndestination:{q}\ncontent-type:text/plain;charset=utf-8\ncontent-length:{}\n\n{text}\0",
        text.len()
    ))
    .await?;
    let m = c.message().await?;
    check(body(&m) == text, || format!("body {:?}", body(&m)))?;
    if let Some(l) = m.header("content-length") {
        check(l == "9", || {
            format!("MESSAGE content-length {l}, want 9 bytes")
        })?;
    }
    pass("9-byte, 3-character body delivered intact")
}

pub async fn b3(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("b3");
    let mut c = subscriber(&ctx, "1", &q, "auto").await?;
    c.send(format!(
        "SEND\ndestination:{q}\ncontent-type:application/json\n\n{{\"a\":1}}\0"
    ))
    .await?;
    let m = c.message().await?;
    check(m.header("content-length").as_deref() == Some("7"), || {
        format!(
            "MESSAGE content-length {:?}, want 7",
            m.header("content-length")
        )
    })?;
    check(
        m.header("content-type").as_deref() == Some("application/json"),
        || format!("content-type {:?}", m.header("content-type")),
    )?;
    let e = error_reply(&ctx, "SEND\nreceipt:x\n\nno destination\0").await?;
    if !e.body.is_empty() {
        check(e.has_content_length, || {
            "ERROR has a body but no content-length".into()
        })?;
    }
    pass(if e.body.is_empty() {
        "MESSAGE content-length and content-type present (ERROR had no body)"
    } else {
        "MESSAGE and ERROR bodies carry content-length; content-type passed through"
    })
}

pub async fn b4(ctx: Arc<Ctx>) -> CaseResult {
    let q = ctx.queue("b4");
    let mut c = subscriber(&ctx, "1", &q, "auto").await?;
    let payload: Vec<u8> = (0..=255u8).rev().collect();
    let mut frame = format!(
        "SEND\ndestination:{q}\ncontent-length:{}\n\n",
        payload.len()
    )
    .into_bytes();
    frame.extend_from_slice(&payload);
    frame.push(0);
    c.send(&frame).await?;
    let m = c.message().await?;
    check(m.body[..] == payload[..], || {
        format!(
            "body of {} bytes differs from the 256 bytes sent",
            m.body.len()
        )
    })?;
    pass("all 256 byte values, NUL and invalid UTF-8 included, delivered unchanged")
}
