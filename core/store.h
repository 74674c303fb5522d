/*
 * store.h - the persistent state of oncefs, behind one interface.
 *
 * The store keeps rows (workflows, keys, checkpoints, events) and one
 * store-wide generation sequence.  Two kinds of calls: operations, the
 * common steps of a key's life (claim, finalize, abandon, renew, lookup),
 * each one atomic action that a database server does in one round trip;
 * and row functions, which the rules of workflow.c, key.c and step.c
 * call between store_begin() and store_commit() for everything else.
 *
 * Every function returns 0 or -errno: -ENOENT for a missing row, -EIO for
 * a backend error or a row whose values are out of range (logged; see
 * store_problem()), -ENOSPC when the disk is full, -EROFS once an fsync
 * has failed (every later write is refused), -EAGAIN when
 * another process held the store's write lock past the busy timeout
 * (-EBUSY is taken: it is the raise policy's answer).
 *
 * Transactions: store_begin() takes the store's lock and opens a
 * transaction; store_commit() or store_rollback() ends it and drops the
 * lock.  No row function may be called outside a transaction.  A write
 * transaction is durable when store_commit() returns, as far as the
 * store's sync level promises.
 *
 * Behind this header, a table of backends (store_backend.h): store.c
 * picks one by the store's name (store_scheme) and forwards each call to
 * it: SQLite (store_sqlite*.c), the embedded default, and PostgreSQL
 * (store_pg*.c), for mounts on many hosts that share one store.
 *
 * Time is the store's: every lease, expiry and retention decision takes
 * its now from store_now_ms(), the host's clock on SQLite, the
 * database's on PostgreSQL, so that mounts on hosts whose clocks differ
 * agree.
 */
#ifndef ONCE_STORE_H
#define ONCE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fingerprint.h"
#include "name.h"
#include "policy.h"
#include "status.h"

#define STORE_SCHEMA_VERSION 4

enum store_sync {
	STORE_SYNC_FULL,	/* durable across power loss (the default) */
	STORE_SYNC_NORMAL,	/* durable across a crash of the process */
	STORE_SYNC_OFF,		/* the OS decides */
};

struct store_options {
	bool create;		/* create a missing store */
	bool read_only;		/* inspection: never write */
	enum store_sync sync;
	int busy_timeout_ms;
	int connections;	/* a server's: at most this many (0: default) */
	const char *pg_schema;	/* PostgreSQL: the store's schema (NULL:
				 * oncefs) */
};

struct store_stats {
	uint64_t commits;	/* write transactions committed */
	uint64_t syncs;		/* fsyncs that made them durable (group commit:
				 * one may serve several commits) */
	bool sync_failed;	/* an fsync failed: the store refuses writes */
	uint64_t round_trips;	/* requests sent to a database server (0 on
				 * an embedded store) */
	uint64_t pages_written;	/* database pages the commits wrote (SQLite:
				 * to its WAL; 0 on a server, whose pages
				 * are its own) */
	uint64_t max_write_us;	/* the longest a write transaction held the
				 * store's lock (what a claim may wait) */
	uint64_t max_maintenance_us;	/* the same, of the transactions of
					 * threads store_mark_maintenance()
					 * marked: sweep, purge, trim */
};

struct wf_row {
	int64_t id;
	char name[NAME_MAX_LEN + 1];
	size_t name_len;
	uint32_t uid, gid, mode;
	int64_t ctime_ns, mtime_ns;
	struct policy policy;
	char fingerprint[FINGERPRINT_MAX + 1];
	size_t fingerprint_len;	/* 0: unset */
	int64_t epoch;		/* checkpoints of the current fingerprint */
	int64_t events_size;	/* bytes of the events file (after sweeps) */
};

/* The longest host name a key keeps of its claimant (HOST_NAME_MAX). */
#define STORE_HOST_MAX 64

