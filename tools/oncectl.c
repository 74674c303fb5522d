/*
 * oncectl - inspect and maintain an oncefs store, mounted or not.
 *
 *     oncectl init STORE
 *     oncectl ls STORE [WORKFLOW] [--json]
 *     oncectl show STORE WORKFLOW KEY [--json]
 *     oncectl events STORE WORKFLOW [--since TIME] [--json]
 *     oncectl sweep STORE [--dry-run]
 *     oncectl check STORE
 *
 * Every command is a thin shell over the core library (core/): the same
 * store, the same rules, the same sweep as the daemon.  Reads run in one
 * read transaction each, so they are safe beside a mounted daemon.
 *
 * Exit status: 0 success; 1 a problem found (check) or an action failed;
 * 2 usage; 3 the store could not be opened.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../core/json.h"
#include "../core/sha256.h"
#include "../core/key.h"
#include "../core/step.h"
#include "../core/sweep.h"
#include "../core/workflow.h"

#define EXIT_PROBLEM 1
#define EXIT_USAGE 2
#define EXIT_STORE 3

struct ctl {
	const char *store_path;
	bool json;
	bool dry_run;
	bool prometheus;	/* stats: .metrics, not .stats */
	bool hash_key;		/* show: KEY as once --hash-key names it */
	const char *since;
	struct store *st;
	struct once o;
	struct json_buf j;	/* the JSON value being built (--json) */
	int jrc;		/* the first error building it */
};

/* The largest JSON text oncectl builds for one object (a result, escaped). */
#define JSON_MAX ((size_t)1 << 30)

struct command {
	const char *name;
	int min_args, max_args;	/* after STORE */
	bool writes;
	bool on_mount;		/* reads a mount's files, not a store */
	int (*run)(struct ctl *c, char **args, int n);
	const char *usage;
	const char *help;
};

static const struct command commands[];

/* ---- output helpers --------------------------------------------------- */

/*
 * JSON output goes through core/json.h, one object at a time: strings
 * that are UTF-8 as they are, names (and results) that are not as
 * FIELD_hex, as in the daemon's events.  The first error sticks.
 */
static void j_raw(struct ctl *c, const char *s)
{
	if (!c->jrc)
		c->jrc = json_put_raw(&c->j, s, strlen(s));
}

static void j_str(struct ctl *c, const char *field, const char *s, size_t len)
{
	if (!c->jrc)
		c->jrc = json_put_string(&c->j, field, s, len);
}

static void j_int(struct ctl *c, const char *field, int64_t v)
{
	if (!c->jrc)
		c->jrc = json_put_int(&c->j, field, v);
}

static void j_null(struct ctl *c, const char *field)
{
	if (!c->jrc)
		c->jrc = json_put_null(&c->j, field);
}

/* Print what was built; 0, or the error that stopped it. */
static int j_flush(struct ctl *c)
{
	int rc = c->jrc;

	if (rc == 0)
		fwrite(json_buf_text(&c->j), 1, c->j.len, stdout);
	json_buf_reset(&c->j);
	c->jrc = 0;
	return rc;
}

static void print_name(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 0x20 || ch == 0x7f || ch == '\\')
			printf("\\x%02x", ch);
		else
			putchar(ch);
	}
}

static void format_time(int64_t ms, char *buf, size_t size)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *policy_word(const struct policy *p, enum policy_field f,
			       char *buf, size_t size)
{
	size_t n = policy_format(f, p, buf, size);

	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = '\0';
	return buf;
}

/* The open store, for what it says of a row it refused (store_problem). */
static struct store *opened;

static int fail(int rc, const char *what)
{
	char problem[256] = "";

	if (rc == -EIO && opened)
		store_problem(opened, problem, sizeof(problem));
	fprintf(stderr, "oncectl: %s: %s\n", what,
		problem[0] ? problem : strerror(-rc));
	return EXIT_PROBLEM;
}

