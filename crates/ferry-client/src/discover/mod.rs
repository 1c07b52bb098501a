//! LAN discovery (SPEC L2, L3): find hubs on the local network without an address, and
//! connect to them by name.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_client::discover::DiscoverError> {
//! use std::time::Duration;
//!
//! // Every hub that answers within 3 s, as it answers.
//! let mut found = ferry_client::discover()?;
//! while let Some(hub) = found.next().await {
//!     println!("{} at {} (after {:?})", hub.name, hub.url(), hub.elapsed);
//! }
//! // Or only the first hub called `kitchen`, waiting at most one second.
//! let hub = ferry_client::discover::Discovery::builder()
//!     .name("kitchen")
//!     .timeout(Duration::from_secs(1))
//!     .start()?
//!     .next()
//!     .await;
//! # let _ = hub; Ok(()) }
//! ```
//!
//! Two methods run in parallel and their answers are merged by node name:
//! - mDNS/DNS-SD (`mdns-sd`, default feature `mdns`): browse `_ferry._tcp.local.`;
//! - a UDP broadcast probe to every IPv4 interface's broadcast address on port 47471,
//!   repeated a few times while waiting (for networks that drop multicast).
//!
//! `WebSocket` and `HubClient` accept a discovery target in place of a URL:
//! `ferry://_any` (the first hub that answers) or `ferry://NAME` (the hub with that node
//! name), optionally with a path (`ferry://NAME/test/echo`; default: the announced
//! WebSocket path). The last address that worked for each target is remembered in a
//! small state file (see [`DiscoveryOptions`]) and tried first on the next start; if it
//! fails the client discovers again, and so does the reconnect loop after
//! [`DiscoveryOptions::rediscover_after`] failed attempts in a row.

mod broadcast;
#[cfg(feature = "mdns")]
mod mdns;
mod memory;
pub(crate) mod target;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferry_proto::discovery::{DEFAULT_BROADCAST_PORT, HubRecord};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use memory::default_state_path;
pub use target::Target;

/// How a hub's answer arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// mDNS/DNS-SD.
    Mdns,
    /// The UDP broadcast probe.
    Broadcast,
}

