/*
 * store_sqlite_rows.c - the SQLite backend's rows: workflows, keys and
 * their notes, input holds, checkpoints, events, and the sweep's queries
 * (see store_sqlite.h).
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

/* ---- rows ------------------------------------------------------------- */

typedef int row_reader(struct store_impl *st, sqlite3_stmt *s, void *row);

/*
 * Step s for up to max rows, reading each with fn into rows (of size
 * bytes each); *n gets the count.  A row that fails its checks ends the
 * list with its error.
 */
static int read_rows(struct store_impl *st, sqlite3_stmt *s, row_reader *fn,
		     void *rows, size_t size, int max, int *n, const char *what)
{
	int rc = SQLITE_DONE;

	*n = 0;
	while (*n < max && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		int bad = fn(st, s, (char *)rows + size * (size_t)*n);

		if (bad) {
			sq_done(s);
			return bad;
		}
		(*n)++;
	}
	sq_done(s);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sq_error(st, rc, what);
}

static int wf_reader(struct store_impl *st, sqlite3_stmt *s, void *row);
static int key_reader(struct store_impl *st, sqlite3_stmt *s, void *row);
static int step_reader(struct store_impl *st, sqlite3_stmt *s, void *row);

/* ---- workflows -------------------------------------------------------- */

static int read_wf(struct store_impl *st, sqlite3_stmt *s, struct wf_row *w)
{
	static const char t[] = "workflows";
	const void *fp;
	size_t fp_len;
	int64_t v[8];
	int rc;

	w->id = sqlite3_column_int64(s, 0);
	rc = sq_copy_name(st, t, w->id, s, 1, w->name, &w->name_len);
	if (!rc)
		rc = sq_column_in(st, t, w->id, s, 2, "uid", 0, UINT32_MAX, &v[0]);
	if (!rc)
		rc = sq_column_in(st, t, w->id, s, 3, "gid", 0, UINT32_MAX, &v[1]);
	if (!rc)
		rc = sq_column_in(st, t, w->id, s, 4, "mode", 0, 07777, &v[2]);
	if (!rc)
		rc = sq_column_in(st, t, w->id, s, 7, "on_input_change",
			       ON_INPUT_RESET, ON_INPUT_RAISE, &v[3]);
	if (!rc)
		rc = sq_column_in(st, t, w->id, s, 8, "dedup_on", DEDUP_SUCCESS,
			       DEDUP_ANY, &v[4]);
	if (!rc)
		rc = sq_column_in(st, t, w->id, s, 9, "in_flight_ttl", 1,
			       POLICY_TTL_MAX, &v[5]);
	if (!rc)
		rc = sq_column_in(st, t, w->id, s, 10, "retention", 0,
			       POLICY_RETENTION_MAX, &v[6]);
	if (!rc)
		rc = sq_column_in(st, t, w->id, s, 12, "epoch", 0, INT64_MAX, &w->epoch);
	if (!rc)
		rc = sq_column_in(st, t, w->id, s, 13, "events size", 0, INT64_MAX,
			       &w->events_size);
	fp = sqlite3_column_blob(s, 11);
	w->fingerprint_len = (size_t)sqlite3_column_bytes(s, 11);
	if (!rc && w->fingerprint_len &&
	    (fingerprint_parse(fp, w->fingerprint_len, &fp_len) ||
	     fp_len != w->fingerprint_len))
		rc = sq_bad_row(st, t, w->id, "fingerprint of length",
			     (int64_t)w->fingerprint_len);
	if (rc)
		return rc;
	w->uid = (uint32_t)v[0];
	w->gid = (uint32_t)v[1];
	w->mode = (uint32_t)v[2];
	w->ctime_ns = sqlite3_column_int64(s, 5);
	w->mtime_ns = sqlite3_column_int64(s, 6);
	w->policy.on_input_change = (enum on_input_change)v[3];
	w->policy.dedup_on = (enum dedup_on)v[4];
	w->policy.in_flight_ttl = v[5];
	w->policy.retention = v[6];
	if (w->fingerprint_len)
		memcpy(w->fingerprint, fp, w->fingerprint_len);
	w->fingerprint[w->fingerprint_len] = '\0';
	return 0;
}

static int wf_reader(struct store_impl *st, sqlite3_stmt *s, void *row)
{
	return read_wf(st, s, row);
}

