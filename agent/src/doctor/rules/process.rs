//! Per-Go-process checks: VMAs against vm.max_map_count, fds against
//! RLIMIT_NOFILE, GOMAXPROCS against the CPU quota, GOMEMLIMIT against the
//! memory limit.

use crate::doctor::{
    check::{Check, Status},
    facts::{Facts, GoProcess, NofileLimit},
    parse::{self, MemoryLimitSetting},
    process::LOW_NOFILE_SOFT_LIMIT,
};

use super::{bytes, percent, ratio, ratio_status, unknown, PerProcess, Verdict};

const MAX_MAP_COUNT_WHY: &str = "Every memory mapping (VMA) of a process counts against \
vm.max_map_count. The Go runtime maps its heap in 64 MiB arenas and goroutine stacks as they \
grow, and cgo or mmap-heavy libraries add more; at the limit mmap fails and the runtime aborts \
with `fatal error: runtime: cannot allocate memory` although RAM is free. The default 65530 is \
the usual culprit. Warns above 50 % of the limit, fails above 90 %.";

pub fn vm_max_map_count(facts: &Facts) -> Check {
    const ID: &str = "vm_max_map_count";
    let limit = match &facts.max_map_count {
        Ok(limit) => *limit,
        Err(error) => return unknown(ID, error, MAX_MAP_COUNT_WHY),
    };
    PerProcess { id: ID, why: MAX_MAP_COUNT_WHY, prefix: Some(format!("limit {limit}")) }.evaluate(
        facts,
        |process| {
            let vmas = process.vma_count.clone()?;
            Ok(Verdict {
                status: ratio_status(vmas, limit),
                text: format!("{vmas} VMAs ({})", percent(vmas, limit)),
                severity: ratio(vmas, limit),
            })
        },
        |_| {
            format!(
                "sysctl -w vm.max_map_count={} (persist it in /etc/sysctl.d/99-go.conf)",
                (limit * 4).max(262_144)
            )
        },
    )
}

const NOFILE_WHY: &str = "Every socket and file is a file descriptor. At the soft \
RLIMIT_NOFILE, accept() and open() fail with EMFILE (`too many open files`); Go's net/http \
server then logs and sleeps before accepting again. Since Go 1.19 the os package raises the soft \
limit to the hard limit at startup, so a low soft limit here usually means a low hard limit. \
Warns above 50 % of the soft limit, fails above 90 %, and warns on a soft limit of 1024 or less \
for a process that listens.";

pub fn rlimit_nofile(facts: &Facts) -> Check {
    PerProcess { id: "rlimit_nofile", why: NOFILE_WHY, prefix: None }.evaluate(
        facts,
        |process| {
            let limit = process.nofile.clone()?;
            let open = process.open_fds.clone()?;
            let hard = limit.hard.map_or("unlimited".to_string(), |hard| hard.to_string());
            let Some(soft) = limit.soft else {
                return Ok(Verdict {
                    status: Status::Pass,
                    text: format!("{open} fds open, no limit"),
                    severity: 0.0,
                });
            };
            let mut status = ratio_status(open, soft);
            let mut text =
                format!("{open} of {soft} fds open ({}), hard limit {hard}", percent(open, soft));
            if let Some(Ok(listening)) = process.listening_sockets {
                if listening > 0 && soft <= LOW_NOFILE_SOFT_LIMIT {
                    status = status.max(Status::Warn);
                    text.push_str(&format!(
                        "; listens on {listening} TCP sockets with a soft limit of {soft}"
                    ));
                }
            }
            Ok(Verdict { status, text, severity: ratio(open, soft) })
        },
        |process| {
            let low =
                matches!(process.nofile, Ok(NofileLimit { hard: Some(h), .. }) if h <= 65_536);
            let hard = if low { "raise the hard limit too; " } else { "" };
            format!(
                "raise RLIMIT_NOFILE where pid {} is started ({hard}Go ≥ 1.19 lifts the soft limit \
                 to the hard one): systemd `LimitNOFILE=1048576`, `docker run --ulimit \
                 nofile=1048576:1048576`, or `ulimit -n 1048576` in its start script; and look \
                 for leaked fds (`ls -l /proc/{}/fd`)",
                process.pid, process.pid
            )
        },
    )
}

const GOMAXPROCS_WHY: &str = "GOMAXPROCS is how many threads run Go code at once. Above the \
cgroup's CPU quota, those threads use up the quota early in each CFS period (100 ms by default) \
and the whole process, GC included, is throttled until the next one: tens of milliseconds of \
tail latency. Go ≥ 1.25 takes its default from the quota of its own cgroup (at least 2; unless \
GODEBUG containermaxprocs=0 or its go.mod says an older go); older versions use the CPU count. \
golens reads GOMAXPROCS from the process's environment: a program that calls \
runtime.GOMAXPROCS itself (e.g. go.uber.org/automaxprocs) is not seen. Warns when GOMAXPROCS \
exceeds the quota rounded up (and 2).";

