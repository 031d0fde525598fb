// SPDX-License-Identifier: MIT
/*
 * Memory accounting on a real kernel (run inside the qemu guest by vm-run):
 *  1. memory a client keeps alive after Release or Revoke (an fd or a mapping of the dma-buf)
 *     stays charged to its uid, so a uid's kept-alive memory stays within MaxBytesPerUid;
 *     the charge ends on the next quota check or when its holder leaves the bus;
 *  2. with cgroup v2, libdmabroker's plain buffers are charged to the client's memory cgroup
 *     (and its memory.max refuses them), not to the daemon's; DMABROKER_CONNECT_DAEMON_MEMORY
 *     puts the charge on the daemon. Over memory.max the library must fail with -ENOMEM and
 *     nothing in the cgroup may be OOM-killed (a bystander process included).
 * A plain dmabroker_release() of a buffer nobody keeps must free it at once.
 * Each client is a forked worker (as root or as uid 65534) driven over a pipe.
 *
 * On Debian 12's stock 6.1 ($DMABROKER_VM_EXPECT=6.1: no udmabuf, no dma-heaps) the buffers
 * are memfds. Who keeps a memfd alive cannot be seen from userspace (a dma-buf's fdinfo gives
 * its file count, a memfd's does not), so there a buffer's charge ends with its last Release:
 * kept-alive memory is not counted and the limits do not bound it. The test asserts that
 * difference; the cgroup charges are the same.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/falloc.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bus-util.h"
#include "dmabroker.h"
#include "fixture.h"
#include "macros.h"
#include "protocol.h"
#include "tap.h"

/* The library's API is growing size arguments for its structs: build against either. */

#define MiB (1024ull * 1024ull)
#define NOBODY 65534
#define CG_ROOT "/sys/fs/cgroup"
#define CG_CLIENT CG_ROOT "/dmabroker-test-client"
#define CG_DAEMON CG_ROOT "/dmabroker-test-daemon"
#define CG_FROZEN CG_ROOT "/dmabroker-test-frozen"

/* Debian 12's 6.1: the buffers are memfds, whose holders the daemon cannot see. */
static bool memfd_kernel;

/* ---------------------------------------------------------------- the worker (a client) */

#define MAX_KEPT 64

struct kept {
	int fd; /* -1: only the mapping is kept */
	void *map;
	size_t size;
};

/*
 * A buffer the worker holds: from the library, or (raw mode) from calling the daemon on the
 * bus directly, used only where the library refuses DMABROKER_CONNECT_DAEMON_MEMORY.
 */
struct wbuf {
	struct dmabroker_buffer *lib;
	char path[128];
	char backend[32];
	int fd; /* raw mode: owned */
};

static struct dmabroker *w_ctx;
static sd_bus *w_raw;
static struct kept w_kept[MAX_KEPT];
static int w_n_kept;
static struct wbuf w_held[MAX_KEPT];
static int w_n_held;
static struct dmabroker_buffer *w_revoked[MAX_KEPT];
static int w_n_revoked;

static void w_reply(int out, const char *fmt, ...) _printf_(2, 3);

static void w_reply(int out, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if (n > (int)sizeof(line) - 2)
		n = sizeof(line) - 2;
	for (int i = 0; i < n; i++)
		if (line[i] == '\n')
			line[i] = ' ';
	line[n++] = '\n';
	if (write(out, line, n) != n)
		_exit(3);
}

static void w_on_revoked(struct dmabroker_buffer *buf, const char *reason, void *userdata)
{
	if (w_n_revoked < MAX_KEPT)
		w_revoked[w_n_revoked++] = buf;
}

/* Maps fd (shared, read-write) and touches every page. */
static void *w_map(int fd, size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		return NULL;
	for (size_t off = 0; off < size; off += 4096)
		((volatile char *)p)[off] = (char)off;
	return p;
}

static char w_error[300];

static int w_raw_error(sd_bus_error *e, int r)
{
	snprintf(w_error, sizeof(w_error), "%s: %s", e->name ? e->name : "?",
		 e->message ? e->message : strerror(-r));
	r = sd_bus_error_get_errno(e) ? -sd_bus_error_get_errno(e) : r;
	if (e->name && !strcmp(e->name, "org.dmabroker.Error.QuotaExceeded"))
		r = -EDQUOT;
	sd_bus_error_free(e);
	return r;
}

static int w_allocate(size_t size, struct wbuf *ret)
{
	struct dmabroker_alloc_spec spec = {.size = size, .name = "acct"};
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	const char *path;
	int r, fd;

	memset(ret, 0, sizeof(*ret));
	ret->fd = -1;
	if (!w_raw) {
		r = dmabroker_allocate(w_ctx, &spec, sizeof(spec), &ret->lib);
		if (r < 0)
			return r;
		snprintf(ret->path, sizeof(ret->path), "%s", dmabroker_buffer_get_path(ret->lib));
		snprintf(ret->backend, sizeof(ret->backend), "%s",
			 dmabroker_buffer_get_backend(ret->lib));
		return 0;
	}
	r = sd_bus_call_method(w_raw, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "Allocate", &e,
			       &reply, "a{sv}", 2, "size", "t", (uint64_t)size, "name", "s",
			       "acct");
	if (r < 0)
		return w_raw_error(&e, r);
	r = sd_bus_message_read(reply, "oh", &path, &fd);
	if (r >= 0) {
		const char *key, *backend;

		snprintf(ret->path, sizeof(ret->path), "%s", path);
		ret->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		/* The layout dictionary names the backend. */
		if (sd_bus_message_enter_container(reply, 'a', "{sv}") > 0)
			while (sd_bus_message_enter_container(reply, 'e', "sv") > 0) {
				if (sd_bus_message_read_basic(reply, 's', &key) > 0 &&
				    !strcmp(key, "backend") &&
				    sd_bus_message_read(reply, "v", "s", &backend) > 0)
					snprintf(ret->backend, sizeof(ret->backend), "%s", backend);
				else
					sd_bus_message_skip(reply, "v");
				sd_bus_message_exit_container(reply);
			}
	}
	sd_bus_message_unref(reply);
	return ret->fd >= 0 ? 0 : -EIO;
}

static int w_fd(const struct wbuf *b)
{
	return b->lib ? dmabroker_buffer_get_fd(b->lib) : b->fd;
}

static int w_release(struct wbuf *b)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int r;

	if (b->lib)
		return dmabroker_release(b->lib);
	close(b->fd);
	r = sd_bus_call_method(w_raw, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "Release", &e,
			       NULL, "o", b->path);
	return r < 0 ? w_raw_error(&e, r) : 0;
}

/*
 * A hostile owner of handed-over memory: its own raw connection (AllocateWithMemfd with
 * memfds the library would never make), keeping every memfd it made for as long as it lives.
 */
static sd_bus *w_host;
static struct {
	char path[128];
	int fd; /* owned */
} w_hbuf[MAX_KEPT];
static int w_n_hbuf;
static int w_memfds[MAX_KEPT];
static int w_n_memfds;

/* A memfd of size bytes shaped as asked: whole, sparse (no page), beyond (its pages all past
 * its end), grow (whole, but without F_SEAL_GROW), punch (whole; punched after the call). */
static int w_make_memfd(size_t size, const char *shape)
{
	int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
	int fd = memfd_create("hostile", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
		goto fail;
	if ((!strcmp(shape, "whole") || !strcmp(shape, "grow") || !strcmp(shape, "punch")) &&
	    fallocate(fd, 0, 0, (off_t)size) < 0)
		goto fail;
	if (!strcmp(shape, "beyond") &&
	    fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)size, (off_t)size) < 0)
		goto fail;
	if (!strcmp(shape, "grow"))
		seals &= ~F_SEAL_GROW;
	if (fcntl(fd, F_ADD_SEALS, seals) < 0)
		goto fail;
	return fd;
fail:
	if (fd >= 0)
		close(fd);
	return -1;
}

