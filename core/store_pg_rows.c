/*
 * store_pg_rows.c - the PostgreSQL backend's rows: workflows, keys and
 * their notes, input holds, checkpoints, events, and the sweep's queries
 * (see store_pg.h).  Nothing read from the database is trusted: each row
 * is checked as the SQLite backend checks its own.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "event.h"
#include "store_pg.h"

typedef int row_reader(struct store_impl *st, const PGresult *r, int row,
		       void *out);

/* Every row of r, read with fn into rows (of size bytes each). */
static int read_rows(struct store_impl *st, PGresult *r, row_reader *fn,
		     void *rows, size_t size, int max, int *n)
{
	int rc = 0;

	*n = 0;
	for (int i = 0; i < PQntuples(r) && *n < max && rc == 0; i++) {
		rc = fn(st, r, i, (char *)rows + size * (size_t)*n);
		if (rc == 0)
			(*n)++;
	}
	PQclear(r);
	return rc;
}

/* Run id and read its first row with fn; -ENOENT when there is none. */
static int get_one(struct store_impl *st, enum pg_stmt id,
		   struct pg_params *p, row_reader *fn, void *out)
{
	PGresult *r;
	int rc = pg_run(st, id, p, &r);

	if (rc)
		return rc;
	rc = PQntuples(r) ? fn(st, r, 0, out) : -ENOENT;
	PQclear(r);
	return rc;
}

/* A name column: 1..NAME_MAX_LEN bytes, no '/' and no NUL. */
static int copy_name(struct store_impl *st, const char *table, int64_t id,
		     const PGresult *r, int row, int col, char *dst,
		     size_t *len)
{
	size_t n = (size_t)PQgetlength(r, row, col);
	const char *p = PQgetvalue(r, row, col);

	if (PQgetisnull(r, row, col) || n == 0 || n > NAME_MAX_LEN)
		return pg_bad_row(st, table, id, "name length", (int64_t)n);
	if (memchr(p, '/', n) || memchr(p, '\0', n))
		return pg_bad_row(st, table, id, "name with '/' or NUL, length",
				  (int64_t)n);
	memcpy(dst, p, n);
	dst[n] = '\0';
	*len = n;
	return 0;
}

/* An integer column that must lie in [lo, hi]. */
static int col_in(struct store_impl *st, const char *table, int64_t id,
		  const PGresult *r, int row, int col, const char *what,
		  int64_t lo, int64_t hi, int64_t *out)
{
	int64_t v = pg_col_int(r, row, col);

	if (v == INT64_MIN || v < lo || v > hi)
		return pg_bad_row(st, table, id, what, v);
	*out = v;
	return 0;
}

/* ---- workflows -------------------------------------------------------- */

int pg_read_wf(struct store_impl *st, const PGresult *r, int row, int c,
	       struct wf_row *out)
{
	static const char t[] = "workflows";
	struct wf_row *w = out;
	const char *fp;
	size_t fp_len;
	int64_t v[7] = { 0 };
	int rc;

