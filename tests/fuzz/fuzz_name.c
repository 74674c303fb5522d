/*
 * fuzz_name.c - name_check(), name_check_workflow() and name_is_utf8()
 * (core/name.h) against DESIGN.md: a name is 1 to 255 bytes, no '/', no
 * NUL, not "." or ".."; longer is ENAMETOOLONG; workflow names may not
 * begin with '.'.  UTF-8 as RFC 3629 (no overlongs, no surrogates, at
 * most U+10FFFF).
 */
#include "fuzz.h"
#include "name.h"

static int ref_name(const uint8_t *s, size_t n)
{
	if (n > 255)
		return -ENAMETOOLONG;
	if (n == 0 || memchr(s, '/', n) || memchr(s, 0, n))
		return -EINVAL;
	if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
		return -EINVAL;
	return 0;
}

/* RFC 3629, table 3-7 of the Unicode standard: well-formed sequences. */
static bool ref_utf8(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = s[i];
		uint8_t lo = 0x80, hi = 0xbf;
		size_t more;

		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			more = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			more = 2;
			if (c == 0xe0)
				lo = 0xa0;
			if (c == 0xed)
				hi = 0x9f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			more = 3;
			if (c == 0xf0)
				lo = 0x90;
			if (c == 0xf4)
				hi = 0x8f;
		} else {
			return false;
		}
		if (i + more >= n)
			return false;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t k = 2; k <= more; k++) {
			if (s[i + k] < 0x80 || s[i + k] > 0xbf)
				return false;
		}
		i += more + 1;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	int want = ref_name(data, size);
	int want_wf = want;

	if (want == 0 && data[0] == '.')
		want_wf = -EINVAL;
	FUZZ_RC(buf, size, "name_check", name_check(buf, size), want);
	FUZZ_RC(buf, size, "name_check_workflow", name_check_workflow(buf, size), want_wf);
	if (name_is_utf8(buf, size) != ref_utf8(data, size))
		fuzz_fail(buf, size, "name_is_utf8 = %d, expected %d",
			  name_is_utf8(buf, size), ref_utf8(data, size));
	return 0;
}
