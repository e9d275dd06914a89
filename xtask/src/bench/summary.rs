//! From rounds to figures: per ABBA block, the watched twin against the other twin; over the
//! blocks, their spread and a confidence interval.

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

/// The figures of `config`'s blocks: in every block, the geometric mean of `ratio` over the
/// block's two rounds of `config` (for the baseline, its two baseline rounds), when both are
/// valid and watched different twins. `ratio` is a watched-twin / other-twin ratio, so a
/// difference between the twins themselves cancels: (w·d)·(w/d) = w².
pub fn block_figures(
    rounds: &[RoundResult],
    config: Config,
    ratio: impl Fn(&RoundResult) -> Option<f64>,
) -> Vec<f64> {
    let mut blocks: Vec<usize> =
        rounds.iter().filter(|r| r.config == config).map(|r| r.block).collect();
    blocks.dedup();
    blocks
        .into_iter()
        .filter_map(|block| {
            let pair: Vec<&RoundResult> =
                rounds.iter().filter(|r| r.block == block && r.config == config).collect();
            let [first, second] = pair[..] else { return None };
            if !first.valid() || !second.valid() || first.watched == second.watched {
                return None;
            }
            let product = ratio(first)? * ratio(second)?;
            (product > 0.0).then(|| product.sqrt())
        })
        .collect()
}

/// A ratio estimated from several block figures: their geometric mean and its 95 % confidence
/// interval (Student's t on the logarithms).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    /// Half the interval's width, as a fraction (0.01 = ±1 %).
    pub fn half_width(&self) -> f64 {
        (self.high - self.low) / 2.0
    }
}

/// The estimate from `figures` (ratios > 0); None with fewer than two.
pub fn estimate(figures: &[f64]) -> Option<Estimate> {
    let logs: Vec<f64> = figures.iter().filter(|f| **f > 0.0).map(|f| f.ln()).collect();
    let n = logs.len();
    if n < 2 {
        return None;
    }
    let mean = logs.iter().sum::<f64>() / n as f64;
    let variance = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t_95(n - 1) * (variance / n as f64).sqrt();
    Some(Estimate { mean: mean.exp(), low: (mean - half).exp(), high: (mean + half).exp() })
}

/// The two-sided 95 % quantile of Student's t with `df` degrees of freedom.
fn t_95(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        31..=60 => 2.021,
        61..=120 => 2.000,
        _ => 1.960,
    }
}

/// One line of a scenario's table.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigSummary {
    pub config: Config,
    pub rounds: usize,
    pub valid_rounds: usize,
    /// How many block figures the spreads and estimates are made of.
    pub blocks: usize,
    /// Watched twin's CPU per request over the other twin's, per block; for the baseline
    /// (no agent) the same figure, an A/A test.
    pub cpu_ratio: Option<Spread>,
    pub cpu_estimate: Option<Estimate>,
    /// The same for p99 latency.
    pub p99_ratio: Option<Spread>,
    /// Medians over the valid rounds of this configuration, of the watched twin.
    pub cpu_us_per_request: Option<f64>,
    pub p99_ms: Option<f64>,
    pub service_gc_per_second: Option<f64>,
    pub golens_gc_per_second: Option<f64>,
    pub agent_cpu_us_per_request: Option<f64>,
    /// CPUs the rest of the machine used during the load.
    pub other_cpus: Option<f64>,
    /// Involuntary context switches of the watched twin per request.
    pub involuntary_switches_per_request: Option<f64>,
}

