/*
 * test_step.c - step.h: the input fingerprint and its policies, and
 * checkpoints (private copies committed whole, snapshot readers, purge).
 */
#include <inttypes.h>

#include "unit.h"

#include "step.h"
#include "workflow.h"

#define SMALL_CHECKPOINT 100

static int fx_setup_small(void **state)
{
	struct fixture *fx;

	fx_setup(state);
	fx = *state;
	fx->max_checkpoint = SMALL_CHECKPOINT;
	fx_attach(fx, ONCE_MAX_RESULT_DEFAULT);
	return 0;
}

static struct wf_row make_wf(struct fixture *fx, const char *name,
			     const char *on_input_change)
{
	struct wf_row w;

	assert_rc(workflow_create(&fx->o, name, strlen(name), 0755, &user, &w), 0);
	if (on_input_change)
		assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_ON_INPUT_CHANGE,
					      on_input_change,
					      strlen(on_input_change), &user), 0);
	assert_rc(workflow_get(&fx->o, w.id, &w), 0);
	return w;
}

static struct wf_row reread(struct fixture *fx, int64_t id)
{
	struct wf_row w;

	assert_rc(workflow_get(&fx->o, id, &w), 0);
	return w;
}

/* Nothing of the workflow's state changed. */
static void assert_wf_same(const struct wf_row *a, const struct wf_row *b)
{
	assert_i64(a->id, b->id);
	assert_int_equal(a->fingerprint_len, b->fingerprint_len);
	assert_memory_equal(a->fingerprint, b->fingerprint, a->fingerprint_len);
	assert_i64(a->epoch, b->epoch);
	assert_i64(a->ctime_ns, b->ctime_ns);
	assert_i64(a->mtime_ns, b->mtime_ns);
	assert_i64(a->events_size, b->events_size);
	assert_memory_equal(&a->policy, &b->policy, sizeof(a->policy));
}

static int set_fp(struct fixture *fx, int64_t wf, const char *value)
{
	return step_set_fingerprint(&fx->o, wf, value,
				    value ? strlen(value) : 0, &user, NULL);
}

static int check_fp(struct fixture *fx, int64_t wf, const char *value)
{
	return step_check_fingerprint(&fx->o, wf, value, strlen(value), 0);
}

static void assert_fp(struct fixture *fx, int64_t wf, const char *want)
{
	struct wf_row w = reread(fx, wf);

	assert_int_equal(w.fingerprint_len, strlen(want));
	assert_memory_equal(w.fingerprint, want, w.fingerprint_len);
}

static bool visible(struct fixture *fx, int64_t wf, const char *name)
{
	struct step_row r;
	int rc = step_lookup(&fx->o, wf, name, strlen(name), &r);

	if (rc != 0 && rc != -ENOENT)
		fail_msg("step_lookup(%s) = %d (%s)", name, rc, errname(rc));
	return rc == 0;
}

static void assert_step_content(struct fixture *fx, int64_t id,
				const char *want, size_t want_len)
{
	size_t len;
	char *buf = checkpoint_content(fx->st, id, &len);

	if (len != want_len || memcmp(buf, want, len) != 0)
		fail_msg("checkpoint %" PRId64 ": \"%.*s\", expected \"%.*s\"",
			 id, (int)len, buf, (int)want_len, want);
	free(buf);
}

/* ---- the fingerprint ---------------------------------------------------- */

static void test_fingerprint_set(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL), after;
	char *ev;

	assert_int_equal(w.fingerprint_len, 0);
	fx->now += 1000;
	assert_rc(check_fp(fx, w.id, "abc\n"), 0);
	assert_rc(set_fp(fx, w.id, "abc\n"), 0);
	after = reread(fx, w.id);
	assert_int_equal(after.fingerprint_len, 3);
	assert_string_equal(after.fingerprint, "abc");
	assert_i64(after.ctime_ns, fx->now * 1000000);
	/*
	 * No checkpoint to invalidate: no invalidation event, but a new
	 * epoch, so that a writer opened before cannot commit under "abc".
	 */
	assert_i64(after.epoch, w.epoch + 1);
	assert_int_equal(events_count(fx->st, w.id, "invalidate"), 0);
	assert_int_equal(events_count(fx->st, w.id, "fingerprint"), 1);
	ev = event_last(fx->st, w.id, "fingerprint");
	assert_contains(ev, "\"value\":\"abc\"");
	free(ev);
	/* It survives a remount. */
	fx_reopen(fx);
	assert_fp(fx, w.id, "abc");
}

static void test_fingerprint_same_value_is_a_no_op(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL), before, after;
	struct step_row r;

	assert_rc(set_fp(fx, w.id, "v1\n"), 0);
	r = make_checkpoint(&fx->o, w.id, "extract", S("data"));
	before = reread(fx, w.id);
	fx->now += 1000;
	/* With or without its newline, the same value changes nothing. */
	assert_rc(check_fp(fx, w.id, "v1\n"), 0);
	assert_rc(set_fp(fx, w.id, "v1\n"), 0);
	assert_rc(set_fp(fx, w.id, "v1"), 0);
	after = reread(fx, w.id);
	assert_i64(after.epoch, before.epoch);
	assert_i64(after.ctime_ns, before.ctime_ns);
	assert_i64(after.events_size, before.events_size);
	assert_true(visible(fx, w.id, "extract"));
	assert_step_content(fx, r.id, S("data"));
	/* Under raise too: a resume is not a change. */
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_ON_INPUT_CHANGE,
				      S("raise"), &user), 0);
	assert_rc(check_fp(fx, w.id, "v1"), 0);
	assert_rc(set_fp(fx, w.id, "v1\n"), 0);
	/* Unset is a value like any other: unsetting twice is a no-op. */
	assert_rc(step_remove(&fx->o, w.id, S("extract"), &user), 0);
	assert_rc(set_fp(fx, w.id, NULL), 0);
	before = reread(fx, w.id);
	assert_int_equal(before.fingerprint_len, 0);
	assert_rc(set_fp(fx, w.id, NULL), 0);
	assert_rc(set_fp(fx, w.id, ""), 0);
	assert_rc(set_fp(fx, w.id, "\n"), 0);
	after = reread(fx, w.id);
	assert_i64(after.events_size, before.events_size);
}