struct key_row {
	int64_t id;
	int64_t wf;
	char name[NAME_MAX_LEN + 1];
	size_t name_len;
	enum key_status status;
	int64_t generation;
	int64_t attempt;
	int64_t expires_ms;	/* lease end, Unix milliseconds */
	int64_t mtime_ns;
	int32_t holder_pid;
	uint32_t holder_uid;
	char holder_host[STORE_HOST_MAX + 1];	/* the claimant's host, or "" */
	int64_t result_len;
	int64_t content;	/* the result's content version (0: none) */
	int64_t previous;	/* the generation this claim took over (0: none) */
};

/*
 * What a claimant may note with its claim (store_key_set_note), each
 * cleared by the next claim: a fingerprint of its request, and the name
 * its key had before it was mapped to a valid one.
 */
enum key_note {
	KEY_NOTE_REQUEST,
	KEY_NOTE_ORIGINAL,
};
#define KEY_REQUEST_MAX FINGERPRINT_MAX
#define KEY_ORIGINAL_MAX 1024

struct step_row {
	int64_t id;
	int64_t wf;
	int64_t epoch;
	char name[NAME_MAX_LEN + 1];
	size_t name_len;
	int64_t size;
	int64_t mtime_ns;
	int64_t content;	/* its content version (0: empty) */
	int64_t atime_ns;	/* as last set (utimensat); 0: mtime_ns */
};

/* What happened, for the events file; the store renders it as JSON. */
struct event {
	const char *type;	/* "claim", "finalize", ... */
	const char *subject;	/* "key", "step", "policy", or NULL */
	const char *name;	/* the subject's name */
	size_t name_len;
	int64_t generation;	/* 0: none */
	const char *detail_field; /* e.g. "status", "value"; NULL: none */
	const char *detail;
	size_t detail_len;
	int64_t number_field_value;
	const char *number_field; /* e.g. "attempt", "previous"; NULL: none */
	const char *text_field;	/* e.g. "result": bytes, at most EVENT_TEXT_MAX */
	const char *text;
	size_t text_len;
	int64_t time_ms;
	int32_t pid;
	uint32_t uid;
};

struct store;

enum store_scheme {
	STORE_SCHEME_SQLITE,	/* a file path: anything that is no URL below */
	STORE_SCHEME_POSTGRES,	/* postgresql://... or postgres://... */
};

/* Which backend a store's name is for: the one parser of store names. */
enum store_scheme store_scheme(const char *name);

/*
 * Open (and with opt->create, create) the store at path.  A file that is
 * not an oncefs store, is corrupt, or has a newer schema is refused
 * without being written to.  On error returns -errno and writes a
 * message for the user into err.
 */
int store_open(const char *path, const struct store_options *opt,
	       struct store **out, char *err, size_t errlen);
void store_close(struct store *st);
/* The store's clock, in Unix milliseconds. */
int64_t store_now_ms(struct store *st);
/*
 * Has another connection (another mount, oncectl) committed since *seen?
 * 1 when it has (and *seen moves on), 0 when not, or -errno.  Cheap: no
 * transaction.
 */
int store_changed(struct store *st, int64_t *seen);
void store_get_stats(struct store *st, struct store_stats *out);
/*
 * The calling thread's write transactions count as maintenance: they
 * commit without waiting for a sync of their own (a later durable commit
 * covers them; a crash only makes them be done again), and no other
 * commit's sync waits for them.
 */
void store_mark_maintenance(void);
/*
 * How long the calling thread's last write transaction held the store's
 * write lock, in microseconds: what a claim may have waited behind it
 * (its sync after the commit not counted).
 */
int64_t store_last_hold_us(void);
/*
 * Does a transaction of this mount wait for the one the calling thread
 * has under way?  Background work asks it between rows, and commits
 * early when the answer is yes: a claim never waits behind a whole
 * slice.  Cheap: no store access.
 */
bool store_contended(struct store *st);
/*
 * The last row refused for a value out of range (nothing read from a
 * store is trusted), as a message into buf; "" when none.  Returns buf.
 */
const char *store_problem(struct store *st, char *buf, size_t size);

