// SPDX-License-Identifier: MIT
/*
 * Hostile clients, counted. For each kind of abuse: how many requests were tried, how many got a
 * named error, and that afterwards the daemon still serves, a victim's buffer keeps its bytes,
 * and the daemon's fds, memory, clients and buffers are back where they were (and, on a real
 * kernel, that debugfs lists no dma-buf left behind).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <drm_fourcc.h>

#include "bus-util.h"
#include "dmabroker.h"
#include "fixture.h"
#include "layout.h"
#include "protocol.h"
#include "rawbus.h"
#include "tap.h"

#define VICTIM_SIZE (1u << 20)
#define LIMIT_BUFFERS 32
#define LIMIT_TOKENS 32
/* The daemon's heap may keep some freed memory (malloc arenas, hash tables at their high-water
 * mark); more than this after a kind is a leak. */
#define RSS_SLACK_KIB 4096

struct kind_result {
	const char *kind;
	unsigned tried;
	unsigned refused; /* answered with a named error (or, for raw clients, dropped) */
	bool ok;
};

static struct fixture f;
static sd_bus *inspect;
static struct dmabroker *victim;
static struct dmabroker_buffer *victim_buf;
static uint8_t *victim_map;
static int base_fds, base_dmabufs;
static long base_rss;
static struct kind_result results[16];
static int n_results;

static long daemon_rss_kib(void)
{
	char path[64], line[256];
	long kib = -1;
	FILE *file;

	snprintf(path, sizeof(path), "/proc/%d/status", f.daemon_pid);
	file = fopen(path, "re");
	if (!file)
		return -1;
	while (fgets(line, sizeof(line), file))
		if (sscanf(line, "VmRSS: %ld", &kib) == 1)
			break;
	fclose(file);
	return kib;
}

static bool victim_intact(void)
{
	bool ok = true;

	dmabroker_buffer_begin_cpu_access(victim_buf, DMABROKER_ACCESS_READ);
	for (size_t i = 0; i < VICTIM_SIZE; i++)
		ok &= victim_map[i] == (uint8_t)(i * 7);
	dmabroker_buffer_end_cpu_access(victim_buf, DMABROKER_ACCESS_READ);
	return ok;
}

/* After a kind: everything back where it was. */
static bool warming_up;

static void settle(const char *kind, unsigned tried, unsigned refused, unsigned want_refused)
{
	struct dmabroker_token t;
	bool drained = fixture_wait_clients(&f, 1, 20000);
	bool served = dmabroker_share(victim_buf, NULL, 0, &t) == 0;
	int fds = fixture_daemon_fds(&f);
	long rss = daemon_rss_kib();
	uint32_t buffers = broker_u32(inspect, "NBuffers");
	int dmabufs = base_dmabufs >= 0 ? debugfs_dmabuf_objects() : -1;
	bool ok;

	/*
	 * A killed client may leave a reply's fd in flight when the daemon lets go of its
	 * buffers; the daemon asks the kernel again 0.25, 1, 4 and 16 s after (docs/limits.md).
	 * Give it that long before calling anything left a leak.
	 */
	for (int i = 0; i < 200 && (fds != base_fds || buffers != 1 ||
				    (base_dmabufs >= 0 && dmabufs != base_dmabufs));
	     i++) {
		struct timespec ts = {0, 100 * 1000000L};

		nanosleep(&ts, NULL);
		fds = fixture_daemon_fds(&f);
		buffers = broker_u32(inspect, "NBuffers");
		dmabufs = base_dmabufs >= 0 ? debugfs_dmabuf_objects() : -1;
	}

	if (warming_up)
		return;

	ok = tap_ok(refused >= want_refused, "%s: %u requests, %u refused with a named error", kind,
		    tried, refused);
	ok &= tap_ok(served && drained, "%s: the daemon still serves the victim; only it is left",
		     kind);
	ok &= tap_ok(victim_intact(), "%s: the victim's %u bytes are intact", kind, VICTIM_SIZE);
	ok &= tap_ok(fds == base_fds, "%s: daemon fds %d (baseline %d)", kind, fds, base_fds);
#if defined(__SANITIZE_ADDRESS__)
	/* ASan's quarantine keeps freed memory; LeakSanitizer checks leaks when the daemon exits. */
	tap_diag("%s: daemon RSS %ld KiB (baseline %ld; not compared under ASan)", kind, rss,
		 base_rss);
#else
	ok &= tap_ok(rss - base_rss < RSS_SLACK_KIB, "%s: daemon RSS %ld KiB (baseline %ld, +%ld)",
		     kind, rss, base_rss, rss - base_rss);
#endif
	ok &= tap_ok(buffers == 1, "%s: the daemon holds %u buffer(s): the victim's", kind,
		     buffers);
	if (base_dmabufs >= 0)
		ok &= tap_ok(dmabufs == base_dmabufs, "%s: debugfs lists %d dma-bufs (baseline %d)",
			     kind, dmabufs, base_dmabufs);
	results[n_results++] = (struct kind_result){kind, tried, refused, ok};
}

