/*
 * store_pg_txn.c - the PostgreSQL backend's connections and transactions
 * (store_pg.h): the pool, the writer row, the database's clock,
 * reconnecting, flights, and a write whose reply was lost.
 *
 * A write, whether a transaction (begin .. commit) or a flight (one
 * operation, store_pg_verbs.c), begins with two statements in the same
 * round trip: one advances its connection's row of last_writes from op
 * X - 1 to X, failing when the row is not at X - 1; the other updates
 * the writer row, which serializes it with every other mount's writes,
 * and counts it for store_changed().  A read transaction takes a
 * snapshot and reads the database's clock: the clock is the database's
 * for every lease, expiry and retention.  pg_now_ms() is the last reading
 * (taken at every lookup and read transaction) moved on by this host's
 * monotonic clock, so that neither a host clock that is off nor one that
 * is stepped (NTP, an operator) enters any decision.
 *
 * A connection that was lost is reset at its next use; while the server
 * does not answer, a call tries again for busy_timeout (5 s unless the
 * mount says), then fails with EAGAIN, and the mount recovers by itself
 * when the server is back.  A write whose reply was lost (the COMMIT's, or a
 * flight's) is resolved before the caller hears of it: on a new
 * connection, the row of last_writes is locked (so that a transaction
 * still running on the old one ends first) and moved to X: if it was at
 * X, the write committed; if at X - 1, it did not, and now never can (a
 * flight of the old connection that reaches the server late finds the
 * row past X - 1 and fails).  So a caller never hears of a success that
 * did not happen, nor of a failure that did not, unless the server stays
 * unreachable (EIO: the outcome is unknown).  Unlike pg_xact_status(),
 * this holds when a crashed server hands out a lost transaction's id
 * again, and on servers that have no such function.  A flight that the
 * server rolled back for a serialization failure or a deadlock is sent
 * again (CONFLICT_TRIES).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "store_pg.h"

/* How long a lost write's outcome may take to learn. */
#define RESOLVE_MS 5000
/*
 * A flight that met a serialization failure or a deadlock (SQLSTATE
 * 40001, 40P01: it was rolled back whole) is sent again, this many times
 * at most, after a pause that grows and is jittered so that the
 * contenders part.
 */
#define CONFLICT_TRIES 8

static __thread struct pg_conn *mine;

struct pg_conn *pg_cur(void)
{
	return mine;
}

void pg_count_trip(struct store_impl *st)
{
	__atomic_add_fetch(&st->stats.round_trips, 1, __ATOMIC_RELAXED);
}

int64_t pg_steady_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t pg_now_ms(struct store_impl *st)
{
	return pg_steady_ms() + __atomic_load_n(&st->clock_offset_ms,
						__ATOMIC_RELAXED);
}

/* ---- the pool ---------------------------------------------------------- */

int pg_reconnect(struct store_impl *st)
{
	struct pg_conn *c = mine;
	char err[256];

	if (c->broken) {
		PQfinish(c->conn);
		c->conn = NULL;
		c->broken = false;
	}
	if (c->conn && PQstatus(c->conn) == CONNECTION_OK && c->session_ok)
		return 0;
	if (c->conn && PQstatus(c->conn) == CONNECTION_OK)
		return pg_session(st, c) ? -EAGAIN : 0;
	if (!c->conn) {
		if (pg_connect(st->name, &c->conn, err, sizeof(err)) != 0) {
			if (!__atomic_exchange_n(&st->down_logged, true,
						 __ATOMIC_RELAXED))
				syslog(LOG_ERR, "oncefs: %s", err);
			return -EAGAIN;
		}
	} else {
		PQreset(c->conn);
	}
	if (PQstatus(c->conn) != CONNECTION_OK || pg_session(st, c) != 0)
		return -EAGAIN;
	if (__atomic_exchange_n(&st->down_logged, false, __ATOMIC_RELAXED))
		syslog(LOG_NOTICE, "oncefs: reconnected to PostgreSQL");
	return 0;
}

/*
 * pg_reconnect(), tried again while the server does not answer, for
 * busy_timeout at most (a restart of the server is a wait, not an error);
 * then -EAGAIN.
 */
static int reconnect_wait(struct store_impl *st)
{
	int64_t deadline = pg_steady_ms() + st->busy_timeout_ms;
	int rc;

	while ((rc = pg_reconnect(st)) == -EAGAIN && pg_steady_ms() < deadline)
		usleep(100 * 1000);
	return rc;
}

