/*
 * store_sqlite_content.c - the SQLite backend's content versions: chunks,
 * pins, staging, reads on pooled connections, the rows that name content,
 * and the purge (see store_sqlite.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "event.h"
#include "store_sqlite.h"

/* ---- content versions ------------------------------------------------- */

static int pin_row(struct store_impl *st, int64_t content, int64_t now_ms)
{
	sqlite3_stmt *s = sq_stmt(st, S_PIN_INSERT);
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, content);
	sqlite3_bind_int64(s, 2, st->mount_id);
	sqlite3_bind_int64(s, 3, now_ms + PIN_TTL_MS);
	rc = sq_exec(st, s, "pin");
	if (rc == 0 && sqlite3_changes(st->main.db) == 0)
		rc = -ENOENT;
	return rc;
}

int sq_pin(struct store_impl *st, int64_t content, int64_t now_ms)
{
	int rc;

	if (content == 0 || pin_table_ref(&st->pins, content))
		return 0;
	/*
	 * The row, without waiting: a read never waits for another
	 * process's write lock.
	 */
	rc = sq_begin_txn(st, true, false);
	if (rc == 0) {
		rc = pin_row(st, content, now_ms);
		if (rc == 0)
			rc = sq_commit_lazy(st);
		else
			sq_rollback(st);
	}
	/*
	 * A store that takes no write now (another process holds its lock,
	 * the disk is full, a sync failed) must not fail a read: the pin
	 * lives in memory, and sq_pins_renew() writes its row later.  A
	 * purge needs that same lock or room, so the window is narrow, and
	 * a version purged in it reads as EIO, never as other bytes (ids are
	 * never reused).
	 */
	if (rc != 0 && rc != -EROFS && rc != -EAGAIN && rc != -ENOSPC)
		return rc;
	return pin_table_add(&st->pins, content, rc == 0);
}

void sq_unpin(struct store_impl *st, int64_t content)
{
	if (content)
		pin_table_unref(&st->pins, content);
}

/* One statement for a pin row of this mount: drop or (re)write it. */
static int pin_row_change(struct store_impl *st, int64_t content, bool drop,
			  int64_t now_ms)
{
	sqlite3_stmt *s;
	int rc;

	if (!drop) {
		rc = pin_row(st, content, now_ms);
		return rc == -ENOENT ? 0 : rc;	/* gone: its reads say EIO */
	}
	s = sq_stmt(st, S_PIN_DELETE);
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, content);
	sqlite3_bind_int64(s, 2, st->mount_id);
	return sq_exec(st, s, "unpin");
}

int sq_pins_renew(struct store_impl *st, int64_t now_ms)
{
	struct pin_work w;
	int rc;

	if (!pin_table_due(&st->pins, now_ms, &w))
		return 0;	/* nothing due: no transaction at all */
	rc = sq_begin(st, true);
	if (rc)
		return rc;
	if (w.renew) {
		sqlite3_stmt *s = sq_stmt(st, S_PIN_RENEW);

		rc = s ? 0 : -EIO;
		if (s) {
			sqlite3_bind_int64(s, 1, st->mount_id);
			sqlite3_bind_int64(s, 2, now_ms + PIN_TTL_MS);
			rc = sq_exec(st, s, "renew pins");
		}
	}
	for (size_t i = 0; i < w.n && rc == 0; i++)
		rc = pin_row_change(st, w.ids[i], w.drop[i], now_ms);
	if (rc) {
		sq_rollback(st);
		return rc;
	}
	rc = sq_commit_lazy(st);
	if (rc == 0)
		pin_table_done(&st->pins, &w, now_ms);
	return rc;
}

