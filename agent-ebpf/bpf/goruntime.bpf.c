/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * goruntime.bpf.c: GC cycles, stop-the-world pauses and sysmon preemptions
 * (family goruntime), and netpoll calls (family gonetpoll, opt-in) of
 * tracked Go processes, from uprobes on Go runtime functions. (GOMAXPROCS is
 * read by userspace from the process's memory: no probe, so no trap inside
 * the stop-the-world pause that applies it.)
 *
 * Where the probes sit (chosen in userspace by decoding the machine code):
 *   - "entry" probes sit on the function's stack-check branch (`jbe` after
 *     `cmp sp, g.stackguard`), never on its first byte: the kernel emulates
 *     the branch (~1 us) but single-steps the cmp (~15 us). Register
 *     arguments are still live there.
 *   - "moment" probes sit on a CALL (or a conditional branch) at the moment
 *     the runtime itself takes its clock (see agent/src/goruntime/mod.rs
 *     for each, per Go version): the kernel emulates those too, so no probe
 *     is single-stepped inside a pause. RET (single-stepped, ~15 us) is only
 *     a fallback for binaries where such a call is not found. Never
 *     uretprobes: Go moves goroutine stacks and a hijacked return address
 *     crashes the target.
 *   - the sysmon probe sits on the CALL to preemptone inside retake.
 *
 * Morestack double hit: when the stack must grow, the stack-check branch is
 * taken, morestack runs and the function restarts from its first byte, so
 * the entry probe is hit twice. The probe sees the flags of the comparison:
 * CF or ZF set means this `jbe` is taken (the hit to ignore); the restart
 * is counted. Userspace only attaches entry probes whose branch is `jbe`.
 * (Both functions probed at entry today run on the system stack, where
 * morestack throws instead of restarting; the guard is for any future one.)
 *
 * Expected rates (per process): GC cycles from a few per second to a few
 * hundred (a tiny live heap: `cargo xtask bench` measures 325-575/s on its
 * demo service); two stop-the-world pauses per cycle plus rare
 * ReadMemStats/GOMAXPROCS ones; sysmon preemptions at most one per 10 ms
 * per P. netpoll (opt-in) is the frequent one: every thread that looks
 * for work polls, several times per request of an HTTP service. Every
 * handler does a constant amount of work.
 *
 * Map: go_stats, tgid -> struct golens_go_stats, created by userspace.
 * Updated with plain adds, no locked instructions: the runtime itself
 * serialises what each field counts within a process (one GC cycle and one
 * stop-the-world at a time, under gcsema and worldsema; sysmon is one
 * thread), so no two probes write the same field at once. The exception
 * is netpoll_calls, which any thread may count at any time: atomic adds.
 *
 * Programs: with uprobe_multi links (kernel 6.6+) one program,
 * golens_goprobe, serves every point of a binary in one link, told apart by
 * the attach cookie (GOLENS_GOPROBE_*): one link per binary, so closing
 * them all (agent exit, SIGKILL included) costs one RCU grace period per
 * binary. With perf-event uprobes (older kernels) each probe has its own
 * program (golens_gcstart ...), attached point by point.
 */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GOLENS_MAX_TRACKED_DEFAULT);
	/* allocated per tracked process, not up front: --max-processes can be large */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct golens_go_stats);
} go_stats SEC(".maps");

static __always_inline struct golens_go_stats *current_go_stats(void)
{
	__u32 tgid = current_tgid();

	if (!is_tracked(tgid))
		return 0;
	return bpf_map_lookup_elem(&go_stats, &tgid);
}

/* At a `jbe` stack check: is this the hit that branches to morestack? */
static __always_inline bool goes_to_morestack(struct pt_regs *regs)
{
	return (regs->flags & (X86_EFLAGS_CF | X86_EFLAGS_ZF)) != 0;
}

/* At an entry probe: the process's stats, or NULL when the process is not
 * tracked or this hit is the one going to morestack (the restart counts). */
static __always_inline struct golens_go_stats *entry_stats(struct pt_regs *regs)
{
	if (goes_to_morestack(regs))
		return 0;
	return current_go_stats();
}

/* An interval ends: records now - *started_ns into hist when its start was
 * seen (the probe may have been attached in the middle), optionally clearing
 * the start. Returns the interval, 0 when it did not record. */
static __always_inline __u64 record_since(__u64 *started_ns, struct golens_hist *hist, bool clear)
{
	__u64 started = *started_ns, took;

	if (!started)
		return 0;
	if (clear)
		*started_ns = 0;
	took = bpf_ktime_get_ns() - started;
	hist_record_local(hist, took);
	return took ? took : 1;
}

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, GOLENS_GC_EVENTS_BYTES);
} gc_events SEC(".maps");

