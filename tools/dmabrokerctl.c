// SPDX-License-Identifier: MIT
/* dmabrokerctl: what the broker holds, for administrators. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>

#include "bus-open.h"
#include "ctl-json.h"
#include "macros.h"
#include "protocol.h"

/* --json: machine-readable output for every command. */
static bool json;

static int connect_bus(bool user, sd_bus **ret)
{
	const char *address = getenv(DB_ENV_BUS_ADDRESS);

	if (address)
		return db_bus_open_address(address, ret);
	return user ? sd_bus_open_user(ret) : sd_bus_open_system(ret);
}

static int get_prop(sd_bus *bus, const char *path, const char *iface, const char *prop,
		    const char *type, sd_bus_message **reply, sd_bus_error *error)
{
	return sd_bus_get_property(bus, DB_BUS_NAME, path, iface, prop, error, reply, type);
}

/* Every Broker1 property as one JSON object. */
static int status_json(sd_bus *bus)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r;

	r = sd_bus_call_method(bus, DB_BUS_NAME, DB_OBJECT_PATH, "org.freedesktop.DBus.Properties",
			       "GetAll", &error, &reply, "s", DB_IFACE_BROKER);
	if (r < 0) {
		fprintf(stderr, "dmabrokerctl: cannot reach the daemon: %s\n",
			error.message ? error.message : strerror(-r));
		sd_bus_error_free(&error);
		return r;
	}
	r = json_value(stdout, reply);
	fputc('\n', stdout);
	return r;
}

static int cmd_status(sd_bus *bus)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	char *version = NULL, *report = NULL;
	uint32_t n_clients = 0, n_buffers = 0;
	uint64_t bytes = 0;
	const char *s;
	int r;

	if (json)
		return status_json(bus);
	r = sd_bus_get_property_string(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "Version",
				       &error, &version);
	if (r < 0) {
		fprintf(stderr, "dmabrokerctl: cannot reach the daemon: %s\n",
			error.message ? error.message : strerror(-r));
		sd_bus_error_free(&error);
		return r;
	}
	sd_bus_get_property_trivial(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "NClients",
				    NULL, 'u', &n_clients);
	sd_bus_get_property_trivial(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "NBuffers",
				    NULL, 'u', &n_buffers);
	sd_bus_get_property_trivial(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "BytesInUse",
				    NULL, 't', &bytes);
	sd_bus_get_property_string(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
				   "KernelAttachmentReport", NULL, &report);
	printf("Version:        %s\n", version);
	printf("Clients:        %u\n", n_clients);
	printf("Buffers:        %u (%" PRIu64 " bytes)\n", n_buffers, bytes);
	printf("Kernel report:  %s\n", report ? report : "?");
	printf("Backends:      ");
	if (get_prop(bus, DB_OBJECT_PATH, DB_IFACE_BROKER, "Backends", "as", &m, NULL) >= 0) {
		sd_bus_message_enter_container(m, 'a', "s");
		while (sd_bus_message_read_basic(m, 's', &s) > 0)
			printf(" %s", s);
	}
	printf("\nDevices:\n");
	m = sd_bus_message_unref(m);
	if (get_prop(bus, DB_OBJECT_PATH, DB_IFACE_BROKER, "Devices", "a(ssss)", &m, NULL) >= 0) {
		const char *sub, *node, *drv, *mode;

		sd_bus_message_enter_container(m, 'a', "(ssss)");
		while (sd_bus_message_read(m, "(ssss)", &sub, &node, &drv, &mode) > 0)
			printf("  %-22s %-12s %-10s import %s\n", node, sub, drv[0] ? drv : "-",
			       mode[0] ? mode : "-");
	}
	printf("Limits:\n");
	m = sd_bus_message_unref(m);
	if (get_prop(bus, DB_OBJECT_PATH, DB_IFACE_BROKER, "Limits", "a{st}", &m, NULL) >= 0) {
		uint64_t v;

		sd_bus_message_enter_container(m, 'a', "{st}");
		while (sd_bus_message_read(m, "{st}", &s, &v) > 0)
			printf("  %-22s %" PRIu64 "\n", s, v);
	}
	free(version);
	free(report);
	return 0;
}

