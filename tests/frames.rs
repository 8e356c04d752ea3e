//! The wire format end to end, and bad input: every malformed frame gets ERROR and a
//! close, and nobody else notices (checklist F2–F11, B1–B4, W2–W4).

mod common;

use std::time::Duration;

use common::*;
use stompbox::config::WsMessageType;
use stompbox::frame::Command;
use tokio_tungstenite::tungstenite::Message;

/// Two connected clients, the second subscribed to `/queue/f`.
async fn pair(b: &TestBroker) -> (Client, Client) {
    let producer = connected(b).await;
    let mut consumer = connected(b).await;
    consumer.subscribe("0", "/queue/f", "auto").await;
    (producer, consumer)
}

#[tokio::test]
async fn f2_lower_case_command_is_not_send() {
    let b = start().await;
    let (mut p, mut c) = pair(&b).await;
    p.send("send\ndestination:/queue/f\n\nx").await;
    let e = p.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .unwrap()
            .contains("unknown command")
    );
    c.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn f3_eols_after_nul_are_skipped() {
    let b = start().await;
    let (mut p, mut c) = pair(&b).await;
    p.send_raw(
        b"SEND\ndestination:/queue/f\n\none\0\n\n\r\n\nSEND\ndestination:/queue/f\n\ntwo\0\n",
    )
    .await;
    assert_eq!(&c.expect(Command::Message).await.body[..], b"one");
    assert_eq!(&c.expect(Command::Message).await.body[..], b"two");
}

#[tokio::test]
async fn f4_f6_escaped_headers_decode_and_re_encode() {
    let b = start().await;
    let (mut p, mut c) = pair(&b).await;
    p.send_raw(b"SEND\ndestination:/queue/f\na\\cb:c\\\\d\\ne\\rf\n\n\0")
        .await;
    let m = c.expect(Command::Message).await;
    // The harness parser decodes, so equality here means the broker re-escaped.
    assert_eq!(m.headers.get("a:b"), Some("c\\d\ne\rf"));
}

#[tokio::test]
async fn f6_receipt_ids_are_escaped() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.send_raw(b"BEGIN\ntransaction:t\nreceipt:x\\cy\n\n\0")
        .await;
    let r = c.expect(Command::Receipt).await;
    assert_eq!(r.headers.get("receipt-id"), Some("x:y"));
}

#[tokio::test]
async fn f5_undefined_escape_is_fatal() {
    let b = start().await;
    let (mut p, mut c) = pair(&b).await;
    p.send("SEND\ndestination:/queue/f\nx:a\\tb\n\nbody").await;
    let e = p.expect_error_and_close().await;
    assert!(e.headers.get("message").unwrap().contains("escape"));
    c.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn f7_header_values_are_not_trimmed() {
    let b = start().await;
    let (mut p, mut c) = pair(&b).await;
    p.send("SEND\ndestination:/queue/f\nfoo: bar \n\n").await;
    let m = c.expect(Command::Message).await;
    assert_eq!(m.headers.get("foo"), Some(" bar "));
}

#[tokio::test]
async fn f8_body_on_subscribe_is_an_error() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.send("SUBSCRIBE\nid:1\ndestination:/queue/x\n\nbody")
        .await;
    let e = c.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .unwrap()
            .contains("must not have a body")
    );
}

