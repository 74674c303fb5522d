/*
 * test_store.c - store.h on SQLite: opening, refusing, the generation
 * sequence, the rows, the events file.
 */
#include <fcntl.h>
#include <pthread.h>

#include "unit.h"

#include "store.h"

struct tmp {
	char dir[1024];
	char path[PATH_MAX];
};

static int tmp_setup(void **state)
{
	struct tmp *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	make_tmpdir(t->dir, sizeof(t->dir));
	fresh_store_name(t->dir, t->path, sizeof(t->path));
	*state = t;
	return 0;
}

static int tmp_teardown(void **state)
{
	struct tmp *t = *state;

	remove_tmpdir(t->dir);
	free(t);
	return 0;
}

static struct wf_row make_wf(const char *name, size_t len);

static const struct store_options plain = {
	.sync = STORE_SYNC_OFF,
	.busy_timeout_ms = 1000,
};

static const struct store_options creating = {
	.create = true,
	.sync = STORE_SYNC_OFF,
	.busy_timeout_ms = 1000,
};

/* store_open that must fail with want; the message must say something. */
static void open_refused(const char *path, const struct store_options *opt,
			 int want, const char *needle)
{
	struct store *st = (struct store *)&st;	/* must be reset to NULL */
	char err[512] = "";
	int rc = store_open(path, opt, &st, err, sizeof(err));

	if (rc != want)
		fail_msg("store_open(%s) = %d (%s), expected %d (%s); err: %s",
			 path, rc, errname(rc), want, errname(want), err);
	assert_null(st);
	assert_true(strlen(err) > 0);
	if (needle)
		assert_contains(err, needle);
}

static void wal_path(const char *path, char *out, size_t size, const char *sfx)
{
	snprintf(out, size, "%s%s", path, sfx);
}

/*
 * Refuse the file at path and check that nothing was written: the
 * bytes are the same, no journal was left next to it, and a SQLite
 * header (when there is one) still says rollback journal, not WAL.
 */
static void refused_unchanged(const char *path, const struct store_options *opt,
			      int want, const char *needle)
{
	char side[PATH_MAX + 16];
	size_t before_len, after_len;
	char *before = slurp(path, &before_len), *after;
	struct stat sb0, sb1;

	assert_non_null(before);
	assert_int_equal(stat(path, &sb0), 0);
	open_refused(path, opt, want, needle);
	after = slurp(path, &after_len);
	assert_non_null(after);
	assert_int_equal(after_len, before_len);
	if (before_len)
		assert_memory_equal(after, before, before_len);
	assert_int_equal(stat(path, &sb1), 0);
	assert_int_equal(sb1.st_mtim.tv_sec, sb0.st_mtim.tv_sec);
	assert_int_equal(sb1.st_mtim.tv_nsec, sb0.st_mtim.tv_nsec);
	if (before_len >= 100 && memcmp(before, "SQLite format 3", 16) == 0) {
		/* Bytes 18 and 19: file format versions, 2 means WAL. */
		assert_int_equal(after[18], 1);
		assert_int_equal(after[19], 1);
	}
	wal_path(path, side, sizeof(side), "-wal");
	assert_false(path_exists(side));
	wal_path(path, side, sizeof(side), "-shm");
	assert_false(path_exists(side));
	wal_path(path, side, sizeof(side), "-journal");
	assert_false(path_exists(side));
	free(before);
	free(after);
}

/* ---- opening ------------------------------------------------------------ */

static void test_missing_without_create(void **state)
{
	struct tmp *t = *state;

	SQLITE_ONLY("a store file that is not there");
	open_refused(t->path, &plain, -ENOENT, t->path);
	assert_false(path_exists(t->path));
	/* read-only inspection does not create either */
	{
		struct store_options ro = plain;

		ro.read_only = true;
		open_refused(t->path, &ro, -ENOENT, NULL);
		assert_false(path_exists(t->path));
	}
}

static void test_create_and_reopen(void **state)
{
	struct tmp *t = *state;
	struct store *st = NULL;
	char err[256] = "";
	size_t len;
	char *bytes;

	SQLITE_ONLY("the file's bytes");
	assert_rc(store_open(t->path, &creating, &st, err, sizeof(err)), 0);
	assert_non_null(st);
	store_close(st);
	assert_true(path_exists(t->path));
	bytes = slurp(t->path, &len);
	assert_true(len >= 100);
	assert_memory_equal(bytes, "SQLite format 3", 16);
	/* application_id "once" at offset 68, big-endian; WAL at 18/19. */
	assert_memory_equal(bytes + 68, "once", 4);
	assert_int_equal(bytes[18], 2);
	assert_int_equal(bytes[19], 2);
	/* user_version (offset 60) is the schema version. */
	assert_int_equal(((unsigned char)bytes[60] << 24 |
			  (unsigned char)bytes[61] << 16 |
			  (unsigned char)bytes[62] << 8 |
			  (unsigned char)bytes[63]), STORE_SCHEMA_VERSION);
	free(bytes);

	/* Reopen without create: it is an oncefs store now. */
	st = NULL;
	assert_rc(store_open(t->path, &plain, &st, err, sizeof(err)), 0);
	assert_non_null(st);
	store_close(st);
	/* And create on an existing store opens it, keeping its rows. */
	st = open_store(t->path, true);
	store_close(st);
}

static void test_create_keeps_rows(void **state)
{
	struct tmp *t = *state;
	struct store *st = open_store(t->path, true);
	struct wf_row w = { .name = "kept", .name_len = 4, .mode = 0755 };
	struct wf_row got;

	policy_init(&w.policy);
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_insert(st, &w), 0);
	assert_rc(store_commit(st), 0);
	store_close(st);
	st = open_store(t->path, true);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_wf_by_name(st, S("kept"), &got), 0);
	assert_rc(store_commit(st), 0);
	assert_i64(got.id, w.id);
	store_close(st);
}

static void test_refuse_foreign_sqlite(void **state)
{
	struct tmp *t = *state;

	SQLITE_ONLY("a SQLite file of another program");
	assert_int_equal(raw_sql(t->path,
		"CREATE TABLE accounts(id INTEGER PRIMARY KEY, name TEXT);"
		"INSERT INTO accounts(name) VALUES('alice'), ('bob');"), SQLITE_OK);
	refused_unchanged(t->path, &plain, -EINVAL, "not an oncefs store");
	/* -o create does not make it one either. */
	refused_unchanged(t->path, &creating, -EINVAL, NULL);
}

static void test_refuse_other_application_id(void **state)
{
	struct tmp *t = *state;

	SQLITE_ONLY("SQLite's application_id");
	/* No tables, but another application's id: not ours to take. */
	assert_int_equal(raw_sql(t->path, "PRAGMA application_id = 1234;"),
			 SQLITE_OK);
	refused_unchanged(t->path, &plain, -EINVAL, NULL);
	refused_unchanged(t->path, &creating, -EINVAL, NULL);
}

static void test_refuse_no_schema_version(void **state)
{
	struct tmp *t = *state;

	SQLITE_ONLY("edits the file with sqlite3 (test_postgres.py refuses the same on a database)");
	/* Our application id, but no user_version: half made, not ours. */
	assert_int_equal(raw_sql(t->path,
		"PRAGMA application_id = 1869505381;"
		"CREATE TABLE sequence(name TEXT PRIMARY KEY, value INTEGER);"),
		SQLITE_OK);
	refused_unchanged(t->path, &plain, -EINVAL, NULL);
}

static void test_refuse_random_bytes(void **state)
{
	struct tmp *t = *state;
	char buf[8192];
	uint32_t x = 2463534242u;

	SQLITE_ONLY("a file of random bytes");
	for (size_t i = 0; i < sizeof(buf); i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		buf[i] = (char)x;
	}
	spew(t->path, buf, sizeof(buf));
	refused_unchanged(t->path, &plain, -EINVAL, NULL);
	refused_unchanged(t->path, &creating, -EINVAL, NULL);
	/* A text file. */
	spew(t->path, S("jobs:\n  - nightly-etl\n"));
	refused_unchanged(t->path, &plain, -EINVAL, NULL);
}

static void test_refuse_corrupt_sqlite(void **state)
{
	struct tmp *t = *state;
	size_t len;
	char *bytes;

	SQLITE_ONLY("a corrupt SQLite file");
	/* A real store whose pages after the header are trashed. */
	store_close(open_store(t->path, true));
	assert_int_equal(raw_sql(t->path, "PRAGMA journal_mode = DELETE;"),
			 SQLITE_OK);
	bytes = slurp(t->path, &len);
	assert_true(len > 200);
	for (size_t i = 100; i < len; i++)
		bytes[i] = (char)(i * 7 + 3);
	spew(t->path, bytes, len);
	free(bytes);
	{
		struct store *st = NULL;
		char err[256] = "";
		int rc = store_open(t->path, &plain, &st, err, sizeof(err));

		if (rc == 0)
			store_close(st);
		assert_true(rc < 0);
		assert_null(st);
		assert_true(strlen(err) > 0);
	}
}

