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
    /// Every RET instruction (never a uretprobe). Single-stepped (~15 us a
    /// hit here): only a fallback, when no emulated point marks the moment.
    Returns,
    /// Every direct CALL to the named function.
    CallsTo(&'static str),
    /// The last conditional branch before the function's RET that leads to
    /// a call of the named function (a final `if bad { throw(...) }`).
    BranchToCallBeforeReturn(&'static str),
    /// No point of its own: the named probe's program measures it too. The
    /// probe is attached exactly when that one is.
    DerivedFrom(&'static str),
}

impl Site {
    /// For `golens list -v`: where on the function the probe sits.
    pub fn describe(self) -> String {
        match self {
            Site::Entry => "entry (stack-check jbe)".to_string(),
            Site::Returns => "every RET (fallback: single-stepped)".to_string(),
            Site::CallsTo(callee) => format!("CALL {callee}"),
            Site::BranchToCallBeforeReturn(callee) => format!("last branch to {callee} before RET"),
            Site::DerivedFrom(probe) => format!("no point of its own: measured by {probe}"),
        }
    }
}

/// The `--probes` families made of runtime uprobes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UprobeFamily {
    /// GC, stop-the-world and sysmon: rare events (a few hits
    /// per GC cycle). On by default.
    Goruntime,
    /// runtime.netpoll: several hits per request of a network service.
    /// Opt-in (see the README for its measured cost).
    Gonetpoll,
}

impl UprobeFamily {
    /// Every uprobe family (tests, fuzzing: plan every probe).
    pub const ALL: &'static [UprobeFamily] = &[UprobeFamily::Goruntime, UprobeFamily::Gonetpoll];
    /// The families on by default (`golens list` without an agent plans these).
    pub const DEFAULT: &'static [UprobeFamily] = &[UprobeFamily::Goruntime];
}

/// One probe of the version table.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeProbe {
    /// Stable name, the `probe` label of `golens_probe_attached`.
    pub name: &'static str,
    /// The `--probes` family that switches it on.
    pub family: UprobeFamily,
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
    /// Where the probe goes when `site` is not found in a binary (renamed or
    /// inlined callee, an unknown version): `golens list -v` says when.
    pub fallback: Option<Site>,
}

/// First Go release with the register ABI on amd64; older ones are not probed.
pub const OLDEST_SUPPORTED: GoVersion = GoVersion::new(1, 17, 0);
/// Newest release the tests run against; newer ones are probed with a warning.
pub const NEWEST_TESTED: GoVersion = GoVersion::new(1, 27, 3);

const V1_17: GoVersion = OLDEST_SUPPORTED;
/// `stopTheWorldWithSema(reason stwReason)`: Go 1.21 added the argument.
const V1_21: GoVersion = GoVersion::new(1, 21, 0);
/// `stopTheWorldWithSema` returns a `worldStop` and records its own stopping
/// time (`/sched/pauses/stopping/*`): Go 1.22.
const V1_22: GoVersion = GoVersion::new(1, 22, 0);

const fn probe(
    name: &'static str,
    function: &'static str,
    site: Site,
    program: &'static str,
) -> RuntimeProbe {
    RuntimeProbe {
        name,
        family: UprobeFamily::Goruntime,
        function,
        site,
        program,
        since: V1_17,
        until: None,
        decodes_arguments: false,
        fallback: None,
    }
}

