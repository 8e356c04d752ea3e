//! ACLs: per-user read / write / create on destination patterns, refused frames
//! answered with ERROR naming the destination and the permission.

mod common;

use common::*;
use stompbox::config::{AclRule, User};
use stompbox::frame::Command;

fn user(login: &str) -> User {
    User {
        login: login.into(),
        passcode_hash: Some(stompbox::auth::hash_with(
            "pw",
            argon2::Params::new(8, 1, 1, None).unwrap(),
        )),
        passcode: None,
    }
}

fn rule(users: &[&str], read: &[&str], write: &[&str], create: &[&str]) -> AclRule {
    let v = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
    AclRule {
        users: v(users),
        read: v(read),
        write: v(write),
        create: v(create),
        roles: Vec::new(),
    }
}

fn with_acls() -> stompbox::Config {
    let mut cfg = config();
    cfg.http.publish = true;
    cfg.auth.users = vec![user("alice"), user("bob")];
    cfg.auth.acls = vec![
        rule(
            &["alice"],
            &["/queue/orders.#"],
            &["/queue/orders.#", "/queue/shared"],
            &["/queue/orders.#"],
        ),
        rule(&["bob"], &["/queue/shared"], &[], &["/queue/shared"]),
        rule(&["*"], &["/topic/public.*"], &[], &[]),
    ];
    cfg
}

async fn login(b: &TestBroker, who: &str) -> Client {
    let mut c = Client::tcp(b.tcp()).await;
    c.send(&format!(
        "CONNECT\naccept-version:1.2\nlogin:{who}\npasscode:pw\n\n"
    ))
    .await;
    c.expect(Command::Connected).await;
    c
}

async fn refused(c: &mut Client, frame: &str, message: &str) {
    c.send(frame).await;
    let e = c.expect_error_and_close().await;
    assert_eq!(e.headers.get("message"), Some(message), "{frame}");
}

#[tokio::test]
async fn acls_grant_and_refuse_by_user_permission_and_pattern() {
    let b = start_with(with_acls()).await;
    let mut alice = login(&b, "alice").await;
    alice.publish("/queue/orders.eu", "o1").await;
    alice.subscribe("o", "/queue/orders.eu", "auto").await;
    assert_eq!(&alice.expect(Command::Message).await.body[..], b"o1");
    refused(
        &mut alice,
        "SEND\ndestination:/queue/payroll\n\nx",
        "permission denied: write on /queue/payroll",
    )
    .await;

    // Writing to a queue is not creating it: alice may write /queue/shared once bob,
    // who may create it, has.
    let mut alice = login(&b, "alice").await;
    refused(
        &mut alice,
        "SEND\ndestination:/queue/shared\n\nx",
        "permission denied: create on /queue/shared",
    )
    .await;
    let mut bob = login(&b, "bob").await;
    bob.subscribe("s", "/queue/shared", "auto").await;
    let mut alice = login(&b, "alice").await;
    alice.publish("/queue/shared", "hello bob").await;
    assert_eq!(&bob.expect(Command::Message).await.body[..], b"hello bob");

    // Anyone may read /topic/public.*, but not a wider pattern.
    let mut anon = connected(&b).await;
    anon.subscribe("p", "/topic/public.*", "auto").await;
    refused(
        &mut anon,
        "SUBSCRIBE\nid:q\ndestination:/topic/public.#\n\n",
        "permission denied: read on /topic/public.#",
    )
    .await;
    refused(
        &mut bob,
        "SEND\ndestination:/topic/public.news\n\nx",
        "permission denied: write on /topic/public.news",
    )
    .await;
    b.handle.shutdown().await;
}

#[tokio::test]
async fn http_publish_uses_the_same_acls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = start_with(with_acls()).await;
    let post = |auth: &'static str, dest: &'static str| {
        let addr = b.handle.ws_addr;
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "POST /api/publish?destination={dest} HTTP/1.1\r\nhost: x\r\nauthorization: Basic {auth}\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    // base64("bob:pw") and base64("alice:pw")
    let resp = post("Ym9iOnB3", "/queue/orders.x").await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(
        resp.contains("permission denied: write on /queue/orders.x"),
        "{resp}"
    );
    let resp = post("YWxpY2U6cHc=", "/queue/orders.x").await;
    assert!(resp.starts_with("HTTP/1.1 204"), "{resp}");
    b.handle.shutdown().await;
}

/// Issue 18, finding 15: a producer granted `write` but not `create` got
/// `permission denied: create` once its queue had sat idle past
/// `queues.idle_delete_ms` and been deleted. Queues named exactly by an ACL rule, or
/// matched by a `[[queues.policies]]` entry, are no longer deleted as idle; other
/// idle queues still are.
#[tokio::test]
async fn idle_deletion_keeps_queues_that_acls_or_policies_name() {
    let mut cfg = with_acls();
    cfg.queues.idle_delete_ms = 200;
    cfg.queues.policies = vec![stompbox::config::QueuePolicy {
        pattern: "orders.kept.eu".into(),
        message_ttl_ms: None,
        persistent_by_default: None,
    }];
    let b = start_with(cfg).await;
    // Bob creates the shared queue and drains it; alice creates two order queues.
    let mut bob = login(&b, "bob").await;
    bob.subscribe("s", "/queue/shared", "auto").await;
    let mut alice = login(&b, "alice").await;
    alice.publish("/queue/orders.kept.eu", "k").await;
    alice.publish("/queue/orders.tmp", "t").await;
    alice.subscribe("k", "/queue/orders.kept.eu", "auto").await;
    alice.subscribe("t", "/queue/orders.tmp", "auto").await;
    alice.expect(Command::Message).await;
    alice.expect(Command::Message).await;
    drop((alice, bob));
    // The unnamed one goes once idle: proof the sweep ran past the others.
    let router = b.handle.router();
    let deadline = std::time::Instant::now() + WAIT;
    while router.queue_depth("/queue/orders.tmp").is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "idle queue never deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(router.queue_depth("/queue/shared"), Some(0));
    assert_eq!(router.queue_depth("/queue/orders.kept.eu"), Some(0));
    // Alice writes to the shared queue without `create`.
    let mut alice = login(&b, "alice").await;
    alice
        .send("SEND\ndestination:/queue/shared\nreceipt:w\n\nstill here")
        .await;
    alice.until_receipt("w").await;
    assert_eq!(router.queue_depth("/queue/shared"), Some(1));
}
