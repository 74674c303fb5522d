/*
 * workflow.c - creating, removing, renaming and configuring workflows.
 */
#include <errno.h>
#include <string.h>

#include "workflow.h"

static int64_t now_ns(struct once *o)
{
	return once_now_ms(o) * 1000000;
}

int workflow_create(struct once *o, const char *name, size_t len,
		    uint32_t mode, const struct caller *who, struct wf_row *out)
{
	struct event ev = { .type = "create" };
	int rc = name_check_workflow(name, len);

	if (rc)
		return rc;
	memset(out, 0, sizeof(*out));
	name_copy(out->name, &out->name_len, name, len);
	out->uid = who->uid;
	out->gid = who->gid;
	out->mode = mode & 07777;
	out->ctime_ns = out->mtime_ns = now_ns(o);
	policy_init(&out->policy);

	rc = store_begin(o->store, true);
	if (rc)
		return rc;
	rc = store_wf_insert(o->store, out);
	if (rc == 0)
		rc = once_event(o, out->id, who, &ev);
	/*
	 * The row as committed, read in the same transaction: a re-read
	 * after it could find the workflow removed by another mount, and a
	 * create that succeeded must say so.
	 */
	if (rc == 0)
		rc = store_wf_by_id(o->store, out->id, out);
	return once_end(o, rc);
}

int workflow_lookup(struct once *o, const char *name, size_t len,
		    struct wf_row *out)
{
	int rc = name_check(name, len);

	return rc ? rc : store_lookup_workflow(o->store, 0, name, len, out);
}

int workflow_get(struct once *o, int64_t id, struct wf_row *out)
{
	return store_lookup_workflow(o->store, id, NULL, 0, out);
}

/* Inside a transaction: is the workflow empty? */
static int check_empty(struct once *o, const struct wf_row *w)
{
	bool keys = false, steps = false;
	int rc;

	rc = store_key_any(o->store, w->id, once_now_ms(o), &keys);
	if (rc == 0)
		rc = store_step_any(o->store, w->id, w->epoch, &steps);
	if (rc == 0 && (keys || steps))
		rc = -ENOTEMPTY;
	return rc;
}

int workflow_remove(struct once *o, const char *name, size_t len,
		    const struct caller *who)
{
	struct wf_row w;
	int rc = name_check(name, len);

	(void)who;
	if (rc)
		return rc;
	rc = store_begin(o->store, true);
	if (rc)
		return rc;
	rc = store_wf_by_name(o->store, name, len, &w);
	if (rc == 0)
		rc = check_empty(o, &w);
	if (rc == 0)
		rc = store_wf_delete(o->store, w.id);
	return once_end(o, rc);
}

int workflow_rename(struct once *o, const char *from, size_t from_len,
		    const char *to, size_t to_len, unsigned int flags,
		    const struct caller *who)
{
	struct event ev = { .type = "rename", .detail_field = "from" };
	struct wf_row w, target;
	int rc;

	if (flags & WORKFLOW_RENAME_EXCHANGE)
		return -EINVAL;
	rc = name_check(from, from_len);
	if (rc == 0)
		rc = name_check_workflow(to, to_len);
	if (rc)
		return rc;

	rc = store_begin(o->store, true);
	if (rc)
		return rc;
	rc = store_wf_by_name(o->store, from, from_len, &w);
	if (rc)
		goto out;
	if (from_len == to_len && memcmp(from, to, to_len) == 0)
		goto out;
	rc = store_wf_by_name(o->store, to, to_len, &target);
	if (rc == 0) {
		if (flags & WORKFLOW_RENAME_NOREPLACE) {
			rc = -EEXIST;
			goto out;
		}
		rc = check_empty(o, &target);
		if (rc == 0)
			rc = store_wf_delete(o->store, target.id);
	} else if (rc == -ENOENT) {
		rc = 0;
	}
	if (rc)
		goto out;
	name_copy(w.name, &w.name_len, to, to_len);
	w.mtime_ns = now_ns(o);
	rc = store_wf_update(o->store, &w);
	/* A name that is not UTF-8 goes into the line as from_hex. */
	ev.detail = from;
	ev.detail_len = from_len;
	if (rc == 0)
		rc = once_event(o, w.id, who, &ev);
out:
	return once_end(o, rc);
}

int workflow_list(struct once *o, int64_t after, struct wf_row *rows,
		  int max, int *n)
{
	int rc = store_begin(o->store, false);

	if (rc)
		return rc;
	rc = store_wf_list(o->store, after, rows, max, n);
	return once_end(o, rc);
}

int workflow_setattr(struct once *o, int64_t id, const struct workflow_attr *a,
		     struct wf_row *out)
{
	int rc = store_begin(o->store, true);

	if (rc)
		return rc;
	rc = store_wf_by_id(o->store, id, out);
	if (rc == 0) {
		if (a->set_mode)
			out->mode = a->mode & 07777;
		if (a->set_uid)
			out->uid = a->uid;
		if (a->set_gid)
			out->gid = a->gid;
		if (a->set_mtime)
			out->mtime_ns = a->mtime_ns;
		out->ctime_ns = now_ns(o);
		rc = store_wf_update(o->store, out);
	}
	return once_end(o, rc);
}

int workflow_check_policy(enum policy_field f, const char *buf, size_t len)
{
	return policy_check_partial(f, buf, len, false);
}

int workflow_set_policy(struct once *o, int64_t id, enum policy_field f,
			const char *buf, size_t len, const struct caller *who)
{
	struct event ev = { .type = "policy", .subject = "policy" };
	struct policy defaults;
	char value[32];
	struct wf_row w;
	int rc;

	if (buf) {
		rc = policy_check_partial(f, buf, len, true);
		if (rc)
			return rc;
	}
	rc = store_begin(o->store, true);
	if (rc)
		return rc;
	rc = store_wf_by_id(o->store, id, &w);
	if (rc)
		goto out;
	if (buf) {
		rc = policy_parse(f, buf, len, &w.policy);
	} else {
		policy_init(&defaults);
		policy_format(f, &defaults, value, sizeof(value));
		rc = policy_parse(f, value, strlen(value), &w.policy);
	}
	if (rc)
		goto out;
	w.ctime_ns = now_ns(o);
	rc = store_wf_update(o->store, &w);
	ev.name = policy_field_name(f);
	ev.name_len = strlen(ev.name);
	ev.detail_field = "value";
	ev.detail_len = policy_format(f, &w.policy, value, sizeof(value)) - 1;
	ev.detail = value;
	if (rc == 0)
		rc = once_event(o, id, who, &ev);
out:
	return once_end(o, rc);
}

int workflow_has_keys(struct once *o, int64_t id, bool *has)
{
	int rc = store_begin(o->store, false);

	*has = false;
	if (rc)
		return rc;
	rc = store_key_any(o->store, id, once_now_ms(o), has);
	return once_end(o, rc);
}

int workflow_has_steps(struct once *o, int64_t id, bool *has)
{
	struct wf_row w;
	int rc = store_begin(o->store, false);

	*has = false;
	if (rc)
		return rc;
	rc = store_wf_by_id(o->store, id, &w);
	if (rc == 0)
		rc = store_step_any(o->store, id, w.epoch, has);
	return once_end(o, rc);
}
