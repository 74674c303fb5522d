/*
 * fs.h - the FUSE adapter: maps low-level FUSE requests onto core.
 *
 * Inodes are computed, not remembered: an inode number encodes what it
 * names (fs/inode.h), so lookups need no table and forget has nothing to
 * drop.  Cache timeouts are zero for everything that can change behind
 * the kernel's back (workflows, keys, checkpoints); only the fixed
 * entries inside a workflow are cached.
 */
#ifndef ONCE_FS_H
#define ONCE_FS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>

#include "../core/file.h"
#include "../core/once.h"

struct handle;

struct fs {
	struct once core;
	struct fuse_session *se;
	uid_t owner_uid;	/* the mounting user owns the root */
	gid_t owner_gid;
	int64_t mount_time_ns;
	uint64_t next_pending;	/* INO_KIND_PENDING numbers (atomic) */

	/* Open handles whose claim's lease renews itself (handle.c). */
	pthread_mutex_t renew_lock;

	struct handle *renewing;
	struct handle *open;		/* every open handle, freed at exit */
	struct background *background;	/* renewal, purge, sweep, waking */
	struct waits *waits;		/* parked reads of wait/K */
	struct file_ended ended;	/* for waiters (file_wait_ended) */
	uint64_t requests[MR_KINDS];	/* answered, by kind (atomic) */
};

extern const struct fuse_lowlevel_ops fs_ops;

/* The parked reads of wait/K (ops.c): set up, and answer all (EINTR). */
int fs_waits_new(struct fs *fs);
void fs_waits_free(struct fs *fs);


#endif
