//! Deciding whether a process is a Go process, with a cache by executable
//! identity: most execs on a host are not Go (shells, coreutils), and a file
//! is not parsed again while a process of it is watched.
//!
//! Go binaries are cached weakly: a `GoBinary` keeps its file mapped, and a
//! strong cache would pin the disk space of every deleted (redeployed)
//! binary forever. The watched processes hold the strong references.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
};

use crate::gobinary::{GoBinary, TargetError};

use super::procfs::{self, FileIdentity};

/// What discovery learned about one process.
#[derive(Debug, Clone)]
pub enum Inspection {
    Go {
        comm: String,
        exe: String,
        binary: Arc<GoBinary>,
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
    Go(Weak<GoBinary>),
}

impl Inspector {
    pub fn inspect(&mut self, pid: u32) -> Inspection {
        let exe = match procfs::exe(pid) {
            Ok(exe) => exe,
            Err(error) => return io_inspection(error),
        };
        let cached = match self.by_file.get(&exe.file_id) {
            Some(Cached::NotGo) => return Inspection::NotGo,
            Some(Cached::Go(weak)) => weak.upgrade(),
            None => None,
        };
        let binary = match cached {
            Some(binary) => binary,
            None => {
                let (entry, binary) = match GoBinary::open(&exe.open_path) {
                    Ok(binary) => {
                        let binary = Arc::new(binary);
                        (Cached::Go(Arc::downgrade(&binary)), Some(binary))
                    }
                    Err(TargetError::NotGo { .. }) | Err(TargetError::Elf { .. }) => {
                        (Cached::NotGo, None)
                    }
                    Err(TargetError::Io { source, .. }) => return io_inspection(source),
                };
                if self.by_file.len() >= CACHE_LIMIT {
                    self.by_file.retain(
                        |_, cached| matches!(cached, Cached::Go(w) if w.strong_count() > 0),
                    );
                }
                self.by_file.insert(exe.file_id, entry);
                match binary {
                    Some(binary) => binary,
                    None => return Inspection::NotGo,
                }
            }
        };
        match procfs::comm(pid) {
            Ok(comm) => Inspection::Go { comm, exe: exe.display_path, binary },
            Err(error) => io_inspection(error),
        }
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
