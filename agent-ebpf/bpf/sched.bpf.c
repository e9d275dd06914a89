/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * sched.bpf.c: run-queue latency and involuntary context switches of the
 * threads of tracked processes.
 *
 * Run-queue latency is the time a runnable thread waits for a CPU: from
 * its wakeup, or from being preempted (it stays runnable), to the
 * sched_switch that puts it on a CPU. The same intervals the kernel sums
 * into the second field of /proc/PID/task/TID/schedstat.
 *
 * Two sources, chosen by userspace at load (golens_runq_from_sched_info):
 *   - the kernel's own (sched_info): at sched_switch, next's run_delay as
 *     the kernel is about to make it (run_delay, plus the current wait:
 *     its run queue's clock minus last_queued), less what it was at the
 *     thread's previous run (runq_seen). One sample per run, and exactly
 *     what schedstat sums, including a wait cut in two by a migration. No
 *     wakeup programs at all: the default wherever the kernel keeps
 *     sched_info (userspace checks /proc/thread-self/schedstat).
 *   - golens' own timestamps (wakeup_ts below, written at sched_wakeup /
 *     sched_wakeup_new and at preemption): kernels without sched_info
 *     (no CONFIG_SCHEDSTATS and delay accounting off, or no
 *     CONFIG_SCHED_INFO). The integration tests check both against
 *     schedstat.
 *
 * Maps:
 *   wakeup_ts    task storage: the ktime ns of the thread's enqueue, 0 once
 *                consumed. Storage lives and dies with the task (no key to
 *                delete, nothing left behind by a process untracked while
 *                its threads wait, no capacity to run out of), and a get is
 *                a pointer walk where a hash update took a lock and an
 *                allocation. Created only for threads of tracked processes.
 *   sched_stats  tgid -> struct golens_sched_stats, per CPU: each CPU adds
 *                to its own copy without locked instructions (userspace sums
 *                them). Entries are created and removed by userspace (and by
 *                the exec handler for known binaries), so kernel work here
 *                is a lookup and a few adds.
 *
 * Cost: these tracepoints fire for every task on the host. With sched_info
 * a switch costs one hash lookup of next (plus one of prev when prev was
 * preempted), and no wakeup program is attached. Without it, a wakeup of
 * an untracked task costs one hash lookup, and a switch a task storage
 * test of next (plus prev's lookup). Expected rate: the host's
 * context-switch rate (10^3-10^5/s).
 */

/* 1: run-queue latency from the kernel's sched_info (set at load). */
const volatile __u32 golens_runq_from_sched_info = 0;

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} wakeup_ts SEC(".maps");

/* sched_info source: a thread's run_delay (with its current wait) and
 * pcount at its last run golens saw. Created at the first run of a tracked
 * thread golens sees: that run gives a sample only if it is the thread's
 * very first (its wait since creation), and a run after runs golens missed
 * gives none. */
struct runq_seen {
	__u64 run_delay;
	__u64 next_pcount; /* the pcount of the run that follows; 0: none yet */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct runq_seen);
} runq_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, GOLENS_MAX_TRACKED_DEFAULT);
	/* allocated per tracked process, not up front: --max-processes can be large */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct golens_sched_stats);
} sched_stats SEC(".maps");

/* This CPU's copy of the stats of process `tgid`, or NULL when it is not
 * tracked: the entry exists exactly while it is (created before its
 * `tracked` entry, removed after it), so the lookup is the tracked test.
 * tgid 0 (the idle task, or a task outside golens' pid namespace) is never
 * tracked, and costs no lookup. */
static __always_inline struct golens_sched_stats *tracked_sched_stats(__u32 tgid)
{
	return tgid ? bpf_map_lookup_elem(&sched_stats, &tgid) : 0;
}

