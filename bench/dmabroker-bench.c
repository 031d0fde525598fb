// SPDX-License-Identifier: MIT
/*
 * dmabroker-bench: what the broker costs over passing fds yourself.
 *
 *   dmabroker-bench [--quick] [--rounds=N] [--iterations=N] [--no-calls] [--no-scale]
 *                   [--no-concurrency] [--json=FILE] [--client-cpu=N --server-cpu=N | --no-pin]
 *                   [--keep-awake] [--guest]
 *   dmabroker-bench --profile=OP [--calls=N]     (one kind of call N times, for strace/callgrind)
 *
 * Methodology (docs/benchmarks.md): every measure is timed against its baseline in the same
 * run, in short alternating rounds (A B C ... A B C ...), each round a fixed number of calls
 * after an untimed warm-up. A row's ratio is the median of its per-round ratios (median of
 * the round's samples over the median of the baseline's samples in the same round), with the
 * spread (min-max over rounds). p50 and p99 are over all timed samples of the row.
 *
 * Baselines are a raw protocol on a SOCK_SEQPACKET unix socket, served by a single-threaded
 * epoll server process (one event loop, like the daemon) that does the same work as the
 * daemon: takes and checks the client's sealed memfd and answers with a duplicate of it
 * (client memory, the library's default), or makes the memfd itself (server memory), hands
 * out a 128-bit token for a buffer, answers an import with the buffer's fd, and drops a
 * reference on release.
 *
 * Daemons: D0 (no fd store), D1 (--fd-store with a fake fd store receiving the fds over
 * NOTIFY_SOCKET, and WATCHDOG_USEC=20 s, as under the unit), D2 (as D1, loaded with 10,000
 * buffers and 1,000 clients). Each has its own dbus-daemon.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dmabroker.h"
#include "fixture.h"

#define KIB 1024ull
#define MIB (1024ull * 1024ull)

static int rounds = 9;
static int iterations = 200; /* per op per round (cheap calls) */
static int warmup = 50; /* per op, before the first round */
static int client_cpu = 0, server_cpu = 1;
static bool pin = true;
static pid_t spinners[2];

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void die(const char *what)
{
	fprintf(stderr, "dmabroker-bench: %s\n", what);
	exit(1);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Sorts a copy; q in [0,1]. */
static double quantile(const double *v, int n, double q)
{
	double *c = malloc(sizeof(double) * (size_t)n), r;
	int i;

	memcpy(c, v, sizeof(double) * (size_t)n);
	qsort(c, (size_t)n, sizeof(double), cmp_double);
	i = (int)(q * (n - 1) + 0.5);
	r = c[i];
	free(c);
	return r;
}

static void set_cpu(pid_t pid, int cpu)
{
	cpu_set_t set;

	if (!pin)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(pid, sizeof(set), &set) < 0)
		perror("sched_setaffinity");
}

/*
 * --keep-awake: a SCHED_IDLE busy loop on each of the two CPUs, so that a vCPU never halts
 * between two requests (in a VM, waking a halted vCPU costs the hypervisor's scheduling
 * latency: up to milliseconds on a busy host). It only runs when nothing else would.
 */
static void keep_awake(void)
{
	int cpus[2] = {client_cpu, server_cpu};

	for (int i = 0; i < 2; i++) {
		spinners[i] = fork();
		if (spinners[i] == 0) {
			struct sched_param sp = {0};

			prctl(PR_SET_PDEATHSIG, SIGKILL);
			set_cpu(0, cpus[i]);
			sched_setscheduler(0, SCHED_IDLE, &sp);
			for (;;)
				__asm__ volatile("" ::: "memory");
		}
	}
}

/* ------------------------------------------------------------------------------------------
 * Rows
 */

enum goal {
	GOAL_NONE, /* information only */
	GOAL_LE, /* ratio <= target */
	GOAL_GE, /* ratio >= target */
};

#define MAX_ROUNDS 64

struct row {
	char key[48];
	char name[80];
	const char *unit; /* of value: "us" (latency p50) or "calls/s" */
	double p50, p99; /* µs, over all samples */
	long n;
	double value; /* calls/s rows: median over rounds; else p50 */
	double ratio[MAX_ROUNDS];
	int n_ratio;
	char vs[48]; /* the baseline row's key */
	enum goal goal;
	double target;
	bool info; /* the target does not apply (emulated guest) */
	const char *note;
};

static struct row rows[96];
static int n_rows;

static struct row *new_row(const char *key, const char *name)
{
	struct row *r = &rows[n_rows++];

	memset(r, 0, sizeof(*r));
	snprintf(r->key, sizeof(r->key), "%s", key);
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->unit = "us";
	return r;
}

static double ratio_median(const struct row *r)
{
	return r->n_ratio ? quantile(r->ratio, r->n_ratio, 0.5) : 0;
}

static double ratio_min(const struct row *r)
{
	return r->n_ratio ? quantile(r->ratio, r->n_ratio, 0) : 0;
}

static double ratio_max(const struct row *r)
{
	return r->n_ratio ? quantile(r->ratio, r->n_ratio, 1) : 0;
}

static const char *met(const struct row *r)
{
	double m = ratio_median(r);

	if (r->goal == GOAL_NONE || !r->n_ratio)
		return "";
	if (r->goal == GOAL_LE)
		return m <= r->target ? "met" : "NOT MET";
	return m >= r->target ? "met" : "NOT MET";
}

/* ------------------------------------------------------------------------------------------
 * Interleaved groups: ops[0..n) each run `iters` times per round, in order, rounds times.
 */

typedef double (*op_fn)(void *arg); /* one call; returns its time in µs */

struct op {
	const char *key, *name;
	op_fn fn;
	void *arg;
	int base; /* index of the baseline op in the group, or -1 */
	enum goal goal;
	double target;
	const char *note;
};

static void run_group(const char *title, struct op *ops, int n, int iters)
{
	double *s[16];
	struct row *rs[16];
	double t0 = now_us();

	fprintf(stderr, "bench: %s (%d ops x %d calls x %d rounds)...", title, n, iters, rounds);
	for (int i = 0; i < n; i++) {
		s[i] = calloc((size_t)(iters * rounds), sizeof(double));
		for (int k = 0; k < warmup; k++)
			ops[i].fn(ops[i].arg);
	}
	for (int r = 0; r < rounds; r++)
		for (int i = 0; i < n; i++)
			for (int k = 0; k < iters; k++)
				s[i][r * iters + k] = ops[i].fn(ops[i].arg);
	for (int i = 0; i < n; i++) {
		struct row *row = rs[i] = new_row(ops[i].key, ops[i].name);

		row->n = (long)iters * rounds;
		row->p50 = quantile(s[i], (int)row->n, 0.5);
		row->p99 = quantile(s[i], (int)row->n, 0.99);
		row->value = row->p50;
		row->goal = ops[i].goal;
		row->target = ops[i].target;
		row->note = ops[i].note;
	}
	for (int i = 0; i < n; i++) {
		int b = ops[i].base;

		if (b < 0)
			continue;
		snprintf(rs[i]->vs, sizeof(rs[i]->vs), "%s", ops[b].key);
		for (int r = 0; r < rounds; r++)
			rs[i]->ratio[rs[i]->n_ratio++] = quantile(s[i] + r * iters, iters, 0.5) /
							 quantile(s[b] + r * iters, iters, 0.5);
	}
	for (int i = 0; i < n; i++)
		free(s[i]);
	fprintf(stderr, " %.1f s\n", (now_us() - t0) / 1e6);
}

/* ------------------------------------------------------------------------------------------
 * The raw protocol: one single-threaded epoll server process for every raw client.
 */

enum raw_op {
	RAW_ALLOC_CLIENT = 1, /* fd: the client's sealed memfd; answer: a duplicate */
	RAW_ALLOC_SERVER, /* answer: a sealed memfd the server made */
	RAW_GET, /* answer: the fd of buffer id (one round trip carrying an existing fd) */
	RAW_SHARE, /* answer: a token for buffer id */
	RAW_IMPORT, /* token -> the buffer's fd */
	RAW_RELEASE, /* drops one reference to buffer id */
};

struct raw_req {
	uint32_t op;
	uint32_t id;
	uint64_t size;
	uint8_t token[16];
};

struct raw_rep {
	int32_t status;
	uint32_t id;
	uint8_t token[16];
};

#define RAW_MAX_BUFS 65536
#define RAW_MAX_TOKENS 4096

