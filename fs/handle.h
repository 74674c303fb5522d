/*
 * handle.h - an open file of the mount.
 *
 * A handle holds what its reader sees (a small snapshot taken at open,
 * then a pinned content version read on demand) and what its writer has
 * written since the last commit (the buffer).  Writes are
 * checked as they arrive and land in the buffer; the buffer is committed
 * at the first flush or fsync after new data (dirty), never at release.
 */
#ifndef ONCE_HANDLE_H
#define ONCE_HANDLE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "fs.h"
#include "../core/holder.h"
#include "../core/name.h"

enum handle_kind {
	HANDLE_KEY,
	HANDLE_POLICY,
	HANDLE_FINGERPRINT,
	HANDLE_EVENTS,
	HANDLE_STATS,
	HANDLE_STEP,
	HANDLE_WAIT,	/* wait/K while the claim is in flight; a HANDLE_KEY
			 * reader once it ended terminal */
};

struct step_writer;
struct store;

struct handle {
	enum handle_kind kind;
	uint64_t ino;
	int64_t wf;
	int64_t generation;	/* HANDLE_KEY */
	int field;		/* HANDLE_POLICY: enum policy_field */
	bool writable;
	bool append;
	bool renews;		/* on fs->renewing */
	bool truncated;		/* HANDLE_STEP opened with O_TRUNC, not yet committed */
	bool create_at_flush;	/* a new checkpoint opened without O_TRUNC
				 * (touch, >>): its first flush creates it */
	int poison;		/* a write was refused half way: commit nothing */
	char name[NAME_MAX_LEN + 1];	/* HANDLE_KEY: the key's name */
	size_t name_len;
	bool claimed;		/* HANDLE_KEY: this open made the claim */
	bool settled;		/* HANDLE_KEY: a finalize or detach committed
				 * through it: its close abandons nothing */
	bool fate_known;	/* HANDLE_KEY: its holder was exiting at a flush */
	struct holder_fate fate;	/* ... and how (read then: once the
					 * holder is reaped, /proc says nothing) */
	pid_t opener;		/* the process (thread group) that opened it */
	uid_t opener_uid;	/* HANDLE_KEY claimed: the claimant's uid */
	struct stat claim_attr;	/* ... and the key's attributes then */
	struct step_writer *writer;	/* HANDLE_STEP opened for writing */
	int64_t input_hold;	/* HANDLE_FINGERPRINT: the hold of the value
				 * it set (step_set_fingerprint), until RELEASE */
	/*
	 * What a reader sees after snap: a content version (a checkpoint's
	 * content, a key's result), pinned in `pinned` until the handle is
	 * freed.  The handle holds no copy of it, no fd and no connection.
	 */
	struct store *pinned;
	int64_t content;
	int64_t content_size;

	pthread_mutex_t lock;
	bool dirty;		/* written since the last commit */
	char *buf;		/* what was written */
	size_t len, cap;
	size_t undo_len;	/* h->len before the last put */
	size_t undo_at;		/* where the last put wrote */
	char *undo;		/* the bytes it overwrote */
	size_t undo_size;
	char *snap;		/* what a reader sees */
	size_t snap_len;

	struct handle *next_renewing;
	struct handle *prev_open, *next_open;	/* fs->open */
};

struct handle *handle_new(enum handle_kind kind, uint64_t ino, int64_t wf,
			  int flags);
void handle_free(struct handle *h);

/*
 * Place size bytes at off in the buffer (at its end for O_APPEND), growing
 * it up to max.  Remembers what it replaced, so that a write the checks
 * refuse can be taken back with handle_undo().  -EFBIG past max, -EINVAL
 * for a write that would leave a hole, -ENOMEM.
 */
int handle_put(struct handle *h, const char *data, size_t size, int64_t off,
	       size_t max);
/* Take back the last handle_put(). */
void handle_undo(struct handle *h);

/* Take ownership of a malloc'd snapshot. */
void handle_set_snapshot(struct handle *h, char *snap, size_t len);

/* Take over a pin of content (size bytes) in st: released when h is freed. */
void handle_set_content(struct handle *h, struct store *st, int64_t content,
			int64_t size);

/*
 * What a reader of h reads at off: the snapshot, then the content.
 * Up to size bytes into buf; *got gets the count.
 */
int handle_read(struct handle *h, int64_t off, char *buf, size_t size,
		size_t *got);

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