/* Walks GetManagedObjects, calling fn for each object with the given interface, positioned at
 * its property array (a{sv}). */
static int for_each_object(sd_bus *bus, const char *iface,
			   int (*fn)(sd_bus *bus, const char *path, sd_bus_message *props))
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r;

	r = sd_bus_call_method(bus, DB_BUS_NAME, DB_OBJECT_PATH,
			       "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", &error,
			       &reply, NULL);
	if (r < 0) {
		fprintf(stderr, "dmabrokerctl: %s\n", error.message ? error.message : strerror(-r));
		sd_bus_error_free(&error);
		return r;
	}
	r = sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}");
	if (json)
		fputc('[', stdout);
	while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}")) > 0) {
		const char *path, *name;

		sd_bus_message_read_basic(reply, 'o', &path);
		sd_bus_message_enter_container(reply, 'a', "{sa{sv}}");
		while (sd_bus_message_enter_container(reply, 'e', "sa{sv}") > 0) {
			sd_bus_message_read_basic(reply, 's', &name);
			if (strcmp(name, iface) == 0)
				fn(bus, path, reply);
			else
				sd_bus_message_skip(reply, "a{sv}");
			sd_bus_message_exit_container(reply);
		}
		sd_bus_message_exit_container(reply);
		sd_bus_message_exit_container(reply);
	}
	if (json)
		fputs("]\n", stdout);
	return r < 0 ? r : 0;
}

/* One object of a --json listing: its path and its properties, as they came. */
static int print_json(sd_bus *bus, const char *path, sd_bus_message *m)
{
	static bool first = true; /* one listing per run */

	(void)bus;
	if (!first)
		fputc(',', stdout);
	first = false;
	fputs("{\"path\":", stdout);
	json_string(stdout, path);
	fputs(",\"properties\":", stdout);
	json_value(stdout, m);
	fputc('}', stdout);
	return 0;
}

struct props {
	uint64_t id, size, bytes;
	uint32_t uid, pid, n_tokens;
	int dynamic, pinned, dmabuf, exp_dynamic;
	char backend[32], name[64], role[32], bus_name[64], owner[96], exporter[96];
	char attachments[1024], kernel[1024];
};

