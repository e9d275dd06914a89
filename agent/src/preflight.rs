//! Checks made before touching the kernel, so that a missing privilege is one
//! clear line instead of an EPERM from deep inside the loader.

use std::fs;

/// Linux capability numbers (include/uapi/linux/capability.h).
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "missing capability {missing}: golens loads eBPF programs; run it as root or grant \
         {missing} (e.g. `setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_sys_resource+ep golens`, \
         or securityContext.capabilities.add in Kubernetes)"
    )]
    MissingCapability { missing: String },
    #[error("cannot read own capabilities from /proc/self/status: {0}")]
    Status(String),
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
    pub fn warnings(self) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        if !self.has(CAP_SYS_PTRACE) && !self.has(CAP_SYS_ADMIN) {
            warnings.push(
                "no CAP_SYS_PTRACE: executables of processes owned by other users cannot be read, \
                 so those Go processes will not be found",
            );
        }
        if !self.has(CAP_SYS_RESOURCE) && !self.has(CAP_SYS_ADMIN) {
            warnings.push(
                "no CAP_SYS_RESOURCE: RLIMIT_MEMLOCK cannot be raised; kernels before 5.11 may \
                 refuse to create the eBPF maps",
            );
        }
        warnings
    }
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
}
