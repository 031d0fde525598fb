// SPDX-License-Identifier: MIT
/*
 * data/org.dmabroker.Broker1.xml is the contract: the live daemon must serve exactly its
 * interfaces (methods with argument names, types and directions, signals, properties with
 * types, access and change annotations), on the broker, a buffer and a client object.
 */
#include <gio/gio.h>
#include <string.h>

#include "bus-util.h"
#include "dmabroker.h"
#include "fixture.h"
#include "protocol.h"
#include "tap.h"

static void describe_args(GString *s, GDBusArgInfo **args, const char *dir)
{
	for (int i = 0; args && args[i]; i++)
		g_string_append_printf(s, " %s:%s:%s", dir, args[i]->name, args[i]->signature);
}

static void describe_annotations(GString *s, GDBusAnnotationInfo **a)
{
	for (int i = 0; a && a[i]; i++)
		g_string_append_printf(s, " @%s=%s", a[i]->key, a[i]->value);
}

static gint compare_lines(gconstpointer a, gconstpointer b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One line per member, sorted: a canonical text of an interface. */
static char *describe(GDBusInterfaceInfo *iface)
{
	g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
	GString *out = g_string_new(NULL);

	for (int i = 0; iface->methods && iface->methods[i]; i++) {
		GString *s = g_string_new(NULL);

		g_string_append_printf(s, "method %s", iface->methods[i]->name);
		describe_args(s, iface->methods[i]->in_args, "in");
		describe_args(s, iface->methods[i]->out_args, "out");
		describe_annotations(s, iface->methods[i]->annotations);
		g_ptr_array_add(lines, g_string_free(s, FALSE));
	}
	for (int i = 0; iface->signals && iface->signals[i]; i++) {
		GString *s = g_string_new(NULL);

		g_string_append_printf(s, "signal %s", iface->signals[i]->name);
		describe_args(s, iface->signals[i]->args, "arg");
		describe_annotations(s, iface->signals[i]->annotations);
		g_ptr_array_add(lines, g_string_free(s, FALSE));
	}
	for (int i = 0; iface->properties && iface->properties[i]; i++) {
		GDBusPropertyInfo *p = iface->properties[i];
		GString *s = g_string_new(NULL);

		g_string_append_printf(
			s, "property %s %s %s", p->name, p->signature,
			p->flags == G_DBUS_PROPERTY_INFO_FLAGS_READABLE ? "read" : "readwrite");
		describe_annotations(s, p->annotations);
		g_ptr_array_add(lines, g_string_free(s, FALSE));
	}
	g_ptr_array_sort(lines, compare_lines);
	for (guint i = 0; i < lines->len; i++)
		g_string_append_printf(out, "%s\n", (char *)g_ptr_array_index(lines, i));
	return g_string_free(out, FALSE);
}

static char *introspect(sd_bus *bus, const char *path)
{
	sd_bus_message *reply = NULL;
	const char *xml;
	char *copy = NULL;

	if (sd_bus_call_method(bus, DB_BUS_NAME, path, "org.freedesktop.DBus.Introspectable",
			       "Introspect", NULL, &reply, NULL) >= 0 &&
	    sd_bus_message_read(reply, "s", &xml) >= 0)
		copy = g_strdup(xml);
	sd_bus_message_unref(reply);
	return copy;
}

static void compare(GDBusNodeInfo *contract, sd_bus *bus, const char *path, const char *name)
{
	g_autofree char *xml = introspect(bus, path);
	g_autoptr(GError) error = NULL;
	g_autoptr(GDBusNodeInfo) live = xml ? g_dbus_node_info_new_for_xml(xml, &error) : NULL;
	GDBusInterfaceInfo *want = g_dbus_node_info_lookup_interface(contract, name);
	GDBusInterfaceInfo *got = live ? g_dbus_node_info_lookup_interface(live, name) : NULL;
	g_autofree char *want_text = NULL, *got_text = NULL;

	tap_require(want != NULL, "the contract describes %s", name);
	if (!tap_ok(got != NULL, "%s serves %s", path, name))
		return;
	want_text = describe(want);
	got_text = describe(got);
	if (!tap_ok(strcmp(want_text, got_text) == 0, "%s matches the contract", name))
		tap_diag("contract:\n%s\nlive:\n%s", want_text, got_text);
	/* Nothing else of ours is served there. */
	for (int i = 0; live->interfaces && live->interfaces[i]; i++)
		if (g_str_has_prefix(live->interfaces[i]->name, "org.dmabroker.") &&
		    strcmp(live->interfaces[i]->name, name) != 0)
			tap_ok(false, "%s serves %s, which the contract does not place there", path,
			       live->interfaces[i]->name);
}

/* The stream members by name: a contract and a daemon that both lost one would still match. */
static void check_stream_members(sd_bus *bus)
{
	static const char *const methods[] = {
		"CreateStream",	       "CreateStreamToken", "JoinStream",
		"JoinStreamWithToken", "LeaveStream",	    "EndStream",
		"EndStreamLink",       "ListStreams",	    "TakeStreamLink",
	};
	static const char *const signals[] = {"StreamLink", "StreamLinkEnded", "StreamEnded"};
	g_autofree char *xml = introspect(bus, DB_OBJECT_PATH);
	g_autoptr(GError) error = NULL;
	g_autoptr(GDBusNodeInfo) live = xml ? g_dbus_node_info_new_for_xml(xml, &error) : NULL;
	GDBusInterfaceInfo *iface =
		live ? g_dbus_node_info_lookup_interface(live, DB_IFACE_BROKER) : NULL;
	unsigned missing = 0;

	for (size_t i = 0; i < G_N_ELEMENTS(methods); i++)
		if (!iface || !g_dbus_interface_info_lookup_method(iface, methods[i]))
			missing++;
	for (size_t i = 0; i < G_N_ELEMENTS(signals); i++)
		if (!iface || !g_dbus_interface_info_lookup_signal(iface, signals[i]))
			missing++;
	tap_is(missing, 0, "the daemon serves the seven stream methods and three stream signals");
}

int main(void)
{
	const char *source = getenv("DMABROKER_CONTRACT");
	g_autofree char *text = NULL;
	g_autoptr(GError) error = NULL;
	g_autoptr(GDBusNodeInfo) contract = NULL;
	struct dmabroker *ctx;
	struct dmabroker_buffer *buf;
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct fixture f;
	sd_bus *bus;

	tap_require(source && g_file_get_contents(source, &text, NULL, &error),
		    "read the contract");
	contract = g_dbus_node_info_new_for_xml(text, &error);
	tap_require(contract != NULL, "the contract parses (%s)", error ? error->message : "ok");
	tap_require(fixture_start(&f, NULL) == 0, "start a private bus and the daemon");
	bus = inspect_bus();
	tap_require(dmabroker_connect(&ctx, NULL, 0) == 0 &&
			    dmabroker_register(ctx, "cpu", true, "introspection", NULL) == 0 &&
			    dmabroker_allocate(ctx, &spec, sizeof(spec), &buf) == 0,
		    "a client and a buffer exist");

	compare(contract, bus, DB_OBJECT_PATH, DB_IFACE_BROKER);
	check_stream_members(bus);
	compare(contract, bus, dmabroker_buffer_get_path(buf), DB_IFACE_BUFFER);
	compare(contract, bus, dmabroker_client_path(ctx), DB_IFACE_CLIENT);

	dmabroker_disconnect(ctx);
	sd_bus_flush_close_unref(bus);
	tap_is(fixture_stop(&f), 0, "the daemon exits cleanly");
	return tap_done();
}