static void read_props(sd_bus_message *m, struct props *p)
{
	const char *key, *contents, *s;
	char type;

	memset(p, 0, sizeof(*p));
	sd_bus_message_enter_container(m, 'a', "{sv}");
	while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
		sd_bus_message_read_basic(m, 's', &key);
		sd_bus_message_peek_type(m, &type, &contents);
		sd_bus_message_enter_container(m, 'v', contents);
		if (strcmp(contents, "t") == 0) {
			uint64_t v;

			sd_bus_message_read_basic(m, 't', &v);
			if (!strcmp(key, "Id"))
				p->id = v;
			else if (!strcmp(key, "Size"))
				p->size = v;
			else if (!strcmp(key, "BytesHeld"))
				p->bytes = v;
		} else if (strcmp(contents, "u") == 0) {
			uint32_t v;

			sd_bus_message_read_basic(m, 'u', &v);
			if (!strcmp(key, "Uid") || !strcmp(key, "OwnerUid"))
				p->uid = v;
			else if (!strcmp(key, "Pid"))
				p->pid = v;
			else if (!strcmp(key, "NTokens"))
				p->n_tokens = v;
		} else if (strcmp(contents, "b") == 0) {
			int v;

			sd_bus_message_read_basic(m, 'b', &v);
			if (!strcmp(key, "Dynamic"))
				p->dynamic = v;
			else if (!strcmp(key, "Pinned"))
				p->pinned = v;
			else if (!strcmp(key, "IsDmaBuf"))
				p->dmabuf = v;
			else if (!strcmp(key, "ExporterDynamic"))
				p->exp_dynamic = v;
		} else if (strcmp(contents, "s") == 0 || strcmp(contents, "o") == 0) {
			sd_bus_message_read_basic(m, contents[0], &s);
			if (!strcmp(key, "Backend"))
				snprintf(p->backend, sizeof(p->backend), "%s", s);
			else if (!strcmp(key, "Name"))
				snprintf(p->name, sizeof(p->name), "%s", s);
			else if (!strcmp(key, "Role"))
				snprintf(p->role, sizeof(p->role), "%s", s);
			else if (!strcmp(key, "BusName"))
				snprintf(p->bus_name, sizeof(p->bus_name), "%s", s);
			else if (!strcmp(key, "Owner"))
				snprintf(p->owner, sizeof(p->owner), "%s", s);
			else if (!strcmp(key, "Exporter"))
				snprintf(p->exporter, sizeof(p->exporter), "%s", s);
		} else if (strcmp(contents, "a(osb)") == 0) {
			const char *client, *path;
			int dyn;
			size_t len = 0;

			sd_bus_message_enter_container(m, 'a', "(osb)");
			while (sd_bus_message_read(m, "(osb)", &client, &path, &dyn) > 0 &&
			       len < sizeof(p->attachments) - 1)
				len += (size_t)snprintf(p->attachments + len,
							sizeof(p->attachments) - len,
							"\n    %s %s (%s)", client, path,
							dyn ? "dynamic" : "static");
			sd_bus_message_exit_container(m);
		} else if (strcmp(contents, "a(sbbsb)") == 0) {
			const char *dev, *predicted;
			int idyn, cached, agrees;
			size_t len = 0;

			sd_bus_message_enter_container(m, 'a', "(sbbsb)");
			while (sd_bus_message_read(m, "(sbbsb)", &dev, &idyn, &cached, &predicted,
						   &agrees) > 0 &&
			       len < sizeof(p->kernel) - 1)
				len += (size_t)snprintf(
					p->kernel + len, sizeof(p->kernel) - len,
					"\n    kernel: %s importer %s, %s; daemon predicted %s: %s",
					dev, idyn ? "dynamic" : "static",
					cached ? "cached" : "direct",
					predicted[0] ? predicted : "-",
					agrees ? "agrees" : "MISMATCH");
			sd_bus_message_exit_container(m);
		} else {
			sd_bus_message_skip(m, contents);
		}
		sd_bus_message_exit_container(m);
		sd_bus_message_exit_container(m);
	}
	sd_bus_message_exit_container(m);
}

static int print_buffer(sd_bus *bus, const char *path, sd_bus_message *m)
{
	struct props p;

	(void)bus;
	read_props(m, &p);
	printf("%s\n  name %s, %" PRIu64 " bytes, backend %s%s, owner uid %u (%s), exporter %s "
	       "(%s), %s\n  attachments:%s\n",
	       path, p.name[0] ? p.name : "-", p.size, p.backend,
	       p.dmabuf ? "" : " (not a dma-buf)", p.uid, p.owner, p.exporter,
	       p.exp_dynamic ? "dynamic" : "static", p.pinned ? "PINNED" : "not pinned",
	       p.attachments[0] ? p.attachments : " none");
	if (p.kernel[0])
		printf("  kernel attachments:%s\n", p.kernel);
	return 0;
}

static int print_client(sd_bus *bus, const char *path, sd_bus_message *m)
{
	struct props p;

	(void)bus;
	read_props(m, &p);
	printf("%s\n  %s, role %s, %s, uid %u, pid %u, name %s, holds %" PRIu64
	       " bytes, %u token(s)\n",
	       path, p.bus_name, p.role, p.dynamic ? "dynamic" : "static", p.uid, p.pid,
	       p.name[0] ? p.name : "-", p.bytes, p.n_tokens);
	return 0;
}

/* --- monitor --- */

struct monitor {
	char *owner; /* the broker's unique name: the only sender of Events we believe */
	sd_bus_slot *match;
	uint64_t last_seq; /* of the last Event printed */
	uint64_t acked; /* what AcknowledgeEvents said last */
};

