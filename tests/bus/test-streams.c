// SPDX-License-Identifier: MIT
/*
 * Streams through the daemon on a private bus, spoken raw with sd-bus (membership and
 * protocol, not dma-buf behaviour: the memfd backend is enough): a consumer's link and the
 * producer's end of it are one socket pair the daemon keeps no end of once the producer took
 * it (StreamLink carries no descriptor; TakeStreamLink's answer does, once, to the producer
 * only; an end not taken within StreamLinkTimeoutSec is closed and its consumer removed;
 * MaxPendingLinksPerUid; a producer that reads nothing, on the bus and on a peer connection,
 * while a consumer joins and leaves 300 times, costs the daemon no descriptors and stalls
 * nobody); an unnamed stream is not joined by name; joining twice, the
 * producer joining, a full stream, unknown names, another uid by name and by token, single-use
 * tokens, leaving, every kind of disconnection, EndStream's rights and reason, EndStreamLink
 * (the producer ends one consumer's link), hostile names,
 * ListStreams' visibility, MaxStreamsPerClient, and the monitor's events.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <drm_fourcc.h>

#include "bus-util.h"
#include "fixture.h"
#include "macros.h"
#include "protocol.h"
#include "tap.h"
#include "token.h"

#define PENDING_MAX 3
#define CONFIG                                                                \
	"[Daemon]\nStreamLinkTimeoutSec=1\n[Limits]\nMaxStreamsPerClient=3\n" \
	"MaxConsumersPerStream=4\nMaxPendingLinksPerUid=3\n"

static struct fixture f;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A registered client of its own connection. */
static sd_bus *client(const char *name)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus *bus = inspect_bus();

	tap_require(bus && broker_call(bus, "Register", &e, NULL, "a{sv}", 1, "name", "s", name) >=
				    0,
		    "register %s (%s)", name, e.message ? e.message : "ok");
	return bus;
}

/* An allocated collection of two 4 KiB buffers, c its only participant. */
static void make_collection(sd_bus *c, char *out, size_t len)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	const char *path = NULL;

	tap_require(broker_call(c, "CreateCollection", &e, &reply, "a{sv}", 1, "name", "s",
				"frames") >= 0 &&
			    sd_bus_message_read(reply, "o", &path) > 0,
		    "create a collection (%s)", e.message ? e.message : "ok");
	snprintf(out, len, "%s", path);
	tap_require(broker_call(c, "SetCollectionConstraints", &e, NULL, "oa{sv}", out, 2,
				"min-size", "t", (uint64_t)4096, "min-buffers-for-camping", "u",
				2) >= 0 &&
			    broker_call(c, "CommitCollection", &e, NULL, "o", out) >= 0 &&
			    broker_call(c, "WaitCollection", &e, NULL, "o", out) >= 0,
		    "the collection is allocated (%s)", e.message ? e.message : "ok");
}

/* CreateStream with a name (and max-consumers, if not 0): 0 and the path, or the error. */
static int create_stream(sd_bus *c, const char *collection, const char *name, uint32_t max,
			 char *out, size_t len, sd_bus_error *e)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	const char *path;
	int r;

	r = sd_bus_message_new_method_call(c, &m, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					   "CreateStream");
	if (r >= 0)
		r = sd_bus_message_append(m, "o", collection);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0)
		r = sd_bus_message_append(m, "{sv}{sv}", "name", "s", name, "format", "a{sv}", 3,
					  "fourcc", "u", DRM_FORMAT_XRGB8888, "width", "u", 32,
					  "height", "u", 32);
	if (r >= 0 && max)
		r = sd_bus_message_append(m, "{sv}", "max-consumers", "u", max);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r < 0)
		return r;
	r = sd_bus_call(c, m, 5 * 1000000ull, e, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_read(reply, "o", &path);
	if (r < 0)
		return r;
	snprintf(out, len, "%s", path);
	return 0;
}

struct joined {
	char stream[128];
	char collection[128];
	uint32_t consumer;
	uint32_t buffer_count;
	char mode[16];
	int link; /* owned */
};

/* Reads JoinStream's answer into j (the link duplicated). */
static int read_joined(sd_bus_message *reply, struct joined *j)
{
	const char *stream, *collection;
	int fd, r;

	*j = (struct joined){.link = -1};
	r = sd_bus_message_read(reply, "oou", &stream, &collection, &j->consumer);
	if (r < 0)
		return r;
	snprintf(j->stream, sizeof(j->stream), "%s", stream);
	snprintf(j->collection, sizeof(j->collection), "%s", collection);
	r = sd_bus_message_enter_container(reply, 'a', "{sv}");
	while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
		const char *key, *mode;

		r = sd_bus_message_read(reply, "s", &key);
		if (r >= 0 && strcmp(key, "buffer-count") == 0)
			r = sd_bus_message_read(reply, "v", "u", &j->buffer_count);
		else if (r >= 0 && strcmp(key, "mode") == 0) {
			r = sd_bus_message_read(reply, "v", "s", &mode);
			snprintf(j->mode, sizeof(j->mode), "%s", r >= 0 ? mode : "");
		} else if (r >= 0)
			r = sd_bus_message_skip(reply, "v");
		if (r >= 0)
			r = sd_bus_message_exit_container(reply);
	}
	if (r >= 0)
		r = sd_bus_message_exit_container(reply);
	if (r >= 0)
		r = sd_bus_message_read(reply, "h", &fd);
	if (r < 0)
		return r;
	/* The message's fd is borrowed. */
	j->link = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	return j->link < 0 ? -errno : 0;
}

