/*
 * store_sqlite.h - what the files of the SQLite backend share (nothing
 * outside them includes it): its state, its statements, its helpers.
 *
 * The backend (the table store_sqlite_ops, store_backend.h) is split by
 * concern:
 *   store_sqlite.c          statements and schema, helpers, opening and
 *                           upgrading a store, checking it, the table
 *   store_sqlite_txn.c      transactions, group commit, durability of reads
 *   store_sqlite_rows.c     workflows, keys and their notes, input holds,
 *                           checkpoints, events, sweeping
 *   store_sqlite_content.c  content versions: chunks, pins, staging,
 *                           reading, the rows that name content, purging
 */
#ifndef ONCE_STORE_SQLITE_H
#define ONCE_STORE_SQLITE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <sqlite3.h>

#include "pin_table.h"
#include "store_backend.h"

enum stmt_id {
	S_BEGIN_READ,
	S_BEGIN_WRITE,
	S_COMMIT,
	S_ROLLBACK,
	S_DATA_VERSION,
	S_NEXT_GEN,
	S_WF_BY_NAME,
	S_WF_BY_ID,
	S_WF_INSERT,
	S_WF_UPDATE,
	S_WF_DELETE,
	S_WF_DELETE_KEYS,
	S_WF_DELETE_STEPS,
	S_WF_DELETE_EVENTS,
	S_WF_DELETE_HOLDS,
	S_WF_LIST,
	S_KEY_GET,
	S_KEY_BY_GEN,
	S_KEY_CONTENT,
	S_KEY_INSERT,
	S_KEY_UPDATE,
	S_KEY_UPDATE_GEN,
	S_KEY_SET_CONTENT,
	S_KEY_KILL_CONTENT,
	S_KEY_DELETE,
	S_KEY_REQUEST,
	S_KEY_SET_REQUEST,
	S_KEY_ORIGINAL,
	S_KEY_SET_ORIGINAL,
	S_KEY_CLEAR_NOTES,
	S_KEY_LIST,
	S_KEY_ANY,
	S_STEP_GET,
	S_STEP_BY_ID,
	S_STEP_ANY,
	S_STEP_LIST,
	S_STEP_INSERT,
	S_STEP_UPDATE,
	S_STEP_SET_CONTENT,
	S_STEP_KILL_CONTENT,
	S_STEP_DELETE,
	S_PURGE_WF,
	S_PURGE_STEPS,
	S_PURGE_WF_DONE,
	S_PURGE_CONTENT,
	S_PURGE_CHUNKS,
	S_PURGE_CONTENT_ROW,
	S_CONTENT_NEW,
	S_CONTENT_LIVE,
	S_CONTENT_KILL,
	S_CHUNK_INSERT,
	S_PIN_INSERT,
	S_PIN_RENEW,
	S_PIN_DELETE,
	S_PIN_DROP_ALL,
	S_PIN_DROP_MOUNT,
	S_HOLD_INSERT,
	S_HOLD_DELETE,
	S_HOLD_RENEW,
	S_HOLD_ANY,
	S_HOLD_MINE,
	S_HOLD_LAPSED,
	S_HOLD_DROP_MOUNT,
	S_HOLD_EXPIRED,
	S_WF_KILL_CONTENT,
	S_EVENT_INSERT,
	S_EVENT_GROW,
	S_EVENT_READ,
	S_EVENT_BASE,
	S_EVENT_REBASE,
	S_SWEEP_WFS,
	S_EVENT_OLDEST,
	S_EVENT_CUT,
	S_KEY_EXPIRED,
	S_KEY_RETIRED,
	S_EVENT_LIST,
	S_NSTMTS
};

/* A read-only connection for content reads, with its one statement. */
struct reader_conn {
	sqlite3 *db;
	sqlite3_stmt *find;	/* the rowid of a chunk */
};