static void bind_wf(sqlite3_stmt *s, const struct wf_row *w)
{
	sqlite3_bind_int64(s, 1, w->id);
	sq_bind_blob(s, 2, w->name, w->name_len);
	sqlite3_bind_int64(s, 3, w->uid);
	sqlite3_bind_int64(s, 4, w->gid);
	sqlite3_bind_int64(s, 5, w->mode);
	sqlite3_bind_int64(s, 6, w->ctime_ns);
	sqlite3_bind_int64(s, 7, w->mtime_ns);
	sqlite3_bind_int(s, 8, w->policy.on_input_change);
	sqlite3_bind_int(s, 9, w->policy.dedup_on);
	sqlite3_bind_int64(s, 10, w->policy.in_flight_ttl);
	sqlite3_bind_int64(s, 11, w->policy.retention);
	if (w->fingerprint_len)
		sq_bind_blob(s, 12, w->fingerprint, w->fingerprint_len);
	else
		sqlite3_bind_null(s, 12);
	sqlite3_bind_int64(s, 13, w->epoch);
	sqlite3_bind_int64(s, 14, w->events_size);
}

static int get_one_wf(struct store_impl *st, sqlite3_stmt *s,
		      struct wf_row *out)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW) {
		rc = read_wf(st, s, out);
		sq_done(s);
		return rc;
	}
	sq_done(s);
	return rc == SQLITE_DONE ? -ENOENT : sq_error(st, rc, "workflow");
}

int sq_wf_by_name(struct store_impl *st, const char *name, size_t len,
		  struct wf_row *out)
{
	sqlite3_stmt *s = sq_stmt(st, S_WF_BY_NAME);

	if (!s)
		return -EIO;
	sq_bind_blob(s, 1, name, len);
	return get_one_wf(st, s, out);
}

int sq_wf_by_id(struct store_impl *st, int64_t id, struct wf_row *out)
{
	sqlite3_stmt *s = sq_stmt(st, S_WF_BY_ID);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	return get_one_wf(st, s, out);
}

int sq_wf_insert(struct store_impl *st, struct wf_row *row)
{
	sqlite3_stmt *s = sq_stmt(st, S_WF_INSERT);
	int rc;

	if (!s)
		return -EIO;
	bind_wf(s, row);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		row->id = sqlite3_column_int64(s, 0);
		sq_done(s);
		return 0;
	}
	sq_done(s);
	if ((rc & 0xff) == SQLITE_CONSTRAINT)
		return -EEXIST;
	return sq_error(st, rc, "insert workflow");
}

int sq_wf_update(struct store_impl *st, const struct wf_row *row)
{
	sqlite3_stmt *s = sq_stmt(st, S_WF_UPDATE);
	int rc;

	if (!s)
		return -EIO;
	bind_wf(s, row);
	rc = sqlite3_step(s);
	sq_done(s);
	if (rc == SQLITE_DONE)
		return sqlite3_changes(st->main.db) ? 0 : -ENOENT;
	if ((rc & 0xff) == SQLITE_CONSTRAINT)
		return -EEXIST;
	return sq_error(st, rc, "update workflow");
}

int sq_wf_delete(struct store_impl *st, int64_t id)
{
	static const enum stmt_id order[] = {
		S_WF_KILL_CONTENT, S_WF_DELETE_KEYS, S_WF_DELETE_STEPS,
		S_WF_DELETE_EVENTS, S_WF_DELETE_HOLDS,
		S_WF_DELETE,
	};

	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		sqlite3_stmt *s = sq_stmt(st, order[i]);
		int rc;

		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, id);
		rc = sq_exec(st, s, "delete workflow");
		if (rc)
			return rc;
	}
	return 0;
}

int sq_wf_list(struct store_impl *st, int64_t after, struct wf_row *rows,
	       int max, int *n)
{
	sqlite3_stmt *s = sq_stmt(st, S_WF_LIST);

	*n = 0;
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, after);
	sqlite3_bind_int(s, 2, max);
	return read_rows(st, s, wf_reader, rows, sizeof(*rows), max, n,
			 "list workflows");
}

/* ---- keys ------------------------------------------------------------- */