static void test_refuse_empty_file(void **state)
{
	struct tmp *t = *state;

	SQLITE_ONLY("an empty file");
	spew(t->path, "", 0);
	refused_unchanged(t->path, &plain, -EINVAL, NULL);
	assert_true(path_exists(t->path));
}

static void test_refuse_directory(void **state)
{
	struct tmp *t = *state;

	SQLITE_ONLY("a directory for a file");
	assert_int_equal(mkdir(t->path, 0755), 0);
	open_refused(t->path, &plain, -EINVAL, NULL);
	open_refused(t->path, &creating, -EINVAL, NULL);
	assert_int_equal(rmdir(t->path), 0);
}

static void test_refuse_newer_schema(void **state)
{
	struct tmp *t = *state;
	char sql[128];

	SQLITE_ONLY("edits the file with sqlite3 (test_postgres.py refuses a newer schema on a database)");
	/* A store of ours from a newer oncefs, in rollback-journal mode. */
	store_close(open_store(t->path, true));
	snprintf(sql, sizeof(sql),
		 "PRAGMA journal_mode = DELETE; PRAGMA user_version = %d;",
		 STORE_SCHEMA_VERSION + 1);
	assert_int_equal(raw_sql(t->path, sql), SQLITE_OK);
	refused_unchanged(t->path, &plain, -EPROTONOSUPPORT, "newer");
	refused_unchanged(t->path, &creating, -EPROTONOSUPPORT, NULL);
}

static void test_refuse_newer_schema_in_wal(void **state)
{
	struct tmp *t = *state;
	char sql[128];

	SQLITE_ONLY("SQLite's write-ahead log");
	/* The same in WAL mode (as oncefs leaves its stores). */
	store_close(open_store(t->path, true));
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d;",
		 STORE_SCHEMA_VERSION + 7);
	assert_int_equal(raw_sql(t->path, sql), SQLITE_OK);
	{
		size_t l0, l1;
		char *b0 = slurp(t->path, &l0), *b1;

		open_refused(t->path, &plain, -EPROTONOSUPPORT, NULL);
		b1 = slurp(t->path, &l1);
		assert_int_equal(l0, l1);
		assert_memory_equal(b0, b1, l0);
		free(b0);
		free(b1);
	}
}

/*
 * A PostgreSQL name goes to libpq, never to a file: nobody listens on
 * port 1 of loopback, so the open fails there, saying so (the server-side
 * refusals are tests/integration/test_postgres.py's, on a real server).
 */
static void test_refuse_postgresql(void **state)
{
	struct tmp *t = *state;

	(void)t;
	open_refused("postgresql://user@127.0.0.1:1/oncefs", &plain,
		     -ECONNREFUSED, "cannot connect to PostgreSQL");
	open_refused("postgres://127.0.0.1:1/oncefs", &creating, -ECONNREFUSED,
		     NULL);
	open_refused("host=127.0.0.1 port=1 dbname=oncefs", &creating,
		     -ECONNREFUSED, NULL);
	open_refused("postgresql://u:secret@127.0.0.1:1/oncefs", &plain, -EINVAL,
		     "password");
	/* Nothing named like the URL appears in the working directory. */
	assert_false(path_exists("postgresql:"));
	assert_false(path_exists("postgres:"));
	assert_false(path_exists("host=127.0.0.1 port=1 dbname=oncefs"));
}

/* A store file's name is never mistaken for a URL, nor a URL for a file. */
static void test_scheme(void **state)
{
	(void)state;
	assert_int_equal(store_scheme("postgresql://u@h/db"), STORE_SCHEME_POSTGRES);
	assert_int_equal(store_scheme("postgres://h/db"), STORE_SCHEME_POSTGRES);
	assert_int_equal(store_scheme("postgres-jobs.db"), STORE_SCHEME_SQLITE);
	assert_int_equal(store_scheme("postgresql.db"), STORE_SCHEME_SQLITE);
	assert_int_equal(store_scheme("/var/lib/postgres://x"), STORE_SCHEME_SQLITE);
	assert_int_equal(store_scheme(""), STORE_SCHEME_SQLITE);
	/* libpq connection strings and services. */
	assert_int_equal(store_scheme("host=db dbname=jobs"), STORE_SCHEME_POSTGRES);
	assert_int_equal(store_scheme(" service = jobs"), STORE_SCHEME_POSTGRES);
	assert_int_equal(store_scheme("dbname=x"), STORE_SCHEME_POSTGRES);
	assert_int_equal(store_scheme("hosts=x.db"), STORE_SCHEME_SQLITE);
	assert_int_equal(store_scheme("./host=x.db"), STORE_SCHEME_SQLITE);
	assert_int_equal(store_scheme("service.db"), STORE_SCHEME_SQLITE);
	/* Any of libpq's keywords: a password is never taken for a file. */
	assert_int_equal(store_scheme("password=secret host=h"), STORE_SCHEME_POSTGRES);
	assert_int_equal(store_scheme("sslrootcert=/x dbname=y"), STORE_SCHEME_POSTGRES);
}

/*
 * Values edited into a store by something other than oncefs: a mount
 * refuses the store, saying which value; a read-only open (oncectl) gets
 * -EIO for that row, with the reason from store_problem().
 */
static void test_refuse_values_out_of_range(void **state)
{
	static const char *const edits[][2] = {
		{ "UPDATE workflows SET on_input_change = 7", "on_input_change" },
		{ "UPDATE workflows SET on_input_change = -1", "on_input_change" },
		{ "UPDATE workflows SET dedup_on = 99", "dedup_on" },
		{ "UPDATE workflows SET dedup_on = 'any'", "dedup_on" },
		{ "UPDATE workflows SET in_flight_ttl = 0", "in_flight_ttl" },
		{ "UPDATE workflows SET retention = -5", "retention" },
		{ "UPDATE workflows SET name = x'2e2e2f657463'", "name" },
		{ "UPDATE workflows SET name = x''", "name" },
		{ "UPDATE workflows SET fingerprint = x'0a0b'", "fingerprint" },
		{ "UPDATE workflows SET mode = 1048576", "mode" },
	};
	struct tmp *t = *state;
	struct store_options ro = plain;

	SQLITE_ONLY("edits rows with sqlite3");
	ro.read_only = true;
	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		struct store *st;
		struct wf_row w = make_wf(S("wf")), rows[4];
		char problem[256];
		int n;

		unlink(t->path);
		st = open_store(t->path, true);
		assert_rc(store_begin(st, true), 0);
		assert_rc(store_wf_insert(st, &w), 0);
		assert_rc(store_commit(st), 0);
		store_close(st);
		assert_int_equal(raw_sql(t->path, edits[i][0]), SQLITE_OK);

		open_refused(t->path, &plain, -EIO, edits[i][1]);
		st = NULL;
		assert_rc(store_open(t->path, &ro, &st, problem, sizeof(problem)), 0);
		assert_rc(store_begin(st, false), 0);
		assert_rc(store_wf_list(st, 0, rows, 4, &n), -EIO);
		assert_rc(store_wf_by_id(st, w.id, &rows[0]), -EIO);
		store_rollback(st);
		assert_contains(store_problem(st, problem, sizeof(problem)),
				edits[i][1]);
		store_close(st);
	}
}

/* A key row with a status or generation no oncefs wrote is refused. */
static void test_refuse_key_values_out_of_range(void **state)
{
	static const char *const edits[][2] = {
		{ "UPDATE keys SET status = 9", "status" },
		{ "UPDATE keys SET generation = 0", "generation" },
		{ "UPDATE keys SET holder_pid = -3", "holder pid" },
		{ "UPDATE keys SET name = x'612f62'", "name" },
	};
	struct tmp *t = *state;

	SQLITE_ONLY("edits rows with sqlite3");
	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		struct store *st;
		struct wf_row w = make_wf(S("wf"));
		struct key_row k = { .status = KEY_IN_FLIGHT, .generation = 1,
				     .attempt = 1, .name_len = 1 };
		char problem[256];

		unlink(t->path);
		st = open_store(t->path, true);
		assert_rc(store_begin(st, true), 0);
		assert_rc(store_wf_insert(st, &w), 0);
		k.wf = w.id;
		k.name[0] = 'k';
		assert_rc(store_key_insert(st, &k), 0);
		assert_rc(store_commit(st), 0);
		store_close(st);
		assert_int_equal(raw_sql(t->path, edits[i][0]), SQLITE_OK);
		st = open_store(t->path, false);
		assert_rc(store_begin(st, false), 0);
		assert_rc(store_key_by_generation(st, i == 1 ? 0 : 1, &k), -EIO);
		store_rollback(st);
		assert_contains(store_problem(st, problem, sizeof(problem)),
				edits[i][1]);
		store_close(st);
	}
}

