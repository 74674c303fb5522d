/*
 * store_pg_txn.c - the PostgreSQL backend's transactions (store_pg.h):
 * the writer row, the database's clock, reconnecting, and a commit whose
 * reply was lost.
 *
 * Every begin is one round trip, and reads the database's clock: a write
 * transaction updates the writer row (which serializes it with every
 * other mount's, and counts it) and learns its transaction id; a read
 * transaction takes a snapshot.  The clock is the database's for every
 * lease, expiry and retention: pg_now_ms() is this host's clock moved by
 * the offset the last begin measured, so a host whose clock is off
 * behaves as the others do.
 *
 * A connection that was lost is reset at the next begin (or the next
 * statement outside a transaction), at most once per call, bounded by
 * connect_timeout; until the server answers, calls fail with EAGAIN.
 * A COMMIT whose reply was lost is resolved before the caller hears of
 * it: after reconnecting, pg_xact_status() of the transaction says
 * whether it committed.  So a caller never hears of a success that did
 * not happen, nor of a failure that did not, unless the server stays
 * unreachable (EIO: the outcome is unknown).
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

static int64_t realtime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t pg_now_ms(struct store_impl *st)
{
	return realtime_ms() + __atomic_load_n(&st->clock_offset_ms,
					       __ATOMIC_RELAXED);
}

int pg_reconnect(struct store_impl *st)
{
	if (PQstatus(st->conn) == CONNECTION_OK && st->session_ok)
		return 0;
	if (PQstatus(st->conn) == CONNECTION_OK)
		return pg_session(st, st->conn) ? -EAGAIN : 0;
	PQreset(st->conn);
	if (PQstatus(st->conn) != CONNECTION_OK ||
	    pg_session(st, st->conn) != 0)
		return -EAGAIN;
	if (st->down_logged)
		syslog(LOG_NOTICE, "oncefs: reconnected to PostgreSQL");
	st->down_logged = false;
	return 0;
}

int pg_take(struct store_impl *st)
{
	int rc;

	pthread_mutex_lock(&st->lock);
	rc = pg_reconnect(st);
	if (rc)
		pthread_mutex_unlock(&st->lock);
	return rc;
}

void pg_give(struct store_impl *st)
{
	pthread_mutex_unlock(&st->lock);
}

/* The database's clock is in a read's reply: keep its offset. */
void pg_note_clock(struct store_impl *st, int64_t db_ms, int64_t sent_ms)
{
	int64_t now = realtime_ms();

	/* The server read its clock about halfway through the round trip. */
	__atomic_store_n(&st->clock_offset_ms, db_ms - (sent_ms + now) / 2,
			 __ATOMIC_RELAXED);
	st->txn_now_ms = db_ms;
}


static const char *const begin_sql[] = {
	"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT " DB_CLOCK,
	/*
	 * READ COMMITTED whatever the database's default: a write that waited
	 * for the writer row must see what the writer before it committed.
	 */
	"BEGIN ISOLATION LEVEL READ COMMITTED; UPDATE writer SET changes = "
	"changes + 1 WHERE id = 1 RETURNING " DB_CLOCK ", "
	"pg_current_xact_id()::text",
	/* A pin never waits for another mount's writer. */
	"BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = 1; "
	"UPDATE writer SET changes = "
	"changes + 1 WHERE id = 1 RETURNING " DB_CLOCK ", "
	"pg_current_xact_id()::text",
};

/* Under lock, on a usable connection: one try at a begin. */
static int try_begin(struct store_impl *st, int kind)
{
	int64_t sent = realtime_ms();
	PGresult *r;

	st->stats.round_trips++;
	r = PQexec(st->conn, begin_sql[kind]);
	int rc = 0;

	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		rc = pg_error(st, r, "begin");
		PQclear(r);
		if (PQtransactionStatus(st->conn) != PQTRANS_IDLE)
			PQclear(PQexec(st->conn, "ROLLBACK"));
		return rc;
	}
	/*
	 * Only a read's reply measures the offset: a write's clock was read
	 * after the wait for the writer row, not halfway through the trip.
	 */
	if (kind == 0)
		pg_note_clock(st, strtoll(PQgetvalue(r, 0, 0), NULL, 10), sent);
	else
		st->txn_now_ms = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	if (kind)
		snprintf(st->xid, sizeof(st->xid), "%s", PQgetvalue(r, 0, 1));
	PQclear(r);
	return 0;
}

