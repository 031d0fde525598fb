// SPDX-License-Identifier: MIT
/*
 * Flow control, time and reconciling in the library (issue #19), against the real daemon on a
 * bus with the system bus's limits (max_replies_per_connection 128, 64 fds each way):
 *  - 1,000 asynchronous allocations in flight on the peer connection and 300 on the bus are
 *    all delivered, and the daemon counts exactly the buffers the client received (a daemon
 *    that cuts a peer at 32 unwritten messages, and the bus's pending-reply limit, are met
 *    by the library's windows, not by luck);
 *  - with the daemon stopped (SIGSTOP) during the peer connection's handshake, every _async
 *    call returns at once and the frame loop keeps its frames; after SIGCONT all succeed;
 *  - a context dispatched for the first time 30 s after its calls were answered gets every
 *    answer as what it is, and keeps its bus connection;
 *  - a daemon restarted without its store: the context carries on (registers again), its old
 *    buffers are reported revoked with DMABROKER_REVOKED_DAEMON_RESTARTED;
 *  - Release issued after the peer connection died still reaches the daemon (on the bus):
 *    the daemon's buffer count drops;
 *  - after a call timed out, its late answer's buffer does not stay charged, and the
 *    caller can adopt what the daemon holds (dmabroker_adopt_buffers()).
 * Figures (latencies, counts) are printed as TAP diagnostics.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* The same source builds against an older header, to show what these tests find there. */
#ifndef DMABROKER_REVOKED_DAEMON_RESTARTED
#define DMABROKER_REVOKED_DAEMON_RESTARTED "daemon restarted without its store"
#define OLD_LIBRARY 1
#endif

#define is(got, want, ...)                                               \
	({                                                               \
		long long _g = (long long)(got), _w = (long long)(want); \
		bool _ok = tap_ok(_g == _w, __VA_ARGS__);                \
		if (!_ok)                                                \
			tap_diag("  got %lld, want %lld", _g, _w);       \
		_ok;                                                     \
	})

/* The system bus's limits (dbus-daemon's built-in defaults, written out). */
static const char system_limits[] = "  <limit name=\"max_replies_per_connection\">128</limit>\n"
				    "  <limit name=\"max_incoming_unix_fds\">64</limit>\n"
				    "  <limit name=\"max_outgoing_unix_fds\">64</limit>\n"
				    "  <limit name=\"max_message_unix_fds\">16</limit>\n";

static struct fixture f;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* One turn of a loop: poll the fd until the library's timeout (at most max_ms), dispatch. */
static int turn(struct dmabroker *ctx, int max_ms)
{
	struct pollfd pfd = {dmabroker_get_fd(ctx), (short)dmabroker_get_events(ctx), 0};
	uint64_t t;
	int ms = max_ms;

	if (dmabroker_get_timeout(ctx, &t) == 0 && t != UINT64_MAX) {
		uint64_t now = now_us();

		ms = t <= now ? 0 : (int)((t - now) / 1000 + 1);
		if (ms > max_ms)
			ms = max_ms;
	}
	(void)poll(&pfd, 1, ms);
	return dmabroker_dispatch(ctx);
}

/* Runs ctx until *counter reaches want (or timeout_ms passes); returns *counter. */
static int run_until(struct dmabroker *ctx, const int *counter, int want, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;

	while (*counter < want && now_ms() < end)
		if (turn(ctx, 50) < 0)
			break;
	return *counter;
}

static uint32_t daemon_buffers(void)
{
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = inspect_bus();

	return bus ? broker_u32(bus, "NBuffers") : UINT32_MAX;
}

struct tally {
	int done, ok, failed;
	int first_error;
	struct dmabroker_buffer **bufs;
};

static void on_allocated(int r, struct dmabroker_buffer *buf, void *userdata)
{
	struct tally *t = userdata;

	if (r == 0) {
		t->bufs[t->ok++] = buf;
	} else {
		if (!t->first_error)
			t->first_error = r;
		t->failed++;
	}
	t->done++;
}

