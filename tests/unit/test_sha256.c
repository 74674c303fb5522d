/*
 * test_sha256.c - sha256.h against the FIPS 180-4 example vectors, fed
 * whole and in pieces of every size across a block boundary.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sha256.h"

static void hex_of(const void *p, size_t len, size_t piece, char out[SHA256_HEX + 1])
{
	struct sha256 s;
	const char *c = p;

	sha256_init(&s);
	for (size_t off = 0; off < len; off += piece)
		sha256_update(&s, c + off, len - off < piece ? len - off : piece);
	sha256_hex(&s, out);
}

static void test_vectors(void **state)
{
	static const struct {
		const char *in;
		const char *want;
	} v[] = {
		{ "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
		{ "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
		{ "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
		{ "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
		  "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
		  "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1" },
	};
	char got[SHA256_HEX + 1];

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t len = strlen(v[i].in);

		for (size_t piece = 1; piece <= 130; piece++) {
			hex_of(v[i].in, len, piece, got);
			assert_string_equal(got, v[i].want);
		}
	}
}

static void test_a_million_a(void **state)
{
	char *a = malloc(1000000), got[SHA256_HEX + 1];

	(void)state;
	assert_non_null(a);
	memset(a, 'a', 1000000);
	hex_of(a, 1000000, 4096, got);
	assert_string_equal(got, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	free(a);
}

static void test_name(void **state)
{
	char name[SHA256_NAME_LEN + 1];

	(void)state;
	sha256_name("abc", 3, name);
	assert_string_equal(name, "sha256-ba7816bf8f01cfea414140de5dae2223"
			    "b00361a396177a9cb410ff61f20015ad");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_a_million_a),
		cmocka_unit_test(test_name),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
