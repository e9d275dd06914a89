//! Which processes are Go, and the per-process facts of each: VMAs, fds and
//! their limit, the Go environment variables, allowed CPUs, cgroup limits.

use std::{
    collections::HashSet,
    fs,
    io::{self, Read},
    path::{Path, PathBuf},
};

use crate::{
    discovery::{Inspection, Inspector},
    gobinary::{GoBinary, TargetError},
};

use super::{
    cgroup,
    facts::{GoProcess, NofileLimit, Processes, Reading, Uninspected, Unreadable, TCP_LISTEN},
    gather::{tcp_sockets, Root},
    parse,
};

/// At or below this soft RLIMIT_NOFILE, a process that listens is warned
/// about (1024 is the usual default soft limit; a server wants far more).
pub const LOW_NOFILE_SOFT_LIMIT: u64 = 1024;

/// What a detector learned about one pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    Go {
        comm: String,
        go_version: Option<String>,
    },
    /// Not Go, a kernel thread, or already gone.
    NotGo,
    /// The executable could not be read: whether it is Go is unknown.
    Unreadable {
        reason: String,
        permission_denied: bool,
    },
}

/// Decides which processes are Go.
pub trait GoDetector {
    fn detect(&mut self, pid: u32) -> Detected;
}

/// Discovery's own inspector (/proc/PID/exe, cached by executable identity):
/// the detector on a real host, where the root is "/".
impl GoDetector for Inspector {
    fn detect(&mut self, pid: u32) -> Detected {
        match self.inspect(pid) {
            Inspection::Go { comm, info, .. } => {
                Detected::Go { comm, go_version: info.go_version.clone() }
            }
            Inspection::NotGo | Inspection::NoExecutable => Detected::NotGo,
            Inspection::Error { reason, detail } => Detected::Unreadable {
                reason: detail,
                permission_denied: reason == "permission_denied",
            },
        }
    }
}

/// Opens `<root>/proc/PID/exe` directly: the detector for a root other than
/// "/" (a fixture tree whose `exe` is a copy of, or a link to, a binary).
pub struct ExecutableFiles {
    pub root: PathBuf,
}

impl GoDetector for ExecutableFiles {
    fn detect(&mut self, pid: u32) -> Detected {
        let root = Root(&self.root);
        match GoBinary::open(&root.path(&format!("proc/{pid}/exe"))) {
            Ok(binary) => {
                let comm = root.read(&format!("proc/{pid}/comm")).unwrap_or_default();
                Detected::Go { comm: comm.trim().to_string(), go_version: binary.go_version }
            }
            Err(TargetError::NotGo { .. } | TargetError::Elf { .. }) => Detected::NotGo,
            Err(TargetError::Io { path, source }) => match source.kind() {
                io::ErrorKind::NotFound => Detected::NotGo,
                kind => Detected::Unreadable {
                    reason: format!("{}: {source}", path.display()),
                    permission_denied: kind == io::ErrorKind::PermissionDenied,
                },
            },
        }
    }
}

/// Every process under `<root>/proc`: the Go ones with their facts, and the
/// ones that could not be inspected.
pub fn gather_processes(root: Root<'_>, detector: &mut dyn GoDetector) -> Processes {
    let proc = root.path("proc");
    let mut pids: Vec<u32> = match fs::read_dir(&proc) {
        Ok(entries) => {
            entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect()
        }
        Err(error) => {
            return Processes {
                listing_error: Some(Unreadable::io(&proc, &error)),
                ..Processes::default()
            }
        }
    };
    pids.sort_unstable();
    let own_pid = (root.0 == Path::new("/")).then(std::process::id);
    let mut processes = Processes::default();
    for pid in pids.into_iter().filter(|&pid| Some(pid) != own_pid) {
        match detector.detect(pid) {
            Detected::Go { comm, go_version } => {
                let process = go_process(root, pid, comm, go_version);
                // A process that exited while being read is no finding.
                if root.path(&format!("proc/{pid}")).exists() {
                    processes.go.push(process);
                }
            }
            Detected::NotGo => {}
            // Unprivileged, a kernel thread's exe is "permission denied"
            // rather than absent: its stat says what it is.
            Detected::Unreadable { .. } if is_kernel_thread(root, pid) => {}
            Detected::Unreadable { reason, permission_denied } => {
                let comm = root.read(&format!("proc/{pid}/comm")).unwrap_or_default();
                let comm = comm.trim().to_string();
                processes.uninspected.push(Uninspected { pid, comm, reason, permission_denied })
            }
        }
    }
    processes
}