static int find_workflow(struct ctl *c, const char *name, struct wf_row *w)
{
	int rc = workflow_lookup(&c->o, name, strlen(name), w);

	if (rc) {
		fprintf(stderr, "oncectl: workflow %s: %s\n", name,
			rc == -ENOENT ? "no such workflow" : strerror(-rc));
		return EXIT_PROBLEM;
	}
	return 0;
}

/*
 * Why a read-only open of a healthy store failed, when the reason is the
 * one SQLite reports as "unable to open database file": the store is in
 * WAL mode and not in use (no STORE-wal, no STORE-shm: SQLite removes them
 * when the last connection closes), and its directory cannot be written,
 * so SQLite cannot create the STORE-shm it needs before it reads anything.
 * NULL when that is not the case.
 */
static const char *read_only_dir_reason(const char *path)
{
	static const char magic[16] = "SQLite format 3";
	unsigned char hdr[100];
	char side[PATH_MAX], dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	ssize_t got;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	got = read(fd, hdr, sizeof(hdr));
	close(fd);
	if (got != (ssize_t)sizeof(hdr) || memcmp(hdr, magic, sizeof(magic)) != 0 ||
	    hdr[18] != 2 || hdr[19] != 2)
		return NULL;	/* not a WAL database: another reason */
	snprintf(side, sizeof(side), "%s-shm", path);
	if (access(side, F_OK) == 0)
		return NULL;
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path),
			 path);
	if (access(dir, W_OK) == 0)
		return NULL;
	return "a store in WAL mode that no one has open (there is no -shm "
	       "file beside it), in a directory that is read-only for you: "
	       "SQLite must create the -shm file before it can read the store; "
	       "run oncectl where the directory is writable, or on a copy of "
	       "the store";
}

/* ---- init ------------------------------------------------------------- */

static int cmd_init(struct ctl *c, char **args, int n)
{
	(void)args;
	(void)n;
	printf("%s: an oncefs store (schema %d)\n", c->store_path,
	       STORE_SCHEMA_VERSION);
	return 0;
}

/* ---- ls --------------------------------------------------------------- */

static int ls_workflows(struct ctl *c)
{
	struct wf_row rows[64];
	int64_t after = 0;
	int n, rc, first = 1;
	char a[32], b[32], t[32], r[32];

	if (c->json)
		j_raw(c, "[");
	else
		printf("%-24s %6s %6s %-8s %-8s %8s %10s  %s\n", "WORKFLOW", "UID",
		       "MODE", "INPUT", "DEDUP", "TTL", "RETENTION", "FINGERPRINT");
	do {
		rc = workflow_list(&c->o, after, rows, 64, &n);
		if (rc)
			return fail(rc, "list workflows");
		for (int i = 0; i < n; i++) {
			struct wf_row *w = &rows[i];
			const struct policy *p = &w->policy;

			policy_word(p, POLICY_ON_INPUT_CHANGE, a, sizeof(a));
			policy_word(p, POLICY_DEDUP_ON, b, sizeof(b));
			policy_word(p, POLICY_IN_FLIGHT_TTL, t, sizeof(t));
			policy_word(p, POLICY_RETENTION, r, sizeof(r));
			if (c->json) {
				char mode[16];

				snprintf(mode, sizeof(mode), "%04o", w->mode);
				j_raw(c, first ? "\n {" : ",\n {");
				j_str(c, "name", w->name, w->name_len);
				j_int(c, "uid", w->uid);
				j_int(c, "gid", w->gid);
				j_str(c, "mode", mode, strlen(mode));
				j_str(c, "on_input_change", a, strlen(a));
				j_str(c, "dedup_on", b, strlen(b));
				j_int(c, "in_flight_ttl", p->in_flight_ttl);
				j_int(c, "retention", p->retention);
				j_str(c, "fingerprint", w->fingerprint,
				      w->fingerprint_len);
				j_raw(c, "}");
				rc = j_flush(c);
				if (rc)
					return fail(rc, "write JSON");
			} else {
				print_name(w->name, w->name_len);
				printf("%*s %6u %6o %-8s %-8s %8s %10s  %s\n",
				       w->name_len < 24 ? (int)(24 - w->name_len) : 0,
				       "", w->uid, w->mode, a, b, t, r,
				       w->fingerprint_len ? w->fingerprint : "-");
			}
			first = 0;
			after = w->id;
		}
	} while (n == 64);
	if (c->json) {
		j_raw(c, first ? "]\n" : "\n]\n");
		rc = j_flush(c);
		return rc ? fail(rc, "write JSON") : 0;
	}
	return 0;
}

