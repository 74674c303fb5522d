/*
 * store_pg.h - what the files of the PostgreSQL backend share (nothing
 * outside them includes it): its state, its statements, its helpers.
 *
 *   store_pg.c          connecting, the schema, opening, checking, the
 *                       table store_pg_ops, helpers
 *   store_pg_txn.c      transactions: the writer row, the database's
 *                       clock, reconnecting, a commit whose outcome was
 *                       lost
 *   store_pg_rows.c     workflows, keys and their notes, input holds,
 *                       checkpoints, events, sweeping
 *   store_pg_verbs.c    the operations (claim, finalize, ...), one
 *                       round trip each
 *   store_pg_content.c  content versions: chunks, pins, staging, reading,
 *                       the rows that name content, purging
 *
 * A small pool of connections per mount (-o connections=N): a thread has
 * one from store_begin() to its end, or for one flight or statement.
 * Write transactions of every mount on the database are serialized by
 * one row (writer): each begins by updating it, which takes its lock
 * until the commit, so that the rules of core/ run on a database no
 * other mount changes meanwhile, exactly as on SQLite, whose write lock
 * is the file's.  A flight holds it only while the server runs it.
 */
#ifndef ONCE_STORE_PG_H
#define ONCE_STORE_PG_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <libpq-fe.h>

#include "pin_table.h"
#include "store_backend.h"

enum pg_stmt {
	P_CHANGES,
	P_WRITER,
	P_LOOKUP_KEY,
	P_LOOKUP_GEN,
	P_CLAIM,
	P_FINALIZE,
	P_ABANDON,
	P_RENEW,
	P_STEP_COMMIT,
	P_MARK_NEW,
	P_MARK,
	P_RESOLVE,
	P_MARK_DROP,
	P_NEXT_GEN,
	P_WF_BY_NAME,
	P_WF_BY_ID,
	P_WF_INSERT,
	P_WF_UPDATE,
	P_WF_NAME_TAKEN,
	P_WF_DELETE,
	P_WF_LIST,
	P_KEY_GET,
	P_KEY_BY_GEN,
	P_KEY_INSERT,
	P_KEY_UPDATE,
	P_KEY_SET_CONTENT,
	P_KEY_DELETE,
	P_KEY_NOTES,
	P_KEY_SET_REQUEST,
	P_KEY_SET_ORIGINAL,
	P_KEY_CLEAR_NOTES,
	P_KEY_LIST,
	P_KEY_ANY,
	P_STEP_GET,
	P_STEP_BY_ID,
	P_STEP_ANY,
	P_STEP_LIST,
	P_STEP_INSERT,
	P_STEP_UPDATE,
	P_STEP_NAME_TAKEN,
	P_STEP_SET_CONTENT,
	P_STEP_DELETE,
	P_PURGE_WF,
	P_PURGE_STEPS,
	P_PURGE_WF_DONE,
	P_PURGE_CONTENT,
	P_PURGE_CHUNKS,
	P_PURGE_CONTENT_ROW,
	P_CONTENT_NEW,
	P_CONTENT_KILL,
	P_CHUNK_INSERT,
	P_CHUNK_READ,
	P_PIN_INSERT,
	P_PIN_RENEW,
	P_PIN_DELETE,
	P_PIN_DROP_MOUNT,
	P_HOLD_INSERT,
	P_HOLD_DELETE,
	P_HOLD_RENEW,
	P_HOLD_ANY,
	P_HOLD_MINE,
	P_HOLD_LAPSED,
	P_HOLD_DROP_MOUNT,
	P_HOLD_EXPIRED,
	P_EVENT_APPEND,
	P_EVENT_BASE,
	P_EVENT_READ,
	P_EVENT_REBASE,
	P_SWEEP_WFS,
	P_EVENT_OLDEST,
	P_EVENT_CUT,
	P_EVENT_LIST,
	P_KEY_EXPIRED,
	P_KEY_RETIRED,
	P_NSTMTS
};

/*
 * One connection of the pool.  A thread takes one for a transaction, a
 * flight or a statement (pg_take), and has it alone until it gives it
 * back; a take by a thread that has one already is that one again.
 */
