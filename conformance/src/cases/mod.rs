//! The cases, one per checklist clause (sub-cases get a suffix: `S9.unknown`).
//!
//! Grouped like the checklist: [`frames`] (F, B), [`connect`] (C), [`client`] (S),
//! [`server`] (M, E), [`heartbeat`] (H), [`websocket`] (W), and [`delivery`] (D: what
//! users rely on beyond the spec text). Every case talks STOMP 1.2 unless it is about
//! version negotiation, and uses destinations unique to the run.

mod client;
mod connect;
mod delivery;
mod frames;
pub(crate) mod heartbeat;
mod server;
mod websocket;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use crate::conn::Event;
use crate::wire::Frame;
use crate::{CaseResult, Conn, Ctx, Fail, Level};

type CaseFuture = Pin<Box<dyn Future<Output = CaseResult> + Send>>;

pub struct Case {
    pub id: &'static str,
    pub level: Level,
    pub title: &'static str,
    /// Only meaningful over WebSocket.
    pub ws_only: bool,
    /// Watches a clock for seconds; runs alongside the other cases.
    pub slow: bool,
    pub run: fn(Arc<Ctx>) -> CaseFuture,
}

macro_rules! case {
    ($id:literal, $level:ident, $title:literal, $f:path) => {
        Case {
            id: $id,
            level: Level::$level,
            title: $title,
            ws_only: false,
            slow: false,
            run: |c| Box::pin($f(c)),
        }
    };
    ($id:literal, $level:ident, $title:literal, $f:path, slow) => {
        Case {
            slow: true,
            ..case!($id, $level, $title, $f)
        }
    };
    ($id:literal, $level:ident, $title:literal, $f:path, ws) => {
        Case {
            ws_only: true,
            ..case!($id, $level, $title, $f)
        }
    };
}

