// SPDX-License-Identifier: MIT
/*
 * Sharing through the daemon on a private bus: the same bytes in two processes, the attachment
 * paths, privacy across uids, single-use tokens, and clients killed while holding buffers.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <drm_fourcc.h>

#include "bus-util.h"
#include "dmabroker.h"
#include "fixture.h"
#include "layout-bus.h"
#include "protocol.h"
#include "tap.h"

#define SIZE (1u << 20)

static struct dmabroker *client(bool dynamic, uint32_t flags)
{
	struct dmabroker *ctx = NULL;

	tap_require(dmabroker_connect(&ctx, NULL, flags) == 0, "connect");
	tap_require(dmabroker_register(ctx, "cpu", dynamic, "test", NULL) == 0, "register");
	return ctx;
}

static uint8_t *map(struct dmabroker_buffer *buf)
{
	void *p = NULL;

	tap_require(dmabroker_buffer_map(buf, &p) == 0, "map %s", dmabroker_buffer_get_path(buf));
	return p;
}

static void test_same_bytes(uint32_t flags)
{
	struct dmabroker *a = client(true, flags);
	struct dmabroker_buffer *buf;
	struct dmabroker_alloc_spec spec = {.size = SIZE, .name = "same-bytes"};
	struct dmabroker_token token;
	char hex[DMABROKER_TOKEN_STRING_SIZE], out[256];
	uint8_t *p;
	bool all = true;
	int status;

	tap_ok(dmabroker_allocate(a, &spec, sizeof(spec), &buf) == 0, "allocate %u bytes (%s)",
	       SIZE, flags & DMABROKER_CONNECT_NO_PEER ? "bus" : "peer connection");
	p = map(buf);
	dmabroker_buffer_begin_cpu_access(buf, DMABROKER_ACCESS_WRITE);
	memset(p, 0x5a, SIZE);
	dmabroker_buffer_end_cpu_access(buf, DMABROKER_ACCESS_WRITE);
	tap_ok(dmabroker_share(buf, NULL, 0, &token) == 0, "share");
	dmabroker_token_to_string(&token, hex);
	{
		const char *argv[] = {"tests/bus/test-client",
				      "import",
				      hex,
				      "--expect",
				      "0x5a",
				      "--write",
				      "0xa5",
				      NULL};

		status = run_client(argv, false, out, sizeof(out));
	}
	tap_is(status, 0, "another process imports and sees our bytes");
	for (size_t i = 0; i < SIZE; i++)
		all &= p[i] == 0xa5;
	tap_ok(all, "and we see the bytes it wrote, through our own mapping");
	dmabroker_release(buf);
	dmabroker_disconnect(a);
}

/* Imports buf's token in-process as a client with the given capability. */
static struct dmabroker_buffer *import_as(struct dmabroker *importer, struct dmabroker_buffer *buf)
{
	struct dmabroker_token token;
	struct dmabroker_buffer *got = NULL;

	tap_require(dmabroker_share(buf, NULL, 0, &token) == 0, "share");
	tap_require(dmabroker_import(importer, &token, &got) == 0, "import");
	return got;
}

static void test_paths(sd_bus *inspect)
{
	struct dmabroker *dyn_a = client(true, 0), *dyn_b = client(true, 0),
			 *stat_c = client(false, 0);
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker_buffer *buf, *b2, *c2, *buf2, *d2;
	const char *path;

	dmabroker_allocate(dyn_a, &spec, sizeof(spec), &buf);
	path = dmabroker_buffer_get_path(buf);
	b2 = import_as(dyn_b, buf);
	tap_is(dmabroker_buffer_get_attach_path(b2), DMABROKER_PATH_DIRECT,
	       "two dynamic clients: direct");
	tap_ok(!buffer_pinned(inspect, path), "and the buffer is not pinned");
	c2 = import_as(stat_c, buf);
	tap_is(dmabroker_buffer_get_attach_path(c2), DMABROKER_PATH_CACHED,
	       "a static client of a dynamic exporter: cached");
	tap_ok(buffer_pinned(inspect, path), "and the buffer is pinned");
	tap_is(dmabroker_buffer_move(buf), -EBUSY, "a pinned buffer refuses to move");
	tap_ok(strstr(dmabroker_last_error(dyn_a), "org.dmabroker.Error.Busy") != NULL,
	       "with org.dmabroker.Error.Busy");
	dmabroker_release(c2);
	tap_ok(!buffer_pinned(inspect, path), "released: unpinned");

	/* A static allocator holds its own buffer through the cached path too. */
	dmabroker_allocate(stat_c, &spec, sizeof(spec), &buf2);
	tap_ok(buffer_pinned(inspect, dmabroker_buffer_get_path(buf2)),
	       "a static client's own allocation is pinned");
	d2 = import_as(dyn_a, buf2);
	tap_is(dmabroker_buffer_get_attach_path(d2), DMABROKER_PATH_DIRECT,
	       "a dynamic importer of a daemon buffer: direct");
	dmabroker_disconnect(dyn_a);
	dmabroker_disconnect(dyn_b);
	dmabroker_disconnect(stat_c);
}

