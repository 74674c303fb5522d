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
 *   $ONCEFS_FAILREPLY while this file exists, the next successful reply to
 *                     a CREATE (the reply of a claim) is lost as when the
 *                     kernel has dropped the request: the opener gets
 *                     EINTR, and the daemon's write of the reply fails
 *                     with ENOENT.
 */
#include <dlfcn.h>
#include <linux/fuse.h>
#include <string.h>
#include <sys/uio.h>
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

ssize_t writev(int fd, const struct iovec *iov, int n)
{
	static ssize_t (*real)(int, const struct iovec *, int);
	const char *lose = getenv("ONCEFS_FAILREPLY");
	struct fuse_out_header h;
	size_t total = 0;

	if (!real)
		real = (ssize_t (*)(int, const struct iovec *, int))
			dlsym(RTLD_NEXT, "writev");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	for (int i = 0; i < n; i++)
		total += iov[i].iov_len;
	if (!lose || n < 1 || iov[0].iov_len < sizeof(h) ||
	    total != sizeof(h) + sizeof(struct fuse_entry_out) +
		     sizeof(struct fuse_open_out))
		return real(fd, iov, n);
	memcpy(&h, iov[0].iov_base, sizeof(h));
	if (h.error != 0 || unlink(lose) != 0)
		return real(fd, iov, n);
	h.len = sizeof(h);
	h.error = -EINTR;
	real(fd, &(struct iovec){ .iov_base = &h, .iov_len = sizeof(h) }, 1);
	errno = ENOENT;
	return -1;
}
