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
        .args(["run", "--listen", "127.0.0.1:0"])
        .output()
        .expect("setpriv (util-linux)");
    assert_clean_failure(&output, "missing capability CAP_BPF and CAP_PERFMON");
    assert_eq!(stderr(&output).lines().filter(|l| l.starts_with("error")).count(), 1);
}

#[test]
#[ignore = "privileged: run `cargo xtask test` as root"]
fn without_btf_says_so() {
    let output = run(&["run", "--btf", "/nonexistent/vmlinux", "--listen", "127.0.0.1:0"]);
    assert_clean_failure(&output, "no kernel BTF at /nonexistent/vmlinux");
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
