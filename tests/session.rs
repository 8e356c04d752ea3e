//! Client frames and server frames: SEND, SUBSCRIBE, ACK/NACK, transactions,
//! receipts, DISCONNECT and ERROR (checklist S1–S14, M1–M3, E1–E2).

mod common;

use std::time::Duration;

use common::*;
use stompbox::frame::{Command, Frame};

fn ack_of(m: &Frame) -> String {
    m.headers.get("ack").expect("ack header").to_owned()
}

#[tokio::test]
async fn s1_send_without_destination_is_an_error() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.send("SEND\nreceipt:r1\n\nx").await;
    let e = c.expect_error_and_close().await;
    assert_eq!(
        e.headers.get("message"),
        Some("SEND frame requires a 'destination' header")
    );
    assert_eq!(e.headers.get("receipt-id"), Some("r1"));
}

#[tokio::test]
async fn s1_unsupported_destination_is_an_error() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.send("SEND\ndestination:/exchange/x\n\nx").await;
    let e = c.expect_error_and_close().await;
    assert!(e.headers.get("message").unwrap().contains("/queue/NAME"));
}

#[tokio::test]
async fn s2_m1_user_headers_pass_through_and_message_headers_are_set() {
    let b = start().await;
    let mut sub = connected(&b).await;
    sub.subscribe("s-1", "/queue/s2", "auto").await;
    let mut p = connected(&b).await;
    p.send("SEND\ndestination:/queue/s2\ncustom:yes\npersistent:true\n\nbody")
        .await;
    p.send("SEND\ndestination:/queue/s2\n\nbody2").await;
    let m1 = sub.expect(Command::Message).await;
    let m2 = sub.expect(Command::Message).await;
    assert_eq!(m1.headers.get("custom"), Some("yes"));
    assert_eq!(m1.headers.get("persistent"), Some("true"));
    assert_eq!(m1.headers.get("destination"), Some("/queue/s2"));
    assert_eq!(m1.headers.get("subscription"), Some("s-1"));
    assert!(m1.headers.get("message-id").is_some());
    assert_ne!(m1.headers.get("message-id"), m2.headers.get("message-id"));
    // M2 only applies to client acks: none on an auto subscription.
    assert_eq!(m1.headers.get("ack"), None);
}

#[tokio::test]
async fn s3_transactional_sends_wait_for_commit_and_abort_discards() {
    let b = start().await;
    let mut sub = connected(&b).await;
    sub.subscribe("0", "/queue/s3", "auto").await;
    let mut p = connected(&b).await;
    p.send("BEGIN\ntransaction:t1\n\n").await;
    p.send("SEND\ndestination:/queue/s3\ntransaction:t1\n\none")
        .await;
    p.send("SEND\ndestination:/queue/s3\ntransaction:t1\n\ntwo")
        .await;
    sub.expect_silence(Duration::from_millis(200)).await;
    p.send("COMMIT\ntransaction:t1\nreceipt:c\n\n").await;
    p.expect(Command::Receipt).await;
    let m = sub.expect(Command::Message).await;
    assert_eq!(&m.body[..], b"one");
    assert_eq!(m.headers.get("transaction"), None);
    assert_eq!(&sub.expect(Command::Message).await.body[..], b"two");

    p.send("BEGIN\ntransaction:t2\n\n").await;
    p.send("SEND\ndestination:/queue/s3\ntransaction:t2\n\nnever")
        .await;
    p.send("ABORT\ntransaction:t2\nreceipt:a\n\n").await;
    p.expect(Command::Receipt).await;
    sub.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn s3_transactional_acks_apply_at_commit() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.subscribe("0", "/queue/s3a", "client-individual").await;
    c.publish("/queue/s3a", "m").await;
    let m = c.expect(Command::Message).await;
    c.send("BEGIN\ntransaction:t\n\n").await;
    c.send(&format!("ACK\nid:{}\ntransaction:t\n\n", ack_of(&m)))
        .await;
    c.send("ABORT\ntransaction:t\n\n").await;
    // Aborted, so the message is still unacked and the ack id still valid.
    c.send(&format!("ACK\nid:{}\nreceipt:ok\n\n", ack_of(&m)))
        .await;
    c.expect(Command::Receipt).await;
}

