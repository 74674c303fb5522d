/*
 * test_key.c - key.h: the idempotency key state machine.
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "unit.h"

#include "holder.h"
#include "key.h"
#include "sweep.h"
#include "workflow.h"

#define SMALL_RESULT 16

static int fx_setup_small(void **state)
{
	return fx_setup_with(state, SMALL_RESULT);
}

static struct wf_row make_wf(struct fixture *fx, const char *name)
{
	struct wf_row w;

	assert_rc(workflow_create(&fx->o, name, strlen(name), 0755, &user, &w), 0);
	return w;
}

static void set_policy(struct fixture *fx, int64_t wf, enum policy_field f,
		       const char *value)
{
	assert_rc(workflow_set_policy(&fx->o, wf, f, value, strlen(value), &user),
		  0);
}

static struct key_row claim(struct fixture *fx, int64_t wf, const char *name,
			    const struct caller *who)
{
	struct key_row k;

	assert_rc(key_claim(&fx->o, wf, name, strlen(name), who, &k, NULL), 0);
	return k;
}

static int finalize(struct fixture *fx, int64_t gen, const char *text,
		    const struct caller *who)
{
	struct key_row k = { .name = "?", .name_len = 1 };

	key_get(&fx->o, gen, &k, NULL);	/* the name, for the event */
	return key_finalize(&fx->o, gen, k.name, k.name_len, text,
			    strlen(text), who);
}

/* The key as a lookup by name sees it (must be live). */
static struct key_row lookup(struct fixture *fx, int64_t wf, const char *name)
{
	struct key_row k;

	assert_rc(key_lookup(&fx->o, wf, name, strlen(name), &k, NULL), 0);
	return k;
}

static void assert_absent(struct fixture *fx, int64_t wf, const char *name)
{
	struct key_row k;

	assert_rc(key_lookup(&fx->o, wf, name, strlen(name), &k, NULL), -ENOENT);
}

/* What reading the key through generation gen gives. */
static char *content(struct fixture *fx, int64_t gen, size_t *len)
{
	struct key_row k;
	char *buf = NULL;

	assert_rc(key_content(&fx->o, gen, &k, &buf, len), 0);
	assert_non_null(buf);
	return buf;
}

static void assert_content(struct fixture *fx, int64_t gen, const char *want,
			   size_t want_len)
{
	size_t len;
	char *buf = content(fx, gen, &len);

	if (len != want_len || memcmp(buf, want, len) != 0)
		fail_msg("content of %" PRId64 ": \"%.*s\", expected \"%.*s\"",
			 gen, (int)len, buf, (int)want_len, want);
	free(buf);
}

/*
 * An unfinished status line passes write(): key.h says it passes (0),
 * the FUSE adapter takes -EAGAIN as a pass too.
 */
#define assert_passes(call) do {						\
	int _rc = (call);							\
	if (_rc != 0 && _rc != -EAGAIN)						\
		fail_msg("%s = %d (%s), expected 0 or EAGAIN", #call, _rc,	\
			 errname(_rc));						\
} while (0)

static char *fmt(const char *format, int64_t gen)
{
	static char buf[4][128];
	static int i;
	char *p = buf[i++ % 4];

	snprintf(p, sizeof(buf[0]), format, gen);
	return p;
}

/* ---- key_is_live -------------------------------------------------------- */

static void test_is_live(void **state)
{
	struct key_row k;

	(void)state;
	memset(&k, 0, sizeof(k));
	k.expires_ms = 1000;
	k.status = KEY_VACANT;
	assert_false(key_is_live(&k, 0));
	k.status = KEY_IN_FLIGHT;
	assert_true(key_is_live(&k, 999));
	assert_false(key_is_live(&k, 1000));	/* the lease ends at expires_ms */
	assert_false(key_is_live(&k, 5000));
	k.status = KEY_SUCCEEDED;
	assert_true(key_is_live(&k, 5000));
	k.status = KEY_FAILED;
	assert_true(key_is_live(&k, 5000));
}

static void test_refuse_write(void **state)
{
	(void)state;
	assert_rc(key_refuse_write(&root), -EPERM);
	assert_rc(key_refuse_write(&user), -EACCES);
	assert_rc(key_refuse_write(&other), -EACCES);
}

/* ---- claim -------------------------------------------------------------- */

static void test_claim(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k = claim(fx, w.id, "2026-11-21", &user), got;
	char *ev;

	assert_true(k.id > 0);
	assert_i64(k.wf, w.id);
	assert_string_equal(k.name, "2026-11-21");
	assert_int_equal(k.name_len, 10);
	assert_int_equal(k.status, KEY_IN_FLIGHT);
	assert_true(k.generation > 0);
	assert_i64(k.attempt, 1);
	/* A held claim's short lease, not in_flight_ttl (86400 s). */
	assert_i64(k.expires_ms, T0_MS + ONCE_LEASE_MS_DEFAULT);
	assert_i64(k.mtime_ns, T0_MS * 1000000);
	assert_int_equal(k.holder_pid, user.pid);
	assert_int_equal(k.holder_uid, user.uid);
	assert_i64(k.result_len, 0);

	got = lookup(fx, w.id, "2026-11-21");
	assert_i64(got.id, k.id);
	assert_i64(got.generation, k.generation);
	assert_rc(key_get(&fx->o, k.generation, &got, NULL), 0);
	assert_i64(got.id, k.id);
	assert_content(fx, k.generation, fmt("in_flight %" PRId64 "\n",
					     k.generation),
		       strlen(fmt("in_flight %" PRId64 "\n", k.generation)));
	assert_int_equal(fx->o.stats.claims, 1);

	assert_int_equal(events_count(fx->st, w.id, "claim"), 1);
	ev = event_last(fx->st, w.id, "claim");
	assert_contains(ev, "\"key\":\"2026-11-21\"");
	assert_contains(ev, fmt("\"generation\":%" PRId64, k.generation));
	assert_contains(ev, "\"attempt\":1");
	assert_contains(ev, "\"pid\":4242");
	assert_contains(ev, "\"uid\":1000");
	free(ev);
}

/* A claim keeps its claimant's host (user.oncefs.holder), if a name. */
static void test_claim_names_the_host(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");

	fx->o.config.host = "worker-7.example";
	assert_string_equal(claim(fx, w.id, "a", &user).holder_host,
			    "worker-7.example");
	assert_string_equal(lookup(fx, w.id, "a").holder_host,
			    "worker-7.example");
	fx->o.config.host = "not a host name";
	assert_string_equal(claim(fx, w.id, "b", &user).holder_host, "");
	assert_string_equal(lookup(fx, w.id, "b").holder_host, "");
	fx->o.config.host = NULL;
	assert_string_equal(lookup(fx, w.id, "a").holder_host,
			    "worker-7.example");
}

static void test_claim_conflict(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k = claim(fx, w.id, "k", &user), again, got;

	fx->now += 1000;
	assert_rc(key_claim(&fx->o, w.id, S("k"), &other, &again, NULL), -EEXIST);
	assert_rc(key_claim(&fx->o, w.id, S("k"), &user, &again, NULL), -EEXIST);
	got = lookup(fx, w.id, "k");
	assert_i64(got.generation, k.generation);
	assert_i64(got.attempt, 1);
	assert_i64(got.expires_ms, k.expires_ms);
	assert_int_equal(got.holder_pid, user.pid);
	assert_int_equal(fx->o.stats.conflicts, 2);
	assert_int_equal(fx->o.stats.claims, 1);
	assert_int_equal(events_count(fx->st, w.id, "claim"), 1);
	/* The same name in another workflow is another key. */
	{
		struct wf_row v = make_wf(fx, "other");

		claim(fx, v.id, "k", &other);
	}
}

