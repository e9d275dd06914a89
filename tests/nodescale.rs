//! Node scale: probes per binary, tracking from exec, pid namespaces,
//! stopping, churn. Privileged: run by `cargo xtask test` (as root).
//!
//! Timings (start, stop) are measured by `cargo xtask bench scale`, not
//! asserted here: every wait below has a generous deadline that only
//! catches a hang, and says what it waited for.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use common::{build_workload_with, free_port, get, Agent, ChildGuard, GoBuild, Metrics};

const GO: &str = "1.27.3";

fn gcburn() -> PathBuf {
    build_workload_with("gcburn", GO, GoBuild { stripped: true, ..GoBuild::default() })
}

/// `binary` copied into `count` directories under the test's temp dir, all
/// with one file name (one comm), each a distinct inode: distinct binaries.
fn copies(binary: &Path, name: &str, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|i| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nodescale/{name}-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            std::fs::copy(binary, &path).unwrap();
            path
        })
        .collect()
}

fn value(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics.value(name, labels).unwrap_or(0.0)
}

fn tracked_total(metrics: &Metrics) -> f64 {
    metrics
        .samples
        .iter()
        .filter(|s| s.name == "golens_agent_processes_tracked_total")
        .map(|s| s.value)
        .sum()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Waits for `child` to exit, at most `deadline`; kills it after that.
fn wait_exit(
    child: &mut std::process::Child,
    deadline: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("polling") {
            return status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("{what}: not exited within {deadline:?}");
        }
        sleep(Duration::from_millis(20));
    }
}

fn sigterm(pid: u32) {
    // SAFETY: kill(2) with a pid we started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
}

/// A process of a binary golens already probes is tracked by the kernel at
/// its exec: a 150 ms run that forces GC cycles from its first millisecond
/// shows every one of them.
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn short_run_of_a_known_binary_is_measured_from_its_exec() {
    let (binary, first, agent, attached) = known_binary("gl-shortrun");
    let before = tracked_total(&attached);

    // The restart: GC cycles from its first instruction for 150 ms, then it holds.
    let (_short, runtime_cycles, seen, metrics) = run_and_count(
        &agent,
        &binary,
        &["-wait=false", "-cycles", "0", "-duration", "150ms", "-spin", "0", "-hold"],
    );
    println!("150 ms run: runtime NumGC {runtime_cycles}, golens {seen}");
    assert!(runtime_cycles >= 20, "the workload should force >= 20 cycles in 150 ms");
    assert_eq!(seen, runtime_cycles as f64, "every cycle since exec is seen");
    assert_eq!(
        value(&metrics, "golens_agent_processes_tracked_total", &[("how", "kernel_exec")]),
        1.0,
        "tracked by the exec handler"
    );
    assert_eq!(tracked_total(&metrics) - before, 1.0);
    drop(first);
}

