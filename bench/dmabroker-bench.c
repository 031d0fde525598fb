// SPDX-License-Identifier: MIT
/*
 * dmabroker-bench: what the broker costs over passing fds yourself, measured against baselines
 * in the same run (never absolute targets: machines are noisy). Prints a table.
 *
 *   dmabroker-bench [--quick] [--no-scale] [--zero-copy-only]
 *
 * Baselines: a raw unix-socket protocol where a server process does the same allocation as the
 * daemon's backend and passes the fd with SCM_RIGHTS, and the allocation alone in-process.
 * Broker: the library's default path (a private peer-to-peer connection) and the bus path
 * (through dbus-daemon), share+import, AllocateMany of 8, share+import of 4 KiB vs 256 MiB,
 * and a daemon holding 10,000 buffers for 1,000 clients.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dmabroker.h"
#include "fixture.h"
#include "fd-util.h"
#include "protocol.h"

#define MIB (1024ull * 1024ull)

static int iterations = 2000;
static int warmup = 200;

struct row {
	char name[64];
	double p50, p99; /* µs */
	double ratio; /* p50 / baseline p50, or 0 */
	const char *baseline;
	double target; /* 0: none */
};

static struct row rows[32];
static int n_rows;

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static struct row *record(const char *name, double *samples, int n)
{
	struct row *r = &rows[n_rows++];

	qsort(samples, (size_t)n, sizeof(double), cmp_double);
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->p50 = samples[n / 2];
	r->p99 = samples[(n * 99) / 100];
	return r;
}

static void compare(struct row *r, const struct row *base, double target)
{
	r->ratio = r->p50 / base->p50;
	r->baseline = base->name;
	r->target = target;
}

/* The daemon's memfd backend, exactly: sealed, the size never changes. */
static int allocate_memfd(size_t size)
{
	int fd = memfd_create("dmabroker", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0 || ftruncate(fd, (off_t)size) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		abort();
	return fd;
}

/* The raw protocol's server: read a size, allocate, send the fd back with SCM_RIGHTS. */
static void raw_server(int sock)
{
	uint64_t size;

	while (read(sock, &size, sizeof(size)) == sizeof(size)) {
		char cbuf[CMSG_SPACE(sizeof(int))];
		struct iovec iov = {&size, sizeof(size)};
		struct msghdr mh = {.msg_iov = &iov,
				    .msg_iovlen = 1,
				    .msg_control = cbuf,
				    .msg_controllen = sizeof(cbuf)};
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		int fd = allocate_memfd(size);

		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
		if (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
			_exit(1);
		close(fd);
	}
	_exit(0);
}

static int raw_request(int sock, uint64_t size)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {&size, sizeof(size)};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf)};
	int fd = -1;

	if (write(sock, &size, sizeof(size)) != sizeof(size) ||
	    recvmsg(sock, &mh, MSG_CMSG_CLOEXEC) <= 0)
		abort();
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof(int));
	return fd;
}

static const struct row *bench_raw(size_t size)
{
	double *s = calloc((size_t)iterations, sizeof(double));
	int sv[2];
	pid_t pid;
	const struct row *r;

	socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
	pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(sv[0]);
		raw_server(sv[1]);
	}
	close(sv[1]);
	for (int i = -warmup; i < iterations; i++) {
		double t0 = now_us();
		int fd = raw_request(sv[0], size);

		if (i >= 0)
			s[i] = now_us() - t0;
		close(fd);
	}
	close(sv[0]);
	waitpid(pid, NULL, 0);
	r = record("raw unix socket + SCM_RIGHTS (baseline)", s, iterations);
	free(s);
	return r;
}

static const struct row *bench_inprocess(size_t size)
{
	double *s = calloc((size_t)iterations, sizeof(double));
	const struct row *r;

	for (int i = -warmup; i < iterations; i++) {
		double t0 = now_us();
		int fd = allocate_memfd(size);

		if (i >= 0)
			s[i] = now_us() - t0;
		close(fd);
	}
	r = record("in-process allocation", s, iterations);
	free(s);
	return r;
}

static struct dmabroker *client(uint32_t flags, bool dynamic)
{
	struct dmabroker *ctx = NULL;

	if (dmabroker_connect(&ctx, NULL, flags) < 0 ||
	    dmabroker_register(ctx, "cpu", dynamic, "bench", NULL) < 0) {
		fprintf(stderr, "bench: cannot reach the daemon\n");
		exit(1);
	}
	return ctx;
}

static struct row *bench_allocate(const char *name, struct dmabroker *ctx, size_t size,
				  const char *backend)
{
	struct dmabroker_alloc_spec spec = {.size = size, .backend = backend};
	double *s = calloc((size_t)iterations, sizeof(double));
	struct row *r;

	for (int i = -warmup; i < iterations; i++) {
		struct dmabroker_buffer *buf;
		double t0 = now_us();

		if (dmabroker_allocate(ctx, &spec, sizeof(spec), &buf) < 0) {
			fprintf(stderr, "bench: allocate: %s\n", dmabroker_last_error(ctx));
			exit(1);
		}
		if (i >= 0)
			s[i] = now_us() - t0;
		dmabroker_release(buf);
	}
	r = record(name, s, iterations);
	free(s);
	return r;
}

