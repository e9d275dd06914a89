//! Loading golens' eBPF object and attaching its tracepoint programs (aya);
//! the pid-namespace calibration; the Go runtime uprobe programs for the
//! per-binary registry (`attach/`).

use std::{collections::BTreeMap, path::Path};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        uprobe::{UProbeLink, UProbeScope},
        BtfTracePoint, UProbe,
    },
    Btf, Ebpf, EbpfLoader, Endianness,
};
use golens_ebpf::{
    bindings, maps, programs, uprobes, BinaryKey, BtfTracepointProgram, Calibration, Config,
    GoStats, PressureStats, SchedStats, TracePointProgram,
};

use crate::{attach::multi::MultiPrograms, discovery::pidns::ProcView};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "no kernel BTF at {path}: golens needs a kernel built with CONFIG_DEBUG_INFO_BTF=y \
         (or a BTF file for this kernel passed with --btf): {source}"
    )]
    Btf { path: String, source: aya::BtfError },
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF object has no {kind} named `{name}` (build mismatch)")]
    Missing { kind: &'static str, name: &'static str },
    #[error("eBPF map `{name}`: {source}")]
    Map { name: &'static str, source: aya::maps::MapError },
    #[error("attaching {program} to tracepoint {tracepoint}: {source}")]
    Attach { program: &'static str, tracepoint: &'static str, source: aya::programs::ProgramError },
    #[error("eBPF program {program}: {source}")]
    Program { program: &'static str, source: aya::programs::ProgramError },
    #[error("program {program} is not loaded (it failed to load at start)")]
    NotLoaded { program: &'static str },
    #[error("pid namespace: {0}")]
    PidNamespace(String),
    #[error("the kernel's BTF was released after start: no program can be loaded now")]
    BtfReleased,
    #[error(
        "attaching {program} to tracepoint {category}/{name}: {source} (the syscall tracepoints \
         need tracefs at /sys/kernel/tracing; in a container, mount the host's)"
    )]
    TracePoint {
        program: &'static str,
        category: &'static str,
        name: &'static str,
        source: Box<aya::programs::ProgramError>,
    },
    #[error(
        "tracefs is not mounted and mounting it failed ({0}): the syscall families need it; run \
         `mount -t tracefs nodev /sys/kernel/tracing` (needs CAP_SYS_ADMIN), or in Kubernetes \
         mount the host's /sys/kernel/tracing into the container"
    )]
    Tracefs(std::io::Error),
}

/// Where the kernel's BTF comes from.
pub const SYSFS_BTF: &str = "/sys/kernel/btf/vmlinux";

pub fn load_btf(path: Option<&Path>) -> Result<Btf, ProbeError> {
    match path {
        None => Btf::from_sys_fs()
            .map_err(|source| ProbeError::Btf { path: SYSFS_BTF.to_string(), source }),
        Some(path) => Btf::parse_file(path, Endianness::default())
            .map_err(|source| ProbeError::Btf { path: path.display().to_string(), source }),
    }
}

/// The maps userspace reads and writes.
pub struct KernelMaps {
    pub tracked: HashMap<MapData, u32, u32>,
    /// Per CPU: the scheduler programs add to their CPU's copy.
    pub sched_stats: PerCpuHashMap<MapData, u32, SchedStats>,
    pub go_stats: HashMap<MapData, u32, GoStats>,
    pub agent_counters: PerCpuArray<MapData, u64>,
    /// Per CPU, like sched_stats (the syscall tracepoint families).
    pub pressure_stats: PerCpuHashMap<MapData, u32, PressureStats>,
    pub wanted_comms: HashMap<MapData, [u8; 16], u32>,
    pub agent_config: Array<MapData, Config>,
}

