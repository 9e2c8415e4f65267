// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * echo-open's kernel side: every open on the machine, one record each.
 *
 * Syscall opens: sys_enter_* saves the arguments by thread id; sys_exit_*
 * reads the path (at exit: at entry its page may not be faulted in yet),
 * resolves the opened file to an absolute path by walking its dentries, and
 * writes one variable-length record. io_uring opens never pass through those
 * syscalls: io_uring_submit_req (io_uring_submit_sqe up to 6.3) captures the
 * request, io_uring_complete finishes it the same way.
 *
 * Filters are settings in .rodata (constants to the verifier) and two id maps,
 * so opens that do not match never reach the ring buffer.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "echo_open.h"
#include "resolve.bpf.h"

#define AT_FDCWD -100
#define O_ACCMODE 3
#define O_WRONLY 1
#define O_CREAT 0100
#define O_TRUNC 01000
#define EFAULT 14
#define RESOLVE_IN_ROOT 0x10    /* openat2: absolute paths start at dfd */
#define IORING_FILE_INDEX_ALLOC (~0U)
#define FFS_FLAG_BITS 7UL       /* io_uring keeps flags in the low bits of a fixed file pointer */

/* A record as built in the per-CPU scratch: header, path, resolved path. */
struct eo_record {
	struct eo_event hdr;
	char data[2 * EO_PATH_MAX + EO_NAME_MAX];
	__u64 req;        /* for finish_open: the io_uring request (0: a syscall); not sent */
};

/* An open between its sys_enter and sys_exit, kept in the thread's task storage. */
struct open_args {
	const char *filename;
	__u64 ts_ns;
	__u64 flags;
	__u64 resolve;
	__u32 mode;
	__s32 dfd;
	__u8 syscall;
	__u8 active;     /* entered and not yet exited */
	__u64 fd_op_table; /* the fd table an fd_reuse_enter_* program counted this thread's
			      close/dup in, until its exit (0: none) */
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EO_DEFAULT_RING_SIZE);  /* the loader sets the configured size */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct eo_record);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct walk_buf);
} walk_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EO_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

_Static_assert(EO_OUTCOME_SLOTS == EO_SYSCALL_COUNT * EO_ERRNO_SLOTS, "outcome slots");

/* traced opens by syscall and result, with count_outcomes: one element holding every
 * slot, so that a metrics scrape reads them all with one lookup */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct eo_outcomes);
} outcomes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} last_wakeup SEC(".maps");

/* task storage: no key hashing, no delete, and no table to fill up */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct open_args);
} inflight SEC(".maps");

/*
 * fd changes in shared fd tables, keyed by the table (struct files_struct *): how many
 * closes/dups are between their entry and exit now, and when the last one ended. Filled
 * only with watch_fd_reuse, only for tables more than one task uses.
 */
struct fd_reuse {
	__s64 in_flight;
	__u64 last_exit_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct fd_reuse);
} fd_reuse SEC(".maps");

/* io_uring open requests between submit and completion, keyed by request. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct eo_record);
} uring_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EO_MAX_FILTER_IDS);
	__type(key, __u32);
	__type(value, __u8);
} filter_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EO_MAX_FILTER_IDS);
	__type(key, __u32);
	__type(value, __u8);
} filter_tids SEC(".maps");

/* --cgroup and --container: cgroup v2 directories (their fds), tested with
 * bpf_current_task_under_cgroup (the directory or any descendant matches) */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, EO_MAX_CGROUPS);
	__type(key, __u32);
	__type(value, __u32);
} cgroups SEC(".maps");

const volatile struct eo_config eo_cfg SEC(".rodata.config") = {};

static __always_inline void count(__u32 slot)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &slot);

	if (c)
		*c += 1;  /* per-CPU: no atomic needed */
}

/* One traced open in "outcomes": its syscall's row, slot 0 or its errno's. */
static __always_inline void count_outcome(__u8 syscall, long ret)
{
	__u32 zero = 0, slot = 0;
	struct eo_outcomes *o;

	if (ret < 0)
		slot = -ret < EO_ERRNO_SLOTS - 1 ? -ret : EO_ERRNO_SLOTS - 1;
	slot += (__u32)syscall * EO_ERRNO_SLOTS;
	o = bpf_map_lookup_elem(&outcomes, &zero);
	if (o && slot < EO_SYSCALL_COUNT * EO_ERRNO_SLOTS)
		o->count[slot] += 1;  /* per-CPU: no atomic needed */
}

/* Any filter that rejects an open at its entry (constants: the verifier prunes). */
static __always_inline bool entry_filters(void)
{
	return eo_cfg.filter_pid || eo_cfg.filter_tid || eo_cfg.filter_uid || eo_cfg.comm_len ||
	       eo_cfg.filter_flags || eo_cfg.filter_mntns || eo_cfg.filter_pidns ||
	       eo_cfg.filter_netns || eo_cfg.cgroup_slots || eo_cfg.container_slots;
}

/*
 * The pid namespace a task lives in (task_active_pid_ns: the one of its own pid, not
 * nsproxy->pid_ns_for_children) and its number there: pid->numbers[pid->level]. The
 * array's stride and offset come from BTF, so the index stays a plain address.
 */
#define MAX_PID_NS_LEVEL 32  /* the kernel's: levels 0..32 */

