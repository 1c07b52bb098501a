//! TLS for [`Http`](super::Http) (SPEC H9): rustls with the `ring` provider, the system's
//! roots and/or custom CAs, and SPKI SHA-256 pinning.
//!
//! Pinning is a [`ServerCertVerifier`] wrapped around the normal one: the chain is first
//! verified as usual (trusted root, host name, validity), and only then must one of the
//! presented certificates carry a pinned public key. A pin therefore narrows trust; it
//! never replaces verification. Pins are of the subject public key, so a certificate
//! renewed with the same key keeps matching.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::error::HttpError;

/// Install rustls' `ring` provider as the process default. Idempotent, and harmless when
/// another provider was installed first: `Http` passes its provider explicitly anyway, this
/// only helps other rustls users in the process that rely on the default.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The provider every `Http` uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A SHA-256 hash of a certificate's DER `SubjectPublicKeyInfo` (the value of HPKP's and
/// curl's `--pinnedpubkey sha256//...`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpkiPin([u8; 32]);

impl SpkiPin {
    /// Parse a pin written as base64 of the SHA-256, with or without a `sha256/` or
    /// `sha256//` prefix. Errors with `INVALID_REQUEST` on anything else.
    pub fn parse(text: &str) -> Result<SpkiPin, HttpError> {
        let b64 = text.trim().strip_prefix("sha256/").unwrap_or(text.trim());
        // `sha256//` (curl's form) and a hash whose base64 starts with `/` look alike:
        // base64 of 32 bytes is 44 characters, so a 45th is the second slash.
        let b64 = match b64.strip_prefix('/') {
            Some(rest) if b64.len() == 45 => rest,
            _ => b64,
        };
        let bytes = BASE64
            .decode(b64)
            .map_err(|e| HttpError::invalid(format!("pin {text:?} is not base64: {e}")))?;
        let hash: [u8; 32] = bytes
            .try_into()
            .map_err(|_| HttpError::invalid(format!("pin {text:?} is not a SHA-256 (32 bytes)")))?;
        Ok(SpkiPin(hash))
    }

    /// The pin of a DER `SubjectPublicKeyInfo`.
    pub fn from_spki_der(spki: &[u8]) -> SpkiPin {
        SpkiPin(Sha256::digest(spki).into())
    }

    /// The pin of a DER certificate's public key. Errors with `INVALID_REQUEST` when the
    /// certificate cannot be parsed.
    pub fn from_certificate_der(der: &[u8]) -> Result<SpkiPin, HttpError> {
        let der = CertificateDer::from(der);
        spki_pin(&der).ok_or_else(|| HttpError::invalid("not a parsable X.509 certificate"))
    }

    /// The pins of every certificate in a PEM bundle. Errors with `INVALID_REQUEST` when it
    /// holds no certificate or a broken one.
    pub fn from_certificate_pem(pem: &[u8]) -> Result<Vec<SpkiPin>, HttpError> {
        let certs = parse_pem_certificates(pem)?;
        certs
            .iter()
            .map(|c| SpkiPin::from_certificate_der(c.as_ref()))
            .collect()
    }

    /// The raw 32-byte hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for SpkiPin {
    /// `sha256/BASE64`, the form [`SpkiPin::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256/{}", BASE64.encode(self.0))
    }
}

impl fmt::Debug for SpkiPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpkiPin({self})")
    }
}

fn spki_pin(cert: &CertificateDer<'_>) -> Option<SpkiPin> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(SpkiPin::from_spki_der(
        parsed.subject_public_key_info().as_ref(),
    ))
}

/// Every certificate in a PEM text. Errors with `INVALID_REQUEST` when there is none.
pub(crate) fn parse_pem_certificates(
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, HttpError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HttpError::invalid(format!("invalid PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(HttpError::invalid("no certificate found in the PEM data"));
    }
    Ok(certs)
}

/// What the client trusts.
#[derive(Clone, Default)]
pub(crate) struct TlsSettings {
    /// Do not load the system's roots: trust only `extra_roots`.
    pub only_custom_roots: bool,
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub pins: Vec<SpkiPin>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("only_custom_roots", &self.only_custom_roots)
            .field("extra_roots", &self.extra_roots.len())
            .field("pins", &self.pins)
            .finish()
    }
}

/// Which TLS servers a [`WebSocket`](crate::ws::WebSocket) or
/// [`HubClient`](crate::hub::HubClient) trusts: the system's roots and/or custom CAs, and
/// SPKI pins, as [`HttpBuilder`](super::HttpBuilder) takes them. Turn it into the rustls
/// configuration that their `tls_config` takes with [`websocket_config`](Self::websocket_config):
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ferry_client::http::TlsTrust;
/// let pem = std::fs::read("ferry-data/tls/self-signed-cert.pem")?;
/// let tls = TlsTrust::new()
///     .add_root_certificate_pem(&pem)?
///     .pin("sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")?
///     .websocket_config()?;
/// let hub = ferry_client::hub::HubClient::builder("wss://127.0.0.1:8443/ws").tls_config(tls);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct TlsTrust {
    settings: TlsSettings,
}

impl TlsTrust {
    /// The system's roots, no pin.
    pub fn new() -> TlsTrust {
        TlsTrust::default()
    }