static void test_privacy(void)
{
	struct dmabroker *a = client(true, 0);
	struct dmabroker_alloc_spec spec = {.size = 8192};
	struct dmabroker_share_opts bound = {.bind_uid = true, .uid = 0};
	struct dmabroker_buffer *buf;
	struct dmabroker_token token;
	char hex[DMABROKER_TOKEN_STRING_SIZE], guess[DMABROKER_TOKEN_STRING_SIZE], out[512];
	int status;

	dmabroker_allocate(a, &spec, sizeof(spec), &buf);
	map(buf)[0] = 0x11;
	memset(map(buf), 0x11, 8192);

	/* Nobody can import without a token: a guess is refused. */
	snprintf(guess, sizeof(guess), "%s", "00112233445566778899aabbccddeeff");
	{
		const char *argv[] = {"tests/bus/test-client", "import", guess, NULL};

		status = run_client(argv, true, out, sizeof(out));
	}
	tap_is(status, 2, "another uid without a token is refused");
	tap_ok(strstr(out, "org.dmabroker.Error.NotFound") != NULL, "with NotFound: %s", out);

	dmabroker_share(buf, &bound, sizeof(bound), &token);
	dmabroker_token_to_string(&token, hex);
	{
		const char *argv[] = {"tests/bus/test-client", "import", hex, NULL};

		status = run_client(argv, true, out, sizeof(out));
	}
	tap_is(status, 2, "another uid with a token bound to ours is refused");
	tap_ok(strstr(out, "org.dmabroker.Error.PermissionDenied") != NULL,
	       "with PermissionDenied: %s", out);

	dmabroker_share(buf, NULL, 0, &token);
	dmabroker_token_to_string(&token, hex);
	{
		const char *argv[] = {
			"tests/bus/test-client", "import", hex, "--expect", "0x11", NULL};

		status = run_client(argv, true, out, sizeof(out));
	}
	tap_is(status, 0, "another uid with a token imports and reads the bytes");
	{
		const char *argv[] = {"tests/bus/test-client", "import", hex, NULL};

		status = run_client(argv, true, out, sizeof(out));
	}
	tap_is(status, 2, "the same token a second time is refused");
	tap_ok(strstr(out, "NotFound") != NULL, "single use: NotFound");
	dmabroker_disconnect(a);
}

static void test_sigkill(struct fixture *f, sd_bus *inspect)
{
	struct dmabroker *a = client(true, 0);
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker_buffer *buf;
	struct dmabroker_token token;
	char hex[DMABROKER_TOKEN_STRING_SIZE], line[128];
	const char *path;
	int out, in, status;
	pid_t pid;

	dmabroker_allocate(a, &spec, sizeof(spec), &buf);
	path = dmabroker_buffer_get_path(buf);
	dmabroker_share(buf, &(struct dmabroker_share_opts){.reusable = true},
			sizeof((struct dmabroker_share_opts){.reusable = true}), &token);
	dmabroker_token_to_string(&token, hex);
	{
		const char *argv[] = {"tests/bus/test-client", "hold", hex, NULL};

		pid = start_client(argv, &out, &in, line, sizeof(line));
	}
	tap_ok(strncmp(line, "path ", 5) == 0, "a holder process imported: %s", line);
	tap_is(buffer_attachments(inspect, path), 2, "two attachments while it holds");
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	close(out);
	close(in);
	tap_ok(fixture_wait_clients(f, 1, 5000), "the killed client is dropped");
	tap_is(buffer_attachments(inspect, path), 1, "and its attachment with it");

	/* The owner itself dies: its buffer goes when nobody holds it. */
	{
		const char *argv[] = {"tests/bus/test-client", "allocate", "65536", "0x33", NULL};

		pid = start_client(argv, &out, &in, line, sizeof(line));
	}
	tap_is(strlen(line), 32, "an allocating process shared a token");
	tap_is(broker_u32(inspect, "NBuffers"), 2, "two buffers live");
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	close(out);
	close(in);
	tap_ok(fixture_wait_clients(f, 1, 5000), "the killed owner is dropped");
	tap_is(broker_u32(inspect, "NBuffers"), 1, "and its buffer, which nobody else held");
	dmabroker_release(buf);
	dmabroker_disconnect(a);
}

/* The values a spec of 4096 bytes or a 64x32 NV12 image gives: a compact reply leaves them out. */
static const struct db_layout_dict asked_plain = {.layout = {.size = 4096}},
				   asked_image = {.layout = {.width = 64,
							     .height = 32,
							     .fourcc = DRM_FORMAT_NV12}};

/* Allocates a plain buffer or an image on bus and returns how many entries the reply's layout
 * has, its decoded layout in ret (ret->backend copied into backend, name dropped). compact:
 * read it against what the spec said. */
