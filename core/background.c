/*
 * background.c - the renewer and the maintainer (see background.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "background.h"
#include "key.h"
#include "step.h"
#include "sweep.h"
#include "wait.h"

#define RENEW_INTERVAL_MS 500
#define MAINTAIN_INTERVAL_MS 500
/*
 * A slice is one transaction of one kind of work (the purge, or one kind
 * of the sweep: sweep_slice).  Its batch adapts so that it holds the
 * store's lock about SLICE_BUDGET_US, which is what a claim may wait
 * behind it, at any size of store and on any disk: doubled after a
 * slice that held it under half the budget, halved after one that held
 * it over one and a half, and never past BATCH_MAX rows, whose commit
 * (that writes every page the slice changed) cannot be cut short.  A
 * slice also commits early, after its first rows, once another
 * transaction waits (store_contended): a claim waits for a few rows of
 * it at most.
 *
 * The pause between slices is at least SLICE_DUTY times as long as the
 * slice took, so that a backlog, however big, holds the lock a fifth of
 * the time at most; and, while others commit too, long enough that the
 * store writes no more than SLICE_PAGES_PER_MS pages a millisecond,
 * claims' pages included.  On SQLite every claim's fdatasync carries
 * the pages written before it: a sweep that wrote freely (deleting a row
 * rewrites a page of each index it is in) made every claim's sync
 * longer.
 */
#define SLICE_BUDGET_US 1000
#define BATCH_MIN 4
#define BATCH_MAX 64
#define SLICE_PAUSE_MS 5
#define SLICE_DUTY 4
#define SLICE_PAGES_PER_MS 1

struct background {
	struct once *o;
	struct background_config cfg;
	struct caller self;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stopping;
	pthread_t renewer, maintainer, waker;
	bool renewer_started, maintainer_started, waker_started;
	int64_t next_sweep_ms;
	enum sweep_kind sweep_kind;	/* the next slice of a sweep under way */
	int batch[SWEEP_KINDS + 1];	/* each kind's, and the purge's (last) */
	bool sweep_left;	/* a kind of this round left rows for the next */
	bool checkpoint_due;	/* the WAL grew long: checkpoint at once */
	long slice_pause_ms;	/* after the last slice, before the next */
	uint64_t commits_seen;	/* the store's commits at the last pause */
	bool sweep_turn;	/* the next slice is the sweep's */
	bool purge_left;	/* the last purge slice removed something */
	bool sweep_going;	/* a round of the sweep is under way */
};

static int64_t steady_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The next batch of a kind of slice whose transaction held the lock
 * took_us with this one; it grows only after a slice that had more work
 * than the batch.
 */
static void adapt(int *batch, int64_t took_us, bool full)
{
	if (full && took_us < SLICE_BUDGET_US / 2 && *batch < BATCH_MAX)
		*batch *= 2;
	else if (took_us > SLICE_BUDGET_US * 3 / 2 && *batch > BATCH_MIN)
		*batch /= 2;
}

/* Database pages the store's commits have written (SQLite; else 0). */
static uint64_t pages_written(struct background *b)
{
	struct store_stats ss;

	store_get_stats(b->o->store, &ss);
	return ss.pages_written;
}

/*
 * The pause after a slice that began at start_ms, when the store had
 * written pages0 pages: long enough for the duty and, when others
 * committed since the last slice, for the store to write no more than
 * SLICE_PAGES_PER_MS pages a millisecond in all.
 */
static long slice_pause(struct background *b, int64_t start_ms,
			uint64_t pages0)
{
	int64_t took = steady_ms() - start_ms;
	struct store_stats ss;
	long pause = SLICE_PAUSE_MS;
	bool others;

	store_get_stats(b->o->store, &ss);
	others = ss.commits - b->commits_seen > 1;	/* the slice's own: 1 */
	b->commits_seen = ss.commits;
	if (took * SLICE_DUTY > pause)
		pause = (long)(took * SLICE_DUTY);
	if (others && (long)((ss.pages_written - pages0) /
			     SLICE_PAGES_PER_MS) > pause)
		pause = (long)((ss.pages_written - pages0) /
			       SLICE_PAGES_PER_MS);
	return pause;
}

