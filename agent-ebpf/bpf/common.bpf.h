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

/* tgid -> unused flags. Userspace owns it: a process is watched exactly
 * while its tgid is here. Every handler checks it first. */
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

static __always_inline bool is_tracked(__u32 tgid)
{
	return bpf_map_lookup_elem(&tracked, &tgid) != 0;
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

static __always_inline void hist_record(struct golens_hist *hist, __u64 value_ns)
{
	__u32 slot = value_ns ? log2_u64(value_ns) : 0;
	if (slot >= GOLENS_HIST_SLOTS)
		slot = GOLENS_HIST_SLOTS - 1;
	__sync_fetch_and_add(&hist->slots[slot], 1);
	__sync_fetch_and_add(&hist->sum_ns, value_ns);
	__sync_fetch_and_add(&hist->count, 1);
}

#endif /* GOLENS_COMMON_BPF_H */
