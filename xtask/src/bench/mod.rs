//! `cargo xtask bench`: what golens costs a Go HTTP service, as the service's own CPU time per
//! request at a fixed request rate.
//!
//! Two identical services (twins, tests/workloads/demo) share one CPU and are driven by two
//! hey processes, pinned to the other CPU, at the same fixed rate (open loop): the work per
//! second is the same with and without the agent, so what the agent adds shows up as CPU time
//! the service spends per request (its threads' run time, which includes the uprobe traps and
//! the tracepoint programs run in its context), and not as a throughput that swings with the
//! scheduler. golens watches one twin; the other, under the same load on the same CPU in the
//! same seconds, is the reference. On this shared VM the service's CPU per request drifts by
//! tens of percent from round to round (it follows how hey's bursts meet the scheduler); the
//! twins share part of that drift, so their ratio is steadier: measured here, ±12 % per 10 s
//! round, a 95 % interval of about ±6 % over 5 blocks (against −25…+49 % for rounds compared
//! with no-agent rounds). That is not yet a percent; the report says how far it is. Each agent
//! configuration (`--probes sched`, `goruntime`, …) runs in ABBA blocks with the baseline (no
//! agent: the A/A figure); results are ratios with their spread and a 95 % confidence
//! interval, and nothing is asserted: this is a report.
//!
//! Two scenarios: "realistic" (a 64 MiB live heap: a few GC cycles per second) and
//! "pathological" (the small heap with GOGC=5: hundreds per second, so the Go runtime uprobes
//! fire as often as they ever will). `cargo xtask bench scale` (bench_scale.rs) measures the
//! agent's own cost instead.

mod bpf_stats;
mod hey;
mod hits;
mod plan;
mod processes;
pub(crate) mod procfs;
mod report;
mod round;
mod summary;

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{setup, util};
use plan::Config;
use processes::Service;
use procfs::Machine;
use report::{RunInfo, ScenarioResult};
use round::RoundSetup;

const USAGE: &str = "usage: cargo xtask bench [--rounds N] [--seconds S] [--rate R] \
                     [--scenario realistic|pathological|all] [--configs LIST]

  --rounds N     ABBA blocks per configuration (default 3)
  --seconds S    length of a round (default 10)
  --rate R       requests per second to each of the two twin services (default 1000)
  --scenario     which service setup (default all)
  --configs LIST comma-separated configurations to compare with no agent (default
                 sched,goruntime,syscalls,all; also each syscall family alone: vma,fd,net,
                 netpoll,timers; and unwatched: every family, watching no process, whose
                 program table against all's tells what watching the service adds)
  cargo xtask bench scale   the agent's own cost at 1 to 1000 processes (see --help there)
  cargo xtask bench hits    what golens costs one service, family by family: the hits it
                            causes times what a hit costs (see --help there)";
/// Unmeasured load after the service starts.
const WARM_UP_SECONDS: u32 = 5;
/// How long to wait for another `cargo xtask bench` on the machine to finish.
const OTHER_BENCH_TIMEOUT: Duration = Duration::from_secs(45 * 60);

/// A service setup to measure the agent on, and the goals for it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scenario {
    name: &'static str,
    description: &'static str,
    /// Extra arguments of the demo service.
    service_args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    /// Highest acceptable median ratio of CPU per request to the baseline.
    goal_cpu_ratio: f64,
    /// Highest acceptable median ratio of p99 latency to the baseline, if any.
    goal_p99_ratio: Option<f64>,
}

pub const REALISTIC: Scenario = Scenario {
    name: "realistic",
    description: "the demo service keeping a 64 MiB live heap (-live-heap-mib 64), default \
                  GOGC: a few GC cycles per second",
    service_args: &["-live-heap-mib", "64"],
    env: &[],
    goal_cpu_ratio: 1.01,
    goal_p99_ratio: Some(1.02),
};

pub const PATHOLOGICAL: Scenario = Scenario {
    name: "pathological",
    description: "the demo service with its small live heap and GOGC=5: hundreds of GC \
                  cycles per second",
    service_args: &[],
    env: &[("GOGC", "5")],
    goal_cpu_ratio: 1.03,
    goal_p99_ratio: None,
};

#[derive(Debug, PartialEq)]
struct Options {
    /// ABBA blocks per configuration.
    rounds: u32,
    seconds: u32,
    /// Requests per second to each twin.
    rate: u32,
    scenarios: Vec<Scenario>,
    configs: Vec<Config>,
}

