// SPDX-License-Identifier: MIT
/*
 * What a few lines of a hostile client did to the first release, each checked on the live
 * daemon: every timer here fires before the test ends (the test config makes them short,
 * and the test waits past them).
 *   - a Move whose deadline fires (it aborted the daemon);
 *   - a peer socket that never speaks, kept while its client leaves (it hung the daemon);
 *   - a peer that sends calls and never reads the replies (the daemon queued without bound);
 *   - a NameOwnerChanged forged by another client (it evicted any client);
 *   - a Revoke reason with line breaks (it forged log lines);
 *   - a second uid listing the daemon's objects (it saw every client and buffer);
 *   - a large Move (its copy stalled every other client), and one over the owner's quota.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bus-open.h"
#include "bus-util.h"
#include "fixture.h"
#include "macros.h"
#include "protocol.h"
#include "rawbus.h"
#include "tap.h"

#define DEADLINE_CONFIG                                                                        \
	"[Daemon]\nMoveDeadlineSec=1\nPeerAuthTimeoutSec=1\nPeerStallTimeoutSec=1\n[Limits]\n" \
	"PeerWindowCalls=8\n"

static struct fixture f;

static void msleep(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static sd_bus *connect_bus(void)
{
	sd_bus *bus = NULL;

	tap_require(db_bus_open_address(f.address, &bus) >= 0, "connect to the test bus");
	/* A hung daemon shows as a failed call, not as a hung test. */
	sd_bus_set_method_call_timeout(bus, 5 * 1000000ull);
	return bus;
}

static int import_token(sd_bus *bus, const void *token, size_t len, sd_bus_error *error)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	r = sd_bus_message_new_method_call(bus, &m, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					   "Import");
	if (r >= 0)
		r = sd_bus_message_append_array(m, 'y', token, len);
	if (r >= 0)
		r = sd_bus_call(bus, m, 0, error, NULL);
	return r < 0 ? r : 0;
}

static int do_register(sd_bus *bus)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r = broker_call(bus, "Register", &error, NULL, "a{sv}", 1, "dynamic", "b", 1);

	sd_bus_error_free(&error);
	return r;
}

/* Allocates size bytes; the buffer's path into path, its fd (a new one, owned) into *ret_fd. */
static int do_allocate(sd_bus *bus, uint64_t size, char *path, size_t len, int *ret_fd,
		       sd_bus_error *error)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	const char *p;
	int fd, r;

	r = broker_call(bus, "Allocate", error, &reply, "a{sv}", 1, "size", "t", size);
	if (r < 0)
		return r;
	r = sd_bus_message_read(reply, "oh", &p, &fd);
	if (r < 0)
		return r;
	snprintf(path, len, "%s", p);
	if (ret_fd)
		*ret_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	return 0;
}

/* The daemon answers a cheap call within timeout_ms. */
static bool answers_within(int timeout_ms)
{
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = connect_bus();
	char *version = NULL;
	bool ok;

	sd_bus_set_method_call_timeout(bus, (uint64_t)timeout_ms * 1000);
	ok = sd_bus_get_property_string(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					"Version", NULL, &version) >= 0;
	free(version);
	return ok;
}

/* The daemon's fd count, once it reaches want (replies still being written hold copies of
 * the fds they carry for a moment), or whatever it is after 2 s. */
static int settled_fds(int want)
{
	int n = fixture_daemon_fds(&f);

	for (int i = 0; i < 200 && n != want; i++) {
		msleep(10);
		n = fixture_daemon_fds(&f);
	}
	return n;
}

/* The daemon's fd count once it stops changing (three equal reads 50 ms apart, at most 3 s):
 * a baseline taken while a reply is still being written would count its copy. */
static int stable_fds(void)
{
	int n = fixture_daemon_fds(&f), same = 0;

	for (int i = 0; i < 60 && same < 2; i++) {
		int m;

		msleep(50);
		m = fixture_daemon_fds(&f);
		same = m == n ? same + 1 : 0;
		n = m;
	}
	return n;
}

static bool daemon_alive(void)
{
	return kill(f.daemon_pid, 0) == 0 && answers_within(2000);
}

static void start(const char *config)
{
	tap_require(fixture_start(&f, config) == 0, "start a private bus and the daemon");
}

