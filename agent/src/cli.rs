//! Command line (clap derive). Each subcommand's doc comment is its help.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

/// golens: watch running Go services from outside with eBPF.
///
/// No code change, no restart, no GODEBUG: golens finds Go processes on the
/// host, attaches kernel probes to them and serves what it measures as
/// Prometheus metrics. Running `golens` alone is `golens run`.
#[derive(Debug, Parser)]
#[command(name = "golens", version, verbatim_doc_comment)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Log filter (tracing syntax): error, warn, info, debug, or e.g. "golens=debug".
    #[arg(long, global = true, default_value = "info", env = "GOLENS_LOG")]
    pub log: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Run(RunArgs),
    List(ListArgs),
    Doctor(DoctorArgs),
    Trace(TraceArgs),
    Top(TopArgs),
}

/// A GC timeline of one running Go process, like GODEBUG=gctrace=1 but
/// without restarting it: one line per GC cycle (its duration and its
/// stop-the-world pauses, each with its time to stop) and per other
/// stop-the-world pause (ReadMemStats, GOMAXPROCS, profiles...), then a
/// summary and where the process's time went (stopped by GC, waiting for a
/// CPU, throttled by its cgroup) when it ends: Ctrl-C, --duration, or the
/// process exits.
///
/// It loads its own probes (root, or CAP_BPF + CAP_PERFMON + CAP_SYS_PTRACE)
/// and can trace a process a running `golens run` watches: each counts in
/// its own maps, nothing twice.
///
/// Examples:
///   golens trace --pid 4242
///   golens trace --pid 4242 --duration 30s --json > gc.jsonl
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct TraceArgs {
    /// The Go process to trace.
    #[arg(long, value_name = "PID")]
    pub pid: u32,

    /// Stop after this long (e.g. 30s, 2m); default: until Ctrl-C or the process exits.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// JSON lines instead of text (one object per GC cycle, pause and the summary).
    #[arg(long)]
    pub json: bool,

    /// Kernel BTF to use instead of /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,
}

/// List the Go processes on this host: Go version, stripped or not, PIE or
/// not, and which runtime probes attach (with the reason for each that does
/// not).
///
/// By default golens inspects the binaries itself and reports which probes
/// *would* attach (no eBPF is loaded; root is needed only to read other
/// users' processes). With --agent it shows what a running agent actually
/// attached.
///
/// Examples:
///   golens list
///   golens list --pid 4242 --verbose
///   golens list --agent http://127.0.0.1:9477
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ListArgs {
    /// Ask a running agent (its base URL) instead of inspecting locally.
    #[arg(long, value_name = "URL")]
    pub agent: Option<String>,

    /// Only this process (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Also list the probes that attach, with their functions and points.
    #[arg(long, short)]
    pub verbose: bool,
}

