//! Loading golens' eBPF object and attaching its programs (aya).

use std::{collections::BTreeMap, num::NonZeroU32, path::Path};

use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        uprobe::{UProbeLink, UProbeScope},
        BtfTracePoint, UProbe,
    },
    Btf, Ebpf, EbpfLoader, Endianness,
};
use golens_ebpf::{maps, programs, uprobes, BtfTracepointProgram, GoStats, SchedStats};

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
    pub sched_stats: HashMap<MapData, u32, SchedStats>,
    pub go_stats: HashMap<MapData, u32, GoStats>,
    pub agent_counters: PerCpuArray<MapData, u64>,
}

/// The loaded object: keeps programs (and so their links) alive while it lives.
pub struct KernelSide {
    ebpf: Ebpf,
    btf: Btf,
    /// program name -> attached?
    pub attached: BTreeMap<String, bool>,
}

impl KernelSide {
    /// Loads the object (maps sized for `max_tracked` processes); attaches nothing yet.
    pub fn load(btf: Btf, max_tracked: u32) -> Result<KernelSide, ProbeError> {
        let ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .map_max_entries(maps::TRACKED, max_tracked)
            .map_max_entries(maps::SCHED_STATS, max_tracked)
            .map_max_entries(maps::GO_STATS, max_tracked)
            .load(golens_ebpf::OBJECT)?;
        Ok(KernelSide { ebpf, btf, attached: BTreeMap::new() })
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
        program.load(spec.tracepoint, &self.btf).map_err(attach_error)?;
        program.attach().map_err(attach_error)?;
        Ok(())
    }

    /// Attaches a family; returns the errors of the programs that failed.
    pub fn attach_family(&mut self, family: &[BtfTracepointProgram]) -> Vec<ProbeError> {
        family.iter().filter_map(|spec| self.attach_btf_tracepoint(*spec).err()).collect()
    }

    /// Loads every Go runtime uprobe program (verifier pass); they are
    /// attached per process later. Returns the programs that failed.
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

    fn uprobe(&mut self, name: &'static str) -> Result<&mut UProbe, ProbeError> {
        self.ebpf
            .program_mut(name)
            .ok_or(ProbeError::Missing { kind: "program", name })?
            .try_into()
            .map_err(|source| ProbeError::Program { program: name, source })
    }

    /// Attaches a loaded uprobe program at `file_offset` of `binary` (often
    /// /proc/PID/exe), firing for process `pid` only: the breakpoint is
    /// installed in that process alone, other processes of the same binary
    /// never trap. The caller owns the returned link: dropping it detaches.
    pub fn attach_uprobe(
        &mut self,
        program: &'static str,
        binary: &Path,
        file_offset: u64,
        pid: u32,
    ) -> Result<UProbeLink, ProbeError> {
        if self.attached.get(program) != Some(&true) {
            return Err(ProbeError::NotLoaded { program });
        }
        let scope = NonZeroU32::new(pid).map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
        let uprobe = self.uprobe(program)?;
        let link = uprobe
            .attach(file_offset, binary, scope)
            .map_err(|source| ProbeError::Program { program, source })?;
        uprobe.take_link(link).map_err(|source| ProbeError::Program { program, source })
    }

    pub fn take_maps(&mut self) -> Result<(KernelMaps, RingBuf<MapData>), ProbeError> {
        let kernel_maps = KernelMaps {
            tracked: self.typed_map(maps::TRACKED, HashMap::try_from)?,
            sched_stats: self.typed_map(maps::SCHED_STATS, HashMap::try_from)?,
            go_stats: self.typed_map(maps::GO_STATS, HashMap::try_from)?,
            agent_counters: self.typed_map(maps::AGENT_COUNTERS, PerCpuArray::try_from)?,
        };
        let proc_events = self.typed_map(maps::PROC_EVENTS, RingBuf::try_from)?;
        Ok((kernel_maps, proc_events))
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

/// All programs of the object that the daemon attaches, by family.
pub const DAEMON_FAMILIES: &[(&str, &[BtfTracepointProgram])] =
    &[("discovery", programs::DISCOVERY), ("sched", programs::SCHED)];
