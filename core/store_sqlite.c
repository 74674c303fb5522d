/*
 * store_sqlite.c - the SQLite backend of the store (store_backend.h): the
 * store on an embedded SQLite database.
 *
 * Transactions go through one connection, serialized by st->lock: SQLite
 * allows one writer at a time anyway, and BEGIN IMMEDIATE takes the write
 * lock up front so that two processes never deadlock upgrading a read.
 * Other processes (other mounts, oncectl) wait for the lock up to the busy
 * timeout.  Reads share the connection too: its page cache stays warm
 * across our own commits (a connection per thread was measured slower, its
 * cache being dropped after every write).  Content reads (store_content_
 * read) take a pooled read-only connection for one short transaction; the
 * background's WAL checkpoints run on a connection of their own.  No
 * connection, and no snapshot, lives as long as an open file.
 *
 * The database is recognized by its application_id ("once") and carries
 * its schema version in user_version.  Nothing is written to a file until
 * both have been checked: not even the switch to WAL.
 *
 * Every statement is prepared once, from the constant text in sql[], and
 * kept; names are always bound, never pasted into SQL.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "event.h"
#include "store_backend.h"

#define ONCE_APPLICATION_ID 0x6f6e6365	/* "once" */

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

#define WF_COLS "id, name, uid, gid, mode, ctime_ns, mtime_ns, on_input_change, " \
	"dedup_on, in_flight_ttl, retention, fingerprint, epoch, " \
	"events_size - events_base"
#define KEY_COLS "id, wf, name, status, generation, attempt, expires_ms, " \
	"mtime_ns, holder_pid, holder_uid, result_len, content, previous"
#define STEP_COLS "id, wf, epoch, name, size, mtime_ns, content, atime_ns"

static const char *const sql[S_NSTMTS] = {
	[S_BEGIN_READ] = "BEGIN",
	[S_BEGIN_WRITE] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	[S_DATA_VERSION] = "PRAGMA data_version",
	[S_NEXT_GEN] = "UPDATE sequence SET value = value + 1 "
		"WHERE name = 'generation' RETURNING value",
	[S_WF_BY_NAME] = "SELECT " WF_COLS " FROM workflows WHERE name = ?1",
	[S_WF_BY_ID] = "SELECT " WF_COLS " FROM workflows WHERE id = ?1",
	[S_WF_INSERT] = "INSERT INTO workflows(name, uid, gid, mode, ctime_ns, "
		"mtime_ns, on_input_change, dedup_on, in_flight_ttl, retention, "
		"fingerprint, epoch, events_size) "
		"VALUES(?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 0) "
		"RETURNING id",
	[S_WF_UPDATE] = "UPDATE workflows SET name = ?2, uid = ?3, gid = ?4, "
		"mode = ?5, ctime_ns = ?6, mtime_ns = ?7, on_input_change = ?8, "
		"dedup_on = ?9, in_flight_ttl = ?10, retention = ?11, "
		"fingerprint = ?12, epoch = ?13 WHERE id = ?1",
	[S_WF_DELETE] = "DELETE FROM workflows WHERE id = ?1",
	[S_WF_DELETE_KEYS] = "DELETE FROM keys WHERE wf = ?1",
	[S_WF_DELETE_STEPS] = "DELETE FROM steps WHERE wf = ?1",
	[S_WF_DELETE_EVENTS] = "DELETE FROM events WHERE wf = ?1",
	[S_WF_DELETE_HOLDS] = "DELETE FROM holds WHERE wf = ?1",
	[S_WF_LIST] = "SELECT " WF_COLS " FROM workflows WHERE id > ?1 "
		"ORDER BY id LIMIT ?2",
	[S_KEY_GET] = "SELECT " KEY_COLS " FROM keys WHERE wf = ?1 AND name = ?2",
	[S_KEY_BY_GEN] = "SELECT " KEY_COLS " FROM keys WHERE generation = ?1",
	[S_KEY_CONTENT] = "SELECT content, result_len FROM keys WHERE id = ?1",
	[S_KEY_INSERT] = "INSERT INTO keys(wf, name, status, generation, attempt, "
		"expires_ms, mtime_ns, holder_pid, holder_uid, previous, content, "
		"result_len) VALUES(?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 0, 0) "
		"RETURNING id",
	[S_KEY_UPDATE] = "UPDATE keys SET wf = ?2, name = ?3, status = ?4, "
		"generation = ?5, attempt = ?6, expires_ms = ?7, mtime_ns = ?8, "
		"holder_pid = ?9, holder_uid = ?10, previous = ?11 WHERE id = ?1",
	[S_KEY_SET_CONTENT] = "UPDATE keys SET content = ?2, result_len = ?3 "
		"WHERE id = ?1",
	[S_KEY_KILL_CONTENT] = "UPDATE contents SET dead = 1 WHERE id = "
		"(SELECT content FROM keys WHERE id = ?1)",
	[S_KEY_DELETE] = "DELETE FROM keys WHERE id = ?1",
	[S_KEY_REQUEST] = "SELECT request FROM keys WHERE id = ?1",
	[S_KEY_SET_REQUEST] = "UPDATE keys SET request = ?2 WHERE id = ?1",
	[S_KEY_ORIGINAL] = "SELECT original FROM keys WHERE id = ?1",
	[S_KEY_SET_ORIGINAL] = "UPDATE keys SET original = ?2 WHERE id = ?1",
	[S_KEY_CLEAR_NOTES] = "UPDATE keys SET request = NULL, original = NULL "
		"WHERE id = ?1",
	[S_KEY_LIST] = "SELECT " KEY_COLS " FROM keys WHERE wf = ?1 AND id > ?2 "
		"AND (status IN (2, 3) OR (status = 1 AND expires_ms > ?3)) ORDER BY id LIMIT ?4",
	[S_KEY_ANY] = "SELECT EXISTS(SELECT 1 FROM keys WHERE wf = ?1 "
		"AND (status IN (2, 3) OR (status = 1 AND expires_ms > ?2)))",
	[S_STEP_GET] = "SELECT " STEP_COLS " FROM steps "
		"WHERE wf = ?1 AND epoch = ?2 AND name = ?3",
	[S_STEP_BY_ID] = "SELECT " STEP_COLS " FROM steps WHERE id = ?1",
	[S_STEP_ANY] = "SELECT EXISTS(SELECT 1 FROM steps WHERE wf = ?1 "
		"AND epoch = ?2)",
	[S_STEP_LIST] = "SELECT " STEP_COLS " FROM steps WHERE wf = ?1 AND "
		"epoch = ?2 AND id > ?3 ORDER BY id LIMIT ?4",
	[S_STEP_INSERT] = "INSERT INTO steps(wf, epoch, name, size, mtime_ns, "
		"content) VALUES(?2, ?3, ?4, 0, ?6, 0) RETURNING id",
	[S_STEP_UPDATE] = "UPDATE steps SET name = ?4, mtime_ns = ?6, atime_ns = ?7 "
		"WHERE id = ?1",
	[S_STEP_SET_CONTENT] = "UPDATE steps SET content = ?2, size = ?3, "
		"mtime_ns = ?4 WHERE id = ?1",
	[S_STEP_KILL_CONTENT] = "UPDATE contents SET dead = 1 WHERE id = "
		"(SELECT content FROM steps WHERE id = ?1)",
	[S_STEP_DELETE] = "DELETE FROM steps WHERE id = ?1",
	/* Workflows with checkpoints of old epochs left, on a partial index. */
	[S_PURGE_WF] = "SELECT id, epoch FROM workflows INDEXED BY "
		"workflows_to_purge WHERE purged_epoch < epoch LIMIT 1",
	[S_PURGE_STEPS] = "SELECT id FROM steps WHERE wf = ?1 AND epoch < ?2 "
		"LIMIT ?3",
	[S_PURGE_WF_DONE] = "UPDATE workflows SET purged_epoch = ?2 WHERE id = ?1",
	/* A dead version no live pin holds. */
	[S_PURGE_CONTENT] = "SELECT id FROM contents INDEXED BY contents_dead "
		"WHERE dead = 1 AND NOT EXISTS (SELECT 1 FROM pins WHERE "
		"pins.content = contents.id AND pins.expires_ms > ?1) LIMIT 1",
	[S_PURGE_CHUNKS] = "DELETE FROM chunks WHERE id IN (SELECT id FROM "
		"chunks WHERE content = ?1 LIMIT ?2)",
	[S_PURGE_CONTENT_ROW] = "DELETE FROM contents WHERE id = ?1 AND dead = 1",
	[S_CONTENT_NEW] = "INSERT INTO contents(size, dead) VALUES(?1, ?2) "
		"RETURNING id",
	[S_CONTENT_LIVE] = "UPDATE contents SET dead = 0, size = ?2 WHERE id = ?1",
	[S_CONTENT_KILL] = "UPDATE contents SET dead = 1 WHERE id = ?1",
	[S_CHUNK_INSERT] = "INSERT INTO chunks(content, seq, data) VALUES(?1, ?2, ?3)",
	[S_PIN_INSERT] = "INSERT INTO pins(content, mount, expires_ms) "
		"SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM contents WHERE id = ?1) "
		"ON CONFLICT DO UPDATE SET expires_ms = excluded.expires_ms",
	[S_PIN_RENEW] = "UPDATE pins SET expires_ms = ?2 WHERE mount = ?1",
	[S_PIN_DELETE] = "DELETE FROM pins WHERE content = ?1 AND mount = ?2",
	[S_PIN_DROP_ALL] = "DELETE FROM pins WHERE content = ?1",
	[S_PIN_DROP_MOUNT] = "DELETE FROM pins WHERE mount = ?1",
	[S_HOLD_INSERT] = "INSERT INTO holds(wf, mount, expires_ms) "
		"VALUES(?1, ?2, ?3) RETURNING id",
	[S_HOLD_DELETE] = "DELETE FROM holds WHERE id = ?1",
	[S_HOLD_RENEW] = "UPDATE holds SET expires_ms = ?2 WHERE mount = ?1",
	[S_HOLD_ANY] = "SELECT EXISTS(SELECT 1 FROM holds WHERE wf = ?1 "
		"AND expires_ms > ?2)",
	[S_HOLD_DROP_MOUNT] = "DELETE FROM holds WHERE mount = ?1",
	[S_HOLD_EXPIRED] = "DELETE FROM holds WHERE expires_ms <= ?1",
	[S_WF_KILL_CONTENT] = "UPDATE contents SET dead = 1 WHERE id IN "
		"(SELECT content FROM steps WHERE wf = ?1 UNION ALL "
		"SELECT content FROM keys WHERE wf = ?1)",
	[S_EVENT_INSERT] = "INSERT INTO events(wf, off, time_ms, line) "
		"VALUES(?1, (SELECT events_size FROM workflows WHERE id = ?1), ?2, ?3)",
	[S_EVENT_GROW] = "UPDATE workflows SET events_size = events_size + ?2 "
		"WHERE id = ?1",
	[S_EVENT_BASE] = "SELECT events_base FROM workflows WHERE id = ?1",
	[S_EVENT_REBASE] = "UPDATE workflows SET events_base = coalesce((SELECT "
		"min(off) FROM events WHERE wf = ?1), events_size) WHERE id = ?1",
	[S_KEY_EXPIRED] = "SELECT " KEY_COLS " FROM keys INDEXED BY keys_by_expiry "
		"WHERE status = 1 AND expires_ms <= ?1 LIMIT ?2",
	/* Per workflow, on keys_by_age (wf, mtime_ns): never a scan. */
	[S_KEY_RETIRED] = "SELECT " KEY_COLS " FROM keys INDEXED BY keys_by_age "
		"WHERE wf = ?1 AND status != 1 AND mtime_ns < ?2 LIMIT ?3",
	[S_SWEEP_WFS] = "SELECT id, retention FROM workflows WHERE id > ?1 "
		"ORDER BY id LIMIT ?2",
	[S_EVENT_OLDEST] = "SELECT off, time_ms FROM events WHERE wf = ?1 "
		"ORDER BY off LIMIT ?2",
	[S_EVENT_CUT] = "DELETE FROM events WHERE wf = ?1 AND off < ?2",
	[S_EVENT_LIST] = "SELECT time_ms, line FROM events WHERE wf = ?1 AND "
		"time_ms >= ?2 ORDER BY off",
	[S_EVENT_READ] = "SELECT off, line FROM events WHERE wf = ?1 AND off >= "
		"coalesce((SELECT max(off) FROM events WHERE wf = ?1 AND off <= ?2), 0) "
		"ORDER BY off",
};

/*
 * Content versions (see store.h): a version's bytes in STORE_CHUNK pieces
 * (chunks), its size and whether any row still names it (contents), and
 * the pins of the mounts whose open files read it (pins).
 */
#define CONTENT_TABLES \
	"CREATE TABLE contents(" \
	"  id INTEGER PRIMARY KEY AUTOINCREMENT," \
	"  size INTEGER NOT NULL," \
	"  dead INTEGER NOT NULL);" \
	"CREATE INDEX contents_dead ON contents(id) WHERE dead = 1;" \
	"CREATE TABLE pins(" \
	"  content INTEGER NOT NULL," \
	"  mount INTEGER NOT NULL," \
	"  expires_ms INTEGER NOT NULL," \
	"  PRIMARY KEY(content, mount)) WITHOUT ROWID;"
/*
 * The runs that hold a workflow's input (step_hold_input): a row per
 * holding open file, leased by its mount like a pin.
 */
#define HOLDS_TABLE \
	"CREATE TABLE holds(" \
	"  id INTEGER PRIMARY KEY," \
	"  wf INTEGER NOT NULL," \
	"  mount INTEGER NOT NULL," \
	"  expires_ms INTEGER NOT NULL);" \
	"CREATE INDEX holds_by_workflow ON holds(wf, expires_ms);" \
	"CREATE INDEX holds_by_mount ON holds(mount);"
/* The purge finds workflows with old checkpoints without a scan. */
#define WF_TO_PURGE \
	"CREATE INDEX workflows_to_purge ON workflows(id) " \
	"WHERE purged_epoch < epoch;"