static const char *key_state(const struct key_row *k, int64_t now_ms)
{
	if (k->status == KEY_IN_FLIGHT && !key_is_live(k, now_ms))
		return "expired";
	return status_name(k->status);
}

static int ls_workflow(struct ctl *c, const char *name)
{
	struct key_row keys[64];
	struct step_row steps[64];
	struct wf_row w;
	int64_t after = 0, now = once_now_ms(&c->o);
	int n, rc, first = 1;
	char when[32], exp[32];

	rc = find_workflow(c, name, &w);
	if (rc)
		return rc;
	if (c->json)
		j_raw(c, "{\"keys\":[");
	else
		printf("%-32s %-9s %10s %7s %-20s %-20s %s\n", "KEY", "STATUS",
		       "GENERATION", "ATTEMPT", "CHANGED", "EXPIRES", "HOLDER");
	do {
		/* now 0: expired claims are listed too, marked as such. */
		rc = store_begin(c->st, false);
		if (rc == 0)
			rc = once_end(&c->o, store_key_list(c->st, w.id, after, 0,
							    keys, 64, &n));
		if (rc)
			return fail(rc, "list keys");
		for (int i = 0; i < n; i++) {
			struct key_row *k = &keys[i];

			format_time(k->mtime_ns / 1000000, when, sizeof(when));
			if (k->status == KEY_IN_FLIGHT)
				format_time(k->expires_ms, exp, sizeof(exp));
			else
				snprintf(exp, sizeof(exp), "-");
			if (c->json) {
				const char *state = key_state(k, now);

				j_raw(c, first ? "\n {" : ",\n {");
				j_str(c, "name", k->name, k->name_len);
				j_str(c, "status", state, strlen(state));
				j_int(c, "generation", k->generation);
				j_int(c, "attempt", k->attempt);
				j_str(c, "changed", when, strlen(when));
				if (k->status == KEY_IN_FLIGHT)
					j_str(c, "expires", exp, strlen(exp));
				else
					j_null(c, "expires");
				j_int(c, "holder_pid", k->holder_pid);
				j_int(c, "holder_uid", k->holder_uid);
				j_str(c, "holder_host", k->holder_host,
				      strlen(k->holder_host));
				j_int(c, "result_bytes", k->result_len);
				j_raw(c, "}");
				rc = j_flush(c);
				if (rc)
					return fail(rc, "write JSON");
			} else {
				print_name(k->name, k->name_len);
				printf("%*s %-9s %10" PRId64 " %7" PRId64
				       " %-20s %-20s %d/%u%s%s\n",
				       k->name_len < 32 ? (int)(32 - k->name_len) : 0,
				       "", key_state(k, now), k->generation,
				       k->attempt, when, exp, k->holder_pid,
				       k->holder_uid, k->holder_host[0] ? "@" : "",
				       k->holder_host);
			}
			first = 0;
			after = k->id;
		}
	} while (n == 64);
	if (c->json)
		j_raw(c, first ? "],\"steps\":[" : "\n],\"steps\":[");
	else
		printf("\n%-32s %12s %-20s\n", "STEP", "SIZE", "CHANGED");
	after = 0;
	first = 1;
	do {
		rc = step_list(&c->o, w.id, after, steps, 64, &n);
		if (rc)
			return fail(rc, "list steps");
		for (int i = 0; i < n; i++) {
			struct step_row *s = &steps[i];

			format_time(s->mtime_ns / 1000000, when, sizeof(when));
			if (c->json) {
				j_raw(c, first ? "\n {" : ",\n {");
				j_str(c, "name", s->name, s->name_len);
				j_int(c, "size", s->size);
				j_str(c, "changed", when, strlen(when));
				j_raw(c, "}");
				rc = j_flush(c);
				if (rc)
					return fail(rc, "write JSON");
			} else {
				print_name(s->name, s->name_len);
				printf("%*s %12" PRId64 " %-20s\n",
				       s->name_len < 32 ? (int)(32 - s->name_len) : 0,
				       "", s->size, when);
			}
			first = 0;
			after = s->id;
		}
	} while (n == 64);
	if (c->json) {
		j_raw(c, first ? "]}\n" : "\n]}\n");
		rc = j_flush(c);
		return rc ? fail(rc, "write JSON") : 0;
	}
	return 0;
}