static int w_handover(size_t size, const char *shape, char *what, size_t len)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int memfd, fd, r;
	const char *path;
	bool grew;

	if (w_n_memfds >= MAX_KEPT || w_n_hbuf >= MAX_KEPT)
		return -E2BIG;
	memfd = w_make_memfd(size, shape);
	if (memfd < 0)
		return -errno;
	w_memfds[w_n_memfds++] = memfd; /* kept: a hostile owner never lets go */
	r = sd_bus_message_new_method_call(w_host, &m, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					   "AllocateWithMemfd");
	if (r >= 0)
		r = sd_bus_message_append(m, "h", memfd);
	if (r >= 0)
		r = sd_bus_message_append(m, "a{sv}", 1, "size", "t", (uint64_t)size);
	if (r >= 0)
		r = sd_bus_call(w_host, m, 30 * 1000000ull, &e, &reply);
	if (r < 0)
		return w_raw_error(&e, r);
	r = sd_bus_message_read(reply, "oh", &path, &fd);
	if (r < 0)
		return r;
	snprintf(w_hbuf[w_n_hbuf].path, sizeof(w_hbuf[0].path), "%s", path);
	w_hbuf[w_n_hbuf++].fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (!strcmp(shape, "punch"))
		(void)fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)size);
	grew = ftruncate(memfd, (off_t)(2 * size)) == 0;
	snprintf(what, len, "%s %s", path, grew ? "grew" : "cannot-grow");
	return 0;
}

static int w_host_connect(void)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int r;

	w_host = inspect_bus();
	if (!w_host)
		return -ECONNREFUSED;
	r = sd_bus_call_method(w_host, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "Register", &e,
			       NULL, "a{sv}", 2, "role", "s", "cpu", "dynamic", "b", 1);
	return r < 0 ? w_raw_error(&e, r) : 0;
}

static int w_share(char *hex, size_t len)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	const uint8_t *token;
	size_t n;
	int r;

	if (w_n_hbuf == 0)
		return -ENOENT;
	r = sd_bus_call_method(w_host, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "Share", &e,
			       &reply, "oa{sv}", w_hbuf[w_n_hbuf - 1].path, 0);
	if (r < 0)
		return w_raw_error(&e, r);
	r = sd_bus_message_read_array(reply, 'y', (const void **)&token, &n);
	if (r < 0 || 2 * n + 1 > len)
		return -EIO;
	for (size_t i = 0; i < n; i++)
		snprintf(hex + 2 * i, 3, "%02x", token[i]);
	return 0;
}

/* Imports a token and reads every page of the buffer through a mapping. */
static int w_import(const char *hex, char *what, size_t len)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	uint8_t token[64];
	size_t n = strlen(hex) / 2, size;
	const char *path;
	int fd, r;
	unsigned sum = 0;
	char *p;

	if (n > sizeof(token) || w_n_hbuf >= MAX_KEPT)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		sscanf(hex + 2 * i, "%2hhx", &token[i]);
	r = sd_bus_message_new_method_call(w_host, &m, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					   "Import");
	if (r >= 0)
		r = sd_bus_message_append_array(m, 'y', token, n);
	if (r >= 0)
		r = sd_bus_call(w_host, m, 0, &e, &reply);
	if (r < 0)
		return w_raw_error(&e, r);
	r = sd_bus_message_read(reply, "oh", &path, &fd);
	if (r < 0)
		return r;
	snprintf(w_hbuf[w_n_hbuf].path, sizeof(w_hbuf[0].path), "%s", path);
	fd = w_hbuf[w_n_hbuf++].fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	size = (size_t)lseek(fd, 0, SEEK_END);
	p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	/* Every page touched by reading it; the sum is reported so that the reads stay. */
	for (size_t off = 0; off < size; off += 4096)
		sum += (unsigned char)p[off];
	munmap(p, size);
	snprintf(what, len, "%s read %zu bytes (sum %u)", path, size, sum);
	return 0;
}

/*
 * Moves the last handed-over buffer (as its owner) and reacquires it. The owner punches its
 * last memfd out first: where the buffer is that memfd (the memfd backend), the copy meets
 * holes (a reader may have faulted the first ones in).
 */
static int w_move(void)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int r, fd;

	if (w_n_hbuf == 0)
		return -ENOENT;
	if (w_n_memfds > 0)
		(void)fallocate(w_memfds[w_n_memfds - 1],
				FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
				(off_t)lseek(w_memfds[w_n_memfds - 1], 0, SEEK_END));
	r = sd_bus_call_method(w_host, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "Move", &e,
			       NULL, "o", w_hbuf[w_n_hbuf - 1].path);
	if (r >= 0)
		r = sd_bus_call_method(w_host, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
				       "Reacquire", &e, &reply, "o", w_hbuf[w_n_hbuf - 1].path);
	if (r < 0)
		return w_raw_error(&e, r);
	if (sd_bus_message_read(reply, "h", &fd) >= 0) {
		close(w_hbuf[w_n_hbuf - 1].fd);
		w_hbuf[w_n_hbuf - 1].fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	}
	return 0;
}

static int w_hrelease(void)
{
	int failed = 0;

	for (int i = 0; i < w_n_hbuf; i++) {
		sd_bus_error e = SD_BUS_ERROR_NULL;

		close(w_hbuf[i].fd);
		failed += sd_bus_call_method(w_host, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					     "Release", &e, NULL, "o", w_hbuf[i].path) < 0;
		sd_bus_error_free(&e);
	}
	w_n_hbuf = 0;
	return failed;
}

static void w_err(int out, int r)
{
	w_reply(out, "err %d %s", -r,
		w_raw || w_host ? w_error
		: w_ctx		? dmabroker_last_error(w_ctx)
				: "");
}

static int w_connect(uint32_t flags, bool *raw)
{
	struct dmabroker_event_handlers handlers = {.revoked = w_on_revoked};
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int r = dmabroker_connect(&w_ctx, NULL, flags);

	*raw = false;
	if (r == -EINVAL && (flags & DMABROKER_CONNECT_DAEMON_MEMORY)) {
		/* This library refuses its own flag: ask the daemon to allocate ourselves. */
		*raw = true;
		w_raw = inspect_bus();
		if (!w_raw)
			return -ECONNREFUSED;
		r = sd_bus_call_method(w_raw, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
				       "Register", &e, NULL, "a{sv}", 1, "role", "s", "cpu");
		return r < 0 ? w_raw_error(&e, r) : 0;
	}
	if (r < 0)
		return r;
	r = dmabroker_set_event_handlers(w_ctx, &handlers, sizeof(handlers), NULL);
	if (r < 0)
		return r;
	return dmabroker_register(w_ctx, "cpu", false, "acct-worker", NULL);
}

/*
 * Commands (one a line), each answered by one line "ok ..." or "err ERRNO MESSAGE":
 *   connect FLAGS   connect and register
 *   keep SIZE       allocate, keep a dup of its fd and a mapping, Release; says kept=BYTES,
 *                   what st_blocks still shows behind the kept fd
 *   hold SIZE       allocate and hold it; keep a mapping of a dup (the dup is closed)
 *   alloc SIZE      allocate and hold it (nothing kept beyond the library's own fd)
 *   release         release every held buffer
 *   revoked N       wait for N Revoked signals (at most 20 s), then release those buffers
 *   drop            unmap and close everything kept
 *   protect         oom_score_adj -1000 (root)
 *   hostile         a raw connection of its own for the hostile owner's commands:
 *   handover SIZE SHAPE  AllocateWithMemfd of a memfd shaped whole, sparse, beyond, grow or
 *                   punch (see w_make_memfd), kept by the worker; tries to grow it after
 *   share           Share the last buffer handed over or imported: "ok TOKENHEX"
 *   import HEX      Import a token and read every page of the buffer through a mapping
 *   move            Move the last buffer (its owner) and Reacquire it
 *   hrelease        release the raw connection's buffers, closing their fds
 *   hclose          close the memfds it made
 *   exit            leave without closing what is kept (the kernel closes it at exit)
 */
