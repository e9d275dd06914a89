//! Limits read without eBPF (`pressure`), and golens doctor's checks, into
//! the snapshot: shared by the full agent's collector and degraded mode.
//!
//! GOMAXPROCS: the runtime's own `runtime.gomaxprocs`, read from the
//! process's memory every collection (source `observed`: it includes
//! `runtime.GOMAXPROCS(n)` calls, automaxprocs for one); else, when the
//! variable was not found in the binary or the read fails (no ptrace access,
//! the process is gone, its runtime not started yet), what /proc suggests:
//! the environment or the Go version's default rule.

use std::{
    collections::HashMap,
    io,
    time::{Duration, Instant},
};

use crate::{
    discovery::{inspect::BinaryInfo, ProcessKey},
    doctor,
    pressure::{self, runtime_memory, GoRuntimeHints, GomaxprocsSource, ProcessReader},
    snapshot::{HostSnapshot, LimitsSnapshot},
};

/// How often the host checks run: they inspect every process and read
/// several dozen files (~90 ms here with a few processes, more with
/// hundreds), which every 5 s, or even every minute at 300 processes, would
/// break the idle CPU budget; the settings they check rarely change.
const CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// Reads host pressure every collection, the checks every CHECK_INTERVAL,
/// and each process's limits.
#[derive(Default)]
pub struct LimitsReader {
    checks: std::collections::BTreeMap<String, u8>,
    checked_at: Option<Instant>,
    gomaxprocs: GomaxprocsReads,
}

impl LimitsReader {
    /// A reader of per-process limits for one collection (mountinfo read
    /// once). Starts a collection: what is kept per process is dropped for
    /// the processes the last one did not read (exited, or no longer watched).
    pub fn processes(&mut self) -> ProcessReader {
        self.gomaxprocs.start_collection();
        ProcessReader::new()
    }

    /// One process's limits; `key` tells one process from a later one with its pid.
    pub fn read_process(
        &mut self,
        reader: &ProcessReader,
        key: ProcessKey,
        binary: &BinaryInfo,
    ) -> LimitsSnapshot {
        let observed = self.gomaxprocs.read(key, binary);
        let mut limits = read_process(reader, key.pid, binary);
        if let Some(n) = observed {
            limits.gomaxprocs = Some(n);
            limits.gomaxprocs_source = Some(GomaxprocsSource::Observed.as_str().to_string());
        }
        limits
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

/// One process's limits from /proc (GOMAXPROCS from the environment or the
/// version's default rule).
fn read_process(reader: &ProcessReader, pid: u32, binary: &BinaryInfo) -> LimitsSnapshot {
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
        cpu_seconds: crate::discovery::procfs::cpu_seconds(pid),
    }
}

/// `runtime.gomaxprocs` of each process, read at collection time: the load
/// bias is worked out once per process, a failure is logged once per process.
#[derive(Default)]
struct GomaxprocsReads {
    processes: HashMap<ProcessKey, ProcessReads>,
    collection: u64,
}

struct ProcessReads {
    /// The binary's (address, entry) the state is for: an exec changes them.
    binary: (u64, u64),
    /// The variable's address in this process, once known.
    address: Option<u64>,
    /// A failure was logged.
    said: bool,
    /// The last collection that read it.
    collection: u64,
}

impl GomaxprocsReads {
    fn start_collection(&mut self) {
        let last = self.collection;
        self.processes.retain(|_, process| process.collection == last);
        self.collection += 1;
    }

