//! Go runtime probes (GC cycles, stop-the-world pauses, sysmon preemptions)
//! against real Go processes of every version of the matrix, compared with the
//! runtime's own accounting. Privileged: run by `cargo xtask test` (as root).

mod common;

use std::{process::Command, thread::sleep, time::Duration};

use common::{build_workload_with, Agent, GcWorkload, GoBuild, Metrics};

/// runtime.GC() calls each workload makes.
const CYCLES: u64 = 50;
const PROBES: &[&str] =
    &["gc_cycle_start", "gc_cycle_end", "stw_stop", "stw_stopped", "stw_started", "sysmon_preempt"];

fn value(metrics: &Metrics, name: &str, pid: &str) -> f64 {
    metrics.value(name, &[("pid", pid)]).unwrap_or(0.0)
}

/// Sum (or count) of golens_go_stw_pause_seconds over the reasons `keep` accepts.
fn pauses(metrics: &Metrics, pid: &str, suffix: &str, keep: impl Fn(&str) -> bool) -> f64 {
    by_reason(metrics, "golens_go_stw_pause_seconds", pid, suffix, keep)
}

/// Sum (or count) of a by-reason histogram over the reasons `keep` accepts.
fn by_reason(
    metrics: &Metrics,
    family: &str,
    pid: &str,
    suffix: &str,
    keep: impl Fn(&str) -> bool,
) -> f64 {
    let name = format!("{family}_{suffix}");
    metrics
        .samples
        .iter()
        .filter(|s| s.name == name && s.labels.get("pid").map(String::as_str) == Some(pid))
        .filter(|s| keep(s.labels.get("reason").map_or("", String::as_str)))
        .map(|s| s.value)
        .sum()
}

fn run_matrix_case(version: &str, build: GoBuild) {
    run_case_attached_as(version, build, "auto");
}

