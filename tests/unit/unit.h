/*
 * unit.h - helpers shared by the cmocka programs in tests/unit.
 *
 * Every program includes this once; everything here is static.  The
 * fixture is a fresh SQLite store in a mkdtemp() directory, a context
 * whose clock is a variable the test moves, and two callers.
 */
#ifndef ONCE_UNIT_H
#define ONCE_UNIT_H

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "once.h"
#include "step.h"
#include "store.h"

/* A fixed, plausible start for the fake clock: 2023-11-14T22:13:20Z. */
#define T0_MS ((int64_t)1700000000000)

static const struct caller user = { .pid = 4242, .uid = 1000, .gid = 1000 };
static const struct caller other = { .pid = 4343, .uid = 1001, .gid = 1001 };
static const struct caller root = { .pid = 1, .uid = 0, .gid = 0 };

static inline const char *errname(long rc)
{
	const char *n;

	if (rc == 0)
		return "0";
	if (rc > 0)
		return "positive";
	n = strerrorname_np((int)-rc);
	return n ? n : "?";
}

/* Compare return codes, printing errno names when they differ. */
#define assert_rc(actual, expected) do {					\
	long _a = (long)(actual), _e = (long)(expected);			\
	if (_a != _e)								\
		fail_msg("%s = %ld (%s), expected %ld (%s)", #actual,	\
			 _a, errname(_a), _e, errname(_e));			\
} while (0)

/* The same for plain 64-bit values (cmocka prints them unsigned). */
#define assert_i64(actual, expected) do {					\
	long long _a = (long long)(actual), _e = (long long)(expected);	\
	if (_a != _e)								\
		fail_msg("%s = %lld, expected %lld", #actual, _a, _e);	\
} while (0)

#define S(lit) (lit), (sizeof(lit) - 1)

/* ---- files ------------------------------------------------------------ */

