/*
 * ops.c - the FUSE low-level operations: each request is decoded into a
 * core action, and the action's result into exactly one reply.
 *
 * No core lock is held while replying: core actions take and drop the
 * store's lock themselves.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "../core/holder.h"
#include "../core/key.h"
#include "../core/metrics.h"
#include "../core/step.h"
#include "../core/wait.h"
#include "../core/workflow.h"
#include "handle.h"
#include "inode.h"

/* Fixed entries inside a workflow never change: the kernel may cache them. */
#define FIXED_ENTRY_TIMEOUT 3600.0

/*
 * How long the kernel may trust the attributes of a directory.  With
 * default_permissions it checks modes on every path component, and would
 * otherwise ask for them again at each step of each claim.  A directory's
 * size and times mean nothing here; its owner and mode change only by
 * chmod/chown of the workflow, which this mount sees at once (the reply
 * carries them) and another mount within this many seconds.
 */
#define DIR_ATTR_TIMEOUT 1.0

/*
 * The attributes a claim's CREATE reply carries may be trusted this long
 * (the kernel rounds it up to a tick), so that the permission check of
 * the same open(2) asks no GETATTR.  A claim in flight (its generation's
 * inode) changes by its own handle, whose FLUSH, fsync and RELEASE drop
 * them before they reply (forget_attrs); a path lookup always asks the
 * daemon.  What is left (an fstat through another descriptor within the
 * tick, of a finalize by path from elsewhere) the README states.
 */
#define CLAIM_ATTR_TIMEOUT 0.001

/* How many rows a readdir fetches from the store at once. */
#define READDIR_BATCH 64

static struct fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Each request handler counts its kind first (.stats requests_*). */
static void count_request(fuse_req_t req, enum metrics_request kind)
{
	__atomic_add_fetch(&fs_of(req)->requests[kind], 1, __ATOMIC_RELAXED);
}

static struct caller caller_of(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct caller c = { .pid = ctx->pid, .uid = ctx->uid, .gid = ctx->gid };

	return c;
}

static void reply_rc(fuse_req_t req, int rc)
{
	fuse_reply_err(req, rc < 0 ? -rc : rc);
}

static bool name_is(const char *name, const char *fixed)
{
	return strcmp(name, fixed) == 0;
}

/* ---- attributes ------------------------------------------------------- */

/* Nanoseconds since the epoch as a timespec; tv_nsec in [0, 1e9) before 1970 too. */
static void set_time(struct timespec *ts, int64_t ns)
{
	int64_t sec = ns / 1000000000, nsec = ns % 1000000000;

	if (nsec < 0) {
		sec--;
		nsec += 1000000000;
	}
	ts->tv_sec = sec;
	ts->tv_nsec = nsec;
}

/* A time from a request in nanoseconds: -EOVERFLOW past 64 bits (2262). */
static int ns_of(const struct timespec *ts, int64_t *out)
{
	if (ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000 ||
	    ts->tv_sec > INT64_MAX / 1000000000 - 1 ||
	    ts->tv_sec < INT64_MIN / 1000000000 + 1)
		return -EOVERFLOW;
	*out = (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
	return 0;
}

static void fill_common(struct stat *st, uint64_t ino, uint32_t uid,
			uint32_t gid, int64_t mtime_ns, int64_t ctime_ns)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = uid;
	st->st_gid = gid;
	st->st_nlink = 1;
	st->st_blksize = 4096;
	set_time(&st->st_mtim, mtime_ns);
	set_time(&st->st_atim, mtime_ns);
	set_time(&st->st_ctim, ctime_ns);
}

static void set_size(struct stat *st, int64_t size)
{
	st->st_size = size;
	st->st_blocks = (size + 511) / 512;
}

static void fill_root(const struct fs *fs, struct stat *st)
{
	fill_common(st, INO_ROOT, fs->owner_uid, fs->owner_gid,
		    fs->mount_time_ns, fs->mount_time_ns);
	st->st_mode = S_IFDIR | 0755;
	st->st_nlink = 2;
}

/*
 * The read-only dot-files of the root: a mount's numbers, rendered from
 * one snapshot when the file is opened (core/metrics.c).
 */
static const struct root_file {
	const char *name;
	uint64_t ino;
	void (*write)(const struct metrics_snapshot *m, FILE *f);
} root_files[] = {
	{ ".stats", INO_STATS, metrics_write_stats },
	{ ".metrics", INO_METRICS, metrics_write_prometheus },
};

#define N_ROOT_FILES (sizeof(root_files) / sizeof(root_files[0]))

static const struct root_file *root_file_named(const char *name)
{
	for (size_t i = 0; i < N_ROOT_FILES; i++)
		if (name_is(name, root_files[i].name))
			return &root_files[i];
	return NULL;
}

static const struct root_file *root_file_of(uint64_t ino)
{
	for (size_t i = 0; i < N_ROOT_FILES; i++)
		if (root_files[i].ino == ino)
			return &root_files[i];
	return NULL;
}

static int format_root_file(struct fs *fs, const struct root_file *rf,
			    char **out, size_t *len);

/* A root dot-file: its size is that of the text a read would give now. */
static void fill_root_file(struct fs *fs, const struct root_file *rf,
			   struct stat *st)
{
	char *text = NULL;
	size_t len = 0;

	fill_common(st, rf->ino, fs->owner_uid, fs->owner_gid,
		    fs->mount_time_ns, fs->mount_time_ns);
	st->st_mode = S_IFREG | 0444;
	if (format_root_file(fs, rf, &text, &len))
		len = 0;
	free(text);
	set_size(st, (int64_t)len);
}

static void fill_wf(const struct wf_row *w, int slot, struct stat *st)
{
	char value[32];

	fill_common(st, ino_wf(w->id, slot), w->uid, w->gid, w->mtime_ns,
		    w->ctime_ns);
	switch (slot) {
	case SLOT_DIR:
		st->st_mode = S_IFDIR | w->mode;
		st->st_nlink = 6;
		break;
	case SLOT_KEYS:
	case SLOT_STEPS:
	case SLOT_POLICY:
		st->st_mode = S_IFDIR | w->mode;
		st->st_nlink = 2;
		break;
	case SLOT_WAIT:
		st->st_mode = S_IFDIR | (w->mode & 0555);
		st->st_nlink = 2;
		break;
	case SLOT_FINGERPRINT:
		st->st_mode = S_IFREG | (w->mode & 0666);
		set_size(st, w->fingerprint_len ? (int64_t)w->fingerprint_len + 1 : 0);
		break;
	case SLOT_EVENTS:
		st->st_mode = S_IFREG | (w->mode & 0444);
		set_size(st, w->events_size);
		break;
	default:
		st->st_mode = S_IFREG | (w->mode & 0666);
		set_size(st, (int64_t)policy_format(slot - SLOT_POLICY_FIELD,
						    &w->policy, value,
						    sizeof(value)));
		break;
	}
}

static void fill_key(const struct wf_row *w, const struct key_row *k,
		     struct stat *st)
{
	bool terminal = k->status != KEY_IN_FLIGHT;

	fill_common(st, ino_make(INO_KIND_KEY, (uint64_t)k->generation),
		    w->uid, w->gid, k->mtime_ns, k->mtime_ns);
	char line[64];

