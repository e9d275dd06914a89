//! The processes of a round: the demo Go service and `golens run`. Each is killed and reaped
//! when its handle is dropped, on error paths too, and every wait has a deadline that says
//! what it waited for.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::procfs;
use crate::util;

const SERVICE_READY_TIMEOUT: Duration = Duration::from_secs(60);
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// From /readyz 200 to the service's series in /metrics (a few collection intervals).
const AGENT_TRACKED_TIMEOUT: Duration = Duration::from_secs(20);
/// SIGTERM → reaped; golens' own goal is 2 s.
const AGENT_SIGTERM_TIMEOUT: Duration = Duration::from_secs(15);
/// SIGKILL → reaped.
const SIGKILL_TIMEOUT: Duration = Duration::from_secs(30);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often golens collects during the bench (its /metrics lag at most this much).
pub const AGENT_INTERVAL: Duration = Duration::from_secs(1);

const PROCESS_INFO_METRIC: &str = "golens_process_info";
/// The `--comm` of an agent that is to watch nothing.
const UNWATCHED_COMM: &str = "golens-bench-none";
const GC_CYCLES_METRIC: &str = "golens_go_gc_cycles_total";
const SIGTERM: i32 = 15;

extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
}

/// The demo Go service of a scenario.
pub struct Service {
    child: Option<Child>,
    pub pid: u32,
    pub listen: String,
    /// `Cpus_allowed_list` of the running service.
    pub allowed_cpus: Option<String>,
}

