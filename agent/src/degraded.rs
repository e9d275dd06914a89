//! Degraded mode: eBPF is unavailable (no BTF, a missing capability, a
//! seccomp profile that blocks bpf()), and `golens run` keeps serving what
//! needs none, instead of exiting: a DaemonSet on a mixed fleet then
//! degrades rather than crash-looping. `--require-ebpf` restores the strict
//! behaviour.
//!
//! Every collection scans /proc for the Go processes the filter wants (no
//! exec tracepoint here: a new process is seen at the next collection) and
//! publishes them with their labels and their limits (fds, VMAs, cgroup CPU,
//! GOMAXPROCS), with the host's (ports, conntrack, ...) and golens doctor's
//! checks; every eBPF family's series are absent, and
//! `golens_agent_program_attached` says 0 for each program.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tracing::info;

use crate::{
    discovery::{cgroup, procfs, Inspection, Inspector, TargetFilter},
    goruntime,
    limits::LimitsReader,
    snapshot::{AgentSnapshot, ProbeStatus, ProcessSnapshot, Snapshot, SnapshotCell},
};

/// Runs until `stop` is set.
pub fn run(
    filter: &TargetFilter,
    why: &str,
    stop: &AtomicBool,
    snapshot: &SnapshotCell,
    ready: &AtomicBool,
    interval: Duration,
) {
    let mut inspector = Inspector::default();
    let mut limits = LimitsReader::default();
    let mut collections = 0u64;
    let mut seen = BTreeSet::new();
    loop {
        let started = Instant::now();
        let mut discovery_errors = BTreeMap::new();
        let mut skipped = BTreeMap::new();
        let processes =
            scan(filter, why, &mut inspector, &mut limits, &mut discovery_errors, &mut skipped);
        let host = limits.host();
        for process in &processes {
            if seen.insert(process.pid) {
                info!(pid = process.pid, comm = process.comm, "found Go process (degraded mode)");
            }
        }
        collections += 1;
        let agent = AgentSnapshot {
            tracked_processes: processes.len() as u64,
            skipped_processes: skipped,
            discovery_errors,
            programs_attached: every_program_off(),
            degraded: Some(why.to_string()),
            collection_duration_seconds: started.elapsed().as_secs_f64(),
            collections,
            ..AgentSnapshot::default()
        };
        let timestamp =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        snapshot.set(Snapshot { timestamp, processes, host, agent });
        ready.store(true, Ordering::Release);
        let next = started + interval;
        while Instant::now() < next {
            if stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50).min(next - Instant::now()));
        }
    }
}

fn scan(
    filter: &TargetFilter,
    why: &str,
    inspector: &mut Inspector,
    limits: &mut LimitsReader,
    discovery_errors: &mut BTreeMap<String, u64>,
    skipped: &mut BTreeMap<String, u64>,
) -> Vec<ProcessSnapshot> {
    let pids = if filter.pids.is_empty() {
        procfs::list_pids().unwrap_or_default()
    } else {
        filter.pids.clone()
    };
    let probes: Vec<ProbeStatus> = goruntime::probe_names(goruntime::UprobeFamily::DEFAULT)
        .into_iter()
        .map(|name| ProbeStatus {
            probe: name.to_string(),
            function: String::new(),
            attached: false,
            points: 0,
            reason: Some(format!("eBPF unavailable: {why}")),
            site: None,
            single_stepped: false,
        })
        .collect();
    let mut processes = Vec::new();
    let reader = limits.processes();
    for pid in pids {
        if pid == std::process::id() || !filter.may_want(pid) {
            continue;
        }
        let (comm, exe, info) = match inspector.inspect(pid) {
            Inspection::Go { comm, exe, info, .. } => (comm, exe, info),
            Inspection::Error { reason, .. } => {
                *discovery_errors.entry(reason.to_string()).or_default() += 1;
                continue;
            }
            Inspection::NotGo | Inspection::NoExecutable => continue,
        };
        if !filter.wants(pid, &comm) {
            continue;
        }
        if processes.len() >= filter.max_processes {
            *skipped.entry("max_processes".to_string()).or_default() += 1;
            continue;
        }
        let Ok(key) = procfs::key(pid) else { continue }; // gone
        let container = cgroup::read(pid);
        processes.push(ProcessSnapshot {
            pid,
            comm,
            exe,
            container_id: container.container_id,
            pod_uid: container.pod_uid,
            go_version: info.go_version.clone().unwrap_or_else(|| "unknown".into()),
            stripped: info.stripped,
            pie: info.pie,
            sched: None,
            go: Default::default(),
            syscalls: Default::default(),
            limits: limits.read_process(&reader, key, &info),
            probes: probes.clone(),
        });
    }
    processes
}

/// Every eBPF program of the object, not attached.
fn every_program_off() -> BTreeMap<String, bool> {
    use golens_ebpf::{programs, syscalls, uprobes};
    programs::ALL
        .iter()
        .map(|p| p.program)
        .chain(uprobes::ALL.iter().copied())
        .chain([uprobes::DISPATCH])
        .chain(syscalls::ALL.iter().flat_map(|f| f.iter()).map(|p| p.program))
        .map(|name| (name.to_string(), false))
        .collect()
}
