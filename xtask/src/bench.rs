//! `cargo xtask bench`: what golens costs a Go HTTP service.
//!
//! Two scenarios, each its own demo service: "plain" (the demo as is) and "gc" (the same
//! service with `GOGC=5`: many more GC cycles per request, so the Go runtime uprobes fire
//! far more often). In each scenario wrk rounds alternate between golens attached and not
//! attached, so drift of the shared machine hits both sides alike. Results are ratios
//! (with / without), never absolute times, and nothing is asserted: this is a report.
//!
//! During the "with" rounds it also reports, per golens eBPF program, hits per second and
//! the program's own mean run time per hit (`kernel.bpf_stats_enabled`, read through
//! aya's `loaded_programs()`), and the GC rate golens itself saw (its /metrics).

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{setup, util};

const SERVICE_LISTEN: &str = "127.0.0.1:8090";
const GOLENS_LISTEN: &str = "127.0.0.1:9478";
const USAGE: &str = "usage: cargo xtask bench [--rounds N] [--seconds S] [--scenario plain|gc|all]";
const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
const GC_CYCLES_METRIC: &str = "golens_go_gc_cycles_total";

#[derive(Clone, Copy, Debug, PartialEq)]
struct Scenario {
    name: &'static str,
    description: &'static str,
    env: &'static [(&'static str, &'static str)],
}

const PLAIN: Scenario =
    Scenario { name: "plain", description: "demo service, default GOGC", env: &[] };
const GC_HEAVY: Scenario =
    Scenario { name: "gc", description: "same service with GOGC=5", env: &[("GOGC", "5")] };

#[derive(Debug, PartialEq)]
struct Options {
    rounds: u32,
    seconds: u32,
    scenarios: Vec<Scenario>,
}

#[derive(Clone, Copy, Debug)]
struct Round {
    requests_per_second: f64,
    p99_ms: f64,
}

/// One golens program as sampled at one instant.
#[derive(Clone, Debug, PartialEq)]
struct ProgramSample {
    id: u32,
    name: String,
    kind: &'static str,
    run_count: u64,
    run_time_ns: u64,
}

/// What one program did during one window, or summed over several.
#[derive(Clone, Debug, PartialEq)]
struct ProgramCost {
    name: String,
    kind: &'static str,
    hits: u64,
    run_time_ns: u64,
    seconds: f64,
}

struct ScenarioResult {
    scenario: Scenario,
    with: Vec<Round>,
    without: Vec<Round>,
    /// GC cycles per second seen by golens, one entry per "with" round that had the metric.
    gc_per_second: Vec<f64>,
    /// Summed over the "with" rounds.
    programs: Vec<ProgramCost>,
}

pub fn bench(args: &[String]) -> Result<()> {
    if args.first().is_some_and(|first| first == "scale") {
        return crate::bench_scale::bench_scale(&args[1..]);
    }
    let options = parse_args(args)?;
    setup::setup()?;
    if !util::is_root() {
        bail!("golens loads eBPF programs: run `cargo xtask bench` as root");
    }
    util::build_release()?;
    let binary = util::build_workload("demo")?;
    let _stats = BpfStatsGuard::enable()?;

    let mut results = Vec::new();
    for &scenario in &options.scenarios {
        results.push(run_scenario(scenario, &binary, &options)?);
    }
    print!("{}", format_report(&results, options.rounds, options.seconds));
    Ok(())
}

