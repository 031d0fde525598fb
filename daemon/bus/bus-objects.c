// SPDX-License-Identifier: MIT
/*
 * org.dmabroker.Buffer1 and org.dmabroker.Client1: read-only views of the registry for
 * dmabrokerctl and administrators. Objects are found by path on demand (fallback vtables
 * and node enumerators), so the daemon keeps no per-object bus state.
 */
#include "bus-objects.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus-creds.h"
#include "devices.h"
#include "kernel-view.h"
#include "layout-bus.h"
#include "log.h"
#include "macros.h"
#include "peer.h"
#include "protocol.h"

static struct db_broker *broker_of(sd_bus *bus);

/*
 * Who is looking, for the visibility rule every listing follows: root sees every client and
 * buffer; anyone else sees the clients of its own uid and the buffers its uid owns or holds.
 * A peer's caller is its client; a bus caller's uid was learned before its call was
 * dispatched (bus-creds.h), so nothing here asks the bus.
 */
static int caller_uid(struct db_broker *b, sd_bus *bus, uid_t *ret)
{
	sd_bus_message *m = sd_bus_get_current_message(bus);
	struct db_peer *peer;
	struct db_client *c;

	if (!m)
		return -ENXIO;
	peer = db_peer_of_message(b, m);
	if (peer) {
		c = db_peer_client(peer);
		if (!c)
			return -ENOTCONN;
		*ret = c->uid;
		return 0;
	}
	return db_bus_creds_get(b->creds, sd_bus_message_get_sender(m), ret, NULL);
}

int db_bus_caller_uid(struct db_broker *b, sd_bus_message *m, uid_t *ret)
{
	return caller_uid(b, sd_bus_message_get_bus(m), ret);
}

bool db_bus_client_visible(const struct db_client *c, uid_t uid)
{
	return uid == 0 || c->uid == uid;
}

bool db_bus_buffer_visible(const struct db_buffer *buf, uid_t uid)
{
	if (uid == 0 || buf->owner_uid == uid)
		return true;
	for (guint i = 0; i < buf->attachments->len; i++) {
		const struct db_attachment *a = g_ptr_array_index(buf->attachments, i);

		if (a->client->uid == uid)
			return true;
	}
	return false;
}

/* The id after prefix/, digits only (no sign, no leading zero), or 0. */
static uint64_t id_from_path(const char *path, const char *prefix)
{
	size_t n = strlen(prefix);
	uint64_t id = 0;
	const char *p;

	if (strncmp(path, prefix, n) != 0 || path[n] != '/' || path[n + 1] == '0')
		return 0;
	for (p = path + n + 1; *p; p++) {
		if (*p < '0' || *p > '9' || __builtin_mul_overflow(id, 10, &id) ||
		    __builtin_add_overflow(id, (uint64_t)(*p - '0'), &id))
			return 0;
	}
	return p == path + n + 1 ? 0 : id;
}

struct db_buffer *db_bus_buffer_from_path(struct db_broker *b, const char *path)
{
	uint64_t id = id_from_path(path, DB_BUFFER_PATH_PREFIX);

	return id ? db_registry_find_buffer(b->reg, id) : NULL;
}

struct db_client *db_bus_client_from_path(struct db_broker *b, const char *path)
{
	uint64_t id = id_from_path(path, DB_CLIENT_PATH_PREFIX);

	return id ? db_registry_find_client(b->reg, id) : NULL;
}

int db_bus_append_buffers(sd_bus_message *m, struct db_buffer *const *bufs, size_t n)
{
	char path[128];
	int r;

	r = sd_bus_message_open_container(m, 'a', "o");
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = sd_bus_message_append_basic(m, 'o',
						db_bus_buffer_path(bufs[i], path, sizeof(path)));
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "h");
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = sd_bus_message_append_basic(m, 'h', &bufs[i]->fd);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	return r;
}

