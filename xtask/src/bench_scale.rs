//! `cargo xtask bench scale`: what the agent itself costs on a node with many Go processes.
//!
//! For each shape and count, N idle Go processes (tests/workloads/idle) are started, either
//! all from one executable ("one") or from 10 copies of it, i.e. 10 inodes, round-robin
//! ("many"). Then `golens run --comm golens-idle --max-processes 1024` (default interval)
//! is run twice against them:
//!
//! 1. start → /readyz 200, the tracked-processes gauge (must be N), CPU over a quiet window,
//!    RSS and open fds at its end, /metrics response time and size, then SIGTERM → reaped
//!    (and the exit status, which must be 0);
//! 2. start → ready again, then SIGKILL → reaped: the kernel closes the agent's files
//!    (its perf-event uprobe links among them) before `waitpid` returns.
//!
//! Every wait has a deadline and nothing is asserted about time: the result is a Markdown
//! table, with " (!)" on each value that misses its goal. A run whose numbers cannot be
//! trusted (the agent never got ready, did not track all N, or exited non-zero on SIGTERM)
//! is reported in WARNING lines, and the command then exits non-zero.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    bench::procfs::{self, Machine},
    setup, util,
};

const USAGE: &str =
    "usage: cargo xtask bench scale [--counts 1,10,100,300] [--shapes one,many] [--idle-seconds 10]";

/// The comm of every idle process: each copy of the binary has this file name (comm is the
/// first 15 bytes of it), in its own directory, so `--comm` selects exactly the bench's
/// processes whichever copy they run.
const IDLE_COMM: &str = "golens-idle";
/// Distinct executables (inodes) of the "many" shape.
const MANY_BINARIES: usize = 10;
/// golens' default (256) is below the largest count.
const MAX_PROCESSES: usize = 1024;
const TRACKED_METRIC: &str = "golens_agent_tracked_processes";
/// Sequential /metrics scrapes per configuration.
const SCRAPES: usize = 20;

// Deadlines. None of them is a goal: they only keep the bench from hanging.
/// For the idle processes' "ready" lines: this plus IDLE_READY_PER_PROCESS for each.
const IDLE_READY_BASE: Duration = Duration::from_secs(30);
const IDLE_READY_PER_PROCESS: Duration = Duration::from_millis(200);
/// For /readyz after spawning golens (it attaches to every process before it is ready).
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(300);
/// For the tracked gauge to reach N once ready (six default collection intervals).
const TRACKED_TIMEOUT: Duration = Duration::from_secs(30);
/// SIGTERM → reaped; after it, SIGKILL.
const SIGTERM_TIMEOUT: Duration = Duration::from_secs(60);
/// SIGKILL → reaped, as measured.
const SIGKILL_TIMEOUT: Duration = Duration::from_secs(90);
/// After SIGKILL_TIMEOUT, how much longer to wait for the agent to be gone before the next
/// run starts (a dying agent still closing links would disturb it).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Any single HTTP request to the agent.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Goals from the issue; a value past its goal gets " (!)".
const GOAL_IDLE_MILLICORES: f64 = 5.0;
const GOAL_SIGKILL: Duration = Duration::from_secs(5);
const MISS: &str = " (!)";
/// Above this share of all CPUs busy during the idle window, a note says the machine was not
/// quiet (300 idle processes and golens together keep it about 1% busy here).
const MACHINE_BUSY_NOTE: f64 = 0.05;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    /// Every process runs the same executable.
    One,
    /// The same program in MANY_BINARIES files, processes spread round-robin.
    Many,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::One => "one",
            Shape::Many => "many",
        }
    }

    /// How many distinct executables `processes` processes of this shape run.
    fn binaries(self, processes: usize) -> usize {
        match self {
            Shape::One => 1,
            Shape::Many => processes.clamp(1, MANY_BINARIES),
        }
    }
}

#[derive(Debug, PartialEq)]
struct Options {
    counts: Vec<usize>,
    shapes: Vec<Shape>,
    idle_seconds: u64,
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut options = Options {
        counts: vec![1, 10, 100, 300],
        shapes: vec![Shape::One, Shape::Many],
        idle_seconds: 10,
    };
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        if matches!(flag.as_str(), "-h" | "--help") {
            bail!("{USAGE}");
        }
        let value = iter.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--counts" => {
                options.counts = value
                    .split(',')
                    .map(|count| match count.trim().parse::<usize>() {
                        Ok(n) if (1..=MAX_PROCESSES).contains(&n) => Ok(n),
                        _ => bail!(
                            "--counts takes whole numbers from 1 to {MAX_PROCESSES}, comma-separated \
                             (got `{count}`)"
                        ),
                    })
                    .collect::<Result<_>>()?;
            }
            "--shapes" => {
                options.shapes = value
                    .split(',')
                    .map(|shape| match shape.trim() {
                        "one" => Ok(Shape::One),
                        "many" => Ok(Shape::Many),
                        other => bail!("unknown shape `{other}` (one, many)\n{USAGE}"),
                    })
                    .collect::<Result<_>>()?;
            }
            "--idle-seconds" => {
                options.idle_seconds = match value.parse() {
                    Ok(seconds) if seconds >= 1 => seconds,
                    _ => bail!("--idle-seconds takes a whole number of at least 1"),
                };
            }
            other => bail!("unknown option `{other}`\n{USAGE}"),
        }
    }
    Ok(options)
}

