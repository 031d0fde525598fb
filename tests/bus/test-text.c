// SPDX-License-Identifier: MIT
/*
 * Client text on the bus: every string argument of the contract (tests/common/text-args.h,
 * which tests/unit/test-text-contract holds to the XML) gets a line break, a terminal escape,
 * a C1 control, a bidi override and an overlong value; every a{sv} gets such keys; every
 * object path an overlong one. Each is InvalidArgument with a message that names the
 * argument and holds none of the bytes, and the daemon's log has no line it did not write.
 * Bytes that are not UTF-8 cannot cross dbus-daemon: they go over a peer connection.
 * And the collection that crashed the daemon: one participant at the integer edges.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <drm_fourcc.h>

#include "bus-util.h"
#include "fixture.h"
#include "macros.h"
#include "protocol.h"
#include "rawbus.h"
#include "tap.h"
#include "text-args.h"

#define FORGED "DMABROKER-FORGED"

static struct fixture f;
static char log_path[512];
static char buffer_path[128], collection_path[128];
static int dmabuf_fd = -1;

static struct {
	const char *what;
	const char *value;
} hostile[] = {
	{"a line break", "x\n" FORGED ": a line the daemon never wrote"},
	{"a terminal escape", "x\x1b[2J\x1b[31mred"},
	{"a C1 control (NEL)", "x\xc2\x85" FORGED},
	{"a bidi override", "x\xe2\x80\xaey"},
	{"an overlong string", NULL}, /* filled in: 300 bytes, over every bound */
};
static char overlong[300 + 1];

/* The daemon's stderr (its log) into a file of the fixture's directory. */
static void log_to_file(void)
{
	int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

	if (fd >= 0)
		dup2(fd, STDERR_FILENO);
}

/* Each method's in-arguments, in order, as "type:name". */
static const struct {
	const char *method;
	const char *args[3];
} shapes[] = {
	{"Register", {"a{sv}:info"}},
	{"Allocate", {"a{sv}:spec"}},
	{"AllocateWithMemfd", {"h:memfd", "a{sv}:spec"}},
	{"AllocateMany", {"u:count", "a{sv}:spec"}},
	{"Export", {"h:fd", "a{sv}:info"}},
	{"Share", {"o:buffer", "a{sv}:options"}},
	{"Release", {"o:buffer"}},
	{"Reacquire", {"o:buffer"}},
	{"Move", {"o:buffer"}},
	{"Revoke", {"o:buffer", "s:reason"}},
	{"Subscribe", {"a{sv}:options"}},
	{"CreateCollection", {"a{sv}:options"}},
	{"CreateCollectionToken", {"o:collection"}},
	{"SetCollectionConstraints", {"o:collection", "a{sv}:constraints"}},
	{"CommitCollection", {"o:collection"}},
	{"WaitCollection", {"o:collection"}},
	{"GetCollectionBuffers", {"o:collection", "u:first", "u:count"}},
	{"LeaveCollection", {"o:collection"}},
	{"CreateStream", {"o:collection", "a{sv}:options"}},
	{"CreateStreamToken", {"o:stream"}},
	{"JoinStream", {"s:name", "a{sv}:options"}},
	{"JoinStreamWithToken", {"ay:token", "a{sv}:options"}},
	{"LeaveStream", {"o:stream"}},
	{"EndStream", {"o:stream", "s:reason"}},
	{"EndStreamLink", {"o:stream", "u:consumer", "s:reason"}},
	{"TakeStreamLink", {"o:stream", "u:consumer"}},
};

