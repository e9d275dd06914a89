//! The one model of everything golens measured at one instant. Every output
//! (Prometheus, JSON API, TUI) renders a `Snapshot`; none computes its own numbers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A log2 histogram of nanoseconds, as the kernel keeps it (see `golens.h`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Log2Histogram {
    /// `slots[i]` counts values v with floor(log2(v)) == i (slot 0 also holds 0);
    /// the last slot also holds everything larger.
    pub slots: Vec<u64>,
    pub sum_ns: u64,
    pub count: u64,
}

impl Log2Histogram {
    /// The count is the sum of the slots as read, not the kernel's separate
    /// counter: the kernel bumps them one after the other, and a read in
    /// between would give a `_count` that disagrees with the `+Inf` bucket.
    pub fn from_kernel(hist: &golens_ebpf::Hist) -> Self {
        let slots = hist.slots.to_vec();
        let count = slots.iter().sum();
        Log2Histogram { slots, sum_ns: hist.sum_ns, count }
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// Exclusive upper bound of slot `i`, in seconds: 2^(i+1) ns.
    pub fn slot_upper_bound_seconds(slot: usize) -> f64 {
        (1u128 << (slot + 1)) as f64 / 1e9
    }

    /// Prometheus buckets `(le, count in this bucket)`, not cumulative, ending with +Inf.
    ///
    /// Slots below `first_slot` fold into the first bucket and slots above
    /// `last_slot` into +Inf, so a series carries `last_slot - first_slot + 2`
    /// buckets instead of one per kernel slot. Bounds are powers of two of
    /// nanoseconds, exactly the kernel's: no value is reassigned to a bucket
    /// it does not belong to.
    ///
    /// Note on `le`: the kernel slot i holds [2^i, 2^(i+1)) ns, so its values are
    /// strictly below 2^(i+1) ns and therefore also `<=` that bound.
    pub fn prometheus_buckets(&self, first_slot: usize, last_slot: usize) -> Vec<(f64, u64)> {
        let mut buckets = Vec::with_capacity(last_slot.saturating_sub(first_slot) + 2);
        let mut below_first = 0;
        let mut above_last = 0;
        for (slot, &count) in self.slots.iter().enumerate() {
            if slot < first_slot {
                below_first += count;
            } else if slot <= last_slot {
                let count = if slot == first_slot { count + below_first } else { count };
                buckets.push((Self::slot_upper_bound_seconds(slot), count));
            } else {
                above_last += count;
            }
        }
        buckets.push((f64::INFINITY, above_last));
        buckets
    }
}

/// Scheduler view of one process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SchedSnapshot {
    pub runqueue_latency: Log2Histogram,
    pub involuntary_switches: u64,
}

/// Go runtime view of one process (uprobes; see `bpf/goruntime.bpf.c`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GoRuntimeSnapshot {
    pub gc_cycles: u64,
    pub sysmon_preemptions: u64,
    /// Stop-the-world returns seen without their entry (attached mid-pause).
    pub stw_unpaired: u64,
    pub gc_cycle_duration: Log2Histogram,
    /// By reason name, like `stw_pause`; only reasons seen.
    pub stw_time_to_stop: BTreeMap<String, Log2Histogram>,
    /// By reason name (`goruntime::STW_REASON_NAMES`); only reasons seen.
    pub stw_pause: BTreeMap<String, Log2Histogram>,
    /// The world still stopped after mark termination's pause (runtime bookkeeping).
    #[serde(default)]
    pub stw_tail: Log2Histogram,
    /// `runtime.netpoll` calls by mode (`blocking`, `nonblocking`, `timed`),
    /// read whatever families are on: `metrics` exports them only when the
    /// `netpoll` probe is attached.
    #[serde(default)]
    pub netpoll_calls: BTreeMap<String, u64>,
}

/// From the per-syscall tracepoint families (`bpf/syscalls.bpf.c`): each
/// value is None when its family is off, never a zero that means nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyscallSnapshot {
    /// Highest `mm->map_count` seen since the previous collection (vma);
    /// when the process made no mapping syscall since, its last count.
    pub vmas_peak: Option<u64>,
    /// EMFILE / ENFILE returned by fd-creating syscalls, by errno name (fd).
    pub fd_exhaustion: Option<BTreeMap<String, u64>>,
    /// connect() that failed with EADDRNOTAVAIL (net).
    pub connect_eaddrnotavail: Option<u64>,
    /// Blocking epoll waits (netpoll).
    pub netpoll_wait: Option<Log2Histogram>,
    /// Timed waits that timed out: how much later than asked they returned
    /// (timers: sleeps; with netpoll on, epoll timeouts too).
    pub timer_lateness: Option<Log2Histogram>,
    /// timerfd_settime calls (timers).
    pub timerfd_settime: Option<u64>,
}

