//! `cargo xtask bench hits`: what golens costs one service, family by family, as the hits the
//! service itself causes times what one hit costs the thread that takes it.
//!
//! The twin bench compares a watched twin with an unwatched one; both pay what golens costs
//! every process on the host (the early returns of its tracepoint programs, and the toll every
//! syscall pays while a syscall tracepoint is on), so that part cancels out of its ratio. The
//! bench's program table (bpf_stats) counts every process's hits, and times only a program's
//! body. This prices the service's own hits instead:
//!
//! 1. `agent/examples/tracepoint_hit_cost` measures, as a process's CPU time, what a
//!    scheduler hit, an `epoll_pwait` call, a `nanosleep` call and any other syscall cost with
//!    golens' programs attached, for a process golens watches and for one it does not;
//!    `agent/examples/uprobe_hit_cost` does the same for a runtime uprobe hit.
//! 2. The twins run under their fixed load (no golens) while bpftrace counts, per process and
//!    thread, the events golens' programs fire on: switches in and out, wakeups, epoll and
//!    sleep calls, the pressure families' syscalls and every syscall; the service's GC cycles
//!    come from the service itself.
//! 3. Hits per request times price, per family, for the service watched and not watched.
//!
//! Each twin in each window is one sample: the report gives the median and the range.

