/*
 * fuzz.h - what the libFuzzer targets in tests/fuzz share.
 *
 * A target checks the code under test against a reference written from
 * DESIGN.md (not from the code), and aborts with a message when they
 * disagree: libFuzzer then saves the input that shows it.
 */
#ifndef ONCE_FUZZ_H
#define ONCE_FUZZ_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static inline const char *fuzz_errname(long rc)
{
	const char *n;

	if (rc == 0)
		return "0";
	if (rc > 0)
		return "positive";
	n = strerrorname_np((int)-rc);
	return n ? n : "?";
}

/* Print buf as a C string literal (for the failure message). */
static inline void fuzz_print_bytes(const char *buf, size_t len)
{
	fputc('"', stderr);
	for (size_t i = 0; i < len && i < 400; i++) {
		unsigned char c = (unsigned char)buf[i];

		if (c == '"' || c == '\\')
			fprintf(stderr, "\\%c", c);
		else if (c >= 0x20 && c < 0x7f)
			fputc(c, stderr);
		else
			fprintf(stderr, "\\x%02x", c);
	}
	fprintf(stderr, "\"%s", len > 400 ? "..." : "");
}

__attribute__((format(printf, 3, 4), noreturn))
static inline void fuzz_fail(const char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\nFUZZ CHECK FAILED: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (buf) {
		fprintf(stderr, "\n  input (%zu bytes): ", len);
		fuzz_print_bytes(buf, len);
	}
	fputc('\n', stderr);
	abort();
}

/* Compare two return codes. */
#define FUZZ_RC(buf, len, what, got, want) do {				\
	long _g = (long)(got), _w = (long)(want);				\
	if (_g != _w)								\
		fuzz_fail((buf), (len), "%s = %ld (%s), expected %ld (%s)",	\
			  (what), _g, fuzz_errname(_g), _w, fuzz_errname(_w));	\
} while (0)

#endif
