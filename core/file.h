/*
 * file.h - an open file of the mount, as the domain sees it: what its
 * reader sees, what its writer has written, and when that takes effect.
 *
 * A reader sees a small snapshot taken at open (a status line, a value),
 * then a pinned content version read on demand: the file holds no copy
 * of it, no fd and no connection.  A writer's bytes are checked as they
 * arrive (file_write: every check that can be made then is made then, so
 * that even bash's echo, which ignores close(), reports a bad value) and
 * land in a buffer, committed at the first flush or fsync after new data
 * (file_commit), never at release, with two exceptions file_release()
 * names.  A write refused half way poisons the file: it commits nothing.
 *
 * The FUSE adapter (fs/handle.c) wraps each in a handle of its own and
 * calls these functions, one a request; nothing here knows of FUSE.
 */
#ifndef ONCE_FILE_H
#define ONCE_FILE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "holder.h"
#include "key.h"
#include "name.h"
#include "once.h"

enum file_kind {
	FILE_KEY,
	FILE_POLICY,
	FILE_FINGERPRINT,
	FILE_EVENTS,
	FILE_STATS,
	FILE_STEP,
	FILE_WAIT,	/* wait/K while the claim is in flight; a FILE_KEY
			 * reader once it ended terminal */
};

struct step_writer;

struct file {
	enum file_kind kind;
	int64_t wf;
	int64_t generation;	/* FILE_KEY */
	int field;		/* FILE_POLICY: enum policy_field */
	bool writable;
	bool append;
	bool truncate_on_open;	/* opened with O_TRUNC */
	bool truncated;		/* FILE_STEP opened with O_TRUNC, not yet committed */
	bool create_at_flush;	/* a new checkpoint opened without O_TRUNC
				 * (touch, >>): its first flush creates it */
	int poison;		/* a write was refused half way: commit nothing */
	char name[NAME_MAX_LEN + 1];	/* FILE_KEY: the key's name */
	size_t name_len;
	bool claimed;		/* FILE_KEY: this open made the claim */
	bool settled;		/* FILE_KEY: a finalize or detach committed
				 * through it: its close abandons nothing */
	bool fate_known;	/* FILE_KEY: its holder was exiting at a flush */
	struct holder_fate fate;	/* ... and how (read then: once the
					 * holder is reaped, /proc says nothing) */
	pid_t opener;		/* the process (thread group) that opened it */
	uid_t opener_uid;	/* FILE_KEY claimed: the claimant's uid */
	struct step_writer *writer;	/* FILE_STEP opened for writing */
	int64_t input_hold;	/* FILE_FINGERPRINT: the hold of the value
				 * it set (step_set_fingerprint), until release */
	/*
	 * What a reader sees after snap: a content version (a checkpoint's
	 * content, a key's result), pinned in `pinned` until the file is
	 * freed.
	 */
	struct store *pinned;
	int64_t content;
	int64_t content_size;

	pthread_mutex_t lock;
	bool dirty;		/* written since the last commit */
	char *buf;		/* what was written */
	size_t len, cap;
	size_t undo_len;	/* f->len before the last put */
	size_t undo_at;		/* where the last put wrote */
	char *undo;		/* the bytes it overwrote */
	size_t undo_size;
	char *snap;		/* what a reader sees */
	size_t snap_len;
};

/* Set up f (zeroed by the caller) for an open with these flags. */
void file_init(struct file *f, enum file_kind kind, int64_t wf, int flags);
/* Drop what f holds: its writer's copy, its pin, its buffers. */
void file_fini(struct file *f);