static void test_claim_bad_names(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k;
	char name[256];
	int n;

	assert_rc(key_claim(&fx->o, w.id, "", 0, &user, &k, NULL), -EINVAL);
	assert_rc(key_claim(&fx->o, w.id, S("a/b"), &user, &k, NULL), -EINVAL);
	assert_rc(key_claim(&fx->o, w.id, S("."), &user, &k, NULL), -EINVAL);
	assert_rc(key_claim(&fx->o, w.id, S(".."), &user, &k, NULL), -EINVAL);
	assert_rc(key_claim(&fx->o, w.id, "a\0b", 3, &user, &k, NULL), -EINVAL);
	memset(name, 'k', sizeof(name));
	assert_rc(key_claim(&fx->o, w.id, name, 256, &user, &k, NULL), -ENAMETOOLONG);
	assert_rc(key_list(&fx->o, w.id, 0, &k, 1, &n), 0);
	assert_int_equal(n, 0);
	/* 255 bytes, dot-names and any bytes are keys. */
	assert_rc(key_claim(&fx->o, w.id, name, 255, &user, &k, NULL), 0);
	assert_int_equal(k.name_len, 255);
	assert_rc(key_claim(&fx->o, w.id, S(".hidden"), &user, &k, NULL), 0);
	assert_rc(key_claim(&fx->o, w.id, S("\xff\xfe"), &user, &k, NULL), 0);
	/* A non-UTF-8 name is hexed in the events, which stay JSON. */
	assert_int_equal(events_count(fx->st, w.id, "claim"), 3);
	{
		char *ev = event_last(fx->st, w.id, "claim");

		assert_contains(ev, "\"key_hex\":\"fffe\"");
		free(ev);
	}
	/* Lookups check names the same way. */
	assert_rc(key_lookup(&fx->o, w.id, name, 256, &k, NULL), -ENAMETOOLONG);
	assert_rc(key_lookup(&fx->o, w.id, S("a/b"), &k, NULL), -EINVAL);
	assert_rc(key_release(&fx->o, w.id, S(".."), &user), -EINVAL);
}

static void test_claim_missing_workflow(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k;

	assert_rc(key_claim(&fx->o, w.id + 1, S("k"), &user, &k, NULL), -ENOENT);
	assert_rc(workflow_remove(&fx->o, S("job"), &user), 0);
	assert_rc(key_claim(&fx->o, w.id, S("k"), &user, &k, NULL), -ENOENT);
}

static void test_generations_never_reused(void **state)
{
	struct fixture *fx = *state;
	struct wf_row a = make_wf(fx, "a"), b = make_wf(fx, "b");
	int64_t last = 0;
	struct key_row k;

	for (int i = 0; i < 4; i++) {
		k = claim(fx, i % 2 ? a.id : b.id, i < 2 ? "x" : "y", &user);
		assert_true(k.generation > last);
		last = k.generation;
	}
	/* Not after a release... */
	assert_rc(key_release(&fx->o, a.id, S("x"), &user), 0);
	k = claim(fx, a.id, "x", &user);
	assert_true(k.generation > last);
	last = k.generation;
	/* ...a failure... */
	assert_rc(finalize(fx, k.generation, "failed\n", &user), 0);
	k = claim(fx, a.id, "x", &user);
	assert_true(k.generation > last);
	last = k.generation;
	/* ...a lost claim... */
	assert_rc(key_claim(&fx->o, a.id, S("x"), &user, &k, NULL), -EEXIST);
	/* ...or a remount. */
	fx_reopen(fx);
	assert_rc(key_release(&fx->o, a.id, S("x"), &user), 0);
	k = claim(fx, a.id, "x", &user);
	assert_true(k.generation > last);
}

/* ---- finalize ----------------------------------------------------------- */

static void test_finalize_succeeded(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k = claim(fx, w.id, "k", &user), got;
	static const char text[] = "succeeded\n{\"rows\": 3}\n\0bin";
	char *ev;

	fx->now += 5000;
	assert_rc(key_finalize(&fx->o, k.generation, k.name, k.name_len, text, sizeof(text) - 1,
			       &user), 0);
	got = lookup(fx, w.id, "k");
	assert_int_equal(got.status, KEY_SUCCEEDED);
	assert_i64(got.generation, k.generation);
	assert_i64(got.attempt, 1);
	assert_i64(got.result_len, (int64_t)sizeof(text) - 1 - 10);
	assert_i64(got.mtime_ns, fx->now * 1000000);
	{
		char want[128];
		int n = snprintf(want, sizeof(want), "succeeded %" PRId64 "\n",
				 k.generation);

		memcpy(want + n, text + 10, sizeof(text) - 1 - 10);
		assert_content(fx, k.generation, want,
			       (size_t)n + sizeof(text) - 1 - 10);
	}
	/* Terminal: a claim fails, even long after the lease. */
	fx->now += 365LL * 86400 * 1000;
	assert_rc(key_claim(&fx->o, w.id, S("k"), &other, &got, NULL), -EEXIST);
	got = lookup(fx, w.id, "k");
	assert_int_equal(got.status, KEY_SUCCEEDED);
	assert_int_equal(fx->o.stats.finalizes, 1);
	ev = event_last(fx->st, w.id, "finalize");
	assert_contains(ev, "\"status\":\"succeeded\"");
	assert_contains(ev, fmt("\"generation\":%" PRId64, k.generation));
	free(ev);
}

static void test_finalize_with_generation(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k = claim(fx, w.id, "k", &user), got;

	/* A generation that is not the key's is ESTALE and changes nothing. */
	assert_rc(finalize(fx, k.generation, fmt("succeeded %" PRId64 "\n",
						 k.generation + 1), &user),
		  -ESTALE);
	got = lookup(fx, w.id, "k");
	assert_int_equal(got.status, KEY_IN_FLIGHT);
	assert_int_equal(fx->o.stats.fenced, 1);
	assert_int_equal(events_count(fx->st, w.id, "finalize"), 0);
	/* Its own generation, with trailing blanks and a result. */
	assert_rc(finalize(fx, k.generation, fmt("failed %" PRId64 " \r\nwhy",
						 k.generation), &user), 0);
	assert_absent(fx, w.id, "k");	/* dedup_on=success: free again */
}

static void test_finalize_bad_bytes(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k = claim(fx, w.id, "k", &user), got;
	static const char *const bad[] = {
		"", "\n", "done\n", "in_flight\n", "in_flight", "succeeded 0\n",
		"Succeeded\n", "succeeded\tok\n", " failed\n", "success",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = finalize(fx, k.generation, bad[i], &user);

		if (rc != -EINVAL)
			fail_msg("finalize(\"%s\") = %d (%s), expected EINVAL",
				 bad[i], rc, errname(rc));
	}
	got = lookup(fx, w.id, "k");
	assert_int_equal(got.status, KEY_IN_FLIGHT);
	assert_i64(got.result_len, 0);
	assert_int_equal(events_count(fx->st, w.id, "finalize"), 0);
	assert_int_equal(fx->o.stats.finalizes, 0);
	/* Unknown generations are fenced. */
	assert_rc(finalize(fx, k.generation + 1000, "succeeded\n", &user),
		  -ESTALE);
}

