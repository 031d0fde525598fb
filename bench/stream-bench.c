// SPDX-License-Identifier: MIT
/*
 * stream-bench: what a stream's frame path costs over exchanging the same records yourself.
 *
 *   stream-bench [--quick] [--rounds=N] [--iterations=N] [--frames=N]
 *                [--producer-cpu=N --consumer-cpu=N | --no-pin]
 *
 * Rows (docs/benchmarks.md), each timed against its baseline in the same interleaved rounds:
 *   frame      the producer queues a frame, the consumer's frame callback releases it, the
 *              producer's buffer_returned runs; against a raw SOCK_SEQPACKET ping-pong of the
 *              same records (a FRAME of the wire format out, a RELEASE back) in which each side
 *              polls, receives and checks the record as the library does (every field, and
 *              that a descriptor is a sync_file).
 *   fence      the same with a sync_file each way (acquire with the frame, release with the
 *              release), against the raw records carrying the same descriptors. The sync_files
 *              come from a vgem fence (DRM_IOCTL_VGEM_FENCE_ATTACH, EXPORT_SYNC_FILE, signal):
 *              without vgem (a host) these rows are not run, and the output says so.
 *   fan-out    one frame to 4 consumers, back when all 4 released it, against the raw records
 *              to 4 peers.
 *   daemon     dmabrokerd's voluntary context switches and CPU ticks (/proc/PID/status, stat)
 *              over --frames frames (10,000), beside the same over an idle time as long.
 * The producer (this process) runs on --producer-cpu, every consumer (stream or raw) on
 * --consumer-cpu; dbus-daemon and dmabrokerd on the consumer CPU too. p50 and p99 are over
 * every timed frame of a row; a row's ratio is the median over rounds of its median over the
 * baseline's median in the same round, with the spread (min-max). No assertion: figures.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/dma-buf.h>
#include <linux/sync_file.h>
#include <xf86drm.h>

#include "dmabroker.h"
#include "dmabroker-wire.h"
#include "fixture.h"

#define MAX_ROUNDS 64
#define FAN_OUT 4
#define N_BUFFERS 4

static int rounds = 9;
static int iterations = 200;
static int warmup = 50;
static int daemon_frames = 10000;
static int producer_cpu = 0, consumer_cpu = 1;
static bool pin = true;

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

__attribute__((noreturn)) static void die(const char *what, int r)
{
	fprintf(stderr, "stream-bench: %s: %s\n", what, strerror(r < 0 ? -r : r));
	exit(1);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double quantile(const double *v, int n, double q)
{
	double *c = malloc(sizeof(double) * (size_t)n), r;

	if (!c)
		die("quantile", ENOMEM);
	memcpy(c, v, sizeof(double) * (size_t)n);
	qsort(c, (size_t)n, sizeof(double), cmp_double);
	r = c[(int)(q * (n - 1) + 0.5)];
	free(c);
	return r;
}

static void set_cpu(int cpu)
{
	cpu_set_t set;

	if (!pin)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		die("sched_setaffinity", errno);
}

/* --- sync_files from a vgem fence --- */

struct vgem_fence_attach {
	uint32_t handle;
	uint32_t flags;
	uint32_t out_fence;
	uint32_t pad;
};

struct vgem_fence_signal {
	uint32_t fence;
	uint32_t flags;
};

#define VGEM_FENCE_WRITE 0x1
#define IOCTL_VGEM_FENCE_ATTACH DRM_IOWR(DRM_COMMAND_BASE + 0x1, struct vgem_fence_attach)
#define IOCTL_VGEM_FENCE_SIGNAL DRM_IOW(DRM_COMMAND_BASE + 0x2, struct vgem_fence_signal)