	st->st_mode = S_IFREG | (w->mode & (terminal ? 0444 : 0666));
	set_size(st, (int64_t)key_status_line(k, line, sizeof(line)) +
		     k->result_len);
}

/*
 * wait/K: read-only; its size is the key's content once the claim ended
 * terminal, 0 while it is in flight (a read blocks until it ends).
 */
static void fill_wait(const struct wf_row *w, const struct key_row *k,
		      struct stat *st)
{
	fill_key(w, k, st);
	st->st_ino = ino_make(INO_KIND_WAIT, (uint64_t)k->generation);
	st->st_mode = S_IFREG | (w->mode & 0444);
	if (k->status == KEY_IN_FLIGHT)
		set_size(st, 0);
}

static void fill_step(const struct wf_row *w, const struct step_row *r,
		      struct stat *st)
{
	fill_common(st, ino_make(INO_KIND_STEP, (uint64_t)r->id), w->uid,
		    w->gid, r->mtime_ns, r->mtime_ns);
	if (r->atime_ns)
		set_time(&st->st_atim, r->atime_ns);
	st->st_mode = S_IFREG | (w->mode & 0666);
	set_size(st, r->size);
}

/* The attributes of any inode: -ENOENT or -ESTALE when it is gone. */
static int stat_ino(struct fs *fs, uint64_t ino, struct stat *st)
{
	struct wf_row w;
	struct key_row k;
	struct step_row r;
	int rc;

	if (ino == INO_ROOT) {
		fill_root(fs, st);
		return 0;
	}
	if (root_file_of(ino)) {
		fill_root_file(fs, root_file_of(ino), st);
		return 0;
	}
	switch (ino_kind(ino)) {
	case INO_KIND_WORKFLOW:
		rc = workflow_get(&fs->core, ino_wf_id(ino), &w);
		if (rc == 0)
			fill_wf(&w, ino_wf_slot(ino), st);
		return rc;
	case INO_KIND_WAIT:
		rc = key_get(&fs->core, ino_value(ino), &k, &w);
		if (rc == 0)
			fill_wait(&w, &k, st);
		return rc == -ENOENT ? -ESTALE : rc;
	case INO_KIND_KEY:
		rc = key_get(&fs->core, ino_value(ino), &k, &w);
		if (rc == -ENOENT)
			rc = -ESTALE;
		if (rc == 0) {
			fill_key(&w, &k, st);
		} else if (rc == -ESTALE &&
			   handle_claim_attr(fs, ino_value(ino), st)) {
			/*
			 * Released (or adopted) while the open that claimed it
			 * is still under way: right after CREATE the kernel
			 * checks permissions with a GETATTR, and an ESTALE
			 * there makes the VFS redo the whole open, claiming a
			 * second time.  Answer as POSIX does for a file removed
			 * while open: as it was, with no links.
			 */
			st->st_nlink = 0;
			rc = 0;
		}
		return rc;
	case INO_KIND_STEP:
		rc = step_get(&fs->core, ino_value(ino), &r);
		if (rc == 0)
			rc = workflow_get(&fs->core, r.wf, &w);
		if (rc == -ENOENT)
			rc = -ESTALE;
		if (rc == 0)
			fill_step(&w, &r, st);
		return rc;
	case INO_KIND_PENDING: {
		int64_t wf, id, size;

		/* A new checkpoint: what its writer's open file holds. */
		if (!handle_pending(fs, ino, &wf, &id, &size))
			return -ESTALE;
		memset(&r, 0, sizeof(r));
		r.mtime_ns = once_now_ms(&fs->core) * 1000000;
		rc = id ? step_get(&fs->core, id, &r) : 0;
		if (rc == 0)
			rc = workflow_get(&fs->core, wf, &w);
		if (rc)
			return -ESTALE;
		fill_step(&w, &r, st);
		st->st_ino = ino;
		set_size(st, size);
		return 0;
	}
	default:
		return -ENOENT;
	}
}

/*
 * Attributes of files are never cached: keys, checkpoints and the fixed
 * files change behind the kernel's back.  The root never changes.
 */
static double attr_timeout(const struct stat *st)
{
	if (st->st_ino == INO_ROOT)
		return FIXED_ENTRY_TIMEOUT;
	return S_ISDIR(st->st_mode) ? DIR_ATTR_TIMEOUT : 0;
}

static void reply_attr(fuse_req_t req, const struct stat *st)
{
	fuse_reply_attr(req, st, attr_timeout(st));
}

static void reply_entry(fuse_req_t req, const struct stat *st, double timeout)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.ino = st->st_ino;
	e.attr = *st;
	e.entry_timeout = timeout;
	e.attr_timeout = attr_timeout(st);
	fuse_reply_entry(req, &e);
}

/* ---- lookup and getattr ----------------------------------------------- */

static const struct {
	const char *name;
	int slot;
} wf_entries[] = {
	{ "keys", SLOT_KEYS },
	{ "steps", SLOT_STEPS },
	{ "policy", SLOT_POLICY },
	{ "input.fingerprint", SLOT_FINGERPRINT },
	{ "events", SLOT_EVENTS },
	{ "wait", SLOT_WAIT },
};

#define N_WF_ENTRIES (sizeof(wf_entries) / sizeof(wf_entries[0]))

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	size_t len = strlen(name);
	struct stat st;
	struct wf_row w;
	struct key_row k;
	struct step_row r;
	int rc, field;

	count_request(req, MR_LOOKUP);
	if (len > NAME_MAX_LEN) {
		reply_rc(req, -ENAMETOOLONG);
		return;
	}
	if (parent == INO_ROOT) {
		if (root_file_named(name)) {
			fill_root_file(fs, root_file_named(name), &st);
			reply_entry(req, &st, FIXED_ENTRY_TIMEOUT);
			return;
		}
		rc = workflow_lookup(&fs->core, name, len, &w);
		if (rc == -EINVAL)
			rc = -ENOENT;
		if (rc) {
			reply_rc(req, rc);
			return;
		}
		fill_wf(&w, SLOT_DIR, &st);
		reply_entry(req, &st, 0);
		return;
	}
	if (ino_kind(parent) != INO_KIND_WORKFLOW) {
		reply_rc(req, -ENOTDIR);
		return;
	}
	if (ino_wf_slot(parent) == SLOT_KEYS ||
	    ino_wf_slot(parent) == SLOT_WAIT) {
		/* The hot path of a claim: one read transaction. */
		rc = key_lookup(&fs->core, ino_wf_id(parent), name, len, &k, &w);
		if (rc == -EINVAL)
			rc = -ENOENT;
		if (rc) {
			reply_rc(req, rc);
			return;
		}
		if (ino_wf_slot(parent) == SLOT_WAIT)
			fill_wait(&w, &k, &st);
		else
			fill_key(&w, &k, &st);
		reply_entry(req, &st, 0);
		return;
	}
	rc = workflow_get(&fs->core, ino_wf_id(parent), &w);
	if (rc) {
		reply_rc(req, rc);
		return;
	}
	switch (ino_wf_slot(parent)) {
	case SLOT_DIR:
		for (size_t i = 0; i < N_WF_ENTRIES; i++) {
			if (name_is(name, wf_entries[i].name)) {
				fill_wf(&w, wf_entries[i].slot, &st);
				reply_entry(req, &st, FIXED_ENTRY_TIMEOUT);
				return;
			}
		}
		reply_rc(req, -ENOENT);
		return;
	case SLOT_POLICY:
		field = policy_field_lookup(name, len);
		if (field < 0) {
			reply_rc(req, -ENOENT);
			return;
		}
		fill_wf(&w, SLOT_POLICY_FIELD + field, &st);
		reply_entry(req, &st, FIXED_ENTRY_TIMEOUT);
		return;
	case SLOT_STEPS:
		rc = step_lookup(&fs->core, w.id, name, len, &r);
		if (rc == -EINVAL)
			rc = -ENOENT;
		if (rc) {
			reply_rc(req, rc);
			return;
		}
		fill_step(&w, &r, &st);
		reply_entry(req, &st, 0);
		return;
	default:
		reply_rc(req, -ENOTDIR);
		return;
	}
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	count_request(req, MR_OTHER);
	(void)ino;
	(void)nlookup;
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	count_request(req, MR_OTHER);
	(void)count;
	(void)forgets;
	fuse_reply_none(req);
}