static int read_key(struct store_impl *st, sqlite3_stmt *s, struct key_row *k)
{
	static const char t[] = "keys";
	int64_t status = 0, pid = 0, uid = 0;
	int rc;

	k->id = sqlite3_column_int64(s, 0);
	k->wf = sqlite3_column_int64(s, 1);
	rc = sq_copy_name(st, t, k->id, s, 2, k->name, &k->name_len);
	if (!rc)
		rc = sq_column_in(st, t, k->id, s, 3, "status", KEY_VACANT,
			       KEY_FAILED, &status);
	if (!rc)
		rc = sq_column_in(st, t, k->id, s, 4, "generation", 1, INT64_MAX,
			       &k->generation);
	if (!rc)
		rc = sq_column_in(st, t, k->id, s, 5, "attempt", 0, INT64_MAX,
			       &k->attempt);
	if (!rc)
		rc = sq_column_in(st, t, k->id, s, 8, "holder pid", 0, INT32_MAX, &pid);
	if (!rc)
		rc = sq_column_in(st, t, k->id, s, 9, "holder uid", 0, UINT32_MAX, &uid);
	if (rc)
		return rc;
	k->status = (enum key_status)status;
	k->expires_ms = sqlite3_column_int64(s, 6);
	k->mtime_ns = sqlite3_column_int64(s, 7);
	k->holder_pid = (int32_t)pid;
	k->holder_uid = (uint32_t)uid;
	k->result_len = sqlite3_column_int64(s, 10);
	k->content = sqlite3_column_int64(s, 11);
	rc = sq_column_in(st, t, k->id, s, 12, "previous generation", 0,
		       k->generation - 1, &k->previous);
	if (rc)
		return rc;
	{
		const char *host = (const char *)sqlite3_column_blob(s, 13);
		size_t n = (size_t)sqlite3_column_bytes(s, 13);

		if (!store_host_ok(host ? host : "", n))
			return sq_bad_row(st, t, k->id, "holder host of length",
					  (int64_t)n);
		memcpy(k->holder_host, host ? host : "", n);
		k->holder_host[n] = '\0';
	}
	if (k->result_len < 0 || k->result_len > INT32_MAX)
		return sq_bad_row(st, t, k->id, "result length", k->result_len);
	if (k->content < 0 || (k->content == 0) != (k->result_len == 0))
		return sq_bad_row(st, t, k->id, "result content", k->content);
	return 0;
}

static int key_reader(struct store_impl *st, sqlite3_stmt *s, void *row)
{
	return read_key(st, s, row);
}

static void bind_key(sqlite3_stmt *s, const struct key_row *k)
{
	sqlite3_bind_int64(s, 1, k->id);
	sqlite3_bind_int64(s, 2, k->wf);
	sq_bind_blob(s, 3, k->name, k->name_len);
	sqlite3_bind_int(s, 4, k->status);
	sqlite3_bind_int64(s, 5, k->generation);
	sqlite3_bind_int64(s, 6, k->attempt);
	sqlite3_bind_int64(s, 7, k->expires_ms);
	sqlite3_bind_int64(s, 8, k->mtime_ns);
	sqlite3_bind_int64(s, 9, k->holder_pid);
	sqlite3_bind_int64(s, 10, k->holder_uid);
	sqlite3_bind_int64(s, 11, k->previous);
	sqlite3_bind_text(s, 12, k->holder_host, -1, SQLITE_TRANSIENT);
}

static int get_one_key(struct store_impl *st, sqlite3_stmt *s,
		       struct key_row *out)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW) {
		rc = read_key(st, s, out);
		sq_done(s);
		return rc;
	}
	sq_done(s);
	return rc == SQLITE_DONE ? -ENOENT : sq_error(st, rc, "key");
}

int sq_key_get(struct store_impl *st, int64_t wf, const char *name,
	       size_t len, struct key_row *out)
{
	sqlite3_stmt *s = sq_stmt(st, S_KEY_GET);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sq_bind_blob(s, 2, name, len);
	return get_one_key(st, s, out);
}

int sq_key_by_generation(struct store_impl *st, int64_t generation,
			 struct key_row *out)
{
	sqlite3_stmt *s = sq_stmt(st, S_KEY_BY_GEN);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, generation);
	return get_one_key(st, s, out);
}

int sq_key_result(struct store_impl *st, const struct key_row *k,
		  char **buf, size_t *len)
{
	size_t got = 0;
	int rc;

	*len = 0;
	*buf = malloc(k->result_len ? (size_t)k->result_len : 1);
	if (!*buf)
		return -ENOMEM;
	rc = sq_content_read(st, k->content, k->result_len, 0, *buf,
				(size_t)k->result_len, &got);
	if (rc == 0 && got != (size_t)k->result_len)
		rc = -EIO;
	if (rc) {
		free(*buf);
		*buf = NULL;
		return rc;
	}
	*len = got;
	return 0;
}

int sq_key_insert(struct store_impl *st, struct key_row *row)
{
	sqlite3_stmt *s = sq_stmt(st, S_KEY_INSERT);
	int rc;

	if (!s)
		return -EIO;
	bind_key(s, row);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		row->id = sqlite3_column_int64(s, 0);
		sq_done(s);
		return 0;
	}
	sq_done(s);
	if ((rc & 0xff) == SQLITE_CONSTRAINT)
		return -EEXIST;
	return sq_error(st, rc, "insert key");
}

