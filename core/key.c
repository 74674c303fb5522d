/*
 * key.c - the key state machine (see key.h for the diagram).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "fingerprint.h"
#include "holder.h"
#include "key.h"
#include "wait.h"

bool key_is_live(const struct key_row *k, int64_t now_ms)
{
	return store_key_live(k, now_ms);
}

/*
 * The lease of a held claim: short, renewed while its handle is open, so
 * that the claims of a mount that died are free within it; the store
 * cuts it to the workflow's in_flight_ttl.
 */
static int64_t held_lease_ms(const struct once *o)
{
	return o->config.lease_ms > 0 ? o->config.lease_ms
				      : ONCE_LEASE_MS_DEFAULT;
}

static bool is_terminal(const struct key_row *k)
{
	return k->status == KEY_SUCCEEDED || k->status == KEY_FAILED;
}

int key_refuse_write(const struct caller *who)
{
	return who->uid == 0 ? -EPERM : -EACCES;
}

static void key_event(struct event *ev, const char *type,
		      const struct key_row *k)
{
	*ev = (struct event){
		.type = type,
		.subject = "key",
		.name = k->name,
		.name_len = k->name_len,
		.generation = k->generation,
	};
}

int key_lookup(struct once *o, int64_t wf, const char *name, size_t len,
	       struct key_row *out, struct wf_row *w)
{
	struct wf_row own;
	int rc = name_check(name, len);

	if (rc)
		return rc;
	rc = store_lookup_key(o->store, wf, name, len, w ? w : &own, out);
	if (rc == 0 && !key_is_live(out, once_now_ms(o)))
		rc = -ENOENT;
	return rc;
}

/*
 * Inside a transaction: the row of a generation, or -ESTALE.  One rule,
 * whether or not a sweep has run: a claim whose lease has passed is dead
 * for its generation (a finalize, a touch or a renewal through it is
 * fenced), exactly as when the sweep has made it vacant; the next claim
 * adopts it.
 */
static int get_generation(struct once *o, int64_t generation,
			  struct key_row *out)
{
	return store_generation_get(o->store, generation, once_now_ms(o), out);
}

int key_get(struct once *o, int64_t generation, struct key_row *out,
	    struct wf_row *w)
{
	int rc = store_lookup_generation(o->store, generation, out, w);

	if (rc == -ENOENT)
		return -ESTALE;
	return rc ? rc : store_key_current(out, once_now_ms(o));
}

size_t key_status_line(const struct key_row *k, char *buf, size_t size)
{
	int n = snprintf(buf, size, "%s %" PRId64 "\n", status_name(k->status),
			 k->generation);

	return n < 0 ? 0 : (size_t)n;
}

static int claim(struct once *o, int64_t wf, const char *name, size_t len,
		 const struct caller *who, struct key_row *out,
		 struct wf_row *wf_out)
{
	struct event claim_ev, expire_ev, adopt_ev;
	struct key_row k;
	struct wf_row w;
	struct store_claim c = {
		.wf = wf,
		.name = name,
		.len = len,
		.now_ms = once_now_ms(o),
		.lease_ms = held_lease_ms(o),
		.pid = who->pid,
		.uid = who->uid,
		.host = o->config.host,
		.claim = &claim_ev,
		.expire = &expire_ev,
		.adopt = &adopt_ev,
	};
	bool adopt = false;
	int rc = name_check(name, len);

	if (rc)
		return rc;
	name_copy(k.name, &k.name_len, name, len);
	k.generation = EVENT_LATER;
	key_event(&claim_ev, "claim", &k);
	claim_ev.number_field = "attempt";
	claim_ev.number_field_value = EVENT_LATER;
	key_event(&expire_ev, "expire", &k);
	key_event(&adopt_ev, "adopt", &k);
	adopt_ev.number_field = "previous";
	adopt_ev.number_field_value = EVENT_LATER;
	once_stamp(&claim_ev, who, c.now_ms);
	once_stamp(&expire_ev, who, c.now_ms);
	once_stamp(&adopt_ev, who, c.now_ms);
	rc = store_claim(o->store, &c, out, &w, &adopt);
	if (rc == 0 && wf_out)
		*wf_out = w;
	if (rc == 0)
		once_count(adopt ? &o->stats.adoptions : &o->stats.claims);
	if (rc == 0 && adopt)
		wait_changed(o->waits, out->previous);
	else if (rc == -EEXIST)
		once_count(&o->stats.conflicts);
	return rc;
}

/* ---- notes ------------------------------------------------------------ */

static const char *const note_field[] = {
	[KEY_NOTE_REQUEST] = "request",
	[KEY_NOTE_ORIGINAL] = "original",
};

