/*
 * status.c - the finalizer's status line grammar (see status.h).
 */
#include <errno.h>
#include <string.h>

#include "status.h"

#define GENERATION_DIGITS_MAX 18

const char *status_name(enum key_status s)
{
	switch (s) {
	case KEY_VACANT:
		return "vacant";
	case KEY_IN_FLIGHT:
		return "in_flight";
	case KEY_SUCCEEDED:
		return "succeeded";
	case KEY_FAILED:
		return "failed";
	}
	return "unknown";
}

/* Is buf[0..len) a prefix of word? Is it the whole word? */
static int word_match(const char *word, const char *buf, size_t len)
{
	size_t wl = strlen(word);

	if (len > wl)
		len = wl;
	if (memcmp(word, buf, len) != 0)
		return 0;
	return len == wl ? 2 : 1;
}

int status_parse(const char *buf, size_t len, bool complete,
		 struct status_line *out)
{
	static const struct {
		const char *word;
		enum key_status status;
	} words[] = {
		{ "succeeded", KEY_SUCCEEDED },
		{ "failed", KEY_FAILED },
	};
	const char *nl = memchr(buf, '\n', len);
	size_t line = nl ? (size_t)(nl - buf) : len;
	bool whole = nl != NULL || complete;
	size_t end = line;
	size_t i, wl = 0;
	int64_t gen = 0;
	int found = -1;

	while (end > 0 && (buf[end - 1] == ' ' || buf[end - 1] == '\r'))
		end--;

	for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
		size_t n = strlen(words[w].word);
		int m = word_match(words[w].word, buf, end);

		if (m == 2 && (end == n || buf[n] == ' ')) {
			found = (int)w;
			wl = n;
			break;
		}
		if (m == 1 && end < n && !whole)
			return -EAGAIN;
	}
	if (found < 0)
		return -EINVAL;

	i = wl;
	if (i < end) {
		size_t digits;

		i++;	/* the single space */
		digits = end - i;
		if (digits == 0 || digits > GENERATION_DIGITS_MAX ||
		    buf[i] == '0')
			return -EINVAL;
		for (; i < end; i++) {
			if (buf[i] < '0' || buf[i] > '9')
				return -EINVAL;
			gen = gen * 10 + (buf[i] - '0');
		}
	}
	if (!whole)
		return -EAGAIN;

	out->status = words[found].status;
	out->generation = gen;
	out->result_off = nl ? line + 1 : len;
	return 0;
}
