//! Which pid namespace golens' /proc shows, as far as /proc itself can tell.
//!
//! Every pid golens reports is a pid of that namespace (see "pid namespaces"
//! in `bpf/common.bpf.h`). /proc/self/status's `NSpid` line lists golens'
//! pid in every namespace from the one of this /proc mount down to golens'
//! own, so its length says how many levels lie between the two; the
//! kernel-side calibration supplies golens' absolute level.

use std::{fs, io, os::unix::fs::MetadataExt};

/// Inode number of the initial pid namespace (`PROC_PID_INIT_INO` in the
/// kernel, fixed since 3.8).
const INITIAL_PID_NS_INODE: u64 = 0xEFFF_FFFC;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcView {
    /// golens' pid in each namespace from /proc's down to its own.
    pub nspid: Vec<u32>,
    /// golens runs in the initial pid namespace (and so does /proc).
    pub initial: bool,
}

impl ProcView {
    pub fn current() -> io::Result<ProcView> {
        let status = fs::read_to_string("/proc/self/status")?;
        let nspid = parse_nspid(&status).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "golens does not appear in this /proc (no NSpid in /proc/self/status): mount a \
                 /proc of golens' own pid namespace, or of one of its ancestors",
            )
        })?;
        let own_ns = fs::metadata("/proc/self/ns/pid")?.ino();
        Ok(ProcView { initial: own_ns == INITIAL_PID_NS_INODE && nspid.len() == 1, nspid })
    }

    /// Level of /proc's namespace, given golens' own absolute level.
    pub fn proc_level(&self, own_level: u32) -> Option<u32> {
        own_level.checked_sub(self.nspid.len().checked_sub(1)? as u32)
    }
}

pub fn parse_nspid(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|line| line.strip_prefix("NSpid:"))?;
    let pids: Option<Vec<u32>> = line.split_whitespace().map(|p| p.parse().ok()).collect();
    pids.filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nspid_lists_every_level() {
        assert_eq!(parse_nspid("Name:\tx\nNSpid:\t4242\t7\t1\n"), Some(vec![4242, 7, 1]));
        assert_eq!(parse_nspid("NSpid:\t1\n"), Some(vec![1]));
        assert_eq!(parse_nspid("Name:\tx\n"), None);
        assert_eq!(parse_nspid("NSpid:\n"), None);
        assert_eq!(parse_nspid("NSpid:\t12\tx\n"), None);
    }

    #[test]
    fn proc_level_from_own_level() {
        let view = ProcView { nspid: vec![100, 5], initial: false };
        assert_eq!(view.proc_level(2), Some(1));
        assert_eq!(view.proc_level(0), None);
        let view = ProcView { nspid: vec![1], initial: false };
        assert_eq!(view.proc_level(3), Some(3));
    }

    #[test]
    fn this_process_sees_itself() {
        let view = ProcView::current().expect("/proc/self/status readable");
        // The last level is the process's own namespace: getpid()'s.
        assert_eq!(view.nspid.last(), Some(&std::process::id()));
    }
}
