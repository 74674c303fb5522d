/*
 * store_pg_content.c - the PostgreSQL backend's content versions: chunks,
 * pins, staging, reading, the rows that name content, and the purge (see
 * store_pg.h; store.h says what a version and a pin are).
 *
 * Pins are rows of every mount on the database, so a purge on one host
 * waits for the readers on all of them.  A pin's row is written under the
 * writer row like any write: a purge that saw no pin and a pin that saw
 * the version cannot both commit.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_pg.h"

static int pin_row(struct store_impl *st, int64_t content, int64_t now_ms)
{
	struct pg_params p = { 0 };
	int64_t n = 0;
	int rc;

	pg_int(&p, content);
	pg_int(&p, st->mount_id);
	pg_int(&p, now_ms + PIN_TTL_MS);
	rc = pg_exec_count(st, P_PIN_INSERT, &p, &n);
	return rc == 0 && n == 0 ? -ENOENT : rc;
}

int pg_pin(struct store_impl *st, int64_t content, int64_t now_ms)
{
	int rc;

	if (content == 0 || pin_table_ref(&st->pins, content))
		return 0;
	rc = pg_begin_nowait(st);
	if (rc == 0) {
		rc = pin_row(st, content, now_ms);
		if (rc == 0)
			rc = pg_commit(st);
		else
			pg_rollback(st);
	}
	/*
	 * As on SQLite: a store that takes no write now must not fail a
	 * read; the pin lives in memory and the renewal writes its row.
	 */
	if (rc != 0 && rc != -EROFS && rc != -EAGAIN && rc != -ENOSPC)
		return rc;
	return pin_table_add(&st->pins, content, rc == 0);
}

void pg_unpin(struct store_impl *st, int64_t content)
{
	if (content)
		pin_table_unref(&st->pins, content);
}

int pg_pins_renew(struct store_impl *st, int64_t now_ms)
{
	struct pin_work w;
	int rc;

	/* Read-only: no rows to write, but idle pins still leave memory. */
	if (!pin_table_due(&st->pins, now_ms, &w) || st->read_only)
		return 0;
	rc = pg_begin(st, true);
	if (rc)
		return rc;
	if (w.renew) {
		struct pg_params p = { 0 };

		pg_int(&p, st->mount_id);
		pg_int(&p, now_ms + PIN_TTL_MS);
		rc = pg_exec(st, P_PIN_RENEW, &p);
	}
	for (size_t i = 0; i < w.n && rc == 0; i++) {
		struct pg_params p = { 0 };

		if (!w.drop[i]) {
			rc = pin_row(st, w.ids[i], now_ms);
			if (rc == -ENOENT)
				rc = 0;	/* gone: its reads say EIO */
			continue;
		}
		pg_int(&p, w.ids[i]);
		pg_int(&p, st->mount_id);
		rc = pg_exec(st, P_PIN_DELETE, &p);
	}
	if (rc) {
		pg_rollback(st);
		return rc;
	}
	rc = pg_commit(st);
	if (rc == 0)
		pin_table_done(&st->pins, &w, now_ms);
	return rc;
}

int pg_new_content(struct store_impl *st, int64_t size, bool dead,
		   int64_t *id)
{
	struct pg_params p = { 0 };

	pg_int(&p, size);
	pg_int(&p, dead);
	return pg_one_int(st, P_CONTENT_NEW, &p, id);
}

int pg_put_chunks(struct store_impl *st, int64_t content, int64_t first_seq,
		  const char *buf, size_t len)
{
	int64_t seq = first_seq;
	int rc = 0;

	for (size_t off = 0; off < len && rc == 0; off += PG_CHUNK, seq++) {
		struct pg_params p = { 0 };
		size_t n = len - off > PG_CHUNK ? PG_CHUNK : len - off;

		pg_int(&p, content);
		pg_int(&p, seq);
		pg_bytes(&p, buf + off, n);
		rc = pg_exec(st, P_CHUNK_INSERT, &p);
	}
	return rc;
}

/* Read want bytes of fd at off into buf, with no lock held. */
static int read_fd(int fd, char *buf, size_t want, int64_t off)
{
	size_t got = 0;

	while (got < want) {
		ssize_t n = pread(fd, buf + got, want - got, off + (int64_t)got);

		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		got += (size_t)n;
	}
	return 0;
}

int pg_content_stage(struct store_impl *st, int fd, int64_t size,
		     int64_t now_ms, int64_t *content)
{
	char *chunk;
	int64_t id = 0;
	int rc;

	*content = 0;
	if (size == 0)
		return 0;
	chunk = malloc(PG_CHUNK);
	if (!chunk)
		return -ENOMEM;
	/* Born dead and pinned: a crash leaves it for the purge. */
	rc = pg_begin(st, true);
	if (rc == 0) {
		rc = pg_new_content(st, size, true, &id);
		if (rc == 0)
			rc = pin_row(st, id, now_ms);
		if (rc == 0)
			rc = pg_commit(st);
		else
			pg_rollback(st);
	}
	if (rc == 0)
		rc = pin_table_add(&st->pins, id, true);
	/*
	 * Each chunk in a statement of its own, outside the writer row: the
	 * version is this mount's alone until a commit names it.
	 */
	for (int64_t off = 0; rc == 0 && off < size; off += PG_CHUNK) {
		size_t want = size - off > PG_CHUNK ? PG_CHUNK
						    : (size_t)(size - off);

		rc = read_fd(fd, chunk, want, off);
		if (rc == 0)
			rc = pg_take(st);
		if (rc)
			break;
		rc = pg_put_chunks(st, id, off / PG_CHUNK, chunk, want);
		pg_give(st);
	}
	free(chunk);
	if (rc) {
		pg_unpin(st, id);
		return rc;
	}
	*content = id;
	return 0;
}

