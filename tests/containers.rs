//! golens in real containers: its image (`cargo xtask image`, FROM scratch)
//! run by podman and runc exactly as deploy/daemonset.yaml declares it — the
//! capabilities, the seccomp profile, no_new_privs, a read-only root
//! filesystem, the BTF and tracefs mounts and the args, all parsed from the
//! manifest so that the two cannot drift — watching a Go service in its own
//! container, which runs as another user (uid 65534) like a real pod's.
//!
//! The images are built once per run of this file. Privileged: run by
//! `cargo xtask test` (as root), which installs podman, buildah and runc.
//!
//! Host quirks handled here, not in the manifests: podman's own default
//! ulimits need CAP_SYS_RESOURCE, which root lacks on some CI machines
//! (`default_ulimits = []` and `--ulimit host`), and crun refuses hosts with
//! hybrid cgroups (`--runtime runc`, which is also what most Kubernetes
//! nodes run).

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::OnceLock,
    thread::sleep,
    time::{Duration, Instant},
};

use common::{
    build_workload_with, catch_up, free_port, get,
    manifests::{self, GolensContainer},
    GcWorkload, GoBuild, Metrics,
};

const GO: &str = "1.27.3";
const GOLENS_IMAGE: &str = "localhost/golens:test";
const TARGET_IMAGE: &str = "localhost/golens-test-gcburn:test";
/// The target runs as this user, like a service in its own pod: reading its
/// process needs the capabilities a real node needs.
const TARGET_USER: &str = "65534:65534";

fn tmp() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("containers")
}

/// Builds both images once per run, and points podman at a containers.conf
/// without default ulimits.
fn images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        std::fs::create_dir_all(tmp()).unwrap();
        let conf = tmp().join("containers.conf");
        std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
        std::env::set_var("CONTAINERS_CONF", &conf);

        // The previous run's images would otherwise stay behind, untagged.
        for image in [GOLENS_IMAGE, TARGET_IMAGE] {
            let _ = Command::new("buildah").args(["rmi", "--force", image]).output();
        }
        // golens' image, made by `cargo xtask image` from this test's binary.
        let output = Command::new(env!("CARGO"))
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .args(["run", "-q", "-p", "xtask", "--", "image", "--binary"])
            .arg(env!("CARGO_BIN_EXE_golens"))
            .args(["--tag", GOLENS_IMAGE])
            .output()
            .expect("running cargo xtask image");
        assert_success(&output, "cargo xtask image");

        // The target: a static Go binary (CGO_ENABLED=0), alone in a scratch image.
        let gcburn =
            build_workload_with("gcburn", GO, GoBuild { stripped: true, ..GoBuild::default() });
        let container = buildah(&["from", "scratch"]);
        buildah(&["copy", "--quiet", &container, gcburn.to_str().unwrap(), "/gcburn"]);
        buildah(&["config", "--entrypoint", "[\"/gcburn\"]", "--user", TARGET_USER, &container]);
        buildah(&["commit", "--quiet", "--rm", &container, TARGET_IMAGE]);
    });
}

fn buildah(args: &[&str]) -> String {
    let output = Command::new("buildah").args(args).output().expect("buildah: cargo xtask setup");
    assert_success(&output, &format!("buildah {}", args.join(" ")));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn runc() -> String {
    ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"]
        .into_iter()
        .find(|path| Path::new(path).is_file())
        .expect("runc: run `cargo xtask setup`")
        .to_string()
}

fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(["--runtime", &runc()]);
    command
}

