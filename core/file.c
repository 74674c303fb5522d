/*
 * file.c - an open file of the mount: its buffers, the checks of write(),
 * the commit at flush, and what its last close does (see file.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"
#include "fingerprint.h"
#include "key.h"
#include "step.h"
#include "workflow.h"

void file_init(struct file *f, enum file_kind kind, int64_t wf, int flags)
{
	f->kind = kind;
	f->wf = wf;
	f->writable = (flags & O_ACCMODE) != O_RDONLY;
	f->append = (flags & O_APPEND) != 0;
	pthread_mutex_init(&f->lock, NULL);
}

void file_fini(struct file *f)
{
	pthread_mutex_destroy(&f->lock);
	step_writer_close(f->writer);
	if (f->pinned)
		store_unpin(f->pinned, f->content);
	free(f->buf);
	free(f->undo);
	free(f->snap);
}

/* ---- the buffer --------------------------------------------------------- */

/*
 * Place size bytes at off in the buffer (at its end for O_APPEND), growing
 * it up to max.  Remembers what it replaced, so that a write the checks
 * refuse can be taken back with undo().  -EFBIG past max, -EINVAL for a
 * write that would leave a hole, -ENOMEM.
 */
static int put(struct file *f, const char *data, size_t size, int64_t off,
	       size_t max)
{
	size_t at = f->append ? f->len : (size_t)off;
	size_t end, overlap;

	if (off < 0 || at > f->len)
		return -EINVAL;
	end = at + size;
	if (end > max)
		return -EFBIG;
	if (end > f->cap) {
		size_t cap = f->cap ? f->cap : 256;
		char *p;

		while (cap < end)
			cap *= 2;
		p = realloc(f->buf, cap);
		if (!p)
			return -ENOMEM;
		f->buf = p;
		f->cap = cap;
	}
	overlap = (end < f->len ? end : f->len) - at;
	free(f->undo);
	f->undo = NULL;
	f->undo_size = 0;
	if (overlap) {
		f->undo = malloc(overlap);
		if (!f->undo)
			return -ENOMEM;
		memcpy(f->undo, f->buf + at, overlap);
		f->undo_size = overlap;
	}
	f->undo_len = f->len;
	f->undo_at = at;
	memcpy(f->buf + at, data, size);
	if (end > f->len)
		f->len = end;
	return 0;
}

/* Take back the last put(). */
static void undo(struct file *f)
{
	if (f->undo_size)
		memcpy(f->buf + f->undo_at, f->undo, f->undo_size);
	f->len = f->undo_len;
}

void file_set_snapshot(struct file *f, char *snap, size_t len)
{
	free(f->snap);
	f->snap = snap;
	f->snap_len = len;
}

void file_set_content(struct file *f, struct store *st, int64_t content,
		      int64_t size)
{
	f->pinned = st;
	f->content = content;
	f->content_size = size;
}

int file_read(struct file *f, int64_t off, char *buf, size_t size,
	      size_t *got)
{
	size_t n = 0, more = 0;
	int rc = 0;

	*got = 0;
	if (off < 0)
		return -EINVAL;
	pthread_mutex_lock(&f->lock);
	if ((uint64_t)off < f->snap_len) {
		n = f->snap_len - (size_t)off;
		if (n > size)
			n = size;
		memcpy(buf, f->snap + off, n);
	}
	pthread_mutex_unlock(&f->lock);
	if (n < size && f->pinned) {
		int64_t at = off + (int64_t)n - (int64_t)f->snap_len;

		rc = store_content_read(f->pinned, f->content, f->content_size,
					at, buf + n, size - n, &more);
	}
	*got = n + more;
	return rc;
}

/* ---- write() ------------------------------------------------------------ */

/* The checks of write(): they run on the buffer as it would become. */
static int check_write(struct once *o, struct file *f, const struct caller *who)
{
	switch (f->kind) {
	case FILE_KEY:
		return key_check_write(o, f->generation, f->buf, f->len, who);
	case FILE_POLICY:
		return workflow_check_policy(f->field, f->buf, f->len);
	case FILE_FINGERPRINT:
		return step_check_fingerprint(o, f->wf, f->buf, f->len);
	default:
		return -EBADF;
	}
}

static size_t write_limit(const struct once *o, const struct file *f)
{
	switch (f->kind) {
	case FILE_KEY:
		return o->config.max_result + KEY_STATUS_LINE_MAX + 1;
	case FILE_FINGERPRINT:
		return FINGERPRINT_MAX + 1;
	default:
		return 64;
	}
}

static int write_step(struct once *o, struct file *f, const char *data,
		      size_t size, int64_t off)
{
	int rc = step_writer_write(o, f->writer, off, data, size, f->append);

	if (rc == 0)
		f->dirty = true;
	else if (rc == -EFBIG)
		f->poison = rc;
	return rc;
}

