//! Pressure against limits, created for real: fds until EMFILE, 10 000
//! mappings, ephemeral ports until EADDRNOTAVAIL and conntrack entries (in
//! network namespaces the tests make, loopback only), and late timers on an
//! overloaded CPU.
//! Privileged: run by `cargo xtask test` (as root).

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::Duration,
};

use common::{build_workload, Agent, ChildGuard, Metrics};

const COMM: &str = "gl-pressure";

/// The pressure workload under its own comm (so the agent watches only it).
fn workload() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pressure");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(COMM);
    let _ = std::fs::remove_file(&path);
    std::fs::copy(build_workload("pressure"), &path).unwrap();
    path
}

/// A pressure process started through `launcher` (e.g. prlimit, unshare):
/// waits for "ready" and returns it with its stdin and stdout.
struct Pressure {
    child: ChildGuard,
    stdin: ChildStdin,
    stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Pressure {
    fn start(command: &mut Command) -> Pressure {
        let mut child: Child =
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("starting");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(stdout.next().unwrap().unwrap(), "ready");
        Pressure { child: ChildGuard(child), stdin, stdout }
    }

    /// The pid of the Go process (the launcher execs it).
    fn pid(&self) -> String {
        self.child.pid().to_string()
    }

    /// Does its thing; returns what it printed.
    fn go(&mut self) -> String {
        self.stdin.write_all(b"go\n").unwrap();
        self.stdout.next().expect("result line").expect("result")
    }
}

/// Kills a process this test started indirectly (by pid) when dropped.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) of a process this test started.
        unsafe { libc::kill(self.0, libc::SIGTERM) };
    }
}

fn agent_watching(pressure: &Pressure) -> Agent {
    let agent = Agent::start(&["--comm", COMM]);
    let pid = pressure.pid();
    let tracked = agent.wait_for(Duration::from_secs(10), |m| {
        m.has_pid("golens_process_info", pid.parse().unwrap())
    });
    assert!(tracked.has_pid("golens_process_info", pid.parse().unwrap()), "not tracked");
    agent
}

#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn fds_until_emfile() {
    let binary = workload();
    let mut pressure = Pressure::start(
        Command::new("prlimit").arg("--nofile=256:256").arg(&binary).args(["-mode", "fds"]),
    );
    let agent = agent_watching(&pressure);
    let said = pressure.go();
    assert!(said.starts_with("emfile after"), "{said}");
    let pid = pressure.pid();
    let labels = [("pid", pid.as_str()), ("errno", "EMFILE")];
    let metrics = agent.wait_for(Duration::from_secs(10), |m| {
        m.value("golens_process_fd_exhaustion_total", &labels).unwrap_or(0.0) >= 1.0
    });
    let emfile = metrics.value("golens_process_fd_exhaustion_total", &labels);
    let open = metrics.value("golens_process_open_fds", &[("pid", &pid)]);
    let max = metrics.value("golens_process_max_fds", &[("pid", &pid)]);
    println!("{said}: golens counted {emfile:?} EMFILE; open fds {open:?} of {max:?}");
    assert!(emfile.unwrap_or(0.0) >= 1.0, "EMFILE not counted");
    assert_eq!(max, Some(256.0), "the soft RLIMIT_NOFILE prlimit set");
    assert!(open.unwrap_or(0.0) >= 256.0, "open fds did not reach the limit: {open:?}");
}

#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn ten_thousand_mappings() {
    let binary = workload();
    let mut pressure =
        Pressure::start(Command::new(&binary).args(["-mode", "vmas", "-count", "10000"]));
    let agent = agent_watching(&pressure);
    let said = pressure.go();
    let pid = pressure.pid();
    let peak = |m: &Metrics| m.value("golens_process_vmas_peak", &[("pid", &pid)]).unwrap_or(0.0);
    let metrics = agent.wait_for(Duration::from_secs(10), |m| peak(m) >= 10_000.0);
    println!("{said}: golens peak {}", peak(&metrics));
    assert!(peak(&metrics) >= 10_000.0, "peak VMAs {}", peak(&metrics));
}

/// golens and a pressure workload in a network namespace of the test's own
/// (loopback only): host pressure is per namespace, so golens runs there too,
/// in the background of the shell that then execs the workload. Its HTTP
/// port is in that namespace: scraped through nsenter.
struct InNetNamespace {
    pressure: Pressure,
    port: u16,
    _agent: KillOnDrop,
}