static const char schema[] =
	"CREATE TABLE sequence("
	"  name TEXT PRIMARY KEY,"
	"  value INTEGER NOT NULL) WITHOUT ROWID;"
	"INSERT INTO sequence VALUES('generation', 0);"
	"CREATE TABLE workflows("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  name BLOB NOT NULL UNIQUE,"
	"  uid INTEGER NOT NULL, gid INTEGER NOT NULL, mode INTEGER NOT NULL,"
	"  ctime_ns INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
	"  on_input_change INTEGER NOT NULL, dedup_on INTEGER NOT NULL,"
	"  in_flight_ttl INTEGER NOT NULL, retention INTEGER NOT NULL,"
	"  fingerprint BLOB, epoch INTEGER NOT NULL,"
	"  events_size INTEGER NOT NULL,"
	"  events_base INTEGER NOT NULL DEFAULT 0,"
	"  purged_epoch INTEGER NOT NULL DEFAULT 0);"
	WF_TO_PURGE
	"CREATE TABLE keys("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  wf INTEGER NOT NULL,"
	"  name BLOB NOT NULL,"
	"  status INTEGER NOT NULL,"
	"  generation INTEGER NOT NULL UNIQUE,"
	"  attempt INTEGER NOT NULL,"
	"  expires_ms INTEGER NOT NULL,"
	"  mtime_ns INTEGER NOT NULL,"
	"  holder_pid INTEGER NOT NULL, holder_uid INTEGER NOT NULL,"
	"  content INTEGER NOT NULL DEFAULT 0,"
	"  result_len INTEGER NOT NULL DEFAULT 0,"
	"  previous INTEGER NOT NULL DEFAULT 0,"
	"  request BLOB,"
	"  original BLOB,"
	"  UNIQUE(wf, name));"
	"CREATE INDEX keys_by_workflow ON keys(wf, id);"
	/*
	 * The sweep's two questions, whose lease ran out and who is old, each
	 * on a partial index: a row is in one of them, so a claim writes one.
	 */
	"CREATE INDEX keys_by_expiry ON keys(expires_ms) WHERE status = 1;"
	"CREATE INDEX keys_by_age ON keys(wf, mtime_ns) WHERE status != 1;"
	"CREATE TABLE steps("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  wf INTEGER NOT NULL,"
	"  epoch INTEGER NOT NULL,"
	"  name BLOB NOT NULL,"
	"  size INTEGER NOT NULL,"
	"  mtime_ns INTEGER NOT NULL,"
	"  content INTEGER NOT NULL DEFAULT 0,"
	"  atime_ns INTEGER NOT NULL DEFAULT 0,"
	"  UNIQUE(wf, epoch, name));"
	"CREATE INDEX steps_by_workflow ON steps(wf, epoch, id);"
	"CREATE TABLE chunks("
	"  id INTEGER PRIMARY KEY,"
	"  content INTEGER NOT NULL,"
	"  seq INTEGER NOT NULL,"
	"  data BLOB NOT NULL,"
	"  UNIQUE(content, seq));"
	CONTENT_TABLES
	/* A workflow's log: its lines by their offset in the events file. */
	"CREATE TABLE events("
	"  wf INTEGER NOT NULL,"
	"  off INTEGER NOT NULL,"
	"  time_ms INTEGER NOT NULL,"
	"  line TEXT NOT NULL,"
	"  PRIMARY KEY(wf, off)) WITHOUT ROWID;"
	HOLDS_TABLE;

struct pin;

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
	 * Pins of content versions (store_pin), sorted by content, and this
	 * mount's id in the pins table.  pin_lock is taken before st->lock.
	 */
	pthread_mutex_t pin_lock;
	struct pin *pins;
	size_t npins, pins_cap;
	int64_t pins_renew_ms;		/* when the pins' leases are renewed */
	int64_t mount_id;
	size_t nholds;			/* this mount's holds (store_hold) */
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
	 * by a checkpoint, which synced them.
	 */
	int wal_fd;			/* the -wal file, for fdatasync */
	pthread_mutex_t sync_lock;
	pthread_cond_t sync_cond;
	uint64_t committed;		/* commits written (under st->lock) */
	uint64_t synced;		/* of them, made durable */
	bool syncing;			/* a waiter is in fdatasync() */
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


/* The operations of the table at the end of this file (store.h says what
 * each does). */
static int sq_open(const char *path, const struct store_options *opt,
		   struct store_impl **out, char *err, size_t errlen);
static void sq_close(struct store_impl *st);
static int sq_changed(struct store_impl *st, int64_t *seen);
static void sq_get_stats(struct store_impl *st, struct store_stats *out);
static const char *sq_problem(struct store_impl *st, char *buf, size_t size);
static int sq_checkpoint(struct store_impl *st);
static void sq_on_wal_growth(struct store_impl *st, void (*fn)(void *arg),
			     void *arg);
static int sq_begin(struct store_impl *st, bool write);
static int sq_commit(struct store_impl *st);
static void sq_rollback(struct store_impl *st);
static int sq_next_generation(struct store_impl *st, int64_t *out);
static int sq_wf_by_name(struct store_impl *st, const char *name, size_t len,
			 struct wf_row *out);
static int sq_wf_by_id(struct store_impl *st, int64_t id, struct wf_row *out);
static int sq_wf_insert(struct store_impl *st, struct wf_row *row);
static int sq_wf_update(struct store_impl *st, const struct wf_row *row);
static int sq_wf_delete(struct store_impl *st, int64_t id);
static int sq_wf_list(struct store_impl *st, int64_t after, struct wf_row *rows,
		      int max, int *n);
static int sq_key_get(struct store_impl *st, int64_t wf, const char *name,
		      size_t len, struct key_row *out);
static int sq_key_by_generation(struct store_impl *st, int64_t generation,
				struct key_row *out);
static int sq_key_result(struct store_impl *st, const struct key_row *k,
			 char **buf, size_t *len);
static int sq_key_insert(struct store_impl *st, struct key_row *row);
static int sq_key_update(struct store_impl *st, const struct key_row *row);
static int sq_key_set_result(struct store_impl *st, struct key_row *k,
			     const char *buf, size_t len);
static int sq_key_delete(struct store_impl *st, int64_t id);
static int sq_key_note(struct store_impl *st, int64_t id, enum key_note which,
		       char *buf, size_t *len);
static int sq_key_set_note(struct store_impl *st, int64_t id,
			   enum key_note which, const char *buf, size_t len);
static int sq_key_clear_notes(struct store_impl *st, int64_t id);
static int sq_key_list(struct store_impl *st, int64_t wf, int64_t after,
		       int64_t now_ms, struct key_row *rows, int max, int *n);
static int sq_key_any(struct store_impl *st, int64_t wf, int64_t now_ms,
		      bool *any);
static int sq_step_get(struct store_impl *st, int64_t wf, int64_t epoch,
		       const char *name, size_t len, struct step_row *out);
static int sq_step_by_id(struct store_impl *st, int64_t id,
			 struct step_row *out);
static int sq_step_any(struct store_impl *st, int64_t wf, int64_t epoch,
		       bool *any);
static int sq_step_list(struct store_impl *st, int64_t wf, int64_t epoch,
			int64_t after, struct step_row *rows, int max, int *n);
static int sq_step_insert(struct store_impl *st, struct step_row *row);
static int sq_step_update(struct store_impl *st, const struct step_row *row);
static int sq_step_delete(struct store_impl *st, int64_t id);
static int sq_step_set_content(struct store_impl *st, struct step_row *r,
			       int64_t content, int64_t size, int64_t mtime_ns);
static int sq_pin(struct store_impl *st, int64_t content, int64_t now_ms);
static void sq_unpin(struct store_impl *st, int64_t content);
static int sq_pins_renew(struct store_impl *st, int64_t now_ms);
static int sq_content_read(struct store_impl *st, int64_t content, int64_t size,
			   int64_t off, char *buf, size_t len, size_t *got);
static int sq_content_stage(struct store_impl *st, int fd, int64_t size,
			    int64_t now_ms, int64_t *content);
static int sq_purge(struct store_impl *st, int64_t now_ms, int max, int64_t *n);
static int sq_hold(struct store_impl *st, int64_t wf, int64_t expires_ms,
		   int64_t *id);
static int sq_unhold(struct store_impl *st, int64_t id);
static int sq_hold_any(struct store_impl *st, int64_t wf, int64_t now_ms,
		       bool *any);
static int sq_holds_renew(struct store_impl *st, int64_t now_ms,
			  int64_t lease_ms);
static int sq_event_append(struct store_impl *st, int64_t wf,
			   const struct event *ev);
static int sq_event_read(struct store_impl *st, int64_t wf, int64_t offset,
			 char *buf, size_t size, size_t *got);
static int sq_event_list(struct store_impl *st, int64_t wf, int64_t since_ms,
			 int (*fn)(void *arg, const struct event_view *ev),
			 void *arg);
static int sq_check(struct store_impl *st,
		    const struct store_check_calls *calls, int64_t *problems);
static int sq_key_expired(struct store_impl *st, int64_t now_ms,
			  struct key_row *rows, int max, int *n);
static int sq_key_retired(struct store_impl *st, int64_t now_ms,
			  struct key_row *rows, int max, int *n, bool *more);
static int sq_event_trim(struct store_impl *st, int64_t now_ms, int max,
			 int64_t *n, bool *more);

/* Map a SQLite result code to -errno, logging what is not the user's. */
static int sql_error(struct store_impl *st, int rc, const char *what)
{
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EAGAIN;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_NOMEM:
		return -ENOMEM;
	default:
		syslog(LOG_ERR, "oncefs: %s: %s", what, sqlite3_errmsg(st->main.db));
		return -EIO;
	}
}

/* The prepared statement for id, reset and with bindings cleared. */
static sqlite3_stmt *stmt(struct store_impl *st, enum stmt_id id)
{
	struct conn *c = &st->main;
	sqlite3_stmt *s = c->stmts[id];

	if (!s) {
		if (sqlite3_prepare_v3(c->db, sql[id], -1,
				       SQLITE_PREPARE_PERSISTENT, &s, NULL)) {
			syslog(LOG_ERR, "oncefs: prepare: %s",
			       sqlite3_errmsg(c->db));
			return NULL;
		}
		c->stmts[id] = s;
	}
	return s;
}

static void done(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

/* Step a statement that returns no row; reset it. */
static int exec_stmt(struct store_impl *st, sqlite3_stmt *s, const char *what)
{
	int rc = sqlite3_step(s);

	done(s);
	if (rc == SQLITE_DONE || rc == SQLITE_ROW)
		return 0;
	return sql_error(st, rc, what);
}

static int by_id(struct store_impl *st, enum stmt_id id, int64_t value,
		 const char *what);
static int commit_lazy(struct store_impl *st);
static int new_content(struct store_impl *st, int64_t size, bool dead,
		       int64_t *id);
static int put_chunks(struct store_impl *st, int64_t content, int64_t first_seq,
		      const char *buf, size_t len);
static void reader_conn_close(struct reader_conn *rc);
static int exists(struct store_impl *st, sqlite3_stmt *s, bool *any);

static void bind_blob(sqlite3_stmt *s, int i, const void *p, size_t len)
{
	sqlite3_bind_blob64(s, i, p, len, SQLITE_TRANSIENT);
}

/*
 * Nothing read from the file is trusted: a store may have been edited by
 * hand or by another program.  A value out of its range makes the row
 * unusable (-EIO), with the reason logged and kept for sq_problem().
 */
static int bad_row(struct store_impl *st, const char *table, int64_t id,
		   const char *what, int64_t value)
{
	pthread_mutex_lock(&st->problem_lock);
	snprintf(st->problem, sizeof(st->problem), "%s row %lld: %s %lld is "
		 "out of range (the store was changed by something other than "
		 "oncefs)", table, (long long)id, what, (long long)value);
	syslog(LOG_ERR, "oncefs: %s: %s", st->path, st->problem);
	pthread_mutex_unlock(&st->problem_lock);
	return -EIO;
}

static const char *sq_problem(struct store_impl *st, char *buf, size_t size)
{
	pthread_mutex_lock(&st->problem_lock);
	snprintf(buf, size, "%s", st->problem);
	pthread_mutex_unlock(&st->problem_lock);
	return buf;
}

/* A name column: 1..NAME_MAX_LEN bytes, no '/' and no NUL. */
static int copy_name(struct store_impl *st, const char *table, int64_t id,
		     sqlite3_stmt *s, int col, char *dst, size_t *len)
{
	size_t n = (size_t)sqlite3_column_bytes(s, col);
	const char *p = sqlite3_column_blob(s, col);

	if (n == 0 || n > NAME_MAX_LEN || !p)
		return bad_row(st, table, id, "name length", (int64_t)n);
	if (memchr(p, '/', n) || memchr(p, '\0', n))
		return bad_row(st, table, id, "name with '/' or NUL, length",
			       (int64_t)n);
	memcpy(dst, p, n);
	dst[n] = '\0';
	*len = n;
	return 0;
}

/* An integer column that must lie in [lo, hi]. */
static int column_in(struct store_impl *st, const char *table, int64_t id,
		     sqlite3_stmt *s, int col, const char *what, int64_t lo,
		     int64_t hi, int64_t *out)
{
	int64_t v = sqlite3_column_int64(s, col);

	if (sqlite3_column_type(s, col) != SQLITE_INTEGER || v < lo || v > hi)
		return bad_row(st, table, id, what, v);
	*out = v;
	return 0;
}

/* ---- opening ---------------------------------------------------------- */

static int pragma_int(sqlite3 *db, const char *pragma, int64_t *out)
{
	sqlite3_stmt *s;
	int rc = sqlite3_prepare_v2(db, pragma, -1, &s, NULL);

	if (rc)
		return rc;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(s, 0);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(s);
	return rc;
}

/*
 * The end of a schema transaction (create, upgrade): set the schema
 * version (and what else pragmas says), commit; on any failure so far
 * (rc), roll back and say what could not be done.
 */
static int finish_schema(sqlite3 *db, int rc, const char *pragmas,
			 const char *what, char *err, size_t errlen)
{
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, pragmas, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "cannot %s: %s", what, sqlite3_errmsg(db));
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return -EIO;
	}
	return 0;
}

static int create_schema(sqlite3 *db, char *err, size_t errlen)
{
	char pragmas[128];
	int64_t tables = -1;
	int rc;

	rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = pragma_int(db, "SELECT count(*) FROM sqlite_schema", &tables);
	if (rc == SQLITE_OK && tables != 0) {
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		snprintf(err, errlen, "not an oncefs store (it holds other tables)");
		return -EINVAL;
	}
	snprintf(pragmas, sizeof(pragmas),
		 "PRAGMA application_id = %d; PRAGMA user_version = %d;",
		 ONCE_APPLICATION_ID, STORE_SCHEMA_VERSION);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, schema, NULL, NULL, NULL);
	return finish_schema(db, rc, pragmas, "create the store", err, errlen);
}

/* One query per table and index, each reading its first page. */
static const char *const probes[] = {
	"SELECT count(*) FROM sequence",
	"SELECT count(*) FROM (SELECT * FROM workflows NOT INDEXED LIMIT 1)",
	"SELECT count(*) FROM (SELECT name FROM workflows ORDER BY name LIMIT 1)",
	"SELECT count(*) FROM (SELECT * FROM keys NOT INDEXED LIMIT 1)",
	"SELECT count(*) FROM (SELECT 1 FROM keys INDEXED BY keys_by_workflow "
	"WHERE wf > -1 LIMIT 1)",
	"SELECT count(*) FROM (SELECT generation FROM keys ORDER BY generation "
	"LIMIT 1)",
	"SELECT count(*) FROM (SELECT wf, name FROM keys ORDER BY wf, name LIMIT 1)",
	"SELECT count(*) FROM (SELECT * FROM steps NOT INDEXED LIMIT 1)",
	"SELECT count(*) FROM (SELECT 1 FROM steps INDEXED BY steps_by_workflow "
	"WHERE wf > -1 LIMIT 1)",
	"SELECT count(*) FROM (SELECT * FROM chunks NOT INDEXED LIMIT 1)",
	"SELECT count(*) FROM (SELECT * FROM events LIMIT 1)",
	"SELECT count(*) FROM (SELECT 1 FROM keys INDEXED BY keys_by_expiry "
	"WHERE status = 1 LIMIT 1)",
	"SELECT count(*) FROM (SELECT 1 FROM keys INDEXED BY keys_by_age "
	"WHERE status != 1 LIMIT 1)",
};

/* ... and those of schema 2. */
static const char *const probes_v2[] = {
	"SELECT count(*) FROM (SELECT * FROM contents NOT INDEXED LIMIT 1)",
	"SELECT count(*) FROM (SELECT 1 FROM contents INDEXED BY contents_dead "
	"WHERE dead = 1 LIMIT 1)",
	"SELECT count(*) FROM (SELECT * FROM pins LIMIT 1)",
	"SELECT count(*) FROM (SELECT content, seq FROM chunks ORDER BY content, "
	"seq LIMIT 1)",
	"SELECT count(*) FROM (SELECT 1 FROM workflows INDEXED BY "
	"workflows_to_purge WHERE purged_epoch < epoch LIMIT 1)",
	"SELECT count(*) FROM (SELECT content, result_len FROM keys LIMIT 1)",
	"SELECT count(*) FROM (SELECT content, atime_ns FROM steps LIMIT 1)",
};