static void test_fingerprint_bad_values(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL), before, after;
	char long_value[FINGERPRINT_MAX + 2];

	assert_rc(set_fp(fx, w.id, "good"), 0);
	before = reread(fx, w.id);
	assert_rc(check_fp(fx, w.id, "tab\there"), -EINVAL);
	assert_rc(set_fp(fx, w.id, "tab\there"), -EINVAL);
	assert_rc(set_fp(fx, w.id, "two\n\n"), -EINVAL);
	assert_rc(set_fp(fx, w.id, "crlf\r\n"), -EINVAL);
	assert_rc(set_fp(fx, w.id, "\xc3\xa9"), -EINVAL);
	memset(long_value, 'f', sizeof(long_value));
	assert_rc(step_check_fingerprint(&fx->o, w.id, long_value,
					 FINGERPRINT_MAX + 1, 0), -EINVAL);
	assert_rc(step_set_fingerprint(&fx->o, w.id, long_value,
				       FINGERPRINT_MAX + 1, &user, NULL), -EINVAL);
	after = reread(fx, w.id);
	assert_wf_same(&after, &before);
	/* 256 bytes is a value. */
	assert_rc(step_set_fingerprint(&fx->o, w.id, long_value,
				       FINGERPRINT_MAX, &user, NULL), 0);
	after = reread(fx, w.id);
	assert_int_equal(after.fingerprint_len, FINGERPRINT_MAX);
	assert_memory_equal(after.fingerprint, long_value, FINGERPRINT_MAX);
	/* A missing workflow; the syntax is checked first. */
	assert_rc(check_fp(fx, w.id + 1, "x"), -ENOENT);
	assert_rc(set_fp(fx, w.id + 1, "x"), -ENOENT);
	assert_rc(set_fp(fx, w.id + 1, NULL), -ENOENT);
	assert_rc(check_fp(fx, w.id + 1, "\x01"), -EINVAL);
}

static void test_reset_invalidates(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", "reset"), after;
	struct step_row a, b, got, rows[4];
	int64_t purged = -1;
	bool has = true;
	char *ev;
	int n;

	assert_rc(set_fp(fx, w.id, "v1"), 0);
	w = reread(fx, w.id);
	a = make_checkpoint(&fx->o, w.id, "extract", S("E1"));
	b = make_checkpoint(&fx->o, w.id, "load", S("L1"));
	assert_i64(a.epoch, w.epoch);
	assert_rc(check_fp(fx, w.id, "v2"), 0);
	assert_rc(set_fp(fx, w.id, "v2\n"), 0);
	after = reread(fx, w.id);
	/* Epoch + 1: every old checkpoint vanishes at once. */
	assert_i64(after.epoch, w.epoch + 1);
	assert_string_equal(after.fingerprint, "v2");
	assert_false(visible(fx, w.id, "extract"));
	assert_false(visible(fx, w.id, "load"));
	assert_rc(step_get(&fx->o, a.id, &got), -ESTALE);
	assert_rc(step_list(&fx->o, w.id, 0, rows, 4, &n), 0);
	assert_int_equal(n, 0);
	assert_rc(workflow_has_steps(&fx->o, w.id, &has), 0);
	assert_false(has);
	ev = event_last(fx->st, w.id, "invalidate");
	assert_non_null(ev);
	assert_contains(ev, "\"epoch\":1");
	free(ev);
	assert_events_size(&fx->o, w.id);
	/* The same names can be written again, under the new value. */
	got = make_checkpoint(&fx->o, w.id, "extract", S("E2"));
	assert_true(got.id != a.id);
	assert_i64(got.epoch, after.epoch);
	assert_step_content(fx, got.id, S("E2"));
	/* The old ones are purged later, in batches. */
	assert_rc(step_purge(&fx->o, 1, &purged), 0);
	assert_i64(purged, 1);
	assert_rc(step_purge(&fx->o, 10, &purged), 0);
	assert_i64(purged, 1);
	assert_rc(step_purge(&fx->o, 10, &purged), 0);
	assert_i64(purged, 0);
	assert_true(visible(fx, w.id, "extract"));
	(void)b;
	/* Going back to v1 does not bring the purged ones back. */
	assert_rc(set_fp(fx, w.id, "v1"), 0);
	assert_false(visible(fx, w.id, "extract"));
	assert_false(visible(fx, w.id, "load"));
}

static void test_unset_under_reset_invalidates(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);

	assert_rc(set_fp(fx, w.id, "v1"), 0);
	w = reread(fx, w.id);
	make_checkpoint(&fx->o, w.id, "s", S("x"));
	/* Unlinking input.fingerprint is a change of value, to unset. */
	assert_rc(set_fp(fx, w.id, NULL), 0);
	assert_fp(fx, w.id, "");
	assert_false(visible(fx, w.id, "s"));
	assert_i64(reread(fx, w.id).epoch, w.epoch + 1);
}

