"""cffi builder (out-of-line API mode) for echo-open's two extension modules.

``echo_open._libbpf``
    The generic binding to the system libbpf (libbpf1 >= 1.1): objects,
    programs, links, maps, ring buffers, plus two small C shims: libbpf's
    va_list log callback formatted in C and handed to Python, and a ring-buffer
    callback that copies records into caller-owned batch buffers (one Python
    call per batch, never one per record).
``echo_open._layout``
    The structs of ``bpf/echo_open.h``, the header the BPF programs include:
    compiling this module checks every field offset against the C compiler.
``echo_open._render``
    ``csrc/render.c``: the CLI's table rows and JSON lines for a whole batch of
    records, formatted in C (``csrc/render.h`` says what it leaves to Python).

Usage::

    python build.py emit DIR      # write the modules' C sources into DIR (CMake does this)
    python build.py inplace       # compile both into python/echo_open/ (development)
"""

from __future__ import annotations

import pathlib
import re
import sys

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent
BPF_DIR = ROOT / "bpf"
CSRC_DIR = ROOT / "csrc"

# declared once: cffi's cdef and the C source both need it
BATCH_STRUCT = """
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
"""

LIBBPF_CDEF = r"""
struct bpf_object;
struct bpf_program;
struct bpf_map;
struct bpf_link;
struct ring_buffer;
struct ring_buffer_opts;
/* only the fields the loader sets; cffi takes the layout from libbpf.h */
struct bpf_object_open_opts {
    size_t sz;
    const char *object_name;
    ...;
};

typedef int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size);

uint32_t libbpf_major_version(void);
uint32_t libbpf_minor_version(void);
int libbpf_num_possible_cpus(void);
int libbpf_strerror(int err, char *buf, size_t size);
const char *libbpf_version_string(void);

/* kernel feature probes (echo-open doctor): 1 supported, 0 not, <0 -errno */
int libbpf_probe_bpf_prog_type(int prog_type, const void *opts);
int libbpf_probe_bpf_map_type(int map_type, const void *opts);
int libbpf_probe_bpf_helper(int prog_type, int helper_id, const void *opts);
static const int BPF_PROG_TYPE_TRACEPOINT;
static const int BPF_PROG_TYPE_TRACING;
static const int BPF_MAP_TYPE_RINGBUF;
static const int BPF_MAP_TYPE_TASK_STORAGE;
static const int BPF_MAP_TYPE_PROG_ARRAY;
static const int BPF_FUNC_loop;
static const int BPF_FUNC_task_storage_get;

struct bpf_object *bpf_object__open_file(const char *path, const struct bpf_object_open_opts *opts);
struct bpf_object *bpf_object__open_mem(const void *obj_buf, size_t obj_buf_sz,
                                        const struct bpf_object_open_opts *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
const char *bpf_object__name(const struct bpf_object *obj);
struct bpf_program *bpf_object__next_program(const struct bpf_object *obj,
                                             struct bpf_program *prog);
struct bpf_map *bpf_object__next_map(const struct bpf_object *obj, const struct bpf_map *map);
struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj, const char *name);

const char *bpf_program__name(const struct bpf_program *prog);
const char *bpf_program__section_name(const struct bpf_program *prog);
bool bpf_program__autoload(const struct bpf_program *prog);
int bpf_program__set_autoload(struct bpf_program *prog, bool autoload);
int bpf_program__fd(const struct bpf_program *prog);
struct bpf_link *bpf_program__attach(const struct bpf_program *prog);
int bpf_link__fd(const struct bpf_link *link);
int bpf_link__destroy(struct bpf_link *link);

const char *bpf_map__name(const struct bpf_map *map);
int bpf_map__type(const struct bpf_map *map);
int bpf_map__fd(const struct bpf_map *map);
uint32_t bpf_map__key_size(const struct bpf_map *map);
uint32_t bpf_map__value_size(const struct bpf_map *map);
uint32_t bpf_map__max_entries(const struct bpf_map *map);
int bpf_map__set_max_entries(struct bpf_map *map, uint32_t max_entries);
const void *bpf_map__initial_value(struct bpf_map *map, size_t *psize);
int bpf_map__set_initial_value(struct bpf_map *map, const void *data, size_t size);

int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);

struct ring_buffer *ring_buffer__new(int map_fd, ring_buffer_sample_fn sample_cb, void *ctx,
                                     const struct ring_buffer_opts *opts);
int ring_buffer__add(struct ring_buffer *rb, int map_fd, ring_buffer_sample_fn sample_cb,
                     void *ctx);
void ring_buffer__free(struct ring_buffer *rb);
int ring_buffer__poll(struct ring_buffer *rb, int timeout_ms);
int ring_buffer__consume(struct ring_buffer *rb);
int ring_buffer__epoll_fd(const struct ring_buffer *rb);

/* ---- shims (set_source below) ---- */

/* libbpf's log lines, formatted in C, go to this Python function */
extern "Python" void ldr_log(int level, const char *message);
void ldr_set_print(bool to_python);

/*
 * Batch collection: each record's first head_size bytes go to heads (fixed
 * stride, zero-padded), the rest to tails (concatenated, sizes in tail_sizes).
 * The callback ends libbpf's loop (returns -ENOSPC) once the batch is full.
 */
""" + BATCH_STRUCT + r"""int ldr_batch_collect(void *ctx, void *data, size_t size);
"""