static char raw_address[64];
static pid_t raw_pid;

struct raw_server {
	int fd[RAW_MAX_BUFS];
	int refs[RAW_MAX_BUFS];
	uint32_t free_ids[RAW_MAX_BUFS];
	uint32_t n_free;
	struct {
		uint8_t t[16];
		uint32_t id;
		bool live;
	} tokens[RAW_MAX_TOKENS];
	unsigned next_token;
};

/* The daemon's memfd backend: sealed, the size never changes. */
static int memfd_server(size_t size)
{
	int fd = memfd_create("dmabroker", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0 || ftruncate(fd, (off_t)size) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		abort();
	return fd;
}

/* What the library does by default: the pages are allocated here, in the client. */
static int memfd_client(size_t size)
{
	int fd = memfd_create("dmabroker", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0 || ftruncate(fd, (off_t)size) < 0 || fallocate(fd, 0, 0, (off_t)size) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		abort();
	return fd;
}

/* The daemon's check_client_memfd(): a sealed shmem file of exactly the size. */
static bool raw_check_memfd(int fd, uint64_t size)
{
	struct statfs sfs;
	struct stat st;
	int seals;

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || fstatfs(fd, &sfs) < 0 ||
	    sfs.f_type != TMPFS_MAGIC)
		return false;
	seals = fcntl(fd, F_GET_SEALS);
	return seals >= 0 && (seals & F_SEAL_SHRINK) && !(seals & (F_SEAL_WRITE)) &&
	       (uint64_t)st.st_size == size;
}

static ssize_t send_with_fd(int sock, const void *p, size_t len, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = {0};
	struct iovec iov = {(void *)p, len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

	if (fd >= 0) {
		struct cmsghdr *c;

		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	return sendmsg(sock, &mh, MSG_NOSIGNAL);
}

static ssize_t recv_with_fd(int sock, void *p, size_t len, int *ret_fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {p, len};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *c;
	ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);

	*ret_fd = -1;
	c = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL;
	if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
		memcpy(ret_fd, CMSG_DATA(c), sizeof(int));
	return n;
}

static uint32_t raw_add(struct raw_server *s, int fd)
{
	uint32_t id = s->free_ids[--s->n_free];

	s->fd[id] = fd;
	s->refs[id] = 1;
	return id;
}

static void raw_handle(struct raw_server *s, int sock)
{
	struct raw_req q;
	struct raw_rep a = {0};
	int in_fd, out_fd = -1;
	ssize_t n = recv_with_fd(sock, &q, sizeof(q), &in_fd);

	if (n != sizeof(q)) {
		if (in_fd >= 0)
			close(in_fd);
		close(sock); /* also removes it from the epoll set */
		return;
	}
	switch (q.op) {
	case RAW_ALLOC_CLIENT:
		if (in_fd < 0 || !raw_check_memfd(in_fd, q.size) || !s->n_free) {
			a.status = -EINVAL;
			break;
		}
		a.id = raw_add(s, fcntl(in_fd, F_DUPFD_CLOEXEC, 3));
		out_fd = s->fd[a.id];
		break;
	case RAW_ALLOC_SERVER:
		if (!s->n_free) {
			a.status = -ENOSPC;
			break;
		}
		a.id = raw_add(s, memfd_server(q.size));
		out_fd = s->fd[a.id];
		break;
	case RAW_GET:
	case RAW_SHARE:
		if (q.id >= RAW_MAX_BUFS || s->refs[q.id] <= 0) {
			a.status = -ENOENT;
			break;
		}
		a.id = q.id;
		if (q.op == RAW_GET) {
			out_fd = s->fd[q.id];
			break;
		}
		{
			unsigned t = s->next_token++ % RAW_MAX_TOKENS;

			if (getrandom(s->tokens[t].t, 16, 0) != 16)
				abort();
			s->tokens[t].id = q.id;
			s->tokens[t].live = true;
			memcpy(a.token, s->tokens[t].t, 16);
		}
		break;
	case RAW_IMPORT:
		a.status = -ENOENT;
		for (unsigned i = 0; i < RAW_MAX_TOKENS; i++) {
			unsigned t = (s->next_token - 1 - i) % RAW_MAX_TOKENS;

			if (s->tokens[t].live && !memcmp(s->tokens[t].t, q.token, 16)) {
				s->tokens[t].live = false; /* works once */
				a.status = 0;
				a.id = s->tokens[t].id;
				s->refs[a.id]++;
				out_fd = s->fd[a.id];
				break;
			}
		}
		break;
	case RAW_RELEASE:
		if (q.id >= RAW_MAX_BUFS || s->refs[q.id] <= 0) {
			a.status = -ENOENT;
			break;
		}
		if (--s->refs[q.id] == 0) {
			close(s->fd[q.id]);
			s->free_ids[s->n_free++] = q.id;
		}
		break;
	default:
		a.status = -EINVAL;
	}
	if (in_fd >= 0)
		close(in_fd);
	(void)send_with_fd(sock, &a, sizeof(a), out_fd);
}

static void raw_term(int sig)
{
	(void)sig;
	_exit(0); /* a clean exit, so that valgrind writes its profile */
}

static void raw_serve(int lsock)
{
	struct raw_server *s = calloc(1, sizeof(*s));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = lsock};

	signal(SIGTERM, raw_term);
	for (uint32_t i = 0; i < RAW_MAX_BUFS; i++)
		s->free_ids[s->n_free++] = RAW_MAX_BUFS - 1 - i;
	epoll_ctl(ep, EPOLL_CTL_ADD, lsock, &ev);
	for (;;) {
		struct epoll_event evs[32];
		int n = epoll_wait(ep, evs, 32, -1);

		for (int i = 0; i < n; i++) {
			if (evs[i].data.fd == lsock) {
				int c = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
				struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};

				if (c >= 0)
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
			} else {
				raw_handle(s, evs[i].data.fd);
			}
		}
	}
}

static socklen_t raw_sockaddr(struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path + 1, raw_address, strlen(raw_address));
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(raw_address));
}

static void raw_start(void)
{
	struct sockaddr_un sa;
	socklen_t len;
	int l;

	snprintf(raw_address, sizeof(raw_address), "dmabroker-bench-raw-%d", (int)getpid());
	len = raw_sockaddr(&sa);
	l = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&sa, len) < 0 || listen(l, 128) < 0)
		die("raw server: cannot listen");
	raw_pid = fork();
	if (raw_pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		set_cpu(0, server_cpu);
		raw_serve(l);
		_exit(0);
	}
	close(l);
}

static int raw_connect(void)
{
	struct sockaddr_un sa;
	socklen_t len = raw_sockaddr(&sa);
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	if (s < 0 || connect(s, (struct sockaddr *)&sa, len) < 0)
		die("raw: cannot connect");
	return s;
}

/* One round trip. */
static struct raw_rep raw_call(int sock, uint32_t op, uint32_t id, uint64_t size,
			       const uint8_t *token, int send_fd, int *ret_fd)
{
	struct raw_req q = {.op = op, .id = id, .size = size};
	struct raw_rep a = {0};
	int fd;

	if (token)
		memcpy(q.token, token, 16);
	if (send_with_fd(sock, &q, sizeof(q), send_fd) != sizeof(q) ||
	    recv_with_fd(sock, &a, sizeof(a), &fd) != sizeof(a) || a.status < 0)
		die("raw: call failed");
	if (ret_fd)
		*ret_fd = fd;
	else if (fd >= 0)
		close(fd);
	return a;
}

/* The raw client's buffer: an id and an fd, as the library's buffer object. */
struct raw_buf {
	uint32_t id;
	int fd;
};

static struct raw_buf raw_alloc_client(int sock, size_t size)
{
	struct raw_buf b;
	int memfd = memfd_client(size);

	b.id = raw_call(sock, RAW_ALLOC_CLIENT, 0, size, NULL, memfd, &b.fd).id;
	close(memfd);
	return b;
}

static struct raw_buf raw_alloc_server(int sock, size_t size)
{
	struct raw_buf b;

	b.id = raw_call(sock, RAW_ALLOC_SERVER, 0, size, NULL, -1, &b.fd).id;
	return b;
}

static void raw_release(int sock, struct raw_buf b)
{
	close(b.fd);
	raw_call(sock, RAW_RELEASE, b.id, 0, NULL, -1, NULL);
}

static void raw_share(int sock, struct raw_buf b, uint8_t token[16])
{
	memcpy(token, raw_call(sock, RAW_SHARE, b.id, 0, NULL, -1, NULL).token, 16);
}