static bool named(const sd_bus_error *e)
{
	return e->name && strncmp(e->name, "org.", 4) == 0;
}

/* One raw sd-bus call of Allocate with a spec built by the caller. */
static bool allocate_refused(sd_bus *bus, const char *types, ...)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL;
	va_list ap;
	bool refused;
	int r;

	sd_bus_message_new_method_call(bus, &m, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
				       "Allocate");
	va_start(ap, types);
	sd_bus_message_appendv(m, types, ap);
	va_end(ap);
	r = sd_bus_call(bus, m, 0, &error, NULL);
	refused = r < 0 && named(&error);
	sd_bus_error_free(&error);
	sd_bus_message_unref(m);
	return refused;
}

static sd_bus *registered_bus(void)
{
	sd_bus *bus = inspect_bus();

	tap_require(bus && sd_bus_call_method(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					      "Register", NULL, NULL, "a{sv}", 0) >= 0,
		    "an attacker registers");
	return bus;
}

static void kind_bad_sizes(void)
{
	sd_bus *bus = registered_bus();
	unsigned tried = 0, refused = 0;

	for (int i = 0; i < 200; i++) {
		uint64_t size;
		uint32_t wh[2];

		size = i == 0 ? 0 : i == 1 ? (uint64_t)1 << 63 : i == 2 ? UINT64_MAX : 0;
		if (i >= 3) {
			getrandom(&size, sizeof(size), 0);
			size |= (uint64_t)1 << 40; /* over MaxBufferSize, never a real allocation */
		}
		tried++;
		refused += allocate_refused(bus, "a{sv}", 1, "size", "t", size);
		getrandom(wh, sizeof(wh), 0);
		wh[0] |= 1u << 20;
		wh[1] |= 1u << 20; /* width * height * 4 overflows or exceeds every limit */
		tried++;
		refused += allocate_refused(bus, "a{sv}", 3, "width", "u", wh[0], "height", "u",
					    wh[1], "fourcc", "u", DRM_FORMAT_XRGB8888);
	}
	sd_bus_flush_close_unref(bus);
	settle("bad sizes (0, 1<<63, 2^64-1, random huge, overflowing width*height*bpp)", tried,
	       refused, tried);
}

static void kind_unknown_formats(void)
{
	sd_bus *bus = registered_bus();
	unsigned tried = 0, refused = 0;

	while (tried < 300) {
		uint32_t fourcc;
		uint64_t modifier;

		getrandom(&fourcc, sizeof(fourcc), 0);
		if (db_format_lookup(fourcc))
			continue;
		tried++;
		refused += allocate_refused(bus, "a{sv}", 3, "width", "u", 64u, "height", "u", 64u,
					    "fourcc", "u", fourcc);
		getrandom(&modifier, sizeof(modifier), 0);
		tried++;
		refused += allocate_refused(bus, "a{sv}", 4, "width", "u", 64u, "height", "u", 64u,
					    "fourcc", "u", DRM_FORMAT_XRGB8888, "modifier", "t",
					    modifier | 1);
	}
	sd_bus_flush_close_unref(bus);
	settle("unknown formats and modifiers", tried, refused, tried);
}

