//! The load: Debian's `hey` at a fixed request rate, and what it printed.
//!
//! `hey -z S -c C -q Q` runs C workers that each send one request per 1/Q s tick (Go's
//! `time.Tick`), so the rate does not follow the service's speed as a closed loop (wrk) does:
//! a request that takes longer than a tick only delays its own worker, and a worker that falls
//! more than one tick behind drops ticks, which shows as a missed rate (checked per round).

use std::{
    io::Read,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Concurrent hey workers. hey starts them together and their ticks stay in step, so the
/// load comes in bursts of WORKERS requests: fewer workers make smaller bursts (a p99 that
/// shows the service, not the burst) but a shorter tick, which a slow request overruns. At
/// 2000 req/s, 20 workers tick every 10 ms: measured here, 10 workers (5 ms) missed the rate
/// under GOGC=5, and 50 workers made a p99 of about twice 20's.
pub const WORKERS: u32 = 20;
/// A round whose completed requests per second are further than this from the target is
/// excluded from the ratios.
pub const RATE_TOLERANCE: f64 = 0.03;
/// hey's own per-request timeout, seconds.
const REQUEST_TIMEOUT_SECONDS: u32 = 10;
/// How long after its `-z` duration hey may take to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(30);

/// What one hey run reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// hey's "Total:", the wall time of the run, seconds.
    pub seconds: f64,
    /// Responses with status 200.
    pub ok_responses: u64,
    /// Responses with another status.
    pub other_responses: u64,
    /// Requests that got no response (the counts of hey's "Error distribution:").
    pub errors: u64,
    pub p50_seconds: f64,
    pub p90_seconds: f64,
    pub p99_seconds: f64,
}