/// A process against its limits, read from /proc and its cgroup (no eBPF:
/// also served in degraded mode). None: could not be read (never 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitsSnapshot {
    pub open_fds: Option<u64>,
    /// Soft RLIMIT_NOFILE.
    pub max_fds: Option<u64>,
    /// Memory mappings now (lines of /proc/PID/maps).
    pub vmas: Option<u64>,
    pub cpu_throttled_seconds: Option<f64>,
    /// None when the cgroup has no CPU quota.
    pub cpu_quota_cores: Option<f64>,
    pub gomaxprocs: Option<u32>,
    /// Where `gomaxprocs` comes from: observed (the runtime's own
    /// `runtime.gomaxprocs`, read from the process's memory), else env,
    /// go_default_cpus, go_default_cgroup, ...
    pub gomaxprocs_source: Option<String>,
    /// CPU time the process has used (utime + stime), seconds: what the verdict's "waiting
    /// for CPU" share compares run-queue time with.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
}

/// The host against its limits, and golens doctor's checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostSnapshot {
    pub max_map_count: Option<u64>,
    pub files_allocated: Option<u64>,
    pub files_max: Option<u64>,
    pub ephemeral_ports: Option<u64>,
    pub ephemeral_ports_used: Option<u64>,
    pub tcp_time_wait: Option<u64>,
    pub listen_overflows: Option<u64>,
    pub conntrack_entries: Option<u64>,
    pub conntrack_max: Option<u64>,
    /// `golens doctor`'s checks: id -> 0 pass, 1 warn (or unknown), 2 fail.
    pub checks: BTreeMap<String, u8>,
}

/// One runtime probe of one process: attached, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeStatus {
    pub probe: String,
    pub function: String,
    pub attached: bool,
    /// Uprobes placed (e.g. one per call site).
    pub points: usize,
    pub reason: Option<String>,
    /// Where on the function (e.g. "CALL runtime.wakep").
    #[serde(default)]
    pub site: Option<String>,
    /// The points are RETs, which the kernel single-steps (~15 us a hit):
    /// the fallback when no emulated instruction marks the moment.
    #[serde(default)]
    pub single_stepped: bool,
}

/// One watched Go process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessSnapshot {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    /// From /proc/PID/cgroup, when the process runs in a container.
    pub container_id: Option<String>,
    /// From /proc/PID/cgroup, when the process runs in a Kubernetes pod.
    pub pod_uid: Option<String>,
    /// "unknown" when build info is absent.
    pub go_version: String,
    pub stripped: bool,
    pub pie: bool,
    /// None when the scheduler probes are not attached (`--probes`, or the
    /// kernel refused them): absent, never a wrong zero.
    pub sched: Option<SchedSnapshot>,
    pub go: GoRuntimeSnapshot,
    #[serde(default)]
    pub syscalls: SyscallSnapshot,
    #[serde(default)]
    pub limits: LimitsSnapshot,
    pub probes: Vec<ProbeStatus>,
}

impl ProcessSnapshot {
    /// Whether every named runtime probe is attached (a metric that needs
    /// them is exported only then: a missing probe must not read as zero).
    pub fn probes_attached(&self, names: &[&str]) -> bool {
        names.iter().all(|name| self.probes.iter().any(|p| p.probe == *name && p.attached))
    }
}

/// The agent's own health.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentSnapshot {
    pub tracked_processes: u64,
    /// Processes the agent chose not to track, by reason (e.g. `max_processes`).
    pub skipped_processes: BTreeMap<String, u64>,
    /// Work the kernel side dropped, by reason (see `golens_ebpf::AGENT_COUNTERS`).
    pub kernel_drops: BTreeMap<String, u64>,
    /// Processes that could not be inspected, by reason.
    pub discovery_errors: BTreeMap<String, u64>,
    /// eBPF programs and whether each is attached.
    pub programs_attached: BTreeMap<String, bool>,
    /// How runtime uprobes are attached on this kernel.
    pub attach_mode: Option<crate::attach::AttachMode>,
    /// Go binaries with probes attached, idle ones (lingering) and links held.
    pub probes: crate::attach::RegistryStats,
    /// Processes that started being watched since start, by how (scan,
    /// exec, kernel_exec).
    pub processes_tracked_total: BTreeMap<String, u64>,
    /// Why eBPF is unavailable, when the agent runs degraded (no probe
    /// family at all; only what /proc gives).
    #[serde(default)]
    pub degraded: Option<String>,
    /// How long building this snapshot took.
    pub collection_duration_seconds: f64,
    /// Snapshots built since start.
    pub collections: u64,
}

