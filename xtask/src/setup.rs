//! `cargo xtask setup`: install what the build and the tests need.
//!
//! Debian packages only, and only those missing, so a prepared machine pays
//! one dpkg query per package.

use std::process::Command;

use anyhow::{bail, Result};

use crate::{
    toolchains,
    util::{is_root, run_checked, step},
};

/// (package, why)
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("clang", "compiles the eBPF programs (agent-ebpf/build.rs); libclang for bindgen"),
    ("libbpf-dev", "bpf_helpers.h and friends for the eBPF programs"),
    ("golang-go", "Go 1.19: builds the Go workloads of the tests, demo and bench"),
    ("wrk", "HTTP load for cargo xtask bench"),
    ("binutils", "objcopy: a test strips .go.buildinfo from a Go binary"),
    ("prometheus", "a real Prometheus scrapes golens in the tests; promtool lints /metrics"),
    ("caddy", "a real third-party Go service whose own go_gc_duration_seconds the tests check"),
    ("hey", "fixed-rate (open-loop) HTTP load for the tests and the bench"),
    ("python3", "a multi-threaded program that is not Go, for a test"),
];

pub fn setup() -> Result<()> {
    install_debian_packages()?;
    toolchains::install_go_toolchains()
}

fn install_debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .map(|(package, _)| *package)
        .filter(|package| !is_installed(package))
        .collect();
    if missing.is_empty() {
        step("setup: every Debian package is installed");
        return Ok(());
    }
    if !is_root() {
        bail!("missing Debian packages: {} (run `cargo xtask setup` as root)", missing.join(" "));
    }
    for (package, why) in DEBIAN_PACKAGES.iter().filter(|(p, _)| missing.contains(p)) {
        step(&format!("setup: will install {package}: {why}"));
    }
    step("setup: apt-get update");
    run_checked(Command::new("apt-get").args(["update", "-q"]))?;
    step(&format!("setup: apt-get install {}", missing.join(" ")));
    run_checked(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.ends_with(b"install ok installed"))
}
