/*
 * test_workflow.c - workflow.h: mkdir, lookup, rmdir, rename, setattr
 * and the policy files of a workflow.
 */
#include "unit.h"

#include "key.h"
#include "workflow.h"

static struct wf_row create(struct fixture *fx, const char *name, size_t len)
{
	struct wf_row w;

	assert_rc(workflow_create(&fx->o, name, len, 0755, &user, &w), 0);
	return w;
}

static void claim(struct fixture *fx, int64_t wf, const char *name,
		  struct key_row *k)
{
	assert_rc(key_claim(&fx->o, wf, name, strlen(name), &user, k, NULL), 0);
}

/* The workflow's row as it is in the store now. */
static struct wf_row reread(struct fixture *fx, int64_t id)
{
	struct wf_row w;

	assert_rc(workflow_get(&fx->o, id, &w), 0);
	return w;
}

/* ---- create and lookup ------------------------------------------------- */

static void test_create(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w, got;

	fx->now = T0_MS + 123;
	assert_rc(workflow_create(&fx->o, S("nightly-etl"), 040755, &user, &w), 0);
	assert_true(w.id > 0);
	assert_string_equal(w.name, "nightly-etl");
	assert_int_equal(w.name_len, 11);
	assert_int_equal(w.uid, user.uid);
	assert_int_equal(w.gid, user.gid);
	assert_int_equal(w.mode, 0755);		/* permission bits only */
	assert_i64(w.ctime_ns, (T0_MS + 123) * 1000000);
	assert_i64(w.mtime_ns, (T0_MS + 123) * 1000000);
	assert_int_equal(w.policy.on_input_change, ON_INPUT_RESET);
	assert_int_equal(w.policy.dedup_on, DEDUP_SUCCESS);
	assert_i64(w.policy.in_flight_ttl, 86400);
	assert_i64(w.policy.retention, 2592000);
	assert_int_equal(w.fingerprint_len, 0);

	assert_rc(workflow_lookup(&fx->o, S("nightly-etl"), &got), 0);
	assert_i64(got.id, w.id);
	assert_rc(workflow_get(&fx->o, w.id, &got), 0);
	assert_string_equal(got.name, "nightly-etl");
	assert_int_equal(events_count(fx->st, w.id, "create"), 1);
	/* Events are read through the workflow row's size. */
	assert_true(got.events_size > 0);
}

static void test_create_exists(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, S("job")), again, list[4];
	int n;

	assert_rc(workflow_create(&fx->o, S("job"), 0700, &other, &again),
		  -EEXIST);
	/* Nothing changed: the first one stays, owned by its creator. */
	again = reread(fx, w.id);
	assert_int_equal(again.uid, user.uid);
	assert_int_equal(again.mode, 0755);
	assert_rc(workflow_list(&fx->o, 0, list, 4, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(events_count(fx->st, w.id, "create"), 1);
}

static void test_create_bad_names(void **state)
{
	struct fixture *fx = *state;
	char long_name[257];
	struct wf_row w, list[4];
	int n;

	assert_rc(workflow_create(&fx->o, S(".stats"), 0755, &user, &w), -EINVAL);
	assert_rc(workflow_create(&fx->o, S(".hidden"), 0755, &user, &w), -EINVAL);
	assert_rc(workflow_create(&fx->o, S("."), 0755, &user, &w), -EINVAL);
	assert_rc(workflow_create(&fx->o, S(".."), 0755, &user, &w), -EINVAL);
	assert_rc(workflow_create(&fx->o, "", 0, 0755, &user, &w), -EINVAL);
	assert_rc(workflow_create(&fx->o, S("a/b"), 0755, &user, &w), -EINVAL);
	assert_rc(workflow_create(&fx->o, "a\0b", 3, 0755, &user, &w), -EINVAL);
	memset(long_name, 'w', sizeof(long_name));
	assert_rc(workflow_create(&fx->o, long_name, 256, 0755, &user, &w),
		  -ENAMETOOLONG);
	assert_rc(workflow_list(&fx->o, 0, list, 4, &n), 0);
	assert_int_equal(n, 0);
	/* 255 bytes is a name. */
	assert_rc(workflow_create(&fx->o, long_name, 255, 0755, &user, &w), 0);
	assert_int_equal(w.name_len, 255);
	assert_rc(workflow_lookup(&fx->o, long_name, 255, &w), 0);
	assert_rc(workflow_lookup(&fx->o, long_name, 256, &w), -ENAMETOOLONG);
	assert_rc(workflow_lookup(&fx->o, long_name, 254, &w), -ENOENT);
}

static void test_lookup(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, "caf\xc3\xa9", 5), raw, got;

	raw = create(fx, "\xff\xfe", 2);
	assert_rc(workflow_lookup(&fx->o, "caf\xc3\xa9", 5, &got), 0);
	assert_i64(got.id, w.id);
	assert_rc(workflow_lookup(&fx->o, "\xff\xfe", 2, &got), 0);
	assert_i64(got.id, raw.id);
	assert_rc(workflow_lookup(&fx->o, S("cafe"), &got), -ENOENT);
	assert_rc(workflow_lookup(&fx->o, S("CAF\xc3\xa9"), &got), -ENOENT);
	assert_rc(workflow_lookup(&fx->o, S(".stats"), &got), -ENOENT);
	assert_rc(workflow_lookup(&fx->o, S("a/b"), &got), -EINVAL);
	assert_rc(workflow_lookup(&fx->o, "", 0, &got), -EINVAL);
	assert_rc(workflow_get(&fx->o, raw.id + 1000, &got), -ENOENT);
}

