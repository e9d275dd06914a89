//! The per-binary probe registry: Go runtime uprobes are attached once per
//! executable file, for every process that runs it, and the kernel filters
//! on the `tracked` map. Cost grows with distinct binaries, not processes.
//!
//! - Links: one `uprobe_multi` link per binary where the kernel has them
//!   (6.6+, see `multi`): every point of every probe, the attach cookie
//!   telling the one program which probe a point is. Else one perf-event
//!   uprobe per point (`AttachMode::PerfEvent`). No link belongs to a process.
//! - Lifetime: a binary's probes stay while a watched process runs it, plus
//!   `linger` after the last one leaves, so a restart or a crash loop
//!   reattaches nothing (and exec tracking keeps working for it).
//! - Exec tracking: while a binary is attached, its kernel identity is in
//!   the `known_binaries` map, so an exec of it is tracked by the kernel
//!   before its first instruction (see `bpf/procs.bpf.c`).
//! - Detaching: closing a perf-event uprobe costs an RCU grace period
//!   (~110 ms here, serialised); a uprobe_multi link ~23 ms. Idle binaries
//!   are detached on a thread of their own; at shutdown every link is closed
//!   from several threads at once (ten links: 0.39 s in a row, 0.08 s in
//!   parallel, measured here).

pub mod multi;

use std::{
    collections::HashMap,
    os::fd::OwnedFd,
    path::Path,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap as BpfHashMap, MapData},
    programs::uprobe::UProbeLink,
};
use golens_ebpf::{uprobes, BinaryKey};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::{
    discovery::procfs::FileIdentity,
    gobinary::GoBinary,
    goruntime::{
        plan::{plan, resolve_derived, Plan},
        UprobeFamily,
    },
    probes::KernelSide,
    snapshot::ProbeStatus,
};
use multi::MultiPrograms;

/// How uprobes are attached on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// One BPF `uprobe_multi` link per binary (kernel 6.6+).
    UprobeMulti,
    /// One perf-event uprobe per point per binary (older kernels).
    PerfEvent,
}

impl AttachMode {
    pub fn describe(self) -> &'static str {
        match self {
            AttachMode::UprobeMulti => "uprobe_multi links, one per binary",
            AttachMode::PerfEvent => {
                "perf-event uprobes, one per point per binary (kernel < 6.6: no uprobe_multi)"
            }
        }
    }
}

enum Link {
    Multi(#[allow(dead_code)] OwnedFd),
    Perf(#[allow(dead_code)] UProbeLink),
}

struct AttachedBinary {
    statuses: Arc<Vec<ProbeStatus>>,
    links: Vec<Link>,
    /// Watched processes running it now.
    users: usize,
    /// Since when no watched process runs it.
    idle_since: Option<Instant>,
    /// Its identities in `known_binaries` (stat's, and the kernel's own from
    /// exec records: they differ on overlayfs).
    kernel_keys: Vec<BinaryKey>,
    exe: String,
}

pub struct ProbeRegistry {
    kernel: KernelSide,
    multi: Option<MultiPrograms>,
    known_binaries: BpfHashMap<MapData, BinaryKey, u32>,
    exec_tracking: bool,
    binaries: HashMap<FileIdentity, AttachedBinary>,
    linger: Duration,
    detacher: Detacher,
    /// Why no uprobe is attached at all (`--probes` without a uprobe family).
    uprobes_off: Option<&'static str>,
    /// The uprobe families whose probes are planned (`--probes`).
    families: Vec<UprobeFamily>,
}

/// What the registry holds, for self-metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistryStats {
    pub binaries: u64,
    pub idle_binaries: u64,
    pub links: u64,
}

impl ProbeRegistry {
    /// `multi`: the uprobe programs loaded for uprobe_multi links, or None to
    /// use aya's perf-event uprobes. `exec_tracking`: whether attached
    /// binaries go into `known_binaries` (off with --pid: only the named
    /// processes are watched).
    pub fn new(
        kernel: KernelSide,
        multi: Option<MultiPrograms>,
        known_binaries: BpfHashMap<MapData, BinaryKey, u32>,
        exec_tracking: bool,
        linger: Duration,
    ) -> ProbeRegistry {
        ProbeRegistry {
            kernel,
            multi,
            known_binaries,
            exec_tracking,
            binaries: HashMap::new(),
            linger,
            detacher: Detacher::start(),
            uprobes_off: None,
            families: UprobeFamily::DEFAULT.to_vec(),
        }
    }