/* A sync_file holding a (signalled) vgem fence, or -errno (no vgem: a host). */
static int vgem_sync_file(void)
{
	struct drm_mode_create_dumb dumb = {.width = 64, .height = 64, .bpp = 32};
	struct dma_buf_export_sync_file exp = {.flags = DMA_BUF_SYNC_READ, .fd = -1};
	struct vgem_fence_attach attach = {.flags = VGEM_FENCE_WRITE};
	struct vgem_fence_signal signal = {0};
	int card = -ENODEV, prime = -1;

	for (int i = 0; i < 16 && card < 0; i++) {
		char path[32];
		drmVersionPtr v;

		snprintf(path, sizeof(path), "/dev/dri/card%d", i);
		card = open(path, O_RDWR | O_CLOEXEC);
		if (card < 0) {
			card = -ENODEV;
			continue;
		}
		v = drmGetVersion(card);
		if (!v || strcmp(v->name, "vgem") != 0) {
			close(card);
			card = -ENODEV;
		}
		if (v)
			drmFreeVersion(v);
	}
	if (card < 0)
		return card;
	if (drmIoctl(card, DRM_IOCTL_MODE_CREATE_DUMB, &dumb) < 0 ||
	    drmPrimeHandleToFD(card, dumb.handle, DRM_CLOEXEC | DRM_RDWR, &prime) < 0)
		die("a vgem buffer", errno);
	attach.handle = dumb.handle;
	if (drmIoctl(card, IOCTL_VGEM_FENCE_ATTACH, &attach) < 0)
		die("DRM_IOCTL_VGEM_FENCE_ATTACH", errno);
	if (ioctl(prime, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, &exp) < 0)
		die("DMA_BUF_IOCTL_EXPORT_SYNC_FILE", errno);
	signal.fence = attach.out_fence;
	if (drmIoctl(card, IOCTL_VGEM_FENCE_SIGNAL, &signal) < 0)
		die("DRM_IOCTL_VGEM_FENCE_SIGNAL", errno);
	close(prime);
	close(card);
	return exp.fd;
}

/* Is fd a sync_file? The check a link's receiver makes on every descriptor. */
static bool is_sync_file(int fd)
{
	struct sync_file_info info = {0};

	return ioctl(fd, SYNC_IOC_FILE_INFO, &info) == 0;
}

/* --- the raw protocol: the wire records over a socket pair, each checked --- */

static ssize_t send_record(int sock, const void *p, size_t len, int fd)
{
	char control[CMSG_SPACE(sizeof(int))] = {0};
	struct iovec iov = {(void *)p, len};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

	if (fd >= 0) {
		struct cmsghdr *c;

		msg.msg_control = control;
		msg.msg_controllen = sizeof(control);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	return sendmsg(sock, &msg, MSG_NOSIGNAL);
}

/* Waits for and receives one record (poll, as an event loop does); *ret_fd: -1 or the one
 * descriptor; -EBADMSG for anything else. */
static ssize_t recv_record(int sock, void *p, size_t len, int *ret_fd)
{
	char control[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov = {p, len};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control,
			     .msg_controllen = sizeof(control)};
	struct pollfd pfd = {sock, POLLIN, 0};
	struct cmsghdr *c;
	ssize_t n;

	*ret_fd = -1;
	if (poll(&pfd, 1, -1) < 0)
		return -errno;
	n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0)
		return -errno;
	if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
		return -EBADMSG;
	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len != CMSG_LEN(sizeof(int)) || *ret_fd >= 0)
			return -EBADMSG;
		memcpy(ret_fd, CMSG_DATA(c), sizeof(int));
	}
	return n;
}

static bool header_ok(const struct dmabroker_wire_header *h, uint16_t type, size_t size, ssize_t n)
{
	return n == (ssize_t)size && h->version == DMABROKER_WIRE_VERSION && h->type == type &&
	       h->size == size;
}

static bool zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* The raw consumer: every FRAME checked, answered by a RELEASE (with its own sync_file when
 * the frame had one). Runs until its socket closes. */