static void test_list_cursor(void **state)
{
	struct fixture *fx = *state;
	struct wf_row a = create(fx, S("a")), b = create(fx, S("b"));
	struct wf_row c = create(fx, S("c")), rows[8];
	int n;

	assert_rc(workflow_list(&fx->o, 0, rows, 2, &n), 0);
	assert_int_equal(n, 2);
	assert_i64(rows[0].id, a.id);
	assert_i64(rows[1].id, b.id);
	/* Remove one already listed and one not yet, add one: the cursor
	 * neither repeats nor skips the others. */
	assert_rc(workflow_remove(&fx->o, S("a"), &user), 0);
	assert_rc(workflow_remove(&fx->o, S("c"), &user), 0);
	{
		struct wf_row d = create(fx, S("d"));

		assert_rc(workflow_list(&fx->o, rows[1].id, rows, 8, &n), 0);
		assert_int_equal(n, 1);
		assert_i64(rows[0].id, d.id);
		assert_true(d.id > c.id);
	}
}

/* ---- remove ------------------------------------------------------------ */

static void test_remove_empty(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, S("job")), got;

	assert_rc(workflow_remove(&fx->o, S("job"), &user), 0);
	assert_rc(workflow_lookup(&fx->o, S("job"), &got), -ENOENT);
	assert_rc(workflow_get(&fx->o, w.id, &got), -ENOENT);
	assert_rc(workflow_remove(&fx->o, S("job"), &user), -ENOENT);
	assert_rc(workflow_remove(&fx->o, S("a/b"), &user), -EINVAL);
	/* A new workflow of the same name is a new one: a new id. */
	got = create(fx, S("job"));
	assert_true(got.id > w.id);
	assert_int_equal(events_count(fx->st, got.id, NULL), 1);
}

static void test_remove_not_empty_with_key(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, S("job")), got;
	struct key_row k;
	bool has = false;

	claim(fx, w.id, "k", &k);
	assert_rc(workflow_has_keys(&fx->o, w.id, &has), 0);
	assert_true(has);
	assert_rc(workflow_remove(&fx->o, S("job"), &user), -ENOTEMPTY);
	assert_rc(workflow_lookup(&fx->o, S("job"), &got), 0);
	/* A terminal key keeps it non-empty too. */
	assert_rc(key_finalize(&fx->o, k.generation, k.name, k.name_len, S("succeeded\n"), &user), 0);
	assert_rc(workflow_remove(&fx->o, S("job"), &user), -ENOTEMPTY);
	/* rm keys/K, then rmdir works. */
	assert_rc(key_release(&fx->o, w.id, S("k"), &user), 0);
	assert_rc(workflow_has_keys(&fx->o, w.id, &has), 0);
	assert_false(has);
	assert_rc(workflow_remove(&fx->o, S("job"), &user), 0);
	assert_rc(workflow_lookup(&fx->o, S("job"), &got), -ENOENT);
}

static void test_remove_after_lease_expiry(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, S("job"));
	struct key_row k;
	bool has = true;

	claim(fx, w.id, "k", &k);
	assert_rc(workflow_remove(&fx->o, S("job"), &user), -ENOTEMPTY);
	/* An expired claim does not exist for lookups: the workflow is empty. */
	fx->now = k.expires_ms;
	assert_rc(workflow_has_keys(&fx->o, w.id, &has), 0);
	assert_false(has);
	assert_rc(workflow_remove(&fx->o, S("job"), &user), 0);
}