/* An Event's "seq" detail, or 0. Leaves m rewound to its start. */
static uint64_t event_seq(sd_bus_message *m)
{
	const char *key;
	uint64_t seq = 0;

	if (sd_bus_message_skip(m, "so") < 0 || sd_bus_message_enter_container(m, 'a', "{sv}") <= 0)
		goto out;
	while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
		if (sd_bus_message_read_basic(m, 's', &key) < 0)
			break;
		if (strcmp(key, "seq") == 0)
			sd_bus_message_read(m, "v", "t", &seq);
		else
			sd_bus_message_skip(m, "v");
		sd_bus_message_exit_container(m);
	}
out:
	sd_bus_message_rewind(m, true);
	return seq;
}

static void print_detail_text(sd_bus_message *m)
{
	const char *key, *contents;
	char type;

	sd_bus_message_enter_container(m, 'a', "{sv}");
	while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
		sd_bus_message_read_basic(m, 's', &key);
		sd_bus_message_peek_type(m, &type, &contents);
		printf(" %s=", key);
		/* Values as JSON: strings quoted, so a name with spaces stays one field. */
		json_value(stdout, m);
		sd_bus_message_exit_container(m);
	}
	sd_bus_message_exit_container(m);
}

static int on_event(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct monitor *mon = userdata;
	const char *kind, *object;

	(void)error;
	if (!mon->owner || !streq_ptr(sd_bus_message_get_sender(m), mon->owner))
		return 0;
	mon->last_seq = event_seq(m);
	if (sd_bus_message_read(m, "so", &kind, &object) < 0)
		return 0;
	if (json) {
		fputs("{\"kind\":", stdout);
		json_string(stdout, kind);
		fputs(",\"object\":", stdout);
		json_string(stdout, object);
		fputs(",\"details\":", stdout);
		json_value(stdout, m);
		fputs("}\n", stdout);
	} else {
		printf("%-17s %s", kind, object);
		print_detail_text(m);
		putchar('\n');
	}
	fflush(stdout);
	return 0;
}

static int subscribe(sd_bus *bus, struct monitor *mon, bool snapshot)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	const char *owner;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	int r;

	r = sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
			       "org.freedesktop.DBus", "GetNameOwner", &error, &reply, "s",
			       DB_BUS_NAME);
	if (r >= 0)
		r = sd_bus_message_read(reply, "s", &owner);
	if (r >= 0) {
		free(mon->owner);
		mon->owner = strdup(owner);
		sd_bus_slot_unref(mon->match);
		r = sd_bus_match_signal(bus, &mon->match, owner, DB_OBJECT_PATH, DB_IFACE_BROKER,
					"Event", on_event, mon);
	}
	/* A new subscription counts its events from 1 again. */
	mon->last_seq = mon->acked = 0;
	if (r >= 0)
		r = sd_bus_call_method(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
				       "Subscribe", &error, NULL, "a{sv}", 1, "snapshot", "b",
				       (int)snapshot);
	if (r < 0)
		fprintf(stderr, "dmabrokerctl: cannot subscribe: %s\n",
			error.message ? error.message : strerror(-r));
	sd_bus_error_free(&error);
	return r;
}

/* The daemon restarted: follow the name to the new one, as the library does. */
static int on_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct monitor *mon = userdata;
	const char *name, *old_owner, *new_owner;

	(void)error;
	if (!streq_ptr(sd_bus_message_get_sender(m), "org.freedesktop.DBus") ||
	    sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 ||
	    strcmp(name, DB_BUS_NAME) != 0)
		return 0;
	if (!new_owner[0]) {
		free(mon->owner);
		mon->owner = NULL;
		printf(json ? "{\"kind\":\"daemon-left\"}\n" : "daemon-left\n");
	} else {
		printf(json ? "{\"kind\":\"daemon-started\"}\n" : "daemon-started\n");
		subscribe(sd_bus_message_get_bus(m), mon, false);
	}
	fflush(stdout);
	return 0;
}

