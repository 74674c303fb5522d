/*
 * store_sqlite.c - the SQLite backend of the store (store_backend.h): the
 * store on an embedded SQLite database.  This file holds its statements
 * and schema, the helpers its other files share (store_sqlite.h says
 * which file has what), opening, upgrading and checking a store.
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
#include "store_sqlite.h"

#define ONCE_APPLICATION_ID 0x6f6e6365	/* "once" */

#define WF_COLS "id, name, uid, gid, mode, ctime_ns, mtime_ns, on_input_change, " \
	"dedup_on, in_flight_ttl, retention, fingerprint, epoch, " \
	"events_size - events_base"
#define KEY_COLS "id, wf, name, status, generation, attempt, expires_ms, " \
	"mtime_ns, holder_pid, holder_uid, result_len, content, previous, " \
	"holder_host"
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
		"result_len, holder_host) VALUES(?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
		"?10, ?11, 0, 0, ?12) RETURNING id",
	/*
	 * A key's workflow and name never change, and its generation only
	 * when it is claimed again: an update that sets none of them writes
	 * no page of their three indexes (SQLite rewrites the entry of every
	 * indexed column an UPDATE sets, to the same value or not).
	 */
	[S_KEY_UPDATE] = "UPDATE keys SET status = ?4, attempt = ?6, "
		"expires_ms = ?7, mtime_ns = ?8, holder_pid = ?9, "
		"holder_uid = ?10, previous = ?11, holder_host = ?12 "
		"WHERE id = ?1 AND generation = ?5",
	[S_KEY_UPDATE_GEN] = "UPDATE keys SET generation = ?5, status = ?4, "
		"attempt = ?6, expires_ms = ?7, mtime_ns = ?8, holder_pid = ?9, "
		"holder_uid = ?10, previous = ?11, holder_host = ?12 "
		"WHERE id = ?1",
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
	[S_HOLD_DELETE] = "DELETE FROM holds WHERE id = ?1 AND mount = ?2",
	/* A hold that lapsed stays lapsed: another mount may have moved on. */
	[S_HOLD_RENEW] = "UPDATE holds SET expires_ms = ?2 WHERE mount = ?1 "
		"AND expires_ms > ?3",
	[S_HOLD_ANY] = "SELECT EXISTS(SELECT 1 FROM holds WHERE wf = ?1 "
		"AND expires_ms > ?2 AND id != ?3)",
	[S_HOLD_MINE] = "SELECT EXISTS(SELECT 1 FROM holds WHERE mount = ?1)",
	[S_HOLD_LAPSED] = "SELECT EXISTS(SELECT 1 FROM holds WHERE "
		"expires_ms <= ?1)",
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
	"  id INTEGER PRIMARY KEY AUTOINCREMENT," \
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
	"  holder_host TEXT NOT NULL DEFAULT '',"
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

/* Map a SQLite result code to -errno, logging what is not the user's. */
int sq_error(struct store_impl *st, int rc, const char *what)
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
sqlite3_stmt *sq_stmt(struct store_impl *st, enum stmt_id id)
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

