/*
 * store_pg_verbs.c - the operations of store.h on PostgreSQL, one round
 * trip each: a lookup is one statement; a write is one flight
 * (pg_flight: the writer row's update and one statement, committed at
 * its end).  Each statement (store_pg.c, P_LOOKUP_KEY .. P_RENEW) does
 * what store_verbs.c does with rows, which the same tests check on both
 * backends; event lines are rendered in C (event.c), and the numbers
 * only the statement knows (a claim's generation, attempt, previous) put
 * in at the marks event.h defines.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "event.h"
#include "store_pg.h"

/* WF_COLS and KEY_COLS are this many columns (store_pg.c). */
#define WF_NCOLS 14
#define KEY_NCOLS 14
#define STEP_NCOLS 8

/* A lookup: one statement outside a transaction, its clock noted. */
static int lookup(struct store_impl *st, enum pg_stmt id, struct pg_params *p,
		  PGresult **r)
{
	int64_t sent = pg_steady_ms();
	int rc = pg_take(st);

	if (rc)
		return rc;
	rc = pg_run(st, id, p, r);
	if (rc == 0 && PQntuples(*r) == 1)
		pg_note_clock(st, pg_col_int(*r, 0, PQnfields(*r) - 1), sent);
	pg_give(st);
	return rc;
}

int pg_lookup_workflow(struct store_impl *st, int64_t id, const char *name,
		       size_t len, struct wf_row *w)
{
	int rc = pg_take(st);

	if (rc)
		return rc;
	rc = name ? pg_wf_by_name(st, name, len, w) : pg_wf_by_id(st, id, w);
	pg_give(st);
	return rc;
}

int pg_lookup_key(struct store_impl *st, int64_t wf, const char *name,
		  size_t len, struct wf_row *w, struct key_row *k)
{
	struct pg_params p = { 0 };
	PGresult *r;
	int rc;

	w->id = 0;
	pg_int(&p, wf);
	pg_bytes(&p, name, len);
	rc = lookup(st, P_LOOKUP_KEY, &p, &r);
	if (rc)
		return rc;
	if (PQntuples(r) != 1)
		rc = -ENOENT;
	if (rc == 0)
		rc = pg_read_wf(st, r, 0, 0, w);
	if (rc == 0 && PQgetisnull(r, 0, WF_NCOLS))
		rc = -ENOENT;
	else if (rc == 0)
		rc = pg_read_key(st, r, 0, WF_NCOLS, k);
	PQclear(r);
	return rc;
}

int pg_lookup_generation(struct store_impl *st, int64_t generation,
			 struct key_row *k, struct wf_row *w)
{
	struct pg_params p = { 0 };
	PGresult *r;
	int rc;

	pg_int(&p, generation);
	rc = lookup(st, P_LOOKUP_GEN, &p, &r);
	if (rc)
		return rc;
	if (PQntuples(r) != 1)
		rc = -ENOENT;
	if (rc == 0)
		rc = pg_read_key(st, r, 0, 0, k);
	if (rc == 0 && w && PQgetisnull(r, 0, KEY_NCOLS))
		rc = -ENOENT;
	else if (rc == 0 && w)
		rc = pg_read_wf(st, r, 0, KEY_NCOLS, w);
	PQclear(r);
	return rc;
}

/* An event rendered for a statement: -EINVAL when it cannot be. */
static int render(const struct event *ev, char *line)
{
	size_t len;
	int rc = event_render(ev, line, EVENT_LINE_MAX + 1, &len);

	if (rc)
		return rc == -ENOSPC ? -EINVAL : rc;
	line[len] = '\0';
	return 0;
}

/*
 * A flight that committed but whose reply was lost: what the claim
 * made, read back.  The key is ours if it holds a generation under our
 * holder that was drawn for this claim (in flight, leased from now).
 */
static int claim_read_back(struct store_impl *st, const struct store_claim *c,
			   struct key_row *k, struct wf_row *w, bool *adopted)
{
	int rc = pg_lookup_key(st, c->wf, c->name, c->len, w, k);

	if (rc == 0 && (k->status != KEY_IN_FLIGHT || k->holder_pid != c->pid ||
			k->mtime_ns != c->now_ms * 1000000))
		rc = -EIO;	/* changed since: the outcome is not ours to tell */
	if (rc == 0)
		*adopted = false;	/* unknown: the wait wakes at its lease */
	return rc;
}

