//! LAN announcement (SPEC L1): the hub tells the local network where it is, over
//! mDNS/DNS-SD (`_ferry._tcp.local.`, [`mdns`]) and through a UDP broadcast responder for
//! networks that drop multicast ([`broadcast`]). Both advertise the same
//! [`HubRecord`](ferry_proto::discovery::HubRecord); the wire format is in
//! `ferry_proto::discovery`.
//!
//! [`Server::run`](crate::Server::run) starts an [`Announcer`] for the bound address and
//! stops it (mDNS goodbye) on shutdown. Where it announces follows the listen address:
//! - a loopback address (`127.0.0.1`, `::1`): nowhere, whatever the configuration says;
//! - an unspecified address (`0.0.0.0`, `::`): every non-loopback interface;
//! - a specific address: only the interface that holds it, and the broadcast responder
//!   answers only probes from that interface's subnet.

mod broadcast;
#[cfg(feature = "mdns")]
mod mdns;

use std::net::{IpAddr, SocketAddr};

use ferry_proto::discovery::{self, HubRecord};

use crate::config::Config;

/// The WebSocket subprotocols a hub speaks on `/ws`, as advertised.
pub const PROTOCOLS: &[&str] = &["ferry.json"];

/// Where the hub may be announced, derived from its listen address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every non-loopback interface (listening on `0.0.0.0` or `::`); `ipv6` when the
    /// listener also takes IPv6.
    All {
        /// Announce IPv6 addresses too.
        ipv6: bool,
    },
    /// Only the interface holding this address.
    Addr(IpAddr),
}

impl Scope {
    /// The scope for a listener on `listen`; `None` for a loopback address, which is never
    /// announced.
    pub fn of(listen: SocketAddr) -> Option<Scope> {
        let ip = listen.ip();
        if ip.is_loopback() {
            None
        } else if ip.is_unspecified() {
            Some(Scope::All { ipv6: ip.is_ipv6() })
        } else {
            Some(Scope::Addr(ip))
        }
    }
}

/// Check the `[announce]` section (the node name); called by `Server::bind`.
pub fn check_config(config: &Config) -> Result<(), String> {
    match &config.announce.name {
        Some(name) => discovery::check_name(name).map_err(|e| format!("announce.name: {e}")),
        None => Ok(()),
    }
}

/// The node name: `announce.name`, or the host name made into a valid name.
pub fn node_name(config: &Config) -> String {
    if let Some(name) = &config.announce.name {
        return name.clone();
    }
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let mut name: String = raw
        .trim()
        .chars()
        .filter(|c| !c.is_control() && *c != '=' && *c != ',')
        .collect();
    while name.len() > discovery::MAX_NAME_LEN {
        name.pop();
    }
    if name.is_empty() {
        "ferry".to_string()
    } else {
        name
    }
}

/// What this hub advertises for a listener on `port`.
pub fn record(config: &Config, port: u16) -> HubRecord {
    HubRecord {
        name: node_name(config),
        port,
        path: "/ws".to_string(),
        // The hub's listener is plain HTTP; a TLS listener would set this.
        tls: false,
        version: env!("CARGO_PKG_VERSION").to_string(),
        protocols: PROTOCOLS.iter().map(|p| p.to_string()).collect(),
    }
}

/// A running announcement; dropping it withdraws it (mDNS goodbye, responder stopped).
pub struct Announcer {
    record: HubRecord,
    scope: Scope,
    #[cfg(feature = "mdns")]
    mdns: Option<mdns::MdnsAnnouncer>,
    broadcast: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer")
            .field("record", &self.record)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl Announcer {
    /// Start announcing a listener bound to `local` as configured; `None` when
    /// announcing is off, the listener is loopback-only, or no method could start (each
    /// failure is logged: the hub serves on without being announced). Needs a tokio
    /// runtime.
    pub fn start(config: &Config, local: SocketAddr) -> Option<Announcer> {
        let settings = &config.announce;
        if settings.enabled == Some(false) {
            tracing::info!("LAN announcement off");
            return None;
        }
        let Some(scope) = Scope::of(local) else {
            if settings.enabled == Some(true) {
                tracing::warn!(
                    %local,
                    "not announcing: the hub listens on a loopback address only; use --listen 0.0.0.0:PORT to be found on the network"
                );
            }
            return None;
        };
        let record = record(config, local.port());
        let mut announcer = Announcer {
            record,
            scope,
            #[cfg(feature = "mdns")]
            mdns: None,
            broadcast: None,
        };
        #[cfg(feature = "mdns")]
        if settings.mdns {
            match mdns::MdnsAnnouncer::start(&announcer.record, scope) {
                Ok(m) => announcer.mdns = Some(m),
                Err(error) => tracing::warn!(%error, "mDNS announcement failed to start"),
            }
        }
        if settings.broadcast && !matches!(scope, Scope::Addr(IpAddr::V6(_))) {
            match broadcast::start(
                &announcer.record,
                scope,
                settings.broadcast_port,
                settings.broadcast_rate_per_ip,
            ) {
                Ok(task) => announcer.broadcast = Some(task),
                Err(error) => tracing::warn!(
                    %error,
                    port = settings.broadcast_port,
                    "broadcast responder failed to start"
                ),
            }
        }
        if !announcer.is_announcing() {
            return None;
        }
        tracing::info!(
            name = %announcer.record.name,
            port = announcer.record.port,
            mdns = announcer.mdns_on(),
            broadcast_port = announcer.broadcast.as_ref().map(|_| settings.broadcast_port),
            "announcing the hub on the local network"
        );
        Some(announcer)
    }

    fn mdns_on(&self) -> bool {
        #[cfg(feature = "mdns")]
        {
            self.mdns.is_some()
        }
        #[cfg(not(feature = "mdns"))]
        {
            false
        }
    }

    fn is_announcing(&self) -> bool {
        self.mdns_on() || self.broadcast.is_some()
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        if let Some(task) = self.broadcast.take() {
            task.abort();
        }
        // The mDNS part withdraws itself (goodbye packets) in its own Drop.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_listeners_have_no_scope() {
        assert_eq!(Scope::of("127.0.0.1:8080".parse().expect("addr")), None);
        assert_eq!(Scope::of("[::1]:8080".parse().expect("addr")), None);
        assert_eq!(
            Scope::of("0.0.0.0:1".parse().expect("addr")),
            Some(Scope::All { ipv6: false })
        );
        assert_eq!(
            Scope::of("10.1.2.3:1".parse().expect("addr")),
            Some(Scope::Addr("10.1.2.3".parse().expect("ip")))
        );
    }

    #[test]
    fn node_name_defaults_to_a_valid_name() {
        let config = Config::default();
        assert!(discovery::check_name(&node_name(&config)).is_ok());
    }
}
