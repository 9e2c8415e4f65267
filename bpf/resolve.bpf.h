/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The path walker of echo_open.bpf.c: a struct path (dentry, vfsmount) to its
 * absolute path, built backwards in a per-CPU buffer by walking dentries up to
 * the root of their mount namespace, crossing mounts, with bpf_loop (an
 * open-coded walk of 2048 components is past the verifier's 1M instructions).
 * Pseudo files (pipes, sockets, memfds) get the kernel's own names for them.
 *
 * Needs vmlinux.h, bpf_helpers.h, bpf_core_read.h and echo_open.h before it.
 *
 * Built twice (CMakeLists.txt): by default every kernel pointer is followed with a
 * probe read (a helper call, ~40 ns); with EO_DIRECT_LOADS (kernels >= 6.2) it is
 * cast with the bpf_rdonly_cast kfunc to an untrusted BTF pointer and followed with
 * plain loads (faults read as 0, as probe reads do), which the JIT makes a few
 * instructions. Only name bytes are still copied with probe reads.
 */
#ifndef ECHO_OPEN_RESOLVE_BPF_H
#define ECHO_OPEN_RESOLVE_BPF_H

#define WALK_STEPS 2200         /* a 4096-byte path has at most 2048 components */
#define MAX_ERRNO 4095          /* an ERR_PTR is the top 4095 addresses */
#define PIPEFS_MAGIC 0x50495045
#define SOCKFS_MAGIC 0x534F434B
#define INO_DIGITS 20
#define PSEUDO_KIND_MAX 32      /* bytes of "pipe" or a file system type name */

#ifdef EO_DIRECT_LOADS
#define EO_DIRECT 1
extern void *bpf_rdonly_cast(const void *obj__ign, __u32 btf_id__k) __ksym;
/* p (any kernel address) as a pointer to type that plain loads may go through */
#define KPTR(type, p) ((type *)bpf_rdonly_cast((const void *)(p), bpf_core_type_id_kernel(type)))
#define KREAD(type, p, field) (KPTR(type, p)->field)
#else
#define EO_DIRECT 0
#define KREAD(type, p, field) BPF_CORE_READ((type *)(p), field)
#endif

/* The resolved path is built backwards from the end of buf[0..EO_PATH_MAX). */
struct walk_buf {
	char buf[2 * EO_PATH_MAX + EO_NAME_MAX];
};

struct walk {
	struct dentry *dentry;
	struct mount *mnt;
	struct dentry *mnt_root;  /* of mnt: read once per mount, not per step */
	struct walk_buf *wb;
	__u32 off;        /* resolved path is wb->buf[off..EO_PATH_MAX) */
	__u16 status;
	bool done;
	bool pseudo;      /* ended on a dentry that is its own parent but not a mount root */
};

/*
 * The resolved path must fit in EO_PATH_MAX - 1 bytes (the kernel's PATH_MAX
 * with its NUL): text may start at offset 1 of wb->buf at the lowest.
 */
static __always_inline bool room_for(__u32 off, __u32 len)
{
	return len + 1 <= off;
}

/* A dentry's parent and name: adjacent in struct dentry, read with one copy. */
struct dentry_link {
	struct dentry *parent;
	struct qstr name;
};

static __always_inline void read_dentry_link(struct dentry *d, struct dentry_link *link)
{
	/* one helper call instead of three, where the layout allows it (CO-RE constants) */
	if (!EO_DIRECT && bpf_core_field_offset(struct dentry, d_name) ==
	    bpf_core_field_offset(struct dentry, d_parent) + sizeof(void *)) {
		bpf_probe_read_kernel(link, sizeof(*link),
				      (void *)d + bpf_core_field_offset(struct dentry, d_parent));
	} else {
		link->parent = KREAD(struct dentry, d, d_parent);
		link->name.len = KREAD(struct dentry, d, d_name.len);
		link->name.name = KREAD(struct dentry, d, d_name.name);
	}
}

/* Prepend "/" + s[0..len) (kernel memory); false if it does not fit. */
static __always_inline bool prepend_name(struct walk_buf *wb, __u32 *off, const void *s, __u32 len)
{
	__u32 start;

	if (len >= EO_NAME_MAX || !room_for(*off, len + 1))
		return false;
	start = *off - len - 1;
	wb->buf[start & (EO_PATH_MAX - 1)] = '/';
	bpf_probe_read_kernel(&wb->buf[(start + 1) & (EO_PATH_MAX - 1)], len & (EO_NAME_MAX - 1), s);
	*off = start;
	return true;
}

static long walk_step(__u32 i, void *ctx)
{
	struct walk *w = ctx;
	/* locals: BPF_CORE_READ on a field of the local struct would relocate it */
	struct dentry *d = w->dentry, *parent;
	struct mount *mnt = w->mnt, *mnt_parent;
	struct dentry_link link;

	if (d == w->mnt_root) {
		mnt_parent = KREAD(struct mount, mnt, mnt_parent);
		if (mnt_parent == mnt) {
			w->done = true;         /* the root of a mount tree */
			return 1;
		}
		w->dentry = KREAD(struct mount, mnt, mnt_mountpoint);
		w->mnt = mnt_parent;
		w->mnt_root = KREAD(struct mount, mnt_parent, mnt.mnt_root);
		return 0;
	}
	read_dentry_link(d, &link);
	parent = link.parent;
	if (parent == d) {
		/* a pseudo file (pipe, memfd: named after the walk) or a disconnected tree */
		w->pseudo = true;
		w->done = true;
		return 1;
	}
	if (!prepend_name(w->wb, &w->off, link.name.name, link.name.len)) {
		w->status |= EO_ST_RESOLVED_TRUNCATED;
		return 1;
	}
	w->dentry = parent;
	return 0;
}

/*
 * The name the kernel gives a nameless pseudo dentry (its d_dname):
 * "pipe:[ino]", "socket:[ino]", else "<fs type>:[ino]".
 */
static __always_inline bool prepend_pseudo_name(struct walk_buf *wb, __u32 *off, struct dentry *d)
{
	struct super_block *sb = KREAD(struct dentry, d, d_sb);
	unsigned long magic = KREAD(struct super_block, sb, s_magic);
	struct inode *inode = KREAD(struct dentry, d, d_inode);
	struct file_system_type *fs_type;
	__u64 ino = KREAD(struct inode, inode, i_ino);
	char name[64] = {};  /* kind (< PSEUDO_KIND_MAX) + ":[" + digits + "]" */
	char digits[INO_DIGITS];
	__u32 n, nd = 0;
	long kind;

	if (magic == PIPEFS_MAGIC)
		kind = bpf_probe_read_kernel_str(name, PSEUDO_KIND_MAX, "pipe");
	else if (magic == SOCKFS_MAGIC)
		kind = bpf_probe_read_kernel_str(name, PSEUDO_KIND_MAX, "socket");
	else {
		fs_type = KREAD(struct super_block, sb, s_type);
		kind = bpf_probe_read_kernel_str(name, PSEUDO_KIND_MAX,
						 KREAD(struct file_system_type, fs_type, name));
	}
	if (kind <= 0)
		return false;
	n = (kind - 1) & (PSEUDO_KIND_MAX - 1);
	name[n++] = ':';
	name[n++] = '[';
#pragma unroll
	for (int i = 0; i < INO_DIGITS; i++) {
		digits[i] = '0' + ino % 10;
		nd++;
		ino /= 10;
		if (!ino)
			break;
	}
#pragma unroll
	for (int i = INO_DIGITS - 1; i >= 0; i--) {
		if (i < nd)
			name[n++ & (sizeof(name) - 1)] = digits[i];
	}
	name[n++ & (sizeof(name) - 1)] = ']';
	return prepend_name(wb, off, name, n & (sizeof(name) - 1));
}

/*
 * Prepend the absolute path of (dentry, vfsmount) to wb->buf[off..EO_PATH_MAX).
 * Returns the new start offset; sets status bits and the namespace the walk
 * ended in (0 for an internal mount: pipes, sockets, memfds).
 */
static __always_inline __u32 walk_path(struct walk_buf *wb, __u32 off, struct dentry *dentry,
				       struct vfsmount *vfsmnt, __u16 *status, __u32 *mntns)
{
	struct walk w = {
		.dentry = dentry,
		.mnt = container_of(vfsmnt, struct mount, mnt),
		.mnt_root = KREAD(struct vfsmount, vfsmnt, mnt_root),
		.wb = wb,
		.off = off,
	};
	struct mnt_namespace *ns;
	struct dentry *last_dentry;
	struct mount *last;
	bool internal;

	bpf_loop(WALK_STEPS, walk_step, &w, 0);
	if (!w.done)
		w.status |= EO_ST_RESOLVED_TRUNCATED;
	last = w.mnt;  /* locals: CO-RE must not relocate struct walk */
	last_dentry = w.dentry;
	ns = KREAD(struct mount, last, mnt_ns);
	internal = !ns || (unsigned long)ns >= (unsigned long)-MAX_ERRNO;
	if (internal) {
		/* MNT_NS_INTERNAL (kern_mount) or detached: no path in any namespace */
		w.status |= EO_ST_RESOLVED_ANON;
		*mntns = 0;
	} else {
		*mntns = KREAD(struct mnt_namespace, ns, ns.inum);
	}
	if (w.pseudo) {
		if (!internal) {
			/* a disconnected dentry: we only know the path below it */
			w.status |= EO_ST_RESOLVED_TRUNCATED;
		} else if (KREAD(struct dentry, last_dentry, d_name.len)) {
			/* memfd:x, [eventfd]...: the dentry's own name */
			if (!prepend_name(wb, &w.off, KREAD(struct dentry, last_dentry, d_name.name),
					  KREAD(struct dentry, last_dentry, d_name.len)))
				w.status |= EO_ST_RESOLVED_TRUNCATED;
		} else if (!prepend_pseudo_name(wb, &w.off, last_dentry)) {
			w.status |= EO_ST_RESOLVED_TRUNCATED;
		}
	}
	*status |= w.status;
	return w.off;
}

#endif /* ECHO_OPEN_RESOLVE_BPF_H */