/* A content version's bytes, written as chunks of content from buf. */
int sq_put_chunks(struct store_impl *st, int64_t content, int64_t first_seq,
		  const char *buf, size_t len)
{
	sqlite3_stmt *ins = sq_stmt(st, S_CHUNK_INSERT);
	int64_t seq = first_seq;
	int rc = 0;

	if (!ins)
		return -EIO;
	for (size_t off = 0; off < len && rc == 0; off += STORE_CHUNK, seq++) {
		size_t n = len - off > STORE_CHUNK ? STORE_CHUNK : len - off;

		sqlite3_bind_int64(ins, 1, content);
		sqlite3_bind_int64(ins, 2, seq);
		sqlite3_bind_blob(ins, 3, buf + off, (int)n, SQLITE_STATIC);
		rc = sq_exec(st, ins, "write chunk");
	}
	return rc;
}

int sq_new_content(struct store_impl *st, int64_t size, bool dead,
		   int64_t *id)
{
	sqlite3_stmt *s = sq_stmt(st, S_CONTENT_NEW);
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, size);
	sqlite3_bind_int(s, 2, dead);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*id = sqlite3_column_int64(s, 0);
	sq_done(s);
	return rc == SQLITE_ROW ? 0 : sq_error(st, rc, "new content");
}

int sq_by_id(struct store_impl *st, enum stmt_id id, int64_t value,
	     const char *what)
{
	sqlite3_stmt *s = sq_stmt(st, id);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, value);
	return sq_exec(st, s, what);
}

int sq_content_stage(struct store_impl *st, int fd, int64_t size,
		     int64_t now_ms, int64_t *content)
{
	char *chunk = NULL;
	int64_t id = 0;
	int rc;

	*content = 0;
	if (size == 0)
		return 0;
	chunk = malloc(STORE_CHUNK);
	if (!chunk)
		return -ENOMEM;
	/* Born dead and pinned: a crash leaves it for the purge. */
	pthread_mutex_lock(&st->pin_lock);
	rc = sq_begin(st, true);
	if (rc == 0) {
		rc = sq_new_content(st, size, true, &id);
		if (rc == 0)
			rc = pin_row(st, id, now_ms);
		if (rc == 0)
			rc = sq_commit_lazy(st);
		else
			sq_rollback(st);
	}
	if (rc == 0)
		rc = pin_table_add(&st->pins, id, true);
	pthread_mutex_unlock(&st->pin_lock);
	for (int64_t off = 0; rc == 0 && off < size; off += STORE_CHUNK) {
		size_t want = size - off > STORE_CHUNK ? STORE_CHUNK
						       : (size_t)(size - off);
		size_t got = 0;

		/* The file is read with no lock held. */
		while (got < want && rc == 0) {
			ssize_t n = pread(fd, chunk + got, want - got, off + got);

			if (n < 0)
				rc = -errno;
			else if (n == 0)
				rc = -EIO;
			else
				got += (size_t)n;
		}
		if (rc == 0)
			rc = sq_begin(st, true);
		if (rc)
			break;
		rc = sq_put_chunks(st, id, off / STORE_CHUNK, chunk, want);
		if (rc == 0)
			rc = sq_commit_lazy(st);
		else
			sq_rollback(st);
	}
	free(chunk);
	if (rc) {
		sq_unpin(st, id);
		return rc;
	}
	*content = id;
	return 0;
}

/* ---- reading content -------------------------------------------------- */

/*
 * A read takes a pooled read-only connection for the time of one call:
 * a short transaction, never a snapshot that lives with the open file.
 */

void sq_reader_conn_close(struct reader_conn *rc)
{
	sqlite3_finalize(rc->find);
	sqlite3_close(rc->db);
}