use std::{
    collections::HashMap,
    fs,
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{
    hey::{self, KilledOnDrop},
    processes::{self, Service},
    procfs,
    summary::{self, Spread},
    Machine, Pinning, Scenario, WARM_UP_SECONDS,
};
use crate::util;

const USAGE: &str = "\
cargo xtask bench hits [--scenario realistic|pathological|all] [--windows N] [--seconds S]
                       [--rate R] [--cost-rounds N]

What golens costs one watched Go service, family by family: each hit the service itself
causes (counted by bpftrace while the twins of `cargo xtask bench` run under their fixed load,
golens not running), priced at what one hit costs the thread that takes it (measured by
agent/examples/tracepoint_hit_cost and uprobe_hit_cost, golens' own programs, no bpf_stats).
Prints, per family, the service's hits per request, the price per hit, and the cost per
request as µs and as a share of the service's CPU per request, watched and not watched (what
every process on the host pays while golens runs).

  --scenario S      realistic (default), pathological, or all
  --windows N       counting windows per scenario (default 3); each twin of each window is a
                    sample
  --seconds S       seconds per window (default 10)
  --rate R          requests per second to each twin (default 1000)
  --cost-rounds N   alternating rounds of the price measurements (default 5)

Runs as root (bpftrace and golens' programs); about 2 minutes per scenario.";

/// Hits of golens' runtime uprobes per GC cycle on the newest Go (the demo's toolchain); see
/// the README's "Go runtime probes".
const UPROBE_HITS_PER_GC_CYCLE: f64 = 7.0;
/// Iterations of hitloop for uprobe_hit_cost (the README's figure uses the same).
const UPROBE_ITERATIONS: &str = "200000";
const BPFTRACE_READY_TIMEOUT: Duration = Duration::from_secs(60);
const BPFTRACE_EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The syscalls whose exits the `vma`, `fd` and `net` families probe (golens_ebpf::syscalls).
const PRESSURE_EXITS: &[&str] = &[
    "mmap",
    "munmap",
    "mremap",
    "brk",
    "mprotect",
    "open",
    "openat",
    "socket",
    "accept",
    "accept4",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "pipe2",
    "epoll_create1",
    "eventfd2",
    "timerfd_create",
    "inotify_init1",
    "pidfd_open",
    "connect",
];

#[derive(Debug, PartialEq)]
struct Options {
    scenarios: Vec<Scenario>,
    windows: u32,
    seconds: u32,
    rate: u32,
    cost_rounds: u32,
}

pub fn bench_hits(args: &[String]) -> Result<()> {
    if args.iter().any(|arg| arg == "-h" || arg == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let options = parse_args(args)?;
    crate::setup::setup()?;
    if !util::is_root() {
        bail!("bpftrace and golens' programs need root: run `cargo xtask bench hits` as root");
    }
    super::wait_for_other_benchmarks()?;
    util::step("building golens' cost examples (release)");
    util::run_checked(util::cargo().args([
        "build",
        "--release",
        "-p",
        "golens",
        "--example",
        "tracepoint_hit_cost",
        "--example",
        "uprobe_hit_cost",
    ]))?;
    let demo = util::build_workload("demo")?;
    let hitloop = util::build_workload("hitloop")?;
    let examples = util::workspace_root().join("target/release/examples");

    util::step(&format!(
        "pricing one hit: tracepoint_hit_cost, {} alternating rounds (about {} s)",
        options.cost_rounds,
        options.cost_rounds * 8
    ));
    let output = command_output(
        Command::new(examples.join("tracepoint_hit_cost")).arg(options.cost_rounds.to_string()),
    )?;
    let mut prices = Prices::parse_tracepoints(&output)?;
    util::step("pricing one runtime uprobe hit: uprobe_hit_cost on hitloop (five runs per case)");
    let output =
        command_output(Command::new(examples.join("uprobe_hit_cost")).arg(&hitloop).args([
            "main.main",
            "main.work",
            UPROBE_ITERATIONS,
        ]))?;
    prices.uprobe_tracked_ns = parse_uprobe_cost(&output)?;

    let machine = Machine::read();
    let pinning = Pinning::decide(&machine);
    let log_dir = util::workspace_root().join("target/bench");
    fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let script = log_dir.join("hits.bt");
    fs::write(&script, bpftrace_script())
        .with_context(|| format!("writing {}", script.display()))?;

    let mut results = Vec::new();
    for &scenario in &options.scenarios {
        results.push((scenario, count_scenario(scenario, &demo, &script, &options, &pinning)?));
    }
    print!("{}", format_report(&machine, &options, &prices, &results));
    Ok(())
}

/// Counts the twins' hits in `options.windows` windows; one sample per twin and window.
fn count_scenario(
    scenario: Scenario,
    demo: &Path,
    script: &Path,
    options: &Options,
    pinning: &Pinning,
) -> Result<Vec<Sample>> {
    let name = scenario.name;
    util::step(&format!("{name}: starting two twins of {}", scenario.description));
    let start = || Service::start(demo, scenario.service_args, scenario.env, pinning.service_cpu);
    let mut twins = [start()?, start()?];
    let urls = twins.each_ref().map(|twin| twin.url("/work"));
    let urls = urls.each_ref().map(String::as_str);
    util::step(&format!("{name}: warm-up, {WARM_UP_SECONDS} s (not counted)"));
    hey::run_together(urls, WARM_UP_SECONDS, options.rate, pinning.hey_cpu)?;

    let mut samples = Vec::new();
    for window in 1..=options.windows {
        for twin in twins.iter_mut() {
            twin.check_running()?;
        }
        util::step(&format!(
            "{name}: window {window}/{}, {} s at {} requests/s to each twin, bpftrace counting",
            options.windows, options.seconds, options.rate
        ));
        let counter = Bpftrace::start(script)?;
        let read = |twin: &Service| {
            (procfs::cpu_ns(twin.pid), twin.gc_cycles(), procfs::involuntary_switches(twin.pid))
        };
        let before = twins.each_ref().map(read);
        let loads = hey::run_together(urls, options.seconds, options.rate, pinning.hey_cpu)?;
        let after = twins.each_ref().map(read);
        let counts = counter.finish()?;
        for (index, twin) in twins.iter().enumerate() {
            let (Some(cpu_before), Ok(gc_before), Some(preempted_before)) = &before[index] else {
                continue;
            };
            let (Some(cpu_after), Ok(gc_after), Some(preempted_after)) = &after[index] else {
                continue;
            };
            let Some(cpu_seconds) = cpu_before.seconds_until(cpu_after) else {
                util::step(&format!(
                    "{name}:   twin {}: a thread exited; sample skipped",
                    index + 1
                ));
                continue;
            };
            let requests = loads[index].ok_responses;
            if requests == 0 {
                continue;
            }
            let sample = Sample::new(
                &counts,
                twin.pid,
                &cpu_after.tids,
                requests,
                cpu_seconds,
                gc_after.saturating_sub(*gc_before),
                preempted_after.saturating_sub(*preempted_before),
            );
            util::step(&format!(
                "{name}:   twin {}: {:.0} requests/s, {:.1} µs CPU per request, {:.1} events per \
                 request",
                index + 1,
                loads[index].achieved_rate(),
                sample.cpu_us_per_request,
                sample.events_per_request()
            ));
            samples.push(sample);
        }
    }
    if samples.is_empty() {
        bail!("{name}: no window gave a sample (see the lines above)");
    }
    Ok(samples)
}

/// The bpftrace program: per process (`pid` is the tgid) or per thread (`tid`, where the
/// tracepoint names a task other than the current one), the events golens' programs run on.
fn bpftrace_script() -> String {
    let pressure: Vec<String> =
        PRESSURE_EXITS.iter().map(|name| format!("tracepoint:syscalls:sys_exit_{name}")).collect();
    format!(
        "\
tracepoint:sched:sched_switch {{ @switch_out[pid] = count(); @switch_in[args->next_pid] = count(); }}
tracepoint:sched:sched_wakeup, tracepoint:sched:sched_wakeup_new {{ @wakeup[args->pid] = count(); }}
tracepoint:syscalls:sys_enter_epoll_pwait, tracepoint:syscalls:sys_enter_epoll_pwait2 {{ @epoll[pid] = count(); }}
tracepoint:syscalls:sys_enter_nanosleep, tracepoint:syscalls:sys_enter_clock_nanosleep {{ @sleep[pid] = count(); }}
{} {{ @pressure[pid] = count(); }}
tracepoint:raw_syscalls:sys_enter {{ @syscalls[pid] = count(); }}
",
        pressure.join(", ")
    )
}

/// A running bpftrace; `finish` stops it (SIGINT) and parses the maps it prints. Dropped
/// unfinished (an error on the way), it is SIGKILLed: its probes go with it.
struct Bpftrace {
    child: KilledOnDrop,
    stdout: thread::JoinHandle<String>,
}

impl Bpftrace {
    fn start(script: &Path) -> Result<Bpftrace> {
        let mut child = Command::new("bpftrace")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "starting bpftrace (Debian package bpftrace; `cargo xtask setup` installs it)",
            )?;
        let mut stdout = BufReader::new(child.stdout.take().context("bpftrace's stdout")?);
        // "Attaching N probes..." comes once every probe is attached.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = thread::spawn(move || {
            let mut line = String::new();
            let attached = loop {
                line.clear();
                match stdout.read_line(&mut line) {
                    Ok(0) | Err(_) => break false,
                    Ok(_) if line.starts_with("Attaching") => break true,
                    Ok(_) => {}
                }
            };
            let _ = ready_tx.send(attached);
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
            rest
        });
        let counter = Bpftrace { child: KilledOnDrop(child), stdout: reader };
        match ready_rx.recv_timeout(BPFTRACE_READY_TIMEOUT) {
            Ok(true) => {}
            Ok(false) => bail!(
                "bpftrace exited before attaching its probes: run `bpftrace {}` to see why",
                script.display()
            ),
            Err(_) => bail!(
                "bpftrace did not attach its probes within {} s",
                BPFTRACE_READY_TIMEOUT.as_secs()
            ),
        }
        // Attaching is printed before the last probes are live; a moment for them.
        thread::sleep(Duration::from_millis(200));
        Ok(counter)
    }

    fn finish(mut self) -> Result<Counts> {
        const SIGINT: i32 = 2;
        processes::signal(&self.child.0, SIGINT);
        let deadline = Instant::now() + BPFTRACE_EXIT_TIMEOUT;
        if util::wait_until(&mut self.child.0, deadline).is_none() {
            bail!("bpftrace did not exit within {} s of SIGINT", BPFTRACE_EXIT_TIMEOUT.as_secs());
        }
        let text = self.stdout.join().map_err(|_| anyhow::anyhow!("bpftrace reader panicked"))?;
        Ok(Counts::parse(&text))
    }
}