/* A connection with its prepared statements. */
struct conn {
	sqlite3 *db;
	sqlite3_stmt *stmts[S_NSTMTS];
	bool in_write;		/* in a write transaction */
	int64_t changes;	/* sqlite3_total_changes64() at its start */
	struct timespec began;	/* when the write transaction began */
};

struct store_impl {
	struct conn main;	/* every write, under st->lock */
	char *path;
	int busy_timeout_ms;
	pthread_mutex_t lock;
	pthread_mutex_t pool_lock;
	struct reader_conn idle_readers[16];	/* kept for content reads */
	sqlite3 *checkpointer;			/* sq_checkpoint()'s own */
	uint64_t checkpoint_commits;		/* ->committed at its last run */
	int64_t checkpoint_dv;			/* and data_version (any mount) */
	void (*wal_grew)(void *arg);		/* sq_on_wal_growth() */
	void *wal_grew_arg;
	int n_idle_readers;

	/*
	 * Pins of content versions (store_pin), and this mount's id in the
	 * pins and holds tables.  pin_lock (for unheld, and around staging)
	 * is taken before st->lock.
	 */
	struct pin_table pins;
	pthread_mutex_t pin_lock;
	int64_t mount_id;
	int64_t *unheld;		/* holds whose release failed, to retry */
	size_t n_unheld, unheld_cap;
	int64_t holds_renew_ms;		/* when this mount's are renewed next */
	int64_t holds_swept_ms;		/* when lapsed holds are dropped next */
	int64_t retire_cursor, trim_cursor;	/* the sweep's walks */
	int64_t busy_since_ms;			/* busy_wait()'s first try */
	bool busy_nowait;			/* begin(): do not wait */
	sqlite3_stmt *stmts[S_NSTMTS];
	enum store_sync sync;
	bool read_only;
	struct store_stats stats;

	/*
	 * Group commit (sync=full).  SQLite runs with synchronous=NORMAL, which
	 * writes a commit to the WAL without syncing it, and syncs the WAL and
	 * the database itself around every checkpoint.  After its COMMIT, a
	 * writer drops st->lock and waits until an fdatasync() of the WAL that
	 * began after its commit has returned; the first waiter runs it for
	 * everyone whose commit came before.  So concurrent commits share one
	 * sync, and each is durable before sq_commit() returns: its frames
	 * are either still in the WAL, which the sync covered, or were copied
	 * by a checkpoint, which synced them.  Before it syncs, that first
	 * waiter lets the write transactions begun or queued for st->lock at
	 * that moment commit (for SYNC_GATHER_US at most), so that one sync
	 * covers them too rather than each paying its own.
	 */
	int wal_fd;			/* the -wal file, for fdatasync */
	pthread_mutex_t sync_lock;
	pthread_cond_t sync_cond;
	uint64_t committed;		/* commits written (under st->lock) */
	uint64_t synced;		/* of them, made durable */
	bool syncing;			/* a waiter is in fdatasync() */
	int writers;			/* write transactions begun or waiting to
					 * (atomic) */
	int queued;			/* transactions waiting for st->lock
					 * (atomic): see sq_contended() */
	bool gathering;			/* the syncer waits for them (atomic) */
	pthread_cond_t gather_cond;	/* a writer ended (monotonic clock) */
	/*
	 * A failed fdatasync() loses frames for good: Linux reports a
	 * writeback error once per file, so a retry would say 0 for data
	 * that never reached the disk.  After one, the store refuses every
	 * write (-EROFS) and every commit still waiting fails (-EIO).
	 */
	bool sync_failed;

	/*
	 * Nothing a reply reports may be less durable than the reply (sync=
	 * full): a read transaction remembers the last commit it could see
	 * (txn_seen) and waits, at its end, until that commit is synced.
	 * Commits of other processes show as a change of data_version; the
	 * first read that sees one syncs the WAL for them too.
	 */
	uint64_t txn_seen;		/* under st->lock */
	int64_t data_version;		/* under st->lock */

