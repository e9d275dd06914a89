/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * procs.bpf.c: process lifecycle for discovery.
 *
 * Userspace finds Go processes with one /proc scan at start, then keeps the
 * set current from these two tracepoints instead of polling:
 *   - sched_process_exec: every exec on the host (not only tracked ones: a
 *     new Go process is, by definition, not tracked yet). Expected rate: the
 *     host's exec rate, typically < 100/s. One 16-byte record each.
 *   - sched_process_exit: only for tracked tgids, and only when the thread
 *     group leader exits (the process is gone or going).
 * Records go through a ring buffer; a full buffer counts in agent_counters
 * (GOLENS_CTR_PROC_EVENT_DROPPED) and userspace's periodic liveness check
 * catches what was lost. The reader is not woken for every record (a wakeup
 * per exec costs the exec'ing task and the agent a context switch each):
 * only once GOLENS_PROC_EVENTS_WAKEUP_BYTES are pending; userspace also
 * drains the buffer every GOLENS_PROC_EVENTS_POLL_MS.
 */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, GOLENS_PROC_EVENTS_BYTES);
} proc_events SEC(".maps");

static __always_inline void emit_proc_event(__u32 kind, __u32 tgid, __u32 pid)
{
	struct golens_proc_event *event = bpf_ringbuf_reserve(&proc_events, sizeof(*event), 0);
	if (!event) {
		count_drop(GOLENS_CTR_PROC_EVENT_DROPPED);
		return;
	}
	event->kind = kind;
	event->tgid = tgid;
	event->pid = pid;
	event->_pad = 0;
	bpf_ringbuf_submit(event, bpf_ringbuf_query(&proc_events, BPF_RB_AVAIL_DATA) >=
					  GOLENS_PROC_EVENTS_WAKEUP_BYTES
				  ? BPF_RB_FORCE_WAKEUP
				  : BPF_RB_NO_WAKEUP);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(golens_exec, struct task_struct *task)
{
	emit_proc_event(GOLENS_PROC_EXEC, task->tgid, task->pid);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(golens_exit, struct task_struct *task)
{
	__u32 tgid = task->tgid;
	__u32 pid = task->pid;

	if (!is_tracked(tgid))
		return 0;
	/* A thread's pending wakeup timestamp dies with the thread. */
	bpf_map_delete_elem(&wakeup_ts, &pid);
	if (pid == tgid)
		emit_proc_event(GOLENS_PROC_EXIT, tgid, pid);
	return 0;
}