static void test_failed_under_dedup_success(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k = claim(fx, w.id, "k", &user), got, again;
	bool has = true;
	char *buf = NULL;
	size_t len;
	int n;

	assert_rc(finalize(fx, k.generation, "failed\ntraceback", &user), 0);
	/* The key disappears, so a retry can claim it. */
	assert_absent(fx, w.id, "k");
	assert_rc(key_get(&fx->o, k.generation, &got, NULL), -ESTALE);
	assert_rc(key_content(&fx->o, k.generation, &got, &buf, &len), -ESTALE);
	assert_null(buf);
	assert_rc(key_list(&fx->o, w.id, 0, &got, 1, &n), 0);
	assert_int_equal(n, 0);
	assert_rc(workflow_has_keys(&fx->o, w.id, &has), 0);
	assert_false(has);
	assert_rc(key_release(&fx->o, w.id, S("k"), &user), -ENOENT);
	/* The failure stays in events. */
	{
		char *ev = event_last(fx->st, w.id, "finalize");

		assert_contains(ev, "\"status\":\"failed\"");
		free(ev);
	}
	/* The old handle is fenced. */
	assert_rc(finalize(fx, k.generation, "succeeded\n", &user), -ESTALE);
	assert_rc(key_touch(&fx->o, k.generation, &user), -ESTALE);
	/* The retry: a new generation, attempt 2, and no old result. */
	again = claim(fx, w.id, "k", &other);
	assert_true(again.generation > k.generation);
	assert_i64(again.attempt, 2);
	assert_i64(again.id, k.id);	/* the vacant row carried the count */
	assert_i64(again.result_len, 0);
	assert_int_equal(again.holder_uid, other.uid);
	assert_int_equal(fx->o.stats.claims, 2);
	assert_int_equal(fx->o.stats.adoptions, 0);
}

static void test_vacant_rows_keep_attempt_count(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k;

	for (int i = 1; i <= 4; i++) {
		k = claim(fx, w.id, "flaky", &user);
		assert_i64(k.attempt, i);
		assert_rc(finalize(fx, k.generation, "failed\n", &user), 0);
	}
	k = claim(fx, w.id, "flaky", &user);
	assert_i64(k.attempt, 5);
	assert_rc(finalize(fx, k.generation, "succeeded\n", &user), 0);
	assert_i64(lookup(fx, w.id, "flaky").attempt, 5);
	{
		char *ev = event_last(fx->st, w.id, "claim");

		assert_contains(ev, "\"attempt\":5");
		free(ev);
	}
	/* A release forgets the count. */
	assert_rc(key_release(&fx->o, w.id, S("flaky"), &user), 0);
	assert_i64(claim(fx, w.id, "flaky", &user).attempt, 1);
}

static void test_failed_under_dedup_any(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k, got;

	set_policy(fx, w.id, POLICY_DEDUP_ON, "any\n");
	k = claim(fx, w.id, "k", &user);
	assert_rc(finalize(fx, k.generation, "failed\nboom", &user), 0);
	/* The key stays, terminal. */
	got = lookup(fx, w.id, "k");
	assert_int_equal(got.status, KEY_FAILED);
	assert_i64(got.result_len, 4);
	assert_content(fx, k.generation,
		       fmt("failed %" PRId64 "\nboom", k.generation),
		       strlen(fmt("failed %" PRId64 "\nboom", k.generation)));
	assert_rc(key_claim(&fx->o, w.id, S("k"), &other, &got, NULL), -EEXIST);
	assert_rc(finalize(fx, k.generation, "succeeded\n", &user), -EACCES);
	assert_rc(finalize(fx, k.generation, "succeeded\n", &root), -EPERM);

	/* Existing failed keys stay when dedup_on becomes success. */
	set_policy(fx, w.id, POLICY_DEDUP_ON, "success");
	got = lookup(fx, w.id, "k");
	assert_int_equal(got.status, KEY_FAILED);
	assert_rc(key_claim(&fx->o, w.id, S("k"), &other, &got, NULL), -EEXIST);
	/* And the next failure follows the new policy. */
	k = claim(fx, w.id, "k2", &user);
	assert_rc(finalize(fx, k.generation, "failed\n", &user), 0);
	assert_absent(fx, w.id, "k2");
}

static void test_succeeded_under_dedup_any(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k;

	set_policy(fx, w.id, POLICY_DEDUP_ON, "any");
	k = claim(fx, w.id, "k", &user);
	assert_rc(finalize(fx, k.generation, "succeeded", &user), 0);
	assert_int_equal(lookup(fx, w.id, "k").status, KEY_SUCCEEDED);
	assert_content(fx, k.generation, fmt("succeeded %" PRId64 "\n",
					     k.generation),
		       strlen(fmt("succeeded %" PRId64 "\n", k.generation)));
}

/* ---- terminal keys ------------------------------------------------------ */

static void test_terminal_refusal(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k = claim(fx, w.id, "k", &user), got;
	int64_t events_before;

	assert_rc(finalize(fx, k.generation, "succeeded\nfirst", &user), 0);
	events_before = events_count(fx->st, w.id, NULL);
	/* Writes, finalizes and touches: EACCES for users, EPERM for root. */
	assert_rc(key_check_write(&fx->o, k.generation, S("succeeded\n"), &user),
		  -EACCES);
	assert_rc(key_check_write(&fx->o, k.generation, S("succeeded\n"), &root),
		  -EPERM);
	assert_rc(key_check_write(&fx->o, k.generation, S("s"), &user), -EACCES);
	assert_rc(key_check_write(&fx->o, k.generation, "", 0, &root), -EPERM);
	assert_rc(finalize(fx, k.generation, "succeeded\nsecond", &user),
		  -EACCES);
	assert_rc(finalize(fx, k.generation, "failed\n", &root), -EPERM);
	assert_rc(key_touch(&fx->o, k.generation, &user), -EACCES);
	assert_rc(key_touch(&fx->o, k.generation, &root), -EPERM);
	/* The grammar is checked first: garbage is EINVAL either way. */
	assert_rc(finalize(fx, k.generation, "garbage\n", &user), -EINVAL);
	/* Nothing changed. */
	got = lookup(fx, w.id, "k");
	assert_int_equal(got.status, KEY_SUCCEEDED);
	assert_i64(got.expires_ms, k.expires_ms);
	assert_i64(got.result_len, 5);
	assert_int_equal(events_count(fx->st, w.id, NULL), events_before);
	/* Release (rm) is the one change a terminal key takes. */
	assert_rc(key_release(&fx->o, w.id, S("k"), &user), 0);
	assert_absent(fx, w.id, "k");
}

/* ---- the checks of write() --------------------------------------------- */

static void test_check_write_prefixes(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k = claim(fx, w.id, "k", &user), got;
	char text[128];
	int n, events;

	events = events_count(fx->st, w.id, NULL);
	/* Every prefix of a good finalize passes: the line may be unfinished. */
	n = snprintf(text, sizeof(text), "succeeded %" PRId64 " \r\nresult bytes",
		     k.generation);
	for (int i = 0; i <= n; i++) {
		int rc = key_check_write(&fx->o, k.generation, text, (size_t)i,
					 &user);

		if (rc != 0 && rc != -EAGAIN)
			fail_msg("key_check_write(\"%.*s\") = %d (%s)", i, text, rc,
				 errname(rc));
	}
	assert_passes(key_check_write(&fx->o, k.generation, S("fail"), &user));
	assert_passes(key_check_write(&fx->o, k.generation, S("failed"), &user));
	assert_rc(key_check_write(&fx->o, k.generation, S("failed\n"), &user), 0);
	/* What can never become a status line fails at once. */
	assert_rc(key_check_write(&fx->o, k.generation, S("x"), &user), -EINVAL);
	assert_rc(key_check_write(&fx->o, k.generation, S("done\n"), &user),
		  -EINVAL);
	assert_rc(key_check_write(&fx->o, k.generation, S("in_flight"), &user),
		  -EINVAL);
	assert_rc(key_check_write(&fx->o, k.generation, S("succeeded 0"), &user),
		  -EINVAL);
	assert_rc(key_check_write(&fx->o, k.generation, S("succeeded\t"), &user),
		  -EINVAL);
	/* A finished line with another generation is fenced. */
	assert_rc(key_check_write(&fx->o, k.generation,
				  fmt("succeeded %" PRId64 "\n", k.generation + 1),
				  strlen(fmt("succeeded %" PRId64 "\n",
					     k.generation + 1)), &user), -ESTALE);
	/* Checks change nothing. */
	got = lookup(fx, w.id, "k");
	assert_int_equal(got.status, KEY_IN_FLIGHT);
	assert_int_equal(events_count(fx->st, w.id, NULL), events);
	/* And through an unknown generation, even a good line is ESTALE. */
	assert_rc(key_check_write(&fx->o, k.generation + 77, S("succeeded\n"),
				  &user), -ESTALE);
	assert_rc(key_check_write(&fx->o, k.generation + 77, S("succ"), &user),
		  -ESTALE);
}