/*
 * The attributes of ino as seen through open file h (NULL: by path): a
 * checkpoint's writer sees the size of its own copy (fstat, SEEK_END,
 * copy_file_range), not the committed one.
 */

static int stat_open(struct fs *fs, uint64_t ino, struct handle *h,
		     pid_t caller, struct stat *st)
{
	int64_t size;
	int rc = stat_ino(fs, ino, st);

	if (rc || ino_kind(ino) != INO_KIND_STEP)
		return rc;
	if (h && h->f.kind == FILE_STEP && h->f.writer) {
		pthread_mutex_lock(&h->f.lock);
		set_size(st, step_writer_size(h->f.writer));
		pthread_mutex_unlock(&h->f.lock);
	} else if (!h && handle_written(fs, ino) &&
		   handle_writer_size(fs, ino, holder_tgid(caller), &size)) {
		/* fstat() and stat() come without a file handle. */
		set_size(st, size);
	}
	return rc;
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct handle *h = fi ? (struct handle *)(uintptr_t)fi->fh : NULL;
	struct stat st;
	int rc = stat_open(fs_of(req), ino, h, caller_of(req).pid, &st);

	count_request(req, MR_GETATTR);
	if (rc)
		reply_rc(req, rc);
	else
		reply_attr(req, &st);
}

/* ---- setattr ---------------------------------------------------------- */

static int setattr_workflow(struct fs *fs, fuse_ino_t ino, struct stat *attr,
			    int to_set, struct stat *out)
{
	struct workflow_attr a = { 0 };
	struct wf_row w;
	int rc;

	if (to_set & FUSE_SET_ATTR_SIZE)
		return -EISDIR;
	a.set_mode = to_set & FUSE_SET_ATTR_MODE;
	a.mode = attr->st_mode & 07777;
	a.set_uid = to_set & FUSE_SET_ATTR_UID;
	a.uid = attr->st_uid;
	a.set_gid = to_set & FUSE_SET_ATTR_GID;
	a.gid = attr->st_gid;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
		a.set_mtime = true;
		a.mtime_ns = once_now_ms(&fs->core) * 1000000;
	} else if (to_set & FUSE_SET_ATTR_MTIME) {
		a.set_mtime = true;
		rc = ns_of(&attr->st_mtim, &a.mtime_ns);
		if (rc)
			return rc;
	}
	rc = workflow_setattr(&fs->core, ino_wf_id(ino), &a, &w);
	if (rc == 0)
		fill_wf(&w, SLOT_DIR, out);
	return rc;
}

static int setattr_key(struct fs *fs, fuse_ino_t ino, int to_set,
		       const struct caller *who, struct handle *h,
		       struct stat *attr)
{
	int64_t gen = ino_value(ino);
	struct key_row k;
	int rc;

	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
		return -EPERM;
	rc = key_get(&fs->core, gen, &k, NULL);
	if (rc)
		return rc;
	if (k.status != KEY_IN_FLIGHT)
		return key_refuse_write(who);
	if (to_set & FUSE_SET_ATTR_SIZE) {
		/* ftruncate on a finalizer's handle cuts what it wrote. */
		if (h && h->f.kind == FILE_KEY) {
			pthread_mutex_lock(&h->f.lock);
			if ((size_t)attr->st_size < h->f.len)
				h->f.len = (size_t)attr->st_size;
			pthread_mutex_unlock(&h->f.lock);
		}
	}
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
		      FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW))
		rc = key_touch(&fs->core, gen, who);
	return rc;
}

static int setattr_step(struct fs *fs, fuse_ino_t ino, struct stat *attr,
			int to_set, const struct caller *who, struct handle *h)
{
	int64_t id = ino_value(ino), mtime, atime, wf, size;
	int rc = 0;

	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
		return -EPERM;
	/* A new checkpoint: its id once its writer has committed, else 0. */
	if (ino_kind(ino) == INO_KIND_PENDING &&
	    !handle_pending(fs, ino, &wf, &id, &size))
		return -ESTALE;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		mtime = once_now_ms(&fs->core) * 1000000;
	else if ((to_set & FUSE_SET_ATTR_MTIME) && (rc = ns_of(&attr->st_mtim, &mtime)))
		return rc;
	if (to_set & FUSE_SET_ATTR_ATIME_NOW)
		atime = once_now_ms(&fs->core) * 1000000;
	else if ((to_set & FUSE_SET_ATTR_ATIME) && (rc = ns_of(&attr->st_atim, &atime)))
		return rc;
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (h && h->f.kind == FILE_STEP && h->f.writer) {
			pthread_mutex_lock(&h->f.lock);
			rc = step_writer_truncate(&fs->core, h->f.writer,
						  attr->st_size);
			if (rc == 0)
				h->f.dirty = true;
			pthread_mutex_unlock(&h->f.lock);
		} else if (id) {
			rc = step_truncate(&fs->core, id, attr->st_size, who);
		}
	}
	/* Times of a checkpoint not committed yet: its commit stamps them. */
	if (rc == 0 && id && (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW |
				       FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)))
		rc = step_set_times(&fs->core, id,
				    to_set & (FUSE_SET_ATTR_MTIME |
					      FUSE_SET_ATTR_MTIME_NOW) ? &mtime : NULL,
				    to_set & (FUSE_SET_ATTR_ATIME |
					      FUSE_SET_ATTR_ATIME_NOW) ? &atime : NULL);
	return rc;
}

