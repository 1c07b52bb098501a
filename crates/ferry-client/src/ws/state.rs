//! The observable connection state (SPEC W3, E4): the current value for those who ask,
//! and every change, in order, for those who follow. Shared by the WebSocket, the
//! EventSource and the hub client.

use std::sync::{Mutex, MutexGuard};

use ferry_proto::reconnect::ConnectionState;
use tokio::sync::{broadcast, watch};

/// Lock a mutex, ignoring poisoning: every critical section in this crate's realtime
/// clients leaves its data consistent even if a panic unwinds through it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) struct StateCell {
    current: watch::Sender<ConnectionState>,
    /// Taken (dropped) when the connection task ends, so that state streams end too.
    events: Mutex<Option<broadcast::Sender<ConnectionState>>>,
}

impl StateCell {
    pub fn new(initial: ConnectionState) -> Self {
        let (current, _) = watch::channel(initial);
        let (events, _) = broadcast::channel(64);
        StateCell {
            current,
            events: Mutex::new(Some(events)),
        }
    }

    pub fn get(&self) -> ConnectionState {
        *self.current.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<ConnectionState> {
        self.current.subscribe()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ConnectionState> {
        match &*lock(&self.events) {
            Some(tx) => tx.subscribe(),
            // Already finished: a receiver whose sender is gone reports the end at once.
            None => broadcast::channel(1).1,
        }
    }

    /// Publish a state change (a repeated identical state is not published twice).
    pub fn set(&self, state: ConnectionState) {
        let changed = self.current.send_if_modified(|current| {
            if *current == state {
                false
            } else {
                *current = state;
                true
            }
        });
        if changed && let Some(tx) = &*lock(&self.events) {
            // No subscriber is fine.
            let _ = tx.send(state);
        }
    }

    /// The task ended: no more state changes.
    pub fn finish(&self) {
        lock(&self.events).take();
    }

    /// Wait until the state satisfies `predicate` and return it (the current state if the
    /// task is gone).
    pub async fn wait_for(
        &self,
        mut predicate: impl FnMut(&ConnectionState) -> bool,
    ) -> ConnectionState {
        let mut rx = self.watch();
        match rx.wait_for(|s| predicate(s)).await {
            Ok(state) => *state,
            Err(_) => self.get(),
        }
    }
}