static void worker(int in, int out)
{
	char line[256];
	FILE *f = fdopen(in, "r");

	while (f && fgets(line, sizeof(line), f)) {
		unsigned long long arg = 0;
		char cmd[32] = "";
		struct wbuf buf;
		int r;

		if (sscanf(line, "%31s %llu", cmd, &arg) < 1)
			continue;
		if (!strcmp(cmd, "connect")) {
			bool raw;

			r = w_connect((uint32_t)arg, &raw);
			if (r < 0)
				w_err(out, r);
			else
				w_reply(out, "ok uid=%u%s", (unsigned)getuid(),
					raw ? " raw (the library refused the flag)" : "");
		} else if (!strcmp(cmd, "keep") || !strcmp(cmd, "hold")) {
			bool keep = !strcmp(cmd, "keep");
			int dup_fd;
			void *map;

			if (w_n_kept >= MAX_KEPT || w_n_held >= MAX_KEPT) {
				w_reply(out, "err %d too many", E2BIG);
				continue;
			}
			r = w_allocate(arg, &buf);
			if (r < 0) {
				w_err(out, r);
				continue;
			}
			dup_fd = fcntl(w_fd(&buf), F_DUPFD_CLOEXEC, 3);
			map = dup_fd >= 0 ? w_map(dup_fd, arg) : NULL;
			if (!map) {
				w_reply(out, "err %d mapping failed", errno);
				continue;
			}
			w_kept[w_n_kept++] = (struct kept){keep ? dup_fd : -1, map, arg};
			if (!keep)
				close(dup_fd);
			if (keep) {
				r = w_release(&buf);
				if (r < 0) {
					w_err(out, r);
					continue;
				}
			} else {
				w_held[w_n_held++] = buf;
			}
			{
				/* What still exists behind the kept fd (a memfd's st_blocks). */
				struct stat st;
				long long blocks = keep && fstat(dup_fd, &st) == 0
							   ? (long long)st.st_blocks * 512
							   : -1;

				w_reply(out, "ok %s %s kept=%lld", buf.path, buf.backend, blocks);
			}
		} else if (!strcmp(cmd, "alloc")) {
			r = w_allocate(arg, &buf);
			if (r < 0) {
				w_err(out, r);
				continue;
			}
			if (w_n_held < MAX_KEPT)
				w_held[w_n_held++] = buf;
			w_reply(out, "ok %s %s", buf.path, buf.backend);
		} else if (!strcmp(cmd, "release")) {
			int failed = 0;

			for (int i = 0; i < w_n_held; i++)
				failed += w_release(&w_held[i]) < 0;
			w_n_held = 0;
			w_reply(out, "ok %d", failed);
		} else if (!strcmp(cmd, "revoked")) {
			struct timespec t0, t;
			int n = 0;

			if (w_raw) {
				/* Raw mode does not listen: stop using them all and release. */
				for (int i = 0; i < w_n_held; i++, n++)
					w_release(&w_held[i]);
				w_n_held = 0;
				w_reply(out, "ok %d", n);
				continue;
			}
			clock_gettime(CLOCK_MONOTONIC, &t0);
			do {
				struct pollfd p = {dmabroker_get_fd(w_ctx), POLLIN, 0};

				dmabroker_dispatch(w_ctx);
				if (w_n_revoked >= (int)arg)
					break;
				poll(&p, 1, 200);
				clock_gettime(CLOCK_MONOTONIC, &t);
			} while (t.tv_sec - t0.tv_sec < 20);
			/* Stop using them and release them, as the contract asks; the mappings
			 * the worker made of its own stay. */
			for (int i = 0; i < w_n_revoked; i++) {
				dmabroker_release(w_revoked[i]);
				for (int j = 0; j < w_n_held; j++)
					if (w_held[j].lib == w_revoked[i])
						w_held[j] = w_held[--w_n_held];
			}
			w_reply(out, "ok %d", w_n_revoked);
			w_n_revoked = 0;
		} else if (!strcmp(cmd, "drop")) {
			for (int i = 0; i < w_n_kept; i++) {
				munmap(w_kept[i].map, w_kept[i].size);
				if (w_kept[i].fd >= 0)
					close(w_kept[i].fd);
			}
			w_n_kept = 0;
			w_reply(out, "ok");
		} else if (!strcmp(cmd, "ballast")) {
			/* Anonymous memory of this process's own (a bystander). */
			void *p = mmap(NULL, arg, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

			if (p == MAP_FAILED) {
				w_reply(out, "err %d mmap", errno);
				continue;
			}
			memset(p, 1, arg);
			w_kept[w_n_kept++] = (struct kept){-1, p, arg};
			w_reply(out, "ok");
		} else if (!strcmp(cmd, "protect")) {
			/* Out of the OOM killer's reach (root only): what the kernel then does
			 * with a charge over memory.max. */
			int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);

			if (fd < 0 || write(fd, "-1000", 5) != 5)
				w_reply(out, "err %d oom_score_adj", errno);
			else
				w_reply(out, "ok");
			if (fd >= 0)
				close(fd);
		} else if (!strcmp(cmd, "hostile")) {
			r = w_host_connect();
			if (r < 0)
				w_err(out, r);
			else
				w_reply(out, "ok");
		} else if (!strcmp(cmd, "handover")) {
			char shape[16] = "", what[200];

			sscanf(line, "%*s %*u %15s", shape);
			r = w_handover(arg, shape, what, sizeof(what));
			if (r < 0)
				w_err(out, r);
			else
				w_reply(out, "ok %s", what);
		} else if (!strcmp(cmd, "share")) {
			char hex[130];

			r = w_share(hex, sizeof(hex));
			if (r < 0)
				w_err(out, r);
			else
				w_reply(out, "ok %s", hex);
		} else if (!strcmp(cmd, "import")) {
			char hex[130] = "", what[200];

			sscanf(line, "%*s %129s", hex);
			r = w_import(hex, what, sizeof(what));
			if (r < 0)
				w_err(out, r);
			else
				w_reply(out, "ok %s", what);
		} else if (!strcmp(cmd, "move")) {
			r = w_move();
			if (r < 0)
				w_err(out, r);
			else
				w_reply(out, "ok");
		} else if (!strcmp(cmd, "hrelease")) {
			w_reply(out, "ok %d", w_hrelease());
		} else if (!strcmp(cmd, "hclose")) {
			for (int i = 0; i < w_n_memfds; i++)
				close(w_memfds[i]);
			w_n_memfds = 0;
			w_reply(out, "ok");
		} else if (!strcmp(cmd, "exit")) {
			w_reply(out, "ok");
			_exit(0);
		} else {
			w_reply(out, "err %d unknown command", EINVAL);
		}
	}
	_exit(0);
}

/* ---------------------------------------------------------------- the test's side */

struct wk {
	pid_t pid;
	int in, out; /* we write to in, read from out */
	char reply[512];
	int err; /* errno of the last "err" reply, 0 for ok, -1 when the worker is gone */
};

static bool wk_start(struct wk *w, uid_t uid, const char *cgroup)
{
	int to_child[2], from_child[2];

	if (pipe2(to_child, O_CLOEXEC) < 0 || pipe2(from_child, O_CLOEXEC) < 0)
		return false;
	fflush(stdout);
	w->pid = fork();
	if (w->pid < 0)
		return false;
	if (w->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(to_child[1]);
		close(from_child[0]);
		if (uid != 0 && (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 ||
				 setresuid(uid, uid, uid) < 0))
			_exit(2);
		worker(to_child[0], from_child[1]);
	}
	close(to_child[0]);
	close(from_child[1]);
	w->in = to_child[1];
	w->out = from_child[0];
	w->err = 0;
	if (cgroup) {
		char path[300], pid[32];
		int fd;

		snprintf(path, sizeof(path), "%s/cgroup.procs", cgroup);
		snprintf(pid, sizeof(pid), "%d", (int)w->pid);
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, pid, strlen(pid)) < 0) {
			tap_diag("could not move worker %d into %s: %m", (int)w->pid, cgroup);
			if (fd >= 0)
				close(fd);
			return false;
		}
		close(fd);
	}
	return true;
}