static void on_done(int r, void *userdata)
{
	struct tally *t = userdata;

	if (r == 0)
		t->ok++;
	else if (!t->failed++)
		t->first_error = r;
	t->done++;
}

static struct dmabroker *client(uint32_t flags)
{
	struct dmabroker *ctx = NULL;

	tap_require(dmabroker_connect(&ctx, NULL, flags) == 0 &&
			    dmabroker_register(ctx, "cpu", true, "flow", NULL) == 0,
		    "a client registers (%s)", flags & DMABROKER_CONNECT_NO_PEER ? "bus" : "peer");
	return ctx;
}

static void release_all(struct dmabroker *ctx, struct tally *t)
{
	struct tally rel = {0};
	int n = t->ok;

	for (int i = 0; i < n; i++)
		dmabroker_release_async(t->bufs[i], on_done, &rel, NULL);
	run_until(ctx, &rel.done, n, 60000);
	is(rel.ok, n, "every buffer is released (%d)", n);
}

/* 1,000 (peer) or 300 (bus) allocations issued at once, without dispatching in between. */
static void test_many_in_flight(uint32_t flags, int n)
{
	const char *via = flags & DMABROKER_CONNECT_NO_PEER ? "bus" : "peer";
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct tally t = {.bufs = calloc((size_t)n, sizeof(*t.bufs))};
	struct dmabroker *ctx = client(flags);
	uint64_t start = now_ms(), issue_us;
	int refused = 0;

	for (int i = 0; i < n; i++)
		if (dmabroker_allocate_async(ctx, &spec, sizeof(spec), on_allocated, &t, NULL) < 0)
			refused++;
	issue_us = (now_ms() - start) * 1000;
	is(refused, 0, "%d allocations are accepted at once (%s)", n, via);
	run_until(ctx, &t.done, n, 120000);
	tap_diag("%s: %d issued in %llu ms, %d delivered, %d failed (first %d), %llu ms in all",
		 via, n, (unsigned long long)issue_us / 1000, t.ok, t.failed, t.first_error,
		 (unsigned long long)(now_ms() - start));
	is(t.ok, n, "all %d are delivered (%s)", n, via);
	is(daemon_buffers(), (uint32_t)t.ok,
	   "the daemon counts exactly the buffers the client received (%s)", via);
	release_all(ctx, &t);
	is(daemon_buffers(), 0, "and none is left after the releases (%s)", via);
	dmabroker_disconnect(ctx);
	free(t.bufs);
}

/* --- a bus stricter than the library's window: LimitsExceeded is queued again --- */

static int refusals;

static void count_refusals(enum dmabroker_log_level level, const char *msg, void *userdata)
{
	(void)level;
	(void)userdata;
	if (strstr(msg, "LimitsExceeded"))
		refusals++;
}

static const char strict_limits[] = "  <limit name=\"max_replies_per_connection\">50</limit>\n";

static void on_shared(int r, const struct dmabroker_token *token, void *userdata)
{
	(void)token;
	on_done(r, userdata);
}

