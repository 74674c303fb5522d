/*
 * test_json.c - json.h: JSON strings from bytes, and fields of a line.
 */
#include "unit.h"

#include "event.h"
#include "json.h"

/* One member in a fresh object: {"k":...}, in a static buffer. */
static const char *member(const void *s, size_t len)
{
	static char mem[4096];
	struct json_buf b;

	json_buf_fixed(&b, mem, sizeof(mem));
	assert_rc(json_object_begin(&b), 0);
	assert_rc(json_put_string(&b, "k", s, len), 0);
	assert_rc(json_object_end(&b), 0);
	assert_int_equal(b.len, strlen(mem));
	return mem;
}

/*
 * SQLite's JSON parser as the judge: the line is valid JSON, and the
 * member k holds exactly the bytes s.
 */
static void assert_roundtrip(const char *line, const void *s, size_t len)
{
	sqlite3 *db;
	sqlite3_stmt *q;

	assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT json_valid(?1), "
					    "CAST(json_extract(?1, '$.k') AS BLOB)",
					    -1, &q, NULL), SQLITE_OK);
	sqlite3_bind_text(q, 1, line, -1, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(q), SQLITE_ROW);
	if (sqlite3_column_int(q, 0) != 1)
		fail_msg("not valid JSON: %s", line);
	assert_int_equal((size_t)sqlite3_column_bytes(q, 1), len);
	if (len)
		assert_memory_equal(sqlite3_column_blob(q, 1), s, len);
	sqlite3_finalize(q);
	sqlite3_close(db);
}

static void test_ascii_and_escapes(void **state)
{
	(void)state;
	assert_string_equal(member(S("nightly-etl")), "{\"k\":\"nightly-etl\"}");
	assert_string_equal(member(S("")), "{\"k\":\"\"}");
	assert_string_equal(member(S("a\"b\\c/d")), "{\"k\":\"a\\\"b\\\\c/d\"}");
	assert_string_equal(member(S("a\nb\tc")), "{\"k\":\"a\\nb\\tc\"}");
	assert_string_equal(member(S("\r")), "{\"k\":\"\\u000d\"}");
	assert_string_equal(member(S("\x01\x1f\x7f")),
			    "{\"k\":\"\\u0001\\u001f\\u007f\"}");
	assert_string_equal(member(S(" ~")), "{\"k\":\" ~\"}");
}

static void test_every_ascii_byte(void **state)
{
	char one[1];

	(void)state;
	/* NUL cannot be in a name, but the encoder takes any byte. */
	assert_string_equal(member("", 1), "{\"k\":\"\\u0000\"}");
	for (int c = 1; c < 0x80; c++) {
		const char *line;

		one[0] = (char)c;
		line = member(one, 1);
		if (c < 0x20 || c == 0x7f)
			assert_true(strstr(line, "\\") != NULL);
		else if (c != '"' && c != '\\')
			assert_int_equal(strlen(line), strlen("{\"k\":\"x\"}"));
		assert_roundtrip(line, one, 1);
		for (const char *p = line; *p; p++)	/* nothing raw below 0x20 */
			assert_true((unsigned char)*p >= 0x20 && *p != 0x7f);
	}
}

static void test_valid_multibyte_as_is(void **state)
{
	static const char *const valid[] = {
		"caf\xc3\xa9",			/* é, two bytes */
		"\xc2\x80",			/* U+0080, the first two-byte */
		"\xdf\xbf",			/* U+07FF, the last two-byte */
		"\xe0\xa0\x80",			/* U+0800, the first three-byte */
		"\xe2\x82\xac",			/* € */
		"\xed\x9f\xbf",			/* U+D7FF, below the surrogates */
		"\xee\x80\x80",			/* U+E000, above them */
		"\xef\xbf\xbf",			/* U+FFFF */
		"\xf0\x90\x80\x80",		/* U+10000, the first four-byte */
		"\xf0\x9d\x84\x9e",		/* 𝄞 */
		"\xf4\x8f\xbf\xbf",		/* U+10FFFF, the last */
		"\xe2\x80\xa8",			/* U+2028: valid JSON as it is */
		"\xe6\x97\xa5\xe6\x9c\xac-\xc3\xa9\n",
	};
	char expect[64];

	(void)state;
	for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
		const char *s = valid[i];
		const char *line = member(s, strlen(s));

		assert_true(json_is_utf8(s, strlen(s)));
		if (!strchr(s, '\n')) {
			/* The bytes appear as they are: "é" is one character. */
			snprintf(expect, sizeof(expect), "{\"k\":\"%s\"}", s);
			assert_string_equal(line, expect);
			assert_int_equal(json_quoted_len(s, strlen(s)), strlen(s) + 2);
		}
		assert_not_contains(line, "\\u00");
		assert_not_contains(line, "_hex");
		assert_roundtrip(line, s, strlen(s));
	}
}

