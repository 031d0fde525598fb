// SPDX-License-Identifier: MIT
/*
 * Streams end to end through the library, against the real daemon on a private bus (memfd
 * buffers: the protocol, not dma-buf fences). The producer writes a pattern per frame that
 * each consumer checks byte by byte. Consumers run in forked processes and report each frame
 * on a pipe ("F seq ok"), and at their end ("E frames bad reason").
 *  - FIFO: two consumers get every one of 100 frames, in order, with its content;
 *  - LATEST with a slow consumer: it gets newer frames (strictly increasing, some skipped,
 *    each with its content) while the fast one gets all 100, the producer never waits long
 *    for a free buffer, and the end of the stream reaches the slow one even while it holds
 *    all it may;
 *  - a consumer that holds its frames is SIGKILLed mid-stream: the producer gets
 *    consumer_left and every buffer back, and streams on to the other consumer;
 *  - the producer is SIGKILLed: the consumer's ended callback has the daemon's reason, and
 *    the buffer it holds still reads back what the producer wrote;
 *  - hostile links: a raw client joins with JoinStream over sd-bus and sends a malformed
 *    record, a RELEASE out of range, a RELEASE of an index it does not hold, an fd where
 *    none belongs, a fence that is a memfd, a flood: each time the producer's library ends
 *    that link only (consumer_left with the reason), tells the daemon (EndStreamLink: the
 *    raw client gets StreamLinkEnded and ListStreams lists it no more, though it never
 *    left), and the other consumer keeps receiving;
 *  - a consumer without a frame callback: frames waiting on its link do not make its fd
 *    readable between wait_frame() calls (a poll loop does not spin), and wait_frame() gets
 *    them in order;
 *  - StreamEnded, StreamLinkEnded and StreamLink forged by another bus client reach the
 *    producer's and the consumer's library and are ignored: the stream goes on.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-bus.h>

#include "bus-util.h"
#include "dmabroker-wire.h"
#include "dmabroker.h"
#include "fixture.h"
#include "macros.h"
#include "protocol.h"
#include "tap.h"

#define FRAME_BYTES 4096
#define FRAMES 100

static struct fixture f;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void turn(struct dmabroker *ctx, int max_ms)
{
	struct pollfd pfd = {dmabroker_get_fd(ctx), POLLIN, 0};

	(void)poll(&pfd, 1, max_ms);
	(void)dmabroker_dispatch(ctx);
}

static uint8_t pattern(uint64_t seq, size_t i)
{
	return (uint8_t)(seq * 13 + i * 7 + (i >> 8));
}

static bool content_ok(struct dmabroker_buffer *buf, uint64_t seq)
{
	void *map = NULL;
	const uint8_t *p;

	if (!buf || dmabroker_buffer_map(buf, &map) < 0 || !map)
		return false;
	p = map;
	for (size_t i = 0; i < FRAME_BYTES; i++)
		if (p[i] != pattern(seq, i))
			return false;
	return true;
}

static struct dmabroker *connect_ctx(const char *name)
{
	struct dmabroker *ctx = NULL;

	if (dmabroker_connect(&ctx, NULL, 0) < 0)
		return NULL;
	if (dmabroker_register(ctx, "cpu", true, name, NULL) < 0)
		return dmabroker_disconnect(ctx);
	return ctx;
}

/* --- the producer (this process, or a child) --- */

struct producer {
	struct dmabroker *ctx;
	struct dmabroker_collection *col;
	struct dmabroker_stream *s;
	unsigned count;
	int joined, left;
	uint32_t left_id;
	char left_reason[256];
	int returned;
	bool *out; /* per buffer: queued and not back */
	bool free_on_return; /* buffer_returned frees the stream */
};

static void p_joined(struct dmabroker_stream *s, uint32_t consumer, void *userdata)
{
	struct producer *p = userdata;

	(void)s;
	(void)consumer;
	p->joined++;
}

static void p_left(struct dmabroker_stream *s, uint32_t consumer, const char *reason,
		   void *userdata)
{
	struct producer *p = userdata;

	(void)s;
	p->left++;
	p->left_id = consumer;
	snprintf(p->left_reason, sizeof(p->left_reason), "%s", reason);
}

static void p_returned(struct dmabroker_stream *s, uint32_t index, int fence, void *userdata)
{
	struct producer *p = userdata;

	(void)s;
	(void)fence;
	p->returned++;
	if (index < p->count)
		p->out[index] = false;
	if (p->free_on_return) {
		p->free_on_return = false;
		(void)dmabroker_stream_free_async(s, "freed in a callback", NULL, NULL, NULL);
		p->s = NULL;
	}
}

static unsigned p_out(const struct producer *p)
{
	unsigned n = 0;

	for (unsigned i = 0; i < p->count; i++)
		n += p->out[i];
	return n;
}

static bool producer_start(struct producer *p, const char *name, enum dmabroker_stream_mode mode)
{
	struct dmabroker_constraints c = {.min_size = FRAME_BYTES,
					  .min_buffers_for_camping = 4,
					  .cpu_write = true,
					  .cpu_read = true};
	struct dmabroker_stream_options o = {
		.name = name, .mode = mode, .format = {.width = 64, .height = 16}};
	struct dmabroker_stream_handlers h = {.buffer_returned = p_returned,
					      .consumer_joined = p_joined,
					      .consumer_left = p_left};

	*p = (struct producer){0};
	p->ctx = connect_ctx("producer");
	if (!p->ctx || dmabroker_collection_create(p->ctx, name, 1, &p->col) < 0 ||
	    dmabroker_collection_set_constraints(p->col, &c, sizeof(c)) < 0 ||
	    dmabroker_collection_commit(p->col) < 0 || dmabroker_collection_wait(p->col) < 0)
		return false;
	p->count = dmabroker_collection_get_buffer_count(p->col);
	p->out = calloc(p->count, sizeof(*p->out));
	return p->out &&
	       dmabroker_stream_create(p->col, &o, sizeof(o), &h, sizeof(h), p, &p->s) == 0;
}

static void producer_stop(struct producer *p)
{
	dmabroker_stream_free(p->s, "test over");
	dmabroker_collection_leave(p->col);
	dmabroker_disconnect(p->ctx);
	free(p->out);
}

