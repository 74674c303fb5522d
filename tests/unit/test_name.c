/*
 * test_name.c - name.h: which byte strings may name things.
 */
#include "unit.h"

#include "name.h"

static char *filled(size_t len, char c)
{
	char *p = malloc(len + 1);

	assert_non_null(p);
	memset(p, c, len);
	p[len] = '\0';
	return p;
}

static void test_empty_is_invalid(void **state)
{
	(void)state;
	assert_rc(name_check("", 0), -EINVAL);
	assert_rc(name_check("abc", 0), -EINVAL);
	assert_rc(name_check_workflow("", 0), -EINVAL);
}

static void test_plain_names(void **state)
{
	(void)state;
	assert_rc(name_check(S("a")), 0);
	assert_rc(name_check(S("2026-11-21")), 0);
	assert_rc(name_check(S("extract.part")), 0);
	assert_rc(name_check(S("with space")), 0);
	assert_rc(name_check(S("tab\there")), 0);
	assert_rc(name_check(S("new\nline")), 0);
	assert_rc(name_check(S("\\")), 0);
	assert_rc(name_check(S("\xff\xfe")), 0);	/* any bytes, not only UTF-8 */
	assert_rc(name_check(S("caf\xc3\xa9")), 0);
}

static void test_length_boundaries(void **state)
{
	char *n255 = filled(255, 'k'), *n256 = filled(256, 'k');
	char *n4096 = filled(4096, 'k');

	(void)state;
	assert_int_equal(NAME_MAX_LEN, 255);
	assert_rc(name_check(n255, 255), 0);
	assert_rc(name_check(n256, 256), -ENAMETOOLONG);
	assert_rc(name_check(n4096, 4096), -ENAMETOOLONG);
	assert_rc(name_check_workflow(n255, 255), 0);
	assert_rc(name_check_workflow(n256, 256), -ENAMETOOLONG);
	/* The length counts bytes: 127 two-byte characters and one more. */
	for (size_t i = 0; i + 1 < 255; i += 2) {
		n255[i] = '\xc3';
		n255[i + 1] = '\xa9';
	}
	assert_rc(name_check(n255, 255), 0);
	free(n255);
	free(n256);
	free(n4096);
}

static void test_length_is_the_argument(void **state)
{
	(void)state;
	/* Only len bytes count: what follows is not part of the name. */
	assert_rc(name_check("ab/", 2), 0);
	assert_rc(name_check("..x", 2), -EINVAL);
	assert_rc(name_check(".x", 1), -EINVAL);
	assert_rc(name_check("..", 3), -EINVAL);	/* includes the NUL */
}

static void test_slash_and_nul(void **state)
{
	char *n = filled(255, 'k');

	(void)state;
	assert_rc(name_check(S("/")), -EINVAL);
	assert_rc(name_check(S("a/b")), -EINVAL);
	assert_rc(name_check(S("/a")), -EINVAL);
	assert_rc(name_check(S("a/")), -EINVAL);
	assert_rc(name_check("a\0b", 3), -EINVAL);
	assert_rc(name_check("\0", 1), -EINVAL);
	assert_rc(name_check("a\0", 2), -EINVAL);
	n[254] = '/';
	assert_rc(name_check(n, 255), -EINVAL);
	n[254] = '\0';
	assert_rc(name_check(n, 255), -EINVAL);
	assert_rc(name_check_workflow(S("a/b")), -EINVAL);
	assert_rc(name_check_workflow("a\0b", 3), -EINVAL);
	free(n);
}

static void test_dot_names(void **state)
{
	(void)state;
	assert_rc(name_check(S(".")), -EINVAL);
	assert_rc(name_check(S("..")), -EINVAL);
	/* Other names with dots are names like any other, for keys and steps. */
	assert_rc(name_check(S("...")), 0);
	assert_rc(name_check(S(".hidden")), 0);
	assert_rc(name_check(S("..x")), 0);
	assert_rc(name_check(S("a.")), 0);
	assert_rc(name_check(S(". ")), 0);
}

static void test_workflow_dot_names_are_reserved(void **state)
{
	(void)state;
	assert_rc(name_check_workflow(S(".")), -EINVAL);
	assert_rc(name_check_workflow(S("..")), -EINVAL);
	assert_rc(name_check_workflow(S("...")), -EINVAL);
	assert_rc(name_check_workflow(S(".stats")), -EINVAL);
	assert_rc(name_check_workflow(S(".x")), -EINVAL);
	assert_rc(name_check_workflow(S("x.")), 0);
	assert_rc(name_check_workflow(S("a.b")), 0);
	assert_rc(name_check_workflow(S("nightly-etl")), 0);
	assert_rc(name_check_workflow(S(" .x")), 0);
}