/// Check this host's kernel, ulimit and cgroup settings that hurt Go services.
///
/// Each check says pass, warn, fail or unknown, the measured value, why it
/// matters for Go, and the command that fixes it.
///
/// Host-wide: vm.max_map_count, fs.file-max, ip_local_port_range (size and
/// use), tcp_tw_reuse, somaxconn and listen overflows, conntrack, transparent
/// huge pages, clocksource, NTP sync, vm.swappiness, vm.overcommit_memory.
/// Per Go process: VMAs vs vm.max_map_count, open fds vs RLIMIT_NOFILE,
/// GOMAXPROCS vs the cgroup CPU quota, GOMEMLIMIT vs the cgroup memory limit.
/// A used/limit ratio warns above 50 % and fails above 90 %.
///
/// Loads no eBPF and needs no BTF and no capability: any user who can read
/// /proc and /sys can run it, on any kernel. Reading other users' processes
/// needs root or CAP_SYS_PTRACE; without it the per-process checks name the
/// processes they could not read and report unknown.
///
/// Exit status: 0 every check passed; 1 some check warned or was unknown
/// (could not be read: counted as a warning); 2 some check failed. (As for
/// every golens command, a usage error also exits 2.)
///
/// Examples:
///   golens doctor
///   sudo golens doctor --format json | jq '.checks[] | select(.status != "pass")'
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DoctorArgs {
    /// Output format. json has a stable schema with a "version" field.
    #[arg(long, value_enum, default_value_t = DoctorFormat::Text)]
    pub format: DoctorFormat,

    /// Read /proc and /sys under this directory instead of / (for tests).
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub root: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DoctorFormat {
    Text,
    Json,
}

/// Run the agent: discover Go processes, attach probes, serve /metrics.
///
/// Probes (see --probes): scheduler tracepoints (run-queue latency,
/// involuntary switches) for every thread of a watched process, uprobes on
/// the Go runtime (GC cycles, stop-the-world pauses, sysmon preemptions)
/// placed by decoding its machine code once per executable, and per-syscall
/// tracepoints (mappings, EMFILE, EADDRNOTAVAIL, netpoll waits, late
/// timers); plus each process's and the host's limits read from /proc and
/// golens doctor's checks. `golens list` shows which probes attach where.
///
/// Needs root, or CAP_BPF + CAP_PERFMON (+ CAP_SYS_PTRACE to read other
/// users' executables), and a kernel with BTF (/sys/kernel/btf/vmlinux);
/// without them it runs degraded (see --require-ebpf).
///
/// Endpoints: /metrics (Prometheus), /healthz, /readyz (ready once the
/// probes are attached), /api/v1/snapshot (JSON), /api/v1/stream (each new
/// snapshot as a server-sent event: what `golens top --connect` reads).
/// --web.config.file (the Prometheus exporter-toolkit format) puts every
/// one of them behind TLS and/or basic auth.
///
/// Examples:
///   golens run                                  # every Go process, 127.0.0.1:9477
///   golens run --listen 0.0.0.0:9477            # as a DaemonSet, scraped by Prometheus
///   golens run --pid 4242 --interval 1s         # one process, fresh numbers every second
///   golens run --comm api --comm worker         # processes whose comm is api or worker
///   golens run --listen 0.0.0.0:9477 --web.config.file /etc/golens/web.yml  # TLS, basic auth
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    /// Address to serve HTTP on. Loopback by default: use 0.0.0.0:9477 to be
    /// scraped from other hosts (DaemonSet).
    #[arg(long, default_value = "127.0.0.1:9477", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,

    /// How often kernel maps and /proc are read into a new snapshot
    /// (e.g. 500ms, 5s, 1m). An exited process's series disappear within two intervals.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Duration,

    #[command(flatten)]
    pub targets: TargetArgs,

    /// Probe families to attach, comma-separated: sched (run-queue latency
    /// and involuntary switches, from scheduler tracepoints), goruntime (GC
    /// cycles, stop-the-world pauses, sysmon preemptions, from uprobes on the
    /// Go runtime), and from per-syscall tracepoints: vma (mappings against
    /// vm.max_map_count), fd (EMFILE/ENFILE), net (connect EADDRNOTAVAIL),
    /// netpoll (blocking epoll waits), timers (late timed waits,
    /// timerfd_settime). Opt-in, not in the default: gonetpoll (a uprobe on
    /// runtime.netpoll counting its calls by blocking, non-blocking and timed
    /// polls: several hits per request of a network service). Discovery
    /// (exec/exit) is always on. While any syscall family is attached, every
    /// syscall of every process on the host takes the kernel's traced path
    /// (~40-60 ns more); sched,goruntime alone avoids that. Each family's
    /// cost is in the README.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sched,goruntime,vma,fd,net,netpoll,timers",
        value_name = "FAMILIES"
    )]
    pub probes: Vec<ProbeFamily>,

    /// Kernel BTF to use instead of /sys/kernel/btf/vmlinux (for kernels that
    /// ship BTF separately).
    #[arg(long, value_name = "FILE", help_heading = "Kernel")]
    pub btf: Option<PathBuf>,

    /// How Go runtime uprobes are attached. auto: one uprobe_multi link per
    /// binary where the kernel has them (6.6+), else perf-event uprobes (one
    /// per probe point per binary; slower to stop: ~0.1 s of kernel time per
    /// point). The other values force one (for troubleshooting).
    #[arg(long, value_enum, default_value_t = AttachModeArg::Auto, help_heading = "Kernel")]
    pub attach_mode: AttachModeArg,

    /// Exit with an error when eBPF is unavailable (no BTF, a missing
    /// capability, a seccomp profile that blocks bpf()). Without it golens
    /// keeps serving what needs no eBPF (the Go processes found in /proc,
    /// with their labels) and says once which families are off and why.
    #[arg(long, help_heading = "Kernel")]
    pub require_ebpf: bool,

    #[command(flatten)]
    pub web: WebArgs,
}