/// A known binary started through a launcher that execs it (`sh -c 'exec
/// app'`, `env X=1 app`: two execs, one pid) is measured from the app's exec
/// like one started directly: every GC cycle since its exec is counted, and
/// it is counted as tracked by the exec handler. (The launcher's own exec
/// record, read when /proc/PID/exe already names the app, used to make
/// userspace track it again with zeroed stats, losing everything since the
/// exec, and count it as `exec`.)
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn known_binary_started_through_a_launcher_is_measured_from_its_exec() {
    let (binary, first, agent, _) = known_binary("gl-launched");

    // 30 forced cycles from its first millisecond (a count, not a duration:
    // a loaded machine makes no fewer), then it holds.
    let run = format!("{} -wait=false -cycles 30 -spin 0 -hold", binary.display());
    let launchers: [(&str, Vec<String>); 2] = [
        ("sh -c 'exec …'", vec!["sh".into(), "-c".into(), format!("exec {run}")]),
        (
            "env X=1 …",
            ["env", "GOLENS_LAUNCHED=1"]
                .into_iter()
                .map(String::from)
                .chain(run.split(' ').map(String::from))
                .collect(),
        ),
    ];
    for (launcher, argv) in launchers {
        let before = agent.metrics();
        let kernel_exec_before =
            value(&before, "golens_agent_processes_tracked_total", &[("how", "kernel_exec")]);
        let exec_before =
            value(&before, "golens_agent_processes_tracked_total", &[("how", "exec")]);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (short, runtime_cycles, seen, metrics) =
            run_and_count(&agent, Path::new(argv[0]), &argv[1..]);
        let tracked_as =
            |how: &str| value(&metrics, "golens_agent_processes_tracked_total", &[("how", how)]);
        println!(
            "{launcher}: runtime NumGC {runtime_cycles}, golens {seen}; tracked as kernel_exec \
             +{}, exec +{}",
            tracked_as("kernel_exec") - kernel_exec_before,
            tracked_as("exec") - exec_before
        );
        assert!(runtime_cycles >= 30, "{launcher}: 30 forced cycles, NumGC {runtime_cycles}");
        assert_eq!(seen, runtime_cycles as f64, "{launcher}: every cycle since exec is seen");
        assert_eq!(tracked_as("kernel_exec") - kernel_exec_before, 1.0, "{launcher}");
        assert_eq!(tracked_as("exec") - exec_before, 0.0, "{launcher}: tracked once, from exec");
        drop(short);
    }
    // The launchers' binaries did not become known (exec-tracked) binaries.
    let known = known_binary_inodes(agent.child.pid());
    assert!(!known.is_empty(), "gcburn's inode is known");
    for launcher in ["/bin/sh", "/usr/bin/env"] {
        let inode = std::fs::metadata(launcher).unwrap().ino();
        assert!(!known.contains(&inode), "{launcher} is in known_binaries: {known:?}");
    }
    drop(first);
}

/// Runs `program ARGS` (gcburn, or a launcher that execs it) until it prints its report, and
/// waits until `agent` has counted at least the GC cycles the runtime reported: (the process,
/// holding; the runtime's NumGC; golens' count; the metrics it was read from).
fn run_and_count(
    agent: &Agent,
    program: &Path,
    args: &[&str],
) -> (common::ChildGuard, u64, f64, common::Metrics) {
    let (process, mut stdout) = common::start_interactive(program, args);
    let report: serde_json::Value =
        serde_json::from_str(&stdout.next().expect("report line").expect("report")).unwrap();
    let runtime_cycles = report["num_gc"].as_u64().expect("num_gc");
    let pid = process.pid().to_string();
    let metrics = agent.wait_for(Duration::from_secs(10), |m| {
        value(m, "golens_go_gc_cycles_total", &[("pid", &pid)]) >= runtime_cycles as f64
    });
    let seen = value(&metrics, "golens_go_gc_cycles_total", &[("pid", &pid)]);
    (process, runtime_cycles, seen, metrics)
}

/// A copy of gcburn named `comm`, made known by a first process that runs it (its probes
/// attached, its inode in known_binaries), and an agent watching `comm`: (the binary, the
/// first process, the agent, its metrics once the first process is probed).
fn known_binary(comm: &str) -> (PathBuf, common::ChildGuard, Agent, common::Metrics) {
    let binary = copies(&gcburn(), comm, 1).remove(0);
    let first = common::start_workload(&binary, &["-cycles", "1"]);
    let agent = Agent::start(&["--comm", comm]);
    let attached = agent.wait_for(Duration::from_secs(10), |m| {
        m.value(
            "golens_probe_attached",
            &[("pid", &first.pid().to_string()), ("probe", "gc_cycle_start")],
        ) == Some(1.0)
    });
    assert!(attached.has_pid("golens_go_gc_cycles_total", first.pid()), "first process not probed");
    (binary, first, agent, attached)
}

