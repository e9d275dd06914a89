//! Host-wide checks outside the network: open files, conntrack, huge pages,
//! the clock, swap and overcommit.

use crate::doctor::{
    check::{Check, Status},
    facts::Facts,
};

use super::{bytes, check, percent, ratio_status, unknown};

const FILE_MAX_WHY: &str = "fs.file-max caps the open files of the whole host. At the cap every \
process gets ENFILE (`too many open files in system`), Go services included, whatever their \
own RLIMIT_NOFILE. Warns above 50 % of the cap, fails above 90 %.";

pub fn fs_file_max(facts: &Facts) -> Check {
    const ID: &str = "fs_file_max";
    let file_nr = match &facts.file_nr {
        Ok(file_nr) => *file_nr,
        Err(error) => return unknown(ID, error, FILE_MAX_WHY),
    };
    check(
        ID,
        ratio_status(file_nr.allocated, file_nr.max),
        format!(
            "{} of {} file handles allocated ({})",
            file_nr.allocated,
            file_nr.max,
            percent(file_nr.allocated, file_nr.max)
        ),
        FILE_MAX_WHY,
        format!(
            "sysctl -w fs.file-max={} (persist it in /etc/sysctl.d/99-go.conf), and find the \
             process that holds them (see rlimit_nofile for Go processes)",
            file_nr.max.saturating_mul(2)
        ),
    )
}

const CONNTRACK_WHY: &str = "With netfilter connection tracking loaded (iptables NAT, \
kube-proxy, Docker), every connection holds an entry. When the table is full the kernel drops \
new packets (`nf_conntrack: table full, dropping packet` in dmesg) and Go clients see connect \
timeouts and retries. Warns above 50 % of nf_conntrack_max, fails above 90 %.";

pub fn conntrack(facts: &Facts) -> Check {
    const ID: &str = "conntrack";
    match &facts.conntrack {
        Err(error) => unknown(ID, error, CONNTRACK_WHY),
        Ok(None) => {
            check(ID, Status::Pass, "nf_conntrack not loaded".into(), CONNTRACK_WHY, String::new())
        }
        Ok(Some(table)) => check(
            ID,
            ratio_status(table.count, table.max),
            format!(
                "{} of {} entries ({})",
                table.count,
                table.max,
                percent(table.count, table.max)
            ),
            CONNTRACK_WHY,
            format!(
                "sysctl -w net.netfilter.nf_conntrack_max={} (persist it in /etc/sysctl.d/), and \
                 shorten net.netfilter.nf_conntrack_tcp_timeout_time_wait if most entries are \
                 TIME_WAIT",
                table.max.saturating_mul(2)
            ),
        ),
    }
}

const THP_WHY: &str = "With transparent huge pages defrag=always, a page fault in a \
huge-page-eligible region stalls in direct compaction until a 2 MiB page is free: milliseconds \
in whichever goroutine first touched new heap memory. enabled=always or madvise both suit Go: Go \
≥ 1.21.1 no longer asks for huge pages itself (1.21.0's MADV_HUGEPAGE/MADV_COLLAPSE was \
reverted), and with always its heap gets huge pages, which helps large heaps but can raise RSS \
(the scavenger returns memory in 4 KiB pages; khugepaged/max_ptes_none=0 limits that). Warns on \
defrag=always.";

pub fn transparent_hugepage(facts: &Facts) -> Check {
    const ID: &str = "transparent_hugepage";
    let thp = match &facts.transparent_hugepage {
        Err(error) => return unknown(ID, error, THP_WHY),
        Ok(None) => {
            return check(ID, Status::Pass, "not in this kernel".into(), THP_WHY, String::new())
        }
        Ok(Some(thp)) => thp,
    };
    let (enabled, defrag) = match (&thp.enabled, &thp.defrag) {
        (Ok(enabled), Ok(defrag)) => (enabled, defrag),
        (Err(error), _) | (_, Err(error)) => return unknown(ID, error, THP_WHY),
    };
    check(
        ID,
        if defrag == "always" { Status::Warn } else { Status::Pass },
        format!("enabled [{enabled}], defrag [{defrag}]"),
        THP_WHY,
        "echo defer+madvise > /sys/kernel/mm/transparent_hugepage/defrag (persist it with a \
         tmpfiles.d entry or a boot-time unit)"
            .into(),
    )
}

