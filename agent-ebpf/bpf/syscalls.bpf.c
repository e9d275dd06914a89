/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * syscalls.bpf.c: pressure against limits, netpoll and timers, from the
 * per-syscall tracepoints (syscalls/sys_enter_NAME, sys_exit_NAME) of the
 * syscalls that matter, never raw_syscalls (which would run for every
 * syscall on the host). Every handler returns at once for an untracked
 * process: one hash lookup at an enter, a task storage test at the exit
 * of a timed wait, the result tested before one lookup at the others.
 * While any of them is attached, every syscall of every process takes the
 * kernel's traced syscall path: a toll of ~40-60 ns per syscall here
 * (agent/examples/tracepoint_hit_cost), whichever syscalls are probed.
 *
 * Families (each a `--probes` name; userspace attaches a family's
 * tracepoints or none of them):
 *   vma      exits of mmap, munmap, mremap, brk, mprotect: mm->map_count,
 *            and its peak since the last collection (vm.max_map_count is
 *            the limit). Rate: a Go service maps rarely once warm.
 *   fd       exits of the fd-creating syscalls: EMFILE / ENFILE returned
 *            to the process. Rate: the host's open/socket/accept rate.
 *   net      exit of connect: EADDRNOTAVAIL (no ephemeral port left).
 *   netpoll  epoll_pwait / epoll_pwait2: how long a blocking
 *            wait (timeout != 0, Go's netpoll(delay > 0 or < 0)) lasted.
 *            Rate: every time a Go M parks in netpoll, ~ requests/s.
 *   timers   a timed wait (epoll timeout, nanosleep, clock_nanosleep) that
 *            timed out: how much later than asked it returned; and
 *            timerfd_settime calls.
 *
 * Maps: pressure_stats (tgid -> struct golens_pressure_stats, per CPU,
 * created by userspace and the exec handler); wait_start (task storage:
 * when a thread entered a wait and for how long it asked to sleep).
 */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, GOLENS_MAX_TRACKED_DEFAULT);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct golens_pressure_stats);
} pressure_stats SEC(".maps");

/* A wait in progress on one thread. */
struct wait_start {
	__u64 started_ns;
	__s64 timeout_ns; /* asked: < 0 forever, 0 poll, > 0 timed */
	__u64 netpoll;    /* an epoll wait (1), or a sleep (0) */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct wait_start);
} wait_start SEC(".maps");

/* This CPU's copy of the current process's stats, or NULL if untracked.
 * The lookup is the tracked test: an entry exists while the process is
 * tracked (created before its `tracked` entry, removed after it), so a
 * tracked process costs one lookup here, not two. */
static __always_inline struct golens_pressure_stats *current_pressure(void)
{
	__u32 tgid = current_tgid();

	if (!tgid)
		return 0;
	return bpf_map_lookup_elem(&pressure_stats, &tgid);
}

/* ---- vma ---- */

