/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The summary view's counters (see summary.h): open-addressing hash tables
 * (linear probing, at most half full) keyed by path bytes and by (pid, comm),
 * and an array indexed by errno, fed whole batches of eo_event records.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <linux/types.h>

#include "echo_open.h"
#include "summary.h"

_Static_assert(EOS_COMM_LEN == EO_COMM_LEN, "a process key holds the record's comm");

struct path_entry {
	uint64_t hash;
	uint64_t key_offset;  /* in the arena */
	uint32_t key_len;
	uint16_t status;      /* EOS_PATH_*: part of the key */
	uint16_t last_errno;
	struct eos_counts interval;
	struct eos_counts total;
};

struct process_entry {
	uint64_t hash;
	uint32_t pid;
	uint32_t last_errno;
	char comm[EO_COMM_LEN];  /* up to the first NUL, zero-filled (6.1 leaves stale bytes) */
	struct eos_counts interval;
	struct eos_counts total;
};

/* Slots hold an entry's index + 1 (0: empty); twice as many slots as keys at most. */
struct slots {
	uint32_t *slot;
	uint32_t mask;
	uint32_t used;  /* entries */
	uint32_t max;   /* entries allowed */
};

struct eos_summary {
	struct eos_limits limits;
	struct slots path_slots;
	struct path_entry *paths;
	char *arena;          /* path bytes, one key after the other */
	uint64_t arena_used;
	struct slots process_slots;
	struct process_entry *processes;
	uint64_t errno_interval[EOS_ERRNO_SLOTS];
	uint64_t errno_total[EOS_ERRNO_SLOTS];
	struct eos_totals totals;
};

static int slots_init(struct slots *t, uint32_t max)
{
	uint64_t size = 2;

	while (size < 2 * (uint64_t)max)
		size <<= 1;
	t->slot = calloc(size, sizeof(*t->slot));
	t->mask = (uint32_t)(size - 1);
	t->used = 0;
	t->max = max;
	return t->slot != NULL;
}

struct eos_summary *eos_new(const struct eos_limits *limits)
{
	struct eos_summary *s;

	if (!limits || limits->max_paths < 1 || limits->max_paths > EOS_MAX_KEYS ||
	    limits->max_processes < 1 || limits->max_processes > EOS_MAX_KEYS ||
	    limits->max_path_bytes < EO_PATH_MAX || limits->max_path_bytes > ((uint64_t)1 << 40))
		return NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->limits = *limits;
	/* calloc and malloc: pages are touched only as keys arrive */
	s->paths = calloc(limits->max_paths, sizeof(*s->paths));
	s->processes = calloc(limits->max_processes, sizeof(*s->processes));
	s->arena = malloc(limits->max_path_bytes);
	if (!s->paths || !s->processes || !s->arena ||
	    !slots_init(&s->path_slots, limits->max_paths) ||
	    !slots_init(&s->process_slots, limits->max_processes)) {
		eos_free(s);
		return NULL;
	}
	return s;
}

void eos_free(struct eos_summary *s)
{
	if (!s)
		return;
	free(s->path_slots.slot);
	free(s->process_slots.slot);
	free(s->paths);
	free(s->processes);
	free(s->arena);
	free(s);
}

#define K1 0x9e3779b97f4a7c15ULL
#define K2 0xff51afd7ed558ccdULL
#define K3 0xc4ceb9fe1a85ec53ULL

/* Eight bytes at a time; a final mix so the low bits (the slot) depend on every byte. */
static uint64_t hash_bytes(const unsigned char *s, size_t n, uint64_t seed)
{
	uint64_t h = seed ^ ((uint64_t)n * K1);
	uint64_t w;

	for (; n >= 8; s += 8, n -= 8) {
		memcpy(&w, s, 8);
		h = (h ^ w) * K2;
		h ^= h >> 32;
	}
	if (n) {
		w = 0;
		memcpy(&w, s, n);
		h = (h ^ w) * K2;
	}
	h ^= h >> 33;
	h *= K3;
	h ^= h >> 29;
	return h;
}

static void add(struct eos_counts *c, int failed)
{
	c->opens++;
	c->errors += (uint64_t)failed;
}