static int allocate_count(sd_bus *bus, bool image, bool compact, struct db_layout_dict *ret,
			  char backend[16])
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	const char *path;
	int fd, n = 0, r;

	r = image ? sd_bus_call_method(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
				       "Allocate", &error, &reply, "a{sv}", 3, "width", "u", 64,
				       "height", "u", 32, "fourcc", "u", DRM_FORMAT_NV12)
		  : sd_bus_call_method(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
				       "Allocate", &error, &reply, "a{sv}", 1, "size", "t",
				       (uint64_t)4096);
	tap_require(r >= 0, "Allocate (%s)", error.message ? error.message : strerror(-r));
	tap_require(sd_bus_message_read(reply, "oh", &path, &fd) > 0, "read path and fd");
	r = sd_bus_message_enter_container(reply, 'a', "{sv}");
	while (r >= 0 && (r = sd_bus_message_skip(reply, "{sv}")) > 0)
		n++;
	tap_require(r >= 0 && sd_bus_message_rewind(reply, true) >= 0 &&
			    sd_bus_message_skip(reply, "oh") >= 0,
		    "walk the layout");
	tap_require(db_layout_dict_read_over(reply,
					     compact ? (image ? &asked_image : &asked_plain) : NULL,
					     ret) == 0,
		    "the layout decodes");
	/* Its strings point into the reply. */
	snprintf(backend, 16, "%s", ret->backend ? ret->backend : "");
	ret->backend = backend;
	ret->name = NULL;
	sd_bus_message_unref(reply);
	return n;
}

/* "compact_layouts" is opt-in: a client that does not ask gets every entry, as before. */
static void test_compact_layouts(void)
{
	struct db_layout_dict full, compact;
	char full_backend[16], compact_backend[16];
	struct db_layout want;
	sd_bus *old = inspect_bus(), *new = inspect_bus();

	tap_require(old && new, "two bus connections");
	tap_require(sd_bus_call_method(old, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
				       "Register", NULL, NULL, "a{sv}", 0) >= 0,
		    "a client registers without compact_layouts");
	tap_require(sd_bus_call_method(new, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
				       "Register", NULL, NULL, "a{sv}", 1, "compact_layouts", "b",
				       1) >= 0,
		    "a client registers with compact_layouts");
	tap_is(allocate_count(old, false, false, &full, full_backend), 11,
	       "a plain buffer's full layout: 11 entries");
	/* What the spec said (the size) is left out; "dmabuf" only where it is true. */
	tap_is(allocate_count(new, false, true, &compact, compact_backend), 1 + full.is_dmabuf,
	       "compact: \"backend\" only");
	tap_ok(full.layout.size == 4096 && compact.layout.size == 4096 && full_backend[0] &&
		       strcmp(compact_backend, full_backend) == 0 &&
		       !compact.is_dmabuf == !full.is_dmabuf,
	       "both read back as the same plain buffer");
	tap_is(allocate_count(old, true, false, &full, full_backend), 11,
	       "an NV12 image's full layout: 11 entries");
	tap_is(allocate_count(new, true, true, &compact, compact_backend), 5 + full.is_dmabuf,
	       "compact: size, planes, offsets, strides and backend");
	tap_require(db_layout_compute(64, 32, DRM_FORMAT_NV12, DRM_FORMAT_MOD_LINEAR, 64, &want) ==
			    0,
		    "the layout computed here");
	tap_ok(compact.layout.n_planes == 2 && full.layout.n_planes == 2 &&
		       memcmp(compact.layout.offsets, want.offsets, sizeof(want.offsets)) == 0 &&
		       memcmp(compact.layout.strides, want.strides, sizeof(want.strides)) == 0 &&
		       memcmp(full.layout.strides, want.strides, sizeof(want.strides)) == 0 &&
		       compact.layout.size == full.layout.size,
	       "both read back as the layout common/layout.c computes");
	sd_bus_flush_close_unref(old);
	sd_bus_flush_close_unref(new);
}

int main(void)
{
	struct fixture f;
	sd_bus *inspect;
	int baseline, r;

	r = fixture_start(&f, NULL);
	tap_require(r == 0, "start a private bus and the daemon (%s)", strerror(-r));
	inspect = inspect_bus();
	tap_require(inspect != NULL, "connect an inspector");
	baseline = fixture_daemon_fds(&f);
	tap_diag("the daemon has %d fds open at rest", baseline);

	test_same_bytes(0);
	test_same_bytes(DMABROKER_CONNECT_NO_PEER);
	test_paths(inspect);
	test_privacy();
	test_sigkill(&f, inspect);
	test_compact_layouts();

	tap_ok(fixture_wait_clients(&f, 0, 5000), "every client is gone");
	tap_is(broker_u32(inspect, "NBuffers"), 0, "no buffer is left");
	tap_is(fixture_daemon_fds(&f), baseline, "the daemon's fd count is back to its baseline");
	sd_bus_flush_close_unref(inspect);
	tap_is(fixture_stop(&f), 0, "the daemon exits cleanly on SIGTERM");
	return tap_done();
}
