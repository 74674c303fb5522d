/*
 * test_file.c - file.h: an open file without FUSE.  Writes are checked as
 * they arrive and kept only when they pass; a commit happens at flush and
 * only with new data; a write refused half way poisons the file; the last
 * close of an unfinalized claim abandons it; a line of input.fingerprint
 * is set at its write and held until the last close.
 */
#include <fcntl.h>

#include "unit.h"

#include "file.h"
#include "key.h"
#include "policy.h"
#include "step.h"
#include "workflow.h"

#define SMALL_RESULT 16

static int fx_setup_small(void **state)
{
	return fx_setup_with(state, SMALL_RESULT);
}

static struct wf_row make_wf(struct fixture *fx)
{
	struct wf_row w;

	assert_rc(workflow_create(&fx->o, S("job"), 0755, &user, &w), 0);
	return w;
}

/* The file of a fresh claim on key k, as the claiming open makes it. */
static struct file *claim_file(struct fixture *fx, int64_t wf, const char *k,
			       struct key_row *row)
{
	struct file *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_rc(key_claim(&fx->o, wf, k, strlen(k), &user, row, NULL), 0);
	file_init(f, FILE_KEY, wf, O_WRONLY);
	f->generation = row->generation;
	f->claimed = true;
	memcpy(f->name, k, strlen(k));
	f->name_len = strlen(k);
	return f;
}

static void done_with(struct fixture *fx, struct file *f)
{
	file_release(&fx->o, f, &user);
	file_fini(f);
	free(f);
}

static enum key_status status_of(struct fixture *fx, int64_t wf, const char *k)
{
	struct key_row r;
	int rc = key_lookup(&fx->o, wf, k, strlen(k), &r, NULL);

	return rc == -ENOENT ? KEY_VACANT : r.status;
}

static void test_key_written_in_pieces(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx);
	struct key_row k;
	struct file *f = claim_file(fx, w.id, "k", &k);

	assert_rc(file_write(&fx->o, f, S("succ"), 0, &user), 0);
	assert_rc(file_write(&fx->o, f, S("eeded\nthe result"), 4, &user), 0);
	/* A piece that breaks the status line is refused, and not kept. */
	assert_rc(file_write(&fx->o, f, S("x"), 0, &user), -EINVAL);
	assert_int_equal(f->len, 20);
	assert_int_equal(status_of(fx, w.id, "k"), KEY_IN_FLIGHT);
	assert_rc(file_commit(&fx->o, f, &user), 0);
	assert_true(f->settled);
	assert_int_equal(status_of(fx, w.id, "k"), KEY_SUCCEEDED);
	/* A flush with nothing new commits nothing. */
	assert_rc(file_commit(&fx->o, f, &user), 0);
	done_with(fx, f);
	assert_int_equal(status_of(fx, w.id, "k"), KEY_SUCCEEDED);
}

static void test_garbage_and_stale(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx);
	struct key_row k;
	struct file *f = claim_file(fx, w.id, "k", &k);
	char line[64];

	assert_rc(file_write(&fx->o, f, S("done\n"), 0, &user), -EINVAL);
	assert_int_equal(f->len, 0);
	snprintf(line, sizeof(line), "succeeded %lld\n", (long long)k.generation + 1);
	assert_rc(file_write(&fx->o, f, line, strlen(line), 0, &user), -ESTALE);
	/* Through a handle of the generation: fine. */
	snprintf(line, sizeof(line), "succeeded %lld\n", (long long)k.generation);
	assert_rc(file_write(&fx->o, f, line, strlen(line), 0, &user), 0);
	assert_rc(file_commit(&fx->o, f, &user), 0);
	done_with(fx, f);
}

static void test_too_big_poisons(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx);
	struct key_row k;
	struct file *f = claim_file(fx, w.id, "k", &k);

	assert_rc(file_write(&fx->o, f, S("succeeded\n0123456789"), 0, &user), 0);
	/* The kernel's next piece of the same write(2): past max_result. */
	assert_rc(file_write(&fx->o, f, S("0123456789"), 20, &user), -EFBIG);
	assert_rc(file_commit(&fx->o, f, &user), -EFBIG);
	assert_false(f->settled);
	assert_int_equal(status_of(fx, w.id, "k"), KEY_IN_FLIGHT);
	/* Its last close abandons the claim: the key is free at once. */
	done_with(fx, f);
	assert_int_equal(status_of(fx, w.id, "k"), KEY_VACANT);
}

static void test_closed_unfinalized_is_abandoned(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx);
	struct key_row k, again;
	struct file *f = claim_file(fx, w.id, "k", &k);

	done_with(fx, f);
	assert_int_equal(status_of(fx, w.id, "k"), KEY_VACANT);
	assert_rc(key_claim(&fx->o, w.id, S("k"), &user, &again, NULL), 0);
	assert_i64(again.attempt, 2);
	assert_i64(again.previous, k.generation);
	/* A detached claim outlives its file. */
	f = claim_file(fx, w.id, "d", &k);
	assert_rc(file_write(&fx->o, f, S("detach"), 0, &user), 0);
	assert_rc(file_commit(&fx->o, f, &user), 0);
	done_with(fx, f);
	assert_int_equal(status_of(fx, w.id, "d"), KEY_IN_FLIGHT);
}