/*
 * DESIGN, "When writes take effect": every check that can be made when
 * the bytes arrive is made in write(), the generation included.  An
 * unfinished "succeeded 2" can never become the line of a key whose
 * generation is 1 (neither can "succeeded 10"), so write() can refuse it
 * at once; otherwise `printf 'succeeded 2' >&3` passes write() and fails
 * only at close(), whose error bash ignores.
 */
static void test_check_write_unfinished_wrong_generation(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k = claim(fx, w.id, "k", &user);
	char mine[64], wrong[64], longer[64];

	snprintf(mine, sizeof(mine), "succeeded %" PRId64, k.generation);
	snprintf(wrong, sizeof(wrong), "succeeded %" PRId64, k.generation + 1);
	snprintf(longer, sizeof(longer), "succeeded %" PRId64 "0", k.generation);
	/* The same bytes, complete, are refused by the finalize. */
	assert_rc(key_finalize(&fx->o, k.generation, k.name, k.name_len, wrong, strlen(wrong), &user),
		  -ESTALE);
	assert_passes(key_check_write(&fx->o, k.generation, mine, strlen(mine),
				      &user));
	assert_rc(key_check_write(&fx->o, k.generation, wrong, strlen(wrong),
				  &user), -ESTALE);
	assert_rc(key_check_write(&fx->o, k.generation, longer, strlen(longer),
				  &user), -ESTALE);
}

static void test_check_write_efbig(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k = claim(fx, w.id, "k", &user), got;
	char text[64];
	int n;

	assert_int_equal(fx->o.config.max_result, SMALL_RESULT);
	n = snprintf(text, sizeof(text), "succeeded\n");
	memset(text + n, 'r', SMALL_RESULT + 1);
	/* max_result bytes of result pass; one more is EFBIG. */
	assert_rc(key_check_write(&fx->o, k.generation, text,
				  (size_t)n + SMALL_RESULT, &user), 0);
	assert_rc(key_check_write(&fx->o, k.generation, text,
				  (size_t)n + SMALL_RESULT + 1, &user), -EFBIG);
	assert_rc(key_finalize(&fx->o, k.generation, k.name, k.name_len, text,
			       (size_t)n + SMALL_RESULT + 1, &user), -EFBIG);
	got = lookup(fx, w.id, "k");
	assert_int_equal(got.status, KEY_IN_FLIGHT);
	assert_rc(key_finalize(&fx->o, k.generation, k.name, k.name_len, text,
			       (size_t)n + SMALL_RESULT, &user), 0);
	got = lookup(fx, w.id, "k");
	assert_int_equal(got.status, KEY_SUCCEEDED);
	assert_i64(got.result_len, SMALL_RESULT);
	/* A failure's result is bounded the same way. */
	k = claim(fx, w.id, "k2", &user);
	n = snprintf(text, sizeof(text), "failed\n");
	memset(text + n, 'e', SMALL_RESULT + 1);
	assert_rc(key_check_write(&fx->o, k.generation, text,
				  (size_t)n + SMALL_RESULT + 1, &user), -EFBIG);
	assert_rc(key_finalize(&fx->o, k.generation, k.name, k.name_len, text,
			       (size_t)n + SMALL_RESULT + 1, &user), -EFBIG);
	assert_int_equal(lookup(fx, w.id, "k2").status, KEY_IN_FLIGHT);
}

static void test_check_write_long_unfinished_line(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k = claim(fx, w.id, "k", &user);
	char text[KEY_STATUS_LINE_MAX + 16];

	/* An unfinished line longer than any status line may be is EINVAL. */
	memcpy(text, "succeeded", 9);
	memset(text + 9, ' ', sizeof(text) - 9);
	assert_passes(key_check_write(&fx->o, k.generation, text,
				      KEY_STATUS_LINE_MAX, &user));
	assert_rc(key_check_write(&fx->o, k.generation, text, sizeof(text),
				  &user), -EINVAL);
}

/*
 * key.h: KEY_STATUS_LINE_MAX is "the longest status line a finalizer may
 * write".  write() refuses a longer line while its newline has not come,
 * so the finalize must refuse the same bytes, and a longer line that has
 * its newline too: otherwise the outcome depends on how the bytes were
 * split into write() calls.
 */
static void test_long_status_line_same_verdict(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k = claim(fx, w.id, "k", &user);
	char text[KEY_STATUS_LINE_MAX + 17];

	memcpy(text, "succeeded", 9);
	memset(text + 9, ' ', sizeof(text) - 9);
	text[sizeof(text) - 1] = '\n';
	assert_rc(key_check_write(&fx->o, k.generation, text, sizeof(text) - 1,
				  &user), -EINVAL);
	assert_rc(key_check_write(&fx->o, k.generation, text, sizeof(text),
				  &user), -EINVAL);
	assert_rc(key_finalize(&fx->o, k.generation, k.name, k.name_len, text, sizeof(text) - 1,
			       &user), -EINVAL);
	assert_rc(key_finalize(&fx->o, k.generation, k.name, k.name_len, text, sizeof(text), &user),
		  -EINVAL);
}

/* ---- leases ------------------------------------------------------------- */

static void test_lease_expiry(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k, got;
	bool has = false;
	int n;

	set_policy(fx, w.id, POLICY_IN_FLIGHT_TTL, "10\n");
	k = claim(fx, w.id, "k", &user);
	assert_i64(k.expires_ms, T0_MS + 10000);
	fx->now = T0_MS + 9999;
	lookup(fx, w.id, "k");
	assert_rc(key_claim(&fx->o, w.id, S("k"), &other, &got, NULL), -EEXIST);
	/* At expires_ms the key no longer exists for lookups. */
	fx->now = T0_MS + 10000;
	assert_absent(fx, w.id, "k");
	assert_rc(key_list(&fx->o, w.id, 0, &got, 1, &n), 0);
	assert_int_equal(n, 0);
	assert_rc(workflow_has_keys(&fx->o, w.id, &has), 0);
	assert_false(has);
	assert_rc(key_release(&fx->o, w.id, S("k"), &user), -ENOENT);
	/* Its generation is dead too: the lease passed (see the rule). */
	assert_rc(key_get(&fx->o, k.generation, &got, NULL), -ESTALE);
}

static void test_adoption(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k, a, got;
	char *ev;

	set_policy(fx, w.id, POLICY_IN_FLIGHT_TTL, "10");
	k = claim(fx, w.id, "k", &user);
	fx->now = T0_MS + 60000;
	a = claim(fx, w.id, "k", &other);
	/* The next O_EXCL create adopts it, with a new generation. */
	assert_i64(a.id, k.id);
	assert_true(a.generation > k.generation);
	assert_i64(a.attempt, 2);
	assert_int_equal(a.status, KEY_IN_FLIGHT);
	assert_i64(a.expires_ms, fx->now + 10000);
	assert_int_equal(a.holder_pid, other.pid);
	assert_int_equal(a.holder_uid, other.uid);
	got = lookup(fx, w.id, "k");
	assert_i64(got.generation, a.generation);
	assert_int_equal(fx->o.stats.adoptions, 1);
	assert_int_equal(fx->o.stats.claims, 1);

	assert_int_equal(events_count(fx->st, w.id, "expire"), 1);
	assert_int_equal(events_count(fx->st, w.id, "adopt"), 1);
	ev = event_last(fx->st, w.id, "expire");
	assert_contains(ev, fmt("\"generation\":%" PRId64, k.generation));
	free(ev);
	ev = event_last(fx->st, w.id, "adopt");
	assert_contains(ev, fmt("\"generation\":%" PRId64, a.generation));
	assert_contains(ev, fmt("\"previous\":%" PRId64, k.generation));
	assert_contains(ev, "\"uid\":1001");
	free(ev);
}

