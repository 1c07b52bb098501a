//! Browsing `_ferry._tcp.local.` with `mdns-sd` (its own daemon thread; events are read
//! asynchronously from its channel).

use ferry_proto::discovery::{HubRecord, SERVICE_TYPE};
use mdns_sd::{ServiceDaemon, ServiceEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Answer, Via};

/// Stops the daemon when the browse task ends or is aborted.
struct DaemonGuard(ServiceDaemon);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let _ = self.0.shutdown();
    }
}

/// Start browsing; resolved services go to `tx` until the task is aborted.
pub(super) fn browse(tx: mpsc::Sender<Answer>) -> Result<JoinHandle<()>, mdns_sd::Error> {
    let daemon = DaemonGuard(ServiceDaemon::new()?);
    let events = daemon.0.browse(SERVICE_TYPE)?;
    Ok(tokio::spawn(async move {
        let _daemon = daemon;
        while let Ok(event) = events.recv_async().await {
            let ServiceEvent::ServiceResolved(service) = event else {
                continue;
            };
            let txt = service.get_properties();
            let pairs = txt.iter().map(|p| (p.key(), p.val_str()));
            let record = match HubRecord::from_txt(pairs, service.get_port()) {
                Ok(r) => r,
                Err(error) => {
                    tracing::debug!(%error, service = %service.get_fullname(), "ignoring an mDNS answer");
                    continue;
                }
            };
            let mut addresses: Vec<_> = service
                .get_addresses()
                .iter()
                .map(|a| a.to_ip_addr())
                // A link-local IPv6 address needs a scope id a URL cannot carry.
                .filter(|ip| match ip {
                    std::net::IpAddr::V6(v6) => !v6.is_unicast_link_local(),
                    std::net::IpAddr::V4(_) => true,
                })
                .collect();
            // IPv4 first: the common case and what a broadcast answer gives too.
            addresses.sort_by_key(|ip| (ip.is_ipv6(), *ip));
            let answer = Answer {
                record,
                addresses,
                via: Via::Mdns,
            };
            if tx.send(answer).await.is_err() {
                break;
            }
        }
    }))
}