static inline void make_tmpdir(char *dir, size_t size)
{
	const char *base = getenv("TMPDIR");

	snprintf(dir, size, "%s/oncefs-unit-XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(dir))
		fail_msg("mkdtemp(%s): %s", dir, strerror(errno));
}

/* Remove dir and the files in it (the stores make no subdirectories). */
static inline void remove_tmpdir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[PATH_MAX];

	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

static inline bool path_exists(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0;
}

/* The whole file, malloc'd; *len gets its size.  NULL when unreadable. */
static inline char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0, got;

	*len = 0;
	if (!f)
		return NULL;
	do {
		if (n == cap) {
			cap = cap ? 2 * cap : 65536;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
	} while (got > 0);
	fclose(f);
	if (!buf)
		buf = malloc(1);
	*len = n;
	return buf;
}

static inline void spew(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	if (len)
		assert_int_equal(fwrite(buf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Run SQL on a database file through a connection of the test's own. */
static inline int raw_sql(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	char *msg = NULL;
	int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE |
				 SQLITE_OPEN_CREATE, NULL);

	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(db, 5000);
		rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
	}
	if (rc != SQLITE_OK)
		print_message("raw_sql: %s\n", msg ? msg : sqlite3_errstr(rc));
	sqlite3_free(msg);
	sqlite3_close(db);
	return rc;
}

/* ---- the fixture ------------------------------------------------------- */

/*
 * ONCEFS_TEST_PG names a PostgreSQL database (tests/unit/with_pg.py sets
 * it): each fixture's store is then the schema oncefs in it, dropped
 * first, instead of a file.  NULL: SQLite.
 */
static inline const char *test_pg(void)
{
	const char *url = getenv("ONCEFS_TEST_PG");

	return url && *url ? url : NULL;
}

/* A test that cannot apply to PostgreSQL says why, and is skipped. */
#define SQLITE_ONLY(why)                                                      \
	do {                                                                  \
		if (test_pg()) {                                              \
			print_message("skipped on PostgreSQL: %s\n", why);    \
			skip();                                               \
		}                                                             \
	} while (0)

/* An empty store's name for a fixture in dir: a file, or the database. */
static inline void fresh_store_name(const char *dir, char *path, size_t size)
{
	const char *url = test_pg();
	PGconn *c;
	PGresult *r;

	if (!url) {
		snprintf(path, size, "%s/state.db", dir);
		return;
	}
	snprintf(path, size, "%s", url);
	c = PQconnectdb(url);
	if (PQstatus(c) != CONNECTION_OK)
		fail_msg("%s: %s", url, PQerrorMessage(c));
	r = PQexec(c, "SET client_min_messages = warning; "
		   "DROP SCHEMA IF EXISTS oncefs CASCADE");
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		fail_msg("drop schema: %s", PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
}

struct fixture {
	char dir[1024];
	char path[PATH_MAX];
	struct store *st;
	struct once o;
	int64_t now;		/* the fake clock, Unix ms */
	int64_t max_checkpoint;	/* 0: the default */
};

static inline int64_t fake_clock(void *arg)
{
	return *(const int64_t *)arg;
}

static inline struct store *open_store(const char *path, bool create)
{
	struct store_options opt = {
		.create = create,
		.sync = STORE_SYNC_OFF,	/* tests need no power-loss safety */
		.busy_timeout_ms = 2000,
	};
	struct store *st = NULL;
	char err[256] = "";
	int rc;

	openlog("unit", LOG_PERROR, LOG_USER);	/* the store's messages too */
	rc = store_open(path, &opt, &st, err, sizeof(err));

	if (rc)
		fail_msg("store_open(%s) = %d (%s): %s", path, rc, errname(rc),
			 err);
	assert_non_null(st);
	return st;
}

static inline void fx_attach(struct fixture *fx, size_t max_result)
{
	struct once_config cfg = {
		.max_result = max_result,
		.max_checkpoint = fx->max_checkpoint ? fx->max_checkpoint
						     : ONCE_MAX_CHECKPOINT_DEFAULT,
		.tmpdir = fx->dir,
	};

	once_init(&fx->o, fx->st, &cfg);
	fx->o.clock = fake_clock;
	fx->o.clock_arg = &fx->now;
}

static inline int fx_setup_with(void **state, size_t max_result)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	make_tmpdir(fx->dir, sizeof(fx->dir));
	fresh_store_name(fx->dir, fx->path, sizeof(fx->path));
	fx->st = open_store(fx->path, true);
	fx->now = T0_MS;
	fx_attach(fx, max_result);
	*state = fx;
	return 0;
}

static inline int fx_setup(void **state)
{
	return fx_setup_with(state, ONCE_MAX_RESULT_DEFAULT);
}

static inline int fx_teardown(void **state)
{
	struct fixture *fx = *state;

	if (!fx)
		return 0;
	store_close(fx->st);
	remove_tmpdir(fx->dir);
	free(fx);
	*state = NULL;
	return 0;
}

/* Close and reopen the fixture's store (a remount). */
static inline void fx_reopen(struct fixture *fx)
{
	store_close(fx->st);
	fx->st = open_store(fx->path, false);
	fx_attach(fx, fx->o.config.max_result);
}

/* ---- events ------------------------------------------------------------ */

/* The whole events file of workflow wf, NUL-terminated, malloc'd. */
static inline char *events_of(struct store *st, int64_t wf, size_t *len)
{
	size_t cap = 1 << 20, got = 0;
	char *buf = malloc(cap + 1);

	assert_non_null(buf);
	assert_rc(store_begin(st, false), 0);
	assert_rc(store_event_read(st, wf, 0, buf, cap, &got), 0);
	assert_rc(store_commit(st), 0);
	buf[got] = '\0';
	if (len)
		*len = got;
	return buf;
}

/*
 * Check that every line of the events file is a JSON object with a
 * "time" and an "event" member (SQLite's json_valid is the judge), and
 * count the lines whose event is type (all lines when type is NULL).
 */
static inline int events_count(struct store *st, int64_t wf, const char *type)
{
	static const char q[] =
		"SELECT json_valid(?1), json_type(?1), "
		"json_extract(?1, '$.event'), json_type(?1, '$.time')";
	size_t len;
	char *buf = events_of(st, wf, &len);
	char *line = buf, *nl;
	sqlite3 *db;
	sqlite3_stmt *s;
	int n = 0;

	assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, q, -1, &s, NULL), SQLITE_OK);
	if (len)
		assert_int_equal(buf[len - 1], '\n');
	while ((nl = strchr(line, '\n')) != NULL) {
		const char *ev, *type_of;

		sqlite3_bind_text(s, 1, line, (int)(nl - line), SQLITE_STATIC);
		assert_int_equal(sqlite3_step(s), SQLITE_ROW);
		if (sqlite3_column_int(s, 0) != 1)
			fail_msg("event line is not JSON: %.*s", (int)(nl - line),
				 line);
		type_of = (const char *)sqlite3_column_text(s, 1);
		assert_string_equal(type_of, "object");
		ev = (const char *)sqlite3_column_text(s, 2);
		if (!ev)
			fail_msg("event line without \"event\": %.*s",
				 (int)(nl - line), line);
		assert_non_null(sqlite3_column_text(s, 3));
		assert_string_equal((const char *)sqlite3_column_text(s, 3),
				    "text");
		if (!type || strcmp(ev, type) == 0)
			n++;
		sqlite3_reset(s);
		line = nl + 1;
	}
	assert_int_equal(*line, '\0');	/* no partial last line */
	sqlite3_finalize(s);
	sqlite3_close(db);
	free(buf);
	return n;
}