static void kind_wrong_signatures(void)
{
	static const char *const methods[] = {"Register", "Allocate", "AllocateMany", "Export",
					      "Share",	  "Import",   "Release",      "Reacquire",
					      "Move",	  "Revoke",   "OpenPeer"};
	sd_bus *bus = registered_bus();
	unsigned tried = 0, refused = 0;

	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		for (int shape = 0; shape < 5; shape++) {
			sd_bus_error error = SD_BUS_ERROR_NULL;
			sd_bus_message *m = NULL;
			int r;

			sd_bus_message_new_method_call(bus, &m, DB_BUS_NAME, DB_OBJECT_PATH,
						       DB_IFACE_BROKER, methods[i]);
			switch (shape) {
			case 0:
				sd_bus_message_append(m, "s", "hello");
				break;
			case 1:
				sd_bus_message_append(m, "uuu", 1u, 2u, 3u);
				break;
			case 2:
				sd_bus_message_append(m, "a{ss}", 1, "size", "4096");
				break;
			case 3:
				sd_bus_message_append(m, "ay", 3, 1, 2, 3);
				break;
			default:
				sd_bus_message_append(m, "(tt)", (uint64_t)1, (uint64_t)2);
				break;
			}
			r = sd_bus_call(bus, m, 0, &error, NULL);
			tried++;
			refused += r < 0 && error.name != NULL;
			sd_bus_error_free(&error);
			sd_bus_message_unref(m);
		}
	}
	sd_bus_flush_close_unref(bus);
	settle("wrong D-Bus signatures, every method", tried, refused, tried);
}

static void kind_export_non_dmabuf(void)
{
	sd_bus *bus = registered_bus();
	unsigned tried = 0, refused = 0;

	for (int round = 0; round < 20; round++) {
		int p[2], s[2], fds[6];
		char tmpl[] = "/tmp/dmabroker-hostile-XXXXXX";

		pipe2(p, O_CLOEXEC);
		socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s);
		fds[0] = p[0];
		fds[1] = s[0];
		fds[2] = mkstemp(tmpl);
		unlink(tmpl);
		fds[3] = open("/dev/null", O_RDWR | O_CLOEXEC);
		fds[4] = eventfd(0, EFD_CLOEXEC);
		fds[5] = memfd_create("not-a-dmabuf", MFD_CLOEXEC);
		ftruncate(fds[5], 65536);
		for (int i = 0; i < 6; i++) {
			sd_bus_error error = SD_BUS_ERROR_NULL;
			int r = sd_bus_call_method(bus, DB_BUS_NAME, DB_OBJECT_PATH,
						   DB_IFACE_BROKER, "Export", &error, NULL,
						   "ha{sv}", fds[i], 0);

			tried++;
			refused +=
				r < 0 && sd_bus_error_has_name(&error, DB_ERROR_INVALID_ARGUMENT);
			sd_bus_error_free(&error);
			close(fds[i]);
		}
		close(p[1]);
		close(s[1]);
	}
	sd_bus_flush_close_unref(bus);
	settle("Export of a pipe, socket, file, /dev/null, eventfd, memfd", tried, refused, tried);
}

static void kind_closed_fds(void)
{
	uint8_t body[16] = {0};
	unsigned tried = 0, refused = 0;
	char err[256];

	for (int i = 0; i < 20; i++) {
		struct rawbus rb;
		int serial, r;

		tap_require(rawbus_connect(&rb, f.address) == 0, "a raw client connects");
		serial = rawbus_call(&rb, "Register", "a{sv}", body + 8, 8, 0, NULL, 0);
		rawbus_wait_reply(&rb, (uint32_t)serial, err, sizeof(err), 5000);
		serial = rawbus_call(&rb, "Export", "ha{sv}", body, 16, (uint32_t)(i % 2), NULL, 0);
		r = rawbus_wait_reply(&rb, (uint32_t)serial, err, sizeof(err), 5000);
		tried++;
		refused += r == 1 || r == -ECONNRESET;
		if (r != 1 && r != -ECONNRESET)
			tap_diag("raw bus client %d: %d %s", i, r, err);
		rawbus_close(&rb);
	}
	/* And on peer connections, where no bus daemon filters first. */
	for (int i = 0; i < 20; i++) {
		sd_bus *bus = registered_bus();
		sd_bus_message *reply = NULL;
		struct rawbus rb;
		int borrowed, serial, r;

		tap_require(sd_bus_call_method(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					       "OpenPeer", NULL, &reply, NULL) >= 0 &&
				    sd_bus_message_read(reply, "h", &borrowed) >= 0,
			    "OpenPeer");
		tap_require(rawbus_connect_peer(&rb, fcntl(borrowed, F_DUPFD_CLOEXEC, 3)) == 0,
			    "raw peer");
		sd_bus_message_unref(reply);
		serial = rawbus_call_peer(&rb, "Export", "ha{sv}", body, 16, 0, NULL, 0);
		r = rawbus_wait_reply(&rb, (uint32_t)serial, err, sizeof(err), 5000);
		tried++;
		/* Never served: a named error, or (seen under ASan) no answer at all. */
		refused += r == 1 || r == -ETIMEDOUT;
		if (r != 1)
			tap_diag("raw peer %d: %s", i, r == -ETIMEDOUT ? "left unanswered" : "?");
		rawbus_close(&rb);
		sd_bus_flush_close_unref(bus);
	}
	settle("closed fds (an 'h' index with no descriptor), on the bus and on peers", tried,
	       refused, tried);
}

