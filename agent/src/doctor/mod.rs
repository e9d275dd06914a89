//! `golens doctor`: the kernel, ulimit and cgroup settings that hurt Go
//! services, checked and explained.
//!
//! Two stages, so that the judgement is testable without a host:
//! `gather` reads files under a root directory into plain `Facts` (every
//! value a `Reading`: the value or why it could not be read), then the pure
//! `evaluate` turns them into `Check`s (pass / warn / fail / unknown, the
//! measured value, why it matters for Go, the fix).
//!
//! No eBPF, no BTF, no capability: it reads /proc and /sys as whoever runs
//! it and never touches aya, so it works on kernels golens cannot probe.
//! Without access to other users' processes (root or CAP_SYS_PTRACE) the
//! per-process checks say which processes they could not read.

mod cgroup;
mod check;
mod facts;
mod gather;
mod parse;
mod process;
mod render;
mod rules;

use std::{io::Write, path::Path, process::ExitCode};

use anyhow::{Context, Result};

pub use check::{Check, Status, Summary, CHECK_IDS};
pub use facts::Facts;
pub use process::{Detected, ExecutableFiles, GoDetector};
pub use rules::{evaluate, RATIO_FAIL, RATIO_WARN};

use crate::{
    cli::{DoctorArgs, DoctorFormat},
    discovery::Inspector,
};

/// Every fact under `root`. On "/" the Go processes are found by discovery's
/// `Inspector`; under another root (a fixture tree), by opening
/// `<root>/proc/PID/exe`. NTP status always comes from the running kernel.
pub fn gather(root: &Path) -> Facts {
    if root == Path::new("/") {
        gather_with(root, &mut Inspector::default())
    } else {
        gather_with(root, &mut ExecutableFiles { root: root.to_path_buf() })
    }
}

/// `gather` with a caller's detector (the agent passes its own, cached `Inspector`).
pub fn gather_with(root: &Path, detector: &mut dyn GoDetector) -> Facts {
    gather::gather(root, detector)
}

/// Every check on this host, as `golens doctor` shows them. Reads each file
/// once and never sleeps: cheap enough for the agent to run on a tick.
pub fn run_checks() -> Vec<Check> {
    evaluate(&gather(Path::new("/")))
}

/// `golens doctor`: prints the checks; the exit status is 0 when all pass,
/// 1 when some warn or are unknown, 2 when some fail.
pub fn doctor(args: &DoctorArgs) -> Result<ExitCode> {
    let facts = gather(&args.root);
    let checks = evaluate(&facts);
    let report = render::Report::new(&args.root.display().to_string(), &facts, &checks);
    let mut out = std::io::stdout().lock();
    match args.format {
        DoctorFormat::Text => render::text(&mut out, &report),
        DoctorFormat::Json => render::json(&mut out, &report),
    }
    .and_then(|()| out.flush())
    .context("writing the report to stdout")?;
    Ok(ExitCode::from(report.exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real host, as whoever runs the tests: every check is there, and
    /// host-wide values that every Linux has are read.
    #[test]
    fn run_checks_on_this_host() {
        let checks = run_checks();
        assert_eq!(checks.iter().map(|c| c.id).collect::<Vec<_>>(), CHECK_IDS);
        for id in ["vm_max_map_count", "fs_file_max", "vm_overcommit_memory", "somaxconn"] {
            let check = checks.iter().find(|c| c.id == id).unwrap();
            assert!(!check.value.starts_with("cannot read"), "{check:?}");
        }
    }
}
