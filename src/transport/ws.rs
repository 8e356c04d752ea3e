//! STOMP over WebSocket.
//!
//! The handshake (served by `crate::http`) picks the STOMP subprotocol exactly as
//! RFC 6455 §4.2.2 asks
//! (checklist W1): the highest of `v12.stomp`, `v11.stomp`, `v10.stomp` that the client
//! offered, or no `Sec-WebSocket-Protocol` header at all when it offered none of them
//! (the session then speaks STOMP anyway). The chosen subprotocol caps the STOMP
//! version later negotiated by CONNECT (W5).
//!
//! Message payloads, text or binary (W3), are appended to the same read buffer the TCP
//! transport uses, so frames may span messages and messages may hold several frames
//! (W2). Outgoing, each frame is one message; heart-beats are a `\n` message.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::{Counted, Error, Progress, ReadEvent, Sink, Source};
use crate::config::WsMessageType;
use crate::frame::Version;
use crate::outbox::CloseReason;

type Ws = WebSocketStream<Counted<TokioIo<Upgraded>>>;

/// The subprotocols we speak, best first.
const SUBPROTOCOLS: [(&str, Version); 3] = [
    ("v12.stomp", Version::V1_2),
    ("v11.stomp", Version::V1_1),
    ("v10.stomp", Version::V1_0),
];

/// Picks our answer to a client's `Sec-WebSocket-Protocol` offers (all header lines,
/// comma lists, tokens compared exactly): the highest STOMP subprotocol offered.
pub fn choose_subprotocol<'a>(
    offers: impl Iterator<Item = &'a str>,
) -> Option<(&'static str, Version)> {
    let offered: Vec<&str> = offers
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .collect();
    SUBPROTOCOLS
        .into_iter()
        .find(|(name, _)| offered.contains(name))
}

/// Handshake settings.
#[derive(Clone, Debug)]
pub struct WsSettings {
    /// The upgrade path, e.g. `/ws`.
    pub path: String,
    /// Outgoing message type.
    pub message_type: WsMessageType,
    /// `listeners.ws_allowed_origins`; empty allows any.
    pub allowed_origins: Vec<String>,
    /// Largest WebSocket message accepted (frame limits plus headroom).
    pub max_message_bytes: usize,
    /// Time allowed for the HTTP upgrade.
    pub handshake_timeout: Duration,
}

/// Wraps a connection hyper has upgraded (after the handshake in `crate::http`).
pub async fn from_upgraded(upgraded: Upgraded, settings: &WsSettings) -> (Source, Sink) {
    let config = WebSocketConfig::default()
        // tungstenite allocates this eagerly per connection; large messages still get
        // room for their whole frame, so a small buffer costs only extra reads.
        .read_buffer_size(1024)
        .max_message_size(Some(settings.max_message_bytes))
        .max_frame_size(Some(settings.max_message_bytes));
    let (io, progress) = Counted::new(TokioIo::new(upgraded));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (sink, stream) = ws.split();
    (
        Source::Ws(WsSource(stream)),
        Sink::Ws(WsSink {
            sink,
            scratch: BytesMut::new(),
            text: settings.message_type == WsMessageType::Text,
            progress,
        }),
    )
}

/// WebSocket read half.
pub struct WsSource(SplitStream<Ws>);

impl WsSource {
    pub(super) async fn read(&mut self, buf: &mut BytesMut) -> ReadEvent {
        match self.0.next().await {
            Some(Ok(Message::Binary(b))) => append(buf, b),
            Some(Ok(Message::Text(t))) => append(buf, Bytes::from(t)),
            // Pings are answered by tungstenite on the next write or flush.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(_))) | None => return ReadEvent::Closed,
            Some(Err(e)) => return violation(e),
        }
        ReadEvent::Data
    }
}

/// Appends a message payload; into an empty buffer without copying, so bodies parsed
/// from it are slices of the payload tungstenite already holds.
fn append(buf: &mut BytesMut, payload: Bytes) {
    if buf.is_empty() {
        *buf = BytesMut::from(payload);
    } else {
        buf.extend_from_slice(&payload);
    }
}

fn violation(e: WsError) -> ReadEvent {
    match e {
        WsError::Capacity(e) => ReadEvent::Violation(
            CloseReason::TooBig,
            format!("WebSocket message too large: {e}"),
        ),
        WsError::Utf8(_) => ReadEvent::Violation(
            CloseReason::InvalidData,
            "WebSocket text message is not valid UTF-8".into(),
        ),
        WsError::Protocol(e) => ReadEvent::Violation(
            CloseReason::Protocol,
            format!("WebSocket protocol error: {e}"),
        ),
        _ => ReadEvent::Closed,
    }
}

/// WebSocket write half.
pub struct WsSink {
    sink: SplitSink<Ws, Message>,
    /// Where a MESSAGE's parts are joined into one payload.
    scratch: BytesMut,
    /// Send text messages when the frame is valid UTF-8.
    text: bool,
    pub(super) progress: Progress,
}

impl WsSink {
    /// A MESSAGE: one WebSocket message needs one contiguous payload, so head, tail,
    /// body and NUL are joined here — the one copy per frame on our side. tungstenite
    /// copies the payload into its write buffer at once, so the scratch storage is
    /// unique again by the next frame and `reserve` reuses it: no allocation per frame.
    pub(super) async fn message(
        &mut self,
        head: &Bytes,
        tail: &Bytes,
        body: &Bytes,
    ) -> Result<(), Error> {
        self.scratch
            .reserve(head.len() + tail.len() + body.len() + 1);
        self.scratch.extend_from_slice(head);
        self.scratch.extend_from_slice(tail);
        self.scratch.extend_from_slice(body);
        self.scratch.extend_from_slice(b"\0");
        let payload = self.scratch.split().freeze();
        self.frame(&payload).await
    }

    /// A whole frame as one WebSocket message, as it is (no copy on our side).
    pub(super) async fn frame(&mut self, payload: &Bytes) -> Result<(), Error> {
        let payload = payload.clone();
        let message = if self.text {
            match Utf8Bytes::try_from(payload.clone()) {
                Ok(text) => Message::Text(text),
                Err(_) => Message::Binary(payload),
            }
        } else {
            Message::Binary(payload)
        };
        self.sink.feed(message).await?;
        Ok(())
    }

    pub(super) async fn heartbeat(&mut self) -> Result<(), Error> {
        self.sink
            .feed(Message::Text(Utf8Bytes::from_static("\n")))
            .await?;
        Ok(())
    }

    pub(super) async fn flush(&mut self) -> Result<(), Error> {
        self.sink.flush().await?;
        Ok(())
    }

    pub(super) async fn close(&mut self, reason: CloseReason) -> Result<(), Error> {
        let frame = CloseFrame {
            code: CloseCode::from(reason.ws_code()),
            reason: Utf8Bytes::from_static(""),
        };
        self.sink.send(Message::Close(Some(frame))).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w1_highest_offered_subprotocol_wins() {
        let pick = |offers: &[&str]| choose_subprotocol(offers.iter().copied()).map(|(n, _)| n);
        assert_eq!(
            pick(&["v10.stomp, v11.stomp, v12.stomp"]),
            Some("v12.stomp")
        );
        assert_eq!(pick(&["v10.stomp", "v11.stomp"]), Some("v11.stomp"));
        assert_eq!(pick(&["v10.stomp"]), Some("v10.stomp"));
        assert_eq!(pick(&["mqtt", "stomp"]), None);
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&["V12.STOMP"]), None, "tokens are compared exactly");
    }
}
