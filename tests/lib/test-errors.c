// SPDX-License-Identifier: MIT
/*
 * The header's contract where a black-box tester found it broken, against the real daemon
 * with small limits (MaxBufferSize 1 MiB, MaxBytesPerClient 4 MiB: no test here makes more
 * memory than that, and RLIMIT_FSIZE caps any memfd of this process at 256 KiB while the
 * local-failure checks run):
 *  - an allocation over the daemon's limits is refused at once (-EDQUOT, naming the limit),
 *    before any memory is made: the asynchronous form too, and allocate_many's total;
 *  - a memfd this process cannot size is -ENOMEM, an fd to export that is not open -EINVAL,
 *    and every local failure (-EALREADY too) has a message of its own;
 *  - a spec passed with only its first member (size) is read as the rest zero;
 *  - a dispatch whose callback disconnects returns the number of callbacks run;
 *  - a Release resent on the bus after the peer died, which the daemon had carried out from
 *    the peer already, is a success.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-bus.h>

#include "bus-util.h"
#include "dmabroker.h"
#include "fixture.h"
#include "macros.h"
#include "protocol.h"
#include "tap.h"

#define is(got, want, ...)                                               \
	({                                                               \
		long long _g = (long long)(got), _w = (long long)(want); \
		bool _ok = tap_ok(_g == _w, __VA_ARGS__);                \
		if (!_ok)                                                \
			tap_diag("  got %lld, want %lld", _g, _w);       \
		_ok;                                                     \
	})

static const char config[] = "[Limits]\n"
			     "MaxBufferSize=1048576\n"
			     "MaxBytesPerClient=4194304\n";

static struct fixture f;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void msleep(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static uint32_t daemon_buffers(void)
{
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = inspect_bus();

	return bus ? broker_u32(bus, "NBuffers") : UINT32_MAX;
}

static void run_until(struct dmabroker *ctx, const int *counter, int want, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;

	while (*counter < want && now_ms() < end) {
		struct pollfd pfd = {dmabroker_get_fd(ctx), POLLIN, 0};

		(void)poll(&pfd, 1, 50);
		if (dmabroker_dispatch(ctx) < 0)
			break;
	}
}

static struct dmabroker *client(void)
{
	struct dmabroker *ctx = NULL;

	tap_require(dmabroker_connect(&ctx, NULL, 0) == 0 &&
			    dmabroker_register(ctx, "cpu", true, "errors", NULL) == 0,
		    "a client registers");
	return ctx;
}

struct tally {
	int done, ok, first_error;
};

static void on_allocated(int r, struct dmabroker_buffer *buf, void *userdata)
{
	struct tally *t = userdata;

	t->done++;
	if (r == 0) {
		t->ok++;
		dmabroker_release(buf);
	} else if (!t->first_error) {
		t->first_error = r;
	}
}

static void on_done(int r, void *userdata)
{
	struct tally *t = userdata;

	t->done++;
	if (r == 0)
		t->ok++;
	else if (!t->first_error)
		t->first_error = r;
}

/* --- F1: limits before memory --- */

static void test_over_limits(void)
{
	struct dmabroker *ctx = client();
	struct dmabroker_buffer *buf = NULL, *many[4] = {0};
	const uint64_t sizes[] = {2ull << 20, 1ull << 62, UINT64_MAX - 4095};
	struct dmabroker_alloc_spec spec = {0};
	struct tally t = {0};

	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		spec.size = sizes[i];
		is(dmabroker_allocate(ctx, &spec, sizeof(spec), &buf), -EDQUOT,
		   "allocate of %llu bytes: -EDQUOT", (unsigned long long)sizes[i]);
		tap_ok(strstr(dmabroker_last_error(ctx), "MaxBufferSize") != NULL,
		       "and the message names MaxBufferSize: \"%s\"", dmabroker_last_error(ctx));
	}
	spec.size = 2ull << 20;
	is(dmabroker_allocate_async(ctx, &spec, sizeof(spec), on_allocated, &t, NULL), -EDQUOT,
	   "allocate_async over MaxBufferSize is refused at once, nothing queued");
	spec.size = 1ull << 20;
	is(dmabroker_allocate_many(ctx, &spec, sizeof(spec), 5, many), -EDQUOT,
	   "allocate_many of 5 MiB in all: -EDQUOT (MaxBytesPerClient 4 MiB)");
	tap_ok(strstr(dmabroker_last_error(ctx), "MaxBytesPerClient") != NULL,
	       "and the message names MaxBytesPerClient: \"%s\"", dmabroker_last_error(ctx));
	is(dmabroker_allocate(ctx, &spec, sizeof(spec), &buf), 0,
	   "an allocation of MaxBufferSize itself succeeds");
	dmabroker_release(buf);
	is(daemon_buffers(), 0, "the daemon holds nothing");
	dmabroker_disconnect(ctx);
}

