//! Checks made before touching the kernel, so that a missing privilege is one
//! clear line instead of an EPERM from deep inside the loader.

use std::fs;

/// Linux capability numbers (include/uapi/linux/capability.h).
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "missing capability {missing}: golens loads eBPF programs; run it as root or grant \
         {missing} (e.g. `setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search+ep \
         golens`, or securityContext.capabilities.add in Kubernetes, as deploy/daemonset.yaml \
         does)"
    )]
    MissingCapability { missing: String },
    #[error("cannot read own capabilities from /proc/self/status: {0}")]
    Status(String),
    #[error("{0}")]
    SyscallBlocked(BlockedSyscall),
}

/// A system call golens needs that the kernel refuses although golens has
/// the capabilities for it: a seccomp filter (a container runtime's default
/// profile), or a security module.
#[derive(Debug, Clone)]
pub struct BlockedSyscall {
    pub syscall: &'static str,
    /// The capability that allows it in the runtimes' newer default profiles.
    capability: &'static str,
    /// What is lost without it.
    consequence: &'static str,
    errno: i32,
    /// Whether a seccomp filter is active (`Seccomp: 2` in /proc/self/status).
    seccomp_filter: bool,
}

impl std::fmt::Display for BlockedSyscall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (syscall, error) = (self.syscall, std::io::Error::from_raw_os_error(self.errno));
        if self.seccomp_filter {
            write!(
                f,
                "the seccomp profile blocks {syscall}() ({error}) although golens has the \
                 capabilities it needs, so {consequence}: run golens with the seccomp profile \
                 deploy/seccomp-golens.json (in Kubernetes: securityContext.seccompProfile \
                 type Localhost, see deploy/daemonset.yaml), or a runtime default profile that \
                 allows {syscall}() to {capability} (containerd 1.7+, containers-common 0.60+)",
                consequence = self.consequence,
                capability = self.capability,
            )
        } else {
            write!(
                f,
                "{syscall}() is refused ({error}) although golens has the capabilities it needs \
                 and no seccomp filter is active, so {consequence}: a Linux security module \
                 (SELinux, AppArmor) or the kernel's lockdown mode refuses it",
                consequence = self.consequence,
            )
        }
    }
}

/// Whether bpf() reaches the kernel: golens loads nothing without it.
pub fn check_bpf_syscall() -> Result<(), PreflightError> {
    // bpf(BPF_MAP_CREATE, NULL, 0): an all-zero attribute asks for map type
    // 0 (unspecified), which the kernel rejects with EINVAL, creating nothing.
    // SAFETY: a null attribute of size 0 is never read.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, 0, std::ptr::null::<u8>(), 0) };
    match blocked(ret, "bpf", "CAP_BPF", "no eBPF program can be loaded") {
        Some(blocked) => Err(PreflightError::SyscallBlocked(blocked)),
        None => Ok(()),
    }
}

/// Whether perf_event_open() reaches the kernel: the syscall tracepoint
/// families and the perf-event uprobe fallback need it.
pub fn perf_event_open_blocked() -> Option<BlockedSyscall> {
    // perf_event_open(NULL, 0, -1, -1, 0): the kernel fails reading the
    // attribute at NULL (EFAULT), opening nothing.
    // SAFETY: the kernel validates the null pointer itself.
    let ret =
        unsafe { libc::syscall(libc::SYS_perf_event_open, std::ptr::null::<u8>(), 0, -1, -1, 0) };
    blocked(
        ret,
        "perf_event_open",
        "CAP_PERFMON",
        "the syscall tracepoint families (vma, fd, net, netpoll, timers) cannot attach",
    )
}

/// The result of a probing system call whose arguments are invalid on
/// purpose: an error other than EPERM, EACCES or ENOSYS means the kernel
/// looked at them, i.e. the call is allowed.
fn blocked(
    ret: libc::c_long,
    syscall: &'static str,
    capability: &'static str,
    consequence: &'static str,
) -> Option<BlockedSyscall> {
    if ret >= 0 {
        // SAFETY: an fd this function's caller just got and nobody else has.
        unsafe { libc::close(ret as i32) };
        return None;
    }
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    classify(errno, seccomp_filter_active()).map(|(errno, seccomp_filter)| BlockedSyscall {
        syscall,
        capability,
        consequence,
        errno,
        seccomp_filter,
    })
}

