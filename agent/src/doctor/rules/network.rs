//! Network checks: ephemeral ports, TIME_WAIT reuse, the listen backlog.
//! Sockets are those of golens' own network namespace (the host's, for a
//! DaemonSet with hostNetwork).

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use crate::doctor::{
    check::{Check, Status},
    facts::{Facts, PortRange, TcpSocket, TCP_LISTEN, TCP_TIME_WAIT},
};

use super::{check, percent, ratio_status, unknown};

/// A smaller ip_local_port_range warns (Linux's default, 32768-60999, is 28232 ports).
const MIN_PORT_RANGE: u64 = 28_000;

const PORT_RANGE_WHY: &str = "Each outgoing TCP connection takes a local port from \
net.ipv4.ip_local_port_range, and a port can be shared only by connections to different \
destinations. Go HTTP clients that do not reuse connections (bodies not read to EOF and closed, \
DisableKeepAlives, a new http.Client or Transport per request) go through ports fast and leave \
each in TIME_WAIT for 60 s; when a destination has no port left, connect() fails with \
EADDRNOTAVAIL (`cannot assign requested address`). Warns on a range under 28000 ports, or when \
ports in use (overall, or to the busiest destination) pass 50 % of it; fails above 90 %.";

pub fn ip_local_port_range(facts: &Facts) -> Check {
    const ID: &str = "ip_local_port_range";
    let range = match &facts.port_range {
        Ok(range) => *range,
        Err(error) => return unknown(ID, error, PORT_RANGE_WHY),
    };
    let size = range.size();
    let size_status = if size < MIN_PORT_RANGE { Status::Warn } else { Status::Pass };
    let head = format!("{}-{} ({size} ports)", range.low, range.high);
    let fix = "sysctl -w net.ipv4.ip_local_port_range=\"10240 65535\" (list the host's own \
               service ports in net.ipv4.ip_local_reserved_ports), and reuse connections in Go \
               clients: read response bodies to EOF, Close them, share one http.Client"
        .to_string();
    let sockets = match &facts.tcp_sockets {
        Ok(sockets) => sockets,
        Err(error) if size_status == Status::Pass => {
            let mut check = unknown(ID, error, PORT_RANGE_WHY);
            check.value = format!("{head}; {}", check.value);
            return check;
        }
        Err(error) => {
            let value = format!("{head}; cannot read {error}");
            return check(ID, size_status, value, PORT_RANGE_WHY, fix);
        }
    };
    let usage = PortUse::of(sockets, range);
    let mut value = format!(
        "{head}; {} in use ({})",
        usage.distinct_ports,
        percent(usage.distinct_ports, size)
    );
    let mut used = usage.distinct_ports;
    if let Some((destination, count)) = usage.busiest {
        value.push_str(&format!(
            ", busiest destination {destination} with {count} ({})",
            percent(count, size)
        ));
        used = used.max(count);
    }
    check(ID, size_status.max(ratio_status(used, size)), value, PORT_RANGE_WHY, fix)
}

/// How the sockets use a port range.
struct PortUse {
    /// Local ports inside the range held by any socket.
    distinct_ports: u64,
    /// The destination with the most connections from ports in the range.
    busiest: Option<(SocketAddr, u64)>,
}

impl PortUse {
    fn of(sockets: &[TcpSocket], range: PortRange) -> PortUse {
        let in_range = sockets.iter().filter(|socket| range.contains(socket.local_port));
        let distinct_ports =
            in_range.clone().map(|socket| socket.local_port).collect::<HashSet<_>>().len() as u64;
        let mut by_destination: HashMap<(IpAddr, u16), u64> = HashMap::new();
        for socket in in_range.filter(|s| s.state != TCP_LISTEN && s.remote_port != 0) {
            *by_destination
                .entry((socket.remote.to_canonical(), socket.remote_port))
                .or_default() += 1;
        }
        let busiest = by_destination
            .into_iter()
            .max_by_key(|&((ip, port), count)| (count, ip, port))
            .map(|((ip, port), count)| (SocketAddr::new(ip, port), count));
        PortUse { distinct_ports, busiest }
    }
}

/// TIME_WAIT sockets above this fraction of the port range are "many".
const TIME_WAIT_MANY_FRACTION: f64 = 0.1;
/// Linux's default port range size, when the range cannot be read.
const DEFAULT_PORT_RANGE_SIZE: u64 = 28_232;

const TW_REUSE_WHY: &str = "A closed connection's local port stays in TIME_WAIT for 60 s. \
net.ipv4.tcp_tw_reuse=1 lets new outgoing connections take such ports when TCP timestamps make \
it safe; 2 (the default) allows it for loopback only, 0 never. A Go client that opens a \
connection per request piles up TIME_WAIT sockets and runs out of ports (see \
ip_local_port_range). Warns when it is not 1 and TIME_WAIT sockets exceed 10 % of the port \
range.";

