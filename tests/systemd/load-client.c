// SPDX-License-Identifier: MIT
/*
 * load-client: library load for the crash-loop test (test-crash-loop.sh). Two registered
 * clients in one process, an owner and an importer (each its own bus connection), keep
 * allocating (library memfd, udmabuf and dma-heap, one at a time and in sets), writing,
 * sharing, importing, verifying and releasing buffers, holding a rolling set, while the
 * test kills the daemon under them. A call that the kill cut off fails once and is counted;
 * corrupted bytes in a mapping are never tolerated.
 *
 *   load-client NAME [--idle]     (--idle: no load until the first resume)
 *
 * Commands, one a line on stdin; answers on stdout as "key value" lines ending with "end":
 *   mark     allocate three owned buffers and issue a token on each (single-use, reusable
 *            with a 10 min expiry, expiring in 1 ms); keep them and the newest imported
 *            buffer out of the rolling set until the next check
 *   check    pause, then check everything held and the kept items (see cmd_check)
 *   resume   carry on after a check
 *   quota N  the owner allocates up to N daemon-allocated buffers (dma-heap), held until
 *            exit; says how many succeeded and the first error
 *   churn N  the owner allocates (dma-heap) and releases a buffer, N times; says how many
 *            succeeded and the first error
 *   raw      a raw sd-bus connection registers and calls Allocate (dma-heap): says the
 *            error's D-Bus name and message, or the buffer (held until exit)
 *   quit     release everything and exit
 * EOF is quit.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "dmabroker.h"

#define MAX_HELD 12
#define MAX_TOKENS 16
#define MAX_EXTRA 64
/* Between steps: under TCG two unthrottled clients would starve the daemon and systemd. */
#define STEP_PAUSE_US (20 * 1000)

struct held {
	struct dmabroker_buffer *buf;
	int side; /* 0: owner, 1: importer */
	uint64_t id;
	uint64_t sum;
	bool kept;
	bool shared; /* a token for it went into the queue */
};

struct tok {
	struct dmabroker_token token;
	uint64_t buffer_id;
	uint64_t sum;
};

static const char *name;
static struct dmabroker *ctx[2];
static struct held pool[MAX_HELD + 8];
static unsigned n_pool;
static struct tok tokens[MAX_TOKENS];
static unsigned n_tokens;
static struct tok kept_single, kept_reusable, kept_expired;
static bool have_kept;
static struct dmabroker_buffer *extra[MAX_EXTRA]; /* quota's buffers */
static unsigned n_extra;
static sd_bus *raw_bus;
static uint64_t max_id, n_ops, n_errors, n_corrupt, n_since_check_errors;
static char last_errors[512];

