//! Which agent configurations are measured, and in which order.
//!
//! Two identical services (twins) run side by side under the same load in every round; golens
//! watches one of them. The figure of a round is the watched twin's CPU per request divided by
//! the other's: whatever slows the machine down in that round hits both. The two X rounds of a
//! block watch one twin each, so a difference between the twins themselves cancels out of the
//! block's figure (the geometric mean of its two ratios).
//!
//! Every configuration runs in ABBA blocks: baseline (no agent), X, X, baseline. The baseline
//! rounds give the same figure with no agent at all (an A/A test: what no difference looks
//! like). Blocks of the different configurations are interleaved (block 1 of each, then block
//! 2 of each, …), so a slower stretch of the run does not land on one configuration only.

/// What runs next to the twins during a round: nothing (the baseline), or golens with some
/// probe families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Config {
    name: &'static str,
    /// The `--probes` value of the agent; None for the baseline (no agent at all).
    probes: Option<&'static str>,
    /// Whether the agent watches a twin; if not, it watches nothing, so that every hit of its
    /// programs takes the early return of a process it does not watch.
    watches: bool,
}

impl Config {
    pub const BASELINE: Config = Config::agent("baseline", None);
    pub const SCHED: Config = Config::agent("sched", Some("sched"));
    pub const GORUNTIME: Config = Config::agent("goruntime", Some("goruntime"));
    /// The per-syscall tracepoint families together.
    pub const SYSCALLS: Config = Config::agent("syscalls", Some("vma,fd,net,netpoll,timers"));
    /// Every default family (golens' default).
    pub const ALL: Config = Config::agent("all", Some("sched,goruntime,vma,fd,net,netpoll,timers"));
    /// Every default family, watching no process: what golens costs the processes it does not
    /// watch (each program's early return), and by difference with ALL, the watched one's own.
    pub const UNWATCHED: Config = Config { name: "unwatched", watches: false, ..Config::ALL };

    const fn agent(name: &'static str, probes: Option<&'static str>) -> Config {
        Config { name, probes, watches: true }
    }

    /// The configurations compared with the baseline by default, in report order.
    pub const WITH_AGENT: [Config; 4] =
        [Config::SCHED, Config::GORUNTIME, Config::SYSCALLS, Config::ALL];

    /// Every configuration `--configs` accepts: the defaults, then each syscall family alone.
    pub const CHOOSABLE: [Config; 10] = [
        Config::SCHED,
        Config::GORUNTIME,
        Config::SYSCALLS,
        Config::ALL,
        Config::UNWATCHED,
        Config::agent("vma", Some("vma")),
        Config::agent("fd", Some("fd")),
        Config::agent("net", Some("net")),
        Config::agent("netpoll", Some("netpoll")),
        Config::agent("timers", Some("timers")),
    ];

    pub fn name(self) -> &'static str {
        self.name
    }

    /// The `--probes` value of the agent; None for the baseline (no agent at all).
    pub fn probes(self) -> Option<&'static str> {
        self.probes
    }

    /// Whether golens watches a twin in this configuration.
    pub fn watches(self) -> bool {
        self.watches
    }

    /// Whether golens counts the watched twin's GC cycles in this configuration.
    pub fn counts_gc(self) -> bool {
        self.watches
            && self.probes.is_some_and(|probes| probes.split(',').any(|f| f == "goruntime"))
    }
}

/// How many services run side by side in a round.
pub const TWINS: usize = 2;

/// One round of the plan. `block` numbers the ABBA blocks of the whole plan; `watched` is the
/// twin golens watches (for a baseline round, the twin whose CPU is the numerator of its
/// figure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedRound {
    pub block: usize,
    pub config: Config,
    pub watched: usize,
}

/// `blocks` ABBA blocks for each of `configs`, interleaved: for every block number, for every
/// configuration X in order: baseline, X, X, baseline. Within a block the first baseline and
/// X rounds watch one twin and the second ones the other; which twin comes first alternates
/// from block to block.
pub fn abba(configs: &[Config], blocks: usize) -> Vec<PlannedRound> {
    let mut plan = Vec::with_capacity(blocks * configs.len() * 4);
    for repetition in 0..blocks {
        for (index, &config) in configs.iter().enumerate() {
            let block = repetition * configs.len() + index;
            let first = block % TWINS;
            let second = (first + 1) % TWINS;
            for (config, watched) in [
                (Config::BASELINE, first),
                (config, first),
                (config, second),
                (Config::BASELINE, second),
            ] {
                plan.push(PlannedRound { block, config, watched });
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
        let plan = abba(&[Config::SCHED, Config::ALL], 2);
        let shown: Vec<(usize, &str, usize)> =
            plan.iter().map(|r| (r.block, r.config.name(), r.watched)).collect();
        assert_eq!(
            shown,
            [
                (0, "baseline", 0),
                (0, "sched", 0),
                (0, "sched", 1),
                (0, "baseline", 1),
                (1, "baseline", 1),
                (1, "all", 1),
                (1, "all", 0),
                (1, "baseline", 0),
                (2, "baseline", 0),
                (2, "sched", 0),
                (2, "sched", 1),
                (2, "baseline", 1),
                (3, "baseline", 1),
                (3, "all", 1),
                (3, "all", 0),
                (3, "baseline", 0),
            ]
        );
        assert!(abba(&Config::WITH_AGENT, 0).is_empty());
        assert_eq!(abba(&Config::WITH_AGENT, 3).len(), 48);
    }

    #[test]
    fn configurations_map_to_probe_families() {
        let probes: Vec<Option<&str>> =
            [Config::BASELINE, Config::SCHED, Config::GORUNTIME, Config::SYSCALLS, Config::ALL]
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
        assert!(Config::ALL.counts_gc() && Config::GORUNTIME.counts_gc());
        assert!(!Config::SCHED.counts_gc() && !Config::BASELINE.counts_gc());
        assert!(!Config::UNWATCHED.counts_gc() && !Config::UNWATCHED.watches());
        assert_eq!(Config::UNWATCHED.probes(), Config::ALL.probes());
        let names: Vec<&str> = Config::CHOOSABLE.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "sched",
                "goruntime",
                "syscalls",
                "all",
                "unwatched",
                "vma",
                "fd",
                "net",
                "netpoll",
                "timers"
            ]
        );
        // Each syscall family alone is one of the syscalls configuration's.
        let syscalls: Vec<&str> = Config::SYSCALLS.probes().unwrap().split(',').collect();
        for config in &Config::CHOOSABLE[5..] {
            assert_eq!(config.probes(), Some(config.name()));
            assert!(syscalls.contains(&config.name()), "{config:?}");
        }
    }
}