	w->id = pg_col_int(r, row, c + 0);
	rc = copy_name(st, t, w->id, r, row, c + 1, w->name, &w->name_len);
	if (!rc)
		rc = col_in(st, t, w->id, r, row, c + 2, "uid", 0, UINT32_MAX, &v[0]);
	if (!rc)
		rc = col_in(st, t, w->id, r, row, c + 3, "gid", 0, UINT32_MAX, &v[1]);
	if (!rc)
		rc = col_in(st, t, w->id, r, row, c + 4, "mode", 0, 07777, &v[2]);
	if (!rc)
		rc = col_in(st, t, w->id, r, row, c + 7, "on_input_change",
			    ON_INPUT_RESET, ON_INPUT_RAISE, &v[3]);
	if (!rc)
		rc = col_in(st, t, w->id, r, row, c + 8, "dedup_on", DEDUP_SUCCESS,
			    DEDUP_ANY, &v[4]);
	if (!rc)
		rc = col_in(st, t, w->id, r, row, c + 9, "in_flight_ttl", 1,
			    POLICY_TTL_MAX, &v[5]);
	if (!rc)
		rc = col_in(st, t, w->id, r, row, c + 10, "retention", 0,
			    POLICY_RETENTION_MAX, &v[6]);
	if (!rc)
		rc = col_in(st, t, w->id, r, row, c + 12, "epoch", 0, INT64_MAX,
			    &w->epoch);
	if (!rc)
		rc = col_in(st, t, w->id, r, row, c + 13, "events size", 0,
			    INT64_MAX, &w->events_size);
	fp = PQgetvalue(r, row, c + 11);
	w->fingerprint_len = PQgetisnull(r, row, c + 11) ? 0 :
			     (size_t)PQgetlength(r, row, c + 11);
	if (!rc && w->fingerprint_len &&
	    (w->fingerprint_len > FINGERPRINT_MAX ||
	     fingerprint_parse(fp, w->fingerprint_len, &fp_len) ||
	     fp_len != w->fingerprint_len))
		rc = pg_bad_row(st, t, w->id, "fingerprint of length",
				(int64_t)w->fingerprint_len);
	if (rc)
		return rc;
	w->uid = (uint32_t)v[0];
	w->gid = (uint32_t)v[1];
	w->mode = (uint32_t)v[2];
	w->ctime_ns = pg_col_int(r, row, c + 5);
	w->mtime_ns = pg_col_int(r, row, c + 6);
	w->policy.on_input_change = (enum on_input_change)v[3];
	w->policy.dedup_on = (enum dedup_on)v[4];
	w->policy.in_flight_ttl = v[5];
	w->policy.retention = v[6];
	if (w->fingerprint_len)
		memcpy(w->fingerprint, fp, w->fingerprint_len);
	w->fingerprint[w->fingerprint_len] = '\0';
	return 0;
}

static int read_wf(struct store_impl *st, const PGresult *r, int row,
		   void *out)
{
	return pg_read_wf(st, r, row, 0, out);
}

static void bind_wf(struct pg_params *p, const struct wf_row *w)
{
	pg_int(p, w->id);
	pg_bytes(p, w->name, w->name_len);
	pg_int(p, w->uid);
	pg_int(p, w->gid);
	pg_int(p, w->mode);
	pg_int(p, w->ctime_ns);
	pg_int(p, w->mtime_ns);
	pg_int(p, w->policy.on_input_change);
	pg_int(p, w->policy.dedup_on);
	pg_int(p, w->policy.in_flight_ttl);
	pg_int(p, w->policy.retention);
	if (w->fingerprint_len)
		pg_bytes(p, w->fingerprint, w->fingerprint_len);
	else
		pg_null(p);
	pg_int(p, w->epoch);
	pg_int(p, w->events_size);
}

int pg_wf_by_name(struct store_impl *st, const char *name, size_t len,
		  struct wf_row *out)
{
	struct pg_params p = { 0 };

	pg_bytes(&p, name, len);
	return get_one(st, P_WF_BY_NAME, &p, read_wf, out);
}

int pg_wf_by_id(struct store_impl *st, int64_t id, struct wf_row *out)
{
	struct pg_params p = { 0 };

	pg_int(&p, id);
	return get_one(st, P_WF_BY_ID, &p, read_wf, out);
}

/* An insert that returns the new id, or no row when the name is taken. */
static int insert_id(struct store_impl *st, enum pg_stmt id,
		     struct pg_params *p, int64_t *out)
{
	int rc = pg_one_int(st, id, p, out);

	return rc == -ENOENT ? -EEXIST : rc;
}

int pg_wf_insert(struct store_impl *st, struct wf_row *row)
{
	struct pg_params p = { 0 };

	bind_wf(&p, row);
	return insert_id(st, P_WF_INSERT, &p, &row->id);
}

/*
 * An update that returns its row unless the new name is taken: which of
 * the two, when no row came back (taken_stmt counts the clash).
 */