/* Takes a free buffer (waiting at most timeout_ms), writes seq's pattern, queues it. */
static int produce(struct producer *p, uint64_t *ret_seq, uint64_t *waited_ms)
{
	struct dmabroker_frame fr = {.acquire_fence = -1};
	uint64_t t0 = now_ms();
	void *map = NULL;
	uint32_t index;
	int r;

	r = dmabroker_stream_wait_free(p->s, &index, 10ull * 1000000);
	if (waited_ms)
		*waited_ms = now_ms() - t0;
	if (r < 0)
		return r;
	r = dmabroker_buffer_map(dmabroker_stream_get_buffer(p->s, index), &map);
	if (r < 0)
		return r;
	/* The seq the library gives this frame: one more than the last. */
	for (size_t i = 0; i < FRAME_BYTES; i++)
		((uint8_t *)map)[i] = pattern(*ret_seq + 1, i);
	fr.index = index;
	fr.timestamp_ns = now_ms() * 1000000;
	p->out[index] = true;
	r = dmabroker_stream_queue(p->s, &fr);
	if (r >= 0)
		*ret_seq = fr.seq;
	return r;
}

static int end_of_stream(struct producer *p)
{
	struct dmabroker_frame fr = {.index = DMABROKER_FRAME_NO_BUFFER,
				     .flags = DMABROKER_FRAME_END_OF_STREAM,
				     .acquire_fence = -1};

	return dmabroker_stream_queue(p->s, &fr);
}

/* --- a consumer in a child process --- */

struct consumer_opts {
	const char *stream;
	uint32_t max_held;
	unsigned slow_ms; /* per frame, before releasing it */
	bool hold; /* never release */
};

struct consumer {
	struct consumer_opts o;
	int out; /* the report pipe */
	unsigned frames, bad, held;
	uint64_t last_seq;
	bool done;
	char reason[200];
};

static void report(int fd, const char *fmt, ...) _printf_(2, 3);
static void report(int fd, const char *fmt, ...)
{
	char line[300];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	(void)!write(fd, line, (size_t)n);
}

static void c_frame(struct dmabroker_stream *s, const struct dmabroker_frame *fr, void *userdata)
{
	struct consumer *c = userdata;
	bool ok;

	if (fr->flags & DMABROKER_FRAME_END_OF_STREAM) {
		c->done = true;
		snprintf(c->reason, sizeof(c->reason), "end of stream");
		return;
	}
	ok = fr->seq > c->last_seq &&
	     content_ok(dmabroker_stream_get_buffer(s, fr->index), fr->seq);
	c->last_seq = fr->seq;
	c->frames++;
	c->bad += !ok;
	if (c->o.hold) {
		report(c->out, "F %llu %d\n", (unsigned long long)fr->seq, ok);
		if (++c->held == 3)
			report(c->out, "H\n");
		return;
	}
	if (c->o.slow_ms)
		usleep(c->o.slow_ms * 1000);
	if (dmabroker_stream_release(s, fr->index, -1) < 0)
		c->bad++;
	/* After the release: whoever reads this may count on the RELEASE being in the link. */
	report(c->out, "F %llu %d\n", (unsigned long long)fr->seq, ok);
}

static void c_ended(struct dmabroker_stream *s, const char *reason, void *userdata)
{
	struct consumer *c = userdata;

	(void)s;
	c->done = true;
	snprintf(c->reason, sizeof(c->reason), "%s", reason);
}

static void close_inherited(int keep)
{
	/* The parent's sockets and links are not the child's to hold open. */
	for (int fd = 3; fd < 1024; fd++)
		if (fd != keep)
			(void)close(fd);
}

static _Noreturn void consumer_main(const struct consumer_opts *o, int out)
{
	struct dmabroker_stream_options so = {.max_held = o->max_held, .label = "test"};
	struct dmabroker_stream_handlers h = {.frame = c_frame, .ended = c_ended};
	struct consumer c = {.o = *o, .out = out};
	struct dmabroker_stream *s = NULL;
	struct dmabroker *ctx;
	int r;

	close_inherited(out);
	ctx = connect_ctx("consumer");
	if (!ctx)
		_exit(2);
	r = dmabroker_stream_join(ctx, o->stream, NULL, &so, sizeof(so), &h, sizeof(h), &c, &s);
	if (r < 0) {
		report(out, "E 0 0 join failed: %s\n", strerror(-r));
		_exit(3);
	}
	report(out, "J %u\n", dmabroker_stream_get_consumer_id(s));
	while (!c.done)
		turn(ctx, 1000);
	report(out, "E %u %u %s\n", c.frames, c.bad, c.reason);
	dmabroker_stream_free(s, NULL);
	dmabroker_disconnect(ctx);
	_exit(0);
}

struct child {
	pid_t pid;
	int out;
	char buf[8192];
	size_t len;
	uint64_t last_seq;
	unsigned frames, bad, held_reports;
	bool ended;
	unsigned end_frames, end_bad;
	char end_reason[200];
	uint32_t id;
	bool joined;
	bool started; /* a producer: "S" */
};

static void spawn_consumer(struct child *ch, const struct consumer_opts *o)
{
	int p[2];

	*ch = (struct child){.out = -1};
	if (pipe2(p, O_CLOEXEC) < 0)
		tap_require(false, "a pipe");
	ch->pid = fork();
	if (ch->pid < 0)
		tap_require(false, "fork");
	if (ch->pid == 0) {
		close(p[0]);
		consumer_main(o, p[1]);
	}
	close(p[1]);
	ch->out = p[0];
	(void)fcntl(ch->out, F_SETFL, O_NONBLOCK);
}

