//! The doctor's judgement: a pure function from `Facts` to checks. No file is
//! read here, so every rule is unit-tested on fixture facts.
//!
//! Thresholds are data: `RATIO_WARN`/`RATIO_FAIL` for every "used vs limit"
//! check, and one named constant per other rule.

mod host;
mod network;
mod process;

#[cfg(test)]
pub(super) mod fixtures;

use super::{
    check::{Check, Status},
    facts::{Facts, GoProcess, Unreadable, UnreadableKind},
};

/// A used/limit ratio above this warns…
pub const RATIO_WARN: f64 = 0.5;
/// …and above this fails.
pub const RATIO_FAIL: f64 = 0.9;

/// Every check, in `CHECK_IDS` order.
pub fn evaluate(facts: &Facts) -> Vec<Check> {
    vec![
        process::vm_max_map_count(facts),
        process::rlimit_nofile(facts),
        host::fs_file_max(facts),
        network::ip_local_port_range(facts),
        network::tcp_tw_reuse(facts),
        network::somaxconn(facts),
        host::conntrack(facts),
        host::transparent_hugepage(facts),
        host::clocksource(facts),
        host::ntp_sync(facts),
        host::vm_swappiness(facts),
        host::vm_overcommit_memory(facts),
        process::gomaxprocs(facts),
        process::gomemlimit(facts),
    ]
}

fn ratio_status(used: u64, limit: u64) -> Status {
    let ratio = ratio(used, limit);
    if ratio > RATIO_FAIL {
        Status::Fail
    } else if ratio > RATIO_WARN {
        Status::Warn
    } else {
        Status::Pass
    }
}

fn ratio(used: u64, limit: u64) -> f64 {
    if limit == 0 {
        if used == 0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        used as f64 / limit as f64
    }
}

/// "12.5 %".
fn percent(used: u64, limit: u64) -> String {
    format!("{:.1} %", ratio(used, limit) * 100.0)
}

/// "512 MiB", "1.5 GiB".
fn bytes(value: u64) -> String {
    let units = [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, scale) in units {
        if value >= scale {
            let scaled = value as f64 / scale as f64;
            return if scaled.fract() == 0.0 {
                format!("{scaled:.0} {unit}")
            } else {
                format!("{scaled:.1} {unit}")
            };
        }
    }
    format!("{value} B")
}

/// The fix of a check that could not be read: only a missing permission has one.
const RUN_AS_ROOT: &str = "run golens doctor as root with CAP_SYS_PTRACE (e.g. sudo) to read \
                           other users' processes; a process with capabilities golens lacks \
                           stays unreadable";

/// A check with its fix kept only when it did not pass.
fn check(id: &'static str, status: Status, value: String, why: &str, fix: String) -> Check {
    Check {
        id,
        status,
        value,
        why: why.to_string(),
        fix: (status != Status::Pass).then_some(fix),
        details: Vec::new(),
    }
}

/// A host check whose input could not be read.
fn unknown(id: &'static str, error: &Unreadable, why: &str) -> Check {
    Check {
        id,
        status: Status::Unknown,
        value: format!("cannot read {error}"),
        why: why.to_string(),
        fix: (error.kind == UnreadableKind::PermissionDenied).then(|| RUN_AS_ROOT.to_string()),
        details: Vec::new(),
    }
}

/// One Go process judged by a per-process rule.
struct Verdict {
    status: Status,
    /// e.g. "GOMAXPROCS 64 (environment) vs CPU quota 1.00 (…)".
    text: String,
    /// Orders processes of the same status: the worst one is shown in the value.
    severity: f64,
}

/// A per-process check: every Go process judged, the worst one in the value,
/// each one that did not pass (or could not be read) in the details.
struct PerProcess<'a> {
    id: &'static str,
    why: &'a str,
    /// The value's opening, e.g. "limit 65530".
    prefix: Option<String>,
}

impl PerProcess<'_> {
    fn evaluate(
        self,
        facts: &Facts,
        judge: impl Fn(&GoProcess) -> Result<Verdict, Unreadable>,
        fix: impl Fn(&GoProcess) -> String,
    ) -> Check {
        let processes = &facts.processes;
        let with_prefix = |text: String| match &self.prefix {
            Some(prefix) => format!("{prefix}; {text}"),
            None => text,
        };
        if let Some(error) = &processes.listing_error {
            let mut check = unknown(self.id, error, self.why);
            check.value = with_prefix(check.value);
            return check;
        }
        let mut judged: Vec<(&GoProcess, Verdict)> = Vec::new();
        let mut details = Vec::new();
        let mut permission_denied = false;
        for process in &processes.go {
            match judge(process) {
                Ok(verdict) => judged.push((process, verdict)),
                Err(error) => {
                    permission_denied |= error.kind == UnreadableKind::PermissionDenied;
                    details.push(format!("{}: cannot read {error}", label(process)));
                }
            }
        }
        judged.sort_by(|(_, a), (_, b)| {
            b.status.cmp(&a.status).then(b.severity.total_cmp(&a.severity))
        });
        let unread = details.len();
        let failing: Vec<String> = judged
            .iter()
            .filter(|(_, verdict)| verdict.status != Status::Pass)
            .map(|(process, verdict)| format!("{}: {}", label(process), verdict.text))
            .collect();
        details.splice(0..0, failing);
        if let Some(line) = processes.uninspected_summary() {
            permission_denied |= processes.uninspected.iter().any(|p| p.permission_denied);
            details.push(line);
        }

        let worst = judged.first();
        let mut status = worst.map_or(Status::Pass, |(_, verdict)| verdict.status);
        if status == Status::Pass && (unread > 0 || !processes.uninspected.is_empty()) {
            status = Status::Unknown;
        }
        let go = processes.go.len();
        let value = match worst {
            None if go == 0 && processes.uninspected.is_empty() => "no Go process running".into(),
            None if go == 0 => "no readable Go process".into(),
            None => format!("no Go process readable ({go} found)"),
            Some((process, verdict)) => {
                let of = match (go, verdict.status) {
                    (1, _) => String::new(),
                    (_, Status::Pass) => format!(" (highest of {go} Go processes)"),
                    _ => format!(" (worst of {go} Go processes)"),
                };
                format!("{}: {}{of}", label(process), verdict.text)
            }
        };
        let fix = match (status, worst) {
            (Status::Warn | Status::Fail, Some((process, _))) => Some(fix(process)),
            (Status::Unknown, _) if permission_denied => Some(RUN_AS_ROOT.to_string()),
            _ => None,
        };
        Check {
            id: self.id,
            status,
            value: with_prefix(value),
            why: self.why.to_string(),
            fix,
            details,
        }
    }
}

