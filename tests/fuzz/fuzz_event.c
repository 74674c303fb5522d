/*
 * fuzz_event.c - event_parse() (core/event.h), which reads lines back
 * from a store that anyone may have edited: on any bytes it returns 0 or
 * -EINVAL, never reads or writes past its buffers; and on every line
 * event_render() writes, it gives back the event's type, subject,
 * generation, detail, pid and uid.
 */
#include "fuzz.h"
#include "event.h"

static void check_round_trip(const uint8_t *data, size_t size)
{
	static const char *const subjects[] = { "key", "step", "policy" };
	static const char *const details[] = { "status", "value", "from" };
	char line[EVENT_LINE_MAX + 1], scratch[EVENT_LINE_MAX + 1];
	struct event ev = { .type = "claim" };
	struct event_view v = { 0 };
	size_t len, half = size / 2;
	int rc;

	if (size < 4)
		return;
	ev.subject = subjects[data[0] % 3];
	ev.name = (const char *)data + 4;
	ev.name_len = half > 4 ? half - 4 : 0;
	ev.generation = data[1];
	ev.detail_field = details[data[2] % 3];
	ev.detail = (const char *)data + half;
	ev.detail_len = size - half;
	ev.text_field = data[3] & 1 ? "result" : NULL;
	ev.text = (const char *)data;
	ev.text_len = size;
	ev.time_ms = 1700000000000 + data[3];
	ev.pid = data[1] * 7;
	ev.uid = data[2];
	if (event_render(&ev, line, sizeof(line), &len) != 0)
		return;
	rc = event_parse(line, len, &v, scratch, sizeof(scratch));
	if (rc != 0) {
		fprintf(stderr, "event_parse(%.*s) = %s\n", (int)len, line, fuzz_errname(rc));
		abort();
	}
	if (strcmp(v.type, "claim") != 0 || v.generation != ev.generation ||
	    v.pid != ev.pid || v.uid != ev.uid) {
		fprintf(stderr, "event_parse(%.*s): numbers or type differ\n", (int)len, line);
		abort();
	}
	/* A UTF-8 subject reads back as its bytes (a _hex one as its hex). */
	if (strchr(line, '"') && strstr(line, "_hex\"") == NULL && ev.name_len &&
	    (strlen(v.subject) != ev.name_len || memcmp(v.subject, ev.name, ev.name_len) != 0) &&
	    !memchr(ev.name, 0, ev.name_len)) {
		fprintf(stderr, "event_parse(%.*s): subject differs\n", (int)len, line);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size + 1), *scratch = malloc(size + 1);
	struct event_view v;

	if (!copy || !scratch)
		abort();
	/* Exactly size bytes, and a scratch of the documented size. */
	memcpy(copy, data, size);
	(void)event_parse(copy, size, &v, scratch, size + 1);
	free(copy);
	free(scratch);
	check_round_trip(data, size);
	return 0;
}