static struct raw_buf raw_import(int sock, const uint8_t token[16])
{
	struct raw_buf b;

	b.id = raw_call(sock, RAW_IMPORT, 0, 0, token, -1, &b.fd).id;
	return b;
}

/* --- raw ops --- */

struct raw_arg {
	int sock, sock2;
	size_t size;
	struct raw_buf held;
};

static double op_raw_alloc_client(void *p)
{
	struct raw_arg *a = p;
	double t0 = now_us();
	struct raw_buf b = raw_alloc_client(a->sock, a->size);
	double t = now_us() - t0;

	raw_release(a->sock, b);
	return t;
}

static double op_raw_alloc_server(void *p)
{
	struct raw_arg *a = p;
	double t0 = now_us();
	struct raw_buf b = raw_alloc_server(a->sock, a->size);
	double t = now_us() - t0;

	raw_release(a->sock, b);
	return t;
}

/* One round trip that brings back an existing buffer's fd. */
static double op_raw_get(void *p)
{
	struct raw_arg *a = p;
	double t0 = now_us();
	int fd;

	raw_call(a->sock, RAW_GET, a->held.id, 0, NULL, -1, &fd);
	t0 = now_us() - t0;
	close(fd);
	return t0;
}

static double op_raw_share_import(void *p)
{
	struct raw_arg *a = p;
	uint8_t token[16];
	double t0 = now_us(), t;
	struct raw_buf got;

	raw_share(a->sock, a->held, token);
	got = raw_import(a->sock2, token);
	t = now_us() - t0;
	raw_release(a->sock2, got);
	return t;
}

/* ------------------------------------------------------------------------------------------
 * A fake fd store (systemd's, over NOTIFY_SOCKET), as tests/bus/test-crash.c has it, in a
 * process of its own: it keeps what FDSTORE=1 hands it, closes what FDSTOREREMOVE=1 names,
 * and counts WATCHDOG=1 pings.
 */

struct store_stats {
	_Atomic long msgs, fds_kept, removes, pings;
};

struct fake_store {
	char address[64];
	pid_t pid;
	struct store_stats *stats; /* shared */
};

#define STORE_MAX 20000

static void store_serve(int sock, struct store_stats *st)
{
	static char *names[STORE_MAX];
	static int fds[STORE_MAX];
	int n = 0;

	for (;;) {
		char buf[4096], cbuf[CMSG_SPACE(sizeof(int) * 16)];
		struct iovec iov = {buf, sizeof(buf) - 1};
		struct msghdr mh = {.msg_iov = &iov,
				    .msg_iovlen = 1,
				    .msg_control = cbuf,
				    .msg_controllen = sizeof(cbuf)};
		bool add = false, remove = false;
		const char *name = "stored";
		char *save = NULL;
		int got[16], n_got = 0;
		ssize_t len = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);

		if (len < 0)
			continue;
		buf[len] = '\0';
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
				int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));

				memcpy(got + n_got, CMSG_DATA(c), (size_t)k * sizeof(int));
				n_got += k;
			}
		st->msgs++;
		for (char *line = strtok_r(buf, "\n", &save); line;
		     line = strtok_r(NULL, "\n", &save)) {
			if (!strcmp(line, "FDSTORE=1"))
				add = true;
			else if (!strcmp(line, "FDSTOREREMOVE=1"))
				remove = true;
			else if (!strncmp(line, "FDNAME=", 7))
				name = line + 7;
			else if (!strcmp(line, "WATCHDOG=1"))
				st->pings++;
		}
		if (remove) {
			st->removes++;
			/* The newest first: a buffer released right after it was made. */
			for (int i = n - 1; i >= 0; i--)
				if (!strcmp(names[i], name)) {
					close(fds[i]);
					free(names[i]);
					fds[i] = fds[n - 1];
					names[i] = names[n - 1];
					n--;
				}
		}
		for (int k = 0; k < n_got; k++) {
			if (add && n < STORE_MAX) {
				names[n] = strdup(name);
				fds[n++] = got[k];
				st->fds_kept++;
			} else {
				close(got[k]);
			}
		}
	}
}

static void store_start(struct fake_store *s, const char *tag)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int sock, size = 8 << 20;
	socklen_t len;

	snprintf(s->address, sizeof(s->address), "@dmabroker-bench-store-%s-%d", tag,
		 (int)getpid());
	memcpy(sa.sun_path + 1, s->address + 1, strlen(s->address + 1));
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(s->address));
	sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0 || bind(sock, (struct sockaddr *)&sa, len) < 0)
		die("fake fd store: cannot bind");
	setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	s->stats = mmap(NULL, sizeof(*s->stats), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			-1, 0);
	s->pid = fork();
	if (s->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		set_cpu(0, server_cpu);
		store_serve(sock, s->stats);
		_exit(0);
	}
	close(sock);
}

static struct fake_store *setup_store; /* for the daemon's pre-exec hook */

static void store_child_setup(void)
{
	char pid[32];

	setenv("NOTIFY_SOCKET", setup_store->address, 1);
	/* As WatchdogSec=20s in dmabrokerd.service: a ping every 10 s. */
	setenv("WATCHDOG_USEC", "20000000", 1);
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("WATCHDOG_PID", pid, 1);
}

/* ------------------------------------------------------------------------------------------
 * Daemons
 */

/* What differs from the shipped dmabroker.conf: all clients here are one uid (root), and the
 * scale test needs 1,000 clients and 10,000 buffers of that uid; 256 MiB buffers. */
static const char daemon_config[] = "[Limits]\n"
				    "MaxBufferSize=512M\n"
				    "MaxBytesPerClient=2G\n"
				    "MaxBuffersPerClient=2000\n"
				    "MaxBuffersPerUid=20000\n"
				    "MaxBytesPerUid=16G\n"
				    "MaxBuffersTotal=20000\n"
				    "MaxClients=5000\n"
				    "MaxClientsPerUid=2000\n";

static struct fixture d0, d1, d2; /* plain; fd store; fd store, loaded */
static struct fake_store store1, store2;

static void start_daemon(struct fixture *f, struct fake_store *store, const char *tag)
{
	static const char *const fd_store_args[] = {"--fd-store", NULL};

	if (store) {
		store_start(store, tag);
		setup_store = store;
		fixture_daemon_args = fd_store_args;
		fixture_daemon_setup = store_child_setup;
	}
	/* Everything the fixture spawns inherits the server CPU. */
	set_cpu(0, server_cpu);
	if (fixture_start(f, daemon_config) < 0)
		die("cannot start a bus and the daemon");
	set_cpu(0, client_cpu);
	fixture_daemon_args = NULL;
	fixture_daemon_setup = NULL;
}

static struct dmabroker *client_on(struct fixture *f, uint32_t flags)
{
	struct dmabroker *ctx = NULL;

	if (dmabroker_connect(&ctx, f->address, flags) < 0 ||
	    dmabroker_register(ctx, "cpu", true, "bench", NULL) < 0)
		die("cannot reach the daemon");
	return ctx;
}

/* --- broker ops --- */

struct db_arg {
	struct dmabroker *ctx, *ctx2;
	struct dmabroker_alloc_spec spec;
	struct dmabroker_buffer *held;
	unsigned count;
};

static void check(int r, struct dmabroker *ctx, const char *what)
{
	if (r < 0) {
		fprintf(stderr, "dmabroker-bench: %s: %s (%s)\n", what, strerror(-r),
			dmabroker_last_error(ctx));
		exit(1);
	}
}

static double op_allocate(void *p)
{
	struct db_arg *a = p;
	struct dmabroker_buffer *buf;
	double t0 = now_us();

	check(dmabroker_allocate(a->ctx, &a->spec, sizeof(a->spec), &buf), a->ctx, "allocate");
	t0 = now_us() - t0;
	dmabroker_release(buf);
	return t0;
}

struct async_state {
	bool done;
	int r;
	struct dmabroker_buffer *buf;
};

static void on_allocated(int r, struct dmabroker_buffer *buf, void *userdata)
{
	struct async_state *st = userdata;

	st->done = true;
	st->r = r;
	st->buf = buf;
}

