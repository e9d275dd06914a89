//! Pressure against limits, read from /proc, sysfs and sock_diag (no eBPF).
//!
//! Every value is read next to its limit so that a ratio can be alerted on:
//! open fds vs the soft `RLIMIT_NOFILE`, VMAs vs `vm.max_map_count`, CPU
//! throttling vs the cgroup CPU quota (and GOMAXPROCS vs that quota), ephemeral
//! ports in use vs `ip_local_port_range`, conntrack entries vs
//! `nf_conntrack_max`, allocated files vs `fs.file-max`.
//!
//! It runs once per collection (every 5 s by default) for up to hundreds of
//! processes, so every read is one small file or one directory listing: fds are
//! counted with `readdir` (no `stat` per entry), `/proc/PID/maps` is read in
//! 64 KiB chunks counting newlines (no allocation per line), ports come from one
//! netlink dump per address family.
//!
//! Nothing here fails as a whole: every value is an `Option`, and a value that
//! cannot be read is `None` with an [`Unavailable`] reason kept in the struct's
//! `reasons` map (keyed by the field's name) for the agent's log. Absent beats a
//! wrong zero.
//!
//! Parsers are pure functions on text or bytes (unit-tested on fixtures in each
//! file); readers are thin. Real conditions (a process at its fd limit, 10 000
//! VMAs, a network namespace out of ephemeral ports, a throttled cgroup) are
//! tested in `privileged_tests.rs`.

pub(crate) mod cgroup;
mod gomaxprocs;
mod host;
mod netns;
mod ports;
mod process;
pub mod runtime_memory;

#[cfg(test)]
mod privileged_tests;

use std::{collections::BTreeMap, fs, io, path::Path, path::PathBuf};

use serde::{Deserialize, Serialize};

pub use cgroup::CgroupMounts;
pub use gomaxprocs::default_godebug_from_modinfo;
pub use host::read_host;
pub use netns::read_host_in_net_namespace;
pub use process::{GoRuntimeHints, ProcessReader};

/// Host-wide pressure. Network values are those of the network namespace of
/// the thread that reads them: golens' own (the host's, for a DaemonSet with
/// `hostNetwork`) with [`read_host`], or another one with
/// [`read_host_in_net_namespace`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostPressure {
    /// `vm.max_map_count`: the VMA limit of every process.
    pub max_map_count: Option<u64>,
    /// File handles allocated host-wide (first field of `fs.file-nr`).
    pub files_allocated: Option<u64>,
    /// `fs.file-max` (third field of `fs.file-nr`, the same value).
    pub files_max: Option<u64>,
    /// `net.ipv4.ip_local_port_range`, inclusive (it also governs IPv6).
    pub ephemeral_port_range: Option<(u16, u16)>,
    /// How many ports that range holds (`high - low + 1`).
    pub ephemeral_ports: Option<u64>,
    /// Distinct local TCP ports inside the range held by any TCP socket
    /// (IPv4 and IPv6, every state including LISTEN and TIME_WAIT), over all
    /// local addresses. See `ports.rs` for why distinct ports.
    pub ephemeral_ports_used: Option<u64>,
    /// TCP sockets in TIME_WAIT (IPv4 and IPv6, any port).
    pub tcp_time_wait: Option<u64>,
    /// Where the two values above came from.
    pub port_count_method: Option<PortCountMethod>,
    /// `TcpExt: ListenOverflows` of /proc/net/netstat: a counter since boot
    /// (per network namespace).
    pub listen_overflows: Option<u64>,
    /// `net.netfilter.nf_conntrack_count`; None when nf_conntrack is not loaded.
    pub conntrack_entries: Option<u64>,
    /// `net.netfilter.nf_conntrack_max`; None when nf_conntrack is not loaded.
    pub conntrack_max: Option<u64>,
    /// Why a field is None, by field name (e.g. `"conntrack_entries"`). Also
    /// holds `"port_count_netlink"` when netlink failed and /proc was used.
    pub reasons: BTreeMap<&'static str, Unavailable>,
}

/// Pressure of one process, read through golens' /proc.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessPressure {
    pub pid: u32,
    /// Entries of /proc/PID/fd.
    pub open_fds: Option<u64>,
    /// Soft `Max open files` of /proc/PID/limits; None (reason `Unlimited`)
    /// when unlimited.
    pub max_fds: Option<u64>,
    /// Lines of /proc/PID/maps: the process's VMAs now (`mm->map_count`).
    pub vmas: Option<u64>,
    /// CPU time throttled by the CFS bandwidth controller, in seconds since
    /// the cgroup was created (a counter). The process's own cgroup only.
    pub cpu_throttled_seconds: Option<f64>,
    /// The CPU quota of the process's own cgroup, in cores (quota / period);
    /// None (reason `Unlimited`) when there is none. A tighter quota on a
    /// parent cgroup is not seen, exactly as the Go runtime does not see it.
    pub cpu_quota_cores: Option<f64>,
    /// The hierarchy the two values above come from: v1 when a v1 hierarchy
    /// holds the `cpu` controller (it takes precedence, as in the Go runtime),
    /// else v2. Set whenever the cgroup was found, even without a quota.
    pub cpu_quota_source: Option<CgroupVersion>,
    /// The GOMAXPROCS the runtime chose by its own rules: `GOMAXPROCS` from
    /// the environment the process started with, else its Go version's
    /// default applied to the current affinity mask and cgroup quota (Go 1.25+
    /// re-applies its default when those change). A `runtime.GOMAXPROCS(n)`
    /// call in the program is not visible from /proc (the agent reads the
    /// runtime's own value from the process's memory: source `observed`,
    /// set by `limits`).
    pub gomaxprocs: Option<u32>,
    pub gomaxprocs_source: Option<GomaxprocsSource>,
    /// Why a field is None, by field name (e.g. `"max_fds"`).
    pub reasons: BTreeMap<&'static str, Unavailable>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupVersion {
    V1,
    V2,
}