int sq_key_update(struct store_impl *st, const struct key_row *row)
{
	sqlite3_stmt *s = sq_stmt(st, S_KEY_UPDATE);
	int rc;

	if (!s)
		return -EIO;
	bind_key(s, row);
	rc = sq_exec(st, s, "update key");
	if (rc || sqlite3_changes(st->main.db) > 0)
		return rc;
	/* A new generation (or no row at all). */
	s = sq_stmt(st, S_KEY_UPDATE_GEN);
	if (!s)
		return -EIO;
	bind_key(s, row);
	return sq_exec(st, s, "update key");
}

int sq_key_set_result(struct store_impl *st, struct key_row *k,
		      const char *buf, size_t len)
{
	sqlite3_stmt *s = sq_stmt(st, S_KEY_SET_CONTENT);
	int64_t content = 0;
	int rc;

	if (!s)
		return -EIO;
	rc = k->content ? sq_by_id(st, S_CONTENT_KILL, k->content, "old result") : 0;
	if (rc == 0 && len)
		rc = sq_new_content(st, (int64_t)len, false, &content);
	if (rc == 0 && len)
		rc = sq_put_chunks(st, content, 0, buf, len);
	if (rc)
		return rc;
	sqlite3_bind_int64(s, 1, k->id);
	sqlite3_bind_int64(s, 2, content);
	sqlite3_bind_int64(s, 3, (int64_t)len);
	rc = sq_exec(st, s, "key result");
	if (rc == 0) {
		k->content = content;
		k->result_len = (int64_t)len;
	}
	return rc;
}

int sq_key_delete(struct store_impl *st, int64_t id)
{
	sqlite3_stmt *s = sq_stmt(st, S_KEY_DELETE);
	int rc = sq_by_id(st, S_KEY_KILL_CONTENT, id, "key result");

	if (rc)
		return rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	return sq_exec(st, s, "delete key");
}

/* Where a note lives, and how long it may be. */
static const struct {
	enum stmt_id get, set;
	size_t max;
	const char *what;
} notes[] = {
	[KEY_NOTE_REQUEST] = { S_KEY_REQUEST, S_KEY_SET_REQUEST,
			       KEY_REQUEST_MAX, "request" },
	[KEY_NOTE_ORIGINAL] = { S_KEY_ORIGINAL, S_KEY_SET_ORIGINAL,
				KEY_ORIGINAL_MAX, "original name" },
};

int sq_key_note(struct store_impl *st, int64_t id, enum key_note which,
		char *buf, size_t *len)
{
	sqlite3_stmt *s = sq_stmt(st, notes[which].get);
	const void *p;
	size_t n;
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		sq_done(s);
		return rc == SQLITE_DONE ? -ENOENT : sq_error(st, rc, "key note");
	}
	p = sqlite3_column_blob(s, 0);
	n = (size_t)sqlite3_column_bytes(s, 0);
	if (n > notes[which].max) {
		sq_done(s);
		return sq_bad_row(st, "keys", id, notes[which].what, (int64_t)n);
	}
	if (n)
		memcpy(buf, p, n);
	sq_done(s);
	*len = n;
	return n ? 0 : -ENODATA;
}

int sq_key_set_note(struct store_impl *st, int64_t id,
		    enum key_note which, const char *buf, size_t len)
{
	sqlite3_stmt *s = sq_stmt(st, notes[which].set);

	if (!s)
		return -EIO;
	if (len > notes[which].max)
		return -E2BIG;
	sqlite3_bind_int64(s, 1, id);
	if (len)
		sq_bind_blob(s, 2, buf, len);
	return sq_exec(st, s, "key note");
}

int sq_key_clear_notes(struct store_impl *st, int64_t id)
{
	return sq_by_id(st, S_KEY_CLEAR_NOTES, id, "key notes");
}

/* ---- holds of inputs -------------------------------------------------- */

/* How often a mount drops the holds that every mount let lapse. */
#define HOLDS_SWEEP_MS (60 * 1000)

int sq_hold(struct store_impl *st, int64_t wf, int64_t expires_ms,
	    int64_t *id)
{
	sqlite3_stmt *s = sq_stmt(st, S_HOLD_INSERT);
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, st->mount_id);
	sqlite3_bind_int64(s, 3, expires_ms);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(s, 0);
		sq_done(s);
		return 0;
	}
	sq_done(s);
	return sq_error(st, rc, "hold input");
}

/* Delete this mount's hold id, inside a write transaction. */
static int delete_hold(struct store_impl *st, int64_t id)
{
	sqlite3_stmt *s = sq_stmt(st, S_HOLD_DELETE);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int64(s, 2, st->mount_id);
	return sq_exec(st, s, "release input");
}