fn podman_output(args: &[&str]) -> String {
    let output = podman().args(args).output().expect("podman: run `cargo xtask setup`");
    assert_success(&output, &format!("podman {}", args.join(" ")));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn unique(what: &str) -> String {
    format!("golens-test-{what}-{}", std::process::id())
}

/// A Go service in its own container, as uid 65534: gcburn waiting for "go"
/// on stdin, then forcing 50 GC cycles and reporting the runtime's count.
struct Target {
    workload: Option<GcWorkload>,
    name: String,
}

impl Target {
    fn start(what: &str) -> Target {
        images();
        let name = unique(&format!("target-{what}"));
        let runc = runc();
        let workload = GcWorkload::start(
            Path::new("podman"),
            &[
                "--runtime",
                &runc,
                "run",
                "-i",
                "--rm",
                "--name",
                &name,
                "--ulimit",
                "host",
                "--network=none",
                TARGET_IMAGE,
                "-cycles",
                "50",
            ],
        );
        Target { workload: Some(workload), name }
    }

    /// Its pid on the host (what golens sees with hostPID).
    fn host_pid(&self) -> u32 {
        podman_output(&["inspect", "--format", "{{.State.Pid}}", &self.name]).parse().unwrap()
    }

    fn container_id(&self) -> String {
        podman_output(&["inspect", "--format", "{{.Id}}", &self.name])
    }

    fn run_cycles(&mut self) -> u64 {
        self.workload.as_mut().unwrap().run_cycles().gc_cycles
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.name]).output();
        drop(self.workload.take());
    }
}

/// How golens' container is run: the manifest's spec, and what a test changes.
struct Shape {
    spec: GolensContainer,
    /// `--pid=container:NAME` instead of the manifest's hostPID.
    pid_of: Option<String>,
    /// A seccomp profile file other than the shipped one.
    seccomp: Option<PathBuf>,
    capabilities: Vec<String>,
}

impl Shape {
    fn daemonset() -> Shape {
        let spec = manifests::golens_container("daemonset.yaml", "DaemonSet");
        assert!(spec.host_pid, "the DaemonSet runs in the node's pid namespace");
        Shape { capabilities: spec.capabilities.clone(), spec, pid_of: None, seccomp: None }
    }

    fn sidecar(target: &Target) -> Shape {
        let spec = manifests::golens_container("sidecar.yaml", "Deployment");
        assert!(!spec.host_pid, "the sidecar shares its pod's pid namespace only");
        Shape {
            capabilities: spec.capabilities.clone(),
            spec,
            pid_of: Some(target.name.clone()),
            seccomp: None,
        }
    }
}

/// A running golens container, removed on drop.
struct GolensContainerRun {
    name: String,
    base_url: String,
}

impl GolensContainerRun {
    fn start(what: &str, shape: &Shape) -> GolensContainerRun {
        images();
        let _tracefs = ensure_host_tracefs();
        let name = unique(what);
        let port = free_port();
        let spec = &shape.spec;
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--ulimit".into(),
            "host".into(),
            // Its own network namespace, as a pod's: the manifest's port, published.
            "-p".into(),
            format!("127.0.0.1:{port}:{}", spec.container_port),
            "--cap-drop=all".into(),
        ];
        args.push(match &shape.pid_of {
            Some(target) => format!("--pid=container:{target}"),
            None => "--pid=host".into(),
        });
        if !shape.capabilities.is_empty() {
            args.push(format!("--cap-add={}", shape.capabilities.join(",")));
        }
        let profile = spec.seccomp_localhost_profile.as_deref();
        assert_eq!(profile, Some("golens.json"), "the manifest's Localhost seccomp profile");
        let seccomp = shape.seccomp.clone().unwrap_or_else(manifests::seccomp_profile_path);
        args.push(format!("--security-opt=seccomp={}", seccomp.display()));
        if !spec.allow_privilege_escalation {
            args.push("--security-opt=no-new-privileges".into());
        }
        if spec.read_only_root {
            // Kubernetes adds no tmpfs to a read-only root; podman would.
            args.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
        }
        if let Some(uid) = spec.run_as_user {
            args.push(format!("--user={uid}"));
        }
        for (host, inside, read_only) in &spec.host_mounts {
            args.push(format!("--volume={host}:{inside}{}", if *read_only { ":ro" } else { "" }));
        }
        args.push(GOLENS_IMAGE.into());
        // The image's entrypoint is golens; these are the manifest's args.
        args.extend(spec.args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        podman_output(&args);
        let run = GolensContainerRun { name, base_url: format!("http://127.0.0.1:{port}") };
        run.wait_ready();
        run
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if get(&format!("{}/readyz", self.base_url)).is_some_and(|(code, _)| code == 200) {
                return;
            }
            let state = podman_output(&["inspect", "--format", "{{.State.Status}}", &self.name]);
            assert!(state == "running", "golens' container is {state}:\n{}", self.logs());
            assert!(Instant::now() < deadline, "golens not ready in 60 s:\n{}", self.logs());
            sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        let output = podman().args(["logs", &self.name]).output().expect("podman logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    fn metrics(&self) -> Metrics {
        let (code, body) = get(&format!("{}/metrics", self.base_url)).expect("scraping /metrics");
        assert_eq!(code, 200, "/metrics answered {code}: {body}");
        Metrics::parse(&body)
    }

    /// Polls /metrics until `done` holds; panics with the logs after `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + timeout;
        loop {
            let metrics = self.metrics();
            if done(&metrics) {
                return metrics;
            }
            assert!(Instant::now() < deadline, "{what}: not within {timeout:?}\n{}", self.logs());
            sleep(Duration::from_millis(200));
        }
    }