    /// Also trust the CA certificates in this PEM data. Errors with `INVALID_REQUEST` when
    /// it holds no certificate.
    pub fn add_root_certificate_pem(mut self, pem: &[u8]) -> Result<TlsTrust, HttpError> {
        self.settings
            .extra_roots
            .extend(parse_pem_certificates(pem)?);
        Ok(self)
    }

    /// Trust only the added CAs, not the system's. Default false.
    pub fn only_custom_roots(mut self, only: bool) -> TlsTrust {
        self.settings.only_custom_roots = only;
        self
    }

    /// Require a certificate of the chain to carry this public key (after normal
    /// verification); see [`SpkiPin::parse`] for the forms accepted.
    pub fn pin(self, pin: &str) -> Result<TlsTrust, HttpError> {
        Ok(self.pin_spki(SpkiPin::parse(pin)?))
    }

    /// [`pin`](Self::pin) with a parsed pin.
    pub fn pin_spki(mut self, pin: SpkiPin) -> TlsTrust {
        self.settings.pins.push(pin);
        self
    }

    /// The rustls configuration for HTTP: ALPN offers HTTP/2 and HTTP/1.1.
    pub(crate) fn http_config(&self) -> Result<rustls::ClientConfig, HttpError> {
        client_config(&self.settings)
    }

    /// The rustls configuration for `wss://`: ALPN offers HTTP/1.1 only, which the
    /// WebSocket upgrade needs.
    pub fn websocket_config(&self) -> Result<Arc<rustls::ClientConfig>, HttpError> {
        let mut config = client_config(&self.settings)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The rustls client configuration for `settings`, with ALPN for HTTP/2 and HTTP/1.1 (a
/// preconfigured config gets none from reqwest).
pub(crate) fn client_config(settings: &TlsSettings) -> Result<rustls::ClientConfig, HttpError> {
    install_default_provider();
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = if settings.only_custom_roots {
        if settings.extra_roots.is_empty() {
            return Err(HttpError::invalid(
                "system roots disabled but no CA certificate given",
            ));
        }
        let mut roots = RootCertStore::empty();
        for cert in &settings.extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| HttpError::invalid(format!("unusable CA certificate: {e}")))?;
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| HttpError::invalid(format!("TLS verifier: {e}")))?
    } else {
        match rustls_platform_verifier::Verifier::new_with_extra_roots(
            settings.extra_roots.iter().cloned(),
            provider.clone(),
        ) {
            Ok(v) => Arc::new(v),
            // No system roots here (a bare container): plain HTTP still works, and an
            // HTTPS request fails with a TLS_ERROR that says why.
            Err(e) => Arc::new(Unverifiable {
                reason: format!("no trusted roots: {e}; install ca-certificates or add a CA"),
                provider: provider.clone(),
            }),
        }
    };
    let verifier: Arc<dyn ServerCertVerifier> = if settings.pins.is_empty() {
        verifier
    } else {
        Arc::new(PinnedVerifier {
            inner: verifier,
            pins: settings.pins.clone(),
        })
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::invalid(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The presented chain matches none of the configured pins.
#[derive(Debug)]
struct PinMismatch {
    presented: Vec<SpkiPin>,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate public key matches no pinned key (server presented"
        )?;
        for pin in &self.presented {
            write!(f, " {pin}")?;
        }
        write!(f, ")")
    }
}

impl std::error::Error for PinMismatch {}

/// Normal verification first, then at least one certificate of the chain must carry a
/// pinned key.
#[derive(Debug)]
struct PinnedVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    pins: Vec<SpkiPin>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let presented: Vec<SpkiPin> = std::iter::once(end_entity)
            .chain(intermediates)
            .filter_map(spki_pin)
            .collect();
        if presented.iter().any(|p| self.pins.contains(p)) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch { presented })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Stands in when no roots could be loaded: every handshake fails with the reason.
#[derive(Debug)]
struct Unverifiable {
    reason: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Unverifiable {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(self.reason.clone()))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pin_whose_base64_starts_with_a_slash_round_trips() {
        let pin = SpkiPin([0xff; 32]);
        let shown = pin.to_string();
        assert!(shown.starts_with("sha256//"), "{shown}");
        assert_eq!(SpkiPin::parse(&shown).expect("parses"), pin);
        let curl_form = format!("sha256/{shown}").replacen("sha256/sha256/", "sha256//", 1);
        assert_eq!(SpkiPin::parse(&curl_form).expect("parses"), pin);
    }

    use super::*;

    #[test]
    fn pin_text_forms_round_trip() {
        let pin = SpkiPin::from_spki_der(b"not really an spki");
        let text = pin.to_string();
        assert!(text.starts_with("sha256/"));
        assert_eq!(SpkiPin::parse(&text).expect("parse"), pin);
        let curl_form = text.replacen("sha256/", "sha256//", 1);
        assert_eq!(SpkiPin::parse(&curl_form).expect("parse"), pin);
        let bare = text.trim_start_matches("sha256/");
        assert_eq!(SpkiPin::parse(bare).expect("parse"), pin);
    }

    #[test]
    fn bad_pins_are_invalid_requests() {
        assert!(SpkiPin::parse("sha256/!!!").is_err());
        assert!(SpkiPin::parse("sha256/AAAA").is_err());
        assert!(parse_pem_certificates(b"nothing here").is_err());
    }
}