    /// Attaches no uprobe; every probe's status says `why`.
    pub fn disable_uprobes(&mut self, why: &'static str) {
        self.uprobes_off = Some(why);
    }

    /// The uprobe families to attach (by default the default ones).
    pub fn set_uprobe_families(&mut self, families: &[UprobeFamily]) {
        self.families = families.to_vec();
    }

    pub fn mode(&self) -> AttachMode {
        if self.multi.is_some() {
            AttachMode::UprobeMulti
        } else {
            AttachMode::PerfEvent
        }
    }

    pub fn kernel(&self) -> &KernelSide {
        &self.kernel
    }

    pub fn kernel_mut(&mut self) -> &mut KernelSide {
        &mut self.kernel
    }

    /// A watched process runs this binary: its probes, attached now if they
    /// are not yet. `fresh` is the binary when discovery just read it (else
    /// it is read from `open_path`, e.g. /proc/PID/exe).
    pub fn acquire(
        &mut self,
        file: FileIdentity,
        open_path: &Path,
        fresh: Option<&GoBinary>,
        exe: &str,
    ) -> Arc<Vec<ProbeStatus>> {
        if let Some(binary) = self.binaries.get_mut(&file) {
            binary.users += 1;
            binary.idle_since = None;
            return binary.statuses.clone();
        }
        let opened;
        let binary = match fresh {
            Some(binary) => Ok(binary),
            None => {
                opened = GoBinary::open(open_path);
                opened.as_ref().map_err(|e| e.to_string())
            }
        };
        let (statuses, links) = match binary {
            Ok(binary) => {
                let plan = plan(binary, &self.families);
                self.attach_binary(open_path, exe, &plan)
            }
            Err(reason) => {
                warn!(exe, %reason, "cannot read the Go binary again to attach its probes");
                (Vec::new(), Vec::new())
            }
        };
        let mut entry = AttachedBinary {
            statuses: Arc::new(statuses),
            links,
            users: 1,
            idle_since: None,
            kernel_keys: Vec::new(),
            exe: exe.to_string(),
        };
        if self.exec_tracking {
            self.add_key(&mut entry, kernel_key(&file));
        }
        let statuses = entry.statuses.clone();
        self.binaries.insert(file, entry);
        statuses
    }

    /// The kernel's identity of an attached binary, seen in an exec record.
    pub fn note_kernel_key(&mut self, file: &FileIdentity, key: BinaryKey) {
        if !self.exec_tracking {
            return;
        }
        if let Some(mut entry) = self.binaries.remove(file) {
            self.add_key(&mut entry, key);
            self.binaries.insert(*file, entry);
        }
    }

    fn add_key(&mut self, entry: &mut AttachedBinary, key: BinaryKey) {
        if entry.kernel_keys.iter().any(|k| k.ino == key.ino && k.dev == key.dev) {
            return;
        }
        match self.known_binaries.insert(key, 0, 0) {
            Ok(()) => entry.kernel_keys.push(key),
            Err(error) => {
                debug!(exe = entry.exe, %error, "binary not tracked from exec (map full)")
            }
        }
    }

    /// A watched process no longer runs this binary.
    pub fn release(&mut self, file: &FileIdentity) {
        if let Some(binary) = self.binaries.get_mut(file) {
            binary.users = binary.users.saturating_sub(1);
            if binary.users == 0 {
                binary.idle_since = Some(Instant::now());
            }
        }
    }

