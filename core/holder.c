/*
 * holder.c - what became of a claim's holder (see holder.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "holder.h"

#define PF_EXITING 0x00000004	/* include/linux/sched.h */

/*
 * Fields of /proc/PID/stat after the command's closing parenthesis, from
 * 0 (field 3, the state): flags is field 9, exit_code field 52.
 */
#define AFTER_COMM(field) ((field) - 3)

/* A number field ("Tgid:", "Uid:") of /proc/PID/status, which never blocks. */
static bool status_field(pid_t pid, const char *field, long *out)
{
	char path[64], buf[2048], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	p = strstr(buf, field);
	if (!p)
		return false;
	*out = strtol(p + strlen(field), NULL, 10);
	return true;
}

pid_t holder_tgid(pid_t tid)
{
	long tgid;
	int fd;

	/*
	 * Only the leader of a thread group has a pidfd (without
	 * PIDFD_THREAD): one syscall answers for the most common opener, a
	 * process's main thread, where /proc/TID/status is a page of text
	 * the kernel formats.
	 */
	fd = (int)syscall(SYS_pidfd_open, tid, 0);
	if (fd >= 0) {
		close(fd);
		return tid;
	}
	return status_field(tid, "\nTgid:", &tgid) ? (pid_t)tgid : tid;
}

/* Is process pid's real uid ours? */
static bool same_user(pid_t pid)
{
	long uid;

	return status_field(pid, "\nUid:", &uid) && (uid_t)uid == geteuid();
}

void holder_fate(pid_t pid, struct holder_fate *out)
{
	char path[64], buf[2048], *p, *save = NULL;
	unsigned long long flags = 0;
	long long exit_code = -1;
	char state = 0;
	ssize_t n;
	int fd, i = 0;

	out->state = HOLDER_GONE;
	out->code = 0;
	if (pid <= 0)
		return;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	/* The command may hold spaces and parentheses: its last ')' ends it. */
	p = strrchr(buf, ')');
	if (!p)
		return;
	for (char *tok = strtok_r(p + 1, " \n", &save); tok;
	     tok = strtok_r(NULL, " \n", &save), i++) {
		if (i == AFTER_COMM(3))
			state = tok[0];
		else if (i == AFTER_COMM(9))
			flags = strtoull(tok, NULL, 10);
		else if (i == AFTER_COMM(52))
			exit_code = strtoll(tok, NULL, 10);
	}
	if (state != 'Z' && state != 'X' && !(flags & PF_EXITING)) {
		out->state = HOLDER_RUNNING;
		return;
	}
	/*
	 * exit_code is shown only to who may ptrace the process (to others
	 * as 0): a daemon that is not root knows it for its own user only.
	 */
	if (exit_code < 0 || (geteuid() != 0 && !same_user(pid)))
		return;
	if (exit_code & 0x7f) {
		out->state = HOLDER_KILLED;
		out->code = (int)(exit_code & 0x7f);
	} else {
		out->state = HOLDER_EXITED;
		out->code = (int)((exit_code >> 8) & 0xff);
	}
}

/* One read of a process's fate, shared by its asker and its thread. */
struct probe {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pid_t pid;
	struct holder_fate fate;
	bool done;
	int refs;
	struct probe *next;	/* in the pool's queue */
};

/*
 * The threads that read fates for holder_fate_now(), kept for the next
 * probe (a thread started for each cost a clone per claim).  One more is
 * started whenever the queue holds more probes than threads are idle, so
 * that a read stuck behind an exec never holds up another; at most
 * PROBE_THREADS_KEPT stay, the others read one probe and end.
 */
#define PROBE_THREADS_KEPT 4

static struct {
	pthread_mutex_t lock;
	pthread_cond_t work;
	struct probe *head, *tail;
	int queued, idle, kept;
} pool = { .lock = PTHREAD_MUTEX_INITIALIZER,
	   .work = PTHREAD_COND_INITIALIZER };

static void probe_put(struct probe *p)
{
	bool last;

	pthread_mutex_lock(&p->lock);
	last = --p->refs == 0;
	pthread_mutex_unlock(&p->lock);
	if (last) {
		pthread_mutex_destroy(&p->lock);
		pthread_cond_destroy(&p->cond);
		free(p);
	}
}

static void probe_run(struct probe *p)
{
	struct holder_fate f;

	holder_fate(p->pid, &f);
	pthread_mutex_lock(&p->lock);
	p->fate = f;
	p->done = true;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	probe_put(p);
}

static void *probe_thread(void *kept)
{
	do {
		struct probe *p;

		pthread_mutex_lock(&pool.lock);
		pool.idle++;
		while (!pool.head)
			pthread_cond_wait(&pool.work, &pool.lock);
		pool.idle--;
		p = pool.head;
		pool.head = p->next;
		if (!pool.head)
			pool.tail = NULL;
		pool.queued--;
		pthread_mutex_unlock(&pool.lock);
		probe_run(p);
	} while (kept);
	return NULL;
}

/* Queue p for a thread of the pool, starting one if none is free. */
static void probe_queue(struct probe *p)
{
	pthread_attr_t attr;
	pthread_t t;
	bool start, keep = false;

	pthread_mutex_lock(&pool.lock);
	if (pool.tail)
		pool.tail->next = p;
	else
		pool.head = p;
	pool.tail = p;
	pool.queued++;
	start = pool.queued > pool.idle;
	if (start && pool.kept < PROBE_THREADS_KEPT) {
		keep = true;
		pool.kept++;
	}
	pthread_cond_signal(&pool.work);
	pthread_mutex_unlock(&pool.lock);
	if (!start)
		return;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	if (pthread_create(&t, &attr, probe_thread, keep ? &pool : NULL) &&
	    keep) {
		/* The probe waits for a thread that frees; its asker, 20 ms. */
		pthread_mutex_lock(&pool.lock);
		pool.kept--;
		pthread_mutex_unlock(&pool.lock);
	}
	pthread_attr_destroy(&attr);
}

void holder_fate_now(pid_t pid, struct holder_fate *out)
{
	struct probe *p = calloc(1, sizeof(*p));
	pthread_condattr_t ca;
	struct timespec until;

	out->state = HOLDER_RUNNING;
	out->code = 0;
	if (!p)
		return;
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cond, &ca);
	pthread_condattr_destroy(&ca);
	p->pid = pid;
	p->refs = 2;	/* the asker's, and the thread's that reads it */
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_nsec += HOLDER_PROBE_MS * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	probe_queue(p);
	pthread_mutex_lock(&p->lock);
	while (!p->done && pthread_cond_timedwait(&p->cond, &p->lock, &until) == 0)
		;
	if (p->done)
		*out = p->fate;
	pthread_mutex_unlock(&p->lock);
	probe_put(p);
}

void holder_describe(const struct holder_fate *f, char *buf, size_t size,
		     const char **field, int64_t *value)
{
	const char *sig;

	*field = NULL;
	*value = 0;
	switch (f->state) {
	case HOLDER_RUNNING:
		snprintf(buf, size, "closed without a finalize (the process "
			 "runs on)");
		return;
	case HOLDER_EXITED:
		snprintf(buf, size, "exited with status %d, not finalized",
			 f->code);
		*field = "exit_status";
		*value = f->code;
		return;
	case HOLDER_KILLED:
		sig = sigabbrev_np(f->code);
		if (sig)
			snprintf(buf, size, "killed by SIG%s", sig);
		else
			snprintf(buf, size, "killed by signal %d", f->code);
		*field = "signal";
		*value = f->code;
		return;
	case HOLDER_GONE:
		break;
	}
	snprintf(buf, size, "exited, not finalized");
}