static void test_workflow_too_long_dot_name(void **state)
{
	char *n = filled(256, 'w');

	(void)state;
	/* Longer than 255 bytes is ENAMETOOLONG, whatever the first byte. */
	n[0] = '.';
	assert_rc(name_check_workflow(n, 256), -ENAMETOOLONG);
	free(n);
}

static void test_utf8_valid(void **state)
{
	(void)state;
	assert_true(name_is_utf8("", 0));
	assert_true(name_is_utf8(S("plain ascii")));
	assert_true(name_is_utf8("a\0b", 3));			/* NUL is ASCII */
	assert_true(name_is_utf8(S("\x7f")));
	assert_true(name_is_utf8(S("\xc2\x80")));		/* U+0080 */
	assert_true(name_is_utf8(S("caf\xc3\xa9")));		/* é */
	assert_true(name_is_utf8(S("\xdf\xbf")));		/* U+07FF */
	assert_true(name_is_utf8(S("\xe0\xa0\x80")));		/* U+0800 */
	assert_true(name_is_utf8(S("\xe2\x82\xac")));		/* € */
	assert_true(name_is_utf8(S("\xed\x9f\xbf")));		/* U+D7FF */
	assert_true(name_is_utf8(S("\xee\x80\x80")));		/* U+E000 */
	assert_true(name_is_utf8(S("\xef\xbf\xbf")));		/* U+FFFF */
	assert_true(name_is_utf8(S("\xf0\x90\x80\x80")));	/* U+10000 */
	assert_true(name_is_utf8(S("\xf0\x9f\x98\x80")));	/* 😀 */
	assert_true(name_is_utf8(S("\xf4\x8f\xbf\xbf")));	/* U+10FFFF */
	assert_true(name_is_utf8(S("x\xc3\xa9y\xe2\x82\xacz")));
}

static void test_utf8_invalid(void **state)
{
	(void)state;
	assert_false(name_is_utf8(S("\x80")));			/* lone continuation */
	assert_false(name_is_utf8(S("\xbf")));
	assert_false(name_is_utf8(S("\xff")));
	assert_false(name_is_utf8(S("\xfe")));
	assert_false(name_is_utf8(S("\xc0\xaf")));		/* overlong '/' */
	assert_false(name_is_utf8(S("\xc1\xbf")));		/* overlong */
	assert_false(name_is_utf8(S("\xe0\x80\xaf")));		/* overlong */
	assert_false(name_is_utf8(S("\xe0\x9f\xbf")));		/* overlong U+07FF */
	assert_false(name_is_utf8(S("\xf0\x80\x80\xaf")));	/* overlong */
	assert_false(name_is_utf8(S("\xf0\x8f\xbf\xbf")));	/* overlong U+FFFF */
	assert_false(name_is_utf8(S("\xed\xa0\x80")));		/* surrogate D800 */
	assert_false(name_is_utf8(S("\xed\xbf\xbf")));		/* surrogate DFFF */
	assert_false(name_is_utf8(S("\xf4\x90\x80\x80")));	/* U+110000 */
	assert_false(name_is_utf8(S("\xf5\x80\x80\x80")));
	assert_false(name_is_utf8(S("\xf8\x88\x80\x80\x80")));	/* 5 bytes */
	assert_false(name_is_utf8(S("\xc3\x28")));		/* bad continuation */
	assert_false(name_is_utf8(S("\xe2\x28\xa1")));
	assert_false(name_is_utf8(S("\xe2\x82\x28")));
	assert_false(name_is_utf8(S("\xf0\x9f\x98\x28")));
	/* Truncated sequences, at the end of the data. */
	assert_false(name_is_utf8(S("\xc3")));
	assert_false(name_is_utf8(S("abc\xc3")));
	assert_false(name_is_utf8(S("\xe2\x82")));
	assert_false(name_is_utf8(S("\xf0\x9f\x98")));
	/* The length bounds the data: a sequence cut by len is invalid. */
	assert_false(name_is_utf8("\xc3\xa9", 1));
	assert_true(name_is_utf8("a\xc3\xa9", 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty_is_invalid),
		cmocka_unit_test(test_plain_names),
		cmocka_unit_test(test_length_boundaries),
		cmocka_unit_test(test_length_is_the_argument),
		cmocka_unit_test(test_slash_and_nul),
		cmocka_unit_test(test_dot_names),
		cmocka_unit_test(test_workflow_dot_names_are_reserved),
		cmocka_unit_test(test_workflow_too_long_dot_name),
		cmocka_unit_test(test_utf8_valid),
		cmocka_unit_test(test_utf8_invalid),
	};

	return cmocka_run_group_tests_name("name", tests, NULL, NULL);
}
