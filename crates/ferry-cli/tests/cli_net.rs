//! `ferry scan`, `ferry tcp` and `ferry udp` against sockets this test opens on 127.0.0.1.
//! Nothing else is ever probed.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_client::framing::{Encoding, FrameCodec};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::run_to_completion;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio_util::codec::Framed;

const WAIT: Duration = Duration::from_secs(30);

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

/// A listener that accepts and says `banner` first (or nothing).
async fn speaking_listener(banner: Option<&'static str>) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            if let Some(b) = banner {
                let _ = s.write_all(b.as_bytes()).await;
            }
            // Held open until the scanner hangs up.
            tokio::spawn(async move {
                let mut sink = [0u8; 64];
                let _ = s.read(&mut sink).await;
            });
        }
    });
    Ok(port)
}

/// A listener that never accepts, with its accept queue filled: further SYNs are dropped,
/// so a connect gets no answer (what a firewall that drops looks like).
async fn silent_listener() -> anyhow::Result<(u16, TcpListener, Vec<TcpStream>)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let port = socket.local_addr()?.port();
    let listener = socket.listen(0)?;
    let mut held = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => anyhow::bail!("filling the accept queue: {e}"),
            Err(_) => {
                // Queue full: this connect got no answer.
                return Ok((port, listener, held));
            }
        }
    }
    anyhow::bail!("the accept queue never filled")
}

#[tokio::test]
async fn scan_reports_open_closed_and_filtered_ports_in_bounded_time() -> anyhow::Result<()> {
    let with_banner = speaking_listener(Some("SSH-2.0-ferry-test\r\n")).await?;
    let quiet = speaking_listener(None).await?;
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        l.local_addr()?.port()
    };
    let (filtered, _listener, _held) = silent_listener().await?;

    let ports = format!("{with_banner},{quiet},{closed},{filtered}");
    let mut cmd = ferry();
    cmd.args([
        "scan",
        "127.0.0.1",
        "-p",
        &ports,
        "--timeout",
        "400",
        "--json",
    ]);
    let started = Instant::now();
    let out = run_to_completion(cmd, WAIT).await?;
    let took = started.elapsed();
    assert!(out.status.success(), "{}", out.stderr);
    let results = support::json_lines(&out.stdout)?;
    let state = |port: u16| {
        results
            .iter()
            .find(|r| r["port"] == port)
            .map(|r| r["state"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(results.len(), 4, "{}", out.stdout);
    assert_eq!(state(with_banner).as_deref(), Some("open"));
    assert_eq!(state(quiet).as_deref(), Some("open"));
    assert_eq!(state(closed).as_deref(), Some("closed"));
    assert_eq!(state(filtered).as_deref(), Some("filtered"));
    let banner = results.iter().find(|r| r["port"] == with_banner);
    assert_eq!(
        banner.map(|r| r["banner"].clone()),
        Some(json!("SSH-2.0-ferry-test"))
    );
    // Four probes run concurrently: one timeout (400 ms) plus one banner wait (300 ms)
    // bound the scan; 10 s leaves room for a loaded machine, not for a serial scan of
    // minutes.
    assert!(took < Duration::from_secs(10), "scan took {took:?}");

    // The human form lists the open and filtered ports with service names.
    let mut cmd = ferry();
    cmd.args(["scan", "127.0.0.1", "-p", &ports, "--timeout", "400"]);
    let out = run_to_completion(cmd, WAIT).await?;
    assert!(out.stdout.contains("SSH-2.0-ferry-test"), "{}", out.stdout);
    assert!(
        out.stderr.contains("2 open, 1 closed, 1 filtered"),
        "{}",
        out.stderr
    );
    Ok(())
}

#[tokio::test]
async fn scan_stops_at_its_time_limit_and_refuses_targets_beyond_its_limits() -> anyhow::Result<()>
{
    // One filtered port probed with a timeout longer than the whole scan may take.
    let (filtered, _listener, _held) = silent_listener().await?;
    let mut cmd = ferry();
    cmd.args(["scan", "127.0.0.1", "-p", &filtered.to_string()])
        .args(["--timeout", "20000", "--max-time", "1", "--json"]);
    let started = Instant::now();
    let out = run_to_completion(cmd, WAIT).await?;
    assert_eq!(out.status.code(), Some(4), "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(out.stdout.contains("\"unscanned\""), "{}", out.stdout);

    // A network wider than --max-hosts is refused before anything is sent.
    let mut cmd = ferry();
    cmd.args(["scan", "127.0.0.0/8", "-p", "80"]);
    let out = run_to_completion(cmd, WAIT).await?;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("--max-hosts"), "{}", out.stderr);
    Ok(())
}