/// bpftrace's printed maps: map name → key → count.
#[derive(Debug, Default, PartialEq)]
struct Counts(HashMap<String, HashMap<u32, u64>>);

impl Counts {
    /// Lines like `@switch_in[1234]: 56`; anything else is ignored.
    fn parse(text: &str) -> Counts {
        let mut counts = Counts::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix('@') else { continue };
            let Some((name, rest)) = rest.split_once('[') else { continue };
            let Some((key, value)) = rest.split_once("]: ") else { continue };
            let (Ok(key), Ok(value)) = (key.parse::<u32>(), value.trim().parse::<u64>()) else {
                continue;
            };
            *counts.0.entry(name.to_string()).or_default().entry(key).or_default() += value;
        }
        counts
    }

    fn of(&self, map: &str, keys: &[u32]) -> u64 {
        self.0.get(map).map_or(0, |values| keys.iter().filter_map(|k| values.get(k)).sum())
    }
}

/// One twin in one window: its events per request.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    cpu_us_per_request: f64,
    switch_in: f64,
    switch_out: f64,
    /// Switches out of a preempted thread (still runnable): golens does work for these.
    preempted: f64,
    wakeup: f64,
    epoll: f64,
    sleep: f64,
    pressure: f64,
    /// Every syscall, epoll and sleep calls included.
    syscalls: f64,
    gc_cycles: f64,
}