/* Reads the child's lines that came. */
static void child_read(struct child *ch)
{
	ssize_t n;
	char *nl;

	while (ch->out >= 0 &&
	       (n = read(ch->out, ch->buf + ch->len, sizeof(ch->buf) - 1 - ch->len)) > 0)
		ch->len += (size_t)n;
	ch->buf[ch->len] = 0;
	while ((nl = strchr(ch->buf, '\n'))) {
		unsigned long long seq;
		int ok;

		*nl = 0;
		if (sscanf(ch->buf, "F %llu %d", &seq, &ok) == 2) {
			ch->frames++;
			ch->bad += !ok || seq <= ch->last_seq;
			ch->last_seq = seq;
		} else if (strcmp(ch->buf, "S") == 0) {
			ch->started = true;
		} else if (strcmp(ch->buf, "H") == 0) {
			ch->held_reports++;
		} else if (sscanf(ch->buf, "J %u", &ch->id) == 1) {
			ch->joined = true;
		} else if (ch->buf[0] == 'E') {
			int k = 0;

			ch->ended = true;
			(void)sscanf(ch->buf, "E %u %u %n", &ch->end_frames, &ch->end_bad, &k);
			snprintf(ch->end_reason, sizeof(ch->end_reason), "%s", ch->buf + k);
		}
		ch->len -= (size_t)(nl + 1 - ch->buf);
		memmove(ch->buf, nl + 1, ch->len + 1);
	}
}

/* Dispatches the producer (if any) until cond or timeout_ms; cond's value. */
#define RUN_UNTIL(ctx, cond, timeout_ms)                      \
	({                                                    \
		uint64_t _end = now_ms() + (timeout_ms);      \
		bool _met;                                    \
		while (!(_met = (cond)) && now_ms() < _end) { \
			if (ctx)                              \
				turn(ctx, 20);                \
			else                                  \
				usleep(20000);                \
		}                                             \
		_met;                                         \
	})

/* Reaps the child; one that is not done within 60 s (a test that failed before telling it
 * to end) is killed, so that a failure never hangs the run. */
