//! JWT logins: a token in CONNECT's passcode (or a `token` header) verified against an
//! HS256 secret; forged, expired and wrong-audience tokens refused with a clear
//! reason; roles from claims in ACLs; refresh through `/sys/auth` keeps a connection
//! past its first token's expiry, and a connection that does not refresh is closed with
//! ERROR `token expired`.

mod common;

use std::time::Duration;

use common::*;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;
use stompbox::config::AclRule;
use stompbox::frame::Command;

const SECRET: &str = "test-secret-of-enough-length-for-hs256";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(secret: &str, claims: serde_json::Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn valid(user: &str, roles: &[&str], lifetime_s: u64) -> String {
    token(
        SECRET,
        json!({"sub": user, "roles": roles, "aud": "stompbox", "exp": now() + lifetime_s}),
    )
}

fn jwt_config() -> stompbox::Config {
    let mut cfg = config();
    cfg.auth.allow_anonymous = false;
    cfg.auth.jwt.hs256_secrets = vec![SECRET.into()];
    cfg.auth.jwt.audience = "stompbox".into();
    cfg.auth.jwt.expiry_grace_ms = 300;
    cfg.auth.acls = vec![AclRule {
        roles: vec!["reader".into()],
        read: vec!["/topic/news.*".into()],
        ..AclRule::default()
    }];
    cfg
}

async fn connect_with(b: &TestBroker, passcode: &str) -> Client {
    let mut c = Client::tcp(b.tcp()).await;
    c.send(&format!(
        "CONNECT\naccept-version:1.2\nhost:x\npasscode:{passcode}\n\n"
    ))
    .await;
    c
}

#[tokio::test]
async fn tokens_are_checked_and_refused_with_a_reason() {
    let b = start_with(jwt_config()).await;
    let mut ok = connect_with(&b, &valid("ann", &["reader"], 60)).await;
    ok.expect(Command::Connected).await;
    // Roles from the token reach the ACLs.
    ok.subscribe("n", "/topic/news.eu", "auto").await;
    ok.send("SEND\ndestination:/topic/news.eu\n\nx").await;
    let e = ok.expect_error_and_close().await;
    assert_eq!(
        e.headers.get("message"),
        Some("permission denied: write on /topic/news.eu")
    );

    let cases = [
        (
            token(
                "another-secret-entirely-for-forgery!!",
                json!({"sub": "ann", "aud": "stompbox", "exp": now() + 60}),
            ),
            "token refused: InvalidSignature",
        ),
        (
            token(
                SECRET,
                json!({"sub": "ann", "aud": "stompbox", "exp": now() - 120}),
            ),
            "token expired",
        ),
        (
            token(
                SECRET,
                json!({"sub": "ann", "aud": "elsewhere", "exp": now() + 60}),
            ),
            "token refused: InvalidAudience",
        ),
    ];
    for (t, message) in cases {
        let mut c = connect_with(&b, &t).await;
        let e = c.expect_error_and_close().await;
        assert_eq!(e.headers.get("message"), Some(message));
    }
    b.handle.shutdown().await;
}

#[tokio::test]
async fn a_refreshed_token_keeps_the_connection_and_an_unrefreshed_one_ends_it() {
    let b = start_with(jwt_config()).await;
    // Both tokens expire in 2 s (+ 0.3 s grace).
    let mut refreshes = connect_with(&b, &valid("ann", &["reader"], 2)).await;
    refreshes.expect(Command::Connected).await;
    let mut lapses = connect_with(&b, &valid("bob", &["reader"], 2)).await;
    lapses.expect(Command::Connected).await;

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let fresh = valid("ann", &["reader"], 60);
    refreshes
        .send(&format!(
            "SEND\ndestination:/sys/auth\nreceipt:r\n\n{fresh}"
        ))
        .await;
    refreshes.until_receipt("r").await;

    let e = lapses.expect_error_and_close().await;
    assert_eq!(e.headers.get("message"), Some("token expired"));

    // Past the first token's expiry and grace: still up.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    refreshes.subscribe("n", "/topic/news.eu", "auto").await;

    // A refresh for another user is refused.
    let other = valid("mallory", &["reader"], 60);
    refreshes
        .send(&format!("SEND\ndestination:/sys/auth\n\n{other}"))
        .await;
    let e = refreshes.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .unwrap()
            .starts_with("token refused: a refresh must be for the user"),
        "{e:?}"
    );
    b.handle.shutdown().await;
}

