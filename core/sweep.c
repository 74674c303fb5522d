/*
 * sweep.c - the sweep (see sweep.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sweep.h"

static void key_event(struct event *ev, const char *type,
		      const struct key_row *k)
{
	*ev = (struct event){
		.type = type,
		.subject = "key",
		.name = k->name,
		.name_len = k->name_len,
		.generation = k->generation,
		.detail_field = "status",
		.detail = status_name(k->status),
		.detail_len = strlen(status_name(k->status)),
	};
}

/*
 * A slice looks at store_contended() after each key, and after each
 * SWEEP_PIECE events or checkpoints (a statement's worth): when a claim
 * waits for the store, the slice commits what it has done.
 */
#define SWEEP_PIECE 8

/*
 * Inside a transaction: one batch of expired claims or retired keys,
 * ended early (*cut) when another transaction waits.
 */
static int sweep_keys(struct once *o, bool expired, int batch,
		      const struct caller *who, int64_t *n, bool *more,
		      bool *cut)
{
	struct key_row *rows = malloc(sizeof(*rows) * (size_t)batch);
	struct event ev;
	int got = 0, done = 0, rc;

	*n = 0;
	if (!rows)
		return -ENOMEM;
	if (expired)
		rc = store_key_expired(o->store, once_now_ms(o), rows, batch, &got);
	else
		rc = store_key_retired(o->store, once_now_ms(o), rows, batch, &got,
				       more);
	for (; done < got && rc == 0; done++) {
		struct key_row *k = &rows[done];

		if (done > 0 && store_contended(o->store)) {
			*cut = true;
			break;
		}
		if (expired) {
			key_event(&ev, "expire", k);
			k->status = KEY_VACANT;
			rc = store_key_update(o->store, k);
		} else {
			key_event(&ev, "retire", k);
			rc = store_key_delete(o->store, k->id);
		}
		if (rc == 0)
			rc = once_event(o, k->wf, who, &ev);
	}
	free(rows);
	*n = done;
	return rc;
}

/* The size of the next piece of a batch of which done rows are done. */
static int piece(int batch, int64_t done)
{
	return batch - done < SWEEP_PIECE ? (int)(batch - done) : SWEEP_PIECE;
}

/* Inside a write transaction: up to batch rows of one kind. */
static int sweep_kind(struct once *o, enum sweep_kind kind, int batch,
		      const struct caller *who, struct sweep_report *r,
		      bool *more)
{
	int64_t n = 0, k;
	bool left = false, cut = false;
	int rc;

	switch (kind) {
	case SWEEP_EXPIRED:
		rc = sweep_keys(o, true, batch, who, &n, &left, &cut);
		r->expired += n;
		*more = n == batch || cut;
		break;
	case SWEEP_RETIRED:
		rc = sweep_keys(o, false, batch, who, &n, &left, &cut);
		r->retired += rc ? 0 : n;
		*more = n == batch || left || cut;
		break;
	case SWEEP_CHECKPOINTS:
		/* n counts rows, which may pass batch: it bounds chunks. */
		do {
			k = 0;
			rc = store_purge(o->store, once_now_ms(o),
					 piece(batch, n), &k);
			n += rc ? 0 : k;
		} while (rc == 0 && k > 0 && n < batch &&
			 !(cut = store_contended(o->store)));
		r->checkpoints += rc ? 0 : n;
		*more = n > 0;
		break;
	default:
		do {
			int want = piece(batch, n);

			k = 0;
			rc = store_event_trim(o->store, once_now_ms(o), want,
					      &k, &left);
			n += rc ? 0 : k;
			if (rc || k < want)
				break;
		} while (rc == 0 && n < batch &&
			 !(cut = store_contended(o->store)));
		r->events += rc ? 0 : n;
		*more = n == batch || left || cut;
		break;
	}
	return rc;
}

/* Inside a transaction: a batch of every kind; *more when one was full. */
static int sweep_batch(struct once *o, int batch, const struct caller *who,
		       struct sweep_report *r, bool *more)
{
	int rc = 0;

	*more = false;
	for (int k = 0; k < SWEEP_KINDS && rc == 0; k++) {
		bool left = false;

		rc = sweep_kind(o, (enum sweep_kind)k, batch, who, r, &left);
		*more |= left;
	}
	return rc;
}

int sweep_slice(struct once *o, enum sweep_kind kind, int batch,
		const struct caller *who, struct sweep_report *r, bool *more)
{
	int rc = store_begin(o->store, true);

	*more = false;
	if (rc)
		return rc;
	rc = sweep_kind(o, kind, batch, who, r, more);
	return once_end(o, rc);
}

int sweep_run(struct once *o, const struct sweep_options *opt,
	      const struct caller *who, struct sweep_report *r)
{
	int batch = opt->batch > 0 ? opt->batch : 500;
	bool more = true;
	int rc = 0;

	memset(r, 0, sizeof(*r));
	if (opt->dry_run) {
		/* The real thing in one transaction, rolled back. */
		rc = store_begin(o->store, true);
		if (rc)
			return rc;
		while (more && rc == 0) {
			rc = sweep_batch(o, batch, who, r, &more);
			if (opt->progress)
				opt->progress(opt->progress_arg, r);
		}
		store_rollback(o->store);
		return rc;
	}
	for (int b = 0; more && rc == 0; b++) {
		if (opt->max_batches && b >= opt->max_batches) {
			r->more = true;
			break;
		}
		rc = store_begin(o->store, true);
		if (rc)
			break;
		rc = sweep_batch(o, batch, who, r, &more);
		rc = once_end(o, rc);
		if (opt->progress)
			opt->progress(opt->progress_arg, r);
	}
	return rc;
}