/* From inside a commit (store_on_wal_growth): wake the maintainer. */
static void wal_grew(void *arg)
{
	struct background *b = arg;

	pthread_mutex_lock(&b->lock);
	b->checkpoint_due = true;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

/*
 * Sleep until the monotonic time until_ms, or until stopped, or, when
 * for_checkpoint, until the WAL grew long; false when stopping.
 */
static bool pause_until(struct background *b, int64_t until_ms,
			bool for_checkpoint)
{
	struct timespec until = { .tv_sec = until_ms / 1000,
				  .tv_nsec = (until_ms % 1000) * 1000000L };
	bool go_on;

	pthread_mutex_lock(&b->lock);
	while (!b->stopping && !(for_checkpoint && b->checkpoint_due) &&
	       steady_ms() < until_ms)
		pthread_cond_timedwait(&b->cond, &b->lock, &until);
	go_on = !b->stopping;
	pthread_mutex_unlock(&b->lock);
	return go_on;
}

static void *renewer(void *arg)
{
	struct background *b = arg;
	int64_t *gens = NULL;
	size_t cap = 0;

	while (pause_until(b, steady_ms() + RENEW_INTERVAL_MS, false)) {
		size_t n = b->cfg.claims(b->cfg.arg, &gens, &cap);

		key_renew(b->o, gens, n);
		store_pins_renew(b->o->store, once_now_ms(b->o));
		step_renew_holds(b->o);
	}
	free(gens);
	return NULL;
}

/* A slice of the purge: true when it removed something. */
static bool purge_step(struct background *b)
{
	int *batch = &b->batch[SWEEP_KINDS];
	struct sweep_report r = { 0 };
	int64_t start = steady_ms();
	uint64_t pages0 = pages_written(b);
	bool left = false;
	int rc;

	rc = sweep_slice(b->o, SWEEP_CHECKPOINTS, *batch, &b->self, &r, &left);
	adapt(batch, store_last_hold_us(), rc == 0 && r.checkpoints >= *batch);
	if (rc || r.checkpoints == 0)
		return false;
	b->slice_pause_ms = slice_pause(b, start, pages0);
	return true;
}

/* Is a round of the sweep under way, or due? */
static bool sweep_due(const struct background *b)
{
	return b->cfg.sweep_interval_ms > 0 &&
	       (b->sweep_kind > 0 || once_now_ms(b->o) >= b->next_sweep_ms);
}

/*
 * A slice of the sweep's round: a round takes each kind in turn, and goes
 * round while any is left.  True when the round goes on.
 */
static bool sweep_step(struct background *b)
{
	struct sweep_report r = { 0 };
	int64_t start = steady_ms();
	uint64_t pages0 = pages_written(b);
	bool left = false;
	int rc;

	rc = sweep_slice(b->o, b->sweep_kind, b->batch[b->sweep_kind], &b->self,
			 &r, &left);
	adapt(&b->batch[b->sweep_kind], store_last_hold_us(), rc == 0 && left);
	if (rc == 0) {
		b->sweep_left |= left;
		if (++b->sweep_kind == SWEEP_KINDS && b->sweep_left) {
			b->sweep_kind = 0;
			b->sweep_left = false;
		}
		if (b->sweep_kind < SWEEP_KINDS) {
			b->slice_pause_ms = slice_pause(b, start, pages0);
			return true;
		}
	}
	b->sweep_kind = 0;
	b->sweep_left = false;
	b->next_sweep_ms = once_now_ms(b->o) + b->cfg.sweep_interval_ms;
	return false;
}

/*
 * One slice, of the purge (old checkpoints, more often than the sweep)
 * and of the sweep in turn, then a checkpoint: during the pause that
 * follows, the WAL is copied whole, and the next writer can start it over
 * instead of making it longer.  The pause is the maintainer's, which a
 * WAL grown long cuts short for a checkpoint.  True when work is left.
 */
static bool maintain(struct background *b)
{
	bool purge = !b->sweep_turn || !sweep_due(b);

	b->slice_pause_ms = SLICE_PAUSE_MS;
	if (purge)
		b->purge_left = purge_step(b);
	else
		b->sweep_going = sweep_step(b);
	b->sweep_turn = purge && sweep_due(b);
	store_checkpoint(b->o->store);
	return b->purge_left || b->sweep_going || b->sweep_turn;
}

/*
 * A slice of maintenance at its time; a checkpoint at once when the WAL
 * grew long, which neither brings the next slice forward nor puts it off.
 */
static void *maintainer(void *arg)
{
	struct background *b = arg;
	int64_t next_slice_ms = steady_ms() + MAINTAIN_INTERVAL_MS;

	store_mark_maintenance();
	while (pause_until(b, next_slice_ms, true)) {
		bool checkpoint;

		pthread_mutex_lock(&b->lock);
		checkpoint = b->checkpoint_due;
		b->checkpoint_due = false;
		pthread_mutex_unlock(&b->lock);
		if (steady_ms() < next_slice_ms) {
			if (checkpoint)
				store_checkpoint(b->o->store);
			continue;
		}
		next_slice_ms = steady_ms() + (maintain(b) ? b->slice_pause_ms
							    : MAINTAIN_INTERVAL_MS);
	}
	return NULL;
}

/* Wakes the readers of wait/K whose claims ended (see wait.h). */
static void *waker(void *arg)
{
	struct background *b = arg;

	while (wait_check(b->cfg.waits))
		;
	return NULL;
}

int background_start(struct once *o, const struct background_config *cfg,
		     struct background **out)
{
	struct background *b = calloc(1, sizeof(*b));
	pthread_condattr_t ca;
	int rc;

	*out = NULL;
	if (!b)
		return -ENOMEM;
	b->o = o;
	b->cfg = *cfg;
	for (int i = 0; i <= SWEEP_KINDS; i++)
		b->batch[i] = BATCH_MIN;
	b->self = (struct caller){ .pid = getpid(), .uid = getuid(),
				   .gid = getgid() };
	pthread_mutex_init(&b->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&b->cond, &ca);
	pthread_condattr_destroy(&ca);
	rc = pthread_create(&b->renewer, NULL, renewer, b);
	b->renewer_started = rc == 0;
	if (rc == 0) {
		rc = pthread_create(&b->maintainer, NULL, maintainer, b);
		b->maintainer_started = rc == 0;
	}
	if (rc == 0 && cfg->waits) {
		rc = pthread_create(&b->waker, NULL, waker, b);
		b->waker_started = rc == 0;
	}
	if (rc == 0)
		store_on_wal_growth(o->store, wal_grew, b);
	if (rc) {
		background_stop(b);
		return -rc;
	}
	*out = b;
	return 0;
}

void background_stop(struct background *b)
{
	if (!b)
		return;
	store_on_wal_growth(b->o->store, NULL, NULL);
	pthread_mutex_lock(&b->lock);
	b->stopping = true;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);
	if (b->renewer_started)
		pthread_join(b->renewer, NULL);
	if (b->maintainer_started)
		pthread_join(b->maintainer, NULL);
	if (b->waker_started) {
		waits_stop(b->cfg.waits);
		pthread_join(b->waker, NULL);
	}
	pthread_mutex_destroy(&b->lock);
	pthread_cond_destroy(&b->cond);
	free(b);
}
