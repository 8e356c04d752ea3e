//! Real browsers: `@stomp/stompjs` in headless Chromium (Debian's `chromium`, driven
//! by `playwright-core` through `tests/browser/driver.mjs`), with every page loaded
//! over http from the stompbox under test (`http.static_dir`), so the WebSocket is
//! same-origin as it is for a deployed app.
//!
//! The pages report what they received and the driver exits non-zero unless every
//! check passed, so these fail when the browser misses a message. Chromium and the
//! npm packages are installed by `.ci/run` and `scripts/install-interop.sh`; a missing
//! one is a failure that says what to install, not a skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use stompbox::frame::Command as Stomp;
use stompbox::{Broker, Config};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The whole browser run, Chromium start-up included, on a loaded 2-core machine.
const DRIVER_DEADLINE: Duration = Duration::from_secs(120);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> PathBuf {
    std::env::var_os("STOMPBOX_CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from)
}

fn require(path: &Path, install: &str) {
    assert!(path.exists(), "{} is missing: {install}", path.display());
}

fn require_browser_tools(static_dir: &Path) {
    require(
        &chromium(),
        "install Debian's chromium (`apt-get install -y chromium`, as .ci/run does) or set STOMPBOX_CHROMIUM",
    );
    require(
        &root().join("tests/browser/node_modules/playwright-core"),
        "run `bash scripts/install-interop.sh` (npm ci --prefix tests/browser)",
    );
    require(
        &static_dir.join("node_modules/@stomp/stompjs/bundles/stomp.umd.min.js"),
        "run `bash scripts/install-interop.sh` (npm ci in tests/browser and examples/chat/public)",
    );
}

fn serving(static_dir: &Path) -> Config {
    let mut cfg = config();
    cfg.http.static_dir = static_dir.to_owned();
    cfg
}

/// The driver, its stdout as lines, and its stderr collected in the background.
struct Driver {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stdout: Vec<String>,
    stderr: tokio::task::JoinHandle<String>,
}

impl Driver {
    fn spawn(args: &[&str]) -> Driver {
        let mut child = Command::new("node")
            .arg("tests/browser/driver.mjs")
            .args(args)
            .env("STOMPBOX_CHROMIUM", chromium())
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts (Node.js is needed for the browser tests)");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut err = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s).await;
            s
        });
        Driver {
            child,
            lines,
            stdout: Vec::new(),
            stderr,
        }
    }

    /// Reads stdout up to the line `want`; panics with the driver's output if it
    /// ends or reports a result first.
    async fn until(&mut self, want: &str) {
        loop {
            let line = tokio::time::timeout(DRIVER_DEADLINE, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("driver said nothing for {DRIVER_DEADLINE:?}"))
                .expect("driver stdout");
            match line {
                Some(line) if line == want => {
                    self.stdout.push(line);
                    return;
                }
                Some(line) => {
                    let result = line.starts_with("RESULT");
                    self.stdout.push(line);
                    if result {
                        self.fail(&format!("driver finished before `{want}`")).await;
                    }
                }
                None => self.fail(&format!("driver exited before `{want}`")).await,
            }
        }
    }

    /// Waits for the driver to exit and asserts it reported success.
    async fn succeeds(mut self) -> Vec<String> {
        while let Ok(Some(line)) = tokio::time::timeout(DRIVER_DEADLINE, self.lines.next_line())
            .await
            .unwrap_or(Ok(None))
        {
            self.stdout.push(line);
        }
        let status = tokio::time::timeout(DRIVER_DEADLINE, self.child.wait())
            .await
            .expect("driver exits")
            .expect("driver status");
        let stderr = self.stderr.await.unwrap_or_default();
        println!(
            "driver stdout:\n{}\ndriver stderr:\n{stderr}",
            self.stdout.join("\n")
        );
        assert!(
            status.success() && self.stdout.iter().any(|l| l == "RESULT ok"),
            "browser run failed ({status})\nstdout:\n{}\nstderr:\n{stderr}",
            self.stdout.join("\n")
        );
        self.stdout
    }

    async fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let stderr = (&mut self.stderr).await.unwrap_or_default();
        panic!(
            "{why}\nstdout:\n{}\nstderr:\n{stderr}",
            self.stdout.join("\n")
        );
    }
}

