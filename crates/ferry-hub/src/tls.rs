//! TLS on the listen address (SPEC S11): rustls with the `ring` provider, TLS 1.2 and 1.3
//! only with rustls' default suites (AEAD with forward secrecy: AES-GCM and
//! ChaCha20-Poly1305 over ECDHE), HTTP/1.1 over ALPN.
//!
//! The certificate lives in a [`CertStore`] that rustls asks at every handshake, so a
//! reload swaps it for new connections while open ones keep the session they have. The
//! files are checked every `tls.reload_interval_ms` and on SIGHUP; a pair that does not
//! load (a key written after its certificate, a typo) is logged and the served pair stays.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, TlsConfig};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `cert` without `key` or the reverse.
    #[error("tls: {0}")]
    Incomplete(&'static str),
    /// A file could not be read.
    #[error("tls: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file was read but is not a usable certificate or key.
    #[error("tls: {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The self-signed certificate could not be made or stored.
    #[error("tls: self-signed certificate: {0}")]
    SelfSigned(String),
}

/// The files a certificate pair is loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The certificate pair served now, swapped by [`CertStore::reload`].
pub struct CertStore {
    files: CertFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification stamps of the files when last loaded (or tried).
    stamp: Mutex<Option<Stamp>>,
    provider: Arc<CryptoProvider>,
}

type Stamp = [(Option<SystemTime>, u64); 2];

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

fn stamp(files: &CertFiles) -> Stamp {
    let one = |path: &Path| match std::fs::metadata(path) {
        Ok(meta) => (meta.modified().ok(), meta.len()),
        Err(_) => (None, 0),
    };
    [one(&files.cert), one(&files.key)]
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Load and check a certificate pair.
fn load_pair(files: &CertFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let invalid = |path: &Path, reason: String| TlsError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let cert_pem = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&files.cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(
            &files.cert,
            "no CERTIFICATE block in it; give the PEM certificate chain, leaf first".into(),
        ));
    }
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        invalid(
            &files.key,
            format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        invalid(
            &files.key,
            format!("does not fit {}: {e}", files.cert.display()),
        )
    })
}

impl CertStore {
    /// Load `files` now; fails when they do not make a usable pair.
    pub fn open(files: CertFiles) -> Result<CertStore, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let before = stamp(&files);
        let pair = load_pair(&files, &provider)?;
        Ok(CertStore {
            current: RwLock::new(Arc::new(pair)),
            stamp: Mutex::new(Some(before)),
            files,
            provider,
        })
    }

    /// The files this store serves.
    pub fn files(&self) -> &CertFiles {
        &self.files
    }

    /// The SPKI pin (`sha256/BASE64` of the leaf's public key) of the served certificate.
    pub fn pin(&self) -> String {
        let current = self.current.read().clone();
        current
            .cert
            .first()
            .and_then(|leaf| spki_pin(leaf))
            .unwrap_or_else(|| "unknown".into())
    }

    /// Reload when the files changed since the last try (or always with `force`). Returns
    /// whether a new pair is served; a pair that does not load is logged and the old one
    /// stays.
    pub fn reload(&self, force: bool) -> bool {
        let now = stamp(&self.files);
        {
            let mut last = self.stamp.lock();
            if !force && last.as_ref() == Some(&now) {
                return false;
            }
            *last = Some(now);
        }
        match load_pair(&self.files, &self.provider) {
            Ok(pair) => {
                *self.current.write() = Arc::new(pair);
                tracing::info!(
                    cert = %self.files.cert.display(),
                    pin = %self.pin(),
                    "tls: reloaded the certificate; new connections get it"
                );
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "tls: keeping the certificate served so far");
                false
            }
        }
    }

    /// Check the files every `every` and reload on SIGHUP, until `stop`.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let signal = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let signal = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = tick.tick() => { self.reload(false); }
                Some(()) = signal => { self.reload(true); }
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// `sha256/BASE64` of a DER certificate's SubjectPublicKeyInfo, the form clients pin
/// (`ferry get --pin`, `HttpBuilder::pin`, curl's `--pinnedpubkey sha256//…`).
pub fn spki_pin(cert: &CertificateDer<'_>) -> Option<String> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let hash = Sha256::digest(parsed.subject_public_key_info().as_ref());
    Some(format!("sha256/{}", BASE64.encode(hash)))
}

/// TLS for a server: the acceptor and the store behind it.
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    store: Arc<CertStore>,
    self_signed: bool,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("store", &self.store)
            .field("self_signed", &self.self_signed)
            .finish()
    }
}

