//! Real conditions: processes at their limits, made by the tests themselves.
//! Run with `cargo test -p golens --lib pressure -- --include-ignored` as root
//! (`cargo xtask test`). Only loopback and network namespaces the tests create
//! are used.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread::sleep,
    time::{Duration, Instant},
};

use super::{
    gomaxprocs::status_cpus_allowed, netns::in_net_namespace, ports, read_host_in_net_namespace,
    CgroupMounts, CgroupVersion, GoRuntimeHints, GomaxprocsSource, PortCountMethod, ProcessReader,
};

const READY_WITHIN: Duration = Duration::from_secs(60);

/// A child process that prints a line starting with "ready" once its condition
/// holds; killed on drop.
struct Workload {
    what: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Workload {
    fn start(what: &'static str, command: &mut Command) -> Workload {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {what} ({command:?}): {error}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Workload { what, child, lines }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's "ready ..." line, split in words after "ready".
    fn ready(&self) -> Vec<String> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with("ready") => {
                    return line.split_whitespace().skip(1).map(String::from).collect();
                }
                Ok(_) => {}
                Err(error) => panic!(
                    "{}: no \"ready\" line within {READY_WITHIN:?} ({error:?}; see its stderr)",
                    self.what
                ),
            }
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python(what: &'static str, prefix: &[&str], script: &str) -> Workload {
    let (program, args) = prefix.split_first().map_or(("python3", &[][..]), |(p, a)| (*p, a));
    let mut command = Command::new(program);
    command.args(args);
    if !prefix.is_empty() {
        command.arg("python3");
    }
    Workload::start(what, command.args(["-c", script]))
}

fn own_cpus() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status_cpus_allowed(&status).expect("Cpus_allowed_list")
}

const GO_1_25: GoRuntimeHints<'static> =
    GoRuntimeHints { version: Some("go1.25.1"), default_godebug: None };

#[test]
#[ignore = "privileged: starts processes at their limits; run `cargo xtask test` as root"]
fn max_fds_reads_the_soft_nofile_limit() {
    let workload = Workload::start(
        "sleep with RLIMIT_NOFILE 64",
        Command::new("prlimit").args(["--nofile=64:64", "sh", "-c", "echo ready; exec sleep 30"]),
    );
    workload.ready();
    let pressure = ProcessReader::new().read_process(workload.pid(), GO_1_25);
    assert_eq!(pressure.max_fds, Some(64), "{pressure:?}");
    assert!(pressure.open_fds.unwrap() < 64, "{pressure:?}");
}

#[test]
#[ignore = "privileged: starts processes at their limits; run `cargo xtask test` as root"]
fn open_fds_equal_max_fds_at_emfile() {
    let workload = python(
        "python opening /dev/null until EMFILE",
        &["prlimit", "--nofile=64:64"],
        r#"
import errno, os, time
# RLIMIT_NOFILE bounds fd numbers, not their count: an fd above 63 inherited
# from the test harness would stay open and count too.
os.closerange(3, 1 << 16)
fds = []
try:
    while True:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    assert e.errno == errno.EMFILE, e
print("ready", len(fds), flush=True)
time.sleep(60)
"#,
    );
    workload.ready();
    let pressure = ProcessReader::new().read_process(workload.pid(), GO_1_25);
    assert_eq!(pressure.max_fds, Some(64), "{pressure:?}");
    assert_eq!(pressure.open_fds, pressure.max_fds, "{pressure:?}");
}

#[test]
#[ignore = "privileged: starts processes at their limits; run `cargo xtask test` as root"]
fn ten_thousand_vmas_are_counted() {
    const PAGES: usize = 10_000;
    let workload = python(
        "python with 2 x 10 000 alternating VMAs",
        &[],
        &format!(
            r#"
import ctypes, mmap, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
page, n = mmap.PAGESIZE, {PAGES}
base = libc.mmap(None, 2 * n * page, mmap.PROT_READ | mmap.PROT_WRITE,
                 mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
assert base not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
# Every other page read-only: neighbours differ, so none merge.
for i in range(n):
    if libc.mprotect(base + 2 * i * page, page, mmap.PROT_READ) != 0:
        raise OSError(ctypes.get_errno(), "mprotect")
print("ready", flush=True)
time.sleep(60)
"#
        ),
    );
    workload.ready();
    let pressure = ProcessReader::new().read_process(workload.pid(), GO_1_25);
    let vmas = pressure.vmas.expect("vmas");
    assert!(vmas >= 2 * PAGES as u64, "{vmas} VMAs, expected at least {}", 2 * PAGES);
}

/// The namespace decision (see netns.rs): read_host runs on a thread that
/// joined the namespace of a child made by `unshare --net`.
#[test]
#[ignore = "privileged: creates a network namespace; run `cargo xtask test` as root"]
fn ephemeral_ports_used_reach_the_range_in_a_namespace() {
    let workload = python(
        "python exhausting 40000-40099 in a new network namespace",
        &["unshare", "--net"],
        r#"
import errno, socket, subprocess, time
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
    f.write("40000 40099")
listener = socket.socket()
listener.bind(("127.0.0.1", 5000))
listener.listen(1024)
clients, servers = [], []
while True:
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", 5000))
    except OSError as e:
        s.close()
        if e.errno == errno.EADDRNOTAVAIL:
            break
        raise
    clients.append(s)
    servers.append(listener.accept()[0])
# 10 TIME_WAIT sockets: the client closes first, then the server.
for s in clients[:10]:
    s.close()
for s in servers[:10]:
    s.close()
print("ready", len(clients), flush=True)
time.sleep(120)
"#,
    );
    let connected: u64 = workload.ready()[0].parse().expect("connection count");
    let namespace = PathBuf::from(format!("/proc/{}/ns/net", workload.pid()));

    // The last FIN/ACK exchange is asynchronous: wait for the TIME_WAITs.
    let deadline = Instant::now() + Duration::from_secs(10);
    let host = loop {
        let host = read_host_in_net_namespace(&namespace).expect("joining the namespace");
        if host.tcp_time_wait >= Some(10) || Instant::now() > deadline {
            break host;
        }
        sleep(Duration::from_millis(50));
    };
    assert_eq!(host.ephemeral_port_range, Some((40000, 40099)), "{host:?}");
    assert_eq!(host.ephemeral_ports, Some(100), "{host:?}");
    assert_eq!(host.port_count_method, Some(PortCountMethod::Netlink), "{host:?}");
    assert_eq!(connected, 100, "connect() failed with EADDRNOTAVAIL after {connected}");
    assert_eq!(host.ephemeral_ports_used, Some(100), "{host:?}");
    assert!(host.tcp_time_wait >= Some(10), "{host:?}");
    assert_eq!(host.conntrack_entries.is_some(), host.conntrack_max.is_some(), "{host:?}");

    // The fallback sees the same sockets.
    let proc = in_net_namespace(&namespace, || ports::count_proc_net_tcp(40000, 40099))
        .expect("joining the namespace")
        .expect("/proc/net/tcp");
    assert_eq!(proc.ports_used, 100);
    assert_eq!(Some(proc.time_wait), host.tcp_time_wait);
}

/// Both ways of counting ports over ~10 000 loopback sockets: same numbers,
/// and the time each takes (printed; cost is not asserted in tests).
#[test]
#[ignore = "privileged: creates a network namespace; run `cargo xtask test` as root"]
fn netlink_and_proc_agree_at_10k_sockets() {
    const CONNECTIONS: u64 = 5_000;
    let workload = python(
        "python holding 5 000 loopback connections in a new network namespace",
        &["unshare", "--net"],
        &format!(
            r#"
import resource, socket, subprocess, time
resource.setrlimit(resource.RLIMIT_NOFILE, (12000, 12000))
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
listener = socket.socket()
listener.bind(("127.0.0.1", 5000))
listener.listen(4096)
held = []
for _ in range({CONNECTIONS}):
    client = socket.socket()
    client.connect(("127.0.0.1", 5000))
    held.append(client)
    held.append(listener.accept()[0])
print("ready", len(held), flush=True)
time.sleep(120)
"#
        ),
    );
    workload.ready();
    let namespace = PathBuf::from(format!("/proc/{}/ns/net", workload.pid()));
    let (low, high) = (32768, 60999); // a new namespace's default range
    let (netlink_times, proc_times, netlink, proc) = in_net_namespace(&namespace, || {
        let (mut netlink_times, mut proc_times) = (Vec::new(), Vec::new());
        let (mut netlink, mut proc) = (None, None);
        // ABBA: neither method always runs with warm caches.
        for round in 0..8 {
            for netlink_turn in if round % 2 == 0 { [true, false] } else { [false, true] } {
                let started = Instant::now();
                if netlink_turn {
                    netlink = Some(ports::count_netlink(low, high).expect("netlink"));
                    netlink_times.push(started.elapsed());
                } else {
                    proc = Some(ports::count_proc_net_tcp(low, high).expect("/proc/net/tcp"));
                    proc_times.push(started.elapsed());
                }
            }
        }
        (netlink_times, proc_times, netlink.unwrap(), proc.unwrap())
    })
    .expect("joining the namespace");

    assert_eq!(netlink, proc, "both methods see the same sockets");
    assert_eq!(netlink.sockets, 2 * CONNECTIONS + 1, "clients, accepted, listener");
    assert_eq!(netlink.ports_used, CONNECTIONS, "one ephemeral port per client");
    let spread = |times: &mut Vec<Duration>| {
        times.sort();
        format!(
            "min {:?} median {:?} max {:?}",
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        )
    };
    eprintln!(
        "{} TCP sockets: netlink {}; /proc/net/tcp{{,6}} {}",
        netlink.sockets,
        spread(&mut netlink_times.clone()),
        spread(&mut proc_times.clone())
    );
}

/// A cgroup made for one test, removed (after its process is killed) on drop.
struct TestCgroup {
    dir: PathBuf,
    workload: Option<Workload>,
}

impl TestCgroup {
    fn create(parent: &Path) -> Result<TestCgroup, String> {
        let dir = parent.join(format!("golens-test-pressure-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(TestCgroup { dir, workload: None })
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        std::fs::write(self.dir.join(file), value)
            .map_err(|e| format!("writing {value:?} to {}/{file}: {e}", self.dir.display()))
    }

    /// A busy loop moved into the cgroup.
    fn start_busy(&mut self) -> u32 {
        let workload = Workload::start(
            "busy loop",
            Command::new("sh").args(["-c", "echo ready; while :; do :; done"]),
        );
        workload.ready();
        let pid = workload.pid();
        self.workload = Some(workload);
        self.write("cgroup.procs", &pid.to_string()).expect("moving the busy loop");
        pid
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        drop(self.workload.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
    }
}

/// Quota 0.5 cores, throttled time growing, and Go's default GOMAXPROCS
/// under that quota.
fn assert_half_a_core(cgroup: &mut TestCgroup, version: CgroupVersion) {
    let pid = cgroup.start_busy();
    let reader = ProcessReader::new();
    let first = reader.read_process(pid, GO_1_25);
    assert_eq!(first.cpu_quota_source, Some(version), "{first:?}");
    assert_eq!(first.cpu_quota_cores, Some(0.5), "{first:?}");
    let cpus = own_cpus();
    let expected = if cpus >= 2 {
        (2, GomaxprocsSource::GoDefaultCgroup)
    } else {
        (cpus, GomaxprocsSource::GoDefaultCpus)
    };
    assert_eq!((first.gomaxprocs, first.gomaxprocs_source), (Some(expected.0), Some(expected.1)));
    let go_1_24 = GoRuntimeHints { version: Some("go1.24.9"), default_godebug: None };
    let older = reader.read_process(pid, go_1_24);
    assert_eq!(older.gomaxprocs, Some(cpus), "Go 1.24 ignores the quota: {older:?}");
    let opted_out = GoRuntimeHints { default_godebug: Some("containermaxprocs=0"), ..GO_1_25 };
    assert_eq!(reader.read_process(pid, opted_out).gomaxprocs, Some(cpus));

    let throttled = first.cpu_throttled_seconds.expect("throttled seconds");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = reader.read_process(pid, GO_1_25).cpu_throttled_seconds.expect("throttled");
        if now > throttled {
            break;
        }
        assert!(Instant::now() < deadline, "throttled time stuck at {throttled} s for 10 s");
        sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "privileged: creates a cgroup; run `cargo xtask test` as root"]
fn cgroup_v2_quota_and_throttling() {
    let mounts = CgroupMounts::read();
    let Some(root) = mounts.v2_root() else {
        eprintln!("skipped: no cgroup v2 mount in /proc/self/mountinfo");
        return;
    };
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "cpu") {
        eprintln!(
            "skipped: the cpu controller is not available in cgroup v2 at {} (bound to v1 on this \
             hybrid host: {controllers:?})",
            root.display()
        );
        return;
    }
    if let Err(error) = std::fs::write(root.join("cgroup.subtree_control"), "+cpu") {
        eprintln!("skipped: enabling the cpu controller under {}: {error}", root.display());
        return;
    }
    let mut cgroup = match TestCgroup::create(root) {
        Ok(cgroup) => cgroup,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    cgroup.write("cpu.max", "50000 100000").expect("setting cpu.max");
    assert_half_a_core(&mut cgroup, CgroupVersion::V2);
}

#[test]
#[ignore = "privileged: creates a cgroup; run `cargo xtask test` as root"]
fn cgroup_v1_quota_and_throttling() {
    let mounts = CgroupMounts::read();
    let Some(root) = mounts.v1_cpu_root() else {
        eprintln!("skipped: no cgroup v1 hierarchy with the cpu controller");
        return;
    };
    let mut cgroup = match TestCgroup::create(root) {
        Ok(cgroup) => cgroup,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    cgroup.write("cpu.cfs_period_us", "100000").expect("setting the period");
    cgroup.write("cpu.cfs_quota_us", "50000").expect("setting the quota");
    assert_half_a_core(&mut cgroup, CgroupVersion::V1);
}

/// Not privileged: a child of this test with GOMAXPROCS in its environment.
#[test]
fn gomaxprocs_from_the_environment() {
    let start = |value: &str| {
        Workload::start(
            "sleep with GOMAXPROCS",
            // "ready" from the program itself, after its exec: /proc/PID/environ
            // read while a shell execs is briefly empty.
            Command::new("python3")
                .args(["-c", "import time; print('ready', flush=True); time.sleep(30)"])
                .env("GOMAXPROCS", value),
        )
    };
    let reader = ProcessReader::new();
    let workload = start("3");
    workload.ready();
    let pressure = reader.read_process(workload.pid(), GoRuntimeHints::default());
    assert_eq!(pressure.gomaxprocs, Some(3), "{pressure:?}");
    assert_eq!(pressure.gomaxprocs_source, Some(GomaxprocsSource::Env));

    // "0" is ignored by the runtime: the version's default applies.
    let workload = start("0");
    workload.ready();
    let go_1_21 = GoRuntimeHints { version: Some("go1.21.13"), default_godebug: None };
    let pressure = reader.read_process(workload.pid(), go_1_21);
    assert_eq!(pressure.gomaxprocs, Some(own_cpus()), "{pressure:?}");
    assert_eq!(pressure.gomaxprocs_source, Some(GomaxprocsSource::GoDefaultCpus));
}