/* golens trace: one record, for the traced process only. */
static __always_inline void trace_gc(struct golens_go_stats *stats, __u32 kind, __u64 reason,
				     __u64 duration_ns)
{
	__u32 zero = 0;
	struct golens_config *config = bpf_map_lookup_elem(&agent_config, &zero);
	struct golens_gc_event *event;

	if (!config || !config->trace_tgid || config->trace_tgid != current_tgid())
		return;
	event = bpf_ringbuf_reserve(&gc_events, sizeof(*event), 0);
	if (!event)
		return;
	event->kind = kind;
	event->reason = reason;
	event->at_ns = bpf_ktime_get_ns();
	event->duration_ns = duration_ns;
	event->time_to_stop_ns = kind == GOLENS_GC_EVENT_PAUSE ? stats->last_time_to_stop_ns : 0;
	event->cycle = stats->gc_cycles;
	bpf_ringbuf_submit(event, 0);
}

/* runtime.gcResetMarkState entry: gcStart calls it once per cycle, after its
 * trigger checks passed (gcStart itself is entered by every goroutine that
 * races to start a cycle; most return early, so its entry overcounts). */
static __always_inline int on_gcstart(struct pt_regs *regs)
{
	struct golens_go_stats *stats = entry_stats(regs);

	if (!stats)
		return 0;
	stats->gc_cycles += 1;
	stats->cycle_started_ns = bpf_ktime_get_ns();
	return 0;
}

/* The CALL time.now in runtime.gcMarkTermination, right after its `now :=
 * nanotime()`: where the runtime ends the cycle (work.tEnd) and the
 * mark-termination pause. The world stays stopped for the runtime's
 * bookkeeping until startTheWorldWithSema: that tail is timed apart.
 * (Fallback site, every RET: the pause has already ended at wakep.) */
static __always_inline int on_gcend(struct pt_regs *regs)
{
	struct golens_go_stats *stats = current_go_stats();
	__u64 reason;

	if (!stats)
		return 0;
	__u64 cycle = record_since(&stats->cycle_started_ns, &stats->gc_cycle_duration, true);
	__u64 pause;

	reason = stats->stw_reason;
	if (reason >= GOLENS_STW_REASONS)
		reason = 0;
	pause = record_since(&stats->stw_started_ns, &stats->stw_pause[reason], true);
	if (pause) {
		stats->tail_started_ns = bpf_ktime_get_ns();
		trace_gc(stats, GOLENS_GC_EVENT_PAUSE, reason, pause);
	}
	if (cycle)
		trace_gc(stats, GOLENS_GC_EVENT_CYCLE, 0, cycle);
	return 0;
}

static __always_inline int stw_stop_entry(struct pt_regs *regs, __u64 reason)
{
	struct golens_go_stats *stats = entry_stats(regs);
	__u64 now;

	if (!stats)
		return 0;
	now = bpf_ktime_get_ns();
	stats->stw_stops += 1;
	stats->stw_reason = reason < GOLENS_STW_REASONS ? reason : 0;
	stats->tail_started_ns = 0;
	stats->last_time_to_stop_ns = 0;
	stats->stw_started_ns = now;
	/* Go 1.21+: sweep termination's stop is where gcStart begins a cycle
	 * (work.tSweepTerm): the cycle is counted here, one probe hit fewer
	 * per cycle than on gcResetMarkState (which older Go needs). */
	if (reason == GOLENS_STW_REASON_GC_SWEEP_TERM) {
		stats->gc_cycles += 1;
		stats->cycle_started_ns = now;
	}
	return 0;
}

/* runtime.stopTheWorldWithSema entry, Go 1.21+: `reason stwReason` (a uint8
 * enum) is the first integer argument, in AX under the register ABI. */
static __always_inline int on_stwstopr(struct pt_regs *regs)
{
	return stw_stop_entry(regs, regs->ax & 0xff);
}

/* runtime.stopTheWorldWithSema entry, Go < 1.21: no reason argument. */
static __always_inline int on_stwstop(struct pt_regs *regs)
{
	return stw_stop_entry(regs, 0);
}

/* The world is stopped: in stopTheWorldWithSema, the CALLs recording its
 * own stopping time (Go 1.22+), or its final sanity-check branch (older). */
