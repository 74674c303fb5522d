/*
 * test_status.c - status.h: the status line a finalizer writes.
 */
#include "unit.h"

#include "status.h"

/* A parse that succeeds, with what it must give. */
static void ok(const char *buf, size_t len, bool complete,
	       enum key_status status, int64_t generation, size_t result_off)
{
	struct status_line sl;
	int rc;

	memset(&sl, 0xa5, sizeof(sl));
	rc = status_parse(buf, len, complete, &sl);
	if (rc)
		fail_msg("status_parse(\"%.*s\", complete=%d) = %d (%s)",
			 (int)len, buf, complete, rc, errname(rc));
	assert_int_equal(sl.status, status);
	assert_i64(sl.generation, generation);
	assert_int_equal(sl.result_off, result_off);
}

static void rc_is(const char *buf, size_t len, bool complete, int want)
{
	struct status_line sl;
	int rc;

	memset(&sl, 0xa5, sizeof(sl));
	rc = status_parse(buf, len, complete, &sl);
	if (rc != want)
		fail_msg("status_parse(\"%.*s\", complete=%d) = %d (%s), "
			 "expected %d (%s)", (int)len, buf, complete, rc,
			 errname(rc), want, errname(want));
}

/* Complete data: the whole of what a handle wrote. */
#define DONE_OK(lit, st, gen, off) ok(S(lit), true, (st), (gen), (off))
#define DONE_BAD(lit) rc_is(S(lit), true, -EINVAL)
/* Data that may still grow. */
#define MORE(lit) rc_is(S(lit), false, -EAGAIN)
#define MORE_BAD(lit) rc_is(S(lit), false, -EINVAL)
#define MORE_OK(lit, st, gen, off) ok(S(lit), false, (st), (gen), (off))

static void test_status_names(void **state)
{
	(void)state;
	assert_string_equal(status_name(KEY_IN_FLIGHT), "in_flight");
	assert_string_equal(status_name(KEY_SUCCEEDED), "succeeded");
	assert_string_equal(status_name(KEY_FAILED), "failed");
	assert_non_null(status_name(KEY_VACANT));
	assert_non_null(status_name((enum key_status)42));
}

static void test_bare_words(void **state)
{
	(void)state;
	DONE_OK("succeeded", KEY_SUCCEEDED, 0, 9);
	DONE_OK("failed", KEY_FAILED, 0, 6);
	DONE_OK("succeeded\n", KEY_SUCCEEDED, 0, 10);
	DONE_OK("failed\n", KEY_FAILED, 0, 7);
}

static void test_results(void **state)
{
	(void)state;
	DONE_OK("succeeded\nresult", KEY_SUCCEEDED, 0, 10);
	DONE_OK("succeeded\nline 1\nline 2\n", KEY_SUCCEEDED, 0, 10);
	DONE_OK("failed\n\n", KEY_FAILED, 0, 7);
	DONE_OK("succeeded 17\n{\"rows\": 3}\n", KEY_SUCCEEDED, 17, 13);
	/* The result is any bytes, even a status line or garbage. */
	DONE_OK("failed\nsucceeded\n\xff\x00", KEY_FAILED, 0, 7);
	/* A newline settles the line even when more may come. */
	MORE_OK("succeeded\n", KEY_SUCCEEDED, 0, 10);
	MORE_OK("succeeded 5\npartial resu", KEY_SUCCEEDED, 5, 12);
}

static void test_generation(void **state)
{
	(void)state;
	DONE_OK("succeeded 17", KEY_SUCCEEDED, 17, 12);
	DONE_OK("failed 1\n", KEY_FAILED, 1, 9);
	DONE_OK("succeeded 1234567890\n", KEY_SUCCEEDED, 1234567890, 21);
	/* 18 digits is the most. */
	DONE_OK("succeeded 999999999999999999", KEY_SUCCEEDED,
		999999999999999999LL, 28);
	DONE_BAD("succeeded 1000000000000000000");	/* 19 digits */
	DONE_BAD("succeeded 99999999999999999999999");
	DONE_BAD("succeeded 0");
	DONE_BAD("succeeded 00");
	DONE_BAD("succeeded 017");
	DONE_BAD("succeeded -1");
	DONE_BAD("succeeded +1");
	DONE_BAD("succeeded 1.0");
	DONE_BAD("succeeded 0x11");
	DONE_BAD("succeeded 17x");
	DONE_BAD("succeeded x17");
	DONE_BAD("succeeded 1 2");
	DONE_BAD("succeeded  17");	/* one space, not two */
	DONE_BAD("succeeded\t17");
	DONE_BAD("succeeded17");
	DONE_BAD("failed 17 result\n");
}

