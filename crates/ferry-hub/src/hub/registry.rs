//! The connection registry: connections by id, user and client id, direct sends and
//! disconnects (local and across nodes), stats.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferry_proto::{CloseCode, Data};

use crate::broker::Control;
use crate::conn::{ConnHandle, Outbound, Pushed, Receiver};
use crate::error::HubResult;
use crate::publication::Push;

use super::{CLIENT_ID_INVERSE, CLIENT_ID_MULTIPLIER, Hub, HubInner, Stats};

impl HubInner {
    /// Channels with local subscribers and their subscriber counts, sorted by name.
    pub(super) fn channels(&self) -> Vec<(String, usize)> {
        let mut all: Vec<(String, usize)> = self
            .channels
            .iter()
            .flat_map(|shard| {
                shard
                    .lock()
                    .iter()
                    .map(|(name, ch)| (name.to_string(), ch.subscribers.read().len()))
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort();
        all
    }

    /// Current counters.
    pub(super) fn stats(&self) -> Stats {
        // Counted in place: /api/stats should not copy and sort every channel name.
        let (mut channels, mut subscriptions) = (0, 0);
        for shard in self.channels.iter() {
            let shard = shard.lock();
            channels += shard.len();
            subscriptions += shard
                .values()
                .map(|ch| ch.subscribers.read().len())
                .sum::<usize>();
        }
        Stats {
            connections: self.connection_count.load(Ordering::Relaxed),
            channels,
            subscriptions,
            publications: self.publications.load(Ordering::Relaxed),
            deliveries: self.deliveries.load(Ordering::Relaxed),
            slow_consumers: self.slow_consumers.load(Ordering::Relaxed),
            uptime_secs: self.started.elapsed().as_secs(),
        }
    }

    /// Apply a send or a disconnect to this node's connections; returns how many.
    pub(super) fn apply(&self, control: &Control) -> usize {
        match control {
            Control::Send { user, client, data } => {
                let targets = self.find_connections(user.as_deref(), client.as_deref());
                self.send_direct(&targets, Data::from(data.clone()))
            }
            Control::Disconnect {
                user,
                client,
                reconnect,
            } => {
                let targets = self.find_connections(user.as_deref(), client.as_deref());
                // 1008 tells clients not to reconnect; 1013 (try again later) invites it.
                let (code, reason) = if *reconnect {
                    (
                        CloseCode::TRY_AGAIN_LATER,
                        "disconnected by the server, reconnect",
                    )
                } else {
                    (CloseCode::POLICY_VIOLATION, "disconnected by the server")
                };
                for c in &targets {
                    c.request_close(code, reason);
                }
                targets.len()
            }
        }
    }

    pub(super) fn user_connections(&self, user: &str) -> Vec<Arc<ConnHandle>> {
        let ids = self
            .users
            .shard(user)
            .lock()
            .get(user)
            .cloned()
            .unwrap_or_default();
        ids.iter()
            .filter_map(|id| self.connections.shard(id).lock().get(id).cloned())
            .collect()
    }

    pub(super) fn client_connection(&self, client: &str) -> Option<Arc<ConnHandle>> {
        let scrambled = u64::from_str_radix(client, 16)
            .ok()
            .filter(|_| client.len() == 16)?;
        let id = scrambled.wrapping_mul(CLIENT_ID_INVERSE) ^ self.client_key;
        let conn = self.connections.shard(&id).lock().get(&id).cloned()?;
        (*conn.client_id == *client).then_some(conn)
    }

    /// Connections of a user, or the one connection with a client id.
    pub(super) fn find_connections(
        &self,
        user: Option<&str>,
        client: Option<&str>,
    ) -> Vec<Arc<ConnHandle>> {
        let mut found = user.map(|u| self.user_connections(u)).unwrap_or_default();
        if let Some(c) = client.and_then(|c| self.client_connection(c))
            && !found.iter().any(|f| f.id == c.id)
        {
            found.push(c);
        }
        found
    }

    /// Send a `direct` push with `data` to the given connections; returns how many got it.
    pub(super) fn send_direct(&self, targets: &[Arc<ConnHandle>], data: Data) -> usize {
        let push = Push::direct(data);
        targets
            .iter()
            .filter(|c| c.push(Outbound::Push(push.clone())) == Pushed::Queued)
            .count()
    }
}

impl Hub {
    /// Register a new connection with a send queue of the configured size.
    pub fn connect(&self, user: &str) -> (Arc<ConnHandle>, Receiver) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let client_id = self.client_id(id);
        let (conn, rx) = ConnHandle::new(
            id,
            &client_id,
            user,
            self.inner.config.limits.send_queue_size,
            self.inner.config.limits.send_queue_bytes,
        );
        self.inner
            .connections
            .shard(&id)
            .lock()
            .insert(id, conn.clone());
        if !user.is_empty() {
            self.index_user(user, id);
        }
        self.inner.connection_count.fetch_add(1, Ordering::Relaxed);
        (conn, rx)
    }

    pub(super) fn index_user(&self, user: &str, id: u64) {
        self.inner
            .users
            .shard(user)
            .lock()
            .entry(user.into())
            .or_default()
            .push(id);
    }

    pub(super) fn unindex_user(&self, user: &str, id: u64) {
        let mut shard = self.inner.users.shard(user).lock();
        if let Some(ids) = shard.get_mut(user) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                shard.remove(user);
            }
        }
    }

    /// Change the user of a connection (after an `auth` command).
    pub fn set_user(&self, conn: &ConnHandle, user: &str) {
        let old = conn.user();
        if *old == *user {
            return;
        }
        if !old.is_empty() {
            self.unindex_user(&old, conn.id);
        }
        conn.set_user(user);
        if !user.is_empty() {
            self.index_user(user, conn.id);
        }
    }

    /// The client id of connection `id`: an invertible scramble of the numeric id with a
    /// per-process random key, so ids look random (they are not secrets: presence shows
    /// them) and a client id leads back to its connection without a second index.
    pub(super) fn client_id(&self, id: u64) -> String {
        format!(
            "{:016x}",
            (id ^ self.inner.client_key).wrapping_mul(CLIENT_ID_MULTIPLIER)
        )
    }

    /// Connections of `user` and/or with client id `client`, on this node.
    pub fn find_connections(
        &self,
        user: Option<&str>,
        client: Option<&str>,
    ) -> Vec<Arc<ConnHandle>> {
        self.inner.find_connections(user, client)
    }

    /// Send a `direct` push with `data` to the given connections; returns how many got it.
    pub fn send_direct(&self, targets: &[Arc<ConnHandle>], data: Data) -> usize {
        self.inner.send_direct(targets, data)
    }

    /// Apply a send or a disconnect to this node's connections (returns how many) and
    /// pass it to the other nodes, with a broker that has them (`Some(n)`: how many other
    /// nodes took it).
    pub async fn control(&self, control: Control) -> HubResult<(usize, Option<usize>)> {
        let here = self.inner.apply(&control);
        let forwarded = self.inner.broker.forward(&control).await?;
        Ok((here, forwarded))
    }

    /// Channels with local subscribers and their subscriber counts, sorted by name.
    pub fn channels(&self) -> Vec<(String, usize)> {
        self.inner.channels()
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// This node's figures and the other nodes' (`what`: `stats` or `channels`), with a
    /// broker that has other nodes; `None` with one process.
    pub async fn gather(&self, what: &str) -> HubResult<Option<Vec<serde_json::Value>>> {
        self.inner.broker.gather(what).await
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.inner.connection_count.load(Ordering::Relaxed)
    }

    /// Forget a connection: leave all its channels (presence and `leave` pushes).
    pub async fn disconnect(&self, conn: &Arc<ConnHandle>) {
        let subscriptions = std::mem::take(&mut *conn.subscriptions.lock());
        for channel in subscriptions {
            self.leave(conn, &channel).await;
        }
        if self
            .inner
            .connections
            .shard(&conn.id)
            .lock()
            .remove(&conn.id)
            .is_some()
        {
            self.inner.connection_count.fetch_sub(1, Ordering::Relaxed);
        }
        let user = conn.user();
        if !user.is_empty() {
            self.unindex_user(&user, conn.id);
        }
    }
}
