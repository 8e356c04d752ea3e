//! TLS with rustls (no OpenSSL): STOMP over TLS (`listeners.tcp_tls`) and `wss://`
//! (`listeners.wss`), beside the plain listeners, with one certificate chain and key
//! (`[tls]`).
//!
//! Certificates are renewed every few weeks, so they are reloaded without dropping a
//! connection: on SIGHUP, and when either file's modification time changes (checked
//! every `tls.reload_check_ms`). A reload builds a new rustls config and swaps it in;
//! connections already up keep the one they shook hands with, new ones get the new
//! one. A file that fails to load keeps the old config in use, and says why in the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Why certificates could not be loaded; names the file.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("cannot load {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair (a key that does not match the certificate, say).
    #[error("certificate {cert} with key {key}: {reason}")]
    Pair {
        /// The chain file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// The current TLS config, reloadable.
#[derive(Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    /// CA file for client certificates, if any.
    client_ca: Option<PathBuf>,
    current: RwLock<Arc<ServerConfig>>,
    /// The files' modification times the current config was loaded from.
    loaded: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn build(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerConfig, TlsError> {
    let file_err = |path: &Path, e: &dyn std::fmt::Display| TlsError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, &e))?;
    if chain.is_empty() {
        return Err(file_err(cert, &"no PEM certificate in it"));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, &e))?;
    let builder =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| file_err(cert, &e))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| file_err(ca, &e))? {
                roots
                    .add(c.map_err(|e| file_err(ca, &e))?)
                    .map_err(|e| file_err(ca, &e))?;
            }
            // Optional: a client without a certificate logs in as usual.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| file_err(ca, &e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, private)
        .map_err(|e| TlsError::Pair {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl Tls {
    /// Loads the chain and key (PEM files).
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Arc<Tls>, TlsError> {
        let stamps = (modified(cert), modified(key));
        let config = build(cert, key, client_ca)?;
        Ok(Arc::new(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            client_ca: client_ca.map(Path::to_owned),
            current: RwLock::new(Arc::new(config)),
            loaded: Mutex::new(stamps),
        }))
    }

    /// An acceptor with the current certificate, for one new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().expect("tls lock poisoned").clone())
    }

    /// Loads the files again and swaps the new config in; on failure the old one stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = (modified(&self.cert), modified(&self.key));
        let config = build(&self.cert, &self.key, self.client_ca.as_deref())?;
        *self.current.write().expect("tls lock poisoned") = Arc::new(config);
        *self.loaded.lock().expect("tls lock poisoned") = stamps;
        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
        Ok(())
    }

    fn changed(&self) -> bool {
        let now = (modified(&self.cert), modified(&self.key));
        *self.loaded.lock().expect("tls lock poisoned") != now
    }

    /// Reloads on SIGHUP and when the files change, until `stop`.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let signalled = async {
                match &mut hup {
                    Some(hup) => hup.recv().await,
                    None => std::future::pending().await,
                }
            };
            let reload = tokio::select! {
                _ = stop.cancelled() => return,
                _ = signalled => true,
                _ = tick.tick() => self.changed(),
            };
            if reload && let Err(e) = self.reload() {
                tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays in use");
                // Not again until the files change once more.
                let stamps = (modified(&self.cert), modified(&self.key));
                *self.loaded.lock().expect("tls lock poisoned") = stamps;
            }
        }
    }
}

/// The user a verified client certificate names: its subject's common name.
pub fn client_user(
    stream: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) -> Option<String> {
    let cert = stream.get_ref().1.peer_certificates()?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}