static __always_inline struct upid *pid_upid(struct pid *pid)
{
	__u32 level = BPF_CORE_READ(pid, level);
	__u64 off;

	if (level > MAX_PID_NS_LEVEL)
		return NULL;
	/* 6.1's verifier forgets the bounds of a product (the size is a CO-RE relocation,
	 * not an immediate) and refuses an unbounded offset on a BTF pointer: the mask
	 * (far above 33 levels of a 16-byte upid) bounds it again */
	off = ((__u64)level * bpf_core_type_size(struct upid)) & 0x3fff;
	return (void *)pid + bpf_core_field_offset(struct pid, numbers) + off;
}

static __always_inline __u32 task_pidns(struct task_struct *task)
{
	struct upid *upid = pid_upid(task->thread_pid);

	return BPF_CORE_READ(upid, ns, ns.inum);
}

/* The process (thread group leader) as seen inside its pid namespace. */
static __always_inline __u32 task_nspid(struct task_struct *task)
{
	struct upid *upid = pid_upid(task->group_leader->thread_pid);

	return BPF_CORE_READ(upid, nr);
}

/* Under any cgroup in the slots of mask (bit i: slot i of the cgroups array). */
static __always_inline bool under_cgroups(__u32 mask)
{
	for (__u32 i = 0; i < EO_MAX_CGROUPS; i++) {
		if ((mask & (1U << i)) && bpf_current_task_under_cgroup(&cgroups, i) == 1)
			return true;
	}
	return false;
}

/* Namespace and cgroup filters (constants: all pruned when none is set). */
static __always_inline bool container_matches(void)
{
	struct task_struct *task;

	if (eo_cfg.filter_mntns || eo_cfg.filter_pidns || eo_cfg.filter_netns) {
		task = bpf_get_current_task_btf();
		if (eo_cfg.filter_mntns && task->nsproxy->mnt_ns->ns.inum != eo_cfg.mntns)
			return false;
		if (eo_cfg.filter_netns && task->nsproxy->net_ns->ns.inum != eo_cfg.netns)
			return false;
		if (eo_cfg.filter_pidns && task_pidns(task) != eo_cfg.pidns)
			return false;
	}
	if (eo_cfg.cgroup_slots && !under_cgroups(eo_cfg.cgroup_slots))
		return false;
	if (eo_cfg.container_slots && !under_cgroups(eo_cfg.container_slots))
		return false;
	return true;
}

/* pid, tid, uid and comm filters: everything known at entry. */
static __always_inline bool task_matches(__u64 pid_tgid)
{
	__u32 pid = pid_tgid >> 32, tid = (__u32)pid_tgid;

	if (eo_cfg.self_tgid && pid == eo_cfg.self_tgid)
		return false;
	if (eo_cfg.single_pid) {
		if (pid != eo_cfg.single_pid)
			return false;
	} else if (eo_cfg.filter_pid && !bpf_map_lookup_elem(&filter_pids, &pid)) {
		return false;
	}
	if (eo_cfg.filter_tid && !bpf_map_lookup_elem(&filter_tids, &tid))
		return false;
	if (eo_cfg.filter_uid && (__u32)bpf_get_current_uid_gid() != eo_cfg.uid)
		return false;
	if (eo_cfg.comm_len) {
		char comm[EO_COMM_LEN];
		__u32 len = eo_cfg.comm_len;
		bool found = false;

		__u32 comm_len = EO_COMM_LEN;

		bpf_get_current_comm(comm, sizeof(comm));
		/* the name ends at its NUL: after a rename to a shorter name some kernels
		 * (6.1) leave the old name's bytes behind it, which must not match */
		for (__u32 i = 0; i < EO_COMM_LEN; i++) {
			if (!comm[i]) {
				comm_len = i;
				break;
			}
		}
		for (__u32 i = 0; i < EO_COMM_LEN && !found; i++) {
			bool same = i + len <= comm_len;

			for (__u32 j = 0; j < EO_COMM_LEN && same; j++) {
				if (j >= len)
					break;
				if (comm[(i + j) & (EO_COMM_LEN - 1)] != eo_cfg.comm_match[j])
					same = false;
			}
			found = same;
		}
		if (!found)
			return false;
	}
	return container_matches();
}

static __always_inline bool flags_match(__u64 flags)
{
	if (!eo_cfg.filter_flags)
		return true;
	if (flags & eo_cfg.flags_any)
		return true;
	return eo_cfg.flags_rdonly && (flags & O_ACCMODE) == 0;
}

/* s: NUL-terminated, with at least EO_PREFIX_MAX readable bytes. */
static __always_inline bool prefix_matches(const char *s)
{
	if (!eo_cfg.n_prefixes)
		return true;
#pragma unroll
	for (int i = 0; i < EO_MAX_PREFIXES; i++) {
		if (i >= eo_cfg.n_prefixes)
			break;
		if (!bpf_strncmp(s, eo_cfg.prefix_len[i] & (EO_PREFIX_MAX - 1),
				 (const char *)eo_cfg.prefix[i]))
			return true;
	}
	return false;
}

/*
 * Wake-up policy. The kernel default wakes the consumer for every record it
 * finds caught up, an interrupt per open: most of a tracer's cost on a VM.
 * Instead wake only while at least wakeup_bytes are pending, at most once per
 * wakeup_min_ns per CPU; the consumer's poll timeout picks up the rest.
 */