static void test_bus_refuses(void)
{
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker_buffer *buf = NULL;
	struct tally t = {0};
	struct dmabroker *ctx = client(DMABROKER_CONNECT_NO_PEER);
	uint64_t start;

	tap_require(dmabroker_allocate(ctx, &spec, sizeof(spec), &buf) == 0, "a buffer");
	dmabroker_set_log_handler(count_refusals, NULL);
	start = now_ms();
	/*
	 * Share answers carry no fd: only the pending-reply limit (50 here) holds them. The
	 * daemon is stopped while the calls go out, so that more than 50 are pending whatever
	 * the machine's speed (a fast daemon would answer them before the limit is reached).
	 */
	kill(f.daemon_pid, SIGSTOP);
	for (int i = 0; i < 300; i++)
		dmabroker_share_async(buf, NULL, 0, on_shared, &t, NULL);
	for (uint64_t end = now_ms() + 500; now_ms() < end;) {
		struct pollfd pfd = {dmabroker_get_fd(ctx), POLLIN, 0};

		(void)poll(&pfd, 1, 50);
		dmabroker_dispatch(ctx);
	}
	kill(f.daemon_pid, SIGCONT);
	run_until(ctx, &t.done, 300, 60000);
	tap_diag("bus allowing 50 pending replies: %d of 300 Share calls succeeded in %llu ms "
		 "(first error %d)",
		 t.ok, (unsigned long long)(now_ms() - start), t.first_error);
	dmabroker_set_log_handler(NULL, NULL);
	tap_ok(refusals > 0, "the bus refused calls (%d LimitsExceeded)", refusals);
	is(t.ok, 300, "every call the bus refused was sent again, none lost");
	dmabroker_release(buf);
	dmabroker_disconnect(ctx);
}

/* --- the daemon stopped during the peer's handshake --- */

static bool stop_at_handshake;
static bool stopped;

static void on_log(enum dmabroker_log_level level, const char *msg, void *userdata)
{
	(void)level;
	(void)userdata;
	if (stop_at_handshake && strstr(msg, "peer handshake starts")) {
		kill(f.daemon_pid, SIGSTOP);
		stopped = true;
		stop_at_handshake = false;
	}
}

/* The old library waited for the daemon inside an _async call: do not hang the test then. */
static void on_alarm(int sig)
{
	(void)sig;
	kill(f.daemon_pid, SIGCONT);
}

static void on_registered(int r, void *userdata)
{
	*(int *)userdata = r == 0 ? 1 : r;
	/* A library that does not say when the handshake starts: stop the daemon as soon as
	 * registering is done instead (the handshake is then most likely unanswered). */
	if (stop_at_handshake) {
		kill(f.daemon_pid, SIGSTOP);
		stopped = true;
		stop_at_handshake = false;
	}
}

static void test_stopped_during_handshake(void)
{
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker *ctx = NULL;
	struct tally t = {.bufs = calloc(20, sizeof(*t.bufs))};
	uint64_t worst = 0, frame_start;
	int registered = 0, frames = 0;

	dmabroker_set_log_handler(on_log, NULL);
	signal(SIGALRM, on_alarm);
	stop_at_handshake = true;
	tap_require(dmabroker_connect(&ctx, NULL, 0) == 0 &&
			    dmabroker_register_async(ctx, "cpu", true, "stopped", NULL,
						     on_registered, &registered, NULL) == 0,
		    "a client registers asynchronously");
	run_until(ctx, &registered, 1, 10000);
	is(registered, 1, "registered; the daemon was stopped as the peer's handshake began");
	tap_require(stopped, "the daemon is stopped (SIGSTOP)");
	alarm(5);
	for (int i = 0; i < 20; i++) {
		uint64_t t0 = now_us();

		dmabroker_allocate_async(ctx, &spec, sizeof(spec), on_allocated, &t, NULL);
		if (now_us() - t0 > worst)
			worst = now_us() - t0;
	}
	/* A frame loop: 40 frames of 10 ms, dispatching whenever the fd says so. */
	frame_start = now_ms();
	while (frames < 40 && now_ms() - frame_start < 3000) {
		turn(ctx, 10);
		frames++;
	}
	tap_diag("slowest _async call while stopped: %llu us; 40 frames in %llu ms",
		 (unsigned long long)worst, (unsigned long long)(now_ms() - frame_start));
	tap_ok(worst < 200000, "every _async call returned at once (slowest %llu us)",
	       (unsigned long long)worst);
	is(frames, 40, "the frame loop kept its frames");
	is(t.done, 0, "and nothing was answered while the daemon was stopped");
	alarm(0);
	kill(f.daemon_pid, SIGCONT);
	run_until(ctx, &t.done, 20, 30000);
	is(t.ok, 20, "after SIGCONT every call succeeds");
	release_all(ctx, &t);
	dmabroker_disconnect(ctx);
	dmabroker_set_log_handler(NULL, NULL);
	free(t.bufs);
}