impl Service {
    /// Starts `binary -listen 127.0.0.1:PORT ARGS…` with `env`, under `taskset -c CPU` when
    /// `cpu` is given, and waits until /health answers.
    pub fn start(
        binary: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        cpu: Option<&str>,
    ) -> Result<Service> {
        let listen = format!("127.0.0.1:{}", util::free_port()?);
        let mut command = match cpu {
            Some(cpu) => {
                let mut command = Command::new("taskset");
                command.args(["-c", cpu]).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .args(["-listen", &listen, "-selfload", "0"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = command.spawn().with_context(|| format!("starting {command:?}"))?;
        // taskset execs the service: the pid is the service's.
        let pid = child.id();
        let mut service = Service { child: Some(child), pid, listen, allowed_cpus: None };
        let health = format!("http://{}/health", service.listen);
        let deadline = Instant::now() + SERVICE_READY_TIMEOUT;
        loop {
            if let Some(status) = service.try_wait() {
                bail!("the demo service ({command:?}) exited before answering ({status})");
            }
            if http_get(&health).is_ok_and(|(code, _)| code == 200) {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "waited {} s for the demo service to answer {health}",
                    SERVICE_READY_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        let comm = procfs::comm(pid).unwrap_or_default();
        if comm == "taskset" {
            bail!("pid {pid} is still taskset, not the demo service: cannot measure its CPU");
        }
        service.allowed_cpus = procfs::allowed_cpus(pid);
        Ok(service)
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// Fails if the service has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.try_wait() {
            Some(status) => bail!("the demo service (pid {}) exited: {status}", self.pid),
            None => Ok(()),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// GC cycles the service has completed (its /debug/gc).
    pub fn gc_cycles(&self) -> Result<u64> {
        let url = self.url("/debug/gc");
        let (code, body) = http_get(&url)?;
        if code != 200 {
            bail!("{url} answered {code}: {}", body.trim());
        }
        body.trim().parse().with_context(|| format!("{url} answered {body:?}, not a count"))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_and_reap(child, "the demo service");
        }
    }
}

/// A `golens run --pid SERVICE --probes FAMILIES` of one round.
pub struct Agent {
    child: Option<Child>,
    pub pid: u32,
    listen: String,
    log: PathBuf,
}

impl Agent {
    /// Starts golens (release build) watching only `service_pid`, and waits until it is ready
    /// and shows the service in /metrics (with its GC counter when `counts_gc`).
    pub fn start(service_pid: u32, probes: &str, counts_gc: bool, log: &Path) -> Result<Agent> {
        let pid = service_pid.to_string();
        let mut agent = Agent::spawn(&["--pid", &pid], probes, log)?;
        agent.wait_until_ready()?;
        agent.wait_until_watching(service_pid, counts_gc)?;
        Ok(agent)
    }

    /// Starts golens with its programs attached but watching no process (a comm no process
    /// has), and waits until it is ready.
    pub fn start_unwatched(probes: &str, log: &Path) -> Result<Agent> {
        let mut agent = Agent::spawn(&["--comm", UNWATCHED_COMM], probes, log)?;
        agent.wait_until_ready()?;
        Ok(agent)
    }

    fn spawn(targets: &[&str], probes: &str, log: &Path) -> Result<Agent> {
        let listen = format!("127.0.0.1:{}", util::free_port()?);
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let binary = util::golens_release_binary();
        let interval = format!("{}ms", AGENT_INTERVAL.as_millis());
        let child = Command::new(&binary)
            .arg("run")
            .args(targets)
            .args(["--probes", probes])
            .args(["--listen", &listen, "--interval", &interval])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("duplicating the log file")?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id();
        Ok(Agent { child: Some(child), pid, listen, log: log.into() })
    }

    fn wait_until_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        let ready = format!("http://{}/readyz", self.listen);
        while !http_get(&ready).is_ok_and(|(code, _)| code == 200) {
            self.check_running()?;
            if started.elapsed() >= AGENT_READY_TIMEOUT {
                bail!(
                    "waited {} s for golens (pid {}) to answer {ready} with 200 (log: {})",
                    AGENT_READY_TIMEOUT.as_secs(),
                    self.pid,
                    self.log.display()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn wait_until_watching(&mut self, service_pid: u32, counts_gc: bool) -> Result<()> {
        // /readyz can answer before the first collection that shows the process.
        let tracked = Instant::now();
        loop {
            self.check_running()?;
            let metrics = self.metrics().unwrap_or_default();
            let watching = labelled_value(&metrics, PROCESS_INFO_METRIC, service_pid).is_some();
            let counting =
                !counts_gc || labelled_value(&metrics, GC_CYCLES_METRIC, service_pid).is_some();
            if watching && counting {
                return Ok(());
            }
            if tracked.elapsed() >= AGENT_TRACKED_TIMEOUT {
                let missing = if watching { GC_CYCLES_METRIC } else { PROCESS_INFO_METRIC };
                bail!(
                    "waited {} s after /readyz for {missing}{{pid=\"{service_pid}\"}} in golens' \
                     /metrics (log: {})",
                    AGENT_TRACKED_TIMEOUT.as_secs(),
                    self.log.display()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else { bail!("golens was already stopped") };
        if let Some(status) = child.try_wait().context("waiting for golens")? {
            self.child = None;
            bail!("golens (pid {}) exited: {status} (log: {})", self.pid, self.log.display());
        }
        Ok(())
    }

    fn metrics(&self) -> Result<String> {
        let url = format!("http://{}/metrics", self.listen);
        let (code, body) = http_get(&url)?;
        if code != 200 {
            bail!("{url} answered {code}");
        }
        Ok(body)
    }

    /// GC cycles golens counted for `service_pid` as of its last collection.
    pub fn gc_cycles(&self, service_pid: u32) -> Option<u64> {
        let value = labelled_value(&self.metrics().ok()?, GC_CYCLES_METRIC, service_pid)?;
        (value >= 0.0).then_some(value as u64)
    }

    /// SIGTERM, then waits for it to exit. Returns a note when the stop needed SIGKILL or the
    /// exit status was not 0: that goes into the report, and is not an error, because the
    /// round's numbers were all taken before the stop.
    pub fn stop(mut self) -> Option<String> {
        let mut child = self.child.take()?;
        let signalled = Instant::now();
        signal(&child, SIGTERM);
        match util::wait_until(&mut child, signalled + AGENT_SIGTERM_TIMEOUT) {
            Some(status) if status.success() => None,
            Some(status) => {
                Some(format!("golens (pid {}) exited with {status} after SIGTERM", self.pid))
            }
            None => {
                kill_and_reap(&mut child, "golens");
                Some(format!(
                    "golens (pid {}) had not exited {} s after SIGTERM: SIGKILLed",
                    self.pid,
                    AGENT_SIGTERM_TIMEOUT.as_secs()
                ))
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_and_reap(child, "golens");
        }
    }
}

/// Sends `signal` to `child`, which must not have been reaped (its pid is still its own).
pub fn signal(child: &Child, signal: i32) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe {
            kill(pid, signal);
        }
    }
}

/// SIGKILL (if still running) and reap, waiting at most SIGKILL_TIMEOUT.
fn kill_and_reap(child: &mut Child, what: &str) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = child.kill();
    if util::wait_until(child, Instant::now() + SIGKILL_TIMEOUT).is_none() {
        eprintln!(
            "xtask: warning: {what} (pid {}) not reaped {} s after SIGKILL; left behind",
            child.id(),
            SIGKILL_TIMEOUT.as_secs()
        );
    }
}

/// GET with a deadline: (status, body). Non-2xx statuses are answers, not errors.
fn http_get(url: &str) -> Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .into();
    let mut response = agent.get(url).call().with_context(|| format!("GET {url}"))?;
    let code = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_string()
        .with_context(|| format!("reading {url}"))?;
    Ok((code, body))
}

/// The value of sample `name{…pid="PID"…}` in a Prometheus exposition:
/// `golens_go_gc_cycles_total{pid="42",comm="demo"} 818` → 818 for pid 42.
pub fn labelled_value(metrics: &str, name: &str, pid: u32) -> Option<f64> {
    let wanted = format!("pid=\"{pid}\"");
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, value) = rest.split_once('}')?;
        if !labels.split(',').any(|label| label.trim() == wanted) {
            return None;
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sample_of_one_pid() {
        let metrics = "# HELP golens_go_gc_cycles GC cycles started.\n\
                       # TYPE golens_go_gc_cycles counter\n\
                       golens_go_gc_cycles_total{pid=\"7\",comm=\"other\"} 3\n\
                       golens_go_gc_cycles_total{pid=\"42\",comm=\"demo\"} 818\n\
                       golens_go_gc_cycles_total_bogus{pid=\"42\"} 1\n\
                       golens_process_info{pid=\"42\",comm=\"demo\",exe=\"/x\"} 1\n";
        assert_eq!(labelled_value(metrics, GC_CYCLES_METRIC, 42), Some(818.0));
        assert_eq!(labelled_value(metrics, GC_CYCLES_METRIC, 7), Some(3.0));
        assert_eq!(labelled_value(metrics, GC_CYCLES_METRIC, 4), None);
        assert_eq!(labelled_value(metrics, PROCESS_INFO_METRIC, 42), Some(1.0));
        assert_eq!(labelled_value(metrics, PROCESS_INFO_METRIC, 7), None);
        let exponent = "golens_go_gc_cycles_total{pid=\"4\"} 2.0e1\n";
        assert_eq!(labelled_value(exponent, GC_CYCLES_METRIC, 4), Some(20.0));
    }
}
