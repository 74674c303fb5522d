/*
 * test_policy.c - policy.h: the four values under policy/.
 */
#include "unit.h"

#include "policy.h"

/* A policy with every field off its default, to see what a parse touches. */
static struct policy odd(void)
{
	struct policy p = {
		.on_input_change = ON_INPUT_RAISE,
		.dedup_on = DEDUP_ANY,
		.in_flight_ttl = 77,
		.retention = 99,
	};

	return p;
}

/* Parse into an odd policy and assert that only field f changed. */
static struct policy parse_ok(enum policy_field f, const char *buf, size_t len)
{
	struct policy p = odd(), before = odd();
	int rc = policy_parse(f, buf, len, &p);

	if (rc)
		fail_msg("policy_parse(field %d, \"%.*s\") = %d (%s)",
			 (int)f, (int)len, buf, rc, errname(rc));
	if (f != POLICY_ON_INPUT_CHANGE)
		assert_int_equal(p.on_input_change, before.on_input_change);
	if (f != POLICY_DEDUP_ON)
		assert_int_equal(p.dedup_on, before.dedup_on);
	if (f != POLICY_IN_FLIGHT_TTL)
		assert_i64(p.in_flight_ttl, before.in_flight_ttl);
	if (f != POLICY_RETENTION)
		assert_i64(p.retention, before.retention);
	return p;
}

/* A bad value: -EINVAL and the policy untouched. */
static void parse_bad(enum policy_field f, const char *buf, size_t len)
{
	struct policy p = odd(), before = odd();
	int rc = policy_parse(f, buf, len, &p);

	if (rc != -EINVAL)
		fail_msg("policy_parse(field %d, \"%.*s\") = %d (%s), "
			 "expected EINVAL", (int)f, (int)len, buf, rc,
			 errname(rc));
	assert_memory_equal(&p, &before, sizeof(p));
}

#define OK(f, lit) parse_ok((f), S(lit))
#define BAD(f, lit) parse_bad((f), S(lit))

static void test_defaults(void **state)
{
	struct policy p;

	(void)state;
	memset(&p, 0xa5, sizeof(p));
	policy_init(&p);
	assert_int_equal(p.on_input_change, ON_INPUT_RESET);
	assert_int_equal(p.dedup_on, DEDUP_SUCCESS);
	assert_i64(p.in_flight_ttl, 86400);
	assert_i64(p.retention, 2592000);
}

static void test_field_names(void **state)
{
	static const char *const names[POLICY_NFIELDS] = {
		[POLICY_ON_INPUT_CHANGE] = "on_input_change",
		[POLICY_DEDUP_ON] = "dedup_on",
		[POLICY_IN_FLIGHT_TTL] = "in_flight_ttl",
		[POLICY_RETENTION] = "retention",
	};

	(void)state;
	for (int f = 0; f < POLICY_NFIELDS; f++) {
		assert_string_equal(policy_field_name((enum policy_field)f),
				    names[f]);
		assert_int_equal(policy_field_lookup(names[f], strlen(names[f])),
				 f);
	}
	assert_rc(policy_field_lookup(S("")), -ENOENT);
	assert_rc(policy_field_lookup(S("dedup")), -ENOENT);
	assert_rc(policy_field_lookup(S("dedup_on\n")), -ENOENT);
	assert_rc(policy_field_lookup(S("dedup_onx")), -ENOENT);
	assert_rc(policy_field_lookup(S("DEDUP_ON")), -ENOENT);
	assert_rc(policy_field_lookup(S("retention ")), -ENOENT);
	assert_rc(policy_field_lookup("retention", 6), -ENOENT);
	assert_int_equal(policy_field_lookup("retentionXYZ", 9), POLICY_RETENTION);
}

static void test_on_input_change(void **state)
{
	(void)state;
	/* The odd policy starts at raise: parse the others first. */
	assert_int_equal(OK(POLICY_ON_INPUT_CHANGE, "reset").on_input_change,
			 ON_INPUT_RESET);
	assert_int_equal(OK(POLICY_ON_INPUT_CHANGE, "reuse").on_input_change,
			 ON_INPUT_REUSE);
	assert_int_equal(OK(POLICY_ON_INPUT_CHANGE, "reuse\n").on_input_change,
			 ON_INPUT_REUSE);
	assert_int_equal(OK(POLICY_ON_INPUT_CHANGE, "raise").on_input_change,
			 ON_INPUT_RAISE);
	BAD(POLICY_ON_INPUT_CHANGE, "");
	BAD(POLICY_ON_INPUT_CHANGE, "\n");
	BAD(POLICY_ON_INPUT_CHANGE, " ");
	BAD(POLICY_ON_INPUT_CHANGE, "Reset");
	BAD(POLICY_ON_INPUT_CHANGE, "RESET");
	BAD(POLICY_ON_INPUT_CHANGE, "res");
	BAD(POLICY_ON_INPUT_CHANGE, "resets");
	BAD(POLICY_ON_INPUT_CHANGE, " reset");
	BAD(POLICY_ON_INPUT_CHANGE, "\treset");
	BAD(POLICY_ON_INPUT_CHANGE, "re set");
	BAD(POLICY_ON_INPUT_CHANGE, "reset\nreuse");
	BAD(POLICY_ON_INPUT_CHANGE, "reset reuse");
	BAD(POLICY_ON_INPUT_CHANGE, "success");
	BAD(POLICY_ON_INPUT_CHANGE, "0");
	BAD(POLICY_ON_INPUT_CHANGE, "reset\0");
	BAD(POLICY_ON_INPUT_CHANGE, "reset\v");
	BAD(POLICY_ON_INPUT_CHANGE, "reset\f");
}

