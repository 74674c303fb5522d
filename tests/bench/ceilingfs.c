/*
 * ceilingfs - the cost of FUSE itself, for scripts/bench-claims.
 *
 * A minimal in-memory filesystem on the same low-level API, loop and
 * options as oncefs: one flat directory whose only change is an exclusive
 * create; writes are taken and dropped (the claim cycle writes a status).
 * Whatever oncefs spends above this is the store's cost.
 *
 *     ceilingfs [-f] MOUNTPOINT
 */
#define FUSE_USE_VERSION 312
#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NBUCKETS (1 << 20)

struct name {
	struct name *next;
	fuse_ino_t ino;
	char s[];
};

static struct name *table[NBUCKETS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static fuse_ino_t next_ino = 2;

static unsigned long hash(const char *s)
{
	unsigned long h = 5381;

	while (*s)
		h = h * 33 + (unsigned char)*s++;
	return h % NBUCKETS;
}

static struct name *find(const char *s)
{
	for (struct name *n = table[hash(s)]; n; n = n->next) {
		if (strcmp(n->s, s) == 0)
			return n;
	}
	return NULL;
}

static void fill(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = ino == 1 ? S_IFDIR | 0755 : S_IFREG | 0644;
	st->st_nlink = 1;
}

static void reply_entry(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.ino = ino;
	fill(ino, &e.attr);
	if (fi)
		fuse_reply_create(req, &e, fi);
	else
		fuse_reply_entry(req, &e);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct name *n;
	fuse_ino_t ino = 0;

	pthread_mutex_lock(&lock);
	n = parent == 1 ? find(name) : NULL;
	if (n)
		ino = n->ino;
	pthread_mutex_unlock(&lock);
	if (ino)
		reply_entry(req, ino, NULL);
	else
		fuse_reply_err(req, ENOENT);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	fill(ino, &st);
	fuse_reply_attr(req, &st, 0);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	size_t len = strlen(name);
	struct name *n;
	fuse_ino_t ino = 0;
	int err = 0;

	(void)mode;
	if (parent != 1 || !(fi->flags & O_EXCL)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	pthread_mutex_lock(&lock);
	if (find(name)) {
		err = EEXIST;
	} else {
		n = malloc(sizeof(*n) + len + 1);
		if (!n) {
			err = ENOMEM;
		} else {
			unsigned long h = hash(name);

			memcpy(n->s, name, len + 1);
			n->ino = ino = next_ino++;
			n->next = table[h];
			table[h] = n;
		}
	}
	pthread_mutex_unlock(&lock);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	fi->direct_io = 1;
	reply_entry(req, ino, fi);
}

static void op_ok(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	(void)buf;
	(void)off;
	(void)fi;
	fuse_reply_write(req, size);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n)
{
	(void)ino;
	(void)n;
	fuse_reply_none(req);
}

static const struct fuse_lowlevel_ops ops = {
	.lookup = op_lookup,
	.forget = op_forget,
	.getattr = op_getattr,
	.create = op_create,
	.write = op_write,
	.flush = op_ok,
	.release = op_ok,
};

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts opts;
	struct fuse_loop_config *loop;
	struct fuse_session *se;
	int rc = 1;

	if (fuse_parse_cmdline(&args, &opts) || !opts.mountpoint) {
		fprintf(stderr, "usage: ceilingfs [-f] MOUNTPOINT\n");
		return 2;
	}
	fuse_opt_add_arg(&args, "-odefault_permissions");
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se)
		return 1;
	if (fuse_set_signal_handlers(se) == 0 &&
	    fuse_session_mount(se, opts.mountpoint) == 0) {
		fuse_daemonize(opts.foreground);
		loop = fuse_loop_cfg_create();
		fuse_loop_cfg_set_max_threads(loop, 16);
		rc = fuse_session_loop_mt(se, loop) ? 1 : 0;
		fuse_loop_cfg_destroy(loop);
		fuse_session_unmount(se);
	}
	fuse_remove_signal_handlers(se);
	fuse_session_destroy(se);
	free(opts.mountpoint);
	fuse_opt_free_args(&args);
	return rc;
}