/* --- time: a first dispatch 30 s after the calls were answered --- */

static void test_late_dispatch(void)
{
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct tally t = {.bufs = calloc(16, sizeof(*t.bufs))};
	struct dmabroker *ctx = client(0);
	struct dmabroker_buffer *more = NULL;
	uint64_t start;
	int first, counted;

	for (int i = 0; i < 16; i++)
		dmabroker_allocate_async(ctx, &spec, sizeof(spec), on_allocated, &t, NULL);
	/* Not a budget: the daemon answers within milliseconds; the application sleeps. */
	sleep(30);
	start = now_ms();
	first = dmabroker_dispatch(ctx);
	counted = first > 0 ? first : 0;
	for (int i = 0; i < 200 && t.done < 16; i++) {
		int r = turn(ctx, 50);

		if (r > 0)
			counted += r;
	}
	tap_diag("first dispatch after 30 s: %d answers delivered in %llu ms", t.done,
		 (unsigned long long)(now_ms() - start));
	is(t.ok, 16, "every answer that came meanwhile is delivered as a success");
	is(first, 16, "all were sent and answered before the first dispatch, which ran them");
	is(counted, 16, "dispatch's return values count the completions");
	is(daemon_buffers(), 16, "the daemon kept them (the bus connection was not lost)");
	is(dmabroker_allocate(ctx, &spec, sizeof(spec), &more), 0, "and the context still works");
	dmabroker_release(more);
	release_all(ctx, &t);
	dmabroker_disconnect(ctx);
	free(t.bufs);
}

/* --- call handles: safe to cancel at any time --- */

static void test_cancel_handles(void)
{
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct tally t = {.bufs = calloc(2, sizeof(*t.bufs))};
	struct dmabroker_call *answered = NULL, *cancelled = NULL;
	struct dmabroker *ctx = client(0);

	is(dmabroker_allocate_async(ctx, &spec, sizeof(spec), on_allocated, &t, &answered), 0,
	   "an allocation with a handle");
	run_until(ctx, &t.done, 1, 10000);
	tap_ok(answered != NULL && t.ok == 1, "is answered");
	/* Under valgrind, a handle that were the freed call's address would show here. */
	dmabroker_call_cancel(answered);
	tap_ok(true, "cancelling it after its callback ran is harmless (a no-op)");
	is(dmabroker_allocate_async(ctx, &spec, sizeof(spec), on_allocated, &t, &cancelled), 0,
	   "another allocation");
	dmabroker_call_cancel(cancelled);
	for (int i = 0; i < 20; i++)
		turn(ctx, 50);
	is(t.done, 1, "cancelled before its answer: its callback never runs");
	is(daemon_buffers(), 1, "and the buffer its answer brought was released");
	dmabroker_release(t.bufs[0]);
	dmabroker_disconnect(ctx);
	dmabroker_call_cancel(cancelled);
	tap_ok(true, "cancelling after the context is gone is harmless too");
	free(t.bufs);
}

/* --- dmabroker_disconnect() from a callback: no callback after it --- */

static int after_disconnect;

static void on_allocated_disconnect(int r, struct dmabroker_buffer *buf, void *userdata)
{
	struct dmabroker **ctx = userdata;

	(void)r;
	(void)buf;
	if (*ctx)
		dmabroker_disconnect(*ctx);
	else
		after_disconnect++;
	*ctx = NULL;
}

