// SPDX-License-Identifier: MIT
#include "registry.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "macros.h"

#define MIB (1024ull * 1024ull)
#define GIB (1024ull * MIB)
#define MAX_DEVICES 16

void db_limits_init_default(struct db_limits *l)
{
	*l = (struct db_limits){
		.max_buffer_size = 1 * GIB,
		.max_bytes_per_client = 4 * GIB,
		.max_buffers_per_client = 1024,
		.max_tokens_per_client = 1024,
		.max_bytes_per_uid = 8 * GIB,
		.max_buffers_per_uid = 4096,
		.max_tokens_per_uid = 4096,
		.max_clients = 4096,
		.max_clients_per_uid = 256,
		.max_name_length = 31, /* the kernel keeps DMA_BUF_NAME_LEN - 1 bytes */
	};
}

static guint token_hash(gconstpointer key)
{
	const struct db_token_bytes *t = key;
	guint h;

	/* The bytes are uniformly random: any four of them are a good hash. */
	memcpy(&h, t->b, sizeof(h));
	return h;
}

static gboolean token_key_equal(gconstpointer a, gconstpointer b)
{
	return db_token_equal(a, b);
}

static void token_free(gpointer p)
{
	g_free(p);
}

static void uid_usage_free(gpointer p)
{
	g_free(p);
}

struct db_registry *db_registry_new(const struct db_limits *limits)
{
	struct db_registry *reg = g_new0(struct db_registry, 1);

	reg->limits = *limits;
	reg->next_client_id = 1;
	reg->next_buffer_id = 1;
	reg->clients = g_hash_table_new(g_int64_hash, g_int64_equal);
	reg->clients_by_name = g_hash_table_new(g_str_hash, g_str_equal);
	reg->buffers = g_hash_table_new(g_int64_hash, g_int64_equal);
	reg->tokens = g_hash_table_new_full(token_hash, token_key_equal, NULL, token_free);
	reg->uids = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, uid_usage_free);
	return reg;
}

struct db_registry *db_registry_free(struct db_registry *reg)
{
	GHashTableIter it;
	gpointer value;

	if (!reg)
		return NULL;
	/* Removing every client frees every buffer: each is held by at least one client. */
	while (g_hash_table_size(reg->clients) > 0) {
		g_hash_table_iter_init(&it, reg->clients);
		g_hash_table_iter_next(&it, NULL, &value);
		db_registry_remove_client(reg, value);
	}
	/* Buffers whose every holder left through a path that kept them (none today). */
	while (g_hash_table_size(reg->buffers) > 0) {
		g_hash_table_iter_init(&it, reg->buffers);
		g_hash_table_iter_next(&it, NULL, &value);
		db_registry_revoke(reg, value);
	}
	g_hash_table_unref(reg->clients);
	g_hash_table_unref(reg->clients_by_name);
	g_hash_table_unref(reg->buffers);
	g_hash_table_unref(reg->tokens);
	g_hash_table_unref(reg->uids);
	g_free(reg);
	return NULL;
}

void db_registry_set_limits(struct db_registry *reg, const struct db_limits *limits)
{
	reg->limits = *limits;
}

static int exceeded(struct db_registry *reg, const char *limit, uint64_t value)
{
	reg->exceeded_limit = limit;
	reg->exceeded_value = value;
	return -EDQUOT;
}

static struct db_uid_usage *uid_usage_get(struct db_registry *reg, uid_t uid)
{
	struct db_uid_usage *u = g_hash_table_lookup(reg->uids, GUINT_TO_POINTER(uid));

	if (!u) {
		u = g_new0(struct db_uid_usage, 1);
		u->uid = uid;
		g_hash_table_insert(reg->uids, GUINT_TO_POINTER(uid), u);
	}
	return u;
}

static void uid_usage_put(struct db_registry *reg, struct db_uid_usage *u)
{
	if (u->bytes == 0 && u->buffers == 0 && u->tokens == 0 && u->clients == 0)
		g_hash_table_remove(reg->uids, GUINT_TO_POINTER(u->uid));
}