static void stop(const char *what)
{
	int status = fixture_stop(&f);

	tap_ok(status == 0,
	       "%s: the daemon exits cleanly (status %d; no crash, no sanitizer report)", what,
	       status);
}

/* 1. A move's deadline fires while a holder never reacquires, and after all did. */
static void test_move_deadline(void)
{
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *owner = NULL, *holder = NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	const void *token;
	size_t token_len;
	char path[128];
	int fd = -1, fds_before, r;

	start(DEADLINE_CONFIG);
	owner = connect_bus();
	holder = connect_bus();
	do_register(owner);
	do_register(holder);
	tap_is(do_allocate(owner, 65536, path, sizeof(path), &fd, &error), 0, "allocate");
	r = broker_call(owner, "Share", &error, &reply, "oa{sv}", path, 0);
	if (r >= 0)
		r = sd_bus_message_read_array(reply, 'y', &token, &token_len);
	if (r >= 0)
		r = import_token(holder, token, token_len, &error);
	tap_is(r, 0, "a second client holds the buffer");
	fds_before = stable_fds();
	tap_is(broker_call(owner, "Move", &error, NULL, "o", path), 0, "the owner moves it");
	tap_is(settled_fds(fds_before + 1), fds_before + 1,
	       "the old backing is kept for the holders");
	broker_call(owner, "Reacquire", &error, NULL, "o", path);
	/* The holder never reacquires; the deadline (1 s) must fire and drop the old backing. */
	msleep(2500);
	tap_ok(daemon_alive(), "the deadline fired and the daemon is alive");
	tap_is(settled_fds(fds_before), fds_before, "the deadline dropped the old backing");

	tap_is(broker_call(owner, "Move", &error, NULL, "o", path), 0, "the buffer moves again");
	broker_call(owner, "Reacquire", &error, NULL, "o", path);
	broker_call(holder, "Reacquire", &error, NULL, "o", path);
	tap_is(settled_fds(fds_before), fds_before, "every holder reacquired: old backing gone");
	msleep(2500);
	tap_ok(daemon_alive(), "a deadline after a settled move does no harm");

	tap_is(broker_call(owner, "Move", &error, NULL, "o", path), 0, "a third move");
	sd_bus_flush_close_unref(holder);
	holder = NULL;
	sd_bus_flush_close_unref(owner);
	owner = NULL;
	tap_ok(fixture_wait_clients(&f, 0, 5000), "both clients leave during the move");
	msleep(2000);
	tap_ok(daemon_alive(), "the deadline of a freed buffer's move does no harm");
	sd_bus_error_free(&error);
	close(fd);
	stop("move deadlines");
}

/* 2. A peer that never speaks, kept open while its client leaves, and one left unauthenticated. */
static void test_silent_peer(void)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus *bus;
	struct pollfd pfd;
	char byte;
	int peer = -1, r;
	uint64_t t0;

	start(DEADLINE_CONFIG);
	bus = connect_bus();
	do_register(bus);
	r = broker_call(bus, "OpenPeer", &error, &reply, "");
	if (r >= 0)
		r = sd_bus_message_read(reply, "h", &peer);
	if (r >= 0)
		peer = fcntl(peer, F_DUPFD_CLOEXEC, 3);
	tap_ok(r >= 0 && peer >= 0, "open a peer connection, and never speak on it");
	sd_bus_flush_close_unref(bus);
	t0 = now_ms();
	tap_ok(answers_within(1000), "its client left the bus: another caller is answered at once");
	tap_ok(fixture_wait_clients(&f, 0, 2000), "the client is gone (%llu ms)",
	       (unsigned long long)(now_ms() - t0));
	pfd = (struct pollfd){.fd = peer, .events = POLLIN};
	tap_ok(poll(&pfd, 1, 2000) == 1 && read(peer, &byte, 1) == 0,
	       "the daemon closed the silent peer");
	close(peer);

	/* Still registered, but the peer never authenticates: PeerAuthTimeoutSec=1. */
	bus = connect_bus();
	do_register(bus);
	sd_bus_message_unref(reply);
	reply = NULL;
	r = broker_call(bus, "OpenPeer", &error, &reply, "");
	if (r >= 0)
		r = sd_bus_message_read(reply, "h", &peer);
	if (r >= 0)
		peer = fcntl(peer, F_DUPFD_CLOEXEC, 3);
	tap_ok(r >= 0 && peer >= 0, "a second peer, never authenticated");
	t0 = now_ms();
	pfd = (struct pollfd){.fd = peer, .events = POLLIN};
	tap_ok(poll(&pfd, 1, 5000) == 1 && read(peer, &byte, 1) == 0,
	       "the daemon closed it after PeerAuthTimeoutSec (%llu ms)",
	       (unsigned long long)(now_ms() - t0));
	close(peer);
	tap_is(broker_u32(bus, "NClients"), 1, "its client stays registered");
	sd_bus_message_unref(reply);
	reply = NULL;
	r = broker_call(bus, "OpenPeer", &error, &reply, "");
	tap_is(r, 0, "and may open a new peer");
	sd_bus_flush_close_unref(bus);
	sd_bus_error_free(&error);
	tap_ok(daemon_alive(), "the daemon serves on");
	stop("silent peers");
}