int db_bus_read_token(sd_bus_message *m, struct db_token_bytes *ret, sd_bus_error *error)
{
	const void *bytes;
	size_t size;
	int r;

	r = sd_bus_message_read_array(m, 'y', &bytes, &size);
	if (r < 0)
		return r;
	if (size != sizeof(ret->b))
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "a token is %zu bytes, not %zu", sizeof(ret->b), size);
	memcpy(ret->b, bytes, sizeof(ret->b));
	return 0;
}

int db_bus_reply_token(sd_bus_message *m, const struct db_token_bytes *t)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	int r;

	r = sd_bus_message_new_method_return(m, &reply);
	if (r >= 0)
		r = sd_bus_message_append_array(reply, 'y', t->b, sizeof(t->b));
	if (r < 0)
		return r;
	return sd_bus_send(NULL, reply, NULL);
}

int db_bus_append_layout(sd_bus_message *m, const struct db_buffer *buf, const struct db_client *c,
			 const struct db_alloc_plan *asked)
{
	struct db_layout_dict implied = {0};
	struct db_layout_dict d = {
		.layout = buf->layout,
		.backend = buf->backend,
		.is_dmabuf = buf->is_dmabuf,
		.name = buf->name,
	};

	/* "size" is the buffer's (page-aligned) size, which is what a client maps. */
	d.layout.size = buf->size;
	if (!c || !c->compact_layouts)
		return db_layout_dict_append(m, &d, NULL);
	if (asked) {
		implied.layout = asked->asked;
		implied.name = asked->name;
	}
	return db_layout_dict_append(m, &d, &implied);
}

/* --- org.dmabroker.Buffer1 --- */

static int buffer_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
		       void **found, sd_bus_error *error)
{
	struct db_buffer *buf = db_bus_buffer_from_path(userdata, path);
	uid_t uid;

	if (!buf || caller_uid(userdata, bus, &uid) < 0 || !db_bus_buffer_visible(buf, uid))
		return 0;
	*found = buf;
	return 1;
}

#define BUFFER_PROP(fn)                                                                           \
	static int fn(sd_bus *bus, const char *path, const char *interface, const char *property, \
		      sd_bus_message *reply, void *userdata, sd_bus_error *error)

BUFFER_PROP(buffer_prop_basic)
{
	struct db_buffer *buf = userdata;

	if (strcmp(property, "Id") == 0)
		return sd_bus_message_append(reply, "t", buf->id);
	if (strcmp(property, "Name") == 0)
		return sd_bus_message_append(reply, "s", buf->name);
	if (strcmp(property, "Size") == 0)
		return sd_bus_message_append(reply, "t", (uint64_t)buf->size);
	if (strcmp(property, "Backend") == 0)
		return sd_bus_message_append(reply, "s", buf->backend);
	if (strcmp(property, "IsDmaBuf") == 0)
		return sd_bus_message_append(reply, "b", (int)buf->is_dmabuf);
	if (strcmp(property, "OwnerUid") == 0)
		return sd_bus_message_append(reply, "u", (uint32_t)buf->owner_uid);
	if (strcmp(property, "ExporterDynamic") == 0)
		return sd_bus_message_append(reply, "b", (int)buf->exporter_dynamic);
	if (strcmp(property, "Pinned") == 0)
		return sd_bus_message_append(reply, "b", (int)db_buffer_is_pinned(buf));
	return -EINVAL;
}

BUFFER_PROP(buffer_prop_owner)
{
	struct db_buffer *buf = userdata;
	struct db_broker *b = broker_of(bus);
	struct db_client *owner = db_registry_find_client(b->reg, buf->owner_client_id);
	char p[128];
	uid_t uid;

	if (owner && (caller_uid(b, bus, &uid) < 0 || !db_bus_client_visible(owner, uid)))
		owner = NULL;
	return sd_bus_message_append(reply, "o",
				     owner ? db_bus_client_path(owner, p, sizeof(p)) : "/");
}

BUFFER_PROP(buffer_prop_exporter)
{
	struct db_buffer *buf = userdata;
	char p[128];

	if (!buf->exporter_client_id)
		return sd_bus_message_append(reply, "s", "daemon");
	snprintf(p, sizeof(p), DB_CLIENT_PATH_PREFIX "/%" PRIu64, buf->exporter_client_id);
	return sd_bus_message_append(reply, "s", p);
}

