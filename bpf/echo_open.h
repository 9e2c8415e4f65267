/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one description of echo-open's kernel/user interface: the record the
 * BPF programs write to the ring buffer, the settings written to .rodata
 * before load, and the counter slots. Included by echo_open.bpf.c and by the
 * cffi builder (build.py), which checks every layout at build time, so Python
 * never re-declares one by hand.
 *
 * Keep this file to what cffi's cdef parser accepts: integer #defines, enums
 * and structs of fixed-size types.
 */
#ifndef ECHO_OPEN_H
#define ECHO_OPEN_H

#define EO_PATH_MAX 4096      /* bytes of a path we deliver whole (kernel PATH_MAX) */
#define EO_MAX_TAIL 8192      /* what a record carries after its header: path + resolved
                                 path, 2 * EO_PATH_MAX (a number: cffi's cdef needs one) */
#define EO_NAME_MAX 256       /* one path component plus NUL (kernel NAME_MAX + 1) */
#define EO_COMM_LEN 16
#define EO_MAX_PREFIXES 8     /* --path-prefix values */
#define EO_PREFIX_MAX 256     /* bytes of one prefix, NUL included */
#define EO_MAX_FILTER_IDS 1024 /* entries of the pid and tid filter maps */
#define EO_MAX_CGROUPS 16     /* slots of the cgroup filter array: --cgroup and --container dirs */
#define EO_DEFAULT_RING_SIZE 4194304 /* bytes of ring buffer: 4 MiB unless configured */
#define EO_MIN_RING_SIZE 65536       /* the sizes the loader accepts: powers of two, */
#define EO_MAX_RING_SIZE 1073741824  /* 64 KiB to 1 GiB */

/* Which syscall (or io_uring) made the open. */
enum eo_syscall {
	EO_SYS_OPEN = 0,
	EO_SYS_OPENAT = 1,
	EO_SYS_OPENAT2 = 2,
	EO_SYS_CREAT = 3,
	EO_SYS_OPEN_BY_HANDLE_AT = 4,
	EO_SYS_IO_URING = 5,
};
#define EO_SYSCALL_COUNT 6    /* values of enum eo_syscall */

/* Slots of the per-CPU "outcomes" map (with eo_config.count_outcomes): one row of
 * EO_ERRNO_SLOTS per syscall, slot 0 success, slot N errno N, the last one every
 * errno from EO_ERRNO_SLOTS - 1 up (Linux's errnos end at 133). */
#define EO_ERRNO_SLOTS 136
#define EO_OUTCOME_SLOTS 816  /* EO_SYSCALL_COUNT * EO_ERRNO_SLOTS (a number for cffi) */

/* The one value of "outcomes" (per CPU): traced opens per slot. */
struct eo_outcomes {
	__u64 count[EO_OUTCOME_SLOTS];
};

/* Where the resolved path came from. */
enum eo_resolved_how {
	EO_RESOLVED_NONE = 0,   /* not resolved (no file, no directory) */
	EO_RESOLVED_FILE = 1,   /* the opened file itself: canonical */
	EO_RESOLVED_JOINED = 2, /* failed open: directory of the path + "/" + path as passed */
};

/* eo_event.status bits */
#define EO_ST_PATH_TRUNCATED 1      /* path longer than EO_PATH_MAX - 1: cut */
#define EO_ST_PATH_FAULT 2          /* the path could not be read from user memory */
#define EO_ST_RESOLVED_TRUNCATED 4  /* resolved path cut: it holds the leaf end */
#define EO_ST_RESOLVED_DELETED 8    /* the file was unlinked */
#define EO_ST_RESOLVED_ANON 16      /* on an internal mount: pipe, socket, memfd, anon inode */
#define EO_ST_FIXED_FILE 32         /* io_uring open into a fixed (direct) descriptor slot */
#define EO_ST_RESOLVED_UNSURE 64    /* resolved through an fd number of a table other tasks
                                       share, while one of them freed or replaced an fd
                                       (close, close_range, dup2, dup3): it could have put
                                       another file under that number before the exit
                                       program read it (without watch_fd_reuse: whenever
                                       the table is shared) */

/* Slots of the per-CPU "counters" map. */
enum eo_counter {
	EO_CNT_EMITTED = 0,        /* records written to the ring buffer */
	EO_CNT_FILTERED = 1,       /* opens a filter kept out */
	EO_DROP_RING_FULL = 2,     /* lost: no room in the ring buffer */
	EO_DROP_ARGS_FULL = 3,     /* lost: the in-flight argument map was full */
	EO_DROP_PATH_FAULT = 4,    /* delivered without its path: reading it failed */
	EO_CNT_NO_ENTRY = 5,       /* exits whose entry came before we attached (no entry filter) */
	EO_CNT_WAKEUPS = 6,        /* consumer wake-ups forced */
	EO_DROP_INTERNAL = 7,      /* lost: the program that finishes an open was not reached */
	EO_DROP_FOLLOW_FULL = 8,   /* a child of a followed process not followed: pid map full */
	EO_COUNTER_MAX = 9,
};

/*
 * One open, as it leaves the kernel: this header, then path_len bytes of the
 * path as passed, then resolved_len bytes of the resolved path (no NULs).
 */
struct eo_event {
	__u64 ts_ns;         /* CLOCK_MONOTONIC at syscall entry */
	__u64 latency_ns;    /* exit - entry */
	__s64 ret;           /* fd, or -errno */
	__u64 flags;         /* open flags (openat2: how.flags) */
	__u64 resolve;       /* openat2: how.resolve */
	__u32 pid;           /* thread group id */
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__s32 dfd;
	__u32 mode;
	__u32 mntns;         /* mount namespace inode of the opener */
	__u32 resolved_mntns; /* mount namespace the resolved path is rooted in (0: internal) */
	__u16 path_len;
	__u16 resolved_len;
	__u8 syscall;        /* enum eo_syscall */
	__u8 resolved_how;   /* enum eo_resolved_how */
	__u16 status;        /* EO_ST_* */
	char comm[EO_COMM_LEN];
	__u32 pidns;         /* pid namespace inode of the opener (its own, not its children's) */
	__u32 netns;         /* network namespace inode */
	__u32 userns;        /* user namespace inode (of its credentials) */
	__u32 nspid;         /* pid (thread group id) as seen inside pidns */
	__u64 cgroup_id;     /* cgroup v2 id (kernfs inode of the cgroup directory) */
};

/* Settings, written into .rodata.config before load; the verifier sees them
 * as constants, so a disabled filter costs nothing. */
struct eo_config {
	__u64 wakeup_bytes;   /* wake the consumer only while this much is pending (0: every record) */
	__u64 wakeup_min_ns;  /* and at most this often per CPU */
	__u32 self_tgid;      /* the consumer: its own opens are not traced */
	__u32 uid;            /* with filter_uid */
	__u32 flags_any;      /* with filter_flags: any of these open flags set */
	__u32 single_pid;     /* with filter_pid: the one pid, compared without a map lookup */
	__u8 filter_pid;      /* pid must be in the filter_pids map */
	__u8 filter_tid;      /* tid must be in the filter_tids map */
	__u8 filter_uid;
	__u8 failed_only;
	__u8 filter_flags;
	__u8 flags_rdonly;    /* with filter_flags: an O_RDONLY open also matches */
	__u8 resolve_paths;   /* walk the dentry tree to an absolute path */
	__u8 prefix_on_resolved; /* path prefixes match the resolved path, not the path as passed */
	__u8 comm_len;        /* with a non-zero length: comm must contain comm_match */
	__u8 n_prefixes;      /* path must start with one of prefix[0..n) */
	__u8 follow_forks;    /* with filter_pid: a new process of a traced pid is traced too */
	__u8 watch_fd_reuse;  /* the fd_reuse_* programs run: mark unsure only the resolutions
			         another task's fd change overlapped */
	__u8 filter_mntns;    /* the opener's mount namespace must be mntns */
	__u8 filter_pidns;    /* ... its pid namespace pidns */
	__u8 filter_netns;    /* ... its network namespace netns */
	__u8 count_outcomes;  /* count traced opens by syscall and result in "outcomes" */
	__u32 mntns;
	__u32 pidns;
	__u32 netns;
	__u16 cgroup_slots;   /* --cgroup: under one of these slots of the cgroups array */
	__u16 container_slots; /* --container: and under one of these (bit i: slot i) */
	char comm_match[EO_COMM_LEN];
	__u16 prefix_len[EO_MAX_PREFIXES];
	char prefix[EO_MAX_PREFIXES][EO_PREFIX_MAX];
};

#endif /* ECHO_OPEN_H */