pub fn bench(args: &[String]) -> Result<()> {
    if args.first().is_some_and(|first| first == "scale") {
        return crate::bench_scale::bench_scale(&args[1..]);
    }
    if args.first().is_some_and(|first| first == "hits") {
        return hits::bench_hits(&args[1..]);
    }
    if args.iter().any(|arg| arg == "-h" || arg == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let options = parse_args(args)?;
    setup::setup()?;
    if !util::is_root() {
        bail!("golens loads eBPF programs: run `cargo xtask bench` as root");
    }
    wait_for_other_benchmarks()?;
    util::build_release()?;
    let binary = util::build_workload("demo")?;

    let machine = Machine::read();
    let pinning = Pinning::decide(&machine);
    let log_dir = util::workspace_root().join("target/bench");
    fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let agent_log = log_dir.join("golens.log");
    fs::write(&agent_log, "").with_context(|| format!("creating {}", agent_log.display()))?;
    let _stats = bpf_stats::BpfStatsGuard::enable()?;

    let rounds_per_scenario = plan::abba(&options.configs, options.rounds as usize).len();
    let estimate = options.scenarios.len() as u64
        * (u64::from(WARM_UP_SECONDS)
            + rounds_per_scenario as u64 * (u64::from(options.seconds) + 4));
    util::step(&format!(
        "{rounds_per_scenario} rounds of {} s per scenario, {} scenario(s): about {} min; \
         golens' output goes to {}",
        options.seconds,
        options.scenarios.len(),
        estimate.div_ceil(60),
        agent_log.display()
    ));
    let setup = RoundSetup {
        machine: &machine,
        seconds: options.seconds,
        rate: options.rate,
        hey_cpu: pinning.hey_cpu,
        agent_log: &agent_log,
    };
    let mut foreign_agents = Vec::new();
    let mut results = Vec::new();
    for &scenario in &options.scenarios {
        results.push(run_scenario(
            scenario,
            &binary,
            &options,
            &setup,
            &pinning,
            &mut foreign_agents,
        )?);
    }
    let run = RunInfo {
        machine: machine.clone(),
        blocks: options.rounds,
        seconds: options.seconds,
        rate: options.rate,
        pinning: pinning.describe(results.first().and_then(|r| r.service_cpus.as_deref())),
        foreign_agents,
    };
    print!("{}", report::format_report(&run, &results));
    Ok(())
}

fn run_scenario(
    scenario: Scenario,
    binary: &Path,
    options: &Options,
    setup: &RoundSetup,
    pinning: &Pinning,
    foreign_agents: &mut Vec<(u32, String)>,
) -> Result<ScenarioResult> {
    let name = scenario.name;
    util::step(&format!("{name}: starting two twins of {}", scenario.description));
    let start = || Service::start(binary, scenario.service_args, scenario.env, pinning.service_cpu);
    let mut twins = [start()?, start()?];
    let warm_up = WARM_UP_SECONDS.min(options.seconds);
    util::step(&format!(
        "{name}: warm-up, {warm_up} s at {} requests/s to each twin (not counted)",
        options.rate
    ));
    let loads = round::warm_up(&mut twins, setup, warm_up)?;
    util::step(&format!(
        "{name}:   {:.0} and {:.0} requests/s completed",
        loads[0].achieved_rate(),
        loads[1].achieved_rate()
    ));

    let plan = plan::abba(&options.configs, options.rounds as usize);
    let mut rounds = Vec::with_capacity(plan.len());
    for (index, &planned) in plan.iter().enumerate() {
        for pid in procfs::processes_named("golens") {
            if !foreign_agents.iter().any(|(seen, _)| *seen == pid) {
                let cmdline = procfs::cmdline(pid).unwrap_or_default();
                util::step(&format!(
                    "WARNING: another golens runs on this machine (pid {pid}: {cmdline}): its \
                     tracepoint programs run for the twins' threads too"
                ));
                foreign_agents.push((pid, cmdline));
            }
        }
        let config = planned.config;
        util::step(&format!(
            "{name}: round {}/{}, block {}: {}",
            index + 1,
            plan.len(),
            planned.block + 1,
            match config.probes() {
                None => "no agent (baseline)".into(),
                Some(p) if config.watches() =>
                    format!("golens --probes {p} watching twin {}", planned.watched + 1),
                Some(p) => format!("golens --probes {p} watching neither twin"),
            }
        ));
        let result = round::measure(&mut twins, planned, setup)?;
        util::step(&format!("{name}:   {}", describe_round(&result)));
        rounds.push(result);
    }
    Ok(ScenarioResult { scenario, service_cpus: twins[0].allowed_cpus.clone(), rounds })
}

/// One progress line about a measured round.
fn describe_round(round: &round::RoundResult) -> String {
    let missed = round.exclusion().map_or(String::new(), |why| format!(" (excluded: {why})"));
    let gc =
        round.service_gc_per_second().map_or("GC/s unknown".into(), |gc| format!("{gc:.1} GC/s"));
    let golens_gc =
        round.golens_gc_per_second().map_or(String::new(), |gc| format!(" (golens: {gc:.1})"));
    let agent = round
        .agent_cpu_us_per_request()
        .map_or(String::new(), |us| format!(", golens {us:.1} µs CPU/request"));
    let other = round.other_cpus().map_or(String::new(), |cpus| format!(", other {cpus:.2} CPU"));
    let switches = round
        .involuntary_switches_per_request()
        .map_or(String::new(), |n| format!(", {n:.2} involuntary switches/request"));
    let ratio = round.twin_cpu_ratio().map_or(String::new(), |ratio| {
        format!(" ({:+.2} % against the other twin)", (ratio - 1.0) * 100.0)
    });
    format!(
        "{:.0} requests/s{missed}, {:.2} µs CPU/request{ratio}, p50/p90/p99 {:.1}/{:.1}/{:.1} \
         ms, {gc}{golens_gc}{agent}{other}{switches}",
        round.achieved_rate(),
        round.cpu_us_per_request(),
        round.load().p50_seconds * 1e3,
        round.load().p90_seconds * 1e3,
        round.p99_ms(),
    )
}

/// Where the twins and hey run.
struct Pinning {
    service_cpu: Option<&'static str>,
    hey_cpu: Option<&'static str>,
    /// Why nothing is pinned, when nothing is.
    not_pinned: Option<String>,
}

impl Pinning {
    fn decide(machine: &Machine) -> Pinning {
        let unpinned =
            |why: String| Pinning { service_cpu: None, hey_cpu: None, not_pinned: Some(why) };
        if machine.cpus < 2 {
            return unpinned(format!("only {} CPU available", machine.cpus));
        }
        let taskset = Command::new("taskset")
            .args(["-c", "0,1", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !taskset.is_ok_and(|status| status.success()) {
            return unpinned("`taskset -c 0,1 true` failed (util-linux's taskset missing, or CPUs 0 and 1 not allowed)".into());
        }
        Pinning { service_cpu: Some("0"), hey_cpu: Some("1"), not_pinned: None }
    }

    fn describe(&self, service_allowed: Option<&str>) -> String {
        if let Some(why) = &self.not_pinned {
            return format!("nothing ({why}): twins, hey and golens share every CPU");
        }
        let service = self.service_cpu.unwrap_or("-");
        let hey = self.hey_cpu.unwrap_or("-");
        let allowed = service_allowed.map_or(String::new(), |cpus| {
            format!("; its Cpus_allowed_list is {cpus}, so Go sizes GOMAXPROCS to it")
        });
        format!(
            "twins on CPU {service} (`taskset -c {service}`{allowed}), hey on CPU {hey} \
             (`taskset -c {hey}`); golens not pinned"
        )
    }
}

/// Waits (bounded) until no other `xtask bench` runs: two benchmarks on this machine at once
/// would skew each other.
fn wait_for_other_benchmarks() -> Result<()> {
    let started = Instant::now();
    let mut announced = None;
    loop {
        let others = procfs::other_processes_running("xtask bench");
        if others.is_empty() {
            return Ok(());
        }
        let list: Vec<String> =
            others.iter().map(|(pid, cmdline)| format!("{pid} ({cmdline})")).collect();
        if started.elapsed() >= OTHER_BENCH_TIMEOUT {
            bail!(
                "waited {} min for other benchmarks to finish; still running: {}",
                OTHER_BENCH_TIMEOUT.as_secs() / 60,
                list.join(", ")
            );
        }
        let minute = started.elapsed().as_secs() / 60;
        if announced != Some(minute) {
            util::step(&format!(
                "waiting for another benchmark to finish (up to {} min): {}",
                OTHER_BENCH_TIMEOUT.as_secs() / 60,
                list.join(", ")
            ));
            announced = Some(minute);
        }
        thread::sleep(Duration::from_secs(5));
    }
}

/// The `--flag value` pairs of `args`, in order; a flag without a value is an error that shows
/// `usage`.
fn flag_pairs<'a>(args: &'a [String], usage: &str) -> Result<Vec<(&'a str, &'a str)>> {
    args.chunks(2)
        .map(|pair| match pair {
            [flag, value] => Ok((flag.as_str(), value.as_str())),
            [flag] => bail!("{flag} needs a value\n{usage}"),
            _ => unreachable!("chunks(2) gives one or two"),
        })
        .collect()
}

fn whole_number(flag: &str, value: &str) -> Result<u32> {
    value.parse().with_context(|| format!("{flag} takes a whole number, not `{value}`"))
}

/// The scenarios `--scenario` names: realistic, pathological or all.
fn scenarios(value: &str, usage: &str) -> Result<Vec<Scenario>> {
    Ok(match value {
        "realistic" => vec![REALISTIC],
        "pathological" => vec![PATHOLOGICAL],
        "all" => vec![REALISTIC, PATHOLOGICAL],
        other => bail!("unknown scenario `{other}`\n{usage}"),
    })
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut options = Options {
        rounds: 3,
        seconds: 10,
        rate: 1000,
        scenarios: vec![REALISTIC, PATHOLOGICAL],
        configs: Config::WITH_AGENT.to_vec(),
    };
    for (flag, value) in flag_pairs(args, USAGE)? {
        let number = || whole_number(flag, value);
        match flag {
            "--rounds" => options.rounds = number()?,
            "--seconds" => options.seconds = number()?,
            "--rate" => options.rate = number()?,
            "--scenario" => options.scenarios = scenarios(value, USAGE)?,
            "--configs" => {
                options.configs = value
                    .split(',')
                    .map(|name| {
                        Config::CHOOSABLE.into_iter().find(|c| c.name() == name).with_context(
                            || {
                                format!(
                                    "unknown configuration `{name}` (one of: {})\n{USAGE}",
                                    Config::CHOOSABLE.map(Config::name).join(", ")
                                )
                            },
                        )
                    })
                    .collect::<Result<_>>()?;
            }
            _ => bail!("unknown option `{flag}`\n{USAGE}"),
        }
    }
    if options.rounds == 0 || options.seconds == 0 || options.rate == 0 {
        bail!("--rounds, --seconds and --rate must be at least 1");
    }
    Ok(options)
}

/// What the report tests of `bench` and `bench scale` both need.
#[cfg(test)]
pub(crate) mod test_support {
    use super::procfs::Machine;

    /// This project's VM, as the reports describe it.
    pub fn machine() -> Machine {
        Machine {
            cpus: 2,
            cpu_model: "AMD EPYC".into(),
            kernel: "6.18.44".into(),
            memory_kib: Some(24 * 1024 * 1024),
            clock_ticks: 100,
            clock_ticks_assumed: false,
        }
    }

    /// The cells of the first Markdown table row of `report` that starts with `prefix`.
    pub fn cells(report: &str, prefix: &str) -> Vec<String> {
        let line = report.lines().find(|l| l.starts_with(prefix)).unwrap_or_default();
        line.trim_matches('|').split('|').map(|cell| cell.trim().to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_bench_arguments() {
        let all = parse_args(&[]).unwrap();
        assert_eq!((all.rounds, all.seconds, all.rate), (3, 10, 1000));
        assert_eq!(all.scenarios, vec![REALISTIC, PATHOLOGICAL]);
        assert_eq!(all.configs, Config::WITH_AGENT);
        assert_eq!(
            parse_args(&args(&["--configs", "all,sched,timers"])).unwrap().configs,
            [Config::ALL, Config::SCHED, Config::CHOOSABLE[9]]
        );
        assert!(parse_args(&args(&["--configs", "all,bogus"])).is_err());
        let one = parse_args(&args(&[
            "--scenario",
            "pathological",
            "--rounds",
            "2",
            "--seconds",
            "5",
            "--rate",
            "1500",
        ]))
        .unwrap();
        assert_eq!(
            one,
            Options {
                rounds: 2,
                seconds: 5,
                rate: 1500,
                scenarios: vec![PATHOLOGICAL],
                configs: Config::WITH_AGENT.to_vec()
            }
        );
        assert_eq!(
            parse_args(&args(&["--scenario", "realistic"])).unwrap().scenarios,
            vec![REALISTIC]
        );
        assert!(parse_args(&args(&["--scenario", "gc"])).is_err());
        assert!(parse_args(&args(&["--rounds", "0"])).is_err());
        assert!(parse_args(&args(&["--rate", "fast"])).is_err());
        assert!(parse_args(&args(&["--seconds"])).is_err());
        assert!(parse_args(&args(&["--bogus", "1"])).is_err());
    }

    #[test]
    fn pinning_is_described() {
        let pinned = Pinning { service_cpu: Some("0"), hey_cpu: Some("1"), not_pinned: None };
        assert_eq!(
            pinned.describe(Some("0")),
            "twins on CPU 0 (`taskset -c 0`; its Cpus_allowed_list is 0, so Go sizes \
             GOMAXPROCS to it), hey on CPU 1 (`taskset -c 1`); golens not pinned"
        );
        let mut machine = Machine::read();
        machine.cpus = 1;
        let single = Pinning::decide(&machine);
        assert_eq!(single.service_cpu, None);
        assert!(single.describe(None).starts_with("nothing (only 1 CPU available)"));
    }
}