static int child_reap(struct child *ch)
{
	uint64_t end = now_ms() + 60000;
	int status = -1;

	while (ch->pid > 0) {
		pid_t r = waitpid(ch->pid, &status, WNOHANG);

		if (r == ch->pid || r < 0) {
			ch->pid = 0;
			break;
		}
		if (now_ms() > end) {
			tap_diag("  child %d is not done: SIGKILL", (int)ch->pid);
			kill(ch->pid, SIGKILL);
			end = UINT64_MAX;
		}
		usleep(20000);
	}
	if (ch->out >= 0)
		close(ch->out);
	ch->out = -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* --- the tests --- */

static void test_fifo(void)
{
	struct consumer_opts o = {.stream = "fifo", .max_held = 1};
	struct child a, b;
	struct producer p;
	uint64_t seq = 0;
	int r = 0;

	tap_diag("FIFO: a producer and two consumers, 100 frames");
	tap_require(producer_start(&p, "fifo", DMABROKER_STREAM_FIFO), "a FIFO stream");
	tap_diag("  %u buffers", p.count);
	spawn_consumer(&a, &o);
	spawn_consumer(&b, &o);
	tap_ok(RUN_UNTIL(p.ctx, p.joined == 2, 20000), "both consumers said hello");
	tap_is(dmabroker_stream_get_consumer_count(p.s), 2, "two consumers linked and ready");
	for (unsigned i = 0; i < FRAMES && r >= 0; i++)
		r = produce(&p, &seq, NULL);
	tap_is(r, 0, "100 frames queued");
	tap_is(seq, FRAMES, "their seqs are 1..100");
	tap_is(end_of_stream(&p), 0, "an end-of-stream frame without a buffer");
	child_read(&a);
	child_read(&b);
	RUN_UNTIL(p.ctx, (child_read(&a), child_read(&b), a.ended && b.ended), 30000);
	tap_ok(a.ended && b.ended, "both consumers saw the end of the stream");
	tap_is(a.frames, FRAMES, "consumer 1 got every frame");
	tap_is(b.frames, FRAMES, "consumer 2 got every frame");
	tap_is(a.bad + b.bad, 0, "in order, each with its content");
	tap_ok(a.last_seq == FRAMES && b.last_seq == FRAMES, "the last one last");
	tap_ok(RUN_UNTIL(p.ctx, p_out(&p) == 0, 10000), "every buffer is back");
	tap_is(child_reap(&a), 0, "consumer 1 exits cleanly");
	tap_is(child_reap(&b), 0, "consumer 2 exits cleanly");
	producer_stop(&p);
}

static void test_latest(void)
{
	struct consumer_opts fast = {.stream = "latest", .max_held = 1};
	struct consumer_opts slow = {.stream = "latest", .max_held = 2, .slow_ms = 100};
	uint64_t seq = 0, waited, max_wait = 0;
	struct child a, b;
	struct producer p;
	int r = 0;

	tap_diag("LATEST: a fast and a slow consumer (100 ms a frame)");
	tap_require(producer_start(&p, "latest", DMABROKER_STREAM_LATEST), "a LATEST stream");
	spawn_consumer(&a, &fast);
	spawn_consumer(&b, &slow);
	tap_ok(RUN_UNTIL(p.ctx, p.joined == 2, 20000), "both consumers said hello");
	for (unsigned i = 0; i < FRAMES && r >= 0; i++) {
		r = produce(&p, &seq, &waited);
		if (waited > max_wait)
			max_wait = waited;
		/* Paced by the fast consumer (it has released each frame before the next is
		 * queued): the slow one cannot keep up, and is never waited for. */
		RUN_UNTIL(p.ctx, (child_read(&a), a.last_seq == seq), 10000);
		(void)dmabroker_dispatch(p.ctx);
		/* At least 10 ms a frame: the slow consumer sees several over the run. */
		RUN_UNTIL(p.ctx, false, 10);
	}
	tap_is(r, 0, "100 frames queued");
	tap_diag("  the producer waited at most %llu ms for a free buffer",
		 (unsigned long long)max_wait);
	tap_ok(max_wait < 1000, "the producer never stalls behind the slow consumer");
	tap_is(end_of_stream(&p), 0, "end of stream");
	RUN_UNTIL(p.ctx, (child_read(&a), child_read(&b), a.ended && b.ended), 30000);
	tap_diag("  the slow consumer got %u of 100 frames, the last %llu", b.frames,
		 (unsigned long long)b.last_seq);
	tap_is(a.frames, FRAMES, "the fast consumer got every frame");
	tap_ok(b.frames >= 2 && b.frames < FRAMES, "the slow consumer got some, not all");
	tap_is(a.bad + b.bad, 0, "each strictly newer than the last, with its content");
	tap_ok(b.last_seq > FRAMES / 2, "the slow consumer got newer frames as they came");
	tap_ok(b.ended && strcmp(b.end_reason, "end of stream") == 0,
	       "the end of the stream reached the slow consumer while it held all it may");
	tap_ok(RUN_UNTIL(p.ctx, p_out(&p) == 0, 10000), "every buffer is back");
	tap_is(child_reap(&a), 0, "the fast consumer exits cleanly");
	tap_is(child_reap(&b), 0, "the slow consumer exits cleanly");
	producer_stop(&p);
}

static void test_consumer_killed(void)
{
	struct consumer_opts keep = {.stream = "kill-consumer", .max_held = 1};
	struct consumer_opts hold = {.stream = "kill-consumer", .max_held = 4, .hold = true};
	struct child a, b;
	struct producer p;
	uint64_t seq = 0;
	bool killed = false;
	int r = 0;

	tap_diag("a consumer that holds its frames is SIGKILLed mid-stream");
	tap_require(producer_start(&p, "kill-consumer", DMABROKER_STREAM_FIFO), "a FIFO stream");
	spawn_consumer(&a, &keep);
	spawn_consumer(&b, &hold);
	tap_ok(RUN_UNTIL(p.ctx, p.joined == 2 && (child_read(&b), b.joined), 20000),
	       "both consumers said hello");
	/* Three frames: the holding consumer has three of the four buffers. */
	for (unsigned i = 0; i < 3 && r >= 0; i++)
		r = produce(&p, &seq, NULL);
	if (RUN_UNTIL(p.ctx, (child_read(&b), b.held_reports > 0), 10000)) {
		tap_diag("  consumer %u holds 3 frames: SIGKILL", b.id);
		tap_is(p_out(&p), 3, "three buffers are out");
		kill(b.pid, SIGKILL);
		killed = true;
		tap_ok(RUN_UNTIL(p.ctx, p.left == 1, 10000), "the producer got consumer_left");
		tap_is(p.left_id, b.id, "for the killed consumer");
		tap_ok(strcmp(p.left_reason, "the consumer's link hung up") == 0,
		       "a hang-up, whether its link read end of file or a reset: %s",
		       p.left_reason);
		tap_ok(RUN_UNTIL(p.ctx, (child_read(&a), a.last_seq == seq) && p_out(&p) == 0,
				 10000),
		       "every buffer it held is back");
		tap_is(dmabroker_stream_get_consumer_count(p.s), 1, "one consumer left");
	}
	for (unsigned i = 3; i < FRAMES && r >= 0; i++)
		r = produce(&p, &seq, NULL);
	tap_ok(killed, "the holding consumer was killed mid-stream");
	tap_is(r, 0, "the producer streamed on: 100 frames queued");
	tap_is(end_of_stream(&p), 0, "end of stream");
	RUN_UNTIL(p.ctx, (child_read(&a), a.ended), 30000);
	tap_is(a.frames, FRAMES, "the other consumer got every frame");
	tap_is(a.bad, 0, "in order, each with its content");
	tap_is(child_reap(&b), 128 + SIGKILL, "the killed consumer died of SIGKILL");
	tap_is(child_reap(&a), 0, "the other consumer exits cleanly");
	producer_stop(&p);
}

static _Noreturn void producer_main(int out)
{
	struct producer p;
	uint64_t seq = 0;

	close_inherited(out);
	if (!producer_start(&p, "kill-producer", DMABROKER_STREAM_FIFO))
		_exit(2);
	report(out, "S\n");
	while (p.joined < 1)
		turn(p.ctx, 100);
	for (unsigned i = 0; i < 3; i++)
		if (produce(&p, &seq, NULL) < 0)
			_exit(3);
	report(out, "Q %llu\n", (unsigned long long)seq);
	/* Waits for its SIGKILL, dispatching (releases come back). */
	for (;;)
		turn(p.ctx, 100);
}

struct held {
	struct dmabroker_frame frames[8];
	unsigned n;
	bool ended;
	char reason[256];
};

static void h_frame(struct dmabroker_stream *s, const struct dmabroker_frame *fr, void *userdata)
{
	struct held *h = userdata;

	(void)s;
	if (h->n < 8)
		h->frames[h->n++] = *fr;
}

static void h_ended(struct dmabroker_stream *s, const char *reason, void *userdata)
{
	struct held *h = userdata;

	(void)s;
	h->ended = true;
	snprintf(h->reason, sizeof(h->reason), "%s", reason);
}

static bool no_streams(void)
{
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = inspect_bus();
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	bool none;

	if (!bus || broker_call(bus, "ListStreams", &e, &reply, NULL) < 0)
		return false;
	none = sd_bus_message_enter_container(reply, 'a', "a{sv}") > 0 &&
	       sd_bus_message_at_end(reply, false) > 0;
	sd_bus_error_free(&e);
	return none;
}

static void test_producer_killed(void)
{
	struct dmabroker_stream_handlers h = {.frame = h_frame, .ended = h_ended};
	struct dmabroker_stream_options so = {.max_held = 4};
	struct dmabroker_stream *s = NULL;
	struct child prod = {.out = -1};
	struct held held = {0};
	struct dmabroker *ctx;
	int p[2];

	tap_diag("the producer is SIGKILLed while the consumer holds its frames");
	if (pipe2(p, O_CLOEXEC) < 0)
		tap_require(false, "a pipe");
	prod.pid = fork();
	if (prod.pid < 0)
		tap_require(false, "fork");
	if (prod.pid == 0) {
		close(p[0]);
		producer_main(p[1]);
	}
	close(p[1]);
	prod.out = p[0];
	(void)fcntl(prod.out, F_SETFL, O_NONBLOCK);
	tap_ok(RUN_UNTIL(NULL, (child_read(&prod), prod.started), 20000),
	       "the producer made its stream");
	ctx = connect_ctx("held");
	tap_require(ctx && dmabroker_stream_join(ctx, "kill-producer", NULL, &so, sizeof(so), &h,
						 sizeof(h), &held, &s) == 0,
		    "the consumer joined");
	tap_ok(RUN_UNTIL(ctx, held.n == 3, 20000), "3 frames came");
	kill(prod.pid, SIGKILL);
	tap_is(child_reap(&prod), 128 + SIGKILL, "the producer died of SIGKILL");
	/* The consumer dispatches once the daemon has ended the stream: its reason is queued. */
	tap_ok(RUN_UNTIL(NULL, no_streams(), 10000), "the daemon ended the stream");
	tap_ok(RUN_UNTIL(ctx, held.ended, 10000), "the consumer's ended callback ran");
	tap_diag("  reason: %s", held.reason);
	tap_ok(strcmp(held.reason, "producer disconnected") == 0, "with the daemon's reason");
	tap_ok(held.n == 3 && content_ok(dmabroker_stream_get_buffer(s, held.frames[2].index),
					 held.frames[2].seq),
	       "the held buffer still reads what the producer wrote");
	tap_is(dmabroker_stream_release(s, held.frames[2].index, -1), 0,
	       "releasing after the end is harmless");
	tap_is(dmabroker_stream_free(s, NULL), 0, "the consumer frees the stream");
	dmabroker_disconnect(ctx);
}

/* --- signals forged by another bus client --- */

static unsigned ignored[3]; /* StreamEnded, StreamLinkEnded, StreamLink ignored by the library */

static void count_ignored(enum dmabroker_log_level level, const char *msg, void *userdata)
{
	static const char *const members[] = {"StreamEnded ", "StreamLinkEnded ", "StreamLink "};

	(void)level;
	(void)userdata;
	for (size_t i = 0; i < ARRAY_SIZE(members); i++)
		if (strstr(msg, "ignoring ") && strstr(msg, members[i]) &&
		    strstr(msg, "not the broker"))
			ignored[i]++;
}

/* A signal as the broker's, from attacker to the owner of the client object client_path. */
static void forge(sd_bus *attacker, const char *client_path, const char *member, const char *types,
		  ...)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	char *victim = NULL;
	va_list ap;
	int r;

	r = sd_bus_get_property_string(attacker, DB_BUS_NAME, client_path, DB_IFACE_CLIENT,
				       "BusName", NULL, &victim);
	if (r >= 0)
		r = sd_bus_message_new_signal(attacker, &m, DB_OBJECT_PATH, DB_IFACE_BROKER,
					      member);
	if (r >= 0)
		r = sd_bus_message_set_destination(m, victim);
	va_start(ap, types);
	if (r >= 0)
		r = sd_bus_message_appendv(m, types, ap);
	va_end(ap);
	if (r >= 0)
		r = sd_bus_send(attacker, m, NULL);
	tap_ok(r >= 0, "another bus client sends a forged %s", member);
	free(victim);
}

