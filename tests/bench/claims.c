/*
 * claims - claim fresh keys, from N processes for a while, and print the
 * rate.  One claim is the whole cycle a job makes: open(O_CREAT|O_EXCL),
 * write "succeeded\n", close (on oncefs a claim closed with nothing
 * written is abandoned: a second transaction, and not what a job does).
 *
 *     claims [--fsync] [--latency] DIR PROCESSES SECONDS
 *
 * --fsync makes each claim durable as a careful lockfile user would:
 * fsync of the file, then of the directory.  --latency prints the p50 and
 * p99 of one claim.  Output: "claims/s N" (and "p50_us N p99_us N").
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 200000

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char *argv[])
{
	bool dofsync = false, latency = false;
	int argi = 1, nproc;
	double seconds, start, elapsed;
	long *counts;
	double *samples;
	long total = 0;

	while (argi < argc && argv[argi][0] == '-') {
		if (strcmp(argv[argi], "--fsync") == 0)
			dofsync = true;
		else if (strcmp(argv[argi], "--latency") == 0)
			latency = true;
		argi++;
	}
	if (argc - argi != 3) {
		fprintf(stderr, "usage: claims [--fsync] [--latency] DIR PROCESSES SECONDS\n");
		return 2;
	}
	nproc = atoi(argv[argi + 1]);
	seconds = atof(argv[argi + 2]);
	counts = mmap(NULL, sizeof(long) * (size_t)nproc, PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	samples = mmap(NULL, sizeof(double) * MAX_SAMPLES * (size_t)nproc,
		       PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (counts == MAP_FAILED || samples == MAP_FAILED)
		return 1;
	start = now();
	for (int p = 0; p < nproc; p++) {
		if (fork() == 0) {
			int dfd = open(argv[argi], O_RDONLY | O_DIRECTORY);
			char path[4096];
			long i = 0;

			while (now() - start < seconds) {
				double t0 = now();
				int fd;

				snprintf(path, sizeof(path), "%s/k-%d-%d-%ld",
					 argv[argi], getpid(), p, i);
				fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
				if (fd < 0) {
					perror(path);
					_exit(1);
				}
				if (write(fd, "succeeded\n", 10) != 10)
					_exit(1);
				if (dofsync && fsync(fd))
					_exit(1);
				if (close(fd))
					_exit(1);
				if (dofsync && fsync(dfd))
					_exit(1);
				if (i < MAX_SAMPLES)
					samples[(size_t)p * MAX_SAMPLES + (size_t)i] = now() - t0;
				i++;
			}
			counts[p] = i;
			_exit(0);
		}
	}
	for (int p = 0; p < nproc; p++) {
		int st;

		wait(&st);
		if (!WIFEXITED(st) || WEXITSTATUS(st))
			return 1;
	}
	elapsed = now() - start;
	for (int p = 0; p < nproc; p++)
		total += counts[p];
	printf("claims/s %.0f\n", total / elapsed);
	if (latency) {
		size_t n = 0;
		double *all = malloc(sizeof(double) * (size_t)total);

		for (int p = 0; p < nproc; p++) {
			for (long i = 0; i < counts[p] && i < MAX_SAMPLES; i++)
				all[n++] = samples[(size_t)p * MAX_SAMPLES + (size_t)i];
		}
		qsort(all, n, sizeof(double), cmp);
		printf("p50_us %.0f p99_us %.0f\n", all[n / 2] * 1e6,
		       all[n * 99 / 100] * 1e6);
		free(all);
	}
	return 0;
}
