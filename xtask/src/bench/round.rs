//! One round: optionally start an agent, run hey at the fixed rate, and take the service's
//! CPU time, GC cycles and the agent's program counters around it.

use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    bpf_stats::{self, ProgramCost},
    hey::{self, LoadReport},
    plan::{Config, PlannedRound},
    processes::{self, Agent, Service},
    procfs::{self, Machine},
};
use crate::util;

/// Between the agent being ready (or, for the baseline, the previous round) and the load: lets
/// the attach and the first collections pass. Baseline rounds wait the same.
const SETTLE: Duration = Duration::from_secs(1);
/// A round during which the rest of the machine (not the service, not golens, not hey) used
/// more than this many CPUs is excluded: another build or test shared the service's CPU.
pub const DISTURBED_CPUS: f64 = 0.2;
/// Before each round: wait until the rest of the machine uses at most this many CPUs…
pub const QUIET_CPUS: f64 = 0.1;
/// …over a window this long…
const QUIET_WINDOW: Duration = Duration::from_secs(1);
/// …for at most this long (then the round runs anyway, and may be excluded).
pub const QUIET_TIMEOUT: Duration = Duration::from_secs(180);

/// What the load and the CPU counters saw in one round.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundResult {
    pub block: usize,
    pub config: Config,
    pub target_rate: f64,
    pub load: LoadReport,
    /// utime + stime of the service during the load, seconds.
    pub service_cpu_seconds: f64,
    /// utime + stime of golens during the load, seconds (None without an agent).
    pub agent_cpu_seconds: Option<f64>,
    /// GC cycles the service itself completed during the load (its /debug/gc).
    pub service_gc_cycles: Option<u64>,
    /// GC cycles golens counted during the load (goruntime configurations only).
    pub golens_gc_cycles: Option<u64>,
    /// Involuntary context switches of the service's threads during the load: it was
    /// preempted, by another process or by another of its own threads (all share its CPU).
    pub service_involuntary_switches: Option<u64>,
    /// Wall time from the first to the last CPU reading around the load, seconds.
    pub window_seconds: f64,
    /// CPU time every other process (not the service, golens, this bench or hey) used in that
    /// window, seconds.
    pub other_cpu_seconds: Option<f64>,
    /// Per golens program, during the load.
    pub programs: Vec<ProgramCost>,
    /// Something odd about the agent's stop, if anything.
    pub agent_note: Option<String>,
}

impl RoundResult {
    pub fn achieved_rate(&self) -> f64 {
        self.load.achieved_rate()
    }

    /// Whether the round counts (see `exclusion`).
    pub fn valid(&self) -> bool {
        self.exclusion().is_none()
    }

    /// Why the round is left out of the figures: it did not complete its target rate within
    /// hey::RATE_TOLERANCE, or the rest of the machine used more than DISTURBED_CPUS.
    pub fn exclusion(&self) -> Option<String> {
        let mut reasons = Vec::new();
        let achieved = self.achieved_rate();
        if self.load.ok_responses == 0 || !hey::rate_achieved(achieved, self.target_rate) {
            reasons.push(format!(
                "completed {achieved:.0} requests/s of {:.0} ({:+.1} %)",
                self.target_rate,
                (achieved / self.target_rate - 1.0) * 100.0
            ));
        }
        match self.other_cpus() {
            Some(other) if other > DISTURBED_CPUS => reasons.push(format!(
                "other processes used {other:.2} CPU during it (more than {DISTURBED_CPUS})"
            )),
            _ => {}
        }
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// CPUs the rest of the machine used during the load, on average.
    pub fn other_cpus(&self) -> Option<f64> {
        let other = self.other_cpu_seconds?;
        (self.window_seconds > 0.0).then(|| other.max(0.0) / self.window_seconds)
    }

    /// The primary figure: µs of service CPU per completed request.
    pub fn cpu_us_per_request(&self) -> f64 {
        per_request_us(self.service_cpu_seconds, self.load.ok_responses)
    }

    pub fn agent_cpu_us_per_request(&self) -> Option<f64> {
        self.agent_cpu_seconds.map(|seconds| per_request_us(seconds, self.load.ok_responses))
    }

    pub fn involuntary_switches_per_request(&self) -> Option<f64> {
        let switches = self.service_involuntary_switches?;
        (self.load.ok_responses > 0).then(|| switches as f64 / self.load.ok_responses as f64)
    }

    pub fn p99_ms(&self) -> f64 {
        self.load.p99_seconds * 1e3
    }

    pub fn service_gc_per_second(&self) -> Option<f64> {
        self.service_gc_cycles.map(|cycles| self.per_second(cycles))
    }

    pub fn golens_gc_per_second(&self) -> Option<f64> {
        self.golens_gc_cycles.map(|cycles| self.per_second(cycles))
    }

    fn per_second(&self, count: u64) -> f64 {
        if self.load.seconds > 0.0 {
            count as f64 / self.load.seconds
        } else {
            0.0
        }
    }
}

fn per_request_us(seconds: f64, requests: u64) -> f64 {
    if requests == 0 {
        return f64::NAN;
    }
    seconds * 1e6 / requests as f64
}

/// How every round of a run is done.
pub struct RoundSetup<'a> {
    pub machine: &'a Machine,
    pub seconds: u32,
    pub rate: u32,
    /// `taskset -c` CPU list for hey, if pinned.
    pub hey_cpu: Option<&'a str>,
    /// Where the agents' output goes.
    pub agent_log: &'a Path,
}

