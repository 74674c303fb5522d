/*
 * store_backend.h - what a backend of the store implements (store.h is
 * what the rest of oncefs calls).
 *
 * A backend is a table of operations, like sqlite3_vfs or PostgreSQL's
 * table access methods: store.c picks one by the store's name
 * (store_scheme) and forwards every call of store.h to it, so that
 * nothing of a backend leaks above the interface.  Each backend defines
 * struct store_impl, its own state, in its own file; the rest of oncefs
 * sees it only through struct store.
 *
 * Each member has the contract of the store.h function of the same name,
 * on the backend's state instead of a struct store.  The operations
 * (lookup_key .. renew) may be NULL: store.c then runs the ones made of
 * the backend's row functions (store_verbs.c).
 */
#ifndef ONCE_STORE_BACKEND_H
#define ONCE_STORE_BACKEND_H

#include "store.h"

struct store_impl;

struct store_ops {
	const char *name;
	int (*open)(const char *path, const struct store_options *opt,
		struct store_impl **out, char *err, size_t errlen);
	void (*close)(struct store_impl *st);
	int64_t (*now_ms)(struct store_impl *st);
	int (*changed)(struct store_impl *st, int64_t *seen);
	void (*get_stats)(struct store_impl *st, struct store_stats *out);
	const char *(*problem)(struct store_impl *st, char *buf, size_t size);
	int (*checkpoint)(struct store_impl *st);
	/* NULL: transactions of one mount never wait for each other. */
	bool (*contended)(struct store_impl *st);
	void (*on_wal_growth)(struct store_impl *st, void (*fn)(void *arg),
		void *arg);
	int (*lookup_workflow)(struct store_impl *st, int64_t id,
		const char *name, size_t len, struct wf_row *w);
	int (*lookup_key)(struct store_impl *st, int64_t wf, const char *name,
		size_t len, struct wf_row *w, struct key_row *k);
	int (*lookup_generation)(struct store_impl *st, int64_t generation,
		struct key_row *k, struct wf_row *w);
	int (*claim)(struct store_impl *st, const struct store_claim *c,
		struct key_row *k, struct wf_row *w, bool *adopted);
	int (*finalize)(struct store_impl *st, const struct store_finalize *f,
		struct key_row *k);
	int (*abandon)(struct store_impl *st, int64_t generation,
		int64_t now_ms, const struct event *ev, struct key_row *k);
	int (*renew)(struct store_impl *st, const int64_t *generations,
		size_t n, int64_t now_ms, int64_t lease_ms, uint64_t *renewed);
	/*
	 * May return -ENOTSUP for a case it leaves to the row functions
	 * (verbs_step_commit), having changed nothing.
	 */
	int (*step_commit)(struct store_impl *st,
		const struct store_step_commit *c, struct step_row *r);
	int (*begin)(struct store_impl *st, bool write);
	int (*commit)(struct store_impl *st);
	void (*rollback)(struct store_impl *st);
	int (*next_generation)(struct store_impl *st, int64_t *out);
	int (*wf_by_name)(struct store_impl *st, const char *name, size_t len,
		struct wf_row *out);
	int (*wf_by_id)(struct store_impl *st, int64_t id, struct wf_row *out);
	int (*wf_insert)(struct store_impl *st, struct wf_row *row);
	int (*wf_update)(struct store_impl *st, const struct wf_row *row);
	int (*wf_delete)(struct store_impl *st, int64_t id);
	int (*wf_list)(struct store_impl *st, int64_t after,
		struct wf_row *rows, int max, int *n);
	int (*key_get)(struct store_impl *st, int64_t wf, const char *name,
		size_t len, struct key_row *out);
	int (*key_by_generation)(struct store_impl *st, int64_t generation,
		struct key_row *out);
	int (*key_result)(struct store_impl *st, const struct key_row *k,
		char **buf, size_t *len);
	int (*key_insert)(struct store_impl *st, struct key_row *row);
	int (*key_update)(struct store_impl *st, const struct key_row *row);
	int (*key_set_result)(struct store_impl *st, struct key_row *k,
		const char *buf, size_t len);
	int (*key_delete)(struct store_impl *st, int64_t id);
	int (*key_note)(struct store_impl *st, int64_t id, enum key_note which,
		char *buf, size_t *len);
	int (*key_set_note)(struct store_impl *st, int64_t id,
		enum key_note which, const char *buf, size_t len);
	int (*key_clear_notes)(struct store_impl *st, int64_t id);
	int (*key_list)(struct store_impl *st, int64_t wf, int64_t after,
		int64_t now_ms, struct key_row *rows, int max, int *n);
	int (*key_any)(struct store_impl *st, int64_t wf, int64_t now_ms,
		bool *any);
	int (*step_get)(struct store_impl *st, int64_t wf, int64_t epoch,
		const char *name, size_t len, struct step_row *out);
	int (*step_by_id)(struct store_impl *st, int64_t id,
		struct step_row *out);
	int (*step_any)(struct store_impl *st, int64_t wf, int64_t epoch,
		bool *any);
	int (*step_list)(struct store_impl *st, int64_t wf, int64_t epoch,
		int64_t after, struct step_row *rows, int max, int *n);
	int (*step_insert)(struct store_impl *st, struct step_row *row);
	int (*step_update)(struct store_impl *st, const struct step_row *row);
	int (*step_delete)(struct store_impl *st, int64_t id);
	int (*step_set_content)(struct store_impl *st, struct step_row *r,
		int64_t content, int64_t size, int64_t mtime_ns);
	int (*pin)(struct store_impl *st, int64_t content, int64_t now_ms);
	void (*unpin)(struct store_impl *st, int64_t content);
	int (*pins_renew)(struct store_impl *st, int64_t now_ms);
	int (*content_read)(struct store_impl *st, int64_t content,
		int64_t size, int64_t off, char *buf, size_t len, size_t *got);
	int (*content_stage)(struct store_impl *st, int fd, int64_t size,
		int64_t now_ms, int64_t *content);
	int (*purge)(struct store_impl *st, int64_t now_ms, int max,
		int64_t *n);
	int (*hold)(struct store_impl *st, int64_t wf, int64_t expires_ms,
		int64_t *id);
	int (*unhold)(struct store_impl *st, int64_t id);
	int (*hold_any)(struct store_impl *st, int64_t wf, int64_t now_ms,
			int64_t except, bool *any);
	int (*holds_renew)(struct store_impl *st, int64_t now_ms,
		int64_t lease_ms);
	int (*event_append)(struct store_impl *st, int64_t wf,
		const struct event *ev);
	int (*event_read)(struct store_impl *st, int64_t wf, int64_t offset,
		char *buf, size_t size, size_t *got);
	int (*event_list)(struct store_impl *st, int64_t wf, int64_t since_ms,
		int (*fn)(void *arg, const struct event_view *ev), void *arg);
	int (*check)(struct store_impl *st,
		const struct store_check_calls *calls, int64_t *problems);
	int (*key_expired)(struct store_impl *st, int64_t now_ms,
		struct key_row *rows, int max, int *n);
	int (*key_retired)(struct store_impl *st, int64_t now_ms,
		struct key_row *rows, int max, int *n, bool *more);
	int (*event_trim)(struct store_impl *st, int64_t now_ms, int max,
		int64_t *n, bool *more);
};