static int begin_kind(struct store_impl *st, int kind)
{
	int rc;

	if (kind && st->read_only)
		return -EROFS;
	pthread_mutex_lock(&st->lock);
	rc = pg_reconnect(st);
	if (rc == 0) {
		rc = try_begin(st, kind);
		/*
		 * A connection the begin found lost (the server restarted
		 * while this mount was idle): once more on a new one.
		 */
		if (rc == -EAGAIN && PQstatus(st->conn) != CONNECTION_OK &&
		    pg_reconnect(st) == 0)
			rc = try_begin(st, kind);
	}
	if (rc) {
		pthread_mutex_unlock(&st->lock);
		return rc;
	}
	st->in_txn = true;
	st->in_write = kind != 0;
	st->wrote = false;
	if (kind)
		clock_gettime(CLOCK_MONOTONIC, &st->began);
	return 0;
}

int pg_begin(struct store_impl *st, bool write)
{
	return begin_kind(st, write ? 1 : 0);
}

int pg_begin_nowait(struct store_impl *st)
{
	return begin_kind(st, 2);
}

/* How long the write transaction held the writer row. */
static void note_hold(struct store_impl *st)
{
	struct timespec now;
	int64_t us;

	if (!st->in_write)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	us = (now.tv_sec - st->began.tv_sec) * 1000000 +
	     (now.tv_nsec - st->began.tv_nsec) / 1000;
	if (us > 0 && (uint64_t)us > st->stats.max_write_us)
		st->stats.max_write_us = (uint64_t)us;
	if (store_in_maintenance() && us > 0 &&
	    (uint64_t)us > st->stats.max_maintenance_us)
		st->stats.max_maintenance_us = (uint64_t)us;
}

/*
 * The reply to COMMIT was lost with the connection: ask a new one what
 * became of the transaction.  0 when it committed, -EAGAIN when it did
 * not (nothing happened: the caller may try again), -EIO when nobody can
 * say now.
 */
static int resolve_commit(struct store_impl *st)
{
	int64_t deadline = realtime_ms() + 5000;

	while (realtime_ms() < deadline) {
		struct pg_params p = { 0 };
		PGresult *r;
		int rc;

		if (pg_reconnect(st) != 0) {
			usleep(100 * 1000);
			continue;
		}
		pg_bytes(&p, st->xid, strlen(st->xid));
		p.formats[0] = 0;	/* the id as text */
		rc = pg_run(st, P_XACT_STATUS, &p, &r);
		if (rc)
			continue;
		if (strcmp(PQgetvalue(r, 0, 0), "committed") == 0)
			rc = 0;
		else if (strcmp(PQgetvalue(r, 0, 0), "aborted") == 0)
			rc = -EAGAIN;
		else
			rc = 1;		/* still in progress: ask again */
		PQclear(r);
		if (rc <= 0) {
			syslog(LOG_NOTICE, "oncefs: a commit whose reply was "
			       "lost was %s", rc ? "not made" : "made");
			return rc;
		}
		usleep(50 * 1000);
	}
	syslog(LOG_ERR, "oncefs: a commit whose reply was lost cannot be "
	       "resolved: PostgreSQL does not answer");
	return -EIO;
}

int pg_commit(struct store_impl *st)
{
	PGresult *r;
	int rc = 0;

	st->stats.round_trips++;
	r = PQexec(st->conn, "COMMIT");
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		bool lost = PQstatus(st->conn) != CONNECTION_OK;

		rc = pg_error(st, r, "commit");
		if (lost && st->in_write)
			rc = resolve_commit(st);
		else if (PQtransactionStatus(st->conn) != PQTRANS_IDLE)
			PQclear(PQexec(st->conn, "ROLLBACK"));
	} else if (strcmp(PQcmdStatus(r), "COMMIT") != 0) {
		rc = -EIO;	/* the transaction had failed: rolled back */
	}
	PQclear(r);
	if (rc == 0 && st->in_write && st->wrote) {
		st->stats.commits++;
		if (st->sync == STORE_SYNC_FULL)
			st->stats.syncs++;
	}
	note_hold(st);
	st->in_txn = st->in_write = false;
	pthread_mutex_unlock(&st->lock);
	return rc;
}

void pg_rollback(struct store_impl *st)
{
	if (PQtransactionStatus(st->conn) != PQTRANS_IDLE) {
		st->stats.round_trips++;
		PQclear(PQexec(st->conn, "ROLLBACK"));
	}
	note_hold(st);
	st->in_txn = st->in_write = false;
	pthread_mutex_unlock(&st->lock);
}

