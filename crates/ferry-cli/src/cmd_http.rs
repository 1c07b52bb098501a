//! `ferry get|post|put|patch|delete|head` and `ferry download`: an HTTPie-like client over
//! `ferry_client::http::Http`. Argument parsing and output only; the work is the library's.

mod items;
mod output;

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ferry_client::http::{CancellationToken, Http, RequestBuilder, Response, RetryPolicy};
use futures_util::StreamExt;
use http::Method;
use serde_json::{Map, Value};

use items::Item;
use output::Shown;

/// The exit codes of the request commands, appended to their help.
macro_rules! request_exit_codes {
    () => {
        "Exit codes:
  0    the server answered 1xx-3xx
  1    CONNECTION_ERROR, TLS_ERROR, NETWORK_ERROR, DECODE_ERROR: no usable answer
  2    usage: bad items, an invalid URL (INVALID_REQUEST), a file@path that is missing
  3    the server answered 4xx or 5xx (HTTP_STATUS); the response is still printed
  4    TIMEOUT: allow more time with --timeout
  130  interrupted (Ctrl-C)
Errors print `error: CODE: message (URL)` and a `hint:` line on stderr."
    };
}

mod download;

pub use download::{DOWNLOAD_HELP, DownloadArgs, download};
mod upload;
pub use upload::{UPLOAD_HELP, UploadArgs, upload};

/// Request items, output and exit codes, shown after `ferry get --help` and friends.
pub const REQUEST_HELP: &str = concat!(
    "Request items (after the URL):
  Header:value   a request header             X-Api-Key:abc
  key==value     a query parameter            page==2
  key=value      a string field of the body   name=Ada
  key:=json      a JSON field of the body     tags:='[1,2]'  admin:=true
  field@path     a file (multipart upload)    photo@./cat.jpg
Fields make a JSON object body (--form: urlencoded; with a file: multipart/form-data).
Output: pretty on a terminal (status line, headers, coloured JSON), the raw body in a
pipe, a {status, status_text, headers, body} document with --json.

Examples:
  ferry get :8080/test/anything page==2 X-Trace:abc
  ferry post http://127.0.0.1:8080/test/anything name=Ada age:=36
  ferry post :8080/test/anything title=cat photo@cat.jpg

",
    request_exit_codes!()
);

/// When to print the pretty form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Pretty {
    /// On a terminal.
    Auto,
    /// Always (colours still only on a terminal, or with CLICOLOR_FORCE=1).
    Always,
    /// Never: the raw body.
    Never,
}

/// Connection settings shared by the HTTP commands.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Total time limit in seconds (connect, send, receive). 0: none [default: 30].
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Time limit for connecting, in seconds [default: 10].
    #[arg(long, value_name = "SECS")]
    connect_timeout: Option<f64>,
    /// Retry idempotent requests this many times on 408/429/5xx or a broken connection,
    /// with backoff, honouring Retry-After.
    #[arg(long, default_value_t = 0, value_name = "N")]
    retries: u32,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
    /// `Authorization: Bearer TOKEN`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FERRY_BEARER",
        hide_env_values = true
    )]
    bearer: Option<String>,
    /// Basic auth, `USER` or `USER:PASSWORD`.
    #[arg(long, short = 'a', value_name = "USER[:PASS]")]
    auth: Option<String>,
    /// Print a machine-readable JSON document on stdout instead ({status, headers, body},
    /// or {error: {code, message}}).
    #[arg(long)]
    json: bool,
}

/// `ferry get URL [ITEM...]` and the other methods.
#[derive(Args, Debug)]
pub struct RequestArgs {
    /// The URL: `http://host/path`, `host:port/path` or `:port/path` (localhost).
    url: String,
    /// Request items: Header:value, key==query, key=value, key:=json, field@file.
    #[arg(value_name = "ITEM")]
    items: Vec<String>,
    /// Send fields as a form (application/x-www-form-urlencoded) instead of JSON.
    #[arg(long, short = 'f')]
    form: bool,
    /// A raw body: TEXT, @FILE (streamed) or @- (stdin). Not with body fields.
    #[arg(long, short = 'd', value_name = "BODY")]
    data: Option<String>,
    /// When to pretty-print.
    #[arg(long, value_enum, default_value_t = Pretty::Auto)]
    pretty: Pretty,
    #[command(flatten)]
    client: ClientArgs,
}

use crate::failure::{Failure, run};

