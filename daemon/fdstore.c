// SPDX-License-Identifier: MIT
#include "fdstore.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "backend.h"
#include "fd-util.h"
#include "log.h"
#include "macros.h"
#include "protocol.h"

#define REGISTRY_FDNAME "registry"
#define REGISTRY_MAX (64u << 20)

static void buffer_fdname(uint64_t id, char *out, size_t len)
{
	snprintf(out, len, "buf-%" PRIu64, id);
}

static void store_remove(const char *name)
{
	char msg[128];

	snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
	sd_notify(0, msg);
}

void db_fdstore_add_buffer(struct db_broker *b, struct db_buffer *buf)
{
	char name[64], msg[128];
	int r;

	if (!b->fdstore)
		return;
	buffer_fdname(buf->id, name, sizeof(name));
	/* A moved buffer has a new fd under the same name: drop the old entry first. */
	store_remove(name);
	snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
	r = sd_pid_notify_with_fds(0, 0, msg, &buf->fd, 1);
	if (r <= 0)
		log_warning("Failed to keep buffer %" PRIu64 " in the fd store: %s", buf->id,
			    r < 0 ? strerror(-r) : "no notify socket");
}

void db_fdstore_buffer_freed(struct db_buffer *buf, void *userdata)
{
	struct db_broker *b = userdata;
	char name[64];

	if (!b->fdstore)
		return;
	buffer_fdname(buf->id, name, sizeof(name));
	store_remove(name);
}

static void set_u32_list(GKeyFile *kf, const char *group, const char *key, const uint32_t *v,
			 size_t n)
{
	gint list[DMABROKER_MAX_PLANES];

	for (size_t i = 0; i < n; i++)
		list[i] = (gint)v[i];
	g_key_file_set_integer_list(kf, group, key, list, n);
}

static char *serialize(struct db_broker *b, gsize *len)
{
	g_autoptr(GKeyFile) kf = g_key_file_new();
	GHashTableIter it;
	gpointer value;
	char group[96];

	g_key_file_set_uint64(kf, "Registry", "NextClientId", b->reg->next_client_id);
	g_key_file_set_uint64(kf, "Registry", "NextBufferId", b->reg->next_buffer_id);
	g_hash_table_iter_init(&it, b->reg->clients);
	while (g_hash_table_iter_next(&it, NULL, &value)) {
		struct db_client *c = value;

		snprintf(group, sizeof(group), "Client %" PRIu64, c->id);
		g_key_file_set_string(kf, group, "BusName", c->bus_name);
		g_key_file_set_uint64(kf, group, "Uid", c->uid);
		g_key_file_set_uint64(kf, group, "Pid", (uint64_t)c->pid);
		g_key_file_set_string(kf, group, "Role", c->role);
		g_key_file_set_boolean(kf, group, "Dynamic", c->dynamic);
		g_key_file_set_string(kf, group, "Name", c->name);
		g_key_file_set_string_list(kf, group, "Devices", (const char *const *)c->devices,
					   g_strv_length(c->devices));
	}
	g_hash_table_iter_init(&it, b->reg->buffers);
	while (g_hash_table_iter_next(&it, NULL, &value)) {
		struct db_buffer *buf = value;
		g_autofree gint *holders = g_new0(gint, buf->attachments->len + 1);

		snprintf(group, sizeof(group), "Buffer %" PRIu64, buf->id);
		g_key_file_set_uint64(kf, group, "Size", buf->size);
		g_key_file_set_string(kf, group, "Backend", buf->backend);
		g_key_file_set_boolean(kf, group, "IsDmaBuf", buf->is_dmabuf);
		g_key_file_set_string(kf, group, "Name", buf->name);
		g_key_file_set_uint64(kf, group, "OwnerUid", buf->owner_uid);
		g_key_file_set_uint64(kf, group, "OwnerClient", buf->owner_client_id);
		g_key_file_set_uint64(kf, group, "ExporterClient", buf->exporter_client_id);
		g_key_file_set_boolean(kf, group, "ExporterDynamic", buf->exporter_dynamic);
		g_key_file_set_uint64(kf, group, "Width", buf->layout.width);
		g_key_file_set_uint64(kf, group, "Height", buf->layout.height);
		g_key_file_set_uint64(kf, group, "Fourcc", buf->layout.fourcc);
		g_key_file_set_uint64(kf, group, "Modifier", buf->layout.modifier);
		set_u32_list(kf, group, "Offsets", buf->layout.offsets, buf->layout.n_planes);
		set_u32_list(kf, group, "Strides", buf->layout.strides, buf->layout.n_planes);
		for (guint i = 0; i < buf->attachments->len; i++) {
			struct db_attachment *a = g_ptr_array_index(buf->attachments, i);

			holders[i] = (gint)a->client->id;
		}
		g_key_file_set_integer_list(kf, group, "Holders", holders, buf->attachments->len);
	}
	g_hash_table_iter_init(&it, b->reg->tokens);
	while (g_hash_table_iter_next(&it, NULL, &value)) {
		struct db_token *t = value;
		char hex[DB_TOKEN_HEX_LEN + 1];

		db_token_to_hex(&t->bytes, hex);
		snprintf(group, sizeof(group), "Token %s", hex);
		g_key_file_set_uint64(kf, group, "Buffer", t->buffer->id);
		g_key_file_set_uint64(kf, group, "Issuer", t->issuer->id);
		g_key_file_set_boolean(kf, group, "SingleUse", t->single_use);
		/* CLOCK_MONOTONIC runs on across a restart of the daemon (not of the machine). */
		g_key_file_set_uint64(kf, group, "ExpiresUsec", t->expires_usec);
		g_key_file_set_boolean(kf, group, "UidBound", t->uid_bound);
		g_key_file_set_uint64(kf, group, "Uid", t->uid);
	}
	return g_key_file_to_data(kf, len, NULL);
}