/// The loaded object: keeps programs (and so their links) alive while it lives.
pub struct KernelSide {
    ebpf: Ebpf,
    /// The kernel's BTF, parsed (~25 MB of heap): needed while programs are
    /// loaded, released once they are (`release_btf`).
    btf: Option<Btf>,
    /// Whether pids are translated into golens' pid namespace (load-time global).
    pidns_translate: u32,
    /// Where run-queue latency comes from (load-time global).
    pub runq_source: RunqSource,
    /// program name -> attached?
    pub attached: BTreeMap<String, bool>,
    /// The tracepoint links, owned here rather than by their programs so
    /// that `shutdown` closes them all at once (each close of a tracepoint
    /// perf event waits for an RCU grace period: 37 syscall tracepoints
    /// closed one by one took 2.6 s).
    links: Vec<TracepointLink>,
}

enum TracepointLink {
    Classic(#[allow(dead_code)] aya::programs::trace_point::TracePointLink),
    Btf(#[allow(dead_code)] aya::programs::tp_btf::BtfTracePointLink),
}

impl KernelSide {
    /// Loads the object (maps sized for `max_tracked` processes); attaches nothing yet.
    pub fn load(btf: Btf, max_tracked: u32, view: &ProcView) -> Result<KernelSide, ProbeError> {
        let pidns_translate = u32::from(!view.initial);
        let runq_source = RunqSource::detect();
        let from_sched_info = u32::from(runq_source == RunqSource::SchedInfo);
        let mut loader = EbpfLoader::new();
        loader
            .btf(Some(&btf))
            // wakeup_ts is task storage, which aya 0.14 creates but has no
            // typed wrapper for (userspace never touches it).
            .allow_unsupported_maps()
            .override_global(golens_ebpf::PIDNS_TRANSLATE_GLOBAL, &pidns_translate, true)
            .override_global(golens_ebpf::RUNQ_FROM_SCHED_INFO_GLOBAL, &from_sched_info, true);
        for map in maps::PER_PROCESS {
            loader.map_max_entries(map, max_tracked);
        }
        let ebpf = loader.load(golens_ebpf::OBJECT)?;
        Ok(KernelSide {
            ebpf,
            btf: Some(btf),
            pidns_translate,
            runq_source,
            attached: BTreeMap::new(),
            links: Vec::new(),
        })
    }

    /// Attaches the scheduler family: sched_switch, and the wakeup programs
    /// where run-queue latency comes from golens' own timestamps. Returns
    /// the errors of the programs that failed.
    pub fn attach_sched(&mut self) -> Vec<ProbeError> {
        let mut failures = match self.runq_source {
            RunqSource::SchedInfo => Vec::new(),
            RunqSource::Wakeups => self.attach_family(programs::SCHED_WAKEUPS),
        };
        failures.extend(self.attach_first_of(programs::SCHED_SWITCH_VARIANTS).err());
        failures
    }

    /// Loads and attaches one tp_btf program; records the outcome.
    pub fn attach_btf_tracepoint(&mut self, spec: BtfTracepointProgram) -> Result<(), ProbeError> {
        let result = self.try_attach(spec);
        self.attached.insert(spec.program.to_string(), result.is_ok());
        result
    }

    fn try_attach(&mut self, spec: BtfTracepointProgram) -> Result<(), ProbeError> {
        let attach_error = |source| ProbeError::Attach {
            program: spec.program,
            tracepoint: spec.tracepoint,
            source,
        };
        let program: &mut BtfTracePoint = self
            .ebpf
            .program_mut(spec.program)
            .ok_or(ProbeError::Missing { kind: "program", name: spec.program })?
            .try_into()
            .map_err(attach_error)?;
        let btf = self.btf.as_ref().ok_or(ProbeError::BtfReleased)?;
        program.load(spec.tracepoint, btf).map_err(attach_error)?;
        let id = program.attach().map_err(attach_error)?;
        let link = program.take_link(id).map_err(attach_error)?;
        self.links.push(TracepointLink::Btf(link));
        Ok(())
    }

    /// Attaches a family; returns the errors of the programs that failed.
    pub fn attach_family(&mut self, family: &[BtfTracepointProgram]) -> Vec<ProbeError> {
        family.iter().filter_map(|spec| self.attach_btf_tracepoint(*spec).err()).collect()
    }

    /// Loads and attaches the classic tracepoint programs of one family
    /// (the syscall families: tracefs must be mounted, see
    /// `ensure_tracefs`). Returns the errors of those that failed (a
    /// syscall the kernel does not have, e.g. epoll_pwait2 before 5.11).
    pub fn attach_tracepoints(&mut self, family: &[TracePointProgram]) -> Vec<ProbeError> {
        let mut failures = Vec::new();
        for spec in family {
            let result = self.try_attach_tracepoint(spec);
            self.attached.insert(spec.program.to_string(), result.is_ok());
            if let Err(error) = result {
                failures.push(error);
            }
        }
        failures
    }

    fn try_attach_tracepoint(&mut self, spec: &TracePointProgram) -> Result<(), ProbeError> {
        let error = |source| ProbeError::TracePoint {
            program: spec.program,
            category: spec.category,
            name: spec.name,
            source: Box::new(source),
        };
        let program: &mut aya::programs::TracePoint = self
            .ebpf
            .program_mut(spec.program)
            .ok_or(ProbeError::Missing { kind: "program", name: spec.program })?
            .try_into()
            .map_err(error)?;
        program.load().map_err(error)?;
        let id = program.attach(spec.category, spec.name).map_err(error)?;
        let link = program.take_link(id).map_err(error)?;
        self.links.push(TracepointLink::Classic(link));
        Ok(())
    }

    /// Attaches the first variant that this kernel takes (a kernel feature
    /// table: newest first). Returns the last error when none does.
    pub fn attach_first_of(&mut self, variants: &[BtfTracepointProgram]) -> Result<(), ProbeError> {
        let mut last = None;
        for spec in variants {
            match self.try_attach(*spec) {
                Ok(()) => {
                    self.attached.insert(spec.program.to_string(), true);
                    return Ok(());
                }
                Err(error) => last = Some(error),
            }
        }
        if let Some(first) = variants.first() {
            self.attached.insert(first.program.to_string(), false);
        }
        Err(last.unwrap_or(ProbeError::Missing { kind: "program", name: "sched_switch variant" }))
    }

    /// Finds the pid namespace of golens' /proc and writes it into
    /// `agent_config` (only needed when pids are translated). golens makes
    /// one marked system call while the calibration program is attached.
    pub fn calibrate_pidns(&mut self, view: &ProcView) -> Result<(), ProbeError> {
        if self.pidns_translate == 0 {
            return Ok(());
        }
        let spec = programs::PIDNS_CALIBRATION;
        self.try_attach(spec)?;
        // SAFETY: getpgid has no memory arguments; a pid this large does not
        // exist, so it only fails with ESRCH after the tracepoint ran.
        unsafe { libc::getpgid(bindings::GOLENS_CALIBRATION_MAGIC as libc::pid_t) };
        // Detach at once: it would otherwise run on every system call of the
        // host (try_attach kept its link last).
        drop(self.links.pop());
        if let Some(program) = self.ebpf.program_mut(spec.program) {
            if let Ok(program) = <&mut BtfTracePoint>::try_from(program) {
                let _ = program.unload();
            }
        }
        let calibration: Array<&MapData, Calibration> = Array::try_from(
            self.ebpf
                .map(maps::PIDNS_CALIBRATION)
                .ok_or(ProbeError::Missing { kind: "map", name: maps::PIDNS_CALIBRATION })?,
        )
        .map_err(|source| ProbeError::Map { name: maps::PIDNS_CALIBRATION, source })?;
        let seen = calibration
            .get(&0, 0)
            .map_err(|source| ProbeError::Map { name: maps::PIDNS_CALIBRATION, source })?;
        let config = pidns_config(&seen, view).map_err(ProbeError::PidNamespace)?;
        let mut agent_config: Array<&mut MapData, Config> = Array::try_from(
            self.ebpf
                .map_mut(maps::AGENT_CONFIG)
                .ok_or(ProbeError::Missing { kind: "map", name: maps::AGENT_CONFIG })?,
        )
        .map_err(|source| ProbeError::Map { name: maps::AGENT_CONFIG, source })?;
        agent_config
            .set(0, config, 0)
            .map_err(|source| ProbeError::Map { name: maps::AGENT_CONFIG, source })?;
        tracing::info!(
            level = config.pidns_level,
            "pids are read in golens' pid namespace (not the host's)"
        );
        Ok(())
    }

    /// The Go runtime uprobe programs, loaded for uprobe_multi links; None
    /// (with the reason) when this kernel has no such links.
    pub fn load_multi_uprobes(&self) -> Result<MultiPrograms, String> {
        let translate = self.pidns_translate.to_ne_bytes();
        let multi = MultiPrograms::load(
            golens_ebpf::OBJECT,
            &self.ebpf,
            self.btf.as_ref().ok_or_else(|| ProbeError::BtfReleased.to_string())?,
            &[(golens_ebpf::PIDNS_TRANSLATE_GLOBAL, &translate)],
            &[uprobes::DISPATCH],
        )
        .map_err(|e| e.to_string())?;
        if !multi.kernel_supports_links() {
            return Err("this kernel has no uprobe_multi links (Linux 6.6+)".into());
        }
        Ok(multi)
    }

    /// Loads every Go runtime uprobe program for perf-event uprobes (the
    /// fallback). Returns the programs that failed.
    pub fn load_uprobes(&mut self) -> Vec<ProbeError> {
        let mut failures = Vec::new();
        for &name in uprobes::ALL {
            let result = self.uprobe(name).and_then(|program| {
                program.load().map_err(|source| ProbeError::Program { program: name, source })
            });
            self.attached.insert(name.to_string(), result.is_ok());
            if let Err(error) = result {
                failures.push(error);
            }
        }
        failures
    }

    /// Marks the uprobe programs as loaded (the uprobe_multi path loads them itself).
    pub fn mark_uprobes_loaded(&mut self) {
        for &name in uprobes::ALL {
            self.attached.insert(name.to_string(), true);
        }
    }

    fn uprobe(&mut self, name: &'static str) -> Result<&mut UProbe, ProbeError> {
        self.ebpf
            .program_mut(name)
            .ok_or(ProbeError::Missing { kind: "program", name })?
            .try_into()
            .map_err(|source| ProbeError::Program { program: name, source })
    }

    /// Attaches a loaded uprobe program (perf-event fallback) at
    /// `file_offset` of `binary` (often /proc/PID/exe), for every process
    /// that runs that file. The caller owns the link: dropping it detaches.
    pub fn attach_uprobe(
        &mut self,
        program: &'static str,
        binary: &Path,
        file_offset: u64,
    ) -> Result<UProbeLink, ProbeError> {
        if self.attached.get(program) != Some(&true) {
            return Err(ProbeError::NotLoaded { program });
        }
        let uprobe = self.uprobe(program)?;
        let link = uprobe
            .attach(file_offset, binary, UProbeScope::AllProcesses)
            .map_err(|source| ProbeError::Program { program, source })?;
        uprobe.take_link(link).map_err(|source| ProbeError::Program { program, source })
    }

    /// Detaches every tracepoint, from several threads at once, then
    /// unloads the object.
    pub fn shutdown(mut self) {
        let started = std::time::Instant::now();
        let links = std::mem::take(&mut self.links);
        let count = links.len();
        crate::attach::close_in_parallel(links);
        drop(self);
        tracing::info!(
            links = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "tracepoints detached"
        );
    }

    /// Frees the parsed kernel BTF once every program is loaded, and gives
    /// the heap it used back to the system (most of the agent's memory otherwise).
    pub fn release_btf(&mut self) {
        self.btf = None;
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe { libc::malloc_trim(0) };
    }

    /// The gc_events ring buffer (`golens trace`).
    pub fn take_gc_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        self.typed_map(maps::GC_EVENTS, RingBuf::try_from)
    }

    /// Takes the maps userspace works with: (kernel maps, known_binaries, proc_events).
    #[allow(clippy::type_complexity)]
    pub fn take_maps(
        &mut self,
    ) -> Result<(KernelMaps, HashMap<MapData, BinaryKey, u32>, RingBuf<MapData>), ProbeError> {
        let kernel_maps = KernelMaps {
            tracked: self.typed_map(maps::TRACKED, HashMap::try_from)?,
            sched_stats: self.typed_map(maps::SCHED_STATS, PerCpuHashMap::try_from)?,
            go_stats: self.typed_map(maps::GO_STATS, HashMap::try_from)?,
            agent_counters: self.typed_map(maps::AGENT_COUNTERS, PerCpuArray::try_from)?,
            pressure_stats: self.typed_map(maps::PRESSURE_STATS, PerCpuHashMap::try_from)?,
            wanted_comms: self.typed_map(maps::WANTED_COMMS, HashMap::try_from)?,
            agent_config: self.typed_map(maps::AGENT_CONFIG, Array::try_from)?,
        };
        let known_binaries = self.typed_map(maps::KNOWN_BINARIES, HashMap::try_from)?;
        let proc_events = self.typed_map(maps::PROC_EVENTS, RingBuf::try_from)?;
        Ok((kernel_maps, known_binaries, proc_events))
    }

    fn typed_map<T>(
        &mut self,
        name: &'static str,
        convert: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
    ) -> Result<T, ProbeError> {
        let map = self.ebpf.take_map(name).ok_or(ProbeError::Missing { kind: "map", name })?;
        convert(map).map_err(|source| ProbeError::Map { name, source })
    }
}

/// Where run-queue latency comes from (see `bpf/sched.bpf.c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunqSource {
    /// The kernel's own sched_info, read at sched_switch: the intervals
    /// schedstat sums, and no wakeup programs.
    SchedInfo,
    /// golens' timestamps at sched_wakeup, sched_wakeup_new and preemption.
    Wakeups,
}

