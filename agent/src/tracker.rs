//! The set of watched processes, kept in step with the kernel's `tracked` map.
//!
//! Userspace is the only writer of `tracked` and `sched_stats`: a stats entry
//! is created before the tgid becomes tracked and removed after it stops being
//! tracked, so the kernel never has to insert (bounded kernel work).

use std::{collections::BTreeMap, sync::Arc};

use aya::maps::MapError;
use golens_ebpf::SchedStats;
use tracing::{debug, info, warn};

use crate::{
    discovery::{procfs, Inspection, Inspector, ProcessKey, TargetFilter},
    probes::KernelMaps,
    snapshot::{Log2Histogram, ProcessSnapshot, SchedSnapshot},
    target::GoBinary,
};

#[derive(Debug, Clone)]
pub struct TrackedProcess {
    pub key: ProcessKey,
    pub comm: String,
    pub exe: String,
    pub binary: Arc<GoBinary>,
}

/// Why `consider` did or did not start tracking a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Considered {
    Tracked,
    AlreadyTracked,
    NotWanted,
    NotGo,
    Gone,
    Skipped {
        reason: &'static str,
    },
    Failed {
        reason: &'static str,
        detail: String,
    },
}

pub struct Tracker {
    maps: KernelMaps,
    filter: TargetFilter,
    inspector: Inspector,
    processes: BTreeMap<u32, TrackedProcess>,
    pub skipped: BTreeMap<String, u64>,
    pub discovery_errors: BTreeMap<String, u64>,
}

impl Tracker {
    pub fn new(maps: KernelMaps, filter: TargetFilter) -> Tracker {
        Tracker {
            maps,
            filter,
            inspector: Inspector::default(),
            processes: BTreeMap::new(),
            skipped: BTreeMap::new(),
            discovery_errors: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.processes.len()
    }

    /// Inspects `pid` and starts tracking it when it is a wanted Go process.
    pub fn consider(&mut self, pid: u32) -> Considered {
        if pid == std::process::id() {
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
            return Considered::Skipped {
                reason: "max_processes",
            };
        }
        if let Err(error) = self.start_kernel_tracking(pid) {
            *self
                .skipped
                .entry("kernel_map_error".to_string())
                .or_default() += 1;
            warn!(pid, comm, %error, "not tracking Go process: kernel map update failed");
            return Considered::Skipped {
                reason: "kernel_map_error",
            };
        }
        let go_version = binary.go_version.as_deref().unwrap_or("unknown");
        info!(pid, comm, exe, go_version, "tracking Go process");
        self.processes.insert(
            pid,
            TrackedProcess {
                key,
                comm,
                exe,
                binary,
            },
        );
        Considered::Tracked
    }

    fn start_kernel_tracking(&mut self, pid: u32) -> Result<(), MapError> {
        self.maps
            .sched_stats
            .insert(pid, SchedStats::default(), 0)?;
        if let Err(error) = self.maps.tracked.insert(pid, 0, 0) {
            let _ = self.maps.sched_stats.remove(&pid);
            return Err(error);
        }
        Ok(())
    }

    /// Stops tracking `pid` (it exited, or its pid now names another process).
    pub fn forget(&mut self, pid: u32) {
        // Untrack first so the kernel stops touching the stats entry.
        let _ = self.maps.tracked.remove(&pid);
        let _ = self.maps.sched_stats.remove(&pid);
        if let Some(process) = self.processes.remove(&pid) {
            info!(
                pid,
                comm = process.comm,
                "stopped tracking process (exited)"
            );
        }
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
                ProcessSnapshot {
                    pid: p.key.pid,
                    comm: p.comm.clone(),
                    exe: p.exe.clone(),
                    go_version: p
                        .binary
                        .go_version
                        .clone()
                        .unwrap_or_else(|| "unknown".into()),
                    sched,
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