/// Clocksources whose reads the vDSO serves without a syscall.
const VDSO_CLOCKSOURCES: [&str; 6] = [
    "tsc",
    "kvm-clock",
    "hyperv_clocksource_tsc_page",
    "arch_sys_counter",
    "tod",
    "riscv_clocksource",
];
/// Clocksources that make every clock read a syscall and a slow device read.
const SLOW_CLOCKSOURCES: [&str; 5] = ["hpet", "acpi_pm", "jiffies", "refined-jiffies", "pit"];

const CLOCKSOURCE_WHY: &str = "time.Now, every timer and deadline, and the Go scheduler itself \
read the clock through the vDSO, without a syscall, when the clocksource allows it (tsc, \
kvm-clock, Hyper-V's TSC page, the arm64 timer). With hpet or acpi_pm each read is a real \
syscall plus a slow device read (microseconds), so time-heavy code (logging, tracing, timeouts) \
and the runtime slow down. Warns on a clocksource without a vDSO fast path.";

pub fn clocksource(facts: &Facts) -> Check {
    const ID: &str = "clocksource";
    let clock = match &facts.clocksource {
        Ok(clock) => clock,
        Err(error) => return unknown(ID, error, CLOCKSOURCE_WHY),
    };
    let current = clock.current.as_str();
    let available = if clock.available.is_empty() {
        String::new()
    } else {
        format!(" (available: {})", clock.available.join(" "))
    };
    let fast_available: Vec<&str> = clock
        .available
        .iter()
        .map(String::as_str)
        .filter(|name| VDSO_CLOCKSOURCES.contains(name))
        .collect();
    let fix = match fast_available.first() {
        Some(fast) => format!(
            "echo {fast} > /sys/devices/system/clocksource/clocksource0/current_clocksource \
             (persist: clocksource={fast} on the kernel command line); if the kernel switched \
             away from tsc, dmesg says why (`Marking clocksource 'tsc' as unstable`)"
        ),
        None => "this host offers no clocksource with a vDSO fast path; on a VM, enable the \
                 hypervisor's (kvm-clock, Hyper-V TSC page) or an invariant TSC"
            .into(),
    };
    let (status, note) = if VDSO_CLOCKSOURCES.contains(&current) {
        (Status::Pass, "")
    } else if SLOW_CLOCKSOURCES.contains(&current) {
        (Status::Warn, ", no vDSO fast path")
    } else {
        (Status::Unknown, ", not known to golens: it may or may not have a vDSO fast path")
    };
    check(ID, status, format!("{current}{note}{available}"), CLOCKSOURCE_WHY, fix)
}

const NTP_WHY: &str = "Go measures durations with the monotonic clock, so timers are \
unaffected, but wall-clock time (time.Now) is what logs, traces, TLS certificate and token \
expiry checks compare across hosts; an unsynchronized clock drifts. Read with adjtimex(2): warns \
when the kernel flags the clock unsynchronized (STA_UNSYNC).";

pub fn ntp_sync(facts: &Facts) -> Check {
    const ID: &str = "ntp_sync";
    let ntp = match &facts.ntp {
        Ok(ntp) => *ntp,
        Err(error) => return unknown(ID, error, NTP_WHY),
    };
    let (status, value) = if ntp.synchronized {
        (
            Status::Pass,
            format!("synchronized (estimated max error {:.1} ms)", ntp.max_error_us as f64 / 1e3),
        )
    } else {
        (Status::Warn, "not synchronized (STA_UNSYNC)".to_string())
    };
    check(
        ID,
        status,
        value,
        NTP_WHY,
        "enable time synchronization: `timedatectl set-ntp true` (systemd-timesyncd), or run \
         chronyd or ntpd; `chronyc tracking` or `timedatectl timesync-status` shows its state"
            .into(),
    )
}

/// With swap on, a swappiness above this warns.
const SWAPPINESS_WARN_ABOVE: u64 = 10;

const SWAPPINESS_WHY: &str = "The GC visits every live object each cycle: a swapped-out heap \
page turns a mark step into a disk read, stalling GC workers and the goroutines that assist \
them (latency spikes, long cycles). With swap on, a low vm.swappiness keeps anonymous memory \
(the Go heap) in RAM. Warns above 10 when swap is configured.";