/*
 * One rule for a late finalize, whether the sweep ran or not: once the
 * lease has passed, the old generation is fenced (ESTALE) and nothing
 * changes; a touch or a renewal does not bring the lease back.
 */
static void late_finalize_is_fenced(void **state, bool swept)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k, got;
	int64_t gens[1];

	set_policy(fx, w.id, POLICY_IN_FLIGHT_TTL, "10");
	k = claim(fx, w.id, "k", &user);
	gens[0] = k.generation;
	fx->now = T0_MS + 3600 * 1000;
	if (swept) {
		struct sweep_options opt = { .batch = 10 };
		struct sweep_report r;

		assert_rc(sweep_run(&fx->o, &opt, &user, &r), 0);
		assert_i64(r.expired, 1);
	}
	assert_absent(fx, w.id, "k");
	assert_rc(key_check_write(&fx->o, k.generation, S("succeeded\n"), &user),
		  -ESTALE);
	assert_rc(finalize(fx, k.generation, "succeeded\nlate", &user), -ESTALE);
	assert_rc(key_touch(&fx->o, k.generation, &user), -ESTALE);
	assert_rc(key_renew(&fx->o, gens, 1), 0);
	assert_absent(fx, w.id, "k");
	/* The next claim adopts it (or claims the vacant row) at attempt 2. */
	got = claim(fx, w.id, "k", &other);
	assert_i64(got.attempt, 2);
	assert_true(got.generation > k.generation);
}

static void test_late_finalize_before_sweep(void **state)
{
	late_finalize_is_fenced(state, false);
}

static void test_late_finalize_after_sweep(void **state)
{
	late_finalize_is_fenced(state, true);
}

/*
 * The daemon's sweep goes one kind a transaction (sweep_slice): a slice
 * of expired claims retires nothing, a slice of retired keys expires
 * nothing, and each says whether rows of its kind are left.
 */
static void test_sweep_slice_takes_one_kind(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct sweep_report r = { 0 };
	struct key_row k, old1, old2;
	bool more;

	set_policy(fx, w.id, POLICY_IN_FLIGHT_TTL, "10");
	set_policy(fx, w.id, POLICY_RETENTION, "60");
	old1 = claim(fx, w.id, "old1", &user);
	assert_rc(finalize(fx, old1.generation, "succeeded\n", &user), 0);
	old2 = claim(fx, w.id, "old2", &user);
	assert_rc(finalize(fx, old2.generation, "succeeded\n", &user), 0);
	fx->now = T0_MS + 120 * 1000;
	k = claim(fx, w.id, "live", &user);
	fx->now += 30 * 1000;		/* its lease of 10 s has passed */

	assert_rc(sweep_slice(&fx->o, SWEEP_RETIRED, 1, &user, &r, &more), 0);
	assert_i64(r.retired, 1);
	assert_i64(r.expired, 0);
	assert_true(more);
	assert_rc(sweep_slice(&fx->o, SWEEP_RETIRED, 1, &user, &r, &more), 0);
	assert_i64(r.retired, 2);
	assert_rc(sweep_slice(&fx->o, SWEEP_RETIRED, 1, &user, &r, &more), 0);
	assert_i64(r.retired, 2);
	assert_false(more);
	assert_int_equal(events_count(fx->st, w.id, "retire"), 2);
	assert_int_equal(events_count(fx->st, w.id, "expire"), 0);

	assert_rc(sweep_slice(&fx->o, SWEEP_EXPIRED, 10, &user, &r, &more), 0);
	assert_i64(r.expired, 1);
	assert_i64(r.retired, 2);
	assert_false(more);
	assert_int_equal(events_count(fx->st, w.id, "expire"), 1);
	assert_absent(fx, w.id, "live");
	assert_rc(key_check_write(&fx->o, k.generation, S("succeeded\n"), &user),
		  -ESTALE);
}

static void test_late_failed_before_adoption(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k, a;

	set_policy(fx, w.id, POLICY_IN_FLIGHT_TTL, "10");
	k = claim(fx, w.id, "k", &user);
	fx->now = T0_MS + 5000;	/* within the lease */
	assert_rc(finalize(fx, k.generation, "failed\n", &user), 0);
	/* A vacant row: the next claim is a claim, not an adoption. */
	a = claim(fx, w.id, "k", &other);
	assert_i64(a.attempt, 2);
	assert_int_equal(fx->o.stats.adoptions, 0);
	assert_int_equal(events_count(fx->st, w.id, "adopt"), 0);
}

static void test_fenced_after_adoption(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k, a, got;
	char *buf = NULL;
	size_t len;
	int events;
	uint64_t fenced;

	set_policy(fx, w.id, POLICY_IN_FLIGHT_TTL, "10");
	k = claim(fx, w.id, "k", &user);
	fx->now = T0_MS + 10000;
	a = claim(fx, w.id, "k", &other);
	events = events_count(fx->st, w.id, NULL);
	fenced = fx->o.stats.fenced;

	/* Any write, finalize or time change through the old generation. */
	assert_rc(key_check_write(&fx->o, k.generation, S("succeeded\n"), &user),
		  -ESTALE);
	assert_rc(key_check_write(&fx->o, k.generation, S("succ"), &user),
		  -ESTALE);
	assert_rc(finalize(fx, k.generation, "succeeded\nstale", &user), -ESTALE);
	assert_rc(finalize(fx, k.generation, "failed\n", &root), -ESTALE);
	assert_rc(key_touch(&fx->o, k.generation, &user), -ESTALE);
	assert_rc(key_get(&fx->o, k.generation, &got, NULL), -ESTALE);
	assert_rc(key_content(&fx->o, k.generation, &got, &buf, &len), -ESTALE);
	assert_null(buf);
	/* The new holder's generation, written by the old holder, is its. */
	assert_true(fx->o.stats.fenced >= fenced + 5);
	/* Nothing changed. */
	got = lookup(fx, w.id, "k");
	assert_i64(got.generation, a.generation);
	assert_int_equal(got.status, KEY_IN_FLIGHT);
	assert_i64(got.expires_ms, a.expires_ms);
	assert_int_equal(events_count(fx->st, w.id, NULL), events);
	/* The adopter finalizes. */
	assert_rc(finalize(fx, a.generation, fmt("succeeded %" PRId64 "\n",
						 a.generation), &other), 0);
	assert_int_equal(lookup(fx, w.id, "k").status, KEY_SUCCEEDED);
	/* Once terminal, the old generation is still fenced, not refused. */
	assert_rc(finalize(fx, k.generation, "succeeded\n", &user), -ESTALE);
}

static void test_touch_renews(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k, got;
	char *ev;

	set_policy(fx, w.id, POLICY_IN_FLIGHT_TTL, "60");
	k = claim(fx, w.id, "k", &user);
	fx->now = T0_MS + 5000;
	assert_rc(key_touch(&fx->o, k.generation, &user), 0);
	got = lookup(fx, w.id, "k");
	/* touch gives in_flight_ttl, not the short lease of a held claim. */
	assert_i64(got.expires_ms, T0_MS + 5000 + 60000);
	assert_i64(got.generation, k.generation);
	/* Past the original expiry, the key lives on. */
	fx->now = T0_MS + 50000;
	lookup(fx, w.id, "k");
	assert_int_equal(fx->o.stats.renewals, 1);
	ev = event_last(fx->st, w.id, "renew");
	assert_non_null(ev);
	assert_contains(ev, fmt("\"generation\":%" PRId64, k.generation));
	free(ev);
	/* A renewal takes the ttl in force now. */
	set_policy(fx, w.id, POLICY_IN_FLIGHT_TTL, "5");
	assert_rc(key_touch(&fx->o, k.generation, &user), 0);
	assert_i64(lookup(fx, w.id, "k").expires_ms, fx->now + 5000);
	assert_rc(key_touch(&fx->o, k.generation + 100, &user), -ESTALE);
}