/* The call, then the loop a compositor runs: poll the library's fd, dispatch. */
static double op_allocate_async(void *p)
{
	struct db_arg *a = p;
	struct async_state st = {0};
	double t0 = now_us();

	check(dmabroker_allocate_async(a->ctx, &a->spec, sizeof(a->spec), on_allocated, &st, NULL),
	      a->ctx, "allocate_async");
	while (!st.done) {
		struct pollfd pfd = {dmabroker_get_fd(a->ctx), (short)dmabroker_get_events(a->ctx),
				     0};

		if (poll(&pfd, 1, 25000) < 0 && errno != EINTR)
			die("poll");
		check(dmabroker_dispatch(a->ctx), a->ctx, "dispatch");
	}
	t0 = now_us() - t0;
	check(st.r, a->ctx, "allocate_async (done)");
	dmabroker_release(st.buf);
	return t0;
}

static double op_allocate_many(void *p)
{
	struct db_arg *a = p;
	struct dmabroker_buffer *bufs[DMABROKER_ALLOCATE_MANY_MAX];
	double t0 = now_us();

	check(dmabroker_allocate_many(a->ctx, &a->spec, sizeof(a->spec), a->count, bufs), a->ctx,
	      "allocate_many");
	t0 = now_us() - t0;
	for (unsigned k = 0; k < a->count; k++)
		dmabroker_release(bufs[k]);
	return t0;
}

/* Share by one client, import by another: two calls. */
static double op_share_import(void *p)
{
	struct db_arg *a = p;
	struct dmabroker_token token;
	struct dmabroker_buffer *got;
	double t0 = now_us();

	check(dmabroker_share(a->held, NULL, 0, &token), a->ctx, "share");
	check(dmabroker_import(a->ctx2, &token, &got), a->ctx2, "import");
	t0 = now_us() - t0;
	dmabroker_release(got);
	return t0;
}

static struct db_arg *db_arg_new(struct dmabroker *ctx, struct dmabroker *ctx2, size_t size)
{
	struct db_arg *a = calloc(1, sizeof(*a));

	a->ctx = ctx;
	a->ctx2 = ctx2;
	a->spec.size = size;
	return a;
}

static struct db_arg *db_arg_held(struct dmabroker *ctx, struct dmabroker *ctx2, size_t size)
{
	struct db_arg *a = db_arg_new(ctx, ctx2, size);

	check(dmabroker_allocate(ctx, &a->spec, sizeof(a->spec), &a->held), ctx, "allocate");
	return a;
}

static struct raw_arg *raw_arg_new(size_t size, bool held)
{
	struct raw_arg *a = calloc(1, sizeof(*a));

	a->sock = raw_connect();
	a->sock2 = raw_connect();
	a->size = size;
	if (held)
		a->held = raw_alloc_client(a->sock, size);
	return a;
}

/* ------------------------------------------------------------------------------------------
 * Concurrency: N client processes, each allocating (4 KiB, the library's default: memory
 * made in the client), sharing, importing (with a second connection) and releasing both:
 * five round trips a cycle. The same against the raw server.
 */

struct conc_shared {
	_Atomic int ready;
	_Atomic int go;
	_Atomic int finished; /* loops done (the server's CPU time is read then) */
	_Atomic int release; /* may disconnect now */
	double start[16], end[16];
	double lat[]; /* [client][call] */
};

enum conc_kind {
	CONC_RAW,
	CONC_D0,
	CONC_D1
};

#define CONC_CALLS_PER_CYCLE 5

static void conc_child(enum conc_kind kind, int me, int cycles, struct conc_shared *sh)
{
	double *lat = sh->lat + (size_t)me * cycles * CONC_CALLS_PER_CYCLE;
	struct dmabroker *a = NULL, *b = NULL;
	struct dmabroker_alloc_spec spec = {.size = 4 * KIB};
	int rs = -1, rs2 = -1, k = 0;

	if (kind == CONC_RAW) {
		rs = raw_connect();
		rs2 = raw_connect();
	} else {
		struct fixture *f = kind == CONC_D0 ? &d0 : &d1;

		a = client_on(f, 0);
		b = client_on(f, 0);
	}
	sh->ready++;
	while (!sh->go)
		sched_yield();
	sh->start[me] = now_us();
	for (int c = 0; c < cycles; c++) {
		double t[CONC_CALLS_PER_CYCLE + 1];

		t[0] = now_us();
		if (kind == CONC_RAW) {
			uint8_t token[16];
			struct raw_buf own = raw_alloc_client(rs, spec.size), got;

			t[1] = now_us();
			raw_share(rs, own, token);
			t[2] = now_us();
			got = raw_import(rs2, token);
			t[3] = now_us();
			raw_release(rs2, got);
			t[4] = now_us();
			raw_release(rs, own);
		} else {
			struct dmabroker_buffer *own, *got;
			struct dmabroker_token token;

			check(dmabroker_allocate(a, &spec, sizeof(spec), &own), a, "allocate");
			t[1] = now_us();
			check(dmabroker_share(own, NULL, 0, &token), a, "share");
			t[2] = now_us();
			check(dmabroker_import(b, &token, &got), b, "import");
			t[3] = now_us();
			check(dmabroker_release(got), b, "release");
			t[4] = now_us();
			check(dmabroker_release(own), a, "release");
		}
		t[5] = now_us();
		for (int i = 0; i < CONC_CALLS_PER_CYCLE; i++)
			lat[k++] = t[i + 1] - t[i];
	}
	sh->end[me] = now_us();
	sh->finished++;
	while (!sh->release)
		usleep(1000);
	dmabroker_disconnect(a);
	dmabroker_disconnect(b);
	_exit(0);
}

/* CPU time a process has run, in ns (/proc/PID/schedstat). */
static double cpu_ns(pid_t pid)
{
	char path[64];
	double ns = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
	f = fopen(path, "re");
	if (f) {
		if (fscanf(f, "%lf", &ns) != 1)
			ns = 0;
		fclose(f);
	}
	return ns;
}

/* One round: returns calls/s (all calls over the span from the first start to the last end);
 * appends latencies; *ret_capacity: calls per second of the server's own CPU time. */
static double conc_round(enum conc_kind kind, int n, int cycles, double *lat_out,
			 double *ret_capacity)
{
	pid_t server = kind == CONC_RAW ? raw_pid : kind == CONC_D0 ? d0.daemon_pid : d1.daemon_pid;
	double cpu0, cpu1;
	size_t n_lat = (size_t)n * cycles * CONC_CALLS_PER_CYCLE;
	size_t size = sizeof(struct conc_shared) + n_lat * sizeof(double);
	struct conc_shared *sh =
		mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t pids[16];
	double first = 1e300, last = 0;

	fflush(NULL);
	for (int i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			conc_child(kind, i, cycles, sh);
		}
	}
	while (sh->ready < n)
		usleep(1000);
	cpu0 = cpu_ns(server);
	sh->go = 1;
	while (sh->finished < n)
		usleep(200);
	cpu1 = cpu_ns(server);
	sh->release = 1;
	for (int i = 0; i < n; i++) {
		int status;

		waitpid(pids[i], &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			die("a concurrent client failed");
	}
	for (int i = 0; i < n; i++) {
		first = sh->start[i] < first ? sh->start[i] : first;
		last = sh->end[i] > last ? sh->end[i] : last;
	}
	memcpy(lat_out, sh->lat, n_lat * sizeof(double));
	munmap(sh, size);
	*ret_capacity = (double)n_lat / ((cpu1 - cpu0) / 1e9);
	return (double)n_lat / ((last - first) / 1e6);
}