/*
 * Let go of a hold, in a transaction of its own.  When that fails (the
 * store locked past the busy timeout, full), the id is kept and the
 * renewer deletes it on its next round instead of renewing it: a hold
 * never outlives its file by more than that.
 */
int sq_unhold(struct store_impl *st, int64_t id)
{
	int rc = sq_begin(st, true);

	if (rc == 0) {
		rc = delete_hold(st, id);
		if (rc)
			sq_rollback(st);
		else
			rc = sq_commit_lazy(st);
	}
	if (rc) {
		pthread_mutex_lock(&st->pin_lock);
		if (st->n_unheld == st->unheld_cap) {
			size_t cap = st->unheld_cap ? st->unheld_cap * 2 : 16;
			int64_t *p = realloc(st->unheld, cap * sizeof(*p));

			if (p) {
				st->unheld = p;
				st->unheld_cap = cap;
			}
		}
		if (st->n_unheld < st->unheld_cap)
			st->unheld[st->n_unheld++] = id;
		else
			syslog(LOG_ERR, "oncefs: %s: out of memory: the hold %lld "
			       "of an input stays until this mount ends", st->path,
			       (long long)id);
		pthread_mutex_unlock(&st->pin_lock);
	}
	return rc;
}

int sq_hold_any(struct store_impl *st, int64_t wf, int64_t now_ms,
		int64_t except, bool *any)
{
	sqlite3_stmt *s = sq_stmt(st, S_HOLD_ANY);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, now_ms);
	sqlite3_bind_int64(s, 3, except);
	return sq_exists(st, s, any);
}

/* A read of one EXISTS statement with one integer, in a read transaction. */
static int exists_now(struct store_impl *st, enum stmt_id id, int64_t v,
		      bool *any)
{
	sqlite3_stmt *s;
	int rc = sq_begin(st, false);

	*any = false;
	if (rc)
		return rc;
	s = sq_stmt(st, id);
	rc = s ? 0 : -EIO;
	if (s) {
		sqlite3_bind_int64(s, 1, v);
		rc = sq_exists(st, s, any);
	}
	if (rc) {
		sq_rollback(st);
		return rc;
	}
	return sq_commit(st);
}

/* Does this mount hold an input?  When the store cannot say: yes. */
bool sq_holds_mine(struct store_impl *st)
{
	bool any;

	return exists_now(st, S_HOLD_MINE, st->mount_id, &any) ? true : any;
}

int sq_holds_renew(struct store_impl *st, int64_t now_ms,
		   int64_t lease_ms)
{
	bool renew_due = now_ms >= st->holds_renew_ms;
	bool sweep_due = now_ms >= st->holds_swept_ms;
	bool mine = false, lapsed = false;
	int64_t unheld[64];
	size_t n;
	int rc = 0;

	pthread_mutex_lock(&st->pin_lock);
	n = st->n_unheld < 64 ? st->n_unheld : 64;
	if (n)
		memcpy(unheld, st->unheld, n * sizeof(*unheld));
	pthread_mutex_unlock(&st->pin_lock);
	if (!renew_due && !sweep_due && n == 0)
		return 0;
	/* Read first: a mount with nothing to do writes nothing. */
	if (renew_due)
		rc = exists_now(st, S_HOLD_MINE, st->mount_id, &mine);
	if (rc == 0 && sweep_due)
		rc = exists_now(st, S_HOLD_LAPSED, now_ms, &lapsed);
	if (rc)
		return rc;	/* the timers stay due: the next round retries */
	if (n || mine || lapsed) {
		sqlite3_stmt *s;

		rc = sq_begin(st, true);
		if (rc)
			return rc;
		for (size_t i = 0; i < n && rc == 0; i++)
			rc = delete_hold(st, unheld[i]);
		if (rc == 0 && mine) {
			s = sq_stmt(st, S_HOLD_RENEW);
			rc = s ? 0 : -EIO;
			if (s) {
				sqlite3_bind_int64(s, 1, st->mount_id);
				sqlite3_bind_int64(s, 2, now_ms + lease_ms);
				sqlite3_bind_int64(s, 3, now_ms);
				rc = sq_exec(st, s, "renew holds");
			}
		}
		/* The holds of mounts that died: nobody renews them any more. */
		if (rc == 0 && lapsed) {
			s = sq_stmt(st, S_HOLD_EXPIRED);
			rc = s ? 0 : -EIO;
			if (s) {
				sqlite3_bind_int64(s, 1, now_ms);
				rc = sq_exec(st, s, "lapsed holds");
			}
		}
		if (rc) {
			sq_rollback(st);
			return rc;
		}
		rc = sq_commit_lazy(st);
		if (rc)
			return rc;
		pthread_mutex_lock(&st->pin_lock);
		if (n) {
			memmove(st->unheld, st->unheld + n,
				(st->n_unheld - n) * sizeof(*st->unheld));
			st->n_unheld -= n;
		}
		pthread_mutex_unlock(&st->pin_lock);
	}
	if (renew_due)
		st->holds_renew_ms = now_ms + lease_ms / 3;
	if (sweep_due)
		st->holds_swept_ms = now_ms + HOLDS_SWEEP_MS;
	return rc;
}

