//! `cargo xtask demo`: golens watching a bundled Go service under load.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{setup, util};

const DEMO_LISTEN: &str = "127.0.0.1:8089";
const GOLENS_LISTEN: &str = "127.0.0.1:9477";

pub fn demo(args: &[String]) -> Result<()> {
    let seconds = parse_seconds(args)?;
    setup::setup()?;
    if !util::is_root() {
        bail!("golens loads eBPF programs: run `cargo xtask demo` as root");
    }
    util::build_release()?;
    let demo_binary = util::build_workload("demo")?;

    util::step(&format!(
        "starting the demo Go service on {DEMO_LISTEN} (with 4 self-load clients)"
    ));
    let service = util::start_demo_service(&demo_binary, DEMO_LISTEN, 4)?;
    let pid = service.0.id();
    util::step(&format!("starting golens run --pid {pid}"));
    let _golens = util::start_golens(pid, GOLENS_LISTEN, "1s")?;

    std::thread::sleep(Duration::from_secs(3));
    let url = format!("http://{GOLENS_LISTEN}/metrics");
    let (_, body) = util::http_get(&url).context("scraping golens")?;
    println!("\ngolens is watching the demo service (pid {pid}).");
    println!("Metrics: {url}    JSON: http://{GOLENS_LISTEN}/api/v1/snapshot\n");
    println!("A sample of what it shows:");
    for line in sample_lines(&body) {
        println!("  {line}");
    }
    match seconds {
        Some(seconds) => {
            println!("\nstopping in {seconds} s");
            std::thread::sleep(Duration::from_secs(seconds));
        }
        None => {
            println!("\nPress Ctrl-C to stop.");
            let started = Instant::now();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
                if started.elapsed() > Duration::from_secs(24 * 3600) {
                    break;
                }
            }
        }
    }
    Ok(())
}

fn parse_seconds(args: &[String]) -> Result<Option<u64>> {
    match args {
        [] => Ok(None),
        [flag, value] if flag == "--seconds" => {
            Ok(Some(value.parse().context("--seconds takes a whole number")?))
        }
        _ => bail!("usage: cargo xtask demo [--seconds N]"),
    }
}

/// The lines worth showing: process info, run-queue latency, switches, GC and pauses.
fn sample_lines(body: &str) -> Vec<&str> {
    body.lines()
        .filter(|line| {
            !line.starts_with('#')
                && (line.starts_with("golens_process_info")
                    || line.starts_with("golens_sched_runqueue_latency_seconds_count")
                    || line.starts_with("golens_sched_runqueue_latency_seconds_sum")
                    || (line.starts_with("golens_sched_runqueue_latency_seconds_bucket")
                        && (line.contains("le=\"0.000016384\"")
                            || line.contains("le=\"0.000131072\"")
                            || line.contains("le=\"0.001048576\"")))
                    || line.starts_with("golens_sched_involuntary_switches_total")
                    || line.starts_with("golens_go_gc_cycles_total")
                    || line.starts_with("golens_go_gc_cycle_duration_seconds_sum")
                    || line.starts_with("golens_go_stw_pause_seconds_count")
                    || line.starts_with("golens_go_stw_pause_seconds_sum")
                    || line.starts_with("golens_go_sysmon_preemptions_total")
                    || line.starts_with("golens_agent_tracked_processes"))
        })
        .collect()
}
