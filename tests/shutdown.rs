//! Graceful shutdown: every session gets ERROR `broker shutting down` (WebSocket
//! clients then Close 1001, TCP clients EOF), new connections are refused, and
//! `BrokerHandle::shutdown()` finishes within `shutdown.drain_ms` + 1 s (checklist E1).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use stompbox::frame::{Command, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

const DRAIN_MS: u64 = 500;

fn drain_config() -> stompbox::Config {
    let mut cfg = config();
    cfg.shutdown.drain_ms = DRAIN_MS;
    cfg
}

/// The longest `shutdown()` may take.
fn budget() -> Duration {
    Duration::from_millis(DRAIN_MS) + Duration::from_secs(1)
}

fn assert_shutting_down(e: &Frame) {
    assert_eq!(e.command, Command::Error, "{e:?}");
    assert_eq!(e.headers.get("message"), Some("broker shutting down"));
}

/// A fresh connection to `addr` must not get a STOMP session: refused, or closed
/// without CONNECTED.
async fn assert_no_new_session(addr: SocketAddr) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return;
    };
    let _ = s
        .write_all(b"CONNECT\naccept-version:1.2\nhost:h\n\n\0")
        .await;
    let mut got = Vec::new();
    let read = timeout(WAIT, s.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "connection accepted and kept open during shutdown"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        !text.contains("CONNECTED"),
        "new session during shutdown: {text:?}"
    );
}