static int cmd_ls(struct ctl *c, char **args, int n)
{
	return n == 0 ? ls_workflows(c) : ls_workflow(c, args[0]);
}

/* ---- progress on a terminal -------------------------------------------- */

/*
 * Long operations say what they are doing on stderr when it is a terminal,
 * a line rewritten at most ten times a second, and nothing otherwise (a
 * cron job's mail, a pipe).
 */
struct progress {
	bool on;
	int64_t shown_ms;	/* when the line was last written */
	int64_t start_ms;
	bool dirty;		/* a line is on the terminal */
};

static int64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void progress_start(struct progress *p)
{
	p->on = isatty(STDERR_FILENO);
	p->start_ms = monotonic_ms();
	p->shown_ms = 0;
	p->dirty = false;
}

/* Is it time for a new line?  Then the caller prints it with progress_line. */
static bool progress_due(struct progress *p)
{
	int64_t now = monotonic_ms();

	if (!p->on || now - p->shown_ms < 100)
		return false;
	p->shown_ms = now;
	return true;
}

static void progress_line(struct progress *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void progress_line(struct progress *p, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\r\033[K");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (%.1f s)", (double)(monotonic_ms() - p->start_ms) / 1000);
	fflush(stderr);
	p->dirty = true;
}

static void progress_end(struct progress *p)
{
	if (p->dirty)
		fprintf(stderr, "\r\033[K");
	p->dirty = false;
}

/* ---- show ------------------------------------------------------------- */

/* The last event that ended a claim on one key (what freed it, and why). */
struct last_end {
	const char *name;
	char *line;
};

static int note_end(void *arg, const struct event_view *ev)
{
	struct last_end *e = arg;

	if (strcmp(ev->subject, e->name) != 0 ||
	    (strcmp(ev->type, "finalize") != 0 && strcmp(ev->type, "abandon") != 0 &&
	     strcmp(ev->type, "expire") != 0))
		return 0;
	free(e->line);
	e->line = strdup(ev->line);
	return e->line ? 0 : -ENOMEM;
}

/*
 * A key that is free again keeps only its attempt count; what freed it
 * (a failure's result, an abandon's reason) is in the events.
 */
static int show_free(struct ctl *c, const struct wf_row *w,
		     const struct key_row *k)
{
	struct last_end e = { .name = k->name };
	int rc = store_begin(c->st, false);

	if (rc == 0)
		rc = once_end(&c->o, store_event_list(c->st, w->id, 0, note_end, &e));
	if (rc) {
		free(e.line);
		return fail(rc, "read events");
	}
	if (c->json) {
		j_raw(c, "{");
		j_str(c, "workflow", w->name, w->name_len);
		j_str(c, "key", k->name, k->name_len);
		j_str(c, "status", "free", 4);
		j_int(c, "attempt", k->attempt);
		j_raw(c, ",\"last\":");
		j_raw(c, e.line ? e.line : "null");
		j_raw(c, "}\n");
		rc = j_flush(c);
	} else {
		printf("workflow    ");
		print_name(w->name, w->name_len);
		printf("\nkey         ");
		print_name(k->name, k->name_len);
		printf("\nstatus      free (no claim)\nattempt     %" PRId64 "\n",
		       k->attempt);
		if (e.line)
			printf("last        %s\n", e.line);
	}
	free(e.line);
	return rc ? fail(rc, "write JSON") : 0;
}

/* The notes of a claim: its request and its key's original name. */
struct notes {
	char request[KEY_REQUEST_MAX], original[KEY_ORIGINAL_MAX];
	size_t request_len, original_len;
};

static int read_notes(struct ctl *c, const struct key_row *k, struct notes *n)
{
	int rc = key_note(&c->o, k->generation, KEY_NOTE_REQUEST, n->request,
			  &n->request_len);

	if (rc == -ENODATA)
		n->request_len = 0;
	else if (rc)
		return rc;
	rc = key_note(&c->o, k->generation, KEY_NOTE_ORIGINAL, n->original,
		      &n->original_len);
	if (rc == -ENODATA)
		n->original_len = 0;
	else if (rc)
		return rc;
	return 0;
}

static int cmd_show(struct ctl *c, char **args, int n)
{
	struct wf_row w;
	struct key_row k;
	struct notes notes;
	char *content;
	size_t len, line;
	char when[32], exp[32];
	int rc;

	const char *key = args[1];
	char hashed[SHA256_NAME_LEN + 1];

	(void)n;
	if (c->hash_key) {
		/* The key as once --hash-key names it. */
		sha256_name(key, strlen(key), hashed);
		key = hashed;
	}
	rc = find_workflow(c, args[0], &w);
	if (rc)
		return rc;
	rc = store_begin(c->st, false);
	if (rc == 0)
		rc = once_end(&c->o, store_key_get(c->st, w.id, key, strlen(key),
						   &k));
	if (rc == 0 && k.status == KEY_VACANT)
		return show_free(c, &w, &k);
	if (rc) {
		fprintf(stderr, "oncectl: key %s: %s\n", key,
			rc == -ENOENT ? "no such key" : strerror(-rc));
		return EXIT_PROBLEM;
	}
	rc = read_notes(c, &k, &notes);
	if (rc)
		return fail(rc, "read key");
	rc = key_content(&c->o, k.generation, &k, &content, &len);
	if (rc)
		return fail(rc, "read key");
	line = (size_t)((char *)memchr(content, '\n', len) - content) + 1;
	format_time(k.mtime_ns / 1000000, when, sizeof(when));
	format_time(k.expires_ms, exp, sizeof(exp));
	if (c->json) {
		const char *state = key_state(&k, once_now_ms(&c->o));

		j_raw(c, "{");
		j_str(c, "workflow", w.name, w.name_len);
		j_str(c, "key", k.name, k.name_len);
		j_str(c, "status", state, strlen(state));
		j_int(c, "generation", k.generation);
		j_int(c, "attempt", k.attempt);
		j_str(c, "changed", when, strlen(when));
		if (k.status == KEY_IN_FLIGHT)
			j_str(c, "expires", exp, strlen(exp));
		else
			j_null(c, "expires");
		j_int(c, "holder_pid", k.holder_pid);
		j_int(c, "holder_uid", k.holder_uid);
		if (k.previous)
			j_int(c, "previous", k.previous);
		if (notes.request_len)
			j_str(c, "request", notes.request, notes.request_len);
		if (notes.original_len)
			j_str(c, "original", notes.original, notes.original_len);
		j_str(c, "result", content + line, len - line);
		j_raw(c, "}\n");
		rc = j_flush(c);
		if (rc) {
			free(content);
			return fail(rc, "write JSON");
		}
	} else {
		printf("workflow    ");
		print_name(w.name, w.name_len);
		printf("\nkey         ");
		print_name(k.name, k.name_len);
		printf("\nstatus      %s\ngeneration  %" PRId64 "\nattempt     %" PRId64
		       "\nchanged     %s\n", key_state(&k, once_now_ms(&c->o)),
		       k.generation, k.attempt, when);
		if (k.status == KEY_IN_FLIGHT)
			printf("expires     %s\n", exp);
		printf("holder      pid %d, uid %u\n", k.holder_pid, k.holder_uid);
		if (k.previous)
			printf("previous    %" PRId64 "\n", k.previous);
		if (notes.request_len) {
			printf("request     ");
			print_name(notes.request, notes.request_len);
			putchar('\n');
		}
		if (notes.original_len) {
			printf("original    ");
			print_name(notes.original, notes.original_len);
			putchar('\n');
		}
		printf("result      %zu bytes\n", len - line);
		if (len > line) {
			fwrite(content + line, 1, len - line, stdout);
			if (content[len - 1] != '\n')
				putchar('\n');
		}
	}
	free(content);
	return 0;
}

/* ---- events ----------------------------------------------------------- */

/* "1700000000", "2026-11-21T10:00:00Z", "2026-11-21", "30m", "2h", "1d". */
static int parse_since(const char *s, int64_t now_ms, int64_t *out)
{
	struct tm tm;
	char *end;
	long long v;

	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end) {
		memset(&tm, 0, sizeof(tm));
		end = strptime(s, "%Y-%m-%d", &tm);
	}
	if (end && (*end == '\0' || strcmp(end, "Z") == 0)) {
		*out = (int64_t)timegm(&tm) * 1000;
		return 0;
	}
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || v < 0)
		return -EINVAL;
	switch (*end) {
	case '\0':
		*out = (int64_t)v * 1000;
		return 0;
	case 's':
		break;
	case 'm':
		v *= 60;
		break;
	case 'h':
		v *= 3600;
		break;
	case 'd':
		v *= 86400;
		break;
	default:
		return -EINVAL;
	}
	if (end[1])
		return -EINVAL;
	*out = now_ms - (int64_t)v * 1000;
	return 0;
}

