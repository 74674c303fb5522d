/*
 * store_pg.c - the PostgreSQL backend of the store (store_backend.h),
 * for mounts on many hosts that share one set of keys.  This file holds
 * its statements and schema, the helpers its other files share
 * (store_pg.h says which file has what), connecting, opening, checking.
 *
 * Connection parameters are libpq's own: nothing here parses a URL.  A
 * password must come from where libpq looks for one (~/.pgpass,
 * PGPASSWORD, a service file), never from the store's name, which is on
 * a command line that `ps` shows to every user.
 *
 * The tables live in a schema of their own, oncefs unless the mount
 * says (-o pg_schema=NAME), which every session makes its search_path;
 * every statement is constant text, prepared once per connection, its
 * values bound in binary: no statement is ever built from a name, and
 * the one that cannot take its name as a parameter, CREATE SCHEMA, takes
 * the schema's name checked (pg_schema_ok) and quoted by libpq.  The SQL
 * keeps to what CockroachDB and YugabyteDB also run (see the README): no
 * advisory locks, no large objects, no LISTEN/NOTIFY, no procedural
 * code, no pg_xact_status().
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "store_pg.h"

/* How long a connection attempt may take, unless the name says. */
#define PG_CONNECT_TIMEOUT "10"

#define WF_COLS "id, name, uid, gid, mode, ctime_ns, mtime_ns, on_input_change, " \
	"dedup_on, in_flight_ttl, retention, fingerprint, epoch, " \
	"events_size - events_base"
#define KEY_COLS "id, wf, name, status, generation, attempt, expires_ms, " \
	"mtime_ns, holder_pid, holder_uid, result_len, content, previous, " \
	"holder_host"
#define STEP_COLS "id, wf, epoch, name, size, mtime_ns, content, atime_ns"
/* Marks a content version dead: the one a row names before it changes. */
#define KILL(table) "UPDATE contents SET dead = 1 WHERE id = " \
	"(SELECT content FROM " table " WHERE id = $1)"

/* The same columns of a row named t (for joins). */
#define WF_COLS_OF(t) t ".id, " t ".name, " t ".uid, " t ".gid, " t ".mode, " \
	t ".ctime_ns, " t ".mtime_ns, " t ".on_input_change, " t ".dedup_on, " \
	t ".in_flight_ttl, " t ".retention, " t ".fingerprint, " t ".epoch, " \
	t ".events_size - " t ".events_base"
#define KEY_COLS_OF(t) t ".id, " t ".wf, " t ".name, " t ".status, " \
	t ".generation, " t ".attempt, " t ".expires_ms, " t ".mtime_ns, " \
	t ".holder_pid, " t ".holder_uid, " t ".result_len, " t ".content, " \
	t ".previous, " t ".holder_host"
/* An event line rendered with marks (event.h), its numbers put in. */
#define MARKED(line, gen, num) "replace(replace(" line ", chr(1) || 'g', " \
	gen "::text), chr(1) || 'n', " num "::text)"
/* Lines l(n, line) at the end of workflow wf's file, stamped time_ms. */
#define APPEND_LINES(wf, time_ms) \
	"sz AS (SELECT coalesce(sum(octet_length(line) + 1), 0) AS total, " \
	"  min(octet_length(line) + 1) FILTER (WHERE n = 1) AS head FROM l), " \
	"we AS (UPDATE workflows SET events_size = events_size + sz.total " \
	"  FROM sz WHERE id = " wf " AND sz.total > 0 " \
	"  RETURNING events_size - sz.total AS base, sz.head), " \
	"ev AS (INSERT INTO events(wf, off, time_ms, line) SELECT " wf ", " \
	"  we.base + CASE WHEN l.n = 1 THEN 0 ELSE we.head END, " time_ms \
	", l.line FROM we, l) "

/*
 * The statements, with the types of their parameters: i for bigint, b
 * for bytea, t for text.  A parameter a statement does not use still has
 * its type, so that one binding serves an insert and an update.
 */