/*
 * Copy what the write-ahead log holds into the database, without holding
 * the store's lock or waiting for anyone (the background does it; a
 * commit never does).  Outside any transaction, from one thread.
 */
int store_checkpoint(struct store *st);
/*
 * Call fn(arg) when a commit leaves the write-ahead log long enough to
 * want a checkpoint now (from inside the commit: fn must only wake).
 */
void store_on_wal_growth(struct store *st, void (*fn)(void *arg), void *arg);

/*
 * Operations: the common steps of a key's life (key.h), each one atomic
 * action, called outside a transaction and committed (durable as the
 * sync level promises) before it returns.  On a database server each is
 * one round trip: one statement, or one pipelined flight that commits;
 * on SQLite, one transaction of the row functions below (store_verbs.c).
 * The state machine is key.h's; what each operation does to it is stated
 * here, so that both backends do exactly this.  The events an operation
 * appends come rendered from the caller (events with EVENT_LATER get the
 * numbers only the store knows, event.h), stamped with now_ms and the
 * caller's pid and uid.  now_ms is the store's clock (store_now_ms).
 */

/*
 * The rules of liveness, which every backend's operations apply: is k
 * live (terminal, or in flight with its lease not ended by now_ms: a
 * claim of it would fail)?  Is it current for its generation (0), or is
 * the generation dead for it (-ESTALE: vacant, or in flight with its
 * lease ended, whether or not a sweep has run)?
 */
bool store_key_live(const struct key_row *k, int64_t now_ms);
/*
 * Is s (len bytes) a host name a key may keep: up to STORE_HOST_MAX
 * letters, digits, '.', '-' or '_'?  (A row read back is checked too.)
 */
bool store_host_ok(const char *s, size_t len);
int store_key_current(const struct key_row *k, int64_t now_ms);
/*
 * Inside a transaction: the key of a generation that is current, or
 * -ESTALE.
 */
int store_generation_get(struct store *st, int64_t generation, int64_t now_ms,
			 struct key_row *out);

/* A workflow by name, or by id when name is NULL: -ENOENT when none. */
int store_lookup_workflow(struct store *st, int64_t id, const char *name,
			  size_t len, struct wf_row *w);
/*
 * A workflow, and its key of that name: -ENOENT when either is missing
 * (w->id is 0 when the workflow is).  Liveness is the caller's to judge.
 */
int store_lookup_key(struct store *st, int64_t wf, const char *name,
		     size_t len, struct wf_row *w, struct key_row *k);
/*
 * The key of a generation, and its workflow when w is not NULL: -ENOENT
 * when no key has it.
 */
int store_lookup_generation(struct store *st, int64_t generation,
			    struct key_row *k, struct wf_row *w);

struct store_claim {
	int64_t wf;
	const char *name;
	size_t len;
	int64_t now_ms;
	int64_t lease_ms;	/* cut to the workflow's in_flight_ttl */
	int32_t pid;
	uint32_t uid;
	const char *host;	/* the claimant's host name (NULL: none) */
	/*
	 * The events, the generation and the number EVENT_LATER: "claim"
	 * (number: the attempt), or over a claim in flight, "expire" (the
	 * old generation) then "adopt" (number: the generation taken over).
	 */
	const struct event *claim, *expire, *adopt;
};
/*
 * Claim c->name of workflow c->wf when it is absent, vacant, or in flight
 * with its lease ended by now_ms: it becomes in flight under the next
 * generation of the sequence, attempt one more than before (1 for a new
 * key), previous the generation it had (0: none), leased to now_ms + the
 * lesser of lease_ms and in_flight_ttl, held by pid, uid and host (one
 * that store_host_ok() refuses is kept as ""), with no
 * result and no notes.  *adopted says whether the claim it replaced was
 * in flight.  -EEXIST when the key is live (*k: its row); -ENOENT when
 * there is no such workflow.  *w gets the workflow (as before the claim).
 */
int store_claim(struct store *st, const struct store_claim *c,
		struct key_row *k, struct wf_row *w, bool *adopted);

