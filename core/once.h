/*
 * once.h - the core of oncefs: one context that the domain modules
 * (workflow.c, key.c, step.c) act on, with no FUSE in sight.
 *
 * Every action takes the context and the caller, and returns 0 or -errno:
 * the errno is decided here, once, and the FUSE adapter passes it on.
 */
#ifndef ONCE_ONCE_H
#define ONCE_ONCE_H

#include <stdint.h>
#include <sys/types.h>

#include "metrics.h"
#include "store.h"

#define ONCE_MAX_RESULT_DEFAULT (1024 * 1024)
#define ONCE_MAX_CHECKPOINT_DEFAULT ((int64_t)1024 * 1024 * 1024)

/* Who is asking: the process behind a request. */
struct caller {
	pid_t pid;
	uid_t uid;
	gid_t gid;
};

struct once_config {
	size_t max_result;		/* bytes of a key's result */
	int64_t max_checkpoint;		/* bytes of one checkpoint */
	const char *tmpdir;		/* private copies of checkpoints */
	int64_t lease_ms;		/* a held claim's lease (0: the default) */
	const char *host;		/* this host's name, for claims (NULL: none) */
};

/* How long a held claim's lease runs, renewed while its handle is open. */
#define ONCE_LEASE_MS_DEFAULT 10000

/* Counters of one mount, shown in .stats. */
struct once_stats {
	uint64_t claims;	/* keys claimed fresh */
	uint64_t adoptions;	/* expired claims taken over */
	uint64_t conflicts;	/* claims refused with EEXIST */
	uint64_t finalizes;
	uint64_t releases;
	uint64_t renewals;
	uint64_t fenced;	/* writes refused with ESTALE */
	uint64_t checkpoints;
};

struct once {
	struct store *store;
	struct once_config config;
	struct once_stats stats;	/* updated with __atomic builtins */
	struct once_latencies latencies;	/* metrics.h */
	struct waits *waits;		/* readers of wait/K, or NULL */
	/* The clock, in Unix milliseconds; replaceable for tests. */
	int64_t (*clock)(void *arg);
	void *clock_arg;
};

/* Set up a context over an open store; the store stays the caller's. */
void once_init(struct once *o, struct store *st, const struct once_config *cfg);

int64_t once_now_ms(const struct once *o);

/* Count an event in o->stats (thread-safe). */
void once_count(uint64_t *counter);

/* Stamp an event with the time and the caller (for a store operation). */
void once_stamp(struct event *ev, const struct caller *who, int64_t now_ms);

/*
 * Append an event to workflow wf's log, stamped with the time and the
 * caller.  Inside a write transaction.
 */
int once_event(struct once *o, int64_t wf, const struct caller *who,
	       struct event *ev);

/* A transaction's end: commit when rc is 0, else roll back; returns rc
 * or the commit's error. */
int once_end(struct once *o, int rc);

#endif
