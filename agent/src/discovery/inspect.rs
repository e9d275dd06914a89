//! Deciding whether a process is a Go process, with a cache by executable
//! identity: most execs on a host are not Go (shells, coreutils), and a file
//! is not read again while it stays the same file.
//!
//! The cache keeps what a watched process needs of its binary (version,
//! stripped, PIE, where `runtime.gomaxprocs` lives): a few bytes, never the
//! file's contents. The contents are handed out only when the file was just
//! read (`fresh`), for the probe registry to plan its uprobes, and dropped
//! after that.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use crate::gobinary::{GoBinary, TargetError};

use super::procfs::{self, FileIdentity};

/// What a watched process keeps of its Go binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryInfo {
    /// e.g. "go1.21.13"; None without build info.
    pub go_version: Option<String>,
    pub stripped: bool,
    pub pie: bool,
    /// Link-time address of `runtime.gomaxprocs` (an int32), read from each
    /// process's memory at collection time; None when it cannot be found
    /// (the reason is logged once, when the binary is read).
    pub gomaxprocs_address: Option<u64>,
    /// The file's entry point (`e_entry`): a PIE's load bias is the running
    /// entry point minus this.
    pub entry: u64,
}

impl BinaryInfo {
    /// `exe` names the binary in the log.
    pub fn of(binary: &GoBinary, exe: &str) -> BinaryInfo {
        let gomaxprocs_address = match binary.gomaxprocs_variable() {
            Ok(variable) => {
                tracing::debug!(exe, ?variable, "runtime.gomaxprocs located");
                Some(variable.address)
            }
            Err(error) => {
                tracing::info!(
                    exe,
                    %error,
                    "GOMAXPROCS of this binary's processes will come from their environment or \
                     their Go version's default, not from the runtime"
                );
                None
            }
        };
        BinaryInfo {
            go_version: binary.go_version.clone(),
            stripped: binary.stripped,
            pie: binary.pie,
            gomaxprocs_address,
            entry: binary.entry_address(),
        }
    }
}

/// What discovery learned about one process.
#[derive(Clone)]
pub enum Inspection {
    Go {
        comm: String,
        /// What /proc/PID/exe points to, e.g. "/usr/bin/app (deleted)".
        exe: String,
        info: Arc<BinaryInfo>,
        /// The file's identity (cache and probe registry key).
        file: FileIdentity,
        /// A path that opens the same file (/proc/PID/exe).
        open_path: PathBuf,
        /// The binary, when this inspection read it (a cache miss).
        fresh: Option<Arc<GoBinary>>,
    },
    NotGo,
    /// Kernel thread, or the process is already gone.
    NoExecutable,
    Error {
        reason: &'static str,
        detail: String,
    },
}

/// Cache bound: above this many distinct executables the cache starts over.
const CACHE_LIMIT: usize = 4096;

#[derive(Default)]
pub struct Inspector {
    by_file: HashMap<FileIdentity, Cached>,
}

enum Cached {
    NotGo,
    Go(Arc<BinaryInfo>),
}

impl Inspector {
    pub fn inspect(&mut self, pid: u32) -> Inspection {
        let exe = match procfs::exe(pid) {
            Ok(exe) => exe,
            Err(error) => return io_inspection(error),
        };
        let (info, fresh) = match self.by_file.get(&exe.file_id) {
            Some(Cached::NotGo) => return Inspection::NotGo,
            Some(Cached::Go(info)) => (info.clone(), None),
            None => {
                let (entry, fresh) = match GoBinary::open(&exe.open_path) {
                    Ok(binary) => {
                        let info = BinaryInfo::of(&binary, &exe.display_path);
                        (Cached::Go(Arc::new(info)), Some(Arc::new(binary)))
                    }
                    Err(TargetError::NotGo { .. }) | Err(TargetError::Elf { .. }) => {
                        (Cached::NotGo, None)
                    }
                    Err(error) => return open_error(error),
                };
                if self.by_file.len() >= CACHE_LIMIT {
                    self.by_file.clear();
                }
                let info = match &entry {
                    Cached::Go(info) => Some(info.clone()),
                    Cached::NotGo => None,
                };
                self.by_file.insert(exe.file_id, entry);
                match info {
                    Some(info) => (info, fresh),
                    None => return Inspection::NotGo,
                }
            }
        };
        match procfs::comm(pid) {
            Ok(comm) => Inspection::Go {
                comm,
                exe: exe.display_path,
                info,
                file: exe.file_id,
                open_path: exe.open_path,
                fresh,
            },
            Err(error) => io_inspection(error),
        }
    }
}

fn open_error(error: TargetError) -> Inspection {
    match error {
        TargetError::Io { source, .. } => io_inspection(source),
        other => Inspection::Error { reason: "read", detail: other.to_string() },
    }
}

fn io_inspection(error: std::io::Error) -> Inspection {
    match error.kind() {
        std::io::ErrorKind::NotFound => Inspection::NoExecutable,
        std::io::ErrorKind::PermissionDenied => Inspection::Error {
            reason: "permission_denied",
            detail: format!(
                "{error} (reading /proc/PID/exe needs ptrace access: CAP_SYS_PTRACE, and a target \
                 no more privileged than golens)"
            ),
        },
        _ => Inspection::Error { reason: "io", detail: error.to_string() },
    }
}