static void test_remove_failed_key_under_success(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, S("job"));
	struct key_row k;

	claim(fx, w.id, "k", &k);
	/* failed under dedup_on=success leaves a vacant row: no key. */
	assert_rc(key_finalize(&fx->o, k.generation, k.name, k.name_len, S("failed\n"), &user), 0);
	assert_rc(workflow_remove(&fx->o, S("job"), &user), 0);
}

static void test_remove_not_empty_with_checkpoint(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, S("job")), got;
	bool has = false;

	make_checkpoint(&fx->o, w.id, "extract", S("rows\n"));
	assert_rc(workflow_has_steps(&fx->o, w.id, &has), 0);
	assert_true(has);
	assert_rc(workflow_remove(&fx->o, S("job"), &user), -ENOTEMPTY);
	assert_rc(workflow_lookup(&fx->o, S("job"), &got), 0);
	/* rm steps/extract, then rmdir works. */
	assert_rc(step_remove(&fx->o, w.id, S("extract"), &user), 0);
	assert_rc(workflow_has_steps(&fx->o, w.id, &has), 0);
	assert_false(has);
	assert_rc(workflow_remove(&fx->o, S("job"), &user), 0);
}

static void test_remove_with_invalidated_checkpoints(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, S("job")), got;
	bool has = true;

	/* Checkpoints of an old fingerprint (reset) do not count. */
	assert_rc(step_set_fingerprint(&fx->o, w.id, S("v1\n"), &user, NULL), 0);
	make_checkpoint(&fx->o, w.id, "extract", S("x"));
	assert_rc(step_set_fingerprint(&fx->o, w.id, S("v2\n"), &user, NULL), 0);
	assert_rc(workflow_has_steps(&fx->o, w.id, &has), 0);
	assert_false(has);
	assert_rc(workflow_remove(&fx->o, S("job"), &user), 0);
	assert_rc(workflow_lookup(&fx->o, S("job"), &got), -ENOENT);
	/* And nothing of it is left to purge. */
	{
		int64_t n = -1;

		assert_rc(step_purge(&fx->o, 100, &n), 0);
		assert_i64(n, 0);
	}
}

/* ---- rename ------------------------------------------------------------ */

static void test_rename(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, S("old")), got;
	struct key_row k;
	char *ev;

	claim(fx, w.id, "k", &k);
	fx->now += 5000;
	assert_rc(workflow_rename(&fx->o, S("old"), S("new"), 0, &user), 0);
	assert_rc(workflow_lookup(&fx->o, S("old"), &got), -ENOENT);
	assert_rc(workflow_lookup(&fx->o, S("new"), &got), 0);
	/* The same workflow: same id, keys and all. */
	assert_i64(got.id, w.id);
	assert_i64(got.mtime_ns, fx->now * 1000000);
	assert_rc(key_lookup(&fx->o, w.id, S("k"), &k, NULL), 0);
	ev = event_last(fx->st, w.id, "rename");
	assert_non_null(ev);
	assert_contains(ev, "\"from\":\"old\"");
	free(ev);
	assert_int_equal(events_count(fx->st, w.id, "rename"), 1);
}

static void test_rename_same_name(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, S("same")), got;

	assert_rc(workflow_rename(&fx->o, S("same"), S("same"), 0, &user), 0);
	assert_rc(workflow_lookup(&fx->o, S("same"), &got), 0);
	assert_i64(got.id, w.id);
}

static void test_rename_missing_source(void **state)
{
	struct fixture *fx = *state;
	struct wf_row got;

	assert_rc(workflow_rename(&fx->o, S("ghost"), S("new"), 0, &user),
		  -ENOENT);
	assert_rc(workflow_lookup(&fx->o, S("new"), &got), -ENOENT);
}