int sq_key_list(struct store_impl *st, int64_t wf, int64_t after,
		int64_t now_ms, struct key_row *rows, int max, int *n)
{
	sqlite3_stmt *s = sq_stmt(st, S_KEY_LIST);

	*n = 0;
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, after);
	sqlite3_bind_int64(s, 3, now_ms);
	sqlite3_bind_int(s, 4, max);
	return read_rows(st, s, key_reader, rows, sizeof(*rows), max, n,
			 "list keys");
}

int sq_exists(struct store_impl *st, sqlite3_stmt *s, bool *any)
{
	int rc = sqlite3_step(s);

	*any = rc == SQLITE_ROW && sqlite3_column_int(s, 0) != 0;
	sq_done(s);
	return rc == SQLITE_ROW ? 0 : sq_error(st, rc, "exists");
}

int sq_key_any(struct store_impl *st, int64_t wf, int64_t now_ms,
	       bool *any)
{
	sqlite3_stmt *s = sq_stmt(st, S_KEY_ANY);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, now_ms);
	return sq_exists(st, s, any);
}

/* ---- checkpoints ------------------------------------------------------ */

static int read_step(struct store_impl *st, sqlite3_stmt *s, struct step_row *r)
{
	static const char t[] = "steps";
	int rc;

	r->id = sqlite3_column_int64(s, 0);
	r->wf = sqlite3_column_int64(s, 1);
	r->epoch = sqlite3_column_int64(s, 2);
	r->mtime_ns = sqlite3_column_int64(s, 5);
	r->atime_ns = sqlite3_column_int64(s, 7);
	rc = sq_copy_name(st, t, r->id, s, 3, r->name, &r->name_len);
	if (!rc)
		rc = sq_column_in(st, t, r->id, s, 4, "size", 0, INT64_MAX / 2,
			       &r->size);
	if (!rc)
		rc = sq_column_in(st, t, r->id, s, 6, "content", 0, INT64_MAX,
			       &r->content);
	if (!rc && (r->content == 0) != (r->size == 0))
		rc = sq_bad_row(st, t, r->id, "content of size", r->size);
	return rc;
}

static int step_reader(struct store_impl *st, sqlite3_stmt *s, void *row)
{
	return read_step(st, s, row);
}

static int get_one_step(struct store_impl *st, sqlite3_stmt *s,
			struct step_row *out)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW) {
		rc = read_step(st, s, out);
		sq_done(s);
		return rc;
	}
	sq_done(s);
	return rc == SQLITE_DONE ? -ENOENT : sq_error(st, rc, "step");
}

int sq_step_get(struct store_impl *st, int64_t wf, int64_t epoch,
		const char *name, size_t len, struct step_row *out)
{
	sqlite3_stmt *s = sq_stmt(st, S_STEP_GET);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, epoch);
	sq_bind_blob(s, 3, name, len);
	return get_one_step(st, s, out);
}

int sq_step_by_id(struct store_impl *st, int64_t id,
		  struct step_row *out)
{
	sqlite3_stmt *s = sq_stmt(st, S_STEP_BY_ID);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	return get_one_step(st, s, out);
}

int sq_step_any(struct store_impl *st, int64_t wf, int64_t epoch,
		bool *any)
{
	sqlite3_stmt *s = sq_stmt(st, S_STEP_ANY);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, epoch);
	return sq_exists(st, s, any);
}

/* ---- events ----------------------------------------------------------- */

int sq_event_append(struct store_impl *st, int64_t wf,
		    const struct event *ev)
{
	char line[EVENT_LINE_MAX + 1];
	sqlite3_stmt *ins = sq_stmt(st, S_EVENT_INSERT);
	sqlite3_stmt *grow = sq_stmt(st, S_EVENT_GROW);
	size_t line_len;
	int rc = event_render(ev, line, sizeof(line), &line_len);

	if (rc)
		return rc == -ENOSPC ? -EINVAL : rc;
	if (!ins || !grow)
		return -EIO;
	sqlite3_bind_int64(ins, 1, wf);
	sqlite3_bind_int64(ins, 2, ev->time_ms);
	sqlite3_bind_text64(ins, 3, line, line_len, SQLITE_TRANSIENT, SQLITE_UTF8);
	rc = sq_exec(st, ins, "insert event");
	if (rc)
		return rc;
	sqlite3_bind_int64(grow, 1, wf);
	sqlite3_bind_int64(grow, 2, (int64_t)line_len + 1);
	return sq_exec(st, grow, "grow events");
}