impl CgroupVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GomaxprocsSource {
    /// `GOMAXPROCS=N` (N > 0) in /proc/PID/environ.
    Env,
    /// Go >= 1.25's default, decided by the cgroup CPU quota:
    /// `min(cpus, max(2, ceil(quota)))` where the quota is the smaller term.
    GoDefaultCgroup,
    /// The CPU count of the process's affinity mask (Go 1.5 to 1.24, or
    /// Go >= 1.25 without a quota, with a quota of at least that many cores,
    /// or with `GODEBUG=containermaxprocs=0`).
    GoDefaultCpus,
    /// Go before 1.5 defaulted to 1.
    GoDefaultOne,
    /// The runtime's own: `runtime.gomaxprocs` read from the process's
    /// memory (`/proc/PID/mem`) at collection time. Wins over the others: it
    /// includes `runtime.GOMAXPROCS(n)` calls.
    Observed,
}

impl GomaxprocsSource {
    pub fn as_str(self) -> &'static str {
        match self {
            GomaxprocsSource::Env => "env",
            GomaxprocsSource::GoDefaultCgroup => "go_default_cgroup",
            GomaxprocsSource::GoDefaultCpus => "go_default_cpus",
            GomaxprocsSource::GoDefaultOne => "go_default_one",
            GomaxprocsSource::Observed => "observed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortCountMethod {
    /// One NETLINK_SOCK_DIAG (inet_diag) dump per address family.
    Netlink,
    /// /proc/net/tcp and /proc/net/tcp6 (the fallback: slower, see ports.rs).
    ProcNetTcp,
}

impl PortCountMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PortCountMethod::Netlink => "netlink",
            PortCountMethod::ProcNetTcp => "proc_net_tcp",
        }
    }
}

/// Why a value is absent. Logged by the agent; never an error of the whole read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// The file is not there: the process has exited, the cgroup controller
    /// is not enabled, the kernel lacks the feature.
    #[error("{} does not exist", path.display())]
    Absent { path: PathBuf },
    #[error("reading {}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    #[error("{}: unexpected format ({detail})", path.display())]
    Malformed { path: PathBuf, detail: &'static str },
    /// No limit is set (`unlimited`, cpu.max `max`, cfs_quota_us `-1`).
    #[error("no limit is set ({})", path.display())]
    Unlimited { path: PathBuf },
    /// nf_conntrack is not loaded (its sysctls do not exist).
    #[error("nf_conntrack is not loaded")]
    NotLoaded,
    /// cgroup v2 without the cpu controller enabled for this cgroup (the
    /// root cgroup, or a parent without `+cpu` in `cgroup.subtree_control`).
    #[error("the cpu controller is not enabled for cgroup {}", dir.display())]
    CpuControllerOff { dir: PathBuf },
    #[error("pid {pid} is in no cgroup that holds the cpu controller")]
    NoCpuCgroup { pid: u32 },
    #[error("no cgroup {} mount with the cpu controller in /proc/self/mountinfo", version.as_str())]
    NoCgroupMount { version: CgroupVersion },
    /// golens runs in a cgroup namespace that does not contain the process's cgroup.
    #[error("cgroup {path} is outside golens' cgroup namespace")]
    OutsideCgroupNamespace { path: String },
    #[error("the Go version is unknown ({version:?}) and GOMAXPROCS is not in the environment")]
    UnknownGoVersion { version: Option<String> },
    /// A value needed to compute this one is itself unavailable.
    #[error("needs {field}, which is unavailable: {reason}")]
    Needs { field: &'static str, reason: Box<Unavailable> },
    #[error("netlink sock_diag failed: {message}")]
    Netlink { message: String },
}

impl Unavailable {
    fn from_io(path: &Path, error: &io::Error) -> Unavailable {
        if error.kind() == io::ErrorKind::NotFound {
            Unavailable::Absent { path: path.to_path_buf() }
        } else {
            Unavailable::Io { path: path.to_path_buf(), message: error.to_string() }
        }
    }

    fn malformed(path: &Path, detail: &'static str) -> Unavailable {
        Unavailable::Malformed { path: path.to_path_buf(), detail }
    }
}

/// One per-process reading, in golens' mount namespace. The collector reads
/// /proc/self/mountinfo once per collection through a [`ProcessReader`]; this
/// convenience reads it for every call.
pub fn read_process(pid: u32, go_version: Option<&str>) -> ProcessPressure {
    ProcessReader::new()
        .read_process(pid, GoRuntimeHints { version: go_version, ..Default::default() })
}

fn read_text(path: &Path) -> Result<String, Unavailable> {
    fs::read_to_string(path).map_err(|error| Unavailable::from_io(path, &error))
}

/// A file holding one unsigned number (a sysctl, a cgroup knob).
fn read_number(path: &Path) -> Result<u64, Unavailable> {
    let text = read_text(path)?;
    text.trim().parse().map_err(|_| Unavailable::malformed(path, "expected one unsigned number"))
}

/// Stores `value` or the reason it is missing.
fn record<T>(
    reasons: &mut BTreeMap<&'static str, Unavailable>,
    field: &'static str,
    value: Result<T, Unavailable>,
) -> Option<T> {
    match value {
        Ok(value) => Some(value),
        Err(reason) => {
            reasons.insert(field, reason);
            None
        }
    }
}
