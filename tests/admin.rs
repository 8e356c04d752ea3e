//! The admin listener over real sockets: every API call made with `curl` and its
//! answer checked against `src/admin/openapi.json`; `/metrics` through Debian's
//! `promtool check metrics` and its per-destination counts checked exactly; who may
//! read `/sys/stats`; presence events; readiness.
//!
//! `curl` and `promtool` (Debian's `prometheus` package) are installed by `.ci/run`
//! and `scripts/install-interop.sh`; a missing one fails with what to install.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command as Process;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use stompbox::frame::Command;
use stompbox::{Broker, Config};

/// `ops` is an admin, `app` is not; both have the passcode `secret`.
fn admin_config() -> Config {
    let mut c = config();
    c.admin.listen = "127.0.0.1:0".into();
    c.admin.users = vec!["ops".into()];
    c.admin.stats_interval_ms = 200;
    c.admin.dashboard_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard");
    c.auth.users = vec![user("ops", "secret"), user("app", "secret")];
    c
}

async fn login(broker: &TestBroker, who: &str) -> Client {
    let mut c = Client::tcp(broker.tcp()).await;
    c.send(&format!(
        "CONNECT\naccept-version:1.2\nhost:localhost\nlogin:{who}\npasscode:secret\n\n"
    ))
    .await;
    c.expect(Command::Connected).await;
    c
}

/// An answer from curl.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// `curl` with `args`, then the URL; `user` as HTTP Basic credentials.
async fn curl(method: &str, url: &str, user: Option<&str>, body: Option<&str>) -> Answer {
    let mut cmd = Process::new("curl");
    cmd.args(["-s", "-S", "--max-time", "20", "-X", method]);
    cmd.args(["-w", "\n%{http_code}\n%{content_type}"]);
    if let Some(user) = user {
        cmd.args(["-u", user]);
    }
    if let Some(body) = body {
        cmd.args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ]);
    }
    cmd.arg(url);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("curl runs (install Debian's curl)");
    assert!(out.status.success(), "curl failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut parts = text.rsplitn(3, '\n');
    let content_type = parts.next().unwrap().to_owned();
    let status = parts.next().unwrap().parse().unwrap();
    let body = parts.next().unwrap_or_default().to_owned();
    Answer {
        status,
        content_type,
        body,
    }
}

/// The OpenAPI file, and the calls made against it: (method, path template, status).
struct Spec {
    doc: Value,
    seen: BTreeSet<(String, String, u16)>,
}

impl Spec {
    fn load() -> Spec {
        Spec {
            doc: serde_json::from_str(stompbox::admin::OPENAPI).expect("openapi.json is JSON"),
            seen: BTreeSet::new(),
        }
    }

    /// Checks that the spec documents `status` for the operation, and that a JSON
    /// answer matches its schema.
    fn check(&mut self, method: &str, template: &str, answer: &Answer) {
        let op = &self.doc["paths"][template][method.to_ascii_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in openapi.json");
        let mut response = op["responses"][answer.status.to_string()].clone();
        assert!(
            response.is_object(),
            "{method} {template} answered {} ({}), which openapi.json does not list",
            answer.status,
            answer.body
        );
        if let Some(r) = response["$ref"].as_str() {
            let name = r.rsplit('/').next().unwrap();
            response = self.doc["components"]["responses"][name].clone();
        }
        self.seen
            .insert((method.into(), template.into(), answer.status));
        let Some(content) = response["content"].as_object() else {
            assert!(
                answer.body.is_empty(),
                "{method} {template}: no content documented, got {:?}",
                answer.body
            );
            return;
        };
        let (media, schema) = content.iter().next().unwrap();
        assert!(
            answer.content_type.starts_with(media.as_str()),
            "{method} {template}: content type {} is not {media}",
            answer.content_type
        );
        if media == "application/json" {
            self.validate(schema, &answer.json(), &format!("{method} {template}"));
        }
    }

    /// Validates `instance` against `schema`, whose `$ref`s point into the spec.
    fn validate(&self, schema: &Value, instance: &Value, what: &str) {
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        let validator = jsonschema::draft202012::new(&root).expect("a valid schema");
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: the answer does not match openapi.json: {errors:?}\n{instance:#}"
        );
    }

    /// Every operation of the spec was called.
    fn all_called(&self) {
        for (path, ops) in self.doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                let m = method.to_ascii_uppercase();
                assert!(
                    self.seen.iter().any(|(sm, sp, _)| *sm == m && sp == path),
                    "{m} {path} was never called"
                );
            }
        }
    }
}

