/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Table rows and JSON lines for a batch of eo_event records (see render.h).
 * Every rule here mirrors python/echo_open/render.py, the reference.
 */
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <linux/types.h>

#include "echo_open.h"
#include "render.h"

_Static_assert(EO_MAX_TAIL == 2 * EO_PATH_MAX, "a record's tail: two whole paths");

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Some byte of w is below n (n <= 128). */
static inline uint64_t has_less(uint64_t w, uint64_t n)
{
	return (w - ONES * n) & ~w & HIGHS;
}

static inline uint64_t has_byte(uint64_t w, uint8_t b)
{
	return has_less(w ^ (ONES * b), 1);
}

/* How a string is escaped: the table's rule, JSON's, or the table's for a field that is
 * followed by others on its line, where a space would read as a separator. */
enum escape_rule {
	ESC_TABLE = 0,
	ESC_JSON = 1,
	ESC_FIELD = 2,
};

/*
 * Length of the leading run of bytes that print as themselves: 0x20-0x7e
 * except the backslash and, for JSON, the double quote, for a field the space.
 * Eight at a time.
 */
static size_t plain_run(const unsigned char *s, size_t n, enum escape_rule rule)
{
	unsigned char lowest = rule == ESC_FIELD ? 0x21 : 0x20;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t w;

		memcpy(&w, s + i, 8);
		if (has_less(w, lowest) | (w & HIGHS) | has_byte(w, 0x7f) | has_byte(w, '\\') |
		    (rule == ESC_JSON ? has_byte(w, '"') : 0))
			break;
	}
	for (; i < n; i++) {
		unsigned char c = s[i];

		if (c < lowest || c >= 0x7f || c == '\\' || (rule == ESC_JSON && c == '"'))
			break;
	}
	return i;
}

static int has_high_byte(const unsigned char *s, size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t w;

		memcpy(&w, s + i, 8);
		if (w & HIGHS)
			return 1;
	}
	for (; i < n; i++)
		if (s[i] & 0x80)
			return 1;
	return 0;
}

static const char HEX[] = "0123456789abcdef";

static char *put(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}

#define PUT_LITERAL(p, s) put((p), (s), sizeof(s) - 1)

static char *put_str(char *p, const char *s)
{
	return put(p, s, strlen(s));
}

static char *put_u64(char *p, uint64_t v)
{
	char digits[20];
	int n = 0;

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = digits[--n];
	return p;
}

static char *put_i64(char *p, int64_t v)
{
	if (v < 0) {
		*p++ = '-';
		return put_u64(p, (uint64_t)0 - (uint64_t)v);
	}
	return put_u64(p, (uint64_t)v);
}

static char *put_octal(char *p, uint64_t v, int min_digits)
{
	char digits[24];
	int n = 0;

	do {
		digits[n++] = (char)('0' + (v & 7));
		v >>= 3;
	} while (v);
	while (n < min_digits)
		digits[n++] = '0';
	while (n)
		*p++ = digits[--n];
	return p;
}

/* Python's f"{text:<width}": pad on the right, never cut. */
static char *pad_from(char *start, char *p, size_t width)
{
	while ((size_t)(p - start) < width)
		*p++ = ' ';
	return p;
}

/* One byte plain_run stopped at, escaped: the table's rule (render.escape: \\, \n,
 * \r, \t, else \xNN) or JSON's (json.encoder.encode_basestring_ascii). */
static char *put_special(char *p, unsigned char c, enum escape_rule rule)
{
	int json = rule == ESC_JSON;

	switch (c) {
	case '\\': return PUT_LITERAL(p, "\\\\");
	case '\n': return PUT_LITERAL(p, "\\n");
	case '\r': return PUT_LITERAL(p, "\\r");
	case '\t': return PUT_LITERAL(p, "\\t");
	}
	if (!json) {
		p = PUT_LITERAL(p, "\\x");
	} else if (c == '"') {
		return PUT_LITERAL(p, "\\\"");
	} else if (c == '\b') {
		return PUT_LITERAL(p, "\\b");
	} else if (c == '\f') {
		return PUT_LITERAL(p, "\\f");
	} else {
		p = PUT_LITERAL(p, "\\u00");
	}
	*p++ = HEX[c >> 4];
	*p++ = HEX[c & 15];
	return p;
}