static void bench_concurrency(int n, int cycles)
{
	static const char *const names[] = {"raw multi-client server", "dmabrokerd (peer)",
					    "dmabrokerd (peer), fd store on"};
	static const char *const keys[] = {"raw", "daemon", "daemon-fdstore"};
	size_t per_round = (size_t)n * cycles * CONC_CALLS_PER_CYCLE;
	double *lat[3], tput[3][MAX_ROUNDS], cap[3][MAX_ROUNDS], ignored;
	struct row *rs[3], *cs[3];
	double t0 = now_us();

	fprintf(stderr, "bench: %d concurrent clients (%d cycles of %d calls each, %d rounds)...",
		n, cycles, CONC_CALLS_PER_CYCLE, rounds);
	for (int k = 0; k < 3; k++) {
		lat[k] = calloc(per_round * (size_t)rounds, sizeof(double));
		conc_round((enum conc_kind)k, n, cycles / 4 + 1, lat[k], &ignored); /* warm-up */
	}
	for (int r = 0; r < rounds; r++)
		for (int k = 0; k < 3; k++)
			tput[k][r] = conc_round((enum conc_kind)k, n, cycles,
						lat[k] + per_round * r, &cap[k][r]);
	for (int k = 0; k < 3; k++) {
		char key[48], name[80];

		snprintf(key, sizeof(key), "conc%d-%s", n, keys[k]);
		snprintf(name, sizeof(name), "%d clients: %s", n, names[k]);
		rs[k] = new_row(key, name);
		rs[k]->unit = "calls/s";
		rs[k]->n = (long)(per_round * (size_t)rounds);
		rs[k]->p50 = quantile(lat[k], (int)rs[k]->n, 0.5);
		rs[k]->p99 = quantile(lat[k], (int)rs[k]->n, 0.99);
		rs[k]->value = quantile(tput[k], rounds, 0.5);
		if (k > 0) {
			snprintf(rs[k]->vs, sizeof(rs[k]->vs), "%s", rs[0]->key);
			for (int r = 0; r < rounds; r++)
				rs[k]->ratio[rs[k]->n_ratio++] = tput[k][r] / tput[0][r];
			/* Information: with the clients on one CPU this is bound by the clients'
			 * own work and the vCPUs' wake-ups; the target applies to the capacity. */
		}
		free(lat[k]);
	}
	/* What the server could do with the whole of its CPU: calls per CPU-second it used. */
	for (int k = 0; k < 3; k++) {
		char key[48], name[80];

		snprintf(key, sizeof(key), "conc%d-%s-capacity", n, keys[k]);
		snprintf(name, sizeof(name), "%d clients: %s per server CPU-s", n, names[k]);
		cs[k] = new_row(key, name);
		cs[k]->unit = "calls/s";
		cs[k]->p50 = rs[k]->p50;
		cs[k]->p99 = rs[k]->p99;
		cs[k]->n = rs[k]->n;
		cs[k]->value = quantile(cap[k], rounds, 0.5);
		if (k > 0) {
			snprintf(cs[k]->vs, sizeof(cs[k]->vs), "%s", cs[0]->key);
			for (int r = 0; r < rounds; r++)
				cs[k]->ratio[cs[k]->n_ratio++] = cap[k][r] / cap[0][r];
			cs[k]->goal = GOAL_GE;
			cs[k]->target = 0.8;
		}
	}
	fprintf(stderr, " %.1f s\n", (now_us() - t0) / 1e6);
}

/* ------------------------------------------------------------------------------------------
 * Scale: D2 with 10,000 buffers (10 holders) and 1,000 more idle clients, against the empty
 * D1 of the same configuration, interleaved.
 */

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

/* The size of the daemon's journal memfd (its pages are shmem: not in the daemon's RSS). */
static long journal_bytes(pid_t pid)
{
	char dir[64], path[320], link[256];
	struct dirent *e;
	long size = -1;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	d = opendir(dir);
	while (d && (e = readdir(d))) {
		struct stat st;
		ssize_t n;

		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		if (strstr(link, "memfd:dmabroker-journal") && stat(path, &st) == 0)
			size = (long)st.st_size > size ? (long)st.st_size : size;
	}
	if (d)
		closedir(d);
	return size;
}

struct scalar {
	char key[48], name[80], unit[16];
	double value, target;
	enum goal goal;
	const char *detail;
	char detail_buf[256];
};

static struct scalar scalars[8];
static int n_scalars;

static struct scalar *new_scalar(const char *key, const char *name, const char *unit, double value,
				 enum goal goal, double target)
{
	struct scalar *s = &scalars[n_scalars++];

	snprintf(s->key, sizeof(s->key), "%s", key);
	snprintf(s->name, sizeof(s->name), "%s", name);
	snprintf(s->unit, sizeof(s->unit), "%s", unit);
	s->value = value;
	s->goal = goal;
	s->target = target;
	return s;
}

static const char *scalar_met(const struct scalar *s)
{
	if (s->goal == GOAL_LE)
		return s->value <= s->target ? "met" : "NOT MET";
	if (s->goal == GOAL_GE)
		return s->value >= s->target ? "met" : "NOT MET";
	return "";
}

static void bench_scale(int idle_seconds)
{
	enum {
		CLIENTS = 1000,
		BUFFERS = 10000,
		HOLDERS = 10
	};
	struct dmabroker **idle = calloc(CLIENTS, sizeof(*idle));
	struct dmabroker *holders[HOLDERS], *a1, *b1, *a2, *b2;
	struct dmabroker_alloc_spec spec = {.size = 4 * KIB};
	long rss0, rss1, rss_c, sw0, sw1, pings0, pings1;
	double t0 = now_us();
	struct scalar *s;

	fprintf(stderr, "bench: loading D2 with %d buffers and %d clients...", BUFFERS, CLIENTS);
	rss_c = proc_status(d2.daemon_pid, "VmRSS");
	for (int i = 0; i < CLIENTS; i++) {
		if (dmabroker_connect(&idle[i], d2.address, DMABROKER_CONNECT_NO_PEER) < 0 ||
		    dmabroker_register(idle[i], "cpu", i % 2, "idle", NULL) < 0)
			die("scale: cannot register an idle client");
	}
	for (int h = 0; h < HOLDERS; h++)
		holders[h] = client_on(&d2, 0);
	rss0 = proc_status(d2.daemon_pid, "VmRSS");
	for (int h = 0; h < HOLDERS; h++)
		for (int i = 0; i < BUFFERS / HOLDERS; i++) {
			struct dmabroker_buffer *buf;

			check(dmabroker_allocate(holders[h], &spec, sizeof(spec), &buf), holders[h],
			      "scale: allocate");
		}
	rss1 = proc_status(d2.daemon_pid, "VmRSS");
	fprintf(stderr, " %.1f s\n", (now_us() - t0) / 1e6);

	s = new_scalar("memory-per-buffer", "daemon memory per buffer (RSS growth / 10,000)",
		       "bytes", (double)(rss1 - rss0) * 1024.0 / BUFFERS, GOAL_LE, 1023);
	snprintf(s->detail_buf, sizeof(s->detail_buf),
		 "VmRSS %ld KiB empty, %ld KiB with 1,010 clients, %ld KiB with 10,000 buffers; "
		 "journal memfd %ld KiB (shmem, not in RSS)",
		 rss_c, rss0, rss1, journal_bytes(d2.daemon_pid) / 1024);
	s->detail = s->detail_buf;

	a1 = client_on(&d1, 0);
	b1 = client_on(&d1, 0);
	a2 = client_on(&d2, 0);
	b2 = client_on(&d2, 0);
	{
		struct op ops[] = {
			{"alloc-4k-peer-fdstore-empty", "allocate 4 KiB, peer, fd store, empty",
			 op_allocate, db_arg_new(a1, NULL, 4 * KIB), -1, GOAL_NONE, 0, NULL},
			{"alloc-4k-peer-fdstore-10k",
			 "allocate 4 KiB, peer, 10k buffers/1k clients", op_allocate,
			 db_arg_new(a2, NULL, 4 * KIB), 0, GOAL_LE, 1.2, NULL},
			{"share-import-4k-peer-fdstore-empty",
			 "share+import 4 KiB, peer, fd store, empty", op_share_import,
			 db_arg_held(a1, b1, 4 * KIB), -1, GOAL_NONE, 0, NULL},
			{"share-import-4k-peer-fdstore-10k",
			 "share+import 4 KiB, 10k buffers/1k clients", op_share_import,
			 db_arg_held(a2, b2, 4 * KIB), 2, GOAL_LE, 1.2, NULL},
		};

		run_group("scale: 10k buffers/1k clients vs empty", ops, 4, iterations);
	}

	/*
	 * Idle: no traffic; wake-ups are context switches, less the watchdog pings. Every peer
	 * connection arms an authentication timer (PeerAuthTimeoutSec=, 5 s) that fires even
	 * when it authenticated at once: wait for those of the clients above first.
	 */
	sleep(6);
	fprintf(stderr, "bench: idle for %d s: daemon %d\n", idle_seconds, (int)d2.daemon_pid);
	sw0 = proc_status(d2.daemon_pid, "ctxt_switches");
	pings0 = store2.stats->pings;
	sleep((unsigned)idle_seconds);
	sw1 = proc_status(d2.daemon_pid, "ctxt_switches");
	pings1 = store2.stats->pings;
	s = new_scalar("idle-wakeups", "daemon wake-ups idle beyond the watchdog ping", "",
		       (double)((sw1 - sw0) - (pings1 - pings0)), GOAL_LE, 0);
	snprintf(s->detail_buf, sizeof(s->detail_buf),
		 "%ld context switches in %d s with 1,012 clients and 10,000 buffers, %ld of them "
		 "watchdog pings (WATCHDOG_USEC=20 s)",
		 sw1 - sw0, idle_seconds, pings1 - pings0);
	s->detail = s->detail_buf;

	dmabroker_disconnect(a1);
	dmabroker_disconnect(b1);
	dmabroker_disconnect(a2);
	dmabroker_disconnect(b2);
	for (int h = 0; h < HOLDERS; h++)
		dmabroker_disconnect(holders[h]);
	for (int i = 0; i < CLIENTS; i++)
		dmabroker_disconnect(idle[i]);
	free(idle);
}

