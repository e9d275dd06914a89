//! Small helpers shared by the xtask commands.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").into()
}

/// Progress line for long steps.
pub fn step(message: &str) {
    eprintln!("==> {message}");
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { geteuid() == 0 }
}

extern "C" {
    fn geteuid() -> u32;
}

pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

pub fn run_checked(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

pub fn build_release() -> Result<()> {
    step("building golens (release)");
    run_checked(cargo().args(["build", "--release", "-p", "golens"]))
}

pub fn golens_release_binary() -> PathBuf {
    workspace_root().join("target/release/golens")
}

/// Builds a Go workload from tests/workloads/<name> with the newest Go of the
/// matrix (so stop-the-world reasons are decoded; installed by setup).
pub fn build_workload(name: &str) -> Result<PathBuf> {
    let workloads = workspace_root().join("tests/workloads");
    let output = workspace_root().join("target/workloads").join(name);
    let go = crate::toolchains::go_binary(crate::toolchains::NEWEST_GO);
    step(&format!("building Go workload {name} with Go {}", crate::toolchains::NEWEST_GO));
    run_checked(
        Command::new(go)
            .current_dir(&workloads)
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local")
            .args(["build", "-o"])
            .arg(&output)
            .arg(format!("./{name}")),
    )?;
    Ok(output)
}

/// A child process that is killed when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the demo Go service on `listen` and waits until it accepts connections.
pub fn start_demo_service(binary: &Path, listen: &str, self_load: u32) -> Result<Guard> {
    let child = Command::new(binary)
        .args(["-listen", listen, "-selfload", &self_load.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let guard = Guard(child);
    wait_for_http(&format!("http://{listen}/health"), Duration::from_secs(20))?;
    Ok(guard)
}

/// Starts `golens run` for one pid and waits until /readyz answers 200.
pub fn start_golens(pid: u32, listen: &str, interval: &str) -> Result<Guard> {
    let child = Command::new(golens_release_binary())
        .args(["run", "--pid", &pid.to_string(), "--listen", listen, "--interval", interval])
        .spawn()
        .context("starting golens")?;
    let mut guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = guard.0.try_wait()? {
            bail!("golens exited before it was ready ({status})");
        }
        if http_get(&format!("http://{listen}/readyz")).is_ok_and(|(code, _)| code == 200) {
            return Ok(guard);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("golens did not become ready within 30 s")
}

pub fn wait_for_http(url: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if http_get(url).is_ok_and(|(code, _)| code == 200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{url} did not answer within {timeout:?}")
}

/// GET over loopback: (status, body). Non-2xx statuses are answers, not errors.
pub fn http_get(url: &str) -> Result<(u16, String)> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent.get(url).call().with_context(|| format!("GET {url}"))?;
    let code = response.status().as_u16();
    let body = response.body_mut().read_to_string().with_context(|| format!("reading {url}"))?;
    Ok((code, body))
}

/// Polls `child` until it is reaped or `deadline` passes: its status, or None.
pub fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            // ECHILD and the like: nothing more to wait for.
            Err(_) => return None,
            Ok(None) => {}
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A loopback port nobody listens on right now (the kernel's choice).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}
