//! S11: `ferry serve` over TLS. A private CA (made here with rcgen) signs the server's
//! certificate; the project's clients (Http, HubClient, HubApi) trust that CA and pin the
//! key, curl trusts it with --cacert. A certificate replaced on disk (or after SIGHUP)
//! reaches new connections while open ones stay, and plain HTTP to the TLS port gets an
//! answer that says what to do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_client::http::{Http, TlsTrust};
use ferry_client::hub::{HubApi, HubClient};
use ferry_client::ws::ConnectionState;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::json;
use support::{API_KEY, FerryServer, run_to_completion, token_for};
use tokio::process::Command;

/// A test CA that signs leaf certificates for 127.0.0.1 and localhost.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ferry TLS test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).unwrap();
        Ca { issuer, dir }
    }

    fn pem(&self) -> Vec<u8> {
        self.issuer.pem().into_bytes()
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// Issue a leaf with a fresh key and put it where the server reads it (each file
    /// replaced by a rename, as deploy tools do); returns its SPKI pin.
    fn issue(&self) -> String {
        let key = KeyPair::generate().unwrap();
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        replace(&self.cert_path(), leaf.pem().as_bytes());
        replace(&self.key_path(), key.serialize_pem().as_bytes());
        ferry_client::http::SpkiPin::from_certificate_der(leaf.der())
            .unwrap()
            .to_string()
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert_path().display().to_string(),
            "--tls-key".into(),
            self.key_path().display().to_string(),
        ]
    }

    /// Trust this CA only, and require `pin` when given.
    fn trust(&self, pin: Option<&str>) -> TlsTrust {
        let trust = TlsTrust::new()
            .add_root_certificate_pem(&self.pem())
            .unwrap()
            .only_custom_roots(true);
        match pin {
            Some(pin) => trust.pin(pin).unwrap(),
            None => trust,
        }
    }
}

fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The next publication of `subscription`; 20 s is only a safety net.
async fn next_publication(
    subscription: &mut ferry_client::hub::Subscription,
) -> ferry_proto::envelope::Publication {
    tokio::time::timeout(Duration::from_secs(20), subscription.next_publication())
        .await
        .expect("a publication within 20 s")
        .expect("the subscription is open")
}

