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
	if (!rc && ev->generation)
		rc = json_put_int(&b, "generation", ev->generation);
	if (!rc && ev->detail_field && ev->detail)
		rc = json_put_string(&b, ev->detail_field, ev->detail,
				     ev->detail_len);
	if (!rc && ev->number_field)
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
