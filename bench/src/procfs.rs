//! The broker's resource use, read from Linux's /proc (the broker runs on this machine).

use std::fs;

use anyhow::{Context, Result, anyhow};

/// Clock ticks per second of /proc/<pid>/stat times. Linux reports them in USER_HZ, which is
/// 100 on every architecture it supports (sysconf(_SC_CLK_TCK)); we read no libc for one constant.
const USER_HZ: f64 = 100.0;

/// One reading of a process's memory and CPU time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Resident set size (VmRSS), KiB.
    pub rss_kb: u64,
    /// Peak resident set size since the process started (VmHWM), KiB.
    pub hwm_kb: u64,
    /// User plus system CPU time, seconds.
    pub cpu_s: f64,
}

pub fn usage(pid: u32) -> Result<Usage> {
    let status_path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&status_path)
        .with_context(|| format!("reading {status_path}: is the broker (pid {pid}) running?"))?;
    let stat_path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&stat_path).with_context(|| format!("reading {stat_path}"))?;
    Ok(Usage {
        rss_kb: status_kb(&status, "VmRSS").ok_or_else(|| anyhow!("no VmRSS in {status_path}"))?,
        hwm_kb: status_kb(&status, "VmHWM").ok_or_else(|| anyhow!("no VmHWM in {status_path}"))?,
        cpu_s: cpu_seconds(&stat).ok_or_else(|| anyhow!("unreadable {stat_path}: {stat:?}"))?,
    })
}

/// CPU time (user + system) this process has used so far, seconds; `None` without /proc.
pub fn own_cpu_s() -> Option<f64> {
    usage(std::process::id()).ok().map(|u| u.cpu_s)
}

/// A "Key:   123 kB" line of /proc/<pid>/status.
fn status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// utime + stime of /proc/<pid>/stat. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted from the last ')'.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, utime field 14, stime field 15.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_kilobytes() {
        let status = "Name:\tmosquitto\nVmHWM:\t   10240 kB\nVmRSS:\t    8192 kB\nThreads:\t1\n";
        assert_eq!(status_kb(status, "VmRSS"), Some(8192));
        assert_eq!(status_kb(status, "VmHWM"), Some(10240));
        assert_eq!(status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn cpu_time_is_counted_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(cpu_seconds(stat), Some(3.0));
    }

    #[test]
    fn our_own_process_can_be_read() {
        let me = usage(std::process::id()).expect("own /proc entry");
        assert!(me.rss_kb > 0 && me.hwm_kb >= me.rss_kb);
    }
}