/* A store of schema 1 (oncefs 0.1): its results and checkpoints survive. */
static void test_upgrade_from_schema_1(void **state)
{
	static const char v1[] =
		"CREATE TABLE sequence(name TEXT PRIMARY KEY, value INTEGER NOT NULL) "
		"WITHOUT ROWID;"
		"INSERT INTO sequence VALUES('generation', 7);"
		"CREATE TABLE workflows(id INTEGER PRIMARY KEY AUTOINCREMENT, name "
		"BLOB NOT NULL UNIQUE, uid INTEGER NOT NULL, gid INTEGER NOT NULL, "
		"mode INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, mtime_ns INTEGER "
		"NOT NULL, on_input_change INTEGER NOT NULL, dedup_on INTEGER NOT "
		"NULL, in_flight_ttl INTEGER NOT NULL, retention INTEGER NOT NULL, "
		"fingerprint BLOB, epoch INTEGER NOT NULL, events_size INTEGER NOT "
		"NULL, events_base INTEGER NOT NULL DEFAULT 0);"
		"CREATE TABLE keys(id INTEGER PRIMARY KEY AUTOINCREMENT, wf INTEGER "
		"NOT NULL, name BLOB NOT NULL, status INTEGER NOT NULL, generation "
		"INTEGER NOT NULL UNIQUE, attempt INTEGER NOT NULL, expires_ms "
		"INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, holder_pid INTEGER NOT "
		"NULL, holder_uid INTEGER NOT NULL, result BLOB, UNIQUE(wf, name));"
		"CREATE INDEX keys_by_workflow ON keys(wf, id);"
		"CREATE INDEX keys_by_expiry ON keys(expires_ms) WHERE status = 1;"
		"CREATE INDEX keys_by_age ON keys(mtime_ns) WHERE status != 1;"
		"CREATE TABLE steps(id INTEGER PRIMARY KEY AUTOINCREMENT, wf INTEGER "
		"NOT NULL, epoch INTEGER NOT NULL, name BLOB NOT NULL, size INTEGER "
		"NOT NULL, mtime_ns INTEGER NOT NULL, UNIQUE(wf, epoch, name));"
		"CREATE INDEX steps_by_workflow ON steps(wf, epoch, id);"
		"CREATE TABLE chunks(id INTEGER PRIMARY KEY, step INTEGER NOT NULL, "
		"seq INTEGER NOT NULL, data BLOB NOT NULL, UNIQUE(step, seq));"
		"CREATE TABLE events(wf INTEGER NOT NULL, off INTEGER NOT NULL, "
		"time_ms INTEGER NOT NULL, line TEXT NOT NULL, PRIMARY KEY(wf, off)) "
		"WITHOUT ROWID;"
		"INSERT INTO workflows VALUES(1, 'wf', 0, 0, 493, 1, 1, 0, 0, 86400, "
		"2592000, NULL, 1, 0, 0);"
		"INSERT INTO keys VALUES(1, 1, 'done', 2, 5, 1, 0, 1, 1, 0, 'the result');"
		"INSERT INTO keys VALUES(2, 1, 'live', 1, 7, 1, 99999999999999, 1, 1, 0, NULL);"
		"INSERT INTO steps VALUES(3, 1, 1, 'cur', 6, 1);"
		"INSERT INTO chunks VALUES(1, 3, 0, 'abcdef');"
		"INSERT INTO steps VALUES(4, 1, 0, 'old', 3, 1);"
		"INSERT INTO chunks VALUES(2, 4, 0, 'xyz');"
		"PRAGMA application_id = 1869505381; PRAGMA user_version = 1;";
	struct tmp *t = *state;
	struct store_options ro = plain;
	struct store *st = NULL;
	struct key_row k;
	struct step_row r;
	char err[256], *res, *content;
	size_t len;
	int64_t n;

	SQLITE_ONLY("SQLite schemas 1 and 2 (test_postgres.py upgrades a PostgreSQL store of version 3)");
	assert_int_equal(raw_sql(t->path, v1), SQLITE_OK);
	ro.read_only = true;
	open_refused(t->path, &ro, -EPROTONOSUPPORT, "upgrade");
	assert_rc(store_open(t->path, &plain, &st, err, sizeof(err)), 0);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_key_by_generation(st, 5, &k), 0);
	assert_i64(k.result_len, 10);
	assert_rc(store_step_by_id(st, 3, &r), 0);
	assert_i64(r.size, 6);
	assert_rc(store_key_by_generation(st, 7, &k), 0);
	assert_i64(k.result_len, 0);
	assert_rc(store_commit(st), 0);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_key_by_generation(st, 5, &k), 0);
	assert_rc(store_commit(st), 0);
	assert_rc(store_key_result(st, &k, &res, &len), 0);
	assert_int_equal(len, 10);
	assert_memory_equal(res, "the result", 10);
	free(res);
	content = checkpoint_content(st, 3, &len);
	assert_string_equal(content, "abcdef");
	free(content);
	/* The checkpoint of the old epoch is purged as before. */
	do {
		assert_rc(store_begin(st, true), 0);
		assert_rc(store_purge(st, T0_MS, 8, &n), 0);
		assert_rc(store_commit(st), 0);
	} while (n > 0);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_step_by_id(st, 4, &r), -ENOENT);
	assert_rc(store_commit(st), 0);
	store_close(st);
	/* And it stays upgraded, readable read-only now. */
	st = NULL;
	assert_rc(store_open(t->path, &ro, &st, err, sizeof(err)), 0);
	store_close(st);
}

/* A workflow wf and its key k in flight, as every schema since 2 holds them. */
#define WF_AND_KEY_ROWS \
	"INSERT INTO workflows(id, name, uid, gid, mode, ctime_ns, " \
	"mtime_ns, on_input_change, dedup_on, in_flight_ttl, retention, " \
	"epoch, events_size) VALUES(1, 'wf', 0, 0, 493, 1, 1, 0, 0, 86400, " \
	"2592000, 1, 0);" \
	"INSERT INTO keys(id, wf, name, status, generation, attempt, " \
	"expires_ms, mtime_ns, holder_pid, holder_uid) " \
	"VALUES(1, 1, 'k', 1, 9, 2, 99999999999999, 1, 1, 0);"

/* A store of schema 2: its keys gain a previous generation, no notes. */
static void test_upgrade_from_schema_2(void **state)
{
	static const char to_v2[] =
		WF_AND_KEY_ROWS
		"DROP TABLE holds;"
		"ALTER TABLE keys DROP COLUMN previous;"
		"ALTER TABLE keys DROP COLUMN request;"
		"ALTER TABLE keys DROP COLUMN original;"
		"ALTER TABLE keys DROP COLUMN holder_host;"
		"PRAGMA user_version = 2;";
	struct tmp *t = *state;
	struct store_options ro = plain;
	struct store *st = NULL;
	struct key_row k;
	char err[256], buf[KEY_ORIGINAL_MAX];
	size_t len;
	int64_t hold;
	bool any;

	SQLITE_ONLY("SQLite schemas 1 and 2 (test_postgres.py upgrades a PostgreSQL store of version 3)");
	store_close(open_store(t->path, true));
	assert_int_equal(raw_sql(t->path, to_v2), SQLITE_OK);
	ro.read_only = true;
	open_refused(t->path, &ro, -EPROTONOSUPPORT, "upgrade");
	assert_rc(store_open(t->path, &plain, &st, err, sizeof(err)), 0);
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_key_by_generation(st, 9, &k), 0);
	assert_i64(k.previous, 0);
	assert_i64(k.attempt, 2);
	assert_rc(store_key_note(st, k.id, KEY_NOTE_REQUEST, buf, &len), -ENODATA);
	assert_rc(store_key_set_note(st, k.id, KEY_NOTE_REQUEST, S("r")), 0);
	assert_rc(store_hold(st, 1, T0_MS + 1000, &hold), 0);
	assert_rc(store_hold_any(st, 1, T0_MS, 0, &any), 0);
	assert_true(any);
	assert_rc(store_commit(st), 0);
	store_close(st);
	st = NULL;
	assert_rc(store_open(t->path, &ro, &st, err, sizeof(err)), 0);
	store_close(st);
}

/* A store of schema 3: its keys gain the host of their claimant, "". */
static void test_upgrade_from_schema_3(void **state)
{
	static const char to_v3[] =
		WF_AND_KEY_ROWS
		"ALTER TABLE keys DROP COLUMN holder_host;"
		"PRAGMA user_version = 3;";
	struct tmp *t = *state;
	struct store *st = NULL;
	struct key_row k;
	char err[256];

	SQLITE_ONLY("SQLite's schema 3 (test_postgres.py upgrades a PostgreSQL store of version 3)");
	store_close(open_store(t->path, true));
	assert_int_equal(raw_sql(t->path, to_v3), SQLITE_OK);
	assert_rc(store_open(t->path, &plain, &st, err, sizeof(err)), 0);
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_key_by_generation(st, 9, &k), 0);
	assert_string_equal(k.holder_host, "");
	snprintf(k.holder_host, sizeof(k.holder_host), "worker-7");
	assert_rc(store_key_update(st, &k), 0);
	assert_rc(store_key_by_generation(st, 9, &k), 0);
	assert_string_equal(k.holder_host, "worker-7");
	assert_rc(store_commit(st), 0);
	store_close(st);
}