/* The size the workflow reports for its events file is the file's. */
static inline void assert_events_size(struct once *o, int64_t wf)
{
	struct wf_row w;
	size_t len;
	char *buf;

	assert_rc(store_begin(o->store, false), 0);
	assert_rc(store_wf_by_id(o->store, wf, &w), 0);
	assert_rc(store_commit(o->store), 0);
	buf = events_of(o->store, wf, &len);
	free(buf);
	if ((int64_t)len != w.events_size)
		fail_msg("events_size %lld, but the events file has %zu bytes",
			 (long long)w.events_size, len);
}

/*
 * The last line of the events file whose event is type, or NULL;
 * malloc'd, without its newline.
 */
static inline char *event_last(struct store *st, int64_t wf, const char *type)
{
	char *buf = events_of(st, wf, NULL), *line = buf, *nl, *found = NULL;
	char pat[64];

	snprintf(pat, sizeof(pat), "\"event\":\"%s\"", type);
	while ((nl = strchr(line, '\n')) != NULL) {
		*nl = '\0';
		if (strstr(line, pat)) {
			free(found);
			found = strdup(line);
		}
		line = nl + 1;
	}
	free(buf);
	return found;
}

/* Assert that s contains needle. */
#define assert_contains(s, needle) do {						\
	const char *_s = (s), *_n = (needle);					\
	if (!_s || !strstr(_s, _n))						\
		fail_msg("%s: \"%s\" does not contain \"%s\"", #s,		\
			 _s ? _s : "(null)", _n);				\
} while (0)

#define assert_not_contains(s, needle) do {					\
	const char *_s = (s), *_n = (needle);					\
	if (_s && strstr(_s, _n))						\
		fail_msg("%s: \"%s\" contains \"%s\"", #s, _s, _n);	\
} while (0)

/*
 * A committed checkpoint of the workflow's current fingerprint, through
 * the core (step.h): create it, write content through a private copy,
 * commit.  Returns its row.
 */
static inline struct step_row make_checkpoint(struct once *o, int64_t wf,
					      const char *name,
					      const char *content, size_t len)
{
	struct step_writer *w = NULL;
	struct step_row r;

	assert_rc(step_create(o, wf, name, strlen(name), true, &user, &r), 0);
	assert_rc(step_writer_open(o, &r, true, &w), 0);
	if (len)
		assert_rc(step_writer_write(o, w, 0, content, len, false), 0);
	assert_rc(step_writer_commit(o, w, &user), 0);
	r.id = step_writer_id(w);
	step_writer_close(w);
	assert_rc(step_get(o, r.id, &r), 0);
	assert_i64(r.size, (int64_t)len);
	return r;
}

/* The committed content of a checkpoint, read from its content version. */
static inline char *checkpoint_content(struct store *st, int64_t id,
				       size_t *len)
{
	struct step_row r;
	size_t got = 0;
	char *buf;

	assert_rc(store_begin(st, false), 0);
	assert_rc(store_step_by_id(st, id, &r), 0);
	assert_rc(store_commit(st), 0);
	buf = malloc((size_t)r.size + 1);
	assert_non_null(buf);
	if (r.size)
		assert_rc(store_content_read(st, r.content, r.size, 0, buf,
					     (size_t)r.size, &got), 0);
	assert_int_equal(got, (size_t)r.size);
	buf[r.size] = '\0';
	*len = got;
	return buf;
}

#endif