/// The inodes in the known_binaries map of the golens process `agent` (the
/// maps behind its fds: not another golens on the host).
fn known_binary_inodes(agent: u32) -> Vec<u64> {
    use aya::maps::{HashMap, Map, MapData, MapInfo};
    let fdinfo = format!("/proc/{agent}/fdinfo");
    let map_ids = std::fs::read_dir(&fdinfo).unwrap().filter_map(|entry| {
        let text = std::fs::read_to_string(entry.ok()?.path()).ok()?;
        text.lines().find_map(|l| l.strip_prefix("map_id:")).and_then(|id| id.trim().parse().ok())
    });
    for id in map_ids {
        let Ok(info) = MapInfo::from_id(id) else { continue };
        if info.name_as_str() != Some("known_binaries") {
            continue;
        }
        let map = Map::HashMap(MapData::from_id(id).expect("known_binaries opens"));
        let known: HashMap<MapData, golens_ebpf::BinaryKey, u32> = map.try_into().unwrap();
        return known.keys().map(|key| key.expect("a key").ino).collect();
    }
    panic!("golens {agent} holds no known_binaries map");
}

/// 100 processes of 10 binaries: 10 binaries' worth of links (not 100
/// processes' worth); SIGTERM detaches everything and exits 0; SIGKILL
/// leaves the targets running.
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn hundred_processes_of_ten_binaries_cost_ten_binaries_and_stop_cleanly() {
    let binaries = copies(&gcburn(), "gl-hundred", 10);
    let mut targets = Vec::new();
    for i in 0..100 {
        targets.push(common::start_workload(&binaries[i % 10], &["-cycles", "1"]));
    }
    for round in ["sigterm", "sigkill"] {
        let started = Instant::now();
        let mut agent = Agent::start(&["--comm", "gl-hundred"]);
        let metrics = agent.wait_for(Duration::from_secs(60), |m| {
            value(m, "golens_agent_tracked_processes", &[]) >= 100.0
        });
        assert_eq!(value(&metrics, "golens_agent_tracked_processes", &[]), 100.0, "{round}");
        assert_eq!(value(&metrics, "golens_agent_probed_binaries", &[]), 10.0, "{round}");
        let links = value(&metrics, "golens_agent_uprobe_links", &[]);
        let mode = metrics
            .find("golens_agent_attach_mode", &[])
            .and_then(|s| s.labels.get("mode").cloned())
            .unwrap_or_default();
        if mode == "uprobe_multi" {
            // One link per binary, whatever the number of its processes.
            assert_eq!(links, 10.0, "links grow with binaries, not processes");
        }
        println!(
            "{round}: 100 processes tracked in {:?}, {links} links ({mode})",
            started.elapsed()
        );
        let pid = agent.child.pid();
        let stopping = Instant::now();
        if round == "sigterm" {
            sigterm(pid);
            let status =
                wait_exit(&mut agent.child.0, Duration::from_secs(30), "golens after SIGTERM");
            assert!(status.success(), "golens exited with {status} after SIGTERM");
        } else {
            agent.child.0.kill().unwrap();
            wait_exit(&mut agent.child.0, Duration::from_secs(30), "golens after SIGKILL");
        }
        println!("{round}: golens gone after {:?}", stopping.elapsed());
    }
    for target in &mut targets {
        assert!(target.0.try_wait().unwrap().is_none(), "a target died with the agent");
    }
}

