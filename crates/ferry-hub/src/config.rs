//! Every knob of the hub in one place, with its default and the reason for it.
//!
//! Configuration is layered: built-in defaults, then `ferry.toml` (or `--config FILE`),
//! then `FERRY_*` environment variables (`FERRY_LIMITS__MAX_CONNECTIONS=10` for nested
//! keys), then command-line flags. `ferry serve --print-config` shows the result with
//! secrets redacted.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::error::SetupError;

/// A secret string (API key, JWT secret). Its `Debug` form and its serialized form in
/// `--print-config` never show the value.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret value; use only where it is compared or used to sign.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// The hub's configuration. Every field documents its default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080`: loopback only until the operator
    /// chooses to expose the hub.
    pub listen: SocketAddr,
    /// Directory for generated secrets, the SQLite history and uploads. Default
    /// `./ferry-data`.
    pub data_dir: PathBuf,
    /// API key for `/api/*` (`Authorization: apikey KEY`). Default: generated at first
    /// start into `DATA_DIR/secrets.toml`.
    pub api_key: Option<Secret>,
    /// HS256 secret for client JWTs and for tokens issued by `/auth/login`. Default:
    /// generated at first start into `DATA_DIR/secrets.toml`.
    pub jwt_secret: Option<Secret>,
    /// A token for `/metrics` and `/metrics/stream` only (`Authorization: Bearer TOKEN`, what
    /// a Prometheus scrape config's `authorization.credentials` sends), so the scraper does
    /// not hold the API key. The API key works there too. Default none.
    pub metrics_token: Option<Secret>,
    /// PEM files with RSA or EC (P-256) public keys accepted for RS256 / ES256 tokens.
    /// Default: none.
    pub jwt_public_keys: Vec<PathBuf>,
    /// Clock skew tolerated when checking `exp` and `nbf`, in seconds. Default 5.
    pub jwt_leeway_secs: u64,
    /// Lifetime of tokens issued by `/auth/login`, in seconds. Default 3600.
    pub token_ttl_secs: u64,
    /// Let connections without a token in (as anonymous) where a namespace allows
    /// anonymous access. Default false: auth is on unless turned off.
    pub allow_anonymous: bool,
    /// Origins allowed for browser WebSocket/SSE connections and CORS, e.g.
    /// `["https://app.example.com"]`; `["*"]` allows any. Default empty: same-origin
    /// browsers and non-browser clients (no `Origin` header) only.
    pub allowed_origins: Vec<String>,
    /// Serve the `/test/*` testbed (echo WebSocket, delays, byte streams: tools for testing
    /// clients). Default false: it is unauthenticated, so it is on only when asked for
    /// (`--testbed`, or `ferry serve --dev`). When on, `/test/echo` follows the same
    /// Origin rule as `/ws` and its own size cap.
    pub testbed: bool,
    /// permessage-deflate (RFC 7692) on `/ws` and `/test/echo`: `"off"` (default) or
    /// `"on"` (accepted when a client offers it, with no context takeover either way:
    /// each message is compressed on its own, so a publication is compressed once for
    /// every subscriber and an idle connection keeps no compression state). See
    /// docs/PROTOCOL.md for its memory cost.
    pub compression: WsCompression,
    /// Messages smaller than this many bytes are sent uncompressed even where compression
    /// was agreed (deflating a few bytes costs more than it saves). Default 256.
    pub compression_min_size: usize,
    /// Serve this directory's files at `/` (with compression and CORS). Default none.
    pub static_dir: Option<PathBuf>,
    /// Options of channels without a namespace (`lobby`). Default: see [`NamespaceConfig`].
    pub default_namespace: NamespaceConfig,
    /// Named namespaces (`chat:room1` uses `namespaces.chat`). Default: `chat` with the
    /// same options as the default namespace. A channel in an unlisted namespace is
    /// refused with `UNKNOWN_CHANNEL`.
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// Users who may log in at `/auth/login`. Passwords are argon2 hashes made with
    /// `ferry hash-password`, never plain text. Default none.
    pub users: Vec<UserConfig>,
    /// Pending connections the kernel queues before `accept` (the listen backlog), capped
    /// by the system's `net.core.somaxconn`. Default 4096: a reconnect storm of thousands
    /// of clients after a restart waits in the queue instead of being refused and retrying
    /// a second later (tokio's default is 128).
    pub listen_backlog: u32,
    /// Set `SO_REUSEPORT` on the listener, so several `ferry serve` processes can share one
    /// port (the kernel spreads connections between them). Default false.
    pub reuse_port: bool,
    /// Where channel history lives: `"sqlite"` (default: `DATA_DIR/history.sqlite3`; offsets
    /// and epochs survive a restart or a crash, so reconnecting clients recover what they
    /// missed) or `"memory"` (lost on restart: reconnecting clients are told recovery
    /// failed).
    pub history: HistoryBackend,
    /// How nodes share publications: `"memory"` (default: this process only) or a Redis
    /// URL, `"redis://HOST:PORT"` (`rediss://` for TLS): several `ferry serve` nodes on one
    /// Redis act as one hub, and history, presence and fan-out live in Redis (the
    /// `history` setting is then unused). See `[redis]`. A password in the URL
    /// (`redis://:PASSWORD@host`) is never shown by `--print-config` or the banner.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub broker: String,
    /// Options of the Redis broker.
    pub redis: RedisConfig,
    /// How hard SQLite history is pushed to disk before a publish is acknowledged:
    /// `"normal"` (default: WAL without fsync per commit; survives a crash of the process)
    /// or `"full"` (an fsync per commit; also survives a power loss).
    pub history_durability: crate::store::Durability,
    /// Limits on everything a peer controls.
    pub limits: Limits,
    /// Resumable uploads (`/files/`, tus 1.0) and the multipart endpoint (`/upload`).
    pub uploads: UploadsConfig,

    /// LAN discovery: mDNS/DNS-SD announcement and the UDP broadcast responder.
    pub announce: AnnounceConfig,

    /// HTTPS and WSS on the listen address (the `[tls]` section). Default: off, plain HTTP.
    pub tls: TlsConfig,

    /// File sync (SPEC F1–F4, the `[sync]` section): folders on this machine served under
    /// `/sync/NAME/` and watched, each change published on the root's channel. Default:
    /// no roots.
    pub sync: SyncConfig,

    /// The `[proxy]` section, read by `ferry proxy` (crate ferry-proxy); the hub keeps it
    /// only so that one ferry.toml can configure both. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<toml::Table>,
}