/*
 * The end of a claim through its generation.  -ESTALE when the
 * generation is not the key's, or the key is vacant, or in flight with
 * its lease ended by now_ms; -EPERM when the key is terminal.
 */
struct store_finalize {
	int64_t generation;
	int64_t now_ms;
	enum key_status status;	/* KEY_SUCCEEDED or KEY_FAILED */
	const char *result;	/* its bytes (at most the mount's max_result) */
	size_t result_len;
	const struct event *ev;	/* "finalize", stamped */
};
/*
 * Finalize: the key takes the status and the result (a new content
 * version; the old one dies), mtime now_ms; but a failure under
 * dedup_on=success leaves it vacant with no result.  *k: the row before.
 */
int store_finalize(struct store *st, const struct store_finalize *f,
		   struct key_row *k);
/*
 * Abandon: the claim of generation, in flight, becomes vacant (mtime
 * now_ms) and ev ("abandon") is logged; -ESTALE as above, and when the
 * key is terminal.  *k: the row before.
 */
int store_abandon(struct store *st, int64_t generation, int64_t now_ms,
		  const struct event *ev, struct key_row *k);
/*
 * Renew the leases of the keys of these generations that are in flight
 * with a lease not ended by now_ms and less than two thirds of
 * (the lesser of lease_ms and their workflow's in_flight_ttl) left, to
 * now_ms + that lease; *renewed gets their number.  No event.
 */
int store_renew(struct store *st, const int64_t *generations, size_t n,
		int64_t now_ms, int64_t lease_ms, uint64_t *renewed);

/*
 * A checkpoint's commit: its content, staged (store_content_stage, and
 * pinned by the caller), swapped in.
 */
struct store_step_commit {
	int64_t wf, epoch;	/* the writer's workflow, and its epoch */
	int64_t step;		/* the step's id; 0: none yet */
	const char *name;	/* its name (the writer's) */
	size_t len;
	int64_t content, size;	/* the staged version (0, 0: empty) */
	int64_t now_ms;
	const struct event *ev;	/* "checkpoint", stamped; the store names
				 * the step as its row does */
};
/*
 * Commit a checkpoint: step c->step, or with none, the step of that
 * name in epoch c->epoch, created when missing, takes the content (the
 * old one dies) and the size, mtime now_ms, and ev is logged.  *r gets
 * the row after.  When the workflow or the step went while the writer
 * was open, nothing is done and 0 returned with r->id 0 (as a write to
 * an unlinked file); -ESTALE when the workflow's epoch is no longer
 * c->epoch (its fingerprint changed).
 */
int store_step_commit(struct store *st, const struct store_step_commit *c,
		      struct step_row *r);

int store_begin(struct store *st, bool write);
int store_commit(struct store *st);
void store_rollback(struct store *st);

/* The next value of the store-wide generation sequence (never reused). */
int store_next_generation(struct store *st, int64_t *out);

/* Workflows. */
int store_wf_by_name(struct store *st, const char *name, size_t len,
		     struct wf_row *out);
int store_wf_by_id(struct store *st, int64_t id, struct wf_row *out);
/* Fills in row->id.  -EEXIST when the name is taken. */
int store_wf_insert(struct store *st, struct wf_row *row);
/*
 * Writes every mutable field of the row with row->id, but events_size,
 * which only store_event_append() changes.
 */
int store_wf_update(struct store *st, const struct wf_row *row);
/* Deletes the workflow with its keys, checkpoints and events. */
int store_wf_delete(struct store *st, int64_t id);
/* Up to max workflows with id > after, by id.  *n gets the count. */
int store_wf_list(struct store *st, int64_t after, struct wf_row *rows,
		  int max, int *n);

/* Keys. */
int store_key_get(struct store *st, int64_t wf, const char *name,
		  size_t len, struct key_row *out);
int store_key_by_generation(struct store *st, int64_t generation,
			    struct key_row *out);
/*
 * The result bytes of k (k->result_len of them, at most the mount's
 * max_result); *buf is malloc'd, the caller frees it.  Outside a
 * transaction; for a one-shot read (oncectl): open files use
 * store_content_read() on a pinned version instead.
 */