/// Runs one planned round against `service`.
pub fn measure(
    service: &mut Service,
    planned: PlannedRound,
    setup: &RoundSetup,
) -> Result<RoundResult> {
    service.check_running()?;
    let config = planned.config;
    let pid = service.pid;
    wait_for_quiet_machine(pid, setup.machine);
    let agent = match config.probes() {
        Some(probes) => Some(Agent::start(pid, probes, config.counts_gc(), setup.agent_log)?),
        None => None,
    };
    thread::sleep(SETTLE);

    let service_gc_before = service.gc_cycles()?;
    let golens_gc_before = match &agent {
        Some(agent) if config.counts_gc() => Some(
            agent.gc_cycles(pid).context("golens' GC counter of the service before the load")?,
        ),
        _ => None,
    };
    let programs_before = agent.as_ref().map(|a| bpf_stats::sample_programs(a.pid)).transpose()?;
    let agent_ticks_before = agent.as_ref().and_then(|a| procfs::cpu_ticks(a.pid));
    // Everything but the service, golens, and this process (hey's time lands in its cutime).
    let others = [std::process::id(), pid, agent.as_ref().map_or(0, |a| a.pid)];
    let other_ticks_before = procfs::cpu_ticks_of_all_but(&others);
    let window = Instant::now();
    let switches_before = procfs::involuntary_switches(pid);
    let service_ticks_before =
        procfs::cpu_ticks(pid).with_context(|| format!("reading /proc/{pid}/stat"))?;

    let load = hey::run(&service.url("/work"), setup.seconds, setup.rate, setup.hey_cpu)?;

    let service_ticks_after =
        procfs::cpu_ticks(pid).with_context(|| format!("reading /proc/{pid}/stat"))?;
    let switches_after = procfs::involuntary_switches(pid);
    let window_seconds = window.elapsed().as_secs_f64();
    let other_ticks = procfs::cpu_ticks_of_all_but(&others).saturating_sub(other_ticks_before);
    let agent_ticks_after = agent.as_ref().and_then(|a| procfs::cpu_ticks(a.pid));
    let programs_after = agent.as_ref().map(|a| bpf_stats::sample_programs(a.pid)).transpose()?;
    let service_gc_after = service.gc_cycles()?;
    let golens_gc_after = match &agent {
        Some(agent) if config.counts_gc() => {
            // golens' counter is as of its last collection: wait for one after the load (the
            // idle service starts no cycle meanwhile).
            thread::sleep(processes::AGENT_INTERVAL * 3 / 2);
            agent.gc_cycles(pid)
        }
        _ => None,
    };
    let agent_note = agent.and_then(Agent::stop);

    let service_ticks = service_ticks_after.saturating_sub(service_ticks_before);
    let agent_ticks = agent_ticks_before
        .zip(agent_ticks_after)
        .map(|(before, after)| after.saturating_sub(before));
    let agent_cpu_seconds = agent_ticks.map(|ticks| setup.machine.seconds(ticks));
    let programs = match (&programs_before, &programs_after) {
        (Some(before), Some(after)) => bpf_stats::program_costs(before, after),
        _ => Vec::new(),
    };
    Ok(RoundResult {
        block: planned.block,
        config,
        target_rate: f64::from(setup.rate),
        load,
        service_cpu_seconds: setup.machine.seconds(service_ticks),
        agent_cpu_seconds,
        service_involuntary_switches: switches_before
            .zip(switches_after)
            .map(|(before, after)| after.saturating_sub(before)),
        window_seconds,
        other_cpu_seconds: Some(setup.machine.seconds(other_ticks)),
        service_gc_cycles: Some(service_gc_after.saturating_sub(service_gc_before)),
        golens_gc_cycles: golens_gc_before
            .zip(golens_gc_after)
            .map(|(before, after)| after.saturating_sub(before)),
        programs,
        agent_note,
    })
}