static int cmd_monitor(sd_bus *bus, bool snapshot)
{
	struct monitor mon = {0};
	int r;

	r = sd_bus_match_signal(bus, NULL, "org.freedesktop.DBus", "/org/freedesktop/DBus",
				"org.freedesktop.DBus", "NameOwnerChanged", on_owner_changed, &mon);
	if (r >= 0)
		r = subscribe(bus, &mon, snapshot);
	while (r >= 0) {
		r = sd_bus_process(bus, NULL);
		if (r > 0)
			continue;
		/* Everything read is printed: give the daemon its window back (see Subscribe). */
		if (r == 0 && mon.owner && mon.last_seq > mon.acked) {
			sd_bus_call_method_async(bus, NULL, DB_BUS_NAME, DB_OBJECT_PATH,
						 DB_IFACE_BROKER, "AcknowledgeEvents", NULL, NULL,
						 "t", mon.last_seq);
			mon.acked = mon.last_seq;
		}
		if (r == 0)
			r = sd_bus_wait(bus, UINT64_MAX);
	}
	free(mon.owner);
	sd_bus_slot_unref(mon.match);
	return r;
}

/* One a{sv} entry's string value, or "" (the dictionaries ListCollections returns). */
static const char *dict_str(sd_bus_message *m, const char *want, char *out, size_t len)
{
	const char *key, *contents, *v;
	char type;

	out[0] = '\0';
	sd_bus_message_rewind(m, false);
	while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
		if (sd_bus_message_read_basic(m, 's', &key) > 0 && strcmp(key, want) == 0 &&
		    sd_bus_message_peek_type(m, &type, &contents) > 0 &&
		    (strcmp(contents, "s") == 0 || strcmp(contents, "o") == 0) &&
		    sd_bus_message_read(m, "v", contents, &v) > 0)
			snprintf(out, len, "%s", v);
		else
			sd_bus_message_skip(m, NULL);
		sd_bus_message_exit_container(m);
	}
	return out;
}

/* Calls print on each a{sv} of the aa{sv} the dictionary m (entered) holds under want. */
static void for_each_member(sd_bus_message *m, const char *want, void (*print)(sd_bus_message *))
{
	const char *key;

	sd_bus_message_rewind(m, false);
	while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
		if (sd_bus_message_read_basic(m, 's', &key) > 0 && strcmp(key, want) == 0 &&
		    sd_bus_message_enter_container(m, 'v', "aa{sv}") > 0 &&
		    sd_bus_message_enter_container(m, 'a', "a{sv}") > 0) {
			while (sd_bus_message_enter_container(m, 'a', "{sv}") > 0) {
				print(m);
				sd_bus_message_exit_container(m);
			}
			sd_bus_message_exit_container(m);
			sd_bus_message_exit_container(m);
		} else {
			sd_bus_message_skip(m, NULL);
		}
		sd_bus_message_exit_container(m);
	}
}

/* A listing (ListCollections, ListStreams): as JSON, or each a{sv} of its aa{sv} by print. */
static int cmd_list(sd_bus *bus, const char *method, const char *what,
		    void (*print)(sd_bus_message *))
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int n = 0, r;

	r = sd_bus_call_method(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, method, &error,
			       &reply, NULL);
	if (r < 0) {
		fprintf(stderr, "dmabrokerctl: cannot list %s: %s\n", what,
			error.message ? error.message : strerror(-r));
		sd_bus_error_free(&error);
		return r;
	}
	if (json) {
		r = json_value(stdout, reply);
		fputc('\n', stdout);
		return r;
	}
	r = sd_bus_message_enter_container(reply, 'a', "a{sv}");
	while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'a', "{sv}")) > 0) {
		print(reply);
		sd_bus_message_exit_container(reply);
		n++;
	}
	if (n == 0)
		printf("no %s\n", what);
	return r;
}

