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
 * printed and nothing runs; otherwise the command's output is written to
 * steps/STEP.part and renamed into place only if the command exits 0.
 *
 * It is a client of the mount like any other: plain file I/O, no library.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define ONCE_EXIT_USAGE 64
#define ONCE_EXIT_IN_FLIGHT 75	/* EX_TEMPFAIL: try again later */
#define ONCE_EXIT_FAILED_BEFORE 76
#define ONCE_EXIT_OSERR 71	/* EX_OSERR: the mount refused something */

#define RESULT_MAX_DEFAULT (1024 * 1024)

static pid_t child_pid;

static void usage(FILE *f)
{
	fprintf(f,
"usage: once [--wait] [--timeout SECONDS] [--max-result BYTES] WORKFLOW_DIR KEY -- COMMAND [ARG...]\n"
"       once --step STEP WORKFLOW_DIR -- COMMAND [ARG...]\n"
"\n"
"Run COMMAND at most once per key, on a mounted oncefs.\n"
"\n"
"  --wait            if the key is in flight elsewhere, wait until it is\n"
"                    finalized (or freed, then claim it)\n"
"  --timeout S       give up waiting after S seconds (exit 75)\n"
"  --max-result N    keep at most N bytes of output as the key's result\n"
"                    (default 1048576; the rest is still printed)\n"
"  --step STEP       run a step: skip it if steps/STEP exists, else commit the\n"
"                    command's output as steps/STEP only if it exits 0\n"
"\n"
"exit status: the command's own when it ran; 0 when the key had already\n"
"succeeded (its result is printed); 75 when the key is in flight elsewhere;\n"
"76 when the key is terminally failed (dedup_on=any); 71 when the mount\n"
"refused an operation; 64 for a usage error.\n");
}

static void forward_signal(int sig)
{
	if (child_pid > 0)
		kill(child_pid, sig);
}

static int exit_status_of(int wstatus)
{
	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	if (WIFSIGNALED(wstatus))
		return 128 + WTERMSIG(wstatus);
	return 1;
}

