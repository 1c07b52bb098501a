//! A TCP connect scanner (nmap's `-sT`): bounded concurrency, a timeout per probe, a total
//! time limit, service names from a small bundled table and a banner grab where the
//! service speaks first.
//!
//! A [`ScanPlan`] is the complete list of addresses and ports; the scanner connects to
//! nothing else. Plans larger than [`ScanPlan::MAX_PROBES`] are refused, as are networks
//! wider than the host limit the caller passes to [`expand_targets`].

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    /// The connection was accepted.
    Open,
    /// Refused (RST): nothing listens.
    Closed,
    /// No answer within the timeout (dropped SYNs, a full accept queue, a firewall).
    Filtered,
    /// Not probed to the end: the total time limit passed first (a probe cut short by it
    /// proves nothing, so it is not called filtered).
    Unscanned,
}

/// One probed port.
#[derive(Debug, Clone, Serialize)]
pub struct PortResult {
    /// The address.
    pub host: IpAddr,
    /// The port.
    pub port: u16,
    /// What was found.
    pub state: PortState,
    /// The usual service on this port, from the bundled table.
    pub service: Option<&'static str>,
    /// The first line the service sent unprompted (printable ASCII only), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub banner: Option<String>,
}

/// Why a scan could not start.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A target is not `HOST`, `IP` or `IP/PREFIX`, or does not resolve.
    #[error("target {0:?}: {1}")]
    Target(String, String),
    /// A port list is malformed.
    #[error("ports {0:?}: expected N, N-M, a comma list of those, or top100")]
    Ports(String),
    /// The plan is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
}

/// The addresses and ports to probe: the scan's complete target list.
#[derive(Debug, Clone)]
pub struct ScanPlan {
    hosts: Vec<IpAddr>,
    ports: Vec<u16>,
}

impl ScanPlan {
    /// Largest number of probes (hosts × ports) in one scan.
    pub const MAX_PROBES: usize = 1 << 20;

    /// A plan for `hosts` × `ports`.
    pub fn new(hosts: Vec<IpAddr>, ports: Vec<u16>) -> Result<ScanPlan, ScanError> {
        let n = hosts.len().saturating_mul(ports.len());
        if n == 0 {
            return Err(ScanError::TooLarge("nothing to scan".into()));
        }
        if n > Self::MAX_PROBES {
            return Err(ScanError::TooLarge(format!(
                "{n} probes is more than the {} allowed in one scan",
                Self::MAX_PROBES
            )));
        }
        Ok(ScanPlan { hosts, ports })
    }

    /// Number of probes.
    pub fn len(&self) -> usize {
        self.hosts.len() * self.ports.len()
    }

    /// Never true: a plan has at least one probe.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn contains(&self, addr: &SocketAddr) -> bool {
        self.hosts.contains(&addr.ip()) && self.ports.contains(&addr.port())
    }
}

/// Knobs of a scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Probes in flight at once. Default 100.
    pub concurrency: usize,
    /// Time a connect may take before the port counts as filtered. Default 1 s.
    pub timeout: Duration,
    /// How long to wait for a banner on an open port. Default 300 ms.
    pub banner_timeout: Duration,
    /// The whole scan ends after this; probes not started by then are `Unscanned`.
    /// Default 60 s.
    pub max_time: Duration,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            concurrency: 100,
            timeout: Duration::from_secs(1),
            banner_timeout: Duration::from_millis(300),
            max_time: Duration::from_secs(60),
        }
    }
}

/// Expand targets (`HOST`, `IP`, `IP/PREFIX`) into addresses, refusing more than
/// `max_hosts` in all.
pub async fn expand_targets(
    targets: &[String],
    max_hosts: usize,
) -> Result<Vec<IpAddr>, ScanError> {
    let mut out = BTreeSet::new();
    for t in targets {
        if let Some((ip, prefix)) = t.split_once('/') {
            let ip: IpAddr = ip.parse().map_err(|_| {
                ScanError::Target(t.clone(), "a network needs an IP address".into())
            })?;
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            let prefix: u32 = prefix.parse().ok().filter(|p| *p <= bits).ok_or_else(|| {
                ScanError::Target(t.clone(), format!("prefix must be 0..={bits}"))
            })?;
            let size = 1u128.checked_shl(bits - prefix).unwrap_or(u128::MAX);
            if size > max_hosts as u128 || out.len() as u128 + size > max_hosts as u128 {
                return Err(ScanError::TooLarge(format!(
                    "{t} has {size} addresses; the limit is {max_hosts} (--max-hosts)"
                )));
            }
            let base = match ip {
                IpAddr::V4(v4) => u128::from(u32::from(v4)),
                IpAddr::V6(v6) => u128::from(v6),
            };
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (bits - prefix)
            };
            let start = base & mask & if bits == 32 { 0xffff_ffff } else { u128::MAX };
            for i in 0..size {
                let n = start + i;
                out.insert(match ip {
                    IpAddr::V4(_) => IpAddr::from((n as u32).to_be_bytes()),
                    IpAddr::V6(_) => IpAddr::from(n.to_be_bytes()),
                });
            }
        } else if let Ok(ip) = t.parse::<IpAddr>() {
            out.insert(ip);
        } else {
            let addrs = tokio::net::lookup_host((t.as_str(), 0))
                .await
                .map_err(|e| ScanError::Target(t.clone(), e.to_string()))?;
            // The name's first address only: a name is one host.
            let first = addrs
                .map(|a| a.ip())
                .next()
                .ok_or_else(|| ScanError::Target(t.clone(), "no address".into()))?;
            out.insert(first);
        }
        if out.len() > max_hosts {
            return Err(ScanError::TooLarge(format!(
                "more than {max_hosts} hosts (--max-hosts)"
            )));
        }
    }
    Ok(out.into_iter().collect())
}