/* ASCII bytes with every special byte escaped, by the rule given. */
static char *put_escaped(char *p, const unsigned char *s, size_t n, enum escape_rule rule)
{
	while (n) {
		size_t run = plain_run(s, n, rule);

		p = put(p, (const char *)s, run);
		s += run;
		n -= run;
		if (!n)
			break;
		p = put_special(p, *s, rule);
		s++;
		n--;
	}
	return p;
}

static char *put_json_string(char *p, const unsigned char *s, size_t n)
{
	*p++ = '"';
	p = put_escaped(p, s, n, ESC_JSON);
	*p++ = '"';
	return p;
}

/* flags.flags_text: the access mode, then known flags in print order, then octal. */
static char *put_flags_text(char *p, const struct eor_options *opt, uint64_t flags)
{
	uint64_t rest = flags & ~(uint64_t)3;

	p = put_str(p, opt->access_names[flags & 3]);
	for (uint32_t i = 0; i < opt->n_flag_names && i < EOR_MAX_FLAG_NAMES; i++) {
		uint64_t value = opt->flag_names[i].value;

		if (value && (rest & value) == value) {
			*p++ = '|';
			p = put_str(p, opt->flag_names[i].name);
			rest &= ~value;
		}
	}
	if (rest) {
		p = PUT_LITERAL(p, "|0o");
		p = put_octal(p, rest, 1);
	}
	return p;
}

static char *put_error_name(char *p, const struct eor_options *opt, int64_t number)
{
	if (number >= 0 && number < EOR_ERRNO_NAMES && opt->errno_names[number][0])
		return put_str(p, opt->errno_names[number]);
	*p++ = 'E';
	return put_i64(p, number);
}

static char *put_syscall(char *p, const struct eor_options *opt, unsigned id)
{
	if (id < EOR_SYSCALL_NAMES && opt->syscall_names[id][0])
		return put_str(p, opt->syscall_names[id]);
	return put_u64(p, id);
}

/* "HH:MM:SS.uuuuuu" (local) or "YYYY-MM-DDTHH:MM:SS.uuuuuu" (UTC, JSON). */
static char *put_clock(char *p, struct eor_options *opt, __int128 wall_ns)
{
	/* floor division, as Python's divmod: the same second for every input */
	int64_t second = (int64_t)(wall_ns / 1000000000);
	int64_t rest = (int64_t)(wall_ns % 1000000000);
	int64_t micros;

	if (rest < 0) {
		rest += 1000000000;
		second--;
	}
	micros = rest / 1000;

	if (second != opt->clock_second) {
		time_t t = (time_t)second;
		struct tm tm;
		size_t n;

		/* (a time libc cannot convert prints as nothing, never through a NULL) */
		if (!(opt->json ? gmtime_r(&t, &tm) : localtime_r(&t, &tm)))
			n = 0;
		else
			n = strftime(opt->clock_text, sizeof(opt->clock_text),
				     opt->json ? "%Y-%m-%dT%H:%M:%S" : "%H:%M:%S", &tm);
		opt->clock_len = (uint32_t)n;
		opt->clock_second = second;
	}
	p = put(p, opt->clock_text, opt->clock_len);
	*p++ = '.';
	for (int64_t div = 100000; div; div /= 10)
		*p++ = (char)('0' + (micros / div) % 10);
	return p;
}