/// Go ≥ 1.25's cgroup-aware default never goes below this.
const GO_CGROUP_MIN_PROCS: u32 = 2;

pub fn gomaxprocs(facts: &Facts) -> Check {
    PerProcess { id: "gomaxprocs", why: GOMAXPROCS_WHY, prefix: None }.evaluate(
        facts,
        |process| {
            let limit = process.cpu_limit.clone()?;
            let Some(tightest) = limit.tightest else {
                return Ok(Verdict {
                    status: Status::Pass,
                    text: "no CPU quota".into(),
                    severity: 0.0,
                });
            };
            let (procs, source) = effective_gomaxprocs(process, limit.leaf.map(|q| q.cpus()))?;
            let quota = tightest.cpus();
            let allowed = (quota.ceil() as u32).max(GO_CGROUP_MIN_PROCS);
            let status = if procs > allowed { Status::Warn } else { Status::Pass };
            Ok(Verdict {
                status,
                text: format!(
                    "GOMAXPROCS {procs} ({source}) vs CPU quota {quota:.2} ({})",
                    tightest.file
                ),
                severity: f64::from(procs) / quota.max(0.01),
            })
        },
        |process| {
            let quota = process
                .cpu_limit
                .as_ref()
                .ok()
                .and_then(|limit| limit.tightest.as_ref())
                .map_or(1, |q| (q.cpus().ceil() as u32).max(1));
            format!(
                "start pid {} with GOMAXPROCS={quota} (its quota, rounded up) in its environment, \
                 build it with Go ≥ 1.25 (whose default follows the quota), or use \
                 go.uber.org/automaxprocs",
                process.pid
            )
        },
    )
}

/// GOMAXPROCS as the process's runtime chose it at startup, and where from.
fn effective_gomaxprocs(
    process: &GoProcess,
    leaf_quota: Option<f64>,
) -> Result<(u32, String), crate::doctor::facts::Unreadable> {
    let env = process.env.clone()?;
    if let Some(procs) = env.gomaxprocs.as_deref().and_then(parse::gomaxprocs) {
        return Ok((procs, "from the environment".into()));
    }
    let cpus = process.cpus_allowed.clone()?;
    let version = process.go_version.as_deref().and_then(parse::go_version);
    let cgroup_aware = version.is_some_and(|v| v >= (1, 25))
        && !env
            .godebug
            .as_deref()
            .is_some_and(|godebug| parse::godebug_is_zero(godebug, "containermaxprocs"));
    Ok(match (cgroup_aware, leaf_quota, version) {
        (true, Some(quota), _) => {
            let procs = (quota.ceil() as u32).max(GO_CGROUP_MIN_PROCS).min(cpus);
            (procs, "Go ≥ 1.25 default from its cgroup's quota".into())
        }
        (true, None, _) => {
            (cpus, "Go ≥ 1.25 default: CPU count, its own cgroup has no quota".into())
        }
        (false, _, Some(_)) => (cpus, "default: CPU count".into()),
        (false, _, None) => (cpus, "default: CPU count, Go version unknown".into()),
    })
}

const GOMEMLIMIT_WHY: &str = "Go's GC lets the heap grow to about twice the live heap \
(GOGC=100) and knows nothing of the cgroup's memory limit: a burst crosses it and the kernel \
OOM-kills the process. GOMEMLIMIT (Go ≥ 1.19) makes the GC work harder as the heap nears it. \
Warns when a process with a cgroup memory limit has no GOMEMLIMIT (or one above the limit).";

/// Go added GOMEMLIMIT in this version.
const GOMEMLIMIT_SINCE: (u32, u32) = (1, 19);