int sq_event_read(struct store_impl *st, int64_t wf, int64_t offset,
		  char *buf, size_t size, size_t *got)
{
	sqlite3_stmt *s = sq_stmt(st, S_EVENT_READ);
	int rc = SQLITE_DONE;

	sqlite3_stmt *b = sq_stmt(st, S_EVENT_BASE);
	int64_t base = 0;

	*got = 0;
	if (!s || !b)
		return -EIO;
	/* The file begins at events_base: older lines were swept. */
	sqlite3_bind_int64(b, 1, wf);
	if (sqlite3_step(b) == SQLITE_ROW)
		base = sqlite3_column_int64(b, 0);
	sq_done(b);
	offset += base;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, offset);
	while (*got < size && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		int64_t off = sqlite3_column_int64(s, 0);
		const char *line = (const char *)sqlite3_column_text(s, 1);
		int64_t len = sqlite3_column_bytes(s, 1);
		int64_t from, n;

		/* The line and its newline occupy [off, off + len + 1). */
		if (off + len + 1 <= offset)
			continue;
		from = offset > off ? offset - off : 0;
		n = len + 1 - from;
		if ((size_t)n > size - *got)
			n = (int64_t)(size - *got);
		for (int64_t i = 0; i < n; i++)
			buf[*got + i] = from + i < len ? line[from + i] : '\n';
		*got += (size_t)n;
		offset = off + len + 1;
	}
	if (*got < size && rc != SQLITE_DONE) {
		sq_done(s);
		return sq_error(st, rc, "read events");
	}
	sq_done(s);
	return 0;
}

static void bind_step(sqlite3_stmt *s, const struct step_row *r)
{
	sqlite3_bind_int64(s, 1, r->id);
	sqlite3_bind_int64(s, 2, r->wf);
	sqlite3_bind_int64(s, 3, r->epoch);
	sq_bind_blob(s, 4, r->name, r->name_len);
	sqlite3_bind_int64(s, 6, r->mtime_ns);
	sqlite3_bind_int64(s, 7, r->atime_ns);
}

int sq_step_list(struct store_impl *st, int64_t wf, int64_t epoch,
		 int64_t after, struct step_row *rows, int max, int *n)
{
	sqlite3_stmt *s = sq_stmt(st, S_STEP_LIST);

	*n = 0;
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, epoch);
	sqlite3_bind_int64(s, 3, after);
	sqlite3_bind_int(s, 4, max);
	return read_rows(st, s, step_reader, rows, sizeof(*rows), max, n,
			 "list steps");
}

int sq_step_insert(struct store_impl *st, struct step_row *row)
{
	sqlite3_stmt *s = sq_stmt(st, S_STEP_INSERT);
	int rc;

	if (!s)
		return -EIO;
	bind_step(s, row);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		row->id = sqlite3_column_int64(s, 0);
		row->size = 0;
		sq_done(s);
		return 0;
	}
	sq_done(s);
	if ((rc & 0xff) == SQLITE_CONSTRAINT)
		return -EEXIST;
	return sq_error(st, rc, "insert step");
}

int sq_step_update(struct store_impl *st, const struct step_row *row)
{
	sqlite3_stmt *s = sq_stmt(st, S_STEP_UPDATE);
	int rc;

	if (!s)
		return -EIO;
	bind_step(s, row);
	rc = sqlite3_step(s);
	sq_done(s);
	if (rc == SQLITE_DONE)
		return 0;
	if ((rc & 0xff) == SQLITE_CONSTRAINT)
		return -EEXIST;
	return sq_error(st, rc, "update step");
}

/* ---- sweeping --------------------------------------------------------- */

int sq_key_expired(struct store_impl *st, int64_t now_ms,
		   struct key_row *rows, int max, int *n)
{
	sqlite3_stmt *s = sq_stmt(st, S_KEY_EXPIRED);

	*n = 0;
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, now_ms);
	sqlite3_bind_int(s, 2, max);
	return read_rows(st, s, key_reader, rows, sizeof(*rows), max, n,
			 "sweep keys");
}