bool db_role_is_valid(const char *role)
{
	static const char *const roles[] = {"gpu", "media", "cpu", "compositor"};

	for (size_t i = 0; i < ARRAY_SIZE(roles); i++)
		if (strcmp(role, roles[i]) == 0)
			return true;
	return false;
}

int db_registry_check_name(const struct db_registry *reg, const char *name)
{
	size_t len = strlen(name);

	if (len > reg->limits.max_name_length)
		return -ENAMETOOLONG;
	for (size_t i = 0; i < len; i++)
		if (name[i] < 0x20 || name[i] > 0x7e)
			return -EINVAL;
	return 0;
}

static int add_client(struct db_registry *reg, uint64_t id, const char *bus_name, uid_t uid,
		      pid_t pid, const char *role, bool dynamic, const char *name,
		      const char *const *devices, struct db_client **ret)
{
	struct db_uid_usage *usage;
	struct db_client *c;
	size_t n_devices = 0;
	int r;

	if (g_hash_table_contains(reg->clients_by_name, bus_name))
		return -EEXIST;
	if (!db_role_is_valid(role))
		return -EINVAL;
	r = db_registry_check_name(reg, name);
	if (r < 0)
		return r;
	for (; devices && devices[n_devices]; n_devices++) {
		if (n_devices >= MAX_DEVICES || strlen(devices[n_devices]) > 255 ||
		    strncmp(devices[n_devices], "/dev/", 5) != 0)
			return -EINVAL;
	}
	if (g_hash_table_size(reg->clients) >= reg->limits.max_clients)
		return exceeded(reg, "MaxClients", reg->limits.max_clients);
	usage = uid_usage_get(reg, uid);
	if (usage->clients >= reg->limits.max_clients_per_uid) {
		uid_usage_put(reg, usage);
		return exceeded(reg, "MaxClientsPerUid", reg->limits.max_clients_per_uid);
	}

	c = g_new0(struct db_client, 1);
	c->id = id;
	if (id >= reg->next_client_id)
		reg->next_client_id = id + 1;
	c->bus_name = g_strdup(bus_name);
	c->uid = uid;
	c->pid = pid;
	c->role = g_strdup(role);
	c->dynamic = dynamic;
	c->name = g_strdup(name);
	c->devices = g_new0(char *, n_devices + 1);
	for (size_t i = 0; i < n_devices; i++)
		c->devices[i] = g_strdup(devices[i]);
	c->attachments = g_ptr_array_new();
	c->usage = usage;
	usage->clients++;
	g_hash_table_insert(reg->clients, &c->id, c);
	g_hash_table_insert(reg->clients_by_name, c->bus_name, c);
	*ret = c;
	return 0;
}

int db_registry_add_client(struct db_registry *reg, const char *bus_name, uid_t uid, pid_t pid,
			   const char *role, bool dynamic, const char *name,
			   const char *const *devices, struct db_client **ret)
{
	return add_client(reg, reg->next_client_id, bus_name, uid, pid, role, dynamic, name,
			  devices, ret);
}

int db_registry_restore_client(struct db_registry *reg, uint64_t id, const char *bus_name,
			       uid_t uid, pid_t pid, const char *role, bool dynamic,
			       const char *name, const char *const *devices, struct db_client **ret)
{
	if (id == 0 || g_hash_table_contains(reg->clients, &id))
		return -EINVAL;
	return add_client(reg, id, bus_name, uid, pid, role, dynamic, name, devices, ret);
}

struct db_client *db_registry_find_client(struct db_registry *reg, uint64_t id)
{
	return g_hash_table_lookup(reg->clients, &id);
}

struct db_client *db_registry_find_client_by_name(struct db_registry *reg, const char *bus_name)
{
	return g_hash_table_lookup(reg->clients_by_name, bus_name);
}

struct db_buffer *db_registry_find_buffer(struct db_registry *reg, uint64_t id)
{
	return g_hash_table_lookup(reg->buffers, &id);
}