#[tokio::test]
async fn shutdown_errors_tcp_and_ws_sessions_then_closes() {
    let b = start_with(drain_config()).await;
    let tcp_addr = b.tcp();
    let ws_url = b.ws_url();
    let mut tcp = connected(&b).await;
    tcp.subscribe("0", "/queue/work", "client").await;
    let (mut ws, _) = Client::ws(&ws_url, &["v12.stomp"]).await;
    ws.connect().await;
    ws.subscribe("0", "/topic/news", "auto").await;

    let since = Instant::now();
    let shutdown = tokio::spawn(b.handle.shutdown());

    assert_shutting_down(&tcp.frame().await);
    assert_eq!(tcp.expect_closed().await, &Ending::Eof);
    assert_shutting_down(&ws.frame().await);
    assert_eq!(close_code(ws.expect_closed().await), 1001);
    drop(tcp);
    drop(ws);

    timeout(WAIT, shutdown)
        .await
        .expect("shutdown() returns")
        .expect("shutdown() does not panic");
    let took = since.elapsed();
    assert!(took < budget(), "shutdown took {took:?}");

    // The listeners are gone.
    assert!(TcpStream::connect(tcp_addr).await.is_err());
    assert!(
        tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn shutdown_refuses_connections_while_draining() {
    let b = start_with(drain_config()).await;
    let tcp_addr = b.tcp();
    let ws_addr = b.handle.ws_addr;
    // Stays open and silent, so the broker lingers on it for the drain time.
    let mut lingering = connected(&b).await;

    let shutdown = tokio::spawn(b.handle.shutdown());
    assert_shutting_down(&lingering.frame().await);
    assert_no_new_session(tcp_addr).await;
    assert_no_new_session(ws_addr).await;

    timeout(WAIT, shutdown)
        .await
        .expect("shutdown() returns")
        .expect("shutdown() does not panic");
}

#[tokio::test]
async fn shutdown_does_not_wait_for_clients_that_never_close() {
    let b = start_with(drain_config()).await;
    // Neither client reads nor closes until shutdown() has returned.
    let mut tcp = connected(&b).await;
    let (mut ws, _) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
    ws.connect().await;

    let since = Instant::now();
    timeout(WAIT, b.handle.shutdown())
        .await
        .expect("shutdown() returns");
    let took = since.elapsed();
    assert!(took < budget(), "shutdown took {took:?}");

    // The goodbyes were written before the sockets were closed.
    assert_shutting_down(&tcp.frame().await);
    assert_eq!(tcp.expect_closed().await, &Ending::Eof);
    assert_shutting_down(&ws.frame().await);
    assert_eq!(close_code(ws.expect_closed().await), 1001);
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_stalled_reader() {
    const N: usize = 64;
    const BODY: usize = 256 * 1024;
    let b = start_with(drain_config()).await;
    // Subscribed, then never reads: 16 MiB is more than its socket buffers hold, so
    // its writer is stuck when shutdown starts.
    let mut stalled = connected(&b).await;
    stalled.subscribe("0", "/queue/stall", "auto").await;
    let mut producer = connected(&b).await;
    let body = ".".repeat(BODY);
    for n in 0..N {
        producer
            .send(&format!(
                "SEND\ndestination:/queue/stall\nreceipt:p{n}\n\n{body}"
            ))
            .await;
        let r = producer.expect(Command::Receipt).await;
        assert_eq!(r.headers.get("receipt-id"), Some(format!("p{n}").as_str()));
    }

    let since = Instant::now();
    let shutdown = tokio::spawn(b.handle.shutdown());
    assert_shutting_down(&producer.frame().await);
    timeout(WAIT, shutdown)
        .await
        .expect("shutdown() returns")
        .expect("shutdown() does not panic");
    let took = since.elapsed();
    assert!(took < budget(), "shutdown took {took:?}");

    // The stalled connection is over: reading it now gets what was buffered, then the
    // end, within the usual deadline.
    let mut frames = 0;
    while let Some(f) = stalled.next_frame_within(WAIT).await {
        assert!(
            matches!(f.command, Command::Message | Command::Error),
            "{f:?}"
        );
        frames += 1;
    }
    assert!(stalled.ending.is_some());
    assert!(frames < N, "the reader was not stalled after all");
}

#[tokio::test]
async fn shutdown_drain_bounds_a_session_whose_outbox_is_full() {
    use stompbox::metrics::Metrics;

    const DRAIN: u64 = 1_000;
    const N: usize = 128;
    const BODY: usize = 64 * 1024;
    let mut cfg = config();
    cfg.shutdown.drain_ms = DRAIN;
    // A small outbox that a stalled reader fills with frames, so even the session's
    // own final ERROR has to wait for room.
    cfg.outbox.max_frames = 4;
    let b = start_with(cfg).await;
    let metrics = b.handle.router().metrics().clone();
    let mut stalled = connected(&b).await;
    stalled.subscribe("0", "/queue/stall", "auto").await;
    let mut producer = connected(&b).await;
    let body = ".".repeat(BODY);
    for n in 0..N {
        producer
            .send(&format!(
                "SEND\ndestination:/queue/stall\nreceipt:p{n}\n\n{body}"
            ))
            .await;
        producer.expect(Command::Receipt).await;
    }
    drop(producer);

    let since = Instant::now();
    timeout(WAIT, b.handle.shutdown())
        .await
        .expect("shutdown() returns");
    let took = since.elapsed();
    let budget = Duration::from_millis(DRAIN) + Duration::from_secs(1);
    // `shutdown.drain_ms`: sessions get this long to flush their final ERROR, then are
    // dropped. So when shutdown() returns, no connection is still being served.
    let open = Metrics::get(&metrics.connections_open);
    assert!(
        took < budget && open == 0,
        "shutdown() returned after {took:?} (budget {budget:?}) with {open} connection(s) \
         still being served"
    );

    let mut frames = 0;
    while stalled.next_frame_within(WAIT).await.is_some() {
        frames += 1;
    }
    assert!(stalled.ending.is_some());
    assert!(frames < N, "the reader was not stalled after all");
}

#[tokio::test]
async fn shutdown_interrupts_a_producer_waiting_on_a_full_queue() {
    use stompbox::metrics::Metrics;

    let mut cfg = drain_config();
    cfg.queues.max_depth = 1;
    cfg.queues.send_timeout_ms = 3_000;
    let b = start_with(cfg).await;
    let metrics = b.handle.router().metrics().clone();
    let mut producer = connected(&b).await;
    producer.publish("/queue/full", "fits").await;
    // No room and no consumer: this SEND waits up to send_timeout_ms for room.
    producer
        .send("SEND\ndestination:/queue/full\nreceipt:waiting\n\nwaits")
        .await;
    producer.expect_silence(Duration::from_millis(100)).await;

    let since = Instant::now();
    let shutdown = tokio::spawn(b.handle.shutdown());
    let e = producer.frame().await;
    let waited = since.elapsed();
    assert_eq!(
        e.headers.get("message"),
        Some("broker shutting down"),
        "after {waited:?}: {e:?}"
    );
    assert_eq!(producer.expect_closed().await, &Ending::Eof);
    drop(producer);
    timeout(WAIT, shutdown)
        .await
        .expect("shutdown() returns")
        .expect("shutdown() does not panic");
    let took = since.elapsed();
    let open = Metrics::get(&metrics.connections_open);
    assert!(
        took < budget() && open == 0,
        "shutdown() returned after {took:?} with {open} connection(s) still open"
    );
}
