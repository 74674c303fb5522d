/*
 * once - run a command at most once, on a mounted oncefs.
 *
 *     once [OPTIONS] WORKFLOW_DIR KEY -- COMMAND [ARG...]
 *     once [OPTIONS] --step STEP WORKFLOW_DIR -- COMMAND [ARG...]
 *
 * The first form claims WORKFLOW_DIR/keys/KEY with O_EXCL.  The winner runs
 * COMMAND while holding the claim open (so its lease renews itself), and
 * finalizes the key "succeeded" with the command's standard output as the
 * result, or "failed"; the command's exit status is passed through.  A
 * loser prints the stored result of a succeeded key and exits 0, or exits
 * ONCE_EXIT_IN_FLIGHT while the key is in flight (--wait: wait for it).
 *
 * The second form runs a step: if WORKFLOW_DIR/steps/STEP exists it is
 * printed and nothing runs; otherwise the command's output is written to a
 * part file of this runner's own (created with O_EXCL) and renamed into
 * place with RENAME_NOREPLACE only if the command exits 0.  Of concurrent
 * runners exactly one commits; the others print the committed checkpoint.
 *
 * Key and step names come from anywhere (webhooks, queues): a name is one
 * path component, and every open is relative to the workflow directory's
 * fd with O_NOFOLLOW, never a pasted path.
 *
 * The command runs in a process group of its own, dies with once
 * (PR_SET_PDEATHSIG), and whatever is left of its group is killed when
 * once exits, by a small watchdog process if once itself is killed.
 *
 * It is a client of the mount like any other: plain file I/O, no library.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "../core/json.h"
#include "../core/sha256.h"

#define ONCE_EXIT_USAGE 64
#define ONCE_EXIT_OTHER_REQUEST 65	/* EX_DATAERR: the key was claimed
					 * for another request */
#define ONCE_EXIT_OSERR 71	/* EX_OSERR: the mount refused something */
#define ONCE_EXIT_IN_FLIGHT 75	/* EX_TEMPFAIL: try again later */
#define ONCE_EXIT_FAILED_BEFORE 76

#define RESULT_MAX_DEFAULT (1024 * 1024)
#define RESULT_MAX_LIMIT (1024 * 1024 * 1024)	/* --max-result at most 1 GiB */
#define TIMEOUT_MAX_S 3153600000.0		/* --timeout at most 100 years */
#define NAME_MAX_BYTES 255
#define ORIGINAL_MAX_BYTES 1024		/* user.oncefs.original */
#define FINGERPRINT_BYTES 256		/* user.oncefs.request */
#define REQUEST_PREFIX "sha256:"	/* --request: the fingerprint */
#define BUF_SIZE 65536

/* The command's process group (its pid), read by the signal handler. */
static volatile sig_atomic_t child_pgid;
_Static_assert(sizeof(sig_atomic_t) >= sizeof(pid_t), "a pid fits a sig_atomic_t");

/* Signals forwarded to the command; their dispositions when once started. */
static const int forwarded[] = { SIGINT, SIGTERM, SIGHUP };
#define NFORWARDED (sizeof(forwarded) / sizeof(forwarded[0]))
static struct sigaction orig_forwarded[NFORWARDED];
static struct sigaction orig_sigpipe;

/* Echo to our stdout: stops at the first error (EPIPE: the reader left). */
static bool echo_off;

static void usage(FILE *f)
{
	fprintf(f,
"usage: once [--wait] [--timeout SECONDS] [--max-result BYTES] [--json]\n"
"            [--done-status N] [--hash-key] [--request FILE|-]\n"
"            WORKFLOW_DIR KEY -- COMMAND [ARG...]\n"
"       once --step STEP WORKFLOW_DIR -- COMMAND [ARG...]\n"
"\n"
"Run COMMAND at most once per key, on a mounted oncefs.\n"
"\n"
"  --wait            if the key is in flight elsewhere, wait until it is\n"
"                    finalized (or freed, then claim it): a read of\n"
"                    WORKFLOW_DIR/wait/KEY, no polling\n"
"  --timeout S       give up waiting after S seconds (exit 75); 0, the\n"
"                    default, waits without limit; at most 3153600000\n"
"  --max-result N    keep at most N bytes of output as the key's result\n"
"                    (default 1048576, at most 1073741824; the rest is\n"
"                    still printed)\n"
"  --json            print one JSON object on stdout: the outcome, the\n"
"                    claim and the result (the command's output is not\n"
"                    echoed)\n"
"  --done-status N   exit with N (default 0) when the key had already\n"
"                    succeeded, to tell it from a run\n"
"  --hash-key        use sha256-HEX, HEX the SHA-256 of KEY, as the key's\n"
"                    name, so that any KEY (a URL, a message id of any\n"
"                    length) is a valid name; KEY itself is noted with the\n"
"                    claim (user.oncefs.original, up to 1024 bytes)\n"
"  --request FILE    note the SHA-256 of FILE's bytes (- for standard\n"
"                    input) with the claim, and refuse (exit 65) a key\n"
"                    that was claimed for another request\n"
"  --step STEP       run a step: skip it if steps/STEP exists, else commit the\n"
"                    command's output as steps/STEP only if it exits 0\n"
"\n"
"KEY and STEP are single names: not empty, not . or .., no '/', at most\n"
"255 bytes (--hash-key lifts this for KEY).\n"
"\n"
"exit status: the command's own when it ran; 0 (or --done-status) when the\n"
"key had already succeeded (its result is printed); 75 when the key is in\n"
"flight elsewhere;\n"
"76 when the key is terminally failed (dedup_on=any); 65 when it was\n"
"claimed for another request (--request); 71 when the mount refused an\n"
"operation (or --request FILE could not be read); 64 for a usage error.\n");
}

/*
 * A name or path for a message: control bytes and backslashes escaped (a
 * key name is hostile input and must not drive the terminal), truncated to
 * fit buf with "...".
 */
