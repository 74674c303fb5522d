/*
 * handle.c - the adapter's side of open files: their lists (see handle.h).
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

struct handle *handle_new(enum file_kind kind, uint64_t ino, int64_t wf,
			  int flags)
{
	struct handle *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	file_init(&h->f, kind, wf, flags);
	h->ino = ino;
	return h;
}

void handle_free(struct handle *h)
{
	if (!h)
		return;
	file_fini(&h->f);
	free(h);
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
		if (h->ino != ino || !h->f.writer || (!any && h->f.opener != tgid))
			continue;
		pthread_mutex_lock(&h->f.lock);
		*wf = h->f.wf;
		*id = step_writer_id(h->f.writer);
		*size = step_writer_size(h->f.writer);
		pthread_mutex_unlock(&h->f.lock);
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
		if (h->f.claimed && h->f.generation == generation) {
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
		(*gens)[n++] = h->f.generation;
	}
	pthread_mutex_unlock(&fs->renew_lock);
	return n;
}
