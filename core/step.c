/*
 * step.c - checkpoints and input fingerprints (see step.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "step.h"
#include "workflow.h"

/*
 * Inside a transaction: would a new value change anything (*same), and
 * does the current epoch hold checkpoints (*steps)?  -EBUSY under raise.
 */
static int decide(struct once *o, const struct wf_row *w, const char *value,
		  size_t len, bool complete, int64_t own_hold, bool *same,
		  bool *steps, bool *held)
{
	int rc;

	*steps = false;
	*held = false;
	/* An unfinished value may still become the current one. */
	*same = (complete ? len == w->fingerprint_len
			  : len <= w->fingerprint_len) &&
		(len == 0 || memcmp(value, w->fingerprint, len) == 0);
	if (*same)
		return 0;
	/*
	 * A run holds the input it started with; the file that holds it may
	 * set another (its own hold then holds the new one).
	 */
	rc = store_hold_any(o->store, w->id, once_now_ms(o), own_hold, held);
	if (rc == 0 && *held)
		return -EBUSY;
	if (rc == 0)
		rc = store_step_any(o->store, w->id, w->epoch, steps);
	if (rc == 0 && *steps && w->policy.on_input_change == ON_INPUT_RAISE)
		rc = -EBUSY;
	return rc;
}

/*
 * A hold in the way may be one whose file was closed a moment ago: FUSE
 * sends its RELEASE after close(2) has returned.  Before EBUSY, that is
 * waited out, briefly: a few tries 20 ms apart.
 */
#define HOLD_SETTLE_TRIES 10

static int check_once(struct once *o, int64_t wf, const char *buf,
		      size_t len, int64_t own_hold, bool *held)
{
	struct wf_row w;
	size_t vlen;
	bool same, steps;
	int rc = fingerprint_parse(buf, len, &vlen);

	if (rc)
		return rc;
	rc = store_begin(o->store, false);
	if (rc)
		return rc;
	rc = store_wf_by_id(o->store, wf, &w);
	if (rc == 0)
		rc = decide(o, &w, buf, vlen, len > 0 && buf[len - 1] == '\n',
			    own_hold, &same, &steps, held);
	return once_end(o, rc);
}

int step_check_fingerprint(struct once *o, int64_t wf, const char *buf,
			   size_t len, int64_t own_hold)
{
	bool held = false;
	int rc = check_once(o, wf, buf, len, own_hold, &held);

	for (int i = 0; rc == -EBUSY && held && i < HOLD_SETTLE_TRIES; i++) {
		usleep(20 * 1000);
		rc = check_once(o, wf, buf, len, own_hold, &held);
	}
	return rc;
}

/* The lease of a hold: as long as a held claim's. */
static int64_t hold_lease_ms(const struct once *o)
{
	return o->config.lease_ms > 0 ? o->config.lease_ms
				      : ONCE_LEASE_MS_DEFAULT;
}

static int set_once(struct once *o, int64_t wf, const char *buf, size_t len,
		    const struct caller *who, int64_t *hold, bool *held)
{
	struct event ev = { .type = "fingerprint", .detail_field = "value" };
	struct wf_row w;
	size_t vlen = 0;
	bool same, steps, held_before = hold && *hold;
	int rc = buf ? fingerprint_parse(buf, len, &vlen) : 0;

	if (rc)
		return rc;
	rc = store_begin(o->store, true);
	if (rc)
		return rc;
	rc = store_wf_by_id(o->store, wf, &w);
	if (rc == 0)
		rc = decide(o, &w, buf, vlen, true, hold ? *hold : 0, &same,
			    &steps, held);
	if (rc)
		goto out;
	if (same)
		goto hold;
	/*
	 * Reset moves to a new epoch even with no checkpoint committed yet:
	 * a writer that opened under the old value (a new checkpoint has no
	 * row to vanish) must not commit under the new one.
	 */
	if (w.policy.on_input_change == ON_INPUT_RESET) {
		struct event inv = {
			.type = "invalidate",
			.number_field = "epoch",
			.number_field_value = w.epoch,
		};

		if (steps)
			rc = once_event(o, wf, who, &inv);
		w.epoch++;
	}
	memcpy(w.fingerprint, buf ? buf : "", vlen);
	w.fingerprint[vlen] = '\0';
	w.fingerprint_len = vlen;
	w.ctime_ns = once_now_ms(o) * 1000000;
	if (rc == 0)
		rc = store_wf_update(o->store, &w);
	ev.detail = w.fingerprint;
	ev.detail_len = vlen;
	if (rc == 0)
		rc = once_event(o, wf, who, &ev);
hold:
	if (rc == 0 && hold && *hold == 0 && vlen > 0)
		rc = store_hold(o->store, wf, once_now_ms(o) + hold_lease_ms(o),
				hold);
out:
	rc = once_end(o, rc);
	if (rc && hold && *hold && !held_before)
		*hold = 0;
	return rc;
}