static void test_read_only_store_file(void **state)
{
	struct tmp *t = *state;
	struct store_options ro = plain;
	struct store *st = NULL;
	char err[256];

	SQLITE_ONLY("file permissions");
	store_close(open_store(t->path, true));
	if (geteuid() == 0) {
		print_message("running as root: file modes do not bind; "
			      "skipping the EROFS half\n");
	} else {
		assert_int_equal(chmod(t->path, 0444), 0);
		open_refused(t->path, &plain, -EROFS, NULL);
		assert_int_equal(chmod(t->path, 0644), 0);
	}
	ro.read_only = true;
	assert_rc(store_open(t->path, &ro, &st, err, sizeof(err)), 0);
	assert_rc(store_begin(st, false), 0);
	{
		struct wf_row w;

		assert_rc(store_wf_by_name(st, S("none"), &w), -ENOENT);
	}
	assert_rc(store_commit(st), 0);
	store_close(st);
}

/* ---- generations ------------------------------------------------------- */

static int64_t draw(struct store *st)
{
	int64_t g = -1;

	assert_rc(store_begin(st, true), 0);
	assert_rc(store_next_generation(st, &g), 0);
	assert_rc(store_commit(st), 0);
	return g;
}

static void test_generation_sequence(void **state)
{
	struct tmp *t = *state;
	struct store *st = open_store(t->path, true);
	int64_t last = 0, g;

	for (int i = 0; i < 5; i++) {
		g = draw(st);
		assert_true(g > last);
		last = g;
	}
	/* Several in one transaction. */
	assert_rc(store_begin(st, true), 0);
	for (int i = 0; i < 3; i++) {
		assert_rc(store_next_generation(st, &g), 0);
		assert_true(g > last);
		last = g;
	}
	assert_rc(store_commit(st), 0);
	store_close(st);

	/* Across a reopen (a remount): never again a value handed out. */
	for (int round = 0; round < 3; round++) {
		st = open_store(t->path, false);
		g = draw(st);
		assert_true(g > last);
		last = g;
		store_close(st);
	}
}

static void test_generation_shared_by_two_handles(void **state)
{
	struct tmp *t = *state;
	struct store *a = open_store(t->path, true);
	struct store *b = open_store(t->path, false);
	int64_t last = 0;

	/* Two mounts of one store draw from one sequence. */
	for (int i = 0; i < 6; i++) {
		int64_t g = draw(i % 2 ? a : b);

		assert_true(g > last);
		last = g;
	}
	store_close(a);
	store_close(b);
}

/* A writer on a thread of its own: holds the write lock until told. */
struct holder {
	struct store *st;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int state;		/* 0 start, 1 holding, 2 release, 3 done */
	int rc;
};

static void holder_set(struct holder *h, int state)
{
	pthread_mutex_lock(&h->mu);
	h->state = state;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

static void holder_wait(struct holder *h, int state)
{
	pthread_mutex_lock(&h->mu);
	while (h->state < state)
		pthread_cond_wait(&h->cv, &h->mu);
	pthread_mutex_unlock(&h->mu);
}

static void *hold_write_lock(void *arg)
{
	struct holder *h = arg;

	h->rc = store_begin(h->st, true);
	holder_set(h, 1);
	holder_wait(h, 2);
	if (h->rc == 0)
		store_rollback(h->st);
	holder_set(h, 3);
	return NULL;
}

/*
 * store.h: "-EAGAIN when another process held the store's write lock
 * past the busy timeout".  (The other writer runs on a thread of its
 * own, as another process would.)
 */
static void test_busy_is_eagain(void **state)
{
	struct tmp *t = *state;
	struct store_options quick = plain;
	struct store *a, *b = NULL;
	struct holder h = { .mu = PTHREAD_MUTEX_INITIALIZER,
			    .cv = PTHREAD_COND_INITIALIZER };
	char err[256];
	pthread_t th;
	int busy, after;

	SQLITE_ONLY("SQLite's file lock (test_hosts.py waits on the writer row)");
	a = h.st = open_store(t->path, true);
	quick.busy_timeout_ms = 50;
	assert_rc(store_open(t->path, &quick, &b, err, sizeof(err)), 0);
	assert_int_equal(pthread_create(&th, NULL, hold_write_lock, &h), 0);
	holder_wait(&h, 1);
	busy = store_begin(b, true);
	if (busy == 0)
		store_rollback(b);
	holder_set(&h, 2);
	pthread_join(th, NULL);
	/* Once the lock is free, the other handle gets it. */
	after = store_begin(b, true);
	if (after == 0)
		store_rollback(b);
	store_close(a);
	store_close(b);
	assert_rc(h.rc, 0);
	assert_rc(busy, -EAGAIN);
	assert_rc(after, 0);
}

static void *begin_and_end(void *arg)
{
	struct store *st = arg;

	if (store_begin(st, false) == 0)
		store_rollback(st);
	return NULL;
}

/*
 * store.h: store_contended() says that a transaction of this mount waits
 * for the one under way (the sweep's slices commit early on it).
 */
static void test_contended(void **state)
{
	struct tmp *t = *state;
	struct store *st;
	pthread_t th;
	bool seen = false;

	SQLITE_ONLY("one connection, one lock: PostgreSQL's transactions of "
		    "one mount run side by side");
	st = open_store(t->path, true);
	assert_false(store_contended(st));
	assert_rc(store_begin(st, true), 0);
	/* Its own transaction is no contention. */
	assert_false(store_contended(st));
	assert_int_equal(pthread_create(&th, NULL, begin_and_end, st), 0);
	for (int i = 0; i < 5000 && !seen; i++) {
		seen = store_contended(st);
		if (!seen)
			usleep(1000);
	}
	assert_true(seen);
	store_rollback(st);
	pthread_join(th, NULL);
	assert_false(store_contended(st));
	store_close(st);
}

/*
 * Two stores are two objects: a transaction on one does not change
 * which database the other's row functions read, on the same thread.
 */
static void test_two_stores_one_thread(void **state)
{
	struct tmp *t = *state;
	char pa[PATH_MAX], pb[PATH_MAX];
	struct store *a, *b;
	struct wf_row w = make_wf(S("only-in-a")), got;

	snprintf(pa, sizeof(pa), "%s/a.db", t->dir);
	snprintf(pb, sizeof(pb), "%s/b.db", t->dir);
	a = open_store(pa, true);
	b = open_store(pb, true);
	assert_rc(store_begin(a, true), 0);
	assert_rc(store_wf_insert(a, &w), 0);
	assert_rc(store_commit(a), 0);

	assert_rc(store_begin(a, false), 0);
	assert_rc(store_begin(b, false), 0);
	assert_rc(store_wf_by_name(a, S("only-in-a"), &got), 0);
	assert_rc(store_wf_by_name(b, S("only-in-a"), &got), -ENOENT);
	assert_rc(store_commit(b), 0);
	assert_rc(store_wf_by_name(a, S("only-in-a"), &got), 0);
	assert_rc(store_commit(a), 0);
	store_close(a);
	store_close(b);
}

static void test_stats_count_commits(void **state)
{
	struct tmp *t = *state;
	struct store *st = open_store(t->path, true);
	struct store_stats s0, s1;
	int64_t g;

	store_get_stats(st, &s0);
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_next_generation(st, &g), 0);
	assert_rc(store_commit(st), 0);
	assert_rc(store_begin(st, false), 0);	/* a read commits nothing */
	assert_rc(store_commit(st), 0);
	assert_rc(store_begin(st, true), 0);
	store_rollback(st);
	store_get_stats(st, &s1);
	assert_int_equal(s1.commits, s0.commits + 1);
	/* STORE_SYNC_OFF: no commit is made durable by an fsync. */
	assert_int_equal(s1.syncs, s0.syncs);
	store_close(st);
}

/* A read transaction, begun and ended on a thread of its own. */
static void *read_on_other_thread(void *arg)
{
	struct store *st = arg;
	struct wf_row w;
	intptr_t rc = store_begin(st, false);

	if (rc == 0) {
		rc = store_wf_by_name(st, S("none"), &w);
		if (rc == -ENOENT)
			rc = 0;
		if (rc)
			store_rollback(st);
		else
			rc = store_commit(st);
	}
	return (void *)rc;
}

/*
 * store_stats counts the write transactions committed.  A read on
 * another thread while a write is open is not a reason to lose the
 * count of that write.
 */
static void test_stats_count_commits_with_concurrent_reader(void **state)
{
	struct tmp *t = *state;
	struct store_options full = creating;
	struct store *st = NULL;
	struct store_stats s0, s1;
	char err[256];
	pthread_t th;
	void *ret = (void *)-1;
	int64_t g;

	full.sync = STORE_SYNC_FULL;
	assert_rc(store_open(t->path, &full, &st, err, sizeof(err)), 0);
	store_get_stats(st, &s0);
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_next_generation(st, &g), 0);
	/* The reader waits for the write transaction (one connection). */
	assert_int_equal(pthread_create(&th, NULL, read_on_other_thread, st), 0);
	assert_rc(store_commit(st), 0);
	assert_int_equal(pthread_join(th, &ret), 0);
	assert_rc((intptr_t)ret, 0);
	store_get_stats(st, &s1);
	store_close(st);
	assert_i64(s1.commits, s0.commits + 1);
	assert_i64(s1.syncs, s0.syncs + 1);
}

