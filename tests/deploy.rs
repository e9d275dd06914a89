//! deploy/: the manifests against the Kubernetes API schemas
//! (kubernetes-validate) and a security linter (checkov), the plain
//! Prometheus scrape config against promtool, and the fields that matter
//! against the agent: its flags, ports, endpoints, version, and the
//! capability list the README and the container tests use.
//!
//! Needs no privilege; kubernetes-validate and checkov come from the
//! virtual environment `cargo xtask setup` makes at target/venv.

mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use clap::Parser;
use common::manifests::{self, container, deploy_dir, document, documents, golens_container};
use serde_json::Value;

/// The Kubernetes manifests of deploy/.
const MANIFESTS: &[&str] = &["daemonset.yaml", "sidecar.yaml", "podmonitor.yaml"];
/// Oldest and newest Kubernetes versions the manifests are validated against.
const KUBERNETES_VERSIONS: &[&str] = &["1.29.0", "1.37.0"];

fn venv_tool(name: &str) -> PathBuf {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin").join(name);
    assert!(tool.is_file(), "{} is missing: run `cargo xtask setup`", tool.display());
    tool
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn manifests_match_the_kubernetes_schemas() {
    let tool = venv_tool("kubernetes-validate");
    for file in MANIFESTS {
        let path = deploy_dir().join(file);
        for version in KUBERNETES_VERSIONS {
            let output = Command::new(&tool)
                .args(["--strict", "--kubernetes-version", version])
                .arg(&path)
                .output()
                .expect("running kubernetes-validate");
            let report = text(&output);
            assert!(output.status.success(), "{file} against Kubernetes {version}:\n{report}");
            // Every document is either validated, or a custom resource whose
            // schema the tool does not ship (the Prometheus Operator's).
            for doc in documents(file) {
                let kind = doc["kind"].as_str().unwrap().to_lowercase();
                let name = doc["metadata"]["name"].as_str().unwrap();
                if doc["apiVersion"] == "monitoring.coreos.com/v1" {
                    continue;
                }
                assert!(
                    report.contains(&format!("passed for resource {kind}/{name}")),
                    "{file}: {kind}/{name} not validated against {version}:\n{report}"
                );
            }
            for line in report.lines().filter(|l| !l.starts_with("INFO")) {
                assert!(
                    line.contains("Couldn't find schema for kind PodMonitor"),
                    "{file} against Kubernetes {version}: {line}"
                );
            }
        }
    }
}

/// checkov's Kubernetes checks: none fails; every check skipped in a
/// manifest says why (a `checkov.io/skipN: CHECK=reason` annotation).
#[test]
fn checkov_finds_nothing_unjustified() {
    let output = Command::new(venv_tool("checkov"))
        .args(["--framework", "kubernetes", "--skip-download", "--output", "json"])
        .args(MANIFESTS.iter().flat_map(|file| ["--file".into(), deploy_dir().join(file)]))
        .env("ANSI_COLORS_DISABLED", "1")
        .output()
        .expect("running checkov");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("checkov's JSON ({e}):\n{}", text(&output)));
    let results = &report["results"];
    let summary = &report["summary"];
    let failed: Vec<String> = results["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!("{} {} ({}): {}", c["check_id"], c["resource"], c["file_path"], c["check_name"])
        })
        .collect();
    assert!(failed.is_empty(), "checkov findings to fix or justify:\n{}", failed.join("\n"));
    assert_eq!(summary["parsing_errors"], 0, "checkov could not parse a manifest: {summary}");
    assert!(summary["passed"].as_u64().unwrap_or(0) > 50, "checkov ran no checks: {summary}");
    let skipped = results["skipped_checks"].as_array().cloned().unwrap_or_default();
    for check in &skipped {
        let reason = check["check_result"]["suppress_comment"].as_str().unwrap_or("");
        assert!(reason.len() > 20, "{} skipped without a reason: {reason:?}", check["check_id"]);
    }
    println!(
        "checkov: {} passed, {} skipped with a reason, 0 failed",
        summary["passed"],
        skipped.len()
    );
}

