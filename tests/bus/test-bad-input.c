// SPDX-License-Identifier: MIT
/*
 * Bad input gets a named error, the daemon keeps serving, and a victim client's buffer keeps
 * its bytes throughout.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <drm_fourcc.h>

#include "bus-util.h"
#include "dmabroker.h"
#include "fixture.h"
#include "protocol.h"
#include "rawbus.h"
#include "tap.h"

#define VICTIM_SIZE (256u * 1024)
#define VICTIM_BYTE 0x77

static struct dmabroker_buffer *victim_buf;
static uint8_t *victim_map;
static sd_bus *attacker;
static int n_checked;

static bool victim_intact(void)
{
	for (size_t i = 0; i < VICTIM_SIZE; i++)
		if (victim_map[i] != VICTIM_BYTE)
			return false;
	return true;
}

/* After every bad request: the named error, the daemon alive, the victim's bytes intact. */
static void expect_error(int r, const sd_bus_error *error, const char *want, const char *what)
{
	char *version = NULL;
	bool alive;

	tap_ok(r < 0 && sd_bus_error_has_name(error, want), "%s: %s (%s)", what,
	       error->name ? error->name : "no error", error->message ? error->message : "");
	alive = sd_bus_get_property_string(attacker, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					   "Version", NULL, &version) >= 0;
	free(version);
	if (!alive || !victim_intact())
		tap_ok(false, "after %s: daemon %s, victim %s", what, alive ? "alive" : "GONE",
		       victim_intact() ? "intact" : "CORRUPTED");
	n_checked++;
}

static void allocate_bad(const char *what, const char *want, const char *types, ...)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL;
	va_list ap;
	int r;

	r = sd_bus_message_new_method_call(attacker, &m, DB_BUS_NAME, DB_OBJECT_PATH,
					   DB_IFACE_BROKER, "Allocate");
	va_start(ap, types);
	if (r >= 0)
		r = sd_bus_message_appendv(m, types, ap);
	va_end(ap);
	tap_require(r >= 0, "build %s", what);
	r = sd_bus_call(attacker, m, 0, &error, NULL);
	expect_error(r, &error, want, what);
	sd_bus_error_free(&error);
	sd_bus_message_unref(m);
}

static void export_bad(int fd, const char *what, const char *says)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r;

	r = sd_bus_call_method(attacker, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "Export",
			       &error, NULL, "ha{sv}", fd, 0);
	expect_error(r, &error, DB_ERROR_INVALID_ARGUMENT, what);
	tap_ok(error.message && strstr(error.message, says), "  the message says '%s'", says);
	sd_bus_error_free(&error);
	close(fd);
}

static void call_bad(const char *member, const char *want, const char *what, const char *types, ...)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL;
	va_list ap;
	int r;

	sd_bus_message_new_method_call(attacker, &m, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
				       member);
	va_start(ap, types);
	r = types ? sd_bus_message_appendv(m, types, ap) : 0;
	va_end(ap);
	tap_require(r >= 0, "build %s", what);
	r = sd_bus_call(attacker, m, 0, &error, NULL);
	expect_error(r, &error, want, what);
	sd_bus_error_free(&error);
	sd_bus_message_unref(m);
}

static void test_export_kinds(void)
{
	int p[2], s[2], memfd;
	char tmpl[] = "/tmp/dmabroker-bad-XXXXXX";
	int file = mkstemp(tmpl);

	unlink(tmpl);
	tap_require(pipe2(p, O_CLOEXEC) == 0 &&
			    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) == 0,
		    "make fds");
	export_bad(p[0], "Export of a pipe", "pipe");
	close(p[1]);
	export_bad(s[0], "Export of a socket", "socket");
	close(s[1]);
	export_bad(file, "Export of a regular file", "regular file");
	memfd = memfd_create("not-a-dmabuf", MFD_CLOEXEC);
	ftruncate(memfd, 4096);
	export_bad(memfd, "Export of a memfd", "memfd");
	export_bad(open("/dev/null", O_RDWR | O_CLOEXEC), "Export of /dev/null",
		   "character device");
	export_bad(eventfd(0, EFD_CLOEXEC), "Export of an eventfd", "eventfd");
}

