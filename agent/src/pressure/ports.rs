//! Ephemeral ports in use and TIME_WAIT sockets, from one NETLINK_SOCK_DIAG
//! (inet_diag) dump per address family; /proc/net/tcp{,6} when netlink fails.
//!
//! **"Used" is the number of distinct local ports inside
//! `ip_local_port_range` held by at least one TCP socket, IPv4 and IPv6
//! together, over all local addresses, in any state** (LISTEN, ESTABLISHED,
//! TIME_WAIT, …). Why distinct ports over all addresses:
//! - the port space is shared by both families and by every local address
//!   (a wildcard bind holds the port on every address), so the union is the
//!   conservative reading of "how many of the range's ports are taken";
//! - it is bounded by the range size, so `used / size` is a ratio in [0, 1];
//! - a per-address maximum would need a map per address, and would hide a
//!   port held on one address from a connect on another.
//!
//! It is an upper bound on exhaustion, not a prediction: Linux can reuse one
//! ephemeral port for connections to different destinations, so connect()
//! can still succeed when used == size. It cannot fail for lack of ports
//! much earlier (ports in `ip_local_reserved_ports` are the exception), so the
//! ratio is what to alert on, with the EADDRNOTAVAIL failures counted by the
//! eBPF side. TIME_WAIT sockets hold their port and are counted in "used".
//!
//! Cost: the dump asks for no extensions (`idiag_ext = 0`), so each socket is
//! an 88-byte message; the kernel fills ~32 KiB per recv(). Ports are tallied
//! in an 8 KiB bitset, nothing is allocated per socket. /proc/net/tcp prints
//! ~150 bytes of text per socket that must then be parsed. Measured in this VM
//! (release build, 10 001 loopback sockets in a test namespace, 8 ABBA rounds,
//! `netlink_and_proc_agree_at_10k_sockets`): netlink min 10.1 / median 11.3 /
//! max 13.2 ms, /proc/net/tcp{,6} min 33.8 / median 36.4 / max 39.0 ms.