static void token_remove(struct db_registry *reg, struct db_token *t)
{
	t->issuer->n_tokens--;
	t->issuer->usage->tokens--;
	t->buffer->n_tokens--;
	uid_usage_put(reg, t->issuer->usage);
	g_hash_table_remove(reg->tokens, &t->bytes);
}

/* Drops the tokens matching a buffer and/or an issuer (NULL: any). */
static void tokens_remove_matching(struct db_registry *reg, struct db_buffer *buf,
				   struct db_client *issuer)
{
	GHashTableIter it;
	gpointer value;

	if ((buf && buf->n_tokens == 0) || (issuer && issuer->n_tokens == 0))
		return;
	g_hash_table_iter_init(&it, reg->tokens);
	while (g_hash_table_iter_next(&it, NULL, &value)) {
		struct db_token *t = value;

		if ((buf && t->buffer != buf) || (issuer && t->issuer != issuer))
			continue;
		t->issuer->n_tokens--;
		t->issuer->usage->tokens--;
		t->buffer->n_tokens--;
		g_hash_table_iter_remove(&it);
	}
}

static void buffer_free(struct db_registry *reg, struct db_buffer *buf)
{
	if (reg->buffer_freed)
		reg->buffer_freed(buf, reg->hook_userdata);
	tokens_remove_matching(reg, buf, NULL);
	g_hash_table_remove(reg->buffers, &buf->id);
	reg->bytes_in_use -= buf->size;
	buf->usage->bytes -= buf->size;
	buf->usage->buffers--;
	uid_usage_put(reg, buf->usage);
	if (buf->fd >= 0)
		close(buf->fd);
	if (buf->old_fd >= 0)
		close(buf->old_fd);
	g_ptr_array_unref(buf->attachments);
	g_free(buf->kernel_view);
	g_free(buf->name);
	g_free(buf);
}

static void attachment_unlink(struct db_attachment *a)
{
	struct db_buffer *buf = a->buffer;
	struct db_client *c = a->client;

	if (a->path == DB_PATH_CACHED)
		buf->n_cached--;
	if (a->needs_reacquire)
		buf->n_pending_reacquire--;
	c->bytes_held -= buf->size;
	g_ptr_array_remove_fast(c->attachments, a);
	g_ptr_array_remove_fast(buf->attachments, a);
	g_free(a);
}

static void move_settle(struct db_buffer *buf)
{
	if (buf->old_fd >= 0 && buf->n_pending_reacquire == 0) {
		close(buf->old_fd);
		buf->old_fd = -1;
	}
}

void db_registry_remove_client(struct db_registry *reg, struct db_client *c)
{
	tokens_remove_matching(reg, NULL, c);
	while (c->attachments->len > 0) {
		struct db_attachment *a =
			g_ptr_array_index(c->attachments, c->attachments->len - 1);
		struct db_buffer *buf = a->buffer;

		attachment_unlink(a);
		if (buf->attachments->len == 0)
			buffer_free(reg, buf);
		else
			move_settle(buf);
	}
	/* Buffers it owned or exported but no longer holds live on for their holders; they
	 * name it by id, which is never reused. */
	if (reg->client_freed)
		reg->client_freed(c, reg->hook_userdata);
	g_hash_table_remove(reg->clients_by_name, c->bus_name);
	g_hash_table_remove(reg->clients, &c->id);
	c->usage->clients--;
	uid_usage_put(reg, c->usage);
	g_ptr_array_unref(c->attachments);
	g_strfreev(c->devices);
	g_free(c->bus_name);
	g_free(c->role);
	g_free(c->name);
	g_free(c);
}

