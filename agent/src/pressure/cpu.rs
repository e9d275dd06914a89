//! The CPU time a process used, for the verdict's "waiting for CPU" share (run-queue time
//! against running time).

use crate::discovery::procfs::proc_root;

/// utime + stime of process `pid` (all its threads, exited ones included), in seconds; None
/// when /proc/PID/stat cannot be read.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(proc_root().join(pid.to_string()).join("stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks_per_second > 0)
        .then(|| stat_cpu_ticks(&stat))?
        .map(|t| t as f64 / ticks_per_second as f64)
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line, in clock ticks. The comm (field
/// 2) may hold spaces and parentheses: fields are counted after the last ')'.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_after_an_odd_comm() {
        let stat = "4242 (my (odd) comm) S 4200 4242 4200 0 -1 4194560 1234 0 0 0 731 402 0 0 \
                    20 0 7 0 123456 1000000 2000";
        assert_eq!(stat_cpu_ticks(stat), Some(1133));
        assert_eq!(stat_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(stat_cpu_ticks("garbage"), None);
        assert!(cpu_seconds(std::process::id()).is_some());
        assert_eq!(cpu_seconds(u32::MAX), None);
    }
}