/* ------------------------------------------------------------------------------------------
 * Output
 */

static char machine[600], kernel[256], backend[64], placement[200];
static int n_cpus;
static double load_start[3], load_end[3];

static void describe_machine(void)
{
	struct utsname u;
	FILE *f = fopen("/proc/cpuinfo", "re");
	char line[512];
	long mem_kb = 0;

	snprintf(machine, sizeof(machine), "unknown CPU");
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "model name", 10)) {
			char *p = strchr(line, ':');

			p = p ? p + 2 : line;
			p[strcspn(p, "\n")] = '\0';
			snprintf(machine, sizeof(machine), "%s", p);
			break;
		}
	if (f)
		fclose(f);
	f = fopen("/proc/meminfo", "re");
	if (f && fgets(line, sizeof(line), f))
		sscanf(line, "MemTotal: %ld", &mem_kb);
	if (f)
		fclose(f);
	n_cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
	snprintf(machine + strlen(machine), sizeof(machine) - strlen(machine),
		 ", %d CPUs online, %.1f GiB", n_cpus, (double)mem_kb / 1048576.0);
	uname(&u);
	snprintf(kernel, sizeof(kernel), "%s %s %s", u.sysname, u.release, u.machine);
	if (pin)
		snprintf(placement, sizeof(placement),
			 "clients on CPU %d; raw server, dmabrokerd, dbus-daemon, fd store on CPU "
			 "%d",
			 client_cpu, server_cpu);
	else
		snprintf(placement, sizeof(placement), "not pinned");
}

static void print_row(const struct row *r)
{
	char ratio[24] = "", spread[32] = "", target[16] = "", value[24] = "";

	if (r->n_ratio) {
		snprintf(ratio, sizeof(ratio), "%.2fx", ratio_median(r));
		snprintf(spread, sizeof(spread), "%.2f-%.2f", ratio_min(r), ratio_max(r));
	}
	if (r->goal != GOAL_NONE)
		snprintf(target, sizeof(target), "%s %.2fx",
			 r->goal == GOAL_LE ? "<=" : ">=", r->target);
	if (!strcmp(r->unit, "calls/s"))
		snprintf(value, sizeof(value), "%.0f/s", r->value);
	printf("%-56s %9.1f %9.1f %9s %7s %-11s %-28s %-9s %s\n", r->name, r->p50, r->p99, value,
	       ratio, spread, r->vs, target, r->info ? "(info)" : met(r));
}

static void print_tables(const char *config_note)
{
	printf("\ndmabroker-bench\n");
	printf("machine:   %s\n", machine);
	printf("kernel:    %s\n", kernel);
	printf("backend:   %s\n", backend);
	printf("placement: %s\n", placement);
	printf("method:    %d rounds, interleaved (A B ... A B ...); %d calls per op per round "
	       "after %d warm-up calls; ratio = median over rounds of (median of the round / "
	       "median of the baseline's round), spread = min-max over rounds\n",
	       rounds, iterations, warmup);
	printf("load:      %.2f %.2f %.2f at start, %.2f %.2f %.2f at end\n", load_start[0],
	       load_start[1], load_start[2], load_end[0], load_end[1], load_end[2]);
	printf("daemon:    %s\n", config_note);
	printf("\n%-56s %9s %9s %9s %7s %-11s %-28s %-9s %s\n", "measure", "p50 us", "p99 us",
	       "calls/s", "ratio", "spread", "vs", "target", "met");
	for (int i = 0; i < n_rows; i++)
		print_row(&rows[i]);
	for (int i = 0; i < n_scalars; i++) {
		const struct scalar *s = &scalars[i];

		printf("%-56s %9.0f %-9s %s %.0f %s  %s\n", s->name, s->value, s->unit,
		       s->goal == GOAL_LE ? "<=" : ">=", s->target, scalar_met(s), s->detail);
	}
}

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void write_json(const char *path, bool guest, const char *config_note)
{
	FILE *f = fopen(path, "we");

	if (!f) {
		perror(path);
		return;
	}
	fprintf(f, "{\n  \"version\": 1,\n  \"machine\": ");
	json_string(f, machine);
	fprintf(f, ",\n  \"kernel\": ");
	json_string(f, kernel);
	fprintf(f, ",\n  \"backend\": ");
	json_string(f, backend);
	fprintf(f, ",\n  \"placement\": ");
	json_string(f, placement);
	fprintf(f, ",\n  \"daemon_config\": ");
	json_string(f, config_note);
	fprintf(f,
		",\n  \"guest\": %s,\n  \"rounds\": %d,\n  \"iterations\": %d,\n"
		"  \"warmup\": %d,\n  \"time\": %ld,\n",
		guest ? "true" : "false", rounds, iterations, warmup, (long)time(NULL));
	fprintf(f, "  \"load\": [%.2f, %.2f],\n  \"rows\": [\n", load_start[0], load_end[0]);
	for (int i = 0; i < n_rows; i++) {
		const struct row *r = &rows[i];

		fprintf(f, "    {\"key\": ");
		json_string(f, r->key);
		fprintf(f, ", \"name\": ");
		json_string(f, r->name);
		fprintf(f,
			", \"unit\": \"%s\", \"value\": %.3f, \"p50_us\": %.3f, \"p99_us\": %.3f,"
			" \"n\": %ld",
			r->unit, r->value, r->p50, r->p99, r->n);
		if (r->n_ratio) {
			fprintf(f, ", \"vs\": ");
			json_string(f, r->vs);
			fprintf(f,
				", \"ratio\": %.4f, \"ratio_min\": %.4f, \"ratio_max\": %.4f, "
				"\"ratios\": [",
				ratio_median(r), ratio_min(r), ratio_max(r));
			for (int k = 0; k < r->n_ratio; k++)
				fprintf(f, "%s%.4f", k ? ", " : "", r->ratio[k]);
			fprintf(f, "]");
		}
		if (r->goal != GOAL_NONE)
			fprintf(f, ", \"goal\": \"%s\", \"target\": %.3f, \"met\": %s",
				r->goal == GOAL_LE ? "le" : "ge", r->target,
				!strcmp(met(r), "met") ? "true" : "false");
		fprintf(f, "}%s\n", i + 1 < n_rows || n_scalars ? "," : "");
	}
	for (int i = 0; i < n_scalars; i++) {
		const struct scalar *s = &scalars[i];

		fprintf(f, "    {\"key\": ");
		json_string(f, s->key);
		fprintf(f, ", \"name\": ");
		json_string(f, s->name);
		fprintf(f,
			", \"unit\": \"%s\", \"value\": %.3f, \"goal\": \"%s\", \"target\": %.3f, "
			"\"met\": %s, \"detail\": ",
			s->unit, s->value, s->goal == GOAL_LE ? "le" : "ge", s->target,
			!strcmp(scalar_met(s), "met") ? "true" : "false");
		json_string(f, s->detail ? s->detail : "");
		fprintf(f, "}%s\n", i + 1 < n_scalars ? "," : "");
	}
	fprintf(f, "  ]\n}\n");
	fclose(f);
}

/* ------------------------------------------------------------------------------------------
 * --profile: one kind of call, N times, between two markers strace can see
 * (access("/dmabroker-bench-begin") and access("/dmabroker-bench-end")).
 */

