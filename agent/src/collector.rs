//! Reads the kernel maps and /proc into a [`Snapshot`], once per interval,
//! on the agent's own thread (never on the async runtime).

use std::{collections::BTreeMap, time::Instant};

use golens_ebpf::{GoStats, PressureStats, SchedStats};

use crate::{
    goruntime::STW_REASON_NAMES,
    limits::LimitsReader,
    snapshot::{
        AgentSnapshot, GoRuntimeSnapshot, Log2Histogram, ProcessSnapshot, SchedSnapshot, Snapshot,
        SyscallSnapshot,
    },
    tracker::Tracker,
};

/// The collection's own state between ticks.
#[derive(Default)]
pub struct Collector {
    limits: LimitsReader,
    collections: u64,
    /// Kernel drops of proc_events records at the last collection.
    proc_events_dropped: u64,
}

impl Collector {
    /// One collection: the safety nets first (lost records, freed slots),
    /// then every map read once.
    pub fn collect(&mut self, tracker: &mut Tracker) -> Snapshot {
        let started = Instant::now();
        let kernel_drops = read_kernel_drops(tracker);
        let dropped = kernel_drops.get("proc_event_ring_full").copied().unwrap_or(0);
        if dropped > self.proc_events_dropped {
            // Exec records were lost: a Go process may have started unseen.
            tracing::warn!(
                lost = dropped - self.proc_events_dropped,
                "exec/exit records lost; rescanning /proc"
            );
            if let Err(error) = tracker.scan() {
                tracing::warn!(%error, "rescanning /proc failed");
            }
        }
        self.proc_events_dropped = dropped;
        tracker.reconcile();
        tracker.rescan_if_capacity_freed();
        tracker.registry.reap_idle();

        let epoch = read_epoch(tracker);
        let mut processes = read_processes(tracker, epoch);
        next_epoch(tracker, epoch);
        let reader = self.limits.processes();
        for (process, tracked) in processes.iter_mut().zip(tracker.processes()) {
            process.limits = self.limits.read_process(&reader, tracked.key, &tracked.binary);
            // The peak is at least what /proc says now.
            if let (Some(peak), Some(now)) = (&mut process.syscalls.vmas_peak, process.limits.vmas)
            {
                *peak = (*peak).max(now);
            } else if process.syscalls.vmas_peak.is_none() && families_vma_on(tracker) {
                process.syscalls.vmas_peak = process.limits.vmas;
            }
        }
        let host = self.limits.host();
        self.collections += 1;
        let agent = AgentSnapshot {
            tracked_processes: processes.len() as u64,
            skipped_processes: tracker.skipped.clone(),
            kernel_drops,
            discovery_errors: tracker.discovery_errors.clone(),
            programs_attached: tracker.registry.kernel().attached.clone(),
            attach_mode: Some(tracker.registry.mode()),
            probes: tracker.registry.stats(),
            processes_tracked_total: tracker
                .tracked_total
                .iter()
                .map(|(how, count)| (how.to_string(), *count))
                .collect(),
            degraded: None,
            collection_duration_seconds: started.elapsed().as_secs_f64(),
            collections: self.collections,
        };
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Snapshot { timestamp, processes, host, agent }
    }
}

fn families_vma_on(tracker: &Tracker) -> bool {
    SyscallFamilies::attached(&tracker.registry.kernel().attached).vma
}

/// The kernel's per-process counters.
fn read_processes(tracker: &Tracker, epoch: u64) -> Vec<ProcessSnapshot> {
    let attached = &tracker.registry.kernel().attached;
    let sched_on = sched_attached(attached);
    let families = SyscallFamilies::attached(attached);
    tracker
        .processes()
        .map(|p| {
            let pid = p.key.pid;
            let sched = match tracker.maps.sched_stats.get(&pid, 0) {
                Ok(per_cpu) if sched_on => Some(sched_snapshot(per_cpu.iter())),
                _ => None,
            };
            let go = tracker.maps.go_stats.get(&pid, 0).map(|stats| go_snapshot(&stats));
            let syscalls = match tracker.maps.pressure_stats.get(&pid, 0) {
                Ok(per_cpu) => syscall_snapshot(per_cpu.iter(), epoch, families),
                Err(_) => SyscallSnapshot::default(),
            };
            ProcessSnapshot {
                pid,
                comm: p.comm.clone(),
                exe: p.exe.clone(),
                container_id: p.container.container_id.clone(),
                pod_uid: p.container.pod_uid.clone(),
                go_version: p.binary.go_version.clone().unwrap_or_else(|| "unknown".into()),
                stripped: p.binary.stripped,
                pie: p.binary.pie,
                sched,
                go: go.unwrap_or_default(),
                syscalls,
                limits: Default::default(),
                probes: p.probes.as_ref().clone(),
            }
        })
        .collect()
}