/// 3-5 Go processes a second, each living 1 s, for 60 s: every one is
/// tracked, and the agent's fds and memory stay flat.
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn churn_is_tracked_and_leaks_nothing() {
    let binary = copies(&gcburn(), "gl-churn", 1).remove(0);
    let agent = Agent::start(&["--comm", "gl-churn"]);
    let agent_pid = agent.child.pid();
    let mut running: Vec<(Instant, std::process::Child)> = Vec::new();
    let mut started = 0u32;
    let mut baseline = None;
    let begin = Instant::now();
    let mut next = begin;
    let mut tick = 0u64;
    while begin.elapsed() < Duration::from_secs(60) {
        // 3, 4, 5, 3, 4, 5 ... per second.
        let per_second = 3 + (tick % 3) as u32;
        for _ in 0..per_second {
            let child = Command::new(&binary)
                .args(["-wait=false", "-cycles", "0", "-duration", "1s", "-spin", "0"])
                .stdout(Stdio::null())
                .spawn()
                .expect("starting a churn process");
            running.push((Instant::now(), child));
            started += 1;
        }
        tick += 1;
        next += Duration::from_secs(1);
        running.retain_mut(|(_, child)| match child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "a churn process exited with {status}");
                false
            }
            None => true,
        });
        if baseline.is_none() && begin.elapsed() >= Duration::from_secs(10) {
            baseline = Some((fd_count(agent_pid), rss_kib(agent_pid)));
        }
        sleep(next.saturating_duration_since(Instant::now()));
    }
    for (_, child) in &mut running {
        let status = wait_exit(child, Duration::from_secs(30), "a churn process");
        assert!(status.success(), "a churn process exited with {status}");
    }
    let metrics = agent.wait_for(Duration::from_secs(10), |m| tracked_total(m) >= started as f64);
    let tracked = tracked_total(&metrics);
    let (fds_then, rss_then) = baseline.expect("baseline taken at 10 s");
    // Let the agent's collection see the last exits.
    let settled = agent.wait_for(Duration::from_secs(10), |m| {
        value(m, "golens_agent_tracked_processes", &[]) == 0.0
    });
    let (fds_now, rss_now) = (fd_count(agent_pid), rss_kib(agent_pid));
    println!(
        "churn: {started} processes started, {tracked} tracked; agent fds {fds_then} -> {fds_now}, \
         RSS {rss_then} -> {rss_now} KiB"
    );
    assert_eq!(tracked, started as f64, "every churn process is tracked");
    assert_eq!(value(&settled, "golens_agent_tracked_processes", &[]), 0.0);
    assert!(fds_now <= fds_then + 4, "agent fds grew under churn: {fds_then} -> {fds_now}");
    assert!(
        rss_now <= rss_then + 8 * 1024,
        "agent RSS grew under churn: {rss_then} -> {rss_now} KiB"
    );
}

/// golens and its target share a pid namespace of their own (the sidecar
/// shape), the target being pid 1 there: golens reports it as pid 1 with
/// exactly what a host agent reports for its host pid, and both match the
/// runtime's own count.
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn pid_namespace_sidecar_agrees_with_the_host() {
    let binary = copies(&gcburn(), "gl-pidns", 1).remove(0);
    let port = free_port();
    let golens = env!("CARGO_BIN_EXE_golens");
    let script = format!(
        "{golens} run --listen 127.0.0.1:{port} --interval 250ms --comm gl-pidns \
         >{log} 2>&1 & exec {target} -cycles 50",
        log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nodescale-pidns.log").display(),
        target = binary.display(),
    );
    let mut child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdin = child.stdin.take().unwrap();
    let _guard = ChildGuard(child);
    assert_eq!(stdout.next().unwrap().unwrap(), "ready");
    // The target's pid on the host: the process running the copied binary.
    let host_pid = common::pids_of(&binary).into_iter().next().expect("target on the host");
    let host_agent = Agent::start(&["--pid", &host_pid.to_string()]);
    let inner = format!("http://127.0.0.1:{port}");
    let inner_metrics = || get(&format!("{inner}/metrics")).map(|(_, body)| Metrics::parse(&body));
    let deadline = Instant::now() + Duration::from_secs(30);
    let attached = |m: &Metrics, pid: &str| {
        m.value("golens_probe_attached", &[("pid", pid), ("probe", "gc_cycle_start")]) == Some(1.0)
    };
    while !inner_metrics().is_some_and(|m| attached(&m, "1")) {
        assert!(Instant::now() < deadline, "golens in the namespace never reported pid 1 attached");
        sleep(Duration::from_millis(100));
    }
    let host_pid_label = host_pid.to_string();
    host_agent.wait_for(Duration::from_secs(10), |m| attached(m, &host_pid_label));
    let runq = |m: &Metrics, pid: &str| {
        value(m, "golens_sched_runqueue_latency_seconds_count", &[("pid", pid)])
    };
    let cycles = |m: &Metrics, pid: &str| value(m, "golens_go_gc_cycles_total", &[("pid", pid)]);
    let (inner_before, host_before) = (inner_metrics().unwrap(), host_agent.metrics());

    stdin.write_all(b"go\n").unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&stdout.next().unwrap().unwrap()).expect("report");
    let runtime_cycles = report["gc_cycles"].as_f64().unwrap();
    sleep(Duration::from_millis(800)); // three collections of both agents
    let (inner_after, host_after) = (inner_metrics().unwrap(), host_agent.metrics());
    let inner_cycles = cycles(&inner_after, "1") - cycles(&inner_before, "1");
    let host_cycles = cycles(&host_after, &host_pid_label) - cycles(&host_before, &host_pid_label);
    let inner_runq = runq(&inner_after, "1") - runq(&inner_before, "1");
    let host_runq = runq(&host_after, &host_pid_label) - runq(&host_before, &host_pid_label);
    println!(
        "pid namespace: runtime {runtime_cycles} cycles; inside (pid 1) {inner_cycles} cycles, \
         {inner_runq} run-queue samples; host (pid {host_pid}) {host_cycles} cycles, {host_runq} samples"
    );
    assert_eq!(inner_cycles, runtime_cycles, "cycles seen from inside the namespace");
    assert_eq!(host_cycles, runtime_cycles, "cycles seen from the host");
    assert!(host_runq > 100.0, "the burst makes run-queue samples: {host_runq}");
    // Same events, scraped a few ms apart after the burst: within 10 %.
    assert!(
        (inner_runq - host_runq).abs() <= 0.1 * host_runq,
        "run-queue samples inside {inner_runq} vs host {host_runq}"
    );
    // Only processes of the namespace: nothing from the host (its pid 1 is not ours).
    assert!(
        inner_after.samples.iter().filter_map(|s| s.labels.get("pid")).all(|p| p == "1"),
        "golens in the namespace reports a process it cannot see"
    );
    drop(stdin);
}

