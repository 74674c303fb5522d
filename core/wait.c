/*
 * wait.c - waiters (see wait.h).
 *
 * The waiters of one claim hang on a list in a small hash table by
 * generation; an entry remembers the claim's lease end from its last
 * check, so that a lease running out is noticed without a store read for
 * every claim at every poll.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "key.h"
#include "wait.h"

#define BUCKETS 1024
#define EARLY 64

struct claim {
	int64_t generation;
	int64_t expires_ms;	/* at the last check; 0: not checked yet */
	bool dirty;		/* changed since the last check */
	struct waiter *head;
	struct claim *next;	/* in its bucket */
};

struct waits {
	struct once *o;
	wait_wake_fn *wake;
	void *arg;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stopping;
	bool any_dirty;
	uint64_t parked;
	uint64_t next_id;
	uint64_t early[EARLY];	/* ids cancelled before they were parked */
	size_t early_at;
	int64_t data_version;	/* the store's change counter, last seen */
	struct claim *buckets[BUCKETS];
	struct waiter *by_id[BUCKETS];
};

static struct claim **bucket(struct waits *ws, int64_t generation)
{
	return &ws->buckets[(uint64_t)generation % BUCKETS];
}

static struct claim *find(struct waits *ws, int64_t generation)
{
	for (struct claim *c = *bucket(ws, generation); c; c = c->next)
		if (c->generation == generation)
			return c;
	return NULL;
}

/* Take w off the table by id. */
static void unlist(struct waits *ws, struct waiter *w)
{
	struct waiter **pp = &ws->by_id[w->id % BUCKETS];

	while (*pp && *pp != w)
		pp = &(*pp)->id_next;
	if (*pp)
		*pp = w->id_next;
}

static void drop(struct waits *ws, struct claim *c)
{
	struct claim **pp = bucket(ws, c->generation);

	while (*pp != c)
		pp = &(*pp)->next;
	*pp = c->next;
	free(c);
}

int waits_new(struct once *o, wait_wake_fn *wake, void *arg,
	      struct waits **out)
{
	struct waits *ws = calloc(1, sizeof(*ws));
	pthread_condattr_t ca;

	*out = NULL;
	if (!ws)
		return -ENOMEM;
	ws->o = o;
	ws->wake = wake;
	ws->arg = arg;
	ws->data_version = -1;
	pthread_mutex_init(&ws->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ws->cond, &ca);
	pthread_condattr_destroy(&ca);
	*out = ws;
	return 0;
}

void waits_free(struct waits *ws)
{
	if (!ws)
		return;
	for (size_t i = 0; i < BUCKETS; i++) {
		while (ws->buckets[i]) {
			struct claim *c = ws->buckets[i];

			while (c->head) {
				struct waiter *w = c->head;

				c->head = w->next;
				ws->wake(ws->arg, w, -EINTR);
			}
			ws->buckets[i] = c->next;
			free(c);
		}
	}
	pthread_mutex_destroy(&ws->lock);
	pthread_cond_destroy(&ws->cond);
	free(ws);
}

uint64_t wait_new_id(struct waits *ws)
{
	return __atomic_add_fetch(&ws->next_id, 1, __ATOMIC_RELAXED);
}

int wait_park(struct waits *ws, struct waiter *w, int64_t generation)
{
	struct claim *c;

	pthread_mutex_lock(&ws->lock);
	for (size_t i = 0; i < EARLY; i++) {
		if (ws->early[i] == w->id) {
			ws->early[i] = 0;
			pthread_mutex_unlock(&ws->lock);
			return -EINTR;
		}
	}
	c = find(ws, generation);
	if (!c) {
		c = calloc(1, sizeof(*c));
		if (!c) {
			pthread_mutex_unlock(&ws->lock);
			return -ENOMEM;
		}
		c->generation = generation;
		c->next = *bucket(ws, generation);
		*bucket(ws, generation) = c;
	}
	w->generation = generation;
	w->id_next = ws->by_id[w->id % BUCKETS];
	ws->by_id[w->id % BUCKETS] = w;
	w->prev = NULL;
	w->next = c->head;
	if (c->head)
		c->head->prev = w;
	c->head = w;
	ws->parked++;
	/* The claim may have ended before the park: check it once. */
	c->dirty = true;
	ws->any_dirty = true;
	pthread_cond_signal(&ws->cond);
	pthread_mutex_unlock(&ws->lock);
	return 0;
}

struct waiter *wait_cancel(struct waits *ws, uint64_t id)
{
	struct waiter *w;

	pthread_mutex_lock(&ws->lock);
	for (w = ws->by_id[id % BUCKETS]; w && w->id != id; w = w->id_next)
		;
	if (w) {
		struct claim *c = find(ws, w->generation);

		unlist(ws, w);
		if (w->prev)
			w->prev->next = w->next;
		else if (c)
			c->head = w->next;
		if (w->next)
			w->next->prev = w->prev;
		ws->parked--;
		if (c && !c->head)
			drop(ws, c);
	} else {
		/* Not parked yet, or woken: wait_park() refuses it. */
		ws->early[ws->early_at++ % EARLY] = id;
	}
	pthread_mutex_unlock(&ws->lock);
	return w;
}