static int print_event(void *arg, const struct event_view *ev)
{
	struct ctl *c = arg;
	char when[32];

	if (c->json) {
		printf("%s\n", ev->line);
		return 0;
	}
	format_time(ev->time_ms, when, sizeof(when));
	when[strlen(when) - 1] = '\0';	/* the Z goes after the milliseconds */
	printf("%s.%03dZ  %-11s %-24s", when, (int)(ev->time_ms % 1000), ev->type,
	       ev->subject ? ev->subject : "");
	if (ev->generation)
		printf(" gen %-6" PRId64, ev->generation);
	else
		printf(" %-10s", "");
	printf(" %-12s pid %" PRId64 " uid %" PRId64 "\n",
	       ev->detail ? ev->detail : "", ev->pid, ev->uid);
	return 0;
}

static int cmd_events(struct ctl *c, char **args, int n)
{
	struct wf_row w;
	int64_t since = 0;
	int rc;

	(void)n;
	if (c->since && parse_since(c->since, once_now_ms(&c->o), &since)) {
		fprintf(stderr, "oncectl: --since %s: expected Unix seconds, "
			"YYYY-MM-DD[THH:MM:SSZ], or an age like 30m, 2h, 1d\n",
			c->since);
		return EXIT_USAGE;
	}
	rc = find_workflow(c, args[0], &w);
	if (rc)
		return rc;
	rc = store_begin(c->st, false);
	if (rc == 0)
		rc = once_end(&c->o, store_event_list(c->st, w.id, since,
						      print_event, c));
	return rc ? fail(rc, "events") : 0;
}