impl InNetNamespace {
    /// Runs `setup` (shell commands; their failure is said on stdout, where
    /// "ready" is expected) in the new namespace, then golens, then the
    /// workload with `args`.
    fn start(setup: &str, args: &str) -> InNetNamespace {
        let binary = workload();
        let port = common::free_port();
        let pid_file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pressure-golens.pid");
        let _ = std::fs::remove_file(&pid_file);
        let script = format!(
            "ip link set lo up && {{ {setup} || {{ echo 'setup failed: {setup}'; exit 1; }}; }} && \
             {golens} run --comm {COMM} --interval 250ms --listen 127.0.0.1:{port} 2>/dev/null & \
             echo $! > {pid_file} && exec {binary} {args}",
            golens = env!("CARGO_BIN_EXE_golens"),
            binary = binary.display(),
            pid_file = pid_file.display(),
        );
        let pressure =
            Pressure::start(Command::new("unshare").args(["--net", "sh", "-c", &script]));
        // golens runs in the background of that shell: stop it with the test.
        let agent = KillOnDrop(
            std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .expect("the in-namespace golens' pid"),
        );
        InNetNamespace { pressure, port, _agent: agent }
    }

    fn scrape(&self) -> Option<Metrics> {
        let get = format!(
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{}/metrics').read().decode())",
            self.port
        );
        let output = Command::new("nsenter")
            .args(["--net", &format!("--target={}", self.pressure.pid()), "python3", "-c", &get])
            .output()
            .expect("nsenter (util-linux) and python3");
        output.status.success().then(|| Metrics::parse(&String::from_utf8_lossy(&output.stdout)))
    }

    /// Scrapes until `done` holds; panics saying `what` after 20 s.
    fn until(&self, what: &str, done: &dyn Fn(&Metrics) -> bool) -> Metrics {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(metrics) = self.scrape().filter(|m| done(m)) {
                return metrics;
            }
            assert!(std::time::Instant::now() < deadline, "golens in the namespace: {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_tracked(&self) {
        let pid: u32 = self.pressure.pid().parse().unwrap();
        self.until("the workload is not tracked", &|m| m.has_pid("golens_process_info", pid));
    }
}

/// With a 100-port ephemeral range in the namespace: connect until
/// EADDRNOTAVAIL; golens counts it and sees every port of the range in use.
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn ephemeral_ports_until_eaddrnotavail() {
    let mut ns = InNetNamespace::start(
        "echo '40000 40099' > /proc/sys/net/ipv4/ip_local_port_range",
        "-mode connect",
    );
    ns.wait_tracked();
    let said = ns.pressure.go();
    assert!(said.starts_with("eaddrnotavail after"), "{said}");
    let pid = ns.pressure.pid();
    let count = |m: &Metrics| {
        m.value("golens_process_connect_eaddrnotavail_total", &[("pid", &pid)]).unwrap_or(0.0)
    };
    let used = |m: &Metrics| m.value("golens_host_ephemeral_ports_used", &[]).unwrap_or(0.0);
    let metrics = ns.until("EADDRNOTAVAIL or the ports in use not seen", &|m| {
        count(m) >= 1.0 && used(m) >= 100.0
    });
    println!(
        "{said}: golens counted {} EADDRNOTAVAIL, {} of {:?} ephemeral ports in use",
        count(&metrics),
        used(&metrics),
        metrics.value("golens_host_ephemeral_port_range_size", &[])
    );
    assert_eq!(metrics.value("golens_host_ephemeral_port_range_size", &[]), Some(100.0));
    // The workload closed 10 of its connections: TIME_WAIT in that namespace.
    let time_wait = |m: &Metrics| m.value("golens_host_tcp_time_wait_sockets", &[]).unwrap_or(0.0);
    ns.until("no TIME_WAIT socket", &|m| time_wait(m) >= 10.0);
    // A listener with a backlog of 1 that never accepts, in the same
    // namespace, on a port outside the exhausted range (connections to
    // another destination may reuse the range's local ports).
    let overflows = |m: &Metrics| m.value("golens_host_listen_overflows_total", &[]).unwrap_or(0.0);
    let before = overflows(&ns.until("no listen overflow counter", &|m| {
        m.value("golens_host_listen_overflows_total", &[]).is_some()
    }));
    let mut backlog = Pressure::start(
        Command::new("nsenter")
            .args(["--net", &format!("--target={pid}")])
            .arg(workload())
            .args(["-mode", "backlog", "-count", "20", "-port", "39000"]),
    );
    let said = backlog.go();
    let metrics = ns.until("listen overflows not counted", &|m| overflows(m) > before);
    println!("{said}: listen overflows {before} -> {}", overflows(&metrics));
}

/// conntrack in the namespace. The kernel tracks a network namespace's
/// connections only once something there uses conntrack (a `ct state`
/// rule, NAT): a new namespace's nf_conntrack_count stays 0 whatever it
/// does. An iptables rule matching on connection state (Debian's iptables,
/// nf_tables backend) registers it; N connections then show as at least N
/// more entries in golens_host_conntrack_entries. The scrapes' own
/// connections only add to it, and nothing expires within the test (an
/// established entry lives 5 days, a closed one 2 minutes).
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn conntrack_entries_count_new_connections() {
    const CONNECTIONS: f64 = 50.0;
    let mut ns = InNetNamespace::start(
        "iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        "-mode conns -count 50",
    );
    ns.wait_tracked();
    let entries = |m: &Metrics| m.value("golens_host_conntrack_entries", &[]);
    let before =
        ns.until("no conntrack entries (is nf_conntrack loaded?)", &|m| entries(m).is_some());
    let (before, max) = (entries(&before), before.value("golens_host_conntrack_max", &[]));
    assert!(max.is_some_and(|max| max > 0.0), "nf_conntrack_max: {max:?}");
    let said = ns.pressure.go();
    assert_eq!(said, "connected 50");
    let metrics = ns.until("the connections are not counted", &|m| {
        entries(m).unwrap_or(0.0) >= before.unwrap_or(0.0) + CONNECTIONS
    });
    println!("{said}: conntrack entries {before:?} -> {:?} of max {max:?}", entries(&metrics));
}

#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn timerfd_settime_is_counted() {
    let binary = workload();
    let mut pressure =
        Pressure::start(Command::new(&binary).args(["-mode", "timerfd", "-count", "100"]));
    let agent = agent_watching(&pressure);
    let said = pressure.go();
    let pid = pressure.pid();
    let count =
        |m: &Metrics| m.value("golens_timerfd_settime_total", &[("pid", &pid)]).unwrap_or(0.0);
    let metrics = agent.wait_for(Duration::from_secs(10), |m| count(m) >= 100.0);
    println!("{said}: golens counted {}", count(&metrics));
    assert_eq!(count(&metrics), 100.0);
}