/* Is buf a value this note may take?  Its stored form into *len. */
static int check_note(enum key_note which, const char *buf, size_t *len)
{
	size_t n = *len;

	if (which == KEY_NOTE_REQUEST)
		return fingerprint_parse(buf, n, len) || *len == 0 ? -EINVAL : 0;
	if (n == 0)
		return -EINVAL;
	return n > KEY_ORIGINAL_MAX ? -E2BIG : 0;
}

int key_note(struct once *o, int64_t generation, enum key_note which,
	     char *buf, size_t *len)
{
	struct key_row k;
	int rc = store_begin(o->store, false);

	if (rc)
		return rc;
	rc = get_generation(o, generation, &k);
	if (rc == 0)
		rc = store_key_note(o->store, k.id, which, buf, len);
	return once_end(o, rc);
}

int key_set_note(struct once *o, int64_t generation, enum key_note which,
		 const char *buf, size_t len, int flags, const struct caller *who)
{
	char old[KEY_ORIGINAL_MAX];
	size_t old_len = 0;
	struct key_row k;
	struct event ev;
	int rc = check_note(which, buf, &len);

	if (rc)
		return rc;
	rc = store_begin(o->store, true);
	if (rc)
		return rc;
	rc = get_generation(o, generation, &k);
	if (rc == 0 && is_terminal(&k))
		rc = key_refuse_write(who);
	if (rc)
		goto out;
	rc = store_key_note(o->store, k.id, which, old, &old_len);
	if (rc == 0 && (flags & KEY_NOTE_CREATE))
		rc = -EEXIST;
	else if (rc == -ENODATA)
		rc = flags & KEY_NOTE_REPLACE ? -ENODATA : 0;
	if (rc)
		goto out;
	if (old_len == len && memcmp(old, buf, len) == 0)
		goto out;	/* the same value again changes nothing */
	rc = store_key_set_note(o->store, k.id, which, buf, len);
	key_event(&ev, "note", &k);
	ev.text_field = note_field[which];
	ev.text = buf;
	ev.text_len = len;
	if (rc == 0)
		rc = once_event(o, k.wf, who, &ev);
out:
	return once_end(o, rc);
}

int key_claim(struct once *o, int64_t wf, const char *name, size_t len,
	      const struct caller *who, struct key_row *out, struct wf_row *w)
{
	int64_t start = metrics_now_ns();
	int rc = claim(o, wf, name, len, who, out, w);

	histogram_observe(&o->latencies.claim, start);
	return rc;
}

int key_open_content(struct once *o, int64_t generation, struct key_row *out,
		     char *line, size_t size, size_t *line_len)
{
	int rc;

	/* A version that went between the read and the pin: read again. */
	for (int tries = 0; tries < 8; tries++) {
		rc = store_begin(o->store, false);
		if (rc)
			return rc;
		rc = get_generation(o, generation, out);
		rc = once_end(o, rc);
		if (rc)
			return rc;
		rc = store_pin(o->store, out->content, once_now_ms(o));
		if (rc != -ENOENT)
			break;
	}
	if (rc)
		return rc == -ENOENT ? -EAGAIN : rc;
	*line_len = key_status_line(out, line, size);
	return 0;
}

int key_content(struct once *o, int64_t generation, struct key_row *out,
		char **buf, size_t *len)
{
	char line[KEY_STATUS_LINE_MAX + 32];
	size_t n = 0, got = 0;
	char *p;
	int rc = key_open_content(o, generation, out, line, sizeof(line), &n);

	*buf = NULL;
	*len = 0;
	if (rc)
		return rc;
	p = malloc(n + (size_t)out->result_len + 1);
	rc = p ? 0 : -ENOMEM;
	if (rc == 0) {
		memcpy(p, line, n);
		rc = store_content_read(o->store, out->content, out->result_len,
					0, p + n, (size_t)out->result_len, &got);
	}
	if (rc == 0 && got != (size_t)out->result_len)
		rc = -EIO;
	store_unpin(o->store, out->content);
	if (rc) {
		free(p);
		return rc;
	}
	*buf = p;
	*len = n + got;
	return 0;
}

/* The checks that need no store: grammar and sizes. */
static int check_bytes(struct once *o, const char *buf, size_t len,
		       bool complete, struct status_line *sl)
{
	const char *nl = memchr(buf, '\n', len);
	size_t line = nl ? (size_t)(nl - buf) : len;
	int rc;

	if (line > KEY_STATUS_LINE_MAX)
		return -EINVAL;
	rc = status_parse(buf, len, complete, sl);
	if (rc)
		return rc;
	if (sl->status == KEY_IN_FLIGHT && len > sl->result_off)
		return -EINVAL;		/* "detach" takes no result */
	if (len - sl->result_off > o->config.max_result)
		return -EFBIG;
	return 0;
}

/*
 * Could the digits of a generation read so far (an unfinished status
 * line) still become this generation?
 */
