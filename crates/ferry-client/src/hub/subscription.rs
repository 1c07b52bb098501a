//! Per-subscription bookkeeping for recovery (SPEC W8, D2): the last position delivered,
//! publications held back while a (re)subscribe is in flight, and the merge of a
//! subscribe reply's recovered publications with live ones — in order, no duplicate.
//! Pure logic: no I/O, no clock, tested on its own.

use ferry_proto::envelope::{ClientInfo, Publication};
use serde::Deserialize;

use super::HubError;

/// A position in a channel's history: the offset of a publication and the epoch it
/// belongs to. Pass it to `HubClient::subscribe_from` to resume after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The offset (0: before the first publication).
    pub offset: u64,
    /// The history epoch the offset belongs to.
    pub epoch: String,
}

/// What a [`Subscription`](super::Subscription) delivers, in order.
#[derive(Debug, Clone)]
pub enum SubscriptionEvent {
    /// The first subscribe succeeded; publications after `position` follow.
    Subscribed {
        /// The channel's position when the subscription started.
        position: Position,
    },
    /// A publication, in offset order, each at most once.
    Publication(Publication),
    /// After a reconnect the subscription was restored. `recovered`: every publication
    /// missed while disconnected follows (`missed` of them) — no gap. `false`: the
    /// server could not fill the gap (history trimmed, epoch changed); the subscription
    /// continues from `position` and the application should reload its state.
    Recovered {
        /// Whether the missed publications could be recovered.
        recovered: bool,
        /// How many missed publications follow this event.
        missed: usize,
        /// The position the subscription continues from.
        position: Position,
    },
    /// Someone subscribed to the channel (namespaces with join/leave events).
    Join(ClientInfo),
    /// Someone left the channel.
    Leave(ClientInfo),
    /// Restoring the subscription after a reconnect failed (e.g. permission revoked);
    /// it is retried after the next reconnect.
    Error(HubError),
}

/// The reply to `subscribe`.
#[derive(Debug, Deserialize)]
pub(crate) struct SubscribeReply {
    pub offset: u64,
    pub epoch: String,
    #[serde(default)]
    pub recovered: Option<bool>,
    #[serde(default)]
    pub publications: Vec<Publication>,
}

/// The recovery state of one subscription.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// The last position delivered (or the start position); `None` before the first reply.
    pub position: Option<Position>,
    /// A subscribe is in flight: live publications wait here for its reply.
    pending: Option<Vec<Publication>>,
}

impl Recovery {
    /// Starting at `position` (`None`: at the channel's position when subscribed).
    pub fn starting_at(position: Option<Position>) -> Self {
        Recovery {
            position,
            pending: None,
        }
    }

    /// Start waiting for a subscribe reply; live publications are held back until then.
    pub fn begin(&mut self) {
        self.pending = Some(Vec::new());
    }

    /// A subscribe in flight failed: release held-back publications as they are.
    pub fn abort(&mut self, out: &mut Vec<SubscriptionEvent>) {
        if let Some(held) = self.pending.take() {
            for p in held {
                self.deliver(p, out);
            }
        }
    }

    /// Whether `p` comes after the last delivered position.
    fn is_new(&self, p: &Publication) -> bool {
        match &self.position {
            None => true,
            Some(pos) => p.epoch != pos.epoch || p.offset > pos.offset,
        }
    }

    fn deliver(&mut self, p: Publication, out: &mut Vec<SubscriptionEvent>) -> bool {
        if !self.is_new(&p) {
            return false;
        }
        self.position = Some(Position {
            offset: p.offset,
            epoch: p.epoch.clone(),
        });
        out.push(SubscriptionEvent::Publication(p));
        true
    }

    /// A live publication arrived.
    pub fn on_publication(&mut self, p: Publication, out: &mut Vec<SubscriptionEvent>) {
        match &mut self.pending {
            Some(held) => held.push(p),
            None => {
                self.deliver(p, out);
            }
        }
    }

