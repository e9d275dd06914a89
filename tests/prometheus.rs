//! golens as Prometheus sees it: `promtool check metrics` lints the
//! exposition, and a real Prometheus (Debian's) scrapes the agent and
//! answers queries with the numbers a Go workload made true.
//! Privileged: run by `cargo xtask test` (as root).

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use common::{build_workload_with, Agent, GcWorkload, GoBuild};

/// runtime.GC() calls of the workload.
const CYCLES: u64 = 20;

fn query(prometheus: &str, promql: &str) -> Vec<serde_json::Value> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let Ok(mut response) =
        agent.get(&format!("{prometheus}/api/v1/query")).query("query", promql).call()
    else {
        return Vec::new();
    };
    let body = response.body_mut().read_to_string().unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    json["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The value of the first series of an instant-vector result.
fn first_value(result: &[serde_json::Value]) -> Option<f64> {
    result.first()?["value"][1].as_str()?.parse().ok()
}

#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn promtool_lints_and_prometheus_scrapes_every_family() {
    let binary =
        build_workload_with("gcburn", "1.21.13", GoBuild { stripped: true, ..Default::default() });
    let mut workload = GcWorkload::start(&binary, &["-cycles", &CYCLES.to_string()]);
    let pid = workload.pid.clone();
    let agent = Agent::start(&["--pid", &pid]);
    workload.run_cycles();
    agent.wait_for(Duration::from_secs(10), |m| {
        m.value("golens_go_gc_cycles_total", &[("pid", &pid)]).unwrap_or(0.0) >= CYCLES as f64
    });

    // promtool: the text exposition (what curl gets) with every family present.
    let (_, text) = common::get(&format!("{}/metrics", agent.base_url)).unwrap();
    for family in [
        "golens_process_info",
        "golens_sched_runqueue_latency_seconds_bucket",
        "golens_go_gc_cycles_total",
        "golens_go_stw_pause_seconds_bucket",
        "golens_probe_attached",
        "golens_agent_kernel_drops_total",
    ] {
        assert!(text.contains(family), "{family} missing from /metrics");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus: run `cargo xtask setup`)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let lint = promtool.wait_with_output().unwrap();
    assert!(
        lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // A real Prometheus scraping every second (it negotiates OpenMetrics).
    let dir = std::env::temp_dir().join(format!("golens-prometheus-{}", std::process::id()));
    let target = agent.base_url.trim_start_matches("http://");
    let (_prometheus, prometheus) = common::start_prometheus(
        &dir,
        &format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: golens\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    );
    let checks = [
        (format!("golens_go_gc_cycles_total{{pid=\"{pid}\"}}"), CYCLES as f64),
        (
            format!(
                "golens_go_stw_pause_seconds_count{{pid=\"{pid}\",reason=\"gc_mark_termination\"}}"
            ),
            CYCLES as f64,
        ),
        (format!("golens_sched_runqueue_latency_seconds_count{{pid=\"{pid}\"}}"), 1.0),
        (format!("golens_probe_attached{{pid=\"{pid}\",probe=\"stw_stop\"}}"), 1.0),
        ("up{job=\"golens\"}".to_string(), 1.0),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last: Vec<Option<f64>> =
            checks.iter().map(|(promql, _)| first_value(&query(&prometheus, promql))).collect();
        if checks.iter().zip(&last).all(|((_, min), got)| got.is_some_and(|v| v >= *min)) {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus never saw {checks:?}: got {last:?}");
        sleep(Duration::from_millis(500));
    }
    // A histogram query of the kind dashboards use works on the exported buckets.
    let p99 = format!(
        "histogram_quantile(0.99, sum by (le) (golens_go_stw_pause_seconds_bucket{{pid=\"{pid}\"}}))"
    );
    let value = first_value(&query(&prometheus, &p99)).expect("p99 of STW pauses");
    assert!(value > 0.0 && value < 1.0, "p99 STW pause {value} s is not plausible");

    workload.finish();
    let _ = std::fs::remove_dir_all(&dir);
}
