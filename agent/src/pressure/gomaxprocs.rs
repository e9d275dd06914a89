//! The GOMAXPROCS a Go process started with, decided from outside.
//!
//! The runtime (`schedinit`, every version) takes `GOMAXPROCS` from the
//! environment when it parses as an int32 greater than 0; otherwise the
//! version's default applies. The defaults are a table, by first Go version:
//!
//! | from  | default |
//! | ----- | ------- |
//! | 1.0   | 1 |
//! | 1.5   | the CPU count of the affinity mask at start (`sched_getaffinity`) |
//! | 1.25  | `min(cpus, max(2, ceil(quota)))` when the process's cgroup has a CPU quota and `GODEBUG` `containermaxprocs` is not 0 (runtime/cgroup_linux.go `adjustCgroupGOMAXPROCS`); else the CPU count |
//!
//! `containermaxprocs` defaults to 1 from Go 1.25, but to 0 in a binary whose
//! main module's go.mod says `go 1.24` or older (or that has a
//! `//go:debug containermaxprocs=0` directive): the linker records that in the
//! build info's `DefaultGODEBUG` setting, which the caller passes in
//! ([`default_godebug_from_modinfo`]); the environment's `GODEBUG` overrides it.
//!
//! The affinity mask is read now (`Cpus_allowed_list`), the environment is the
//! one the process started with (/proc/PID/environ), as the runtime read it.
//!
//! This is the fallback: the agent reads the runtime's own `runtime.gomaxprocs`
//! from the process's memory when it can (source `observed`, see `limits` and
//! `runtime_memory`), which also covers `runtime.GOMAXPROCS(n)` calls.

use crate::goruntime::GoVersion;

use super::GomaxprocsSource;

/// A Go version's default GOMAXPROCS rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DefaultRule {
    One,
    CpuCount,
    CgroupAware,
}

/// By first Go version; the last entry not newer than the process's applies.
const DEFAULT_RULES: &[(GoVersion, DefaultRule)] = &[
    (GoVersion::new(1, 0, 0), DefaultRule::One),
    (GoVersion::new(1, 5, 0), DefaultRule::CpuCount),
    (GoVersion::new(1, 25, 0), DefaultRule::CgroupAware),
];

pub(crate) fn default_rule(version: GoVersion) -> DefaultRule {
    DEFAULT_RULES
        .iter()
        .rev()
        .find(|(first, _)| *first <= version)
        .map_or(DefaultRule::One, |(_, rule)| *rule)
}

/// `GOMAXPROCS` as the runtime accepts it: an int32 > 0, else None.
pub(crate) fn env_gomaxprocs(value: &[u8]) -> Option<u32> {
    let n = go_atoi32(value)?;
    (n > 0).then_some(n as u32)
}

/// Whether the cgroup-aware default is on: `containermaxprocs` of the
/// binary's `DefaultGODEBUG`, overridden by the environment's `GODEBUG`
/// (the last setting of a key wins in each, as in `parsegodebug`). A value that
/// does not parse leaves the previous one.
pub(crate) fn container_maxprocs(
    default_godebug: Option<&str>,
    env_godebug: Option<&[u8]>,
) -> bool {
    let mut enabled = 1;
    for godebug in [default_godebug.map(str::as_bytes), env_godebug].into_iter().flatten() {
        for field in godebug.split(|&b| b == b',') {
            if let Some(value) = field.strip_prefix(b"containermaxprocs=") {
                if let Some(n) = go_atoi32(value) {
                    enabled = n;
                }
            }
        }
    }
    enabled > 0
}

/// The default by `rule`. `quota_cores` is the cgroup CPU quota, None when
/// there is none (or no cgroup).
pub(crate) fn default_gomaxprocs(
    rule: DefaultRule,
    container_maxprocs: bool,
    cpus: u32,
    quota_cores: Option<f64>,
) -> (u32, GomaxprocsSource) {
    match (rule, quota_cores) {
        (DefaultRule::One, _) => (1, GomaxprocsSource::GoDefaultOne),
        (DefaultRule::CgroupAware, Some(quota)) if container_maxprocs => {
            let limit = quota.ceil().max(2.0);
            if limit <= f64::from(cpus) {
                (limit as u32, GomaxprocsSource::GoDefaultCgroup)
            } else {
                (cpus, GomaxprocsSource::GoDefaultCpus)
            }
        }
        _ => (cpus, GomaxprocsSource::GoDefaultCpus),
    }
}