/* A child that asks the daemon something cheap every 20 ms until SIGTERM, and exits with
 * the longest wait in units of 10 ms (capped), so a stall shows without timing the test. */
static pid_t start_probe(void)
{
	sigset_t set, old;
	pid_t pid;

	/* Blocked before the fork, so that an early SIGTERM waits for the child's loop. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_BLOCK, &set, &old);
	pid = fork();
	if (pid == 0) {
		sd_bus *bus = NULL;
		uint64_t worst = 0;

		if (db_bus_open_address(f.address, &bus) < 0)
			_exit(255);
		sd_bus_set_method_call_timeout(bus, 5 * 1000000ull);
		for (;;) {
			struct timespec zero = {0, 0};
			uint64_t t0 = now_ms();
			uint32_t n;

			if (sd_bus_get_property_trivial(bus, DB_BUS_NAME, DB_OBJECT_PATH,
							DB_IFACE_BROKER, "NClients", NULL, 'u',
							&n) < 0)
				_exit(254);
			if (now_ms() - t0 > worst)
				worst = now_ms() - t0;
			if (sigtimedwait(&set, NULL, &zero) == SIGTERM)
				_exit(worst / 10 < 250 ? (int)(worst / 10) : 250);
			msleep(20);
		}
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	return pid;
}

static int stop_probe(pid_t pid)
{
	int status;

	kill(pid, SIGTERM);
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) > 250)
		return -1;
	return WEXITSTATUS(status) * 10;
}

/* Marshals an object path as a D-Bus body ("o"). */
static size_t body_path(uint8_t *out, const char *path)
{
	uint32_t len = (uint32_t)strlen(path);

	memcpy(out, &len, 4);
	memcpy(out + 4, path, len + 1);
	return 4 + len + 1;
}

/*
 * A peer whose window is full of calls that get no answer (here eight WaitCollection, each
 * answered only when its collection allocates, 30 s away) and that has nothing to read: the
 * window never opens again, so PeerStallTimeoutSec=1 closes it.
 */
static void test_wedged_window(void)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	char paths[8][128];
	struct pollfd pfd;
	struct rawbus rb;
	uint8_t body[256];
	uint64_t t0;
	sd_bus *bus;
	int peer = -1, r, made = 0;

	start(DEADLINE_CONFIG);
	bus = connect_bus();
	do_register(bus);
	for (int i = 0; i < 8; i++) {
		const char *p;

		sd_bus_message_unref(reply);
		reply = NULL;
		if (broker_call(bus, "CreateCollection", &error, &reply, "a{sv}", 0) >= 0 &&
		    sd_bus_message_read(reply, "o", &p) >= 0)
			snprintf(paths[made++], sizeof(paths[0]), "%s", p);
	}
	tap_is(made, 8, "eight collections");
	sd_bus_message_unref(reply);
	reply = NULL;
	r = broker_call(bus, "OpenPeer", &error, &reply, "");
	if (r >= 0)
		r = sd_bus_message_read(reply, "h", &peer);
	if (r >= 0)
		r = rawbus_connect_peer(&rb, fcntl(peer, F_DUPFD_CLOEXEC, 3));
	tap_is(r, 0, "a peer connection, authenticated");
	for (int i = 0; i < made; i++)
		rawbus_call_peer(&rb, "WaitCollection", "o", body, body_path(body, paths[i]), 0,
				 NULL, 0);
	t0 = now_ms();
	pfd = (struct pollfd){.fd = rb.fd, .events = POLLIN};
	r = poll(&pfd, 1, 4000);
	tap_ok(r == 1 && (pfd.revents & (POLLHUP | POLLIN)) && now_ms() - t0 >= 700,
	       "eight unanswered calls fill the window; the peer is closed after "
	       "PeerStallTimeoutSec (%llu ms)",
	       (unsigned long long)(now_ms() - t0));
	rawbus_close(&rb);
	tap_is(broker_u32(bus, "NClients"), 1, "the client stays registered on the bus");
	sd_bus_flush_close_unref(bus);
	sd_bus_error_free(&error);
	stop("wedged window");
}

