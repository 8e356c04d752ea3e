//! H: heart-beating. Two connections are watched for up to 30-40 s each: one that asks
//! for server heart-beats (shared by H2, H3, H5) and one that promises heart-beats and
//! then falls silent (shared by H2, H4), so the run pays for each watch once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::Event;
use crate::{CaseResult, Ctx, Fail, check, chose, pass};

/// The client→server interval we promise, and the server→client one we ask for.
const ASK_MS: u64 = 1000;
/// The longest we watch a connection for heart-beats.
const MAX_WATCH: Duration = Duration::from_secs(30);

/// What one connection asking for server heart-beats every second saw.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The CONNECTED `heart-beat` header, parsed: (sx, sy).
    pub advertised: (u64, u64),
    /// The negotiated server→client interval: 0 if sx is 0, else MAX(sx, ASK_MS).
    pub interval_ms: u64,
    pub watched: Duration,
    pub beats: usize,
    /// The longest time without a heart-beat, from CONNECTED to the end of the watch.
    pub max_gap: Duration,
}

fn parse_heart_beat(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.split_once(',')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

async fn watch(ctx: &Ctx) -> Result<Watch, Fail> {
    let mut c = ctx.open().await?;
    c.send(ctx.connect_frame("1.2", &format!("heart-beat:0,{ASK_MS}\n")))
        .await?;
    let f = c.expect("CONNECTED").await?;
    let connected_at = Instant::now();
    let advertised = match f.header("heart-beat") {
        None => (0, 0),
        Some(v) => parse_heart_beat(&v)
            .ok_or_else(|| Fail::new(format!("CONNECTED heart-beat:{v} is not two integers")))?,
    };
    let interval_ms = if advertised.0 == 0 {
        0
    } else {
        advertised.0.max(ASK_MS)
    };
    let watched = if interval_ms == 0 {
        Duration::from_millis(2500)
    } else {
        (Duration::from_millis(interval_ms) * 5 / 2).min(MAX_WATCH)
    };
    match c.next_within(watched).await? {
        Event::Timeout => {}
        Event::Frame(f) => return Err(Fail::new(format!("unexpected {} while idle", f.summary()))),
        Event::Closed(e) => return Err(Fail::new(format!("connection closed while idle ({e})"))),
    }
    let mut last = connected_at;
    let mut max_gap = Duration::ZERO;
    for &t in &c.heartbeats {
        max_gap = max_gap.max(t - last);
        last = t;
    }
    max_gap = max_gap.max(connected_at + watched - last);
    Ok(Watch {
        advertised,
        interval_ms,
        watched,
        beats: c.heartbeats.len(),
        max_gap,
    })
}

async fn shared_watch(ctx: &Ctx) -> Result<Watch, Fail> {
    ctx.heartbeat_watch.get_or_init(|| watch(ctx)).await.clone()
}

pub async fn h1(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.connect().await?;
    c.silence(Duration::from_millis(2500), "idle").await?;
    check(c.heartbeats.is_empty(), || {
        format!(
            "{} heart-beats in 2.5 s though CONNECT asked for none",
            c.heartbeats.len()
        )
    })?;
    pass("no heart-beats in 2.5 s without a heart-beat header")
}

pub async fn h1_malformed(ctx: Arc<Ctx>) -> CaseResult {
    let mut c = ctx.open().await?;
    c.send(ctx.connect_frame("1.2", "heart-beat:soon,never\n"))
        .await?;
    let e = c.frame().await?;
    check(e.is("ERROR"), || {
        format!("CONNECT with heart-beat:soon,never got {}", e.summary())
    })?;
    // Whether the connection then closes is E1's to judge.
    let closed = c.closed_within(ctx.opts.wait).await?;
    pass(match closed {
        Some(how) => format!("{} then close ({how})", e.summary()),
        None => format!("{}; the connection was left open", e.summary()),
    })
}

pub async fn h2(ctx: Arc<Ctx>) -> CaseResult {
    let w = shared_watch(&ctx).await?;
    let s = shared_silence(&ctx).await?;
    let (sx, sy) = w.advertised;
    // The client→server side is judged by when a silent client gets dropped: never
    // before MAX(cx, sy), whatever grace the server adds on top.
    if let Some((after, _)) = &s.dropped {
        check(*after >= s.interval, || {
            format!(
                "we promised heart-beats every {ASK_MS} ms and the server asked for {} ms, \
                 so the interval is {} ms, but a silent client was dropped after {} ms",
                s.sy,
                s.interval.as_millis(),
                after.as_millis()
            )
        })?;
    }
    pass(format!(
        "CONNECTED heart-beat:{sx},{sy} to our 0,{ASK_MS}: server→client every {} ms; \
         to our {ASK_MS},0: client→server every {} ms",
        w.interval_ms,
        s.interval.as_millis()
    ))
}

pub async fn h3(ctx: Arc<Ctx>) -> CaseResult {
    let w = shared_watch(&ctx).await?;
    if w.interval_ms == 0 {
        return pass("the server offers no heart-beats (sx = 0), so none are due");
    }
    let allowed = Duration::from_millis(w.interval_ms * 3 / 2);
    let detail = format!(
        "negotiated {} ms; {} beats in {:.1} s; longest silence {} ms",
        w.interval_ms,
        w.beats,
        w.watched.as_secs_f64(),
        w.max_gap.as_millis()
    );
    check(w.max_gap <= allowed, || {
        format!("{detail} (more than 1.5 × the interval)")
    })?;
    pass(detail)
}

/// What a connection that promised heart-beats and then fell silent saw.
#[derive(Debug, Clone)]
pub struct Silence {
    /// The CONNECTED `heart-beat` second value: how often the server wants to hear from us.
    pub sy: u64,
    /// The negotiated client→server interval: 0 if sy is 0, else MAX(ASK_MS, sy).
    pub interval: Duration,
    /// When the server dropped us, and how; None if it never did during the watch.
    pub dropped: Option<(Duration, String)>,
}

async fn silence(ctx: &Ctx) -> Result<Silence, Fail> {
    let mut c = ctx.open().await?;
    c.send(ctx.connect_frame("1.2", &format!("heart-beat:{ASK_MS},0\n")))
        .await?;
    let f = c.expect("CONNECTED").await?;
    let sent_at = Instant::now();
    let sy = match f.header("heart-beat") {
        None => 0,
        Some(v) => {
            parse_heart_beat(&v)
                .ok_or_else(|| Fail::new(format!("CONNECTED heart-beat:{v} is not two integers")))?
                .1
        }
    };
    if sy == 0 {
        return Ok(Silence {
            sy,
            interval: Duration::ZERO,
            dropped: None,
        });
    }
    let interval = Duration::from_millis(sy.max(ASK_MS));
    let watch = (interval * 3 + Duration::from_secs(1)).min(Duration::from_secs(40));
    let dropped = c
        .closed_within(watch)
        .await?
        .map(|how| (sent_at.elapsed(), how.to_string()));
    Ok(Silence {
        sy,
        interval,
        dropped,
    })
}

async fn shared_silence(ctx: &Ctx) -> Result<Silence, Fail> {
    ctx.silence_watch.get_or_init(|| silence(ctx)).await.clone()
}

pub async fn h4(ctx: Arc<Ctx>) -> CaseResult {
    let s = shared_silence(&ctx).await?;
    if s.sy == 0 {
        return chose(
            "does not ask clients for heart-beats",
            "CONNECTED heart-beat second value is 0",
        );
    }
    let interval = s.interval;
    match s.dropped {
        Some((after, how)) => {
            check(after >= interval, || {
                format!(
                    "dropped after {} ms, before the negotiated {} ms",
                    after.as_millis(),
                    interval.as_millis()
                )
            })?;
            chose(
                "drops silent clients",
                format!(
                    "negotiated {} ms; dropped after {} ms ({:.1} × the interval; {how})",
                    interval.as_millis(),
                    after.as_millis(),
                    after.as_secs_f64() / interval.as_secs_f64()
                ),
            )
        }
        None => chose(
            "keeps silent clients",
            format!(
                "negotiated {} ms; still open after 3 intervals",
                interval.as_millis()
            ),
        ),
    }
}

pub async fn h5(ctx: Arc<Ctx>) -> CaseResult {
    let w = shared_watch(&ctx).await?;
    if w.advertised.0 == 0 {
        return pass("the server advertises no heart-beats");
    }
    check(w.beats > 0, || {
        format!(
            "advertised heart-beat:{},{} but sent none in {:.1} s",
            w.advertised.0,
            w.advertised.1,
            w.watched.as_secs_f64()
        )
    })?;
    pass(format!(
        "advertised {} ms and sent {} beats",
        w.advertised.0, w.beats
    ))
}