/* policy files and input.fingerprint: a bare truncate changes nothing. */
static int setattr_value_file(int to_set, struct handle *h, struct stat *attr)
{
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
		return -EPERM;
	if ((to_set & FUSE_SET_ATTR_SIZE) && h &&
	    (h->f.kind == FILE_POLICY || h->f.kind == FILE_FINGERPRINT)) {
		pthread_mutex_lock(&h->f.lock);
		if ((size_t)attr->st_size < h->f.len)
			h->f.len = (size_t)attr->st_size;
		pthread_mutex_unlock(&h->f.lock);
	}
	return 0;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct caller who = caller_of(req);
	struct handle *h = fi ? (struct handle *)(uintptr_t)fi->fh : NULL;
	struct stat st;
	int rc;

	count_request(req, MR_SETATTR);
	switch (ino_kind(ino)) {
	case INO_KIND_WORKFLOW:
		switch (ino_wf_slot(ino)) {
		case SLOT_DIR:
			rc = setattr_workflow(fs, ino, attr, to_set, &st);
			if (rc == 0) {
				reply_attr(req, &st);
				return;
			}
			break;
		case SLOT_KEYS:
		case SLOT_STEPS:
		case SLOT_POLICY:
			rc = (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
					FUSE_SET_ATTR_GID | FUSE_SET_ATTR_SIZE))
				     ? -EPERM : 0;
			break;
		case SLOT_EVENTS:
			rc = -EPERM;
			break;
		default:
			rc = setattr_value_file(to_set, h, attr);
			break;
		}
		break;
	case INO_KIND_KEY:
		rc = setattr_key(fs, ino, to_set, &who, h, attr);
		break;
	case INO_KIND_STEP:
	case INO_KIND_PENDING:
		rc = setattr_step(fs, ino, attr, to_set, &who, h);
		break;
	default:
		rc = -EPERM;
		break;
	}
	if (rc == 0)
		rc = stat_open(fs, ino, h, who.pid, &st);
	if (rc)
		reply_rc(req, rc);
	else
		reply_attr(req, &st);
}

/* ---- directories ------------------------------------------------------ */

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct fs *fs = fs_of(req);
	struct caller who = caller_of(req);
	struct wf_row w;
	struct stat st;
	int rc;

	count_request(req, MR_DIRECTORY);
	if (parent != INO_ROOT) {
		reply_rc(req, ino_kind(parent) == INO_KIND_WORKFLOW &&
				      ino_wf_slot(parent) == SLOT_DIR
			      ? -EPERM : -EPERM);
		return;
	}
	if (root_file_named(name)) {
		reply_rc(req, -EEXIST);
		return;
	}
	rc = workflow_create(&fs->core, name, strlen(name), mode, &who, &w);
	if (rc) {
		reply_rc(req, rc);
		return;
	}
	fill_wf(&w, SLOT_DIR, &st);
	reply_entry(req, &st, 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct caller who = caller_of(req);
	bool has = false;
	int rc;

	count_request(req, MR_DIRECTORY);
	if (parent == INO_ROOT) {
		rc = workflow_remove(&fs->core, name, strlen(name), &who);
		reply_rc(req, rc);
		return;
	}
	if (ino_kind(parent) != INO_KIND_WORKFLOW ||
	    ino_wf_slot(parent) != SLOT_DIR) {
		reply_rc(req, -ENOTDIR);
		return;
	}
	/* The fixed directories stay; rmdir succeeds when they are empty. */
	if (name_is(name, "keys"))
		rc = workflow_has_keys(&fs->core, ino_wf_id(parent), &has);
	else if (name_is(name, "steps"))
		rc = workflow_has_steps(&fs->core, ino_wf_id(parent), &has);
	else if (name_is(name, "policy") || name_is(name, "wait"))
		rc = 0;
	else if (name_is(name, "events") || name_is(name, "input.fingerprint"))
		rc = -ENOTDIR;
	else
		rc = -ENOENT;
	if (rc == 0 && has)
		rc = -ENOTEMPTY;
	reply_rc(req, rc);
}

struct dirbuf {
	fuse_req_t req;
	char *p;
	size_t size, used;
};

/* Add an entry whose successor starts at cookie next; false when full. */
static bool dir_add(struct dirbuf *d, const char *name, uint64_t ino,
		    mode_t mode, off_t next)
{
	struct stat st = { .st_ino = ino, .st_mode = mode };
	size_t need = fuse_add_direntry(d->req, NULL, 0, name, NULL, 0);

	if (d->used + need > d->size)
		return false;
	fuse_add_direntry(d->req, d->p + d->used, d->size - d->used, name, &st,
			  next);
	d->used += need;
	return true;
}

/*
 * Cookies: 1 and 2 follow "." and ".."; the fixed entries come next; rows
 * of the store follow with cookie FIRST_ROW + id, so a listing resumes
 * after the last id it returned, whatever was added or removed meanwhile.
 */
#define FIRST_ROW 16

/* One row of a listing, whatever the store row behind it. */
struct dir_row {
	char name[NAME_MAX_LEN + 1];
	uint64_t ino;
	mode_t type;
	int64_t id;		/* the stable cursor */
};

/* Fetch up to max rows with id > after under parent (a workflow id). */
typedef int (*fetch_rows)(struct fs *fs, int64_t parent, int64_t after,
			  struct dir_row *rows, int max, int *n);

static int fetch_workflows(struct fs *fs, int64_t parent, int64_t after,
			   struct dir_row *rows, int max, int *n)
{
	struct wf_row w[READDIR_BATCH];
	int rc = workflow_list(&fs->core, after, w, max, n);

	(void)parent;
	for (int i = 0; rc == 0 && i < *n; i++) {
		memcpy(rows[i].name, w[i].name, w[i].name_len + 1);
		rows[i].ino = ino_wf(w[i].id, SLOT_DIR);
		rows[i].type = S_IFDIR;
		rows[i].id = w[i].id;
	}
	return rc;
}

static int fetch_keys(struct fs *fs, int64_t parent, int64_t after,
		      struct dir_row *rows, int max, int *n)
{
	struct key_row k[READDIR_BATCH];
	int rc = key_list(&fs->core, parent, after, k, max, n);

	for (int i = 0; rc == 0 && i < *n; i++) {
		memcpy(rows[i].name, k[i].name, k[i].name_len + 1);
		rows[i].ino = ino_make(INO_KIND_KEY, (uint64_t)k[i].generation);
		rows[i].type = S_IFREG;
		rows[i].id = k[i].id;
	}
	return rc;
}

static int fetch_steps(struct fs *fs, int64_t parent, int64_t after,
		       struct dir_row *rows, int max, int *n)
{
	struct step_row r[READDIR_BATCH];
	int rc = step_list(&fs->core, parent, after, r, max, n);

	for (int i = 0; rc == 0 && i < *n; i++) {
		memcpy(rows[i].name, r[i].name, r[i].name_len + 1);
		rows[i].ino = ino_make(INO_KIND_STEP, (uint64_t)r[i].id);
		rows[i].type = S_IFREG;
		rows[i].id = r[i].id;
	}
	return rc;
}

/* Add store rows to a listing from cursor off on, until it is full. */
static int list_rows(struct fs *fs, int64_t parent, fetch_rows fetch,
		     struct dirbuf *d, off_t off)
{
	struct dir_row *rows = malloc(sizeof(*rows) * READDIR_BATCH);
	int n, rc = 0;

	if (!rows)
		return -ENOMEM;
	if (off < FIRST_ROW)
		off = FIRST_ROW;
	for (;;) {
		rc = fetch(fs, parent, off - FIRST_ROW, rows, READDIR_BATCH, &n);
		if (rc || n == 0)
			break;
		for (int i = 0; i < n; i++) {
			if (!dir_add(d, rows[i].name, rows[i].ino, rows[i].type,
				     FIRST_ROW + rows[i].id))
				goto out;
			off = FIRST_ROW + rows[i].id;
		}
	}
out:
	free(rows);
	return rc;
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct dirbuf d = { .req = req, .size = size };
	struct wf_row w;
	int rc = 0;