static void test_rollback_discards(void **state)
{
	struct tmp *t = *state;
	struct store *st = open_store(t->path, true);
	struct wf_row w = { .name = "gone", .name_len = 4 }, got;

	policy_init(&w.policy);
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_insert(st, &w), 0);
	store_rollback(st);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_wf_by_name(st, S("gone"), &got), -ENOENT);
	assert_rc(store_commit(st), 0);
	store_close(st);
}

/* ---- rows --------------------------------------------------------------- */

static struct wf_row make_wf(const char *name, size_t len)
{
	struct wf_row w;

	memset(&w, 0, sizeof(w));
	memcpy(w.name, name, len);
	w.name_len = len;
	w.uid = 1000;
	w.gid = 100;
	w.mode = 0750;
	w.ctime_ns = 11;
	w.mtime_ns = 22;
	policy_init(&w.policy);
	return w;
}

static void test_workflow_rows(void **state)
{
	struct tmp *t = *state;
	struct store *st = open_store(t->path, true);
	struct wf_row a = make_wf(S("alpha")), b = make_wf("b\xff\x01x", 4), got;
	struct wf_row rows[8];
	int n = -1;

	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_insert(st, &a), 0);
	assert_rc(store_wf_insert(st, &b), 0);
	assert_true(a.id > 0);
	assert_true(b.id > a.id);
	{
		struct wf_row dup = make_wf(S("alpha"));

		assert_rc(store_wf_insert(st, &dup), -EEXIST);
	}
	assert_rc(store_commit(st), 0);

	assert_rc(store_begin(st, false), 0);
	assert_rc(store_wf_by_name(st, S("alpha"), &got), 0);
	assert_i64(got.id, a.id);
	assert_int_equal(got.name_len, 5);
	assert_string_equal(got.name, "alpha");
	assert_int_equal(got.uid, 1000);
	assert_int_equal(got.gid, 100);
	assert_int_equal(got.mode, 0750);
	assert_i64(got.ctime_ns, 11);
	assert_i64(got.mtime_ns, 22);
	assert_int_equal(got.fingerprint_len, 0);
	assert_i64(got.policy.in_flight_ttl, 86400);
	/* Names are bytes: NUL and non-UTF-8 survive. */
	assert_rc(store_wf_by_name(st, "b\xff\x01x", 4, &got), 0);
	assert_i64(got.id, b.id);
	assert_int_equal(got.name_len, 4);
	assert_memory_equal(got.name, "b\xff\x01x", 4);
	assert_rc(store_wf_by_name(st, "b\xff", 2, &got), -ENOENT);
	assert_rc(store_wf_by_name(st, S("ALPHA"), &got), -ENOENT);
	assert_rc(store_wf_by_id(st, b.id + 100, &got), -ENOENT);
	assert_rc(store_wf_list(st, 0, rows, 8, &n), 0);
	assert_int_equal(n, 2);
	assert_i64(rows[0].id, a.id);
	assert_i64(rows[1].id, b.id);
	assert_rc(store_wf_list(st, a.id, rows, 8, &n), 0);
	assert_int_equal(n, 1);
	assert_rc(store_wf_list(st, 0, rows, 1, &n), 0);
	assert_int_equal(n, 1);
	assert_rc(store_commit(st), 0);

	/* Update every mutable field. */
	a.policy.on_input_change = ON_INPUT_RAISE;
	a.policy.dedup_on = DEDUP_ANY;
	a.policy.in_flight_ttl = 5;
	a.policy.retention = 6;
	memcpy(a.fingerprint, "fp", 3);
	a.fingerprint_len = 2;
	a.epoch = 9;
	a.mode = 0700;
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_update(st, &a), 0);
	{
		struct wf_row ghost = make_wf(S("ghost"));

		ghost.id = b.id + 100;
		assert_rc(store_wf_update(st, &ghost), -ENOENT);
	}
	{
		struct wf_row clash = b;

		memcpy(clash.name, "alpha", 5);
		clash.name_len = 5;
		assert_rc(store_wf_update(st, &clash), -EEXIST);
	}
	assert_rc(store_commit(st), 0);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_wf_by_id(st, a.id, &got), 0);
	assert_rc(store_commit(st), 0);
	assert_int_equal(got.policy.on_input_change, ON_INPUT_RAISE);
	assert_int_equal(got.policy.dedup_on, DEDUP_ANY);
	assert_i64(got.policy.in_flight_ttl, 5);
	assert_i64(got.policy.retention, 6);
	assert_int_equal(got.fingerprint_len, 2);
	assert_string_equal(got.fingerprint, "fp");
	assert_i64(got.epoch, 9);
	assert_int_equal(got.mode, 0700);

	/* Delete; ids are not reused. */
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_delete(st, b.id), 0);
	assert_rc(store_commit(st), 0);
	{
		struct wf_row c = make_wf("b\xff\x01x", 4);

		assert_rc(store_begin(st, true), 0);
		assert_rc(store_wf_insert(st, &c), 0);
		assert_rc(store_commit(st), 0);
		assert_true(c.id > b.id);
	}
	store_close(st);
}

static struct key_row make_key(int64_t wf, const char *name, int64_t gen,
			       enum key_status status, int64_t expires_ms)
{
	struct key_row k;

	memset(&k, 0, sizeof(k));
	k.wf = wf;
	k.name_len = strlen(name);
	memcpy(k.name, name, k.name_len);
	k.status = status;
	k.generation = gen;
	k.attempt = 1;
	k.expires_ms = expires_ms;
	k.mtime_ns = 33;
	k.holder_pid = 77;
	k.holder_uid = 1000;
	return k;
}

static void test_key_rows(void **state)
{
	struct tmp *t = *state;
	struct store *st = open_store(t->path, true);
	struct wf_row w = make_wf(S("wf"));
	struct key_row live = make_key(0, "live", 1, KEY_IN_FLIGHT, 2000);
	struct key_row expired = make_key(0, "expired", 2, KEY_IN_FLIGHT, 500);
	struct key_row done = make_key(0, "done", 3, KEY_SUCCEEDED, 0);
	struct key_row failed = make_key(0, "failed", 4, KEY_FAILED, 0);
	struct key_row vacant = make_key(0, "vacant", 5, KEY_VACANT, 0);
	struct key_row got, rows[8];
	bool any;
	char *res;
	size_t res_len;
	int n;

	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_insert(st, &w), 0);
	live.wf = expired.wf = done.wf = failed.wf = vacant.wf = w.id;
	assert_rc(store_key_insert(st, &live), 0);
	assert_rc(store_key_insert(st, &expired), 0);
	assert_rc(store_key_insert(st, &done), 0);
	assert_rc(store_key_insert(st, &failed), 0);
	assert_rc(store_key_insert(st, &vacant), 0);
	{
		struct key_row dup = make_key(w.id, "live", 99, KEY_IN_FLIGHT, 0);
		struct key_row gen = make_key(w.id, "other", 1, KEY_IN_FLIGHT, 0);

		assert_rc(store_key_insert(st, &dup), -EEXIST);
		/* A generation names one claim: unique store-wide. */
		assert_rc(store_key_insert(st, &gen), -EEXIST);
	}
	assert_rc(store_key_set_result(st, &done, S("out\0put")), 0);
	assert_rc(store_commit(st), 0);

	assert_rc(store_begin(st, false), 0);
	assert_rc(store_key_get(st, w.id, S("done"), &got), 0);
	assert_i64(got.id, done.id);
	assert_int_equal(got.status, KEY_SUCCEEDED);
	assert_i64(got.generation, 3);
	assert_i64(got.result_len, 7);
	assert_int_equal(got.holder_pid, 77);
	assert_int_equal(got.holder_uid, 1000);
	assert_i64(got.mtime_ns, 33);
	assert_true(got.content > 0);
	assert_rc(store_key_result(st, &got, &res, &res_len), 0);
	assert_int_equal(res_len, 7);
	assert_memory_equal(res, "out\0put", 7);
	free(res);
	assert_rc(store_key_result(st, &live, &res, &res_len), 0);
	assert_int_equal(res_len, 0);
	free(res);
	assert_rc(store_key_by_generation(st, 2, &got), 0);
	assert_string_equal(got.name, "expired");
	assert_rc(store_key_by_generation(st, 42, &got), -ENOENT);
	assert_rc(store_key_get(st, w.id, S("nope"), &got), -ENOENT);
	assert_rc(store_key_get(st, w.id + 1, S("live"), &got), -ENOENT);

	/* Live at 1000: live (until 2000), done, failed; not expired, vacant. */
	assert_rc(store_key_list(st, w.id, 0, 1000, rows, 8, &n), 0);
	assert_int_equal(n, 3);
	assert_i64(rows[0].id, live.id);
	assert_i64(rows[1].id, done.id);
	assert_i64(rows[2].id, failed.id);
	assert_rc(store_key_list(st, w.id, live.id, 1000, rows, 8, &n), 0);
	assert_int_equal(n, 2);
	assert_i64(rows[0].id, done.id);
	assert_rc(store_key_list(st, w.id, 0, 1000, rows, 1, &n), 0);
	assert_int_equal(n, 1);
	/* At 2000 the lease of "live" is over (expires_ms > now is live). */
	assert_rc(store_key_list(st, w.id, 0, 2000, rows, 8, &n), 0);
	assert_int_equal(n, 2);
	assert_rc(store_key_list(st, w.id, 0, 1999, rows, 8, &n), 0);
	assert_int_equal(n, 3);
	any = false;
	assert_rc(store_key_any(st, w.id, 2000, &any), 0);
	assert_true(any);
	assert_rc(store_key_any(st, w.id + 1, 0, &any), 0);
	assert_false(any);
	assert_rc(store_commit(st), 0);

	/* Update and delete. */
	got = live;
	got.status = KEY_SUCCEEDED;
	got.attempt = 3;
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_key_update(st, &got), 0);
	assert_rc(store_key_set_result(st, &done, NULL, 0), 0);
	assert_rc(store_key_delete(st, failed.id), 0);
	assert_rc(store_commit(st), 0);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_key_get(st, w.id, S("live"), &got), 0);
	assert_int_equal(got.status, KEY_SUCCEEDED);
	assert_i64(got.attempt, 3);
	assert_rc(store_key_get(st, w.id, S("done"), &got), 0);
	assert_i64(got.result_len, 0);
	assert_rc(store_key_get(st, w.id, S("failed"), &got), -ENOENT);
	assert_rc(store_commit(st), 0);

	/* Deleting the workflow takes its keys. */
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_delete(st, w.id), 0);
	assert_rc(store_commit(st), 0);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_key_by_generation(st, 1, &got), -ENOENT);
	any = true;
	assert_rc(store_key_any(st, w.id, 0, &any), 0);
	assert_false(any);
	assert_rc(store_commit(st), 0);
	store_close(st);
}