static __always_inline __u64 output_flags(__u64 size)
{
	__u32 zero = 0;
	__u64 *last, now;

	if (!eo_cfg.wakeup_bytes)
		return 0;
	/* size: this record's footprint (8-byte header, payload padded to 8) */
	size = ((size + 7) & ~7ULL) + 8;
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) + size < eo_cfg.wakeup_bytes)
		return BPF_RB_NO_WAKEUP;
	last = bpf_map_lookup_elem(&last_wakeup, &zero);
	if (!last)
		return 0;
	now = bpf_ktime_get_ns();
	if (now - *last < eo_cfg.wakeup_min_ns)
		return BPF_RB_NO_WAKEUP;
	*last = now;
	count(EO_CNT_WAKEUPS);
	return BPF_RB_FORCE_WAKEUP;
}

/*
 * bpf_get_current_comm on 6.1 copies up to the NUL and leaves the rest of the buffer
 * as it was: after a rename, "ab\0gname-xyz" (the scratch record's previous name).
 * Records carry zeros after the name, as on kernels that pad.
 */
static __always_inline void clear_after_nul(char *comm)
{
	bool ended = false;

	for (__u32 i = 0; i < EO_COMM_LEN; i++) {
		if (ended)
			comm[i] = 0;
		else if (!comm[i])
			ended = true;
	}
}

static __always_inline void fill_task(struct eo_event *e, __u64 pid_tgid)
{
	/* a BTF pointer: plain loads instead of a helper call per field */
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 uid_gid = bpf_get_current_uid_gid();

	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)uid_gid;
	e->gid = uid_gid >> 32;
	e->ppid = task->real_parent->tgid;
	e->mntns = task->nsproxy->mnt_ns->ns.inum;
	e->netns = task->nsproxy->net_ns->ns.inum;
	e->userns = task->cred->user_ns->ns.inum;
	e->pidns = task_pidns(task);
	e->nspid = task_nspid(task);
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	clear_after_nul(e->comm);
}

/*
 * The length of a path just read into r->data by a *_str helper that returned n
 * (its NUL included, or -errno), marking the record: the kernel's PATH_MAX is
 * 4096 with the NUL, so up to EO_PATH_MAX - 1 bytes are a whole path; a longer
 * one is cut to that and marked truncated. Reads take EO_PATH_MAX + 1 bytes, to
 * tell "exactly 4095" from "longer".
 */
static __always_inline __u32 path_read(struct eo_record *r, long n)
{
	if (n < 0) {
		r->hdr.status |= EO_ST_PATH_FAULT;
		count(EO_DROP_PATH_FAULT);
		r->data[0] = 0;
		return 0;
	}
	if (n > EO_PATH_MAX) {
		r->hdr.status |= EO_ST_PATH_TRUNCATED;
		r->data[EO_PATH_MAX - 1] = 0;
		return EO_PATH_MAX - 1;
	}
	return n > 0 ? n - 1 : 0;
}

/* Read the path as passed, from the opener's memory, into r->data; returns its length. */
static __always_inline __u32 read_user_path(struct eo_record *r, const char *filename)
{
	if (!filename)
		return 0;
	return path_read(r, bpf_probe_read_user_str(r->data, EO_PATH_MAX + 1, filename));
}

/* The file behind the current task's fd (BTF loads; one read for the slot). */
static __always_inline struct file *fd_file(long fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct file **fds, *file = NULL;

	if (fd < 0 || fd >= fdt->max_fds)
		return NULL;
	fds = fdt->fd;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

/*
 * The fd race: the open installs its fd before sys_exit, and a task sharing the fd table
 * (a thread, or CLONE_FILES) can close that number and open another file into it before
 * the exit program reads the slot. With a table of its own (count 1) nothing else can
 * touch it in between (the exit tracepoint runs in the opener before it returns). With a
 * shared one, a number can change hands only through a close, close_range, dup2 or dup3
 * (or an io_uring close) by another task: the fd_reuse_* programs below count those
 * while they run, so a resolution is unsure only if one was running at any time since
 * the open's entry (since_ns). Without them (watch_fd_reuse off), every resolution
 * through a shared table is.
 */
static __always_inline bool fd_maybe_reused(__u64 since_ns)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct files_struct *files = task->files;
	struct fd_reuse *seen;
	__u64 key = (__u64)files;

	if (files->count.counter <= 1)
		return false;
	if (!eo_cfg.watch_fd_reuse)
		return true;
	seen = bpf_map_lookup_elem(&fd_reuse, &key);
	/* in_flight > 0 covers a change that began before the open and is not over */
	return seen && (seen->in_flight > 0 || seen->last_exit_ns >= since_ns);
}

/* Count one fd change beginning in the task's table, if shared; returns its key (0: none). */
static __always_inline __u64 fd_change_begins(struct task_struct *task)
{
	struct files_struct *files = task->files;
	struct fd_reuse none = {}, *seen;
	__u64 key = (__u64)files;

	if (!files || files->count.counter <= 1)
		return 0;
	seen = bpf_map_lookup_elem(&fd_reuse, &key);
	if (!seen) {
		bpf_map_update_elem(&fd_reuse, &key, &none, BPF_NOEXIST);
		seen = bpf_map_lookup_elem(&fd_reuse, &key);
		if (!seen)
			return 0;
	}
	__sync_fetch_and_add(&seen->in_flight, 1);
	return key;
}