/// Version of the Snapshot JSON that /api/v1/stream sends (its top-level
/// `schema_version`). Bump it when a field changes meaning or type or goes
/// away (adding a field with `#[serde(default)]` is not a change): a client
/// of another version refuses the stream instead of misreading it.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Seconds since the Unix epoch when the snapshot was taken.
    pub timestamp: f64,
    pub processes: Vec<ProcessSnapshot>,
    #[serde(default)]
    pub host: HostSnapshot,
    pub agent: AgentSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(slots: &[(usize, u64)]) -> Log2Histogram {
        let mut h = Log2Histogram { slots: vec![0; 38], sum_ns: 0, count: 0 };
        for &(slot, count) in slots {
            h.slots[slot] = count;
            h.count += count;
        }
        h
    }

    #[test]
    fn buckets_fold_below_first_and_above_last() {
        let h = hist(&[(0, 1), (3, 2), (10, 5), (11, 7), (30, 4), (37, 1)]);
        let buckets = h.prometheus_buckets(10, 29);
        assert_eq!(buckets.len(), 21);
        assert_eq!(buckets[0], (2048e-9, 1 + 2 + 5));
        assert_eq!(buckets[1], (4096e-9, 7));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 5)));
        let total: u64 = buckets.iter().map(|b| b.1).sum();
        assert_eq!(total, h.count, "no sample lost or invented");
    }

    #[test]
    fn count_is_the_sum_of_the_buckets_even_mid_update() {
        // The kernel bumps a slot, then the sum, then the count: a read in
        // between sees a count one short of the slots.
        let mut kernel = golens_ebpf::Hist::default();
        kernel.slots[12] = 3;
        kernel.slots[20] = 2;
        kernel.count = 4;
        let h = Log2Histogram::from_kernel(&kernel);
        assert_eq!(h.count, 5);
        let total: u64 = h.prometheus_buckets(9, 34).iter().map(|b| b.1).sum();
        assert_eq!(total, h.count, "+Inf bucket == _count");
    }

    #[test]
    fn upper_bounds_are_powers_of_two_nanoseconds() {
        assert_eq!(Log2Histogram::slot_upper_bound_seconds(0), 2e-9);
        assert_eq!(Log2Histogram::slot_upper_bound_seconds(9), 1024e-9);
        assert!((Log2Histogram::slot_upper_bound_seconds(29) - 1.073741824).abs() < 1e-12);
    }

    #[test]
    fn empty_histogram_has_all_buckets_zero() {
        let h = hist(&[]);
        let buckets = h.prometheus_buckets(9, 34);
        assert_eq!(buckets.len(), 27);
        assert!(buckets.iter().all(|b| b.1 == 0));
    }
}

/// One collection as the outputs see it: the snapshot and its Prometheus
/// exposition, rendered once.
#[derive(Debug, Default)]
pub struct Published {
    pub snapshot: std::sync::Arc<Snapshot>,
    pub exposition: crate::metrics::Exposition,
}

/// The latest collection, shared between the collector (writer) and the
/// outputs. Readers clone an Arc under a lock held for nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct SnapshotCell {
    inner: std::sync::Arc<std::sync::RwLock<std::sync::Arc<Published>>>,
}

impl SnapshotCell {
    pub fn latest(&self) -> std::sync::Arc<Published> {
        match self.inner.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn get(&self) -> std::sync::Arc<Snapshot> {
        self.latest().snapshot.clone()
    }

    /// Renders the exposition and publishes both (on the collector's thread).
    pub fn set(&self, snapshot: Snapshot) {
        let snapshot = std::sync::Arc::new(snapshot);
        let exposition = crate::metrics::render(snapshot.clone()).unwrap_or_else(|error| {
            tracing::error!(%error, "rendering the exposition failed");
            crate::metrics::Exposition::default()
        });
        let published = std::sync::Arc::new(Published { snapshot, exposition });
        match self.inner.write() {
            Ok(mut guard) => *guard = published,
            Err(poisoned) => *poisoned.into_inner() = published,
        }
    }
}