/// The scheduler view of a process: its per-CPU copies added up.
fn sched_snapshot<'a>(per_cpu: impl Iterator<Item = &'a SchedStats>) -> SchedSnapshot {
    let mut total = SchedStats::default();
    for stats in per_cpu {
        let (sum, one) = (&mut total.runqueue_latency, &stats.runqueue_latency);
        for (slot, count) in sum.slots.iter_mut().zip(one.slots) {
            *slot += count;
        }
        sum.sum_ns += one.sum_ns;
        sum.count += one.count;
        total.involuntary_switches += stats.involuntary_switches;
    }
    SchedSnapshot {
        runqueue_latency: Log2Histogram::from_kernel(&total.runqueue_latency),
        involuntary_switches: total.involuntary_switches,
    }
}

/// Which per-syscall families have at least one tracepoint attached.
#[derive(Debug, Clone, Copy, Default)]
struct SyscallFamilies {
    vma: bool,
    fd: bool,
    net: bool,
    netpoll: bool,
    timers: bool,
}

impl SyscallFamilies {
    fn attached(attached: &BTreeMap<String, bool>) -> SyscallFamilies {
        use golens_ebpf::syscalls::{FD, NET, NETPOLL, TIMERS, VMA};
        let any = |family: &[golens_ebpf::TracePointProgram]| {
            family.iter().any(|p| attached.get(p.program) == Some(&true))
        };
        SyscallFamilies {
            vma: any(VMA),
            fd: any(FD),
            net: any(NET),
            netpoll: any(NETPOLL),
            timers: any(TIMERS),
        }
    }
}

/// The syscall view of a process from its per-CPU copies.
fn syscall_snapshot<'a>(
    per_cpu: impl Iterator<Item = &'a PressureStats> + Clone,
    epoch: u64,
    on: SyscallFamilies,
) -> SyscallSnapshot {
    let add_hist = |pick: fn(&PressureStats) -> &golens_ebpf::Hist| {
        let mut total = golens_ebpf::Hist::default();
        for stats in per_cpu.clone() {
            let one = pick(stats);
            for (slot, count) in total.slots.iter_mut().zip(one.slots) {
                *slot += count;
            }
            total.sum_ns += one.sum_ns;
            total.count += one.count;
        }
        Log2Histogram::from_kernel(&total)
    };
    let sum = |pick: fn(&PressureStats) -> u64| per_cpu.clone().map(pick).sum::<u64>();
    let peak_this_epoch =
        per_cpu.clone().filter(|s| s.vmas_epoch == epoch).map(|s| s.vmas_peak).max();
    let last_seen = per_cpu.clone().map(|s| s.vmas).max().filter(|&v| v > 0);
    SyscallSnapshot {
        vmas_peak: on.vma.then(|| peak_this_epoch.or(last_seen)).flatten(),
        fd_exhaustion: on.fd.then(|| {
            BTreeMap::from([
                ("EMFILE".to_string(), sum(|s| s.emfile)),
                ("ENFILE".to_string(), sum(|s| s.enfile)),
            ])
        }),
        connect_eaddrnotavail: on.net.then(|| sum(|s| s.connect_eaddrnotavail)),
        netpoll_wait: on.netpoll.then(|| add_hist(|s| &s.netpoll_wait)),
        timer_lateness: on.timers.then(|| add_hist(|s| &s.timer_lateness)),
        timerfd_settime: on.timers.then(|| sum(|s| s.timerfd_settime)),
    }
}