impl Default for Config {
    fn default() -> Self {
        let mut namespaces = BTreeMap::new();
        namespaces.insert("chat".to_string(), NamespaceConfig::default());
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            api_key: None,
            jwt_secret: None,
            metrics_token: None,
            jwt_public_keys: Vec::new(),
            jwt_leeway_secs: 5,
            token_ttl_secs: 3600,
            allow_anonymous: false,
            allowed_origins: Vec::new(),
            testbed: false,
            compression: WsCompression::Off,
            compression_min_size: 256,
            static_dir: None,
            default_namespace: NamespaceConfig::default(),
            namespaces,
            users: Vec::new(),
            listen_backlog: 4096,
            reuse_port: false,
            history: HistoryBackend::default(),
            history_durability: crate::store::Durability::default(),
            broker: "memory".into(),
            redis: RedisConfig::default(),
            limits: Limits::default(),
            uploads: UploadsConfig::default(),

            announce: AnnounceConfig::default(),

            tls: TlsConfig::default(),

            sync: SyncConfig::default(),

            proxy: None,
        }
    }
}

/// Per-namespace channel options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Publications kept per channel for `history` and recovery. Default 100; 0 keeps none
    /// (offsets still grow).
    pub history_size: usize,
    /// How long a publication stays in history, in seconds; 0 = until pushed out by
    /// `history_size`. Default 0.
    pub history_ttl_secs: u64,
    /// Track who is subscribed (the `presence` command). Default true.
    pub presence: bool,
    /// Push `join`/`leave` to subscribers when someone subscribes or leaves. Default false:
    /// each subscribe or leave is one push to every other subscriber, so N subscribers
    /// joining one channel cost N(N-1)/2 pushes (499,500 for 1,000). Turn it on for small
    /// rooms (chat, collaboration) where members want to see each other arrive.
    pub join_leave: bool,
    /// Authenticated users may subscribe. Default true.
    pub allow_subscribe: bool,
    /// Authenticated users may publish from their connection. Default true.
    pub allow_publish: bool,
    /// Those who may subscribe may read history. Default true.
    pub allow_history: bool,
    /// Those who may subscribe may read presence. Default true.
    pub allow_presence: bool,
    /// Anonymous connections (with `allow_anonymous`) may subscribe and read history.
    /// Default false.
    pub allow_anonymous: bool,
    /// With `compression = "on"`: send this namespace's publications compressed to the
    /// connections that agreed on it. Default true; false for data that does not
    /// compress (already compressed, encrypted, random), where deflating only costs CPU.
    pub compress: bool,
}