BUFFER_PROP(buffer_prop_layout)
{
	return db_bus_append_layout(reply, userdata, NULL, NULL);
}

BUFFER_PROP(buffer_prop_attachments)
{
	struct db_buffer *buf = userdata;
	char p[128];
	uid_t uid;
	int r;

	r = caller_uid(broker_of(bus), bus, &uid);
	if (r < 0)
		return r;
	r = sd_bus_message_open_container(reply, 'a', "(osb)");
	for (guint i = 0; r >= 0 && i < buf->attachments->len; i++) {
		struct db_attachment *a = g_ptr_array_index(buf->attachments, i);

		/* Holders of other uids are not the caller's to see. */
		if (!db_bus_client_visible(a->client, uid))
			continue;
		r = sd_bus_message_append(reply, "(osb)",
					  db_bus_client_path(a->client, p, sizeof(p)),
					  db_attach_path_name(a->path), (int)a->client->dynamic);
	}
	if (r < 0)
		return r;
	return sd_bus_message_close_container(reply);
}

/*
 * What the daemon expects of one kernel attachment: the holders that declared a device
 * whose kernel name is dev. Their declared path is the daemon's record; it agrees with the
 * kernel when the driver's known import mode matches the kernel's importer flag and, on a
 * kernel that keeps per-attachment mappings (it prints cached=), when both say the mapping
 * is cached (or both say it is not). Where the kernel keeps no such cache (upstream since
 * 6.16: a static importer of a dynamic exporter is pinned on map instead) the daemon claims
 * none: its record reads "pinned-on-map" (for the kernel's dynamic exporters) or "direct"
 * instead of "cached", and only the importer flag is compared (docs/kernel-report.md).
 */
static void predict(struct db_broker *b, struct db_buffer *buf, const struct db_kernel_view *view,
		    const struct db_kernel_attachment *ka, const char **ret_path, bool *ret_agrees)
{
	*ret_path = "";
	*ret_agrees = true;
	for (guint i = 0; b->devices && i < buf->attachments->len; i++) {
		struct db_attachment *a = g_ptr_array_index(buf->attachments, i);

		for (char **dev = a->client->devices; dev && *dev; dev++) {
			const struct db_device *d = db_devices_find(b->devices, *dev);

			if (!d || strcmp(d->kernel_name, ka->dev) != 0)
				continue;
			*ret_path = db_attach_path_name(a->path);
			if (!ka->has_cached && a->path == DB_PATH_CACHED)
				*ret_path = view->exp_dynamic ? "pinned-on-map" : "direct";
			*ret_agrees =
				(!ka->has_cached || (a->path == DB_PATH_CACHED) == ka->cached) &&
				(strcmp(d->import_mode, "dynamic") == 0) == ka->importer_dynamic;
			return;
		}
	}
}

BUFFER_PROP(buffer_prop_kernel_attachments)
{
	struct db_buffer *buf = userdata;
	struct db_broker *b = broker_of(bus);
	struct db_kernel_view view = {0};
	char p[128];
	int r;

	/* Without the kernel's report (probed at start with a buffer only the daemon named),
	 * report lines could only have been forged through a holder's DMA_BUF_SET_NAME. A busy
	 * report (an importer held the buffer's lock) says nothing this time: the list is empty
	 * for this read, and the next read asks the kernel again. */
	if (!buf->is_dmabuf || strcmp(b->kernel_report, "available") != 0 ||
	    db_kernel_view_read(buf->fd, &view) < 0)
		view.available = false;
	if (view.busy)
		log_debug("Buffer %s: the kernel's attachment list was busy, unknown this time",
			  db_bus_buffer_path(buf, p, sizeof(p)));
	r = sd_bus_message_open_container(reply, 'a', "(sbbsb)");
	for (unsigned i = 0; r >= 0 && view.available && i < view.n_attachments; i++) {
		const struct db_kernel_attachment *ka = &view.attachments[i];
		const char *predicted;
		bool agrees;

		predict(b, buf, &view, ka, &predicted, &agrees);
		/* Any reader can ask: say it once per buffer, not once per read. */
		if (!agrees && !buf->kernel_mismatch_logged) {
			buf->kernel_mismatch_logged = true;
			log_warning("Buffer %s: the kernel attached %s %s (importer %s), the "
				    "daemon's record says %s",
				    db_bus_buffer_path(buf, p, sizeof(p)), ka->dev,
				    !ka->has_cached ? "without a cache"
				    : ka->cached    ? "cached"
						    : "direct",
				    ka->importer_dynamic ? "dynamic" : "static", predicted);
		}
		r = sd_bus_message_append(reply, "(sbbsb)", ka->dev, (int)ka->importer_dynamic,
					  (int)(ka->has_cached && ka->cached), predicted,
					  (int)agrees);
	}
	if (r < 0)
		return r;
	return sd_bus_message_close_container(reply);
}

