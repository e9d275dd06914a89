//! What the bench reads from /proc: CPU time of a process, the machine, CPU pinning, and the
//! other benchmarks that may be running.

use std::{fs, thread};

extern "C" {
    fn sysconf(name: i32) -> i64;
}

/// The machine the bench ran on, for the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_kib: Option<u64>,
    /// sysconf(_SC_CLK_TCK): the unit of utime and stime in /proc/PID/stat.
    pub clock_ticks: u64,
    /// sysconf failed and 100 was assumed.
    pub clock_ticks_assumed: bool,
}

impl Machine {
    pub fn read() -> Machine {
        const SC_CLK_TCK: i32 = 2; // <unistd.h> on Linux (glibc and musl)
                                   // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { sysconf(SC_CLK_TCK) };
        Machine {
            cpus: thread::available_parallelism().map_or(0, usize::from),
            cpu_model: fs::read_to_string("/proc/cpuinfo")
                .ok()
                .as_deref()
                .and_then(parse_cpu_model)
                .unwrap_or_else(|| "unknown CPU".into()),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or("unknown".into(), |release| release.trim().to_owned()),
            memory_kib: fs::read_to_string("/proc/meminfo")
                .ok()
                .as_deref()
                .and_then(parse_mem_total_kib),
            clock_ticks: u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100),
            clock_ticks_assumed: ticks <= 0,
        }
    }

    /// Clock ticks as seconds.
    pub fn seconds(&self, ticks: u64) -> f64 {
        ticks as f64 / self.clock_ticks as f64
    }
}

/// utime + stime of process `pid` (all its threads, dead ones included), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    parse_stat_cpu_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime + stime (fields 14 and 15) from a /proc/PID/stat line. The comm (field 2) may hold
/// spaces and parentheses: fields are counted after the last ')'.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    // The first field after the comm is field 3 (state): utime is field 14.
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of process `pid` in nanoseconds, and how many threads it has: the sum of the
/// scheduler's run time (the first field of /proc/PID/task/TID/schedstat) over its live
/// threads. Unlike utime + stime, which move in clock ticks (10 ms at CLK_TCK 100, 0.3 % of a
/// bench round's CPU), this is exact; a thread that exits in between takes its time with it,
/// so callers compare the thread lists of the two readings.
pub fn cpu_ns(pid: u32) -> Option<ThreadCpu> {
    let mut cpu = ThreadCpu::default();
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(schedstat) = fs::read_to_string(task.path().join("schedstat")) else { continue };
        cpu.ns += parse_schedstat_run_ns(&schedstat)?;
        cpu.tids.push(task.file_name().to_str()?.parse().ok()?);
    }
    cpu.tids.sort_unstable();
    (!cpu.tids.is_empty()).then_some(cpu)
}

/// What `cpu_ns` read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThreadCpu {
    pub ns: u64,
    /// The live threads, sorted.
    pub tids: Vec<u32>,
}

impl ThreadCpu {
    /// CPU seconds from `self` to `later`, or None when a thread read here had exited by then
    /// (its run time would be missing from the difference).
    pub fn seconds_until(&self, later: &ThreadCpu) -> Option<f64> {
        let kept = self.tids.iter().all(|tid| later.tids.binary_search(tid).is_ok());
        (kept && later.ns >= self.ns).then(|| (later.ns - self.ns) as f64 / 1e9)
    }
}

/// "494328 1813213 3" (run ns, run-queue wait ns, timeslices) → 494328.
fn parse_schedstat_run_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// CPU time of every process but `excluded`, in clock ticks: utime + stime + cutime +
/// cstime of each. Between two calls, the difference is the CPU time every other process used
/// (exactly, as utime + stime add up to the scheduler's own runtime): a process that exits and
/// is reaped in between moves its time into its parent's cutime + cstime, where it still
/// counts. Unlike /proc/stat's per-CPU times, which are sampled on the timer tick, this does
/// not alias with a periodic load.
pub fn cpu_ticks_of_all_but(excluded: &[u32]) -> u64 {
    let Ok(entries) = fs::read_dir("/proc") else { return 0 };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !excluded.contains(pid))
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| parse_stat_all_ticks(&stat))
        .sum()
}

/// utime + stime + cutime + cstime (fields 14 to 17) from a /proc/PID/stat line.
fn parse_stat_all_ticks(stat: &str) -> Option<u64> {
    let fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let times: Vec<u64> =
        fields.skip(14 - 3).take(4).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    (times.len() == 4).then(|| times.iter().sum())
}

/// The parent pid (field 4) from a /proc/PID/stat line.
fn parse_stat_ppid(stat: &str) -> Option<u32> {
    stat.get(stat.rfind(')')? + 1..)?.split_whitespace().nth(1)?.parse().ok()
}

/// Involuntary context switches of every live thread of process `pid` (preempted while still
/// runnable), from /proc/PID/task/*/status.
pub fn involuntary_switches(pid: u32) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = fs::read_to_string(task.path().join("status")) else { continue };
        total += status_field(&status, "nonvoluntary_ctxt_switches:")?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// The CPUs process `pid` may run on (`Cpus_allowed_list:` of /proc/PID/status), e.g. "0".
pub fn allowed_cpus(pid: u32) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&status, "Cpus_allowed_list:").map(str::to_owned)
}

/// The command line of process `pid`, words joined by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    Some(command_line(&fs::read(format!("/proc/{pid}/cmdline")).ok()?))
}

/// The comm of process `pid`.
pub fn comm(pid: u32) -> Option<String> {
    Some(fs::read_to_string(format!("/proc/{pid}/comm")).ok()?.trim().to_owned())
}

fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|line| line.strip_prefix(name)).map(str::trim)
}

fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    let line = cpuinfo.lines().find(|line| line.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

/// The `MemTotal:` line of /proc/meminfo, in KiB.
fn parse_mem_total_kib(meminfo: &str) -> Option<u64> {
    parse_kib_field(meminfo, "MemTotal:")
}

/// A `Name:   1234 kB` line of /proc/meminfo or /proc/PID/status, in KiB.
pub fn parse_kib_field(text: &str, name: &str) -> Option<u64> {
    let mut words = status_field(text, name)?.split_whitespace();
    let number = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(number)
}

/// Processes whose command line holds `needle`, other than this process and its ancestors
/// (the cargo that started it, the shell that started cargo): (pid, command line).
pub fn other_processes_running(needle: &str) -> Vec<(u32, String)> {
    let ours = own_ancestry();
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let processes: Vec<(u32, String)> = entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            Some((pid, command_line(&cmdline)))
        })
        .collect();
    matching_others(&processes, &ours, needle)
}

/// Pids of the processes whose comm is `name`.
pub fn processes_named(name: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| comm(pid).is_some_and(|comm| comm == name))
        .collect()
}

/// This process and its ancestors, up to pid 1.
fn own_ancestry() -> Vec<u32> {
    let mut chain = vec![std::process::id()];
    while let Some(&pid) = chain.last() {
        let parent = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat_ppid);
        match parent {
            Some(parent) if parent > 1 && !chain.contains(&parent) => chain.push(parent),
            _ => break,
        }
    }
    chain
}

/// /proc/PID/cmdline (NUL-separated) as one line.
fn command_line(raw: &[u8]) -> String {
    let words: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|word| !word.is_empty())
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect();
    words.join(" ")
}

fn matching_others(processes: &[(u32, String)], ours: &[u32], needle: &str) -> Vec<(u32, String)> {
    processes
        .iter()
        .filter(|(pid, cmdline)| !ours.contains(pid) && cmdline.contains(needle))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_time_is_exact_and_refuses_lost_threads() {
        assert_eq!(parse_schedstat_run_ns("494328 1813213 3\n"), Some(494_328));
        assert_eq!(parse_schedstat_run_ns(""), None);
        let before = ThreadCpu { ns: 1_000_000_000, tids: vec![10, 11, 12] };
        let grown = ThreadCpu { ns: 3_500_000_000, tids: vec![10, 11, 12, 13] };
        assert_eq!(before.seconds_until(&grown), Some(2.5));
        let lost = ThreadCpu { ns: 3_500_000_000, tids: vec![10, 12, 13] };
        assert_eq!(before.seconds_until(&lost), None);
        let mine = cpu_ns(std::process::id()).unwrap();
        assert!(mine.ns > 0 && mine.tids.contains(&std::process::id()), "{mine:?}");
    }

    const STAT: &str = "4242 (my (odd) comm) S 4200 4242 4200 0 -1 4194560 1234 0 0 0 \
                        731 402 0 0 20 0 7 0 123456 1000000 2000 18446744073709551615";

    #[test]
    fn cpu_ticks_are_utime_plus_stime_after_the_comm() {
        assert_eq!(parse_stat_cpu_ticks(STAT), Some(731 + 402));
        assert_eq!(parse_stat_all_ticks(STAT), Some(731 + 402));
        let with_children = STAT.replace(" 731 402 0 0 ", " 731 402 17 5 ");
        assert_eq!(parse_stat_all_ticks(&with_children), Some(731 + 402 + 17 + 5));
        assert_eq!(parse_stat_all_ticks("1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12"), None);
        assert_eq!(parse_stat_ppid(STAT), Some(4200));
        assert_eq!(parse_stat_cpu_ticks("4242 (short) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn reads_machine_fields() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n";
        assert_eq!(parse_cpu_model(cpuinfo).as_deref(), Some("AMD EPYC"));
        assert_eq!(parse_mem_total_kib("MemTotal:       24684084 kB\n"), Some(24684084));
        assert_eq!(parse_mem_total_kib("MemTotal: 12\n"), None);
        assert_eq!(
            parse_mem_total_kib("MemTotal:       24684544 kB\nMemFree: 1 kB\n"),
            Some(24684544)
        );
        let status = "Name:\tdemo\nCpus_allowed:\t1\nCpus_allowed_list:\t0\n\
                      voluntary_ctxt_switches:\t150\nnonvoluntary_ctxt_switches:\t545\n";
        assert_eq!(status_field(status, "Cpus_allowed_list:"), Some("0"));
        assert_eq!(status_field(status, "nonvoluntary_ctxt_switches:"), Some("545"));
    }

    #[test]
    fn other_benchmarks_exclude_our_own_ancestry() {
        assert_eq!(command_line(b"cargo\0xtask\0bench\0scale\0"), "cargo xtask bench scale");
        let processes = [
            (10, "bash -c cargo xtask bench".to_owned()),
            (11, "cargo xtask bench".to_owned()),
            (12, "target/debug/xtask bench".to_owned()),
            (20, "timeout 3000 cargo xtask bench scale".to_owned()),
            (21, "target/debug/xtask bench scale".to_owned()),
            (30, "vim xtask/src/bench/mod.rs".to_owned()),
        ];
        let others = matching_others(&processes, &[12, 11, 10], "xtask bench");
        let pids: Vec<u32> = others.iter().map(|(pid, _)| *pid).collect();
        assert_eq!(pids, [20, 21]);
    }
}