/// The HTTP side's security and limits (Prometheus' flag names).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Web")]
pub struct WebArgs {
    /// Prometheus exporter-toolkit web configuration (YAML): TLS
    /// (tls_server_config: cert_file, key_file, client_auth_type,
    /// client_ca_file, min_version...) and basic auth (basic_auth_users:
    /// user: bcrypt hash), for every endpoint. Checked at startup; a key
    /// golens does not implement is an error. See "Securing the endpoint"
    /// in the README.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Requests served at once (scrapes, snapshots, probes; an open
    /// /api/v1/stream holds one while it lasts). Over it: 503 at once.
    /// 0: no limit.
    #[arg(long = "web.max-requests", default_value_t = 40, value_name = "N")]
    pub max_requests: u32,

    /// Open /api/v1/stream feeds (golens top --connect) at once; over it:
    /// 503. 0: no limit.
    #[arg(long = "web.max-streams", default_value_t = 8, value_name = "N")]
    pub max_streams: u32,

    /// Time a client has for the TLS handshake, then for each request's
    /// headers (counted from the previous response on a kept-alive
    /// connection, so an idle connection is closed after it).
    #[arg(
        long = "web.read-header-timeout",
        default_value = "10s",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub read_header_timeout: Duration,

    /// Time from a request's headers to the last byte of its response: a
    /// handler that takes longer answers 503, a client that reads too
    /// slowly is disconnected. /api/v1/stream lasts as long as its client
    /// reads: it is closed when a write makes no progress for this long.
    #[arg(
        long = "web.request-timeout",
        default_value = "30s",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub request_timeout: Duration,
}

