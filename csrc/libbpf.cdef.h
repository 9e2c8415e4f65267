/*
 * The part of libbpf echo_open._libbpf binds: declarations for cffi's cdef only
 * (build.py reads this file; no compiler does). cffi checks each against
 * <bpf/libbpf.h> and <bpf/bpf.h> when it compiles the module, and takes the
 * layouts of the structs marked "..." from there.
 */
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
static const int BPF_MAP_TYPE_PERCPU_HASH;
static const int BPF_MAP_TYPE_PERCPU_ARRAY;
static const int BPF_MAP_TYPE_LRU_PERCPU_HASH;
static const int BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
static const int BPF_MAP_TYPE_TASK_STORAGE;
static const int BPF_MAP_TYPE_PROG_ARRAY;
static const int BPF_FUNC_loop;
static const int BPF_FUNC_task_storage_get;

struct bpf_object *bpf_object__open_file(const char *path, const struct bpf_object_open_opts *opts);
struct bpf_object *bpf_object__open_mem(const void *obj_buf, size_t obj_buf_sz,
                                        const struct bpf_object_open_opts *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
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
int ring_buffer__consume(struct ring_buffer *rb);

/* libbpf's log lines, formatted in C (loader_shim.c), go to this Python function */
extern "Python" void ldr_log(int level, const char *message);