int pg_claim(struct store_impl *st, const struct store_claim *c,
	     struct key_row *k, struct wf_row *w, bool *adopted)
{
	struct pg_params p = { 0 };
	char *lines = malloc(3 * (EVENT_LINE_MAX + 1));
	PGresult *r = NULL;
	int rc = lines ? 0 : -ENOMEM;

	*adopted = false;
	if (rc == 0)
		rc = render(c->claim, lines);
	if (rc == 0)
		rc = render(c->expire, lines + EVENT_LINE_MAX + 1);
	if (rc == 0)
		rc = render(c->adopt, lines + 2 * (EVENT_LINE_MAX + 1));
	if (rc == 0) {
		pg_int(&p, c->wf);
		pg_bytes(&p, c->name, c->len);
		pg_int(&p, c->now_ms);
		pg_int(&p, c->lease_ms);
		pg_int(&p, c->pid);
		pg_int(&p, c->uid);
		for (int i = 0; i < 3; i++)
			pg_bytes(&p, lines + i * (EVENT_LINE_MAX + 1),
				 strlen(lines + i * (EVENT_LINE_MAX + 1)));
		if (c->host && store_host_ok(c->host, strlen(c->host)))
			pg_bytes(&p, c->host, strlen(c->host));
		else
			pg_bytes(&p, "", 0);
		rc = pg_flight(st, P_CLAIM, &p, &r);
	}
	free(lines);
	if (rc)
		return rc;
	if (!r)
		return claim_read_back(st, c, k, w, adopted);
	if (PQntuples(r) != 1)
		rc = -ENOENT;	/* no such workflow */
	if (rc == 0)
		rc = pg_read_key(st, r, 0, 1, k);
	if (rc == 0)
		rc = pg_read_wf(st, r, 0, 1 + KEY_NCOLS, w);
	if (rc == 0 && pg_col_int(r, 0, 0) != 0)
		rc = -EEXIST;
	if (rc == 0)
		*adopted = pg_col_int(r, 0, 1 + KEY_NCOLS + WF_NCOLS) == 1;
	PQclear(r);
	return rc;
}

/* The code a finalize or an abandon returns, and the row before. */
static int ended(struct store_impl *st, PGresult *r, struct key_row *k)
{
	int64_t code;
	int rc = 0;

	if (!r)
		return 0;	/* it committed; the reply was lost */
	code = PQntuples(r) == 1 ? pg_col_int(r, 0, 0) : 1;
	if (code == 0 || code == 2)
		rc = pg_read_key(st, r, 0, 1, k);
	if (rc == 0 && code)
		rc = code == 2 ? -EPERM : -ESTALE;
	PQclear(r);
	return rc;
}

int pg_finalize(struct store_impl *st, const struct store_finalize *f,
		struct key_row *k)
{
	struct pg_params p = { 0 };
	char *line = malloc(EVENT_LINE_MAX + 1);
	PGresult *r = NULL;
	int rc = line ? render(f->ev, line) : -ENOMEM;

	if (rc == 0) {
		pg_int(&p, f->generation);
		pg_int(&p, f->now_ms);
		pg_int(&p, f->status);
		pg_bytes(&p, f->result_len ? f->result : "", f->result_len);
		pg_int(&p, (int64_t)f->result_len);
		pg_bytes(&p, line, strlen(line));
		pg_int(&p, DEDUP_SUCCESS);
		pg_int(&p, PG_CHUNK);
		rc = pg_flight(st, P_FINALIZE, &p, &r);
	}
	free(line);
	return rc ? rc : ended(st, r, k);
}

int pg_abandon(struct store_impl *st, int64_t generation, int64_t now_ms,
	       const struct event *ev, struct key_row *k)
{
	struct pg_params p = { 0 };
	char *line = malloc(EVENT_LINE_MAX + 1);
	PGresult *r = NULL;
	int rc = line ? render(ev, line) : -ENOMEM;

	if (rc == 0) {
		pg_int(&p, generation);
		pg_int(&p, now_ms);
		pg_bytes(&p, line, strlen(line));
		rc = pg_flight(st, P_ABANDON, &p, &r);
	}
	free(line);
	return rc ? rc : ended(st, r, k);
}