static void kind_guessed_tokens(void)
{
	struct dmabroker *ctx = NULL;
	unsigned tried = 0, refused = 0;

	tap_require(dmabroker_connect(&ctx, NULL, 0) == 0 &&
			    dmabroker_register(ctx, "cpu", true, "guesser", NULL) == 0,
		    "a guesser registers (peer connection)");
	for (int i = 0; i < 10000; i++) {
		struct dmabroker_token t;
		struct dmabroker_buffer *buf = NULL;

		getrandom(t.bytes, sizeof(t.bytes), 0);
		tried++;
		if (dmabroker_import(ctx, &t, &buf) == -ENOENT)
			refused++;
		else if (buf)
			dmabroker_release(buf);
	}
	dmabroker_disconnect(ctx);
	settle("10,000 guessed tokens", tried, refused, tried);
}

static void kind_other_uid(void)
{
	struct dmabroker_share_opts bound = {.bind_uid = true, .uid = 0, .reusable = true};
	unsigned tried = 0, refused = 0;
	struct dmabroker_token t;
	char hex[33], out[512];

	dmabroker_share(victim_buf, &bound, sizeof(bound), &t);
	dmabroker_token_to_string(&t, hex);
	for (int i = 0; i < 10; i++) {
		const char *argv[] = {"tests/bus/test-client", "import", hex, NULL};
		char guess[33];

		tried++;
		refused += run_client(argv, true, out, sizeof(out)) == 2 &&
			   strstr(out, DB_ERROR_PERMISSION_DENIED);
		getrandom(t.bytes, sizeof(t.bytes), 0);
		dmabroker_token_to_string(&t, guess);
		argv[2] = guess;
		tried++;
		refused += run_client(argv, true, out, sizeof(out)) == 2 &&
			   strstr(out, DB_ERROR_NOT_FOUND);
	}
	settle("imports from another uid (bound and guessed tokens)", tried, refused, tried);
}

static void kind_over_limits(void)
{
	struct dmabroker *ctx = NULL;
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker_buffer *bufs[LIMIT_BUFFERS + 64] = {0};
	struct dmabroker_buffer *many[DMABROKER_ALLOCATE_MANY_MAX];
	unsigned tried = 0, refused = 0, held = 0;
	struct dmabroker_token t;

	tap_require(dmabroker_connect(&ctx, NULL, 0) == 0 &&
			    dmabroker_register(ctx, "cpu", true, "greedy", NULL) == 0,
		    "a greedy client registers");
	for (int i = 0; i < LIMIT_BUFFERS + 32; i++) {
		tried++;
		if (dmabroker_allocate(ctx, &spec, sizeof(spec), &bufs[held]) == 0)
			held++;
		else if (strstr(dmabroker_last_error(ctx), DB_ERROR_QUOTA_EXCEEDED))
			refused++;
	}
	for (int i = 0; i < 16; i++) {
		tried++;
		refused += dmabroker_allocate_many(ctx, &spec, sizeof(spec),
						   DMABROKER_ALLOCATE_MANY_MAX, many) == -EDQUOT;
	}
	for (int i = 0; i < LIMIT_TOKENS + 32 && held; i++) {
		tried++;
		refused += dmabroker_share(bufs[0], &(struct dmabroker_share_opts){0},
					   sizeof((struct dmabroker_share_opts){0}), &t) == -EDQUOT;
	}
	tap_is(held, LIMIT_BUFFERS, "greedy: it got exactly MaxBuffersPerClient buffers");
	dmabroker_disconnect(ctx);
	settle("more buffers, fds (AllocateMany) and tokens than the limits", tried, refused,
	       32 + 16 + 32);
}

static void kind_connect_churn(void)
{
	unsigned tried = 0, refused = 0;

	for (int i = 0; i < 1000; i++) {
		struct dmabroker *ctx = NULL;

		tried++;
		if (dmabroker_connect(&ctx, NULL, DMABROKER_CONNECT_NO_PEER) == 0 &&
		    dmabroker_register(ctx, i % 2 ? "gpu" : "media", i % 3 == 0, "churn", NULL) ==
			    0)
			refused++; /* here: served, and gone again */
		dmabroker_disconnect(ctx);
	}
	settle("1,000 clients connecting, registering and disconnecting", tried, refused, tried);
}