	count_request(req, MR_READDIR);
	(void)fi;
	if (ino != INO_ROOT) {
		if (ino_kind(ino) != INO_KIND_WORKFLOW) {
			reply_rc(req, -ENOTDIR);
			return;
		}
		rc = workflow_get(&fs->core, ino_wf_id(ino), &w);
		if (rc) {
			reply_rc(req, rc);
			return;
		}
	}
	d.p = malloc(size);
	if (!d.p) {
		reply_rc(req, -ENOMEM);
		return;
	}
	if (off < 1 && !dir_add(&d, ".", ino, S_IFDIR, 1))
		goto out;
	if (off < 2 && !dir_add(&d, "..", INO_ROOT, S_IFDIR, 2))
		goto out;
	if (ino == INO_ROOT) {
		for (size_t i = 0; i < N_ROOT_FILES; i++)
			if (off < (off_t)(3 + i) &&
			    !dir_add(&d, root_files[i].name, root_files[i].ino,
				     S_IFREG, (off_t)(3 + i)))
				goto out;
		rc = list_rows(fs, 0, fetch_workflows, &d, off);
		goto out;
	}
	switch (ino_wf_slot(ino)) {
	case SLOT_DIR:
		for (size_t i = 0; i < N_WF_ENTRIES; i++) {
			int slot = wf_entries[i].slot;

			if (off >= (off_t)(3 + i))
				continue;
			if (!dir_add(&d, wf_entries[i].name, ino_wf(w.id, slot),
				     slot == SLOT_FINGERPRINT || slot == SLOT_EVENTS
					     ? S_IFREG : S_IFDIR,
				     (off_t)(3 + i)))
				break;
		}
		break;
	case SLOT_POLICY:
		for (int f = 0; f < POLICY_NFIELDS; f++) {
			if (off >= 3 + f)
				continue;
			if (!dir_add(&d, policy_field_name(f),
				     ino_wf(w.id, SLOT_POLICY_FIELD + f), S_IFREG,
				     3 + f))
				break;
		}
		break;
	case SLOT_KEYS:
		rc = list_rows(fs, w.id, fetch_keys, &d, off);
		break;
	case SLOT_STEPS:
		rc = list_rows(fs, w.id, fetch_steps, &d, off);
		break;
	case SLOT_WAIT:
		break;	/* every key can be waited for; none is listed */
	default:
		rc = -ENOTDIR;
		break;
	}
out:
	if (rc && d.used == 0)
		reply_rc(req, rc);
	else
		fuse_reply_buf(req, d.p, d.used);
	free(d.p);
}

/* ---- unlink and rename ------------------------------------------------ */

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct caller who = caller_of(req);
	size_t len = strlen(name);
	int64_t wf = ino_wf_id(parent);
	int rc, field;

	count_request(req, MR_DIRECTORY);
	if (parent == INO_ROOT) {
		reply_rc(req, root_file_named(name) ? -EPERM : -EISDIR);
		return;
	}
	if (ino_kind(parent) != INO_KIND_WORKFLOW) {
		reply_rc(req, -ENOTDIR);
		return;
	}
	switch (ino_wf_slot(parent)) {
	case SLOT_DIR:
		if (name_is(name, "events"))
			rc = 0;	/* rm -rf walks past it; the log stays */
		else if (name_is(name, "input.fingerprint"))
			rc = step_set_fingerprint(&fs->core, wf, NULL, 0, &who,
						  NULL);
		else
			rc = -ENOENT;
		break;
	case SLOT_KEYS:
		rc = key_release(&fs->core, wf, name, len, &who);
		if (rc == -EINVAL)
			rc = -ENOENT;
		break;
	case SLOT_STEPS:
		rc = step_remove(&fs->core, wf, name, len, &who);
		if (rc == -EINVAL)
			rc = -ENOENT;
		break;
	case SLOT_POLICY:
		field = policy_field_lookup(name, len);
		rc = field < 0 ? -ENOENT
			       : workflow_set_policy(&fs->core, wf, field, NULL,
						     0, &who);
		break;
	default:
		rc = -ENOENT;
		break;
	}
	reply_rc(req, rc);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	struct fs *fs = fs_of(req);
	struct caller who = caller_of(req);
	unsigned int wflags = 0;
	int rc;

	count_request(req, MR_DIRECTORY);
	/* EXCHANGE, WHITEOUT, and any flag unknown here: not done, EINVAL. */
	if (flags & ~(unsigned int)RENAME_NOREPLACE) {
		reply_rc(req, -EINVAL);
		return;
	}
	if (flags & RENAME_NOREPLACE)
		wflags |= WORKFLOW_RENAME_NOREPLACE;
	if (parent == INO_ROOT && newparent == INO_ROOT) {
		if (root_file_named(name) || root_file_named(newname))
			rc = -EPERM;
		else
			rc = workflow_rename(&fs->core, name, strlen(name),
					     newname, strlen(newname), wflags,
					     &who);
		reply_rc(req, rc);
		return;
	}
	if (parent == newparent && ino_kind(parent) == INO_KIND_WORKFLOW &&
	    ino_wf_slot(parent) == SLOT_STEPS) {
		rc = step_rename(&fs->core, ino_wf_id(parent), name, strlen(name),
				 newname, strlen(newname),
				 flags & RENAME_NOREPLACE, &who);
		reply_rc(req, rc);
		return;
	}
	/* Never EXDEV: mv would copy and unlink, claiming and releasing keys. */
	reply_rc(req, -EPERM);
}

static void op_refuse(fuse_req_t req)
{
	reply_rc(req, -EPERM);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	count_request(req, MR_OTHER);
	(void)parent;
	(void)name;
	(void)mode;
	(void)rdev;
	op_refuse(req);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	count_request(req, MR_OTHER);
	(void)link;
	(void)parent;
	(void)name;
	op_refuse(req);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	count_request(req, MR_OTHER);
	(void)ino;
	(void)newparent;
	(void)newname;
	op_refuse(req);
}

/* ---- open, create, read, write ---------------------------------------- */

static void reply_open(fuse_req_t req, struct fuse_file_info *fi,
		       struct handle *h)
{
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	fi->keep_cache = 0;
	handle_track(fs_of(req), h);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		/* The opener was interrupted: no release will follow. */
		handle_close(fs_of(req), h);
	}
}

static int format_root_file(struct fs *fs, const struct root_file *rf,
			    char **out, size_t *len)
{
	struct metrics_snapshot m;
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	if (!f)
		return -ENOMEM;
	metrics_snapshot(&fs->core, fs->waits ? waits_count(fs->waits) : 0, &m);
	for (int i = 0; i < MR_KINDS; i++)
		m.requests[i] = __atomic_load_n(&fs->requests[i], __ATOMIC_RELAXED);
	rf->write(&m, f);
	if (fclose(f)) {
		free(buf);
		return -ENOMEM;
	}
	*out = buf;
	*len = size;
	return 0;
}

/* A handle for an open of ino, before its file_open_* (core/file.h). */
static int new_handle(enum file_kind kind, uint64_t ino, int64_t wf, int flags,
		      struct handle **out)
{
	*out = handle_new(kind, ino, wf, flags);
	return *out ? 0 : -ENOMEM;
}