static void test_reuse_keeps_checkpoints(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", "reuse"), after;
	struct step_row a, got;

	assert_rc(set_fp(fx, w.id, "v1"), 0);
	a = make_checkpoint(&fx->o, w.id, "extract", S("E1"));
	assert_rc(check_fp(fx, w.id, "v2"), 0);
	assert_rc(set_fp(fx, w.id, "v2"), 0);
	after = reread(fx, w.id);
	assert_string_equal(after.fingerprint, "v2");
	assert_i64(after.epoch, w.epoch);
	assert_true(visible(fx, w.id, "extract"));
	assert_rc(step_get(&fx->o, a.id, &got), 0);
	assert_step_content(fx, a.id, S("E1"));
	assert_int_equal(events_count(fx->st, w.id, "invalidate"), 0);
	assert_int_equal(events_count(fx->st, w.id, "fingerprint"), 2);
}

static void test_raise(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", "raise"), before, after;
	int events;

	/* With no checkpoint, a new value is taken. */
	assert_rc(check_fp(fx, w.id, "v1"), 0);
	assert_rc(set_fp(fx, w.id, "v1"), 0);
	assert_rc(set_fp(fx, w.id, "v2"), 0);
	assert_fp(fx, w.id, "v2");
	assert_i64(reread(fx, w.id).epoch, w.epoch);
	/* With one, EBUSY, and nothing changes. */
	make_checkpoint(&fx->o, w.id, "extract", S("E"));
	before = reread(fx, w.id);
	events = events_count(fx->st, w.id, NULL);
	assert_rc(check_fp(fx, w.id, "v3"), -EBUSY);
	assert_rc(set_fp(fx, w.id, "v3"), -EBUSY);
	assert_rc(set_fp(fx, w.id, NULL), -EBUSY);
	assert_rc(set_fp(fx, w.id, ""), -EBUSY);
	after = reread(fx, w.id);
	assert_wf_same(&after, &before);
	assert_int_equal(events_count(fx->st, w.id, NULL), events);
	assert_true(visible(fx, w.id, "extract"));
	/* Removing the checkpoints is how a user accepts the new input. */
	assert_rc(step_remove(&fx->o, w.id, S("extract"), &user), 0);
	assert_rc(check_fp(fx, w.id, "v3"), 0);
	assert_rc(set_fp(fx, w.id, "v3"), 0);
	assert_fp(fx, w.id, "v3");
}

static void test_held_input(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);
	struct once o2;
	struct store *st2 = open_store(fx->path, false);
	struct once_config cfg = { .max_result = ONCE_MAX_RESULT_DEFAULT,
				   .lease_ms = 2000 };
	int64_t hold = 0, hold2 = 0, other = 0;

	once_init(&o2, st2, &cfg);
	o2.clock = fake_clock;
	o2.clock_arg = &fx->now;
	assert_rc(step_set_fingerprint(&fx->o, w.id, S("A\n"), &user, &hold), 0);
	assert_true(hold != 0);
	/* Another value, from any mount, is refused while the hold lives. */
	assert_rc(check_fp(fx, w.id, "B\n"), -EBUSY);
	assert_rc(step_set_fingerprint(&o2, w.id, S("B\n"), &user, &other), -EBUSY);
	assert_i64(other, 0);
	assert_rc(step_set_fingerprint(&o2, w.id, NULL, 0, &user, NULL), -EBUSY);
	/* The same value is a resume, and holds too. */
	assert_rc(step_set_fingerprint(&o2, w.id, S("A\n"), &user, &hold2), 0);
	assert_true(hold2 != 0 && hold2 != hold);
	assert_rc(step_release_input(&fx->o, hold), 0);
	assert_rc(set_fp(fx, w.id, "B\n"), -EBUSY);
	/* The second mount renews no more (it died): its hold lapses. */
	fx->now += 1999;
	assert_rc(set_fp(fx, w.id, "B\n"), -EBUSY);
	fx->now += 2;
	assert_rc(set_fp(fx, w.id, "B\n"), 0);
	assert_int_equal(reread(fx, w.id).fingerprint_len, 1);
	/* Renewed while its mount lives. */
	hold = 0;
	assert_rc(step_set_fingerprint(&fx->o, w.id, S("C\n"), &user, &hold), 0);
	for (int i = 0; i < 10; i++) {
		fx->now += ONCE_LEASE_MS_DEFAULT / 3 + 1;
		assert_rc(step_renew_holds(&fx->o), 0);
	}
	assert_rc(set_fp(fx, w.id, "D\n"), -EBUSY);
	assert_rc(step_release_input(&fx->o, hold), 0);
	assert_rc(set_fp(fx, w.id, "D\n"), 0);
	/* A refused value takes no hold. */
	hold = 0;
	assert_rc(step_set_fingerprint(&fx->o, w.id, S("bad\x01\n"), &user, &hold),
		  -EINVAL);
	assert_i64(hold, 0);
	/* A mount that closes cleanly lets go of its holds at once. */
	hold2 = 0;
	assert_rc(step_set_fingerprint(&o2, w.id, S("D\n"), &user, &hold2), 0);
	assert_rc(set_fp(fx, w.id, "E\n"), -EBUSY);
	store_close(st2);
	assert_rc(set_fp(fx, w.id, "E\n"), 0);
}