impl Tls {
    /// TLS as `config.tls` asks, or `None` when it is off. Generates the self-signed pair
    /// on first use.
    pub fn from_config(config: &Config) -> Result<Option<Tls>, TlsError> {
        Tls::from_options(&config.tls, &config.data_dir, config.listen, &[b"http/1.1"])
    }

    /// TLS as `tls` asks (the `[tls]` options of `ferry serve`, reused by `ferry proxy`),
    /// or `None` when it is off: a self-signed pair goes into `data_dir/tls/` and names
    /// `listen` when that is a specific address; `alpn` lists the protocols offered, most
    /// preferred first.
    pub fn from_options(
        tls: &TlsConfig,
        data_dir: &Path,
        listen: std::net::SocketAddr,
        alpn: &[&[u8]],
    ) -> Result<Option<Tls>, TlsError> {
        let files = match source(tls)? {
            None => return Ok(None),
            Some(Source::Files(files)) => files,
            Some(Source::SelfSigned) => self_signed(data_dir, listen)?,
        };
        let store = Arc::new(CertStore::open(files)?);
        let provider = store.provider.clone();
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::SelfSigned(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Some(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            store,
            self_signed: tls.self_signed,
        }))
    }

    /// Check `config.tls` without serving or writing anything (`--check-config`): the
    /// certificate pair loads and fits. Returns a one-line summary.
    pub fn check(config: &Config) -> Result<String, TlsError> {
        Ok(match source(&config.tls)? {
            None => "tls: off (plain http; --tls-cert/--tls-key or --tls-self-signed)".into(),
            Some(Source::SelfSigned) => format!(
                "tls: self-signed certificate in {}",
                config.data_dir.join("tls").display()
            ),
            Some(Source::Files(files)) => {
                let store = CertStore::open(files)?;
                format!(
                    "tls: {} (pin {})",
                    store.files().cert.display(),
                    store.pin()
                )
            }
        })
    }

    /// The acceptor for new connections.
    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// The certificate store (its files, its pin, reloads).
    pub fn store(&self) -> &Arc<CertStore> {
        &self.store
    }

    /// Whether the certificate is the generated self-signed one.
    pub fn is_self_signed(&self) -> bool {
        self.self_signed
    }
}

/// Where the certificate comes from.
enum Source {
    Files(CertFiles),
    SelfSigned,
}

fn source(tls: &TlsConfig) -> Result<Option<Source>, TlsError> {
    match (&tls.cert, &tls.key, tls.self_signed) {
        (Some(cert), Some(key), false) => Ok(Some(Source::Files(CertFiles {
            cert: cert.clone(),
            key: key.clone(),
        }))),
        (None, None, true) => Ok(Some(Source::SelfSigned)),
        (None, None, false) => Ok(None),
        (_, _, true) => Err(TlsError::Incomplete(
            "self_signed and cert/key exclude each other; use one",
        )),
        (Some(_), None, _) => Err(TlsError::Incomplete(
            "a certificate without its key; give --tls-key (tls.key) too",
        )),
        (None, Some(_), _) => Err(TlsError::Incomplete(
            "a key without its certificate; give --tls-cert (tls.cert) too",
        )),
    }
}

/// The self-signed pair in `DATA_DIR/tls/`, made on first use. Valid for localhost,
/// 127.0.0.1, ::1 and the listen address when it is a specific one.
fn self_signed(data_dir: &Path, listen: std::net::SocketAddr) -> Result<CertFiles, TlsError> {
    let dir = data_dir.join("tls");
    let files = CertFiles {
        cert: dir.join("self-signed-cert.pem"),
        key: dir.join("self-signed-key.pem"),
    };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let ip = listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    crate::secrets::write_private(&files.key, &made.signing_key.serialize_pem())
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    std::fs::write(&files.cert, made.cert.pem()).map_err(|source| TlsError::Read {
        path: files.cert.clone(),
        source,
    })?;
    tracing::info!(cert = %files.cert.display(), "tls: generated a self-signed certificate");
    Ok(files)
}

/// What a plain-HTTP request to the TLS port gets: a 400 that says what to do, instead of
/// a handshake failure the client reports as garbage or a hang.
pub(crate) const PLAIN_HTTP_REPLY: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain; charset=utf-8\r\n\
connection: close\r\n\
content-length: 91\r\n\r\n\
This port serves HTTPS: use https:// (or wss:// for WebSocket) instead of http:// or ws://\n";