static void raw_consumer(int sock, int release_fence)
{
	uint64_t last_seq = 0;

	for (;;) {
		struct dmabroker_wire_frame f;
		struct dmabroker_wire_release rel = {
			.header = {DMABROKER_WIRE_VERSION, DMABROKER_WIRE_RELEASE, sizeof(rel)}};
		int fd;
		ssize_t n = recv_record(sock, &f, sizeof(f), &fd);
		bool fence;

		if (n == 0)
			_exit(0);
		fence = f.flags & DMABROKER_WIRE_FENCE;
		if (n < 0 || !header_ok(&f.header, DMABROKER_WIRE_FRAME, sizeof(f), n) ||
		    (f.flags & ~DMABROKER_WIRE_FRAME_FLAGS) || f.index >= N_BUFFERS ||
		    f.seq <= last_seq || f.meta_size > DMABROKER_WIRE_META_MAX ||
		    !zero(f.meta + f.meta_size, DMABROKER_WIRE_META_MAX - f.meta_size) ||
		    fence != (fd >= 0) || (fd >= 0 && !is_sync_file(fd)))
			_exit(2);
		last_seq = f.seq;
		if (fd >= 0)
			close(fd);
		rel.index = f.index;
		rel.seq = f.seq;
		rel.flags = fence ? DMABROKER_WIRE_FENCE : 0;
		if (send_record(sock, &rel, sizeof(rel), fence ? release_fence : -1) < 0)
			_exit(3);
	}
}

struct raw {
	int sock[FAN_OUT];
	pid_t pid[FAN_OUT];
	int n;
	uint64_t seq;
	uint32_t index;
	int fence; /* sent with every frame, or -1 */
};

static void raw_start(struct raw *r, int n, int release_fence)
{
	*r = (struct raw){.n = n, .fence = -1};
	for (int i = 0; i < n; i++) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
			die("socketpair", errno);
		r->pid[i] = fork();
		if (r->pid[i] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			close(sv[0]);
			set_cpu(consumer_cpu);
			raw_consumer(sv[1], release_fence);
		}
		close(sv[1]);
		r->sock[i] = sv[0];
	}
}

/* Each peer holds the sockets of those forked before it: close them all, then wait. */
static void raw_stop(struct raw *r)
{
	for (int i = 0; i < r->n; i++)
		close(r->sock[i]);
	for (int i = 0; i < r->n; i++)
		waitpid(r->pid[i], NULL, 0);
}

static double raw_frame(struct raw *r)
{
	struct dmabroker_wire_frame f = {
		.header = {DMABROKER_WIRE_VERSION, DMABROKER_WIRE_FRAME, sizeof(f)},
		.index = r->index,
		.flags = r->fence >= 0 ? DMABROKER_WIRE_FENCE : 0,
		.seq = ++r->seq,
		.meta_type = DMABROKER_WIRE_META_OPAQUE,
		.meta_size = 16,
	};
	double t0 = now_us();

	f.timestamp_ns = (uint64_t)(t0 * 1e3);
	memcpy(f.meta, &f.seq, sizeof(f.seq));
	for (int i = 0; i < r->n; i++)
		if (send_record(r->sock[i], &f, sizeof(f), r->fence) < 0)
			die("raw send", errno);
	for (int i = 0; i < r->n; i++) {
		struct dmabroker_wire_release rel;
		int fd;
		ssize_t n = recv_record(r->sock[i], &rel, sizeof(rel), &fd);

		if (n < 0 || !header_ok(&rel.header, DMABROKER_WIRE_RELEASE, sizeof(rel), n) ||
		    rel.index != f.index || rel.seq != f.seq ||
		    (rel.flags & ~DMABROKER_WIRE_RELEASE_FLAGS) ||
		    !(rel.flags & DMABROKER_WIRE_FENCE) != (fd < 0) ||
		    (fd >= 0 && !is_sync_file(fd)))
			die("a raw release did not check", EBADMSG);
		if (fd >= 0)
			close(fd);
	}
	r->index = (r->index + 1) % N_BUFFERS;
	return now_us() - t0;
}

/* --- the stream --- */

static const char *bus_address;

static void on_consumer_frame(struct dmabroker_stream *s, const struct dmabroker_frame *f,
			      void *userdata)
{
	int release_fence = *(int *)userdata;
	int r;

	r = dmabroker_stream_release(s, f->index, f->acquire_fence >= 0 ? release_fence : -1);
	if (r < 0)
		die("release", r);
}

static void on_consumer_ended(struct dmabroker_stream *s, const char *reason, void *userdata)
{
	_exit(0);
}

static struct dmabroker *connect_client(const char *name)
{
	struct dmabroker *ctx = NULL;
	int r;