pub fn tcp_tw_reuse(facts: &Facts) -> Check {
    const ID: &str = "tcp_tw_reuse";
    let reuse = match &facts.tcp_tw_reuse {
        Ok(reuse) => *reuse,
        Err(error) => return unknown(ID, error, TW_REUSE_WHY),
    };
    let meaning = match reuse {
        0 => "off",
        1 => "on",
        2 => "loopback only",
        _ => "unknown mode",
    };
    let head = format!("{reuse} ({meaning})");
    let time_wait = match &facts.tcp_sockets {
        Ok(sockets) => sockets.iter().filter(|s| s.state == TCP_TIME_WAIT).count() as u64,
        Err(_) if reuse == 1 => return check(ID, Status::Pass, head, TW_REUSE_WHY, String::new()),
        Err(error) => {
            let mut check = unknown(ID, error, TW_REUSE_WHY);
            check.value = format!("{head}; {}", check.value);
            return check;
        }
    };
    let range = facts.port_range.as_ref().map_or(DEFAULT_PORT_RANGE_SIZE, PortRange::size);
    let many = (range as f64 * TIME_WAIT_MANY_FRACTION) as u64;
    let status = if reuse != 1 && time_wait > many { Status::Warn } else { Status::Pass };
    check(
        ID,
        status,
        format!("{head}; {time_wait} sockets in TIME_WAIT (many: above {many})"),
        TW_REUSE_WHY,
        "sysctl -w net.ipv4.tcp_tw_reuse=1 (persist it in /etc/sysctl.d/99-go.conf), and make \
         Go clients reuse connections: read response bodies to EOF and Close them"
            .into(),
    )
}

/// A smaller accept queue warns (the kernel's default is 4096 since Linux 5.4, 128 before).
const MIN_SOMAXCONN: u64 = 1024;

const SOMAXCONN_WHY: &str = "Go passes net.core.somaxconn (read once at startup) as the backlog \
of every net.Listen: it is the accept queue of each listening socket. When the queue is full, \
new connections are dropped and clients retransmit their SYN after 1 s: latency spikes while \
the service is slow to accept (GC pauses, CPU throttling). ListenOverflows counts those drops \
since boot. Warns below 1024 or when any overflow was counted.";

