//! What `golens doctor` reads from the host, before any judgement. Every
//! value is a `Reading`: the value, or why it could not be read. The rules
//! (`rules/`) turn these into checks; they never read a file themselves.

use std::{fmt, io, net::IpAddr, path::Path};

/// Why a value could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The file (or syscall) that was read, e.g. "/proc/42/environ" or "adjtimex(2)".
    pub source: String,
    pub kind: UnreadableKind,
    /// e.g. "permission denied", "unexpected format".
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnreadableKind {
    Absent,
    /// Another user's process without CAP_SYS_PTRACE, usually.
    PermissionDenied,
    /// The file was read but did not parse.
    Malformed,
    Other,
}

impl Unreadable {
    pub fn io(source: &Path, error: &io::Error) -> Unreadable {
        let (kind, reason) = match error.kind() {
            io::ErrorKind::NotFound => (UnreadableKind::Absent, "absent".to_string()),
            io::ErrorKind::PermissionDenied => {
                (UnreadableKind::PermissionDenied, "permission denied".to_string())
            }
            _ => (UnreadableKind::Other, error.to_string()),
        };
        Unreadable { source: source.display().to_string(), kind, reason }
    }

    pub fn malformed(source: &Path, expected: &str) -> Unreadable {
        Unreadable {
            source: source.display().to_string(),
            kind: UnreadableKind::Malformed,
            reason: format!("unexpected format (expected {expected})"),
        }
    }
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.reason)
    }
}

pub type Reading<T> = Result<T, Unreadable>;

/// Everything the checks look at.
#[derive(Debug, Clone)]
pub struct Facts {
    /// /proc/sys/kernel/osrelease, for the report's header.
    pub kernel_release: Reading<String>,
    pub max_map_count: Reading<u64>,
    pub file_nr: Reading<FileNr>,
    pub port_range: Reading<PortRange>,
    /// /proc/net/tcp and tcp6 (golens' network namespace).
    pub tcp_sockets: Reading<Vec<TcpSocket>>,
    pub tcp_tw_reuse: Reading<u64>,
    pub somaxconn: Reading<u64>,
    /// `TcpExt: ListenOverflows` of /proc/net/netstat, since boot.
    pub listen_overflows: Reading<u64>,
    /// `None`: nf_conntrack is not loaded.
    pub conntrack: Reading<Option<Conntrack>>,
    /// `None`: the kernel has no transparent huge pages.
    pub transparent_hugepage: Reading<Option<TransparentHugepage>>,
    pub clocksource: Reading<Clocksource>,
    pub ntp: Reading<NtpStatus>,
    pub swappiness: Reading<u64>,
    /// SwapTotal of /proc/meminfo.
    pub swap_total_kib: Reading<u64>,
    pub overcommit_memory: Reading<u64>,
    pub processes: Processes,
}

/// fs.file-nr: allocated handles, allocated-but-free (always 0 since 2.6), max.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileNr {
    pub allocated: u64,
    pub max: u64,
}

/// net.ipv4.ip_local_port_range, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl PortRange {
    pub fn size(&self) -> u64 {
        u64::from(self.high.saturating_sub(self.low)) + 1
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

/// TCP states of /proc/net/tcp (include/net/tcp_states.h).
pub const TCP_TIME_WAIT: u8 = 0x06;
pub const TCP_LISTEN: u8 = 0x0A;

/// One line of /proc/net/tcp or tcp6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    pub state: u8,
    pub inode: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conntrack {
    pub count: u64,
    pub max: u64,
}

/// The selected (bracketed) values of /sys/kernel/mm/transparent_hugepage/.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransparentHugepage {
    pub enabled: Reading<String>,
    pub defrag: Reading<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clocksource {
    pub current: String,
    /// available_clocksource (empty when unreadable: it only improves the fix).
    pub available: Vec<String>,
}

/// From adjtimex(2) with no change requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtpStatus {
    /// STA_UNSYNC is clear.
    pub synchronized: bool,
    /// Maximum error estimated by the kernel, microseconds.
    pub max_error_us: i64,
}

