/*
 * handle.c - open files and their buffers.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/key.h"
#include "../core/step.h"
#include "handle.h"

struct handle *handle_new(enum handle_kind kind, uint64_t ino, int64_t wf,
			  int flags)
{
	struct handle *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->kind = kind;
	h->ino = ino;
	h->wf = wf;
	h->writable = (flags & O_ACCMODE) != O_RDONLY;
	h->append = (flags & O_APPEND) != 0;
	pthread_mutex_init(&h->lock, NULL);
	return h;
}

void handle_free(struct handle *h)
{
	if (!h)
		return;
	pthread_mutex_destroy(&h->lock);
	step_writer_close(h->writer);
	if (h->pinned)
		store_unpin(h->pinned, h->content);
	free(h->buf);
	free(h->undo);
	free(h->snap);
	free(h);
}

int handle_put(struct handle *h, const char *data, size_t size, int64_t off,
	       size_t max)
{
	size_t at = h->append ? h->len : (size_t)off;
	size_t end, overlap;

	if (off < 0 || at > h->len)
		return -EINVAL;
	end = at + size;
	if (end > max)
		return -EFBIG;
	if (end > h->cap) {
		size_t cap = h->cap ? h->cap : 256;
		char *p;

		while (cap < end)
			cap *= 2;
		p = realloc(h->buf, cap);
		if (!p)
			return -ENOMEM;
		h->buf = p;
		h->cap = cap;
	}
	overlap = (end < h->len ? end : h->len) - at;
	free(h->undo);
	h->undo = NULL;
	h->undo_size = 0;
	if (overlap) {
		h->undo = malloc(overlap);
		if (!h->undo)
			return -ENOMEM;
		memcpy(h->undo, h->buf + at, overlap);
		h->undo_size = overlap;
	}
	h->undo_len = h->len;
	h->undo_at = at;
	memcpy(h->buf + at, data, size);
	if (end > h->len)
		h->len = end;
	return 0;
}

void handle_undo(struct handle *h)
{
	if (h->undo_size)
		memcpy(h->buf + h->undo_at, h->undo, h->undo_size);
	h->len = h->undo_len;
}

void handle_set_snapshot(struct handle *h, char *snap, size_t len)
{
	free(h->snap);
	h->snap = snap;
	h->snap_len = len;
}

void handle_set_content(struct handle *h, struct store *st, int64_t content,
			int64_t size)
{
	h->pinned = st;
	h->content = content;
	h->content_size = size;
}

int handle_read(struct handle *h, int64_t off, char *buf, size_t size,
		size_t *got)
{
	size_t n = 0, more = 0;
	int rc = 0;

	*got = 0;
	if (off < 0)
		return -EINVAL;
	pthread_mutex_lock(&h->lock);
	if ((uint64_t)off < h->snap_len) {
		n = h->snap_len - (size_t)off;
		if (n > size)
			n = size;
		memcpy(buf, h->snap + off, n);
	}
	pthread_mutex_unlock(&h->lock);
	if (n < size && h->pinned) {
		int64_t at = off + (int64_t)n - (int64_t)h->snap_len;

		rc = store_content_read(h->pinned, h->content, h->content_size,
					at, buf + n, size - n, &more);
	}
	*got = n + more;
	return rc;
}

void handle_track(struct fs *fs, struct handle *h)
{
	pthread_mutex_lock(&fs->renew_lock);
	h->prev_open = NULL;
	h->next_open = fs->open;
	if (fs->open)
		fs->open->prev_open = h;
	fs->open = h;
	pthread_mutex_unlock(&fs->renew_lock);
}

void handle_close(struct fs *fs, struct handle *h)
{
	handle_renew_remove(fs, h);
	if (h->input_hold)
		step_release_input(&fs->core, h->input_hold);
	pthread_mutex_lock(&fs->renew_lock);
	if (h->prev_open)
		h->prev_open->next_open = h->next_open;
	else if (fs->open == h)
		fs->open = h->next_open;
	if (h->next_open)
		h->next_open->prev_open = h->prev_open;
	pthread_mutex_unlock(&fs->renew_lock);
	handle_free(h);
}

/*
 * The first open writer of inode ino (opened by process tgid, unless
 * any): what a stat of it needs, copied under its lock.
 */
static bool find_writer(struct fs *fs, uint64_t ino, bool any, pid_t tgid,
			int64_t *wf, int64_t *id, int64_t *size)
{
	bool found = false;

	pthread_mutex_lock(&fs->renew_lock);
	for (struct handle *h = fs->open; h && !found; h = h->next_open) {
		if (h->ino != ino || !h->writer || (!any && h->opener != tgid))
			continue;
		pthread_mutex_lock(&h->lock);
		*wf = h->wf;
		*id = step_writer_id(h->writer);
		*size = step_writer_size(h->writer);
		pthread_mutex_unlock(&h->lock);
		found = true;
	}
	pthread_mutex_unlock(&fs->renew_lock);
	return found;
}

bool handle_pending(struct fs *fs, uint64_t ino, int64_t *wf, int64_t *id,
		    int64_t *size)
{
	return find_writer(fs, ino, true, 0, wf, id, size);
}

bool handle_writer_size(struct fs *fs, uint64_t ino, pid_t tgid,
			int64_t *size)
{
	int64_t wf, id;

	return find_writer(fs, ino, false, tgid, &wf, &id, size);
}

bool handle_written(struct fs *fs, uint64_t ino)
{
	int64_t wf, id, size;

	return find_writer(fs, ino, true, 0, &wf, &id, &size);
}

void handle_close_all(struct fs *fs)
{
	while (fs->open)
		handle_close(fs, fs->open);
}

bool handle_claim_attr(struct fs *fs, int64_t generation, struct stat *out)
{
	bool found = false;

	pthread_mutex_lock(&fs->renew_lock);
	for (struct handle *h = fs->renewing; h; h = h->next_renewing) {
		if (h->claimed && h->generation == generation) {
			*out = h->claim_attr;
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&fs->renew_lock);
	return found;
}

void handle_renew_add(struct fs *fs, struct handle *h)
{
	pthread_mutex_lock(&fs->renew_lock);
	h->next_renewing = fs->renewing;
	fs->renewing = h;
	h->renews = true;
	pthread_mutex_unlock(&fs->renew_lock);
}

void handle_renew_remove(struct fs *fs, struct handle *h)
{
	struct handle **pp;

	if (!h->renews)
		return;
	pthread_mutex_lock(&fs->renew_lock);
	for (pp = &fs->renewing; *pp; pp = &(*pp)->next_renewing) {
		if (*pp == h) {
			*pp = h->next_renewing;
			break;
		}
	}
	h->renews = false;
	pthread_mutex_unlock(&fs->renew_lock);
}

size_t handle_renewing(void *arg, int64_t **gens, size_t *cap)
{
	struct fs *fs = arg;
	size_t n = 0;

	pthread_mutex_lock(&fs->renew_lock);
	for (struct handle *h = fs->renewing; h; h = h->next_renewing) {
		if (n == *cap) {
			size_t ncap = *cap ? *cap * 2 : 64;
			int64_t *p = realloc(*gens, ncap * sizeof(**gens));

			if (!p)
				break;
			*gens = p;
			*cap = ncap;
		}
		(*gens)[n++] = h->generation;
	}
	pthread_mutex_unlock(&fs->renew_lock);
	return n;
}