pub fn bench_scale(args: &[String]) -> Result<()> {
    let options = parse_args(args)?;
    setup::setup()?;
    if !util::is_root() {
        bail!("golens loads eBPF programs: run `cargo xtask bench scale` as root");
    }
    util::build_release()?;
    let golens = util::golens_release_binary();
    if !golens.is_file() {
        bail!("{} is missing after the release build", golens.display());
    }
    let idle = util::build_workload("idle")?;
    let copies = install_copies(&idle)?;
    let machine = Machine::read();
    for other in other_golens_agents(&[]) {
        eprintln!(
            "xtask: warning: another golens is running (pid {other}): it shares the CPUs with the \
             agent measured here"
        );
    }

    let mut rows = Vec::new();
    let mut outcome = Ok(());
    'configurations: for &shape in &options.shapes {
        for &processes in &options.counts {
            match measure(shape, processes, &copies, &options, &machine) {
                Ok(row) => rows.push(row),
                Err(error) => {
                    outcome = Err(error.context(format!(
                        "shape {}, {processes} processes: the bench could not run",
                        shape.name()
                    )));
                    break 'configurations;
                }
            }
        }
    }
    print!("{}", format_report(&machine, options.idle_seconds, &rows));
    outcome?;
    let untrusted = rows.iter().filter(|row| !row.warnings.is_empty()).count();
    if untrusted > 0 {
        bail!(
            "golens misbehaved in {untrusted} configuration(s): see the WARNING lines under the table"
        );
    }
    Ok(())
}

/// Copies the idle workload to target/workloads/scale/bin-K/golens-idle, K < MANY_BINARIES:
/// one inode each, one comm for all. Through a rename, so a copy still running from an
/// earlier bench (ETXTBSY) does not get in the way.
fn install_copies(idle: &Path) -> Result<Vec<PathBuf>> {
    let root = util::workspace_root().join("target/workloads/scale");
    let mut copies = Vec::new();
    for index in 0..MANY_BINARIES {
        let directory = root.join(format!("bin-{index}"));
        fs::create_dir_all(&directory)
            .with_context(|| format!("creating {}", directory.display()))?;
        let copy = directory.join(IDLE_COMM);
        let partial = directory.join(format!("{IDLE_COMM}.partial"));
        fs::copy(idle, &partial)
            .with_context(|| format!("copying {} to {}", idle.display(), partial.display()))?;
        fs::rename(&partial, &copy)
            .with_context(|| format!("renaming {} to {}", partial.display(), copy.display()))?;
        copies.push(copy);
    }
    Ok(copies)
}

/// The pids of golens processes on the host other than `ours` (they would share the CPUs).
fn other_golens_agents(ours: &[u32]) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !ours.contains(pid))
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "golens")
        })
        .collect()
}

// ---- one configuration ----