/// (errno, seccomp) when `errno` says the call was refused before the
/// kernel looked at its arguments. Seccomp profiles answer EPERM (Docker,
/// containerd, podman's bpf rule) or ENOSYS (containers-common's default,
/// deploy/seccomp-golens.json); security modules EPERM or EACCES.
fn classify(errno: i32, seccomp_filter: bool) -> Option<(i32, bool)> {
    matches!(errno, libc::EPERM | libc::EACCES | libc::ENOSYS).then_some((errno, seccomp_filter))
}

/// `Seccomp: 2` (filter mode) in /proc/self/status.
fn seccomp_filter_active() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|line| line.strip_prefix("Seccomp:").is_some_and(|mode| mode.trim() == "2"))
    })
}

/// The effective capability set of this process.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities(u64);

impl Capabilities {
    pub fn current() -> Result<Capabilities, PreflightError> {
        let status = fs::read_to_string("/proc/self/status")
            .map_err(|error| PreflightError::Status(error.to_string()))?;
        Self::parse_status(&status).ok_or_else(|| PreflightError::Status("no CapEff line".into()))
    }

    fn parse_status(status: &str) -> Option<Capabilities> {
        let hex = status.lines().find_map(|line| line.strip_prefix("CapEff:"))?.trim();
        u64::from_str_radix(hex, 16).ok().map(Capabilities)
    }

    fn has(self, cap: u32) -> bool {
        self.0 & (1 << cap) != 0
    }

    /// CAP_BPF and CAP_PERFMON (5.8+), or CAP_SYS_ADMIN which covers both.
    pub fn check_bpf(self) -> Result<(), PreflightError> {
        if self.has(CAP_SYS_ADMIN) {
            return Ok(());
        }
        let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
            .into_iter()
            .filter(|&(cap, _)| !self.has(cap))
            .map(|(_, name)| name)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(PreflightError::MissingCapability { missing: missing.join(" and ") })
        }
    }

    /// Capabilities that are not fatal but limit what golens sees.
    /// `kernel` is the running kernel's (major, minor).
    pub fn warnings(self, kernel: Option<(u32, u32)>) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        // CAP_SYS_ADMIN does not stand in for it: ptrace access checks only
        // CAP_SYS_PTRACE.
        if !self.has(CAP_SYS_PTRACE) {
            warnings.push(
                "no CAP_SYS_PTRACE: the executables of processes owned by another user, or holding \
                 capabilities golens lacks (any other container's), cannot be read, so those Go \
                 processes are not watched (counted in \
                 golens_agent_discovery_errors_total{reason=\"permission_denied\"})",
            );
        }
        if !self.has(CAP_DAC_READ_SEARCH) && !self.has(CAP_DAC_OVERRIDE) {
            warnings.push(
                "no CAP_DAC_READ_SEARCH: the open fds of processes owned by another user cannot be \
                 counted (/proc/PID/fd), so golens_process_open_fds is absent for them",
            );
        }
        // Since 5.11 eBPF memory is charged to the memory cgroup, not to
        // RLIMIT_MEMLOCK.
        let memlock_charged = kernel.is_none_or(|version| version < (5, 11));
        if memlock_charged && !self.has(CAP_SYS_RESOURCE) && !self.has(CAP_SYS_ADMIN) {
            warnings.push(
                "no CAP_SYS_RESOURCE: RLIMIT_MEMLOCK cannot be raised; kernels before 5.11 may \
                 refuse to create the eBPF maps",
            );
        }
        warnings
    }
}

/// The running kernel's (major, minor), from uname(2).
pub fn kernel_version() -> Option<(u32, u32)> {
    // SAFETY: uname fills a zeroed struct it is given.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut name) } != 0 {
        return None;
    }
    // SAFETY: uname NUL-terminates release.
    let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) };
    parse_kernel_release(&release.to_string_lossy())
}

