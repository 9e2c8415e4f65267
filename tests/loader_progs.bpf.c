// SPDX-License-Identifier: BSD-2-Clause
/*
 * A small, generic BPF object for the loader's tests (tests/test_loader.py).
 *
 * count_calls (tracepoint syscalls/sys_enter_getppid), for the process the
 * .rodata settings name (tgid 0: every process):
 *   - counts its calls in the per-CPU array `counts` (key 0);
 *   - stores the latest sequence number in `array` (key 0);
 *   - if settings.record is set, writes a record to the ring buffer `events`:
 *     a 16-byte head (tag, seq, tgid, tail_len) and a tail of tail_len = seq % 32
 *     bytes, byte i being (seq + i) & 0xff, with settings.rb_flags as wakeup flags.
 * count_exits (tracepoint syscalls/sys_exit_getppid) counts the same calls' exits
 * in `array` (key 1), for tests that want two programs.
 * bad_access (not loaded unless its autoload is turned on) reads past the end
 * of a map value, which the verifier refuses.
 * `hash` is only used from user space.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define MAX_TAIL 32

struct settings {
	__u32 tgid;	/* only this process; 0: every process */
	__u32 record;	/* write ring buffer records */
	__u32 tag;	/* copied into every record */
	__u32 pad;
	__u64 rb_flags;	/* flags for bpf_ringbuf_output (BPF_RB_NO_WAKEUP, ...) */
};

const volatile struct settings settings = {};

struct record {
	__u32 tag;
	__u32 seq;
	__u32 tgid;
	__u32 tail_len;
	__u8 tail[MAX_TAIL];
};

struct hash_value {
	__u64 first;
	__u64 second;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct hash_value);
} hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

__u32 seq_counter = 0;

SEC("tracepoint/syscalls/sys_enter_getppid")
int count_calls(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 zero = 0;
	__u64 *count, *last;
	struct record r = {};
	__u32 seq, len, i;

	if (settings.tgid && tgid != settings.tgid)
		return 0;
	count = bpf_map_lookup_elem(&counts, &zero);
	if (count)
		*count += 1;
	seq = __sync_fetch_and_add(&seq_counter, 1);
	last = bpf_map_lookup_elem(&array, &zero);
	if (last)
		*last = seq;
	if (!settings.record)
		return 0;

	len = seq % MAX_TAIL;
	r.tag = settings.tag;
	r.seq = seq;
	r.tgid = tgid;
	r.tail_len = len;
	for (i = 0; i < MAX_TAIL; i++)
		r.tail[i] = (seq + i) & 0xff;
	bpf_ringbuf_output(&events, &r, 16 + (len & (MAX_TAIL - 1)), settings.rb_flags);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_getppid")
int count_exits(void *ctx)
{
	__u32 one = 1;
	__u64 *exits;

	if (settings.tgid && (__u32)(bpf_get_current_pid_tgid() >> 32) != settings.tgid)
		return 0;
	exits = bpf_map_lookup_elem(&array, &one);
	if (exits)
		__sync_fetch_and_add(exits, 1);
	return 0;
}

/* "?": libbpf leaves it out of the load unless autoload is turned on */
SEC("?tracepoint/syscalls/sys_enter_getppid")
int bad_access(void *ctx)
{
	__u32 zero = 0;
	__u64 *value = bpf_map_lookup_elem(&array, &zero);

	if (!value)
		return 0;
	/* 8 bytes at offset 64 of an 8-byte value: the verifier says no */
	return *(volatile __u64 *)((char *)value + 64) != 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