/// One row of the table: one (shape, N).
#[derive(Debug, Default)]
struct Row {
    shape_label: String,
    processes: usize,
    ready: Option<Readiness>,
    tracked: Option<u64>,
    idle_millicores: Option<f64>,
    rss_mib: Option<f64>,
    open_fds: Option<usize>,
    scrapes: Option<ScrapeStats>,
    sigterm: Option<Stop>,
    sigkill: Option<Stop>,
    /// The numbers of this row cannot be trusted (printed loudly; the bench then fails).
    warnings: Vec<String>,
    /// Worth knowing, not wrong.
    notes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Readiness {
    Ready(Duration),
    Exited { after: Duration, exit: Exit },
    TimedOut(Duration),
}

/// How a process ended, from its wait status.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    fn from_status(status: ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            // Neither a code nor a signal: not something waitpid reports for a child that ended.
            (None, None) => Exit::Code(-1),
        }
    }

    fn describe(self) -> String {
        match self {
            Exit::Code(code) => format!("exit code {code}"),
            Exit::Signal(signal) => format!("signal {signal}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    /// Reaped `after` the signal.
    Exited { after: Duration, exit: Exit },
    /// Not reaped within `after`. For SIGTERM the agent was then SIGKILLed.
    TimedOut { after: Duration },
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct ScrapeStats {
    min: Duration,
    median: Duration,
    max: Duration,
    body_bytes: usize,
}

fn measure(
    shape: Shape,
    processes: usize,
    copies: &[PathBuf],
    options: &Options,
    machine: &Machine,
) -> Result<Row> {
    let binaries = shape.binaries(processes);
    let shape_label = shape_label(shape, processes);
    let label = format!("{shape_label}, {processes} processes");
    let mut row = Row { shape_label, processes, ..Row::default() };
    util::step(&format!("{label}: starting the idle Go processes"));
    let fleet = Fleet::start(&copies[..binaries], processes)?;
    let logs = util::workspace_root().join("target/workloads/scale");
    let log_name =
        |run: u32| logs.join(format!("golens-{}-{processes}-run{run}.log", shape.name()));

    // Run 1: ready, tracked, idle cost, /metrics, SIGTERM.
    util::step(&format!("{label}: run 1: starting golens, waiting for /readyz"));
    let mut agent = Agent::start(&log_name(1))?;
    let ready = agent.wait_ready(AGENT_READY_TIMEOUT);
    row.ready = Some(ready);
    util::step(&format!("{label}: run 1: {}", describe_readiness(ready)));
    match ready {
        Readiness::Ready(_) => {
            observe_ready_agent(&agent, &fleet, processes, options, machine, &label, &mut row)
        }
        Readiness::Exited { exit, .. } => row.warnings.push(format!(
            "golens exited before it was ready ({}); its log: {}",
            exit.describe(),
            agent.log.display()
        )),
        Readiness::TimedOut(after) => row.warnings.push(format!(
            "golens was not ready {} after it started; its log: {}",
            format_duration(after),
            agent.log.display()
        )),
    }
    if agent.is_running() {
        util::step(&format!("{label}: run 1: SIGTERM, waiting up to {SIGTERM_TIMEOUT:?} for exit"));
        let stop = agent.sigterm();
        util::step(&format!("{label}: run 1: {}{}", describe_stop(stop), agent.settle_note()));
        match stop {
            Stop::Exited { exit: Exit::Code(0), .. } => {}
            Stop::Exited { exit, .. } => row.warnings.push(format!(
                "golens ended with {} after SIGTERM (expected exit code 0); its log: {}",
                exit.describe(),
                agent.log.display()
            )),
            Stop::TimedOut { .. } => row.notes.push(format!(
                "golens had not exited {} after SIGTERM and was SIGKILLed{}",
                format_duration(SIGTERM_TIMEOUT),
                agent.settle_note()
            )),
        }
        row.sigterm = Some(stop);
    } else if matches!(ready, Readiness::Ready(_)) {
        row.warnings.push(format!(
            "golens exited on its own after it was ready, before SIGTERM; its log: {}",
            agent.log.display()
        ));
    }
    drop(agent);

    // Run 2: ready again, then SIGKILL.
    util::step(&format!("{label}: run 2: starting golens, waiting for /readyz"));
    let mut agent = Agent::start(&log_name(2))?;
    let ready = agent.wait_ready(AGENT_READY_TIMEOUT);
    util::step(&format!("{label}: run 2: {}", describe_readiness(ready)));
    if agent.is_running() {
        if !matches!(ready, Readiness::Ready(_)) {
            row.warnings.push(format!(
                "run 2: golens was not ready {} after it started: SIGKILL → gone was measured \
                 on an agent still starting; its log: {}",
                format_duration(AGENT_READY_TIMEOUT),
                agent.log.display()
            ));
        }
        util::step(&format!(
            "{label}: run 2: SIGKILL, waiting up to {SIGKILL_TIMEOUT:?} for waitpid"
        ));
        let stop = agent.sigkill();
        util::step(&format!("{label}: run 2: {}{}", describe_stop(stop), agent.settle_note()));
        if matches!(stop, Stop::TimedOut { .. }) {
            row.notes.push(format!(
                "run 2: golens was not reaped {} after SIGKILL{}",
                format_duration(SIGKILL_TIMEOUT),
                agent.settle_note()
            ));
        }
        row.sigkill = Some(stop);
    } else {
        row.warnings.push(format!(
            "run 2: golens exited before it was ready; its log: {}",
            agent.log.display()
        ));
    }
    drop(agent);
    util::step(&format!("{label}: stopping the idle processes"));
    drop(fleet);
    Ok(row)
}

fn shape_label(shape: Shape, processes: usize) -> String {
    match shape {
        Shape::One => "one binary".into(),
        Shape::Many => match shape.binaries(processes) {
            1 => "many (1 binary)".into(),
            n => format!("many ({n} binaries)"),
        },
    }
}

/// Everything measured on a ready agent of run 1, before it is stopped.
fn observe_ready_agent(
    agent: &Agent,
    fleet: &Fleet,
    processes: usize,
    options: &Options,
    machine: &Machine,
    label: &str,
    row: &mut Row,
) {
    let pid = agent.pid();
    let client = http_client();
    let metrics_url = format!("http://{}/metrics", agent.listen);

    // Tracked: must be N. The first collection may publish a moment after /readyz.
    let started = Instant::now();
    let mut last_body = None;
    let tracked = loop {
        let body = get(&client, &metrics_url).ok().filter(|(code, _)| *code == 200).map(|(_, b)| b);
        let tracked = body.as_deref().and_then(|body| parse_gauge(body, TRACKED_METRIC));
        last_body = body.or(last_body);
        if tracked == Some(processes as f64) || started.elapsed() >= TRACKED_TIMEOUT {
            break tracked;
        }
        thread::sleep(Duration::from_millis(250));
    };
    row.tracked = tracked.map(|value| value as u64);
    let alive = fleet.alive();
    match tracked {
        Some(value) if value == processes as f64 => {
            if started.elapsed() > Duration::from_millis(500) {
                row.notes.push(format!(
                    "the tracked gauge reached {processes} {} after /readyz",
                    format_duration(started.elapsed())
                ));
            }
        }
        _ => {
            let shown = tracked.map_or("no value".into(), |value| value.to_string());
            let mut warning = format!(
                "golens tracked {shown} of {processes} processes {} after it was ready \
                 ({alive} of the idle processes were alive)",
                format_duration(started.elapsed())
            );
            let reasons = last_body.as_deref().map(agent_problem_lines).unwrap_or_default();
            if !reasons.is_empty() {
                let _ = write!(warning, "; {}", reasons.join(", "));
            }
            let _ = write!(warning, "; its log: {}", agent.log.display());
            eprintln!("xtask: WARNING: {label}: {warning}");
            row.warnings.push(warning);
        }
    }

    // Idle CPU over a quiet window: nothing talks to the agent meanwhile.
    util::step(&format!("{label}: run 1: idle window of {} s", options.idle_seconds));
    let before = procfs::cpu_ticks(pid);
    let machine_before = read_machine_ticks();
    let window_started = Instant::now();
    thread::sleep(Duration::from_secs(options.idle_seconds));
    let after = procfs::cpu_ticks(pid);
    let window = window_started.elapsed();
    if let (Some(before), Some(after)) = (before, after) {
        row.idle_millicores =
            Some(millicores(after.saturating_sub(before), machine.clock_ticks, window));
    }
    row.rss_mib = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .as_deref()
        .and_then(parse_vm_rss_kib)
        .map(|kib| kib as f64 / 1024.0);
    row.open_fds = fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|entries| entries.count());
    if let (Some(before), Some(after)) = (machine_before, read_machine_ticks()) {
        let busy = busy_fraction(before, after);
        if busy > MACHINE_BUSY_NOTE {
            row.notes.push(format!(
                "the machine was {:.0}% busy (all CPUs, golens included) during the idle \
                 window: something else was running",
                busy * 100.0
            ));
        }
    }
    let others = other_golens_agents(&[pid]);
    if !others.is_empty() {
        row.notes.push(format!(
            "another golens ran during the idle window (pids {others:?}): the CPU numbers shared \
             the machine with it"
        ));
    }

    // /metrics: sequential scrapes, each timed from request to the last byte of the body.
    let mut times = Vec::new();
    let mut body_bytes = 0;
    let mut failures = Vec::new();
    for _ in 0..SCRAPES {
        let started = Instant::now();
        match get(&client, &metrics_url) {
            Ok((200, body)) => {
                times.push(started.elapsed());
                body_bytes = body.len();
            }
            Ok((code, _)) => failures.push(format!("HTTP {code}")),
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    row.scrapes =
        summarize(&times).map(|(min, median, max)| ScrapeStats { min, median, max, body_bytes });
    if !failures.is_empty() {
        row.warnings.push(format!(
            "{} of {SCRAPES} /metrics scrapes failed (first: {})",
            failures.len(),
            failures[0]
        ));
    }
}

/// Non-zero `golens_agent_skipped_processes_total` and `…discovery_errors_total` series:
/// the agent's own account of why it tracks fewer processes than asked.
fn agent_problem_lines(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("golens_agent_skipped_processes")
                || line.starts_with("golens_agent_discovery_errors")
        })
        .filter(|line| {
            line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0)
        })
        .map(str::to_owned)
        .collect()
}

// ---- the idle processes ----

/// N idle Go processes, each having printed "ready". Dropping it SIGKILLs and reaps them all.
struct Fleet {
    children: Vec<Child>,
    /// Kept open so that the processes never write to a closed pipe.
    _stdouts: Vec<BufReader<ChildStdout>>,
}

impl Fleet {
    fn start(binaries: &[PathBuf], count: usize) -> Result<Fleet> {
        let mut fleet = Fleet { children: Vec::with_capacity(count), _stdouts: Vec::new() };
        let (sender, receiver) = mpsc::channel();
        for index in 0..count {
            let binary = &binaries[index % binaries.len()];
            let mut child = Command::new(binary)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting {} (idle process {index})", binary.display()))?;
            let stdout = child.stdout.take().context("the idle process's stdout pipe")?;
            fleet.children.push(child);
            let sender = sender.clone();
            // One small thread per process reads its first line; the deadline is on the receiver.
            thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut reader = BufReader::new(stdout);
                    let mut line = String::new();
                    let read = reader.read_line(&mut line).map(|_| line);
                    let _ = sender.send((index, read, reader));
                })
                .context("starting a thread to read an idle process's stdout")?;
            if (index + 1) % 50 == 0 && index + 1 < count {
                util::step(&format!("  spawned {}/{count}", index + 1));
            }
        }
        drop(sender);

        let timeout = IDLE_READY_BASE + IDLE_READY_PER_PROCESS * count as u32;
        let deadline = Instant::now() + timeout;
        let mut ready = 0;
        while ready < count {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((index, line, reader)) = receiver.recv_timeout(left) else {
                bail!(
                    "{ready} of {count} idle Go processes printed \"ready\" within {}: waited for \
                     the first line of their stdout",
                    format_duration(timeout)
                );
            };
            let pid = fleet.children[index].id();
            match line {
                Ok(line) if line.trim() == "ready" => {
                    ready += 1;
                    fleet._stdouts.push(reader);
                }
                Ok(line) if line.is_empty() => {
                    bail!(
                        "idle process {pid} closed its stdout (exited?) before printing \"ready\""
                    )
                }
                Ok(line) => {
                    bail!("idle process {pid} printed {line:?} where \"ready\" was expected")
                }
                Err(error) => bail!("reading the stdout of idle process {pid}: {error}"),
            }
            if ready % 50 == 0 && ready < count {
                util::step(&format!("  ready {ready}/{count}"));
            }
        }
        Ok(fleet)
    }

    /// How many of the processes have not exited.
    fn alive(&self) -> usize {
        self.children
            .iter()
            .filter(|child| fs::metadata(format!("/proc/{}/stat", child.id())).is_ok())
            .count()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for child in &mut self.children {
            if util::wait_until(child, deadline).is_none() {
                eprintln!(
                    "xtask: warning: idle process {} not reaped 60 s after SIGKILL; left behind",
                    child.id()
                );
            }
        }
    }
}

