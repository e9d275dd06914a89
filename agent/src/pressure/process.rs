//! Per-process pressure: fds, VMAs, CPU quota and throttling, GOMAXPROCS.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Read},
    path::Path,
};

use crate::{discovery::procfs::proc_root, goruntime::GoVersion};

use super::{
    cgroup::CgroupMounts,
    gomaxprocs::{
        container_maxprocs, default_gomaxprocs, default_rule, env_gomaxprocs, environ_value,
        status_cpus_allowed, DefaultRule,
    },
    read_text, record, GomaxprocsSource, ProcessPressure, Unavailable,
};

/// What golens knows of a process's Go binary (from `.go.buildinfo`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GoRuntimeHints<'a> {
    /// The Go version, e.g. "go1.25.1"; None when unknown.
    pub version: Option<&'a str>,
    /// The binary's `DefaultGODEBUG` build setting
    /// ([`super::default_godebug_from_modinfo`]); None when the binary has
    /// none, i.e. its toolchain's defaults apply.
    pub default_godebug: Option<&'a str>,
}

/// Reads per-process pressure. Holds golens' cgroup mounts: make one per
/// collection, not one per process.
#[derive(Debug, Clone)]
pub struct ProcessReader {
    mounts: CgroupMounts,
}

impl Default for ProcessReader {
    fn default() -> Self {
        ProcessReader::new()
    }
}

/// Chunk size for /proc/PID/maps: ~800 VMAs per read().
const MAPS_CHUNK: usize = 64 * 1024;

impl ProcessReader {
    /// Reads /proc/self/mountinfo.
    pub fn new() -> ProcessReader {
        ProcessReader { mounts: CgroupMounts::read() }
    }

    pub fn with_mounts(mounts: CgroupMounts) -> ProcessReader {
        ProcessReader { mounts }
    }

    /// Everything about `pid` (as golens' /proc shows it). A process that has
    /// exited reads as all None, with `Absent` reasons.
    pub fn read_process(&self, pid: u32, hints: GoRuntimeHints<'_>) -> ProcessPressure {
        let dir = proc_root().join(pid.to_string());
        let mut reasons = BTreeMap::new();

        let fd_dir = dir.join("fd");
        let open_fds = record(
            &mut reasons,
            "open_fds",
            count_dir_entries(&fd_dir).map_err(|e| Unavailable::from_io(&fd_dir, &e)),
        );
        let limits = dir.join("limits");
        let max_fds = record(
            &mut reasons,
            "max_fds",
            read_text(&limits).and_then(|text| max_open_files(&limits, &text)),
        );
        let maps = dir.join("maps");
        let vmas = record(
            &mut reasons,
            "vmas",
            fs::File::open(&maps)
                .and_then(|file| count_lines(file, &mut vec![0; MAPS_CHUNK]))
                .map_err(|e| Unavailable::from_io(&maps, &e)),
        );

        let cgroup = read_text(&dir.join("cgroup")).and_then(|text| self.mounts.locate(pid, &text));
        let (quota, throttled, cpu_quota_source) = match &cgroup {
            Ok(cgroup) => {
                let reading = cgroup.read();
                (reading.quota_cores, reading.throttled_seconds, Some(cgroup.version))
            }
            Err(reason) => (Err(reason.clone()), Err(reason.clone()), None),
        };
        let gomaxprocs = gomaxprocs(&dir, hints, &quota);
        let cpu_quota_cores = record(&mut reasons, "cpu_quota_cores", quota);
        let cpu_throttled_seconds = record(&mut reasons, "cpu_throttled_seconds", throttled);
        let (gomaxprocs, gomaxprocs_source) =
            record(&mut reasons, "gomaxprocs", gomaxprocs).unzip();

        ProcessPressure {
            pid,
            open_fds,
            max_fds,
            vmas,
            cpu_throttled_seconds,
            cpu_quota_cores,
            cpu_quota_source,
            gomaxprocs,
            gomaxprocs_source,
            reasons,
        }
    }
}

/// GOMAXPROCS from the environment, else from the Go version's default rule
/// (see gomaxprocs.rs). `quota` is the cgroup CPU quota as read.
fn gomaxprocs(
    dir: &Path,
    hints: GoRuntimeHints<'_>,
    quota: &Result<f64, Unavailable>,
) -> Result<(u32, GomaxprocsSource), Unavailable> {
    let environ_path = dir.join("environ");
    let environ = fs::read(&environ_path).map_err(|e| Unavailable::from_io(&environ_path, &e))?;
    if let Some(n) = environ_value(&environ, "GOMAXPROCS").and_then(env_gomaxprocs) {
        return Ok((n, GomaxprocsSource::Env));
    }
    let rule = hints.version.and_then(GoVersion::parse).map(default_rule).ok_or_else(|| {
        Unavailable::UnknownGoVersion { version: hints.version.map(String::from) }
    })?;
    if rule == DefaultRule::One {
        return Ok((1, GomaxprocsSource::GoDefaultOne));
    }
    let status = dir.join("status");
    let cpus = read_text(&status)
        .and_then(|text| {
            status_cpus_allowed(&text)
                .ok_or_else(|| Unavailable::malformed(&status, "no Cpus_allowed_list"))
        })
        .map_err(|reason| Unavailable::Needs { field: "cpus_allowed", reason: Box::new(reason) })?;
    let container_maxprocs =
        container_maxprocs(hints.default_godebug, environ_value(&environ, "GODEBUG"));
    let quota = match quota {
        Ok(cores) => Some(*cores),
        // The runtime falls back to the CPU count when it finds no cgroup or
        // cannot open its limit file (cpu.max is absent where the v2 cpu
        // controller is not enabled, and in the root cgroup).
        Err(
            Unavailable::Unlimited { .. }
            | Unavailable::NoCpuCgroup { .. }
            | Unavailable::CpuControllerOff { .. }
            | Unavailable::Absent { .. },
        ) => None,
        // The runtime may see a quota that golens cannot: do not guess.
        Err(reason) if rule == DefaultRule::CgroupAware && container_maxprocs => {
            return Err(Unavailable::Needs {
                field: "cpu_quota_cores",
                reason: Box::new(reason.clone()),
            })
        }
        Err(_) => None,
    };
    Ok(default_gomaxprocs(rule, container_maxprocs, cpus, quota))
}

