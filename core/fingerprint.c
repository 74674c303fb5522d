/*
 * fingerprint.c - validation of input fingerprints.
 */
#include <errno.h>

#include "fingerprint.h"

int fingerprint_parse(const char *buf, size_t len, size_t *value_len)
{
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len > FINGERPRINT_MAX)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)buf[i];

		if (c < 0x20 || c > 0x7e)
			return -EINVAL;
	}
	*value_len = len;
	return 0;
}
