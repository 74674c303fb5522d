/*
 * policy.c - parsing and formatting of policy values.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "policy.h"

static const char *const field_names[POLICY_NFIELDS] = {
	[POLICY_ON_INPUT_CHANGE] = "on_input_change",
	[POLICY_DEDUP_ON] = "dedup_on",
	[POLICY_IN_FLIGHT_TTL] = "in_flight_ttl",
	[POLICY_RETENTION] = "retention",
};

static const char *const input_names[] = {
	[ON_INPUT_RESET] = "reset",
	[ON_INPUT_REUSE] = "reuse",
	[ON_INPUT_RAISE] = "raise",
};

static const char *const dedup_names[] = {
	[DEDUP_SUCCESS] = "success",
	[DEDUP_ANY] = "any",
};

void policy_init(struct policy *p)
{
	p->on_input_change = ON_INPUT_RESET;
	p->dedup_on = DEDUP_SUCCESS;
	p->in_flight_ttl = 86400;
	p->retention = 2592000;
}

const char *policy_field_name(enum policy_field f)
{
	return field_names[f];
}

int policy_field_lookup(const char *name, size_t len)
{
	for (int f = 0; f < POLICY_NFIELDS; f++) {
		if (strlen(field_names[f]) == len &&
		    memcmp(field_names[f], name, len) == 0)
			return f;
	}
	return -ENOENT;
}

static size_t trim_trailing_space(const char *buf, size_t len)
{
	while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\t' ||
			   buf[len - 1] == '\r' || buf[len - 1] == '\n'))
		len--;
	return len;
}

static int match_word(const char *const *words, int n, const char *buf,
		      size_t len)
{
	for (int i = 0; i < n; i++) {
		if (strlen(words[i]) == len && memcmp(words[i], buf, len) == 0)
			return i;
	}
	return -EINVAL;
}

/* A decimal integer in [lo, hi] without sign, spaces or leading zeros. */
static int parse_seconds(const char *buf, size_t len, int64_t lo, int64_t hi,
			 int64_t *out)
{
	int64_t v = 0;

	if (len == 0 || len > 12 || (len > 1 && buf[0] == '0'))
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (buf[i] < '0' || buf[i] > '9')
			return -EINVAL;
		v = v * 10 + (buf[i] - '0');
	}
	if (v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

int policy_parse(enum policy_field f, const char *buf, size_t len,
		 struct policy *p)
{
	int64_t v;
	int i;

	len = trim_trailing_space(buf, len);
	switch (f) {
	case POLICY_ON_INPUT_CHANGE:
		i = match_word(input_names, 3, buf, len);
		if (i < 0)
			return i;
		p->on_input_change = (enum on_input_change)i;
		return 0;
	case POLICY_DEDUP_ON:
		i = match_word(dedup_names, 2, buf, len);
		if (i < 0)
			return i;
		p->dedup_on = (enum dedup_on)i;
		return 0;
	case POLICY_IN_FLIGHT_TTL:
		if (parse_seconds(buf, len, 1, POLICY_TTL_MAX, &v))
			return -EINVAL;
		p->in_flight_ttl = v;
		return 0;
	case POLICY_RETENTION:
		if (parse_seconds(buf, len, 0, POLICY_RETENTION_MAX, &v))
			return -EINVAL;
		p->retention = v;
		return 0;
	default:
		return -EINVAL;
	}
}

size_t policy_format(enum policy_field f, const struct policy *p, char *buf,
		     size_t size)
{
	int n = 0;

	switch (f) {
	case POLICY_ON_INPUT_CHANGE:
		n = snprintf(buf, size, "%s\n", input_names[p->on_input_change]);
		break;
	case POLICY_DEDUP_ON:
		n = snprintf(buf, size, "%s\n", dedup_names[p->dedup_on]);
		break;
	case POLICY_IN_FLIGHT_TTL:
		n = snprintf(buf, size, "%" PRId64 "\n", p->in_flight_ttl);
		break;
	case POLICY_RETENTION:
		n = snprintf(buf, size, "%" PRId64 "\n", p->retention);
		break;
	default:
		break;
	}
	if (n < 0)
		n = 0;
	if ((size_t)n >= size)
		n = size ? (int)size - 1 : 0;
	return (size_t)n;
}

int policy_check_partial(enum policy_field f, const char *buf, size_t len,
			 bool complete)
{
	static const char *const *const words[] = {
		[POLICY_ON_INPUT_CHANGE] = input_names,
		[POLICY_DEDUP_ON] = dedup_names,
	};
	static const int nwords[] = {
		[POLICY_ON_INPUT_CHANGE] = 3,
		[POLICY_DEDUP_ON] = 2,
	};
	struct policy p;

	policy_init(&p);
	if (complete || memchr(buf, '\n', len))
		return policy_parse(f, buf, len, &p);
	if (policy_parse(f, buf, len, &p) == 0)
		return 0;
	/* Unfinished: trailing blanks end a value, so none may come yet. */
	if (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\t' ||
			buf[len - 1] == '\r'))
		return -EINVAL;
	if (f == POLICY_ON_INPUT_CHANGE || f == POLICY_DEDUP_ON) {
		for (int i = 0; i < nwords[f]; i++) {
			if (len < strlen(words[f][i]) &&
			    memcmp(words[f][i], buf, len) == 0)
				return -EAGAIN;
		}
		return -EINVAL;
	}
	/*
	 * A number: digits so far, no leading zero, and not past the
	 * maximum already (more digits only make it larger).
	 */
	if (len > 12 || (len > 0 && buf[0] == '0'))
		return -EINVAL;	/* "0" alone was judged whole above */
	{
		int64_t v = 0, max = f == POLICY_IN_FLIGHT_TTL ? POLICY_TTL_MAX
							       : POLICY_RETENTION_MAX;

		for (size_t i = 0; i < len; i++) {
			if (buf[i] < '0' || buf[i] > '9')
				return -EINVAL;
			v = v * 10 + (buf[i] - '0');
		}
		if (v > max)
			return -EINVAL;
	}
	return -EAGAIN;
}