/*
 * Opening.  Each fills f, set up by file_init() with the open's flags, or
 * fails with -errno and leaves it holding nothing (file_fini() frees it).
 *
 * file_open_key: an existing key of that generation: its status line and
 * its pinned result for readers; writers only while it is in flight (else
 * key_refuse_write()).  file_claim: the exclusive create of a key (see
 * key_claim(); *k and *w get the claim and its workflow): the claim is
 * the file's, and its reader sees the new status line with no store read.
 * file_open_wait: wait/K, whose kind follows the claim: still in flight, a
 * FILE_WAIT whose reads wait; ended terminal, a reader of the key; ended
 * free, -ENOENT (claim it).  file_open_step: checkpoint id, a pinned
 * version for readers, a private copy for writers (empty when created or
 * opened with O_TRUNC).  file_open_new_step: a checkpoint that does not
 * exist yet (r from step_create), which its writer's first commit makes.
 * file_open_value: a policy file (f->field set) or input.fingerprint of
 * workflow w: its value, and its checks for writers.
 */
int file_open_key(struct once *o, struct file *f, int64_t generation,
		  const struct caller *who);
int file_claim(struct once *o, struct file *f, int64_t wf, const char *name,
	       size_t len, const struct caller *who, struct key_row *k,
	       struct wf_row *w);
int file_open_wait(struct once *o, struct file *f, int64_t generation,
		   const struct caller *who);
int file_open_step(struct once *o, struct file *f, int64_t id, bool created,
		   const struct caller *who);
int file_open_new_step(struct once *o, struct file *f,
		       const struct step_row *r, int flags,
		       const struct caller *who);
int file_open_value(struct file *f, const struct wf_row *w);

/*
 * The last claim seen ending terminal, shared by the rest of its waiters:
 * its content is immutable, so 10,000 waiters cost one read of the key,
 * not 10,000.  Set up its lock with pthread_mutex_init().
 */
struct file_ended {
	pthread_mutex_t lock;
	int64_t generation;	/* 0: none */
	char line[KEY_STATUS_LINE_MAX + 32];
	size_t len;
	int64_t content, size;
};

/*
 * The claim a FILE_WAIT waited for has ended: from now on the file reads
 * as the key does, with its content pinned.  -ENOENT when it turned out
 * free after all (released in between).  A file no longer FILE_WAIT is
 * left as it is.
 */
int file_wait_ended(struct once *o, struct file *f, struct file_ended *cache);

/* Take ownership of a malloc'd snapshot. */
void file_set_snapshot(struct file *f, char *snap, size_t len);
/* Take over a pin of content (size bytes) in st: released by file_fini. */
void file_set_content(struct file *f, struct store *st, int64_t content,
		      int64_t size);

/*
 * What a reader of f reads at off: the snapshot, then the content.  Up to
 * size bytes into buf; *got gets the count.
 */
int file_read(struct file *f, int64_t off, char *buf, size_t size,
	      size_t *got);

/*
 * write(2) of size bytes at off: checked (status grammar, generation, key
 * state, sizes, policy values, fingerprints, the raise rule) and kept for
 * the commit, or refused with -errno and nothing kept.  A whole line
 * written to input.fingerprint is set by this write itself, and held
 * while the file stays open (step_set_fingerprint).
 */
int file_write(struct once *o, struct file *f, const char *data, size_t size,
	       int64_t off, const struct caller *who);

/*
 * FLUSH or fsync: commit what was written since the last commit (nothing
 * when nothing was).  A flush from the writer's own process while a
 * signal kills it commits nothing.  A finalize or detach committed sets
 * f->settled.  -ESTALE for a fenced generation (recorded as an event).
 */
int file_commit(struct once *o, struct file *f, const struct caller *who);

/*
 * After a FLUSH: a claim still unsettled, or a checkpoint's writer,
 * flushed by its opener's own process while it exits (the kernel closes
 * its files, and waits for the reply, before anyone can reap it), notes
 * how that process ends, for the release: the abandon's event says it,
 * and a writer killed before it wrote commits nothing.
 */
void file_flushed(struct file *f, const struct caller *who);

/*
 * RELEASE, the last close of the file: a checkpoint opened with O_TRUNC
 * and closed with nothing written (": > steps/x") is emptied now, since
 * no flush could tell that nothing more was coming; a claim whose file
 * closes with nothing finalized or detached is abandoned at once; an
 * input this file held is let go.  Errors reach nobody, so none return.
 */
void file_release(struct once *o, struct file *f, const struct caller *who);

#endif
