//! One round: optionally start an agent watching one twin, load both twins at the same fixed
//! rate, and take their CPU time, GC cycles and the agent's program counters around it.

use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    bpf_stats::{self, ProgramCost},
    hey::{self, LoadReport},
    plan::{Config, PlannedRound, TWINS},
    processes::{self, Agent, Service},
    procfs::{self, Machine},
};
use crate::util;

/// Between the agent being ready (or, for the baseline, the previous round) and the load: lets
/// the attach and the first collections pass. Baseline rounds wait the same.
const SETTLE: Duration = Duration::from_secs(1);
/// A round during which the rest of the machine (not the twins, not golens, not hey) used
/// more than this many CPUs is excluded. Load that both twins share moves both, and their
/// ratio little (the A/A row shows how little); a whole CPU of it is more than that.
pub const DISTURBED_CPUS: f64 = 1.0;
/// Before each round: wait until the rest of the machine uses at most this many CPUs…
pub const QUIET_CPUS: f64 = 0.1;
/// …over a window this long…
const QUIET_WINDOW: Duration = Duration::from_secs(1);
/// …for at most this long (then the round runs anyway, and may be excluded).
pub const QUIET_TIMEOUT: Duration = Duration::from_secs(30);

/// What one twin did during the load of a round.
#[derive(Clone, Debug, PartialEq)]
pub struct TwinResult {
    pub load: LoadReport,
    /// Run time of the twin's threads during the load, seconds (/proc/PID/task/*/schedstat);
    /// None when one of its threads exited meanwhile.
    pub cpu_seconds: Option<f64>,
    /// GC cycles the twin itself completed during the load (its /debug/gc).
    pub gc_cycles: Option<u64>,
    /// Involuntary context switches of the twin's threads during the load: preempted, by the
    /// other twin, another process or another of its own threads (all share its CPU).
    pub involuntary_switches: Option<u64>,
}

impl TwinResult {
    /// µs of CPU per completed request.
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        let seconds = self.cpu_seconds?;
        (self.load.ok_responses > 0).then(|| per_request_us(seconds, self.load.ok_responses))
    }
}

/// What the load and the CPU counters saw in one round.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundResult {
    pub block: usize,
    pub config: Config,
    /// The twin golens watched (for a baseline round, the one its figure puts on top).
    pub watched: usize,
    /// Requests per second asked of each twin.
    pub target_rate: f64,
    pub twins: [TwinResult; TWINS],
    /// utime + stime of golens during the load, seconds (None without an agent).
    pub agent_cpu_seconds: Option<f64>,
    /// GC cycles golens counted for the watched twin during the load (goruntime
    /// configurations only).
    pub golens_gc_cycles: Option<u64>,
    /// Wall time from the first to the last CPU reading around the load, seconds.
    pub window_seconds: f64,
    /// CPU time every other process (not the twins, golens, this bench or hey) used in that
    /// window, seconds.
    pub other_cpu_seconds: Option<f64>,
    /// Per golens program, during the load.
    pub programs: Vec<ProgramCost>,
    /// Something odd about the agent's stop, if anything.
    pub agent_note: Option<String>,
}

impl RoundResult {
    pub fn watched_twin(&self) -> &TwinResult {
        &self.twins[self.watched]
    }

    pub fn other_twin(&self) -> &TwinResult {
        &self.twins[(self.watched + 1) % TWINS]
    }

    /// The watched twin's load.
    pub fn load(&self) -> &LoadReport {
        &self.watched_twin().load
    }

    pub fn achieved_rate(&self) -> f64 {
        self.load().achieved_rate()
    }

    /// Whether the round counts (see `exclusion`).
    pub fn valid(&self) -> bool {
        self.exclusion().is_none()
    }