pub fn vm_swappiness(facts: &Facts) -> Check {
    const ID: &str = "vm_swappiness";
    let (swappiness, swap_kib) = match (&facts.swappiness, &facts.swap_total_kib) {
        (Ok(swappiness), Ok(swap)) => (*swappiness, *swap),
        (Err(error), _) | (_, Err(error)) => return unknown(ID, error, SWAPPINESS_WHY),
    };
    let (status, value) = if swap_kib == 0 {
        (Status::Pass, format!("{swappiness} (no swap configured)"))
    } else {
        let status = if swappiness > SWAPPINESS_WARN_ABOVE { Status::Warn } else { Status::Pass };
        (status, format!("{swappiness} with {} of swap", bytes(swap_kib.saturating_mul(1024))))
    };
    check(
        ID,
        status,
        value,
        SWAPPINESS_WHY,
        "sysctl -w vm.swappiness=1 (persist it in /etc/sysctl.d/99-go.conf), or `swapoff -a` on \
         hosts that run latency-sensitive services"
            .into(),
    )
}

const OVERCOMMIT_WHY: &str = "Under vm.overcommit_memory=2 (strict accounting) every writable \
private mapping counts against CommitLimit. Go maps heap arenas and goroutine stacks ahead of \
use and keeps freed memory mapped, so a Go service fails with `fatal error: out of memory` \
while RAM is free. 0 (heuristic, the default) and 1 suit Go. Warns on 2.";