/// Forces a run-queue latency source: `wakeups` or `sched-info`
/// (troubleshooting, and the tests of the fallback).
pub const RUNQ_SOURCE_ENV: &str = "GOLENS_RUNQ_SOURCE";

impl RunqSource {
    /// sched_info where the kernel keeps it (this thread's schedstat counts
    /// its own timeslices; it reads zeros on a kernel built without
    /// CONFIG_SCHEDSTATS whose delay accounting is off), else wakeups;
    /// GOLENS_RUNQ_SOURCE decides when set.
    pub fn detect() -> RunqSource {
        match std::env::var(RUNQ_SOURCE_ENV).as_deref() {
            Ok("wakeups") => return RunqSource::Wakeups,
            Ok("sched-info") => return RunqSource::SchedInfo,
            _ => {}
        }
        let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        if Self::timeslices(&schedstat).is_some_and(|slices| slices > 0) {
            RunqSource::SchedInfo
        } else {
            RunqSource::Wakeups
        }
    }

    /// "run_ns wait_ns timeslices" → timeslices.
    fn timeslices(schedstat: &str) -> Option<u64> {
        schedstat.split_whitespace().nth(2)?.parse().ok()
    }

    pub fn label(self) -> &'static str {
        match self {
            RunqSource::SchedInfo => "sched_info",
            RunqSource::Wakeups => "wakeups",
        }
    }
}