impl NamespaceConfig {
    /// The defaults, as a constant (see each field).
    pub const DEFAULT: NamespaceConfig = NamespaceConfig {
        history_size: 100,
        history_ttl_secs: 0,
        presence: true,
        join_leave: false,
        allow_subscribe: true,
        allow_publish: true,
        allow_history: true,
        allow_presence: true,
        allow_anonymous: false,
        compress: true,
    };
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        NamespaceConfig::DEFAULT
    }
}

/// A user who may log in at `/auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user id; becomes the token's `sub`.
    pub name: String,
    /// An argon2 PHC string (`$argon2id$...`) from `ferry hash-password`.
    pub password_hash: String,
}

/// Limits on what peers control. Every limit has a documented failure: an error code or
/// a close code (see docs/PROTOCOL.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open WebSocket + SSE connections in total; more → HTTP 503 `CONNECTION_LIMIT`.
    /// Default 15000 (below the usual 20000 open-files limit).
    pub max_connections: usize,
    /// Accepted TCP sockets of any kind (HTTP requests, keep-alive connections, sockets
    /// that have not sent a byte yet, WebSockets, SSE streams). A socket past this is
    /// closed at once. Default 16000; at start it is lowered to fit the open-files limit
    /// (which `ferry serve` raises to its hard maximum), with a warning.
    pub max_sockets: usize,
    /// Time to receive a complete request head, ms, counted whenever a connection waits
    /// for one: on a new socket and between requests on a kept-alive connection. Silent
    /// sockets, headers sent a byte at a time and idle keep-alive connections are closed
    /// after it. Default 10000.
    pub header_timeout_ms: u64,
    /// Time for an `/api/*` or `/auth/*` request, body included, to be answered, ms;
    /// then 408. Default 30000.
    pub request_timeout_ms: u64,
    /// A socket whose pending write makes no progress for this long is closed, ms: a peer
    /// that stops reading (WebSocket, SSE, any HTTP response) is dropped, with no close
    /// frame since none could be written. Runs whether or not the connection's other
    /// timers do. Default 10000.
    pub write_timeout_ms: u64,
    /// Open connections per client IP. Default 2000.
    pub max_connections_per_ip: usize,
    /// Largest WebSocket message on `/ws`, in bytes; more → close 1009. Default 1 MiB.
    pub max_message_size: usize,
    /// Largest HTTP request body on `/api/*` and `/auth/*`, bytes; more → 413. Default 1 MiB.
    pub max_body_size: usize,
    /// Subscriptions one connection may hold. Default 128.
    pub max_subscriptions_per_connection: usize,
    /// Sustained commands per second per connection (token bucket refill). Default 100.
    pub rate_per_second: u32,
    /// Token bucket size: the burst a connection may send at once. Default 200.
    pub rate_burst: u32,
    /// Consecutive rate-limited commands after which the connection is closed with 1008.
    /// Default 50.
    pub rate_abuse_strikes: u32,
    // --- Login and payload hardening (issue 8, part B) ---
    /// Threads that check passwords for `/auth/login`. Each owns one argon2 memory buffer
    /// of the largest configured hash's memory cost (19 MiB for `ferry hash-password`
    /// hashes), allocated at its first login and reused: login memory is at most
    /// `login_concurrency` × that, whatever the burst. Default 2.
    pub login_concurrency: usize,
    /// Logins waiting for a free password-check thread; when full, `/auth/login` answers
    /// 429 `RATE_LIMIT_EXCEEDED` with `Retry-After: 1`. Default 16.
    pub login_queue_size: usize,
    /// Logins per second accepted from all addresses together (token bucket refill), on
    /// top of the per-address limit of 5 per second (burst 10); more → 429 with
    /// `Retry-After`. Default 20.
    pub login_rate_per_second: u32,
    /// Burst of the global login limit. Default 40.
    pub login_rate_burst: u32,
    /// Deepest nesting of arrays and objects in publication `data` (`{"a":[1]}` is 2) on
    /// `/ws` `publish`, `/api/publish` and `/api/broadcast`; deeper → `INVALID_MESSAGE`
    /// (HTTP 400). Default 32.
    pub max_data_depth: usize,
    /// Time to authenticate (token in URL/header or a first `auth` command), ms; then
    /// close 1008. Default 10000.
    pub auth_timeout_ms: u64,
    /// Grace after a token expires to send a fresh one with `auth`, ms; then close 1008.
    /// Default 30000.
    pub auth_refresh_grace_ms: u64,
    /// Close a connection from which nothing (not even a pong) arrived for this long, ms;
    /// 0 = off. Default 90000.
    pub idle_timeout_ms: u64,
    /// Server ping interval, ms. Default 25000.
    pub ping_interval_ms: u64,
    /// A peer that sends nothing within this time after a ping is dead and is closed
    /// with 1011, ms. Default 10000.
    pub pong_timeout_ms: u64,
    /// Frames queued for one connection before it counts as too slow and is closed with
    /// 1013 (memory stays bounded). Default 1024.
    pub send_queue_size: usize,
    /// Bytes queued for one connection (the frames' encoded sizes) before it counts as too
    /// slow and is closed with 1013. Default 16 MiB.
    pub send_queue_bytes: usize,
    /// Largest single reply, bytes. A history page or a subscribe-with-recovery reply
    /// stops adding publications at this size (the page says `has_more`; recovered
    /// publications past it follow as `message` pushes); any other reply that would pass
    /// it is answered with `MESSAGE_TOO_BIG` instead. Default 4 MiB (at least
    /// `max_message_size` + 64 KiB).
    pub max_reply_size: usize,
    /// Interval of `: keep-alive` comments on SSE streams, ms; they keep proxies from
    /// closing an idle stream. Default 15000.
    pub sse_keep_alive_ms: u64,
    /// On shutdown, time given to connections to drain their queues, ms. Default 5000.
    pub shutdown_grace_ms: u64,
    /// Longest `/test/delay/{s}`, seconds. Default 10.
    pub testbed_max_delay_secs: u64,
    /// Largest `/test/bytes/{n}`, bytes. Default 10 MiB.
    pub testbed_max_bytes: usize,
    /// Largest message on the `/test/echo` WebSocket, bytes; more → close 1009. Default
    /// 1 MiB (the Autobahn TestSuite's 16 MiB cases need `16777216`).
    pub testbed_max_echo_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 15_000,
            max_sockets: 16_000,
            header_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            write_timeout_ms: 10_000,
            max_connections_per_ip: 2_000,
            max_message_size: 1 << 20,
            max_body_size: 1 << 20,
            max_subscriptions_per_connection: 128,
            rate_per_second: 100,
            rate_burst: 200,
            rate_abuse_strikes: 50,
            login_concurrency: 2,
            login_queue_size: 16,
            login_rate_per_second: 20,
            login_rate_burst: 40,
            max_data_depth: 32,
            auth_timeout_ms: 10_000,
            auth_refresh_grace_ms: 30_000,
            idle_timeout_ms: 90_000,
            ping_interval_ms: 25_000,
            pong_timeout_ms: 10_000,
            send_queue_size: 1024,
            send_queue_bytes: 16 << 20,
            max_reply_size: 4 << 20,
            sse_keep_alive_ms: 15_000,
            shutdown_grace_ms: 5_000,
            testbed_max_delay_secs: 10,
            testbed_max_bytes: 10 << 20,
            testbed_max_echo_size: 1 << 20,
        }
    }
}

