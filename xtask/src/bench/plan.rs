//! Which agent configurations are measured, and in which order.
//!
//! Every configuration is compared with the baseline (no agent) in ABBA blocks: baseline, X,
//! X, baseline. A drift of the machine that is linear over a block hits both sides alike, and
//! each X round is compared with the mean of the two baseline rounds around it. Blocks of the
//! different configurations are interleaved (block 1 of each, then block 2 of each, …), so a
//! slower stretch of the run does not land on one configuration only.

/// What runs next to the service during a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Config {
    /// No agent.
    Baseline,
    /// `golens run --probes sched`.
    Sched,
    /// `golens run --probes goruntime`.
    Goruntime,
    /// `golens run --probes vma,fd,net,netpoll,timers`: the per-syscall tracepoint families.
    Syscalls,
    /// Every family (golens' default).
    All,
}

impl Config {
    /// The configurations compared with the baseline, in report order.
    pub const WITH_AGENT: [Config; 4] =
        [Config::Sched, Config::Goruntime, Config::Syscalls, Config::All];

    pub fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Sched => "sched",
            Config::Goruntime => "goruntime",
            Config::Syscalls => "syscalls",
            Config::All => "all",
        }
    }

    /// The `--probes` value of the agent; None for the baseline (no agent at all).
    pub fn probes(self) -> Option<&'static str> {
        match self {
            Config::Baseline => None,
            Config::Sched => Some("sched"),
            Config::Goruntime => Some("goruntime"),
            Config::Syscalls => Some("vma,fd,net,netpoll,timers"),
            Config::All => Some("sched,goruntime,vma,fd,net,netpoll,timers"),
        }
    }

    /// Whether golens counts GC cycles in this configuration.
    pub fn counts_gc(self) -> bool {
        matches!(self, Config::Goruntime | Config::All)
    }
}

/// One round of the plan. `block` numbers the ABBA blocks of the whole plan: the two baseline
/// rounds of a block are the ones its two X rounds are compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedRound {
    pub block: usize,
    pub config: Config,
}

/// `blocks` ABBA blocks for each of `configs`, interleaved: for every block number, for every
/// configuration X in order: baseline, X, X, baseline.
pub fn abba(configs: &[Config], blocks: usize) -> Vec<PlannedRound> {
    let mut plan = Vec::with_capacity(blocks * configs.len() * 4);
    for repetition in 0..blocks {
        for (index, &config) in configs.iter().enumerate() {
            let block = repetition * configs.len() + index;
            for config in [Config::Baseline, config, config, Config::Baseline] {
                plan.push(PlannedRound { block, config });
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abba_blocks_are_interleaved_across_configurations() {
        let plan = abba(&[Config::Sched, Config::All], 2);
        let shown: Vec<(usize, &str)> = plan.iter().map(|r| (r.block, r.config.name())).collect();
        assert_eq!(
            shown,
            [
                (0, "baseline"),
                (0, "sched"),
                (0, "sched"),
                (0, "baseline"),
                (1, "baseline"),
                (1, "all"),
                (1, "all"),
                (1, "baseline"),
                (2, "baseline"),
                (2, "sched"),
                (2, "sched"),
                (2, "baseline"),
                (3, "baseline"),
                (3, "all"),
                (3, "all"),
                (3, "baseline"),
            ]
        );
        assert!(abba(&Config::WITH_AGENT, 0).is_empty());
        assert_eq!(abba(&Config::WITH_AGENT, 3).len(), 48);
    }

    #[test]
    fn configurations_map_to_probe_families() {
        let probes: Vec<Option<&str>> =
            [Config::Baseline, Config::Sched, Config::Goruntime, Config::Syscalls, Config::All]
                .iter()
                .map(|c| c.probes())
                .collect();
        assert_eq!(
            probes,
            [
                None,
                Some("sched"),
                Some("goruntime"),
                Some("vma,fd,net,netpoll,timers"),
                Some("sched,goruntime,vma,fd,net,netpoll,timers")
            ]
        );
        assert!(Config::All.counts_gc() && Config::Goruntime.counts_gc());
        assert!(!Config::Sched.counts_gc() && !Config::Baseline.counts_gc());
    }
}