impl Sample {
    fn new(
        counts: &Counts,
        pid: u32,
        tids: &[u32],
        requests: u64,
        cpu_seconds: f64,
        gc_cycles: u64,
        preempted: u64,
    ) -> Sample {
        let per_request = |count: u64| count as f64 / requests as f64;
        let process = |map: &str| per_request(counts.of(map, &[pid]));
        let threads = |map: &str| per_request(counts.of(map, tids));
        Sample {
            cpu_us_per_request: cpu_seconds * 1e6 / requests as f64,
            switch_in: threads("switch_in"),
            switch_out: process("switch_out"),
            preempted: per_request(preempted),
            wakeup: threads("wakeup"),
            epoll: process("epoll"),
            sleep: process("sleep"),
            pressure: process("pressure"),
            syscalls: process("syscalls"),
            gc_cycles: per_request(gc_cycles),
        }
    }

    fn events_per_request(&self) -> f64 {
        self.switch_in + self.switch_out + self.wakeup + self.syscalls
    }

    /// Every syscall but the epoll and sleep calls: those that pay only the toll.
    fn other_syscalls(&self) -> f64 {
        (self.syscalls - self.epoll - self.sleep).max(0.0)
    }

    /// Events per request, family by family (FAMILIES' order; GC cycles for `goruntime`).
    fn events(&self) -> [f64; FAMILIES.len()] {
        [
            self.switch_in + self.switch_out + self.wakeup,
            self.gc_cycles,
            self.epoll,
            self.sleep,
            self.pressure,
            self.other_syscalls(),
        ]
    }

    /// Cost per request, µs, family by family (FAMILIES' order), at `prices` for a process
    /// golens watches (`watched`) or not.
    fn costs(&self, prices: &Prices, watched: bool) -> [f64; FAMILIES.len()] {
        let pick = |price: &Price| if watched { price.tracked } else { price.untracked };
        let toll = prices.toll.untracked;
        // Switches in (and wakeups) of a watched thread do the work; a switch out does only
        // when the thread was preempted (then priced as a switch in), else it is an early
        // return.
        let preempted = self.preempted.min(self.switch_out);
        let sched = (self.switch_in + preempted) * prices.sched_hit(watched)
            + (self.switch_out - preempted) * prices.sched_hit(false)
            + self.wakeup * prices.wakeup_hit(watched);
        [
            sched,
            if watched {
                self.gc_cycles * UPROBE_HITS_PER_GC_CYCLE * prices.uprobe_tracked_ns
            } else {
                0.0
            },
            self.epoll * pick(&prices.epoll),
            self.sleep * pick(&prices.nanosleep),
            self.pressure * prices.exit_hit(watched),
            self.other_syscalls() * toll,
        ]
        .map(|ns| ns / 1000.0)
    }
}

/// The rows of the report, in the order `Sample::costs` returns them.
const FAMILIES: [&str; 6] = [
    "`sched` (switches in/out, wakeups)",
    "`goruntime` (uprobes, 7 per GC cycle)",
    "`netpoll` (`epoll_pwait` enter + exit)",
    "`timers` (`nanosleep`, `clock_nanosleep` enter + exit)",
    "`vma`, `fd`, `net` (one exit each)",
    "syscall toll (every other syscall)",
];

/// What one event costs the thread, ns, watched (`tracked`) or not: the median over rounds
/// and the rounds' range.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Price {
    untracked: f64,
    tracked: f64,
    untracked_range: (f64, f64),
    tracked_range: (f64, f64),
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Prices {
    /// Any syscall while golens' syscall tracepoints are on (getppid: no program of its own).
    toll: Price,
    /// One `epoll_pwait` call: its enter and exit hits, its toll included.
    epoll: Price,
    /// One `nanosleep` call, likewise.
    nanosleep: Price,
    /// A round trip between two threads on one CPU: 2 wakeups, 2 switches, 4 pipe syscalls.
    round_trip: Price,
    /// Whether golens' sched_wakeup programs ran (run-queue latency from its wakeup
    /// timestamps); with the kernel's sched_info a wakeup runs no golens program.
    wakeup_programs: bool,
    uprobe_tracked_ns: f64,
}