/* events._normalize would change this absolute path: Python does that one. */
static int needs_normalizing(const unsigned char *s, size_t n)
{
	if (n > 1 && s[n - 1] == '/')
		return 1;
	for (size_t i = 0; i + 1 < n; i++)
		if (s[i] == '/' && (s[i + 1] == '.' || s[i + 1] == '/'))
			return 1;
	return 0;
}

struct record {
	struct eo_event ev;
	const unsigned char *comm;
	size_t comm_len;
	const unsigned char *path;
	size_t path_len;
	const unsigned char *resolved;  /* NULL: nothing resolved */
	size_t resolved_len;
	__int128 wall_ns;      /* ts_ns + the offset, without overflow (as in Python) */
	const struct eor_cgroup *cgroup;  /* with json or print_container */
};

/* OpenEvent.resolved_bytes, or 0 when only Python's normalisation can say. */
static int find_resolved(struct record *r, const unsigned char *raw, size_t raw_len)
{
	const struct eo_event *ev = &r->ev;

	r->resolved = NULL;
	r->resolved_len = 0;
	if (ev->resolved_how == EO_RESOLVED_FILE) {
		r->resolved = raw;
		r->resolved_len = raw_len;
	} else if (ev->resolved_how == EO_RESOLVED_JOINED) {
		if (!(ev->status & EO_ST_RESOLVED_TRUNCATED) && needs_normalizing(raw, raw_len))
			return 0;
		r->resolved = raw;
		r->resolved_len = raw_len;
	} else if (r->path_len && r->path[0] == '/' &&
		   !(ev->status & (EO_ST_PATH_TRUNCATED | EO_ST_PATH_FAULT))) {
		if (needs_normalizing(r->path, r->path_len))
			return 0;
		r->resolved = r->path;
		r->resolved_len = r->path_len;
	}
	return 1;
}

/* render.resolved_marks */
static char *put_marks(char *p, const struct eor_options *opt, const struct eo_event *ev)
{
	if (ev->status & EO_ST_RESOLVED_ANON) {
		p = PUT_LITERAL(p, "(anon)");
	} else if (ev->resolved_mntns && opt->own_mntns && ev->resolved_mntns != opt->own_mntns) {
		p = PUT_LITERAL(p, "(mnt:");
		p = put_u64(p, ev->resolved_mntns);
		*p++ = ')';
	}
	if ((ev->status & EO_ST_RESOLVED_DELETED) && !(ev->status & EO_ST_RESOLVED_ANON))
		p = PUT_LITERAL(p, "(deleted)");
	if (ev->status & EO_ST_RESOLVED_UNSURE)
		p = PUT_LITERAL(p, "(unsure)");
	if (ev->status & EO_ST_RESOLVED_TRUNCATED)
		p = PUT_LITERAL(p, "...");
	return p;
}

