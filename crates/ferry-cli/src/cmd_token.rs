//! `ferry token --user NAME` mints an HS256 client token with the local hub's secret;
//! `ferry token check TOKEN` explains, claim by claim, whether the hub accepts a token.

use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use clap::{Args, Subcommand};
use ferry_hub::Config;
use ferry_hub::auth::{Authenticator, CapabilityGrant, unix_now};
use ferry_hub::config::Secret;
use serde_json::{Value, json};

use crate::local::{LocalArgs, Which};

/// Shown after `ferry token --help`.
pub const TOKEN_HELP: &str =
    "Signs with the hub's JWT secret: --jwt-secret, FERRY_JWT_SECRET, jwt_secret in
ferry.toml, or DATA_DIR/secrets.toml as `ferry serve` generated it. Prints the token alone
on stdout (and what it grants on stderr), so it can go straight into a variable.

Examples:
  JWT=$(ferry token --user alice)
  ferry token --user bot --ttl 30m --caps '[{\"channels\":[\"news:*\"],\"allow\":[\"publish\"]}]'
  ferry token check \"$JWT\"

Exit codes:
  0    minted (check: the hub accepts the token)
  2    usage: no JWT secret found, a bad --ttl, --caps or --channel-info
  3    check: the hub refuses the token (the output says which check failed)";

/// `ferry token`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: Option<TokenCommand>,
    /// The user: the token's `sub` claim.
    #[arg(long, required = true)]
    user: Option<String>,
    /// Lifetime: 90s, 30m, 1h, 7d or plain seconds.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// Capability grants (the `caps` claim), e.g.
    /// '[{"channels":["chat:*"],"allow":["subscribe","publish"]}]'.
    #[arg(long, value_name = "JSON")]
    caps: Option<String>,
    /// Extra JSON about the user carried in the token (the `info` claim).
    #[arg(long, value_name = "JSON")]
    channel_info: Option<String>,
    /// Print {token, user, expires_at} as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    secret: SecretArgs,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Explain whether the hub accepts TOKEN: signature, algorithm, expiry, claims.
    Check(CheckArgs),
}

/// `ferry token check TOKEN`.
#[derive(Args, Debug)]
struct CheckArgs {
    /// The token (JWT).
    token: String,
    #[command(flatten)]
    secret: SecretArgs,
}

/// Where the JWT secret comes from.
#[derive(Args, Debug, Clone)]
struct SecretArgs {
    /// The hub's HS256 secret [default: from ferry.toml or DATA_DIR/secrets.toml].
    #[arg(long, env = "FERRY_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    #[command(flatten)]
    local: LocalArgs,
}

impl SecretArgs {
    fn secret(&self) -> Result<String, String> {
        match self.jwt_secret.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Ok(s.to_string()),
            None => self.local.secret(Which::JwtSecret),
        }
    }
}

