// SPDX-License-Identifier: BSD-2-Clause
/*
 * storm: an openat+close load generator for benchmarking open tracers.
 *
 *   storm [--mode hit|miss|long|mix] [--threads N] [--seconds S | --count N]
 *         [--rate OPENS_PER_S] [--dir BASE]
 *
 * Every open it makes names a path under a fresh BASE/eo-storm-XXXXXX
 * directory, so a tracer's output lines for the storm are exactly the lines
 * containing that directory. The tree is built and removed with mkdir, mknod,
 * unlink and rmdir only: no open() besides the measured ones carries the marker.
 *
 * Prints one JSON line: opens made, seconds, the storm's own user+system CPU
 * (getrusage RUSAGE_SELF over the open loop only), the marker, and the mean
 * length of the paths opened.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define N_FILES 64              /* distinct paths per kind: keeps the dcache warm */
#define LONG_TARGET 3500        /* bytes in a `long` path */
#define LONG_SEGMENT 200        /* bytes per directory name in the deep tree */
#define PACE_EVERY 8            /* rate-limited threads check the clock this often */
#define MAX_PATHS (3 * N_FILES)

enum mode { MODE_HIT, MODE_MISS, MODE_LONG, MODE_MIX };

struct options {
	enum mode mode;
	int threads;
	double seconds;
	long long count;        /* > 0: exactly this many opens in total */
	double rate;            /* > 0: opens per second, all threads together */
	const char *base;
};

/* The paths one run opens, in the order each thread cycles through them. */
struct path_set {
	char *paths[MAX_PATHS];
	int n;
	int expect_fail[MAX_PATHS];
};

struct shared {
	const struct path_set *set;
	const struct options *opt;
	atomic_llong claimed;   /* count mode: opens handed out so far */
	atomic_int stop;        /* duration mode: set by the main thread */
	atomic_llong unexpected;
	struct timespec start;
};

struct worker {
	struct shared *sh;
	int index;
	long long opens;
};

/* Directories and files created, in creation order, to undo at exit. */
static char *created[4096];
static int created_dirs[4096];
static int n_created;

static double elapsed_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t0->tv_sec) + (now.tv_nsec - t0->tv_nsec) / 1e9;
}

static void die(const char *what, const char *path)
{
	fprintf(stderr, "storm: %s %s: %s\n", what, path ? path : "", strerror(errno));
	exit(1);
}

static void remember(const char *path, int is_dir)
{
	if (n_created >= (int)(sizeof(created) / sizeof(created[0])))
		return;
	created[n_created] = strdup(path);
	created_dirs[n_created++] = is_dir;
}

static void make_dir(const char *path)
{
	if (mkdir(path, 0755))
		die("mkdir", path);
	remember(path, 1);
}

/* mknod, not open(O_CREAT): the setup must not show up as opens of the marker */
static void make_file(const char *path)
{
	if (mknod(path, S_IFREG | 0644, 0))
		die("mknod", path);
	remember(path, 0);
}

static void remove_tree(void)
{
	for (int i = n_created - 1; i >= 0; i--) {
		if (created_dirs[i])
			rmdir(created[i]);
		else
			unlink(created[i]);
		free(created[i]);
	}
	n_created = 0;
}

static char *join(const char *dir, const char *name)
{
	char *out;

	if (asprintf(&out, "%s/%s", dir, name) < 0)
		die("asprintf", NULL);
	return out;
}

static void add_path(struct path_set *set, char *path, int expect_fail)
{
	set->paths[set->n] = path;
	set->expect_fail[set->n++] = expect_fail;
}

static void add_hit_paths(struct path_set *set, const char *root)
{
	char *dir = join(root, "hit"), name[32];

	make_dir(dir);
	for (int i = 0; i < N_FILES; i++) {
		snprintf(name, sizeof(name), "file-%02d", i);
		char *path = join(dir, name);

		make_file(path);
		add_path(set, path, 0);
	}
	free(dir);
}

