//! CPU and memory limits of a process's cgroups, seen as the process itself
//! sees them (as the Go runtime does): its /proc/PID/cgroup, its
//! /proc/PID/mountinfo, and the files under /proc/PID/root. That works for a
//! process in a container (its own mount and cgroup namespaces) as for one on
//! the host.
//!
//! Both hierarchies are handled, and both at once on hybrid hosts (v1
//! controllers under /sys/fs/cgroup/<controller>, a v2 `unified` mount):
//! v2 `cpu.max` and `memory.max`, v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`
//! and `memory.limit_in_bytes`. A limit on any ancestor applies too, so the
//! walk goes up to the hierarchy's mount point and keeps the tightest.

use crate::pressure::cgroup::unescape;
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::facts::{CpuLimit, CpuQuota, MemoryLimit, Reading, Unreadable};

/// A cgroup file system in a process's mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted, e.g. "/sys/fs/cgroup/cpu".
    pub mount_point: String,
    /// The cgroup the mount shows as its root ("/" unless bind-mounted from deeper).
    pub root: String,
    /// Empty for cgroup v2; the controllers of a v1 hierarchy ("cpu", "cpuacct", …).
    pub controllers: Vec<String>,
    pub v2: bool,
}

/// The cgroup mounts of /proc/PID/mountinfo:
/// `36 24 0:31 / /sys/fs/cgroup/cpu rw,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct`.
pub fn mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let before: Vec<&str> = before.split_whitespace().collect();
            let mut after = after.split_whitespace();
            let fs_type = after.next()?;
            let _source = after.next()?;
            let super_options = after.next().unwrap_or("");
            let (root, mount_point) = (unescape(before.get(3)?), unescape(before.get(4)?));
            match fs_type {
                "cgroup2" => {
                    Some(CgroupMount { mount_point, root, controllers: Vec::new(), v2: true })
                }
                "cgroup" => Some(CgroupMount {
                    mount_point,
                    root,
                    controllers: super_options.split(',').map(str::to_string).collect(),
                    v2: false,
                }),
                _ => None,
            }
        })
        .collect()
}

/// One line of /proc/PID/cgroup: `4:memory:/kubepods/pod…` (v1) or `0::/system.slice/x` (v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub controllers: Vec<String>,
    pub path: String,
    pub v2: bool,
}

pub fn proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let id = fields.next()?;
            let controllers = fields.next()?;
            let path = fields.next()?.to_string();
            let v2 = id == "0" && controllers.is_empty();
            let controllers =
                controllers.split(',').filter(|c| !c.is_empty()).map(str::to_string).collect();
            Some(Membership { controllers, path, v2 })
        })
        .collect()
}

/// A cgroup directory of a process, as a path in the process's own view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    /// The process's cgroup, e.g. "/sys/fs/cgroup/cpu/app".
    pub leaf: PathBuf,
    /// The hierarchy's mount point: the walk up stops there.
    pub top: PathBuf,
    pub v2: bool,
}

/// The directories that may hold `controller`'s limits for this process:
/// its v1 hierarchy with that controller, and its v2 hierarchy (where the
/// controller's files exist only if it is enabled).
pub fn dirs_for(
    controller: &str,
    memberships: &[Membership],
    mounts: &[CgroupMount],
) -> Vec<CgroupDir> {
    let mut dirs = Vec::new();
    for membership in memberships {
        let mount = mounts.iter().find(|mount| {
            if membership.v2 {
                mount.v2
            } else {
                !mount.v2
                    && membership.controllers.iter().any(|c| c == controller)
                    && mount.controllers.iter().any(|c| c == controller)
            }
        });
        let Some(mount) = mount else { continue };
        // A mount of a sub-tree (containers without a cgroup namespace) shows
        // the process's path relative to that sub-tree.
        let relative = if mount.root == "/" {
            Some(membership.path.as_str())
        } else {
            membership
                .path
                .strip_prefix(mount.root.as_str())
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        let Some(relative) = relative else { continue };
        let top = PathBuf::from(&mount.mount_point);
        let leaf = top.join(relative.trim_start_matches('/'));
        dirs.push(CgroupDir { leaf, top, v2: membership.v2 });
    }
    dirs
}

/// cgroup v2 cpu.max: "max 100000" (no limit) or "50000 100000".
pub fn cpu_max(text: &str) -> Option<Option<(u64, u64)>> {
    let mut fields = text.split_whitespace();
    let quota = fields.next()?;
    let period = fields.next().map_or(Some(100_000), |p| p.parse().ok())?;
    match quota {
        "max" => Some(None),
        quota => Some(Some((quota.parse().ok()?, period))),
    }
}

/// cgroup v1 cpu.cfs_quota_us ("-1": no limit) and cpu.cfs_period_us.
pub fn cfs_quota(quota: &str, period: &str) -> Option<Option<(u64, u64)>> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: u64 = period.trim().parse().ok()?;
    Some((quota > 0).then_some((quota as u64, period)))
}

