//! The command layer: one place where a command meets the hub's rules (capabilities,
//! recovery arguments, history defaults) and becomes a typed [`Reply`]. The WebSocket
//! session and the HTTP server API both run commands through [`run`] (the session
//! through [`start`], which lets a `publish` finish while it reads on); transports only
//! decode the command and encode the reply in their own format.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_proto::ErrorCode;
use ferry_proto::envelope::{
    ClientInfo, Command, HistoryCommand, PublishCommand, SubscribeCommand,
};
use serde::Serialize;

use crate::auth::{Capability, Identity};
use crate::conn::ConnHandle;
use crate::error::{HubError, HubResult};
use crate::hub::{Hub, Publishing, RecoveryRequest};
use crate::publication::Publication;
use crate::store::HistoryQuery;

/// Publications in a history page when the command names no limit.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;

/// Who runs a command.
#[derive(Clone, Copy)]
pub enum Caller<'a> {
    /// A client connection: its identity's capabilities apply, and publications carry
    /// its `info`.
    Connection {
        /// Who it is.
        identity: &'a Identity,
        /// The connection (subscriptions are its own).
        conn: &'a Arc<ConnHandle>,
    },
    /// The server API, trusted by its key: no capability checks, no connection.
    Server,
}

/// The answer to a command, as every transport shows it (docs/PROTOCOL.md).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// `subscribe`: the channel's position, and recovered publications (all of them:
    /// the transport decides how many fit in one reply).
    Subscribe {
        /// The channel.
        channel: String,
        /// Its current offset.
        offset: u64,
        /// Its epoch.
        epoch: String,
        /// With recovery: whether every missed publication is there.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// The recovered publications, in offset order.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        publications: Vec<Arc<Publication>>,
    },
    /// `unsubscribe`.
    Channel {
        /// The channel.
        channel: String,
    },
    /// `publish`: where the publication landed.
    Published {
        /// The channel.
        channel: String,
        /// Its offset.
        offset: u64,
        /// The channel's epoch.
        epoch: Arc<str>,
    },
    /// `history`: one page.
    History {
        /// The channel.
        channel: String,
        /// The page, in the order asked for.
        publications: Vec<Arc<Publication>>,
        /// The channel's current offset.
        offset: u64,
        /// Its epoch.
        epoch: String,
        /// Whether more publications lie beyond this page.
        has_more: bool,
    },
    /// `presence`.
    Presence {
        /// The channel.
        channel: String,
        /// How many clients.
        count: usize,
        /// Each client by its id.
        clients: HashMap<String, ClientInfo>,
    },
}

/// A command's answer: ready, or ready once a publication is stored and fanned out.
pub enum Started {
    /// The answer.
    Now(Reply),
    /// The answer of a `publish` whose publication is being stored: `reply` holds once
    /// [`Publishing::finish`] says it was stored and fanned out; an error there is the
    /// answer instead.
    Later {
        /// The answer, valid once `publishing` finished.
        reply: Reply,
        /// The publication being stored.
        publishing: Publishing,
    },
}

/// Run `command` for `caller` to the end. `auth`, `ping` and `batch` are the session's
/// own and are refused here.
pub async fn run(hub: &Hub, caller: Caller<'_>, command: Command) -> HubResult<Reply> {
    match start(hub, caller, command).await? {
        Started::Now(reply) => Ok(reply),
        Started::Later { reply, publishing } => {
            publishing.finish().await?;
            Ok(reply)
        }
    }
}

/// [`run`], except that a `publish` returns as soon as its offset is assigned
/// ([`Started::Later`]): a transport can read its next command while the publication
/// is stored.
pub async fn start(hub: &Hub, caller: Caller<'_>, command: Command) -> HubResult<Started> {
    match command {
        Command::Publish(publish) => start_publish(hub, caller, publish).await,
        other => run_now(hub, caller, other).await.map(Started::Now),
    }
}

