//! Container and pod identity from /proc/PID/cgroup, for the `container_id`
//! and `pod_uid` labels. Works for cgroup v1 and v2 lines and the usual
//! runtimes' layouts:
//!
//!   0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<64 hex>.scope
//!   4:memory:/kubepods/burstable/pod<uid>/<64 hex>
//!   0::/system.slice/docker-<64 hex>.scope        1:cpu:/docker/<64 hex>
//!   0::/machine.slice/libpod-<64 hex>.scope       (podman)   crio-<64 hex>.scope (CRI-O)
//!
//! Only ids are kept: bounded label values, never whole paths.

use std::fs;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerIdentity {
    /// 64 lowercase hex digits, as in Kubernetes' `containerID` and `docker ps --no-trunc`.
    pub container_id: Option<String>,
    /// The pod's UID with dashes (`kubectl get pod -o jsonpath='{.metadata.uid}'`).
    pub pod_uid: Option<String>,
}

pub fn read(pid: u32) -> ContainerIdentity {
    fs::read_to_string(format!("/proc/{pid}/cgroup")).map(|text| parse(&text)).unwrap_or_default()
}

/// Parses the contents of /proc/PID/cgroup. The v2 line (`0::`) wins; v1
/// lines fill in what it lacks.
pub fn parse(text: &str) -> ContainerIdentity {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_by_key(|line| !line.starts_with("0::"));
    let mut identity = ContainerIdentity::default();
    for line in lines {
        let Some(path) = line.splitn(3, ':').nth(2) else { continue };
        for component in path.split('/') {
            let name = component.trim_end_matches(".scope").trim_end_matches(".slice");
            if identity.container_id.is_none() {
                identity.container_id = container_id(name);
            }
            if identity.pod_uid.is_none() {
                identity.pod_uid = pod_uid(name);
            }
        }
        if identity.container_id.is_some() && identity.pod_uid.is_some() {
            break;
        }
    }
    identity
}

/// `<64 hex>` alone or after the runtime's prefix (`cri-containerd-`, `docker-`, …).
fn container_id(name: &str) -> Option<String> {
    let candidate = name.rsplit('-').next()?;
    (candidate.len() == 64 && candidate.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| candidate.to_ascii_lowercase())
}

/// `pod<uuid>` (v1) or `…-pod<uuid with underscores>` (systemd slices).
fn pod_uid(name: &str) -> Option<String> {
    let start = name.rfind("pod")? + 3;
    let uid = name[start..].replace('_', "-");
    let well_formed = uid.len() == 36
        && uid.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    well_formed.then(|| uid.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4c8b0f5e2a1d3c6b9e7f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d";
    const UID: &str = "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d";

    #[test]
    fn kubernetes_systemd_cgroup_v2() {
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope\n",
            UID.replace('-', "_")
        );
        let identity = parse(&text);
        assert_eq!(identity.container_id.as_deref(), Some(ID));
        assert_eq!(identity.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn kubernetes_cgroupfs_v1() {
        let text = format!("12:pids:/\n4:memory:/kubepods/burstable/pod{UID}/{ID}\n0::/\n");
        let identity = parse(&text);
        assert_eq!(identity.container_id.as_deref(), Some(ID));
        assert_eq!(identity.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn docker_podman_crio_without_pods() {
        for path in [
            format!("0::/system.slice/docker-{ID}.scope"),
            format!("1:cpu:/docker/{ID}"),
            format!("0::/machine.slice/libpod-{ID}.scope"),
            format!("0::/crio-{ID}.scope"),
        ] {
            let identity = parse(&path);
            assert_eq!(identity.container_id.as_deref(), Some(ID), "{path}");
            assert_eq!(identity.pod_uid, None, "{path}");
        }
    }

    #[test]
    fn host_processes_and_garbage_have_no_identity() {
        for text in [
            "0::/\n",
            "0::/user.slice/user-1000.slice/session-3.scope\n",
            "4:memory:/process_api/26e0a34c3b68aaa1d549ebc7c9563eef\n",
            "",
            "no colons at all",
            "0::/pod/podXYZ/pod12345678-1234-1234-1234-1234567890zz",
        ] {
            assert_eq!(parse(text), ContainerIdentity::default(), "{text:?}");
        }
    }
}
