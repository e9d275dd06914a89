//! From rounds to figures: ratios against the baseline of the same ABBA block, and their
//! spread.

use super::{plan::Config, round::RoundResult};

/// min / median / max of some values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

/// The spread of `values` (NaN ignored); None when there is none.
pub fn spread(values: &[f64]) -> Option<Spread> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    Some(Spread { min: *sorted.first()?, median: median_of_sorted(&sorted)?, max: *sorted.last()? })
}

/// The median of `values` (NaN ignored); the mean of the middle two for an even count.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut sorted: Vec<f64> = values.into_iter().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    median_of_sorted(&sorted)
}

fn median_of_sorted(sorted: &[f64]) -> Option<f64> {
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[middle]),
        _ => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
    }
}

/// For every valid round of `config`: its `value` divided by the mean `value` of the valid
/// baseline rounds of its own ABBA block. A block whose baseline rounds are all invalid gives
/// no ratio.
pub fn ratios_to_block_baseline(
    rounds: &[RoundResult],
    config: Config,
    value: impl Fn(&RoundResult) -> f64,
) -> Vec<f64> {
    rounds
        .iter()
        .filter(|round| round.config == config && round.valid())
        .filter_map(|round| {
            let baseline = mean(
                rounds
                    .iter()
                    .filter(|b| b.block == round.block && b.config == Config::Baseline)
                    .filter(|b| b.valid())
                    .map(&value),
            )?;
            (baseline > 0.0).then(|| value(round) / baseline)
        })
        .collect()
}

/// The A/A comparison of the baseline with itself: for every block whose two baseline rounds
/// are both valid, the second one's `value` divided by the first one's. Its spread is what
/// "no difference" looks like on this machine.
pub fn baseline_self_ratios(
    rounds: &[RoundResult],
    value: impl Fn(&RoundResult) -> f64,
) -> Vec<f64> {
    let mut blocks: Vec<usize> = rounds.iter().map(|r| r.block).collect();
    blocks.dedup();
    blocks
        .into_iter()
        .filter_map(|block| {
            let baselines: Vec<&RoundResult> = rounds
                .iter()
                .filter(|r| r.block == block && r.config == Config::Baseline)
                .collect();
            let [first, second] = baselines[..] else { return None };
            let valid = first.valid() && second.valid() && value(first) > 0.0;
            valid.then(|| value(second) / value(first))
        })
        .collect()
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, count) = values.fold((0.0, 0usize), |(sum, count), v| (sum + v, count + 1));
    (count > 0).then(|| sum / count as f64)
}

/// One line of a scenario's table.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigSummary {
    pub config: Config,
    pub rounds: usize,
    pub valid_rounds: usize,
    /// How many ratios the spreads are made of.
    pub ratios: usize,
    /// Service CPU per request, as a ratio to the block's baseline; for the baseline itself,
    /// the A/A ratios of `baseline_self_ratios`.
    pub cpu_ratio: Option<Spread>,
    pub p99_ratio: Option<Spread>,
    /// Medians over the valid rounds of this configuration.
    pub cpu_us_per_request: Option<f64>,
    pub p99_ms: Option<f64>,
    pub service_gc_per_second: Option<f64>,
    pub golens_gc_per_second: Option<f64>,
    pub agent_cpu_us_per_request: Option<f64>,
    /// CPUs the rest of the machine used during the load.
    pub other_cpus: Option<f64>,
    /// Involuntary context switches of the service per request.
    pub involuntary_switches_per_request: Option<f64>,
    /// Medians over the valid baseline rounds of this configuration's blocks.
    pub baseline_cpu_us_per_request: Option<f64>,
    pub baseline_p99_ms: Option<f64>,
}