static CASES: LazyLock<Vec<Case>> = LazyLock::new(|| {
    vec![
        case!(
            "F1",
            Must,
            "CRLF line endings accepted everywhere",
            frames::f1
        ),
        case!(
            "F2",
            Must,
            "commands are case-sensitive: `send` is not SEND",
            frames::f2
        ),
        case!(
            "F3",
            Must,
            "EOLs after the NUL are skipped between frames",
            frames::f3
        ),
        case!(
            "F4",
            Must,
            "header escapes decoded on SEND and re-encoded on MESSAGE",
            frames::f4
        ),
        case!(
            "F4.connect",
            Must,
            "CONNECT headers are taken literally (no unescaping)",
            frames::f4_connect
        ),
        case!(
            "F5",
            Must,
            "undefined escapes (\\t, trailing \\) are fatal errors",
            frames::f5
        ),
        case!(
            "F6",
            Must,
            "outgoing RECEIPT and MESSAGE headers are escaped",
            frames::f6
        ),
        case!(
            "F7",
            Must,
            "header values are never trimmed or padded",
            frames::f7
        ),
        case!(
            "F8",
            Should,
            "a body on SUBSCRIBE is rejected with ERROR",
            frames::f8
        ),
        case!(
            "F9",
            Should,
            "size limits end in an ERROR the client receives",
            frames::f9
        ),
        case!(
            "F10",
            Should,
            "repeated headers: the first occurrence wins",
            frames::f10
        ),
        case!(
            "F11",
            Must,
            "header lines without a colon or with an empty name are errors",
            frames::f11
        ),
        case!(
            "F11.colon",
            Should,
            "a value is split from its name at the first colon",
            frames::f11_colon
        ),
        case!(
            "B1",
            Must,
            "content-length bodies may hold NULs; a missing NUL after them is an error",
            frames::b1
        ),
        case!(
            "B2",
            Must,
            "content-length counts bytes of multi-byte UTF-8",
            frames::b2
        ),
        case!(
            "B3",
            Should,
            "MESSAGE and ERROR bodies carry content-length; content-type passes through",
            frames::b3
        ),
        case!(
            "B4",
            Must,
            "binary bodies are delivered byte for byte",
            frames::b4
        ),
        case!("C1", Must, "STOMP is accepted like CONNECT", connect::c1),
        case!(
            "C2",
            Must,
            "the highest common version is chosen; none given means 1.0",
            connect::c2
        ),
        case!(
            "C3",
            Should,
            "no common version: ERROR with a version header, then close",
            connect::c3
        ),
        case!(
            "C4",
            Must,
            "CONNECTED carries version; server has the name/version form",
            connect::c4
        ),
        case!(
            "C5",
            Choice,
            "missing and unknown host headers",
            connect::c5
        ),
        case!(
            "C6",
            Should,
            "rejected credentials: ERROR explaining why, then close",
            connect::c6
        ),
        case!(
            "C7",
            Should,
            "a frame before CONNECT gets ERROR, then close",
            connect::c7
        ),
        case!(
            "C8",
            Should,
            "a second CONNECT gets ERROR, then close",
            connect::c8
        ),
        case!(
            "S1",
            Must,
            "SEND without destination: ERROR, then close",
            client::s1
        ),
        case!(
            "S2",
            Must,
            "user SEND headers are passed through to MESSAGE",
            client::s2
        ),
        case!(
            "S3",
            Must,
            "transactional SENDs wait for COMMIT and vanish on ABORT",
            client::s3
        ),
        case!(
            "S4",
            Must,
            "SUBSCRIBE without id or destination: ERROR, then close",
            client::s4
        ),
        case!(
            "S5",
            Should,
            "reusing an active subscription id is an ERROR",
            client::s5
        ),
        case!("S6", Should, "an unknown ack mode is an ERROR", client::s6),
        case!(
            "S7",
            Must,
            "client acks are cumulative; client-individual acks are not",
            client::s7
        ),
        case!(
            "S8",
            Must,
            "no MESSAGE for a subscription after UNSUBSCRIBE",
            client::s8
        ),
        case!(
            "S8.unknown",
            Choice,
            "UNSUBSCRIBE of an unknown id",
            client::s8_unknown
        ),
        case!(
            "S9",
            Must,
            "ACK takes the MESSAGE's ack header as id",
            client::s9
        ),
        case!(
            "S9.unknown",
            Should,
            "ACK of an unknown or already-acked id is an ERROR",
            client::s9_unknown
        ),
        case!(
            "S10",
            Choice,
            "what happens to a NACKed message",
            client::s10
        ),
        case!(
            "S11",
            Must,
            "BEGIN without transaction: ERROR, then close",
            client::s11
        ),
        case!(
            "S11.dup",
            Should,
            "a duplicate BEGIN is an ERROR",
            client::s11_dup
        ),
        case!(
            "S11.unknown",
            Should,
            "COMMIT of an unknown transaction is an ERROR",
            client::s11_unknown
        ),
        case!(
            "S11.abort",
            Must,
            "open transactions are aborted when the connection goes",
            client::s11_abort
        ),
        case!(
            "S12",
            Must,
            "DISCONNECT receipt arrives; frames after DISCONNECT are ignored",
            client::s12
        ),
        case!(
            "S13",
            Must,
            "every client frame's receipt gets a RECEIPT",
            client::s13
        ),
        case!(
            "S13.order",
            Should,
            "a RECEIPT follows the MESSAGEs its frame caused",
            client::s13_order
        ),
        case!(
            "S14",
            Choice,
            "an unknown command after CONNECT",
            client::s14
        ),
        case!(
            "M1",
            Must,
            "MESSAGE has destination, unique message-id, subscription",
            server::m1
        ),
        case!(
            "M2",
            Must,
            "client-ack MESSAGEs carry an ack header",
            server::m2
        ),
        case!("M3", Must, "RECEIPT carries receipt-id", server::m3),
        case!(
            "E1",
            Must,
            "the server closes the connection after ERROR",
            server::e1
        ),
        case!(
            "E1.message",
            Should,
            "ERROR has a message header",
            server::e1_message
        ),
        case!(
            "E1.receipt",
            Should,
            "ERROR carries receipt-id of a failing frame with receipt",
            server::e1_receipt
        ),
        case!(
            "E2",
            Should,
            "rapid connect/disconnect and ERRORs survive the close",
            server::e2
        ),
        case!(
            "H1",
            Must,
            "no heart-beat header means no heart-beats",
            heartbeat::h1,
            slow
        ),
        case!(
            "H1.malformed",
            Should,
            "a malformed heart-beat header is an ERROR",
            heartbeat::h1_malformed
        ),
        case!(
            "H2",
            Must,
            "CONNECTED heart-beat is two integers; intervals negotiate by MAX",
            heartbeat::h2,
            slow
        ),
        case!(
            "H3",
            Must,
            "server heart-beats arrive at least every negotiated interval",
            heartbeat::h3,
            slow
        ),
        case!(
            "H4",
            Choice,
            "what happens to a client that stops sending heart-beats",
            heartbeat::h4,
            slow
        ),
        case!(
            "H5",
            Should,
            "an advertised server heart-beat is really sent",
            heartbeat::h5,
            slow
        ),
        case!(
            "W1",
            Must,
            "one offered STOMP subprotocol chosen; none offered, none answered",
            websocket::w1,
            ws
        ),
        case!(
            "W1.highest",
            Should,
            "of all three offered, v12.stomp is chosen",
            websocket::w1_highest,
            ws
        ),
        case!(
            "W2",
            Must,
            "frames may span WebSocket messages and share one",
            websocket::w2,
            ws
        ),
        case!(
            "W3",
            Must,
            "text and binary WebSocket messages are both accepted",
            websocket::w3,
            ws
        ),
        case!(
            "W3.type",
            Choice,
            "the WebSocket message type the broker sends",
            websocket::w3_type,
            ws
        ),
        case!(
            "W4",
            Should,
            "WebSocket and STOMP protocol errors end in a meaningful Close code",
            websocket::w4,
            ws
        ),
        case!(
            "W5",
            Should,
            "the version is no higher than the subprotocol",
            websocket::w5,
            ws
        ),
        case!(
            "D1",
            Must,
            "queue: each message goes to exactly one consumer",
            delivery::d1
        ),
        case!(
            "D2",
            Must,
            "queue: messages wait for a consumer",
            delivery::d2
        ),
        case!(
            "D3",
            Must,
            "topic: every subscriber gets every message",
            delivery::d3
        ),
        case!(
            "D4",
            Must,
            "unacked messages are redelivered after a consumer drops",
            delivery::d4
        ),
        case!("D5", Must, "order is kept per producer", delivery::d5),
        case!("D6", Must, "receipts come back in order", delivery::d6),
    ]
});

