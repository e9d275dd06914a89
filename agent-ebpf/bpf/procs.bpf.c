/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * procs.bpf.c: process lifecycle for discovery, tracking from exec, and the
 * pid-namespace calibration.
 *
 * Userspace finds Go processes with one /proc scan at start, then keeps the
 * set current from these two tracepoints instead of polling:
 *   - sched_process_exec: every exec on the host (not only tracked ones: a
 *     new Go process is, by definition, not tracked yet). Expected rate: the
 *     host's exec rate, typically < 100/s. One 32-byte record each, plus a
 *     hash lookup of the executable.
 *   - sched_process_exit: for tracked tgids, a record when the thread group
 *     leader exits (the process is gone or going).
 *
 * Tracking from exec: when the exec'd file is in known_binaries (a Go
 * binary golens already probes: userspace adds it when it attaches the
 * binary's uprobes and removes it when it detaches them), the handler makes
 * the process tracked at once, with zeroed stats entries, before its first
 * instruction: the uprobes already sit in the file, so the first GC cycle of
 * a 150 ms process is seen. Userspace adds labels when the record arrives.
 * An unknown binary takes the userspace path (inspect, attach: <= 100 ms).
 *
 * Records go through a ring buffer; a full buffer counts in agent_counters
 * (GOLENS_CTR_PROC_EVENT_DROPPED) and userspace rescans /proc when it sees
 * that counter move. The reader is not woken for every record (a wakeup
 * per exec costs the exec'ing task and the agent a context switch each):
 * only once GOLENS_PROC_EVENTS_WAKEUP_BYTES are pending; userspace also
 * drains the buffer every GOLENS_PROC_EVENTS_POLL_MS.
 */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, GOLENS_PROC_EVENTS_BYTES);
} proc_events SEC(".maps");

/* Executables whose exec makes a process tracked. Owned by userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GOLENS_KNOWN_BINARIES);
	__type(key, struct golens_binary_key);
	__type(value, __u32);
} known_binaries SEC(".maps");

/* With --comm: the comms (NUL-padded to 16 bytes) exec tracking applies to. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GOLENS_WANTED_COMMS);
	__type(key, char[16]);
	__type(value, __u32);
} wanted_comms SEC(".maps");

/* Zeroed stats to copy from: a 6 KB value cannot be built on the 512-byte stack. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct golens_sched_stats);
} zero_sched_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct golens_go_stats);
} zero_go_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct golens_pressure_stats);
} zero_pressure_stats SEC(".maps");

/* Filled once by golens_calib; read by userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct golens_calibration);
} pidns_calibration SEC(".maps");

static __always_inline void emit_proc_event(__u32 kind, __u32 tgid, __u32 flags,
					    struct golens_binary_key *binary)
{
	struct golens_proc_event *event = bpf_ringbuf_reserve(&proc_events, sizeof(*event), 0);
	if (!event) {
		count_drop(GOLENS_CTR_PROC_EVENT_DROPPED);
		return;
	}
	event->kind = kind;
	event->tgid = tgid;
	event->flags = flags;
	event->_pad = 0;
	event->binary.ino = binary ? binary->ino : 0;
	event->binary.dev = binary ? binary->dev : 0;
	event->binary._pad = 0;
	bpf_ringbuf_submit(event, bpf_ringbuf_query(&proc_events, BPF_RB_AVAIL_DATA) >=
					  GOLENS_PROC_EVENTS_WAKEUP_BYTES
				  ? BPF_RB_FORCE_WAKEUP
				  : BPF_RB_NO_WAKEUP);
}

static __always_inline bool comm_wanted(struct task_struct *task)
{
	__u32 zero = 0;
	struct golens_config *config = bpf_map_lookup_elem(&agent_config, &zero);
	char comm[16] = {};

	if (!config || !config->comm_filter)
		return true;
	bpf_core_read_str(comm, sizeof(comm), &task->comm);
	return bpf_map_lookup_elem(&wanted_comms, comm) != 0;
}

/* Zeroed stats first, then tracked: a tracked tgid always has its stats.
 * BPF_ANY: a tracked process that exec'd again starts from zero. */
