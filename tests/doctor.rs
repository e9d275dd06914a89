//! `golens doctor` run as a real binary: on a fixture tree (every status,
//! deterministically), on this host (every check named, the exit status
//! consistent with the statuses), as an unprivileged user, and against a Go
//! process whose GOMAXPROCS exceeds its cgroup's CPU quota.

mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use common::{golens, ChildGuard};

/// The stable check ids, in output order: a contract (scripts match on them).
const CHECK_IDS: [&str; 14] = [
    "vm_max_map_count",
    "rlimit_nofile",
    "fs_file_max",
    "ip_local_port_range",
    "tcp_tw_reuse",
    "somaxconn",
    "conntrack",
    "transparent_hugepage",
    "clocksource",
    "ntp_sync",
    "vm_swappiness",
    "vm_overcommit_memory",
    "gomaxprocs",
    "gomemlimit",
];

const PER_PROCESS_CHECKS: [&str; 4] =
    ["vm_max_map_count", "rlimit_nofile", "gomaxprocs", "gomemlimit"];

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A JSON report and the exit status of the run that printed it.
struct JsonRun {
    json: serde_json::Value,
    exit: i32,
}

impl JsonRun {
    fn parse(output: Output) -> JsonRun {
        let text = String::from_utf8_lossy(&output.stdout);
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("doctor JSON ({e}):\n{text}\nstderr: {}", stderr(&output)));
        assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
        JsonRun { json, exit: output.status.code().expect("exit status") }
    }

    fn check(&self, id: &str) -> &serde_json::Value {
        self.checks()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no check {id} in {:#}", self.json))
    }

    fn checks(&self) -> &Vec<serde_json::Value> {
        self.json["checks"].as_array().expect("checks array")
    }

    fn statuses(&self) -> BTreeMap<String, String> {
        self.checks()
            .iter()
            .map(|c| (c["id"].as_str().unwrap().into(), c["status"].as_str().unwrap().into()))
            .collect()
    }

    /// The schema is stable and the exit status follows from the statuses.
    fn assert_consistent(&self) {
        assert_eq!(self.json["version"], 1, "{:#}", self.json);
        let ids: Vec<&str> = self.checks().iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, CHECK_IDS);
        for check in self.checks() {
            for field in ["status", "value", "why", "details"] {
                assert!(!check[field].is_null(), "{field} missing: {check}");
            }
            // A passing check has no fix; a warning or failure always has one
            // (an unknown one has a fix when there is something to do).
            match check["status"].as_str() {
                Some("pass") => assert!(check["fix"].is_null(), "{check}"),
                Some("warn" | "fail") => assert!(check["fix"].is_string(), "{check}"),
                Some("unknown") => {}
                other => panic!("status {other:?}: {check}"),
            }
        }
        let statuses: Vec<String> = self.statuses().into_values().collect();
        assert_eq!(
            self.exit,
            expected_exit(statuses.iter().map(String::as_str)),
            "{:#}",
            self.json
        );
        assert_eq!(self.json["exit_code"], self.exit);
    }
}

/// 2 with any fail, else 1 with any warn or unknown, else 0.
fn expected_exit<'a>(statuses: impl Iterator<Item = &'a str>) -> i32 {
    let statuses: Vec<&str> = statuses.collect();
    if statuses.contains(&"fail") {
        2
    } else if statuses.iter().any(|s| *s == "warn" || *s == "unknown") {
        1
    } else {
        0
    }
}

/// (status, id) of each check line of the text output: "[WARN]    gomaxprocs …".
fn text_statuses(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (tag, rest) = line.strip_prefix('[')?.split_once(']')?;
            Some((tag.to_lowercase(), rest.split_whitespace().next()?.to_string()))
        })
        .collect()
}

fn doctor(args: &[&str]) -> Output {
    golens().arg("doctor").args(args).output().expect("running golens doctor")
}

