/*
 * main.c - the oncefs daemon: options, the store, the mount, the loop.
 *
 *     oncefs [-f] [-d] [-o OPTION[,OPTION...]] STATE.db MOUNTPOINT
 *
 * Unless -f is given, the daemon forks: the parent waits until the child
 * has opened the store and mounted, and exits with the child's verdict,
 * so that a script can trust the exit status of the mount command.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"
#include "handle.h"
#include "../core/background.h"

#ifndef ONCEFS_VERSION
#define ONCEFS_VERSION "0"
#endif

struct options {
	char *store;
	char *mountpoint;
	int create;
	char *sync;
	char *max_result;
	char *max_checkpoint;
	int busy_timeout_ms;
	int connections;
	char *pg_schema;
	int sweep_interval;
	int lease;
	int foreground;
	int debug;
	int help;
	int version;
	int nonopts;
	int read_only;		/* -o ro: the store is opened read-only too */
};

#define OPT(t, p) { t, offsetof(struct options, p), 1 }

enum { KEY_HELP, KEY_VERSION, KEY_FOREGROUND, KEY_DEBUG, KEY_RO };

static const struct fuse_opt option_spec[] = {
	OPT("create", create),
	OPT("sync=%s", sync),
	OPT("max_result=%s", max_result),
	OPT("max_checkpoint=%s", max_checkpoint),
	OPT("busy_timeout=%d", busy_timeout_ms),
	OPT("sweep_interval=%d", sweep_interval),
	OPT("lease=%d", lease),
	OPT("connections=%d", connections),
	OPT("pg_schema=%s", pg_schema),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_KEY("-f", KEY_FOREGROUND),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("ro", KEY_RO),
	FUSE_OPT_END
};

static void usage(FILE *f)
{
	fprintf(f,
"usage: oncefs [-f] [-d] [-o OPTION[,OPTION...]] STORE MOUNTPOINT\n"
"\n"
"Mount the oncefs store STORE at MOUNTPOINT: a SQLite file (STATE.db), or a\n"
"PostgreSQL database that mounts on many hosts share (postgresql://USER@HOST/DB,\n"
"or a libpq connection string; the password from ~/.pgpass or PGPASSWORD).\n"
"\n"
"  -f                   stay in the foreground\n"
"  -d                   debug: foreground, log every request\n"
"  -h, --help           this help\n"
"  -V, --version        the version\n"
"\n"
"oncefs options:\n"
"  -o create            create the store if it does not exist\n"
"  -o sync=full|normal|off\n"
"                       durability of a reply (default full: on disk, even\n"
"                       across power loss; normal: across a crash of oncefs;\n"
"                       off: left to the OS)\n"
"  -o max_result=SIZE   largest result a key may hold (default 1M)\n"
"  -o max_checkpoint=SIZE\n"
"                       largest checkpoint (default 1G)\n"
"  -o busy_timeout=MS   how long to wait for another process's write lock\n"
"                       on the store before failing with EAGAIN (default 5000)\n"
"  -o connections=N     PostgreSQL: connections this mount opens at most\n"
"                       (default 4, 1 to 64)\n"
"  -o pg_schema=NAME    PostgreSQL: the schema that holds the store (default\n"
"                       oncefs); one database can hold several stores\n"
"  -o lease=S           the lease of a held claim, renewed while its handle\n"
"                       is open: a dead mount's claims are free after it\n"
"                       (default 10; never longer than in_flight_ttl)\n"
"  -o sweep_interval=S  sweep expired claims, keys and events past retention\n"
"                       and old checkpoints every S seconds (default 60;\n"
"                       0: never, leave it to 'oncectl sweep')\n"
"\n"
"FUSE options (passed to the kernel):\n"
"  -o allow_other       let other users use the mount (see /etc/fuse.conf)\n"
"  -o ro, -o fsname=NAME, and the other options of mount.fuse3(8)\n"
"SIZE takes a K, M or G suffix.  oncefs always adds default_permissions.\n");
}

static int parse_option(void *data, const char *arg, int key,
			struct fuse_args *outargs)
{
	struct options *o = data;

	(void)outargs;
	switch (key) {
	case KEY_HELP:
		o->help = 1;
		return 0;
	case KEY_VERSION:
		o->version = 1;
		return 0;
	case KEY_FOREGROUND:
		o->foreground = 1;
		return 0;
	case KEY_DEBUG:
		o->debug = 1;
		o->foreground = 1;
		return 1;
	case KEY_RO:
		o->read_only = 1;
		return 1;	/* and the kernel's too */
	case FUSE_OPT_KEY_NONOPT:
		if (o->nonopts == 0)
			o->store = strdup(arg);
		else if (o->nonopts == 1)
			o->mountpoint = strdup(arg);
		o->nonopts++;
		return 0;
	default:
		return 1;
	}
}

/* "1048576", "64K", "1M", "2G" -> bytes; -1 when malformed. */
static int64_t parse_size(const char *s)
{
	char *end;
	unsigned long long v;
	int shift = 0;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	if (*end == 'K' || *end == 'k')
		shift = 10;
	else if (*end == 'M' || *end == 'm')
		shift = 20;
	else if (*end == 'G' || *end == 'g')
		shift = 30;
	else if (*end)
		return -1;
	if (shift && end[1])
		return -1;
	if (v > (unsigned long long)INT64_MAX >> shift)
		return -1;
	return (int64_t)(v << shift);
}

