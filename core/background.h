/*
 * background.h - the work a mount does on its own, in three threads.
 *
 *   renewer     every RENEW_INTERVAL_MS: renews the leases of the claims
 *               whose files are open (the mount says which), and this
 *               mount's pins of content versions.  Nothing else runs in
 *               it, so a renewal waits at most for one transaction of
 *               someone else's, never for maintenance to finish.
 *   maintainer  the purge (old checkpoints, dead content versions) and
 *               the sweep (expired claims, keys and events past
 *               retention), in transactions of bounded work, a slice at a
 *               time, paused between slices while work is left.
 *   waker       wakes the readers of wait/K whose claims ended (wait.h);
 *               only reads.
 *
 * None writes anything when nothing is due.
 */
#ifndef ONCE_BACKGROUND_H
#define ONCE_BACKGROUND_H

#include <stddef.h>
#include <stdint.h>

#include "once.h"

struct background;

/*
 * The generations of the claims to renew now, into *gens (grown with
 * realloc, *cap its size); returns their number.
 */
typedef size_t background_claims_fn(void *arg, int64_t **gens, size_t *cap);

struct background_config {
	int64_t sweep_interval_ms;	/* 0: no sweep */
	background_claims_fn *claims;
	void *arg;
	struct waits *waits;		/* NULL: no waker */
};

int background_start(struct once *o, const struct background_config *cfg,
		     struct background **out);
/* Stop the threads and wait for them; b is freed. */
void background_stop(struct background *b);

#endif
