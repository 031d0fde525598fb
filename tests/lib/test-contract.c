// SPDX-License-Identifier: MIT
/*
 * The library's contract, one part per fault found in the 0.1 library:
 *  - a Moved read by a blocking call is not left in sd-bus's queue behind a quiet fd;
 *  - a moved callback that reacquires while the peer died does not make dispatch touch the
 *    freed peer;
 *  - a dead connection is not -ENOTCONN (NotRegistered's errno), and a call that must not
 *    run twice is not replayed after its connection died: it fails with -ECONNABORTED
 *    (outcome unknown), while a harmless one (Release) is resent on the bus;
 *  - Moved/Revoked (and NameOwnerChanged) from anyone but the broker are ignored;
 *  - the caller-filled structs are sized; getters take NULL.
 * The no-replay part runs against a fake broker on the same bus, which notes every call it
 * gets and drops the peer connection under chosen ones.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bus-open.h"
#include "bus-util.h"
#include "dmabroker.h"
#include "fixture.h"
#include "layout-bus.h"
#include "macros.h"
#include "protocol.h"
#include "tap.h"

/* tap_is() with a formatted description. */
#define is(got, want, ...)                                               \
	({                                                               \
		long long _g = (long long)(got), _w = (long long)(want); \
		bool _ok = tap_ok(_g == _w, __VA_ARGS__);                \
		if (!_ok)                                                \
			tap_diag("  got %lld, want %lld", _g, _w);       \
		_ok;                                                     \
	})

struct seen {
	int moved, revoked;
	int reacquire_result;
	bool reacquire_in_callback;
};

static void on_moved(struct dmabroker_buffer *buf, void *userdata)
{
	struct seen *s = userdata;

	s->moved++;
	if (s->reacquire_in_callback)
		s->reacquire_result = dmabroker_buffer_reacquire(buf);
}

static void on_revoked(struct dmabroker_buffer *buf, const char *reason, void *userdata)
{
	struct seen *s = userdata;

	(void)buf;
	(void)reason;
	s->revoked++;
}

static struct dmabroker *client(uint32_t flags, struct seen *seen)
{
	struct dmabroker_event_handlers h = {.moved = on_moved, .revoked = on_revoked};
	struct dmabroker *ctx = NULL;

	tap_require(dmabroker_connect(&ctx, NULL, flags) == 0 &&
			    dmabroker_register(ctx, "cpu", true, "contract", NULL) == 0,
		    "a client registers (%s)", flags & DMABROKER_CONNECT_NO_PEER ? "bus" : "peer");
	if (seen)
		dmabroker_set_event_handlers(ctx, &h, sizeof(h), seen);
	return ctx;
}

static bool readable(struct dmabroker *ctx, int timeout_ms)
{
	struct pollfd pfd = {dmabroker_get_fd(ctx), (short)dmabroker_get_events(ctx), 0};

	return poll(&pfd, 1, timeout_ms) > 0;
}

static int wait_count(struct dmabroker *ctx, int *counter, int want)
{
	for (int i = 0; i < 100 && *counter < want; i++)
		if (readable(ctx, 50) && dmabroker_dispatch(ctx) < 0)
			break;
	return *counter;
}

/* owner allocates and shares; holder imports. */
static void share_one(struct dmabroker *owner, struct dmabroker *holder,
		      struct dmabroker_buffer **ret_owned, struct dmabroker_buffer **ret_held)
{
	struct dmabroker_alloc_spec spec = {.size = 65536};
	struct dmabroker_token token;

	tap_require(dmabroker_allocate(owner, &spec, sizeof(spec), ret_owned) == 0 &&
			    dmabroker_share(*ret_owned, NULL, 0, &token) == 0 &&
			    dmabroker_import(holder, &token, ret_held) == 0,
		    "a buffer is allocated, shared and imported");
}

