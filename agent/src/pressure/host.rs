//! Host-wide pressure: sysctls, /proc/net/netstat, conntrack, ephemeral ports.
//!
//! Network files are read through /proc/thread-self/net and /proc/sys/net,
//! which both follow the network namespace of the calling thread: that is what
//! lets [`super::read_host_in_net_namespace`] read another namespace from a
//! thread that has joined it.

use std::{collections::BTreeMap, path::Path};

use super::{ports, read_number, read_text, record, HostPressure, Unavailable};

const MAX_MAP_COUNT: &str = "/proc/sys/vm/max_map_count";
const FILE_NR: &str = "/proc/sys/fs/file-nr";
const PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
const NETSTAT: &str = "/proc/thread-self/net/netstat";
const CONNTRACK_COUNT: &str = "/proc/sys/net/netfilter/nf_conntrack_count";
const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

/// Host pressure, with the network values of the calling thread's network
/// namespace (golens' own).
pub fn read_host() -> HostPressure {
    let mut reasons = BTreeMap::new();
    let max_map_count =
        record(&mut reasons, "max_map_count", read_number(Path::new(MAX_MAP_COUNT)));

    let file_nr = read_text(Path::new(FILE_NR)).and_then(|text| {
        parse_file_nr(&text).ok_or_else(|| malformed(FILE_NR, "expected 3 numbers"))
    });
    let files_allocated =
        record(&mut reasons, "files_allocated", file_nr.clone().map(|(allocated, _)| allocated));
    let files_max = record(&mut reasons, "files_max", file_nr.map(|(_, max)| max));

    let range = read_text(Path::new(PORT_RANGE)).and_then(|text| {
        parse_port_range(&text).ok_or_else(|| malformed(PORT_RANGE, "expected \"<low> <high>\""))
    });
    let (ephemeral_ports_used, tcp_time_wait, port_count_method) = match &range {
        Ok((low, high)) => {
            let counted = ports::count(*low, *high);
            if let Some(netlink_error) = counted.netlink_error {
                reasons.insert("port_count_netlink", netlink_error);
            }
            match counted.counts {
                Ok(counts) => {
                    (Some(counts.ports_used), Some(counts.time_wait), Some(counted.method))
                }
                Err(reason) => {
                    reasons.insert("ephemeral_ports_used", reason.clone());
                    reasons.insert("tcp_time_wait", reason);
                    (None, None, None)
                }
            }
        }
        Err(reason) => {
            reasons.insert("ephemeral_ports_used", reason.clone());
            // TIME_WAIT does not need the range, but comes from the same
            // dump; a host without the sysctl has bigger problems.
            reasons.insert("tcp_time_wait", reason.clone());
            (None, None, None)
        }
    };
    let ephemeral_ports = record(
        &mut reasons,
        "ephemeral_ports",
        range.clone().map(|(low, high)| port_count(low, high)),
    );
    let ephemeral_port_range = record(&mut reasons, "ephemeral_port_range", range);

    let listen_overflows = record(
        &mut reasons,
        "listen_overflows",
        read_text(Path::new(NETSTAT)).and_then(|text| {
            netstat_value(&text, "TcpExt", "ListenOverflows")
                .ok_or_else(|| malformed(NETSTAT, "no TcpExt ListenOverflows"))
        }),
    );

    let conntrack_entries = record(&mut reasons, "conntrack_entries", conntrack(CONNTRACK_COUNT));
    let conntrack_max = record(&mut reasons, "conntrack_max", conntrack(CONNTRACK_MAX));

    HostPressure {
        max_map_count,
        files_allocated,
        files_max,
        ephemeral_port_range,
        ephemeral_ports,
        ephemeral_ports_used,
        tcp_time_wait,
        port_count_method,
        listen_overflows,
        conntrack_entries,
        conntrack_max,
        reasons,
    }
}

fn malformed(path: &'static str, detail: &'static str) -> Unavailable {
    Unavailable::malformed(Path::new(path), detail)
}

/// A conntrack sysctl; absent means nf_conntrack is not loaded.
fn conntrack(path: &str) -> Result<u64, Unavailable> {
    match read_number(Path::new(path)) {
        Err(Unavailable::Absent { .. }) => Err(Unavailable::NotLoaded),
        other => other,
    }
}

fn port_count(low: u16, high: u16) -> u64 {
    u64::from(high) - u64::from(low) + 1
}

/// `fs.file-nr`: "<allocated> <free (always 0 since 2.6)> <max>".
pub(crate) fn parse_file_nr(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let allocated = fields.next()?.ok()?;
    let _unused = fields.next()?.ok()?;
    let max = fields.next()?.ok()?;
    Some((allocated, max))
}