fn run_scenario(scenario: Scenario, binary: &Path, options: &Options) -> Result<ScenarioResult> {
    let Options { rounds, seconds, .. } = *options;
    let name = scenario.name;
    util::step(&format!("scenario {name}: starting the demo service ({})", scenario.description));
    let service = start_service(binary, scenario.env)?;
    let pid = service.0.id();

    util::step(&format!("scenario {name}: warm-up round (not counted)"));
    wrk(seconds.min(3))?;
    let mut result = ScenarioResult {
        scenario,
        with: Vec::new(),
        without: Vec::new(),
        gc_per_second: Vec::new(),
        programs: Vec::new(),
    };
    for round in 1..=rounds {
        let label = format!("scenario {name}, round {round}/{rounds}");
        util::step(&format!("{label}: without golens"));
        let without = wrk(seconds)?;
        util::step(&format!("{label}:   {:.0} req/s", without.requests_per_second));
        result.without.push(without);

        util::step(&format!("{label}: with golens attached"));
        let (with, gc_per_second, programs) = with_golens_round(pid, seconds)?;
        let gc = gc_per_second.map_or("no GC metric".into(), |gc| format!("{gc:.1} GC/s"));
        util::step(&format!("{label}:   {:.0} req/s, {gc}", with.requests_per_second));
        result.with.push(with);
        result.gc_per_second.extend(gc_per_second);
        merge_costs(&mut result.programs, &programs);
    }
    Ok(result)
}

/// One wrk round with golens attached: the round, GC cycles per second seen by golens,
/// and what each golens program did during the round.
fn with_golens_round(pid: u32, seconds: u32) -> Result<(Round, Option<f64>, Vec<ProgramCost>)> {
    let golens = util::start_golens(pid, GOLENS_LISTEN, "1s")?;
    let owner = golens.0.id();
    // /readyz can answer before the process is tracked: wait for its GC counter.
    let gc_before = wait_for_gc_cycles(pid, Duration::from_secs(5));
    let gc_started = Instant::now();
    let before = sample_programs(owner)?;
    let started = Instant::now();
    let round = wrk(seconds)?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = sample_programs(owner)?;
    let gc_after = scrape_gc_cycles(pid);
    let gc_elapsed = gc_started.elapsed().as_secs_f64();
    drop(golens);

    let gc_per_second = match (gc_before, gc_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before) as f64 / gc_elapsed),
        _ => None,
    };
    Ok((round, gc_per_second, program_costs(&before, &after, elapsed)))
}

/// The demo service with extra environment (util::start_demo_service takes none).
fn start_service(binary: &Path, env: &[(&str, &str)]) -> Result<util::Guard> {
    let child = Command::new(binary)
        .args(["-listen", SERVICE_LISTEN, "-selfload", "0"])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let guard = util::Guard(child);
    util::wait_for_http(&format!("http://{SERVICE_LISTEN}/health"), Duration::from_secs(20))?;
    Ok(guard)
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut options = Options { rounds: 3, seconds: 10, scenarios: vec![PLAIN, GC_HEAVY] };
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let value = iter.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--rounds" => {
                options.rounds = value.parse().context("--rounds takes a whole number")?;
            }
            "--seconds" => {
                options.seconds = value.parse().context("--seconds takes a whole number")?;
            }
            "--scenario" => {
                options.scenarios = match value.as_str() {
                    "plain" => vec![PLAIN],
                    "gc" => vec![GC_HEAVY],
                    "all" => vec![PLAIN, GC_HEAVY],
                    other => bail!("unknown scenario `{other}`\n{USAGE}"),
                };
            }
            _ => bail!("{USAGE}"),
        }
    }
    if options.rounds == 0 || options.seconds == 0 {
        bail!("--rounds and --seconds must be at least 1");
    }
    Ok(options)
}

fn wrk(seconds: u32) -> Result<Round> {
    let output = Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{seconds}s"), "--latency"])
        .arg(format!("http://{SERVICE_LISTEN}/work"))
        .output()
        .context("running wrk (Debian package wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("wrk failed: {text}");
    }
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<Round> {
    let requests_per_second =
        text.lines().find_map(|l| l.trim().strip_prefix("Requests/sec:"))?.trim().parse().ok()?;
    let p99 = text.lines().find_map(|l| l.trim().strip_prefix("99%"))?.trim();
    Some(Round { requests_per_second, p99_ms: parse_wrk_duration_ms(p99)? })
}

/// wrk prints latencies as "812.00us", "1.23ms" or "2.01s".
fn parse_wrk_duration_ms(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|v| v * scale)
}

