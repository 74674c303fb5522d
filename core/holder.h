/*
 * holder.h - what became of the process that held a claim.
 *
 * When a claim's last handle closes without a finalize, the daemon tells
 * in the "abandon" event why, as far as Linux lets it: a process that
 * is exiting (or a zombie) shows its wait status in /proc/PID/stat, one
 * that is gone shows nothing, one that runs on simply closed the file
 * (a Python `with` block that raised, say).
 */
#ifndef ONCE_HOLDER_H
#define ONCE_HOLDER_H

#include <stddef.h>
#include <sys/types.h>

enum holder_state {
	HOLDER_RUNNING,		/* closed the claim and runs on */
	HOLDER_EXITED,		/* exited; code is its exit status */
	HOLDER_KILLED,		/* killed; code is the signal */
	HOLDER_GONE,		/* exited, and nothing says how */
};

struct holder_fate {
	enum holder_state state;
	int code;
};

/* The process (thread group) of thread tid: FUSE names threads. */
pid_t holder_tgid(pid_t tid);

/* Read the fate of process (or thread) pid now. */
void holder_fate(pid_t pid, struct holder_fate *out);

/*
 * The same, from a request that the process may be waiting for: reading
 * /proc/PID/stat blocks while the process is in the middle of an exec,
 * and an exec closes its close-on-exec files, each close waiting for the
 * daemon's reply to its FLUSH.  So the read runs on another thread (of a
 * small pool, holder.c), and after HOLDER_PROBE_MS the answer is
 * HOLDER_RUNNING: a process in an exec is not dying.
 */
#define HOLDER_PROBE_MS 20
void holder_fate_now(pid_t pid, struct holder_fate *out);

/*
 * The fate as a phrase for an event ("killed by SIGKILL", "exited with
 * status 3", ...) into buf; *field and *value get the number that goes
 * with it ("signal" 9, "exit_status" 3), *field NULL when there is none.
 */
void holder_describe(const struct holder_fate *f, char *buf, size_t size,
		     const char **field, int64_t *value);

#endif