/* ... and those of schema 3. */
static const char *const probes_v3[] = {
	"SELECT count(*) FROM (SELECT previous, request, original FROM keys "
	"LIMIT 1)",
	"SELECT count(*) FROM (SELECT * FROM holds NOT INDEXED LIMIT 1)",
	"SELECT count(*) FROM (SELECT 1 FROM holds INDEXED BY holds_by_workflow "
	"WHERE wf > -1 LIMIT 1)",
	"SELECT count(*) FROM (SELECT 1 FROM holds INDEXED BY holds_by_mount "
	"WHERE mount > -1 LIMIT 1)",
};

/* Run each probe; the first that fails says the store is corrupt. */
static int run_probes(sqlite3 *db, const char *const *list, size_t n,
		      char *err, size_t errlen)
{
	int64_t count;

	for (size_t i = 0; i < n; i++) {
		if (pragma_int(db, list[i], &count) != SQLITE_OK) {
			snprintf(err, errlen, "the store is corrupt: %s",
				 sqlite3_errmsg(db));
			return -EIO;
		}
	}
	return 0;
}

/* Is this an oncefs store we can use?  Reads only. */
static int check_store(sqlite3 *db, bool *empty, bool *old_version,
		       int64_t *from_version, char *err, size_t errlen)
{
	int64_t app = 0, version = 0, tables = 0;
	int rc;

	rc = pragma_int(db, "PRAGMA application_id", &app);
	if (rc == SQLITE_OK)
		rc = pragma_int(db, "PRAGMA user_version", &version);
	if (rc == SQLITE_OK)
		rc = pragma_int(db, "SELECT count(*) FROM sqlite_schema", &tables);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "not an oncefs store, or corrupt: %s",
			 sqlite3_errstr(rc));
		return -EINVAL;
	}
	*old_version = false;
	*empty = app == 0 && version == 0 && tables == 0;
	if (*empty)
		return 0;
	if (app != ONCE_APPLICATION_ID) {
		snprintf(err, errlen, "not an oncefs store (a SQLite database "
			 "of another application)");
		return -EINVAL;
	}
	if (version > STORE_SCHEMA_VERSION) {
		snprintf(err, errlen, "the store has schema version %lld, newer "
			 "than this oncefs (%d): upgrade oncefs",
			 (long long)version, STORE_SCHEMA_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (version < 1) {
		snprintf(err, errlen, "not an oncefs store (no schema version)");
		return -EINVAL;
	}
	/*
	 * Read the schema and the first page of every table and index now,
	 * so that a damaged store is refused at mount rather than failing
	 * later (a full check is `PRAGMA integrity_check`, too slow here).
	 */
	rc = run_probes(db, probes, sizeof(probes) / sizeof(probes[0]), err,
			errlen);
	if (rc == 0 && version >= 2)
		rc = run_probes(db, probes_v2,
				sizeof(probes_v2) / sizeof(probes_v2[0]), err,
				errlen);
	if (rc == 0 && version >= 3)
		rc = run_probes(db, probes_v3,
				sizeof(probes_v3) / sizeof(probes_v3[0]), err,
				errlen);
	if (rc)
		return rc;
	*old_version = version < STORE_SCHEMA_VERSION;
	*from_version = version;
	return 0;
}

static void close_conn(struct conn *c)
{
	for (int i = 0; i < S_NSTMTS; i++)
		sqlite3_finalize(c->stmts[i]);
	sqlite3_close(c->db);
}

/* Can we write the store and create files beside it? */
static bool writable(const char *path, bool exists)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');

	if (exists && access(path, W_OK) != 0)
		return false;
	if (!slash)
		return access(".", W_OK) == 0;
	snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	return access(dir[0] ? dir : "/", W_OK) == 0;
}

/*
 * Before the first connection: connections are never shared between
 * threads without our own lock, so SQLite's per-connection mutexes can go,
 * and so can the global one it takes around every allocation to count it.
 */
static void configure_sqlite(void)
{
	sqlite3_config(SQLITE_CONFIG_MULTITHREAD);
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	sqlite3_initialize();
}

/*
 * Waiting for a lock another connection holds (another process's write,
 * the background's checkpoint reading the WAL): retry every 200 us up to
 * the busy timeout.  SQLite's own handler sleeps 1, 2, 5 ... 100 ms
 * between tries, which made a claim wait tens of milliseconds for a
 * checkpoint that let go of the WAL long before.
 */
static int busy_wait(void *arg, int tries)
{
	struct store_impl *st = arg;
	struct timespec now;
	int64_t ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	if (tries == 0)
		st->busy_since_ms = ms;	/* the main connection: under st->lock */
	if (st->busy_nowait || ms - st->busy_since_ms >= st->busy_timeout_ms)
		return 0;
	nanosleep(&(struct timespec){ .tv_nsec = 200000 }, NULL);
	return 1;
}

/* SQLite's unix locking bytes (os_unix.c): SHARED is 510 from +2. */
#define SQLITE_SHARED_FIRST 0x40000002
#define SQLITE_SHARED_SIZE 510

/* Does the file's header say WAL mode (bytes 18 and 19 are 2)? */
static bool wal_header(const char *path)
{
	unsigned char h[100];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, h, sizeof(h)) : -1;

	if (fd >= 0)
		close(fd);
	return n == (ssize_t)sizeof(h) && memcmp(h, "SQLite format 3", 16) == 0 &&
	       h[18] == 2 && h[19] == 2;
}

static bool exists_beside(const char *path, const char *suffix)
{
	char side[PATH_MAX];

	snprintf(side, sizeof(side), "%s%s", path, suffix);
	return access(side, F_OK) == 0;
}

/*
 * A read-only open of a WAL store that nobody has open (no -shm) would
 * make SQLite create -shm and -wal beside it, or fail in a directory it
 * cannot write.  Instead: open it immutable, under an OFD read lock on
 * SQLite's SHARED bytes.  A writer that starts meanwhile cannot take the
 * EXCLUSIVE lock it needs to remove its -wal at close, so "no -wal at the
 * end of a read" proves that nobody wrote the file during it
 * (read_still_valid()).  Creates nothing, writes nothing.
 */
static int open_untouched(struct store_impl *st, char *err, size_t errlen)
{
	struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET,
			    .l_start = SQLITE_SHARED_FIRST,
			    .l_len = SQLITE_SHARED_SIZE };
	size_t n = strlen(st->path);
	char *uri = malloc(3 * n + 32), *o;

	if (!uri)
		return -ENOMEM;
	o = uri + sprintf(uri, "file:");
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)st->path[i];

		if (ch == '%' || ch == '?' || ch == '#' || ch < 0x21 || ch >= 0x7f)
			o += sprintf(o, "%%%02x", ch);
		else
			*o++ = (char)ch;
	}
	sprintf(o, "?immutable=1");
	st->shared_fd = open(st->path, O_RDONLY | O_CLOEXEC);
	if (st->shared_fd < 0 || fcntl(st->shared_fd, F_OFD_SETLK, &fl) < 0) {
		snprintf(err, errlen, "cannot lock %s for reading: %s", st->path,
			 strerror(errno));
		free(uri);
		return -EAGAIN;
	}
	if (exists_beside(st->path, "-wal")) {
		snprintf(err, errlen, "%s is being written (its -wal exists, its "
			 "-shm does not): try again", st->path);
		free(uri);
		return -EAGAIN;
	}
	st->open_name = uri;
	st->open_flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_URI |
			 SQLITE_OPEN_NOMUTEX;
	return 0;
}

/* After a read of an untouched store: did a writer begin meanwhile? */
static bool read_still_valid(struct store_impl *st)
{
	return st->shared_fd < 0 || !exists_beside(st->path, "-wal");
}

/*
 * Keep the -wal file open for group commit's fdatasync, and make its
 * directory entry durable once: synchronous=NORMAL never syncs the
 * directory, so after a power cut the WAL, and every commit in it, could
 * be gone although each was synced.
 */
static int open_wal(struct store_impl *st, char *err, size_t errlen)
{
	char path[PATH_MAX];
	const char *slash = strrchr(st->path, '/');
	int64_t dummy;
	int dir;

	/* The WAL exists once a transaction has read the database. */
	if (pragma_int(st->main.db, "SELECT count(*) FROM sequence", &dummy)) {
		snprintf(err, errlen, "cannot read %s: %s", st->path,
			 sqlite3_errmsg(st->main.db));
		return -EIO;
	}
	if (snprintf(path, sizeof(path), "%s-wal", st->path) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	st->wal_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (st->wal_fd < 0) {
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return -EIO;
	}
	if (slash)
		snprintf(path, sizeof(path), "%.*s", (int)(slash - st->path),
			 st->path);
	else
		snprintf(path, sizeof(path), ".");
	dir = open(path[0] ? path : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0 || fdatasync(st->wal_fd) != 0 || fsync(dir) != 0) {
		snprintf(err, errlen, "cannot sync %s-wal and its directory: %s",
			 st->path, strerror(errno));
		if (dir >= 0)
			close(dir);
		return -EIO;
	}
	close(dir);
	return 0;
}

/*
 * Schema 1 kept a checkpoint's chunks by step and a key's result in the
 * key row.  Schema 2 keeps both as content versions: each step's chunks
 * become the version of the same id, each result a version of its own.
 * One transaction: a crash leaves schema 1 as it was.
 */
static int upgrade_v1(struct store_impl *st, char *err, size_t errlen)
{
	static const char ddl[] =
		"ALTER TABLE workflows ADD COLUMN purged_epoch INTEGER NOT NULL "
		"DEFAULT 0;"
		"ALTER TABLE keys ADD COLUMN content INTEGER NOT NULL DEFAULT 0;"
		"ALTER TABLE keys ADD COLUMN result_len INTEGER NOT NULL DEFAULT 0;"
		"ALTER TABLE steps ADD COLUMN content INTEGER NOT NULL DEFAULT 0;"
		"ALTER TABLE steps ADD COLUMN atime_ns INTEGER NOT NULL DEFAULT 0;"
		"ALTER TABLE chunks RENAME COLUMN step TO content;"
		"DROP INDEX keys_by_age;"
		"CREATE INDEX keys_by_age ON keys(wf, mtime_ns) WHERE status != 1;"
		CONTENT_TABLES
		WF_TO_PURGE
		"INSERT INTO contents(id, size, dead) SELECT id, size, 0 FROM steps "
		"WHERE size > 0;"
		"UPDATE steps SET content = id WHERE size > 0;"
		/* Checkpoints of old epochs: the purge finds them again. */
		"UPDATE workflows SET purged_epoch = 0;";
	sqlite3 *db = st->main.db;
	sqlite3_stmt *sel = NULL;
	int rc;

	rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, ddl, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "SELECT id, result FROM keys WHERE "
					"length(result) > 0", -1, &sel, NULL);
	while (rc == SQLITE_OK && (rc = sqlite3_step(sel)) == SQLITE_ROW) {
		struct key_row k = { .id = sqlite3_column_int64(sel, 0) };
		const char *res = sqlite3_column_blob(sel, 1);
		size_t len = (size_t)sqlite3_column_bytes(sel, 1);

		rc = sq_key_set_result(st, &k, res, len) ? SQLITE_ERROR
							    : SQLITE_OK;
	}
	sqlite3_finalize(sel);
	if (rc == SQLITE_DONE)
		rc = sqlite3_exec(db, "UPDATE keys SET result = NULL", NULL, NULL,
				  NULL);
	return finish_schema(db, rc, "PRAGMA user_version = 2",
			     "upgrade the store from schema 1", err, errlen);
}

/*
 * Schema 3 keeps with a key the generation it took over (previous) and
 * what its claimant noted (request, original), and the holds of inputs.
 */
static int upgrade_v2(struct store_impl *st, char *err, size_t errlen)
{
	static const char ddl[] =
		"ALTER TABLE keys ADD COLUMN previous INTEGER NOT NULL DEFAULT 0;"
		"ALTER TABLE keys ADD COLUMN request BLOB;"
		"ALTER TABLE keys ADD COLUMN original BLOB;"
		HOLDS_TABLE;
	sqlite3 *db = st->main.db;
	int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, ddl, NULL, NULL, NULL);
	return finish_schema(db, rc, "PRAGMA user_version = 3",
			     "upgrade the store from schema 2", err, errlen);
}

/* Each step in a transaction of its own: a crash leaves a usable schema. */
static int upgrade(struct store_impl *st, int64_t from, char *err,
		   size_t errlen)
{
	int rc = 0;

	if (from < 2)
		rc = upgrade_v1(st, err, errlen);
	if (rc == 0 && from < 3)
		rc = upgrade_v2(st, err, errlen);
	return rc;
}

/*
 * A mount refuses a store with a workflow it cannot trust, rather than
 * failing on it later (keys and checkpoints are checked as they are read).
 */
static int check_workflows(struct store_impl *st, char *err, size_t errlen)
{
	struct wf_row rows[16];
	int64_t after = 0;
	int n, rc;

	do {
		rc = sq_begin(st, false);
		if (rc == 0) {
			rc = sq_wf_list(st, after, rows, 16, &n);
			sq_rollback(st);
		}
		if (rc == -EIO) {
			snprintf(err, errlen, "the store is corrupt: %s",
				 sq_problem(st, (char[256]){ 0 }, 256));
			return rc;
		}
		if (rc) {
			snprintf(err, errlen, "cannot read the workflows: %s",
				 strerror(-rc));
			return rc;
		}
		if (n)
			after = rows[n - 1].id;
	} while (n == 16);
	return 0;
}

/* SQLite's own syncs, for every connection that writes the store. */
static const char *const sync_pragma[] = {
	/* FULL's WAL fsyncs are ours: group commit, see sq_commit(). */
	[STORE_SYNC_FULL] = "PRAGMA synchronous = NORMAL",
	[STORE_SYNC_NORMAL] = "PRAGMA synchronous = NORMAL",
	[STORE_SYNC_OFF] = "PRAGMA synchronous = OFF",
};

