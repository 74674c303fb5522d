/*
 * store_verbs.c - the operations of store.h made of its row functions, in
 * one transaction each: what a backend without operations of its own
 * runs (SQLite, where a transaction costs no round trip).  A backend that
 * has its own (PostgreSQL: one statement or one flight each) must do
 * exactly what these do; the same tests run on both.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "store_backend.h"

bool store_key_live(const struct key_row *k, int64_t now_ms)
{
	switch (k->status) {
	case KEY_SUCCEEDED:
	case KEY_FAILED:
		return true;
	case KEY_IN_FLIGHT:
		return k->expires_ms > now_ms;
	case KEY_VACANT:
		break;
	}
	return false;
}

bool store_host_ok(const char *s, size_t len)
{
	if (len > STORE_HOST_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'))
			return false;
	}
	return true;
}

int store_key_current(const struct key_row *k, int64_t now_ms)
{
	if (k->status == KEY_VACANT)
		return -ESTALE;
	if (k->status == KEY_IN_FLIGHT && k->expires_ms <= now_ms)
		return -ESTALE;
	return 0;
}

int store_generation_get(struct store *st, int64_t generation, int64_t now_ms,
			 struct key_row *out)
{
	int rc = store_key_by_generation(st, generation, out);

	if (rc == -ENOENT)
		return -ESTALE;
	return rc ? rc : store_key_current(out, now_ms);
}

/* A transaction's end: commit when rc is 0, else roll back. */
static int end(struct store *st, int rc)
{
	if (rc)
		store_rollback(st);
	else
		rc = store_commit(st);
	return rc;
}

/* The lease of a claim of workflow w, as store_claim() states it. */
static int64_t lease_of(const struct wf_row *w, int64_t lease_ms)
{
	int64_t ttl = w->policy.in_flight_ttl * 1000;

	return lease_ms < ttl ? lease_ms : ttl;
}

static int append(struct store *st, int64_t wf, const struct event *tmpl,
		  int64_t generation, int64_t number)
{
	struct event ev = *tmpl;

	ev.generation = generation;
	if (ev.number_field)
		ev.number_field_value = number;
	return store_event_append(st, wf, &ev);
}

int verbs_lookup_workflow(struct store *st, int64_t id, const char *name,
			  size_t len, struct wf_row *w)
{
	int rc = store_begin(st, false);

	if (rc)
		return rc;
	rc = name ? store_wf_by_name(st, name, len, w)
		  : store_wf_by_id(st, id, w);
	return end(st, rc);
}

int verbs_lookup_key(struct store *st, int64_t wf, const char *name,
		     size_t len, struct wf_row *w, struct key_row *k)
{
	int rc = store_begin(st, false);

	if (rc)
		return rc;
	rc = store_wf_by_id(st, wf, w);
	if (rc == -ENOENT)
		w->id = 0;
	if (rc == 0)
		rc = store_key_get(st, wf, name, len, k);
	return end(st, rc);
}

int verbs_lookup_generation(struct store *st, int64_t generation,
			    struct key_row *k, struct wf_row *w)
{
	int rc = store_begin(st, false);

	if (rc)
		return rc;
	rc = store_key_by_generation(st, generation, k);
	if (rc == 0 && w)
		rc = store_wf_by_id(st, k->wf, w);
	return end(st, rc);
}

int verbs_claim(struct store *st, const struct store_claim *c,
		struct key_row *k, struct wf_row *w, bool *adopted)
{
	int64_t previous = 0;
	int rc;

	*adopted = false;
	rc = store_begin(st, true);
	if (rc)
		return rc;
	rc = store_wf_by_id(st, c->wf, w);
	if (rc)
		goto out;
	rc = store_key_get(st, c->wf, c->name, c->len, k);
	if (rc == 0) {
		if (store_key_live(k, c->now_ms)) {
			rc = -EEXIST;
			goto out;
		}
		*adopted = k->status == KEY_IN_FLIGHT;
		previous = k->generation;
		k->previous = previous;
		k->attempt++;
	} else if (rc == -ENOENT) {
		memset(k, 0, sizeof(*k));
		k->wf = c->wf;
		name_copy(k->name, &k->name_len, c->name, c->len);
		k->attempt = 1;
	} else {
		goto out;
	}
	rc = store_next_generation(st, &k->generation);
	if (rc)
		goto out;
	k->status = KEY_IN_FLIGHT;
	k->expires_ms = c->now_ms + lease_of(w, c->lease_ms);
	k->mtime_ns = c->now_ms * 1000000;
	k->holder_pid = c->pid;
	k->holder_uid = c->uid;
	k->holder_host[0] = '\0';
	if (c->host && store_host_ok(c->host, strlen(c->host)))
		snprintf(k->holder_host, sizeof(k->holder_host), "%s", c->host);
	if (k->id) {
		rc = store_key_update(st, k);
		if (rc == 0 && k->content)
			rc = store_key_set_result(st, k, NULL, 0);
		if (rc == 0)
			rc = store_key_clear_notes(st, k->id);
	} else {
		k->result_len = 0;
		k->content = 0;
		rc = store_key_insert(st, k);
	}
	if (rc == 0 && *adopted)
		rc = append(st, c->wf, c->expire, previous, 0);
	if (rc == 0 && *adopted)
		rc = append(st, c->wf, c->adopt, k->generation, previous);
	else if (rc == 0)
		rc = append(st, c->wf, c->claim, k->generation, k->attempt);
out:
	return end(st, rc);
}