/// A Go program sleeping 1 ms in a loop, sharing its CPU with eight busy
/// loops: the lateness histogram's p99 is above 1 ms.
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn timers_are_late_on_an_overloaded_cpu() {
    let binary = workload();
    let mut pressure =
        Pressure::start(Command::new("taskset").args(["-c", "0"]).arg(&binary).args([
            "-mode",
            "sleep",
            "-duration",
            "3s",
        ]));
    let agent = agent_watching(&pressure);
    let hogs: Vec<ChildGuard> = (0..8)
        .map(|_| {
            ChildGuard(
                Command::new("taskset")
                    .args(["-c", "0", "sh", "-c", "while :; do :; done"])
                    .spawn()
                    .expect("a busy loop"),
            )
        })
        .collect();
    let said = pressure.go();
    drop(hogs);
    agent.catch_up();
    let metrics = agent.metrics();
    let pid = pressure.pid();
    let count =
        metrics.value("golens_timer_lateness_seconds_count", &[("pid", &pid)]).unwrap_or(0.0);
    // Samples at most ~1.05 ms late: the bucket whose upper bound is 2^20 ns.
    let within_1ms = metrics
        .value("golens_timer_lateness_seconds_bucket", &[("pid", &pid), ("le", "0.001048576")])
        .unwrap_or(0.0);
    println!("{said}: golens {count} late timed waits, {within_1ms} of them within 1.05 ms");
    assert!(count >= 100.0, "too few late timed waits seen: {count}");
    // Go sleeps in its netpoller: each 1 ms sleep is a blocking epoll wait.
    let waits =
        metrics.value("golens_go_netpoll_wait_seconds_count", &[("pid", &pid)]).unwrap_or(0.0);
    assert!(waits >= 100.0, "too few blocking netpoll waits seen: {waits}");
    assert!(within_1ms < 0.99 * count, "p99 of the lateness is not above 1 ms");
}