static const struct {
	const char *sql;
	const char *types;
} stmts[P_NSTMTS] = {
	[P_CHANGES] = { "SELECT changes FROM writer WHERE id = 1", "" },
	/* The first statement of every write: see store_pg_txn.c. */
	[P_WRITER] = { "UPDATE writer SET changes = changes + 1 WHERE id = 1 "
		"RETURNING " DB_CLOCK ", pg_current_xact_id()::text", "" },
	/* ---- the operations (store_pg_verbs.c), each one statement */
	[P_LOOKUP_KEY] = { "SELECT " WF_COLS_OF("w") ", " KEY_COLS_OF("k") ", "
		DB_CLOCK " FROM workflows w LEFT JOIN keys k ON k.wf = w.id AND "
		"k.name = $2 WHERE w.id = $1", "ib" },
	[P_LOOKUP_GEN] = { "SELECT " KEY_COLS_OF("k") ", " WF_COLS_OF("w") ", "
		DB_CLOCK " FROM keys k LEFT JOIN workflows w ON w.id = k.wf "
		"WHERE k.generation = $1", "i" },
	/*
	 * $1 wf, $2 name, $3 now, $4 lease, $5 pid, $6 uid, $7..$9 the
	 * claim, expire and adopt lines, $10 the host.  Returns (0, the new row, the
	 * workflow, adopted) or (1, the live row, the workflow, 0); no row
	 * when there is no such workflow.
	 */
	[P_CLAIM] = { "WITH w AS (SELECT * FROM workflows WHERE id = $1), "
		"o AS (SELECT " KEY_COLS " FROM keys WHERE wf = $1 AND name = $2), "
		"f AS MATERIALIZED (SELECT nextval('generation') AS gen, "
		"  coalesce((SELECT attempt FROM o), 0) + 1 AS attempt, "
		"  coalesce((SELECT generation FROM o), 0) AS prev, "
		"  coalesce((SELECT status = 1 FROM o), false) AS adopt, "
		"  least($4, w.in_flight_ttl * 1000) AS lease FROM w "
		"  WHERE NOT EXISTS (SELECT 1 FROM o WHERE status IN (2, 3) OR "
		"  (status = 1 AND expires_ms > $3))), "
		"up AS (INSERT INTO keys(wf, name, status, generation, attempt, "
		"  expires_ms, mtime_ns, holder_pid, holder_uid, previous, content, "
		"  result_len, holder_host) SELECT $1, $2, 1, gen, attempt, "
		"  $3 + lease, $3 * 1000000, $5, $6, prev, 0, 0, $10 FROM f "
		"  ON CONFLICT (wf, name) DO UPDATE SET status = 1, "
		"  generation = excluded.generation, attempt = excluded.attempt, "
		"  expires_ms = excluded.expires_ms, mtime_ns = excluded.mtime_ns, "
		"  holder_pid = excluded.holder_pid, "
		"  holder_uid = excluded.holder_uid, previous = excluded.previous, "
		"  holder_host = excluded.holder_host, "
		"  content = 0, result_len = 0, request = NULL, original = NULL "
		"  RETURNING " KEY_COLS "), "
		"dead AS (UPDATE contents SET dead = 1 WHERE id = "
		"  (SELECT content FROM o) AND EXISTS (SELECT 1 FROM f)), "
		"l AS (SELECT 1 AS n, CASE WHEN adopt THEN "
		MARKED("$8", "prev", "0") " ELSE " MARKED("$7", "gen", "attempt")
		" END AS line FROM f "
		"  UNION ALL SELECT 2, " MARKED("$9", "gen", "prev") " FROM f "
		"  WHERE adopt), "
		APPEND_LINES("$1", "$3")
		"SELECT 0::int8, up.*, " WF_COLS_OF("w") ", "
		"(SELECT adopt FROM f)::int::int8 FROM up, w "
		"UNION ALL SELECT 1::int8, o.*, " WF_COLS_OF("w") ", 0::int8 "
		"FROM o, w WHERE NOT EXISTS (SELECT 1 FROM f)", "ibiiiitttb" },
	/*
	 * $1 generation, $2 now, $3 status, $4 result, $5 its length, $6 the
	 * line, $7 DEDUP_SUCCESS, $8 the chunk size.  Returns (0: done,
	 * 1: stale, 2: terminal; the row before).
	 */
	[P_FINALIZE] = { "WITH o AS (SELECT " KEY_COLS " FROM keys WHERE "
		"generation = $1), "
		"w AS (SELECT id, dedup_on FROM workflows WHERE id = "
		"  (SELECT wf FROM o)), "
		"c AS (SELECT CASE WHEN o.status = 0 OR (o.status = 1 AND "
		"  o.expires_ms <= $2) OR NOT EXISTS (SELECT 1 FROM w) THEN 1 "
		"  WHEN o.status IN (2, 3) THEN 2 ELSE 0 END AS code FROM o), "
		"n AS (SELECT CASE WHEN $3 = 3 AND w.dedup_on = $7 THEN 0 "
		"  ELSE $3 END AS status FROM w, c WHERE c.code = 0), "
		"nc AS (INSERT INTO contents(size, dead) SELECT $5, 0 FROM n "
		"  WHERE n.status <> 0 AND $5 > 0 RETURNING id), "
		"ch AS (INSERT INTO chunks(content, seq, data) SELECT nc.id, s, "
		"  substring($4 FROM (s * $8 + 1)::int FOR $8::int) FROM nc, "
		"  generate_series(0, ($5 - 1) / $8) s), "
		"kill AS (UPDATE contents SET dead = 1 WHERE id = "
		"  (SELECT content FROM o) AND EXISTS (SELECT 1 FROM n)), "
		"up AS (UPDATE keys SET status = n.status, mtime_ns = $2 * 1000000, "
		"  content = coalesce((SELECT id FROM nc), 0), result_len = "
		"  CASE WHEN EXISTS (SELECT 1 FROM nc) THEN $5 ELSE 0 END "
		"  FROM n WHERE keys.generation = $1 RETURNING keys.id), "
		"l AS (SELECT 1 AS n, $6 AS line FROM up), "
		APPEND_LINES("(SELECT id FROM w)", "$2")
		"SELECT coalesce((SELECT code FROM c), 1)::int8, o.* "
		"FROM (SELECT 1) one LEFT JOIN o ON true", "iiibitii" },
	/* $1 generation, $2 now, $3 the line.  As P_FINALIZE (1: stale). */
	[P_ABANDON] = { "WITH o AS (SELECT " KEY_COLS " FROM keys WHERE "
		"generation = $1), "
		"c AS (SELECT CASE WHEN status = 1 AND expires_ms > $2 THEN 0 "
		"  ELSE 1 END AS code FROM o), "
		"up AS (UPDATE keys SET status = 0, mtime_ns = $2 * 1000000 "
		"  FROM c WHERE keys.generation = $1 AND c.code = 0 "
		"  RETURNING keys.wf), "
		"l AS (SELECT 1 AS n, $3 AS line FROM up), "
		APPEND_LINES("(SELECT wf FROM up)", "$2")
		"SELECT coalesce((SELECT code FROM c), 1)::int8, o.* "
		"FROM (SELECT 1) one LEFT JOIN o ON true", "iit" },
	/* $1 generations, $2 now, $3 the mount's lease. */
	[P_RENEW] = { "WITH due AS (SELECT k.id, least($3, w.in_flight_ttl * "
		"1000) AS lease FROM keys k JOIN workflows w ON w.id = k.wf WHERE "
		"k.generation = ANY($1) AND k.status = 1 AND k.expires_ms > $2) "
		"UPDATE keys SET expires_ms = $2 + due.lease FROM due WHERE "
		"keys.id = due.id AND keys.expires_ms - $2 < due.lease - "
		"due.lease / 3", "aii" },
	/*
	 * $1 workflow, $2 epoch, $3 step (0: by name), $4 name, $5 the
	 * staged content, $6 its size, $7 now, $8 the line.  Returns the
	 * step after (or nulls), the code (0: done; 1: the workflow or the
	 * step went; 2: the epoch moved on; 3: the step is named otherwise
	 * now, left to the row functions), and whether the content was
	 * there to take.
	 */
	[P_STEP_COMMIT] = { "WITH w AS (SELECT epoch FROM workflows WHERE "
		"id = $1), "
		"old AS (SELECT id, content, name FROM steps WHERE CASE WHEN "
		"  $3 <> 0 THEN id = $3 ELSE wf = $1 AND epoch = $2 AND "
		"  name = $4 END), "
		"c AS (SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM w) THEN 1 "
		"  WHEN (SELECT epoch FROM w) <> $2 THEN 2 "
		"  WHEN $3 <> 0 AND NOT EXISTS (SELECT 1 FROM old) THEN 1 "
		"  WHEN $3 <> 0 AND (SELECT name FROM old) <> $4 THEN 3 "
		"  ELSE 0 END AS code), "
		"new AS (UPDATE contents SET dead = 0, size = $6 WHERE id = $5 "
		"  AND (SELECT code FROM c) = 0 RETURNING id), "
		"ok AS (SELECT code = 0 AND ($5 = 0 OR EXISTS (SELECT 1 FROM "
		"  new)) AS go FROM c), "
		"kill AS (UPDATE contents SET dead = 1 WHERE id = (SELECT "
		"  content FROM old) AND id <> $5 AND (SELECT go FROM ok)), "
		"ins AS (INSERT INTO steps(wf, epoch, name, size, mtime_ns, "
		"  content) SELECT $1, $2, $4, $6, $7 * 1000000, $5 FROM ok "
		"  WHERE go AND NOT EXISTS (SELECT 1 FROM old) "
		"  RETURNING " STEP_COLS "), "
		"up AS (UPDATE steps SET content = $5, size = $6, "
		"  mtime_ns = $7 * 1000000 FROM ok WHERE ok.go AND "
		"  steps.id = (SELECT id FROM old) RETURNING " STEP_COLS "), "
		"r AS (SELECT * FROM up UNION ALL SELECT * FROM ins), "
		"l AS (SELECT 1 AS n, $8 AS line FROM r), "
		APPEND_LINES("$1", "$7")
		"SELECT r.*, (SELECT code FROM c)::int8, "
		"(SELECT go FROM ok)::int::int8 FROM (SELECT 1) one "
		"LEFT JOIN r ON true", "iiibiiit" },
	/* A connection's row of last_writes (store_pg_txn.c). */
	[P_MARK_NEW] = { "INSERT INTO last_writes(conn, op, time_ms) VALUES "
		"($1, 0, $2) ON CONFLICT (conn) DO NOTHING", "ii" },
	/* Fails (division by zero) unless the row is at op $2 - 1. */
	[P_MARK] = { "WITH u AS (UPDATE last_writes SET op = $2, time_ms = $3 "
		"WHERE conn = $1 AND op = $2 - 1 RETURNING 1) "
		"SELECT 1 / (SELECT count(*)::int FROM u)", "iii" },
	/* The row locked (a write still running on it ends first), at $2. */
	[P_RESOLVE] = { "WITH o AS (SELECT op FROM last_writes WHERE conn = $1 "
		"FOR UPDATE) UPDATE last_writes SET op = greatest(o.op, $2) "
		"FROM o WHERE conn = $1 RETURNING o.op", "ii" },
	[P_MARK_DROP] = { "DELETE FROM last_writes WHERE conn = $1 OR "
		"time_ms < $2", "ii" },
	[P_NEXT_GEN] = { "SELECT nextval('generation')", "" },
	[P_WF_BY_NAME] = { "SELECT " WF_COLS " FROM workflows WHERE name = $1", "b" },
	[P_WF_BY_ID] = { "SELECT " WF_COLS " FROM workflows WHERE id = $1", "i" },
	[P_WF_INSERT] = { "INSERT INTO workflows(name, uid, gid, mode, ctime_ns, "
		"mtime_ns, on_input_change, dedup_on, in_flight_ttl, retention, "
		"fingerprint, epoch, events_size) "
		"VALUES($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0) "
		"ON CONFLICT (name) DO NOTHING RETURNING id", "ibiiiiiiiiibii" },
	[P_WF_UPDATE] = { "UPDATE workflows SET name = $2, uid = $3, gid = $4, "
		"mode = $5, ctime_ns = $6, mtime_ns = $7, on_input_change = $8, "
		"dedup_on = $9, in_flight_ttl = $10, retention = $11, "
		"fingerprint = $12, epoch = $13 WHERE id = $1 AND NOT EXISTS "
		"(SELECT 1 FROM workflows o WHERE o.name = $2 AND o.id <> $1) "
		"RETURNING id", "ibiiiiiiiiibii" },
	[P_WF_NAME_TAKEN] = { "SELECT count(*) FROM workflows WHERE name = $2 "
		"AND id <> $1", "ib" },
	/* A workflow goes with its keys, checkpoints, events and holds. */
	[P_WF_DELETE] = { "WITH c AS (UPDATE contents SET dead = 1 WHERE id IN "
		"(SELECT content FROM steps WHERE wf = $1 UNION ALL "
		"SELECT content FROM keys WHERE wf = $1)), "
		"k AS (DELETE FROM keys WHERE wf = $1), "
		"s AS (DELETE FROM steps WHERE wf = $1), "
		"e AS (DELETE FROM events WHERE wf = $1), "
		"h AS (DELETE FROM holds WHERE wf = $1) "
		"DELETE FROM workflows WHERE id = $1", "i" },
	[P_WF_LIST] = { "SELECT " WF_COLS " FROM workflows WHERE id > $1 "
		"ORDER BY id LIMIT $2", "ii" },
	[P_KEY_GET] = { "SELECT " KEY_COLS " FROM keys WHERE wf = $1 AND "
		"name = $2", "ib" },
	[P_KEY_BY_GEN] = { "SELECT " KEY_COLS " FROM keys WHERE generation = $1",
		"i" },
	[P_KEY_INSERT] = { "INSERT INTO keys(wf, name, status, generation, "
		"attempt, expires_ms, mtime_ns, holder_pid, holder_uid, previous, "
		"content, result_len, holder_host) VALUES($2, $3, $4, $5, $6, $7, "
		"$8, $9, $10, $11, 0, 0, $12) ON CONFLICT DO NOTHING RETURNING id",
		"iibiiiiiiiib" },
	[P_KEY_UPDATE] = { "UPDATE keys SET wf = $2, name = $3, status = $4, "
		"generation = $5, attempt = $6, expires_ms = $7, mtime_ns = $8, "
		"holder_pid = $9, holder_uid = $10, previous = $11, "
		"holder_host = $12 WHERE id = $1", "iibiiiiiiiib" },
	/* A key's new result: the old version dies, the new one is named. */
	[P_KEY_SET_CONTENT] = { "WITH old AS (" KILL("keys") " AND $2 <> "
		"(SELECT content FROM keys WHERE id = $1)) "
		"UPDATE keys SET content = $2, result_len = $3 WHERE id = $1",
		"iii" },
	[P_KEY_DELETE] = { "WITH old AS (" KILL("keys") ") "
		"DELETE FROM keys WHERE id = $1", "i" },
	[P_KEY_NOTES] = { "SELECT request, original FROM keys WHERE id = $1", "i" },
	[P_KEY_SET_REQUEST] = { "UPDATE keys SET request = $2 WHERE id = $1", "ib" },
	[P_KEY_SET_ORIGINAL] = { "UPDATE keys SET original = $2 WHERE id = $1",
		"ib" },
	[P_KEY_CLEAR_NOTES] = { "UPDATE keys SET request = NULL, original = NULL "
		"WHERE id = $1", "i" },
	[P_KEY_LIST] = { "SELECT " KEY_COLS " FROM keys WHERE wf = $1 AND id > $2 "
		"AND (status IN (2, 3) OR (status = 1 AND expires_ms > $3)) "
		"ORDER BY id LIMIT $4", "iiii" },
	[P_KEY_ANY] = { "SELECT count(*) FROM (SELECT 1 FROM keys WHERE wf = $1 "
		"AND (status IN (2, 3) OR (status = 1 AND expires_ms > $2)) "
		"LIMIT 1) k", "ii" },
	[P_STEP_GET] = { "SELECT " STEP_COLS " FROM steps WHERE wf = $1 AND "
		"epoch = $2 AND name = $3", "iib" },
	[P_STEP_BY_ID] = { "SELECT " STEP_COLS " FROM steps WHERE id = $1", "i" },
	[P_STEP_ANY] = { "SELECT count(*) FROM (SELECT 1 FROM steps WHERE "
		"wf = $1 AND epoch = $2 LIMIT 1) s", "ii" },
	[P_STEP_LIST] = { "SELECT " STEP_COLS " FROM steps WHERE wf = $1 AND "
		"epoch = $2 AND id > $3 ORDER BY id LIMIT $4", "iiii" },
	[P_STEP_INSERT] = { "INSERT INTO steps(wf, epoch, name, size, mtime_ns, "
		"content) VALUES($2, $3, $4, 0, $5, 0) ON CONFLICT DO NOTHING "
		"RETURNING id", "iiibii" },
	[P_STEP_UPDATE] = { "UPDATE steps SET name = $4, mtime_ns = $5, "
		"atime_ns = $6 WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM steps o "
		"WHERE o.wf = $2 AND o.epoch = $3 AND o.name = $4 AND o.id <> $1) "
		"RETURNING id", "iiibii" },
	[P_STEP_NAME_TAKEN] = { "SELECT count(*) FROM steps WHERE wf = $2 AND "
		"epoch = $3 AND name = $4 AND id <> $1", "iiib" },
	/*
	 * A checkpoint's new content: the old version dies, the staged one
	 * lives (and must still be there), the row names it.
	 */
	[P_STEP_SET_CONTENT] = { "WITH old AS (" KILL("steps") " AND $2 <> "
		"(SELECT content FROM steps WHERE id = $1)), "
		"new AS (UPDATE contents SET dead = 0, size = $3 WHERE id = $2 "
		"RETURNING id) "
		"UPDATE steps SET content = $2, size = $3, mtime_ns = $4 "
		"WHERE id = $1 AND ($2 = 0 OR EXISTS (SELECT 1 FROM new)) "
		"RETURNING id", "iiii" },
	[P_STEP_DELETE] = { "WITH old AS (" KILL("steps") ") "
		"DELETE FROM steps WHERE id = $1", "i" },
	[P_PURGE_WF] = { "SELECT id, epoch FROM workflows WHERE purged_epoch < "
		"epoch LIMIT 1", "" },
	[P_PURGE_STEPS] = { "SELECT id FROM steps WHERE wf = $1 AND epoch < $2 "
		"LIMIT $3", "iii" },
	[P_PURGE_WF_DONE] = { "UPDATE workflows SET purged_epoch = $2 "
		"WHERE id = $1", "ii" },
	/* A dead version no live pin holds. */
	[P_PURGE_CONTENT] = { "SELECT id FROM contents c WHERE dead = 1 AND NOT "
		"EXISTS (SELECT 1 FROM pins p WHERE p.content = c.id AND "
		"p.expires_ms > $1) LIMIT 1", "i" },
	[P_PURGE_CHUNKS] = { "DELETE FROM chunks WHERE content = $1 AND seq IN "
		"(SELECT seq FROM chunks WHERE content = $1 ORDER BY seq LIMIT $2)",
		"ii" },
	[P_PURGE_CONTENT_ROW] = { "WITH p AS (DELETE FROM pins WHERE content = $1) "
		"DELETE FROM contents WHERE id = $1 AND dead = 1", "i" },
	[P_CONTENT_NEW] = { "INSERT INTO contents(size, dead) VALUES($1, $2) "
		"RETURNING id", "ii" },
	[P_CONTENT_KILL] = { "UPDATE contents SET dead = 1 WHERE id = $1", "i" },
	[P_CHUNK_INSERT] = { "INSERT INTO chunks(content, seq, data) "
		"VALUES($1, $2, $3)", "iib" },
	[P_CHUNK_READ] = { "SELECT substring(data FROM $3::int4 FOR $4::int4) "
		"FROM chunks WHERE content = $1 AND seq = $2", "iiii" },
	[P_PIN_INSERT] = { "INSERT INTO pins(content, mount, expires_ms) "
		"SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM contents WHERE "
		"id = $1) ON CONFLICT (content, mount) DO UPDATE SET expires_ms = "
		"excluded.expires_ms", "iii" },
	[P_PIN_RENEW] = { "UPDATE pins SET expires_ms = $2 WHERE mount = $1", "ii" },
	[P_PIN_DELETE] = { "DELETE FROM pins WHERE content = $1 AND mount = $2",
		"ii" },
	[P_PIN_DROP_MOUNT] = { "DELETE FROM pins WHERE mount = $1", "i" },
	[P_HOLD_INSERT] = { "INSERT INTO holds(wf, mount, expires_ms) "
		"VALUES($1, $2, $3) RETURNING id", "iii" },
	[P_HOLD_DELETE] = { "DELETE FROM holds WHERE id = $1 AND mount = $2", "ii" },
	/* A hold that lapsed stays lapsed: another mount may have moved on. */
	[P_HOLD_RENEW] = { "UPDATE holds SET expires_ms = $2 WHERE mount = $1 "
		"AND expires_ms > $3", "iii" },
	[P_HOLD_ANY] = { "SELECT count(*) FROM (SELECT 1 FROM holds WHERE wf = $1 "
		"AND expires_ms > $2 AND id <> $3 LIMIT 1) h", "iii" },
	[P_HOLD_MINE] = { "SELECT count(*) FROM (SELECT 1 FROM holds WHERE "
		"mount = $1 LIMIT 1) h", "i" },
	[P_HOLD_LAPSED] = { "SELECT count(*) FROM (SELECT 1 FROM holds WHERE "
		"expires_ms <= $1 LIMIT 1) h", "i" },
	[P_HOLD_DROP_MOUNT] = { "DELETE FROM holds WHERE mount = $1", "i" },
	[P_HOLD_EXPIRED] = { "DELETE FROM holds WHERE expires_ms <= $1", "i" },
	/* A line at the end of the file, and the file's new size. */
	[P_EVENT_APPEND] = { "WITH g AS (UPDATE workflows SET events_size = "
		"events_size + $4 WHERE id = $1 RETURNING events_size - $4 AS off) "
		"INSERT INTO events(wf, off, time_ms, line) SELECT $1, off, $2, $3 "
		"FROM g", "iiti" },
	[P_EVENT_BASE] = { "SELECT events_base FROM workflows WHERE id = $1", "i" },
	[P_EVENT_READ] = { "SELECT off, line FROM events WHERE wf = $1 AND off >= "
		"coalesce((SELECT max(off) FROM events WHERE wf = $1 AND off <= $2), 0) "
		"ORDER BY off LIMIT $3", "iii" },
	[P_EVENT_REBASE] = { "UPDATE workflows SET events_base = coalesce((SELECT "
		"min(off) FROM events WHERE wf = $1), events_size) WHERE id = $1", "i" },
	[P_SWEEP_WFS] = { "SELECT id, retention FROM workflows WHERE id > $1 "
		"ORDER BY id LIMIT $2", "ii" },
	[P_EVENT_OLDEST] = { "SELECT off, time_ms FROM events WHERE wf = $1 "
		"ORDER BY off LIMIT $2", "ii" },
	[P_EVENT_CUT] = { "DELETE FROM events WHERE wf = $1 AND off < $2", "ii" },
	[P_EVENT_LIST] = { "SELECT time_ms, line FROM events WHERE wf = $1 AND "
		"time_ms >= $2 ORDER BY off", "ii" },
	[P_KEY_EXPIRED] = { "SELECT " KEY_COLS " FROM keys WHERE status = 1 AND "
		"expires_ms <= $1 LIMIT $2", "ii" },
	[P_KEY_RETIRED] = { "SELECT " KEY_COLS " FROM keys WHERE wf = $1 AND "
		"status <> 1 AND mtime_ns < $2 LIMIT $3", "iii" },
};

