//! `stompbox-bench`: a load generator for STOMP 1.2 brokers over TCP and WebSocket.
//!
//! Modules: [`cli`] (flags), [`client`] (connections, setup handshake, batched writer),
//! [`scan`] (the zero-allocation receive scanner), `client::ws` (the lean WebSocket codec), [`scenarios`] (fanout, queue,
//! latency, idle), [`report`] (table and JSON), [`proc`] (broker CPU/RSS from /proc,
//! the tool's own CPU and fd limit).
//!
//! ```text
//! stompbox-bench --url tcp://127.0.0.1:61613 --pid $(pgrep -n stompbox) \
//!     fanout --subscribers 10 --size 1024 --messages 200000
//! stompbox-bench --url ws://127.0.0.1:15674/ws --label stompbox-ws latency --rate 10000
//! stompbox-bench --url ws://127.0.0.1:15699/ --raw fanout --subscribers 10   # ws_relay
//! ```

mod cli;
mod client;
mod proc;
mod report;
mod scan;
mod scenarios;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Scenario};
use client::Endpoint;
use scenarios::Ctx;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stompbox-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    proc::raise_nofile();
    let mut ep = Endpoint::parse(&cli.global.url)?;
    ep.tls_ca = cli.global.tls_ca.clone();
    if cli.global.raw && ep.ws_url.is_none() {
        anyhow::bail!("--raw needs a ws:// --url (it is the WebSocket relay baseline)");
    }
    if let Some(pid) = cli.global.pid {
        proc::cpu_seconds(pid)?;
    }
    let threads = cli.global.threads.max(1);
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    let json = cli.global.json;
    let ctx = Ctx::new(cli.global.clone(), ep);
    let row = rt.block_on(async move {
        match cli.scenario {
            Scenario::Fanout(a) => scenarios::fanout::run(ctx, a).await,
            Scenario::Queue(a) => scenarios::queue::run(ctx, a).await,
            Scenario::Latency(a) => scenarios::latency::run(ctx, a).await,
            Scenario::Idle(a) => scenarios::idle::run(ctx, a).await,
        }
    });
    // Do not wait for lingering tasks (closing sockets) beyond a moment.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    let row = row?;
    report::print(&[row], json, threads);
    Ok(())
}