static void test_trailing_space_and_cr(void **state)
{
	(void)state;
	DONE_OK("succeeded ", KEY_SUCCEEDED, 0, 10);
	DONE_OK("succeeded   ", KEY_SUCCEEDED, 0, 12);
	DONE_OK("succeeded\r", KEY_SUCCEEDED, 0, 10);
	DONE_OK("succeeded\r\n", KEY_SUCCEEDED, 0, 11);
	DONE_OK("failed \r \r\n", KEY_FAILED, 0, 11);
	DONE_OK("succeeded 17 \r\nres", KEY_SUCCEEDED, 17, 15);
	DONE_OK("succeeded 17\r", KEY_SUCCEEDED, 17, 13);
	/* Only spaces and \r: no tabs, no other blanks. */
	DONE_BAD("succeeded\t");
	DONE_BAD("succeeded\t\n");
	DONE_BAD("succeeded\v");
	DONE_BAD("succeeded\f\n");
	/* \r and spaces only at the end, not before the generation. */
	DONE_BAD("succeeded\r17");
	DONE_BAD("succeeded \r17");
	DONE_BAD("succeeded 1\r7");
}

static void test_bad_words(void **state)
{
	(void)state;
	DONE_BAD("");
	DONE_BAD("\n");
	DONE_BAD("\r\n");
	DONE_BAD(" ");
	DONE_BAD("in_flight");
	DONE_BAD("in_flight\n");
	DONE_BAD("in_flight 17");
	DONE_BAD("vacant");
	DONE_BAD("done");
	DONE_BAD("ok");
	DONE_BAD("success");
	DONE_BAD("succeed");
	DONE_BAD("succeede");
	DONE_BAD("fail");
	DONE_BAD("Succeeded");
	DONE_BAD("SUCCEEDED\n");
	DONE_BAD("FAILED");
	DONE_BAD("succeededx");
	DONE_BAD("succeeded.");
	DONE_BAD("failedd");
	DONE_BAD(" succeeded");
	DONE_BAD("\nsucceeded");
	DONE_BAD("succeeded failed");
	DONE_BAD("succ\0eeded");
	DONE_BAD("succeeded\0\n");
	DONE_BAD("\xef\xbb\xbfsucceeded");	/* a BOM */
}

static void test_unfinished_lines(void **state)
{
	(void)state;
	/* Valid beginnings: the data may yet become a status line. */
	MORE("");
	MORE("s");
	MORE("succ");
	MORE("succeede");
	MORE("f");
	MORE("fai");
	MORE("faile");
	MORE("succeeded");
	MORE("failed");
	MORE("succeeded ");
	MORE("succeeded 1");
	MORE("succeeded 17");
	MORE("succeeded 17 ");
	MORE("succeeded 17\r");
	MORE("failed\r");
	MORE("failed \r ");
	MORE("succeeded  ");
	/* Never a status line, however it grows. */
	MORE_BAD("x");
	MORE_BAD("S");
	MORE_BAD("sx");
	MORE_BAD("in_");
	MORE_BAD("in_flight");
	MORE_BAD("done");
	MORE_BAD("succeededx");
	MORE_BAD("faileds");
	MORE_BAD("succeeded x");
	MORE_BAD("succeeded 0");
	MORE_BAD("succeeded 01");
	MORE_BAD("succeeded 1x");
	MORE_BAD("succeeded\t");
	MORE_BAD("succeeded 1000000000000000000");
	MORE_BAD("\xff");
}

/*
 * A space or \r may only follow the whole status word: "su " can never
 * become a status line, so it is not a valid beginning (status.h: only
 * "a valid beginning of a status line gives -EAGAIN").
 */
static void test_unfinished_word_then_blank(void **state)
{
	(void)state;
	MORE_BAD("su ");
	MORE_BAD("fa\r");
	MORE_BAD(" ");
	MORE_BAD("\r");
	MORE_BAD("succeede ");
}

static void test_prefix_then_complete_agree(void **state)
{
	static const char *const lines[] = {
		"succeeded", "failed", "succeeded 1", "failed 42 \r",
		"succeeded 999999999999999999",
	};

	(void)state;
	/* Every prefix of a valid line is -EAGAIN while data may grow. */
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		size_t n = strlen(lines[i]);
		struct status_line sl;

		for (size_t k = 0; k <= n; k++)
			rc_is(lines[i], k, false, -EAGAIN);
		assert_rc(status_parse(lines[i], n, true, &sl), 0);
		assert_int_equal(sl.result_off, n);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_names),
		cmocka_unit_test(test_bare_words),
		cmocka_unit_test(test_results),
		cmocka_unit_test(test_generation),
		cmocka_unit_test(test_trailing_space_and_cr),
		cmocka_unit_test(test_bad_words),
		cmocka_unit_test(test_unfinished_lines),
		cmocka_unit_test(test_unfinished_word_then_blank),
		cmocka_unit_test(test_prefix_then_complete_agree),
	};

	return cmocka_run_group_tests_name("status", tests, NULL, NULL);
}