/// The plain scrape config passes promtool. Debian's Prometheus is built
/// without the Kubernetes service discovery, so its job is checked with the
/// same relabelling on a file discovery instead.
#[test]
fn the_plain_scrape_config_passes_promtool() {
    let text_yaml = std::fs::read_to_string(deploy_dir().join("prometheus.yml")).unwrap();
    let mut config: Value = serde_norway::from_str(&text_yaml).expect("prometheus.yml is YAML");
    let mut kubernetes_jobs = 0;
    for job in config["scrape_configs"].as_array_mut().expect("scrape_configs") {
        if let Some(object) = job.as_object_mut() {
            if object.remove("kubernetes_sd_configs").is_some() {
                object.insert(
                    "file_sd_configs".into(),
                    serde_json::json!([{"files": ["pods.json"]}]),
                );
                kubernetes_jobs += 1;
            }
        }
    }
    assert_eq!(kubernetes_jobs, 1, "one job discovers the pods");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("prometheus.yml");
    // JSON is YAML.
    std::fs::write(&file, config.to_string()).unwrap();
    let output =
        Command::new("promtool").args(["check", "config"]).arg(&file).output().expect("promtool");
    assert!(output.status.success(), "promtool check config:\n{}", text(&output));
}

/// The flags of a golens container's args, as golens itself parses them.
fn run_args(args: &[String]) -> golens::cli::RunArgs {
    let cli = golens::cli::Cli::try_parse_from(
        std::iter::once("golens".to_string()).chain(args.iter().cloned()),
    )
    .unwrap_or_else(|e| panic!("golens rejects the manifest's args {args:?}: {e}"));
    match cli.command {
        Some(golens::cli::Command::Run(args)) => args,
        other => panic!("the manifest's args do not run the agent: {other:?}"),
    }
}

/// A pod template's port named `name` in its golens container.
fn port_named(golens: &Value, name: &str) -> u64 {
    golens["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no port named {name} in {golens}"))
}

#[test]
fn the_manifests_ask_the_agent_for_what_it_does() {
    let version = env!("CARGO_PKG_VERSION");
    let shapes = [("daemonset.yaml", "DaemonSet"), ("sidecar.yaml", "Deployment")];
    let mut capability_sets = BTreeSet::new();
    for (file, kind) in shapes {
        let workload = document(file, kind);
        let golens = container(&workload, "golens");
        let spec = golens_container(file, kind);
        // Every arg is one golens accepts, and it listens where the pod says.
        let args = run_args(&spec.args);
        assert_eq!(args.listen.ip().to_string(), "0.0.0.0", "{file}: reachable from Prometheus");
        assert_eq!(
            u64::from(args.listen.port()),
            spec.container_port,
            "{file}: --listen vs containerPort"
        );
        let annotations = &workload["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/port"], spec.container_port.to_string(), "{file}");
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{file}");
        // The probes ask golens' own endpoints, on its port.
        for (probe, path) in [
            ("startupProbe", "/readyz"),
            ("readinessProbe", "/readyz"),
            ("livenessProbe", "/healthz"),
        ] {
            let get = &golens[probe]["httpGet"];
            assert_eq!(get["path"], path, "{file}: {probe}");
            let port = get["port"].as_str().expect("a named port");
            assert_eq!(port_named(golens, port), spec.container_port, "{file}: {probe} port");
        }
        assert_eq!(
            golens["image"],
            format!("golens:{version}"),
            "{file}: the image of this version"
        );
        assert!(
            spec.drops_all_capabilities && spec.read_only_root && !spec.allow_privilege_escalation
        );
        assert_eq!(spec.seccomp_localhost_profile.as_deref(), Some("golens.json"), "{file}");
        let mounts: Vec<&str> = spec.host_mounts.iter().map(|(host, _, _)| host.as_str()).collect();
        assert_eq!(mounts, ["/sys/kernel/btf", "/sys/kernel/tracing"], "{file}");
        assert!(spec.host_mounts.iter().all(|(host, inside, ro)| host == inside && *ro), "{file}");
        capability_sets.insert(spec.capabilities.clone());
    }
    // One list: the DaemonSet's, the sidecar's, the README's (the container
    // tests run the DaemonSet's and drop each one).
    assert_eq!(
        capability_sets.len(),
        1,
        "the shapes ask for different capabilities: {capability_sets:?}"
    );
    let capabilities = capability_sets.into_iter().next().unwrap();
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let line = readme
        .lines()
        .find(|l| l.contains("securityContext.capabilities: {drop: [ALL], add: ["))
        .expect("the README gives the securityContext.capabilities list");
    let listed: Vec<String> = line
        .split_once("add: [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list.split(',').map(|c| c.trim().to_string()).collect())
        .unwrap();
    assert_eq!(listed, capabilities, "README vs deploy/ capabilities");
    for capability in &capabilities {
        assert!(
            readme.contains(&format!("**CAP_{capability}**")),
            "the README does not explain CAP_{capability}"
        );
    }
}