#[tokio::test]
async fn f10_first_header_occurrence_wins() {
    let b = start().await;
    let (mut p, mut c) = pair(&b).await;
    let mut other = connected(&b).await;
    other.subscribe("0", "/queue/f-other", "auto").await;
    p.send("SEND\ndestination:/queue/f\ndestination:/queue/f-other\nx:1\nx:2\n\n")
        .await;
    let m = c.expect(Command::Message).await;
    assert_eq!(m.headers.get("destination"), Some("/queue/f"));
    assert_eq!(m.headers.get("x"), Some("1"));
    other.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn f10_client_cannot_forge_subscription_or_message_id() {
    let b = start().await;
    let (mut p, mut c) = pair(&b).await;
    p.send("SEND\ndestination:/queue/f\nsubscription:evil\nmessage-id:evil\nack:evil\n\n")
        .await;
    let m = c.expect(Command::Message).await;
    assert_eq!(m.headers.get("subscription"), Some("0"));
    assert_ne!(m.headers.get("message-id"), Some("evil"));
    assert_eq!(m.headers.get("ack"), None);
}

#[tokio::test]
async fn f11_header_line_without_colon_is_malformed() {
    let b = start().await;
    for bad in [
        "SEND\ndestination:/queue/f\nnocolon\n\n",
        "SEND\n:empty-name\n\n",
    ] {
        let mut c = connected(&b).await;
        c.send(bad).await;
        let e = c.expect_error_and_close().await;
        assert!(
            e.headers
                .get("message")
                .unwrap()
                .contains("malformed header"),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn b1_content_length_body_with_nuls() {
    let b = start().await;
    let (mut p, mut c) = pair(&b).await;
    p.send_raw(b"SEND\ndestination:/queue/f\ncontent-length:3\n\n\0\0\0\0")
        .await;
    let m = c.expect(Command::Message).await;
    assert_eq!(&m.body[..], b"\0\0\0");
    assert_eq!(m.headers.get("content-length"), Some("3"));
}

#[tokio::test]
async fn b1_wrong_byte_after_content_length_is_a_framing_error() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.send_raw(b"SEND\ndestination:/queue/f\ncontent-length:2\n\nabc\0")
        .await;
    let e = c.expect_error_and_close().await;
    assert!(e.headers.get("message").unwrap().contains("NUL"));
}

#[tokio::test]
async fn b2_content_length_counts_utf8_octets() {
    let b = start().await;
    let (mut p, mut c) = pair(&b).await;
    let body = "héllo ✓";
    p.send(&format!(
        "SEND\ndestination:/queue/f\ncontent-length:{}\n\n{body}",
        body.len()
    ))
    .await;
    let m = c.expect(Command::Message).await;
    assert_eq!(std::str::from_utf8(&m.body).unwrap(), body);
    assert_eq!(m.headers.get("content-length"), Some("10"));
}

#[tokio::test]
async fn b3_b4_content_type_passes_through_and_binary_is_untouched() {
    let b = start().await;
    let (mut p, mut c) = pair(&b).await;
    let body: Vec<u8> = (0..=255u8).collect();
    let mut frame = format!(
        "SEND\ndestination:/queue/f\ncontent-type:application/octet-stream\ncontent-length:{}\n\n",
        body.len()
    )
    .into_bytes();
    frame.extend_from_slice(&body);
    frame.push(0);
    p.send_raw(&frame).await;
    let m = c.expect(Command::Message).await;
    assert_eq!(&m.body[..], &body[..]);
    assert_eq!(
        m.headers.get("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(m.headers.get("content-length"), Some("256"));
}

#[tokio::test]
async fn garbage_gets_error_and_close_others_carry_on() {
    let b = start().await;
    let (mut p, mut c) = pair(&b).await;
    let mut bad = Client::tcp(b.tcp()).await;
    bad.send_raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\n\n\0")
        .await;
    let e = bad.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .unwrap()
            .contains("unknown command")
    );
    p.publish("/queue/f", "still here").await;
    assert_eq!(&c.expect(Command::Message).await.body[..], b"still here");
}

#[tokio::test]
async fn frame_cut_mid_body_by_closed_socket_loses_nothing_accepted() {
    let b = start().await;
    let mut p = connected(&b).await;
    p.publish("/queue/cut", "accepted").await;
    // A second frame is cut off mid-body and the socket dies.
    p.send_raw(b"SEND\ndestination:/queue/cut\ncontent-length:100\n\npartial")
        .await;
    drop(p);
    let mut c = connected(&b).await;
    c.send("SUBSCRIBE\nid:0\ndestination:/queue/cut\nreceipt:s\n\n")
        .await;
    // S13: the backlog the SUBSCRIBE caused comes before its receipt.
    assert_eq!(&c.expect(Command::Message).await.body[..], b"accepted");
    c.expect(Command::Receipt).await;
    c.expect_silence(Duration::from_millis(200)).await;
    let mut again = connected(&b).await;
    again.publish("/queue/cut", "later").await;
    assert_eq!(&c.expect(Command::Message).await.body[..], b"later");
}

#[tokio::test]
async fn w2_frame_split_across_ws_messages_and_several_frames_in_one() {
    let b = start().await;
    let (mut c, _) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
    c.send_raw(b"CONNECT\naccept-ver").await;
    c.send_raw(
        b"sion:1.2\nhost:h\n\n\0SUBSCRIBE\nid:0\ndestination:/queue/w2\n\n\0SEND\ndestination:/q",
    )
    .await;
    c.send_raw(b"ueue/w2\n\nhello\0SEND\ndestination:/queue/w2\n\nworld\0")
        .await;
    c.expect(Command::Connected).await;
    assert_eq!(&c.expect(Command::Message).await.body[..], b"hello");
    assert_eq!(&c.expect(Command::Message).await.body[..], b"world");
}

#[tokio::test]
async fn w3_text_and_binary_in_binary_out_by_default() {
    let b = start().await;
    let (mut c, _) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
    c.send_text("CONNECT\naccept-version:1.2\nhost:h\n\n\0")
        .await;
    c.expect(Command::Connected).await;
    c.send_text("SUBSCRIBE\nid:0\ndestination:/topic/w3\n\n\0")
        .await;
    c.send_raw(b"SEND\ndestination:/topic/w3\n\nbin\0").await;
    assert_eq!(&c.expect(Command::Message).await.body[..], b"bin");
    assert!(
        c.ws_binary.iter().all(|binary| *binary),
        "{:?}",
        c.ws_binary
    );
}

#[tokio::test]
async fn w3_text_messages_when_configured_binary_when_not_utf8() {
    let mut cfg = config();
    cfg.listeners.ws_message_type = WsMessageType::Text;
    let b = start_with(cfg).await;
    let (mut c, _) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
    c.connect().await;
    c.send("SUBSCRIBE\nid:0\ndestination:/topic/w3\n\n").await;
    c.send("SEND\ndestination:/topic/w3\n\ntext ✓").await;
    c.send_raw(b"SEND\ndestination:/topic/w3\ncontent-length:2\n\n\xff\xfe\0")
        .await;
    assert_eq!(c.expect(Command::Message).await.body.len(), "text ✓".len());
    assert_eq!(&c.expect(Command::Message).await.body[..], b"\xff\xfe");
    // CONNECTED and the first MESSAGE as text; the non-UTF-8 one as binary.
    assert_eq!(c.ws_binary, vec![false, false, true]);
}

#[tokio::test]
async fn w4_protocol_error_gets_error_then_close_1002() {
    let b = start().await;
    let (mut c, _) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
    c.connect().await;
    c.send_ws(Message::binary(b"this is not STOMP\n\n\0".to_vec()))
        .await;
    let e = c.expect(Command::Error).await;
    assert!(
        e.headers
            .get("message")
            .unwrap()
            .contains("unknown command")
    );
    assert_eq!(close_code(c.expect_closed().await), 1002);
}

#[tokio::test]
async fn w4_invalid_utf8_header_closes_1007() {
    let b = start().await;
    let (mut c, _) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
    c.connect().await;
    c.send_raw(b"SEND\ndestination:/queue/\xff\n\n\0").await;
    c.expect(Command::Error).await;
    assert_eq!(close_code(c.expect_closed().await), 1007);
}

#[tokio::test]
async fn disconnect_gets_receipt_then_close_1000() {
    let b = start().await;
    let (mut c, _) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
    c.connect().await;
    c.send("DISCONNECT\nreceipt:bye\n\n").await;
    let r = c.expect(Command::Receipt).await;
    assert_eq!(r.headers.get("receipt-id"), Some("bye"));
    assert_eq!(close_code(c.expect_closed().await), 1000);
}