static int update_named(struct store_impl *st, enum pg_stmt id,
			enum pg_stmt taken_stmt, struct pg_params *p,
			int missing)
{
	int64_t v = 0;
	int rc = pg_one_int(st, id, p, &v);

	if (rc != -ENOENT)
		return rc;
	p->n = taken_stmt == P_WF_NAME_TAKEN ? 2 : 4;
	rc = pg_one_int(st, taken_stmt, p, &v);
	if (rc)
		return rc;
	return v > 0 ? -EEXIST : missing;
}

int pg_wf_update(struct store_impl *st, const struct wf_row *row)
{
	struct pg_params p = { 0 };

	bind_wf(&p, row);
	return update_named(st, P_WF_UPDATE, P_WF_NAME_TAKEN, &p, -ENOENT);
}

int pg_wf_delete(struct store_impl *st, int64_t id)
{
	struct pg_params p = { 0 };

	pg_int(&p, id);
	return pg_exec(st, P_WF_DELETE, &p);
}

int pg_wf_list(struct store_impl *st, int64_t after, struct wf_row *rows,
	       int max, int *n)
{
	struct pg_params p = { 0 };
	PGresult *r;
	int rc;

	*n = 0;
	pg_int(&p, after);
	pg_int(&p, max);
	rc = pg_run(st, P_WF_LIST, &p, &r);
	return rc ? rc : read_rows(st, r, read_wf, rows, sizeof(*rows), max, n);
}

/* ---- keys ------------------------------------------------------------- */

int pg_read_key(struct store_impl *st, const PGresult *r, int row, int c,
		struct key_row *out)
{
	static const char t[] = "keys";
	struct key_row *k = out;
	int64_t status = 0, pid = 0, uid = 0;
	int rc;

	k->id = pg_col_int(r, row, c + 0);
	k->wf = pg_col_int(r, row, c + 1);
	rc = copy_name(st, t, k->id, r, row, c + 2, k->name, &k->name_len);
	if (!rc)
		rc = col_in(st, t, k->id, r, row, c + 3, "status", KEY_VACANT,
			    KEY_FAILED, &status);
	if (!rc)
		rc = col_in(st, t, k->id, r, row, c + 4, "generation", 1, INT64_MAX,
			    &k->generation);
	if (!rc)
		rc = col_in(st, t, k->id, r, row, c + 5, "attempt", 0, INT64_MAX,
			    &k->attempt);
	if (!rc)
		rc = col_in(st, t, k->id, r, row, c + 8, "holder pid", 0, INT32_MAX,
			    &pid);
	if (!rc)
		rc = col_in(st, t, k->id, r, row, c + 9, "holder uid", 0, UINT32_MAX,
			    &uid);
	if (!rc)
		rc = col_in(st, t, k->id, r, row, c + 10, "result length", 0,
			    INT32_MAX, &k->result_len);
	if (!rc)
		rc = col_in(st, t, k->id, r, row, c + 11, "result content", 0,
			    INT64_MAX, &k->content);
	if (!rc)
		rc = col_in(st, t, k->id, r, row, c + 12, "previous generation", 0,
			    k->generation - 1, &k->previous);
	if (rc)
		return rc;
	if ((k->content == 0) != (k->result_len == 0))
		return pg_bad_row(st, t, k->id, "result content", k->content);
	{
		const char *host = PQgetvalue(r, row, c + 13);
		size_t n = (size_t)PQgetlength(r, row, c + 13);

		if (!store_host_ok(host, n))
			return pg_bad_row(st, t, k->id, "holder host of length",
					  (int64_t)n);
		memcpy(k->holder_host, host, n);
		k->holder_host[n] = '\0';
	}
	k->status = (enum key_status)status;
	k->expires_ms = pg_col_int(r, row, c + 6);
	k->mtime_ns = pg_col_int(r, row, c + 7);
	k->holder_pid = (int32_t)pid;
	k->holder_uid = (uint32_t)uid;
	return 0;
}