static void test_invalid_classes_become_hex(void **state)
{
	static const struct {
		const char *bytes, *hex;
	} invalid[] = {
		{ "\x80", "80" },			/* a lone continuation byte */
		{ "a\xbf", "61bf" },
		{ "\xc0\x80", "c080" },			/* overlong NUL */
		{ "\xc1\xbf", "c1bf" },			/* overlong two-byte */
		{ "\xe0\x80\x80", "e08080" },		/* overlong three-byte */
		{ "\xe0\x9f\xbf", "e09fbf" },
		{ "\xf0\x80\x80\x80", "f0808080" },	/* overlong four-byte */
		{ "\xf0\x8f\xbf\xbf", "f08fbfbf" },
		{ "\xed\xa0\x80", "eda080" },		/* surrogate U+D800 */
		{ "\xed\xbf\xbf", "edbfbf" },		/* surrogate U+DFFF */
		{ "\xed\xa0\xbd\xed\xb8\x80", "eda0bdedb880" },	/* a CESU-8 pair */
		{ "\xf4\x90\x80\x80", "f4908080" },	/* U+110000 */
		{ "\xf5\x80\x80\x80", "f5808080" },
		{ "\xf7\xbf\xbf\xbf", "f7bfbfbf" },
		{ "\xf8\x88\x80\x80\x80", "f888808080" },	/* five-byte form */
		{ "\xfe", "fe" },
		{ "\xff", "ff" },
		{ "\xc3", "c3" },			/* truncated two-byte */
		{ "caf\xc3", "636166c3" },
		{ "\xe2\x82", "e282" },			/* truncated three-byte */
		{ "\xf0\x9d\x84", "f09d84" },		/* truncated four-byte */
		{ "\xc3\x41", "c341" },			/* bad continuation */
		{ "\xe2\x28\xa1", "e228a1" },
		{ "\xf0\x9d\x84\x41", "f09d8441" },
		{ "ok\xc3\xa9\xff", "6f6bc3a9ff" },	/* valid, then not */
	};
	char mem[256], expect[256];
	struct json_buf b;

	(void)state;
	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		const char *s = invalid[i].bytes;
		size_t len = strlen(s);

		if (json_is_utf8(s, len))
			fail_msg("case %zu (%s) taken for UTF-8", i, invalid[i].hex);
		assert_int_equal(json_quoted_len(s, len), 0);
		json_buf_fixed(&b, mem, sizeof(mem));
		assert_rc(json_put_quoted(&b, s, len), -EILSEQ);
		assert_int_equal(b.len, 0);
		assert_string_equal(mem, "");
		snprintf(expect, sizeof(expect), "{\"k_hex\":\"%s\"}", invalid[i].hex);
		assert_string_equal(member(s, len), expect);
	}
}

static void test_hex_is_lossless_for_every_byte(void **state)
{
	char all[255], hex[2 * 255 + 1];
	char mem[1024];
	struct json_buf b;

	(void)state;
	for (int i = 0; i < 255; i++)
		all[i] = (char)(i + 1);	/* 01..ff: not UTF-8 (the top half) */
	for (int i = 0; i < 255; i++)
		snprintf(hex + 2 * i, 3, "%02x", i + 1);
	json_buf_fixed(&b, mem, sizeof(mem));
	assert_rc(json_put_string(&b, "name", all, sizeof(all)), 0);
	assert_int_equal(strncmp(mem, "\"name_hex\":\"", 12), 0);
	assert_int_equal(strncmp(mem + 12, hex, 510), 0);
	assert_string_equal(mem + 12 + 510, "\"");
	/* json_put_hex: hex whatever the bytes hold. */
	json_buf_reset(&b);
	assert_rc(json_put_hex(&b, "h", S("A\xc3\xa9")), 0);
	assert_string_equal(mem, "\"h\":\"41c3a9\"");
}

