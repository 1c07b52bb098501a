//! The UDP broadcast probe: a version-1 request to every IPv4 interface's broadcast
//! address (and 255.255.255.255 where a route allows), repeated while waiting; every
//! valid reply is an answer from the address it came from.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ferry_proto::discovery::{self, HubRecord};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Answer, Via};

/// When probes go out, from the start (UDP may drop one; hubs rate-limit per source).
const SCHEDULE_MS: &[u64] = &[0, 250, 750, 1750, 3750, 7750];

/// Where probes go: each non-loopback IPv4 interface's broadcast address, plus the
/// limited broadcast address.
fn destinations(port: u16) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = if_addrs::get_if_addrs()
        .ok()
        .into_iter()
        .flatten()
        .filter(|iface| !iface.is_loopback())
        .filter_map(|iface| match iface.addr {
            if_addrs::IfAddr::V4(v4) => {
                // Computed, not read: an address added without `brd` reports its own
                // address (or none) as the broadcast address.
                let broadcast = Ipv4Addr::from(u32::from(v4.ip) | !u32::from(v4.netmask));
                (broadcast != v4.ip).then_some(SocketAddr::from((broadcast, port)))
            }
            if_addrs::IfAddr::V6(_) => None,
        })
        .collect();
    out.push(SocketAddr::from((Ipv4Addr::BROADCAST, port)));
    out.dedup();
    out
}

fn bind() -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_broadcast(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
    UdpSocket::from_std(socket.into())
}

/// Start probing `port` for up to `timeout`; replies go to `tx`.
pub(super) fn probe(
    port: u16,
    timeout: Duration,
    tx: mpsc::Sender<Answer>,
) -> std::io::Result<JoinHandle<()>> {
    let socket = bind()?;
    let request = discovery::encode_request();
    Ok(tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let schedule: Vec<Duration> = SCHEDULE_MS
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .filter(|at| *at < timeout)
            .collect();
        let mut sent = 0;
        let mut buf = vec![0u8; 1500];
        loop {
            let next_send = schedule.get(sent).map(|at| start + *at);
            tokio::select! {
                _ = async {
                    match next_send {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    sent += 1;
                    for to in destinations(port) {
                        // The limited broadcast has no route on a host without a default
                        // route; the directed broadcasts still go out.
                        if let Err(error) = socket.send_to(&request, to).await {
                            tracing::trace!(%error, %to, "broadcast probe");
                        }
                    }
                }
                received = socket.recv_from(&mut buf) => {
                    let (len, from) = match received {
                        Ok(r) => r,
                        Err(error) => {
                            tracing::trace!(%error, "broadcast probe receive");
                            continue;
                        }
                    };
                    let Some(datagram) = buf.get(..len) else { continue };
                    match HubRecord::parse_reply(datagram) {
                        Ok(record) => {
                            let answer = Answer {
                                record,
                                addresses: vec![from.ip()],
                                via: Via::Broadcast,
                            };
                            if tx.send(answer).await.is_err() {
                                break;
                            }
                        }
                        Err(error) => tracing::debug!(%error, %from, "ignoring a broadcast reply"),
                    }
                }
            }
        }
    }))
}
