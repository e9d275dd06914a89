//! Parsers of the /proc and /sys files doctor reads. Pure functions on text:
//! `None` means "not the expected format", never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::facts::{FileNr, GoEnv, NofileLimit, PortRange, TcpSocket};

/// A sysctl holding one unsigned number ("65530\n").
pub fn number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// fs.file-nr: "allocated\tfree\tmax".
pub fn file_nr(text: &str) -> Option<FileNr> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let allocated = fields.next()?.ok()?;
    let _free = fields.next()?.ok()?;
    let max = fields.next()?.ok()?;
    Some(FileNr { allocated, max })
}

/// net.ipv4.ip_local_port_range: "32768\t60999".
pub fn port_range(text: &str) -> Option<PortRange> {
    let mut fields = text.split_whitespace().map(str::parse::<u16>);
    let low = fields.next()?.ok()?;
    let high = fields.next()?.ok()?;
    (low <= high && fields.next().is_none()).then_some(PortRange { low, high })
}

/// The "Max open files" row of /proc/PID/limits:
/// `Max open files            1024                 524288               files`.
pub fn nofile_limit(limits: &str) -> Option<NofileLimit> {
    let row = limits.lines().find_map(|line| line.strip_prefix("Max open files"))?;
    let mut fields = row.split_whitespace();
    let limit = |field: Option<&str>| -> Option<Option<u64>> {
        match field? {
            "unlimited" => Some(None),
            value => value.parse().ok().map(Some),
        }
    };
    Some(NofileLimit { soft: limit(fields.next())?, hard: limit(fields.next())? })
}

/// One counter of /proc/net/netstat (or /proc/net/snmp), which holds pairs
/// of lines: `TcpExt: Name1 Name2 …` then `TcpExt: 1 2 …`.
pub fn netstat_counter(text: &str, section: &str, name: &str) -> Option<u64> {
    let prefix = format!("{section}:");
    let mut lines = text.lines().filter(|line| line.starts_with(&prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let position = names.split_whitespace().skip(1).position(|n| n == name);
        if let Some(position) = position {
            return values.split_whitespace().skip(1).nth(position)?.parse().ok();
        }
    }
    None
}

/// The sockets of /proc/net/tcp or tcp6 (the header line and malformed lines are skipped).
pub fn tcp_table(text: &str) -> Vec<TcpSocket> {
    text.lines().filter_map(tcp_line).collect()
}

/// One line of /proc/net/tcp(6):
/// `   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 …`.
pub fn tcp_line(line: &str) -> Option<TcpSocket> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 10 || !fields[0].ends_with(':') {
        return None;
    }
    let (_, local_port) = address(fields[1])?;
    let (remote, remote_port) = address(fields[2])?;
    let state = u8::from_str_radix(fields[3], 16).ok()?;
    let inode = fields[9].parse().ok()?;
    Some(TcpSocket { local_port, remote, remote_port, state, inode })
}

/// "0100007F:1F90" (IPv4) or 32 hex digits ":port" (IPv6). The kernel prints
/// each 32-bit word of the network-order address as a host-order integer.
fn address(text: &str) -> Option<(IpAddr, u16)> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// The Go runtime's variables in /proc/PID/environ (NUL-separated
/// `NAME=value`). The first occurrence wins, as in the runtime's `gogetenv`.
pub fn go_env(environ: &[u8]) -> GoEnv {
    let mut env = GoEnv::default();
    for entry in environ.split(|&b| b == 0) {
        let entry = String::from_utf8_lossy(entry);
        let Some((name, value)) = entry.split_once('=') else { continue };
        let slot = match name {
            "GOMAXPROCS" => &mut env.gomaxprocs,
            "GOMEMLIMIT" => &mut env.gomemlimit,
            "GODEBUG" => &mut env.godebug,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value.to_string());
        }
    }
    env
}

/// The selected value of a sysfs choice file: "always [madvise] never" -> "madvise".
pub fn bracketed(text: &str) -> Option<String> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_string())
}

/// How many CPUs a list such as "0-3,8,10-11" names.
pub fn cpu_list_count(list: &str) -> Option<u32> {
    let mut count = 0u32;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        count += match part.split_once('-') {
            Some((first, last)) => {
                let (first, last): (u32, u32) = (first.parse().ok()?, last.parse().ok()?);
                last.checked_sub(first)? + 1
            }
            None => part.parse::<u32>().map(|_| 1).ok()?,
        };
    }
    (count > 0).then_some(count)
}

/// Cpus_allowed_list of /proc/PID/status, counted.
pub fn status_cpus_allowed(status: &str) -> Option<u32> {
    cpu_list_count(status.lines().find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?)
}