fn base(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

const OPS: Option<&str> = Some("ops:secret");

#[tokio::test]
async fn every_endpoint_answers_as_the_openapi_file_says_and_needs_an_admin() {
    let broker = start_with(admin_config()).await;
    let admin = base(broker.handle.admin_addr.expect("admin listener"));
    let mut spec = Spec::load();
    let mut call = async |method: &str, template: &str, path: &str, user, body| {
        let a = curl(method, &format!("{admin}{path}"), user, body).await;
        spec.check(method, template, &a);
        a
    };

    // Health needs no credentials.
    let a = call("GET", "/healthz", "/healthz", None, None).await;
    assert_eq!((a.status, a.json()), (200, json!({"status": "ok"})));
    let a = call("GET", "/readyz", "/readyz", None, None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["ready"], true);

    // Everything else does, as an admin: none, wrong and non-admin credentials are 401.
    for user in [
        None,
        Some("ops:wrong"),
        Some("app:secret"),
        Some("nobody:x"),
    ] {
        let a = call("GET", "/api/overview", "/api/overview", user, None).await;
        assert_eq!(a.status, 401, "{user:?}");
        let a = call("GET", "/metrics", "/metrics", user, None).await;
        assert_eq!(a.status, 401, "{user:?}");
    }
    let a = curl("GET", &format!("{admin}/api/overview"), None, None).await;
    assert_eq!(a.status, 401);

    // A client with a queue, a topic subscription and messages.
    let mut app = login(&broker, "app").await;
    app.subscribe("t", "/topic/news", "auto").await;
    app.subscribe("q", "/queue/work", "client-individual").await;
    let mut producer = connected(&broker).await;
    for i in 0..3 {
        producer.publish("/queue/full", &format!("m{i}")).await;
    }

    let a = call("GET", "/metrics", "/metrics", OPS, None).await;
    assert_eq!(a.status, 200);
    let a = call("GET", "/api/overview", "/api/overview", OPS, None).await;
    assert_eq!(a.status, 200);
    let o = a.json();
    assert_eq!(o["messages"]["published"], 3);
    assert_eq!(o["connections"]["open"], 2);
    assert_eq!(
        o["listeners"]["tcp"],
        broker.handle.tcp_addr.to_string(),
        "{o}"
    );

    let a = call("GET", "/api/connections", "/api/connections", OPS, None).await;
    let conns = a.json();
    let app_conn = conns
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["login"] == "app")
        .expect("app is listed")
        .clone();
    assert_eq!(app_conn["transport"], "tcp");
    assert_eq!(app_conn["version"], "1.2");
    let subs: Vec<(&str, &str)> = app_conn["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["destination"].as_str().unwrap(),
                s["ack"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        subs,
        [
            ("/topic/news", "auto"),
            ("/queue/work", "client-individual")
        ]
    );
    let id = app_conn["id"].as_str().unwrap().to_owned();

    let a = call("GET", "/api/destinations", "/api/destinations", OPS, None).await;
    let dests = a.json();
    let full = dests
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "/queue/full")
        .unwrap();
    assert_eq!(
        (&full["kind"], &full["depth"], &full["published"]),
        (&json!("queue"), &json!(3), &json!(3))
    );

    // Tracing.
    let trace = format!("/api/connections/{id}/trace");
    let t = "/api/connections/{id}/trace";
    let a = call("PUT", t, &trace, OPS, Some(r#"{"enabled":true}"#)).await;
    assert_eq!(
        (a.status, a.json()),
        (200, json!({"id": id, "trace": true}))
    );
    let a = call("PUT", t, &trace, OPS, Some(r#"{"on":1}"#)).await;
    assert_eq!(a.status, 400);
    let a = call(
        "PUT",
        t,
        "/api/connections/nope/trace",
        OPS,
        Some(r#"{"enabled":false}"#),
    )
    .await;
    assert_eq!(a.status, 404);

    // Purge and delete.
    let purge = "/api/destinations/purge";
    let a = call(
        "POST",
        purge,
        "/api/destinations/purge?destination=/queue/full",
        OPS,
        None,
    )
    .await;
    assert_eq!(
        (a.status, a.json()),
        (200, json!({"destination": "/queue/full", "purged": 3}))
    );
    let a = call(
        "POST",
        purge,
        "/api/destinations/purge?destination=/queue/none",
        OPS,
        None,
    )
    .await;
    assert_eq!(a.status, 404);
    let a = call("POST", purge, purge, OPS, None).await;
    assert_eq!(a.status, 400);
    // In order: a queue with a consumer stays, a topic is no queue, an unused queue
    // goes, and then it is gone.
    for (destination, status) in [
        ("/queue/work", 409),
        ("/topic/news", 400),
        ("/queue/full", 204),
        ("/queue/full", 404),
    ] {
        let path = format!("/api/destinations?destination={destination}");
        let a = call("DELETE", "/api/destinations", &path, OPS, None).await;
        assert_eq!(a.status, status, "DELETE {destination}");
    }

    // Durable subscriptions: listed with their owner; not deleted while attached.
    app.send("SUBSCRIBE\nid:d\ndestination:/topic/news.d\ndurable:true\nauto-delete:false\nreceipt:d\n\n")
        .await;
    app.until_receipt("d").await;
    let a = call("GET", "/api/durables", "/api/durables", OPS, None).await;
    assert_eq!(
        a.json(),
        json!([{"key": "user:app/rabbitmq//d/%2Ftopic%2Fnews.d", "owner": "user:app",
                "destination": "/topic/news.d", "depth": 0, "bytes": 0, "consumers": 1}])
    );
    let key = "/api/durables?key=user:app/rabbitmq//d/%252Ftopic%252Fnews.d";
    let a = call("DELETE", "/api/durables", key, OPS, None).await;
    assert_eq!(a.status, 409);
    app.send("UNSUBSCRIBE\nid:d\nreceipt:u\n\n").await;
    app.until_receipt("u").await;
    for status in [204, 404] {
        let a = call("DELETE", "/api/durables", key, OPS, None).await;
        assert_eq!(a.status, status);
    }
    let a = call("DELETE", "/api/durables", "/api/durables", OPS, None).await;
    assert_eq!(a.status, 400);
    let a = call("GET", "/api/durables", "/api/durables", OPS, None).await;
    assert_eq!(a.json(), json!([]));

    // Publish: the subscriber gets it, with its header.
    let a = call(
        "POST",
        "/api/messages",
        "/api/messages",
        OPS,
        Some(r#"{"destination":"/queue/work","headers":{"kind":"test","message-id":"forged"},"body":"from the API"}"#),
    )
    .await;
    assert_eq!(
        (a.status, a.json()),
        (200, json!({"destination": "/queue/work"}))
    );
    let m = app.expect(Command::Message).await;
    assert_eq!(m.body, "from the API");
    assert_eq!(m.headers.get("kind"), Some("test"));
    assert_ne!(m.headers.get("message-id"), Some("forged"));
    for bad in [
        r#"{"destination":"/sys/stats","body":"x"}"#,
        r#"{"destination":"nowhere","body":"x"}"#,
        r#"{"body":"no destination"}"#,
        "not json",
    ] {
        let a = call("POST", "/api/messages", "/api/messages", OPS, Some(bad)).await;
        assert_eq!(a.status, 400, "{bad}");
    }

    // No log-level control is installed in this test process (tests/admin_log.rs has one).
    let a = call("GET", "/api/log-level", "/api/log-level", OPS, None).await;
    assert_eq!(a.status, 501);
    let a = call(
        "PUT",
        "/api/log-level",
        "/api/log-level",
        OPS,
        Some(r#"{"level":"debug"}"#),
    )
    .await;
    assert_eq!(a.status, 501);

    // Close: the client gets ERROR, and the connection leaves the list.
    let path = format!("/api/connections/{id}");
    let a = call("DELETE", "/api/connections/{id}", &path, OPS, None).await;
    assert_eq!(a.status, 204);
    let e = app.expect_error_and_close().await;
    assert_eq!(e.headers.get("message"), Some("closed by an administrator"));
    let mut gone = false;
    for _ in 0..100 {
        let a = curl("GET", &format!("{admin}/api/connections"), OPS, None).await;
        if !a.body.contains(&id) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the closed connection is still listed");
    let a = call("DELETE", "/api/connections/{id}", &path, OPS, None).await;
    assert_eq!(a.status, 404);

    // The spec itself and the dashboard's page.
    let a = call("GET", "/openapi.json", "/openapi.json", None, None).await;
    assert_eq!(a.body, stompbox::admin::OPENAPI);
    let a = call("GET", "/", "/", None, None).await;
    assert_eq!(a.status, 200);
    assert!(a.content_type.starts_with("text/html"), "{a:?}");
    spec.all_called();
}

/// A value of the exposition: the sample line `name{labels}` exactly.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_per_destination_exactly_and_pass_promtool() {
    let mut cfg = admin_config();
    // /queue/m and /queue/o1 get labels; the later queues share `other`. Publishing
    // to topics nobody subscribes to takes none (anyone can invent topic names).
    cfg.admin.max_destination_labels = 2;
    let broker = start_with(cfg).await;
    let admin = base(broker.handle.admin_addr.unwrap());
    let mut producer = connected(&broker).await;
    for t in [
        "/topic/invented.1",
        "/topic/invented.2",
        "/topic/invented.3",
    ] {
        producer.publish(t, "x").await;
    }
    for i in 0..5 {
        producer.publish("/queue/m", &format!("m{i}")).await;
    }
    for q in ["/queue/o1", "/queue/o2", "/queue/o3"] {
        producer.publish(q, "x").await;
    }
    // Five delivered: ACK three, NACK two (redelivered), then ACK those.
    let mut consumer = connected(&broker).await;
    consumer
        .subscribe("c", "/queue/m", "client-individual")
        .await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let m = consumer.expect(Command::Message).await;
        ids.push(m.headers.get("ack").unwrap().to_owned());
    }
    for (i, id) in ids.iter().enumerate() {
        let verb = if i < 3 { "ACK" } else { "NACK" };
        consumer
            .send(&format!("{verb}\nid:{id}\nreceipt:r{i}\n\n"))
            .await;
        consumer.until_receipt(&format!("r{i}")).await;
    }
    for i in 0..2 {
        let m = consumer.expect(Command::Message).await;
        assert_eq!(m.headers.get("redelivered"), Some("true"));
        let id = m.headers.get("ack").unwrap();
        consumer
            .send(&format!("ACK\nid:{id}\nreceipt:a{i}\n\n"))
            .await;
        consumer.until_receipt(&format!("a{i}")).await;
    }

    let a = curl("GET", &format!("{admin}/metrics"), OPS, None).await;
    assert_eq!(a.status, 200);
    assert!(
        a.content_type.starts_with("text/plain"),
        "{}",
        a.content_type
    );
    let text = a.body;
    let d = |name: &str, dest: &str| sample(&text, &format!("{name}{{destination=\"{dest}\"}}"));
    assert_eq!(d("stompbox_messages_published_total", "/queue/m"), 5.0);
    assert_eq!(d("stompbox_messages_delivered_total", "/queue/m"), 7.0);
    assert_eq!(d("stompbox_messages_acked_total", "/queue/m"), 5.0);
    assert_eq!(d("stompbox_messages_nacked_total", "/queue/m"), 2.0);
    assert_eq!(d("stompbox_messages_redelivered_total", "/queue/m"), 2.0);
    assert_eq!(d("stompbox_messages_published_total", "/queue/o1"), 1.0);
    // Two queues past the cap and the three invented topics.
    assert_eq!(d("stompbox_messages_published_total", "other"), 5.0);
    assert!(!text.contains("/queue/o2"), "past the label cap");
    assert!(
        !text.contains("invented"),
        "unsubscribed topics take no label"
    );
    assert_eq!(d("stompbox_queue_messages", "/queue/m"), 0.0);
    assert_eq!(d("stompbox_queue_messages", "/queue/o1"), 1.0);
    assert_eq!(d("stompbox_queue_messages", "other"), 2.0);
    assert_eq!(d("stompbox_queue_consumers", "/queue/m"), 1.0);
    let c = |name: &str, cmd: &str| sample(&text, &format!("{name}{{command=\"{cmd}\"}}"));
    assert_eq!(c("stompbox_frames_received_total", "SEND"), 11.0);
    assert_eq!(c("stompbox_frames_received_total", "ACK"), 5.0);
    assert_eq!(c("stompbox_frames_received_total", "NACK"), 2.0);
    assert_eq!(c("stompbox_frames_sent_total", "MESSAGE"), 7.0);
    assert!(c("stompbox_sent_bytes_total", "MESSAGE") > 7.0 * 2.0);
    assert_eq!(
        sample(
            &text,
            "stompbox_connections{transport=\"tcp\",version=\"1.2\"}"
        ),
        2.0
    );
    // First deliveries only: the two redeliveries' wait is the consumer's NACK.
    assert_eq!(
        sample(&text, "stompbox_publish_to_deliver_seconds_count"),
        5.0
    );

    // Debian's promtool accepts it.
    let mut child = Process::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's prometheus package: apt-get install prometheus)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn only_admins_read_sys_stats_and_nobody_sends_to_it() {
    let broker = start_with(admin_config()).await;
    for who in [None, Some("app")] {
        let mut c = match who {
            Some(who) => login(&broker, who).await,
            None => connected(&broker).await,
        };
        c.send("SUBSCRIBE\nid:s\ndestination:/sys/stats\n\n").await;
        let e = c.expect_error_and_close().await;
        assert_eq!(
            e.headers.get("message"),
            Some("permission denied: read on /sys/stats"),
            "{who:?}"
        );
    }
    let mut ops = login(&broker, "ops").await;
    ops.subscribe("s", "/sys/stats", "auto").await;
    let m = ops.expect(Command::Message).await;
    assert_eq!(m.headers.get("destination"), Some("/sys/stats"));
    assert_eq!(m.headers.get("content-type"), Some("application/json"));
    let snapshot: Value = serde_json::from_slice(&m.body).unwrap();
    Spec::load().validate(
        &json!({"$ref": "#/components/schemas/Snapshot"}),
        &snapshot,
        "/sys/stats",
    );
    assert_eq!(snapshot["connections"][0]["login"], "ops");
    ops.send("SEND\ndestination:/sys/stats\n\nforged").await;
    let e = ops.expect_error_and_close().await;
    assert_eq!(
        e.headers.get("message"),
        Some("permission denied: write on /sys/stats")
    );
}

#[tokio::test]
async fn presence_tells_watchers_of_every_subscription_and_of_a_dead_socket_at_once() {
    let broker = start().await;
    let mut watcher = connected(&broker).await;
    watcher
        .subscribe("p", "/sys/presence/topic/room", "auto")
        .await;
    let event = |f: stompbox::frame::Frame| -> Value { serde_json::from_slice(&f.body).unwrap() };
    let first = event(watcher.expect(Command::Message).await);
    assert_eq!(
        first,
        json!({"event": "snapshot", "destination": "/topic/room", "members": []})
    );

    let mut alice = connected(&broker).await;
    alice
        .send("SUBSCRIBE\nid:r\ndestination:/topic/room\npresence-info:{\"name\":\"alice\"}\nreceipt:s\n\n")
        .await;
    alice.until_receipt("s").await;
    let joined = event(watcher.expect(Command::Message).await);
    assert_eq!(joined["event"], "subscribed");
    assert_eq!(joined["member"]["info"], "{\"name\":\"alice\"}");
    assert_eq!(joined["member"]["subscription"], "r");
    let alice_session = joined["member"]["session"].clone();

    // A second watcher learns alice from its snapshot.
    let mut late = connected(&broker).await;
    late.subscribe("p", "/sys/presence/topic/room", "auto")
        .await;
    let snap = event(late.expect(Command::Message).await);
    assert_eq!(snap["members"][0]["session"], alice_session);

    // Her socket dies without DISCONNECT (a crashed tab): both watchers hear it now.
    let started = std::time::Instant::now();
    drop(alice);
    for w in [&mut watcher, &mut late] {
        let left = event(w.expect(Command::Message).await);
        assert_eq!(left["event"], "unsubscribed");
        assert_eq!(left["member"]["session"], alice_session);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    watcher.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn readyz_is_503_above_the_memory_high_watermark() {
    let mut cfg = admin_config();
    cfg.limits.max_body_bytes = 2048;
    cfg.memory.high_watermark_bytes = 8 * 1024;
    let broker = start_with(cfg).await;
    let admin = base(broker.handle.admin_addr.unwrap());
    let mut producer = connected(&broker).await;
    let body = "x".repeat(2000);
    for _ in 0..6 {
        producer
            .send(&format!("SEND\ndestination:/queue/hold\n\n{body}"))
            .await;
    }
    let mut last = None;
    for _ in 0..100 {
        let a = curl("GET", &format!("{admin}/readyz"), None, None).await;
        if a.status == 503 {
            last = Some(a.json());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        last,
        Some(
            json!({"ready": false, "checks": {"listeners": true, "store": true, "memory": false}})
        )
    );
}

#[tokio::test]
async fn the_admin_port_off_by_config_binds_nothing() {
    let broker = Broker::start(config()).await.unwrap();
    assert!(broker.admin_addr.is_none());
    broker.shutdown().await;
}

#[tokio::test]
async fn the_admin_websocket_is_for_admins_and_its_own_pages() {
    let mut cfg = admin_config();
    // Even with the public WebSocket's allowlist, the admin page's own origin works.
    cfg.listeners.ws_allowed_origins = vec!["https://app.example.com".into()];
    let broker = start_with(cfg).await;
    let admin = broker.handle.admin_addr.unwrap();
    let url = format!("ws://{admin}/ws");
    let connect = |who: &str| {
        format!("CONNECT\naccept-version:1.2\nhost:localhost\nlogin:{who}\npasscode:secret\n\n")
    };

    let (mut ops, _) = Client::ws(&url, &["v12.stomp"]).await;
    ops.send(&connect("ops")).await;
    ops.expect(Command::Connected).await;

    for who in ["app", "nobody"] {
        let (mut c, _) = Client::ws(&url, &["v12.stomp"]).await;
        c.send(&connect(who)).await;
        let e = c.expect_error_and_close().await;
        let message = e.headers.get("message").unwrap();
        assert!(
            message.starts_with("this is the admin listener")
                || message.starts_with("authentication failed"),
            "{who}: {message}"
        );
    }
    let (mut anonymous, _) = Client::ws(&url, &["v12.stomp"]).await;
    anonymous
        .send("CONNECT\naccept-version:1.2\nhost:localhost\n\n")
        .await;
    let e = anonymous.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .unwrap()
            .starts_with("this is the admin listener")
    );

    // A page from elsewhere cannot open it; one from the admin listener can.
    for (origin, status) in [
        ("http://evil.example".to_owned(), "403"),
        (format!("http://{admin}"), "101"),
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
        s.write_all(
            format!(
                "GET /ws HTTP/1.1\r\nhost: {admin}\r\norigin: {origin}\r\nupgrade: websocket\r\n\
                 connection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(WAIT, s.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&head[9..12], status.as_bytes(), "{origin}");
    }
}