int pg_content_read(struct store_impl *st, int64_t content, int64_t size,
		    int64_t off, char *buf, size_t len, size_t *got)
{
	int rc;

	*got = 0;
	if (content == 0 || off < 0 || off >= size)
		return 0;
	if ((int64_t)len > size - off)
		len = (size_t)(size - off);
	rc = pg_take(st);
	if (rc)
		return rc;
	while (rc == 0 && *got < len) {
		int64_t at = off + (int64_t)*got, in = at % PG_CHUNK;
		size_t n = len - *got;
		struct pg_params p = { 0 };
		PGresult *r;

		if ((int64_t)n > PG_CHUNK - in)
			n = (size_t)(PG_CHUNK - in);
		pg_int(&p, content);
		pg_int(&p, at / PG_CHUNK);
		pg_int(&p, in + 1);
		pg_int(&p, (int64_t)n);
		rc = pg_run(st, P_CHUNK_READ, &p, &r);
		if (rc)
			break;
		/* The version is gone, or short: only an unpinned read sees that. */
		if (PQntuples(r) != 1 || PQgetlength(r, 0, 0) != (int)n)
			rc = -EIO;
		else
			memcpy(buf + *got, PQgetvalue(r, 0, 0), n);
		PQclear(r);
		if (rc == 0)
			*got += n;
	}
	pg_give(st);
	return rc;
}

int pg_step_set_content(struct store_impl *st, struct step_row *r,
			int64_t content, int64_t size, int64_t mtime_ns)
{
	struct pg_params p = { 0 };
	int64_t v;
	int rc;

	pg_int(&p, r->id);
	pg_int(&p, content);
	pg_int(&p, size);
	pg_int(&p, mtime_ns);
	rc = pg_one_int(st, P_STEP_SET_CONTENT, &p, &v);
	if (rc == -ENOENT)
		return -EIO;	/* the staged version is gone */
	if (rc == 0) {
		r->content = content;
		r->size = size;
		r->mtime_ns = mtime_ns;
	}
	return rc;
}

int pg_step_delete(struct store_impl *st, int64_t id)
{
	struct pg_params p = { 0 };

	pg_int(&p, id);
	return pg_exec(st, P_STEP_DELETE, &p);
}

/*
 * The purge, in one transaction of bounded work: checkpoints of old
 * epochs, then up to max chunks of dead versions no live pin holds.
 */
int pg_purge(struct store_impl *st, int64_t now_ms, int max, int64_t *purged)
{
	struct pg_params p = { 0 };
	int64_t wf = 0, epoch = 0, n = 0;
	PGresult *r;
	int rc;

	*purged = 0;
	rc = pg_run(st, P_PURGE_WF, NULL, &r);
	if (rc)
		return rc;
	if (PQntuples(r)) {
		wf = pg_col_int(r, 0, 0);
		epoch = pg_col_int(r, 0, 1);
	}
	PQclear(r);
	if (wf) {
		int want = max < 64 ? max : 64, got;

		pg_int(&p, wf);
		pg_int(&p, epoch);
		pg_int(&p, want);
		rc = pg_run(st, P_PURGE_STEPS, &p, &r);
		if (rc)
			return rc;
		got = PQntuples(r);
		for (int i = 0; i < got && rc == 0; i++)
			rc = pg_step_delete(st, pg_col_int(r, i, 0));
		PQclear(r);
		if (rc == 0 && got < want) {
			p.n = 2;
			rc = pg_exec(st, P_PURGE_WF_DONE, &p);
		}
		if (rc)
			return rc;
		*purged += got ? got : (got < want);
	}
	for (int64_t left = max; left > 0; left -= n) {
		int64_t content = 0;

		p.n = 0;
		pg_int(&p, now_ms);
		rc = pg_one_int(st, P_PURGE_CONTENT, &p, &content);
		if (rc == -ENOENT)
			return 0;
		if (rc)
			return rc;
		p.n = 0;
		pg_int(&p, content);
		pg_int(&p, left);
		rc = pg_exec_count(st, P_PURGE_CHUNKS, &p, &n);
		if (rc)
			return rc;
		*purged += n;
		if (n == left)
			break;	/* perhaps more of it: the next call goes on */
		p.n = 1;
		rc = pg_exec(st, P_PURGE_CONTENT_ROW, &p);
		if (rc)
			return rc;
		(*purged)++;
		n++;
	}
	return 0;
}
