/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The CLI's fast path: a whole ring-buffer batch of struct eo_event records
 * formatted as table rows or JSON lines in one C call, straight from the
 * batch buffers (no Python object per event).
 *
 * It renders exactly what python/echo_open/render.py renders; that module
 * stays the reference (tests compare the two byte for byte). Records the C
 * side does not handle (a byte >= 0x80 anywhere shown, which needs UTF-8 and
 * Unicode printability rules, or a resolved path that needs lexical
 * normalisation) are handed back to Python one at a time.
 *
 * Kept to what cffi's cdef parser accepts (build.py reads it for the cdef).
 */
#ifndef ECHO_OPEN_RENDER_H
#define ECHO_OPEN_RENDER_H

#define EOR_NAME_LEN 24        /* one flag, errno or syscall name, NUL included */
#define EOR_MAX_FLAG_NAMES 32
#define EOR_ERRNO_NAMES 256    /* errnos named by table; others print as E<n> */
#define EOR_SYSCALL_NAMES 8
#define EOR_JSON_MAX_FIELDS 48 /* keys of a JSON line */
#define EOR_JSON_KEY_LEN 32    /* one key as written: ,"name": with its NUL */
#define EOR_CGROUP_SLOTS 256   /* cgroup id -> text cache, direct-mapped: slot id % this */
#define EOR_CGROUP_PATH_LEN 512
#define EOR_CONTAINER_LEN 80

/* How rendering stopped (eor_render's return value). */
enum eor_stop {
	EOR_DONE = 0,       /* every record rendered */
	EOR_SLOW = 1,       /* cursor.record needs the Python renderer */
	EOR_FULL = 2,       /* the output buffer has no room for cursor.record */
	EOR_BAD = 3,        /* cursor.record lies outside the buffers given, is too long,
	                       or its path lengths do not add up to its tail */
	EOR_CGROUP = 4,     /* cursor.record's cgroup id is not in opt.cgroups: Python fills
	                       its slot and calls again */
};

/*
 * The values a JSON line can hold, one per key. The keys' names and their
 * order are not here: Python's table (render.JSON_FIELDS) sends them in
 * eor_options, so both writers follow that one table. A key's id is named
 * EOR_JSON_ plus the key in capitals.
 */
enum eor_json_field {
	EOR_JSON_TS_NS, EOR_JSON_TIME, EOR_JSON_LATENCY_NS, EOR_JSON_PID, EOR_JSON_TID,
	EOR_JSON_PPID, EOR_JSON_UID, EOR_JSON_GID, EOR_JSON_MNTNS, EOR_JSON_COMM,
	EOR_JSON_COMM_B64, EOR_JSON_SYSCALL, EOR_JSON_DFD, EOR_JSON_FLAGS, EOR_JSON_FLAGS_TEXT,
	EOR_JSON_MODE, EOR_JSON_RESOLVE, EOR_JSON_RET, EOR_JSON_FD, EOR_JSON_ERRNO,
	EOR_JSON_ERROR, EOR_JSON_TRUNCATED, EOR_JSON_RESOLVED_TRUNCATED,
	EOR_JSON_RESOLVED_CANONICAL, EOR_JSON_RESOLVED_DELETED, EOR_JSON_RESOLVED_ANONYMOUS,
	EOR_JSON_RESOLVED_MNTNS, EOR_JSON_PATH, EOR_JSON_PATH_B64, EOR_JSON_RESOLVED,
	EOR_JSON_RESOLVED_B64, EOR_JSON_RESOLVED_UNSURE, EOR_JSON_PIDNS, EOR_JSON_NETNS,
	EOR_JSON_USERNS, EOR_JSON_NSPID, EOR_JSON_CGROUP_ID, EOR_JSON_CGROUP, EOR_JSON_CONTAINER,
};

/* What Python found for a cgroup id (cgroups.path_of, containers.container_of). */
struct eor_cgroup {
	uint64_t id;
	uint8_t state;          /* 0: empty; 1: rendered here; 2: its records go to Python
	                           (a path or name C does not escape, or too long) */
	uint8_t has_path;       /* else the path is unknown: null */
	uint8_t has_container;  /* else outside containers: null, and "-" in the table */
	uint8_t short_len;      /* the table shows container[0..short_len) */
	uint16_t path_len;
	uint16_t container_len;
	char path[EOR_CGROUP_PATH_LEN];
	char container[EOR_CONTAINER_LEN];
};

struct eor_flag_name {
	uint64_t value;
	char name[EOR_NAME_LEN];
};

/* Filled in by Python once per renderer; names come from flags.py and events.py. */
struct eor_options {
	int64_t wall_offset_ns;   /* CLOCK_MONOTONIC -> wall clock */
	uint32_t own_mntns;       /* resolved paths from another namespace get a mark */
	uint8_t json;
	uint8_t timestamp;        /* table: TIME column (local time) */
	uint8_t uid;              /* table: UID column */
	uint8_t extended;         /* table: SYSCALL FLAGS MODE, and PATH -> RESOLVED */
	uint8_t resolved;         /* table: the resolved path */
	uint8_t print_container;  /* table: CONTAINER column */
	uint8_t pad[2];
	uint32_t n_flag_names;
	char access_names[4][EOR_NAME_LEN];       /* flags & O_ACCMODE */
	struct eor_flag_name flag_names[EOR_MAX_FLAG_NAMES]; /* in print order */
	char errno_names[EOR_ERRNO_NAMES][EOR_NAME_LEN];
	char syscall_names[EOR_SYSCALL_NAMES][EOR_NAME_LEN];
	uint32_t n_json_fields;
	uint8_t json_fields[EOR_JSON_MAX_FIELDS];          /* enum eor_json_field, in order */
	uint8_t json_key_len[EOR_JSON_MAX_FIELDS];
	char json_keys[EOR_JSON_MAX_FIELDS][EOR_JSON_KEY_LEN]; /* ,"key": (the first: {"key":) */
	/* the date part of the time, cached per second */
	int64_t clock_second;
	uint32_t clock_len;
	char clock_text[40];
	struct eor_cgroup cgroups[EOR_CGROUP_SLOTS];  /* with json or print_container */
};

/* Where rendering is in a batch; eor_render moves it forward. */
struct eor_cursor {
	uint64_t record;        /* next record */
	uint64_t tail_offset;   /* where its tail starts in the tails buffer */
	uint64_t out_len;       /* bytes written to the output buffer */
};

/*
 * Render records cursor.record..count; returns an enum eor_stop. Every length
 * is checked against the buffers' sizes: heads holds heads_len bytes (records
 * of head_size == sizeof(struct eo_event)), tails tails_len, tail_sizes count.
 */
int eor_render(struct eor_options *opt, const char *heads, uint64_t heads_len,
	       uint64_t head_size, const char *tails, uint64_t tails_len,
	       const uint32_t *tail_sizes, uint64_t count, struct eor_cursor *cursor,
	       char *out, uint64_t out_cap);

/* The most bytes one record can take in the output. */
uint64_t eor_max_line(uint64_t tail_size);

#endif /* ECHO_OPEN_RENDER_H */