/// Where the classic tracepoints' ids are read (aya looks at both).
const TRACEFS: &str = "/sys/kernel/tracing";
const TRACEFS_C: &std::ffi::CStr = c"/sys/kernel/tracing";

/// Mounts tracefs at /sys/kernel/tracing when neither it nor debugfs'
/// tracing directory is mounted (the case on hosts without systemd's
/// default mounts, and in containers). Returns whether golens mounted it,
/// so that it can unmount it when it stops.
static TRACEFS_MOUNTED_BY_GOLENS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

pub fn ensure_tracefs() -> Result<bool, ProbeError> {
    let mounted = |dir: &str| std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if mounted(TRACEFS) || mounted("/sys/kernel/debug/tracing") {
        return Ok(false);
    }
    let (source, fstype) = (c"nodev", c"tracefs");
    // SAFETY: valid NUL-terminated strings, no data argument.
    let ret = unsafe {
        libc::mount(source.as_ptr(), TRACEFS_C.as_ptr(), fstype.as_ptr(), 0, std::ptr::null())
    };
    if ret != 0 {
        return Err(ProbeError::Tracefs(std::io::Error::last_os_error()));
    }
    tracing::info!("mounted tracefs at {TRACEFS} for the syscall tracepoints");
    TRACEFS_MOUNTED_BY_GOLENS.store(true, std::sync::atomic::Ordering::Release);
    Ok(true)
}