/* A memfd as AllocateWithMemfd's contract wants it, for the calls that must get past it. */
static int make_memfd(void)
{
	int fd = memfd_create("text-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0 || ftruncate(fd, 4096) < 0 || fallocate(fd, 0, 0, 4096) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) < 0)
		return -1;
	return fd;
}

/* Device-like strings start as a device node does, so only the hostile part is wrong. */
static void text_value(const char *key, const char *value, char *out, size_t len)
{
	bool device = key && (strcmp(key, "devices") == 0 || strcmp(key, "device") == 0);

	snprintf(out, len, "%s%s", device ? "/dev/" : "", value);
}

static int append_dict(sd_bus_message *m, const char *method, const struct text_arg *t,
		       const char *value)
{
	char v[sizeof(overlong) + 16];
	int r;

	r = sd_bus_message_open_container(m, 'a', "{sv}");
	/* What makes the rest of the call valid. */
	if (r >= 0 && (strcmp(method, "Allocate") == 0 || strcmp(method, "AllocateMany") == 0 ||
		       strcmp(method, "AllocateWithMemfd") == 0))
		r = sd_bus_message_append(m, "{sv}", "size", "t", (uint64_t)4096);
	if (r >= 0 && strcmp(method, "SetCollectionConstraints") == 0)
		r = sd_bus_message_append(m, "{sv}", "min-size", "t", (uint64_t)4096);
	if (r >= 0 && t && strcmp(t->type, "a{sv}") == 0)
		r = sd_bus_message_append(m, "{sv}", value, "s", "x");
	else if (r >= 0 && t && strcmp(t->type, "s") == 0) {
		text_value(t->key, value, v, sizeof(v));
		r = sd_bus_message_append(m, "{sv}", t->key, "s", v);
	} else if (r >= 0 && t && strcmp(t->type, "as") == 0) {
		text_value(t->key, value, v, sizeof(v));
		r = sd_bus_message_append(m, "{sv}", t->key, "as", 1, v);
	}
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	return r;
}

/*
 * Calls t's method with value in t's place and valid values elsewhere. 0 with *e set as the
 * daemon answered, 1 when the call cannot be made here (no dma-buf to export).
 */
static int call_row(sd_bus *bus, const struct text_arg *t, const char *value, sd_bus_error *e)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	_cleanup_(closep) int memfd = -1;
	size_t s;
	int r;

	for (s = 0; s < ARRAY_SIZE(shapes); s++)
		if (strcmp(shapes[s].method, t->method) == 0)
			break;
	if (s == ARRAY_SIZE(shapes)) {
		tap_diag("  no shape for %s: add it to test-text.c", t->method);
		return -ENOENT;
	}
	r = sd_bus_message_new_method_call(bus, &m, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					   t->method);
	for (size_t i = 0; r >= 0 && i < ARRAY_SIZE(shapes[s].args) && shapes[s].args[i]; i++) {
		const char *a = shapes[s].args[i], *name = strchr(a, ':') + 1;
		bool target = strcmp(name, t->arg) == 0;

		if (strncmp(a, "a{sv}:", 6) == 0) {
			r = append_dict(m, t->method, target ? t : NULL, value);
		} else if (a[0] == 'o') {
			const char *path =
				strcmp(name, "buffer") == 0 ? buffer_path : collection_path;

			r = sd_bus_message_append_basic(m, 'o', target ? value : path);
		} else if (a[0] == 's') {
			r = sd_bus_message_append_basic(m, 's', target ? value : "a reason");
		} else if (strcmp(a, "ay:token") == 0) {
			static const uint8_t token[16];

			r = sd_bus_message_append_array(m, 'y', token, sizeof(token));
		} else if (a[0] == 'u') {
			r = sd_bus_message_append(m, "u", strcmp(name, "first") == 0 ? 0 : 1);
		} else if (strcmp(name, "memfd") == 0) {
			memfd = make_memfd();
			r = sd_bus_message_append(m, "h", memfd);
		} else {
			if (dmabuf_fd < 0)
				return 1;
			r = sd_bus_message_append(m, "h", dmabuf_fd);
		}
	}
	if (r < 0)
		return r;
	r = sd_bus_call(bus, m, 5 * 1000000ull, e, NULL);
	return r < 0 && !sd_bus_error_is_set(e) ? r : 0;
}

/* What the daemon says back is text: no control characters, none of the hostile bytes. */
static bool clean(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; s && *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return false;
	return s && !strstr(s, "\xc2\x85") && !strstr(s, "\xe2\x80\xae");
}