static struct path_entry *find_path(struct eos_summary *s, const unsigned char *key,
				    uint32_t len, uint16_t status)
{
	uint64_t hash = hash_bytes(key, len, K1 * (status + 1u));
	struct slots *t = &s->path_slots;
	uint32_t i = (uint32_t)hash & t->mask;
	struct path_entry *e;

	for (; t->slot[i]; i = (i + 1) & t->mask) {
		e = &s->paths[t->slot[i] - 1];
		if (e->hash == hash && e->key_len == len && e->status == status &&
		    !memcmp(s->arena + e->key_offset, key, len))
			return e;
	}
	if (t->used >= t->max || s->limits.max_path_bytes - s->arena_used < len)
		return NULL;  /* full: the record counts as other */
	e = &s->paths[t->used];
	memset(e, 0, sizeof(*e));
	e->hash = hash;
	e->key_offset = s->arena_used;
	e->key_len = len;
	e->status = status;
	memcpy(s->arena + s->arena_used, key, len);
	s->arena_used += len;
	t->slot[i] = ++t->used;
	return e;
}

static struct process_entry *find_process(struct eos_summary *s, uint32_t pid,
					  const char comm[EO_COMM_LEN])
{
	uint64_t hash = hash_bytes((const unsigned char *)comm, EO_COMM_LEN, K2 ^ pid);
	struct slots *t = &s->process_slots;
	uint32_t i = (uint32_t)hash & t->mask;
	struct process_entry *e;

	for (; t->slot[i]; i = (i + 1) & t->mask) {
		e = &s->processes[t->slot[i] - 1];
		if (e->hash == hash && e->pid == pid && !memcmp(e->comm, comm, EO_COMM_LEN))
			return e;
	}
	if (t->used >= t->max)
		return NULL;
	e = &s->processes[t->used];
	memset(e, 0, sizeof(*e));
	e->hash = hash;
	e->pid = pid;
	memcpy(e->comm, comm, EO_COMM_LEN);
	t->slot[i] = ++t->used;
	return e;
}

int eos_feed(struct eos_summary *s, const char *heads, uint64_t heads_len, uint64_t head_size,
	     const char *tails, uint64_t tails_len, const uint32_t *tail_sizes, uint64_t count,
	     uint64_t *bad_record)
{
	uint64_t offset = 0;

	/* check the whole batch first: a bad one counts nothing */
	if (head_size != sizeof(struct eo_event) || count > heads_len / head_size) {
		*bad_record = 0;
		return EOS_BAD;
	}
	for (uint64_t i = 0; i < count; i++) {
		uint16_t path_len;

		memcpy(&path_len, heads + i * head_size + __builtin_offsetof(struct eo_event, path_len),
		       sizeof(path_len));
		if (tail_sizes[i] > EO_MAX_TAIL || tail_sizes[i] > tails_len - offset ||
		    path_len > EO_PATH_MAX) {
			*bad_record = i;
			return EOS_BAD;
		}
		offset += tail_sizes[i];
	}
	offset = 0;
	for (uint64_t i = 0; i < count; i++) {
		struct eo_event ev;
		const unsigned char *path = (const unsigned char *)tails + offset;
		uint32_t len = tail_sizes[i];
		uint16_t status = 0;
		char comm[EO_COMM_LEN];
		const char *nul;
		struct path_entry *pe;
		struct process_entry *pr;
		int failed;
		uint64_t number;

		memcpy(&ev, heads + i * head_size, sizeof(ev));
		offset += tail_sizes[i];
		failed = ev.ret < 0;
		number = failed ? (uint64_t)0 - (uint64_t)ev.ret : 0;

		if (ev.status & EO_ST_PATH_FAULT) {
			status = EOS_PATH_UNREADABLE;
			len = 0;
		} else {
			/* a tail shorter than path_len was cut by the consumer: the path is too */
			if (ev.path_len <= len)
				len = ev.path_len;
			else
				status |= EOS_PATH_TRUNCATED;
			if (ev.status & EO_ST_PATH_TRUNCATED)
				status |= EOS_PATH_TRUNCATED;
		}

		add(&s->totals.interval.all, failed);
		add(&s->totals.total.all, failed);

		pe = find_path(s, path, len, status);
		if (pe) {
			add(&pe->interval, failed);
			add(&pe->total, failed);
			if (failed)
				pe->last_errno = number < 0x10000 ? (uint16_t)number : 0xffff;
		} else {
			add(&s->totals.interval.other_paths, failed);
			add(&s->totals.total.other_paths, failed);
		}

		memset(comm, 0, sizeof(comm));
		nul = memchr(ev.comm, 0, EO_COMM_LEN);
		memcpy(comm, ev.comm, nul ? (size_t)(nul - ev.comm) : EO_COMM_LEN);
		pr = find_process(s, ev.pid, comm);
		if (pr) {
			add(&pr->interval, failed);
			add(&pr->total, failed);
			if (failed)
				pr->last_errno = (uint32_t)number;
		} else {
			add(&s->totals.interval.other_processes, failed);
			add(&s->totals.total.other_processes, failed);
		}

		if (failed) {
			if (number < EOS_ERRNO_SLOTS) {
				s->errno_interval[number]++;
				s->errno_total[number]++;
			} else {
				s->totals.interval.other_errnos++;
				s->totals.total.other_errnos++;
			}
		}
	}
	return EOS_FED;
}

