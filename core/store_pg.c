/*
 * store_pg.c - the PostgreSQL side of the store, as far as it goes: a
 * store named by a postgresql:// or postgres:// URL, a libpq connection
 * string or a service (service=NAME) is connected to and checked, so that
 * each way it can be wrong gets one clear line; then it is refused,
 * because this build cannot serve it yet (the backend's table of
 * operations, store_backend.h, is still to be written).
 *
 * Connection parameters are libpq's own: nothing here parses a URL.  A
 * password must come from where libpq looks for one (~/.pgpass,
 * PGPASSWORD, a service file), never from the store's name, which is on
 * a command line that `ps` shows to every user.  No statement is built
 * from a name: the schema's name is a bound parameter.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>

#include "store_backend.h"

/* The schema oncefs keeps its tables in (-o pg_schema, when it exists). */
#define PG_SCHEMA "oncefs"
/* How long a connection attempt may take, unless the name says. */
#define PG_CONNECT_TIMEOUT "10"

/* The first line of libpq's message, without its "FATAL:  " noise. */
static void first_line(const char *msg, char *out, size_t size)
{
	const char *fatal = strstr(msg, "FATAL:  ");
	size_t n;

	if (fatal)
		msg = fatal + 8;
	n = strcspn(msg, "\n");
	snprintf(out, size, "%.*s", (int)n, msg);
}

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
static int connect_to(const char *name, PGconn **out, char *err, size_t errlen)
{
	/* Later entries override earlier ones: the name's own settings win. */
	const char *const keys[] = { "connect_timeout",
				     "fallback_application_name", "dbname",
				     NULL };
	const char *const values[] = { PG_CONNECT_TIMEOUT, "oncefs", name,
				       NULL };
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

/* Is the oncefs schema there, and of which version (0: none)? */
static int schema_version(PGconn *c, long *version, char *err, size_t errlen)
{
	const char *const schema[] = { PG_SCHEMA };
	char why[400];
	PGresult *r;

	*version = 0;
	r = PQexecParams(c, "SELECT EXISTS (SELECT 1 FROM "
			 "information_schema.tables WHERE table_schema = $1 "
			 "AND table_name = 'meta')", 1, NULL, schema, NULL, NULL, 0);
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
	r = PQexecParams(c, "SELECT value FROM " PG_SCHEMA ".meta WHERE "
			 "name = 'schema_version'", 0, NULL, NULL, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 ||
	    sscanf(PQgetvalue(r, 0, 0), "%ld", version) != 1 || *version < 1) {
		snprintf(err, errlen, "the schema %s holds a table meta that is "
			 "not oncefs's (no schema_version)", PG_SCHEMA);
		PQclear(r);
		return -EINVAL;
	}
	PQclear(r);
	return 0;
}

int store_pg_refuse(const char *name, const struct store_options *opt,
		    char *err, size_t errlen)
{
	const char *db, *user, *host;
	bool password;
	long version;
	PGconn *c;
	int rc = has_password(name, &password, err, errlen);

	if (rc)
		return rc;
	if (password) {
		snprintf(err, errlen, "the store's name holds a password, which "
			 "every user sees in ps: put it in ~/.pgpass, PGPASSWORD "
			 "or a service file instead");
		return -EINVAL;
	}
	rc = connect_to(name, &c, err, errlen);
	if (rc)
		return rc;
	db = PQdb(c);
	user = PQuser(c);
	host = PQhost(c);
	rc = schema_version(c, &version, err, errlen);
	if (rc == 0 && version == 0 && !opt->create) {
		snprintf(err, errlen, "database %s on %s holds no oncefs store "
			 "(schema %s), and this build of oncefs can neither "
			 "create nor keep one there yet: use a SQLite file", db,
			 host, PG_SCHEMA);
		rc = -ENOENT;
	} else if (rc == 0 && version > STORE_SCHEMA_VERSION) {
		snprintf(err, errlen, "the store in database %s has schema "
			 "version %ld, newer than this oncefs (%d): upgrade "
			 "oncefs", db, version, STORE_SCHEMA_VERSION);
		rc = -EPROTONOSUPPORT;
	} else if (rc == 0) {
		snprintf(err, errlen, "connected to PostgreSQL %d.%d, database "
			 "%s on %s as %s; but this build of oncefs cannot keep a "
			 "store there yet: use a SQLite file",
			 PQserverVersion(c) / 10000, PQserverVersion(c) % 10000,
			 db, host, user);
		rc = -EPROTONOSUPPORT;
	}
	PQfinish(c);
	return rc;
}
