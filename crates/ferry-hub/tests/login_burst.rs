//! `/auth/login` under a burst, over real sockets: argon2 work and memory stay bounded.
//! Alone in its test binary because it reads the process's resident memory (the hub runs
//! in this process), which other tests running alongside would disturb.
#![allow(clippy::unwrap_used)]

mod raw_http;
mod support;

use std::net::{IpAddr, Ipv4Addr};

use ferry_hub::config::UserConfig;
use serde_json::{Value, json};
use support::{TestServer, WAIT};

/// Bound on the growth of resident memory for 200 parallel logins: the two
/// password-check threads' argon2 buffers (2 × 19 MiB) plus room for sockets and tasks.
/// Before the login pool, the same burst grew it by gigabytes (one 19 MiB buffer per
/// blocking thread, kept by glibc's arenas).
const RSS_GROWTH_BOUND_KIB: u64 = 100 * 1024;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn login(
    server: &TestServer,
    from: IpAddr,
    user: &str,
    password: &str,
) -> (u16, Value, Option<String>) {
    let body = json!({"user": user, "password": password}).to_string();
    let r = tokio::time::timeout(
        WAIT * 6,
        raw_http::request(
            server.addr,
            Some(from),
            "POST",
            "/auth/login",
            &[],
            Some(&body),
            false,
        ),
    )
    .await
    .expect("login answered in time");
    (
        r.status,
        r.json(),
        r.header("retry-after").map(str::to_string),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_logins_is_bounded_in_memory_and_answered() {
    let hash = ferry_hub::auth::hash_password("correct horse").unwrap();
    let server = TestServer::start_with(|c| {
        c.users = vec![UserConfig {
            name: "alice".into(),
            password_hash: hash,
        }];
    })
    .await;
    let before = rss_kib();

    // 200 logins at once, each from its own loopback address (so the per-address limit
    // lets every one through): right password, wrong password and unknown users mixed.
    let attempts: Vec<(IpAddr, &str, &str)> = (0..200u32)
        .map(|i| {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, (i + 1) as u8));
            match i % 3 {
                0 => (ip, "alice", "correct horse"),
                1 => (ip, "alice", "wrong"),
                _ => (ip, "mallory", "correct horse"),
            }
        })
        .collect();
    let answers = futures_util::future::join_all(
        attempts
            .iter()
            .map(|&(ip, user, password)| login(&server, ip, user, password)),
    )
    .await;
    let grown = rss_kib().saturating_sub(before);

    let mut refused = 0;
    let mut checked = 0;
    for ((_, user, password), (status, body, retry_after)) in attempts.iter().zip(&answers) {
        match status {
            429 => {
                refused += 1;
                assert_eq!(body["code"], "RATE_LIMIT_EXCEEDED", "{body}");
                assert!(
                    body["message"].as_str().unwrap().contains("retry"),
                    "{body}"
                );
                assert_eq!(retry_after.as_deref(), Some("1"));
            }
            200 => {
                checked += 1;
                assert_eq!((*user, *password), ("alice", "correct horse"));
                assert_eq!(body["user"], "alice");
                assert!(body["token"].as_str().unwrap().len() > 20);
            }
            401 => {
                checked += 1;
                assert_ne!((*user, *password), ("alice", "correct horse"));
                assert_eq!(body["code"], "AUTH_FAILED", "{body}");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    eprintln!(
        "200 parallel logins: {checked} checked, {refused} refused with 429; resident memory +{grown} KiB"
    );
    assert!(refused > 0, "a burst of 200 must be partly refused");
    assert!(checked > 0, "some logins must be checked");
    assert!(
        grown < RSS_GROWTH_BOUND_KIB,
        "resident memory grew by {grown} KiB for 200 parallel logins (bound {RSS_GROWTH_BOUND_KIB} KiB)"
    );

    // After the burst, a valid login works again (after the advertised Retry-After).
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1));
    let mut last = (0, Value::Null, None);
    for _ in 0..10 {
        last = login(&server, from, "alice", "correct horse").await;
        if last.0 != 429 {
            break;
        }
        let wait: u64 = last.2.as_deref().and_then(|s| s.parse().ok()).unwrap_or(1);
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    }
    assert_eq!(last.0, 200, "{}", last.1);
    assert_eq!(last.1["user"], "alice");
    server.stop().await;
}
