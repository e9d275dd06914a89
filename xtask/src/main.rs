//! cargo xtask: the project's own automation.
//!
//!   cargo xtask setup   install what building and testing need (Debian packages)
//!   cargo xtask build   build the release agent (eBPF objects embedded)
//!   cargo xtask test    setup, then every unit and integration test (privileged ones too)
//!   cargo xtask demo    setup, build, run golens against a bundled Go service
//!   cargo xtask bench   throughput and p99 of a Go HTTP service with and without golens
//!   cargo xtask fuzz    run the parsers' fuzz targets

mod bench;
mod demo;
mod fuzz;
mod setup;
mod toolchains;
mod util;

use anyhow::{bail, Result};

const USAGE: &str = "usage: cargo xtask <setup|build|test|demo|bench|fuzz> [options]

  setup                 install missing build/test dependencies (needs root on Debian)
  build                 cargo build --release of the agent
  test [-- ARGS]        setup, then all tests, privileged ones included (needs root)
  demo [--seconds N]    run golens on a demo Go service; until Ctrl-C, or N seconds
  bench [--rounds N] [--seconds S] [--scenario plain|gc|all]
                        alternate runs of wrk against a Go service with and without
                        golens attached (plain, and GC-heavy with GOGC=5); print
                        throughput and p99 ratios, GC/s, and each eBPF program's hit
                        rate and run time
  fuzz [--seconds N]    run each parser fuzz target (agent/fuzz) for N s (default 30),
                        seeded from a real Go binary";

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
    cargo.args(["test", "--workspace", "--", "--include-ignored"]);
    // The Go version matrix: unit tests of the binary readers and attach-point
    // planning build their test programs with each of these.
    cargo.env("GOLENS_TEST_GO", toolchains::matrix_env());
    // Integration tests share the machine's CPUs and start agents and Go
    // workloads: run them one at a time so they do not measure each other.
    cargo.arg("--test-threads=1");
    cargo.args(extra);
    util::run_checked(&mut cargo)
}