/*
 * The last write of each connection of each mount, by op number, so that
 * a write whose reply was lost can be looked up (store_pg_txn.c); a
 * connection's row goes when its mount unmounts, or a day after its last
 * write.  Version 4 added it.
 */
#define LAST_WRITES "CREATE TABLE IF NOT EXISTS last_writes(" \
	"  conn bigint PRIMARY KEY," \
	"  op bigint NOT NULL," \
	"  time_ms bigint NOT NULL);"

/*
 * The schema, in one transaction (the tables as the SQLite backend's;
 * store_sqlite.c says what each is for).  The writer row serializes
 * write transactions (store_pg.h) and counts them for store_changed().
 */
static const char schema[] =
	"CREATE TABLE meta(name text PRIMARY KEY, value text NOT NULL);"
	"CREATE TABLE writer(id int PRIMARY KEY CHECK (id = 1),"
	"  changes bigint NOT NULL);"
	"INSERT INTO writer VALUES (1, 0);"
	"CREATE SEQUENCE generation;"
	"CREATE TABLE workflows("
	"  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
	"  name bytea NOT NULL UNIQUE,"
	"  uid bigint NOT NULL, gid bigint NOT NULL, mode bigint NOT NULL,"
	"  ctime_ns bigint NOT NULL, mtime_ns bigint NOT NULL,"
	"  on_input_change bigint NOT NULL, dedup_on bigint NOT NULL,"
	"  in_flight_ttl bigint NOT NULL, retention bigint NOT NULL,"
	"  fingerprint bytea, epoch bigint NOT NULL,"
	"  events_size bigint NOT NULL,"
	"  events_base bigint NOT NULL DEFAULT 0,"
	"  purged_epoch bigint NOT NULL DEFAULT 0);"
	"CREATE INDEX workflows_to_purge ON workflows(id) "
	"  WHERE purged_epoch < epoch;"
	"CREATE TABLE keys("
	"  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
	"  wf bigint NOT NULL,"
	"  name bytea NOT NULL,"
	"  status bigint NOT NULL,"
	"  generation bigint NOT NULL UNIQUE,"
	"  attempt bigint NOT NULL,"
	"  expires_ms bigint NOT NULL,"
	"  mtime_ns bigint NOT NULL,"
	"  holder_pid bigint NOT NULL, holder_uid bigint NOT NULL,"
	"  holder_host bytea NOT NULL DEFAULT '',"
	"  content bigint NOT NULL DEFAULT 0,"
	"  result_len bigint NOT NULL DEFAULT 0,"
	"  previous bigint NOT NULL DEFAULT 0,"
	"  request bytea,"
	"  original bytea,"
	"  UNIQUE(wf, name));"
	"CREATE INDEX keys_by_workflow ON keys(wf, id);"
	"CREATE INDEX keys_by_expiry ON keys(expires_ms) WHERE status = 1;"
	"CREATE INDEX keys_by_age ON keys(wf, mtime_ns) WHERE status <> 1;"
	"CREATE TABLE steps("
	"  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
	"  wf bigint NOT NULL,"
	"  epoch bigint NOT NULL,"
	"  name bytea NOT NULL,"
	"  size bigint NOT NULL,"
	"  mtime_ns bigint NOT NULL,"
	"  content bigint NOT NULL DEFAULT 0,"
	"  atime_ns bigint NOT NULL DEFAULT 0,"
	"  UNIQUE(wf, epoch, name));"
	"CREATE INDEX steps_by_workflow ON steps(wf, epoch, id);"
	"CREATE TABLE contents("
	"  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
	"  size bigint NOT NULL,"
	"  dead bigint NOT NULL);"
	"CREATE INDEX contents_dead ON contents(id) WHERE dead = 1;"
	"CREATE TABLE chunks("
	"  content bigint NOT NULL,"
	"  seq bigint NOT NULL,"
	"  data bytea NOT NULL,"
	"  PRIMARY KEY(content, seq));"
	/* Chunks are read in slices: keep them uncompressed, out of line. */
	"ALTER TABLE chunks ALTER COLUMN data SET STORAGE EXTERNAL;"
	"CREATE TABLE pins("
	"  content bigint NOT NULL,"
	"  mount bigint NOT NULL,"
	"  expires_ms bigint NOT NULL,"
	"  PRIMARY KEY(content, mount));"
	"CREATE INDEX pins_by_mount ON pins(mount);"
	"CREATE TABLE holds("
	"  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
	"  wf bigint NOT NULL,"
	"  mount bigint NOT NULL,"
	"  expires_ms bigint NOT NULL);"
	"CREATE INDEX holds_by_workflow ON holds(wf, expires_ms);"
	"CREATE INDEX holds_by_mount ON holds(mount);"
	LAST_WRITES
	"CREATE TABLE events("
	"  wf bigint NOT NULL,"
	"  off bigint NOT NULL,"
	"  time_ms bigint NOT NULL,"
	"  line text NOT NULL,"
	"  PRIMARY KEY(wf, off));"
	"INSERT INTO meta VALUES ('schema_version', '4');"
	"COMMIT";