/* One participant of a collection's "participants" list. */
static void print_participant(sd_bus_message *m)
{
	char label[192], cons[512], apath[16];

	dict_str(m, "label", label, sizeof(label));
	dict_str(m, "constraints", cons, sizeof(cons));
	dict_str(m, "path", apath, sizeof(apath));
	printf("  participant %s%s%s\n    constraints: %s\n", label, apath[0] ? ", attached " : "",
	       apath, cons);
}

/* One collection's a{sv} (entered). */
static void print_collection(sd_bus_message *m)
{
	char path[128], name[64], state[32], creator[128], outcome[1024];

	dict_str(m, "collection", path, sizeof(path));
	dict_str(m, "name", name, sizeof(name));
	dict_str(m, "state", state, sizeof(state));
	dict_str(m, "creator", creator, sizeof(creator));
	dict_str(m, "outcome", outcome, sizeof(outcome));
	printf("%s  %s  %s  created by %s\n", path, name[0] ? name : "-", state, creator);
	if (outcome[0])
		printf("  outcome: %s\n", outcome);
	for_each_member(m, "participants", print_participant);
}

/* Collections the caller may see: participants, their constraints, and the outcome. */
static int cmd_collections(sd_bus *bus)
{
	return cmd_list(bus, "ListCollections", "collections", print_collection);
}

/* One a{sv} entry's value of the basic type (a one-letter signature) into *v, if it has
 * that type; *v is left as it is otherwise. */
static void dict_basic(sd_bus_message *m, const char *want, const char *type, void *v)
{
	const char *key, *contents;
	char t;

	sd_bus_message_rewind(m, false);
	while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
		if (sd_bus_message_read_basic(m, 's', &key) > 0 && strcmp(key, want) == 0 &&
		    sd_bus_message_peek_type(m, &t, &contents) > 0 && strcmp(contents, type) == 0)
			sd_bus_message_read(m, "v", type, v);
		else
			sd_bus_message_skip(m, NULL);
		sd_bus_message_exit_container(m);
	}
}

/* One a{sv} entry's u value, or 0. */
static uint32_t dict_u32(sd_bus_message *m, const char *want)
{
	uint32_t v = 0;

	dict_basic(m, want, "u", &v);
	return v;
}

/* One a{sv} entry's b value, or false. */
static bool dict_bool(sd_bus_message *m, const char *want)
{
	int v = 0;

	dict_basic(m, want, "b", &v);
	return v;
}

/* The stream's format as "XR24 1920x1080 @ 30/1", or what of it was given. */
static void describe_format(sd_bus_message *m, char *out, size_t len)
{
	uint32_t fourcc = 0, width = 0, height = 0, num = 0, den = 0;
	const char *key;
	char fcc[5] = "", rate[32] = "";

	out[0] = '\0';
	sd_bus_message_rewind(m, false);
	while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
		if (sd_bus_message_read_basic(m, 's', &key) > 0 && strcmp(key, "format") == 0 &&
		    sd_bus_message_enter_container(m, 'v', "a{sv}") > 0 &&
		    sd_bus_message_enter_container(m, 'a', "{sv}") > 0) {
			fourcc = dict_u32(m, "fourcc");
			width = dict_u32(m, "width");
			height = dict_u32(m, "height");
			num = dict_u32(m, "framerate-num");
			den = dict_u32(m, "framerate-den");
			sd_bus_message_exit_container(m);
			sd_bus_message_exit_container(m);
		} else {
			sd_bus_message_skip(m, NULL);
		}
		sd_bus_message_exit_container(m);
	}
	for (int i = 0; fourcc && i < 4; i++) {
		char ch = (char)(fourcc >> (8 * i));

		fcc[i] = ch >= 0x20 && ch < 0x7f ? ch : '?';
	}
	if (num && den)
		snprintf(rate, sizeof(rate), " @ %u/%u", num, den);
	if (fourcc || width || height || rate[0])
		snprintf(out, len, "%s%s%ux%u%s", fcc, fcc[0] ? " " : "", width, height, rate);
	else
		snprintf(out, len, "no format given");
}

