//! The performance floor for a STOMP broker built on tokio + tokio-tungstenite: a
//! WebSocket relay that does no STOMP at all.
//!
//! Every Text or Binary message received from any connection is forwarded to every
//! *other* connection. Each connection has a writer task fed by a bounded channel; the
//! reader `try_send`s and a full channel drops the message and counts it (like a topic
//! with the `drop` slow-consumer policy). The writer feeds everything queued, then
//! flushes once. Payloads are `Bytes`, shared between recipients, never copied. Any
//! path is accepted and no subprotocol is negotiated.
//!
//! ```sh
//! cargo run --release --example ws_relay -- 127.0.0.1:15699
//! stompbox-bench --url ws://127.0.0.1:15699/ --raw --pid <PID> fanout --subscribers 10
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Messages queued per connection: the same as stompbox's `outbox.max_frames`.
const QUEUE: usize = 1024;

#[derive(Default)]
struct Relay {
    peers: RwLock<HashMap<u64, mpsc::Sender<Message>>>,
    next_id: AtomicU64,
    relayed: AtomicU64,
    dropped: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:15699".into());
    let listener = TcpListener::bind(&addr).await?;
    println!(
        "ws_relay pid {} listening on ws://{}/",
        std::process::id(),
        listener.local_addr()?
    );
    let relay = Arc::new(Relay::default());
    tokio::spawn(report(relay.clone()));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(relay.clone(), stream));
    }
}

async fn serve(relay: Arc<Relay>, stream: TcpStream) {
    // The same 4 KiB read buffer as the broker's WebSocket transport (eagerly allocated).
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let id = relay.next_id.fetch_add(1, Relaxed);
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    relay.peers.write().unwrap().insert(id, tx);

    // Writer: take everything queued, feed it, flush once.
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            while let Some(m) = next {
                if sink.feed(m).await.is_err() {
                    return;
                }
                next = rx.try_recv().ok();
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });

    // Reader: fan each data message out to every other connection.
    while let Some(Ok(msg)) = source.next().await {
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                let (mut sent, mut dropped) = (0, 0);
                for (&peer, tx) in relay.peers.read().unwrap().iter() {
                    if peer != id {
                        // Cloning a message clones its `Bytes`: a reference count, no copy.
                        match tx.try_send(msg.clone()) {
                            Ok(()) => sent += 1,
                            Err(_) => dropped += 1,
                        }
                    }
                }
                relay.relayed.fetch_add(sent, Relaxed);
                relay.dropped.fetch_add(dropped, Relaxed);
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    relay.peers.write().unwrap().remove(&id);
    writer.abort();
}

/// Prints the counters every 5 s when they moved.
async fn report(relay: Arc<Relay>) {
    let mut last = (0, 0);
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = (relay.relayed.load(Relaxed), relay.dropped.load(Relaxed));
        if now != last {
            let conns = relay.peers.read().unwrap().len();
            println!("connections {conns}, relayed {}, dropped {}", now.0, now.1);
            last = now;
        }
    }
}