/* ---- helpers ---------------------------------------------------------- */

void pg_int(struct pg_params *p, int64_t v)
{
	int i = p->n++;

	p->ints[i] = htobe64((uint64_t)v);
	p->values[i] = (const char *)&p->ints[i];
	p->lengths[i] = 8;
	p->formats[i] = 1;
}

void pg_bytes(struct pg_params *p, const void *buf, size_t len)
{
	int i = p->n++;

	/* libpq wants a pointer even for zero bytes. */
	p->values[i] = buf ? buf : "";
	p->lengths[i] = (int)len;
	p->formats[i] = 1;
}

void pg_null(struct pg_params *p)
{
	int i = p->n++;

	p->values[i] = NULL;
	p->lengths[i] = 0;
	p->formats[i] = 1;
}

void pg_text(struct pg_params *p, const char *s)
{
	int i = p->n++;

	p->values[i] = s;
	p->lengths[i] = 0;
	p->formats[i] = 0;
}

static Oid type_oid(char t)
{
	switch (t) {
	case 'b':
		return 17;	/* bytea */
	case 't':
		return 25;	/* text */
	case 'a':
		return 1016;	/* bigint[], sent as text */
	default:
		return 20;	/* bigint */
	}
}

/* The first line of libpq's message, without its "FATAL:  " noise. */
static void first_line(const char *msg, char *out, size_t size)
{
	const char *fatal = strstr(msg, "FATAL:  ");
	size_t n;

	if (fatal)
		msg = fatal + 8;
	else if (strncmp(msg, "ERROR:  ", 8) == 0)
		msg += 8;
	n = strcspn(msg, "\n");
	snprintf(out, size, "%.*s", (int)n, msg);
}