pub fn gomemlimit(facts: &Facts) -> Check {
    PerProcess { id: "gomemlimit", why: GOMEMLIMIT_WHY, prefix: None }.evaluate(
        facts,
        |process| {
            let Some(limit) = process.memory_limit.clone()? else {
                return Ok(Verdict {
                    status: Status::Pass,
                    text: "no cgroup memory limit".into(),
                    severity: 0.0,
                });
            };
            let env = process.env.clone()?;
            let within = format!("cgroup memory limit {} ({})", bytes(limit.bytes), limit.file);
            let version = process.go_version.as_deref().and_then(parse::go_version);
            let warn =
                |text: String, severity: f64| Verdict { status: Status::Warn, text, severity };
            if version.is_some_and(|v| v < GOMEMLIMIT_SINCE) {
                let go = process.go_version.as_deref().unwrap_or_default();
                return Ok(warn(format!("{go} predates GOMEMLIMIT; {within}"), 1.0));
            }
            Ok(match env.gomemlimit.as_deref().map(|v| (v, parse::gomemlimit(v))) {
                None | Some((_, Some(MemoryLimitSetting::Off))) => {
                    warn(format!("GOMEMLIMIT unset; {within}"), 1.0)
                }
                Some((_, Some(MemoryLimitSetting::Bytes(set)))) if set > limit.bytes => warn(
                    format!("GOMEMLIMIT {} is above the {within}", bytes(set)),
                    ratio(set, limit.bytes),
                ),
                Some((text, _)) => Verdict {
                    status: Status::Pass,
                    text: format!("GOMEMLIMIT={text}; {within}"),
                    severity: 0.0,
                },
            })
        },
        |process| {
            let suggestion = match &process.memory_limit {
                Ok(Some(limit)) => format!("GOMEMLIMIT={}MiB", (limit.bytes / 10 * 9) >> 20),
                _ => "GOMEMLIMIT=<90 % of the limit>".to_string(),
            };
            let old = process
                .go_version
                .as_deref()
                .and_then(parse::go_version)
                .is_some_and(|v| v < GOMEMLIMIT_SINCE);
            if old {
                format!(
                    "rebuild pid {} with Go ≥ 1.19 and start it with {suggestion}; until then \
                     leave more room above the live heap (or lower GOGC)",
                    process.pid
                )
            } else {
                format!(
                    "start pid {} with {suggestion} (about 90 % of its limit) in its environment",
                    process.pid
                )
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{
        facts::{CpuLimit, GoEnv},
        rules::fixtures::*,
    };

    fn one(process: GoProcess) -> Facts {
        let mut facts = healthy();
        facts.processes.go = vec![process];
        facts
    }

    #[test]
    fn max_map_count_statuses() {
        for (vmas, status) in
            [(300, Status::Pass), (140_000, Status::Warn), (240_000, Status::Fail)]
        {
            let mut process = go_process(42, "api");
            process.vma_count = Ok(vmas);
            let check = vm_max_map_count(&one(process));
            assert_eq!(check.status, status, "{check:?}");
            assert!(check.value.starts_with(&format!("limit 262144; pid 42 (api): {vmas} VMAs")));
            assert_eq!(check.fix.is_some(), status != Status::Pass);
        }
        let mut process = go_process(42, "api");
        process.vma_count = Err(permission_denied("/proc/42/maps"));
        let check = vm_max_map_count(&one(process));
        assert_eq!(check.status, Status::Unknown);
        assert_eq!(check.details, ["pid 42 (api): cannot read /proc/42/maps: permission denied"]);
        let mut facts = healthy();
        facts.max_map_count = Err(absent("/proc/sys/vm/max_map_count"));
        assert_eq!(vm_max_map_count(&facts).status, Status::Unknown);
    }

    #[test]
    fn nofile_statuses() {
        let with = |open: u64, soft: Option<u64>, listening: Option<u64>| {
            let mut process = go_process(42, "api");
            process.open_fds = Ok(open);
            process.nofile = Ok(NofileLimit { soft, hard: Some(524_288) });
            process.listening_sockets = listening.map(Ok);
            rlimit_nofile(&one(process))
        };
        assert_eq!(with(20, Some(1_048_576), None).status, Status::Pass);
        assert_eq!(with(600, Some(1024), None).status, Status::Warn);
        assert_eq!(with(1000, Some(1024), None).status, Status::Fail);
        assert_eq!(with(10, None, None).status, Status::Pass);
        let listening = with(10, Some(1024), Some(2));
        assert_eq!(listening.status, Status::Warn);
        assert!(listening.value.contains("listens on 2 TCP sockets"), "{}", listening.value);
        assert!(listening.fix.unwrap().contains("LimitNOFILE"));
        assert_eq!(with(10, Some(1024), Some(0)).status, Status::Pass);
        let mut process = go_process(42, "api");
        process.open_fds = Err(permission_denied("/proc/42/fd"));
        assert_eq!(rlimit_nofile(&one(process)).status, Status::Unknown);
    }

    fn gomaxprocs_of(
        version: &str,
        env: GoEnv,
        cpus: u32,
        leaf: Option<f64>,
        tightest: Option<f64>,
    ) -> Check {
        let mut process = go_process(42, "api");
        process.go_version = Some(version.into());
        process.env = Ok(env);
        process.cpus_allowed = Ok(cpus);
        process.cpu_limit = Ok(CpuLimit { leaf: leaf.map(quota), tightest: tightest.map(quota) });
        gomaxprocs(&one(process))
    }

    fn env(gomaxprocs: Option<&str>, godebug: Option<&str>) -> GoEnv {
        GoEnv {
            gomaxprocs: gomaxprocs.map(Into::into),
            godebug: godebug.map(Into::into),
            gomemlimit: None,
        }
    }

    #[test]
    fn gomaxprocs_from_the_environment_above_the_quota_warns() {
        let check = gomaxprocs_of("go1.19.8", env(Some("64"), None), 2, Some(1.0), Some(1.0));
        assert_eq!(check.status, Status::Warn);
        assert!(check.value.contains("GOMAXPROCS 64 (from the environment) vs CPU quota 1.00"));
        assert!(check.fix.unwrap().contains("GOMAXPROCS=1"));
        let check = gomaxprocs_of("go1.19.8", env(Some("2"), None), 8, Some(1.0), Some(1.0));
        assert_eq!(check.status, Status::Pass, "2 is Go's own minimum: {check:?}");
    }

    #[test]
    fn gomaxprocs_default_before_go_1_25_is_the_cpu_count() {
        let check = gomaxprocs_of("go1.24.3", env(None, None), 16, Some(2.0), Some(2.0));
        assert_eq!(check.status, Status::Warn);
        assert!(check.value.contains("GOMAXPROCS 16 (default: CPU count)"), "{}", check.value);
        let check = gomaxprocs_of("go1.24.3", env(Some("junk"), None), 2, Some(2.0), Some(2.0));
        assert_eq!(check.status, Status::Pass, "an invalid GOMAXPROCS means the default");
    }

    #[test]
    fn gomaxprocs_default_of_go_1_25_follows_its_own_cgroup() {
        let check = gomaxprocs_of("go1.25.1", env(None, None), 16, Some(2.0), Some(2.0));
        assert_eq!(check.status, Status::Pass, "{check:?}");
        assert!(check.value.contains("GOMAXPROCS 2 (Go ≥ 1.25 default"), "{}", check.value);
        // A quota on a parent only: Go does not see it.
        let check = gomaxprocs_of("go1.25.1", env(None, None), 16, None, Some(2.0));
        assert_eq!(check.status, Status::Warn, "{check:?}");
        let check = gomaxprocs_of(
            "go1.26.0",
            env(None, Some("containermaxprocs=0")),
            16,
            Some(2.0),
            Some(2.0),
        );
        assert_eq!(check.status, Status::Warn, "GODEBUG turned it off: {check:?}");
    }

    #[test]
    fn gomaxprocs_without_quota_or_unreadable() {
        let check = gomaxprocs_of("go1.19.8", env(Some("64"), None), 2, None, None);
        assert_eq!(check.status, Status::Pass);
        assert!(check.value.contains("no CPU quota"));
        let mut process = go_process(42, "api");
        process.env = Err(permission_denied("/proc/42/environ"));
        let check = gomaxprocs(&one(process));
        assert_eq!(check.status, Status::Unknown);
        assert!(check.fix.unwrap().contains("as root"));
    }

    fn gomemlimit_of(version: &str, setting: Option<&str>, limit: Option<u64>) -> Check {
        let mut process = go_process(42, "api");
        process.go_version = Some(version.into());
        process.env = Ok(GoEnv { gomemlimit: setting.map(Into::into), ..GoEnv::default() });
        process.memory_limit = Ok(limit.map(|bytes| crate::doctor::facts::MemoryLimit {
            bytes,
            file: "/sys/fs/cgroup/memory/app/memory.limit_in_bytes".into(),
        }));
        gomemlimit(&one(process))
    }

    #[test]
    fn gomemlimit_statuses() {
        let check = gomemlimit_of("go1.21.0", None, Some(512 << 20));
        assert_eq!(check.status, Status::Warn);
        assert!(
            check.value.contains("GOMEMLIMIT unset; cgroup memory limit 512 MiB"),
            "{}",
            check.value
        );
        assert!(check.fix.unwrap().contains("GOMEMLIMIT=460MiB"));
        assert_eq!(gomemlimit_of("go1.21.0", Some("off"), Some(512 << 20)).status, Status::Warn);
        assert_eq!(gomemlimit_of("go1.21.0", Some("1GiB"), Some(512 << 20)).status, Status::Warn);
        assert_eq!(gomemlimit_of("go1.21.0", Some("400MiB"), Some(512 << 20)).status, Status::Pass);
        assert_eq!(gomemlimit_of("go1.21.0", None, None).status, Status::Pass);
        let old = gomemlimit_of("go1.18.10", Some("400MiB"), Some(512 << 20));
        assert_eq!(old.status, Status::Warn);
        assert!(old.fix.unwrap().contains("Go ≥ 1.19"));
        let mut process = go_process(42, "api");
        process.memory_limit = Err(permission_denied("/proc/42/root/sys/fs/cgroup"));
        assert_eq!(gomemlimit(&one(process)).status, Status::Unknown);
    }
}