static int check_holder_limits(struct db_registry *reg, struct db_client *c, size_t size,
			       unsigned count)
{
	uint64_t bytes;

	if (c->attachments->len + (uint64_t)count > reg->limits.max_buffers_per_client)
		return exceeded(reg, "MaxBuffersPerClient", reg->limits.max_buffers_per_client);
	if (__builtin_mul_overflow((uint64_t)size, (uint64_t)count, &bytes) ||
	    c->bytes_held + bytes > reg->limits.max_bytes_per_client ||
	    c->bytes_held + bytes < c->bytes_held)
		return exceeded(reg, "MaxBytesPerClient", reg->limits.max_bytes_per_client);
	return 0;
}

int db_registry_check_allocation(struct db_registry *reg, struct db_client *owner, size_t size,
				 unsigned count)
{
	uint64_t bytes;
	int r;

	if (size > reg->limits.max_buffer_size)
		return exceeded(reg, "MaxBufferSize", reg->limits.max_buffer_size);
	r = check_holder_limits(reg, owner, size, count);
	if (r < 0)
		return r;
	if (owner->usage->buffers + count > reg->limits.max_buffers_per_uid)
		return exceeded(reg, "MaxBuffersPerUid", reg->limits.max_buffers_per_uid);
	bytes = (uint64_t)size * count; /* no overflow: checked above */
	if (owner->usage->bytes + bytes > reg->limits.max_bytes_per_uid)
		return exceeded(reg, "MaxBytesPerUid", reg->limits.max_bytes_per_uid);
	return 0;
}

static struct db_attachment *attachment_new(struct db_client *c, struct db_buffer *buf)
{
	struct db_attachment *a = g_new0(struct db_attachment, 1);

	a->buffer = buf;
	a->client = c;
	a->path = db_attach_path_for(c->dynamic, buf->exporter_dynamic);
	if (a->path == DB_PATH_CACHED)
		buf->n_cached++;
	c->bytes_held += buf->size;
	g_ptr_array_add(c->attachments, a);
	g_ptr_array_add(buf->attachments, a);
	return a;
}

int db_registry_add_buffer(struct db_registry *reg, struct db_client *owner, int fd, size_t size,
			   const struct db_layout *layout, const char *backend, bool is_dmabuf,
			   const char *name, struct db_client *exporter, struct db_buffer **ret)
{
	struct db_buffer *buf;
	int r;

	r = db_registry_check_allocation(reg, owner, size, 1);
	if (r < 0)
		return r;

	buf = g_new0(struct db_buffer, 1);
	buf->id = reg->next_buffer_id++;
	buf->fd = fd;
	buf->old_fd = -1;
	buf->size = size;
	if (layout)
		buf->layout = *layout;
	buf->layout.size = size;
	buf->backend = backend;
	buf->is_dmabuf = is_dmabuf;
	buf->name = g_strdup(name ? name : "");
	buf->owner_uid = owner->uid;
	buf->owner_client_id = owner->id;
	/* The daemon's backends can re-back a buffer, so they export as dynamic. */
	buf->exporter_client_id = exporter ? exporter->id : 0;
	buf->exporter_dynamic = exporter ? exporter->dynamic : true;
	buf->attachments = g_ptr_array_new();
	buf->usage = owner->usage;
	buf->usage->bytes += size;
	buf->usage->buffers++;
	reg->bytes_in_use += size;
	g_hash_table_insert(reg->buffers, &buf->id, buf);
	attachment_new(owner, buf);
	*ret = buf;
	return 0;
}

struct db_attachment *db_buffer_find_attachment(struct db_buffer *buf, struct db_client *c)
{
	/* A client holds few buffers compared with a buffer's holders; walk the shorter list. */
	GPtrArray *list =
		c->attachments->len < buf->attachments->len ? c->attachments : buf->attachments;

	for (guint i = 0; i < list->len; i++) {
		struct db_attachment *a = g_ptr_array_index(list, i);

		if (a->buffer == buf && a->client == c)
			return a;
	}
	return NULL;
}

int db_registry_attach(struct db_registry *reg, struct db_client *c, struct db_buffer *buf,
		       struct db_attachment **ret)
{
	struct db_attachment *a = db_buffer_find_attachment(buf, c);
	int r;

