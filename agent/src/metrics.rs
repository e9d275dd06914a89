//! Prometheus exposition of a [`Snapshot`]: a custom collector that passes
//! the kernel's histogram buckets through as they are (never re-observed
//! value by value). Rendered once per collection, in both formats, so a
//! scrape only copies a string.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};

use std::sync::Arc;

use crate::snapshot::{Log2Histogram, ProcessSnapshot, Snapshot};

/// Exported latency buckets: kernel slots 9..=34, i.e. `le` from 1.024 µs to
/// 34.4 s in powers of two, plus +Inf (27 buckets per series).
pub const FIRST_EXPORTED_SLOT: usize = 9;
pub const LAST_EXPORTED_SLOT: usize = 34;

/// OpenMetrics text, what Prometheus asks for first when it scrapes.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text format, for everyone else (curl, promtool).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug)]
struct SnapshotCollector {
    snapshot: Arc<Snapshot>,
}

/// One snapshot's exposition in both formats.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub openmetrics: String,
    pub text: String,
}

impl Exposition {
    /// The body in the format the client accepts: OpenMetrics when its
    /// `Accept` header names it (Prometheus does), else Prometheus text
    /// 0.0.4. Returns (content type, body).
    pub fn negotiate(&self, accept: Option<&str>) -> (&'static str, &str) {
        if accept.is_some_and(|accept| accept.contains("application/openmetrics-text")) {
            (OPENMETRICS_CONTENT_TYPE, &self.openmetrics)
        } else {
            (TEXT_CONTENT_TYPE, &self.text)
        }
    }
}

pub fn render(snapshot: Arc<Snapshot>) -> Result<Exposition, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector { snapshot }));
    let mut openmetrics = String::new();
    prometheus_client::encoding::text::encode(&mut openmetrics, &registry)?;
    let text = openmetrics_to_prometheus_text(&openmetrics);
    Ok(Exposition { openmetrics, text })
}

