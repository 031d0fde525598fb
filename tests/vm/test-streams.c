// SPDX-License-Identifier: MIT
/*
 * Streams on a real kernel (run inside the qemu guest by vm-run): a producer streams frames to
 * two consumers, each its own process, and every frame is checked by content; then a consumer
 * and the producer are killed with SIGKILL mid-stream.
 *
 * 6.12 (default): vivid captures (V4L2_MEMORY_DMABUF) into a collection's udmabufs and
 *   media-client streams them. Per frame it attaches a vgem write fence to the buffer, queues
 *   the frame (its library, in implicit sync, exports the fence as the acquire fence), writes a
 *   marker into the buffer's last bytes and only then signals. One consumer, gpu-client,
 *   PRIME-imports every buffer into vgem with implicit sync (its library imports the fence,
 *   DMA_BUF_IOCTL_SYNC waits); the other, cpu-client, waits on each acquire fence itself and
 *   checks vivid's colour bars. Both compare every frame's bytes with the checksum the
 *   producer put in the frame's metadata, and its marker with the frame's own.
 * 6.1 (Debian 12's stock kernel: no udmabuf, no heaps): buffers are memfds, which neither
 *   vivid nor vgem can import, so a CPU producer draws the bars and two CPU consumers (one in
 *   each sync mode) check them; frames must come without fences (acquire_fence -1).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bus-util.h"
#include "fixture.h"
#include "protocol.h"
#include "tap.h"

#define STREAM_NAME "camera"
#define FRAMES 300
#define AFTER_LEFT 30
#define LOG "/tmp/test-streams.log"

/* A running example client. */
struct client {
	const char *name;
	pid_t pid;
	int out, in;
	char buf[4096];
	size_t len;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void client_start(struct client *c, const char *name, const char *const *argv)
{
	char line[256];

	memset(c, 0, sizeof(*c));
	c->name = name;
	c->pid = start_client(argv, &c->out, &c->in, line, sizeof(line));
	tap_diag("  %s: %s", name, line);
}

/* Reads c's lines until one whose key is key (its value copied out) or "error"; every line
 * goes to the TAP log. False on error, end, or timeout. */
static bool client_wait(struct client *c, const char *key, char *value, size_t len, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);

		while (nl) {
			size_t klen = strlen(key);
			bool match, failed;

			*nl = '\0';
			tap_diag("  %s: %s", c->name, c->buf);
			match = strncmp(c->buf, key, klen) == 0 && c->buf[klen] == ' ';
			failed = strncmp(c->buf, "error ", 6) == 0;
			if (match && value)
				snprintf(value, len, "%s", c->buf + klen + 1);
			memmove(c->buf, nl + 1, c->len - (size_t)(nl + 1 - c->buf));
			c->len -= (size_t)(nl + 1 - c->buf);
			if (match || failed)
				return match;
			nl = memchr(c->buf, '\n', c->len);
		}
		{
			struct pollfd p = {c->out, POLLIN, 0};
			uint64_t now = now_ms();
			ssize_t n;

			if (now >= end || poll(&p, 1, (int)(end - now)) <= 0) {
				tap_diag("  %s: no \"%s\" within %d ms", c->name, key, timeout_ms);
				return false;
			}
			n = read(c->out, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
			if (n <= 0) {
				tap_diag("  %s: ended before \"%s\"", c->name, key);
				return false;
			}
			c->len += (size_t)n;
			if (c->len == sizeof(c->buf) - 1 && !memchr(c->buf, '\n', c->len))
				c->len = 0; /* a line longer than the buffer: dropped */
		}
	}
}

/* Ends c: closes its stdin (with sig, kills it first); returns its exit status. */
static int client_end(struct client *c, int sig)
{
	int status;

	if (c->pid <= 0)
		return -1;
	if (sig)
		kill(c->pid, sig);
	close(c->in);
	close(c->out);
	waitpid(c->pid, &status, 0);
	c->pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The programs' messages, shown when something failed. */
static void show_log(int fd)
{
	char line[512];
	FILE *f = fdopen(fd, "r");

	if (!f)
		return;
	rewind(f);
	tap_diag("the daemon's and the clients' messages:");
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		tap_diag("  %s", line);
	}
	fclose(f);
}

