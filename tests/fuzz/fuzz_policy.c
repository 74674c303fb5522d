/*
 * fuzz_policy.c - policy_parse() and policy_check_partial()
 * (core/policy.h) against DESIGN.md: one value a file, trailing
 * whitespace dropped, a bad value is EINVAL and changes nothing.
 *
 *   on_input_change   reset | reuse | raise
 *   dedup_on          success | any
 *   in_flight_ttl     seconds, 1..POLICY_TTL_MAX
 *   retention         seconds, 0..POLICY_RETENTION_MAX
 *
 * Seconds are decimal without sign, spaces or leading zeros.  A value
 * still arriving (no newline yet, not complete) is -EAGAIN exactly when
 * some continuation of it is a valid value: every check that can be made
 * when the bytes arrive is made in write() (DESIGN.md), so a value that
 * can no longer become valid is -EINVAL at once.
 *
 * Input: one byte (field = bits 0-1, complete = bit 2), then the value.
 */
#include "fuzz.h"
#include "policy.h"

static const char *const input_words[] = { "reset", "reuse", "raise" };
static const char *const dedup_words[] = { "success", "any" };

static bool blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void limits(enum policy_field f, int64_t *lo, int64_t *hi)
{
	*lo = f == POLICY_IN_FLIGHT_TTL ? 1 : 0;
	*hi = f == POLICY_IN_FLIGHT_TTL ? POLICY_TTL_MAX : POLICY_RETENTION_MAX;
}

/* The value of buf, or -1 when it is not a valid value of f. */
static int64_t ref_value(enum policy_field f, const char *buf, size_t len)
{
	const char *const *words = f == POLICY_ON_INPUT_CHANGE ? input_words : dedup_words;
	int nwords = f == POLICY_ON_INPUT_CHANGE ? 3 : 2;
	int64_t lo, hi, v = 0;

	while (len > 0 && blank(buf[len - 1]))
		len--;
	if (f == POLICY_ON_INPUT_CHANGE || f == POLICY_DEDUP_ON) {
		for (int i = 0; i < nwords; i++) {
			if (strlen(words[i]) == len && memcmp(words[i], buf, len) == 0)
				return i;
		}
		return -1;
	}
	limits(f, &lo, &hi);
	if (len == 0 || (len > 1 && buf[0] == '0'))
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (buf[i] < '0' || buf[i] > '9')
			return -1;
		if (v > hi)
			return -1;	/* and stays too big */
		v = v * 10 + (buf[i] - '0');
	}
	return v >= lo && v <= hi ? v : -1;
}

/* Can buf (no newline) be continued into a valid value? */
static bool ref_can_continue(enum policy_field f, const char *buf, size_t len)
{
	int64_t lo, hi, v = 0;

	if (f == POLICY_ON_INPUT_CHANGE || f == POLICY_DEDUP_ON) {
		const char *const *words = f == POLICY_ON_INPUT_CHANGE ? input_words : dedup_words;
		int nwords = f == POLICY_ON_INPUT_CHANGE ? 3 : 2;

		for (int i = 0; i < nwords; i++) {
			if (len < strlen(words[i]) && memcmp(words[i], buf, len) == 0)
				return true;
		}
		return false;
	}
	limits(f, &lo, &hi);
	if (len == 0)
		return true;		/* "1" */
	if (buf[0] == '0')
		return false;		/* a leading zero stays */
	for (size_t i = 0; i < len; i++) {
		if (buf[i] < '0' || buf[i] > '9')
			return false;
		v = v * 10 + (buf[i] - '0');
		if (v > hi)
			return false;
	}
	return v * 10 <= hi;		/* one more digit still fits */
}

static int64_t field_of(const struct policy *p, enum policy_field f)
{
	switch (f) {
	case POLICY_ON_INPUT_CHANGE:
		return p->on_input_change;
	case POLICY_DEDUP_ON:
		return p->dedup_on;
	case POLICY_IN_FLIGHT_TTL:
		return p->in_flight_ttl;
	default:
		return p->retention;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policy p, before, again;
	enum policy_field f;
	const char *buf;
	size_t len;
	bool complete;
	int64_t want;
	char out[64];
	int rc;

	if (size < 1)
		return 0;
	f = (enum policy_field)(data[0] & 3);
	complete = data[0] & 4;
	buf = (const char *)data + 1;
	len = size - 1;
	want = ref_value(f, buf, len);

	policy_init(&p);
	p.in_flight_ttl = 7;	/* not the default: a refused value must not reset it */
	before = p;
	rc = policy_parse(f, buf, len, &p);
	FUZZ_RC(buf, len, "policy_parse", rc, want >= 0 ? 0 : -EINVAL);
	for (int g = 0; g < POLICY_NFIELDS; g++) {
		int64_t now = field_of(&p, (enum policy_field)g), was = field_of(&before, (enum policy_field)g);

		if (g == (int)f && rc == 0 ? now != want : now != was)
			fuzz_fail(buf, len, "field %s is %lld after %s", policy_field_name((enum policy_field)g),
				  (long long)now, rc ? "a refused value" : "parsing");
	}
	if (rc == 0) {
		size_t n = policy_format(f, &p, out, sizeof(out));

		if (n == 0 || out[n - 1] != '\n' || strlen(out) != n)
			fuzz_fail(buf, len, "policy_format gave \"%s\"", out);
		policy_init(&again);
		FUZZ_RC(out, n, "policy_parse(policy_format())", policy_parse(f, out, n, &again), 0);
		if (field_of(&again, f) != want)
			fuzz_fail(buf, len, "formatted value \"%s\" reads back differently", out);
	}

	rc = policy_check_partial(f, buf, len, complete);
	if (complete || memchr(buf, '\n', len)) {
		FUZZ_RC(buf, len, "policy_check_partial(whole value)", rc, want >= 0 ? 0 : -EINVAL);
	} else if (want >= 0) {
		FUZZ_RC(buf, len, "policy_check_partial(valid so far)", rc, 0);
	} else {
		bool can = ref_can_continue(f, buf, len);

		if (rc != (can ? -EAGAIN : -EINVAL))
			fuzz_fail(buf, len, "policy_check_partial(%s, unfinished) = %s, expected %s: "
				  "%s", policy_field_name(f), fuzz_errname(rc),
				  fuzz_errname(can ? -EAGAIN : -EINVAL),
				  can ? "a valid value can still follow"
				      : "no continuation is a valid value");
	}
	FUZZ_RC(policy_field_name(f), strlen(policy_field_name(f)), "policy_field_lookup",
		policy_field_lookup(policy_field_name(f), strlen(policy_field_name(f))), f);
	return 0;
}
