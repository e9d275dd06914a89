//! cargo xtask: the project's own automation.
//!
//!   cargo xtask setup   install what building and testing need (Debian, PyPI, npm packages)
//!   cargo xtask build   build the release agent (eBPF objects embedded)
//!   cargo xtask test    setup, then every unit and integration test (privileged ones too)
//!   cargo xtask demo    setup, build, run golens against a bundled Go service
//!   cargo xtask bench   a Go HTTP service's CPU per request at a fixed rate, per probe family
//!   cargo xtask bench scale   the agent's own cost with 1 to 300 idle Go processes
//!   cargo xtask fuzz    run the parsers' fuzz targets
//!   cargo xtask image   an OCI image of golens (buildah, offline, FROM scratch)

mod bench;
mod bench_scale;
mod demo;
mod fuzz;
mod image;
mod setup;
mod toolchains;
mod util;

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask <setup|build|test|demo|bench|fuzz|image> [options]

  setup                 install missing build/test dependencies (needs root on Debian)
  build                 cargo build --release of the agent
  test [-- ARGS]        setup, then all tests, privileged ones included (needs root)
  demo [--seconds N]    run golens on a demo Go service; until Ctrl-C, or N seconds
  bench [--rounds N] [--seconds S] [--rate R] [--scenario realistic|pathological|all]
                        a Go service (pinned to CPU 0) under hey at a fixed rate (default
                        2000 req/s, pinned to CPU 1), in N ABBA blocks (default 3) of S s
                        rounds (default 10) per golens configuration (--probes sched,
                        goruntime, both) against no agent; scenarios: a 64 MiB live heap
                        (a few GC/s) and GOGC=5 (hundreds of GC/s). Prints the service's
                        CPU time per request and p99 as ratios (min/median/max) against
                        the goals, GC/s, and each eBPF program's hits and ns per request
  bench scale [--counts 1,10,100,300] [--shapes one,many] [--idle-seconds 10]
                        the agent's own cost with N idle Go processes of one or of 10
                        executables: start -> ready, tracked, idle CPU, RSS, fds,
                        /metrics time and size, SIGTERM -> exit, SIGKILL -> gone
  fuzz [--seconds N]    run each parser fuzz target (agent/fuzz) for N s (default 30),
                        seeded from a real Go binary
  image [--binary PATH] [--tag NAME:TAG]
                        an OCI image of golens in the local container storage, built
                        offline with buildah FROM scratch: the release binary (or PATH)
                        and exactly the libraries ldd lists; labelled with the version;
                        tagged localhost/golens:VERSION and :latest (or NAME:TAG)";

fn main() {
    if let Err(error) = run() {
        eprintln!("xtask: error: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        println!("{USAGE}");
        return Ok(());
    };
    let rest = &args[1..];
    match command.as_str() {
        "setup" => setup::setup(),
        "build" => util::build_release(),
        "test" => test(rest),
        "demo" => demo::demo(rest),
        "bench" => bench::bench(rest),
        "fuzz" => fuzz::fuzz(rest),
        "image" => image::image(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n{USAGE}"),
    }
}

/// Every test: unit tests, CLI tests, and the privileged integration tests
/// (marked #[ignore] so that a plain `cargo test` never needs root).
fn test(extra: &[String]) -> Result<()> {
    setup::setup()?;
    if !util::is_root() {
        bail!("the integration tests load eBPF programs: run `cargo xtask test` as root");
    }
    util::step("running every test (unit, CLI, privileged integration)");
    let mut cargo = util::cargo();
    // --no-fail-fast: one failing test binary does not hide the others' results.
    cargo.args(["test", "--workspace", "--no-fail-fast", "--", "--include-ignored"]);
    // The Go version matrix: unit tests of the binary readers and attach-point
    // planning build their test programs with each of these.
    cargo.env("GOLENS_TEST_GO", toolchains::matrix_env());
    // Integration tests share the machine's CPUs and start agents and Go
    // workloads: run them one at a time so they do not measure each other.
    cargo.arg("--test-threads=1");
    cargo.args(extra);
    run_counting_tests(&mut cargo)
}

/// Runs `cargo test`, passing its output through, and ends with one line
/// totalling every test binary's result ("N passed, N failed"): cargo's own
/// last line is the last binary's, often a doc-test run of 0.
fn run_counting_tests(cargo: &mut std::process::Command) -> Result<()> {
    use std::io::BufRead;
    let mut child = cargo
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cargo:?}"))?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let mut totals = TestTotals::default();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        totals.add(&line);
    }
    let status = child.wait()?;
    println!("\n{} passed, {} failed", totals.passed, totals.failed);
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}

#[derive(Debug, Default, PartialEq)]
struct TestTotals {
    passed: u64,
    failed: u64,
}

impl TestTotals {
    /// Adds a libtest summary: "test result: ok. 3 passed; 0 failed; 1 ignored; …".
    fn add(&mut self, line: &str) {
        let Some(summary) = line.strip_prefix("test result: ") else { return };
        for part in summary.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(count)) = (words.next(), words.next()) else { continue };
            let Ok(count) = count.parse::<u64>() else { continue };
            match kind {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_libtest_summaries() {
        let mut totals = TestTotals::default();
        for line in [
            "test result: ok. 63 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 7.71s",
            "running 2 tests",
            "test result: FAILED. 5 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
        ] {
            totals.add(line);
        }
        assert_eq!(totals, TestTotals { passed: 68, failed: 2 });
    }
}