int db_fdstore_save(struct db_broker *b)
{
	g_autofree char *data = NULL;
	_cleanup_(closep) int fd = -1;
	gsize len;
	int r;

	if (!b->fdstore)
		return 0;
	data = serialize(b, &len);
	fd = memfd_create("dmabroker-registry", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	for (gsize done = 0; done < len;) {
		ssize_t n = write(fd, data + done, len - done);

		if (n < 0)
			return -errno;
		done += (gsize)n;
	}
	store_remove(REGISTRY_FDNAME);
	r = sd_pid_notify_with_fds(0, 0, "FDSTORE=1\nFDNAME=" REGISTRY_FDNAME, &fd, 1);
	if (r <= 0)
		return r < 0 ? r : -ENOTCONN;
	log_info("Saved %u buffer(s), %u client(s) and %u token(s) for the restart",
		 g_hash_table_size(b->reg->buffers), g_hash_table_size(b->reg->clients),
		 g_hash_table_size(b->reg->tokens));
	return 0;
}

static bool name_has_owner(sd_bus *bus, const char *name)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	int has = 0;

	if (sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
			       "org.freedesktop.DBus", "NameHasOwner", NULL, &reply, "s", name) < 0)
		return false;
	return sd_bus_message_read(reply, "b", &has) >= 0 && has;
}

static void get_u32_list(GKeyFile *kf, const char *group, const char *key, uint32_t *out,
			 uint32_t *n)
{
	gsize len = 0;
	g_autofree gint *list = g_key_file_get_integer_list(kf, group, key, &len, NULL);

	*n = 0;
	for (gsize i = 0; list && i < len && i < DMABROKER_MAX_PLANES; i++)
		out[(*n)++] = (uint32_t)list[i];
}

