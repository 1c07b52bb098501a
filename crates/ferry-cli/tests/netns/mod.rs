//! A private LAN for discovery tests: three network namespaces the test creates itself,
//! `hub` and `client` each with an `eth0` plugged into a bridge in `switch`. Nothing in
//! the host's own namespace is touched, so nothing leaves the machine. Dropping the
//! [`Lan`] deletes the namespaces (and with them the interfaces), also when a test
//! fails.
//!
//! Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN) and `ip` from iproute2; where namespaces
//! cannot be created, [`Lan::new`] fails with a message saying so, and the test fails.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::future::Future;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// The hub's first address on the private LAN.
pub const HUB_IP: &str = "10.77.0.1";
/// Where the hub moves to.
pub const HUB_IP_MOVED: &str = "10.77.0.3";
/// The client's address.
pub const CLIENT_IP: &str = "10.77.0.2";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Run `ip ARGS`; an error carries its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    iproute2(&[], "ip", args, "running `ip` (iproute2): is it installed?")
}

fn bridge(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    iproute2(
        &["netns", "exec", ns, "bridge"],
        "bridge",
        args,
        "running `bridge` (iproute2)",
    )
}

/// Run `ip PREFIX ARGS`, the iproute2 tool `name` with `args`; an error carries its stderr.
fn iproute2(prefix: &[&str], name: &str, args: &[&str], running: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(prefix)
        .args(args)
        .output()
        .context(running.to_string())?;
    if !out.status.success() {
        bail!(
            "`{name} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The three namespaces of one test.
pub struct Lan {
    /// Where the hub runs.
    pub hub: String,
    /// Where the client runs.
    pub client: String,
    switch: String,
}

impl Lan {
    /// Create the namespaces and wire them: hub `eth0` 10.77.0.1/24, client `eth0`
    /// 10.77.0.2/24, both bridged (multicast and broadcast pass), `lo` up everywhere.
    pub fn new() -> anyhow::Result<Lan> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("ferry-t{}-{n}", std::process::id());
        let lan = Lan {
            hub: format!("{base}-hub"),
            client: format!("{base}-cli"),
            switch: format!("{base}-sw"),
        };
        if let Err(e) = ip(&["netns", "add", &lan.switch]) {
            bail!(
                "cannot create a network namespace here, so the LAN discovery tests cannot run \
                 (they need root or CAP_SYS_ADMIN+CAP_NET_ADMIN and iproute2; they never use the \
                 real network instead): {e:#}"
            );
        }
        // From here on `lan`'s Drop removes whatever was made.
        lan.wire()?;
        Ok(lan)
    }

    fn wire(&self) -> anyhow::Result<()> {
        let (sw, hub, cli) = (&self.switch, &self.hub, &self.client);
        ip(&["netns", "add", hub])?;
        ip(&["netns", "add", cli])?;
        ip(&["-n", sw, "link", "add", "br0", "type", "bridge"])?;
        // Each veth pair is created inside a namespace with its peer in another: never in
        // the host's namespace.
        ip(&[
            "-n", hub, "link", "add", "eth0", "type", "veth", "peer", "name", "port-hub", "netns",
            sw,
        ])?;
        ip(&[
            "-n", cli, "link", "add", "eth0", "type", "veth", "peer", "name", "port-cli", "netns",
            sw,
        ])?;
        for port in ["port-hub", "port-cli"] {
            ip(&["-n", sw, "link", "set", port, "master", "br0"])?;
            ip(&["-n", sw, "link", "set", port, "up"])?;
        }
        ip(&["-n", sw, "link", "set", "br0", "up"])?;
        ip(&[
            "-n",
            hub,
            "addr",
            "add",
            &format!("{HUB_IP}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&[
            "-n",
            cli,
            "addr",
            "add",
            &format!("{CLIENT_IP}/24"),
            "dev",
            "eth0",
        ])?;
        for ns in [hub, cli] {
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Make the switch drop multicast (as many Wi-Fi networks do): the bridge stops
    /// flooding multicast to both ports; broadcast still passes.
    pub fn drop_multicast(&self) -> anyhow::Result<()> {
        for port in ["port-hub", "port-cli"] {
            bridge(
                &self.switch,
                &["link", "set", "dev", port, "mcast_flood", "off"],
            )?;
        }
        Ok(())
    }

    /// Move the hub's address from `from` to `to`.
    pub fn move_hub(&self, from: &str, to: &str) -> anyhow::Result<()> {
        ip(&[
            "-n",
            &self.hub,
            "addr",
            "del",
            &format!("{from}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&[
            "-n",
            &self.hub,
            "addr",
            "add",
            &format!("{to}/24"),
            "dev",
            "eth0",
        ])
    }

    /// `ip netns exec NS PROGRAM`, killed when dropped.
    pub fn command(&self, ns: &str, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd.kill_on_drop(true);
        cmd
    }

    /// Run `body` on a thread that has joined the client's namespace, on a
    /// current-thread runtime: every socket it opens (and every thread or process it
    /// starts) is on the private LAN. Panics in `body` propagate.
    pub fn as_client<F, Fut, T>(&self, body: F) -> T
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        let path = PathBuf::from("/run/netns").join(&self.client);
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                let ns = std::fs::File::open(&path).expect("open the client namespace");
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .expect("join the client namespace (setns)");
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(body())
            });
            match thread.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in [&self.hub, &self.client, &self.switch] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A `ferry serve` running in a namespace, killed when dropped.
pub struct NsHub {
    /// The bound address, from its `ferry listening on` line.
    pub addr: String,
    child: Child,
    _stdout: BufReader<ChildStdout>,
    log: PathBuf,
    _data: tempfile::TempDir,
}

impl NsHub {
    /// `ip netns exec NS ferry serve --listen LISTEN --name NAME EXTRA...` with the test
    /// API key and JWT secret; waits for its listening line.
    pub async fn start(
        lan: &Lan,
        ns: &str,
        listen: &str,
        name: &str,
        extra: &[&str],
    ) -> anyhow::Result<NsHub> {
        let data = tempfile::Builder::new()
            .prefix("ferry-lan-test-")
            .tempdir()?;
        let log = data.path().join("serve.log");
        let mut child = lan
            .command(ns, Path::new(env!("CARGO_BIN_EXE_ferry")))
            .args(["serve", "--listen", listen, "--name", name, "--data-dir"])
            .arg(data.path())
            .args([
                "--api-key",
                crate::support::API_KEY,
                "--jwt-secret",
                crate::support::JWT_SECRET,
            ])
            .args(extra)
            .env_remove("FERRY_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawning ferry serve")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut line)).await;
        let addr = line
            .trim()
            .strip_prefix("ferry listening on http://")
            .map(str::to_string);
        match (read, addr) {
            (Ok(Ok(_)), Some(addr)) => Ok(NsHub {
                addr,
                child,
                _stdout: stdout,
                log,
                _data: data,
            }),
            _ => bail!(
                "ferry serve in {ns} did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    }

    /// Its log (stderr) so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stop it (SIGKILL, like a crash or a pulled cable) and wait until it is gone.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// `ferry discover ARGS` run in `ns`: (exit code, stdout, stderr).
pub async fn ferry_discover(lan: &Lan, ns: &str, args: &[&str]) -> (i32, String, String) {
    let out = lan
        .command(ns, Path::new(env!("CARGO_BIN_EXE_ferry")))
        .arg("discover")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run ferry discover");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