/*
 * 3. A peer that sends calls and never reads the replies (with fds in them, or without): the
 * daemon reads no more than its window (PeerWindowCalls=8) and closes it after
 * PeerStallTimeoutSec=1 of not reading.
 */
static void test_unread_peer(bool with_fds)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	struct rawbus rb;
	uint8_t body[256];
	char path[128];
	size_t body_len;
	sd_bus *bus;
	int peer = -1, fds_before, fds_max = 0, sent = 0, worst, r;
	struct pollfd pfd;
	pid_t probe;

	start(DEADLINE_CONFIG);
	bus = connect_bus();
	do_register(bus);
	tap_is(do_allocate(bus, 4096, path, sizeof(path), NULL, &error), 0, "allocate");
	fds_before = stable_fds();
	r = broker_call(bus, "OpenPeer", &error, &reply, "");
	if (r >= 0)
		r = sd_bus_message_read(reply, "h", &peer);
	if (r >= 0)
		r = rawbus_connect_peer(&rb, fcntl(peer, F_DUPFD_CLOEXEC, 3));
	tap_is(r, 0, "a peer connection, authenticated");
	/* The client never blocks either: it sends until its socket is full. */
	fcntl(rb.fd, F_SETFL, O_NONBLOCK);
	body_len = body_path(body, path);
	probe = start_probe();
	/* Each Reacquire's reply carries a descriptor; each Register's is a small error. */
	for (; sent < 20000; sent++) {
		static const uint8_t empty_dict[8] = {0};

		if (with_fds ? rawbus_call_peer(&rb, "Reacquire", "o", body, body_len, 0, NULL, 0) <
				       0
			     : rawbus_call_peer(&rb, "Register", "a{sv}", empty_dict,
						sizeof(empty_dict), 0, NULL, 0) < 0)
			break;
		if (sent % 500 == 0) {
			int n = fixture_daemon_fds(&f);

			fds_max = n > fds_max ? n : fds_max;
		}
	}
	msleep(200);
	r = fixture_daemon_fds(&f);
	fds_max = r > fds_max ? r : fds_max;
	tap_ok(sent < 20000,
	       "the daemon stopped reading the peer: its socket filled after %d calls "
	       "(%s)",
	       sent, with_fds ? "replies with fds" : "small error replies");
	worst = stop_probe(probe);
	tap_ok(worst >= 0 && worst < 1000, "meanwhile another caller waited at most %d ms", worst);
	/* The window's 8 answers, each with a descriptor, and the peer's three sockets. */
	tap_ok(fds_max <= fds_before + 8 + 3,
	       "what it queued stayed within the window: at most %d daemon fds (baseline %d)",
	       fds_max, fds_before);
	/* Past PeerStallTimeoutSec=1 of reading nothing, the daemon closes its end. */
	msleep(1500);
	pfd = (struct pollfd){.fd = rb.fd, .events = 0};
	tap_ok(poll(&pfd, 1, 2000) == 1 && (pfd.revents & POLLHUP),
	       "the daemon closed the peer after PeerStallTimeoutSec");
	rawbus_close(&rb);
	tap_ok(answers_within(1000), "another caller is answered at once");
	tap_is(broker_u32(bus, "NClients"), 1, "the client stays registered on the bus");
	r = fixture_daemon_fds(&f);
	tap_ok(r <= fds_before, "the daemon's fds are back at their baseline (%d, was %d)", r,
	       fds_before);
	sd_bus_flush_close_unref(bus);
	sd_bus_error_free(&error);
	stop("unread peers");
}