/// The first `KEY=value` of a NUL-separated environment block, as the
/// runtime's `gogetenv` finds it.
pub(crate) fn environ_value<'a>(environ: &'a [u8], key: &str) -> Option<&'a [u8]> {
    environ.split(|&b| b == 0).find_map(|entry| {
        entry.strip_prefix(key.as_bytes()).and_then(|rest| rest.strip_prefix(b"="))
    })
}

/// Counts the CPUs of a `Cpus_allowed_list` value ("0-3,8,10-11").
pub(crate) fn count_cpu_list(list: &str) -> Option<u32> {
    let mut count = 0u32;
    for range in list.trim().split(',') {
        let (first, last) = match range.split_once('-') {
            Some((first, last)) => (first.parse::<u32>().ok()?, last.parse::<u32>().ok()?),
            None => {
                let cpu = range.parse::<u32>().ok()?;
                (cpu, cpu)
            }
        };
        count = count.checked_add(last.checked_sub(first)? + 1)?;
    }
    (count > 0).then_some(count)
}

/// The `Cpus_allowed_list:` of /proc/PID/status.
pub(crate) fn status_cpus_allowed(status: &str) -> Option<u32> {
    status.lines().find_map(|line| line.strip_prefix("Cpus_allowed_list:")).and_then(count_cpu_list)
}

/// `DefaultGODEBUG` of a Go binary's modinfo (the `build\tDefaultGODEBUG=...`
/// line that `go version -m` prints), to pass as
/// [`super::GoRuntimeHints::default_godebug`].
pub fn default_godebug_from_modinfo(modinfo: &str) -> Option<&str> {
    modinfo.lines().find_map(|line| line.strip_prefix("build\tDefaultGODEBUG="))
}

