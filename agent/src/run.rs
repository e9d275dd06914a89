//! `golens run`: the daemon. discover -> attach -> read maps -> Snapshot -> HTTP.
//!
//! Threads: the async runtime serves HTTP and waits for signals; one agent
//! thread ("golens-agent") owns every kernel object and does discovery,
//! attaching and collection, publishing each collection (snapshot and
//! rendered exposition) for the HTTP side to copy. Nothing the HTTP side
//! touches is ever locked across /proc, ELF or attach work.

use std::{
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::maps::{MapData, RingBuf};
use golens_ebpf::{bindings, programs, ProcEvent};
use tracing::{debug, info, warn};

use crate::{
    attach::ProbeRegistry,
    cli::{AttachModeArg, ProbeFamily, RunArgs},
    collector::Collector,
    discovery::{pidns::ProcView, procfs, Inspection, Inspector, TargetFilter},
    http, preflight,
    probes::{self, KernelMaps, KernelSide},
    snapshot::SnapshotCell,
    tracker::Tracker,
};

/// How long a binary's probes stay attached after its last watched process
/// left: a restart or a crash loop within this reattaches nothing.
pub const BINARY_LINGER: Duration = Duration::from_secs(30);

pub async fn run(args: RunArgs) -> Result<()> {
    preflight::raise_memlock_limit();
    preflight::raise_nofile_limit();
    let view = ProcView::current().context("finding golens' pid namespace")?;

    let filter = TargetFilter {
        pids: args.targets.pids.clone(),
        comms: args.targets.comms.clone(),
        max_processes: args.targets.max_processes as usize,
    };
    check_pid_targets(&filter.pids, &view)?;

    let server = http::Server::new(&args.web, args.listen)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let snapshot = SnapshotCell::default();
    let ready = Arc::new(AtomicBool::new(false));
    let state = http::AppState { snapshot: snapshot.clone(), ready: ready.clone() };
    info!("serving {}://{}/metrics", server.scheme(), args.listen);
    tokio::spawn(server.serve(listener, state));

    let loaded = preflight_ebpf(&args).and_then(|btf| load_and_attach(btf, &view, &filter, &args));
    let agent_thread: AgentThread = match loaded {
        Ok((tracker, ring)) => {
            let interval = args.interval;
            Box::new(move |stop, snapshot, ready| {
                agent_loop(tracker, ring, stop, snapshot, ready, interval)
            })
        }
        Err(error) if args.require_ebpf => return Err(error),
        Err(error) => {
            let why = format!("{error:#}");
            warn!(
                "eBPF unavailable, every probe family is off: {why}. Serving only what needs no \
                 eBPF (the Go processes in /proc and their labels); --require-ebpf makes this an \
                 error"
            );
            let (interval, filter) = (args.interval, filter.clone());
            Box::new(move |stop, snapshot, ready| {
                crate::degraded::run(&filter, &why, stop, snapshot, ready, interval);
                Ok(())
            })
        }
    };

    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<()>>();
    let agent = {
        let (stop, snapshot, ready) = (stop.clone(), snapshot.clone(), ready);
        std::thread::Builder::new()
            .name("golens-agent".into())
            .spawn(move || {
                let result = agent_thread(&stop, &snapshot, &ready);
                let _ = done_tx.send(result);
            })
            .context("starting the agent thread")?
    };

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = terminate.recv() => None,
        finished = done_rx => Some(finished.unwrap_or_else(|_| Err(anyhow::anyhow!("the agent thread panicked")))),
    };
    if let Some(result) = outcome {
        // The agent thread stopped on its own: that is an error (or its panic).
        let _ = agent.join();
        return result.and_then(|()| bail!("the agent thread ended"));
    }
    info!("shutting down: detaching probes");
    stop.store(true, Ordering::Release);
    let _ = tokio::task::spawn_blocking(move || agent.join()).await;
    probes::release_tracefs();
    info!("stopped");
    Ok(())
}

/// What the agent thread runs: the full agent, or the degraded one.
type AgentThread = Box<dyn FnOnce(&AtomicBool, &SnapshotCell, &AtomicBool) -> Result<()> + Send>;