/// "6.18.44-fc-v669" -> (6, 18).
fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Kernels before 5.11 charge eBPF maps to RLIMIT_MEMLOCK; raise it where allowed.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid, fully initialised struct.
    let result = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if result != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: golens holds a few fds
/// per probed binary (links) and per map, and a low soft limit (1024 is
/// common) would make attaching fail with EMFILE on a busy node.
pub fn raise_nofile_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid, fully initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let before = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::debug!(from = before, to = limit.rlim_max, "raised RLIMIT_NOFILE");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(bits: &[u32]) -> Capabilities {
        Capabilities(bits.iter().fold(0, |acc, bit| acc | (1 << bit)))
    }

    #[test]
    fn parses_cap_eff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let caps = Capabilities::parse_status(status).unwrap();
        assert!(caps.check_bpf().is_ok());
        assert!(Capabilities::parse_status("Name: x\n").is_none());
        assert!(Capabilities::parse_status("CapEff:\tzz\n").is_none());
    }

    #[test]
    fn names_each_missing_capability() {
        let error = caps(&[]).check_bpf().unwrap_err().to_string();
        assert!(error.contains("CAP_BPF and CAP_PERFMON"), "{error}");
        let error = caps(&[CAP_BPF]).check_bpf().unwrap_err().to_string();
        assert!(error.contains("missing capability CAP_PERFMON"), "{error}");
        assert!(caps(&[CAP_BPF, CAP_PERFMON]).check_bpf().is_ok());
        assert!(caps(&[CAP_SYS_ADMIN]).check_bpf().is_ok());
    }

    #[test]
    fn warns_for_each_capability_that_limits_what_is_seen() {
        let all = caps(&[CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH]);
        assert!(all.warnings(Some((6, 18))).is_empty());
        let warnings =
            caps(&[CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN]).warnings(Some((6, 18))).join("\n");
        assert!(warnings.contains("no CAP_SYS_PTRACE"), "{warnings}");
        assert!(warnings.contains("no CAP_DAC_READ_SEARCH"), "{warnings}");
        assert!(caps(&[CAP_SYS_PTRACE, CAP_DAC_OVERRIDE]).warnings(Some((6, 1))).is_empty());
        // RLIMIT_MEMLOCK only matters before 5.11.
        let old = caps(&[CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH]).warnings(Some((5, 10))).join("\n");
        assert!(old.contains("no CAP_SYS_RESOURCE"), "{old}");
    }

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_kernel_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel_release("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(parse_kernel_release("6.1"), Some((6, 1)));
        assert_eq!(parse_kernel_release("weird"), None);
        assert!(kernel_version().is_some());
    }

    #[test]
    fn a_refused_syscall_names_seccomp_or_a_security_module() {
        assert_eq!(classify(libc::EINVAL, true), None);
        assert_eq!(classify(libc::EFAULT, true), None);
        for errno in [libc::EPERM, libc::ENOSYS, libc::EACCES] {
            assert_eq!(classify(errno, true), Some((errno, true)));
        }
        let blocked = |seccomp_filter| BlockedSyscall {
            syscall: "bpf",
            capability: "CAP_BPF",
            consequence: "no eBPF program can be loaded",
            errno: libc::EPERM,
            seccomp_filter,
        };
        let message = blocked(true).to_string();
        assert!(message.starts_with("the seccomp profile blocks bpf() (Operation not permitted"));
        assert!(message.contains("deploy/seccomp-golens.json"), "{message}");
        assert!(message.contains("allows bpf() to CAP_BPF"), "{message}");
        let message = blocked(false).to_string();
        assert!(message.contains("no seccomp filter is active"), "{message}");
        assert!(message.contains("security module"), "{message}");
    }

    #[test]
    fn perf_event_open_is_allowed_without_a_seccomp_filter() {
        // Its NULL attribute fails with EFAULT, even for an unprivileged user.
        if !seccomp_filter_active() {
            assert!(perf_event_open_blocked().is_none());
        }
    }
}