/// The runtime's `strconv.Atoi32` (internal/runtime/strconv): an optional
/// '-' then decimal digits (none at all after '-' reads as 0), no '+', no
/// spaces, must fit in an int32.
fn go_atoi32(value: &[u8]) -> Option<i32> {
    if value.is_empty() {
        return None;
    }
    let (negative, digits) = match value.strip_prefix(b"-") {
        Some(digits) => (true, digits),
        None => (false, value),
    };
    let mut magnitude: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude.checked_mul(10)?.checked_add(i64::from(digit - b'0'))?;
        if magnitude > 1 << 31 {
            return None;
        }
    }
    i32::try_from(if negative { -magnitude } else { magnitude }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(text: &str) -> GoVersion {
        GoVersion::parse(text).unwrap()
    }

    #[test]
    fn rule_by_version() {
        assert_eq!(default_rule(version("go1.4.3")), DefaultRule::One);
        assert_eq!(default_rule(version("go1.19.8")), DefaultRule::CpuCount);
        assert_eq!(default_rule(version("go1.24.9")), DefaultRule::CpuCount);
        assert_eq!(default_rule(version("go1.25rc1")), DefaultRule::CgroupAware);
        assert_eq!(default_rule(version("go1.25.1")), DefaultRule::CgroupAware);
        assert_eq!(default_rule(version("devel go1.27-abc")), DefaultRule::CgroupAware);
    }

    #[test]
    fn environment_value_as_the_runtime_parses_it() {
        let environ = b"HOME=/root\0GOMAXPROCS=3\0GOMAXPROCS=9\0PATH=/bin\0";
        assert_eq!(environ_value(environ, "GOMAXPROCS"), Some(&b"3"[..]), "first one wins");
        assert_eq!(environ_value(b"XGOMAXPROCS=3\0GOMAXPROCSX=4\0", "GOMAXPROCS"), None);
        assert_eq!(environ_value(b"", "GOMAXPROCS"), None);
        assert_eq!(environ_value(b"GOMAXPROCS=\0", "GOMAXPROCS"), Some(&b""[..]));
        assert_eq!(env_gomaxprocs(b"3"), Some(3));
        for ignored in
            [&b""[..], b"0", b"-2", b"+3", b" 3", b"3 ", b"abc", b"4294967296", b"2147483648"]
        {
            assert_eq!(env_gomaxprocs(ignored), None, "{:?}", String::from_utf8_lossy(ignored));
        }
        assert_eq!(env_gomaxprocs(b"2147483647"), Some(i32::MAX as u32));
        assert_eq!(go_atoi32(b"-"), Some(0), "as in the runtime");
        assert_eq!(go_atoi32(b"-2147483648"), Some(i32::MIN));
    }

    #[test]
    fn go_1_25_default_follows_the_quota() {
        use GomaxprocsSource::*;
        let rule = DefaultRule::CgroupAware;
        // A quota below 2 is rounded up to 2, a fractional one up.
        assert_eq!(default_gomaxprocs(rule, true, 8, Some(0.5)), (2, GoDefaultCgroup));
        assert_eq!(default_gomaxprocs(rule, true, 8, Some(2.5)), (3, GoDefaultCgroup));
        assert_eq!(default_gomaxprocs(rule, true, 8, Some(8.0)), (8, GoDefaultCgroup));
        // Never above the CPU count, and 2 only if the CPU count allows.
        assert_eq!(default_gomaxprocs(rule, true, 8, Some(12.0)), (8, GoDefaultCpus));
        assert_eq!(default_gomaxprocs(rule, true, 1, Some(0.5)), (1, GoDefaultCpus));
        assert_eq!(default_gomaxprocs(rule, true, 8, None), (8, GoDefaultCpus));
        // containermaxprocs=0.
        assert_eq!(default_gomaxprocs(rule, false, 8, Some(0.5)), (8, GoDefaultCpus));
        // Older versions ignore the quota.
        assert_eq!(
            default_gomaxprocs(DefaultRule::CpuCount, true, 8, Some(0.5)),
            (8, GoDefaultCpus)
        );
        assert_eq!(default_gomaxprocs(DefaultRule::One, true, 8, None), (1, GoDefaultOne));
    }

    #[test]
    fn containermaxprocs_from_default_and_environment() {
        assert!(container_maxprocs(None, None));
        assert!(!container_maxprocs(Some("containermaxprocs=0,updatemaxprocs=0"), None));
        assert!(container_maxprocs(Some("containermaxprocs=0"), Some(b"containermaxprocs=1")));
        assert!(!container_maxprocs(None, Some(b"gctrace=1,containermaxprocs=0")));
        assert!(container_maxprocs(None, Some(b"containermaxprocs=0,containermaxprocs=1")));
        assert!(!container_maxprocs(None, Some(b"containermaxprocs=0,containermaxprocs=x")));
        let modinfo = "path\texample.com/app\nmod\texample.com/app\t(devel)\t\n\
                       build\t-compiler=gc\nbuild\tDefaultGODEBUG=containermaxprocs=0,updatemaxprocs=0\n";
        assert_eq!(
            default_godebug_from_modinfo(modinfo),
            Some("containermaxprocs=0,updatemaxprocs=0")
        );
        assert_eq!(default_godebug_from_modinfo("build\t-compiler=gc\n"), None);
    }

    #[test]
    fn cpus_allowed_list() {
        assert_eq!(count_cpu_list("0-1\n"), Some(2));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0-3,8,10-11"), Some(7));
        for garbage in ["", "x", "3-1", "0-"] {
            assert_eq!(count_cpu_list(garbage), None, "{garbage}");
        }
        let status = "Name:\tapp\nCpus_allowed:\tff\nCpus_allowed_list:\t0-7\nMems_allowed:\t1\n";
        assert_eq!(status_cpus_allowed(status), Some(8));
        assert_eq!(status_cpus_allowed("Name:\tapp\n"), None);
    }
}
