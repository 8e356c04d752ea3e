//! The `stompbox` binary: flags, config, logging, and waiting for a signal.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stompbox::{Broker, Config};

/// A STOMP 1.0–1.2 message broker over TCP and WebSocket.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file; without it the embedded defaults (broker.toml) are used.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override `listeners.tcp` (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    tcp: Option<SocketAddr>,
    /// Override `listeners.ws` (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    ws: Option<SocketAddr>,
    /// Override `admin.listen` ("" turns the admin listener off).
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Override `store.data_dir` ("" keeps every message in memory only).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// Print the default configuration file and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read a passcode on stdin (its first line) and print its argon2id hash, for
    /// `passcode_hash` in `[[auth.users]]`.
    HashPassword,
}

/// Runs the broker; an error that stops it is one line on stderr (no backtrace, whatever
/// `RUST_BACKTRACE` says: it names what failed and what to change) and exit status 1.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The causes in order, each once (an error often repeats its source).
            let mut line = String::new();
            for cause in e.chain().map(ToString::to_string) {
                if !line.ends_with(&cause) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(&cause);
                }
            }
            eprintln!("stompbox: {line}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::HashPassword) = args.command {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the passcode from stdin")?;
        let passcode = line.trim_end_matches(['\r', '\n']);
        anyhow::ensure!(!passcode.is_empty(), "no passcode on stdin");
        println!("{}", stompbox::auth::hash_password(passcode));
        return Ok(());
    }
    if args.print_config {
        print!("{}", stompbox::config::DEFAULT_TOML);
        return Ok(());
    }
    init_logging();
    let mut config = match &args.config {
        Some(path) => Config::load(path).with_context(|| format!("loading {}", path.display()))?,
        None => Config::from_toml(stompbox::config::DEFAULT_TOML).context("embedded defaults")?,
    };
    if let Some(addr) = args.tcp {
        config.listeners.tcp = addr;
    }
    if let Some(addr) = args.ws {
        config.listeners.ws = addr;
    }
    if let Some(addr) = args.admin {
        config.admin.listen = addr;
        config.validate().context("--admin")?;
    }
    if let Some(dir) = args.data_dir {
        config.store.data_dir = dir;
    }
    let threads = match config.runtime.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async {
            let broker = Broker::start(config).await?;
            shutdown_signal().await?;
            tracing::info!("shutting down");
            broker.shutdown().await;
            Ok(())
        })
}

/// Logs to stderr through a filter (`RUST_LOG`, default `info`) that the admin API
/// can replace while the broker runs.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt, reload};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    stompbox::admin::install_log_level(Box::new(stompbox::admin::ReloadableFilter(handle)));
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