static const sd_bus_vtable buffer_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_PROPERTY("Id", "t", buffer_prop_basic, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Name", "s", buffer_prop_basic, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Size", "t", buffer_prop_basic, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Backend", "s", buffer_prop_basic, 0, 0),
	SD_BUS_PROPERTY("IsDmaBuf", "b", buffer_prop_basic, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("OwnerUid", "u", buffer_prop_basic, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Owner", "o", buffer_prop_owner, 0, 0),
	SD_BUS_PROPERTY("Exporter", "s", buffer_prop_exporter, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("ExporterDynamic", "b", buffer_prop_basic, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Pinned", "b", buffer_prop_basic, 0, 0),
	SD_BUS_PROPERTY("Layout", "a{sv}", buffer_prop_layout, 0, 0),
	SD_BUS_PROPERTY("Attachments", "a(osb)", buffer_prop_attachments, 0, 0),
	SD_BUS_PROPERTY("KernelAttachments", "a(sbbsb)", buffer_prop_kernel_attachments, 0, 0),
	SD_BUS_VTABLE_END,
};

/* --- org.dmabroker.Client1 --- */

static int client_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
		       void **found, sd_bus_error *error)
{
	struct db_client *c = db_bus_client_from_path(userdata, path);
	uid_t uid;

	if (!c || caller_uid(userdata, bus, &uid) < 0 || !db_bus_client_visible(c, uid))
		return 0;
	*found = c;
	return 1;
}

BUFFER_PROP(client_prop_basic)
{
	struct db_client *c = userdata;

	if (strcmp(property, "Id") == 0)
		return sd_bus_message_append(reply, "t", c->id);
	if (strcmp(property, "BusName") == 0)
		return sd_bus_message_append(reply, "s", c->bus_name);
	if (strcmp(property, "Uid") == 0)
		return sd_bus_message_append(reply, "u", (uint32_t)c->uid);
	if (strcmp(property, "Pid") == 0)
		return sd_bus_message_append(reply, "u", (uint32_t)c->pid);
	if (strcmp(property, "Role") == 0)
		return sd_bus_message_append(reply, "s", c->role);
	if (strcmp(property, "Dynamic") == 0)
		return sd_bus_message_append(reply, "b", (int)c->dynamic);
	if (strcmp(property, "Name") == 0)
		return sd_bus_message_append(reply, "s", c->name);
	if (strcmp(property, "Devices") == 0)
		return sd_bus_message_append_strv(reply, c->devices);
	if (strcmp(property, "BytesHeld") == 0)
		return sd_bus_message_append(reply, "t", c->bytes_held);
	if (strcmp(property, "NTokens") == 0)
		return sd_bus_message_append(reply, "u", (uint32_t)c->n_tokens);
	return -EINVAL;
}

BUFFER_PROP(client_prop_buffers)
{
	struct db_client *c = userdata;
	char p[128];
	int r;

	r = sd_bus_message_open_container(reply, 'a', "o");
	for (guint i = 0; r >= 0 && i < c->attachments->len; i++) {
		struct db_attachment *a = g_ptr_array_index(c->attachments, i);

		r = sd_bus_message_append_basic(reply, 'o',
						db_bus_buffer_path(a->buffer, p, sizeof(p)));
	}
	if (r < 0)
		return r;
	return sd_bus_message_close_container(reply);
}

static const sd_bus_vtable client_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_PROPERTY("Id", "t", client_prop_basic, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("BusName", "s", client_prop_basic, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Uid", "u", client_prop_basic, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Pid", "u", client_prop_basic, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Role", "s", client_prop_basic, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Dynamic", "b", client_prop_basic, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Name", "s", client_prop_basic, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Devices", "as", client_prop_basic, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Buffers", "ao", client_prop_buffers, 0, 0),
	SD_BUS_PROPERTY("BytesHeld", "t", client_prop_basic, 0, 0),
	SD_BUS_PROPERTY("NTokens", "u", client_prop_basic, 0, 0),
	SD_BUS_VTABLE_END,
};

/* Appends path to list (room is there), or frees the whole list on failure. */
static int list_add(char **list, size_t *n, const char *path)
{
	list[*n] = strdup(path);
	if (!list[*n]) {
		for (size_t i = 0; i < *n; i++)
			free(list[i]);
		free(list);
		return -ENOMEM;
	}
	(*n)++;
	return 0;
}

/* The paths of the buffers (or clients) the caller may see, for the node enumerators. */
static int enumerate(struct db_broker *b, sd_bus *bus, bool buffers, char ***nodes)
{
	unsigned total = buffers ? db_registry_n_buffers(b->reg) : db_registry_n_clients(b->reg);
	char **list = calloc(total + 1, sizeof(char *));
	struct db_registry_iter it;
	char path[128];
	size_t n = 0;
	uid_t uid;
	int r;

	if (!list)
		return -ENOMEM;
	r = caller_uid(b, bus, &uid);
	if (r < 0) {
		free(list);
		return r;
	}
	if (buffers) {
		struct db_buffer *buf;

		db_registry_iter_buffers(b->reg, &it);
		while ((buf = db_registry_next_buffer(&it)))
			if (db_bus_buffer_visible(buf, uid) &&
			    list_add(list, &n, db_bus_buffer_path(buf, path, sizeof(path))) < 0)
				return -ENOMEM;
	} else {
		struct db_client *c;

		db_registry_iter_clients(b->reg, &it);
		while ((c = db_registry_next_client(&it)))
			if (db_bus_client_visible(c, uid) &&
			    list_add(list, &n, db_bus_client_path(c, path, sizeof(path))) < 0)
				return -ENOMEM;
	}
	*nodes = list;
	return 1;
}

static int enumerate_buffers(sd_bus *bus, const char *path, void *userdata, char ***nodes,
			     sd_bus_error *error)
{
	return enumerate(userdata, bus, true, nodes);
}

static int enumerate_clients(sd_bus *bus, const char *path, void *userdata, char ***nodes,
			     sd_bus_error *error)
{
	return enumerate(userdata, bus, false, nodes);
}

/* Property getters get the object, not the broker; one broker per process. */
static struct db_broker *the_broker;

static struct db_broker *broker_of(sd_bus *bus)
{
	(void)bus;
	return the_broker;
}

int db_bus_add_inspection_objects(struct db_broker *b, sd_bus *bus)
{
	int r;

	the_broker = b;
	r = sd_bus_add_fallback_vtable(bus, NULL, DB_BUFFER_PATH_PREFIX, DB_IFACE_BUFFER,
				       buffer_vtable, buffer_find, b);
	if (r >= 0)
		r = sd_bus_add_node_enumerator(bus, NULL, DB_BUFFER_PATH_PREFIX, enumerate_buffers,
					       b);
	if (r >= 0)
		r = sd_bus_add_fallback_vtable(bus, NULL, DB_CLIENT_PATH_PREFIX, DB_IFACE_CLIENT,
					       client_vtable, client_find, b);
	if (r >= 0)
		r = sd_bus_add_node_enumerator(bus, NULL, DB_CLIENT_PATH_PREFIX, enumerate_clients,
					       b);
	return r;
}