#[tokio::test]
async fn s4_subscribe_needs_destination_and_id() {
    let b = start().await;
    for (frame, missing) in [
        ("SUBSCRIBE\nid:1\n\n", "destination"),
        ("SUBSCRIBE\ndestination:/queue/x\n\n", "id"),
    ] {
        let mut c = connected(&b).await;
        c.send(frame).await;
        let e = c.expect_error_and_close().await;
        assert!(
            e.headers
                .get("message")
                .unwrap()
                .contains(&format!("'{missing}'")),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn s5_subscription_ids_are_unique_per_connection() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.subscribe("dup", "/queue/a", "auto").await;
    c.send("SUBSCRIBE\nid:dup\ndestination:/queue/b\n\n").await;
    let e = c.expect_error_and_close().await;
    assert!(e.headers.get("message").unwrap().contains("already in use"));
    // The same id on another connection is fine.
    let mut d = connected(&b).await;
    d.subscribe("dup", "/queue/a", "auto").await;
}

#[tokio::test]
async fn s6_unknown_ack_mode_is_an_error() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.send("SUBSCRIBE\nid:1\ndestination:/queue/a\nack:sometimes\n\n")
        .await;
    let e = c.expect_error_and_close().await;
    assert!(e.headers.get("message").unwrap().contains("ack mode"));
}

#[tokio::test]
async fn s7_client_ack_is_cumulative_client_individual_is_not() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.subscribe("cum", "/queue/s7c", "client").await;
    c.subscribe("ind", "/queue/s7i", "client-individual").await;
    for q in ["/queue/s7c", "/queue/s7i"] {
        for body in ["1", "2", "3"] {
            c.publish(q, body).await;
        }
    }
    let mut cum = Vec::new();
    let mut ind = Vec::new();
    for _ in 0..6 {
        let m = c.expect(Command::Message).await;
        match m.headers.get("subscription") {
            Some("cum") => cum.push(m),
            _ => ind.push(m),
        }
    }
    // ACK of the second `client` message settles the first too...
    c.send(&format!("ACK\nid:{}\n\n", ack_of(&cum[1]))).await;
    c.send(&format!("ACK\nid:{}\nreceipt:r\n\n", ack_of(&ind[1])))
        .await;
    c.expect(Command::Receipt).await;
    // ...while client-individual left the first unacked: it can still be acked.
    c.send(&format!("ACK\nid:{}\nreceipt:r2\n\n", ack_of(&ind[0])))
        .await;
    c.expect(Command::Receipt).await;
    c.send(&format!("ACK\nid:{}\n\n", ack_of(&cum[0]))).await;
    let e = c.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .unwrap()
            .contains("no unacknowledged message")
    );
}

#[tokio::test]
async fn s8_unsubscribe_unknown_is_an_error_and_unsubscribe_stops_messages() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.subscribe("0", "/topic/s8", "auto").await;
    c.send("UNSUBSCRIBE\nid:0\nreceipt:u\n\n").await;
    c.expect(Command::Receipt).await;
    let mut p = connected(&b).await;
    p.publish("/topic/s8", "after").await;
    c.expect_silence(Duration::from_millis(200)).await;
    c.send("UNSUBSCRIBE\nid:0\n\n").await;
    let e = c.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .unwrap()
            .contains("no subscription")
    );
}

#[tokio::test]
async fn s9_ack_unknown_or_repeated_id_is_an_error() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.subscribe("0", "/queue/s9", "client-individual").await;
    c.publish("/queue/s9", "m").await;
    let m = c.expect(Command::Message).await;
    c.send(&format!("ACK\nid:{}\nreceipt:once\n\n", ack_of(&m)))
        .await;
    c.expect(Command::Receipt).await;
    c.send(&format!("ACK\nid:{}\nreceipt:twice\n\n", ack_of(&m)))
        .await;
    let e = c.expect_error_and_close().await;
    assert_eq!(e.headers.get("receipt-id"), Some("twice"));

    let mut d = connected(&b).await;
    d.send("ACK\nid:made-up\n\n").await;
    d.expect_error_and_close().await;
}

