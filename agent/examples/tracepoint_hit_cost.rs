//! What golens' tracepoint programs cost the threads they fire for, on this kernel.
//!
//!   cargo run --release --example tracepoint_hit_cost [-- ROUNDS]
//!
//! bpf_stats (the bench's program table) times a program's body only: it leaves out what the
//! kernel does to call it (a classic tracepoint builds its perf record first), and it adds
//! its own two clock reads per run, which production does not pay. This measures the whole
//! cost instead, as this process's own CPU time (CLOCK_PROCESS_CPUTIME_ID) per operation:
//!
//! - `epoll_pwait(timeout 0)` on an empty epoll instance: Go's non-blocking netpoll. One
//!   `netpoll` enter hit and one exit hit.
//! - `nanosleep` with an invalid timespec, which the kernel refuses (EINVAL) before sleeping:
//!   one `timers` enter hit (it reads the timespec for a tracked process) and one exit hit,
//!   without a real sleep and the context switches it would add.
//! - `getppid`, which no golens program watches: while any syscall tracepoint is enabled, every
//!   syscall of every process takes the kernel's traced entry and exit path, and this is that
//!   toll.
//! - a round trip between two threads pinned to one CPU through two pipes: two wakeups and
//!   two `sched_switch` hits, and the pipe reads and writes, which golens does not probe. The
//!   wakeups are `sched_wakeup` hits only where run-queue latency comes from golens' wakeup
//!   timestamps rather than the kernel's sched_info; the first line printed,
//!   `source\tsched_info` or `source\twakeups`, says which.
//!
//! Three cases, in ABC CBA order, ROUNDS times (default 5): no golens programs; golens'
//! scheduler, netpoll and timers programs attached, this process not tracked (every hit takes
//! the early return); and the same with this process tracked (every hit does its work).
//! Differences of the medians are the cost; the spread printed is that of each round's
//! differences. The whole process runs on one CPU (the first it may use). `cargo xtask bench
//! hits` runs this and prices each process's hits with it.

use std::{os::fd::AsRawFd, time::Instant};

use anyhow::{bail, Context, Result};
use golens::{discovery::pidns::ProcView, probes};
use golens_ebpf::{GoStats, PressureStats, SchedStats};

const CASES: [&str; 3] = ["no programs", "not tracked", "tracked"];

/// One loop to time: `key` names it in the `result` lines, `run` returns ns per operation.
struct Workload {
    key: &'static str,
    name: &'static str,
    run: fn() -> Result<f64>,
}

fn main() -> Result<()> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(text) => text.parse().with_context(|| format!("ROUNDS: not a number: {text}"))?,
        None => 5,
    };
    if rounds == 0 {
        bail!("ROUNDS must be at least 1");
    }
    pin_to_one_cpu()?;
    println!("source\t{}", probes::RunqSource::detect().label());
    let view = ProcView::current()?;
    probes::ensure_tracefs()?;
    let workloads = [
        Workload {
            key: "toll",
            name: "getppid, per call (no golens program: the syscall tracepoints' toll)",
            run: getppid_calls,
        },
        Workload {
            key: "epoll",
            name: "epoll_pwait(timeout 0), per call (enter + exit)",
            run: epoll_calls,
        },
        Workload {
            key: "nanosleep",
            name: "nanosleep (EINVAL), per call (enter + exit)",
            run: nanosleep_calls,
        },
        Workload {
            key: "roundtrip",
            name: "thread round trip (2 wakeups + 2 sched_switch)",
            run: round_trips,
        },
    ];
    let started = Instant::now();
    for Workload { key, name, run: workload } in workloads {
        let mut times: [Vec<f64>; 3] = Default::default();
        for round in 0..rounds {
            let order: [usize; 3] = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
            for case in order {
                let kernel = match case {
                    0 => None,
                    _ => Some(attach(&view, case == 2)?),
                };
                times[case].push(workload()?);
                if let Some(kernel) = kernel {
                    kernel.shutdown();
                }
            }
            eprintln!(
                "  {name}: round {}/{rounds} done ({:.0} s)",
                round + 1,
                started.elapsed().as_secs_f64()
            );
        }
        report(key, name, &times);
    }
    Ok(())
}

/// Loads golens' object and attaches the scheduler, netpoll and timers programs, the way
/// `golens run` does; with `track`, this process is tracked.
fn attach(view: &ProcView, track: bool) -> Result<probes::KernelSide> {
    let mut kernel = probes::KernelSide::load(probes::load_btf(None)?, 16, view)?;
    let mut failures = kernel.attach_sched();
    failures.extend(kernel.attach_tracepoints(golens_ebpf::syscalls::NETPOLL));
    failures.extend(kernel.attach_tracepoints(golens_ebpf::syscalls::TIMERS));
    // epoll_pwait2 is absent before 5.11; the loops do not call it.
    failures.retain(|failure| !failure.to_string().contains("epoll_pwait2"));
    if let Some(failure) = failures.into_iter().next() {
        bail!("attaching golens' programs: {failure}");
    }
    let (mut maps, _, _) = kernel.take_maps()?;
    if track {
        let pid = std::process::id();
        let cpus = aya::util::nr_cpus().map_err(|(_, error)| error)?;
        maps.sched_stats.insert(
            pid,
            aya::maps::PerCpuValues::try_from(vec![SchedStats::default(); cpus])?,
            0,
        )?;
        maps.pressure_stats.insert(
            pid,
            aya::maps::PerCpuValues::try_from(vec![PressureStats::default(); cpus])?,
            0,
        )?;
        maps.go_stats.insert(pid, GoStats::default(), 0)?;
        maps.tracked.insert(pid, 0, 0)?;
    }
    Ok(kernel)
}

