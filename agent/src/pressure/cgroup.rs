//! The CPU cgroup of a process: its quota in cores and its throttled time.
//!
//! The cgroup is found the way the Go runtime finds its own
//! (`internal/runtime/cgroup`, Go 1.25): a v1 hierarchy that holds the `cpu`
//! controller takes precedence; otherwise the v2 hierarchy. That covers the
//! three layouts in use:
//!
//! - pure v1: `/sys/fs/cgroup/cpu,cpuacct/` (or `cpu/`), cgroup paths from the
//!   `N:cpu,cpuacct:/path` line of /proc/PID/cgroup;
//! - hybrid: v1 controllers under `/sys/fs/cgroup/<controller>/` plus a v2
//!   `unified` mount that holds no controller (the `cpu` line is v1, so v1 wins);
//! - pure v2: `/sys/fs/cgroup` is the v2 root, path from the `0::/path` line.
//!
//! Mount points come from golens' /proc/self/mountinfo, never a fixed path (the
//! defaults are used only when mountinfo cannot be read). A mount whose root is
//! not `/` (golens in a container with a cgroup namespace) is resolved by
//! stripping that root from the process's path.
//!
//! Files: v2 `cpu.max` ("<quota> <period>", quota "max" = none) and `cpu.stat`
//! `throttled_usec`; v1 `cpu.cfs_quota_us` (-1 = none) / `cpu.cfs_period_us` and
//! `cpu.stat` `throttled_time` (nanoseconds). As in the Go runtime, only the
//! process's own (leaf) cgroup is read: a parent's tighter quota is not seen.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{read_text, CgroupVersion, Unavailable};

/// One cgroup mount as golens sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    /// Field 4 of mountinfo: the cgroup this mount shows at its mount point.
    root: String,
    mount_point: PathBuf,
}

/// The cgroup mounts that can hold the CPU controller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// `cgroup` (v1) mounts whose super options include `cpu`.
    v1_cpu: Vec<CgroupMount>,
    /// `cgroup2` mounts.
    v2: Vec<CgroupMount>,
}

/// Where a process's CPU figures live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CpuCgroup {
    pub version: CgroupVersion,
    pub dir: PathBuf,
}

/// What one read of a cgroup gives.
pub(crate) struct CpuReading {
    /// Cores; `Unlimited` when there is no quota.
    pub quota_cores: Result<f64, Unavailable>,
    pub throttled_seconds: Result<f64, Unavailable>,
}

const MOUNTINFO: &str = "/proc/self/mountinfo";

impl CgroupMounts {
    /// golens' cgroup mounts, from /proc/self/mountinfo; the usual layouts
    /// under /sys/fs/cgroup when that cannot be read.
    pub fn read() -> CgroupMounts {
        match fs::read_to_string(MOUNTINFO) {
            Ok(text) => CgroupMounts::parse(&text),
            Err(error) => {
                tracing::debug!(%error, "reading {MOUNTINFO}; assuming /sys/fs/cgroup");
                CgroupMounts::default_layout()
            }
        }
    }

    /// The usual places: v1 `cpu` under /sys/fs/cgroup/cpu, v2 at
    /// /sys/fs/cgroup/unified (hybrid) or /sys/fs/cgroup (pure v2).
    fn default_layout() -> CgroupMounts {
        let base = Path::new("/sys/fs/cgroup");
        let mount = |mount_point: PathBuf| CgroupMount { root: "/".into(), mount_point };
        let v1_cpu = [base.join("cpu"), base.join("cpu,cpuacct")]
            .into_iter()
            .filter(|p| p.join("cpu.cfs_quota_us").exists())
            .map(mount)
            .collect();
        let v2 = [base.join("unified"), base.to_path_buf()]
            .into_iter()
            .filter(|p| p.join("cgroup.controllers").exists())
            .map(mount)
            .collect();
        CgroupMounts { v1_cpu, v2 }
    }