static int sq_open(const char *path, const struct store_options *opt,
		   struct store_impl **out, char *err, size_t errlen)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	struct store_impl *st = NULL;
	struct stat sb;
	bool exists, empty = false, old_version = false;
	int64_t from_version = STORE_SCHEMA_VERSION;
	int flags, rc;

	*out = NULL;
	pthread_once(&once, configure_sqlite);
	exists = stat(path, &sb) == 0;
	if (!exists && !opt->create) {
		snprintf(err, errlen, "no store at %s (mount with -o create, or "
			 "run 'oncectl init', to create one)", path);
		return -ENOENT;
	}
	if (exists && !S_ISREG(sb.st_mode)) {
		snprintf(err, errlen, "%s is not a regular file", path);
		return -EINVAL;
	}
	if (!opt->read_only && !writable(path, exists)) {
		snprintf(err, errlen, "%s is read-only, or in a read-only "
			 "directory: oncefs writes the store and its -wal and "
			 "-shm files beside it (inspect it with oncectl)", path);
		return -EROFS;
	}
	if (exists && sb.st_size == 0 && !opt->create) {
		snprintf(err, errlen, "%s is an empty file, not an oncefs store",
			 path);
		return -EINVAL;
	}

	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->path = strdup(path);
	if (!st->path) {
		free(st);
		return -ENOMEM;
	}
	st->busy_timeout_ms = opt->busy_timeout_ms;
	st->wal_fd = -1;
	st->shared_fd = -1;
	pthread_mutex_init(&st->sync_lock, NULL);
	pthread_cond_init(&st->sync_cond, NULL);
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->pool_lock, NULL);
	pthread_mutex_init(&st->problem_lock, NULL);
	pthread_mutex_init(&st->pin_lock, NULL);
	/* A random mount id names this process's pins for other mounts. */
	if (getrandom(&st->mount_id, sizeof(st->mount_id), 0) !=
	    (ssize_t)sizeof(st->mount_id))
		st->mount_id = (int64_t)getpid() << 20 ^ (int64_t)time(NULL);
	st->mount_id &= INT64_MAX;
	st->sync = opt->read_only ? STORE_SYNC_OFF : opt->sync;
	st->read_only = opt->read_only;

	flags = SQLITE_OPEN_NOMUTEX;
	if (opt->read_only)
		flags |= SQLITE_OPEN_READONLY;
	else
		flags |= SQLITE_OPEN_READWRITE | (opt->create ? SQLITE_OPEN_CREATE : 0);
	st->open_flags = flags;
	if (opt->read_only && exists && wal_header(path) &&
	    !exists_beside(path, "-shm")) {
		rc = open_untouched(st, err, errlen);
		if (rc)
			goto out_close;
	}
	rc = sqlite3_open_v2(st->open_name ? st->open_name : path,
			     &st->main.db, st->open_flags, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "cannot open %s: %s", path,
			 st->main.db ? sqlite3_errmsg(st->main.db) : sqlite3_errstr(rc));
		rc = -EIO;
		goto out_close;
	}
	sqlite3_extended_result_codes(st->main.db, 0);
	sqlite3_busy_handler(st->main.db, busy_wait, st);

	rc = check_store(st->main.db, &empty, &old_version, &from_version, err,
			 errlen);
	if (rc)
		goto out_close;
	if (old_version && opt->read_only) {
		snprintf(err, errlen, "the store has schema version 1: mount it "
			 "once with this oncefs to upgrade it");
		rc = -EPROTONOSUPPORT;
		goto out_close;
	}
	if (!opt->read_only && sqlite3_db_readonly(st->main.db, "main") == 1) {
		snprintf(err, errlen, "%s is read-only (mount a writable copy, "
			 "or inspect it with oncectl)", path);
		rc = -EROFS;
		goto out_close;
	}
	if (empty) {
		if (!opt->create) {
			snprintf(err, errlen, "%s is not an oncefs store", path);
			rc = -EINVAL;
			goto out_close;
		}
		rc = create_schema(st->main.db, err, errlen);
		if (rc)
			goto out_close;
	}
	if (!opt->read_only) {
		int64_t dummy;

		rc = sqlite3_exec(st->main.db, "PRAGMA journal_mode = WAL", NULL, NULL,
				  NULL);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(st->main.db, sync_pragma[opt->sync], NULL,
					  NULL, NULL);
		if (rc == SQLITE_OK)
			/*
			 * No checkpoint inside a commit: it would hold the
			 * store's lock while it copies the WAL.  The background
			 * runs sq_checkpoint() on a connection of its own.
			 */
			rc = pragma_int(st->main.db, "PRAGMA wal_autocheckpoint = 0",
					&dummy);
		/*
		 * Deleting must not need room: with secure_delete (on in some
		 * builds) every freed page would be rewritten into the WAL,
		 * so that rm of a big checkpoint on a full disk failed.
		 */
		if (rc == SQLITE_OK)
			rc = pragma_int(st->main.db, "PRAGMA secure_delete = OFF",
					&dummy);
		/*
		 * A commit never shrinks the WAL: freeing a file's blocks can
		 * wait for the file system's journal (measured at 40-120 ms
		 * on ext4), and a commit holds the store's lock.  The WAL is
		 * given back when the mount is idle: see sq_checkpoint().
		 */
		if (rc == SQLITE_OK)
			rc = pragma_int(st->main.db, "PRAGMA journal_size_limit = -1",
					&dummy);
		if (rc != SQLITE_OK) {
			snprintf(err, errlen, "cannot set up %s: %s", path,
				 sqlite3_errmsg(st->main.db));
			rc = -EIO;
			goto out_close;
		}
		rc = open_wal(st, err, errlen);
		if (rc == 0 && old_version)
			rc = upgrade(st, from_version, err, errlen);
		if (rc)
			goto out_close;
		rc = check_workflows(st, err, errlen);
		if (rc)
			goto out_close;
	}
	*out = st;
	return 0;

out_close:
	/* The checks may have prepared statements: finalize them too. */
	close_conn(&st->main);
	if (st->wal_fd >= 0)
		close(st->wal_fd);
	if (st->shared_fd >= 0)
		close(st->shared_fd);
	free(st->open_name);
	pthread_mutex_destroy(&st->sync_lock);
	pthread_cond_destroy(&st->sync_cond);
	pthread_mutex_destroy(&st->lock);
	pthread_mutex_destroy(&st->pool_lock);
	pthread_mutex_destroy(&st->problem_lock);
	pthread_mutex_destroy(&st->pin_lock);
	free(st->path);
	free(st);
	return rc;
}

static void sq_close(struct store_impl *st)
{
	if (!st)
		return;
	/* A clean unmount leaves no pins behind for others to wait out. */
	if ((st->npins || st->nholds) && sq_begin(st, true) == 0) {
		if (by_id(st, S_PIN_DROP_MOUNT, st->mount_id, "unpin") == 0 &&
		    by_id(st, S_HOLD_DROP_MOUNT, st->mount_id, "unhold") == 0)
			commit_lazy(st);
		else
			sq_rollback(st);
	}
	sqlite3_close(st->checkpointer);
	/* Readers first: the last connection to close removes the WAL. */
	for (int i = 0; i < st->n_idle_readers; i++)
		reader_conn_close(&st->idle_readers[i]);
	close_conn(&st->main);
	if (st->wal_fd >= 0)
		close(st->wal_fd);
	if (st->shared_fd >= 0)
		close(st->shared_fd);
	free(st->open_name);
	pthread_mutex_destroy(&st->sync_lock);
	pthread_cond_destroy(&st->sync_cond);
	free(st->pins);
	pthread_mutex_destroy(&st->pin_lock);
	pthread_mutex_destroy(&st->lock);
	pthread_mutex_destroy(&st->pool_lock);
	pthread_mutex_destroy(&st->problem_lock);
	free(st->path);
	free(st);
}

/* SQLite's WAL hook, after each commit: pages now in the log. */
#define WAL_CHECKPOINT_PAGES 1000
/* The WAL an idle mount keeps, in bytes (see sq_checkpoint()). */
#define WAL_KEEP_BYTES (16 << 20)

static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct store_impl *st = arg;

	(void)db;
	(void)name;
	if (pages >= WAL_CHECKPOINT_PAGES && st->wal_grew)
		st->wal_grew(st->wal_grew_arg);
	return SQLITE_OK;
}

static void sq_on_wal_growth(struct store_impl *st, void (*fn)(void *arg),
			     void *arg)
{
	pthread_mutex_lock(&st->lock);
	st->wal_grew = fn;
	st->wal_grew_arg = arg;
	sqlite3_wal_hook(st->main.db, fn ? wal_hook : NULL, fn ? st : NULL);
	pthread_mutex_unlock(&st->lock);
}

/* The store's change counter seen from the checkpointer: any commit. */
static int64_t checkpointer_data_version(struct store_impl *st)
{
	sqlite3_stmt *s = NULL;
	int64_t dv = -1;

	if (sqlite3_prepare_v2(st->checkpointer, "PRAGMA data_version", -1, &s,
			       NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
		dv = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return dv;
}

static int sq_checkpoint(struct store_impl *st)
{
	int log = 0, done = 0, rc;
	uint64_t commits;
	int64_t dv;
	struct stat sb;

	if (st->read_only)
		return 0;
	if (!st->checkpointer) {
		if (sqlite3_open_v2(st->path, &st->checkpointer,
				    SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
				    NULL) != SQLITE_OK) {
			sqlite3_close(st->checkpointer);
			st->checkpointer = NULL;
			return -EIO;
		}
		sqlite3_busy_timeout(st->checkpointer, 0);
		/*
		 * The checkpoint's syncs follow the store's sync option (a new
		 * connection's default, FULL, would fsync the WAL and the
		 * database at every checkpoint even under sync=off).  A first
		 * read puts the connection in WAL mode.
		 */
		sqlite3_exec(st->checkpointer, sync_pragma[st->sync], NULL,
			     NULL, NULL);
		sqlite3_exec(st->checkpointer, "PRAGMA wal_autocheckpoint = 0;"
			     "SELECT count(*) FROM sequence", NULL, NULL, NULL);
	}
	/* PASSIVE: never waits for, nor blocks, the writer or the readers. */
	rc = sqlite3_wal_checkpoint_v2(st->checkpointer, NULL,
				       SQLITE_CHECKPOINT_PASSIVE, &log, &done);
	if (rc != SQLITE_OK && rc != SQLITE_BUSY)
		return -EIO;
	/*
	 * Nothing committed since the last call: if a burst left the WAL
	 * long, give its room back now, when no claim waits for the lock
	 * that truncating takes.  A busy store is simply tried again later.
	 */
	commits = __atomic_load_n(&st->committed, __ATOMIC_ACQUIRE);
	dv = checkpointer_data_version(st);
	if (commits == st->checkpoint_commits && dv == st->checkpoint_dv &&
	    st->wal_fd >= 0 &&
	    fstat(st->wal_fd, &sb) == 0 && sb.st_size > WAL_KEEP_BYTES) {
		rc = sqlite3_wal_checkpoint_v2(st->checkpointer, NULL,
					       SQLITE_CHECKPOINT_TRUNCATE,
					       &log, &done);
		if (rc != SQLITE_OK && rc != SQLITE_BUSY)
			return -EIO;
	}
	st->checkpoint_commits = commits;
	st->checkpoint_dv = dv;
	return 0;
}

static int sq_changed(struct store_impl *st, int64_t *seen)
{
	sqlite3_stmt *s;
	int64_t dv = 0;
	int rc;

	pthread_mutex_lock(&st->lock);
	s = stmt(st, S_DATA_VERSION);
	rc = s ? sqlite3_step(s) : SQLITE_ERROR;
	if (rc == SQLITE_ROW)
		dv = sqlite3_column_int64(s, 0);
	if (s)
		done(s);
	pthread_mutex_unlock(&st->lock);
	if (rc != SQLITE_ROW)
		return -EIO;
	if (dv == *seen)
		return 0;
	*seen = dv;
	return 1;
}

static void sq_get_stats(struct store_impl *st, struct store_stats *out)
{
	pthread_mutex_lock(&st->lock);
	out->commits = st->stats.commits;
	out->max_write_us = st->stats.max_write_us;
	out->max_maintenance_us = st->stats.max_maintenance_us;
	pthread_mutex_unlock(&st->lock);
	pthread_mutex_lock(&st->sync_lock);
	out->syncs = st->stats.syncs;
	out->sync_failed = st->sync_failed;
	pthread_mutex_unlock(&st->sync_lock);
}

/* ---- transactions ----------------------------------------------------- */

/*
 * Inside a transaction under sync=full: note what it can see, so that its
 * end waits until that is durable (see struct store_impl).
 */
static int note_visible(struct store_impl *st)
{
	sqlite3_stmt *s = stmt(st, S_DATA_VERSION);
	int64_t dv;
	int rc;

	if (!s)
		return -EIO;
	rc = sqlite3_step(s);
	dv = sqlite3_column_int64(s, 0);
	done(s);
	if (rc != SQLITE_ROW)
		return sql_error(st, rc, "data version");
	/* Another process committed: its frames need a sync of ours. */
	if (dv != st->data_version) {
		st->data_version = dv;
		__atomic_add_fetch(&st->committed, 1, __ATOMIC_RELEASE);
	}
	st->txn_seen = __atomic_load_n(&st->committed, __ATOMIC_ACQUIRE);
	return 0;
}

/*
 * Begin a transaction; with wait false, a write lock another process
 * holds is -EAGAIN at once instead of after the busy timeout.
 */
static int begin(struct store_impl *st, bool write, bool wait)
{
	struct conn *c = &st->main;
	sqlite3_stmt *s;
	int rc;

	if (write && __atomic_load_n(&st->sync_failed, __ATOMIC_ACQUIRE))
		return -EROFS;
	pthread_mutex_lock(&st->lock);
	s = stmt(st, write ? S_BEGIN_WRITE : S_BEGIN_READ);
	st->busy_nowait = !wait;
	rc = s ? exec_stmt(st, s, "begin") : -EIO;
	st->busy_nowait = false;
	st->txn_seen = 0;
	if (rc == 0 && st->sync == STORE_SYNC_FULL) {
		rc = note_visible(st);
		if (rc)
			sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
	}
	if (rc) {
		pthread_mutex_unlock(&st->lock);
		return rc;
	}
	c->in_write = write;
	c->changes = sqlite3_total_changes64(c->db);
	if (write)
		clock_gettime(CLOCK_MONOTONIC, &c->began);
	return 0;
}

static int sq_begin(struct store_impl *st, bool write)
{
	return begin(st, write, true);
}


/* The end of a write transaction: how long it held the lock. */
static void note_hold(struct store_impl *st, struct conn *c)
{
	struct timespec now;
	int64_t us;

	if (!c->in_write)
		return;
	c->in_write = false;
	clock_gettime(CLOCK_MONOTONIC, &now);
	us = (now.tv_sec - c->began.tv_sec) * 1000000 +
	     (now.tv_nsec - c->began.tv_nsec) / 1000;
	if (us > 0 && (uint64_t)us > st->stats.max_write_us)
		st->stats.max_write_us = (uint64_t)us;
	if (store_in_maintenance() && us > 0 &&
	    (uint64_t)us > st->stats.max_maintenance_us)
		st->stats.max_maintenance_us = (uint64_t)us;
}

/* Wait until commit number seq is on disk (see struct store_impl). */
static int wait_durable(struct store_impl *st, uint64_t seq)
{
	int rc = 0;

	pthread_mutex_lock(&st->sync_lock);
	while (st->synced < seq && rc == 0) {
		uint64_t target;

		if (st->sync_failed) {
			rc = -EIO;
			break;
		}
		if (st->syncing) {
			pthread_cond_wait(&st->sync_cond, &st->sync_lock);
			continue;
		}
		st->syncing = true;
		target = __atomic_load_n(&st->committed, __ATOMIC_ACQUIRE);
		pthread_mutex_unlock(&st->sync_lock);
		if (st->wal_fd < 0 || fdatasync(st->wal_fd) != 0) {
			rc = -EIO;
			syslog(LOG_CRIT, "oncefs: sync of %s-wal failed (%m): "
			       "commits since the last sync may be lost; the "
			       "store refuses writes until it is mounted again",
			       st->path);
		}
		pthread_mutex_lock(&st->sync_lock);
		st->syncing = false;
		if (rc)
			__atomic_store_n(&st->sync_failed, true, __ATOMIC_RELEASE);
		else if (target > st->synced) {
			st->synced = target;
			st->stats.syncs++;
		}
		pthread_cond_broadcast(&st->sync_cond);
	}
	pthread_mutex_unlock(&st->sync_lock);
	return rc;
}

/*
 * The end of a transaction: forget the connection, drop the lock, and
 * under sync=full wait until everything it wrote (commit number seq) or
 * saw (st->txn_seen) is durable.  Only a commit's own sync can fail it:
 * after a failed sync the store still answers reads from what it has,
 * and refuses writes (see sync_failed).
 */
static int end(struct store_impl *st, struct conn *c, uint64_t seq)
{
	uint64_t seen = st->txn_seen;
	int rc;

	note_hold(st, c);
	pthread_mutex_unlock(&st->lock);
	if (st->sync != STORE_SYNC_FULL || (seq == 0 && seen == 0))
		return 0;
	rc = wait_durable(st, seq > seen ? seq : seen);
	return seq ? rc : 0;
}

static int sq_commit(struct store_impl *st)
{
	struct conn *c = &st->main;
	sqlite3_stmt *s = stmt(st, S_COMMIT);
	int rc = s ? exec_stmt(st, s, "commit") : -EIO;
	uint64_t seq = 0;
	int durable;

	if (rc) {
		/* A failed COMMIT may leave the transaction open. */
		if (!sqlite3_get_autocommit(c->db))
			sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
	} else if (!c->in_write && !read_still_valid(st)) {
		rc = -EAGAIN;	/* a writer began during the read: try again */
	} else if (c->in_write &&
		   sqlite3_total_changes64(c->db) != c->changes) {
		/* A write transaction that changed nothing wrote nothing. */
		st->stats.commits++;
		seq = __atomic_add_fetch(&st->committed, 1, __ATOMIC_RELEASE);
	}
	durable = end(st, c, seq);
	return rc ? rc : durable;
}

static void sq_rollback(struct store_impl *st)
{
	struct conn *c = &st->main;

	if (!sqlite3_get_autocommit(c->db)) {
		sqlite3_stmt *s = stmt(st, S_ROLLBACK);

		if (s)
			exec_stmt(st, s, "rollback");
	}
	/*
	 * A rolled-back transaction's reply may still report what it read
	 * (EEXIST for a claim someone else committed): that must be durable
	 * too.  A failure here is the store's, and the next write says so.
	 */
	end(st, c, 0);
}

static int sq_next_generation(struct store_impl *st, int64_t *out)
{
	sqlite3_stmt *s = stmt(st, S_NEXT_GEN);
	int rc;

	if (!s)
		return -EIO;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(s, 0);
		done(s);
		return 0;
	}
	done(s);
	return sql_error(st, rc, "generation");
}

/* ---- rows ------------------------------------------------------------- */

typedef int row_reader(struct store_impl *st, sqlite3_stmt *s, void *row);

/*
 * Step s for up to max rows, reading each with fn into rows (of size
 * bytes each); *n gets the count.  A row that fails its checks ends the
 * list with its error.
 */
static int read_rows(struct store_impl *st, sqlite3_stmt *s, row_reader *fn,
		     void *rows, size_t size, int max, int *n, const char *what)
{
	int rc = SQLITE_DONE;

	*n = 0;
	while (*n < max && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		int bad = fn(st, s, (char *)rows + size * (size_t)*n);

		if (bad) {
			done(s);
			return bad;
		}
		(*n)++;
	}
	done(s);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sql_error(st, rc, what);
}

static int wf_reader(struct store_impl *st, sqlite3_stmt *s, void *row);
static int key_reader(struct store_impl *st, sqlite3_stmt *s, void *row);
static int step_reader(struct store_impl *st, sqlite3_stmt *s, void *row);

/* ---- workflows -------------------------------------------------------- */

static int read_wf(struct store_impl *st, sqlite3_stmt *s, struct wf_row *w)
{
	static const char t[] = "workflows";
	const void *fp;
	size_t fp_len;
	int64_t v[8];
	int rc;

	w->id = sqlite3_column_int64(s, 0);
	rc = copy_name(st, t, w->id, s, 1, w->name, &w->name_len);
	if (!rc)
		rc = column_in(st, t, w->id, s, 2, "uid", 0, UINT32_MAX, &v[0]);
	if (!rc)
		rc = column_in(st, t, w->id, s, 3, "gid", 0, UINT32_MAX, &v[1]);
	if (!rc)
		rc = column_in(st, t, w->id, s, 4, "mode", 0, 07777, &v[2]);
	if (!rc)
		rc = column_in(st, t, w->id, s, 7, "on_input_change",
			       ON_INPUT_RESET, ON_INPUT_RAISE, &v[3]);
	if (!rc)
		rc = column_in(st, t, w->id, s, 8, "dedup_on", DEDUP_SUCCESS,
			       DEDUP_ANY, &v[4]);
	if (!rc)
		rc = column_in(st, t, w->id, s, 9, "in_flight_ttl", 1,
			       POLICY_TTL_MAX, &v[5]);
	if (!rc)
		rc = column_in(st, t, w->id, s, 10, "retention", 0,
			       POLICY_RETENTION_MAX, &v[6]);
	if (!rc)
		rc = column_in(st, t, w->id, s, 12, "epoch", 0, INT64_MAX, &w->epoch);
	if (!rc)
		rc = column_in(st, t, w->id, s, 13, "events size", 0, INT64_MAX,
			       &w->events_size);
	fp = sqlite3_column_blob(s, 11);
	w->fingerprint_len = (size_t)sqlite3_column_bytes(s, 11);
	if (!rc && w->fingerprint_len &&
	    (fingerprint_parse(fp, w->fingerprint_len, &fp_len) ||
	     fp_len != w->fingerprint_len))
		rc = bad_row(st, t, w->id, "fingerprint of length",
			     (int64_t)w->fingerprint_len);
	if (rc)
		return rc;
	w->uid = (uint32_t)v[0];
	w->gid = (uint32_t)v[1];
	w->mode = (uint32_t)v[2];
	w->ctime_ns = sqlite3_column_int64(s, 5);
	w->mtime_ns = sqlite3_column_int64(s, 6);
	w->policy.on_input_change = (enum on_input_change)v[3];
	w->policy.dedup_on = (enum dedup_on)v[4];
	w->policy.in_flight_ttl = v[5];
	w->policy.retention = v[6];
	if (w->fingerprint_len)
		memcpy(w->fingerprint, fp, w->fingerprint_len);
	w->fingerprint[w->fingerprint_len] = '\0';
	return 0;
}

static int wf_reader(struct store_impl *st, sqlite3_stmt *s, void *row)
{
	return read_wf(st, s, row);
}

static void bind_wf(sqlite3_stmt *s, const struct wf_row *w)
{
	sqlite3_bind_int64(s, 1, w->id);
	bind_blob(s, 2, w->name, w->name_len);
	sqlite3_bind_int64(s, 3, w->uid);
	sqlite3_bind_int64(s, 4, w->gid);
	sqlite3_bind_int64(s, 5, w->mode);
	sqlite3_bind_int64(s, 6, w->ctime_ns);
	sqlite3_bind_int64(s, 7, w->mtime_ns);
	sqlite3_bind_int(s, 8, w->policy.on_input_change);
	sqlite3_bind_int(s, 9, w->policy.dedup_on);
	sqlite3_bind_int64(s, 10, w->policy.in_flight_ttl);
	sqlite3_bind_int64(s, 11, w->policy.retention);
	if (w->fingerprint_len)
		bind_blob(s, 12, w->fingerprint, w->fingerprint_len);
	else
		sqlite3_bind_null(s, 12);
	sqlite3_bind_int64(s, 13, w->epoch);
	sqlite3_bind_int64(s, 14, w->events_size);
}

static int get_one_wf(struct store_impl *st, sqlite3_stmt *s,
		      struct wf_row *out)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW) {
		rc = read_wf(st, s, out);
		done(s);
		return rc;
	}
	done(s);
	return rc == SQLITE_DONE ? -ENOENT : sql_error(st, rc, "workflow");
}