/* ---- sweep and check -------------------------------------------------- */

static void sweep_progress(void *arg, const struct sweep_report *r)
{
	struct progress *p = arg;

	if (progress_due(p))
		progress_line(p, "sweeping: %" PRId64 " expired claims, %" PRId64
			      " keys, %" PRId64 " checkpoints, %" PRId64 " events",
			      r->expired, r->retired, r->checkpoints, r->events);
}

static int cmd_sweep(struct ctl *c, char **args, int n)
{
	struct progress p;
	struct sweep_options opt = { .dry_run = c->dry_run, .batch = 500,
				     .progress = sweep_progress, .progress_arg = &p };
	struct caller self = { .pid = getpid(), .uid = getuid(), .gid = getgid() };
	struct sweep_report r;
	int rc;

	(void)args;
	(void)n;
	progress_start(&p);
	rc = sweep_run(&c->o, &opt, &self, &r);
	progress_end(&p);
	if (rc)
		return fail(rc, "sweep");
	printf("%s%" PRId64 " expired claims, %" PRId64 " keys past retention, %"
	       PRId64 " checkpoints of old fingerprints, %" PRId64
	       " events past retention\n", c->dry_run ? "would remove: " : "removed: ",
	       r.expired, r.retired, r.checkpoints, r.events);
	return 0;
}