/*
 * Map a failed result to -errno: what the user or the moment caused has
 * its errno; the rest is logged and is EIO.  A lost connection is
 * EAGAIN: nothing happened, and the next call reconnects.
 */
int pg_error(struct store_impl *st, const PGresult *r, const char *what)
{
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	char why[300];

	PGconn *conn = pg_cur()->conn;

	/*
	 * An error of libpq's own (no SQLSTATE: the server went, or the
	 * connection is in a state no request can use), or the server's word
	 * that it ends the session, is a lost connection: the next use opens
	 * a new one.
	 */
	if (!state || strncmp(state, "08", 2) == 0 ||
	    strncmp(state, "57P", 3) == 0)	/* the server ends the session */
		pg_cur()->broken = true;
	if (PQstatus(conn) != CONNECTION_OK || pg_cur()->broken) {
		if (!__atomic_exchange_n(&st->down_logged, true,
					 __ATOMIC_RELAXED))
			syslog(LOG_ERR, "oncefs: %s: lost the connection to "
			       "PostgreSQL (%s); reconnecting", what,
			       PQerrorMessage(conn));
		return -EAGAIN;
	}
	if (state) {
		/* serialization_failure, deadlock_detected */
		pg_cur()->conflict = strcmp(state, "40001") == 0 ||
				     strcmp(state, "40P01") == 0;
		if (pg_cur()->conflict ||
		    strcmp(state, "55P03") == 0 ||	/* lock_not_available */
		    strcmp(state, "57014") == 0)	/* query_canceled */
			return -EAGAIN;
		if (strcmp(state, "53100") == 0)	/* disk_full */
			return -ENOSPC;
		if (strcmp(state, "25006") == 0)	/* read_only_sql_transaction */
			return -EROFS;
		if (strcmp(state, "53200") == 0)	/* out_of_memory */
			return -ENOMEM;
	}
	first_line(r ? PQresultErrorMessage(r) : PQerrorMessage(conn), why,
		   sizeof(why));
	syslog(LOG_ERR, "oncefs: %s: %s", what, why);
	return -EIO;
}

void pg_stmt_name(enum pg_stmt id, char *buf, size_t size)
{
	snprintf(buf, size, "s%d", (int)id);
}

int pg_prepare(struct store_impl *st, enum pg_stmt id)
{
	Oid types[PG_MAX_PARAMS];
	int n = (int)strlen(stmts[id].types);
	char name[16];
	PGresult *r;

	struct pg_conn *c = pg_cur();

	if (c->prepared[id])
		return 0;
	pg_stmt_name(id, name, sizeof(name));
	for (int i = 0; i < n; i++)
		types[i] = type_oid(stmts[id].types[i]);
	pg_count_trip(st);
	r = PQprepare(c->conn, name, stmts[id].sql, n, types);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		int rc = pg_error(st, r, "prepare");

		PQclear(r);
		return rc;
	}
	PQclear(r);
	c->prepared[id] = true;
	return 0;
}

int pg_run(struct store_impl *st, enum pg_stmt id, struct pg_params *p,
	   PGresult **res)
{
	static const struct pg_params none;
	char name[16];
	PGresult *r;
	ExecStatusType status;
	bool retried = false;
	int rc;

	*res = NULL;
	if (!p)
		p = (struct pg_params *)&none;
	pg_stmt_name(id, name, sizeof(name));
again:
	rc = pg_prepare(st, id);
	if (rc)
		return rc;
	pg_count_trip(st);
	r = PQexecPrepared(pg_cur()->conn, name, p->n, p->values, p->lengths,
			   p->formats, 1);
	status = PQresultStatus(r);
	if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
		rc = pg_error(st, r, stmts[id].sql);

		PQclear(r);
		/*
		 * Outside a transaction, a connection found lost (the server
		 * restarted while this mount was idle) is reset and the one
		 * statement tried again: nothing of it had happened.
		 */
		if (rc == -EAGAIN && !pg_cur()->in_txn && !retried &&
		    (PQstatus(pg_cur()->conn) != CONNECTION_OK ||
		     pg_cur()->broken) &&
		    pg_reconnect(st) == 0) {
			retried = true;
			goto again;
		}
		return rc;
	}
	*res = r;
	return 0;
}

int pg_exec(struct store_impl *st, enum pg_stmt id, struct pg_params *p)
{
	PGresult *r;
	int rc = pg_run(st, id, p, &r);

	PQclear(r);
	return rc;
}

int pg_exec_count(struct store_impl *st, enum pg_stmt id,
		  struct pg_params *p, int64_t *count)
{
	PGresult *r;
	int rc = pg_run(st, id, p, &r);

	*count = 0;
	if (rc == 0)
		*count = strtoll(PQcmdTuples(r), NULL, 10);
	PQclear(r);
	return rc;
}

int64_t pg_col_int(const PGresult *r, int row, int col)
{
	uint64_t v;

	if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8)
		return INT64_MIN;
	memcpy(&v, PQgetvalue(r, row, col), 8);
	return (int64_t)be64toh(v);
}

int pg_one_int(struct store_impl *st, enum pg_stmt id, struct pg_params *p,
	       int64_t *out)
{
	PGresult *r;
	int rc = pg_run(st, id, p, &r);

	if (rc)
		return rc;
	rc = PQntuples(r) < 1 ? -ENOENT : 0;
	if (rc == 0)
		*out = pg_col_int(r, 0, 0);
	PQclear(r);
	return rc;
}

int pg_bad_row(struct store_impl *st, const char *table, int64_t id,
	       const char *what, int64_t value)
{
	pthread_mutex_lock(&st->problem_lock);
	snprintf(st->problem, sizeof(st->problem), "%s row %" PRId64 ": %s %"
		 PRId64 " is out of range (the store was changed by something "
		 "other than oncefs)", table, id, what, value);
	syslog(LOG_ERR, "oncefs: PostgreSQL store: %s", st->problem);
	pthread_mutex_unlock(&st->problem_lock);
	return -EIO;
}

static const char *pg_problem(struct store_impl *st, char *buf, size_t size)
{
	pthread_mutex_lock(&st->problem_lock);
	snprintf(buf, size, "%s", st->problem);
	pthread_mutex_unlock(&st->problem_lock);
	return buf;
}

/* ---- connecting -------------------------------------------------------- */

/* Does the name carry a password (in a URL or a connection string)? */
static int has_password(const char *name, bool *yes, char *err, size_t errlen)
{
	char *why = NULL;
	PQconninfoOption *opts = PQconninfoParse(name, &why);

	*yes = false;
	if (!opts) {
		snprintf(err, errlen, "%s: not a PostgreSQL URL or connection "
			 "string: %s", name, why ? why : "out of memory");
		PQfreemem(why);
		return -EINVAL;
	}
	for (PQconninfoOption *o = opts; o->keyword; o++)
		if (strcmp(o->keyword, "password") == 0 && o->val && *o->val)
			*yes = true;
	PQconninfoFree(opts);
	return 0;
}