// ---- GC cycles, from golens' own /metrics ----

fn scrape_gc_cycles(pid: u32) -> Option<u64> {
    let (code, body) = util::http_get(&format!("http://{GOLENS_LISTEN}/metrics")).ok()?;
    (code == 200).then(|| parse_gc_cycles(&body, pid)).flatten()
}

fn wait_for_gc_cycles(pid: u32, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let cycles = scrape_gc_cycles(pid);
        if cycles.is_some() || Instant::now() >= deadline {
            return cycles;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `golens_go_gc_cycles_total{pid="42",comm="demo"} 818` → 818 for pid 42.
fn parse_gc_cycles(metrics: &str, pid: u32) -> Option<u64> {
    let wanted = format!("pid=\"{pid}\"");
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(GC_CYCLES_METRIC)?.strip_prefix('{')?;
        let (labels, value) = rest.split_once('}')?;
        if !labels.split(',').any(|label| label.trim() == wanted) {
            return None;
        }
        let value: f64 = value.split_whitespace().next()?.parse().ok()?;
        (value >= 0.0).then_some(value as u64)
    })
}

// ---- per-program hits and run time (kernel.bpf_stats_enabled) ----

/// Turns on `kernel.bpf_stats_enabled` (run_cnt/run_time_ns of every program) and puts the
/// previous value back when dropped, on error paths too.
struct BpfStatsGuard {
    previous: String,
}

impl BpfStatsGuard {
    fn enable() -> Result<Self> {
        let previous = fs::read_to_string(BPF_STATS_SYSCTL)
            .with_context(|| format!("reading {BPF_STATS_SYSCTL}"))?
            .trim()
            .to_owned();
        fs::write(BPF_STATS_SYSCTL, "1")
            .with_context(|| format!("writing 1 to {BPF_STATS_SYSCTL}"))?;
        util::step(&format!("kernel.bpf_stats_enabled = 1 for the bench (was {previous})"));
        Ok(Self { previous })
    }
}

impl Drop for BpfStatsGuard {
    fn drop(&mut self) {
        if let Err(error) = fs::write(BPF_STATS_SYSCTL, &self.previous) {
            eprintln!(
                "xtask: warning: could not restore {BPF_STATS_SYSCTL} to {}: {error}",
                self.previous
            );
        }
    }
}

/// Run counts and run times of the programs loaded by the golens process `owner`: the ids
/// behind the bpf-prog fds that `owner` holds (so another golens on the host, e.g. a
/// concurrent test run, is not counted). The kernel keeps 15 bytes of a program name;
/// golens' names fit, and are unique (a test in agent-ebpf checks it).
fn sample_programs(owner: u32) -> Result<Vec<ProgramSample>> {
    let ids = program_ids_held_by(owner);
    let mut samples = Vec::new();
    for program in aya::programs::loaded_programs() {
        // A program unloaded between listing and reading is not an error.
        let Ok(program) = program else { continue };
        let short = String::from_utf8_lossy(program.name()).into_owned();
        let ours = if ids.is_empty() {
            // No fds to go by (should not happen): every program named golens_*.
            short.starts_with("golens_")
        } else {
            ids.contains(&program.id())
        };
        if !ours {
            continue;
        }
        samples.push(ProgramSample {
            id: program.id(),
            name: short,
            kind: program_kind(program.program_type() as u32),
            run_count: program.run_count(),
            run_time_ns: u64::try_from(program.run_time().as_nanos()).unwrap_or(u64::MAX),
        });
    }
    if samples.is_empty() {
        bail!("no eBPF program of golens (pid {owner}) found among the loaded programs");
    }
    Ok(samples)
}

