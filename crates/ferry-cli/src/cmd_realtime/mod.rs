//! `ferry ws`, `ferry sse`, `ferry sub` and `ferry pub`: websocat-like realtime commands
//! over `ferry_client::{ws, event_source, hub}`. Argument parsing and output only; the
//! work is the library's.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use ferry_client::hub::{Codec, HubClient, HubError, HubEvent};
use ferry_client::ws::{self, ConnectionState, StateStream};

use crate::urls::{Family, complete};

/// The common tail of every realtime command's exit codes.
macro_rules! exit_tail {
    () => {
        "  4    TIMEOUT: the server did not answer in time
  130  interrupted (Ctrl-C)
Errors print `error: CODE: message` and a `hint:` line on stderr."
    };
}

mod publish;
mod sse;
mod sub;
mod websocket;

pub use publish::{PUB_HELP, PubArgs, publish};
pub use sse::{SSE_HELP, SseArgs, sse};
pub use sub::{SUB_HELP, SubArgs, sub};
pub use websocket::{WS_HELP, WsArgs, ws};

/// A failure with its exit code and a suggestion (shared with the server API commands).
pub(crate) struct Failure {
    pub(crate) exit: u8,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) hint: String,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure {
            exit: crate::exit::USAGE,
            code: "USAGE".into(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// For commands that use the API key: `AUTH_*` is about the key, not a token.
    pub(crate) fn for_api_key(mut self) -> Failure {
        if self.code.starts_with("AUTH_") || self.message.contains(": AUTH_") {
            self.hint = API_KEY_HINT.into();
        }
        self
    }

    pub(crate) fn from_code(code: &str, message: String) -> Failure {
        let exit = match code {
            "INVALID_URL" => crate::exit::USAGE,
            "TIMEOUT" => crate::exit::TIMEOUT,
            "CONNECTION_ERROR" | "TLS_ERROR" | "PROTOCOL_ERROR" | "CONNECTION_LOST"
            | "QUEUE_FULL" | "CLOSED" | "DECODE_ERROR" | "INTERNAL_ERROR" => crate::exit::FAILED,
            // HTTP_STATUS and every hub error code: the server said no.
            _ => crate::exit::REFUSED,
        };
        // An HTTP refusal that carries the hub's `{code, message}`: the hint of that code.
        let hint = match code {
            "HTTP_STATUS" => server_code_in(&message)
                .map(hint_for)
                .unwrap_or(hint_for(code)),
            // reqwest reports a refused certificate as a connection error.
            _ if message.contains("certificate") => hint_for("TLS_ERROR"),
            _ => hint_for(code),
        };
        Failure {
            exit,
            code: code.to_string(),
            hint: hint.to_string(),
            message,
        }
    }

    pub(crate) fn report(&self) -> ExitCode {
        eprintln!("error: {}: {}", self.code, self.message);
        if !self.hint.is_empty() {
            eprintln!("hint: {}", self.hint);
        }
        ExitCode::from(self.exit)
    }
}

impl From<crate::tls_args::BadTlsFlag> for Failure {
    fn from(e: crate::tls_args::BadTlsFlag) -> Failure {
        Failure::usage(e.0, crate::tls_args::HINT)
    }
}

impl From<ws::Error> for Failure {
    fn from(e: ws::Error) -> Failure {
        Failure::from_code(e.code(), e.message().to_string())
    }
}

impl From<HubError> for Failure {
    fn from(e: HubError) -> Failure {
        let message = match &e {
            HubError::Server { message, .. } => message.clone(),
            HubError::Transport(t) => t.message().to_string(),
            HubError::Decode(m) => m.clone(),
        };
        Failure::from_code(e.code(), message)
    }
}

/// The hint for a refused API key.
pub(crate) const API_KEY_HINT: &str = "check the API key: it is api_key in the server's ferry-data/secrets.toml (read automatically when you run ferry next to ferry-data, or give --data-dir), or pass --api-key KEY / FERRY_API_KEY";

/// The hub error code inside a transport message such as
/// `URL answered HTTP 400 Bad Request: INVALID_MESSAGE: ...`.
fn server_code_in(message: &str) -> Option<&'static str> {
    const CODES: &[&str] = &[
        "AUTH_REQUIRED",
        "AUTH_FAILED",
        "AUTH_EXPIRED",
        "PERMISSION_DENIED",
        "INVALID_MESSAGE",
        "UNKNOWN_CHANNEL",
        "CONNECTION_LIMIT",
        "RATE_LIMIT_EXCEEDED",
        "MESSAGE_TOO_BIG",
    ];
    CODES
        .iter()
        .find(|c| message.contains(&format!(": {c}: ")))
        .copied()
}