static int sq_wf_by_name(struct store_impl *st, const char *name, size_t len,
			 struct wf_row *out)
{
	sqlite3_stmt *s = stmt(st, S_WF_BY_NAME);

	if (!s)
		return -EIO;
	bind_blob(s, 1, name, len);
	return get_one_wf(st, s, out);
}

static int sq_wf_by_id(struct store_impl *st, int64_t id, struct wf_row *out)
{
	sqlite3_stmt *s = stmt(st, S_WF_BY_ID);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	return get_one_wf(st, s, out);
}

static int sq_wf_insert(struct store_impl *st, struct wf_row *row)
{
	sqlite3_stmt *s = stmt(st, S_WF_INSERT);
	int rc;

	if (!s)
		return -EIO;
	bind_wf(s, row);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		row->id = sqlite3_column_int64(s, 0);
		done(s);
		return 0;
	}
	done(s);
	if ((rc & 0xff) == SQLITE_CONSTRAINT)
		return -EEXIST;
	return sql_error(st, rc, "insert workflow");
}

static int sq_wf_update(struct store_impl *st, const struct wf_row *row)
{
	sqlite3_stmt *s = stmt(st, S_WF_UPDATE);
	int rc;

	if (!s)
		return -EIO;
	bind_wf(s, row);
	rc = sqlite3_step(s);
	done(s);
	if (rc == SQLITE_DONE)
		return sqlite3_changes(st->main.db) ? 0 : -ENOENT;
	if ((rc & 0xff) == SQLITE_CONSTRAINT)
		return -EEXIST;
	return sql_error(st, rc, "update workflow");
}

static int sq_wf_delete(struct store_impl *st, int64_t id)
{
	static const enum stmt_id order[] = {
		S_WF_KILL_CONTENT, S_WF_DELETE_KEYS, S_WF_DELETE_STEPS,
		S_WF_DELETE_EVENTS, S_WF_DELETE_HOLDS,
		S_WF_DELETE,
	};

	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		sqlite3_stmt *s = stmt(st, order[i]);
		int rc;

		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, id);
		rc = exec_stmt(st, s, "delete workflow");
		if (rc)
			return rc;
	}
	return 0;
}

static int sq_wf_list(struct store_impl *st, int64_t after, struct wf_row *rows,
		      int max, int *n)
{
	sqlite3_stmt *s = stmt(st, S_WF_LIST);

	*n = 0;
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, after);
	sqlite3_bind_int(s, 2, max);
	return read_rows(st, s, wf_reader, rows, sizeof(*rows), max, n,
			 "list workflows");
}

/* ---- keys ------------------------------------------------------------- */

static int read_key(struct store_impl *st, sqlite3_stmt *s, struct key_row *k)
{
	static const char t[] = "keys";
	int64_t status = 0, pid = 0, uid = 0;
	int rc;

	k->id = sqlite3_column_int64(s, 0);
	k->wf = sqlite3_column_int64(s, 1);
	rc = copy_name(st, t, k->id, s, 2, k->name, &k->name_len);
	if (!rc)
		rc = column_in(st, t, k->id, s, 3, "status", KEY_VACANT,
			       KEY_FAILED, &status);
	if (!rc)
		rc = column_in(st, t, k->id, s, 4, "generation", 1, INT64_MAX,
			       &k->generation);
	if (!rc)
		rc = column_in(st, t, k->id, s, 5, "attempt", 0, INT64_MAX,
			       &k->attempt);
	if (!rc)
		rc = column_in(st, t, k->id, s, 8, "holder pid", 0, INT32_MAX, &pid);
	if (!rc)
		rc = column_in(st, t, k->id, s, 9, "holder uid", 0, UINT32_MAX, &uid);
	if (rc)
		return rc;
	k->status = (enum key_status)status;
	k->expires_ms = sqlite3_column_int64(s, 6);
	k->mtime_ns = sqlite3_column_int64(s, 7);
	k->holder_pid = (int32_t)pid;
	k->holder_uid = (uint32_t)uid;
	k->result_len = sqlite3_column_int64(s, 10);
	k->content = sqlite3_column_int64(s, 11);
	rc = column_in(st, t, k->id, s, 12, "previous generation", 0,
		       k->generation - 1, &k->previous);
	if (rc)
		return rc;
	if (k->result_len < 0 || k->result_len > INT32_MAX)
		return bad_row(st, t, k->id, "result length", k->result_len);
	if (k->content < 0 || (k->content == 0) != (k->result_len == 0))
		return bad_row(st, t, k->id, "result content", k->content);
	return 0;
}

static int key_reader(struct store_impl *st, sqlite3_stmt *s, void *row)
{
	return read_key(st, s, row);
}

static void bind_key(sqlite3_stmt *s, const struct key_row *k)
{
	sqlite3_bind_int64(s, 1, k->id);
	sqlite3_bind_int64(s, 2, k->wf);
	bind_blob(s, 3, k->name, k->name_len);
	sqlite3_bind_int(s, 4, k->status);
	sqlite3_bind_int64(s, 5, k->generation);
	sqlite3_bind_int64(s, 6, k->attempt);
	sqlite3_bind_int64(s, 7, k->expires_ms);
	sqlite3_bind_int64(s, 8, k->mtime_ns);
	sqlite3_bind_int64(s, 9, k->holder_pid);
	sqlite3_bind_int64(s, 10, k->holder_uid);
	sqlite3_bind_int64(s, 11, k->previous);
}

static int get_one_key(struct store_impl *st, sqlite3_stmt *s,
		       struct key_row *out)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW) {
		rc = read_key(st, s, out);
		done(s);
		return rc;
	}
	done(s);
	return rc == SQLITE_DONE ? -ENOENT : sql_error(st, rc, "key");
}

static int sq_key_get(struct store_impl *st, int64_t wf, const char *name,
		      size_t len, struct key_row *out)
{
	sqlite3_stmt *s = stmt(st, S_KEY_GET);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	bind_blob(s, 2, name, len);
	return get_one_key(st, s, out);
}

static int sq_key_by_generation(struct store_impl *st, int64_t generation,
				struct key_row *out)
{
	sqlite3_stmt *s = stmt(st, S_KEY_BY_GEN);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, generation);
	return get_one_key(st, s, out);
}

static int sq_key_result(struct store_impl *st, const struct key_row *k,
			 char **buf, size_t *len)
{
	size_t got = 0;
	int rc;

	*len = 0;
	*buf = malloc(k->result_len ? (size_t)k->result_len : 1);
	if (!*buf)
		return -ENOMEM;
	rc = sq_content_read(st, k->content, k->result_len, 0, *buf,
				(size_t)k->result_len, &got);
	if (rc == 0 && got != (size_t)k->result_len)
		rc = -EIO;
	if (rc) {
		free(*buf);
		*buf = NULL;
		return rc;
	}
	*len = got;
	return 0;
}

static int sq_key_insert(struct store_impl *st, struct key_row *row)
{
	sqlite3_stmt *s = stmt(st, S_KEY_INSERT);
	int rc;

	if (!s)
		return -EIO;
	bind_key(s, row);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		row->id = sqlite3_column_int64(s, 0);
		done(s);
		return 0;
	}
	done(s);
	if ((rc & 0xff) == SQLITE_CONSTRAINT)
		return -EEXIST;
	return sql_error(st, rc, "insert key");
}

static int sq_key_update(struct store_impl *st, const struct key_row *row)
{
	sqlite3_stmt *s = stmt(st, S_KEY_UPDATE);

	if (!s)
		return -EIO;
	bind_key(s, row);
	return exec_stmt(st, s, "update key");
}

static int sq_key_set_result(struct store_impl *st, struct key_row *k,
			     const char *buf, size_t len)
{
	sqlite3_stmt *s = stmt(st, S_KEY_SET_CONTENT);
	int64_t content = 0;
	int rc;

	if (!s)
		return -EIO;
	rc = k->content ? by_id(st, S_CONTENT_KILL, k->content, "old result") : 0;
	if (rc == 0 && len)
		rc = new_content(st, (int64_t)len, false, &content);
	if (rc == 0 && len)
		rc = put_chunks(st, content, 0, buf, len);
	if (rc)
		return rc;
	sqlite3_bind_int64(s, 1, k->id);
	sqlite3_bind_int64(s, 2, content);
	sqlite3_bind_int64(s, 3, (int64_t)len);
	rc = exec_stmt(st, s, "key result");
	if (rc == 0) {
		k->content = content;
		k->result_len = (int64_t)len;
	}
	return rc;
}

