/*
 * json.h - JSON text from byte strings: one encoder for oncectl's output
 * and for the daemon's event lines.
 *
 * Names of workflows, keys and steps are any bytes but '/' and NUL, so
 * they are not always text.  The rule, the same everywhere in oncefs:
 *
 *   - bytes that are valid UTF-8 (RFC 3629: no overlong forms, no
 *     surrogates, nothing past U+10FFFF, no truncated sequence) become a
 *     JSON string holding the same characters; the multi-byte sequences
 *     are copied as they are, '"' and '\' are escaped, and so are the
 *     control characters: \n, \t, and \u00XX (lowercase hex) for the
 *     other bytes below 0x20 and for 0x7f;
 *   - bytes that are not valid UTF-8 are written losslessly under the
 *     field name with "_hex" appended, as lowercase hex, two digits a
 *     byte: {"key_hex":"ff41"} for the name "\xff" "A".  A reader takes
 *     FIELD, or else FIELD_hex, and gets the exact bytes back.
 *
 * Output goes to a struct json_buf: either the caller's fixed buffer or a
 * growing one with a maximum.  Every json_put_* appends whole or not at
 * all: when the text would not fit (-ENOSPC) or memory runs out (-ENOMEM)
 * the buffer is left as it was before the call.  The text is always
 * NUL-terminated.
 *
 * Fields: json_object_begin() appends '{'; each json_put_FIELD() appends
 * "name":value, preceded by a ',' unless it is the first member after the
 * '{'; json_object_end() appends '}'.  An event line is
 *
 *     json_object_begin(&b);
 *     json_put_string(&b, "time", t, strlen(t));
 *     json_put_string(&b, "event", "claim", 5);
 *     json_put_string(&b, "key", name, name_len);    // key or key_hex
 *     json_put_int(&b, "generation", gen);
 *     json_object_end(&b);
 *
 * Field names are given by the program, and must be valid UTF-8 (they go
 * through the same escaping); a field name that is not is -EINVAL.
 */
#ifndef ONCE_JSON_H
#define ONCE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_buf {
	char *data;		/* the text, NUL-terminated; NULL before the first byte of a growing buffer */
	size_t len;		/* its length, without the NUL */
	size_t cap;		/* bytes allocated at data (including room for the NUL) */
	size_t max;		/* the most len may reach */
	bool fixed;		/* data is the caller's memory: never reallocated or freed */
};

/*
 * A buffer over the caller's memory: at most size - 1 bytes of text and a
 * NUL.  size must be at least 1.
 */
void json_buf_fixed(struct json_buf *b, char *mem, size_t size);

/* A growing buffer (malloc'd) whose text may reach max bytes. */
void json_buf_growing(struct json_buf *b, size_t max);

/* Free a growing buffer's memory (a fixed buffer: nothing); empty again. */
void json_buf_free(struct json_buf *b);

/* Forget the text, keep the memory. */
void json_buf_reset(struct json_buf *b);

/* The text ("" when nothing was appended). */
const char *json_buf_text(const struct json_buf *b);

/* True when the bytes are valid UTF-8 (RFC 3629), as defined above. */
bool json_is_utf8(const void *s, size_t len);

/*
 * The length of the JSON string literal (quotes included) for valid UTF-8
 * bytes, or 0 when they are not valid UTF-8.
 */
size_t json_quoted_len(const void *s, size_t len);

/* Append raw text, as it is (the caller's JSON: a '[', a ',' or a '\n'). */
int json_put_raw(struct json_buf *b, const char *s, size_t len);

/*
 * Append a JSON string literal of s.  -EILSEQ (nothing appended) when s is
 * not valid UTF-8: use json_put_string() for bytes that may not be text.
 */
int json_put_quoted(struct json_buf *b, const void *s, size_t len);

/* Append '{' or '}'. */
int json_object_begin(struct json_buf *b);
int json_object_end(struct json_buf *b);

/*
 * Append the member "field":"s" when s is valid UTF-8, else
 * "field_hex":"<hex of s>".  Returns 0, -ENOSPC, -ENOMEM or -EINVAL.
 */
int json_put_string(struct json_buf *b, const char *field, const void *s,
		    size_t len);

/* "field":"<hex of s>", whatever s holds. */
int json_put_hex(struct json_buf *b, const char *field, const void *s, size_t len);

/* "field":v */
int json_put_int(struct json_buf *b, const char *field, int64_t v);

/* "field":v, v as it is: JSON text of the caller's (or a mark, event.h). */
int json_put_literal(struct json_buf *b, const char *field, const char *v);

/* "field":true or false */
int json_put_bool(struct json_buf *b, const char *field, bool v);

/* "field":null */
int json_put_null(struct json_buf *b, const char *field);

#endif
