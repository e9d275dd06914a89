/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * sched.bpf.c: run-queue latency and involuntary context switches of the
 * threads of tracked processes.
 *
 * Run-queue latency is the time a runnable thread waits for a CPU: from
 * sched_wakeup / sched_wakeup_new, or from being preempted (it stays
 * runnable), to the sched_switch that puts it on a CPU. The same intervals
 * the kernel sums into the second field of /proc/PID/task/TID/schedstat,
 * which the integration tests use as the independent cross-check.
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
 * Cost: these tracepoints fire for every task on the host. An untracked
 * task costs a wakeup one hash lookup; a switch, a task storage test of
 * next (plus a hash lookup of prev when prev was preempted). Expected
 * rate: the host's context-switch rate (10^3-10^5/s).
 */

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} wakeup_ts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, GOLENS_MAX_TRACKED_DEFAULT);
	/* allocated per tracked process, not up front: --max-processes can be large */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct golens_sched_stats);
} sched_stats SEC(".maps");

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

/* prev_runnable: prev leaves the CPU still runnable (preempted). */
static __always_inline void on_switch(struct task_struct *prev, struct task_struct *next,
				      bool prev_runnable)
{
	__u32 prev_tgid, next_tgid;
	struct golens_sched_stats *stats;
	__u64 *enqueued_at, start;

	/* prev goes back to a run queue: the kernel's own nivcsw rule. */
	if (prev_runnable) {
		prev_tgid = task_tgid(prev);
		if (is_tracked(prev_tgid)) {
			stats = bpf_map_lookup_elem(&sched_stats, &prev_tgid);
			if (stats)
				stats->involuntary_switches += 1;
			else
				count_drop(GOLENS_CTR_SCHED_STATS_MISSING);
			record_enqueue(prev);
		}
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
	stats = bpf_map_lookup_elem(&sched_stats, &next_tgid);
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