static void test_forged(void)
{
	struct dmabroker_stream_handlers h = {.frame = h_frame, .ended = h_ended};
	struct dmabroker_stream_options so = {.max_held = 4};
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *attacker = inspect_bus();
	struct dmabroker_stream *s = NULL;
	struct held held = {0};
	struct dmabroker *ctx;
	struct producer p;
	uint64_t seq = 0;
	bool arrived;
	int pair[2];

	tap_diag("stream signals forged by another bus client");
	tap_require(attacker && producer_start(&p, "forged", DMABROKER_STREAM_FIFO), "a stream");
	ctx = connect_ctx("victim");
	tap_require(ctx && dmabroker_stream_join(ctx, "forged", NULL, &so, sizeof(so), &h,
						 sizeof(h), &held, &s) == 0,
		    "a consumer joined");
	tap_ok(RUN_UNTIL(p.ctx, p.joined == 1, 10000), "it said hello");
	tap_require(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) == 0,
		    "a socketpair");
	memset(ignored, 0, sizeof(ignored));
	dmabroker_set_log_handler(count_ignored, NULL);
	forge(attacker, dmabroker_client_path(ctx), "StreamEnded", "os",
	      dmabroker_stream_get_path(s), "forged");
	forge(attacker, dmabroker_client_path(p.ctx), "StreamEnded", "os",
	      dmabroker_stream_get_path(p.s), "forged");
	forge(attacker, dmabroker_client_path(p.ctx), "StreamLinkEnded", "ous",
	      dmabroker_stream_get_path(p.s), dmabroker_stream_get_consumer_id(s), "forged");
	forge(attacker, dmabroker_client_path(p.ctx), "StreamLink", "ouha{sv}",
	      dmabroker_stream_get_path(p.s), 99u, pair[1], 0);
	sd_bus_flush(attacker);
	close(pair[1]);
	arrived = RUN_UNTIL(p.ctx,
			    (turn(ctx, 0), ignored[0] == 2 && ignored[1] == 1 && ignored[2] == 1),
			    10000);
	tap_ok(arrived, "every forged signal reached the library and was ignored (%u, %u, %u)",
	       ignored[0], ignored[1], ignored[2]);
	dmabroker_set_log_handler(NULL, NULL);
	tap_ok(!held.ended, "the victim consumer's stream did not end");
	tap_is(p.left, 0, "the producer lost no consumer");
	tap_is(dmabroker_stream_get_consumer_count(p.s), 1, "and got no forged one");
	tap_require(produce(&p, &seq, NULL) == 0, "a frame queued");
	tap_ok(RUN_UNTIL(ctx, held.n == 1 && held.frames[0].seq == seq, 10000),
	       "the consumer still gets frames");
	close(pair[0]);
	tap_is(dmabroker_stream_free(s, NULL), 0, "the consumer frees the stream");
	dmabroker_disconnect(ctx);
	producer_stop(&p);
}

/* --- a consumer without a frame callback, in a poll loop --- */

static bool fd_readable(struct dmabroker *ctx)
{
	struct pollfd pfd = {dmabroker_get_fd(ctx), POLLIN, 0};

	return poll(&pfd, 1, 0) > 0;
}

/* Dispatches ctx until its fd is quiet for a moment (the bus has nothing more to say). */
static void settle(struct dmabroker *ctx)
{
	for (unsigned i = 0; i < 50; i++) {
		(void)dmabroker_dispatch(ctx);
		usleep(10000);
		if (!fd_readable(ctx))
			return;
	}
}