static void test_disconnect_in_callback(void)
{
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker *ctx = client(0), *handle = ctx;

	for (int i = 0; i < 4; i++)
		dmabroker_allocate_async(ctx, &spec, sizeof(spec), on_allocated_disconnect, &handle,
					 NULL);
	/* All four answers wait in the socket for one dispatch. */
	for (int i = 0; i < 100 && daemon_buffers() < 4; i++)
		usleep(10 * 1000);
	(void)dmabroker_dispatch(ctx);
	is(after_disconnect, 0,
	   "no completion runs after dmabroker_disconnect() was called from a callback");
	tap_ok(fixture_wait_clients(&f, 0, 5000), "and the client is gone");
}

/* --- a daemon restarted without its store --- */

struct revoked {
	int n;
	int with_reason;
};

static void on_revoked(struct dmabroker_buffer *buf, const char *reason, void *userdata)
{
	struct revoked *rv = userdata;

	(void)buf;
	rv->n++;
	if (strcmp(reason, DMABROKER_REVOKED_DAEMON_RESTARTED) == 0)
		rv->with_reason++;
}

static void test_restart_without_store(void)
{
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker_event_handlers h = {.revoked = on_revoked};
	struct dmabroker_buffer *old[3], *fresh = NULL;
	struct tally t = {.bufs = &fresh};
	struct revoked rv = {0};
	struct dmabroker *ctx = client(0);

	dmabroker_set_event_handlers(ctx, &h, sizeof(h), &rv);
	for (int i = 0; i < 3; i++)
		tap_require(dmabroker_allocate(ctx, &spec, sizeof(spec), &old[i]) == 0,
			    "a buffer is allocated");
	fixture_kill_daemon(&f, SIGKILL);
	tap_require(fixture_restart_daemon(&f) == 0, "the daemon starts again, without a store");
	run_until(ctx, &rv.n, 3, 10000);
	is(rv.with_reason, 3, "every old buffer is reported revoked: \"%s\"",
	   DMABROKER_REVOKED_DAEMON_RESTARTED);
	is(dmabroker_allocate_async(ctx, &spec, sizeof(spec), on_allocated, &t, NULL), 0,
	   "an allocation is accepted");
	run_until(ctx, &t.done, 1, 10000);
	is(t.ok, 1, "and succeeds: the context registered again on its own (got %d)",
	   t.first_error);
	for (int i = 0; i < 3; i++)
		is(dmabroker_release(old[i]), 0, "an old buffer is released here only");
	is(daemon_buffers(), 1, "the new daemon holds only the new buffer");
	dmabroker_release(fresh);
	dmabroker_disconnect(ctx);
}

/* --- Release after the peer connection died --- */

/* The peer connection's socket: the one AF_UNIX socket whose other end has no name. */
static void test_release_after_peer_died(void)
{
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker_buffer *bufs[4];
	struct tally rel = {0};
	struct dmabroker *ctx = client(0);
	int fd;

	for (int i = 0; i < 4; i++)
		tap_require(dmabroker_allocate(ctx, &spec, sizeof(spec), &bufs[i]) == 0,
			    "a buffer is allocated");
	is(daemon_buffers(), 4, "the daemon holds 4");
	fd = find_peer_socket();
	tap_require(fd >= 0, "the peer connection's socket is found");
	shutdown(fd, SHUT_RDWR);
	for (int i = 0; i < 4; i++)
		is(dmabroker_release_async(bufs[i], on_done, &rel, NULL), 0,
		   "Release is accepted after the peer died (not yet noticed)");
	run_until(ctx, &rel.done, 4, 30000);
	is(rel.ok, 4, "every Release is answered by the daemon (first error %d)", rel.first_error);
	is(daemon_buffers(), 0, "the daemon's count drops to 0");
	dmabroker_disconnect(ctx);
}

#ifndef OLD_LIBRARY
struct adopting {
	int done, ok;
	struct dmabroker_buffer *buf;
};