static void add_miss_paths(struct path_set *set, const char *root)
{
	char *dir = join(root, "miss"), name[32];

	make_dir(dir);
	for (int i = 0; i < N_FILES; i++) {
		snprintf(name, sizeof(name), "none-%02d", i);
		add_path(set, join(dir, name), 1);
	}
	free(dir);
}

/* A deep tree of LONG_SEGMENT-byte directory names; leaves padded so every path is the same size. */
static void add_long_paths(struct path_set *set, const char *root)
{
	char segment[LONG_SEGMENT + 1], *dir = join(root, "long"), *next, name[256];
	size_t leaf_len;

	make_dir(dir);
	memset(segment, 'd', LONG_SEGMENT);
	segment[LONG_SEGMENT] = 0;
	while (strlen(dir) + 1 + LONG_SEGMENT + 1 + 16 <= LONG_TARGET) {
		next = join(dir, segment);
		make_dir(next);
		free(dir);
		dir = next;
	}
	leaf_len = LONG_TARGET - strlen(dir) - 1;
	if (leaf_len < 8 || leaf_len > 250)
		die("long path arithmetic", dir);
	for (int i = 0; i < N_FILES; i++) {
		snprintf(name, sizeof(name), "%02d", i);
		memset(name + 2, 'f', leaf_len - 2);
		name[leaf_len] = 0;
		char *path = join(dir, name);

		make_file(path);
		add_path(set, path, 0);
	}
	free(dir);
}

static void build_paths(struct path_set *set, enum mode mode, const char *root)
{
	if (mode == MODE_HIT || mode == MODE_MIX)
		add_hit_paths(set, root);
	if (mode == MODE_MISS || mode == MODE_MIX)
		add_miss_paths(set, root);
	if (mode == MODE_LONG || mode == MODE_MIX)
		add_long_paths(set, root);
}

/* count mode: claim the next open, or -1 when all are handed out */
static int claim_one(struct shared *sh)
{
	if (sh->opt->count > 0)
		return atomic_fetch_add_explicit(&sh->claimed, 1, memory_order_relaxed) <
		       sh->opt->count ? 0 : -1;
	return atomic_load_explicit(&sh->stop, memory_order_relaxed) ? -1 : 0;
}

/* Sleep until this thread's share of the rate allows `done` opens. */
static void pace(const struct shared *sh, double per_thread_rate, long long done)
{
	double due = done / per_thread_rate, now = elapsed_since(&sh->start);
	struct timespec until;
	double at;

	if (due <= now)
		return;
	at = sh->start.tv_sec + sh->start.tv_nsec / 1e9 + due;
	until.tv_sec = (time_t)at;
	until.tv_nsec = (long)((at - until.tv_sec) * 1e9);
	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL);
}

static void *run_worker(void *arg)
{
	struct worker *w = arg;
	struct shared *sh = w->sh;
	const struct path_set *set = sh->set;
	double rate = sh->opt->rate > 0 ? sh->opt->rate / sh->opt->threads : 0;
	long long unexpected = 0;
	int i = (w->index * 7) % set->n;   /* threads start at different paths */

	while (claim_one(sh) == 0) {
		int fd = syscall(SYS_openat, AT_FDCWD, set->paths[i], O_RDONLY | O_CLOEXEC);

		if (fd >= 0)
			close(fd);
		if ((fd < 0) != set->expect_fail[i])
			unexpected++;
		w->opens++;
		if (++i == set->n)
			i = 0;
		if (rate > 0 && w->opens % PACE_EVERY == 0)
			pace(sh, rate, w->opens);
	}
	atomic_fetch_add(&sh->unexpected, unexpected);
	return NULL;
}

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static enum mode parse_mode(const char *s)
{
	static const char *names[] = {"hit", "miss", "long", "mix"};

	for (int i = 0; i < 4; i++)
		if (!strcmp(s, names[i]))
			return (enum mode)i;
	fprintf(stderr, "storm: unknown mode %s (hit, miss, long, mix)\n", s);
	exit(2);
}

static void usage(void)
{
	fprintf(stderr, "usage: storm [--mode hit|miss|long|mix] [--threads N] "
		"[--seconds S | --count N] [--rate OPENS_PER_S] [--dir BASE]\n");
	exit(2);
}

