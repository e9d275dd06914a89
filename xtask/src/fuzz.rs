//! `cargo xtask fuzz`: run the parsers' fuzz targets (agent/fuzz) for a while each.
//!
//! cargo-fuzz needs a nightly compiler (sanitizer flags): rustup's nightly when
//! installed, else the stable compiler with RUSTC_BOOTSTRAP=1. Seeds come from
//! a real stripped Go binary, so the fuzzer starts from valid ELF, build info
//! and pclntab instead of having to discover their magic numbers.

use std::{fs, path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::{
    setup,
    util::{self, run_checked, step, workspace_root},
};

/// (fuzz target, section of the seed binary it starts from; None = the whole file)
const TARGETS: &[(&str, Option<&str>)] = &[
    ("buildinfo", Some(".go.buildinfo")),
    ("pclntab", Some(".gopclntab")),
    ("go_binary", None),
    ("proc_stat", None),
];

pub fn fuzz(args: &[String]) -> Result<()> {
    let seconds: u64 = match args {
        [] => 30,
        [flag, value] if flag == "--seconds" => {
            value.parse().context("--seconds takes a number")?
        }
        _ => bail!("usage: cargo xtask fuzz [--seconds N]  (per target; default 30)"),
    };
    setup::setup()?;
    ensure_cargo_fuzz()?;
    let fuzz_dir = workspace_root().join("agent/fuzz");
    let seed = util::build_workload("gcburn")?;
    for (target, section) in TARGETS {
        let corpus = fuzz_dir.join("corpus").join(target);
        fs::create_dir_all(&corpus)?;
        let max_len = seed_corpus(&seed, target, *section, &corpus)?;
        step(&format!("fuzzing {target} for {seconds} s (max input {max_len} bytes)"));
        let mut command = cargo_fuzz();
        command
            .current_dir(&fuzz_dir)
            .args(["fuzz", "run", "--fuzz-dir", ".", target])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-max_len={max_len}"));
        run_checked(&mut command).with_context(|| {
            format!("fuzz target {target} found a failure: see agent/fuzz/artifacts/{target}/")
        })?;
    }
    Ok(())
}

/// Puts the seed for `target` into `corpus`; returns the max input length to allow.
fn seed_corpus(seed: &Path, target: &str, section: Option<&str>, corpus: &Path) -> Result<usize> {
    let file = corpus.join("seed");
    match (target, section) {
        ("proc_stat", _) => {
            fs::write(
                &file,
                "42 (a (b) c) S 1 42 42 0 -1 4194560 1 0 0 0 5 3 0 0 20 0 7 0 123456 1 2",
            )?;
            return Ok(4096);
        }
        (_, Some(section)) => run_checked(
            Command::new("objcopy")
                .args(["-O", "binary", "--only-section", section])
                .arg(seed)
                .arg(&file),
        )?,
        (_, None) => {
            fs::copy(seed, &file)?;
        }
    }
    Ok(fs::metadata(&file)?.len().max(4096) as usize)
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new("cargo").args(["fuzz", "--version"]).output();
    if installed.is_ok_and(|out| out.status.success()) {
        return Ok(());
    }
    step("installing cargo-fuzz (crates.io)");
    run_checked(Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]))
}

/// `cargo +nightly` when rustup has nightly, else stable with RUSTC_BOOTSTRAP=1.
fn cargo_fuzz() -> Command {
    let nightly = Command::new("rustup").args(["toolchain", "list"]).output().is_ok_and(|out| {
        String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("nightly"))
    });
    let mut command = Command::new("cargo");
    if nightly {
        command.arg("+nightly");
    } else {
        command.env("RUSTC_BOOTSTRAP", "1");
    }
    command
}
