// SPDX-License-Identifier: MIT
/*
 * The library's event path: dmabroker_get_fd() in a poll loop, dmabroker_dispatch(), the moved
 * and revoked callbacks, reacquire after a move; AllocateMany; dmabrokerctl's listings.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bus-util.h"
#include "dmabroker.h"
#include "fixture.h"
#include "tap.h"

struct seen {
	int moved, revoked;
	char reason[64];
	struct dmabroker_buffer *buf;
};

static void on_moved(struct dmabroker_buffer *buf, void *userdata)
{
	struct seen *s = userdata;

	s->moved++;
	s->buf = buf;
}

static void on_revoked(struct dmabroker_buffer *buf, const char *reason, void *userdata)
{
	struct seen *s = userdata;

	s->revoked++;
	s->buf = buf;
	snprintf(s->reason, sizeof(s->reason), "%s", reason);
}

/* The way an application would: poll the library's fd, dispatch when readable. */
static int wait_events(struct dmabroker *ctx, int *counter, int want)
{
	for (int i = 0; i < 100 && *counter < want; i++) {
		struct pollfd pfd = {dmabroker_get_fd(ctx), POLLIN, 0};

		if (poll(&pfd, 1, 50) > 0 && dmabroker_dispatch(ctx) < 0)
			return -1;
	}
	return *counter;
}

static struct dmabroker *client(bool dynamic, uint32_t flags)
{
	struct dmabroker *ctx = NULL;

	tap_require(dmabroker_connect(&ctx, NULL, flags) == 0 &&
			    dmabroker_register(ctx, "cpu", dynamic, "events", NULL) == 0,
		    "a client registers");
	return ctx;
}

static void test_move_and_revoke(uint32_t importer_flags)
{
	const char *via = importer_flags & DMABROKER_CONNECT_NO_PEER ? "bus" : "peer connection";
	struct dmabroker *owner = client(true, 0), *holder = client(true, importer_flags);
	struct dmabroker_alloc_spec spec = {.size = 65536};
	struct dmabroker_event_handlers handlers = {.moved = on_moved, .revoked = on_revoked};
	struct dmabroker_buffer *buf, *held;
	struct dmabroker_token token;
	struct seen seen = {0};
	uint8_t *p;
	int old_fd;

	dmabroker_set_event_handlers(holder, &handlers, sizeof(handlers), &seen);
	dmabroker_allocate(owner, &spec, sizeof(spec), &buf);
	dmabroker_buffer_map(buf, (void **)&p);
	memset(p, 0x3c, 65536);
	dmabroker_share(buf, NULL, 0, &token);
	tap_require(dmabroker_import(holder, &token, &held) == 0, "the holder imports");
	old_fd = dmabroker_buffer_get_fd(held);

	tap_is(dmabroker_buffer_move(buf), 0, "the owner moves an unpinned buffer");
	tap_ok(wait_events(holder, &seen.moved, 1) == 1, "the holder's moved callback runs (%s)",
	       via);
	tap_ok(seen.buf == held, "for the buffer it holds");
	tap_is(dmabroker_buffer_reacquire(held), 0, "it reacquires");
	tap_ok(dmabroker_buffer_get_fd(held) >= 0, "and has a descriptor for the new backing");
	{
		uint8_t *q;
		bool same = true;

		dmabroker_buffer_map(held, (void **)&q);
		for (size_t i = 0; i < 65536; i++)
			same &= q[i] == 0x3c;
		tap_ok(same, "the contents moved with the buffer");
		(void)old_fd;
	}
	tap_is(dmabroker_buffer_move(buf), -EBUSY,
	       "a second move waits until every holder reacquired");
	dmabroker_buffer_reacquire(buf);
	tap_is(dmabroker_buffer_move(buf), 0, "after the owner reacquires too, it may move again");
	wait_events(holder, &seen.moved, 2);
	dmabroker_buffer_reacquire(held);

	tap_is(dmabroker_buffer_revoke(buf, "device unplugged"), 0, "the owner revokes");
	tap_is(wait_events(holder, &seen.revoked, 1), 1, "the holder's revoked callback runs");
	tap_ok(strcmp(seen.reason, "device unplugged") == 0, "with the reason");
	tap_is(dmabroker_release(held), -ENOENT,
	       "the revoked buffer is gone from the daemon (NotFound)");
	dmabroker_disconnect(holder);
	dmabroker_disconnect(owner);
}

