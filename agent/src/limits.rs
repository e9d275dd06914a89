//! Limits read without eBPF (`pressure`), and golens doctor's checks, into
//! the snapshot: shared by the full agent's collector and degraded mode.

use std::time::{Duration, Instant};

use crate::{
    discovery::inspect::BinaryInfo,
    doctor,
    pressure::{self, GoRuntimeHints, ProcessReader},
    snapshot::{HostSnapshot, LimitsSnapshot},
};

/// How often the host checks run: they inspect every process and read
/// several dozen files (~90 ms here with a few processes, more with
/// hundreds), which every 5 s, or even every minute at 300 processes, would
/// break the idle CPU budget; the settings they check rarely change.
const CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// Reads host pressure every collection, the checks every CHECK_INTERVAL.
#[derive(Default)]
pub struct LimitsReader {
    checks: std::collections::BTreeMap<String, u8>,
    checked_at: Option<Instant>,
}

impl LimitsReader {
    /// A reader of per-process limits for one collection (mountinfo read once).
    pub fn processes(&self) -> ProcessReader {
        ProcessReader::new()
    }

    pub fn host(&mut self) -> HostSnapshot {
        if self.checked_at.is_none_or(|at| at.elapsed() >= CHECK_INTERVAL) {
            self.checks = doctor::run_checks()
                .into_iter()
                .map(|check| (check.id.to_string(), status_value(check.status)))
                .collect();
            self.checked_at = Some(Instant::now());
        }
        let host = pressure::read_host();
        HostSnapshot {
            max_map_count: host.max_map_count,
            files_allocated: host.files_allocated,
            files_max: host.files_max,
            ephemeral_ports: host.ephemeral_ports,
            ephemeral_ports_used: host.ephemeral_ports_used,
            tcp_time_wait: host.tcp_time_wait,
            listen_overflows: host.listen_overflows,
            conntrack_entries: host.conntrack_entries,
            conntrack_max: host.conntrack_max,
            checks: self.checks.clone(),
        }
    }
}

/// 0 pass, 1 warn (unknown counts as warn, as `golens doctor` says), 2 fail.
fn status_value(status: doctor::Status) -> u8 {
    use doctor::Status;
    match status {
        Status::Pass => 0,
        Status::Warn | Status::Unknown => 1,
        Status::Fail => 2,
    }
}

/// One process's limits.
pub fn read_process(reader: &ProcessReader, pid: u32, binary: &BinaryInfo) -> LimitsSnapshot {
    let hints = GoRuntimeHints { version: binary.go_version.as_deref(), ..Default::default() };
    let read = reader.read_process(pid, hints);
    LimitsSnapshot {
        open_fds: read.open_fds,
        max_fds: read.max_fds,
        vmas: read.vmas,
        cpu_throttled_seconds: read.cpu_throttled_seconds,
        cpu_quota_cores: read.cpu_quota_cores,
        gomaxprocs: read.gomaxprocs,
        gomaxprocs_source: read.gomaxprocs_source.map(|s| s.as_str().to_string()),
        cpu_seconds: crate::pressure::cpu_seconds(pid),
    }
}