/// The summary of `config` over `rounds` (every round of one scenario).
pub fn summarize(rounds: &[RoundResult], config: Config) -> ConfigSummary {
    let own: Vec<&RoundResult> = rounds.iter().filter(|r| r.config == config).collect();
    let valid: Vec<&RoundResult> = own.iter().copied().filter(|r| r.valid()).collect();
    let blocks: Vec<usize> = own.iter().map(|r| r.block).collect();
    let baselines: Vec<&RoundResult> = rounds
        .iter()
        .filter(|r| r.config == Config::Baseline && r.valid() && blocks.contains(&r.block))
        .collect();
    let ratios = |value: fn(&RoundResult) -> f64| {
        if config == Config::Baseline {
            baseline_self_ratios(rounds, value)
        } else {
            ratios_to_block_baseline(rounds, config, value)
        }
    };
    let cpu_ratios = ratios(RoundResult::cpu_us_per_request);
    ConfigSummary {
        config,
        rounds: own.len(),
        valid_rounds: valid.len(),
        ratios: cpu_ratios.len(),
        cpu_ratio: spread(&cpu_ratios),
        p99_ratio: spread(&ratios(RoundResult::p99_ms)),
        cpu_us_per_request: median(valid.iter().map(|r| r.cpu_us_per_request())),
        p99_ms: median(valid.iter().map(|r| r.p99_ms())),
        service_gc_per_second: median(valid.iter().filter_map(|r| r.service_gc_per_second())),
        golens_gc_per_second: median(valid.iter().filter_map(|r| r.golens_gc_per_second())),
        agent_cpu_us_per_request: median(valid.iter().filter_map(|r| r.agent_cpu_us_per_request())),
        other_cpus: median(valid.iter().filter_map(|r| r.other_cpus())),
        involuntary_switches_per_request: median(
            valid.iter().filter_map(|r| r.involuntary_switches_per_request()),
        ),
        baseline_cpu_us_per_request: median(baselines.iter().map(|r| r.cpu_us_per_request())),
        baseline_p99_ms: median(baselines.iter().map(|r| r.p99_ms())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::round::tests::round;

    #[test]
    fn spread_and_median() {
        assert_eq!(spread(&[]), None);
        assert_eq!(spread(&[2.0]), Some(Spread { min: 2.0, median: 2.0, max: 2.0 }));
        assert_eq!(
            spread(&[3.0, 1.0, f64::NAN, 2.0, 10.0]),
            Some(Spread { min: 1.0, median: 2.5, max: 10.0 })
        );
        assert_eq!(median([5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median([]), None);
    }

    #[test]
    fn each_round_is_compared_with_the_baseline_of_its_own_block() {
        let rounds = [
            // Block 0: baseline 100 and 102 µs/request (mean 101), sched 101 and 103.02.
            round(0, Config::Baseline, 20_000, 2.0),
            round(0, Config::Sched, 20_000, 2.02),
            round(0, Config::Sched, 20_000, 2.0604),
            round(0, Config::Baseline, 20_000, 2.04),
            // Block 1, another configuration: not mixed in.
            round(1, Config::Baseline, 20_000, 1.0),
            round(1, Config::All, 20_000, 1.1),
            round(1, Config::All, 19_000, 1.1),
            round(1, Config::Baseline, 20_000, 1.0),
            // Block 2: one baseline round missed the rate; the other one is the reference.
            round(2, Config::Baseline, 19_000, 3.0),
            round(2, Config::Sched, 20_000, 3.03),
            round(2, Config::Sched, 20_000, 3.0),
            round(2, Config::Baseline, 20_000, 3.0),
        ];
        let ratios = ratios_to_block_baseline(&rounds, Config::Sched, |r| r.cpu_us_per_request());
        let expected = [1.0, 1.02, 1.01, 1.0];
        assert_eq!(ratios.len(), expected.len());
        for (ratio, expected) in ratios.iter().zip(expected) {
            assert!((ratio - expected).abs() < 1e-9, "{ratios:?}");
        }
        let all = ratios_to_block_baseline(&rounds, Config::All, |r| r.cpu_us_per_request());
        assert_eq!(all.len(), 1, "the round that missed the rate is left out");
        assert!((all[0] - 1.1).abs() < 1e-9);

        let sched = summarize(&rounds, Config::Sched);
        assert_eq!((sched.rounds, sched.valid_rounds), (4, 4));
        let cpu = sched.cpu_ratio.unwrap();
        assert!((cpu.min - 1.0).abs() < 1e-9 && (cpu.max - 1.02).abs() < 1e-9);
        assert!((cpu.median - 1.005).abs() < 1e-9);
        assert_eq!(sched.p99_ratio, Some(Spread { min: 1.0, median: 1.0, max: 1.0 }));
        // Baseline rounds of blocks 0 and 2 that made the rate: 100, 102, 150 µs.
        assert!((sched.baseline_cpu_us_per_request.unwrap() - 102.0).abs() < 1e-9);
        assert_eq!(sched.service_gc_per_second, Some(3.0));

        assert_eq!(sched.ratios, 4);
        let baseline = summarize(&rounds, Config::Baseline);
        assert_eq!((baseline.rounds, baseline.valid_rounds), (6, 5));
        // A/A: blocks 0 (102 / 100) and 1 (100 / 100); block 2 lost a baseline round.
        assert_eq!(baseline.ratios, 2);
        let aa = baseline.cpu_ratio.unwrap();
        assert!((aa.min - 1.0).abs() < 1e-9 && (aa.max - 1.02).abs() < 1e-9, "{aa:?}");
    }
}