fn seconds(value: Option<f64>, default: Duration) -> Result<Option<Duration>, Failure> {
    match value {
        None => Ok(Some(default)),
        Some(s) => {
            if s == 0.0 {
                return Ok(None);
            }
            Duration::try_from_secs_f64(s)
                .map(Some)
                .map_err(|_| Failure::usage(format!("invalid number of seconds: {s}"), ""))
        }
    }
}

impl ClientArgs {
    fn build(&self) -> Result<Http, Failure> {
        let mut b = Http::builder()
            .timeout(seconds(self.timeout, Duration::from_secs(30))?)
            .connect_timeout(seconds(self.connect_timeout, Duration::from_secs(10))?)
            .retry(RetryPolicy::with_max_retries(self.retries));
        b = b.trust(self.tls.trust()?);
        b.build().map_err(Failure::from)
    }

    /// The `Authorization` header the flags ask for.
    fn authorization(&self) -> Option<(String, String)> {
        use base64::Engine;
        if let Some(token) = &self.bearer {
            return Some(("authorization".into(), format!("Bearer {token}")));
        }
        let auth = self.auth.as_ref()?;
        let pair = if auth.contains(':') {
            auth.clone()
        } else {
            format!("{auth}:")
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        Some(("authorization".into(), format!("Basic {encoded}")))
    }
}

/// `:8080/x` → `http://localhost:8080/x`; a URL without a scheme gets `http://` (the
/// shorthands of every command, see [`crate::urls`]).
fn normalize_url(url: &str) -> String {
    crate::urls::complete(url, crate::urls::Family::Http)
}

/// A token cancelled by Ctrl-C.
fn interrupt_token() -> CancellationToken {
    let token = CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    token
}

/// Run `ferry <method> URL ITEM...`.
pub fn request(method: Method, args: RequestArgs) -> anyhow::Result<ExitCode> {
    run(args.client.json, send_request(method, args))
}

fn parse_items(raw: &[String]) -> Result<Vec<Item>, Failure> {
    raw.iter()
        .map(|s| items::parse(s).map_err(|e| Failure::usage(e, "see `ferry get --help`")))
        .collect()
}

async fn send_request(method: Method, args: RequestArgs) -> Result<ExitCode, Failure> {
    let items = parse_items(&args.items)?;
    let http = args.client.build()?;
    let url = normalize_url(&args.url);
    let mut headers: Vec<(String, String)> = args.client.authorization().into_iter().collect();
    let mut queries = Vec::new();
    let mut fields = Map::new();
    let mut text_fields = Vec::new();
    let mut files = Vec::new();
    for item in items {
        match item {
            Item::Header(name, value) => headers.push((name, value)),
            Item::Query(k, v) => queries.push((k, v)),
            Item::Data(k, v) => {
                fields.insert(k.clone(), Value::String(v.clone()));
                text_fields.push((k, v));
            }
            Item::Json(k, v) => {
                if args.form {
                    return Err(Failure::usage(
                        format!("{k}:= sends JSON, which a form cannot carry"),
                        "use key=value with --form, or drop --form",
                    ));
                }
                text_fields.push((k.clone(), v.to_string()));
                fields.insert(k, v);
            }
            Item::File(k, path) => files.push((k, path)),
        }
    }
    let has_header = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let has_fields = !fields.is_empty() || !files.is_empty();
    if args.data.is_some() && has_fields {
        return Err(Failure::usage(
            "--data and body fields cannot be combined",
            "send either key=value fields or one raw --data body",
        ));
    }
    let token = interrupt_token();
    let is_head = method == Method::HEAD;
    let response = if !files.is_empty() {
        if !queries.is_empty() {
            return Err(Failure::usage(
                "query items cannot be combined with a file upload",
                "put the query in the URL",
            ));
        }
        if let Some((field, path)) = files.iter().find(|(_, p)| !p.is_file()) {
            return Err(Failure::usage(
                format!("{field}@{}: no such file", path.display()),
                "check the path after @ (relative paths start in the current directory)",
            ));
        }
        let mut upload = http.multipart(&url).method(method);
        for (k, v) in text_fields {
            upload = upload.text(k, v);
        }
        for (k, path) in files {
            upload = upload.file(k, path);
        }
        for (n, v) in headers {
            upload = upload.header(n, v);
        }
        upload.cancel_token(token).send().await?
    } else {
        let mut req = http.request(method, &url);
        if has_fields && !args.form && !has_header("accept") {
            req = req.header("accept", "application/json, */*;q=0.5");
        }
        let has_content_type = has_header("content-type");
        for (n, v) in headers {
            req = req.header(n, v);
        }
        for (k, v) in queries {
            req = req.query(k, v);
        }
        if args.form && has_fields {
            req = req.form(text_fields);
        } else if has_fields {
            req = req.json(&Value::Object(fields));
        } else if let Some(data) = &args.data {
            req = raw_body(req, data, has_content_type)?;
        }
        req.cancel_token(token).send().await?
    };
    show(response, is_head, args.pretty, args.client.json).await
}

fn raw_body(
    req: RequestBuilder,
    data: &str,
    has_content_type: bool,
) -> Result<RequestBuilder, Failure> {
    match data.strip_prefix('@') {
        Some("-") => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(|e| Failure::usage(format!("cannot read stdin: {e}"), ""))?;
            Ok(req.bytes(body))
        }
        Some(path) => {
            if !std::path::Path::new(path).is_file() {
                return Err(Failure::usage(format!("{path} is not a readable file"), ""));
            }
            Ok(req.file(path))
        }
        None if has_content_type => Ok(req.bytes(data.as_bytes().to_vec())),
        None => Ok(req.text(data)),
    }
}