/// `ferry ARGS` with every stdio piped, killed when dropped.
fn spawn_piped(args: &[&str]) -> std::io::Result<Child> {
    ferry()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

/// Spawn a long-running `ferry` with piped stdio; the address it prints on stderr.
async fn spawn_listening(args: &[&str]) -> anyhow::Result<(Child, String)> {
    let mut child = spawn_piped(args)?;
    let mut err = BufReader::new(child.stderr.take().context("stderr")?);
    let mut line = String::new();
    tokio::time::timeout(WAIT, err.read_line(&mut line)).await??;
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .context("address")?
        .to_string();
    anyhow::ensure!(line.contains("listening on"), "{line}");
    Ok((child, addr))
}

/// Run `ferry ARGS` with `input` on stdin; its stdout.
async fn run_with_stdin(args: &[&str], input: &str) -> anyhow::Result<String> {
    let mut child = spawn_piped(args)?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(input.as_bytes()).await?;
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output()).await??;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test]
async fn tcp_echo_raw_and_framed() -> anyhow::Result<()> {
    let (_server, addr) = spawn_listening(&["tcp", "listen", "0", "--echo"]).await?;
    let out = run_with_stdin(&["tcp", "connect", &addr], "hello\nworld\n").await?;
    assert_eq!(out, "hello\nworld\n");

    for encoding in ["json", "msgpack"] {
        let (_server, addr) =
            spawn_listening(&["tcp", "listen", "0", "--echo", "--framed", encoding]).await?;
        // The CLI's framed client: JSON lines in, frames out, frames back, JSON lines out.
        let input = "{\"n\":1,\"text\":\"hi\"}\n[1,2,3]\n";
        let out = run_with_stdin(&["tcp", "connect", &addr, "--framed", encoding], input).await?;
        let back = support::json_lines(&out)?;
        assert_eq!(back, vec![json!({"n": 1, "text": "hi"}), json!([1, 2, 3])]);

        // The library codec talks to the CLI's server.
        let enc: Encoding = encoding.parse().map_err(anyhow::Error::msg)?;
        let mut framed = Framed::new(
            TcpStream::connect(&addr).await?,
            FrameCodec::<Value>::new(enc),
        );
        framed.send(json!({"seq": 7})).await?;
        let echoed = tokio::time::timeout(WAIT, framed.next())
            .await?
            .context("closed")??;
        assert_eq!(echoed, json!({"seq": 7}));

        // A frame announcing 2 GiB is refused: the server closes the connection.
        let mut raw = TcpStream::connect(&addr).await?;
        raw.write_all(&0x8000_0000u32.to_be_bytes()).await?;
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(WAIT, raw.read(&mut buf))
            .await?
            .unwrap_or(0);
        assert_eq!(n, 0, "connection closed without an answer");
    }
    Ok(())
}

#[tokio::test]
async fn udp_send_and_listen() -> anyhow::Result<()> {
    let (listener, addr) =
        spawn_listening(&["udp", "listen", "0", "--echo", "--count", "2"]).await?;
    let mut cmd = ferry();
    cmd.args(["udp", "send", &addr, "hello", "--wait-reply", "10000"]);
    let out = run_to_completion(cmd, WAIT).await?;
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "hello\n");
    let out = run_with_stdin(&["udp", "send", &addr], "second\n").await?;
    assert_eq!(out, "");
    let done = tokio::time::timeout(WAIT, listener.wait_with_output()).await??;
    assert!(done.status.success());
    assert_eq!(String::from_utf8(done.stdout)?, "hello\nsecond\n");
    Ok(())
}