LIBBPF_SOURCE = r"""
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

static void ldr_log(int level, const char *message);

static int ldr_print_to_python(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    char line[1024];
    va_list again;
    int n;

    va_copy(again, ap);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    if (n >= 0 && (size_t)n < sizeof(line)) {
        ldr_log((int)level, line);
    } else if (n >= 0) {
        /* verifier logs arrive as one huge %s: size the buffer from the first try */
        char *big = malloc((size_t)n + 1);
        if (big) {
            vsnprintf(big, (size_t)n + 1, fmt, again);
            ldr_log((int)level, big);
            free(big);
        }
    }
    va_end(again);
    return 0;
}

static int ldr_print_nothing(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    (void)level; (void)fmt; (void)ap;
    return 0;
}

void ldr_set_print(bool to_python)
{
    libbpf_set_print(to_python ? ldr_print_to_python : ldr_print_nothing);
}

""" + BATCH_STRUCT + r"""
int ldr_batch_collect(void *ctx, void *data, size_t size)
{
    struct ldr_batch *b = ctx;
    char *head = b->heads + b->count * b->head_size;
    size_t tail = 0;

    if (size >= b->head_size) {
        memcpy(head, data, b->head_size);
        tail = size - b->head_size;
        if (tail > b->tail_capacity - b->tail_used) {
            tail = b->tail_capacity - b->tail_used;
            b->oversized++;
        }
        memcpy(b->tails + b->tail_used, (char *)data + b->head_size, tail);
    } else {
        memcpy(head, data, size);
        memset(head + size, 0, b->head_size - size);
    }
    b->tail_sizes[b->count] = (uint32_t)tail;
    b->tail_used += tail;
    b->count++;
    /* this record is consumed either way; stop before one might not fit */
    if (b->count >= b->max_records || b->tail_capacity - b->tail_used < b->max_tail)
        return -ENOSPC;
    return 0;
}
"""

_TYPEDEFS = """
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;
typedef int32_t __s32;
typedef int64_t __s64;
"""


def header_cdef(path: pathlib.Path) -> str:
    """The header as cffi's cdef reads it: no include guard, defines expanded."""
    text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
    defines: dict[str, str] = {}
    body = []
    for line in text.splitlines():
        match = re.match(r"\s*#\s*define\s+(\w+)\s+(\S.*)$", line)
        if match:
            defines[match.group(1)] = match.group(2).strip()
            body.append(line)
        elif not line.lstrip().startswith("#"):
            body.append(line)
    cdef = "\n".join(body)

    # cffi cannot size arrays by a #define: substitute the numbers
    def expand(match: re.Match) -> str:
        return "[" + str(eval(match.group(1), {}, {k: int(v, 0) for k, v in defines.items()})) + "]"

    cdef = re.sub(r"\[([^\]]+)\]", expand, cdef)
    return _TYPEDEFS + cdef


# the stable ABI of CPython 3.10, as CMake's USE_SABI 3.10 builds the wheel's modules
# (cffi's C would otherwise define Py_LIMITED_API unversioned): one build for 3.10 and later
LIMITED_API = {"define_macros": [("Py_LIMITED_API", "0x030A0000")], "py_limited_api": True}


def libbpf_builder() -> FFI:
    ffi = FFI()
    ffi.cdef(LIBBPF_CDEF)
    ffi.set_source("echo_open._libbpf", LIBBPF_SOURCE, libraries=["bpf"],
                   extra_compile_args=["-O2"], **LIMITED_API)
    return ffi


def layout_builder() -> FFI:
    ffi = FFI()
    ffi.cdef(header_cdef(BPF_DIR / "echo_open.h"))
    ffi.set_source("echo_open._layout", '#include <linux/types.h>\n#include "echo_open.h"\n',
                   include_dirs=[str(BPF_DIR)], **LIMITED_API)
    return ffi


def render_builder() -> FFI:
    ffi = FFI()
    ffi.cdef(header_cdef(CSRC_DIR / "render.h"))
    # one translation unit: the module's source includes the formatter's
    ffi.set_source("echo_open._render", '#include "render.c"\n',
                   include_dirs=[str(CSRC_DIR), str(BPF_DIR)], extra_compile_args=["-O2"],
                   **LIMITED_API)
    return ffi


BUILDERS = {"_libbpf": libbpf_builder, "_layout": layout_builder, "_render": render_builder}


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "emit":
        out = pathlib.Path(argv[1])
        out.mkdir(parents=True, exist_ok=True)
        for name, make in BUILDERS.items():
            make().emit_c_code(str(out / f"{name}.c"))
        return 0
    if argv == ["inplace"]:
        for make in BUILDERS.values():
            make().compile(tmpdir=str(ROOT / "python"), verbose=False)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
