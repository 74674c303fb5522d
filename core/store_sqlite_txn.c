/*
 * store_sqlite_txn.c - the SQLite backend's transactions and group commit
 * (see store_sqlite.h).
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

/* ---- transactions ----------------------------------------------------- */

/* The longest a sync waits for the write transactions queued before it. */
#define SYNC_GATHER_US 500

/*
 * Does this thread's write transaction count in st->writers, for a
 * syncer to gather?  Not maintenance's, which waits for no sync.
 */
static bool gathered(void)
{
	return !store_in_maintenance();
}

/* A write transaction ended (or never began): wake a gathering syncer. */
static void writer_done(struct store_impl *st)
{
	if (!gathered())
		return;
	__atomic_sub_fetch(&st->writers, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&st->gathering, __ATOMIC_SEQ_CST)) {
		pthread_mutex_lock(&st->sync_lock);
		pthread_cond_broadcast(&st->gather_cond);
		pthread_mutex_unlock(&st->sync_lock);
	}
}

/*
 * Inside a transaction under sync=full: note what it can see, so that its
 * end waits until that is durable (see struct store_impl).
 */
static int note_visible(struct store_impl *st)
{
	sqlite3_stmt *s = sq_stmt(st, S_DATA_VERSION);
	int64_t dv;
	int rc;

	if (!s)
		return -EIO;
	rc = sqlite3_step(s);
	dv = sqlite3_column_int64(s, 0);
	sq_done(s);
	if (rc != SQLITE_ROW)
		return sq_error(st, rc, "data version");
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
int sq_begin_txn(struct store_impl *st, bool write, bool wait)
{
	struct conn *c = &st->main;
	sqlite3_stmt *s;
	int rc;

	if (write && __atomic_load_n(&st->sync_failed, __ATOMIC_ACQUIRE))
		return -EROFS;
	if (write && gathered())
		__atomic_add_fetch(&st->writers, 1, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&st->queued, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&st->lock);
	__atomic_sub_fetch(&st->queued, 1, __ATOMIC_RELAXED);
	s = sq_stmt(st, write ? S_BEGIN_WRITE : S_BEGIN_READ);
	st->busy_nowait = !wait;
	rc = s ? sq_exec(st, s, "begin") : -EIO;
	st->busy_nowait = false;
	st->txn_seen = 0;
	if (rc == 0 && st->sync == STORE_SYNC_FULL) {
		rc = note_visible(st);
		if (rc)
			sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
	}
	if (rc) {
		pthread_mutex_unlock(&st->lock);
		if (write)
			writer_done(st);
		return rc;
	}
	c->in_write = write;
	c->changes = sqlite3_total_changes64(c->db);
	if (write)
		clock_gettime(CLOCK_MONOTONIC, &c->began);
	return 0;
}

int sq_begin(struct store_impl *st, bool write)
{
	return sq_begin_txn(st, write, true);
}

/* One connection, one lock: does a transaction wait for it? */
bool sq_contended(struct store_impl *st)
{
	return __atomic_load_n(&st->queued, __ATOMIC_RELAXED) > 0;
}

/* The end of a write transaction: how long it held the lock. */
void sq_note_hold(struct store_impl *st, struct conn *c)
{
	struct timespec now;
	int64_t us;

	if (!c->in_write)
		return;
	c->in_write = false;
	writer_done(st);
	clock_gettime(CLOCK_MONOTONIC, &now);
	us = (now.tv_sec - c->began.tv_sec) * 1000000 +
	     (now.tv_nsec - c->began.tv_nsec) / 1000;
	store_note_hold(us);
	if (us > 0 && (uint64_t)us > st->stats.max_write_us)
		st->stats.max_write_us = (uint64_t)us;
	if (store_in_maintenance() && us > 0 &&
	    (uint64_t)us > st->stats.max_maintenance_us)
		st->stats.max_maintenance_us = (uint64_t)us;
}

/*
 * Under st->sync_lock, as the one about to sync: wait until the write
 * transactions begun or queued now have ended, or SYNC_GATHER_US passed.
 */
static void gather_writers(struct store_impl *st)
{
	struct timespec until;

	if (__atomic_load_n(&st->writers, __ATOMIC_SEQ_CST) == 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_nsec += SYNC_GATHER_US * 1000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	__atomic_store_n(&st->gathering, true, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&st->writers, __ATOMIC_SEQ_CST) > 0 &&
	       pthread_cond_timedwait(&st->gather_cond, &st->sync_lock,
				      &until) == 0)
		;
	__atomic_store_n(&st->gathering, false, __ATOMIC_SEQ_CST);
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
		gather_writers(st);
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
int sq_end_txn(struct store_impl *st, struct conn *c, uint64_t seq)
{
	uint64_t seen = st->txn_seen;
	int rc;

	sq_note_hold(st, c);
	pthread_mutex_unlock(&st->lock);
	if (st->sync != STORE_SYNC_FULL || (seq == 0 && seen == 0))
		return 0;
	rc = wait_durable(st, seq > seen ? seq : seen);
	return seq ? rc : 0;
}

void sq_count_pages(struct store_impl *st, struct conn *c)
{
	int cur = 0, high = 0;

	/* Pages the connection wrote since the last reading (reset by it). */
	if (sqlite3_db_status(c->db, SQLITE_DBSTATUS_CACHE_WRITE, &cur, &high,
			      1) == SQLITE_OK && cur > 0)
		st->stats.pages_written += (uint64_t)cur;
}

/*
 * A commit that needs no sync of its own: pins (which die with the mount
 * anyway), staged content (which the commit that names it makes durable,
 * the WAL being written in order) and maintenance (see sq_commit()).
 */
int sq_commit_lazy(struct store_impl *st)
{
	struct conn *c = &st->main;
	sqlite3_stmt *s = sq_stmt(st, S_COMMIT);
	int rc = s ? sq_exec(st, s, "commit") : -EIO;

	if (rc && !sqlite3_get_autocommit(c->db))
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
	else if (rc == 0 && sqlite3_total_changes64(c->db) != c->changes) {
		st->stats.commits++;
		sq_count_pages(st, c);
	}
	st->txn_seen = 0;
	sq_note_hold(st, c);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

/*
 * Maintenance (the sweep, the purge) commits without a sync of its own:
 * nobody waits for what it did, a crash only makes it do it again, and
 * the next durable commit, the WAL being written in order, or a
 * checkpoint, makes it durable.  A claim then never waits behind a
 * maintenance slice's fdatasync.
 */
int sq_commit(struct store_impl *st)
{
	struct conn *c = &st->main;
	sqlite3_stmt *s;
	int rc;
	uint64_t seq = 0;
	int durable;

	if (c->in_write && store_in_maintenance())
		return sq_commit_lazy(st);
	s = sq_stmt(st, S_COMMIT);
	rc = s ? sq_exec(st, s, "commit") : -EIO;
	if (rc) {
		/* A failed COMMIT may leave the transaction open. */
		if (!sqlite3_get_autocommit(c->db))
			sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
	} else if (!c->in_write && !sq_read_still_valid(st)) {
		rc = -EAGAIN;	/* a writer began during the read: try again */
	} else if (c->in_write &&
		   sqlite3_total_changes64(c->db) != c->changes) {
		/* A write transaction that changed nothing wrote nothing. */
		st->stats.commits++;
		sq_count_pages(st, c);
		seq = __atomic_add_fetch(&st->committed, 1, __ATOMIC_RELEASE);
	}
	durable = sq_end_txn(st, c, seq);
	return rc ? rc : durable;
}

void sq_rollback(struct store_impl *st)
{
	struct conn *c = &st->main;

	if (!sqlite3_get_autocommit(c->db)) {
		sqlite3_stmt *s = sq_stmt(st, S_ROLLBACK);

		if (s)
			sq_exec(st, s, "rollback");
	}
	/*
	 * A rolled-back transaction's reply may still report what it read
	 * (EEXIST for a claim someone else committed): that must be durable
	 * too.  A failure here is the store's, and the next write says so.
	 */
	sq_end_txn(st, c, 0);
}

int sq_next_generation(struct store_impl *st, int64_t *out)
{
	sqlite3_stmt *s = sq_stmt(st, S_NEXT_GEN);
	int rc;

	if (!s)
		return -EIO;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(s, 0);
		sq_done(s);
		return 0;
	}
	sq_done(s);
	return sq_error(st, rc, "generation");
}