/* 4. Another client, of another uid, forges the bus's NameOwnerChanged for the victim. */
static void test_forged_signal(void)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	const char *victim_name;
	char path[128];
	sd_bus *victim;
	pid_t pid;
	int status;

	start(DEADLINE_CONFIG);
	victim = connect_bus();
	do_register(victim);
	sd_bus_get_unique_name(victim, &victim_name);
	pid = fork();
	if (pid == 0) {
		sd_bus *attacker = NULL;
		sd_bus_message *m = NULL;
		int ok = 1;

		if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
			_exit(2);
		if (db_bus_open_address(f.address, &attacker) < 0)
			_exit(3);
		for (int unicast = 0; unicast < 2; unicast++) {
			ok &= sd_bus_message_new_signal(attacker, &m, "/org/freedesktop/DBus",
							"org.freedesktop.DBus",
							"NameOwnerChanged") >= 0;
			ok &= sd_bus_message_append(m, "sss", victim_name, victim_name, "") >= 0;
			if (unicast)
				ok &= sd_bus_message_set_destination(m, DB_BUS_NAME) >= 0;
			ok &= sd_bus_send(attacker, m, NULL) >= 0;
			m = sd_bus_message_unref(m);
		}
		sd_bus_flush_close_unref(attacker);
		_exit(ok ? 0 : 4);
	}
	waitpid(pid, &status, 0);
	tap_ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	       "uid 65534 sends NameOwnerChanged(victim, victim, \"\"), unicast and broadcast");
	msleep(300);
	tap_is(broker_u32(victim, "NClients"), 1, "the victim is still registered");
	tap_ok(do_allocate(victim, 4096, path, sizeof(path), NULL, &error) == 0,
	       "and its calls work (%s)", error.message ? error.message : "");
	sd_bus_flush_close_unref(victim);
	tap_ok(fixture_wait_clients(&f, 0, 5000), "the real NameOwnerChanged still removes it");
	sd_bus_error_free(&error);
	stop("forged signals");
}

/* 5. Strings that reach the log and other clients. */
static void test_hostile_strings(void)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	char path[128];
	sd_bus *bus;
	int r;

	start(DEADLINE_CONFIG);
	bus = connect_bus();
	do_register(bus);
	do_allocate(bus, 4096, path, sizeof(path), NULL, &error);
	r = broker_call(bus, "Revoke", &error, NULL, "os", path,
			"gone\n<0>dmabrokerd: forged line");
	tap_ok(r < 0 && sd_bus_error_has_name(&error, DB_ERROR_INVALID_ARGUMENT),
	       "a Revoke reason with a line break: %s", error.name ? error.name : "accepted");
	sd_bus_error_free(&error);
	r = broker_call(bus, "Revoke", &error, NULL, "os", path, "escape \x1b[2J");
	tap_ok(r < 0 && sd_bus_error_has_name(&error, DB_ERROR_INVALID_ARGUMENT),
	       "a Revoke reason with an escape sequence is refused");
	sd_bus_error_free(&error);
	tap_is(broker_call(bus, "Revoke", &error, NULL, "os", path, "device unplugged, ünïcode ok"),
	       0, "a plain reason is accepted");
	sd_bus_flush_close_unref(bus);
	sd_bus_error_free(&error);
	stop("hostile strings");
}