/// cgroup v2 memory.max: "max" or bytes.
pub fn memory_max(text: &str) -> Option<Option<u64>> {
    match text.trim() {
        "max" => Some(None),
        bytes => bytes.parse().ok().map(Some),
    }
}

/// Values at or above this in v1 memory.limit_in_bytes mean "no limit"
/// (the kernel shows PAGE_COUNTER_MAX pages, e.g. 9223372036854771712).
const V1_UNLIMITED: u64 = 1 << 62;

/// cgroup v1 memory.limit_in_bytes.
pub fn memory_limit_in_bytes(text: &str) -> Option<Option<u64>> {
    let bytes: u64 = text.trim().parse().ok()?;
    Some((bytes < V1_UNLIMITED).then_some(bytes))
}

/// The CPU and memory limits of process `pid`, reading `<proc_pid>/cgroup`,
/// `<proc_pid>/mountinfo` and the cgroup files under `<proc_pid>/root`.
pub fn limits(proc_pid: &Path) -> (Reading<CpuLimit>, Reading<Option<MemoryLimit>>) {
    let read = |name: &str| -> Reading<String> {
        let path = proc_pid.join(name);
        fs::read_to_string(&path).map_err(|e| Unreadable::io(&path, &e))
    };
    let (memberships, mounts) = match (read("cgroup"), read("mountinfo")) {
        (Ok(cgroup), Ok(mounts)) => (proc_cgroup(&cgroup), mountinfo(&mounts)),
        (Err(error), _) | (_, Err(error)) => return (Err(error.clone()), Err(error)),
    };
    let view = proc_pid.join("root");
    let cpu = cpu_limit(&view, &dirs_for("cpu", &memberships, &mounts));
    let memory = memory_limit(&view, &dirs_for("memory", &memberships, &mounts));
    (cpu, memory)
}

fn cpu_limit(view: &Path, dirs: &[CgroupDir]) -> Reading<CpuLimit> {
    let mut limit = CpuLimit::default();
    for dir in dirs {
        for (level, cgroup) in ancestors(dir).enumerate() {
            let Some(quota) = quota_at(view, cgroup, dir.v2)? else { continue };
            if level == 0 && limit.leaf.as_ref().is_none_or(|leaf| quota.cpus() < leaf.cpus()) {
                limit.leaf = Some(quota.clone());
            }
            if limit.tightest.as_ref().is_none_or(|tightest| quota.cpus() < tightest.cpus()) {
                limit.tightest = Some(quota);
            }
        }
    }
    Ok(limit)
}

/// The CPU quota set on one cgroup; `None` without one (or without the
/// controller's files there).
fn quota_at(view: &Path, cgroup: &Path, v2: bool) -> Reading<Option<CpuQuota>> {
    let (parsed, file) = if v2 {
        let Some((text, file)) = read_optional(view, &cgroup.join("cpu.max"))? else {
            return Ok(None);
        };
        let parsed = cpu_max(&text);
        (parsed.ok_or_else(|| malformed(view, &file, "`max 100000` or `QUOTA PERIOD`"))?, file)
    } else {
        let Some((quota, file)) = read_optional(view, &cgroup.join("cpu.cfs_quota_us"))? else {
            return Ok(None);
        };
        let period = read_optional(view, &cgroup.join("cpu.cfs_period_us"))?;
        let parsed = cfs_quota(&quota, &period.map(|(text, _)| text).unwrap_or_default());
        (
            parsed
                .ok_or_else(|| malformed(view, &file, "cfs_quota_us and cfs_period_us numbers"))?,
            file,
        )
    };
    Ok(parsed.map(|(quota_us, period_us)| CpuQuota { quota_us, period_us, file }))
}

/// Parses a memory limit file: `Some(None)` is "no limit".
type LimitParser = fn(&str) -> Option<Option<u64>>;

fn memory_limit(view: &Path, dirs: &[CgroupDir]) -> Reading<Option<MemoryLimit>> {
    let mut tightest: Option<MemoryLimit> = None;
    for dir in dirs {
        let (name, parse): (&str, LimitParser) = if dir.v2 {
            ("memory.max", memory_max)
        } else {
            ("memory.limit_in_bytes", memory_limit_in_bytes)
        };
        for cgroup in ancestors(dir) {
            let Some((text, file)) = read_optional(view, &cgroup.join(name))? else { continue };
            let bytes =
                parse(&text).ok_or_else(|| malformed(view, &file, "a byte count or `max`"))?;
            if let Some(bytes) = bytes {
                if tightest.as_ref().is_none_or(|t| bytes < t.bytes) {
                    tightest = Some(MemoryLimit { bytes, file });
                }
            }
        }
    }
    Ok(tightest)
}