static int read_key(struct store_impl *st, const PGresult *r, int row,
		    void *out)
{
	return pg_read_key(st, r, row, 0, out);
}

static void bind_key(struct pg_params *p, const struct key_row *k)
{
	pg_int(p, k->id);
	pg_int(p, k->wf);
	pg_bytes(p, k->name, k->name_len);
	pg_int(p, k->status);
	pg_int(p, k->generation);
	pg_int(p, k->attempt);
	pg_int(p, k->expires_ms);
	pg_int(p, k->mtime_ns);
	pg_int(p, k->holder_pid);
	pg_int(p, k->holder_uid);
	pg_int(p, k->previous);
	pg_bytes(p, k->holder_host, strlen(k->holder_host));
}

int pg_key_get(struct store_impl *st, int64_t wf, const char *name,
	       size_t len, struct key_row *out)
{
	struct pg_params p = { 0 };

	pg_int(&p, wf);
	pg_bytes(&p, name, len);
	return get_one(st, P_KEY_GET, &p, read_key, out);
}

int pg_key_by_generation(struct store_impl *st, int64_t generation,
			 struct key_row *out)
{
	struct pg_params p = { 0 };

	pg_int(&p, generation);
	return get_one(st, P_KEY_BY_GEN, &p, read_key, out);
}