int pg_renew(struct store_impl *st, const int64_t *generations, size_t n,
	     int64_t now_ms, int64_t lease_ms, uint64_t *renewed)
{
	struct pg_params p = { 0 };
	size_t cap = 2 + n * 21, at = 0;
	char *list = malloc(cap);
	PGresult *r = NULL;
	int rc = list ? 0 : -ENOMEM;

	*renewed = 0;
	if (rc)
		return rc;
	/* An array of integers in its text form: {1,2,3}. */
	list[at++] = '{';
	for (size_t i = 0; i < n; i++)
		at += (size_t)snprintf(list + at, cap - at, "%s%" PRId64,
				       i ? "," : "", generations[i]);
	snprintf(list + at, cap - at, "}");
	pg_text(&p, list);
	pg_int(&p, now_ms);
	pg_int(&p, lease_ms);
	rc = pg_flight(st, P_RENEW, &p, &r);
	free(list);
	if (rc == 0 && r)
		*renewed = strtoull(PQcmdTuples(r), NULL, 10);
	PQclear(r);
	return rc;
}

/*
 * A checkpoint commit that committed but whose reply was lost: what it
 * did, read back.  The step holds the staged content: it was swapped in.
 * Otherwise the statement found one of its cases that change nothing:
 * the workflow or the step gone (0, as a commit into nothing), the epoch
 * moved on (-ESTALE), the step renamed (-ENOTSUP: the row functions').
 * A step that holds other content under its name changed since: -EIO.
 */
static int step_read_back(struct store_impl *st,
			  const struct store_step_commit *c,
			  struct step_row *r)
{
	struct wf_row w = { 0 };
	int rc = pg_begin(st, false);

	if (rc)
		return rc;
	rc = pg_wf_by_id(st, c->wf, &w);
	if (rc == 0)
		rc = c->step ? pg_step_by_id(st, c->step, r)
			     : pg_step_get(st, c->wf, c->epoch, c->name, c->len,
					   r);
	pg_commit(st);
	if (rc == 0 && r->content == c->content && r->size == c->size)
		return 0;
	if (rc == 0 && w.epoch != c->epoch)
		rc = -ESTALE;
	else if (rc == -ENOENT)
		rc = w.id && w.epoch != c->epoch ? -ESTALE : 0;
	else if (rc == 0 && (r->name_len != c->len ||
			     memcmp(r->name, c->name, c->len) != 0))
		rc = -ENOTSUP;
	else if (rc == 0)
		rc = -EIO;	/* changed since: the outcome is not ours to tell */
	memset(r, 0, sizeof(*r));
	return rc;
}

int pg_step_commit(struct store_impl *st, const struct store_step_commit *c,
		   struct step_row *r)
{
	struct pg_params p = { 0 };
	char *line = malloc(EVENT_LINE_MAX + 1);
	PGresult *res = NULL;
	int64_t code;
	int rc = line ? render(c->ev, line) : -ENOMEM;

	memset(r, 0, sizeof(*r));
	if (rc == 0) {
		pg_int(&p, c->wf);
		pg_int(&p, c->epoch);
		pg_int(&p, c->step);
		pg_bytes(&p, c->name, c->len);
		pg_int(&p, c->content);
		pg_int(&p, c->size);
		pg_int(&p, c->now_ms);
		pg_bytes(&p, line, strlen(line));
		rc = pg_flight(st, P_STEP_COMMIT, &p, &res);
	}
	free(line);
	if (rc)
		return rc;
	if (!res)
		return step_read_back(st, c, r);
	code = PQntuples(res) == 1 ? pg_col_int(res, 0, STEP_NCOLS) : -1;
	if (code == 0 && pg_col_int(res, 0, STEP_NCOLS + 1) != 1)
		rc = -EIO;	/* the staged version went, pinned as it was */
	else if (code == 0 && PQgetisnull(res, 0, 0))
		rc = -EIO;
	else if (code == 0)
		rc = pg_read_step(st, res, 0, r);
	else if (code == 2)
		rc = -ESTALE;
	else if (code == 3)
		rc = -ENOTSUP;	/* renamed while open: the row functions' */
	else if (code != 1)
		rc = -EIO;
	PQclear(res);
	if (rc && rc != -ENOTSUP)
		memset(r, 0, sizeof(*r));
	return rc;
}