static void test_policy_change_applies_to_next_value(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", "reuse");

	assert_rc(set_fp(fx, w.id, "v1"), 0);
	make_checkpoint(&fx->o, w.id, "s", S("x"));
	assert_rc(set_fp(fx, w.id, "v2"), 0);
	assert_true(visible(fx, w.id, "s"));
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_ON_INPUT_CHANGE,
				      S("reset\n"), &user), 0);
	assert_true(visible(fx, w.id, "s"));
	assert_rc(set_fp(fx, w.id, "v3"), 0);
	assert_false(visible(fx, w.id, "s"));
	assert_events_size(&fx->o, w.id);
}

/* ---- checkpoints -------------------------------------------------------- */

static void test_create_and_lookup(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);
	struct step_row r, again, got;
	char name[256];

	fx->now += 7;
	/* A new checkpoint exists for nobody until its writer commits. */
	assert_rc(step_create(&fx->o, w.id, S("extract"), true, &user, &r), 0);
	assert_i64(r.id, 0);
	assert_i64(r.wf, w.id);
	assert_i64(r.epoch, w.epoch);
	assert_i64(r.size, 0);
	assert_string_equal(r.name, "extract");
	assert_rc(step_lookup(&fx->o, w.id, S("extract"), &got), -ENOENT);
	assert_int_equal(events_count(fx->st, w.id, "checkpoint"), 0);
	r = make_checkpoint(&fx->o, w.id, "extract", "", 0);
	assert_true(r.id > 0);
	assert_i64(r.mtime_ns, fx->now * 1000000);
	/* O_EXCL on an existing one; without it, the same checkpoint. */
	assert_rc(step_create(&fx->o, w.id, S("extract"), true, &user, &again),
		  -EEXIST);
	assert_rc(step_create(&fx->o, w.id, S("extract"), false, &user, &again),
		  0);
	assert_i64(again.id, r.id);
	assert_rc(step_lookup(&fx->o, w.id, S("extract"), &got), 0);
	assert_i64(got.id, r.id);
	assert_rc(step_get(&fx->o, r.id, &got), 0);
	assert_string_equal(got.name, "extract");
	assert_rc(step_lookup(&fx->o, w.id, S("load"), &got), -ENOENT);
	assert_rc(step_get(&fx->o, r.id + 100, &got), -ESTALE);
	assert_int_equal(events_count(fx->st, w.id, "checkpoint"), 1);

	/* Names. */
	assert_rc(step_create(&fx->o, w.id, "", 0, true, &user, &got), -EINVAL);
	assert_rc(step_create(&fx->o, w.id, S("a/b"), true, &user, &got),
		  -EINVAL);
	assert_rc(step_create(&fx->o, w.id, S(".."), true, &user, &got), -EINVAL);
	memset(name, 's', sizeof(name));
	assert_rc(step_create(&fx->o, w.id, name, 256, true, &user, &got),
		  -ENAMETOOLONG);
	assert_rc(step_lookup(&fx->o, w.id, name, 256, &got), -ENAMETOOLONG);
	assert_rc(step_create(&fx->o, w.id, name, 255, true, &user, &got), 0);
	assert_rc(step_create(&fx->o, w.id, S("extract.part"), true, &user,
			      &got), 0);
	assert_rc(step_create(&fx->o, w.id, S(".hidden"), true, &user, &got), 0);
}

/* step.h: lookups and creates in a workflow that is gone are ENOENT. */
static void test_create_in_missing_workflow(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);
	struct step_row got;
	int n;

	assert_rc(step_lookup(&fx->o, w.id + 1, S("x"), &got), -ENOENT);
	assert_rc(step_list(&fx->o, w.id + 1, 0, &got, 1, &n), -ENOENT);
	assert_rc(step_remove(&fx->o, w.id + 1, S("x"), &user), -ENOENT);
	assert_rc(step_create(&fx->o, w.id + 1, S("x"), false, &user, &got),
		  -ENOENT);
	/* Removed (by another mount, say) while its steps/ is in use. */
	assert_rc(workflow_remove(&fx->o, S("job"), &user), 0);
	assert_rc(step_create(&fx->o, w.id, S("x"), true, &user, &got),
		  -ENOENT);
}

static void test_list_cursor(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL), v = make_wf(fx, "v", NULL);
	struct step_row a, b, c, d, rows[8];
	int n;

	a = make_checkpoint(&fx->o, w.id, "a", "", 0);
	b = make_checkpoint(&fx->o, w.id, "b", "", 0);
	c = make_checkpoint(&fx->o, w.id, "c", "", 0);
	d = make_checkpoint(&fx->o, v.id, "a", "", 0);
	assert_rc(step_list(&fx->o, w.id, 0, rows, 2, &n), 0);
	assert_int_equal(n, 2);
	assert_i64(rows[0].id, a.id);
	assert_i64(rows[1].id, b.id);
	assert_rc(step_remove(&fx->o, w.id, S("a"), &user), 0);
	d = make_checkpoint(&fx->o, w.id, "d", "", 0);
	assert_rc(step_list(&fx->o, w.id, rows[1].id, rows, 8, &n), 0);
	assert_int_equal(n, 2);
	assert_i64(rows[0].id, c.id);
	assert_i64(rows[1].id, d.id);
	assert_rc(step_list(&fx->o, w.id + v.id + 1, 0, rows, 8, &n), -ENOENT);
}

