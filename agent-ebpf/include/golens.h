/* SPDX-License-Identifier: Apache-2.0 */
/*
 * golens.h: the only contract between the kernel programs and userspace.
 *
 * Every struct that crosses a map or a ring buffer is defined here, once.
 * The Rust side is generated from this file by bindgen (agent-ebpf/build.rs),
 * so a field added here shows up in Rust or the build fails.
 *
 * Rules: fixed-width types only (no bool, no pointers, no enum-typed fields,
 * no bitfields), explicit padding, a size assertion on every struct.
 * Padding is an error inside this header (-Wpadded below).
 */
#ifndef GOLENS_H
#define GOLENS_H

#pragma clang diagnostic push
#pragma clang diagnostic error "-Wpadded"

/*
 * Histograms: log2 slots of nanoseconds. Slot i counts values v with
 * floor(log2(v)) == i (slot 0 also takes v == 0); the last slot takes
 * everything at or above 2^(GOLENS_HIST_SLOTS-1) ns (~4.6 min with 38).
 * sum_ns is exact, so means and Prometheus _sum are exact.
 */
#define GOLENS_HIST_SLOTS 38

struct golens_hist {
	__u64 slots[GOLENS_HIST_SLOTS];
	__u64 sum_ns;
	__u64 count;
};
_Static_assert(sizeof(struct golens_hist) == 8 * (GOLENS_HIST_SLOTS + 2), "golens_hist size");

/* Value of the sched_stats map, keyed by tgid (__u32). Created by userspace
 * when it starts tracking a process, updated in place by the kernel. */
struct golens_sched_stats {
	/* wakeup (or preemption) -> on CPU, every thread of the process */
	struct golens_hist runqueue_latency;
	/* the task left the CPU while still runnable (preempted) */
	__u64 involuntary_switches;
	__u64 _reserved;
};
_Static_assert(sizeof(struct golens_sched_stats) == sizeof(struct golens_hist) + 16,
	       "golens_sched_stats size");

/*
 * Go runtime view of one process (value of the go_stats map, keyed by tgid).
 * Created by userspace when it attaches the runtime uprobes; the kernel only
 * updates it. The *_ns state fields pair an entry with its return: one GC
 * cycle and one stop-the-world run at a time in a Go process (the runtime
 * serialises them with worldsema/gcsema), so one slot per process suffices.
 */
#define GOLENS_STW_REASONS 17 /* runtime.stwReason values 0..16 (Go 1.21-1.27); 0 = unknown */
#define GOLENS_STW_REASON_GC_SWEEP_TERM 2 /* stwGCSweepTerm: once per GC cycle, at its start */
/* runtime.netpoll(delay int64): delay < 0 blocks until an fd is ready,
 * delay == 0 only polls, delay > 0 blocks for at most delay ns (a timer). */
#define GOLENS_NETPOLL_BLOCKING 0
#define GOLENS_NETPOLL_NONBLOCKING 1
#define GOLENS_NETPOLL_TIMED 2
#define GOLENS_NETPOLL_MODES 3

struct golens_go_stats {
	__u64 gc_cycles;            /* cycles started (runtime.gcResetMarkState entry) */
	__u64 sysmon_preemptions;   /* runtime.retake -> preemptone calls */
	__u64 stw_stops;            /* stopTheWorldWithSema entries */
	__u64 stw_unpaired;         /* a return seen without its entry (probe attached mid-pause) */
	/* pairing state, not exported */
	__u64 cycle_started_ns;
	__u64 stw_started_ns;
	__u64 stw_reason;
	__u64 tail_started_ns;      /* the runtime's mark-termination pause ended here */
	__u64 last_time_to_stop_ns; /* of the pause in progress (for golens trace) */
	__u64 _pad;
	/* runtime.netpoll calls by their delay argument (GOLENS_NETPOLL_*):
	 * several threads poll at once, so these are atomic adds. */
	__u64 netpoll_calls[GOLENS_NETPOLL_MODES];
	struct golens_hist gc_cycle_duration;   /* cycle start -> gcMarkTermination's `now` */
	struct golens_hist stw_tail; /* world still stopped after mark termination's pause */
	/* by reason: stopTheWorldWithSema entry -> the world is stopped */
	struct golens_hist stw_time_to_stop[GOLENS_STW_REASONS];
	struct golens_hist stw_pause[GOLENS_STW_REASONS]; /* the runtime's own pause window */
};
_Static_assert(sizeof(struct golens_go_stats) ==
		       80 + 8 * GOLENS_NETPOLL_MODES +
			       (2 + 2 * GOLENS_STW_REASONS) * sizeof(struct golens_hist),
	       "golens_go_stats size");