/// `net.ipv4.ip_local_port_range`: "<low>\t<high>", low <= high.
pub(crate) fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut fields = text.split_whitespace().map(str::parse::<u16>);
    let low = fields.next()?.ok()?;
    let high = fields.next()?.ok()?;
    (low <= high && fields.next().is_none()).then_some((low, high))
}

/// A counter of /proc/net/netstat or /proc/net/snmp: each group is a pair of
/// lines, names then values, both starting with `<group>:`.
pub(crate) fn netstat_value(text: &str, group: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        let values = lines.next()?;
        let (Some(names), Some(values)) = (
            names.strip_prefix(group).and_then(|r| r.strip_prefix(':')),
            values.strip_prefix(group).and_then(|r| r.strip_prefix(':')),
        ) else {
            continue;
        };
        let position = names.split_whitespace().position(|n| n == name)?;
        return values.split_whitespace().nth(position)?.parse().ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETSTAT_FIXTURE: &str = "\
TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts PruneCalled RcvPruned OfoPruned OutOfWindowIcmps LockDroppedIcmps ArpFilter TW TWRecycled TWKilled PAWSActive PAWSEstab DelayedACKs DelayedACKLocked DelayedACKLost ListenOverflows ListenDrops TCPHPHits
TcpExt: 0 0 0 2 0 0 0 0 0 0 518 0 0 0 0 1093 0 3 17 21 99031
IpExt: InNoRoutes InTruncatedPkts InMcastPkts OutMcastPkts InBcastPkts OutBcastPkts InOctets OutOctets
IpExt: 0 0 0 0 0 0 123456 654321
MPTcpExt: MPCapableSYNRX ListenOverflows
MPTcpExt: 5 6
";

    #[test]
    fn listen_overflows_from_netstat() {
        assert_eq!(netstat_value(NETSTAT_FIXTURE, "TcpExt", "ListenOverflows"), Some(17));
        assert_eq!(netstat_value(NETSTAT_FIXTURE, "TcpExt", "ListenDrops"), Some(21));
        assert_eq!(netstat_value(NETSTAT_FIXTURE, "IpExt", "InOctets"), Some(123_456));
        assert_eq!(netstat_value(NETSTAT_FIXTURE, "MPTcpExt", "ListenOverflows"), Some(6));
        assert_eq!(netstat_value(NETSTAT_FIXTURE, "TcpExt", "NoSuchCounter"), None);
        assert_eq!(netstat_value("", "TcpExt", "ListenOverflows"), None);
        assert_eq!(netstat_value("TcpExt: ListenOverflows\n", "TcpExt", "ListenOverflows"), None);
    }

    #[test]
    fn file_nr_and_port_range() {
        assert_eq!(parse_file_nr("505\t0\t2466170\n"), Some((505, 2_466_170)));
        assert_eq!(parse_file_nr("505\t0\n"), None);
        assert_eq!(parse_file_nr("a b c"), None);
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("40000 40099"), Some((40000, 40099)));
        assert_eq!(port_count(40000, 40099), 100);
        for garbage in ["", "40000", "60999 32768", "1 70000", "1 2 3"] {
            assert_eq!(parse_port_range(garbage), None, "{garbage}");
        }
    }

    #[test]
    fn conntrack_absent_is_not_loaded() {
        assert_eq!(
            conntrack("/proc/sys/net/netfilter/no_such_sysctl"),
            Err(Unavailable::NotLoaded)
        );
    }

    #[test]
    fn this_host_reads() {
        let host = read_host();
        assert!(host.max_map_count.unwrap() > 0, "{host:?}");
        assert!(host.files_allocated.unwrap() > 0, "{host:?}");
        assert!(host.files_max.unwrap() >= host.files_allocated.unwrap(), "{host:?}");
        assert!(host.ephemeral_ports.unwrap() > 0, "{host:?}");
        assert!(host.ephemeral_ports_used.unwrap() <= host.ephemeral_ports.unwrap(), "{host:?}");
        assert!(host.tcp_time_wait.is_some(), "{host:?}");
        assert!(host.listen_overflows.is_some(), "{host:?}");
        // Both present or both absent with "not loaded".
        match (host.conntrack_entries, host.conntrack_max) {
            (Some(_), Some(_)) => {}
            (None, None) => {
                assert_eq!(host.reasons.get("conntrack_entries"), Some(&Unavailable::NotLoaded))
            }
            other => panic!("conntrack half read: {other:?} {host:?}"),
        }
    }
}
