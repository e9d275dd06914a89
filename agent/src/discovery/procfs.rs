//! Reading what discovery needs from /proc. Every function tolerates a
//! process that vanishes between two reads: that is an error value, not a panic.

use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Identity of one process incarnation: a pid plus its start time, so that a
/// reused pid is never mistaken for the process golens was tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessKey {
    pub pid: u32,
    /// Clock ticks after boot (field 22 of /proc/PID/stat).
    pub start_time: u64,
}

/// The executable behind `/proc/PID/exe`.
#[derive(Debug, Clone)]
pub struct ExeRef {
    /// What the link points to, e.g. "/usr/bin/app" or "/app (deleted)".
    pub display_path: String,
    /// Path that opens the same file even when it is deleted or lives in
    /// another mount namespace.
    pub open_path: PathBuf,
    /// The same binary run many times is read once.
    pub file_id: FileIdentity,
}

/// Identity of an executable file's contents. Device and inode alone are not
/// enough: a deleted file's inode number is soon reused (a redeploy), and a
/// cached "not Go" must not stick to the new binary. The change time and size
/// differ between the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub ctime_ns: i128,
    pub size: u64,
}

pub fn proc_root() -> &'static Path {
    Path::new("/proc")
}

/// Every numeric entry of /proc (thread group ids).
pub fn list_pids() -> io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in fs::read_dir(proc_root())? {
        let Ok(entry) = entry else { continue };
        if let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse().ok()) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

pub fn exists(pid: u32) -> bool {
    proc_root().join(pid.to_string()).exists()
}

pub fn comm(pid: u32) -> io::Result<String> {
    let raw = fs::read(proc_root().join(format!("{pid}/comm")))?;
    Ok(String::from_utf8_lossy(&raw).trim_end_matches('\n').to_string())
}

/// Start time from /proc/PID/stat. The comm field may hold spaces and
/// parentheses, so fields are counted after the last ')'.
pub fn start_time(pid: u32) -> io::Result<u64> {
    let stat = fs::read_to_string(proc_root().join(format!("{pid}/stat")))?;
    parse_start_time(&stat).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat: unexpected format"))
    })
}

pub fn parse_start_time(stat: &str) -> Option<u64> {
    stat_field(stat, 22)
}

/// Numeric field `field` (1-based, as proc(5) numbers them; 3 or more) of a /proc/PID/stat
/// line. The comm (field 2) may hold spaces and parentheses: fields are counted after its
/// last ')'.
pub fn stat_field(stat: &str, field: usize) -> Option<u64> {
    let after_comm = stat.get(stat.rfind(')')? + 1..)?;
    // Fields after comm start at field 3 (state).
    after_comm.split_whitespace().nth(field.checked_sub(3)?)?.parse().ok()
}

/// utime + stime (fields 14 and 15) of process `pid`, all its threads, exited ones included,
/// in seconds: what the verdict's "waiting for CPU" share compares run-queue time with. None
/// when /proc/PID/stat cannot be read.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(proc_root().join(format!("{pid}/stat"))).ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = stat_field(&stat, 14)? + stat_field(&stat, 15)?;
    (ticks_per_second > 0).then(|| ticks as f64 / ticks_per_second as f64)
}

pub fn key(pid: u32) -> io::Result<ProcessKey> {
    Ok(ProcessKey { pid, start_time: start_time(pid)? })
}

/// The process's executable. Kernel threads have none (`ENOENT`).
pub fn exe(pid: u32) -> io::Result<ExeRef> {
    let open_path = proc_root().join(format!("{pid}/exe"));
    let display_path = fs::read_link(&open_path)?.to_string_lossy().into_owned();
    let metadata = fs::metadata(&open_path)?;
    let file_id = FileIdentity {
        dev: metadata.dev(),
        ino: metadata.ino(),
        ctime_ns: i128::from(metadata.ctime()) * 1_000_000_000 + i128::from(metadata.ctime_nsec()),
        size: metadata.size(),
    };
    Ok(ExeRef { display_path, open_path, file_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_comm_with_spaces_and_parens() {
        let stat = "42 (my (weird) app) S 1 42 42 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 7 0 123456 \
                    1000 10 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(123456));
    }

    #[test]
    fn stat_fields_after_an_odd_comm() {
        let stat = "4242 (my (odd) comm) S 4200 4242 4200 0 -1 4194560 1234 0 0 0 731 402 0 0 \
                    20 0 7 0 123456 1000000 2000";
        assert_eq!((stat_field(stat, 14), stat_field(stat, 15)), (Some(731), Some(402)));
        assert_eq!(stat_field(stat, 4), Some(4200));
        assert_eq!(stat_field(stat, 3), None, "the state is a letter");
        assert_eq!(stat_field(stat, 2), None);
        assert_eq!(stat_field("4242 (x) S 1 2", 14), None);
        assert_eq!(stat_field("garbage", 4), None);
        assert!(cpu_seconds(std::process::id()).is_some());
        assert_eq!(cpu_seconds(u32::MAX), None);
    }

    #[test]
    fn start_time_of_garbage_is_none() {
        assert_eq!(parse_start_time(""), None);
        assert_eq!(parse_start_time("1 (x) S 1 2"), None);
        assert_eq!(parse_start_time("no parens at all"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(exists(pid));
        assert!(!comm(pid).unwrap().is_empty());
        assert!(start_time(pid).unwrap() > 0);
        let exe = exe(pid).unwrap();
        assert!(exe.display_path.starts_with('/'));
    }
}