int pg_key_result(struct store_impl *st, const struct key_row *k,
		  char **buf, size_t *len)
{
	size_t got = 0;
	int rc;

	*len = 0;
	*buf = malloc(k->result_len ? (size_t)k->result_len : 1);
	if (!*buf)
		return -ENOMEM;
	rc = pg_content_read(st, k->content, k->result_len, 0, *buf,
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

int pg_key_insert(struct store_impl *st, struct key_row *row)
{
	struct pg_params p = { 0 };

	bind_key(&p, row);
	return insert_id(st, P_KEY_INSERT, &p, &row->id);
}

int pg_key_update(struct store_impl *st, const struct key_row *row)
{
	struct pg_params p = { 0 };

	bind_key(&p, row);
	return pg_exec(st, P_KEY_UPDATE, &p);
}

int pg_key_set_result(struct store_impl *st, struct key_row *k,
		      const char *buf, size_t len)
{
	struct pg_params p = { 0 };
	int64_t content = 0;
	int rc = 0;

	if (len)
		rc = pg_new_content(st, (int64_t)len, false, &content);
	if (rc == 0 && len)
		rc = pg_put_chunks(st, content, 0, buf, len);
	if (rc)
		return rc;
	pg_int(&p, k->id);
	pg_int(&p, content);
	pg_int(&p, (int64_t)len);
	rc = pg_exec(st, P_KEY_SET_CONTENT, &p);
	if (rc == 0) {
		k->content = content;
		k->result_len = (int64_t)len;
	}
	return rc;
}

int pg_key_delete(struct store_impl *st, int64_t id)
{
	struct pg_params p = { 0 };

	pg_int(&p, id);
	return pg_exec(st, P_KEY_DELETE, &p);
}

static const struct {
	enum pg_stmt set;
	size_t max;
	const char *what;
} notes[] = {
	[KEY_NOTE_REQUEST] = { P_KEY_SET_REQUEST, KEY_REQUEST_MAX, "request" },
	[KEY_NOTE_ORIGINAL] = { P_KEY_SET_ORIGINAL, KEY_ORIGINAL_MAX,
				"original name" },
};

int pg_key_note(struct store_impl *st, int64_t id, enum key_note which,
		char *buf, size_t *len)
{
	struct pg_params p = { 0 };
	PGresult *r;
	size_t n;
	int rc;

	pg_int(&p, id);
	rc = pg_run(st, P_KEY_NOTES, &p, &r);
	if (rc)
		return rc;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return -ENOENT;
	}
	n = PQgetisnull(r, 0, (int)which) ? 0 :
	    (size_t)PQgetlength(r, 0, (int)which);
	if (n > notes[which].max) {
		PQclear(r);
		return pg_bad_row(st, "keys", id, notes[which].what, (int64_t)n);
	}
	if (n)
		memcpy(buf, PQgetvalue(r, 0, (int)which), n);
	PQclear(r);
	*len = n;
	return n ? 0 : -ENODATA;
}

int pg_key_set_note(struct store_impl *st, int64_t id,
		    enum key_note which, const char *buf, size_t len)
{
	struct pg_params p = { 0 };

	if (len > notes[which].max)
		return -E2BIG;
	pg_int(&p, id);
	if (len)
		pg_bytes(&p, buf, len);
	else
		pg_null(&p);
	return pg_exec(st, notes[which].set, &p);
}

/* A statement of one integer parameter that returns nothing needed. */
static int by_id(struct store_impl *st, enum pg_stmt id, int64_t v)
{
	struct pg_params p = { 0 };

	pg_int(&p, v);
	return pg_exec(st, id, &p);
}

int pg_key_clear_notes(struct store_impl *st, int64_t id)
{
	return by_id(st, P_KEY_CLEAR_NOTES, id);
}

int pg_key_list(struct store_impl *st, int64_t wf, int64_t after,
		int64_t now_ms, struct key_row *rows, int max, int *n)
{
	struct pg_params p = { 0 };
	PGresult *r;
	int rc;

	*n = 0;
	pg_int(&p, wf);
	pg_int(&p, after);
	pg_int(&p, now_ms);
	pg_int(&p, max);
	rc = pg_run(st, P_KEY_LIST, &p, &r);
	return rc ? rc : read_rows(st, r, read_key, rows, sizeof(*rows), max, n);
}

/* A count(*) of a LIMIT 1: is there a row? */
static int exists(struct store_impl *st, enum pg_stmt id,
		  struct pg_params *p, bool *any)
{
	int64_t v = 0;
	int rc = pg_one_int(st, id, p, &v);

	*any = rc == 0 && v > 0;
	return rc;
}

int pg_key_any(struct store_impl *st, int64_t wf, int64_t now_ms, bool *any)
{
	struct pg_params p = { 0 };

	pg_int(&p, wf);
	pg_int(&p, now_ms);
	return exists(st, P_KEY_ANY, &p, any);
}

/* ---- holds of inputs -------------------------------------------------- */

/* How often a mount drops the holds that every mount let lapse. */
#define HOLDS_SWEEP_MS (60 * 1000)

int pg_hold(struct store_impl *st, int64_t wf, int64_t expires_ms,
	    int64_t *id)
{
	struct pg_params p = { 0 };

	pg_int(&p, wf);
	pg_int(&p, st->mount_id);
	pg_int(&p, expires_ms);
	return pg_one_int(st, P_HOLD_INSERT, &p, id);
}

static int delete_hold(struct store_impl *st, int64_t id)
{
	struct pg_params p = { 0 };

	pg_int(&p, id);
	pg_int(&p, st->mount_id);
	return pg_exec(st, P_HOLD_DELETE, &p);
}

/*
 * Let go of a hold, in a transaction of its own; when that fails, the
 * renewer deletes it on its next round (as on SQLite).
 */
int pg_unhold(struct store_impl *st, int64_t id)
{
	int rc = pg_begin(st, true);

	if (rc == 0) {
		rc = delete_hold(st, id);
		if (rc)
			pg_rollback(st);
		else
			rc = pg_commit(st);
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
			syslog(LOG_ERR, "oncefs: out of memory: the hold %" PRId64
			       " of an input stays until this mount ends", id);
		pthread_mutex_unlock(&st->pin_lock);
	}
	return rc;
}

int pg_hold_any(struct store_impl *st, int64_t wf, int64_t now_ms,
		int64_t except, bool *any)
{
	struct pg_params p = { 0 };

	pg_int(&p, wf);
	pg_int(&p, now_ms);
	pg_int(&p, except);
	return exists(st, P_HOLD_ANY, &p, any);
}

/* One EXISTS of one integer, outside any transaction. */
static int exists_now(struct store_impl *st, enum pg_stmt id, int64_t v,
		      bool *any)
{
	struct pg_params p = { 0 };
	int rc = pg_take(st);

	*any = false;
	if (rc)
		return rc;
	pg_int(&p, v);
	rc = exists(st, id, &p, any);
	pg_give(st);
	return rc;
}

bool pg_holds_mine(struct store_impl *st)
{
	bool any;

	return exists_now(st, P_HOLD_MINE, st->mount_id, &any) ? true : any;
}

int pg_holds_renew(struct store_impl *st, int64_t now_ms, int64_t lease_ms)
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
		rc = exists_now(st, P_HOLD_MINE, st->mount_id, &mine);
	if (rc == 0 && sweep_due)
		rc = exists_now(st, P_HOLD_LAPSED, now_ms, &lapsed);
	if (rc)
		return rc;
	if (n || mine || lapsed) {
		rc = pg_begin(st, true);
		if (rc)
			return rc;
		for (size_t i = 0; i < n && rc == 0; i++)
			rc = delete_hold(st, unheld[i]);
		if (rc == 0 && mine) {
			struct pg_params p = { 0 };

			pg_int(&p, st->mount_id);
			pg_int(&p, now_ms + lease_ms);
			pg_int(&p, now_ms);
			rc = pg_exec(st, P_HOLD_RENEW, &p);
		}
		if (rc == 0 && lapsed)
			rc = by_id(st, P_HOLD_EXPIRED, now_ms);
		if (rc) {
			pg_rollback(st);
			return rc;
		}
		rc = pg_commit(st);
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
	return 0;
}

/* ---- checkpoints ------------------------------------------------------ */

int pg_read_step(struct store_impl *st, const PGresult *r, int row,
		 void *out)
{
	static const char t[] = "steps";
	struct step_row *s = out;
	int rc;

	s->id = pg_col_int(r, row, 0);
	s->wf = pg_col_int(r, row, 1);
	s->epoch = pg_col_int(r, row, 2);
	s->mtime_ns = pg_col_int(r, row, 5);
	s->atime_ns = pg_col_int(r, row, 7);
	rc = copy_name(st, t, s->id, r, row, 3, s->name, &s->name_len);
	if (!rc)
		rc = col_in(st, t, s->id, r, row, 4, "size", 0, INT64_MAX / 2,
			    &s->size);
	if (!rc)
		rc = col_in(st, t, s->id, r, row, 6, "content", 0, INT64_MAX,
			    &s->content);
	if (!rc && (s->content == 0) != (s->size == 0))
		rc = pg_bad_row(st, t, s->id, "content of size", s->size);
	return rc;
}

static void bind_step(struct pg_params *p, const struct step_row *s)
{
	pg_int(p, s->id);
	pg_int(p, s->wf);
	pg_int(p, s->epoch);
	pg_bytes(p, s->name, s->name_len);
	pg_int(p, s->mtime_ns);
	pg_int(p, s->atime_ns);
}

int pg_step_get(struct store_impl *st, int64_t wf, int64_t epoch,
		const char *name, size_t len, struct step_row *out)
{
	struct pg_params p = { 0 };

	pg_int(&p, wf);
	pg_int(&p, epoch);
	pg_bytes(&p, name, len);
	return get_one(st, P_STEP_GET, &p, pg_read_step, out);
}

int pg_step_by_id(struct store_impl *st, int64_t id, struct step_row *out)
{
	struct pg_params p = { 0 };

	pg_int(&p, id);
	return get_one(st, P_STEP_BY_ID, &p, pg_read_step, out);
}

int pg_step_any(struct store_impl *st, int64_t wf, int64_t epoch, bool *any)
{
	struct pg_params p = { 0 };

	pg_int(&p, wf);
	pg_int(&p, epoch);
	return exists(st, P_STEP_ANY, &p, any);
}

int pg_step_list(struct store_impl *st, int64_t wf, int64_t epoch,
		 int64_t after, struct step_row *rows, int max, int *n)
{
	struct pg_params p = { 0 };
	PGresult *r;
	int rc;

	*n = 0;
	pg_int(&p, wf);
	pg_int(&p, epoch);
	pg_int(&p, after);
	pg_int(&p, max);
	rc = pg_run(st, P_STEP_LIST, &p, &r);
	return rc ? rc : read_rows(st, r, pg_read_step, rows, sizeof(*rows), max, n);
}

int pg_step_insert(struct store_impl *st, struct step_row *row)
{
	struct pg_params p = { 0 };
	int rc;

	bind_step(&p, row);
	rc = insert_id(st, P_STEP_INSERT, &p, &row->id);
	if (rc == 0)
		row->size = 0;
	return rc;
}

int pg_step_update(struct store_impl *st, const struct step_row *row)
{
	struct pg_params p = { 0 };

	bind_step(&p, row);
	return update_named(st, P_STEP_UPDATE, P_STEP_NAME_TAKEN, &p, 0);
}

/* ---- events ----------------------------------------------------------- */

int pg_event_append(struct store_impl *st, int64_t wf,
		    const struct event *ev)
{
	char line[EVENT_LINE_MAX + 1];
	struct pg_params p = { 0 };
	size_t len;
	int rc = event_render(ev, line, sizeof(line), &len);

	if (rc)
		return rc == -ENOSPC ? -EINVAL : rc;
	pg_int(&p, wf);
	pg_int(&p, ev->time_ms);
	pg_bytes(&p, line, len);
	pg_int(&p, (int64_t)len + 1);
	return pg_exec(st, P_EVENT_APPEND, &p);
}

int pg_event_read(struct store_impl *st, int64_t wf, int64_t offset,
		  char *buf, size_t size, size_t *got)
{
	struct pg_params p = { 0 };
	int64_t base = 0;
	PGresult *r;
	int rc;

	*got = 0;
	/* The file begins at events_base: older lines were swept. */
	pg_int(&p, wf);
	rc = pg_one_int(st, P_EVENT_BASE, &p, &base);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	offset += base;
	pg_int(&p, offset);
	/* Lines are longer than 32 bytes: enough of them to fill buf. */
	pg_int(&p, (int64_t)(size / 32 + 2));
	rc = pg_run(st, P_EVENT_READ, &p, &r);
	if (rc)
		return rc;
	for (int i = 0; i < PQntuples(r) && *got < size; i++) {
		int64_t off = pg_col_int(r, i, 0);
		const char *line = PQgetvalue(r, i, 1);
		int64_t len = PQgetlength(r, i, 1);
		int64_t from, n;

		/* The line and its newline occupy [off, off + len + 1). */
		if (off + len + 1 <= offset)
			continue;
		from = offset > off ? offset - off : 0;
		n = len + 1 - from;
		if ((size_t)n > size - *got)
			n = (int64_t)(size - *got);
		for (int64_t j = 0; j < n; j++)
			buf[*got + j] = from + j < len ? line[from + j] : '\n';
		*got += (size_t)n;
		offset = off + len + 1;
	}
	PQclear(r);
	return 0;
}

int pg_event_list(struct store_impl *st, int64_t wf, int64_t since_ms,
		  int (*fn)(void *arg, const struct event_view *ev),
		  void *arg)
{
	struct pg_params p = { 0 };
	PGresult *r;
	int rc, stop = 0;

	pg_int(&p, wf);
	pg_int(&p, since_ms);
	rc = pg_run(st, P_EVENT_LIST, &p, &r);
	if (rc)
		return rc;
	for (int i = 0; i < PQntuples(r) && !stop; i++) {
		struct event_view ev = {
			.time_ms = pg_col_int(r, i, 0),
			.line = PQgetvalue(r, i, 1),
		};

		stop = fn(arg, &ev);
	}
	PQclear(r);
	return stop;
}

/* ---- sweeping --------------------------------------------------------- */

int pg_key_expired(struct store_impl *st, int64_t now_ms,
		   struct key_row *rows, int max, int *n)
{
	struct pg_params p = { 0 };
	PGresult *r;
	int rc;

	*n = 0;
	pg_int(&p, now_ms);
	pg_int(&p, max);
	rc = pg_run(st, P_KEY_EXPIRED, &p, &r);
	return rc ? rc : read_rows(st, r, read_key, rows, sizeof(*rows), max, n);
}

/* The sweep's walk over workflows, SWEEP_WFS at a time (as on SQLite). */
#define SWEEP_WFS 64

static int sweep_wfs(struct store_impl *st, int64_t *cursor, int64_t *ids,
		     int64_t *retention_ms, int *n)
{
	struct pg_params p = { 0 };
	PGresult *r;
	int rc;

	*n = 0;
	pg_int(&p, *cursor);
	pg_int(&p, SWEEP_WFS);
	rc = pg_run(st, P_SWEEP_WFS, &p, &r);
	if (rc)
		return rc;
	for (int i = 0; i < PQntuples(r) && *n < SWEEP_WFS; i++) {
		ids[*n] = pg_col_int(r, i, 0);
		retention_ms[*n] = pg_col_int(r, i, 1) * 1000;
		(*n)++;
	}
	PQclear(r);
	*cursor = *n == SWEEP_WFS ? ids[*n - 1] : 0;
	return 0;
}

int pg_key_retired(struct store_impl *st, int64_t now_ms,
		   struct key_row *rows, int max, int *n, bool *more)
{
	int64_t ids[SWEEP_WFS], keep[SWEEP_WFS];
	int nwf, rc;

	*n = 0;
	rc = sweep_wfs(st, &st->retire_cursor, ids, keep, &nwf);
	*more = st->retire_cursor != 0;
	for (int i = 0; i < nwf && rc == 0 && *n < max; i++) {
		struct pg_params p = { 0 };
		PGresult *r;
		int got = 0;

		pg_int(&p, ids[i]);
		pg_int(&p, (now_ms - keep[i]) * 1000000);
		pg_int(&p, max - *n);
		rc = pg_run(st, P_KEY_RETIRED, &p, &r);
		if (rc == 0)
			rc = read_rows(st, r, read_key, rows + *n, sizeof(*rows),
				       max - *n, &got);
		*n += got;
		if (*n == max) {
			st->retire_cursor = ids[i] - 1;
			*more = true;
		}
	}
	return rc;
}

int pg_event_trim(struct store_impl *st, int64_t now_ms, int max,
		  int64_t *n, bool *more)
{
	int64_t ids[SWEEP_WFS], keep[SWEEP_WFS];
	int nwf, rc;

	*n = 0;
	rc = sweep_wfs(st, &st->trim_cursor, ids, keep, &nwf);
	*more = st->trim_cursor != 0;
	for (int i = 0; i < nwf && rc == 0 && *n < max; i++) {
		struct pg_params p = { 0 };
		int64_t cut = -1, old = 0;
		PGresult *r;

		pg_int(&p, ids[i]);
		pg_int(&p, max - *n + 1);
		rc = pg_run(st, P_EVENT_OLDEST, &p, &r);
		if (rc)
			return rc;
		for (int j = 0; j < PQntuples(r); j++) {
			cut = pg_col_int(r, j, 0);
			if (pg_col_int(r, j, 1) >= now_ms - keep[i] ||
			    old == max - *n)
				break;
			old++;
			cut = -1;
		}
		PQclear(r);
		if (old == 0)
			continue;
		p.n = 1;
		/* No young line left: the whole log, up to its end. */
		pg_int(&p, cut >= 0 ? cut : INT64_MAX);
		rc = pg_exec(st, P_EVENT_CUT, &p);
		if (rc == 0)
			rc = by_id(st, P_EVENT_REBASE, ids[i]);
		*n += old;
		if (*n == max) {
			st->trim_cursor = ids[i] - 1;
			*more = true;
		}
	}
	return rc;
}
