//! `cargo xtask bench`: what golens costs a Go HTTP service.
//!
//! One service, one run: wrk rounds alternate between golens attached and not
//! attached, so drift of the shared machine hits both sides alike. Results are
//! ratios (with / without), never absolute times.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{setup, util};

const SERVICE_LISTEN: &str = "127.0.0.1:8090";
const GOLENS_LISTEN: &str = "127.0.0.1:9478";

struct Round {
    requests_per_second: f64,
    p99_ms: f64,
}

pub fn bench(args: &[String]) -> Result<()> {
    let (rounds, seconds) = parse_args(args)?;
    setup::setup()?;
    if !util::is_root() {
        bail!("golens loads eBPF programs: run `cargo xtask bench` as root");
    }
    util::build_release()?;
    let binary = util::build_workload("demo")?;
    let service = util::start_demo_service(&binary, SERVICE_LISTEN, 0)?;
    let pid = service.0.id();

    util::step("warm-up round (not counted)");
    wrk(seconds.min(3))?;
    let mut with = Vec::new();
    let mut without = Vec::new();
    for round in 1..=rounds {
        util::step(&format!("round {round}/{rounds}: without golens"));
        without.push(wrk(seconds)?);
        util::step(&format!("round {round}/{rounds}: with golens attached"));
        let golens = util::start_golens(pid, GOLENS_LISTEN, "1s")?;
        with.push(wrk(seconds)?);
        drop(golens);
    }

    let median = |rounds: &[Round], f: fn(&Round) -> f64| {
        let mut values: Vec<f64> = rounds.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let rps = (
        median(&with, |r| r.requests_per_second),
        median(&without, |r| r.requests_per_second),
    );
    let p99 = (median(&with, |r| r.p99_ms), median(&without, |r| r.p99_ms));
    println!("\ngolens overhead on a Go HTTP service ({rounds} alternating rounds of {seconds} s, medians)");
    println!(
        "  throughput  with {:>10.0} req/s  without {:>10.0} req/s  ratio {:.3}",
        rps.0,
        rps.1,
        rps.0 / rps.1
    );
    println!(
        "  p99 latency with {:>10.2} ms     without {:>10.2} ms     ratio {:.3}",
        p99.0,
        p99.1,
        p99.0 / p99.1
    );
    Ok(())
}

fn parse_args(args: &[String]) -> Result<(u32, u32)> {
    let (mut rounds, mut seconds) = (3, 10);
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let value = iter
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rounds" => rounds = value.parse().context("--rounds takes a whole number")?,
            "--seconds" => seconds = value.parse().context("--seconds takes a whole number")?,
            _ => bail!("usage: cargo xtask bench [--rounds N] [--seconds S]"),
        }
    }
    if rounds == 0 || seconds == 0 {
        bail!("--rounds and --seconds must be at least 1");
    }
    Ok((rounds, seconds))
}

fn wrk(seconds: u32) -> Result<Round> {
    let output = Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{seconds}s"), "--latency"])
        .arg(format!("http://{SERVICE_LISTEN}/work"))
        .output()
        .context("running wrk (Debian package wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("wrk failed: {text}");
    }
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<Round> {
    let requests_per_second = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))?
        .trim();
    Some(Round {
        requests_per_second,
        p99_ms: parse_wrk_duration_ms(p99)?,
    })
}

/// wrk prints latencies as "812.00us", "1.23ms" or "2.01s".
fn parse_wrk_duration_ms(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|v| v * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_output() {
        let text =
            "Running 1s test @ http://127.0.0.1:8090/work\n  Latency Distribution\n     50%  \
                    1.10ms\n     99%  812.00us\nRequests/sec:   1234.56\nTransfer/sec: 1MB\n";
        let round = parse_wrk(text).unwrap();
        assert_eq!(round.requests_per_second, 1234.56);
        assert!((round.p99_ms - 0.812).abs() < 1e-9);
        assert_eq!(parse_wrk_duration_ms("2.5s"), Some(2500.0));
        assert_eq!(parse_wrk_duration_ms("bogus"), None);
    }
}