/* Bullet 1: what a blocking call read is announced by the fd. */
static void test_queued_during_blocking_call(uint32_t flags)
{
	const char *via = flags & DMABROKER_CONNECT_NO_PEER ? "bus" : "peer";
	struct seen seen = {0};
	struct dmabroker *owner = client(0, NULL), *holder = client(flags, &seen);
	struct dmabroker_buffer *owned, *held;
	struct dmabroker_token token;

	share_one(owner, holder, &owned, &held);
	tap_ok(!readable(holder, 0) || dmabroker_dispatch(holder) >= 0, "settle");
	is(dmabroker_buffer_move(owned), 0, "the owner moves the buffer");
	/* The daemon sent Moved before answering the owner; the holder's own call is answered
	 * after it on the same connection, so sd_bus_call() reads the Moved and queues it. */
	is(dmabroker_share(held, NULL, 0, &token), 0, "the holder makes a blocking call (%s)", via);
	tap_ok(readable(holder, 0), "its fd is readable at once: the Moved is not hidden (%s)",
	       via);
	is(dmabroker_dispatch(holder), 1, "dispatch delivers it");
	is(seen.moved, 1, "the moved callback ran");
	tap_ok(!readable(holder, 0), "and then the fd is quiet");
	dmabroker_buffer_reacquire(held);
	dmabroker_buffer_reacquire(owned);
	dmabroker_disconnect(holder);
	dmabroker_disconnect(owner);
}

/* Bullet 4: only the broker's owner may send us events. */
static void test_forged_signals(struct fixture *f)
{
	struct seen seen = {0};
	struct dmabroker *owner = client(0, NULL),
			 *holder = client(DMABROKER_CONNECT_NO_PEER, &seen);
	struct dmabroker_buffer *owned, *held;
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *attacker = inspect_bus();
	char *victim = NULL;
	const char *me = NULL;

	(void)f;
	share_one(owner, holder, &owned, &held);
	tap_require(sd_bus_get_property_string(attacker, DB_BUS_NAME, dmabroker_client_path(holder),
					       DB_IFACE_CLIENT, "BusName", NULL, &victim) >= 0,
		    "the attacker learns the holder's bus name");
	sd_bus_get_unique_name(attacker, &me);
	/* A forged NameOwnerChanged first, naming the attacker the broker. */
	{
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;

		sd_bus_message_new_signal(attacker, &m, "/org/freedesktop/DBus",
					  "org.freedesktop.DBus", "NameOwnerChanged");
		sd_bus_message_set_destination(m, victim);
		sd_bus_message_append(m, "sss", DB_BUS_NAME, "", me);
		tap_ok(sd_bus_send(attacker, m, NULL) >= 0, "the attacker claims the name");
	}
	{
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;

		sd_bus_message_new_signal(attacker, &m, DB_OBJECT_PATH, DB_IFACE_BROKER, "Revoked");
		sd_bus_message_set_destination(m, victim);
		sd_bus_message_append(m, "os", dmabroker_buffer_get_path(held), "forged");
		tap_ok(sd_bus_send(attacker, m, NULL) >= 0, "and sends a Revoked to the holder");
	}
	{
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;

		sd_bus_message_new_signal(attacker, &m, DB_OBJECT_PATH, DB_IFACE_BROKER, "Moved");
		sd_bus_message_set_destination(m, victim);
		sd_bus_message_append(m, "o", dmabroker_buffer_get_path(held));
		sd_bus_send(attacker, m, NULL);
	}
	sd_bus_flush(attacker);
	/* A round trip through the daemon after them: they have arrived when it returns. */
	dmabroker_buffer_reacquire(held);
	wait_count(holder, &seen.revoked, 1);
	is(seen.revoked, 0, "a Revoked from another bus user is ignored");
	is(seen.moved, 0, "so is a Moved");
	is(dmabroker_buffer_revoke(owned, "real"), 0, "the owner revokes");
	is(wait_count(holder, &seen.revoked, 1), 1, "the broker's own Revoked arrives");
	free(victim);
	dmabroker_release(held);
	dmabroker_disconnect(holder);
	dmabroker_disconnect(owner);
}

