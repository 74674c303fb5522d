/*
 * test_event.c - event.h: a rendered line reads back (event_parse) as what
 * oncectl shows of it, whatever the bytes of its names; a line that is no
 * event of ours is refused, never trusted.
 */
#include "unit.h"

#include "event.h"

static struct event_view parse(const char *line, int want)
{
	static char scratch[EVENT_LINE_MAX + 1];
	struct event_view v = { .line = line };

	assert_rc(event_parse(line, strlen(line), &v, scratch, sizeof(scratch)), want);
	return v;
}

static void test_round_trip(void **state)
{
	char line[EVENT_LINE_MAX + 1];
	struct event ev = {
		.type = "finalize", .subject = "key", .name = "caf\xc3\xa9 \"1\"\n",
		.name_len = 11, .generation = 17, .detail_field = "status",
		.detail = "failed", .detail_len = 6, .text_field = "result",
		.text = "boom", .text_len = 4, .time_ms = T0_MS, .pid = 42,
		.uid = 1000,
	};
	struct event_view v;
	size_t len;

	(void)state;
	assert_rc(event_render(&ev, line, sizeof(line), &len), 0);
	v = parse(line, 0);
	assert_string_equal(v.type, "finalize");
	assert_string_equal(v.subject, "caf\xc3\xa9 \"1\"\n");
	assert_string_equal(v.detail, "failed");
	assert_i64(v.generation, 17);
	assert_i64(v.pid, 42);
	assert_i64(v.uid, 1000);
	/* A name that is not UTF-8 is its hex. */
	ev.name = "\xff" "A";
	ev.name_len = 2;
	assert_rc(event_render(&ev, line, sizeof(line), &len), 0);
	assert_string_equal(parse(line, 0).subject, "ff41");
}

static void test_members(void **state)
{
	struct event_view v;

	(void)state;
	v = parse("{\"event\":\"rename\",\"step\":\"b\",\"from\":\"a\",\"pid\":1,\"uid\":2}", 0);
	assert_string_equal(v.subject, "b");
	assert_string_equal(v.detail, "a");
	v = parse(" { \"event\" : \"policy\" , \"policy\":\"dedup_on\",\"value\":\"any\","
		  "\"truncated\":true,\"x\":null,\"generation\":-3 } ", 0);
	assert_string_equal(v.subject, "dedup_on");
	assert_string_equal(v.detail, "any");
	assert_i64(v.generation, -3);
	v = parse("{\"event\":\"\\u00e9\\ud83d\\ude00\\/\"}", 0);
	assert_string_equal(v.type, "\xc3\xa9\xf0\x9f\x98\x80/");
	v = parse("{}", 0);
	assert_string_equal(v.type, "");
}

static void test_refusals(void **state)
{
	static const char *const bad[] = {
		"", "[]", "{", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{\"a\":1} x",
		"{\"a\":\"\\ud800\"}", "{\"a\":\"\\x\"}", "{\"a\":\"\x01\"}",
		"{\"a\":{\"b\":1}}", "{\"a\":[1]}", "{\"a\":1.5}",
		"{\"a\":99999999999999999999999}", "{\"a\":\"unterminated}",
		"{\"generation\":20000000000000000000}",
		"{\"generation\":9223372036854775808}",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		parse(bad[i], -EINVAL);
}

static void test_scratch_is_bounded(void **state)
{
	const char *line = "{\"event\":\"claim\",\"key\":\"abcdefgh\"}";
	char scratch[8];
	struct event_view v;

	(void)state;
	assert_rc(event_parse(line, strlen(line), &v, scratch, sizeof(scratch)), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_members),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_scratch_is_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
