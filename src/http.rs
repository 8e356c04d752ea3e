//! The WebSocket listener's HTTP side, on hyper.
//!
//! Every connection to the WebSocket port starts as HTTP/1.1. A `GET` on
//! `listeners.ws_path` with a valid RFC 6455 upgrade becomes a STOMP connection
//! (the subprotocol is chosen by [`ws::choose_subprotocol`]); when `http.publish`
//! is on, `POST /api/publish?destination=…` publishes its body as one message
//! (one request per message: the REST side of the WebSocket-vs-REST comparison in
//! BENCHMARKS.md). When `http.static_dir` is set, GET and HEAD of any other path
//! serve that directory through tower-http's `ServeDir`, which already refuses path
//! traversal and does content types, ranges and conditional requests, so a browser
//! app can be loaded from the same origin as its WebSocket; dotfiles and `*.toml`
//! are never served (see [`is_private`]). Anything else is a 404.
//!
//! Request headers must arrive within `limits.handshake_timeout_ms`, a publish body
//! within `http.body_timeout_ms`, and a connection that moves no byte either way for
//! twice that (a response nobody reads, an idle keep-alive) is closed.
//! An HTTP connection that has not upgraded closes after `http.max_connection_ms`,
//! whatever bytes it trickles, and one address has at most
//! `http.max_connections_per_address` of them.
//! HTTP connections have their own pool (`http.max_connections`; the admin listener
//! one of its own, `admin.max_connections`): a WebSocket upgrade
//! takes a STOMP connection permit (`limits.max_connections`) and is refused with 503
//! when there is none, so stalled HTTP clients and STOMP clients never starve each
//! other. A browser keeps
//! HTTP connections open between page loads, so on shutdown idle connections are
//! closed (hyper's graceful shutdown) instead of holding the drain to its deadline.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;

use crate::StartError;
use crate::acl::{Acl, Permission};
use crate::auth::Verifier;
use crate::frame::{Headers, Version};
use crate::router::{Quota, RouteError, Router};
use crate::transport::ws::{self, WsSettings};
use crate::transport::{Counted, Sink, Source};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Unsync because `ServeDir`'s file bodies are; hyper only needs `Send`.
type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// What the HTTP side needs, shared by all connections of the listener.
#[derive(Debug)]
pub(crate) struct HttpSide {
    /// WebSocket settings (path, limits, handshake timeout).
    pub ws: Arc<WsSettings>,
    /// For `POST /api/publish`.
    pub router: Router,
    /// Whether `POST /api/publish` is served (`http.publish`).
    pub publish: bool,
    /// Users for HTTP Basic authentication of publishes.
    pub verifier: Arc<Verifier>,
    /// Who may publish where.
    pub acl: Acl,
    /// Failed logins per source address, shared with STOMP.
    pub peers: Arc<crate::peers::Peers>,
    /// `limits.max_body_bytes`, also the largest publish body.
    pub max_body_bytes: usize,
    /// `http.static_dir`, when set.
    pub static_dir: Option<ServeDir>,
    /// Cancelled when the broker shuts down.
    pub shutdown: CancellationToken,
    /// STOMP connection permits (`limits.max_connections`), one per upgrade.
    pub stomp_permits: Arc<Semaphore>,
    /// `http.body_timeout_ms`.
    pub body_timeout: Duration,
    /// `http.max_connection_ms`: the longest an HTTP connection stays open un-upgraded.
    pub max_connection: Duration,
    /// `queues.send_timeout_ms`: how long a publish may wait for room (twice: memory,
    /// then its queue), part of the grace a request in flight gets at the lifetime cut.
    pub send_timeout: Duration,
    /// HTTP connections per source address (`http.max_connections_per_address`).
    pub http_peers: Arc<crate::peers::Peers>,
    /// On the admin listener: the admin routes, for every path but the WebSocket's.
    pub admin: Option<axum::Router>,
}

/// Checks `http.static_dir` at start: a typo there should stop the broker with the
/// key's name, not show up later as a 404 for every page.
pub(crate) fn static_dir(path: &Path) -> Result<Option<ServeDir>, StartError> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let err = |reason: String| StartError::StaticDir {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_dir() {
        return Err(err("not a directory".into()));
    }
    std::fs::read_dir(path).map_err(|e| err(e.to_string()))?;
    Ok(Some(ServeDir::new(path)))
}