/* Caller has checked that the task belongs to a tracked process. */
static __always_inline void record_enqueue(struct task_struct *task)
{
	__u64 *enqueued_at =
		bpf_task_storage_get(&wakeup_ts, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (enqueued_at)
		*enqueued_at = bpf_ktime_get_ns();
	else
		count_drop(GOLENS_CTR_RUNQ_START_DROPPED);
}

static __always_inline void on_wakeup(struct task_struct *task)
{
	if (is_tracked(task_tgid(task)))
		record_enqueue(task);
}

static __always_inline long task_state(struct task_struct *task)
{
	if (bpf_core_field_exists(task->__state))
		return BPF_CORE_READ(task, __state);
	return BPF_CORE_READ((struct task_struct___pre514 *)task, state);
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(golens_wakeup, struct task_struct *task)
{
	on_wakeup(task);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(golens_wakenew, struct task_struct *task)
{
	on_wakeup(task);
	return 0;
}

/* The clock of the run queue `task` is switched in on: rq_clock(), which
 * __schedule updated before the tracepoint and sched_info_arrive reads
 * after it. */
static __always_inline __u64 switch_rq_clock(struct task_struct *task)
{
	struct cfs_rq *cfs = task->se.cfs_rq;
	__u64 clock = 0;

	/* Plain loads through the tp_btf task pointer (the verifier guards
	 * them): cheaper than a bpf_probe_read_kernel call each. */
	if (bpf_core_field_exists(cfs->rq))
		return cfs->rq->clock;
	/* Without group scheduling the task's cfs_rq is its rq's own. */
	bpf_probe_read_kernel(&clock, sizeof(clock),
			      (void *)((unsigned long)cfs - bpf_core_field_offset(struct rq, cfs) +
				       bpf_core_field_offset(struct rq, clock)));
	return clock;
}

/* next's wait on the run queue since its previous run, as the kernel
 * accounts it (schedstat's run_delay). */
static __always_inline void record_sched_info_wait(struct task_struct *next)
{
	struct golens_sched_stats *stats = tracked_sched_stats(task_tgid(next));
	__u64 queued, run_delay, pcount;
	struct runq_seen *seen;

	if (!stats)
		return;
	run_delay = next->sched_info.run_delay;
	queued = next->sched_info.last_queued;
	if (queued) {
		__u64 now = switch_rq_clock(next);
		if (now > queued)
			run_delay += now - queued;
	}
	pcount = next->sched_info.pcount;
	seen = bpf_task_storage_get(&runq_seen, next, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!seen) {
		count_drop(GOLENS_CTR_RUNQ_START_DROPPED);
		return;
	}
	/* pcount numbers this run (the kernel counts it after the tracepoint):
	 * a sample only when golens saw the run before it. */
	if (seen->next_pcount && pcount == seen->next_pcount && run_delay >= seen->run_delay)
		hist_record_local(&stats->runqueue_latency, run_delay - seen->run_delay);
	else if (!seen->next_pcount && pcount == 0)
		hist_record_local(&stats->runqueue_latency, run_delay);
	seen->run_delay = run_delay;
	seen->next_pcount = pcount + 1;
}

/* prev_runnable: prev leaves the CPU still runnable (preempted). */
static __always_inline void on_switch(struct task_struct *prev, struct task_struct *next,
				      bool prev_runnable)
{
	struct golens_sched_stats *stats;
	__u32 next_tgid;
	__u64 *enqueued_at, start;

	/* prev goes back to a run queue: the kernel's own nivcsw rule. */
	if (prev_runnable) {
		stats = tracked_sched_stats(task_tgid(prev));
		if (stats) {
			stats->involuntary_switches += 1;
			if (!golens_runq_from_sched_info)
				record_enqueue(prev);
		}
	}

	if (golens_runq_from_sched_info) {
		record_sched_info_wait(next);
		return;
	}

	/* next: only threads of tracked processes get a wakeup_ts entry
	 * (record_enqueue), so its absence, a pointer test, answers "not
	 * tracked" for most switches on the host without the hash lookup of
	 * is_tracked. A thread whose process was untracked since its enqueue
	 * finds no stats below. */
	enqueued_at = bpf_task_storage_get(&wakeup_ts, next, 0, 0);
	if (!enqueued_at || !*enqueued_at)
		return;
	start = *enqueued_at;
	*enqueued_at = 0;
	next_tgid = task_tgid(next);
	stats = tracked_sched_stats(next_tgid);
	if (stats) {
		__u64 now = bpf_ktime_get_ns();
		if (now > start)
			hist_record_local(&stats->runqueue_latency, now - start);
	} else if (is_tracked(next_tgid)) {
		count_drop(GOLENS_CTR_SCHED_STATS_MISSING);
	}
}

/* Kernel 5.18+ passes prev's state (commit fa2c3254d7cf, "sched/tracing:
 * Don't re-read p->state when emitting sched_switch event"): the state as
 * __schedule saw it, not re-read from a task that may have changed since. */
SEC("tp_btf/sched_switch")
int BPF_PROG(golens_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	on_switch(prev, next, preempt || prev_state == TASK_RUNNING);
	return 0;
}

/* Older kernels: the tracepoint has no prev_state argument; read the task's. */
SEC("tp_btf/sched_switch")
int BPF_PROG(golens_switch_o, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	on_switch(prev, next, preempt || task_state(prev) == TASK_RUNNING);
	return 0;
}
