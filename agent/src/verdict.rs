//! Where a process's time went over a window: the shares that `golens trace`'s summary and
//! `golens top`'s detail pane rank, from one definition (the README's "How to read the
//! verdict").

/// What was measured over a window, in seconds; None: not measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TimeSpent {
    pub wall: f64,
    /// The runtime's stop-the-world pauses, added up.
    pub stopped: Option<f64>,
    /// Run-queue time of the process's threads: runnable, not running (throttled time
    /// included: a thread of a throttled cgroup waits on its run queue).
    pub waited: Option<f64>,
    /// CPU time the process used (utime + stime).
    pub ran: Option<f64>,
    /// Time the process's cgroup was throttled by its CPU quota (0 without a quota); None
    /// when its cgroup's counter could not be read.
    pub throttled: Option<f64>,
}

/// Shares of the wall time (see the README's definitions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shares {
    /// Stopped by the runtime: the pauses' total over the wall time.
    pub stopped: Option<f64>,
    /// Runnable but waiting for a CPU: of the time its threads wanted a CPU (waiting plus
    /// running), the part they waited. Throttling makes threads wait too: see `conclusion`.
    pub waiting: Option<f64>,
    /// Throttled by its cgroup's CPU quota: throttled time over wall time.
    pub throttled: Option<f64>,
}

impl Shares {
    pub fn of(spent: &TimeSpent) -> Shares {
        let over_wall = |seconds: Option<f64>| {
            seconds.filter(|_| spent.wall > 0.0).map(|s| s.max(0.0) / spent.wall + 0.0)
        };
        let waiting = match (spent.waited, spent.ran) {
            (Some(waited), Some(ran)) => {
                let (waited, ran) = (waited.max(0.0), ran.max(0.0));
                (waited + ran > 0.0).then(|| waited / (waited + ran))
            }
            _ => None,
        };
        Shares { stopped: over_wall(spent.stopped), waiting, throttled: over_wall(spent.throttled) }
    }

    /// The largest share's culprit ("GC pauses", …), or why there is none.
    ///
    /// A thread of a throttled cgroup waits on its run queue until the quota refills, so
    /// throttling shows in the waiting share too (often more than once: every runnable thread
    /// waits out the same throttled stretch). The ranking therefore counts only the waiting
    /// outside throttled time, `waiting × (1 − throttled)`: with no throttling, all of it.
    pub fn conclusion(&self) -> String {
        let beyond_throttling = self
            .waiting
            .map(|waiting| waiting * (1.0 - self.throttled.unwrap_or(0.0).clamp(0.0, 1.0)));
        let mut ranked: Vec<(&str, f64)> = [
            ("GC pauses", self.stopped),
            ("the scheduler (waiting for a CPU)", beyond_throttling),
            ("CPU throttling by the cgroup quota", self.throttled),
        ]
        .into_iter()
        .filter_map(|(name, share)| share.map(|s| (name, s)))
        .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        match ranked.first() {
            Some((_, share)) if *share < 0.01 => {
                "nothing stands out (every share under 1 %)".to_string()
            }
            Some((name, _)) => format!("mostly {name}"),
            None => "nothing could be measured".to_string(),
        }
    }

    /// The ranked verdict, e.g. "stopped 0.8 % (GC), waiting for CPU 6.1 %, throttled 0.0 %:
    /// mostly the scheduler (waiting for a CPU)".
    pub fn verdict(&self) -> String {
        format!(
            "stopped {} (GC), waiting for CPU {}, throttled {}: {}",
            percent(self.stopped),
            percent(self.waiting),
            percent(self.throttled),
            self.conclusion()
        )
    }
}

/// "6.1 %", or "–" when not measured.
pub fn percent(share: Option<f64>) -> String {
    share.map_or("–".to_string(), |s| format!("{:.1} %", s * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_ranks_the_largest_share() {
        let scheduler = Shares { stopped: Some(0.008), waiting: Some(0.061), throttled: Some(0.0) };
        assert_eq!(
            scheduler.verdict(),
            "stopped 0.8 % (GC), waiting for CPU 6.1 %, throttled 0.0 %: mostly the scheduler \
             (waiting for a CPU)"
        );
        let gc = Shares { stopped: Some(0.2), waiting: Some(0.01), throttled: None };
        assert!(gc.verdict().ends_with("throttled –: mostly GC pauses"), "{}", gc.verdict());
        let quiet = Shares { stopped: Some(0.001), waiting: Some(0.002), throttled: Some(0.0) };
        assert!(quiet.verdict().ends_with("nothing stands out (every share under 1 %)"));
        let none = Shares { stopped: None, waiting: None, throttled: None };
        assert_eq!(none.conclusion(), "nothing could be measured");
    }

    #[test]
    fn shares_of_the_time_spent() {
        let spent = TimeSpent {
            wall: 10.0,
            stopped: Some(0.5),
            waited: Some(1.0),
            ran: Some(3.0),
            throttled: Some(0.0),
        };
        let shares = Shares::of(&spent);
        assert_eq!(shares.stopped, Some(0.05));
        assert_eq!(shares.waiting, Some(0.25));
        assert_eq!(shares.throttled, Some(0.0));
        // Not measured stays unmeasured: never a zero.
        let unknown = Shares::of(&TimeSpent { waited: None, throttled: None, ..spent });
        assert_eq!((unknown.waiting, unknown.throttled), (None, None));
        let idle = Shares::of(&TimeSpent { waited: Some(0.0), ran: Some(0.0), ..spent });
        assert_eq!(idle.waiting, None);
        assert_eq!(Shares::of(&TimeSpent { wall: 0.0, ..spent }).stopped, None);
    }

    /// A spinner held to 0.2 CPU by its quota, throttled 6.6 s of 10, waits 10.4 s on its run
    /// queue (its other threads wait out the same throttled stretches): the verdict blames
    /// the quota, not the scheduler.
    #[test]
    fn throttled_waits_are_not_the_schedulers() {
        let spent = TimeSpent {
            wall: 10.0,
            stopped: Some(0.0),
            waited: Some(10.4),
            ran: Some(2.0),
            throttled: Some(6.6),
        };
        let shares = Shares::of(&spent);
        assert!((shares.waiting.unwrap() - 10.4 / 12.4).abs() < 1e-9, "{shares:?}");
        assert!((shares.throttled.unwrap() - 0.66).abs() < 1e-9);
        assert_eq!(shares.conclusion(), "mostly CPU throttling by the cgroup quota");
        // A little throttling does not hide a crowded CPU.
        let crowded = Shares { stopped: Some(0.01), waiting: Some(0.4), throttled: Some(0.05) };
        assert_eq!(crowded.conclusion(), "mostly the scheduler (waiting for a CPU)");
        // Throttled more than the wall time (several CPUs' run queues): no negative share.
        let wide = Shares { stopped: Some(0.0), waiting: Some(0.9), throttled: Some(1.6) };
        assert_eq!(wide.conclusion(), "mostly CPU throttling by the cgroup quota");
    }
}