#[test]
fn help_names_formats_exit_status_and_privileges() {
    let output = doctor(&["--help"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let help = String::from_utf8_lossy(&output.stdout);
    for text in ["--format", "Exit status", "CAP_SYS_PTRACE", "no capability", "golens doctor"] {
        assert!(help.contains(text), "`golens doctor --help` lacks {text}:\n{help}");
    }
    assert!(!help.contains("--root"), "--root is for tests only:\n{help}");
    let output = doctor(&["--format", "yaml"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

/// Writes `files` (relative path, contents) under `dir`.
fn write_tree(dir: &Path, files: &[(&str, String)]) {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

/// A host laid out under a fixture root, with one "Go process" (pid 4242,
/// whose exe is a real Go binary) and one that is not Go (4243).
fn fixture_root() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("doctor-fixture-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  \
               timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 \
               00:00000000 00000000     0        0 12345 1\n";
    write_tree(
        &root,
        &[
            ("proc/sys/kernel/osrelease", "5.4.0-fixture\n".into()),
            ("proc/sys/vm/max_map_count", "65530\n".into()),
            ("proc/sys/fs/file-nr", "1000\t0\t100000\n".into()),
            ("proc/sys/net/ipv4/ip_local_port_range", "32768\t60999\n".into()),
            ("proc/sys/net/ipv4/tcp_tw_reuse", "0\n".into()),
            ("proc/sys/net/core/somaxconn", "128\n".into()),
            ("proc/net/netstat", "TcpExt: ListenOverflows\nTcpExt: 0\n".into()),
            ("proc/net/tcp", tcp.into()),
            ("proc/sys/net/netfilter/nf_conntrack_count", "95\n".into()),
            ("proc/sys/net/netfilter/nf_conntrack_max", "100\n".into()),
            ("sys/kernel/mm/transparent_hugepage/enabled", "[always] madvise never\n".into()),
            (
                "sys/kernel/mm/transparent_hugepage/defrag",
                "[always] defer defer+madvise madvise never\n".into(),
            ),
            ("sys/devices/system/clocksource/clocksource0/current_clocksource", "hpet\n".into()),
            (
                "sys/devices/system/clocksource/clocksource0/available_clocksource",
                "tsc hpet acpi_pm\n".into(),
            ),
            ("proc/sys/vm/swappiness", "60\n".into()),
            ("proc/meminfo", "MemTotal: 8000000 kB\nSwapTotal: 0 kB\n".into()),
            ("proc/sys/vm/overcommit_memory", "2\n".into()),
            // The Go process: 40000 VMAs of 65530, 3 fds of a soft limit of 4,
            // GOMAXPROCS=64 in a 1-CPU cgroup v2 with 512 MiB and no GOMEMLIMIT.
            ("proc/4242/comm", "fixture-go\n".into()),
            ("proc/4242/maps", "00400000-00401000 r-xp 0 0:0 0 /x\n".repeat(40_000)),
            ("proc/4242/fd/0", String::new()),
            ("proc/4242/fd/1", String::new()),
            ("proc/4242/fd/2", String::new()),
            (
                "proc/4242/limits",
                "Limit Soft Limit Hard Limit Units\nMax open files            4                    \
                 4096                 files\n"
                    .into(),
            ),
            ("proc/4242/environ", "PATH=/bin\0GOMAXPROCS=64\0".into()),
            ("proc/4242/status", "Name:\tfixture-go\nCpus_allowed_list:\t0-7\n".into()),
            ("proc/4242/cgroup", "0::/app\n".into()),
            ("proc/4242/mountinfo", "30 1 0:25 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n".into()),
            ("sys/fs/cgroup/app/cpu.max", "100000 100000\n".into()),
            ("sys/fs/cgroup/app/memory.max", "536870912\n".into()),
            ("proc/4243/comm", "not-go\n".into()),
            ("proc/4243/exe", "#!/bin/sh\n".into()),
        ],
    );
    let go_binary = common::build_workload("idle");
    std::os::unix::fs::symlink(&go_binary, root.join("proc/4242/exe")).unwrap();
    // The process's view of the file system is the fixture root itself.
    std::os::unix::fs::symlink("../..", root.join("proc/4242/root")).unwrap();
    root
}

#[test]
fn fixture_host_gives_each_status_and_exit_2() {
    let root = fixture_root();
    let root_arg = root.to_str().unwrap();
    let run = JsonRun::parse(doctor(&["--format", "json", "--root", root_arg]));
    run.assert_consistent();
    assert_eq!(run.exit, 2, "conntrack at 95 % fails: {:#}", run.json);
    assert_eq!(run.json["kernel"], "5.4.0-fixture");
    let go = run.json["go_processes"].as_array().unwrap();
    assert_eq!(go.len(), 1, "only pid 4242 is Go: {go:?}");
    assert_eq!(go[0]["pid"], 4242);
    assert_eq!(go[0]["go_version"], "go1.19.8");
    let statuses = run.statuses();
    let ntp = statuses["ntp_sync"].clone(); // this host's real clock
    let expected: BTreeMap<String, String> = [
        ("vm_max_map_count", "warn"),
        ("rlimit_nofile", "warn"),
        ("fs_file_max", "pass"),
        ("ip_local_port_range", "pass"),
        ("tcp_tw_reuse", "pass"),
        ("somaxconn", "warn"),
        ("conntrack", "fail"),
        ("transparent_hugepage", "warn"),
        ("clocksource", "warn"),
        ("ntp_sync", ntp.as_str()),
        ("vm_swappiness", "pass"),
        ("vm_overcommit_memory", "warn"),
        ("gomaxprocs", "warn"),
        ("gomemlimit", "warn"),
    ]
    .into_iter()
    .map(|(id, status)| (id.to_string(), status.to_string()))
    .collect();
    assert_eq!(statuses, expected);
    let gomaxprocs = run.check("gomaxprocs");
    let value = gomaxprocs["value"].as_str().unwrap();
    assert!(
        value.contains("pid 4242 (fixture-go): GOMAXPROCS 64 (from the environment) vs CPU quota 1.00 (/sys/fs/cgroup/app/cpu.max)"),
        "{value}"
    );
    assert!(gomaxprocs["fix"].as_str().unwrap().contains("GOMAXPROCS=1"));
    let gomemlimit = run.check("gomemlimit")["value"].as_str().unwrap().to_string();
    assert!(gomemlimit.contains("GOMEMLIMIT unset; cgroup memory limit 512 MiB"), "{gomemlimit}");
    let maps = run.check("vm_max_map_count")["value"].as_str().unwrap().to_string();
    assert!(maps.contains("limit 65530; pid 4242 (fixture-go): 40000 VMAs (61.0 %)"), "{maps}");
    let clock = run.check("clocksource")["fix"].as_str().unwrap().to_string();
    assert!(clock.starts_with("echo tsc > /sys/devices/system/clocksource"), "{clock}");

    // The text output says the same.
    let output = doctor(&["--root", root_arg]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{text}");
    let text_statuses: BTreeMap<String, String> =
        text_statuses(&text).into_iter().map(|(status, id)| (id, status)).collect();
    assert_eq!(text_statuses, expected, "{text}");
    assert!(text.contains("          fix: sysctl -w net.netfilter.nf_conntrack_max=200"), "{text}");
    assert!(text.trim_end().ends_with("exit status 2"), "{text}");
    std::fs::remove_dir_all(root).unwrap();
}

/// This host as it is, as whoever runs the tests (root under `cargo xtask test`).
#[test]
fn real_host_names_every_check_and_exits_by_its_statuses() {
    let run = JsonRun::parse(doctor(&["--format", "json"]));
    run.assert_consistent();
    for id in ["fs_file_max", "vm_overcommit_memory", "somaxconn", "ip_local_port_range"] {
        let value = run.check(id)["value"].as_str().unwrap().to_string();
        assert!(!value.contains("cannot read"), "{id} is readable by anyone: {value}");
    }

    let output = doctor(&[]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    let lines = text_statuses(&text);
    let ids: Vec<&str> = lines.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, CHECK_IDS, "{text}");
    let exit = expected_exit(lines.iter().map(|(status, _)| status.as_str()));
    assert_eq!(output.status.code(), Some(exit), "{text}");
    assert!(text.trim_end().ends_with(&format!("exit status {exit}")), "{text}");
}

/// Starts `binary` with `env` and waits for its first line ("ready").
fn start_with_env(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> ChildGuard {
    let mut child = Command::new(binary)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let guard = ChildGuard(child);
    assert!(matches!(lines.next(), Some(Ok(_))), "{} exited before it was ready", binary.display());
    std::thread::spawn(move || lines.for_each(drop));
    guard
}

#[test]
#[ignore = "privileged: needs root to drop to an unprivileged user; run `cargo xtask test`"]
fn as_nobody_it_runs_and_names_the_processes_it_cannot_read() {
    let workload = start_with_env(&common::build_workload("idle"), &[], &[]);
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(env!("CARGO_BIN_EXE_golens"))
        .args(["doctor", "--format", "json"])
        .output()
        .expect("setpriv (util-linux)");
    let run = JsonRun::parse(output);
    run.assert_consistent();
    let pid = workload.pid();
    let go = run.json["go_processes"].as_array().unwrap();
    assert!(go.iter().all(|p| p["pid"] != pid), "root's process read as nobody: {go:?}");
    let uninspected = run.json["uninspected_processes"].as_array().unwrap();
    assert!(uninspected.iter().any(|p| p["pid"] == pid), "{uninspected:?}");
    for id in PER_PROCESS_CHECKS {
        let check = run.check(id);
        assert_eq!(check["status"], "unknown", "{check:#}");
        let details: Vec<&str> =
            check["details"].as_array().unwrap().iter().filter_map(|d| d.as_str()).collect();
        let line = details.iter().find(|d| d.contains("not inspected")).expect("a details line");
        assert!(line.contains("permission denied reading /proc/PID/exe"), "{line}");
        assert!(check["fix"].as_str().unwrap().contains("CAP_SYS_PTRACE"), "{check:#}");
    }
    for id in ["fs_file_max", "vm_overcommit_memory", "somaxconn", "clocksource"] {
        let value = run.check(id)["value"].as_str().unwrap().to_string();
        assert!(!value.contains("cannot read"), "{id} is readable by nobody: {value}");
    }
}

#[test]
#[ignore = "privileged: creates a cgroup; run `cargo xtask test` as root"]
fn gomaxprocs_above_the_cgroup_cpu_quota_warns_for_that_pid() {
    let cgroup = match common::CpuLimitedCgroup::create("doctor") {
        Ok(cgroup) => cgroup,
        Err(reason) => {
            eprintln!("skipped: cannot create a cgroup with a CPU quota: {reason}");
            return;
        }
    };
    // Declared after the cgroup: killed (dropped) before the cgroup is removed.
    let workload = start_with_env(&common::build_workload("idle"), &[], &[("GOMAXPROCS", "64")]);
    cgroup.add(workload.pid());

    let run = JsonRun::parse(doctor(&["--format", "json"]));
    run.assert_consistent();
    let check = run.check("gomaxprocs");
    assert_eq!(check["status"], "warn", "{check:#}");
    let expected = format!(
        "pid {} (idle-1.19): GOMAXPROCS 64 (from the environment) vs CPU quota 1.00 ({})",
        workload.pid(),
        cgroup.quota_file.display()
    );
    let value = check["value"].as_str().unwrap();
    let details: Vec<&str> =
        check["details"].as_array().unwrap().iter().filter_map(|d| d.as_str()).collect();
    assert!(
        value.contains(&expected) || details.iter().any(|d| d.contains(&expected)),
        "expected `{expected}` in {check:#}"
    );
    assert!(check["fix"].as_str().unwrap().contains("GOMAXPROCS=1"), "{check:#}");
    assert!(run.exit >= 1);
}