/// Unmounts the tracefs `ensure_tracefs` mounted, if it did (best effort,
/// lazily: a reader elsewhere keeps it until done).
pub fn release_tracefs() {
    if !TRACEFS_MOUNTED_BY_GOLENS.swap(false, std::sync::atomic::Ordering::AcqRel) {
        return;
    }
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::umount2(TRACEFS_C.as_ptr(), libc::MNT_DETACH) };
}

/// The namespace of golens' /proc, from what calibration saw of golens.
fn pidns_config(seen: &Calibration, view: &ProcView) -> Result<Config, String> {
    if seen.seen == 0 {
        return Err("the calibration program did not run (is tp_btf/sys_enter available? a \
                    seccomp profile that blocks getpgid() hides the call from it too)"
            .into());
    }
    let level = view.proc_level(seen.level).ok_or_else(|| {
        format!("golens is at level {} but /proc shows {} levels", seen.level, view.nspid.len())
    })?;
    let index = level as usize;
    if index >= seen.ns.len() {
        return Err(format!(
            "/proc's pid namespace is {level} levels deep; golens reads at most 7"
        ));
    }
    if Some(&seen.nr[index]) != view.nspid.first() {
        return Err(format!(
            "calibration disagrees with /proc: pid {} at level {level}, /proc/self says {:?}",
            seen.nr[index], view.nspid
        ));
    }
    Ok(Config { pidns: seen.ns[index], pidns_level: level, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calibration(level: u32, nr: &[u32]) -> Calibration {
        let mut c = Calibration { level, seen: 1, ..Default::default() };
        for (i, &n) in nr.iter().enumerate() {
            c.nr[i] = n;
            c.ns[i] = 0x1000 + i as u64;
        }
        c
    }

    #[test]
    fn calibration_picks_the_level_of_proc() {
        // golens is pid 812 on the host, 1 in its container; /proc is the container's.
        let view = ProcView { nspid: vec![1], initial: false };
        let config = pidns_config(&calibration(1, &[812, 1]), &view).unwrap();
        assert_eq!((config.pidns_level, config.pidns), (1, 0x1001));
        // The same golens with the host's /proc mounted.
        let view = ProcView { nspid: vec![812, 1], initial: false };
        let config = pidns_config(&calibration(1, &[812, 1]), &view).unwrap();
        assert_eq!((config.pidns_level, config.pidns), (0, 0x1000));
    }

    #[test]
    fn calibration_that_disagrees_with_proc_is_an_error() {
        let view = ProcView { nspid: vec![5], initial: false };
        assert!(pidns_config(&calibration(1, &[812, 1]), &view).is_err());
        let unseen = Calibration::default();
        assert!(pidns_config(&unseen, &view).is_err());
    }

    #[test]
    fn sched_info_is_on_when_schedstat_counts_timeslices() {
        assert_eq!(RunqSource::timeslices("494328 1813213 3\n"), Some(3));
        // A kernel that keeps no sched_info shows zeros.
        assert_eq!(RunqSource::timeslices("0 0 0\n"), Some(0));
        assert_eq!(RunqSource::timeslices(""), None);
        // This test runs on a kernel with sched_info (as every test machine here).
        if std::env::var(RUNQ_SOURCE_ENV).is_err() {
            assert_eq!(RunqSource::detect(), RunqSource::SchedInfo);
        }
    }
}