struct pg_conn {
	PGconn *conn;		/* NULL until first needed */
	bool prepared[P_NSTMTS];	/* on this connection */
	bool session_ok;	/* pg_session() set it up */
	bool broken;		/* unusable: open a new one at next use */
	bool conflict;		/* its last error: a serialization failure or
				 * a deadlock, worth trying again */
	bool busy;		/* taken (under the store's lock) */
	int depth;		/* its thread's takes */
	/*
	 * Its row of last_writes: every write through it advances op, so
	 * that a write whose reply was lost can be looked up (and fenced).
	 */
	int64_t id;
	int64_t op;		/* the last op the store holds */
	bool marked;		/* the row exists */
	bool in_txn, in_write;	/* the transaction under way */
	struct timespec began;	/* when the write began */
};

/* The longest schema name (PostgreSQL's NAMEDATALEN - 1). */
#define PG_SCHEMA_MAX 63

struct store_impl {
	char *name;		/* the store's name: a URL or connection string */
	char schema[PG_SCHEMA_MAX + 1];	/* its schema (-o pg_schema) */
	struct pg_conn *conns;	/* the pool: max_conns, nconns opened */
	int nconns, max_conns;
	pthread_mutex_t lock;	/* the pool's busy flags, stats' maxima */
	pthread_cond_t freed;
	/*
	 * The database's clock: its time minus this host's monotonic clock
	 * (pg_steady_ms), as read at the last lookup or read transaction;
	 * read and written atomically.
	 */
	int64_t clock_offset_ms;

	int busy_timeout_ms;
	enum store_sync sync;
	bool read_only;
	struct store_stats stats;	/* counters: atomic adds */
	bool down_logged;	/* the server's loss was logged */

	struct pin_table pins;
	pthread_mutex_t pin_lock;	/* unheld; taken before lock */
	int64_t mount_id;	/* names this mount's pins and holds */
	int64_t *unheld;	/* holds whose release failed, to retry */
	size_t n_unheld, unheld_cap;
	int64_t holds_renew_ms, holds_swept_ms;
	int64_t retire_cursor, trim_cursor;	/* the sweep's walks */

	pthread_mutex_t problem_lock;
	char problem[256];	/* the last bad row, for pg_problem() */
};

/* Connections a mount opens at most, unless its options say. */
#define PG_CONNECTIONS_DEFAULT 4
#define PG_CONNECTIONS_MAX 64

/* The connection the calling thread took. */
struct pg_conn *pg_cur(void);
/* Count one request sent to the server. */
void pg_count_trip(struct store_impl *st);

/* The database's clock, in Unix milliseconds, as SQL. */
#define DB_CLOCK "floor(extract(epoch FROM clock_timestamp()) * 1000)::int8"

/* Content is cut into chunks of this size (see store.h). */
#define PG_CHUNK (1024 * 1024)

/*
 * The parameters of one statement, all in binary: 64-bit integers,
 * bytes (NULL with len 0 for SQL NULL), or text.
 */
#define PG_MAX_PARAMS 16
struct pg_params {
	const char *values[PG_MAX_PARAMS];
	int lengths[PG_MAX_PARAMS];
	int formats[PG_MAX_PARAMS];
	uint64_t ints[PG_MAX_PARAMS];
	int n;
};

/* ---- store_pg.c: helpers */
void pg_int(struct pg_params *p, int64_t v);
void pg_bytes(struct pg_params *p, const void *buf, size_t len);
void pg_null(struct pg_params *p);
/* Prepare statement id on this connection, once; its name into buf. */
int pg_prepare(struct store_impl *st, enum pg_stmt id);
void pg_stmt_name(enum pg_stmt id, char *buf, size_t size);
/* A parameter in text form (an array of integers, "{1,2}"). */
void pg_text(struct pg_params *p, const char *s);
/*
 * Run statement id (prepared on first use) with p; *res gets its result
 * (PQclear it) when 0 is returned, and NULL otherwise.
 */
int pg_run(struct store_impl *st, enum pg_stmt id, struct pg_params *p,
	   PGresult **res);
/* Run a statement that returns no rows, or whose rows are not needed. */
int pg_exec(struct store_impl *st, enum pg_stmt id, struct pg_params *p);
/* The count of rows a statement changed. */
int pg_exec_count(struct store_impl *st, enum pg_stmt id,
		  struct pg_params *p, int64_t *count);
