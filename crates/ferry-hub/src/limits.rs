//! Connection counting (global and per IP). A [`ConnectionPermit`] is held for the life of
//! a WebSocket or SSE connection; dropping it frees the slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_proto::ErrorCode;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::error::HubError;

/// Counts open connections and refuses new ones past the limits.
#[derive(Debug)]
pub struct ConnectionLimiter {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_total: usize,
    max_per_ip: usize,
    drained: Notify,
}

/// One open connection's slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
    ip: IpAddr,
}

impl ConnectionLimiter {
    /// A limiter with the given maxima.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionLimiter {
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            max_total,
            max_per_ip,
            drained: Notify::new(),
        })
    }

    /// Take a slot for a connection from `ip`, or fail with `CONNECTION_LIMIT`.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, HubError> {
        let mut per_ip = self.per_ip.lock();
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(HubError::new(
                ErrorCode::ConnectionLimit,
                format!(
                    "the server holds its maximum of {} connections; retry later",
                    self.max_total
                ),
            ));
        }
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return Err(HubError::new(
                ErrorCode::ConnectionLimit,
                format!(
                    "at most {} connections per IP address; close some first",
                    self.max_per_ip
                ),
            ));
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionPermit {
            limiter: self.clone(),
            ip,
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Wait until every permit is dropped.
    pub async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut per_ip = self.limiter.per_ip.lock();
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
        if self.limiter.total.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.limiter.drained.notify_waiters();
        }
    }
}
