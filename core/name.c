/*
 * name.c - validation of workflow, key and step names.
 */
#include <errno.h>
#include <string.h>

#include "name.h"

int name_check(const char *name, size_t len)
{
	if (len == 0)
		return -EINVAL;
	if (len > NAME_MAX_LEN)
		return -ENAMETOOLONG;
	if (memchr(name, '/', len) || memchr(name, '\0', len))
		return -EINVAL;
	if ((len == 1 && name[0] == '.') ||
	    (len == 2 && name[0] == '.' && name[1] == '.'))
		return -EINVAL;
	return 0;
}

int name_check_workflow(const char *name, size_t len)
{
	int rc = name_check(name, len);

	if (rc)
		return rc;
	if (name[0] == '.')
		return -EINVAL;
	return 0;
}

void name_copy(char *dst, size_t *dst_len, const char *name, size_t len)
{
	memcpy(dst, name, len);
	dst[len] = '\0';
	*dst_len = len;
}

bool name_is_utf8(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		unsigned char c = p[i];
		size_t n;
		unsigned int cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (i + n >= len)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}