static void test_dedup_on(void **state)
{
	(void)state;
	assert_int_equal(OK(POLICY_DEDUP_ON, "success").dedup_on, DEDUP_SUCCESS);
	assert_int_equal(OK(POLICY_DEDUP_ON, "success\r\n").dedup_on,
			 DEDUP_SUCCESS);
	assert_int_equal(OK(POLICY_DEDUP_ON, "any").dedup_on, DEDUP_ANY);
	BAD(POLICY_DEDUP_ON, "");
	BAD(POLICY_DEDUP_ON, "succeeded");
	BAD(POLICY_DEDUP_ON, "failure");
	BAD(POLICY_DEDUP_ON, "all");
	BAD(POLICY_DEDUP_ON, "Any");
	BAD(POLICY_DEDUP_ON, "an");
	BAD(POLICY_DEDUP_ON, " any");
	BAD(POLICY_DEDUP_ON, "1");
	BAD(POLICY_DEDUP_ON, "reset");
}

static void test_trailing_whitespace(void **state)
{
	(void)state;
	/* Spaces, tabs, \r and \n at the end are dropped, in any number. */
	assert_int_equal(OK(POLICY_ON_INPUT_CHANGE, "reuse ").on_input_change,
			 ON_INPUT_REUSE);
	assert_int_equal(OK(POLICY_ON_INPUT_CHANGE, "reuse\t").on_input_change,
			 ON_INPUT_REUSE);
	assert_int_equal(OK(POLICY_ON_INPUT_CHANGE, "reuse\r").on_input_change,
			 ON_INPUT_REUSE);
	assert_int_equal(OK(POLICY_ON_INPUT_CHANGE, "reuse \t\r\n \n\n")
			 .on_input_change, ON_INPUT_REUSE);
	assert_int_equal(OK(POLICY_DEDUP_ON, "success\n\n").dedup_on,
			 DEDUP_SUCCESS);
	assert_i64(OK(POLICY_IN_FLIGHT_TTL, "60 \t\r\n").in_flight_ttl, 60);
	assert_i64(OK(POLICY_RETENTION, "0\n").retention, 0);
	/* Nothing but whitespace is no value. */
	BAD(POLICY_IN_FLIGHT_TTL, " \t\r\n");
	BAD(POLICY_RETENTION, "\n");
	/* Leading whitespace is not dropped. */
	BAD(POLICY_IN_FLIGHT_TTL, " 60");
	BAD(POLICY_RETENTION, "\n0");
}

static void test_in_flight_ttl(void **state)
{
	char buf[32];

	(void)state;
	assert_i64(OK(POLICY_IN_FLIGHT_TTL, "1").in_flight_ttl, 1);
	assert_i64(OK(POLICY_IN_FLIGHT_TTL, "86400").in_flight_ttl, 86400);
	assert_i64(OK(POLICY_IN_FLIGHT_TTL, "10").in_flight_ttl, 10);
	snprintf(buf, sizeof(buf), "%lld", (long long)POLICY_TTL_MAX);
	assert_i64(parse_ok(POLICY_IN_FLIGHT_TTL, buf, strlen(buf)).in_flight_ttl,
		   POLICY_TTL_MAX);
	snprintf(buf, sizeof(buf), "%lld", (long long)POLICY_TTL_MAX + 1);
	parse_bad(POLICY_IN_FLIGHT_TTL, buf, strlen(buf));
	BAD(POLICY_IN_FLIGHT_TTL, "0");		/* a lease must last */
	BAD(POLICY_IN_FLIGHT_TTL, "00");
	BAD(POLICY_IN_FLIGHT_TTL, "01");
	BAD(POLICY_IN_FLIGHT_TTL, "-1");
	BAD(POLICY_IN_FLIGHT_TTL, "+1");
	BAD(POLICY_IN_FLIGHT_TTL, "1.5");
	BAD(POLICY_IN_FLIGHT_TTL, "1e3");
	BAD(POLICY_IN_FLIGHT_TTL, "0x10");
	BAD(POLICY_IN_FLIGHT_TTL, "1s");
	BAD(POLICY_IN_FLIGHT_TTL, "1 0");
	BAD(POLICY_IN_FLIGHT_TTL, "");
	BAD(POLICY_IN_FLIGHT_TTL, "ten");
	BAD(POLICY_IN_FLIGHT_TTL, "999999999999");
	BAD(POLICY_IN_FLIGHT_TTL, "9999999999999");
	/* Would wrap a 64-bit integer if it were accumulated blindly. */
	BAD(POLICY_IN_FLIGHT_TTL, "18446744073709551617");
	BAD(POLICY_IN_FLIGHT_TTL, "99999999999999999999999999999999");
}

