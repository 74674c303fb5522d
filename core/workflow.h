/*
 * workflow.h - workflows: the directories at the root of a mount.
 *
 * A workflow has a name (name.h), an owner and a mode, a policy
 * (policy.h), an input fingerprint and an events log.  Its id is never
 * reused, so anything that remembers an id (an inode) can tell that its
 * workflow is gone.
 *
 * A workflow is empty when it holds no live key (key.h) and no checkpoint
 * of its current fingerprint; only an empty workflow can be removed or
 * replaced by a rename.
 */
#ifndef ONCE_WORKFLOW_H
#define ONCE_WORKFLOW_H

#include <stdbool.h>

#include "once.h"

enum {
	WORKFLOW_RENAME_NOREPLACE = 1 << 0,
	WORKFLOW_RENAME_EXCHANGE = 1 << 1,
};

/* What a setattr changes; fields without their flag are left alone. */
struct workflow_attr {
	bool set_mode, set_uid, set_gid, set_mtime;
	uint32_t mode;
	uint32_t uid, gid;
	int64_t mtime_ns;
};

/* mkdir: -EEXIST, -EINVAL (reserved or bad name), -ENAMETOOLONG. */
int workflow_create(struct once *o, const char *name, size_t len,
		    uint32_t mode, const struct caller *who, struct wf_row *out);

/* -ENOENT when absent; name errors as for workflow_create. */
int workflow_lookup(struct once *o, const char *name, size_t len,
		    struct wf_row *out);

/* By id: -ENOENT once the workflow is gone. */
int workflow_get(struct once *o, int64_t id, struct wf_row *out);

/* rmdir: -ENOTEMPTY while a key or a checkpoint is there. */
int workflow_remove(struct once *o, const char *name, size_t len,
		    const struct caller *who);

/*
 * rename at the root.  -EINVAL for an exchange or a reserved name,
 * -EEXIST under NOREPLACE when the target exists, -ENOTEMPTY when the
 * target is not empty (an empty target is replaced).
 */
int workflow_rename(struct once *o, const char *from, size_t from_len,
		    const char *to, size_t to_len, unsigned int flags,
		    const struct caller *who);

/* Up to max workflows with id > after, in id order (a stable cursor). */
int workflow_list(struct once *o, int64_t after, struct wf_row *rows,
		  int max, int *n);

/* chmod, chown, utimes.  The kernel has checked the caller's rights. */
int workflow_setattr(struct once *o, int64_t id, const struct workflow_attr *a,
		     struct wf_row *out);

/*
 * The check of write(): could these bytes, written so far, be a valid
 * value of the field?  0 (or -EAGAIN for an unfinished value), -EINVAL.
 */
int workflow_check_policy(enum policy_field f, const char *buf, size_t len);

/*
 * Set a policy field from the bytes written to its file, or to its
 * default when buf is NULL (unlink).  -EINVAL for a bad value.
 */
int workflow_set_policy(struct once *o, int64_t id, enum policy_field f,
			const char *buf, size_t len, const struct caller *who);

/* True when the workflow holds no live key (for rmdir of keys/). */
int workflow_has_keys(struct once *o, int64_t id, bool *has);

/* True when the workflow holds a checkpoint of its current fingerprint. */
int workflow_has_steps(struct once *o, int64_t id, bool *has);

#endif
