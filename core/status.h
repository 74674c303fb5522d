/*
 * status.h - the status line a finalizer writes into a key.
 *
 * Grammar of what a finalizer writes:
 *
 *     ("succeeded" | "failed" | "detach") [" " GENERATION] {" " | "\r"}
 *         ("\n" RESULT | end)
 *
 * GENERATION is a decimal number without sign or leading zeros.  The
 * result is every byte after the first newline.  "detach" parses as
 * KEY_IN_FLIGHT and takes no result: the claim stays in flight when its
 * handle closes, for in_flight_ttl, to be finalized later by path.
 * "in_flight" is a status a key can have, never one a writer may write.
 */
#ifndef ONCE_STATUS_H
#define ONCE_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum key_status {
	KEY_VACANT = 0,		/* no claim: the row only keeps the attempt count */
	KEY_IN_FLIGHT = 1,
	KEY_SUCCEEDED = 2,
	KEY_FAILED = 3,
};

struct status_line {
	enum key_status status;
	int64_t generation;	/* 0 when the writer gave none */
	int generation_digits;	/* how many digits it had */
	size_t result_off;	/* offset of the result bytes in the buffer */
};

/*
 * Parse the first line of buf.  With complete=false the data may still
 * grow: a first line without its newline that is a valid beginning of a
 * status line gives -EAGAIN, with the generation digits read so far in
 * *out.  Returns 0 (and fills *out), -EAGAIN, or -EINVAL.
 */
int status_parse(const char *buf, size_t len, bool complete,
		 struct status_line *out);

/* "in_flight", "succeeded" or "failed". */
const char *status_name(enum key_status s);

#endif