static int parse_sync(const char *s, enum store_sync *out)
{
	if (!s || strcmp(s, "full") == 0)
		*out = STORE_SYNC_FULL;
	else if (strcmp(s, "normal") == 0)
		*out = STORE_SYNC_NORMAL;
	else if (strcmp(s, "off") == 0)
		*out = STORE_SYNC_OFF;
	else
		return -1;
	return 0;
}

/* Tell the waiting parent how the start went (one byte: 0 is success). */
static void report_start(int fd, unsigned char status)
{
	if (fd >= 0) {
		if (write(fd, &status, 1) != 1)
			perror("oncefs: report start");
		close(fd);
	}
}

static int wait_for_child(pid_t child, int fd)
{
	unsigned char status = 1;
	int wstatus;

	if (read(fd, &status, 1) != 1) {
		waitpid(child, &wstatus, 0);
		return 1;
	}
	return status;
}

/*
 * The absolute directory of path into dir, and in *base the last
 * component of path (pointing into path).  0, or -1 with errno.
 */
static int absolute_dir(const char *path, char *dir, size_t size,
			const char **base)
{
	char parent[PATH_MAX];
	const char *slash = strrchr(path, '/');
	char resolved[PATH_MAX];

	if (slash) {
		snprintf(parent, sizeof(parent), "%.*s", (int)(slash - path), path);
		if (!parent[0])
			snprintf(parent, sizeof(parent), "/");
		*base = slash + 1;
	} else {
		snprintf(parent, sizeof(parent), ".");
		*base = path;
	}
	if (!realpath(parent, resolved))
		return -1;
	snprintf(dir, size, "%s", resolved);
	return 0;
}