static int profile(const char *what, int calls, int idle_peers)
{
	bool fdstore = strstr(what, "fdstore") != NULL;
	bool is_raw = !strncmp(what, "raw-", 4);
	struct dmabroker *a = NULL, *b = NULL;
	struct raw_arg *ra = NULL;
	struct db_arg *da = NULL;
	op_fn fn = NULL;
	void *arg;

	if (is_raw)
		raw_start();
	else
		start_daemon(&d0, fdstore ? &store1 : NULL, "p");
	fprintf(stderr, "profile pids: client %d raw-server %d daemon %d bus %d store %d\n",
		(int)getpid(), (int)raw_pid, (int)d0.daemon_pid, (int)d0.bus_pid, (int)store1.pid);
	if (!is_raw) {
		uint32_t flags = strstr(what, "bus-") ? DMABROKER_CONNECT_NO_PEER : 0;

		if (strstr(what, "daemon-memory"))
			flags |= DMABROKER_CONNECT_DAEMON_MEMORY;
		a = client_on(&d0, flags);
		b = client_on(&d0, flags);
		/* Other clients' peer connections, open and quiet: what each call pays for them. */
		for (int i = 0; i < idle_peers; i++)
			(void)client_on(&d0, 0);
	}
	if (!strcmp(what, "raw-alloc")) {
		fn = op_raw_alloc_client;
		ra = raw_arg_new(4 * KIB, false);
	} else if (!strcmp(what, "raw-alloc-server")) {
		fn = op_raw_alloc_server;
		ra = raw_arg_new(4 * KIB, false);
	} else if (!strcmp(what, "raw-get")) {
		fn = op_raw_get;
		ra = raw_arg_new(4 * KIB, true);
	} else if (!strcmp(what, "raw-share-import")) {
		fn = op_raw_share_import;
		ra = raw_arg_new(4 * KIB, true);
	} else if (strstr(what, "-share-import")) {
		fn = op_share_import;
		da = db_arg_held(a, b, 4 * KIB);
	} else if (strstr(what, "-alloc-async")) {
		fn = op_allocate_async;
		da = db_arg_new(a, NULL, 4 * KIB);
	} else if (strstr(what, "-alloc")) {
		fn = op_allocate;
		da = db_arg_new(a, NULL, 4 * KIB);
	} else {
		fprintf(stderr,
			"--profile: raw-alloc, raw-alloc-server, raw-get, raw-share-import, "
			"{peer,bus}-alloc[-daemon-memory|-fdstore|-async], "
			"{peer,bus}-share-import[-fdstore]\n");
		return 2;
	}
	arg = ra ? (void *)ra : (void *)da;
	for (int i = 0; i < 20; i++)
		fn(arg);
	(void)!access("/dmabroker-bench-begin", F_OK);
	for (int i = 0; i < calls; i++)
		fn(arg);
	(void)!access("/dmabroker-bench-end", F_OK);
	if (!is_raw)
		fixture_stop(&d0);
	if (raw_pid > 0) {
		kill(raw_pid, SIGTERM);
		waitpid(raw_pid, NULL, 0);
	}
	if (store1.pid > 0) {
		kill(store1.pid, SIGKILL);
		waitpid(store1.pid, NULL, 0);
	}
	return 0;
}

/* ------------------------------------------------------------------------------------------ */

static const char *arg_value(const char *a, const char *name)
{
	size_t n = strlen(name);

	return !strncmp(a, name, n) && a[n] == '=' ? a + n + 1 : NULL;
}