int pg_take(struct store_impl *st)
{
	struct pg_conn *c = NULL;
	int rc;

	if (mine) {
		mine->depth++;
		return 0;
	}
	pthread_mutex_lock(&st->lock);
	for (;;) {
		/* An idle connection that is open, else a new one, else wait. */
		for (int i = 0; i < st->nconns && !c; i++)
			if (!st->conns[i].busy)
				c = &st->conns[i];
		if (!c && st->nconns < st->max_conns)
			c = &st->conns[st->nconns++];
		if (c)
			break;
		pthread_cond_wait(&st->freed, &st->lock);
	}
	c->busy = true;
	c->depth = 1;
	pthread_mutex_unlock(&st->lock);
	mine = c;
	rc = reconnect_wait(st);
	if (rc)
		pg_give(st);
	return rc;
}

void pg_give(struct store_impl *st)
{
	struct pg_conn *c = mine;

	if (--c->depth > 0)
		return;
	mine = NULL;
	pthread_mutex_lock(&st->lock);
	c->busy = false;
	pthread_cond_signal(&st->freed);
	pthread_mutex_unlock(&st->lock);
}

/* ---- the clock ----------------------------------------------------------- */

void pg_note_clock(struct store_impl *st, int64_t db_ms, int64_t sent_ms)
{
	int64_t now = pg_steady_ms();

	/* The server read its clock about halfway through the round trip. */
	__atomic_store_n(&st->clock_offset_ms, db_ms - (sent_ms + now) / 2,
			 __ATOMIC_RELAXED);
}

/* ---- writes: marking, and resolving one whose reply was lost ------------ */

/* How long the write held the writer row; its connection's write ends. */
static void write_ended(struct store_impl *st, bool committed)
{
	struct pg_conn *c = mine;
	struct timespec now;
	int64_t us;

	if (!c->in_write)
		return;
	c->in_write = false;
	if (committed) {
		__atomic_add_fetch(&st->stats.commits, 1, __ATOMIC_RELAXED);
		if (st->sync == STORE_SYNC_FULL)
			__atomic_add_fetch(&st->stats.syncs, 1, __ATOMIC_RELAXED);
	}
	clock_gettime(CLOCK_MONOTONIC, &now);
	us = (now.tv_sec - c->began.tv_sec) * 1000000 +
	     (now.tv_nsec - c->began.tv_nsec) / 1000;
	store_note_hold(us);
	pthread_mutex_lock(&st->lock);
	if (us > 0 && (uint64_t)us > st->stats.max_write_us)
		st->stats.max_write_us = (uint64_t)us;
	if (store_in_maintenance() && us > 0 &&
	    (uint64_t)us > st->stats.max_maintenance_us)
		st->stats.max_maintenance_us = (uint64_t)us;
	pthread_mutex_unlock(&st->lock);
}

/* The connection's row of last_writes, made once per connection. */
static int ensure_mark(struct store_impl *st)
{
	struct pg_conn *c = mine;
	struct pg_params p = { 0 };
	int rc;

	if (c->marked)
		return 0;
	pg_int(&p, c->id);
	pg_int(&p, pg_now_ms(st));
	rc = pg_exec(st, P_MARK_NEW, &p);
	c->marked = rc == 0;
	return rc;
}

/* Send the mark of write op (p gets its parameters) and the writer's update. */
static bool send_mark(struct store_impl *st, struct pg_params *p, int64_t op)
{
	char mark[16], writer[16];

	pg_int(p, mine->id);
	pg_int(p, op);
	pg_int(p, pg_now_ms(st));
	pg_stmt_name(P_MARK, mark, sizeof(mark));
	pg_stmt_name(P_WRITER, writer, sizeof(writer));
	return PQsendQueryPrepared(mine->conn, mark, p->n, p->values, p->lengths,
				   p->formats, 1) &&
	       PQsendQueryPrepared(mine->conn, writer, 0, NULL, NULL, NULL, 1);
}

/*
 * Write op of this connection lost its reply with the connection: learn
 * on a new one whether it committed (0) or not (-EAGAIN: nothing
 * happened, and nothing will), or -EIO when nobody can say now.
 */
