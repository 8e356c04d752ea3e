//! `stompbox-conformance --url tcp://HOST:PORT | ws://HOST:PORT/PATH`
//!
//! Exit status: 0 when every MUST passed (and, with `--expect`, nothing differed from
//! the expected results); 1 when a MUST failed; 2 on a difference from `--expect`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use stompbox_conformance::report::Expected;
use stompbox_conformance::{Options, Target, cases};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "STOMP conformance suite: checks any broker clause by clause, on the wire"
)]
struct Cli {
    /// tcp://HOST:PORT or ws://HOST:PORT/PATH
    #[arg(long)]
    url: Option<String>,
    /// CONNECT `login`.
    #[arg(long)]
    login: Option<String>,
    /// CONNECT `passcode`.
    #[arg(long)]
    passcode: Option<String>,
    /// CONNECT `host` (RabbitMQ: the vhost, e.g. `/`); defaults to the URL's host.
    #[arg(long)]
    host: Option<String>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Compare with an expected-results file (keyed by transport) and fail on any difference.
    #[arg(long, value_name = "FILE")]
    expect: Option<PathBuf>,
    /// How long one expected frame may take, in ms.
    #[arg(long, default_value_t = 3000)]
    wait_ms: u64,
    /// How long "nothing arrives" is watched for, in ms.
    #[arg(long, default_value_t = 400)]
    quiet_ms: u64,
    /// The most one case may take, in seconds.
    #[arg(long, default_value_t = 45)]
    case_timeout: u64,
    /// Run only cases whose id starts with one of these (comma-separated, e.g. F,H2).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// List the cases and exit.
    #[arg(long)]
    list: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if cli.list {
        for c in cases::all() {
            let only = if c.ws_only { " (WebSocket only)" } else { "" };
            println!("{:<12} {:<6} {}{only}", c.id, c.level.as_str(), c.title);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(url) = cli.url else {
        bail!("--url is required (tcp://HOST:PORT or ws://HOST:PORT/PATH)");
    };
    let target = Target::parse(&url).map_err(anyhow::Error::msg)?;
    let expected = match &cli.expect {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let all: Expected = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            let Some(mine) = all.get(target.transport()).cloned() else {
                bail!("{} has no {:?} results", path.display(), target.transport());
            };
            Some(mine)
        }
        None => None,
    };
    let mut opts = Options::new(target);
    opts.login = cli.login;
    opts.passcode = cli.passcode;
    opts.host = cli.host;
    opts.wait = Duration::from_millis(cli.wait_ms);
    opts.quiet = Duration::from_millis(cli.quiet_ms);
    opts.case_timeout = Duration::from_secs(cli.case_timeout);
    opts.only = cli.only;

    let report = stompbox_conformance::run(opts).await;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    let mut code = if report.must_passed() { 0 } else { 1 };
    if let Some(expected) = expected {
        let diff = report.diff(&expected);
        if !diff.is_empty() {
            eprintln!("differences from the expected results:");
            for d in &diff {
                eprintln!("  {d}");
            }
            code = 2;
        }
    }
    Ok(ExitCode::from(code))
}