static const char *shown(const char *s, char *buf, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		bool plain = c >= 0x20 && c != 0x7f && c != '\\';

		if (o + (plain ? 1 : 4) + 4 > cap) {
			memcpy(buf + o, "...", 4);
			return buf;
		}
		if (plain) {
			buf[o++] = (char)c;
		} else {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
		}
	}
	buf[o] = '\0';
	return buf;
}

#define SHOWN_MAX 1200

/* "once: WF/DIR/NAME: what" on stderr, with the names escaped. */
static void path_error(const char *what, const char *wf, const char *dir,
		       const char *name, const char *why)
{
	char a[SHOWN_MAX], b[SHOWN_MAX];

	fprintf(stderr, "once: %s%s%s/%s%s%s: %s\n", what, *what ? " " : "",
		shown(wf, a, sizeof(a)), dir, name ? "/" : "",
		name ? shown(name, b, sizeof(b)) : "", why);
}

/*
 * A key or step name is one path component: not empty, not "." or "..", no
 * '/', at most 255 bytes.  Checked before anything is opened.
 */
static bool check_name(const char *what, const char *name)
{
	char buf[SHOWN_MAX];
	size_t len = strnlen(name, NAME_MAX_BYTES + 1);
	const char *why = NULL;

	if (len == 0)
		why = "must not be empty";
	else if (len > NAME_MAX_BYTES)
		why = "longer than 255 bytes";
	else if (strchr(name, '/'))
		why = "must not contain '/'";
	else if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		why = "must not be . or ..";
	if (!why)
		return true;
	fprintf(stderr, "once: %s name '%s': %s\n", what,
		shown(name, buf, sizeof(buf)), why);
	return false;
}

static void forward_signal(int sig)
{
	int saved = errno;
	pid_t pgid = (pid_t)child_pgid;

	if (pgid > 0)
		kill(-pgid, sig);
	errno = saved;
}

static int exit_status_of(int wstatus)
{
	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	if (WIFSIGNALED(wstatus))
		return 128 + WTERMSIG(wstatus);
	return 1;
}

