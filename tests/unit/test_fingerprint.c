/*
 * test_fingerprint.c - fingerprint.h: the value of input.fingerprint.
 */
#include "unit.h"

#include "fingerprint.h"

#define SENTINEL ((size_t)0xdeadbeef)

static void ok(const char *buf, size_t len, size_t want)
{
	size_t vlen = SENTINEL;
	int rc = fingerprint_parse(buf, len, &vlen);

	if (rc)
		fail_msg("fingerprint_parse(\"%.*s\", %zu) = %d (%s)", (int)len,
			 buf, len, rc, errname(rc));
	assert_int_equal(vlen, want);
}

/* A refused value: -EINVAL, and *value_len not written. */
static void bad(const char *buf, size_t len)
{
	size_t vlen = SENTINEL;
	int rc = fingerprint_parse(buf, len, &vlen);

	if (rc != -EINVAL)
		fail_msg("fingerprint_parse(\"%.*s\", %zu) = %d (%s), expected "
			 "EINVAL", (int)len, buf, len, rc, errname(rc));
	assert_int_equal(vlen, SENTINEL);
}

static char *filled(size_t len, char c)
{
	char *p = malloc(len + 2);

	assert_non_null(p);
	memset(p, c, len);
	p[len] = '\0';
	return p;
}

static void test_unset(void **state)
{
	(void)state;
	/* Empty means unset; a lone newline is the empty value too. */
	ok("", 0, 0);
	ok(S("\n"), 0);
}

static void test_values(void **state)
{
	(void)state;
	ok(S("a"), 1);
	ok(S("abc"), 3);
	ok(S("abc\n"), 3);
	ok(S("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"),
	   64);
	ok(S("v1 2026-11-21 payload.json"), 26);	/* spaces are printable */
	ok(S(" "), 1);
	ok(S("  \n"), 2);
	ok(S("abc "), 4);	/* only a newline is dropped, not spaces */
	ok(S("~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./"), 32);
}

static void test_every_printable_byte(void **state)
{
	char buf[95];

	(void)state;
	for (int c = 0x20; c <= 0x7e; c++)
		buf[c - 0x20] = (char)c;
	ok(buf, sizeof(buf), sizeof(buf));
	for (int c = 0x20; c <= 0x7e; c++) {
		char one = (char)c;

		ok(&one, 1, 1);
	}
}

static void test_every_other_byte(void **state)
{
	(void)state;
	for (int c = 0; c < 256; c++) {
		char v[3] = { 'a', (char)c, 'b' };

		if (c >= 0x20 && c <= 0x7e)
			continue;
		bad(v, 3);
		/* Even as the last byte, unless it is the one newline. */
		if (c != '\n')
			bad(v, 2);
	}
}

static void test_one_newline_only(void **state)
{
	(void)state;
	bad(S("abc\n\n"));
	bad(S("\n\n"));
	bad(S("\nabc"));
	bad(S("ab\nc"));
	bad(S("abc\r\n"));
	bad(S("abc\r"));
	bad(S("\r"));
	bad(S("abc\t"));
	bad(S("abc\n\0"));
	bad("abc\0", 4);
	bad("\0", 1);
}

static void test_length_boundaries(void **state)
{
	char *v = filled(FINGERPRINT_MAX + 2, 'f');

	(void)state;
	assert_int_equal(FINGERPRINT_MAX, 256);
	ok(v, 255, 255);
	ok(v, 256, 256);
	bad(v, 257);
	bad(v, 258);
	/* 256 bytes and the newline: the newline does not count. */
	v[256] = '\n';
	ok(v, 257, 256);
	/* 257 bytes and a newline: too long. */
	v[256] = 'f';
	v[257] = '\n';
	bad(v, 258);
	/* 255 and a newline. */
	v[255] = '\n';
	ok(v, 256, 255);
	free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unset),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_every_printable_byte),
		cmocka_unit_test(test_every_other_byte),
		cmocka_unit_test(test_one_newline_only),
		cmocka_unit_test(test_length_boundaries),
	};

	return cmocka_run_group_tests_name("fingerprint", tests, NULL, NULL);
}