/* ---- flights: a write operation in one round trip -------------------- */

/*
 * Send the writer row's update and statement id with p as one flight
 * (pipeline mode), read their replies; under lock.  *got_xid says whether
 * the writer's reply, which carries the transaction id, came back (the
 * flush request after it has the server send it before it runs id, so
 * before it could commit).
 */
static int flight_once(struct store_impl *st, enum pg_stmt id,
		       struct pg_params *p, PGresult **res, bool *got_xid)
{
	char wname[16], name[16];
	PGresult *r;
	int rc = pg_prepare(st, P_WRITER);

	*got_xid = false;
	if (rc == 0)
		rc = pg_prepare(st, id);
	if (rc)
		return rc;
	pg_stmt_name(P_WRITER, wname, sizeof(wname));
	pg_stmt_name(id, name, sizeof(name));
	st->stats.round_trips++;
	if (!PQenterPipelineMode(st->conn) ||
	    !PQsendQueryPrepared(st->conn, wname, 0, NULL, NULL, NULL, 0) ||
	    !PQsendFlushRequest(st->conn) ||
	    !PQsendQueryPrepared(st->conn, name, p->n, p->values, p->lengths,
				 p->formats, 1) ||
	    !PQpipelineSync(st->conn)) {
		rc = pg_error(st, NULL, "send");
		goto out;
	}
	/* The writer's reply, then id's, each ended by a NULL; then the sync. */
	for (int q = 0; q < 2; q++) {
		while ((r = PQgetResult(st->conn)) != NULL) {
			ExecStatusType s = PQresultStatus(r);

			if (q == 0 && s == PGRES_TUPLES_OK && PQntuples(r) == 1) {
				st->txn_now_ms = strtoll(PQgetvalue(r, 0, 0),
							 NULL, 10);
				snprintf(st->xid, sizeof(st->xid), "%s",
					 PQgetvalue(r, 0, 1));
				*got_xid = true;
			} else if (q == 1 && rc == 0 && !*res &&
				   (s == PGRES_TUPLES_OK ||
				    s == PGRES_COMMAND_OK)) {
				*res = r;
				continue;
			} else if (rc == 0 && s != PGRES_PIPELINE_ABORTED) {
				rc = pg_error(st, r, q ? "operation" : "begin");
			}
			PQclear(r);
		}
		if (PQstatus(st->conn) != CONNECTION_OK)
			break;
	}
	if (PQstatus(st->conn) == CONNECTION_OK) {
		r = PQgetResult(st->conn);
		if (PQresultStatus(r) != PGRES_PIPELINE_SYNC && rc == 0)
			rc = pg_error(st, r, "sync");
		PQclear(r);
	}
out:
	PQexitPipelineMode(st->conn);
	if (PQstatus(st->conn) != CONNECTION_OK) {
		rc = -EAGAIN;
		if (*res) {
			PQclear(*res);	/* whether it committed is unknown */
			*res = NULL;
		}
	}
	return rc;
}

int pg_flight(struct store_impl *st, enum pg_stmt id, struct pg_params *p,
	      PGresult **res)
{
	bool got_xid = false;
	int rc;

	*res = NULL;
	if (st->read_only)
		return -EROFS;
	pthread_mutex_lock(&st->lock);
	clock_gettime(CLOCK_MONOTONIC, &st->began);
	st->in_write = true;
	rc = pg_reconnect(st);
	for (int tries = 0; rc == 0 && tries < 2; tries++) {
		rc = flight_once(st, id, p, res, &got_xid);
		if (rc != -EAGAIN || PQstatus(st->conn) == CONNECTION_OK)
			break;
		/*
		 * The connection was lost.  With the transaction id, ask what
		 * became of it: committed (its reply is lost: *res NULL), or
		 * not, and then once more on a new connection.  Without it, the
		 * server never ran the operation (it sends the id first), save
		 * on a network that lost a reply in flight: once more too.
		 */
		if (got_xid) {
			rc = resolve_commit(st);
			if (rc != -EAGAIN)
				break;
		}
		rc = pg_reconnect(st);
	}
	if (rc == 0) {
		st->stats.commits++;
		if (st->sync == STORE_SYNC_FULL)
			st->stats.syncs++;
	}
	note_hold(st);
	st->in_write = false;
	pthread_mutex_unlock(&st->lock);
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