static void test_rename_dot_names(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, S("job")), got;
	char long_name[256];

	assert_rc(workflow_rename(&fx->o, S("job"), S(".job"), 0, &user), -EINVAL);
	assert_rc(workflow_rename(&fx->o, S("job"), S(".stats"), 0, &user),
		  -EINVAL);
	assert_rc(workflow_rename(&fx->o, S("job"), S("."), 0, &user), -EINVAL);
	assert_rc(workflow_rename(&fx->o, S("job"), S(".."), 0, &user), -EINVAL);
	assert_rc(workflow_rename(&fx->o, S("job"), S("a/b"), 0, &user), -EINVAL);
	assert_rc(workflow_rename(&fx->o, S("job"), "", 0, 0, &user), -EINVAL);
	memset(long_name, 'n', sizeof(long_name));
	assert_rc(workflow_rename(&fx->o, S("job"), long_name, 256, 0, &user),
		  -ENAMETOOLONG);
	assert_rc(workflow_lookup(&fx->o, S("job"), &got), 0);
	assert_i64(got.id, w.id);
	assert_rc(workflow_rename(&fx->o, S("job"), long_name, 255, 0, &user), 0);
}

static void test_rename_exchange_is_einval(void **state)
{
	struct fixture *fx = *state;
	struct wf_row a = create(fx, S("a")), b = create(fx, S("b")), got;

	assert_rc(workflow_rename(&fx->o, S("a"), S("b"),
				  WORKFLOW_RENAME_EXCHANGE, &user), -EINVAL);
	assert_rc(workflow_rename(&fx->o, S("a"), S("new"),
				  WORKFLOW_RENAME_EXCHANGE, &user), -EINVAL);
	assert_rc(workflow_lookup(&fx->o, S("a"), &got), 0);
	assert_i64(got.id, a.id);
	assert_rc(workflow_lookup(&fx->o, S("b"), &got), 0);
	assert_i64(got.id, b.id);
	assert_rc(workflow_lookup(&fx->o, S("new"), &got), -ENOENT);
}

static void test_rename_noreplace(void **state)
{
	struct fixture *fx = *state;
	struct wf_row a = create(fx, S("a")), b = create(fx, S("b")), got;

	assert_rc(workflow_rename(&fx->o, S("a"), S("b"),
				  WORKFLOW_RENAME_NOREPLACE, &user), -EEXIST);
	assert_rc(workflow_lookup(&fx->o, S("a"), &got), 0);
	assert_i64(got.id, a.id);
	assert_rc(workflow_lookup(&fx->o, S("b"), &got), 0);
	assert_i64(got.id, b.id);
	/* NOREPLACE to a free name is a plain rename. */
	assert_rc(workflow_rename(&fx->o, S("a"), S("c"),
				  WORKFLOW_RENAME_NOREPLACE, &user), 0);
	assert_rc(workflow_lookup(&fx->o, S("c"), &got), 0);
	assert_i64(got.id, a.id);
}

static void test_rename_replaces_empty_target(void **state)
{
	struct fixture *fx = *state;
	struct wf_row a = create(fx, S("a")), b = create(fx, S("b")), got;
	struct key_row k;

	claim(fx, a.id, "k", &k);
	assert_rc(workflow_rename(&fx->o, S("a"), S("b"), 0, &user), 0);
	assert_rc(workflow_lookup(&fx->o, S("a"), &got), -ENOENT);
	assert_rc(workflow_lookup(&fx->o, S("b"), &got), 0);
	assert_i64(got.id, a.id);
	/* The replaced workflow is gone, events and all. */
	assert_rc(workflow_get(&fx->o, b.id, &got), -ENOENT);
	assert_int_equal(events_count(fx->st, b.id, NULL), 0);
	assert_rc(key_lookup(&fx->o, a.id, S("k"), &k, NULL), 0);
}

static void test_rename_onto_non_empty_target(void **state)
{
	struct fixture *fx = *state;
	struct wf_row a = create(fx, S("a")), b = create(fx, S("b")), got;
	struct key_row k;

	claim(fx, b.id, "busy", &k);
	assert_rc(workflow_rename(&fx->o, S("a"), S("b"), 0, &user), -ENOTEMPTY);
	assert_rc(workflow_lookup(&fx->o, S("a"), &got), 0);
	assert_i64(got.id, a.id);
	assert_rc(workflow_lookup(&fx->o, S("b"), &got), 0);
	assert_i64(got.id, b.id);
	assert_rc(key_lookup(&fx->o, b.id, S("busy"), &k, NULL), 0);
	assert_int_equal(events_count(fx->st, a.id, "rename"), 0);
	/* Once the target's claim is released, the rename replaces it. */
	assert_rc(key_release(&fx->o, b.id, S("busy"), &user), 0);
	assert_rc(workflow_rename(&fx->o, S("a"), S("b"), 0, &user), 0);
	assert_rc(workflow_lookup(&fx->o, S("b"), &got), 0);
	assert_i64(got.id, a.id);
}

