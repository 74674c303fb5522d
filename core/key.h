/*
 * key.h - idempotency keys: the state machine behind keys/<key>.
 *
 * Invariant: a key file exists exactly when a claim on it would fail,
 * that is, when its row is live (key_is_live).
 *
 *   (absent | vacant | expired) --claim--> in_flight(g)      g: new generation
 *   in_flight(g) --finalize succeeded--> succeeded(g)        terminal
 *   in_flight(g) --finalize failed, dedup_on=any--> failed(g)  terminal
 *   in_flight(g) --finalize failed, dedup_on=success--> vacant
 *   in_flight(g) --handle open--> in_flight(g), short lease renewed
 *   in_flight(g) --touch / "detach"--> in_flight(g), lease in_flight_ttl
 *   in_flight(g) --lease passes--> expired: invisible, and dead for g
 *                                  (ESTALE), sweep or not; the next claim
 *                                  adopts it
 *   in_flight(g) --claim's handle closed, no finalize or detach / its open
 *                  reached nobody--> vacant (abandon)
 *   any live --release (rm)--> absent
 *
 * Every claim draws a generation from the store-wide sequence, so a
 * generation names one claim for ever; an action through a generation
 * that is no longer the key's is fenced with -ESTALE and changes nothing.
 * Vacant rows exist only to carry the attempt count past a failure.
 *
 * Terminal keys refuse every change but release: -EPERM for root, -EACCES
 * for others (key_refuse_write).
 */
#ifndef ONCE_KEY_H
#define ONCE_KEY_H

#include <stdbool.h>

#include "once.h"

/* The longest status line a finalizer may write, without the newline. */
#define KEY_STATUS_LINE_MAX 64

bool key_is_live(const struct key_row *k, int64_t now_ms);

/* The errno for a write to a terminal key by this caller. */
int key_refuse_write(const struct caller *who);

/*
 * The live key of that name: -ENOENT when there is none (or no such
 * workflow).  When w is not NULL it gets the workflow, read in the same
 * transaction.
 */
int key_lookup(struct once *o, int64_t wf, const char *name, size_t len,
	       struct key_row *out, struct wf_row *w);

/*
 * The key of a generation: -ESTALE when it is no longer the key's.  When
 * w is not NULL it gets the key's workflow, read with it.
 */
int key_get(struct once *o, int64_t generation, struct key_row *out,
	    struct wf_row *w);

/*
 * Claim (O_EXCL create): -EEXIST when the key is live, -ENOENT when the
 * workflow is gone, name errors.  On success *out is the new in_flight key
 * and, when w is not NULL, *w its workflow.
 */
int key_claim(struct once *o, int64_t wf, const char *name, size_t len,
	      const struct caller *who, struct key_row *out, struct wf_row *w);

/*
 * Notes of a claim (enum key_note in store.h), set through the key while
 * it is in flight, readable while its generation is the key's; the next
 * claim clears them.  A request is a fingerprint (1 to FINGERPRINT_MAX
 * printable bytes, trailing newline dropped; else -EINVAL); an original
 * name is 1 to KEY_ORIGINAL_MAX bytes (-E2BIG past it).  key_note()
 * gives -ENODATA when there is none; buf has room for KEY_ORIGINAL_MAX.
 * key_set_note() with KEY_NOTE_CREATE fails -EEXIST on a note already
 * set, with KEY_NOTE_REPLACE -ENODATA on none (setxattr's flags); a
 * terminal key refuses (key_refuse_write), an old generation -ESTALE.
 * Setting a new value appends a `note` event.
 */
#define KEY_NOTE_CREATE 1
#define KEY_NOTE_REPLACE 2
int key_note(struct once *o, int64_t generation, enum key_note which,
	     char *buf, size_t *len);
int key_set_note(struct once *o, int64_t generation, enum key_note which,
		 const char *buf, size_t len, int flags,
		 const struct caller *who);

/*
 * The first line of a key's content, "STATUS GENERATION\n", into buf;
 * returns its length.
 */
size_t key_status_line(const struct key_row *k, char *buf, size_t size);

/*
 * What an open file of the key reads: its status line into line (*line_len
 * bytes), then its result, content version out->content of
 * out->result_len bytes, pinned for the file: store_unpin() it at close.
 * The file costs no copy of the result.
 */
int key_open_content(struct once *o, int64_t generation, struct key_row *out,
		     char *line, size_t size, size_t *line_len);

/*
 * What reading the key gives, whole: "STATUS GENERATION\n" and the result
 * (at most max_result bytes).  *buf is malloc'd; the caller frees it.
 */
int key_content(struct once *o, int64_t generation, struct key_row *out,
		char **buf, size_t *len);

/*
 * The checks of write(): may these bytes, written so far through a handle
 * of this generation, still finalize the key?  An unfinished status line
 * passes.  -EINVAL, -EFBIG, -ESTALE, or the refusal of a terminal key.
 */
int key_check_write(struct once *o, int64_t generation, const char *buf,
		    size_t len, const struct caller *who);

/*
 * Finalize with all the bytes of a handle (the commit at flush); name is
 * the key's (the handle's).
 */
int key_finalize(struct once *o, int64_t generation, const char *name,
		 size_t name_len, const char *buf, size_t len,
		 const struct caller *who);

/*
 * The claim of generation has no holder any more: its handle closed with
 * no finalize (the holder crashed, was killed, raised or exited; fate says
 * how, when known), or the reply to its open was lost (the opener was
 * killed or interrupted; fate NULL, why says so).  The key is free at
 * once, vacant with its attempt count, and "abandon" is logged as `who`
 * (the holder).  -ESTALE when the generation is no longer in flight.
 */
struct holder_fate;
int key_abandon(struct once *o, int64_t generation, const char *name,
		size_t name_len, const struct caller *who,
		const struct holder_fate *fate, const char *why);

/* rm keys/K: -ENOENT when no live key has that name. */
int key_release(struct once *o, int64_t wf, const char *name, size_t len,
		const struct caller *who);

/* touch keys/K or a time change through the key's inode: renew the lease. */
int key_touch(struct once *o, int64_t generation, const struct caller *who);

/*
 * Renew the short leases of claims whose handles are open (see
 * once_config.lease_ms), when a third has passed.  Generations that are no
 * longer in_flight, and longer leases (touch, detach), are left alone.
 */
int key_renew(struct once *o, const int64_t *generations, size_t n);

/*
 * Record in the events log that a handle of an old generation of key
 * `name` was refused (-ESTALE).  Best effort: returns the store's error.
 */
int key_fenced(struct once *o, int64_t wf, const char *name, size_t len,
	       int64_t generation, const struct caller *who);

/* Live keys with id > after, in id order (a stable cursor). */
int key_list(struct once *o, int64_t wf, int64_t after, struct key_row *rows,
	     int max, int *n);

#endif