fn program_kind(program_type: u32) -> &'static str {
    match program_type {
        // BPF_PROG_TYPE_KPROBE: golens' only programs of that type are its uprobes.
        2 => "uprobe",
        // BPF_PROG_TYPE_TRACING: tp_btf scheduler/process tracepoints.
        26 => "tp_btf",
        _ => "other",
    }
}

/// Program ids behind the `anon_inode:bpf-prog` fds of process `pid`.
fn program_ids_held_by(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    let mut ids = Vec::new();
    for entry in entries.flatten() {
        let is_program = fs::read_link(entry.path())
            .is_ok_and(|target| target == Path::new("anon_inode:bpf-prog"));
        if !is_program {
            continue;
        }
        let fdinfo = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        if let Some(id) = fs::read_to_string(fdinfo).ok().as_deref().and_then(parse_fdinfo_prog_id)
        {
            ids.push(id);
        }
    }
    ids
}

/// The `prog_id:` line of a bpf-prog fd's /proc/PID/fdinfo/FD.
fn parse_fdinfo_prog_id(fdinfo: &str) -> Option<u32> {
    fdinfo.lines().find_map(|line| line.strip_prefix("prog_id:")?.trim().parse().ok())
}

/// Per program, what happened between two samples `seconds` apart (matched by id: golens
/// is restarted for every round, so ids change between rounds, names do not).
fn program_costs(
    before: &[ProgramSample],
    after: &[ProgramSample],
    seconds: f64,
) -> Vec<ProgramCost> {
    after
        .iter()
        .map(|now| {
            let then = before.iter().find(|b| b.id == now.id);
            let (count, time) = then.map_or((0, 0), |b| (b.run_count, b.run_time_ns));
            ProgramCost {
                name: now.name.clone(),
                kind: now.kind,
                hits: now.run_count.saturating_sub(count),
                run_time_ns: now.run_time_ns.saturating_sub(time),
                seconds,
            }
        })
        .collect()
}

/// Adds `round` into `total`, by program name.
fn merge_costs(total: &mut Vec<ProgramCost>, round: &[ProgramCost]) {
    for cost in round {
        match total.iter_mut().find(|t| t.name == cost.name) {
            Some(t) => {
                t.hits += cost.hits;
                t.run_time_ns += cost.run_time_ns;
                t.seconds += cost.seconds;
            }
            None => total.push(cost.clone()),
        }
    }
}

// ---- report ----

fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