static int reader_conn_get(struct store_impl *st, struct reader_conn *out)
{
	bool got = false;

	pthread_mutex_lock(&st->pool_lock);
	if (st->n_idle_readers > 0) {
		*out = st->idle_readers[--st->n_idle_readers];
		got = true;
	}
	pthread_mutex_unlock(&st->pool_lock);
	if (got)
		return 0;
	memset(out, 0, sizeof(*out));
	if (sqlite3_open_v2(st->open_name ? st->open_name : st->path, &out->db,
			    SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX |
			    (st->open_name ? SQLITE_OPEN_URI : 0), NULL) != SQLITE_OK ||
	    sqlite3_prepare_v3(out->db, "SELECT id FROM chunks WHERE content = ?1 "
			       "AND seq = ?2", -1, SQLITE_PREPARE_PERSISTENT,
			       &out->find, NULL) != SQLITE_OK) {
		syslog(LOG_ERR, "oncefs: reader: %s", sqlite3_errmsg(out->db));
		sq_reader_conn_close(out);
		return -EIO;
	}
	sqlite3_busy_timeout(out->db, st->busy_timeout_ms);
	return 0;
}

static void reader_conn_put(struct store_impl *st, struct reader_conn *c)
{
	bool kept = false;

	pthread_mutex_lock(&st->pool_lock);
	if (st->n_idle_readers < (int)(sizeof(st->idle_readers) /
				       sizeof(st->idle_readers[0]))) {
		st->idle_readers[st->n_idle_readers++] = *c;
		kept = true;
	}
	pthread_mutex_unlock(&st->pool_lock);
	if (!kept)
		sq_reader_conn_close(c);
}