fn run_case_attached_as(version: &str, build: GoBuild, attach_mode: &str) {
    let binary = build_workload_with("gcburn", version, build);
    let mut workload = GcWorkload::start(&binary, &["-cycles", &CYCLES.to_string()]);
    let pid = workload.pid.clone();
    let agent = Agent::start(&["--pid", &pid, "--attach-mode", attach_mode]);

    // Every probe attached, or the test says which and why.
    let attached = |m: &Metrics| {
        PROBES
            .iter()
            .all(|p| m.value("golens_probe_attached", &[("pid", &pid), ("probe", p)]) == Some(1.0))
    };
    let metrics = agent.wait_for(Duration::from_secs(10), attached);
    if !attached(&metrics) {
        let (_, snapshot) = common::get(&format!("{}/api/v1/snapshot", agent.base_url)).unwrap();
        panic!("Go {version} {build:?}: not every runtime probe attached: {snapshot}");
    }
    let before = metrics;

    // Run the GC cycles; the workload reports the runtime's own accounting.
    let report = workload.run_cycles();
    assert!(report.go.starts_with(&format!("go{version}")), "{} is not Go {version}", report.go);
    agent.catch_up();
    let after = agent.metrics();

    let cycles = value(&after, "golens_go_gc_cycles_total", &pid)
        - value(&before, "golens_go_gc_cycles_total", &pid);
    let gc_reason =
        |reason: &str| reason.starts_with("gc_") || (version == "1.19" && reason == "unknown");
    let gc_pause_count =
        pauses(&after, &pid, "count", gc_reason) - pauses(&before, &pid, "count", gc_reason);
    let gc_pause_total =
        pauses(&after, &pid, "sum", gc_reason) - pauses(&before, &pid, "sum", gc_reason);
    let all_pauses =
        pauses(&after, &pid, "count", |_| true) - pauses(&before, &pid, "count", |_| true);
    let durations = value(&after, "golens_go_gc_cycle_duration_seconds_count", &pid)
        - value(&before, "golens_go_gc_cycle_duration_seconds_count", &pid);
    let stop = "golens_go_stw_time_to_stop_seconds";
    let stops = by_reason(&after, stop, &pid, "count", |_| true)
        - by_reason(&before, stop, &pid, "count", |_| true);
    let gc_stopping = by_reason(&after, stop, &pid, "sum", gc_reason)
        - by_reason(&before, stop, &pid, "sum", gc_reason);
    let sysmon = value(&after, "golens_go_sysmon_preemptions_total", &pid);
    println!(
        "Go {version} {build:?}: cycles golens {cycles} runtime {}; GC pauses {gc_pause_count} \
         totalling {:.3} ms (runtime's PauseTotalNs {:.3} ms); all pauses {all_pauses}; \
         sysmon preemptions {sysmon}",
        report.gc_cycles,
        gc_pause_total * 1e3,
        report.pause_total_seconds * 1e3
    );

    assert!(cycles >= CYCLES as f64, "{CYCLES} runtime.GC() calls, {cycles} cycles seen");
    assert_eq!(cycles, report.gc_cycles as f64, "golens and runtime NumGC disagree");
    assert_eq!(durations, cycles, "every cycle has a duration");
    // Two stop-the-world pauses per cycle, and no other (the workload reads
    // its numbers with debug.ReadGCStats, which does not stop the world).
    assert_eq!(all_pauses, 2.0 * cycles, "two stop-the-world pauses per cycle");
    assert_eq!(stops, all_pauses, "every pause has a time-to-stop");
    if version != "1.19" {
        // Go 1.21+ passes the reason: exactly one sweep and one mark termination per cycle.
        for reason in ["gc_sweep_termination", "gc_mark_termination"] {
            let by_reason = pauses(&after, &pid, "count", |r| r == reason)
                - pauses(&before, &pid, "count", |r| r == reason);
            assert_eq!(by_reason, cycles, "{reason} pauses");
        }
    } else {
        assert_eq!(gc_pause_count, all_pauses, "Go 1.19 passes no reason: all are `unknown`");
    }
    // Pause time against the runtime's own PauseTotalNs: golens' pause is
    // the runtime's window (see agent/src/goruntime/mod.rs), probed at
    // instructions the kernel emulates, so the totals agree within 5 %: the
    // trap at each end (~1 us, measured here), against pauses of 30-300 us.
    let runtime_total = report.pause_total_seconds;
    let ratio = gc_pause_total / runtime_total;
    println!("Go {version}: GC pause total golens / runtime = {ratio:.4}");
    assert!(
        (0.95..=1.05).contains(&ratio),
        "golens GC pauses {gc_pause_total} s vs the runtime's {runtime_total} s: ratio {ratio:.3}, \
         not within 5 %"
    );
    // Time to stop against /sched/pauses/stopping/gc:seconds (Go 1.22+). The
    // runtime keeps a histogram, not a sum: its sum lies between the sum of
    // the bucket edges below and above each sample; golens' must lie within
    // 5 % of that range.
    if let Some((lower, upper)) = report.stopping_gc_bounds {
        println!(
            "Go {version}: GC time to stop golens {:.3} ms, runtime {:.3}..{:.3} ms",
            gc_stopping * 1e3,
            lower * 1e3,
            upper * 1e3
        );
        assert!(
            gc_stopping >= 0.95 * lower && gc_stopping <= 1.05 * upper,
            "golens GC time to stop {gc_stopping} s outside the runtime's {lower}..{upper} s"
        );
    }
    // The workload spins a goroutine without yielding for 300 ms: sysmon must preempt it.
    assert!(sysmon >= 5.0, "sysmon preemptions of a 300 ms spinning goroutine: {sysmon}");

    workload.finish();
}

macro_rules! matrix {
    ($($name:ident: $version:literal, $build:expr;)*) => {$(
        #[test]
        #[ignore = "privileged: attaches uprobes; run `cargo xtask test` as root"]
        fn $name() {
            run_matrix_case($version, $build);
        }
    )*};
}

const STRIPPED: GoBuild = GoBuild { stripped: true, pie: false, cgo: false };

/// The fallback for kernels without uprobe_multi links (< 6.6): the same
/// numbers from one perf-event uprobe per point.
#[test]
#[ignore = "privileged: attaches uprobes; run `cargo xtask test` as root"]
fn perf_event_uprobes_measure_the_same() {
    run_case_attached_as("1.27.3", STRIPPED, "perf-event");
}