static __always_inline int on_mapping_exit(void)
{
	struct golens_pressure_stats *stats = current_pressure();
	struct golens_config *config;
	struct task_struct *task;
	__u32 zero = 0;
	__u64 vmas;

	if (!stats)
		return 0;
	config = bpf_map_lookup_elem(&agent_config, &zero);
	if (!config)
		return 0;
	task = (struct task_struct *)bpf_get_current_task();
	vmas = (__u64)BPF_CORE_READ(task, mm, map_count);
	stats->vmas = vmas;
	/* A new collection epoch: the peak starts over from here. Userspace
	 * takes the maximum over CPUs of the peaks of the current epoch. */
	if (stats->vmas_epoch != config->collection_epoch) {
		stats->vmas_epoch = config->collection_epoch;
		stats->vmas_peak = vmas;
	} else if (vmas > stats->vmas_peak) {
		stats->vmas_peak = vmas;
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_mmap")
int golens_mmap(struct syscall_exit_args *ctx) { return on_mapping_exit(); }
SEC("tracepoint/syscalls/sys_exit_munmap")
int golens_munmap(struct syscall_exit_args *ctx) { return on_mapping_exit(); }
SEC("tracepoint/syscalls/sys_exit_mremap")
int golens_mremap(struct syscall_exit_args *ctx) { return on_mapping_exit(); }
SEC("tracepoint/syscalls/sys_exit_brk")
int golens_brk(struct syscall_exit_args *ctx) { return on_mapping_exit(); }
SEC("tracepoint/syscalls/sys_exit_mprotect")
int golens_mprotect(struct syscall_exit_args *ctx) { return on_mapping_exit(); }

/* ---- fd ---- */

static __always_inline int on_fd_exit(struct syscall_exit_args *ctx)
{
	struct golens_pressure_stats *stats;

	/* Most calls succeed: test the result before any lookup. */
	if (ctx->ret != -EMFILE && ctx->ret != -ENFILE)
		return 0;
	stats = current_pressure();
	if (!stats)
		return 0;
	if (ctx->ret == -EMFILE)
		stats->emfile += 1;
	else
		stats->enfile += 1;
	return 0;
}

/* Program names stay within the kernel's 15 characters: golens_f<short>. */
#define GOLENS_FD_EXIT(short, name)                            \
	SEC("tracepoint/syscalls/sys_exit_" #name)             \
	int golens_##short(struct syscall_exit_args *ctx)      \
	{                                                      \
		return on_fd_exit(ctx);                        \
	}

GOLENS_FD_EXIT(fopen, open)
GOLENS_FD_EXIT(fopenat, openat)
GOLENS_FD_EXIT(fsocket, socket)
GOLENS_FD_EXIT(faccept, accept)
GOLENS_FD_EXIT(faccept4, accept4)
GOLENS_FD_EXIT(fdup, dup)
GOLENS_FD_EXIT(fdup2, dup2)
GOLENS_FD_EXIT(fdup3, dup3)
GOLENS_FD_EXIT(ffcntl, fcntl)
GOLENS_FD_EXIT(fpipe2, pipe2)
GOLENS_FD_EXIT(fepollc, epoll_create1)
GOLENS_FD_EXIT(fevtfd, eventfd2)
GOLENS_FD_EXIT(ftfdcre, timerfd_create)
GOLENS_FD_EXIT(finotify, inotify_init1)
GOLENS_FD_EXIT(fpidfd, pidfd_open)

/* ---- net ---- */

SEC("tracepoint/syscalls/sys_exit_connect")
int golens_connect(struct syscall_exit_args *ctx)
{
	struct golens_pressure_stats *stats;

	if (ctx->ret != -EADDRNOTAVAIL)
		return 0;
	stats = current_pressure();
	if (stats)
		stats->connect_eaddrnotavail += 1;
	return 0;
}

/* ---- netpoll and timers ---- */

/* The caller has checked that the current process is tracked (filter
 * first: before any user memory is read). */
static __always_inline void wait_enter(__s64 timeout_ns, __u64 netpoll)
{
	struct task_struct *task;
	struct wait_start *start;

	task = bpf_get_current_task_btf();
	start = bpf_task_storage_get(&wait_start, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!start)
		return;
	start->started_ns = bpf_ktime_get_ns();
	start->timeout_ns = timeout_ns;
	start->netpoll = netpoll;
}

/* ret: the syscall's result; timed_out: whether that result means the
 * timeout expired (0 events for epoll, 0 for a sleep that was not cut). */
static __always_inline void wait_exit(bool timed_out)
{
	struct golens_pressure_stats *stats;
	struct wait_start *start;
	__u64 now, slept;

	start = bpf_task_storage_get(&wait_start, bpf_get_current_task_btf(), 0, 0);
	if (!start || !start->started_ns)
		return;
	now = bpf_ktime_get_ns();
	slept = now > start->started_ns ? now - start->started_ns : 0;
	start->started_ns = 0;
	stats = current_pressure();
	if (!stats)
		return;
	if (start->netpoll && start->timeout_ns != 0)
		hist_record_local(&stats->netpoll_wait, slept);
	if (timed_out && start->timeout_ns > 0 && slept > (__u64)start->timeout_ns)
		hist_record_local(&stats->timer_lateness, slept - start->timeout_ns);
}

/* epoll_pwait(epfd, events, maxevents, timeout_ms, sigmask, size) */
static __always_inline int epoll_enter_ms(struct syscall_enter_args *ctx)
{
	__s64 timeout_ms = (int)ctx->args[3];

	if (!is_tracked(current_tgid()))
		return 0;
	wait_enter(timeout_ms < 0 ? -1 : timeout_ms * 1000000, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_epoll_pwait")
int golens_epp_in(struct syscall_enter_args *ctx) { return epoll_enter_ms(ctx); }

/* epoll_pwait2(epfd, events, maxevents, const struct __kernel_timespec *timeout, ...) */
SEC("tracepoint/syscalls/sys_enter_epoll_pwait2")
int golens_epp2_in(struct syscall_enter_args *ctx)
{
	struct kernel_timespec timeout = {};
	const void *user = (const void *)ctx->args[3];

	if (!is_tracked(current_tgid()))
		return 0;
	if (!user) {
		wait_enter(-1, 1);
		return 0;
	}
	if (bpf_probe_read_user(&timeout, sizeof(timeout), user))
		return 0;
	wait_enter(timeout.tv_sec * 1000000000 + timeout.tv_nsec, 1);
	return 0;
}

static __always_inline int epoll_exit(struct syscall_exit_args *ctx)
{
	wait_exit(ctx->ret == 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_epoll_pwait")
int golens_epp_out(struct syscall_exit_args *ctx) { return epoll_exit(ctx); }
SEC("tracepoint/syscalls/sys_exit_epoll_pwait2")
int golens_epp2_out(struct syscall_exit_args *ctx) { return epoll_exit(ctx); }

/* nanosleep(const struct __kernel_timespec *rqtp, rmtp) and
 * clock_nanosleep(clockid, flags, rqtp, rmtp): relative sleeps only
 * (flags without TIMER_ABSTIME). */
static __always_inline int sleep_enter(const void *user)
{
	struct kernel_timespec asked = {};

	if (!user || !is_tracked(current_tgid()))
		return 0;
	if (bpf_probe_read_user(&asked, sizeof(asked), user))
		return 0;
	wait_enter(asked.tv_sec * 1000000000 + asked.tv_nsec, 0);
	return 0;
}

#define TIMER_ABSTIME 1

SEC("tracepoint/syscalls/sys_enter_nanosleep")
int golens_ns_in(struct syscall_enter_args *ctx) { return sleep_enter((const void *)ctx->args[0]); }

SEC("tracepoint/syscalls/sys_enter_clock_nanosleep")
int golens_cns_in(struct syscall_enter_args *ctx)
{
	if (ctx->args[1] & TIMER_ABSTIME)
		return 0;
	return sleep_enter((const void *)ctx->args[2]);
}

static __always_inline int sleep_exit(struct syscall_exit_args *ctx)
{
	wait_exit(ctx->ret == 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_nanosleep")
int golens_ns_out(struct syscall_exit_args *ctx) { return sleep_exit(ctx); }
SEC("tracepoint/syscalls/sys_exit_clock_nanosleep")
int golens_cns_out(struct syscall_exit_args *ctx) { return sleep_exit(ctx); }

SEC("tracepoint/syscalls/sys_enter_timerfd_settime")
int golens_tfd_set(struct syscall_enter_args *ctx)
{
	struct golens_pressure_stats *stats = current_pressure();

	if (stats)
		stats->timerfd_settime += 1;
	return 0;
}
