/*
 * event.c - rendering an event line (see event.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "event.h"
#include "json.h"

int event_render(const struct event *ev, char *buf, size_t size, size_t *len)
{
	struct json_buf b;
	struct tm tm;
	char when[80];
	int64_t ms = ev->time_ms % 1000, sec = ev->time_ms / 1000;
	time_t t;
	int rc;

	if (ms < 0) {
		ms += 1000;
		sec--;
	}
	t = (time_t)sec;
	if (!gmtime_r(&t, &tm))
		return -EINVAL;
	snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, (int)ms);
	json_buf_fixed(&b, buf, size);
	rc = json_object_begin(&b);
	if (!rc)
		rc = json_put_string(&b, "time", when, strlen(when));
	if (!rc)
		rc = json_put_string(&b, "event", ev->type, strlen(ev->type));
	if (!rc && ev->subject && ev->name)
		rc = json_put_string(&b, ev->subject, ev->name, ev->name_len);
	if (!rc && ev->generation == EVENT_LATER)
		rc = json_put_literal(&b, "generation", EVENT_MARK_GENERATION);
	else if (!rc && ev->generation)
		rc = json_put_int(&b, "generation", ev->generation);
	if (!rc && ev->detail_field && ev->detail)
		rc = json_put_string(&b, ev->detail_field, ev->detail,
				     ev->detail_len);
	if (!rc && ev->number_field && ev->number_field_value == EVENT_LATER)
		rc = json_put_literal(&b, ev->number_field, EVENT_MARK_NUMBER);
	else if (!rc && ev->number_field)
		rc = json_put_int(&b, ev->number_field, ev->number_field_value);
	if (!rc && ev->text_field && ev->text) {
		size_t n = ev->text_len;

		/* Cut where no UTF-8 sequence is split, so text stays text. */
		if (n > EVENT_TEXT_MAX) {
			n = EVENT_TEXT_MAX;
			while (n > 0 && ((unsigned char)ev->text[n] & 0xc0) == 0x80)
				n--;
		}
		rc = json_put_string(&b, ev->text_field, ev->text, n);
		if (!rc && n < ev->text_len) {
			char cut[64];

			snprintf(cut, sizeof(cut), "%s_truncated", ev->text_field);
			rc = json_put_bool(&b, cut, true);
		}
	}
	if (!rc)
		rc = json_put_int(&b, "pid", ev->pid);
	if (!rc)
		rc = json_put_int(&b, "uid", ev->uid);
	if (!rc)
		rc = json_object_end(&b);
	if (rc)
		return rc;
	*len = b.len;
	return 0;
}

/* ---- reading a line back ---------------------------------------------- */

struct reader {
	const char *p, *end;
	char *out, *out_end;	/* the scratch, for decoded strings */
};

static void skip_space(struct reader *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' ||
				 *r->p == '\n' || *r->p == '\r'))
		r->p++;
}

static int hex4(struct reader *r, unsigned *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		char c = r->p < r->end ? *r->p++ : 0;

		*v <<= 4;
		if (c >= '0' && c <= '9')
			*v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			*v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			*v |= (unsigned)(c - 'A' + 10);
		else
			return -EINVAL;
	}
	return 0;
}