/* Counts the buffer and client objects uid can see in GetManagedObjects (in a child). */
static int count_visible(uid_t uid, int *ret_buffers, int *ret_clients, bool *ret_peek)
{
	int pipefd[2], status, counts[3] = {-1, -1, 0};
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid == 0) {
		sd_bus *bus = NULL;
		sd_bus_message *reply = NULL;
		const char *path;
		char *name = NULL;

		close(pipefd[0]);
		if (uid && (setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0))
			_exit(2);
		if (db_bus_open_address(f.address, &bus) < 0 ||
		    sd_bus_call_method(bus, DB_BUS_NAME, DB_OBJECT_PATH,
				       "org.freedesktop.DBus.ObjectManager", "GetManagedObjects",
				       NULL, &reply, "") < 0 ||
		    sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}") < 0)
			_exit(3);
		counts[0] = counts[1] = 0;
		while (sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}") > 0) {
			sd_bus_message_read(reply, "o", &path);
			counts[0] += strncmp(path, DB_BUFFER_PATH_PREFIX "/",
					     strlen(DB_BUFFER_PATH_PREFIX) + 1) == 0;
			counts[1] += strncmp(path, DB_CLIENT_PATH_PREFIX "/",
					     strlen(DB_CLIENT_PATH_PREFIX) + 1) == 0;
			sd_bus_message_skip(reply, "a{sa{sv}}");
			sd_bus_message_exit_container(reply);
		}
		/* Root's first buffer, asked for by path. */
		counts[2] = sd_bus_get_property_string(bus, DB_BUS_NAME, DB_BUFFER_PATH_PREFIX "/1",
						       DB_IFACE_BUFFER, "Name", NULL, &name) >= 0;
		if (write(pipefd[1], counts, sizeof(counts)) != sizeof(counts))
			_exit(4);
		_exit(0);
	}
	close(pipefd[1]);
	if (read(pipefd[0], counts, sizeof(counts)) != sizeof(counts))
		counts[0] = -1;
	close(pipefd[0]);
	waitpid(pid, &status, 0);
	*ret_buffers = counts[0];
	*ret_clients = counts[1];
	*ret_peek = counts[2];
	return 0;
}

/* 6. Inspection: a non-root caller sees its own uid's clients and buffers only. */
static void test_visibility(void)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int buffers, clients;
	char path[128];
	sd_bus *bus;
	bool peek;

	start(DEADLINE_CONFIG);
	bus = connect_bus();
	do_register(bus);
	do_allocate(bus, 4096, path, sizeof(path), NULL, &error);
	do_allocate(bus, 4096, path, sizeof(path), NULL, &error);
	count_visible(0, &buffers, &clients, &peek);
	tap_ok(buffers == 2 && clients == 1 && peek,
	       "root sees every buffer and client (%d buffers, %d clients)", buffers, clients);
	count_visible(65534, &buffers, &clients, &peek);
	tap_ok(buffers == 0 && clients == 0 && !peek,
	       "uid 65534 sees none of root's (%d buffers, %d clients, by path: %s)", buffers,
	       clients, peek ? "read" : "refused");
	sd_bus_flush_close_unref(bus);
	sd_bus_error_free(&error);
	stop("visibility");
}

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	int *order = userdata;
	static int n;

	*order = ++n;
	return 0;
}

/* 7. A large Move is copied off the event loop, and charged for its second backing. */
static void test_move_copy(void)
{
	_cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int move_done = 0, probe_done = 0, r;
	char path[128], small[128];
	sd_bus *bus;
	char *version = NULL;

	start("[Daemon]\nMoveDeadlineSec=1\n[Limits]\nMaxBytesPerUid=600M\n");
	bus = connect_bus();
	sd_bus_set_method_call_timeout(bus, 60 * 1000000ull); /* valgrind copies slowly */
	do_register(bus);
	tap_is(do_allocate(bus, 256u << 20, path, sizeof(path), NULL, &error), 0,
	       "allocate 256 MiB");
	/* Same connection, so the daemon receives Move first and the probe second. */
	r = sd_bus_call_method_async(bus, &slot, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
				     "Move", on_reply, &move_done, "o", path);
	tap_is(r, 1, "ask for a move of 256 MiB");
	r = sd_bus_get_property_string(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "Version",
				       NULL, &version);
	free(version);
	probe_done = move_done ? 2 : 1;
	tap_ok(r >= 0 && probe_done == 1,
	       "a call sent after the Move is answered before it: the copy is off the loop");
	while (!move_done) {
		sd_bus_process(bus, NULL);
		sd_bus_wait(bus, 1000000);
	}
	tap_is(broker_u32(bus, "NBuffers"), 1, "the move finished");
	tap_ok(do_allocate(bus, 100u << 20, small, sizeof(small), NULL, &error) < 0 &&
		       sd_bus_error_has_name(&error, DB_ERROR_QUOTA_EXCEEDED),
	       "while holders reacquire both backings count against MaxBytesPerUid");
	sd_bus_error_free(&error);
	msleep(1500);
	tap_is(do_allocate(bus, 100u << 20, small, sizeof(small), NULL, &error), 0,
	       "after the deadline the old backing's charge is gone");
	sd_bus_error_free(&error);
	r = broker_call(bus, "Move", &error, NULL, "o", path);
	tap_ok(r < 0 && sd_bus_error_has_name(&error, DB_ERROR_QUOTA_EXCEEDED),
	       "a move with no room for a second backing: QuotaExceeded (%s)",
	       error.message ? error.message : "");
	sd_bus_error_free(&error);
	sd_bus_flush_close_unref(bus);
	stop("move copies");
}