static void test_poll_only(void)
{
	struct dmabroker_stream_options so = {.max_held = 4};
	struct dmabroker_stream_handlers h = {0};
	struct dmabroker_stream *s = NULL;
	struct dmabroker_frame fr;
	struct producer p;
	struct dmabroker *ctx;
	uint64_t seq = 0;
	bool in_order = true;

	tap_diag("a consumer without a frame callback, in a poll loop");
	tap_require(producer_start(&p, "poll-only", DMABROKER_STREAM_FIFO), "a FIFO stream");
	ctx = connect_ctx("poll-only");
	tap_require(ctx && dmabroker_stream_join(ctx, "poll-only", NULL, &so, sizeof(so), &h,
						 sizeof(h), NULL, &s) == 0,
		    "a consumer without a frame callback joined");
	tap_ok(RUN_UNTIL(p.ctx, p.joined == 1, 10000), "it said hello");
	for (unsigned i = 0; i < 3; i++)
		tap_require(produce(&p, &seq, NULL) == 0, "a frame queued");
	settle(ctx);
	tap_ok(!fd_readable(ctx),
	       "with 3 frames waiting on its link, its fd is not readable after a dispatch");
	for (uint64_t want = 1; want <= 3; want++) {
		int r = dmabroker_stream_wait_frame(s, &fr, 5ull * 1000000);

		in_order &= r == 0 && fr.seq == want &&
			    content_ok(dmabroker_stream_get_buffer(s, fr.index), fr.seq);
		if (r == 0)
			(void)dmabroker_stream_release(s, fr.index, fr.acquire_fence);
		if (r == 0 && fr.acquire_fence >= 0)
			close(fr.acquire_fence);
	}
	tap_ok(in_order, "wait_frame then gets them in order, each with its content");
	tap_ok(RUN_UNTIL(p.ctx, p_out(&p) == 0, 10000), "every buffer is back");
	tap_require(produce(&p, &seq, NULL) == 0, "a fourth frame queued");
	settle(ctx);
	tap_ok(!fd_readable(ctx), "after wait_frame the link is unwatched again");
	tap_ok(dmabroker_stream_wait_frame(s, &fr, 5ull * 1000000) == 0 && fr.seq == 4,
	       "and wait_frame gets the fourth");
	(void)dmabroker_stream_release(s, fr.index, -1);
	if (fr.acquire_fence >= 0)
		close(fr.acquire_fence);
	tap_is(dmabroker_stream_free(s, NULL), 0, "the consumer frees the stream");
	dmabroker_disconnect(ctx);
	producer_stop(&p);
}

static int freeing_frames;

/* A frame callback that frees its stream (wait_frame is running meanwhile). */
static void free_in_frame(struct dmabroker_stream *s, const struct dmabroker_frame *fr,
			  void *userdata)
{
	(void)fr;
	(void)userdata;
	freeing_frames++;
	(void)dmabroker_stream_free_async(s, NULL, NULL, NULL, NULL);
}

/* A callback frees the stream while wait_frame() or wait_free() dispatches for it. */
static void test_freed_while_waiting(void)
{
	struct dmabroker_stream_options so = {.max_held = 4};
	struct dmabroker_stream_handlers h = {.frame = free_in_frame};
	struct dmabroker_stream *s = NULL;
	struct dmabroker_frame fr = {.acquire_fence = -1};
	struct producer p;
	struct dmabroker *ctx;
	uint64_t seq = 0;
	uint32_t index;
	int r;

	tap_diag("callbacks free the stream while wait_frame and wait_free run");
	tap_require(producer_start(&p, "freed-in-wait", DMABROKER_STREAM_FIFO), "a FIFO stream");
	ctx = connect_ctx("freed-in-wait");
	tap_require(ctx && dmabroker_stream_join(ctx, "freed-in-wait", NULL, &so, sizeof(so), &h,
						 sizeof(h), NULL, &s) == 0,
		    "a consumer whose frame callback frees the stream joined");
	tap_ok(RUN_UNTIL(p.ctx, p.joined == 1, 10000), "it said hello");
	for (unsigned i = 0; i < 2; i++)
		tap_require(produce(&p, &seq, NULL) == 0, "a frame queued");
	/* Both frames come in one dispatch: the first is wait_frame's, the second the
	 * callback's, which frees the stream. */
	usleep(100 * 1000);
	r = dmabroker_stream_wait_frame(s, &fr, 5ull * 1000000);
	tap_ok(r == -EPIPE && freeing_frames == 1,
	       "wait_frame returns -EPIPE once the callback freed the stream (%d)", r);
	tap_ok(RUN_UNTIL(p.ctx, p.left == 1 && p_out(&p) == 0, 10000),
	       "the producer sees the consumer go and has every buffer back");

	/* The producer's own callback frees the stream while wait_free waits for a buffer. */
	s = NULL;
	tap_require(dmabroker_stream_join(ctx, "freed-in-wait", NULL, &so, sizeof(so),
					  &(struct dmabroker_stream_handlers){0},
					  sizeof(struct dmabroker_stream_handlers), NULL, &s) == 0,
		    "a consumer without a frame callback joined");
	tap_ok(RUN_UNTIL(p.ctx, p.joined == 2, 10000), "it said hello");
	while (dmabroker_stream_get_free(p.s, &index) == 0) {
		struct dmabroker_frame q = {.index = index, .acquire_fence = -1};

		tap_require(dmabroker_stream_queue(p.s, &q) == 0, "buffer %u queued", index);
		p.out[index] = true;
	}
	tap_ok(dmabroker_stream_wait_frame(s, &fr, 5ull * 1000000) == 0, "the consumer takes one");
	tap_ok(dmabroker_stream_release(s, fr.index, -1) == 0, "and releases it");
	if (fr.acquire_fence >= 0)
		close(fr.acquire_fence);
	p.free_on_return = true;
	r = dmabroker_stream_wait_free(p.s, &index, 5ull * 1000000);
	tap_ok(r == -EPIPE && p.s == NULL,
	       "wait_free returns -EPIPE once buffer_returned freed the stream (%d)", r);
	dmabroker_stream_free(s, NULL);
	dmabroker_disconnect(ctx);
	producer_stop(&p);
}