static int resolve(struct store_impl *st, int64_t op)
{
	struct pg_conn *c = mine;
	int64_t deadline = pg_steady_ms() + RESOLVE_MS;

	while (pg_steady_ms() < deadline) {
		struct pg_params p = { 0 };
		int64_t was = 0;
		int rc;

		if (pg_reconnect(st) != 0) {
			usleep(100 * 1000);
			continue;
		}
		pg_int(&p, c->id);
		pg_int(&p, op);
		rc = pg_one_int(st, P_RESOLVE, &p, &was);
		if (rc)
			continue;	/* the old transaction still runs */
		c->op = op;
		if (was != op && was != op - 1) {
			syslog(LOG_ERR, "oncefs: the mark of a lost write reads "
			       "%" PRId64 ", not %" PRId64 " or one less",
			       was, op);
			return -EIO;
		}
		syslog(LOG_NOTICE, "oncefs: a write whose reply was lost was %s",
		       was == op ? "made" : "not made");
		return was == op ? 0 : -EAGAIN;
	}
	syslog(LOG_ERR, "oncefs: a write whose reply was lost cannot be "
	       "resolved: PostgreSQL does not answer");
	return -EIO;
}

/*
 * After a write that failed so that its connection's op may not be the
 * store's (a lost write nobody could resolve, or a mark refused): a new
 * row for the connection, so that its next write does not wait on the
 * old one's fate.  The old row is dropped with the stale ones.
 */
static void forget_mark_if(struct store_impl *st, int rc)
{
	(void)st;
	if (rc != -EIO)
		return;
	mine->id = store_new_mount_id();
	mine->op = 0;
	mine->marked = false;
}

/* ---- transactions --------------------------------------------------------- */

static const char read_begin[] =
	"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT " DB_CLOCK;

/* One result that must be s (or any result when s is 0); rc kept. */
static int expect(struct store_impl *st, ExecStatusType s, const char *what,
		  int rc)
{
	PGresult *r = PQgetResult(mine->conn);

	if (rc == 0 && !r)
		rc = pg_error(st, NULL, what);
	else if (rc == 0 && PQresultStatus(r) != s &&
		 PQresultStatus(r) != PGRES_PIPELINE_ABORTED)
		rc = pg_error(st, r, what);
	else if (rc == 0 && PQresultStatus(r) == PGRES_PIPELINE_ABORTED)
		rc = -EIO;
	/*
	 * An error where the sync was due (the implicit COMMIT failed: a
	 * serialization failure at commit) is followed by its NULL, then
	 * the sync: read to it, so that the connection stays usable and the
	 * caller may try again.
	 */
	if (s == PGRES_PIPELINE_SYNC && r &&
	    PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
		for (int i = 0; i < 4; i++) {
			PQclear(r);
			r = PQgetResult(mine->conn);
			if (r && PQresultStatus(r) == PGRES_PIPELINE_SYNC)
				break;
		}
	}
	PQclear(r);
	/* Each statement's results end with a NULL (but the sync's). */
	if (s != PGRES_PIPELINE_SYNC)
		while ((r = PQgetResult(mine->conn)) != NULL)
			PQclear(r);
	return rc;
}

/* A write transaction's begin, on a working connection: one round trip. */
static int try_begin_write(struct store_impl *st, bool nowait)
{
	struct pg_conn *c = mine;
	struct pg_params p = { 0 };
	int rc = ensure_mark(st);
	bool lazy = store_in_maintenance();
	bool sent;

	if (rc == 0)
		rc = pg_prepare(st, P_MARK);
	if (rc == 0)
		rc = pg_prepare(st, P_WRITER);
	if (rc)
		return rc;
	pg_count_trip(st);
	sent = PQenterPipelineMode(c->conn) &&
	       PQsendQueryParams(c->conn, "BEGIN ISOLATION LEVEL READ COMMITTED",
				 0, NULL, NULL, NULL, NULL, 0) &&
	       (!nowait || PQsendQueryParams(c->conn, "SET LOCAL lock_timeout "
					     "= 1", 0, NULL, NULL, NULL, NULL,
					     0)) &&
	       /* Maintenance waits for no flush: see sq_commit(). */
	       (!lazy || PQsendQueryParams(c->conn, "SET LOCAL "
					   "synchronous_commit = off", 0,
					   NULL, NULL, NULL, NULL, 0)) &&
	       send_mark(st, &p, c->op + 1) && PQpipelineSync(c->conn);
	rc = sent ? 0 : pg_error(st, NULL, "begin");
	if (sent) {
		rc = expect(st, PGRES_COMMAND_OK, "begin", rc);
		if (nowait)
			rc = expect(st, PGRES_COMMAND_OK, "begin", rc);
		if (lazy)
			rc = expect(st, PGRES_COMMAND_OK, "begin", rc);
		rc = expect(st, PGRES_TUPLES_OK, "begin", rc);
		rc = expect(st, PGRES_TUPLES_OK, "begin", rc);
		rc = expect(st, PGRES_PIPELINE_SYNC, "begin", rc);
	}
	if (!PQexitPipelineMode(c->conn))
		c->broken = true;
	if (rc && PQstatus(c->conn) == CONNECTION_OK && !c->broken &&
	    PQtransactionStatus(c->conn) != PQTRANS_IDLE)
		PQclear(PQexec(c->conn, "ROLLBACK"));
	return rc;
}