/* JoinStream (by name) or JoinStreamWithToken (token not NULL). */
static int join(sd_bus *c, const char *name, const uint8_t *token, bool required, const char *label,
		struct joined *j, sd_bus_error *e)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	int r;

	r = sd_bus_message_new_method_call(c, &m, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					   token ? "JoinStreamWithToken" : "JoinStream");
	if (r >= 0)
		r = token ? sd_bus_message_append_array(m, 'y', token, 16)
			  : sd_bus_message_append(m, "s", name);
	if (r >= 0)
		r = sd_bus_message_append(m, "a{sv}", 2, "required", "b", (int)required, "label",
					  "s", label);
	if (r < 0)
		return r;
	r = sd_bus_call(c, m, 5 * 1000000ull, e, &reply);
	if (r < 0)
		return r;
	return read_joined(reply, j);
}

/* The next signal member for c within timeout_ms (other messages are dropped), or NULL. */
static sd_bus_message *wait_signal(sd_bus *c, const char *member, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		sd_bus_message *m = NULL;
		uint64_t now = now_ms();
		int r = sd_bus_process(c, &m);

		if (r < 0)
			return NULL;
		if (m && sd_bus_message_is_signal(m, DB_IFACE_BROKER, member))
			return m;
		sd_bus_message_unref(m);
		if (r > 0)
			continue;
		if (now >= end)
			return NULL;
		(void)sd_bus_wait(c, (end - now) * 1000);
	}
}

/* Every StreamLink so far had the signature oua{sv}: no descriptor. */
static bool links_without_fd = true;

/* TakeStreamLink: the producer's end of consumer's link (duplicated), or -1 and e. */
static int take_link(sd_bus *c, const char *stream, uint32_t consumer, sd_bus_error *e)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	int fd;

	if (broker_call(c, "TakeStreamLink", e, &reply, "ou", stream, consumer) < 0 ||
	    sd_bus_message_read(reply, "h", &fd) <= 0)
		return -1;
	return fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

/* A StreamLink for the producer: the consumer's number (and label); 0 or -1. */
static int wait_link_signal(sd_bus *producer, const char *stream, uint32_t *ret_consumer,
			    char *label, size_t label_len)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m =
		wait_signal(producer, "StreamLink", 5000);
	const char *path;

	if (!m)
		return -1;
	if (strcmp(sd_bus_message_get_signature(m, true), "oua{sv}") != 0)
		links_without_fd = false;
	if (sd_bus_message_read(m, "ou", &path, ret_consumer) < 0 || strcmp(path, stream) != 0)
		return -1;
	if (sd_bus_message_enter_container(m, 'a', "{sv}") > 0)
		while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
			const char *key, *value;

			sd_bus_message_read(m, "s", &key);
			if (strcmp(key, "label") == 0 &&
			    sd_bus_message_read(m, "v", "s", &value) > 0)
				snprintf(label, label_len, "%s", value);
			else
				sd_bus_message_skip(m, "v");
			sd_bus_message_exit_container(m);
		}
	return 0;
}

/* A StreamLink for the producer, and its end of the link taken (duplicated). */
static int wait_link(sd_bus *producer, const char *stream, uint32_t *ret_consumer, char *label,
		     size_t label_len)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int fd;

	if (wait_link_signal(producer, stream, ret_consumer, label, label_len) < 0)
		return -1;
	fd = take_link(producer, stream, *ret_consumer, &e);
	if (fd < 0)
		tap_diag("TakeStreamLink: %s", e.message ? e.message : "no fd");
	sd_bus_error_free(&e);
	return fd;
}

/* A StreamLinkEnded or StreamEnded for c: its reason (copied), or false. */
static bool wait_ended(sd_bus *c, const char *member, const char *stream, uint32_t consumer,
		       char *reason, size_t len)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = wait_signal(c, member, 5000);
	const char *path, *why;
	uint32_t n = 0;
	int r;

	if (!m)
		return false;
	r = strcmp(member, "StreamEnded") == 0 ? sd_bus_message_read(m, "os", &path, &why)
					       : sd_bus_message_read(m, "ous", &path, &n, &why);
	if (r < 0 || strcmp(path, stream) != 0 || (consumer && n != consumer))
		return false;
	snprintf(reason, len, "%s", why);
	return true;
}