matrix! {
    go1_19_stripped_static: "1.19", STRIPPED;
    go1_21_stripped_pie: "1.21.13", GoBuild { pie: true, ..STRIPPED };
    go1_23_stripped: "1.23.9", STRIPPED;
    go1_25_stripped_cgo: "1.25.5", GoBuild { cgo: true, ..STRIPPED };
    go1_27_stripped: "1.27.3", STRIPPED;
    go1_27_symtab_pie_cgo: "1.27.3", GoBuild { stripped: false, pie: true, cgo: true };
}

/// Every version of the matrix, GC-heavy for 60 s with every probe attached:
/// each exits 0, as the same binary does unprobed.
#[test]
#[ignore = "privileged: attaches uprobes; run `cargo xtask test` as root"]
fn gc_heavy_targets_survive_60s_of_probing() {
    let versions = ["1.19", "1.21.13", "1.23.9", "1.25.5", "1.27.3"];
    let binaries: Vec<_> = versions
        .iter()
        .map(|v| build_workload_with("gcburn", v, GoBuild { cgo: *v == "1.25.5", ..STRIPPED }))
        .collect();
    let soak = ["-wait=false", "-cycles", "0", "-spin", "0s"];

    // Unprobed reference: the same binaries, briefly.
    for binary in &binaries {
        let status =
            Command::new(binary).args(soak).args(["-duration", "1s"]).output().unwrap().status;
        assert!(status.success(), "{} fails even unprobed: {status}", binary.display());
    }

    let mut workloads: Vec<_> = binaries
        .iter()
        .map(|b| common::start_workload(b, &[&soak[..], &["-duration", "60s"]].concat()))
        .collect();
    let pids: Vec<String> = workloads.iter().map(|w| w.pid().to_string()).collect();
    let pid_args: Vec<&str> = pids.iter().flat_map(|pid| ["--pid", pid.as_str()]).collect();
    let agent = Agent::start(&pid_args);
    let metrics = agent.wait_for(Duration::from_secs(15), |m| {
        pids.iter().all(|pid| {
            m.value("golens_probe_attached", &[("pid", pid), ("probe", "stw_started")]) == Some(1.0)
        })
    });
    for pid in &pids {
        assert!(
            metrics.has_pid("golens_go_gc_cycles_total", pid.parse().unwrap()),
            "pid {pid} not probed"
        );
    }
    for (workload, version) in workloads.iter_mut().zip(versions) {
        let status = workload.0.wait().unwrap();
        assert!(status.success(), "Go {version} died under 60 s of probing: {status}");
    }
}

/// SIGKILL the agent while GC probes are attached and firing: the target keeps
/// running (the kernel removes the uprobes with the agent's fds) and exits 0.
#[test]
#[ignore = "privileged: attaches uprobes; run `cargo xtask test` as root"]
fn target_keeps_running_after_agent_sigkill() {
    let binary = build_workload_with("gcburn", "1.27.3", STRIPPED);
    let mut workload = common::start_workload(
        &binary,
        &["-wait=false", "-cycles", "0", "-spin", "0s", "-duration", "6s"],
    );
    let pid = workload.pid();
    let agent = Agent::start(&["--pid", &pid.to_string()]);
    agent.wait_for(Duration::from_secs(10), |m| {
        m.value("golens_go_gc_cycles_total", &[("pid", &pid.to_string())]).unwrap_or(0.0) > 0.0
    });
    let mut child = agent.child;
    child.0.kill().unwrap(); // SIGKILL: no cleanup code runs
    child.0.wait().unwrap();
    let status = workload.0.wait().unwrap();
    assert!(status.success(), "target after agent SIGKILL: {status}");
}