/* A file's (vfsmount, dentry): struct path, read with one copy. */
static __always_inline bool file_path(struct file *file, struct dentry **dentry,
				      struct vfsmount **vfsmnt)
{
	struct path path = {};

	if (EO_DIRECT) {
		path.dentry = KREAD(struct file, file, f_path.dentry);
		path.mnt = KREAD(struct file, file, f_path.mnt);
	} else {
		bpf_probe_read_kernel(&path, sizeof(path),
				      (void *)file + bpf_core_field_offset(struct file, f_path));
	}
	*dentry = path.dentry;
	*vfsmnt = path.mnt;
	return path.dentry && path.mnt;
}

/*
 * The file a fixed-file (direct descriptor) open installed: slot file_slot - 1,
 * or with IORING_FILE_INDEX_ALLOC the slot the kernel picked, which is res.
 * Read from the ring's table, flag bits in the low bits of the pointer: from
 * 6.13 io_rsrc_node->file_ptr; before (6.1) an array of io_fixed_file (one
 * unsigned long, file_ptr), bounded by nr_user_files (the ___v61 flavors below).
 * Where neither layout exists, CO-RE drops this code and a fixed-file open is
 * left unresolved (fixed_file set, fd None).
 *
 * Every flavor names a type that both kernels have (io_file_table, io_ring_ctx):
 * for a type missing from vmlinux, libbpf would search the modules' BTF, which
 * needs CAP_SYS_ADMIN, and loading with CAP_BPF + CAP_PERFMON would fail.
 */
struct io_file_table___v61 {
	unsigned long *files;   /* struct io_fixed_file { unsigned long file_ptr; } */
} __attribute__((preserve_access_index));

struct io_ring_ctx___v61 {
	struct io_file_table___v61 file_table;
	unsigned int nr_user_files;
} __attribute__((preserve_access_index));

static __always_inline struct file *fixed_file_v61(struct io_kiocb *req, __u32 index)
{
	struct io_ring_ctx___v61 *ring = (void *)BPF_CORE_READ(req, ctx);
	unsigned long *files, file_ptr = 0;

	if (index >= BPF_CORE_READ(ring, nr_user_files))
		return NULL;
	files = BPF_CORE_READ(ring, file_table.files);
	if (!files)
		return NULL;
	bpf_probe_read_kernel(&file_ptr, sizeof(file_ptr), &files[index]);
	return (struct file *)(file_ptr & ~FFS_FLAG_BITS);
}

static __always_inline struct file *fixed_file(struct io_kiocb *req, long res)
{
	struct io_open *open = (struct io_open *)&req->cmd;
	struct io_ring_ctx *ring;
	struct io_rsrc_node **nodes, *node = NULL;
	__u32 slot = BPF_CORE_READ(open, file_slot), index;

	index = slot == IORING_FILE_INDEX_ALLOC ? (__u32)res : slot - 1;
	if (bpf_core_field_exists(struct io_file_table___v61, files) &&
	    bpf_core_field_exists(struct io_ring_ctx___v61, nr_user_files))
		return fixed_file_v61(req, index);
	if (!bpf_core_field_exists(struct io_ring_ctx, file_table.data) ||
	    !bpf_core_field_exists(struct io_rsrc_node, file_ptr))
		return NULL;
	ring = BPF_CORE_READ(req, ctx);
	if (index >= BPF_CORE_READ(ring, file_table.data.nr))
		return NULL;
	nodes = BPF_CORE_READ(ring, file_table.data.nodes);
	bpf_probe_read_kernel(&node, sizeof(node), &nodes[index]);
	if (!node)
		return NULL;
	return (struct file *)(BPF_CORE_READ(node, file_ptr) & ~FFS_FLAG_BITS);
}

/*
 * What a successful open opened: the file behind the returned fd, or for an
 * io_uring fixed-file open (req set, EO_ST_FIXED_FILE) the file in its slot.
 */
static __always_inline struct file *opened_file(struct eo_event *e, struct io_kiocb *req)
{
	if (req && (e->status & EO_ST_FIXED_FILE))
		return fixed_file(req, e->ret);
	return fd_file(e->ret);
}

/*
 * Where a failed open's path was looked up from: the cwd (AT_FDCWD), the
 * dirfd, or for an absolute path the process root (its chroot) -- or the
 * dirfd under openat2's RESOLVE_IN_ROOT.
 */
static __always_inline bool lookup_base(struct task_struct *task, struct eo_event *e, bool absolute,
					struct dentry **dentry, struct vfsmount **vfsmnt)
{
	struct fs_struct *fs;
	struct file *dir;

	if (absolute && !(e->resolve & RESOLVE_IN_ROOT)) {
		fs = KREAD(struct task_struct, task, fs);
		*dentry = KREAD(struct fs_struct, fs, root.dentry);
		*vfsmnt = KREAD(struct fs_struct, fs, root.mnt);
	} else if (e->dfd == AT_FDCWD) {
		fs = KREAD(struct task_struct, task, fs);
		*dentry = KREAD(struct fs_struct, fs, pwd.dentry);
		*vfsmnt = KREAD(struct fs_struct, fs, pwd.mnt);
	} else {
		dir = fd_file(e->dfd);
		if (!dir || !file_path(dir, dentry, vfsmnt))
			return false;
	}
	return *dentry && *vfsmnt;
}