static struct row *bench_allocate_many(struct dmabroker *ctx, size_t size, unsigned count)
{
	struct dmabroker_alloc_spec spec = {.size = size};
	struct dmabroker_buffer *bufs[DMABROKER_ALLOCATE_MANY_MAX];
	int n = iterations / 4;
	double *s = calloc((size_t)n, sizeof(double));
	char name[64];
	struct row *r;

	for (int i = -warmup / 4; i < n; i++) {
		double t0 = now_us();

		if (dmabroker_allocate_many(ctx, &spec, sizeof(spec), count, bufs) < 0) {
			fprintf(stderr, "bench: allocate_many: %s\n", dmabroker_last_error(ctx));
			exit(1);
		}
		if (i >= 0)
			s[i] = now_us() - t0;
		for (unsigned k = 0; k < count; k++)
			dmabroker_release(bufs[k]);
	}
	snprintf(name, sizeof(name), "AllocateMany of %u, peer", count);
	r = record(name, s, n);
	free(s);
	return r;
}

/* Share by one client, import by another: two calls, no bytes copied. */
static struct row *bench_share_import(const char *name, struct dmabroker *owner,
				      struct dmabroker *importer, size_t size, int n)
{
	struct dmabroker_alloc_spec spec = {.size = size};
	struct dmabroker_buffer *buf;
	double *s = calloc((size_t)n, sizeof(double));
	struct row *r;

	if (dmabroker_allocate(owner, &spec, sizeof(spec), &buf) < 0) {
		fprintf(stderr, "bench: allocate %zu: %s\n", size, dmabroker_last_error(owner));
		exit(1);
	}
	for (int i = -warmup / 4; i < n; i++) {
		struct dmabroker_token token;
		struct dmabroker_buffer *got;
		double t0 = now_us();

		if (dmabroker_share(buf, NULL, 0, &token) < 0 ||
		    dmabroker_import(importer, &token, &got) < 0) {
			fprintf(stderr, "bench: share/import: %s\n",
				dmabroker_last_error(importer));
			exit(1);
		}
		if (i >= 0)
			s[i] = now_us() - t0;
		dmabroker_release(got);
	}
	dmabroker_release(buf);
	r = record(name, s, n);
	free(s);
	return r;
}

static long proc_status(pid_t pid, const char *key)
{
	char path[64], line[256];
	long v = -1, total = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		/* "ctxt_switches" adds the voluntary and nonvoluntary counters. */
		if (strstr(line, key) && sscanf(strchr(line, ':') + 1, "%ld", &v) == 1)
			total += v;
	}
	fclose(f);
	return total;
}

static void print_table(void)
{
	printf("\n%-52s %10s %10s %8s %8s  %s\n", "measure", "p50 (us)", "p99 (us)", "ratio",
	       "target", "met");
	for (int i = 0; i < n_rows; i++) {
		struct row *r = &rows[i];
		char ratio[16] = "", target[16] = "";

		if (r->ratio > 0)
			snprintf(ratio, sizeof(ratio), "%.2fx", r->ratio);
		if (r->target > 0)
			snprintf(target, sizeof(target), "<=%.2fx", r->target);
		printf("%-52s %10.1f %10.1f %8s %8s  %s\n", r->name, r->p50, r->p99, ratio, target,
		       r->target > 0 ? (r->ratio <= r->target ? "yes" : "NO") : "");
	}
}