static int write_all(int fd, const void *data, size_t len)
{
	const char *buf = data;

	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Copy to our stdout unless that failed before; false once it has. */
static bool echo(const char *buf, size_t len)
{
	int rc;

	if (echo_off)
		return false;
	rc = write_all(STDOUT_FILENO, buf, len);
	if (rc == 0)
		return true;
	echo_off = true;
	if (rc != -EPIPE)
		fprintf(stderr, "once: write to standard output: %s\n",
			strerror(-rc));
	return false;
}

/*
 * Copy what is left of fd to our stdout, a buffer at a time (a checkpoint
 * may be a gigabyte).  Returns 0, or -errno of a read.  A failing stdout
 * ends the copy: nobody reads the rest.
 */
static int echo_fd(int fd)
{
	char buf[BUF_SIZE];

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0 || !echo(buf, (size_t)n))
			return 0;
	}
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* The workflow directory and its keys/ or steps/, as O_PATH fds. */
static int open_dirs(const char *wf, const char *sub, int *wfd, int *subfd)
{
	*subfd = -1;
	*wfd = open(wf, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (*wfd < 0) {
		path_error("", wf, "", NULL, strerror(errno));
		return -1;
	}
	*subfd = openat(*wfd, sub, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (*subfd < 0) {
		path_error("", wf, sub, NULL, strerror(errno));
		close(*wfd);
		*wfd = -1;
		return -1;
	}
	return 0;
}

/* ---- the watchdog ------------------------------------------------------ */

/*
 * A process that outlives a killed once just long enough to clean up after
 * it: it reads from a pipe whose only writer is once.  'p' and a pid tell it
 * the command's process group; 'q' tells it once has cleaned up itself.  End
 * of file without 'q' means once died: it kills the command's group, removes
 * the step's part file, and only then closes its copy of the claim, so the
 * key is not free to adopt while the command can still run.
 */
static pid_t watchdog_pid = -1;
static int watchdog_fd = -1;

static void close_all_but(const int *keep, size_t n)
{
	unsigned int from = 0;
	int i, j;

	/* keep[] is small: close the gaps between its sorted members. */
	for (i = 0; i < (int)n; i++) {
		int lo = -1;

		for (j = 0; j < (int)n; j++)
			if (keep[j] >= (int)from && (lo < 0 || keep[j] < lo))
				lo = keep[j];
		if (lo < 0)
			break;
		if ((unsigned int)lo > from)
			close_range(from, (unsigned int)lo - 1, 0);
		from = (unsigned int)lo + 1;
	}
	close_range(from, ~0U, 0);
}

static void watchdog(int rfd, int hold_fd, int dirfd, const char *name)
{
	int keep[] = { STDERR_FILENO, rfd, hold_fd, dirfd };
	struct sigaction ign = { .sa_handler = SIG_IGN };
	sigset_t none;
	pid_t pgid = 0;
	char tag;
	size_t i;

	/* Out of once's group: a kill of that group leaves the watchdog. */
	setpgid(0, 0);
	prctl(PR_SET_NAME, "once-watchdog", 0, 0, 0);
	for (i = 0; i < NFORWARDED; i++)
		sigaction(forwarded[i], &ign, NULL);
	sigaction(SIGPIPE, &ign, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	close_all_but(keep, sizeof(keep) / sizeof(keep[0]));
	for (;;) {
		ssize_t n = read(rfd, &tag, 1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n == 1 && tag == 'q')
			_exit(0);
		if (n == 1 && tag == 'p') {
			pid_t p;
			size_t got = 0;

			while (got < sizeof(p)) {
				n = read(rfd, (char *)&p + got, sizeof(p) - got);
				if (n < 0 && errno == EINTR)
					continue;
				if (n <= 0)
					break;
				got += (size_t)n;
			}
			if (got == sizeof(p)) {
				pgid = p;
				continue;
			}
		}
		break;	/* end of file, an error, or garbage: once is gone */
	}
	if (pgid > 0)
		kill(-pgid, SIGKILL);
	if (dirfd >= 0 && name)
		unlinkat(dirfd, name, 0);
	_exit(0);
}

/* Before the command: start the watchdog.  Returns 0 or -errno. */
static int watchdog_start(int hold_fd, int dirfd, const char *name)
{
	int p[2], rc = 0;
	sigset_t all, old;

	if (pipe2(p, O_CLOEXEC))
		return -errno;
	/* No signal may kill the watchdog before it ignores them. */
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	watchdog_pid = fork();
	if (watchdog_pid == 0) {
		close(p[1]);
		watchdog(p[0], hold_fd, dirfd, name);
	}
	if (watchdog_pid < 0)
		rc = -errno;
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(p[0]);
	if (rc) {
		close(p[1]);
		return rc;
	}
	watchdog_fd = p[1];
	return 0;
}

static void watchdog_arm(pid_t pgid)
{
	char msg[1 + sizeof(pid_t)];

	if (watchdog_fd < 0)
		return;
	msg[0] = 'p';
	memcpy(msg + 1, &pgid, sizeof(pgid));
	if (write_all(watchdog_fd, msg, sizeof(msg)))
		fprintf(stderr, "once: watchdog: %s\n", strerror(errno));
}

/* Once has cleaned up itself: the watchdog exits without doing anything. */
static void watchdog_stop(void)
{
	int wstatus;

	if (watchdog_fd < 0)
		return;
	write_all(watchdog_fd, "q", 1);
	close(watchdog_fd);
	watchdog_fd = -1;
	while (waitpid(watchdog_pid, &wstatus, 0) < 0 && errno == EINTR)
		;
	watchdog_pid = -1;
}

/* ---- running the command ---------------------------------------------- */

struct run {
	char **argv;
	bool echo;		/* copy the output to our stdout */
	int out_fd;		/* and to this file, or -1 */
	size_t keep_max;	/* keep up to this much of it in kept */
	char *kept;
	size_t kept_len, kept_cap;
	int copy_error;		/* errno of writing out_fd */
	int keep_error;		/* ENOMEM keeping the output */
};

static void keep_output(struct run *r, const char *buf, size_t n)
{
	size_t take = n;

	if (r->keep_error || r->kept_len >= r->keep_max)
		return;
	if (take > r->keep_max - r->kept_len)
		take = r->keep_max - r->kept_len;
	if (r->kept_len + take > r->kept_cap) {
		size_t ncap = r->kept_cap ? r->kept_cap : 4096;
		char *p;

		while (ncap < r->kept_len + take)
			ncap *= 2;	/* at most 2 GiB: keep_max <= 1 GiB */
		p = realloc(r->kept, ncap);
		if (!p) {
			r->keep_error = ENOMEM;
			return;
		}
		r->kept = p;
		r->kept_cap = ncap;
	}
	memcpy(r->kept + r->kept_len, buf, take);
	r->kept_len += take;
}

static void restore_signals(void)
{
	size_t i;

	for (i = 0; i < NFORWARDED; i++)
		sigaction(forwarded[i], &orig_forwarded[i], NULL);
	sigaction(SIGPIPE, &orig_sigpipe, NULL);
}

static void child_fail(const char *what)
{
	fprintf(stderr, "once: %s: %s\n", what, strerror(errno));
	_exit(127);
}

/*
 * In the child: die with once, lead a process group of its own, wait until
 * once has told the watchdog about that group, then exec.
 */
static void child(struct run *r, pid_t parent, const int outp[2],
		  const int gop[2], const sigset_t *mask)
{
	char go;
	ssize_t n;

	if (watchdog_fd >= 0)
		close(watchdog_fd);
	close(gop[1]);
	close(outp[0]);
	restore_signals();
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0))
		child_fail("prctl");
	if (getppid() != parent)
		_exit(127);	/* once died before PDEATHSIG was set */
	if (setpgid(0, 0))
		child_fail("setpgid");
	while ((n = read(gop[0], &go, 1)) < 0 && errno == EINTR)
		;
	if (n != 1)
		_exit(127);	/* once died before it let us go */
	close(gop[0]);
	if (dup2(outp[1], STDOUT_FILENO) < 0)
		child_fail("dup2");
	close(outp[1]);
	if (r->out_fd >= 0)
		close(r->out_fd);
	sigprocmask(SIG_SETMASK, mask, NULL);
	execvp(r->argv[0], r->argv);
	fprintf(stderr, "once: %s: %s\n", r->argv[0], strerror(errno));
	_exit(127);
}

/*
 * Run r->argv with its stdout into a pipe; copy what it prints to our stdout
 * (r->echo) and to r->out_fd, and keep up to r->keep_max bytes.  When the
 * command has exited, whatever is left of its process group is killed.
 * Returns the wait status, or -errno.
 */
static int run_command(struct run *r)
{
	struct sigaction sa = { .sa_handler = forward_signal };
	int outp[2] = { -1, -1 }, gop[2] = { -1, -1 };
	char buf[BUF_SIZE];
	sigset_t fwd, old;
	pid_t parent = getpid(), pid;
	siginfo_t info;
	int rc = 0, wstatus = 0;
	size_t i;

	if (pipe2(outp, O_CLOEXEC))
		return -errno;
	if (pipe2(gop, O_CLOEXEC)) {
		rc = -errno;
		close(outp[0]);
		close(outp[1]);
		return rc;
	}
	/*
	 * Forwarded signals stay blocked from before the fork until child_pgid
	 * is set; a signal once started with ignored stays ignored.
	 */
	sigemptyset(&fwd);
	for (i = 0; i < NFORWARDED; i++)
		sigaddset(&fwd, forwarded[i]);
	sigprocmask(SIG_BLOCK, &fwd, &old);
	for (i = 0; i < NFORWARDED; i++)
		if (orig_forwarded[i].sa_handler != SIG_IGN)
			sigaction(forwarded[i], &sa, NULL);
	pid = fork();
	if (pid == 0)
		child(r, parent, outp, gop, &old);
	if (pid < 0) {
		rc = -errno;
		sigprocmask(SIG_SETMASK, &old, NULL);
		close(outp[0]);
		close(outp[1]);
		close(gop[0]);
		close(gop[1]);
		return rc;
	}
	setpgid(pid, pid);	/* as the child does: whichever runs first */
	watchdog_arm(pid);
	child_pgid = pid;
	write_all(gop[1], "g", 1);
	close(gop[0]);
	close(gop[1]);
	close(outp[1]);
	sigprocmask(SIG_SETMASK, &old, NULL);

	for (;;) {
		ssize_t n = read(outp[0], buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			rc = -errno;
		if (n <= 0)
			break;
		if (r->echo)
			echo(buf, (size_t)n);
		if (r->out_fd >= 0 && !r->copy_error) {
			int wrc = write_all(r->out_fd, buf, (size_t)n);

			if (wrc)
				r->copy_error = -wrc;
		}
		keep_output(r, buf, (size_t)n);
	}
	close(outp[0]);
	if (rc)
		kill(-pid, SIGKILL);	/* we cannot follow its output: stop it */
	/*
	 * Wait without reaping: while the child is a zombie its pid stays
	 * its group's, so the kill below cannot reach anyone else's group.
	 */
	while (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT) < 0 &&
	       errno == EINTR)
		;
	kill(-pid, SIGKILL);
	child_pgid = 0;
	while (waitpid(pid, &wstatus, 0) < 0) {
		if (errno != EINTR) {
			if (!rc)
				rc = -errno;
			break;
		}
	}
	return rc ? rc : wstatus;
}

/* ---- keys ------------------------------------------------------------- */

/* What became of a key: the outcome once names on stderr and in --json. */
struct outcome {
	const char *what;	/* "ran", "skipped_succeeded", ... */
	double waited_s;	/* --wait --timeout: how long it waited in vain */
	char status[16];	/* the key's status after it */
	char generation[32];
	char attempt[32];
	char holder[128];	/* "PID UID HOST" of an in-flight holder */
	char previous[32];	/* the generation this claim took over, or "0" */
	char request[FINGERPRINT_BYTES + 1];	/* the key's, when it differs */
	char when[32];		/* the key's last change, UTC */
	int exit_status;	/* the command's, when it ran; else -1 */
	const char *result;	/* --json: the result */
	size_t result_len;
	char *owned;		/* ... when it is ours to free */
};

static bool json_out;		/* --json */
static int done_status;		/* --done-status */
static const char *original;	/* --hash-key: the KEY given */
static char request[FINGERPRINT_BYTES + 1];	/* --request: "sha256:HEX" */

static void xattr_of(int fd, const char *name, char *buf, size_t cap)
{
	ssize_t n = fgetxattr(fd, name, buf, cap - 1);

	buf[n > 0 ? n : 0] = '\0';
}

/* The host of a holder xattr ("PID UID HOST"), or "". */
static const char *holder_host(const char *holder)
{
	const char *p = strchr(holder, ' ');

	p = p ? strchr(p + 1, ' ') : NULL;
	return p ? p + 1 : "";
}

/* The claim's generation, attempt and holder, and when it last changed. */
static void note_key(int fd, struct outcome *o)
{
	struct stat st;
	struct tm tm;

	xattr_of(fd, "user.oncefs.generation", o->generation, sizeof(o->generation));
	xattr_of(fd, "user.oncefs.attempt", o->attempt, sizeof(o->attempt));
	xattr_of(fd, "user.oncefs.holder", o->holder, sizeof(o->holder));
	xattr_of(fd, "user.oncefs.previous", o->previous, sizeof(o->previous));
	o->when[0] = '\0';
	if (fstat(fd, &st) == 0 && gmtime_r(&st.st_mtime, &tm))
		strftime(o->when, sizeof(o->when), "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The line on stderr for a run that did not happen, or the --json object. */
static void report(const char *key, const struct outcome *o)
{
	char k[SHOWN_MAX];

	if (json_out) {
		struct json_buf b;

		json_buf_growing(&b, (size_t)RESULT_MAX_LIMIT * 6 + 4096);
		json_object_begin(&b);
		json_put_string(&b, "outcome", o->what, strlen(o->what));
		json_put_string(&b, "key", key, strlen(key));
		if (original)
			json_put_string(&b, "original", original,
					strlen(original));
		json_put_string(&b, "status", o->status, strlen(o->status));
		if (o->generation[0])
			json_put_int(&b, "generation", strtoll(o->generation, NULL, 10));
		if (o->attempt[0])
			json_put_int(&b, "attempt", strtoll(o->attempt, NULL, 10));
		if (o->previous[0] && strcmp(o->previous, "0") != 0)
			json_put_int(&b, "previous",
				     strtoll(o->previous, NULL, 10));
		if (o->request[0])
			json_put_string(&b, "request", o->request,
					strlen(o->request));
		if (o->when[0])
			json_put_string(&b, "time", o->when, strlen(o->when));
		if (o->exit_status >= 0)
			json_put_int(&b, "exit_status", o->exit_status);
		if (o->holder[0] && strcmp(o->status, "in_flight") == 0)
			json_put_int(&b, "holder_pid", strtoll(o->holder, NULL, 10));
		if (o->holder[0] && strcmp(o->status, "in_flight") == 0 &&
		    holder_host(o->holder)[0])
			json_put_string(&b, "holder_host", holder_host(o->holder),
					strlen(holder_host(o->holder)));
		if (o->result)
			json_put_string(&b, "result", o->result, o->result_len);
		if (json_object_end(&b) == 0) {
			echo(json_buf_text(&b), b.len);
			echo("\n", 1);
		} else {
			fprintf(stderr, "once: --json: the result does not fit\n");
		}
		json_buf_free(&b);
		return;
	}
	if (strcmp(o->what, "ran") == 0)
		return;
	shown(key, k, sizeof(k));
	if (strcmp(o->what, "other_request") == 0)
		fprintf(stderr, "once: %s: claimed for another request (generation "
			"%s, %s, request %s; this one is %s): not run\n", k,
			o->generation, o->status, o->request, request);
	else if (strcmp(o->what, "skipped_in_flight") == 0 && o->waited_s > 0)
		fprintf(stderr, "once: %s: still in flight after waiting %g s "
			"(generation %s, attempt %s, held by pid %.*s since %s): "
			"not run\n", k, o->waited_s, o->generation, o->attempt,
			(int)strcspn(o->holder, " "), o->holder, o->when);
	else if (strcmp(o->what, "skipped_in_flight") == 0)
		fprintf(stderr, "once: %s: in flight (generation %s, attempt %s, "
			"held by pid %.*s since %s): not run\n", k, o->generation,
			o->attempt, (int)strcspn(o->holder, " "), o->holder, o->when);
	else
		fprintf(stderr, "once: %s: %s before (generation %s, %s): not run\n",
			k, o->status, o->generation, o->when);
}

/*
 * Was the key claimed for a request other than ours?  A claim that noted
 * none (or whose note we cannot read) cannot be told apart: it is not.
 */
static bool other_request(int fd, struct outcome *o)
{
	char theirs[FINGERPRINT_BYTES + 1];

	xattr_of(fd, "user.oncefs.request", theirs, sizeof(theirs));
	if (!theirs[0] || strcmp(theirs, request) == 0)
		return false;
	snprintf(o->request, sizeof(o->request), "%s", theirs);
	o->what = "other_request";
	return true;
}

/*
 * The key exists: what is in it?  Prints the result of a succeeded key
 * (--json: keeps it in o).  Returns an exit status, or -1 to claim again
 * (the key went away).
 */
static int existing_key(int keysfd, const char *wf, const char *key,
			struct outcome *o)
{
	char buf[BUF_SIZE];
	size_t len = 0, line, word;
	char *nl;
	int fd, rc = 0;

	fd = openat(keysfd, key, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return -1;
		path_error("read", wf, "keys", key, strerror(errno));
		return ONCE_EXIT_OSERR;
	}
	note_key(fd, o);
	/* The first line, "STATUS GENERATION", then the result. */
	while (len < sizeof(buf)) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			break;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (memchr(buf + len - (size_t)n, '\n', (size_t)n))
			break;
	}
	if (rc) {
		path_error("read", wf, "keys", key, strerror(-rc));
		close(fd);
		return ONCE_EXIT_OSERR;
	}
	nl = memchr(buf, '\n', len);
	line = nl ? (size_t)(nl - buf) : len;
	for (word = 0; word < line && buf[word] != ' '; word++)
		;
	if (len == 0) {
		close(fd);
		path_error("read", wf, "keys", key, "empty: not an oncefs key");
		return ONCE_EXIT_OSERR;
	}
	snprintf(o->status, sizeof(o->status), "%.*s", (int)word, buf);
	if (request[0] && other_request(fd, o)) {
		close(fd);
		return ONCE_EXIT_OTHER_REQUEST;
	}
	if (strcmp(o->status, "succeeded") == 0) {
		o->what = "skipped_succeeded";
		if (json_out) {
			/* The whole result, for the JSON object. */
			size_t cap = BUF_SIZE, have = nl ? len - line - 1 : 0;

			o->owned = malloc(cap);
			if (o->owned && have)
				memcpy(o->owned, nl + 1, have);
			while (o->owned && rc == 0) {
				ssize_t n;

				if (have == cap) {
					char *p = realloc(o->owned, cap * 2);

					if (!p)
						break;
					o->owned = p;
					cap *= 2;
				}
				n = read(fd, o->owned + have, cap - have);
				if (n < 0 && errno == EINTR)
					continue;
				if (n <= 0) {
					rc = n < 0 ? -errno : 0;
					break;
				}
				have += (size_t)n;
			}
			o->result = o->owned;
			o->result_len = have;
		} else if (nl && echo(nl + 1, len - line - 1)) {
			rc = echo_fd(fd);
		}
		close(fd);
		if (rc) {
			path_error("read", wf, "keys", key, strerror(-rc));
			return ONCE_EXIT_OSERR;
		}
		return done_status;
	}
	close(fd);
	if (strcmp(o->status, "in_flight") == 0) {
		o->what = "skipped_in_flight";
		return ONCE_EXIT_IN_FLIGHT;
	}
	o->what = "skipped_failed";
	return ONCE_EXIT_FAILED_BEFORE;
}

/* SIGALRM of --timeout: interrupts a wait. */
static volatile sig_atomic_t timed_out;

static void on_alarm(int sig)
{
	(void)sig;
	timed_out = 1;
}

/*
 * Wait until the claim on key ends: a read of wait/KEY blocks until then
 * (it fails with ENOENT once the key is free).  Returns 0 to try the
 * claim again, ONCE_EXIT_IN_FLIGHT when the deadline passed, or -1 when
 * the mount has no wait/ (then the caller polls).
 */
static int wait_for(int wfd, const char *key, double timeout_s)
{
	struct sigaction sa = { .sa_handler = on_alarm }, old;
	struct itimerval it = { 0 };
	char buf[256];
	int dfd, fd, rc = 0;

	dfd = openat(wfd, "wait", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	fd = openat(dfd, key, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	close(dfd);
	if (fd < 0)
		return errno == ENOENT ? 0 : -1;	/* over already, or poll */
	if (timeout_s > 0) {
		double left = timeout_s;

		it.it_value.tv_sec = (time_t)left;
		it.it_value.tv_usec = (suseconds_t)((left - (double)(time_t)left) * 1e6);
		if (it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0)
			it.it_value.tv_usec = 1;
		/* Again and again: one that lands before the read is not lost. */
		it.it_interval.tv_usec = 50000;
		sigaction(SIGALRM, &sa, &old);	/* no SA_RESTART: read stops */
		setitimer(ITIMER_REAL, &it, NULL);
	}
	for (;;) {
		ssize_t n = timed_out ? -1 : read(fd, buf, sizeof(buf));

		if (n >= 0 || timed_out)
			break;
		if (errno == ENOENT)
			break;		/* free: claim it */
		if (errno != EINTR) {
			rc = -1;	/* the mount could not say: poll */
			break;
		}
	}
	if (timeout_s > 0) {
		memset(&it, 0, sizeof(it));
		setitimer(ITIMER_REAL, &it, NULL);
		sigaction(SIGALRM, &old, NULL);
	}
	if (timed_out)
		rc = ONCE_EXIT_IN_FLIGHT;
	timed_out = 0;
	close(fd);
	return rc;
}

/*
 * The workflow directory, made when it is missing (as mkdir -p would),
 * and its sub directory (keys or steps).
 */
static int open_workflow(const char *wf, const char *sub, int *wfd,
			 int *subfd)
{
	char a[SHOWN_MAX], parent[4096];
	const char *slash;

	if (access(wf, F_OK) != 0 && errno == ENOENT) {
		/* Only inside a mount: its root has .stats (no mount, no dir). */
		slash = strrchr(wf, '/');
		snprintf(parent, sizeof(parent), "%.*s/.stats",
			 slash ? (int)(slash - wf) : 1, slash ? wf : ".");
		if (slash == wf)
			snprintf(parent, sizeof(parent), "/.stats");
		if (access(parent, F_OK) != 0) {
			path_error("", wf, "", NULL, "no such workflow, and its "
				   "parent is no oncefs mount");
			return -1;
		}
		if (mkdir(wf, 0777) != 0 && errno != EEXIST) {
			path_error("create the workflow", wf, "", NULL,
				   strerror(errno));
			return -1;
		}
		fprintf(stderr, "once: created the workflow %s\n",
			shown(wf, a, sizeof(a)));
	}
	return open_dirs(wf, sub, wfd, subfd);
}

/* Note with the claim what --hash-key and --request know. */
static int note_claim(int fd, const char *wf, const char *key)
{
	size_t len = original ? strlen(original) : 0;

	if (original && len > ORIGINAL_MAX_BYTES)
		path_error("", wf, "keys", key, "the original key is longer "
			   "than 1024 bytes: only its hash is kept");
	else if (original && fsetxattr(fd, "user.oncefs.original", original,
				       len, 0) != 0)
		path_error("note the original key of", wf, "keys", key,
			   strerror(errno));
	if (request[0] && fsetxattr(fd, "user.oncefs.request", request,
				    strlen(request), 0) != 0) {
		path_error("note the request of", wf, "keys", key,
			   strerror(errno));
		return -1;
	}
	return 0;
}

/* --request: the fingerprint of a file's bytes (or stdin's). */
static bool read_request(const char *path)
{
	char buf[BUF_SIZE], hex[SHA256_HEX + 1];
	struct sha256 s;
	int fd = strcmp(path, "-") == 0 ? 0 :
		 open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "once: --request %s: %s\n", path, strerror(errno));
		return false;
	}
	sha256_init(&s);
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "once: --request %s: %s\n", path,
				strerror(errno));
			if (fd)
				close(fd);
			return false;
		}
		if (n == 0)
			break;
		sha256_update(&s, buf, (size_t)n);
	}
	if (fd)
		close(fd);
	sha256_hex(&s, hex);
	snprintf(request, sizeof(request), "%s%s", REQUEST_PREFIX, hex);
	return true;
}

