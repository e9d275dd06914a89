//! The set of watched processes: which ones, and their kernel map entries
//! (policy only; probes are the registry's, reading maps the collector's).
//!
//! Userspace owns `tracked`, `sched_stats` and `go_stats`, with one
//! exception: the exec handler tracks a process that execs a known Go
//! binary (`bpf/procs.bpf.c`), with zeroed stats and the value
//! `GOLENS_TRACKED_BY_EXEC`, and userspace adopts it when it finds it (its
//! exec record, an earlier record of the same process, a reconcile or a
//! scan), keeping those stats and rewriting the value to
//! `GOLENS_TRACKED_BY_AGENT`: so `BY_EXEC` means "tracked from an exec not
//! adopted yet". Stats entries exist before a tgid is tracked and are
//! removed after it stops being tracked, so the kernel handlers only look up.
//!
//! Launchers: `sh -c 'exec app'` or `env X=1 app` exec twice with one pid.
//! The record of the launcher's exec may be read after the process exec'd
//! the app: /proc/PID/exe already names the app. If the kernel tracked that
//! second exec, the process is adopted with the kernel's stats (zeroing them
//! would lose what was counted since the exec), counted as `kernel_exec`,
//! and the launcher's binary key is not noted as the app's.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use aya::maps::MapError;
use golens_ebpf::{bindings, BinaryKey, GoStats, PressureStats, SchedStats};
use tracing::{debug, info, warn};

use crate::{
    attach::ProbeRegistry,
    discovery::{
        cgroup, cgroup::ContainerIdentity, inspect::BinaryInfo, procfs, procfs::FileIdentity,
        Inspection, Inspector, ProcessKey, TargetFilter,
    },
    probes::KernelMaps,
    snapshot::ProbeStatus,
};

pub struct TrackedProcess {
    pub key: ProcessKey,
    pub comm: String,
    pub exe: String,
    pub container: ContainerIdentity,
    pub binary: Arc<BinaryInfo>,
    file: FileIdentity,
    /// One entry per runtime probe name, attached or not (and why).
    pub probes: Arc<Vec<ProbeStatus>>,
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

/// How a process came to be watched (the `how` label of
/// golens_agent_processes_tracked_total).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum How {
    /// Found in /proc (at start, or a rescan).
    Scan,
    /// Exec of a binary golens did not know yet: inspected and attached.
    Exec,
    /// Exec of a known binary: tracked by the kernel before its first instruction.
    KernelExec,
}

impl How {
    pub fn label(self) -> &'static str {
        match self {
            How::Scan => "scan",
            How::Exec => "exec",
            How::KernelExec => "kernel_exec",
        }
    }
}

pub struct Tracker {
    pub registry: ProbeRegistry,
    pub maps: KernelMaps,
    filter: TargetFilter,
    inspector: Inspector,
    processes: BTreeMap<u32, TrackedProcess>,
    /// Times a process was not tracked, by reason; each process counted once.
    pub skipped: BTreeMap<String, u64>,
    skipped_processes: BTreeSet<ProcessKey>,
    pub discovery_errors: BTreeMap<String, u64>,
    /// Processes that started being watched, by how.
    pub tracked_total: BTreeMap<&'static str, u64>,
    /// A watched process left while others wait for a --max-processes slot.
    capacity_freed: bool,
}

impl Tracker {
    pub fn new(registry: ProbeRegistry, maps: KernelMaps, filter: TargetFilter) -> Tracker {
        Tracker {
            registry,
            maps,
            filter,
            inspector: Inspector::default(),
            processes: BTreeMap::new(),
            skipped: BTreeMap::new(),
            skipped_processes: BTreeSet::new(),
            discovery_errors: BTreeMap::new(),
            tracked_total: BTreeMap::new(),
            capacity_freed: false,
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
            self.consider(pid, How::Scan, None);
        }
        Ok(())
    }

    /// Scans again when a slot freed up under --max-processes and a skipped
    /// process is still there to take it.
    pub fn rescan_if_capacity_freed(&mut self) {
        if !std::mem::take(&mut self.capacity_freed) {
            return;
        }
        self.skipped_processes.retain(|key| procfs::key(key.pid).is_ok_and(|k| k == *key));
        if self.skipped_processes.is_empty() {
            return;
        }
        let waiting: Vec<u32> = self.skipped_processes.iter().map(|k| k.pid).collect();
        for pid in waiting {
            self.consider(pid, How::Scan, None);
        }
    }

