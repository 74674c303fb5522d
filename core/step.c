/*
 * step.c - checkpoints and input fingerprints (see step.h).
 */
#include <errno.h>
#include <string.h>

#include "step.h"

/* Inside a transaction: the effect a new value would have on w. */
static int decide(struct once *o, const struct wf_row *w, const char *value,
		  size_t len, bool *same)
{
	int64_t n = 0;
	int rc;

	*same = len == w->fingerprint_len &&
		memcmp(value, w->fingerprint, len) == 0;
	if (*same || w->policy.on_input_change != ON_INPUT_RAISE)
		return 0;
	rc = store_step_count(o->store, w->id, w->epoch, &n);
	if (rc == 0 && n > 0)
		rc = -EBUSY;
	return rc;
}

int step_check_fingerprint(struct once *o, int64_t wf, const char *buf,
			   size_t len)
{
	struct wf_row w;
	size_t vlen;
	bool same;
	int rc = fingerprint_parse(buf, len, &vlen);

	if (rc)
		return rc;
	rc = store_begin(o->store, false);
	if (rc)
		return rc;
	rc = store_wf_by_id(o->store, wf, &w);
	if (rc == 0)
		rc = decide(o, &w, buf, vlen, &same);
	return once_end(o, rc);
}

int step_set_fingerprint(struct once *o, int64_t wf, const char *buf,
			 size_t len, const struct caller *who)
{
	struct event ev = { .type = "fingerprint", .detail_field = "value" };
	struct wf_row w;
	size_t vlen = 0;
	bool same;
	int rc = buf ? fingerprint_parse(buf, len, &vlen) : 0;

	if (rc)
		return rc;
	rc = store_begin(o->store, true);
	if (rc)
		return rc;
	rc = store_wf_by_id(o->store, wf, &w);
	if (rc == 0)
		rc = decide(o, &w, buf, vlen, &same);
	if (rc || same)
		goto out;
	if (w.policy.on_input_change == ON_INPUT_RESET) {
		struct event inv = {
			.type = "invalidate",
			.number_field = "epoch",
			.number_field_value = w.epoch,
		};

		rc = once_event(o, wf, who, &inv);
		w.epoch++;
	}
	memcpy(w.fingerprint, buf ? buf : "", vlen);
	w.fingerprint[vlen] = '\0';
	w.fingerprint_len = vlen;
	w.ctime_ns = once_now_ms(o) * 1000000;
	if (rc == 0)
		rc = store_wf_update(o->store, &w);
	ev.detail = w.fingerprint;
	ev.detail_len = vlen;
	if (rc == 0)
		rc = once_event(o, wf, who, &ev);
out:
	return once_end(o, rc);
}