static void test_fields_and_commas(void **state)
{
	char mem[256];
	struct json_buf b;

	(void)state;
	json_buf_fixed(&b, mem, sizeof(mem));
	assert_rc(json_object_begin(&b), 0);
	assert_rc(json_put_string(&b, "event", S("claim")), 0);
	assert_rc(json_put_string(&b, "key", S("\xff")), 0);
	assert_rc(json_put_int(&b, "generation", 17), 0);
	assert_rc(json_put_int(&b, "min", INT64_MIN), 0);
	assert_rc(json_put_int(&b, "max", INT64_MAX), 0);
	assert_rc(json_put_bool(&b, "t", true), 0);
	assert_rc(json_put_bool(&b, "f", false), 0);
	assert_rc(json_put_null(&b, "n"), 0);
	assert_rc(json_object_end(&b), 0);
	assert_string_equal(mem, "{\"event\":\"claim\",\"key_hex\":\"ff\","
			    "\"generation\":17,\"min\":-9223372036854775808,"
			    "\"max\":9223372036854775807,\"t\":true,\"f\":false,"
			    "\"n\":null}");
	/* An array of objects built with raw separators. */
	json_buf_reset(&b);
	assert_rc(json_put_raw(&b, S("[")), 0);
	assert_rc(json_object_begin(&b), 0);
	assert_rc(json_put_int(&b, "a", 1), 0);
	assert_rc(json_object_end(&b), 0);
	assert_rc(json_put_raw(&b, S(",")), 0);
	assert_rc(json_object_begin(&b), 0);
	assert_rc(json_put_int(&b, "a", 2), 0);
	assert_rc(json_object_end(&b), 0);
	assert_rc(json_put_raw(&b, S("]")), 0);
	assert_string_equal(mem, "[{\"a\":1},{\"a\":2}]");
	/* Field names are the program's: text, and escaped like values. */
	json_buf_reset(&b);
	assert_rc(json_put_int(&b, "\xff", 1), -EINVAL);
	assert_int_equal(b.len, 0);
	assert_rc(json_put_int(&b, "a\"b", 1), 0);
	assert_string_equal(mem, "\"a\\\"b\":1");
}

static void test_fixed_buffer_boundaries(void **state)
{
	char mem[20];
	struct json_buf b;

	(void)state;
	/* "abc" takes 5 bytes; with the NUL, 6. */
	json_buf_fixed(&b, mem, 6);
	assert_rc(json_put_quoted(&b, S("abc")), 0);
	assert_string_equal(mem, "\"abc\"");
	assert_rc(json_put_raw(&b, S("x")), -ENOSPC);
	assert_string_equal(mem, "\"abc\"");
	json_buf_fixed(&b, mem, 5);
	assert_rc(json_put_quoted(&b, S("abc")), -ENOSPC);
	assert_int_equal(b.len, 0);
	assert_string_equal(mem, "");
	/* An escape counts whole: "\n" is 4 bytes, not 3. */
	json_buf_fixed(&b, mem, 4);
	assert_rc(json_put_quoted(&b, S("\n")), -ENOSPC);
	json_buf_fixed(&b, mem, 5);
	assert_rc(json_put_quoted(&b, S("\n")), 0);
	assert_string_equal(mem, "\"\\n\"");
	json_buf_fixed(&b, mem, 8);
	assert_rc(json_put_quoted(&b, S("\x01")), -ENOSPC);
	json_buf_fixed(&b, mem, 9);
	assert_rc(json_put_quoted(&b, S("\x01")), 0);
	/* A member that does not fit leaves no comma or name behind. */
	json_buf_fixed(&b, mem, sizeof(mem));
	assert_rc(json_object_begin(&b), 0);
	assert_rc(json_put_int(&b, "a", 1), 0);
	assert_rc(json_put_string(&b, "key", S("0123456789")), -ENOSPC);
	assert_string_equal(mem, "{\"a\":1");
	assert_rc(json_put_string(&b, "key_", S("\xff\xfe")), -ENOSPC);
	assert_string_equal(mem, "{\"a\":1");
	assert_rc(json_put_string(&b, "b", S("\xff")), 0);	/* ,"b_hex":"ff" */
	assert_string_equal(mem, "{\"a\":1,\"b_hex\":\"ff\"");
	assert_int_equal(b.len, 19);
	assert_rc(json_object_end(&b), -ENOSPC);	/* 20 bytes and a NUL */
	/* A one-byte buffer holds only the NUL. */
	json_buf_fixed(&b, mem, 1);
	assert_rc(json_put_raw(&b, S("")), 0);
	assert_rc(json_put_raw(&b, S("x")), -ENOSPC);
	assert_string_equal(json_buf_text(&b), "");
}