static void test_retention(void **state)
{
	char buf[32];

	(void)state;
	assert_i64(OK(POLICY_RETENTION, "0").retention, 0);
	assert_i64(OK(POLICY_RETENTION, "1").retention, 1);
	assert_i64(OK(POLICY_RETENTION, "2592000").retention, 2592000);
	snprintf(buf, sizeof(buf), "%lld", (long long)POLICY_RETENTION_MAX);
	assert_i64(parse_ok(POLICY_RETENTION, buf, strlen(buf)).retention,
		   POLICY_RETENTION_MAX);
	snprintf(buf, sizeof(buf), "%lld", (long long)POLICY_RETENTION_MAX + 1);
	parse_bad(POLICY_RETENTION, buf, strlen(buf));
	BAD(POLICY_RETENTION, "00");
	BAD(POLICY_RETENTION, "007");
	BAD(POLICY_RETENTION, "-0");
	BAD(POLICY_RETENTION, "-5");
	BAD(POLICY_RETENTION, "");
	BAD(POLICY_RETENTION, "forever");
}

static void test_bad_field(void **state)
{
	(void)state;
	parse_bad(POLICY_NFIELDS, S("reset"));
	parse_bad((enum policy_field)-1, S("1"));
}

static void expect_format(enum policy_field f, const struct policy *p,
			  const char *want)
{
	char buf[64];
	size_t n;

	memset(buf, 'X', sizeof(buf));
	n = policy_format(f, p, buf, sizeof(buf));
	assert_string_equal(buf, want);
	assert_int_equal(n, strlen(want));
}

static void test_format(void **state)
{
	struct policy p;

	(void)state;
	policy_init(&p);
	expect_format(POLICY_ON_INPUT_CHANGE, &p, "reset\n");
	expect_format(POLICY_DEDUP_ON, &p, "success\n");
	expect_format(POLICY_IN_FLIGHT_TTL, &p, "86400\n");
	expect_format(POLICY_RETENTION, &p, "2592000\n");
	p = odd();
	expect_format(POLICY_ON_INPUT_CHANGE, &p, "raise\n");
	expect_format(POLICY_DEDUP_ON, &p, "any\n");
	expect_format(POLICY_IN_FLIGHT_TTL, &p, "77\n");
	expect_format(POLICY_RETENTION, &p, "99\n");
	p.on_input_change = ON_INPUT_REUSE;
	expect_format(POLICY_ON_INPUT_CHANGE, &p, "reuse\n");
	p.retention = POLICY_RETENTION_MAX;
	expect_format(POLICY_RETENTION, &p, "3162240000\n");
}

static void test_format_truncates(void **state)
{
	struct policy p;
	char buf[8];

	(void)state;
	policy_init(&p);
	memset(buf, 'X', sizeof(buf));
	assert_int_equal(policy_format(POLICY_ON_INPUT_CHANGE, &p, buf, 4), 3);
	assert_string_equal(buf, "res");
	assert_int_equal(buf[4], 'X');
	assert_int_equal(policy_format(POLICY_DEDUP_ON, &p, buf, 1), 0);
	assert_string_equal(buf, "");
	buf[0] = 'Y';
	assert_int_equal(policy_format(POLICY_DEDUP_ON, &p, buf, 0), 0);
	assert_int_equal(buf[0], 'Y');
}

static void test_format_parse_round_trip(void **state)
{
	static const struct policy samples[] = {
		{ ON_INPUT_RESET, DEDUP_SUCCESS, 1, 0 },
		{ ON_INPUT_REUSE, DEDUP_ANY, 3600, 1 },
		{ ON_INPUT_RAISE, DEDUP_SUCCESS, POLICY_TTL_MAX, POLICY_RETENTION_MAX },
	};
	char buf[64];

	(void)state;
	for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
		struct policy q;

		policy_init(&q);
		for (int f = 0; f < POLICY_NFIELDS; f++) {
			size_t n = policy_format((enum policy_field)f, &samples[i],
						 buf, sizeof(buf));

			assert_rc(policy_parse((enum policy_field)f, buf, n, &q), 0);
		}
		assert_memory_equal(&q, &samples[i], sizeof(q));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_field_names),
		cmocka_unit_test(test_on_input_change),
		cmocka_unit_test(test_dedup_on),
		cmocka_unit_test(test_trailing_whitespace),
		cmocka_unit_test(test_in_flight_ttl),
		cmocka_unit_test(test_retention),
		cmocka_unit_test(test_bad_field),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_format_truncates),
		cmocka_unit_test(test_format_parse_round_trip),
	};

	return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