/*
 * Writers of a key renew its claim's lease, and so does the handle that
 * made the claim, whatever its access mode.
 */
static void renew_if_writer(struct fs *fs, struct handle *h)
{
	if (h->f.kind == FILE_KEY && (h->f.writable || h->f.claimed))
		handle_renew_add(fs, h);
}

/* Open an existing key, or wait/K, or a checkpoint. */
static int open_key(struct fs *fs, uint64_t ino, int flags,
		    const struct caller *who, struct handle **out)
{
	int rc = new_handle(FILE_KEY, ino, 0, flags, out);

	if (rc == 0)
		rc = file_open_key(&fs->core, &(*out)->f, ino_value(ino), who);
	if (rc == 0)
		renew_if_writer(fs, *out);
	return rc;
}

static int open_wait(struct fs *fs, uint64_t ino, int flags,
		     const struct caller *who, struct handle **out)
{
	int rc = new_handle(FILE_WAIT, ino, 0, flags, out);

	return rc ? rc : file_open_wait(&fs->core, &(*out)->f, ino_value(ino),
					who);
}

static int open_step(struct fs *fs, uint64_t ino, int flags, bool created,
		     const struct caller *who, struct handle **out)
{
	int rc = new_handle(FILE_STEP, ino, 0, flags, out);

	return rc ? rc : file_open_step(&fs->core, &(*out)->f, ino_value(ino),
					created, who);
}

/* A handle whose open failed: nothing of it is tracked yet. */
static int opened(struct handle **h, int rc)
{
	if (rc) {
		handle_free(*h);
		*h = NULL;
	}
	return rc;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct caller who = caller_of(req);
	struct handle *h = NULL;
	struct wf_row w;
	char *snap = NULL;
	size_t len = 0;
	int rc = 0, slot;

	count_request(req, MR_OPEN);
	if (root_file_of(ino)) {
		if ((fi->flags & O_ACCMODE) != O_RDONLY) {
			reply_rc(req, -EPERM);
			return;
		}
		rc = format_root_file(fs, root_file_of(ino), &snap, &len);
		h = rc ? NULL : handle_new(FILE_STATS, ino, 0, fi->flags);
		goto out;
	}
	switch (ino_kind(ino)) {
	case INO_KIND_KEY:
		rc = opened(&h, open_key(fs, ino, fi->flags, &who, &h));
		break;
	case INO_KIND_WAIT:
		rc = opened(&h, open_wait(fs, ino, fi->flags, &who, &h));
		break;
	case INO_KIND_STEP:
		rc = opened(&h, open_step(fs, ino, fi->flags, false, &who, &h));
		break;
	case INO_KIND_WORKFLOW:
		break;
	default:
		reply_rc(req, -ENOENT);
		return;
	}
	if (ino_kind(ino) != INO_KIND_WORKFLOW) {
		if (rc)
			reply_rc(req, rc);
		else
			reply_open(req, fi, h);
		return;
	}
	rc = workflow_get(&fs->core, ino_wf_id(ino), &w);
	if (rc) {
		reply_rc(req, rc);
		return;
	}
	slot = ino_wf_slot(ino);
	if (slot == SLOT_EVENTS) {
		if ((fi->flags & O_ACCMODE) != O_RDONLY) {
			reply_rc(req, -EPERM);
			return;
		}
		h = handle_new(FILE_EVENTS, ino, w.id, fi->flags);
	} else if (slot == SLOT_FINGERPRINT || slot >= SLOT_POLICY_FIELD) {
		rc = new_handle(slot == SLOT_FINGERPRINT ? FILE_FINGERPRINT
				: FILE_POLICY, ino, w.id, fi->flags, &h);
		if (rc == 0 && slot >= SLOT_POLICY_FIELD)
			h->f.field = slot - SLOT_POLICY_FIELD;
		if (rc == 0)
			rc = opened(&h, file_open_value(&h->f, &w));
		if (rc == 0) {
			reply_open(req, fi, h);
			return;
		}
	} else {
		reply_rc(req, -EISDIR);
		return;
	}
out:
	if (!rc && !h)
		rc = -ENOMEM;
	if (rc) {
		free(snap);
		handle_free(h);
		reply_rc(req, rc);
		return;
	}
	file_set_snapshot(&h->f, snap, len);
	reply_open(req, fi, h);
}

/*
 * A new checkpoint: a writer on an inode of its own (INO_KIND_PENDING) and
 * no row until it commits (file_open_new_step).
 */
static int open_new_step(struct fs *fs, const struct step_row *r, int flags,
			 const struct caller *who, struct handle **out)
{
	uint64_t n = __atomic_add_fetch(&fs->next_pending, 1, __ATOMIC_RELAXED);
	int rc = new_handle(FILE_STEP, ino_make(INO_KIND_PENDING, n), r->wf,
			    flags, out);

	return rc ? rc : file_open_new_step(&fs->core, &(*out)->f, r, flags,
					    who);
}

static void create_step(fuse_req_t req, struct fs *fs, const struct wf_row *w,
			const char *name, size_t len, struct fuse_file_info *fi)
{
	struct caller who = caller_of(req);
	struct fuse_entry_param e;
	struct handle *h = NULL;
	struct step_row r;
	int rc;

	rc = step_create(&fs->core, w->id, name, len, fi->flags & O_EXCL, &who,
			 &r);
	if (rc == -EINVAL && len > NAME_MAX_LEN)
		rc = -ENAMETOOLONG;
	if (rc == 0 && r.id == 0)
		rc = opened(&h, open_new_step(fs, &r, fi->flags, &who, &h));
	else if (rc == 0)
		rc = opened(&h, open_step(fs, ino_make(INO_KIND_STEP,
						       (uint64_t)r.id),
					  fi->flags, r.size == 0, &who, &h));
	if (rc) {
		reply_rc(req, rc);
		return;
	}
	memset(&e, 0, sizeof(e));
	fill_step(w, &r, &e.attr);
	e.attr.st_ino = h->ino;
	e.ino = e.attr.st_ino;
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	handle_track(fs, h);
	if (fuse_reply_create(req, &e, fi) != 0)
		handle_close(fs, h);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct caller who = caller_of(req);
	struct fuse_entry_param e;
	struct handle *h = NULL;
	struct wf_row w;
	struct key_row k;
	size_t len = strlen(name);
	int rc;

	count_request(req, MR_CREATE);
	(void)mode;
	if (parent == INO_ROOT || ino_kind(parent) != INO_KIND_WORKFLOW ||
	    (ino_wf_slot(parent) != SLOT_KEYS &&
	     ino_wf_slot(parent) != SLOT_STEPS)) {
		reply_rc(req, len > NAME_MAX_LEN ? -ENAMETOOLONG : -EPERM);
		return;
	}
	if (ino_wf_slot(parent) == SLOT_STEPS) {
		rc = workflow_get(&fs->core, ino_wf_id(parent), &w);
		if (rc)
			reply_rc(req, rc);
		else
			create_step(req, fs, &w, name, len, fi);
		return;
	}
	if (!(fi->flags & O_EXCL)) {
		/* Only an exclusive create claims; open a live key, else ENOENT. */
		rc = key_lookup(&fs->core, ino_wf_id(parent), name, len, &k, &w);
		if (rc == -EINVAL)
			rc = -ENOENT;
		if (rc == 0)
			rc = opened(&h, open_key(fs, ino_make(INO_KIND_KEY,
							      (uint64_t)k.generation),
						 fi->flags, &who, &h));
	} else {
		/* The claim: what a reader of it sees needs no store read. */
		rc = new_handle(FILE_KEY, 0, ino_wf_id(parent), fi->flags,
				&h);
		if (rc == 0)
			rc = opened(&h, file_claim(&fs->core, &h->f,
						   ino_wf_id(parent), name, len,
						   &who, &k, &w));
		if (rc == 0) {
			h->ino = ino_make(INO_KIND_KEY, (uint64_t)k.generation);
			fill_key(&w, &k, &h->claim_attr);
			renew_if_writer(fs, h);
		}
	}
	if (rc) {
		reply_rc(req, rc);
		return;
	}
	memset(&e, 0, sizeof(e));
	fill_key(&w, &k, &e.attr);
	e.ino = e.attr.st_ino;
	e.attr_timeout = CLAIM_ATTR_TIMEOUT;
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	handle_track(fs, h);
	if (fuse_reply_create(req, &e, fi) != 0) {
		/*
		 * Nobody got the file: its opener was killed or interrupted
		 * while the claim was made.  No RELEASE will come, and the
		 * claim has no holder: free the key now, not at the lease's end.
		 */
		if (h->f.claimed)
			key_abandon(&fs->core, h->f.generation, h->f.name,
				    h->f.name_len, &who, NULL,
				    "the open that claimed it did not return");
		handle_close(fs, h);
	}
}