static void test_writer_commit(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);
	struct step_writer *wr = NULL;
	struct step_row r, got;
	char buf[64];
	size_t n;
	char *ev;

	r = make_checkpoint(&fx->o, w.id, "s", "", 0);
	assert_rc(step_writer_open(&fx->o, &r, true, &wr), 0);
	assert_non_null(wr);
	assert_i64(step_writer_id(wr), r.id);
	assert_rc(step_writer_write(&fx->o, wr, 0, S("hello"), false), 0);
	assert_i64(step_writer_size(wr), 5);
	/* Until the commit, readers see the committed (empty) content. */
	assert_step_content(fx, r.id, "", 0);
	assert_rc(step_get(&fx->o, r.id, &got), 0);
	assert_i64(got.size, 0);
	fx->now += 3000;
	assert_rc(step_writer_commit(&fx->o, wr, &user), 0);
	step_writer_close(wr);
	assert_step_content(fx, r.id, S("hello"));
	assert_rc(step_get(&fx->o, r.id, &got), 0);
	assert_i64(got.size, 5);
	assert_i64(got.mtime_ns, fx->now * 1000000);
	/* Its creation was a commit too. */
	assert_int_equal(fx->o.stats.checkpoints, 2);
	ev = event_last(fx->st, w.id, "checkpoint");
	assert_contains(ev, "\"step\":\"s\"");
	assert_contains(ev, "\"size\":5");
	free(ev);

	/* Without truncate, the copy starts from the committed content. */
	assert_rc(step_writer_open(&fx->o, &r, false, &wr), 0);
	assert_i64(step_writer_size(wr), 5);
	assert_rc(step_writer_read(wr, 0, buf, sizeof(buf), &n), 0);
	assert_int_equal(n, 5);
	assert_memory_equal(buf, "hello", 5);
	assert_rc(step_writer_write(&fx->o, wr, 0, S(" world"), true), 0);
	assert_rc(step_writer_write(&fx->o, wr, 0, S("J"), false), 0);
	assert_i64(step_writer_size(wr), 11);
	assert_rc(step_writer_read(wr, 0, buf, sizeof(buf), &n), 0);
	assert_int_equal(n, 11);
	assert_memory_equal(buf, "Jello world", 11);
	assert_rc(step_writer_commit(&fx->o, wr, &user), 0);
	/* A second commit of the same handle commits the same content. */
	assert_rc(step_writer_truncate(&fx->o, wr, 4), 0);
	assert_rc(step_writer_commit(&fx->o, wr, &user), 0);
	step_writer_close(wr);
	assert_step_content(fx, r.id, S("Jell"));
	assert_int_equal(fx->o.stats.checkpoints, 4);

	/* A writer past the end leaves zeros in between. */
	assert_rc(step_writer_open(&fx->o, &r, true, &wr), 0);
	assert_rc(step_writer_write(&fx->o, wr, 3, S("x"), false), 0);
	assert_rc(step_writer_commit(&fx->o, wr, &user), 0);
	step_writer_close(wr);
	assert_step_content(fx, r.id, "\0\0\0x", 4);
	step_writer_close(NULL);
}

static void test_two_writers_whole_content(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);
	struct step_writer *a = NULL, *b = NULL;
	struct step_row r = make_checkpoint(&fx->o, w.id, "s", S("old"));

	/* Each writer works on a private copy; the last commit wins whole. */
	assert_rc(step_writer_open(&fx->o, &r, true, &a), 0);
	assert_rc(step_writer_open(&fx->o, &r, false, &b), 0);
	assert_rc(step_writer_write(&fx->o, a, 0, S("AAAAAAAA"), false), 0);
	assert_rc(step_writer_write(&fx->o, b, 3, S("-b"), false), 0);
	assert_rc(step_writer_commit(&fx->o, a, &user), 0);
	assert_step_content(fx, r.id, S("AAAAAAAA"));
	assert_rc(step_writer_commit(&fx->o, b, &other), 0);
	assert_step_content(fx, r.id, S("old-b"));
	step_writer_close(a);
	step_writer_close(b);
}

static void test_writer_large_content(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);
	size_t len = 3 * 1024 * 1024 + 17;
	char *data = malloc(len);
	struct step_writer *wr = NULL;
	struct step_row r;

	assert_non_null(data);
	for (size_t i = 0; i < len; i++)
		data[i] = (char)(i % 251);
	r = make_checkpoint(&fx->o, w.id, "big", "", 0);
	assert_rc(step_writer_open(&fx->o, &r, true, &wr), 0);
	for (size_t off = 0; off < len; off += 128 * 1024) {
		size_t n = len - off < 128 * 1024 ? len - off : 128 * 1024;

		assert_rc(step_writer_write(&fx->o, wr, (int64_t)off, data + off, n,
					    false), 0);
	}
	assert_rc(step_writer_commit(&fx->o, wr, &user), 0);
	step_writer_close(wr);
	assert_step_content(fx, r.id, data, len);
	/* And a copy of it, appended to, keeps every byte. */
	assert_rc(step_writer_open(&fx->o, &r, false, &wr), 0);
	assert_i64(step_writer_size(wr), (int64_t)len);
	assert_rc(step_writer_write(&fx->o, wr, 0, S("!"), true), 0);
	assert_rc(step_writer_commit(&fx->o, wr, &user), 0);
	step_writer_close(wr);
	{
		size_t got_len;
		char *got = checkpoint_content(fx->st, r.id, &got_len);

		assert_int_equal(got_len, len + 1);
		assert_memory_equal(got, data, len);
		assert_int_equal(got[len], '!');
		free(got);
	}
	free(data);
}