int store_key_result(struct store *st, const struct key_row *k, char **buf,
		     size_t *len);
/* Fills in row->id. */
int store_key_insert(struct store *st, struct key_row *row);
/* Writes every field but the result. */
int store_key_update(struct store *st, const struct key_row *row);
/* A new result version for k (len 0: none); the old one dies. */
int store_key_set_result(struct store *st, struct key_row *k, const char *buf,
			 size_t len);
int store_key_delete(struct store *st, int64_t id);
/*
 * A note of key id into buf (room for its maximum); -ENODATA when it has
 * none.  Setting len 0 removes it; -E2BIG past its maximum.
 */
int store_key_note(struct store *st, int64_t id, enum key_note which,
		   char *buf, size_t *len);
int store_key_set_note(struct store *st, int64_t id, enum key_note which,
		       const char *buf, size_t len);
int store_key_clear_notes(struct store *st, int64_t id);
/* Keys with id > after, by id, that are terminal or leased past now_ms. */
int store_key_list(struct store *st, int64_t wf, int64_t after,
		   int64_t now_ms, struct key_row *rows, int max, int *n);
/* Does the workflow hold a live key (as store_key_list lists them)? */
int store_key_any(struct store *st, int64_t wf, int64_t now_ms, bool *any);

/* Checkpoints: rows of (workflow, epoch, name) with their content. */
int store_step_get(struct store *st, int64_t wf, int64_t epoch,
		   const char *name, size_t len, struct step_row *out);
int store_step_by_id(struct store *st, int64_t id, struct step_row *out);
/* Does the epoch hold a checkpoint?  Constant time. */
int store_step_any(struct store *st, int64_t wf, int64_t epoch, bool *any);
/* Checkpoints of an epoch with id > after, by id. */
int store_step_list(struct store *st, int64_t wf, int64_t epoch,
		    int64_t after, struct step_row *rows, int max, int *n);
/* An empty checkpoint; fills in row->id.  -EEXIST when the name is taken. */
int store_step_insert(struct store *st, struct step_row *row);
/* Name and mtime of row->id (content untouched). -EEXIST on a name clash. */
int store_step_update(struct store *st, const struct step_row *row);
/* Deletes the checkpoint; its content version dies. */
int store_step_delete(struct store *st, int64_t id);
/*
 * Make content (staged by store_content_stage, or 0 for empty) the
 * checkpoint's, of size bytes; the old version dies.  Updates *r.
 */
int store_step_set_content(struct store *st, struct step_row *r,
			   int64_t content, int64_t size, int64_t mtime_ns);

/*
 * Content versions.  A checkpoint's content and a key's result are
 * immutable versions, each named by an id (0: empty): new content is a
 * new version, and the version a row no longer names is dead.  The purge
 * deletes dead versions that no mount pins.
 *
 * An open file pins the version it reads, so that it reads one version
 * from open to close whatever happens to the row, by this mount or any
 * other.  A pin costs a small entry in memory and, the first time this
 * mount pins a version, one row in the store; never a connection, an fd
 * or a snapshot that lives with the file.  Pins are leased, and renewed by
 * the mount while it lives, so that a crashed mount's pins lapse.
 */
/*
 * Pin content for an open file; -ENOENT when the version is gone (the
 * row changed after it was read: read it again).  Outside a transaction.
 */
int store_pin(struct store *st, int64_t content, int64_t now_ms);
void store_unpin(struct store *st, int64_t content);
/*
 * Renew the leases of this mount's pins, and drop the pins no file has
 * used for a while.  Writes nothing when nothing is due.
 */
int store_pins_renew(struct store *st, int64_t now_ms);
/*
 * Up to len bytes of content (size bytes in all) from off, in a short
 * read of its own; *got gets the count.  Outside a transaction.
 */
int store_content_read(struct store *st, int64_t content, int64_t size,
		       int64_t off, char *buf, size_t len, size_t *got);
