//! `ferry ws`, `ferry sse`, `ferry sub` and `ferry pub`: websocat-like realtime commands
//! over `ferry_client::{ws, event_source, hub}`. Argument parsing and output only; the
//! work is the library's.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use ferry_client::hub::{Codec, HubClient, HubEvent};
use ferry_client::ws::{ConnectionState, StateStream};

use crate::urls::{Family, complete};

/// The common tail of every realtime command's exit codes.
macro_rules! exit_tail {
    () => {
        "  4    TIMEOUT: the server did not answer in time
  130  interrupted (Ctrl-C)
Errors print `error: CODE: message` and a `hint:` line on stderr; with --json the error
is also one `{\"error\":{\"code\",\"message\",\"hint\"}}` line on stdout."
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

pub(crate) use crate::failure::{Failure, run};

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