static void test_step_rows_absent(void **state)
{
	struct tmp *t = *state;
	struct store *st = open_store(t->path, true);
	struct step_row row;
	char buf[8];
	size_t got = 1;
	bool any = true;

	assert_rc(store_begin(st, false), 0);
	assert_rc(store_step_get(st, 1, 0, S("x"), &row), -ENOENT);
	assert_rc(store_step_by_id(st, 1, &row), -ENOENT);
	assert_rc(store_step_any(st, 1, 0, &any), 0);
	assert_false(any);
	assert_rc(store_commit(st), 0);
	/* Version 0 is empty; a version that is not there cannot be read. */
	assert_rc(store_content_read(st, 0, 0, 0, buf, sizeof(buf), &got), 0);
	assert_int_equal(got, 0);
	assert_rc(store_content_read(st, 12345, 8, 0, buf, sizeof(buf), &got),
		  -EIO);
	store_close(st);
}

/* A file in the test directory holding len bytes of a pattern. */
static int content_fd(struct tmp *t, size_t len, unsigned seed, char **copy)
{
	char path[PATH_MAX];
	char *buf = malloc(len ? len : 1);
	int fd;

	assert_non_null(buf);
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)((i * 131 + seed * 7 + i / 4093) & 0xff);
	snprintf(path, sizeof(path), "%s/content-%u", t->dir, seed);
	spew(path, buf, len);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	unlink(path);
	*copy = buf;
	return fd;
}

static struct step_row make_step(int64_t wf, int64_t epoch, const char *name)
{
	struct step_row r;

	memset(&r, 0, sizeof(r));
	r.wf = wf;
	r.epoch = epoch;
	r.name_len = strlen(name);
	memcpy(r.name, name, r.name_len);
	r.mtime_ns = 44;
	return r;
}

/* Stage len bytes of fd and make them checkpoint id's content. */
static void write_step(struct store *st, int64_t id, int fd, size_t len)
{
	struct step_row r;
	int64_t content = -1;

	assert_rc(store_content_stage(st, fd, (int64_t)len, T0_MS, &content), 0);
	assert_true(len ? content > 0 : content == 0);
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_step_by_id(st, id, &r), 0);
	assert_rc(store_step_set_content(st, &r, content, (int64_t)len, 55), 0);
	assert_rc(store_commit(st), 0);
	store_unpin(st, content);
}

static void test_step_rows(void **state)
{
	struct tmp *t = *state;
	struct store *st = open_store(t->path, true);
	struct wf_row w = make_wf(S("wf"));
	struct step_row a = make_step(0, 0, "a"), b = make_step(0, 0, "b");
	struct step_row c = make_step(0, 1, "a"), got, rows[8];
	bool any = false;
	int n;

	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_insert(st, &w), 0);
	a.wf = b.wf = c.wf = w.id;
	assert_rc(store_step_insert(st, &a), 0);
	assert_rc(store_step_insert(st, &b), 0);
	/* The same name under another epoch (fingerprint) is another row. */
	assert_rc(store_step_insert(st, &c), 0);
	{
		struct step_row dup = make_step(w.id, 0, "a");

		assert_rc(store_step_insert(st, &dup), -EEXIST);
	}
	assert_rc(store_commit(st), 0);
	assert_true(a.id > 0 && b.id > a.id && c.id > b.id);

	assert_rc(store_begin(st, false), 0);
	assert_rc(store_step_get(st, w.id, 0, S("a"), &got), 0);
	assert_i64(got.id, a.id);
	assert_i64(got.size, 0);
	assert_i64(got.mtime_ns, 44);
	assert_rc(store_step_get(st, w.id, 1, S("a"), &got), 0);
	assert_i64(got.id, c.id);
	assert_rc(store_step_get(st, w.id, 1, S("b"), &got), -ENOENT);
	assert_rc(store_step_by_id(st, b.id, &got), 0);
	assert_string_equal(got.name, "b");
	assert_i64(got.epoch, 0);
	assert_rc(store_step_any(st, w.id, 0, &any), 0);
	assert_true(any);
	assert_rc(store_step_any(st, w.id, 2, &any), 0);
	assert_false(any);
	assert_rc(store_step_list(st, w.id, 0, 0, rows, 8, &n), 0);
	assert_int_equal(n, 2);
	assert_i64(rows[0].id, a.id);
	assert_i64(rows[1].id, b.id);
	assert_rc(store_step_list(st, w.id, 0, a.id, rows, 8, &n), 0);
	assert_int_equal(n, 1);
	assert_i64(rows[0].id, b.id);
	assert_rc(store_step_list(st, w.id, 1, 0, rows, 8, &n), 0);
	assert_int_equal(n, 1);
	assert_rc(store_step_list(st, w.id, 0, 0, rows, 1, &n), 0);
	assert_int_equal(n, 1);
	assert_rc(store_commit(st), 0);

	/* Rename and touch; a clash is EEXIST. */
	got = b;
	memcpy(got.name, "a", 2);
	got.name_len = 1;
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_step_update(st, &got), -EEXIST);
	memcpy(got.name, "bb", 3);
	got.name_len = 2;
	got.mtime_ns = 66;
	assert_rc(store_step_update(st, &got), 0);
	assert_rc(store_commit(st), 0);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_step_by_id(st, b.id, &got), 0);
	assert_string_equal(got.name, "bb");
	assert_i64(got.mtime_ns, 66);
	assert_rc(store_step_get(st, w.id, 0, S("b"), &got), -ENOENT);
	assert_rc(store_commit(st), 0);

	/* Delete one. */
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_step_delete(st, b.id), 0);
	assert_rc(store_commit(st), 0);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_step_by_id(st, b.id, &got), -ENOENT);
	assert_rc(store_commit(st), 0);
	store_close(st);
}

