//! Scheduler probes and discovery against the real kernel and real Go processes.
//! Privileged: run by `cargo xtask test` (as root).

mod common;

use std::{thread::sleep, time::Duration};

use common::{build_workload, start_workload, Agent, ChildGuard};

/// Collections the agent has made (from /api/v1/snapshot): lets tests wait a
/// number of collection intervals without asserting on wall-clock time.
fn collections(agent: &Agent) -> u64 {
    let (_, body) = common::get(&format!("{}/api/v1/snapshot", agent.base_url)).expect("snapshot");
    let marker = "\"collections\":";
    let start = body.find(marker).expect("collections in snapshot") + marker.len();
    body[start..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

fn wait_collections(agent: &Agent, count: u64) {
    let target = collections(agent) + count;
    while collections(agent) < target {
        sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn runqueue_latency_agrees_with_the_kernels_schedstat() {
    runqueue_latency_agrees_with_schedstat("sched-info");
}

/// The fallback for kernels without sched_info: golens' own wakeup timestamps.
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn runqueue_latency_from_wakeups_agrees_with_the_kernels_schedstat() {
    runqueue_latency_agrees_with_schedstat("wakeups");
}

/// `source`: the GOLENS_RUNQ_SOURCE the agent runs with.
fn runqueue_latency_agrees_with_schedstat(source: &str) {
    // More locked, busy OS threads than CPUs: run-queue latency cannot be zero.
    let workload = start_workload(&build_workload("runqburn"), &["-duration", "90s"]);
    let pid = workload.pid();
    let pid_label = pid.to_string();
    let labels = [("pid", pid_label.as_str())];
    let agent = Agent::start_as(|listen| {
        let mut command = common::golens();
        command.env("GOLENS_RUNQ_SOURCE", source).arg("run").args(["--pid", &pid_label]);
        command.args(["--listen", listen, "--interval", "250ms"]);
        command
    });
    // With sched_info, golens attaches no wakeup program at all.
    let wakeup =
        agent.metrics().value("golens_agent_program_attached", &[("program", "golens_wakeup")]);
    assert_eq!(wakeup, (source == "wakeups").then_some(1.0), "{source}: golens_wakeup attached");

    let count_of = |m: &common::Metrics| {
        m.value("golens_sched_runqueue_latency_seconds_count", &labels).unwrap_or(0.0)
    };
    agent.wait_for(Duration::from_secs(10), |m| count_of(m) > 0.0);

    // Two readings of golens and of the kernel's own per-thread accounting
    // (/proc/PID/task/*/schedstat field 2 = ns waited on a run queue;
    // status: nonvoluntary_ctxt_switches), 5 s apart, each with the workload
    // stopped (SIGSTOP) until golens has published a collection taken after
    // it stopped: both sides then count the same runs.
    let signal = |signal| {
        // SAFETY: signalling the workload this test started and still owns.
        assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "kill({pid}, {signal})");
    };
    let read = || {
        signal(libc::SIGSTOP);
        sleep(Duration::from_millis(50));
        agent.catch_up();
        let metrics = agent.metrics();
        let golens_sum =
            metrics.value("golens_sched_runqueue_latency_seconds_sum", &labels).unwrap();
        let golens_count = count_of(&metrics);
        let golens_switches =
            metrics.value("golens_sched_involuntary_switches_total", &labels).unwrap();
        let kernel_wait = common::proc_runqueue_wait_ns(pid) as f64 / 1e9;
        let kernel_switches = common::proc_involuntary_switches(pid) as f64;
        signal(libc::SIGCONT);
        (golens_sum, golens_count, golens_switches, kernel_wait, kernel_switches)
    };
    let before = read();
    sleep(Duration::from_secs(5));
    let after = read();

    let golens_wait = after.0 - before.0;
    let samples = after.1 - before.1;
    let golens_switches = after.2 - before.2;
    let kernel_wait = after.3 - before.3;
    let kernel_switches = after.4 - before.4;
    println!(
        "{source}: run-queue wait over 5 s: golens {golens_wait:.4} s in {samples} samples, kernel \
         schedstat {kernel_wait:.4} s; involuntary switches: golens {golens_switches}, kernel {kernel_switches}"
    );

    assert!(
        samples > 100.0,
        "a busy oversubscribed process must show run-queue samples: {samples}"
    );
    let mean = golens_wait / samples;
    assert!(
        (1e-6..0.1).contains(&mean),
        "mean run-queue latency {mean} s is not plausible for 2 ms bursts on 2 CPUs"
    );
    // Tolerance: with the workload stopped at both readings, both sides count
    // the same runs; what differs is the waits in progress at SIGSTOP, which
    // the kernel adds when the stopped thread leaves its run queue and golens
    // at the thread's next run: at most one wait per thread (a few ms each
    // for runqburn's 6 busy threads) at each end of ~15 s of waiting. Measured:
    // 0.2-0.25 % under, with either source. Involuntary switches are the
    // same events on both sides: measured equal.
    let ratio = golens_wait / kernel_wait;
    assert!(
        (0.98..=1.02).contains(&ratio),
        "{source}: golens run-queue time {golens_wait} s vs kernel schedstat {kernel_wait} s \
         (ratio {ratio:.4})"
    );
    let ratio = golens_switches / kernel_switches;
    assert!(
        kernel_switches > 50.0 && (0.99..=1.01).contains(&ratio),
        "{source}: golens involuntary switches {golens_switches} vs kernel {kernel_switches} \
         (ratio {ratio:.4})"
    );

    // Buckets are cumulative, end with +Inf == count, and cover the samples.
    let metrics = agent.metrics();
    let inf = metrics
        .value(
            "golens_sched_runqueue_latency_seconds_bucket",
            &[("pid", &pid_label), ("le", "+Inf")],
        )
        .unwrap();
    assert_eq!(inf, count_of(&metrics), "+Inf bucket must equal _count");
}

#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn scan_tracks_go_processes_and_ignores_others() {
    let workload =
        start_workload(&build_workload("runqburn"), &["-duration", "60s", "-workers", "1"]);
    let not_go = ChildGuard(std::process::Command::new("sleep").arg("60").spawn().unwrap());
    let agent = Agent::start(&[]);
    let metrics = agent.metrics();

    let info = metrics
        .find("golens_process_info", &[("pid", &workload.pid().to_string())])
        .expect("a Go process running before the agent is found by the /proc scan");
    assert_eq!(info.labels["comm"], "runqburn-1.19");
    assert!(info.labels["go_version"].starts_with("go1."), "{:?}", info.labels);
    assert!(info.labels["exe"].ends_with("/runqburn-1.19"), "{:?}", info.labels);
    assert!(!metrics.has_pid("golens_process_info", not_go.pid()), "`sleep` is not Go");
    assert!(metrics.value("golens_agent_tracked_processes", &[]).unwrap() >= 1.0);
}

#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn exec_is_discovered_and_exit_removes_series_within_two_collections() {
    let binary = build_workload("runqburn");
    let agent = Agent::start(&["--comm", "runqburn-1.19"]);
    let mut workload = start_workload(&binary, &["-duration", "3s", "-workers", "1"]);
    let pid = workload.pid();

    let metrics =
        agent.wait_for(Duration::from_secs(10), |m| m.has_pid("golens_process_info", pid));
    assert!(
        metrics.has_pid("golens_process_info", pid),
        "process started after the agent not found"
    );
    assert!(metrics.has_pid("golens_sched_runqueue_latency_seconds_count", pid));

    let status = workload.0.wait().unwrap();
    assert!(status.success(), "workload failed under the probes: {status}");
    wait_collections(&agent, 2);
    let metrics = agent.metrics();
    for family in [
        "golens_process_info",
        "golens_sched_runqueue_latency_seconds_count",
        "golens_sched_involuntary_switches_total",
    ] {
        assert!(!metrics.has_pid(family, pid), "{family} still has exited pid {pid}");
    }
}

#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn target_survives_agent_sigkill() {
    let workload =
        start_workload(&build_workload("runqburn"), &["-duration", "4s", "-workers", "2"]);
    let mut workload = workload;
    let agent = Agent::start(&["--pid", &workload.pid().to_string()]);
    agent.wait_for(Duration::from_secs(10), |m| m.has_pid("golens_process_info", workload.pid()));
    // SIGKILL: no cleanup code runs; the kernel closes the links' fds.
    let mut child = agent.child;
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let status = workload.0.wait().unwrap();
    assert!(status.success(), "target must keep running and exit normally: {status}");
}