    /// The reply to a subscribe arrived. `resumed`: it asked for recovery from
    /// `self.position` (a resubscribe or `subscribe_from`).
    pub fn on_reply(
        &mut self,
        reply: SubscribeReply,
        resumed: bool,
        out: &mut Vec<SubscriptionEvent>,
    ) {
        let top = Position {
            offset: reply.offset,
            epoch: reply.epoch,
        };
        let held = self.pending.take().unwrap_or_default();
        if !resumed || self.position.is_none() {
            // A fresh subscription starts at the channel's current position.
            self.position = Some(top.clone());
            out.push(SubscriptionEvent::Subscribed { position: top });
        } else {
            let recovered = reply.recovered.unwrap_or(false);
            let mut recovered_pubs: Vec<Publication> = reply.publications;
            recovered_pubs.sort_by_key(|p| p.offset);
            if !recovered {
                // The gap cannot be filled: continue from the channel's position.
                self.position = Some(top.clone());
                out.push(SubscriptionEvent::Recovered {
                    recovered: false,
                    missed: 0,
                    position: top,
                });
            } else {
                let missed: Vec<Publication> = recovered_pubs
                    .into_iter()
                    .filter(|p| self.is_new(p))
                    .collect();
                let position = missed
                    .last()
                    .map(|p| Position {
                        offset: p.offset,
                        epoch: p.epoch.clone(),
                    })
                    .or_else(|| self.position.clone())
                    .unwrap_or(top);
                out.push(SubscriptionEvent::Recovered {
                    recovered: true,
                    missed: missed.len(),
                    position,
                });
                for p in missed {
                    self.deliver(p, out);
                }
            }
        }
        let mut held = held;
        held.sort_by_key(|p| p.offset);
        for p in held {
            self.deliver(p, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(offset: u64, epoch: &str) -> Publication {
        serde_json::from_value(serde_json::json!({
            "channel": "c", "offset": offset, "epoch": epoch, "data": offset, "time": 1
        }))
        .expect("publication")
    }

    fn raw(p: &Publication) -> Publication {
        p.clone()
    }

    fn offsets(events: &[SubscriptionEvent]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match e {
                SubscriptionEvent::Publication(p) => Some(p.offset),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn live_publications_are_delivered_once_in_order() {
        let mut r = Recovery::default();
        let mut out = Vec::new();
        r.begin();
        r.on_reply(
            SubscribeReply {
                offset: 3,
                epoch: "e".into(),
                recovered: None,
                publications: vec![],
            },
            false,
            &mut out,
        );
        for o in [4, 5, 5, 4, 6] {
            r.on_publication(publication(o, "e"), &mut out);
        }
        assert!(
            matches!(out[0], SubscriptionEvent::Subscribed { ref position } if position.offset == 3)
        );
        assert_eq!(offsets(&out), [4, 5, 6]);
    }

    #[test]
    fn a_resubscribe_merges_recovered_and_held_back_publications_without_gap_or_duplicate() {
        let mut r = Recovery {
            position: Some(Position {
                offset: 2,
                epoch: "e".into(),
            }),
            pending: None,
        };
        let mut out = Vec::new();
        r.begin();
        // Live ones that overtook the reply, one of them also in the reply.
        r.on_publication(publication(6, "e"), &mut out);
        r.on_publication(publication(5, "e"), &mut out);
        assert!(out.is_empty(), "held back while the reply is pending");
        let reply = SubscribeReply {
            offset: 5,
            epoch: "e".into(),
            recovered: Some(true),
            publications: [2, 3, 4, 5]
                .iter()
                .map(|&o| raw(&publication(o, "e")))
                .collect(),
        };
        r.on_reply(reply, true, &mut out);
        match &out[0] {
            SubscriptionEvent::Recovered {
                recovered, missed, ..
            } => assert_eq!((*recovered, *missed), (true, 3)),
            other => panic!("{other:?}"),
        }
        assert_eq!(offsets(&out), [3, 4, 5, 6]);
    }

    #[test]
    fn an_unrecoverable_gap_is_reported_and_skipped() {
        let mut r = Recovery {
            position: Some(Position {
                offset: 2,
                epoch: "old".into(),
            }),
            pending: None,
        };
        let mut out = Vec::new();
        r.begin();
        r.on_reply(
            SubscribeReply {
                offset: 9,
                epoch: "new".into(),
                recovered: Some(false),
                publications: vec![],
            },
            true,
            &mut out,
        );
        r.on_publication(publication(9, "new"), &mut out);
        r.on_publication(publication(10, "new"), &mut out);
        assert!(matches!(
            out[0],
            SubscriptionEvent::Recovered {
                recovered: false,
                missed: 0,
                ..
            }
        ));
        assert_eq!(offsets(&out), [10]);
    }
}