/* A buffer and a collection the calls may name (again, if a call wrongly took them). */
static void make_state(sd_bus *bus)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL, *reply2 = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	const char *path;
	int fd, r;

	r = broker_call(bus, "Allocate", &e, &reply, "a{sv}", 1, "size", "t", (uint64_t)4096);
	tap_require(r >= 0 && sd_bus_message_read(reply, "oh", &path, &fd) > 0,
		    "allocate a buffer to name (%s)", e.message ? e.message : "ok");
	snprintf(buffer_path, sizeof(buffer_path), "%s", path);
	if (dmabuf_fd < 0) {
		int dmabuf = 0;

		/* The default backend's buffer is a dma-buf where there is one: Export takes
		 * it back. */
		if (sd_bus_message_enter_container(reply, 'a', "{sv}") > 0)
			while (sd_bus_message_enter_container(reply, 'e', "sv") > 0) {
				const char *key;

				sd_bus_message_read(reply, "s", &key);
				if (strcmp(key, "dmabuf") == 0)
					sd_bus_message_read(reply, "v", "b", &dmabuf);
				else
					sd_bus_message_skip(reply, "v");
				sd_bus_message_exit_container(reply);
			}
		if (dmabuf)
			dmabuf_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	}
	r = broker_call(bus, "CreateCollection", &e, &reply2, "a{sv}", 0);
	tap_require(r >= 0 && sd_bus_message_read(reply2, "o", &path) > 0,
		    "create a collection to name (%s)", e.message ? e.message : "ok");
	snprintf(collection_path, sizeof(collection_path), "%s", path);
	sd_bus_error_free(&e);
}

static sd_bus *registered(const char *name)
{
	sd_bus *bus = inspect_bus();
	sd_bus_error e = SD_BUS_ERROR_NULL;

	tap_require(bus && broker_call(bus, "Register", &e, NULL, "a{sv}", 1, "name", "s", name) >=
				    0,
		    "register %s (%s)", name, e.message ? e.message : "ok");
	return bus;
}

static void test_every_string(void)
{
	sd_bus *bus = registered("text");
	unsigned n = 0, bad = 0, skipped = 0;

	make_state(bus);
	for (size_t i = 0; i < ARRAY_SIZE(text_args); i++) {
		const struct text_arg *t = &text_args[i];
		bool path = strcmp(t->type, "o") == 0;

		for (size_t h = 0; h < ARRAY_SIZE(hostile); h++) {
			sd_bus_error e = SD_BUS_ERROR_NULL;
			/* A fresh connection for Register: a registered one is refused first. */
			sd_bus *caller = strcmp(t->method, "Register") == 0 ? inspect_bus() : bus;
			char opath[sizeof(overlong) + 64];
			const char *value = hostile[h].value;
			bool ok;
			int r;

			/* An object path holds [A-Za-z0-9_/] only (sd-bus and dbus-daemon see to
			 * that): what a client can make of it is a long one. */
			if (path && value)
				continue;
			if (path) {
				snprintf(opath, sizeof(opath), "%s/%s", DB_OBJECT_PATH, overlong);
				value = opath;
			}
			r = call_row(caller, t, value, &e);
			if (r == 1) {
				skipped++;
				if (caller != bus)
					sd_bus_flush_close_unref(caller);
				continue;
			}
			n++;
			ok = r == 0 && sd_bus_error_has_name(&e, DB_ERROR_INVALID_ARGUMENT) &&
			     strstr(e.message, t->key ? t->key : t->arg) && clean(e.message);
			if (!ok && bad++ < 12)
				tap_diag("  %s(%s%s%s) with %s: %s: %s", t->method, t->arg,
					 t->key ? ": " : "", t->key ? t->key : "", hostile[h].what,
					 r < 0	  ? strerror(-r)
					 : e.name ? e.name
						  : "accepted",
					 e.message && clean(e.message) ? e.message
					 : e.message ? "(the message holds raw bytes)"
						     : "");
			/* Whatever a wrongly accepted call took, the next row has it again. */
			if (r == 0 && !sd_bus_error_is_set(&e) && caller == bus)
				make_state(bus);
			sd_bus_error_free(&e);
			if (caller != bus)
				sd_bus_flush_close_unref(caller);
		}
	}
	tap_ok(bad == 0,
	       "%u hostile strings in %zu client strings of the contract: each InvalidArgument "
	       "naming the argument, without the bytes (%u not)",
	       n, ARRAY_SIZE(text_args), bad);
	if (skipped)
		tap_diag("  %u calls skipped: no dma-buf to export here", skipped);
	sd_bus_flush_close_unref(bus);
}

