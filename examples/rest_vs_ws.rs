//! The classic "REST vs WebSocket" table, redone for stompbox: the time to publish N
//! messages as N HTTP POSTs (one request each, on one keep-alive connection) against
//! the same N as STOMP SEND frames over one WebSocket, for N = 10 … 10,000 and bodies of
//! 10 B … 10 KB. Each run ends when the broker has confirmed every message: a `204` per
//! POST; a RECEIPT for the last SEND (receipts come in order, after the frame is routed).
//!
//! Start a broker with the publish endpoint on, e.g.
//! `printf '[http]\npublish = true\n' > /tmp/rest.toml && stompbox --config /tmp/rest.toml`,
//! then `cargo run --release --example rest_vs_ws -- 127.0.0.1:15674`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const COUNTS: [usize; 4] = [10, 100, 1_000, 10_000];
const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
/// Every run is bounded in time, whatever the broker does.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// N POSTs, one after the other, each waiting for its response (as a browser's
/// `await fetch(...)` loop would).
async fn rest(addr: SocketAddr, n: usize, body: &[u8]) -> anyhow::Result<Duration> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut request = format!(
        "POST /api/publish?destination=/topic/rest-vs-ws HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let mut buf = vec![0u8; 4096];
    let start = Instant::now();
    for _ in 0..n {
        s.write_all(&request).await?;
        // A 204 has no body: the response ends at the blank line.
        let mut have = 0;
        loop {
            let got = s.read(&mut buf[have..]).await?;
            ensure!(got > 0, "broker closed the HTTP connection");
            have += got;
            if buf[..have].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        ensure!(
            buf.starts_with(b"HTTP/1.1 204"),
            "unexpected response: {}",
            String::from_utf8_lossy(&buf[..have])
        );
    }
    Ok(start.elapsed())
}

/// N SEND frames on one WebSocket, pipelined, with a receipt on the last one.
async fn websocket(addr: SocketAddr, n: usize, body: &[u8]) -> anyhow::Result<Duration> {
    let mut req = format!("ws://{addr}/ws").into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v12.stomp"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    ws.send(Message::binary(
        &b"CONNECT\naccept-version:1.2\nhost:/\n\n\0"[..],
    ))
    .await?;
    match ws.next().await {
        Some(Ok(m)) if m.clone().into_data().starts_with(b"CONNECTED") => {}
        other => bail!("no CONNECTED: {other:?}"),
    }
    let frame = |receipt: bool| {
        let mut f = format!(
            "SEND\ndestination:/topic/rest-vs-ws\ncontent-type:text/plain\ncontent-length:{}\n{}\n",
            body.len(),
            if receipt { "receipt:last\n" } else { "" }
        )
        .into_bytes();
        f.extend_from_slice(body);
        f.push(0);
        bytes::Bytes::from(f)
    };
    let (plain, last) = (frame(false), frame(true));
    let start = Instant::now();
    for i in 0..n {
        let f = if i + 1 == n {
            last.clone()
        } else {
            plain.clone()
        };
        ws.feed(Message::Binary(f)).await?;
    }
    ws.flush().await?;
    loop {
        match ws.next().await {
            Some(Ok(m)) if m.is_binary() || m.is_text() => {
                let data = m.into_data();
                if data.starts_with(b"RECEIPT") {
                    break;
                }
                ensure!(
                    !data.starts_with(b"ERROR"),
                    "{}",
                    String::from_utf8_lossy(&data)
                );
            }
            Some(Ok(_)) => {}
            other => bail!("connection ended before the receipt: {other:?}"),
        }
    }
    let elapsed = start.elapsed();
    ws.close(None).await.ok();
    Ok(elapsed)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:15674".into())
        .parse()
        .context("usage: rest_vs_ws HOST:PORT (the WebSocket port)")?;
    println!("| messages | body | REST (one POST each) | WebSocket (STOMP SEND) | ratio |");
    println!("|---:|---:|---:|---:|---:|");
    for n in COUNTS {
        for size in SIZES {
            let body = vec![b'x'; size];
            let r = tokio::time::timeout(RUN_LIMIT, rest(addr, n, &body)).await??;
            let w = tokio::time::timeout(RUN_LIMIT, websocket(addr, n, &body)).await??;
            println!(
                "| {n} | {size} B | {:.1} ms | {:.1} ms | {:.1}x |",
                r.as_secs_f64() * 1e3,
                w.as_secs_f64() * 1e3,
                r.as_secs_f64() / w.as_secs_f64()
            );
        }
    }
    Ok(())
}
