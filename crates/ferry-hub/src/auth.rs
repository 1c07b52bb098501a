//! Authentication (JWT HS256/RS256/ES256, API keys, passwords) and authorization
//! (per-channel capabilities from token claims and namespace rules).

use std::time::{SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use ferry_proto::ErrorCode;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::channel::ChannelName;
use crate::config::{Config, NamespaceConfig};
use crate::error::{HubError, HubResult, SetupError};

/// A capability on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Receive publications.
    Subscribe,
    /// Publish from a client connection.
    Publish,
    /// Read history.
    History,
    /// Read presence.
    Presence,
}

/// A grant in the token's `caps` claim: these capabilities on channels matching these
/// patterns (exact names, or a prefix ending in `*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityGrant {
    /// Channel names or prefixes like `chat:*`.
    pub channels: Vec<String>,
    /// The capabilities granted on them.
    pub allow: Vec<Capability>,
}

impl CapabilityGrant {
    fn grants(&self, cap: Capability, channel: &str) -> bool {
        self.allow.contains(&cap)
            && self
                .channels
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => channel.starts_with(prefix),
                    None => pattern == channel,
                })
    }
}

/// The JWT claims the hub reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch; absent = never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not before, seconds since the Unix epoch: the token is refused until then (less
    /// the leeway). Absent = valid at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch: a token issued in the future (beyond the
    /// leeway) is refused. Absent = not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Capability grants beyond the namespace rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<CapabilityGrant>,
}

/// Who a connection is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user id; empty for anonymous.
    pub user: String,
    /// Grants from the token.
    pub caps: Vec<CapabilityGrant>,
    /// When the token expires (seconds since the Unix epoch).
    pub expires_at: Option<u64>,
}

impl Identity {
    /// An anonymous identity.
    pub fn anonymous() -> Self {
        Identity::default()
    }

    /// Whether this is an anonymous identity.
    pub fn is_anonymous(&self) -> bool {
        self.user.is_empty()
    }

    /// Whether this identity holds `cap` on `channel` under namespace options `ns`.
    ///
    /// Token grants win; otherwise the namespace rules decide. User channels (`#a,b`) are
    /// restricted to their users whatever the grants say.
    pub fn allows(&self, cap: Capability, channel: &ChannelName<'_>, ns: &NamespaceConfig) -> bool {
        if !channel.user_allowed(&self.user) && channel.users.is_some() {
            return false;
        }
        if self.caps.iter().any(|g| g.grants(cap, channel.full)) {
            return true;
        }
        let may_subscribe = if self.is_anonymous() {
            ns.allow_anonymous
        } else {
            ns.allow_subscribe
        };
        match cap {
            Capability::Subscribe => may_subscribe,
            Capability::Publish => !self.is_anonymous() && ns.allow_publish,
            Capability::History => may_subscribe && ns.allow_history,
            Capability::Presence => may_subscribe && ns.presence && ns.allow_presence,
        }
    }
}

/// Current time in whole seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Verifies client tokens and issues login tokens.
pub struct Authenticator {
    hs: Option<(DecodingKey, EncodingKey)>,
    rsa: Vec<DecodingKey>,
    ec: Vec<DecodingKey>,
    leeway: u64,
    token_ttl: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs.is_some())
            .field("rs256_keys", &self.rsa.len())
            .field("es256_keys", &self.ec.len())
            .finish()
    }
}

