//! Password checks for `/auth/login`, on a small fixed pool of threads.
//!
//! argon2 is memory-hard on purpose: each check needs the hash's memory cost (19 MiB for
//! `ferry hash-password` hashes). Run on tokio's blocking pool, a burst of logins used up
//! to 512 threads × 19 MiB, and glibc kept the freed memory in per-thread arenas (4.45 GB
//! after 200 parallel logins, still held 30 s later). Here:
//!
//! - `limits.login_concurrency` dedicated threads each own **one** argon2 memory buffer,
//!   allocated at their first login and reused for every later one, so login memory is
//!   fixed at threads × the largest configured memory cost and never grows with a burst;
//! - they are fed by a bounded queue (`limits.login_queue_size`); when it is full the
//!   login is refused at once with `RATE_LIMIT_EXCEEDED` (HTTP 429, `Retry-After: 1`);
//! - a global token bucket (`limits.login_rate_per_second` / `login_rate_burst`) sits next
//!   to the per-address limit;
//! - stored hashes are parsed once at start; one whose memory cost exceeds
//!   [`MAX_HASH_MEMORY_KIB`] (or that is not an argon2 PHC string) stops the server from
//!   starting, with a message naming the user;
//! - an unknown user name is checked against a dummy hash with the same parameters as the
//!   first configured user, so names cannot be probed by timing.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use ferry_proto::ErrorCode;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::Config;
use crate::error::{HubError, HubResult};

/// The largest argon2 memory cost accepted in a stored password hash, in KiB (64 MiB).
/// `ferry hash-password` uses 19 MiB (argon2's and OWASP's recommended minimum); each
/// password-check thread holds one buffer of the largest configured cost.
pub const MAX_HASH_MEMORY_KIB: u32 = 64 * 1024;

/// Seconds a refused login is told to wait (`Retry-After`).
pub const LOGIN_RETRY_AFTER_SECS: u64 = 1;

/// A stored argon2 hash, parsed once: what a check needs, without re-parsing the PHC string.
struct StoredHash {
    algorithm: Algorithm,
    version: Version,
    params: Params,
    salt: Vec<u8>,
    expected: Vec<u8>,
}

impl StoredHash {
    /// Parse a PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
    fn parse(phc: &str) -> Result<StoredHash, String> {
        let hash = PasswordHash::new(phc).map_err(|e| format!("not an argon2 PHC string: {e}"))?;
        let algorithm = Algorithm::try_from(hash.algorithm)
            .map_err(|e| format!("unsupported algorithm `{}`: {e}", hash.algorithm))?;
        let version = match hash.version {
            Some(v) => Version::try_from(v).map_err(|e| format!("unsupported version: {e}"))?,
            None => Version::default(),
        };
        let params = Params::try_from(&hash).map_err(|e| format!("invalid parameters: {e}"))?;
        if params.m_cost() > MAX_HASH_MEMORY_KIB {
            return Err(format!(
                "its memory cost is {} KiB; the most accepted is {MAX_HASH_MEMORY_KIB} KiB \
                 (re-hash the password with `ferry hash-password`)",
                params.m_cost()
            ));
        }
        let salt = hash.salt.ok_or("the hash has no salt")?;
        let mut salt_buf = [0u8; 64];
        let salt = salt
            .decode_b64(&mut salt_buf)
            .map_err(|e| format!("invalid salt: {e}"))?
            .to_vec();
        let expected = hash
            .hash
            .ok_or("the PHC string has no hash value")?
            .as_bytes()
            .to_vec();
        Ok(StoredHash {
            algorithm,
            version,
            params,
            salt,
            expected,
        })
    }

    /// A hash that nothing matches, costing the same work as `like`.
    fn dummy(like: Option<&StoredHash>) -> StoredHash {
        let mut salt = vec![0u8; 16];
        rand::fill(&mut salt[..]);
        let mut expected = vec![0u8; 32];
        rand::fill(&mut expected[..]);
        match like {
            Some(h) => StoredHash {
                algorithm: h.algorithm,
                version: h.version,
                params: h.params.clone(),
                salt,
                expected: {
                    let mut e = vec![0u8; h.expected.len()];
                    rand::fill(&mut e[..]);
                    e
                },
            },
            None => StoredHash {
                algorithm: Algorithm::default(),
                version: Version::default(),
                params: Params::default(),
                salt,
                expected,
            },
        }
    }