	if (!a) {
		r = check_holder_limits(reg, c, buf->size, 1);
		if (r < 0)
			return r;
		a = attachment_new(c, buf);
	}
	if (ret)
		*ret = a;
	return 0;
}

int db_registry_detach(struct db_registry *reg, struct db_client *c, struct db_buffer *buf)
{
	struct db_attachment *a = db_buffer_find_attachment(buf, c);

	if (!a)
		return -ENOENT;
	attachment_unlink(a);
	if (buf->attachments->len == 0)
		buffer_free(reg, buf);
	else
		move_settle(buf);
	return 0;
}

static void tokens_sweep_expired(struct db_registry *reg, struct db_client *issuer,
				 uint64_t now_usec)
{
	GHashTableIter it;
	gpointer value;

	g_hash_table_iter_init(&it, reg->tokens);
	while (g_hash_table_iter_next(&it, NULL, &value)) {
		struct db_token *t = value;

		if (t->issuer != issuer || t->expires_usec == 0 || t->expires_usec > now_usec)
			continue;
		t->issuer->n_tokens--;
		t->issuer->usage->tokens--;
		t->buffer->n_tokens--;
		g_hash_table_iter_remove(&it);
	}
}

int db_registry_share(struct db_registry *reg, struct db_client *c, struct db_buffer *buf,
		      bool single_use, uint64_t expires_usec, bool uid_bound, uid_t uid,
		      uint64_t now_usec, struct db_token **ret)
{
	struct db_token *t;
	int r;

	if (!db_buffer_find_attachment(buf, c))
		return -EACCES;
	if (c->n_tokens >= reg->limits.max_tokens_per_client ||
	    c->usage->tokens >= reg->limits.max_tokens_per_uid)
		tokens_sweep_expired(reg, c, now_usec);
	if (c->n_tokens >= reg->limits.max_tokens_per_client)
		return exceeded(reg, "MaxTokensPerClient", reg->limits.max_tokens_per_client);
	if (c->usage->tokens >= reg->limits.max_tokens_per_uid)
		return exceeded(reg, "MaxTokensPerUid", reg->limits.max_tokens_per_uid);

	t = g_new0(struct db_token, 1);
	do {
		r = db_token_generate(&t->bytes);
		if (r < 0) {
			g_free(t);
			return r;
		}
		/* A collision of 128 random bits does not happen; check anyway, it is cheap. */
	} while (g_hash_table_contains(reg->tokens, &t->bytes));
	t->buffer = buf;
	t->issuer = c;
	t->single_use = single_use;
	t->expires_usec = expires_usec;
	t->uid_bound = uid_bound;
	t->uid = uid;
	c->n_tokens++;
	c->usage->tokens++;
	buf->n_tokens++;
	g_hash_table_insert(reg->tokens, &t->bytes, t);
	*ret = t;
	return 0;
}

int db_registry_redeem(struct db_registry *reg, struct db_client *c,
		       const struct db_token_bytes *token, uint64_t now_usec,
		       struct db_attachment **ret)
{
	struct db_token *t = g_hash_table_lookup(reg->tokens, token);
	int r;

	if (!t)
		return -ENOENT;
	if (t->expires_usec && t->expires_usec <= now_usec) {
		token_remove(reg, t);
		return -ENOENT;
	}
	if (t->uid_bound && t->uid != c->uid)
		return -EACCES;
	r = db_registry_attach(reg, c, t->buffer, ret);
	if (r < 0)
		return r;
	if (t->single_use)
		token_remove(reg, t);
	return 0;
}

void db_registry_revoke(struct db_registry *reg, struct db_buffer *buf)
{
	tokens_remove_matching(reg, buf, NULL);
	while (buf->attachments->len > 0)
		attachment_unlink(g_ptr_array_index(buf->attachments, buf->attachments->len - 1));
	buffer_free(reg, buf);
}

