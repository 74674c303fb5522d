/*
 * store.c - what every backend of the store shares: telling them apart,
 * and forwarding each call of store.h to the backend of the store.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "event.h"
#include "store_backend.h"

struct store {
	const struct store_ops *ops;
	struct store_impl *impl;
};

/*
 * PostgreSQL: a URL, or a libpq connection string ("host=db dbname=jobs",
 * "service=jobs"), which begins with one of libpq's own keywords (as its
 * PQconndefaults() lists them) and '='.  Anything else is a SQLite file,
 * even a path with '=' in it later on.
 */
static bool libpq_keyword(const char *name)
{
	PQconninfoOption *opts = PQconndefaults();
	bool found = false;

	if (!opts)
		return strchr(name, '=') != NULL;	/* out of memory: not a file */
	for (PQconninfoOption *o = opts; o->keyword && !found; o++) {
		size_t n = strlen(o->keyword);

		found = strncmp(name, o->keyword, n) == 0 &&
			name[n + strspn(name + n, " \t")] == '=';
	}
	PQconninfoFree(opts);
	return found;
}

enum store_scheme store_scheme(const char *name)
{
	static const char *const urls[] = { "postgresql://", "postgres://" };

	for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++)
		if (strncmp(name, urls[i], strlen(urls[i])) == 0)
			return STORE_SCHEME_POSTGRES;
	name += strspn(name, " \t");
	return libpq_keyword(name) ? STORE_SCHEME_POSTGRES : STORE_SCHEME_SQLITE;
}

int store_open(const char *path, const struct store_options *opt,
	       struct store **out, char *err, size_t errlen)
{
	const struct store_ops *ops = &store_sqlite_ops;
	struct store *st;
	int rc;

	*out = NULL;
	if (store_scheme(path) == STORE_SCHEME_POSTGRES)
		ops = &store_pg_ops;
	else if (opt->pg_schema) {
		snprintf(err, errlen, "pg_schema is for a PostgreSQL store, "
			 "and %s is a SQLite file", path);
		return -EINVAL;
	}
	st = calloc(1, sizeof(*st));
	if (!st) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	st->ops = ops;
	rc = ops->open(path, opt, &st->impl, err, errlen);
	if (rc) {
		free(st);
		return rc;
	}
	*out = st;
	return 0;
}

void store_close(struct store *st)
{
	if (!st)
		return;
	st->ops->close(st->impl);
	free(st);
}

int64_t store_new_mount_id(void)
{
	int64_t id = 0;

	if (getrandom(&id, sizeof(id), 0) != (ssize_t)sizeof(id))
		id = (int64_t)getpid() << 20 ^ (int64_t)time(NULL);
	id &= INT64_MAX;
	return id ? id : 1;
}

/* store_mark_maintenance(): this thread's transactions are maintenance. */
static _Thread_local bool maintenance_thread;

void store_mark_maintenance(void)
{
	maintenance_thread = true;
}

bool store_in_maintenance(void)
{
	return maintenance_thread;
}

/* How long the calling thread's last write transaction held the lock. */
static _Thread_local int64_t last_hold_us;

void store_note_hold(int64_t us)
{
	last_hold_us = us;
}

int64_t store_last_hold_us(void)
{
	return last_hold_us;
}

/* ---- forwarding -------------------------------------------------------- */

bool store_contended(struct store *st)
{
	return st->ops->contended && st->ops->contended(st->impl);
}

int64_t store_now_ms(struct store *st)
{
	return st->ops->now_ms(st->impl);
}

int store_changed(struct store *st, int64_t *seen)
{
	return st->ops->changed(st->impl, seen);
}

void store_get_stats(struct store *st, struct store_stats *out)
{
	st->ops->get_stats(st->impl, out);
}

const char *store_problem(struct store *st, char *buf, size_t size)
{
	return st->ops->problem(st->impl, buf, size);
}

int store_checkpoint(struct store *st)
{
	return st->ops->checkpoint(st->impl);
}

void store_on_wal_growth(struct store *st, void (*fn)(void *arg), void *arg)
{
	st->ops->on_wal_growth(st->impl, fn, arg);
}

/* ---- operations: the backend's own, or made of its rows ----------- */

int store_lookup_workflow(struct store *st, int64_t id, const char *name,
			  size_t len, struct wf_row *w)
{
	if (st->ops->lookup_workflow)
		return st->ops->lookup_workflow(st->impl, id, name, len, w);
	return verbs_lookup_workflow(st, id, name, len, w);
}

int store_lookup_key(struct store *st, int64_t wf, const char *name,
		     size_t len, struct wf_row *w, struct key_row *k)
{
	if (st->ops->lookup_key)
		return st->ops->lookup_key(st->impl, wf, name, len, w, k);
	return verbs_lookup_key(st, wf, name, len, w, k);
}

int store_lookup_generation(struct store *st, int64_t generation,
			    struct key_row *k, struct wf_row *w)
{
	if (st->ops->lookup_generation)
		return st->ops->lookup_generation(st->impl, generation, k, w);
	return verbs_lookup_generation(st, generation, k, w);
}