/* Marshals (o path, s text) for a raw call. */
static size_t body_os(uint8_t *out, const char *path, const char *text)
{
	size_t len = 0;
	uint32_t n;

	n = (uint32_t)strlen(path);
	memcpy(out, &n, 4);
	memcpy(out + 4, path, n + 1);
	len = 4 + n + 1;
	while (len % 4)
		out[len++] = 0;
	n = (uint32_t)strlen(text);
	memcpy(out + len, &n, 4);
	memcpy(out + len + 4, text, n + 1);
	return len + 4 + n + 1;
}

/* Marshals an a{sv} of one entry, key => (s) value, for a raw call. */
static size_t body_dict_s(uint8_t *out, const char *key, const char *value)
{
	uint32_t n, array_len;
	size_t len = 8; /* the length, then padding to the first entry's 8 */

	memset(out, 0, 8);
	n = (uint32_t)strlen(key);
	memcpy(out + len, &n, 4);
	memcpy(out + len + 4, key, n + 1);
	len += 4 + n + 1;
	memcpy(out + len, "\1s", 3); /* the variant's signature: "s" */
	len += 3;
	while (len % 4)
		out[len++] = 0;
	n = (uint32_t)strlen(value);
	memcpy(out + len, &n, 4);
	memcpy(out + len + 4, value, n + 1);
	len += 4 + n + 1;
	array_len = (uint32_t)(len - 8);
	memcpy(out, &array_len, 4);
	return len;
}

/* Sends Revoke(buffer_path, reason) raw; the reply's error name in err. */
static int raw_revoke(struct rawbus *rb, const char *reason, char *err, size_t len, int timeout_ms)
{
	uint8_t body[512];
	int serial;

	serial = rawbus_call_peer(rb, "Revoke", "os", body, body_os(body, buffer_path, reason), 0,
				  NULL, 0);
	if (serial < 0)
		return serial;
	return rawbus_wait_reply(rb, (uint32_t)serial, err, len, timeout_ms);
}

/*
 * Straight to the daemon's sd-bus, over a peer connection: text that dbus-daemon would not
 * pass on. A control character gets the same answer as on the bus; bytes that are not UTF-8
 * sd-bus itself refuses (it drops the message: no answer), and nothing of them is stored.
 */
static void test_peer(void)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus *bus = registered("raw-text");
	sd_bus_error e = SD_BUS_ERROR_NULL;
	struct rawbus rb;
	char err[256] = "";
	int fd, r;

	make_state(bus);
	tap_require(broker_call(bus, "OpenPeer", &e, &reply, NULL) >= 0 &&
			    sd_bus_message_read(reply, "h", &fd) > 0,
		    "open a peer connection (%s)", e.message ? e.message : "ok");
	fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	tap_require(rawbus_connect_peer(&rb, fd) == 0, "speak raw D-Bus on it");
	/*
	 * A call that arrives in the same read as the authentication's BEGIN waits in sd-bus's
	 * buffer until the peer sends more: peer.c's peer_run() does not run sd_bus_process()
	 * again when it returns > 0. Reported; until then the call comes after the BEGIN.
	 */
	usleep(200 * 1000);
	r = raw_revoke(&rb, "x\n" FORGED ": over the peer", err, sizeof(err), 5000);
	tap_ok(r == 1 && strcmp(err, DB_ERROR_INVALID_ARGUMENT) == 0,
	       "a reason with a line break is InvalidArgument on a peer too (%d %s)", r, err);
	err[0] = '\0';
	r = raw_revoke(&rb, "not \xff\xfe UTF-8", err, sizeof(err), 1000);
	tap_ok(r == -ETIMEDOUT || r == -ECONNRESET ||
		       (r == 1 && strcmp(err, DB_ERROR_INVALID_ARGUMENT) == 0),
	       "a reason that is not UTF-8 is refused (%d %s)", r, err);
	for (int k = 0; k < 2; k++) {
		uint8_t body[256];
		size_t len = k ? body_dict_s(body, "name", "not \xff UTF-8")
			       : body_dict_s(body, "n\xc3\x28me", "x");
		int serial = rawbus_call_peer(&rb, "Allocate", "a{sv}", body, len, 0, NULL, 0);

		err[0] = '\0';
		r = serial < 0 ? serial
			       : rawbus_wait_reply(&rb, (uint32_t)serial, err, sizeof(err), 1000);
		tap_ok(r == -ETIMEDOUT || r == -ECONNRESET ||
			       (r == 1 && strcmp(err, DB_ERROR_INVALID_ARGUMENT) == 0),
		       "an a{sv} %s that is not UTF-8 is refused (%d %s)", k ? "value" : "key", r,
		       err);
	}
	rawbus_close(&rb);
	tap_ok(buffer_attachments(bus, buffer_path) == 1, "... and the buffer is not revoked");
	sd_bus_flush_close_unref(bus);
}