/// `golens list --agent` shows what a running agent attached, per process.
#[test]
#[ignore = "privileged: attaches uprobes; run `cargo xtask test` as root"]
fn list_reports_what_the_agent_attached() {
    let binary = build_workload_with("gcburn", "1.23.9", GoBuild { pie: true, ..STRIPPED });
    let workload = GcWorkload::start(&binary, &[]);
    let pid = workload.pid.clone();
    let agent = Agent::start(&["--pid", &pid]);
    let output = common::golens().args(["list", "--agent", &agent.base_url]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    let row = text.lines().find(|l| l.split_whitespace().next() == Some(pid.as_str()));
    let columns: Vec<&str> = row.expect("a row for the watched pid").split_whitespace().collect();
    assert_eq!(&columns[2..], ["go1.23.9", "yes", "yes", "6/6"], "{text}");
    assert!(text.contains("PROBES (attached)"), "{text}");
    assert!(text.contains("attach mode: uprobe_multi links, one per binary"), "{text}");
}

/// A binary deleted on disk after it started (a redeploy) is read and probed
/// through /proc/PID/exe.
#[test]
#[ignore = "privileged: attaches uprobes; run `cargo xtask test` as root"]
fn deleted_binary_is_probed_through_proc_pid_exe() {
    let built = build_workload_with("gcburn", "1.25.5", STRIPPED);
    let copy = built.with_file_name("gcburn-deleted");
    std::fs::copy(&built, &copy).unwrap();
    let mut workload = GcWorkload::start(&copy, &["-cycles", "5", "-spin", "0s"]);
    std::fs::remove_file(&copy).unwrap();
    let pid = workload.pid.clone();
    let agent = Agent::start(&["--pid", &pid]);
    let info = agent.metrics();
    let exe = &info.find("golens_process_info", &[("pid", &pid)]).expect("tracked").labels["exe"];
    assert!(exe.ends_with("(deleted)"), "exe label of a deleted binary: {exe}");

    let report = workload.run_cycles();
    agent.catch_up();
    let cycles = value(&agent.metrics(), "golens_go_gc_cycles_total", &pid);
    assert_eq!(cycles, report.gc_cycles as f64, "GC cycles of the deleted binary");
    workload.finish();
}

/// A process whose binary lives in another mount namespace (a container's
/// filesystem): the path in /proc/PID/exe does not exist for the agent, the
/// file is still read and probed through /proc/PID/exe.
#[test]
#[ignore = "privileged: needs root for unshare and uprobes; run `cargo xtask test` as root"]
fn binary_in_another_mount_namespace_is_probed() {
    let built = build_workload_with("gcburn", "1.23.9", STRIPPED);
    let dir = tempdir_name("golens-mntns");
    std::fs::create_dir_all(&dir).unwrap();
    // Inside a private mount namespace: a tmpfs over `dir`, the binary copied into it.
    let script = format!(
        "mount -t tmpfs golens {dir} && cp {built} {dir}/gcburn-mntns && exec {dir}/gcburn-mntns -cycles 5 -spin 0s",
        dir = dir.display(),
        built = built.display()
    );
    let unshare = std::path::Path::new("/usr/bin/unshare");
    let mut workload =
        GcWorkload::start(unshare, &["--mount", "--propagation", "private", "sh", "-c", &script]);
    let pid = workload.pid.clone(); // sh exec'd the workload: same pid
    assert!(!dir.join("gcburn-mntns").exists(), "the binary must not be visible here");
    let agent = Agent::start(&["--pid", &pid]);
    let report = workload.run_cycles();
    agent.catch_up();
    let cycles = value(&agent.metrics(), "golens_go_gc_cycles_total", &pid);
    assert_eq!(cycles, report.gc_cycles as f64, "GC cycles of the namespaced binary");
    workload.finish();
    let _ = std::fs::remove_dir(&dir);
}

fn tempdir_name(prefix: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()))
}