impl Prices {
    /// The `result KEY CASE MEDIAN LOW HIGH` lines of tracepoint_hit_cost.
    fn parse_tracepoints(output: &str) -> Result<Prices> {
        let mut prices = Prices::default();
        let mut seen = 0;
        let mut source = None;
        for line in output.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            if let ["source", label] = fields.as_slice() {
                source = Some(*label);
                continue;
            }
            let ["result", key, case, median, low, high] = fields.as_slice() else { continue };
            let number = |text: &str| -> Result<f64> {
                text.parse().with_context(|| format!("tracepoint_hit_cost: `{line}`"))
            };
            let (median, range) = (number(median)?, (number(low)?, number(high)?));
            let price = match *key {
                "toll" => &mut prices.toll,
                "epoll" => &mut prices.epoll,
                "nanosleep" => &mut prices.nanosleep,
                "roundtrip" => &mut prices.round_trip,
                _ => continue,
            };
            match *case {
                "tracked" => (price.tracked, price.tracked_range) = (median, range),
                "untracked" => (price.untracked, price.untracked_range) = (median, range),
                _ => continue,
            }
            seen += 1;
        }
        if seen != 8 {
            bail!("tracepoint_hit_cost printed {seen} of its 8 result lines:\n{output}");
        }
        prices.wakeup_programs = match source {
            Some("wakeups") => true,
            Some("sched_info") => false,
            other => bail!("tracepoint_hit_cost's run-queue source: {other:?}\n{output}"),
        };
        Ok(prices)
    }

    /// One scheduler hit: a round trip once its four syscalls' toll is taken out, over its
    /// hits (its 2 switches, and its 2 wakeups where golens' wakeup programs run).
    fn sched_hit(&self, watched: bool) -> f64 {
        let trip = if watched { self.round_trip.tracked } else { self.round_trip.untracked };
        (trip - 4.0 * self.toll.untracked).max(0.0) / self.hits_per_round_trip()
    }

    fn hits_per_round_trip(&self) -> f64 {
        if self.wakeup_programs {
            4.0
        } else {
            2.0
        }
    }

    /// What a wakeup of the service's threads costs: a scheduler hit, or nothing.
    fn wakeup_hit(&self, watched: bool) -> f64 {
        if self.wakeup_programs {
            self.sched_hit(watched)
        } else {
            0.0
        }
    }

    /// One syscall exit hit of the pressure families: priced as half of a `nanosleep` call's
    /// two hits, its toll taken out (they test the result or the tracked map, then return).
    fn exit_hit(&self, watched: bool) -> f64 {
        let call = if watched { self.nanosleep.tracked } else { self.nanosleep.untracked };
        self.toll.untracked + (call - self.toll.untracked).max(0.0) / 2.0
    }
}

/// "one emulated uprobe hit, process tracked:     0.62 us" → 620 ns.
fn parse_uprobe_cost(output: &str) -> Result<f64> {
    output
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("one emulated uprobe hit, process tracked:")?;
            rest.trim().strip_suffix("us")?.trim().parse::<f64>().ok()
        })
        .map(|us| us * 1000.0)
        .with_context(|| format!("uprobe_hit_cost printed no tracked hit cost:\n{output}"))
}

