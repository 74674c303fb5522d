/*
 * metrics.c - .stats and .metrics (see metrics.h).
 */
#include <inttypes.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "metrics.h"
#include "once.h"
#include "store.h"

static const double bucket_le[HISTOGRAM_BUCKETS] = {
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 10,
};

int64_t metrics_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void histogram_observe(struct histogram *h, int64_t start_ns)
{
	int64_t ns = metrics_now_ns() - start_ns;
	double s;
	int i = 0;

	if (ns < 0)
		ns = 0;
	s = (double)ns / 1e9;
	while (i < HISTOGRAM_BUCKETS && s > bucket_le[i])
		i++;
	__atomic_add_fetch(&h->counts[i], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&h->sum_ns, (uint64_t)ns, __ATOMIC_RELAXED);
}

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

static void copy_histogram(const struct histogram *from, struct histogram *to)
{
	for (int i = 0; i <= HISTOGRAM_BUCKETS; i++)
		to->counts[i] = LOAD(from->counts[i]);
	to->sum_ns = LOAD(from->sum_ns);
}

void metrics_snapshot(const struct once *o, uint64_t waiters,
		      struct metrics_snapshot *m)
{
	const struct once_stats *s = &o->stats;
	struct store_stats ss = { 0 };
	struct rusage ru;

	store_get_stats(o->store, &ss);
	m->claims = LOAD(s->claims);
	m->adoptions = LOAD(s->adoptions);
	m->conflicts = LOAD(s->conflicts);
	m->finalizes = LOAD(s->finalizes);
	m->releases = LOAD(s->releases);
	m->renewals = LOAD(s->renewals);
	m->fenced = LOAD(s->fenced);
	m->checkpoints = LOAD(s->checkpoints);
	m->commits = ss.commits;
	m->fsyncs = ss.syncs;
	m->round_trips = ss.round_trips;
	m->pages_written = ss.pages_written;
	memset(m->requests, 0, sizeof(m->requests));
	m->waiters = waiters;
	m->max_write_us = ss.max_write_us;
	m->max_maintenance_us = ss.max_maintenance_us;
	m->sync_failed = ss.sync_failed ? 1 : 0;
	if (getrusage(RUSAGE_SELF, &ru) == 0)
		m->cpu_us = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) *
			    1000000 + (uint64_t)(ru.ru_utime.tv_usec +
						 ru.ru_stime.tv_usec);
	copy_histogram(&o->latencies.claim, &m->latencies.claim);
	copy_histogram(&o->latencies.finalize, &m->latencies.finalize);
	copy_histogram(&o->latencies.checkpoint, &m->latencies.checkpoint);
}

const char *const metrics_request_names[MR_KINDS] = {
	[MR_LOOKUP] = "lookup", [MR_GETATTR] = "getattr",
	[MR_SETATTR] = "setattr", [MR_CREATE] = "create", [MR_OPEN] = "open",
	[MR_READ] = "read", [MR_WRITE] = "write", [MR_FLUSH] = "flush",
	[MR_RELEASE] = "release", [MR_FSYNC] = "fsync",
	[MR_READDIR] = "readdir", [MR_XATTR] = "xattr",
	[MR_DIRECTORY] = "directory", [MR_OTHER] = "other",
};

void metrics_write_stats(const struct metrics_snapshot *m, FILE *f)
{
	uint64_t total = 0;

	fprintf(f, "claims %" PRIu64 "\n", m->claims);
	fprintf(f, "adoptions %" PRIu64 "\n", m->adoptions);
	fprintf(f, "conflicts %" PRIu64 "\n", m->conflicts);
	fprintf(f, "finalizes %" PRIu64 "\n", m->finalizes);
	fprintf(f, "releases %" PRIu64 "\n", m->releases);
	fprintf(f, "renewals %" PRIu64 "\n", m->renewals);
	fprintf(f, "fenced %" PRIu64 "\n", m->fenced);
	fprintf(f, "checkpoints %" PRIu64 "\n", m->checkpoints);
	fprintf(f, "commits %" PRIu64 "\n", m->commits);
	fprintf(f, "fsyncs %" PRIu64 "\n", m->fsyncs);
	fprintf(f, "round_trips %" PRIu64 "\n", m->round_trips);
	fprintf(f, "pages_written %" PRIu64 "\n", m->pages_written);
	for (int i = 0; i < MR_KINDS; i++)
		total += m->requests[i];
	fprintf(f, "requests %" PRIu64 "\n", total);
	for (int i = 0; i < MR_KINDS; i++)
		fprintf(f, "requests_%s %" PRIu64 "\n",
			metrics_request_names[i], m->requests[i]);
	fprintf(f, "waiters %" PRIu64 "\n", m->waiters);
	fprintf(f, "max_write_us %" PRIu64 "\n", m->max_write_us);
	fprintf(f, "max_maintenance_us %" PRIu64 "\n", m->max_maintenance_us);
	fprintf(f, "cpu_us %" PRIu64 "\n", m->cpu_us);
	/* 1 after a failed fsync: the mount refuses writes (EROFS). */
	fprintf(f, "sync_failed %d\n", m->sync_failed);
}