	pthread_mutex_t problem_lock;
	char problem[256];		/* the last bad row, for sq_problem() */

	/*
	 * A read-only open that creates nothing (see open_untouched()): the
	 * name SQLite gets, and a lock that keeps a writer's -wal in place.
	 */
	char *open_name;		/* a file: URI, or NULL for path */
	int open_flags;
	int shared_fd;			/* OFD read lock, or -1 */
};

/*
 * Content is cut into STORE_CHUNK pieces: SQLite caps one value at 10^9
 * bytes, a reader reads one piece at a time, and staging writes one piece
 * a transaction.
 */
#define STORE_CHUNK (1024 * 1024)

/* ---- store_sqlite.c: helpers, opening, checking */
int sq_error(struct store_impl *st, int rc, const char *what);
sqlite3_stmt *sq_stmt(struct store_impl *st, enum stmt_id id);
void sq_done(sqlite3_stmt *s);
int sq_exec(struct store_impl *st, sqlite3_stmt *s, const char *what);
void sq_bind_blob(sqlite3_stmt *s, int i, const void *p, size_t len);
int sq_bad_row(struct store_impl *st, const char *table, int64_t id,
	       const char *what, int64_t value);
int sq_copy_name(struct store_impl *st, const char *table, int64_t id,
		 sqlite3_stmt *s, int col, char *dst, size_t *len);
int sq_column_in(struct store_impl *st, const char *table, int64_t id,
		 sqlite3_stmt *s, int col, const char *what, int64_t lo,
		 int64_t hi, int64_t *out);
bool sq_read_still_valid(struct store_impl *st);

/* ---- store_sqlite_txn.c: transactions, group commit */
int sq_begin_txn(struct store_impl *st, bool write, bool wait);
int sq_begin(struct store_impl *st, bool write);
bool sq_contended(struct store_impl *st);
int sq_commit_lazy(struct store_impl *st);
void sq_note_hold(struct store_impl *st, struct conn *c);
int sq_end_txn(struct store_impl *st, struct conn *c, uint64_t seq);
/* Add the pages c wrote since the last count to the store's stats. */
void sq_count_pages(struct store_impl *st, struct conn *c);
int sq_commit(struct store_impl *st);
void sq_rollback(struct store_impl *st);
int sq_next_generation(struct store_impl *st, int64_t *out);

/* ---- store_sqlite_rows.c: rows, events, sweeping */
int sq_wf_by_name(struct store_impl *st, const char *name, size_t len,
		  struct wf_row *out);
int sq_wf_by_id(struct store_impl *st, int64_t id, struct wf_row *out);
int sq_wf_insert(struct store_impl *st, struct wf_row *row);
int sq_wf_update(struct store_impl *st, const struct wf_row *row);
int sq_wf_delete(struct store_impl *st, int64_t id);
int sq_wf_list(struct store_impl *st, int64_t after, struct wf_row *rows,
	       int max, int *n);
int sq_key_get(struct store_impl *st, int64_t wf, const char *name,
	       size_t len, struct key_row *out);
int sq_key_by_generation(struct store_impl *st, int64_t generation,
			 struct key_row *out);
int sq_key_result(struct store_impl *st, const struct key_row *k,
		  char **buf, size_t *len);
int sq_key_insert(struct store_impl *st, struct key_row *row);
int sq_key_update(struct store_impl *st, const struct key_row *row);
int sq_key_set_result(struct store_impl *st, struct key_row *k,
		      const char *buf, size_t len);
int sq_key_delete(struct store_impl *st, int64_t id);
int sq_key_note(struct store_impl *st, int64_t id, enum key_note which,
		char *buf, size_t *len);
int sq_key_set_note(struct store_impl *st, int64_t id,
		    enum key_note which, const char *buf, size_t len);
int sq_key_clear_notes(struct store_impl *st, int64_t id);
int sq_hold(struct store_impl *st, int64_t wf, int64_t expires_ms,
	    int64_t *id);