/*
 * Records of the gc_events ring buffer: what `golens trace` prints, for the
 * one process it traces (golens_config.trace_tgid; none otherwise, so
 * `golens run` pays one lookup per runtime probe hit and nothing more).
 */
#define GOLENS_GC_EVENT_PAUSE 1 /* a stop-the-world pause ended */
#define GOLENS_GC_EVENT_CYCLE 2 /* a GC cycle's mark termination ended */

struct golens_gc_event {
	__u32 kind;   /* GOLENS_GC_EVENT_* */
	__u32 reason; /* pauses: the stwReason (0 unknown) */
	__u64 at_ns;  /* bpf_ktime_get_ns() at the end */
	__u64 duration_ns;     /* the pause, or the cycle */
	__u64 time_to_stop_ns; /* pauses: 0 when not seen */
	__u64 cycle;  /* the process's GC cycle count at that moment */
};
_Static_assert(sizeof(struct golens_gc_event) == 40, "golens_gc_event size");

/*
 * An executable as the kernel identifies it: the inode number and the
 * kernel-internal dev_t of its superblock (MAJOR << 20 | MINOR, not the
 * userspace st_dev encoding). Key of the known_binaries map.
 */
struct golens_binary_key {
	__u64 ino;
	__u32 dev;
	__u32 _pad;
};
_Static_assert(sizeof(struct golens_binary_key) == 16, "golens_binary_key size");

/*
 * Pressure and syscall view of one process (value of the pressure_stats map,
 * keyed by tgid), from the per-syscall tracepoints (syscalls.bpf.c).
 * Created by userspace (and by the exec handler) with the other stats.
 */
struct golens_pressure_stats {
	__u64 vmas;            /* mm->map_count at the last mapping syscall (on this CPU) */
	__u64 vmas_peak;       /* highest during collection epoch vmas_epoch */
	__u64 vmas_epoch;      /* golens_config.collection_epoch when vmas_peak was set */
	__u64 emfile;          /* fd-creating syscalls that failed with EMFILE */
	__u64 enfile;          /* ... with ENFILE */
	__u64 connect_eaddrnotavail; /* connect() that failed with EADDRNOTAVAIL */
	__u64 timerfd_settime;       /* timerfd_settime() calls */
	struct golens_hist netpoll_wait;   /* blocking epoll waits (timeout != 0) */
	struct golens_hist timer_lateness; /* a timed wait that timed out: slept - asked */
};
_Static_assert(sizeof(struct golens_pressure_stats) == 56 + 2 * sizeof(struct golens_hist),
	       "golens_pressure_stats size");

/* Attach cookies of golens_goprobe: which Go runtime probe a point is. */
#define GOLENS_GOPROBE_GC_START 1
#define GOLENS_GOPROBE_GC_END 2
#define GOLENS_GOPROBE_STW_STOP_REASON 3
#define GOLENS_GOPROBE_STW_STOP 4
#define GOLENS_GOPROBE_STW_STOPPED 5
#define GOLENS_GOPROBE_STW_STARTED 6
#define GOLENS_GOPROBE_SYSMON 7
#define GOLENS_GOPROBE_NETPOLL 8

/* Process lifecycle records on the proc_events ring buffer. tgid is the pid
 * as golens' /proc shows it (see "pid namespaces" in common.bpf.h). */
#define GOLENS_PROC_EXEC 1
#define GOLENS_PROC_EXIT 2

/* golens_proc_event.flags: the exec'd binary is a known Go binary and the
 * exec handler already made the process tracked, with zeroed stats. */