/* Bullet 2: a callback that reacquires while the peer died. */
static void test_reacquire_on_dead_peer(struct fixture *f)
{
	struct seen seen = {.reacquire_in_callback = true}, owner_seen = {0};
	struct dmabroker *owner = client(0, &owner_seen), *holder = client(0, &seen);
	struct dmabroker_buffer *owned, *held;
	int r;

	share_one(owner, holder, &owned, &held);
	is(dmabroker_buffer_move(owned), 0, "the owner moves the buffer");
	/* The daemon sends Moved to every holder at once: when the owner (a holder too) has
	 * its own, the holder's is in its peer socket. Then the peer dies behind it. */
	is(wait_count(owner, &owner_seen.moved, 1), 1, "the owner got its Moved");
	/* Not a time budget: only a settle, so that the daemon's write to the holder's peer
	 * (which may follow the owner's) is done before the kill. */
	usleep(300 * 1000);
	fixture_kill_daemon(f, SIGKILL);
	r = 0;
	for (int i = 0; i < 20 && seen.moved == 0 && r >= 0; i++)
		if (readable(holder, 100))
			r = dmabroker_dispatch(holder);
	is(seen.moved, 1, "the moved callback ran");
	tap_ok(seen.reacquire_result == -ECONNRESET,
	       "its reacquire found no daemon: -ECONNRESET (got %d), not NotRegistered's -ENOTCONN",
	       seen.reacquire_result);
	/* Whatever is left to do on the dead peer happens here; nothing freed is touched. */
	for (int i = 0; i < 5; i++)
		if (readable(holder, 20))
			dmabroker_dispatch(holder);
	tap_ok(true, "dispatch went on after the peer was dropped in a callback");
	/* The owner learns that its peer is gone too; from then on calls go to the bus. */
	for (int i = 0; i < 5; i++)
		if (readable(owner, 20))
			dmabroker_dispatch(owner);
	is(dmabroker_buffer_move(owned), -ECONNRESET,
	   "with no daemon, a call says -ECONNRESET (the call was not delivered)");
	dmabroker_disconnect(holder);
	dmabroker_disconnect(owner);
	tap_require(fixture_restart_daemon(f) == 0, "the daemon starts again");
}

static void test_not_registered(void)
{
	struct dmabroker *ctx = NULL;
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker_buffer *buf;

	dmabroker_connect(&ctx, NULL, 0);
	is(dmabroker_allocate(ctx, &spec, sizeof(spec), &buf), -ENOTCONN,
	   "-ENOTCONN means NotRegistered, and only that");
	dmabroker_disconnect(ctx);
}

/* Sized structs and NULL-taking getters. */
static void test_structs(void)
{
	struct dmabroker *ctx = client(0, NULL);
	struct {
		struct dmabroker_event_handlers h;
		uint64_t future;
	} bigger = {.future = 1};
	struct {
		struct dmabroker_alloc_spec spec;
		uint64_t future;
	} spec = {.spec = {.size = 4096}};
	struct dmabroker_buffer *buf;
	char text[DMABROKER_TOKEN_STRING_SIZE];
	struct dmabroker_token token = {{0xab}};

	is(dmabroker_set_event_handlers(ctx, &bigger.h, sizeof(bigger), NULL), -E2BIG,
	   "a newer caller's handler table with a field this library lacks: -E2BIG");
	bigger.future = 0;
	is(dmabroker_set_event_handlers(ctx, &bigger.h, sizeof(bigger), NULL), 0,
	   "with that field zero, it is taken");
	is(dmabroker_set_event_handlers(ctx, &bigger.h, 4, NULL), -EINVAL,
	   "a size smaller than the first version: -EINVAL");
	is(dmabroker_allocate(ctx, &spec.spec, sizeof(spec), &buf), 0,
	   "a larger alloc spec with its tail zero allocates");
	dmabroker_release(buf);
	spec.future = 7;
	is(dmabroker_allocate(ctx, &spec.spec, sizeof(spec), &buf), -E2BIG,
	   "and with its tail set is refused, not misread");
	dmabroker_token_to_string(&token, text);
	is((int)strlen(text), DMABROKER_TOKEN_STRING_SIZE - 1, "token text size");
	tap_ok(dmabroker_buffer_get_path(NULL) == NULL && dmabroker_buffer_get_size(NULL) == 0 &&
		       dmabroker_buffer_get_fd(NULL) == -EINVAL &&
		       dmabroker_buffer_get_stride(NULL, 0) == 0 &&
		       dmabroker_client_path(NULL) == NULL && dmabroker_last_error(NULL)[0] == 0,
	       "getters take NULL");
	dmabroker_disconnect(ctx);
}