/// Prints the runs for people, then one tab-separated line per case for programs
/// (`cargo xtask bench hits`): `result KEY CASE MEDIAN_NS LOW_NS HIGH_NS`, the added cost.
fn report(key: &str, name: &str, times: &[Vec<f64>; 3]) {
    let median = |values: &[f64]| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let medians: Vec<f64> = times.iter().map(|t| median(t)).collect();
    println!("{name}:");
    for (case, values) in CASES.iter().zip(times) {
        let shown: Vec<String> = values.iter().map(|v| format!("{v:.0}")).collect();
        println!("  {case:>12}: {} ns (runs: {})", format_ns(median(values)), shown.join(", "));
    }
    for case in 1..3 {
        let deltas: Vec<f64> =
            times[case].iter().zip(&times[0]).map(|(with, without)| with - without).collect();
        let (low, high) =
            deltas.iter().fold((f64::MAX, f64::MIN), |(l, h), d| (l.min(*d), h.max(*d)));
        let added = medians[case] - medians[0];
        println!(
            "  {:>12}: +{} ns (rounds: {} to {})",
            CASES[case],
            format_ns(added),
            format_ns(low),
            format_ns(high)
        );
        let case_key = if case == 1 { "untracked" } else { "tracked" };
        println!("result\t{key}\t{case_key}\t{added:.1}\t{low:.1}\t{high:.1}");
    }
}

fn format_ns(value: f64) -> String {
    format!("{value:.0}")
}

/// This process's CPU time, in ns.
fn cpu_ns() -> f64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    now.tv_sec as f64 * 1e9 + now.tv_nsec as f64
}

fn per_call(calls: u32, mut call: impl FnMut()) -> f64 {
    let start = cpu_ns();
    for _ in 0..calls {
        call();
    }
    (cpu_ns() - start) / f64::from(calls)
}

fn epoll_calls() -> Result<f64> {
    // SAFETY: plain syscalls on a descriptor this function owns.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(std::io::Error::last_os_error()).context("epoll_create1");
    }
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 1];
    let result = per_call(1_000_000, || {
        // SAFETY: events has room for one event; no signal mask.
        unsafe { libc::epoll_pwait(epoll, events.as_mut_ptr(), 1, 0, std::ptr::null()) };
    });
    // SAFETY: closing the descriptor created above.
    unsafe { libc::close(epoll) };
    Ok(result)
}

fn getppid_calls() -> Result<f64> {
    Ok(per_call(1_000_000, || {
        // SAFETY: a syscall without arguments.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }))
}

fn nanosleep_calls() -> Result<f64> {
    let invalid = libc::timespec { tv_sec: 0, tv_nsec: 2_000_000_000 };
    Ok(per_call(1_000_000, || {
        // SAFETY: a valid pointer; the kernel rejects the value with EINVAL.
        unsafe { libc::syscall(libc::SYS_nanosleep, &invalid, std::ptr::null::<libc::timespec>()) };
    }))
}

fn round_trips() -> Result<f64> {
    const TRIPS: u32 = 200_000;
    let (ping_read, ping_write) = std::io::pipe()?;
    let (pong_read, pong_write) = std::io::pipe()?;
    let echo = std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        for _ in 0..TRIPS {
            // SAFETY: one-byte reads and writes on pipe ends this thread owns.
            unsafe {
                libc::read(ping_read.as_raw_fd(), byte.as_mut_ptr().cast(), 1);
                libc::write(pong_write.as_raw_fd(), byte.as_ptr().cast(), 1);
            }
        }
    });
    let mut byte = [0u8; 1];
    let result = per_call(TRIPS, || {
        // SAFETY: as above, on this thread's pipe ends.
        unsafe {
            libc::write(ping_write.as_raw_fd(), byte.as_ptr().cast(), 1);
            libc::read(pong_read.as_raw_fd(), byte.as_mut_ptr().cast(), 1);
        }
    });
    echo.join().map_err(|_| anyhow::anyhow!("the echo thread panicked"))?;
    Ok(result)
}

/// Pins this process (and the threads it starts) to the first CPU it may run on, so that
/// each write in a round trip wakes a thread that must take the CPU from the writer.
fn pin_to_one_cpu() -> Result<()> {
    // SAFETY: cpu_set_t is plain data; the calls get valid pointers and sizes.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
        }
        let first = (0..libc::CPU_SETSIZE as usize)
            .find(|&cpu| libc::CPU_ISSET(cpu, &set))
            .context("no CPU in this process's affinity")?;
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(first, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
        }
    }
    Ok(())
}