static int restore_from(struct db_broker *b, GKeyFile *kf, GHashTable *fds)
{
	g_auto(GStrv) groups = g_key_file_get_groups(kf, NULL);
	unsigned n_buffers = 0;

	/* Clients first: only those still on the bus come back. */
	for (size_t g = 0; groups[g]; g++) {
		g_autofree char *bus_name = NULL, *role = NULL, *name = NULL;
		g_auto(GStrv) devices = NULL;
		struct db_client *c;
		uint64_t id;

		if (sscanf(groups[g], "Client %" SCNu64, &id) != 1)
			continue;
		bus_name = g_key_file_get_string(kf, groups[g], "BusName", NULL);
		role = g_key_file_get_string(kf, groups[g], "Role", NULL);
		name = g_key_file_get_string(kf, groups[g], "Name", NULL);
		devices = g_key_file_get_string_list(kf, groups[g], "Devices", NULL, NULL);
		if (!bus_name || !role || !name)
			continue;
		if (!b->bus || !name_has_owner(b->bus, bus_name)) {
			log_info("Client %s left during the restart", bus_name);
			continue;
		}
		db_registry_restore_client(b->reg, id, bus_name,
					   (uid_t)g_key_file_get_uint64(kf, groups[g], "Uid", NULL),
					   (pid_t)g_key_file_get_uint64(kf, groups[g], "Pid", NULL),
					   role,
					   g_key_file_get_boolean(kf, groups[g], "Dynamic", NULL),
					   name, (const char *const *)devices, &c);
	}
	for (size_t g = 0; groups[g]; g++) {
		struct db_buffer tmpl = {0}, *buf;
		g_autofree char *backend = NULL, *name = NULL;
		g_autofree gint *holders = NULL;
		const struct db_backend *be;
		char fdname[64];
		gsize n_holders = 0;
		uint32_t n_strides;
		gpointer fdp;
		int fd;

		if (sscanf(groups[g], "Buffer %" SCNu64, &tmpl.id) != 1)
			continue;
		buffer_fdname(tmpl.id, fdname, sizeof(fdname));
		if (!g_hash_table_lookup_extended(fds, fdname, NULL, &fdp))
			continue;
		backend = g_key_file_get_string(kf, groups[g], "Backend", NULL);
		name = g_key_file_get_string(kf, groups[g], "Name", NULL);
		be = backend ? db_backend_find(backend) : NULL;
		tmpl.backend = be ? be->name : "export";
		tmpl.size = g_key_file_get_uint64(kf, groups[g], "Size", NULL);
		tmpl.is_dmabuf = g_key_file_get_boolean(kf, groups[g], "IsDmaBuf", NULL);
		tmpl.name = name;
		tmpl.owner_uid = (uid_t)g_key_file_get_uint64(kf, groups[g], "OwnerUid", NULL);
		tmpl.owner_client_id = g_key_file_get_uint64(kf, groups[g], "OwnerClient", NULL);
		tmpl.exporter_client_id =
			g_key_file_get_uint64(kf, groups[g], "ExporterClient", NULL);
		tmpl.exporter_dynamic =
			g_key_file_get_boolean(kf, groups[g], "ExporterDynamic", NULL);
		tmpl.layout.size = tmpl.size;
		tmpl.layout.width = (uint32_t)g_key_file_get_uint64(kf, groups[g], "Width", NULL);
		tmpl.layout.height = (uint32_t)g_key_file_get_uint64(kf, groups[g], "Height", NULL);
		tmpl.layout.fourcc = (uint32_t)g_key_file_get_uint64(kf, groups[g], "Fourcc", NULL);
		tmpl.layout.modifier = g_key_file_get_uint64(kf, groups[g], "Modifier", NULL);
		get_u32_list(kf, groups[g], "Offsets", tmpl.layout.offsets, &tmpl.layout.n_planes);
		get_u32_list(kf, groups[g], "Strides", tmpl.layout.strides, &n_strides);
		fd = GPOINTER_TO_INT(fdp);
		if (db_registry_restore_buffer(b->reg, &tmpl, fd, &buf) < 0)
			continue;
		g_hash_table_remove(fds, fdname); /* the registry owns the fd now */
		holders = g_key_file_get_integer_list(kf, groups[g], "Holders", &n_holders, NULL);
		for (gsize i = 0; i < n_holders; i++) {
			struct db_client *c = db_registry_find_client(b->reg, (uint64_t)holders[i]);

			if (c)
				db_registry_restore_attachment(b->reg, c, buf);
		}
		n_buffers++;
	}
	for (size_t g = 0; groups[g]; g++) {
		struct db_token t = {0};

		if (strncmp(groups[g], "Token ", 6) != 0 ||
		    db_token_from_hex(groups[g] + 6, &t.bytes) < 0)
			continue;
		t.buffer = db_registry_find_buffer(
			b->reg, g_key_file_get_uint64(kf, groups[g], "Buffer", NULL));
		t.issuer = db_registry_find_client(
			b->reg, g_key_file_get_uint64(kf, groups[g], "Issuer", NULL));
		if (!t.buffer || !t.issuer)
			continue;
		t.single_use = g_key_file_get_boolean(kf, groups[g], "SingleUse", NULL);
		t.expires_usec = g_key_file_get_uint64(kf, groups[g], "ExpiresUsec", NULL);
		t.uid_bound = g_key_file_get_boolean(kf, groups[g], "UidBound", NULL);
		t.uid = (uid_t)g_key_file_get_uint64(kf, groups[g], "Uid", NULL);
		db_registry_restore_token(b->reg, &t);
	}
	/* Ids are never reused, not even across a restart. */
	b->reg->next_client_id = MAX(b->reg->next_client_id,
				     g_key_file_get_uint64(kf, "Registry", "NextClientId", NULL));
	b->reg->next_buffer_id = MAX(b->reg->next_buffer_id,
				     g_key_file_get_uint64(kf, "Registry", "NextBufferId", NULL));
	db_registry_drop_orphans(b->reg);
	return (int)n_buffers;
}

