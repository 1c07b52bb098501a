//! The mDNS/DNS-SD announcement, with `mdns-sd` (its own daemon thread, no runtime).

use ferry_proto::discovery::{HubRecord, SERVICE_TYPE};
use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};

use super::Scope;

/// A registered `_ferry._tcp.local.` service; dropping it unregisters it (goodbye
/// packets, so browsers forget it at once) and stops the daemon.
pub(super) struct MdnsAnnouncer {
    daemon: ServiceDaemon,
    fullname: String,
}

/// The DNS host label for a node name: lowercase letters, digits and `-`.
fn host_label(name: &str) -> String {
    let label: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        "ferry".to_string()
    } else {
        label.to_string()
    }
}

impl MdnsAnnouncer {
    pub(super) fn start(record: &HubRecord, scope: Scope) -> Result<MdnsAnnouncer, mdns_sd::Error> {
        let daemon = ServiceDaemon::new()?;
        // Interfaces the daemon may use at all: never loopback, and for a specific listen
        // address only the interface that holds it.
        let interfaces = match scope {
            Scope::Addr(ip) => {
                daemon.disable_interface(IfKind::All)?;
                daemon.enable_interface(IfKind::Addr(ip))?;
                vec![IfKind::Addr(ip)]
            }
            Scope::All { ipv6 } => {
                daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
                if ipv6 {
                    vec![IfKind::All]
                } else {
                    daemon.disable_interface(IfKind::IPv6)?;
                    vec![IfKind::IPv4]
                }
            }
        };
        let host = format!("{}.local.", host_label(&record.name));
        let txt = record.txt();
        let mut info = match scope {
            Scope::Addr(ip) => {
                ServiceInfo::new(SERVICE_TYPE, &record.name, &host, ip, record.port, &txt[..])?
            }
            // Addresses follow the interfaces as they come and go.
            Scope::All { .. } => {
                ServiceInfo::new(SERVICE_TYPE, &record.name, &host, "", record.port, &txt[..])?
                    .enable_addr_auto()
            }
        };
        info.set_interfaces(interfaces);
        let fullname = info.get_fullname().to_string();
        daemon.register(info)?;
        Ok(MdnsAnnouncer { daemon, fullname })
    }
}

impl Drop for MdnsAnnouncer {
    fn drop(&mut self) {
        // Commands run in order on the daemon thread: the goodbye goes out before it stops.
        if let Err(error) = self.daemon.unregister(&self.fullname) {
            tracing::debug!(%error, "mDNS unregister");
        }
        if let Err(error) = self.daemon.shutdown() {
            tracing::debug!(%error, "mDNS daemon shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_label;

    #[test]
    fn host_labels_are_dns_safe() {
        assert_eq!(host_label("Kitchen Hub #2"), "kitchen-hub--2");
        assert_eq!(host_label("ÿÿ"), "ferry");
    }
}
