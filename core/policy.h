/*
 * policy.h - a workflow's policy: the four values under policy/.
 *
 * Each value is one file; reading gives the value and a newline, writing
 * replaces it.  Parsing is strict: trailing whitespace (spaces, tabs, \r,
 * \n) is dropped, anything else that is not a valid value is -EINVAL.
 */
#ifndef ONCE_POLICY_H
#define ONCE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum on_input_change {
	ON_INPUT_RESET = 0,
	ON_INPUT_REUSE = 1,
	ON_INPUT_RAISE = 2,
};

enum dedup_on {
	DEDUP_SUCCESS = 0,
	DEDUP_ANY = 1,
};

enum policy_field {
	POLICY_ON_INPUT_CHANGE,
	POLICY_DEDUP_ON,
	POLICY_IN_FLIGHT_TTL,
	POLICY_RETENTION,
	POLICY_NFIELDS
};

#define POLICY_TTL_MAX ((int64_t)10 * 366 * 86400)	/* ten years */
#define POLICY_RETENTION_MAX ((int64_t)100 * 366 * 86400)

struct policy {
	enum on_input_change on_input_change;
	enum dedup_on dedup_on;
	int64_t in_flight_ttl;	/* seconds, 1..POLICY_TTL_MAX */
	int64_t retention;	/* seconds, 0..POLICY_RETENTION_MAX */
};

/* The defaults of a new workflow. */
void policy_init(struct policy *p);

/* The file name of a field ("on_input_change", ...). */
const char *policy_field_name(enum policy_field f);

/* The field a file name stands for, or -ENOENT. */
int policy_field_lookup(const char *name, size_t len);

/*
 * Parse the bytes written to a field's file into *p (only that field
 * changes).  Returns 0 or -EINVAL; on error *p is untouched.
 */
int policy_parse(enum policy_field f, const char *buf, size_t len,
		 struct policy *p);

/*
 * The check of a value that may still be arriving in pieces: 0 when buf
 * holds a whole valid value (ending in a newline, or complete), -EAGAIN
 * when it is a valid beginning of one, -EINVAL otherwise.
 */
int policy_check_partial(enum policy_field f, const char *buf, size_t len,
			 bool complete);

/*
 * Write a field's value and a newline into buf (NUL-terminated).
 * Returns the length without the NUL.
 */
size_t policy_format(enum policy_field f, const struct policy *p, char *buf,
		     size_t size);

#endif