fn hint_for(code: &str) -> &'static str {
    match code {
        "INVALID_URL" => {
            "URLs look like ws://127.0.0.1:8080/ws (ws, sse: http://127.0.0.1:8080/sse?channel=NAME)"
        }
        "CONNECTION_ERROR" => {
            "is the server running? start one with `ferry serve`, or check the host and port"
        }
        "TLS_ERROR" => {
            "the server's certificate is not trusted here: --cacert FILE trusts its CA (for `ferry serve --tls-self-signed`: DATA_DIR/tls/self-signed-cert.pem), and a --pin must match its key"
        }
        "HTTP_STATUS" => "the server refused the request: check the path and the credentials",
        "PROTOCOL_ERROR" => "the peer broke the protocol: is this the right endpoint?",
        "TIMEOUT" => "the server did not answer in time: check that it is reachable",
        "QUEUE_FULL" => {
            "the connection is down or too slow for the input; try --reconnect or slow down"
        }
        "CONNECTION_LOST" => "the connection dropped; add --reconnect to keep going",
        "AUTH_REQUIRED" => {
            "pass a token with --token or FERRY_TOKEN (mint one with `ferry token --user NAME`)"
        }
        "AUTH_FAILED" => {
            "the server refused the token: `ferry token check TOKEN` says why; mint a new one with `ferry token --user NAME`"
        }
        "AUTH_EXPIRED" => "the token expired: mint a fresh one with `ferry token --user NAME`",
        "PERMISSION_DENIED" => {
            "the server's message says which permission is missing; grants go in the token (`ferry token --caps`) or the namespace options in ferry.toml"
        }
        "UNKNOWN_CHANNEL" => {
            "add the namespace to ferry.toml ([namespaces.NAME]); `ferry serve --print-config` lists those configured"
        }
        "INVALID_MESSAGE" => "the server could not use the request: its message says what to fix",
        _ => "",
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Failure::from_code("INTERNAL_ERROR", format!("starting the async runtime: {e}"))
        })
}

/// Run a command on its own runtime. The runtime is shut down without waiting for
/// blocking tasks: a read of standard input may be stuck in one until the next line.
pub(crate) fn run<F: std::future::Future<Output = Result<ExitCode, Failure>>>(
    command: F,
) -> anyhow::Result<ExitCode> {
    let result = match runtime() {
        Ok(rt) => {
            let result = rt.block_on(command);
            rt.shutdown_background();
            result
        }
        Err(f) => Err(f),
    };
    Ok(match result {
        Ok(code) => code,
        Err(f) => f.report(),
    })
}

fn split_header(raw: &str) -> Result<(&str, &str), Failure> {
    raw.split_once(':')
        .map(|(n, v)| (n.trim(), v.trim()))
        .filter(|(n, _)| !n.is_empty())
        .ok_or_else(|| {
            Failure::usage(
                format!("header `{raw}` is not NAME:VALUE"),
                "e.g. -H 'Authorization: Bearer abc'",
            )
        })
}

fn millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Write to stdout; a closed pipe (e.g. `| head`) ends the command quietly.
fn emit(bytes: &[u8]) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|_| out.flush()).is_ok()
}