#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn max_processes_caps_tracking_and_counts_the_skipped() {
    let binary = build_workload("runqburn");
    let args = ["-duration", "60s", "-workers", "1"];
    let first = start_workload(&binary, &args);
    let second = start_workload(&binary, &args);
    let agent = Agent::start(&[
        "--max-processes",
        "1",
        "--pid",
        &first.pid().to_string(),
        "--pid",
        &second.pid().to_string(),
    ]);
    let metrics = agent.metrics();
    assert_eq!(metrics.value("golens_agent_tracked_processes", &[]), Some(1.0));
    let tracked = [&first, &second]
        .iter()
        .filter(|w| metrics.has_pid("golens_process_info", w.pid()))
        .count();
    assert_eq!(tracked, 1, "exactly one of the two is watched");
    assert_eq!(
        metrics.value("golens_agent_skipped_processes_total", &[("reason", "max_processes")]),
        Some(1.0)
    );

    // When the watched one exits, the skipped one takes its slot.
    let (watched, skipped) = if metrics.has_pid("golens_process_info", first.pid()) {
        (first, second)
    } else {
        (second, first)
    };
    drop(watched); // killed
    let metrics = agent
        .wait_for(Duration::from_secs(10), |m| m.has_pid("golens_process_info", skipped.pid()));
    assert!(metrics.has_pid("golens_process_info", skipped.pid()), "freed slot not taken");
    assert_eq!(metrics.value("golens_agent_tracked_processes", &[]), Some(1.0));
}