static void test_step_content(void **state)
{
	struct tmp *t = *state;
	struct store *st = open_store(t->path, true);
	struct wf_row w = make_wf(S("wf"));
	struct step_row a = make_step(0, 0, "big"), got;
	/* Two chunks and a half: the content crosses chunk boundaries. */
	size_t len = 2 * 1024 * 1024 + 512 * 1024 + 3;
	char *want, *have;
	size_t have_len;
	int fd;

	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_insert(st, &w), 0);
	a.wf = w.id;
	assert_rc(store_step_insert(st, &a), 0);
	assert_rc(store_commit(st), 0);

	fd = content_fd(t, len, 1, &want);
	write_step(st, a.id, fd, len);
	close(fd);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_step_by_id(st, a.id, &got), 0);
	assert_rc(store_commit(st), 0);
	assert_i64(got.size, (int64_t)len);
	assert_i64(got.mtime_ns, 55);
	have = checkpoint_content(st, a.id, &have_len);
	assert_int_equal(have_len, len);
	assert_memory_equal(have, want, len);
	free(have);

	/* Reads at offsets across the chunk boundaries, and past the end. */
	{
		char buf[64];
		size_t got_n;
		const int64_t offs[] = {
			0, 1024 * 1024 - 10, 1024 * 1024, 2 * 1024 * 1024 - 1,
			(int64_t)len - 20, (int64_t)len - 1,
		};

		for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
			size_t expect = len - (size_t)offs[i] < sizeof(buf)
					? len - (size_t)offs[i] : sizeof(buf);

			assert_rc(store_content_read(st, got.content, got.size,
						     offs[i], buf, sizeof(buf),
						     &got_n), 0);
			assert_int_equal(got_n, expect);
			assert_memory_equal(buf, want + offs[i], expect);
		}
		assert_rc(store_content_read(st, got.content, got.size,
					     (int64_t)len, buf, sizeof(buf),
					     &got_n), 0);
		assert_int_equal(got_n, 0);
		assert_rc(store_content_read(st, got.content, got.size,
					     (int64_t)len + 100, buf,
					     sizeof(buf), &got_n), 0);
		assert_int_equal(got_n, 0);
	}
	free(want);

	/* Rewritten shorter: no byte of the old content is left. */
	fd = content_fd(t, 10, 2, &want);
	write_step(st, a.id, fd, 10);
	close(fd);
	have = checkpoint_content(st, a.id, &have_len);
	assert_int_equal(have_len, 10);
	assert_memory_equal(have, want, 10);
	free(have);
	free(want);

	/* And empty. */
	write_step(st, a.id, -1, 0);
	have = checkpoint_content(st, a.id, &have_len);
	assert_int_equal(have_len, 0);
	free(have);
	store_close(st);
}

/* Purge until nothing is due, at time now_ms; returns the rows purged. */
static int64_t purge_all(struct store *st, int64_t now_ms)
{
	int64_t n, total = 0;

	do {
		assert_rc(store_begin(st, true), 0);
		assert_rc(store_purge(st, now_ms, 8, &n), 0);
		assert_rc(store_commit(st), 0);
		total += n;
	} while (n > 0);
	return total;
}

/*
 * A pinned version outlives a rewrite and a purge of its checkpoint, by
 * this store handle or another (another mount); an unpinned one, or one
 * whose pin lapsed (its mount died), is purged.
 */
static void test_step_reader_snapshot(void **state)
{
	struct tmp *t = *state;
	struct store *st = open_store(t->path, true);
	struct store *other = open_store(t->path, false);
	struct wf_row w = make_wf(S("wf"));
	struct step_row a = make_step(0, 0, "s"), r1, r2;
	char *v1, *v2, buf[64];
	size_t got;
	int fd;

	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_insert(st, &w), 0);
	a.wf = w.id;
	assert_rc(store_step_insert(st, &a), 0);
	assert_rc(store_commit(st), 0);
	fd = content_fd(t, 40, 3, &v1);
	write_step(st, a.id, fd, 40);
	close(fd);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_step_by_id(st, a.id, &r1), 0);
	assert_rc(store_commit(st), 0);

	/* Pinned by the other mount, then rewritten and purged here... */
	assert_rc(store_pin(other, r1.content, T0_MS), 0);
	fd = content_fd(t, 30, 4, &v2);
	write_step(st, a.id, fd, 30);
	close(fd);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_step_by_id(st, a.id, &r2), 0);
	assert_rc(store_commit(st), 0);
	assert_true(r2.content != r1.content);
	w.epoch = 1;
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_update(st, &w), 0);
	assert_rc(store_commit(st), 0);
	purge_all(st, T0_MS + 1000);
	/* ...the old version still reads whole, through either handle. */
	assert_rc(store_content_read(other, r1.content, 40, 10, buf, sizeof(buf),
				     &got), 0);
	assert_int_equal(got, 30);
	assert_memory_equal(buf, v1 + 10, 30);
	assert_rc(store_content_read(st, r1.content, 40, 0, buf, sizeof(buf),
				     &got), 0);
	assert_int_equal(got, 40);
	/*
	 * The checkpoint went with its epoch; its new version is dead too,
	 * and goes once the pin its staging took is dropped, unused.
	 */
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_step_by_id(st, a.id, &r2), -ENOENT);
	assert_rc(store_commit(st), 0);
	assert_rc(store_pins_renew(st, T0_MS + 1000), 0);
	assert_rc(store_pins_renew(st, T0_MS + 60 * 1000), 0);
	purge_all(st, T0_MS + 60 * 1000);
	assert_rc(store_content_read(st, r2.content, 30, 0, buf, sizeof(buf),
				     &got), -EIO);
	/* A pin of a version that is gone is refused: read the row again. */
	assert_rc(store_pin(st, r2.content, T0_MS), -ENOENT);

	/* Closed: the pin stays a while, then goes, and so does the version. */
	store_unpin(other, r1.content);
	assert_rc(store_pins_renew(other, T0_MS + 2000), 0);
	assert_rc(store_pins_renew(other, T0_MS + 3000), 0);
	purge_all(st, T0_MS + 3000);
	assert_rc(store_content_read(st, r1.content, 40, 0, buf, sizeof(buf),
				     &got), 0);
	assert_rc(store_pins_renew(other, T0_MS + 60 * 60 * 1000), 0);
	purge_all(st, T0_MS + 60 * 60 * 1000);
	assert_rc(store_content_read(st, r1.content, 40, 0, buf, sizeof(buf),
				     &got), -EIO);
	free(v1);
	free(v2);
	store_close(other);
	store_close(st);
}

/* A mount that died holding a pin: the pin lapses and the purge goes on. */
static void test_pin_of_a_dead_mount_lapses(void **state)
{
	struct tmp *t = *state;
	struct store *st = open_store(t->path, true);
	struct store *dead = open_store(t->path, false);
	struct wf_row w = make_wf(S("wf"));
	struct step_row a = make_step(0, 0, "s"), r;
	char *v, buf[16];
	size_t got;
	int fd;

	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_insert(st, &w), 0);
	a.wf = w.id;
	assert_rc(store_step_insert(st, &a), 0);
	assert_rc(store_commit(st), 0);
	fd = content_fd(t, 16, 5, &v);
	write_step(st, a.id, fd, 16);
	close(fd);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_step_by_id(st, a.id, &r), 0);
	assert_rc(store_commit(st), 0);
	assert_rc(store_pin(dead, r.content, T0_MS), 0);
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_step_delete(st, a.id), 0);
	assert_rc(store_commit(st), 0);
	/* Within the pin's lease the version stays... */
	purge_all(st, T0_MS + 1000);
	assert_rc(store_content_read(st, r.content, 16, 0, buf, sizeof(buf),
				     &got), 0);
	/* ...past it, with no renewal, it goes. */
	purge_all(st, T0_MS + 60 * 60 * 1000);
	assert_rc(store_content_read(st, r.content, 16, 0, buf, sizeof(buf),
				     &got), -EIO);
	free(v);
	store_close(dead);
	store_close(st);
}

/* Staged content that no commit named (a crash) is purged. */
static void test_staged_content_is_purged(void **state)
{
	struct tmp *t = *state;
	struct store *st = open_store(t->path, true);
	char *v, buf[8];
	int64_t content;
	size_t got;
	int fd = content_fd(t, 3 * 1024 * 1024, 6, &v);

	assert_rc(store_content_stage(st, fd, 3 * 1024 * 1024, T0_MS, &content), 0);
	close(fd);
	assert_true(content > 0);
	store_unpin(st, content);
	assert_rc(store_pins_renew(st, T0_MS + 1000), 0);
	assert_rc(store_pins_renew(st, T0_MS + 60 * 1000), 0);
	assert_true(purge_all(st, T0_MS + 60 * 1000) >= 3);
	assert_rc(store_content_read(st, content, 3 * 1024 * 1024, 0, buf,
				     sizeof(buf), &got), -EIO);
	free(v);
	store_close(st);
}