/* --- F2: local failures, their codes and messages --- */

static void test_local_failures(void)
{
	struct dmabroker *ctx = client();
	struct dmabroker_alloc_spec spec = {.size = 512 * 1024};
	struct dmabroker_buffer *buf = NULL;
	struct rlimit old, small = {256 * 1024, 256 * 1024};
	int fds[2];

	/* A memfd of 512 KiB cannot be sized at RLIMIT_FSIZE 256 KiB. */
	getrlimit(RLIMIT_FSIZE, &old);
	small.rlim_max = old.rlim_max;
	setrlimit(RLIMIT_FSIZE, &small);
	is(dmabroker_allocate(ctx, &spec, sizeof(spec), &buf), -ENOMEM,
	   "a memfd this process cannot size: -ENOMEM (listed), not -EFBIG");
	tap_ok(strstr(dmabroker_last_error(ctx), "in this process") != NULL,
	       "and the message says so: \"%s\"", dmabroker_last_error(ctx));
	setrlimit(RLIMIT_FSIZE, &old);

	tap_require(pipe(fds) == 0, "a pipe");
	close(fds[0]);
	close(fds[1]);
	is(dmabroker_export(ctx, fds[0], NULL, 0, &buf), -EINVAL,
	   "export of an fd that is not open: -EINVAL (listed), not -EBADF");
	tap_ok(strstr(dmabroker_last_error(ctx), "not open") != NULL,
	       "and the message says so: \"%s\"", dmabroker_last_error(ctx));
	is(dmabroker_export_async(ctx, fds[0], NULL, 0, NULL, NULL, NULL), -EINVAL,
	   "the same for export_async");

	is(dmabroker_register(ctx, "cpu", true, NULL, NULL), -EALREADY,
	   "a second registration: -EALREADY");
	tap_ok(strstr(dmabroker_last_error(ctx), "not open") == NULL &&
		       dmabroker_last_error(ctx)[0] != '\0',
	       "with a message of its own, not the previous one: \"%s\"",
	       dmabroker_last_error(ctx));
	dmabroker_disconnect(ctx);
}

/* --- F11: a struct smaller than its first published version is refused, as the kernel's
 * copy_struct_from_user() does; the header says so --- */

static void test_small_struct(void)
{
	struct dmabroker *ctx = client();
	struct dmabroker_alloc_spec spec = {.size = 4096, .width = 0xdead};
	struct dmabroker_buffer *buf = NULL;

	is(dmabroker_allocate(ctx, &spec, offsetof(struct dmabroker_alloc_spec, width), &buf),
	   -EINVAL, "a spec of offsetof(width) bytes, under the first version: -EINVAL");
	is(daemon_buffers(), 0, "and nothing was made");
	dmabroker_disconnect(ctx);
}

/* --- F10: dispatch's count when a callback disconnects --- */

static int n_run;

static void on_allocated_disconnect(int r, struct dmabroker_buffer *buf, void *userdata)
{
	struct dmabroker **ctx = userdata;

	if (r == 0)
		dmabroker_release(buf);
	if (++n_run == 3)
		*ctx = dmabroker_disconnect(*ctx);
}