static void test_growing_buffer(void **state)
{
	struct json_buf b;
	char big[3000];

	(void)state;
	json_buf_growing(&b, 8);
	assert_string_equal(json_buf_text(&b), "");
	assert_rc(json_put_quoted(&b, S("abcdef")), 0);		/* 8: the maximum */
	assert_string_equal(json_buf_text(&b), "\"abcdef\"");
	assert_rc(json_put_raw(&b, S(",")), -ENOSPC);
	assert_string_equal(json_buf_text(&b), "\"abcdef\"");
	json_buf_free(&b);
	assert_string_equal(json_buf_text(&b), "");

	/* Growth past the first allocation keeps the text. */
	memset(big, '\x01', sizeof(big));
	json_buf_growing(&b, 6 * sizeof(big) + 2);
	assert_rc(json_put_quoted(&b, big, sizeof(big)), 0);
	assert_int_equal(b.len, 6 * sizeof(big) + 2);
	assert_int_equal(strncmp(json_buf_text(&b), "\"\\u0001\\u0001", 13), 0);
	assert_rc(json_put_raw(&b, S("x")), -ENOSPC);
	json_buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_rc(json_put_quoted(&b, big, sizeof(big) - 1), 0);
	json_buf_free(&b);

	json_buf_growing(&b, SIZE_MAX);	/* no limit but memory */
	for (int i = 0; i < 1000; i++)
		assert_rc(json_put_int(&b, "n", i), 0);
	assert_int_equal(strncmp(json_buf_text(&b), "\"n\":0,\"n\":1,", 12), 0);
	json_buf_free(&b);
}

static void test_utf8_boundaries(void **state)
{
	(void)state;
	assert_true(json_is_utf8("", 0));
	assert_true(json_is_utf8(S("\x7f")));
	/* A valid sequence cut by the length is truncated, not read past. */
	assert_false(json_is_utf8("\xc3\xa9", 1));
	assert_false(json_is_utf8("\xf0\x9d\x84\x9e", 3));
	assert_true(json_is_utf8("\xf0\x9d\x84\x9e", 4));
	/* A 255-byte name: 127 two-byte characters and an 'x'. */
	char name[255];
	for (int i = 0; i + 1 < 255; i += 2) {
		name[i] = '\xc3';
		name[i + 1] = '\xa9';
	}
	name[254] = 'x';
	assert_true(json_is_utf8(name, sizeof(name)));
	assert_int_equal(json_quoted_len(name, sizeof(name)), 257);
	name[254] = '\xc3';	/* now the last character is cut */
	assert_false(json_is_utf8(name, sizeof(name)));
}

/* The daemon's event lines go through the same encoder (event.h). */
static void test_event_lines(void **state)
{
	struct event ev = { .type = "claim", .subject = "key", .name = "caf\xc3\xa9",
			    .name_len = 5, .generation = 17, .number_field = "attempt",
			    .number_field_value = 1, .time_ms = 1700000000123,
			    .pid = 42, .uid = 1000 };
	char line[EVENT_LINE_MAX + 1];
	size_t len;

	(void)state;
	assert_int_equal(event_render(&ev, line, sizeof(line), &len), 0);
	assert_string_equal(line, "{\"time\":\"2023-11-14T22:13:20.123Z\",\"event\":"
			    "\"claim\",\"key\":\"caf\xc3\xa9\",\"generation\":17,"
			    "\"attempt\":1,\"pid\":42,\"uid\":1000}");
	assert_int_equal(len, strlen(line));
	/* Not UTF-8: the name under key_hex; a detail with a newline escaped. */
	ev.name = "a\xff";
	ev.name_len = 2;
	ev.detail_field = "status";
	ev.detail = "x\ny";
	ev.detail_len = 3;
	ev.number_field = NULL;
	ev.time_ms = -1;	/* before 1970: the last millisecond of 1969 */
	assert_int_equal(event_render(&ev, line, sizeof(line), &len), 0);
	assert_string_equal(line, "{\"time\":\"1969-12-31T23:59:59.999Z\",\"event\":"
			    "\"claim\",\"key_hex\":\"61ff\",\"generation\":17,"
			    "\"status\":\"x\\ny\",\"pid\":42,\"uid\":1000}");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ascii_and_escapes),
		cmocka_unit_test(test_event_lines),
		cmocka_unit_test(test_every_ascii_byte),
		cmocka_unit_test(test_valid_multibyte_as_is),
		cmocka_unit_test(test_invalid_classes_become_hex),
		cmocka_unit_test(test_hex_is_lossless_for_every_byte),
		cmocka_unit_test(test_fields_and_commas),
		cmocka_unit_test(test_fixed_buffer_boundaries),
		cmocka_unit_test(test_growing_buffer),
		cmocka_unit_test(test_utf8_boundaries),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