void wait_changed(struct waits *ws, int64_t generation)
{
	struct claim *c;

	if (!ws)
		return;
	pthread_mutex_lock(&ws->lock);
	c = find(ws, generation);
	if (c) {
		c->dirty = true;
		ws->any_dirty = true;
		pthread_cond_signal(&ws->cond);
	}
	pthread_mutex_unlock(&ws->lock);
}

void waits_stop(struct waits *ws)
{
	pthread_mutex_lock(&ws->lock);
	ws->stopping = true;
	pthread_cond_broadcast(&ws->cond);
	pthread_mutex_unlock(&ws->lock);
}

uint64_t waits_count(struct waits *ws)
{
	uint64_t n;

	pthread_mutex_lock(&ws->lock);
	n = ws->parked;
	pthread_mutex_unlock(&ws->lock);
	return n;
}

/* The claims to read now: the dirty ones, or all of them. */
static size_t pick(struct waits *ws, bool all, int64_t now_ms,
		   int64_t **gens, size_t *cap)
{
	size_t n = 0;

	for (size_t i = 0; i < BUCKETS; i++) {
		for (struct claim *c = ws->buckets[i]; c; c = c->next) {
			if (!all && !c->dirty && c->expires_ms > now_ms)
				continue;
			if (n == *cap) {
				size_t ncap = *cap ? *cap * 2 : 64;
				int64_t *p = realloc(*gens, ncap * sizeof(**gens));

				if (!p)
					return n;	/* the rest at the next check */
				*gens = p;
				*cap = ncap;
			}
			c->dirty = false;
			(*gens)[n++] = c->generation;
		}
	}
	return n;
}

/*
 * Read the claims, in one transaction: verdicts[i] is 1 while the claim
 * is still in flight (expires[i] its lease end), else its waiters' verdict.
 */
static int read_claims(struct once *o, const int64_t *gens, size_t n,
		       int *verdicts, int64_t *expires)
{
	int64_t now = once_now_ms(o);
	int rc = store_begin(o->store, false);

	if (rc)
		return rc;
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct key_row k;
		int got = store_key_by_generation(o->store, gens[i], &k);

		if (got == 0 && k.status == KEY_IN_FLIGHT && key_is_live(&k, now)) {
			verdicts[i] = 1;
			expires[i] = k.expires_ms;
		} else if (got == 0 && key_is_live(&k, now)) {
			verdicts[i] = 0;	/* terminal */
		} else if (got == 0 || got == -ENOENT) {
			verdicts[i] = -ENOENT;	/* free */
		} else {
			verdicts[i] = got;	/* a row the store refuses */
		}
	}
	return once_end(o, rc);
}

bool wait_check(struct waits *ws)
{
	struct timespec until;
	int64_t *gens = NULL, *expires = NULL, now;
	struct waiter *woken = NULL;
	int *verdicts = NULL;
	size_t n, cap = 0;
	bool all, go_on;
	int rc;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_nsec += WAIT_POLL_MS * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&ws->lock);
	if (!ws->stopping && !ws->any_dirty)
		pthread_cond_timedwait(&ws->cond, &ws->lock, &until);
	if (ws->stopping || ws->parked == 0) {
		ws->any_dirty = false;
		go_on = !ws->stopping;
		pthread_mutex_unlock(&ws->lock);
		return go_on;
	}
	pthread_mutex_unlock(&ws->lock);

	/* Another mount committed: any claim may have ended. */
	all = store_changed(ws->o->store, &ws->data_version) > 0;
	now = once_now_ms(ws->o);
	pthread_mutex_lock(&ws->lock);
	ws->any_dirty = false;
	n = pick(ws, all, now, &gens, &cap);
	pthread_mutex_unlock(&ws->lock);
	if (n == 0)
		goto out;
	verdicts = malloc(n * sizeof(*verdicts));
	expires = malloc(n * sizeof(*expires));
	rc = verdicts && expires ? read_claims(ws->o, gens, n, verdicts, expires)
				 : -ENOMEM;
	pthread_mutex_lock(&ws->lock);
	for (size_t i = 0; i < n; i++) {
		struct claim *c = find(ws, gens[i]);

		if (!c)
			continue;	/* its waiters were interrupted */
		if (rc) {
			c->dirty = true;	/* the store failed: again later */
			continue;
		}
		if (verdicts[i] == 1) {
			c->expires_ms = expires[i];
			continue;
		}
		/* Over: its waiters go, with the claim's verdict. */
		while (c->head) {
			struct waiter *w = c->head;

			c->head = w->next;
			unlist(ws, w);
			w->verdict = verdicts[i];
			w->next = woken;
			woken = w;
			ws->parked--;
		}
		drop(ws, c);
	}
	pthread_mutex_unlock(&ws->lock);
	while (woken) {
		struct waiter *w = woken;

		woken = w->next;
		ws->wake(ws->arg, w, w->verdict);
	}
out:
	free(gens);
	free(verdicts);
	free(expires);
	pthread_mutex_lock(&ws->lock);
	go_on = !ws->stopping;
	pthread_mutex_unlock(&ws->lock);
	return go_on;
}
