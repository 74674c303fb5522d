/*
 * pin_table.h - a mount's pins of content versions, in memory (see
 * store.h for what a pin is).  Each backend keeps one: it counts the open
 * files that read each version, remembers whether the version's pin row
 * is in the store, and says what a renewal must write.  The rows
 * themselves are the backend's; this table never touches a store.
 *
 * Every function takes the table's own lock: none may be called with it
 * held.
 */
#ifndef ONCE_PIN_TABLE_H
#define ONCE_PIN_TABLE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A pin's lease in the store, renewed every PIN_RENEW_MS while held. */
#define PIN_TTL_MS (10 * 60 * 1000)
#define PIN_RENEW_MS (60 * 1000)
/* A pin no open file uses any more stays in the store this long. */
#define PIN_IDLE_MS (10 * 1000)
/* The most pin rows one renewal writes. */
#define PIN_DROP_BATCH 200

struct pin {
	int64_t content;
	uint32_t count;		/* open files reading it */
	bool in_store;		/* its row is in the store */
	int64_t idle_since_ms;	/* when a renewal first saw count 0 (0: not yet) */
};

struct pin_table {
	pthread_mutex_t lock;
	struct pin *pins;	/* sorted by content */
	size_t n, cap;
	int64_t renew_ms;	/* when the leases are renewed next */
};

/* What a renewal is to write: rows to drop, rows to (re)write. */
struct pin_work {
	int64_t ids[PIN_DROP_BATCH];
	bool drop[PIN_DROP_BATCH];
	size_t n;
	bool renew;		/* renew every lease of this mount too */
};

void pin_table_init(struct pin_table *t);
void pin_table_free(struct pin_table *t);
/* One more reader of a version already pinned: true; false when not. */
bool pin_table_ref(struct pin_table *t, int64_t content);
/* One more reader (a new pin when none); in_store: its row is written. */
int pin_table_add(struct pin_table *t, int64_t content, bool in_store);
void pin_table_unref(struct pin_table *t, int64_t content);
/*
 * What a renewal at now_ms is to write into *w; pins that never reached
 * the store and are idle go at once.  false when nothing is due.
 */
bool pin_table_due(struct pin_table *t, int64_t now_ms, struct pin_work *w);
/* After the renewal's commit: apply what it wrote. */
void pin_table_done(struct pin_table *t, const struct pin_work *w,
		    int64_t now_ms);

#endif