static int run_key(const char *wf, const char *key, char **argv, bool wait,
		   double timeout_s, size_t max_result)
{
	struct run r = { .argv = argv, .echo = !json_out, .out_fd = -1,
			 .keep_max = max_result };
	struct outcome o = { .what = "ran", .exit_status = -1 };
	char status[64];
	char hashed_name[SHA256_NAME_LEN + 1];
	double ms = timeout_s * 1000.0;	/* <= TIMEOUT_MAX_S * 1000: fits */
	int64_t deadline = now_ms() + (int64_t)ms + ((double)(int64_t)ms < ms);
	int wfd, keysfd, fd, wstatus, rc, code;
	int n;

	if (original && !*original) {
		fprintf(stderr, "once: key name '': must not be empty\n");
		return ONCE_EXIT_USAGE;
	}
	if (original) {
		sha256_name(key, strlen(key), hashed_name);
		key = hashed_name;
	} else if (!check_name("key", key)) {
		fprintf(stderr, "once: --hash-key maps any key to a valid "
			"name\n");
		return ONCE_EXIT_USAGE;
	}
	if (open_workflow(wf, "keys", &wfd, &keysfd))
		return ONCE_EXIT_OSERR;
	for (;;) {
		int64_t left;

		fd = openat(keysfd, key,
			    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			    0644);
		if (fd >= 0)
			break;
		if (errno != EEXIST) {
			path_error("claim", wf, "keys", key, strerror(errno));
			code = ONCE_EXIT_OSERR;
			goto out_dirs;
		}
		code = existing_key(keysfd, wf, key, &o);
		if (code == -1)
			continue;
		if (code != ONCE_EXIT_IN_FLIGHT || !wait)
			goto out_report;
		left = deadline - now_ms();
		o.waited_s = timeout_s;
		if (timeout_s > 0 && left <= 0)
			goto out_report;
		rc = wait_for(wfd, key, timeout_s > 0 ? (double)left / 1000.0 : 0);
		if (rc == ONCE_EXIT_IN_FLIGHT)
			goto out_report;
		if (rc < 0)	/* no wait/: poll */
			sleep_ms(timeout_s > 0 && left < 500 ? left : 500);
		free(o.owned);
		o = (struct outcome){ .what = "ran", .exit_status = -1 };
	}

	note_key(fd, &o);
	rc = note_claim(fd, wf, key);
	if (rc) {
		close(fd);	/* abandoned at once: the next claim adopts it */
		code = ONCE_EXIT_OSERR;
		o.what = "error";
		goto out_report;
	}
	/* The command learns its claim, to reconcile after an earlier attempt. */
	setenv("ONCE_KEY", key, 1);
	setenv("ONCE_GENERATION", o.generation, 1);
	setenv("ONCE_ATTEMPT", o.attempt, 1);
	if (o.previous[0] && strcmp(o.previous, "0") != 0)
		setenv("ONCE_PREVIOUS_GENERATION", o.previous, 1);
	else
		unsetenv("ONCE_PREVIOUS_GENERATION");
	rc = watchdog_start(fd, -1, NULL);
	wstatus = rc ? rc : run_command(&r);
	if (wstatus < 0) {
		fprintf(stderr, "once: %s\n", strerror(-wstatus));
		code = ONCE_EXIT_OSERR;
	} else if (r.keep_error) {
		fprintf(stderr, "once: keeping the result: %s\n",
			strerror(r.keep_error));
		code = ONCE_EXIT_OSERR;
	} else {
		code = exit_status_of(wstatus);
	}
	n = snprintf(status, sizeof(status), "%s%s%s\n",
		     code == 0 ? "succeeded" : "failed",
		     o.generation[0] ? " " : "", o.generation);
	if (n < 0 || (size_t)n >= sizeof(status)) {
		/* A generation that does not fit: finalize without it. */
		n = snprintf(status, sizeof(status), "%s\n",
			     code == 0 ? "succeeded" : "failed");
	}
	rc = write_all(fd, status, strlen(status));
	/* A failure keeps its output too: the reason, where events keep it. */
	if (rc == 0 && r.kept_len)
		rc = write_all(fd, r.kept, r.kept_len);
	if (close(fd) && rc == 0)
		rc = -errno;
	watchdog_stop();
	if (rc) {
		path_error("finalize", wf, "keys", key, strerror(-rc));
		if (!code)
			code = ONCE_EXIT_OSERR;
	}
	o.exit_status = wstatus >= 0 ? exit_status_of(wstatus) : -1;
	snprintf(o.status, sizeof(o.status), "%s",
		 rc ? "in_flight" : code == 0 ? "succeeded" : "failed");
	o.result = r.kept;
	o.result_len = r.kept_len;
out_report:
	if (code == ONCE_EXIT_OSERR && strcmp(o.what, "ran") == 0)
		o.what = "error";
	report(key, &o);
	free(r.kept);
	free(o.owned);
out_dirs:
	close(keysfd);
	close(wfd);
	return code;
}