    /// Detaches binaries no watched process has run for `linger`.
    pub fn reap_idle(&mut self) {
        let linger = self.linger;
        let expired: Vec<FileIdentity> = self
            .binaries
            .iter()
            .filter(|(_, b)| b.idle_since.is_some_and(|since| since.elapsed() >= linger))
            .map(|(file, _)| *file)
            .collect();
        for file in expired {
            if let Some(binary) = self.binaries.remove(&file) {
                for key in &binary.kernel_keys {
                    let _ = self.known_binaries.remove(key);
                }
                info!(exe = binary.exe, links = binary.links.len(), "detaching an idle binary");
                self.detacher.detach(binary.links);
            }
        }
    }

    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            binaries: self.binaries.len() as u64,
            idle_binaries: self.binaries.values().filter(|b| b.users == 0).count() as u64,
            links: self.binaries.values().map(|b| b.links.len() as u64).sum(),
        }
    }

    /// Detaches everything, closing links from several threads at once.
    pub fn shutdown(mut self) {
        let started = Instant::now();
        let links: Vec<Link> = self.binaries.drain().flat_map(|(_, b)| b.links).collect();
        let count = links.len();
        close_in_parallel(links);
        info!(links = count, elapsed_ms = started.elapsed().as_millis() as u64, "uprobes detached");
        self.kernel.shutdown();
    }

    /// Attaches every probe of the plan, each at all of its points or not at all.
    fn attach_binary(
        &mut self,
        path: &Path,
        exe: &str,
        plan: &Plan,
    ) -> (Vec<ProbeStatus>, Vec<Link>) {
        if let Some(why) = self.uprobes_off {
            let statuses = plan.probes.iter().map(|p| p.status(Err(why.to_string()))).collect();
            return (statuses, Vec::new());
        }
        if let Some(warning) = &plan.warning {
            warn!(exe, "{warning}");
        }
        let (mut outcomes, links) = match &self.multi {
            Some(multi) => attach_dispatch(multi, path, plan),
            None => self.attach_perf(path, plan),
        };
        resolve_derived(&plan.probes, &mut outcomes);
        let statuses: Vec<ProbeStatus> = plan
            .probes
            .iter()
            .zip(outcomes)
            .map(|(planned, outcome)| {
                if let Err(reason) = &outcome {
                    warn!(exe, probe = planned.name, %reason, "runtime probe not attached");
                }
                planned.status(outcome)
            })
            .collect();
        let attached = statuses.iter().filter(|s| s.attached).count();
        info!(exe, runtime_probes = attached, mode = ?self.mode(), "attached a Go binary");
        (statuses, links)
    }

    /// Perf-event uprobes: one link per point, each probe's program its own.
    fn attach_perf(&mut self, path: &Path, plan: &Plan) -> (Vec<Result<usize, String>>, Vec<Link>) {
        let mut links = Vec::new();
        let outcomes = plan
            .probes
            .iter()
            .map(|planned| {
                let points = planned.points.clone()?;
                let mut probe_links = Vec::new();
                for point in &points {
                    match self.kernel.attach_uprobe(planned.program, path, point.file_offset) {
                        Ok(link) => probe_links.push(Link::Perf(link)),
                        Err(error) => {
                            self.detacher.detach(probe_links);
                            return Err(format!(
                                "attaching at file offset {:#x}: {error}",
                                point.file_offset
                            ));
                        }
                    }
                }
                links.extend(probe_links);
                Ok(points.len())
            })
            .collect();
        (outcomes, links)
    }
}