static void test_dispatch_count_on_disconnect(void)
{
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker *ctx = client(), *handle = ctx;

	for (int i = 0; i < 5; i++)
		dmabroker_allocate_async(ctx, &spec, sizeof(spec), on_allocated_disconnect, &handle,
					 NULL);
	/* All five answers wait in the socket for one dispatch. */
	for (int i = 0; i < 200 && daemon_buffers() < 5; i++)
		usleep(10 * 1000);
	is(dmabroker_dispatch(ctx), 3,
	   "the dispatch whose third callback disconnects returns 3 (callbacks run)");
	is(n_run, 3, "and no callback ran after the disconnect");
	tap_ok(fixture_wait_clients(&f, 0, 5000), "the client is gone");
}

/* --- F9: a resent Release the daemon carried out already --- */

/* The peer connection's socket: the one AF_UNIX socket whose other end has no name. */
static void test_release_resent(void)
{
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker_buffer *bufs[8];
	struct tally rel = {0};
	struct dmabroker *ctx = client();
	int fd;

	for (int i = 0; i < 8; i++)
		tap_require(dmabroker_allocate(ctx, &spec, sizeof(spec), &bufs[i]) == 0,
			    "a buffer is allocated");
	fd = find_peer_socket();
	tap_require(fd >= 0, "the peer connection's socket is found");
	/* The Releases reach the peer socket while the daemon is stopped, then the peer dies:
	 * the daemon carries them out from there when it goes on, and the library sends them
	 * again on the bus. */
	kill(f.daemon_pid, SIGSTOP);
	for (int i = 0; i < 8; i++)
		is(dmabroker_release_async(bufs[i], on_done, &rel, NULL), 0, "Release is sent");
	(void)dmabroker_dispatch(ctx);
	usleep(100 * 1000);
	(void)dmabroker_dispatch(ctx);
	shutdown(fd, SHUT_RDWR);
	for (int i = 0; i < 5; i++) {
		(void)dmabroker_dispatch(ctx);
		usleep(20 * 1000);
	}
	kill(f.daemon_pid, SIGCONT);
	run_until(ctx, &rel.done, 8, 30000);
	is(rel.done, 8, "every Release completes");
	is(rel.ok, 8,
	   "every Release succeeds, resent ones the daemon did already too (first error %d)",
	   rel.first_error);
	is(daemon_buffers(), 0, "the daemon's count drops to 0");
	dmabroker_disconnect(ctx);
}

/* --- F8: importing a buffer the context holds gives no second handle --- */

static void test_self_import(void)
{
	struct dmabroker *ctx = client();
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker_buffer *buf = NULL, *again = NULL;
	struct dmabroker_token token;

	tap_require(dmabroker_allocate(ctx, &spec, sizeof(spec), &buf) == 0 &&
			    dmabroker_share(buf, NULL, 0, &token) == 0,
		    "a buffer and a token for it");
	is(dmabroker_import(ctx, &token, &again), -EALREADY,
	   "importing it again in the same context: -EALREADY");
	tap_ok(!again, "and no second handle");
	is(daemon_buffers(), 1, "the buffer is still there");
	is(dmabroker_release(buf), 0, "the one handle releases it");
	is(daemon_buffers(), 0, "and it is gone");
	dmabroker_disconnect(ctx);
}

/* --- F7: a Register that failed may be made again --- */

static void on_registered(int r, void *userdata)
{
	*(int *)userdata = r;
}

