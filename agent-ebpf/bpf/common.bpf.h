/* SPDX-License-Identifier: Apache-2.0 */
/*
 * common.bpf.h: maps and helpers shared by every probe family.
 *
 * All families are compiled as one unit (golens.bpf.c) so that they share
 * one `tracked` map and one set of drop counters; aya still loads and
 * attaches each program on its own, so one failing program does not take
 * the others down.
 */
#ifndef GOLENS_COMMON_BPF_H
#define GOLENS_COMMON_BPF_H

#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "golens.h"

/* tgid -> GOLENS_TRACKED_BY_*. A process is watched exactly while its tgid
 * is here. Userspace inserts and removes entries; the exec handler also
 * inserts one when a known Go binary is exec'd (procs.bpf.c). Every handler
 * checks it first. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GOLENS_MAX_TRACKED_DEFAULT);
	__type(key, __u32);
	__type(value, __u32);
} tracked SEC(".maps");

/* See GOLENS_CTR_*: one slot per drop/skip reason. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GOLENS_CTR_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} agent_counters SEC(".maps");

/* One entry: struct golens_config, written by userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct golens_config);
} agent_config SEC(".maps");

static __always_inline bool is_tracked(__u32 tgid)
{
	return tgid && bpf_map_lookup_elem(&tracked, &tgid) != 0;
}

/*
 * Pid namespaces. Every tgid in the maps and the events is the pid golens'
 * own /proc shows, so that labels and --pid mean what the user sees. When
 * that /proc is the initial pid namespace's (bare host, hostPID DaemonSet),
 * that is task->tgid and golens_pidns_translate stays 0: no extra work.
 * Otherwise (a sidecar sharing a pod's namespace, `unshare --pid`) the
 * number is read from the task's struct pid at the level of that namespace,
 * and a task that has no pid there (outside it) reads 0: never tracked.
 * Set at load time by userspace; the namespace itself (address and level)
 * comes from calibration, in agent_config.
 */
const volatile __u32 golens_pidns_translate = 0;

static __always_inline __u32 pid_in_golens_ns(struct pid *pid)
{
	__u32 zero = 0;
	struct golens_config *config = bpf_map_lookup_elem(&agent_config, &zero);
	struct upid upid;
	__u32 level;

	if (!config || !config->pidns)
		return 0;
	level = config->pidns_level;
	if (level >= GOLENS_PIDNS_LEVELS || BPF_CORE_READ(pid, level) < level)
		return 0;
	if (bpf_core_read(&upid, sizeof(upid), &pid->numbers[level]))
		return 0;
	if ((__u64)upid.ns != config->pidns)
		return 0;
	return upid.nr;
}

/* The process id (tgid) of a task as golens' /proc shows it; 0 if invisible
 * there. For the trusted task pointers tp_btf programs receive: plain loads
 * (the hot path of every scheduler event), no helper call. */
static __always_inline __u32 task_tgid(struct task_struct *task)
{
	if (!golens_pidns_translate)
		return task->tgid;
	return pid_in_golens_ns(task->group_leader->thread_pid);
}

/* The same for the task running now (uprobes: no trusted pointer, so the
 * namespace walk reads through bpf_probe_read_kernel). */
static __always_inline __u32 current_tgid(void)
{
	struct task_struct *task;

	if (!golens_pidns_translate)
		return bpf_get_current_pid_tgid() >> 32;
	task = (struct task_struct *)bpf_get_current_task();
	return pid_in_golens_ns(BPF_CORE_READ(task, group_leader, thread_pid));
}

static __always_inline void count_drop(__u32 counter)
{
	__u64 *value = bpf_map_lookup_elem(&agent_counters, &counter);
	if (value)
		*value += 1; /* per-CPU slot: no atomic needed */
}

/* floor(log2(v)) for v > 0, branch-free and loop-free (the verifier likes it). */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0, shift;
	shift = (v > 0xFFFFFFFFULL) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline __u32 hist_slot(__u64 value_ns)
{
	__u32 slot = value_ns ? log2_u64(value_ns) : 0;
	return slot >= GOLENS_HIST_SLOTS ? GOLENS_HIST_SLOTS - 1 : slot;
}

/* For a histogram with one writer at a time: a per-CPU value that only this
 * CPU's programs write (the scheduler tracepoints run with interrupts off),
 * or one the Go runtime's own locking serialises (goruntime.bpf.c): plain
 * adds, no locked instruction. */
static __always_inline void hist_record_local(struct golens_hist *hist, __u64 value_ns)
{
	hist->slots[hist_slot(value_ns)] += 1;
	hist->sum_ns += value_ns;
	hist->count += 1;
}


#endif /* GOLENS_COMMON_BPF_H */
