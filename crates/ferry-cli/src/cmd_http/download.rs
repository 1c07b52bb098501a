//! `ferry download URL [-o FILE] [--resume]`: a file with a progress bar, resumable.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use ferry_client::http::Progress;
use serde_json::json;

use super::items::Item;
use super::{ClientArgs, Failure, interrupt_token, normalize_url, parse_items, run, seconds};

/// Shown after `ferry download --help`.
pub const DOWNLOAD_HELP: &str =
    "Bytes go to FILE.part until complete. --resume continues it with a Range request that
the server must confirm is for the same version (If-Range), else it starts over.
A progress bar shows on a terminal; --json prints {path, size, resumed_from, restarted}.
--timeout bounds each wait for data (default 30 s), not the whole download.

Examples:
  ferry download http://127.0.0.1:8080/test/bytes/1000000 -o data.bin
  ferry download http://127.0.0.1:8080/test/bytes/1000000 -o data.bin --resume

Exit codes:
  0    saved
  1    the transfer failed (CONNECTION_ERROR, NETWORK_ERROR, IO_ERROR); FILE.part is kept
       for --resume
  2    usage: FILE exists (use --force), items other than headers, an invalid URL
  3    the server answered 4xx or 5xx (HTTP_STATUS)
  4    TIMEOUT: no data for --timeout seconds; FILE.part is kept for --resume
  130  interrupted (Ctrl-C); FILE.part is kept for --resume
Errors print `error: CODE: message (URL)` and a `hint:` line on stderr.";

/// `ferry download URL [-o FILE] [--resume]`.
#[derive(Args, Debug)]
pub struct DownloadArgs {
    /// The URL.
    url: String,
    /// Header:value and key==query items.
    #[arg(value_name = "ITEM")]
    items: Vec<String>,
    /// Where to save [default: the last segment of the URL's path].
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Continue an interrupted download (FILE.part) if the server still has the same version.
    #[arg(long)]
    resume: bool,
    /// Overwrite FILE if it exists.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// The download progress bar (drawn on stderr, only when it is a terminal).
/// The speed and the time left are both computed from the library's speed estimate (in
/// `{msg}`, see [`rate_and_eta`]), so they always agree.
const PROGRESS_TEMPLATE: &str = "{spinner} {bytes}/{total_bytes} [{bar:30}] {percent}% {msg}";

/// `1.2 MiB/s, 3s left` from one speed estimate; the time left only once there is a speed
/// and a total.
fn rate_and_eta(loaded: u64, total: Option<u64>, speed: f64) -> String {
    let rate = format!("{}/s", indicatif::HumanBytes(speed as u64));
    match total {
        Some(total) if speed >= 1.0 && total >= loaded => {
            let left = Duration::from_secs_f64((total - loaded) as f64 / speed);
            format!(
                "{rate}, {} left",
                indicatif::HumanDuration(Duration::from_secs(left.as_secs()))
            )
        }
        _ => rate,
    }
}

/// Run `ferry download URL [-o FILE] [--resume]`.
pub fn download(args: DownloadArgs) -> anyhow::Result<ExitCode> {
    run(args.client.json, run_download(args))
}

/// The file name a URL suggests: its last non-empty path segment.
fn file_name_from_url(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?.split("://").nth(1)?;
    let (_, path) = path.split_once('/')?;
    path.rsplit('/')
        .find(|s| !s.is_empty() && *s != "." && *s != "..")
        .map(str::to_string)
}

async fn run_download(args: DownloadArgs) -> Result<ExitCode, Failure> {
    let url = normalize_url(&args.url);
    let path = match &args.output {
        Some(p) => p.clone(),
        None => PathBuf::from(
            file_name_from_url(&url)
                .ok_or_else(|| Failure::usage("the URL names no file", "give one with -o FILE"))?,
        ),
    };
    if path.exists() && !args.force {
        return Err(Failure::usage(
            format!("{} already exists", path.display()),
            "use --force to overwrite it, or -o to choose another name",
        ));
    }
    let http = args.client.build()?;
    let mut dl = http.download(&url, &path).resume(args.resume);
    if args.client.timeout.is_some() {
        // A download has no total limit: --timeout bounds each wait for data.
        dl = dl.idle_timeout(seconds(args.client.timeout, Duration::from_secs(30))?);
    }
    let part = dl.partial_path();
    for item in parse_items(&args.items)? {
        dl = match item {
            Item::Header(n, v) => dl.header(n, v),
            Item::Query(..) | Item::Data(..) | Item::Json(..) | Item::File(..) => {
                return Err(Failure::usage(
                    "download takes only Header:value items",
                    "put query parameters in the URL",
                ));
            }
        };
    }
    if let Some((name, value)) = args.client.authorization() {
        dl = dl.header(name, value);
    }
    let token = interrupt_token();
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    let style =
        indicatif::ProgressStyle::with_template(PROGRESS_TEMPLATE).map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    let shown = bar.clone();
    let outcome = dl
        .cancel_token(token)
        .on_progress(move |p: &Progress| {
            if let Some(total) = p.total {
                shown.set_length(total);
            }
            shown.set_position(p.loaded);
            shown.set_message(rate_and_eta(p.loaded, p.total, p.speed));
        })
        .start()
        .await;
    bar.finish_and_clear();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) if e.is_cancelled() || e.is_network() || e.is_timeout() => {
            let mut f = Failure::from(e);
            if part.exists() {
                f.hint = format!(
                    "{} is kept: run the same command with --resume to continue",
                    part.display()
                );
            }
            return Err(f);
        }
        Err(e) => return Err(e.into()),
    };
    if args.client.json {
        println!(
            "{}",
            json!({
                "path": outcome.path.display().to_string(),
                "size": outcome.size,
                "resumed_from": outcome.resumed_from,
                "restarted": outcome.restarted,
            })
        );
    }
    let mut note = format!("saved {} ({} bytes", outcome.path.display(), outcome.size);
    if outcome.resumed_from > 0 {
        note.push_str(&format!(", resumed from byte {}", outcome.resumed_from));
    }
    if outcome.restarted {
        note.push_str(", restarted: the server's copy changed");
    }
    note.push(')');
    eprintln!("{note}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_and_time_left_come_from_one_estimate() {
        assert_eq!(
            rate_and_eta(0, Some(10 * 1024 * 1024), 1024.0 * 1024.0),
            "1.00 MiB/s, 10 seconds left"
        );
        assert_eq!(rate_and_eta(5, None, 1024.0), "1.00 KiB/s");
        assert_eq!(rate_and_eta(0, Some(100), 0.0), "0 B/s");
    }

    #[test]
    fn progress_template_is_valid() {
        assert!(indicatif::ProgressStyle::with_template(PROGRESS_TEMPLATE).is_ok());
    }

    #[test]
    fn download_names() {
        assert_eq!(
            file_name_from_url("http://h/a/b.bin?x=1").as_deref(),
            Some("b.bin")
        );
        assert_eq!(
            file_name_from_url("http://h/a/dir/").as_deref(),
            Some("dir")
        );
        assert_eq!(file_name_from_url("http://h/"), None);
        assert_eq!(file_name_from_url("http://h"), None);
    }
}