static void test_register_again(void)
{
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker_buffer *buf = NULL;
	struct dmabroker *ctx = NULL;
	int result = 1, done = 0;

	tap_require(dmabroker_connect(&ctx, NULL, 0) == 0, "a client connects");
	dmabroker_set_call_timeout(ctx, 1000000);
	kill(f.daemon_pid, SIGSTOP);
	is(dmabroker_register_async(ctx, "cpu", true, "late", NULL, on_registered, &result, NULL),
	   0, "Register is sent to a stopped daemon");
	for (uint64_t end = now_ms() + 5000; result == 1 && now_ms() < end;) {
		struct pollfd pfd = {dmabroker_get_fd(ctx), POLLIN, 0};

		(void)poll(&pfd, 1, 100);
		dmabroker_dispatch(ctx);
	}
	is(result, -ETIMEDOUT, "it times out after the call timeout");
	/* The daemon never saw it: gone, and started again. */
	kill(f.daemon_pid, SIGCONT);
	fixture_kill_daemon(&f, SIGKILL);
	tap_require(fixture_restart_daemon(&f) == 0, "the daemon restarts");
	dmabroker_set_call_timeout(ctx, 0);
	done = dmabroker_register(ctx, "cpu", true, "late", NULL);
	is(done, 0, "dmabroker_register() may be called again, and registers");
	is(dmabroker_allocate(ctx, &spec, sizeof(spec), &buf), 0, "and the context works");
	dmabroker_release(buf);
	dmabroker_disconnect(ctx);
}

/* --- F4: one dispatch runs at most DMABROKER_DISPATCH_BUDGET callbacks --- */

static void on_allocated_release(int r, struct dmabroker_buffer *buf, void *userdata)
{
	struct tally *t = userdata;

	t->done++;
	if (r == 0) {
		t->ok++;
		/* As a compositor would: give it back from the callback. */
		dmabroker_release_async(buf, NULL, NULL, NULL);
	}
}

static void test_dispatch_budget(void)
{
	enum {
		N = 600
	};
	struct dmabroker *ctx = client();
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct tally t = {0};
	uint64_t timeout = UINT64_MAX;
	int first, sent = 0;

	for (int i = 0; i < N; i++)
		sent += dmabroker_allocate_async(ctx, &spec, sizeof(spec), on_allocated_release, &t,
						 NULL) == 0;
	is(sent, N, "600 allocations in flight");
	/* Let every answer arrive before the first dispatch. */
	for (uint64_t end = now_ms() + 3000; now_ms() < end;) {
		struct pollfd pfd = {dmabroker_get_fd(ctx), POLLIN, 0};

		(void)poll(&pfd, 1, 100);
		if (daemon_buffers() >= N)
			break;
	}
	msleep(300);
	first = dmabroker_dispatch(ctx);
	tap_ok(first > 0 && first <= DMABROKER_DISPATCH_BUDGET,
	       "one dispatch ran %d callbacks (at most %d)", first, DMABROKER_DISPATCH_BUDGET);
	dmabroker_get_timeout(ctx, &timeout);
	{
		struct pollfd pfd = {dmabroker_get_fd(ctx), POLLIN, 0};

		/* Only a dispatch that stopped at the budget leaves callbacks behind. */
		tap_ok(first < DMABROKER_DISPATCH_BUDGET || timeout == 0 || poll(&pfd, 1, 0) == 1,
		       "what is left shows at once on the loop's fd or timeout");
	}
	run_until(ctx, &t.done, N, 20000);
	is(t.ok, N, "the following dispatches run the rest");
	dmabroker_disconnect(ctx);
}

int main(int argc, char **argv)
{
	const char *only = getenv("TEST_ERRORS_ONLY");

	(void)argc;
	fixture_wrap_self(argv);

	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);
	tap_require(fixture_start(&f, config) == 0,
		    "a daemon with MaxBufferSize 1 MiB, MaxBytesPerClient 4 MiB");
#define RUN(name, ...)                           \
	do {                                     \
		if (!only || strstr(only, name)) \
			__VA_ARGS__;             \
	} while (0)
	RUN("limits", test_over_limits());
	RUN("local", test_local_failures());
	RUN("struct", test_small_struct());
	RUN("dispatch", test_dispatch_count_on_disconnect());
	RUN("release", test_release_resent());
	RUN("budget", test_dispatch_budget());
	RUN("self-import", test_self_import());
	RUN("register", test_register_again());
	tap_ok(fixture_wait_clients(&f, 0, 5000), "every client is gone");
	is(fixture_stop(&f), 0, "the daemon exits cleanly");
	return tap_done();
}