/* --- the fake broker --- */

static int notes[2] = {-1, -1};
static sd_bus *fake_bus, *fake_peer;
static const sd_bus_vtable fake_vtable[];

static bool on_peer(sd_bus_message *m)
{
	return sd_bus_message_get_bus(m) == fake_peer;
}

static void note(sd_bus_message *m)
{
	dprintf(notes[1], "%s %s;", sd_bus_message_get_member(m), on_peer(m) ? "peer" : "bus");
}

/* The peer connection goes away under the call: no answer will come. */
static int drop_peer(sd_bus_message *m)
{
	shutdown(sd_bus_get_fd(fake_peer), SHUT_RDWR);
	(void)m;
	return 1;
}

/* As a daemon older than "compact_layouts" does: an unknown key in info is refused. */
static int fake_register(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	const char *key;

	if (sd_bus_message_enter_container(m, 'a', "{sv}") > 0)
		while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
			if (sd_bus_message_read_basic(m, 's', &key) > 0 &&
			    strcmp(key, "compact_layouts") == 0) {
				dprintf(notes[1], "Refused %s;", on_peer(m) ? "peer" : "bus");
				return sd_bus_error_setf(error,
							 "org.dmabroker.Error.InvalidArgument",
							 "info: unknown key '%s'", key);
			}
			sd_bus_message_skip(m, "v");
			sd_bus_message_exit_container(m);
		}
	note(m);
	return sd_bus_reply_method_return(m, "o", DB_CLIENT_PATH_PREFIX "/1");
}

static void on_registered(int r, void *userdata)
{
	*(int *)userdata = r;
}

static int fake_open_peer(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	sd_id128_t id;
	int sv[2], r;

	note(m);
	fake_peer = sd_bus_flush_close_unref(fake_peer);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	sd_id128_randomize(&id);
	sd_bus_new(&fake_peer);
	sd_bus_set_fd(fake_peer, sv[0], sv[0]);
	sd_bus_set_server(fake_peer, 1, id);
	sd_bus_set_anonymous(fake_peer, 1);
	sd_bus_negotiate_fds(fake_peer, 1);
	sd_bus_add_object_vtable(fake_peer, NULL, DB_OBJECT_PATH, DB_IFACE_BROKER, fake_vtable,
				 NULL);
	sd_bus_start(fake_peer);
	sd_bus_attach_event(fake_peer, sd_bus_get_event(fake_bus), 0);
	r = sd_bus_reply_method_return(m, "h", sv[1]);
	close(sv[1]);
	return r;
}

static int fake_allocate(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	note(m);
	if (on_peer(m))
		return drop_peer(m);
	return sd_bus_error_set(error, DB_ERROR_FAILED, "the fake allocates nothing");
}