int store_claim(struct store *st, const struct store_claim *c,
		struct key_row *k, struct wf_row *w, bool *adopted)
{
	if (st->ops->claim)
		return st->ops->claim(st->impl, c, k, w, adopted);
	return verbs_claim(st, c, k, w, adopted);
}

int store_finalize(struct store *st, const struct store_finalize *f,
		   struct key_row *k)
{
	if (st->ops->finalize)
		return st->ops->finalize(st->impl, f, k);
	return verbs_finalize(st, f, k);
}

int store_abandon(struct store *st, int64_t generation, int64_t now_ms,
		  const struct event *ev, struct key_row *k)
{
	if (st->ops->abandon)
		return st->ops->abandon(st->impl, generation, now_ms, ev, k);
	return verbs_abandon(st, generation, now_ms, ev, k);
}

int store_step_commit(struct store *st, const struct store_step_commit *c,
		      struct step_row *r)
{
	int rc = -ENOTSUP;

	if (st->ops->step_commit)
		rc = st->ops->step_commit(st->impl, c, r);
	return rc == -ENOTSUP ? verbs_step_commit(st, c, r) : rc;
}

int store_renew(struct store *st, const int64_t *generations, size_t n,
		int64_t now_ms, int64_t lease_ms, uint64_t *renewed)
{
	if (st->ops->renew)
		return st->ops->renew(st->impl, generations, n, now_ms,
				      lease_ms, renewed);
	return verbs_renew(st, generations, n, now_ms, lease_ms, renewed);
}

int store_begin(struct store *st, bool write)
{
	return st->ops->begin(st->impl, write);
}

int store_commit(struct store *st)
{
	return st->ops->commit(st->impl);
}

void store_rollback(struct store *st)
{
	st->ops->rollback(st->impl);
}

int store_next_generation(struct store *st, int64_t *out)
{
	return st->ops->next_generation(st->impl, out);
}

int store_wf_by_name(struct store *st, const char *name, size_t len,
		     struct wf_row *out)
{
	return st->ops->wf_by_name(st->impl, name, len, out);
}

int store_wf_by_id(struct store *st, int64_t id, struct wf_row *out)
{
	return st->ops->wf_by_id(st->impl, id, out);
}

int store_wf_insert(struct store *st, struct wf_row *row)
{
	return st->ops->wf_insert(st->impl, row);
}

int store_wf_update(struct store *st, const struct wf_row *row)
{
	return st->ops->wf_update(st->impl, row);
}

int store_wf_delete(struct store *st, int64_t id)
{
	return st->ops->wf_delete(st->impl, id);
}

int store_wf_list(struct store *st, int64_t after, struct wf_row *rows, int max,
		  int *n)
{
	return st->ops->wf_list(st->impl, after, rows, max, n);
}

int store_key_get(struct store *st, int64_t wf, const char *name, size_t len,
		  struct key_row *out)
{
	return st->ops->key_get(st->impl, wf, name, len, out);
}

int store_key_by_generation(struct store *st, int64_t generation,
			    struct key_row *out)
{
	return st->ops->key_by_generation(st->impl, generation, out);
}

int store_key_result(struct store *st, const struct key_row *k, char **buf,
		     size_t *len)
{
	return st->ops->key_result(st->impl, k, buf, len);
}

int store_key_insert(struct store *st, struct key_row *row)
{
	return st->ops->key_insert(st->impl, row);
}

int store_key_update(struct store *st, const struct key_row *row)
{
	return st->ops->key_update(st->impl, row);
}

int store_key_set_result(struct store *st, struct key_row *k, const char *buf,
			 size_t len)
{
	return st->ops->key_set_result(st->impl, k, buf, len);
}

int store_key_delete(struct store *st, int64_t id)
{
	return st->ops->key_delete(st->impl, id);
}

int store_key_note(struct store *st, int64_t id, enum key_note which, char *buf,
		   size_t *len)
{
	return st->ops->key_note(st->impl, id, which, buf, len);
}

int store_key_set_note(struct store *st, int64_t id, enum key_note which,
		       const char *buf, size_t len)
{
	return st->ops->key_set_note(st->impl, id, which, buf, len);
}

int store_key_clear_notes(struct store *st, int64_t id)
{
	return st->ops->key_clear_notes(st->impl, id);
}

int store_key_list(struct store *st, int64_t wf, int64_t after, int64_t now_ms,
		   struct key_row *rows, int max, int *n)
{
	return st->ops->key_list(st->impl, wf, after, now_ms, rows, max, n);
}

int store_key_any(struct store *st, int64_t wf, int64_t now_ms, bool *any)
{
	return st->ops->key_any(st->impl, wf, now_ms, any);
}

int store_step_get(struct store *st, int64_t wf, int64_t epoch,
		   const char *name, size_t len, struct step_row *out)
{
	return st->ops->step_get(st->impl, wf, epoch, name, len, out);
}

