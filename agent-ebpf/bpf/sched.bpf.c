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
 *   wakeup_ts    tid (global: never leaves the kernel) -> ktime ns of the
 *                enqueue; deleted at switch-in or thread exit. LRU: an
 *                entry left behind (a process untracked while its threads
 *                wait) is evicted by newer ones instead of filling the map
 *                for good. A failed insert drops the sample and counts it
 *                (GOLENS_CTR_RUNQ_START_DROPPED).
 *   sched_stats  tgid -> struct golens_sched_stats; entries are created and
 *                removed by userspace only, so kernel work is a lookup and
 *                a few atomic adds.
 *
 * Cost: these tracepoints fire for every task on the host; an untracked
 * task costs one hash lookup per handler. Expected rate: the host's
 * context-switch rate (10^3-10^5/s).
 */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GOLENS_WAKEUP_TS_ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
} wakeup_ts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GOLENS_MAX_TRACKED_DEFAULT);
	/* allocated per tracked process, not up front: --max-processes can be large */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct golens_sched_stats);
} sched_stats SEC(".maps");

/* Caller has checked that the task belongs to a tracked process. */
static __always_inline void record_enqueue(__u32 pid)
{
	__u64 now = bpf_ktime_get_ns();

	if (bpf_map_update_elem(&wakeup_ts, &pid, &now, BPF_ANY) != 0)
		count_drop(GOLENS_CTR_RUNQ_START_DROPPED);
}

static __always_inline void on_wakeup(struct task_struct *task)
{
	if (is_tracked(task_tgid(task)))
		record_enqueue(task->pid);
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
	__u32 prev_tgid, next_tgid = task_tgid(next);
	__u32 next_pid = next->pid;
	struct golens_sched_stats *stats;
	__u64 *enqueued_at;

	/* prev goes back to a run queue: the kernel's own nivcsw rule. */
	if (prev_runnable) {
		prev_tgid = task_tgid(prev);
		if (is_tracked(prev_tgid)) {
			stats = bpf_map_lookup_elem(&sched_stats, &prev_tgid);
			if (stats)
				__sync_fetch_and_add(&stats->involuntary_switches, 1);
			else
				count_drop(GOLENS_CTR_SCHED_STATS_MISSING);
			record_enqueue(prev->pid);
		}
	}

	if (!is_tracked(next_tgid))
		return;
	enqueued_at = bpf_map_lookup_elem(&wakeup_ts, &next_pid);
	if (!enqueued_at)
		return;
	stats = bpf_map_lookup_elem(&sched_stats, &next_tgid);
	if (stats) {
		__u64 now = bpf_ktime_get_ns();
		__u64 start = *enqueued_at;
		if (now > start)
			hist_record(&stats->runqueue_latency, now - start);
	} else {
		count_drop(GOLENS_CTR_SCHED_STATS_MISSING);
	}
	bpf_map_delete_elem(&wakeup_ts, &next_pid);
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