/* What eos_top ranks: one table's entry i in one scope. */
struct ranking {
	const struct eos_summary *s;
	int table;
	int sort;
	int cumulative;
};

static struct eos_counts counts_of(const struct ranking *r, uint32_t i)
{
	const struct eos_summary *s = r->s;
	struct eos_counts c;

	switch (r->table) {
	case EOS_PATHS:
		return r->cumulative ? s->paths[i].total : s->paths[i].interval;
	case EOS_PROCESSES:
		return r->cumulative ? s->processes[i].total : s->processes[i].interval;
	default:
		c.opens = c.errors = r->cumulative ? s->errno_total[i] : s->errno_interval[i];
		return c;
	}
}

static int compare_keys(const struct ranking *r, uint32_t a, uint32_t b)
{
	const struct eos_summary *s = r->s;

	if (r->table == EOS_PATHS) {
		const struct path_entry *x = &s->paths[a], *y = &s->paths[b];
		uint32_t shorter = x->key_len < y->key_len ? x->key_len : y->key_len;
		int c = memcmp(s->arena + x->key_offset, s->arena + y->key_offset, shorter);

		if (c)
			return c;
		if (x->key_len != y->key_len)
			return x->key_len < y->key_len ? -1 : 1;
		return (int)x->status - (int)y->status;
	}
	if (r->table == EOS_PROCESSES) {
		const struct process_entry *x = &s->processes[a], *y = &s->processes[b];

		if (x->pid != y->pid)
			return x->pid < y->pid ? -1 : 1;
		return memcmp(x->comm, y->comm, EO_COMM_LEN);
	}
	return a < b ? -1 : a > b;
}

static int by_more(uint64_t x, uint64_t y)
{
	return x > y ? -1 : x < y;
}

/* Negative: a comes before b in the view. */
static int rank(const struct ranking *r, uint32_t a, uint32_t b)
{
	struct eos_counts x = counts_of(r, a), y = counts_of(r, b);
	int c = 0;

	if (r->sort == EOS_BY_OPENS)
		c = by_more(x.opens, y.opens) ?: by_more(x.errors, y.errors);
	else if (r->sort == EOS_BY_ERRORS)
		c = by_more(x.errors, y.errors) ?: by_more(x.opens, y.opens);
	return c ?: compare_keys(r, a, b);
}

/* heap[0] is the kept entry that ranks last: the first to give way to a better one */
static void sift_down(const struct ranking *r, uint32_t *heap, uint32_t n, uint32_t at)
{
	for (;;) {
		uint32_t last = at, left = 2 * at + 1, right = left + 1, swap;

		if (left < n && rank(r, heap[left], heap[last]) > 0)
			last = left;
		if (right < n && rank(r, heap[right], heap[last]) > 0)
			last = right;
		if (last == at)
			return;
		swap = heap[at];
		heap[at] = heap[last];
		heap[last] = swap;
		at = last;
	}
}

static void sift_up(const struct ranking *r, uint32_t *heap, uint32_t at)
{
	while (at) {
		uint32_t parent = (at - 1) / 2, swap;

		if (rank(r, heap[at], heap[parent]) <= 0)
			return;
		swap = heap[at];
		heap[at] = heap[parent];
		heap[parent] = swap;
		at = parent;
	}
}

static void fill_row(const struct eos_summary *s, int table, uint32_t i, struct eos_row *row)
{
	memset(row, 0, sizeof(*row));
	if (table == EOS_PATHS) {
		const struct path_entry *e = &s->paths[i];

		row->interval = e->interval;
		row->total = e->total;
		row->key = s->arena + e->key_offset;
		row->key_len = e->key_len;
		row->number = e->last_errno;
		row->status = e->status;
	} else if (table == EOS_PROCESSES) {
		const struct process_entry *e = &s->processes[i];

		row->interval = e->interval;
		row->total = e->total;
		row->pid = e->pid;
		row->number = e->last_errno;
		memcpy(row->comm, e->comm, EO_COMM_LEN);
	} else {
		row->interval.opens = row->interval.errors = s->errno_interval[i];
		row->total.opens = row->total.errors = s->errno_total[i];
		row->number = i;
	}
}