/*
 * Process roots known to walk to nothing (no chroot): a failed absolute path
 * is then the path itself, and the walk is skipped. Keyed by the root's
 * (dentry, vfsmount); the value is the mount namespace the walk ended in.
 */
struct root_key {
	__u64 dentry;
	__u64 mnt;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 256);
	__type(key, struct root_key);
	__type(value, __u32);
} bare_roots SEC(".maps");

static __always_inline void process_root(struct root_key *key)
{
	struct task_struct *task = bpf_get_current_task_btf();

	key->dentry = (__u64)task->fs->root.dentry;
	key->mnt = (__u64)task->fs->root.mnt;
}

/*
 * Fill in the resolved path. A successful open: the opened file itself,
 * walked to the root of its mount namespace (chroot ignored). A failed one:
 * lookup_base() joined with the path as passed (made lexically canonical in
 * Python). Returns the resolved length; the text is wb->buf[*start..EO_PATH_MAX).
 */
static __always_inline __u32 resolve(struct eo_record *r, struct walk_buf *wb,
				     struct io_kiocb *req, __u32 path_len, __u32 *start)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct eo_event *e = &r->hdr;
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct file *file;
	__u32 off = EO_PATH_MAX, start_off, *root_mntns;
	struct root_key root = {};
	__u16 status = 0;
	__u32 mntns = 0;
	bool absolute, via_root;

	wb->buf[EO_PATH_MAX] = 0;  /* NUL for the prefix match */
	if (e->ret >= 0) {
		file = opened_file(e, req);
		if (!file)
			return 0;           /* closed already, or a slot we cannot read */
		if (!(req && (e->status & EO_ST_FIXED_FILE)) && fd_maybe_reused(e->ts_ns))
			status |= EO_ST_RESOLVED_UNSURE;
		if (!file_path(file, &dentry, &vfsmnt))
			return 0;
		off = walk_path(wb, off, dentry, vfsmnt, &status, &mntns);
		if (off == EO_PATH_MAX) {
			off--;              /* the root itself */
			wb->buf[off & (EO_PATH_MAX - 1)] = '/';
		}
		/* unlinked: unhashed but not a root (the kernel's d_unlinked) */
		if (!KREAD(struct dentry, dentry, d_hash.pprev) &&
		    KREAD(struct dentry, dentry, d_parent) != dentry)
			status |= EO_ST_RESOLVED_DELETED;
		e->resolved_how = EO_RESOLVED_FILE;
	} else {
		if (!path_len || (e->status & (EO_ST_PATH_TRUNCATED | EO_ST_PATH_FAULT)))
			return 0;
		absolute = r->data[0] == '/';
		via_root = absolute && !(e->resolve & RESOLVE_IN_ROOT);
		if (via_root) {
			process_root(&root);
			root_mntns = bpf_map_lookup_elem(&bare_roots, &root);
			if (root_mntns) {
				/* the path itself (made canonical lexically in Python) */
				e->resolved_mntns = *root_mntns;
				return 0;
			}
		}
		/* place the path (with a "/" before a relative one) at the end */
		off = EO_PATH_MAX - path_len - !absolute;
		if (off < 1 || off > EO_PATH_MAX)
			return 0;           /* no room for the base: left unresolved */
		wb->buf[off & (EO_PATH_MAX - 1)] = '/';
		bpf_probe_read_kernel(&wb->buf[(off + !absolute) & (EO_PATH_MAX - 1)],
				      path_len & (EO_PATH_MAX - 1), r->data);
		if (!lookup_base(task, e, absolute, &dentry, &vfsmnt))
			return 0;
		if ((!absolute || (e->resolve & RESOLVE_IN_ROOT)) && e->dfd != AT_FDCWD &&
		    fd_maybe_reused(e->ts_ns))
			status |= EO_ST_RESOLVED_UNSURE;  /* the dirfd's number, the same race */
		start_off = off;
		off = walk_path(wb, off, dentry, vfsmnt, &status, &mntns);
		if (via_root && off == start_off && !status)
			bpf_map_update_elem(&bare_roots, &root, &mntns, BPF_ANY);
		e->resolved_how = EO_RESOLVED_JOINED;
	}
	if (off > EO_PATH_MAX)
		return 0;
	e->status |= status;
	e->resolved_mntns = mntns;
	*start = off;
	return EO_PATH_MAX - off;
}

/*
 * The common end of every open: failed-only and prefix filters, resolution,
 * output. r->data holds the path (path_len bytes, NUL-terminated); req is the
 * io_uring request (NULL for a syscall).
 */
static __always_inline int finish(struct eo_record *r, long ret, __u32 path_len,
				  struct io_kiocb *req)
{
	struct eo_event *e = &r->hdr;
	struct walk_buf *wb;
	__u32 zero = 0, start = 0, rlen = 0;
	__u64 size;

