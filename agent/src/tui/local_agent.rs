//! The agent `golens top` starts when not given --connect: this same binary
//! as `golens run` on a free loopback port, stopped (SIGTERM, then SIGKILL)
//! and reaped when top ends, however it ends.

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::cli::TopArgs;

/// How long the agent may take to attach its probes and collect once.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to detach and exit after SIGTERM (DESIGN: 2 s at
/// 100 processes) before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of its stderr kept to explain a failure.
const STDERR_LINES: usize = 12;

pub struct LocalAgent {
    child: Child,
    pub base_url: String,
    stderr: Arc<Mutex<VecDeque<String>>>,
    exited: Option<std::process::ExitStatus>,
}

impl LocalAgent {
    /// Starts `golens run --listen 127.0.0.1:<free port> --interval <interval>`
    /// with top's --pid and --comm, and waits until it is ready.
    pub fn start(args: &TopArgs) -> Result<LocalAgent> {
        let exe = std::env::current_exe().context("finding golens' own executable")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("finding a free loopback port for the agent")?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new(&exe);
        command
            .arg("run")
            .args(["--listen", &listen])
            .arg("--interval")
            .arg(format!("{}ms", args.interval.as_millis()));
        for pid in &args.pids {
            command.arg("--pid").arg(pid.to_string());
        }
        for comm in &args.comms {
            command.arg("--comm").arg(comm);
        }
        // The terminal is top's: the agent gets no stdin, and its log goes to
        // a pipe read below (kept to explain a failure).
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // If top dies without running its destructors (SIGKILL), the kernel
        // sends the agent SIGTERM. The signal follows the thread that forked:
        // this is top's main thread, which lives as long as top.
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child
        // between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child =
            command.spawn().with_context(|| format!("starting `{} run`", exe.display()))?;
        let stderr = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_LINES)));
        if let Some(pipe) = child.stderr.take() {
            let stderr = stderr.clone();
            std::thread::Builder::new()
                .name("golens-top-agent-log".into())
                .spawn(move || {
                    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                        let mut lines = stderr.lock().unwrap_or_else(|e| e.into_inner());
                        if lines.len() == STDERR_LINES {
                            lines.pop_front();
                        }
                        lines.push_back(line);
                    }
                })
                .context("starting the agent's log reader")?;
        }
        let mut agent =
            LocalAgent { child, base_url: format!("http://{listen}"), stderr, exited: None };
        agent.wait_ready()?;
        Ok(agent)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let url = format!("{}/readyz", self.base_url);
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(failure) = self.failure() {
                bail!("{failure}");
            }
            if http.get(&url).call().is_ok_and(|response| response.status() == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent golens top started was not ready within {} s{}",
                    READY_TIMEOUT.as_secs(),
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Why the agent is gone, once it is: its exit status and last log lines.
    pub fn failure(&mut self) -> Option<String> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        let status = self.exited?;
        // Give the log reader a moment to take the last lines.
        std::thread::sleep(Duration::from_millis(50));
        Some(format!(
            "the agent golens top started (`golens run`) exited ({status}). It needs root, or \
             CAP_BPF + CAP_PERFMON, like `golens run`: run golens top with sudo, or point it at a \
             running agent with --connect URL{}",
            self.stderr_tail()
        ))
    }

    fn stderr_tail(&self) -> String {
        let lines = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        if lines.is_empty() {
            return String::new();
        }
        let mut tail = String::from(". Its last words:");
        for line in lines.iter() {
            tail.push_str("\n  ");
            tail.push_str(line);
        }
        tail
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for LocalAgent {
    /// SIGTERM (the agent detaches its probes), then SIGKILL if it lingers;
    /// reaped either way.
    fn drop(&mut self) {
        if self.exited.is_some() || matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child, which is not reaped yet (so
            // its pid cannot have been reused).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