/* ---- wait/K: reads that wait, at no thread's cost ------------------- */

struct parked {
	struct waiter w;	/* first: the waker hands it back */
	struct fs *fs;
	fuse_req_t req;
	struct handle *h;
	size_t size;
	off_t off;
};

static void reply_read(fuse_req_t req, struct handle *h, size_t size,
		       off_t off)
{
	char *buf = malloc(size ? size : 1);
	size_t got = 0;
	int rc = buf ? file_read(&h->f, off, buf, size, &got) : -ENOMEM;

	if (rc)
		reply_rc(req, rc);
	else
		fuse_reply_buf(req, buf, got);
	free(buf);
}

/* From the waker: the claim a parked read waited for has ended. */
static void wake_parked(void *arg, struct waiter *w, int verdict)
{
	struct parked *p = (struct parked *)w;

	(void)arg;
	if (verdict == 0)
		verdict = file_wait_ended(&p->fs->core, &p->h->f, &p->fs->ended);
	if (verdict == 0)
		reply_read(p->req, p->h, p->size, p->off);
	else
		reply_rc(p->req, verdict);
	free(p);
}

int fs_waits_new(struct fs *fs)
{
	int rc = waits_new(&fs->core, wake_parked, fs, &fs->waits);

	if (rc == 0)
		fs->core.waits = fs->waits;
	return rc;
}

void fs_waits_free(struct fs *fs)
{
	fs->core.waits = NULL;
	waits_free(fs->waits);	/* the parked get EINTR */
	fs->waits = NULL;
}

/* Ctrl-C, timeout(1): the reader gives up. */
static void parked_interrupted(fuse_req_t req, void *data)
{
	struct fs *fs = fuse_req_userdata(req);
	struct waiter *w = wait_cancel(fs->waits, (uint64_t)(uintptr_t)data);

	if (w) {
		fuse_reply_err(req, EINTR);
		free(w);
	}
}

/*
 * A read of wait/K while the claim is in flight: park it, reply nothing.
 * The interrupt is armed before the park, so that a waiter woken at once
 * cannot have its request freed under us; the id, not the struct, is what
 * the interrupt names.
 */
static void read_wait(fuse_req_t req, struct handle *h, size_t size,
		      off_t off)
{
	struct fs *fs = fs_of(req);
	struct parked *p = calloc(1, sizeof(*p));
	int rc;

	if (!p) {
		reply_rc(req, -ENOMEM);
		return;
	}
	p->fs = fs;
	p->req = req;
	p->h = h;
	p->size = size;
	p->off = off;
	p->w.id = wait_new_id(fs->waits);
	fuse_req_interrupt_func(req, parked_interrupted,
				(void *)(uintptr_t)p->w.id);
	rc = fuse_req_interrupted(req) ? -EINTR
				       : wait_park(fs->waits, &p->w, h->f.generation);
	if (rc) {
		free(p);
		reply_rc(req, rc);
	}
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	char *buf;
	size_t got = 0;
	int rc = 0;

	count_request(req, MR_READ);
	(void)ino;
	if (h->f.kind == FILE_WAIT) {
		read_wait(req, h, size, off);
		return;
	}
	if (h->f.kind == FILE_EVENTS) {
		buf = malloc(size ? size : 1);
		if (!buf) {
			reply_rc(req, -ENOMEM);
			return;
		}
		rc = store_begin(fs->core.store, false);
		if (rc == 0) {
			rc = store_event_read(fs->core.store, h->f.wf, off, buf,
					      size, &got);
			rc = once_end(&fs->core, rc);
		}
		if (rc)
			reply_rc(req, rc);
		else
			fuse_reply_buf(req, buf, got);
		free(buf);
		return;
	}
	if (h->f.kind == FILE_STEP) {
		buf = malloc(size ? size : 1);
		if (!buf) {
			reply_rc(req, -ENOMEM);
			return;
		}
		if (h->f.writer) {
			pthread_mutex_lock(&h->f.lock);
			rc = step_writer_read(h->f.writer, off, buf, size, &got);
			pthread_mutex_unlock(&h->f.lock);
		} else {
			rc = file_read(&h->f, off, buf, size, &got);
		}
		if (rc)
			reply_rc(req, rc);
		else
			fuse_reply_buf(req, buf, got);
		free(buf);
		return;
	}
	buf = malloc(size ? size : 1);
	rc = buf ? file_read(&h->f, off, buf, size, &got) : -ENOMEM;
	if (rc)
		reply_rc(req, rc);
	else
		fuse_reply_buf(req, buf, got);
	free(buf);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *data,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct caller who = caller_of(req);
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	int rc;

	count_request(req, MR_WRITE);
	(void)ino;
	rc = file_write(&fs->core, &h->f, data, size, off, &who);
	if (rc)
		reply_rc(req, rc);
	else
		fuse_reply_write(req, size);
}

/* Commit what a handle wrote since its last commit. */
static int commit(struct fs *fs, struct handle *h, const struct caller *who)
{
	int rc = file_commit(&fs->core, &h->f, who);

	if (h->f.settled)
		handle_renew_remove(fs, h);	/* finalized or detached */
	return rc;
}

/*
 * A key's handle may have changed its key: the kernel forgets the
 * attributes the CREATE reply let it keep (CLAIM_ATTR_TIMEOUT) before
 * the request that changed them is answered.  FUSE-NOTES.md says to send
 * notices from another thread: an invalidation of pages or entries takes
 * locks that the request's caller may hold (fsync holds the inode's).
 * With offset -1 the kernel only moves the inode's attribute version on
 * and marks its attributes stale, taking no such lock: it cannot
 * deadlock here, and it must be done before the reply.
 */