    pub fn len(&self) -> usize {
        self.processes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    pub fn processes(&self) -> impl Iterator<Item = &TrackedProcess> {
        self.processes.values()
    }

    /// Inspects `pid` and starts tracking it when it is a wanted Go process.
    /// `exec_key`: the kernel's identity of the binary, from an exec record
    /// of this binary. A process the exec handler tracked (`how` KernelExec,
    /// or found tracked `BY_EXEC` whatever `how` says) is adopted with its
    /// kernel stats, or its kernel tracking undone when it is not wanted.
    pub fn consider(&mut self, pid: u32, how: How, exec_key: Option<BinaryKey>) -> Considered {
        let kernel_tracked = how == How::KernelExec || self.tracked_by_exec(pid);
        let how = if kernel_tracked { How::KernelExec } else { how };
        let considered = self.consider_process(pid, how, exec_key);
        if kernel_tracked {
            match considered {
                Considered::Tracked => self.mark_adopted(pid),
                Considered::AlreadyTracked => {}
                // Not ours after all (filtered out, not Go, gone): undo the kernel's tracking.
                _ => self.forget(pid),
            }
        }
        considered
    }

    /// The exec handler tracked `pid` at an exec userspace has not adopted.
    fn tracked_by_exec(&self, pid: u32) -> bool {
        self.maps.tracked.get(&pid, 0).is_ok_and(|value| value == bindings::GOLENS_TRACKED_BY_EXEC)
    }

    /// Userspace owns `pid`'s tracking from now on (see the module doc).
    fn mark_adopted(&mut self, pid: u32) {
        if let Err(error) = self.maps.tracked.insert(pid, bindings::GOLENS_TRACKED_BY_AGENT, 0) {
            debug!(pid, %error, "cannot mark an exec-tracked process as adopted");
        }
    }

    fn consider_process(&mut self, pid: u32, how: How, exec_key: Option<BinaryKey>) -> Considered {
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
            // Same pid, another incarnation: the old one is gone (its kernel
            // entries are the new one's when the exec handler tracked it).
            if how == How::KernelExec {
                self.drop_record(pid);
            } else {
                self.forget(pid);
            }
        }
        let (comm, exe, info, file, open_path, fresh) = match self.inspector.inspect(pid) {
            Inspection::Go { comm, exe, info, file, open_path, fresh } => {
                (comm, exe, info, file, open_path, fresh)
            }
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
        if how != How::KernelExec {
            if self.processes.len() >= self.filter.max_processes {
                if self.skipped_processes.insert(key) {
                    *self.skipped.entry("max_processes".to_string()).or_default() += 1;
                    warn!(
                        pid,
                        comm,
                        max = self.filter.max_processes,
                        "not tracking Go process: --max-processes reached"
                    );
                }
                return Considered::Skipped { reason: "max_processes" };
            }
            if let Err(error) = self.start_kernel_tracking(pid) {
                if self.skipped_processes.insert(key) {
                    *self.skipped.entry("kernel_map_error".to_string()).or_default() += 1;
                }
                warn!(pid, comm, %error, "not tracking Go process: kernel map update failed");
                return Considered::Skipped { reason: "kernel_map_error" };
            }
        }
        self.skipped_processes.remove(&key);
        let probes = self.registry.acquire(file, &open_path, fresh.as_deref(), &exe);
        if let Some(exec_key) = exec_key {
            self.registry.note_kernel_key(&file, exec_key);
        }
        let go_version = info.go_version.as_deref().unwrap_or("unknown");
        let attached = probes.iter().filter(|p| p.attached).count();
        info!(
            pid,
            comm,
            exe,
            go_version,
            runtime_probes = attached,
            how = how.label(),
            "tracking Go process"
        );
        let container = cgroup::read(pid);
        *self.tracked_total.entry(how.label()).or_default() += 1;
        self.processes
            .insert(pid, TrackedProcess { key, comm, exe, container, binary: info, file, probes });
        Considered::Tracked
    }

    fn start_kernel_tracking(&mut self, pid: u32) -> Result<(), MapError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, error)| {
            MapError::SyscallError(aya::sys::SyscallError { call: "nr_cpus", io_error: error })
        })?;
        let zeroed = aya::maps::PerCpuValues::try_from(vec![SchedStats::default(); cpus])?;
        self.maps.sched_stats.insert(pid, zeroed, 0)?;
        let zeroed = aya::maps::PerCpuValues::try_from(vec![PressureStats::default(); cpus])?;
        let tracked = self
            .maps
            .pressure_stats
            .insert(pid, zeroed, 0)
            .and_then(|()| self.maps.go_stats.insert(pid, GoStats::default(), 0))
            .and_then(|()| self.maps.tracked.insert(pid, 0, 0));
        if let Err(error) = tracked {
            self.remove_stats(pid);
            return Err(error);
        }
        Ok(())
    }

    fn remove_stats(&mut self, pid: u32) {
        let _ = self.maps.go_stats.remove(&pid);
        let _ = self.maps.sched_stats.remove(&pid);
        let _ = self.maps.pressure_stats.remove(&pid);
    }

    /// Stops tracking `pid` (it exited, or its pid now names another process).
    pub fn forget(&mut self, pid: u32) {
        let process = self.drop_record(pid);
        // Untrack before removing stats so the kernel stops touching them.
        let _ = self.maps.tracked.remove(&pid);
        self.remove_stats(pid);
        if let Some(process) = process {
            info!(pid, comm = process.comm, "stopped tracking process (exited)");
        }
    }

    /// Drops userspace's record of `pid` (not its kernel entries).
    fn drop_record(&mut self, pid: u32) -> Option<TrackedProcess> {
        let process = self.processes.remove(&pid)?;
        self.registry.release(&process.file);
        self.capacity_freed |= !self.skipped_processes.is_empty();
        Some(process)
    }

    /// `pid` exec'd `binary`. `by_kernel`: the exec handler tracked it at
    /// this exec (a known binary), with fresh stats. Else it is inspected
    /// like a new process (it may no longer be Go, or be another Go program),
    /// unless the kernel tracked it at a later exec: this record is then a
    /// launcher's (`sh -c 'exec app'`), and the app is adopted as the kernel
    /// tracked it.
    pub fn exec(&mut self, pid: u32, by_kernel: bool, binary: BinaryKey) -> Considered {
        if by_kernel && self.already_adopted(pid) {
            // The collection's reconcile adopted it before this record came
            // (or it exec'd the same binary again: the kernel zeroed its stats).
            self.mark_adopted(pid);
            return Considered::AlreadyTracked;
        }
        if by_kernel || self.tracked_by_exec(pid) {
            // Keep the kernel's entries: drop only userspace's record of
            // what it ran before. The launcher's key is not this binary's.
            self.drop_record(pid);
            return self.consider(pid, How::KernelExec, by_kernel.then_some(binary));
        }
        if self.processes.contains_key(&pid) {
            self.forget(pid);
        }
        self.consider(pid, How::Exec, Some(binary))
    }

    /// Whether `pid`'s record is this very process running the file it runs now.
    fn already_adopted(&self, pid: u32) -> bool {
        let Some(process) = self.processes.get(&pid) else { return false };
        procfs::key(pid).is_ok_and(|key| key == process.key)
            && procfs::exe(pid).is_ok_and(|exe| exe.file_id == process.file)
    }

    /// Safety net for lost exec and exit records: drops processes whose pid
    /// is gone or reused; adopts (or removes) tgids the kernel tracked that
    /// userspace has no record of.
    pub fn reconcile(&mut self) {
        let gone: Vec<u32> = self
            .processes
            .values()
            .filter(|p| procfs::key(p.key.pid).map_or(true, |key| key != p.key))
            .map(|p| p.key.pid)
            .collect();
        for pid in gone {
            self.forget(pid);
        }
        let unknown: Vec<u32> = self
            .maps
            .tracked
            .keys()
            .filter_map(Result::ok)
            .filter(|pid| !self.processes.contains_key(pid))
            .collect();
        for pid in unknown {
            // Still alive: the kernel tracked an exec whose record was lost
            // (`consider` undoes the tracking of one that is not wanted).
            self.consider(pid, How::KernelExec, None);
        }
    }
}