fn format_report(results: &[ScenarioResult], rounds: u32, seconds: u32) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ngolens overhead on a Go HTTP service ({rounds} alternating rounds of {seconds} s per \
         scenario, medians; GC/s as seen by golens in the \"with\" rounds)"
    );
    let _ = writeln!(
        out,
        "{:<9} {:>7} {:>11} {:>11} {:>6} {:>10} {:>10} {:>6}",
        "scenario", "GC/s", "req/s with", "without", "ratio", "p99 with", "without", "ratio"
    );
    let mut notes = Vec::new();
    for result in results {
        let rps = |rounds: &[Round]| median(rounds.iter().map(|r| r.requests_per_second));
        let p99 = |rounds: &[Round]| median(rounds.iter().map(|r| r.p99_ms));
        let (Some(rps_with), Some(rps_without), Some(p99_with), Some(p99_without)) =
            (rps(&result.with), rps(&result.without), p99(&result.with), p99(&result.without))
        else {
            continue;
        };
        let gc = median(result.gc_per_second.iter().copied());
        let _ = writeln!(
            out,
            "{:<9} {:>7} {:>11.0} {:>11.0} {:>6.3} {:>7.2} ms {:>7.2} ms {:>6.3}",
            result.scenario.name,
            gc.map_or("-".into(), |gc| format!("{gc:.1}")),
            rps_with,
            rps_without,
            rps_with / rps_without,
            p99_with,
            p99_without,
            p99_with / p99_without
        );
        notes.push(format!(
            "  {:<6} {}: {} at {:.1}% throughput cost",
            result.scenario.name,
            result.scenario.description,
            gc.map_or("GC rate unknown".into(), |gc| format!("{gc:.1} GC/s")),
            (1.0 - rps_with / rps_without) * 100.0
        ));
    }
    for note in notes {
        let _ = writeln!(out, "{note}");
    }

    let mut rows: Vec<(&str, &str)> = Vec::new();
    for cost in results.iter().flat_map(|r| &r.programs) {
        if !rows.iter().any(|(name, _)| *name == cost.name) {
            rows.push((&cost.name, cost.kind));
        }
    }
    if rows.is_empty() {
        return out;
    }
    // Uprobes first: their hit rate is the number that matters.
    rows.sort_by_key(|&(name, kind)| (kind != "uprobe", name));
    let _ = writeln!(
        out,
        "\nper golens program during the \"with\" rounds (kernel.bpf_stats_enabled): hits per \
         second, mean ns per hit"
    );
    let _ = write!(out, "{:<26} {:<7}", "program", "kind");
    for result in results {
        let _ = write!(out, " {:>12} {:>7}", format!("{} hits/s", result.scenario.name), "ns/hit");
    }
    let _ = writeln!(out);
    for (name, kind) in rows {
        let _ = write!(out, "{name:<26} {kind:<7}");
        for result in results {
            match result.programs.iter().find(|c| c.name == name) {
                Some(cost) if cost.seconds > 0.0 => {
                    let rate = cost.hits as f64 / cost.seconds;
                    let per_hit = if cost.hits == 0 {
                        "-".into()
                    } else {
                        format!("{:.0}", cost.run_time_ns as f64 / cost.hits as f64)
                    };
                    let _ = write!(out, " {rate:>12.1} {per_hit:>7}");
                }
                _ => {
                    let _ = write!(out, " {:>12} {:>7}", "-", "-");
                }
            }
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "  ns/hit is the BPF program's own run time: the uprobe trap, and the single-step of \
         probes on a RET, are not in it.\n  tp_btf programs run for every task on the host \
         (they return at once for untracked ones), so their rates include wrk and the rest."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_output() {
        let text =
            "Running 1s test @ http://127.0.0.1:8090/work\n  Latency Distribution\n     50%  \
                    1.10ms\n     99%  812.00us\nRequests/sec:   1234.56\nTransfer/sec: 1MB\n";
        let round = parse_wrk(text).unwrap();
        assert_eq!(round.requests_per_second, 1234.56);
        assert!((round.p99_ms - 0.812).abs() < 1e-9);
        assert_eq!(parse_wrk_duration_ms("2.5s"), Some(2500.0));
        assert_eq!(parse_wrk_duration_ms("bogus"), None);
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_bench_arguments() {
        let all = parse_args(&[]).unwrap();
        assert_eq!((all.rounds, all.seconds), (3, 10));
        assert_eq!(all.scenarios, vec![PLAIN, GC_HEAVY]);
        let gc =
            parse_args(&args(&["--scenario", "gc", "--rounds", "2", "--seconds", "5"])).unwrap();
        assert_eq!(gc, Options { rounds: 2, seconds: 5, scenarios: vec![GC_HEAVY] });
        assert_eq!(parse_args(&args(&["--scenario", "plain"])).unwrap().scenarios, vec![PLAIN]);
        assert!(parse_args(&args(&["--scenario", "both"])).is_err());
        assert!(parse_args(&args(&["--rounds", "0"])).is_err());
        assert!(parse_args(&args(&["--seconds"])).is_err());
        assert!(parse_args(&args(&["--bogus", "1"])).is_err());
    }

    #[test]
    fn parses_gc_cycles_of_one_pid() {
        let metrics = "# HELP golens_go_gc_cycles GC cycles started.\n\
                       # TYPE golens_go_gc_cycles counter\n\
                       golens_go_gc_cycles_total{pid=\"7\",comm=\"other\"} 3\n\
                       golens_go_gc_cycles_total{pid=\"42\",comm=\"demo\"} 818\n\
                       golens_go_gc_cycles_total_bogus{pid=\"42\"} 1\n";
        assert_eq!(parse_gc_cycles(metrics, 42), Some(818));
        assert_eq!(parse_gc_cycles(metrics, 7), Some(3));
        assert_eq!(parse_gc_cycles(metrics, 4), None);
        assert_eq!(parse_gc_cycles("golens_go_gc_cycles_total{pid=\"4\"} 2.0e1\n", 4), Some(20));
    }

    #[test]
    fn parses_fdinfo_of_a_program_fd() {
        let fdinfo = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_tag:\t6427014242fb6c53\n\
                      prog_id:\t386\nrun_time_ns:\t0\nrun_cnt:\t0\n";
        assert_eq!(parse_fdinfo_prog_id(fdinfo), Some(386));
        assert_eq!(parse_fdinfo_prog_id("pos:\t0\nmap_id:\t3\n"), None);
    }

    fn sample(id: u32, name: &str, run_count: u64, run_time_ns: u64) -> ProgramSample {
        ProgramSample { id, name: name.into(), kind: "uprobe", run_count, run_time_ns }
    }

    #[test]
    fn program_costs_are_deltas_merged_by_name() {
        let before = [sample(1, "golens_go_gc_cycle_start", 10, 1_000)];
        let after = [
            sample(1, "golens_go_gc_cycle_start", 30, 5_000),
            sample(2, "golens_go_gc_cycle_end", 4, 400),
        ];
        let round = program_costs(&before, &after, 2.0);
        assert_eq!(round[0].hits, 20);
        assert_eq!(round[0].run_time_ns, 4_000);
        assert_eq!(round[1].hits, 4);
        let mut total = Vec::new();
        merge_costs(&mut total, &round);
        merge_costs(&mut total, &round);
        assert_eq!(total.len(), 2);
        assert_eq!((total[0].hits, total[0].run_time_ns, total[0].seconds), (40, 8_000, 4.0));
    }

    #[test]
    fn report_has_ratios_rates_and_costs() {
        let round = |rps, p99_ms| Round { requests_per_second: rps, p99_ms };
        let result = ScenarioResult {
            scenario: GC_HEAVY,
            with: vec![round(900.0, 2.2), round(950.0, 2.0)],
            without: vec![round(1000.0, 2.0), round(1000.0, 1.9)],
            gc_per_second: vec![120.0],
            programs: vec![
                ProgramCost {
                    name: "golens_sched_switch".into(),
                    kind: "tp_btf",
                    hits: 5000,
                    run_time_ns: 500_000,
                    seconds: 5.0,
                },
                ProgramCost {
                    name: "golens_go_gc_cycle_start".into(),
                    kind: "uprobe",
                    hits: 600,
                    run_time_ns: 480_000,
                    seconds: 5.0,
                },
            ],
        };
        let report = format_report(&[result], 2, 5);
        let tokens = |prefix: &str| -> Vec<String> {
            let line = report.lines().find(|l| l.starts_with(prefix)).unwrap_or_default();
            line.split_whitespace().map(String::from).collect()
        };
        let expected = ["gc", "120.0", "950", "1000", "0.950", "2.20", "ms", "2.00", "ms", "1.100"];
        assert_eq!(tokens("gc "), expected, "{report}");
        assert!(report.contains("120.0 GC/s at 5.0% throughput cost"), "{report}");
        let start = report.find("golens_go_gc_cycle_start").unwrap();
        assert!(start < report.find("golens_sched_switch").unwrap(), "uprobes first:\n{report}");
        assert_eq!(
            tokens("golens_go_gc_cycle_start"),
            ["golens_go_gc_cycle_start", "uprobe", "120.0", "800"]
        );
        assert_eq!(
            tokens("golens_sched_switch"),
            ["golens_sched_switch", "tp_btf", "1000.0", "100"]
        );
    }
}