/*
 * The crash: one participant whose image is 2^32 - 1 pixels wide needs a row past the 32-bit
 * stride, which no participant set; the refusal named participant -1 and read the heap in
 * front of the participants (a segfault, or heap bytes logged and a WaitCollection never
 * answered because sd-bus would not send them).
 */
static void test_edge_collection(void)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL, *list = NULL;
	sd_bus *bus = registered("edge");
	sd_bus_error e = SD_BUS_ERROR_NULL;
	const uint32_t xr24 = DRM_FORMAT_XRGB8888;
	const char *path;
	char col[128];
	int r;

	tap_require(broker_call(bus, "CreateCollection", &e, &reply, "a{sv}", 1, "participants",
				"u", 1) >= 0 &&
			    sd_bus_message_read(reply, "o", &path) > 0,
		    "create a one-participant collection");
	snprintf(col, sizeof(col), "%s", path);
	r = broker_call(bus, "SetCollectionConstraints", &e, NULL, "oa{sv}", col, 3, "fourccs",
			"au", 1, xr24, "width", "u", UINT32_MAX, "height", "u", 1);
	tap_ok(r >= 0, "constraints at the integer edge are taken (%s)",
	       e.message ? e.message : "ok");
	sd_bus_error_free(&e);
	r = broker_call(bus, "WaitCollection", &e, NULL, "o", col);
	tap_ok(r < 0 && sd_bus_error_has_name(&e, DB_ERROR_UNSUPPORTED) && clean(e.message) &&
		       strstr(e.message, "stride") && !strstr(e.message, "(null)"),
	       "WaitCollection answers Unsupported in clean text: %s",
	       e.message && clean(e.message) ? e.message
	       : e.name			     ? e.name
					     : "no answer");
	sd_bus_error_free(&e);
	r = broker_call(bus, "ListCollections", &e, &list, NULL);
	tap_ok(r >= 0, "the daemon still answers (%s)", e.message ? e.message : "ok");
	sd_bus_error_free(&e);
	sd_bus_flush_close_unref(bus);
}

/* Nothing a client sent became a line of the log, or put a control character in one. */
static void test_log(void)
{
	static char text[1 << 20];
	unsigned forged = 0, controls = 0;
	size_t len = 0;
	FILE *log = fopen(log_path, "re");

	tap_require(log != NULL, "read the daemon's log");
	len = fread(text, 1, sizeof(text) - 1, log);
	fclose(log);
	text[len] = '\0';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];

		if ((i == 0 || text[i - 1] == '\n') && strncmp(text + i, FORGED, 7) == 0)
			forged++;
		if ((c < 0x20 && c != '\n') || c == 0x7f || c >= 0x80)
			controls++;
	}
	tap_diag("  the log has %zu bytes", len);
	tap_ok(len > 0 && forged == 0, "no forged line in the daemon's log (%u)", forged);
	tap_ok(controls == 0, "no control character or raw high byte in it (%u)", controls);
}

int main(void)
{
	static const char *const args[] = {"--verbose", NULL};
	int fd;

	memset(overlong, 'a', sizeof(overlong) - 1);
	hostile[ARRAY_SIZE(hostile) - 1].value = overlong;
	snprintf(log_path, sizeof(log_path), "/tmp/dmabroker-text-log-XXXXXX");
	fd = mkstemp(log_path);
	tap_require(fd >= 0, "make the log file");
	close(fd);
	fixture_daemon_args = args;
	fixture_daemon_setup = log_to_file;
	tap_require(fixture_start(&f, "[Daemon]\nCollectionDeadlineSec=2\n") == 0,
		    "start bus and daemon");

	test_every_string();
	test_peer();
	test_edge_collection();
	tap_is(fixture_stop(&f), 0, "the daemon exits cleanly on SIGTERM");
	test_log();
	unlink(log_path);
	if (dmabuf_fd >= 0)
		close(dmabuf_fd);
	return tap_done();
}