static void metric(FILE *f, const char *name, const char *type,
		   const char *help, uint64_t value)
{
	fprintf(f, "# HELP oncefs_%s %s\n# TYPE oncefs_%s %s\noncefs_%s %" PRIu64
		"\n", name, help, name, type, name, value);
}

static void seconds(FILE *f, const char *name, const char *help, uint64_t us)
{
	fprintf(f, "# HELP oncefs_%s %s\n# TYPE oncefs_%s gauge\noncefs_%s %.6f\n",
		name, help, name, name, (double)us / 1e6);
}

static void histogram(FILE *f, const char *name, const char *help,
		      const struct histogram *h)
{
	uint64_t cumulative = 0;

	fprintf(f, "# HELP oncefs_%s %s\n# TYPE oncefs_%s histogram\n", name,
		help, name);
	for (int i = 0; i < HISTOGRAM_BUCKETS; i++) {
		cumulative += h->counts[i];
		fprintf(f, "oncefs_%s_bucket{le=\"%g\"} %" PRIu64 "\n", name,
			bucket_le[i], cumulative);
	}
	cumulative += h->counts[HISTOGRAM_BUCKETS];
	fprintf(f, "oncefs_%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cumulative);
	fprintf(f, "oncefs_%s_sum %.9f\n", name, (double)h->sum_ns / 1e9);
	fprintf(f, "oncefs_%s_count %" PRIu64 "\n", name, cumulative);
}

void metrics_write_prometheus(const struct metrics_snapshot *m, FILE *f)
{
	metric(f, "claims_total", "counter",
	       "Keys claimed fresh (absent, or free after a failure or an abandon).",
	       m->claims);
	metric(f, "adoptions_total", "counter",
	       "Claims that took over a key whose lease had expired.",
	       m->adoptions);
	metric(f, "conflicts_total", "counter",
	       "Exclusive creates the daemon refused with EEXIST (the kernel "
	       "refuses most duplicates itself, unseen).", m->conflicts);
	metric(f, "finalizes_total", "counter",
	       "Keys finalized succeeded or failed.", m->finalizes);
	metric(f, "releases_total", "counter", "Keys released (rm).",
	       m->releases);
	metric(f, "renewals_total", "counter",
	       "Leases renewed: the daemon's own for held claims, and touch.",
	       m->renewals);
	metric(f, "fenced_total", "counter",
	       "Writes refused with ESTALE: a generation that was no longer the key's.",
	       m->fenced);
	metric(f, "checkpoints_total", "counter", "Checkpoints committed.",
	       m->checkpoints);
	metric(f, "store_commits_total", "counter",
	       "Write transactions committed to the store.", m->commits);
	metric(f, "store_fsyncs_total", "counter",
	       "Syncs that made commits durable (one may serve several).",
	       m->fsyncs);
	metric(f, "store_round_trips_total", "counter",
	       "Requests sent to the store's database server (0 on SQLite).",
	       m->round_trips);
	metric(f, "store_pages_written_total", "counter",
	       "Database pages the store's commits wrote (SQLite's WAL; 0 on "
	       "PostgreSQL).", m->pages_written);
	fprintf(f, "# HELP oncefs_requests_total FUSE requests answered, by "
		"kind.\n# TYPE oncefs_requests_total counter\n");
	for (int i = 0; i < MR_KINDS; i++)
		fprintf(f, "oncefs_requests_total{kind=\"%s\"} %" PRIu64 "\n",
			metrics_request_names[i], m->requests[i]);
	metric(f, "waiters", "gauge",
	       "Reads of wait/KEY parked now, waiting for a claim to end.",
	       m->waiters);
	seconds(f, "store_max_write_seconds",
		"The longest the store's write lock was held since the mount.",
		m->max_write_us);
	seconds(f, "store_max_maintenance_seconds",
		"The longest write transaction of the sweep, purge and trim.",
		m->max_maintenance_us);
	fprintf(f, "# HELP oncefs_cpu_seconds_total CPU time the daemon used, "
		"user and system.\n# TYPE oncefs_cpu_seconds_total counter\n"
		"oncefs_cpu_seconds_total %.6f\n", (double)m->cpu_us / 1e6);
	metric(f, "store_sync_failed", "gauge",
	       "1 after a failed fsync: the mount refuses every write (EROFS).",
	       (uint64_t)m->sync_failed);
	histogram(f, "claim_duration_seconds",
		  "Time to answer an exclusive create of a key that reached the "
		  "daemon, won or refused.",
		  &m->latencies.claim);
	histogram(f, "finalize_duration_seconds",
		  "Time to commit a finalize, durable as the sync option says.",
		  &m->latencies.finalize);
	histogram(f, "checkpoint_commit_duration_seconds",
		  "Time to commit a checkpoint's content.", &m->latencies.checkpoint);
}