/// Uploads: tus 1.0 at `/files/`, downloads with Range at `GET /files/{id}`, multipart
/// at `POST /upload`. Sizes are bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadsConfig {
    /// Serve `/files/` and `/upload`. Default true.
    pub enabled: bool,
    /// Where uploads are kept (`ID.bin` data, `ID.json` state). Default `DATA_DIR/uploads`.
    pub dir: Option<PathBuf>,
    /// Largest upload; a bigger `Upload-Length` or body → 413. Default 4 GiB.
    pub max_size: u64,
    /// Bytes one user may keep on the server (finished and partial uploads); more → 413.
    /// Default 0 = no quota.
    pub user_quota: u64,
    /// Media types accepted (metadata `filetype` / the multipart part's type), e.g.
    /// `["image/*", "application/pdf"]`. Default empty = any.
    pub allowed_types: Vec<String>,
    /// How long an unfinished upload may stay, seconds, counted from its last `PATCH`;
    /// then the sweeper removes it (tus expiration). Default 86400.
    pub expiration_secs: u64,
    /// How often the sweeper looks for expired uploads, ms. Default 60000.
    pub sweep_interval_ms: u64,
    /// Channel on which a finished upload is announced (`{"id","name","size","sha256",
    /// "user","url"}`); empty = none. Default `uploads`.
    pub event_channel: String,
    /// Let requests without a token upload (as user `anonymous`) when `allow_anonymous`
    /// is also on. Default false.
    pub allow_anonymous: bool,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig {
            enabled: true,
            dir: None,
            max_size: 4 << 30,
            user_quota: 0,
            allowed_types: Vec::new(),
            expiration_secs: 86_400,
            sweep_interval_ms: 60_000,
            event_channel: "uploads".to_string(),
            allow_anonymous: false,
        }
    }
}