// ---- the agent ----

/// A `golens run` of the bench. Dropping it SIGKILLs it and waits (with a deadline) for it.
struct Agent {
    child: Option<Child>,
    listen: String,
    started: Instant,
    log: PathBuf,
    /// When a timed-out stop was followed by a longer wait: how long the process took to go.
    settled: Option<Result<Duration, Duration>>,
}

impl Agent {
    fn start(log: &Path) -> Result<Agent> {
        let port = util::free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let log_file =
            fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let binary = util::golens_release_binary();
        let mut command = Command::new(&binary);
        command
            .args(["run", "--listen", &listen, "--comm", IDLE_COMM])
            .args(["--max-processes", &MAX_PROCESSES.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("duplicating the log file")?)
            .stderr(log_file);
        let started = Instant::now();
        let child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
        Ok(Agent { child: Some(child), listen, started, log: log.into(), settled: None })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Readiness {
        let client = http_client();
        let url = format!("http://{}/readyz", self.listen);
        let deadline = self.started + timeout;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Readiness::TimedOut(self.started.elapsed());
            };
            if let Ok(Some(status)) = child.try_wait() {
                return Readiness::Exited {
                    after: self.started.elapsed(),
                    exit: Exit::from_status(status),
                };
            }
            if get(&client, &url).is_ok_and(|(code, _)| code == 200) {
                return Readiness::Ready(self.started.elapsed());
            }
            if Instant::now() >= deadline {
                return Readiness::TimedOut(self.started.elapsed());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the time until it is reaped; SIGKILL after SIGTERM_TIMEOUT.
    fn sigterm(&mut self) -> Stop {
        let Some(child) = self.child.as_mut() else {
            return Stop::TimedOut { after: Duration::ZERO };
        };
        let signalled = Instant::now();
        send_signal(child.id(), SIGTERM);
        if let Some(status) = util::wait_until(child, signalled + SIGTERM_TIMEOUT) {
            self.child = None;
            return Stop::Exited { after: signalled.elapsed(), exit: Exit::from_status(status) };
        }
        let _ = child.kill();
        self.settle(signalled);
        Stop::TimedOut { after: SIGTERM_TIMEOUT }
    }

    /// SIGKILL, then the time until waitpid returns (capped at SIGKILL_TIMEOUT).
    fn sigkill(&mut self) -> Stop {
        let Some(child) = self.child.as_mut() else {
            return Stop::TimedOut { after: Duration::ZERO };
        };
        let signalled = Instant::now();
        let _ = child.kill();
        if let Some(status) = util::wait_until(child, signalled + SIGKILL_TIMEOUT) {
            self.child = None;
            return Stop::Exited { after: signalled.elapsed(), exit: Exit::from_status(status) };
        }
        self.settle(signalled);
        Stop::TimedOut { after: SIGKILL_TIMEOUT }
    }

    /// After a stop that timed out (SIGKILL already sent): waits for the process to be gone,
    /// up to SETTLE_TIMEOUT more, so that the next run does not share the machine with it.
    fn settle(&mut self, signalled: Instant) {
        let Some(child) = self.child.as_mut() else { return };
        util::step(&format!(
            "  golens (pid {}) not reaped in time: SIGKILLed; waiting up to {} more for it to be gone",
            child.id(),
            format_duration(SETTLE_TIMEOUT)
        ));
        let reaped = util::wait_until(child, Instant::now() + SETTLE_TIMEOUT).is_some();
        self.settled =
            Some(if reaped { Ok(signalled.elapsed()) } else { Err(signalled.elapsed()) });
        if reaped {
            self.child = None;
        }
    }

    /// What `settle` saw, as the end of a sentence.
    fn settle_note(&self) -> String {
        match self.settled {
            Some(Ok(after)) => {
                format!("; it was reaped {} after the first signal", format_duration(after))
            }
            Some(Err(after)) => format!(
                "; it was still not reaped {} after the first signal (left behind)",
                format_duration(after)
            ),
            None => String::new(),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else { return };
        let _ = child.kill();
        if util::wait_until(child, Instant::now() + SIGKILL_TIMEOUT).is_none() {
            eprintln!(
                "xtask: warning: golens (pid {}) not reaped {} after SIGKILL; left behind",
                child.id(),
                format_duration(SIGKILL_TIMEOUT)
            );
        }
    }
}

const SIGTERM: i32 = 15;

extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
}

fn send_signal(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
    unsafe {
        kill(pid, signal);
    }
}

fn http_client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .into()
}

/// GET with a deadline: (status, body). The body is read whole, whatever its size.
fn get(client: &ureq::Agent, url: &str) -> Result<(u16, String)> {
    let mut response = client.get(url).call().with_context(|| format!("GET {url}"))?;
    let code = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_string()
        .with_context(|| format!("reading {url}"))?;
    Ok((code, body))
}

// ---- the machine and /proc ----

/// Clock ticks of all CPUs since boot: (busy, total), from the `cpu` line of /proc/stat.
fn read_machine_ticks() -> Option<(u64, u64)> {
    parse_machine_ticks(&fs::read_to_string("/proc/stat").ok()?)
}

/// (busy, total) from the first line of /proc/stat: `cpu user nice system idle iowait irq
/// softirq steal guest guest_nice`. Idle and iowait are not busy; guest time is already
/// counted in user and nice, so only the first eight fields are summed.
fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let fields = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> =
        fields.split_whitespace().take(8).map(str::parse).collect::<Result<_, _>>().ok()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else { return None };
    let busy = user + nice + system + irq + softirq + steal;
    Some((busy, busy + idle + iowait))
}

/// The share of all CPUs that was busy between two `parse_machine_ticks` samples.
fn busy_fraction(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1);
    if total == 0 {
        return 0.0;
    }
    after.0.saturating_sub(before.0) as f64 / total as f64
}