static __always_inline bool track_from_exec(__u32 tgid)
{
	__u32 zero = 0, by_exec = GOLENS_TRACKED_BY_EXEC;
	struct golens_sched_stats *sched = bpf_map_lookup_elem(&zero_sched_stats, &zero);
	struct golens_go_stats *go = bpf_map_lookup_elem(&zero_go_stats, &zero);
	struct golens_pressure_stats *pressure = bpf_map_lookup_elem(&zero_pressure_stats, &zero);

	if (!sched || !go || !pressure)
		return false;
	/* sched_stats and pressure_stats are per CPU: an update from here
	 * writes this CPU's copy only, and zeroes the others only for a new
	 * element, so a re-exec's old entry is deleted first. */
	bpf_map_delete_elem(&sched_stats, &tgid);
	bpf_map_delete_elem(&pressure_stats, &tgid);
	if (bpf_map_update_elem(&sched_stats, &tgid, sched, BPF_NOEXIST) ||
	    bpf_map_update_elem(&pressure_stats, &tgid, pressure, BPF_NOEXIST) ||
	    bpf_map_update_elem(&go_stats, &tgid, go, BPF_ANY) ||
	    bpf_map_update_elem(&tracked, &tgid, &by_exec, BPF_ANY)) {
		count_drop(GOLENS_CTR_EXEC_TRACK_FAILED);
		return false;
	}
	return true;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(golens_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	struct golens_binary_key binary = {};
	struct inode *inode;
	__u32 tgid = task_tgid(task);
	__u32 flags = 0;

	if (!tgid)
		return 0; /* not in golens' pid namespace: it cannot watch it */
	inode = BPF_CORE_READ(bprm, file, f_inode);
	binary.ino = BPF_CORE_READ(inode, i_ino);
	binary.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	if (bpf_map_lookup_elem(&known_binaries, &binary) && comm_wanted(task) &&
	    track_from_exec(tgid))
		flags = GOLENS_PROC_TRACKED_BY_EXEC;
	emit_proc_event(GOLENS_PROC_EXEC, tgid, flags, &binary);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(golens_exit, struct task_struct *task)
{
	__u32 pid = task->pid;
	__u32 tgid;

	tgid = task_tgid(task);
	if (!is_tracked(tgid))
		return 0;
	if (pid == (__u32)task->tgid)
		emit_proc_event(GOLENS_PROC_EXIT, tgid, 0, 0);
	return 0;
}

/*
 * Pid-namespace calibration: golens calls getpgid(GOLENS_CALIBRATION_MAGIC)
 * once at start while this program is attached, and it records golens' own
 * struct pid: from it userspace learns the level and the address of the
 * namespace its /proc shows (see task_tgid). Attached for that one call
 * only, and only when golens does not run in the initial pid namespace.
 */
#define X86_64_NR_GETPGID 121

SEC("tp_btf/sys_enter")
int BPF_PROG(golens_calib, struct pt_regs *regs, long id)
{
	struct golens_calibration *calibration;
	struct pid *pid;
	unsigned long arg = 0;
	__u32 zero = 0;

	if (id != X86_64_NR_GETPGID)
		return 0;
	bpf_probe_read_kernel(&arg, sizeof(arg), &regs->di);
	if (arg != GOLENS_CALIBRATION_MAGIC)
		return 0;
	calibration = bpf_map_lookup_elem(&pidns_calibration, &zero);
	if (!calibration)
		return 0;
	pid = BPF_CORE_READ((struct task_struct *)bpf_get_current_task(), thread_pid);
	calibration->level = BPF_CORE_READ(pid, level);
	for (int level = 0; level < GOLENS_PIDNS_LEVELS; level++) {
		struct upid upid = {};

		if (level > calibration->level)
			break;
		bpf_core_read(&upid, sizeof(upid), &pid->numbers[level]);
		calibration->ns[level] = (__u64)upid.ns;
		calibration->nr[level] = upid.nr;
	}
	calibration->seen = 1;
	return 0;
}
