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
	pthread_cond_t renew_cond;
	struct handle *renewing;
	struct handle *open;		/* every open handle, freed at exit */
	bool stopping;
	int64_t sweep_interval_ms;	/* 0: no background sweep */
	int64_t next_sweep_ms;
	bool sweep_pending;		/* the last slice left work */
	pthread_t renewer;
	bool renewer_started;
};

extern const struct fuse_lowlevel_ops fs_ops;

/* Start and stop the thread that renews the leases of open claims. */
int fs_renewer_start(struct fs *fs);
void fs_renewer_stop(struct fs *fs);

#endif
