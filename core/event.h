/*
 * event.h - one line of a workflow's events file, rendered in C.
 *
 *   {"time":"2026-11-21T03:00:00.000Z","event":"claim","key":"k",
 *    "generation":17,"attempt":1,"pid":42,"uid":1000}
 *
 * Members in that order, absent ones left out: time (UTC, milliseconds),
 * event, the subject's name under its kind ("key", "step", "policy"; with
 * "_hex" and lowercase hex for a name that is not UTF-8), generation,
 * the detail field, the number field, the text field (cut to
 * EVENT_TEXT_MAX bytes, then "text_field_truncated":true), pid, uid.  Strings go through the
 * one JSON encoder (json.h) that oncectl uses too, so a line is the same
 * bytes whichever store keeps it.
 */
#ifndef ONCE_EVENT_H
#define ONCE_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* The most bytes of a text field an event keeps (a failure's result). */
#define EVENT_TEXT_MAX 2048

/*
 * The longest line event_render() writes, without its newline: room for
 * a text field whose every byte is escaped (\u00XX), and the rest.
 */
#define EVENT_LINE_MAX (6 * EVENT_TEXT_MAX + 2048)

/*
 * A number only the store knows when the event is rendered (store_claim
 * draws the generation and counts the attempt in the same statement):
 * an event whose generation or number_field_value is EVENT_LATER renders
 * it as EVENT_MARK_GENERATION or EVENT_MARK_NUMBER, bytes that no other
 * part of a line can hold (the encoder escapes every control byte), and
 * the backend puts the number there in decimal, as json_put_int() would.
 */
#define EVENT_LATER INT64_MIN
#define EVENT_MARK_GENERATION "\001g"
#define EVENT_MARK_NUMBER "\001n"

/* Render ev into buf (EVENT_LINE_MAX + 1 bytes); *len gets its length. */
int event_render(const struct event *ev, char *buf, size_t size, size_t *len);

/*
 * Read back what oncectl shows of a line: its event type, subject (key,
 * step or policy, or their _hex form), generation, detail (status, value
 * or from), pid and uid, into out (whose time_ms and line the caller
 * set).  The strings are decoded into scratch (at least the line's length
 * plus one); a member absent, or not of its type, is "" or 0.  -EINVAL
 * when the line is not one flat JSON object of strings and integers (a
 * store edited by hand): nothing read from a store is trusted.
 */
int event_parse(const char *line, size_t len, struct event_view *out,
		char *scratch, size_t cap);

#endif