/* A child that hammers the daemon until killed. */
static void hammer(int seed)
{
	struct dmabroker *ctx = NULL;
	struct dmabroker_alloc_spec spec = {.size = 65536};

	if (dmabroker_connect(&ctx, NULL, seed % 2 ? DMABROKER_CONNECT_NO_PEER : 0) < 0 ||
	    dmabroker_register(ctx, "cpu", seed % 3 == 0, "victim-of-sigkill", NULL) < 0)
		_exit(1);
	for (;;) {
		struct dmabroker_buffer *buf = NULL, *other = NULL;
		struct dmabroker_token t;

		if (dmabroker_allocate(ctx, &spec, sizeof(spec), &buf) < 0)
			continue;
		dmabroker_share(buf, NULL, 0, &t);
		if (seed % 4 == 0) {
			dmabroker_import(ctx, &t, &other);
			continue; /* keep holding: killed while holding buffers */
		}
		dmabroker_release(buf);
	}
}

static void kind_sigkill(void)
{
	unsigned tried = 0, refused = 0;

	for (int i = 0; i < 60; i++) {
		struct timespec ts = {0, (long)(1 + i % 40) * 1000000L};
		int status;
		pid_t pid = fork();

		if (pid == 0) {
			hammer(i);
		}
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		tried++;
		refused += WIFSIGNALED(status);
	}
	settle("clients killed with SIGKILL mid-call and while holding buffers", tried, refused,
	       tried);
}

int main(void)
{
	struct dmabroker_alloc_spec spec = {.size = VICTIM_SIZE, .name = "victim"};
	char config[256];
	bool all_ok = true;

	snprintf(config, sizeof(config),
		 "[Limits]\nMaxBuffersPerClient=%d\nMaxTokensPerClient=%d\n", LIMIT_BUFFERS,
		 LIMIT_TOKENS);
	base_dmabufs = debugfs_dmabuf_objects();
	tap_require(fixture_start(&f, config) == 0, "start a private bus and the daemon");
	inspect = inspect_bus();
	tap_require(dmabroker_connect(&victim, NULL, 0) == 0 &&
			    dmabroker_register(victim, "cpu", true, "victim", NULL) == 0 &&
			    dmabroker_allocate(victim, &spec, sizeof(spec), &victim_buf) == 0 &&
			    dmabroker_buffer_map(victim_buf, (void **)&victim_map) == 0,
		    "a victim holds a buffer");
	dmabroker_buffer_begin_cpu_access(victim_buf, DMABROKER_ACCESS_WRITE);
	for (size_t i = 0; i < VICTIM_SIZE; i++)
		victim_map[i] = (uint8_t)(i * 7);
	dmabroker_buffer_end_cpu_access(victim_buf, DMABROKER_ACCESS_WRITE);
	if (base_dmabufs >= 0)
		base_dmabufs = debugfs_dmabuf_objects();
	tap_diag("%s", base_dmabufs >= 0
			       ? "real kernel: checking debugfs bufinfo after each kind"
			       : "no debugfs bufinfo here: dma-buf leaks are checked in the guest");
	/* One warm-up round so the baseline includes the daemon's steady-state allocations. */
	warming_up = true;
	kind_connect_churn();
	fixture_wait_clients(&f, 1, 20000);
	warming_up = false;
	base_fds = fixture_daemon_fds(&f);
	base_rss = daemon_rss_kib();
	tap_diag("baseline: %d fds, %ld KiB RSS", base_fds, base_rss);

	kind_bad_sizes();
	kind_unknown_formats();
	kind_wrong_signatures();
	kind_export_non_dmabuf();
	kind_closed_fds();
	kind_guessed_tokens();
	kind_other_uid();
	kind_over_limits();
	kind_connect_churn();
	kind_sigkill();

	printf("#\n# %-80s %8s %8s  %s\n", "kind", "tried", "refused", "nothing lost");
	for (int i = 0; i < n_results; i++) {
		printf("# %-80s %8u %8u  %s\n", results[i].kind, results[i].tried,
		       results[i].refused, results[i].ok ? "yes" : "NO");
		all_ok &= results[i].ok;
	}
	tap_ok(all_ok, "the daemon survived every kind with nothing lost");
	dmabroker_release(victim_buf);
	dmabroker_disconnect(victim);
	sd_bus_flush_close_unref(inspect);
	tap_is(fixture_stop(&f), 0, "the daemon exits cleanly");
	return tap_done();
}
