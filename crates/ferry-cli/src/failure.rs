//! The one failure type of the client commands (`ferry get`/`post`/…, `download`,
//! `upload`, `ws`, `sse`, `sub`, `pub` and the server API commands): an exit code from
//! [`crate::exit`], a stable code, a message and a hint.
//!
//! Every one of them reports it the same way: `error: CODE: message` and `hint: …` on
//! stderr, and with `--json` also `{"error":{"code","message","hint"}}` as one line on
//! stdout, so a script reads the failure where it reads the results.

use std::process::ExitCode;

use ferry_client::http::HttpError;
use ferry_client::hub::HubError;
use ferry_client::ws;

/// A command's failure.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The process exit code ([`crate::exit`]).
    pub(crate) exit: u8,
    /// The stable code scripts compare: the hub's (`AUTH_FAILED`), the client library's
    /// (`CONNECTION_ERROR`) or the CLI's own (`USAGE`, `CLOSED`, `INVALID_JSON`).
    pub(crate) code: String,
    /// What went wrong; empty for a failure that only sets the exit code.
    pub(crate) message: String,
    /// What to try next; may be empty.
    pub(crate) hint: String,
}

/// The hint for a refused API key.
pub(crate) const API_KEY_HINT: &str = "check the API key: it is api_key in the server's ferry-data/secrets.toml (read automatically when you run ferry next to ferry-data, or give --data-dir), or pass --api-key KEY / FERRY_API_KEY";

impl Failure {
    /// Bad flags or arguments: exit 2.
    pub(crate) fn usage(message: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure {
            exit: crate::exit::USAGE,
            code: "USAGE".into(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// A failure that prints nothing and exits with `exit` (the reader of a pipe left,
    /// the answer was already shown).
    pub(crate) fn silent(exit: u8) -> Failure {
        Failure {
            exit,
            code: String::new(),
            message: String::new(),
            hint: String::new(),
        }
    }

    /// A failure named by its code; the exit code and the hint follow from it.
    pub(crate) fn from_code(code: &str, message: String) -> Failure {
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
            exit: exit_for(code),
            code: code.to_string(),
            hint: hint.to_string(),
            message,
        }
    }

    /// For commands that use the API key: `AUTH_*` is about the key, not a token.
    pub(crate) fn for_api_key(mut self) -> Failure {
        if self.code.starts_with("AUTH_") || self.message.contains(": AUTH_") {
            self.hint = API_KEY_HINT.into();
        }
        self
    }

    /// Print the failure (see the module docs) and give the exit code.
    pub(crate) fn report(&self, json: bool) -> ExitCode {
        if self.message.is_empty() {
            return ExitCode::from(self.exit);
        }
        eprintln!("error: {}: {}", self.code, self.message);
        if !self.hint.is_empty() {
            eprintln!("hint: {}", self.hint);
        }
        if json {
            let mut error = serde_json::json!({"code": self.code, "message": self.message});
            if !self.hint.is_empty() {
                error["hint"] = self.hint.clone().into();
            }
            println!("{}", serde_json::json!({ "error": error }));
        }
        ExitCode::from(self.exit)
    }
}

/// A current-thread runtime for one command.
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
/// A failure is reported as JSON too when `json` (the command's `--json`).
pub(crate) fn run<F: std::future::Future<Output = Result<ExitCode, Failure>>>(
    json: bool,
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
        Err(f) => f.report(json),
    })
}

/// The exit code of a failure code: the one table every client command follows.
fn exit_for(code: &str) -> u8 {
    match code {
        "USAGE" | "INVALID_URL" | "INVALID_REQUEST" | "INVALID_JSON" => crate::exit::USAGE,
        "TIMEOUT" => crate::exit::TIMEOUT,
        "CANCELLED" => crate::exit::INTERRUPTED,
        "CONNECTION_ERROR" | "TLS_ERROR" | "PROTOCOL_ERROR" | "CONNECTION_LOST"
        | "NETWORK_ERROR" | "QUEUE_FULL" | "CLOSED" | "DECODE_ERROR" | "IO_ERROR"
        | "INTERNAL_ERROR" => crate::exit::FAILED,
        // HTTP_STATUS and every hub error code: the server said no.
        _ => crate::exit::REFUSED,
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

/// The HTTP commands' failures: the code's hint, worded for the flags those commands
/// have.
impl From<HttpError> for Failure {
    fn from(e: HttpError) -> Failure {
        use ferry_client::http::ErrorCode;
        let hint = match e.code() {
            ErrorCode::Timeout => {
                "the server did not finish in time; allow more with --timeout SECS"
            }
            ErrorCode::ConnectionError => {
                "is the server running? check the host and port (e.g. `ferry serve` listens on 127.0.0.1:8080)"
            }
            ErrorCode::TlsError => hint_for("TLS_ERROR"),
            ErrorCode::InvalidRequest => "check the URL and items (the command's --help)",
            other => other.hint(),
        };
        let message = match e.url() {
            Some(url) => format!("{} ({url})", e.message()),
            None => e.message().to_string(),
        };
        Failure {
            exit: exit_for(e.code().as_str()),
            code: e.code().as_str().to_string(),
            message,
            hint: hint.to_string(),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_documented_exit_codes() {
        let exit = |code: &str| Failure::from_code(code, String::new()).exit;
        assert_eq!(exit("INVALID_URL"), crate::exit::USAGE);
        assert_eq!(exit("INVALID_REQUEST"), crate::exit::USAGE);
        assert_eq!(exit("CONNECTION_ERROR"), crate::exit::FAILED);
        assert_eq!(exit("NETWORK_ERROR"), crate::exit::FAILED);
        assert_eq!(exit("HTTP_STATUS"), crate::exit::REFUSED);
        assert_eq!(exit("AUTH_REQUIRED"), crate::exit::REFUSED);
        assert_eq!(exit("TIMEOUT"), crate::exit::TIMEOUT);
        assert_eq!(exit("CANCELLED"), crate::exit::INTERRUPTED);
        assert!(
            !Failure::from_code("CONNECTION_ERROR", String::new())
                .hint
                .is_empty()
        );
    }

    #[test]
    fn a_refusal_carrying_a_hub_code_gets_that_codes_hint() {
        let f = Failure::from_code(
            "HTTP_STATUS",
            "URL answered HTTP 401 Unauthorized: AUTH_FAILED: bad signature".into(),
        );
        assert_eq!(f.exit, crate::exit::REFUSED);
        assert_eq!(f.hint, hint_for("AUTH_FAILED"));
        assert_eq!(f.for_api_key().hint, API_KEY_HINT);
    }
}