    /// `podman stop` with the manifest's grace period (SIGTERM, then SIGKILL
    /// as the kubelet does): golens' exit code and how long it took.
    fn stop(&self, grace_seconds: u64) -> (i64, Duration) {
        let started = Instant::now();
        podman_output(&["stop", "--time", &grace_seconds.to_string(), &self.name]);
        let elapsed = started.elapsed();
        let code = podman_output(&["inspect", "--format", "{{.State.ExitCode}}", &self.name]);
        (code.parse().expect("exit code"), elapsed)
    }

    fn memory_usage(&self) -> String {
        podman()
            .args(["stats", "--no-stream", "--format", "{{.MemUsage}}", &self.name])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .unwrap_or_default()
    }
}

impl Drop for GolensContainerRun {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.name]).output();
    }
}

/// The node's tracefs, which the manifests mount from the host: mounted
/// here when the host has none (as systemd's sys-kernel-tracing.mount does
/// on a node), and unmounted again on drop.
struct HostTracefs(bool);

fn ensure_host_tracefs() -> HostTracefs {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return HostTracefs(false);
    }
    let status = Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status()
        .expect("mount");
    assert!(status.success(), "mounting the host's tracefs failed");
    HostTracefs(true)
}

impl Drop for HostTracefs {
    fn drop(&mut self) {
        if self.0 {
            let _ = Command::new("umount").args(["-l", "/sys/kernel/tracing"]).status();
        }
    }
}

fn value(metrics: &Metrics, name: &str, pid: &str) -> f64 {
    metrics.value(name, &[("pid", pid)]).unwrap_or(0.0)
}

/// Forces the target's GC cycles and checks that golens counted exactly the
/// runtime's cycles, with run-queue samples, under the label `pid`.
fn assert_measures(golens: &GolensContainerRun, target: &mut Target, pid: &str) {
    let attached = |m: &Metrics| {
        m.value("golens_probe_attached", &[("pid", pid), ("probe", "gc_cycle_start")]) == Some(1.0)
    };
    golens.wait_for(
        &format!("runtime probes attached to pid {pid}"),
        Duration::from_secs(30),
        attached,
    );
    let before = golens.metrics();
    let runtime_cycles = target.run_cycles();
    catch_up(&golens.base_url);
    let after = golens.metrics();
    let cycles = value(&after, "golens_go_gc_cycles_total", pid)
        - value(&before, "golens_go_gc_cycles_total", pid);
    let runqueue = value(&after, "golens_sched_runqueue_latency_seconds_count", pid)
        - value(&before, "golens_sched_runqueue_latency_seconds_count", pid);
    println!("pid {pid}: runtime {runtime_cycles} GC cycles, golens {cycles}; {runqueue} run-queue samples");
    assert_eq!(
        cycles,
        runtime_cycles as f64,
        "GC cycles counted in the container\n{}",
        golens.logs()
    );
    assert!(runqueue > 0.0, "no run-queue sample for pid {pid}");
    // Every family, the syscall ones through the host's tracefs, and the
    // fds of a process of another user.
    for metric in ["golens_process_vmas_peak", "golens_process_open_fds"] {
        assert!(after.value(metric, &[("pid", pid)]).is_some(), "{metric} missing for pid {pid}");
    }
    assert_eq!(after.value("golens_agent_ebpf_available", &[]), Some(1.0));
}

