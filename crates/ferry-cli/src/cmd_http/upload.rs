//! `ferry upload FILE... [--tus URL | --multipart URL] [--chunk-size N] [--resume]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use clap::Args;
use ferry_client::http::Progress;
use ferry_client::upload::{Upload, UploadControl, default_resume_store};
use serde_json::json;

use super::{ClientArgs, Failure, interrupt_token, normalize_url, run};

/// Shown after `ferry upload --help`.
pub const UPLOAD_HELP: &str = concat!(
    "With --tus, each file is sent in chunks (PATCH per --chunk-size bytes) and its upload URL
is recorded in a local resume store (--state, default ~/.local/share/ferry/uploads.json);
after an interruption, the same command with --resume continues where the server stopped.
Failed chunks are retried with backoff. --multipart sends each file in one
multipart/form-data POST (field `file`) for servers without tus.
A progress bar per file and a total show on a terminal; --json prints JSON lines instead:
{event: progress, file, loaded, total, percentage, speed} after each chunk and
{event: done, file, url, size, resumed_from} per file.

Examples:
  ferry upload big.iso --tus http://127.0.0.1:8080/files/ --bearer $TOKEN
  ferry upload big.iso --tus http://127.0.0.1:8080/files/ --bearer $TOKEN --resume
  ferry upload a.jpg b.jpg --multipart http://127.0.0.1:8080/upload --bearer $TOKEN

",
    request_exit_codes!()
);

/// `ferry upload FILE...`.
#[derive(Args, Debug)]
pub struct UploadArgs {
    /// Files to upload.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// tus creation endpoint, e.g. http://127.0.0.1:8080/files/.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "multipart",
        required_unless_present = "multipart"
    )]
    tus: Option<String>,
    /// Multipart endpoint, e.g. http://127.0.0.1:8080/upload.
    #[arg(long, value_name = "URL")]
    multipart: Option<String>,
    /// Bytes per tus PATCH; K, M and G suffixes (powers of 1024) [default: 8M].
    #[arg(long, value_name = "N", value_parser = parse_size)]
    chunk_size: Option<usize>,
    /// Continue earlier uploads of the same files (tus).
    #[arg(long)]
    resume: bool,
    /// Resume store file [default: ~/.local/share/ferry/uploads.json].
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Extra request header, `NAME:VALUE` (e.g. `Authorization:apikey KEY`); repeatable.
    #[arg(long, short = 'H', value_name = "NAME:VALUE")]
    header: Vec<String>,
    /// Send a SHA-256 Upload-Checksum with each chunk (the server must support it).
    #[arg(long)]
    checksum: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, shift) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 10),
        Some('M') => (&s[..s.len() - 1], 20),
        Some('G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("invalid size {s:?}: use e.g. 65536, 512K or 8M"))?;
    n.checked_shl(shift)
        .filter(|v| *v >> shift == n && *v > 0)
        .ok_or_else(|| format!("invalid size {s:?}"))
}

const FILE_TEMPLATE: &str =
    "{prefix:20!} {bytes:>10}/{total_bytes:10} [{bar:30}] {percent:>3}% {msg}";
const TOTAL_TEMPLATE: &str =
    "{prefix:20!} {bytes:>10}/{total_bytes:10} [{bar:30}] {percent:>3}% eta {eta}";

/// Run `ferry upload`.
pub fn upload(args: UploadArgs) -> anyhow::Result<ExitCode> {
    run(args.client.json, run_upload(args))
}

fn bar(
    multi: &indicatif::MultiProgress,
    template: &str,
    prefix: String,
    len: u64,
) -> indicatif::ProgressBar {
    let bar = multi.add(indicatif::ProgressBar::new(len));
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix);
    bar
}

