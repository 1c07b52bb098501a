//! Authentication over real sockets: JWT HS256/RS256/ES256, expiry and in-band refresh,
//! login with argon2 hashes, anonymous mode.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{TestServer, WsClient, now, token_with};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

async fn server_with_public_keys() -> TestServer {
    TestServer::start_with(|c| {
        c.jwt_public_keys = vec![fixture("rsa_public.pem"), fixture("ec_public.pem")];
    })
    .await
}

async fn hs256_rs256_and_es256_tokens_are_accepted() {
    let server = server_with_public_keys().await;
    let rsa =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap()).unwrap();
    let ec = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_private.pem")).unwrap()).unwrap();
    let tokens = [
        (
            "hs",
            token_with(json!({"sub": "hs-user", "exp": now() + 60})),
        ),
        (
            "rs",
            sign(
                Algorithm::RS256,
                &rsa,
                json!({"sub": "rs-user", "exp": now() + 60}),
            ),
        ),
        (
            "es",
            sign(
                Algorithm::ES256,
                &ec,
                json!({"sub": "es-user", "exp": now() + 60}),
            ),
        ),
    ];
    for (name, token) in tokens {
        // By query...
        let mut c = WsClient::connect(&server.ws_url(&format!("/ws?token={token}"))).await;
        let ok = c.next_of_type("auth_success").await;
        assert_eq!(ok["payload"]["user"], format!("{name}-user"));
        // ...and by a first `auth` command.
        let mut c = WsClient::connect(&server.ws_url("/ws")).await;
        let r = c.request("auth", json!({"token": token})).await;
        assert_eq!(r["payload"]["user"], format!("{name}-user"), "{r}");
    }
    server.stop().await;
}

async fn token_in_authorization_header_is_accepted() {
    let server = TestServer::start().await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = server.ws_url("/ws").into_client_request().unwrap();
    let bearer = format!("Bearer {}", server.token("header-user"));
    request
        .headers_mut()
        .insert("authorization", bearer.parse().unwrap());
    let (mut stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    use futures_util::StreamExt;
    let first = stream.next().await.unwrap().unwrap();
    let v: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(v["type"], "auth_success");
    assert_eq!(v["payload"]["user"], "header-user");
    server.stop().await;
}

async fn bad_tokens_are_refused_with_clear_codes() {
    let server = server_with_public_keys().await;
    let mut c = WsClient::connect(&server.ws_url("/ws?token=not.a.jwt")).await;
    let e = c.next_of_type("auth_error").await;
    assert_eq!(e["payload"]["code"], "AUTH_FAILED");
    // Signed with another secret.
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "mallory", "exp": now() + 60}),
        &EncodingKey::from_secret(b"wrong-secret"),
    )
    .unwrap();
    let r = c.request("auth", json!({"token": forged})).await;
    assert_eq!(r["payload"]["code"], "AUTH_FAILED");
    let expired = token_with(json!({"sub": "late", "exp": now() - 3600}));
    let r = c.request("auth", json!({"token": expired})).await;
    assert_eq!(r["payload"]["code"], "AUTH_EXPIRED");
    // Still unauthenticated, still usable.
    let r = c.request("subscribe", json!({"channel": "chat:x"})).await;
    assert_eq!(r["payload"]["code"], "AUTH_REQUIRED");
    server.stop().await;
}

async fn expiry_pushes_auth_expired_and_refresh_keeps_the_connection() {
    let server = TestServer::start_with(|c| c.jwt_leeway_secs = 0).await;
    let short = token_with(json!({"sub": "alice", "exp": now() + 2}));
    let mut c = WsClient::connect(&server.ws_url(&format!("/ws?token={short}"))).await;
    c.next_of_type("auth_success").await;
    let r = c
        .request("subscribe", json!({"channel": "chat:refresh"}))
        .await;
    assert_eq!(r["type"], "reply");
    let expired = c.next_of_type("error").await;
    assert_eq!(expired["payload"]["code"], "AUTH_EXPIRED");
    assert!(expired.get("id").is_none());
    let r = c
        .request("publish", json!({"channel": "chat:refresh", "data": 1}))
        .await;
    assert_eq!(r["payload"]["code"], "AUTH_EXPIRED");
    let r = c
        .request("auth", json!({"token": server.token("alice")}))
        .await;
    assert_eq!(r["type"], "reply");
    // Same connection, subscription intact.
    let r = c
        .request("publish", json!({"channel": "chat:refresh", "data": 2}))
        .await;
    assert_eq!(r["type"], "reply");
    assert_eq!(c.next_of_type("message").await["payload"]["data"], 2);
    // A token for another user cannot take over the connection.
    let r = c
        .request("auth", json!({"token": server.token("mallory")}))
        .await;
    assert_eq!(r["payload"]["code"], "AUTH_FAILED");
    server.stop().await;
}