static int try_begin_read(struct store_impl *st)
{
	int64_t sent = pg_steady_ms();
	PGresult *r;
	int rc = 0;

	pg_count_trip(st);
	r = PQexec(mine->conn, read_begin);
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		rc = pg_error(st, r, "begin");
		if (PQtransactionStatus(mine->conn) != PQTRANS_IDLE)
			PQclear(PQexec(mine->conn, "ROLLBACK"));
	} else {
		pg_note_clock(st, strtoll(PQgetvalue(r, 0, 0), NULL, 10), sent);
	}
	PQclear(r);
	return rc;
}

static int begin_kind(struct store_impl *st, bool write, bool nowait)
{
	struct pg_conn *c;
	int rc;

	if (write && st->read_only)
		return -EROFS;
	rc = pg_take(st);
	if (rc)
		return rc;
	c = mine;
	for (int tries = 0; tries < 2; tries++) {
		rc = write ? try_begin_write(st, nowait) : try_begin_read(st);
		/*
		 * A connection the begin found lost (the server restarted
		 * while this mount was idle): once more on a new one.
		 */
		if (rc != -EAGAIN ||
		    (PQstatus(c->conn) == CONNECTION_OK && !c->broken) ||
		    reconnect_wait(st) != 0)
			break;
	}
	if (rc) {
		forget_mark_if(st, rc);
		pg_give(st);
		return rc;
	}
	c->in_txn = true;
	c->in_write = write;
	if (write)
		clock_gettime(CLOCK_MONOTONIC, &c->began);
	return 0;
}

int pg_begin(struct store_impl *st, bool write)
{
	return begin_kind(st, write, false);
}

int pg_begin_nowait(struct store_impl *st)
{
	return begin_kind(st, true, true);
}

int pg_commit(struct store_impl *st)
{
	struct pg_conn *c = mine;
	bool write = c->in_write, lost_reply = false;
	PGresult *r;
	int rc = 0;

	pg_count_trip(st);
	r = PQexec(c->conn, "COMMIT");
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		bool lost;

		rc = pg_error(st, r, "commit");
		lost = PQstatus(c->conn) != CONNECTION_OK || c->broken;
		lost_reply = lost && write;
		if (lost_reply)
			rc = resolve(st, c->op + 1);
		else if (PQtransactionStatus(c->conn) != PQTRANS_IDLE)
			PQclear(PQexec(c->conn, "ROLLBACK"));
	} else if (strcmp(PQcmdStatus(r), "COMMIT") != 0) {
		rc = -EIO;	/* the transaction had failed: rolled back */
	}
	PQclear(r);
	if (rc == 0 && write && !lost_reply)
		c->op++;
	forget_mark_if(st, rc);
	write_ended(st, rc == 0);
	c->in_txn = false;
	pg_give(st);
	return rc;
}

void pg_rollback(struct store_impl *st)
{
	struct pg_conn *c = mine;

	if (PQtransactionStatus(c->conn) != PQTRANS_IDLE) {
		pg_count_trip(st);
		PQclear(PQexec(c->conn, "ROLLBACK"));
	}
	write_ended(st, false);
	c->in_txn = false;
	pg_give(st);
}

/* ---- flights: a write operation in one round trip ------------------------- */

/* Before try n + 1 of a flight that conflicted: 1 to 2^n ms, at random. */
static void conflict_pause(int n)
{
	static __thread unsigned seed;
	struct timespec ts;
	long ms;

	if (!seed)
		seed = (unsigned)pg_steady_ms() ^ (unsigned)(uintptr_t)&seed;
	ms = 1 + rand_r(&seed) % (1L << (n < 6 ? n : 6));
	ts.tv_sec = 0;
	ts.tv_nsec = ms * 1000000;
	nanosleep(&ts, NULL);
}

