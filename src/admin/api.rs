//! The admin listener's routes (axum), and their authentication.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use tower_http::services::{ServeDir, ServeFile};

use super::{AdminState, OPENAPI, PeerIp, log, prometheus, views};
use crate::frame::Headers;
use crate::router::DeleteError;

type Shared = Arc<AdminState>;

/// A JSON error: `{"error": "..."}` with its status.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The routes, with `state`.
pub(crate) fn app(state: Arc<AdminState>) -> Router {
    let dir = state.shared.config.admin.dashboard_dir.clone();
    let api = Router::new()
        .route("/api/overview", get(overview))
        .route("/api/connections", get(connections))
        .route("/api/connections/{id}", delete(close_connection))
        .route("/api/connections/{id}/trace", put(trace))
        .route(
            "/api/destinations",
            get(destinations).delete(delete_destination),
        )
        .route("/api/destinations/purge", post(purge))
        .route("/api/durables", get(durables).delete(delete_durable))
        .route("/api/messages", post(publish))
        .route("/api/log-level", get(log_level).put(set_log_level))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such API path") });
    let metrics = Router::new().route("/metrics", get(metrics));
    let metrics = if state.shared.config.admin.public_metrics {
        metrics
    } else {
        metrics.route_layer(middleware::from_fn_with_state(state.clone(), admin_only))
    };
    Router::new()
        .merge(api.route_layer(middleware::from_fn_with_state(state.clone(), admin_only)))
        .merge(metrics)
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route_service("/", ServeFile::new(dir.join("index.html")))
        .nest_service("/dashboard", ServeDir::new(&dir))
        .with_state(state)
}

fn unauthorized(message: &str) -> Response {
    let mut resp = error(StatusCode::UNAUTHORIZED, message);
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"stompbox admin\""),
    );
    resp
}

/// Lets through admins only: Basic credentials of one of `admin.users`, verified
/// like a STOMP login, or a bearer token with one of `admin.roles`; failures count
/// against the same failed-login limit. A request that changes something and carries
/// an `Origin` must come from this listener's origin.
async fn admin_only(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let shared = &state.shared;
    let peer = req.extensions().get::<PeerIp>().map(|p| p.0);
    // Dropped on a failure path, the attempt counts as a failed login.
    let Some(attempt) = shared.peers.login_attempt(peer) else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins from your address: try again later",
        );
    };
    // A bearer token (`[auth.jwt]`) whose roles include one of `admin.roles`.
    if let Some(token) = bearer(req.headers()) {
        let admin = shared
            .jwt
            .as_ref()
            .and_then(|v| v.verify(token).ok())
            .is_some_and(|id| shared.is_admin(None, &id.roles));
        if !admin {
            return unauthorized("token refused, or without an admin role");
        }
        attempt.release();
        return guarded(req, next).await;
    }
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::basic_credentials);
    let Some((login, passcode)) = basic else {
        // No credentials: the first step of a Basic challenge, not a failure.
        attempt.release();
        return unauthorized("admin credentials required (HTTP Basic, or a bearer token)");
    };
    let known = shared.config.admin.users.contains(&login);
    // The check runs for unknown logins too (against a dummy hash), so that the
    // answer's timing does not tell which logins exist.
    let verified = shared.verifier.check(Some(&login), &passcode).await;
    if !(known && verified) {
        tracing::warn!(%login, ?peer, "admin login failed");
        return unauthorized("bad credentials, or not an admin");
    }
    attempt.release();
    guarded(req, next).await
}

/// An authenticated request, past the same-origin rule.
async fn guarded(req: Request, next: Next) -> Response {
    if req.method() != Method::GET && !same_origin(req.headers()) {
        return error(
            StatusCode::FORBIDDEN,
            "cross-origin request refused: use the admin listener's own pages",
        );
    }
    next.run(req).await
}

/// A bearer token, if the request has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// No `Origin`, or an `Origin` whose host is the `Host` this request was sent to.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o == h)
}

async fn readyz(State(state): State<Shared>) -> Response {
    let shared = &state.shared;
    let m = shared.router.metrics();
    let listeners = !shared.shutdown.is_cancelled();
    let store = crate::metrics::Metrics::get(&m.store_failures) == 0;
    let memory = !shared.router.memory().is_high();
    let ready = listeners && store && memory;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "checks": { "listeners": listeners, "store": store, "memory": memory },
        })),
    )
        .into_response()
}

async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        prometheus::render(&state),
    )
        .into_response()
}

