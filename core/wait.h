/*
 * wait.h - waiters: blocked reads of wait/K until a claim ends.
 *
 * A waiter waits for one claim (a generation) to end.  It costs a small
 * struct and no thread: the mount parks the read that asked, and replies
 * when wait_check() finds the claim over:
 *
 *   terminal (succeeded, failed under dedup_on=any)   verdict 0
 *   free (abandoned, expired, released, adopted,
 *         failed under dedup_on=success)                -ENOENT
 *
 * A change made through this mount wakes its waiters at once
 * (wait_changed(), called by the core after the commit); another mount's
 * commits are seen by polling the store's change counter every
 * WAIT_POLL_MS, and a lease that runs out by its expiry time.
 */
#ifndef ONCE_WAIT_H
#define ONCE_WAIT_H

#include <stdbool.h>
#include <stdint.h>

#include "once.h"

#define WAIT_POLL_MS 100

struct waiter {
	int64_t generation;
	uint64_t id;			/* wait_park()'s, for wait_cancel() */
	struct waiter *prev, *next;	/* on its claim's list */
	struct waiter *id_next;		/* in the table by id */
	int verdict;			/* wait_check()'s, until woken */
};

/* Called once per waiter, from wait_check(), with no lock held. */
typedef void wait_wake_fn(void *arg, struct waiter *w, int verdict);

struct waits;

int waits_new(struct once *o, wait_wake_fn *wake, void *arg,
	      struct waits **out);
/* Wake every waiter left with -EINTR and free the list. */
void waits_free(struct waits *ws);

/* A fresh id for a waiter (set w->id before wait_park()). */
uint64_t wait_new_id(struct waits *ws);

/*
 * Park w until generation's claim ends; checked at the next wait_check().
 * -EINTR when wait_cancel(w->id) came first (an interrupt before the park).
 */
int wait_park(struct waits *ws, struct waiter *w, int64_t generation);
/*
 * Unpark the waiter of that id (its read was interrupted) and return it;
 * NULL when it is no longer parked (woken already).  By id, not pointer:
 * an interrupt may come in while the waiter is being woken and freed.
 */
struct waiter *wait_cancel(struct waits *ws, uint64_t id);

/* A claim of this mount changed (finalize, abandon, release, ...). */
void wait_changed(struct waits *ws, int64_t generation);

/*
 * Check the claims that changed, and every claim when another mount
 * committed or a lease may have run out; wake whom it concerns.  Blocks
 * up to WAIT_POLL_MS for a change first; false once waits_stop() ran.
 */
bool wait_check(struct waits *ws);
/* Make wait_check() return false from now on. */
void waits_stop(struct waits *ws);

/* Waiters parked now (for .stats). */
uint64_t waits_count(struct waits *ws);

#endif
