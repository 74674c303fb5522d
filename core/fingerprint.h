/*
 * fingerprint.h - the value of a workflow's input.fingerprint.
 *
 * 1 to FINGERPRINT_MAX printable ASCII bytes (0x20..0x7e); one trailing
 * newline is dropped.  Empty means unset.
 */
#ifndef ONCE_FINGERPRINT_H
#define ONCE_FINGERPRINT_H

#include <stddef.h>

#define FINGERPRINT_MAX 256

/*
 * Validate what was written.  On success *value_len is the length of the
 * value without its newline (0: unset).  Returns 0 or -EINVAL.
 */
int fingerprint_parse(const char *buf, size_t len, size_t *value_len);

#endif