/// The `VmRSS:` line of /proc/PID/status, in KiB.
fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    procfs::parse_kib_field(status, "VmRSS:")
}

/// Thousandths of a CPU used over `window`, from a clock-tick count.
fn millicores(ticks: u64, ticks_per_second: u64, window: Duration) -> f64 {
    if ticks_per_second == 0 || window.is_zero() {
        return 0.0;
    }
    ticks as f64 / ticks_per_second as f64 / window.as_secs_f64() * 1000.0
}

/// The value of an unlabelled sample: `golens_agent_tracked_processes 300`.
fn parse_gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// (min, median, max) of some durations; None when there are none.
fn summarize(times: &[Duration]) -> Option<(Duration, Duration, Duration)> {
    let mut sorted = times.to_vec();
    sorted.sort();
    Some((*sorted.first()?, sorted[sorted.len() / 2], *sorted.last()?))
}

// ---- report ----

/// RSS goal for `processes` (the issue's: 64 MiB at 100, 128 MiB at 300; none beyond).
fn rss_goal_mib(processes: usize) -> Option<f64> {
    match processes {
        0..=100 => Some(64.0),
        101..=300 => Some(128.0),
        _ => None,
    }
}

/// Goals stated "at 100 processes" apply to every count up to 100.
fn at_most_100(processes: usize) -> bool {
    processes <= 100
}

fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 10.0 {
        format!("{seconds:.2} s")
    } else {
        format!("{seconds:.1} s")
    }
}

fn format_ms(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1000.0)
}

fn mark(text: String, missed: bool) -> String {
    if missed {
        text + MISS
    } else {
        text
    }
}

fn describe_readiness(ready: Readiness) -> String {
    match ready {
        Readiness::Ready(after) => format!("ready after {}", format_duration(after)),
        Readiness::Exited { after, exit } => {
            format!(
                "exited ({}) after {} without being ready",
                exit.describe(),
                format_duration(after)
            )
        }
        Readiness::TimedOut(after) => format!("not ready after {}", format_duration(after)),
    }
}

fn describe_stop(stop: Stop) -> String {
    match stop {
        Stop::Exited { after, exit } => {
            format!("reaped after {} ({})", format_duration(after), exit.describe())
        }
        Stop::TimedOut { after } => format!("not reaped after {}", format_duration(after)),
    }
}

fn ready_cell(ready: Option<Readiness>) -> String {
    match ready {
        None => "-".into(),
        Some(Readiness::Ready(after)) => format_duration(after),
        Some(Readiness::Exited { exit, .. }) => mark(format!("exited, {}", exit.describe()), true),
        Some(Readiness::TimedOut(after)) => mark(format!(">{}", format_duration(after)), true),
    }
}

fn sigterm_cell(stop: Option<Stop>, processes: usize) -> String {
    match stop {
        None => "-".into(),
        Some(Stop::Exited { after, exit: Exit::Code(0) }) => {
            mark(format_duration(after), at_most_100(processes) && after > Duration::from_secs(2))
        }
        Some(Stop::Exited { after, exit }) => {
            mark(format!("{}, {}", format_duration(after), exit.describe()), true)
        }
        Some(Stop::TimedOut { after }) => mark(format!(">{}", format_duration(after)), true),
    }
}

fn sigkill_cell(stop: Option<Stop>) -> String {
    match stop {
        None => "-".into(),
        Some(Stop::Exited { after, .. }) => mark(format_duration(after), after > GOAL_SIGKILL),
        Some(Stop::TimedOut { after }) => mark(format!(">{}", format_duration(after)), true),
    }
}

fn format_row(row: &Row) -> String {
    let n = row.processes;
    let tracked = match row.tracked {
        Some(tracked) => mark(tracked.to_string(), tracked != n as u64),
        None => mark("-".into(), row.ready.is_some_and(|r| matches!(r, Readiness::Ready(_)))),
    };
    let cpu = row
        .idle_millicores
        .map_or("-".into(), |m| mark(format!("{m:.1}"), m > GOAL_IDLE_MILLICORES));
    let rss = row.rss_mib.map_or("-".into(), |rss| {
        mark(format!("{rss:.1}"), rss_goal_mib(n).is_some_and(|goal| rss > goal))
    });
    let fds = row.open_fds.map_or("-".into(), |fds| fds.to_string());
    let (scrape, bytes) = row.scrapes.map_or(("-".into(), "-".into()), |s| {
        let missed = at_most_100(n) && s.median > Duration::from_millis(10);
        let times =
            format!("{} / {} / {}", format_ms(s.min), format_ms(s.median), format_ms(s.max));
        (mark(times, missed), s.body_bytes.to_string())
    });
    format!(
        "| {} | {n} | {} | {tracked} | {cpu} | {rss} | {fds} | {scrape} | {bytes} | {} | {} |",
        row.shape_label,
        ready_cell(row.ready),
        sigterm_cell(row.sigterm, n),
        sigkill_cell(row.sigkill),
    )
}