/* A token starting with 0xdd drops the peer; any other gets a small buffer. */
static int fake_import(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	struct db_layout_dict d = {.layout = {.size = 4096}, .backend = "memfd"};
	const void *token;
	size_t size;
	int fd;

	note(m);
	sd_bus_message_read_array(m, 'y', &token, &size);
	if (size && ((const uint8_t *)token)[0] == 0xdd && on_peer(m))
		return drop_peer(m);
	fd = memfd_create("fake", MFD_CLOEXEC);
	ftruncate(fd, 4096);
	sd_bus_message_new_method_return(m, &reply);
	sd_bus_message_append(reply, "ohs", DB_BUFFER_PATH_PREFIX "/1", fd, "direct");
	db_layout_dict_append(reply, &d, NULL);
	close(fd);
	return sd_bus_send(NULL, reply, NULL);
}

static int fake_release(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	note(m);
	if (on_peer(m))
		return drop_peer(m);
	return sd_bus_reply_method_return(m, NULL);
}

static int fake_backends(sd_bus *bus, const char *path, const char *interface, const char *property,
			 sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
	/* A heap as the default: plain buffers are the daemon's, no memfd is sent. */
	return sd_bus_message_append(reply, "as", 1, "dma-heap");
}

static const sd_bus_vtable fake_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_METHOD("Register", "a{sv}", "o", fake_register, 0),
	SD_BUS_METHOD("OpenPeer", "", "h", fake_open_peer, 0),
	SD_BUS_METHOD("Allocate", "a{sv}", "oha{sv}", fake_allocate, 0),
	SD_BUS_METHOD("Import", "ay", "ohsa{sv}", fake_import, 0),
	SD_BUS_METHOD("Release", "o", "", fake_release, 0),
	SD_BUS_PROPERTY("Backends", "as", fake_backends, 0, 0),
	SD_BUS_VTABLE_END,
};

static pid_t start_fake(struct fixture *f)
{
	char ready;
	pid_t pid;

	tap_require(pipe2(notes, O_CLOEXEC) == 0, "a pipe for the fake's notes");
	pid = fork();
	if (pid == 0) {
		sd_event *e = NULL;

		close(notes[0]);
		if (db_bus_open_address(f->address, &fake_bus) < 0 ||
		    sd_bus_add_object_vtable(fake_bus, NULL, DB_OBJECT_PATH, DB_IFACE_BROKER,
					     fake_vtable, NULL) < 0 ||
		    sd_bus_request_name(fake_bus, DB_BUS_NAME, 0) < 0)
			_exit(1);
		sd_event_default(&e);
		sd_bus_attach_event(fake_bus, e, 0);
		(void)!write(notes[1], "R", 1);
		sd_event_loop(e);
		_exit(0);
	}
	close(notes[1]);
	tap_require(read(notes[0], &ready, 1) == 1 && ready == 'R',
		    "the fake broker owns the name");
	return pid;
}

/* Every note the fake wrote so far, one per line. */
static void read_notes(char *buf, size_t len)
{
	size_t n = 0;

	buf[0] = '\0';
	while (n + 1 < len) {
		struct pollfd pfd = {notes[0], POLLIN, 0};
		ssize_t k;

		if (poll(&pfd, 1, 200) <= 0)
			break;
		k = read(notes[0], buf + n, len - n - 1);
		if (k <= 0)
			break;
		n += (size_t)k;
		buf[n] = '\0';
	}
}

static void on_allocated(int r, struct dmabroker_buffer *buf, void *userdata)
{
	*(int *)userdata = r;
	(void)buf;
}