    /// The value the runtime holds now; None when the binary has no known
    /// address, the read fails, or the runtime has not set it yet (0 before
    /// `schedinit`).
    fn read(&mut self, key: ProcessKey, binary: &BinaryInfo) -> Option<u32> {
        let link_address = binary.gomaxprocs_address?;
        let identity = (link_address, binary.entry);
        let collection = self.collection;
        let process = self
            .processes
            .entry(key)
            .and_modify(|p| {
                if p.binary != identity {
                    *p = ProcessReads::new(identity);
                }
            })
            .or_insert_with(|| ProcessReads::new(identity));
        process.collection = collection;
        match process.read(key.pid, binary.pie, binary.entry, link_address) {
            Ok(n) => u32::try_from(n).ok().filter(|&n| n > 0),
            Err(error) => {
                if !std::mem::replace(&mut process.said, true) {
                    say_unread(key.pid, &error);
                }
                None
            }
        }
    }
}

impl ProcessReads {
    fn new(binary: (u64, u64)) -> ProcessReads {
        ProcessReads { binary, address: None, said: false, collection: 0 }
    }

    /// One pread; the load bias first, the first time.
    fn read(&mut self, pid: u32, pie: bool, entry: u64, link_address: u64) -> io::Result<i32> {
        let address = match self.address {
            Some(address) => address,
            None => {
                let bias = runtime_memory::load_bias(pid, pie, entry)?;
                let address = link_address.checked_add(bias).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "address past the end of memory")
                })?;
                *self.address.insert(address)
            }
        };
        runtime_memory::read_i32(pid, address)
    }
}

/// Once per process: why its GOMAXPROCS comes from /proc instead.
fn say_unread(pid: u32, error: &io::Error) {
    let fallback = "GOMAXPROCS from its environment or its Go version's default instead";
    match error.kind() {
        io::ErrorKind::PermissionDenied => tracing::info!(
            pid,
            %error,
            "cannot read runtime.gomaxprocs from /proc/PID/mem (ptrace attach access: \
             CAP_SYS_PTRACE, which Yama's ptrace_scope >= 1 requires even for a process \
             of golens' own user); {fallback}"
        ),
        _ => tracing::debug!(pid, %error, "cannot read runtime.gomaxprocs; {fallback}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI32, Ordering};

    use super::*;
    use crate::discovery::procfs;

    /// This process stands in for a Go one: a static i32 at a known address
    /// (taken as a non-PIE's link-time address: no bias).
    #[test]
    fn read_from_memory_each_collection_and_forget_processes_not_read() {
        static GOMAXPROCS: AtomicI32 = AtomicI32::new(6);
        let binary = |address: u64| BinaryInfo {
            go_version: Some("go1.27.3".into()),
            stripped: true,
            pie: false,
            gomaxprocs_address: Some(address),
            entry: 0x401000,
        };
        let here = binary(GOMAXPROCS.as_ptr() as u64);
        let key = procfs::key(std::process::id()).unwrap();
        let mut reads = GomaxprocsReads::default();

        reads.start_collection();
        assert_eq!(reads.read(key, &here), Some(6));
        GOMAXPROCS.store(0, Ordering::Relaxed); // before schedinit
        assert_eq!(reads.read(key, &here), None);
        GOMAXPROCS.store(3, Ordering::Relaxed);
        assert_eq!(reads.read(key, &here), Some(3));
        let no_address = BinaryInfo { gomaxprocs_address: None, ..here.clone() };
        assert_eq!(reads.read(key, &no_address), None, "no address: nothing read");

        // Another binary under the same key (an exec): its own address.
        static OTHER: AtomicI32 = AtomicI32::new(11);
        assert_eq!(reads.read(key, &binary(OTHER.as_ptr() as u64)), Some(11));

        // A read that fails is said once, and retried (no value) every collection.
        let gone = ProcessKey { pid: u32::MAX, start_time: 1 };
        assert_eq!(reads.read(gone, &here), None);
        assert!(reads.processes[&gone].said);
        reads.start_collection();
        assert_eq!(reads.read(gone, &here), None);
        assert!(reads.processes.contains_key(&key), "read in the last collection");
        // A collection that reads only `gone`: `key` is dropped at the next one.
        reads.start_collection();
        assert!(!reads.processes.contains_key(&key));
        assert!(reads.processes.contains_key(&gone));
    }
}
