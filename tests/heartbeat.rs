//! Heart-beating over real sockets: header syntax, what CONNECTED advertises, the
//! broker's send cadence, the read deadline with its grace margin (checklist H1–H5, W3).

mod common;

use std::time::Duration;

use common::*;
use stompbox::frame::Command;
use tokio::time::Instant;

/// Default config with the given heart-beat settings.
fn hb_config(send_ms: u64, recv_ms: u64) -> stompbox::Config {
    let mut cfg = config();
    cfg.heartbeat.send_ms = send_ms;
    cfg.heartbeat.recv_ms = recv_ms;
    cfg.heartbeat.grace = 1.5;
    cfg
}

/// CONNECT (1.2) with this `heart-beat` header; returns CONNECTED.
async fn connect_hb(c: &mut Client, heart_beat: &str) -> stompbox::frame::Frame {
    c.send(&format!(
        "CONNECT\naccept-version:1.2\nhost:h\nheart-beat:{heart_beat}\n\n"
    ))
    .await;
    c.expect(Command::Connected).await
}

/// Idles for `window`, failing on any frame or on the connection ending.
async fn idle(c: &mut Client, window: Duration) {
    c.expect_silence(window).await;
}

/// Like [`idle`], naming the round in the failure.
async fn quiet(c: &mut Client, window: Duration, round: usize) {
    if let Some(f) = c.next_frame_within(window).await {
        panic!("round {round}: expected no frame, got {f:?}");
    }
    assert!(c.ending.is_none(), "round {round}: ended {:?}", c.ending);
}

#[tokio::test]
async fn h1_malformed_heartbeat_header_gets_error_and_close() {
    let b = start().await;
    for bad in ["x,1", "1", "1,", ",1", "-1,0", "1,0,0", "1.5,0", " 1,0", ""] {
        let mut c = Client::tcp(b.tcp()).await;
        c.send(&format!(
            "CONNECT\naccept-version:1.2\nhost:h\nheart-beat:{bad}\n\n"
        ))
        .await;
        let e = c.expect_error_and_close().await;
        let message = e.headers.get("message").unwrap_or_default();
        assert!(
            message.contains("heart-beat"),
            "heart-beat:{bad:?} got ERROR {message:?}"
        );
    }
    // A well-formed header on the same broker is still fine.
    let mut c = Client::tcp(b.tcp()).await;
    connect_hb(&mut c, "0,0").await;
}

#[tokio::test]
async fn h1_absent_header_means_no_heartbeats() {
    let b = start_with(hb_config(100, 100)).await;
    let mut c = Client::tcp(b.tcp()).await;
    // `connect()` sends no heart-beat header: 0,0 both ways.
    c.connect().await;
    idle(&mut c, Duration::from_millis(500)).await;
    assert_eq!(c.heartbeats, 0);
    c.subscribe("0", "/queue/h1", "auto").await;
}

#[tokio::test]
async fn h2_connected_advertises_config_and_broker_beats_at_negotiated_rate() {
    let b = start_with(hb_config(100, 5_000)).await;
    let mut c = Client::tcp(b.tcp()).await;
    let f = connect_hb(&mut c, "0,100").await;
    assert_eq!(f.headers.get("heart-beat"), Some("100,5000"));
    let since = Instant::now();
    idle(&mut c, Duration::from_millis(600)).await;
    let elapsed = since.elapsed();
    // Nominally 6 in 600 ms; at least 3 even on a loaded machine, and never more
    // than one per 100 ms (plus slack for the batch read at the start).
    let max = (elapsed.as_millis() / 100) as usize + 2;
    assert!(
        (3..=max).contains(&c.heartbeats),
        "{} heart-beats in {elapsed:?}",
        c.heartbeats
    );
}

#[tokio::test]
async fn h2_send_interval_is_the_larger_of_the_two() {
    // Server offers 100 ms, client wants one every 400 ms at most: MAX is 400 ms.
    let b = start_with(hb_config(100, 0)).await;
    let mut c = Client::tcp(b.tcp()).await;
    let f = connect_hb(&mut c, "0,400").await;
    assert_eq!(f.headers.get("heart-beat"), Some("100,0"));
    let since = Instant::now();
    idle(&mut c, Duration::from_millis(1_000)).await;
    let elapsed = since.elapsed();
    let max = (elapsed.as_millis() / 400) as usize + 1;
    assert!(
        (1..=max).contains(&c.heartbeats),
        "{} heart-beats in {elapsed:?}: expected one per 400 ms",
        c.heartbeats
    );
}