/// Waits (at most QUIET_TIMEOUT) until the rest of the machine, i.e. every process but the
/// idle service `pid` and this one, uses at most QUIET_CPUS; says so on stderr when it had to
/// wait.
fn wait_for_quiet_machine(pid: u32, machine: &Machine) {
    let started = Instant::now();
    let mut announced = false;
    loop {
        let other = other_cpus_over(pid, machine, QUIET_WINDOW);
        if other <= QUIET_CPUS {
            if announced {
                util::step(&format!(
                    "  the machine is quiet again after {:.0} s",
                    started.elapsed().as_secs_f64()
                ));
            }
            return;
        }
        if started.elapsed() >= QUIET_TIMEOUT {
            util::step(&format!(
                "  other processes still use {other:.2} CPU after {} s: measuring anyway",
                QUIET_TIMEOUT.as_secs()
            ));
            return;
        }
        if !announced {
            util::step(&format!(
                "  other processes use {other:.2} CPU: waiting (up to {} s) for at most \
                 {QUIET_CPUS}",
                QUIET_TIMEOUT.as_secs()
            ));
            announced = true;
        }
    }
}

/// CPUs used over `window` by every process but `pid` and this one.
fn other_cpus_over(pid: u32, machine: &Machine, window: Duration) -> f64 {
    let others = [std::process::id(), pid];
    let before = procfs::cpu_ticks_of_all_but(&others);
    thread::sleep(window);
    let ticks = procfs::cpu_ticks_of_all_but(&others).saturating_sub(before);
    machine.seconds(ticks) / window.as_secs_f64()
}

/// A load that is not measured: the service's heap, connections and caches settle.
pub fn warm_up(service: &mut Service, setup: &RoundSetup, seconds: u32) -> Result<LoadReport> {
    service.check_running()?;
    hey::run(&service.url("/work"), seconds, setup.rate, setup.hey_cpu)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A round with `requests` completed in 10 s and `cpu_seconds` of service CPU.
    pub fn round(block: usize, config: Config, requests: u64, cpu_seconds: f64) -> RoundResult {
        RoundResult {
            block,
            config,
            target_rate: 2000.0,
            load: LoadReport {
                seconds: 10.0,
                ok_responses: requests,
                p50_seconds: 0.0008,
                p90_seconds: 0.0012,
                p99_seconds: 0.002,
                ..LoadReport::default()
            },
            service_cpu_seconds: cpu_seconds,
            agent_cpu_seconds: None,
            service_involuntary_switches: Some(2000),
            window_seconds: 10.0,
            other_cpu_seconds: Some(0.1),
            service_gc_cycles: Some(30),
            golens_gc_cycles: None,
            programs: Vec::new(),
            agent_note: None,
        }
    }

    #[test]
    fn per_request_figures() {
        let result = round(0, Config::Baseline, 20_000, 3.0);
        assert!(result.valid());
        assert!((result.cpu_us_per_request() - 150.0).abs() < 1e-9);
        assert_eq!(result.service_gc_per_second(), Some(3.0));
        assert_eq!(result.golens_gc_per_second(), None);
        assert_eq!(result.involuntary_switches_per_request(), Some(0.1));
        assert!((result.p99_ms() - 2.0).abs() < 1e-12);
        // 5 % short of the target rate: not counted.
        assert!(!round(0, Config::Baseline, 19_000, 3.0).valid());
        assert!(!round(0, Config::Baseline, 0, 3.0).valid());
        let mut disturbed = round(0, Config::Baseline, 20_000, 3.0);
        assert_eq!(disturbed.other_cpus(), Some(0.01));
        disturbed.other_cpu_seconds = Some(2.5);
        assert_eq!(
            disturbed.exclusion().as_deref(),
            Some("other processes used 0.25 CPU during it (more than 0.2)")
        );
        assert_eq!(
            round(0, Config::Baseline, 19_000, 3.0).exclusion().as_deref(),
            Some("completed 1900 requests/s of 2000 (-5.0 %)")
        );
        disturbed.load.ok_responses = 19_000;
        assert_eq!(
            disturbed.exclusion().as_deref(),
            Some(
                "completed 1900 requests/s of 2000 (-5.0 %); other processes used 0.25 CPU \
                 during it (more than 0.2)"
            )
        );
    }
}
