//! Command-line flags. Global flags may be given before or after the scenario name.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Load generator for STOMP 1.2 brokers (stompbox, RabbitMQ, ActiveMQ) over TCP and
/// WebSocket. Every run is bounded by a message count and a wall-clock cap, and talks to
/// loopback only.
#[derive(Parser, Debug, Clone)]
#[command(name = "stompbox-bench", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Broker address: tcp://HOST:PORT, tls://HOST:PORT (STOMP over TLS, with
    /// --tls-ca) or ws://HOST:PORT/PATH (loopback only).
    #[arg(long, global = true, default_value = "tcp://127.0.0.1:61613")]
    pub url: String,
    /// For a `tls://` --url: the broker's certificate (PEM) to trust.
    #[arg(long, global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// CONNECT `login` header (RabbitMQ: guest).
    #[arg(long, global = true)]
    pub login: Option<String>,
    /// CONNECT `passcode` header (RabbitMQ: guest).
    #[arg(long, global = true)]
    pub passcode: Option<String>,
    /// CONNECT `host` header: the virtual host (RabbitMQ needs `/`; stompbox ignores it).
    #[arg(long, global = true, default_value = "/")]
    pub host: String,
    /// Messages to publish (fanout/queue: default 100000; latency: rate x seconds).
    #[arg(long, global = true)]
    pub messages: Option<u64>,
    /// Hard wall-clock cap on the measured phase, in seconds.
    #[arg(long, global = true, default_value_t = 30.0)]
    pub max_seconds: f64,
    /// Broker PID: report its CPU seconds (utime+stime) and RSS from /proc.
    #[arg(long, global = true)]
    pub pid: Option<u32>,
    /// Also print one JSON object per result line on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Free text put into the report (e.g. "stompbox-ws").
    #[arg(long, global = true, default_value = "")]
    pub label: String,
    /// Tokio worker threads of the tool itself (1 leaves the other core to the broker).
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    /// Relay baseline (examples/ws_relay.rs): no CONNECT/SUBSCRIBE/receipts; SEND frames
    /// go out as raw WebSocket binary messages, subscribers count every complete frame,
    /// and (fanout) each body carries a sequence number: the publisher stays at most
    /// window x receipt-every messages ahead of the slowest subscriber.
    #[arg(long, global = true)]
    pub raw: bool,
    /// Receipts a publisher may have outstanding (flow-control window).
    #[arg(long, global = true, default_value_t = 8)]
    pub window: usize,
    /// A publisher asks for a receipt every this many messages (also its write batch).
    #[arg(long, global = true, default_value_t = 256)]
    pub receipt_every: usize,
    /// WebSocket client: `lean` (this tool's codec: large reads, batched masked writes)
    /// or `tungstenite` (tokio-tungstenite, one message per frame; costs more CPU).
    #[arg(long, global = true, value_enum, default_value_t = WsClient::Lean)]
    pub ws_client: WsClient,
    /// Connections opened concurrently while setting up. Keep it at or below the
    /// broker's listen backlog (128 for std/tokio listeners): an overrun backlog drops
    /// SYNs, which the kernel retransmits only after 1 s.
    #[arg(long, global = true, default_value_t = 128)]
    pub connect_concurrency: usize,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum WsClient {
    Lean,
    Tungstenite,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// N topic subscribers, one publisher; delivered msg/s and loss.
    Fanout(FanoutArgs),
    /// P producers, C consumers on one queue; consumed msg/s.
    Queue(QueueArgs),
    /// One publisher at a fixed rate, one topic subscriber; end-to-end latency.
    Latency(LatencyArgs),
    /// K idle heart-beating connections; broker RSS per connection.
    Idle(IdleArgs),
}

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum AckMode {
    Auto,
    Client,
    ClientIndividual,
}

impl AckMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Auto => "auto",
            AckMode::Client => "client",
            AckMode::ClientIndividual => "client-individual",
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct QueueArgs {
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    #[arg(long, value_enum, default_value_t = AckMode::Auto)]
    pub ack: AckMode,
    /// Send `persistent:true`.
    #[arg(long)]
    pub persistent: bool,
    /// Body size in bytes.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// SUBSCRIBE `prefetch-count` (also sent as `activemq.prefetchSize`).
    #[arg(long, default_value_t = 1000)]
    pub prefetch: u32,
    /// With --ack client, ACK (cumulatively) every this many messages.
    #[arg(long, default_value_t = 100)]
    pub ack_every: u64,
}

#[derive(Args, Debug, Clone)]
pub struct LatencyArgs {
    /// Messages per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Publishing duration.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Body size in bytes (at least 16: the send timestamp is its first 16 hex digits).
    #[arg(long, default_value_t = 128)]
    pub size: usize,
}

#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// CONNECT `heart-beat:H,H`; each connection sends an EOL about every H ms.
    #[arg(long, default_value_t = 10_000)]
    pub heartbeat_ms: u64,
    /// How long to hold the connections open after the RSS sample.
    #[arg(long, default_value_t = 5)]
    pub hold_seconds: u64,
    /// Client sockets per local source address (127.0.0.1, 127.0.0.2, ...).
    #[arg(long, default_value_t = 25_000)]
    pub per_source_ip: usize,
}