static char *put_table_row(char *p, struct eor_options *opt, const struct record *r)
{
	const struct eo_event *ev = &r->ev;
	char *start;

	if (opt->timestamp) {
		start = p;
		p = put_clock(p, opt, r->wall_ns);
		p = pad_from(start, p, 15);
		*p++ = ' ';
	}
	if (opt->uid) {
		start = p;
		p = put_u64(p, ev->uid);
		p = pad_from(start, p, 7);
		*p++ = ' ';
	}
	if (opt->print_container) {
		start = p;
		if (r->cgroup->has_container)
			p = put_escaped(p, (const unsigned char *)r->cgroup->container,
					r->cgroup->short_len, ESC_FIELD);
		else
			*p++ = '-';
		p = pad_from(start, p, 12);
		*p++ = ' ';
	}
	start = p;
	p = put_u64(p, ev->pid);
	p = pad_from(start, p, 7);
	*p++ = ' ';
	start = p;
	p = put_u64(p, ev->tid);
	p = pad_from(start, p, 7);
	*p++ = ' ';
	start = p;
	p = put_escaped(p, r->comm, r->comm_len, ESC_FIELD);
	p = pad_from(start, p, 16);
	*p++ = ' ';
	if (ev->ret < 0) {
		p = PUT_LITERAL(p, " -1 ");
		start = p;
		p = put_error_name(p, opt, -ev->ret);
		p = pad_from(start, p, 7);
		*p++ = ' ';
	} else {
		char number[24];
		char *end = (ev->status & EO_ST_FIXED_FILE) ? PUT_LITERAL(number, "-")
							    : put_i64(number, ev->ret);
		size_t len = (size_t)(end - number);

		for (size_t blank = len; blank < 3; blank++)  /* f"{fd:>3}" */
			*p++ = ' ';
		p = put(p, number, len);
		p = PUT_LITERAL(p, "         ");  /* " " + 7 blanks + " " */
	}
	if (opt->extended) {
		start = p;
		p = put_syscall(p, opt, ev->syscall);
		p = pad_from(start, p, 8);
		*p++ = ' ';
		start = p;
		p = put_flags_text(p, opt, ev->flags);
		p = pad_from(start, p, 24);
		*p++ = ' ';
		p = put_octal(p, ev->mode, 6);
		*p++ = ' ';
	}
	if (!opt->resolved || opt->extended) {
		/* before " -> RESOLVED" the path is a field: the first " -> " is the separator */
		p = put_escaped(p, r->path, r->path_len, opt->resolved ? ESC_FIELD : ESC_TABLE);
		if (ev->status & EO_ST_PATH_TRUNCATED)
			p = PUT_LITERAL(p, "\\...");  /* no file name prints a lone backslash */
	}
	if (opt->resolved) {
		if (opt->extended)
			p = PUT_LITERAL(p, " -> ");
		if (r->resolved) {
			p = put_marks(p, opt, ev);
			p = put_escaped(p, r->resolved, r->resolved_len, ESC_TABLE);
		} else {
			*p++ = '?';
		}
	}
	*p++ = '\n';
	return p;
}

static char *put_bool(char *p, int value)
{
	return value ? PUT_LITERAL(p, "true") : PUT_LITERAL(p, "false");
}