/* Reads the worker's one-line answer to the last command; returns true for "ok". */
static bool wk_read(struct wk *w)
{
	size_t got = 0;

	while (got + 1 < sizeof(w->reply)) {
		char c;
		ssize_t r = read(w->out, &c, 1);

		if (r <= 0) {
			w->err = -1;
			snprintf(w->reply, sizeof(w->reply), "worker gone");
			return false;
		}
		if (c == '\n')
			break;
		w->reply[got++] = c;
	}
	w->reply[got] = '\0';
	if (strncmp(w->reply, "ok", 2) == 0) {
		w->err = 0;
		return true;
	}
	w->err = 0;
	sscanf(w->reply, "err %d", &w->err);
	return false;
}

__attribute__((format(printf, 2, 0))) static bool wk_vsend(struct wk *w, const char *fmt,
							   va_list ap)
{
	char line[256];
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);

	line[n++] = '\n';
	w->reply[0] = '\0';
	if (w->pid <= 0 || write(w->in, line, n) != n) {
		w->err = -1;
		snprintf(w->reply, sizeof(w->reply), "worker gone");
		return false;
	}
	return true;
}

/* Sends a command without waiting for its answer (wk_read reads it). */
__attribute__((format(printf, 2, 3))) static bool wk_send(struct wk *w, const char *fmt, ...)
{
	va_list ap;
	bool ok;

	va_start(ap, fmt);
	ok = wk_vsend(w, fmt, ap);
	va_end(ap);
	return ok;
}

/* Sends a command and reads the worker's one-line answer; returns true for "ok". */
__attribute__((format(printf, 2, 3))) static bool wk_cmd(struct wk *w, const char *fmt, ...)
{
	va_list ap;
	bool ok;

	va_start(ap, fmt);
	ok = wk_vsend(w, fmt, ap);
	va_end(ap);
	return ok && wk_read(w);
}