/// "pid 42 (api)".
fn label(process: &GoProcess) -> String {
    format!("pid {} ({})", process.pid, process.comm)
}

#[cfg(test)]
mod tests {
    use super::{fixtures::*, *};
    use crate::doctor::check::CHECK_IDS;

    #[test]
    fn every_check_once_in_order() {
        let checks = evaluate(&healthy());
        let ids: Vec<&str> = checks.iter().map(|c| c.id).collect();
        assert_eq!(ids, CHECK_IDS);
    }

    #[test]
    fn a_healthy_host_passes_everything_without_fixes() {
        for check in evaluate(&healthy()) {
            assert_eq!(check.status, Status::Pass, "{check:?}");
            assert_eq!(check.fix, None, "{check:?}");
            assert!(!check.why.is_empty() && !check.value.is_empty(), "{check:?}");
        }
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio_status(50, 100), Status::Pass);
        assert_eq!(ratio_status(51, 100), Status::Warn);
        assert_eq!(ratio_status(90, 100), Status::Warn);
        assert_eq!(ratio_status(91, 100), Status::Fail);
        assert_eq!(ratio_status(0, 0), Status::Pass);
        assert_eq!(ratio_status(1, 0), Status::Fail);
        assert_eq!(percent(1, 8), "12.5 %");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(512 << 20), "512 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(100), "100 B");
    }

    #[test]
    fn uninspected_processes_make_per_process_checks_unknown() {
        let mut facts = healthy();
        facts.processes.uninspected = vec![uninspected(1), uninspected(77)];
        let checks = evaluate(&facts);
        for id in ["vm_max_map_count", "rlimit_nofile", "gomaxprocs", "gomemlimit"] {
            let check = checks.iter().find(|c| c.id == id).unwrap();
            assert_eq!(check.status, Status::Unknown, "{check:?}");
            assert_eq!(check.fix.as_deref(), Some(RUN_AS_ROOT), "{check:?}");
            let last = check.details.last().unwrap();
            assert!(
                last.starts_with("2 processes not inspected (pid 1 secret, 77 secret)"),
                "{last}"
            );
            assert!(
                last.contains("they are Go is unknown") && last.contains("CAP_SYS_PTRACE"),
                "{last}"
            );
        }
        let host = checks.iter().find(|c| c.id == "fs_file_max").unwrap();
        assert_eq!(host.status, Status::Pass, "host-wide checks do not depend on processes");
    }

    #[test]
    fn no_go_process_at_all_passes_with_a_clear_value() {
        let mut facts = healthy();
        facts.processes.go.clear();
        for check in evaluate(&facts) {
            assert_eq!(check.status, Status::Pass, "{check:?}");
        }
        let check = process::gomaxprocs(&facts);
        assert_eq!(check.value, "no Go process running");
    }

    #[test]
    fn a_process_listing_error_is_unknown() {
        let mut facts = healthy();
        facts.processes.listing_error = Some(permission_denied("/proc"));
        let check = process::vm_max_map_count(&facts);
        assert_eq!(check.status, Status::Unknown);
        assert!(check.value.contains("/proc: permission denied"), "{}", check.value);
    }

    #[test]
    fn the_worst_process_is_named_and_every_non_passing_one_detailed() {
        let mut facts = healthy();
        facts.max_map_count = Ok(65_530);
        let mut second = go_process(43, "worker");
        second.vma_count = Ok(60_000);
        let mut third = go_process(44, "batch");
        third.vma_count = Ok(40_000);
        facts.processes.go.push(second);
        facts.processes.go.push(third);
        let check = process::vm_max_map_count(&facts);
        assert_eq!(check.status, Status::Fail);
        assert!(check.value.contains("pid 43 (worker)"), "{}", check.value);
        assert!(check.value.contains("worst of 3 Go processes"), "{}", check.value);
        assert_eq!(check.details.len(), 2, "{:?}", check.details);
        assert!(check.details[0].starts_with("pid 43"));
        assert!(check.details[1].starts_with("pid 44"));
    }
}