/* A memfd of size bytes with the given seals (-1: not sealable), its pages allocated. */
static int client_memfd(size_t size, int seals)
{
	int fd = memfd_create("test", MFD_CLOEXEC | (seals >= 0 ? MFD_ALLOW_SEALING : 0));

	if (fd < 0 || ftruncate(fd, (off_t)size) < 0 || fallocate(fd, 0, 0, (off_t)size) < 0)
		return -1;
	if (seals > 0 && fcntl(fd, F_ADD_SEALS, seals) < 0)
		return -1;
	return fd;
}

static int allocate_with(sd_bus *bus, int memfd, bool contiguous, sd_bus_error *error)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	r = sd_bus_message_new_method_call(bus, &m, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					   "AllocateWithMemfd");
	if (r >= 0)
		r = sd_bus_message_append(m, "h", memfd);
	if (r >= 0)
		r = contiguous ? sd_bus_message_append(m, "a{sv}", 2, "size", "t", (uint64_t)65536,
						       "contiguous", "b", 1)
			       : sd_bus_message_append(m, "a{sv}", 1, "size", "t", (uint64_t)65536);
	if (r >= 0)
		r = sd_bus_call(bus, m, 0, error, NULL);
	return r < 0 ? r : 0;
}

/* 8. Memory the client brings (AllocateWithMemfd): only a sealed memfd of the right size. */
static void test_client_memory(void)
{
	static const struct {
		const char *what;
		size_t size;
		int seals;
		bool contiguous;
		const char *want;
	} cases[] = {
		{"a memfd that may shrink", 65536, 0, false, DB_ERROR_INVALID_ARGUMENT},
		{"a memfd that cannot be sealed", 65536, -1, false, DB_ERROR_INVALID_ARGUMENT},
		{"a memfd of the wrong size", 8192, F_SEAL_SHRINK, false,
		 DB_ERROR_INVALID_ARGUMENT},
		{"a write-sealed memfd", 65536, F_SEAL_SHRINK | F_SEAL_WRITE, false,
		 DB_ERROR_INVALID_ARGUMENT},
		{"contiguous memory from a memfd", 65536, F_SEAL_SHRINK, true,
		 DB_ERROR_UNSUPPORTED},
		{"a sealed memfd of the right size", 65536,
		 F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, false, NULL},
	};
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int pipefd[2], r;
	sd_bus *bus;

	start(DEADLINE_CONFIG);
	bus = connect_bus();
	do_register(bus);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int fd = client_memfd(cases[i].size, cases[i].seals);

		r = allocate_with(bus, fd, cases[i].contiguous, &error);
		if (cases[i].want)
			tap_ok(r < 0 && sd_bus_error_has_name(&error, cases[i].want), "%s: %s (%s)",
			       cases[i].what, error.name ? error.name : "accepted",
			       error.message ? error.message : "");
		else
			tap_ok(r == 0, "%s is taken (%s)", cases[i].what,
			       error.message ? error.message : "ok");
		sd_bus_error_free(&error);
		close(fd);
	}
	tap_ok(pipe2(pipefd, O_CLOEXEC) == 0, "a pipe");
	r = allocate_with(bus, pipefd[0], false, &error);
	tap_ok(r < 0 && sd_bus_error_has_name(&error, DB_ERROR_INVALID_ARGUMENT),
	       "is not a memfd: %s", error.message ? error.message : "accepted");
	sd_bus_error_free(&error);
	close(pipefd[0]);
	close(pipefd[1]);
	tap_is(broker_u32(bus, "NBuffers"), 1, "one buffer was made");
	sd_bus_flush_close_unref(bus);
	tap_ok(daemon_alive(), "the daemon serves on");
	stop("client memory");
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	test_move_deadline();
	test_silent_peer();
	test_unread_peer(true);
	test_unread_peer(false);
	test_wedged_window();
	test_forged_signal();
	test_hostile_strings();
	test_visibility();
	test_move_copy();
	test_client_memory();
	return tap_done();
}
