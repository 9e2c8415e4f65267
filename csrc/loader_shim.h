/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The loader's own C functions (loader_shim.c), compiled into echo_open._libbpf.
 * Kept to what cffi's cdef parser accepts: build.py reads this header for the cdef.
 */
#ifndef ECHO_OPEN_LOADER_SHIM_H
#define ECHO_OPEN_LOADER_SHIM_H

/* libbpf's messages: to Python's ldr_log (true) or nowhere (false). */
void ldr_set_print(bool to_python);

/*
 * Batch collection: each record's first head_size bytes go to heads (fixed
 * stride, zero-padded), the rest to tails (concatenated, sizes in tail_sizes).
 * The callback ends libbpf's loop (returns -ENOSPC) once the batch is full.
 */
struct ldr_batch {
	char *heads;
	char *tails;
	uint32_t *tail_sizes;
	size_t head_size;
	size_t max_records;
	size_t tail_capacity;
	size_t max_tail;        /* the largest tail a record may carry */
	size_t count;
	size_t tail_used;
	uint64_t oversized;     /* records whose tail did not fit: cut */
};

int ldr_batch_collect(void *ctx, void *data, size_t size);

#endif /* ECHO_OPEN_LOADER_SHIM_H */