/* A 64-bit integer column, or INT64_MIN when NULL or not one. */
int64_t pg_col_int(const PGresult *r, int row, int col);
int pg_error(struct store_impl *st, const PGresult *r, const char *what);
int pg_bad_row(struct store_impl *st, const char *table, int64_t id,
	       const char *what, int64_t value);
/* The first row's first column of a statement with one integer result. */
int pg_one_int(struct store_impl *st, enum pg_stmt id, struct pg_params *p,
	       int64_t *out);
/* Set up a new connection: its search path, durability, lock wait. */
int pg_session(struct store_impl *st, struct pg_conn *c);
/* Connect to the store's server; a message for the user into err. */
int pg_connect(const char *name, PGconn **out, char *err, size_t errlen);

/* ---- store_pg_txn.c */
/*
 * On the thread's connection: make it work, connecting or resetting it
 * once if it was lost.
 */
int pg_reconnect(struct store_impl *st);
/*
 * The database's clock db_ms, read by a statement sent at sent_ms (by
 * pg_steady_ms): the offset pg_now_ms() applies.
 */
void pg_note_clock(struct store_impl *st, int64_t db_ms, int64_t sent_ms);
/* This host's monotonic clock, in ms: for offsets and deadlines only. */
int64_t pg_steady_ms(void);
int pg_begin(struct store_impl *st, bool write);
int pg_begin_nowait(struct store_impl *st);
int pg_commit(struct store_impl *st);
void pg_rollback(struct store_impl *st);
/*
 * Take a connection of the pool for the calling thread (waiting for one
 * when all are taken), working; give it back.  Begins, commits and
 * flights take and give their own.
 */
int pg_take(struct store_impl *st);
void pg_give(struct store_impl *st);
/*
 * A write operation in one round trip: statement id with p, after the
 * writer row's update, in one implicit transaction that the server
 * commits at the flight's end.  *res gets id's result; NULL with 0
 * returned when the flight committed but its reply was lost (the caller
 * reads back what it needs).  Takes the connection: outside a transaction.
 */
int pg_flight(struct store_impl *st, enum pg_stmt id, struct pg_params *p,
	      PGresult **res);
int pg_next_generation(struct store_impl *st, int64_t *out);
/* The database's clock now, as last read and moved on since. */
int64_t pg_now_ms(struct store_impl *st);
int pg_changed(struct store_impl *st, int64_t *seen);

/* ---- store_pg_rows.c */
/* A row of WF_COLS or KEY_COLS order from column c of a result (checked). */
int pg_read_wf(struct store_impl *st, const PGresult *r, int row, int c,
	       struct wf_row *out);
int pg_read_key(struct store_impl *st, const PGresult *r, int row, int c,
		struct key_row *out);
int pg_wf_by_name(struct store_impl *st, const char *name, size_t len,
		  struct wf_row *out);
int pg_wf_by_id(struct store_impl *st, int64_t id, struct wf_row *out);
int pg_wf_insert(struct store_impl *st, struct wf_row *row);
int pg_wf_update(struct store_impl *st, const struct wf_row *row);
int pg_wf_delete(struct store_impl *st, int64_t id);
int pg_wf_list(struct store_impl *st, int64_t after, struct wf_row *rows,
	       int max, int *n);
int pg_key_get(struct store_impl *st, int64_t wf, const char *name,
	       size_t len, struct key_row *out);
int pg_key_by_generation(struct store_impl *st, int64_t generation,
			 struct key_row *out);
int pg_key_result(struct store_impl *st, const struct key_row *k,
		  char **buf, size_t *len);
int pg_key_insert(struct store_impl *st, struct key_row *row);
int pg_key_update(struct store_impl *st, const struct key_row *row);
int pg_key_set_result(struct store_impl *st, struct key_row *k,
		      const char *buf, size_t len);
int pg_key_delete(struct store_impl *st, int64_t id);
int pg_key_note(struct store_impl *st, int64_t id, enum key_note which,
		char *buf, size_t *len);
int pg_key_set_note(struct store_impl *st, int64_t id,
		    enum key_note which, const char *buf, size_t len);
int pg_key_clear_notes(struct store_impl *st, int64_t id);
int pg_key_list(struct store_impl *st, int64_t wf, int64_t after,
		int64_t now_ms, struct key_row *rows, int max, int *n);
