/*
 * json.c - JSON text from byte strings (see json.h for the rules).
 */
#include "json.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char hexdigit[] = "0123456789abcdef";

void json_buf_fixed(struct json_buf *b, char *mem, size_t size)
{
	b->data = mem;
	b->cap = size;
	b->max = size ? size - 1 : 0;
	b->len = 0;
	b->fixed = true;
	if (size)
		mem[0] = '\0';
}

void json_buf_growing(struct json_buf *b, size_t max)
{
	b->data = NULL;
	b->cap = 0;
	b->max = max < SIZE_MAX ? max : SIZE_MAX - 1;
	b->len = 0;
	b->fixed = false;
}

void json_buf_free(struct json_buf *b)
{
	if (!b->fixed) {
		free(b->data);
		b->data = NULL;
		b->cap = 0;
	}
	json_buf_reset(b);
}

void json_buf_reset(struct json_buf *b)
{
	b->len = 0;
	if (b->cap)
		b->data[0] = '\0';
}

const char *json_buf_text(const struct json_buf *b)
{
	return b->cap ? b->data : "";
}

/* Room for extra more bytes of text (and the NUL), or -ENOSPC / -ENOMEM. */
static int reserve(struct json_buf *b, size_t extra)
{
	size_t need, cap;
	char *p;

	if (extra > b->max || b->len > b->max - extra)
		return -ENOSPC;
	need = b->len + extra + 1;
	if (need <= b->cap)
		return 0;
	if (b->fixed)
		return -ENOSPC;	/* not reached: max is cap - 1 */
	cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if (cap > b->max + 1)
		cap = b->max + 1;
	p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

/*
 * The length of the valid UTF-8 sequence at p[0] (p holds n >= 1 bytes),
 * or 0.  The ranges are RFC 3629's table, which excludes overlong forms
 * (C0, C1, E0 80-9F, F0 80-8F), surrogates (ED A0-BF) and code points
 * past U+10FFFF (F4 90-BF, F5-FF).
 */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
	unsigned char c = p[0], lo = 0x80, hi = 0xbf;
	size_t len;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;	/* a continuation byte, C0, C1, F5-FF */
	}
	if (n < len)
		return 0;	/* truncated */
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t k = 2; k < len; k++) {
		if (p[k] < 0x80 || p[k] > 0xbf)
			return 0;
	}
	return len;
}

bool json_is_utf8(const void *s, size_t len)
{
	const unsigned char *p = s;
	size_t i = 0;

	while (i < len) {
		size_t n = utf8_seq(p + i, len - i);

		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/* How many bytes one byte of valid text takes inside the quotes. */
static size_t escaped_len(unsigned char c)
{
	if (c == '"' || c == '\\' || c == '\n' || c == '\t')
		return 2;
	if (c < 0x20 || c == 0x7f)
		return 6;
	return 1;
}

size_t json_quoted_len(const void *s, size_t len)
{
	const unsigned char *p = s;
	size_t out = 2;

	if (!json_is_utf8(s, len))
		return 0;
	for (size_t i = 0; i < len; i++)
		out += escaped_len(p[i]);
	return out;
}

/* Write the literal of valid text s; the room was reserved. */
static void write_quoted(struct json_buf *b, const unsigned char *s, size_t len)
{
	char *o = b->data + b->len;

	*o++ = '"';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = s[i];

		switch (escaped_len(c)) {
		case 1:
			*o++ = (char)c;
			break;
		case 2:
			*o++ = '\\';
			*o++ = c == '\n' ? 'n' : c == '\t' ? 't' : (char)c;
			break;
		default:
			memcpy(o, "\\u00", 4);
			o[4] = hexdigit[c >> 4];
			o[5] = hexdigit[c & 15];
			o += 6;
			break;
		}
	}
	*o++ = '"';
	*o = '\0';
	b->len = (size_t)(o - b->data);
}

int json_put_raw(struct json_buf *b, const char *s, size_t len)
{
	int rc = reserve(b, len);

	if (rc)
		return rc;
	if (len)
		memcpy(b->data + b->len, s, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

int json_put_quoted(struct json_buf *b, const void *s, size_t len)
{
	size_t n = json_quoted_len(s, len);
	int rc;

	if (n == 0)
		return -EILSEQ;
	rc = reserve(b, n);
	if (rc)
		return rc;
	write_quoted(b, s, len);
	return 0;
}

static int put_hex_literal(struct json_buf *b, const unsigned char *s, size_t len)
{
	char *o;
	int rc;

	if (len > (SIZE_MAX - 2) / 2)
		return -ENOSPC;
	rc = reserve(b, 2 * len + 2);
	if (rc)
		return rc;
	o = b->data + b->len;
	*o++ = '"';
	for (size_t i = 0; i < len; i++) {
		*o++ = hexdigit[s[i] >> 4];
		*o++ = hexdigit[s[i] & 15];
	}
	*o++ = '"';
	*o = '\0';
	b->len = (size_t)(o - b->data);
	return 0;
}

int json_object_begin(struct json_buf *b)
{
	return json_put_raw(b, "{", 1);
}

int json_object_end(struct json_buf *b)
{
	return json_put_raw(b, "}", 1);
}

/* Undo a partly appended member. */
static int undo(struct json_buf *b, size_t len, int rc)
{
	b->len = len;
	if (b->cap)
		b->data[len] = '\0';
	return rc;
}

/* ,"field[_hex]": -- the comma unless the member follows the '{'. */
static int put_name(struct json_buf *b, const char *field, bool hex)
{
	char name[128];
	size_t flen = strlen(field);
	int rc = 0;

	if (flen + 4 >= sizeof(name) || !json_is_utf8(field, flen))
		return -EINVAL;
	memcpy(name, field, flen);
	if (hex) {
		memcpy(name + flen, "_hex", 4);
		flen += 4;
	}
	if (b->len > 0 && b->data[b->len - 1] != '{')
		rc = json_put_raw(b, ",", 1);
	if (rc == 0)
		rc = json_put_quoted(b, name, flen);
	if (rc == 0)
		rc = json_put_raw(b, ":", 1);
	return rc;
}

int json_put_string(struct json_buf *b, const char *field, const void *s,
		    size_t len)
{
	size_t save = b->len;
	bool text = json_is_utf8(s, len);
	int rc = put_name(b, field, !text);

	if (rc == 0)
		rc = text ? json_put_quoted(b, s, len) : put_hex_literal(b, s, len);
	return rc ? undo(b, save, rc) : 0;
}

int json_put_hex(struct json_buf *b, const char *field, const void *s, size_t len)
{
	size_t save = b->len;
	int rc = put_name(b, field, false);

	if (rc == 0)
		rc = put_hex_literal(b, s, len);
	return rc ? undo(b, save, rc) : 0;
}

int json_put_literal(struct json_buf *b, const char *field, const char *v)
{
	size_t save = b->len;
	int rc = put_name(b, field, false);

	if (rc == 0)
		rc = json_put_raw(b, v, strlen(v));
	return rc ? undo(b, save, rc) : 0;
}

int json_put_int(struct json_buf *b, const char *field, int64_t v)
{
	char num[24];

	snprintf(num, sizeof(num), "%" PRId64, v);
	return json_put_literal(b, field, num);
}

int json_put_bool(struct json_buf *b, const char *field, bool v)
{
	return json_put_literal(b, field, v ? "true" : "false");
}

int json_put_null(struct json_buf *b, const char *field)
{
	return json_put_literal(b, field, "null");
}