/// uprobe_multi: every point of every probe in one link of the dispatch
/// program, each point's cookie naming its probe.
fn attach_dispatch(
    multi: &MultiPrograms,
    path: &Path,
    plan: &Plan,
) -> (Vec<Result<usize, String>>, Vec<Link>) {
    let mut offsets = Vec::new();
    let mut cookies = Vec::new();
    let mut outcomes: Vec<Result<usize, String>> = plan
        .probes
        .iter()
        .map(|planned| {
            let points = planned.points.clone()?;
            let cookie = uprobes::cookie(planned.program).ok_or_else(|| {
                format!("{} has no dispatch cookie (build mismatch)", planned.program)
            })?;
            offsets.extend(points.iter().map(|p| p.file_offset));
            cookies.extend(std::iter::repeat_n(cookie, points.len()));
            Ok(points.len())
        })
        .collect();
    if offsets.is_empty() {
        return (outcomes, Vec::new());
    }
    match multi.attach(uprobes::DISPATCH, path, &offsets, &cookies) {
        Ok(fd) => (outcomes, vec![Link::Multi(fd)]),
        Err(error) => {
            for outcome in &mut outcomes {
                if outcome.is_ok() {
                    *outcome = Err(error.to_string());
                }
            }
            (outcomes, Vec::new())
        }
    }
}

/// The kernel's identity of a file from its stat: the inode number and the
/// superblock's dev_t in the kernel's encoding (MAJOR << 20 | MINOR), not
/// glibc's st_dev encoding.
pub fn kernel_key(file: &FileIdentity) -> BinaryKey {
    let major = libc::major(file.dev as libc::dev_t);
    let minor = libc::minor(file.dev as libc::dev_t);
    BinaryKey { ino: file.ino, dev: (major << 20) | (minor & 0xfffff), _pad: 0 }
}

/// Closes links off the caller's thread (reaping idle binaries).
struct Detacher {
    sender: Option<mpsc::Sender<Vec<Link>>>,
}

impl Detacher {
    fn start() -> Detacher {
        let (sender, receiver) = mpsc::channel::<Vec<Link>>();
        let spawned = std::thread::Builder::new().name("golens-detach".into()).spawn(move || {
            for links in receiver {
                close_in_parallel(links);
            }
        });
        match spawned {
            Ok(_) => Detacher { sender: Some(sender) },
            Err(error) => {
                warn!(%error, "no detach thread: uprobes are detached inline");
                Detacher { sender: None }
            }
        }
    }

    fn detach(&self, links: Vec<Link>) {
        if links.is_empty() {
            return;
        }
        // If the thread is gone, the links come back in the error and are dropped here.
        if let Some(sender) = &self.sender {
            let _ = sender.send(links);
        }
    }
}

/// Each close waits for an RCU grace period; the kernel overlaps the waits
/// of closes made from different threads.
pub fn close_in_parallel<T: Send>(links: Vec<T>) {
    const THREADS: usize = 16;
    if links.len() <= 1 {
        return;
    }
    let per_thread = links.len().div_ceil(THREADS);
    let mut chunks: Vec<Vec<T>> = Vec::new();
    let mut links = links.into_iter().peekable();
    while links.peek().is_some() {
        chunks.push(links.by_ref().take(per_thread).collect());
    }
    std::thread::scope(|scope| {
        for chunk in chunks {
            // A thread that cannot start drops its chunk right here instead.
            let _ = std::thread::Builder::new().spawn_scoped(scope, move || drop(chunk));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_encoding_from_st_dev() {
        // 259:3 (an nvme partition): glibc st_dev 0x10303, kernel 259 << 20 | 3.
        let file = FileIdentity { dev: libc::makedev(259, 3), ino: 42, ctime_ns: 0, size: 0 };
        let key = kernel_key(&file);
        assert_eq!(key.dev, (259 << 20) | 3);
        assert_eq!(key.ino, 42);
        // 0:35 (overlay, tmpfs): minor only.
        let file = FileIdentity { dev: libc::makedev(0, 35), ino: 7, ctime_ns: 0, size: 0 };
        assert_eq!(kernel_key(&file).dev, 35);
    }
}