async fn run_upload(args: UploadArgs) -> Result<ExitCode, Failure> {
    let json = args.client.json;
    let http = args.client.build()?;
    let (endpoint, tus) = match (&args.tus, &args.multipart) {
        (Some(u), _) => (normalize_url(u), true),
        (None, Some(u)) => (normalize_url(u), false),
        (None, None) => return Err(Failure::usage("give --tus URL or --multipart URL", "")),
    };
    let mut sizes = Vec::new();
    for f in &args.files {
        let meta = std::fs::metadata(f).map_err(|e| {
            Failure::usage(
                format!("cannot read {}: {e}", f.display()),
                "check the path",
            )
        })?;
        if !meta.is_file() {
            return Err(Failure::usage(format!("{} is not a file", f.display()), ""));
        }
        sizes.push(meta.len());
    }
    let state = args.state.clone().or_else(default_resume_store);
    let multi = indicatif::MultiProgress::with_draw_target(if json {
        indicatif::ProgressDrawTarget::hidden()
    } else {
        indicatif::ProgressDrawTarget::stderr()
    });
    let total = bar(&multi, TOTAL_TEMPLATE, "total".into(), sizes.iter().sum());
    let done_before = Arc::new(Mutex::new(0u64));
    let cancel = interrupt_token();
    for (file, size) in args.files.iter().zip(sizes) {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let this = bar(&multi, FILE_TEMPLATE, name.clone(), size);
        let control = UploadControl::new();
        let stop = control.clone();
        let watch = cancel.clone();
        let watcher = tokio::spawn(async move {
            watch.cancelled().await;
            stop.cancel();
        });
        let mut up = if tus {
            Upload::tus(&http, &endpoint, file)
        } else {
            Upload::multipart(&http, &endpoint, file)
        }
        .control(control)
        .checksum(args.checksum)
        .resume(args.resume);
        if let Some(c) = args.chunk_size {
            up = up.chunk_size(c);
        }
        if let Some(s) = &state {
            up = up.resume_store(s.clone());
        }
        if let Some((n, v)) = args.client.authorization() {
            up = up.header(n, v);
        }
        for h in &args.header {
            let Some((n, v)) = h.split_once(':') else {
                return Err(Failure::usage(
                    format!("invalid header {h:?}"),
                    "write it as NAME:VALUE",
                ));
            };
            up = up.header(n.trim(), v.trim());
        }
        let (shown, all, before) = (this.clone(), total.clone(), done_before.clone());
        let label = file.display().to_string();
        let outcome = up
            .on_progress(move |p: &Progress| {
                if json {
                    println!(
                        "{}",
                        json!({"event": "progress", "file": label, "loaded": p.loaded,
                               "total": p.total, "percentage": p.percentage, "speed": p.speed})
                    );
                }
                shown.set_position(p.loaded);
                shown.set_message(format!("{}/s", indicatif::HumanBytes(p.speed as u64)));
                let base = *before.lock().unwrap_or_else(PoisonError::into_inner);
                all.set_position(base + p.loaded);
            })
            .start()
            .await;
        watcher.abort();
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                multi.clear().ok();
                let mut f = Failure::from(e);
                if tus && f.code != "HTTP_STATUS" {
                    f.hint = "run the same command with --resume to continue".into();
                }
                return Err(f);
            }
        };
        this.finish();
        *done_before.lock().unwrap_or_else(PoisonError::into_inner) += size;
        if json {
            println!(
                "{}",
                json!({"event": "done", "file": file.display().to_string(), "url": outcome.url,
                       "size": outcome.size, "resumed_from": outcome.resumed_from,
                       "response": serde_json::from_str::<serde_json::Value>(&outcome.response).ok()})
            );
        } else {
            multi.suspend(|| {
                let mut note = format!("{name}: {} bytes → {}", outcome.size, outcome.url);
                if outcome.resumed_from > 0 {
                    note.push_str(&format!(" (resumed from byte {})", outcome.resumed_from));
                }
                eprintln!("{note}");
            });
        }
    }
    total.finish();
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_templates() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("8m"), Ok(8 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(indicatif::ProgressStyle::with_template(FILE_TEMPLATE).is_ok());
        assert!(indicatif::ProgressStyle::with_template(TOTAL_TEMPLATE).is_ok());
    }
}