    /// Why the round is left out of the figures: a twin did not complete its target rate
    /// within hey::RATE_TOLERANCE, lost a thread (its CPU time is then unknown), or the rest
    /// of the machine used more than DISTURBED_CPUS.
    pub fn exclusion(&self) -> Option<String> {
        let mut reasons = Vec::new();
        for (index, twin) in self.twins.iter().enumerate() {
            let achieved = twin.load.achieved_rate();
            if twin.load.ok_responses == 0 || !hey::rate_achieved(achieved, self.target_rate) {
                reasons.push(format!(
                    "twin {} completed {achieved:.0} requests/s of {:.0} ({:+.1} %)",
                    index + 1,
                    self.target_rate,
                    (achieved / self.target_rate - 1.0) * 100.0
                ));
            }
            if twin.cpu_seconds.is_none() {
                reasons.push(format!(
                    "a thread of twin {} exited: its CPU time is unknown",
                    index + 1
                ));
            }
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

    /// µs of the watched twin's CPU per completed request.
    pub fn cpu_us_per_request(&self) -> f64 {
        self.watched_twin().cpu_us_per_request().unwrap_or(f64::NAN)
    }

    /// The round's figure: the watched twin's CPU per request over the other twin's.
    pub fn twin_cpu_ratio(&self) -> Option<f64> {
        let watched = self.watched_twin().cpu_us_per_request()?;
        let other = self.other_twin().cpu_us_per_request()?;
        (other > 0.0).then(|| watched / other)
    }

    /// The watched twin's p99 latency over the other twin's.
    pub fn twin_p99_ratio(&self) -> Option<f64> {
        let other = self.other_twin().load.p99_seconds;
        (other > 0.0).then(|| self.watched_twin().load.p99_seconds / other)
    }

    pub fn agent_cpu_us_per_request(&self) -> Option<f64> {
        self.agent_cpu_seconds.map(|seconds| per_request_us(seconds, self.load().ok_responses))
    }

    pub fn involuntary_switches_per_request(&self) -> Option<f64> {
        let twin = self.watched_twin();
        let switches = twin.involuntary_switches?;
        (twin.load.ok_responses > 0).then(|| switches as f64 / twin.load.ok_responses as f64)
    }

    pub fn p99_ms(&self) -> f64 {
        self.load().p99_seconds * 1e3
    }

    pub fn service_gc_per_second(&self) -> Option<f64> {
        self.watched_twin().gc_cycles.map(|cycles| self.per_second(cycles))
    }

    pub fn golens_gc_per_second(&self) -> Option<f64> {
        self.golens_gc_cycles.map(|cycles| self.per_second(cycles))
    }

    fn per_second(&self, count: u64) -> f64 {
        if self.load().seconds > 0.0 {
            count as f64 / self.load().seconds
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
    /// Requests per second for each twin.
    pub rate: u32,
    /// `taskset -c` CPU list for hey, if pinned.
    pub hey_cpu: Option<&'a str>,
    /// Where the agents' output goes.
    pub agent_log: &'a Path,
}

/// The counters of one twin read before or after the load.
struct TwinReading {
    cpu: Option<procfs::ThreadCpu>,
    switches: Option<u64>,
}

impl TwinReading {
    fn take(pid: u32) -> TwinReading {
        TwinReading { cpu: procfs::cpu_ns(pid), switches: procfs::involuntary_switches(pid) }
    }
}

/// Runs one planned round against the twins.
pub fn measure(
    twins: &mut [Service; TWINS],
    planned: PlannedRound,
    setup: &RoundSetup,
) -> Result<RoundResult> {
    for twin in twins.iter_mut() {
        twin.check_running()?;
    }
    let config = planned.config;
    let pids = twins.each_ref().map(|twin| twin.pid);
    let watched_pid = pids[planned.watched];
    wait_for_quiet_machine(&pids, setup.machine);
    let agent = match config.probes() {
        Some(probes) if config.watches() => {
            Some(Agent::start(watched_pid, probes, config.counts_gc(), setup.agent_log)?)
        }
        Some(probes) => Some(Agent::start_unwatched(probes, setup.agent_log)?),
        None => None,
    };
    thread::sleep(SETTLE);

    let gc_before = twins.each_ref().map(|twin| twin.gc_cycles());
    let golens_gc_before = match &agent {
        Some(agent) if config.counts_gc() => Some(
            agent
                .gc_cycles(watched_pid)
                .context("golens' GC counter of the watched twin before the load")?,
        ),
        _ => None,
    };
    let programs_before = agent.as_ref().map(|a| bpf_stats::sample_programs(a.pid)).transpose()?;
    let agent_ticks_before = agent.as_ref().and_then(|a| procfs::cpu_ticks(a.pid));
    // Everything but the twins, golens, and this process (hey's time lands in its cutime).
    let others = [std::process::id(), pids[0], pids[1], agent.as_ref().map_or(0, |a| a.pid)];
    let other_ticks_before = procfs::cpu_ticks_of_all_but(&others);
    let window = Instant::now();
    let before = pids.map(TwinReading::take);

    let urls = twins.each_ref().map(|twin| twin.url("/work"));
    let loads = hey::run_together(
        urls.each_ref().map(String::as_str),
        setup.seconds,
        setup.rate,
        setup.hey_cpu,
    )?;

    let after = pids.map(TwinReading::take);
    let window_seconds = window.elapsed().as_secs_f64();
    let other_ticks = procfs::cpu_ticks_of_all_but(&others).saturating_sub(other_ticks_before);
    let agent_ticks_after = agent.as_ref().and_then(|a| procfs::cpu_ticks(a.pid));
    let programs_after = agent.as_ref().map(|a| bpf_stats::sample_programs(a.pid)).transpose()?;
    let gc_after = twins.each_ref().map(|twin| twin.gc_cycles());
    let golens_gc_after = match &agent {
        Some(agent) if config.counts_gc() => {
            // golens' counter is as of its last collection: wait for one after the load (the
            // idle twin starts no cycle meanwhile).
            thread::sleep(processes::AGENT_INTERVAL * 3 / 2);
            agent.gc_cycles(watched_pid)
        }
        _ => None,
    };
    let agent_note = agent.and_then(Agent::stop);

    let mut results = Vec::with_capacity(TWINS);
    for (index, load) in loads.into_iter().enumerate() {
        let (before, after) = (&before[index], &after[index]);
        let gc_cycles = match (&gc_before[index], &gc_after[index]) {
            (Ok(before), Ok(after)) => Some(after.saturating_sub(*before)),
            (Err(error), _) | (_, Err(error)) => {
                return Err(anyhow::anyhow!("reading twin {}'s GC cycles: {error:#}", index + 1))
            }
        };
        results.push(TwinResult {
            load,
            cpu_seconds: before
                .cpu
                .as_ref()
                .zip(after.cpu.as_ref())
                .and_then(|(b, a)| b.seconds_until(a)),
            gc_cycles,
            involuntary_switches: before
                .switches
                .zip(after.switches)
                .map(|(before, after)| after.saturating_sub(before)),
        });
    }
    let twins: [TwinResult; TWINS] =
        results.try_into().map_err(|_| anyhow::anyhow!("not one result per twin"))?;
    let agent_ticks = agent_ticks_before
        .zip(agent_ticks_after)
        .map(|(before, after)| after.saturating_sub(before));
    let programs = match (&programs_before, &programs_after) {
        (Some(before), Some(after)) => bpf_stats::program_costs(before, after),
        _ => Vec::new(),
    };
    Ok(RoundResult {
        block: planned.block,
        config,
        watched: planned.watched,
        target_rate: f64::from(setup.rate),
        twins,
        agent_cpu_seconds: agent_ticks.map(|ticks| setup.machine.seconds(ticks)),
        golens_gc_cycles: golens_gc_before
            .zip(golens_gc_after)
            .map(|(before, after)| after.saturating_sub(before)),
        window_seconds,
        other_cpu_seconds: Some(setup.machine.seconds(other_ticks)),
        programs,
        agent_note,
    })
}

/// Waits (at most QUIET_TIMEOUT) until the rest of the machine, i.e. every process but the
/// idle twins `pids` and this one, uses at most QUIET_CPUS; says so on stderr when it had to
/// wait.
fn wait_for_quiet_machine(pids: &[u32], machine: &Machine) {
    let started = Instant::now();
    let mut announced = false;
    loop {
        let other = other_cpus_over(pids, machine, QUIET_WINDOW);
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

/// CPUs used over `window` by every process but `pids` and this one.
fn other_cpus_over(pids: &[u32], machine: &Machine, window: Duration) -> f64 {
    let others: Vec<u32> = pids.iter().copied().chain([std::process::id()]).collect();
    let before = procfs::cpu_ticks_of_all_but(&others);
    thread::sleep(window);
    let ticks = procfs::cpu_ticks_of_all_but(&others).saturating_sub(before);
    machine.seconds(ticks) / window.as_secs_f64()
}

/// A load that is not measured: the twins' heaps, connections and caches settle.
pub fn warm_up(
    twins: &mut [Service; TWINS],
    setup: &RoundSetup,
    seconds: u32,
) -> Result<[LoadReport; TWINS]> {
    for twin in twins.iter_mut() {
        twin.check_running()?;
    }
    let urls = twins.each_ref().map(|twin| twin.url("/work"));
    hey::run_together(urls.each_ref().map(String::as_str), seconds, setup.rate, setup.hey_cpu)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A round of 10 s where each twin completed `requests`; the watched twin used
    /// `watched_cpu` seconds of CPU and the other `other_cpu`.
    pub fn round(
        block: usize,
        config: Config,
        watched: usize,
        requests: u64,
        watched_cpu: f64,
        other_cpu: f64,
    ) -> RoundResult {
        let twin = |cpu: f64| TwinResult {
            load: LoadReport {
                seconds: 10.0,
                ok_responses: requests,
                p50_seconds: 0.0008,
                p90_seconds: 0.0012,
                p99_seconds: 0.002,
                ..LoadReport::default()
            },
            cpu_seconds: Some(cpu),
            gc_cycles: Some(30),
            involuntary_switches: Some(2000),
        };
        let mut twins = [twin(other_cpu), twin(other_cpu)];
        twins[watched] = twin(watched_cpu);
        RoundResult {
            block,
            config,
            watched,
            target_rate: 2000.0,
            twins,
            agent_cpu_seconds: None,
            window_seconds: 10.0,
            other_cpu_seconds: Some(0.1),
            golens_gc_cycles: None,
            programs: Vec::new(),
            agent_note: None,
        }
    }

    #[test]
    fn per_request_figures() {
        let result = round(0, Config::BASELINE, 1, 20_000, 3.0, 2.5);
        assert!(result.valid());
        assert!((result.cpu_us_per_request() - 150.0).abs() < 1e-9);
        assert!((result.twin_cpu_ratio().unwrap() - 1.2).abs() < 1e-9);
        assert!((result.twin_p99_ratio().unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(result.service_gc_per_second(), Some(3.0));
        assert_eq!(result.golens_gc_per_second(), None);
        assert_eq!(result.involuntary_switches_per_request(), Some(0.1));
        assert!((result.p99_ms() - 2.0).abs() < 1e-12);
        // 5 % short of the target rate: not counted.
        assert!(!round(0, Config::BASELINE, 0, 19_000, 3.0, 3.0).valid());
        assert!(!round(0, Config::BASELINE, 0, 0, 3.0, 3.0).valid());
        let mut disturbed = round(0, Config::BASELINE, 0, 20_000, 3.0, 3.0);
        assert_eq!(disturbed.other_cpus(), Some(0.01));
        disturbed.other_cpu_seconds = Some(5.0);
        assert!(disturbed.valid(), "half a CPU of other load: both twins share it");
        disturbed.other_cpu_seconds = Some(12.5);
        assert_eq!(
            disturbed.exclusion().as_deref(),
            Some("other processes used 1.25 CPU during it (more than 1)")
        );
        assert_eq!(
            round(0, Config::BASELINE, 0, 19_000, 3.0, 3.0).exclusion().as_deref(),
            Some(
                "twin 1 completed 1900 requests/s of 2000 (-5.0 %); twin 2 completed 1900 \
                 requests/s of 2000 (-5.0 %)"
            )
        );
        let mut lost = round(0, Config::SCHED, 0, 20_000, 3.0, 3.0);
        lost.twins[1].cpu_seconds = None;
        assert_eq!(
            lost.exclusion().as_deref(),
            Some("a thread of twin 2 exited: its CPU time is unknown")
        );
        assert_eq!(lost.twin_cpu_ratio(), None);
    }
}