/* One consumer of a stream's "consumers" list. */
static void print_consumer(sd_bus_message *m)
{
	char label[300], client[128];
	uint32_t number = dict_u32(m, "consumer");
	bool required = dict_bool(m, "required");

	dict_str(m, "label", label, sizeof(label));
	dict_str(m, "client", client, sizeof(client));
	printf("  consumer %u: %s%s%s%s\n", number, client, label[0] ? " (" : "", label,
	       label[0] ? ")" : "");
	if (required)
		printf("    required: its failure ends the stream\n");
}

/* One stream's a{sv} (entered). */
static void print_stream(sd_bus_message *m)
{
	char path[128], name[300], mode[16], col[128], producer[128], format[96];

	dict_str(m, "stream", path, sizeof(path));
	dict_str(m, "name", name, sizeof(name));
	dict_str(m, "mode", mode, sizeof(mode));
	dict_str(m, "collection", col, sizeof(col));
	dict_str(m, "producer", producer, sizeof(producer));
	describe_format(m, format, sizeof(format));
	printf("%s  %s  %s, %s, up to %u consumers\n  produced by %s over %s\n", path,
	       name[0] ? name : "-", mode, format, dict_u32(m, "max-consumers"), producer, col);
	for_each_member(m, "consumers", print_consumer);
}

/* Streams the caller may see: producer, consumers, mode and format. */
static int cmd_streams(sd_bus *bus)
{
	return cmd_list(bus, "ListStreams", "streams", print_stream);
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: dmabrokerctl [--user] [--json] COMMAND\n"
		   "Shows what dmabrokerd holds (what the daemon lets the caller see: root sees\n"
		   "everything, anyone else the clients and buffers of their own uid).\n\n"
		   "Commands:\n"
		   "  status              version, counts, backends, devices, limits\n"
		   "  buffers             every buffer: size, backend, owner, attachments, pinned\n"
		   "  clients             every client: role, dynamic, uid, pid\n"
		   "  collections         buffer collections: participants, constraints, outcome\n"
		   "  streams             streams: producer, consumers, mode, format\n"
		   "  monitor [--snapshot]\n"
		   "                      print events as they happen (clients coming and going,\n"
		   "                      allocations, shares, moves, revocations, collections,\n"
		   "                      streams); --snapshot\n"
		   "                      first lists what exists\n\n"
		   "--json writes JSON (one object per event for monitor).\n"
		   "$" DB_ENV_BUS_ADDRESS " selects another bus.\n");
}

int main(int argc, char **argv)
{
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	bool user = false;
	int i = 1, r;

	for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-' && argv[i][2]; i++) {
		if (strcmp(argv[i], "--user") == 0)
			user = true;
		else if (strcmp(argv[i], "--json") == 0)
			json = true;
		else
			break;
	}
	if (i >= argc || strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
		usage(i >= argc ? stderr : stdout);
		return i >= argc ? 2 : 0;
	}
	r = connect_bus(user, &bus);
	if (r < 0) {
		fprintf(stderr, "dmabrokerctl: cannot connect to the bus: %s\n", strerror(-r));
		return 1;
	}
	if (strcmp(argv[i], "status") == 0)
		r = cmd_status(bus);
	else if (strcmp(argv[i], "buffers") == 0)
		r = for_each_object(bus, DB_IFACE_BUFFER, json ? print_json : print_buffer);
	else if (strcmp(argv[i], "clients") == 0)
		r = for_each_object(bus, DB_IFACE_CLIENT, json ? print_json : print_client);
	else if (strcmp(argv[i], "collections") == 0)
		r = cmd_collections(bus);
	else if (strcmp(argv[i], "streams") == 0)
		r = cmd_streams(bus);
	else if (strcmp(argv[i], "monitor") == 0)
		r = cmd_monitor(bus, i + 1 < argc && strcmp(argv[i + 1], "--snapshot") == 0);
	else {
		usage(stderr);
		return 2;
	}
	return r < 0 ? 1 : 0;
}
