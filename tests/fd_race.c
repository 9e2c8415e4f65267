/*
 * The fd close/reuse race, provoked for test_reliability.py:
 *     fd_race PATH_A PATH_B OPENS THREADED
 * After a "go" line on stdin, the main thread opens PATH_A and closes it OPENS times;
 * with THREADED=1 a second thread on the same fd table dup2()s a file of PATH_B onto the
 * number those opens get and closes it, as fast as it can: now and then it lands between
 * the open installing its fd and the tracer's sys_exit program reading that slot. With
 * THREADED=2 the second thread shares the table but changes no fd (it calls getppid).
 */
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char *path_a;
static volatile int done, started;
static int fd_b;

static void *idler(void *arg)
{
	(void)arg;
	started = 1;
	while (!done)
		getppid();
	return NULL;
}

static void *replacer(void *arg)
{
	(void)arg;
	started = 1;
	while (!done) {
		dup2(fd_b, fd_b + 1);
		close(fd_b + 1);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t thread;
	long opens = argc > 3 ? atol(argv[3]) : 20000;
	char go[8];
	int threaded = argc > 4 ? atoi(argv[4]) : 1;

	path_a = argv[1];
	fd_b = open(argv[2], O_RDONLY);
	if (fd_b < 0)
		return 1;
	if (!fgets(go, sizeof(go), stdin))   /* the tracer is ready */
		return 1;
	if (threaded)
		pthread_create(&thread, NULL, threaded == 2 ? idler : replacer, NULL);
	while (threaded && !started)   /* the opens overlap a running second thread */
		sched_yield();
	for (long i = 0; i < opens; i++) {
		int fd = open(path_a, O_RDONLY);
		if (fd >= 0)
			close(fd);
	}
	done = 1;
	if (threaded)
		pthread_join(thread, NULL);
	return 0;
}
