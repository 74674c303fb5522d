/*
 * sweep.h - removing what time has made obsolete.
 *
 *   claims whose lease ran out      -> vacant (event "expire"); the
 *                                      attempt count stays
 *   terminal and vacant keys older  -> deleted (event "retire"): a
 *   than the workflow's retention      re-delivery after that runs again
 *   checkpoints of old fingerprints -> purged
 *   events older than retention     -> dropped from the log's beginning
 *
 * Work is done in batches of opt->batch rows, each its own transaction,
 * so that a claim waits for one batch at most.  The daemon runs a sweep
 * every -o sweep_interval seconds; `oncectl sweep` runs one by hand.
 */
#ifndef ONCE_SWEEP_H
#define ONCE_SWEEP_H

#include <stdbool.h>

#include "once.h"

struct sweep_report;

struct sweep_options {
	bool dry_run;		/* count, change nothing */
	int batch;		/* rows a transaction */
	int max_batches;	/* 0: until done */
	/* After each batch, when not NULL: what was done so far. */
	void (*progress)(void *arg, const struct sweep_report *so_far);
	void *progress_arg;
};

struct sweep_report {
	int64_t expired;	/* claims whose lease ran out */
	int64_t retired;	/* keys past retention */
	int64_t checkpoints;	/* checkpoints of old fingerprints */
	int64_t events;		/* event lines past retention */
	bool more;		/* stopped at max_batches with work left */
};

int sweep_run(struct once *o, const struct sweep_options *opt,
	      const struct caller *who, struct sweep_report *r);

/* The kinds of rows a sweep removes, in the order a batch takes them. */
enum sweep_kind {
	SWEEP_EXPIRED,
	SWEEP_RETIRED,
	SWEEP_CHECKPOINTS,
	SWEEP_EVENTS,
	SWEEP_KINDS
};

/*
 * One transaction of up to batch rows of one kind (the daemon's slices:
 * a claim waits for one kind's batch at most); *more when rows of that
 * kind are left.
 */
int sweep_slice(struct once *o, enum sweep_kind kind, int batch,
		const struct caller *who, struct sweep_report *r, bool *more);

#endif
