/*
 * once.c - the core context: clock, counters, events, transaction ends.
 */
#include <time.h>

#include "once.h"

/* The store's clock (the tests put a fake one in its place). */
static int64_t store_clock(void *arg)
{
	struct timespec ts;

	if (arg)
		return store_now_ms(arg);
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void once_init(struct once *o, struct store *st, const struct once_config *cfg)
{
	*o = (struct once){
		.store = st,
		.config = *cfg,
		.clock = store_clock,
		.clock_arg = st,
	};
}

int64_t once_now_ms(const struct once *o)
{
	return o->clock(o->clock_arg);
}

void once_count(uint64_t *counter)
{
	__atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

void once_stamp(struct event *ev, const struct caller *who, int64_t now_ms)
{
	ev->time_ms = now_ms;
	ev->pid = who->pid;
	ev->uid = who->uid;
}

int once_event(struct once *o, int64_t wf, const struct caller *who,
	       struct event *ev)
{
	once_stamp(ev, who, once_now_ms(o));
	return store_event_append(o->store, wf, ev);
}

int once_end(struct once *o, int rc)
{
	if (rc)
		store_rollback(o->store);
	else
		rc = store_commit(o->store);
	return rc;
}