static void bench_scale(struct fixture *f, const struct row *empty_alloc,
			const struct row *empty_share)
{
	enum {
		CLIENTS = 1000,
		BUFFERS = 10000,
		HOLDERS = 10
	};
	struct dmabroker **idle = calloc(CLIENTS, sizeof(*idle));
	struct dmabroker *holders[HOLDERS];
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker *a, *b;
	long rss0, rss1, sw0, sw1;
	struct row *r;

	rss0 = proc_status(f->daemon_pid, "VmRSS");
	for (int i = 0; i < CLIENTS; i++)
		idle[i] = client(DMABROKER_CONNECT_NO_PEER, i % 2);
	for (int h = 0; h < HOLDERS; h++) {
		holders[h] = client(0, true);
		for (int i = 0; i < BUFFERS / HOLDERS; i++) {
			struct dmabroker_buffer *buf;

			if (dmabroker_allocate(holders[h], &spec, sizeof(spec), &buf) < 0) {
				fprintf(stderr, "bench: scale: %s\n",
					dmabroker_last_error(holders[h]));
				exit(1);
			}
		}
	}
	rss1 = proc_status(f->daemon_pid, "VmRSS");
	printf("\nscale: %d buffers held by %d clients, %d more clients idle\n", BUFFERS, HOLDERS,
	       CLIENTS);
	printf("daemon RSS %ld KiB -> %ld KiB: %.0f bytes per buffer (target < 1024)\n", rss0, rss1,
	       (double)(rss1 - rss0) * 1024.0 / BUFFERS);
	printf("daemon fds: %d\n", fixture_daemon_fds(f));

	a = client(0, true);
	b = client(0, true);
	r = bench_allocate("allocate 4 MiB, peer, 10k buffers/1k clients", a, 4 * MIB, NULL);
	compare(r, empty_alloc, 1.2);
	r = bench_share_import("share+import, 10k buffers/1k clients", a, b, 4 * MIB,
			       iterations / 4);
	compare(r, empty_share, 1.2);

	sw0 = proc_status(f->daemon_pid, "ctxt_switches");
	sleep(10);
	sw1 = proc_status(f->daemon_pid, "ctxt_switches");
	printf("daemon wake-ups over 10 s idle (context switches): %ld (target 0)\n", sw1 - sw0);
	printf("memory per buffer target met: %s; idle target met: %s\n",
	       (rss1 - rss0) * 1024 / BUFFERS < 1024 ? "yes" : "NO", sw1 == sw0 ? "yes" : "NO");

	dmabroker_disconnect(a);
	dmabroker_disconnect(b);
	for (int h = 0; h < HOLDERS; h++)
		dmabroker_disconnect(holders[h]);
	for (int i = 0; i < CLIENTS; i++)
		dmabroker_disconnect(idle[i]);
	free(idle);
}

int main(int argc, char **argv)
{
	bool scale = true, zero_copy_only = false;
	const char *config = "[Limits]\nMaxBufferSize=512M\nMaxBytesPerClient=2G\n"
			     "MaxBuffersPerClient=2000\nMaxBuffersPerUid=20000\n"
			     "MaxBytesPerUid=16G\nMaxClients=5000\nMaxClientsPerUid=2000\n";
	const struct row *raw, *inproc;
	struct row *peer = NULL, *bus, *one, *many, *share_peer = NULL, *small, *big;
	struct dmabroker *a, *b, *a_bus;
	struct rlimit rl;
	struct fixture f;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick"))
			iterations = 300, warmup = 50;
		else if (!strcmp(argv[i], "--no-scale"))
			scale = false;
		else if (!strcmp(argv[i], "--zero-copy-only"))
			zero_copy_only = true;
	}
	/* 10,000 buffers are 10,000 fds in the daemon; 1,000 clients as many connections here. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	fixture_bus_limits = "  <limit name=\"max_connections_per_user\">4096</limit>\n"
			     "  <limit name=\"max_completed_connections\">4096</limit>\n";
	if (fixture_start(&f, config) < 0) {
		fprintf(stderr, "bench: cannot start the bus and the daemon\n");
		return 1;
	}
	a = client(0, true);
	b = client(0, true);
	printf("dmabroker-bench: %d iterations; backend: %s; %ld cores\n", iterations,
	       access("/dev/udmabuf", F_OK) == 0 ? "udmabuf (real dma-bufs)" : "memfd (no udmabuf)",
	       sysconf(_SC_NPROCESSORS_ONLN));

	if (!zero_copy_only) {
		raw = bench_raw(4 * MIB);
		inproc = bench_inprocess(4 * MIB);
		(void)inproc;
		a_bus = client(DMABROKER_CONNECT_NO_PEER, true);
		peer = bench_allocate("allocate 4 MiB, library default (peer)", a, 4 * MIB,
				      access("/dev/udmabuf", F_OK) == 0 ? NULL : "memfd");
		compare(peer, raw, 1.15);
		bus = bench_allocate("allocate 4 MiB, through dbus-daemon", a_bus, 4 * MIB,
				     access("/dev/udmabuf", F_OK) == 0 ? NULL : "memfd");
		compare(bus, raw, 1.8);
		one = bench_allocate("allocate 4 KiB, peer (one of a set)", a, 4096, NULL);
		many = bench_allocate_many(a, 4096, 8);
		compare(many, one, 3.0);
		share_peer = bench_share_import("share+import 4 MiB, peer", a, b, 4 * MIB,
						iterations / 4);
		compare(share_peer, raw, 0);
		dmabroker_disconnect(a_bus);
	}
	small = bench_share_import("share+import 4 KiB", a, b, 4096, iterations / 4);
	big = bench_share_import("share+import 256 MiB", a, b, 256 * MIB, iterations / 4);
	compare(big, small, 1.1);
	print_table();
	if (scale && !zero_copy_only)
		bench_scale(&f, peer, share_peer);
	if (scale && !zero_copy_only)
		print_table();
	dmabroker_disconnect(a);
	dmabroker_disconnect(b);
	fixture_stop(&f);
	return 0;
}