/* A connection, or -errno with the reason in err. */
int pg_connect(const char *name, PGconn **out, char *err, size_t errlen)
{
	/* Later entries override earlier ones: the name's own settings win. */
	const char *const keys[] = { "connect_timeout",
				     "fallback_application_name", "keepalives",
				     "keepalives_idle", "keepalives_interval",
				     "keepalives_count", "dbname", NULL };
	/*
	 * Keepalives: a server whose client vanished (a host lost power
	 * mid-transaction) notices within about 25 s, and frees the
	 * writer row; so does this mount, of a server that vanished.
	 */
	const char *const values[] = { PG_CONNECT_TIMEOUT, "oncefs", "1", "10",
				       "5", "3", name, NULL };
	char why[400];
	PGconn *c = PQconnectdbParams(keys, values, 1);

	*out = NULL;
	if (!c) {
		snprintf(err, errlen, "cannot connect to PostgreSQL: out of memory");
		return -ENOMEM;
	}
	if (PQstatus(c) != CONNECTION_OK) {
		const char *msg = PQerrorMessage(c);
		int rc = -ECONNREFUSED;

		if (strstr(msg, "password authentication failed") ||
		    strstr(msg, "no password supplied") ||
		    strstr(msg, "no pg_hba.conf entry"))
			rc = -EACCES;
		else if (strstr(msg, "does not exist"))
			rc = -ENOENT;
		else if (strstr(msg, "timeout expired"))
			rc = -ETIMEDOUT;
		first_line(msg, why, sizeof(why));
		snprintf(err, errlen, "cannot connect to PostgreSQL: %s", why);
		PQfinish(c);
		return rc;
	}
	*out = c;
	return 0;
}

/* One constant statement with no parameters, for setup; true when it ran. */
static bool run_plain(PGconn *c, const char *sql, char *why, size_t size)
{
	PGresult *r = PQexec(c, sql);
	ExecStatusType s = PQresultStatus(r);
	bool ok = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;

	if (!ok && why)
		first_line(PQresultErrorMessage(r), why, size);
	PQclear(r);
	return ok;
}

/* A schema name that needs no quoting, and is not the system's. */
static bool pg_schema_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > PG_SCHEMA_MAX || strncmp(name, "pg_", 3) == 0 ||
	    strcmp(name, "public") == 0 || strcmp(name,
						  "information_schema") == 0 ||
	    !(name[0] == '_' || (name[0] >= 'a' && name[0] <= 'z')))
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = name[i];

		if (!(ch == '_' || (ch >= 'a' && ch <= 'z') ||
		      (ch >= '0' && ch <= '9')))
			return false;
	}
	return true;
}

/* The session's search_path: the store's schema alone. */
static bool use_schema(PGconn *c, const char *schema_name)
{
	const char *values[1] = { schema_name };
	PGresult *r = PQexecParams(c, "SELECT set_config('search_path', $1, "
				   "false)", 1, NULL, values, NULL, NULL, 0);
	bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;

	PQclear(r);
	return ok;
}

/*
 * A schema that exists must be the connecting role's (or a role it is a
 * member of): tables, and triggers on them, that another role controls
 * would run its code with this mount's rights.
 */
static int schema_owned(PGconn *c, const char *schema_name, char *err,
			size_t errlen)
{
	const char *values[1] = { schema_name };
	PGresult *r = PQexecParams(c, "SELECT pg_has_role(nspowner, 'MEMBER'), "
				   "pg_get_userbyid(nspowner) FROM pg_namespace "
				   "WHERE nspname = $1", 1, NULL, values, NULL,
				   NULL, 0);
	int rc = 0;

	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		snprintf(err, errlen, "cannot read the database's schemas: %s",
			 PQresultErrorMessage(r));
		err[strcspn(err, "\n")] = '\0';
		rc = -EIO;
	} else if (PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
		snprintf(err, errlen, "the schema %s belongs to the role %s, not "
			 "to %s: oncefs will not use tables another role "
			 "controls", schema_name, PQgetvalue(r, 0, 1), PQuser(c));
		rc = -EACCES;
	}
	PQclear(r);
	return rc;
}

/* Is the store's schema there, and of which version (0: none)? */
static int schema_version(PGconn *c, const char *schema_name, long *version,
			  char *err, size_t errlen)
{
	const char *values[1] = { schema_name };
	char why[400];
	PGresult *r;

	*version = 0;
	r = PQexecParams(c, "SELECT EXISTS (SELECT 1 FROM "
			 "information_schema.tables WHERE table_schema = $1 "
			 "AND table_name = 'meta')", 1, NULL, values, NULL,
			 NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		first_line(PQresultErrorMessage(r), why, sizeof(why));
		snprintf(err, errlen, "cannot read the database's schemas: %s", why);
		PQclear(r);
		return -EIO;
	}
	if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
		PQclear(r);
		return 0;
	}
	PQclear(r);
	/* The session's search_path is the schema (use_schema). */
	r = PQexec(c, "SELECT value FROM meta WHERE name = 'schema_version'");
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 ||
	    sscanf(PQgetvalue(r, 0, 0), "%ld", version) != 1 || *version < 1) {
		snprintf(err, errlen, "the schema %s holds a table meta that "
			 "is not oncefs's (no schema_version)", schema_name);
		PQclear(r);
		return -EINVAL;
	}
	PQclear(r);
	return 0;
}

int pg_session(struct store_impl *st, struct pg_conn *pc)
{
	PGconn *c = pc->conn;
	char timeout[32];
	const char *values[1] = { timeout };
	PGresult *r;
	bool ok;

	/*
	 * sync=full: a commit is durable on the server (and on the standbys
	 * synchronous_standby_names names) before its reply; below that, on
	 * the server's own schedule, which survives a crash of this mount
	 * but not of the server.
	 */
	memset(pc->prepared, 0, sizeof(pc->prepared));
	pc->session_ok = false;
	/*
	 * A transaction left idle (its mount stopped by SIGSTOP, or cut off)
	 * ends after 30 s, so the writer row it holds is free again; this
	 * mount's own transactions are short.
	 */
	ok = use_schema(c, st->schema) &&
	     run_plain(c, "SET idle_in_transaction_session_timeout = '30s'",
		       NULL, 0) &&
	     /* A flight's implicit transaction, as a write's BEGIN says. */
	     run_plain(c, "SET default_transaction_isolation = "
		       "'read committed'", NULL, 0) &&
	     run_plain(c, st->sync == STORE_SYNC_FULL ?
			  "SET synchronous_commit = on" :
			  "SET synchronous_commit = off", NULL, 0) &&
	     (!st->read_only ||
	      run_plain(c, "SET default_transaction_read_only = on", NULL, 0));
	if (!ok)
		return -EIO;
	/* A write waits for another mount's writer lock this long at most. */
	snprintf(timeout, sizeof(timeout), "%dms",
		 st->busy_timeout_ms > 0 ? st->busy_timeout_ms : 1);
	r = PQexecParams(c, "SELECT set_config('lock_timeout', $1, false)", 1,
			 NULL, values, NULL, NULL, 0);
	ok = PQresultStatus(r) == PGRES_TUPLES_OK;
	PQclear(r);
	pc->session_ok = ok;
	return ok ? 0 : -EIO;
}

/*
 * Create the store's schema (the session's search_path already names
 * it); another mount creating it at the same time wins.
 */
static int create_schema(PGconn *c, const char *schema_name, char *err,
			 size_t errlen)
{
	char why[400] = "out of memory", create[PG_SCHEMA_MAX + 64];
	char *quoted = PQescapeIdentifier(c, schema_name, strlen(schema_name));
	long version;
	bool ok;

	if (quoted)
		snprintf(create, sizeof(create),
			 "CREATE SCHEMA IF NOT EXISTS %s", quoted);
	ok = quoted && run_plain(c, "BEGIN", why, sizeof(why)) &&
	     run_plain(c, create, why, sizeof(why)) &&
	     run_plain(c, schema, why, sizeof(why));
	PQfreemem(quoted);
	if (ok)
		return 0;
	run_plain(c, "ROLLBACK", NULL, 0);
	if (schema_version(c, schema_name, &version, err, errlen) == 0 &&
	    version == STORE_SCHEMA_VERSION)
		return 0;
	snprintf(err, errlen, "cannot create the oncefs store in schema %s: "
		 "%s", schema_name, why);
	return strstr(why, "permission denied") ? -EACCES : -EIO;
}