#[tokio::test]
async fn s9_stomp_1_1_acks_by_message_id_and_subscription() {
    let b = start().await;
    let mut c = Client::tcp(b.tcp()).await;
    c.send("CONNECT\naccept-version:1.1\nhost:h\n\n").await;
    c.expect(Command::Connected).await;
    c.subscribe("0", "/queue/s9v11", "client").await;
    c.publish("/queue/s9v11", "m").await;
    let m = c.expect(Command::Message).await;
    let id = m.headers.get("message-id").unwrap();
    c.send(&format!(
        "ACK\nmessage-id:{id}\nsubscription:0\nreceipt:r\n\n"
    ))
    .await;
    c.expect(Command::Receipt).await;
    drop(c);
    // Acked, so nothing comes back after the consumer leaves.
    let mut d = connected(&b).await;
    d.subscribe("0", "/queue/s9v11", "auto").await;
    d.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn s10_nack_redelivers_with_headers_then_dead_letters() {
    let mut cfg = config();
    cfg.queues.max_redeliveries = 2;
    let b = start_with(cfg).await;
    let mut c = connected(&b).await;
    c.subscribe("0", "/queue/s10", "client-individual").await;
    c.publish("/queue/s10", "poison").await;
    let first = c.expect(Command::Message).await;
    assert_eq!(first.headers.get("redelivered"), None);
    let mut last = first.clone();
    for n in 1..=2 {
        c.send(&format!("NACK\nid:{}\n\n", ack_of(&last))).await;
        last = c.expect(Command::Message).await;
        assert_eq!(last.headers.get("redelivered"), Some("true"));
        assert_eq!(
            last.headers.get("redelivery-count"),
            Some(n.to_string().as_str())
        );
        assert_eq!(
            last.headers.get("message-id"),
            first.headers.get("message-id")
        );
    }
    c.send(&format!("NACK\nid:{}\n\n", ack_of(&last))).await;
    c.expect_silence(Duration::from_millis(200)).await;
    c.subscribe("dlq", "/queue/DLQ.s10", "auto").await;
    let dead = c.expect(Command::Message).await;
    assert_eq!(&dead.body[..], b"poison");
    assert_eq!(dead.headers.get("destination"), Some("/queue/DLQ.s10"));
    assert_eq!(dead.headers.get("original-destination"), Some("/queue/s10"));
}

/// Issue 18, finding 18: `original-destination` was not broker-owned, so a producer
/// could pre-set it (and `dead-letter-reason`) and the DLQ copy kept the forged value.
#[tokio::test]
async fn a_producer_cannot_forge_where_a_dead_letter_came_from() {
    let mut cfg = config();
    cfg.queues.max_redeliveries = 0;
    let b = start_with(cfg).await;
    let mut c = connected(&b).await;
    c.subscribe("0", "/queue/forged", "client-individual").await;
    c.send(
        "SEND\ndestination:/queue/forged\noriginal-destination:/queue/payroll\n\
         dead-letter-reason:audited\n\npoison",
    )
    .await;
    let m = c.expect(Command::Message).await;
    assert_eq!(m.headers.get("original-destination"), None, "{m:?}");
    assert_eq!(m.headers.get("dead-letter-reason"), None, "{m:?}");
    c.send(&format!("NACK\nid:{}\n\n", ack_of(&m))).await;
    c.subscribe("dlq", "/queue/DLQ.forged", "auto").await;
    let dead = c.expect(Command::Message).await;
    assert_eq!(&dead.body[..], b"poison");
    let originals: Vec<_> = dead
        .headers
        .iter()
        .filter(|(k, _)| *k == "original-destination")
        .collect();
    assert_eq!(originals, [("original-destination", "/queue/forged")]);
    assert_eq!(dead.headers.get("dead-letter-reason"), None, "{dead:?}");
}

#[tokio::test]
async fn s10_disconnect_with_unacked_redelivers_to_another_consumer() {
    let b = start().await;
    let mut first = connected(&b).await;
    first.subscribe("0", "/queue/s10d", "client").await;
    first.publish("/queue/s10d", "a").await;
    first.publish("/queue/s10d", "b").await;
    first.expect(Command::Message).await;
    first.expect(Command::Message).await;
    drop(first);
    let mut second = connected(&b).await;
    second
        .send("SUBSCRIBE\nid:0\ndestination:/queue/s10d\n\n")
        .await;
    for body in [b"a", b"b"] {
        let m = second.expect(Command::Message).await;
        assert_eq!(&m.body[..], body);
        assert_eq!(m.headers.get("redelivered"), Some("true"));
    }
}

#[tokio::test]
async fn s10_nack_is_cumulative_in_client_mode() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.subscribe("0", "/queue/s10c", "client").await;
    c.publish("/queue/s10c", "1").await;
    c.publish("/queue/s10c", "2").await;
    let _m1 = c.expect(Command::Message).await;
    let m2 = c.expect(Command::Message).await;
    c.send(&format!("NACK\nid:{}\n\n", ack_of(&m2))).await;
    let r1 = c.expect(Command::Message).await;
    let r2 = c.expect(Command::Message).await;
    assert_eq!((&r1.body[..], &r2.body[..]), (&b"1"[..], &b"2"[..]));
}

