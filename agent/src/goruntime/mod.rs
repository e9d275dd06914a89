//! Go runtime probes: which runtime functions are probed, where, on which Go
//! versions, and how their kernel counters read.
//!
//! Version differences are data (the table below), not scattered ifs.

pub mod plan;
pub mod version;

use golens_ebpf::uprobes;
pub use version::GoVersion;

/// Where on a function a probe goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The stack-check branch after the prologue (never the first byte).
    Entry,
    /// Every RET instruction (never a uretprobe).
    Returns,
    /// Every direct CALL to the named function.
    CallsTo(&'static str),
}

/// One probe of the version table.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeProbe {
    /// Stable name, the `probe` label of `golens_probe_attached`.
    pub name: &'static str,
    pub function: &'static str,
    pub site: Site,
    /// eBPF program (see `bpf/goruntime.bpf.c`).
    pub program: &'static str,
    /// Go versions it applies to: `since <= v < until`.
    pub since: GoVersion,
    pub until: Option<GoVersion>,
    /// Reads a register argument whose meaning depends on the version: never
    /// used when the version is unknown.
    pub decodes_arguments: bool,
}

/// First Go release with the register ABI on amd64; older ones are not probed.
pub const OLDEST_SUPPORTED: GoVersion = GoVersion::new(1, 17, 0);
/// Newest release the tests run against; newer ones are probed with a warning.
pub const NEWEST_TESTED: GoVersion = GoVersion::new(1, 27, 3);

const V1_17: GoVersion = OLDEST_SUPPORTED;
/// `stopTheWorldWithSema(reason stwReason)`: Go 1.21 added the argument.
const V1_21: GoVersion = GoVersion::new(1, 21, 0);

const fn probe(
    name: &'static str,
    function: &'static str,
    site: Site,
    program: &'static str,
) -> RuntimeProbe {
    RuntimeProbe {
        name,
        function,
        site,
        program,
        since: V1_17,
        until: None,
        decodes_arguments: false,
    }
}

/// Every runtime probe. Several rows may share a `name`: exactly one applies
/// to a given version.
pub const RUNTIME_PROBES: &[RuntimeProbe] = &[
    // Once per GC cycle, once gcStart's trigger checks passed.
    probe("gc_cycle_start", "runtime.gcResetMarkState", Site::Entry, uprobes::GC_CYCLE_START),
    probe("gc_cycle_end", "runtime.gcMarkTermination", Site::Returns, uprobes::GC_CYCLE_END),
    RuntimeProbe {
        until: Some(V1_21),
        ..probe("stw_stop", "runtime.stopTheWorldWithSema", Site::Entry, uprobes::STW_STOP)
    },
    RuntimeProbe {
        since: V1_21,
        decodes_arguments: true,
        ..probe("stw_stop", "runtime.stopTheWorldWithSema", Site::Entry, uprobes::STW_STOP_REASON)
    },
    probe("stw_stopped", "runtime.stopTheWorldWithSema", Site::Returns, uprobes::STW_STOPPED),
    probe("stw_started", "runtime.startTheWorldWithSema", Site::Returns, uprobes::STW_STARTED),
    probe(
        "sysmon_preempt",
        "runtime.retake",
        Site::CallsTo("runtime.preemptone"),
        uprobes::SYSMON_PREEMPT,
    ),
];

/// Distinct probe names, in table order.
pub fn probe_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for probe in RUNTIME_PROBES {
        if !names.contains(&probe.name) {
            names.push(probe.name);
        }
    }
    names
}

/// `runtime.stwReason` names (Go 1.21-1.27 share one list), snake_case of
/// the runtime's own `stwReasonStrings`. Index 0 doubles as "unknown" for
/// versions that pass no reason and for values newer than this list.
pub const STW_REASON_NAMES: [&str; golens_ebpf::STW_REASONS] = [
    "unknown",
    "gc_mark_termination",
    "gc_sweep_termination",
    "write_heap_dump",
    "goroutine_profile",
    "goroutine_profile_cleanup",
    "all_goroutines_stack_trace",
    "read_mem_stats",
    "all_threads_syscall",
    "gomaxprocs",
    "start_trace",
    "stop_trace",
    "count_pages_in_use_test",
    "read_metrics_slow_test",
    "read_mem_stats_slow_test",
    "page_cache_pages_leaked_test",
    "reset_debug_log_test",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_row_per_name_applies_to_each_version() {
        for minor in 17..=40 {
            let version = GoVersion::new(1, minor, 0);
            for name in probe_names() {
                let rows = RUNTIME_PROBES
                    .iter()
                    .filter(|p| {
                        p.name == name && p.since <= version && p.until.is_none_or(|u| version < u)
                    })
                    .count();
                assert_eq!(rows, 1, "{name} on {version}");
            }
        }
    }

    #[test]
    fn every_probe_program_exists_in_the_object_names() {
        for probe in RUNTIME_PROBES {
            assert!(uprobes::ALL.contains(&probe.program), "{}", probe.program);
        }
    }
}