static char *put_json_value(char *p, struct eor_options *opt, const struct record *r,
			    unsigned field)
{
	const struct eo_event *ev = &r->ev;
	int failed = ev->ret < 0;

	switch (field) {
	case EOR_JSON_TS_NS: return put_u64(p, ev->ts_ns);
	case EOR_JSON_TIME:
		*p++ = '"';
		p = put_clock(p, opt, r->wall_ns);
		return PUT_LITERAL(p, "Z\"");
	case EOR_JSON_LATENCY_NS: return put_u64(p, ev->latency_ns);
	case EOR_JSON_PID: return put_u64(p, ev->pid);
	case EOR_JSON_TID: return put_u64(p, ev->tid);
	case EOR_JSON_PPID: return put_u64(p, ev->ppid);
	case EOR_JSON_UID: return put_u64(p, ev->uid);
	case EOR_JSON_GID: return put_u64(p, ev->gid);
	case EOR_JSON_MNTNS: return put_u64(p, ev->mntns);
	case EOR_JSON_PIDNS: return put_u64(p, ev->pidns);
	case EOR_JSON_NETNS: return put_u64(p, ev->netns);
	case EOR_JSON_USERNS: return put_u64(p, ev->userns);
	case EOR_JSON_NSPID: return put_u64(p, ev->nspid);
	case EOR_JSON_CGROUP_ID: return put_u64(p, ev->cgroup_id);
	case EOR_JSON_CGROUP:
		if (!r->cgroup->has_path)
			return PUT_LITERAL(p, "null");
		return put_json_string(p, (const unsigned char *)r->cgroup->path,
				       r->cgroup->path_len);
	case EOR_JSON_CONTAINER:
		if (!r->cgroup->has_container)
			return PUT_LITERAL(p, "null");
		return put_json_string(p, (const unsigned char *)r->cgroup->container,
				       r->cgroup->container_len);
	case EOR_JSON_COMM: return put_json_string(p, r->comm, r->comm_len);
	case EOR_JSON_SYSCALL:
		*p++ = '"';
		p = put_syscall(p, opt, ev->syscall);
		*p++ = '"';
		return p;
	case EOR_JSON_DFD: return put_i64(p, ev->dfd);
	case EOR_JSON_FLAGS: return put_u64(p, ev->flags);
	case EOR_JSON_FLAGS_TEXT:
		*p++ = '"';
		p = put_flags_text(p, opt, ev->flags);
		*p++ = '"';
		return p;
	case EOR_JSON_MODE: return put_u64(p, ev->mode);
	case EOR_JSON_RESOLVE: return put_u64(p, ev->resolve);
	case EOR_JSON_RET: return put_i64(p, ev->ret);
	case EOR_JSON_FD:
		if (failed || (ev->status & EO_ST_FIXED_FILE))
			return PUT_LITERAL(p, "null");
		return put_i64(p, ev->ret);
	case EOR_JSON_ERRNO: return failed ? put_i64(p, -ev->ret) : PUT_LITERAL(p, "null");
	case EOR_JSON_ERROR:
		if (!failed)
			return PUT_LITERAL(p, "null");
		*p++ = '"';
		p = put_error_name(p, opt, -ev->ret);
		*p++ = '"';
		return p;
	case EOR_JSON_TRUNCATED: return put_bool(p, ev->status & EO_ST_PATH_TRUNCATED);
	case EOR_JSON_RESOLVED_TRUNCATED: return put_bool(p, ev->status & EO_ST_RESOLVED_TRUNCATED);
	case EOR_JSON_RESOLVED_CANONICAL: return put_bool(p, ev->resolved_how == EO_RESOLVED_FILE);
	case EOR_JSON_RESOLVED_DELETED: return put_bool(p, ev->status & EO_ST_RESOLVED_DELETED);
	case EOR_JSON_RESOLVED_ANONYMOUS: return put_bool(p, ev->status & EO_ST_RESOLVED_ANON);
	case EOR_JSON_RESOLVED_UNSURE: return put_bool(p, ev->status & EO_ST_RESOLVED_UNSURE);
	case EOR_JSON_RESOLVED_MNTNS: return put_u64(p, ev->resolved_mntns);
	case EOR_JSON_PATH: return put_json_string(p, r->path, r->path_len);
	case EOR_JSON_RESOLVED:
		if (!r->resolved)
			return PUT_LITERAL(p, "null");
		return put_json_string(p, r->resolved, r->resolved_len);
	}
	/* the *_b64 twins: C renders only records whose bytes are all ASCII */
	return PUT_LITERAL(p, "null");
}

/* One JSON line, its keys in the order of Python's table (opt->json_fields). */
static char *put_json_line(char *p, struct eor_options *opt, const struct record *r)
{
	uint32_t n = opt->n_json_fields < EOR_JSON_MAX_FIELDS ? opt->n_json_fields
							       : EOR_JSON_MAX_FIELDS;

	for (uint32_t i = 0; i < n; i++) {
		/* a fixed-size copy, then the key's length: no strlen per key (the
		 * output has room: eor_max_line counts EOR_JSON_KEY_LEN per key) */
		memcpy(p, opt->json_keys[i], EOR_JSON_KEY_LEN);
		p += opt->json_key_len[i] < EOR_JSON_KEY_LEN ? opt->json_key_len[i] : 0;
		p = put_json_value(p, opt, r, opt->json_fields[i]);
	}
	return PUT_LITERAL(p, "}\n");
}