/*
 * Send the mark, the writer row's update and statement id with p as one
 * flight (pipeline mode), an implicit transaction that the server
 * commits at its sync; read the replies.  *res gets id's result.
 * *lost says that the connection went before the sync's reply.
 */
static int flight_once(struct store_impl *st, enum pg_stmt id,
		       struct pg_params *p, PGresult **res, bool *lost)
{
	struct pg_conn *c = mine;
	struct pg_params mark = { 0 };
	char name[16];
	PGresult *r;
	int rc = ensure_mark(st);

	*lost = false;
	if (rc == 0)
		rc = pg_prepare(st, P_MARK);
	if (rc == 0)
		rc = pg_prepare(st, P_WRITER);
	if (rc == 0)
		rc = pg_prepare(st, id);
	if (rc)
		return rc;
	pg_stmt_name(id, name, sizeof(name));
	pg_count_trip(st);
	if (!PQenterPipelineMode(c->conn) || !send_mark(st, &mark, c->op + 1) ||
	    !PQsendQueryPrepared(c->conn, name, p->n, p->values, p->lengths,
				 p->formats, 1) ||
	    !PQpipelineSync(c->conn)) {
		rc = pg_error(st, NULL, "send");
		goto out;
	}
	rc = expect(st, PGRES_TUPLES_OK, "write", rc);
	rc = expect(st, PGRES_TUPLES_OK, "write", rc);
	r = PQgetResult(c->conn);
	if (r && rc == 0 && (PQresultStatus(r) == PGRES_TUPLES_OK ||
			     PQresultStatus(r) == PGRES_COMMAND_OK)) {
		*res = r;
	} else {
		if (rc == 0)
			rc = r && PQresultStatus(r) == PGRES_PIPELINE_ABORTED
				     ? -EIO : pg_error(st, r, "operation");
		PQclear(r);
	}
	while ((r = PQgetResult(c->conn)) != NULL)
		PQclear(r);
	rc = expect(st, PGRES_PIPELINE_SYNC, "write", rc);
out:
	if (!PQexitPipelineMode(c->conn))
		c->broken = true;	/* replies it never read: not reusable */
	if (PQstatus(c->conn) != CONNECTION_OK || c->broken) {
		*lost = true;
		rc = -EAGAIN;
		PQclear(*res);
		*res = NULL;
	}
	return rc;
}

int pg_flight(struct store_impl *st, enum pg_stmt id, struct pg_params *p,
	      PGresult **res)
{
	struct pg_conn *c;
	bool lost = false;
	int rc;

	*res = NULL;
	if (st->read_only)
		return -EROFS;
	rc = pg_take(st);
	if (rc)
		return rc;
	c = mine;
	c->in_write = true;
	clock_gettime(CLOCK_MONOTONIC, &c->began);
	for (int tries = 0, conflicts = 0; tries < 2; tries++) {
		c->conflict = false;
		rc = flight_once(st, id, p, res, &lost);
		if (rc == 0)
			c->op++;
		if (rc == -EAGAIN && c->conflict && !lost &&
		    ++conflicts < CONFLICT_TRIES) {
			conflict_pause(conflicts);
			tries--;
			continue;
		}
		if (!lost)
			break;
		/*
		 * Its outcome went with the connection: committed (the reply
		 * is lost: *res NULL), or not, and then once more on a new
		 * connection.
		 */
		rc = resolve(st, c->op + 1);
		if (rc != -EAGAIN || reconnect_wait(st) != 0)
			break;
	}
	forget_mark_if(st, rc);
	write_ended(st, rc == 0);
	pg_give(st);
	return rc;
}

int pg_next_generation(struct store_impl *st, int64_t *out)
{
	return pg_one_int(st, P_NEXT_GEN, NULL, out);
}

int pg_changed(struct store_impl *st, int64_t *seen)
{
	int64_t v = 0;
	int rc = pg_take(st);

	if (rc)
		return rc;
	rc = pg_one_int(st, P_CHANGES, NULL, &v);
	pg_give(st);
	if (rc)
		return rc;
	if (v == *seen)
		return 0;
	*seen = v;
	return 1;
}