static bool generation_prefix(const struct status_line *sl, int64_t generation)
{
	int64_t g = generation;
	int digits = 0;

	for (int64_t v = generation; v > 0; v /= 10)
		digits++;
	if (sl->generation_digits > digits)
		return false;
	for (int i = sl->generation_digits; i < digits; i++)
		g /= 10;
	return g == sl->generation;
}

static int check_row(const struct key_row *k, int64_t generation,
		     const struct status_line *sl, bool whole,
		     const struct caller *who);

/*
 * Inside a transaction: may a handle of this generation finalize?  sl is
 * the status line (whole or unfinished), or NULL.
 */
static int check_key(struct once *o, int64_t generation,
		     const struct status_line *sl, bool whole,
		     const struct caller *who, struct key_row *k)
{
	int rc = get_generation(o, generation, k);

	return rc ? rc : check_row(k, generation, sl, whole, who);
}

/* check_key() of a row read already. */
static int check_row(const struct key_row *k, int64_t generation,
		     const struct status_line *sl, bool whole,
		     const struct caller *who)
{
	if (is_terminal(k))
		return key_refuse_write(who);
	if (sl && sl->generation_digits) {
		if (whole ? sl->generation != generation
			  : !generation_prefix(sl, generation))
			return -ESTALE;
	}
	return 0;
}

int key_check_write(struct once *o, int64_t generation, const char *buf,
		    size_t len, const struct caller *who)
{
	struct status_line sl;
	struct key_row k;
	int rc = check_bytes(o, buf, len, false, &sl);
	bool whole = rc == 0;

	if (rc && rc != -EAGAIN)
		return rc;
	rc = key_get(o, generation, &k, NULL);
	if (rc == 0)
		rc = check_row(&k, generation, &sl, whole, who);
	if (rc == -ESTALE)
		once_count(&o->stats.fenced);
	return rc;
}

/*
 * Inside a write transaction: extend the lease of an in_flight key by
 * in_flight_ttl, as asked by path (touch) or by "detach", and log it.
 */
static int renew(struct once *o, struct key_row *k, const char *type,
		 const struct caller *who)
{
	struct wf_row w;
	struct event ev;
	int rc = store_wf_by_id(o->store, k->wf, &w);

	if (rc)
		return rc;
	k->expires_ms = once_now_ms(o) + w.policy.in_flight_ttl * 1000;
	rc = store_key_update(o->store, k);
	if (rc)
		return rc;
	key_event(&ev, type, k);
	ev.number_field = "lease_s";
	ev.number_field_value = w.policy.in_flight_ttl;
	rc = once_event(o, k->wf, who, &ev);
	if (rc == 0)
		once_count(&o->stats.renewals);
	return rc;
}

/* "detach": the claim outlives its handles, for in_flight_ttl. */
static int detach(struct once *o, int64_t generation, const struct caller *who)
{
	struct key_row k;
	int rc = store_begin(o->store, true);

	if (rc)
		return rc;
	rc = check_key(o, generation, NULL, true, who, &k);
	if (rc == 0)
		rc = renew(o, &k, "detach", who);
	return once_end(o, rc);
}

/*
 * Why a status line naming another generation is refused: what the key
 * of this one would say first (stale, or terminal), else -ESTALE.
 */
static int other_generation(struct once *o, int64_t generation,
			    const struct caller *who)
{
	struct key_row k;
	int rc = key_get(o, generation, &k, NULL);

	if (rc == 0 && is_terminal(&k))
		rc = key_refuse_write(who);
	return rc ? rc : -ESTALE;
}

static int finalize(struct once *o, int64_t generation, const char *name,
		    size_t name_len, const char *buf, size_t len,
		    const struct caller *who)
{
	struct status_line sl;
	struct key_row k;
	struct event ev;
	struct store_finalize f;
	int rc = check_bytes(o, buf, len, true, &sl);

	if (rc)
		return rc;
	if (sl.generation_digits && sl.generation != generation)
		rc = other_generation(o, generation, who);
	else if (sl.status == KEY_IN_FLIGHT)
		rc = detach(o, generation, who);
	if (rc || sl.status == KEY_IN_FLIGHT)
		goto out;
	f = (struct store_finalize){
		.generation = generation,
		.now_ms = once_now_ms(o),
		.status = sl.status,
		.result = buf + sl.result_off,
		.result_len = len - sl.result_off,
		.ev = &ev,
	};
	name_copy(k.name, &k.name_len, name, name_len);
	k.generation = generation;
	key_event(&ev, "finalize", &k);
	ev.detail_field = "status";
	ev.detail = status_name(sl.status);
	ev.detail_len = strlen(ev.detail);
	if (sl.status == KEY_FAILED && len > sl.result_off) {
		/* Why it failed outlives the key (dedup_on=success drops it). */
		ev.text_field = "result";
		ev.text = buf + sl.result_off;
		ev.text_len = len - sl.result_off;
	}
	once_stamp(&ev, who, f.now_ms);
	rc = store_finalize(o->store, &f, &k);
	if (rc == -EPERM)
		rc = key_refuse_write(who);
	if (rc == 0) {
		once_count(&o->stats.finalizes);
		wait_changed(o->waits, generation);
	}
out:
	if (rc == -ESTALE)
		once_count(&o->stats.fenced);
	return rc;
}

