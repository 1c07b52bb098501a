//! `idle`: N connections opened (authenticated and subscribed to one channel with the
//! ferry protocol, connected to the main namespace with Socket.IO) and held. With
//! `--server-pid` the server's resident memory is read before the first connection and
//! after the last one settled, giving KiB per idle connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep};

use super::Common;
use super::client::Target;
use super::fanout::{GroupResult, Shared, spawn_groups};
use super::report::{Report, ServerUsage};

/// What an idle run does.
#[derive(Debug, Clone)]
pub struct IdlePlan {
    /// Connections to open.
    pub connections: usize,
    /// Time given to the server to settle after the last connection, before the reading.
    pub settle: Duration,
    /// How long the connections are held after the reading.
    pub hold: Duration,
    /// Connections per task.
    pub group_size: usize,
}

/// Run `idle`.
pub async fn run(common: &Common, target: Arc<Target>, plan: IdlePlan) -> anyhow::Result<Report> {
    let probe = common.probe()?;
    let before = probe.as_ref().map(|p| p.sample()).transpose()?;
    let setup_start = Instant::now();
    let deadline = setup_start + common.setup_timeout();
    let (conns, mut errors) = target
        .open_many(plan.connections, true, common.concurrency(), deadline)
        .await;
    let setup_s = setup_start.elapsed().as_secs_f64();
    let connections = conns.len();
    if connections == 0 {
        anyhow::bail!(
            "no connection could be opened: {}",
            errors.samples.join("; ")
        );
    }
    // Keep the connections served (pings answered) while they are held.
    let shared = Shared::new(0, 1);
    let (stop_tx, stop_rx) = watch::channel(false);
    let groups = spawn_groups(conns, plan.group_size, target.protocol, &shared, &stop_rx);
    sleep(plan.settle).await;
    let after = probe.as_ref().map(|p| p.sample()).transpose()?;
    sleep(plan.hold).await;
    let _ = stop_tx.send(true);
    let mut results = Vec::new();
    for g in groups {
        if let Ok(r) = g.await {
            results.push(r);
        }
    }
    errors.merge(GroupResult::merge(results).errors);
    let server = before.zip(after).map(|(b, a)| ServerUsage {
        rss_before_kib: b.rss_kib,
        rss_after_kib: a.rss_kib,
        kib_per_connection: Some((a.rss_kib as f64 - b.rss_kib as f64) / connections as f64),
        cpu_s: a.cpu_s - b.cpu_s,
        kernel_cpu_s: a.kernel_cpu_s - b.kernel_cpu_s,
        cpu_s_per_million: None,
    });
    Ok(Report {
        scenario: "idle".into(),
        protocol: target.protocol.name().into(),
        url: target.url.clone(),
        connections,
        setup_s,
        duration_s: (plan.settle + plan.hold).as_secs_f64(),
        errors: errors.count,
        error_samples: errors.samples,
        server,
        ..Report::default()
    })
}