static void report_problem(void *arg, const char *msg)
{
	progress_end(arg);	/* the problem on a line of its own */
	printf("problem: %s\n", msg);
	fflush(stdout);
}

static void check_progress(void *arg, const char *what, int step, int steps)
{
	struct progress *p = arg;

	if (progress_due(p))
		progress_line(p, "checking %s (%d of %d)", what, step + 1, steps);
}

static int cmd_check(struct ctl *c, char **args, int n)
{
	struct progress p;
	struct store_check_calls calls = { report_problem, check_progress, &p };
	int64_t problems = 0;
	int rc;

	(void)args;
	(void)n;
	progress_start(&p);
	rc = store_begin(c->st, false);
	if (rc == 0)
		rc = once_end(&c->o, store_check(c->st, &calls, &problems));
	progress_end(&p);
	if (rc)
		return fail(rc, "check");
	if (problems) {
		printf("%s: %" PRId64 " problem%s\n", c->store_path, problems,
		       problems == 1 ? "" : "s");
		return EXIT_PROBLEM;
	}
	printf("%s: ok\n", c->store_path);
	return 0;
}

/* ---- stats ------------------------------------------------------------ */

/*
 * A mount's counters are the daemon's, not the store's: they are read
 * from the mount's .stats (or .metrics, the Prometheus text format).
 */
static int cmd_stats(struct ctl *c, char **args, int n)
{
	char path[4096], buf[65536];
	ssize_t got;
	int fd;

	(void)args;
	(void)n;
	snprintf(path, sizeof(path), "%s/%s", c->store_path,
		 c->prometheus ? ".metrics" : ".stats");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "oncectl: %s: %s\n", c->store_path,
			errno == ENOENT ? "not a mounted oncefs (no .stats)"
					: strerror(errno));
		return EXIT_STORE;
	}
	while ((got = read(fd, buf, sizeof(buf))) > 0) {
		if (fwrite(buf, 1, (size_t)got, stdout) != (size_t)got)
			break;
	}
	close(fd);
	if (got < 0 || fflush(stdout) != 0)
		return fail(-(errno ? errno : EIO), "read the counters");
	return 0;
}