/// Capabilities and BTF: what eBPF needs before anything is loaded.
pub(crate) fn preflight_ebpf(args: &RunArgs) -> Result<aya::Btf> {
    let capabilities = preflight::Capabilities::current()?;
    capabilities.check_bpf()?;
    preflight::check_bpf_syscall()?;
    for warning in capabilities.warnings(preflight::kernel_version()) {
        warn!("{warning}");
    }
    Ok(probes::load_btf(args.btf.as_deref())?)
}

/// Loads the object, attaches the tracepoints, calibrates the pid
/// namespace, loads the runtime uprobe programs, and does the first scan.
pub(crate) fn load_and_attach(
    btf: aya::Btf,
    view: &ProcView,
    filter: &TargetFilter,
    args: &RunArgs,
) -> Result<(Tracker, RingBuf<MapData>)> {
    let attach_mode = args.attach_mode;
    let uprobe_families: Vec<_> =
        args.probes.iter().filter_map(|family| family.uprobe_family()).collect();
    // Any runtime uprobe family (goruntime, gonetpoll) needs the uprobe programs.
    let uprobes = !uprobe_families.is_empty();
    let mut kernel = KernelSide::load(btf, args.targets.max_processes, view)
        .context("loading golens' eBPF programs")?;
    if let Some(failure) = kernel.attach_family(programs::DISCOVERY).into_iter().next() {
        return Err(failure).context("discovery probes are required");
    }
    if args.probes.contains(&ProbeFamily::Sched) {
        for failure in kernel.attach_sched() {
            warn!(family = "sched", "probe not attached: {failure}");
        }
        info!(source = kernel.runq_source.label(), "run-queue latency source");
    }
    kernel.calibrate_pidns(view).context("reading pids in golens' pid namespace")?;
    attach_syscall_families(&mut kernel, &args.probes);
    let multi = match attach_mode {
        _ if !uprobes => Err("the runtime uprobe families are off (--probes)".to_string()),
        AttachModeArg::PerfEvent => Err("--attach-mode perf-event".to_string()),
        AttachModeArg::Auto | AttachModeArg::UprobeMulti => kernel.load_multi_uprobes(),
    };
    let multi = match multi {
        Ok(multi) => {
            kernel.mark_uprobes_loaded();
            Some(multi)
        }
        Err(reason) if attach_mode == AttachModeArg::UprobeMulti && uprobes => {
            bail!("--attach-mode uprobe-multi: {reason}")
        }
        Err(_) if !uprobes => None,
        Err(reason) => {
            warn!(
                "uprobe_multi links not used ({reason}); attaching one perf-event uprobe per point"
            );
            for failure in kernel.load_uprobes() {
                warn!("Go runtime probe program not loaded: {failure}");
            }
            None
        }
    };
    kernel.release_btf();
    let (mut maps, known_binaries, proc_events) = kernel.take_maps()?;
    configure_exec_tracking(&mut maps, filter)?;
    // With --pid only the named processes are watched: no exec is tracked.
    let exec_tracking = filter.pids.is_empty();
    let mut registry =
        ProbeRegistry::new(kernel, multi, known_binaries, exec_tracking, BINARY_LINGER);
    if uprobes {
        registry.set_uprobe_families(&uprobe_families);
    } else {
        // The default families' probes are then listed as not attached, with why.
        registry.disable_uprobes("the goruntime probe family is off (--probes)");
    }
    let mut tracker = Tracker::new(registry, maps, filter.clone());

    // Follow exec/exit from now on (records wait in the ring buffer), then
    // scan what already runs: a process started in between is seen by both,
    // which `consider` makes harmless.
    tracker.scan().context("listing /proc")?;
    if !filter.pids.is_empty() && tracker.is_empty() {
        bail!("none of the --pid targets could be tracked (they exited, or --comm excludes them)");
    }
    if tracker.is_empty() {
        info!("no Go process found yet; new ones are picked up when they start");
    }
    Ok((tracker, proc_events))
}