int db_registry_begin_move(struct db_registry *reg, struct db_buffer *buf, int new_fd)
{
	(void)reg;
	if (db_buffer_is_pinned(buf) || buf->old_fd >= 0)
		return -EBUSY;
	buf->old_fd = buf->fd;
	buf->fd = new_fd;
	for (guint i = 0; i < buf->attachments->len; i++) {
		struct db_attachment *a = g_ptr_array_index(buf->attachments, i);

		a->needs_reacquire = true;
	}
	buf->n_pending_reacquire = buf->attachments->len;
	move_settle(buf);
	return 0;
}

int db_registry_reacquire(struct db_registry *reg, struct db_client *c, struct db_buffer *buf)
{
	struct db_attachment *a = db_buffer_find_attachment(buf, c);

	(void)reg;
	if (!a)
		return -ENOENT;
	if (a->needs_reacquire) {
		a->needs_reacquire = false;
		buf->n_pending_reacquire--;
		move_settle(buf);
	}
	return 0;
}

void db_registry_finish_move(struct db_registry *reg, struct db_buffer *buf)
{
	(void)reg;
	for (guint i = 0; i < buf->attachments->len; i++) {
		struct db_attachment *a = g_ptr_array_index(buf->attachments, i);

		a->needs_reacquire = false;
	}
	buf->n_pending_reacquire = 0;
	move_settle(buf);
}

int db_registry_restore_buffer(struct db_registry *reg, const struct db_buffer *tmpl, int fd,
			       struct db_buffer **ret)
{
	struct db_buffer *buf;

	if (tmpl->id == 0 || g_hash_table_contains(reg->buffers, &tmpl->id))
		return -EINVAL;
	buf = g_new0(struct db_buffer, 1);
	buf->id = tmpl->id;
	if (buf->id >= reg->next_buffer_id)
		reg->next_buffer_id = buf->id + 1;
	buf->fd = fd;
	buf->old_fd = -1;
	buf->size = tmpl->size;
	buf->layout = tmpl->layout;
	buf->backend = tmpl->backend;
	buf->is_dmabuf = tmpl->is_dmabuf;
	buf->name = g_strdup(tmpl->name ? tmpl->name : "");
	buf->owner_uid = tmpl->owner_uid;
	buf->owner_client_id = tmpl->owner_client_id;
	buf->exporter_client_id = tmpl->exporter_client_id;
	buf->exporter_dynamic = tmpl->exporter_dynamic;
	buf->attachments = g_ptr_array_new();
	buf->usage = uid_usage_get(reg, buf->owner_uid);
	buf->usage->bytes += buf->size;
	buf->usage->buffers++;
	reg->bytes_in_use += buf->size;
	g_hash_table_insert(reg->buffers, &buf->id, buf);
	*ret = buf;
	return 0;
}

void db_registry_restore_attachment(struct db_registry *reg, struct db_client *c,
				    struct db_buffer *buf)
{
	(void)reg;
	/* What was held before the restart stays held, whatever the limits say now. */
	if (!db_buffer_find_attachment(buf, c))
		attachment_new(c, buf);
}

int db_registry_restore_token(struct db_registry *reg, const struct db_token *tmpl)
{
	struct db_token *t;

	if (g_hash_table_contains(reg->tokens, &tmpl->bytes))
		return -EEXIST;
	t = g_new0(struct db_token, 1);
	*t = *tmpl;
	t->issuer->n_tokens++;
	t->issuer->usage->tokens++;
	t->buffer->n_tokens++;
	g_hash_table_insert(reg->tokens, &t->bytes, t);
	return 0;
}

void db_registry_drop_orphans(struct db_registry *reg)
{
	GHashTableIter it;
	gpointer value;
	GPtrArray *orphans = g_ptr_array_new();

	g_hash_table_iter_init(&it, reg->buffers);
	while (g_hash_table_iter_next(&it, NULL, &value))
		if (((struct db_buffer *)value)->attachments->len == 0)
			g_ptr_array_add(orphans, value);
	for (guint i = 0; i < orphans->len; i++)
		buffer_free(reg, g_ptr_array_index(orphans, i));
	g_ptr_array_unref(orphans);
}