    /// Check `password`, using `memory` (at least `params.block_count()` blocks).
    fn verify(&self, password: &[u8], memory: &mut [Block]) -> bool {
        let argon = Argon2::new(self.algorithm, self.version, self.params.clone());
        let mut out = vec![0u8; self.expected.len()];
        if argon
            .hash_password_into_with_memory(password, &self.salt, &mut out, memory)
            .is_err()
        {
            return false;
        }
        // Constant time: a mismatch takes as long wherever it is.
        out.len() == self.expected.len()
            && out
                .iter()
                .zip(&self.expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

struct Job {
    hash: Arc<StoredHash>,
    password: String,
    reply: tokio::sync::oneshot::Sender<bool>,
}

/// The `/auth/login` password checker: configured users' hashes, the global login rate
/// limit and the queue to the password-check threads. Dropping it ends the threads once
/// they finish the check at hand.
pub struct LoginPool {
    users: HashMap<String, Arc<StoredHash>>,
    dummy: Arc<StoredHash>,
    queue: SyncSender<Job>,
    global: Option<DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for LoginPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginPool")
            .field("users", &self.users.len())
            .finish()
    }
}

impl LoginPool {
    /// Parse every configured user's hash and start the password-check threads.
    ///
    /// Fails, naming the user, when a hash is not an argon2 PHC string or its memory cost
    /// is over [`MAX_HASH_MEMORY_KIB`]; fails when a thread cannot be started.
    pub fn new(config: &Config) -> Result<LoginPool, String> {
        let mut users = HashMap::new();
        let mut first: Option<Arc<StoredHash>> = None;
        for user in &config.users {
            let hash = StoredHash::parse(&user.password_hash)
                .map_err(|e| format!("password hash of user `{}`: {e}", user.name))?;
            let hash = Arc::new(hash);
            first.get_or_insert_with(|| hash.clone());
            users.insert(user.name.clone(), hash);
        }
        let dummy = Arc::new(StoredHash::dummy(first.as_deref()));
        let blocks = users
            .values()
            .chain(std::iter::once(&dummy))
            .map(|h| h.params.block_count())
            .max()
            .unwrap_or(0);
        let limits = &config.limits;
        let (queue, jobs) = std::sync::mpsc::sync_channel::<Job>(limits.login_queue_size);
        let jobs = Arc::new(Mutex::new(jobs));
        for n in 0..limits.login_concurrency.max(1) {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("ferry-login-{n}"))
                .spawn(move || check_passwords(&jobs, blocks))
                .map_err(|e| format!("cannot start a password-check thread: {e}"))?;
        }
        let global = NonZeroU32::new(limits.login_rate_per_second).map(|rate| {
            let burst = NonZeroU32::new(limits.login_rate_burst).unwrap_or(rate);
            RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
        });
        Ok(LoginPool {
            users,
            dummy,
            queue,
            global,
        })
    }

    /// Check `user`'s `password`. `Ok(true)` only for a configured user with the right
    /// password. `RATE_LIMIT_EXCEEDED` (with `retry_after_ms` details) when the global
    /// login rate is exceeded or every password-check thread is busy and the queue full.
    pub async fn check(&self, user: &str, password: String) -> HubResult<bool> {
        if let Some(global) = &self.global
            && global.check().is_err()
        {
            return Err(busy(
                "too many logins on this server right now; retry in a second",
            ));
        }
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy.clone(), false),
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        match self.queue.try_send(Job {
            hash,
            password,
            reply,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(busy(
                    "every password check is busy and the login queue is full; retry in a second",
                ));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(HubError::new(
                    ErrorCode::InternalError,
                    "the password-check threads have stopped",
                ));
            }
        }
        let ok = answer.await.map_err(|_| {
            HubError::new(ErrorCode::InternalError, "the password check was abandoned")
        })?;
        Ok(ok && known)
    }
}

fn busy(message: &str) -> HubError {
    HubError::new(ErrorCode::RateLimitExceeded, message)
        .with_details(serde_json::json!({ "retry_after_ms": LOGIN_RETRY_AFTER_SECS * 1000 }))
}

/// One password-check thread: one memory buffer of `blocks` argon2 blocks, allocated at
/// the first job and reused. Ends when the pool (the queue's sender) is dropped.
fn check_passwords(jobs: &Mutex<Receiver<Job>>, blocks: usize) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        if job.reply.is_closed() {
            continue; // the client went away while queued
        }
        if memory.len() < blocks {
            memory = vec![Block::default(); blocks];
        }
        let ok = job.hash.verify(job.password.as_bytes(), &mut memory);
        let _ = job.reply.send(ok);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash_password;
    use crate::config::UserConfig;

    fn config_with(hash: String) -> Config {
        Config {
            users: vec![UserConfig {
                name: "alice".into(),
                password_hash: hash,
            }],
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn checks_passwords_of_known_users_only() {
        let pool = LoginPool::new(&config_with(hash_password("pw").expect("hash"))).expect("pool");
        assert!(pool.check("alice", "pw".into()).await.expect("check"));
        assert!(!pool.check("alice", "nope".into()).await.expect("check"));
        assert!(!pool.check("bob", "pw".into()).await.expect("check"));
    }

    #[test]
    fn refuses_hashes_over_the_memory_cap_and_malformed_ones() {
        let big = "$argon2id$v=19$m=1048576,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                   AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let e = LoginPool::new(&config_with(big.into())).expect_err("too big");
        assert!(e.contains("alice") && e.contains("1048576 KiB"), "{e}");
        let e = LoginPool::new(&config_with("plain-text".into())).expect_err("malformed");
        assert!(e.contains("alice") && e.contains("PHC"), "{e}");
    }
}
