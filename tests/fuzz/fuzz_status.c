/*
 * fuzz_status.c - status_parse() (core/status.h) against a reference of
 * the grammar in DESIGN.md / status.h:
 *
 *     ("succeeded" | "failed" | "detach") [" " GENERATION] {" " | "\r"}
 *         ("\n" RESULT | end)
 *
 * ("detach" parses as KEY_IN_FLIGHT; that it takes no result is key.c's.)
 *
 * GENERATION: decimal, no sign, no leading zero, at most 18 digits (an
 * int64 that never overflows).  With complete=false and no newline yet,
 * the answer is -EAGAIN exactly when some continuation can still be
 * valid (with the digits read so far), else -EINVAL; never 0.
 *
 * Input: one byte of flags (bit 0: complete), then the bytes written.
 */
#include "fuzz.h"
#include "status.h"

static const char *const words[] = { "succeeded", "failed", "detach" };
static const enum key_status word_status[] = { KEY_SUCCEEDED, KEY_FAILED,
					       KEY_IN_FLIGHT };
#define NWORDS 3

struct ref {
	bool valid;
	enum key_status status;
	int64_t generation;
	int digits;
};

/* Is l[0..n) a whole valid status line?  Fills r. */
static struct ref ref_whole(const char *l, size_t n)
{
	struct ref r = { 0 };

	for (int w = 0; w < NWORDS; w++) {
		size_t wl = strlen(words[w]), i = wl;

		if (n < wl || memcmp(l, words[w], wl) != 0)
			continue;
		r.status = word_status[w];
		if (i + 1 < n && l[i] == ' ' && l[i + 1] >= '1' && l[i + 1] <= '9') {
			i++;
			while (i < n && l[i] >= '0' && l[i] <= '9') {
				if (r.digits == 18)
					return (struct ref){ 0 };
				r.generation = r.generation * 10 + (l[i] - '0');
				r.digits++;
				i++;
			}
		}
		for (; i < n; i++) {
			if (l[i] != ' ' && l[i] != '\r')
				return (struct ref){ 0 };
		}
		r.valid = true;
		return r;
	}
	return r;
}

/* Can l[0..n) still become a valid line? */
static bool ref_beginning(const char *l, size_t n)
{
	for (int w = 0; w < NWORDS; w++) {
		size_t wl = strlen(words[w]);

		if (n < wl && memcmp(l, words[w], n) == 0)
			return true;
	}
	/* A valid line stays valid with more blanks: prefix-closed. */
	return ref_whole(l, n).valid;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct status_line out;
	const char *buf;
	const char *nl;
	size_t len, line;
	bool complete, whole;
	int rc;

	if (size < 1)
		return 0;
	complete = data[0] & 1;
	buf = (const char *)data + 1;
	len = size - 1;
	nl = memchr(buf, '\n', len);
	line = nl ? (size_t)(nl - buf) : len;
	whole = nl || complete;

	memset(&out, 0xa5, sizeof(out));
	rc = status_parse(buf, len, complete, &out);
	if (whole) {
		struct ref r = ref_whole(buf, line);

		FUZZ_RC(buf, len, "status_parse(whole line)", rc, r.valid ? 0 : -EINVAL);
		if (rc == 0) {
			if (out.status != r.status || out.generation != r.generation ||
			    out.generation_digits != r.digits)
				fuzz_fail(buf, len, "status %d gen %lld digits %d, expected %d %lld %d",
					  out.status, (long long)out.generation, out.generation_digits,
					  r.status, (long long)r.generation, r.digits);
			if (out.result_off != (nl ? line + 1 : len))
				fuzz_fail(buf, len, "result_off %zu, expected %zu", out.result_off,
					  nl ? line + 1 : len);
		}
		/* The same bytes, told complete or not, agree once a newline is there. */
		if (nl) {
			struct status_line other;

			FUZZ_RC(buf, len, "status_parse(complete flipped)",
				status_parse(buf, len, !complete, &other), rc);
		}
	} else {
		bool can = ref_beginning(buf, len);

		FUZZ_RC(buf, len, "status_parse(unfinished line)", rc, can ? -EAGAIN : -EINVAL);
		if (rc == -EAGAIN) {
			struct ref r = ref_whole(buf, len);

			if (r.valid && (out.generation != r.generation ||
					out.generation_digits != r.digits))
				fuzz_fail(buf, len, "digits so far: %lld (%d), expected %lld (%d)",
					  (long long)out.generation, out.generation_digits,
					  (long long)r.generation, r.digits);
		}
		/* Every beginning of an unfinished line was a beginning too. */
		for (size_t i = 0; i < len && rc == -EAGAIN; i++) {
			struct status_line p;

			FUZZ_RC(buf, i, "status_parse(a shorter beginning)",
				status_parse(buf, i, false, &p), -EAGAIN);
		}
	}
	return 0;
}