/// A binary whose build info is gone (here removed with objcopy): found through
/// `.gopclntab` alone, version `unknown`, every probe attached by symbol, and
/// no argument decoding: stop-the-world reasons are `unknown`, never a guess.
#[test]
#[ignore = "privileged: attaches uprobes; run `cargo xtask test` as root"]
fn binary_without_build_info_gets_probes_but_no_reason_decoding() {
    let built = build_workload_with("gcburn", "1.27.3", STRIPPED);
    let bare = built.with_file_name("gcburn-nobuildinfo");
    let status = Command::new("objcopy")
        .args(["--remove-section", ".go.buildinfo"])
        .arg(&built)
        .arg(&bare)
        .status()
        .expect("objcopy (binutils)");
    assert!(status.success());
    let mut workload = GcWorkload::start(&bare, &["-cycles", "10", "-spin", "0s"]);
    let pid = workload.pid.clone();
    let agent = Agent::start(&["--pid", &pid]);
    let metrics = agent.metrics();
    let info = metrics.find("golens_process_info", &[("pid", &pid)]).expect("tracked");
    assert_eq!(info.labels["go_version"], "unknown");
    for probe in PROBES {
        assert_eq!(
            metrics.value("golens_probe_attached", &[("pid", &pid), ("probe", probe)]),
            Some(1.0),
            "{probe}"
        );
    }
    // No GOMAXPROCS: stripped, so runtime.gomaxprocs is only found by decoding,
    // which needs a known version; nor from /proc: no version, no default rule
    // (and no GOMAXPROCS variable). Absent, never guessed.
    assert!(metrics.find("golens_go_gomaxprocs", &[("pid", &pid)]).is_none());

    let report = workload.run_cycles();
    agent.catch_up();
    let after = agent.metrics();
    assert_eq!(value(&after, "golens_go_gc_cycles_total", &pid), report.gc_cycles as f64);
    let known_reasons = pauses(&after, &pid, "count", |reason| reason != "unknown");
    assert_eq!(known_reasons, 0.0, "an unknown version must not decode stwReason");
    assert!(pauses(&after, &pid, "count", |_| true) >= 2.0 * report.gc_cycles as f64);
    workload.finish();
}

/// Go processes that come and go leave nothing behind in the agent: every
/// uprobe link (a perf event fd each) is closed after its process exits, and
/// detaching (slow: the kernel waits a grace period per link) never holds up
/// the discovery of the next processes.
#[test]
#[ignore = "privileged: attaches uprobes; run `cargo xtask test` as root"]
fn processes_coming_and_going_are_all_probed_and_leak_no_fds() {
    let binary = build_workload_with("gcburn", "1.27.3", STRIPPED);
    let comm: String = binary.file_name().unwrap().to_string_lossy().chars().take(15).collect();
    let agent = Agent::start(&["--comm", &comm]);
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", agent.child.pid())).unwrap().count();
    let before = fds();

    let mut probed = 0;
    for _round in 0..3 {
        let batch: Vec<_> = (0..4)
            .map(|_| {
                let args = ["-wait=false", "-cycles", "0", "-spin", "0s", "-duration", "1500ms"];
                common::start_workload(&binary, &args)
            })
            .collect();
        let pids: Vec<u32> = batch.iter().map(|w| w.pid()).collect();
        let metrics = agent.wait_for(Duration::from_secs(10), |m| {
            pids.iter().all(|pid| m.has_pid("golens_go_gc_cycles_total", *pid))
        });
        probed +=
            pids.iter().filter(|pid| metrics.has_pid("golens_go_gc_cycles_total", **pid)).count();
        for mut workload in batch {
            assert!(workload.0.wait().unwrap().success());
        }
    }
    assert_eq!(probed, 12, "every short-lived Go process, in every round, was probed");
    let metrics = agent.wait_for(Duration::from_secs(10), |m| {
        m.value("golens_agent_tracked_processes", &[]) == Some(0.0)
    });
    assert_eq!(metrics.value("golens_agent_tracked_processes", &[]), Some(0.0));
    // Links are detached in the background (~0.1 s each): wait for them, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fds() > before + 1 && std::time::Instant::now() < deadline {
        sleep(Duration::from_millis(200));
    }
    let after = fds();
    // One HTTP connection may still be open from the last scrape.
    assert!(after <= before + 1, "agent fds {before} -> {after}: probe links leaked");
}