static int put_utf8(struct reader *r, unsigned cp)
{
	unsigned char b[4];
	size_t n;

	if (cp < 0x80) {
		b[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (unsigned char)(0xc0 | cp >> 6);
		b[1] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (unsigned char)(0xe0 | cp >> 12);
		b[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		b[0] = (unsigned char)(0xf0 | cp >> 18);
		b[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		b[3] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	if ((size_t)(r->out_end - r->out) < n)
		return -EINVAL;
	memcpy(r->out, b, n);
	r->out += n;
	return 0;
}

/* A JSON string at r->p, decoded into the scratch; *s its start there. */
static int read_string(struct reader *r, const char **s)
{
	if (r->p >= r->end || *r->p != '"')
		return -EINVAL;
	r->p++;
	*s = r->out;
	while (r->p < r->end && *r->p != '"') {
		unsigned char c = (unsigned char)*r->p++;
		unsigned cp, lo;

		if (c < 0x20)
			return -EINVAL;
		if (c != '\\') {
			if (r->out >= r->out_end)
				return -EINVAL;
			*r->out++ = (char)c;
			continue;
		}
		c = r->p < r->end ? (unsigned char)*r->p++ : 0;
		switch (c) {
		case '"': case '\\': case '/':
			cp = c;
			break;
		case 'b': cp = '\b'; break;
		case 'f': cp = '\f'; break;
		case 'n': cp = '\n'; break;
		case 'r': cp = '\r'; break;
		case 't': cp = '\t'; break;
		case 'u':
			if (hex4(r, &cp))
				return -EINVAL;
			if (cp >= 0xd800 && cp < 0xdc00) {
				if (r->end - r->p < 6 || r->p[0] != '\\' ||
				    r->p[1] != 'u')
					return -EINVAL;
				r->p += 2;
				if (hex4(r, &lo) || lo < 0xdc00 || lo > 0xdfff)
					return -EINVAL;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			} else if (cp >= 0xdc00 && cp < 0xe000) {
				return -EINVAL;
			}
			break;
		default:
			return -EINVAL;
		}
		if (put_utf8(r, cp))
			return -EINVAL;
	}
	if (r->p >= r->end || r->out >= r->out_end)
		return -EINVAL;
	r->p++;
	*r->out++ = '\0';
	return 0;
}

/* An integer, or true/false/null (which read as 0). */
static int read_scalar(struct reader *r, int64_t *v, bool *number)
{
	static const char *const words[] = { "true", "false", "null" };
	bool neg = false;
	uint64_t u = 0;
	int digits = 0;

	*number = false;
	for (size_t i = 0; i < 3; i++) {
		size_t n = strlen(words[i]);

		if ((size_t)(r->end - r->p) >= n && memcmp(r->p, words[i], n) == 0) {
			r->p += n;
			*v = 0;
			return 0;
		}
	}
	if (r->p < r->end && *r->p == '-') {
		neg = true;
		r->p++;
	}
	while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
		uint64_t d = (uint64_t)(*r->p++ - '0');

		if (u > ((uint64_t)INT64_MAX - d) / 10)
			return -EINVAL;		/* past int64_t: no line of ours */
		u = u * 10 + d;
		digits++;
	}
	if (digits == 0)
		return -EINVAL;
	*v = neg ? -(int64_t)u : (int64_t)u;
	*number = true;
	return 0;
}

/* The first of these members that the line has, in this order. */
static const char *const subject_fields[] = {
	"key", "step", "policy", "key_hex", "step_hex",
};
static const char *const detail_fields[] = { "status", "value", "from" };

static int rank(const char *name, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(name, list[i]) == 0)
			return (int)i;
	return -1;
}

int event_parse(const char *line, size_t len, struct event_view *out,
		char *scratch, size_t cap)
{
	struct reader r = { line, line + len, scratch, scratch + cap };
	int subject_rank = 99, detail_rank = 99;

	out->type = out->subject = out->detail = "";
	out->generation = out->pid = out->uid = 0;
	skip_space(&r);
	if (r.p >= r.end || *r.p++ != '{')
		return -EINVAL;
	skip_space(&r);
	if (r.p < r.end && *r.p == '}')
		return 0;
	for (;;) {
		const char *name, *str = NULL;
		int64_t v = 0;
		bool number = false;
		int k;

		skip_space(&r);
		if (read_string(&r, &name))
			return -EINVAL;
		skip_space(&r);
		if (r.p >= r.end || *r.p++ != ':')
			return -EINVAL;
		skip_space(&r);
		if (r.p < r.end && *r.p == '"') {
			if (read_string(&r, &str))
				return -EINVAL;
		} else if (read_scalar(&r, &v, &number)) {
			return -EINVAL;
		}
		if (str && strcmp(name, "event") == 0)
			out->type = str;
		else if (str && (k = rank(name, subject_fields, 5)) >= 0 &&
			 k < subject_rank) {
			out->subject = str;
			subject_rank = k;
		} else if (str && (k = rank(name, detail_fields, 3)) >= 0 &&
			   k < detail_rank) {
			out->detail = str;
			detail_rank = k;
		} else if (number && strcmp(name, "generation") == 0) {
			out->generation = v;
		} else if (number && strcmp(name, "pid") == 0) {
			out->pid = v;
		} else if (number && strcmp(name, "uid") == 0) {
			out->uid = v;
		}
		skip_space(&r);
		if (r.p < r.end && *r.p == ',') {
			r.p++;
			continue;
		}
		if (r.p < r.end && *r.p == '}') {
			r.p++;
			break;
		}
		return -EINVAL;
	}
	skip_space(&r);
	return r.p == r.end ? 0 : -EINVAL;
}