/// How the hub announces itself on the local network (SPEC L1, docs/PROTOCOL.md "LAN
/// discovery"). A listener on a loopback address is never announced.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnnounceConfig {
    /// Announce the hub. Default unset = automatic: on when `listen` is not a loopback
    /// address, off otherwise. `false` (`--no-announce`) turns it off; `true` cannot
    /// announce a loopback-only listener either (it is logged and skipped).
    pub enabled: Option<bool>,
    /// The node name clients see and can ask for (`ferry://NAME`). Default: the host
    /// name. 1 to 63 bytes, no control characters, `=` or `,`.
    pub name: Option<String>,
    /// Advertise over mDNS/DNS-SD as `_ferry._tcp.local.`. Default true.
    pub mdns: bool,
    /// Answer UDP broadcast probes, for networks that drop multicast. Default true.
    pub broadcast: bool,
    /// UDP port of the broadcast responder. Default 47471.
    pub broadcast_port: u16,
    /// Broadcast probes answered per second per source address (burst twice that);
    /// more are dropped silently. Default 5.
    pub broadcast_rate_per_ip: u32,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig {
            enabled: None,
            name: None,
            mdns: true,
            broadcast: true,
            broadcast_port: ferry_proto::discovery::DEFAULT_BROADCAST_PORT,
            broadcast_rate_per_ip: 5,
        }
    }
}

/// The data directory when none is configured, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "ferry-data";

/// TLS on the listen address (SPEC S11): https and wss with rustls, TLS 1.2 and 1.3 only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first). With `key`, turns TLS on. Default none.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert`. Default none.
    pub key: Option<PathBuf>,
    /// Generate a self-signed certificate for localhost, 127.0.0.1 and ::1 into
    /// `DATA_DIR/tls/` (reused on later starts) and serve it; the banner prints its SPKI
    /// pin for clients (`--pin`). For development: browsers warn about it. Default false.
    pub self_signed: bool,
    /// How often `cert` and `key` are checked for changes, in milliseconds. A changed pair
    /// is served to new connections; open ones keep theirs. SIGHUP reloads at once.
    /// Default 2000.
    pub reload_interval_ms: u64,
    /// Also listen here with plain HTTP and answer every request with a 308 redirect to
    /// the same path over https (e.g. `0.0.0.0:80`). Default none.
    pub redirect_from: Option<SocketAddr>,
    /// `Strict-Transport-Security: max-age=N` on every response; 0 sends none. Default
    /// 31536000 (a year) with `cert`/`key`, and none with `self_signed` (browsers would
    /// otherwise refuse plain http to localhost for a year).
    pub hsts_max_age_secs: Option<u64>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            self_signed: false,
            reload_interval_ms: 2000,
            redirect_from: None,
            hsts_max_age_secs: None,
        }
    }
}

impl TlsConfig {
    /// Whether TLS is configured (a certificate pair or `self_signed`).
    pub fn enabled(&self) -> bool {
        self.self_signed || self.cert.is_some() || self.key.is_some()
    }

    /// The HSTS max-age actually sent (see [`TlsConfig::hsts_max_age_secs`]).
    pub fn hsts_max_age(&self) -> u64 {
        match self.hsts_max_age_secs {
            Some(secs) => secs,
            None if self.self_signed => 0,
            None => 31_536_000,
        }
    }
}

/// The namespace of the sync roots' default channels (`sync:NAME`).
pub const SYNC_NAMESPACE_NAME: &str = "sync";

/// Options of the `sync` namespace when ferry.toml has no `[namespaces.sync]`: like the
/// default namespace, but with a long history (10,000 operations per root, kept 30 days),
/// so a sync client that was away recovers the operations it missed from the channel
/// instead of reading a manifest delta; past that it reads the delta.
pub static SYNC_NAMESPACE: NamespaceConfig = NamespaceConfig {
    history_size: 10_000,
    history_ttl_secs: 30 * 86_400,
    ..NamespaceConfig::DEFAULT
};