int sq_content_read(struct store_impl *st, int64_t content, int64_t size,
		    int64_t off, char *buf, size_t len, size_t *got)
{
	struct reader_conn c;
	sqlite3_blob *blob = NULL;
	int rc;

	*got = 0;
	if (content == 0 || off < 0 || off >= size)
		return 0;
	if ((int64_t)len > size - off)
		len = (size_t)(size - off);
	rc = reader_conn_get(st, &c);
	if (rc)
		return rc;
	if (sqlite3_exec(c.db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
		sq_reader_conn_close(&c);
		return -EIO;
	}
	while (rc == 0 && *got < len) {
		int64_t at = off + (int64_t)*got;
		int64_t in = at % STORE_CHUNK, rowid = -1;
		size_t n = len - *got;

		sqlite3_bind_int64(c.find, 1, content);
		sqlite3_bind_int64(c.find, 2, at / STORE_CHUNK);
		if (sqlite3_step(c.find) == SQLITE_ROW)
			rowid = sqlite3_column_int64(c.find, 0);
		sqlite3_reset(c.find);
		if (rowid < 0) {
			/* The version is gone: only an unpinned read sees that. */
			rc = -EIO;
			break;
		}
		if (blob ? sqlite3_blob_reopen(blob, rowid)
			 : sqlite3_blob_open(c.db, "main", "chunks", "data",
					     rowid, 0, &blob)) {
			rc = -EIO;
			break;
		}
		if ((int64_t)n > STORE_CHUNK - in)
			n = (size_t)(STORE_CHUNK - in);
		if ((int64_t)n > sqlite3_blob_bytes(blob) - in ||
		    sqlite3_blob_read(blob, buf + *got, (int)n, (int)in))
			rc = -EIO;
		else
			*got += n;
	}
	sqlite3_blob_close(blob);
	sqlite3_exec(c.db, "COMMIT", NULL, NULL, NULL);
	reader_conn_put(st, &c);
	if (rc == 0 && !sq_read_still_valid(st))
		rc = -EAGAIN;
	return rc;
}

/* ---- rows that name content ------------------------------------------- */

int sq_step_set_content(struct store_impl *st, struct step_row *r,
			int64_t content, int64_t size, int64_t mtime_ns)
{
	sqlite3_stmt *s = sq_stmt(st, S_STEP_SET_CONTENT);
	sqlite3_stmt *live = sq_stmt(st, S_CONTENT_LIVE);
	int rc;

	if (!s || !live)
		return -EIO;
	rc = r->content ? sq_by_id(st, S_CONTENT_KILL, r->content, "old content") : 0;
	if (rc == 0 && content) {
		sqlite3_bind_int64(live, 1, content);
		sqlite3_bind_int64(live, 2, size);
		rc = sq_exec(st, live, "new content");
		if (rc == 0 && sqlite3_changes(st->main.db) != 1)
			rc = -EIO;	/* the staged version is gone */
	}
	if (rc)
		return rc;
	sqlite3_bind_int64(s, 1, r->id);
	sqlite3_bind_int64(s, 2, content);
	sqlite3_bind_int64(s, 3, size);
	sqlite3_bind_int64(s, 4, mtime_ns);
	rc = sq_exec(st, s, "step content");
	if (rc == 0) {
		r->content = content;
		r->size = size;
		r->mtime_ns = mtime_ns;
	}
	return rc;
}

int sq_step_delete(struct store_impl *st, int64_t id)
{
	int rc = sq_by_id(st, S_STEP_KILL_CONTENT, id, "step content");

	return rc ? rc : sq_by_id(st, S_STEP_DELETE, id, "delete step");
}

/*
 * The purge, in one transaction of bounded work: checkpoints of old
 * epochs (found through workflows_to_purge, never a scan), then up to
 * max chunks of one dead version that no live pin holds.
 */
int sq_purge(struct store_impl *st, int64_t now_ms, int max,
	     int64_t *purged)
{
	sqlite3_stmt *s = sq_stmt(st, S_PURGE_WF);
	int64_t wf = 0, epoch = 0, content = 0;
	int rc, n = 0;

	*purged = 0;
	if (!s)
		return -EIO;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		wf = sqlite3_column_int64(s, 0);
		epoch = sqlite3_column_int64(s, 1);
	}
	sq_done(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sq_error(st, rc, "purge");
	if (wf) {
		int64_t ids[64];
		int want = max < 64 ? max : 64;

		s = sq_stmt(st, S_PURGE_STEPS);
		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, wf);
		sqlite3_bind_int64(s, 2, epoch);
		sqlite3_bind_int(s, 3, want);
		while (n < want && (rc = sqlite3_step(s)) == SQLITE_ROW)
			ids[n++] = sqlite3_column_int64(s, 0);
		sq_done(s);
		rc = 0;
		for (int i = 0; i < n && rc == 0; i++)
			rc = sq_step_delete(st, ids[i]);
		if (rc == 0 && n < want) {
			s = sq_stmt(st, S_PURGE_WF_DONE);
			rc = s ? 0 : -EIO;
			if (s) {
				sqlite3_bind_int64(s, 1, wf);
				sqlite3_bind_int64(s, 2, epoch);
				rc = sq_exec(st, s, "purged epoch");
			}
		}
		if (rc)
			return rc;
		/* Done with that workflow: count it, so that the caller goes on. */
		*purged += n ? n : (n < want);
	}
	/* Dead versions, up to max chunks in all. */
	for (int left = max; left > 0; left -= n) {
		content = 0;
		s = sq_stmt(st, S_PURGE_CONTENT);
		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, now_ms);
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW)
			content = sqlite3_column_int64(s, 0);
		sq_done(s);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return sq_error(st, rc, "purge content");
		if (content == 0)
			return 0;
		s = sq_stmt(st, S_PURGE_CHUNKS);
		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, content);
		sqlite3_bind_int(s, 2, left);
		rc = sq_exec(st, s, "purge chunks");
		if (rc)
			return rc;
		n = sqlite3_changes(st->main.db);
		*purged += n;
		if (n == left)
			break;	/* perhaps more of it: the next call goes on */
		/* The last of it: the version goes, with its lapsed pins. */
		rc = sq_by_id(st, S_PURGE_CONTENT_ROW, content, "purge content");
		if (rc == 0)
			rc = sq_by_id(st, S_PIN_DROP_ALL, content, "lapsed pins");
		if (rc)
			return rc;
		(*purged)++;
		n++;
	}
	return 0;
}