fn go_process(root: Root<'_>, pid: u32, comm: String, go_version: Option<String>) -> GoProcess {
    let dir = format!("proc/{pid}");
    let file = |name: &str| root.path(&format!("{dir}/{name}"));
    let nofile =
        root.parsed(&format!("{dir}/limits"), parse::nofile_limit, "a `Max open files` row");
    let listening_sockets = match nofile {
        Ok(NofileLimit { soft: Some(soft), .. }) if soft <= LOW_NOFILE_SOFT_LIMIT => {
            Some(listening_sockets(root, pid))
        }
        _ => None,
    };
    let (cpu_limit, memory_limit) = cgroup::limits(&root.path(&dir));
    GoProcess {
        pid,
        comm,
        go_version,
        vma_count: count_lines(&file("maps")),
        open_fds: count_entries(&file("fd")),
        nofile,
        listening_sockets,
        env: fs::read(file("environ"))
            .map(|environ| parse::go_env(&environ))
            .map_err(|error| Unreadable::io(&file("environ"), &error)),
        cpus_allowed: root.parsed(
            &format!("{dir}/status"),
            parse::status_cpus_allowed,
            "a Cpus_allowed_list line",
        ),
        cpu_limit,
        memory_limit,
    }
}

/// Newlines of a file, read in 64 KiB chunks (a big process's maps is MBs).
fn count_lines(path: &Path) -> Reading<u64> {
    let unreadable = |error: io::Error| Unreadable::io(path, &error);
    let mut file = fs::File::open(path).map_err(unreadable)?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut lines = 0u64;
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return Ok(lines),
            Ok(n) => lines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(unreadable(error)),
        }
    }
}

fn count_entries(dir: &Path) -> Reading<u64> {
    let entries = fs::read_dir(dir).map_err(|error| Unreadable::io(dir, &error))?;
    Ok(entries.filter(|entry| entry.is_ok()).count() as u64)
}

/// Listening TCP sockets among the process's fds: its fds' socket inodes
/// matched against the LISTEN sockets of its own network namespace.
fn listening_sockets(root: Root<'_>, pid: u32) -> Reading<u64> {
    let listening: HashSet<u64> = tcp_sockets(root, &format!("proc/{pid}/net"))?
        .into_iter()
        .filter(|socket| socket.state == TCP_LISTEN)
        .map(|socket| socket.inode)
        .collect();
    let fd_dir = root.path(&format!("proc/{pid}/fd"));
    let entries = fs::read_dir(&fd_dir).map_err(|error| Unreadable::io(&fd_dir, &error))?;
    let count = entries
        .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| socket_inode(&target.to_string_lossy()))
        .filter(|inode| listening.contains(inode))
        .count();
    Ok(count as u64)
}

/// PF_KTHREAD in the flags of /proc/PID/stat (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

fn is_kernel_thread(root: Root<'_>, pid: u32) -> bool {
    root.read(&format!("proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat_flags(&stat))
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// Field 9 (flags) of /proc/PID/stat.
fn stat_flags(stat: &str) -> Option<u64> {
    crate::discovery::procfs::stat_field(stat, 9)
}

/// "socket:[12345]" -> 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_threads_from_stat_flags() {
        let kthreadd = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 3 0 0";
        assert_eq!(stat_flags(kthreadd), Some(2_129_984));
        assert!(stat_flags(kthreadd).unwrap() & PF_KTHREAD != 0);
        let user = "42 (my (app)) S 1 42 42 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 7 0 123456";
        assert_eq!(stat_flags(user).map(|f| f & PF_KTHREAD), Some(0));
        assert_eq!(stat_flags("garbage"), None);
        assert!(is_kernel_thread(Root(Path::new("/")), 2), "kthreadd is pid 2");
        assert!(!is_kernel_thread(Root(Path::new("/")), std::process::id()));
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[12345]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    /// This test's own process is not Go, but its files are the real thing:
    /// every per-process reader works on it.
    #[test]
    fn own_process_facts_are_readable() {
        let pid = std::process::id();
        let process = go_process(Root(Path::new("/")), pid, "self".into(), None);
        assert!(process.vma_count.unwrap() > 10);
        assert!(process.open_fds.unwrap() >= 3);
        assert!(process.nofile.is_ok());
        assert!(process.env.is_ok());
        assert!(process.cpus_allowed.unwrap() >= 1);
        assert!(process.cpu_limit.is_ok(), "{:?}", process.cpu_limit);
        assert!(process.memory_limit.is_ok(), "{:?}", process.memory_limit);
    }

    #[test]
    fn a_missing_root_is_a_listing_error() {
        let processes = gather_processes(
            Root(Path::new("/nonexistent-golens-root")),
            &mut ExecutableFiles { root: "/nonexistent-golens-root".into() },
        );
        assert!(processes.listing_error.is_some());
        assert!(processes.go.is_empty());
    }
}
