//! The Kubernetes manifests of deploy/, read as the tests need them: the
//! container tests run golens with exactly what the DaemonSet declares, and
//! the deploy tests check the manifests against the agent.

use std::path::{Path, PathBuf};

use serde_json::Value;

pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every document of a deploy/ YAML file, as JSON values.
pub fn documents(file: &str) -> Vec<Value> {
    let path = deploy_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        })
        .collect()
}

/// The one document of `kind` in `file`.
pub fn document(file: &str, kind: &str) -> Value {
    let mut found: Vec<Value> = documents(file).into_iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "deploy/{file} should hold one {kind}");
    found.remove(0)
}

/// The container named `name` of a workload's pod template.
pub fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|containers| containers.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {}", workload["metadata"]["name"]))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(|i| i.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// What the golens container of the DaemonSet declares, as a container
/// runtime needs it.
#[derive(Debug, Clone)]
pub struct GolensContainer {
    pub args: Vec<String>,
    /// `securityContext.capabilities.add`, as Kubernetes spells them (`BPF`).
    pub capabilities: Vec<String>,
    pub drops_all_capabilities: bool,
    pub read_only_root: bool,
    pub allow_privilege_escalation: bool,
    pub run_as_user: Option<u64>,
    /// The Localhost seccomp profile's file name (`golens.json`).
    pub seccomp_localhost_profile: Option<String>,
    /// (host path, container path, read-only) of every hostPath volume mounted.
    pub host_mounts: Vec<(String, String, bool)>,
    pub container_port: u64,
    pub termination_grace_seconds: u64,
    pub host_pid: bool,
}

pub fn golens_container(file: &str, kind: &str) -> GolensContainer {
    let workload = document(file, kind);
    let pod = &workload["spec"]["template"]["spec"];
    let container = container(&workload, "golens");
    let security = &container["securityContext"];
    let seccomp = if security["seccompProfile"].is_object() {
        &security["seccompProfile"]
    } else {
        &pod["securityContext"]["seccompProfile"]
    };
    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    let host_mounts = container["volumeMounts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|mount| {
            let volume = volumes.iter().find(|v| v["name"] == mount["name"])?;
            Some((
                volume["hostPath"]["path"].as_str()?.to_string(),
                mount["mountPath"].as_str()?.to_string(),
                mount["readOnly"].as_bool().unwrap_or(false),
            ))
        })
        .collect();
    GolensContainer {
        args: strings(&container["args"]),
        capabilities: strings(&security["capabilities"]["add"]),
        drops_all_capabilities: strings(&security["capabilities"]["drop"]) == ["ALL"],
        read_only_root: security["readOnlyRootFilesystem"] == true,
        allow_privilege_escalation: security["allowPrivilegeEscalation"] != false,
        run_as_user: security["runAsUser"].as_u64(),
        seccomp_localhost_profile: (seccomp["type"] == "Localhost")
            .then(|| seccomp["localhostProfile"].as_str().map(String::from))
            .flatten(),
        host_mounts,
        container_port: container["ports"][0]["containerPort"].as_u64().expect("a container port"),
        termination_grace_seconds: pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30),
        host_pid: pod["hostPID"] == true,
    }
}

/// The shipped seccomp profile (deploy/seccomp-golens.json): what the
/// manifests' Localhost profile `golens.json` is installed from.
pub fn seccomp_profile_path() -> PathBuf {
    deploy_dir().join("seccomp-golens.json")
}