pub fn somaxconn(facts: &Facts) -> Check {
    const ID: &str = "somaxconn";
    let backlog = match &facts.somaxconn {
        Ok(backlog) => *backlog,
        Err(error) => return unknown(ID, error, SOMAXCONN_WHY),
    };
    let backlog_status = if backlog < MIN_SOMAXCONN { Status::Warn } else { Status::Pass };
    let (overflow_status, overflows) = match &facts.listen_overflows {
        Ok(0) => (Status::Pass, "no listen overflow since boot".to_string()),
        Ok(n) => (Status::Warn, format!("{n} listen overflows since boot")),
        Err(error) => (Status::Unknown, format!("cannot read {error}")),
    };
    let mut fix = Vec::new();
    if backlog_status != Status::Pass {
        fix.push(
            "sysctl -w net.core.somaxconn=4096 (persist it in /etc/sysctl.d/), then restart the \
             Go services (they read it at startup)",
        );
    }
    if overflow_status == Status::Warn {
        fix.push(
            "find the listener that overflows (`ss -ltn`: Recv-Q near Send-Q) and why it accepts \
             slowly (CPU throttling, GC pauses: golens top)",
        );
    }
    check(
        ID,
        backlog_status.max(overflow_status),
        format!("{backlog}; {overflows}"),
        SOMAXCONN_WHY,
        fix.join("; "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::rules::fixtures::*;

    fn with_sockets(range: PortRange, sockets: Vec<TcpSocket>) -> Facts {
        let mut facts = healthy();
        facts.port_range = Ok(range);
        facts.tcp_sockets = Ok(sockets);
        facts
    }

    const SMALL: PortRange = PortRange { low: 40_000, high: 40_009 };

    #[test]
    fn port_range_size_warns_when_small() {
        let facts = with_sockets(PortRange { low: 50_000, high: 60_000 }, Vec::new());
        let check = ip_local_port_range(&facts);
        assert_eq!(check.status, Status::Warn);
        assert!(check.value.starts_with("50000-60000 (10001 ports); 0 in use"), "{}", check.value);
        assert_eq!(ip_local_port_range(&healthy()).status, Status::Pass);
    }

    #[test]
    fn port_use_by_busiest_destination() {
        let to = |port: u16, remote: &str| socket(port, remote, 5432, 0x01);
        // 6 of 10 ports to one destination: warn.
        let sockets: Vec<TcpSocket> = (40_000..40_006).map(|p| to(p, "10.0.0.5")).collect();
        let facts = with_sockets(SMALL, sockets);
        let check = ip_local_port_range(&facts);
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert!(
            check.value.contains("busiest destination 10.0.0.5:5432 with 6"),
            "{}",
            check.value
        );
        // All 10 ports, to one destination (v4 and v4-mapped v6 are the same): fail.
        let mut sockets: Vec<TcpSocket> = (40_000..40_005).map(|p| to(p, "10.0.0.5")).collect();
        sockets.extend((40_005..40_010).map(|p| to(p, "::ffff:10.0.0.5")));
        let check = ip_local_port_range(&with_sockets(SMALL, sockets));
        assert_eq!(check.status, Status::Fail, "{check:?}");
        assert!(check.value.contains("with 10"), "{}", check.value);
        // Ports outside the range and listeners do not count.
        let sockets = vec![to(8080, "10.0.0.5"), socket(40_001, "0.0.0.0", 0, TCP_LISTEN)];
        let check = ip_local_port_range(&with_sockets(SMALL, sockets));
        assert_eq!(check.status, Status::Warn, "only the small range warns: {check:?}");
        assert!(
            check.value.ends_with("; 1 in use (10.0 %)"),
            "a listener holds its port: {}",
            check.value
        );
    }

    #[test]
    fn port_range_unreadable() {
        let mut facts = healthy();
        facts.tcp_sockets = Err(absent("/proc/net/tcp"));
        let check = ip_local_port_range(&facts);
        assert_eq!(check.status, Status::Unknown);
        assert!(check.value.starts_with("32768-60999 (28232 ports); cannot read /proc/net/tcp"));
        facts.port_range = Err(absent("/proc/sys/net/ipv4/ip_local_port_range"));
        assert_eq!(ip_local_port_range(&facts).status, Status::Unknown);
    }

    #[test]
    fn tw_reuse_statuses() {
        let time_wait = |n: u16| -> Vec<TcpSocket> {
            (0..n).map(|i| socket(40_000 + i, "10.0.0.5", 443, TCP_TIME_WAIT)).collect()
        };
        let with = |reuse: u64, n: u16| {
            let mut facts = with_sockets(PortRange { low: 40_000, high: 49_999 }, time_wait(n));
            facts.tcp_tw_reuse = Ok(reuse);
            tcp_tw_reuse(&facts)
        };
        assert_eq!(with(2, 1000).status, Status::Pass, "exactly 10 % is not many");
        let many = with(2, 1001);
        assert_eq!(many.status, Status::Warn);
        assert_eq!(many.value, "2 (loopback only); 1001 sockets in TIME_WAIT (many: above 1000)");
        assert_eq!(with(0, 1001).status, Status::Warn);
        assert_eq!(with(1, 5000).status, Status::Pass);
        let mut facts = healthy();
        facts.tcp_sockets = Err(permission_denied("/proc/net/tcp"));
        assert_eq!(tcp_tw_reuse(&facts).status, Status::Unknown);
        facts.tcp_tw_reuse = Ok(1);
        assert_eq!(tcp_tw_reuse(&facts).status, Status::Pass);
    }

    #[test]
    fn somaxconn_statuses() {
        let with = |backlog: u64, overflows| {
            let mut facts = healthy();
            facts.somaxconn = Ok(backlog);
            facts.listen_overflows = overflows;
            somaxconn(&facts)
        };
        let fine = with(4096, Ok(0));
        assert_eq!(fine.status, Status::Pass);
        assert_eq!(fine.value, "4096; no listen overflow since boot");
        let small = with(128, Ok(0));
        assert_eq!(small.status, Status::Warn);
        assert!(small.fix.unwrap().contains("net.core.somaxconn=4096"));
        let overflowing = with(4096, Ok(17));
        assert_eq!(overflowing.status, Status::Warn);
        assert!(overflowing.value.contains("17 listen overflows"));
        assert!(overflowing.fix.unwrap().contains("ss -ltn"));
        assert_eq!(with(4096, Err(absent("/proc/net/netstat"))).status, Status::Unknown);
        assert_eq!(with(128, Err(absent("/proc/net/netstat"))).status, Status::Warn);
        let mut facts = healthy();
        facts.somaxconn = Err(absent("/proc/sys/net/core/somaxconn"));
        assert_eq!(somaxconn(&facts).status, Status::Unknown);
    }
}