static struct options parse_options(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"mode", required_argument, NULL, 'm'},
		{"threads", required_argument, NULL, 't'},
		{"seconds", required_argument, NULL, 's'},
		{"count", required_argument, NULL, 'c'},
		{"rate", required_argument, NULL, 'r'},
		{"dir", required_argument, NULL, 'd'},
		{NULL, 0, NULL, 0},
	};
	struct options opt = {MODE_MISS, 1, 3.0, 0, 0, "/tmp"};
	int c;

	while ((c = getopt_long(argc, argv, "m:t:s:c:r:d:", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': opt.mode = parse_mode(optarg); break;
		case 't': opt.threads = atoi(optarg); break;
		case 's': opt.seconds = atof(optarg); break;
		case 'c': opt.count = atoll(optarg); break;
		case 'r': opt.rate = atof(optarg); break;
		case 'd': opt.base = optarg; break;
		default: usage();
		}
	}
	if (optind != argc || opt.threads < 1 || opt.threads > 256 ||
	    (opt.count <= 0 && opt.seconds <= 0) || opt.rate < 0)
		usage();
	return opt;
}

static double mean_path_len(const struct path_set *set)
{
	double total = 0;

	for (int i = 0; i < set->n; i++)
		total += strlen(set->paths[i]);
	return total / set->n;
}

/* Start the workers, let them run their count or duration, and join them. */
static long long run_storm(struct shared *sh, struct worker *workers, pthread_t *tids)
{
	long long total = 0;

	clock_gettime(CLOCK_MONOTONIC, &sh->start);
	for (int i = 0; i < sh->opt->threads; i++) {
		workers[i] = (struct worker){.sh = sh, .index = i};
		if (pthread_create(&tids[i], NULL, run_worker, &workers[i]))
			die("pthread_create", NULL);
	}
	if (sh->opt->count <= 0) {
		struct timespec d = {(time_t)sh->opt->seconds,
				     (long)((sh->opt->seconds - (time_t)sh->opt->seconds) * 1e9)};

		while (clock_nanosleep(CLOCK_MONOTONIC, 0, &d, &d) == EINTR)
			;
		atomic_store(&sh->stop, 1);
	}
	for (int i = 0; i < sh->opt->threads; i++) {
		pthread_join(tids[i], NULL);
		total += workers[i].opens;
	}
	return total;
}

int main(int argc, char **argv)
{
	static const char *mode_names[] = {"hit", "miss", "long", "mix"};
	struct options opt = parse_options(argc, argv);
	struct path_set set = {0};
	struct shared sh = {.set = &set, .opt = &opt};
	struct worker *workers = calloc(opt.threads, sizeof(*workers));
	pthread_t *tids = calloc(opt.threads, sizeof(*tids));
	char *root = join(opt.base, "eo-storm-XXXXXX");
	double cpu0, cpu1, seconds;
	long long opens;

	if (!workers || !tids)
		die("calloc", NULL);
	if (!mkdtemp(root))
		die("mkdtemp", root);
	remember(root, 1);
	build_paths(&set, opt.mode, root);

	cpu0 = cpu_seconds();
	opens = run_storm(&sh, workers, tids);
	seconds = elapsed_since(&sh.start);
	cpu1 = cpu_seconds();

	printf("{\"mode\":\"%s\",\"threads\":%d,\"opens\":%lld,\"seconds\":%.6f,"
	       "\"opens_per_s\":%.1f,\"cpu_s\":%.6f,\"unexpected\":%lld,"
	       "\"marker\":\"%s\",\"path_len\":%.1f,\"rate_limit\":%.1f}\n",
	       mode_names[opt.mode], opt.threads, opens, seconds, opens / seconds,
	       cpu1 - cpu0, (long long)atomic_load(&sh.unexpected), root,
	       mean_path_len(&set), opt.rate);
	fflush(stdout);
	remove_tree();
	for (int i = 0; i < set.n; i++)
		free(set.paths[i]);
	free(root);
	free(workers);
	free(tids);
	return 0;
}