	r = dmabroker_connect(&ctx, bus_address, 0);
	if (r >= 0)
		r = dmabroker_register(ctx, "cpu", false, name, NULL);
	if (r < 0)
		die("connect to the daemon", r);
	return ctx;
}

/* A stream consumer process: joins name (explicit sync) and releases every frame at once. */
static pid_t stream_consumer(const char *name, int release_fence)
{
	const struct dmabroker_stream_handlers h = {
		.frame = on_consumer_frame,
		.ended = on_consumer_ended,
	};
	const struct dmabroker_stream_options o = {.sync = DMABROKER_SYNC_EXPLICIT,
						   .label = "bench"};
	static int fence;
	struct dmabroker_stream *s;
	struct dmabroker *ctx;
	pid_t pid = fork();
	int r;

	if (pid != 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	set_cpu(consumer_cpu);
	fence = release_fence;
	ctx = connect_client("stream-bench-consumer");
	r = dmabroker_stream_join(ctx, name, NULL, &o, sizeof(o), &h, sizeof(h), &fence, &s);
	if (r < 0)
		die("join the stream", r);
	for (;;) {
		struct pollfd p = {dmabroker_get_fd(ctx), (short)dmabroker_get_events(ctx), 0};

		if (poll(&p, 1, -1) < 0 && errno != EINTR)
			die("poll", errno);
		r = dmabroker_dispatch(ctx);
		if (r < 0)
			_exit(0);
	}
}

struct producer {
	struct dmabroker *ctx;
	struct dmabroker_collection *col;
	struct dmabroker_stream *s;
	unsigned joined, returned;
	int fence; /* sent with every frame, or -1 */
	pid_t consumers[FAN_OUT];
	int n;
};

static void on_returned(struct dmabroker_stream *s, uint32_t index, int release_fence,
			void *userdata)
{
	struct producer *p = userdata;

	if (p->fence >= 0 && !(release_fence >= 0))
		die("a release came without its fence", EBADMSG);
	p->returned++;
}

static void on_joined(struct dmabroker_stream *s, uint32_t consumer, void *userdata)
{
	struct producer *p = userdata;

	p->joined++;
}

static void dispatch_once(struct dmabroker *ctx)
{
	struct pollfd pfd = {dmabroker_get_fd(ctx), (short)dmabroker_get_events(ctx), 0};
	int r;

	if (poll(&pfd, 1, 10000) <= 0)
		die("the stream stalled for 10 s", ETIMEDOUT);
	r = dmabroker_dispatch(ctx);
	if (r < 0)
		die("dispatch", r);
}

static void producer_start(struct producer *p, struct dmabroker *ctx, const char *name, int n,
			   int release_fence)
{
	const struct dmabroker_stream_handlers h = {
		.buffer_returned = on_returned,
		.consumer_joined = on_joined,
	};
	const struct dmabroker_constraints c = {
		.min_buffers = N_BUFFERS,
		.max_buffers = N_BUFFERS,
		.min_size = 4096,
		.cpu_write = true,
	};
	const struct dmabroker_stream_options o = {.name = name, .sync = DMABROKER_SYNC_EXPLICIT};
	int r;

	memset(p, 0, sizeof(*p));
	p->ctx = ctx;
	p->fence = -1;
	p->n = n;
	r = dmabroker_collection_create(ctx, name, 1, &p->col);
	if (r >= 0)
		r = dmabroker_collection_set_constraints(p->col, &c, sizeof(c));
	if (r >= 0)
		r = dmabroker_collection_wait(p->col);
	if (r < 0)
		die("the stream's collection", r);
	r = dmabroker_stream_create(p->col, &o, sizeof(o), &h, sizeof(h), p, &p->s);
	if (r < 0)
		die("create the stream", r);
	for (int i = 0; i < n; i++)
		p->consumers[i] = stream_consumer(name, release_fence);
	while (p->joined < (unsigned)n)
		dispatch_once(ctx);
}

static void producer_stop(struct producer *p)
{
	dmabroker_stream_free(p->s, NULL);
	for (int i = 0; i < p->n; i++)
		waitpid(p->consumers[i], NULL, 0);
	dmabroker_collection_leave(p->col);
}

static double stream_frame(struct producer *p)
{
	struct dmabroker_frame f = {
		.meta_type = DMABROKER_FRAME_META_OPAQUE,
		.meta_size = 16,
		.acquire_fence = p->fence,
	};
	unsigned want = p->returned + 1;
	double t0 = now_us();
	int r;

	f.timestamp_ns = (uint64_t)(t0 * 1e3);
	r = dmabroker_stream_get_free(p->s, &f.index);
	if (r < 0)
		die("no free buffer", r);
	memcpy(f.meta, &want, sizeof(want));
	r = dmabroker_stream_queue(p->s, &f);
	if (r < 0)
		die("queue", r);
	while (p->returned < want)
		dispatch_once(p->ctx);
	return now_us() - t0;
}

/* --- rows --- */

struct row {
	const char *name;
	double *s;
	int n;
	int base; /* the baseline row, or -1 */
	double ratio[MAX_ROUNDS];
};

enum kind {
	RAW,
	STREAM
};

struct op {
	enum kind kind;
	struct raw *raw;
	struct producer *prod;
	int fence;
};

static double run_op(const struct op *o)
{
	if (o->kind == RAW) {
		o->raw->fence = o->fence;
		return raw_frame(o->raw);
	}
	o->prod->fence = o->fence;
	return stream_frame(o->prod);
}

static void run_rows(struct row *rows, const struct op *ops, int n)
{
	for (int i = 0; i < n; i++) {
		rows[i].s = calloc((size_t)(rounds * iterations), sizeof(double));
		if (!rows[i].s)
			die("samples", ENOMEM);
		for (int k = 0; k < warmup; k++)
			run_op(&ops[i]);
	}
	for (int r = 0; r < rounds; r++)
		for (int i = 0; i < n; i++)
			for (int k = 0; k < iterations; k++)
				rows[i].s[rows[i].n++] = run_op(&ops[i]);
	for (int i = 0; i < n; i++) {
		int b = rows[i].base;

		for (int r = 0; b >= 0 && r < rounds; r++)
			rows[i].ratio[r] = quantile(rows[i].s + r * iterations, iterations, 0.5) /
					   quantile(rows[b].s + r * iterations, iterations, 0.5);
	}
}

static void print_row(const struct row *r)
{
	printf("  %-44s %9.1f %9.1f", r->name, quantile(r->s, r->n, 0.5),
	       quantile(r->s, r->n, 0.99));
	if (r->base >= 0) {
		double m = quantile(r->ratio, rounds, 0.5);

		printf("   %5.2fx (%.2f-%.2f)  %s", m, quantile(r->ratio, rounds, 0),
		       quantile(r->ratio, rounds, 1), m <= 1.1 ? "<= 1.1x met" : "1.1x NOT MET");
	}
	printf("\n");
}

/* voluntary_ctxt_switches, and utime + stime in clock ticks. */
static void daemon_cost(pid_t pid, long *ret_switches, long *ret_ticks)
{
	char path[64], line[1024];
	unsigned long ut = 0, st = 0;
	FILE *f;

	*ret_switches = *ret_ticks = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "voluntary_ctxt_switches: %ld", ret_switches) == 1)
			break;
	fclose(f);
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return;
	/* Fields 14 and 15, after the command name in parentheses. */
	if (fgets(line, sizeof(line), f)) {
		char *p = strrchr(line, ')');

		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
				&st) == 2)
			*ret_ticks = (long)(ut + st);
	}
	fclose(f);
}

