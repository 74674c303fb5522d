/*
 * status.c - the finalizer's status line grammar (see status.h).
 *
 * The first line is read left to right by a small automaton, so that an
 * unfinished line is accepted only while it can still become a valid one:
 *
 *   WORD --full word--> AFTER --' '--> DIGITS? --digit--> DIGITS
 *                         |              |                  |
 *                         '\r'           ' ' '\r'           ' ' '\r'
 *                         v              v                  v
 *                        TRAIL <------------------------- TRAIL (' ' '\r')*
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

static const struct {
	const char *word;
	enum key_status status;
} words[] = {
	{ "succeeded", KEY_SUCCEEDED },
	{ "failed", KEY_FAILED },
	/* Not a status: the claim stays in flight after its handle closes. */
	{ "detach", KEY_IN_FLIGHT },
};

#define NWORDS (sizeof(words) / sizeof(words[0]))

enum state { S_WORD, S_AFTER, S_SPACE, S_DIGITS, S_TRAIL };

int status_parse(const char *buf, size_t len, bool complete,
		 struct status_line *out)
{
	const char *nl = memchr(buf, '\n', len);
	size_t line = nl ? (size_t)(nl - buf) : len;
	bool whole = nl != NULL || complete;
	enum state state = S_WORD;
	int found = -1;
	size_t i = 0;

	out->generation = 0;
	out->generation_digits = 0;
	/* The word: a prefix of one of the words, then all of one. */
	for (size_t w = 0; w < NWORDS; w++) {
		size_t wl = strlen(words[w].word);
		size_t n = line < wl ? line : wl;

		if (memcmp(words[w].word, buf, n) != 0)
			continue;
		if (line < wl) {
			if (!whole)
				return -EAGAIN;
			continue;
		}
		found = (int)w;
		i = wl;
		state = S_AFTER;
		break;
	}
	if (found < 0)
		return -EINVAL;

	for (; i < line; i++) {
		char c = buf[i];

		switch (state) {
		case S_AFTER:
			if (c == ' ')
				state = S_SPACE;
			else if (c == '\r')
				state = S_TRAIL;
			else
				return -EINVAL;
			break;
		case S_SPACE:
		case S_DIGITS:
			if (c >= '0' && c <= '9') {
				if ((state == S_SPACE && c == '0') ||
				    out->generation_digits == GENERATION_DIGITS_MAX)
					return -EINVAL;
				out->generation = out->generation * 10 + (c - '0');
				out->generation_digits++;
				state = S_DIGITS;
			} else if (c == ' ' || c == '\r') {
				state = S_TRAIL;
			} else {
				return -EINVAL;
			}
			break;
		case S_TRAIL:
			if (c != ' ' && c != '\r')
				return -EINVAL;
			break;
		case S_WORD:
			return -EINVAL;
		}
	}
	out->status = words[found].status;
	if (!whole)
		return -EAGAIN;
	out->result_off = nl ? line + 1 : len;
	return 0;
}
