//! `ferry tcp` and `ferry udp`: raw sockets from the terminal, websocat/socat style, with
//! optional length-prefixed framing (`ferry_client::framing`).

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use ferry_client::framing::{DEFAULT_MAX_FRAME, Encoding, FrameCodec};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::codec::{Framed, FramedRead, FramedWrite};

/// Examples shown under `ferry tcp --help`.
pub const TCP_HELP: &str = "\
Examples:
  ferry tcp listen 7000 --echo                 # echo server on 127.0.0.1:7000
  ferry tcp connect 127.0.0.1:7000             # stdin → socket, socket → stdout
  ferry tcp listen 7000 --echo --framed msgpack
  echo '{\"hello\":1}' | ferry tcp connect 127.0.0.1:7000 --framed msgpack

With --framed, each frame is a u32 big-endian length and a JSON or MessagePack payload;
`connect` reads one JSON value per stdin line and prints each frame received as a JSON line.
The listening address is printed on stderr: `ferry tcp listening on ADDR`.";

/// Examples shown under `ferry udp --help`.
pub const UDP_HELP: &str = "\
Examples:
  ferry udp listen 9000 --echo
  ferry udp send 127.0.0.1:9000 hello --wait-reply 1000
  printf 'a\\nb\\n' | ferry udp send 127.0.0.1:9000   # one datagram per line";

/// `ferry tcp` subcommands.
#[derive(Subcommand)]
pub enum TcpCommand {
    /// Accept TCP connections on PORT.
    Listen(TcpListenArgs),
    /// Connect to HOST:PORT and join it to stdin/stdout.
    Connect(TcpConnectArgs),
}

/// `ferry tcp listen`.
#[derive(Args)]
pub struct TcpListenArgs {
    /// Port (0 picks a free one).
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Echo every connection's bytes (or frames) back, serving connections concurrently.
    /// Without it, one connection at a time is joined to stdin/stdout.
    #[arg(long)]
    echo: bool,
    /// Length-prefixed frames with json or msgpack payloads.
    #[arg(long, value_name = "ENCODING")]
    framed: Option<Encoding>,
    /// Largest frame payload, bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME)]
    max_frame: usize,
}

/// `ferry tcp connect`.
#[derive(Args)]
pub struct TcpConnectArgs {
    /// HOST:PORT.
    address: String,
    /// Length-prefixed frames with json or msgpack payloads.
    #[arg(long, value_name = "ENCODING")]
    framed: Option<Encoding>,
    /// Largest frame payload, bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME)]
    max_frame: usize,
}

/// `ferry udp` subcommands.
#[derive(Subcommand)]
pub enum UdpCommand {
    /// Print datagrams received on PORT, one per line.
    Listen(UdpListenArgs),
    /// Send MESSAGE (or each stdin line) as a datagram.
    Send(UdpSendArgs),
}

/// `ferry udp listen`.
#[derive(Args)]
pub struct UdpListenArgs {
    /// Port (0 picks a free one).
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Send every datagram back to its sender.
    #[arg(long)]
    echo: bool,
    /// Exit after this many datagrams.
    #[arg(long)]
    count: Option<u64>,
}

/// `ferry udp send`.
#[derive(Args)]
pub struct UdpSendArgs {
    /// HOST:PORT.
    address: String,
    /// The message; without it, each stdin line is one datagram.
    message: Option<String>,
    /// Wait this many ms for a reply to each datagram and print it.
    #[arg(long, value_name = "MS")]
    wait_reply: Option<u64>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Run a `ferry tcp` subcommand.
pub fn tcp(cmd: TcpCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        match cmd {
            TcpCommand::Listen(a) => tcp_listen(a).await,
            TcpCommand::Connect(a) => tcp_connect(a).await,
        }
    })
}

/// Run a `ferry udp` subcommand.
pub fn udp(cmd: UdpCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        match cmd {
            UdpCommand::Listen(a) => udp_listen(a).await,
            UdpCommand::Send(a) => udp_send(a).await,
        }
    })
}

/// The bound socket, or (having said why on stderr) the usage exit code.
fn bound<T>(result: std::io::Result<T>, addr: SocketAddr) -> Result<T, ExitCode> {
    result.map_err(|e| {
        eprintln!("error: binding {addr}: {e}");
        ExitCode::from(crate::exit::USAGE)
    })
}

async fn tcp_listen(args: TcpListenArgs) -> anyhow::Result<ExitCode> {
    let addr = SocketAddr::new(args.host, args.port);
    let listener = match bound(TcpListener::bind(addr).await, addr) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    eprintln!("ferry tcp listening on {}", listener.local_addr()?);
    loop {
        let (stream, peer) = tokio::select! {
            a = listener.accept() => a.context("accepting")?,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::from(crate::exit::INTERRUPTED)),
        };
        let _ = stream.set_nodelay(true);
        if args.echo {
            let (framed, max) = (args.framed, args.max_frame);
            tokio::spawn(async move {
                let result = match framed {
                    Some(enc) => echo_frames(stream, enc, max).await,
                    None => echo_bytes(stream).await,
                };
                if let Err(e) = result {
                    eprintln!("{peer}: {e:#}");
                }
            });
        } else {
            eprintln!("connection from {peer}");
            if let Err(e) = join_stdio(stream, args.framed, args.max_frame).await {
                eprintln!("{peer}: {e:#}");
            }
            eprintln!("{peer} closed");
        }
    }
}