static void detach(void)
{
	int fd = open("/dev/null", O_RDWR);

	setsid();
	if (chdir("/") != 0)
		perror("oncefs: chdir");
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct options opt = { .busy_timeout_ms = 5000, .sweep_interval = 60,
			       .lease = ONCE_LEASE_MS_DEFAULT / 1000 };
	struct store_options sopt = { 0 };
	struct background_config bcfg = { 0 };
	char host[STORE_HOST_MAX + 1];
	struct once_config cfg = {
		.max_result = ONCE_MAX_RESULT_DEFAULT,
		.max_checkpoint = ONCE_MAX_CHECKPOINT_DEFAULT,
	};
	struct fuse_loop_config *loop = NULL;
	struct store *st = NULL;
	struct fs *fs = NULL;
	struct timespec now;
	struct stat sb;
	char err[512] = "";
	char fsname[PATH_MAX + 16];
	char tmpdir[PATH_MAX];
	const char *base = NULL;
	int report_fd = -1;
	int64_t size;
	int rc = 1;

	if (fuse_opt_parse(&args, &opt, option_spec, parse_option) != 0) {
		rc = 2;
		goto out;
	}
	if (opt.help) {
		usage(stdout);
		rc = 0;
		goto out;
	}
	if (opt.version) {
		printf("oncefs %s (libfuse %s, SQLite %s)\n", ONCEFS_VERSION,
		       fuse_pkgversion(), STORE_SQLITE_VERSION);
		rc = 0;
		goto out;
	}
	if (opt.nonopts != 2) {
		usage(stderr);
		rc = 2;
		goto out;
	}
	sopt.create = opt.create;
	sopt.read_only = opt.read_only;
	sopt.busy_timeout_ms = opt.busy_timeout_ms;
	sopt.connections = opt.connections;
	sopt.pg_schema = opt.pg_schema;
	if (parse_sync(opt.sync, &sopt.sync)) {
		fprintf(stderr, "oncefs: sync=%s: expected full, normal or off\n",
			opt.sync);
		rc = 2;
		goto out;
	}
	if (opt.max_result) {
		size = parse_size(opt.max_result);
		if (size < 0 || size > INT32_MAX) {
			fprintf(stderr, "oncefs: max_result=%s: not a size\n",
				opt.max_result);
			rc = 2;
		goto out;
		}
		cfg.max_result = (size_t)size;
	}
	if (opt.max_checkpoint) {
		size = parse_size(opt.max_checkpoint);
		if (size < 0) {
			fprintf(stderr, "oncefs: max_checkpoint=%s: not a size\n",
				opt.max_checkpoint);
			rc = 2;
		goto out;
		}
		cfg.max_checkpoint = size;
	}
	if (opt.lease < 1 || opt.lease > 86400) {
		fprintf(stderr, "oncefs: lease must be 1 to 86400 seconds\n");
		rc = 2;
		goto out;
	}
	cfg.lease_ms = (int64_t)opt.lease * 1000;
	/* Claims name this host (user.oncefs.holder): cut, never refused. */
	if (gethostname(host, sizeof(host)) != 0)
		host[0] = '\0';
	host[sizeof(host) - 1] = '\0';
	host[strcspn(host, " \t\n")] = '\0';
	cfg.host = host;
	if (opt.sweep_interval < 0) {
		fprintf(stderr, "oncefs: sweep_interval must be >= 0\n");
		rc = 2;
		goto out;
	}
	if (opt.busy_timeout_ms < 0) {
		fprintf(stderr, "oncefs: busy_timeout must be >= 0\n");
		rc = 2;
		goto out;
	}
	if (opt.connections < 0 || opt.connections > 64) {
		fprintf(stderr, "oncefs: connections must be 1 to 64\n");
		rc = 2;
		goto out;
	}

	if (stat(opt.mountpoint, &sb) || !S_ISDIR(sb.st_mode)) {
		fprintf(stderr, "oncefs: %s: not a directory to mount on\n",
			opt.mountpoint);
		rc = 1;
		goto out;
	}
	snprintf(fsname, sizeof(fsname), "-ofsname=oncefs:%s", opt.store);
	if (fuse_opt_add_arg(&args, "-odefault_permissions,subtype=oncefs") ||
	    fuse_opt_add_arg(&args, fsname)) {
		rc = 1;
		goto out;
	}

	/* The daemon's complaints go to syslog, and to stderr with -f. */
	openlog("oncefs", LOG_PID | (opt.foreground ? LOG_PERROR : 0), LOG_DAEMON);
	if (!opt.foreground) {
		int fds[2];
		pid_t child;

		if (pipe(fds)) {
			perror("oncefs: pipe");
			rc = 1;
			goto out;
		}
		child = fork();
		if (child < 0) {
			perror("oncefs: fork");
			rc = 1;
			goto out;
		}
		if (child > 0) {
			close(fds[1]);
			rc = wait_for_child(child, fds[0]);
			goto out;
		}
		close(fds[0]);
		report_fd = fds[1];
	}

	/*
	 * The daemon leaves its working directory: name the store by an
	 * absolute path.  Private copies of checkpoints live beside it.
	 */
	if (store_scheme(opt.store) == STORE_SCHEME_SQLITE &&
	    absolute_dir(opt.store, tmpdir, sizeof(tmpdir), &base)) {
		fprintf(stderr, "oncefs: %s: %s\n", opt.store, strerror(errno));
		rc = 1;
		goto out;
	}
	if (base) {
		char *abs = malloc(strlen(tmpdir) + strlen(base) + 2);

		if (!abs)
			goto out;
		sprintf(abs, "%s/%s", tmpdir, base);
		free(opt.store);
		opt.store = abs;
	}

	fs = calloc(1, sizeof(*fs));
	if (!fs) {
		rc = 1;
		goto out;
	}
	pthread_mutex_init(&fs->renew_lock, NULL);
	pthread_mutex_init(&fs->ended.lock, NULL);
	/* The session first: it refuses unknown options before any store
	 * is created. */
	fs->se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), fs);
	if (!fs->se) {
		rc = 2;
		goto out;
	}
	rc = store_open(opt.store, &sopt, &st, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "oncefs: %s: %s\n", opt.store, err);
		rc = 1;
		goto out_destroy;
	}
	cfg.tmpdir = tmpdir;
	once_init(&fs->core, st, &cfg);
	fs->owner_uid = getuid();
	fs->owner_gid = getgid();
	clock_gettime(CLOCK_REALTIME, &now);
	fs->mount_time_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;

	rc = 1;
	if (fuse_set_signal_handlers(fs->se))
		goto out_destroy;
	if (fuse_session_mount(fs->se, opt.mountpoint))
		goto out_handlers;
	bcfg.sweep_interval_ms = (int64_t)opt.sweep_interval * 1000;
	bcfg.claims = handle_renewing;
	bcfg.arg = fs;
	if (fs_waits_new(fs))
		goto out_unmount;
	bcfg.waits = fs->waits;
	if (background_start(&fs->core, &bcfg, &fs->background))
		goto out_unmount;

	if (report_fd >= 0) {
		report_start(report_fd, 0);
		report_fd = -1;
		detach();
	}
	loop = fuse_loop_cfg_create();
	fuse_loop_cfg_set_max_threads(loop, 16);
	rc = fuse_session_loop_mt(fs->se, loop) ? 1 : 0;
	fuse_loop_cfg_destroy(loop);
	background_stop(fs->background);
	fs->background = NULL;
	fs_waits_free(fs);
	handle_close_all(fs);
out_unmount:
	if (fs->waits)
		fs_waits_free(fs);
	fuse_session_unmount(fs->se);
out_handlers:
	fuse_remove_signal_handlers(fs->se);
out_destroy:
	fuse_session_destroy(fs->se);
out:
	report_start(report_fd, 1);
	if (fs) {
		pthread_mutex_destroy(&fs->renew_lock);
		pthread_mutex_destroy(&fs->ended.lock);
		free(fs);
	}
	store_close(st);
	fuse_opt_free_args(&args);
	free(opt.store);
	free(opt.mountpoint);
	free(opt.sync);
	free(opt.pg_schema);
	free(opt.max_result);
	free(opt.max_checkpoint);
	return rc;
}