/* Ends the worker; returns its wait status in shell terms (128+N for signal N). */
static int wk_end(struct wk *w, bool ask)
{
	int status = 0;

	if (w->pid <= 0)
		return -1;
	if (ask)
		wk_cmd(w, "exit");
	close(w->in);
	close(w->out);
	waitpid(w->pid, &status, 0);
	w->pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * "Total N objects, M bytes" from debugfs: the dma-bufs alive in the whole system. Each
 * buffer's section ends with "Total N devices attached", which a bare
 * sscanf("Total %d objects") also matches (it stops at the first literal mismatch).
 */
static uint64_t bytes_in_use(sd_bus *bus)
{
	uint64_t v = UINT64_MAX;

	sd_bus_get_property_trivial(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "BytesInUse",
				    NULL, 't', &v);
	return v;
}

static double mib(uint64_t bytes)
{
	return (double)bytes / (double)MiB;
}

/* A signed difference of two byte counts, in MiB. */
static double dmib(int64_t delta)
{
	return (double)delta / (double)MiB;
}

static void msleep(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* The daemon frees a leaving client's buffers when the bus tells it: wait for that. */
static bool wait_bytes(sd_bus *bus, uint64_t want, int timeout_ms)
{
	for (int waited = 0; waited <= timeout_ms; waited += 50) {
		if (bytes_in_use(bus) == want)
			return true;
		msleep(50);
	}
	return false;
}

static bool wait_objects(int want, int timeout_ms)
{
	for (int waited = 0; waited <= timeout_ms; waited += 50) {
		if (debugfs_dmabuf_objects() == want)
			return true;
		msleep(50);
	}
	return false;
}

struct base {
	int fds, objects;
};

static void check_baseline(struct fixture *f, sd_bus *bus, const struct base *b, const char *what)
{
	bool gone = fixture_wait_clients(f, 0, 10000);

	tap_ok(gone, "%s: every client is gone", what);
	tap_ok(wait_bytes(bus, 0, 5000), "%s: BytesInUse is back to 0 (%.2f MiB)", what,
	       mib(bytes_in_use(bus)));
	tap_is(broker_u32(bus, "NBuffers"), 0, "the daemon keeps no buffer");
	tap_is(fixture_daemon_fds(f), b->fds, "the daemon's fd count is back to baseline");
	tap_ok(wait_objects(b->objects, 5000),
	       "%s: debugfs bufinfo is back to baseline (%d objects, baseline %d)", what,
	       debugfs_dmabuf_objects(), b->objects);
}

/*
 * 1. Kept-alive memory after Release: allocate 1 MiB, keep a dup of the fd and a mapping,
 * Release; repeat. MaxBytesPerUid=8M bounds what the uid keeps alive.
 */
static void kept_after_release(struct fixture *f, sd_bus *bus, const struct base *b, uid_t uid,
			       bool daemon_memory)
{
	const char *mode = daemon_memory ? "daemon memory" : "client memory";
	char what[96];
	struct wk w;
	int i, refused_at = -1;
	uint64_t bytes;

	snprintf(what, sizeof(what), "uid %u, %s", (unsigned)uid, mode);
	tap_diag("--- kept-alive after Release: %s ---", what);
	if (!tap_ok(wk_start(&w, uid, NULL) &&
			    wk_cmd(&w, "connect %u",
				   daemon_memory ? (unsigned)DMABROKER_CONNECT_DAEMON_MEMORY : 0u),
		    "%s: the worker connects (%s)", what, w.reply))
		return;
	if (daemon_memory)
		tap_ok(!strstr(w.reply, "raw"),
		       "the library accepts DMABROKER_CONNECT_DAEMON_MEMORY (%s)", w.reply);
	for (i = 1; i <= 9; i++) {
		bool ok = wk_cmd(&w, "keep %llu", MiB);

		bytes = bytes_in_use(bus);
		tap_diag("  keep #%d: %s; BytesInUse %.2f MiB, NBuffers %u", i, w.reply, mib(bytes),
			 broker_u32(bus, "NBuffers"));
		if (!ok) {
			refused_at = i;
			break;
		}
		if (i == 1)
			tap_ok(strstr(w.reply, memfd_kernel ? "memfd" : "udmabuf") != NULL,
			       "%s: the buffer is a %s", what, memfd_kernel ? "memfd" : "udmabuf");
	}
	if (memfd_kernel) {
		long long kept = -1;
		const char *k = strstr(w.reply, "kept=");

		if (k)
			kept = atoll(k + 5);
		/*
		 * A memfd's holders cannot be counted: its charge ends at Release. What the
		 * daemon allocated goes with it (no Release-and-keep escape from the quota);
		 * the client's own memfd stays the client's.
		 */
		if (daemon_memory)
			tap_ok(kept == 0,
			       "memfds, daemon memory: the kept memfd holds none of the daemon's "
			       "pages after Release (%lld bytes)",
			       kept);
		else
			tap_ok(kept == (long long)MiB,
			       "memfds, client memory: the kept memfd is the client's own MiB "
			       "(%lld "
			       "bytes)",
			       kept);
		/* The difference: nothing kept alive is charged, so nothing is refused. */
		tap_is(refused_at, -1,
		       "memfds: the 9th MiB kept alive is not refused (its holders are not seen)");
		tap_is(bytes_in_use(bus), 0,
		       "memfds: BytesInUse is 0 with 9 MiB kept alive after Release");
		tap_ok(wk_cmd(&w, "drop"), "%s: the worker closes its fds and unmaps", what);
		tap_is(wk_end(&w, true), 0, "the worker exits");
		check_baseline(f, bus, b, what);
		return;
	}
	tap_is(refused_at, 9, "the 9th MiB kept alive is refused (MaxBytesPerUid=8M)");
	tap_ok(w.err == EDQUOT && strstr(w.reply, "MaxBytesPerUid"),
	       "%s: refused with QuotaExceeded (-EDQUOT) naming MaxBytesPerUid: %s", what, w.reply);
	tap_is(bytes_in_use(bus), 8 * MiB, "BytesInUse counts the 8 MiB kept alive after Release");
	tap_ok(wk_cmd(&w, "drop"), "%s: the worker closes its fds and unmaps", what);
	bytes = bytes_in_use(bus);
	tap_diag("  after closing: BytesInUse %.2f MiB (no polling: freed at the next quota check)",
		 mib(bytes));
	tap_ok(wk_cmd(&w, "keep %llu", MiB), "%s: then the next allocation succeeds (%s)", what,
	       w.reply);
	tap_is(bytes_in_use(bus), 1 * MiB,
	       "the quota check freed the unreachable lingering buffers (BytesInUse 1 MiB)");
	/* Two more kept alive, then the worker exits without closing them itself. */
	wk_cmd(&w, "keep %llu", MiB);
	wk_cmd(&w, "keep %llu", MiB);
	tap_is(bytes_in_use(bus), 3 * MiB, "3 MiB kept alive before the worker exits");
	tap_is(wk_end(&w, true), 0, "the worker exits holding its fds and mappings");
	check_baseline(f, bus, b, what);
}

/*
 * 1a. A plain allocate + dmabroker_release, nothing kept: the memory must go at once (the
 * library's own fd and mapping must not make the buffer linger).
 */
static void plain_release(struct fixture *f, sd_bus *bus, const struct base *b, bool daemon_memory)
{
	const char *mode = daemon_memory ? "daemon memory" : "client memory";
	struct wk w;
	uint64_t held, after;
	unsigned nbuf;
	int objects;

	tap_diag("--- plain Release, nothing kept (%s) ---", mode);
	if (!tap_ok(wk_start(&w, NOBODY, NULL) &&
			    wk_cmd(&w, "connect %u",
				   daemon_memory ? (unsigned)DMABROKER_CONNECT_DAEMON_MEMORY : 0u),
		    "%s: the worker connects (%s)", mode, w.reply))
		return;
	tap_ok(wk_cmd(&w, "alloc %llu", 4 * MiB), "%s: the worker allocates 4 MiB", mode);
	held = bytes_in_use(bus);
	objects = debugfs_dmabuf_objects();
	if (memfd_kernel)
		tap_ok(objects == b->objects,
		       "%s: a memfd is no dma-buf: debugfs bufinfo does not list it (%d objects)",
		       mode, objects);
	else
		tap_ok(objects > b->objects,
		       "%s: debugfs bufinfo counts the held buffer (%d objects)", mode, objects);
	tap_ok(wk_cmd(&w, "release"), "%s: and releases it with dmabroker_release()", mode);
	after = bytes_in_use(bus);
	nbuf = broker_u32(bus, "NBuffers");
	objects = debugfs_dmabuf_objects();
	tap_diag("  BytesInUse %.2f MiB while held, %.2f MiB after Release; NBuffers %u; "
		 "dma-bufs %d (baseline %d)",
		 mib(held), mib(after), nbuf, objects, b->objects);
	tap_ok(after == 0 && nbuf == 0 && objects == b->objects,
	       "%s: Release of a buffer nobody keeps frees it at once (BytesInUse %.2f MiB, "
	       "NBuffers %u, dma-bufs %d)",
	       mode, mib(after), nbuf, objects);
	tap_is(wk_end(&w, true), 0, "the worker exits");
	check_baseline(f, bus, b, "plain Release");
}

/*
 * 1c. Lingering buffers count against MaxBytesTotal (12M) too, and a refusal on that limit
 * looks at every uid's lingering buffers.
 */
static void kept_total(struct fixture *f, sd_bus *bus, const struct base *b)
{
	struct wk a, r;
	int kept = 0;

	tap_diag("--- kept-alive memory and MaxBytesTotal=12M ---");
	if (!tap_ok(wk_start(&a, NOBODY, NULL) && wk_cmd(&a, "connect 0") &&
			    wk_start(&r, 0, NULL) && wk_cmd(&r, "connect 0"),
		    "two workers (uid %d and 0) connect", NOBODY))
		return;
	for (int i = 0; i < 8; i++)
		kept += wk_cmd(&a, "keep %llu", MiB);
	tap_is(kept, 8, "uid 65534 keeps 8 MiB alive after Release");
	tap_ok(wk_cmd(&r, "alloc %llu", 4 * MiB), "root allocates 4 MiB (12 MiB in all): %s",
	       r.reply);
	if (memfd_kernel) {
		tap_ok(wk_cmd(&r, "alloc %llu", MiB),
		       "memfds: root's next MiB is not refused, the kept ones are not charged: %s",
		       r.reply);
		tap_is(bytes_in_use(bus), 5 * MiB, "BytesInUse 5 MiB (root's)");
		wk_end(&a, true);
		wk_end(&r, true);
		check_baseline(f, bus, b, "MaxBytesTotal");
		return;
	}
	tap_ok(!wk_cmd(&r, "alloc %llu", MiB) && r.err == EDQUOT &&
		       strstr(r.reply, "MaxBytesTotal"),
	       "root's next MiB is refused: %s", r.reply);
	tap_ok(wk_cmd(&a, "drop"), "uid 65534 closes its fds and unmaps");
	tap_ok(wk_cmd(&r, "alloc %llu", MiB),
	       "root's next MiB succeeds: the refusal on MaxBytesTotal swept the other uid's "
	       "lingering buffers (%s)",
	       r.reply);
	tap_is(bytes_in_use(bus), 5 * MiB, "BytesInUse 5 MiB (root's)");
	wk_end(&a, true);
	wk_end(&r, true);
	check_baseline(f, bus, b, "MaxBytesTotal");
}

/* Registers a second, root connection that revokes buffers by path. */
static int revoke_buffer(sd_bus *admin, const char *path)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r = sd_bus_call_method(admin, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "Revoke",
				   &error, NULL, "os", path, "accounting test");

	if (r < 0)
		tap_diag("  Revoke %s: %s", path, error.message);
	sd_bus_error_free(&error);
	return r;
}

/* 1b. Revoke while a holder keeps a mapping: the revoked memory stays charged to its owner. */
static void kept_after_revoke(struct fixture *f, sd_bus *bus, const struct base *b, uid_t uid,
			      bool daemon_memory)
{
	const char *mode = daemon_memory ? "daemon memory" : "client memory";
	char what[96], paths[8][128];
	sd_bus *admin = inspect_bus();
	sd_bus_error error = SD_BUS_ERROR_NULL;
	struct wk w;
	int revoked = 0;

	snprintf(what, sizeof(what), "Revoke, uid %u, %s", (unsigned)uid, mode);
	tap_diag("--- kept-alive after %s ---", what);
	if (!admin ||
	    sd_bus_call_method(admin, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "Register",
			       &error, NULL, "a{sv}", 1, "role", "s", "compositor") < 0) {
		tap_ok(false, "an admin connection registers: %s", error.message);
		sd_bus_error_free(&error);
		return;
	}
	if (!tap_ok(wk_start(&w, uid, NULL) &&
			    wk_cmd(&w, "connect %u",
				   daemon_memory ? (unsigned)DMABROKER_CONNECT_DAEMON_MEMORY : 0u),
		    "%s: the worker connects", what))
		return;
	for (int i = 0; i < 8; i++) {
		if (!wk_cmd(&w, "hold %llu", MiB) || sscanf(w.reply, "ok %127s", paths[i]) != 1) {
			tap_diag("  hold #%d: %s", i + 1, w.reply);
			break;
		}
		revoked += revoke_buffer(admin, paths[i]) >= 0;
	}
	tap_is(revoked, 8, "root revoked 8 buffers the worker holds and maps");
	tap_ok(wk_cmd(&w, "revoked 8") && strcmp(w.reply, "ok 8") == 0,
	       "the worker got 8 Revoked signals and released them, keeping its mappings (%s)",
	       w.reply);
	if (memfd_kernel) {
		tap_is(bytes_in_use(bus), 0,
		       "memfds: revoked buffers still mapped are not charged (BytesInUse 0)");
		tap_ok(wk_cmd(&w, "hold %llu", MiB), "%s: and one more MiB is not refused: %s",
		       what, w.reply);
		tap_ok(wk_cmd(&w, "drop"), "the worker unmaps");
		tap_is(wk_end(&w, true), 0, "the worker exits");
		sd_bus_flush_close_unref(admin);
		check_baseline(f, bus, b, what);
		return;
	}
	tap_is(bytes_in_use(bus), 8 * MiB,
	       "revoked buffers still mapped stay charged (BytesInUse 8 MiB)");
	tap_diag("  NBuffers %u after revoking all", broker_u32(bus, "NBuffers"));
	tap_ok(!wk_cmd(&w, "hold %llu", MiB) && w.err == EDQUOT, "%s: one more MiB is refused: %s",
	       what, w.reply);
	tap_ok(wk_cmd(&w, "drop"), "the worker unmaps");
	tap_ok(wk_cmd(&w, "alloc %llu", MiB), "%s: then the next allocation succeeds", what);
	tap_is(bytes_in_use(bus), 1 * MiB, "BytesInUse 1 MiB: the unmapped ones were freed");
	tap_is(wk_end(&w, true), 0, "the worker exits");
	sd_bus_flush_close_unref(admin);
	check_baseline(f, bus, b, what);
}

/* ---------------------------------------------------------------- cgroup v2 */

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, s, strlen(s)) < 0)
		r = -errno;
	close(fd);
	return r;
}