int step_set_fingerprint(struct once *o, int64_t wf, const char *buf,
			 size_t len, const struct caller *who, int64_t *hold)
{
	bool held = false;
	int rc = set_once(o, wf, buf, len, who, hold, &held);

	for (int i = 0; rc == -EBUSY && held && i < HOLD_SETTLE_TRIES; i++) {
		usleep(20 * 1000);
		rc = set_once(o, wf, buf, len, who, hold, &held);
	}
	return rc;
}

int step_release_input(struct once *o, int64_t hold)
{
	return hold ? store_unhold(o->store, hold) : 0;
}

int step_renew_holds(struct once *o)
{
	return store_holds_renew(o->store, once_now_ms(o), hold_lease_ms(o));
}

/* ---- checkpoints ------------------------------------------------------ */

struct step_writer {
	int64_t id;		/* 0: a new checkpoint, not committed yet */
	int64_t wf;
	int64_t epoch;
	char name[NAME_MAX_LEN + 1];
	size_t name_len;
	int fd;			/* the private copy */
	int64_t size;
};

static void step_event(struct event *ev, const char *type,
		       const char *name, size_t len)
{
	*ev = (struct event){
		.type = type,
		.subject = "step",
		.name = name,
		.name_len = len,
	};
}

/* Inside a transaction: the workflow and, by name, its visible step. */
static int find_step(struct once *o, int64_t wf, const char *name, size_t len,
		     struct wf_row *w, struct step_row *out)
{
	int rc = store_wf_by_id(o->store, wf, w);

	if (rc == 0)
		rc = store_step_get(o->store, wf, w->epoch, name, len, out);
	return rc;
}

/* Inside a transaction: a step by id, if it is visible. */
static int visible_step(struct once *o, int64_t id, struct step_row *out)
{
	struct wf_row w;
	int rc = store_step_by_id(o->store, id, out);

	if (rc == 0)
		rc = store_wf_by_id(o->store, out->wf, &w);
	if (rc == 0 && w.epoch != out->epoch)
		rc = -ENOENT;
	return rc == -ENOENT ? -ESTALE : rc;
}

int step_lookup(struct once *o, int64_t wf, const char *name, size_t len,
		struct step_row *out)
{
	struct wf_row w;
	int rc = name_check(name, len);

	if (rc)
		return rc;
	rc = store_begin(o->store, false);
	if (rc)
		return rc;
	rc = find_step(o, wf, name, len, &w, out);
	return once_end(o, rc);
}

int step_get(struct once *o, int64_t id, struct step_row *out)
{
	int rc = store_begin(o->store, false);

	if (rc)
		return rc;
	rc = visible_step(o, id, out);
	return once_end(o, rc);
}

int step_list(struct once *o, int64_t wf, int64_t after, struct step_row *rows,
	      int max, int *n)
{
	struct wf_row w;
	int rc = store_begin(o->store, false);

	*n = 0;
	if (rc)
		return rc;
	rc = store_wf_by_id(o->store, wf, &w);
	if (rc == 0)
		rc = store_step_list(o->store, wf, w.epoch, after, rows, max, n);
	return once_end(o, rc);
}

int step_create(struct once *o, int64_t wf, const char *name, size_t len,
		bool excl, const struct caller *who, struct step_row *out)
{
	struct wf_row w;
	int rc = name_check(name, len);

	if (rc)
		return rc;
	rc = store_begin(o->store, false);
	if (rc)
		return rc;
	rc = store_wf_by_id(o->store, wf, &w);
	if (rc)
		goto out;
	rc = store_step_get(o->store, wf, w.epoch, name, len, out);
	if (rc == 0) {
		rc = excl ? -EEXIST : 0;
		goto out;
	}
	if (rc != -ENOENT)
		goto out;
	/*
	 * A new checkpoint exists for nobody until its first commit: no row
	 * now, so a writer killed before then leaves nothing behind.
	 */
	memset(out, 0, sizeof(*out));
	out->wf = wf;
	out->epoch = w.epoch;
	name_copy(out->name, &out->name_len, name, len);
	out->mtime_ns = once_now_ms(o) * 1000000;
	rc = 0;
out:
	(void)who;
	return once_end(o, rc);
}