int main(int argc, char **argv)
{
	bool scale = true, concurrency = true, calls_rows = true, guest = false, awake = false;
	const char *json = NULL, *prof = NULL, *v;
	int calls = 1000, idle_seconds = 10, idle_peers = 0;
	char config_note[512];
	struct rlimit rl;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			rounds = 7;
			iterations = 60;
			warmup = 20;
			idle_seconds = 3;
		} else if (!strcmp(argv[i], "--no-scale")) {
			scale = false;
		} else if (!strcmp(argv[i], "--no-concurrency")) {
			concurrency = false;
		} else if (!strcmp(argv[i], "--no-calls")) {
			calls_rows = false;
		} else if (!strcmp(argv[i], "--guest")) {
			guest = true;
		} else if (!strcmp(argv[i], "--no-pin")) {
			pin = false;
		} else if (!strcmp(argv[i], "--keep-awake")) {
			awake = true;
		} else if ((v = arg_value(argv[i], "--rounds"))) {
			rounds = atoi(v);
		} else if ((v = arg_value(argv[i], "--iterations"))) {
			iterations = atoi(v);
		} else if ((v = arg_value(argv[i], "--json"))) {
			json = v;
		} else if ((v = arg_value(argv[i], "--client-cpu"))) {
			client_cpu = atoi(v);
		} else if ((v = arg_value(argv[i], "--server-cpu"))) {
			server_cpu = atoi(v);
		} else if ((v = arg_value(argv[i], "--profile"))) {
			prof = v;
		} else if ((v = arg_value(argv[i], "--calls"))) {
			calls = atoi(v);
		} else if ((v = arg_value(argv[i], "--idle-peers"))) {
			idle_peers = atoi(v);
		} else {
			fprintf(stderr, "usage: dmabroker-bench [--quick] [--rounds=N] "
					"[--iterations=N] [--no-scale] [--no-concurrency] "
					"[--json=FILE] [--client-cpu=N] [--server-cpu=N] "
					"[--no-pin] [--keep-awake] [--no-calls] [--guest] "
					"[--profile=OP [--calls=N] [--idle-peers=N]]\n");
			return 2;
		}
	}
	if (rounds < 7 || rounds > MAX_ROUNDS)
		die("--rounds: 7 to 64");
	signal(SIGPIPE, SIG_IGN);
	/* 10,000 buffers are 10,000 fds in the daemon; 1,000 clients as many connections here. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2 || client_cpu == server_cpu)
		pin = false;
	set_cpu(0, client_cpu);
	fixture_bus_limits = "  <limit name=\"max_connections_per_user\">4096</limit>\n"
			     "  <limit name=\"max_completed_connections\">4096</limit>\n";
	if (prof)
		return profile(prof, calls, idle_peers);

	getloadavg(load_start, 3);
	describe_machine();
	if (awake && pin) {
		keep_awake();
		snprintf(placement + strlen(placement), sizeof(placement) - strlen(placement),
			 "; a SCHED_IDLE spinner on each (--keep-awake)");
	}
	raw_start();
	start_daemon(&d0, NULL, "d0");
	start_daemon(&d1, &store1, "d1");
	if (scale)
		start_daemon(&d2, &store2, "d2");
	snprintf(config_note, sizeof(config_note),
		 "shipped defaults except the per-uid and per-client limits (every client here "
		 "is root): %s; D0 without --fd-store; D1/D2 with --fd-store (a fake fd store on "
		 "NOTIFY_SOCKET keeps the fds), WATCHDOG_USEC=20 s as under the unit",
		 "MaxBufferSize=512M MaxBytesPerClient=2G MaxBuffersPerClient=2000 "
		 "MaxBuffersPerUid=20000 MaxBytesPerUid=16G MaxBuffersTotal=20000 MaxClients=5000 "
		 "MaxClientsPerUid=2000");

	{
		struct dmabroker *c = client_on(&d0, 0);
		struct dmabroker_buffer *probe;
		struct dmabroker_alloc_spec spec = {.size = 4 * KIB};

		check(dmabroker_allocate(c, &spec, sizeof(spec), &probe), c, "allocate");
		snprintf(backend, sizeof(backend), "%s%s", dmabroker_buffer_get_backend(probe),
			 dmabroker_buffer_is_dmabuf(probe) ? " (dma-buf)"
							   : " (no udmabuf: not a dma-buf)");
		dmabroker_release(probe);
		dmabroker_disconnect(c);
	}
	if (calls_rows) {
		struct dmabroker *p0 = client_on(&d0, 0), *p0b = client_on(&d0, 0);
		struct dmabroker *bus0 = client_on(&d0, DMABROKER_CONNECT_NO_PEER);
		struct dmabroker *bus0b = client_on(&d0, DMABROKER_CONNECT_NO_PEER);
		struct dmabroker *dm0 = client_on(&d0, DMABROKER_CONNECT_DAEMON_MEMORY);
		struct dmabroker *dmbus0 =
			client_on(&d0, DMABROKER_CONNECT_DAEMON_MEMORY | DMABROKER_CONNECT_NO_PEER);
		struct dmabroker *p1 = client_on(&d1, 0), *p1b = client_on(&d1, 0);
		struct dmabroker *bus1 = client_on(&d1, DMABROKER_CONNECT_NO_PEER);

		/* 1. Allocation of 4 KiB: the per-call cost, where the IPC is most of it. */
		{
			struct op ops[] = {
				{"raw-alloc-4k", "raw: client memfd -> server -> fd (baseline)",
				 op_raw_alloc_client, raw_arg_new(4 * KIB, false), -1, GOAL_NONE, 0,
				 NULL},
				{"raw-alloc-server-4k", "raw: server makes the memfd",
				 op_raw_alloc_server, raw_arg_new(4 * KIB, false), 0, GOAL_NONE, 0,
				 NULL},
				{"alloc-4k-peer", "allocate 4 KiB, library default (peer)",
				 op_allocate, db_arg_new(p0, NULL, 4 * KIB), 0, GOAL_LE, 1.15,
				 NULL},
				{"alloc-4k-peer-async", "allocate 4 KiB, peer, async + dispatch",
				 op_allocate_async, db_arg_new(p0, NULL, 4 * KIB), 0, GOAL_LE, 1.15,
				 NULL},
				{"alloc-4k-bus", "allocate 4 KiB, through dbus-daemon", op_allocate,
				 db_arg_new(bus0, NULL, 4 * KIB), 0, GOAL_LE, 1.8, NULL},
				{"alloc-4k-peer-fdstore", "allocate 4 KiB, peer, fd store on",
				 op_allocate, db_arg_new(p1, NULL, 4 * KIB), 0, GOAL_LE, 1.15,
				 NULL},
				{"alloc-4k-bus-fdstore", "allocate 4 KiB, dbus-daemon, fd store on",
				 op_allocate, db_arg_new(bus1, NULL, 4 * KIB), 0, GOAL_LE, 1.8,
				 NULL},
			};

			run_group("allocate 4 KiB", ops, 7, iterations);
		}
		/* The journal's cost: fd store on against off, same rounds. */
		{
			struct op ops[] = {
				{"alloc-4k-peer-d0", "allocate 4 KiB, peer, fd store off",
				 op_allocate, db_arg_new(p0, NULL, 4 * KIB), -1, GOAL_NONE, 0,
				 NULL},
				{"alloc-4k-peer-fdstore-vs-off",
				 "allocate 4 KiB, peer, fd store on vs off", op_allocate,
				 db_arg_new(p1, NULL, 4 * KIB), 0, GOAL_NONE, 0, NULL},
				{"share-import-4k-peer-d0",
				 "share+import 4 KiB, peer, fd store off", op_share_import,
				 db_arg_held(p0, p0b, 4 * KIB), -1, GOAL_NONE, 0, NULL},
				{"share-import-4k-peer-fdstore-vs-off",
				 "share+import 4 KiB, peer, fd store on vs off", op_share_import,
				 db_arg_held(p1, p1b, 4 * KIB), 2, GOAL_NONE, 0, NULL},
			};

			run_group("fd store on vs off", ops, 4, iterations);
		}
		/* 2. The daemon's own memory (DMABROKER_CONNECT_DAEMON_MEMORY) vs the raw server
		 * making the memfd. */
		{
			struct op ops[] = {
				{"raw-alloc-server-4k-b", "raw: server makes the memfd (baseline)",
				 op_raw_alloc_server, raw_arg_new(4 * KIB, false), -1, GOAL_NONE, 0,
				 NULL},
				{"alloc-4k-peer-daemon-memory",
				 "allocate 4 KiB, peer, daemon memory", op_allocate,
				 db_arg_new(dm0, NULL, 4 * KIB), 0, GOAL_LE, 1.15, NULL},
				{"alloc-4k-bus-daemon-memory",
				 "allocate 4 KiB, dbus-daemon, daemon memory", op_allocate,
				 db_arg_new(dmbus0, NULL, 4 * KIB), 0, GOAL_LE, 1.8, NULL},
				{"alloc-many-8", "AllocateMany of 8 x 4 KiB, peer (vs one)",
				 op_allocate_many,
				 &(struct db_arg){
					 .ctx = dm0, .spec = {.size = 4 * KIB}, .count = 8},
				 1, GOAL_LE, 3.0, NULL},
			};

			run_group("daemon memory, AllocateMany", ops, 4, iterations);
		}
		/* 3. 4 MiB: the client's fallocate (zeroing 1,024 pages) dominates. */
		{
			struct op ops[] = {
				{"raw-alloc-4m", "raw 4 MiB: client memfd (baseline)",
				 op_raw_alloc_client, raw_arg_new(4 * MIB, false), -1, GOAL_NONE, 0,
				 NULL},
				{"alloc-4m-peer", "allocate 4 MiB, library default (peer)",
				 op_allocate, db_arg_new(p0, NULL, 4 * MIB), 0, GOAL_LE, 1.15,
				 NULL},
				{"alloc-4m-bus", "allocate 4 MiB, through dbus-daemon", op_allocate,
				 db_arg_new(bus0, NULL, 4 * MIB), 0, GOAL_LE, 1.8, NULL},
			};

			run_group("allocate 4 MiB", ops, 3,
				  iterations / 4 > 10 ? iterations / 4 : 10);
		}
		/* 4. Share + import: two calls against one raw round trip carrying an fd. */
		{
			struct op ops[] = {
				{"raw-get-4k", "raw: one round trip returning an fd (baseline)",
				 op_raw_get, raw_arg_new(4 * KIB, true), -1, GOAL_NONE, 0, NULL},
				{"raw-share-import-4k", "raw: share + import (two round trips)",
				 op_raw_share_import, raw_arg_new(4 * KIB, true), 0, GOAL_NONE, 0,
				 NULL},
				{"share-import-4k-peer", "share+import 4 KiB, peer",
				 op_share_import, db_arg_held(p0, p0b, 4 * KIB), 0, GOAL_LE, 2.3,
				 NULL},
				{"share-import-4k-bus", "share+import 4 KiB, through dbus-daemon",
				 op_share_import, db_arg_held(bus0, bus0b, 4 * KIB), 0, GOAL_NONE,
				 0, NULL},
				{"share-import-4k-peer-fdstore",
				 "share+import 4 KiB, peer, fd store on", op_share_import,
				 db_arg_held(p1, p1b, 4 * KIB), 0, GOAL_LE, 2.3, NULL},
			};

			run_group("share + import", ops, 5, iterations);
		}
		/* 5. Zero copy: 256 MiB against 4 KiB. */
		{
			struct op ops[] = {
				{"share-import-4k-zc", "share+import 4 KiB, peer", op_share_import,
				 db_arg_held(p0, p0b, 4 * KIB), -1, GOAL_NONE, 0, NULL},
				{"share-import-256m", "share+import 256 MiB vs 4 KiB",
				 op_share_import, db_arg_held(p0, p0b, 256 * MIB), 0, GOAL_LE, 1.1,
				 NULL},
			};

			run_group("zero copy", ops, 2, iterations / 2);
			dmabroker_release(((struct db_arg *)ops[1].arg)->held);
		}
		dmabroker_disconnect(p0);
		dmabroker_disconnect(p0b);
		dmabroker_disconnect(bus0);
		dmabroker_disconnect(bus0b);
		dmabroker_disconnect(dm0);
		dmabroker_disconnect(dmbus0);
		dmabroker_disconnect(p1);
		dmabroker_disconnect(p1b);
		dmabroker_disconnect(bus1);
	}

	if (concurrency) {
		/* The same number of calls in every round: 10 x iterations, over all clients. */
		int calls_per_round = iterations * 10;

		bench_concurrency(1, calls_per_round / CONC_CALLS_PER_CYCLE);
		bench_concurrency(4, calls_per_round / CONC_CALLS_PER_CYCLE / 4);
		bench_concurrency(16, calls_per_round / CONC_CALLS_PER_CYCLE / 16);
	}
	if (scale)
		bench_scale(idle_seconds);

	if (guest)
		for (int i = 0; i < n_rows; i++)
			rows[i].info = true;
	getloadavg(load_end, 3);
	print_tables(config_note);
	fflush(stdout);
	if (json)
		write_json(json, guest, config_note);
	if (scale)
		fixture_stop(&d2);
	fixture_stop(&d1);
	fixture_stop(&d0);
	if (raw_pid > 0) {
		kill(raw_pid, SIGKILL);
		waitpid(raw_pid, NULL, 0);
	}
	for (int i = 0; i < 2; i++)
		if (spinners[i] > 0) {
			kill(spinners[i], SIGKILL);
			waitpid(spinners[i], NULL, 0);
		}
	for (struct fake_store *s = &store1; s; s = s == &store1 ? &store2 : NULL)
		if (s->pid > 0) {
			kill(s->pid, SIGKILL);
			waitpid(s->pid, NULL, 0);
		}
	return 0;
}