#[tokio::test]
async fn h2_client_refusing_heartbeats_gets_none() {
    let b = start_with(hb_config(100, 100)).await;
    let mut c = Client::tcp(b.tcp()).await;
    let f = connect_hb(&mut c, "0,0").await;
    assert_eq!(f.headers.get("heart-beat"), Some("100,100"));
    idle(&mut c, Duration::from_millis(500)).await;
    assert_eq!(c.heartbeats, 0, "client said cy=0");
}

#[tokio::test]
async fn h2_no_read_deadline_when_either_side_says_zero() {
    // cx = 0: the client promised nothing, so its silence is fine.
    let b = start_with(hb_config(0, 100)).await;
    let mut c = Client::tcp(b.tcp()).await;
    connect_hb(&mut c, "0,0").await;
    // sy = 0: the broker asked for nothing, so it must not time the client out.
    let b0 = start_with(hb_config(0, 0)).await;
    let mut d = Client::tcp(b0.tcp()).await;
    let f = connect_hb(&mut d, "100,0").await;
    assert_eq!(f.headers.get("heart-beat"), Some("0,0"));

    idle(&mut c, Duration::from_millis(500)).await;
    idle(&mut d, Duration::from_millis(100)).await;
    c.subscribe("0", "/queue/h2", "auto").await;
    d.subscribe("0", "/queue/h2", "auto").await;
}

#[tokio::test]
async fn h4_silent_client_gets_error_then_close() {
    let b = start_with(hb_config(0, 100)).await;
    let mut c = Client::tcp(b.tcp()).await;
    let since = Instant::now();
    let f = connect_hb(&mut c, "100,0").await;
    assert_eq!(f.headers.get("heart-beat"), Some("0,100"));
    let e = c.expect_error_and_close().await;
    let elapsed = since.elapsed();
    let message = e.headers.get("message").unwrap_or_default();
    assert!(message.contains("heart-beat"), "ERROR {message:?}");
    // The deadline is grace × interval = 150 ms after CONNECT was read, never sooner.
    assert!(
        elapsed >= Duration::from_millis(150),
        "dropped after {elapsed:?}, before the 150 ms grace deadline"
    );
}

#[tokio::test]
async fn h3_client_sending_eols_within_grace_stays_connected() {
    let b = start_with(hb_config(0, 100)).await;
    let mut c = Client::tcp(b.tcp()).await;
    connect_hb(&mut c, "100,0").await;
    // 600 ms (four deadlines' worth) of EOLs every 50 ms; no frame may arrive.
    for _ in 0..12 {
        c.send_raw(b"\n").await;
        idle(&mut c, Duration::from_millis(50)).await;
    }
    c.send_raw(b"\r\n").await;
    c.subscribe("0", "/queue/alive", "auto").await;
}

#[tokio::test]
async fn h3_any_inbound_byte_counts_as_liveness() {
    let b = start_with(hb_config(0, 100)).await;
    let mut c = Client::tcp(b.tcp()).await;
    connect_hb(&mut c, "100,0").await;
    // One SEND trickled in 3-byte pieces every 50 ms: ~700 ms with no complete frame
    // and no EOL heart-beat, only bytes.
    let frame = b"SEND\ndestination:/queue/trickle\nreceipt:slow\n\nhello\0";
    for (i, piece) in frame.chunks(3).enumerate() {
        if i > 0 {
            idle(&mut c, Duration::from_millis(50)).await;
        }
        c.send_raw(piece).await;
    }
    let r = c.expect(Command::Receipt).await;
    assert_eq!(r.headers.get("receipt-id"), Some("slow"));
}

#[tokio::test]
async fn h5_send_ms_zero_advertises_zero_and_sends_nothing() {
    let b = start_with(hb_config(0, 3_000)).await;
    let mut c = Client::tcp(b.tcp()).await;
    let f = connect_hb(&mut c, "0,100").await;
    assert_eq!(f.headers.get("heart-beat"), Some("0,3000"));
    idle(&mut c, Duration::from_millis(500)).await;
    assert_eq!(c.heartbeats, 0, "advertised 0 but sent heart-beats");
}

#[tokio::test]
async fn w3_ws_heartbeats_are_newline_messages() {
    let b = start_with(hb_config(100, 0)).await;
    let (mut c, _) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
    let f = connect_hb(&mut c, "0,100").await;
    assert_eq!(f.headers.get("heart-beat"), Some("100,0"));
    idle(&mut c, Duration::from_millis(600)).await;
    assert!(c.heartbeats > 0, "no heart-beat over WebSocket");
    // Each heart-beat is its own message (text, as the frames are binary here): one
    // EOL per text message, and the CONNECTED frame was the only binary one.
    let text = c.ws_binary.iter().filter(|binary| !**binary).count();
    let binary = c.ws_binary.len() - text;
    assert_eq!(text, c.heartbeats, "messages: {:?}", c.ws_binary);
    assert_eq!(binary, 1, "messages: {:?}", c.ws_binary);
}