async fn run_now(hub: &Hub, caller: Caller<'_>, command: Command) -> HubResult<Reply> {
    let authorize = |cap: Capability, channel: &str| match caller {
        Caller::Connection { identity, .. } => hub.authorize(identity, cap, channel),
        Caller::Server => Ok(()),
    };
    match command {
        Command::Subscribe(SubscribeCommand {
            channel,
            recover,
            offset,
            epoch,
        }) => {
            let Caller::Connection { conn, .. } = caller else {
                return Err(needs_connection("subscribe"));
            };
            authorize(Capability::Subscribe, &channel)?;
            let recovery = match (recover, offset, epoch) {
                (false, _, _) => None,
                (true, Some(offset), Some(epoch)) => Some(RecoveryRequest { offset, epoch }),
                (true, _, _) => {
                    return Err(HubError::new(
                        ErrorCode::InvalidMessage,
                        "`recover` needs the `offset` and `epoch` of the last publication seen",
                    ));
                }
            };
            let subscribed = hub.subscribe(conn, &channel, recovery).await?;
            Ok(Reply::Subscribe {
                channel,
                offset: subscribed.position.offset,
                epoch: subscribed.position.epoch,
                recovered: subscribed.recovered,
                publications: subscribed.publications,
            })
        }
        Command::Unsubscribe(c) => {
            let Caller::Connection { conn, .. } = caller else {
                return Err(needs_connection("unsubscribe"));
            };
            hub.unsubscribe(conn, &c.channel).await?;
            Ok(Reply::Channel { channel: c.channel })
        }
        Command::History(HistoryCommand {
            channel,
            since,
            limit,
            reverse,
        }) => {
            authorize(Capability::History, &channel)?;
            let query = HistoryQuery {
                since,
                limit: limit.unwrap_or(DEFAULT_HISTORY_LIMIT),
                reverse,
            };
            let page = hub.history(&channel, query).await?;
            Ok(Reply::History {
                channel,
                publications: page.publications,
                offset: page.position.offset,
                epoch: page.position.epoch,
                has_more: page.has_more,
            })
        }
        Command::Presence(c) => {
            authorize(Capability::Presence, &c.channel)?;
            let clients = hub.presence(&c.channel).await?;
            Ok(Reply::Presence {
                channel: c.channel,
                count: clients.len(),
                clients,
            })
        }
        Command::Publish(_) | Command::Auth(_) | Command::Ping | Command::Batch(_) => {
            Err(HubError::new(
                ErrorCode::InternalError,
                "command routed to the wrong handler",
            ))
        }
    }
}

async fn start_publish(
    hub: &Hub,
    caller: Caller<'_>,
    PublishCommand {
        channel,
        data,
        skip_self,
    }: PublishCommand,
) -> HubResult<Started> {
    if matches!(caller, Caller::Connection { .. }) && hub.config().sync.is_root_channel(&channel) {
        // A FileOp there must be one the hub made (transports/sync.rs).
        return Err(HubError::new(
            ErrorCode::PermissionDenied,
            format!(
                "`{channel}` carries a sync root's operations, published by the hub only; change files through /sync/"
            ),
        ));
    }
    let (info, skip) = match caller {
        Caller::Connection { identity, conn } => {
            hub.authorize(identity, Capability::Publish, &channel)?;
            (Some(conn.info()), skip_self.then_some(conn.id))
        }
        Caller::Server => (None, None),
    };
    let publishing = hub.begin_publish(&channel, data, info, skip).await?;
    let publication = publishing.publication();
    let reply = Reply::Published {
        offset: publication.offset(),
        epoch: publication.epoch().into(),
        channel,
    };
    Ok(match publishing {
        Publishing::Done(_) => Started::Now(reply),
        pending => Started::Later {
            reply,
            publishing: pending,
        },
    })
}

fn needs_connection(what: &str) -> HubError {
    HubError::new(
        ErrorCode::InvalidMessage,
        format!("`{what}` needs a connection: use /ws or /sse"),
    )
}