/// A hub that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveredHub {
    /// The node name.
    pub name: String,
    /// Its addresses, in the order they were learned.
    pub addresses: Vec<IpAddr>,
    /// The TCP port of its HTTP/WebSocket listener.
    pub port: u16,
    /// Whether it speaks TLS (`wss://`).
    pub tls: bool,
    /// Its version.
    pub version: String,
    /// Its WebSocket path (`/ws`).
    pub path: String,
    /// The WebSocket subprotocols it speaks.
    pub protocols: Vec<String>,
    /// How its answers arrived.
    pub via: Vec<Via>,
    /// Time from the start of discovery to its first answer.
    #[serde(serialize_with = "as_millis", rename = "elapsed_ms")]
    pub elapsed: Duration,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl DiscoveredHub {
    /// The WebSocket URL of its first address and announced path, e.g.
    /// `ws://10.0.0.5:8080/ws`.
    pub fn url(&self) -> String {
        self.urls_with_path(&self.path)
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// One WebSocket URL per address, with `path` (and query) instead of the announced
    /// path.
    pub fn urls_with_path(&self, path: &str) -> Vec<String> {
        let scheme = if self.tls { "wss" } else { "ws" };
        self.addresses
            .iter()
            .map(|ip| match ip {
                IpAddr::V4(v4) => format!("{scheme}://{v4}:{}{path}", self.port),
                IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{}{path}", self.port),
            })
            .collect()
    }

    /// Whether this hub is the one `name` asks for (case-insensitive).
    pub fn is_named(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// Neither mDNS nor the broadcast probe could start (no sockets, or both disabled).
    #[error("discovery could not start: {0}")]
    Start(String),
}

/// Options of a discovery run. Defaults: 3 s, mDNS and broadcast, any name, port 47471.
#[derive(Debug, Clone)]
pub struct DiscoveryBuilder {
    timeout: Duration,
    name: Option<String>,
    mdns: bool,
    broadcast: bool,
    broadcast_port: u16,
}

impl Default for DiscoveryBuilder {
    fn default() -> Self {
        DiscoveryBuilder {
            timeout: Duration::from_secs(3),
            name: None,
            mdns: cfg!(feature = "mdns"),
            broadcast: true,
            broadcast_port: DEFAULT_BROADCAST_PORT,
        }
    }
}

impl DiscoveryBuilder {
    /// How long to wait for answers; the stream ends then. Default 3 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Only report the hub with this node name (case-insensitive). Default: every hub.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// Browse with mDNS/DNS-SD. Default true (false without the `mdns` feature).
    pub fn mdns(mut self, on: bool) -> Self {
        self.mdns = on && cfg!(feature = "mdns");
        self
    }

    /// Send UDP broadcast probes. Default true.
    pub fn broadcast(mut self, on: bool) -> Self {
        self.broadcast = on;
        self
    }

    /// The port broadcast probes go to. Default 47471.
    pub fn broadcast_port(mut self, port: u16) -> Self {
        self.broadcast_port = port;
        self
    }

    /// Start both methods; answers arrive through [`Discovery::next`]. Needs a tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// [`DiscoverError::Start`] when no enabled method could start (each one's reason is
    /// in the message); one method failing alone is logged and the other runs.
    pub fn start(self) -> Result<Discovery, DiscoverError> {
        let started = Instant::now();
        let (tx, rx) = mpsc::channel(64);
        let mut tasks = Vec::new();
        let mut problems = Vec::new();
        #[cfg(feature = "mdns")]
        if self.mdns {
            match mdns::browse(tx.clone()) {
                Ok(task) => tasks.push(task),
                Err(e) => problems.push(format!("mDNS: {e}")),
            }
        }
        if self.broadcast {
            match broadcast::probe(self.broadcast_port, self.timeout, tx.clone()) {
                Ok(task) => tasks.push(task),
                Err(e) => problems.push(format!("broadcast: {e}")),
            }
        }
        if tasks.is_empty() {
            if problems.is_empty() {
                problems.push("both mDNS and broadcast are disabled".into());
            }
            return Err(DiscoverError::Start(problems.join("; ")));
        }
        for problem in &problems {
            tracing::warn!(%problem, "a discovery method failed to start");
        }
        Ok(Discovery {
            rx,
            tasks,
            deadline: started + self.timeout,
            started,
            name: self.name,
            seen: HashMap::new(),
        })
    }
}

/// One answer from one method, before merging.
#[derive(Debug)]
pub(crate) struct Answer {
    pub record: HubRecord,
    pub addresses: Vec<IpAddr>,
    pub via: Via,
}

/// A discovery run: hubs as they answer, until the timeout. Dropping it stops the run.
pub struct Discovery {
    rx: mpsc::Receiver<Answer>,
    tasks: Vec<JoinHandle<()>>,
    deadline: Instant,
    started: Instant,
    name: Option<String>,
    seen: HashMap<String, DiscoveredHub>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("name", &self.name)
            .field("found", &self.seen.len())
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Options for a run.
    pub fn builder() -> DiscoveryBuilder {
        DiscoveryBuilder::default()
    }

    /// The next hub that answered, or `None` when the timeout passed. A hub is reported
    /// when it first answers, and again (with the merged addresses and methods) when a
    /// later answer adds an address.
    pub async fn next(&mut self) -> Option<DiscoveredHub> {
        loop {
            let answer = match tokio::time::timeout_at(self.deadline.into(), self.rx.recv()).await {
                Ok(Some(answer)) => answer,
                Ok(None) | Err(_) => {
                    self.stop();
                    return None;
                }
            };
            if let Some(hub) = self.merge(answer) {
                return Some(hub);
            }
        }
    }

    /// Every hub that answered before the timeout, merged by name, in order of first
    /// answer.
    pub async fn collect(mut self) -> Vec<DiscoveredHub> {
        while self.next().await.is_some() {}
        self.found()
    }

    /// What has answered so far, merged by name (all addresses, all methods), in order of
    /// first answer.
    pub fn found(&self) -> Vec<DiscoveredHub> {
        let mut hubs: Vec<DiscoveredHub> = self.seen.values().cloned().collect();
        hubs.sort_by_key(|h| h.elapsed);
        hubs
    }

    /// The run as a `Stream` of [`DiscoveredHub`].
    pub fn into_stream(self) -> impl futures_util::Stream<Item = DiscoveredHub> + Send {
        futures_util::stream::unfold(self, |mut d| async move {
            let hub = d.next().await?;
            Some((hub, d))
        })
    }

    fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }

    /// Fold an answer into what is known; the hub to report if it is new or changed.
    fn merge(&mut self, answer: Answer) -> Option<DiscoveredHub> {
        let Answer {
            record,
            addresses,
            via,
        } = answer;
        if self
            .name
            .as_deref()
            .is_some_and(|n| !record.name.eq_ignore_ascii_case(n))
        {
            return None;
        }
        let key = record.name.to_lowercase();
        match self.seen.get_mut(&key) {
            Some(known) => {
                let before = known.addresses.len();
                for ip in addresses {
                    if !known.addresses.contains(&ip) {
                        known.addresses.push(ip);
                    }
                }
                if !known.via.contains(&via) {
                    known.via.push(via);
                }
                (known.addresses.len() > before).then(|| known.clone())
            }
            None => {
                if addresses.is_empty() {
                    return None;
                }
                let hub = DiscoveredHub {
                    name: record.name,
                    addresses,
                    port: record.port,
                    tls: record.tls,
                    version: record.version,
                    path: record.path,
                    protocols: record.protocols,
                    via: vec![via],
                    elapsed: self.started.elapsed(),
                };
                self.seen.insert(key, hub.clone());
                Some(hub)
            }
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Discover hubs with the default options (3 s, mDNS and broadcast): hubs as they answer.
///
/// # Errors
///
/// As [`DiscoveryBuilder::start`].
pub fn discover() -> Result<Discovery, DiscoverError> {
    Discovery::builder().start()
}

/// How a `WebSocket` or `HubClient` given a `ferry://` target finds and remembers its hub.
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// The discovery run used to find the hub (its timeout bounds one lookup). Default:
    /// [`Discovery::builder`] (3 s, mDNS and broadcast).
    pub discovery: DiscoveryBuilder,
    /// Where the last working address per target is stored; `None` keeps it in memory
    /// only. Default: [`default_state_path`] (`$XDG_DATA_HOME/ferry/discovery.json` or
    /// the platform's data directory).
    pub state_file: Option<PathBuf>,
    /// Failed connection attempts in a row at the remembered address before the
    /// reconnect loop discovers again (the hub may have moved). Default 3. At start, a
    /// remembered address that fails is followed by discovery at once.
    pub rediscover_after: u32,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            discovery: DiscoveryBuilder::default(),
            state_file: default_state_path(),
            rediscover_after: 3,
        }
    }
}
