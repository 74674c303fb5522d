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
#include "policy.h"
#include "step.h"
#include "workflow.h"

void file_init(struct file *f, enum file_kind kind, int64_t wf, int flags)
{
	f->kind = kind;
	f->wf = wf;
	f->writable = (flags & O_ACCMODE) != O_RDONLY;
	f->append = (flags & O_APPEND) != 0;
	f->truncate_on_open = (flags & O_TRUNC) != 0;
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

/* ---- opening ------------------------------------------------------------ */

/* A snapshot of len bytes copied from p. */
static int snapshot_of(struct file *f, const char *p, size_t len)
{
	char *snap = malloc(len ? len : 1);

	if (!snap)
		return -ENOMEM;
	memcpy(snap, p, len);
	file_set_snapshot(f, snap, len);
	return 0;
}

/* The key a file is of: its generation, its name, whether it may write. */
static int key_of(struct file *f, const struct key_row *k,
		  const struct caller *who)
{
	f->wf = k->wf;
	f->generation = k->generation;
	memcpy(f->name, k->name, k->name_len + 1);
	f->name_len = k->name_len;
	if (f->writable && k->status != KEY_IN_FLIGHT)
		return key_refuse_write(who);
	return 0;
}

int file_open_key(struct once *o, struct file *f, int64_t generation,
		  const struct caller *who)
{
	char line[KEY_STATUS_LINE_MAX + 32];
	struct key_row k;
	size_t len;
	int rc = key_open_content(o, generation, &k, line, sizeof(line), &len);

	if (rc)
		return rc;
	rc = key_of(f, &k, who);
	if (rc == 0)
		rc = snapshot_of(f, line, len);
	if (rc) {
		store_unpin(o->store, k.content);
		return rc;
	}
	file_set_content(f, o->store, k.content, k.result_len);
	return 0;
}

int file_claim(struct once *o, struct file *f, int64_t wf, const char *name,
	       size_t len, const struct caller *who, struct key_row *k,
	       struct wf_row *w)
{
	char line[KEY_STATUS_LINE_MAX + 32];
	int rc = key_claim(o, wf, name, len, who, k, w);

	if (rc)
		return rc;
	f->claimed = true;
	f->opener = holder_tgid(who->pid);
	f->opener_uid = who->uid;
	rc = key_of(f, k, who);
	if (rc == 0)
		rc = snapshot_of(f, line, key_status_line(k, line, sizeof(line)));
	if (rc)
		key_abandon(o, k->generation, k->name, k->name_len, who, NULL,
			    "the open that claimed it failed");
	return rc;
}

int file_open_wait(struct once *o, struct file *f, int64_t generation,
		   const struct caller *who)
{
	struct key_row k;
	int rc;

	if (f->writable)
		return key_refuse_write(who);
	rc = key_get(o, generation, &k, NULL);
	if (rc == -ESTALE)
		return -ENOENT;
	if (rc)
		return rc;
	if (k.status != KEY_IN_FLIGHT) {
		f->kind = FILE_KEY;
		return file_open_key(o, f, k.generation, who);
	}
	f->kind = FILE_WAIT;
	f->generation = k.generation;
	return 0;
}

int file_wait_ended(struct once *o, struct file *f, struct file_ended *cache)
{
	char line[sizeof(cache->line)];
	struct key_row k;
	size_t len;
	int rc = 0;

	pthread_mutex_lock(&f->lock);
	if (f->kind != FILE_WAIT)
		goto out;
	pthread_mutex_lock(&cache->lock);
	if (cache->generation == f->generation &&
	    store_pin(o->store, cache->content, once_now_ms(o)) == 0) {
		/* Pinned by an earlier waiter's file: memory only. */
		memcpy(line, cache->line, cache->len);
		len = cache->len;
		k.content = cache->content;
		k.result_len = cache->size;
		pthread_mutex_unlock(&cache->lock);
	} else {
		pthread_mutex_unlock(&cache->lock);
		rc = key_open_content(o, f->generation, &k, line, sizeof(line),
				      &len);
		if (rc == -ESTALE)
			rc = -ENOENT;
		if (rc)
			goto out;
		pthread_mutex_lock(&cache->lock);
		cache->generation = f->generation;
		memcpy(cache->line, line, len);
		cache->len = len;
		cache->content = k.content;
		cache->size = k.result_len;
		pthread_mutex_unlock(&cache->lock);
	}
	rc = snapshot_of(f, line, len);
	if (rc) {
		store_unpin(o->store, k.content);
		goto out;
	}
	file_set_content(f, o->store, k.content, k.result_len);
	f->kind = FILE_KEY;
out:
	pthread_mutex_unlock(&f->lock);
	return rc;
}

int file_open_step(struct once *o, struct file *f, int64_t id, bool created,
		   const struct caller *who)
{
	struct step_row r;
	int rc = f->writable ? step_get(o, id, &r) : step_get_pinned(o, id, &r);

	if (rc)
		return rc;
	f->wf = r.wf;
	if (!f->writable) {
		file_set_content(f, o->store, r.content, r.size);
		return 0;
	}
	f->truncated = !created && f->truncate_on_open;
	f->opener = holder_tgid(who->pid);
	f->opener_uid = who->uid;
	return step_writer_open(o, &r, created || f->truncate_on_open,
				&f->writer);
}

int file_open_new_step(struct once *o, struct file *f,
		       const struct step_row *r, int flags,
		       const struct caller *who)
{
	int rc = step_writer_open(o, r, true, &f->writer);

	if (rc)
		return rc;
	f->opener = holder_tgid(who->pid);
	f->opener_uid = who->uid;
	f->truncated = true;
	/*
	 * touch opens without O_TRUNC and writes nothing: its close must
	 * create the file (RELEASE comes after close() has returned).  An
	 * open with O_TRUNC means content is coming (> redirections, "w"):
	 * that one exists from its first commit of data.
	 */
	f->create_at_flush = !(flags & O_TRUNC);
	return 0;
}

int file_open_value(struct file *f, const struct wf_row *w)
{
	char text[FINGERPRINT_MAX + 2];
	size_t len = 0;

	if (f->kind == FILE_FINGERPRINT) {
		len = w->fingerprint_len ? w->fingerprint_len + 1 : 0;
		memcpy(text, w->fingerprint, w->fingerprint_len);
		text[w->fingerprint_len] = '\n';
	} else {
		len = policy_format(f->field, &w->policy, text, sizeof(text));
	}
	return snapshot_of(f, text, len);
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
		return step_check_fingerprint(o, f->wf, f->buf, f->len,
					      f->input_hold);
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
 * Is thread tid of the process that opened f?  A thread whose id is the
 * opener's is its main thread, and needs no reading of /proc.
 */
static bool of_opener(const struct file *f, pid_t tid)
{
	return tid == f->opener || holder_tgid(tid) == f->opener;
}

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

	if (f->opener && !of_opener(f, pid))
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
		rc = key_finalize(o, f->generation, f->name, f->name_len, f->buf,
				  f->len, who);
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
	bool claim = f->kind == FILE_KEY && f->claimed && !f->settled;
	bool writer = f->kind == FILE_STEP && f->writer;

	if (!(claim || writer) || f->opener == 0 || !of_opener(f, who->pid))
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
	/*
	 * RELEASE comes from no process (pid 0): what it commits is the
	 * opener's, and a writer killed before it wrote commits nothing.
	 */
	struct caller opener = { .pid = f->opener, .uid = f->opener_uid,
				 .gid = who->gid };
	bool killed = f->fate_known && f->fate.state == HOLDER_KILLED;

	if (f->kind == FILE_STEP && f->truncated && f->writer && !f->poison &&
	    !killed) {
		f->dirty = true;
		file_commit(o, f, f->opener ? &opener : who);
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
		key_abandon(o, f->generation, f->name, f->name_len, &holder,
			    &fate, NULL);
	}
	if (f->input_hold) {
		step_release_input(o, f->input_hold);
		f->input_hold = 0;
	}
}