int step_remove(struct once *o, int64_t wf, const char *name, size_t len,
		const struct caller *who)
{
	struct step_row r;
	struct wf_row w;
	struct event ev;
	int rc = name_check(name, len);

	if (rc)
		return rc;
	rc = store_begin(o->store, true);
	if (rc)
		return rc;
	rc = find_step(o, wf, name, len, &w, &r);
	if (rc == 0)
		rc = store_step_delete(o->store, r.id);
	if (rc == 0) {
		step_event(&ev, "remove", r.name, r.name_len);
		rc = once_event(o, wf, who, &ev);
	}
	return once_end(o, rc);
}

int step_rename(struct once *o, int64_t wf, const char *from, size_t from_len,
		const char *to, size_t to_len, bool noreplace,
		const struct caller *who)
{
	struct step_row r, target;
	struct wf_row w;
	struct event ev;
	int rc = name_check(from, from_len);

	if (rc == 0)
		rc = name_check(to, to_len);
	if (rc)
		return rc;
	rc = store_begin(o->store, true);
	if (rc)
		return rc;
	rc = find_step(o, wf, from, from_len, &w, &r);
	if (rc)
		goto out;
	if (from_len == to_len && memcmp(from, to, to_len) == 0)
		goto out;
	rc = store_step_get(o->store, wf, w.epoch, to, to_len, &target);
	if (rc == 0) {
		rc = noreplace ? -EEXIST : store_step_delete(o->store, target.id);
	} else if (rc == -ENOENT) {
		rc = 0;
	}
	if (rc)
		goto out;
	name_copy(r.name, &r.name_len, to, to_len);
	rc = store_step_update(o->store, &r);
	step_event(&ev, "rename", r.name, r.name_len);
	ev.detail_field = "from";
	/* A name that is not UTF-8 goes into the line as from_hex. */
	ev.detail = from;
	ev.detail_len = from_len;
	if (rc == 0)
		rc = once_event(o, wf, who, &ev);
out:
	return once_end(o, rc);
}

int step_set_times(struct once *o, int64_t id, const int64_t *mtime_ns,
		   const int64_t *atime_ns)
{
	struct step_row r;
	int rc = store_begin(o->store, true);

	if (rc)
		return rc;
	rc = visible_step(o, id, &r);
	if (mtime_ns)
		r.mtime_ns = *mtime_ns;
	if (atime_ns)
		r.atime_ns = *atime_ns;
	if (rc == 0)
		rc = store_step_update(o->store, &r);
	return once_end(o, rc);
}

static int open_private_copy(struct once *o)
{
	const char *dir = o->config.tmpdir ? o->config.tmpdir : P_tmpdir;
	char path[PATH_MAX];
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	if (fd >= 0)
		return fd;
	snprintf(path, sizeof(path), "%s/oncefs-step-XXXXXX", dir);
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	unlink(path);
	return fd;
}

/*
 * Copy checkpoint id's committed content into fd, pinned while it is
 * read so that a rewrite or a purge meanwhile cannot cut it.
 */
static int copy_content(struct once *o, int64_t id, int fd, int64_t *size)
{
	char *buf = malloc(256 * 1024);
	struct step_row r;
	int64_t off = 0;
	int rc;

	if (!buf)
		return -ENOMEM;
	rc = step_get_pinned(o, id, &r);
	if (rc == -ENOENT)
		rc = -ESTALE;
	*size = rc ? 0 : r.size;
	while (rc == 0 && off < r.size) {
		size_t got;

		rc = store_content_read(o->store, r.content, r.size, off, buf,
					256 * 1024, &got);
		if (rc == 0 && got == 0)
			rc = -EIO;
		if (rc == 0 && pwrite(fd, buf, got, off) != (ssize_t)got)
			rc = errno ? -errno : -EIO;
		off += (int64_t)got;
	}
	store_unpin(o->store, r.content);
	free(buf);
	return rc;
}

int step_writer_open(struct once *o, const struct step_row *row, bool truncate,
		     struct step_writer **out)
{
	struct step_writer *w;
	struct step_row r = *row;
	int64_t id = row->id;
	int rc = id ? step_get(o, id, &r) : 0;

	*out = NULL;
	if (rc)
		return rc;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->id = id;
	w->wf = r.wf;
	w->epoch = r.epoch;
	name_copy(w->name, &w->name_len, r.name, r.name_len);
	w->fd = open_private_copy(o);
	if (w->fd < 0) {
		rc = w->fd;
		free(w);
		return rc;
	}
	if (!truncate && id) {
		rc = copy_content(o, id, w->fd, &w->size);
		if (rc) {
			step_writer_close(w);
			return rc;
		}
	}
	*out = w;
	return 0;
}