/* ---- steps ------------------------------------------------------------ */

/* Print steps/NAME.  Returns 0, or -errno (-ENOENT: no such checkpoint). */
static int print_step(int stepsfd, const char *name)
{
	int fd = openat(stepsfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	int rc;

	if (fd < 0)
		return -errno;
	rc = echo_fd(fd);
	close(fd);
	return rc;
}

/*
 * Create this runner's own part file, STEP.part.PID.RANDOM (STEP cut short
 * if the whole would pass 255 bytes), with O_EXCL and O_NOFOLLOW.
 */
static int create_part(int stepsfd, const char *step, char *part, size_t cap)
{
	int tries;

	for (tries = 0; tries < 16; tries++) {
		char suffix[64];
		uint64_t rnd = 0;
		size_t keep = strlen(step);
		int n, fd;

		if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
			rnd = ((uint64_t)now_ms() << 16) ^ (uint64_t)tries;
		n = snprintf(suffix, sizeof(suffix), ".part.%ld.%016" PRIx64,
			     (long)getpid(), rnd);
		if (n < 0 || (size_t)n >= sizeof(suffix)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		if (keep + (size_t)n > NAME_MAX_BYTES)
			keep = NAME_MAX_BYTES - (size_t)n;
		n = snprintf(part, cap, "%.*s%s", (int)keep, step, suffix);
		if (n < 0 || (size_t)n >= cap) {
			errno = ENAMETOOLONG;
			return -1;
		}
		if (strcmp(part, step) == 0)
			continue;
		fd = openat(stepsfd, part,
			    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			    0644);
		if (fd >= 0 || errno != EEXIST)
			return fd;
	}
	errno = EEXIST;
	return -1;
}

static int run_step(const char *wf, const char *step, char **argv)
{
	struct run r = { .argv = argv, .echo = false, .keep_max = 0 };
	char part[NAME_MAX_BYTES + 1];
	int wfd, stepsfd, fd, wstatus, code, rc;

	if (!check_name("step", step))
		return ONCE_EXIT_USAGE;
	if (open_workflow(wf, "steps", &wfd, &stepsfd))
		return ONCE_EXIT_OSERR;
	rc = print_step(stepsfd, step);
	if (rc != -ENOENT) {
		if (rc)
			path_error("", wf, "steps", step, strerror(-rc));
		code = rc ? ONCE_EXIT_OSERR : 0;
		goto out_dirs;
	}
	fd = create_part(stepsfd, step, part, sizeof(part));
	if (fd < 0) {
		path_error("create part file for", wf, "steps", step,
			   strerror(errno));
		code = ONCE_EXIT_OSERR;
		goto out_dirs;
	}
	r.out_fd = fd;
	rc = watchdog_start(-1, stepsfd, part);
	wstatus = rc ? rc : run_command(&r);
	if (wstatus < 0) {
		fprintf(stderr, "once: %s\n", strerror(-wstatus));
		code = ONCE_EXIT_OSERR;
	} else {
		code = exit_status_of(wstatus);
	}
	if (close(fd) && code == 0) {
		path_error("commit", wf, "steps", part, strerror(errno));
		code = ONCE_EXIT_OSERR;
	}
	if (r.copy_error && code == 0) {
		path_error("write", wf, "steps", part, strerror(r.copy_error));
		code = ONCE_EXIT_OSERR;
	}
	if (code == 0) {
		/* Of concurrent runners, the first to rename wins; never replace. */
		if (renameat2(stepsfd, part, stepsfd, step, RENAME_NOREPLACE) &&
		    errno != EEXIST) {
			path_error("rename", wf, "steps", part, strerror(errno));
			code = ONCE_EXIT_OSERR;
		}
	} else {
		/* Show what the failed command printed. */
		print_step(stepsfd, part);
	}
	/* Gone already if the rename won; ours alone if it did not. */
	if (unlinkat(stepsfd, part, 0) && errno != ENOENT)
		path_error("remove", wf, "steps", part, strerror(errno));
	watchdog_stop();
	if (code == 0) {
		/* This runner's checkpoint, or the one that won the race. */
		rc = print_step(stepsfd, step);
		if (rc) {
			path_error("", wf, "steps", step, rc == -ENOENT ?
				   "committed, then gone (did the input fingerprint change?)" :
				   strerror(-rc));
			code = ONCE_EXIT_OSERR;
		}
	}
out_dirs:
	close(stepsfd);
	close(wfd);
	return code;
}

/* ---- options ---------------------------------------------------------- */

static bool parse_timeout(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (!((*s >= '0' && *s <= '9') || *s == '.') || end == s || *end) {
		fprintf(stderr, "once: --timeout '%s': not a number of seconds\n", s);
		return false;
	}
	if (errno == ERANGE || !isfinite(v) || v < 0 || v > TIMEOUT_MAX_S) {
		fprintf(stderr, "once: --timeout %s: out of range (0 to %.0f seconds)\n",
			s, TIMEOUT_MAX_S);
		return false;
	}
	*out = v;
	return true;
}

static bool parse_max_result(const char *s, size_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (!(*s >= '0' && *s <= '9') || *end) {
		fprintf(stderr, "once: --max-result '%s': not a number of bytes\n", s);
		return false;
	}
	if (errno == ERANGE || v > RESULT_MAX_LIMIT) {
		fprintf(stderr, "once: --max-result %s: out of range (0 to %d bytes)\n",
			s, RESULT_MAX_LIMIT);
		return false;
	}
	*out = (size_t)v;
	return true;
}

/* Make sure fds 0, 1 and 2 are open, so no file of ours lands on them. */
static bool std_fds_open(void)
{
	int fd;

	for (fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		if (open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) != fd)
			return false;
	}
	return true;
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "wait", no_argument, NULL, 'w' },
		{ "timeout", required_argument, NULL, 't' },
		{ "max-result", required_argument, NULL, 'm' },
		{ "step", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "done-status", required_argument, NULL, 'd' },
		{ "hash-key", no_argument, NULL, 'k' },
		{ "request", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	struct sigaction ign = { .sa_handler = SIG_IGN };
	const char *step = NULL;
	size_t max_result = RESULT_MAX_DEFAULT;
	double timeout_s = 0;
	const char *request_path = NULL;
	bool wait = false, hash_key = false;
	size_t i;
	int c;

	if (!std_fds_open())
		return ONCE_EXIT_OSERR;
	/* A reader that goes away (once ... | head -1) must not kill the claim. */
	for (i = 0; i < NFORWARDED; i++)
		sigaction(forwarded[i], NULL, &orig_forwarded[i]);
	sigaction(SIGPIPE, &ign, &orig_sigpipe);

	while ((c = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
		switch (c) {
		case 'w':
			wait = true;
			break;
		case 't':
			if (!parse_timeout(optarg, &timeout_s))
				return ONCE_EXIT_USAGE;
			break;
		case 'm':
			if (!parse_max_result(optarg, &max_result))
				return ONCE_EXIT_USAGE;
			break;
		case 's':
			step = optarg;
			break;
		case 'j':
			json_out = true;
			break;
		case 'k':
			hash_key = true;
			break;
		case 'r':
			request_path = optarg;
			break;
		case 'd': {
			char *end;
			long v;

			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || v < 0 || v > 255) {
				fprintf(stderr, "once: --done-status: not a status "
					"from 0 to 255: %s\n", optarg);
				return ONCE_EXIT_USAGE;
			}
			done_status = (int)v;
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("once %s\n", ONCEFS_VERSION);
			return 0;
		default:
			usage(stderr);
			return ONCE_EXIT_USAGE;
		}
	}
	argc -= optind;
	argv += optind;
	if (step) {
		if (hash_key || request_path || json_out || wait) {
			fprintf(stderr, "once: --hash-key, --request, --json and "
				"--wait are for keys, not --step\n");
			return ONCE_EXIT_USAGE;
		}
		if (argc < 3 || strcmp(argv[1], "--") != 0) {
			usage(stderr);
			return ONCE_EXIT_USAGE;
		}
		return run_step(argv[0], step, argv + 2);
	}
	if (argc < 4 || strcmp(argv[2], "--") != 0) {
		usage(stderr);
		return ONCE_EXIT_USAGE;
	}
	if (hash_key)
		original = argv[1];
	if (request_path && !read_request(request_path))
		return ONCE_EXIT_OSERR;
	return run_key(argv[0], argv[1], argv + 3, wait, timeout_s, max_result);
}