#[tokio::test]
async fn s11_transaction_ids_checked_and_open_ones_aborted_on_disconnect() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.send("BEGIN\ntransaction:t\n\n").await;
    c.send("BEGIN\ntransaction:t\n\n").await;
    let e = c.expect_error_and_close().await;
    assert!(e.headers.get("message").unwrap().contains("already open"));

    for bad in [
        "COMMIT\ntransaction:nope\n\n",
        "ABORT\ntransaction:nope\n\n",
        "BEGIN\n\n",
    ] {
        let mut c = connected(&b).await;
        c.send(bad).await;
        c.expect_error_and_close().await;
    }

    let mut sub = connected(&b).await;
    sub.subscribe("0", "/queue/s11", "auto").await;
    let mut p = connected(&b).await;
    p.send("BEGIN\ntransaction:t\n\n").await;
    p.send("SEND\ndestination:/queue/s11\ntransaction:t\n\nuncommitted")
        .await;
    p.send("DISCONNECT\nreceipt:bye\n\n").await;
    p.expect(Command::Receipt).await;
    sub.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn s12_disconnect_receipt_then_close_and_later_frames_ignored() {
    let b = start().await;
    let mut sub = connected(&b).await;
    sub.subscribe("0", "/queue/s12", "auto").await;
    let mut c = connected(&b).await;
    c.send_raw(b"DISCONNECT\nreceipt:77\n\n\0SEND\ndestination:/queue/s12\n\nignored\0")
        .await;
    let r = c.expect(Command::Receipt).await;
    assert_eq!(r.headers.get("receipt-id"), Some("77"));
    c.expect_closed().await;
    sub.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn s13_receipt_follows_the_messages_its_frame_caused() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.subscribe("0", "/topic/s13", "auto").await;
    c.send("SEND\ndestination:/topic/s13\nreceipt:after-message\n\nself")
        .await;
    assert_eq!(&c.expect(Command::Message).await.body[..], b"self");
    let r = c.expect(Command::Receipt).await;
    assert_eq!(r.headers.get("receipt-id"), Some("after-message"));
    // Receipts for every kind of frame, in order.
    c.send_raw(
        b"BEGIN\ntransaction:t\nreceipt:1\n\n\0ABORT\ntransaction:t\nreceipt:2\n\n\0\
          SUBSCRIBE\nid:x\ndestination:/queue/s13\nreceipt:3\n\n\0UNSUBSCRIBE\nid:x\nreceipt:4\n\n\0",
    )
    .await;
    for id in ["1", "2", "3", "4"] {
        assert_eq!(
            c.expect(Command::Receipt).await.headers.get("receipt-id"),
            Some(id)
        );
    }
}