/// Parse `1-1024`, `22,80,8000-8010` or `top100`.
pub fn parse_ports(spec: &str) -> Result<Vec<u16>, ScanError> {
    if spec == "top100" {
        return Ok(SERVICES.iter().map(|(p, _)| *p).collect());
    }
    let bad = || ScanError::Ports(spec.to_string());
    let mut out = BTreeSet::new();
    for part in spec.split(',').map(str::trim) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u16>(), b.parse::<u16>()),
            None => (part.parse::<u16>(), part.parse::<u16>()),
        };
        let (lo, hi) = (lo.map_err(|_| bad())?, hi.map_err(|_| bad())?);
        if lo == 0 || lo > hi {
            return Err(bad());
        }
        out.extend(lo..=hi);
    }
    Ok(out.into_iter().collect())
}

/// The usual service on `port`, from the bundled table.
pub fn service_name(port: u16) -> Option<&'static str> {
    SERVICES
        .binary_search_by_key(&port, |(p, _)| *p)
        .ok()
        .map(|i| SERVICES[i].1)
}

/// Scan every probe of `plan`; `progress` is called after each. Results are sorted by
/// host, then port.
pub async fn scan(
    plan: &ScanPlan,
    options: &ScanOptions,
    progress: impl Fn(&PortResult) + Send + Sync + 'static,
) -> Vec<PortResult> {
    let deadline = Instant::now() + options.max_time;
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let progress = Arc::new(progress);
    let mut tasks = tokio::task::JoinSet::new();
    let mut results = Vec::with_capacity(plan.len());
    for host in &plan.hosts {
        for port in &plan.ports {
            let addr = SocketAddr::new(*host, *port);
            // The one place that connects, and only to what the plan holds.
            if !plan.contains(&addr) {
                continue;
            }
            let permit = tokio::select! {
                p = Arc::clone(&permits).acquire_owned() => p.ok(),
                _ = tokio::time::sleep_until(deadline.into()) => None,
            };
            let Some(permit) = permit else {
                results.push(unscanned(addr));
                continue;
            };
            let (options, progress) = (options.clone(), Arc::clone(&progress));
            tasks.spawn(async move {
                let r = probe(addr, &options, deadline).await;
                progress(&r);
                drop(permit);
                r
            });
            // Reap finished probes as we go, so memory stays bounded by concurrency.
            while let Some(Ok(r)) = tasks.try_join_next() {
                results.push(r);
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok(r) = joined {
            results.push(r);
        }
    }
    results.sort_by_key(|r| (r.host, r.port));
    results
}

fn unscanned(addr: SocketAddr) -> PortResult {
    PortResult {
        host: addr.ip(),
        port: addr.port(),
        state: PortState::Unscanned,
        service: service_name(addr.port()),
        banner: None,
    }
}

async fn probe(addr: SocketAddr, options: &ScanOptions, deadline: Instant) -> PortResult {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return unscanned(addr);
    }
    let limit = options.timeout.min(remaining);
    let (state, banner) = match tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr))
        .await
    {
        Ok(Ok(mut stream)) => {
            let mut buf = [0u8; 256];
            let banner =
                match tokio::time::timeout(options.banner_timeout, stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => printable_line(&buf[..n]),
                    _ => None,
                };
            (PortState::Open, banner)
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            (PortState::Closed, None)
        }
        Err(_) if limit < options.timeout => (PortState::Unscanned, None),
        // Unreachable hosts and networks, and silence: nothing answered.
        Ok(Err(_)) | Err(_) => (PortState::Filtered, None),
    };
    PortResult {
        host: addr.ip(),
        port: addr.port(),
        state,
        service: service_name(addr.port()),
        banner,
    }
}