static void test_policy_value(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx);
	struct file f = { 0 };

	file_init(&f, FILE_POLICY, w.id, O_WRONLY);
	f.field = POLICY_DEDUP_ON;
	assert_rc(file_write(&fx->o, &f, S("an"), 0, &user), 0);	/* may become any */
	assert_rc(file_write(&fx->o, &f, S("yway\n"), 2, &user), -EINVAL);
	assert_rc(file_write(&fx->o, &f, S("y\n"), 2, &user), 0);
	assert_rc(file_commit(&fx->o, &f, &user), 0);
	assert_rc(workflow_get(&fx->o, w.id, &w), 0);
	assert_int_equal(w.policy.dedup_on, DEDUP_ANY);
	file_release(&fx->o, &f, &user);
	file_fini(&f);
}

static void test_fingerprint_line_is_set_and_held(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx);
	struct file f = { 0 }, g = { 0 };

	file_init(&f, FILE_FINGERPRINT, w.id, O_WRONLY | O_TRUNC);
	file_init(&g, FILE_FINGERPRINT, w.id, O_WRONLY | O_TRUNC);
	assert_rc(file_write(&fx->o, &f, S("A\n"), 0, &user), 0);
	assert_rc(workflow_get(&fx->o, w.id, &w), 0);
	assert_int_equal(w.fingerprint_len, 1);		/* set by the write */
	assert_true(f.input_hold != 0);
	assert_rc(file_write(&fx->o, &g, S("B\n"), 0, &other), -EBUSY);
	file_release(&fx->o, &f, &user);
	assert_i64(f.input_hold, 0);
	assert_rc(file_write(&fx->o, &g, S("B\n"), 0, &other), 0);
	/* Without a newline: set at the commit. */
	file_release(&fx->o, &g, &other);
	file_fini(&g);
	memset(&g, 0, sizeof(g));
	file_init(&g, FILE_FINGERPRINT, w.id, O_WRONLY | O_TRUNC);
	assert_rc(file_write(&fx->o, &g, S("C"), 0, &other), 0);
	assert_rc(workflow_get(&fx->o, w.id, &w), 0);
	assert_memory_equal(w.fingerprint, "B", 1);
	assert_rc(file_commit(&fx->o, &g, &other), 0);
	assert_rc(workflow_get(&fx->o, w.id, &w), 0);
	assert_memory_equal(w.fingerprint, "C", 1);
	file_release(&fx->o, &g, &other);
	file_fini(&g);
	file_fini(&f);
}

static void test_read_snapshot(void **state)
{
	struct fixture *fx = *state;
	struct file f = { 0 };
	char buf[16], *snap = strdup("in_flight 7\n");
	size_t got;

	(void)fx;
	file_init(&f, FILE_KEY, 1, O_RDONLY);
	file_set_snapshot(&f, snap, strlen(snap));
	assert_rc(file_read(&f, 3, buf, sizeof(buf), &got), 0);
	assert_int_equal(got, 9);
	assert_memory_equal(buf, "flight 7\n", 9);
	assert_rc(file_read(&f, -1, buf, sizeof(buf), &got), -EINVAL);
	assert_rc(file_write(&fx->o, &f, S("x"), 0, &user), -EBADF);
	file_fini(&f);
}

static void test_opens(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx), w2;
	struct file c = { 0 }, r = { 0 }, wt = { 0 }, v = { 0 };
	struct key_row k;
	char buf[64];
	size_t got;

	file_init(&c, FILE_KEY, w.id, O_WRONLY | O_CREAT | O_EXCL);
	assert_rc(file_claim(&fx->o, &c, w.id, S("k"), &user, &k, &w2), 0);
	assert_true(c.claimed);
	assert_rc(file_read(&c, 0, buf, sizeof(buf), &got), 0);
	assert_memory_equal(buf, "in_flight ", 10);
	/* wait/k while in flight: a file whose reads wait. */
	file_init(&wt, FILE_WAIT, w.id, O_RDONLY);
	assert_rc(file_open_wait(&fx->o, &wt, k.generation, &user), 0);
	assert_int_equal(wt.kind, FILE_WAIT);
	file_fini(&wt);
	assert_rc(file_write(&fx->o, &c, S("succeeded\nok"), 0, &user), 0);
	assert_rc(file_commit(&fx->o, &c, &user), 0);
	file_release(&fx->o, &c, &user);
	file_fini(&c);
	/* Terminal: readers see the result; writers are refused. */
	file_init(&r, FILE_KEY, 0, O_WRONLY);
	assert_rc(file_open_key(&fx->o, &r, k.generation, &user), -EACCES);
	file_fini(&r);
	memset(&r, 0, sizeof(r));
	file_init(&r, FILE_KEY, 0, O_RDONLY);
	assert_rc(file_open_key(&fx->o, &r, k.generation, &user), 0);
	assert_rc(file_read(&r, 0, buf, sizeof(buf), &got), 0);
	assert_true(got > 3 && memcmp(buf + got - 3, "\nok", 3) == 0);
	file_fini(&r);
	memset(&wt, 0, sizeof(wt));
	file_init(&wt, FILE_WAIT, w.id, O_RDONLY);
	assert_rc(file_open_wait(&fx->o, &wt, k.generation, &user), 0);
	assert_int_equal(wt.kind, FILE_KEY);		/* ended: the key's reader */
	file_fini(&wt);
	memset(&wt, 0, sizeof(wt));
	file_init(&wt, FILE_WAIT, w.id, O_RDONLY);
	assert_rc(file_open_wait(&fx->o, &wt, k.generation + 100, &user), -ENOENT);
	file_fini(&wt);
	/* A value file reads as its value. */
	file_init(&v, FILE_POLICY, w.id, O_RDONLY);
	v.field = POLICY_ON_INPUT_CHANGE;
	assert_rc(file_open_value(&v, &w), 0);
	assert_rc(file_read(&v, 0, buf, sizeof(buf), &got), 0);
	assert_memory_equal(buf, "reset\n", 6);
	file_fini(&v);
}