/* One byte each way: the two fds are the ends of one socket pair. */
static bool linked(int a, int b)
{
	struct pollfd p = {.fd = b, .events = POLLIN};
	char x = 'x', y = 0;

	if (send(a, &x, 1, MSG_NOSIGNAL) != 1 || poll(&p, 1, 2000) != 1 || recv(b, &y, 1, 0) != 1 ||
	    y != 'x')
		return false;
	x = 'y';
	p.fd = a;
	return send(b, &x, 1, MSG_NOSIGNAL) == 1 && poll(&p, 1, 2000) == 1 &&
	       recv(a, &y, 1, 0) == 1 && y == 'y';
}

/* The daemon's socket fds (its bus connections, peers, and any link end it kept). */
static int daemon_sockets(void)
{
	char dir[64], link[384], target[128];
	struct dirent *d;
	DIR *dp;
	int n = 0;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)f.daemon_pid);
	dp = opendir(dir);
	if (!dp)
		return -1;
	while ((d = readdir(dp))) {
		ssize_t len;

		snprintf(link, sizeof(link), "%s/%s", dir, d->d_name);
		len = readlink(link, target, sizeof(target) - 1);
		if (len > 0) {
			target[len] = '\0';
			n += strncmp(target, "socket:", 7) == 0;
		}
	}
	closedir(dp);
	return n;
}

static size_t count_streams(sd_bus *c)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	size_t n = 0;

	if (broker_call(c, "ListStreams", &e, &reply, NULL) < 0) {
		sd_bus_error_free(&e);
		return (size_t)-1;
	}
	if (sd_bus_message_enter_container(reply, 'a', "a{sv}") <= 0)
		return (size_t)-1;
	while (sd_bus_message_skip(reply, "a{sv}") > 0)
		n++;
	return n;
}

/* How many consumers ListStreams shows c for stream, or -1. */
static int count_consumers(sd_bus *c, const char *stream)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int found = -1;

	if (broker_call(c, "ListStreams", &e, &reply, NULL) < 0) {
		sd_bus_error_free(&e);
		return -1;
	}
	if (sd_bus_message_enter_container(reply, 'a', "a{sv}") <= 0)
		return -1;
	while (sd_bus_message_enter_container(reply, 'a', "{sv}") > 0) {
		bool this = false;
		int n = 0;

		while (sd_bus_message_enter_container(reply, 'e', "sv") > 0) {
			const char *key, *path;

			if (sd_bus_message_read(reply, "s", &key) < 0)
				return -1;
			if (strcmp(key, "stream") == 0 &&
			    sd_bus_message_read(reply, "v", "o", &path) > 0)
				this = strcmp(path, stream) == 0;
			else if (strcmp(key, "consumers") == 0 &&
				 sd_bus_message_enter_container(reply, 'v', "aa{sv}") > 0 &&
				 sd_bus_message_enter_container(reply, 'a', "a{sv}") > 0) {
				while (sd_bus_message_skip(reply, "a{sv}") > 0)
					n++;
				sd_bus_message_exit_container(reply);
				sd_bus_message_exit_container(reply);
			} else {
				sd_bus_message_skip(reply, "v");
			}
			sd_bus_message_exit_container(reply);
		}
		sd_bus_message_exit_container(reply);
		if (this)
			found = n;
	}
	return found;
}

static void refused(sd_bus_error *e, int r, const char *name, const char *what)
{
	tap_ok(r < 0 && sd_bus_error_has_name(e, name), "%s: %s (%s)", what, name,
	       e->message ? e->message : "accepted");
	sd_bus_error_free(e);
}

/* Gets NBuffers over c: how long the answer took (ms), or -1. */
static int64_t timed_get(sd_bus *c)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	uint64_t start = now_ms();
	uint32_t v;
	int r;

	r = sd_bus_get_property_trivial(c, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "NBuffers",
					&e, 'u', &v);
	sd_bus_error_free(&e);
	return r < 0 ? -1 : (int64_t)(now_ms() - start);
}

/* Drops what c was sent and nobody waits for. */
static void drain(sd_bus *c)
{
	while (sd_bus_process(c, NULL) > 0)
		;
}

