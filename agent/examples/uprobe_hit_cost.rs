//! What one uprobe hit costs the process that hits it, on this kernel.
//!
//!   cargo run --release --example uprobe_hit_cost -- BINARY CALLER CALLEE ITERATIONS
//!
//! BINARY is a program that prints "ready", waits for a line on stdin, calls
//! CALLEE from CALLER ITERATIONS times and prints its own CPU time per
//! iteration ("<us> us/iter"): tests/workloads/hitloop is one (`main.main`,
//! `main.work`). golens' dispatch program is attached with a uprobe_multi
//! link at the CALL site (an instruction the kernel emulates), the way the
//! agent attaches its runtime probes, as the `stw_started` probe. Three
//! cases, five alternating runs each: no probe; probe, process not tracked
//! (the handler returns after one lookup); probe, process tracked (the
//! handler does a probe's whole work); and, for comparison, the callee's
//! RET, which the kernel single-steps. Differences of the medians are the
//! cost of one hit.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use golens::{discovery::pidns::ProcView, gobinary::GoBinary, probes};
use golens_ebpf::{bindings, uprobes, GoStats};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [binary, caller, callee, iterations] = args.as_slice() else {
        bail!("usage: uprobe_hit_cost BINARY CALLER CALLEE ITERATIONS");
    };
    let binary = PathBuf::from(binary);
    let go = GoBinary::open(&binary).context("reading the binary")?;
    let (caller_fn, callee_fn) = (
        go.function(caller).context("caller not found")?,
        go.function(callee).context("callee not found")?,
    );
    let offsets: Vec<u64> =
        go.call_sites(&caller_fn, &callee_fn)?.iter().map(|p| p.file_offset).collect();
    let cookies = vec![u64::from(bindings::GOLENS_GOPROBE_STW_STARTED); offsets.len()];
    // For comparison: the callee's RETs, which the kernel single-steps.
    let returns: Vec<u64> = go.return_offsets(&callee_fn)?.iter().map(|p| p.file_offset).collect();
    let return_cookies = vec![cookies[0]; returns.len()];

    let view = ProcView::current()?;
    let mut kernel = probes::KernelSide::load(probes::load_btf(None)?, 16, &view)?;
    let multi = kernel.load_multi_uprobes().map_err(anyhow::Error::msg)?;
    let (mut maps, _, _) = kernel.take_maps()?;

    let mut results: [Vec<f64>; 4] = Default::default();
    for _ in 0..5 {
        for (case, times) in results.iter_mut().enumerate() {
            let link = match case {
                0 => None,
                1 | 2 => Some(multi.attach(uprobes::DISPATCH, &binary, &offsets, &cookies)?),
                _ => Some(multi.attach(uprobes::DISPATCH, &binary, &returns, &return_cookies)?),
            };
            times.push(run(&binary, iterations, |pid| {
                if case >= 2 {
                    maps.go_stats.insert(pid, GoStats::default(), 0)?;
                    maps.tracked.insert(pid, 0, 0)?;
                }
                Ok(())
            })?);
            drop(link);
        }
    }
    let medians: Vec<f64> = results
        .iter_mut()
        .map(|v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    for (name, times) in ["no probe", "not tracked", "tracked", "RET, tracked"].iter().zip(&results)
    {
        println!("{name:>12}: {times:?} us/iter");
    }
    println!("one emulated uprobe hit, process not tracked: {:.2} us", medians[1] - medians[0]);
    println!("one emulated uprobe hit, process tracked:     {:.2} us", medians[2] - medians[0]);
    println!("one single-stepped (RET) hit, tracked:        {:.2} us", medians[3] - medians[0]);
    Ok(())
}

/// Starts the program, lets `prepare` see its pid, then runs its loop.
fn run(binary: &Path, iterations: &str, prepare: impl FnOnce(u32) -> Result<()>) -> Result<f64> {
    let mut child = Command::new(binary)
        .arg(iterations)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    lines.next().context("no ready line")??;
    prepare(child.id())?;
    child.stdin.as_mut().context("stdin")?.write_all(b"go\n")?;
    let line = lines.next().context("no result line")??;
    child.wait()?;
    line.split_whitespace().next().and_then(|v| v.parse().ok()).context("us/iter")
}
