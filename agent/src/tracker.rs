//! The set of watched processes, kept in step with the kernel's `tracked` map.
//!
//! Userspace is the only writer of `tracked`, `sched_stats` and `go_stats`: stats entries
//! are created before the tgid becomes tracked and removed after it stops being
//! tracked, so the kernel never has to insert (bounded kernel work).

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use aya::{maps::MapError, programs::uprobe::UProbeLink};
use golens_ebpf::{GoStats, SchedStats};
use tracing::{debug, info, warn};

use crate::{
    discovery::{
        cgroup, cgroup::ContainerIdentity, procfs, Inspection, Inspector, ProcessKey, TargetFilter,
    },
    gobinary::GoBinary,
    goruntime::{self, STW_REASON_NAMES},
    probes::{KernelMaps, KernelSide},
    snapshot::{GoRuntimeSnapshot, Log2Histogram, ProbeStatus, ProcessSnapshot, SchedSnapshot},
};

pub struct TrackedProcess {
    pub key: ProcessKey,
    pub comm: String,
    pub exe: String,
    pub container: ContainerIdentity,
    pub binary: Arc<GoBinary>,
    /// One entry per runtime probe name, attached or not (and why).
    pub probes: Vec<ProbeStatus>,
    /// Dropping a link detaches its uprobe.
    links: Vec<UProbeLink>,
}