static int write_all(int fd, const char *buf, size_t len)
{
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

/*
 * Run argv with its stdout into a pipe; copy what it prints to our stdout
 * and to out_fd (if >= 0), and keep up to max bytes in *kept.  Returns the
 * wait status, or -errno.
 */
static int run_command(char **argv, int out_fd, size_t max, char **kept,
		       size_t *kept_len, int *copy_error)
{
	struct sigaction sa = { .sa_handler = forward_signal };
	char buf[65536];
	int pipefd[2], wstatus;
	size_t cap = 0;

	*kept = NULL;
	*kept_len = 0;
	*copy_error = 0;
	if (pipe(pipefd))
		return -errno;
	child_pid = fork();
	if (child_pid < 0)
		return -errno;
	if (child_pid == 0) {
		dup2(pipefd[1], STDOUT_FILENO);
		close(pipefd[0]);
		close(pipefd[1]);
		if (out_fd >= 0)
			close(out_fd);
		execvp(argv[0], argv);
		fprintf(stderr, "once: %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(pipefd[1]);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	for (;;) {
		ssize_t n = read(pipefd[0], buf, sizeof(buf));
		int rc;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		write_all(STDOUT_FILENO, buf, (size_t)n);
		if (out_fd >= 0 && !*copy_error) {
			rc = write_all(out_fd, buf, (size_t)n);
			if (rc)
				*copy_error = -rc;
		}
		if (*kept_len < max) {
			size_t take = (size_t)n;

			if (take > max - *kept_len)
				take = max - *kept_len;
			if (*kept_len + take > cap) {
				size_t ncap = cap ? cap : 4096;
				char *p;

				while (ncap < *kept_len + take)
					ncap *= 2;
				p = realloc(*kept, ncap);
				if (!p)
					continue;
				*kept = p;
				cap = ncap;
			}
			memcpy(*kept + *kept_len, buf, take);
			*kept_len += take;
		}
	}
	close(pipefd[0]);
	while (waitpid(child_pid, &wstatus, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return wstatus;
}

static char *read_file(const char *path, size_t *len)
{
	char *buf = NULL;
	size_t cap = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	*len = 0;
	if (fd < 0)
		return NULL;
	for (;;) {
		ssize_t n;

		if (*len + 65536 > cap) {
			char *p = realloc(buf, cap + 65536 + 1);

			if (!p)
				break;
			buf = p;
			cap += 65536;
		}
		n = read(fd, buf + *len, cap - *len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		*len += (size_t)n;
	}
	close(fd);
	if (buf)
		buf[*len] = '\0';
	return buf;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* ---- keys ------------------------------------------------------------- */

/*
 * The key exists: what is in it?  Returns an exit status, or -1 to claim
 * again (the key went away meanwhile).
 */
static int existing_key(const char *path, bool *in_flight)
{
	size_t len;
	char *buf = read_file(path, &len);
	char *nl;

	*in_flight = false;
	if (!buf)
		return errno == ENOENT ? -1 : ONCE_EXIT_OSERR;
	nl = memchr(buf, '\n', len);
	if (strncmp(buf, "succeeded ", 10) == 0) {
		if (nl)
			write_all(STDOUT_FILENO, nl + 1, len - (size_t)(nl + 1 - buf));
		free(buf);
		return 0;
	}
	if (strncmp(buf, "in_flight ", 10) == 0) {
		*in_flight = true;
		free(buf);
		return ONCE_EXIT_IN_FLIGHT;
	}
	fprintf(stderr, "once: %s: %.*s\n", path,
		(int)(nl ? nl - buf : (ptrdiff_t)len), buf);
	free(buf);
	return ONCE_EXIT_FAILED_BEFORE;
}

static int run_key(const char *wf, const char *key, char **argv, bool wait,
		   long timeout_s, size_t max_result)
{
	char path[4096], gen[32], *out;
	char status[64];
	size_t out_len;
	time_t deadline = time(NULL) + timeout_s;
	int fd, wstatus, copy_error, rc, code;
	ssize_t glen;

	if ((size_t)snprintf(path, sizeof(path), "%s/keys/%s", wf, key) >=
	    sizeof(path)) {
		fprintf(stderr, "once: path too long\n");
		return ONCE_EXIT_USAGE;
	}
	for (;;) {
		bool in_flight;

		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd >= 0)
			break;
		if (errno != EEXIST) {
			fprintf(stderr, "once: claim %s: %s\n", path, strerror(errno));
			return ONCE_EXIT_OSERR;
		}
		code = existing_key(path, &in_flight);
		if (code == -1)
			continue;
		if (!in_flight || !wait)
			return code;
		if (timeout_s > 0 && time(NULL) >= deadline)
			return ONCE_EXIT_IN_FLIGHT;
		sleep_ms(500);
	}

	glen = fgetxattr(fd, "user.oncefs.generation", gen, sizeof(gen) - 1);
	gen[glen > 0 ? glen : 0] = '\0';
	wstatus = run_command(argv, -1, max_result, &out, &out_len, &copy_error);
	if (wstatus < 0) {
		fprintf(stderr, "once: %s\n", strerror(-wstatus));
		code = ONCE_EXIT_OSERR;
		wstatus = 1 << 8;
	} else {
		code = exit_status_of(wstatus);
	}
	snprintf(status, sizeof(status), "%s%s%s\n",
		 code == 0 ? "succeeded" : "failed", gen[0] ? " " : "", gen);
	rc = write_all(fd, status, strlen(status));
	if (rc == 0 && code == 0 && out_len)
		rc = write_all(fd, out, out_len);
	if (close(fd) && rc == 0)
		rc = -errno;
	free(out);
	if (rc) {
		fprintf(stderr, "once: finalize %s: %s\n", path, strerror(-rc));
		return code ? code : ONCE_EXIT_OSERR;
	}
	return code;
}

/* ---- steps ------------------------------------------------------------ */

static int run_step(const char *wf, const char *step, char **argv)
{
	char path[4096], part[4200], *out;
	size_t out_len;
	int fd, wstatus, copy_error, code;

	if ((size_t)snprintf(path, sizeof(path), "%s/steps/%s", wf, step) >=
	    sizeof(path)) {
		fprintf(stderr, "once: path too long\n");
		return ONCE_EXIT_USAGE;
	}
	snprintf(part, sizeof(part), "%s.part", path);
	out = read_file(path, &out_len);
	if (out) {
		write_all(STDOUT_FILENO, out, out_len);
		free(out);
		return 0;
	}
	if (errno != ENOENT) {
		fprintf(stderr, "once: %s: %s\n", path, strerror(errno));
		return ONCE_EXIT_OSERR;
	}
	fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "once: %s: %s\n", part, strerror(errno));
		return ONCE_EXIT_OSERR;
	}
	wstatus = run_command(argv, fd, 0, &out, &out_len, &copy_error);
	free(out);
	code = wstatus < 0 ? ONCE_EXIT_OSERR : exit_status_of(wstatus);
	if (close(fd) && code == 0) {
		fprintf(stderr, "once: commit %s: %s\n", part, strerror(errno));
		code = ONCE_EXIT_OSERR;
	}
	if (copy_error && code == 0) {
		fprintf(stderr, "once: write %s: %s\n", part, strerror(copy_error));
		code = ONCE_EXIT_OSERR;
	}
	if (code == 0 && rename(part, path)) {
		fprintf(stderr, "once: rename %s: %s\n", part, strerror(errno));
		code = ONCE_EXIT_OSERR;
	}
	if (code != 0)
		unlink(part);
	return code;
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "wait", no_argument, NULL, 'w' },
		{ "timeout", required_argument, NULL, 't' },
		{ "max-result", required_argument, NULL, 'm' },
		{ "step", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *step = NULL;
	size_t max_result = RESULT_MAX_DEFAULT;
	long timeout_s = 0;
	bool wait = false;
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
		switch (c) {
		case 'w':
			wait = true;
			break;
		case 't':
			timeout_s = strtol(optarg, &end, 10);
			if (*end || timeout_s < 0) {
				fprintf(stderr, "once: --timeout %s: not a number of seconds\n", optarg);
				return ONCE_EXIT_USAGE;
			}
			break;
		case 'm':
			max_result = strtoul(optarg, &end, 10);
			if (*end) {
				fprintf(stderr, "once: --max-result %s: not a number\n", optarg);
				return ONCE_EXIT_USAGE;
			}
			break;
		case 's':
			step = optarg;
			break;
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
	return run_key(argv[0], argv[1], argv + 3, wait, timeout_s, max_result);
}
