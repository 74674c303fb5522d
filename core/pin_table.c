/*
 * pin_table.c - a mount's pins of content versions, in memory (see
 * pin_table.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pin_table.h"

void pin_table_init(struct pin_table *t)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
}

void pin_table_free(struct pin_table *t)
{
	free(t->pins);
	pthread_mutex_destroy(&t->lock);
}

/* Under t->lock: where content is, or would go. */
static size_t find(const struct pin_table *t, int64_t content, bool *found)
{
	size_t lo = 0, hi = t->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (t->pins[mid].content < content)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < t->n && t->pins[lo].content == content;
	return lo;
}

/* Under t->lock: one more reader of p. */
static void take(struct pin *p)
{
	p->count++;
	p->idle_since_ms = 0;
}

bool pin_table_ref(struct pin_table *t, int64_t content)
{
	bool found;
	size_t at;

	pthread_mutex_lock(&t->lock);
	at = find(t, content, &found);
	if (found)
		take(&t->pins[at]);
	pthread_mutex_unlock(&t->lock);
	return found;
}

int pin_table_add(struct pin_table *t, int64_t content, bool in_store)
{
	bool found;
	size_t at;
	int rc = 0;

	pthread_mutex_lock(&t->lock);
	at = find(t, content, &found);
	if (found) {
		take(&t->pins[at]);
		t->pins[at].in_store |= in_store;
		goto out;
	}
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		struct pin *p = realloc(t->pins, cap * sizeof(*p));

		if (!p) {
			rc = -ENOMEM;
			goto out;
		}
		t->pins = p;
		t->cap = cap;
	}
	memmove(&t->pins[at + 1], &t->pins[at], (t->n - at) * sizeof(*t->pins));
	t->pins[at] = (struct pin){ .content = content, .count = 1,
				    .in_store = in_store };
	t->n++;
out:
	pthread_mutex_unlock(&t->lock);
	return rc;
}

void pin_table_unref(struct pin_table *t, int64_t content)
{
	bool found;
	size_t at;

	pthread_mutex_lock(&t->lock);
	at = find(t, content, &found);
	if (found && t->pins[at].count > 0)
		t->pins[at].count--;
	pthread_mutex_unlock(&t->lock);
}

/* Has no file used this pin for PIN_IDLE_MS? */
static bool idle(const struct pin *p, int64_t now_ms)
{
	return p->count == 0 && p->idle_since_ms &&
	       p->idle_since_ms <= now_ms - PIN_IDLE_MS;
}

bool pin_table_due(struct pin_table *t, int64_t now_ms, struct pin_work *w)
{
	size_t kept = 0;

	w->n = 0;
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n; i++) {
		struct pin *p = &t->pins[i];

		/* Idle from the first renewal that sees it unused. */
		if (p->count == 0 && p->idle_since_ms == 0)
			p->idle_since_ms = now_ms;
		if (w->n < PIN_DROP_BATCH && p->in_store && idle(p, now_ms)) {
			w->ids[w->n] = p->content;
			w->drop[w->n++] = true;
		} else if (w->n < PIN_DROP_BATCH && p->count > 0 && !p->in_store) {
			w->ids[w->n] = p->content;
			w->drop[w->n++] = false;
		}
	}
	w->renew = t->n > 0 && now_ms >= t->renew_ms;
	/* Pins that never reached the store and are idle need no write. */
	for (size_t i = 0; i < t->n; i++)
		if (t->pins[i].in_store || !idle(&t->pins[i], now_ms))
			t->pins[kept++] = t->pins[i];
	t->n = kept;
	pthread_mutex_unlock(&t->lock);
	return w->n > 0 || w->renew;
}

void pin_table_done(struct pin_table *t, const struct pin_work *w,
		    int64_t now_ms)
{
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < w->n; i++) {
		bool found;
		size_t at = find(t, w->ids[i], &found);

		if (!found)
			continue;
		if (!w->drop[i]) {
			t->pins[at].in_store = true;
		} else if (t->pins[at].count == 0) {
			memmove(&t->pins[at], &t->pins[at + 1],
				(t->n - at - 1) * sizeof(*t->pins));
			t->n--;
		} else {
			/* Opened again meanwhile: its row goes back next time. */
			t->pins[at].in_store = false;
		}
	}
	if (w->renew)
		t->renew_ms = now_ms + PIN_RENEW_MS;
	pthread_mutex_unlock(&t->lock);
}