static void test_allocate_many(void)
{
	struct dmabroker *ctx = client(true, 0);
	struct dmabroker_alloc_spec spec = {.width = 64, .height = 64, .fourcc = 0x34325258};
	struct dmabroker_buffer *bufs[DMABROKER_ALLOCATE_MANY_MAX];
	bool distinct = true;

	tap_is(dmabroker_allocate_many(ctx, &spec, sizeof(spec), 8, bufs), 0, "AllocateMany of 8");
	for (int i = 0; i < 8; i++)
		for (int j = 0; j < i; j++)
			distinct &= strcmp(dmabroker_buffer_get_path(bufs[i]),
					   dmabroker_buffer_get_path(bufs[j])) != 0;
	tap_ok(distinct, "eight distinct buffers");
	tap_is(dmabroker_buffer_get_stride(bufs[7], 0), 256, "each with the layout");
	for (int i = 0; i < 8; i++)
		dmabroker_release(bufs[i]);
	tap_is(dmabroker_allocate_many(ctx, &spec, sizeof(spec), DMABROKER_ALLOCATE_MANY_MAX, bufs),
	       0, "AllocateMany of 16 crosses the real dbus-daemon (16 fds in one message)");
	for (int i = 0; i < DMABROKER_ALLOCATE_MANY_MAX; i++)
		dmabroker_release(bufs[i]);
	dmabroker_disconnect(ctx);
	/* Over the bus, not the peer connection: that is where the fd cap bites. */
	ctx = client(true, DMABROKER_CONNECT_NO_PEER);
	tap_is(dmabroker_allocate_many(ctx, &spec, sizeof(spec), DMABROKER_ALLOCATE_MANY_MAX, bufs),
	       0, "and on the bus path");
	for (int i = 0; i < DMABROKER_ALLOCATE_MANY_MAX; i++)
		dmabroker_release(bufs[i]);
	dmabroker_disconnect(ctx);
}

static void test_ctl(void)
{
	struct dmabroker *a = client(false, 0), *b = client(true, 0);
	struct dmabroker_alloc_spec spec = {.size = 12288, .name = "ctl-buffer"};
	struct dmabroker_buffer *buf, *held;
	struct dmabroker_token token;
	const char *status[] = {"tools/dmabrokerctl", "status", NULL};
	const char *buffers[] = {"tools/dmabrokerctl", "buffers", NULL};
	const char *clients[] = {"tools/dmabrokerctl", "clients", NULL};
	char out[8192];

	dmabroker_allocate(a, &spec, sizeof(spec), &buf);
	dmabroker_share(buf, NULL, 0, &token);
	dmabroker_import(b, &token, &held);
	tap_is(run_client(status, false, out, sizeof(out)), 0, "dmabrokerctl status");
	tap_ok(strstr(out, "Clients:        2") && strstr(out, "MaxBufferSize"),
	       "shows counts and limits");
	tap_is(run_client(buffers, false, out, sizeof(out)), 0, "dmabrokerctl buffers");
	tap_ok(strstr(out, "ctl-buffer") && strstr(out, "12288 bytes") && strstr(out, "PINNED") &&
		       strstr(out, "cached (static)") && strstr(out, "direct (dynamic)"),
	       "shows name, size, pinned and each attachment's path");
	tap_is(run_client(clients, false, out, sizeof(out)), 0, "dmabrokerctl clients");
	tap_ok(strstr(out, "role cpu, static") && strstr(out, "role cpu, dynamic") &&
		       strstr(out, "uid 0"),
	       "shows role, dynamic and uid of each client");
	dmabroker_disconnect(b);
	dmabroker_disconnect(a);
}

