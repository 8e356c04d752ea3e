//! Accept loops for the TCP and WebSocket listeners.
//!
//! A connection permit is taken right after `accept` and before anything is spawned
//! — on the TCP listener a STOMP one (`limits.max_connections`), on the WebSocket
//! listener an HTTP one (`http.max_connections`; the admin listener has a pool of its
//! own, `admin.max_connections`), traded for a STOMP one by the upgrade: at the limit, each listener
//! holds just the one socket it accepted and every further client waits in the kernel
//! backlog. (Taking the permit *before* `accept`, as single-listener servers do, would
//! let an idle listener sit on the last permit while the other starves.) The WebSocket upgrade runs inside the connection's own task under
//! `handshake_timeout_ms`, so a slow handshake never stalls the accept loop. Each
//! connection runs in a `conn` span with the peer address and transport, filled in
//! later with the session id and login.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, field::Empty};

use crate::frame::Version;
use crate::http::HttpSide;
use crate::metrics::Metrics;
use crate::session::{self, Shared};
use crate::tls::Tls;
use crate::transport::{self, Kind};

/// Runs one accept loop until shutdown.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    kind: Kind,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    http: Option<Arc<HttpSide>>,
    tls: Option<Arc<Tls>>,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(ok) => ok,
                Err(e) => {
                    // Usually out of file descriptors: back off and keep serving.
                    tracing::warn!(cause = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shared.shutdown.cancelled() => return,
        };
        backoff = Duration::from_millis(10);
        // An address at `http.max_connections_per_address` takes no slot of the pool:
        // its new connection is closed at once. Given back when the HTTP phase ends.
        let http_slot = match &http {
            Some(h) if h.admin.is_none() => match h.http_peers.connect(peer.ip()) {
                Ok(slot) => Some(slot),
                Err(max) => {
                    tracing::debug!(%peer, max, "too many HTTP connections from this address");
                    continue;
                }
            },
            _ => None,
        };
        // At the limit, this one accepted socket waits here for a slot; the clients
        // behind it wait in the kernel backlog.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("connection semaphore never closes"),
            _ = shared.shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        // The admin listener's HTTP requests are not broker connections.
        let counted = http.as_ref().is_none_or(|h| h.admin.is_none());
        let open = counted.then(|| Open::new(shared.router.metrics().clone()));
        let transport = match (kind, &tls) {
            (Kind::Tcp, None) => "tcp",
            (Kind::Tcp, Some(_)) => "tls",
            (Kind::Ws, None) => "ws",
            (Kind::Ws, Some(_)) => "wss",
        };
        let span = tracing::info_span!("conn", %peer, transport, session = Empty, login = Empty);
        let shared = shared.clone();
        let http = http.clone();
        let tls = tls.clone();
        tracker.spawn(
            async move {
                tracing::debug!("accepted");
                let mut cert_user = None;
                let stream = match tls {
                    None => Ok(stream),
                    Some(tls) => match handshake(stream, &tls, http.is_some(), &shared).await {
                        Some(tls_stream) => {
                            cert_user = crate::tls::client_user(&tls_stream);
                            Err(tls_stream)
                        }
                        None => {
                            drop(open);
                            return;
                        }
                    },
                };
                let accepted = session::Accepted {
                    peer,
                    transport,
                    cert_user,
                    admins_only: !counted,
                };
                match (http, stream) {
                    (None, Ok(stream)) => {
                        let (source, sink) = transport::tcp::split(stream);
                        session::serve(source, sink, Version::V1_2, shared, accepted).await;
                    }
                    (None, Err(tls_stream)) => {
                        let (source, sink) = transport::tcp::split_tls(tls_stream);
                        session::serve(source, sink, Version::V1_2, shared, accepted).await;
                    }
                    (Some(http), stream) => {
                        let served = match stream {
                            Ok(plain) => crate::http::serve(plain, http, peer.ip()).await,
                            Err(tls_stream) => {
                                crate::http::serve(tls_stream, http, peer.ip()).await
                            }
                        };
                        // The HTTP permit goes; an upgrade holds a STOMP permit instead.
                        drop(permit);
                        drop(http_slot);
                        if let Some((source, sink, cap, _stomp)) = served {
                            session::serve(source, sink, cap, shared, accepted).await;
                        }
                        drop(open);
                        tracing::debug!("closed");
                        return;
                    }
                }
                drop(open);
                drop(permit);
                tracing::debug!("closed");
            }
            .instrument(span),
        );
    }
}

/// Counts a connection in `connections_total` and, while it lives, `connections_open`.
struct Open(Arc<Metrics>);

impl Open {
    fn new(metrics: Arc<Metrics>) -> Open {
        Metrics::inc(&metrics.connections_total);
        Metrics::inc(&metrics.connections_open);
        Open(metrics)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The TLS handshake, within `limits.handshake_timeout_ms`. A client that speaks
/// plain text to a TLS port (its first byte is not a TLS handshake record) is told so
/// in its own protocol — a STOMP ERROR, or an HTTP 400 on the `wss` port — and closed.
async fn handshake(
    stream: tokio::net::TcpStream,
    tls: &Tls,
    http: bool,
    shared: &Shared,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    use tokio::io::AsyncWriteExt;
    let deadline = shared.config.handshake_timeout();
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(deadline, stream.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return None;
    }
    // 0x16: a TLS handshake record.
    if first[0] != 0x16 {
        let mut stream = stream;
        let reply: &[u8] = if http {
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 40\r\nconnection: close\r\n\r\nthis port speaks TLS: connect with wss://"
        } else {
            b"ERROR\nmessage:this port speaks STOMP over TLS: connect with TLS\ncontent-length:0\n\n\0"
        };
        let _ = tokio::time::timeout(deadline, stream.write_all(reply)).await;
        let _ = stream.shutdown().await;
        tracing::debug!("plain text on a TLS port: refused");
        return None;
    }
    match tokio::time::timeout(deadline, tls.acceptor().accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(cause = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// Pending connections the kernel queues per listener. std's default (128) makes a
/// burst of clients pay a one-second SYN retransmit once it overflows.
const BACKLOG: u32 = 1024;

/// Binds a listener, naming the address in the error.
/// Which listener an address is for: a bind error names it with the setting and the
/// flag that move it, since the usual cause is another broker on the same port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// `listeners.tcp`.
    Tcp,
    /// `listeners.ws`.
    Ws,
    /// `admin.listen`.
    Admin,
    /// `listeners.tcp_tls`.
    TcpTls,
    /// `listeners.wss`.
    Wss,
}

impl std::fmt::Display for Which {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Which::Tcp => "STOMP over TCP (listeners.tcp; --tcp ADDR moves it)",
            Which::Ws => "WebSocket (listeners.ws; --ws ADDR moves it)",
            Which::Admin => {
                "the admin API (admin.listen; --admin ADDR moves it, --admin \"\" turns it off)"
            }
            Which::TcpTls => "STOMP over TLS (listeners.tcp_tls)",
            Which::Wss => "WebSocket over TLS (listeners.wss)",
        })
    }
}

/// Binds `addr` for `which`; returns the listener and the address it got (port 0
/// picks one).
pub(crate) fn bind(
    addr: SocketAddr,
    which: Which,
) -> Result<(TcpListener, SocketAddr), crate::StartError> {
    let err = |source| crate::StartError::Bind {
        listener: which,
        addr,
        source,
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    let listener = socket.listen(BACKLOG).map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    Ok((listener, bound))
}