pub fn vm_overcommit_memory(facts: &Facts) -> Check {
    const ID: &str = "vm_overcommit_memory";
    let mode = match &facts.overcommit_memory {
        Ok(mode) => *mode,
        Err(error) => return unknown(ID, error, OVERCOMMIT_WHY),
    };
    let (status, meaning) = match mode {
        0 => (Status::Pass, "heuristic"),
        1 => (Status::Pass, "always overcommit"),
        2 => (Status::Warn, "strict accounting"),
        _ => (Status::Unknown, "not a mode golens knows"),
    };
    check(
        ID,
        status,
        format!("{mode} ({meaning})"),
        OVERCOMMIT_WHY,
        "sysctl -w vm.overcommit_memory=0 (persist it in /etc/sysctl.d/99-go.conf)".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{
        facts::{Clocksource, Conntrack, FileNr, NtpStatus, TransparentHugepage},
        rules::fixtures::*,
    };

    #[test]
    fn file_max_statuses() {
        for (allocated, status) in [(10, Status::Pass), (60, Status::Warn), (95, Status::Fail)] {
            let mut facts = healthy();
            facts.file_nr = Ok(FileNr { allocated, max: 100 });
            let check = fs_file_max(&facts);
            assert_eq!(check.status, status);
            assert!(check.value.starts_with(&format!("{allocated} of 100 file handles")));
        }
        let mut facts = healthy();
        facts.file_nr = Err(absent("/proc/sys/fs/file-nr"));
        let check = fs_file_max(&facts);
        assert_eq!(check.status, Status::Unknown);
        assert_eq!(check.value, "cannot read /proc/sys/fs/file-nr: absent");
        assert_eq!(check.fix, None, "nothing to run for an absent file");
    }

    #[test]
    fn conntrack_statuses() {
        let with = |conntrack| {
            let mut facts = healthy();
            facts.conntrack = conntrack;
            super::conntrack(&facts)
        };
        let not_loaded = with(Ok(None));
        assert_eq!(not_loaded.status, Status::Pass);
        assert_eq!(not_loaded.value, "nf_conntrack not loaded");
        assert_eq!(with(Ok(Some(Conntrack { count: 10, max: 100 }))).status, Status::Pass);
        assert_eq!(with(Ok(Some(Conntrack { count: 70, max: 100 }))).status, Status::Warn);
        let full = with(Ok(Some(Conntrack { count: 100, max: 100 })));
        assert_eq!(full.status, Status::Fail);
        assert!(full.fix.unwrap().contains("nf_conntrack_max=200"));
        let denied = with(Err(permission_denied("/proc/sys/net/netfilter/nf_conntrack_count")));
        assert_eq!(denied.status, Status::Unknown);
        assert!(denied.fix.unwrap().contains("root"));
    }

    #[test]
    fn thp_statuses() {
        let with = |enabled: &str, defrag: &str| {
            let mut facts = healthy();
            facts.transparent_hugepage = Ok(Some(TransparentHugepage {
                enabled: Ok(enabled.into()),
                defrag: Ok(defrag.into()),
            }));
            transparent_hugepage(&facts)
        };
        assert_eq!(with("always", "madvise").status, Status::Pass);
        assert_eq!(with("never", "never").status, Status::Pass);
        let always = with("always", "always");
        assert_eq!(always.status, Status::Warn);
        assert_eq!(always.value, "enabled [always], defrag [always]");
        let mut facts = healthy();
        facts.transparent_hugepage = Ok(None);
        assert_eq!(transparent_hugepage(&facts).status, Status::Pass);
        facts.transparent_hugepage = Ok(Some(TransparentHugepage {
            enabled: Ok("always".into()),
            defrag: Err(absent("/sys/kernel/mm/transparent_hugepage/defrag")),
        }));
        assert_eq!(transparent_hugepage(&facts).status, Status::Unknown);
    }

    #[test]
    fn clocksource_statuses() {
        let with = |current: &str, available: &[&str]| {
            let mut facts = healthy();
            facts.clocksource = Ok(Clocksource {
                current: current.into(),
                available: available.iter().map(|s| s.to_string()).collect(),
            });
            clocksource(&facts)
        };
        assert_eq!(with("tsc", &["tsc", "hpet"]).status, Status::Pass);
        assert_eq!(with("kvm-clock", &[]).status, Status::Pass);
        let hpet = with("hpet", &["hpet", "tsc", "acpi_pm"]);
        assert_eq!(hpet.status, Status::Warn);
        assert!(hpet.fix.unwrap().starts_with("echo tsc > "));
        let no_fast = with("acpi_pm", &["acpi_pm"]);
        assert_eq!(no_fast.status, Status::Warn);
        assert!(no_fast.fix.unwrap().contains("no clocksource with a vDSO"));
        assert_eq!(with("exotic", &["exotic"]).status, Status::Unknown);
        let mut facts = healthy();
        facts.clocksource = Err(absent("/sys/devices/system/clocksource/clocksource0"));
        assert_eq!(clocksource(&facts).status, Status::Unknown);
    }

    #[test]
    fn ntp_statuses() {
        let mut facts = healthy();
        assert_eq!(ntp_sync(&facts).status, Status::Pass);
        assert_eq!(ntp_sync(&facts).value, "synchronized (estimated max error 5.0 ms)");
        facts.ntp = Ok(NtpStatus { synchronized: false, max_error_us: 16_000_000 });
        let check = ntp_sync(&facts);
        assert_eq!(check.status, Status::Warn);
        assert!(check.fix.unwrap().contains("timedatectl set-ntp true"));
        facts.ntp = Err(absent("adjtimex(2)"));
        assert_eq!(ntp_sync(&facts).status, Status::Unknown);
    }

    #[test]
    fn swappiness_statuses() {
        let with = |swappiness: u64, swap_kib: u64| {
            let mut facts = healthy();
            facts.swappiness = Ok(swappiness);
            facts.swap_total_kib = Ok(swap_kib);
            vm_swappiness(&facts)
        };
        assert_eq!(with(60, 0).status, Status::Pass);
        assert_eq!(with(60, 0).value, "60 (no swap configured)");
        assert_eq!(with(1, 2 << 20).status, Status::Pass);
        let check = with(60, 2 << 20);
        assert_eq!(check.status, Status::Warn);
        assert_eq!(check.value, "60 with 2 GiB of swap");
        let mut facts = healthy();
        facts.swap_total_kib = Err(absent("/proc/meminfo"));
        assert_eq!(vm_swappiness(&facts).status, Status::Unknown);
    }

    #[test]
    fn overcommit_statuses() {
        for (mode, status) in
            [(0, Status::Pass), (1, Status::Pass), (2, Status::Warn), (7, Status::Unknown)]
        {
            let mut facts = healthy();
            facts.overcommit_memory = Ok(mode);
            assert_eq!(vm_overcommit_memory(&facts).status, status, "mode {mode}");
        }
        let mut facts = healthy();
        facts.overcommit_memory = Err(absent("/proc/sys/vm/overcommit_memory"));
        assert_eq!(vm_overcommit_memory(&facts).status, Status::Unknown);
    }
}
