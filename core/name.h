/*
 * name.h - which byte strings may name a workflow, a key or a step.
 *
 * A name is what a directory entry may hold: 1 to NAME_MAX_LEN bytes,
 * no '/', no NUL, not "." or "..".  Workflow names may not begin with
 * '.': those are reserved for oncefs's own files at the mount root.
 */
#ifndef ONCE_NAME_H
#define ONCE_NAME_H

#include <stdbool.h>
#include <stddef.h>

#define NAME_MAX_LEN 255

/* Returns 0, -ENAMETOOLONG for more than NAME_MAX_LEN bytes, or -EINVAL. */
int name_check(const char *name, size_t len);

/* name_check() plus the reservation of dot-names: 0, -ENAMETOOLONG or -EINVAL. */
int name_check_workflow(const char *name, size_t len);

/*
 * Copy a checked name into a row's name field (NAME_MAX_LEN + 1 bytes),
 * NUL-terminated, and set its length.
 */
void name_copy(char *dst, size_t *dst_len, const char *name, size_t len);

/* True when the bytes are valid UTF-8 (used to decide how events quote a name). */
bool name_is_utf8(const char *s, size_t len);

#endif
