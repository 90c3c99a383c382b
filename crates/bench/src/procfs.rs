//! Resource readings of the current process (`/proc/self`) or another one (`/proc/<pid>`).

/// Kernel clock ticks per second of `utime`/`stime` in `/proc/<pid>/stat`. Linux fixes
/// `USER_HZ` at 100 for user space on every architecture it supports.
const USER_HZ: f64 = 100.0;

/// Peak resident set size (VmHWM) in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    status_field("VmHWM:")
}

/// Current resident set size (VmRSS) in KiB.
pub fn rss_kib() -> Option<u64> {
    status_field("VmRSS:")
}

/// Peak resident set size (VmHWM) of process `pid`, in KiB.
pub fn peak_rss_kib_of(pid: u32) -> Option<u64> {
    parse_status_field(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?, "VmHWM:")
}

/// User plus system CPU time of process `pid` (every thread), in seconds.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    parse_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn status_field(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_field(&status, key)
}

fn parse_status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// User plus system CPU time of the whole process (every thread), in seconds.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_seconds(&stat)
}

fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses: fields after the last ')'
    // start with field 3 (state), so utime (14) and stime (15) are at offsets 11 and 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    4242 kB\nVmRSS:\t  4000 kB\n";
        assert_eq!(parse_status_field(status, "VmHWM:"), Some(4242));
        assert_eq!(parse_status_field(status, "VmSwap:"), None);
        let stat = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 1 1";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
    }

    #[test]
    fn reads_this_process() {
        assert!(peak_rss_kib().unwrap() >= rss_kib().unwrap() / 2);
        assert!(cpu_seconds().unwrap() >= 0.0);
        let me = std::process::id();
        assert!(peak_rss_kib_of(me).unwrap() > 0 && cpu_seconds_of(me).unwrap() >= 0.0);
        assert!(peak_rss_kib_of(u32::MAX).is_none());
    }
}