impl Default for WebArgs {
    fn default() -> Self {
        WebArgs {
            config_file: None,
            max_requests: 40,
            max_streams: 8,
            read_header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A probe family of `--probes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeFamily {
    Sched,
    Goruntime,
    Vma,
    Fd,
    Net,
    Netpoll,
    Timers,
    Gonetpoll,
}

impl ProbeFamily {
    /// The default of `--probes`: every family but the opt-in gonetpoll.
    pub const DEFAULT: [ProbeFamily; 7] = [
        ProbeFamily::Sched,
        ProbeFamily::Goruntime,
        ProbeFamily::Vma,
        ProbeFamily::Fd,
        ProbeFamily::Net,
        ProbeFamily::Netpoll,
        ProbeFamily::Timers,
    ];

    /// The per-syscall tracepoint programs of a syscall family.
    pub fn syscall_programs(self) -> Option<&'static [golens_ebpf::TracePointProgram]> {
        use golens_ebpf::syscalls;
        match self {
            ProbeFamily::Sched | ProbeFamily::Goruntime | ProbeFamily::Gonetpoll => None,
            ProbeFamily::Vma => Some(syscalls::VMA),
            ProbeFamily::Fd => Some(syscalls::FD),
            ProbeFamily::Net => Some(syscalls::NET),
            ProbeFamily::Netpoll => Some(syscalls::NETPOLL),
            ProbeFamily::Timers => Some(syscalls::TIMERS),
        }
    }

    /// The runtime uprobe family it is, if it is one.
    pub fn uprobe_family(self) -> Option<crate::goruntime::UprobeFamily> {
        use crate::goruntime::UprobeFamily;
        match self {
            ProbeFamily::Goruntime => Some(UprobeFamily::Goruntime),
            ProbeFamily::Gonetpoll => Some(UprobeFamily::Gonetpoll),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ProbeFamily::Sched => "sched",
            ProbeFamily::Goruntime => "goruntime",
            ProbeFamily::Vma => "vma",
            ProbeFamily::Fd => "fd",
            ProbeFamily::Net => "net",
            ProbeFamily::Netpoll => "netpoll",
            ProbeFamily::Timers => "timers",
            ProbeFamily::Gonetpoll => "gonetpoll",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachModeArg {
    Auto,
    UprobeMulti,
    PerfEvent,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Targets")]
pub struct TargetArgs {
    /// Watch only this process (repeatable). Without --pid or --comm every Go
    /// process is watched, including ones started later.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Watch only Go processes with this comm (the 15-character name in
    /// /proc/PID/comm; repeatable).
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,

    /// Watch at most this many processes; the rest are skipped, logged and
    /// counted in golens_agent_skipped_processes_total{reason="max_processes"}.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_processes: u32,
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            listen: "127.0.0.1:9477".parse().expect("valid literal address"),
            interval: Duration::from_secs(5),
            targets: TargetArgs { pids: Vec::new(), comms: Vec::new(), max_processes: 256 },
            btf: None,
            attach_mode: AttachModeArg::Auto,
            probes: ProbeFamily::DEFAULT.to_vec(),
            require_ebpf: false,
            web: WebArgs::default(),
        }
    }
}

/// A live terminal view of the watched Go processes: GC rate, stop-the-world
/// pauses, run-queue latency, preemptions and pressure against limits, per
/// process, refreshed at every collection.
///
/// Without --connect, golens top starts its own agent (`golens run` on a
/// loopback port, one collection a second) and stops it on exit: that needs
/// root, like `golens run` (or CAP_BPF + CAP_PERFMON; without them the agent
/// runs degraded and only /proc numbers show). With --connect it reads the
/// live feed (/api/v1/stream) of an agent already running, here or elsewhere.
///
/// Rates and quantiles are over the last --window, from the differences
/// between snapshots; a quantile is the upper bound of its log2 bucket. A
/// value a process cannot supply (its probe is off or did not attach, or the
/// window is not two snapshots long yet) shows "–", never 0.
///
/// Keys: ↑/↓ or j/k select, s next sort column, r reverse, / filter by comm
/// or pid (Enter keeps it, Esc clears it), ? column help, q or Ctrl-C quit.
/// Needs a terminal of at least 80x24.
///
/// Examples:
///   sudo golens top                               # every Go process on this host
///   sudo golens top --comm api --comm worker      # only these
///   golens top --connect http://node-7:9477       # a running agent's feed
///   GOLENS_CONNECT=https://me:PASSWORD@node-7:9477 golens top --ca-file ca.crt
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct TopArgs {
    /// Read the live feed of a running agent (its base URL) instead of
    /// starting one. An agent with a --web.config.file: https://, and
    /// USER:PASSWORD@ before the host for basic auth (or the URL in
    /// GOLENS_CONNECT, which keeps the password out of the process list).
    #[arg(long, value_name = "URL", env = "GOLENS_CONNECT")]
    pub connect: Option<String>,

    /// With an https:// --connect: the CA certificate (PEM) that signed the
    /// agent's certificate, when it is not a public CA (a self-signed
    /// certificate is its own CA).
    #[arg(long, value_name = "FILE", requires = "connect")]
    pub ca_file: Option<PathBuf>,

    /// Only this process (repeatable): passed to the agent golens top
    /// starts; with --connect, only shown.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Only Go processes with this comm (repeatable): passed to the agent
    /// golens top starts; with --connect, only shown.
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,

    /// How far back rates and quantiles look (e.g. 10s, 1m).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub window: Duration,

    /// Collection interval of the agent golens top starts (ignored with --connect).
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Duration,
}

/// Parses "250ms", "5s", "2m" or a bare number of seconds ("1.5").
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (examples: 500ms, 5s, 1m)"))?;
    let seconds = value * scale;
    if !(0.05..=3600.0).contains(&seconds) {
        return Err(format!("`{text}` is out of range (50ms to 1h)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn probe_families_parse_as_a_list() {
        let cli = Cli::try_parse_from(["golens", "run", "--probes", "sched"]).unwrap();
        let Some(Command::Run(args)) = cli.command else { panic!("run") };
        assert_eq!(args.probes, vec![ProbeFamily::Sched]);
        let cli = Cli::try_parse_from(["golens", "run"]).unwrap();
        let Some(Command::Run(args)) = cli.command else { panic!("run") };
        assert_eq!(args.probes, ProbeFamily::DEFAULT.to_vec());
        assert!(!args.probes.contains(&ProbeFamily::Gonetpoll), "gonetpoll is opt-in");
        assert!(Cli::try_parse_from(["golens", "run", "--probes", "sched,disk"]).is_err());
        let cli =
            Cli::try_parse_from(["golens", "run", "--probes", "goruntime,gonetpoll"]).unwrap();
        let Some(Command::Run(args)) = cli.command else { panic!("run") };
        assert_eq!(args.probes, vec![ProbeFamily::Goruntime, ProbeFamily::Gonetpoll]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }
}
