/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kernel_types.h: the few kernel types and constants golens reads, declared
 * by hand so that the build never depends on the build host's kernel headers.
 *
 * Structs carry preserve_access_index: clang records each field access as a
 * CO-RE relocation and the loader (aya) rewrites the offset against the
 * running kernel's BTF. Only the fields named here exist as far as the
 * programs know; their position in these declarations does not matter.
 */
#ifndef GOLENS_KERNEL_TYPES_H
#define GOLENS_KERNEL_TYPES_H

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
/* needed by libbpf's bpf_helper_defs.h */
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0
typedef int pid_t;

/* uapi/linux/bpf.h values: stable ABI, never renumbered */
enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
	BPF_MAP_TYPE_TASK_STORAGE = 29,
};

/* bpf_task_storage_get flags */
#define BPF_LOCAL_STORAGE_GET_F_CREATE (1ULL << 0)
/* bpf_ringbuf_submit / bpf_ringbuf_query flags */
#define BPF_RB_NO_WAKEUP (1ULL << 0)
#define BPF_RB_FORCE_WAKEUP (1ULL << 1)
#define BPF_RB_AVAIL_DATA 0

/* map_flags */
#define BPF_F_NO_PREALLOC (1U << 0)

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};

#define TASK_RUNNING 0

/* x86-64 register file as uprobe programs see it (uapi struct pt_regs layout,
 * the context of BPF_PROG_TYPE_KPROBE: fixed ABI, not relocated). */
struct pt_regs {
	unsigned long r15;
	unsigned long r14;
	unsigned long r13;
	unsigned long r12;
	unsigned long bp;
	unsigned long bx;
	unsigned long r11;
	unsigned long r10;
	unsigned long r9;
	unsigned long r8;
	unsigned long ax;
	unsigned long cx;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
	unsigned long ip;
	unsigned long cs;
	unsigned long flags;
	unsigned long sp;
	unsigned long ss;
};

#define X86_EFLAGS_CF 0x0001UL
#define X86_EFLAGS_ZF 0x0040UL

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct pid_namespace;

/* One level of a pid: the number and the namespace it is valid in. */
struct upid {
	int nr;
	struct pid_namespace *ns;
};

/* numbers[0] is the init namespace's pid, numbers[level] the task's own. */
struct pid {
	unsigned int level;
	struct upid numbers[];
};

struct super_block {
	unsigned int s_dev; /* kernel dev_t: MAJOR << 20 | MINOR */
};

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
};

struct file {
	struct inode *f_inode;
};

struct linux_binprm {
	struct file *file;
};

struct mm_struct {
	int map_count; /* VMAs; vm.max_map_count is its limit */
};

/* The scheduler's own run-queue accounting (CONFIG_SCHED_INFO): what
 * /proc/PID/task/TID/schedstat shows. run_delay sums the task's waits on a
 * run queue, pcount counts its runs; last_queued is the run-queue clock at
 * its enqueue (wakeup, or preemption: it stays runnable), 0 once the wait
 * is added to run_delay: at its next run, right after the sched_switch
 * tracepoint, or when it leaves a run queue without running (migration). */
struct sched_info {
	unsigned long pcount;
	unsigned long long run_delay;
	unsigned long long last_queued;
};

struct rq;

struct cfs_rq {
	struct rq *rq; /* CONFIG_FAIR_GROUP_SCHED; else cfs_rq is rq->cfs */
};

struct rq {
	__u64 clock; /* rq_clock(): the "now" sched_info uses */
	struct cfs_rq cfs;
};

struct sched_entity {
	struct cfs_rq *cfs_rq; /* the task's, on its CPU's run queue */
};

struct task_struct {
	/* 5.14+ (commit 2f064a59a11f, "sched: Change task_struct::state") */
	unsigned int __state;
	struct sched_entity se;
	struct sched_info sched_info;
	struct mm_struct *mm;
	pid_t pid;
	pid_t tgid;
	struct task_struct *group_leader;
	struct pid *thread_pid;
	char comm[16];
};

/* Before 5.14 the field was `volatile long state`: a flavor lets CO-RE pick. */
struct task_struct___pre514 {
	long state;
};

#pragma clang attribute pop

/* Context of the per-syscall tracepoints (syscalls/sys_enter_NAME and
 * sys_exit_NAME). Their layout is the tracefs format of every syscall
 * event (common header, then __syscall_nr, then args or ret at offset 16):
 * a fixed ABI of the tracepoint, not a kernel struct, so not relocated. */
struct syscall_enter_args {
	__u64 common;
	__s32 nr;
	__u32 _pad;
	__u64 args[6];
};

struct syscall_exit_args {
	__u64 common;
	__s32 nr;
	__u32 _pad;
	__s64 ret;
};

/* struct __kernel_timespec (uapi): what nanosleep and epoll_pwait2 take. */
struct kernel_timespec {
	__s64 tv_sec;
	__s64 tv_nsec;
};

#define EMFILE 24
#define ENFILE 23
#define EADDRNOTAVAIL 99
#define EINTR 4

#endif /* GOLENS_KERNEL_TYPES_H */