/// SwapTotal of /proc/meminfo, in KiB.
pub fn meminfo_swap_total_kib(meminfo: &str) -> Option<u64> {
    let value = meminfo.lines().find_map(|line| line.strip_prefix("SwapTotal:"))?;
    value.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// (major, minor) of a Go version string: "go1.21.13", "go1.25rc1", "go1.9".
pub fn go_version(version: &str) -> Option<(u32, u32)> {
    let rest = version.trim().strip_prefix("go")?;
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// A GOMAXPROCS value as the runtime takes it: a positive decimal number;
/// anything else is ignored (the default applies).
pub fn gomaxprocs(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|&n| n > 0)
}

/// What a GOMEMLIMIT value means to the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimitSetting {
    Bytes(u64),
    /// "off": no limit.
    Off,
}

/// GOMEMLIMIT: a byte count with an optional suffix B, KiB, MiB, GiB, TiB, or "off".
pub fn gomemlimit(value: &str) -> Option<MemoryLimitSetting> {
    if value == "off" {
        return Some(MemoryLimitSetting::Off);
    }
    let units = [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    let (digits, scale) = units
        .iter()
        .find_map(|&(suffix, scale)| value.strip_suffix(suffix).map(|d| (d, scale)))
        .unwrap_or_else(|| (value.strip_suffix('B').unwrap_or(value), 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(scale).map(MemoryLimitSetting::Bytes)
}

/// Whether GODEBUG turns a setting off, e.g. `containermaxprocs=0`. The last
/// occurrence wins, as in the runtime.
pub fn godebug_is_zero(godebug: &str, setting: &str) -> bool {
    godebug
        .split(',')
        .rev()
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == setting)
        .is_some_and(|(_, value)| value == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_numbers() {
        assert_eq!(number("65530\n"), Some(65530));
        assert_eq!(number("9223372036854775807\n"), Some(i64::MAX as u64));
        assert_eq!(number(""), None);
        assert_eq!(number("-1"), None);
        assert_eq!(number("12 34"), None);
    }

    #[test]
    fn file_nr_fields() {
        assert_eq!(file_nr("728\t0\t2466170\n"), Some(FileNr { allocated: 728, max: 2466170 }));
        assert_eq!(file_nr("728\t0\n"), None);
        assert_eq!(file_nr("a b c"), None);
    }

    #[test]
    fn port_ranges() {
        let range = port_range("32768\t60999\n").unwrap();
        assert_eq!(range, PortRange { low: 32768, high: 60999 });
        assert_eq!(range.size(), 28232);
        assert!(range.contains(32768) && range.contains(60999) && !range.contains(61000));
        assert_eq!(port_range("60999 32768"), None);
        assert_eq!(port_range("1024"), None);
        assert_eq!(port_range("1024 70000"), None);
        assert_eq!(port_range("1 2 3"), None);
    }

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
";

    #[test]
    fn nofile_from_limits() {
        assert_eq!(
            nofile_limit(LIMITS),
            Some(NofileLimit { soft: Some(1024), hard: Some(524288) })
        );
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(nofile_limit(unlimited), Some(NofileLimit { soft: None, hard: None }));
        assert_eq!(nofile_limit("Max cpu time unlimited unlimited seconds\n"), None);
        assert_eq!(nofile_limit("Max open files            lots\n"), None);
    }

    const NETSTAT: &str = "\
TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops
TcpExt: 0 0 17 21
IpExt: InNoRoutes ListenOverflows
IpExt: 5 99
";

    #[test]
    fn netstat_counters_by_section_and_name() {
        assert_eq!(netstat_counter(NETSTAT, "TcpExt", "ListenOverflows"), Some(17));
        assert_eq!(netstat_counter(NETSTAT, "TcpExt", "ListenDrops"), Some(21));
        assert_eq!(netstat_counter(NETSTAT, "IpExt", "ListenOverflows"), Some(99));
        assert_eq!(netstat_counter(NETSTAT, "TcpExt", "Nope"), None);
        assert_eq!(netstat_counter("TcpExt: ListenOverflows\n", "TcpExt", "ListenOverflows"), None);
        assert_eq!(
            netstat_counter("TcpExt: ListenOverflows\nTcpExt: x\n", "TcpExt", "ListenOverflows"),
            None
        );
    }

    const TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:8CA2 0500000A:1538 06 00000000:00000000 03:00000D2C 00000000     0        0 0 3 0000000000000000
";

    #[test]
    fn tcp_lines() {
        let sockets = tcp_table(TCP);
        assert_eq!(sockets.len(), 2);
        assert_eq!(sockets[0].local_port, 8080);
        assert_eq!(sockets[0].state, 0x0A);
        assert_eq!(sockets[0].inode, 12345);
        assert_eq!(sockets[1].local_port, 0x8CA2);
        assert_eq!(sockets[1].remote, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(sockets[1].remote_port, 5432);
        assert_eq!(sockets[1].state, 0x06);
        let v6 =
            "   0: 00000000000000000000000001000000:1F90 0000000000000000FFFF00000100007F:A0B1 01 \
                  00000000:00000000 00:00000000 00000000  1000        0 777 1";
        let socket = tcp_line(v6).unwrap();
        assert_eq!(socket.remote, "::ffff:127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(socket.remote_port, 0xA0B1);
        assert_eq!(socket.inode, 777);
        for garbage in [
            "",
            "sl local",
            "   0: zz:1 00000000:0000 0A a b c d e f",
            "0: 01:1 0:0 0A a b c d e 1",
        ] {
            assert_eq!(tcp_line(garbage), None, "{garbage}");
        }
    }

    #[test]
    fn environ_first_occurrence_wins() {
        let environ =
            b"PATH=/bin\0GOMAXPROCS=64\0GOMEMLIMIT=512MiB\0GOMAXPROCS=2\0GODEBUG=a=1,b=2\0junk\0";
        let env = go_env(environ);
        assert_eq!(env.gomaxprocs.as_deref(), Some("64"));
        assert_eq!(env.gomemlimit.as_deref(), Some("512MiB"));
        assert_eq!(env.godebug.as_deref(), Some("a=1,b=2"));
        assert_eq!(go_env(b""), GoEnv::default());
        assert_eq!(go_env(b"GOMAXPROCS=").gomaxprocs.as_deref(), Some(""));
    }

    #[test]
    fn bracketed_choice() {
        assert_eq!(bracketed("always [madvise] never\n").as_deref(), Some("madvise"));
        assert_eq!(
            bracketed("[always] defer defer+madvise madvise never").as_deref(),
            Some("always")
        );
        assert_eq!(bracketed("always madvise never"), None);
        assert_eq!(bracketed("[unterminated"), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list_count("0-1\n"), Some(2));
        assert_eq!(cpu_list_count("0-3,8,10-11"), Some(7));
        assert_eq!(cpu_list_count("5"), Some(1));
        assert_eq!(cpu_list_count(""), None);
        assert_eq!(cpu_list_count("3-1"), None);
        assert_eq!(cpu_list_count("x"), None);
        let status = "Name:\tapi\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\nMems_allowed:\t1\n";
        assert_eq!(status_cpus_allowed(status), Some(2));
        assert_eq!(status_cpus_allowed("Name:\tapi\n"), None);
    }

    #[test]
    fn meminfo_swap() {
        let meminfo = "MemTotal:  8000000 kB\nSwapTotal:       2097148 kB\nSwapFree: 1 kB\n";
        assert_eq!(meminfo_swap_total_kib(meminfo), Some(2097148));
        assert_eq!(meminfo_swap_total_kib("SwapTotal:             0 kB\n"), Some(0));
        assert_eq!(meminfo_swap_total_kib("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn go_versions() {
        assert_eq!(go_version("go1.21.13"), Some((1, 21)));
        assert_eq!(go_version("go1.25rc1"), Some((1, 25)));
        assert_eq!(go_version("go1.9"), Some((1, 9)));
        assert_eq!(go_version("go1.26.0 X:nocoverageredesign"), Some((1, 26)));
        assert_eq!(go_version("devel +abc"), None);
        assert_eq!(go_version("go"), None);
    }

    #[test]
    fn gomaxprocs_values() {
        assert_eq!(gomaxprocs("64"), Some(64));
        assert_eq!(gomaxprocs("0"), None);
        assert_eq!(gomaxprocs("-1"), None);
        assert_eq!(gomaxprocs(" 4"), None);
        assert_eq!(gomaxprocs(""), None);
    }

    #[test]
    fn gomemlimit_values() {
        use MemoryLimitSetting::*;
        assert_eq!(gomemlimit("512MiB"), Some(Bytes(512 << 20)));
        assert_eq!(gomemlimit("1GiB"), Some(Bytes(1 << 30)));
        assert_eq!(gomemlimit("2TiB"), Some(Bytes(2 << 40)));
        assert_eq!(gomemlimit("4096KiB"), Some(Bytes(4 << 20)));
        assert_eq!(gomemlimit("1000B"), Some(Bytes(1000)));
        assert_eq!(gomemlimit("1000"), Some(Bytes(1000)));
        assert_eq!(gomemlimit("off"), Some(Off));
        assert_eq!(gomemlimit("1GB"), None);
        assert_eq!(gomemlimit("MiB"), None);
        assert_eq!(gomemlimit("99999999999TiB"), None);
    }

    #[test]
    fn godebug_settings() {
        assert!(godebug_is_zero("containermaxprocs=0", "containermaxprocs"));
        assert!(godebug_is_zero("x=1, containermaxprocs=0", "containermaxprocs"));
        assert!(!godebug_is_zero("containermaxprocs=0,containermaxprocs=1", "containermaxprocs"));
        assert!(!godebug_is_zero("containermaxprocs=1", "containermaxprocs"));
        assert!(!godebug_is_zero("", "containermaxprocs"));
    }
}
