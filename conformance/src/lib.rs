//! stompbox-conformance: checks a STOMP broker, clause by clause, on the wire.
//!
//! Every case names its clause of `STOMP-CHECKLIST.md` (F, B, C, S, M, E, H, W) or one
//! of the delivery guarantees users rely on beyond the spec text (D). A case opens its
//! own connections, writes raw frames and judges only what comes back over the socket,
//! so it works against any broker: stompbox, RabbitMQ, ActiveMQ, or yours.
//!
//! Layout: [`wire`] reads frames independently of stompbox's parser, [`conn`] is one
//! bounded-wait connection over TCP or WebSocket, [`cases`] holds the cases, and
//! [`report`] turns results into a table, JSON, or a diff against expected results.

pub mod cases;
pub mod conn;
pub mod report;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use conn::Conn;
pub use report::{Report, Row};

/// A case failed; the message says what was expected and what the broker did.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Fail(pub String);

impl Fail {
    pub fn new(message: impl Into<String>) -> Fail {
        Fail(message.into())
    }

    /// Prefixes where in the case this happened.
    pub fn context(self, what: &str) -> Fail {
        Fail(format!("{what}: {}", self.0))
    }
}

/// Fails with `message` unless `condition` holds.
pub fn check(condition: bool, message: impl FnOnce() -> String) -> Result<(), Fail> {
    if condition {
        Ok(())
    } else {
        Err(Fail(message()))
    }
}

/// How binding the clause is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Must,
    Should,
    /// The spec leaves the behaviour to the server: the case reports what it chose.
    Choice,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
            Level::Choice => "CHOICE",
        }
    }
}

/// What a case found.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass(String),
    /// `choice` is short and stable (it is compared with expected results); `detail`
    /// may carry measurements.
    Choice {
        choice: String,
        detail: String,
    },
    Fail(String),
}

pub type CaseResult = Result<Outcome, Fail>;

pub fn pass(detail: impl Into<String>) -> CaseResult {
    Ok(Outcome::Pass(detail.into()))
}

pub fn chose(choice: impl Into<String>, detail: impl Into<String>) -> CaseResult {
    Ok(Outcome::Choice {
        choice: choice.into(),
        detail: detail.into(),
    })
}

/// Where the broker under test listens.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `host:port`
    Tcp(String),
    /// The whole `ws://` URL.
    Ws(String),
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        if let Some(rest) = url.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            if !rest.contains(':') {
                return Err(format!("{url}: give a port, e.g. tcp://127.0.0.1:61613"));
            }
            Ok(Target::Tcp(rest.to_string()))
        } else if url.starts_with("ws://") {
            Ok(Target::Ws(url.to_string()))
        } else if url.starts_with("wss://") {
            Err(
                "wss:// is not supported yet: run the suite against the plain ws:// listener"
                    .into(),
            )
        } else {
            Err(format!("{url}: the URL must start with tcp:// or ws://"))
        }
    }

    /// `tcp` or `ws`: the key of this run in an expected-results file.
    pub fn transport(&self) -> &'static str {
        match self {
            Target::Tcp(_) => "tcp",
            Target::Ws(_) => "ws",
        }
    }
}

/// How to reach and log in to the broker, and how long to wait.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: Target,
    pub login: Option<String>,
    pub passcode: Option<String>,
    /// The CONNECT `host` header (a vhost for RabbitMQ); defaults to the URL's host.
    pub host: Option<String>,
    /// How long any single expectation may take.
    pub wait: Duration,
    /// How long "nothing arrives" is watched for.
    pub quiet: Duration,
    /// The most a whole case may take (heart-beat cases may need longer waits).
    pub case_timeout: Duration,
    /// Run only cases whose id starts with one of these (empty: all).
    pub only: Vec<String>,
}

impl Options {
    pub fn new(target: Target) -> Options {
        Options {
            target,
            login: None,
            passcode: None,
            host: None,
            wait: Duration::from_secs(3),
            quiet: Duration::from_millis(400),
            case_timeout: Duration::from_secs(45),
            only: Vec::new(),
        }
    }
}

/// What every case is given.
pub struct Ctx {
    pub opts: Options,
    /// Makes this run's destinations unique, so runs never see each other's messages.
    pub run: String,
    /// One connection watched for heart-beats, shared by the H cases.
    pub(crate) heartbeat_watch: tokio::sync::OnceCell<Result<cases::heartbeat::Watch, Fail>>,
    /// One silent connection, shared by the H cases.
    pub(crate) silence_watch: tokio::sync::OnceCell<Result<cases::heartbeat::Silence, Fail>>,
}

impl Ctx {
    pub fn is_ws(&self) -> bool {
        matches!(self.opts.target, Target::Ws(_))
    }

    pub fn queue(&self, name: &str) -> String {
        format!("/queue/conformance-{}-{name}", self.run)
    }

    pub fn topic(&self, name: &str) -> String {
        format!("/topic/conformance-{}-{name}", self.run)
    }