/* "checked N bad B fenced F pending P imported I bars K" */
struct checked {
	unsigned long long n, bad, fenced, pending, imported, bars;
};

static bool parse_checked(const char *v, struct checked *ret)
{
	return sscanf(v, "%llu bad %llu fenced %llu pending %llu imported %llu bars %llu", &ret->n,
		      &ret->bad, &ret->fenced, &ret->pending, &ret->imported, &ret->bars) == 6;
}

/* Waits for c's report of at least n frames. */
static bool wait_checked(struct client *c, unsigned long long n, struct checked *ret,
			 int timeout_ms)
{
	char v[256];

	while (client_wait(c, "checked", v, sizeof(v), timeout_ms))
		if (parse_checked(v, ret) && ret->n >= n)
			return true;
	memset(ret, 0, sizeof(*ret));
	return false;
}

/* The streams the daemon lists (ListStreams; root sees all), and the consumers of the first. */
static int list_streams(sd_bus *bus, unsigned *ret_consumers)
{
	sd_bus_message *reply = NULL;
	int n = 0, r;

	*ret_consumers = 0;
	r = broker_call(bus, "ListStreams", NULL, &reply, NULL);
	if (r < 0)
		return r;
	r = sd_bus_message_enter_container(reply, 'a', "a{sv}");
	while (r >= 0 && sd_bus_message_enter_container(reply, 'a', "{sv}") > 0) {
		n++;
		while (sd_bus_message_enter_container(reply, 'e', "sv") > 0) {
			const char *key;

			sd_bus_message_read_basic(reply, 's', &key);
			if (n == 1 && strcmp(key, "consumers") == 0) {
				sd_bus_message_enter_container(reply, 'v', "aa{sv}");
				sd_bus_message_enter_container(reply, 'a', "a{sv}");
				while (sd_bus_message_skip(reply, "a{sv}") > 0)
					(*ret_consumers)++;
				sd_bus_message_exit_container(reply);
				sd_bus_message_exit_container(reply);
			} else {
				sd_bus_message_skip(reply, "v");
			}
			sd_bus_message_exit_container(reply);
		}
		sd_bus_message_exit_container(reply);
	}
	sd_bus_message_unref(reply);
	return n;
}

