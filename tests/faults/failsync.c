/*
 * failsync.c - an LD_PRELOAD shim over fdatasync(), for the tests.
 *
 *   $ONCEFS_FAILSYNC  while this file exists, the next fdatasync() removes
 *                     it and fails with EIO, the way a writeback error
 *                     reaches a process once; later calls are real and
 *                     succeed.  oncefs must not take that for durability.
 *   $ONCEFS_SLOWSYNC  while this file exists, the next fdatasync() removes
 *                     it, sleeps a second and a half, syncs, and creates
 *                     "$ONCEFS_SLOWSYNC.done": a window in which a commit
 *                     is written but not yet durable.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int fdatasync(int fd)
{
	static int (*real)(int);
	const char *fail = getenv("ONCEFS_FAILSYNC");
	const char *slow = getenv("ONCEFS_SLOWSYNC");
	char done[4096];
	int rc, d;

	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	if (fail && unlink(fail) == 0) {
		errno = EIO;
		return -1;
	}
	if (!slow || unlink(slow) != 0)
		return real(fd);
	nanosleep(&(struct timespec){ .tv_sec = 1, .tv_nsec = 500000000 }, NULL);
	rc = real(fd);
	snprintf(done, sizeof(done), "%s.done", slow);
	d = open(done, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (d >= 0)
		close(d);
	return rc;
}