/// `90s`, `30m`, `1h`, `7d` or seconds.
fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => raw.split_at(i),
        None => (raw, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{raw}` is not a duration like 90s, 30m, 1h or 7d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit `{other}`: use s, m, h or d")),
    };
    match n.checked_mul(unit) {
        Some(0) => {
            Err("the lifetime must be more than 0 (tokens without expiry are a risk)".into())
        }
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Err(format!("`{raw}` is too long")),
    }
}

fn usage(message: impl std::fmt::Display, hint: &str) -> ExitCode {
    eprintln!("error: USAGE: {message}");
    if !hint.is_empty() {
        eprintln!("hint: {hint}");
    }
    ExitCode::from(crate::exit::USAGE)
}

/// Mint an HS256 token; used by `ferry token` and by `ferry serve --dev`.
pub fn mint(
    secret: &str,
    user: &str,
    ttl: Duration,
    caps: Option<Value>,
    info: Option<Value>,
) -> anyhow::Result<(String, u64)> {
    let now = unix_now();
    let exp = now + ttl.as_secs();
    let mut claims = json!({"sub": user, "iat": now, "exp": exp});
    if let Some(caps) = caps {
        claims["caps"] = caps;
    }
    if let Some(info) = info {
        claims["info"] = info;
    }
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?;
    Ok((token, exp))
}

/// `ferry token ...`.
pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    if let Some(TokenCommand::Check(check)) = args.command {
        return Ok(run_check(check));
    }
    let Some(user) = args.user.filter(|u| !u.is_empty()) else {
        return Ok(usage("--user must not be empty", ""));
    };
    let caps = match args.caps.as_deref().map(serde_json::from_str::<Value>) {
        None => None,
        Some(Ok(v)) => match serde_json::from_value::<Vec<CapabilityGrant>>(v.clone()) {
            Ok(_) => Some(v),
            Err(e) => {
                return Ok(usage(
                    format!("--caps is not a list of grants: {e}"),
                    "e.g. '[{\"channels\":[\"chat:*\"],\"allow\":[\"subscribe\",\"publish\",\"history\",\"presence\"]}]'",
                ));
            }
        },
        Some(Err(e)) => return Ok(usage(format!("--caps is not JSON: {e}"), "")),
    };
    let info = match args
        .channel_info
        .as_deref()
        .map(serde_json::from_str::<Value>)
    {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => return Ok(usage(format!("--channel-info is not JSON: {e}"), "")),
    };
    let secret = match args.secret.secret() {
        Ok(s) => s,
        Err(why) => return Ok(usage(why, "or pass --jwt-secret SECRET / FERRY_JWT_SECRET")),
    };
    let (token, exp) = mint(&secret, &user, args.ttl, caps, info)?;
    if args.json {
        println!(
            "{}",
            json!({"token": token, "user": user, "expires_at": exp})
        );
    } else {
        println!("{token}");
        eprintln!(
            "ferry: HS256 token for user {user}, expires in {} (exp {exp}); the namespace rules in ferry.toml decide what it may do{}",
            indicatif::HumanDuration(args.ttl),
            if args.caps.is_some() {
                ", plus its caps"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON of one base64url segment of a JWT.
fn segment(part: Option<&str>) -> Option<Value> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part?.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn line(ok: bool, what: &str, detail: impl std::fmt::Display) {
    println!("{} {what}: {detail}", if ok { "ok  " } else { "FAIL" });
}

fn ago(secs: u64, now: u64) -> String {
    if secs == now {
        "just now".to_string()
    } else if secs > now {
        format!(
            "in {}",
            indicatif::HumanDuration(Duration::from_secs(secs - now))
        )
    } else {
        format!(
            "{} ago",
            indicatif::HumanDuration(Duration::from_secs(now - secs))
        )
    }
}

fn run_check(args: CheckArgs) -> ExitCode {
    let token = args.token.trim();
    let mut overrides = serde_json::Map::new();
    if let Some(dir) = &args.secret.local.data_dir {
        overrides.insert("data_dir".into(), dir.display().to_string().into());
    }
    let mut config = match Config::load(args.secret.local.config.as_deref(), overrides.into()) {
        Ok(c) => c,
        Err(e) => return usage(e, ""),
    };
    let secret = args.secret.secret();
    if let Ok(s) = &secret {
        config.jwt_secret = Some(Secret::new(s.clone()));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let (header, claims) = match (
        parts.len(),
        segment(parts.first().copied()),
        segment(parts.get(1).copied()),
    ) {
        (3, Some(h), Some(c)) => (h, c),
        _ => {
            line(
                false,
                "format",
                "not a JWT (three base64url parts: header.claims.signature); copy the whole token",
            );
            return ExitCode::from(crate::exit::REFUSED);
        }
    };
    line(true, "format", "a JWT");
    let alg = header["alg"].as_str().unwrap_or("none");
    let alg_ok = matches!(alg, "HS256" | "RS256" | "ES256");
    line(
        alg_ok,
        "algorithm",
        if alg_ok {
            alg.to_string()
        } else {
            format!("{alg}: the hub accepts HS256, RS256 and ES256 only")
        },
    );
    if alg == "HS256" {
        match &secret {
            Ok(s) => {
                let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
                validation.validate_exp = false;
                validation.validate_nbf = false;
                validation.required_spec_claims.clear();
                let ok = jsonwebtoken::decode::<Value>(
                    token,
                    &jsonwebtoken::DecodingKey::from_secret(s.as_bytes()),
                    &validation,
                )
                .is_ok();
                line(
                    ok,
                    "signature",
                    if ok {
                        "matches the hub's JWT secret"
                    } else {
                        "does not match the hub's JWT secret (signed with another secret, or altered)"
                    },
                );
            }
            Err(why) => line(false, "signature", format!("cannot check: {why}")),
        }
    }
    let now = unix_now();
    let leeway = config.jwt_leeway_secs;
    match claims["sub"].as_str() {
        Some(sub) if !sub.is_empty() => line(true, "sub", format!("user {sub}")),
        _ => line(
            false,
            "sub",
            "missing or empty: the hub needs the user in `sub`",
        ),
    }
    match claims["exp"].as_u64() {
        Some(exp) if exp + leeway < now => line(
            false,
            "exp",
            format!(
                "expired {} (mint a fresh one with `ferry token`)",
                ago(exp, now)
            ),
        ),
        Some(exp) => line(true, "exp", format!("expires {}", ago(exp, now))),
        None => println!(
            "warn exp: none: the token never expires; mint tokens with a lifetime (`ferry token --ttl`)"
        ),
    }
    if let Some(nbf) = claims["nbf"].as_u64() {
        line(
            nbf <= now + leeway,
            "nbf",
            format!("valid from {}", ago(nbf, now)),
        );
    }
    if let Some(iat) = claims["iat"].as_u64() {
        line(
            iat <= now + leeway,
            "iat",
            format!("issued {}", ago(iat, now)),
        );
    }
    if !claims["caps"].is_null() {
        match serde_json::from_value::<Vec<CapabilityGrant>>(claims["caps"].clone()) {
            Ok(grants) => line(true, "caps", format!("{} grant(s)", grants.len())),
            Err(e) => line(false, "caps", format!("not a list of grants: {e}")),
        }
    }
    let verdict = Authenticator::from_config(&config)
        .map_err(|e| e.to_string())
        .and_then(|a| {
            a.verify(token)
                .map_err(|e| format!("{}: {}", e.code, e.message))
        });
    match verdict {
        Ok(identity) => {
            println!(
                "accepted: the hub takes this token as user {}",
                identity.user
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("refused: {why}");
            ExitCode::from(crate::exit::REFUSED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_read_like_people_write_them() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_ttl("15"), Ok(Duration::from_secs(15)));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("abc").is_err());
    }
}