/// The DaemonSet: hostPID, the manifest's capabilities, seccomp profile,
/// no_new_privs, read-only root, BTF and tracefs mounts and args; the
/// target is another container's process, seen by its host pid.
#[test]
#[ignore = "privileged: runs containers and loads eBPF programs; run `cargo xtask test` as root"]
fn daemonset_shape_measures_a_go_service_in_another_container() {
    let mut target = Target::start("ds");
    let shape = Shape::daemonset();
    let golens = GolensContainerRun::start("ds", &shape);
    let pid = target.host_pid().to_string();
    assert_measures(&golens, &mut target, &pid);
    let info = golens.metrics();
    let labels = &info.find("golens_process_info", &[("pid", &pid)]).expect("process info").labels;
    assert_eq!(labels.get("container_id"), Some(&target.container_id()), "container_id label");
    println!("golens' container memory: {}", golens.memory_usage());
    let (code, took) = golens.stop(shape.spec.termination_grace_seconds);
    println!(
        "SIGTERM -> exit {code} in {took:?} (grace {} s)",
        shape.spec.termination_grace_seconds
    );
    assert_eq!(
        code,
        0,
        "golens did not exit 0 on SIGTERM within the manifest's grace period\n{}",
        golens.logs()
    );
}

/// The sidecar: golens in the target's pid namespace (the pod's, with
/// shareProcessNamespace), where the target is pid 1.
#[test]
#[ignore = "privileged: runs containers and loads eBPF programs; run `cargo xtask test` as root"]
fn sidecar_shape_measures_the_go_service_of_its_pod() {
    let mut target = Target::start("sidecar");
    let shape = Shape::sidecar(&target);
    let golens = GolensContainerRun::start("sidecar", &shape);
    assert_measures(&golens, &mut target, "1");
    let metrics = golens.metrics();
    let pids: Vec<&String> = metrics
        .samples
        .iter()
        .filter(|s| s.name == "golens_process_info")
        .filter_map(|s| s.labels.get("pid"))
        .collect();
    assert_eq!(pids, ["1"], "the sidecar sees its pod's Go process only, as pid 1");
    let (code, _) = golens.stop(shape.spec.termination_grace_seconds);
    assert_eq!(code, 0, "golens did not exit 0 on SIGTERM\n{}", golens.logs());
}

/// Each capability of the manifest's set, dropped alone: golens says which
/// one is missing and what it costs, and that cost is real.
#[test]
#[ignore = "privileged: runs containers and loads eBPF programs; run `cargo xtask test` as root"]
fn each_capability_dropped_is_named() {
    let target = Target::start("caps");
    let pid = target.host_pid().to_string();
    let full = Shape::daemonset();
    assert!(full.spec.drops_all_capabilities, "the manifest drops every other capability");
    for dropped in &full.spec.capabilities {
        let mut shape = Shape::daemonset();
        shape.capabilities.retain(|c| c != dropped);
        let golens = GolensContainerRun::start(&format!("no-{}", dropped.to_lowercase()), &shape);
        let metrics = golens.metrics();
        let logs = golens.logs();
        let tracked = metrics.find("golens_process_info", &[("pid", &pid)]).is_some();
        let ebpf = metrics.value("golens_agent_ebpf_available", &[]);
        println!("without CAP_{dropped}: tracked {tracked}, eBPF {ebpf:?}");
        match dropped.as_str() {
            // Nothing can be loaded: degraded, the target still listed from /proc.
            "BPF" | "PERFMON" => {
                assert!(logs.contains(&format!("missing capability CAP_{dropped}")), "{logs}");
                assert_eq!(ebpf, Some(0.0), "eBPF without CAP_{dropped}");
                assert!(metrics.find("golens_go_gc_cycles_total", &[]).is_none());
            }
            // Other containers' executables cannot be read: the target is not watched.
            "SYS_PTRACE" => {
                assert!(logs.contains("no CAP_SYS_PTRACE"), "{logs}");
                assert_eq!(ebpf, Some(1.0));
                assert!(!tracked, "the target was read without CAP_SYS_PTRACE");
                let denied = metrics.value(
                    "golens_agent_discovery_errors_total",
                    &[("reason", "permission_denied")],
                );
                assert!(denied.is_some_and(|n| n >= 1.0), "permission_denied not counted");
            }
            // Another user's /proc/PID/fd cannot be listed: fds absent, the rest there.
            "DAC_READ_SEARCH" => {
                assert!(logs.contains("no CAP_DAC_READ_SEARCH"), "{logs}");
                assert_eq!(ebpf, Some(1.0));
                assert!(tracked, "the target is watched without CAP_DAC_READ_SEARCH");
                let fds = metrics.value("golens_process_open_fds", &[("pid", &pid)]);
                assert_eq!(fds, None, "fds of another user's process without CAP_DAC_READ_SEARCH");
            }
            other => panic!(
                "deploy/daemonset.yaml adds capability {other}, which this test does not know: \
                 say what it is for here (and in the README)"
            ),
        }
    }
}