/// The first byte of every TLS connection: a handshake record.
pub(crate) const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Tell TLS from plain HTTP by the first byte, then run the handshake, both within
/// `timeout`. Plain HTTP gets [`PLAIN_HTTP_REPLY`]; `None` when there is nothing to serve.
pub async fn accept<I>(
    acceptor: &tokio_rustls::TlsAcceptor,
    mut io: I,
    timeout: Duration,
    peer: std::net::SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<I>>
where
    I: Peek + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, io.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(Ok(1)) => {
            answer_plain_http(&mut io, timeout).await;
            return None;
        }
        // Closed, failed or silent: nothing to serve.
        _ => return None,
    }
    match tokio::time::timeout(timeout, acceptor.accept(io)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "tls handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "tls handshake timed out");
            None
        }
    }
}

/// Streams whose next bytes can be looked at without taking them.
pub trait Peek {
    /// Copy the next bytes into `buf` and leave them to be read.
    fn peek(&self, buf: &mut [u8]) -> impl std::future::Future<Output = std::io::Result<usize>>;
}

impl Peek for tokio::net::TcpStream {
    fn peek(&self, buf: &mut [u8]) -> impl std::future::Future<Output = std::io::Result<usize>> {
        tokio::net::TcpStream::peek(self, buf)
    }
}

impl Peek for crate::sockets::TrackedStream {
    fn peek(&self, buf: &mut [u8]) -> impl std::future::Future<Output = std::io::Result<usize>> {
        crate::sockets::TrackedStream::peek(self, buf)
    }
}

/// Read the request head (so closing does not reset the connection and lose the reply),
/// answer with [`PLAIN_HTTP_REPLY`] and close.
async fn answer_plain_http<I>(io: &mut I, timeout: Duration)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut head = [0u8; 16 << 10];
        let mut seen = 0;
        while seen < head.len() {
            let n = io.read(&mut head[seen..]).await?;
            if n == 0 {
                break;
            }
            seen += n;
            if head[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        io.write_all(PLAIN_HTTP_REPLY).await?;
        io.shutdown().await?;
        // Drain what else the client sends until it closes, so our close is clean.
        let mut sink = [0u8; 4096];
        while io.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(timeout, exchange).await;
}

/// The 308 that the plain-HTTP redirect listener (`tls.redirect_from`) answers: the same
/// host and path over https on `port`.
pub(crate) fn redirect_to_https(
    request: &http::Request<axum::body::Body>,
    port: u16,
) -> http::Response<axum::body::Body> {
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .map(|authority| authority.host().to_string());
    let Some(host) = host else {
        return http::Response::builder()
            .status(http::StatusCode::BAD_REQUEST)
            .body(axum::body::Body::from(
                "this listener redirects to https and needs a Host header\n",
            ))
            .unwrap_or_default();
    };
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    http::Response::builder()
        .status(http::StatusCode::PERMANENT_REDIRECT)
        .header(http::header::LOCATION, location)
        .body(axum::body::Body::empty())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_http_reply_has_the_right_length() {
        let text = std::str::from_utf8(PLAIN_HTTP_REPLY).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }

    #[test]
    fn the_redirect_keeps_host_and_path_and_swaps_the_port() {
        let redirect = |uri: &str, host: &str, port: u16| {
            let request = http::Request::builder()
                .uri(uri)
                .header("host", host)
                .body(axum::body::Body::empty())
                .expect("request");
            redirect_to_https(&request, port)
        };
        let response = redirect("/api/stats?x=1", "example.test:80", 8443);
        assert_eq!(response.status(), http::StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            response.headers()[http::header::LOCATION],
            "https://example.test:8443/api/stats?x=1"
        );
        let response = redirect("/", "[::1]", 443);
        assert_eq!(response.headers()[http::header::LOCATION], "https://[::1]/");
    }

    #[test]
    fn a_certificate_without_its_key_is_refused_with_what_to_do() {
        let mut config = Config::default();
        config.tls.cert = Some(PathBuf::from("/nonexistent.pem"));
        let err = Tls::from_config(&config).expect_err("incomplete");
        assert!(err.to_string().contains("--tls-key"), "{err}");
    }

    #[test]
    fn a_mismatched_pair_keeps_the_served_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        config.tls.self_signed = true;
        let tls = Tls::from_config(&config).expect("tls").expect("on");
        let pin = tls.store().pin();
        assert!(pin.starts_with("sha256/"), "{pin}");
        // Another key over the served one: the pair no longer matches and is not served.
        let other = rcgen::KeyPair::generate().expect("key");
        std::fs::write(&tls.store().files().key, other.serialize_pem()).expect("write");
        assert!(!tls.store().reload(true));
        assert_eq!(tls.store().pin(), pin);
    }
}
