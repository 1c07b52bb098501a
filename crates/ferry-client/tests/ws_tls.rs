//! `wss://` over loopback: a TLS echo server with an rcgen certificate; the client trusts
//! it through `tls_config`, and refuses it with the platform's roots.
#![allow(clippy::unwrap_used)]

mod ws_support;

use std::sync::Arc;

use ferry_client::ws::{ErrorKind, WebSocket};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use ws_support::assert_echo;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A wss echo server for `localhost`; returns its port and the certificate to trust.
async fn tls_echo_server() -> (u16, CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, cert)
}

#[tokio::test]
async fn wss_with_a_custom_root() {
    let (port, cert) = tls_echo_server().await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let ws = WebSocket::builder(&format!("wss://localhost:{port}/"))
        .tls_config(Arc::new(client))
        .connect()
        .await
        .unwrap();
    assert_echo(&ws, "secure").await;
    ws.close().await;
}

#[tokio::test]
async fn wss_refuses_an_untrusted_certificate() {
    let (port, _) = tls_echo_server().await;
    let e = WebSocket::builder(&format!("wss://localhost:{port}/"))
        .no_reconnect()
        .connect()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    assert_eq!(e.code(), "TLS_ERROR");
}