/// `--probes` switches families off: their metrics are absent (never 0),
/// the other family's are there.
#[test]
#[ignore = "privileged: attaches uprobes; run `cargo xtask test` as root"]
fn probe_families_switch_off_and_their_metrics_are_absent() {
    let binary = build_workload_with("gcburn", "1.27.3", STRIPPED);
    let workload = GcWorkload::start(&binary, &[]);
    let pid = workload.pid.clone();
    for (families, present, absent) in [
        ("sched", "golens_sched_runqueue_latency_seconds_count", "golens_go_gc_cycles_total"),
        ("goruntime", "golens_go_gc_cycles_total", "golens_sched_runqueue_latency_seconds_count"),
    ] {
        let agent = Agent::start(&["--pid", &pid, "--probes", families]);
        let metrics =
            agent.wait_for(Duration::from_secs(10), |m| m.has_pid(present, pid.parse().unwrap()));
        assert!(
            metrics.value(present, &[("pid", &pid)]).is_some(),
            "--probes {families}: {present}"
        );
        assert!(metrics.value(absent, &[("pid", &pid)]).is_none(), "--probes {families}: {absent}");
        if families == "sched" {
            assert_eq!(
                metrics
                    .value("golens_probe_attached", &[("pid", &pid), ("probe", "gc_cycle_start")]),
                Some(0.0)
            );
        }
    }
    workload.finish();
}

/// A process of tests/workloads/pressure in `-mode gomaxprocs`, copied under
/// its own comm: each line sent is a runtime.GOMAXPROCS(N) call.
struct Gomaxprocs {
    child: common::ChildGuard,
    stdout: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    pid: String,
}

impl Gomaxprocs {
    /// Starts `command` (the workload, or a launcher that execs it) and
    /// waits for its "ready".
    fn start(command: &mut Command) -> Gomaxprocs {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(stdout.next().unwrap().unwrap(), "ready");
        let pid = child.id().to_string();
        Gomaxprocs { child: common::ChildGuard(child), stdout, pid }
    }

    /// Sends one line; returns what the workload printed ("gomaxprocs N was M numgc G").
    fn say(&mut self, line: &str) -> String {
        let stdin = self.child.0.stdin.as_mut().expect("piped stdin");
        std::io::Write::write_all(stdin, format!("{line}\n").as_bytes()).unwrap();
        self.stdout.next().expect("a result line").expect("result")
    }
}

/// `golens_go_gomaxprocs` of a pid: (value, source) of its one series.
fn gomaxprocs_of(metrics: &Metrics, pid: &str) -> Option<(f64, String)> {
    let sample = metrics.find("golens_go_gomaxprocs", &[("pid", pid)])?;
    let series = metrics
        .samples
        .iter()
        .filter(|s| s.name == "golens_go_gomaxprocs" && s.labels["pid"] == pid)
        .count();
    assert_eq!(series, 1, "one GOMAXPROCS series per process: {}", metrics.text);
    Some((sample.value, sample.labels["source"].clone()))
}

/// The CPUs `pid` may run on (its Cpus_allowed_list).
fn cpus_allowed(pid: &str) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|list| {
            list.trim()
                .split(',')
                .map(|range| match range.split_once('-') {
                    Some((a, b)) => b.parse::<u32>().unwrap() - a.parse::<u32>().unwrap() + 1,
                    None => 1,
                })
                .sum::<u32>()
        })
        .unwrap()
}

