//! `golens run`: the daemon. discover -> attach -> read maps -> Snapshot -> HTTP.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use aya::maps::{MapData, RingBuf};
use golens_ebpf::{bindings, ProcEvent};
use tokio::io::unix::AsyncFd;
use tracing::{error, info, warn};

use crate::{
    cli::RunArgs,
    discovery::{procfs, Inspection, Inspector, TargetFilter},
    http, metrics, preflight,
    probes::{self, KernelSide},
    snapshot::{AgentSnapshot, Snapshot, SnapshotCell},
    tracker::{Considered, Tracker},
};

pub async fn run(args: RunArgs) -> Result<()> {
    let capabilities = preflight::Capabilities::current()?;
    capabilities.check_bpf()?;
    for warning in capabilities.warnings() {
        warn!("{warning}");
    }
    preflight::raise_memlock_limit();
    let btf = probes::load_btf(args.btf.as_deref())?;

    let filter = TargetFilter {
        pids: args.targets.pids.clone(),
        comms: args.targets.comms.clone(),
        max_processes: args.targets.max_processes as usize,
    };
    check_pid_targets(&filter.pids)?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let snapshot = SnapshotCell::default();
    let ready = Arc::new(AtomicBool::new(false));
    let state = http::AppState {
        snapshot: snapshot.clone(),
        registry: Arc::new(metrics::registry(snapshot.clone())),
        ready: ready.clone(),
    };
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, http::router(state)).await {
            error!(%error, "HTTP server stopped");
        }
    });
    info!("serving http://{}/metrics", args.listen);

    let mut kernel = KernelSide::load(btf, args.targets.max_processes)
        .context("loading golens' eBPF programs")?;
    for (family, programs) in probes::DAEMON_FAMILIES {
        for failure in kernel.attach_family(programs) {
            if *family == "discovery" {
                return Err(failure).context("discovery probes are required");
            }
            warn!(family, "probe not attached: {failure}");
        }
    }
    for failure in kernel.load_uprobes() {
        warn!("Go runtime probe program not loaded: {failure}");
    }
    let (maps, proc_events) = kernel.take_maps()?;
    let tracker = Arc::new(Mutex::new(Tracker::new(kernel, maps, filter.clone())));

    // Follow exec/exit from now on, then scan what already runs: a process
    // started in between is seen by both, which `consider` makes harmless.
    let mut events_task = tokio::spawn(follow_proc_events(proc_events, tracker.clone()));
    initial_scan(&tracker, &filter)?;

    let mut collections = 0u64;
    snapshot.set(collect(&tracker, &mut collections));
    ready.store(true, Ordering::Release);
    info!(tracked = lock(&tracker).len(), "ready");

    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = ticker.tick() => snapshot.set(collect(&tracker, &mut collections)),
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            stopped = &mut events_task => {
                let why = match stopped {
                    Ok(Err(error)) => format!("{error:#}"),
                    Ok(Ok(())) => "it ended".to_string(),
                    Err(panic) => panic.to_string(),
                };
                bail!("the process event reader stopped ({why}); exec/exit can no longer be followed");
            }
        }
    }
    info!("shutting down; probes are detached as the agent exits");
    Ok(())
}

fn lock(tracker: &Mutex<Tracker>) -> MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `--pid` targets must exist and be Go; an error when none of them is.
fn check_pid_targets(pids: &[u32]) -> Result<()> {
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

fn initial_scan(tracker: &Mutex<Tracker>, filter: &TargetFilter) -> Result<()> {
    let mut tracker = lock(tracker);
    tracker.scan().context("listing /proc")?;
    if !filter.pids.is_empty() && tracker.is_empty() {
        bail!("none of the --pid targets could be tracked (they exited, or --comm excludes them)");
    }
    if tracker.is_empty() {
        info!("no Go process found yet; new ones are picked up when they start");
    }
    Ok(())
}

async fn follow_proc_events(ring: RingBuf<MapData>, tracker: Arc<Mutex<Tracker>>) -> Result<()> {
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged
    // for as long as the AsyncFd (which owns the RingBuf) lives.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .context("polling the proc_events ring buffer")?;
    // The kernel wakes us only when a batch is pending (see procs.bpf.c): drain
    // on every wakeup and at least every GOLENS_PROC_EVENTS_POLL_MS.
    let poll = Duration::from_millis(bindings::GOLENS_PROC_EVENTS_POLL_MS.into());
    let mut batch: Vec<ProcEvent> = Vec::new();
    loop {
        match tokio::time::timeout(poll, ring.readable_mut()).await {
            Ok(guard) => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &mut batch);
                guard.clear_ready();
            }
            Err(_elapsed) => drain(ring.get_mut(), &mut batch),
        }
        if batch.is_empty() {
            continue;
        }

        let mut tracker = lock(&tracker);
        for event in batch.drain(..) {
            match event.kind {
                bindings::GOLENS_PROC_EXEC => {
                    if let Considered::Failed { reason, detail } = tracker.reexamine(event.tgid) {
                        tracing::debug!(pid = event.tgid, reason, %detail, "exec not inspected");
                    }
                }
                bindings::GOLENS_PROC_EXIT => tracker.forget(event.tgid),
                _ => {}
            }
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>, batch: &mut Vec<ProcEvent>) {
    while let Some(item) = ring.next() {
        if let Some(event) = parse_proc_event(&item) {
            batch.push(event);
        }
    }
}

fn parse_proc_event(bytes: &[u8]) -> Option<ProcEvent> {
    if bytes.len() < std::mem::size_of::<ProcEvent>() {
        return None;
    }
    // SAFETY: length checked; ProcEvent is plain old data; read_unaligned
    // makes no alignment assumption about the ring buffer record.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ProcEvent>()) })
}

fn collect(tracker: &Mutex<Tracker>, collections: &mut u64) -> Snapshot {
    let started = Instant::now();
    let mut tracker = lock(tracker);
    tracker.prune_exited();
    tracker.rescan_if_capacity_freed();
    let processes = tracker.read_processes();
    *collections += 1;
    let agent = AgentSnapshot {
        tracked_processes: processes.len() as u64,
        skipped_processes: tracker.skipped.clone(),
        kernel_drops: tracker.read_kernel_drops(),
        discovery_errors: tracker.discovery_errors.clone(),
        programs_attached: tracker.programs_attached(),
        collection_duration_seconds: started.elapsed().as_secs_f64(),
        collections: *collections,
    };
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    Snapshot { timestamp, processes, agent }
}
