//! Reading the host's facts under a root directory ("/" on a real host, a
//! fixture tree in tests). Thin: every file is read once and handed to a
//! parser; nothing sleeps or waits, so the agent can call it on a tick.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::{
    facts::{
        Clocksource, Conntrack, Facts, NtpStatus, Reading, TcpSocket, TransparentHugepage,
        Unreadable,
    },
    parse,
    process::{self, GoDetector},
};

/// Files under a root directory.
#[derive(Debug, Clone, Copy)]
pub struct Root<'a>(pub &'a Path);

impl Root<'_> {
    pub fn path(&self, relative: &str) -> PathBuf {
        self.0.join(relative.trim_start_matches('/'))
    }

    pub fn read(&self, relative: &str) -> Reading<String> {
        let path = self.path(relative);
        fs::read_to_string(&path).map_err(|error| Unreadable::io(&path, &error))
    }

    /// Reads and parses one file; `expected` describes the format for the error.
    pub fn parsed<T>(
        &self,
        relative: &str,
        parse: impl FnOnce(&str) -> Option<T>,
        expected: &str,
    ) -> Reading<T> {
        let text = self.read(relative)?;
        parse(&text).ok_or_else(|| Unreadable::malformed(&self.path(relative), expected))
    }

    /// Like `parsed`, with `None` when the file does not exist.
    fn parsed_if_present<T>(
        &self,
        relative: &str,
        parse: impl FnOnce(&str) -> Option<T>,
        expected: &str,
    ) -> Reading<Option<T>> {
        match self.parsed(relative, parse, expected) {
            Ok(value) => Ok(Some(value)),
            Err(error) if error.kind == super::facts::UnreadableKind::Absent => Ok(None),
            Err(error) => Err(error),
        }
    }
}

const A_NUMBER: &str = "a number";

/// Every fact doctor checks, read under `root`, with `detector` deciding
/// which processes are Go.
pub fn gather(root: &Path, detector: &mut dyn GoDetector) -> Facts {
    let root = Root(root);
    let number = |relative: &str| root.parsed(relative, parse::number, A_NUMBER);
    Facts {
        kernel_release: root.read("proc/sys/kernel/osrelease").map(|s| s.trim().to_string()),
        max_map_count: number("proc/sys/vm/max_map_count"),
        file_nr: root.parsed("proc/sys/fs/file-nr", parse::file_nr, "ALLOCATED FREE MAX"),
        port_range: root.parsed(
            "proc/sys/net/ipv4/ip_local_port_range",
            parse::port_range,
            "LOW HIGH",
        ),
        tcp_sockets: tcp_sockets(root, "proc/net"),
        tcp_tw_reuse: number("proc/sys/net/ipv4/tcp_tw_reuse"),
        somaxconn: number("proc/sys/net/core/somaxconn"),
        listen_overflows: root.parsed(
            "proc/net/netstat",
            |text| parse::netstat_counter(text, "TcpExt", "ListenOverflows"),
            "a `TcpExt:` ListenOverflows counter",
        ),
        conntrack: conntrack(root),
        transparent_hugepage: transparent_hugepage(root),
        clocksource: clocksource(root),
        ntp: ntp_status(),
        swappiness: number("proc/sys/vm/swappiness"),
        swap_total_kib: root.parsed(
            "proc/meminfo",
            parse::meminfo_swap_total_kib,
            "a SwapTotal line",
        ),
        overcommit_memory: number("proc/sys/vm/overcommit_memory"),
        processes: process::gather_processes(root, detector),
    }
}

/// The sockets of `<dir>/tcp` and `<dir>/tcp6`. A host without IPv6 has no
/// tcp6: that is no error.
pub fn tcp_sockets(root: Root<'_>, dir: &str) -> Reading<Vec<TcpSocket>> {
    let mut sockets = parse::tcp_table(&root.read(&format!("{dir}/tcp"))?);
    match root.read(&format!("{dir}/tcp6")) {
        Ok(text) => sockets.extend(parse::tcp_table(&text)),
        Err(error) if error.kind == super::facts::UnreadableKind::Absent => {}
        Err(error) => return Err(error),
    }
    Ok(sockets)
}

/// nf_conntrack_count and _max; `None` when the module is not loaded.
fn conntrack(root: Root<'_>) -> Reading<Option<Conntrack>> {
    let dir = "proc/sys/net/netfilter";
    let Some(count) =
        root.parsed_if_present(&format!("{dir}/nf_conntrack_count"), parse::number, A_NUMBER)?
    else {
        return Ok(None);
    };
    let max = root.parsed(&format!("{dir}/nf_conntrack_max"), parse::number, A_NUMBER)?;
    Ok(Some(Conntrack { count, max }))
}

/// `None` when the kernel has no THP (no /sys/kernel/mm/transparent_hugepage).
fn transparent_hugepage(root: Root<'_>) -> Reading<Option<TransparentHugepage>> {
    let dir = "sys/kernel/mm/transparent_hugepage";
    match fs::metadata(root.path(dir)) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Unreadable::io(&root.path(dir), &error)),
        Ok(_) => {}
    }
    let choice = |name: &str| root.parsed(&format!("{dir}/{name}"), parse::bracketed, "[selected]");
    Ok(Some(TransparentHugepage { enabled: choice("enabled"), defrag: choice("defrag") }))
}

fn clocksource(root: Root<'_>) -> Reading<Clocksource> {
    let dir = "sys/devices/system/clocksource/clocksource0";
    let current = root.parsed(
        &format!("{dir}/current_clocksource"),
        |text| Some(text.trim().to_string()).filter(|name| !name.is_empty()),
        "a clocksource name",
    )?;
    let available = root
        .read(&format!("{dir}/available_clocksource"))
        .map(|text| text.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    Ok(Clocksource { current, available })
}

/// adjtimex(2) without changing anything (modes = 0): any user may call it.
/// It reads the running kernel's clock whatever the root directory is.
pub fn ntp_status() -> Reading<NtpStatus> {
    // SAFETY: `timex` is a plain C struct for which all-zero is valid, and
    // modes = 0 asks the kernel only to fill it in.
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to a live, writable `timex`.
    let state = unsafe { libc::adjtimex(&mut timex) };
    if state < 0 {
        let error = io::Error::last_os_error();
        return Err(Unreadable::io(Path::new("adjtimex(2)"), &error));
    }
    Ok(NtpStatus {
        synchronized: timex.status & libc::STA_UNSYNC == 0,
        max_error_us: timex.maxerror as i64,
    })
}
