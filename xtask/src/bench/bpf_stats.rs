//! Per eBPF program hits and run time (`kernel.bpf_stats_enabled`), read through aya's
//! `loaded_programs()` for the programs the agent of the round holds.

use std::{fs, path::Path};

use anyhow::{bail, Context, Result};

use crate::util;

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns on `kernel.bpf_stats_enabled` (run_cnt/run_time_ns of every program) and puts the
/// previous value back when dropped, on error paths too.
pub struct BpfStatsGuard {
    previous: String,
}

impl BpfStatsGuard {
    pub fn enable() -> Result<Self> {
        let previous = fs::read_to_string(BPF_STATS_SYSCTL)
            .with_context(|| format!("reading {BPF_STATS_SYSCTL}"))?
            .trim()
            .to_owned();
        fs::write(BPF_STATS_SYSCTL, "1")
            .with_context(|| format!("writing 1 to {BPF_STATS_SYSCTL}"))?;
        util::step(&format!("kernel.bpf_stats_enabled = 1 for the bench (was {previous})"));
        Ok(Self { previous })
    }
}

impl Drop for BpfStatsGuard {
    fn drop(&mut self) {
        if let Err(error) = fs::write(BPF_STATS_SYSCTL, &self.previous) {
            eprintln!(
                "xtask: warning: could not restore {BPF_STATS_SYSCTL} to {}: {error}",
                self.previous
            );
        }
    }
}

/// One golens program as sampled at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramSample {
    pub id: u32,
    pub name: String,
    pub kind: &'static str,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// What one program did during one round, or summed over several.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramCost {
    pub name: String,
    pub kind: &'static str,
    pub hits: u64,
    pub run_time_ns: u64,
}

/// Run counts and run times of the programs loaded by the golens process `owner`: the ids
/// behind the bpf-prog fds that `owner` holds (so another golens on the host, e.g. a
/// concurrent test run, is not counted). The kernel keeps 15 bytes of a program name;
/// golens' names fit, and are unique (a test in agent-ebpf checks it).
pub fn sample_programs(owner: u32) -> Result<Vec<ProgramSample>> {
    let ids = program_ids_held_by(owner);
    if ids.is_empty() {
        bail!("golens (pid {owner}) holds no eBPF program fd");
    }
    let mut samples = Vec::new();
    for program in aya::programs::loaded_programs() {
        // A program unloaded between listing and reading is not an error.
        let Ok(program) = program else { continue };
        if !ids.contains(&program.id()) {
            continue;
        }
        samples.push(ProgramSample {
            id: program.id(),
            name: String::from_utf8_lossy(program.name()).into_owned(),
            kind: program_kind(program.program_type() as u32),
            run_count: program.run_count(),
            run_time_ns: u64::try_from(program.run_time().as_nanos()).unwrap_or(u64::MAX),
        });
    }
    if samples.is_empty() {
        bail!("no eBPF program of golens (pid {owner}) found among the loaded programs");
    }
    Ok(samples)
}

fn program_kind(program_type: u32) -> &'static str {
    match program_type {
        // BPF_PROG_TYPE_KPROBE: golens' only programs of that type are its uprobes.
        2 => "uprobe",
        // BPF_PROG_TYPE_TRACING: tp_btf scheduler/process tracepoints.
        26 => "tp_btf",
        _ => "other",
    }
}

/// Program ids behind the `anon_inode:bpf-prog` fds of process `pid`.
fn program_ids_held_by(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    let mut ids = Vec::new();
    for entry in entries.flatten() {
        let is_program = fs::read_link(entry.path())
            .is_ok_and(|target| target == Path::new("anon_inode:bpf-prog"));
        if !is_program {
            continue;
        }
        let fdinfo = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        if let Some(id) = fs::read_to_string(fdinfo).ok().as_deref().and_then(parse_fdinfo_prog_id)
        {
            ids.push(id);
        }
    }
    ids
}

/// The `prog_id:` line of a bpf-prog fd's /proc/PID/fdinfo/FD.
fn parse_fdinfo_prog_id(fdinfo: &str) -> Option<u32> {
    fdinfo.lines().find_map(|line| line.strip_prefix("prog_id:")?.trim().parse().ok())
}

/// Per program, what happened between two samples of the same agent (matched by id: golens
/// is restarted for every round, so ids change between rounds, names do not).
pub fn program_costs(before: &[ProgramSample], after: &[ProgramSample]) -> Vec<ProgramCost> {
    after
        .iter()
        .map(|now| {
            let then = before.iter().find(|b| b.id == now.id);
            let (count, time) = then.map_or((0, 0), |b| (b.run_count, b.run_time_ns));
            ProgramCost {
                name: now.name.clone(),
                kind: now.kind,
                hits: now.run_count.saturating_sub(count),
                run_time_ns: now.run_time_ns.saturating_sub(time),
            }
        })
        .collect()
}

/// Adds `round` into `total`, by program name.
pub fn merge_costs(total: &mut Vec<ProgramCost>, round: &[ProgramCost]) {
    for cost in round {
        match total.iter_mut().find(|t| t.name == cost.name) {
            Some(t) => {
                t.hits += cost.hits;
                t.run_time_ns += cost.run_time_ns;
            }
            None => total.push(cost.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fdinfo_of_a_program_fd() {
        let fdinfo = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_tag:\t6427014242fb6c53\n\
                      prog_id:\t386\nrun_time_ns:\t0\nrun_cnt:\t0\n";
        assert_eq!(parse_fdinfo_prog_id(fdinfo), Some(386));
        assert_eq!(parse_fdinfo_prog_id("pos:\t0\nmap_id:\t3\n"), None);
    }

    fn sample(id: u32, name: &str, run_count: u64, run_time_ns: u64) -> ProgramSample {
        ProgramSample { id, name: name.into(), kind: "uprobe", run_count, run_time_ns }
    }

    #[test]
    fn program_costs_are_deltas_merged_by_name() {
        let before = [sample(1, "golens_go_gc_cycle_start", 10, 1_000)];
        let after = [
            sample(1, "golens_go_gc_cycle_start", 30, 5_000),
            sample(2, "golens_go_gc_cycle_end", 4, 400),
        ];
        let round = program_costs(&before, &after);
        assert_eq!((round[0].hits, round[0].run_time_ns), (20, 4_000));
        assert_eq!((round[1].hits, round[1].run_time_ns), (4, 400));
        let mut total = Vec::new();
        merge_costs(&mut total, &round);
        merge_costs(&mut total, &round);
        assert_eq!(total.len(), 2);
        assert_eq!((total[0].hits, total[0].run_time_ns), (40, 8_000));
    }
}