/// Every case, in report order.
pub fn all() -> &'static [Case] {
    &CASES
}

/// A 1.2 session subscribed to `destination` as subscription `id`.
async fn subscriber(ctx: &Ctx, id: &str, destination: &str, ack: &str) -> Result<Conn, Fail> {
    let mut c = ctx.connect().await?;
    c.subscribe(id, destination, ack).await?;
    Ok(c)
}

/// Opens a session, sends `frame`, and expects ERROR then close; returns the ERROR.
async fn error_for(ctx: &Ctx, frame: &str) -> Result<Frame, Fail> {
    let mut c = ctx.connect().await?;
    c.send(frame).await?;
    c.expect_error_and_close().await.map(|(f, _)| f)
}

/// Opens a session, sends `frame`, and expects ERROR; returns it. Whether the connection
/// then closes is left to E1, for cases that judge what the ERROR says.
async fn error_reply(ctx: &Ctx, frame: &str) -> Result<Frame, Fail> {
    let mut c = ctx.connect().await?;
    c.send(frame).await?;
    c.expect("ERROR").await
}

/// What the broker answered a frame with: ERROR, RECEIPT, or silence.
async fn answer(c: &mut Conn, wait: Duration) -> Result<String, Fail> {
    Ok(match c.next_within(wait).await? {
        Event::Frame(f) if f.is("ERROR") => after_error(c).await?,
        Event::Frame(f) => f.command,
        Event::Closed(c) => format!("closed without ERROR ({c})"),
        Event::Timeout => "no answer".to_string(),
    })
}

/// Once an ERROR has arrived: whether the connection then closed.
async fn after_error(c: &mut Conn) -> Result<String, Fail> {
    Ok(match c.closed_within(c.wait).await? {
        Some(_) => "ERROR + close".to_string(),
        None => "ERROR (connection kept open)".to_string(),
    })
}

/// A MESSAGE's `ack` header, escaped for the `id` of an ACK or NACK frame.
fn ack_id(m: &Frame) -> Result<String, Fail> {
    m.header("ack")
        .map(|id| crate::wire::escape(&id))
        .ok_or_else(|| Fail::new(format!("{} without an ack header", m.summary())))
}

/// MESSAGE frames until `quiet` passes without one.
async fn drain(c: &mut Conn, quiet: Duration) -> Result<Vec<Frame>, Fail> {
    let mut out = Vec::new();
    loop {
        match c.next_within(quiet).await? {
            Event::Frame(f) if f.is("MESSAGE") => out.push(f),
            Event::Frame(f) => {
                return Err(Fail::new(format!("expected MESSAGE, got {}", f.summary())));
            }
            Event::Closed(e) => return Err(Fail::new(format!("connection closed ({e})"))),
            Event::Timeout => return Ok(out),
        }
    }
}

fn body(f: &Frame) -> String {
    String::from_utf8_lossy(&f.body).into_owned()
}