/// File sync (`[sync]`): the roots this hub serves and watches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// The roots (`[[sync.roots]]`, or `ferry serve --sync-root [NAME=]DIR`, which replaces
    /// the file's list). Default none.
    pub roots: Vec<SyncRootConfig>,
}

/// One sync root (`[[sync.roots]]`). Sizes are bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRootConfig {
    /// The root's name in URLs (`/sync/NAME/`): 1–64 of `[A-Za-z0-9_-]`, unique. Default
    /// `default`.
    #[serde(default = "SyncRootConfig::default_name")]
    pub name: String,
    /// The directory served; it must exist. Required.
    pub path: PathBuf,
    /// The channel operations are published on. Default `sync:NAME` (namespace `sync`,
    /// see [`SYNC_NAMESPACE`]). Reading needs Subscribe on it, writing Publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Largest file, through a PUT or a committed upload; more → 413. Default 4 GiB.
    #[serde(default = "SyncRootConfig::default_max_file_size")]
    pub max_file_size: u64,
    /// Total bytes of the files in the root; a change past it → 507. Default 0 = no limit.
    #[serde(default)]
    pub max_root_size: u64,
    /// Largest body of a simple `PUT files/PATH`; more → 413 (larger files go through a
    /// tus upload and `POST commit`). Default 16 MiB; never more than `max_file_size`.
    #[serde(default = "SyncRootConfig::default_put_max_size")]
    pub put_max_size: u64,
}

impl SyncRootConfig {
    fn default_name() -> String {
        "default".into()
    }
    fn default_max_file_size() -> u64 {
        4 << 30
    }
    fn default_put_max_size() -> u64 {
        16 << 20
    }

    /// A root with the default options.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        SyncRootConfig {
            name: name.into(),
            path: path.into(),
            channel: None,
            max_file_size: Self::default_max_file_size(),
            max_root_size: 0,
            put_max_size: Self::default_put_max_size(),
        }
    }

    /// The channel of the root's operations (see [`SyncRootConfig::channel`]).
    pub fn channel_name(&self) -> String {
        self.channel
            .clone()
            .unwrap_or_else(|| format!("{SYNC_NAMESPACE_NAME}:{}", self.name))
    }

    /// Parse the `--sync-root` argument, `[NAME=]DIR` (`NAME` defaults to `default`).
    pub fn from_arg(arg: &str) -> Self {
        match arg.split_once('=') {
            Some((name, dir)) if valid_sync_root_name(name) && !dir.is_empty() => {
                SyncRootConfig::new(name, dir)
            }
            _ => SyncRootConfig::new(Self::default_name(), arg),
        }
    }
}

/// Whether `name` may name a sync root: 1–64 of `[A-Za-z0-9_-]`.
pub fn valid_sync_root_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl SyncConfig {
    /// Whether `channel` is the channel of a root: only the hub publishes there.
    pub fn is_root_channel(&self, channel: &str) -> bool {
        self.roots.iter().any(|r| r.channel_name() == channel)
    }

    /// Check the roots: names valid and unique, each path an existing directory. The
    /// error says which root and what to change.
    pub fn check(&self) -> Result<(), SetupError> {
        let mut seen = std::collections::BTreeSet::new();
        for root in &self.roots {
            if !valid_sync_root_name(&root.name) {
                return Err(SetupError::Config(format!(
                    "sync root name {:?} is not 1-64 of A-Z a-z 0-9 _ -",
                    root.name
                )));
            }
            if !seen.insert(root.name.as_str()) {
                return Err(SetupError::Config(format!(
                    "two sync roots are named {:?}; give each a name of its own ([[sync.roots]] name = \"...\" or --sync-root NAME=DIR)",
                    root.name
                )));
            }
            match std::fs::metadata(&root.path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(SetupError::Config(format!(
                        "sync root {:?}: {} is not a directory",
                        root.name,
                        root.path.display()
                    )));
                }
                Err(e) => {
                    return Err(SetupError::Config(format!(
                        "sync root {:?}: {}: {e}; create the directory first",
                        root.name,
                        root.path.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Options of the Redis engine (`[redis]` in ferry.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Prefix of every key and pub/sub channel, so several hubs can share one Redis.
    /// Default `ferry`.
    pub key_prefix: String,
    /// How long a node's presence entries live without a refresh, in seconds (the node
    /// refreshes them every third of it). A dead node's clients leave presence within it.
    /// Default 30.
    pub presence_lease_secs: u64,
    /// A Redis command (publish, history, presence) that takes longer fails with
    /// `INTERNAL_ERROR`, in milliseconds. Default 2000.
    pub command_timeout_ms: u64,
    /// Pub/sub connections per node (1–64); each channel uses one, chosen by its name, so
    /// deliveries of different channels are read in parallel. Default 4.
    pub pubsub_connections: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            key_prefix: "ferry".into(),
            presence_lease_secs: 30,
            command_timeout_ms: 2000,
            pubsub_connections: 4,
        }
    }
}

/// `scheme://user:password@host…` with the credentials replaced by `<credentials>`.
pub fn redact_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}<credentials>@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn serialize_redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_credentials(url))
}

/// permessage-deflate on the WebSocket endpoints (see [`Config::compression`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WsCompression {
    /// Never negotiated.
    #[default]
    Off,
    /// Negotiated when offered, with no context takeover in either direction.
    On,
}

impl WsCompression {
    /// The negotiation policy, `None` when off.
    pub fn policy(self) -> Option<ferry_proto::deflate::ServerPolicy> {
        match self {
            WsCompression::Off => None,
            WsCompression::On => Some(ferry_proto::deflate::ServerPolicy {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
            }),
        }
    }
}

/// Where channel history lives (see [`Config::history`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryBackend {
    /// `DATA_DIR/history.sqlite3`.
    #[default]
    Sqlite,
    /// In this process's memory.
    Memory,
}

