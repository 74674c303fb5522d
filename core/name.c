/*
 * name.c - validation of workflow, key and step names.
 */
#include <errno.h>
#include <string.h>

#include "json.h"
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
	/* One definition of valid UTF-8: the JSON encoder's. */
	return json_is_utf8(s, len);
}
