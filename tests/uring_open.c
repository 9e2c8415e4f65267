/*
 * A child for the io_uring tests: opens one file through io_uring only, so the
 * open never passes through the open syscalls.
 *
 *   uring_open MODE DIR PATH
 *     MODE  openat      IORING_OP_OPENAT relative to a dirfd on DIR
 *           openat2     IORING_OP_OPENAT2 with how.resolve = RESOLVE_BENEATH
 *           fixed       IORING_OP_OPENAT into fixed-file slot 3 (direct descriptor)
 *           fixed-alloc IORING_OP_OPENAT into a slot the kernel picks
 *
 * Prints "ready PID", waits for a line on stdin (so the tracer knows the pid
 * first), submits the open, and prints one JSON line:
 *   {"pid": P, "dirfd": D, "res": R}   (R: fd, slot, or -errno)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIXED_SLOTS 8
#define FIXED_SLOT 3

static int fail(const char *what, int err)
{
	fprintf(stderr, "uring_open: %s: %s\n", what, strerror(err));
	return 1;
}

/* Prepare the one open MODE asks for; returns 0, or -EINVAL for an unknown MODE. */
static int prep_open(struct io_uring_sqe *sqe, const char *mode, int dirfd, const char *path,
		     struct open_how *how)
{
	if (!strcmp(mode, "openat")) {
		io_uring_prep_openat(sqe, dirfd, path, O_RDONLY, 0);
	} else if (!strcmp(mode, "openat2")) {
		how->flags = O_RDONLY;
		how->resolve = RESOLVE_BENEATH;
		io_uring_prep_openat2(sqe, dirfd, path, how);
	} else if (!strcmp(mode, "fixed")) {
		io_uring_prep_openat(sqe, dirfd, path, O_RDONLY, 0);
		sqe->file_index = FIXED_SLOT + 1;  /* the kernel's encoding: slot + 1 */
	} else if (!strcmp(mode, "fixed-alloc")) {
		/* set by hand: liburing 2.3's prep_openat_direct adds 1 to it, making 0 */
		io_uring_prep_openat(sqe, dirfd, path, O_RDONLY, 0);
		sqe->file_index = IORING_FILE_INDEX_ALLOC;
	} else {
		return -EINVAL;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct open_how how;
	struct io_uring ring;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	char line[16];
	int dirfd, ret, res;

	if (argc != 4) {
		fprintf(stderr, "usage: uring_open openat|openat2|fixed|fixed-alloc DIR PATH\n");
		return 2;
	}
	dirfd = open(argv[2], O_PATH | O_DIRECTORY);
	if (dirfd < 0)
		return fail(argv[2], errno);
	ret = io_uring_queue_init(4, &ring, 0);
	if (ret < 0)
		return fail("io_uring_queue_init", -ret);
	ret = io_uring_register_files_sparse(&ring, FIXED_SLOTS);
	if (ret < 0)
		return fail("io_uring_register_files_sparse", -ret);

	printf("ready %d\n", getpid());
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 0;

	memset(&how, 0, sizeof(how));
	sqe = io_uring_get_sqe(&ring);
	if (!sqe || prep_open(sqe, argv[1], dirfd, argv[3], &how))
		return fail(argv[1], EINVAL);
	ret = io_uring_submit(&ring);
	if (ret < 0)
		return fail("io_uring_submit", -ret);
	ret = io_uring_wait_cqe(&ring, &cqe);
	if (ret < 0)
		return fail("io_uring_wait_cqe", -ret);
	res = cqe->res;
	io_uring_cqe_seen(&ring, cqe);

	printf("{\"pid\": %d, \"dirfd\": %d, \"res\": %d}\n", getpid(), dirfd, res);
	fflush(stdout);
	io_uring_queue_exit(&ring);
	return 0;
}