/* Version 3 (no last_writes) to 4, by a mount that may write. */
static int upgrade_schema(PGconn *c, char *err, size_t errlen)
{
	static const char upgrade[] =
		"BEGIN;"
		LAST_WRITES
		"ALTER TABLE keys ADD COLUMN IF NOT EXISTS holder_host bytea "
		"NOT NULL DEFAULT '';"
		"UPDATE meta SET value = '4' WHERE name = 'schema_version' AND "
		"value = '3';"
		"COMMIT";
	char why[400];

	if (run_plain(c, upgrade, why, sizeof(why)))
		return 0;
	run_plain(c, "ROLLBACK", NULL, 0);
	snprintf(err, errlen, "cannot upgrade the oncefs schema to version 4: "
		 "%s", why);
	return strstr(why, "permission denied") ? -EACCES : -EIO;
}

static void pg_close(struct store_impl *st);

static int pg_open(const char *name, const struct store_options *opt,
		   struct store_impl **out, char *err, size_t errlen)
{
	const char *schema_name = opt->pg_schema ? opt->pg_schema : "oncefs";
	struct store_impl *st;
	bool password;
	long version;
	PGconn *c;
	int rc = has_password(name, &password, err, errlen);

	*out = NULL;
	if (rc)
		return rc;
	if (!pg_schema_ok(schema_name)) {
		snprintf(err, errlen, "pg_schema=%s: a schema's name is 1 to %d "
			 "lowercase letters, digits and '_', not starting with "
			 "a digit or pg_, nor public", schema_name,
			 PG_SCHEMA_MAX);
		return -EINVAL;
	}
	if (password) {
		snprintf(err, errlen, "the store's name holds a password, which "
			 "every user sees in ps: put it in ~/.pgpass, PGPASSWORD "
			 "or a service file instead");
		return -EINVAL;
	}
	rc = pg_connect(name, &c, err, errlen);
	if (rc)
		return rc;
	if (!use_schema(c, schema_name)) {
		snprintf(err, errlen, "cannot set the search_path: %s",
			 PQerrorMessage(c));
		err[strcspn(err, "\n")] = '\0';
		rc = -EIO;
	}
	if (rc == 0)
		rc = schema_owned(c, schema_name, err, errlen);
	if (rc == 0)
		rc = schema_version(c, schema_name, &version, err, errlen);
	if (rc == 0 && version == 0 && !opt->create) {
		snprintf(err, errlen, "database %s on %s holds no oncefs store "
			 "(schema %s): mount with -o create, or run "
			 "'oncectl init', to create one", PQdb(c), PQhost(c),
			 schema_name);
		rc = -ENOENT;
	} else if (rc == 0 && version > STORE_SCHEMA_VERSION) {
		snprintf(err, errlen, "the store in database %s has schema "
			 "version %ld, newer than this oncefs (%d): upgrade "
			 "oncefs", PQdb(c), version, STORE_SCHEMA_VERSION);
		rc = -EPROTONOSUPPORT;
	} else if (rc == 0 && version == 0 && opt->read_only) {
		snprintf(err, errlen, "database %s holds no oncefs store "
			 "(schema %s)", PQdb(c), schema_name);
		rc = -ENOENT;
	} else if (rc == 0 && version == 0) {
		rc = create_schema(c, schema_name, err, errlen);
	} else if (rc == 0 && version == 3 && !opt->read_only) {
		rc = upgrade_schema(c, err, errlen);
	} else if (rc == 0 && version < 3) {
		snprintf(err, errlen, "the store in database %s has schema "
			 "version %ld, which only oncefs's SQLite stores had",
			 PQdb(c), version);
		rc = -EPROTONOSUPPORT;
	}
	if (rc) {
		PQfinish(c);
		return rc;
	}
	st = calloc(1, sizeof(*st));
	if (st) {
		st->max_conns = opt->connections > 0 ? opt->connections
						     : PG_CONNECTIONS_DEFAULT;
		if (st->max_conns > PG_CONNECTIONS_MAX)
			st->max_conns = PG_CONNECTIONS_MAX;
		st->conns = calloc((size_t)st->max_conns, sizeof(*st->conns));
		st->name = strdup(name);
		snprintf(st->schema, sizeof(st->schema), "%s", schema_name);
	}
	if (!st || !st->conns || !st->name) {
		if (st) {
			free(st->conns);
			free(st->name);
		}
		free(st);
		PQfinish(c);
		return -ENOMEM;
	}
	for (int i = 0; i < st->max_conns; i++)
		st->conns[i].id = store_new_mount_id();
	st->conns[0].conn = c;
	st->nconns = 1;
	st->busy_timeout_ms = opt->busy_timeout_ms;
	st->sync = opt->read_only ? STORE_SYNC_OFF : opt->sync;
	st->read_only = opt->read_only;
	pthread_mutex_init(&st->lock, NULL);
	pthread_cond_init(&st->freed, NULL);
	pthread_mutex_init(&st->pin_lock, NULL);
	pthread_mutex_init(&st->problem_lock, NULL);
	pin_table_init(&st->pins);
	st->mount_id = store_new_mount_id();
	/* A first transaction reads the database's clock. */
	rc = pg_begin(st, false);
	if (rc == 0)
		rc = pg_commit(st);
	/* The rows of last_writes of mounts that went a day ago. */
	if (rc == 0 && !st->read_only && pg_take(st) == 0) {
		struct pg_params p = { 0 };

		pg_int(&p, 0);
		pg_int(&p, pg_now_ms(st) - 24 * 3600 * 1000);
		rc = pg_exec(st, P_MARK_DROP, &p);
		pg_give(st);
	}
	if (rc) {
		snprintf(err, errlen, "cannot use the oncefs store in database "
			 "%s: %s", PQdb(c), PQerrorMessage(c));
		err[strcspn(err, "\n")] = '\0';
		pg_close(st);
		return rc;
	}
	*out = st;
	return 0;
}

static void pg_close(struct store_impl *st)
{
	if (!st)
		return;
	/* A clean unmount leaves no pins or holds for others to wait out. */
	if (!st->read_only && (st->pins.n || st->n_unheld || pg_holds_mine(st)) &&
	    pg_begin(st, true) == 0) {
		struct pg_params p = { 0 };
		int rc;

		pg_int(&p, st->mount_id);
		rc = pg_exec(st, P_PIN_DROP_MOUNT, &p);
		if (rc == 0)
			rc = pg_exec(st, P_HOLD_DROP_MOUNT, &p);
		if (rc == 0)
			pg_commit(st);
		else
			pg_rollback(st);
	}
	/* Nor rows of last_writes: its writes all had their replies. */
	for (int i = 0; !st->read_only && i < st->nconns; i++) {
		struct pg_params p = { 0 };

		if (!st->conns[i].marked || pg_take(st) != 0)
			continue;
		pg_int(&p, st->conns[i].id);
		pg_int(&p, 0);
		pg_exec(st, P_MARK_DROP, &p);
		pg_give(st);
	}
	for (int i = 0; i < st->nconns; i++)
		PQfinish(st->conns[i].conn);
	free(st->conns);
	pin_table_free(&st->pins);
	free(st->unheld);
	pthread_mutex_destroy(&st->lock);
	pthread_cond_destroy(&st->freed);
	pthread_mutex_destroy(&st->pin_lock);
	pthread_mutex_destroy(&st->problem_lock);
	free(st->name);
	free(st);
}

static void pg_get_stats(struct store_impl *st, struct store_stats *out)
{
	pthread_mutex_lock(&st->lock);
	*out = st->stats;
	pthread_mutex_unlock(&st->lock);
}

/* The server checkpoints its own log: nothing for a mount to do. */
static int pg_checkpoint(struct store_impl *st)
{
	(void)st;
	return 0;
}

static void pg_on_wal_growth(struct store_impl *st, void (*fn)(void *arg),
			     void *arg)
{
	(void)st;
	(void)fn;
	(void)arg;
}

/* ---- checking ---------------------------------------------------------- */

/*
 * oncefs's invariants, each a query that returns one row per violation
 * with a description (the server checks its own pages: there is no
 * integrity_check to run).
 */