/// An upgrade the service accepted: the pending upgraded connection and the STOMP
/// version cap its subprotocol allows.
type Upgrade = (OnUpgrade, Version, OwnedSemaphorePermit);

/// Serves HTTP on `stream` until it upgrades to WebSocket (returning the STOMP
/// transport halves and version cap) or closes (returning `None`).
pub(crate) async fn serve<S>(
    stream: S,
    side: Arc<HttpSide>,
    peer: std::net::IpAddr,
) -> Option<(Source, Sink, Version, OwnedSemaphorePermit)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (stream, written, read) = Counted::with_reads(stream);
    let (tx, rx) = oneshot::channel::<Upgrade>();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let service_side = side.clone();
    // Queues this connection's publishes create count against a quota of its own, as
    // a STOMP connection's do.
    let quota = Arc::new(side.router.connection_quota());
    let service = service_fn(move |req| {
        let side = service_side.clone();
        let tx = tx.clone();
        let quota = quota.clone();
        async move { Ok::<_, hyper::Error>(handle(req, &side, &tx, peer, &quota).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(side.ws.handshake_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    // A block, so the connection and its service (which holds `tx`) are dropped
    // before `rx` is awaited: a connection that never upgraded then ends `rx` at once.
    let ended = {
        let mut conn = std::pin::pin!(conn);
        // Closes a connection that moves no byte either way for two body timeouts: a
        // response nobody reads, or a keep-alive connection left idle. (Two, so that a
        // late body is still answered 408 first.)
        let moved = || written.bytes().wrapping_add(read.bytes());
        let stalled = async {
            let mut last = moved();
            loop {
                tokio::time::sleep(side.body_timeout * 2).await;
                let now = moved();
                if now == last {
                    return;
                }
                last = now;
            }
        };
        // However it keeps itself alive (bytes trickled every so often included),
        // an HTTP connection that has not upgraded ends after `http.max_connection_ms`:
        // the request in flight is finished first.
        let lifetime = tokio::time::sleep(side.max_connection);
        tokio::select! {
            r = conn.as_mut() => r,
            _ = stalled => {
                tracing::debug!("HTTP connection idle or its response unread: closed");
                return None;
            }
            _ = lifetime => {
                tracing::debug!("HTTP connection open for http.max_connection_ms: closing");
                conn.as_mut().graceful_shutdown();
                // Enough for a request that has only just started: its body, its waits
                // for memory and queue room, and the disk.
                let grace = side.body_timeout + side.send_timeout * 2 + Duration::from_secs(5);
                tokio::select! {
                    r = conn.as_mut() => r,
                    _ = tokio::time::sleep(grace) => return None,
                }
            }
            _ = side.shutdown.cancelled() => {
                // Finishes a request in flight, then closes; an idle keep-alive
                // connection closes at once.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(cause = %e, "HTTP connection ended with an error");
    }
    let (on_upgrade, cap, permit) = rx.await.ok()?;
    let upgraded = match tokio::time::timeout(side.ws.handshake_timeout, on_upgrade).await {
        Ok(Ok(upgraded)) => upgraded,
        _ => return None,
    };
    let (source, sink) = ws::from_upgraded(upgraded, &side.ws).await;
    Some((source, sink, cap, permit))
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = status;
    resp
}

fn text(status: StatusCode, message: String) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(message + "\n"))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn handle(
    req: Request<Incoming>,
    side: &HttpSide,
    tx: &Mutex<Option<oneshot::Sender<Upgrade>>>,
    peer: std::net::IpAddr,
    quota: &Quota,
) -> Response<Body> {
    let path = req.uri().path();
    if path == side.ws.path {
        if !origin_allowed(&req, &side.ws.allowed_origins) {
            return text(StatusCode::FORBIDDEN, "origin not allowed".into());
        }
        // The admin listener's WebSocket is for its own dashboard page.
        if side.admin.is_some() && !crate::admin::same_origin(req.headers()) {
            return text(
                StatusCode::FORBIDDEN,
                "cross-origin WebSocket refused on the admin listener".into(),
            );
        }
        return upgrade(req, tx, &side.stomp_permits);
    }
    if let Some(app) = &side.admin {
        return admin(req, app, peer).await;
    }
    if path == "/api/publish" && side.publish {
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use POST".into());
        }
        return publish(req, side, peer, quota).await;
    }
    match &side.static_dir {
        Some(dir) if path != "/api/publish" => static_file(req, dir, &side.ws.path).await,
        _ => not_found(path, &side.ws.path),
    }
}

/// Hands a request to the admin routes, with the client's address.
async fn admin(
    mut req: Request<Incoming>,
    app: &axum::Router,
    peer: std::net::IpAddr,
) -> Response<Body> {
    use tower::ServiceExt as _;
    req.extensions_mut().insert(crate::admin::PeerIp(peer));
    let resp = match app.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    resp.map(|body| body.map_err(BoxError::from).boxed_unsync())
}

fn not_found(path: &str, ws_path: &str) -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        format!("nothing at {path}; STOMP over WebSocket is at {ws_path}"),
    )
}

/// `http.static_dir`. `ServeDir` answers a missing file, or a path that tries to
/// leave the directory, with an empty 404; ours names the WebSocket path instead, so
/// a client that got the path wrong learns the right one.
async fn static_file(req: Request<Incoming>, dir: &ServeDir, ws_path: &str) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if is_private(&path) {
        return not_found(&path, ws_path);
    }
    match dir.clone().try_call(req).await {
        Ok(resp) if resp.status() == StatusCode::NOT_FOUND => not_found(&path, ws_path),
        Ok(resp) => resp.map(|body| body.map_err(BoxError::from).boxed_unsync()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::NotADirectory
                    | io::ErrorKind::PermissionDenied
            ) =>
        {
            not_found(&path, ws_path)
        }
        Err(e) => {
            tracing::warn!(%path, cause = %e, "cannot serve static file");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the file".into(),
            )
        }
    }
}