impl Authenticator {
    /// Build from configuration, reading the PEM files in `jwt_public_keys`.
    pub fn from_config(config: &Config) -> Result<Self, SetupError> {
        let hs = config.jwt_secret.as_ref().map(|s| {
            (
                DecodingKey::from_secret(s.expose().as_bytes()),
                EncodingKey::from_secret(s.expose().as_bytes()),
            )
        });
        let mut rsa = Vec::new();
        let mut ec = Vec::new();
        for path in &config.jwt_public_keys {
            let pem = std::fs::read(path).map_err(|e| SetupError::file("read", path, e))?;
            if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                rsa.push(key);
            } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                ec.push(key);
            } else {
                return Err(SetupError::Config(format!(
                    "{} is neither an RSA nor an EC public key in PEM form: give PEM public keys in jwt_public_keys",
                    path.display()
                )));
            }
        }
        Ok(Authenticator {
            hs,
            rsa,
            ec,
            leeway: config.jwt_leeway_secs,
            token_ttl: config.token_ttl_secs,
        })
    }

    /// Verify a token. `AUTH_EXPIRED` for an expired one, `AUTH_FAILED` for anything else
    /// wrong (signature, algorithm, malformed, missing `sub`).
    pub fn verify(&self, token: &str) -> HubResult<Identity> {
        let failed =
            |why: &str| HubError::new(ErrorCode::AuthFailed, format!("invalid token: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| failed("malformed JWT"))?;
        let keys: Vec<&DecodingKey> = match header.alg {
            Algorithm::HS256 => self.hs.iter().map(|(d, _)| d).collect(),
            Algorithm::RS256 => self.rsa.iter().collect(),
            Algorithm::ES256 => self.ec.iter().collect(),
            _ => return Err(failed("only HS256, RS256 and ES256 are accepted")),
        };
        if keys.is_empty() {
            return Err(failed(&format!("no key configured for {:?}", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["sub"]);
        let mut last = failed("signature does not match");
        for key in keys {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    if data.claims.sub.is_empty() {
                        return Err(failed("empty `sub`"));
                    }
                    // jsonwebtoken checks `nbf` (above) but not `iat`.
                    if let Some(iat) = data.claims.iat
                        && iat > unix_now().saturating_add(self.leeway)
                    {
                        return Err(failed(&format!(
                            "`iat` is in the future (more than the {} s leeway); check the issuer's clock",
                            self.leeway
                        )));
                    }
                    return Ok(Identity {
                        user: data.claims.sub,
                        caps: data.claims.caps,
                        expires_at: data.claims.exp,
                    });
                }
                Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => {
                    return Err(HubError::new(
                        ErrorCode::AuthExpired,
                        "token expired; get a fresh one and send it with an `auth` command",
                    ));
                }
                Err(e) if matches!(e.kind(), ErrorKind::ImmatureSignature) => {
                    return Err(failed(&format!(
                        "not valid yet: `nbf` is in the future (more than the {} s leeway)",
                        self.leeway
                    )));
                }
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {}
                Err(e) => last = failed(&e.to_string()),
            }
        }
        Err(last)
    }

    /// Issue an HS256 token for `user`, valid for the configured TTL. Returns the token
    /// and its expiry (seconds since the Unix epoch).
    pub fn issue(&self, user: &str) -> HubResult<(String, u64)> {
        let Some((_, key)) = &self.hs else {
            return Err(HubError::new(
                ErrorCode::InternalError,
                "no jwt_secret configured, so no tokens can be issued",
            ));
        };
        let now = unix_now();
        let exp = now + self.token_ttl;
        let claims = Claims {
            sub: user.to_string(),
            exp: Some(exp),
            nbf: None,
            iat: Some(now),
            caps: Vec::new(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|e| HubError::new(ErrorCode::InternalError, format!("signing failed: {e}")))?;
        Ok((token, exp))
    }
}

/// Hash a password into an argon2id PHC string.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
}

/// Check a password against a PHC string. A malformed hash never matches.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Compare an offered API key with the configured one in constant time.
pub fn api_key_matches(expected: &str, offered: &str) -> bool {
    let (a, b) = (expected.as_bytes(), offered.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn auth() -> Authenticator {
        let cfg = Config {
            jwt_secret: Some(Secret::new("test-secret")),
            ..Config::default()
        };
        Authenticator::from_config(&cfg).expect("auth")
    }

    #[test]
    fn issued_tokens_verify_and_tampered_ones_fail() {
        let a = auth();
        let (token, exp) = a.issue("alice").expect("issue");
        let id = a.verify(&token).expect("verify");
        assert_eq!(id.user, "alice");
        assert_eq!(id.expires_at, Some(exp));
        let mut bad = token.clone();
        bad.pop();
        bad.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            a.verify(&bad).expect_err("tampered").code,
            ErrorCode::AuthFailed
        );
        assert_eq!(
            a.verify("garbage").expect_err("garbage").code,
            ErrorCode::AuthFailed
        );
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("hunter2").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "hunter2"));
        assert!(!verify_password(&h, "hunter3"));
        assert!(!verify_password("not-a-hash", "hunter2"));
    }

    #[test]
    fn capabilities_follow_grants_and_namespace_rules() {
        let ns = NamespaceConfig {
            allow_publish: false,
            ..NamespaceConfig::default()
        };
        let ch = ChannelName::parse("news:today").expect("valid");
        let user = Identity {
            user: "u".into(),
            ..Identity::default()
        };
        assert!(user.allows(Capability::Subscribe, &ch, &ns));
        assert!(!user.allows(Capability::Publish, &ch, &ns));
        let granted = Identity {
            caps: vec![CapabilityGrant {
                channels: vec!["news:*".into()],
                allow: vec![Capability::Publish],
            }],
            ..user.clone()
        };
        assert!(granted.allows(Capability::Publish, &ch, &ns));
        assert!(!Identity::anonymous().allows(Capability::Subscribe, &ch, &ns));
        let dm = ChannelName::parse("news:dm#a,b").expect("valid");
        assert!(!granted.allows(Capability::Subscribe, &dm, &ns));
        assert!(api_key_matches("abc", "abc") && !api_key_matches("abc", "abd"));
    }
}
