//! C: connecting and version negotiation.

use std::sync::Arc;

use super::answer;
use crate::conn::Event;
use crate::{CaseResult, Ctx, Fail, check, chose, pass};

pub async fn c1(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.open().await?;
    let frame = ctx.connect_frame("1.2", "").replacen("CONNECT", "STOMP", 1);
    c.send(frame).await?;
    let f = c.frame().await?;
    check(f.is("CONNECTED"), || format!("STOMP got {}", f.summary()))?;
    pass(format!(
        "CONNECTED version {:?}",
        f.header("version").unwrap_or_default()
    ))
}

pub async fn c2(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.open().await?;
    c.send(ctx.connect_frame("1.0,1.1,2.0", "")).await?;
    let f = c.expect("CONNECTED").await?;
    check(f.header("version").as_deref() == Some("1.1"), || {
        format!(
            "accept-version 1.0,1.1,2.0 gave version {:?}, want 1.1",
            f.header("version")
        )
    })?;
    let mut c = ctx.open().await?;
    c.send(format!(
        "CONNECT\n{}{}\n\0",
        ctx.host_line(),
        ctx.login_lines()
    ))
    .await?;
    let f = c
        .expect("CONNECTED")
        .await
        .map_err(|e| e.context("CONNECT without accept-version"))?;
    let v = f.header("version");
    check(v.is_none() || v.as_deref() == Some("1.0"), || {
        format!("CONNECT without accept-version gave version {v:?}, want 1.0 (or none)")
    })?;
    pass(format!(
        "1.1 chosen; without accept-version: {}",
        v.unwrap_or_else(|| "no version header (1.0)".into())
    ))
}

pub async fn c3(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.open().await?;
    c.send(ctx.connect_frame("3.0", "")).await?;
    let (e, _) = c.expect_error_and_close().await?;
    let versions = e.header("version");
    check(versions.is_some(), || {
        "ERROR has no version header listing the supported versions".into()
    })?;
    let ct = e.header("content-type");
    check(
        e.body.is_empty() || ct.as_deref().is_some_and(|t| t.starts_with("text/plain")),
        || format!("ERROR body has content-type {ct:?}, want text/plain"),
    )?;
    pass(format!(
        "ERROR with version:{} then close",
        versions.unwrap_or_default()
    ))
}

pub async fn c4(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.open().await?;
    c.send(ctx.connect_frame("1.2", "")).await?;
    let f = c.expect("CONNECTED").await?;
    check(f.header("version").as_deref() == Some("1.2"), || {
        format!("version {:?}", f.header("version"))
    })?;
    if let Some(server) = f.header("server") {
        let name = server.split(['/', ' ']).next().unwrap_or("");
        check(!name.is_empty(), || {
            format!("server header {server:?} has no name")
        })?;
    }
    let mut present: Vec<String> = Vec::new();
    for h in ["server", "session", "heart-beat"] {
        if let Some(v) = f.header(h) {
            present.push(format!("{h}:{v}"));
        }
    }
    pass(format!("version:1.2; {}", present.join(", ")))
}

pub async fn c5(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.open().await?;
    c.send(format!(
        "CONNECT\naccept-version:1.2\n{}\n\0",
        ctx.login_lines()
    ))
    .await?;
    let missing = answer(&mut c, ctx.opts.wait).await?;
    let mut c = ctx.open().await?;
    c.send(format!(
        "CONNECT\naccept-version:1.2\nhost:no-such-vhost-{}\n{}\n\0",
        ctx.run,
        ctx.login_lines()
    ))
    .await?;
    let unknown = answer(&mut c, ctx.opts.wait).await?;
    // A rejection that leaves the connection open is still a policy; E1 judges the close.
    let word = |a: &str| match a {
        "CONNECTED" => "accepted",
        "ERROR + close" => "rejected",
        "ERROR (connection kept open)" => "rejected, left open",
        _ => "broken",
    };
    check(
        word(&missing) != "broken" && word(&unknown) != "broken",
        || format!("missing host: {missing}; unknown host: {unknown}"),
    )?;
    chose(
        format!(
            "missing host {}, unknown host {}",
            word(&missing),
            word(&unknown)
        ),
        format!("missing host: {missing}; unknown host: {unknown}"),
    )
}

pub async fn c6(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.open().await?;
    c.send(format!(
        "CONNECT\naccept-version:1.2\n{}login:conformance-nobody-{}\npasscode:wrong\n\n\0",
        ctx.host_line(),
        ctx.run
    ))
    .await?;
    match c.next_within(ctx.opts.wait).await? {
        Event::Frame(f) if f.is("CONNECTED") => {
            chose("accepts unknown logins", "no authentication configured")
        }
        Event::Frame(f) if f.is("ERROR") => {
            let closed = c.closed_within(ctx.opts.wait).await?;
            check(closed.is_some(), || {
                "ERROR but the connection stayed open".into()
            })?;
            check(f.header("message").is_some(), || {
                "ERROR without a message header".into()
            })?;
            pass(format!("{} then close", f.summary()))
        }
        other => Err(Fail::new(format!("unknown login got {other:?}"))),
    }
}

pub async fn c7(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.open().await?;
    c.send(format!("SEND\ndestination:{}\n\nearly\0", ctx.queue("c7")))
        .await?;
    let (e, closed) = c.expect_error_and_close().await?;
    pass(format!("{} then {closed}", e.summary()))
}

pub async fn c8(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.connect().await?;
    c.send(ctx.connect_frame("1.2", "")).await?;
    let got = answer(&mut c, ctx.opts.wait).await?;
    check(got == "ERROR + close", || {
        format!("second CONNECT got: {got}")
    })?;
    pass("ERROR then close")
}