/// The Go processes found and the processes that could not be looked at.
#[derive(Debug, Clone, Default)]
pub struct Processes {
    /// Listing /proc failed: no process could be looked at.
    pub listing_error: Option<Unreadable>,
    pub go: Vec<GoProcess>,
    /// Processes whose executable could not be read, so whether they are Go
    /// is unknown.
    pub uninspected: Vec<Uninspected>,
}

impl Processes {
    /// One line on the processes that could not be inspected, e.g. "1 process
    /// not inspected (pid 1 init), so whether it is Go is unknown: permission
    /// denied reading /proc/PID/exe (…)".
    pub fn uninspected_summary(&self) -> Option<String> {
        let uninspected = &self.uninspected;
        let first = uninspected.first()?;
        let mut pids: Vec<String> = uninspected
            .iter()
            .take(5)
            .map(|p| {
                if p.comm.is_empty() {
                    p.pid.to_string()
                } else {
                    format!("{} {}", p.pid, p.comm)
                }
            })
            .collect();
        if uninspected.len() > pids.len() {
            pids.push("…".into());
        }
        let reason = if uninspected.iter().all(|p| p.permission_denied) {
            "permission denied reading /proc/PID/exe (ptrace access: needs CAP_SYS_PTRACE, and a \
             target with no capability golens lacks)"
                .to_string()
        } else {
            first.reason.clone()
        };
        let (count, verb) = match uninspected.len() {
            1 => ("1 process".to_string(), "it is"),
            n => (format!("{n} processes"), "they are"),
        };
        Some(format!(
            "{count} not inspected (pid {}), so whether {verb} Go is unknown: {reason}",
            pids.join(", ")
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uninspected {
    pub pid: u32,
    /// /proc/PID/comm (readable by anyone); empty when it could not be read.
    pub comm: String,
    pub reason: String,
    pub permission_denied: bool,
}

#[derive(Debug, Clone)]
pub struct GoProcess {
    pub pid: u32,
    pub comm: String,
    /// e.g. "go1.21.13", from .go.buildinfo.
    pub go_version: Option<String>,
    /// Lines of /proc/PID/maps.
    pub vma_count: Reading<u64>,
    /// Entries of /proc/PID/fd.
    pub open_fds: Reading<u64>,
    pub nofile: Reading<NofileLimit>,
    /// Listening TCP sockets the process holds; counted only when its soft
    /// RLIMIT_NOFILE is at most 1024 (`None` otherwise).
    pub listening_sockets: Option<Reading<u64>>,
    /// The Go-relevant variables of /proc/PID/environ (the environment at exec).
    pub env: Reading<GoEnv>,
    /// CPUs in Cpus_allowed_list of /proc/PID/status (what Go's NumCPU sees).
    pub cpus_allowed: Reading<u32>,
    pub cpu_limit: Reading<CpuLimit>,
    /// `None`: no memory limit on the process's cgroup or its ancestors.
    pub memory_limit: Reading<Option<MemoryLimit>>,
}

/// Max open files of /proc/PID/limits; `None` is "unlimited".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// Environment variables that change the Go runtime's behaviour; the first
/// occurrence wins, as in the runtime's own `gogetenv`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoEnv {
    pub gomaxprocs: Option<String>,
    pub gomemlimit: Option<String>,
    pub godebug: Option<String>,
}

/// A CFS bandwidth quota: `quota_us` of CPU time every `period_us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
    /// The file it came from (cpu.max or cpu.cfs_quota_us).
    pub file: String,
}

impl CpuQuota {
    pub fn cpus(&self) -> f64 {
        self.quota_us as f64 / self.period_us.max(1) as f64
    }
}

/// CPU quotas of a process's cgroups (v2 cpu.max, v1 cpu.cfs_quota_us).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuLimit {
    /// The quota of the cgroup that holds the process (the one Go ≥ 1.25 reads).
    pub leaf: Option<CpuQuota>,
    /// The smallest quota on the way up to the root (what throttles it).
    pub tightest: Option<CpuQuota>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes: u64,
    /// The file it came from (memory.max or memory.limit_in_bytes).
    pub file: String,
}