/*
 * Stage size bytes read from fd as a new version, pinned by the caller
 * (store_unpin() it after the commit that names it), in transactions of
 * one chunk each: the store's lock is never held while a large content
 * is written.  *content gets its id (0 for size 0).  Outside a
 * transaction.  A crash leaves a dead version for the purge.
 */
int store_content_stage(struct store *st, int fd, int64_t size,
			int64_t now_ms, int64_t *content);
/*
 * Purge in one transaction of bounded work: checkpoints of old epochs
 * (up to 64) and up to max chunks of a dead, unpinned version.  *n gets
 * the rows removed (0: nothing was due).
 */
int store_purge(struct store *st, int64_t now_ms, int max, int64_t *n);

/*
 * Holds of a workflow's input (see step_set_fingerprint): rows leased by
 * this mount.  store_hold() and store_hold_any() inside a transaction;
 * store_hold_any() does not count the hold `except` (0: none), the
 * asker's own.  store_unhold() in a transaction of its own: when it
 * fails, the store keeps the id and its next renewal deletes it.
 * store_holds_renew() renews this mount's leases to now + lease_ms once a
 * third of a lease has passed, and drops the lapsed holds of every mount
 * now and then; it writes only when there is something to write.
 */
int store_hold(struct store *st, int64_t wf, int64_t expires_ms, int64_t *id);
int store_unhold(struct store *st, int64_t id);
int store_hold_any(struct store *st, int64_t wf, int64_t now_ms,
		   int64_t except, bool *any);
int store_holds_renew(struct store *st, int64_t now_ms, int64_t lease_ms);

/* Events: append one, and read the rendered file of a workflow. */
int store_event_append(struct store *st, int64_t wf, const struct event *ev);
/* Up to size bytes of the events file from offset; *got gets the count. */
int store_event_read(struct store *st, int64_t wf, int64_t offset,
		     char *buf, size_t size, size_t *got);

/* One event, as oncectl shows it. */
struct event_view {
	int64_t time_ms;
	const char *line;	/* the JSON line */
	const char *type;	/* "claim", ... */
	const char *subject;	/* the key's or step's name, or "" */
	int64_t generation;	/* 0: none */
	const char *detail;	/* status, value, ... or "" */
	int64_t pid, uid;
};

/*
 * Call fn for each event of workflow wf at or after since_ms, oldest
 * first, until it returns non-zero (which is returned).  A backend gives
 * the time and the line; store.c reads the rest from the line (event.c),
 * the same way whichever backend keeps it.
 */
int store_event_list(struct store *st, int64_t wf, int64_t since_ms,
		     int (*fn)(void *arg, const struct event_view *ev),
		     void *arg);

/*
 * Check the store: the backend's own integrity check, then oncefs's
 * invariants.  Calls report() once for each problem; *problems gets
 * their number.  Inside a read transaction.
 */
struct store_check_calls {
	void (*report)(void *arg, const char *msg);	/* a problem */
	/*
	 * Now and then, when not NULL: the check under way, step of steps
	 * (the backend's own check is step 0, and long).
	 */
	void (*progress)(void *arg, const char *what, int step, int steps);
	void *arg;
};
int store_check(struct store *st, const struct store_check_calls *calls,
		int64_t *problems);

/* Sweeping.  Claims whose lease ended by now_ms (in_flight, expired). */
int store_key_expired(struct store *st, int64_t now_ms, struct key_row *rows,
		      int max, int *n);
/*
 * Terminal or vacant keys unchanged for longer than their retention.
 * This and store_event_trim() walk the workflows a few at a time, each
 * on an index, so that a call's work stays bounded however many rows the
 * store holds; *more says that workflows are left to visit.
 */
int store_key_retired(struct store *st, int64_t now_ms, struct key_row *rows,
		      int max, int *n, bool *more);
/*
 * Drop up to max events older than their workflow's retention; only the
 * beginning of a log goes, so that the file keeps its shape.
 */
int store_event_trim(struct store *st, int64_t now_ms, int max, int64_t *n,
		     bool *more);

#endif
