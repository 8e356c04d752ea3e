//! Runs stompbox inside another program: start the broker on free ports, talk to it
//! over a plain TCP socket with raw STOMP frames, and shut it down.
//!
//! `cargo run --example embedded`

use std::time::Duration;

use stompbox::{Broker, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::default();
    config.listeners.tcp = "127.0.0.1:0".parse()?;
    config.listeners.ws = "127.0.0.1:0".parse()?;
    config.admin.listen = "127.0.0.1:0".into();
    let broker = Broker::start(config).await?;
    println!(
        "STOMP/TCP on {}, WebSocket on ws://{}/ws",
        broker.tcp_addr, broker.ws_addr
    );

    let mut socket = TcpStream::connect(broker.tcp_addr).await?;
    socket
        .write_all(
            b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0\
              SUBSCRIBE\nid:0\ndestination:/queue/greetings\n\n\0\
              SEND\ndestination:/queue/greetings\ncontent-type:text/plain\n\nhello from the same process\0",
        )
        .await?;
    let mut seen = Vec::new();
    while !seen.windows(7).any(|w| w == b"MESSAGE") || seen.last() != Some(&0) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut chunk)).await??;
        anyhow::ensure!(n > 0, "broker closed the connection");
        seen.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    let message = &text[text.find("MESSAGE").expect("checked above")..];
    println!("received:\n{}", message.trim_end_matches('\0'));

    broker.shutdown().await;
    Ok(())
}