/// Top-level keys that `FERRY_*` environment variables may set. Other `FERRY_*` variables
/// (such as `FERRY_TOKEN` for client commands) are not configuration of the server.
const ENV_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "api_key",
    "jwt_secret",
    "metrics_token",
    "jwt_public_keys",
    "jwt_leeway_secs",
    "token_ttl_secs",
    "allow_anonymous",
    "allowed_origins",
    "testbed",
    "compression",
    "compression_min_size",
    "static_dir",
    "listen_backlog",
    "reuse_port",
    "history",
    "history_durability",
    "broker",
    "redis",
    "limits",
    "uploads",
    "announce",
    "tls",
    "sync",
];

/// List-valued keys whose `FERRY_*` variables are comma-separated values
/// (`FERRY_ALLOWED_ORIGINS=http://127.0.0.1:5173,https://app.example`); a value starting
/// with `[` is read as a TOML array instead.
const LIST_ENV_KEYS: &[&str] = &["allowed_origins", "jwt_public_keys"];

/// The list-valued `FERRY_*` variables that are set, as configuration values.
fn list_env_values() -> serde_json::Value {
    let mut values = serde_json::Map::new();
    for key in LIST_ENV_KEYS {
        let Ok(raw) = std::env::var(format!("FERRY_{}", key.to_ascii_uppercase())) else {
            continue;
        };
        let raw = raw.trim();
        let list: Vec<String> = if raw.starts_with('[') {
            match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
                Ok(t) => t
                    .get("v")
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(_) => vec![raw.to_string()],
            }
        } else {
            raw.split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect()
        };
        values.insert((*key).to_string(), list.into());
    }
    serde_json::Value::Object(values)
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, an environment variable or a value was invalid.
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    /// A file named explicitly with `--config` does not exist.
    #[error("config file {0} not found; create it or leave out --config to use defaults")]
    Missing(PathBuf),
}

impl Limits {
    /// The reply budget actually used: `max_reply_size`, but never below one message plus
    /// room for its envelope.
    pub fn reply_budget(&self) -> usize {
        self.max_reply_size.max(self.max_message_size + (64 << 10))
    }

    /// The timing rules of a connection, for its [`SessionClock`](ferry_proto::session::SessionClock).
    pub fn session(&self) -> ferry_proto::session::SessionLimits {
        ferry_proto::session::SessionLimits {
            auth_timeout: std::time::Duration::from_millis(self.auth_timeout_ms),
            auth_refresh_grace: std::time::Duration::from_millis(self.auth_refresh_grace_ms),
            ping_interval: std::time::Duration::from_millis(self.ping_interval_ms),
            pong_timeout: std::time::Duration::from_millis(self.pong_timeout_ms),
            idle_timeout: (self.idle_timeout_ms > 0)
                .then(|| std::time::Duration::from_millis(self.idle_timeout_ms)),
        }
    }
}

