//! H9: custom CA and SPKI SHA-256 pinning, against a small tokio-rustls server using
//! rcgen-made certificates.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_client::http::{ErrorCode, Http, HttpError, RetryPolicy, SpkiPin};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, PublicKeyData,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

const BODY: &str = "hello over tls";

struct Pki {
    ca_pem: String,
    ca_key: KeyPair,
    ca_der: CertificateDer<'static>,
    leaf_der: CertificateDer<'static>,
    leaf_key: KeyPair,
}

/// A CA and a leaf for `names` signed by it.
fn pki(names: &[&str]) -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "ferry test CA");
    let ca_key = KeyPair::generate().unwrap();
    // The issuer takes the CA key; keep a copy for the pin tests.
    let ca_key_copy = KeyPair::from_pem(&ca_key.serialize_pem()).unwrap();
    let ca = CertifiedIssuer::self_signed(params, ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let ca_der = ca.der().clone();
    let ca_pem = ca.pem();
    Pki {
        ca_pem,
        ca_key: ca_key_copy,
        ca_der,
        leaf_der: leaf.der().clone(),
        leaf_key,
    }
}

struct TlsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serve one fixed response per TLS connection, presenting `chain`.
async fn tls_server(chain: Vec<CertificateDer<'static>>, key: &KeyPair) -> TlsServer {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
                    BODY.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    TlsServer { addr, task }
}

fn client(pki: &Pki, pins: &[SpkiPin]) -> Http {
    let mut b = Http::builder()
        .retry(RetryPolicy::none())
        .add_root_certificate_pem(pki.ca_pem.as_bytes())
        .only_custom_roots(true);
    for pin in pins {
        b = b.pin_spki(*pin);
    }
    b.build().unwrap()
}

async fn fetch(http: &Http, addr: SocketAddr, host: &str) -> Result<String, HttpError> {
    let url = format!("https://{host}:{}/", addr.port());
    http.get(&url).send().await?.text().await
}

fn pin_of_key(key: &KeyPair) -> SpkiPin {
    SpkiPin::from_spki_der(&key.subject_public_key_info())
}

#[tokio::test]
async fn custom_ca_is_trusted() {
    let pki = pki(&["127.0.0.1", "localhost"]);
    let server = tls_server(vec![pki.leaf_der.clone()], &pki.leaf_key).await;
    assert_eq!(
        fetch(&client(&pki, &[]), server.addr, "127.0.0.1")
            .await
            .unwrap(),
        BODY
    );
    assert_eq!(
        fetch(&client(&pki, &[]), server.addr, "localhost")
            .await
            .unwrap(),
        BODY
    );
}

#[tokio::test]
async fn matching_pin_is_accepted() {
    let pki = pki(&["127.0.0.1"]);
    let server = tls_server(vec![pki.leaf_der.clone()], &pki.leaf_key).await;
    let pin = SpkiPin::from_certificate_der(pki.leaf_der.as_ref()).unwrap();
    assert_eq!(pin, pin_of_key(&pki.leaf_key));
    // The text form round-trips through the builder.
    let http = Http::builder()
        .retry(RetryPolicy::none())
        .add_root_certificate_pem(pki.ca_pem.as_bytes())
        .only_custom_roots(true)
        .pin(&pin.to_string())
        .build()
        .unwrap();
    assert_eq!(fetch(&http, server.addr, "127.0.0.1").await.unwrap(), BODY);
    // A backup pin next to the right one does no harm.
    let other = pin_of_key(&KeyPair::generate().unwrap());
    let http = client(&pki, &[other, pin]);
    assert_eq!(fetch(&http, server.addr, "127.0.0.1").await.unwrap(), BODY);
}

#[tokio::test]
async fn pin_of_another_key_is_rejected() {
    let pki = pki(&["127.0.0.1"]);
    let server = tls_server(vec![pki.leaf_der.clone()], &pki.leaf_key).await;
    let other = pin_of_key(&KeyPair::generate().unwrap());
    let e = fetch(&client(&pki, &[other]), server.addr, "127.0.0.1")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::TlsError, "{e:?}");
    assert!(e.is_tls());
    assert!(e.message().contains("matches no pinned key"), "{e}");
    // The message names the key the server presented, so a user can check it.
    let presented = SpkiPin::from_certificate_der(pki.leaf_der.as_ref()).unwrap();
    assert!(e.message().contains(&presented.to_string()), "{e}");
}

#[tokio::test]
async fn pin_of_the_ca_in_the_chain_is_accepted() {
    let pki = pki(&["127.0.0.1"]);
    let server = tls_server(
        vec![pki.leaf_der.clone(), pki.ca_der.clone()],
        &pki.leaf_key,
    )
    .await;
    let ca_pin = SpkiPin::from_certificate_pem(pki.ca_pem.as_bytes()).unwrap()[0];
    assert_eq!(ca_pin, pin_of_key(&pki.ca_key));
    assert_eq!(
        fetch(&client(&pki, &[ca_pin]), server.addr, "127.0.0.1")
            .await
            .unwrap(),
        BODY
    );
}

#[tokio::test]
async fn a_pin_never_replaces_verification() {
    // The right key, but a certificate from a CA the client does not trust.
    let trusted = pki(&["127.0.0.1"]);
    let rogue = pki(&["127.0.0.1"]);
    let server = tls_server(vec![rogue.leaf_der.clone()], &rogue.leaf_key).await;
    let pin = pin_of_key(&rogue.leaf_key);
    let e = fetch(&client(&trusted, &[pin]), server.addr, "127.0.0.1")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::TlsError, "{e:?}");
}

#[tokio::test]
async fn wrong_host_name_and_unknown_issuer_are_tls_errors() {
    let misnamed = pki(&["other.example"]);
    let server = tls_server(vec![misnamed.leaf_der.clone()], &misnamed.leaf_key).await;
    let e = fetch(&client(&misnamed, &[]), server.addr, "127.0.0.1")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::TlsError, "{e:?}");

    // System roots only: a private CA is unknown.
    let pki = pki(&["127.0.0.1"]);
    let server = tls_server(vec![pki.leaf_der.clone()], &pki.leaf_key).await;
    let http = Http::builder().retry(RetryPolicy::none()).build().unwrap();
    let e = fetch(&http, server.addr, "127.0.0.1").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::TlsError, "{e:?}");
}

#[tokio::test]
async fn system_roots_plus_a_custom_ca() {
    let pki = pki(&["127.0.0.1"]);
    let server = tls_server(vec![pki.leaf_der.clone()], &pki.leaf_key).await;
    let http = Http::builder()
        .retry(RetryPolicy::none())
        .add_root_certificate_pem(pki.ca_pem.as_bytes())
        .build()
        .unwrap();
    assert_eq!(fetch(&http, server.addr, "127.0.0.1").await.unwrap(), BODY);
}
