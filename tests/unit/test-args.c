// SPDX-License-Identifier: MIT
/* The argument decoders of args.c on messages built here, without a bus. */
#include <errno.h>
#include <sys/socket.h>
#include <drm_fourcc.h>

#include "args.h"
#include "macros.h"
#include "protocol.h"
#include "tap.h"
#include "text.h"

static sd_bus *bus;

/* A method call holding one a{sv} built by fill, sealed and rewound for reading. */
static sd_bus_message *dict(int (*fill)(sd_bus_message *m, const void *arg), const void *arg)
{
	sd_bus_message *m = NULL;
	int r;

	r = sd_bus_message_new_method_call(bus, &m, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					   "X");
	if (r >= 0)
		r = fill(m, arg);
	if (r >= 0)
		r = sd_bus_message_seal(m, 1, 0);
	if (r >= 0)
		r = sd_bus_message_rewind(m, 1);
	if (r < 0)
		tap_require(false, "build a message: %s", strerror(-r));
	return m;
}

static int fill_constraints(sd_bus_message *m, const void *arg)
{
	static const uint32_t fourccs[] = {DRM_FORMAT_XRGB8888, DRM_FORMAT_NV12};
	const char *device = arg;
	int r;

	r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'e', "sv");
	if (r >= 0)
		r = sd_bus_message_append_basic(m, 's', "fourccs");
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'v', "au");
	if (r >= 0)
		r = sd_bus_message_append_array(m, 'u', fourccs, sizeof(fourccs));
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r >= 0)
		r = sd_bus_message_append(m, "{sv}{sv}{sv}", "width", "u", 640, "height", "u", 480,
					  "backends", "as", 2, "memfd", "dma-heap:system");
	if (r >= 0 && device)
		r = sd_bus_message_append(m, "{sv}", "device", "s", device);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	return r;
}

static bool clean(const char *s)
{
	return s && db_text_check(s, 1024, DB_TEXT_ASCII, NULL) == 0;
}

static void test_constraints(void)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = dict(fill_constraints, "/dev/video0");
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *bad = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	struct db_constraint_args a, copy;
	int r;

	tap_is(db_args_constraints(m, &a, &error), 0, "constraints decode");
	tap_ok(a.c.n_fourccs == 2 && a.c.fourccs && a.c.fourccs[1] == DRM_FORMAT_NV12 &&
		       a.c.width == 640 && a.c.n_backends == 2 &&
		       strcmp(a.c.backends[1], "dma-heap:system") == 0 &&
		       strcmp(a.device, "/dev/video0") == 0,
	       "... with their sets, sizes, backends and device");
	/* The sets must be the returned struct's, not the decoder's frame's. */
	tap_ok(a.c.fourccs == a.fourccs && a.c.modifiers == NULL &&
		       a.c.backends == (const char *const *)a.backends,
	       "... and the sets point into the returned struct");
	copy = a;
	db_constraint_args_relink(&copy);
	tap_ok(copy.c.fourccs == copy.fourccs, "relink points a copy's sets into the copy");
	db_constraint_args_clear(&a);

	bad = dict(fill_constraints, "/dev/video0\n<0>forged");
	r = db_args_constraints(bad, &a, &error);
	tap_ok(r < 0 && sd_bus_error_has_name(&error, DB_ERROR_INVALID_ARGUMENT) &&
		       strstr(error.message, "'device'") && clean(error.message),
	       "a device with a line break is InvalidArgument naming it (%s)", error.message);
	sd_bus_error_free(&error);
}

static int fill_register(sd_bus_message *m, const void *arg)
{
	const char *const *v = arg;

	return sd_bus_message_append(m, "a{sv}", 3, "role", "s", v[0], "name", "s", v[1], "devices",
				     "as", 1, v[2]);
}

static void test_register(void)
{
	static const struct {
		const char *values[3];
		const char *want; /* NULL: accepted; else in the message */
	} cases[] = {
		{{"gpu", "cam", "/dev/dri/renderD128"}, NULL},
		{{"root", "cam", "/dev/null"}, "role 'root'"},
		{{"gpu", "cam", "/etc/passwd"}, "not a device node"},
		{{"gpu", "cam", "/dev/../etc/shadow"}, "not a device node"},
		{{"gpu", "cam", "/dev/./video0"}, "not a device node"},
		{{"gpu", "cam", "/dev/dri/.."}, "not a device node"},
		{{"gpu", "cam", "/etc/\x1b[2J"}, "'devices'"},
		{{"gpu", "cam", "/dev/x\nforged"}, "'devices'"},
		{{"gpu", "c\xc2\x85m", "/dev/null"}, "'name'"},
		{{"gpu\xe2\x80\xae", "cam", "/dev/null"}, "'role'"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *m =
			dict(fill_register, cases[i].values);
		sd_bus_error error = SD_BUS_ERROR_NULL;
		struct db_register_args a;
		int r = db_args_register(m, &a, &error);

		if (!cases[i].want) {
			tap_ok(r == 0 && a.devices &&
				       strcmp(a.devices[0], "/dev/dri/renderD128") == 0,
			       "Register case %zu is accepted", i);
			db_register_args_clear(&a);
		} else {
			tap_ok(r < 0 && sd_bus_error_has_name(&error, DB_ERROR_INVALID_ARGUMENT) &&
				       strstr(error.message, cases[i].want) && clean(error.message),
			       "Register case %zu: %s", i,
			       error.message ? error.message : "accepted");
		}
		sd_bus_error_free(&error);
	}
}

static int fill_collection(sd_bus_message *m, const void *arg)
{
	return sd_bus_message_append(m, "a{sv}", 2, "name", "s", (const char *)arg, "participants",
				     "u", 2);
}

static void test_create_collection(void)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *ok = dict(fill_collection, "cam-pool");
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *bad = dict(fill_collection, "x\ty");
	sd_bus_error error = SD_BUS_ERROR_NULL;
	struct db_collection_args a;
	int r;

	tap_ok(db_args_create_collection(ok, &a, &error) == 0 && strcmp(a.name, "cam-pool") == 0 &&
		       a.participants == 2,
	       "CreateCollection's options decode");
	r = db_args_create_collection(bad, &a, &error);
	tap_ok(r < 0 && strstr(error.message, "'name'") && clean(error.message),
	       "a name with a tab is refused (%s)", error.message);
	sd_bus_error_free(&error);
}

int main(void)
{
	int sv[2];

	/* An unstarted peer connection is enough to build and read messages. */
	tap_require(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0 &&
			    sd_bus_new(&bus) >= 0 && sd_bus_set_fd(bus, sv[0], sv[0]) >= 0 &&
			    sd_bus_set_anonymous(bus, 1) >= 0 && sd_bus_start(bus) >= 0,
		    "a bus object to build messages on");
	test_constraints();
	test_register();
	test_create_collection();
	/* Nothing was sent and nobody answers the authentication: no flush, which would wait. */
	close(sv[1]);
	sd_bus_close_unref(bus);
	return tap_done();
}
