/*
 * fuzz_fingerprint.c - fingerprint_parse() (core/fingerprint.h) against
 * DESIGN.md: 1 to 256 bytes of printable text (0x20..0x7e), one trailing
 * newline dropped; empty means unset; other bytes or lengths are EINVAL.
 */
#include "fuzz.h"
#include "fingerprint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	size_t n = size, vlen = 12345;
	bool valid = true;
	int rc;

	if (n > 0 && buf[n - 1] == '\n')
		n--;
	if (n > 256)
		valid = false;
	for (size_t i = 0; i < n && valid; i++)
		valid = data[i] >= 0x20 && data[i] <= 0x7e;
	rc = fingerprint_parse(buf, size, &vlen);
	FUZZ_RC(buf, size, "fingerprint_parse", rc, valid ? 0 : -EINVAL);
	if (rc == 0 && vlen != n)
		fuzz_fail(buf, size, "value length %zu, expected %zu", vlen, n);
	if (rc != 0 && vlen != 12345)
		fuzz_fail(buf, size, "a refused value set the length");
	return 0;
}
