/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * golens.bpf.c: the one compilation unit of golens' kernel side.
 *
 * Each probe family lives in its own file and is included here so that all
 * of them share the maps in common.bpf.h. Minimum kernel: 5.8 (ring buffer),
 * BTF required (tp_btf programs and CO-RE relocations).
 */
#include "common.bpf.h"

/* procs last: it uses sched's and goruntime's maps */
#include "sched.bpf.c"
#include "goruntime.bpf.c"
#include "syscalls.bpf.c"
#include "procs.bpf.c"

char LICENSE[] SEC("license") = "GPL";