static int64_t read_i64(const char *path)
{
	char buf[64];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return strtoll(buf, NULL, 10);
}

/* A key of a flat-keyed cgroup file (memory.events). */
static int64_t read_key(const char *path, const char *key)
{
	char line[128], k[64];
	long long v;
	FILE *f = fopen(path, "re");
	int64_t ret = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%63s %lld", k, &v) == 2 && !strcmp(k, key))
			ret = v;
	fclose(f);
	return ret;
}

static int64_t cg_current(const char *cg)
{
	char path[300];

	snprintf(path, sizeof(path), "%s/memory.current", cg);
	return read_i64(path);
}

static int64_t cg_event(const char *cg, const char *key)
{
	char path[300];

	snprintf(path, sizeof(path), "%s/memory.events", cg);
	return read_key(path, key);
}

static int cg_set_max(const char *cg, const char *value)
{
	char path[300];

	snprintf(path, sizeof(path), "%s/memory.max", cg);
	return write_str(path, value);
}

static bool cgroup_setup(pid_t daemon_pid)
{
	char pid[32];

	if (access(CG_ROOT "/cgroup.controllers", F_OK) != 0 &&
	    system("mount -t cgroup2 none " CG_ROOT) != 0)
		return false;
	if (write_str(CG_ROOT "/cgroup.subtree_control", "+memory") < 0)
		return false;
	if ((mkdir(CG_CLIENT, 0755) < 0 && errno != EEXIST) ||
	    (mkdir(CG_DAEMON, 0755) < 0 && errno != EEXIST))
		return false;
	snprintf(pid, sizeof(pid), "%d", (int)daemon_pid);
	return write_str(CG_DAEMON "/cgroup.procs", pid) == 0 &&
	       access(CG_CLIENT "/memory.current", F_OK) == 0;
}

/* Allocates n MiB in one buffer from a worker in the client cgroup; returns the deltas. */
static bool charged(struct wk *w, unsigned n, int64_t *d_client, int64_t *d_daemon)
{
	int64_t c0 = cg_current(CG_CLIENT), d0 = cg_current(CG_DAEMON);
	bool ok = wk_cmd(w, "alloc %llu", n * MiB);

	*d_client = cg_current(CG_CLIENT) - c0;
	*d_daemon = cg_current(CG_DAEMON) - d0;
	return ok;
}

static bool near_mib(int64_t delta, unsigned n)
{
	/* Within 1 MiB of n MiB: the rest is the processes' own small allocations. */
	return delta > (int64_t)(n * MiB) - (int64_t)MiB && delta < (int64_t)(n * MiB + MiB);
}

static bool small(int64_t delta)
{
	return delta < (int64_t)MiB;
}

