//! The golens binary's command line: help, argument errors, and (privileged)
//! the errors a user meets first: capabilities, BTF, bad --pid.

mod common;

use std::process::{Command, Output};

use common::{golens, ChildGuard};

fn run(args: &[&str]) -> Output {
    golens().args(args).output().expect("running golens")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_clean_failure(output: &Output, expected: &str) {
    let text = stderr(output);
    assert!(!output.status.success(), "expected failure, got success; stderr: {text}");
    assert!(text.contains(expected), "stderr lacks `{expected}`:\n{text}");
    assert!(!text.contains("panicked"), "golens panicked:\n{text}");
}

#[test]
fn help_lists_every_run_flag() {
    let output = run(&["run", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--interval",
        "--pid",
        "--comm",
        "--max-processes",
        "--btf",
        "--attach-mode",
        "--probes",
        "--log",
    ] {
        assert!(help.contains(flag), "`golens run --help` lacks {flag}:\n{help}");
    }
    assert!(help.contains("CAP_BPF"), "help names the capabilities");
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["run", "--interval", "fast"][..],
        &["run", "--max-processes", "0"],
        &["run", "--listen", "nowhere"],
        &["run", "--pid", "-3"],
        &["frobnicate"],
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        assert!(!stderr(&output).contains("panicked"));
    }
}

#[test]
#[ignore = "privileged: needs root to drop to an unprivileged user; run `cargo xtask test`"]
fn without_capabilities_names_the_missing_one() {
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(env!("CARGO_BIN_EXE_golens"))
        .args(["run", "--require-ebpf", "--listen", "127.0.0.1:0"])
        .output()
        .expect("setpriv (util-linux)");
    assert_clean_failure(&output, "missing capability CAP_BPF and CAP_PERFMON");
    assert_eq!(stderr(&output).lines().filter(|l| l.starts_with("error")).count(), 1);
}

#[test]
#[ignore = "privileged: run `cargo xtask test` as root"]
fn without_btf_says_so() {
    let output =
        run(&["run", "--require-ebpf", "--btf", "/nonexistent/vmlinux", "--listen", "127.0.0.1:0"]);
    assert_clean_failure(&output, "no kernel BTF at /nonexistent/vmlinux");
}

/// Without BTF (and without --require-ebpf), golens serves what needs no
/// eBPF: the Go processes with their labels, every program marked off.
#[test]
#[ignore = "privileged: run `cargo xtask test` as root"]
fn without_btf_it_runs_degraded() {
    let go = common::start_workload(
        &common::build_workload("runqburn"),
        &["-duration", "30s", "-workers", "1"],
    );
    let agent = common::Agent::start(&["--btf", "/nonexistent/vmlinux"]);
    let metrics = agent.wait_for(std::time::Duration::from_secs(10), |m| {
        m.has_pid("golens_process_info", go.pid())
    });
    assert!(metrics.has_pid("golens_process_info", go.pid()), "Go process not listed");
    assert_eq!(metrics.value("golens_agent_ebpf_available", &[]), Some(0.0));
    assert_eq!(
        metrics.value("golens_agent_program_attached", &[("program", "golens_switch")]),
        Some(0.0)
    );
    assert!(!metrics.has_pid("golens_sched_runqueue_latency_seconds_count", go.pid()));
    assert!(!metrics.has_pid("golens_go_gc_cycles_total", go.pid()));
}

/// As an unprivileged user, golens runs degraded too, and lists that user's
/// own Go processes, with the GOMAXPROCS their runtime holds (read from
/// their memory, which needs no eBPF: a process of golens' own user).
#[test]
#[ignore = "privileged: run `cargo xtask test` as root"]
fn without_capabilities_it_runs_degraded() {
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"];
    let workload = common::build_workload("runqburn");
    let go = ChildGuard(
        Command::new("setpriv")
            .args(nobody)
            .arg(&workload)
            .args(["-duration", "30s", "-workers", "1"])
            .env("GOMAXPROCS", "1")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("setpriv (util-linux)"),
    );
    let port = common::free_port();
    let _agent = ChildGuard(
        Command::new("setpriv")
            .args(nobody)
            .arg(env!("CARGO_BIN_EXE_golens"))
            .args(["run", "--interval", "250ms", "--listen", &format!("127.0.0.1:{port}")])
            .spawn()
            .expect("setpriv (util-linux)"),
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some((200, body)) = common::get(&url) {
            let metrics = common::Metrics::parse(&body);
            if metrics.has_pid("golens_process_info", go.pid()) {
                assert_eq!(metrics.value("golens_agent_ebpf_available", &[]), Some(0.0));
                let pid = go.pid().to_string();
                let gomaxprocs = metrics
                    .find("golens_go_gomaxprocs", &[("pid", &pid)])
                    .map(|s| (s.value, s.labels["source"].clone()));
                // runqburn calls runtime.GOMAXPROCS(workers + 1): 2, over the
                // environment's 1 (which the /proc fallback would report).
                assert_eq!(gomaxprocs, Some((2.0, "observed".to_string())), "{}", metrics.text);
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "degraded golens never listed its Go process"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
#[ignore = "privileged: run `cargo xtask test` as root"]
fn pid_that_does_not_exist_is_an_error() {
    let output = run(&["run", "--pid", "2000000000", "--listen", "127.0.0.1:0"]);
    assert_clean_failure(&output, "process 2000000000 does not exist");
}

#[test]
#[ignore = "privileged: run `cargo xtask test` as root"]
fn pid_that_is_not_go_is_an_error() {
    let sleeper = ChildGuard(Command::new("sleep").arg("30").spawn().unwrap());
    let pid = sleeper.pid().to_string();
    let output = run(&["run", "--pid", &pid, "--listen", "127.0.0.1:0"]);
    assert_clean_failure(&output, &format!("process {pid} (sleep) is not a Go program"));
}

#[test]
fn list_shows_go_processes_with_their_probes_and_skips_others() {
    let go = common::start_workload(
        &common::build_workload("runqburn"),
        &["-duration", "30s", "-workers", "1"],
    );
    let not_go = ChildGuard(Command::new("sleep").arg("30").spawn().unwrap());
    let output = run(&["list", "--verbose"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", stderr(&output));
    let row = text
        .lines()
        .find(|line| line.split_whitespace().next() == Some(&go.pid().to_string()))
        .unwrap_or_else(|| panic!("no row for the Go process {}:\n{text}", go.pid()));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&columns[1..], ["runqburn-1.19", "go1.19.8", "no", "no", "6/6"], "{row}");
    assert!(
        text.contains(
            "gc_cycle_start: runtime.gcResetMarkState, entry (stack-check jbe) (1 point)"
        ),
        "{text}"
    );
    assert!(
        text.contains("stw_started: runtime.startTheWorldWithSema, CALL runtime.wakep"),
        "{text}"
    );
    assert!(
        !text.contains("fallback"),
        "no probe of a Go 1.19 binary needs the RET fallback: {text}"
    );
    assert!(
        !text.lines().any(|l| l.split_whitespace().next() == Some(&not_go.pid().to_string())),
        "`sleep` is not Go:\n{text}"
    );
}

#[test]
fn list_against_an_absent_agent_is_a_clear_error() {
    let port = common::free_port();
    let output = run(&["list", "--agent", &format!("http://127.0.0.1:{port}")]);
    assert_clean_failure(&output, "asking the agent at");
}