static void test_writer_efbig(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);
	struct step_writer *wr = NULL;
	struct step_row r;
	char data[SMALL_CHECKPOINT + 1];

	memset(data, 'd', sizeof(data));
	assert_i64(fx->o.config.max_checkpoint, SMALL_CHECKPOINT);
	r = make_checkpoint(&fx->o, w.id, "s", "", 0);
	assert_rc(step_writer_open(&fx->o, &r, true, &wr), 0);
	assert_rc(step_writer_write(&fx->o, wr, 0, data, SMALL_CHECKPOINT + 1,
				    false), -EFBIG);
	assert_i64(step_writer_size(wr), 0);
	assert_rc(step_writer_write(&fx->o, wr, 0, data, SMALL_CHECKPOINT, false),
		  0);
	assert_rc(step_writer_write(&fx->o, wr, 0, data, 1, true), -EFBIG);
	assert_rc(step_writer_write(&fx->o, wr, SMALL_CHECKPOINT, data, 1, false),
		  -EFBIG);
	assert_rc(step_writer_write(&fx->o, wr, -1, data, 1, false), -EFBIG);
	assert_rc(step_writer_truncate(&fx->o, wr, SMALL_CHECKPOINT + 1), -EFBIG);
	assert_rc(step_writer_truncate(&fx->o, wr, -1), -EFBIG);
	assert_i64(step_writer_size(wr), SMALL_CHECKPOINT);
	assert_rc(step_writer_commit(&fx->o, wr, &user), 0);
	step_writer_close(wr);
	assert_step_content(fx, r.id, data, SMALL_CHECKPOINT);
	assert_rc(step_truncate(&fx->o, r.id, SMALL_CHECKPOINT + 1, &user),
		  -EFBIG);
	assert_step_content(fx, r.id, data, SMALL_CHECKPOINT);
}

static void test_writer_efbig_huge_offset(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);
	struct step_writer *wr = NULL;
	struct step_row r;
	int64_t size;
	int rc;

	/* An offset near the end of off_t: EFBIG, not an overflow. */
	r = make_checkpoint(&fx->o, w.id, "s", "", 0);
	assert_rc(step_writer_open(&fx->o, &r, true, &wr), 0);
	rc = step_writer_write(&fx->o, wr, INT64_MAX - 2, S("0123456789"), false);
	size = step_writer_size(wr);
	step_writer_close(wr);
	assert_rc(rc, -EFBIG);
	assert_i64(size, 0);
}

static void test_writer_stale_after_reset(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);
	struct step_writer *wr = NULL, *late = NULL;
	struct step_row r, fresh;
	int events;

	assert_rc(set_fp(fx, w.id, "v1"), 0);
	r = make_checkpoint(&fx->o, w.id, "s", S("v1 data"));
	assert_rc(step_writer_open(&fx->o, &r, false, &wr), 0);
	assert_rc(step_writer_write(&fx->o, wr, 0, S("V1"), false), 0);
	assert_rc(set_fp(fx, w.id, "v2"), 0);
	events = events_count(fx->st, w.id, NULL);
	/* Once the fingerprint has moved on, the writer is fenced. */
	assert_rc(step_writer_write(&fx->o, wr, 0, S("x"), false), -ESTALE);
	assert_rc(step_writer_truncate(&fx->o, wr, 0), -ESTALE);
	assert_rc(step_writer_commit(&fx->o, wr, &user), -ESTALE);
	step_writer_close(wr);
	assert_false(visible(fx, w.id, "s"));
	assert_int_equal(events_count(fx->st, w.id, NULL), events);
	/* Nor can the old checkpoint be opened or touched. */
	assert_rc(step_writer_open(&fx->o, &r, false, &late), -ESTALE);
	assert_null(late);
	assert_rc(step_set_times(&fx->o, r.id, &(int64_t){ 5 }, NULL), -ESTALE);
	assert_rc(step_truncate(&fx->o, r.id, 0, &user), -ESTALE);
	/* The new one of that name is independent. */
	fresh = make_checkpoint(&fx->o, w.id, "s", S("v2 data"));
	assert_true(fresh.id != r.id);
	assert_step_content(fx, fresh.id, S("v2 data"));
}

static void test_writer_of_removed_checkpoint(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);
	struct step_writer *wr = NULL;
	struct step_row r = make_checkpoint(&fx->o, w.id, "s", S("x")), got;

	assert_rc(step_writer_open(&fx->o, &r, false, &wr), 0);
	assert_rc(step_remove(&fx->o, w.id, S("s"), &user), 0);
	assert_rc(step_writer_write(&fx->o, wr, 0, S("y"), false), 0);
	/* Like a write to an unlinked file: it succeeds and goes nowhere. */
	assert_rc(step_writer_commit(&fx->o, wr, &user), 0);
	step_writer_close(wr);
	assert_false(visible(fx, w.id, "s"));
	assert_rc(step_get(&fx->o, r.id, &got), -ESTALE);
}