/* A closed fd cannot leave a well-behaved client: the raw client sends an 'h' index with no
 * descriptor behind it. */
static void test_closed_fd(const char *address)
{
	struct rawbus rb;
	/* body "ha{sv}": index 0, then an empty array (length 0, padded to 8 for {sv}). */
	uint8_t body[16] = {0};
	char err[256] = "";
	int serial, r;

	tap_require(rawbus_connect(&rb, address) == 0, "raw client connects");
	serial = rawbus_call(&rb, "Register", "a{sv}", body + 8, 8, 0, NULL, 0);
	rawbus_wait_reply(&rb, (uint32_t)serial, err, sizeof(err), 5000);
	serial = rawbus_call(&rb, "Export", "ha{sv}", body, 16, 1, NULL, 0);
	r = rawbus_wait_reply(&rb, (uint32_t)serial, err, sizeof(err), 5000);
	tap_ok(r == 1 || r == -ECONNRESET,
	       "Export naming a descriptor the message does not carry: %s",
	       r == 1 ? err : "the bus dropped the sender");
	if (r == 1)
		tap_ok(strncmp(err, "org.", 4) == 0, "  a named error");
	rawbus_close(&rb);
	expect_error(-EINVAL, &SD_BUS_ERROR_MAKE_CONST(DB_ERROR_INVALID_ARGUMENT, "-"),
		     DB_ERROR_INVALID_ARGUMENT, "daemon still serving after the raw client");

	/* On a peer connection nothing stands between the client and the daemon's parser. */
	for (uint32_t claimed = 0; claimed <= 1; claimed++) {
		sd_bus_message *reply = NULL;
		sd_bus_error error = SD_BUS_ERROR_NULL;
		int borrowed, peer_fd;

		/* The daemon drops the previous peer when it sees it close: retry while Busy. */
		for (int tries = 0; tries < 100; tries++) {
			sd_bus_error_free(&error);
			r = sd_bus_call_method(attacker, DB_BUS_NAME, DB_OBJECT_PATH,
					       DB_IFACE_BROKER, "OpenPeer", &error, &reply, NULL);
			if (r >= 0 || !sd_bus_error_has_name(&error, DB_ERROR_BUSY))
				break;
			usleep(20000);
		}
		tap_require(r >= 0 && sd_bus_message_read(reply, "h", &borrowed) >= 0,
			    "attacker opens a peer connection (%s)", error.message);
		peer_fd = fcntl(borrowed, F_DUPFD_CLOEXEC, 3);
		sd_bus_message_unref(reply);
		tap_require(rawbus_connect_peer(&rb, peer_fd) == 0, "raw client speaks on it");
		serial = rawbus_call_peer(&rb, "Export", "ha{sv}", body, 16, claimed, NULL, 0);
		r = rawbus_wait_reply(&rb, (uint32_t)serial, err, sizeof(err), 5000);
		/* A named error, a dropped peer, or (when the header promises fds that never
		 * come) a message that stays incomplete and is never dispatched. */
		tap_ok(r == 1 || r == -ECONNRESET || r == -ETIMEDOUT,
		       "peer Export of fd index 0 claiming %u fd(s), sending none: %s", claimed,
		       r == 1		  ? err
		       : r == -ECONNRESET ? "the daemon dropped the peer"
					  : "never dispatched");
		rawbus_close(&rb);
		expect_error(-EINVAL, &SD_BUS_ERROR_MAKE_CONST(DB_ERROR_INVALID_ARGUMENT, "-"),
			     DB_ERROR_INVALID_ARGUMENT, "daemon still serving after the raw peer");
	}
}