/* Is the writer's fingerprint still the workflow's?  -ESTALE if not. */
static int writer_current(struct once *o, const struct step_writer *w)
{
	struct wf_row r;
	int rc = workflow_get(o, w->wf, &r);

	if (rc == -ENOENT || (rc == 0 && r.epoch != w->epoch))
		rc = -ESTALE;
	return rc;
}

int step_writer_write(struct once *o, struct step_writer *w, int64_t off,
		      const char *buf, size_t size, bool append)
{
	ssize_t n;
	int rc;

	if (append)
		off = w->size;
	if (off < 0 || (int64_t)size > o->config.max_checkpoint ||
	    off > o->config.max_checkpoint - (int64_t)size)
		return -EFBIG;
	rc = writer_current(o, w);
	if (rc || size == 0)
		return rc;	/* writing nothing changes nothing, not the size */
	n = pwrite(w->fd, buf, size, off);
	if (n < 0)
		return -errno;
	if ((size_t)n != size)
		return -ENOSPC;
	if (off + (int64_t)size > w->size)
		w->size = off + (int64_t)size;
	return 0;
}

int step_writer_read(struct step_writer *w, int64_t off, char *buf,
		     size_t size, size_t *got)
{
	ssize_t n = pread(w->fd, buf, size, off);

	*got = n > 0 ? (size_t)n : 0;
	return n < 0 ? -errno : 0;
}

int step_writer_truncate(struct once *o, struct step_writer *w, int64_t size)
{
	int rc;

	if (size < 0 || size > o->config.max_checkpoint)
		return -EFBIG;
	rc = writer_current(o, w);
	if (rc)
		return rc;
	if (ftruncate(w->fd, size))
		return -errno;
	w->size = size;
	return 0;
}

int64_t step_writer_size(const struct step_writer *w)
{
	return w->size;
}

int64_t step_writer_id(const struct step_writer *w)
{
	return w->id;
}

static int writer_commit(struct once *o, struct step_writer *w,
			 const struct caller *who)
{
	struct store_step_commit c = {
		.wf = w->wf, .epoch = w->epoch, .step = w->id,
		.name = w->name, .len = w->name_len, .size = w->size,
	};
	struct step_row r;
	struct event ev;
	int rc;

	/* The content first, outside the commit: its transaction stays small. */
	rc = store_content_stage(o->store, w->fd, w->size, once_now_ms(o),
				 &c.content);
	if (rc)
		return rc;
	c.now_ms = once_now_ms(o);
	step_event(&ev, "checkpoint", w->name, w->name_len);
	ev.number_field = "size";
	ev.number_field_value = w->size;
	once_stamp(&ev, who, c.now_ms);
	c.ev = &ev;
	rc = store_step_commit(o->store, &c, &r);
	store_unpin(o->store, c.content);
	if (rc == 0 && !w->id)
		w->id = r.id;
	if (rc == 0)
		once_count(&o->stats.checkpoints);
	return rc;
}

int step_writer_commit(struct once *o, struct step_writer *w,
		       const struct caller *who)
{
	int64_t start = metrics_now_ns();
	int rc = writer_commit(o, w, who);

	histogram_observe(&o->latencies.checkpoint, start);
	return rc;
}

void step_writer_close(struct step_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	free(w);
}

int step_purge(struct once *o, int max, int64_t *n)
{
	int rc = store_begin(o->store, true);

	*n = 0;
	if (rc)
		return rc;
	rc = store_purge(o->store, once_now_ms(o), max, n);
	return once_end(o, rc);
}

int step_get_pinned(struct once *o, int64_t id, struct step_row *out)
{
	int rc;

	/* A version that went between the read and the pin: read again. */
	for (int tries = 0; tries < 8; tries++) {
		rc = step_get(o, id, out);
		if (rc == 0)
			rc = store_pin(o->store, out->content, once_now_ms(o));
		if (rc != -ENOENT || out->content == 0)
			break;
	}
	if (rc == -ENOENT && out->content)
		rc = -EAGAIN;
	if (rc)
		out->content = 0;
	return rc;
}

int step_truncate(struct once *o, int64_t id, int64_t size,
		  const struct caller *who)
{
	struct step_writer *w;
	struct step_row r = { .id = id };
	int rc = step_writer_open(o, &r, size == 0, &w);

	if (rc)
		return rc;
	rc = step_writer_truncate(o, w, size);
	if (rc == 0)
		rc = step_writer_commit(o, w, who);
	step_writer_close(w);
	return rc;
}