static const struct command commands[] = {
	{ "init", 0, 0, true, false, cmd_init, "init STORE",
	  "create an empty store (as -o create would); an existing store is left as it is" },
	{ "ls", 0, 1, false, false, cmd_ls, "ls STORE [WORKFLOW] [--json]",
	  "list the workflows, or a workflow's keys and checkpoints" },
	{ "show", 2, 2, false, false, cmd_show,
	  "show STORE WORKFLOW KEY [--json] [--hash-key]",
	  "one key: status, generation, attempt, lease, holder, result" },
	{ "events", 1, 1, false, false, cmd_events,
	  "events STORE WORKFLOW [--since TIME] [--json]",
	  "the audit log; TIME: Unix seconds, YYYY-MM-DD[THH:MM:SSZ], or 30m/2h/1d ago" },
	{ "sweep", 0, 0, true, false, cmd_sweep, "sweep STORE [--dry-run]",
	  "remove expired claims, keys and events past retention, old checkpoints" },
	{ "check", 0, 0, false, false, cmd_check, "check STORE",
	  "check the database and oncefs's invariants; exit 1 on any problem" },
	{ "stats", 0, 0, false, true, cmd_stats, "stats MOUNTPOINT [--prometheus]",
	  "a mount's counters (its .stats), or its metrics (.metrics)" },
	{ NULL, 0, 0, false, false, NULL, NULL, NULL }
};

static void usage(FILE *f)
{
	fprintf(f, "usage: oncectl COMMAND STORE [ARGS...] [OPTIONS]\n\n");
	for (const struct command *c = commands; c->name; c++)
		fprintf(f, "  oncectl %-46s %s\n", c->usage, c->help);
	fprintf(f, "\noptions: --json (ls, show, events), --since TIME (events), "
		"--dry-run (sweep),\n         --prometheus (stats), --hash-key (show: KEY as once "
		"--hash-key names it),\n         --pg-schema NAME (a PostgreSQL store's schema, "
		"as the mount's -o pg_schema),\n         --help, --version\n"
		"exit status: 0 ok; 1 a problem found or an action failed; "
		"2 usage; 3 the store could not be opened\n");
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "dry-run", no_argument, NULL, 'n' },
		{ "prometheus", no_argument, NULL, 'p' },
		{ "hash-key", no_argument, NULL, 'k' },
		{ "since", required_argument, NULL, 's' },
		{ "pg-schema", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	struct store_options sopt = { .sync = STORE_SYNC_FULL, .busy_timeout_ms = 5000 };
	struct once_config cfg = {
		.max_result = ONCE_MAX_RESULT_DEFAULT,
		.max_checkpoint = ONCE_MAX_CHECKPOINT_DEFAULT,
	};
	const struct command *cmd = NULL;
	struct ctl c = { 0 };
	char err[512];
	int opt, rc, nargs;

	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'j':
			c.json = true;
			break;
		case 'n':
			c.dry_run = true;
			break;
		case 'p':
			c.prometheus = true;
			break;
		case 'k':
			c.hash_key = true;
			break;
		case 's':
			c.since = optarg;
			break;
		case 'S':
			sopt.pg_schema = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("oncectl %s\n", ONCEFS_VERSION);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	for (const struct command *k = commands; k->name; k++) {
		if (strcmp(k->name, argv[optind]) == 0)
			cmd = k;
	}
	nargs = argc - optind - 2;
	if (!cmd || nargs < cmd->min_args || nargs > cmd->max_args) {
		if (!cmd)
			fprintf(stderr, "oncectl: %s: no such command\n", argv[optind]);
		usage(stderr);
		return EXIT_USAGE;
	}
	c.store_path = argv[optind + 1];
	if (cmd->on_mount)
		return cmd->run(&c, argv + optind + 2, nargs);
	sopt.create = cmd->run == cmd_init;
	sopt.read_only = !cmd->writes;
	rc = store_open(c.store_path, &sopt, &c.st, err, sizeof(err));
	if (rc) {
		const char *why = sopt.read_only ? read_only_dir_reason(c.store_path)
						 : NULL;

		fprintf(stderr, "oncectl: %s: %s\n", c.store_path, why ? why : err);
		return EXIT_STORE;
	}
	once_init(&c.o, c.st, &cfg);
	opened = c.st;
	json_buf_growing(&c.j, JSON_MAX);
	rc = cmd->run(&c, argv + optind + 2, nargs);
	json_buf_free(&c.j);
	opened = NULL;
	store_close(c.st);
	return rc;
}