/// The shipped profile less one system call, as a runtime's profile may be.
fn profile_without(syscall: &str, errno: u32) -> PathBuf {
    let text = std::fs::read_to_string(manifests::seccomp_profile_path()).unwrap();
    let mut profile: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rules = profile["syscalls"].as_array_mut().unwrap();
    for rule in rules.iter_mut() {
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|name| name != syscall);
        }
    }
    rules.push(
        serde_json::json!({"names": [syscall], "action": "SCMP_ACT_ERRNO", "errnoRet": errno}),
    );
    let path = tmp().join(format!("seccomp-without-{syscall}.json"));
    std::fs::write(&path, profile.to_string()).unwrap();
    path
}

/// A seccomp profile that blocks bpf() (as the runtime default profiles of
/// podman before containers-common 0.60 and containerd before 1.7 do for a
/// container without CAP_SYS_ADMIN) or perf_event_open(): golens names
/// seccomp and the system call, not just "Operation not permitted".
#[test]
#[ignore = "privileged: runs containers and loads eBPF programs; run `cargo xtask test` as root"]
fn a_seccomp_profile_that_blocks_a_syscall_is_named() {
    let target = Target::start("seccomp");
    let pid = target.host_pid().to_string();

    let mut shape = Shape::daemonset();
    shape.seccomp = Some(profile_without("bpf", 1)); // EPERM, as Docker's and containerd's say
    let golens = GolensContainerRun::start("no-bpf", &shape);
    let logs = golens.logs();
    assert!(logs.contains("the seccomp profile blocks bpf() (Operation not permitted"), "{logs}");
    assert!(logs.contains("deploy/seccomp-golens.json"), "{logs}");
    assert_eq!(golens.metrics().value("golens_agent_ebpf_available", &[]), Some(0.0));
    drop(golens);

    let mut shape = Shape::daemonset();
    shape.seccomp = Some(profile_without("perf_event_open", 38)); // ENOSYS, as containers-common says
    let golens = GolensContainerRun::start("no-perf", &shape);
    let logs = golens.logs();
    assert!(
        logs.contains(
            "are off: the seccomp profile blocks perf_event_open() (Function not implemented"
        ),
        "{logs}"
    );
    // The scheduler and runtime probes need no perf_event_open: still there.
    let metrics = golens.wait_for("the target watched", Duration::from_secs(30), |m| {
        m.value("golens_probe_attached", &[("pid", &pid), ("probe", "gc_cycle_start")]) == Some(1.0)
    });
    assert_eq!(metrics.value("golens_agent_ebpf_available", &[]), Some(1.0));
    assert!(metrics.value("golens_process_vmas_peak", &[("pid", &pid)]).is_none());
}

#[test]
#[ignore = "privileged: runs containers; run `cargo xtask test` as root"]
fn the_image_is_golens_alone_with_its_libraries_and_labelled() {
    images();
    let labels = podman_output(&["image", "inspect", "--format", "{{json .Labels}}", GOLENS_IMAGE]);
    let labels: serde_json::Value = serde_json::from_str(&labels).unwrap();
    assert_eq!(labels["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(labels["org.opencontainers.image.title"], "golens");
    // Nothing but golens, the libraries ldd lists and the loader: one layer,
    // no base image.
    let layers =
        podman_output(&["image", "inspect", "--format", "{{len .RootFS.Layers}}", GOLENS_IMAGE]);
    assert_eq!(layers, "1", "one layer, FROM scratch");
    let output = podman()
        .args(["run", "--rm", "--ulimit", "host", "--network=none", GOLENS_IMAGE, "--version"])
        .stdin(Stdio::null())
        .output()
        .expect("podman run");
    assert_success(&output, "golens --version in its image");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("golens {}", env!("CARGO_PKG_VERSION"))
    );
}