static void forget_attrs(struct fs *fs, const struct handle *h)
{
	if (h->f.kind == FILE_KEY && h->ino)
		fuse_lowlevel_notify_inval_inode(fs->se, h->ino, -1, 0);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	struct caller who = caller_of(req);
	int rc;

	count_request(req, MR_FLUSH);
	(void)ino;
	rc = commit(fs_of(req), h, &who);
	file_flushed(&h->f, &who);
	forget_attrs(fs_of(req), h);
	reply_rc(req, rc);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	struct caller who = caller_of(req);

	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	int rc;

	count_request(req, MR_FSYNC);
	(void)ino;
	(void)datasync;
	rc = commit(fs_of(req), h, &who);
	forget_attrs(fs_of(req), h);
	reply_rc(req, rc);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	struct caller who = caller_of(req);

	count_request(req, MR_RELEASE);
	(void)ino;
	file_release(&fs_of(req)->core, &h->f, &who);
	forget_attrs(fs_of(req), h);
	handle_close(fs_of(req), h);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	count_request(req, MR_FSYNC);
	(void)ino;
	(void)datasync;
	(void)fi;
	fuse_reply_err(req, 0);
}

/* ---- extended attributes ---------------------------------------------- */

/*
 * The attributes of a key: what its row says, read-only, then the notes
 * of its claim (enum key_note), which the claimant may set.
 */
enum key_xattr {
	XATTR_STATUS,
	XATTR_GENERATION,
	XATTR_ATTEMPT,
	XATTR_EXPIRES,
	XATTR_HOLDER,
	XATTR_PREVIOUS,
	XATTR_REQUEST,
	XATTR_ORIGINAL,
	N_XATTRS
};

static const char *const xattr_names[N_XATTRS] = {
	[XATTR_STATUS] = "user.oncefs.status",
	[XATTR_GENERATION] = "user.oncefs.generation",
	[XATTR_ATTEMPT] = "user.oncefs.attempt",
	[XATTR_EXPIRES] = "user.oncefs.expires",
	[XATTR_HOLDER] = "user.oncefs.holder",
	[XATTR_PREVIOUS] = "user.oncefs.previous",
	[XATTR_REQUEST] = "user.oncefs.request",
	[XATTR_ORIGINAL] = "user.oncefs.original",
};

static int xattr_of(const char *name)
{
	for (int i = 0; i < N_XATTRS; i++)
		if (name_is(name, xattr_names[i]))
			return i;
	return -1;
}

static enum key_note xattr_note(int x)
{
	return x == XATTR_REQUEST ? KEY_NOTE_REQUEST : KEY_NOTE_ORIGINAL;
}

static void reply_xattr_value(fuse_req_t req, const char *value, size_t len,
			      size_t size)
{
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		reply_rc(req, -ERANGE);
	else
		fuse_reply_buf(req, value, len);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	struct fs *fs = fs_of(req);
	char value[KEY_ORIGINAL_MAX];
	int x = xattr_of(name), n = -1;
	struct key_row k;
	size_t len;
	int rc;

	count_request(req, MR_XATTR);
	if (ino_kind(ino) != INO_KIND_KEY || x < 0) {
		reply_rc(req, -ENODATA);
		return;
	}
	if (x == XATTR_REQUEST || x == XATTR_ORIGINAL) {
		rc = key_note(&fs->core, ino_value(ino), xattr_note(x), value,
			      &len);
		if (rc)
			reply_rc(req, rc);
		else
			reply_xattr_value(req, value, len, size);
		return;
	}
	rc = key_get(&fs->core, ino_value(ino), &k, NULL);
	if (rc) {
		reply_rc(req, rc);
		return;
	}
	switch (x) {
	case XATTR_STATUS:
		n = snprintf(value, sizeof(value), "%s", status_name(k.status));
		break;
	case XATTR_GENERATION:
		n = snprintf(value, sizeof(value), "%" PRId64, k.generation);
		break;
	case XATTR_ATTEMPT:
		n = snprintf(value, sizeof(value), "%" PRId64, k.attempt);
		break;
	case XATTR_EXPIRES:
		n = snprintf(value, sizeof(value), "%" PRId64,
			     k.status == KEY_IN_FLIGHT ? k.expires_ms / 1000 : 0);
		break;
	case XATTR_HOLDER:
		n = snprintf(value, sizeof(value), "%" PRId32 " %" PRIu32 "%s%s",
			     k.holder_pid, k.holder_uid,
			     k.holder_host[0] ? " " : "", k.holder_host);
		break;
	case XATTR_PREVIOUS:
		n = snprintf(value, sizeof(value), "%" PRId64, k.previous);
		break;
	}
	if (n < 0) {
		reply_rc(req, -ENODATA);
		return;
	}
	reply_xattr_value(req, value, (size_t)n, size);
}

/* Every attribute of a key, but the notes it has not got. */
static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct fs *fs = fs_of(req);
	char list[256], value[KEY_ORIGINAL_MAX];
	size_t len = 0, n;
	int rc;

	count_request(req, MR_XATTR);
	for (int i = 0; ino_kind(ino) == INO_KIND_KEY && i < N_XATTRS; i++) {
		if (i == XATTR_REQUEST || i == XATTR_ORIGINAL) {
			rc = key_note(&fs->core, ino_value(ino), xattr_note(i),
				      value, &n);
			if (rc == -ENODATA)
				continue;
			if (rc) {
				reply_rc(req, rc);
				return;
			}
		}
		n = strlen(xattr_names[i]) + 1;
		memcpy(list + len, xattr_names[i], n);
		len += n;
	}
	reply_xattr_value(req, list, len, size);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	struct caller who = caller_of(req);
	int x = xattr_of(name);
	int rc;

	count_request(req, MR_XATTR);
	if (ino_kind(ino) != INO_KIND_KEY || x < 0)
		rc = -ENOTSUP;	/* no other attributes (cp -a goes on) */
	else if (x != XATTR_REQUEST && x != XATTR_ORIGINAL)
		rc = -EPERM;	/* the row's own: read-only */
	else
		rc = key_set_note(&fs_of(req)->core, ino_value(ino),
				  xattr_note(x), value, size,
				  (flags & XATTR_CREATE ? KEY_NOTE_CREATE : 0) |
				  (flags & XATTR_REPLACE ? KEY_NOTE_REPLACE : 0),
				  &who);
	reply_rc(req, rc);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	count_request(req, MR_XATTR);
	reply_rc(req, ino_kind(ino) == INO_KIND_KEY && xattr_of(name) >= 0
		      ? -EPERM : -ENOTSUP);
}

/* ---- the file system -------------------------------------------------- */

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	count_request(req, MR_OTHER);
	(void)ino;
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_namemax = NAME_MAX_LEN;
	fuse_reply_statfs(req, &sv);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* O_TRUNC arrives with the open, not as a separate truncate. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	conn->want &= ~(unsigned int)FUSE_CAP_WRITEBACK_CACHE;
	/* Directory listings change behind the kernel's back. */
	conn->want &= ~(unsigned int)FUSE_CAP_READDIRPLUS;
}

const struct fuse_lowlevel_ops fs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.readdir = op_readdir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
	.create = op_create,
};