/* A writer of an existing key, fenced after an adoption: the event says so. */
static void test_fenced_writer_is_logged(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx);
	struct file r = { 0 };
	struct key_row k, adopted;
	char *ev;
	size_t len;

	assert_rc(key_claim(&fx->o, w.id, S("k"), &user, &k, NULL), 0);
	file_init(&r, FILE_KEY, 0, O_WRONLY);
	assert_rc(file_open_key(&fx->o, &r, k.generation, &user), 0);
	assert_i64(r.wf, w.id);
	fx->now += 86400 * 1000 + 1;		/* the lease passes */
	assert_rc(key_claim(&fx->o, w.id, S("k"), &other, &adopted, NULL), 0);
	assert_rc(file_write(&fx->o, &r, S("succeeded\n"), 0, &user), -ESTALE);
	ev = events_of(fx->st, w.id, &len);
	assert_non_null(strstr(ev, "\"event\":\"fenced\""));
	free(ev);
	file_fini(&r);
}

/* Waiters of one claim: the first reads the key, the rest share it. */
static void test_wait_ended(void **state)
{
	struct fixture *fx = *state;
	struct wf_row w = make_wf(fx);
	struct file_ended cache = { .generation = 0 };
	struct file a = { 0 }, b = { 0 };
	struct key_row k;
	char buf[32];
	size_t got;

	pthread_mutex_init(&cache.lock, NULL);
	assert_rc(key_claim(&fx->o, w.id, S("k"), &user, &k, NULL), 0);
	file_init(&a, FILE_WAIT, w.id, O_RDONLY);
	file_init(&b, FILE_WAIT, w.id, O_RDONLY);
	assert_rc(file_open_wait(&fx->o, &a, k.generation, &user), 0);
	assert_rc(file_open_wait(&fx->o, &b, k.generation, &user), 0);
	assert_rc(key_finalize(&fx->o, k.generation, k.name, k.name_len, S("succeeded\nr"), &user), 0);
	assert_rc(file_wait_ended(&fx->o, &a, &cache), 0);
	assert_i64(cache.generation, k.generation);
	assert_rc(file_wait_ended(&fx->o, &b, &cache), 0);
	for (struct file *f = &a; f; f = f == &a ? &b : NULL) {
		assert_int_equal(f->kind, FILE_KEY);
		assert_rc(file_read(f, 0, buf, sizeof(buf), &got), 0);
		assert_true(got > 2 && memcmp(buf + got - 2, "\nr", 2) == 0);
	}
	file_fini(&a);
	file_fini(&b);
	/* A claim that ended free: ENOENT, claim it. */
	assert_rc(key_claim(&fx->o, w.id, S("j"), &user, &k, NULL), 0);
	memset(&a, 0, sizeof(a));
	file_init(&a, FILE_WAIT, w.id, O_RDONLY);
	assert_rc(file_open_wait(&fx->o, &a, k.generation, &user), 0);
	assert_rc(key_finalize(&fx->o, k.generation, k.name, k.name_len, S("failed\n"), &user), 0);
	assert_rc(file_wait_ended(&fx->o, &a, &cache), -ENOENT);
	file_fini(&a);
	pthread_mutex_destroy(&cache.lock);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_key_written_in_pieces, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_garbage_and_stale, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_too_big_poisons, fx_setup_small, fx_teardown),
		cmocka_unit_test_setup_teardown(test_closed_unfinalized_is_abandoned, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_policy_value, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_fingerprint_line_is_set_and_held, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_read_snapshot, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_opens, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_fenced_writer_is_logged, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_wait_ended, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
