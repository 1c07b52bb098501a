//! Reading a server process's memory and CPU time from `/proc/PID` (Linux), for
//! `--server-pid`: the load generator and the server share a machine, so the generator
//! can measure the server exactly over its own measurement window.

use std::path::PathBuf;

/// Clock ticks per second of `utime`/`stime` in `/proc/PID/stat` (`USER_HZ`, 100 on
/// every Linux architecture that matters here).
const USER_HZ: f64 = 100.0;

/// A server process to measure.
#[derive(Debug, Clone)]
pub struct Probe {
    dir: PathBuf,
}

/// One reading.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// User + system CPU time, seconds.
    pub cpu_s: f64,
    /// The system (kernel) part of `cpu_s`, seconds.
    pub kernel_cpu_s: f64,
}

impl Probe {
    /// A probe of process `pid`; fails when `/proc/PID` cannot be read.
    pub fn new(pid: u32) -> anyhow::Result<Probe> {
        let probe = Probe {
            dir: PathBuf::from(format!("/proc/{pid}")),
        };
        probe.sample()?;
        Ok(probe)
    }

    /// Read RSS and CPU time now.
    pub fn sample(&self) -> anyhow::Result<Sample> {
        let status = std::fs::read_to_string(self.dir.join("status")).map_err(|e| {
            anyhow::anyhow!(
                "reading {}/status: {e}; is the server running?",
                self.dir.display()
            )
        })?;
        let stat = std::fs::read_to_string(self.dir.join("stat"))
            .map_err(|e| anyhow::anyhow!("reading {}/stat: {e}", self.dir.display()))?;
        let (user, system) = parse_cpu_ticks(&stat).unwrap_or_default();
        Ok(Sample {
            rss_kib: parse_rss_kib(&status).unwrap_or_default(),
            cpu_s: (user + system) as f64 / USER_HZ,
            kernel_cpu_s: system as f64 / USER_HZ,
        })
    }
}

/// `VmRSS:` of `/proc/PID/status`, in KiB.
fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `(utime, stime)` (fields 14 and 15) of `/proc/PID/stat`, in clock ticks. The command
/// name (field 2) may contain spaces and parentheses, so fields are counted after the
/// last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 → index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let status = "Name:\tferry\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status), Some(12345));
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some((250, 75)));
    }

    #[test]
    fn reads_this_process() {
        let probe = Probe::new(std::process::id()).expect("own /proc");
        let s = probe.sample().expect("sample");
        assert!(s.rss_kib > 0);
        assert!(
            s.kernel_cpu_s <= s.cpu_s,
            "the kernel part is within the total"
        );
    }
}
