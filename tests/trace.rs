//! `golens trace`: the GC timeline of a running process against the
//! runtime's own count, alongside a running agent, and its verdict on a
//! CPU-starved process. Privileged: run by `cargo xtask test` (as root).

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{build_workload, build_workload_with, golens, Agent, GcWorkload, GoBuild};

/// Starts `golens trace ARGS` and waits (bounded) for its "tracing pid" line on stderr.
fn start_trace(args: &[&str]) -> std::process::Child {
    let mut child = golens()
        .arg("trace")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("golens trace");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("tracing pid") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("golens trace did not start within 30 s");
    child
}

fn json_lines(child: std::process::Child) -> Vec<serde_json::Value> {
    let output = child.wait_with_output().expect("golens trace output");
    assert!(output.status.success(), "golens trace failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// 50 forced GC cycles: 50 `gc` lines, each with its two pauses; the
/// summary counts them; an agent watching the same process counts the same
/// 50 (no double counting either side).
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn every_cycle_once_with_an_agent_watching_too() {
    let binary =
        build_workload_with("gcburn", "1.27.3", GoBuild { stripped: true, ..GoBuild::default() });
    let mut workload = GcWorkload::start(&binary, &["-cycles", "50", "-spin", "0"]);
    let pid = workload.pid.clone();
    let agent = Agent::start(&["--pid", &pid]);
    let cycles =
        |m: &common::Metrics| m.value("golens_go_gc_cycles_total", &[("pid", &pid)]).unwrap_or(0.0);
    let before = cycles(&agent.wait_for(Duration::from_secs(10), |m| {
        m.has_pid("golens_go_gc_cycles_total", pid.parse().unwrap())
    }));
    let trace = start_trace(&["--pid", &pid, "--json", "--duration", "4s"]);
    let report = workload.run_cycles();
    let lines = json_lines(trace);
    agent.catch_up();
    let agent_cycles = cycles(&agent.metrics()) - before;
    let gc: Vec<_> = lines.iter().filter(|l| l["event"] == "gc").collect();
    let summary = lines.iter().find(|l| l["event"] == "summary").expect("a summary line");
    println!(
        "runtime {} cycles; trace {} gc lines; agent {agent_cycles}; summary {summary}",
        report.gc_cycles,
        gc.len()
    );
    assert_eq!(gc.len() as u64, report.gc_cycles, "one line per GC cycle");
    assert_eq!(summary["gc_cycles"], report.gc_cycles);
    assert_eq!(summary["pauses"], 2 * report.gc_cycles, "two pauses per cycle");
    for line in &gc {
        let reasons: Vec<&str> = line["pauses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["reason"].as_str().unwrap())
            .collect();
        assert_eq!(reasons, ["gc_sweep_termination", "gc_mark_termination"], "{line}");
    }
    assert_eq!(agent_cycles, report.gc_cycles as f64, "the agent counts the same cycles");
    workload.finish();
}

/// Every Go version of the matrix (stripped; 1.21 as PIE, 1.25 with cgo): 20 forced cycles
/// give 20 `gc` lines with their two pauses each, numbered 1 to 20, and a summary that counts
/// them, the runtime's own count being the reference.
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn every_version_of_the_matrix_gets_its_timeline() {
    let stripped = GoBuild { stripped: true, ..GoBuild::default() };
    let matrix = [
        ("1.19", stripped),
        ("1.21.13", GoBuild { pie: true, ..stripped }),
        ("1.23.9", stripped),
        ("1.25.5", GoBuild { cgo: true, ..stripped }),
        ("1.27.3", stripped),
    ];
    for (version, build) in matrix {
        let binary = build_workload_with("gcburn", version, build);
        let mut workload = GcWorkload::start(&binary, &["-cycles", "20", "-spin", "0"]);
        let trace = start_trace(&["--pid", &workload.pid, "--json", "--duration", "3s"]);
        let report = workload.run_cycles();
        let lines = json_lines(trace);
        let gc: Vec<_> = lines.iter().filter(|l| l["event"] == "gc").collect();
        let summary = lines.iter().find(|l| l["event"] == "summary").expect("a summary line");
        println!("Go {version}: runtime {} cycles, trace {} gc lines", report.gc_cycles, gc.len());
        assert_eq!(gc.len() as u64, report.gc_cycles, "Go {version}: one line per cycle");
        assert_eq!(summary["gc_cycles"], report.gc_cycles, "Go {version}");
        let numbers: Vec<u64> = gc.iter().map(|l| l["gc"].as_u64().expect("gc number")).collect();
        assert_eq!(numbers, (1..=report.gc_cycles).collect::<Vec<_>>(), "Go {version}");
        for line in &gc {
            assert_eq!(line["pauses"].as_array().map(Vec::len), Some(2), "Go {version}: {line}");
        }
        workload.finish();
    }
}

/// A process with many more runnable threads than CPUs: the verdict names
/// the scheduler.
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn cpu_starved_process_is_blamed_on_the_scheduler() {
    let binary = build_workload("runqburn");
    let workload = common::start_workload(&binary, &["-duration", "30s", "-workers", "8"]);
    let pid = workload.pid().to_string();
    let started = Instant::now();
    let output =
        golens().args(["trace", "--pid", &pid, "--duration", "3s"]).output().expect("golens trace");
    let text = String::from_utf8_lossy(&output.stdout);
    println!("{text}");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(started.elapsed() < Duration::from_secs(60), "trace did not end after --duration");
    let verdict = text.lines().find(|l| l.starts_with("where the time went")).expect("a verdict");
    assert!(verdict.contains("mostly the scheduler"), "{verdict}");
}

/// The verdict of `golens trace --pid PID --duration 3s`.
fn verdict_of(pid: u32) -> String {
    let output = golens()
        .args(["trace", "--pid", &pid.to_string(), "--duration", "3s"])
        .output()
        .expect("golens trace");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: Vec<&str> = text.lines().filter(|l| l.starts_with("summary")).collect();
    println!("{}", summary.join("\n"));
    text.lines().find(|l| l.starts_with("where the time went")).expect("a verdict").to_owned()
}

/// A process whose world is stopped most of the time (common::start_gc_bound): the verdict
/// names the GC pauses.
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn gc_bound_process_is_blamed_on_gc_pauses() {
    let workload = common::start_gc_bound(Duration::from_secs(60));
    let verdict = verdict_of(workload.pid());
    println!("{verdict}");
    assert!(verdict.contains("mostly GC pauses"), "{verdict}");
}

/// A busy thread held to a tenth of a CPU by its cgroup's quota: it waits on its run queue
/// most of the time, and the verdict names the quota, not the scheduler.
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn throttled_process_is_blamed_on_its_quota() {
    let cgroup = common::CpuLimitedCgroup::create("trace-throttled").expect("a CPU cgroup");
    cgroup.set_quota(0.1);
    let binary = build_workload("runqburn");
    let workload =
        common::start_workload(&binary, &["-duration", "60s", "-workers", "1", "-sleep", "0s"]);
    cgroup.add(workload.pid());
    let verdict = verdict_of(workload.pid());
    println!("{verdict}");
    assert!(verdict.contains("mostly CPU throttling by the cgroup quota"), "{verdict}");
    let share = |name: &str| -> f64 {
        let after = verdict.split(name).nth(1).expect(name).trim_start();
        after.split(" %").next().unwrap().parse().unwrap_or_else(|_| panic!("{verdict}"))
    };
    // Throttled about 90 % of the time, and waiting for it: waiting counts the throttled
    // stretches too. (Above 100 % when its other threads sat on the other CPU's run queue as
    // it was throttled: the kernel adds up each CPU's throttled time.)
    let throttled = share("throttled ");
    assert!(throttled >= 50.0, "{verdict}");
    assert!(share("waiting for CPU ") >= 50.0, "{verdict}");
}

#[test]
fn trace_needs_a_go_process() {
    let sleeper = common::ChildGuard(Command::new("sleep").arg("30").spawn().unwrap());
    let output = golens().args(["trace", "--pid", &sleeper.pid().to_string()]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a Go program"), "{stderr}");
}