static int sq_key_delete(struct store_impl *st, int64_t id)
{
	sqlite3_stmt *s = stmt(st, S_KEY_DELETE);
	int rc = by_id(st, S_KEY_KILL_CONTENT, id, "key result");

	if (rc)
		return rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	return exec_stmt(st, s, "delete key");
}

/* Where a note lives, and how long it may be. */
static const struct {
	enum stmt_id get, set;
	size_t max;
	const char *what;
} notes[] = {
	[KEY_NOTE_REQUEST] = { S_KEY_REQUEST, S_KEY_SET_REQUEST,
			       KEY_REQUEST_MAX, "request" },
	[KEY_NOTE_ORIGINAL] = { S_KEY_ORIGINAL, S_KEY_SET_ORIGINAL,
				KEY_ORIGINAL_MAX, "original name" },
};

static int sq_key_note(struct store_impl *st, int64_t id, enum key_note which,
		       char *buf, size_t *len)
{
	sqlite3_stmt *s = stmt(st, notes[which].get);
	const void *p;
	size_t n;
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		done(s);
		return rc == SQLITE_DONE ? -ENOENT : sql_error(st, rc, "key note");
	}
	p = sqlite3_column_blob(s, 0);
	n = (size_t)sqlite3_column_bytes(s, 0);
	if (n > notes[which].max) {
		done(s);
		return bad_row(st, "keys", id, notes[which].what, (int64_t)n);
	}
	if (n)
		memcpy(buf, p, n);
	done(s);
	*len = n;
	return n ? 0 : -ENODATA;
}

static int sq_key_set_note(struct store_impl *st, int64_t id,
			   enum key_note which, const char *buf, size_t len)
{
	sqlite3_stmt *s = stmt(st, notes[which].set);

	if (!s)
		return -EIO;
	if (len > notes[which].max)
		return -E2BIG;
	sqlite3_bind_int64(s, 1, id);
	if (len)
		bind_blob(s, 2, buf, len);
	return exec_stmt(st, s, "key note");
}

static int sq_key_clear_notes(struct store_impl *st, int64_t id)
{
	return by_id(st, S_KEY_CLEAR_NOTES, id, "key notes");
}

/* ---- holds of inputs -------------------------------------------------- */

/* How often a mount drops the holds that every mount let lapse. */
#define HOLDS_SWEEP_MS (60 * 1000)

static int sq_hold(struct store_impl *st, int64_t wf, int64_t expires_ms,
		   int64_t *id)
{
	sqlite3_stmt *s = stmt(st, S_HOLD_INSERT);
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, st->mount_id);
	sqlite3_bind_int64(s, 3, expires_ms);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(s, 0);
		done(s);
		__atomic_add_fetch(&st->nholds, 1, __ATOMIC_RELAXED);
		return 0;
	}
	done(s);
	return sql_error(st, rc, "hold input");
}

static int sq_unhold(struct store_impl *st, int64_t id)
{
	int rc = by_id(st, S_HOLD_DELETE, id, "release input");

	/* A workflow removed since took its holds with it. */
	if (rc == 0 && sqlite3_changes(st->main.db) > 0)
		__atomic_sub_fetch(&st->nholds, 1, __ATOMIC_RELAXED);
	return rc;
}

static int sq_hold_any(struct store_impl *st, int64_t wf, int64_t now_ms,
		       bool *any)
{
	sqlite3_stmt *s = stmt(st, S_HOLD_ANY);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, now_ms);
	return exists(st, s, any);
}

static int sq_holds_renew(struct store_impl *st, int64_t now_ms,
			  int64_t lease_ms)
{
	sqlite3_stmt *renew, *lapsed;
	bool due = __atomic_load_n(&st->nholds, __ATOMIC_RELAXED) > 0 &&
		   now_ms >= st->holds_renew_ms;
	int rc;

	if (!due && now_ms < st->holds_swept_ms)
		return 0;	/* nothing to renew, nothing due: no transaction */
	rc = sq_begin(st, true);
	if (rc)
		return rc;
	renew = stmt(st, S_HOLD_RENEW);
	lapsed = stmt(st, S_HOLD_EXPIRED);
	rc = renew && lapsed ? 0 : -EIO;
	if (rc == 0) {
		sqlite3_bind_int64(renew, 1, st->mount_id);
		sqlite3_bind_int64(renew, 2, now_ms + lease_ms);
		rc = due ? exec_stmt(st, renew, "renew holds") : 0;
		done(renew);
	}
	/* The holds of mounts that died: nobody renews them any more. */
	if (rc == 0 && now_ms >= st->holds_swept_ms) {
		sqlite3_bind_int64(lapsed, 1, now_ms);
		rc = exec_stmt(st, lapsed, "lapsed holds");
	}
	if (rc) {
		sq_rollback(st);
		return rc;
	}
	rc = commit_lazy(st);
	if (rc == 0 && due)
		st->holds_renew_ms = now_ms + lease_ms / 3;
	if (rc == 0 && now_ms >= st->holds_swept_ms)
		st->holds_swept_ms = now_ms + HOLDS_SWEEP_MS;
	return rc;
}

static int sq_key_list(struct store_impl *st, int64_t wf, int64_t after,
		       int64_t now_ms, struct key_row *rows, int max, int *n)
{
	sqlite3_stmt *s = stmt(st, S_KEY_LIST);

	*n = 0;
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, after);
	sqlite3_bind_int64(s, 3, now_ms);
	sqlite3_bind_int(s, 4, max);
	return read_rows(st, s, key_reader, rows, sizeof(*rows), max, n,
			 "list keys");
}

static int exists(struct store_impl *st, sqlite3_stmt *s, bool *any)
{
	int rc = sqlite3_step(s);

	*any = rc == SQLITE_ROW && sqlite3_column_int(s, 0) != 0;
	done(s);
	return rc == SQLITE_ROW ? 0 : sql_error(st, rc, "exists");
}

static int sq_key_any(struct store_impl *st, int64_t wf, int64_t now_ms,
		      bool *any)
{
	sqlite3_stmt *s = stmt(st, S_KEY_ANY);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, now_ms);
	return exists(st, s, any);
}

/* ---- checkpoints ------------------------------------------------------ */

static int read_step(struct store_impl *st, sqlite3_stmt *s, struct step_row *r)
{
	static const char t[] = "steps";
	int rc;

	r->id = sqlite3_column_int64(s, 0);
	r->wf = sqlite3_column_int64(s, 1);
	r->epoch = sqlite3_column_int64(s, 2);
	r->mtime_ns = sqlite3_column_int64(s, 5);
	r->atime_ns = sqlite3_column_int64(s, 7);
	rc = copy_name(st, t, r->id, s, 3, r->name, &r->name_len);
	if (!rc)
		rc = column_in(st, t, r->id, s, 4, "size", 0, INT64_MAX / 2,
			       &r->size);
	if (!rc)
		rc = column_in(st, t, r->id, s, 6, "content", 0, INT64_MAX,
			       &r->content);
	if (!rc && (r->content == 0) != (r->size == 0))
		rc = bad_row(st, t, r->id, "content of size", r->size);
	return rc;
}

static int step_reader(struct store_impl *st, sqlite3_stmt *s, void *row)
{
	return read_step(st, s, row);
}

static int get_one_step(struct store_impl *st, sqlite3_stmt *s,
			struct step_row *out)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW) {
		rc = read_step(st, s, out);
		done(s);
		return rc;
	}
	done(s);
	return rc == SQLITE_DONE ? -ENOENT : sql_error(st, rc, "step");
}

static int sq_step_get(struct store_impl *st, int64_t wf, int64_t epoch,
		       const char *name, size_t len, struct step_row *out)
{
	sqlite3_stmt *s = stmt(st, S_STEP_GET);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, epoch);
	bind_blob(s, 3, name, len);
	return get_one_step(st, s, out);
}

static int sq_step_by_id(struct store_impl *st, int64_t id,
			 struct step_row *out)
{
	sqlite3_stmt *s = stmt(st, S_STEP_BY_ID);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	return get_one_step(st, s, out);
}

static int sq_step_any(struct store_impl *st, int64_t wf, int64_t epoch,
		       bool *any)
{
	sqlite3_stmt *s = stmt(st, S_STEP_ANY);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, epoch);
	return exists(st, s, any);
}

/* ---- events ----------------------------------------------------------- */

static int sq_event_append(struct store_impl *st, int64_t wf,
			   const struct event *ev)
{
	char line[EVENT_LINE_MAX + 1];
	sqlite3_stmt *ins = stmt(st, S_EVENT_INSERT);
	sqlite3_stmt *grow = stmt(st, S_EVENT_GROW);
	size_t line_len;
	int rc = event_render(ev, line, sizeof(line), &line_len);

	if (rc)
		return rc == -ENOSPC ? -EINVAL : rc;
	if (!ins || !grow)
		return -EIO;
	sqlite3_bind_int64(ins, 1, wf);
	sqlite3_bind_int64(ins, 2, ev->time_ms);
	sqlite3_bind_text64(ins, 3, line, line_len, SQLITE_TRANSIENT, SQLITE_UTF8);
	rc = exec_stmt(st, ins, "insert event");
	if (rc)
		return rc;
	sqlite3_bind_int64(grow, 1, wf);
	sqlite3_bind_int64(grow, 2, (int64_t)line_len + 1);
	return exec_stmt(st, grow, "grow events");
}

static int sq_event_read(struct store_impl *st, int64_t wf, int64_t offset,
			 char *buf, size_t size, size_t *got)
{
	sqlite3_stmt *s = stmt(st, S_EVENT_READ);
	int rc = SQLITE_DONE;

	sqlite3_stmt *b = stmt(st, S_EVENT_BASE);
	int64_t base = 0;

	*got = 0;
	if (!s || !b)
		return -EIO;
	/* The file begins at events_base: older lines were swept. */
	sqlite3_bind_int64(b, 1, wf);
	if (sqlite3_step(b) == SQLITE_ROW)
		base = sqlite3_column_int64(b, 0);
	done(b);
	offset += base;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, offset);
	while (*got < size && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		int64_t off = sqlite3_column_int64(s, 0);
		const char *line = (const char *)sqlite3_column_text(s, 1);
		int64_t len = sqlite3_column_bytes(s, 1);
		int64_t from, n;

		/* The line and its newline occupy [off, off + len + 1). */
		if (off + len + 1 <= offset)
			continue;
		from = offset > off ? offset - off : 0;
		n = len + 1 - from;
		if ((size_t)n > size - *got)
			n = (int64_t)(size - *got);
		for (int64_t i = 0; i < n; i++)
			buf[*got + i] = from + i < len ? line[from + i] : '\n';
		*got += (size_t)n;
		offset = off + len + 1;
	}
	if (*got < size && rc != SQLITE_DONE) {
		done(s);
		return sql_error(st, rc, "read events");
	}
	done(s);
	return 0;
}

static void bind_step(sqlite3_stmt *s, const struct step_row *r)
{
	sqlite3_bind_int64(s, 1, r->id);
	sqlite3_bind_int64(s, 2, r->wf);
	sqlite3_bind_int64(s, 3, r->epoch);
	bind_blob(s, 4, r->name, r->name_len);
	sqlite3_bind_int64(s, 6, r->mtime_ns);
	sqlite3_bind_int64(s, 7, r->atime_ns);
}

static int sq_step_list(struct store_impl *st, int64_t wf, int64_t epoch,
			int64_t after, struct step_row *rows, int max, int *n)
{
	sqlite3_stmt *s = stmt(st, S_STEP_LIST);

	*n = 0;
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, epoch);
	sqlite3_bind_int64(s, 3, after);
	sqlite3_bind_int(s, 4, max);
	return read_rows(st, s, step_reader, rows, sizeof(*rows), max, n,
			 "list steps");
}

static int sq_step_insert(struct store_impl *st, struct step_row *row)
{
	sqlite3_stmt *s = stmt(st, S_STEP_INSERT);
	int rc;

	if (!s)
		return -EIO;
	bind_step(s, row);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		row->id = sqlite3_column_int64(s, 0);
		row->size = 0;
		done(s);
		return 0;
	}
	done(s);
	if ((rc & 0xff) == SQLITE_CONSTRAINT)
		return -EEXIST;
	return sql_error(st, rc, "insert step");
}

static int sq_step_update(struct store_impl *st, const struct step_row *row)
{
	sqlite3_stmt *s = stmt(st, S_STEP_UPDATE);
	int rc;

	if (!s)
		return -EIO;
	bind_step(s, row);
	rc = sqlite3_step(s);
	done(s);
	if (rc == SQLITE_DONE)
		return 0;
	if ((rc & 0xff) == SQLITE_CONSTRAINT)
		return -EEXIST;
	return sql_error(st, rc, "update step");
}

/* ---- content versions ------------------------------------------------- */

/*
 * Content is cut into STORE_CHUNK pieces: SQLite caps one value at 10^9
 * bytes, a reader reads one piece at a time, and staging writes one piece
 * a transaction.
 */
#define STORE_CHUNK (1024 * 1024)
/* A pin's lease, renewed every PIN_RENEW_MS while this mount holds it. */
#define PIN_TTL_MS (10 * 60 * 1000)
#define PIN_RENEW_MS (60 * 1000)
/* A pin no open file uses any more stays in the store this long. */
#define PIN_IDLE_MS (10 * 1000)
#define PIN_DROP_BATCH 200

/* The in-memory pin of a version: sorted by content in st->pins. */
struct pin {
	int64_t content;
	uint32_t count;		/* open files reading it */
	bool in_store;		/* its row is in pins */
	int64_t idle_since_ms;	/* when a renewal first saw count 0 (0: not yet) */
};

static int64_t pin_find(const struct store_impl *st, int64_t content,
			bool *found)
{
	size_t lo = 0, hi = st->npins;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (st->pins[mid].content < content)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < st->npins && st->pins[lo].content == content;
	return (int64_t)lo;
}

