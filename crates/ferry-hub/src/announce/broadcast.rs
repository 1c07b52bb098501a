//! The UDP broadcast responder: the fallback for networks that drop multicast. It answers
//! a version-1 probe (`ferry_proto::discovery`) with the same fields as the TXT record,
//! never with more bytes than the probe carried, and at most
//! `announce.broadcast_rate_per_ip` times a second per source (50 in total): a spoofed
//! source cannot use it to amplify or flood.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;

use ferry_proto::discovery::{self, HubRecord};
use governor::{Quota, RateLimiter};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::Scope;

/// Replies per second from one responder, all sources together.
const GLOBAL_RATE: u32 = 50;

/// Keyed limiter entries kept before idle ones are dropped.
const MAX_TRACKED_SOURCES: usize = 4096;

/// Which sources may be answered: everyone, or one IPv4 subnet.
#[derive(Debug, Clone, Copy)]
enum Allowed {
    Any,
    Subnet { network: u32, mask: u32 },
}

impl Allowed {
    fn permits(self, source: IpAddr) -> bool {
        match (self, source) {
            (Allowed::Any, _) => true,
            (Allowed::Subnet { network, mask }, IpAddr::V4(v4)) => u32::from(v4) & mask == network,
            (Allowed::Subnet { .. }, IpAddr::V6(_)) => false,
        }
    }
}

/// The subnet of the interface holding `ip`; `/32` (only the host itself) when no
/// interface holds it.
fn subnet_of(ip: Ipv4Addr) -> Allowed {
    let mask = if_addrs::get_if_addrs()
        .ok()
        .into_iter()
        .flatten()
        .find_map(|iface| match iface.addr {
            if_addrs::IfAddr::V4(v4) if v4.ip == ip => Some(u32::from(v4.netmask)),
            _ => None,
        })
        .unwrap_or(u32::MAX);
    Allowed::Subnet {
        network: u32::from(ip) & mask,
        mask,
    }
}

fn bind(port: u16) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Several hubs on one host each answer: a broadcast datagram reaches every socket
    // bound to the port with SO_REUSEADDR.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    UdpSocket::from_std(socket.into())
}

/// Bind the responder on `port` and answer probes in a task until it is aborted.
pub(super) fn start(
    record: &HubRecord,
    scope: Scope,
    port: u16,
    rate_per_ip: u32,
) -> std::io::Result<JoinHandle<()>> {
    let socket = bind(port)?;
    let allowed = match scope {
        Scope::Addr(IpAddr::V4(ip)) => subnet_of(ip),
        _ => Allowed::Any,
    };
    let reply = record.encode_reply();
    let rate = NonZeroU32::new(rate_per_ip).unwrap_or(NonZeroU32::MIN);
    let per_source = RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(rate.saturating_mul(NonZeroU32::MIN.saturating_add(1))),
    );
    let global = RateLimiter::direct(Quota::per_second(
        NonZeroU32::new(GLOBAL_RATE).unwrap_or(NonZeroU32::MIN),
    ));
    Ok(tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let (len, from) = match socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(error) => {
                    // ICMP errors from earlier replies surface here on some systems.
                    tracing::debug!(%error, "broadcast responder receive");
                    continue;
                }
            };
            let Some(probe) = buf.get(..len) else {
                continue;
            };
            if !discovery::is_request(probe) || !allowed.permits(from.ip()) {
                continue;
            }
            if per_source.len() > MAX_TRACKED_SOURCES {
                per_source.retain_recent();
            }
            if per_source.check_key(&from.ip()).is_err() || global.check().is_err() {
                continue;
            }
            if reply.len() <= len
                && let Err(error) = socket.send_to(&reply, from).await
            {
                tracing::debug!(%error, %from, "broadcast reply");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_filter() {
        let allowed = Allowed::Subnet {
            network: u32::from(Ipv4Addr::new(10, 77, 0, 0)),
            mask: 0xffff_ff00,
        };
        assert!(allowed.permits("10.77.0.9".parse().expect("ip")));
        assert!(!allowed.permits("10.78.0.9".parse().expect("ip")));
        assert!(!allowed.permits("::1".parse().expect("ip")));
        assert!(Allowed::Any.permits("192.0.2.1".parse().expect("ip")));
    }
}