/*
 * The sweep's walk over workflows: the next up to SWEEP_WFS after *cursor
 * (from the start again after the last), with their retention in ms.
 */
#define SWEEP_WFS 64

static int sweep_wfs(struct store_impl *st, int64_t *cursor, int64_t *ids,
		     int64_t *retention_ms, int *n)
{
	sqlite3_stmt *s = sq_stmt(st, S_SWEEP_WFS);
	int rc;

	*n = 0;
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, *cursor);
	sqlite3_bind_int(s, 2, SWEEP_WFS);
	while (*n < SWEEP_WFS && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		ids[*n] = sqlite3_column_int64(s, 0);
		retention_ms[*n] = sqlite3_column_int64(s, 1) * 1000;
		(*n)++;
	}
	sq_done(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sq_error(st, rc, "sweep workflows");
	*cursor = *n == SWEEP_WFS ? ids[*n - 1] : 0;
	return 0;
}

int sq_key_retired(struct store_impl *st, int64_t now_ms,
		   struct key_row *rows, int max, int *n, bool *more)
{
	int64_t ids[SWEEP_WFS], keep[SWEEP_WFS];
	int nwf, rc;

	*n = 0;
	rc = sweep_wfs(st, &st->retire_cursor, ids, keep, &nwf);
	*more = st->retire_cursor != 0;
	for (int i = 0; i < nwf && rc == 0 && *n < max; i++) {
		sqlite3_stmt *s = sq_stmt(st, S_KEY_RETIRED);
		int got = 0;

		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, ids[i]);
		sqlite3_bind_int64(s, 2, (now_ms - keep[i]) * 1000000);
		sqlite3_bind_int(s, 3, max - *n);
		rc = read_rows(st, s, key_reader, rows + *n, sizeof(*rows),
			       max - *n, &got, "sweep keys");
		*n += got;
		/* A full batch: this workflow again next time. */
		if (*n == max) {
			st->retire_cursor = ids[i] - 1;
			*more = true;
		}
	}
	return rc;
}

/*
 * Only a prefix of a log goes, the lines before the first young one, so
 * that the file keeps its shape; each workflow's oldest lines are read in
 * order, and the cut is one range delete on the primary key.
 */
int sq_event_trim(struct store_impl *st, int64_t now_ms, int max,
		  int64_t *n, bool *more)
{
	int64_t ids[SWEEP_WFS], keep[SWEEP_WFS];
	int nwf, rc;

	*n = 0;
	rc = sweep_wfs(st, &st->trim_cursor, ids, keep, &nwf);
	*more = st->trim_cursor != 0;
	for (int i = 0; i < nwf && rc == 0 && *n < max; i++) {
		sqlite3_stmt *s = sq_stmt(st, S_EVENT_OLDEST);
		int64_t cut = -1, old = 0;

		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, ids[i]);
		sqlite3_bind_int64(s, 2, max - *n + 1);
		while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
			cut = sqlite3_column_int64(s, 0);
			if (sqlite3_column_int64(s, 1) >= now_ms - keep[i] ||
			    old == max - *n)
				break;
			old++;
			cut = -1;
		}
		sq_done(s);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return sq_error(st, rc, "trim events");
		rc = 0;
		if (old == 0)
			continue;
		s = sq_stmt(st, S_EVENT_CUT);
		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, ids[i]);
		/* No young line left: the whole log, up to its end. */
		sqlite3_bind_int64(s, 2, cut >= 0 ? cut : INT64_MAX);
		rc = sq_exec(st, s, "trim events");
		if (rc == 0)
			rc = sq_by_id(st, S_EVENT_REBASE, ids[i], "rebase events");
		*n += old;
		if (*n == max) {
			st->trim_cursor = ids[i] - 1;
			*more = true;
		}
	}
	return rc;
}

int sq_event_list(struct store_impl *st, int64_t wf, int64_t since_ms,
		  int (*fn)(void *arg, const struct event_view *ev),
		  void *arg)
{
	sqlite3_stmt *s = sq_stmt(st, S_EVENT_LIST);
	int rc, stop = 0;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, since_ms);
	while (!stop && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct event_view ev = {
			.time_ms = sqlite3_column_int64(s, 0),
			.line = (const char *)sqlite3_column_text(s, 1),
		};

		if (!ev.line)
			ev.line = "";
		stop = fn(arg, &ev);
	}
	sq_done(s);
	if (stop)
		return stop;
	return rc == SQLITE_DONE ? 0 : sq_error(st, rc, "list events");
}

/*
 * The invariants, each a query that returns one row per violation with a
 * description.  (Unique generations and names are enforced by the schema,
 * and checked by integrity_check.)
 */