static void test_rename_onto_target_with_checkpoint(void **state)
{
	struct fixture *fx = *state;
	struct wf_row a = create(fx, S("a")), b = create(fx, S("b")), got;

	make_checkpoint(&fx->o, b.id, "load", S("data"));
	assert_rc(workflow_rename(&fx->o, S("a"), S("b"), 0, &user), -ENOTEMPTY);
	assert_rc(workflow_lookup(&fx->o, S("b"), &got), 0);
	assert_i64(got.id, b.id);
	(void)a;
}

static void test_rename_event_non_utf8(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, "\xff", 1);

	assert_rc(workflow_rename(&fx->o, "\xff", 1, S("ok"), 0, &user), 0);
	/* Still one valid JSON line per event. */
	assert_int_equal(events_count(fx->st, w.id, "rename"), 1);
	assert_events_size(&fx->o, w.id);
}

/* ---- setattr ----------------------------------------------------------- */

static void test_setattr(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, S("job")), out;
	struct workflow_attr a = { .set_mode = true, .mode = 0100700 };

	fx->now += 1000;
	assert_rc(workflow_setattr(&fx->o, w.id, &a, &out), 0);
	assert_int_equal(out.mode, 0700);
	assert_int_equal(out.uid, user.uid);
	assert_i64(out.ctime_ns, fx->now * 1000000);
	out = reread(fx, w.id);
	assert_int_equal(out.mode, 0700);
	assert_int_equal(out.uid, user.uid);
	assert_int_equal(out.gid, user.gid);

	a = (struct workflow_attr){ .set_uid = true, .uid = 0, .set_gid = true,
				    .gid = 5, .set_mtime = true,
				    .mtime_ns = 42 };
	assert_rc(workflow_setattr(&fx->o, w.id, &a, &out), 0);
	out = reread(fx, w.id);
	assert_int_equal(out.mode, 0700);	/* not asked: unchanged */
	assert_int_equal(out.uid, 0);
	assert_int_equal(out.gid, 5);
	assert_i64(out.mtime_ns, 42);
	assert_rc(workflow_setattr(&fx->o, w.id + 99, &a, &out), -ENOENT);
}

/* ---- policy ------------------------------------------------------------ */

static void test_check_policy(void **state)
{
	(void)state;
	assert_rc(workflow_check_policy(POLICY_ON_INPUT_CHANGE, S("raise\n")), 0);
	assert_rc(workflow_check_policy(POLICY_ON_INPUT_CHANGE, S("panic\n")),
		  -EINVAL);
	assert_rc(workflow_check_policy(POLICY_DEDUP_ON, S("any")), 0);
	assert_rc(workflow_check_policy(POLICY_IN_FLIGHT_TTL, S("0")), -EINVAL);
	assert_rc(workflow_check_policy(POLICY_RETENTION, S("0")), 0);
}

static void test_set_policy(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, S("job")), got;
	char *ev;

	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_DEDUP_ON, S("any\n"),
				      &user), 0);
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_ON_INPUT_CHANGE,
				      S("raise \r\n"), &user), 0);
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_IN_FLIGHT_TTL,
				      S("60"), &user), 0);
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_RETENTION, S("0\n"),
				      &user), 0);
	got = reread(fx, w.id);
	assert_int_equal(got.policy.dedup_on, DEDUP_ANY);
	assert_int_equal(got.policy.on_input_change, ON_INPUT_RAISE);
	assert_i64(got.policy.in_flight_ttl, 60);
	assert_i64(got.policy.retention, 0);
	assert_int_equal(events_count(fx->st, w.id, "policy"), 4);
	ev = event_last(fx->st, w.id, "policy");
	assert_contains(ev, "\"policy\":\"retention\"");
	assert_contains(ev, "\"value\":\"0\"");
	free(ev);
	assert_events_size(&fx->o, w.id);

	/* The value survives a remount. */
	fx_reopen(fx);
	got = reread(fx, w.id);
	assert_int_equal(got.policy.dedup_on, DEDUP_ANY);
	assert_i64(got.policy.in_flight_ttl, 60);
}