/// Whether a static path names something a site folder may hold but never serves:
/// a dotfile or dot-directory (`.env`, `.git/`) or a `*.toml` (a broker config next to
/// the page holds password hashes and token secrets). Checked on the decoded path,
/// as `ServeDir` decodes it.
fn is_private(path: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    decoded.split(['/', '\\']).any(|segment| {
        segment.starts_with('.')
            || segment
                .get(segment.len().saturating_sub(5)..)
                .is_some_and(|end| end.eq_ignore_ascii_case(".toml"))
    })
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `listeners.ws_allowed_origins`: browsers always send `Origin`; a request without
/// one is not from a browser page and cannot be a cross-site hijack.
fn origin_allowed(req: &Request<Incoming>, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match req.headers().get(header::ORIGIN) {
        None => true,
        Some(origin) => allowed.iter().any(|a| origin.as_bytes() == a.as_bytes()),
    }
}

/// RFC 6455 §4.2: validate the opening handshake and answer 101.
fn upgrade(
    mut req: Request<Incoming>,
    tx: &Mutex<Option<oneshot::Sender<Upgrade>>>,
    permits: &Arc<Semaphore>,
) -> Response<Body> {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let valid = req.method() == Method::GET
        && header_has_token(&req, header::CONNECTION, "upgrade")
        && header_has_token(&req, header::UPGRADE, "websocket")
        && req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let Some(key) = key.filter(|_| valid) else {
        let mut resp = text(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (RFC 6455)".into(),
        );
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return resp;
    };
    let offers = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let chosen = ws::choose_subprotocol(offers);
    let Some(sender) = tx.lock().expect("upgrade lock poisoned").take() else {
        return text(StatusCode::BAD_REQUEST, "one upgrade per connection".into());
    };
    let cap = chosen.map_or(Version::V1_2, |(_, v)| v);
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection limit reached (limits.max_connections)".into(),
        );
    };
    if sender
        .send((hyper::upgrade::on(&mut req), cap, permit))
        .is_err()
    {
        return empty(StatusCode::SERVICE_UNAVAILABLE);
    }
    let mut resp = empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = derive_accept_key(key.as_bytes());
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header"),
    );
    if let Some((name, _)) = chosen {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(name),
        );
    }
    resp
}

/// As for CONNECT (see `auth`): with users configured, HTTP Basic credentials must
/// match one; otherwise anonymous publishing follows `auth.allow_anonymous`.
/// Returns the login (`Some(None)`: anonymous), or `None` when refused.
async fn authorized(req: &Request<Incoming>, verifier: &Verifier) -> Option<Option<String>> {
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::basic_credentials);
    let Some((login, passcode)) = basic else {
        return verifier.check(None, "").await.then_some(None);
    };
    verifier
        .check(Some(&login), &passcode)
        .await
        .then_some(Some(login))
}