static void test_renew(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k, done, failed, got;
	int64_t gens[5];

	set_policy(fx, w.id, POLICY_IN_FLIGHT_TTL, "30");
	k = claim(fx, w.id, "k", &user);
	done = claim(fx, w.id, "done", &user);
	assert_rc(finalize(fx, done.generation, "succeeded\n", &user), 0);
	failed = claim(fx, w.id, "failed", &user);
	assert_rc(finalize(fx, failed.generation, "failed\n", &user), 0);
	gens[0] = done.generation;
	gens[1] = failed.generation;	/* vacant now */
	gens[2] = k.generation + 1000;	/* unknown */
	gens[3] = k.generation;
	gens[4] = k.generation;

	assert_rc(key_renew(&fx->o, gens, 0), 0);
	/* The lease is the short one (10 s < in_flight_ttl 30 s). */
	assert_i64(lookup(fx, w.id, "k").expires_ms, T0_MS + 10000);
	/* Before a third of the lease has passed: nothing to do. */
	fx->now = T0_MS + 3000;
	assert_rc(key_renew(&fx->o, gens, 5), 0);
	assert_i64(lookup(fx, w.id, "k").expires_ms, T0_MS + 10000);
	/* After a third: renewed (once, however often it is listed), by the
	 * short lease again, and routinely: no event. */
	fx->now = T0_MS + 3334;
	assert_rc(key_renew(&fx->o, gens, 5), 0);
	got = lookup(fx, w.id, "k");
	assert_i64(got.expires_ms, T0_MS + 3334 + 10000);
	assert_int_equal(fx->o.stats.renewals, 1);
	assert_int_equal(events_count(fx->st, w.id, "renew"), 0);
	/* A longer lease (touch) is never shortened by a renewal. */
	assert_rc(key_touch(&fx->o, k.generation, &user), 0);
	fx->now += 9000;
	assert_rc(key_renew(&fx->o, gens, 5), 0);
	assert_i64(lookup(fx, w.id, "k").expires_ms, fx->now - 9000 + 30000);
	/* Terminal and vacant keys were skipped, untouched. */
	got = lookup(fx, w.id, "done");
	assert_int_equal(got.status, KEY_SUCCEEDED);
	assert_absent(fx, w.id, "failed");
}

/* ---- holders: detach, abandon ------------------------------------------ */

static void test_detach(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k, got;
	char *ev;

	set_policy(fx, w.id, POLICY_IN_FLIGHT_TTL, "3600");
	k = claim(fx, w.id, "k", &user);
	/* "detach" takes no result, and is no status a key shows. */
	assert_rc(finalize(fx, k.generation, "detach\nresult", &user), -EINVAL);
	assert_rc(key_check_write(&fx->o, k.generation, S("detach\nx"), &user),
		  -EINVAL);
	assert_rc(key_check_write(&fx->o, k.generation, S("deta"), &user), 0);
	fx->now += 1000;
	assert_rc(finalize(fx, k.generation, "detach\n", &user), 0);
	got = lookup(fx, w.id, "k");
	assert_int_equal(got.status, KEY_IN_FLIGHT);
	assert_i64(got.generation, k.generation);
	assert_i64(got.expires_ms, fx->now + 3600 * 1000LL);
	ev = event_last(fx->st, w.id, "detach");
	assert_non_null(ev);
	assert_contains(ev, "\"lease_s\":3600");
	free(ev);
	/* Later, by path, through the generation: the finalize. */
	fx->now += 60000;
	assert_rc(finalize(fx, k.generation, fmt("succeeded %" PRId64 "\n",
						  k.generation), &user), 0);
	assert_int_equal(lookup(fx, w.id, "k").status, KEY_SUCCEEDED);
	assert_rc(finalize(fx, k.generation, "detach", &user),
		  key_refuse_write(&user));
}

/* A child that ends as told, reaped; its fate read while it was a zombie. */
static struct holder_fate fate_of_child(int how)
{
	struct holder_fate f;
	siginfo_t si;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		if (how > 0)
			_exit(how);
		signal(-how, SIG_DFL);	/* not cmocka's handler */
		raise(-how);
		_exit(0);
	}
	/* Wait for it to end without reaping it: a zombie keeps its status. */
	assert_int_equal(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
	holder_fate(pid, &f);
	waitpid(pid, NULL, 0);
	return f;
}

/* A thread of this process, that says its id and waits to be let go. */
struct tgid_probe {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pid_t tid;
	bool go;
};