void sq_done(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

/* Step a statement that returns no row; reset it. */
int sq_exec(struct store_impl *st, sqlite3_stmt *s, const char *what)
{
	int rc = sqlite3_step(s);

	sq_done(s);
	if (rc == SQLITE_DONE || rc == SQLITE_ROW)
		return 0;
	return sq_error(st, rc, what);
}


void sq_bind_blob(sqlite3_stmt *s, int i, const void *p, size_t len)
{
	sqlite3_bind_blob64(s, i, p, len, SQLITE_TRANSIENT);
}

/*
 * Nothing read from the file is trusted: a store may have been edited by
 * hand or by another program.  A value out of its range makes the row
 * unusable (-EIO), with the reason logged and kept for sq_problem().
 */
int sq_bad_row(struct store_impl *st, const char *table, int64_t id,
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

const char *sq_problem(struct store_impl *st, char *buf, size_t size)
{
	pthread_mutex_lock(&st->problem_lock);
	snprintf(buf, size, "%s", st->problem);
	pthread_mutex_unlock(&st->problem_lock);
	return buf;
}

/* A name column: 1..NAME_MAX_LEN bytes, no '/' and no NUL. */
int sq_copy_name(struct store_impl *st, const char *table, int64_t id,
		 sqlite3_stmt *s, int col, char *dst, size_t *len)
{
	size_t n = (size_t)sqlite3_column_bytes(s, col);
	const char *p = sqlite3_column_blob(s, col);

	if (n == 0 || n > NAME_MAX_LEN || !p)
		return sq_bad_row(st, table, id, "name length", (int64_t)n);
	if (memchr(p, '/', n) || memchr(p, '\0', n))
		return sq_bad_row(st, table, id, "name with '/' or NUL, length",
			       (int64_t)n);
	memcpy(dst, p, n);
	dst[n] = '\0';
	*len = n;
	return 0;
}

/* An integer column that must lie in [lo, hi]. */
int sq_column_in(struct store_impl *st, const char *table, int64_t id,
		 sqlite3_stmt *s, int col, const char *what, int64_t lo,
		 int64_t hi, int64_t *out)
{
	int64_t v = sqlite3_column_int64(s, col);

	if (sqlite3_column_type(s, col) != SQLITE_INTEGER || v < lo || v > hi)
		return sq_bad_row(st, table, id, what, v);
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
 * (sq_read_still_valid()).  Creates nothing, writes nothing.
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
bool sq_read_still_valid(struct store_impl *st)
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

/* An upgrade to version that is ddl alone, in one transaction. */
static int upgrade_by_ddl(struct store_impl *st, const char *ddl, int version,
			  char *err, size_t errlen)
{
	sqlite3 *db = st->main.db;
	char set[64], what[64];
	int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, ddl, NULL, NULL, NULL);
	snprintf(set, sizeof(set), "PRAGMA user_version = %d", version);
	snprintf(what, sizeof(what), "upgrade the store from schema %d",
		 version - 1);
	return finish_schema(db, rc, set, what, err, errlen);
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

	return upgrade_by_ddl(st, ddl, 3, err, errlen);
}

/* Schema 4 keeps the host of a key's claimant. */
static int upgrade_v3(struct store_impl *st, char *err, size_t errlen)
{
	static const char ddl[] =
		"ALTER TABLE keys ADD COLUMN holder_host TEXT NOT NULL DEFAULT '';";

	return upgrade_by_ddl(st, ddl, 4, err, errlen);
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
	if (rc == 0 && from < 4)
		rc = upgrade_v3(st, err, errlen);
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

int sq_open(const char *path, const struct store_options *opt,
	    struct store_impl **out, char *err, size_t errlen)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	struct store_impl *st = NULL;
	pthread_condattr_t ca;
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
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&st->gather_cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->pool_lock, NULL);
	pthread_mutex_init(&st->problem_lock, NULL);
	pthread_mutex_init(&st->pin_lock, NULL);
	pin_table_init(&st->pins);
	st->mount_id = store_new_mount_id();
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
		snprintf(err, errlen, "the store has schema version %lld, older "
			 "than this oncefs's (%d): mount it once with this oncefs "
			 "to upgrade it", (long long)from_version,
			 STORE_SCHEMA_VERSION);
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
	pthread_cond_destroy(&st->gather_cond);
	pthread_mutex_destroy(&st->lock);
	pthread_mutex_destroy(&st->pool_lock);
	pthread_mutex_destroy(&st->problem_lock);
	pthread_mutex_destroy(&st->pin_lock);
	pin_table_free(&st->pins);
	free(st->path);
	free(st);
	return rc;
}

void sq_close(struct store_impl *st)
{
	if (!st)
		return;
	/* A clean unmount leaves no pins behind for others to wait out. */
	if ((st->pins.n || sq_holds_mine(st)) && sq_begin(st, true) == 0) {
		if (sq_by_id(st, S_PIN_DROP_MOUNT, st->mount_id, "unpin") == 0 &&
		    sq_by_id(st, S_HOLD_DROP_MOUNT, st->mount_id, "unhold") == 0)
			sq_commit_lazy(st);
		else
			sq_rollback(st);
	}
	sqlite3_close(st->checkpointer);
	/* Readers first: the last connection to close removes the WAL. */
	for (int i = 0; i < st->n_idle_readers; i++)
		sq_reader_conn_close(&st->idle_readers[i]);
	close_conn(&st->main);
	if (st->wal_fd >= 0)
		close(st->wal_fd);
	if (st->shared_fd >= 0)
		close(st->shared_fd);
	free(st->open_name);
	pthread_mutex_destroy(&st->sync_lock);
	pthread_cond_destroy(&st->sync_cond);
	pthread_cond_destroy(&st->gather_cond);
	pin_table_free(&st->pins);
	free(st->unheld);
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

void sq_on_wal_growth(struct store_impl *st, void (*fn)(void *arg),
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

int sq_checkpoint(struct store_impl *st)
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

int sq_changed(struct store_impl *st, int64_t *seen)
{
	sqlite3_stmt *s;
	int64_t dv = 0;
	int rc;

	pthread_mutex_lock(&st->lock);
	s = sq_stmt(st, S_DATA_VERSION);
	rc = s ? sqlite3_step(s) : SQLITE_ERROR;
	if (rc == SQLITE_ROW)
		dv = sqlite3_column_int64(s, 0);
	if (s)
		sq_done(s);
	pthread_mutex_unlock(&st->lock);
	if (rc != SQLITE_ROW)
		return -EIO;
	if (dv == *seen)
		return 0;
	*seen = dv;
	return 1;
}

void sq_get_stats(struct store_impl *st, struct store_stats *out)
{
	pthread_mutex_lock(&st->lock);
	out->round_trips = 0;		/* no server: every call is local */
	out->commits = st->stats.commits;
	out->pages_written = st->stats.pages_written;
	out->max_write_us = st->stats.max_write_us;
	out->max_maintenance_us = st->stats.max_maintenance_us;
	pthread_mutex_unlock(&st->lock);
	pthread_mutex_lock(&st->sync_lock);
	out->syncs = st->stats.syncs;
	out->sync_failed = st->sync_failed;
	pthread_mutex_unlock(&st->sync_lock);
}

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

int sq_check(struct store_impl *st,
	     const struct store_check_calls *calls, int64_t *problems)
{
	int steps = (int)(sizeof(invariants) / sizeof(invariants[0])) + 1;
	sqlite3 *db = st->main.db;
	sqlite3_stmt *s;
	int rc;

	*problems = 0;
	rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL);
	if (rc != SQLITE_OK)
		return sq_error(st, rc, "integrity_check");
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
		return sq_error(st, rc, "integrity_check");
	for (size_t i = 0; i < sizeof(invariants) / sizeof(invariants[0]); i++) {
		if (calls->progress)
			calls->progress(calls->arg, "oncefs's invariants",
					(int)i + 1, steps);
		rc = sqlite3_prepare_v2(db, invariants[i], -1, &s, NULL);
		if (rc != SQLITE_OK)
			return sq_error(st, rc, "check");
		while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
			calls->report(calls->arg, (const char *)sqlite3_column_text(s, 0));
			(*problems)++;
		}
		sqlite3_finalize(s);
		if (rc != SQLITE_DONE)
			return sq_error(st, rc, "check");
	}
	return 0;
}

/* The host's clock: every mount of a SQLite store is on this host. */
static int64_t sq_now_ms(struct store_impl *st)
{
	struct timespec ts;

	(void)st;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const struct store_ops store_sqlite_ops = {
	.name = "sqlite",
	.open = sq_open,
	.close = sq_close,
	.now_ms = sq_now_ms,
	.changed = sq_changed,
	.get_stats = sq_get_stats,
	.problem = sq_problem,
	.checkpoint = sq_checkpoint,
	.contended = sq_contended,
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
