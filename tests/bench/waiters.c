/*
 * waiters - N threads each blocked in a read of one wait/K file; prints
 * when the last read returned, so that a benchmark can time the wake.
 *
 *     waiters PATH N READY_FILE
 *
 * Creates READY_FILE once every thread has opened PATH and is about to
 * read; at the end prints "woken N last_ns T" (CLOCK_REALTIME) and
 * "errors E".
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static const char *path;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static pthread_cond_t all_woken = PTHREAD_COND_INITIALIZER;
static int opened, errors, woken, total;
static int64_t last_ns;

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *wait_one(void *arg)
{
	char buf[4096];
	int fd = open(path, O_RDONLY);
	ssize_t n;

	(void)arg;
	pthread_mutex_lock(&lock);
	opened++;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
	if (fd < 0) {
		pthread_mutex_lock(&lock);
		errors++;
		total--;	/* nobody to wait for */
		if (woken == total)
			pthread_cond_broadcast(&all_woken);
		pthread_mutex_unlock(&lock);
		return NULL;
	}
	n = read(fd, buf, sizeof(buf));
	pthread_mutex_lock(&lock);
	if (n < 0)
		errors++;
	woken++;
	if (now_ns() > last_ns)
		last_ns = now_ns();
	/*
	 * Close only once all are woken: the closes (a FLUSH and a RELEASE
	 * each) are not part of the wake-up.
	 */
	if (woken == total)
		pthread_cond_broadcast(&all_woken);
	while (woken < total)
		pthread_cond_wait(&all_woken, &lock);
	pthread_mutex_unlock(&lock);
	close(fd);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_attr_t attr;
	pthread_t *t;
	int n;

	if (argc != 4) {
		fprintf(stderr, "usage: waiters PATH N READY_FILE\n");
		return 2;
	}
	path = argv[1];
	n = atoi(argv[2]);
	total = n;
	t = calloc((size_t)n, sizeof(*t));
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	for (int i = 0; i < n; i++)
		if (pthread_create(&t[i], &attr, wait_one, NULL) != 0)
			return 1;
	pthread_mutex_lock(&lock);
	while (opened < n)
		pthread_cond_wait(&cond, &lock);
	pthread_mutex_unlock(&lock);
	close(open(argv[3], O_WRONLY | O_CREAT, 0644));
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	printf("woken %d last_ns %lld\nerrors %d\n", woken, (long long)last_ns,
	       errors);
	return 0;
}