/// Why `consider` did or did not start tracking a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Considered {
    Tracked,
    AlreadyTracked,
    NotWanted,
    NotGo,
    Gone,
    Skipped { reason: &'static str },
    Failed { reason: &'static str, detail: String },
}

pub struct Tracker {
    kernel: KernelSide,
    maps: KernelMaps,
    filter: TargetFilter,
    inspector: Inspector,
    processes: BTreeMap<u32, TrackedProcess>,
    pub skipped: BTreeMap<String, u64>,
    pub discovery_errors: BTreeMap<String, u64>,
    /// A watched process left while others were skipped for --max-processes:
    /// the next collection scans /proc again so one of them takes the slot.
    capacity_freed: bool,
    /// Detaches the uprobes of processes that left, off the tracker's lock.
    link_reaper: LinkReaper,
}

/// Detaching a uprobe waits for an RCU grace period in the kernel, and the
/// kernel serialises these: ~100 ms a link measured here, ~0.65 s for one
/// process's links. Done under the tracker's lock, a burst of exits delayed
/// the discovery of new processes by seconds (short-lived ones were missed
/// entirely), so the links of processes that left are dropped on a thread of
/// their own. (Dropping them concurrently was tried: no faster.)
struct LinkReaper {
    sender: Option<std::sync::mpsc::Sender<Vec<UProbeLink>>>,
}

impl LinkReaper {
    fn start() -> LinkReaper {
        let (sender, receiver) = std::sync::mpsc::channel::<Vec<UProbeLink>>();
        let spawned = std::thread::Builder::new().name("golens-detach".into()).spawn(move || {
            for links in receiver {
                let started = std::time::Instant::now();
                let count = links.len();
                drop(links);
                debug!(
                    count,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "uprobes detached"
                );
            }
        });
        match spawned {
            Ok(_) => LinkReaper { sender: Some(sender) },
            Err(error) => {
                warn!(%error, "no detach thread: uprobes are detached inline");
                LinkReaper { sender: None }
            }
        }
    }

    fn detach(&self, links: Vec<UProbeLink>) {
        if links.is_empty() {
            return;
        }
        // If the thread is gone, the links come back in the error and are dropped here.
        if let Some(sender) = &self.sender {
            let _ = sender.send(links);
        }
    }
}

impl Tracker {
    pub fn new(kernel: KernelSide, maps: KernelMaps, filter: TargetFilter) -> Tracker {
        Tracker {
            kernel,
            maps,
            filter,
            inspector: Inspector::default(),
            processes: BTreeMap::new(),
            skipped: BTreeMap::new(),
            discovery_errors: BTreeMap::new(),
            capacity_freed: false,
            link_reaper: LinkReaper::start(),
        }
    }

    /// Considers every process the filter can want: all of /proc, or the --pid list.
    pub fn scan(&mut self) -> std::io::Result<()> {
        let pids = if self.filter.pids.is_empty() {
            procfs::list_pids()?
        } else {
            self.filter.pids.clone()
        };
        for pid in pids {
            self.consider(pid);
        }
        Ok(())
    }

    /// Scans again when a slot freed up under --max-processes (see `capacity_freed`).
    pub fn rescan_if_capacity_freed(&mut self) {
        if std::mem::take(&mut self.capacity_freed) {
            if let Err(error) = self.scan() {
                warn!(%error, "rescanning /proc failed");
            }
        }
    }

    pub fn len(&self) -> usize {
        self.processes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    /// Inspects `pid` and starts tracking it when it is a wanted Go process.
    pub fn consider(&mut self, pid: u32) -> Considered {
        // Cheap refusals first: with --pid, most execs on the host are not ours.
        if pid == std::process::id() || !self.filter.may_want(pid) {
            return Considered::NotWanted;
        }
        let Ok(key) = procfs::key(pid) else {
            return Considered::Gone;
        };
        if let Some(existing) = self.processes.get(&pid) {
            if existing.key == key {
                return Considered::AlreadyTracked;
            }
            // Same pid, another incarnation: the old one is gone.
            self.forget(pid);
        }
        let (comm, exe, binary) = match self.inspector.inspect(pid) {
            Inspection::Go { comm, exe, binary } => (comm, exe, binary),
            Inspection::NotGo => return Considered::NotGo,
            Inspection::NoExecutable => return Considered::Gone,
            Inspection::Error { reason, detail } => {
                *self.discovery_errors.entry(reason.to_string()).or_default() += 1;
                debug!(pid, reason, %detail, "cannot inspect process");
                return Considered::Failed { reason, detail };
            }
        };
        if !self.filter.wants(pid, &comm) {
            return Considered::NotWanted;
        }
        if self.processes.len() >= self.filter.max_processes {
            *self.skipped.entry("max_processes".to_string()).or_default() += 1;
            warn!(
                pid,
                comm,
                max = self.filter.max_processes,
                "not tracking Go process: --max-processes reached"
            );
            return Considered::Skipped { reason: "max_processes" };
        }
        if let Err(error) = self.start_kernel_tracking(pid) {
            *self.skipped.entry("kernel_map_error".to_string()).or_default() += 1;
            warn!(pid, comm, %error, "not tracking Go process: kernel map update failed");
            return Considered::Skipped { reason: "kernel_map_error" };
        }
        let (probes, links) = self.attach_runtime_probes(pid, &comm, &binary);
        let go_version = binary.go_version.as_deref().unwrap_or("unknown");
        let attached = probes.iter().filter(|p| p.attached).count();
        info!(pid, comm, exe, go_version, runtime_probes = attached, "tracking Go process");
        let container = cgroup::read(pid);
        self.processes
            .insert(pid, TrackedProcess { key, comm, exe, container, binary, probes, links });
        Considered::Tracked
    }

    fn start_kernel_tracking(&mut self, pid: u32) -> Result<(), MapError> {
        self.maps.sched_stats.insert(pid, SchedStats::default(), 0)?;
        let tracked = self
            .maps
            .go_stats
            .insert(pid, GoStats::default(), 0)
            .and_then(|()| self.maps.tracked.insert(pid, 0, 0));
        if let Err(error) = tracked {
            let _ = self.maps.go_stats.remove(&pid);
            let _ = self.maps.sched_stats.remove(&pid);
            return Err(error);
        }
        Ok(())
    }

    /// Attaches every runtime probe that applies to the binary, each at all
    /// of its points or not at all.
    fn attach_runtime_probes(
        &mut self,
        pid: u32,
        comm: &str,
        binary: &GoBinary,
    ) -> (Vec<ProbeStatus>, Vec<UProbeLink>) {
        let plan = goruntime::plan::plan(binary);
        if let Some(warning) = &plan.warning {
            warn!(pid, comm, "{warning}");
        }
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let mut statuses = Vec::new();
        let mut links = Vec::new();
        for planned in plan.probes {
            let result = planned.points.clone().and_then(|points| {
                let mut probe_links = Vec::new();
                for point in &points {
                    match self.kernel.attach_uprobe(planned.program, &exe, point.file_offset, pid) {
                        Ok(link) => probe_links.push(link),
                        Err(error) => {
                            self.link_reaper.detach(probe_links);
                            return Err(format!("attaching at {:#x}: {error}", point.address));
                        }
                    }
                }
                links.extend(probe_links);
                Ok(points.len())
            });
            if let Err(reason) = &result {
                warn!(pid, comm, probe = planned.name, %reason, "runtime probe not attached");
            }
            statuses.push(planned.status(result));
        }
        (statuses, links)
    }

    /// Stops tracking `pid` (it exited, or its pid now names another process).
    pub fn forget(&mut self, pid: u32) {
        let mut process = self.processes.remove(&pid);
        if let Some(process) = &mut process {
            self.link_reaper.detach(std::mem::take(&mut process.links));
        }
        // Untrack before removing stats so the kernel stops touching them.
        let _ = self.maps.tracked.remove(&pid);
        let _ = self.maps.sched_stats.remove(&pid);
        let _ = self.maps.go_stats.remove(&pid);
        if let Some(process) = process {
            info!(pid, comm = process.comm, "stopped tracking process (exited)");
            self.capacity_freed |= self.skipped.contains_key("max_processes");
        }
    }

    /// eBPF program name -> attached (tracepoints) or loaded (uprobes).
    pub fn programs_attached(&self) -> BTreeMap<String, bool> {
        self.kernel.attached.clone()
    }

    /// A tracked process exec'd: it may no longer be Go, or be another Go program.
    pub fn reexamine(&mut self, pid: u32) -> Considered {
        if self.processes.contains_key(&pid) {
            self.forget(pid);
        }
        self.consider(pid)
    }

    /// Safety net for lost exit events: drops processes whose pid is gone or reused.
    pub fn prune_exited(&mut self) {
        let gone: Vec<u32> = self
            .processes
            .values()
            .filter(|p| procfs::key(p.key.pid).map_or(true, |key| key != p.key))
            .map(|p| p.key.pid)
            .collect();
        for pid in gone {
            self.forget(pid);
        }
    }

    /// Reads the kernel's per-process counters.
    pub fn read_processes(&self) -> Vec<ProcessSnapshot> {
        self.processes
            .values()
            .map(|p| {
                let sched = match self.maps.sched_stats.get(&p.key.pid, 0) {
                    Ok(stats) => SchedSnapshot {
                        runqueue_latency: Log2Histogram::from_kernel(&stats.runqueue_latency),
                        involuntary_switches: stats.involuntary_switches,
                    },
                    Err(_) => SchedSnapshot::default(),
                };
                let go = self.maps.go_stats.get(&p.key.pid, 0).map(|stats| go_snapshot(&stats));
                ProcessSnapshot {
                    pid: p.key.pid,
                    comm: p.comm.clone(),
                    exe: p.exe.clone(),
                    container_id: p.container.container_id.clone(),
                    pod_uid: p.container.pod_uid.clone(),
                    go_version: p.binary.go_version.clone().unwrap_or_else(|| "unknown".into()),
                    stripped: p.binary.stripped,
                    pie: p.binary.pie,
                    sched,
                    go: go.unwrap_or_default(),
                    probes: p.probes.clone(),
                }
            })
            .collect()
    }

    /// Kernel-side drop counters, summed over CPUs, by reason.
    pub fn read_kernel_drops(&self) -> BTreeMap<String, u64> {
        golens_ebpf::AGENT_COUNTERS
            .iter()
            .map(|&(index, reason)| {
                let total = self
                    .maps
                    .agent_counters
                    .get(&index, 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (reason.to_string(), total)
            })
            .collect()
    }
}

fn go_snapshot(stats: &GoStats) -> GoRuntimeSnapshot {
    let stw_pause = stats
        .stw_pause
        .iter()
        .zip(STW_REASON_NAMES)
        .filter(|(hist, _)| hist.count > 0)
        .map(|(hist, reason)| (reason.to_string(), Log2Histogram::from_kernel(hist)))
        .collect();
    GoRuntimeSnapshot {
        gc_cycles: stats.gc_cycles,
        sysmon_preemptions: stats.sysmon_preemptions,
        stw_unpaired: stats.stw_unpaired,
        gc_cycle_duration: Log2Histogram::from_kernel(&stats.gc_cycle_duration),
        stw_time_to_stop: Log2Histogram::from_kernel(&stats.stw_time_to_stop),
        stw_pause,
    }
}