/// A process in a container-shaped cgroup (as the kubelet and containerd lay
/// them out) carries `container_id` and `pod_uid` labels on its series.
#[test]
#[ignore = "privileged: creates a cgroup and loads eBPF programs; run `cargo xtask test` as root"]
fn container_and_pod_ids_come_from_the_cgroup_path() {
    const ID: &str = "4c8b0f5e2a1d3c6b9e7f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d";
    const UID: &str = "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d";
    // The cgroup v2 hierarchy: /sys/fs/cgroup/unified on hybrid hosts (like
    // this one), /sys/fs/cgroup on pure v2 hosts.
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(std::path::Path::new)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists())
        .expect("a cgroup v2 hierarchy");
    let pod = root.join(format!("golens-test-kubepods-pod{}.slice", UID.replace('-', "_")));
    let container = pod.join(format!("cri-containerd-{ID}.scope"));
    std::fs::create_dir_all(&container).expect("creating a test cgroup");

    let workload =
        start_workload(&build_workload("runqburn"), &["-duration", "30s", "-workers", "1"]);
    std::fs::write(container.join("cgroup.procs"), workload.pid().to_string()).unwrap();
    let agent = Agent::start(&["--pid", &workload.pid().to_string()]);
    let metrics = agent.metrics();
    let pid = workload.pid().to_string();
    for family in ["golens_process_info", "golens_sched_runqueue_latency_seconds_count"] {
        let sample = metrics.find(family, &[("pid", &pid)]).unwrap_or_else(|| panic!("{family}"));
        assert_eq!(sample.labels.get("container_id").map(String::as_str), Some(ID), "{family}");
        assert_eq!(sample.labels.get("pod_uid").map(String::as_str), Some(UID), "{family}");
    }

    drop(workload);
    drop(agent);
    // A cgroup can be removed once empty (the killed workload has left it).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::remove_dir(&container).is_err() && std::time::Instant::now() < deadline {
        sleep(Duration::from_millis(100));
    }
    std::fs::remove_dir(&pod).expect("removing the test cgroup");
}