async fn show(
    response: Response,
    is_head: bool,
    pretty: Pretty,
    json: bool,
) -> Result<ExitCode, Failure> {
    let status = response.status();
    let failed = status.is_client_error() || status.is_server_error();
    let no_body = is_head || status == 204 || status == 304;
    let pretty = match pretty {
        Pretty::Auto => std::io::stdout().is_terminal(),
        Pretty::Always => true,
        Pretty::Never => false,
    };
    let summary = format!(
        "HTTP {} {} ({})",
        status.as_u16(),
        response.status_text(),
        response.url()
    );
    let mut stdout = anstream::stdout();
    let io_failure = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // The reader (`| head`) has seen enough: not an error.
            let code = if failed { crate::exit::REFUSED } else { 0 };
            return Failure::silent(code);
        }
        Failure::from_code("IO_ERROR", format!("cannot write the output: {e}"))
    };
    if json || pretty {
        let shown = read_all(response).await?;
        if json {
            let doc = output::document(&shown);
            writeln!(stdout, "{doc}").map_err(io_failure)?;
        } else {
            output::write_pretty(&mut stdout, &shown, true).map_err(io_failure)?;
        }
    } else if no_body {
        // Nothing to stream: show the head, which is the point of HEAD and of 204.
        let shown = read_all(response).await?;
        output::write_head(&mut stdout, &shown).map_err(io_failure)?;
    } else {
        let textual = is_textual(
            response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        let mut body = response.stream();
        let mut raw = std::io::stdout().lock();
        let mut last = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if let Some(b) = chunk.last() {
                last = Some(*b);
            }
            raw.write_all(&chunk).map_err(io_failure)?;
        }
        // A text body without a final newline would leave the shell prompt glued to it;
        // binary bodies stay byte-exact.
        if textual && last.is_some_and(|b| b != b'\n') {
            raw.write_all(b"\n").map_err(io_failure)?;
        }
        raw.flush().map_err(io_failure)?;
    }
    if failed {
        eprintln!("error: HTTP_STATUS: {summary}");
        return Ok(ExitCode::from(crate::exit::REFUSED));
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a body of this content type is text meant for a terminal or a line-based tool.
fn is_textual(content_type: Option<&str>) -> bool {
    let Some(essence) = content_type.and_then(|c| c.split(';').next()) else {
        return false;
    };
    let essence = essence.trim().to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("json")
        || essence.ends_with("+xml")
        || essence == "application/xml"
        || essence == "application/javascript"
}

async fn read_all(response: Response) -> Result<Shown, Failure> {
    let version = format!("{:?}", response.version());
    let status = response.status().as_u16();
    let status_text = response.status_text().to_string();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.bytes().await?.to_vec();
    Ok(Shown {
        version,
        status,
        status_text,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_completed_like_httpie() {
        assert_eq!(normalize_url(":8080/x"), "http://localhost:8080/x");
        assert_eq!(normalize_url("127.0.0.1:1/y"), "http://127.0.0.1:1/y");
        assert_eq!(normalize_url("https://h/z"), "https://h/z");
    }
}