fn describe_state(state: ConnectionState) -> String {
    match state {
        ConnectionState::Connecting => "connecting".into(),
        ConnectionState::Open => "open".into(),
        ConnectionState::Closing => "closing".into(),
        ConnectionState::Closed => "closed".into(),
        ConnectionState::Reconnecting { attempt, delay } => {
            format!(
                "reconnecting in {:.1} s (attempt {attempt})",
                delay.as_secs_f64()
            )
        }
    }
}

/// Report state changes on stderr until the stream ends.
fn log_states(mut states: StateStream) {
    tokio::spawn(async move {
        while let Some(state) = states.next().await {
            eprintln!("ferry: {}", describe_state(state));
        }
    });
}

/// The hub URL with `/ws` added when it names no path.
fn hub_ws_url(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    let after_scheme = trimmed
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(trimmed);
    if after_scheme.contains('/') {
        url.to_string()
    } else {
        format!("{trimmed}/ws")
    }
}

/// Wait for the server's verdict on the token: `auth_success`, or the `auth_error`
/// with its code and reason.
async fn wait_for_auth(hub: &HubClient) -> Result<(), Failure> {
    let verdict = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = hub.next_event().await {
            match event {
                HubEvent::AuthSuccess { user, .. } => {
                    eprintln!("ferry: authenticated as {user}");
                    return Ok(());
                }
                HubEvent::AuthError(e) => return Err(Failure::from(e)),
                _ => {}
            }
        }
        Ok(())
    })
    .await;
    verdict.unwrap_or_else(|_| {
        Err(Failure::from_code(
            "TIMEOUT",
            "the server did not answer the token within 30 s".into(),
        ))
    })
}

/// Connect a `HubClient` to the hub at `url` (the /ws path added when missing) speaking
/// `codec`; with a token, wait for the server's verdict on it, so that AUTH_FAILED and why
/// is reported rather than a later AUTH_REQUIRED.
async fn connect_hub(
    url: &str,
    codec: Codec,
    tls: &crate::tls_args::TlsArgs,
    token: Option<&str>,
) -> Result<HubClient, Failure> {
    let url = hub_ws_url(&complete(url, Family::Ws));
    let mut builder = HubClient::builder(&url).codec(codec);
    if let Some(tls) = tls.websocket_config()? {
        builder = builder.tls_config(tls);
    }
    if let Some(token) = token {
        builder = builder.token(token);
    }
    let hub = builder.connect().await?;
    if token.is_some() {
        wait_for_auth(&hub).await?;
    }
    Ok(hub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_urls_get_the_ws_path_when_they_have_none() {
        assert_eq!(hub_ws_url("ws://127.0.0.1:8080"), "ws://127.0.0.1:8080/ws");
        assert_eq!(hub_ws_url("ws://127.0.0.1:8080/"), "ws://127.0.0.1:8080/ws");
        assert_eq!(hub_ws_url("wss://h/custom/ws"), "wss://h/custom/ws");
    }

    #[test]
    fn error_codes_map_to_documented_exit_codes() {
        assert_eq!(
            Failure::from_code("INVALID_URL", String::new()).exit,
            crate::exit::USAGE
        );
        assert_eq!(
            Failure::from_code("CONNECTION_ERROR", String::new()).exit,
            crate::exit::FAILED
        );
        assert_eq!(
            Failure::from_code("HTTP_STATUS", String::new()).exit,
            crate::exit::REFUSED
        );
        assert_eq!(
            Failure::from_code("AUTH_REQUIRED", String::new()).exit,
            crate::exit::REFUSED
        );
        assert_eq!(
            Failure::from_code("TIMEOUT", String::new()).exit,
            crate::exit::TIMEOUT
        );
        assert!(
            !Failure::from_code("CONNECTION_ERROR", String::new())
                .hint
                .is_empty()
        );
    }

    #[test]
    fn headers_must_be_name_colon_value() {
        assert_eq!(
            split_header("A: b")
                .ok()
                .map(|(n, v)| (n.to_string(), v.to_string())),
            Some(("A".into(), "b".into()))
        );
        assert!(split_header("nocolon").is_err());
        assert!(split_header(":x").is_err());
    }
}