fn command_output(command: &mut Command) -> Result<String> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed ({})", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn format_report(
    machine: &Machine,
    options: &Options,
    prices: &Prices,
    results: &[(Scenario, Vec<Sample>)],
) -> String {
    let mut out = String::new();
    let price = |p: &Price| {
        format!(
            "{:.0} ns [{:.0}, {:.0}] watched, {:.0} ns [{:.0}, {:.0}] not",
            p.tracked,
            p.tracked_range.0,
            p.tracked_range.1,
            p.untracked,
            p.untracked_range.0,
            p.untracked_range.1
        )
    };
    out.push_str(&format!(
        "\n## golens' cost per service, family by family\n\nMachine: {} CPUs, {}, kernel {}. \
         Prices (median of {} rounds [range]): any syscall's toll {:.0} ns [{:.0}, {:.0}]; \
         `epoll_pwait` call {}; `nanosleep` call {}; scheduler hit {:.0} ns watched, {:.0} ns \
         not (a round trip over its {} hits, run-queue latency from {}: {}); runtime uprobe hit \
         {:.0} ns. Hits counted over {} \
         windows of {} s at {} requests/s to each twin; each twin of each window is a sample: \
         median [range].\n",
        machine.cpus,
        machine.cpu_model,
        machine.kernel,
        options.cost_rounds,
        prices.toll.untracked,
        prices.toll.untracked_range.0,
        prices.toll.untracked_range.1,
        price(&prices.epoll),
        price(&prices.nanosleep),
        prices.sched_hit(true),
        prices.sched_hit(false),
        prices.hits_per_round_trip(),
        if prices.wakeup_programs {
            "golens' wakeup timestamps"
        } else {
            "the kernel's sched_info"
        },
        price(&prices.round_trip),
        prices.uprobe_tracked_ns,
        options.windows,
        options.seconds,
        options.rate,
    ));
    for (scenario, samples) in results {
        let cpu = summary::median(samples.iter().map(|s| s.cpu_us_per_request)).unwrap_or(0.0);
        out.push_str(&format!(
            "\n### {}: {}\n\nThe service's CPU per request: {cpu:.1} µs.\n\n\
             | family | the service's events per request | µs per request, watched | % of its CPU | not watched |\n\
             | --- | --: | --: | --: | --: |\n",
            scenario.name, scenario.description
        ));
        let watched: Vec<[f64; FAMILIES.len()]> =
            samples.iter().map(|s| s.costs(prices, true)).collect();
        let unwatched: Vec<[f64; FAMILIES.len()]> =
            samples.iter().map(|s| s.costs(prices, false)).collect();
        // Each sample's cost as a share of its own CPU per request.
        let shares = |costs: &[f64]| -> Vec<f64> {
            costs.iter().zip(samples).map(|(cost, s)| 100.0 * cost / s.cpu_us_per_request).collect()
        };
        let cell = |values: &[f64], digits: usize| match summary::spread(values) {
            Some(Spread { min, median, max }) => {
                format!("{median:.digits$} [{min:.digits$}, {max:.digits$}]")
            }
            None => "—".to_string(),
        };
        for (row, family) in FAMILIES.iter().enumerate() {
            let column = |costs: &[[f64; FAMILIES.len()]]| -> Vec<f64> {
                costs.iter().map(|c| c[row]).collect()
            };
            let counts: Vec<f64> = samples.iter().map(|s| s.events()[row]).collect();
            out.push_str(&format!(
                "| {family} | {} | {} | {} | {} |\n",
                cell(&counts, 3),
                cell(&column(&watched), 3),
                cell(&shares(&column(&watched)), 2),
                cell(&column(&unwatched), 3)
            ));
        }
        let total = |costs: &[[f64; FAMILIES.len()]]| -> Vec<f64> {
            costs.iter().map(|c| c.iter().sum()).collect()
        };
        let (watched_total, unwatched_total) = (total(&watched), total(&unwatched));
        let (watched_share, unwatched_share) = (shares(&watched_total), shares(&unwatched_total));
        let added: Vec<f64> =
            watched_share.iter().zip(&unwatched_share).map(|(w, u)| w - u).collect();
        out.push_str(&format!(
            "| **total** | | **{}** | **{}** | {} |\n\nNot watched, the same service pays {} % of \
             its CPU per request while golens runs (early returns and the syscall toll); watching \
             it adds {} % (what the twin bench's ratio measures).\n",
            cell(&watched_total, 3),
            cell(&watched_share, 2),
            cell(&unwatched_total, 3),
            cell(&unwatched_share, 2),
            cell(&added, 2),
        ));
    }
    out
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut options = Options {
        scenarios: vec![super::REALISTIC],
        windows: 3,
        seconds: 10,
        rate: 1000,
        cost_rounds: 5,
    };
    for (flag, value) in super::flag_pairs(args, USAGE)? {
        let number = || super::whole_number(flag, value);
        match flag {
            "--windows" => options.windows = number()?,
            "--seconds" => options.seconds = number()?,
            "--rate" => options.rate = number()?,
            "--cost-rounds" => options.cost_rounds = number()?,
            "--scenario" => options.scenarios = super::scenarios(value, USAGE)?,
            _ => bail!("unknown option `{flag}`\n{USAGE}"),
        }
    }
    if options.windows == 0 || options.seconds == 0 || options.rate == 0 || options.cost_rounds == 0
    {
        bail!("--windows, --seconds, --rate and --cost-rounds must be at least 1");
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE_OUTPUT: &str = "\
source\twakeups
getppid, per call (no golens program: the syscall tracepoints' toll):
     no programs: 124 ns (runs: 123, 124)
result\ttoll\tuntracked\t61.0\t43.0\t61.5
result\ttoll\ttracked\t61.0\t42.0\t63.0
result\tepoll\tuntracked\t298.0\t282.0\t303.0
result\tepoll\ttracked\t462.0\t458.0\t468.0
result\tnanosleep\tuntracked\t294.0\t292.0\t302.0
result\tnanosleep\ttracked\t518.0\t509.0\t521.0
result\troundtrip\tuntracked\t735.0\t660.0\t864.0
result\troundtrip\ttracked\t1146.0\t1010.0\t1232.0
";

    fn prices() -> Prices {
        let mut prices = Prices::parse_tracepoints(EXAMPLE_OUTPUT).unwrap();
        prices.uprobe_tracked_ns = 620.0;
        prices
    }

    #[test]
    fn prices_come_from_the_result_lines() {
        let prices = prices();
        assert_eq!(prices.toll.untracked, 61.0);
        assert_eq!(prices.epoll.tracked_range, (458.0, 468.0));
        // (1146 - 4 * 61) / 4 and (735 - 4 * 61) / 4
        assert_eq!(prices.sched_hit(true), 225.5);
        assert_eq!(prices.sched_hit(false), 122.75);
        // 61 + (518 - 61) / 2
        assert_eq!(prices.exit_hit(true), 289.5);
    }

    #[test]
    fn with_sched_info_a_round_trip_is_two_hits_and_wakeups_are_free() {
        let output = EXAMPLE_OUTPUT.replace("source\twakeups", "source\tsched_info");
        let prices = Prices::parse_tracepoints(&output).unwrap();
        // (1146 - 4 * 61) / 2
        assert_eq!(prices.sched_hit(true), 451.0);
        assert_eq!(prices.wakeup_hit(true), 0.0);
        let text = "@switch_in[10]: 100\n@wakeup[10]: 100\n@switch_out[10]: 100\n";
        let sample = Sample::new(&Counts::parse(text), 10, &[10], 100, 0.01, 0, 0);
        // one switch in (451) and one early-return switch out ((735 - 244) / 2)
        assert!((sample.costs(&prices, true)[0] - (451.0 + 245.5) / 1000.0).abs() < 1e-9);
        let unknown = EXAMPLE_OUTPUT.replace("source\twakeups", "source\tother");
        assert!(Prices::parse_tracepoints(&unknown).is_err());
    }

    #[test]
    fn missing_result_lines_are_an_error_that_shows_the_output() {
        let cut: String = EXAMPLE_OUTPUT.lines().take(6).map(|l| format!("{l}\n")).collect();
        let error = Prices::parse_tracepoints(&cut).unwrap_err().to_string();
        assert!(error.contains("3 of its 8 result lines"), "{error}");
        assert!(error.contains("no programs"), "{error}");
    }

    #[test]
    fn uprobe_cost_is_read_in_ns() {
        let output =
            "  no probe: [1.0] us/iter\none emulated uprobe hit, process not tracked: 0.57 us\n\
                      one emulated uprobe hit, process tracked:     0.62 us\n";
        assert!((parse_uprobe_cost(output).unwrap() - 620.0).abs() < 1e-9);
        assert!(parse_uprobe_cost("nothing here").is_err());
    }

    #[test]
    fn bpftrace_maps_are_parsed_and_summed_per_key_set() {
        let counts = Counts::parse(
            "Attaching 30 probes...\n\n@switch_in[10]: 5\n@switch_in[11]: 7\n@switch_in[99]: 1000\n\
             @epoll[10]: 3\n@garbage: 4\n@weird[x]: 5\n",
        );
        assert_eq!(counts.of("switch_in", &[10, 11]), 12);
        assert_eq!(counts.of("epoll", &[10]), 3);
        assert_eq!(counts.of("sleep", &[10]), 0);
        assert_eq!(counts.0.len(), 2);
    }

    #[test]
    fn a_sample_is_per_request_and_priced_per_family() {
        let text = "@switch_in[10]: 2000\n@switch_in[11]: 1640\n@switch_out[10]: 3640\n\
                    @wakeup[11]: 2140\n@epoll[10]: 340\n@sleep[10]: 1820\n@pressure[10]: 200\n\
                    @syscalls[10]: 13500\n@syscalls[99]: 50000\n";
        let sample = Sample::new(&Counts::parse(text), 10, &[10, 11], 2000, 0.32, 4, 1080);
        assert_eq!(sample.cpu_us_per_request, 160.0);
        assert_eq!(sample.switch_in, 1.82);
        assert_eq!(sample.syscalls, 6.75);
        assert_eq!(sample.gc_cycles, 0.002);
        let watched = sample.costs(&prices(), true);
        let unwatched = sample.costs(&prices(), false);
        // sched: (1.82 in + 1.07 wakeups + 0.54 preempted) * 225.5 + (1.82 - 0.54) out * 122.75
        assert!((watched[0] - (3.43 * 225.5 + 1.28 * 122.75) / 1000.0).abs() < 1e-9);
        assert!((unwatched[0] - 4.71 * 0.12275).abs() < 1e-9);
        // goruntime: 0.002 cycles * 7 hits * 620 ns, nothing when not watched
        assert!((watched[1] - 0.002 * 7.0 * 0.62).abs() < 1e-9);
        assert_eq!(unwatched[1], 0.0);
        // timers: 0.91 calls * 518 / 294 ns
        assert!((watched[3] - 0.91 * 0.518).abs() < 1e-9);
        assert!((unwatched[3] - 0.91 * 0.294).abs() < 1e-9);
        // the toll: every syscall but the epoll and sleep calls, 61 ns
        assert!((watched[5] - (6.75 - 0.17 - 0.91) * 0.061).abs() < 1e-9);
        assert!(watched.iter().zip(&unwatched).all(|(w, u)| w >= u));
    }

    #[test]
    fn the_report_gives_median_and_range_per_family_and_in_total() {
        let text = |syscalls: u64| format!("@switch_in[10]: 100\n@syscalls[10]: {syscalls}\n");
        // 100 requests, 100 µs of CPU each; 1 switch in and 10 or 30 syscalls per request.
        let samples = [10, 30]
            .map(|n| Sample::new(&Counts::parse(&text(n * 100)), 10, &[10], 100, 0.01, 0, 0));
        let report = format_report(
            &crate::bench::test_support::machine(),
            &parse_args(&[]).unwrap(),
            &prices(),
            &[(super::super::REALISTIC, samples.to_vec())],
        );
        // The toll: 10 and 30 syscalls at 61 ns: 0.61 and 1.83 µs, median 1.22.
        assert!(report.contains("| syscall toll (every other syscall) | 20.000 [10.000, 30.000] | 1.220 [0.610, 1.830] | 1.22 [0.61, 1.83] | 1.220 [0.610, 1.830] |"), "{report}");
        // Total, watched: the toll plus one switch in at 225.5 ns.
        assert!(
            report.contains("| **total** | | **1.446 [0.836, 2.055]** | **1.45 [0.84, 2.06]** |"),
            "{report}"
        );
        assert!(report.contains("The service's CPU per request: 100.0 µs."), "{report}");
    }

    #[test]
    fn the_script_counts_every_pressure_exit_and_every_syscall() {
        let script = bpftrace_script();
        for name in PRESSURE_EXITS {
            assert!(
                script.contains(&format!("sys_exit_{name},"))
                    || script.contains(&format!("sys_exit_{name} {{"))
            );
        }
        assert!(script.contains("raw_syscalls:sys_enter"));
        assert!(script.contains("@switch_in[args->next_pid]"));
    }

    #[test]
    fn the_pressure_exits_are_golens_own() {
        // The list mirrors golens_ebpf::syscalls::{VMA, FD, NET}: names as tracepoints.
        let ebpf = include_str!("../../../agent-ebpf/src/lib.rs");
        for name in PRESSURE_EXITS {
            assert!(
                ebpf.contains(&format!("\"sys_exit_{name}\"")),
                "{name} is not probed by golens"
            );
        }
        let probed = ebpf.matches("\"sys_exit_").count();
        // netpoll (2) and timers (2) exits are counted as epoll and sleep calls instead.
        assert_eq!(probed, PRESSURE_EXITS.len() + 4);
    }

    #[test]
    fn options_have_defaults_and_reject_nonsense() {
        let options = parse_args(&[]).unwrap();
        assert_eq!(options.scenarios, vec![super::super::REALISTIC]);
        assert_eq!(
            (options.windows, options.seconds, options.rate, options.cost_rounds),
            (3, 10, 1000, 5)
        );
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&args(&["--scenario", "all"])).unwrap().scenarios.len(), 2);
        assert!(parse_args(&args(&["--windows", "0"])).is_err());
        assert!(parse_args(&args(&["--windows"]))
            .unwrap_err()
            .to_string()
            .contains("needs a value"));
        assert!(parse_args(&args(&["--scenario", "x"])).is_err());
        assert!(parse_args(&args(&["--bogus", "1"])).is_err());
    }
}
