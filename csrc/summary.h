/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The summary view's counters: whole ring-buffer batches of struct eo_event
 * records counted in C (no Python object per event), per path as passed, per
 * process (pid, comm) and per errno, each with opens and failed opens, for the
 * current interval and since the start.
 *
 * Memory is bounded: at most max_paths distinct paths (holding at most
 * max_path_bytes of path text), max_processes distinct processes and
 * EOS_ERRNO_SLOTS errnos are told apart; a record whose key no longer fits is
 * counted in that table's "other" counts, so every total stays exact.
 *
 * Kept to what cffi's cdef parser accepts (build.py reads it for the cdef).
 */
#ifndef ECHO_OPEN_SUMMARY_H
#define ECHO_OPEN_SUMMARY_H

#define EOS_COMM_LEN 16       /* == EO_COMM_LEN (checked in summary.c) */
#define EOS_ERRNO_SLOTS 4096  /* errnos 0..4095 (the kernel's MAX_ERRNO) */
#define EOS_MAX_KEYS 1048576  /* the most distinct keys a table may be asked to hold */
#define EOS_MAX_TOP 4096      /* the most rows one eos_top call returns */

/* eos_feed's return value */
enum eos_feed_status {
	EOS_FED = 0,  /* every record counted */
	EOS_BAD = 1,  /* a record lies outside the buffers or is too long: nothing counted */
};

enum eos_table {
	EOS_PATHS = 0,
	EOS_PROCESSES = 1,
	EOS_ERRORS = 2,
};

/* The order eos_top returns rows in; ties go by key. */
enum eos_sort {
	EOS_BY_OPENS = 0,   /* most opens first */
	EOS_BY_ERRORS = 1,  /* most failed opens first */
	EOS_BY_KEY = 2,     /* path bytes, pid then comm, errno: ascending */
};

/* eos_row.status bits (paths) */
#define EOS_PATH_TRUNCATED 1  /* the path is cut at its end (longer than the record holds) */
#define EOS_PATH_UNREADABLE 2 /* the opener's memory could not be read: no path */

struct eos_counts {
	uint64_t opens;   /* records: successful and failed opens */
	uint64_t errors;  /* of which failed */
};

struct eos_limits {
	uint32_t max_paths;       /* distinct paths, 1..EOS_MAX_KEYS */
	uint32_t max_processes;   /* distinct (pid, comm), 1..EOS_MAX_KEYS */
	uint64_t max_path_bytes;  /* bytes of path text held, at least one whole path */
};

/* One table's counts in one scope (interval or since the start). */
struct eos_scope {
	struct eos_counts all;          /* every record fed */
	struct eos_counts other_paths;  /* records whose path did not fit the table */
	struct eos_counts other_processes;
	uint64_t other_errnos;          /* failed opens whose errno is >= EOS_ERRNO_SLOTS */
};

struct eos_totals {
	struct eos_scope interval;  /* since the last eos_reset_interval */
	struct eos_scope total;     /* since eos_new */
	uint64_t paths;             /* distinct keys held now */
	uint64_t processes;
	uint64_t path_bytes;
	uint64_t pruned_paths;      /* keys dropped by eos_reset_interval (their counts: other) */
	uint64_t pruned_processes;
};

/* One row of eos_top; key points into the summary and is valid until the next call. */
struct eos_row {
	struct eos_counts interval;
	struct eos_counts total;
	const char *key;          /* paths: the path's bytes (no NUL) */
	uint32_t key_len;
	uint32_t pid;             /* processes */
	uint32_t number;          /* errors: the errno; paths, processes: the last errno seen */
	uint32_t status;          /* paths: EOS_PATH_* */
	char comm[EOS_COMM_LEN];  /* processes: up to the first NUL, zero-filled */
};

struct eos_summary;

/* NULL when the limits are out of range or memory is short. */
struct eos_summary *eos_new(const struct eos_limits *limits);
void eos_free(struct eos_summary *s);

/*
 * Count records 0..count of a batch: heads holds heads_len bytes (records of
 * head_size == sizeof(struct eo_event)), tails tails_len, tail_sizes count.
 * Every record is checked before any is counted; on EOS_BAD *bad_record is the
 * first bad one.
 */
int eos_feed(struct eos_summary *s, const char *heads, uint64_t heads_len, uint64_t head_size,
	     const char *tails, uint64_t tails_len, const uint32_t *tail_sizes, uint64_t count,
	     uint64_t *bad_record);

/*
 * The first n (at most EOS_MAX_TOP) rows of a table by sort, counting the
 * interval's or (cumulative) the whole run's counts; keys with no opens in
 * that scope are left out. Returns how many rows were written.
 */
uint32_t eos_top(struct eos_summary *s, int table, int sort, int cumulative,
		 struct eos_row *rows, uint32_t n);

void eos_totals(const struct eos_summary *s, struct eos_totals *out);

/*
 * Start a new interval: the interval counts go to zero. A table more than half
 * full first drops the keys that had no opens in the interval just ended (their
 * whole-run counts move to "other"), so a long-running view keeps room for new
 * keys; a table at most half full keeps every key.
 */
void eos_reset_interval(struct eos_summary *s);

#endif /* ECHO_OPEN_SUMMARY_H */