/* The operations made of row functions (store_verbs.c). */
int verbs_lookup_workflow(struct store *st, int64_t id, const char *name,
			  size_t len, struct wf_row *w);
int verbs_lookup_key(struct store *st, int64_t wf, const char *name,
		     size_t len, struct wf_row *w, struct key_row *k);
int verbs_lookup_generation(struct store *st, int64_t generation,
			    struct key_row *k, struct wf_row *w);
int verbs_claim(struct store *st, const struct store_claim *c,
		struct key_row *k, struct wf_row *w, bool *adopted);
int verbs_finalize(struct store *st, const struct store_finalize *f,
		   struct key_row *k);
int verbs_abandon(struct store *st, int64_t generation, int64_t now_ms,
		  const struct event *ev, struct key_row *k);
int verbs_renew(struct store *st, const int64_t *generations, size_t n,
		int64_t now_ms, int64_t lease_ms, uint64_t *renewed);
int verbs_step_commit(struct store *st, const struct store_step_commit *c,
		      struct step_row *r);

/* The backends. */
extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_pg_ops;

/*
 * A random id for this mount's rows of pins and holds, which other mounts
 * see: never 0, never negative.
 */
int64_t store_new_mount_id(void);

/* Did store_mark_maintenance() mark the calling thread? */
bool store_in_maintenance(void);
/* A write transaction of the calling thread held the lock us (backends). */
void store_note_hold(int64_t us);

#endif