#[tokio::test]
async fn es256_tokens_check_against_a_pem_public_key_and_a_jwks_file() {
    use base64::Engine as _;
    let dir = std::env::temp_dir().join(format!("stompbox-jwt-es256-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
    let signer = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let raw = key.public_key_raw(); // 0x04 || x || y
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
                                "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}]});
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).unwrap();
    std::fs::write(dir.join("public.pem"), key.public_key_pem()).unwrap();
    let es256 = |user: &str, signer: &EncodingKey| {
        encode(
            &Header::new(jsonwebtoken::Algorithm::ES256),
            &json!({"sub": user, "exp": now() + 60}),
            signer,
        )
        .unwrap()
    };
    let other = rcgen::KeyPair::generate().unwrap();
    let forger = EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap();
    for source in ["jwks", "pem"] {
        let mut cfg = config();
        cfg.auth.allow_anonymous = false;
        match source {
            "jwks" => cfg.auth.jwt.jwks_file = dir.join("jwks.json").to_string_lossy().into(),
            _ => {
                cfg.auth.jwt.public_key_files =
                    vec![dir.join("public.pem").to_string_lossy().into()]
            }
        }
        let b = start_with(cfg).await;
        let mut ok = connect_with(&b, &es256("eve", &signer)).await;
        ok.expect(Command::Connected).await;
        let mut forged = connect_with(&b, &es256("eve", &forger)).await;
        let e = forged.expect_error_and_close().await;
        assert_eq!(
            e.headers.get("message"),
            Some("token refused: InvalidSignature"),
            "{source}"
        );
        b.handle.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn issuer_and_not_before_are_checked() {
    let mut cfg = jwt_config();
    cfg.auth.jwt.issuer = "https://id.example.com".into();
    let b = start_with(cfg).await;
    let claims = |iss: &str, nbf: u64| {
        token(
            SECRET,
            json!({"sub": "ann", "aud": "stompbox", "iss": iss, "nbf": nbf, "exp": now() + 60}),
        )
    };
    let mut ok = connect_with(&b, &claims("https://id.example.com", now() - 5)).await;
    ok.expect(Command::Connected).await;
    for (t, message) in [
        (
            claims("https://evil.example", now() - 5),
            "token refused: InvalidIssuer",
        ),
        (
            claims("https://id.example.com", now() + 600),
            "token refused: ImmatureSignature",
        ),
    ] {
        let mut c = connect_with(&b, &t).await;
        let e = c.expect_error_and_close().await;
        assert_eq!(e.headers.get("message"), Some(message));
    }
    b.handle.shutdown().await;
}

/// One HTTP GET with `authorization`; returns the status code.
async fn get_status(addr: std::net::SocketAddr, path: &str, authorization: &str) -> u16 {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nAuthorization: {authorization}"),
        b"",
    )
    .await
    .0
}

#[tokio::test]
async fn a_token_with_an_admin_role_opens_the_admin_api_and_sys_stats() {
    let mut cfg = jwt_config();
    cfg.admin.listen = "127.0.0.1:0".into();
    cfg.admin.roles = vec!["operator".into()];
    cfg.admin.stats_interval_ms = 100;
    let b = start_with(cfg).await;
    let admin = b.handle.admin_addr.unwrap();
    let bearer = |t: String| format!("Bearer {t}");
    assert_eq!(
        get_status(
            admin,
            "/api/overview",
            &bearer(valid("ann", &["operator"], 60))
        )
        .await,
        200
    );
    for refused in [
        valid("ann", &["reader"], 60),
        token(
            "another-secret-of-enough-length!!",
            json!({"sub": "ann", "roles": ["operator"], "aud": "stompbox", "exp": now() + 60}),
        ),
        "not.a.token".to_owned(),
    ] {
        assert_eq!(get_status(admin, "/metrics", &bearer(refused)).await, 401);
    }
    // Over STOMP, the role reads /sys/stats.
    let mut c = connect_with(&b, &valid("ann", &["operator"], 60)).await;
    c.expect(Command::Connected).await;
    c.subscribe("s", "/sys/stats", "auto").await;
    let m = c.expect(Command::Message).await;
    assert_eq!(m.headers.get("destination"), Some("/sys/stats"));
}

#[tokio::test]
async fn a_token_naming_an_admin_login_is_not_that_admin() {
    let mut cfg = jwt_config();
    cfg.admin.listen = "127.0.0.1:0".into();
    cfg.auth.users = vec![user("ops", "secret")];
    cfg.admin.users = vec!["ops".into()];
    let b = start_with(cfg).await;
    // The token's `sub` spells the admin's login, but only the passcode makes an admin.
    let mut c = connect_with(&b, &valid("ops", &[], 60)).await;
    c.expect(Command::Connected).await;
    c.send("SUBSCRIBE\nid:s\ndestination:/sys/stats\n\n").await;
    let e = c.expect_error_and_close().await;
    assert_eq!(
        e.headers.get("message"),
        Some("permission denied: read on /sys/stats")
    );
}

/// Issue 18, finding 3: with `[auth.jwt]` and ACLs naming token subjects but no
/// `[[auth.users]]`, the default `allow_anonymous = true` let `CONNECT login:alice
/// passcode:not-a-token` in as alice, with alice's rights (HTTP Basic too). A login
/// nothing can prove is now refused; anonymous clients keep anonymous rights, and
/// alice's token still logs her in.
#[tokio::test]
async fn a_login_without_a_token_cannot_claim_a_token_user() {
    let mut cfg = config();
    cfg.http.publish = true;
    cfg.auth.jwt.hs256_secrets = vec![SECRET.into()];
    cfg.auth.jwt.audience = "stompbox".into();
    cfg.auth.acls = vec![
        AclRule {
            users: vec!["alice".into()],
            read: vec!["/queue/secret".into()],
            write: vec!["/queue/secret".into()],
            create: vec!["/queue/secret".into()],
            ..AclRule::default()
        },
        AclRule {
            users: vec!["*".into()],
            read: vec!["/topic/public".into()],
            ..AclRule::default()
        },
    ];
    let b = start_with(cfg).await;
    let mut mallory = Client::tcp(b.tcp()).await;
    mallory
        .send("CONNECT\naccept-version:1.2\nhost:x\nlogin:alice\npasscode:not-a-token\n\n")
        .await;
    let e = mallory.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .is_some_and(|m| m.starts_with("authentication failed")),
        "{e:?}"
    );
    // The same over HTTP Basic.
    let basic = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("alice:not-a-token")
    };
    let (status, _) = http_request(
        b.handle.ws_addr,
        &format!(
            "POST /api/publish?destination=/queue/secret HTTP/1.1\r\nAuthorization: Basic {basic}"
        ),
        b"forged",
    )
    .await;
    assert_eq!(status, 401);
    // Anonymous is still anonymous: public reads only.
    let mut anon = connected(&b).await;
    anon.subscribe("p", "/topic/public", "auto").await;
    anon.send("SEND\ndestination:/queue/secret\n\nx").await;
    let e = anon.expect_error_and_close().await;
    assert_eq!(
        e.headers.get("message"),
        Some("permission denied: write on /queue/secret")
    );
    // Alice's token is alice.
    let mut alice = connect_with(&b, &valid("alice", &[], 60)).await;
    alice.expect(Command::Connected).await;
    alice.subscribe("s", "/queue/secret", "auto").await;
    alice.publish("/queue/secret", "mine").await;
    assert_eq!(&alice.expect(Command::Message).await.body[..], b"mine");
}