#define GOLENS_PROC_TRACKED_BY_EXEC 1

struct golens_proc_event {
	__u32 kind; /* GOLENS_PROC_* */
	__u32 tgid;
	__u32 flags; /* GOLENS_PROC_TRACKED_BY_EXEC */
	__u32 _pad;
	struct golens_binary_key binary; /* exec only: the new executable */
};
_Static_assert(sizeof(struct golens_proc_event) == 32, "golens_proc_event size");

/* Values of the tracked map. BY_EXEC: tracked by the exec handler at an
 * exec userspace has not adopted yet; userspace rewrites it to BY_AGENT
 * when it adopts the process (keeping the stats the handler zeroed). */
#define GOLENS_TRACKED_BY_AGENT 0 /* inserted or adopted by userspace */
#define GOLENS_TRACKED_BY_EXEC 1  /* inserted by the exec handler */

/*
 * Run-time settings userspace writes into the one-entry agent_config array.
 * pidns_*: which pid namespace the `pid`s of every map are in (the one of
 * golens' /proc), used only when golens_pidns_translate is set at load.
 */
struct golens_config {
	__u64 pidns; /* struct pid_namespace address; 0 = not calibrated yet */
	__u32 pidns_level;
	__u32 comm_filter; /* exec tracking only for comms in wanted_comms */
	/* Bumped by userspace after each collection: peaks (VMAs) start over
	 * in the kernel when they see a new epoch, with no write from
	 * userspace into the stats the kernel updates. */
	__u64 collection_epoch;
	__u32 trace_tgid; /* golens trace: the process whose GC events go to gc_events */
	__u32 _pad;
};
_Static_assert(sizeof(struct golens_config) == 32, "golens_config size");

/*
 * What the calibration program saw of golens' own task (see
 * golens_calib in common.bpf.h): its pid's level and, for every level up
 * to GOLENS_PIDNS_LEVELS, the namespace and the pid number there.
 */
#define GOLENS_PIDNS_LEVELS 8
/* getpgid(GOLENS_CALIBRATION_MAGIC) is golens asking to be calibrated. */
#define GOLENS_CALIBRATION_MAGIC 0x676c6e73 /* "glns" */

struct golens_calibration {
	__u64 ns[GOLENS_PIDNS_LEVELS];
	__u32 nr[GOLENS_PIDNS_LEVELS];
	__u32 level;
	__u32 seen;
};
_Static_assert(sizeof(struct golens_calibration) == 8 * GOLENS_PIDNS_LEVELS + 4 * GOLENS_PIDNS_LEVELS + 8,
	       "golens_calibration size");

/* Indexes of the agent_counters per-CPU array: every place the kernel side
 * can drop or skip work counts here, and each becomes a self-metric. */
#define GOLENS_CTR_RUNQ_START_DROPPED 0   /* no wakeup_ts storage (out of memory): a sample lost */
#define GOLENS_CTR_PROC_EVENT_DROPPED 1   /* proc_events ring buffer full */
#define GOLENS_CTR_SCHED_STATS_MISSING 2  /* tracked tgid without a stats entry */
#define GOLENS_CTR_EXEC_TRACK_FAILED 3    /* a known binary exec'd but a map was full */
#define GOLENS_CTR_COUNT 4

/* Map capacities (userspace may override tracked/sched_stats at load time). */
#define GOLENS_MAX_TRACKED_DEFAULT 256
#define GOLENS_KNOWN_BINARIES 1024
#define GOLENS_WANTED_COMMS 64
#define GOLENS_PROC_EVENTS_BYTES (256 * 1024)
#define GOLENS_GC_EVENTS_BYTES (256 * 1024)
/* Wake the reader once this much is pending (a quarter of the buffer)... */
#define GOLENS_PROC_EVENTS_WAKEUP_BYTES (64 * 1024)
/* ...and have it drain the buffer this often regardless. */
#define GOLENS_PROC_EVENTS_POLL_MS 100

#pragma clang diagnostic pop

#endif /* GOLENS_H */