uint64_t eor_max_line(uint64_t tail_size)
{
	/* every shown byte can grow to 6 (\u00NN); the rest: keys, numbers, flag names */
	return 2048 + EOR_JSON_MAX_FIELDS * EOR_JSON_KEY_LEN + EOR_MAX_FLAG_NAMES * EOR_NAME_LEN +
	       6 * (EO_COMM_LEN + 2 * tail_size + EOR_CGROUP_PATH_LEN + 2 * EOR_CONTAINER_LEN);
}

int eor_render(struct eor_options *opt, const char *heads, uint64_t heads_len,
	       uint64_t head_size, const char *tails, uint64_t tails_len,
	       const uint32_t *tail_sizes, uint64_t count, struct eor_cursor *cursor,
	       char *out, uint64_t out_cap)
{
	if (head_size != sizeof(struct eo_event))
		return EOR_BAD;
	while (cursor->record < count) {
		uint64_t i = cursor->record;
		uint64_t tail_size = tail_sizes[i];
		const unsigned char *tail = (const unsigned char *)tails + cursor->tail_offset;
		struct record r;
		const char *nul;
		size_t path_len;
		int shows_resolved;

		/* a record is its head and its tail, inside the buffers; no longer than
		 * a path and a resolved path (each line then fits an empty output) */
		if (i >= heads_len / head_size || cursor->tail_offset > tails_len ||
		    tail_size > tails_len - cursor->tail_offset || tail_size > EO_MAX_TAIL ||
		    eor_max_line(tail_size) > out_cap)
			return EOR_BAD;
		if (out_cap - cursor->out_len < eor_max_line(tail_size))
			return EOR_FULL;
		memset(&r, 0, sizeof(r));
		memcpy(&r.ev, heads + i * head_size, sizeof(r.ev));
		/* the tail is exactly the path and the resolved path (as decode_batch checks) */
		if ((uint64_t)r.ev.path_len + r.ev.resolved_len != tail_size)
			return EOR_BAD;
		nul = memchr(r.ev.comm, 0, EO_COMM_LEN);
		/* point into the batch, not the copy on this stack */
		r.comm = (const unsigned char *)heads + i * head_size +
			 __builtin_offsetof(struct eo_event, comm);
		r.comm_len = nul ? (size_t)(nul - r.ev.comm) : EO_COMM_LEN;
		path_len = r.ev.path_len < tail_size ? r.ev.path_len : tail_size;
		r.path = tail;
		r.path_len = path_len;
		r.wall_ns = (__int128)r.ev.ts_ns + opt->wall_offset_ns;

		if (opt->json || opt->print_container) {
			const struct eor_cgroup *cg = &opt->cgroups[r.ev.cgroup_id % EOR_CGROUP_SLOTS];

			if (!cg->state || cg->id != r.ev.cgroup_id)
				return EOR_CGROUP;
			if (cg->state != 1 || cg->path_len > EOR_CGROUP_PATH_LEN ||
			    cg->container_len > EOR_CONTAINER_LEN || cg->short_len > cg->container_len)
				return EOR_SLOW;
			r.cgroup = cg;
		}
		shows_resolved = opt->json || opt->resolved;
		if (has_high_byte(r.comm, r.comm_len) || has_high_byte(r.path, r.path_len))
			return EOR_SLOW;
		if (shows_resolved) {
			const unsigned char *raw = tail + path_len;
			size_t raw_len = tail_size - path_len;

			if (!find_resolved(&r, raw, raw_len))
				return EOR_SLOW;
			/* (the path itself was checked above; an empty path's pointer is also
			 * where the resolved part starts: the lengths tell them apart) */
			if (r.resolved && (r.resolved != r.path || r.resolved_len != r.path_len) &&
			    has_high_byte(r.resolved, r.resolved_len))
				return EOR_SLOW;
		}

		char *p = out + cursor->out_len;
		char *end = opt->json ? put_json_line(p, opt, &r) : put_table_row(p, opt, &r);

		cursor->out_len += (uint64_t)(end - p);
		cursor->tail_offset += tail_size;
		cursor->record++;
	}
	return EOR_DONE;
}