/* --- hostile links --- */

struct raw {
	sd_bus *bus;
	char stream[128];
	uint32_t consumer;
	int link;
};

static bool raw_join(struct raw *r, const char *name)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	const char *stream, *col;
	int fd, k;

	*r = (struct raw){.link = -1};
	r->bus = inspect_bus();
	if (!r->bus ||
	    broker_call(r->bus, "Register", &e, NULL, "a{sv}", 1, "name", "s", "raw") < 0)
		return false;
	k = broker_call(r->bus, "JoinStream", &e, &reply, "sa{sv}", name, 1, "label", "s", "raw");
	if (k < 0) {
		tap_diag("  JoinStream: %s", e.message);
		sd_bus_error_free(&e);
		return false;
	}
	if (sd_bus_message_read(reply, "oou", &stream, &col, &r->consumer) < 0 ||
	    sd_bus_message_skip(reply, "a{sv}") < 0 || sd_bus_message_read(reply, "h", &fd) < 0)
		return false;
	snprintf(r->stream, sizeof(r->stream), "%s", stream);
	r->link = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	return r->link >= 0;
}

/* The raw client is done: it never calls LeaveStream (the producer's library ended its link,
 * and the daemon knows). */
static void raw_close(struct raw *r)
{
	close(r->link);
	sd_bus_flush_close_unref(r->bus);
}

/* Whether ListStreams (as root) lists consumer of stream. */
static bool lists_consumer(const char *stream, uint32_t consumer)
{
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = inspect_bus();
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	bool listed = false;

	if (!bus || broker_call(bus, "ListStreams", &e, &reply, NULL) < 0 ||
	    sd_bus_message_enter_container(reply, 'a', "a{sv}") <= 0) {
		sd_bus_error_free(&e);
		return true; /* not known to be gone */
	}
	while (sd_bus_message_enter_container(reply, 'a', "{sv}") > 0) {
		bool this = false;
		uint32_t numbers[64];
		size_t n = 0;

		while (sd_bus_message_enter_container(reply, 'e', "sv") > 0) {
			const char *key, *path;

			sd_bus_message_read(reply, "s", &key);
			if (strcmp(key, "stream") == 0 &&
			    sd_bus_message_read(reply, "v", "o", &path) > 0) {
				this = strcmp(path, stream) == 0;
			} else if (strcmp(key, "consumers") == 0 &&
				   sd_bus_message_enter_container(reply, 'v', "aa{sv}") > 0 &&
				   sd_bus_message_enter_container(reply, 'a', "a{sv}") > 0) {
				while (sd_bus_message_enter_container(reply, 'a', "{sv}") > 0) {
					while (sd_bus_message_enter_container(reply, 'e', "sv") >
					       0) {
						const char *k;
						uint32_t u;

						sd_bus_message_read(reply, "s", &k);
						if (strcmp(k, "consumer") == 0 &&
						    sd_bus_message_read(reply, "v", "u", &u) > 0 &&
						    n < ARRAY_SIZE(numbers))
							numbers[n++] = u;
						else
							sd_bus_message_skip(reply, "v");
						sd_bus_message_exit_container(reply);
					}
					sd_bus_message_exit_container(reply);
				}
				sd_bus_message_exit_container(reply);
				sd_bus_message_exit_container(reply);
			} else {
				sd_bus_message_skip(reply, "v");
			}
			sd_bus_message_exit_container(reply);
		}
		sd_bus_message_exit_container(reply);
		for (size_t i = 0; this && i < n; i++)
			listed |= numbers[i] == consumer;
	}
	return listed;
}

/* Whether the raw client got StreamLinkEnded for its link (waits up to timeout_ms). */
static bool raw_link_ended(struct raw *r, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
		const char *path, *why;
		uint32_t n;
		int k = sd_bus_process(r->bus, &m);

		if (k < 0)
			return false;
		if (m && sd_bus_message_is_signal(m, DB_IFACE_BROKER, "StreamLinkEnded") &&
		    sd_bus_message_read(m, "ous", &path, &n, &why) > 0 &&
		    strcmp(path, r->stream) == 0 && n == r->consumer)
			return true;
		if (k > 0)
			continue;
		if (now_ms() >= end)
			return false;
		(void)sd_bus_wait(r->bus, 20 * 1000);
	}
}