/* An sd-bus connection over a peer socket of c (OpenPeer), authenticated with a Ping. */
static sd_bus *open_peer(sd_bus *c)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus *peer = NULL;
	int fd = -1, r;

	r = broker_call(c, "OpenPeer", &e, &reply, "");
	if (r >= 0)
		r = sd_bus_message_read(reply, "h", &fd);
	if (r >= 0)
		r = fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (r >= 0)
		r = sd_bus_new(&peer);
	if (r >= 0) {
		r = sd_bus_set_fd(peer, fd, fd);
		fd = -1;
	}
	if (r >= 0)
		r = sd_bus_set_anonymous(peer, 1);
	if (r >= 0)
		r = sd_bus_negotiate_fds(peer, 1);
	if (r >= 0)
		r = sd_bus_start(peer);
	if (r >= 0)
		r = sd_bus_call_method(peer, NULL, DB_OBJECT_PATH, "org.freedesktop.DBus.Peer",
				       "Ping", &e, NULL, "");
	sd_bus_error_free(&e);
	if (fd >= 0)
		close(fd);
	if (r < 0)
		peer = sd_bus_flush_close_unref(peer);
	return peer;
}

/*
 * The attack: a producer that reads nothing (over.peer: its peer connection, else the bus)
 * while a consumer of its uid joins and leaves its stream 300 times. The daemon's descriptors
 * stay within what MaxPendingLinksPerUid allows, and a bystander is answered throughout.
 */
static void silent_producer(sd_bus *bystander, sd_bus *cons, bool on_peer)
{
	const char *where = on_peer ? "on a peer connection" : "on the bus";
	sd_bus *silent = client(on_peer ? "silent-peer" : "silent"), *peer = NULL;
	char col[128], path[128];
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int base, most = 0, failed = 0;
	int64_t slowest = 0;
	struct joined j;

	make_collection(silent, col, sizeof(col));
	tap_require(create_stream(silent, col, "attacked", 0, path, sizeof(path), &e) == 0,
		    "a producer that will read nothing %s creates a stream (%s)", where,
		    e.message ? e.message : "ok");
	if (on_peer) {
		peer = open_peer(silent);
		tap_require(peer != NULL, "it opens a peer connection");
	}
	/* From here on nothing reads silent's connections. */
	base = fixture_daemon_fds(&f);
	for (int i = 0; i < 300; i++) {
		int fds;

		if (join(cons, "attacked", NULL, false, "again", &j, &e) < 0 ||
		    broker_call(cons, "LeaveStream", &e, NULL, "o", j.stream) < 0) {
			tap_diag("cycle %d: %s", i, e.message ? e.message : strerror(errno));
			sd_bus_error_free(&e);
			failed++;
			break;
		}
		close(j.link);
		drain(cons);
		fds = fixture_daemon_fds(&f);
		most = fds > most ? fds : most;
		if (i % 25 == 0) {
			int64_t t = timed_get(bystander);

			slowest = t < 0 || t > slowest ? (t < 0 ? INT32_MAX : t) : slowest;
		}
	}
	tap_ok(!failed, "a consumer of its uid joins and leaves 300 times %s", where);
	tap_ok(base > 0 && most <= base + PENDING_MAX + 4,
	       "the daemon's descriptors stay within MaxPendingLinksPerUid: %d at most, from %d",
	       most, base);
	tap_ok(slowest < 5000, "a bystander is answered throughout (slowest %lld ms)",
	       (long long)slowest);
	sd_bus_flush_close_unref(peer);
	sd_bus_flush_close_unref(silent);
}

/* Links pulled by the producer: an unnamed stream, the deadline, MaxPendingLinksPerUid. */
static void pull_links(sd_bus *inspect)
{
	sd_bus *prod = client("puller"), *cons = client("late"), *k[PENDING_MAX + 1];
	char col[128], path[128], reason[300];
	sd_bus_error e = SD_BUS_ERROR_NULL;
	struct joined j, jk[PENDING_MAX + 1];
	uint64_t start, took;
	uint32_t n;
	char x;

	make_collection(prod, col, sizeof(col));
	/* --- an empty name is no name --- */
	tap_is(create_stream(prod, col, "", 0, path, sizeof(path), &e), 0,
	       "CreateStream with name '' makes an unnamed stream");
	refused(&e, join(cons, "", NULL, false, "", &j, &e), DB_ERROR_INVALID_ARGUMENT,
		"JoinStream('')");
	tap_ok(broker_call(prod, "EndStream", &e, NULL, "os", path, "") >= 0, "it ends");
	drain(prod);

	/* --- the producer does not take the link in time --- */
	tap_is(create_stream(prod, col, "late", 0, path, sizeof(path), &e), 0, "stream 'late'");
	start = now_ms();
	tap_is(join(cons, "late", NULL, true, "late", &j, &e), 0, "a required consumer joins");
	tap_ok(wait_link_signal(prod, path, &n, reason, sizeof(reason)) == 0,
	       "the producer is told, and takes nothing");
	tap_ok(wait_ended(cons, "StreamLinkEnded", path, j.consumer, reason, sizeof(reason)) &&
		       strcmp(reason, "the producer did not take the link in time") == 0,
	       "the consumer gets StreamLinkEnded: %s", reason);
	took = now_ms() - start;
	tap_ok(took >= 1000, "after StreamLinkTimeoutSec=1 (%llu ms)", (unsigned long long)took);
	tap_ok(poll(&(struct pollfd){.fd = j.link, .events = POLLIN}, 1, 2000) == 1 &&
		       recv(j.link, &x, 1, MSG_DONTWAIT) == 0,
	       "its end of the link reads end of file");
	tap_is(count_consumers(inspect, path), 0, "ListStreams drops it");
	tap_is(count_streams(inspect), 1, "and the stream goes on");
	refused(&e, take_link(prod, path, n, &e), DB_ERROR_NOT_FOUND,
		"TakeStreamLink after the deadline");
	close(j.link);

	/* --- MaxPendingLinksPerUid --- */
	for (int i = 0; i <= PENDING_MAX; i++)
		k[i] = client("pending");
	for (int i = 0; i < PENDING_MAX; i++)
		tap_ok(join(k[i], "late", NULL, false, "", &jk[i], &e) == 0,
		       "consumer %d joins; the producer takes nothing", i + 1);
	refused(&e, join(k[PENDING_MAX], "late", NULL, false, "", &jk[PENDING_MAX], &e),
		DB_ERROR_BUSY, "a join past MaxPendingLinksPerUid=3 untaken links");
	drain(prod);
	tap_ok(take_link(prod, path, jk[0].consumer, &e) >= 0, "the producer takes one");
	tap_is(join(k[PENDING_MAX], "late", NULL, false, "", &jk[PENDING_MAX], &e), 0,
	       "then the next consumer may join");
	for (int i = 0; i <= PENDING_MAX; i++) {
		close(jk[i].link);
		sd_bus_flush_close_unref(k[i]);
	}
	sd_bus_flush_close_unref(prod);

	silent_producer(inspect, cons, false);
	silent_producer(inspect, cons, true);
	sd_bus_flush_close_unref(cons);
}