fn format_memory(kib: Option<u64>) -> String {
    kib.map_or("unknown memory".into(), |kib| {
        format!("{:.1} GiB RAM", kib as f64 / (1024.0 * 1024.0))
    })
}

fn format_report(machine: &Machine, idle_seconds: u64, rows: &[Row]) -> String {
    let mut out = String::new();
    let ticks = if machine.clock_ticks_assumed {
        format!("CLK_TCK assumed {} (sysconf failed)", machine.clock_ticks)
    } else {
        format!("CLK_TCK {}", machine.clock_ticks)
    };
    let _ = writeln!(
        out,
        "\ngolens at node scale: {} CPUs, kernel {}, {}. `golens run --comm {IDLE_COMM} \
         --max-processes {MAX_PROCESSES}` (default 5 s interval) watching N idle Go processes \
         of one executable, or of {MANY_BINARIES} copies of it (distinct inodes); idle CPU over \
         {idle_seconds} s after ready ({ticks}), RSS and fds at its end; /metrics over \
         {SCRAPES} sequential scrapes.",
        machine.cpus,
        machine.kernel,
        format_memory(machine.memory_kib),
    );
    let _ = writeln!(
        out,
        "Goals: idle CPU ≤ {GOAL_IDLE_MILLICORES} millicores; RSS ≤ 64 MiB up to 100 processes, \
         ≤ 128 MiB up to 300; /metrics median ≤ 10 ms up to 100; SIGTERM → exit ≤ 2 s up to \
         100, exit code 0; SIGKILL → gone ≤ {} s; tracked = N. (!) marks a miss.\n",
        GOAL_SIGKILL.as_secs()
    );
    let _ = writeln!(
        out,
        "| shape | N | start → ready | tracked | idle CPU (millicores) | RSS (MiB) | fds | \
         /metrics min / median / max (ms) | /metrics bytes | SIGTERM → exit | SIGKILL → gone |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for row in rows {
        let _ = writeln!(out, "{}", format_row(row));
    }
    let label = |row: &Row| format!("{}, N={}", row.shape_label, row.processes);
    let notes: Vec<String> = rows
        .iter()
        .flat_map(|row| row.notes.iter().map(move |n| format!("{}: {n}", label(row))))
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(out);
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    let warnings: Vec<String> = rows
        .iter()
        .flat_map(|row| row.warnings.iter().map(move |w| format!("{}: {w}", label(row))))
        .collect();
    if !warnings.is_empty() {
        let _ = writeln!(out);
        for warning in warnings {
            let _ = writeln!(out, "WARNING: {warning}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::test_support::{cells, machine};

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_scale_arguments() {
        let defaults = parse_args(&[]).unwrap();
        assert_eq!(
            defaults,
            Options {
                counts: vec![1, 10, 100, 300],
                shapes: vec![Shape::One, Shape::Many],
                idle_seconds: 10
            }
        );
        let some =
            parse_args(&args(&["--counts", "1,10", "--shapes", "many", "--idle-seconds", "3"]))
                .unwrap();
        assert_eq!(
            some,
            Options { counts: vec![1, 10], shapes: vec![Shape::Many], idle_seconds: 3 }
        );
        assert_eq!(
            parse_args(&args(&["--shapes", "one, many"])).unwrap().shapes,
            [Shape::One, Shape::Many]
        );
        for bad in [
            &["--counts", "0"][..],
            &["--counts", "1,,2"],
            &["--counts", "2000"],
            &["--shapes", "few"],
            &["--idle-seconds", "0"],
            &["--idle-seconds"],
            &["--bogus", "1"],
            &["--help"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shapes_spread_processes_over_binaries() {
        assert_eq!(Shape::One.binaries(300), 1);
        assert_eq!(Shape::Many.binaries(1), 1);
        assert_eq!(Shape::Many.binaries(7), 7);
        assert_eq!(Shape::Many.binaries(300), MANY_BINARIES);
        assert_eq!(shape_label(Shape::Many, 1), "many (1 binary)");
        assert_eq!(shape_label(Shape::Many, 100), "many (10 binaries)");
    }

    #[test]
    fn reads_cpu_ticks_from_stat_even_with_odd_comms() {
        let stat = "4242 (golens (x) y) S 1 4242 4242 0 -1 4194560 1033 0 0 0 175 23 0 0 20 0 9 0 \
                    123456 1000000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(procfs::parse_stat_cpu_ticks(stat), Some(198));
        assert_eq!(procfs::parse_stat_cpu_ticks("4242 (golens) S 1 2"), None);
        assert_eq!(procfs::parse_stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn reads_kib_fields() {
        let status = "Name:\tgolens\nVmPeak:\t  100000 kB\nVmRSS:\t   45678 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss_kib(status), Some(45678));
        assert_eq!(parse_vm_rss_kib("Name:\tgolens\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn reads_machine_busy_time() {
        let stat = "cpu  100 5 50 800 40 3 2 0 7 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        assert_eq!(parse_machine_ticks(stat), Some((160, 1000)));
        assert_eq!(parse_machine_ticks("cpu  1 2 3\n"), None);
        assert_eq!(parse_machine_ticks("intr 1 2\n"), None);
        assert_eq!(busy_fraction((160, 1000), (260, 2000)), 0.1);
        assert_eq!(busy_fraction((160, 1000), (160, 1000)), 0.0);
    }

    #[test]
    fn millicores_from_ticks() {
        assert_eq!(millicores(5, 100, Duration::from_secs(10)), 5.0);
        assert_eq!(millicores(0, 100, Duration::from_secs(10)), 0.0);
        assert_eq!(millicores(1, 100, Duration::ZERO), 0.0);
    }

    #[test]
    fn reads_the_tracked_gauge() {
        let metrics = "# HELP golens_agent_tracked_processes Go processes the agent is watching.\n\
                       # TYPE golens_agent_tracked_processes gauge\n\
                       golens_agent_tracked_processes_bogus 7\n\
                       golens_agent_tracked_processes 300\n";
        assert_eq!(parse_gauge(metrics, TRACKED_METRIC), Some(300.0));
        assert_eq!(
            parse_gauge("# TYPE golens_agent_tracked_processes gauge\n", TRACKED_METRIC),
            None
        );
    }

    #[test]
    fn lists_the_agents_own_reasons() {
        let metrics = "golens_agent_skipped_processes_total{reason=\"max_processes\"} 44\n\
                       golens_agent_discovery_errors_total{reason=\"not_go\"} 0\n\
                       golens_agent_tracked_processes 256\n";
        assert_eq!(
            agent_problem_lines(metrics),
            ["golens_agent_skipped_processes_total{reason=\"max_processes\"} 44"]
        );
    }

    #[test]
    fn summarizes_durations() {
        let ms = Duration::from_millis;
        assert_eq!(summarize(&[ms(3), ms(1), ms(2)]), Some((ms(1), ms(2), ms(3))));
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn report_marks_missed_goals() {
        let s = Duration::from_secs_f64;
        let good = Row {
            shape_label: "one binary".into(),
            processes: 100,
            ready: Some(Readiness::Ready(s(0.5))),
            tracked: Some(100),
            idle_millicores: Some(1.0),
            rss_mib: Some(40.0),
            open_fds: Some(120),
            scrapes: Some(ScrapeStats {
                min: s(0.001),
                median: s(0.002),
                max: s(0.0125),
                body_bytes: 9000,
            }),
            sigterm: Some(Stop::Exited { after: s(0.25), exit: Exit::Code(0) }),
            sigkill: Some(Stop::Exited { after: s(0.125), exit: Exit::Signal(9) }),
            ..Row::default()
        };
        let bad = Row {
            shape_label: "many (10 binaries)".into(),
            processes: 300,
            ready: Some(Readiness::Ready(s(12.0))),
            tracked: Some(256),
            idle_millicores: Some(7.5),
            rss_mib: Some(200.0),
            open_fds: Some(9000),
            scrapes: Some(ScrapeStats {
                min: s(0.02),
                median: s(0.03),
                max: s(0.04),
                body_bytes: 90000,
            }),
            sigterm: Some(Stop::TimedOut { after: SIGTERM_TIMEOUT }),
            sigkill: Some(Stop::TimedOut { after: SIGKILL_TIMEOUT }),
            warnings: vec!["golens tracked 256 of 300 processes".into()],
            notes: vec!["it was reaped 240 s after the first signal".into()],
        };
        let report = format_report(&machine(), 10, &[good, bad]);
        assert!(report.contains("2 CPUs, kernel 6.18.44, 24.0 GiB RAM"), "{report}");
        assert!(report.contains("CLK_TCK 100"), "{report}");
        assert_eq!(
            cells(&report, "| one binary"),
            [
                "one binary",
                "100",
                "0.50 s",
                "100",
                "1.0",
                "40.0",
                "120",
                "1.0 / 2.0 / 12.5",
                "9000",
                "0.25 s",
                "0.12 s"
            ],
            "{report}"
        );
        assert_eq!(
            cells(&report, "| many"),
            [
                "many (10 binaries)",
                "300",
                "12.0 s",
                "256 (!)",
                "7.5 (!)",
                "200.0 (!)",
                "9000",
                "20.0 / 30.0 / 40.0",
                "90000",
                ">60.0 s (!)",
                ">90.0 s (!)"
            ],
            "{report}"
        );
        assert!(
            report.contains("\nWARNING: many (10 binaries), N=300: golens tracked 256"),
            "{report}"
        );
        assert!(report.contains("- many (10 binaries), N=300: it was reaped 240 s"), "{report}");
    }

    #[test]
    fn report_marks_bad_exits_and_unready_agents() {
        let s = Duration::from_secs_f64;
        let row = Row {
            shape_label: "one binary".into(),
            processes: 10,
            ready: Some(Readiness::TimedOut(AGENT_READY_TIMEOUT)),
            sigterm: Some(Stop::Exited { after: s(3.0), exit: Exit::Code(1) }),
            sigkill: Some(Stop::Exited { after: s(6.0), exit: Exit::Signal(9) }),
            ..Row::default()
        };
        let report = format_report(&machine(), 3, &[row]);
        assert_eq!(
            cells(&report, "| one binary"),
            [
                "one binary",
                "10",
                ">300.0 s (!)",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "3.00 s, exit code 1 (!)",
                "6.00 s (!)"
            ],
            "{report}"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_millis(1234)), "1.23 s");
        assert_eq!(format_duration(Duration::from_secs(95)), "95.0 s");
        assert_eq!(rss_goal_mib(1), Some(64.0));
        assert_eq!(rss_goal_mib(300), Some(128.0));
        assert_eq!(rss_goal_mib(301), None);
    }
}