    /// A transport connection, no STOMP yet. Over WebSocket it offers all three STOMP
    /// subprotocols, as stompjs does.
    pub async fn open(&self) -> Result<Conn, Fail> {
        match &self.opts.target {
            Target::Tcp(addr) => Conn::tcp(addr, self.opts.wait).await,
            Target::Ws(_) => Ok(self
                .open_ws(&["v12.stomp", "v11.stomp", "v10.stomp"])
                .await?
                .0),
        }
    }

    pub async fn open_ws(&self, protocols: &[&str]) -> Result<(Conn, Option<String>), Fail> {
        match &self.opts.target {
            Target::Ws(url) => Conn::ws(url, protocols, self.opts.wait).await,
            Target::Tcp(_) => Err(Fail::new("not a WebSocket target")),
        }
    }

    fn url_host(&self) -> String {
        let rest = match &self.opts.target {
            Target::Tcp(a) => a.as_str(),
            Target::Ws(u) => u.trim_start_matches("ws://"),
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        match authority.rfind(':') {
            Some(i) => authority[..i].to_string(),
            None => authority.to_string(),
        }
    }

    /// Login headers as raw CONNECT lines (CONNECT values are never escaped).
    pub fn login_lines(&self) -> String {
        let mut s = String::new();
        if let Some(l) = &self.opts.login {
            s.push_str(&format!("login:{l}\n"));
        }
        if let Some(p) = &self.opts.passcode {
            s.push_str(&format!("passcode:{p}\n"));
        }
        s
    }

    pub fn host_line(&self) -> String {
        format!(
            "host:{}\n",
            self.opts.host.clone().unwrap_or_else(|| self.url_host())
        )
    }

    /// A CONNECT frame for `accept-version` with the run's host and login, plus `extra`
    /// raw header lines (each ending in `\n`).
    pub fn connect_frame(&self, versions: &str, extra: &str) -> String {
        format!(
            "CONNECT\naccept-version:{versions}\n{}{}{extra}\n\0",
            self.host_line(),
            self.login_lines()
        )
    }

    /// A STOMP 1.2 session.
    pub async fn connect(&self) -> Result<Conn, Fail> {
        self.connect_with("").await
    }

    /// A STOMP 1.2 session whose CONNECT carries `extra` header lines.
    pub async fn connect_with(&self, extra: &str) -> Result<Conn, Fail> {
        let mut c = self.open().await?;
        c.send(self.connect_frame("1.2", extra)).await?;
        let f = c.frame().await.map_err(|e| e.context("CONNECT"))?;
        check(f.is("CONNECTED"), || format!("CONNECT got {}", f.summary()))?;
        check(f.header("version").as_deref() == Some("1.2"), || {
            format!(
                "asked for 1.2, CONNECTED says version {:?}",
                f.header("version")
            )
        })?;
        Ok(c)
    }
}

/// Runs the selected cases, in order, each bounded by `case_timeout`. Slow cases (those
/// that must watch a clock, like heart-beats) run alongside the others.
pub async fn run(opts: Options) -> Report {
    let started = Instant::now();
    let ctx = Arc::new(Ctx {
        run: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
        opts,
        heartbeat_watch: tokio::sync::OnceCell::new(),
        silence_watch: tokio::sync::OnceCell::new(),
    });
    let selected: Vec<&cases::Case> = cases::all()
        .iter()
        .filter(|c| !c.ws_only || ctx.is_ws())
        .filter(|c| {
            ctx.opts.only.is_empty() || ctx.opts.only.iter().any(|p| c.id.starts_with(p.as_str()))
        })
        .collect();
    let mut slow = Vec::new();
    for case in selected.iter().filter(|c| c.slow) {
        let ctx = ctx.clone();
        let case = *case;
        slow.push((case, tokio::spawn(async move { run_case(case, ctx).await })));
    }
    let mut rows: Vec<Row> = Vec::new();
    for case in selected.iter().filter(|c| !c.slow) {
        rows.push(run_case(case, ctx.clone()).await);
    }
    for (case, handle) in slow {
        rows.push(handle.await.unwrap_or_else(|e| {
            Row::new(
                case,
                Outcome::Fail(format!("case panicked: {e}")),
                Duration::ZERO,
            )
        }));
    }
    let order: Vec<&str> = cases::all().iter().map(|c| c.id).collect();
    rows.sort_by_key(|r| order.iter().position(|id| *id == r.id));
    Report::new(&ctx.opts.target, rows, started.elapsed())
}

async fn run_case(case: &'static cases::Case, ctx: Arc<Ctx>) -> Row {
    let started = Instant::now();
    let timeout = ctx.opts.case_timeout;
    let outcome = match tokio::time::timeout(timeout, (case.run)(ctx)).await {
        Err(_) => Outcome::Fail(format!(
            "case did not finish within {} s",
            timeout.as_secs()
        )),
        Ok(Err(fail)) => Outcome::Fail(fail.0),
        Ok(Ok(outcome)) => outcome,
    };
    Row::new(case, outcome, started.elapsed())
}