/*
 * Another uid: this program run again as uid 65534 (test-streams --other-uid TOKEN). It cannot
 * join by name, can with the token, sees the stream only once a member, writes a byte into its
 * link and leaves by exiting. Exit status: a bit per failed check.
 */
static int other_uid(const char *hex)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	struct db_token_bytes token;
	struct joined j = {.link = -1};
	int status = 0;
	sd_bus *bus;

	if (getuid() != 65534 || db_token_from_hex(hex, &token) < 0)
		return 0x80;
	/* No TAP output here: the points are the first run's to print. */
	bus = inspect_bus();
	if (!bus ||
	    broker_call(bus, "Register", &e, NULL, "a{sv}", 1, "name", "s", "other-uid") < 0)
		return 0x40;
	if (join(bus, "cam", NULL, false, "other", &j, &e) >= 0 ||
	    !sd_bus_error_has_name(&e, DB_ERROR_NOT_FOUND))
		status |= 1;
	sd_bus_error_free(&e);
	if (count_streams(bus) != 0)
		status |= 2;
	if (join(bus, NULL, token.b, false, "other", &j, &e) < 0)
		status |= 4;
	sd_bus_error_free(&e);
	if (count_streams(bus) != 1)
		status |= 8;
	if (j.link < 0 || send(j.link, "z", 1, MSG_NOSIGNAL) != 1)
		status |= 16;
	if (j.link >= 0)
		close(j.link);
	sd_bus_flush_close_unref(bus);
	return status;
}

