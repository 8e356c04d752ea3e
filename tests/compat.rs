//! Clients written for other brokers work unchanged: NACK on 1.0, acks settled by
//! `message-id`, fast heart-beats; 1.0 recipients cannot be forged; garbage is refused
//! at its first line.

mod common;

use std::time::Duration;

use common::*;
use stompbox::frame::Command;

async fn connect_version(b: &TestBroker, version: Option<&str>) -> Client {
    let mut c = Client::tcp(b.tcp()).await;
    match version {
        Some(v) => {
            c.send(&format!("CONNECT\naccept-version:{v}\nhost:h\n\n"))
                .await
        }
        None => c.send("CONNECT\n\n").await,
    }
    c.expect(Command::Connected).await;
    c
}

/// Finding 8: RabbitMQ accepts NACK on STOMP 1.0 (by `message-id`); so do we.
#[tokio::test]
async fn nack_on_stomp_1_0_redelivers() {
    let b = start().await;
    let mut c = connect_version(&b, None).await;
    c.send("SUBSCRIBE\ndestination:/queue/n10\nack:client\n\n")
        .await;
    c.publish("/queue/n10", "again").await;
    let m = c.expect(Command::Message).await;
    let id = m.headers.get("message-id").unwrap();
    c.send(&format!("NACK\nmessage-id:{id}\nreceipt:n\n\n"))
        .await;
    let mut frames = Vec::new();
    while frames.len() < 2 {
        frames.push(c.frame().await);
    }
    assert!(
        frames.iter().any(|f| f.command == Command::Receipt),
        "{frames:?}"
    );
    let again = frames
        .iter()
        .find(|f| f.command == Command::Message)
        .expect("redelivered");
    assert_eq!(&again.body[..], b"again");
    assert_eq!(again.headers.get("redelivered"), Some("true"));
}

/// Finding 8: a 1.1 ACK whose `subscription` does not name the delivery's subscription
/// is settled by `message-id` on this connection, as RabbitMQ does.
#[tokio::test]
async fn stomp_1_1_ack_with_mismatched_subscription_settles_by_message_id() {
    let b = start().await;
    let mut c = connect_version(&b, Some("1.1")).await;
    c.subscribe("real", "/queue/mm", "client-individual").await;
    c.publish("/queue/mm", "m").await;
    let m = c.expect(Command::Message).await;
    let id = m.headers.get("message-id").unwrap();
    c.send(&format!(
        "ACK\nmessage-id:{id}\nsubscription:other\nreceipt:r\n\n"
    ))
    .await;
    c.until_receipt("r").await;
    drop(c);
    let mut d = connected(&b).await;
    d.subscribe("0", "/queue/mm", "auto").await;
    d.expect_silence(Duration::from_millis(300)).await;
}

/// Finding 8: stompjs `heartbeatIncoming: 1000, heartbeatOutgoing: 1000` gets beats
/// every second, is told to beat every second, and is dropped within 3 s of silence.
#[tokio::test]
async fn fast_heartbeats_are_honoured_down_to_min_ms() {
    let b = start().await;
    let mut c = Client::tcp(b.tcp()).await;
    c.send("CONNECT\naccept-version:1.2\nheart-beat:1000,1000\n\n")
        .await;
    let connected = c.expect(Command::Connected).await;
    assert_eq!(connected.headers.get("heart-beat"), Some("1000,1000"));
    // Silent from now on: the broker beats about every second and drops us within 3 s.
    let err = c
        .next_frame_within(Duration::from_secs(3))
        .await
        .expect("ERROR within 3 s");
    assert_eq!(err.command, Command::Error);
    assert!(
        err.headers.get("message").unwrap().contains("heart-beat"),
        "{err:?}"
    );
    assert!(c.heartbeats >= 1, "got {} heart-beats", c.heartbeats);

    // Below `heartbeat.min_ms` (1000) the client gets min_ms.
    let mut d = Client::tcp(b.tcp()).await;
    d.send("CONNECT\naccept-version:1.2\nheart-beat:10,10\n\n")
        .await;
    let connected = d.expect(Command::Connected).await;
    assert_eq!(connected.headers.get("heart-beat"), Some("1000,1000"));
}

/// Finding 9: a 1.2 publisher's header value holding an LF cannot forge headers or the
/// body for a 1.0 subscriber: such headers are left out of 1.0 frames.
#[tokio::test]
async fn stomp_1_0_subscriber_cannot_be_forged() {
    let b = start().await;
    let mut old = connect_version(&b, None).await;
    old.send("SUBSCRIBE\ndestination:/topic/forge\nreceipt:s\n\n")
        .await;
    old.until_receipt("s").await;
    let mut p = connected(&b).await;
    p.send(
        "SEND\ndestination:/topic/forge\nevil:x\\ncontent-length:1\nevil\\cname:y\nok:fine\nreceipt:p\n\nhello",
    )
    .await;
    p.until_receipt("p").await;
    let m = old.expect(Command::Message).await;
    assert_eq!(&m.body[..], b"hello");
    assert_eq!(m.headers.get("content-length"), Some("5"));
    assert_eq!(m.headers.get("evil"), None);
    assert_eq!(m.headers.get("ok"), Some("fine"));
    // A 1.2 subscriber still gets them, escaped.
    let mut new = connected(&b).await;
    new.subscribe("0", "/topic/forge", "auto").await;
    p.send("SEND\ndestination:/topic/forge\nevil:x\\ny\n\nz")
        .await;
    let m = new.expect(Command::Message).await;
    assert_eq!(m.headers.get("evil"), Some("x\ny"));
}

/// Finding 10: a first line that is no STOMP command gets ERROR and close as soon as
/// its EOL arrives (a PNG image sent after CONNECT), over TCP and WebSocket.
#[tokio::test]
async fn garbage_is_refused_at_its_first_line() {
    // The first 16 bytes of every PNG file: the first line is "\x89PNG".
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    let b = start().await;
    let (mut ws, _) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
    ws.connect().await;
    for mut c in [connected(&b).await, ws] {
        c.send_raw(PNG).await;
        let e = c.expect_error_and_close().await;
        let message = e.headers.get("message").unwrap();
        assert!(message.contains("unknown command"), "{e:?}");
    }
    // Before CONNECT too, and a long line without EOL that can be no command.
    let mut early = Client::tcp(b.tcp()).await;
    early.send_raw(&[b'G'; 64]).await;
    early.expect_error_and_close().await;
}