/// curl over plain HTTP to the TLS `port` gets a 400 that says to use https, not a hang.
async fn plain_http_is_told_to_use_https(port: u16) {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/health"));
    let done = run_to_completion(curl, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(done.stdout.contains("use https://"), "{}", done.stdout);
    assert!(done.stdout.ends_with("400"), "{}", done.stdout);
}

async fn start(ca: &Ca, envs: &[(&str, &str)]) -> FerryServer {
    let args = ca.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    FerryServer::start_with(&args, envs, true).await.unwrap()
}

/// A GET of /health over a new connection that must present `pin`.
async fn health_with_pin(ca: &Ca, server: &FerryServer, pin: &str) -> Result<(), String> {
    let http = Http::builder()
        .trust(ca.trust(Some(pin)))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{}/health", server.base_url);
    match http.get(&url).send().await {
        Ok(response) if response.status() == 200 => Ok(()),
        Ok(response) => Err(format!("status {}", response.status())),
        Err(e) => Err(e.to_string()),
    }
}

/// Wait until new connections are served the certificate with `pin` (after `what` made
/// the server reload); 30 s is only a safety net.
async fn served(ca: &Ca, server: &FerryServer, pin: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = health_with_pin(ca, server, pin).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not bring the new certificate within 30 s: {e}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn https_and_wss_work_with_a_private_ca_and_a_pin() {
    let ca = Ca::new();
    let pin = ca.issue();
    let server = start(&ca, &[]).await;
    assert!(
        server.base_url.starts_with("https://"),
        "{}",
        server.base_url
    );

    // https with the project's HTTP client: CA and pin; HSTS on every response.
    let http = Http::builder().trust(ca.trust(Some(&pin))).build().unwrap();
    let response = http
        .get(&format!("{}/health", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap().to_string()),
        Some("max-age=31536000".to_string())
    );

    // A pin of another key is refused, after the chain verified.
    let other = KeyPair::generate().unwrap();
    let other_pin = ferry_client::http::SpkiPin::from_spki_der(
        &rcgen::PublicKeyData::subject_public_key_info(&other),
    )
    .to_string();
    let refused = health_with_pin(&ca, &server, &other_pin).await.unwrap_err();
    assert!(refused.contains("pinned"), "{refused}");

    // wss with HubClient, and a publication through the API over https (HubApi).
    let wss = format!("wss://127.0.0.1:{}/ws", server.port);
    let hub = HubClient::builder(&wss)
        .token(&token_for("alice"))
        .tls_config(ca.trust(Some(&pin)).websocket_config().unwrap())
        .connect()
        .await
        .unwrap();
    let mut subscription = hub.subscribe("chat:tls").await.unwrap();
    let api = HubApi::with_tls(
        &server.base_url,
        API_KEY,
        ca.trust(Some(&pin)).websocket_config().unwrap(),
    )
    .unwrap();
    api.publish("chat:tls", &json!({"text": "over tls"}))
        .await
        .unwrap();
    let publication = next_publication(&mut subscription).await;
    assert_eq!(publication.data.to_json().get(), r#"{"text":"over tls"}"#);

    // curl, which nobody here wrote, with --cacert.
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca.ca_path())
        .arg(format!("{}/health", server.base_url));
    let done = run_to_completion(curl, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stdout.trim(), r#"{"status":"ok"}"#);

    // Plain HTTP to the TLS port: a 400 that says what to do, not a hang.
    plain_http_is_told_to_use_https(server.port).await;
}

#[tokio::test]
async fn a_replaced_certificate_reaches_new_connections_and_open_ones_stay() {
    let ca = Ca::new();
    let first = ca.issue();
    let server = start(&ca, &[("FERRY_TLS__RELOAD_INTERVAL_MS", "100")]).await;
    health_with_pin(&ca, &server, &first).await.unwrap();

    // An open wss subscription, trusting the CA (not a pin, which the new key would fail).
    let wss = format!("wss://127.0.0.1:{}/ws", server.port);
    let hub = HubClient::builder(&wss)
        .token(&token_for("alice"))
        .tls_config(ca.trust(None).websocket_config().unwrap())
        .connect()
        .await
        .unwrap();
    let mut subscription = hub.subscribe("chat:reload").await.unwrap();
    let mut states = hub.states();

    let second = ca.issue();
    assert_ne!(first, second);
    // New connections see the new certificate once the server noticed the files (polled
    // every 100 ms here); the deadline is only a safety net.
    served(&ca, &server, &second, "the file poll").await;
    assert!(health_with_pin(&ca, &server, &first).await.is_err());

    // The connection opened before the reload still works, and never dropped.
    let api = HubApi::with_tls(
        &server.base_url,
        API_KEY,
        ca.trust(None).websocket_config().unwrap(),
    )
    .unwrap();
    api.publish("chat:reload", &json!(1)).await.unwrap();
    let publication = next_publication(&mut subscription).await;
    assert_eq!(publication.data.to_json().get(), "1");
    assert_eq!(hub.state(), ConnectionState::Open);
    let changed = tokio::time::timeout(Duration::from_millis(1), states.next()).await;
    assert!(
        changed.is_err(),
        "the connection changed state: {changed:?}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_certificate_at_once() {
    let ca = Ca::new();
    let first = ca.issue();
    // Files are checked once an hour here: only the signal can make the switch.
    let server = start(&ca, &[("FERRY_TLS__RELOAD_INTERVAL_MS", "3600000")]).await;
    health_with_pin(&ca, &server, &first).await.unwrap();
    let second = ca.issue();
    assert!(health_with_pin(&ca, &server, &first).await.is_ok());
    let pid = server.pid().expect("running").to_string();
    let done = run_to_completion(
        {
            let mut kill = Command::new("kill");
            kill.args(["-HUP", &pid]);
            kill
        },
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(done.status.success(), "{}", done.stderr);
    served(&ca, &server, &second, "SIGHUP").await;
}

#[test]
fn check_config_refuses_a_key_that_does_not_fit_the_certificate() {
    let ca = Ca::new();
    ca.issue();
    std::fs::write(ca.key_path(), KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("serve")
        .args(ca.args())
        .arg("--check-config")
        .current_dir(ca.dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not fit"), "{stderr}");
}

#[tokio::test]
async fn the_redirect_listener_sends_plain_http_to_https() {
    let ca = Ca::new();
    ca.issue();
    let mut args = ca.args();
    args.extend(["--tls-redirect-from".to_string(), "127.0.0.1:0".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = FerryServer::start_with(&args, &[], true).await.unwrap();
    // The banner (stderr, written after the listening line) names the redirect address.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut logs = server.logs();
    while !logs.contains("redirects here") && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        logs = server.logs();
    }
    let redirect = logs
        .split("; http://")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no redirect address in the banner:\n{logs}"))
        .to_string();
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--max-time", "20", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{redirect_url}"])
        .arg(format!("http://{redirect}/api/stats?x=1"));
    let done = run_to_completion(curl, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(
        done.stdout,
        format!("308 https://127.0.0.1:{}/api/stats?x=1", server.port)
    );
}

#[tokio::test]
async fn ferry_top_reads_a_tls_hub_with_a_private_ca() {
    let ca = Ca::new();
    ca.issue();
    let server = start(&ca, &[]).await;
    let mut top = Command::new(env!("CARGO_BIN_EXE_ferry"));
    top.args(["top", &server.base_url, "--json", "--count", "2"])
        .args(["--interval-ms", "200", "--api-key", API_KEY, "--cacert"])
        .arg(ca.ca_path())
        .env_remove("FERRY_API_KEY");
    let done = run_to_completion(top, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(done.status.success(), "{}\n{}", done.stderr, server.logs());
    let samples: Vec<serde_json::Value> = done
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(samples.len(), 2, "{}", done.stdout);
    // Without the CA the certificate is refused, with a hint.
    let mut refused = Command::new(env!("CARGO_BIN_EXE_ferry"));
    refused
        .args([
            "top",
            &server.base_url,
            "--json",
            "--count",
            "1",
            "--api-key",
            API_KEY,
        ])
        .env_remove("FERRY_API_KEY");
    let done = run_to_completion(refused, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(!done.status.success());
    assert!(done.stderr.contains("certificate"), "{}", done.stderr);
}

#[tokio::test]
async fn ferry_sse_reads_a_tls_hub_with_a_private_ca() {
    let ca = Ca::new();
    ca.issue();
    let server = start(&ca, &[]).await;
    let mut sse = Command::new(env!("CARGO_BIN_EXE_ferry"));
    sse.arg("sse")
        .arg(format!(
            "{}/test/sse?count=2&interval_ms=10",
            server.base_url
        ))
        .args(["--count", "2", "--json", "--cacert"])
        .arg(ca.ca_path());
    let done = run_to_completion(sse, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(done.status.success(), "{}\n{}", done.stderr, server.logs());
    assert_eq!(done.stdout.lines().count(), 2, "{}", done.stdout);
}

/// `ferry proxy` terminating TLS in front of a plain `ferry serve`: its stdout's first line,
/// `ferry proxy listening on https://ADDR`, gives the address.
async fn tls_proxy(ca: &Ca, backend: &FerryServer) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--no-health-check"])
        .args(["--backend", &format!("127.0.0.1:{}", backend.port)])
        .args(ca.args())
        .current_dir(ca.dir.path()) // no stray ferry.toml
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the proxy starts within 20 s")
        .unwrap()
        .expect("a first line");
    let url = first
        .strip_prefix("ferry proxy listening on ")
        .unwrap_or_else(|| panic!("unexpected line {first:?}"))
        .to_string();
    // Keep reading (and dropping) what it prints, so its stdout never fills.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

#[tokio::test]
async fn the_proxy_terminates_tls_with_the_hubs_options_for_https_and_wss() {
    let ca = Ca::new();
    let pin = ca.issue();
    let backend = FerryServer::start(&[]).await.unwrap();
    let (_proxy, url) = tls_proxy(&ca, &backend).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let port = url.rsplit(':').next().unwrap();

    // https with the CA and the pin; the backend (plain HTTP, the testbed echoes what it
    // got) is told the client came over https.
    let http = Http::builder().trust(ca.trust(Some(&pin))).build().unwrap();
    let echo = http
        .get(&format!("{url}/test/anything"))
        .send()
        .await
        .unwrap();
    assert_eq!(echo.status(), 200);
    let echo: serde_json::Value = serde_json::from_slice(&echo.bytes().await.unwrap()).unwrap();
    let headers = echo["headers"].to_string().to_ascii_lowercase();
    assert!(headers.contains(r#""x-forwarded-proto":"https""#), "{echo}");
    assert!(headers.contains("for=127.0.0.1;proto=https"), "{echo}");

    // wss through the proxy to the plain backend: a live publication arrives.
    let hub = HubClient::builder(&format!("wss://127.0.0.1:{port}/ws"))
        .token(&token_for("alice"))
        .tls_config(ca.trust(Some(&pin)).websocket_config().unwrap())
        .connect()
        .await
        .unwrap();
    let mut subscription = hub.subscribe("chat:proxied").await.unwrap();
    let api = HubApi::new(&backend.base_url, API_KEY).unwrap();
    api.publish("chat:proxied", &json!({"text": "through the proxy"}))
        .await
        .unwrap();
    let publication = next_publication(&mut subscription).await;
    assert_eq!(
        publication.data.to_json().get(),
        r#"{"text":"through the proxy"}"#
    );

    // curl over HTTP/2 (ALPN h2) with --cacert.
    let mut curl = Command::new("curl");
    curl.args([
        "-sS",
        "--http2",
        "--max-time",
        "20",
        "-w",
        "\n%{http_version}",
        "--cacert",
    ])
    .arg(ca.ca_path())
    .arg(format!("{url}/health"));
    let done = run_to_completion(curl, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(
        done.stdout.trim(),
        "{\"status\":\"ok\"}\n2",
        "{}",
        done.stderr
    );

    // Plain HTTP to the proxy's TLS port: the same 400 as ferry serve's.
    plain_http_is_told_to_use_https(port.parse().unwrap()).await;
}