int verbs_finalize(struct store *st, const struct store_finalize *f,
		   struct key_row *k)
{
	struct key_row row;
	struct wf_row w;
	int rc = store_begin(st, true);

	if (rc)
		return rc;
	rc = store_generation_get(st, f->generation, f->now_ms, k);
	if (rc == 0 && (k->status == KEY_SUCCEEDED || k->status == KEY_FAILED))
		rc = -EPERM;
	if (rc == 0)
		rc = store_wf_by_id(st, k->wf, &w);
	if (rc)
		goto out;
	row = *k;
	row.mtime_ns = f->now_ms * 1000000;
	if (f->status == KEY_FAILED && w.policy.dedup_on == DEDUP_SUCCESS) {
		row.status = KEY_VACANT;
		rc = store_key_update(st, &row);
		if (rc == 0 && row.content)
			rc = store_key_set_result(st, &row, NULL, 0);
	} else {
		row.status = f->status;
		rc = store_key_update(st, &row);
		if (rc == 0)
			rc = store_key_set_result(st, &row, f->result,
						  f->result_len);
	}
	if (rc == 0)
		rc = store_event_append(st, k->wf, f->ev);
out:
	return end(st, rc);
}

int verbs_abandon(struct store *st, int64_t generation, int64_t now_ms,
		  const struct event *ev, struct key_row *k)
{
	struct key_row row;
	int rc = store_begin(st, true);

	if (rc)
		return rc;
	rc = store_generation_get(st, generation, now_ms, k);
	if (rc == 0 && k->status != KEY_IN_FLIGHT)
		rc = -ESTALE;
	if (rc == 0) {
		row = *k;
		row.status = KEY_VACANT;
		row.mtime_ns = now_ms * 1000000;
		rc = store_key_update(st, &row);
	}
	if (rc == 0)
		rc = store_event_append(st, k->wf, ev);
	return end(st, rc);
}

int verbs_renew(struct store *st, const int64_t *generations, size_t n,
		int64_t now_ms, int64_t lease_ms, uint64_t *renewed)
{
	int rc = store_begin(st, true);

	*renewed = 0;
	if (rc)
		return rc;
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct key_row k;
		struct wf_row w;
		int64_t lease;

		rc = store_key_by_generation(st, generations[i], &k);
		if (rc == -ENOENT || (rc == 0 && (k.status != KEY_IN_FLIGHT ||
						  k.expires_ms <= now_ms))) {
			rc = 0;
			continue;
		}
		if (rc == 0)
			rc = store_wf_by_id(st, k.wf, &w);
		if (rc) {
			rc = 0;		/* one bad row must not cost the others */
			continue;
		}
		lease = lease_of(&w, lease_ms);
		if (k.expires_ms - now_ms < lease - lease / 3) {
			k.expires_ms = now_ms + lease;
			rc = store_key_update(st, &k);
			*renewed += rc == 0;
			if (rc && rc != -ENOSPC && rc != -EROFS && rc != -EIO)
				rc = 0;
		}
	}
	return end(st, rc);
}

int verbs_step_commit(struct store *st, const struct store_step_commit *c,
		      struct step_row *r)
{
	struct wf_row w;
	struct event ev = *c->ev;
	int rc = store_begin(st, true);

	memset(r, 0, sizeof(*r));
	if (rc)
		return rc;
	rc = store_wf_by_id(st, c->wf, &w);
	if (rc == -ENOENT) {
		/* The workflow went while open: the commit goes into nothing. */
		rc = 0;
		goto out;
	}
	if (rc == 0 && w.epoch != c->epoch)
		rc = -ESTALE;
	if (rc == 0 && c->step) {
		rc = store_step_by_id(st, c->step, r);
		if (rc == -ENOENT) {
			/* Removed while open: like a write to an unlinked file. */
			memset(r, 0, sizeof(*r));
			rc = 0;
			goto out;
		}
	} else if (rc == 0) {
		/*
		 * The first commit of a new checkpoint creates it, or, when
		 * another writer's came first, replaces that one's content,
		 * as a rename over it would.
		 */
		rc = store_step_get(st, c->wf, c->epoch, c->name, c->len, r);
		if (rc == -ENOENT) {
			memset(r, 0, sizeof(*r));
			r->wf = c->wf;
			r->epoch = c->epoch;
			name_copy(r->name, &r->name_len, c->name, c->len);
			r->mtime_ns = c->now_ms * 1000000;
			rc = store_step_insert(st, r);
		}
	}
	if (rc == 0)
		rc = store_step_set_content(st, r, c->content, c->size,
					    c->now_ms * 1000000);
	ev.name = r->name;
	ev.name_len = r->name_len;
	if (rc == 0)
		rc = store_event_append(st, c->wf, &ev);
out:
	rc = end(st, rc);
	if (rc)
		memset(r, 0, sizeof(*r));
	return rc;
}