static void *tell_tid(void *arg)
{
	struct tgid_probe *p = arg;

	pthread_mutex_lock(&p->lock);
	p->tid = gettid();
	pthread_cond_broadcast(&p->cond);
	while (!p->go)
		pthread_cond_wait(&p->cond, &p->lock);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* The process of a thread: the main thread's is itself, another's too. */
static void test_holder_tgid(void **state)
{
	struct tgid_probe p = { .lock = PTHREAD_MUTEX_INITIALIZER,
				.cond = PTHREAD_COND_INITIALIZER };
	pthread_t t;

	(void)state;
	assert_int_equal(holder_tgid(getpid()), getpid());
	assert_int_equal(pthread_create(&t, NULL, tell_tid, &p), 0);
	pthread_mutex_lock(&p.lock);
	while (!p.tid)
		pthread_cond_wait(&p.cond, &p.lock);
	pthread_mutex_unlock(&p.lock);
	assert_int_not_equal(p.tid, getpid());
	assert_int_equal(holder_tgid(p.tid), getpid());
	pthread_mutex_lock(&p.lock);
	p.go = true;
	pthread_cond_broadcast(&p.cond);
	pthread_mutex_unlock(&p.lock);
	pthread_join(t, NULL);
}

static void test_holder_fate(void **state)
{
	struct holder_fate f;
	char buf[96];
	const char *field;
	int64_t value;

	(void)state;
	holder_fate(getpid(), &f);
	assert_int_equal(f.state, HOLDER_RUNNING);
	f = fate_of_child(3);
	assert_int_equal(f.state, HOLDER_EXITED);
	assert_int_equal(f.code, 3);
	holder_describe(&f, buf, sizeof(buf), &field, &value);
	assert_string_equal(buf, "exited with status 3, not finalized");
	assert_string_equal(field, "exit_status");
	assert_i64(value, 3);
	f = fate_of_child(-SIGKILL);
	assert_int_equal(f.state, HOLDER_KILLED);
	assert_int_equal(f.code, SIGKILL);
	holder_describe(&f, buf, sizeof(buf), &field, &value);
	assert_string_equal(buf, "killed by SIGKILL");
	assert_string_equal(field, "signal");
	f = fate_of_child(-SIGSEGV);
	assert_int_equal(f.state, HOLDER_KILLED);
	assert_int_equal(f.code, SIGSEGV);
	/* A process that is gone (pid 0 is no process's). */
	holder_fate(0, &f);
	assert_int_equal(f.state, HOLDER_GONE);
	holder_describe(&f, buf, sizeof(buf), &field, &value);
	assert_null(field);
}

static void test_abandon(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k = claim(fx, w.id, "k", &user), again;
	struct holder_fate fate = { HOLDER_KILLED, SIGKILL };
	char *ev;

	assert_rc(key_abandon(&fx->o, k.generation, k.name, k.name_len, &user, &fate, NULL), 0);
	/* Free at once, long before any lease ends. */
	assert_absent(fx, w.id, "k");
	assert_rc(finalize(fx, k.generation, "succeeded\n", &user), -ESTALE);
	assert_rc(key_abandon(&fx->o, k.generation, k.name, k.name_len, &user, &fate, NULL), -ESTALE);
	ev = event_last(fx->st, w.id, "abandon");
	assert_non_null(ev);
	assert_contains(ev, "\"reason\":\"killed by SIGKILL\"");
	assert_contains(ev, "\"signal\":9");
	assert_contains(ev, fmt("\"pid\":%d", (int)user.pid));
	free(ev);
	/* The retry is attempt 2, a new generation. */
	again = claim(fx, w.id, "k", &other);
	assert_i64(again.attempt, 2);
	assert_true(again.generation > k.generation);
	/* A finalized claim is not abandoned. */
	assert_rc(finalize(fx, again.generation, "succeeded\n", &other), 0);
	assert_rc(key_abandon(&fx->o, again.generation, S("k"), &other, NULL, "x"),
		  -ESTALE);
	assert_int_equal(lookup(fx, w.id, "k").status, KEY_SUCCEEDED);
}

/* ---- release ------------------------------------------------------------ */

static void test_release(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k = claim(fx, w.id, "k", &user), got, again;
	char *ev;

	assert_rc(key_release(&fx->o, w.id, S("k"), &other), 0);
	assert_absent(fx, w.id, "k");
	assert_rc(key_get(&fx->o, k.generation, &got, NULL), -ESTALE);
	assert_rc(finalize(fx, k.generation, "succeeded\n", &user), -ESTALE);
	assert_rc(key_release(&fx->o, w.id, S("k"), &other), -ENOENT);
	assert_rc(key_release(&fx->o, w.id, S("never"), &other), -ENOENT);
	assert_int_equal(fx->o.stats.releases, 1);
	ev = event_last(fx->st, w.id, "release");
	assert_contains(ev, "\"status\":\"in_flight\"");
	assert_contains(ev, "\"uid\":1001");
	free(ev);

	/* The next claim succeeds, fresh. */
	again = claim(fx, w.id, "k", &user);
	assert_true(again.generation > k.generation);
	assert_i64(again.attempt, 1);
	assert_int_equal(fx->o.stats.adoptions, 0);

	/* rm of a succeeded key deletes its dedup record. */
	assert_rc(finalize(fx, again.generation, "succeeded\nresult", &user), 0);
	assert_rc(key_release(&fx->o, w.id, S("k"), &user), 0);
	assert_absent(fx, w.id, "k");
	ev = event_last(fx->st, w.id, "release");
	assert_contains(ev, "\"status\":\"succeeded\"");
	free(ev);
	got = claim(fx, w.id, "k", &user);
	assert_i64(got.result_len, 0);
}

/* ---- listing ------------------------------------------------------------ */

static void test_list_cursor(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job"), v = make_wf(fx, "other");
	struct key_row a, b, c, d, rows[8];
	int n;

	set_policy(fx, w.id, POLICY_IN_FLIGHT_TTL, "100");
	a = claim(fx, w.id, "a", &user);
	b = claim(fx, w.id, "b", &user);
	fx->now += 5000;
	c = claim(fx, w.id, "c", &user);
	claim(fx, v.id, "elsewhere", &user);
	assert_rc(key_list(&fx->o, w.id, 0, rows, 2, &n), 0);
	assert_int_equal(n, 2);
	assert_i64(rows[0].id, a.id);
	assert_i64(rows[1].id, b.id);
	/* Entries removed or added during a listing are neither skipped nor
	 * repeated. */
	assert_rc(key_release(&fx->o, w.id, S("a"), &user), 0);
	d = claim(fx, w.id, "d", &user);
	assert_rc(key_list(&fx->o, w.id, rows[1].id, rows, 8, &n), 0);
	assert_int_equal(n, 2);
	assert_i64(rows[0].id, c.id);
	assert_i64(rows[1].id, d.id);
	/* Expired leases are not listed: b has expired (10 s), c not. */
	fx->now = T0_MS + 10000;
	assert_rc(key_list(&fx->o, w.id, 0, rows, 8, &n), 0);
	assert_int_equal(n, 2);
	assert_i64(rows[0].id, c.id);
	assert_i64(rows[1].id, d.id);
}

/* ---- several mounts, remounts ------------------------------------------ */

static void test_notes(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k = claim(fx, w.id, "k", &user), again;
	char buf[KEY_ORIGINAL_MAX + 1];
	size_t len;

	assert_rc(key_note(&fx->o, k.generation, KEY_NOTE_REQUEST, buf, &len),
		  -ENODATA);
	assert_rc(key_set_note(&fx->o, k.generation, KEY_NOTE_REQUEST,
			       S("sha256:ab\n"), KEY_NOTE_REPLACE, &user), -ENODATA);
	assert_rc(key_set_note(&fx->o, k.generation, KEY_NOTE_REQUEST,
			       S("sha256:ab\n"), 0, &user), 0);
	assert_rc(key_note(&fx->o, k.generation, KEY_NOTE_REQUEST, buf, &len), 0);
	assert_int_equal(len, 9);
	assert_memory_equal(buf, "sha256:ab", 9);
	assert_rc(key_set_note(&fx->o, k.generation, KEY_NOTE_REQUEST, S("x"),
			       KEY_NOTE_CREATE, &user), -EEXIST);
	/* A request is a fingerprint; an original name any bytes, bounded. */
	assert_rc(key_set_note(&fx->o, k.generation, KEY_NOTE_REQUEST,
			       S("a\x01"), 0, &user), -EINVAL);
	assert_rc(key_set_note(&fx->o, k.generation, KEY_NOTE_REQUEST, "", 0, 0,
			       &user), -EINVAL);
	memset(buf, 'o', sizeof(buf));
	assert_rc(key_set_note(&fx->o, k.generation, KEY_NOTE_ORIGINAL, buf,
			       KEY_ORIGINAL_MAX + 1, 0, &user), -E2BIG);
	assert_rc(key_set_note(&fx->o, k.generation, KEY_NOTE_ORIGINAL,
			       S("a/b\n\x01"), 0, &user), 0);
	assert_rc(key_note(&fx->o, k.generation, KEY_NOTE_ORIGINAL, buf, &len), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(buf, "a/b\n\x01", 5);
	/* Terminal: readable, no longer settable; an old generation: ESTALE. */
	assert_rc(finalize(fx, k.generation, "failed\n", &user), 0);
	assert_rc(key_note(&fx->o, k.generation, KEY_NOTE_REQUEST, buf, &len),
		  -ESTALE);	/* dedup_on=success: the key went free */
	/* The next claim took over that generation, without its notes. */
	again = claim(fx, w.id, "k", &user);
	assert_i64(again.previous, k.generation);
	assert_i64(again.attempt, 2);
	assert_rc(key_note(&fx->o, again.generation, KEY_NOTE_REQUEST, buf, &len),
		  -ENODATA);
	assert_rc(key_note(&fx->o, again.generation, KEY_NOTE_ORIGINAL, buf, &len),
		  -ENODATA);
	assert_rc(key_set_note(&fx->o, k.generation, KEY_NOTE_REQUEST, S("r"), 0,
			       &user), -ESTALE);
	assert_rc(key_set_note(&fx->o, again.generation, KEY_NOTE_REQUEST, S("r"),
			       0, &user), 0);
	assert_rc(finalize(fx, again.generation, "succeeded\n", &user), 0);
	assert_rc(key_note(&fx->o, again.generation, KEY_NOTE_REQUEST, buf, &len), 0);
	assert_rc(key_set_note(&fx->o, again.generation, KEY_NOTE_REQUEST, S("s"),
			       0, &user), -EACCES);
	assert_rc(key_set_note(&fx->o, again.generation, KEY_NOTE_REQUEST, S("s"),
			       0, &root), -EPERM);
	/* A first claim took over nothing. */
	assert_i64(claim(fx, w.id, "fresh", &user).previous, 0);
}

static void test_two_mounts(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct once o2;
	struct store *st2 = open_store(fx->path, false);
	struct once_config cfg = { .max_result = ONCE_MAX_RESULT_DEFAULT };
	struct key_row k, got;

	once_init(&o2, st2, &cfg);
	o2.clock = fake_clock;
	o2.clock_arg = &fx->now;
	k = claim(fx, w.id, "k", &user);
	/* Claims stay atomic across mounts that share one store. */
	assert_rc(key_claim(&o2, w.id, S("k"), &other, &got, NULL), -EEXIST);
	assert_rc(key_lookup(&o2, w.id, S("k"), &got, NULL), 0);
	assert_i64(got.generation, k.generation);
	/* The holder can finalize through the other mount by generation. */
	assert_rc(key_finalize(&o2, k.generation, k.name, k.name_len, S("succeeded\n"), &user), 0);
	assert_int_equal(lookup(fx, w.id, "k").status, KEY_SUCCEEDED);
	/* Generations drawn by either mount never repeat. */
	{
		struct key_row x, y;

		assert_rc(key_claim(&o2, w.id, S("x"), &other, &x, NULL), 0);
		y = claim(fx, w.id, "y", &user);
		assert_true(x.generation > k.generation);
		assert_true(y.generation > x.generation);
	}
	store_close(st2);
}

#define RACERS 8

struct racer {
	struct once *o;
	int64_t wf;
	pthread_barrier_t *go;
	int rc;
	int lookups_failed;	/* lookups that saw neither key nor absence */
	struct key_row k;
};

static void *race(void *arg)
{
	struct racer *r = arg;
	struct caller who = { .pid = 5000, .uid = 1000, .gid = 1000 };
	struct key_row seen;

	pthread_barrier_wait(r->go);
	r->rc = key_claim(r->o, r->wf, S("race"), &who, &r->k, NULL);
	/* Readers run beside the claims. */
	for (int i = 0; i < 20; i++) {
		int rc = key_lookup(r->o, r->wf, S("race"), &seen, NULL);

		if (rc != 0 && rc != -ENOENT)
			r->lookups_failed++;
	}
	return NULL;
}

static void check_race(struct racer *r)
{
	int won = 0;

	for (int i = 0; i < RACERS; i++) {
		if (r[i].rc == 0)
			won++;
		else if (r[i].rc != -EEXIST)
			fail_msg("racer %d: key_claim = %d (%s), expected 0 or "
				 "EEXIST", i, r[i].rc, errname(r[i].rc));
		assert_int_equal(r[i].lookups_failed, 0);
	}
	assert_int_equal(won, 1);
}

/* Exactly one concurrent creator succeeds: threads of one mount. */
static void test_claim_race_one_mount(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct racer r[RACERS];
	pthread_t th[RACERS];
	pthread_barrier_t go;

	pthread_barrier_init(&go, NULL, RACERS);
	for (int i = 0; i < RACERS; i++) {
		r[i] = (struct racer){ .o = &fx->o, .wf = w.id, .go = &go };
		assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
	}
	for (int i = 0; i < RACERS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&go);
	check_race(r);
	assert_int_equal(fx->o.stats.claims, 1);
	assert_int_equal(fx->o.stats.conflicts, RACERS - 1);
	assert_int_equal(events_count(fx->st, w.id, "claim"), 1);
}

/* ...and across mounts that share one store. */
static void test_claim_race_many_mounts(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct once_config cfg = { .max_result = ONCE_MAX_RESULT_DEFAULT };
	struct store *st[RACERS];
	struct once o[RACERS];
	struct racer r[RACERS];
	pthread_t th[RACERS];
	pthread_barrier_t go;

	pthread_barrier_init(&go, NULL, RACERS);
	for (int i = 0; i < RACERS; i++) {
		st[i] = open_store(fx->path, false);
		once_init(&o[i], st[i], &cfg);
		o[i].clock = fake_clock;
		o[i].clock_arg = &fx->now;
		r[i] = (struct racer){ .o = &o[i], .wf = w.id, .go = &go };
	}
	for (int i = 0; i < RACERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
	for (int i = 0; i < RACERS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&go);
	for (int i = 0; i < RACERS; i++)
		store_close(st[i]);
	check_race(r);
	assert_int_equal(events_count(fx->st, w.id, "claim"), 1);
}

static void test_remount_finalize_by_generation(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k = claim(fx, w.id, "k", &user), got;

	fx_reopen(fx);
	got = lookup(fx, w.id, "k");
	assert_i64(got.generation, k.generation);
	assert_i64(got.expires_ms, k.expires_ms);
	assert_rc(finalize(fx, k.generation, fmt("succeeded %" PRId64 "\nok",
						 k.generation), &user), 0);
	fx_reopen(fx);
	got = lookup(fx, w.id, "k");
	assert_int_equal(got.status, KEY_SUCCEEDED);
	assert_i64(got.result_len, 2);
}

static void test_events_of_a_key(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job");
	struct key_row k;

	set_policy(fx, w.id, POLICY_IN_FLIGHT_TTL, "10");
	k = claim(fx, w.id, "k", &user);
	fx->now += 5000;
	assert_rc(key_touch(&fx->o, k.generation, &user), 0);
	fx->now += 20000;
	k = claim(fx, w.id, "k", &other);
	assert_rc(finalize(fx, k.generation, "succeeded\n", &other), 0);
	assert_rc(key_release(&fx->o, w.id, S("k"), &root), 0);
	/* One JSON object a line, oldest first. */
	assert_int_equal(events_count(fx->st, w.id, "claim"), 1);
	assert_int_equal(events_count(fx->st, w.id, "renew"), 1);
	assert_int_equal(events_count(fx->st, w.id, "expire"), 1);
	assert_int_equal(events_count(fx->st, w.id, "adopt"), 1);
	assert_int_equal(events_count(fx->st, w.id, "finalize"), 1);
	assert_int_equal(events_count(fx->st, w.id, "release"), 1);
	{
		char *all = events_of(fx->st, w.id, NULL);
		const char *order[] = { "\"claim\"", "\"renew\"", "\"expire\"",
					"\"adopt\"", "\"finalize\"", "\"release\"" };
		const char *at = all;

		for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
			const char *p = strstr(at, order[i]);

			if (!p)
				fail_msg("event %s missing or out of order", order[i]);
			at = p;
		}
		free(all);
	}
	assert_events_size(&fx->o, w.id);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
#define T_SMALL(f) cmocka_unit_test_setup_teardown(f, fx_setup_small, fx_teardown)
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_is_live),
		cmocka_unit_test(test_refuse_write),
		T(test_claim),
		T(test_claim_names_the_host),
		T(test_claim_conflict),
		T(test_notes),
		T(test_claim_bad_names),
		T(test_claim_missing_workflow),
		T(test_generations_never_reused),
		T(test_finalize_succeeded),
		T(test_finalize_with_generation),
		T(test_finalize_bad_bytes),
		T(test_failed_under_dedup_success),
		T(test_vacant_rows_keep_attempt_count),
		T(test_failed_under_dedup_any),
		T(test_succeeded_under_dedup_any),
		T(test_terminal_refusal),
		T(test_check_write_prefixes),
		T(test_check_write_unfinished_wrong_generation),
		T_SMALL(test_check_write_efbig),
		T(test_check_write_long_unfinished_line),
		T(test_long_status_line_same_verdict),
		T(test_lease_expiry),
		T(test_adoption),
		T(test_late_finalize_before_sweep),
		T(test_late_finalize_after_sweep),
		T(test_sweep_slice_takes_one_kind),
		T(test_late_failed_before_adoption),
		T(test_fenced_after_adoption),
		T(test_touch_renews),
		T(test_renew),
		T(test_detach),
		T(test_holder_tgid),
		T(test_holder_fate),
		T(test_abandon),
		T(test_release),
		T(test_list_cursor),
		T(test_two_mounts),
		T(test_claim_race_one_mount),
		T(test_claim_race_many_mounts),
		T(test_remount_finalize_by_generation),
		T(test_events_of_a_key),
	};

	return cmocka_run_group_tests_name("key", tests, NULL, NULL);
}