/* Reads what a child wrote to fd until it is quiet for quiet_ms. */
/* dmabrokerctl monitor: live events, each caller seeing only what it may. */
static void test_monitor(void)
{
	const char *root_argv[] = {"tools/dmabrokerctl", "monitor", "--snapshot", NULL};
	const char *json_argv[] = {"tools/dmabrokerctl", "--json", "monitor", NULL};
	const char *nobody_argv[] = {"tools/dmabrokerctl", "monitor", "--snapshot", NULL};
	static const char *const listings[] = {"buffers", "clients", "status"};
	const char *first_json = "{\"kind\":\"buffer-allocated\"";
	struct dmabroker *a = client(false, 0), *b = client(true, 0);
	struct dmabroker_alloc_spec spec = {.size = 4096, .name = "watched"};
	struct dmabroker_buffer *buf, *held;
	struct dmabroker_token token;
	char hex[DMABROKER_TOKEN_STRING_SIZE];
	static char root_out[16384], json_out[16384], nobody_out[4096], listing[65536];
	int root_fd, json_fd, nobody_fd, status;
	pid_t root, json, nobody;

	root = spawn_client(root_argv, false, &root_fd);
	json = spawn_client(json_argv, false, &json_fd);
	nobody = spawn_client(nobody_argv, true, &nobody_fd);
	/* The snapshot names the two clients: the subscription is in place. */
	read_until_quiet(root_fd, root_out, sizeof(root_out), 2000);
	tap_ok(strstr(root_out, "client-registered") != NULL,
	       "monitor --snapshot lists the clients that are there");
	usleep(300 * 1000); /* the other two subscribe meanwhile */
	dmabroker_allocate(a, &spec, sizeof(spec), &buf);
	dmabroker_share(buf, NULL, 0, &token);
	dmabroker_token_to_string(&token, hex);
	dmabroker_import(b, &token, &held);
	dmabroker_buffer_revoke(buf, "monitor test");
	read_until_quiet(root_fd, root_out, sizeof(root_out), 1000);
	read_until_quiet(json_fd, json_out, sizeof(json_out), 300);
	read_until_quiet(nobody_fd, nobody_out, sizeof(nobody_out), 300);
	tap_ok(strstr(root_out, "buffer-allocated") && strstr(root_out, "\"watched\"") &&
		       strstr(root_out, "shared") && strstr(root_out, "attached") &&
		       strstr(root_out, "revoked") && strstr(root_out, "\"monitor test\"") &&
		       strstr(root_out, "detached"),
	       "root sees the allocation, the share, the import, the revocation");
	tap_ok(!strstr(root_out, hex), "a share's event never carries the token");
	tap_ok(strncmp(json_out, first_json, strlen(first_json)) == 0 &&
		       strstr(json_out, "{\"kind\":\"revoked\""),
	       "--json writes one object per event");
	tap_ok(waitpid(nobody, &status, WNOHANG) == 0 && nobody_out[0] == '\0',
	       "uid 65534 is subscribed and sees none of root's objects (%zu bytes)",
	       strlen(nobody_out));
	for (size_t i = 0; i < 3; i++) {
		const char *argv[] = {"tools/dmabrokerctl", "--json", listings[i], NULL};
		FILE *check;
		int r = run_client(argv, false, listing, sizeof(listing));

		/* Python's parser is the judge of what is JSON. */
		check = popen("python3 -m json.tool >/dev/null", "we");
		if (check)
			fputs(listing, check);
		tap_ok(r == 0 && check && pclose(check) == 0 && listing[0] != '\0',
		       "dmabrokerctl --json %s is valid JSON", listings[i]);
	}
	kill(root, SIGTERM);
	kill(json, SIGTERM);
	kill(nobody, SIGTERM);
	waitpid(root, NULL, 0);
	waitpid(json, NULL, 0);
	waitpid(nobody, NULL, 0);
	close(root_fd);
	close(json_fd);
	close(nobody_fd);
	dmabroker_release(held);
	dmabroker_disconnect(b);
	dmabroker_disconnect(a);
}

int main(void)
{
	struct fixture f;
	int baseline;

	tap_require(fixture_start(&f, NULL) == 0, "start a private bus and the daemon");
	baseline = fixture_daemon_fds(&f);
	test_move_and_revoke(0);
	test_move_and_revoke(DMABROKER_CONNECT_NO_PEER);
	test_allocate_many();
	test_ctl();
	test_monitor();
	tap_ok(fixture_wait_clients(&f, 0, 5000), "every client is gone");
	tap_is(fixture_daemon_fds(&f), baseline, "the daemon's fd count is back to its baseline");
	tap_is(fixture_stop(&f), 0, "the daemon exits cleanly");
	return tap_done();
}