#[tokio::test]
async fn s14_server_frames_from_clients_are_errors() {
    let b = start().await;
    for frame in [
        "MESSAGE\ndestination:/queue/x\n\n",
        "CONNECTED\n\n",
        "RECEIPT\n\n",
        "ERROR\n\n",
    ] {
        let mut c = connected(&b).await;
        c.send(frame).await;
        let e = c.expect_error_and_close().await;
        assert!(
            e.headers.get("message").unwrap().contains("server frame"),
            "{frame}"
        );
    }
}

#[tokio::test]
async fn m2_ack_header_on_client_subscriptions() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.subscribe("a", "/queue/m2a", "client").await;
    c.subscribe("b", "/topic/m2b", "client-individual").await;
    c.publish("/queue/m2a", "q").await;
    c.publish("/topic/m2b", "t").await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(ack_of(&c.expect(Command::Message).await));
    }
    assert_ne!(ids[0], ids[1]);
    for id in ids {
        c.send(&format!("ACK\nid:{id}\nreceipt:{id}\n\n")).await;
        c.expect(Command::Receipt).await;
    }
}

#[tokio::test]
async fn m3_receipt_carries_receipt_id() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.send("SEND\ndestination:/topic/m3\nreceipt:message-42\n\n")
        .await;
    let r = c.expect(Command::Receipt).await;
    assert_eq!(r.headers.get("receipt-id"), Some("message-42"));
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn e1_error_carries_message_receipt_id_and_body() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.send("SUBSCRIBE\nid:1\ndestination:/queue/x\nack:bogus\nreceipt:sub-1\n\n")
        .await;
    let e = c.expect_error_and_close().await;
    assert_eq!(e.headers.get("receipt-id"), Some("sub-1"));
    assert_eq!(e.headers.get("content-type"), Some("text/plain"));
    let message = e.headers.get("message").unwrap();
    assert!(std::str::from_utf8(&e.body).unwrap().contains(message));
}

#[tokio::test]
async fn e2_rapid_connect_error_close_still_delivers_the_error() {
    let b = start().await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let addr = b.tcp();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::tcp(addr).await;
            // The bad frame is followed by more bytes the broker will never read:
            // closing with unread input must not reset the connection before ERROR.
            let mut junk = format!("CONNECT\naccept-version:1.2\n\n\0bogus {i}\n\n\0").into_bytes();
            junk.extend(std::iter::repeat_n(b'x', 64 * 1024));
            c.send_raw(&junk).await;
            c.shutdown_write().await;
            c.expect(Command::Connected).await;
            c.expect_error_and_close().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut ok = connected(&b).await;
    ok.publish("/queue/e2", "fine").await;
}

#[tokio::test]
async fn stomp_1_0_subscribe_without_id_and_unsubscribe_by_destination() {
    let b = start().await;
    let mut c = Client::tcp(b.tcp()).await;
    c.send("CONNECT\n\n").await;
    assert_eq!(
        c.expect(Command::Connected).await.headers.get("version"),
        Some("1.0")
    );
    c.send("SUBSCRIBE\ndestination:/topic/old\nreceipt:s\n\n")
        .await;
    c.expect(Command::Receipt).await;
    c.publish("/topic/old", "hi").await;
    let m = c.expect(Command::Message).await;
    assert_eq!(m.headers.get("subscription"), Some("/topic/old"));
    c.send("UNSUBSCRIBE\ndestination:/topic/old\nreceipt:u\n\n")
        .await;
    c.expect(Command::Receipt).await;
    // NACK is accepted on 1.0 (as RabbitMQ does); an unknown id is still an error.
    c.send("NACK\nmessage-id:x\n\n").await;
    let e = c.expect_error_and_close().await;
    assert!(e.headers.get("message").unwrap().contains("\"x\""));
}