impl Config {
    /// Load defaults, then `file` (or `./ferry.toml` when it exists), then `FERRY_*`
    /// variables, then `overrides` (typically from command-line flags: only the keys that
    /// were given).
    pub fn load(file: Option<&Path>, overrides: serde_json::Value) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::Missing(path.to_owned())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => figment = figment.merge(Toml::file("ferry.toml")),
        }
        figment = figment
            .merge(
                Env::prefixed("FERRY_")
                    .filter(|key| {
                        let top = key.as_str().split("__").next().unwrap_or_default();
                        ENV_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
                            && !LIST_ENV_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
                    })
                    .split("__"),
            )
            .merge(Serialized::defaults(list_env_values()))
            .merge(Serialized::defaults(overrides));
        figment
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))
    }

    /// The options of `namespace` (`None` = the default namespace), or `None` when the
    /// namespace is not configured. With sync roots configured, an unconfigured `sync`
    /// namespace has [`SYNC_NAMESPACE`]'s options (the roots' default channels live there
    /// and need history).
    pub fn namespace(&self, namespace: Option<&str>) -> Option<&NamespaceConfig> {
        match namespace {
            None => Some(&self.default_namespace),
            Some(name) => match self.namespaces.get(name) {
                None if name == SYNC_NAMESPACE_NAME && !self.sync.roots.is_empty() => {
                    Some(&SYNC_NAMESPACE)
                }
                found => found,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_or_serialized_form() {
        let cfg = Config {
            api_key: Some(Secret::new("s3cr3t-key")),
            jwt_secret: Some(Secret::new("s3cr3t-jwt")),
            ..Config::default()
        };
        let debug = format!("{cfg:?}");
        let toml = toml::to_string(&cfg).expect("serialize");
        for shown in [debug, toml] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
        }
    }

    #[test]
    fn a_broker_password_is_not_printed() {
        let cfg = Config {
            broker: "redis://:hunter2@127.0.0.1:6379/0".into(),
            ..Config::default()
        };
        let shown = toml::to_string(&cfg).expect("serialize");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("redis://<credentials>@127.0.0.1:6379/0"),
            "{shown}"
        );
        assert_eq!(
            redact_credentials("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn sync_roots_are_parsed_checked_and_get_a_namespace_with_history() {
        assert_eq!(SyncRootConfig::from_arg("docs=/srv/docs").name, "docs");
        assert_eq!(
            SyncRootConfig::from_arg("/srv/a=b").path,
            PathBuf::from("/srv/a=b")
        );
        assert_eq!(SyncRootConfig::from_arg("/srv/x").name, "default");
        let dir = std::env::temp_dir();
        let mut cfg = Config::default();
        assert!(cfg.namespace(Some("sync")).is_none(), "only with roots");
        cfg.sync.roots = vec![SyncRootConfig::new("a", &dir)];
        assert!(cfg.sync.check().is_ok());
        assert_eq!(cfg.sync.roots[0].channel_name(), "sync:a");
        assert_eq!(
            cfg.namespace(Some("sync")).map(|n| n.history_size),
            Some(10_000)
        );
        cfg.sync.roots.push(SyncRootConfig::new("a", &dir));
        assert!(
            cfg.sync
                .check()
                .is_err_and(|e| e.to_string().contains("two sync roots"))
        );
        cfg.sync.roots = vec![SyncRootConfig::new("bad name", &dir)];
        assert!(cfg.sync.check().is_err());
        cfg.sync.roots = vec![SyncRootConfig::new("a", dir.join("ferry-no-such-dir"))];
        assert!(
            cfg.sync
                .check()
                .is_err_and(|e| e.to_string().contains("create the directory"))
        );
        let from_toml: Config = toml::from_str(
            "[[sync.roots]]\nname = \"docs\"\npath = \"/srv/docs\"\nmax_root_size = 10\n",
        )
        .expect("parse");
        assert_eq!(from_toml.sync.roots[0].put_max_size, 16 << 20);
        assert_eq!(from_toml.sync.roots[0].max_root_size, 10);
    }

    #[test]
    fn overrides_beat_defaults_and_chat_exists_out_of_the_box() {
        let cfg = Config::load(
            Some(Path::new("/nonexistent-ferry.toml")),
            serde_json::json!({}),
        );
        assert!(matches!(cfg, Err(ConfigError::Missing(_))));
        let cfg = Config::load(
            None,
            serde_json::json!({"listen": "127.0.0.1:0", "allow_anonymous": true}),
        )
        .expect("load");
        assert_eq!(cfg.listen.port(), 0);
        assert!(cfg.allow_anonymous);
        assert!(cfg.namespace(Some("chat")).is_some());
        assert!(cfg.namespace(Some("nope")).is_none());
        assert_eq!(cfg.namespace(None).map(|n| n.history_size), Some(100));
    }
}