	e->ret = ret;
	e->path_len = path_len;
	e->resolved_len = 0;
	e->resolved_how = EO_RESOLVED_NONE;
	e->resolved_mntns = 0;
	if (eo_cfg.n_prefixes && !eo_cfg.prefix_on_resolved && !prefix_matches(r->data)) {
		count(EO_CNT_FILTERED);
		return 0;
	}
	if (eo_cfg.resolve_paths) {
		wb = bpf_map_lookup_elem(&walk_scratch, &zero);
		if (!wb)
			return 0;
		rlen = resolve(r, wb, req, path_len, &start);
		if (rlen > EO_PATH_MAX)
			rlen = EO_PATH_MAX;
		if (eo_cfg.n_prefixes && eo_cfg.prefix_on_resolved) {
			/* unresolved failures of absolute paths match on the path itself */
			const char *s = rlen ? &wb->buf[start & (EO_PATH_MAX - 1)] : r->data;

			if (!prefix_matches(s)) {
				count(EO_CNT_FILTERED);
				return 0;
			}
		}
		if (rlen) {
			path_len &= 2 * EO_PATH_MAX - 1;
			if (path_len > EO_PATH_MAX)
				path_len = EO_PATH_MAX;
			bpf_probe_read_kernel(&r->data[path_len], rlen,
					      &wb->buf[start & (EO_PATH_MAX - 1)]);
			e->resolved_len = rlen;
		}
	}
	size = sizeof(r->hdr) + path_len + rlen;
	if (size > sizeof(*r))
		return 0;
	if (eo_cfg.count_outcomes)  /* traced: counted whether the ring takes it or not */
		count_outcome(e->syscall, ret);
	if (bpf_ringbuf_output(&events, r, size, output_flags(size))) {
		count(EO_DROP_RING_FULL);
		return 0;
	}
	count(EO_CNT_EMITTED);
	return 0;
}

/* ---- syscall opens -------------------------------------------------------- */

static __always_inline int on_enter(__u8 syscall, int dfd, const char *filename, __u64 flags,
				    __u32 mode, const struct open_how *how)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct open_how h = {};
	struct open_args *args;

	if (how) {
		/* the caller just wrote it: its page is present */
		bpf_probe_read_user(&h, sizeof(h), how);
		flags = h.flags;
		mode = h.mode;
	}
	if (!task_matches(pid_tgid) || !flags_match(flags)) {
		if (!eo_cfg.self_tgid || pid_tgid >> 32 != eo_cfg.self_tgid)
			count(EO_CNT_FILTERED);
		return 0;
	}
	args = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0,
				    BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!args) {
		count(EO_DROP_ARGS_FULL);  /* no memory for the task's storage */
		return 0;
	}
	args->filename = filename;
	args->dfd = dfd;
	args->flags = flags;
	args->mode = mode;
	args->resolve = h.resolve;
	args->syscall = syscall;
	args->ts_ns = bpf_ktime_get_ns();
	args->active = 1;
	return 0;
}

/*
 * Every exit program ends by tail-calling finish_open (below): the verifier
 * then checks the long resolve-and-emit path once, not once per syscall,
 * which halves the time to load.
 */
#ifdef EO_DIRECT_LOADS
#define finish_open finish_open_direct  /* the name tells the loader which build it has */
#endif
int finish_open(void *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, int (void *));
} finishers SEC(".maps") = {
	.values = { [0] = (void *)&finish_open },
};

/* Hand the open in the scratch record to finish_open; returns only if that fails. */
static __always_inline int tail_finish(void *ctx, struct eo_record *r, long ret, __u32 path_len,
				       __u64 req)
{
	r->hdr.ret = ret;
	r->hdr.path_len = path_len;
	r->req = req;
	bpf_tail_call(ctx, &finishers, 0);
	count(EO_DROP_INTERNAL);
	return 0;
}

SEC("tracepoint")
int finish_open(void *ctx)
{
	__u32 zero = 0;
	struct eo_record *r = bpf_map_lookup_elem(&scratch, &zero);

	if (!r)
		return 0;
	return finish(r, r->hdr.ret, r->hdr.path_len, (struct io_kiocb *)r->req);
}

static __always_inline int on_open_exit(void *ctx, long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct open_args *args;
	struct eo_record *r;
	struct eo_event *e;
	__u32 zero = 0, path_len;

	args = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0, 0);
	if (!args || !args->active) {
		/* with an entry filter, most of these are its rejects, already counted as
		 * filtered: a second count on that path would only slow it */
		if (!entry_filters() && (!eo_cfg.self_tgid || pid_tgid >> 32 != eo_cfg.self_tgid))
			count(EO_CNT_NO_ENTRY);
		return 0;
	}
	if (eo_cfg.failed_only && ret >= 0) {
		count(EO_CNT_FILTERED);
		goto out;
	}
	r = bpf_map_lookup_elem(&scratch, &zero);
	if (!r)
		goto out;
	e = &r->hdr;
	e->status = 0;
	fill_task(e, pid_tgid);
	e->ts_ns = args->ts_ns;
	e->latency_ns = bpf_ktime_get_ns() - args->ts_ns;
	e->flags = args->flags;
	e->mode = args->mode;
	e->resolve = args->resolve;
	e->dfd = args->dfd;
	e->syscall = args->syscall;
	path_len = read_user_path(r, args->filename);
	args->active = 0;
	return tail_finish(ctx, r, ret, path_len, 0);
