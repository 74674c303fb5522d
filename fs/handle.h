/*
 * handle.h - an open file of the mount, as FUSE sees it: the domain's open
 * file (core/file.h: buffers, checks, commits) and what the adapter keeps
 * beside it (its inode, the lists of open and of renewing handles).
 */
#ifndef ONCE_HANDLE_H
#define ONCE_HANDLE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "fs.h"
#include "../core/file.h"

struct handle {
	struct file f;		/* what it is to the domain (core/file.h) */
	uint64_t ino;
	bool renews;		/* on fs->renewing */
	struct stat claim_attr;	/* FILE_KEY claimed: the key's attributes
				 * as the claiming open saw them */
	struct handle *next_renewing;
	struct handle *prev_open, *next_open;	/* fs->open */
};

struct handle *handle_new(enum file_kind kind, uint64_t ino, int64_t wf,
			  int flags);
void handle_free(struct handle *h);

/*
 * The attributes of generation `generation` as the open that claimed it
 * saw them, while that open's handle lives in this mount.  false if none.
 */
bool handle_claim_attr(struct fs *fs, int64_t generation, struct stat *out);

/*
 * An open file's handle: track it from the open's reply, close it at
 * RELEASE (dropping it from renewals too, and freeing it).  Handles whose
 * RELEASE never came (the kernel may unmount with some still queued) are
 * closed by handle_close_all() at exit.
 */
void handle_track(struct fs *fs, struct handle *h);
void handle_close(struct fs *fs, struct handle *h);
void handle_close_all(struct fs *fs);

/*
 * The writer of a new checkpoint (inode ino, INO_KIND_PENDING) while its
 * file is open: its workflow, its id (0 until its first commit) and the
 * size of its copy.  false if no open file has that inode.
 */
bool handle_pending(struct fs *fs, uint64_t ino, int64_t *wf, int64_t *id,
		    int64_t *size);

/*
 * The size of the copy of a checkpoint writer of inode ino opened by
 * process tgid, so that a writer's stat() shows what it wrote.  false if
 * that process has no writer of it open.
 */
bool handle_writer_size(struct fs *fs, uint64_t ino, pid_t tgid,
			int64_t *size);

/* Does any open file write inode ino? */
bool handle_written(struct fs *fs, uint64_t ino);

/*
 * The generations of the claims whose open files renew them, for the
 * renewer (background_claims_fn; arg is the struct fs).
 */
size_t handle_renewing(void *arg, int64_t **gens, size_t *cap);

/* Register or drop a handle whose claim renews itself. */
void handle_renew_add(struct fs *fs, struct handle *h);
void handle_renew_remove(struct fs *fs, struct handle *h);

#endif