async fn publish(
    req: Request<Incoming>,
    side: &HttpSide,
    peer: std::net::IpAddr,
    quota: &Quota,
) -> Response<Body> {
    // Failed logins count per address as for CONNECT (`auth.max_failed_logins`).
    // Dropped on a failure path, the attempt counts as a failed login.
    let Some(attempt) = side.peers.login_attempt(Some(peer)) else {
        return text(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins from your address: try again later".into(),
        );
    };
    let Some(login) = authorized(&req, &side.verifier).await else {
        // A request without credentials is the usual first step of a Basic challenge;
        // only presented credentials that fail count.
        if req.headers().contains_key(header::AUTHORIZATION) {
            tracing::warn!("HTTP publish login failed");
        } else {
            attempt.release();
        }
        let mut resp = text(
            StatusCode::UNAUTHORIZED,
            "bad or missing credentials".into(),
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"stompbox\""),
        );
        return resp;
    };
    attempt.release();
    let destination = req
        .uri()
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "destination"))
        .map(|(_, v)| v.into_owned());
    let Some(destination) = destination else {
        return text(StatusCode::BAD_REQUEST, "missing ?destination=".into());
    };
    // The same ACLs as a STOMP SEND: write, and create for a queue not there yet.
    let user = login.as_deref();
    let refused = [Permission::Write, Permission::Create]
        .into_iter()
        .find(|p| match p {
            Permission::Create => {
                destination.starts_with("/queue/")
                    && !side.router.has_queue(&destination)
                    && !side.acl.allows(user, *p, &destination)
            }
            _ => !side.acl.allows(user, *p, &destination),
        });
    if let Some(p) = refused {
        return text(
            StatusCode::FORBIDDEN,
            format!("permission denied: {p} on {destination}"),
        );
    }
    // Content-Type, and the STOMP headers that decide how a message is kept: the same
    // names as on a SEND (HTTP header names are case-insensitive).
    let mut headers = Headers::new();
    for (http_name, stomp_name) in [
        (header::CONTENT_TYPE.as_str(), "content-type"),
        ("persistent", "persistent"),
        ("expires", "expires"),
        ("expiration", "expiration"),
        ("delay", "delay"),
    ] {
        if let Some(v) = req.headers().get(http_name).and_then(|v| v.to_str().ok()) {
            headers.push(stomp_name, v);
        }
    }
    let collect = Limited::new(req.into_body(), side.max_body_bytes).collect();
    let body = match tokio::time::timeout(side.body_timeout, collect).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within {} ms",
                    side.body_timeout.as_millis()
                ),
            );
        }
        Ok(Err(_)) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "body larger than {} bytes, or the request failed",
                    side.max_body_bytes
                ),
            );
        }
    };
    if let Err(e) = side.router.check_destination(&destination) {
        return text(StatusCode::BAD_REQUEST, e.to_string());
    }
    if destination.starts_with("/temp-queue/") && destination.matches('/').count() < 3 {
        return text(
            StatusCode::BAD_REQUEST,
            "temp queues need their routable name".into(),
        );
    }
    // The one publish path (see `router::publish`): persistence, TTL and policies,
    // expiry and delay headers, the connection's queue quota.
    let message = match side.router.client_message(destination, headers, body) {
        Ok(m) => m,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let id = message.id.clone();
    match side.router.publish(message, Some(quota)).await {
        Ok(()) => {
            let mut resp = empty(StatusCode::NO_CONTENT);
            resp.headers_mut().insert(
                "message-id",
                HeaderValue::from_str(&id).expect("ids are ASCII"),
            );
            resp
        }
        Err(e @ (RouteError::QueueFull(_) | RouteError::MemoryHigh)) => {
            text(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(e @ RouteError::TooLargeForQueue(..)) => {
            text(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
        }
        Err(e @ RouteError::Store(_)) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dotfiles_and_toml_files_are_private() {
        for path in [
            "/broker.toml",
            "/BROKER.TOML",
            "/broker%2Etoml",
            "/.env",
            "/a/.git/config",
            "/%2egit/HEAD",
            "/sub/x.toml",
        ] {
            assert!(super::is_private(path), "{path}");
        }
        for path in [
            "/",
            "/index.html",
            "/node_modules/a/b.js",
            "/toml",
            "/a.toml.html",
        ] {
            assert!(!super::is_private(path), "{path}");
        }
    }
}