int key_finalize(struct once *o, int64_t generation, const char *name,
		 size_t name_len, const char *buf, size_t len,
		 const struct caller *who)
{
	int64_t start = metrics_now_ns();
	int rc = finalize(o, generation, name, name_len, buf, len, who);

	histogram_observe(&o->latencies.finalize, start);
	return rc;
}

int key_release(struct once *o, int64_t wf, const char *name, size_t len,
		const struct caller *who)
{
	struct key_row k;
	struct event ev;
	int rc = name_check(name, len);

	if (rc)
		return rc;
	rc = store_begin(o->store, true);
	if (rc)
		return rc;
	rc = store_key_get(o->store, wf, name, len, &k);
	if (rc == 0 && !key_is_live(&k, once_now_ms(o)))
		rc = -ENOENT;
	if (rc == 0)
		rc = store_key_delete(o->store, k.id);
	if (rc == 0) {
		key_event(&ev, "release", &k);
		ev.detail_field = "status";
		ev.detail = status_name(k.status);
		ev.detail_len = strlen(ev.detail);
		rc = once_event(o, wf, who, &ev);
	}
	rc = once_end(o, rc);
	if (rc == 0) {
		once_count(&o->stats.releases);
		wait_changed(o->waits, k.generation);
	}
	return rc;
}

int key_abandon(struct once *o, int64_t generation, const char *name,
		size_t name_len, const struct caller *who,
		const struct holder_fate *fate, const char *why)
{
	const char *field = NULL;
	char said[96];
	int64_t value = 0, now = once_now_ms(o);
	struct key_row k;
	struct event ev;
	int rc;

	if (fate) {
		holder_describe(fate, said, sizeof(said), &field, &value);
		why = said;
	}
	name_copy(k.name, &k.name_len, name, name_len);
	k.generation = generation;
	key_event(&ev, "abandon", &k);
	ev.detail_field = "reason";
	ev.detail = why;
	ev.detail_len = strlen(why);
	ev.number_field = field;
	ev.number_field_value = value;
	once_stamp(&ev, who, now);
	/* A lease that already ran out is an expiry, not an abandon. */
	rc = store_abandon(o->store, generation, now, &ev, &k);
	if (rc == -ENOENT)
		rc = -ESTALE;
	if (rc == 0)
		wait_changed(o->waits, generation);
	return rc;
}

int key_touch(struct once *o, int64_t generation, const struct caller *who)
{
	struct key_row k;
	int rc = store_begin(o->store, true);

	if (rc)
		return rc;
	rc = check_key(o, generation, NULL, false, who, &k);
	if (rc == 0)
		rc = renew(o, &k, "renew", who);
	rc = once_end(o, rc);
	if (rc == -ESTALE)
		once_count(&o->stats.fenced);
	return rc;
}

int key_renew(struct once *o, const int64_t *generations, size_t n)
{
	uint64_t renewed = 0;
	int rc;

	if (n == 0)
		return 0;
	/*
	 * Once a third of the lease has passed; an expired lease is not
	 * revived (see get_generation), a longer one (touch, detach) is left
	 * as it is.  Routine: no event.
	 */
	rc = store_renew(o->store, generations, n, once_now_ms(o),
			 held_lease_ms(o), &renewed);
	if (rc == 0)
		__atomic_add_fetch(&o->stats.renewals, renewed, __ATOMIC_RELAXED);
	return rc;
}

int key_list(struct once *o, int64_t wf, int64_t after, struct key_row *rows,
	     int max, int *n)
{
	int rc = store_begin(o->store, false);

	if (rc)
		return rc;
	rc = store_key_list(o->store, wf, after, once_now_ms(o), rows, max, n);
	return once_end(o, rc);
}

int key_fenced(struct once *o, int64_t wf, const char *name, size_t len,
	       int64_t generation, const struct caller *who)
{
	struct event ev = {
		.type = "fenced",
		.subject = "key",
		.name = name,
		.name_len = len,
		.generation = generation,
	};
	struct wf_row w;
	int rc = store_begin(o->store, true);

	if (rc)
		return rc;
	rc = store_wf_by_id(o->store, wf, &w);
	if (rc == 0)
		rc = once_event(o, wf, who, &ev);
	if (rc == -ENOENT)
		rc = 0;	/* the workflow is gone: nobody to tell */
	return once_end(o, rc);
}