uint32_t eos_top(struct eos_summary *s, int table, int sort, int cumulative,
		 struct eos_row *rows, uint32_t n)
{
	struct ranking r = {s, table, sort, cumulative};
	uint32_t heap[EOS_MAX_TOP];
	uint32_t kept = 0, entries;

	if (n > EOS_MAX_TOP)
		n = EOS_MAX_TOP;
	if (table == EOS_PATHS)
		entries = s->path_slots.used;
	else if (table == EOS_PROCESSES)
		entries = s->process_slots.used;
	else if (table == EOS_ERRORS)
		entries = EOS_ERRNO_SLOTS;
	else
		return 0;
	if (!n)
		return 0;
	for (uint32_t i = 0; i < entries; i++) {
		if (!counts_of(&r, i).opens)
			continue;
		if (kept < n) {
			heap[kept] = i;
			sift_up(&r, heap, kept++);
		} else if (rank(&r, i, heap[0]) < 0) {
			heap[0] = i;
			sift_down(&r, heap, kept, 0);
		}
	}
	/* take the last-ranked off the heap, filling the rows from the end */
	for (uint32_t left = kept; left; left--) {
		fill_row(s, table, heap[0], &rows[left - 1]);
		heap[0] = heap[left - 1];
		sift_down(&r, heap, left - 1, 0);
	}
	return kept;
}

void eos_totals(const struct eos_summary *s, struct eos_totals *out)
{
	*out = s->totals;
	out->paths = s->path_slots.used;
	out->processes = s->process_slots.used;
	out->path_bytes = s->arena_used;
}

static void rehash(struct slots *t, uint32_t entry, uint64_t hash)
{
	uint32_t i = (uint32_t)hash & t->mask;

	while (t->slot[i])
		i = (i + 1) & t->mask;
	t->slot[i] = entry + 1;
}

/* Keep the paths that had opens this interval, their bytes moved down the arena (entries
 * are in arena order, so each key moves to a lower offset or stays). */
static void prune_paths(struct eos_summary *s)
{
	struct slots *t = &s->path_slots;
	uint32_t kept = 0;
	uint64_t arena = 0;

	memset(t->slot, 0, ((size_t)t->mask + 1) * sizeof(*t->slot));
	for (uint32_t i = 0; i < t->used; i++) {
		struct path_entry e = s->paths[i];

		if (!e.interval.opens) {
			s->totals.total.other_paths.opens += e.total.opens;
			s->totals.total.other_paths.errors += e.total.errors;
			s->totals.pruned_paths++;
			continue;
		}
		memmove(s->arena + arena, s->arena + e.key_offset, e.key_len);
		e.key_offset = arena;
		arena += e.key_len;
		s->paths[kept] = e;
		rehash(t, kept++, e.hash);
	}
	t->used = kept;
	s->arena_used = arena;
}

static void prune_processes(struct eos_summary *s)
{
	struct slots *t = &s->process_slots;
	uint32_t kept = 0;

	memset(t->slot, 0, ((size_t)t->mask + 1) * sizeof(*t->slot));
	for (uint32_t i = 0; i < t->used; i++) {
		struct process_entry e = s->processes[i];

		if (!e.interval.opens) {
			s->totals.total.other_processes.opens += e.total.opens;
			s->totals.total.other_processes.errors += e.total.errors;
			s->totals.pruned_processes++;
			continue;
		}
		s->processes[kept] = e;
		rehash(t, kept++, e.hash);
	}
	t->used = kept;
}

void eos_reset_interval(struct eos_summary *s)
{
	if (s->path_slots.used > s->path_slots.max / 2 ||
	    s->arena_used > s->limits.max_path_bytes / 2)
		prune_paths(s);
	if (s->process_slots.used > s->process_slots.max / 2)
		prune_processes(s);
	for (uint32_t i = 0; i < s->path_slots.used; i++)
		memset(&s->paths[i].interval, 0, sizeof(s->paths[i].interval));
	for (uint32_t i = 0; i < s->process_slots.used; i++)
		memset(&s->processes[i].interval, 0, sizeof(s->processes[i].interval));
	memset(s->errno_interval, 0, sizeof(s->errno_interval));
	memset(&s->totals.interval, 0, sizeof(s->totals.interval));
}