/// The per-syscall tracepoint families asked for. A family whose
/// tracepoints cannot be attached at all is off (its series absent), said once.
fn attach_syscall_families(kernel: &mut KernelSide, families: &[ProbeFamily]) {
    let wanted: Vec<ProbeFamily> =
        families.iter().copied().filter(|f| f.syscall_programs().is_some()).collect();
    if wanted.is_empty() {
        return;
    }
    let names = || wanted.iter().map(|f| f.name()).collect::<Vec<_>>().join(",");
    if let Some(blocked) = preflight::perf_event_open_blocked() {
        warn!("probe families {} are off: {blocked}", names());
        return;
    }
    if let Err(error) = probes::ensure_tracefs() {
        warn!("probe families {} are off: {error}", names());
        return;
    }
    for family in wanted {
        let programs = family.syscall_programs().unwrap_or_default();
        let failures = kernel.attach_tracepoints(programs);
        if failures.len() == programs.len() {
            warn!(family = family.name(), "probe family off: {}", failures[0]);
        } else {
            for failure in failures {
                debug!(family = family.name(), "tracepoint not attached: {failure}");
            }
        }
    }
}

/// --comm applies to exec tracking in the kernel too.
fn configure_exec_tracking(maps: &mut KernelMaps, filter: &TargetFilter) -> Result<()> {
    let mut config = maps.agent_config.get(&0, 0).context("reading agent_config")?;
    config.comm_filter = u32::from(!filter.comms.is_empty());
    for comm in &filter.comms {
        let mut key = [0u8; 16];
        for (slot, byte) in key.iter_mut().zip(comm.bytes().take(15)) {
            *slot = byte;
        }
        maps.wanted_comms
            .insert(key, 1, 0)
            .context("writing wanted_comms (more than 64 --comm?)")?;
    }
    maps.agent_config.set(0, config, 0).context("writing agent_config")?;
    Ok(())
}

/// The agent thread: exec/exit records as they come (the kernel wakes us in
/// batches; we also drain every GOLENS_PROC_EVENTS_POLL_MS), a collection
/// every `interval`. Returns when `stop` is set, after detaching everything.
fn agent_loop(
    mut tracker: Tracker,
    mut ring: RingBuf<MapData>,
    stop: &AtomicBool,
    snapshot: &SnapshotCell,
    ready: &AtomicBool,
    interval: Duration,
) -> Result<()> {
    let mut collector = Collector::default();
    snapshot.set(collector.collect(&mut tracker));
    ready.store(true, Ordering::Release);
    info!(tracked = tracker.len(), mode = ?tracker.registry.mode(), "ready");

    let poll = Duration::from_millis(bindings::GOLENS_PROC_EVENTS_POLL_MS.into());
    let mut next_collection = Instant::now() + interval;
    let mut batch: Vec<ProcEvent> = Vec::new();
    let result = loop {
        if stop.load(Ordering::Acquire) {
            break Ok(());
        }
        let until_collection = next_collection.saturating_duration_since(Instant::now());
        if let Err(error) = wait_readable(&ring, poll.min(until_collection)) {
            break Err(error).context("waiting on the proc_events ring buffer");
        }
        while let Some(item) = ring.next() {
            if let Some(event) = parse_proc_event(&item) {
                batch.push(event);
            }
        }
        drop_superseded_execs(&mut batch);
        for event in batch.drain(..) {
            handle_event(&mut tracker, &event);
        }
        if Instant::now() >= next_collection {
            snapshot.set(collector.collect(&mut tracker));
            next_collection = Instant::now() + interval;
        }
    };
    tracker.registry.shutdown();
    result
}

/// Drops each exec record followed, in the same batch, by another exec of
/// the same process: a launcher's (`sh -c 'exec app'`, `env X=1 app`), whose
/// /proc/PID/exe already names the next program. Handled, it would inspect
/// and track the app under the launcher's exec record, and note the
/// launcher's binary key as the app's (making every exec of the launcher
/// tracked by the kernel). The tracker copes with a launcher's record read
/// in an earlier batch than the app's when the kernel tracked the app.
fn drop_superseded_execs(batch: &mut Vec<ProcEvent>) {
    let is_exec = |event: &ProcEvent| event.kind == bindings::GOLENS_PROC_EXEC;
    let mut later_exec = std::collections::HashSet::new();
    let mut keep = vec![true; batch.len()];
    for (index, event) in batch.iter().enumerate().rev() {
        if is_exec(event) && !later_exec.insert(event.tgid) {
            keep[index] = false;
        }
    }
    let mut index = 0;
    batch.retain(|_| {
        index += 1;
        keep[index - 1]
    });
}

