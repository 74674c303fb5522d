/*
 * test_metrics.c - metrics.h: histograms count into the right bucket, and
 * the Prometheus text is cumulative, with _count equal to the +Inf bucket.
 */
#include "unit.h"

#include "key.h"
#include "metrics.h"
#include "workflow.h"

static char *render(struct fixture *fx, bool prometheus)
{
	struct metrics_snapshot m;
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	assert_non_null(f);
	metrics_snapshot(&fx->o, 7, &m);
	if (prometheus)
		metrics_write_prometheus(&m, f);
	else
		metrics_write_stats(&m, f);
	assert_int_equal(fclose(f), 0);
	return buf;
}

static void test_buckets(void **state)
{
	struct histogram h;
	int64_t now = metrics_now_ns();

	(void)state;
	memset(&h, 0, sizeof(h));
	histogram_observe(&h, now + 1000000000);	/* in the future: 0 s */
	histogram_observe(&h, now - 3000000);		/* ~3 ms: le 0.005 */
	histogram_observe(&h, now - 60000000000);	/* a minute: above all */
	assert_int_equal(h.counts[0], 1);
	assert_int_equal(h.counts[5], 1);
	assert_int_equal(h.counts[HISTOGRAM_BUCKETS], 1);
	assert_true(h.sum_ns >= 60003000000ULL);
}

static void test_claims_are_timed_and_rendered(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w;
	struct key_row k;
	char *text;

	assert_rc(workflow_create(&fx->o, S("job"), 0755, &user, &w), 0);
	assert_rc(key_claim(&fx->o, w.id, S("k"), &user, &k, NULL), 0);
	assert_rc(key_claim(&fx->o, w.id, S("k"), &user, &k, NULL), -EEXIST);
	assert_rc(key_finalize(&fx->o, k.generation, k.name, k.name_len, S("succeeded\n"), &user), 0);
	text = render(fx, false);
	assert_non_null(strstr(text, "claims 1\nadoptions 0\nconflicts 1\nfinalizes 1\n"));
	assert_non_null(strstr(text, "waiters 7\n"));
	/* The process's CPU time: the test has used some by now. */
	assert_non_null(strstr(text, "\ncpu_us "));
	assert_null(strstr(text, "\ncpu_us 0\n"));
	free(text);
	text = render(fx, true);
	assert_non_null(strstr(text, "# TYPE oncefs_claims_total counter\noncefs_claims_total 1\n"));
	assert_non_null(strstr(text, "oncefs_conflicts_total 1\n"));
	assert_non_null(strstr(text, "oncefs_waiters 7\n"));
	assert_non_null(strstr(text, "# TYPE oncefs_cpu_seconds_total counter\noncefs_cpu_seconds_total "));
	assert_non_null(strstr(text, "# TYPE oncefs_claim_duration_seconds histogram\n"));
	assert_non_null(strstr(text, "oncefs_claim_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
	assert_non_null(strstr(text, "oncefs_claim_duration_seconds_count 2\n"));
	assert_non_null(strstr(text, "oncefs_finalize_duration_seconds_count 1\n"));
	assert_non_null(strstr(text, "oncefs_checkpoint_commit_duration_seconds_count 0\n"));
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buckets),
		cmocka_unit_test_setup_teardown(test_claims_are_timed_and_rendered,
						fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