/* Renamed while open: the commit lands under the name it has now. */
static void test_writer_of_renamed_checkpoint(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);
	struct step_writer *wr = NULL;
	struct step_row r = make_checkpoint(&fx->o, w.id, "s.part", S("old")), got;
	char *ev;

	assert_rc(step_writer_open(&fx->o, &r, true, &wr), 0);
	assert_rc(step_writer_write(&fx->o, wr, 0, S("new"), false), 0);
	assert_rc(step_rename(&fx->o, w.id, S("s.part"), S("s"), false, &user), 0);
	assert_rc(step_writer_commit(&fx->o, wr, &user), 0);
	step_writer_close(wr);
	assert_rc(step_lookup(&fx->o, w.id, S("s"), &got), 0);
	assert_i64(got.id, r.id);
	assert_step_content(fx, got.id, S("new"));
	assert_false(visible(fx, w.id, "s.part"));
	ev = event_last(fx->st, w.id, "checkpoint");
	assert_non_null(ev);
	assert_contains(ev, "\"step\":\"s\"");
	assert_contains(ev, "\"size\":3");
	free(ev);
}

/*
 * Two writers of one new name: the first commit makes the checkpoint,
 * the second replaces its content; one checkpoint, never two.
 */
static void test_two_writers_of_a_new_name(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);
	struct step_writer *a = NULL, *b = NULL;
	struct step_row ra, rb, got, rows[4];
	int n;

	assert_rc(step_create(&fx->o, w.id, S("s"), false, &user, &ra), 0);
	assert_rc(step_create(&fx->o, w.id, S("s"), false, &user, &rb), 0);
	assert_i64(ra.id, 0);
	assert_rc(step_writer_open(&fx->o, &ra, true, &a), 0);
	assert_rc(step_writer_open(&fx->o, &rb, true, &b), 0);
	assert_rc(step_writer_write(&fx->o, a, 0, S("first"), false), 0);
	assert_rc(step_writer_write(&fx->o, b, 0, S("second"), false), 0);
	assert_rc(step_writer_commit(&fx->o, a, &user), 0);
	assert_rc(step_writer_commit(&fx->o, b, &user), 0);
	assert_true(step_writer_id(a) != 0);
	assert_i64(step_writer_id(b), step_writer_id(a));
	step_writer_close(a);
	step_writer_close(b);
	assert_rc(step_lookup(&fx->o, w.id, S("s"), &got), 0);
	assert_step_content(fx, got.id, S("second"));
	assert_rc(step_list(&fx->o, w.id, 0, rows, 4, &n), 0);
	assert_int_equal(n, 1);
}

/* A new checkpoint whose workflow went while open: nothing is made. */
static void test_writer_of_removed_workflow(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "gone", NULL), got;
	struct step_writer *wr = NULL;
	struct step_row r;

	assert_rc(step_create(&fx->o, w.id, S("s"), false, &user, &r), 0);
	assert_rc(step_writer_open(&fx->o, &r, true, &wr), 0);
	assert_rc(step_writer_write(&fx->o, wr, 0, S("data"), false), 0);
	assert_rc(workflow_remove(&fx->o, S("gone"), &user), 0);
	assert_rc(step_writer_commit(&fx->o, wr, &user), 0);
	assert_i64(step_writer_id(wr), 0);
	step_writer_close(wr);
	assert_rc(workflow_lookup(&fx->o, S("gone"), &got), -ENOENT);
	/* A workflow of that name made again holds nothing of it. */
	w = make_wf(fx, "gone", NULL);
	assert_false(visible(fx, w.id, "s"));
}

static void test_remove(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);
	struct step_row r = make_checkpoint(&fx->o, w.id, "s", S("x")), got;
	char *ev;

	assert_rc(step_remove(&fx->o, w.id, S("s"), &other), 0);
	assert_false(visible(fx, w.id, "s"));
	assert_rc(step_get(&fx->o, r.id, &got), -ESTALE);
	assert_rc(step_remove(&fx->o, w.id, S("s"), &other), -ENOENT);
	assert_rc(step_remove(&fx->o, w.id, S("never"), &other), -ENOENT);
	assert_rc(step_remove(&fx->o, w.id, S("a/b"), &other), -EINVAL);
	assert_rc(step_remove(&fx->o, w.id + 1, S("s"), &other), -ENOENT);
	ev = event_last(fx->st, w.id, "remove");
	assert_non_null(ev);
	assert_contains(ev, "\"step\":\"s\"");
	free(ev);
	/* An invalidated checkpoint is not there to remove. */
	assert_rc(set_fp(fx, w.id, "v1"), 0);
	make_checkpoint(&fx->o, w.id, "old", S("x"));
	assert_rc(set_fp(fx, w.id, "v2"), 0);
	assert_rc(step_remove(&fx->o, w.id, S("old"), &user), -ENOENT);
}