/// What the test publishes after the restart: not UTF-8, with NULs, so a body that
/// went through a text decoder anywhere would not come out the same.
const AFTER_RESTART: &[u8] = b"\x00after restart\xff\xfe\x80\xc3\x28\x00\x01\x02";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn stompjs_in_chromium_topic_queue_binary_acks_and_broker_restart() {
    let site = root().join("tests/browser");
    require_browser_tools(&site);
    let cfg = serving(&site);
    let first = start_with(cfg.clone()).await;
    let ws_addr = first.handle.ws_addr;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let base = format!("http://{ws_addr}");
    let mut driver = Driver::spawn(&["stompjs", &base, &run, &hex(AFTER_RESTART)]);

    // The page has sent and received text, JSON and binary on a topic and a queue.
    driver.until("PHASE ready-for-restart").await;
    first.handle.shutdown().await;
    // The same WebSocket port, so stompjs's reconnects find the new broker.
    let mut cfg = cfg;
    cfg.listeners.ws = ws_addr;
    let second = Broker::start(cfg)
        .await
        .expect("a new broker binds the same WebSocket port");

    driver.until("PHASE resubscribed").await;
    let mut c = Client::tcp(second.tcp_addr).await;
    c.connect().await;
    for destination in [
        format!("/topic/browser.{run}"),
        format!("/queue/browser.{run}"),
    ] {
        let mut frame = format!(
            "SEND\ndestination:{destination}\ncontent-type:application/octet-stream\n\
             content-length:{}\nreceipt:r\n\n",
            AFTER_RESTART.len()
        )
        .into_bytes();
        frame.extend_from_slice(AFTER_RESTART);
        frame.push(0);
        c.send_raw(&frame).await;
        c.until_receipt("r").await;
    }
    let stdout = driver.succeeds().await;
    assert!(
        stdout
            .iter()
            .any(|l| l == r#"RECEIVED {"topic":4,"queue":4,"acked":4}"#),
        "{stdout:?}"
    );
    // Every queue message was acked: nothing waits in the queue.
    assert_eq!(
        second
            .router()
            .queue_depth(&format!("/queue/browser.{run}")),
        Some(0)
    );
    c.send("DISCONNECT\nreceipt:bye\n\n").await;
    c.expect(Stomp::Receipt).await;
    second.shutdown().await;
}

/// examples/chat as a person uses it, typing and reading the page (the steps are in
/// driver.mjs `chat`): two tabs see each other's lines and `users connected: 2`; a
/// rename shows as a rename, not a leave and a join; closing one brings the other
/// to 1 within 2 s, and so does a third tab that crashes: the member list is the
/// broker's presence topic, which reports a connection the moment its socket closes.
#[tokio::test]
async fn chat_example_tabs_see_each_other_and_leave_promptly() {
    let site = root().join("examples/chat/public");
    require_browser_tools(&site);
    let b = start_with(serving(&site)).await;
    let base = format!("http://{}", b.handle.ws_addr);
    let mut args = vec!["chat", base.as_str()];
    // STOMPBOX_CHAT_SCREENSHOT=examples/chat/screenshot.png refreshes the README's
    // picture from this very run.
    let shot = std::env::var("STOMPBOX_CHAT_SCREENSHOT").ok();
    if let Some(path) = &shot {
        args.push(path);
    }
    Driver::spawn(&args).succeeds().await;
}

/// A TCP proxy in front of the broker's WebSocket port that can stop forwarding one
/// direction of every connection, keeping the sockets open: a link that went dead
/// without a FIN, as a pulled cable or a suspended laptop leaves it.
struct Proxy {
    addr: std::net::SocketAddr,
    /// Stop forwarding client → broker (the client falls silent).
    mute_client: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Stop forwarding broker → client (the broker stops answering).
    mute_broker: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Set when the broker closed a connection.
    broker_closed: std::sync::Arc<tokio::sync::Notify>,
}

impl Proxy {
    async fn start(to: std::net::SocketAddr) -> Proxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mute_client = Arc::new(AtomicBool::new(false));
        let mute_broker = Arc::new(AtomicBool::new(false));
        let broker_closed = Arc::new(tokio::sync::Notify::new());
        let (mc, mb, closed) = (
            mute_client.clone(),
            mute_broker.clone(),
            broker_closed.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = tokio::net::TcpStream::connect(to).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut br, mut bw) = broker.into_split();
                let mc = mc.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if !mc.load(Ordering::SeqCst) && bw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let (mb, closed) = (mb.clone(), closed.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match br.read(&mut buf).await {
                            Ok(0) | Err(_) => {
                                closed.notify_one();
                                break;
                            }
                            Ok(n) => {
                                if !mb.load(Ordering::SeqCst)
                                    && cw.write_all(&buf[..n]).await.is_err()
                                {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        Proxy {
            addr,
            mute_client,
            mute_broker,
            broker_closed,
        }
    }
}

/// Issue 8: stompjs with `heartbeatIncoming: 1000, heartbeatOutgoing: 1000` gets 1 s
/// heart-beats both ways. The broker drops it within 3 s once it falls silent, and it
/// detects a broker that stops answering within 3 s.
#[tokio::test]
async fn stompjs_one_second_heartbeats_detect_dead_links_within_3_s() {
    use std::sync::atomic::Ordering;
    let site = root().join("tests/browser");
    require_browser_tools(&site);
    let b = start_with(serving(&site)).await;
    let proxy = Proxy::start(b.handle.ws_addr).await;
    let base = format!("http://{}", b.handle.ws_addr);
    let ws = format!("ws://{}/ws", proxy.addr);
    let mut driver = Driver::spawn(&["heartbeat", &base, &ws]);

    driver.until("PHASE connected 1 1000,1000").await;
    // Heart-beats keep an idle connection alive: nothing is dropped over 2.5 s.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The client falls silent: the broker must drop it within 3 s.
    let closed = proxy.broker_closed.notified();
    proxy.mute_client.store(true, Ordering::SeqCst);
    let since = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(3), closed)
        .await
        .expect("the broker dropped the silent stompjs client within 3 s");
    println!(
        "broker dropped the silent client after {:?}",
        since.elapsed()
    );
    proxy.mute_client.store(false, Ordering::SeqCst);

    // stompjs reconnects; then the broker stops answering.
    driver.until("PHASE connected 2 1000,1000").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Same machine, same wall clock as the page's Date.now().
    let muted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    proxy.mute_broker.store(true, Ordering::SeqCst);
    let stdout = driver.succeeds().await;
    let (silent, at) = stdout
        .iter()
        .find_map(|l| l.strip_prefix("SILENT_MS "))
        .and_then(|rest| rest.split_once(" AT "))
        .expect("stompjs reported the silent broker");
    let detected_at: u64 = at.parse().unwrap();
    let after = detected_at.saturating_sub(muted_at);
    println!(
        "stompjs noticed the silent broker {after} ms after it went silent ({silent} ms since its last byte)"
    );
    assert!(
        after <= 3000,
        "stompjs noticed the silent broker {after} ms after it went silent"
    );
    b.handle.shutdown().await;
}

/// Issue 11: @stomp/stompjs in Chromium over `wss://` (a certificate made at test
/// time), logging in with a JWT as its passcode. The page that refreshes its token
/// through `/sys/auth` stays connected past the first token's expiry; the one that
/// does not is closed with ERROR `token expired`.
#[tokio::test]
async fn stompjs_over_wss_refreshes_its_token_and_a_page_that_does_not_is_closed() {
    let site = root().join("tests/browser");
    require_browser_tools(&site);
    let dir = std::env::temp_dir().join(format!("stompbox-browser-wss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let secret = "browser-test-secret-long-enough-for-hs256";
    let mut cfg = serving(&site);
    cfg.listeners.wss = "127.0.0.1:0".into();
    cfg.tls.cert_chain = cert.to_string_lossy().into_owned();
    cfg.tls.key = key.to_string_lossy().into_owned();
    cfg.auth.allow_anonymous = false;
    cfg.auth.jwt.hs256_secrets = vec![secret.into()];
    cfg.auth.jwt.expiry_grace_ms = 500;
    let b = start_with(cfg).await;
    let base = format!("http://{}", b.handle.ws_addr);
    let wss = format!("wss://localhost:{}/ws", b.handle.wss_addr.unwrap().port());
    // The driver mints the tokens once the page is ready (issue 18, finding 23: minted
    // here, a 3 s token could expire while Chromium was still starting on a loaded
    // machine): a short one of 4 s, so the refresh is needed 5.5 s later.
    let stdout = Driver::spawn(&["token", &base, &wss, secret, "4", "5500"])
        .succeeds()
        .await;
    assert!(
        stdout
            .iter()
            .any(|l| l == "REFRESHED true ALIVE true EXPIRED token expired"),
        "{stdout:?}"
    );
    b.handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The admin dashboard (dashboard/) in headless Chromium, as an operator uses it
/// (the steps are in driver.mjs `dashboard`): it loads with no request leaving the
/// machine, signs in, and reads `/sys/stats` over STOMP from the admin port; its
/// numbers move while a load runs; its publish form delivers to a subscriber; and a
/// connection closed with its button gets ERROR and leaves the table.
#[tokio::test]
async fn dashboard_in_chromium_shows_a_live_load_publishes_and_closes_a_connection() {
    let dir = root().join("dashboard");
    require_browser_tools(&dir);
    require(
        &dir.join("node_modules/uplot/dist/uPlot.iife.min.js"),
        "run `bash scripts/install-interop.sh` (npm ci --prefix dashboard)",
    );
    let mut cfg = config();
    cfg.admin.listen = "127.0.0.1:0".into();
    cfg.admin.users = vec!["ops".into()];
    cfg.admin.dashboard_dir = dir.clone();
    cfg.auth.users = vec![user("ops", "secret")];
    install_log_level();
    let b = start_with(cfg).await;
    let admin = format!("http://{}", b.handle.admin_addr.unwrap());
    let mut victim = Client::tcp(b.tcp()).await;
    let session = victim
        .connect()
        .await
        .headers
        .get("session")
        .unwrap()
        .to_owned();
    let mut form_reader = connected(&b).await;
    form_reader
        .subscribe("f", "/queue/dashboard.form", "auto")
        .await;
    let mut args = vec![
        "dashboard",
        admin.as_str(),
        "ops",
        "secret",
        session.as_str(),
        "/queue/dashboard.form",
    ];
    // STOMPBOX_DASHBOARD_SCREENSHOT=dashboard/screenshot.png retakes the README's picture.
    let shot = std::env::var("STOMPBOX_DASHBOARD_SCREENSHOT").ok();
    if let Some(path) = &shot {
        args.push(path);
    }
    let mut driver = Driver::spawn(&args);
    driver.until("PHASE ready").await;

    // A bounded load: a topic fan-out to two subscribers and a queue with a consumer,
    // until the page has seen it move (at most 30 s).
    let tcp = b.tcp();
    let stop = tokio_util::sync::CancellationToken::new();
    let load = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut subs = Vec::new();
            for i in 0..2 {
                let mut s = Client::tcp(tcp).await;
                s.connect().await;
                s.subscribe(&format!("s{i}"), "/topic/load", "auto").await;
                subs.push(s);
            }
            let mut p = Client::tcp(tcp).await;
            p.connect().await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let mut sent = 0u64;
            while !stop.is_cancelled() && tokio::time::Instant::now() < deadline && sent < 2_000_000
            {
                for _ in 0..100 {
                    p.send("SEND\ndestination:/topic/load\n\nload").await;
                }
                p.publish("/queue/load", "tick").await;
                sent += 101;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sent
        }
    });
    driver.until("PHASE moved").await;
    stop.cancel();
    let sent = load.await.unwrap();
    assert!(sent > 1000, "the load sent {sent}");

    driver.until("PHASE published").await;
    let m = form_reader.expect(Stomp::Message).await;
    assert_eq!(m.body, "hello from the dashboard");

    driver.until("PHASE closed").await;
    let e = victim.expect_error_and_close().await;
    assert_eq!(e.headers.get("message"), Some("closed by an administrator"));
    driver.succeeds().await;
}

/// A real tracing subscriber with a reloadable filter, as the binary installs, so the
/// dashboard's log-level control works in this process too.
fn install_log_level() {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, reload};
    let (filter, handle) = reload::Layer::new(EnvFilter::new("warn"));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_test_writer())
        .try_init();
    if installed.is_ok() {
        stompbox::admin::install_log_level(Box::new(stompbox::admin::ReloadableFilter(handle)));
    }
}