int sq_unhold(struct store_impl *st, int64_t id);
bool sq_holds_mine(struct store_impl *st);
int sq_hold_any(struct store_impl *st, int64_t wf, int64_t now_ms,
		int64_t except, bool *any);
int sq_holds_renew(struct store_impl *st, int64_t now_ms,
		   int64_t lease_ms);
int sq_key_list(struct store_impl *st, int64_t wf, int64_t after,
		int64_t now_ms, struct key_row *rows, int max, int *n);
int sq_exists(struct store_impl *st, sqlite3_stmt *s, bool *any);
int sq_key_any(struct store_impl *st, int64_t wf, int64_t now_ms,
	       bool *any);
int sq_step_get(struct store_impl *st, int64_t wf, int64_t epoch,
		const char *name, size_t len, struct step_row *out);
int sq_step_by_id(struct store_impl *st, int64_t id,
		  struct step_row *out);
int sq_step_any(struct store_impl *st, int64_t wf, int64_t epoch,
		bool *any);
int sq_event_append(struct store_impl *st, int64_t wf,
		    const struct event *ev);
int sq_event_read(struct store_impl *st, int64_t wf, int64_t offset,
		  char *buf, size_t size, size_t *got);
int sq_step_list(struct store_impl *st, int64_t wf, int64_t epoch,
		 int64_t after, struct step_row *rows, int max, int *n);
int sq_step_insert(struct store_impl *st, struct step_row *row);
int sq_step_update(struct store_impl *st, const struct step_row *row);
int sq_key_expired(struct store_impl *st, int64_t now_ms,
		   struct key_row *rows, int max, int *n);
int sq_key_retired(struct store_impl *st, int64_t now_ms,
		   struct key_row *rows, int max, int *n, bool *more);
int sq_event_trim(struct store_impl *st, int64_t now_ms, int max,
		  int64_t *n, bool *more);
int sq_event_list(struct store_impl *st, int64_t wf, int64_t since_ms,
		  int (*fn)(void *arg, const struct event_view *ev),
		  void *arg);

/* ---- store_sqlite_content.c: content versions */
int sq_pin(struct store_impl *st, int64_t content, int64_t now_ms);
void sq_unpin(struct store_impl *st, int64_t content);
int sq_pins_renew(struct store_impl *st, int64_t now_ms);
int sq_put_chunks(struct store_impl *st, int64_t content, int64_t first_seq,
		  const char *buf, size_t len);
int sq_new_content(struct store_impl *st, int64_t size, bool dead,
		   int64_t *id);
int sq_by_id(struct store_impl *st, enum stmt_id id, int64_t value,
	     const char *what);
int sq_content_stage(struct store_impl *st, int fd, int64_t size,
		     int64_t now_ms, int64_t *content);
void sq_reader_conn_close(struct reader_conn *rc);
int sq_content_read(struct store_impl *st, int64_t content, int64_t size,
		    int64_t off, char *buf, size_t len, size_t *got);
int sq_step_set_content(struct store_impl *st, struct step_row *r,
			int64_t content, int64_t size, int64_t mtime_ns);
int sq_step_delete(struct store_impl *st, int64_t id);
int sq_purge(struct store_impl *st, int64_t now_ms, int max,
	     int64_t *purged);

/* ---- store_sqlite.c: the rest of the table store_sqlite_ops */
int sq_open(const char *path, const struct store_options *opt,
	    struct store_impl **out, char *err, size_t errlen);
void sq_close(struct store_impl *st);
int sq_changed(struct store_impl *st, int64_t *seen);
void sq_get_stats(struct store_impl *st, struct store_stats *out);
int sq_check(struct store_impl *st,
	     const struct store_check_calls *calls, int64_t *problems);
const char *sq_problem(struct store_impl *st, char *buf, size_t size);
void sq_on_wal_growth(struct store_impl *st, void (*fn)(void *arg),
		      void *arg);
int sq_checkpoint(struct store_impl *st);

#endif