static void test_rename(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);
	struct step_row part = make_checkpoint(&fx->o, w.id, "extract.part",
					       S("rows"));
	struct step_row got;
	char *ev;

	/* The safe idiom: write S.part, rename it into place. */
	assert_rc(step_rename(&fx->o, w.id, S("extract.part"), S("extract"),
			      false, &user), 0);
	assert_false(visible(fx, w.id, "extract.part"));
	assert_rc(step_lookup(&fx->o, w.id, S("extract"), &got), 0);
	assert_i64(got.id, part.id);
	assert_step_content(fx, got.id, S("rows"));
	ev = event_last(fx->st, w.id, "rename");
	assert_contains(ev, "\"step\":\"extract\"");
	assert_contains(ev, "\"from\":\"extract.part\"");
	free(ev);

	/* Onto an existing one: replaced, unless NOREPLACE. */
	part = make_checkpoint(&fx->o, w.id, "extract.part", S("rows v2"));
	assert_rc(step_rename(&fx->o, w.id, S("extract.part"), S("extract"),
			      true, &user), -EEXIST);
	assert_step_content(fx, got.id, S("rows"));
	assert_true(visible(fx, w.id, "extract.part"));
	assert_rc(step_rename(&fx->o, w.id, S("extract.part"), S("extract"),
			      false, &user), 0);
	assert_rc(step_lookup(&fx->o, w.id, S("extract"), &got), 0);
	assert_i64(got.id, part.id);
	assert_step_content(fx, got.id, S("rows v2"));
	assert_false(visible(fx, w.id, "extract.part"));

	/* Onto itself: nothing happens. */
	assert_rc(step_rename(&fx->o, w.id, S("extract"), S("extract"), false,
			      &user), 0);
	assert_rc(step_rename(&fx->o, w.id, S("extract"), S("extract"), true,
			      &user), 0);
	assert_true(visible(fx, w.id, "extract"));
	/* Errors. */
	assert_rc(step_rename(&fx->o, w.id, S("none"), S("x"), false, &user),
		  -ENOENT);
	assert_rc(step_rename(&fx->o, w.id, S("extract"), S("a/b"), false,
			      &user), -EINVAL);
	assert_rc(step_rename(&fx->o, w.id, S("extract"), S(".."), false, &user),
		  -EINVAL);
	assert_rc(step_rename(&fx->o, w.id, S("extract"), "", 0, false, &user),
		  -EINVAL);
	assert_true(visible(fx, w.id, "extract"));
}

static void test_set_mtime_and_truncate(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);
	struct step_row r = make_checkpoint(&fx->o, w.id, "s", S("hello")), got;

	assert_rc(step_set_times(&fx->o, r.id, &(int64_t){ 123456789 }, NULL), 0);
	assert_rc(step_get(&fx->o, r.id, &got), 0);
	assert_i64(got.mtime_ns, 123456789);
	assert_step_content(fx, r.id, S("hello"));
	assert_rc(step_set_times(&fx->o, r.id + 50, &(int64_t){ 1 }, NULL), -ESTALE);

	assert_rc(step_truncate(&fx->o, r.id, 3, &user), 0);
	assert_step_content(fx, r.id, S("hel"));
	assert_rc(step_truncate(&fx->o, r.id, 5, &user), 0);
	assert_step_content(fx, r.id, "hel\0\0", 5);
	assert_rc(step_truncate(&fx->o, r.id, 0, &user), 0);
	assert_step_content(fx, r.id, "", 0);
	assert_rc(step_get(&fx->o, r.id, &got), 0);
	assert_i64(got.size, 0);
}

static void test_reader_sees_one_version(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx, "job", NULL);
	struct step_row r, pinned;
	struct step_writer *wr = NULL;
	int64_t purged = 0;
	char buf[32];
	size_t got;

	assert_rc(set_fp(fx, w.id, "v1"), 0);
	r = make_checkpoint(&fx->o, w.id, "s", S("version one"));
	assert_rc(step_get_pinned(&fx->o, r.id, &pinned), 0);
	assert_i64(pinned.size, 11);
	/* Rewritten... */
	assert_rc(step_writer_open(&fx->o, &r, true, &wr), 0);
	assert_rc(step_writer_write(&fx->o, wr, 0, S("two"), false), 0);
	assert_rc(step_writer_commit(&fx->o, wr, &user), 0);
	step_writer_close(wr);
	assert_step_content(fx, r.id, S("two"));
	/* ...invalidated and purged: the reader still reads its version. */
	assert_rc(set_fp(fx, w.id, "v2"), 0);
	assert_rc(step_purge(&fx->o, 10, &purged), 0);
	assert_true(purged >= 1);
	/* Purged to the end: "version one", pinned, is still there. */
	while (purged > 0)
		assert_rc(step_purge(&fx->o, 10, &purged), 0);
	assert_rc(store_content_read(fx->st, pinned.content, pinned.size, 0, buf,
				     sizeof(buf), &got), 0);
	assert_int_equal(got, 11);
	assert_memory_equal(buf, "version one", 11);
	store_unpin(fx->st, pinned.content);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
#define T_SMALL(f) cmocka_unit_test_setup_teardown(f, fx_setup_small, fx_teardown)
	const struct CMUnitTest tests[] = {
		T(test_fingerprint_set),
		T(test_fingerprint_same_value_is_a_no_op),
		T(test_fingerprint_bad_values),
		T(test_reset_invalidates),
		T(test_unset_under_reset_invalidates),
		T(test_reuse_keeps_checkpoints),
		T(test_raise),
		T(test_held_input),
		T(test_policy_change_applies_to_next_value),
		T(test_create_and_lookup),
		T(test_create_in_missing_workflow),
		T(test_list_cursor),
		T(test_writer_commit),
		T(test_two_writers_whole_content),
		T(test_writer_large_content),
		T_SMALL(test_writer_efbig),
		T(test_writer_efbig_huge_offset),
		T(test_writer_stale_after_reset),
		T(test_writer_of_removed_checkpoint),
		T(test_writer_of_renamed_checkpoint),
		T(test_two_writers_of_a_new_name),
		T(test_writer_of_removed_workflow),
		T(test_remove),
		T(test_rename),
		T(test_set_mtime_and_truncate),
		T(test_reader_sees_one_version),
	};

	return cmocka_run_group_tests_name("step", tests, NULL, NULL);
}