/// The summary of `config` over `rounds` (every round of one scenario).
pub fn summarize(rounds: &[RoundResult], config: Config) -> ConfigSummary {
    let own: Vec<&RoundResult> = rounds.iter().filter(|r| r.config == config).collect();
    let valid: Vec<&RoundResult> = own.iter().copied().filter(|r| r.valid()).collect();
    let cpu_figures = block_figures(rounds, config, RoundResult::twin_cpu_ratio);
    ConfigSummary {
        config,
        rounds: own.len(),
        valid_rounds: valid.len(),
        blocks: cpu_figures.len(),
        cpu_ratio: spread(&cpu_figures),
        cpu_estimate: estimate(&cpu_figures),
        p99_ratio: spread(&block_figures(rounds, config, RoundResult::twin_p99_ratio)),
        cpu_us_per_request: median(valid.iter().map(|r| r.cpu_us_per_request())),
        p99_ms: median(valid.iter().map(|r| r.p99_ms())),
        service_gc_per_second: median(valid.iter().filter_map(|r| r.service_gc_per_second())),
        golens_gc_per_second: median(valid.iter().filter_map(|r| r.golens_gc_per_second())),
        agent_cpu_us_per_request: median(valid.iter().filter_map(|r| r.agent_cpu_us_per_request())),
        other_cpus: median(valid.iter().filter_map(|r| r.other_cpus())),
        involuntary_switches_per_request: median(
            valid.iter().filter_map(|r| r.involuntary_switches_per_request()),
        ),
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
    fn a_block_figure_cancels_the_difference_between_the_twins() {
        // Twin 0 is 10 % dearer than twin 1 by itself; the agent adds 2 % to the watched one.
        let rounds = [
            // Block 0: no agent, then sched watching twin 0, then twin 1.
            round(0, Config::BASELINE, 0, 20_000, 1.1, 1.0),
            round(0, Config::SCHED, 0, 20_000, 1.1 * 1.02, 1.0),
            round(0, Config::SCHED, 1, 20_000, 1.02, 1.1),
            round(0, Config::BASELINE, 1, 20_000, 1.0, 1.1),
            // Block 1: one "all" round missed its rate: no figure.
            round(1, Config::BASELINE, 1, 20_000, 1.0, 1.1),
            round(1, Config::ALL, 1, 20_000, 1.0, 1.1),
            round(1, Config::ALL, 0, 19_000, 1.1, 1.0),
            round(1, Config::BASELINE, 0, 20_000, 1.1, 1.0),
            // Block 2: sched again, +4 %.
            round(2, Config::BASELINE, 0, 20_000, 1.1, 1.0),
            round(2, Config::SCHED, 0, 20_000, 1.1 * 1.04, 1.0),
            round(2, Config::SCHED, 1, 20_000, 1.04, 1.1),
            round(2, Config::BASELINE, 1, 20_000, 1.0, 1.1),
        ];
        let sched = block_figures(&rounds, Config::SCHED, RoundResult::twin_cpu_ratio);
        assert_eq!(sched.len(), 2);
        assert!((sched[0] - 1.02).abs() < 1e-9 && (sched[1] - 1.04).abs() < 1e-9, "{sched:?}");
        assert!(block_figures(&rounds, Config::ALL, RoundResult::twin_cpu_ratio).is_empty());
        let aa = block_figures(&rounds, Config::BASELINE, RoundResult::twin_cpu_ratio);
        assert_eq!(aa.len(), 3);
        assert!(aa.iter().all(|f| (f - 1.0).abs() < 1e-9), "{aa:?}");

        let summary = summarize(&rounds, Config::SCHED);
        assert_eq!((summary.rounds, summary.valid_rounds, summary.blocks), (4, 4, 2));
        let cpu = summary.cpu_ratio.unwrap();
        assert!((cpu.median - 1.03).abs() < 1e-9);
        let estimate = summary.cpu_estimate.unwrap();
        assert!((estimate.mean - (1.02f64 * 1.04).sqrt()).abs() < 1e-9);
        assert!(estimate.low < 1.02 && estimate.high > 1.04, "{estimate:?}");
        assert_eq!(summary.p99_ratio, Some(Spread { min: 1.0, median: 1.0, max: 1.0 }));
        assert_eq!(summarize(&rounds, Config::ALL).blocks, 0);
    }

    #[test]
    fn the_confidence_interval_narrows_with_more_blocks() {
        assert_eq!(estimate(&[1.01]), None);
        let two = estimate(&[1.00, 1.02]).unwrap();
        // Two figures: t = 12.7, so the interval is wide.
        assert!(two.half_width() > 0.1, "{two:?}");
        let many: Vec<f64> = (0..16).map(|i| if i % 2 == 0 { 1.00 } else { 1.02 }).collect();
        let sixteen = estimate(&many).unwrap();
        assert!(sixteen.low > 1.004 && sixteen.high < 1.016, "{sixteen:?}");
        assert!((sixteen.mean - (1.02f64).sqrt()).abs() < 1e-9);
        assert_eq!(t_95(0), f64::INFINITY);
        assert_eq!(t_95(1), 12.706);
        assert_eq!(t_95(1000), 1.96);
    }
}