static void on_adopted(int r, struct dmabroker_buffer *const *bufs, unsigned count, void *userdata)
{
	struct adopting *a = userdata;

	a->done++;
	if (r == 0 && count == 1) {
		a->ok = 1;
		a->buf = bufs[0];
	}
}

/* --- events on the bus once the peer died: the broker's owner must be known --- */

static void test_events_after_peer_died(void)
{
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker_event_handlers h = {.revoked = on_revoked};
	struct dmabroker_buffer *buf = NULL;
	struct revoked rv = {0};
	struct dmabroker *ctx = client(0);
	int fd;

	dmabroker_set_event_handlers(ctx, &h, sizeof(h), &rv);
	tap_require(dmabroker_allocate(ctx, &spec, sizeof(spec), &buf) == 0, "a buffer");
	for (int i = 0; i < 5; i++)
		turn(ctx, 20);
	fd = find_peer_socket();
	tap_require(fd >= 0, "the peer connection's socket is found");
	shutdown(fd, SHUT_RDWR);
	for (int i = 0; i < 5; i++)
		turn(ctx, 20);
	is(dmabroker_buffer_revoke(buf, "test"), 0, "the client revokes its buffer (on the bus)");
	run_until(ctx, &rv.n, 1, 5000);
	is(rv.n, 1,
	   "the Revoked the daemon sent on the bus is delivered (its sender is the "
	   "broker's known owner)");
	dmabroker_release(buf);
	dmabroker_disconnect(ctx);
}

/* --- a call timed out: its late answer is cleaned up; adopting what the daemon holds --- */

static void test_timeout_and_adopt(void)
{
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker_buffer **adopted = NULL, *more = NULL;
	struct adopting adopting = {0};
	struct tally t = {.bufs = calloc(4, sizeof(*t.bufs))};
	struct dmabroker *ctx = client(0);
	unsigned n = 0;

	is(dmabroker_set_call_timeout(ctx, 200 * 1000), 0, "a call timeout of 200 ms is set");
	kill(f.daemon_pid, SIGSTOP);
	for (int i = 0; i < 4; i++)
		dmabroker_allocate_async(ctx, &spec, sizeof(spec), on_allocated, &t, NULL);
	run_until(ctx, &t.done, 4, 5000);
	is(t.failed, 4, "with the daemon stopped, the calls time out");
	is(t.first_error, -ETIMEDOUT, "with -ETIMEDOUT (documented)");
	kill(f.daemon_pid, SIGCONT);
	dmabroker_set_call_timeout(ctx, 0);
	/* The late answers come; the library releases what they made. */
	for (int i = 0; i < 40 && daemon_buffers() != 0; i++)
		turn(ctx, 50);
	is(daemon_buffers(), 0, "the late answers' buffers are released, not left charged");
	is(dmabroker_adopt_buffers(ctx, &adopted, &n), 0, "adopting works");
	is(n, 0, "and finds nothing unknown left");
	free(adopted);

	/* A blocking call that times out: its late answer is dropped, and the buffer it made
	 * is unknown to the library. */
	dmabroker_set_call_timeout(ctx, 1000);
	kill(f.daemon_pid, SIGSTOP);
	is(dmabroker_allocate(ctx, &spec, sizeof(spec), &more), -ETIMEDOUT,
	   "a blocking allocation times out (1 ms, the daemon stopped)");
	kill(f.daemon_pid, SIGCONT);
	dmabroker_set_call_timeout(ctx, 0);
	for (int i = 0; i < 100 && daemon_buffers() != 1; i++)
		usleep(10 * 1000);
	is(daemon_buffers(), 1, "the daemon made the buffer all the same");
	is(dmabroker_adopt_buffers(ctx, &adopted, &n), 0, "adopting");
	is(n, 1, "hands it to the caller");
	tap_ok(n == 1 && dmabroker_buffer_get_fd(adopted[0]) >= 0 &&
		       dmabroker_buffer_get_size(adopted[0]) == 4096,
	       "with its fd and layout");
	for (int i = 0; i < 10; i++)
		turn(ctx, 20);
	is(daemon_buffers(), 1, "reconciling (due after the timeout) leaves an adopted buffer be");
	if (n == 1)
		is(dmabroker_release(adopted[0]), 0, "the caller releases it");
	is(daemon_buffers(), 0, "and the daemon holds nothing");
	free(adopted);

	/* The same, adopted asynchronously. */
	dmabroker_set_call_timeout(ctx, 1000);
	kill(f.daemon_pid, SIGSTOP);
	is(dmabroker_allocate(ctx, &spec, sizeof(spec), &more), -ETIMEDOUT,
	   "a third blocking allocation times out");
	kill(f.daemon_pid, SIGCONT);
	dmabroker_set_call_timeout(ctx, 0);
	for (int i = 0; i < 100 && daemon_buffers() != 1; i++)
		usleep(10 * 1000);
	is(dmabroker_adopt_buffers_async(ctx, on_adopted, &adopting, NULL), 0,
	   "an asynchronous adoption is sent");
	run_until(ctx, &adopting.done, 1, 10000);
	is(adopting.ok, 1, "and hands the buffer over");
	if (adopting.buf)
		dmabroker_release(adopting.buf);
	is(daemon_buffers(), 0, "released by the caller");

	/* The same, but nobody adopts: reconciling releases it on its own. */
	dmabroker_set_call_timeout(ctx, 1000);
	kill(f.daemon_pid, SIGSTOP);
	is(dmabroker_allocate(ctx, &spec, sizeof(spec), &more), -ETIMEDOUT,
	   "another blocking allocation times out");
	kill(f.daemon_pid, SIGCONT);
	dmabroker_set_call_timeout(ctx, 0);
	for (int i = 0; i < 100 && daemon_buffers() != 1; i++)
		usleep(10 * 1000);
	for (int i = 0; i < 40 && daemon_buffers() != 0; i++)
		turn(ctx, 50);
	is(daemon_buffers(), 0, "reconciling released the buffer nobody was given");
	dmabroker_disconnect(ctx);
	free(t.bufs);
}