/// The collection epoch the kernel's peaks belong to now.
fn read_epoch(tracker: &Tracker) -> u64 {
    tracker.maps.agent_config.get(&0, 0).map_or(0, |config| config.collection_epoch)
}

/// Starts a new epoch: the kernel's peaks start over.
fn next_epoch(tracker: &mut Tracker, epoch: u64) {
    if let Ok(mut config) = tracker.maps.agent_config.get(&0, 0) {
        config.collection_epoch = epoch + 1;
        let _ = tracker.maps.agent_config.set(0, config, 0);
    }
}

/// Whether run-queue latency is measured: one sched_switch variant, and both wakeup programs
/// where they were attached (run-queue latency from golens' wakeup timestamps; with the
/// kernel's sched_info they are not attached at all).
fn sched_attached(attached: &BTreeMap<String, bool>) -> bool {
    use golens_ebpf::programs::{SCHED_SWITCH_VARIANTS, SCHED_WAKEUPS};
    let on = |program: &str| attached.get(program) == Some(&true);
    SCHED_WAKEUPS.iter().all(|p| attached.get(p.program) != Some(&false))
        && SCHED_SWITCH_VARIANTS.iter().any(|p| on(p.program))
}

/// Kernel-side drop counters, summed over CPUs, by reason.
fn read_kernel_drops(tracker: &Tracker) -> BTreeMap<String, u64> {
    golens_ebpf::AGENT_COUNTERS
        .iter()
        .map(|&(index, reason)| {
            let total = tracker
                .maps
                .agent_counters
                .get(&index, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0);
            (reason.to_string(), total)
        })
        .collect()
}

fn go_snapshot(stats: &GoStats) -> GoRuntimeSnapshot {
    let by_reason = |hists: &[golens_ebpf::Hist]| {
        hists
            .iter()
            .zip(STW_REASON_NAMES)
            .filter(|(hist, _)| hist.count > 0)
            .map(|(hist, reason)| (reason.to_string(), Log2Histogram::from_kernel(hist)))
            .collect()
    };
    GoRuntimeSnapshot {
        gc_cycles: stats.gc_cycles,
        sysmon_preemptions: stats.sysmon_preemptions,
        stw_unpaired: stats.stw_unpaired,
        gc_cycle_duration: Log2Histogram::from_kernel(&stats.gc_cycle_duration),
        stw_time_to_stop: by_reason(&stats.stw_time_to_stop),
        stw_pause: by_reason(&stats.stw_pause),
        stw_tail: Log2Histogram::from_kernel(&stats.stw_tail),
        netpoll_calls: golens_ebpf::NETPOLL_MODES
            .iter()
            .map(|&(index, mode)| (mode.to_string(), stats.netpoll_calls[index as usize]))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_scheduler_stats_add_up() {
        let mut one = SchedStats::default();
        one.runqueue_latency.slots[10] = 2;
        one.runqueue_latency.sum_ns = 3000;
        one.involuntary_switches = 5;
        let mut other = SchedStats::default();
        other.runqueue_latency.slots[10] = 1;
        other.runqueue_latency.slots[20] = 4;
        other.runqueue_latency.sum_ns = 4_000_000;
        other.involuntary_switches = 1;
        let snapshot = sched_snapshot([one, other].iter());
        assert_eq!(snapshot.involuntary_switches, 6);
        assert_eq!(snapshot.runqueue_latency.slots[10], 3);
        assert_eq!(snapshot.runqueue_latency.slots[20], 4);
        assert_eq!(snapshot.runqueue_latency.count, 7);
        assert_eq!(snapshot.runqueue_latency.sum_ns, 4_003_000);
    }

    #[test]
    fn netpoll_calls_by_mode() {
        let stats = GoStats { netpoll_calls: [5, 7, 2], ..GoStats::default() };
        let go = go_snapshot(&stats);
        let modes: Vec<(&str, u64)> =
            go.netpoll_calls.iter().map(|(mode, n)| (mode.as_str(), *n)).collect();
        assert_eq!(modes, [("blocking", 5), ("nonblocking", 7), ("timed", 2)]);
    }
}
