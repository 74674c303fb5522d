/*
 * metrics.h - what a mount counts, for people (.stats) and for monitoring
 * systems (.metrics, the Prometheus text exposition format).
 *
 * Counters live in struct once_stats (once.h); latencies in histograms
 * of fixed buckets, observed by the core functions they time, lock-free.
 * Both files are rendered here, from one snapshot of the numbers.
 */
#ifndef ONCE_METRICS_H
#define ONCE_METRICS_H

#include <stdint.h>
#include <stdio.h>

/* Upper bounds of the buckets, in seconds, from 100 us to 10 s. */
#define HISTOGRAM_BUCKETS 15

struct histogram {
	uint64_t counts[HISTOGRAM_BUCKETS + 1];	/* the last: above them all */
	uint64_t sum_ns;
};

/* The latencies a mount keeps. */
struct once_latencies {
	struct histogram claim;		/* key_claim(), won or refused */
	struct histogram finalize;	/* key_finalize() */
	struct histogram checkpoint;	/* step_writer_commit() */
};

/* CLOCK_MONOTONIC in nanoseconds: the start of an observation. */
int64_t metrics_now_ns(void);
/* Count one call that began at start_ns (thread-safe). */
void histogram_observe(struct histogram *h, int64_t start_ns);

/*
 * The kinds of request a mount answers, counted by the adapter that
 * decodes them (fs/ops.c), so that a figure such as "requests per
 * claim" is measured, not guessed.
 */
enum metrics_request {
	MR_LOOKUP, MR_GETATTR, MR_SETATTR, MR_CREATE, MR_OPEN, MR_READ,
	MR_WRITE, MR_FLUSH, MR_RELEASE, MR_FSYNC, MR_READDIR, MR_XATTR,
	MR_DIRECTORY,	/* mkdir, rmdir, unlink, rename */
	MR_OTHER,	/* forget, statfs, and the refused */
	MR_KINDS
};
extern const char *const metrics_request_names[MR_KINDS];

/* Everything a mount reports, read once for one rendering. */
struct metrics_snapshot {
	uint64_t claims, adoptions, conflicts, finalizes, releases, renewals,
		 fenced, checkpoints;
	uint64_t commits, fsyncs, round_trips, pages_written, waiters,
		 max_write_us, max_maintenance_us;
	uint64_t cpu_us;		/* the daemon's CPU time, user and system */
	uint64_t requests[MR_KINDS];	/* the adapter's (0: none counted) */
	int sync_failed;
	struct once_latencies latencies;
};

struct once;
struct store_stats;

/* Take the snapshot of a mount (waiters: its parked reads). */
void metrics_snapshot(const struct once *o, uint64_t waiters,
		      struct metrics_snapshot *out);

/* ".stats": NAME VALUE lines, for people and for awk. */
void metrics_write_stats(const struct metrics_snapshot *m, FILE *f);
/* ".metrics": the Prometheus text exposition format, version 0.0.4. */
void metrics_write_prometheus(const struct metrics_snapshot *m, FILE *f);

#endif