/// Rewrites prometheus-client's OpenMetrics text into the Prometheus 0.0.4
/// text format. The samples are the same; the differences are in metadata:
/// a counter family is named without `_total` in OpenMetrics and with it in
/// 0.0.4 (its samples carry `_total` in both), and 0.0.4 has no `# UNIT`
/// or `# EOF` lines.
fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut pending_help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# HELP ") {
            if let Some(help) = pending_help.replace(line) {
                out.push_str(help);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let help = pending_help.take();
            if kind == "counter" && !name.ends_with("_total") {
                if let Some(text) = help.and_then(|h| h.strip_prefix("# HELP ")?.strip_prefix(name))
                {
                    out.push_str(&format!("# HELP {name}_total{text}\n"));
                }
                out.push_str(&format!("# TYPE {name}_total counter\n"));
            } else {
                if let Some(help) = help {
                    out.push_str(help);
                    out.push('\n');
                }
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        if let Some(help) = pending_help.take() {
            out.push_str(help);
            out.push('\n');
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(help) = pending_help {
        out.push_str(help);
        out.push('\n');
    }
    out
}

/// `pid`, `comm`, and `container_id` / `pod_uid` when the process has them.
fn process_labels(process: &ProcessSnapshot) -> Vec<(&'static str, String)> {
    let mut labels = vec![("pid", process.pid.to_string()), ("comm", process.comm.clone())];
    if let Some(id) = &process.container_id {
        labels.push(("container_id", id.clone()));
    }
    if let Some(uid) = &process.pod_uid {
        labels.push(("pod_uid", uid.clone()));
    }
    labels
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_processes(&self.snapshot, &mut encoder)?;
        encode_limits(&self.snapshot.processes, &mut encoder)?;
        encode_host(&self.snapshot.host, &mut encoder)?;
        encode_agent(&self.snapshot, &mut encoder)
    }
}

/// Per-process families: `value` returns None for processes whose probes
/// for this metric are not attached (absent, not zero: a missing probe must
/// not read as "nothing happened").
fn encode_process_counters(
    encoder: &mut DescriptorEncoder,
    processes: &[ProcessSnapshot],
    (name, help): (&str, &str),
    value: fn(&ProcessSnapshot) -> Option<u64>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for process in processes {
        if let Some(value) = value(process) {
            metric
                .encode_family(&process_labels(process))?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
    }
    Ok(())
}

fn encode_process_histograms(
    encoder: &mut DescriptorEncoder,
    processes: &[ProcessSnapshot],
    (name, help): (&str, &str),
    value: fn(&ProcessSnapshot) -> Option<&Log2Histogram>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for process in processes {
        if let Some(histogram) = value(process) {
            encode_histogram(&mut metric.encode_family(&process_labels(process))?, histogram)?;
        }
    }
    Ok(())
}

const GC_CYCLE_PROBES: &[&str] = &["gc_cycle_start"];
const GC_DURATION_PROBES: &[&str] = &["gc_cycle_start", "gc_cycle_end"];
/// gc_cycle_end ends the mark-termination pauses where the runtime does.
const STW_PAUSE_PROBES: &[&str] = &["stw_stop", "stw_started", "gc_cycle_end"];
const STW_TIME_TO_STOP_PROBES: &[&str] = &["stw_stop", "stw_stopped"];
const SYSMON_PROBES: &[&str] = &["sysmon_preempt"];
const NETPOLL_PROBES: &[&str] = &["netpoll"];

/// Each process against its limits (from /proc and its cgroup).
fn encode_limits(
    processes: &[ProcessSnapshot],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    type Get = fn(&ProcessSnapshot) -> Option<u64>;
    let gauges: [(&str, &str, Get); 3] = [
        ("golens_process_open_fds", "Open file descriptors (entries of /proc/PID/fd).", |p| {
            p.limits.open_fds
        }),
        (
            "golens_process_max_fds",
            "The process's soft RLIMIT_NOFILE: open() fails with EMFILE at this many fds.",
            |p| p.limits.max_fds,
        ),
        (
            "golens_process_vmas",
            "Memory mappings now (lines of /proc/PID/maps); vm.max_map_count is the limit.",
            |p| p.limits.vmas,
        ),
    ];
    for (name, help, get) in gauges {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for process in processes {
            if let Some(value) = get(process) {
                family.encode_family(&process_labels(process))?.encode_gauge(&value)?;
            }
        }
    }
    let mut family = encoder.encode_descriptor(
        "golens_cgroup_cpu_throttled_seconds",
        "Time the process's cgroup was throttled by its CPU quota (cpu.stat, v1 or v2).",
        None,
        MetricType::Counter,
    )?;
    for process in processes {
        if let Some(seconds) = process.limits.cpu_throttled_seconds {
            family
                .encode_family(&process_labels(process))?
                .encode_counter::<NoLabelSet, _, u64>(&seconds, None)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "golens_cgroup_cpu_quota_cores",
        "The process's cgroup CPU quota in cores (quota / period); absent when unlimited.",
        None,
        MetricType::Gauge,
    )?;
    for process in processes {
        if let Some(cores) = process.limits.cpu_quota_cores {
            family.encode_family(&process_labels(process))?.encode_gauge(&cores)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "golens_go_gomaxprocs",
        "GOMAXPROCS of the process, by source: observed (the runtime's own runtime.gomaxprocs, \
         read from the process's memory at each collection), else env (its GOMAXPROCS \
         variable), go_default_cpus (its Go version's default: the CPUs it may use), \
         go_default_cgroup (Go 1.25+: the cgroup CPU quota).",
        None,
        MetricType::Gauge,
    )?;
    for process in processes {
        if let (Some(value), Some(source)) =
            (process.limits.gomaxprocs, &process.limits.gomaxprocs_source)
        {
            let mut labels = process_labels(process);
            labels.push(("source", source.clone()));
            family.encode_family(&labels)?.encode_gauge(&u64::from(value))?;
        }
    }
    Ok(())
}

/// The host against its limits, and golens doctor's checks.
fn encode_host(
    host: &crate::snapshot::HostSnapshot,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let gauges = [
        ("golens_host_vmas_max", "vm.max_map_count: the VMA limit of every process (named so: a gauge may not end in _count).", host.max_map_count),
        ("golens_host_open_files", "File handles allocated host-wide (fs.file-nr).", host.files_allocated),
        ("golens_host_max_files", "fs.file-max: the host-wide file handle limit.", host.files_max),
        (
            "golens_host_ephemeral_port_range_size",
            "Ports in net.ipv4.ip_local_port_range.",
            host.ephemeral_ports,
        ),
        (
            "golens_host_ephemeral_ports_used",
            "Distinct local TCP ports inside the ephemeral range held by sockets of golens' network \
             namespace, IPv4 and IPv6, any state, over all local addresses (netlink sock_diag).",
            host.ephemeral_ports_used,
        ),
        ("golens_host_tcp_time_wait_sockets", "TCP sockets in TIME_WAIT.", host.tcp_time_wait),
        (
            "golens_host_conntrack_entries",
            "Connection tracking entries (absent when conntrack is not loaded).",
            host.conntrack_entries,
        ),
        (
            "golens_host_conntrack_max",
            "nf_conntrack_max (absent when conntrack is not loaded).",
            host.conntrack_max,
        ),
    ];
    for (name, help, value) in gauges {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        if let Some(value) = value {
            family.encode_gauge(&value)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "golens_host_listen_overflows",
        "Connections dropped because a listen queue was full (TcpExt ListenOverflows).",
        None,
        MetricType::Counter,
    )?;
    if let Some(overflows) = host.listen_overflows {
        family.encode_counter::<NoLabelSet, _, u64>(&overflows, None)?;
    }
    let mut family = encoder.encode_descriptor(
        "golens_host_check_status",
        "golens doctor's host checks (run every 5 minutes): 0 pass, 1 warn (or could not be read), \
         2 fail; `golens doctor` explains each.",
        None,
        MetricType::Gauge,
    )?;
    for (check, status) in &host.checks {
        family.encode_family(&[("check", check.as_str())])?.encode_gauge(&u64::from(*status))?;
    }
    Ok(())
}

/// The per-syscall tracepoint families: a family that is off exports nothing.
fn encode_syscall_families(
    encoder: &mut DescriptorEncoder,
    processes: &[ProcessSnapshot],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "golens_process_vmas_peak",
        "Highest number of memory mappings (mm->map_count, limited by vm.max_map_count) seen at \
         the exits of mmap/munmap/mremap/brk/mprotect since the previous collection (the last \
         count when there was none).",
        None,
        MetricType::Gauge,
    )?;
    for process in processes {
        if let Some(peak) = process.syscalls.vmas_peak {
            family.encode_family(&process_labels(process))?.encode_gauge(&peak)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "golens_process_fd_exhaustion",
        "fd-creating syscalls (open, socket, accept, dup, pipe, epoll_create, eventfd, \
         timerfd_create, ...) that failed with EMFILE (the process's RLIMIT_NOFILE) or ENFILE \
         (fs.file-max), by errno.",
        None,
        MetricType::Counter,
    )?;
    for process in processes {
        for (errno, count) in process.syscalls.fd_exhaustion.iter().flatten() {
            let mut labels = process_labels(process);
            labels.push(("errno", errno.clone()));
            family.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(count, None)?;
        }
    }
    encode_process_counters(
        encoder,
        processes,
        (
            "golens_process_connect_eaddrnotavail",
            "connect() calls that failed with EADDRNOTAVAIL: no ephemeral port left \
               (net.ipv4.ip_local_port_range).",
        ),
        |p| p.syscalls.connect_eaddrnotavail,
    )?;
    encode_process_counters(
        encoder,
        processes,
        ("golens_timerfd_settime", "timerfd_settime() calls."),
        |p| p.syscalls.timerfd_settime,
    )?;
    encode_process_histograms(
        encoder,
        processes,
        (
            "golens_go_netpoll_wait_seconds",
            "Blocking epoll waits (epoll_wait/epoll_pwait/epoll_pwait2 with a timeout other \
               than 0: the Go netpoller parking an M): how long each lasted.",
        ),
        |p| p.syscalls.netpoll_wait.as_ref(),
    )?;
    encode_process_histograms(
        encoder,
        processes,
        (
            "golens_timer_lateness_seconds",
            "Timed waits that timed out (nanosleep, clock_nanosleep, and with the netpoll family \
               epoll timeouts): how much later than asked they returned.",
        ),
        |p| p.syscalls.timer_lateness.as_ref(),
    )?;
    Ok(())
}

/// A histogram family with a `reason` label, per process whose `probes` are attached.
fn encode_by_reason(
    encoder: &mut DescriptorEncoder,
    processes: &[ProcessSnapshot],
    (name, help): (&str, &str),
    probes: &[&str],
    value: fn(&ProcessSnapshot) -> &std::collections::BTreeMap<String, Log2Histogram>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for process in processes.iter().filter(|p| p.probes_attached(probes)) {
        for (reason, histogram) in value(process) {
            let mut labels = process_labels(process);
            labels.push(("reason", reason.clone()));
            encode_histogram(&mut family.encode_family(&labels)?, histogram)?;
        }
    }
    Ok(())
}

fn encode_processes(
    snapshot: &Snapshot,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let processes = &snapshot.processes;
    let mut family = encoder.encode_descriptor(
        "golens_process_info",
        "A watched Go process (value is always 1).",
        None,
        MetricType::Gauge,
    )?;
    for process in processes {
        let mut labels = process_labels(process);
        labels.push(("exe", process.exe.clone()));
        labels.push(("go_version", process.go_version.clone()));
        family.encode_family(&labels)?.encode_gauge(&1u64)?;
    }

    encode_process_histograms(
        encoder,
        processes,
        (
            "golens_sched_runqueue_latency_seconds",
            "Time the process's threads waited on a run queue: wakeup or preemption to on-CPU.",
        ),
        |p| p.sched.as_ref().map(|s| &s.runqueue_latency),
    )?;
    encode_process_counters(
        encoder,
        processes,
        (
            "golens_sched_involuntary_switches",
            "Times a thread of the process left the CPU while still runnable (preempted).",
        ),
        |p| p.sched.as_ref().map(|s| s.involuntary_switches),
    )?;

    encode_process_counters(
        encoder,
        processes,
        (
            "golens_go_gc_cycles",
            "GC cycles started (runtime.gcResetMarkState, called by gcStart once per cycle).",
        ),
        |p| p.probes_attached(GC_CYCLE_PROBES).then_some(p.go.gc_cycles),
    )?;
    encode_process_histograms(
        encoder,
        processes,
        (
            "golens_go_gc_cycle_duration_seconds",
            "GC cycle: from its start (runtime.gcResetMarkState entry) to the end of mark \
               termination by the runtime's own clock (gcMarkTermination's `now`).",
        ),
        |p| p.probes_attached(GC_DURATION_PROBES).then_some(&p.go.gc_cycle_duration),
    )?;
    encode_by_reason(
        encoder,
        processes,
        (
            "golens_go_stw_time_to_stop_seconds",
            "Stop-the-world: time the runtime waited for every P to stop (stopTheWorldWithSema's \
             entry to the moment it records its own stopping time, Go 1.22+; to its final check \
             before returning, older Go), by reason.",
        ),
        STW_TIME_TO_STOP_PROBES,
        |p| &p.go.stw_time_to_stop,
    )?;
    encode_by_reason(
        encoder,
        processes,
        (
            "golens_go_stw_pause_seconds",
            "Stop-the-world pause, the runtime's own window (what go_gc_duration_seconds and \
             /sched/pauses/total report): stopTheWorldWithSema's start to startTheWorldWithSema's \
             clock read before wakep, or, for mark termination, to gcMarkTermination's; by reason \
             (the runtime's stwReason, Go 1.21+; unknown before).",
        ),
        STW_PAUSE_PROBES,
        |p| &p.go.stw_pause,
    )?;

    encode_process_histograms(
        encoder,
        processes,
        (
            "golens_go_stw_tail_seconds",
            "Time the world stayed stopped after a mark-termination pause ended by the \
               runtime's own clock (its bookkeeping before startTheWorldWithSema): not counted \
               in go_gc_duration_seconds nor in golens_go_stw_pause_seconds.",
        ),
        |p| p.probes_attached(STW_PAUSE_PROBES).then_some(&p.go.stw_tail),
    )?;

    encode_process_counters(
        encoder,
        processes,
        (
            "golens_go_sysmon_preemptions",
            "Goroutines sysmon asked to yield after running more than 10 ms (calls of \
               runtime.preemptone from runtime.retake).",
        ),
        |p| p.probes_attached(SYSMON_PROBES).then_some(p.go.sysmon_preemptions),
    )?;

    let mut family = encoder.encode_descriptor(
        "golens_go_netpoll_calls",
        "runtime.netpoll calls (family gonetpoll, opt-in), by mode: blocking (delay < 0: the \
         last idle thread waits for network I/O), nonblocking (delay 0: a thread looking for \
         work polls), timed (delay > 0: blocks until the next timer at most).",
        None,
        MetricType::Counter,
    )?;
    for process in processes.iter().filter(|p| p.probes_attached(NETPOLL_PROBES)) {
        for (mode, count) in &process.go.netpoll_calls {
            let mut labels = process_labels(process);
            labels.push(("mode", mode.clone()));
            family.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(count, None)?;
        }
    }

    encode_syscall_families(encoder, processes)?;

    let mut family = encoder.encode_descriptor(
        "golens_probe_attached",
        "Go runtime probe attached to the process (1) or not (0; the reason is in the log and \
         in `golens list`).",
        None,
        MetricType::Gauge,
    )?;
    for process in processes {
        for probe in &process.probes {
            let mut labels = process_labels(process);
            labels.push(("probe", probe.probe.clone()));
            family.encode_family(&labels)?.encode_gauge(&u64::from(probe.attached))?;
        }
    }
    Ok(())
}

fn encode_histogram(
    metric: &mut MetricEncoder,
    histogram: &Log2Histogram,
) -> Result<(), std::fmt::Error> {
    let buckets = histogram.prometheus_buckets(FIRST_EXPORTED_SLOT, LAST_EXPORTED_SLOT);
    metric.encode_histogram::<NoLabelSet>(histogram.sum_seconds(), histogram.count, &buckets, None)
}

fn encode_agent(
    snapshot: &Snapshot,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let agent = &snapshot.agent;
    let mut family = encoder.encode_descriptor(
        "golens_agent_tracked_processes",
        "Go processes the agent is watching.",
        None,
        MetricType::Gauge,
    )?;
    family.encode_gauge(&agent.tracked_processes)?;

    let labelled_counters = [
        (
            "golens_agent_skipped_processes",
            "Go processes not watched, by reason, each counted once (max_processes: the \
             --max-processes cap; a skipped process is considered again when a slot frees up).",
            &agent.skipped_processes,
        ),
        (
            "golens_agent_kernel_drops",
            "Work the kernel side dropped, by reason (a full map or ring buffer).",
            &agent.kernel_drops,
        ),
        (
            "golens_agent_discovery_errors",
            "Processes whose executable could not be inspected, by reason.",
            &agent.discovery_errors,
        ),
    ];
    let tracked_total = (
        "golens_agent_processes_tracked",
        "Go processes that started being watched, by how: scan (found in /proc), exec (a new \
         binary, inspected and attached), kernel_exec (a known binary, tracked by the kernel \
         before its first instruction).",
        &agent.processes_tracked_total,
    );
    let mut family =
        encoder.encode_descriptor(tracked_total.0, tracked_total.1, None, MetricType::Counter)?;
    for (how, value) in tracked_total.2 {
        family
            .encode_family(&[("how", how.as_str())])?
            .encode_counter::<NoLabelSet, _, u64>(value, None)?;
    }
    let gauges = [
        (
            "golens_agent_probed_binaries",
            "Go executables with runtime uprobes attached (probes are per binary, not per \
             process), including ones kept a while after their last process left.",
            agent.probes.binaries,
        ),
        (
            "golens_agent_uprobe_links",
            "Uprobe links the agent holds (each costs the kernel an RCU grace period to close).",
            agent.probes.links,
        ),
    ];
    for (name, help, value) in gauges {
        encoder.encode_descriptor(name, help, None, MetricType::Gauge)?.encode_gauge(&value)?;
    }
    if let Some(mode) = agent.attach_mode {
        let mode = serde_json::to_value(mode).ok();
        let mode = mode.as_ref().and_then(|m| m.as_str()).unwrap_or("unknown");
        encoder
            .encode_descriptor(
                "golens_agent_attach_mode",
                "How runtime uprobes are attached: uprobe_multi (one link per probe per binary, \
                 kernel 6.6+) or perf_event (one per point per binary).",
                None,
                MetricType::Gauge,
            )?
            .encode_family(&[("mode", mode)])?
            .encode_gauge(&1u64)?;
    }
    for (name, help, values) in labelled_counters {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (reason, value) in values {
            family
                .encode_family(&[("reason", reason.as_str())])?
                .encode_counter::<NoLabelSet, _, u64>(value, None)?;
        }
    }

    encoder
        .encode_descriptor(
            "golens_agent_ebpf_available",
            "1 when golens' eBPF programs are loaded; 0 when it runs degraded (no BTF, a missing \
             capability, bpf() blocked: the reason is in its log and in /api/v1/snapshot), \
             serving only what /proc gives.",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&u64::from(agent.degraded.is_none()))?;

    let mut family = encoder.encode_descriptor(
        "golens_agent_program_attached",
        "eBPF program attached (1) or not (0).",
        None,
        MetricType::Gauge,
    )?;
    for (program, attached) in &agent.programs_attached {
        family
            .encode_family(&[("program", program.as_str())])?
            .encode_gauge(&u64::from(*attached))?;
    }

    let mut family = encoder.encode_descriptor(
        "golens_agent_collection_duration_seconds",
        "Time the last collection (reading every kernel map and /proc file) took.",
        None,
        MetricType::Gauge,
    )?;
    family.encode_gauge(&agent.collection_duration_seconds)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_name_in_prometheus_text() {
        let openmetrics = "# HELP golens_x Things.\n# TYPE golens_x counter\n\
                           golens_x_total{pid=\"1\"} 3\n\
                           # HELP golens_h_seconds Time.\n# TYPE golens_h_seconds histogram\n\
                           # UNIT golens_h_seconds seconds\n\
                           golens_h_seconds_sum 1.5\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus_text(openmetrics),
            "# HELP golens_x_total Things.\n# TYPE golens_x_total counter\n\
             golens_x_total{pid=\"1\"} 3\n\
             # HELP golens_h_seconds Time.\n# TYPE golens_h_seconds histogram\n\
             golens_h_seconds_sum 1.5\n"
        );
    }

    #[test]
    fn netpoll_calls_only_where_the_probe_is_attached() {
        use crate::snapshot::{GoRuntimeSnapshot, ProbeStatus};
        let process = |pid: u32, attached: bool| ProcessSnapshot {
            pid,
            comm: "app".into(),
            exe: "/app".into(),
            container_id: None,
            pod_uid: None,
            go_version: "go1.27.3".into(),
            stripped: false,
            pie: false,
            sched: None,
            go: GoRuntimeSnapshot {
                netpoll_calls: [("blocking", 4), ("nonblocking", 9), ("timed", 1)]
                    .map(|(mode, n)| (mode.to_string(), n))
                    .into(),
                ..Default::default()
            },
            syscalls: Default::default(),
            limits: Default::default(),
            probes: vec![ProbeStatus {
                probe: "netpoll".into(),
                function: "runtime.netpoll".into(),
                attached,
                points: usize::from(attached),
                reason: None,
                site: None,
                single_stepped: false,
            }],
        };
        let snapshot =
            Snapshot { processes: vec![process(1, true), process(2, false)], ..Default::default() };
        let text = render(Arc::new(snapshot)).unwrap().text;
        assert!(
            text.contains(
                "golens_go_netpoll_calls_total{pid=\"1\",comm=\"app\",mode=\"nonblocking\"} 9"
            ),
            "{text}"
        );
        assert!(text.contains("mode=\"blocking\"} 4") && text.contains("mode=\"timed\"} 1"));
        assert!(!text.contains("golens_go_netpoll_calls_total{pid=\"2\""), "absent, not 0");
    }

    #[test]
    fn negotiates_on_the_accept_header() {
        let exposition = render(Arc::new(Snapshot::default())).unwrap();
        let prometheus =
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        let (content_type, body) = exposition.negotiate(Some(prometheus));
        assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
        assert!(body.ends_with("# EOF\n"));
        for accept in [None, Some("*/*"), Some("text/plain")] {
            let (content_type, body) = exposition.negotiate(accept);
            assert_eq!(content_type, TEXT_CONTENT_TYPE);
            assert!(!body.contains("# EOF"));
            assert!(body.contains("# TYPE golens_agent_kernel_drops_total counter"), "{body}");
        }
    }
}