out:
	args->active = 0;
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_open")
int enter_open(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(EO_SYS_OPEN, AT_FDCWD, (const char *)ctx->args[0], ctx->args[1],
			ctx->args[2], NULL);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int enter_openat(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(EO_SYS_OPENAT, ctx->args[0], (const char *)ctx->args[1], ctx->args[2],
			ctx->args[3], NULL);
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int enter_openat2(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(EO_SYS_OPENAT2, ctx->args[0], (const char *)ctx->args[1], 0, 0,
			(const struct open_how *)ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_creat")
int enter_creat(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(EO_SYS_CREAT, AT_FDCWD, (const char *)ctx->args[0],
			O_CREAT | O_WRONLY | O_TRUNC, ctx->args[1], NULL);
}

/* open_by_handle_at(mount_fd, handle, flags): no path, but the fd resolves */
SEC("tracepoint/syscalls/sys_enter_open_by_handle_at")
int enter_open_by_handle_at(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(EO_SYS_OPEN_BY_HANDLE_AT, ctx->args[0], NULL, ctx->args[2], 0, NULL);
}

SEC("tracepoint/syscalls/sys_exit_open")
int exit_open(struct trace_event_raw_sys_exit *ctx) { return on_open_exit(ctx, ctx->ret); }

SEC("tracepoint/syscalls/sys_exit_openat")
int exit_openat(struct trace_event_raw_sys_exit *ctx) { return on_open_exit(ctx, ctx->ret); }

SEC("tracepoint/syscalls/sys_exit_openat2")
int exit_openat2(struct trace_event_raw_sys_exit *ctx) { return on_open_exit(ctx, ctx->ret); }

SEC("tracepoint/syscalls/sys_exit_creat")
int exit_creat(struct trace_event_raw_sys_exit *ctx) { return on_open_exit(ctx, ctx->ret); }

SEC("tracepoint/syscalls/sys_exit_open_by_handle_at")
int exit_open_by_handle_at(struct trace_event_raw_sys_exit *ctx) { return on_open_exit(ctx, ctx->ret); }

/* ---- io_uring opens -------------------------------------------------------- */

/*
 * After prep: the request holds the kernel copy of the path and open_how.
 * Shared by the submit tracepoint of each kernel generation (programs below).
 */
static __always_inline int on_uring_submit(struct io_kiocb *req, __u8 opcode)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 key = (__u64)req;
	struct io_open *open;
	struct filename *fname;
	struct eo_record *r;
	struct eo_event *e;
	__u32 zero = 0;

	if (opcode == IORING_OP_CLOSE) {
		/* its end is not paired with this (no per-request state): the table stays
		 * "changing" for good, so its resolutions are all unsure, never wrongly sure */
		if (eo_cfg.watch_fd_reuse)
			fd_change_begins(bpf_get_current_task_btf());
		return 0;
	}
	if (opcode != IORING_OP_OPENAT && opcode != IORING_OP_OPENAT2)
		return 0;
	/* io_open lives in io_kiocb.cmd from 6.0; before, nothing here can be read */
	if (!bpf_core_field_exists(struct io_kiocb, cmd))
		return 0;
	open = (struct io_open *)&req->cmd;
	if (!task_matches(pid_tgid) || !flags_match(BPF_CORE_READ(open, how.flags))) {
		count(EO_CNT_FILTERED);
		return 0;
	}
	r = bpf_map_lookup_elem(&scratch, &zero);
	if (!r)
		return 0;
	e = &r->hdr;
	e->status = 0;
	fill_task(e, pid_tgid);
	e->ts_ns = bpf_ktime_get_ns();
	e->syscall = EO_SYS_IO_URING;
	e->dfd = BPF_CORE_READ(open, dfd);
	e->flags = BPF_CORE_READ(open, how.flags);
	e->mode = BPF_CORE_READ(open, how.mode);
	e->resolve = BPF_CORE_READ(open, how.resolve);
	if (BPF_CORE_READ(open, file_slot))
		e->status |= EO_ST_FIXED_FILE;
	/* prep copied the path into the kernel: a struct filename */
	fname = BPF_CORE_READ(open, filename);
	e->path_len = path_read(r, fname ? bpf_probe_read_kernel_str(r->data, EO_PATH_MAX + 1,
								BPF_CORE_READ(fname, name))
					 : -EFAULT);
	if (bpf_map_update_elem(&uring_inflight, &key, r, BPF_ANY))
		count(EO_DROP_ARGS_FULL);
	return 0;
}

/* 6.4 and later: io_uring_submit_req */
SEC("tracepoint/io_uring/io_uring_submit_req")
int uring_submit(struct trace_event_raw_io_uring_submit_req *ctx)
{
	return on_uring_submit(ctx->req, ctx->opcode);
}

/* Up to 6.3 (Debian 12's 6.1) the same tracepoint is io_uring_submit_sqe, same fields. */
struct trace_event_raw_io_uring_submit_sqe___v61 {
	void *req;
	__u8 opcode;
} __attribute__((preserve_access_index));

SEC("tracepoint/io_uring/io_uring_submit_sqe")
int uring_submit_sqe(struct trace_event_raw_io_uring_submit_sqe___v61 *ctx)
{
	return on_uring_submit(ctx->req, ctx->opcode);
}

/* Runs where the CQE is posted: the submitter or its io-wq worker, same files. */
SEC("tracepoint/io_uring/io_uring_complete")
int uring_complete(struct trace_event_raw_io_uring_complete *ctx)
{
	__u64 key = (__u64)ctx->req;
	struct eo_record *saved, *r;
	__u32 zero = 0, path_len;

	saved = bpf_map_lookup_elem(&uring_inflight, &key);
	if (!saved)
		return 0;
	if (eo_cfg.failed_only && ctx->res >= 0) {
		count(EO_CNT_FILTERED);
		goto out;
	}
	r = bpf_map_lookup_elem(&scratch, &zero);
	if (!r)
		goto out;
	/* header and path; the resolved part is rebuilt */
	path_len = saved->hdr.path_len;
	if (path_len > EO_PATH_MAX)
		path_len = EO_PATH_MAX;
	r->hdr = saved->hdr;
	bpf_probe_read_kernel(r->data, (path_len + 1) & (2 * EO_PATH_MAX - 1), saved->data);
	r->hdr.latency_ns = bpf_ktime_get_ns() - r->hdr.ts_ns;
	bpf_map_delete_elem(&uring_inflight, &key);
	return tail_finish(ctx, r, ctx->res, path_len, (__u64)ctx->req);
out:
	bpf_map_delete_elem(&uring_inflight, &key);
	return 0;
}

/* ---- fd changes in shared tables (the fd race; see fd_maybe_reused) --------- */

static __always_inline int fd_change_enter(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct open_args *args;
	__u64 key;

	if (eo_cfg.self_tgid && task->tgid == eo_cfg.self_tgid)
		return 0;
	key = fd_change_begins(task);
	if (!key)
		return 0;
	/* without storage the change is never ended: its table stays unsure, as it should */
	args = bpf_task_storage_get(&inflight, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (args)
		args->fd_op_table = key;
	return 0;
}

static __always_inline int fd_change_exit(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fd_reuse *seen;
	struct open_args *args;
	__u64 key, now, last;

	/* a table of one task was not counted at entry (if it lost its other users during
	 * the call, the count stays up: its resolutions stay unsure, never wrongly sure) */
	if (task->files->count.counter <= 1)
		return 0;
	args = bpf_task_storage_get(&inflight, task, 0, 0);
	if (!args || !args->fd_op_table)
		return 0;
	key = args->fd_op_table;
	args->fd_op_table = 0;
	seen = bpf_map_lookup_elem(&fd_reuse, &key);
	if (!seen)
		return 0;
	/* the end time first, then the count: a reader never sees neither; the time only
	 * grows (two CPUs ending at once must not leave the earlier time behind) */
	now = bpf_ktime_get_ns();
	for (int i = 0; i < 8; i++) {
		last = seen->last_exit_ns;
		if (last >= now || __sync_val_compare_and_swap(&seen->last_exit_ns, last, now) == last)
			break;
	}
	__sync_fetch_and_add(&seen->in_flight, -1);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_close")
int fd_reuse_enter_close(void *ctx) { return fd_change_enter(); }

SEC("tracepoint/syscalls/sys_exit_close")
int fd_reuse_exit_close(void *ctx) { return fd_change_exit(); }

SEC("tracepoint/syscalls/sys_enter_close_range")
int fd_reuse_enter_close_range(void *ctx) { return fd_change_enter(); }

SEC("tracepoint/syscalls/sys_exit_close_range")
int fd_reuse_exit_close_range(void *ctx) { return fd_change_exit(); }

SEC("tracepoint/syscalls/sys_enter_dup2")
int fd_reuse_enter_dup2(void *ctx) { return fd_change_enter(); }

SEC("tracepoint/syscalls/sys_exit_dup2")
int fd_reuse_exit_dup2(void *ctx) { return fd_change_exit(); }

SEC("tracepoint/syscalls/sys_enter_dup3")
int fd_reuse_enter_dup3(void *ctx) { return fd_change_enter(); }

SEC("tracepoint/syscalls/sys_exit_dup3")
int fd_reuse_exit_dup3(void *ctx) { return fd_change_exit(); }

/* ---- following a process tree (echo-open -- COMMAND) ------------------------ */

/*
 * A new process (not a thread) whose parent is traced joins filter_pids before
 * it can run, so none of its opens are missed; it leaves at exit, so a long
 * build does not fill the map. Loaded only with Tracer(follow_children=True).
 */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(follow_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 parent_tgid = parent->tgid, child_tgid = child->tgid;
	__u8 one = 1;

	if (!eo_cfg.follow_forks || child_tgid == parent_tgid ||
	    !bpf_map_lookup_elem(&filter_pids, &parent_tgid))
		return 0;
	if (bpf_map_update_elem(&filter_pids, &child_tgid, &one, BPF_ANY))
		count(EO_DROP_FOLLOW_FULL);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(follow_exit, struct task_struct *task)
{
	__u32 tgid = task->tgid;

	/* only once the last thread is gone: signal->live has reached 0 (the
	 * kernel's group_dead, which older kernels do not pass to this tracepoint) */
	if (eo_cfg.follow_forks && !BPF_CORE_READ(task, signal, live.counter))
		bpf_map_delete_elem(&filter_pids, &tgid);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