static void test_set_policy_bad_value_changes_nothing(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, S("job")), before, after;
	int events;

	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_IN_FLIGHT_TTL,
				      S("120\n"), &user), 0);
	before = reread(fx, w.id);
	events = events_count(fx->st, w.id, NULL);
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_IN_FLIGHT_TTL,
				      S("0\n"), &user), -EINVAL);
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_IN_FLIGHT_TTL,
				      S("-5"), &user), -EINVAL);
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_IN_FLIGHT_TTL,
				      S(" 120"), &user), -EINVAL);
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_DEDUP_ON,
				      S("never"), &user), -EINVAL);
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_ON_INPUT_CHANGE,
				      S(""), &user), -EINVAL);
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_RETENTION,
				      S("1e6"), &user), -EINVAL);
	after = reread(fx, w.id);
	assert_memory_equal(&after.policy, &before.policy, sizeof(before.policy));
	assert_i64(after.ctime_ns, before.ctime_ns);
	assert_int_equal(events_count(fx->st, w.id, NULL), events);
	assert_i64(after.events_size, before.events_size);
}

static void test_set_policy_default(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, S("job")), got;
	struct policy def;

	policy_init(&def);
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_DEDUP_ON, S("any"),
				      &user), 0);
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_ON_INPUT_CHANGE,
				      S("reuse"), &user), 0);
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_IN_FLIGHT_TTL,
				      S("7"), &user), 0);
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_RETENTION, S("8"),
				      &user), 0);
	/* Unlinking a policy file (buf NULL) resets that field only. */
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_DEDUP_ON, NULL, 0,
				      &user), 0);
	got = reread(fx, w.id);
	assert_int_equal(got.policy.dedup_on, def.dedup_on);
	assert_int_equal(got.policy.on_input_change, ON_INPUT_REUSE);
	assert_i64(got.policy.in_flight_ttl, 7);
	for (int f = 0; f < POLICY_NFIELDS; f++)
		assert_rc(workflow_set_policy(&fx->o, w.id, (enum policy_field)f,
					      NULL, 0, &user), 0);
	got = reread(fx, w.id);
	assert_memory_equal(&got.policy, &def, sizeof(def));
}

static void test_set_policy_missing_workflow(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, S("job"));

	assert_rc(workflow_set_policy(&fx->o, w.id + 1, POLICY_DEDUP_ON, S("any"),
				      &user), -ENOENT);
	assert_rc(workflow_set_policy(&fx->o, w.id + 1, POLICY_DEDUP_ON, NULL, 0,
				      &user), -ENOENT);
}

static void test_policy_applies_from_next_claim(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = create(fx, S("job"));
	struct key_row k1, k2;

	claim(fx, w.id, "first", &k1);
	/* The short lease of a held claim: less than in_flight_ttl. */
	assert_i64(k1.expires_ms, fx->now + ONCE_LEASE_MS_DEFAULT);
	assert_rc(workflow_set_policy(&fx->o, w.id, POLICY_IN_FLIGHT_TTL,
				      S("4"), &user), 0);
	/* A live lease keeps its expiry... */
	assert_rc(key_lookup(&fx->o, w.id, S("first"), &k1, NULL), 0);
	assert_i64(k1.expires_ms, fx->now + ONCE_LEASE_MS_DEFAULT);
	/* ...the next claim gets the new one, in_flight_ttl being shorter. */
	claim(fx, w.id, "second", &k2);
	assert_i64(k2.expires_ms, fx->now + 4 * 1000);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
	const struct CMUnitTest tests[] = {
		T(test_create),
		T(test_create_exists),
		T(test_create_bad_names),
		T(test_lookup),
		T(test_list_cursor),
		T(test_remove_empty),
		T(test_remove_not_empty_with_key),
		T(test_remove_after_lease_expiry),
		T(test_remove_failed_key_under_success),
		T(test_remove_not_empty_with_checkpoint),
		T(test_remove_with_invalidated_checkpoints),
		T(test_rename),
		T(test_rename_same_name),
		T(test_rename_missing_source),
		T(test_rename_dot_names),
		T(test_rename_exchange_is_einval),
		T(test_rename_noreplace),
		T(test_rename_replaces_empty_target),
		T(test_rename_onto_non_empty_target),
		T(test_rename_onto_target_with_checkpoint),
		T(test_rename_event_non_utf8),
		T(test_setattr),
		T(test_check_policy),
		T(test_set_policy),
		T(test_set_policy_bad_value_changes_nothing),
		T(test_set_policy_default),
		T(test_set_policy_missing_workflow),
		T(test_policy_applies_from_next_claim),
	};

	return cmocka_run_group_tests_name("workflow", tests, NULL, NULL);
}