int main(void)
{
	struct dmabroker *victim;
	struct fixture f;
	struct dmabroker_alloc_spec spec = {.size = VICTIM_SIZE, .name = "victim"};
	sd_bus_error error = SD_BUS_ERROR_NULL;
	char long_name[80], long_reason[1024], victim_path[128];
	const char *path;
	int r, baseline;

	r = fixture_start(&f, NULL);
	tap_require(r == 0, "start a private bus and the daemon");
	baseline = fixture_daemon_fds(&f);
	tap_require(dmabroker_connect(&victim, NULL, 0) == 0, "victim connects");
	tap_require(dmabroker_register(victim, "cpu", true, "victim", NULL) == 0,
		    "victim registers");
	tap_require(dmabroker_allocate(victim, &spec, sizeof(spec), &victim_buf) == 0,
		    "victim allocates");
	tap_require(dmabroker_buffer_map(victim_buf, (void **)&victim_map) == 0, "victim maps");
	memset(victim_map, VICTIM_BYTE, VICTIM_SIZE);
	snprintf(victim_path, sizeof(victim_path), "%s", dmabroker_buffer_get_path(victim_buf));
	attacker = inspect_bus();
	tap_require(attacker != NULL, "attacker connects");

	call_bad("Allocate", DB_ERROR_NOT_REGISTERED, "Allocate before Register", "a{sv}", 1,
		 "size", "t", (uint64_t)4096);
	call_bad("Register", DB_ERROR_INVALID_ARGUMENT, "Register with an unknown role", "a{sv}", 1,
		 "role", "s", "root");
	tap_require(sd_bus_call_method(attacker, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
				       "Register", &error, NULL, "a{sv}", 0) >= 0,
		    "attacker registers");
	call_bad("Register", DB_ERROR_INVALID_ARGUMENT, "Register twice", "a{sv}", 0);
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	memset(long_reason, 'r', sizeof(long_reason) - 1);
	long_reason[sizeof(long_reason) - 1] = '\0';

	allocate_bad("size 0", DB_ERROR_INVALID_ARGUMENT, "a{sv}", 1, "size", "t", (uint64_t)0);
	allocate_bad("size 1<<63", DB_ERROR_QUOTA_EXCEEDED, "a{sv}", 1, "size", "t",
		     (uint64_t)1 << 63);
	allocate_bad("size 2^64-1", DB_ERROR_QUOTA_EXCEEDED, "a{sv}", 1, "size", "t", UINT64_MAX);
	allocate_bad("4G x 4G XRGB8888 (overflows)", DB_ERROR_INVALID_ARGUMENT, "a{sv}", 3, "width",
		     "u", UINT32_MAX, "height", "u", UINT32_MAX, "fourcc", "u",
		     DRM_FORMAT_XRGB8888);
	allocate_bad("a stride over 32 bits (overflows)", DB_ERROR_INVALID_ARGUMENT, "a{sv}", 3,
		     "width", "u", 0x40000000u, "height", "u", 1u, "fourcc", "u",
		     DRM_FORMAT_XRGB8888);
	allocate_bad("65536 x 65536 XRGB8888 (16 GiB)", DB_ERROR_QUOTA_EXCEEDED, "a{sv}", 3,
		     "width", "u", 65536u, "height", "u", 65536u, "fourcc", "u",
		     DRM_FORMAT_XRGB8888);
	allocate_bad("unknown fourcc", DB_ERROR_UNSUPPORTED, "a{sv}", 3, "width", "u", 64u,
		     "height", "u", 64u, "fourcc", "u", 0x20202020u);
	allocate_bad("a tiled modifier", DB_ERROR_UNSUPPORTED, "a{sv}", 4, "width", "u", 64u,
		     "height", "u", 64u, "fourcc", "u", DRM_FORMAT_XRGB8888, "modifier", "t",
		     I915_FORMAT_MOD_X_TILED);
	allocate_bad("odd width for NV12", DB_ERROR_INVALID_ARGUMENT, "a{sv}", 3, "width", "u", 63u,
		     "height", "u", 64u, "fourcc", "u", DRM_FORMAT_NV12);
	allocate_bad("size and an image at once", DB_ERROR_INVALID_ARGUMENT, "a{sv}", 2, "size",
		     "t", (uint64_t)4096, "width", "u", 64u);
	allocate_bad("an empty spec", DB_ERROR_INVALID_ARGUMENT, "a{sv}", 0);
	allocate_bad("an unknown key", DB_ERROR_INVALID_ARGUMENT, "a{sv}", 1, "colour", "s", "red");
	allocate_bad("size as a string", DB_ERROR_INVALID_ARGUMENT, "a{sv}", 1, "size", "s",
		     "4096");
	allocate_bad("the wrong signature", "org.freedesktop.DBus.Error.InvalidArgs", "s", "4096");
	allocate_bad("an unknown backend", DB_ERROR_INVALID_ARGUMENT, "a{sv}", 2, "size", "t",
		     (uint64_t)4096, "backend", "s", "floppy");
	allocate_bad("a name over MaxNameLength", DB_ERROR_INVALID_ARGUMENT, "a{sv}", 2, "size",
		     "t", (uint64_t)4096, "name", "s", long_name);
	allocate_bad("a name with a newline", DB_ERROR_INVALID_ARGUMENT, "a{sv}", 2, "size", "t",
		     (uint64_t)4096, "name", "s", "a\nb");
	call_bad("AllocateMany", DB_ERROR_INVALID_ARGUMENT, "AllocateMany of 0", "ua{sv}", 0u, 1,
		 "size", "t", (uint64_t)4096);
	call_bad("AllocateMany", DB_ERROR_INVALID_ARGUMENT,
		 "AllocateMany of 17 (over the bus's "
		 "16-fd cap)",
		 "ua{sv}", 17u, 1, "size", "t", (uint64_t)4096);

	test_export_kinds();
	test_closed_fd(f.address);

	{
		uint8_t short_token[3] = {1, 2, 3};

		call_bad("Import", DB_ERROR_INVALID_ARGUMENT, "Import of a 3-byte token", "ay", 3,
			 short_token[0], short_token[1], short_token[2]);
	}
	call_bad("Share", DB_ERROR_PERMISSION_DENIED, "Share of another client's buffer", "oa{sv}",
		 victim_path, 0);
	call_bad("Release", DB_ERROR_PERMISSION_DENIED, "Release of another client's buffer", "o",
		 victim_path);
	call_bad("Release", DB_ERROR_NOT_FOUND, "Release of a buffer that does not exist", "o",
		 "/org/dmabroker/Broker1/buffer/999999");
	call_bad("Release", DB_ERROR_NOT_FOUND, "Release of a malformed buffer path", "o",
		 "/org/dmabroker/Broker1/buffer/01");
	{
		sd_bus_message *reply = NULL;
		const char *own;
		int fd;

		tap_require(sd_bus_call_method(attacker, DB_BUS_NAME, DB_OBJECT_PATH,
					       DB_IFACE_BROKER, "Allocate", &error, &reply, "a{sv}",
					       1, "size", "t", (uint64_t)4096) >= 0 &&
				    sd_bus_message_read(reply, "oh", &own, &fd) >= 0,
			    "attacker allocates a buffer of its own");
		call_bad("Share", DB_ERROR_INVALID_ARGUMENT, "Share with an expiry over 30 days",
			 "oa{sv}", own, 1, "expires_in_ms", "t", UINT64_MAX);
		call_bad("Share", DB_ERROR_INVALID_ARGUMENT, "Share with uid as a string", "oa{sv}",
			 own, 1, "uid", "s", "0");
		call_bad("Revoke", DB_ERROR_INVALID_ARGUMENT, "Revoke with a 1 KiB reason", "os",
			 own, long_reason);
		sd_bus_message_unref(reply);
	}

	/* The victim was served throughout and still is. */
	path = dmabroker_buffer_get_path(victim_buf);
	tap_ok(strcmp(path, victim_path) == 0 && victim_intact(),
	       "the victim's buffer kept its %u bytes through %d bad requests", VICTIM_SIZE,
	       n_checked);
	{
		struct dmabroker_token t;

		tap_is(dmabroker_share(victim_buf, NULL, 0, &t), 0, "the victim is still served");
	}
	sd_bus_flush_close_unref(attacker);
	dmabroker_release(victim_buf);
	dmabroker_disconnect(victim);
	tap_ok(fixture_wait_clients(&f, 0, 5000), "every client is gone");
	tap_is(fixture_daemon_fds(&f), baseline, "the daemon's fd count is back to its baseline");
	tap_is(fixture_stop(&f), 0, "the daemon exits cleanly on SIGTERM");
	return tap_done();
}
