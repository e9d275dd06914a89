//! Which Go processes the agent watches.

/// Targets chosen on the command line. Empty `pids` and `comms` mean every Go process.
#[derive(Debug, Clone, Default)]
pub struct TargetFilter {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub max_processes: usize,
}

impl TargetFilter {
    /// Whether a process with this pid can be wanted at all (before reading its comm).
    pub fn may_want(&self, pid: u32) -> bool {
        self.pids.is_empty() || self.pids.contains(&pid)
    }

    /// Whether a Go process with this pid and comm is wanted (before the cap).
    pub fn wants(&self, pid: u32, comm: &str) -> bool {
        self.may_want(pid) && (self.comms.is_empty() || self.comms.iter().any(|c| c == comm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_filter_wants_everything() {
        let f = TargetFilter { max_processes: 10, ..Default::default() };
        assert!(f.wants(1, "anything"));
    }

    #[test]
    fn pid_and_comm_both_apply() {
        let f = TargetFilter { pids: vec![7], comms: vec!["api".into()], max_processes: 10 };
        assert!(f.wants(7, "api"));
        assert!(!f.wants(7, "worker"));
        assert!(!f.wants(8, "api"));
    }
}