/* Bullet 3: no replay of what must not run twice; a harmless call is resent. */
static void test_no_replay(struct fixture *f)
{
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker_token die = {{0xdd}}, ok = {{0x01}};
	struct dmabroker *ctx;
	struct dmabroker_buffer *buf;
	char seen[512];
	pid_t fake;
	int result = 1;

	fixture_kill_daemon(f, SIGKILL);
	fake = start_fake(f);

	ctx = client(0, NULL);
	read_notes(seen, sizeof(seen));
	tap_ok(strstr(seen, "Refused bus;Register bus;") == seen,
	       "a daemon that does not know compact_layouts: Register is sent again without it "
	       "(saw: %s)",
	       seen);
	tap_ok(strstr(seen, "OpenPeer bus") != NULL, "the client opened a peer with the fake");
	is(dmabroker_import(ctx, &die, &buf), -ECONNABORTED,
	   "an Import whose peer died under it fails with -ECONNABORTED");
	read_notes(seen, sizeof(seen));
	tap_ok(strcmp(seen, "Import peer;") == 0, "and was sent once, not replayed (saw: %s)",
	       seen);
	is(dmabroker_import(ctx, &ok, &buf), 0, "the next call goes over the bus");
	read_notes(seen, sizeof(seen));
	tap_ok(strcmp(seen, "Import bus;") == 0, "(saw: %s)", seen);
	dmabroker_release(buf);
	read_notes(seen, sizeof(seen));
	dmabroker_disconnect(ctx);

	ctx = client(0, NULL);
	read_notes(seen, sizeof(seen));
	is(dmabroker_import(ctx, &ok, &buf), 0, "a client imports over its peer");
	read_notes(seen, sizeof(seen));
	is(dmabroker_release(buf), 0, "a Release whose peer died under it succeeds");
	read_notes(seen, sizeof(seen));
	tap_ok(strcmp(seen, "Release peer;Release bus;") == 0,
	       "because it was resent on the bus: doing it twice is harmless (saw: %s)", seen);
	dmabroker_disconnect(ctx);

	ctx = client(0, NULL);
	read_notes(seen, sizeof(seen));
	dmabroker_disconnect(ctx);

	tap_require(dmabroker_connect(&ctx, NULL, 0) == 0, "connect");
	is(dmabroker_register_async(ctx, "cpu", true, "contract", NULL, on_registered, &result,
				    NULL),
	   0, "an asynchronous Register is sent");
	for (int i = 0; i < 50 && result == 1; i++)
		if (readable(ctx, 100))
			dmabroker_dispatch(ctx);
	is(result, 0, "and done, though the fake refused compact_layouts");
	read_notes(seen, sizeof(seen));
	tap_ok(strstr(seen, "Refused bus;Register bus;") == seen,
	       "  sent again without it (saw: %s)", seen);
	result = 1;
	is(dmabroker_allocate_async(ctx, &spec, sizeof(spec), on_allocated, &result, NULL), 0,
	   "an asynchronous Allocate is sent");
	for (int i = 0; i < 50 && result == 1; i++)
		if (readable(ctx, 100))
			dmabroker_dispatch(ctx);
	is(result, -ECONNABORTED, "its peer died under it: the callback gets -ECONNABORTED");
	read_notes(seen, sizeof(seen));
	tap_ok(strcmp(seen, "Allocate peer;") == 0, "and it was not replayed (saw: %s)", seen);
	dmabroker_disconnect(ctx);

	kill(fake, SIGKILL);
	waitpid(fake, NULL, 0);
	close(notes[0]);
	tap_require(fixture_restart_daemon(f) == 0, "the real daemon starts again");
}

int main(int argc, char **argv)
{
	struct fixture f;

	(void)argc;
	fixture_wrap_self(argv);

	tap_require(fixture_start(&f, NULL) == 0, "start a private bus and the daemon");
	test_not_registered();
	test_queued_during_blocking_call(0);
	test_queued_during_blocking_call(DMABROKER_CONNECT_NO_PEER);
	test_forged_signals(&f);
	test_structs();
	test_reacquire_on_dead_peer(&f);
	test_no_replay(&f);
	tap_ok(fixture_wait_clients(&f, 0, 5000), "every client is gone");
	is(fixture_stop(&f), 0, "the daemon exits cleanly");
	return tap_done();
}