static ssize_t raw_send(int link, const void *rec, size_t len, int fd)
{
	union {
		struct cmsghdr align;
		char b[CMSG_SPACE(sizeof(int))];
	} control;
	struct iovec iov = {.iov_base = (void *)rec, .iov_len = len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

	if (fd >= 0) {
		struct cmsghdr *c;

		memset(&control, 0, sizeof(control));
		mh.msg_control = control.b;
		mh.msg_controllen = sizeof(control.b);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	return sendmsg(link, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* The wire is little-endian; so is every machine this runs on (x86-64, aarch64 LE). */
static struct dmabroker_wire_hello hello_rec(uint32_t count)
{
	return (struct dmabroker_wire_hello){
		.header = {DMABROKER_WIRE_VERSION, DMABROKER_WIRE_HELLO,
			   sizeof(struct dmabroker_wire_hello)},
		.buffer_count = count,
		.max_held = 1,
	};
}

static struct dmabroker_wire_release release_rec(uint32_t index, uint32_t flags, uint64_t seq)
{
	return (struct dmabroker_wire_release){
		.header = {DMABROKER_WIRE_VERSION, DMABROKER_WIRE_RELEASE,
			   sizeof(struct dmabroker_wire_release)},
		.index = index,
		.flags = flags,
		.seq = seq,
	};
}

enum attack {
	MALFORMED,
	OUT_OF_RANGE,
	NOT_HELD,
	STRAY_FD,
	MEMFD_FENCE,
	FLOOD
};

static const char *const attack_names[] = {
	"a malformed record",
	"a RELEASE of an index out of range",
	"a RELEASE of an index not held",
	"an fd where none belongs",
	"a FENCE whose fd is a memfd",
	"a flood of records",
};
static const char *const attack_reasons[] = {
	"wrong size",	   "out of range",   "does not hold", "a descriptor where none belongs",
	"not a sync_file", "a second hello",
};

static void hostile(struct producer *p, struct child *a, uint64_t *seq, enum attack what)
{
	struct dmabroker_wire_frame fr;
	struct raw raw;
	int left = p->left, joined = p->joined, memfd;
	unsigned before;
	uint32_t held;
	ssize_t n;

	tap_diag("hostile link: %s", attack_names[what]);
	tap_require(raw_join(&raw, "hostile"), "a raw client joins with JoinStream");
	struct dmabroker_wire_hello h = hello_rec(p->count);
	tap_ok(raw_send(raw.link, &h, sizeof(h), -1) == sizeof(h), "it says hello");
	tap_ok(RUN_UNTIL(p->ctx, p->joined == joined + 1, 10000), "the producer sees it join");
	tap_require(produce(p, seq, NULL) == 0, "a frame goes to both consumers");
	/* The raw consumer's frame: its index is what it holds. */
	n = -1;
	RUN_UNTIL(p->ctx, (n = recv(raw.link, &fr, sizeof(fr), MSG_DONTWAIT)) == sizeof(fr), 5000);
	tap_require(n == sizeof(fr) && fr.header.type == DMABROKER_WIRE_FRAME,
		    "the raw consumer got the frame");
	tap_ok(RUN_UNTIL(p->ctx, (child_read(a), a->last_seq == *seq), 10000),
	       "the library consumer got it too");
	held = fr.index;
	memfd = memfd_create("not-a-fence", MFD_CLOEXEC);
	switch (what) {
	case MALFORMED: {
		uint8_t junk[10] = {1, 0, 3, 0, 10, 0, 0, 0, 0, 0};

		n = raw_send(raw.link, junk, sizeof(junk), -1);
		break;
	}
	case OUT_OF_RANGE: {
		struct dmabroker_wire_release r = release_rec(p->count + 5, 0, fr.seq);

		n = raw_send(raw.link, &r, sizeof(r), -1);
		break;
	}
	case NOT_HELD: {
		struct dmabroker_wire_release r = release_rec((held + 1) % p->count, 0, fr.seq);

		n = raw_send(raw.link, &r, sizeof(r), -1);
		break;
	}
	case STRAY_FD: {
		struct dmabroker_wire_release r = release_rec(held, 0, fr.seq);

		n = raw_send(raw.link, &r, sizeof(r), memfd);
		break;
	}
	case MEMFD_FENCE: {
		struct dmabroker_wire_release r = release_rec(held, DMABROKER_WIRE_FENCE, fr.seq);

		n = raw_send(raw.link, &r, sizeof(r), memfd);
		break;
	}
	case FLOOD: {
		unsigned sent = 0;

		/* Well-formed hellos until the socket is full. */
		while (raw_send(raw.link, &h, sizeof(h), -1) == sizeof(h) && sent < 100000)
			sent++;
		tap_diag("  %u records sent before the link was full", sent);
		n = sent > 0 ? 1 : -1;
		break;
	}
	}
	close(memfd);
	tap_ok(n > 0, "sent");
	tap_ok(RUN_UNTIL(p->ctx, p->left == left + 1, 10000), "the producer ended that link");
	tap_is(p->left_id, raw.consumer, "the raw consumer's, with consumer_left");
	tap_diag("  reason: %s", p->left_reason);
	tap_ok(strstr(p->left_reason, attack_reasons[what]) != NULL, "the reason says why");
	tap_is(dmabroker_stream_get_consumer_count(p->s), 1, "the other consumer is still linked");
	tap_ok(RUN_UNTIL(p->ctx, !lists_consumer(raw.stream, raw.consumer), 10000),
	       "the daemon no longer lists the raw consumer, which never left");
	tap_ok(raw_link_ended(&raw, 5000), "the raw client got StreamLinkEnded");
	/* The other consumer keeps receiving. */
	before = a->frames;
	for (unsigned i = 0; i < 5; i++)
		tap_require(produce(p, seq, NULL) == 0, "frames go on");
	tap_ok(RUN_UNTIL(p->ctx, (child_read(a), a->last_seq == *seq), 10000) &&
		       a->frames == before + 5,
	       "the other consumer got the next 5 frames");
	raw_close(&raw);
}

static void test_hostile(void)
{
	struct consumer_opts o = {.stream = "hostile", .max_held = 1};
	struct producer p;
	struct child a;
	uint64_t seq = 0;

	tap_require(producer_start(&p, "hostile", DMABROKER_STREAM_FIFO), "a stream");
	spawn_consumer(&a, &o);
	tap_ok(RUN_UNTIL(p.ctx, p.joined == 1, 20000), "a library consumer said hello");
	for (enum attack w = MALFORMED; w <= FLOOD; w++)
		hostile(&p, &a, &seq, w);
	tap_is(end_of_stream(&p), 0, "end of stream");
	RUN_UNTIL(p.ctx, (child_read(&a), a.ended), 30000);
	tap_is(a.frames, seq, "the library consumer got every frame");
	tap_is(a.bad, 0, "in order, each with its content");
	tap_is(child_reap(&a), 0, "it exits cleanly");
	producer_stop(&p);
}

int main(int argc, char **argv)
{
	const char *only = getenv("TEST_STREAMS_ONLY");

	(void)argc;
	fixture_wrap_self(argv);
	signal(SIGPIPE, SIG_IGN);
	tap_require(fixture_start(&f, NULL) == 0, "a bus and a daemon");
#define RUN(name, ...)                           \
	do {                                     \
		if (!only || strstr(only, name)) \
			__VA_ARGS__;             \
	} while (0)
	RUN("fifo", test_fifo());
	RUN("latest", test_latest());
	RUN("kill-consumer", test_consumer_killed());
	RUN("kill-producer", test_producer_killed());
	RUN("hostile", test_hostile());
	RUN("poll-only", test_poll_only());
	RUN("forged", test_forged());
	RUN("freed-in-wait", test_freed_while_waiting());
	tap_ok(fixture_wait_clients(&f, 0, 10000), "every client is gone");
	tap_is(fixture_stop(&f), 0, "the daemon exits cleanly");
	return tap_done();
}