/// Every runtime probe. Several rows may share a `name`: exactly one applies
/// to a given version.
///
/// The pause windows are the runtime's own (what `go_gc_duration_seconds`,
/// `MemStats.PauseTotalNs` and `/sched/pauses/total/*` report), read in the
/// runtime's source of every version 1.17-1.27:
/// - a pause starts as `stopTheWorldWithSema` starts (1.22+: its `start :=
///   nanotime()` after `lock(&sched.lock)`; before: the caller's `nanotime()`
///   just before calling it). Probe: its entry.
/// - it ends at `startTheWorldWithSema`'s `nanotime()` taken before
///   `wakep()` (probe: the CALL to `runtime.wakep`), except for mark
///   termination, which ends at gcMarkTermination's `now := nanotime()`,
///   right before `time_now()` (probe: the CALL to `time.now`). The world
///   stays stopped after that for the runtime's own bookkeeping until
///   `startTheWorldWithSema`: golens reports that tail apart.
/// - time to stop ends at 1.22+'s `finish := nanotime()` inside
///   `stopTheWorldWithSema`, followed by the `record` of that time (probe:
///   those CALLs); before 1.22 the runtime does not measure it, and golens
///   ends it at the function's final sanity check (`if bad != "" {
///   throw(bad) }`), its last instruction before returning.
///
/// Every point is a CALL or a conditional branch: instructions the kernel
/// emulates, so no probe is single-stepped inside a pause.
pub const RUNTIME_PROBES: &[RuntimeProbe] = &[
    // Once per GC cycle, once gcStart's trigger checks passed.
    RuntimeProbe {
        until: Some(V1_21),
        ..probe("gc_cycle_start", "runtime.gcResetMarkState", Site::Entry, uprobes::GC_CYCLE_START)
    },
    // Go 1.21+ passes the stop's reason: sweep termination's stop is the
    // cycle's start (work.tSweepTerm), counted by the stw_stop program.
    RuntimeProbe {
        since: V1_21,
        decodes_arguments: true,
        ..probe(
            "gc_cycle_start",
            "runtime.stopTheWorldWithSema",
            Site::DerivedFrom("stw_stop"),
            uprobes::STW_STOP_REASON,
        )
    },
    // `now := nanotime(); sec, nsec, _ := time_now()`: the end of the cycle
    // (work.tEnd) and of the mark-termination pause.
    RuntimeProbe {
        fallback: Some(Site::Returns),
        ..probe(
            "gc_cycle_end",
            "runtime.gcMarkTermination",
            Site::CallsTo("time.now"),
            uprobes::GC_CYCLE_END,
        )
    },
    RuntimeProbe {
        until: Some(V1_21),
        ..probe("stw_stop", "runtime.stopTheWorldWithSema", Site::Entry, uprobes::STW_STOP)
    },
    RuntimeProbe {
        since: V1_21,
        decodes_arguments: true,
        ..probe("stw_stop", "runtime.stopTheWorldWithSema", Site::Entry, uprobes::STW_STOP_REASON)
    },
    RuntimeProbe {
        until: Some(V1_22),
        fallback: Some(Site::Returns),
        ..probe(
            "stw_stopped",
            "runtime.stopTheWorldWithSema",
            Site::BranchToCallBeforeReturn("runtime.throw"),
            uprobes::STW_STOPPED,
        )
    },
    RuntimeProbe {
        since: V1_22,
        fallback: Some(Site::Returns),
        ..probe(
            "stw_stopped",
            "runtime.stopTheWorldWithSema",
            Site::CallsTo("runtime.(*timeHistogram).record"),
            uprobes::STW_STOPPED,
        )
    },
    RuntimeProbe {
        fallback: Some(Site::Returns),
        ..probe(
            "stw_started",
            "runtime.startTheWorldWithSema",
            Site::CallsTo("runtime.wakep"),
            uprobes::STW_STARTED,
        )
    },
    probe(
        "sysmon_preempt",
        "runtime.retake",
        Site::CallsTo("runtime.preemptone"),
        uprobes::SYSMON_PREEMPT,
    ),
    // `netpoll(delay int64) gList` (1.17-1.20), `(gList, int32)` (1.21+):
    // delay in AX, the same meaning in every version (<0 block, 0 poll,
    // >0 block at most delay ns). Frequent: opt-in family.
    RuntimeProbe {
        family: UprobeFamily::Gonetpoll,
        decodes_arguments: true,
        ..probe("netpoll", "runtime.netpoll", Site::Entry, uprobes::NETPOLL)
    },
];

/// Distinct probe names of the given families, in table order.
pub fn probe_names(families: &[UprobeFamily]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for probe in RUNTIME_PROBES.iter().filter(|p| families.contains(&p.family)) {
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
            for name in probe_names(UprobeFamily::ALL) {
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
    fn every_row_of_a_name_is_in_the_same_family() {
        for probe in RUNTIME_PROBES {
            assert!(
                RUNTIME_PROBES
                    .iter()
                    .filter(|p| p.name == probe.name)
                    .all(|p| p.family == probe.family),
                "{}",
                probe.name
            );
        }
        assert!(!probe_names(UprobeFamily::DEFAULT).contains(&"netpoll"), "netpoll is opt-in");
        assert_eq!(probe_names(&[UprobeFamily::Gonetpoll]), ["netpoll"]);
    }

    #[test]
    fn every_probe_program_exists_in_the_object_names() {
        for probe in RUNTIME_PROBES {
            assert!(uprobes::ALL.contains(&probe.program), "{}", probe.program);
        }
    }
}