int main(void)
{
	const char *expect = getenv("DMABROKER_VM_EXPECT");
	bool k61 = expect && strcmp(expect, "6.1") == 0;
	struct client prod, gpu, cpu;
	struct checked gc, cc;
	struct fixture f;
	unsigned consumers = 0;
	bool ok;
	int baseline_fds, baseline_bufs, n, log_fd;
	char v[512], frames[16], after[16];
	sd_bus *bus;

	tap_require(!expect || k61 || strcmp(expect, "6.12") == 0,
		    "DMABROKER_VM_EXPECT is 6.12 or 6.1");
	tap_diag("expecting the %s kernel", k61 ? "6.1" : "6.12");
	tap_ok((access("/dev/udmabuf", F_OK) == 0) == !k61, "/dev/udmabuf is %s",
	       k61 ? "absent: buffers are memfds" : "there: buffers are dma-bufs");
	tap_require(access("/dev/dri", F_OK) == 0, "vgem is there (run this in the guest: vm-run)");
	/* The daemon's and the clients' own messages go to a log, not into the TAP stream. */
	log_fd = open(LOG, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	tap_require(log_fd >= 0 && dup2(log_fd, STDERR_FILENO) == STDERR_FILENO,
		    "log the programs' messages to %s", LOG);

	baseline_bufs = debugfs_dmabuf_objects();
	tap_require(fixture_start(&f, NULL) == 0,
		    "start a private bus and dmabrokerd in the guest");
	bus = inspect_bus();
	baseline_fds = fixture_daemon_fds(&f);

	snprintf(frames, sizeof(frames), "%d", FRAMES);
	snprintf(after, sizeof(after), "%d", AFTER_LEFT);
	if (k61) {
		const char *argv[] = {"examples/cpu-client",
				      "stream-produce",
				      STREAM_NAME,
				      "--frames",
				      frames,
				      "--consumers",
				      "2",
				      "--after-left",
				      after,
				      "--buffers",
				      "8",
				      NULL};

		client_start(&prod, "producer", argv);
	} else {
		const char *argv[] = {"examples/media-client",
				      "stream",
				      STREAM_NAME,
				      "--instance",
				      "0",
				      "--frames",
				      frames,
				      "--consumers",
				      "2",
				      "--after-left",
				      after,
				      "--buffers",
				      "8",
				      "--fence",
				      NULL};

		client_start(&prod, "producer", argv);
	}
	tap_require(client_wait(&prod, "fence", v, sizeof(v), 120000),
		    "the producer created stream '%s' on its collection", STREAM_NAME);
	tap_ok(strcmp(v, k61 ? "none" : "vgem") == 0,
	       k61 ? "on memfds there is no fence to attach" : "it fences its writes with vgem");
	tap_require(client_wait(&prod, "ready", NULL, 0, 30000),
		    "the producer waits for consumers");

	if (k61) {
		const char *argv[] = {"examples/cpu-client",
				      "stream",
				      STREAM_NAME,
				      "--implicit",
				      "--keep",
				      "2",
				      "--report",
				      frames,
				      "--bars",
				      "--label",
				      "implicit",
				      NULL};

		client_start(&gpu, "implicit", argv);
	} else {
		const char *argv[] = {"examples/gpu-client",
				      "stream",
				      STREAM_NAME,
				      "--keep",
				      "2",
				      "--report",
				      frames,
				      NULL};

		client_start(&gpu, "vgem", argv);
	}
	tap_ok(client_wait(&gpu, "ready", NULL, 0, 60000),
	       "the %s consumer (implicit sync) joins by name", k61 ? "CPU" : "vgem");
	{
		const char *argv[] = {"examples/cpu-client",
				      "stream",
				      STREAM_NAME,
				      "--keep",
				      "1",
				      "--report",
				      frames,
				      "--bars",
				      NULL};

		client_start(&cpu, "cpu", argv);
	}
	tap_ok(client_wait(&cpu, "ready", NULL, 0, 60000),
	       "the CPU consumer (explicit sync) joins by name");
	ok = client_wait(&prod, "joined", NULL, 0, 30000) &&
	     client_wait(&prod, "joined", NULL, 0, 30000);
	tap_ok(ok, "the producer is told both consumers are ready");
	n = list_streams(bus, &consumers);
	tap_ok(n == 1 && consumers == 2, "the daemon lists one stream with two consumers (%d, %u)",
	       n, consumers);

	ok = client_wait(&prod, "sent", v, sizeof(v), 600000) && atoi(v) == FRAMES;
	tap_ok(ok, "the producer queued %d frames", FRAMES);
	ok = wait_checked(&gpu, FRAMES, &gc, ok ? 120000 : 1000) && gc.n == FRAMES;
	tap_ok(ok, "the implicit consumer got all %d frames (%llu)", FRAMES, gc.n);
	ok = wait_checked(&cpu, FRAMES, &cc, ok ? 120000 : 1000) && cc.n == FRAMES;
	tap_ok(ok, "the explicit consumer got all %d frames (%llu)", FRAMES, cc.n);
	tap_is(gc.bad, 0,
	       "every frame the implicit consumer read has the producer's checksum and its own "
	       "marker, never the previous one");
	tap_is(cc.bad, 0,
	       k61 ? "every frame the explicit consumer read has the producer's checksum, its own "
		     "marker and the colour bars at three rows"
		   : "every frame the explicit consumer read has the producer's checksum, its own "
		     "marker once its acquire fence signalled, and vivid's colour bars at three "
		     "rows");
	tap_is(cc.bars, FRAMES, "the colour bars are in every frame");
	if (k61) {
		tap_is(cc.fenced, 0, "on memfds no frame carries an acquire fence (-1 in each)");
		tap_is(gc.fenced, 0, "nor to the implicit consumer");
		tap_is(gc.bars, FRAMES,
		       "the implicit consumer sees the colour bars in every frame");
	} else {
		tap_is(cc.fenced, FRAMES, "every frame came with an acquire fence (a sync_file)");
		tap_ok(cc.pending > 0,
		       "%llu of them were not signalled yet on arrival: the marker was written "
		       "after the frame left, so an unsynchronised read would have failed",
		       cc.pending);
		tap_is(gc.fenced, 0,
		       "the implicit consumer's library imported every acquire fence (-1 in the "
		       "frame)");
		tap_ok(gc.imported >= 2, "the vgem consumer PRIME-imported the buffers (%llu)",
		       gc.imported);
	}

	/* A consumer dies holding frames (--keep 2) with more unread on its link. */
	client_end(&gpu, SIGKILL);
	ok = client_wait(&prod, "left", v, sizeof(v), 60000);
	tap_ok(ok, "the producer is told the killed consumer left (%s)", ok ? v : "no");
	ok = client_wait(&prod, "outstanding", v, sizeof(v), ok ? 300000 : 1000);
	tap_ok(ok && atoi(v) == 1,
	       "it streamed %d more frames to the other, then every buffer came back but the one "
	       "that consumer holds (outstanding %s)",
	       AFTER_LEFT, ok ? v : "?");
	ok = write(cpu.in, "go\n", 3) == 3 && wait_checked(&cpu, FRAMES + AFTER_LEFT, &cc, 30000);
	tap_ok(ok && cc.bad == 0, "the remaining consumer checked %llu frames, none bad", cc.n);
	n = list_streams(bus, &consumers);
	tap_ok(n == 1 && consumers == 1, "the daemon lists the stream with one consumer (%d, %u)",
	       n, consumers);

	/*
	 * The producer dies: the consumer's stream ends, what it holds stays readable. The
	 * consumer is stopped until the daemon has ended the stream, so that its next dispatch
	 * finds the daemon's word (read before the links) and not only the link's hang-up.
	 */
	kill(cpu.pid, SIGSTOP);
	client_end(&prod, SIGKILL);
	for (int i = 0; i < 300 && list_streams(bus, &consumers) != 0; i++)
		usleep(100000);
	tap_is(list_streams(bus, &consumers), 0, "the daemon ends the stream of a dead producer");
	kill(cpu.pid, SIGCONT);
	ok = client_wait(&cpu, "ended", v, sizeof(v), 30000);
	tap_ok(ok && strstr(v, "producer disconnected"),
	       "the consumer's stream ended with the daemon's reason (%s)", ok ? v : "none");
	ok = client_wait(&cpu, "held-after-end", v, sizeof(v), 30000);
	tap_ok(ok && strcmp(v, "1 ok 1") == 0,
	       "the frame it holds is still readable and intact (%s)", ok ? v : "none");
	tap_is(client_end(&cpu, 0), 0, "the consumer leaves and exits cleanly");

	tap_ok(fixture_wait_clients(&f, 0, 10000), "every client is gone");
	tap_is(broker_u32(bus, "NBuffers"), 0, "the daemon holds no buffer");
	tap_is(fixture_daemon_fds(&f), baseline_fds, "the daemon's fd count is back to baseline");
	sd_bus_flush_close_unref(bus);
	tap_is(fixture_stop(&f), 0, "the daemon exits cleanly");
	tap_is(debugfs_dmabuf_objects(), baseline_bufs,
	       "debugfs bufinfo lists no dma-buf left behind");
	if (tap_failed)
		show_log(log_fd);
	return tap_done();
}