int db_fdstore_restore(struct db_broker *b)
{
	g_autoptr(GHashTable) fds = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	g_autoptr(GKeyFile) kf = NULL;
	char **names = NULL;
	GHashTableIter it;
	gpointer key, value;
	int n, r = 0;

	n = sd_listen_fds_with_names(1, &names);
	if (n <= 0)
		return n;
	for (int i = 0; i < n; i++) {
		g_hash_table_insert(fds, names[i], GINT_TO_POINTER(SD_LISTEN_FDS_START + i));
		names[i] = NULL;
	}
	free(names);

	if (g_hash_table_lookup_extended(fds, REGISTRY_FDNAME, NULL, &value)) {
		int fd = GPOINTER_TO_INT(value);
		g_autofree char *data = NULL;
		size_t size = 0;

		kf = g_key_file_new();
		if (fd_get_size(fd, &size) == 0 && size > 0 && size <= REGISTRY_MAX) {
			data = g_malloc(size + 1);
			if (pread(fd, data, size, 0) == (ssize_t)size &&
			    g_key_file_load_from_data(kf, data, size, G_KEY_FILE_NONE, NULL))
				r = restore_from(b, kf, fds);
		}
		close(fd);
		g_hash_table_remove(fds, REGISTRY_FDNAME);
		store_remove(REGISTRY_FDNAME);
	} else {
		log_warning("The fd store holds %d buffer(s) but no registry (the daemon did not "
			    "stop cleanly): dropping them",
			    n);
	}
	/* Whatever no restored buffer took is gone for good. */
	g_hash_table_iter_init(&it, fds);
	while (g_hash_table_iter_next(&it, &key, &value)) {
		store_remove(key);
		close(GPOINTER_TO_INT(value));
	}
	if (r > 0)
		log_info("Restored %d buffer(s) and %u client(s) from the fd store", r,
			 g_hash_table_size(b->reg->clients));
	return r;
}