static void say(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(const char *key, const char *fmt, ...)
{
	va_list ap;

	printf("%s ", key);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void op_failed(int side, const char *op, int r)
{
	size_t len = strlen(last_errors);

	n_errors++;
	n_since_check_errors++;
	fprintf(stderr, "%s: %s (%c) failed: %s (%s)\n", name, op, "ab"[side], strerror(-r),
		dmabroker_last_error(ctx[side]));
	if (len < sizeof(last_errors) - 64)
		snprintf(last_errors + len, sizeof(last_errors) - len, "%s%s:%s", len ? "," : "",
			 op, strerror(-r));
	usleep(50 * 1000);
}

static uint64_t buffer_id(struct dmabroker_buffer *buf)
{
	const char *p = strrchr(dmabroker_buffer_get_path(buf), '/');

	return p ? strtoull(p + 1, NULL, 10) : 0;
}

static uint64_t fnv(const uint8_t *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

static int checksum(struct dmabroker_buffer *buf, uint64_t *ret)
{
	uint8_t *p;
	int r = dmabroker_buffer_map(buf, (void **)&p);

	if (r < 0)
		return r;
	dmabroker_buffer_begin_cpu_access(buf, DMABROKER_ACCESS_READ);
	*ret = fnv(p, dmabroker_buffer_get_size(buf));
	dmabroker_buffer_end_cpu_access(buf, DMABROKER_ACCESS_READ);
	return 0;
}

static int fill(struct dmabroker_buffer *buf, uint64_t seed, uint64_t *ret)
{
	size_t size = dmabroker_buffer_get_size(buf);
	uint8_t *p;
	int r = dmabroker_buffer_map(buf, (void **)&p);

	if (r < 0)
		return r;
	dmabroker_buffer_begin_cpu_access(buf, DMABROKER_ACCESS_WRITE);
	for (size_t off = 0; off < size; off += 4096)
		memset(p + off, (int)((seed * 131 + off / 4096) & 0xff),
		       size - off < 4096 ? size - off : 4096);
	dmabroker_buffer_end_cpu_access(buf, DMABROKER_ACCESS_WRITE);
	return checksum(buf, ret);
}

static void add_held(struct dmabroker_buffer *buf, int side, uint64_t sum)
{
	struct held *h;

	if (n_pool == sizeof(pool) / sizeof(pool[0])) {
		dmabroker_release(buf);
		return;
	}
	h = &pool[n_pool++];

	*h = (struct held){.buf = buf, .side = side, .id = buffer_id(buf), .sum = sum};
	if (h->id > max_id)
		max_id = h->id;
}

/* Releases the oldest buffers that are not kept, down to MAX_HELD. */
static void trim(void)
{
	while (n_pool > MAX_HELD) {
		unsigned i = 0;

		while (i < n_pool && pool[i].kept)
			i++;
		if (i == n_pool)
			return;
		dmabroker_release(pool[i].buf); /* freed whatever the daemon says */
		memmove(&pool[i], &pool[i + 1], (n_pool - i - 1) * sizeof(pool[0]));
		n_pool--;
	}
}

static int newest(int side, bool unshared)
{
	for (int i = (int)n_pool - 1; i >= 0; i--)
		if (pool[i].side == side && !(unshared && pool[i].shared))
			return i;
	return -1;
}

static bool importer_holds(uint64_t id)
{
	for (unsigned i = 0; i < n_pool; i++)
		if (pool[i].side == 1 && pool[i].id == id)
			return true;
	return false;
}

static void step_allocate(void)
{
	static const char *const backends[] = {NULL, "udmabuf", "dma-heap"};
	struct dmabroker_alloc_spec spec = {.size = (uint64_t)(4 + n_ops % 5 * 4) * 4096,
					    .backend = backends[n_ops % 3],
					    .name = name};
	struct dmabroker_buffer *bufs[2];
	unsigned count = n_ops % 7 == 0 ? 2 : 1;
	uint64_t sum;
	int r;

	r = count == 1 ? dmabroker_allocate(ctx[0], &spec, sizeof(spec), &bufs[0])
		       : dmabroker_allocate_many(ctx[0], &spec, sizeof(spec), count, bufs);
	if (r < 0) {
		op_failed(0, count == 1 ? "allocate" : "allocate-many", r);
		return;
	}
	for (unsigned i = 0; i < count; i++) {
		r = fill(bufs[i], n_ops + i, &sum);
		if (r < 0) {
			op_failed(0, "map", r);
			dmabroker_release(bufs[i]);
			continue;
		}
		add_held(bufs[i], 0, sum);
	}
	trim();
}

static int share(struct held *h, const struct dmabroker_share_opts *opts, struct tok *ret)
{
	int r = dmabroker_share(h->buf, opts, sizeof(*opts), &ret->token);

	if (r < 0)
		return r;
	ret->buffer_id = h->id;
	ret->sum = h->sum;
	return 0;
}

static void step_share(void)
{
	struct dmabroker_share_opts opts = {.reusable = n_ops % 2, .expires_in_ms = 600000};
	int i = newest(0, true);
	int r;

	if (i < 0 || n_tokens == MAX_TOKENS)
		return;
	r = share(&pool[i], n_ops % 3 ? &opts : NULL, &tokens[n_tokens]);
	if (r < 0) {
		op_failed(0, "share", r);
	} else {
		pool[i].shared = true;
		n_tokens++;
	}
}

/* Imports t with the importer and checks the bytes; returns the import's result. The
 * importer never imports what it holds: releasing the second object would detach it. */
static int import(const struct tok *t, bool keep)
{
	struct dmabroker_buffer *buf;
	uint64_t sum;
	int r;

	if (importer_holds(t->buffer_id))
		return -EALREADY;
	r = dmabroker_import(ctx[1], &t->token, &buf);
	if (r < 0)
		return r;
	r = checksum(buf, &sum);
	if (r < 0) {
		dmabroker_release(buf);
		return r;
	}
	if (sum != t->sum || buffer_id(buf) != t->buffer_id) {
		n_corrupt++;
		fprintf(stderr,
			"%s: imported buffer %" PRIu64 " (wanted %" PRIu64
			") has checksum %016" PRIx64 ", wanted %016" PRIx64 "\n",
			name, buffer_id(buf), t->buffer_id, sum, t->sum);
	}
	if (keep)
		add_held(buf, 1, sum);
	else
		dmabroker_release(buf);
	return 0;
}

static void step_import(void)
{
	int r;

	if (n_tokens == 0)
		return;
	r = import(&tokens[0], true);
	/* The token is spent either way: a failed import may have used it up. */
	memmove(&tokens[0], &tokens[1], (n_tokens - 1) * sizeof(tokens[0]));
	n_tokens--;
	if (r < 0 && r != -ENOENT && r != -EALREADY)
		op_failed(1, "import", r);
	trim();
}

/* Every mapping still holds the bytes written or read when it came. */
static unsigned verify_mappings(void)
{
	unsigned bad = 0;

	for (unsigned i = 0; i < n_pool; i++) {
		uint64_t sum;
		int r = checksum(pool[i].buf, &sum);

		if (r < 0 || sum != pool[i].sum) {
			bad++;
			fprintf(stderr, "%s: buffer %" PRIu64 " (%c): mapping %s\n", name,
				pool[i].id, "ab"[pool[i].side],
				r < 0 ? strerror(-r) : "changed its bytes");
		}
	}
	n_corrupt += bad;
	return bad;
}

static void step(void)
{
	switch (n_ops++ % 4) {
	case 0:
		step_allocate();
		break;
	case 1:
		step_share();
		break;
	case 2:
		step_import();
		break;
	default:
		verify_mappings();
		(void)dmabroker_dispatch(ctx[0]);
		(void)dmabroker_dispatch(ctx[1]);
		break;
	}
}

/* A fresh owned buffer, kept until the next check. */
static int allocate_kept(void)
{
	struct dmabroker_alloc_spec spec = {.size = 65536, .name = "kept"};
	struct dmabroker_buffer *buf;
	uint64_t sum;
	int r = dmabroker_allocate(ctx[0], &spec, sizeof(spec), &buf);

	if (r >= 0)
		r = fill(buf, n_ops + 99, &sum);
	if (r < 0)
		return r;
	add_held(buf, 0, sum);
	pool[n_pool - 1].kept = pool[n_pool - 1].shared = true;
	say("kept-owned", "%s", dmabroker_buffer_get_path(buf));
	return (int)n_pool - 1;
}

/* Before a kill: three fresh owned buffers, with a single-use token, a reusable one
 * (10 min) and one that expires in 1 ms, and the newest imported buffer are
 * kept out of the rolling set until the next check. */
static void cmd_mark(void)
{
	struct dmabroker_share_opts reusable = {.reusable = true, .expires_in_ms = 600000};
	struct dmabroker_share_opts expiring = {.expires_in_ms = 1};
	int k1, k2 = -1, k3 = -1, i = newest(1, false), r;

	have_kept = false;
	r = k1 = allocate_kept();
	if (r >= 0)
		r = k2 = allocate_kept();
	if (r >= 0)
		r = k3 = allocate_kept();
	if (r >= 0)
		r = share(&pool[k1], NULL, &kept_single);
	if (r >= 0)
		r = share(&pool[k2], &reusable, &kept_reusable);
	if (r >= 0)
		r = share(&pool[k3], &expiring, &kept_expired);
	if (r < 0) {
		say("error", "kept buffers and tokens: %s (%s)", strerror(-r),
		    dmabroker_last_error(ctx[0]));
		goto out;
	}
	have_kept = true;
	if (i >= 0) {
		pool[i].kept = true;
		say("kept-imported", "%s", dmabroker_buffer_get_path(pool[i].buf));
	}
out:
	say("maxid", "%" PRIu64, max_id);
	say("end", "mark");
}

/*
 * After a restart: every mapping holds its bytes; the kept tokens import (single-use and
 * reusable, with the right bytes) and the expired one does not; both clients' next calls
 * succeed (allocate, share, import); a new buffer's id is above every id seen before. Then
 * lists what the clients hold, for the test to compare with the daemon's view.
 */
static void cmd_check(void)
{
	struct dmabroker_alloc_spec next_spec = {.size = 8192, .name = name};
	struct dmabroker_buffer *buf;
	struct tok t;
	uint64_t before = max_id, sum;
	unsigned bad = verify_mappings();
	int r, failures = 0;

	say("ops", "%" PRIu64, n_ops);
	say("errors-since-last-check", "%" PRIu64 " %s", n_since_check_errors,
	    last_errors[0] ? last_errors : "-");
	n_since_check_errors = 0;
	last_errors[0] = '\0';
	say("mappings", "%u %s", n_pool, bad ? "CHANGED" : "ok");
	failures += bad != 0;
	if (have_kept) {
		r = import(&kept_single, true);
		say("import-kept-single", "%s", r < 0 ? strerror(-r) : "ok");
		failures += r < 0;
		r = import(&kept_reusable, true);
		say("import-kept-reusable", "%s", r < 0 ? strerror(-r) : "ok");
		failures += r < 0;
		r = import(&kept_expired, false);
		say("import-expired", "%s", r < 0 ? strerror(-r) : "IMPORTED");
		failures += r >= 0;
	} else {
		say("import-kept", "nothing kept");
		failures++;
	}
	for (unsigned i = 0; i < n_pool; i++)
		pool[i].kept = false;
	have_kept = false;

	/* The next calls of both clients. */
	r = dmabroker_allocate(ctx[0], &next_spec, sizeof(next_spec), &buf);
	if (r >= 0) {
		r = fill(buf, 7, &sum);
		if (r >= 0) {
			add_held(buf, 0, sum);
			say("new-id", "%" PRIu64 " after %" PRIu64 " %s", buffer_id(buf), before,
			    buffer_id(buf) > before ? "ok" : "REUSED");
			failures += buffer_id(buf) <= before;
			r = share(&pool[n_pool - 1], NULL, &t);
			if (r >= 0)
				r = import(&t, true);
		} else {
			dmabroker_release(buf);
		}
	}
	say("next-calls", "%s", r < 0 ? strerror(-r) : "ok");
	failures += r < 0;
	say("clients", "%s %s", dmabroker_client_path(ctx[0]), dmabroker_client_path(ctx[1]));
	for (unsigned i = 0; i < n_pool; i++)
		say("held", "%s %s", dmabroker_buffer_get_path(pool[i].buf),
		    pool[i].side ? "importer" : "owner");
	say("corrupt-total", "%" PRIu64, n_corrupt);
	failures += n_corrupt != 0;
	say("checked", "%s", failures ? "FAIL" : "ok");
	say("end", "check");
}

static void cmd_quota(unsigned n)
{
	struct dmabroker_alloc_spec spec = {.size = 4096, .backend = "dma-heap", .name = "quota"};
	unsigned ok = 0;
	int r = 0;

	while (ok < n && n_extra < MAX_EXTRA) {
		r = dmabroker_allocate(ctx[0], &spec, sizeof(spec), &extra[n_extra]);
		if (r < 0)
			break;
		if (buffer_id(extra[n_extra]) > max_id)
			max_id = buffer_id(extra[n_extra]);
		say("quota-buffer", "%s", dmabroker_buffer_get_path(extra[n_extra]));
		n_extra++;
		ok++;
	}
	say("quota-allocated", "%u", ok);
	say("quota-error", "%s: %s", r < 0 ? strerror(-r) : "none",
	    r < 0 ? dmabroker_last_error(ctx[0]) : "");
	say("end", "quota");
}

static void cmd_churn(unsigned n)
{
	struct dmabroker_alloc_spec spec = {.size = 4096, .backend = "dma-heap", .name = "churn"};
	struct dmabroker_buffer *buf;
	unsigned ok = 0;
	int r = 0;

	while (ok < n) {
		r = dmabroker_allocate(ctx[0], &spec, sizeof(spec), &buf);
		if (r < 0)
			break;
		dmabroker_release(buf);
		ok++;
	}
	say("churn-done", "%u", ok);
	say("churn-error", "%s: %s", r < 0 ? strerror(-r) : "none",
	    r < 0 ? dmabroker_last_error(ctx[0]) : "");
	say("end", "churn");
}

/* The D-Bus error name the library turns into errno, from a call of our own. */
static void cmd_raw(void)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	const char *path;
	int r;

	if (!raw_bus) {
		r = sd_bus_open_system(&raw_bus);
		if (r >= 0)
			r = sd_bus_call_method(raw_bus, "org.dmabroker.Broker1",
					       "/org/dmabroker/Broker1", "org.dmabroker.Broker1",
					       "Register", &error, NULL, "a{sv}", 1, "name", "s",
					       "raw");
		if (r < 0) {
			say("raw-register", "%s %s", error.name ? error.name : strerror(-r),
			    error.message ? error.message : "");
			goto out;
		}
	}
	r = sd_bus_call_method(raw_bus, "org.dmabroker.Broker1", "/org/dmabroker/Broker1",
			       "org.dmabroker.Broker1", "Allocate", &error, &reply, "a{sv}", 2,
			       "size", "t", (uint64_t)4096, "backend", "s", "dma-heap");
	if (r < 0)
		say("raw-error", "%s %s", error.name ? error.name : strerror(-r),
		    error.message ? error.message : "");
	else if (sd_bus_message_read(reply, "o", &path) >= 0)
		say("raw-buffer", "%s", path);
out:
	sd_bus_error_free(&error);
	sd_bus_message_unref(reply);
	say("end", "raw");
}

/* One command line, or "" when none is waiting (blocking when paused). */
static bool read_command(bool block, char *line, size_t len)
{
	struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};

	line[0] = '\0';
	if (!block && poll(&p, 1, 0) <= 0)
		return true;
	if (!fgets(line, (int)len, stdin))
		return false;
	line[strcspn(line, "\n")] = '\0';
	return true;
}

int main(int argc, char **argv)
{
	static const char *const roles[] = {"cpu", "gpu"};
	bool paused = false;
	char line[128], who[64];
	int r;

	name = argc > 1 ? argv[1] : "load";
	paused = argc > 2 && !strcmp(argv[2], "--idle");
	setvbuf(stdin, NULL, _IONBF, 0);
	for (int i = 0; i < 2; i++) {
		snprintf(who, sizeof(who), "%s-%c", name, "ab"[i]);
		r = dmabroker_connect(&ctx[i], NULL, 0);
		if (r >= 0)
			r = dmabroker_register(ctx[i], roles[i], i == 1, who, NULL);
		if (r < 0) {
			fprintf(stderr, "%s: cannot connect and register: %s\n", who, strerror(-r));
			return 1;
		}
	}
	say("clients", "%s %s", dmabroker_client_path(ctx[0]), dmabroker_client_path(ctx[1]));
	say("end", "start");
	for (;;) {
		if (!read_command(paused, line, sizeof(line)))
			break;
		if (!strcmp(line, "mark")) {
			cmd_mark();
		} else if (!strcmp(line, "check")) {
			cmd_check();
			paused = true;
		} else if (!strcmp(line, "resume")) {
			paused = false;
		} else if (!strncmp(line, "quota ", 6)) {
			cmd_quota((unsigned)atoi(line + 6));
		} else if (!strncmp(line, "churn ", 6)) {
			cmd_churn((unsigned)atoi(line + 6));
		} else if (!strcmp(line, "raw")) {
			cmd_raw();
		} else if (!strcmp(line, "quit")) {
			break;
		} else if (line[0]) {
			say("error", "unknown command %s", line);
			say("end", "error");
		}
		if (!paused) {
			step();
			usleep(STEP_PAUSE_US);
		}
	}
	for (unsigned i = 0; i < n_pool; i++)
		dmabroker_release(pool[i].buf);
	for (unsigned i = 0; i < n_extra; i++)
		dmabroker_release(extra[i]);
	sd_bus_flush_close_unref(raw_bus);
	for (int i = 0; i < 2; i++)
		dmabroker_disconnect(ctx[i]);
	fprintf(stderr,
		"%s: %" PRIu64 " operations, %" PRIu64 " failed calls, %" PRIu64 " corrupt\n", name,
		n_ops, n_errors, n_corrupt);
	return n_corrupt ? 1 : 0;
}