static const char *const invariants[] = {
	"SELECT 'key ' || quote_literal(encode(name, 'escape')) || ' belongs "
	"to missing workflow ' || wf FROM keys WHERE wf NOT IN (SELECT id FROM "
	"workflows)",
	"SELECT 'key ' || quote_literal(encode(name, 'escape')) || ' has "
	"unknown status ' || status FROM keys WHERE status NOT IN (0, 1, 2, 3)",
	"SELECT 'key ' || quote_literal(encode(name, 'escape')) || ' has "
	"generation ' || generation || ' beyond the sequence' FROM keys WHERE "
	"generation > (SELECT last_value FROM generation) OR generation < 1",
	"SELECT 'key ' || quote_literal(encode(name, 'escape')) || ' has "
	"attempt ' || attempt FROM keys WHERE attempt < 1",
	"SELECT 'key ' || quote_literal(encode(name, 'escape')) || ': a name "
	"of ' || length(name) || ' bytes' FROM keys WHERE length(name) NOT "
	"BETWEEN 1 AND 255 OR position('\\x2f'::bytea IN name) > 0 OR "
	"position('\\x00'::bytea IN name) > 0",
	"SELECT 'workflow ' || quote_literal(encode(name, 'escape')) || ': a "
	"bad name' FROM workflows WHERE length(name) NOT BETWEEN 1 AND 255 OR "
	"position('\\x2f'::bytea IN name) > 0 OR position('\\x00'::bytea IN "
	"name) > 0 OR substring(name FROM 1 FOR 1) = '\\x2e'::bytea",
	"SELECT 'workflow ' || quote_literal(encode(name, 'escape')) || ': bad "
	"policy' FROM workflows WHERE on_input_change NOT IN (0, 1, 2) OR "
	"dedup_on NOT IN (0, 1) OR in_flight_ttl < 1 OR retention < 0",
	"SELECT 'step ' || quote_literal(encode(name, 'escape')) || ' belongs "
	"to missing workflow ' || wf FROM steps WHERE wf NOT IN (SELECT id FROM "
	"workflows)",
	"SELECT 'step ' || quote_literal(encode(s.name, 'escape')) || ' has "
	"epoch ' || s.epoch || ', after its workflow''s ' || w.epoch FROM "
	"steps s JOIN workflows w ON w.id = s.wf WHERE s.epoch > w.epoch",
	"SELECT 'step ' || quote_literal(encode(s.name, 'escape')) || ' says ' "
	"|| s.size || ' bytes, its content ' || s.content || ' is ' || "
	"coalesce(c.size || ' bytes' || CASE WHEN c.dead = 1 THEN ', dead' "
	"ELSE '' END, 'missing') FROM steps s LEFT JOIN contents c ON c.id = "
	"s.content WHERE (s.content = 0 AND s.size <> 0) OR (s.content <> 0 "
	"AND (c.id IS NULL OR c.size <> s.size OR c.dead = 1))",
	"SELECT 'key ' || quote_literal(encode(k.name, 'escape')) || ' says ' "
	"|| k.result_len || ' bytes of result, its content ' || k.content || "
	"' is ' || coalesce(c.size || ' bytes' || CASE WHEN c.dead = 1 THEN "
	"', dead' ELSE '' END, 'missing') FROM keys k LEFT JOIN contents c ON "
	"c.id = k.content WHERE (k.content = 0 AND k.result_len <> 0) OR "
	"(k.content <> 0 AND (c.id IS NULL OR c.size <> k.result_len OR "
	"c.dead = 1))",
	"SELECT 'content ' || c.id || ' holds ' || coalesce(sum(length(ch.data)), "
	"0) || ' bytes, says ' || c.size FROM contents c LEFT JOIN chunks ch ON "
	"ch.content = c.id WHERE c.dead = 0 GROUP BY c.id, c.size HAVING "
	"coalesce(sum(length(ch.data)), 0) <> c.size",
	"SELECT 'chunk ' || seq || ' belongs to missing content ' || content "
	"FROM chunks WHERE content NOT IN (SELECT id FROM contents)",
	"SELECT 'event at ' || off || ' belongs to missing workflow ' || wf "
	"FROM events WHERE wf NOT IN (SELECT id FROM workflows)",
	"SELECT 'workflow ' || quote_literal(encode(w.name, 'escape')) || ': "
	"events end at ' || coalesce(max(e.off + octet_length(e.line) + 1), "
	"w.events_base) || ', size says ' || w.events_size FROM workflows w "
	"LEFT JOIN events e ON e.wf = w.id GROUP BY w.id, w.name, "
	"w.events_base, w.events_size HAVING coalesce(max(e.off + "
	"octet_length(e.line) + 1), w.events_base) <> w.events_size",
	"SELECT 'input hold ' || id || ' belongs to missing workflow ' || wf "
	"FROM holds WHERE wf NOT IN (SELECT id FROM workflows)",
	"SELECT 'key ' || quote_literal(encode(name, 'escape')) || ' took over "
	"generation ' || previous || ', not older than its own ' || generation "
	"FROM keys WHERE previous < 0 OR previous >= generation",
};

static int pg_check(struct store_impl *st,
		    const struct store_check_calls *calls, int64_t *problems)
{
	int steps = (int)(sizeof(invariants) / sizeof(invariants[0]));

	*problems = 0;
	for (int i = 0; i < steps; i++) {
		PGresult *r;

		if (calls->progress)
			calls->progress(calls->arg, "oncefs's invariants", i + 1,
					steps + 1);
		r = PQexec(pg_cur()->conn, invariants[i]);
		if (PQresultStatus(r) != PGRES_TUPLES_OK) {
			int rc = pg_error(st, r, "check");

			PQclear(r);
			return rc;
		}
		for (int row = 0; row < PQntuples(r); row++) {
			calls->report(calls->arg, PQgetvalue(r, row, 0));
			(*problems)++;
		}
		PQclear(r);
	}
	return 0;
}

const struct store_ops store_pg_ops = {
	.name = "postgresql",
	.open = pg_open,
	.close = pg_close,
	.now_ms = pg_now_ms,
	.changed = pg_changed,
	.get_stats = pg_get_stats,
	.problem = pg_problem,
	.checkpoint = pg_checkpoint,
	.on_wal_growth = pg_on_wal_growth,
	.lookup_workflow = pg_lookup_workflow,
	.lookup_key = pg_lookup_key,
	.lookup_generation = pg_lookup_generation,
	.claim = pg_claim,
	.finalize = pg_finalize,
	.abandon = pg_abandon,
	.step_commit = pg_step_commit,
	.renew = pg_renew,
	.begin = pg_begin,
	.commit = pg_commit,
	.rollback = pg_rollback,
	.next_generation = pg_next_generation,
	.wf_by_name = pg_wf_by_name,
	.wf_by_id = pg_wf_by_id,
	.wf_insert = pg_wf_insert,
	.wf_update = pg_wf_update,
	.wf_delete = pg_wf_delete,
	.wf_list = pg_wf_list,
	.key_get = pg_key_get,
	.key_by_generation = pg_key_by_generation,
	.key_result = pg_key_result,
	.key_insert = pg_key_insert,
	.key_update = pg_key_update,
	.key_set_result = pg_key_set_result,
	.key_delete = pg_key_delete,
	.key_note = pg_key_note,
	.key_set_note = pg_key_set_note,
	.key_clear_notes = pg_key_clear_notes,
	.key_list = pg_key_list,
	.key_any = pg_key_any,
	.step_get = pg_step_get,
	.step_by_id = pg_step_by_id,
	.step_any = pg_step_any,
	.step_list = pg_step_list,
	.step_insert = pg_step_insert,
	.step_update = pg_step_update,
	.step_delete = pg_step_delete,
	.step_set_content = pg_step_set_content,
	.pin = pg_pin,
	.unpin = pg_unpin,
	.pins_renew = pg_pins_renew,
	.content_read = pg_content_read,
	.content_stage = pg_content_stage,
	.purge = pg_purge,
	.hold = pg_hold,
	.unhold = pg_unhold,
	.hold_any = pg_hold_any,
	.holds_renew = pg_holds_renew,
	.event_append = pg_event_append,
	.event_read = pg_event_read,
	.event_list = pg_event_list,
	.check = pg_check,
	.key_expired = pg_key_expired,
	.key_retired = pg_key_retired,
	.event_trim = pg_event_trim,
};