    /// Parses /proc/self/mountinfo:
    /// `36 35 98:0 /root /mount/point rw,noatime master:1 - cgroup cgroup rw,cpu,cpuacct`.
    pub fn parse(mountinfo: &str) -> CgroupMounts {
        let mut mounts = CgroupMounts::default();
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            // Optional fields end with a lone "-", after the sixth field.
            let Some(separator) = fields.iter().skip(6).position(|f| *f == "-").map(|i| i + 6)
            else {
                continue;
            };
            let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else { continue };
            let fs_type = fields.get(separator + 1).copied().unwrap_or("");
            let super_options = fields.get(separator + 3).copied().unwrap_or("");
            let mount = CgroupMount {
                root: unescape(root),
                mount_point: PathBuf::from(unescape(mount_point)),
            };
            match fs_type {
                "cgroup2" => mounts.v2.push(mount),
                "cgroup" if super_options.split(',').any(|o| o == "cpu") => {
                    mounts.v1_cpu.push(mount)
                }
                _ => {}
            }
        }
        mounts
    }

    /// Where the root of the v1 hierarchy holding `cpu` is mounted, if golens sees it.
    pub fn v1_cpu_root(&self) -> Option<&Path> {
        self.v1_cpu.iter().find(|m| m.root == "/").map(|m| m.mount_point.as_path())
    }

    /// Where the root of the v2 hierarchy is mounted, if golens sees it.
    pub fn v2_root(&self) -> Option<&Path> {
        self.v2.iter().find(|m| m.root == "/").map(|m| m.mount_point.as_path())
    }

    /// The directory of the CPU cgroup named in /proc/PID/cgroup (`text`).
    pub(crate) fn locate(&self, pid: u32, text: &str) -> Result<CpuCgroup, Unavailable> {
        let mut v2_path = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if id == "0" && controllers.is_empty() {
                v2_path = Some(path);
            } else if controllers.split(',').any(|c| c == "cpu") {
                // A v1 cpu hierarchy wins over v2, as in the Go runtime.
                return resolve(&self.v1_cpu, path, CgroupVersion::V1);
            }
        }
        match v2_path {
            Some(path) => resolve(&self.v2, path, CgroupVersion::V2),
            None => Err(Unavailable::NoCpuCgroup { pid }),
        }
    }
}

