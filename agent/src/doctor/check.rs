//! The verdict of one doctor check, as every output (text, JSON, the agent's
//! metric) shows it.

use serde::Serialize;

/// Ordered by severity for the exit status: `Unknown` counts as a warning (a
/// check that could not be made deserves a look, but proves nothing wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// The value could not be read (the reason is in the check's value or details).
    Unknown,
    Warn,
    Fail,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Unknown => "unknown",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Stable snake_case identifier, e.g. "vm_max_map_count".
    pub id: &'static str,
    pub status: Status,
    /// What was measured, e.g. "65530; busiest Go process 312 VMAs (0.5 %)".
    pub value: String,
    /// Why the setting matters to a Go service.
    pub why: String,
    /// The command or change that fixes it; `None` when the check passes.
    pub fix: Option<String>,
    /// One line per process that did not pass or could not be read.
    pub details: Vec<String>,
}

/// Every check id, in output order. The text and JSON outputs list each of
/// them exactly once.
pub const CHECK_IDS: [&str; 14] = [
    "vm_max_map_count",
    "rlimit_nofile",
    "fs_file_max",
    "ip_local_port_range",
    "tcp_tw_reuse",
    "somaxconn",
    "conntrack",
    "transparent_hugepage",
    "clocksource",
    "ntp_sync",
    "vm_swappiness",
    "vm_overcommit_memory",
    "gomaxprocs",
    "gomemlimit",
];

/// How many checks ended in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub unknown: usize,
}

impl Summary {
    pub fn of(checks: &[Check]) -> Summary {
        let mut summary = Summary::default();
        for check in checks {
            match check.status {
                Status::Pass => summary.pass += 1,
                Status::Warn => summary.warn += 1,
                Status::Fail => summary.fail += 1,
                Status::Unknown => summary.unknown += 1,
            }
        }
        summary
    }

    /// 0 when every check passed, 1 when some warned or were unknown, 2 when some failed.
    pub fn exit_code(&self) -> u8 {
        if self.fail > 0 {
            2
        } else if self.warn > 0 || self.unknown > 0 {
            1
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: Status) -> Check {
        Check {
            id: "x",
            status,
            value: String::new(),
            why: String::new(),
            fix: None,
            details: Vec::new(),
        }
    }

    #[test]
    fn exit_code_follows_the_worst_status_and_unknown_counts_as_warn() {
        let code = |statuses: &[Status]| {
            Summary::of(&statuses.iter().map(|&s| check(s)).collect::<Vec<_>>()).exit_code()
        };
        assert_eq!(code(&[]), 0);
        assert_eq!(code(&[Status::Pass, Status::Pass]), 0);
        assert_eq!(code(&[Status::Pass, Status::Unknown]), 1);
        assert_eq!(code(&[Status::Warn, Status::Pass]), 1);
        assert_eq!(code(&[Status::Warn, Status::Fail, Status::Unknown]), 2);
    }

    #[test]
    fn severity_order() {
        assert!(Status::Pass < Status::Unknown);
        assert!(Status::Unknown < Status::Warn);
        assert!(Status::Warn < Status::Fail);
    }

    #[test]
    fn ids_are_unique_snake_case() {
        let mut ids = CHECK_IDS.to_vec();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), CHECK_IDS.len());
        assert!(CHECK_IDS.iter().all(|id| id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
    }
}