use std::{
    fs, io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use super::{PortCountMethod, Unavailable};

const TCP_TIME_WAIT: u8 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortCounts {
    /// Distinct local ports in the range.
    pub ports_used: u64,
    /// TCP sockets in TIME_WAIT, any port.
    pub time_wait: u64,
    /// TCP sockets seen, any port and state.
    pub sockets: u64,
}

pub(crate) struct Counted {
    pub counts: Result<PortCounts, Unavailable>,
    pub method: PortCountMethod,
    /// Why netlink was not used.
    pub netlink_error: Option<Unavailable>,
}

/// Counts in the calling thread's network namespace.
pub(crate) fn count(low: u16, high: u16) -> Counted {
    match count_netlink(low, high) {
        Ok(counts) => {
            Counted { counts: Ok(counts), method: PortCountMethod::Netlink, netlink_error: None }
        }
        Err(error) => {
            tracing::debug!(%error, "counting ports through /proc/net/tcp instead");
            Counted {
                counts: count_proc_net_tcp(low, high),
                method: PortCountMethod::ProcNetTcp,
                netlink_error: Some(error),
            }
        }
    }
}

/// Distinct ports in `[low, high]`, TIME_WAIT and total sockets, fed one
/// socket at a time.
pub(crate) struct PortTally {
    low: u16,
    high: u16,
    seen: [u64; 1024],
    counts: PortCounts,
}

impl PortTally {
    pub fn new(low: u16, high: u16) -> PortTally {
        PortTally {
            low,
            high,
            seen: [0; 1024],
            counts: PortCounts { ports_used: 0, time_wait: 0, sockets: 0 },
        }
    }

    pub fn add(&mut self, state: u8, local_port: u16) {
        self.counts.sockets += 1;
        if state == TCP_TIME_WAIT {
            self.counts.time_wait += 1;
        }
        if (self.low..=self.high).contains(&local_port) {
            let (word, bit) = (usize::from(local_port / 64), local_port % 64);
            if self.seen[word] & (1 << bit) == 0 {
                self.seen[word] |= 1 << bit;
                self.counts.ports_used += 1;
            }
        }
    }

    pub fn counts(&self) -> PortCounts {
        self.counts
    }
}

// ---- netlink -------------------------------------------------------------

/// linux/sock_diag.h
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, sockid (48).
const INET_DIAG_REQ_V2_LEN: usize = 56;
/// `struct inet_diag_msg`: family, state, timer, retrans, sockid (48),
/// expires, rqueue, wqueue, uid, inode.
const INET_DIAG_MSG_LEN: usize = 72;
/// The kernel fills at most ~32 KiB per dump message batch; room to spare.
const RECV_BUFFER: usize = 64 * 1024;

pub(crate) fn count_netlink(low: u16, high: u16) -> Result<PortCounts, Unavailable> {
    let netlink = |error: io::Error| Unavailable::Netlink { message: error.to_string() };
    let socket = open_sock_diag().map_err(netlink)?;
    let mut tally = PortTally::new(low, high);
    let mut buf = vec![0u8; RECV_BUFFER];
    for (seq, family) in [(1, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        send_dump_request(&socket, seq, family).map_err(netlink)?;
        loop {
            // SAFETY: buf is valid for writes of buf.len() bytes for the call.
            let n = unsafe {
                libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC)
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(netlink(error));
            }
            let n = n as usize;
            if n > buf.len() {
                return Err(Unavailable::Netlink {
                    message: format!("a {n}-byte message was truncated"),
                });
            }
            match parse_dump_chunk(&buf[..n], seq, &mut |state, port| tally.add(state, port)) {
                Ok(Chunk::More) => continue,
                Ok(Chunk::Done) => break,
                Err(DumpError::Errno(errno)) => {
                    return Err(netlink(io::Error::from_raw_os_error(errno)));
                }
                Err(DumpError::Malformed(detail)) => {
                    return Err(Unavailable::Netlink { message: detail.into() });
                }
            }
        }
    }
    Ok(tally.counts())
}

fn open_sock_diag() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a successful socket() returns a new fd that we own.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // A dump never stalls in practice; a collection must not hang if it does.
    let timeout = libc::timeval { tv_sec: 2, tv_usec: 0 };
    // SAFETY: a valid timeval, its size passed along.
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// `nlmsghdr` + `inet_diag_req_v2` for every TCP socket of `family`, all states.
pub(crate) fn dump_request(seq: u32, family: u8) -> [u8; NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN] {
    let mut request = [0u8; NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN];
    let len = request.len() as u32;
    request[0..4].copy_from_slice(&len.to_ne_bytes());
    request[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    request[6..8].copy_from_slice(&flags.to_ne_bytes());
    request[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel.
    let diag = &mut request[NLMSG_HDRLEN..];
    diag[0] = family;
    diag[1] = libc::IPPROTO_TCP as u8;
    // idiag_ext 0: no extensions, the smallest replies.
    diag[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // idiag_states: all
    request
}

fn send_dump_request(socket: &OwnedFd, seq: u32, family: u8) -> io::Result<()> {
    let request = dump_request(seq, family);
    // SAFETY: sockaddr_nl is plain data; all zero is a valid value.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: request and kernel are valid for reads of the lengths passed.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Chunk {
    More,
    Done,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DumpError {
    Errno(i32),
    Malformed(&'static str),
}

/// One recv()'d batch of netlink messages: calls `visit(state, local_port)`
/// for each socket of the dump `seq`; `Done` at NLMSG_DONE.
pub(crate) fn parse_dump_chunk(
    mut batch: &[u8],
    seq: u32,
    visit: &mut impl FnMut(u8, u16),
) -> Result<Chunk, DumpError> {
    let u32_at = |bytes: &[u8], at: usize| {
        u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    };
    while batch.len() >= NLMSG_HDRLEN {
        let len = u32_at(batch, 0) as usize;
        let kind = u16::from_ne_bytes([batch[4], batch[5]]);
        let message_seq = u32_at(batch, 8);
        if len < NLMSG_HDRLEN || len > batch.len() {
            return Err(DumpError::Malformed("netlink message length out of bounds"));
        }
        let payload = &batch[NLMSG_HDRLEN..len];
        if message_seq == seq {
            match kind {
                NLMSG_DONE => {
                    // A dump that failed midway says so in NLMSG_DONE's payload.
                    if payload.len() >= 4 && (u32_at(payload, 0) as i32) < 0 {
                        return Err(DumpError::Errno(-(u32_at(payload, 0) as i32)));
                    }
                    return Ok(Chunk::Done);
                }
                NLMSG_ERROR => {
                    let error =
                        if payload.len() >= 4 { u32_at(payload, 0) as i32 } else { -libc::EIO };
                    if error != 0 {
                        return Err(DumpError::Errno(-error));
                    }
                }
                SOCK_DIAG_BY_FAMILY => {
                    if payload.len() < INET_DIAG_MSG_LEN {
                        return Err(DumpError::Malformed("short inet_diag_msg"));
                    }
                    // idiag_state, then idiag_sport (big endian) at the sockid's start.
                    visit(payload[1], u16::from_be_bytes([payload[4], payload[5]]));
                }
                _ => {}
            }
        }
        let aligned = (len + 3) & !3;
        batch = &batch[aligned.min(batch.len())..];
    }
    Ok(Chunk::More)
}

// ---- /proc/net/tcp fallback -----------------------------------------------

const PROC_NET_TCP: [&str; 2] = ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"];

pub(crate) fn count_proc_net_tcp(low: u16, high: u16) -> Result<PortCounts, Unavailable> {
    let mut tally = PortTally::new(low, high);
    for path in PROC_NET_TCP.map(Path::new) {
        match fs::read_to_string(path) {
            Ok(text) => {
                tally_proc_net_tcp(&text, &mut tally)
                    .map_err(|detail| Unavailable::malformed(path, detail))?;
            }
            // No tcp6 when IPv6 is disabled: no IPv6 sockets.
            Err(error) if error.kind() == io::ErrorKind::NotFound && path.ends_with("tcp6") => {}
            Err(error) => return Err(Unavailable::from_io(path, &error)),
        }
    }
    Ok(tally.counts())
}

/// Lines of /proc/net/tcp or tcp6 after the header:
/// `  0: 0100007F:9C40 0100007F:1388 01 00000000:00000000 ...`
/// (local address:port in hex, remote, state in hex).
pub(crate) fn tally_proc_net_tcp(text: &str, tally: &mut PortTally) -> Result<(), &'static str> {
    for line in text.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_slot), Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            if line.trim().is_empty() {
                continue;
            }
            return Err("short line");
        };
        let port = local
            .rsplit_once(':')
            .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())
            .ok_or("local address without a hex port")?;
        let state = u8::from_str_radix(state, 16).map_err(|_| "state is not hex")?;
        tally.add(state, port);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(len as u32).to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        bytes.extend_from_slice(&seq.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(payload);
        bytes.resize((bytes.len() + 3) & !3, 0);
        bytes
    }

    fn socket(seq: u32, state: u8, port: u16) -> Vec<u8> {
        let mut payload = vec![0u8; INET_DIAG_MSG_LEN];
        payload[0] = libc::AF_INET as u8;
        payload[1] = state;
        payload[4..6].copy_from_slice(&port.to_be_bytes());
        payload[6..8].copy_from_slice(&5000u16.to_be_bytes()); // dport
        message(SOCK_DIAG_BY_FAMILY, seq, &payload)
    }

    #[test]
    fn request_layout() {
        let request = dump_request(7, libc::AF_INET6 as u8);
        assert_eq!(request.len(), 72);
        assert_eq!(u32::from_ne_bytes(request[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes([request[4], request[5]]), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u16::from_ne_bytes([request[6], request[7]]), 0x301, "REQUEST | DUMP");
        assert_eq!(u32::from_ne_bytes(request[8..12].try_into().unwrap()), 7);
        assert_eq!(&request[16..20], &[libc::AF_INET6 as u8, libc::IPPROTO_TCP as u8, 0, 0]);
        assert_eq!(&request[20..24], &[0xff; 4]);
        assert!(request[24..].iter().all(|&b| b == 0), "no socket filter");
    }

    #[test]
    fn dump_chunks_are_tallied() {
        let mut tally = PortTally::new(40000, 40099);
        let mut batch = Vec::new();
        batch.extend(socket(1, 1, 40000)); // ESTABLISHED
        batch.extend(socket(1, TCP_TIME_WAIT, 40000)); // same port, TIME_WAIT
        batch.extend(socket(1, 1, 40099));
        batch.extend(socket(1, 10, 5000)); // LISTEN outside the range
        batch.extend(socket(9, 1, 40050)); // another dump's message: ignored
        let mut visit = |state, port| tally.add(state, port);
        assert_eq!(parse_dump_chunk(&batch, 1, &mut visit), Ok(Chunk::More));
        assert_eq!(
            parse_dump_chunk(&message(NLMSG_DONE, 1, &0i32.to_ne_bytes()), 1, &mut visit),
            Ok(Chunk::Done)
        );
        assert_eq!(tally.counts(), PortCounts { ports_used: 2, time_wait: 1, sockets: 4 });
    }

    #[test]
    fn dump_errors_and_garbage() {
        let mut ignore = |_, _| {};
        let error = message(NLMSG_ERROR, 1, &(-libc::EACCES).to_ne_bytes());
        assert_eq!(parse_dump_chunk(&error, 1, &mut ignore), Err(DumpError::Errno(libc::EACCES)));
        let done = message(NLMSG_DONE, 1, &(-libc::EINTR).to_ne_bytes());
        assert_eq!(parse_dump_chunk(&done, 1, &mut ignore), Err(DumpError::Errno(libc::EINTR)));
        let mut long = socket(1, 1, 40000);
        long[0] = 200; // length beyond the batch
        assert!(matches!(parse_dump_chunk(&long, 1, &mut ignore), Err(DumpError::Malformed(_))));
        let short = message(SOCK_DIAG_BY_FAMILY, 1, &[0; 8]);
        assert!(matches!(parse_dump_chunk(&short, 1, &mut ignore), Err(DumpError::Malformed(_))));
        assert_eq!(parse_dump_chunk(&[], 1, &mut ignore), Ok(Chunk::More));
    }

    #[test]
    fn proc_net_tcp_and_tcp6() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0 100 0 0 10 0
   1: 0100007F:9C40 0100007F:1388 01 00000000:00000000 00:00000000 00000000     0        0 2002 1 0 20 4 30 10 -1
   2: 0100007F:9C41 0100007F:1388 06 00000000:00000000 03:00000F9A 00000000     0        0 0 3
";
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:9C40 00000000000000000000000001000000:1388 01 00000000:00000000 00:00000000 00000000     0        0 3001 1 0 20 4 30 10 -1
   1: 00000000000000000000000001000000:D431 00000000000000000000000001000000:1388 06 00000000:00000000 03:00000F9A 00000000     0        0 0 3
";
        let mut tally = PortTally::new(40000, 40099);
        tally_proc_net_tcp(tcp, &mut tally).unwrap();
        tally_proc_net_tcp(tcp6, &mut tally).unwrap();
        // 0x9C40 = 40000 twice (v4 and v6) counts once; 0xD431 = 54321 is outside.
        assert_eq!(tally.counts(), PortCounts { ports_used: 2, time_wait: 2, sockets: 5 });
        assert!(tally_proc_net_tcp("header\n   0: 0100007F\n", &mut tally).is_err());
        assert!(tally_proc_net_tcp("header\n 0: 0100007F:XYZ 0:0 01\n", &mut tally).is_err());
        assert!(tally_proc_net_tcp("header\n", &mut tally).is_ok());
    }

    #[test]
    fn bitset_covers_the_whole_port_space() {
        let mut tally = PortTally::new(0, u16::MAX);
        for port in 0..=u16::MAX {
            tally.add(1, port);
            tally.add(1, port);
        }
        assert_eq!(tally.counts().ports_used, 65536);
    }

    #[test]
    fn netlink_and_proc_both_work_unprivileged() {
        // Counts race with the host's other sockets; both methods must answer.
        let netlink = count_netlink(1, u16::MAX).expect("sock_diag needs no privilege");
        let proc = count_proc_net_tcp(1, u16::MAX).expect("/proc/net/tcp");
        assert!(netlink.sockets > 0 || proc.sockets == 0);
    }
}