static int pin_add(struct store_impl *st, size_t at, int64_t content,
		   bool in_store)
{
	if (st->npins == st->pins_cap) {
		size_t cap = st->pins_cap ? st->pins_cap * 2 : 64;
		struct pin *p = realloc(st->pins, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		st->pins = p;
		st->pins_cap = cap;
	}
	memmove(&st->pins[at + 1], &st->pins[at],
		(st->npins - at) * sizeof(*st->pins));
	st->pins[at] = (struct pin){ .content = content, .count = 1,
				     .in_store = in_store };
	st->npins++;
	return 0;
}

/*
 * A commit that needs no sync of its own: pins (which die with the mount
 * anyway) and staged content (which the commit that names it makes
 * durable, the WAL being written in order).
 */
static int commit_lazy(struct store_impl *st)
{
	struct conn *c = &st->main;
	sqlite3_stmt *s = stmt(st, S_COMMIT);
	int rc = s ? exec_stmt(st, s, "commit") : -EIO;

	if (rc && !sqlite3_get_autocommit(c->db))
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
	else if (rc == 0 && sqlite3_total_changes64(c->db) != c->changes)
		st->stats.commits++;
	st->txn_seen = 0;
	note_hold(st, c);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

static int pin_row(struct store_impl *st, int64_t content, int64_t now_ms)
{
	sqlite3_stmt *s = stmt(st, S_PIN_INSERT);
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, content);
	sqlite3_bind_int64(s, 2, st->mount_id);
	sqlite3_bind_int64(s, 3, now_ms + PIN_TTL_MS);
	rc = exec_stmt(st, s, "pin");
	if (rc == 0 && sqlite3_changes(st->main.db) == 0)
		rc = -ENOENT;
	return rc;
}

/* Under pin_lock: one more file reads content (in_store: its row is in). */
static int pin_hold(struct store_impl *st, int64_t content, bool in_store)
{
	bool found;
	int64_t at = pin_find(st, content, &found);

	if (!found)
		return pin_add(st, (size_t)at, content, in_store);
	st->pins[at].count++;
	st->pins[at].idle_since_ms = 0;
	st->pins[at].in_store |= in_store;
	return 0;
}

static int sq_pin(struct store_impl *st, int64_t content, int64_t now_ms)
{
	bool found;
	int rc;

	if (content == 0)
		return 0;
	pthread_mutex_lock(&st->pin_lock);
	pin_find(st, content, &found);
	rc = found ? pin_hold(st, content, false) : 1;
	pthread_mutex_unlock(&st->pin_lock);
	if (rc <= 0)
		return rc;
	/*
	 * The row, with pin_lock free, and without waiting: a read never
	 * waits for another process's write lock.
	 */
	rc = begin(st, true, false);
	if (rc == 0) {
		rc = pin_row(st, content, now_ms);
		if (rc == 0)
			rc = commit_lazy(st);
		else
			sq_rollback(st);
	}
	/*
	 * A store that takes no write now (another process holds its lock,
	 * the disk is full, a sync failed) must not fail a read: the pin
	 * lives in memory, and sq_pins_renew() writes its row later.  A
	 * purge needs that same lock or room, so the window is narrow, and
	 * a version purged in it reads as EIO, never as other bytes (ids are
	 * never reused).
	 */
	if (rc != 0 && rc != -EROFS && rc != -EAGAIN && rc != -ENOSPC)
		return rc;
	pthread_mutex_lock(&st->pin_lock);
	rc = pin_hold(st, content, rc == 0);
	pthread_mutex_unlock(&st->pin_lock);
	return rc;
}

static void sq_unpin(struct store_impl *st, int64_t content)
{
	bool found;
	int64_t at;

	if (content == 0)
		return;
	pthread_mutex_lock(&st->pin_lock);
	at = pin_find(st, content, &found);
	if (found && st->pins[at].count > 0)
		st->pins[at].count--;
	pthread_mutex_unlock(&st->pin_lock);
}

/* Is this pin one that no file has used for PIN_IDLE_MS? */
static bool pin_idle(const struct pin *p, int64_t now_ms)
{
	return p->count == 0 && p->idle_since_ms &&
	       p->idle_since_ms <= now_ms - PIN_IDLE_MS;
}

/* One statement for a pin row of this mount: drop or (re)write it. */
static int pin_row_change(struct store_impl *st, int64_t content, bool drop,
			  int64_t now_ms)
{
	sqlite3_stmt *s;
	int rc;

	if (!drop) {
		rc = pin_row(st, content, now_ms);
		return rc == -ENOENT ? 0 : rc;	/* gone: its reads say EIO */
	}
	s = stmt(st, S_PIN_DELETE);
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, content);
	sqlite3_bind_int64(s, 2, st->mount_id);
	return exec_stmt(st, s, "unpin");
}

static int sq_pins_renew(struct store_impl *st, int64_t now_ms)
{
	int64_t ids[PIN_DROP_BATCH];
	bool drop[PIN_DROP_BATCH], renew;
	size_t n = 0, kept = 0;
	int rc = 0;

	/* What is due, seen under pin_lock... */
	pthread_mutex_lock(&st->pin_lock);
	for (size_t i = 0; i < st->npins; i++) {
		struct pin *p = &st->pins[i];

		/* Idle from the first renewal that sees it unused. */
		if (p->count == 0 && p->idle_since_ms == 0)
			p->idle_since_ms = now_ms;
		if (n < PIN_DROP_BATCH && p->in_store && pin_idle(p, now_ms)) {
			ids[n] = p->content;
			drop[n++] = true;
		} else if (n < PIN_DROP_BATCH && p->count > 0 && !p->in_store) {
			ids[n] = p->content;
			drop[n++] = false;
		}
	}
	renew = st->npins > 0 && now_ms >= st->pins_renew_ms;
	/* Memory-only pins unused for a while need no transaction. */
	for (size_t i = 0; i < st->npins; i++)
		if (st->pins[i].in_store || !pin_idle(&st->pins[i], now_ms))
			st->pins[kept++] = st->pins[i];
	st->npins = kept;
	pthread_mutex_unlock(&st->pin_lock);
	if (n == 0 && !renew)
		return 0;	/* nothing due: no transaction at all */

	/* ...done with pin_lock free, so that opens and closes never wait... */
	rc = sq_begin(st, true);
	if (rc)
		return rc;
	if (renew) {
		sqlite3_stmt *s = stmt(st, S_PIN_RENEW);

		rc = s ? 0 : -EIO;
		if (s) {
			sqlite3_bind_int64(s, 1, st->mount_id);
			sqlite3_bind_int64(s, 2, now_ms + PIN_TTL_MS);
			rc = exec_stmt(st, s, "renew pins");
		}
	}
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = pin_row_change(st, ids[i], drop[i], now_ms);
	if (rc) {
		sq_rollback(st);
		return rc;
	}
	rc = commit_lazy(st);
	if (rc)
		return rc;

	/* ...and its outcome applied to what the pins are now. */
	pthread_mutex_lock(&st->pin_lock);
	for (size_t i = 0; i < n; i++) {
		bool found;
		int64_t at = pin_find(st, ids[i], &found);

		if (!found)
			continue;
		if (!drop[i]) {
			st->pins[at].in_store = true;
		} else if (st->pins[at].count == 0) {
			memmove(&st->pins[at], &st->pins[at + 1],
				(st->npins - (size_t)at - 1) * sizeof(*st->pins));
			st->npins--;
		} else {
			/* Opened again meanwhile: its row goes back next time. */
			st->pins[at].in_store = false;
		}
	}
	if (renew)
		st->pins_renew_ms = now_ms + PIN_RENEW_MS;
	pthread_mutex_unlock(&st->pin_lock);
	return 0;
}

/* A content version's bytes, written as chunks of content from buf. */
static int put_chunks(struct store_impl *st, int64_t content, int64_t first_seq,
		      const char *buf, size_t len)
{
	sqlite3_stmt *ins = stmt(st, S_CHUNK_INSERT);
	int64_t seq = first_seq;
	int rc = 0;

	if (!ins)
		return -EIO;
	for (size_t off = 0; off < len && rc == 0; off += STORE_CHUNK, seq++) {
		size_t n = len - off > STORE_CHUNK ? STORE_CHUNK : len - off;

		sqlite3_bind_int64(ins, 1, content);
		sqlite3_bind_int64(ins, 2, seq);
		sqlite3_bind_blob(ins, 3, buf + off, (int)n, SQLITE_STATIC);
		rc = exec_stmt(st, ins, "write chunk");
	}
	return rc;
}

static int new_content(struct store_impl *st, int64_t size, bool dead,
		       int64_t *id)
{
	sqlite3_stmt *s = stmt(st, S_CONTENT_NEW);
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, size);
	sqlite3_bind_int(s, 2, dead);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*id = sqlite3_column_int64(s, 0);
	done(s);
	return rc == SQLITE_ROW ? 0 : sql_error(st, rc, "new content");
}

static int by_id(struct store_impl *st, enum stmt_id id, int64_t value,
		 const char *what)
{
	sqlite3_stmt *s = stmt(st, id);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, value);
	return exec_stmt(st, s, what);
}

static int sq_content_stage(struct store_impl *st, int fd, int64_t size,
			    int64_t now_ms, int64_t *content)
{
	char *chunk = NULL;
	bool found;
	int64_t id = 0, at;
	int rc;

	*content = 0;
	if (size == 0)
		return 0;
	chunk = malloc(STORE_CHUNK);
	if (!chunk)
		return -ENOMEM;
	/* Born dead and pinned: a crash leaves it for the purge. */
	pthread_mutex_lock(&st->pin_lock);
	rc = sq_begin(st, true);
	if (rc == 0) {
		rc = new_content(st, size, true, &id);
		if (rc == 0)
			rc = pin_row(st, id, now_ms);
		if (rc == 0)
			rc = commit_lazy(st);
		else
			sq_rollback(st);
	}
	if (rc == 0) {
		at = pin_find(st, id, &found);
		rc = pin_add(st, (size_t)at, id, true);
	}
	pthread_mutex_unlock(&st->pin_lock);
	for (int64_t off = 0; rc == 0 && off < size; off += STORE_CHUNK) {
		size_t want = size - off > STORE_CHUNK ? STORE_CHUNK
						       : (size_t)(size - off);
		size_t got = 0;

		/* The file is read with no lock held. */
		while (got < want && rc == 0) {
			ssize_t n = pread(fd, chunk + got, want - got, off + got);

			if (n < 0)
				rc = -errno;
			else if (n == 0)
				rc = -EIO;
			else
				got += (size_t)n;
		}
		if (rc == 0)
			rc = sq_begin(st, true);
		if (rc)
			break;
		rc = put_chunks(st, id, off / STORE_CHUNK, chunk, want);
		if (rc == 0)
			rc = commit_lazy(st);
		else
			sq_rollback(st);
	}
	free(chunk);
	if (rc) {
		sq_unpin(st, id);
		return rc;
	}
	*content = id;
	return 0;
}

/* ---- reading content -------------------------------------------------- */

/*
 * A read takes a pooled read-only connection for the time of one call:
 * a short transaction, never a snapshot that lives with the open file.
 */

static void reader_conn_close(struct reader_conn *rc)
{
	sqlite3_finalize(rc->find);
	sqlite3_close(rc->db);
}

static int reader_conn_get(struct store_impl *st, struct reader_conn *out)
{
	bool got = false;

	pthread_mutex_lock(&st->pool_lock);
	if (st->n_idle_readers > 0) {
		*out = st->idle_readers[--st->n_idle_readers];
		got = true;
	}
	pthread_mutex_unlock(&st->pool_lock);
	if (got)
		return 0;
	memset(out, 0, sizeof(*out));
	if (sqlite3_open_v2(st->open_name ? st->open_name : st->path, &out->db,
			    SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX |
			    (st->open_name ? SQLITE_OPEN_URI : 0), NULL) != SQLITE_OK ||
	    sqlite3_prepare_v3(out->db, "SELECT id FROM chunks WHERE content = ?1 "
			       "AND seq = ?2", -1, SQLITE_PREPARE_PERSISTENT,
			       &out->find, NULL) != SQLITE_OK) {
		syslog(LOG_ERR, "oncefs: reader: %s", sqlite3_errmsg(out->db));
		reader_conn_close(out);
		return -EIO;
	}
	sqlite3_busy_timeout(out->db, st->busy_timeout_ms);
	return 0;
}

static void reader_conn_put(struct store_impl *st, struct reader_conn *c)
{
	bool kept = false;

	pthread_mutex_lock(&st->pool_lock);
	if (st->n_idle_readers < (int)(sizeof(st->idle_readers) /
				       sizeof(st->idle_readers[0]))) {
		st->idle_readers[st->n_idle_readers++] = *c;
		kept = true;
	}
	pthread_mutex_unlock(&st->pool_lock);
	if (!kept)
		reader_conn_close(c);
}

static int sq_content_read(struct store_impl *st, int64_t content, int64_t size,
			   int64_t off, char *buf, size_t len, size_t *got)
{
	struct reader_conn c;
	sqlite3_blob *blob = NULL;
	int rc;

	*got = 0;
	if (content == 0 || off < 0 || off >= size)
		return 0;
	if ((int64_t)len > size - off)
		len = (size_t)(size - off);
	rc = reader_conn_get(st, &c);
	if (rc)
		return rc;
	if (sqlite3_exec(c.db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
		reader_conn_close(&c);
		return -EIO;
	}
	while (rc == 0 && *got < len) {
		int64_t at = off + (int64_t)*got;
		int64_t in = at % STORE_CHUNK, rowid = -1;
		size_t n = len - *got;

		sqlite3_bind_int64(c.find, 1, content);
		sqlite3_bind_int64(c.find, 2, at / STORE_CHUNK);
		if (sqlite3_step(c.find) == SQLITE_ROW)
			rowid = sqlite3_column_int64(c.find, 0);
		sqlite3_reset(c.find);
		if (rowid < 0) {
			/* The version is gone: only an unpinned read sees that. */
			rc = -EIO;
			break;
		}
		if (blob ? sqlite3_blob_reopen(blob, rowid)
			 : sqlite3_blob_open(c.db, "main", "chunks", "data",
					     rowid, 0, &blob)) {
			rc = -EIO;
			break;
		}
		if ((int64_t)n > STORE_CHUNK - in)
			n = (size_t)(STORE_CHUNK - in);
		if ((int64_t)n > sqlite3_blob_bytes(blob) - in ||
		    sqlite3_blob_read(blob, buf + *got, (int)n, (int)in))
			rc = -EIO;
		else
			*got += n;
	}
	sqlite3_blob_close(blob);
	sqlite3_exec(c.db, "COMMIT", NULL, NULL, NULL);
	reader_conn_put(st, &c);
	if (rc == 0 && !read_still_valid(st))
		rc = -EAGAIN;
	return rc;
}

/* ---- rows that name content ------------------------------------------- */

static int sq_step_set_content(struct store_impl *st, struct step_row *r,
			       int64_t content, int64_t size, int64_t mtime_ns)
{
	sqlite3_stmt *s = stmt(st, S_STEP_SET_CONTENT);
	sqlite3_stmt *live = stmt(st, S_CONTENT_LIVE);
	int rc;

	if (!s || !live)
		return -EIO;
	rc = r->content ? by_id(st, S_CONTENT_KILL, r->content, "old content") : 0;
	if (rc == 0 && content) {
		sqlite3_bind_int64(live, 1, content);
		sqlite3_bind_int64(live, 2, size);
		rc = exec_stmt(st, live, "new content");
		if (rc == 0 && sqlite3_changes(st->main.db) != 1)
			rc = -EIO;	/* the staged version is gone */
	}
	if (rc)
		return rc;
	sqlite3_bind_int64(s, 1, r->id);
	sqlite3_bind_int64(s, 2, content);
	sqlite3_bind_int64(s, 3, size);
	sqlite3_bind_int64(s, 4, mtime_ns);
	rc = exec_stmt(st, s, "step content");
	if (rc == 0) {
		r->content = content;
		r->size = size;
		r->mtime_ns = mtime_ns;
	}
	return rc;
}

static int sq_step_delete(struct store_impl *st, int64_t id)
{
	int rc = by_id(st, S_STEP_KILL_CONTENT, id, "step content");

	return rc ? rc : by_id(st, S_STEP_DELETE, id, "delete step");
}

/*
 * The purge, in one transaction of bounded work: checkpoints of old
 * epochs (found through workflows_to_purge, never a scan), then up to
 * max chunks of one dead version that no live pin holds.
 */
static int sq_purge(struct store_impl *st, int64_t now_ms, int max,
		    int64_t *purged)
{
	sqlite3_stmt *s = stmt(st, S_PURGE_WF);
	int64_t wf = 0, epoch = 0, content = 0;
	int rc, n = 0;

	*purged = 0;
	if (!s)
		return -EIO;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		wf = sqlite3_column_int64(s, 0);
		epoch = sqlite3_column_int64(s, 1);
	}
	done(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sql_error(st, rc, "purge");
	if (wf) {
		int64_t ids[64];
		int want = max < 64 ? max : 64;

		s = stmt(st, S_PURGE_STEPS);
		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, wf);
		sqlite3_bind_int64(s, 2, epoch);
		sqlite3_bind_int(s, 3, want);
		while (n < want && (rc = sqlite3_step(s)) == SQLITE_ROW)
			ids[n++] = sqlite3_column_int64(s, 0);
		done(s);
		rc = 0;
		for (int i = 0; i < n && rc == 0; i++)
			rc = sq_step_delete(st, ids[i]);
		if (rc == 0 && n < want) {
			s = stmt(st, S_PURGE_WF_DONE);
			rc = s ? 0 : -EIO;
			if (s) {
				sqlite3_bind_int64(s, 1, wf);
				sqlite3_bind_int64(s, 2, epoch);
				rc = exec_stmt(st, s, "purged epoch");
			}
		}
		if (rc)
			return rc;
		/* Done with that workflow: count it, so that the caller goes on. */
		*purged += n ? n : (n < want);
	}
	/* Dead versions, up to max chunks in all. */
	for (int left = max; left > 0; left -= n) {
		content = 0;
		s = stmt(st, S_PURGE_CONTENT);
		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, now_ms);
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW)
			content = sqlite3_column_int64(s, 0);
		done(s);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return sql_error(st, rc, "purge content");
		if (content == 0)
			return 0;
		s = stmt(st, S_PURGE_CHUNKS);
		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, content);
		sqlite3_bind_int(s, 2, left);
		rc = exec_stmt(st, s, "purge chunks");
		if (rc)
			return rc;
		n = sqlite3_changes(st->main.db);
		*purged += n;
		if (n == left)
			break;	/* perhaps more of it: the next call goes on */
		/* The last of it: the version goes, with its lapsed pins. */
		rc = by_id(st, S_PURGE_CONTENT_ROW, content, "purge content");
		if (rc == 0)
			rc = by_id(st, S_PIN_DROP_ALL, content, "lapsed pins");
		if (rc)
			return rc;
		(*purged)++;
		n++;
	}
	return 0;
}