int main(int argc, char **argv)
{
	struct fixture fx;
	struct dmabroker *ctx;
	struct producer one, four;
	struct raw raw1, raw4;
	long sw0, tk0, sw1, tk1, sw2, tk2;
	double t0, busy;
	int fence, n_cpus;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			rounds = 7;
			iterations = 60;
			warmup = 20;
			daemon_frames = 2000;
		} else if (!strncmp(argv[i], "--rounds=", 9)) {
			rounds = atoi(argv[i] + 9);
		} else if (!strncmp(argv[i], "--iterations=", 13)) {
			iterations = atoi(argv[i] + 13);
		} else if (!strncmp(argv[i], "--frames=", 9)) {
			daemon_frames = atoi(argv[i] + 9);
		} else if (!strncmp(argv[i], "--producer-cpu=", 15)) {
			producer_cpu = atoi(argv[i] + 15);
		} else if (!strncmp(argv[i], "--consumer-cpu=", 15)) {
			consumer_cpu = atoi(argv[i] + 15);
		} else if (!strcmp(argv[i], "--no-pin")) {
			pin = false;
		} else {
			fprintf(stderr, "usage: stream-bench [--quick] [--rounds=N] "
					"[--iterations=N] [--frames=N] [--producer-cpu=N "
					"--consumer-cpu=N | --no-pin]\n");
			return 2;
		}
	}
	if (rounds < 3 || rounds > MAX_ROUNDS || iterations < 10)
		die("--rounds is 3 to 64, --iterations at least 10", EINVAL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	n_cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (n_cpus < 2)
		pin = false;

	/* dbus-daemon and dmabrokerd inherit the consumers' CPU. */
	set_cpu(consumer_cpu);
	if (fixture_start(&fx, NULL) < 0)
		die("start a bus and the daemon", EIO);
	bus_address = fx.address;
	set_cpu(producer_cpu);
	fence = vgem_sync_file();
	/* The raw peers before any connection of ours: they inherit nothing of the broker. */
	raw_start(&raw1, 1, fence);
	raw_start(&raw4, FAN_OUT, fence);
	ctx = connect_client("stream-bench-producer");
	printf("stream-bench: %d rounds x %d frames per row, %d CPUs, ", rounds, iterations,
	       n_cpus);
	if (pin)
		printf("producer on CPU %d, consumers, dmabrokerd and dbus-daemon on CPU %d\n",
		       producer_cpu, consumer_cpu);
	else
		printf("not pinned\n");
	if (fence < 0)
		printf("no vgem here (%s): no sync_file to send, the fence rows are not run\n",
		       strerror(-fence));

	producer_start(&one, ctx, "bench-1", 1, fence);
	producer_start(&four, ctx, "bench-4", FAN_OUT, fence);
	{
		struct row rows[6] = {
			{.name = "raw: FRAME + RELEASE records", .base = -1},
			{.name = "stream: queue, frame, release, returned", .base = 0},
			{.name = "raw: the same, fan-out to 4", .base = -1},
			{.name = "stream: fan-out to 4 consumers", .base = 2},
			{.name = "raw: a sync_file each way", .base = -1},
			{.name = "stream: a sync_file each way", .base = 4},
		};
		const struct op ops[6] = {
			{RAW, &raw1, NULL, -1},	   {STREAM, NULL, &one, -1},
			{RAW, &raw4, NULL, -1},	   {STREAM, NULL, &four, -1},
			{RAW, &raw1, NULL, fence}, {STREAM, NULL, &one, fence},
		};
		int n = fence >= 0 ? 6 : 4;

		run_rows(rows, ops, n);
		printf("\n  %-44s %9s %9s   %s\n", "row (one frame there and back)", "p50 us",
		       "p99 us", "ratio (spread)  target");
		for (int i = 0; i < n; i++)
			print_row(&rows[i]);
	}

	/* The daemon is told nothing per frame: it must not wake or spend CPU. */
	daemon_cost(fx.daemon_pid, &sw0, &tk0);
	t0 = now_us();
	for (int i = 0; i < daemon_frames; i++)
		stream_frame(&one);
	busy = now_us() - t0;
	daemon_cost(fx.daemon_pid, &sw1, &tk1);
	usleep((useconds_t)busy);
	daemon_cost(fx.daemon_pid, &sw2, &tk2);
	printf("\n  dmabrokerd over %d frames (%.1f s): %+ld voluntary context switches, %+ld CPU "
	       "ticks;\n  over the same time idle: %+ld, %+ld\n",
	       daemon_frames, busy / 1e6, sw1 - sw0, tk1 - tk0, sw2 - sw1, tk2 - tk1);

	producer_stop(&four);
	producer_stop(&one);
	raw_stop(&raw4);
	raw_stop(&raw1);
	dmabroker_disconnect(ctx);
	if (fence >= 0)
		close(fence);
	return fixture_stop(&fx) == 0 ? 0 : 1;
}
