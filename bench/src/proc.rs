//! Process measurements: the broker's CPU and RSS from `/proc/PID`, the tool's own CPU
//! from `getrusage`, and the tool's file-descriptor limit.

use anyhow::{Context, bail};

/// CPU seconds (user + system) consumed so far by `pid`: `/proc/PID/stat` fields 14 and
/// 15 (utime, stime) in clock ticks, divided by `sysconf(_SC_CLK_TCK)`.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is --pid right?)"))?;
    // The command name (field 2) is in parentheses and may hold spaces: start after the
    // last ')'. What follows is field 3 (state), so utime/stime are at indices 11/12.
    let rest = &stat[stat.rfind(')').context("malformed /proc/PID/stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<u64>()
            .context("non-numeric /proc/PID/stat field")
    };
    let ticks = tick(11)? + tick(12)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok(ticks as f64 / hz as f64)
}

/// Resident set size of `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// Peak resident set size of `pid` in KiB (`VmHWM`).
pub fn hwm_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("bad {key} line {line:?}"))
}

/// CPU seconds (user + system) used by this process so far.
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: get/setrlimit read and write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                return wanted.rlim_cur as u64;
            }
        }
        lim.rlim_cur as u64
    }
}

/// A before/after sample of the broker (when `--pid` is given) and of the tool.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub broker_cpu: Option<f64>,
    pub tool_cpu: f64,
    pub at: std::time::Instant,
}

impl Sample {
    pub fn take(pid: Option<u32>) -> anyhow::Result<Sample> {
        Ok(Sample {
            broker_cpu: pid.map(cpu_seconds).transpose()?,
            tool_cpu: self_cpu_seconds(),
            at: std::time::Instant::now(),
        })
    }
}
