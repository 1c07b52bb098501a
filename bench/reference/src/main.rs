//! `ferry-bench-reference`: the near-limit reference for the ferry benchmarks.
//!
//! A bare tokio-tungstenite server that speaks the benchmarks' `plain` protocol, the
//! same as every peer server in `bench/peers/`:
//!
//! - `/echo`: every text or binary message is sent back to its sender.
//! - any other path: every text or binary message is sent to every *other* client.
//!
//! It is written the way a careful engineer would write it without a framework: one task
//! per connection, small buffers (4 KiB read buffer, like the hub), the message bytes
//! shared (not copied) between receivers, and queued frames written in one flush. It has
//! no auth, no channels, no history and no limits: what it costs is close to the least a
//! tokio-tungstenite server can cost.
//!
//! Usage: `ferry-bench-reference [--listen 127.0.0.1:0]`; prints
//! `ferry-bench-reference listening on http://ADDR` on stdout once bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Everyone connected to the broadcast path, by connection id.
#[derive(Default)]
struct Registry {
    clients: Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>,
    next_id: AtomicU64,
}

impl Registry {
    fn add(&self, tx: mpsc::UnboundedSender<Message>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, tx);
        id
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn broadcast(&self, from: u64, message: &Message) {
        for (id, tx) in self.lock().iter() {
            if *id != from {
                // The receiver may be gone; its task removes it.
                let _ = tx.send(message.clone());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<Message>>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

async fn serve(stream: TcpStream, registry: Arc<Registry>) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    // The signature is tungstenite's handshake callback's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config())).await
    else {
        return;
    };
    if path == "/echo" {
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = registry.add(tx);
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(m)) if m.is_text() || m.is_binary() => registry.broadcast(id, &m),
                Some(Ok(_)) => {}
                _ => break,
            },
            Some(first) = rx.recv() => {
                let mut result = ws.feed(first).await;
                while let (Ok(()), Ok(next)) = (&result, rx.try_recv()) {
                    result = ws.feed(next).await;
                }
                if result.is_err() || ws.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    registry.remove(id);
}

fn listen_address() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().ok_or("--listen needs an address")?;
                listen = value
                    .parse()
                    .map_err(|e| format!("--listen {value}: {e}"))?;
            }
            "-h" | "--help" => {
                println!("usage: ferry-bench-reference [--listen 127.0.0.1:0]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`; try --help")),
        }
    }
    Ok(listen)
}

#[tokio::main]
async fn main() {
    let listen = match listen_address() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("ferry-bench-reference listening on http://{addr}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
    let registry = Arc::new(Registry::default());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, registry.clone()));
            }
            // Out of file descriptors and the like: keep serving the connections we have.
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