#[tokio::test]
async fn h4_ws_silent_client_gets_error_then_close_1001() {
    let b = start_with(hb_config(0, 100)).await;
    let (mut c, _) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
    connect_hb(&mut c, "100,0").await;
    let e = c.expect(Command::Error).await;
    let message = e.headers.get("message").unwrap_or_default();
    assert!(message.contains("heart-beat"), "ERROR {message:?}");
    assert_eq!(close_code(c.expect_closed().await), 1001);
}

#[tokio::test]
async fn h3_ws_client_eol_messages_keep_it_alive() {
    let b = start_with(hb_config(0, 100)).await;
    let (mut c, _) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
    connect_hb(&mut c, "100,0").await;
    for _ in 0..12 {
        c.send_text("\n").await;
        idle(&mut c, Duration::from_millis(50)).await;
    }
    c.subscribe("0", "/queue/ws-alive", "auto").await;
}

#[tokio::test]
async fn h1_huge_heartbeat_values_are_valid_and_harmless() {
    // Two non-negative integers, however large: the session must carry on (the
    // intervals are simply too long to matter), or refuse with ERROR; never just die.
    let b = start_with(hb_config(100, 100)).await;
    for huge in [
        "18446744073709551615,0",
        "0,18446744073709551615",
        "18446744073709551615,18446744073709551615",
    ] {
        let mut c = Client::tcp(b.tcp()).await;
        c.send(&format!(
            "CONNECT\naccept-version:1.2\nhost:h\nheart-beat:{huge}\n\n"
        ))
        .await;
        let f = c.frame().await;
        if f.command == Command::Error {
            c.expect_closed().await;
            continue;
        }
        assert_eq!(f.command, Command::Connected, "{f:?}");
        c.send("SUBSCRIBE\nid:0\ndestination:/queue/huge\nreceipt:r\n\n")
            .await;
        match c.next_frame_within(WAIT).await {
            Some(r) => assert_eq!(r.command, Command::Receipt, "heart-beat:{huge}: {r:?}"),
            None => panic!(
                "heart-beat:{huge}: connection ended ({:?}) after CONNECTED, no RECEIPT",
                c.ending
            ),
        }
    }
}

#[tokio::test]
async fn h4_eols_sent_while_a_send_waits_for_queue_room_still_count() {
    // The producer's SEND waits for room in a full queue for longer than the read
    // deadline, while the client keeps sending EOLs: it must not be dropped for
    // silence once the SEND goes through. Repeated: a broker that did not read while
    // waiting may still pick the pending bytes over its expired deadline by luck.
    let mut cfg = hb_config(0, 100);
    cfg.queues.max_depth = 1;
    cfg.queues.send_timeout_ms = 5_000;
    let b = start_with(cfg).await;
    let mut consumer = Client::tcp(b.tcp()).await;
    consumer.connect().await;
    consumer
        .subscribe("0", "/queue/busy", "client-individual")
        .await;
    let mut producer = Client::tcp(b.tcp()).await;
    connect_hb(&mut producer, "100,0").await;
    producer.send("SEND\ndestination:/queue/busy\n\nm0").await;
    let mut held = consumer.expect(Command::Message).await;

    for i in 1..=24 {
        producer
            .send(&format!(
                "SEND\ndestination:/queue/busy\nreceipt:r{i}\n\nm{i}"
            ))
            .await;
        // 200 ms (past the 150 ms deadline) of EOLs while the SEND waits.
        for _ in 0..4 {
            producer.send_raw(b"\n").await;
            quiet(&mut producer, Duration::from_millis(50), i).await;
        }
        producer.send_raw(b"\n").await;
        let ack = held.headers.get("ack").unwrap().to_owned();
        consumer.send(&format!("ACK\nid:{ack}\n\n")).await;
        let r = producer.frame().await;
        assert_eq!(r.command, Command::Receipt, "round {i}: {r:?}");
        // Right after the wait: still connected, still served.
        producer.send_raw(b"\n").await;
        quiet(&mut producer, Duration::from_millis(20), i).await;
        held = consumer.expect(Command::Message).await;
        assert_eq!(held.body, format!("m{i}").as_bytes());
    }
    producer.subscribe("0", "/queue/other", "auto").await;
}