#endif

int main(int argc, char **argv)
{
	const char *only = getenv("TEST_FLOW_ONLY");

	(void)argc;
	fixture_wrap_self(argv);

	signal(SIGPIPE, SIG_IGN);
	fixture_bus_limits = system_limits;
	tap_require(fixture_start(&f, NULL) == 0,
		    "a bus with the system bus's limits and a daemon");
#define RUN(name, ...)                           \
	do {                                     \
		if (!only || strstr(only, name)) \
			__VA_ARGS__;             \
	} while (0)
	RUN("peer", test_many_in_flight(0, 1000));
	RUN("bus", test_many_in_flight(DMABROKER_CONNECT_NO_PEER, 300));
	RUN("handshake", test_stopped_during_handshake());
	RUN("release", test_release_after_peer_died());
	RUN("events", test_events_after_peer_died());
#ifndef OLD_LIBRARY
	RUN("timeout", test_timeout_and_adopt());
#endif
	RUN("disconnect", test_disconnect_in_callback());
	RUN("cancel", test_cancel_handles());
	RUN("restart", test_restart_without_store());
	RUN("late", test_late_dispatch());
	if (!only || strstr(only, "strict")) {
		/* A bus stricter than the library's window for it. */
		tap_ok(fixture_wait_clients(&f, 0, 5000), "every client is gone");
		is(fixture_stop(&f), 0, "the daemon exits cleanly");
		fixture_bus_limits = strict_limits;
		tap_require(fixture_start(&f, NULL) == 0,
			    "a bus allowing 50 pending replies per connection, and a daemon");
		test_bus_refuses();
	}
	tap_ok(fixture_wait_clients(&f, 0, 5000), "every client is gone");
	is(fixture_stop(&f), 0, "the daemon exits cleanly");
	return tap_done();
}