int main(int argc, char **argv)
{
	char col[128], cam[128], other[128], path[128], reason[300], label[64] = "";
	static const char *const ctl_streams[] = {"tools/dmabrokerctl", "streams", NULL};
	static const char *const ctl_json[] = {"tools/dmabrokerctl", "--json", "streams", NULL};
	static const char *const ctl_monitor[] = {"tools/dmabrokerctl", "monitor", NULL};
	static char hex[DB_TOKEN_HEX_LEN + 1];
	static const char *const other_argv[] = {"tests/bus/test-streams", "--other-uid", hex,
						 NULL};
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus *inspect, *producer, *c1, *c2, *c3;
	struct joined j1, j2, j3;
	uint8_t token[16];
	const void *bytes;
	static char out[65536];
	char huge[300];
	int sockets, p1, p2, p3, status, monitor_fd;
	uint32_t n;
	size_t size;
	pid_t monitor;

	if (argc == 3 && strcmp(argv[1], "--other-uid") == 0)
		return other_uid(argv[2]);
	fixture_wrap_self(argv);
	signal(SIGPIPE, SIG_IGN);
	tap_require(fixture_start(&f, CONFIG) == 0, "start bus and daemon");
	inspect = inspect_bus();
	tap_require(inspect != NULL, "inspect the daemon");
	monitor = spawn_client(ctl_monitor, false, &monitor_fd);
	usleep(300 * 1000); /* it subscribes */

	producer = client("producer");
	c1 = client("viewer");
	c2 = client("recorder");
	c3 = client("latecomer");
	make_collection(producer, col, sizeof(col));

	/* --- a link is one socket pair, and the daemon keeps no end of it --- */
	sockets = daemon_sockets();
	tap_require(create_stream(producer, col, "cam", 2, cam, sizeof(cam), &e) == 0,
		    "the producer creates stream 'cam' of 2 consumers (%s)",
		    e.message ? e.message : "ok");
	tap_is(join(c1, "cam", NULL, false, "viewer", &j1, &e), 0, "a consumer joins by name");
	tap_ok(strcmp(j1.stream, cam) == 0 && strcmp(j1.collection, col) == 0 && j1.consumer == 1 &&
		       j1.buffer_count == 2 && strcmp(j1.mode, "fifo") == 0,
	       "the answer names the stream, its collection, consumer 1, 2 buffers, fifo");
	p1 = wait_link(producer, cam, &n, label, sizeof(label));
	tap_ok(p1 >= 0 && n == 1 && strcmp(label, "viewer") == 0,
	       "the producer gets StreamLink for consumer 1, labelled 'viewer'");
	tap_ok(links_without_fd, "StreamLink carries no descriptor (oua{sv})");
	tap_ok(linked(j1.link, p1), "TakeStreamLink's fd and the consumer's are one socket pair");
	/* The answer's copy closes just after it is written. */
	for (int i = 0; i < 100 && daemon_sockets() != sockets; i++)
		usleep(20 * 1000);
	tap_is(daemon_sockets(), sockets, "the daemon holds no end of the link once taken");
	refused(&e, take_link(producer, cam, 1, &e), DB_ERROR_NOT_FOUND,
		"TakeStreamLink a second time");
	refused(&e, take_link(c1, cam, 1, &e), DB_ERROR_PERMISSION_DENIED,
		"TakeStreamLink by the consumer");
	refused(&e, take_link(c3, cam, 1, &e), DB_ERROR_NOT_FOUND,
		"TakeStreamLink by a client that takes no part");
	tap_ok(broker_call(c1, "GetCollectionBuffers", &e, NULL, "ouu", col, 0, 2) >= 0,
	       "the consumer joined the collection late and fetches its buffers (%s)",
	       e.message ? e.message : "ok");
	sd_bus_error_free(&e);

	/* --- what JoinStream refuses --- */
	refused(&e, join(c1, "cam", NULL, false, "again", &j3, &e), DB_ERROR_BUSY,
		"a second join by the same client");
	refused(&e, join(producer, "cam", NULL, false, "self", &j3, &e), DB_ERROR_INVALID_ARGUMENT,
		"the producer joining its own stream");
	tap_is(join(c2, "cam", NULL, true, "recorder", &j2, &e), 0, "a required consumer joins");
	p2 = wait_link(producer, cam, &n, label, sizeof(label));
	tap_ok(p2 >= 0 && n == 2 && linked(j2.link, p2), "consumer 2's link works");
	refused(&e, join(c3, "cam", NULL, false, "third", &j3, &e), DB_ERROR_QUOTA_EXCEEDED,
		"a third consumer of a stream of max-consumers 2");
	refused(&e, join(c3, "no-such-stream", NULL, false, "", &j3, &e), DB_ERROR_NOT_FOUND,
		"an unknown name");

	/* --- names, reasons and rights --- */
	refused(&e, create_stream(producer, col, "cam", 0, path, sizeof(path), &e), DB_ERROR_BUSY,
		"a second live stream called 'cam' of one uid");
	refused(&e, create_stream(producer, col, "two\nlines", 0, path, sizeof(path), &e),
		DB_ERROR_INVALID_ARGUMENT, "a name with a line break");
	memset(huge, 'n', sizeof(huge) - 1);
	huge[sizeof(huge) - 1] = '\0';
	refused(&e, create_stream(producer, col, huge, 0, path, sizeof(path), &e),
		DB_ERROR_INVALID_ARGUMENT, "a name of 299 bytes");
	refused(&e, create_stream(producer, col, "many", 5, path, sizeof(path), &e),
		DB_ERROR_INVALID_ARGUMENT, "max-consumers over MaxConsumersPerStream");
	refused(&e, create_stream(c3, col, "not-mine", 0, path, sizeof(path), &e),
		DB_ERROR_NOT_FOUND, "a stream over a collection the caller takes no part in");
	refused(&e, broker_call(c1, "EndStream", &e, NULL, "os", cam, "not yours"),
		DB_ERROR_PERMISSION_DENIED, "EndStream by a consumer");
	refused(&e, broker_call(c3, "EndStream", &e, NULL, "os", cam, "not yours"),
		DB_ERROR_NOT_FOUND, "EndStream by a client that takes no part");
	refused(&e, broker_call(producer, "EndStream", &e, NULL, "os", cam, huge),
		DB_ERROR_INVALID_ARGUMENT, "a reason over 256 bytes");
	refused(&e, broker_call(c1, "CreateStreamToken", &e, NULL, "o", cam),
		DB_ERROR_PERMISSION_DENIED, "CreateStreamToken by a consumer");
	tap_is(count_streams(c3), 1, "root's uid sees every stream");

	/* --- leaving --- */
	tap_ok(broker_call(c1, "LeaveStream", &e, NULL, "o", cam) >= 0, "consumer 1 leaves");
	tap_ok(wait_ended(c1, "StreamLinkEnded", cam, 1, reason, sizeof(reason)) &&
		       strcmp(reason, "consumer left") == 0,
	       "it gets StreamLinkEnded: consumer left");
	tap_ok(wait_ended(producer, "StreamLinkEnded", cam, 1, reason, sizeof(reason)) &&
		       strcmp(reason, "consumer left") == 0,
	       "and so does the producer");
	close(j1.link);
	close(p1);

	/* --- another uid: not by name, by a single-use token --- */
	tap_ok(broker_call(producer, "CreateStreamToken", &e, &reply, "o", cam) >= 0 &&
		       sd_bus_message_read_array(reply, 'y', &bytes, &size) > 0 && size == 16,
	       "the producer makes a stream token");
	memcpy(token, bytes, sizeof(token));
	reply = sd_bus_message_unref(reply);
	db_token_to_hex((const struct db_token_bytes *)token, hex);
	status = run_client(other_argv, true, out, sizeof(out));
	tap_ok(status >= 0 && !(status & 0xc0), "a run as uid 65534 registers (%d)", status);
	tap_ok(!(status & 1), "uid 65534 cannot join by name");
	tap_ok(!(status & 2), "and lists no stream before it joins");
	tap_ok(!(status & 4), "but joins with the token");
	tap_ok(!(status & 8), "and then lists the stream");
	tap_ok(wait_link_signal(producer, cam, &n, label, sizeof(label)) == 0 && n == 3,
	       "the producer is told of consumer 3");
	/* It is gone already: the daemon closed the end it held for it. */
	refused(&e, take_link(producer, cam, 3, &e), DB_ERROR_NOT_FOUND,
		"TakeStreamLink of a consumer that disconnected");
	tap_ok(wait_ended(producer, "StreamLinkEnded", cam, 3, reason, sizeof(reason)) &&
		       strcmp(reason, "consumer disconnected") == 0,
	       "a dispensable consumer's disconnection ends its link only: %s", reason);
	refused(&e, join(c3, NULL, token, false, "reuse", &j3, &e), DB_ERROR_NOT_FOUND,
		"the token is single-use");

	/* --- a required consumer's disconnection ends the stream --- */
	sd_bus_flush_close_unref(c2);
	tap_ok(wait_ended(producer, "StreamEnded", cam, 0, reason, sizeof(reason)) &&
		       strcmp(reason, "required consumer 2 failed") == 0,
	       "StreamEnded to the producer: %s", reason);
	close(j2.link);
	close(p2);
	tap_is(count_streams(inspect), 0, "the stream is gone");

	/* --- MaxStreamsPerClient, EndStream's reason --- */
	tap_is(create_stream(producer, col, "s1", 0, other, sizeof(other), &e), 0, "stream s1");
	tap_is(create_stream(producer, col, "s2", 0, path, sizeof(path), &e), 0, "stream s2");
	tap_is(create_stream(producer, col, "s3", 0, path, sizeof(path), &e), 0, "stream s3");
	refused(&e, create_stream(producer, col, "s4", 0, path, sizeof(path), &e),
		DB_ERROR_QUOTA_EXCEEDED, "a fourth stream of one client (MaxStreamsPerClient=3)");
	tap_is(count_streams(inspect), 3, "root lists the three");
	tap_is(run_client(ctl_streams, true, out, sizeof(out)), 0,
	       "dmabrokerctl streams as uid 65534");
	tap_ok(strstr(out, "no streams") != NULL, "which sees none of root's streams");
	tap_is(run_client(ctl_json, false, out, sizeof(out)), 0, "dmabrokerctl --json streams");
	if (!tap_ok(strstr(out, "\"name\":\"s1\"") && strstr(out, "\"max-consumers\":4"),
		    "lists s1 with its max-consumers"))
		tap_diag("  %s", out);
	tap_ok(broker_call(producer, "EndStream", &e, NULL, "os", path, "done for today") >= 0,
	       "the producer ends s3");
	tap_ok(wait_ended(producer, "StreamEnded", path, 0, reason, sizeof(reason)) &&
		       strcmp(reason, "done for today") == 0,
	       "with its reason");
	tap_ok(broker_call(producer, "EndStream", &e, NULL, "os", other, "") >= 0 &&
		       wait_ended(producer, "StreamEnded", other, 0, reason, sizeof(reason)) &&
		       strcmp(reason, "ended by the producer") == 0,
	       "an empty reason: %s", reason);

	/* --- EndStreamLink: the producer ends one consumer's link --- */
	tap_is(join(c3, "s2", NULL, false, "hostile", &j3, &e), 0, "a consumer joins s2");
	p3 = wait_link(producer, j3.stream, &n, label, sizeof(label));
	tap_ok(p3 >= 0 && n == j3.consumer, "the producer gets its link");
	refused(&e,
		broker_call(c3, "EndStreamLink", &e, NULL, "ous", j3.stream, j3.consumer, "mine"),
		DB_ERROR_PERMISSION_DENIED, "EndStreamLink by a consumer");
	refused(&e, broker_call(producer, "EndStreamLink", &e, NULL, "ous", j3.stream, 99, "who"),
		DB_ERROR_NOT_FOUND, "EndStreamLink of a consumer the stream does not have");
	refused(&e,
		broker_call(producer, "EndStreamLink", &e, NULL, "ous", j3.stream, j3.consumer,
			    "two\nlines"),
		DB_ERROR_INVALID_ARGUMENT, "EndStreamLink with a line break in the reason");
	tap_is(count_consumers(inspect, j3.stream), 1, "ListStreams shows one consumer of s2");
	tap_ok(broker_call(producer, "EndStreamLink", &e, NULL, "ous", j3.stream, j3.consumer,
			   "broke the link's protocol") >= 0,
	       "the producer ends consumer %u's link (%s)", j3.consumer,
	       e.message ? e.message : "ok");
	tap_ok(wait_ended(producer, "StreamLinkEnded", j3.stream, j3.consumer, reason,
			  sizeof(reason)) &&
		       strcmp(reason, "broke the link's protocol") == 0,
	       "the producer gets StreamLinkEnded with its reason");
	tap_ok(wait_ended(c3, "StreamLinkEnded", j3.stream, j3.consumer, reason, sizeof(reason)) &&
		       strcmp(reason, "broke the link's protocol") == 0,
	       "and so does the consumer");
	tap_is(count_consumers(inspect, j3.stream), 0, "ListStreams no longer lists the consumer");
	refused(&e,
		broker_call(producer, "EndStreamLink", &e, NULL, "ous", j3.stream, j3.consumer,
			    "again"),
		DB_ERROR_NOT_FOUND, "EndStreamLink of a link already ended");
	close(j3.link);
	close(p3);
	/* A required consumer's link ended by the producer is its failure. */
	tap_is(create_stream(producer, col, "s5", 0, other, sizeof(other), &e), 0, "stream s5");
	tap_is(join(c3, "s5", NULL, true, "required", &j3, &e), 0, "a required consumer joins s5");
	p3 = wait_link(producer, j3.stream, &n, label, sizeof(label));
	tap_ok(broker_call(producer, "EndStreamLink", &e, NULL, "ous", j3.stream, j3.consumer,
			   "the consumer's link hung up") >= 0 &&
		       wait_ended(producer, "StreamEnded", j3.stream, 0, reason, sizeof(reason)) &&
		       strcmp(reason, "required consumer 1 failed") == 0,
	       "EndStreamLink of a required consumer ends the stream: %s", reason);
	tap_ok(wait_ended(c3, "StreamEnded", j3.stream, 0, reason, sizeof(reason)),
	       "the consumer gets StreamEnded too");
	sd_bus_error_free(&e);
	close(j3.link);
	close(p3);

	/* --- the producer's disconnection ends the stream for its consumers --- */
	tap_is(join(c3, "s2", NULL, false, "last", &j3, &e), 0, "a consumer joins s2");
	sd_bus_flush_close_unref(producer);
	tap_ok(wait_ended(c3, "StreamEnded", j3.stream, 0, reason, sizeof(reason)) &&
		       strcmp(reason, "producer disconnected") == 0,
	       "StreamEnded to the consumer: %s", reason);
	close(j3.link);
	tap_is(count_streams(inspect), 0, "no stream is left");
	tap_ok(daemon_sockets() <= sockets, "no link end is left in the daemon");

	pull_links(inspect);

	/* --- the monitor saw it all --- */
	read_until_quiet(monitor_fd, out, sizeof(out), 500);
	tap_ok(strstr(out, "stream-created") && strstr(out, "stream-joined") &&
		       strstr(out, "stream-left") && strstr(out, "stream-ended"),
	       "root's monitor prints the stream events");
	tap_ok(strstr(out, "broke the link's protocol") != NULL,
	       "with EndStreamLink's reason on its stream-left");
	kill(monitor, SIGTERM);
	waitpid(monitor, NULL, 0);
	close(monitor_fd);

	sd_bus_flush_close_unref(c1);
	sd_bus_flush_close_unref(c3);
	sd_bus_flush_close_unref(inspect);
	tap_is(fixture_stop(&f), 0, "the daemon stops cleanly");
	return tap_done();
}