/* ---- sweeping --------------------------------------------------------- */

static int sq_key_expired(struct store_impl *st, int64_t now_ms,
			  struct key_row *rows, int max, int *n)
{
	sqlite3_stmt *s = stmt(st, S_KEY_EXPIRED);

	*n = 0;
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, now_ms);
	sqlite3_bind_int(s, 2, max);
	return read_rows(st, s, key_reader, rows, sizeof(*rows), max, n,
			 "sweep keys");
}

/*
 * The sweep's walk over workflows: the next up to SWEEP_WFS after *cursor
 * (from the start again after the last), with their retention in ms.
 */
#define SWEEP_WFS 64

static int sweep_wfs(struct store_impl *st, int64_t *cursor, int64_t *ids,
		     int64_t *retention_ms, int *n)
{
	sqlite3_stmt *s = stmt(st, S_SWEEP_WFS);
	int rc;

	*n = 0;
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, *cursor);
	sqlite3_bind_int(s, 2, SWEEP_WFS);
	while (*n < SWEEP_WFS && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		ids[*n] = sqlite3_column_int64(s, 0);
		retention_ms[*n] = sqlite3_column_int64(s, 1) * 1000;
		(*n)++;
	}
	done(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sql_error(st, rc, "sweep workflows");
	*cursor = *n == SWEEP_WFS ? ids[*n - 1] : 0;
	return 0;
}

static int sq_key_retired(struct store_impl *st, int64_t now_ms,
			  struct key_row *rows, int max, int *n, bool *more)
{
	int64_t ids[SWEEP_WFS], keep[SWEEP_WFS];
	int nwf, rc;

	*n = 0;
	rc = sweep_wfs(st, &st->retire_cursor, ids, keep, &nwf);
	*more = st->retire_cursor != 0;
	for (int i = 0; i < nwf && rc == 0 && *n < max; i++) {
		sqlite3_stmt *s = stmt(st, S_KEY_RETIRED);
		int got = 0;

		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, ids[i]);
		sqlite3_bind_int64(s, 2, (now_ms - keep[i]) * 1000000);
		sqlite3_bind_int(s, 3, max - *n);
		rc = read_rows(st, s, key_reader, rows + *n, sizeof(*rows),
			       max - *n, &got, "sweep keys");
		*n += got;
		/* A full batch: this workflow again next time. */
		if (*n == max) {
			st->retire_cursor = ids[i] - 1;
			*more = true;
		}
	}
	return rc;
}

/*
 * Only a prefix of a log goes, the lines before the first young one, so
 * that the file keeps its shape; each workflow's oldest lines are read in
 * order, and the cut is one range delete on the primary key.
 */
static int sq_event_trim(struct store_impl *st, int64_t now_ms, int max,
			 int64_t *n, bool *more)
{
	int64_t ids[SWEEP_WFS], keep[SWEEP_WFS];
	int nwf, rc;

	*n = 0;
	rc = sweep_wfs(st, &st->trim_cursor, ids, keep, &nwf);
	*more = st->trim_cursor != 0;
	for (int i = 0; i < nwf && rc == 0 && *n < max; i++) {
		sqlite3_stmt *s = stmt(st, S_EVENT_OLDEST);
		int64_t cut = -1, old = 0;

		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, ids[i]);
		sqlite3_bind_int64(s, 2, max - *n + 1);
		while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
			cut = sqlite3_column_int64(s, 0);
			if (sqlite3_column_int64(s, 1) >= now_ms - keep[i] ||
			    old == max - *n)
				break;
			old++;
			cut = -1;
		}
		done(s);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return sql_error(st, rc, "trim events");
		rc = 0;
		if (old == 0)
			continue;
		s = stmt(st, S_EVENT_CUT);
		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, ids[i]);
		/* No young line left: the whole log, up to its end. */
		sqlite3_bind_int64(s, 2, cut >= 0 ? cut : INT64_MAX);
		rc = exec_stmt(st, s, "trim events");
		if (rc == 0)
			rc = by_id(st, S_EVENT_REBASE, ids[i], "rebase events");
		*n += old;
		if (*n == max) {
			st->trim_cursor = ids[i] - 1;
			*more = true;
		}
	}
	return rc;
}

static int sq_event_list(struct store_impl *st, int64_t wf, int64_t since_ms,
			 int (*fn)(void *arg, const struct event_view *ev),
			 void *arg)
{
	sqlite3_stmt *s = stmt(st, S_EVENT_LIST);
	int rc, stop = 0;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, wf);
	sqlite3_bind_int64(s, 2, since_ms);
	while (!stop && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct event_view ev = {
			.time_ms = sqlite3_column_int64(s, 0),
			.line = (const char *)sqlite3_column_text(s, 1),
		};

		if (!ev.line)
			ev.line = "";
		stop = fn(arg, &ev);
	}
	done(s);
	if (stop)
		return stop;
	return rc == SQLITE_DONE ? 0 : sql_error(st, rc, "list events");
}

/*
 * The invariants, each a query that returns one row per violation with a
 * description.  (Unique generations and names are enforced by the schema,
 * and checked by integrity_check.)
 */
static const char *const invariants[] = {
	"SELECT 'key ' || quote(CAST(name AS TEXT)) || ' belongs to missing workflow ' || wf "
	"FROM keys WHERE wf NOT IN (SELECT id FROM workflows)",
	"SELECT 'key ' || quote(CAST(name AS TEXT)) || ' has unknown status ' || status "
	"FROM keys WHERE status NOT IN (0, 1, 2, 3)",
	"SELECT 'key ' || quote(CAST(name AS TEXT)) || ' has generation ' || generation || "
	"' beyond the sequence (' || (SELECT value FROM sequence WHERE "
	"name = 'generation') || ')' FROM keys WHERE generation > "
	"(SELECT value FROM sequence WHERE name = 'generation') OR generation < 1",
	"SELECT 'key ' || quote(CAST(name AS TEXT)) || ' has attempt ' || attempt FROM keys "
	"WHERE attempt < 1",
	"SELECT 'key ' || quote(CAST(name AS TEXT)) || ': a name of ' || length(name) || "
	"' bytes' FROM keys WHERE length(name) NOT BETWEEN 1 AND 255 OR "
	"instr(name, X'2F') OR instr(name, X'00')",
	"SELECT 'workflow ' || quote(CAST(name AS TEXT)) || ': a bad name' FROM workflows WHERE "
	"length(name) NOT BETWEEN 1 AND 255 OR instr(name, X'2F') OR "
	"instr(name, X'00') OR substr(name, 1, 1) = X'2E'",
	"SELECT 'workflow ' || quote(CAST(name AS TEXT)) || ': bad policy' FROM workflows WHERE "
	"on_input_change NOT IN (0, 1, 2) OR dedup_on NOT IN (0, 1) OR "
	"in_flight_ttl < 1 OR retention < 0",
	"SELECT 'workflow ' || quote(CAST(name AS TEXT)) || ': fingerprint of ' || "
	"length(fingerprint) || ' bytes' FROM workflows WHERE "
	"length(fingerprint) > 256",
	"SELECT 'step ' || quote(CAST(name AS TEXT)) || ' belongs to missing workflow ' || wf "
	"FROM steps WHERE wf NOT IN (SELECT id FROM workflows)",
	"SELECT 'step ' || quote(CAST(s.name AS TEXT)) || ' has epoch ' || s.epoch || "
	"', after its workflow''s ' || w.epoch FROM steps s JOIN workflows w "
	"ON w.id = s.wf WHERE s.epoch > w.epoch",
	"SELECT 'step ' || quote(CAST(s.name AS TEXT)) || ' says ' || s.size || "
	"' bytes, its content ' || s.content || ' is ' || coalesce(c.size || "
	"' bytes' || iif(c.dead, ', dead', ''), 'missing') FROM steps s LEFT JOIN "
	"contents c ON c.id = s.content WHERE (s.content = 0 AND s.size != 0) OR "
	"(s.content != 0 AND (c.id IS NULL OR c.size != s.size OR c.dead))",
	"SELECT 'key ' || quote(CAST(k.name AS TEXT)) || ' says ' || k.result_len || "
	"' bytes of result, its content ' || k.content || ' is ' || coalesce(c.size "
	"|| ' bytes' || iif(c.dead, ', dead', ''), 'missing') FROM keys k LEFT JOIN "
	"contents c ON c.id = k.content WHERE (k.content = 0 AND k.result_len != 0) "
	"OR (k.content != 0 AND (c.id IS NULL OR c.size != k.result_len OR c.dead))",
	"SELECT 'content ' || c.id || ' holds ' || coalesce(sum(length(ch.data)), 0) || "
	"' bytes, says ' || c.size FROM contents c LEFT JOIN chunks ch ON "
	"ch.content = c.id WHERE c.dead = 0 GROUP BY c.id HAVING "
	"coalesce(sum(length(ch.data)), 0) != c.size",
	"SELECT 'chunk ' || id || ' belongs to missing content ' || content FROM chunks "
	"WHERE content NOT IN (SELECT id FROM contents)",
	"SELECT 'event at ' || off || ' belongs to missing workflow ' || wf "
	"FROM events WHERE wf NOT IN (SELECT id FROM workflows)",
	"SELECT 'workflow ' || quote(CAST(w.name AS TEXT)) || ': events end at ' || "
	"coalesce(max(e.off + length(CAST(e.line AS BLOB)) + 1), w.events_base) || "
	"', size says ' || w.events_size FROM workflows w LEFT JOIN events e "
	"ON e.wf = w.id GROUP BY w.id HAVING coalesce(max(e.off + "
	"length(CAST(e.line AS BLOB)) + 1), w.events_base) != w.events_size",
	"SELECT 'event at ' || off || ' of workflow ' || wf || ' is not JSON' "
	"FROM events WHERE NOT json_valid(line)",
	"SELECT 'input hold ' || id || ' belongs to missing workflow ' || wf "
	"FROM holds WHERE wf NOT IN (SELECT id FROM workflows)",
	"SELECT 'key ' || quote(CAST(name AS TEXT)) || ' took over generation ' || "
	"previous || ', not older than its own ' || generation FROM keys "
	"WHERE previous < 0 OR previous >= generation",
};

/* SQLite's progress handler during integrity_check: keep the caller told. */
static int check_ticks(void *arg)
{
	const struct store_check_calls *calls = arg;

	calls->progress(calls->arg, "the database's integrity", 0,
			(int)(sizeof(invariants) / sizeof(invariants[0])) + 1);
	return 0;
}

static int sq_check(struct store_impl *st,
		    const struct store_check_calls *calls, int64_t *problems)
{
	int steps = (int)(sizeof(invariants) / sizeof(invariants[0])) + 1;
	sqlite3 *db = st->main.db;
	sqlite3_stmt *s;
	int rc;

	*problems = 0;
	rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL);
	if (rc != SQLITE_OK)
		return sql_error(st, rc, "integrity_check");
	if (calls->progress) {
		calls->progress(calls->arg, "the database's integrity", 0, steps);
		sqlite3_progress_handler(db, 1000000, check_ticks, (void *)calls);
	}
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *msg = (const char *)sqlite3_column_text(s, 0);

		if (msg && strcmp(msg, "ok") != 0) {
			calls->report(calls->arg, msg);
			(*problems)++;
		}
	}
	sqlite3_finalize(s);
	sqlite3_progress_handler(db, 0, NULL, NULL);
	if (rc != SQLITE_DONE)
		return sql_error(st, rc, "integrity_check");
	for (size_t i = 0; i < sizeof(invariants) / sizeof(invariants[0]); i++) {
		if (calls->progress)
			calls->progress(calls->arg, "oncefs's invariants",
					(int)i + 1, steps);
		rc = sqlite3_prepare_v2(db, invariants[i], -1, &s, NULL);
		if (rc != SQLITE_OK)
			return sql_error(st, rc, "check");
		while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
			calls->report(calls->arg, (const char *)sqlite3_column_text(s, 0));
			(*problems)++;
		}
		sqlite3_finalize(s);
		if (rc != SQLITE_DONE)
			return sql_error(st, rc, "check");
	}
	return 0;
}

const struct store_ops store_sqlite_ops = {
	.name = "sqlite",
	.open = sq_open,
	.close = sq_close,
	.changed = sq_changed,
	.get_stats = sq_get_stats,
	.problem = sq_problem,
	.checkpoint = sq_checkpoint,
	.on_wal_growth = sq_on_wal_growth,
	.begin = sq_begin,
	.commit = sq_commit,
	.rollback = sq_rollback,
	.next_generation = sq_next_generation,
	.wf_by_name = sq_wf_by_name,
	.wf_by_id = sq_wf_by_id,
	.wf_insert = sq_wf_insert,
	.wf_update = sq_wf_update,
	.wf_delete = sq_wf_delete,
	.wf_list = sq_wf_list,
	.key_get = sq_key_get,
	.key_by_generation = sq_key_by_generation,
	.key_result = sq_key_result,
	.key_insert = sq_key_insert,
	.key_update = sq_key_update,
	.key_set_result = sq_key_set_result,
	.key_delete = sq_key_delete,
	.key_note = sq_key_note,
	.key_set_note = sq_key_set_note,
	.key_clear_notes = sq_key_clear_notes,
	.key_list = sq_key_list,
	.key_any = sq_key_any,
	.step_get = sq_step_get,
	.step_by_id = sq_step_by_id,
	.step_any = sq_step_any,
	.step_list = sq_step_list,
	.step_insert = sq_step_insert,
	.step_update = sq_step_update,
	.step_delete = sq_step_delete,
	.step_set_content = sq_step_set_content,
	.pin = sq_pin,
	.unpin = sq_unpin,
	.pins_renew = sq_pins_renew,
	.content_read = sq_content_read,
	.content_stage = sq_content_stage,
	.purge = sq_purge,
	.hold = sq_hold,
	.unhold = sq_unhold,
	.hold_any = sq_hold_any,
	.holds_renew = sq_holds_renew,
	.event_append = sq_event_append,
	.event_read = sq_event_read,
	.event_list = sq_event_list,
	.check = sq_check,
	.key_expired = sq_key_expired,
	.key_retired = sq_key_retired,
	.event_trim = sq_event_trim,
};