#[test]
fn the_pod_monitors_scrape_golens_port() {
    for (file, workload_file, kind) in [
        ("podmonitor.yaml", "daemonset.yaml", "DaemonSet"),
        ("sidecar.yaml", "sidecar.yaml", "Deployment"),
    ] {
        let monitor = document(file, "PodMonitor");
        let workload = document(workload_file, kind);
        assert_eq!(monitor["metadata"]["namespace"], workload["metadata"]["namespace"], "{file}");
        let pod_labels = &workload["spec"]["template"]["metadata"]["labels"];
        let selector = monitor["spec"]["selector"]["matchLabels"].as_object().expect("matchLabels");
        for (key, value) in selector {
            assert_eq!(&pod_labels[key], value, "{file}: the selector picks {kind}'s pods");
        }
        let endpoints = monitor["spec"]["podMetricsEndpoints"].as_array().expect("endpoints");
        assert_eq!(endpoints.len(), 1, "{file}");
        let golens = container(&workload, "golens");
        let port = endpoints[0]["port"].as_str().expect("a port name");
        assert_eq!(port_named(golens, port), 9477, "{file}: the endpoint is golens' port");
        assert_eq!(endpoints[0]["path"], "/metrics", "{file}");
    }
}

/// The shipped seccomp profile: valid JSON of the OCI format every runtime
/// reads (containerd, CRI-O, podman), an allowlist that lets golens do what
/// it must. The container tests run golens under it.
#[test]
fn the_seccomp_profile_is_an_allowlist_with_what_golens_needs() {
    let text = std::fs::read_to_string(manifests::seccomp_profile_path()).unwrap();
    let profile: Value = serde_json::from_str(&text).expect("seccomp-golens.json is JSON");
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO", "an allowlist");
    let allowed: BTreeSet<&str> = profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
        .flat_map(|rule| rule["names"].as_array().unwrap().iter().filter_map(Value::as_str))
        .collect();
    for needed in ["bpf", "perf_event_open", "getpgid", "openat", "readlink", "clone", "execve"] {
        assert!(allowed.contains(needed), "the profile blocks {needed}");
    }
    for refused in
        ["mount", "unshare", "setns", "ptrace", "process_vm_readv", "init_module", "kexec_load"]
    {
        assert!(
            !allowed.contains(refused),
            "the profile allows {refused}, which golens never needs"
        );
    }
}

/// Every YAML of deploy/ is one of the files these tests check.
#[test]
fn every_manifest_is_checked() {
    let mut files: Vec<String> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .collect();
    files.sort();
    let mut checked: Vec<String> =
        MANIFESTS.iter().map(|s| s.to_string()).chain(["prometheus.yml".to_string()]).collect();
    checked.sort();
    assert_eq!(files, checked);
}