/// The pressure workload built with `version`/`build`, copied to `dir/COMM`
/// (one comm for every build, each its own inode).
fn gomaxprocs_workload(version: &str, build: GoBuild, dir: &str) -> std::path::PathBuf {
    const COMM: &str = "gl-gomaxprocs";
    let built = build_workload_with("pressure", version, build);
    let dir = built.with_file_name(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join(COMM);
    let _ = std::fs::remove_file(&binary);
    std::fs::copy(&built, &binary).unwrap();
    binary
}

/// GOMAXPROCS read from the runtime's own `runtime.gomaxprocs` in the
/// process's memory at each collection (source `observed`; no probe, no
/// trap in the target), on a binary with `.symtab` (Go 1.27, address from
/// the symbol) and a stripped PIE one (Go 1.21, address decoded from the
/// code, plus the load bias):
/// - a process found already running, which called runtime.GOMAXPROCS(N)
///   before golens started, reads N from the first collection (a rule from
///   /proc would say its CPU count);
/// - a process started with GOMAXPROCS=5 reads 5, then 3 and 2 as it calls
///   runtime.GOMAXPROCS, never the environment's 5 again.
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn gomaxprocs_is_read_from_the_runtime_at_every_change() {
    let builds = [
        ("1.27.3", GoBuild::default(), "gomaxprocs-symtab"),
        ("1.21.13", GoBuild { stripped: true, pie: true, cgo: false }, "gomaxprocs-decoded"),
    ];
    let binaries: Vec<_> = builds
        .iter()
        .map(|&(version, build, dir)| gomaxprocs_workload(version, build, dir))
        .collect();
    let args =
        |count: u32| ["-mode".to_string(), "gomaxprocs".into(), "-count".into(), count.to_string()];

    // Started and changed before the agent: the change is long past when golens
    // starts. Not the default rule's value: one more than the CPUs it may use
    // (inherited from this process).
    let count = cpus_allowed("self") + 1;
    let late: Vec<Gomaxprocs> = binaries
        .iter()
        .map(|binary| {
            let mut command = Command::new(binary);
            let mut process = Gomaxprocs::start(command.args(args(count)).env_remove("GOMAXPROCS"));
            let said = process.say("go");
            assert!(said.starts_with(&format!("gomaxprocs {count} ")), "{said}");
            process
        })
        .collect();
    let agent = Agent::start(&["--comm", "gl-gomaxprocs"]);
    let metrics = agent.metrics();
    for (process, (version, build, _)) in late.iter().zip(&builds) {
        assert_eq!(
            gomaxprocs_of(&metrics, &process.pid),
            Some((f64::from(count), "observed".to_string())),
            "Go {version} {build:?}: found running, the value it set before golens started"
        );
    }

    for (binary, (version, build, _)) in binaries.iter().zip(&builds) {
        let mut early =
            Gomaxprocs::start(Command::new(binary).args(args(3)).env("GOMAXPROCS", "5"));
        let pid = early.pid.clone();
        // (A collection between its exec and its schedinit reads 0: the
        // environment's 5 then, until the next one.)
        let metrics = agent.wait_for(Duration::from_secs(10), |m| {
            gomaxprocs_of(m, &pid).is_some_and(|(_, source)| source == "observed")
        });
        assert_eq!(
            gomaxprocs_of(&metrics, &pid),
            Some((5.0, "observed".to_string())),
            "Go {version} {build:?}: GOMAXPROCS=5 as the runtime applied it"
        );
        for (line, expected) in [("go", 3.0), ("2", 2.0)] {
            let said = early.say(line);
            assert!(said.starts_with(&format!("gomaxprocs {expected} ")), "{said}");
            let metrics = agent.wait_for(Duration::from_secs(10), |m| {
                gomaxprocs_of(m, &pid).is_some_and(|(value, _)| value == expected)
            });
            println!("Go {version} {build:?}: {said}: golens {:?}", gomaxprocs_of(&metrics, &pid));
            assert_eq!(
                gomaxprocs_of(&metrics, &pid),
                Some((expected, "observed".to_string())),
                "Go {version} {build:?}: runtime.GOMAXPROCS({expected}) over GOMAXPROCS=5"
            );
        }
    }
    drop(late);
}

/// Where golens cannot read the process's memory, GOMAXPROCS comes from
/// /proc with the source that says how: `env` for a process started with
/// GOMAXPROCS=4, `go_default_cpus` (its CPU count) for one without, even
/// though both set another value with runtime.GOMAXPROCS, which only the
/// memory read could see. This VM has no Yama LSM, the usual cause (ptrace
/// attach denied without CAP_SYS_PTRACE, while /proc/PID/environ stays
/// readable), so golens runs in a mount namespace where the targets'
/// /proc/PID/mem are masked with /dev/null, as container runtimes mask
/// /proc paths. The same processes read `observed` from an agent outside.
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn gomaxprocs_falls_back_to_proc_when_memory_cannot_be_read() {
    let binary = gomaxprocs_workload("1.27.3", STRIPPED, "gomaxprocs-fallback");
    let args = ["-mode", "gomaxprocs", "-count", "3"];
    let mut with_env = Gomaxprocs::start(Command::new(&binary).args(args).env("GOMAXPROCS", "4"));
    let mut without = Gomaxprocs::start(Command::new(&binary).args(args).env_remove("GOMAXPROCS"));
    for process in [&mut with_env, &mut without] {
        let said = process.say("go");
        assert!(said.starts_with("gomaxprocs 3 "), "{said}");
    }
    let cpus = f64::from(cpus_allowed(&without.pid));
    assert_ne!(cpus, 3.0, "the CPU count must differ from the value set");
    let pids = [with_env.pid.as_str(), without.pid.as_str()];

    let masked = Agent::start_as(|listen| {
        let masks: Vec<String> =
            pids.iter().map(|pid| format!("mount --bind /dev/null /proc/{pid}/mem")).collect();
        let script = format!(
            "{} && exec \"$0\" run --pid {} --pid {} --listen {listen} --interval 250ms",
            masks.join(" && "),
            pids[0],
            pids[1]
        );
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .arg(env!("CARGO_BIN_EXE_golens"));
        command
    });
    let metrics = masked.wait_for(Duration::from_secs(10), |m| {
        pids.iter().all(|pid| gomaxprocs_of(m, pid).is_some())
    });
    assert_eq!(
        gomaxprocs_of(&metrics, pids[0]),
        Some((4.0, "env".to_string())),
        "{}",
        metrics.text
    );
    assert_eq!(gomaxprocs_of(&metrics, pids[1]), Some((cpus, "go_default_cpus".to_string())));
    drop(masked);

    let agent = Agent::start(&["--pid", pids[0], "--pid", pids[1]]);
    let metrics = agent.metrics();
    for pid in pids {
        assert_eq!(gomaxprocs_of(&metrics, pid), Some((3.0, "observed".to_string())), "{pid}");
    }
}

/// The opt-in gonetpoll family: runtime.netpoll calls of a Go HTTP server
/// serving a fixed number of requests, by mode; absent (not 0) when the
/// family is off.
#[test]
#[ignore = "privileged: attaches uprobes; run `cargo xtask test` as root"]
fn netpoll_calls_by_mode_with_gonetpoll_and_absent_without() {
    const REQUESTS: u32 = 200;
    let binary = build_workload_with("demo", "1.27.3", STRIPPED);
    let listen = format!("127.0.0.1:{}", common::free_port());
    let demo = common::start_workload(&binary, &["-listen", &listen]);
    let pid = demo.pid().to_string();
    let calls = |m: &Metrics, mode: &str| {
        m.value("golens_go_netpoll_calls_total", &[("pid", &pid), ("mode", mode)])
    };

    let agent = Agent::start(&["--pid", &pid, "--probes", "goruntime,gonetpoll"]);
    let before = agent.wait_for(Duration::from_secs(10), |m| calls(m, "blocking").is_some());
    assert_eq!(
        before.value("golens_probe_attached", &[("pid", &pid), ("probe", "netpoll")]),
        Some(1.0),
        "{}",
        before.text
    );
    for _ in 0..REQUESTS {
        let (code, _) = common::get(&format!("http://{listen}/health")).expect("the demo answers");
        assert_eq!(code, 200);
    }
    agent.catch_up();
    let after = agent.metrics();
    let delta = |mode: &str| calls(&after, mode).unwrap_or(0.0) - calls(&before, mode).unwrap();
    let (blocking, nonblocking, timed) = (delta("blocking"), delta("nonblocking"), delta("timed"));
    println!(
        "{REQUESTS} requests: runtime.netpoll calls blocking {blocking}, nonblocking \
         {nonblocking}, timed {timed} ({:.2} per request)",
        (blocking + nonblocking + timed) / f64::from(REQUESTS)
    );
    assert!(nonblocking > 0.0, "no non-blocking poll seen");
    assert!(blocking > 0.0, "no blocking poll seen: the idle server waits in netpoll(-1)");
    drop(agent);

    // Off by default: the series are absent, the runtime family is there.
    let agent = Agent::start(&["--pid", &pid]);
    let metrics = agent.wait_for(Duration::from_secs(10), |m| {
        m.value("golens_probe_attached", &[("pid", &pid), ("probe", "gc_cycle_start")]) == Some(1.0)
    });
    assert_eq!(
        metrics.value("golens_probe_attached", &[("pid", &pid), ("probe", "gc_cycle_start")]),
        Some(1.0)
    );
    assert!(metrics.find("golens_go_netpoll_calls_total", &[("pid", &pid)]).is_none());
    assert!(metrics
        .find("golens_probe_attached", &[("pid", &pid), ("probe", "netpoll")])
        .is_none());
}
