//! Fixture facts for the rules' tests: a healthy host with one Go process,
//! which each test changes in the one place it is about.

use std::path::Path;

use crate::doctor::facts::*;

pub fn healthy() -> Facts {
    Facts {
        kernel_release: Ok("6.1.0".into()),
        max_map_count: Ok(262_144),
        file_nr: Ok(FileNr { allocated: 1_000, max: 1_000_000 }),
        port_range: Ok(PortRange { low: 32768, high: 60999 }),
        tcp_sockets: Ok(vec![
            socket(8080, "0.0.0.0", 0, TCP_LISTEN),
            socket(40_000, "10.0.0.5", 5432, 0x01),
        ]),
        tcp_tw_reuse: Ok(2),
        somaxconn: Ok(4096),
        listen_overflows: Ok(0),
        conntrack: Ok(Some(Conntrack { count: 100, max: 262_144 })),
        transparent_hugepage: Ok(Some(TransparentHugepage {
            enabled: Ok("madvise".into()),
            defrag: Ok("madvise".into()),
        })),
        clocksource: Ok(Clocksource {
            current: "tsc".into(),
            available: vec!["tsc".into(), "hpet".into(), "acpi_pm".into()],
        }),
        ntp: Ok(NtpStatus { synchronized: true, max_error_us: 5_000 }),
        swappiness: Ok(60),
        swap_total_kib: Ok(0),
        overcommit_memory: Ok(0),
        processes: Processes {
            listing_error: None,
            go: vec![go_process(42, "api")],
            uninspected: Vec::new(),
        },
    }
}

/// A Go 1.21 process with headroom everywhere: GOMAXPROCS and GOMEMLIMIT set
/// to fit its cgroup's 4 CPUs and 512 MiB.
pub fn go_process(pid: u32, comm: &str) -> GoProcess {
    GoProcess {
        pid,
        comm: comm.into(),
        go_version: Some("go1.21.13".into()),
        vma_count: Ok(300),
        open_fds: Ok(20),
        nofile: Ok(NofileLimit { soft: Some(1_048_576), hard: Some(1_048_576) }),
        listening_sockets: None,
        env: Ok(GoEnv {
            gomaxprocs: Some("4".into()),
            gomemlimit: Some("460MiB".into()),
            godebug: None,
        }),
        cpus_allowed: Ok(8),
        cpu_limit: Ok(CpuLimit { leaf: Some(quota(4.0)), tightest: Some(quota(4.0)) }),
        memory_limit: Ok(Some(MemoryLimit {
            bytes: 512 << 20,
            file: "/sys/fs/cgroup/app/memory.max".into(),
        })),
    }
}

pub fn quota(cpus: f64) -> CpuQuota {
    CpuQuota {
        quota_us: (cpus * 100_000.0) as u64,
        period_us: 100_000,
        file: "/sys/fs/cgroup/app/cpu.max".into(),
    }
}

pub fn socket(local_port: u16, remote: &str, remote_port: u16, state: u8) -> TcpSocket {
    TcpSocket { local_port, remote: remote.parse().unwrap(), remote_port, state, inode: 1 }
}

pub fn uninspected(pid: u32) -> Uninspected {
    Uninspected {
        pid,
        comm: "secret".into(),
        reason: "permission denied".into(),
        permission_denied: true,
    }
}

pub fn permission_denied(path: &str) -> Unreadable {
    Unreadable::io(Path::new(path), &std::io::Error::from(std::io::ErrorKind::PermissionDenied))
}

pub fn absent(path: &str) -> Unreadable {
    Unreadable::io(Path::new(path), &std::io::Error::from(std::io::ErrorKind::NotFound))
}