fn resolve(
    mounts: &[CgroupMount],
    path: &str,
    version: CgroupVersion,
) -> Result<CpuCgroup, Unavailable> {
    if mounts.is_empty() {
        return Err(Unavailable::NoCgroupMount { version });
    }
    // Paths above golens' cgroup namespace root read as "/../..".
    if path.split('/').any(|c| c == "..") {
        return Err(Unavailable::OutsideCgroupNamespace { path: path.into() });
    }
    for mount in mounts {
        let root = mount.root.trim_end_matches('/');
        let relative = if root.is_empty() {
            path
        } else if path == root {
            ""
        } else if let Some(rest) = path.strip_prefix(root).filter(|r| r.starts_with('/')) {
            rest
        } else {
            continue;
        };
        let dir = mount.mount_point.join(relative.trim_start_matches('/'));
        return Ok(CpuCgroup { version, dir });
    }
    Err(Unavailable::OutsideCgroupNamespace { path: path.into() })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` (octal).
pub(crate) fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                out.push(digits.iter().fold(0u8, |n, d| n.wrapping_mul(8) + (d - b'0')));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl CpuCgroup {
    pub(crate) fn read(&self) -> CpuReading {
        match self.version {
            CgroupVersion::V2 => {
                let max = self.dir.join("cpu.max");
                let stat = self.dir.join("cpu.stat");
                // Without the cpu controller, cpu.max is absent and cpu.stat
                // has only the usage figures.
                let controller_off = || Unavailable::CpuControllerOff { dir: self.dir.clone() };
                CpuReading {
                    quota_cores: match read_text(&max) {
                        Ok(text) => v2_quota(&max, &text),
                        Err(Unavailable::Absent { .. }) if self.dir.is_dir() => {
                            Err(controller_off())
                        }
                        Err(reason) => Err(reason),
                    },
                    throttled_seconds: read_text(&stat).and_then(|text| {
                        cpu_stat_value(&text, "throttled_usec")
                            .map(|usec| usec as f64 / 1e6)
                            .ok_or_else(controller_off)
                    }),
                }
            }
            CgroupVersion::V1 => {
                let quota = self.dir.join("cpu.cfs_quota_us");
                let period = self.dir.join("cpu.cfs_period_us");
                let stat = self.dir.join("cpu.stat");
                CpuReading {
                    quota_cores: read_text(&quota).and_then(|quota_text| {
                        let period_text = read_text(&period)?;
                        v1_quota(&quota, &quota_text, &period, &period_text)
                    }),
                    throttled_seconds: read_text(&stat).and_then(|text| {
                        cpu_stat_value(&text, "throttled_time")
                            .map(|ns| ns as f64 / 1e9)
                            .ok_or_else(|| Unavailable::malformed(&stat, "no throttled_time"))
                    }),
                }
            }
        }
    }
}

/// cgroup v2 `cpu.max`: "<quota> <period>" in microseconds, quota "max" = none.
pub(crate) fn v2_quota(path: &Path, text: &str) -> Result<f64, Unavailable> {
    let mut fields = text.split_whitespace();
    let (Some(quota), Some(period)) = (fields.next(), fields.next()) else {
        return Err(Unavailable::malformed(path, "expected \"<quota> <period>\""));
    };
    if quota == "max" {
        return Err(Unavailable::Unlimited { path: path.to_path_buf() });
    }
    match (quota.parse::<u64>(), period.parse::<u64>()) {
        (Ok(quota), Ok(period)) if period > 0 => Ok(quota as f64 / period as f64),
        _ => Err(Unavailable::malformed(path, "expected \"<quota> <period>\"")),
    }
}

/// cgroup v1 `cpu.cfs_quota_us` (-1 = none) over `cpu.cfs_period_us`.
pub(crate) fn v1_quota(
    quota_path: &Path,
    quota_text: &str,
    period_path: &Path,
    period_text: &str,
) -> Result<f64, Unavailable> {
    let quota: i64 = quota_text
        .trim()
        .parse()
        .map_err(|_| Unavailable::malformed(quota_path, "expected a number"))?;
    if quota < 0 {
        return Err(Unavailable::Unlimited { path: quota_path.to_path_buf() });
    }
    match period_text.trim().parse::<u64>() {
        Ok(period) if period > 0 => Ok(quota as f64 / period as f64),
        _ => Err(Unavailable::malformed(period_path, "expected a positive number")),
    }
}

/// A `key value` line of a cgroup `cpu.stat`.
pub(crate) fn cpu_stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const PURE_V1: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpuset
";
    const PURE_V2: &str = "\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn dir(mounts: &CgroupMounts, text: &str) -> Result<(CgroupVersion, String), Unavailable> {
        mounts.locate(7, text).map(|c| (c.version, c.dir.display().to_string()))
    }

    #[test]
    fn hybrid_host_uses_the_v1_cpu_hierarchy() {
        let mounts = CgroupMounts::parse(HYBRID);
        let text = "9:name=systemd:/\n4:memory:/process_api/0e\n1:cpu:/app\n0::/app\n";
        assert_eq!(dir(&mounts, text), Ok((CgroupVersion::V1, "/sys/fs/cgroup/cpu/app".into())));
        // `cpuacct` alone is not `cpu`.
        assert_eq!(mounts.v1_cpu.len(), 1);
    }

    #[test]
    fn pure_v1_host_with_comounted_cpu_cpuacct() {
        let mounts = CgroupMounts::parse(PURE_V1);
        let text = "3:cpuset:/\n2:cpu,cpuacct:/kubepods/burstable/pod1/abc\n";
        assert_eq!(
            dir(&mounts, text),
            Ok((
                CgroupVersion::V1,
                "/sys/fs/cgroup/cpu,cpuacct/kubepods/burstable/pod1/abc".into()
            ))
        );
    }

    #[test]
    fn pure_v2_host_is_its_own_root() {
        let mounts = CgroupMounts::parse(PURE_V2);
        let text = "0::/system.slice/app.service\n";
        assert_eq!(
            dir(&mounts, text),
            Ok((CgroupVersion::V2, "/sys/fs/cgroup/system.slice/app.service".into()))
        );
        assert_eq!(dir(&mounts, "0::/\n"), Ok((CgroupVersion::V2, "/sys/fs/cgroup/".into())));
    }

    #[test]
    fn mount_with_a_root_and_escaped_mount_point() {
        // golens in a container: its cgroup namespace shows the pod's subtree.
        let mounts = CgroupMounts::parse(
            "40 31 0:38 /kubepods/pod1 /host\\040cgroup rw - cgroup2 cgroup2 rw\n",
        );
        assert_eq!(
            dir(&mounts, "0::/kubepods/pod1/ctr\n"),
            Ok((CgroupVersion::V2, "/host cgroup/ctr".into()))
        );
        assert_eq!(
            dir(&mounts, "0::/kubepods/pod2/ctr\n"),
            Err(Unavailable::OutsideCgroupNamespace { path: "/kubepods/pod2/ctr".into() })
        );
        assert_eq!(
            dir(&mounts, "0::/../../other\n"),
            Err(Unavailable::OutsideCgroupNamespace { path: "/../../other".into() })
        );
    }

    #[test]
    fn missing_mount_or_cgroup_is_a_reason() {
        let no_v1 = CgroupMounts::parse(PURE_V2);
        assert_eq!(
            dir(&no_v1, "2:cpu,cpuacct:/x\n"),
            Err(Unavailable::NoCgroupMount { version: CgroupVersion::V1 })
        );
        assert_eq!(
            dir(&CgroupMounts::parse(HYBRID), "4:memory:/x\n"),
            Err(Unavailable::NoCpuCgroup { pid: 7 })
        );
        assert_eq!(dir(&CgroupMounts::parse(""), ""), Err(Unavailable::NoCpuCgroup { pid: 7 }));
    }

    #[test]
    fn v2_without_the_cpu_controller_says_so() {
        let mounts = CgroupMounts::read();
        let Some(root) = mounts.v2_root() else {
            eprintln!("skipped: no cgroup v2 mount");
            return;
        };
        let reading = CpuCgroup { version: CgroupVersion::V2, dir: root.to_path_buf() }.read();
        let off = Unavailable::CpuControllerOff { dir: root.to_path_buf() };
        // The root cgroup never has cpu.max, on hybrid and pure v2 hosts alike.
        assert_eq!(reading.quota_cores, Err(off.clone()));
        if let Ok(stat) = fs::read_to_string(root.join("cpu.stat")) {
            if !stat.contains("throttled_usec") {
                assert_eq!(reading.throttled_seconds, Err(off));
            }
        }
    }

    #[test]
    fn v2_cpu_max() {
        let path = Path::new("cpu.max");
        assert_eq!(v2_quota(path, "50000 100000\n"), Ok(0.5));
        assert_eq!(v2_quota(path, "250000 100000\n"), Ok(2.5));
        assert_eq!(
            v2_quota(path, "max 100000\n"),
            Err(Unavailable::Unlimited { path: path.into() })
        );
        for garbage in ["", "50000", "x 100000", "50000 0"] {
            assert!(
                matches!(v2_quota(path, garbage), Err(Unavailable::Malformed { .. })),
                "{garbage}"
            );
        }
    }

    #[test]
    fn v1_cfs_quota_and_period() {
        let (q, p) = (Path::new("cpu.cfs_quota_us"), Path::new("cpu.cfs_period_us"));
        assert_eq!(v1_quota(q, "150000\n", p, "100000\n"), Ok(1.5));
        assert_eq!(
            v1_quota(q, "-1\n", p, "100000\n"),
            Err(Unavailable::Unlimited { path: q.into() })
        );
        assert!(matches!(v1_quota(q, "50000\n", p, "0\n"), Err(Unavailable::Malformed { .. })));
        assert!(matches!(v1_quota(q, "lots\n", p, "100000\n"), Err(Unavailable::Malformed { .. })));
    }

    #[test]
    fn cpu_stat_of_both_versions() {
        let v2 = "usage_usec 8123\nuser_usec 8000\nsystem_usec 123\nnr_periods 40\n\
                  nr_throttled 12\nthrottled_usec 345678\nnr_bursts 0\nburst_usec 0\n";
        assert_eq!(cpu_stat_value(v2, "throttled_usec"), Some(345_678));
        let v1 = "nr_periods 0\nnr_throttled 0\nthrottled_time 1500000000\nnr_bursts 0\n";
        assert_eq!(cpu_stat_value(v1, "throttled_time"), Some(1_500_000_000));
        // A v2 cgroup without the cpu controller has only usage figures.
        assert_eq!(cpu_stat_value("usage_usec 1\nuser_usec 1\n", "throttled_usec"), None);
        assert_eq!(cpu_stat_value("throttled_usec_x 1\n", "throttled_usec"), None);
    }
}
