/*
 * step.h - checkpoints and the input fingerprint they belong to.
 *
 * A workflow's checkpoints are kept per epoch; the workflow's epoch is
 * that of its current fingerprint, and only checkpoints of the current
 * epoch are visible.  Writing a different fingerprint, by the workflow's
 * on_input_change policy:
 *
 *   reset   epoch + 1: every old checkpoint vanishes at once (one row
 *           changes, whatever their number); old epochs are purged later
 *   reuse   the epoch stays: the checkpoints stay visible
 *   raise   -EBUSY while a checkpoint of the epoch exists; nothing changes
 *
 * Writing the value the workflow already has changes nothing (a resume).
 * Unset (empty, or unlinked) is a value like any other.
 */
#ifndef ONCE_STEP_H
#define ONCE_STEP_H

#include "once.h"

/*
 * A writer works on a private copy (a temporary file) of the checkpoint
 * and commits it whole, in one transaction: readers, a crash, or another
 * writer see the old content or the new, never a mix.  A writer belongs
 * to the epoch its checkpoint had when it was opened; once the fingerprint
 * has moved on (reset), its writes and its commit fail with -ESTALE.
 */
struct step_writer;

/* The visible checkpoint of that name: -ENOENT. */
int step_lookup(struct once *o, int64_t wf, const char *name, size_t len,
		struct step_row *out);

/* A checkpoint by id: -ESTALE when it is gone or no longer visible. */
int step_get(struct once *o, int64_t id, struct step_row *out);

/*
 * step_get, with its content version pinned for an open file, which then
 * reads it with store_content_read() and store_unpin()s it at close.
 */
int step_get_pinned(struct once *o, int64_t id, struct step_row *out);

/* Visible checkpoints with id > after, in id order (a stable cursor). */
int step_list(struct once *o, int64_t wf, int64_t after, struct step_row *rows,
	      int max, int *n);

/*
 * Open with O_CREAT: the existing checkpoint (-EEXIST when excl), or a
 * new one that exists for nobody until its writer's first commit: *out
 * then has id 0 (and its workflow, epoch and name), and no row is made.
 */
int step_create(struct once *o, int64_t wf, const char *name, size_t len,
		bool excl, const struct caller *who, struct step_row *out);

/* rm steps/S. */
int step_remove(struct once *o, int64_t wf, const char *name, size_t len,
		const struct caller *who);

/* rename within steps/: -EEXIST under noreplace, -ENOENT. */
int step_rename(struct once *o, int64_t wf, const char *from, size_t from_len,
		const char *to, size_t to_len, bool noreplace,
		const struct caller *who);

/*
 * utimensat on a checkpoint: the times given (NULL: unchanged).  Reads
 * never change the atime (as under noatime).
 */
int step_set_times(struct once *o, int64_t id, const int64_t *mtime_ns,
		   const int64_t *atime_ns);

/*
 * Open a private copy of checkpoint r->id: empty with truncate, else the
 * committed content.  r->id 0 is a new checkpoint (from step_create):
 * its first commit creates it.
 */
int step_writer_open(struct once *o, const struct step_row *r, bool truncate,
		     struct step_writer **out);
/* -EFBIG past max_checkpoint, -ESTALE once the fingerprint moved on. */
int step_writer_write(struct once *o, struct step_writer *w, int64_t off,
		      const char *buf, size_t size, bool append);
int step_writer_read(struct step_writer *w, int64_t off, char *buf,
		     size_t size, size_t *got);
int step_writer_truncate(struct once *o, struct step_writer *w, int64_t size);
int64_t step_writer_size(const struct step_writer *w);
/* The checkpoint's id: 0 until a new one's first commit. */
int64_t step_writer_id(const struct step_writer *w);
/* Commit the private copy as the checkpoint's new content. */
int step_writer_commit(struct once *o, struct step_writer *w,
		       const struct caller *who);
void step_writer_close(struct step_writer *w);

/* truncate(2) by path: a private copy cut to size, committed at once. */
int step_truncate(struct once *o, int64_t id, int64_t size,
		  const struct caller *who);

/*
 * One bounded transaction of purging: checkpoints of old fingerprints,
 * then dead content versions no open file pins; *n gets the rows (0:
 * nothing was due).
 */
int step_purge(struct once *o, int max, int64_t *n);

/*
 * The checks of write() for input.fingerprint: the value's syntax
 * (-EINVAL) and the raise rule (-EBUSY).  Bytes without their newline
 * may be an unfinished value: under raise they pass while they can still
 * become the current value.  own_hold: the writing file's hold (0: none),
 * which does not keep its own file from setting another value.
 */
int step_check_fingerprint(struct once *o, int64_t wf, const char *buf,
			   size_t len, int64_t own_hold);

/*
 * Set the fingerprint from the bytes written (buf NULL: unset, as by
 * unlink), applying the policy.  -EINVAL, -EBUSY, -ENOENT.
 *
 * One input at a time: with hold not NULL, the value set (or found
 * already set) is held, in the same transaction, and *hold gets the
 * hold's id (unless it holds one already).  While a hold lives, setting
 * another value is -EBUSY, on every mount, whatever the policy; so a run
 * that holds its input can never commit a checkpoint under another.  A
 * file that holds a value may set another through itself (its hold then
 * holds that one).  A hold lives until step_release_input(), or, when its
 * mount dies, until its lease (the mount's held-claim lease) runs out:
 * the background renews it with step_renew_holds().
 */
int step_set_fingerprint(struct once *o, int64_t wf, const char *buf,
			 size_t len, const struct caller *who, int64_t *hold);
int step_release_input(struct once *o, int64_t hold);
int step_renew_holds(struct once *o);

#endif