static void cgroups(struct fixture *f, sd_bus *bus, const struct base *b)
{
	const unsigned N = 16;
	int64_t dc, dd, c_before, kills_client, kills_daemon;
	char max[32];
	struct wk w;

	tap_diag("--- cgroup v2 ---");
	if (!tap_ok(cgroup_setup(f->daemon_pid),
		    "cgroup2 with the memory controller; the daemon in %s", CG_DAEMON))
		return;
	kills_client = cg_event(CG_CLIENT, "oom_kill");
	kills_daemon = cg_event(CG_DAEMON, "oom_kill");

	/* Client memory (the library's default). */
	if (!tap_ok(wk_start(&w, NOBODY, CG_CLIENT) && wk_cmd(&w, "connect 0"),
		    "a worker (uid %d) in %s connects", NOBODY, CG_CLIENT))
		return;
	tap_ok(charged(&w, N, &dc, &dd), "the worker allocates %u MiB through the library (%s)", N,
	       w.reply);
	tap_diag("  client memory: client cgroup memory.current %+.2f MiB, daemon's %+.2f MiB",
		 dmib(dc), dmib(dd));
	tap_ok(near_mib(dc, N), "the client's cgroup was charged about %u MiB (%+.2f MiB)", N,
	       dmib(dc));
	tap_ok(small(dd), "the daemon's cgroup was not (%+.2f MiB)", dmib(dd));
	{
		int64_t c0 = cg_current(CG_CLIENT), d;

		wk_cmd(&w, "release");
		d = cg_current(CG_CLIENT) - c0;
		tap_diag("  after Release: client cgroup memory.current %+.2f MiB, BytesInUse %.2f "
			 "MiB",
			 dmib(d), mib(bytes_in_use(bus)));
		tap_ok(near_mib(-d, N),
		       "Release gives the %u MiB back to the client's cgroup "
		       "(%+.2f MiB)",
		       N, dmib(d));
	}

	tap_is(wk_end(&w, true), 0, "the worker exits");
	tap_ok(wait_bytes(bus, 0, 5000), "its buffer is gone with it");
	tap_diag("  client cgroup after the worker left: memory.current %.2f MiB",
		 mib(cg_current(CG_CLIENT)));

	/* memory.max below what it asks: -ENOMEM from the library, nobody killed. */
	if (!tap_ok(wk_start(&w, NOBODY, CG_CLIENT) && wk_cmd(&w, "connect 0"),
		    "a fresh worker in %s connects", CG_CLIENT))
		return;
	c_before = cg_current(CG_CLIENT);
	snprintf(max, sizeof(max), "%lld", (long long)(c_before + 8 * MiB));
	cg_set_max(CG_CLIENT, max);
	tap_diag("  client memory.max = memory.current + 8 MiB = %.2f MiB; asking for %u MiB",
		 mib(c_before + 8 * MiB), 2 * N);
	{
		bool ok = wk_cmd(&w, "alloc %llu", 2 * N * MiB);

		tap_ok(!ok && w.err == ENOMEM,
		       "over memory.max, dmabroker_allocate fails with -ENOMEM: %s", w.reply);
	}
	if (w.err == -1) {
		tap_diag("  the worker died: %d (the kernel's log says:)", wk_end(&w, false));
		if (system("dmesg | grep -E 'Killed process' | tail -n 1 | sed 's/^/#   /'") != 0)
			tap_diag("  (no dmesg)");
	}
	tap_is(cg_event(CG_CLIENT, "oom_kill") - kills_client, 0,
	       "no OOM kill in the client's cgroup");
	tap_diag("  client memory.events: max %lld, oom %lld, oom_kill %lld",
		 (long long)cg_event(CG_CLIENT, "max"), (long long)cg_event(CG_CLIENT, "oom"),
		 (long long)cg_event(CG_CLIENT, "oom_kill"));
	tap_ok(w.pid > 0, "the worker is alive");
	if (w.pid <= 0 && !(wk_start(&w, NOBODY, CG_CLIENT) && wk_cmd(&w, "connect 0")))
		tap_diag("  could not start another worker: %s", w.reply);
	tap_is(bytes_in_use(bus), 0, "the daemon charged nothing for the refused allocation");
	tap_ok(small(cg_current(CG_CLIENT) - c_before),
	       "the refused memory is not left in the client's cgroup (%+.2f MiB)",
	       dmib(cg_current(CG_CLIENT) - c_before));
	tap_ok(wk_cmd(&w, "alloc %llu", 4 * MiB), "a 4 MiB allocation within memory.max succeeds");
	{
		struct wk other;

		tap_ok(wk_start(&other, 0, NULL) && wk_cmd(&other, "connect 0") &&
			       wk_cmd(&other, "alloc %llu", MiB),
		       "the daemon keeps serving other clients (%s)", other.reply);
		wk_end(&other, true);
	}
	tap_is(wk_end(&w, true), 0, "the worker exits normally");
	wait_bytes(bus, 0, 5000);

	/* Another process of the same cgroup (a bystander with 8 MiB of its own) must not pay. */
	{
		struct wk by;
		int64_t k0 = cg_event(CG_CLIENT, "oom_kill");

		cg_set_max(CG_CLIENT, "max");
		if (tap_ok(wk_start(&by, NOBODY, CG_CLIENT) &&
				   wk_cmd(&by, "ballast %llu", 8 * MiB) &&
				   wk_start(&w, NOBODY, CG_CLIENT) && wk_cmd(&w, "connect 0"),
			   "a bystander with 8 MiB of anonymous memory and a worker share %s",
			   CG_CLIENT)) {
			c_before = cg_current(CG_CLIENT);
			snprintf(max, sizeof(max), "%lld", (long long)(c_before + 8 * MiB));
			cg_set_max(CG_CLIENT, max);
			wk_cmd(&w, "alloc %llu", 2 * N * MiB);
			tap_diag("  with a bystander: the worker asked for %u MiB over memory.max: "
				 "%s",
				 2 * N, w.reply);
			tap_ok(wk_cmd(&by, "drop"),
			       "the bystander survives the worker's request (%s)", by.reply);
			tap_diag("  oom_kill events %+lld",
				 (long long)(cg_event(CG_CLIENT, "oom_kill") - k0));
			if (system("dmesg | grep -E 'Killed process' | tail -n 2 | sed 's/^/#   "
				   "/'") != 0)
				tap_diag("  (no dmesg)");
		}
		wk_end(&w, w.err != -1);
		wk_end(&by, by.err != -1);
		wait_bytes(bus, 0, 5000);
	}
	{
		/* For the report: the same request from a process the OOM killer may not kill. */
		struct wk p;
		int64_t k0 = cg_event(CG_CLIENT, "oom_kill");

		cg_set_max(CG_CLIENT, "max");
		if (wk_start(&p, 0, CG_CLIENT) && wk_cmd(&p, "protect") &&
		    wk_cmd(&p, "connect 0")) {
			c_before = cg_current(CG_CLIENT);
			snprintf(max, sizeof(max), "%lld", (long long)(c_before + 8 * MiB));
			cg_set_max(CG_CLIENT, max);
			wk_cmd(&p, "alloc %llu", 2 * N * MiB);
			tap_diag("  diagnostic: a worker with oom_score_adj -1000, alone in the "
				 "cgroup, asks "
				 "for %u MiB: %s (oom_kill events %+lld)",
				 2 * N, p.reply, (long long)(cg_event(CG_CLIENT, "oom_kill") - k0));
		}
		tap_diag("  diagnostic: that worker ended with %d", wk_end(&p, p.err != -1));
	}
	cg_set_max(CG_CLIENT, "max");
	check_baseline(f, bus, b, "cgroup, client memory");

	/* Daemon memory: the charge lands on the daemon; the client's memory.max does not bound it. */
	if (!tap_ok(wk_start(&w, NOBODY, CG_CLIENT) &&
			    wk_cmd(&w, "connect %u", (unsigned)DMABROKER_CONNECT_DAEMON_MEMORY),
		    "a DMABROKER_CONNECT_DAEMON_MEMORY worker in %s connects (%s)", CG_CLIENT,
		    w.reply))
		return;
	tap_ok(charged(&w, N, &dc, &dd), "it allocates %u MiB (%s)", N, w.reply);
	tap_diag("  daemon memory: client cgroup memory.current %+.2f MiB, daemon's %+.2f MiB",
		 dmib(dc), dmib(dd));
	tap_ok(near_mib(dd, N), "with daemon memory the daemon's cgroup is charged (%+.2f MiB)",
	       dmib(dd));
	tap_ok(small(dc), "and the client's is not (%+.2f MiB)", dmib(dc));
	wk_cmd(&w, "release");
	c_before = cg_current(CG_CLIENT);
	snprintf(max, sizeof(max), "%lld", (long long)(c_before + 8 * MiB));
	cg_set_max(CG_CLIENT, max);
	tap_ok(charged(&w, 2 * N, &dc, &dd),
	       "and the client's memory.max (+8 MiB) does not stop a %u MiB allocation: %s", 2 * N,
	       w.reply);
	tap_diag("  daemon memory over the client's memory.max: client %+.2f MiB, daemon %+.2f MiB",
		 dmib(dc), dmib(dd));
	tap_is(wk_end(&w, true), 0, "the worker exits");
	cg_set_max(CG_CLIENT, "max");
	tap_is(cg_event(CG_DAEMON, "oom_kill"), kills_daemon, "no OOM kill in the daemon's cgroup");
	check_baseline(f, bus, b, "cgroup, daemon memory");
}

/*
 * 3. Memory handed over stays the client's (issue #18): a hostile owner in the client cgroup
 * hands over sparse, beyond-the-end, growable and (after the call) hole-punched memfds of
 * 48 MiB, keeping every memfd; what is taken is shared with a second worker that reads all
 * of it, and Moved. Per 96 MiB handed over the daemon's cgroup may grow by less than 1 MiB,
 * beyond the new backing a Move makes by design while it lives; the clients' cgroup pays
 * for the rest.
 */
