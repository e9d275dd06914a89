//! `cargo xtask setup`: install what the build and the tests need.
//!
//! Debian packages only, and only those missing, so a prepared machine pays
//! one dpkg query per package; plus a few pinned npm packages under
//! target/npm and PyPI packages in a virtual environment at target/venv
//! (never installed globally), only those missing.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Result};

use crate::{
    toolchains,
    util::{is_root, run_checked, step, workspace_root},
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
    ("bpftrace", "counts each process's probe events for `cargo xtask bench hits`"),
    ("python3", "a multi-threaded program that is not Go, for a test"),
    ("tmux", "runs golens top in a real terminal for its tests (send-keys, capture-pane)"),
    ("buildah", "cargo xtask image builds golens' OCI image with it, offline, FROM scratch"),
    ("podman", "runs golens' image in real containers in the tests (DaemonSet and sidecar shapes)"),
    ("runc", "the OCI runtime of those containers (crun refuses hosts with hybrid cgroups)"),
    ("python3-venv", "the virtual environment of the PyPI packages below (target/venv)"),
    (
        "iptables",
        "a `ct state` rule makes a test's network namespace track connections (conntrack)",
    ),
];

/// PyPI packages, pinned, installed in the virtual environment target/venv:
/// (package, version, why). tests/deploy.rs finds them there.
const PYPI_PACKAGES: &[(&str, &str, &str)] = &[
    (
        "kubernetes-validate",
        "1.37.0",
        "validates deploy/*.yaml against the Kubernetes API schemas in tests/deploy.rs",
    ),
    ("checkov", "3.3.30", "the security linter tests/deploy.rs runs on deploy/*.yaml"),
];

/// npm packages, pinned, installed under target/npm: (package, version, why).
/// tests/dashboards.rs finds them there.
const NPM_PACKAGES: &[(&str, &str, &str)] = &[
    (
        "@grafana/schema",
        "11.6.16",
        "Grafana 11's dashboard types: tests/dashboards.rs type-checks every dashboard against them",
    ),
    ("typescript", "5.9.3", "tsc, which runs that type check"),
];

pub fn setup() -> Result<()> {
    install_debian_packages()?;
    toolchains::install_go_toolchains()?;
    install_npm_packages()?;
    install_pypi_packages()
}

pub fn venv_dir() -> PathBuf {
    workspace_root().join("target/venv")
}

/// Installs the missing PYPI_PACKAGES into the virtual environment
/// target/venv, creating it first if needed.
fn install_pypi_packages() -> Result<()> {
    let venv = venv_dir();
    let missing: Vec<String> = PYPI_PACKAGES
        .iter()
        .filter(|(package, version, _)| !pypi_package_installed(&venv, package, version))
        .map(|(package, version, _)| format!("{package}=={version}"))
        .collect();
    if missing.is_empty() {
        step("setup: every PyPI package is installed (target/venv)");
        return Ok(());
    }
    let python = venv.join("bin/python");
    if !python.is_file() {
        step("setup: python3 -m venv target/venv");
        run_checked(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    for (package, version, why) in PYPI_PACKAGES {
        if missing.contains(&format!("{package}=={version}")) {
            step(&format!("setup: will install PyPI {package}=={version}: {why}"));
        }
    }
    step(&format!("setup: pip install {} (target/venv, ~1-2 min)", missing.join(" ")));
    run_checked(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(&missing),
    )?;
    for (package, version, _) in PYPI_PACKAGES {
        if !pypi_package_installed(&venv, package, version) {
            bail!("pip installed {package}=={version} but {} lacks it", venv.display());
        }
    }
    Ok(())
}

/// Whether `package` is installed in the virtual environment `venv` at
/// exactly `version`: its `NAME-VERSION.dist-info` folder (pip writes the
/// name with `_` for `-`).
fn pypi_package_installed(venv: &std::path::Path, package: &str, version: &str) -> bool {
    let dist_info = format!("{}-{version}.dist-info", package.replace('-', "_"));
    let Ok(libs) = std::fs::read_dir(venv.join("lib")) else { return false };
    libs.filter_map(|entry| entry.ok())
        .any(|python| python.path().join("site-packages").join(&dist_info).is_dir())
}

fn npm_prefix() -> PathBuf {
    workspace_root().join("target/npm")
}

/// Installs the missing NPM_PACKAGES into target/npm (`npm install --prefix`).
fn install_npm_packages() -> Result<()> {
    let prefix = npm_prefix();
    let missing: Vec<String> = NPM_PACKAGES
        .iter()
        .filter(|(package, version, _)| !npm_package_installed(&prefix, package, version))
        .map(|(package, version, _)| format!("{package}@{version}"))
        .collect();
    if missing.is_empty() {
        step("setup: every npm package is installed (target/npm)");
        return Ok(());
    }
    if !Command::new("npm").arg("--version").output().is_ok_and(|out| out.status.success()) {
        // Node.js from another source (e.g. NodeSource) ships its own npm;
        // Debian's npm is only for a machine that has none.
        if !is_root() {
            bail!("npm is missing (run `cargo xtask setup` as root, or install Node.js with npm)");
        }
        step("setup: will install npm: installs the npm packages below");
        run_checked(Command::new("apt-get").args(["update", "-q"]))?;
        run_checked(Command::new("apt-get").env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "npm",
        ]))?;
    }
    for (package, version, why) in NPM_PACKAGES {
        if missing.contains(&format!("{package}@{version}")) {
            step(&format!("setup: will install npm {package}@{version}: {why}"));
        }
    }
    step(&format!("setup: npm install --prefix target/npm {}", missing.join(" ")));
    std::fs::create_dir_all(&prefix)?;
    run_checked(
        Command::new("npm")
            .args(["install", "--save-exact", "--no-audit", "--no-fund", "--loglevel=error"])
            .arg("--prefix")
            .arg(&prefix)
            .args(&missing),
    )?;
    for (package, version, _) in NPM_PACKAGES {
        if !npm_package_installed(&prefix, package, version) {
            bail!("npm installed {package}@{version} but {} lacks it", prefix.display());
        }
    }
    Ok(())
}

/// Whether `package` is installed under `prefix` at exactly `version`.
fn npm_package_installed(prefix: &std::path::Path, package: &str, version: &str) -> bool {
    let manifest = prefix.join("node_modules").join(package).join("package.json");
    std::fs::read_to_string(manifest)
        .is_ok_and(|text| text.contains(&format!("\"version\": \"{version}\"")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pypi_package_is_installed_at_its_exact_version_only() {
        let venv = std::env::temp_dir().join(format!("xtask-venv-test-{}", std::process::id()));
        let site = venv.join("lib/python3.11/site-packages");
        std::fs::create_dir_all(site.join("kubernetes_validate-1.37.0.dist-info")).unwrap();
        assert!(pypi_package_installed(&venv, "kubernetes-validate", "1.37.0"));
        assert!(!pypi_package_installed(&venv, "kubernetes-validate", "1.36.0"));
        assert!(!pypi_package_installed(&venv, "checkov", "3.3.30"));
        assert!(!pypi_package_installed(&venv.join("absent"), "checkov", "3.3.30"));
        std::fs::remove_dir_all(&venv).unwrap();
    }
}