int file_write(struct once *o, struct file *f, const char *data, size_t size,
	       int64_t off, const struct caller *who)
{
	int rc;

	if (!f->writable || f->kind == FILE_EVENTS || f->kind == FILE_STATS)
		return -EBADF;
	pthread_mutex_lock(&f->lock);
	if (f->kind == FILE_STEP) {
		rc = write_step(o, f, data, size, off);
		pthread_mutex_unlock(&f->lock);
		return rc;
	}
	rc = put(f, data, size, off, write_limit(o, f));
	/*
	 * Too much for a key: the kernel may have split one write(2) and
	 * passed us its first pieces; none of it may be committed.
	 */
	if (rc == -EFBIG && f->kind == FILE_KEY)
		f->poison = rc;
	if (rc == -EFBIG && f->kind != FILE_KEY)
		rc = -EINVAL;	/* no valid value is that long */
	if (rc == 0 && f->kind == FILE_FINGERPRINT && f->len &&
	    f->buf[f->len - 1] == '\n') {
		/*
		 * A whole value (a line) is set at once, and held while the
		 * file stays open: a run holds its input this way.
		 */
		rc = step_set_fingerprint(o, f->wf, f->buf, f->len, who,
					  &f->input_hold);
		if (rc)
			undo(f);
		else
			f->dirty = false;
	} else if (rc == 0) {
		rc = check_write(o, f, who);
		if (rc == -EAGAIN)
			rc = 0;	/* a value not finished yet */
		if (rc)
			undo(f);
		else
			f->dirty = true;
		if (rc == -EFBIG && f->kind == FILE_KEY)
			f->poison = rc;
	}
	pthread_mutex_unlock(&f->lock);
	if (rc == -ESTALE && f->kind == FILE_KEY)
		key_fenced(o, f->wf, f->name, f->name_len, f->generation, who);
	return rc;
}

/* ---- flush, fsync ------------------------------------------------------- */

/*
 * Is the process closing this file its writer, dying of a signal?  The
 * kernel closes a killed process's files too, and a FLUSH looks the same
 * either way; /proc tells (holder.c).  A flush from another process that
 * holds a copy of the file (a child that inherited it) is not the
 * writer's: it commits as any close.  A process that exits, even with a
 * failure status, is not dying of a signal: what it wrote is committed.
 */
static bool dying_by_signal(const struct file *f, pid_t pid)
{
	struct holder_fate fate;

	if (f->opener && holder_tgid(pid) != f->opener)
		return false;
	holder_fate_now(pid, &fate);
	return fate.state == HOLDER_KILLED;
}

/* Nothing is left to commit. */
static void committed(struct file *f)
{
	f->dirty = false;
	f->truncated = false;
	f->create_at_flush = false;
}

int file_commit(struct once *o, struct file *f, const struct caller *who)
{
	int rc = 0;

	pthread_mutex_lock(&f->lock);
	if (f->poison) {
		rc = f->poison;
		goto out;
	}
	if (!f->dirty && !f->create_at_flush)
		goto out;
	if ((f->kind == FILE_STEP || f->kind == FILE_KEY) &&
	    dying_by_signal(f, who->pid)) {
		/* Killed half way: keep the old checkpoint, leave the claim. */
		committed(f);
		goto out;
	}
	switch (f->kind) {
	case FILE_KEY:
		rc = key_finalize(o, f->generation, f->buf, f->len, who);
		if (rc == 0)
			f->settled = true;
		break;
	case FILE_POLICY:
		rc = workflow_set_policy(o, f->wf, f->field, f->buf, f->len, who);
		break;
	case FILE_FINGERPRINT:
		rc = step_set_fingerprint(o, f->wf, f->buf, f->len, who,
					  &f->input_hold);
		break;
	case FILE_STEP:
		rc = step_writer_commit(o, f->writer, who);
		break;
	default:
		break;
	}
	if (rc == 0)
		committed(f);
out:
	pthread_mutex_unlock(&f->lock);
	if (rc == -ESTALE && f->kind == FILE_KEY)
		key_fenced(o, f->wf, f->name, f->name_len, f->generation, who);
	return rc;
}

void file_flushed(struct file *f, const struct caller *who)
{
	struct holder_fate fate;

	if (f->kind != FILE_KEY || !f->claimed || f->settled ||
	    holder_tgid(who->pid) != f->opener)
		return;
	holder_fate_now(who->pid, &fate);
	if (fate.state == HOLDER_EXITED || fate.state == HOLDER_KILLED) {
		f->fate = fate;
		f->fate_known = true;
	}
}

/* ---- the last close ----------------------------------------------------- */

void file_release(struct once *o, struct file *f, const struct caller *who)
{
	if (f->kind == FILE_STEP && f->truncated && f->writer && !f->poison) {
		f->dirty = true;
		file_commit(o, f, who);
	}
	/*
	 * The last handle of a claim closed, and its holder neither finalized
	 * nor detached it: the holder crashed, was killed, raised or exited.
	 * The key is free now, not at the end of a lease.
	 */
	if (f->kind == FILE_KEY && f->claimed && !f->settled) {
		struct caller holder = { .pid = f->opener, .uid = f->opener_uid };
		struct holder_fate fate = f->fate;

		if (!f->fate_known)
			holder_fate_now(f->opener, &fate);
		key_abandon(o, f->generation, &holder, &fate, NULL);
	}
	if (f->input_hold) {
		step_release_input(o, f->input_hold);
		f->input_hold = 0;
	}
}