impl LoadReport {
    /// Completed (status 200) requests per second.
    pub fn achieved_rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ok_responses as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Whether `achieved` is within RATE_TOLERANCE of `target`.
pub fn rate_achieved(achieved: f64, target: f64) -> bool {
    target > 0.0 && ((achieved - target) / target).abs() <= RATE_TOLERANCE
}

/// The per-worker rate (`-q`) for a total rate: hey takes a decimal number.
pub fn per_worker_rate(total_rate: u32) -> String {
    let per_worker = f64::from(total_rate) / f64::from(WORKERS);
    let text = format!("{per_worker:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The hey command line for a round (without the taskset prefix), for the report.
pub fn describe(seconds: u32, total_rate: u32) -> String {
    format!("hey -z {seconds}s -c {WORKERS} -q {} -cpus 1", per_worker_rate(total_rate))
}

/// Runs one hey per url at the same time, each at `rate_each` requests per second, all under
/// `taskset -c CPU` when `cpu` is given: the bench's twin services get the same load over the
/// same seconds.
pub fn run_together<const N: usize>(
    urls: [&str; N],
    seconds: u32,
    rate_each: u32,
    cpu: Option<&str>,
) -> Result<[LoadReport; N]> {
    let mut running = Vec::with_capacity(N);
    for url in urls {
        running.push(Running::start(url, seconds, rate_each, cpu)?);
    }
    let reports: Vec<LoadReport> =
        running.into_iter().map(Running::finish).collect::<Result<_>>()?;
    reports.try_into().map_err(|_| anyhow::anyhow!("hey: not one report per url"))
}

/// A hey run that was started and not yet waited for.
struct Running {
    hey: KilledOnDrop,
    seconds: u32,
    deadline: Instant,
    stdout: thread::JoinHandle<String>,
    stderr: thread::JoinHandle<String>,
}

impl Running {
    fn start(url: &str, seconds: u32, total_rate: u32, cpu: Option<&str>) -> Result<Running> {
        let mut command = match cpu {
            Some(cpu) => {
                let mut command = Command::new("taskset");
                command.args(["-c", cpu, "hey"]);
                command
            }
            None => Command::new("hey"),
        };
        command
            .args(["-z", &format!("{seconds}s"), "-c", &WORKERS.to_string()])
            .args(["-q", &per_worker_rate(total_rate), "-cpus", "1"])
            .args(["-t", &REQUEST_TIMEOUT_SECONDS.to_string()])
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = command.spawn().context("starting hey (Debian package hey)")?;
        let mut hey = KilledOnDrop(child);
        let stdout = read_in_background(hey.0.stdout.take());
        let stderr = read_in_background(hey.0.stderr.take());
        let deadline = Instant::now() + Duration::from_secs(u64::from(seconds)) + EXIT_GRACE;
        Ok(Running { hey, seconds, deadline, stdout, stderr })
    }

    fn finish(mut self) -> Result<LoadReport> {
        let seconds = self.seconds;
        let status = loop {
            if let Some(status) = self.hey.0.try_wait().context("waiting for hey")? {
                break status;
            }
            if Instant::now() >= self.deadline {
                bail!(
                    "hey did not exit within {} s of its {seconds} s run (killed)",
                    EXIT_GRACE.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.stdout.join().unwrap_or_default();
        let stderr = self.stderr.join().unwrap_or_default();
        if !status.success() {
            bail!("hey failed ({status}):\n{stdout}{stderr}");
        }
        parse_report(&stdout).with_context(|| format!("unexpected hey output:\n{stdout}{stderr}"))
    }
}

/// A child that is SIGKILLed and reaped when dropped (on error paths too).
pub struct KilledOnDrop(pub Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// hey's summary: "Total:" in seconds, the "Latency distribution:" percentiles (lines like
/// "  99% in 0.0123 secs"), "Status code distribution:" (lines like "  [200]\t19950
/// responses") and "Error distribution:" (lines like "  [12]\tGet …: …").
pub fn parse_report(text: &str) -> Option<LoadReport> {
    let mut report = LoadReport::default();
    let mut section = "";
    let (mut p50, mut p90, mut p99) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.ends_with(':') && !line.starts_with('[') {
            section = line;
            continue;
        }
        if let Some(total) = line.strip_prefix("Total:") {
            report.seconds = parse_seconds(total)?;
            continue;
        }
        match section {
            "Latency distribution:" => {
                let Some((percent, value)) = line.split_once("% in ") else { continue };
                let value = parse_seconds(value)?;
                match percent.trim() {
                    "50" => p50 = Some(value),
                    "90" => p90 = Some(value),
                    "99" => p99 = Some(value),
                    _ => {}
                }
            }
            "Status code distribution:" => {
                let (code, count) = bracketed(line)?;
                let count: u64 = count.split_whitespace().next()?.parse().ok()?;
                if code == "200" {
                    report.ok_responses += count;
                } else {
                    report.other_responses += count;
                }
            }
            "Error distribution:" => {
                let (count, _) = bracketed(line)?;
                report.errors += count.parse::<u64>().ok()?;
            }
            _ => {}
        }
    }
    if report.seconds <= 0.0 {
        return None;
    }
    (report.p50_seconds, report.p90_seconds, report.p99_seconds) = (p50?, p90?, p99?);
    Some(report)
}

/// "[200]\t19950 responses" → ("200", "19950 responses").
fn bracketed(line: &str) -> Option<(&str, &str)> {
    let (inside, rest) = line.strip_prefix('[')?.split_once(']')?;
    Some((inside.trim(), rest.trim()))
}

/// "\t0.0123 secs" → 0.0123.
fn parse_seconds(text: &str) -> Option<f64> {
    let value = text.trim().strip_suffix("secs")?.trim().parse::<f64>().ok()?;
    value.is_finite().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "
Summary:
  Total:\t10.0031 secs
  Slowest:\t0.0264 secs
  Fastest:\t0.0003 secs
  Average:\t0.0012 secs
  Requests/sec:\t1994.9216
  
  Total data:\t255360000 bytes
  Size/request:\t12800 bytes

Response time histogram:
  0.000 [1]\t|
  0.003 [19850]\t|■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■

Latency distribution:
  10% in 0.0006 secs
  25% in 0.0008 secs
  50% in 0.0010 secs
  75% in 0.0013 secs
  90% in 0.0018 secs
  95% in 0.0022 secs
  99% in 0.0123 secs

Details (average, fastest, slowest):
  DNS+dialup:\t0.0000 secs, 0.0003 secs, 0.0264 secs
  resp wait:\t0.0011 secs, 0.0002 secs, 0.0252 secs

Status code distribution:
  [200]\t19950 responses
  [503]\t3 responses

Error distribution:
  [12]\tGet \"http://127.0.0.1:8090/work\": context deadline exceeded (Client.Timeout exceeded)
  [2]\tGet \"http://127.0.0.1:8090/work\": EOF
";

    #[test]
    fn parses_the_summary_of_hey() {
        let report = parse_report(OUTPUT).unwrap();
        assert_eq!(
            report,
            LoadReport {
                seconds: 10.0031,
                ok_responses: 19950,
                other_responses: 3,
                errors: 14,
                p50_seconds: 0.0010,
                p90_seconds: 0.0018,
                p99_seconds: 0.0123,
            }
        );
        assert!((report.achieved_rate() - 19950.0 / 10.0031).abs() < 1e-9);
    }

    #[test]
    fn rejects_output_without_a_latency_distribution_or_total() {
        let without_latency: String =
            OUTPUT.lines().filter(|l| !l.contains("% in ")).map(|l| format!("{l}\n")).collect();
        assert_eq!(parse_report(&without_latency), None);
        assert_eq!(parse_report("Error: no such host\n"), None);
        // hey with no completed request prints no distribution at all.
        assert_eq!(parse_report("Summary:\n  Total:\t1.0 secs\n"), None);
    }

    #[test]
    fn rate_is_checked_within_three_percent() {
        assert!(rate_achieved(1950.0, 2000.0));
        assert!(rate_achieved(2059.0, 2000.0));
        assert!(!rate_achieved(1939.0, 2000.0));
        assert!(!rate_achieved(0.0, 2000.0));
        assert!(!rate_achieved(10.0, 0.0));
    }

    #[test]
    fn per_worker_rate_is_a_short_decimal() {
        assert_eq!(per_worker_rate(2000), "100");
        assert_eq!(per_worker_rate(1500), "75");
        assert_eq!(per_worker_rate(1234), "61.7");
        assert_eq!(per_worker_rate(1), "0.05");
        assert_eq!(describe(10, 2000), "hey -z 10s -c 20 -q 100 -cpus 1");
    }
}