int store_step_by_id(struct store *st, int64_t id, struct step_row *out)
{
	return st->ops->step_by_id(st->impl, id, out);
}

int store_step_any(struct store *st, int64_t wf, int64_t epoch, bool *any)
{
	return st->ops->step_any(st->impl, wf, epoch, any);
}

int store_step_list(struct store *st, int64_t wf, int64_t epoch, int64_t after,
		    struct step_row *rows, int max, int *n)
{
	return st->ops->step_list(st->impl, wf, epoch, after, rows, max, n);
}

int store_step_insert(struct store *st, struct step_row *row)
{
	return st->ops->step_insert(st->impl, row);
}

int store_step_update(struct store *st, const struct step_row *row)
{
	return st->ops->step_update(st->impl, row);
}

int store_step_delete(struct store *st, int64_t id)
{
	return st->ops->step_delete(st->impl, id);
}

int store_step_set_content(struct store *st, struct step_row *r,
			   int64_t content, int64_t size, int64_t mtime_ns)
{
	return st->ops->step_set_content(st->impl, r, content, size, mtime_ns);
}

int store_pin(struct store *st, int64_t content, int64_t now_ms)
{
	return st->ops->pin(st->impl, content, now_ms);
}

void store_unpin(struct store *st, int64_t content)
{
	st->ops->unpin(st->impl, content);
}

int store_pins_renew(struct store *st, int64_t now_ms)
{
	return st->ops->pins_renew(st->impl, now_ms);
}

int store_content_read(struct store *st, int64_t content, int64_t size,
		       int64_t off, char *buf, size_t len, size_t *got)
{
	return st->ops->content_read(st->impl, content, size, off, buf, len,
				     got);
}

int store_content_stage(struct store *st, int fd, int64_t size, int64_t now_ms,
			int64_t *content)
{
	return st->ops->content_stage(st->impl, fd, size, now_ms, content);
}

int store_purge(struct store *st, int64_t now_ms, int max, int64_t *n)
{
	return st->ops->purge(st->impl, now_ms, max, n);
}

int store_hold(struct store *st, int64_t wf, int64_t expires_ms, int64_t *id)
{
	return st->ops->hold(st->impl, wf, expires_ms, id);
}

int store_unhold(struct store *st, int64_t id)
{
	return st->ops->unhold(st->impl, id);
}

int store_hold_any(struct store *st, int64_t wf, int64_t now_ms,
		   int64_t except, bool *any)
{
	return st->ops->hold_any(st->impl, wf, now_ms, except, any);
}

int store_holds_renew(struct store *st, int64_t now_ms, int64_t lease_ms)
{
	return st->ops->holds_renew(st->impl, now_ms, lease_ms);
}

int store_event_append(struct store *st, int64_t wf, const struct event *ev)
{
	return st->ops->event_append(st->impl, wf, ev);
}

int store_event_read(struct store *st, int64_t wf, int64_t offset, char *buf,
		     size_t size, size_t *got)
{
	return st->ops->event_read(st->impl, wf, offset, buf, size, got);
}

/* store_event_list(): what oncectl shows, read from each line here. */
struct event_reading {
	int (*fn)(void *arg, const struct event_view *ev);
	void *arg;
	char *scratch;
	size_t cap;
};

static int read_then(void *arg, const struct event_view *raw)
{
	struct event_reading *r = arg;
	struct event_view ev = *raw;
	size_t len = strlen(raw->line);

	if (len + 1 > r->cap) {
		char *p = realloc(r->scratch, len + 1);

		if (!p)
			return -ENOMEM;
		r->scratch = p;
		r->cap = len + 1;
	}
	/* A line that is no event of ours still shows, as it is. */
	if (event_parse(raw->line, len, &ev, r->scratch, r->cap)) {
		ev.type = ev.subject = ev.detail = "";
		ev.generation = ev.pid = ev.uid = 0;
	}
	return r->fn(r->arg, &ev);
}

int store_event_list(struct store *st, int64_t wf, int64_t since_ms,
		     int (*fn)(void *arg, const struct event_view *ev),
		     void *arg)
{
	struct event_reading r = { fn, arg, NULL, 0 };
	int rc = st->ops->event_list(st->impl, wf, since_ms, read_then, &r);

	free(r.scratch);
	return rc;
}

int store_check(struct store *st, const struct store_check_calls *calls,
		int64_t *problems)
{
	return st->ops->check(st->impl, calls, problems);
}

int store_key_expired(struct store *st, int64_t now_ms, struct key_row *rows,
		      int max, int *n)
{
	return st->ops->key_expired(st->impl, now_ms, rows, max, n);
}

int store_key_retired(struct store *st, int64_t now_ms, struct key_row *rows,
		      int max, int *n, bool *more)
{
	return st->ops->key_retired(st->impl, now_ms, rows, max, n, more);
}

int store_event_trim(struct store *st, int64_t now_ms, int max, int64_t *n,
		     bool *more)
{
	return st->ops->event_trim(st->impl, now_ms, max, n, more);
}
