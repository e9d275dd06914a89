//! Shared helpers of the integration tests: build Go workloads, start the
//! real golens binary, scrape and parse its /metrics.
#![allow(dead_code)] // each test binary uses a different subset

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The Go toolchain for workloads: $GOLENS_TEST_GO, else `go` on PATH.
pub fn go_binary() -> String {
    std::env::var("GOLENS_TEST_GO").unwrap_or_else(|_| "go".to_string())
}

/// Builds tests/workloads/<name> into the test's target dir (cached by Go's build cache).
pub fn build_workload(name: &str) -> PathBuf {
    let workloads = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/workloads");
    let output = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("workloads")
        .join(name);
    let status = Command::new(go_binary())
        .current_dir(&workloads)
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .args(["build", "-o"])
        .arg(&output)
        .arg(format!("./{name}"))
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{}` ({e}): run `cargo xtask setup`",
                go_binary()
            )
        });
    assert!(status.success(), "go build of workload {name} failed");
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

/// Starts a workload and waits for it to print its first line ("ready", "listening on …").
pub fn start_workload(binary: &Path, args: &[&str]) -> ChildGuard {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(binary)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reading workload output");
    assert!(
        !line.is_empty(),
        "workload {} exited before it was ready",
        binary.display()
    );
    ChildGuard(child)
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
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = golens()
            .arg("run")
            .args(args)
            .args(["--listen", &listen, "--interval", "250ms"])
            .spawn()
            .expect("starting golens");
        let mut agent = Agent {
            child: ChildGuard(child),
            base_url: format!("http://{listen}"),
        };
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

pub fn get(url: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().ok()?;
    let code = response.status().as_u16();
    Some((code, response.body_mut().read_to_string().ok()?))
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
        Metrics {
            samples,
            text: text.to_string(),
        }
    }

    /// Value of `name` whose labels include every `(key, value)` given.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.find(name, labels).map(|s| s.value)
    }

    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Sample> {
        self.samples.iter().find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
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
    Some(Sample {
        name,
        labels,
        value,
    })
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
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| read(&e.path()))
                .sum()
        })
        .unwrap_or(0)
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