async fn expired_token_not_refreshed_is_closed_1008() {
    let server = TestServer::start_with(|c| {
        c.jwt_leeway_secs = 0;
        c.limits.auth_refresh_grace_ms = 200;
    })
    .await;
    let short = token_with(json!({"sub": "alice", "exp": now() + 1}));
    let mut c = WsClient::connect(&server.ws_url(&format!("/ws?token={short}"))).await;
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 1008);
    assert_eq!(reason, "token expired");
    assert!(
        c.buffered()
            .iter()
            .any(|f| f["payload"]["code"] == "AUTH_EXPIRED")
    );
    server.stop().await;
}

#[tokio::test]
async fn login_issues_tokens_for_configured_users_only() {
    let hash = ferry_hub::auth::hash_password("correct horse").unwrap();
    let server = TestServer::start_with(|c| {
        c.users = vec![ferry_hub::config::UserConfig {
            name: "alice".into(),
            password_hash: hash,
        }];
    })
    .await;
    let http = reqwest::Client::new();
    let r = http
        .post(server.http("/auth/login"))
        .json(&json!({"user": "alice", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    assert!(body["expires_at"].as_u64().unwrap() > now());
    let mut c = WsClient::connect(&server.ws_url(&format!("/ws?token={token}"))).await;
    assert_eq!(
        c.next_of_type("auth_success").await["payload"]["user"],
        "alice"
    );
    for (user, password) in [("alice", "wrong"), ("nobody", "correct horse")] {
        let r = http
            .post(server.http("/auth/login"))
            .json(&json!({"user": user, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "AUTH_FAILED");
    }
    let r = http
        .post(server.http("/auth/login"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    server.stop().await;
}

async fn anonymous_access_only_where_configured() {
    let server = TestServer::start_with(|c| {
        c.allow_anonymous = true;
        c.namespaces.insert(
            "public".into(),
            ferry_hub::config::NamespaceConfig {
                allow_anonymous: true,
                ..Default::default()
            },
        );
    })
    .await;
    let mut anon = WsClient::connect(&server.ws_url("/ws")).await;
    assert_eq!(
        anon.next_of_type("auth_success").await["payload"]["user"],
        ""
    );
    let r = anon
        .request("subscribe", json!({"channel": "public:news"}))
        .await;
    assert_eq!(r["type"], "reply");
    let r = anon
        .request("subscribe", json!({"channel": "chat:lobby"}))
        .await;
    assert_eq!(r["payload"]["code"], "PERMISSION_DENIED");
    let r = anon
        .request("publish", json!({"channel": "public:news", "data": 1}))
        .await;
    assert_eq!(r["payload"]["code"], "PERMISSION_DENIED");
    server.stop().await;

    // Off by default: without a token, nothing but auth.
    let server = TestServer::start().await;
    let mut c = WsClient::connect(&server.ws_url("/ws")).await;
    let r = c
        .request("subscribe", json!({"channel": "chat:lobby"}))
        .await;
    assert_eq!(r["payload"]["code"], "AUTH_REQUIRED");
    server.stop().await;
}

both_codecs!(
    hs256_rs256_and_es256_tokens_are_accepted,
    token_in_authorization_header_is_accepted,
    bad_tokens_are_refused_with_clear_codes,
    expiry_pushes_auth_expired_and_refresh_keeps_the_connection,
    expired_token_not_refreshed_is_closed_1008,
    anonymous_access_only_where_configured,
);