/// The process's cgroup, then each parent up to the hierarchy's mount point.
fn ancestors(dir: &CgroupDir) -> impl Iterator<Item = &Path> {
    dir.leaf.ancestors().take_while(move |path| path.starts_with(&dir.top))
}

/// Reads `<view><path>`; `None` when absent (the controller is not enabled
/// there). Returns the text and the path as the process sees it.
fn read_optional(view: &Path, path: &Path) -> Reading<Option<(String, String)>> {
    let full = view.join(path.strip_prefix("/").unwrap_or(path));
    match fs::read_to_string(&full) {
        Ok(text) => Ok(Some((text, path.display().to_string()))),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(Unreadable::io(&full, &error)),
    }
}

fn malformed(view: &Path, file: &str, expected: &str) -> Unreadable {
    Unreadable::malformed(&view.join(file.trim_start_matches('/')), expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
24 1 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
25 24 0:23 / /sys/fs/cgroup/cpu rw,relatime shared:5 - cgroup cgroup rw,cpu
26 24 0:24 / /sys/fs/cgroup/memory rw,relatime shared:6 - cgroup cgroup rw,memory
27 24 0:25 / /sys/fs/cgroup/unified rw,relatime shared:7 - cgroup2 cgroup2 rw
28 24 0:26 / /sys/fs/cgroup/name\\040with\\040space rw - cgroup cgroup rw,name=systemd
";

    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
4:memory:/process_api/d2d7
1:cpu:/golens-test
0::/
";

    #[test]
    fn mountinfo_finds_v1_and_v2_cgroup_mounts() {
        let mounts = mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[0].mount_point, "/sys/fs/cgroup/cpu");
        assert_eq!(mounts[0].controllers, ["rw", "cpu"]);
        assert!(!mounts[0].v2);
        assert!(mounts[2].v2);
        assert_eq!(mounts[2].mount_point, "/sys/fs/cgroup/unified");
        assert_eq!(mounts[3].mount_point, "/sys/fs/cgroup/name with space");
        assert!(mountinfo("garbage\n\n1 2 3 - cgroup2").is_empty());
    }

    #[test]
    fn proc_cgroup_lines() {
        let memberships = proc_cgroup(HYBRID_CGROUP);
        assert_eq!(memberships.len(), 4);
        assert_eq!(memberships[1].controllers, ["memory"]);
        assert_eq!(memberships[1].path, "/process_api/d2d7");
        assert!(memberships[3].v2 && memberships[3].controllers.is_empty());
        assert_eq!(memberships[3].path, "/");
        // A colon inside the path stays in the path.
        assert_eq!(proc_cgroup("0::/a:b")[0].path, "/a:b");
        assert!(proc_cgroup("no colons").is_empty());
    }

    #[test]
    fn dirs_on_a_hybrid_host() {
        let (memberships, mounts) = (proc_cgroup(HYBRID_CGROUP), mountinfo(HYBRID_MOUNTINFO));
        let cpu = dirs_for("cpu", &memberships, &mounts);
        assert_eq!(
            cpu,
            [
                CgroupDir {
                    leaf: "/sys/fs/cgroup/cpu/golens-test".into(),
                    top: "/sys/fs/cgroup/cpu".into(),
                    v2: false
                },
                CgroupDir {
                    leaf: "/sys/fs/cgroup/unified".into(),
                    top: "/sys/fs/cgroup/unified".into(),
                    v2: true
                },
            ]
        );
        let memory = dirs_for("memory", &memberships, &mounts);
        assert_eq!(memory[0].leaf, PathBuf::from("/sys/fs/cgroup/memory/process_api/d2d7"));
    }

    #[test]
    fn dirs_of_a_sub_tree_mount() {
        // Docker without a cgroup namespace: the container sees its own cgroup as the mount's root.
        let mounts = mountinfo("30 1 0:25 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let dirs = dirs_for("cpu", &proc_cgroup("0::/docker/abc\n"), &mounts);
        assert_eq!(dirs[0].leaf, PathBuf::from("/sys/fs/cgroup"));
        let dirs = dirs_for("cpu", &proc_cgroup("0::/docker/abcdef\n"), &mounts);
        assert!(dirs.is_empty(), "a sibling that shares a prefix is not below the mount");
    }

    #[test]
    fn limit_file_parsers() {
        assert_eq!(cpu_max("max 100000\n"), Some(None));
        assert_eq!(cpu_max("100000 100000\n"), Some(Some((100_000, 100_000))));
        assert_eq!(cpu_max("50000\n"), Some(Some((50_000, 100_000))));
        assert_eq!(cpu_max("lots 1"), None);
        assert_eq!(cpu_max(""), None);
        assert_eq!(cfs_quota("-1\n", "100000\n"), Some(None));
        assert_eq!(cfs_quota("150000\n", "100000\n"), Some(Some((150_000, 100_000))));
        assert_eq!(cfs_quota("x", "100000"), None);
        assert_eq!(cfs_quota("100000", ""), None);
        assert_eq!(memory_max("max\n"), Some(None));
        assert_eq!(memory_max("536870912\n"), Some(Some(512 << 20)));
        assert_eq!(memory_max("-"), None);
        assert_eq!(memory_limit_in_bytes("9223372036854771712\n"), Some(None));
        assert_eq!(memory_limit_in_bytes("536870912\n"), Some(Some(512 << 20)));
        assert_eq!(memory_limit_in_bytes("max"), None);
    }

    /// A fake /proc/PID with a process view under `root/`.
    fn fixture(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir()
            .join(format!("golens-doctor-cgroup-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for (path, text) in files {
            let path = dir.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn limits_walk_up_and_keep_the_tightest() {
        let proc_pid = fixture(
            "walk",
            &[
                ("cgroup", "1:cpu:/pod/app\n4:memory:/pod/app\n0::/pod/app\n"),
                ("mountinfo", HYBRID_MOUNTINFO),
                ("root/sys/fs/cgroup/cpu/pod/app/cpu.cfs_quota_us", "400000\n"),
                ("root/sys/fs/cgroup/cpu/pod/app/cpu.cfs_period_us", "100000\n"),
                ("root/sys/fs/cgroup/cpu/pod/cpu.cfs_quota_us", "150000\n"),
                ("root/sys/fs/cgroup/cpu/pod/cpu.cfs_period_us", "100000\n"),
                ("root/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n"),
                ("root/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n"),
                (
                    "root/sys/fs/cgroup/memory/pod/app/memory.limit_in_bytes",
                    "9223372036854771712\n",
                ),
                ("root/sys/fs/cgroup/memory/pod/memory.limit_in_bytes", "536870912\n"),
                // v2 without the cpu controller enabled: no cpu.max anywhere.
                ("root/sys/fs/cgroup/unified/pod/app/cgroup.procs", "42\n"),
            ],
        );
        let (cpu, memory) = limits(&proc_pid);
        let cpu = cpu.unwrap();
        assert_eq!(cpu.leaf.as_ref().map(CpuQuota::cpus), Some(4.0));
        assert_eq!(cpu.leaf.unwrap().file, "/sys/fs/cgroup/cpu/pod/app/cpu.cfs_quota_us");
        let tightest = cpu.tightest.unwrap();
        assert_eq!(tightest.cpus(), 1.5);
        assert_eq!(tightest.file, "/sys/fs/cgroup/cpu/pod/cpu.cfs_quota_us");
        let memory = memory.unwrap().unwrap();
        assert_eq!(memory.bytes, 512 << 20);
        assert_eq!(memory.file, "/sys/fs/cgroup/memory/pod/memory.limit_in_bytes");
        fs::remove_dir_all(proc_pid).unwrap();
    }

    #[test]
    fn limits_from_cgroup_v2() {
        let mountinfo = "27 1 0:25 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let proc_pid = fixture(
            "v2",
            &[
                ("cgroup", "0::/test\n"),
                ("mountinfo", mountinfo),
                ("root/sys/fs/cgroup/test/cpu.max", "100000 100000\n"),
                ("root/sys/fs/cgroup/test/memory.max", "max\n"),
            ],
        );
        let (cpu, memory) = limits(&proc_pid);
        let cpu = cpu.unwrap();
        assert_eq!(cpu.leaf, cpu.tightest);
        assert_eq!(cpu.leaf.unwrap().cpus(), 1.0);
        assert_eq!(memory.unwrap(), None);
        fs::remove_dir_all(proc_pid).unwrap();
    }

    #[test]
    fn limits_of_an_unreadable_or_malformed_process() {
        let (cpu, memory) = limits(Path::new("/nonexistent/proc/42"));
        assert!(cpu.is_err() && memory.is_err());
        let proc_pid = fixture(
            "bad",
            &[
                ("cgroup", "0::/\n"),
                ("mountinfo", "27 1 0:25 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"),
                ("root/sys/fs/cgroup/cpu.max", "garbage\n"),
            ],
        );
        let (cpu, memory) = limits(&proc_pid);
        assert!(cpu.unwrap_err().reason.contains("unexpected format"));
        assert_eq!(memory.unwrap(), None);
        fs::remove_dir_all(proc_pid).unwrap();
    }
}