fn handle_event(tracker: &mut Tracker, event: &ProcEvent) {
    match event.kind {
        bindings::GOLENS_PROC_EXEC => {
            let by_kernel = event.flags & bindings::GOLENS_PROC_TRACKED_BY_EXEC != 0;
            let considered = tracker.exec(event.tgid, by_kernel, event.binary);
            debug!(pid = event.tgid, by_kernel, ?considered, "exec");
        }
        bindings::GOLENS_PROC_EXIT => tracker.forget(event.tgid),
        _ => {}
    }
}

/// poll(2) on the ring buffer's fd.
fn wait_readable(ring: &RingBuf<MapData>, timeout: Duration) -> std::io::Result<()> {
    let mut fds = [libc::pollfd { fd: ring.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    let millis = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd, for the duration of the call.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), 1, millis) };
    if ret < 0 {
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
}

/// `--pid` targets must exist and be Go; an error when none of them is.
pub(crate) fn check_pid_targets(pids: &[u32], view: &ProcView) -> Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    let mut inspector = Inspector::default();
    let mut usable = 0;
    let mut problems = Vec::new();
    for &pid in pids {
        match inspector.inspect(pid) {
            Inspection::Go { .. } => usable += 1,
            Inspection::NotGo => {
                let comm = procfs::comm(pid).unwrap_or_default();
                problems.push(format!("process {pid} ({comm}) is not a Go program"));
            }
            Inspection::NoExecutable if procfs::exists(pid) => {
                problems.push(format!("process {pid} has no executable (a kernel thread)"))
            }
            Inspection::NoExecutable if view.nspid.len() > 1 || !view.initial => {
                problems.push(format!(
                    "process {pid} does not exist in golens' pid namespace (golens is pid {} \
                     there): --pid takes pids as golens' /proc shows them; from a container, run \
                     golens with the host's pid namespace (hostPID) or share the target's",
                    view.nspid[0]
                ))
            }
            Inspection::NoExecutable => problems.push(format!("process {pid} does not exist")),
            Inspection::Error { detail, .. } => {
                problems.push(format!("process {pid} cannot be inspected: {detail}"))
            }
        }
    }
    if usable == 0 {
        bail!("no process to watch: {}", problems.join("; "));
    }
    for problem in problems {
        warn!("--pid: {problem}; skipping it");
    }
    Ok(())
}

fn parse_proc_event(bytes: &[u8]) -> Option<ProcEvent> {
    if bytes.len() < std::mem::size_of::<ProcEvent>() {
        return None;
    }
    // SAFETY: length checked; ProcEvent is plain old data; read_unaligned
    // makes no alignment assumption about the ring buffer record.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ProcEvent>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u32, tgid: u32, ino: u64) -> ProcEvent {
        let mut event = ProcEvent { kind, tgid, ..ProcEvent::default() };
        event.binary.ino = ino;
        event
    }

    #[test]
    fn only_the_last_exec_of_a_process_in_a_batch_is_kept() {
        use bindings::{GOLENS_PROC_EXEC as EXEC, GOLENS_PROC_EXIT as EXIT};
        let mut batch = vec![
            event(EXEC, 10, 1), // sh, then
            event(EXEC, 11, 5),
            event(EXEC, 10, 2), // env, then
            event(EXIT, 11, 0),
            event(EXEC, 10, 3), // the app
            event(EXEC, 12, 4),
        ];
        drop_superseded_execs(&mut batch);
        let kept: Vec<(u32, u32, u64)> =
            batch.iter().map(|e| (e.kind, e.tgid, e.binary.ino)).collect();
        assert_eq!(kept, [(EXEC, 11, 5), (EXIT, 11, 0), (EXEC, 10, 3), (EXEC, 12, 4)]);
        let mut empty = Vec::new();
        drop_superseded_execs(&mut empty);
        assert!(empty.is_empty());
    }
}