/// The first line, printable ASCII only (a banner is shown on a terminal).
fn printable_line(bytes: &[u8]) -> Option<String> {
    let line: String = bytes
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or_default()
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .map(|b| char::from(*b))
        .collect();
    let line = line.trim().to_string();
    (!line.is_empty()).then_some(line)
}

/// Well-known ports (nmap's most common TCP services), sorted by port. `top100` scans these.
const SERVICES: &[(u16, &str)] = &[
    (7, "echo"),
    (9, "discard"),
    (13, "daytime"),
    (21, "ftp"),
    (22, "ssh"),
    (23, "telnet"),
    (25, "smtp"),
    (26, "rsftp"),
    (37, "time"),
    (53, "domain"),
    (79, "finger"),
    (80, "http"),
    (81, "hosts2-ns"),
    (88, "kerberos-sec"),
    (106, "pop3pw"),
    (110, "pop3"),
    (111, "rpcbind"),
    (113, "ident"),
    (119, "nntp"),
    (135, "msrpc"),
    (139, "netbios-ssn"),
    (143, "imap"),
    (144, "news"),
    (179, "bgp"),
    (199, "smux"),
    (389, "ldap"),
    (427, "svrloc"),
    (443, "https"),
    (444, "snpp"),
    (445, "microsoft-ds"),
    (465, "smtps"),
    (513, "login"),
    (514, "shell"),
    (515, "printer"),
    (543, "klogin"),
    (544, "kshell"),
    (548, "afp"),
    (554, "rtsp"),
    (587, "submission"),
    (631, "ipp"),
    (646, "ldp"),
    (873, "rsync"),
    (990, "ftps"),
    (993, "imaps"),
    (995, "pop3s"),
    (1025, "NFS-or-IIS"),
    (1026, "LSA-or-nterm"),
    (1027, "IIS"),
    (1028, "unknown"),
    (1029, "ms-lsa"),
    (1110, "nfsd-status"),
    (1433, "ms-sql-s"),
    (1720, "h323q931"),
    (1723, "pptp"),
    (1755, "wms"),
    (1900, "upnp"),
    (2000, "cisco-sccp"),
    (2001, "dc"),
    (2049, "nfs"),
    (2121, "ccproxy-ftp"),
    (2717, "pn-requester"),
    (3000, "ppp"),
    (3128, "squid-http"),
    (3306, "mysql"),
    (3389, "ms-wbt-server"),
    (3986, "mapper-ws_ethd"),
    (4899, "radmin"),
    (5000, "upnp"),
    (5009, "airport-admin"),
    (5051, "ida-agent"),
    (5060, "sip"),
    (5101, "admdog"),
    (5190, "aol"),
    (5357, "wsdapi"),
    (5432, "postgresql"),
    (5631, "pcanywheredata"),
    (5666, "nrpe"),
    (5800, "vnc-http"),
    (5900, "vnc"),
    (6000, "X11"),
    (6001, "X11:1"),
    (6379, "redis"),
    (6646, "unknown"),
    (7070, "realserver"),
    (8000, "http-alt"),
    (8008, "http"),
    (8009, "ajp13"),
    (8080, "http-proxy"),
    (8081, "blackice-icecap"),
    (8443, "https-alt"),
    (8888, "sun-answerbook"),
    (9100, "jetdirect"),
    (9999, "abyss"),
    (10000, "snet-sensor-mgmt"),
    (32768, "filenet-tms"),
    (49152, "unknown"),
    (49153, "unknown"),
    (49154, "unknown"),
    (49155, "unknown"),
    (49156, "unknown"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_table_is_sorted_and_has_a_hundred_entries() {
        assert!(SERVICES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(SERVICES.len(), 100);
        assert_eq!(service_name(22), Some("ssh"));
        assert_eq!(service_name(2), None);
    }

    #[test]
    fn port_specs_parse() {
        assert_eq!(
            parse_ports("22,80,8000-8002").ok(),
            Some(vec![22, 80, 8000, 8001, 8002])
        );
        assert_eq!(parse_ports("1-1024").map(|p| p.len()).ok(), Some(1024));
        assert!(parse_ports("0-10").is_err());
        assert!(parse_ports("10-5").is_err());
        assert!(parse_ports("http").is_err());
    }

    #[tokio::test]
    async fn networks_expand_and_oversized_ones_are_refused() {
        let hosts = expand_targets(&["127.0.0.8/30".into()], 16)
            .await
            .expect("expands");
        let want: Vec<IpAddr> = (8..12).map(|i| IpAddr::from([127, 0, 0, i])).collect();
        assert_eq!(hosts, want);
        assert!(expand_targets(&["10.0.0.0/8".into()], 256).await.is_err());
        assert!(expand_targets(&["127.0.0.1/33".into()], 256).await.is_err());
    }
}
