//! `golens trace --pid N`: a GC timeline of one running Go process.
//!
//! It loads its own probes (the scheduler and Go runtime families) for that
//! one process and turns on the gc_events ring buffer for it
//! (golens_config.trace_tgid): one record per stop-the-world pause and per
//! GC cycle, grouped here into one line per cycle. At the end, a summary and
//! a verdict on where the process's wall time went.

use std::{
    io::Write,
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use golens_ebpf::{bindings, GcEvent};
use serde_json::json;

use crate::{
    cli::{ProbeFamily, RunArgs, TargetArgs, TraceArgs},
    discovery::{pidns::ProcView, procfs, TargetFilter},
    goruntime::STW_REASON_NAMES,
    pressure, run,
    verdict::{Shares, TimeSpent},
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn trace(args: &TraceArgs) -> Result<()> {
    let run_args = RunArgs {
        targets: TargetArgs { pids: vec![args.pid], comms: Vec::new(), max_processes: 16 },
        probes: vec![ProbeFamily::Sched, ProbeFamily::Goruntime],
        btf: args.btf.clone(),
        require_ebpf: true,
        ..RunArgs::default()
    };
    let view = ProcView::current().context("finding golens' pid namespace")?;
    run::check_pid_targets(&[args.pid], &view)?;
    let btf = run::preflight_ebpf(&run_args)?;
    let filter = TargetFilter { pids: vec![args.pid], comms: Vec::new(), max_processes: 16 };
    let (mut tracker, _proc_events) = run::load_and_attach(btf, &view, &filter, &run_args)?;
    let Some(process) = tracker.processes().next() else {
        bail!("process {} could not be traced (it exited?)", args.pid);
    };
    let (key, comm, version) = (
        process.key,
        process.comm.clone(),
        process.binary.go_version.clone().unwrap_or_else(|| "unknown".into()),
    );
    let missing: Vec<String> = process
        .probes
        .iter()
        .filter(|p| !p.attached)
        .map(|p| format!("{} ({})", p.probe, p.reason.as_deref().unwrap_or("?")))
        .collect();
    if !missing.is_empty() {
        eprintln!("warning: runtime probes not attached: {}", missing.join("; "));
    }
    let mut ring = tracker.registry.kernel_mut().take_gc_events()?;
    let mut config = tracker.maps.agent_config.get(&0, 0).context("reading agent_config")?;
    config.trace_tgid = args.pid;
    tracker.maps.agent_config.set(0, config, 0).context("turning the trace on")?;

    // SAFETY: the handler only stores into an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut out = std::io::stdout().lock();
    // On stderr with --json, so that stdout stays JSON lines (and a script
    // knows when the trace is on).
    let header = format!(
        "tracing pid {} ({comm}, {version}); GC cycles numbered from here; Ctrl-C to stop",
        args.pid
    );
    if args.json {
        eprintln!("{header}");
    } else {
        writeln!(out, "{header}")?;
    }
    let started = Instant::now();
    let started_ns = monotonic_ns();
    let before = Sample::read(&tracker, args.pid, &version);
    let mut timeline = Timeline::default();
    let mut ended_by = "Ctrl-C";
    loop {
        poll(ring.as_raw_fd(), Duration::from_millis(100));
        while let Some(item) = ring.next() {
            if let Some(event) = parse_event(&item) {
                let t = event.at_ns.saturating_sub(started_ns) as f64 / 1e9;
                for line in timeline.add(&event, t, args.json) {
                    writeln!(out, "{line}")?;
                }
            }
        }
        out.flush()?;
        if STOP.load(Ordering::SeqCst) {
            break;
        }
        if args.duration.is_some_and(|d| started.elapsed() >= d) {
            ended_by = "--duration";
            break;
        }
        if procfs::key(args.pid).map_or(true, |now| now != key) {
            ended_by = "the process exited";
            break;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let after = Sample::read(&tracker, args.pid, &version);
    let summary = timeline.summary(wall, &before, &after);
    if args.json {
        writeln!(out, "{}", summary.json(ended_by))?;
    } else {
        writeln!(out, "{}", summary.text(ended_by))?;
    }
    tracker.registry.shutdown();
    Ok(())
}

fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn poll(fd: i32, timeout: Duration) {
    let mut fds = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout.as_millis() as libc::c_int) };
}

fn parse_event(bytes: &[u8]) -> Option<GcEvent> {
    if bytes.len() < std::mem::size_of::<GcEvent>() {
        return None;
    }
    // SAFETY: length checked; GcEvent is plain old data; no alignment assumed.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<GcEvent>()) })
}

fn reason_name(reason: u32) -> &'static str {
    STW_REASON_NAMES.get(reason as usize).copied().unwrap_or("unknown")
}

/// A pause of the current cycle, or not.
fn is_gc_pause(reason: &str) -> bool {
    reason.starts_with("gc_") || reason == "unknown"
}

#[derive(Debug, Clone)]
struct Pause {
    reason: &'static str,
    pause_us: f64,
    stop_us: Option<f64>,
    at: f64,
    cycle: u64,
}

/// Events grouped into lines, and what the summary needs.
#[derive(Default)]
struct Timeline {
    pending: Vec<Pause>,
    pauses: Vec<Pause>,
    cycles: u64,
}

impl Timeline {
    /// The lines an event completes (a cycle's line, or a lone pause's).
    fn add(&mut self, event: &GcEvent, t: f64, json: bool) -> Vec<String> {
        match event.kind {
            bindings::GOLENS_GC_EVENT_PAUSE => {
                let pause = Pause {
                    reason: reason_name(event.reason),
                    pause_us: event.duration_ns as f64 / 1e3,
                    stop_us: (event.time_to_stop_ns > 0)
                        .then(|| event.time_to_stop_ns as f64 / 1e3),
                    at: t,
                    cycle: event.cycle,
                };
                self.pauses.push(pause.clone());
                if is_gc_pause(pause.reason) {
                    self.pending.push(pause);
                    return Vec::new();
                }
                vec![if json { pause_json(&pause, "stw") } else { pause_text(&pause) }]
            }
            bindings::GOLENS_GC_EVENT_CYCLE => {
                self.cycles += 1;
                let pauses = std::mem::take(&mut self.pending);
                let cycle_ms = event.duration_ns as f64 / 1e6;
                let line = if json {
                    json!({
                        "t": round(t),
                        "event": "gc",
                        "gc": event.cycle,
                        "cycle_ms": round(cycle_ms),
                        "pauses": pauses.iter().map(|p| json!({
                            "reason": p.reason,
                            "pause_us": round(p.pause_us),
                            "stop_us": p.stop_us.map(round),
                        })).collect::<Vec<_>>(),
                    })
                    .to_string()
                } else {
                    let parts: Vec<String> = pauses.iter().map(pause_part).collect();
                    format!(
                        "@{t:9.3}s  gc {:<6} cycle {cycle_ms:8.3} ms  {}",
                        event.cycle,
                        if parts.is_empty() { "(no pause seen)".into() } else { parts.join(", ") }
                    )
                };
                vec![line]
            }
            _ => Vec::new(),
        }
    }

    fn summary(&self, wall: f64, before: &Sample, after: &Sample) -> Summary {
        let mut pauses: Vec<f64> = self.pauses.iter().map(|p| p.pause_us).collect();
        pauses.sort_by(f64::total_cmp);
        let quantile = |q: f64| -> Option<f64> {
            (!pauses.is_empty()).then(|| pauses[((pauses.len() - 1) as f64 * q).round() as usize])
        };
        let worst = self.pauses.iter().max_by(|a, b| a.pause_us.total_cmp(&b.pause_us)).cloned();
        let difference = |before: Option<f64>, after: Option<f64>| Some(after? - before?);
        let spent = TimeSpent {
            wall,
            stopped: Some(self.pauses.iter().map(|p| p.pause_us).sum::<f64>() / 1e6),
            waited: difference(
                before.runqueue_ns.map(|ns| ns as f64 / 1e9),
                after.runqueue_ns.map(|ns| ns as f64 / 1e9),
            ),
            ran: difference(before.cpu_s, after.cpu_s),
            // Without a quota the counter stays put: 0.
            throttled: difference(before.throttled_s, after.throttled_s),
        };
        Summary {
            wall,
            cycles: self.cycles,
            pauses: pauses.len(),
            p50_us: quantile(0.5),
            p99_us: quantile(0.99),
            worst,
            shares: Shares::of(&spent),
        }
    }
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn pause_part(pause: &Pause) -> String {
    let name = pause.reason.trim_start_matches("gc_").replace('_', " ");
    match pause.stop_us {
        Some(stop) => format!("{name} {:.1} µs (stop {stop:.1} µs)", pause.pause_us),
        None => format!("{name} {:.1} µs", pause.pause_us),
    }
}

fn pause_text(pause: &Pause) -> String {
    format!("@{:9.3}s  stw    {}", pause.at, pause_part(pause))
}

fn pause_json(pause: &Pause, event: &str) -> String {
    json!({
        "t": round(pause.at),
        "event": event,
        "reason": pause.reason,
        "pause_us": round(pause.pause_us),
        "stop_us": pause.stop_us.map(round),
    })
    .to_string()
}

/// What the verdict compares, read at the start and at the end.
struct Sample {
    /// Time the process's threads spent runnable, waiting for a CPU.
    runqueue_ns: Option<u64>,
    /// CPU time the process used (utime + stime).
    cpu_s: Option<f64>,
    throttled_s: Option<f64>,
}

impl Sample {
    fn read(tracker: &crate::tracker::Tracker, pid: u32, version: &str) -> Sample {
        let runqueue_ns = tracker
            .maps
            .sched_stats
            .get(&pid, 0)
            .ok()
            .map(|per_cpu| per_cpu.iter().map(|s| s.runqueue_latency.sum_ns).sum());
        let limits = pressure::read_process(pid, Some(version));
        Sample {
            runqueue_ns,
            cpu_s: procfs::cpu_seconds(pid),
            throttled_s: limits.cpu_throttled_seconds,
        }
    }
}

struct Summary {
    wall: f64,
    cycles: u64,
    pauses: usize,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    worst: Option<Pause>,
    shares: Shares,
}

impl Summary {
    fn text(&self, ended_by: &str) -> String {
        let us = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1} µs"));
        let worst = self.worst.as_ref().map_or("–".to_string(), |p| {
            format!("{:.1} µs ({}, @{:.3}s, gc {})", p.pause_us, p.reason, p.at, p.cycle)
        });
        format!(
            "\nsummary ({ended_by}) over {:.1} s: {} GC cycles ({:.2}/s), {} pauses: p50 {}, p99 {}, \
             max {worst}\nwhere the time went: {}",
            self.wall,
            self.cycles,
            self.cycles as f64 / self.wall,
            self.pauses,
            us(self.p50_us),
            us(self.p99_us),
            self.shares.verdict()
        )
    }

    fn json(&self, ended_by: &str) -> String {
        json!({
            "event": "summary",
            "ended_by": ended_by,
            "seconds": round(self.wall),
            "gc_cycles": self.cycles,
            "gc_per_second": round(self.cycles as f64 / self.wall),
            "pauses": self.pauses,
            "pause_p50_us": self.p50_us.map(round),
            "pause_p99_us": self.p99_us.map(round),
            "pause_max_us": self.worst.as_ref().map(|p| round(p.pause_us)),
            "stopped_share": self.shares.stopped.map(round),
            "waiting_for_cpu_share": self.shares.waiting.map(round),
            "throttled_share": self.shares.throttled.map(round),
            "verdict": self.shares.verdict(),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn count_by_reason(pauses: &[Pause]) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for pause in pauses {
            *counts.entry(pause.reason).or_default() += 1;
        }
        counts
    }

    fn event(kind: u32, reason: u32, at_ns: u64, duration_ns: u64, cycle: u64) -> GcEvent {
        GcEvent { kind, reason, at_ns, duration_ns, time_to_stop_ns: 5_000, cycle }
    }

    #[test]
    fn pauses_group_into_their_cycle_and_others_stand_alone() {
        let mut timeline = Timeline::default();
        let (pause, cycle) = (bindings::GOLENS_GC_EVENT_PAUSE, bindings::GOLENS_GC_EVENT_CYCLE);
        assert!(timeline.add(&event(pause, 2, 0, 40_000, 1), 0.1, false).is_empty());
        let lone = timeline.add(&event(pause, 7, 0, 30_000, 1), 0.2, false);
        assert_eq!(lone.len(), 1);
        assert!(lone[0].contains("stw    read mem stats 30.0 µs (stop 5.0 µs)"), "{}", lone[0]);
        assert!(timeline.add(&event(pause, 1, 0, 60_000, 1), 0.3, false).is_empty());
        let line = timeline.add(&event(cycle, 0, 0, 2_000_000, 1), 0.3, false);
        assert!(line[0].contains("gc 1"), "{}", line[0]);
        assert!(line[0].contains("cycle    2.000 ms"), "{}", line[0]);
        assert!(
            line[0].contains("sweep termination 40.0 µs (stop 5.0 µs), mark termination 60.0 µs")
        );
        let json_line = timeline.add(&event(cycle, 0, 0, 1_000_000, 2), 0.4, true);
        let parsed: serde_json::Value = serde_json::from_str(&json_line[0]).unwrap();
        assert_eq!(parsed["event"], "gc");
        assert_eq!(parsed["gc"], 2);
        assert_eq!(timeline.cycles, 2);
        assert_eq!(count_by_reason(&timeline.pauses).len(), 3);
    }

    #[test]
    fn summary_quantiles_and_worst_pause() {
        let mut timeline = Timeline::default();
        for (i, us) in [10u64, 20, 30, 40, 1000].iter().enumerate() {
            timeline.add(
                &event(bindings::GOLENS_GC_EVENT_PAUSE, 2, 0, us * 1000, i as u64),
                i as f64,
                false,
            );
        }
        let sample = Sample { runqueue_ns: Some(0), cpu_s: Some(1.0), throttled_s: None };
        let summary = timeline.summary(10.0, &sample, &sample);
        assert_eq!(summary.pauses, 5);
        assert_eq!(summary.p50_us, Some(30.0));
        assert_eq!(summary.worst.as_ref().map(|p| p.pause_us), Some(1000.0));
        assert!((summary.shares.stopped.unwrap() - 0.00011).abs() < 1e-9);
        // Threads that waited 1 s and ran 3 s waited a quarter of the time they wanted a CPU.
        let later = Sample { runqueue_ns: Some(1_000_000_000), cpu_s: Some(4.0), ..sample };
        assert_eq!(timeline.summary(10.0, &sample, &later).shares.waiting, Some(0.25));
    }
}