/// Entries of a directory, with `readdir` only (no `stat` per entry). In
/// /proc/PID/fd every entry but `.` and `..` (which std skips) is an open fd.
fn count_dir_entries(path: &Path) -> io::Result<u64> {
    let mut count = 0;
    for entry in fs::read_dir(path)? {
        entry?;
        count += 1;
    }
    Ok(count)
}

/// Lines of a reader, read in `buf`-sized chunks without allocating: the
/// newlines, plus one for a last line without its newline.
pub(crate) fn count_lines(mut reader: impl Read, buf: &mut [u8]) -> io::Result<u64> {
    let mut lines = 0u64;
    let mut last_byte = b'\n';
    loop {
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last_byte = buf[n - 1];
    }
    Ok(lines + u64::from(last_byte != b'\n'))
}

/// The soft limit of `Max open files` in /proc/PID/limits:
/// `Max open files            1024                 1048576              files`.
pub(crate) fn max_open_files(path: &Path, limits: &str) -> Result<u64, Unavailable> {
    let soft = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| Unavailable::malformed(path, "no \"Max open files\" line"))?;
    if soft == "unlimited" {
        return Err(Unavailable::Unlimited { path: path.to_path_buf() });
    }
    soft.parse().map_err(|_| Unavailable::malformed(path, "soft limit is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max processes             63459                63459                processes 
Max open files            1024                 524288               files     
Max locked memory         8388608              8388608              bytes     
Max realtime timeout      unlimited            unlimited            us        
";

    #[test]
    fn soft_max_open_files() {
        let path = Path::new("/proc/1/limits");
        assert_eq!(max_open_files(path, LIMITS), Ok(1024));
        let unlimited =
            LIMITS.replace("1024                 524288", "unlimited            unlimited");
        assert_eq!(
            max_open_files(path, &unlimited),
            Err(Unavailable::Unlimited { path: path.into() })
        );
        for garbage in
            ["", "Max processes 10 10 processes\n", "Max open files\n", "Max open files  x  y\n"]
        {
            assert!(
                matches!(max_open_files(path, garbage), Err(Unavailable::Malformed { .. })),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn maps_lines_are_counted_across_chunks() {
        let maps = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 1234   /usr/bin/app
55d0c0a02000-55d0c0a10000 r-xp 00002000 fd:01 1234   /usr/bin/app
7ffd5e1f0000-7ffd5e211000 rw-p 00000000 00:00 0      [stack]
";
        for chunk in [1, 7, 64, 4096] {
            assert_eq!(count_lines(maps.as_bytes(), &mut vec![0; chunk]).unwrap(), 3, "{chunk}");
        }
        assert_eq!(count_lines(&b""[..], &mut [0; 16]).unwrap(), 0);
        assert_eq!(count_lines(&b"a\nb"[..], &mut [0; 16]).unwrap(), 2, "unterminated last line");
        let many = "x\n".repeat(100_000);
        assert_eq!(count_lines(many.as_bytes(), &mut vec![0; MAPS_CHUNK]).unwrap(), 100_000);
    }

    #[test]
    fn own_process_reads_whole() {
        let reader = ProcessReader::new();
        let pressure = reader.read_process(std::process::id(), GoRuntimeHints::default());
        assert!(pressure.open_fds.unwrap() >= 3, "{pressure:?}");
        assert!(pressure.max_fds.unwrap() >= 64, "{pressure:?}");
        assert!(pressure.vmas.unwrap() >= 10, "{pressure:?}");
        // Not a Go process: no version, so GOMAXPROCS only from the environment.
        if std::env::var_os("GOMAXPROCS").is_none() {
            assert!(matches!(
                pressure.reasons.get("gomaxprocs"),
                Some(Unavailable::UnknownGoVersion { version: None })
            ));
        }
    }

    #[test]
    fn a_gone_process_reads_as_absent() {
        // Above the kernel's pid_max limit (2^22): never a live pid.
        let pressure = ProcessReader::new().read_process(
            (1 << 22) + 1,
            GoRuntimeHints { version: Some("go1.25.1"), default_godebug: None },
        );
        assert_eq!(pressure.open_fds, None);
        assert_eq!(pressure.vmas, None);
        assert_eq!(pressure.gomaxprocs, None);
        assert!(matches!(pressure.reasons.get("vmas"), Some(Unavailable::Absent { .. })));
        assert!(matches!(pressure.reasons.get("gomaxprocs"), Some(Unavailable::Absent { .. })));
    }
}
