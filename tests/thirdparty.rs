//! golens on a real third-party Go service: Debian's caddy, which reports
//! its own `go_gc_duration_seconds`, under a fixed request rate. Privileged:
//! run by `cargo xtask test` (as root).

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{free_port, get, Agent, ChildGuard, Metrics};

fn value(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics.value(name, labels).unwrap_or(0.0)
}

fn sum_over_reasons(metrics: &Metrics, name: &str, pid: &str) -> f64 {
    metrics
        .samples
        .iter()
        .filter(|s| s.name == name && s.labels.get("pid").map(String::as_str) == Some(pid))
        .map(|s| s.value)
        .sum()
}

/// Cycles exact (±1: the two scrapes are not atomic) and pause totals
/// within 5 % of caddy's own go_gc_duration_seconds (count = NumGC, sum =
/// PauseTotal: the runtime's accounting).
#[test]
#[ignore = "privileged: attaches uprobes; run `cargo xtask test` as root"]
fn caddy_under_load_agrees_with_its_own_go_gc_duration_seconds() {
    let (http, admin) = (free_port(), free_port());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("caddy");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("Caddyfile");
    std::fs::write(
        &config,
        format!(
            "{{\n\tadmin 127.0.0.1:{admin}\n\tauto_https off\n\tstorage file_system {dir}\n}}\n\
             :{http} {{\n\trespond \"hello\" 200\n}}\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    let caddy = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&config)
        // A small heap target: a few GC cycles per second under this load.
        .env("GOGC", "10")
        .env("HOME", &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting caddy (Debian package caddy; `cargo xtask setup`)");
    let caddy = ChildGuard(caddy);
    let url = format!("http://127.0.0.1:{http}/");
    let caddy_metrics_url = format!("http://127.0.0.1:{admin}/metrics");
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&url).is_none() || get(&caddy_metrics_url).is_none() {
        assert!(Instant::now() < deadline, "caddy did not answer on {url} within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = caddy.pid().to_string();
    let agent = Agent::start(&["--pid", &pid]);
    let attached = agent.wait_for(Duration::from_secs(10), |m| {
        m.value("golens_probe_attached", &[("pid", &pid), ("probe", "stw_started")]) == Some(1.0)
    });
    assert!(attached.has_pid("golens_go_gc_cycles_total", caddy.pid()), "caddy is not probed");
    let caddy_scrape = || Metrics::parse(&get(&caddy_metrics_url).expect("caddy /metrics").1);

    agent.catch_up();
    let (golens_before, caddy_before) = (agent.metrics(), caddy_scrape());
    // A fixed rate (open loop): 8 workers x 100 requests/s for 5 s.
    let hey = Command::new("hey")
        .args(["-z", "5s", "-q", "100", "-c", "8", &url])
        .output()
        .expect("running hey (Debian package hey; `cargo xtask setup`)");
    assert!(hey.status.success(), "hey failed: {}", String::from_utf8_lossy(&hey.stderr));
    agent.catch_up();
    let (golens_after, caddy_after) = (agent.metrics(), caddy_scrape());

    let delta = |after: &Metrics, before: &Metrics, name: &str| {
        value(after, name, &[]) - value(before, name, &[])
    };
    let runtime_cycles = delta(&caddy_after, &caddy_before, "go_gc_duration_seconds_count");
    let runtime_pause = delta(&caddy_after, &caddy_before, "go_gc_duration_seconds_sum");
    let cycles = value(&golens_after, "golens_go_gc_cycles_total", &[("pid", &pid)])
        - value(&golens_before, "golens_go_gc_cycles_total", &[("pid", &pid)]);
    let pause_name = "golens_go_stw_pause_seconds_sum";
    let pause = sum_over_reasons(&golens_after, pause_name, &pid)
        - sum_over_reasons(&golens_before, pause_name, &pid);
    let ratio = pause / runtime_pause;
    println!(
        "caddy: cycles golens {cycles} caddy {runtime_cycles}; pauses golens {:.3} ms caddy \
         {:.3} ms (ratio {ratio:.4})",
        pause * 1e3,
        runtime_pause * 1e3
    );
    assert!(runtime_cycles >= 10.0, "the load should make caddy collect: {runtime_cycles} cycles");
    assert!(
        (cycles - runtime_cycles).abs() <= 1.0,
        "cycles: golens {cycles}, caddy {runtime_cycles}"
    );
    assert!((0.95..=1.05).contains(&ratio), "pause totals differ by more than 5 %: {ratio:.3}");
}