static void handed_over(struct fixture *f, sd_bus *bus, const struct base *b)
{
	static const char *const shapes[] = {"sparse", "beyond", "grow", "punch"};
	/* 48 MiB: udmabuf refuses more than its size_limit_mb (64 by default). */
	const unsigned SZ = 48, ROUNDS = 3;
	int64_t d0 = cg_current(CG_DAEMON), c0 = cg_current(CG_CLIENT);
	unsigned handed = 0;
	struct wk owner, reader;

	tap_diag("--- memory handed over (AllocateWithMemfd), %u rounds of %u MiB memfds ---",
		 ROUNDS, SZ);
	if (!tap_ok(wk_start(&owner, NOBODY, CG_CLIENT) && wk_cmd(&owner, "hostile") &&
			    wk_start(&reader, NOBODY, CG_CLIENT) && wk_cmd(&reader, "hostile"),
		    "a hostile owner and a reader (uid %d) in %s connect", NOBODY, CG_CLIENT))
		return;
	tap_diag("  start: daemon cgroup %.2f MiB, client cgroup %.2f MiB", mib(d0), mib(c0));
	for (unsigned round = 1; round <= ROUNDS; round++) {
		for (size_t i = 0; i < ARRAY_SIZE(shapes); i++) {
			const char *shape = shapes[i];
			int64_t dd0 = cg_current(CG_DAEMON), cc0 = cg_current(CG_CLIENT), dd, cc;
			bool ok = wk_cmd(&owner, "handover %llu %s", SZ * MiB, shape);
			bool moved = false;

			handed += SZ;
			dd = cg_current(CG_DAEMON) - dd0;
			cc = cg_current(CG_CLIENT) - cc0;
			tap_diag("  round %u, %s: %s; daemon %+.2f MiB, clients %+.2f MiB", round,
				 shape, owner.reply, dmib(dd), dmib(cc));
			if (strcmp(shape, "punch") != 0) {
				tap_ok(!ok && strstr(owner.reply, "Error.InvalidArgument"),
				       "round %u: a %s memfd is refused with InvalidArgument: %s",
				       round, shape, owner.reply);
			} else {
				tap_ok(ok && strstr(owner.reply, "cannot-grow"),
				       "round %u: a whole memfd is taken, and cannot grow after: "
				       "%s",
				       round, owner.reply);
				tap_ok(cc > (int64_t)((SZ - 1) * MiB) || memfd_kernel,
				       "round %u: the client's cgroup paid for it (%+.2f MiB)",
				       round, dmib(cc));
			}
			tap_ok(small(dd),
			       "round %u, %s: the daemon's cgroup did not pay (%+.2f MiB)", round,
			       shape, dmib(dd));
			if (!ok)
				continue;
			{
				char token[130] = "";

				tap_ok(wk_cmd(&owner, "share") &&
					       sscanf(owner.reply, "ok %129s", token) == 1 &&
					       wk_cmd(&reader, "import %s", token),
				       "round %u: shared; the reader imports and reads it all: %s",
				       round, reader.reply);
			}
			dd0 = cg_current(CG_DAEMON);
			moved = wk_cmd(&owner, "move");
			dd = cg_current(CG_DAEMON) - dd0;
			tap_diag(
				"  round %u: Move of the punched buffer: %s; daemon %+.2f MiB (the "
				"new backing is its by design)",
				round, owner.reply, dmib(dd));
			tap_ok(moved, "round %u: the owner moves it (%s)", round, owner.reply);
			tap_ok(dd < (int64_t)(SZ * MiB + MiB),
			       "round %u: the Move charged the daemon for the new backing only "
			       "(%+.2f MiB, at most %u MiB + 1 MiB)",
			       round, dmib(dd), SZ);
		}
		wk_cmd(&owner, "hrelease");
		wk_cmd(&reader, "hrelease");
		wait_bytes(bus, 0, 5000);
		{
			int64_t grown = cg_current(CG_DAEMON) - d0;

			tap_diag("  after round %u: daemon cgroup %+.2f MiB since the start, "
				 "clients "
				 "%+.2f MiB (%u MiB handed over; the owner keeps its memfds)",
				 round, dmib(grown), dmib(cg_current(CG_CLIENT) - c0), handed);
			tap_ok(grown < (int64_t)(handed * MiB / 96),
			       "after round %u the daemon's cgroup grew %+.2f MiB: less than 1 MiB "
			       "per 96 MiB handed over (%u MiB)",
			       round, dmib(grown), handed);
		}
	}
	tap_ok(wk_cmd(&owner, "hclose"), "the owner closes its memfds");
	tap_is(wk_end(&owner, true), 0, "the owner exits");
	tap_is(wk_end(&reader, true), 0, "the reader exits");
	tap_diag("  end: daemon cgroup %+.2f MiB, client cgroup %+.2f MiB since the start",
		 dmib(cg_current(CG_DAEMON) - d0), dmib(cg_current(CG_CLIENT) - c0));
	check_baseline(f, bus, b, "memory handed over");
}

/*
 * The udmabuf helper's deadline, waited past: the caller's cgroup is frozen while the daemon
 * makes its udmabuf, so the helper started in that cgroup cannot run. The daemon goes on
 * serving, kills the helper at DB_UDMABUF_HELPER_TIMEOUT_SEC (10 s) and answers Busy; nothing
 * is made, nothing is left.
 */
static void helper_deadline(struct fixture *f, sd_bus *bus, const struct base *b)
{
	uint64_t t0, waited;
	struct wk w;
	bool ok;

	if (memfd_kernel) {
		tap_diag("--- no udmabuf here: no helper, no helper deadline ---");
		return;
	}
	tap_diag("--- the udmabuf helper's deadline, in a frozen cgroup ---");
	if (!tap_ok((mkdir(CG_FROZEN, 0755) == 0 || errno == EEXIST) &&
			    wk_start(&w, NOBODY, CG_FROZEN) && wk_cmd(&w, "hostile"),
		    "a worker (uid %d) in %s", NOBODY, CG_FROZEN))
		return;
	/* The call must reach the daemon before the cgroup freezes, and be made after. */
	kill(f->daemon_pid, SIGSTOP);
	wk_send(&w, "handover %llu punch", 4 * MiB);
	msleep(500);
	tap_is(write_str(CG_FROZEN "/cgroup.freeze", "1"), 0, "the worker's cgroup is frozen");
	kill(f->daemon_pid, SIGCONT);
	t0 = now_ms();
	msleep(1000);
	tap_ok(bytes_in_use(bus) != UINT64_MAX, "the daemon answers others meanwhile");
	while (now_ms() - t0 < 12000)
		msleep(100);
	write_str(CG_FROZEN "/cgroup.freeze", "0");
	ok = wk_read(&w);
	waited = now_ms() - t0;
	tap_ok(!ok && strstr(w.reply, "Error.Busy") && strstr(w.reply, "10 s"),
	       "after the helper's 10 s deadline the call is answered Busy: %s", w.reply);
	tap_is(wk_end(&w, true), 0, "the worker exits");
	rmdir(CG_FROZEN);
	tap_diag("  answered after the unfreeze, %.1f s after the daemon continued",
		 (double)waited / 1000);
	check_baseline(f, bus, b, "the helper's deadline");
}

int main(void)
{
	struct fixture f;
	struct base b;
	sd_bus *bus;
	int bufs_before;
	struct timespec t0, t1;

	if (access("/dev/dri", F_OK) != 0 && access("/dev/udmabuf", F_OK) != 0) {
		printf("1..0 # SKIP no /dev/dri and no /dev/udmabuf: run this inside the guest "
		       "(tests/vm/vm-run)\n");
		return 77;
	}
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	memfd_kernel =
		getenv("DMABROKER_VM_EXPECT") && strcmp(getenv("DMABROKER_VM_EXPECT"), "6.1") == 0;
	/* A kernel that is not the one the suite booted for must fail, not change the checks. */
	tap_ok((access("/dev/udmabuf", F_OK) != 0) == memfd_kernel, "/dev/udmabuf is %s",
	       memfd_kernel ? "absent: the buffers are memfds" : "there");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	bufs_before = debugfs_dmabuf_objects();
	tap_require(fixture_start(&f, "[Limits]\nMaxBytesPerUid=8M\nMaxBytesTotal=12M\n") == 0,
		    "start a private bus and dmabrokerd (MaxBytesPerUid=8M, MaxBytesTotal=12M) "
		    "in the guest");
	bus = inspect_bus();
	b.fds = fixture_daemon_fds(&f);
	b.objects = debugfs_dmabuf_objects();
	tap_diag("baseline: dma-bufs %d, daemon fds %d", b.objects, b.fds);

	plain_release(&f, bus, &b, false);
	plain_release(&f, bus, &b, true);
	kept_after_release(&f, bus, &b, NOBODY, false);
	kept_after_release(&f, bus, &b, 0, false);
	kept_after_release(&f, bus, &b, NOBODY, true);
	kept_total(&f, bus, &b);
	kept_after_revoke(&f, bus, &b, NOBODY, false);
	kept_after_revoke(&f, bus, &b, NOBODY, true);

	sd_bus_flush_close_unref(bus);
	tap_is(fixture_stop(&f), 0, "the daemon exits cleanly");

	tap_require(fixture_start(&f, "[Limits]\nMaxBytesPerUid=256M\n") == 0,
		    "start a second daemon (MaxBytesPerUid=256M) for the cgroup tests");
	bus = inspect_bus();
	b.fds = fixture_daemon_fds(&f);
	b.objects = debugfs_dmabuf_objects();
	cgroups(&f, bus, &b);
	handed_over(&f, bus, &b);
	helper_deadline(&f, bus, &b);
	sd_bus_flush_close_unref(bus);
	tap_is(fixture_stop(&f), 0, "the daemon exits cleanly");
	rmdir(CG_CLIENT);
	rmdir(CG_DAEMON);
	tap_ok(wait_objects(bufs_before, 5000),
	       "debugfs bufinfo lists no dma-buf left behind (%d, before %d)",
	       debugfs_dmabuf_objects(), bufs_before);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	tap_diag("guest run time of the test: %.1f s",
		 (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	return tap_done();
}