int pg_key_any(struct store_impl *st, int64_t wf, int64_t now_ms,
	       bool *any);
/* A step's row from STEP_COLS at columns 0 to 7 of row of r, checked. */
int pg_read_step(struct store_impl *st, const PGresult *r, int row,
		 void *out);
int pg_step_get(struct store_impl *st, int64_t wf, int64_t epoch,
		const char *name, size_t len, struct step_row *out);
int pg_step_by_id(struct store_impl *st, int64_t id, struct step_row *out);
int pg_step_any(struct store_impl *st, int64_t wf, int64_t epoch,
		bool *any);
int pg_step_list(struct store_impl *st, int64_t wf, int64_t epoch,
		 int64_t after, struct step_row *rows, int max, int *n);
int pg_step_insert(struct store_impl *st, struct step_row *row);
int pg_step_update(struct store_impl *st, const struct step_row *row);
int pg_hold(struct store_impl *st, int64_t wf, int64_t expires_ms,
	    int64_t *id);
int pg_unhold(struct store_impl *st, int64_t id);
bool pg_holds_mine(struct store_impl *st);
int pg_hold_any(struct store_impl *st, int64_t wf, int64_t now_ms,
		int64_t except, bool *any);
int pg_holds_renew(struct store_impl *st, int64_t now_ms, int64_t lease_ms);
int pg_event_append(struct store_impl *st, int64_t wf,
		    const struct event *ev);
int pg_event_read(struct store_impl *st, int64_t wf, int64_t offset,
		  char *buf, size_t size, size_t *got);
int pg_event_list(struct store_impl *st, int64_t wf, int64_t since_ms,
		  int (*fn)(void *arg, const struct event_view *ev),
		  void *arg);
int pg_key_expired(struct store_impl *st, int64_t now_ms,
		   struct key_row *rows, int max, int *n);
int pg_key_retired(struct store_impl *st, int64_t now_ms,
		   struct key_row *rows, int max, int *n, bool *more);
int pg_event_trim(struct store_impl *st, int64_t now_ms, int max,
		  int64_t *n, bool *more);

/* ---- store_pg_verbs.c: the operations */
int pg_lookup_workflow(struct store_impl *st, int64_t id, const char *name,
		       size_t len, struct wf_row *w);
int pg_lookup_key(struct store_impl *st, int64_t wf, const char *name,
		  size_t len, struct wf_row *w, struct key_row *k);
int pg_lookup_generation(struct store_impl *st, int64_t generation,
			 struct key_row *k, struct wf_row *w);
int pg_claim(struct store_impl *st, const struct store_claim *c,
	     struct key_row *k, struct wf_row *w, bool *adopted);
int pg_finalize(struct store_impl *st, const struct store_finalize *f,
		struct key_row *k);
int pg_abandon(struct store_impl *st, int64_t generation, int64_t now_ms,
	       const struct event *ev, struct key_row *k);
int pg_renew(struct store_impl *st, const int64_t *generations, size_t n,
	     int64_t now_ms, int64_t lease_ms, uint64_t *renewed);
int pg_step_commit(struct store_impl *st, const struct store_step_commit *c,
		   struct step_row *r);

/* ---- store_pg_content.c */
int pg_pin(struct store_impl *st, int64_t content, int64_t now_ms);
void pg_unpin(struct store_impl *st, int64_t content);
int pg_pins_renew(struct store_impl *st, int64_t now_ms);
int pg_new_content(struct store_impl *st, int64_t size, bool dead,
		   int64_t *id);
int pg_put_chunks(struct store_impl *st, int64_t content, int64_t first_seq,
		  const char *buf, size_t len);
int pg_content_stage(struct store_impl *st, int fd, int64_t size,
		     int64_t now_ms, int64_t *content);
int pg_content_read(struct store_impl *st, int64_t content, int64_t size,
		    int64_t off, char *buf, size_t len, size_t *got);
int pg_step_set_content(struct store_impl *st, struct step_row *r,
			int64_t content, int64_t size, int64_t mtime_ns);
int pg_step_delete(struct store_impl *st, int64_t id);
int pg_purge(struct store_impl *st, int64_t now_ms, int max,
	     int64_t *purged);

#endif