async fn echo_bytes(mut stream: TcpStream) -> anyhow::Result<()> {
    let (mut r, mut w) = stream.split();
    tokio::io::copy(&mut r, &mut w).await?;
    w.shutdown().await?;
    Ok(())
}

/// Echo frames, decoding each (so a malformed or oversized frame ends the connection with
/// a message instead of being reflected).
async fn echo_frames(stream: TcpStream, enc: Encoding, max: usize) -> anyhow::Result<()> {
    let mut framed = Framed::new(stream, FrameCodec::<Value>::with_max_frame(enc, max));
    while let Some(frame) = framed.next().await {
        framed.send(frame?).await?;
    }
    Ok(())
}

async fn tcp_connect(args: TcpConnectArgs) -> anyhow::Result<ExitCode> {
    let stream = match TcpStream::connect(&args.address).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: connecting to {}: {e}", args.address);
            return Ok(ExitCode::from(crate::exit::FAILED));
        }
    };
    let _ = stream.set_nodelay(true);
    join_stdio(stream, args.framed, args.max_frame).await?;
    Ok(ExitCode::SUCCESS)
}

/// stdin → socket and socket → stdout until the peer closes; stdin's end half-closes the
/// socket (the peer's answers still arrive).
async fn join_stdio(stream: TcpStream, framed: Option<Encoding>, max: usize) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut stdout = tokio::io::stdout();
    let outbound = async move {
        let mut stdin = tokio::io::stdin();
        match framed {
            None => {
                tokio::io::copy(&mut stdin, &mut write).await?;
            }
            Some(enc) => {
                let mut sink =
                    FramedWrite::new(&mut write, FrameCodec::<Value>::with_max_frame(enc, max));
                let mut lines = BufReader::new(stdin).lines();
                while let Some(line) = lines.next_line().await? {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let value: Value = serde_json::from_str(&line)
                        .with_context(|| format!("stdin line is not JSON: {line}"))?;
                    sink.send(value).await?;
                }
            }
        }
        write.shutdown().await?;
        anyhow::Ok(())
    };
    let inbound = async move {
        match framed {
            None => {
                let mut read = read;
                tokio::io::copy(&mut read, &mut stdout).await?;
            }
            Some(enc) => {
                let mut frames =
                    FramedRead::new(read, FrameCodec::<Value>::with_max_frame(enc, max));
                while let Some(frame) = frames.next().await {
                    let line = format!("{}\n", frame?);
                    stdout.write_all(line.as_bytes()).await?;
                }
            }
        }
        stdout.flush().await?;
        anyhow::Ok(())
    };
    // The peer closing ends the session even if stdin stays open; stdin ending does not.
    tokio::pin!(outbound, inbound);
    let mut sent_all = false;
    loop {
        tokio::select! {
            r = &mut inbound => return r,
            r = &mut outbound, if !sent_all => {
                r?;
                sent_all = true;
            }
        }
    }
}

async fn udp_listen(args: UdpListenArgs) -> anyhow::Result<ExitCode> {
    let addr = SocketAddr::new(args.host, args.port);
    let socket = match bound(UdpSocket::bind(addr).await, addr) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    eprintln!("ferry udp listening on {}", socket.local_addr()?);
    let mut buf = vec![0u8; 65_536];
    let mut seen = 0u64;
    let mut stdout = tokio::io::stdout();
    while args.count.is_none_or(|c| seen < c) {
        let (n, from) = socket.recv_from(&mut buf).await.context("receiving")?;
        seen += 1;
        let text = String::from_utf8_lossy(&buf[..n]);
        stdout
            .write_all(format!("{}\n", text.trim_end_matches('\n')).as_bytes())
            .await?;
        stdout.flush().await?;
        if args.echo {
            socket.send_to(&buf[..n], from).await.context("echoing")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn udp_send(args: UdpSendArgs) -> anyhow::Result<ExitCode> {
    let target = match tokio::net::lookup_host(&args.address)
        .await
        .map(|mut a| a.next())
    {
        Ok(Some(a)) => a,
        _ => {
            eprintln!("error: {} is not a HOST:PORT that resolves", args.address);
            return Ok(ExitCode::from(crate::exit::USAGE));
        }
    };
    let local: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .context("binding a UDP socket")?;
    socket.connect(target).await.context("connecting")?;
    let mut messages: Vec<String> = Vec::new();
    if let Some(m) = args.message {
        messages.push(m);
    } else {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await? {
            messages.push(line);
        }
    }
    let mut buf = vec![0u8; 65_536];
    for m in messages {
        socket.send(m.as_bytes()).await.context("sending")?;
        if let Some(ms) = args.wait_reply {
            match tokio::time::timeout(std::time::Duration::from_millis(ms), socket.recv(&mut buf))
                .await
            {
                Ok(Ok(n)) => println!("{}", String::from_utf8_lossy(&buf[..n])),
                Ok(Err(e)) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(crate::exit::FAILED));
                }
                Err(_) => {
                    eprintln!("error: no reply within {ms} ms");
                    return Ok(ExitCode::from(crate::exit::TIMEOUT));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