static __always_inline int on_stwdown(struct pt_regs *regs)
{
	struct golens_go_stats *stats = current_go_stats();
	__u64 reason;

	if (!stats)
		return 0;
	reason = stats->stw_reason;
	if (reason >= GOLENS_STW_REASONS)
		reason = 0;
	stats->last_time_to_stop_ns =
		record_since(&stats->stw_started_ns, &stats->stw_time_to_stop[reason], false);
	if (!stats->last_time_to_stop_ns)
		stats->stw_unpaired += 1;
	return 0;
}

/* The CALL runtime.wakep in startTheWorldWithSema, right after the
 * `nanotime()` where the runtime ends a pause (and before its clean-up):
 * ends the pause still open, or the tail of a mark termination whose
 * pause gcMarkTermination already ended. */
static __always_inline int on_stwup(struct pt_regs *regs)
{
	struct golens_go_stats *stats = current_go_stats();
	__u64 reason, pause;

	if (!stats)
		return 0;
	reason = stats->stw_reason;
	if (reason >= GOLENS_STW_REASONS)
		reason = 0;
	pause = record_since(&stats->stw_started_ns, &stats->stw_pause[reason], true);
	if (pause) {
		trace_gc(stats, GOLENS_GC_EVENT_PAUSE, reason, pause);
		return 0;
	}
	if (!record_since(&stats->tail_started_ns, &stats->stw_tail, true))
		stats->stw_unpaired += 1;
	return 0;
}

/* The CALL runtime.preemptone inside runtime.retake: sysmon asks a goroutine
 * that has run for more than 10 ms (forcePreemptNS) to yield. GC and
 * stop-the-world preempt through preemptall and other call sites, which are
 * not probed, so this counts sysmon's preemptions only. */
static __always_inline int on_sysmon(struct pt_regs *regs)
{
	struct golens_go_stats *stats = current_go_stats();

	if (stats)
		stats->sysmon_preemptions += 1;
	return 0;
}

/* runtime.netpoll(delay int64) entry: delay in AX. Called by every thread
 * looking for work (findRunnable: non-blocking polls, and the blocking or
 * timed poll of the last thread to go idle), by sysmon and at each start of
 * the world, so several threads may count at once: atomic adds. Opt-in
 * (family gonetpoll): under HTTP load it is hit several times per request
 * (see the README). */
static __always_inline int on_netpoll(struct pt_regs *regs)
{
	struct golens_go_stats *stats = entry_stats(regs);
	__s64 delay = (__s64)regs->ax;
	__u32 mode;

	if (!stats)
		return 0;
	if (delay < 0)
		mode = GOLENS_NETPOLL_BLOCKING;
	else if (delay == 0)
		mode = GOLENS_NETPOLL_NONBLOCKING;
	else
		mode = GOLENS_NETPOLL_TIMED;
	__sync_fetch_and_add(&stats->netpoll_calls[mode], 1);
	return 0;
}

/* One program per probe, for perf-event uprobes (no cookies needed). */
#define GOLENS_UPROBE(name)                                \
	SEC("uprobe")                                      \
	int golens_##name(struct pt_regs *regs)            \
	{                                                  \
		return on_##name(regs);                    \
	}

GOLENS_UPROBE(gcstart)
GOLENS_UPROBE(gcend)
GOLENS_UPROBE(stwstopr)
GOLENS_UPROBE(stwstop)
GOLENS_UPROBE(stwdown)
GOLENS_UPROBE(stwup)
GOLENS_UPROBE(sysmon)
GOLENS_UPROBE(netpoll)

/* Every probe of a binary in one uprobe_multi link: the cookie of the point
 * says which probe it is. An unknown cookie does nothing. */
SEC("uprobe")
int golens_goprobe(struct pt_regs *regs)
{
	switch (bpf_get_attach_cookie(regs)) {
	case GOLENS_GOPROBE_GC_START:
		return on_gcstart(regs);
	case GOLENS_GOPROBE_GC_END:
		return on_gcend(regs);
	case GOLENS_GOPROBE_STW_STOP_REASON:
		return on_stwstopr(regs);
	case GOLENS_GOPROBE_STW_STOP:
		return on_stwstop(regs);
	case GOLENS_GOPROBE_STW_STOPPED:
		return on_stwdown(regs);
	case GOLENS_GOPROBE_STW_STARTED:
		return on_stwup(regs);
	case GOLENS_GOPROBE_SYSMON:
		return on_sysmon(regs);
	case GOLENS_GOPROBE_NETPOLL:
		return on_netpoll(regs);
	}
	return 0;
}