/// golens in a pid namespace asked for a pid it cannot see says so.
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn pid_outside_golens_namespace_is_a_clear_error() {
    let target = common::start_workload(&gcburn(), &["-cycles", "1"]);
    let output = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", env!("CARGO_BIN_EXE_golens"), "run"])
        .args([
            "--pid",
            &target.pid().to_string(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .expect("unshare (util-linux)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "golens ran without its target: {stderr}");
    assert!(stderr.contains("does not exist in golens' pid namespace"), "{stderr}");
}

/// A watched process that execs a program that is not Go is no longer
/// watched, while it still runs. (Its threads' pending wakeup times are in
/// task storage, which the kernel frees with each thread: nothing of it can
/// stay behind in golens' maps.)
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn exec_into_a_program_that_is_not_go_stops_the_watch() {
    let execer = build_workload_with("execer", GO, GoBuild::default());
    let binary = copies(&execer, "gl-execer", 1).remove(0);
    // Eight threads contending for Python's GIL for 3 s: wakeups galore.
    let python = "import threading, time\n\
                  def spin():\n    end = time.time() + 3.0\n    while time.time() < end: pass\n\
                  ts = [threading.Thread(target=spin) for _ in range(8)]\n\
                  [t.start() for t in ts]\n[t.join() for t in ts]\n";
    let agent = Agent::start(&["--comm", "gl-execer"]);
    let mut targets: Vec<_> =
        (0..10).map(|_| common::start_interactive(&binary, &["python3", "-c", python])).collect();
    let tracked = agent.wait_for(Duration::from_secs(10), |m| {
        value(m, "golens_agent_tracked_processes", &[]) >= 10.0
    });
    assert_eq!(value(&tracked, "golens_agent_tracked_processes", &[]), 10.0);
    for (child, _) in &mut targets {
        child.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }
    let untracked = agent.wait_for(Duration::from_secs(10), |m| {
        value(m, "golens_agent_tracked_processes", &[]) == 0.0
    });
    let mut still_running = 0;
    for (child, _) in &mut targets {
        still_running += usize::from(child.0.try_wait().is_ok_and(|s| s.is_none()));
    }
    assert_eq!(value(&untracked, "golens_agent_tracked_processes", &[]), 0.0);
    assert!(still_running > 0, "the exec'd programs ended before golens let go of them");
    for (child, _) in &targets {
        assert!(!untracked.has_pid("golens_process_info", child.pid()), "series after exec");
    }
    for (child, _) in &mut targets {
        let status = wait_exit(&mut child.0, Duration::from_secs(30), "an exec'd python");
        assert!(status.success(), "python exited with {status}");
    }
}