static void test_step_purge(void **state)
{
	struct tmp *t = *state;
	struct store *st = open_store(t->path, true);
	struct wf_row w = make_wf(S("wf")), v = make_wf(S("other"));
	struct step_row r, got;
	int64_t purged = -1;
	char name[16];

	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_insert(st, &w), 0);
	assert_rc(store_wf_insert(st, &v), 0);
	w.epoch = 3;
	assert_rc(store_wf_update(st, &w), 0);
	/* Five old ones in w (epochs 0..2), two current ones, one in v. */
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "old%d", i);
		r = make_step(w.id, i % 3, name);
		assert_rc(store_step_insert(st, &r), 0);
	}
	r = make_step(w.id, 3, "cur0");
	assert_rc(store_step_insert(st, &r), 0);
	r = make_step(w.id, 3, "cur1");
	assert_rc(store_step_insert(st, &r), 0);
	r = make_step(v.id, 0, "keep");
	assert_rc(store_step_insert(st, &r), 0);
	assert_rc(store_commit(st), 0);

	/* At most max at a time. */
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_purge(st, T0_MS, 2, &purged), 0);
	assert_rc(store_commit(st), 0);
	assert_i64(purged, 2);
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_purge(st, T0_MS, 100, &purged), 0);
	assert_rc(store_commit(st), 0);
	assert_i64(purged, 3);
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_purge(st, T0_MS, 100, &purged), 0);
	assert_rc(store_commit(st), 0);
	assert_i64(purged, 0);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_step_get(st, w.id, 3, S("cur0"), &got), 0);
	assert_rc(store_step_get(st, w.id, 3, S("cur1"), &got), 0);
	assert_rc(store_step_get(st, v.id, 0, S("keep"), &got), 0);
	assert_rc(store_step_get(st, w.id, 0, S("old0"), &got), -ENOENT);
	assert_rc(store_commit(st), 0);

	/* Deleting a workflow takes its checkpoints. */
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_delete(st, w.id), 0);
	assert_rc(store_commit(st), 0);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_step_get(st, w.id, 3, S("cur0"), &got), -ENOENT);
	assert_rc(store_commit(st), 0);
	store_close(st);
}

static void test_wf_update_keeps_events_size(void **state)
{
	struct tmp *t = *state;
	struct store *st = open_store(t->path, true);
	struct wf_row w = make_wf(S("wf")), got;
	struct event ev = { .type = "create", .time_ms = T0_MS };

	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_insert(st, &w), 0);
	assert_rc(store_event_append(st, w.id, &ev), 0);
	assert_rc(store_wf_by_id(st, w.id, &got), 0);
	assert_true(got.events_size > 0);
	/* store.h: only store_event_append() changes events_size. */
	w = got;
	w.events_size = 3;
	w.mode = 0700;
	assert_rc(store_wf_update(st, &w), 0);
	assert_rc(store_wf_by_id(st, w.id, &w), 0);
	assert_rc(store_commit(st), 0);
	assert_int_equal(w.mode, 0700);
	assert_i64(w.events_size, got.events_size);
	store_close(st);
}

/* ---- events ------------------------------------------------------------- */

static void append(struct store *st, int64_t wf, struct event *ev)
{
	assert_rc(store_begin(st, true), 0);
	assert_rc(store_event_append(st, wf, ev), 0);
	assert_rc(store_commit(st), 0);
}

static void test_events_render(void **state)
{
	struct tmp *t = *state;
	struct store *st = open_store(t->path, true);
	struct wf_row w = make_wf(S("ev")), got;
	struct event claim = {
		.type = "claim", .subject = "key", .name = "k1", .name_len = 2,
		.generation = 17, .number_field = "attempt",
		.number_field_value = 2, .time_ms = T0_MS, .pid = 4242,
		.uid = 1000,
	};
	struct event bare = { .type = "create", .time_ms = T0_MS + 1500 };
	struct event hex = {
		.type = "release", .subject = "key", .name = "\xff\x01z",
		.name_len = 3, .detail_field = "status", .detail = "succeeded",
		.detail_len = 9, .time_ms = T0_MS,
	};
	struct event quote = {
		.type = "claim", .subject = "key", .name = "a\"b\\c\n",
		.name_len = 6, .time_ms = T0_MS,
	};
	char *line;
	size_t len;
	char *all;

	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_insert(st, &w), 0);
	assert_rc(store_commit(st), 0);
	append(st, w.id, &claim);
	append(st, w.id, &bare);
	append(st, w.id, &hex);
	append(st, w.id, &quote);

	assert_int_equal(events_count(st, w.id, NULL), 4);
	assert_int_equal(events_count(st, w.id, "claim"), 2);
	assert_int_equal(events_count(st, w.id, "create"), 1);

	line = event_last(st, w.id, "create");
	assert_non_null(line);
	assert_contains(line, "\"time\":\"2023-11-14T22:13:21.500Z\"");
	/* Absent fields vanish; pid and uid are always there. */
	assert_not_contains(line, "\"generation\"");
	assert_not_contains(line, "\"key\"");
	assert_not_contains(line, "\"_\"");
	assert_not_contains(line, "\"__\"");
	assert_not_contains(line, "\"___\"");
	assert_contains(line, "\"pid\":0");
	free(line);

	all = events_of(st, w.id, &len);
	assert_contains(all, "\"time\":\"2023-11-14T22:13:20.000Z\"");
	assert_contains(all, "\"key\":\"k1\"");
	assert_contains(all, "\"generation\":17");
	assert_contains(all, "\"attempt\":2");
	assert_contains(all, "\"pid\":4242");
	assert_contains(all, "\"uid\":1000");
	/* A name that is not UTF-8 is written in hex under its own label. */
	assert_contains(all, "\"key_hex\":\"ff017a\"");
	assert_contains(all, "\"status\":\"succeeded\"");
	/* Quotes, backslashes and newlines are escaped: one event a line. */
	assert_contains(all, "\"key\":\"a\\\"b\\\\c\\n\"");
	free(all);

	/* The size recorded in the workflow is exactly the file's. */
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_wf_by_id(st, w.id, &got), 0);
	assert_rc(store_commit(st), 0);
	assert_i64(got.events_size, (int64_t)len);
	store_close(st);
}

static void test_events_read_offsets(void **state)
{
	struct tmp *t = *state;
	struct store *st = open_store(t->path, true);
	struct wf_row w = make_wf(S("ev")), v = make_wf(S("other"));
	struct event ev = { .type = "policy", .time_ms = T0_MS };
	char *all, buf[4096];
	size_t len, got;

	assert_rc(store_begin(st, true), 0);
	assert_rc(store_wf_insert(st, &w), 0);
	assert_rc(store_wf_insert(st, &v), 0);
	assert_rc(store_commit(st), 0);
	for (int i = 0; i < 5; i++) {
		ev.time_ms = T0_MS + i;
		append(st, w.id, &ev);
	}
	append(st, v.id, &ev);
	all = events_of(st, w.id, &len);
	assert_true(len > 50);

	/* Reading from every offset, in every size, gives the same bytes. */
	assert_rc(store_begin(st, false), 0);
	for (size_t off = 0; off <= len + 3; off++) {
		for (size_t size = 1; size <= 7; size += 3) {
			size_t want = off >= len ? 0 :
				      (len - off < size ? len - off : size);

			memset(buf, 0, sizeof(buf));
			assert_rc(store_event_read(st, w.id, (int64_t)off, buf,
						   size, &got), 0);
			assert_int_equal(got, want);
			if (want)
				assert_memory_equal(buf, all + off, want);
		}
		assert_rc(store_event_read(st, w.id, (int64_t)off, buf,
					   sizeof(buf), &got), 0);
		assert_int_equal(got, off >= len ? 0 : len - off);
		if (got)
			assert_memory_equal(buf, all + off, got);
	}
	/* Another workflow's file, and a workflow without events. */
	assert_rc(store_event_read(st, v.id, 0, buf, sizeof(buf), &got), 0);
	assert_true(got > 0);
	assert_true(got < len);
	assert_rc(store_event_read(st, w.id + v.id + 1, 0, buf, sizeof(buf),
				   &got), 0);
	assert_int_equal(got, 0);
	assert_rc(store_commit(st), 0);
	assert_int_equal(events_count(st, v.id, "policy"), 1);
	assert_int_equal(events_count(st, w.id, "policy"), 5);
	free(all);
	store_close(st);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, tmp_setup, tmp_teardown)
	const struct CMUnitTest tests[] = {
		T(test_missing_without_create),
		T(test_create_and_reopen),
		T(test_create_keeps_rows),
		T(test_refuse_foreign_sqlite),
		T(test_refuse_other_application_id),
		T(test_refuse_no_schema_version),
		T(test_refuse_random_bytes),
		T(test_refuse_corrupt_sqlite),
		T(test_refuse_empty_file),
		T(test_refuse_directory),
		T(test_refuse_newer_schema),
		T(test_refuse_newer_schema_in_wal),
		T(test_refuse_postgresql),
		T(test_scheme),
		T(test_upgrade_from_schema_1),
		T(test_upgrade_from_schema_2),
		T(test_upgrade_from_schema_3),
		T(test_refuse_values_out_of_range),
		T(test_refuse_key_values_out_of_range),
		T(test_read_only_store_file),
		T(test_generation_sequence),
		T(test_generation_shared_by_two_handles),
		T(test_busy_is_eagain),
		T(test_contended),
		T(test_two_stores_one_thread),
		T(test_stats_count_commits),
		T(test_stats_count_commits_with_concurrent_reader),
		T(test_rollback_discards),
		T(test_workflow_rows),
		T(test_key_rows),
		T(test_step_rows_absent),
		T(test_step_rows),
		T(test_step_content),
		T(test_step_reader_snapshot),
		T(test_pin_of_a_dead_mount_lapses),
		T(test_staged_content_is_purged),
		T(test_step_purge),
		T(test_wf_update_keeps_events_size),
		T(test_events_render),
		T(test_events_read_offsets),
	};

	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