async fn overview(State(state): State<Shared>) -> Json<views::Overview> {
    Json(views::overview(&state))
}

async fn connections(State(state): State<Shared>) -> Json<Vec<views::Connection>> {
    Json(views::connections(&state))
}

async fn close_connection(State(state): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    match state.shared.connections.get(&id) {
        Some(conn) => {
            tracing::info!(session = %id, "connection closed by an administrator");
            conn.close.cancel();
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("no connection {id}")),
    }
}

#[derive(Deserialize)]
struct TraceRequest {
    enabled: bool,
}

async fn trace(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    body: Result<Json<TraceRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Some(conn) = state.shared.connections.get(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no connection {id}"));
    };
    conn.trace
        .store(req.enabled, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(session = %id, enabled = req.enabled, "frame tracing switched");
    Json(json!({ "id": id, "trace": req.enabled })).into_response()
}

async fn destinations(State(state): State<Shared>) -> Json<Vec<views::Destination>> {
    Json(views::destinations(&state))
}

#[derive(Deserialize)]
struct DestinationQuery {
    destination: String,
}

async fn purge(
    State(state): State<Shared>,
    query: Result<Query<DestinationQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, "missing ?destination=");
    };
    match state.shared.router.purge(&q.destination) {
        Some(n) => {
            tracing::info!(destination = %q.destination, purged = n, "queue purged by an administrator");
            Json(json!({ "destination": q.destination, "purged": n })).into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("no queue {}", q.destination)),
    }
}

async fn delete_destination(
    State(state): State<Shared>,
    query: Result<Query<DestinationQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, "missing ?destination=");
    };
    match state.shared.router.delete_queue(&q.destination) {
        Ok(n) => {
            tracing::info!(destination = %q.destination, purged = n, "queue deleted by an administrator");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e @ DeleteError::NotFound) => {
            error(StatusCode::NOT_FOUND, format!("{e}: {}", q.destination))
        }
        Err(e @ DeleteError::NotAQueue) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ DeleteError::InUse) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

async fn durables(State(state): State<Shared>) -> Json<Vec<crate::router::DurableView>> {
    Json(state.shared.router.durables())
}

#[derive(Deserialize)]
struct DurableQuery {
    key: String,
}

async fn delete_durable(
    State(state): State<Shared>,
    query: Result<Query<DurableQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, "missing ?key=");
    };
    match state.shared.router.delete_durable_unattached(&q.key) {
        Ok(n) => {
            tracing::info!(key = %q.key, purged = n, "durable subscription deleted by an administrator");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(DeleteError::InUse) => error(
            StatusCode::CONFLICT,
            "a subscriber is attached to this durable subscription",
        ),
        Err(_) => error(
            StatusCode::NOT_FOUND,
            format!("no durable subscription {}", q.key),
        ),
    }
}

#[derive(Deserialize)]
struct PublishRequest {
    destination: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    body: String,
}

/// Publishes one message as a SEND would (persistent when its queue or header says
/// so: then answered once it is on disk), waiting for room up to
/// `queues.send_timeout_ms`.
async fn publish(
    State(state): State<Shared>,
    body: Result<Json<PublishRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let router = &state.shared.router;
    let destination = req.destination;
    if let Err(e) = router.check_destination(&destination) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    if req.body.len() > state.shared.config.limits.max_body_bytes {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body larger than limits.max_body_bytes",
        );
    }
    let mut headers = Headers::new();
    for (k, v) in &req.headers {
        headers.push(k.as_str(), v.as_str());
    }
    // The one publish path (see `router::publish`): reserved headers dropped,
    // persistence, TTL and policies, expiry and delay. An administrator creates
    // queues outside any connection's quota.
    let message = match router.client_message(destination.clone(), headers, Bytes::from(req.body)) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match router.publish(message, None).await {
        Ok(()) => Json(json!({ "destination": destination })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn log_level() -> Response {
    match log::control() {
        Some(c) => Json(json!({ "level": c.get() })).into_response(),
        None => error(
            StatusCode::NOT_IMPLEMENTED,
            "the program embedding the broker installed no log-level control",
        ),
    }
}

#[derive(Deserialize)]
struct LevelRequest {
    level: String,
}

async fn set_log_level(body: Result<Json<LevelRequest>, JsonRejection>) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Some(c) = log::control() else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "the program embedding the broker installed no log-level control",
        );
    };
    match c.set(&req.level) {
        Ok(()) => {
            tracing::info!(level = %req.level, "log level changed by an administrator");
            Json(json!({ "level": c.get() })).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}
