// SPDX-License-Identifier: MIT
#include "registry.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "macros.h"
#include "text.h"

#define MIB (1024ull * 1024ull)
#define GIB (1024ull * MIB)
#define MAX_DEVICES 16
/* fdinfo reads one quota check may spend on lingering buffers. */
#define DB_LINGER_CHECKS 32

struct db_registry {
	struct db_limits limits;
	uint64_t next_client_id;
	uint64_t next_buffer_id;
	GHashTable *clients; /* &id -> struct db_client *, owned */
	GHashTable *clients_by_name; /* bus name -> struct db_client * */
	GHashTable *buffers; /* &id -> struct db_buffer *, owned */
	GHashTable *tokens; /* &bytes -> struct db_token *, owned */
	GHashTable *uids; /* uid -> struct db_uid_usage *, owned */
	/* Released but still reachable: struct db_buffer *, checked from the head, moved to the
	 * tail when still held, so repeated quota checks look at different buffers. */
	GQueue lingering;
	uint64_t bytes_in_use; /* every byte charged, lingering and moves included */
	/* The limit the last -EDQUOT hit, for the error message. */
	const char *exceeded_limit;
	uint64_t exceeded_value;
	struct db_registry_hooks hooks;
};

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
		.max_bytes_total = 16 * GIB,
		.max_buffers_total = 16384,
		.max_message_size = 64 * 1024,
		.peer_window_calls = 64,
		.peer_window_bytes = 1024 * 1024,
		.peer_window_bytes_per_uid = 16 * 1024 * 1024,
		.peer_window_fds_per_uid = 1024,
		.subscriber_window_bytes = 256 * 1024,
		.max_collections_per_client = 8,
		.max_participants_per_collection = 16,
		.max_streams_per_client = 16,
		.max_consumers_per_stream = 16,
		.max_pending_links_per_uid = 64,
		.max_buffers_per_collection = 32,
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

static void buffer_free(struct db_registry *reg, struct db_buffer *buf);

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
	/* What is left lingers (or was restored and never claimed): the daemon's own reference
	 * goes with it. */
	while (g_hash_table_size(reg->buffers) > 0) {
		g_hash_table_iter_init(&it, reg->buffers);
		g_hash_table_iter_next(&it, NULL, &value);
		buffer_free(reg, value);
	}
	g_hash_table_unref(reg->clients);
	g_hash_table_unref(reg->clients_by_name);
	g_hash_table_unref(reg->buffers);
	g_hash_table_unref(reg->tokens);
	g_hash_table_unref(reg->uids);
	g_free(reg);
	return NULL;
}

void db_registry_set_hooks(struct db_registry *reg, const struct db_registry_hooks *hooks)
{
	reg->hooks = *hooks;
}

void db_registry_stop_changes(struct db_registry *reg)
{
	reg->hooks.changed = NULL;
}

const struct db_limits *db_registry_limits(const struct db_registry *reg)
{
	return &reg->limits;
}

unsigned db_registry_n_clients(const struct db_registry *reg)
{
	return g_hash_table_size(reg->clients);
}

unsigned db_registry_n_buffers(const struct db_registry *reg)
{
	return g_hash_table_size(reg->buffers);
}

unsigned db_registry_n_tokens(const struct db_registry *reg)
{
	return g_hash_table_size(reg->tokens);
}

uint64_t db_registry_bytes_in_use(const struct db_registry *reg)
{
	return reg->bytes_in_use;
}

const char *db_registry_exceeded(const struct db_registry *reg, uint64_t *ret_value)
{
	if (ret_value)
		*ret_value = reg->exceeded_value;
	return reg->exceeded_limit ? reg->exceeded_limit : "a limit";
}

void db_registry_next_ids(const struct db_registry *reg, uint64_t *ret_client, uint64_t *ret_buffer)
{
	*ret_client = reg->next_client_id;
	*ret_buffer = reg->next_buffer_id;
}

void db_registry_raise_next_ids(struct db_registry *reg, uint64_t client, uint64_t buffer)
{
	reg->next_client_id = MAX(reg->next_client_id, client);
	reg->next_buffer_id = MAX(reg->next_buffer_id, buffer);
}

void db_registry_iter_clients(const struct db_registry *reg, struct db_registry_iter *it)
{
	g_hash_table_iter_init(&it->it, reg->clients);
}

void db_registry_iter_buffers(const struct db_registry *reg, struct db_registry_iter *it)
{
	g_hash_table_iter_init(&it->it, reg->buffers);
}

void db_registry_iter_tokens(const struct db_registry *reg, struct db_registry_iter *it)
{
	g_hash_table_iter_init(&it->it, reg->tokens);
}

static void *iter_next(struct db_registry_iter *it)
{
	gpointer value;

	return g_hash_table_iter_next(&it->it, NULL, &value) ? value : NULL;
}

struct db_client *db_registry_next_client(struct db_registry_iter *it)
{
	return iter_next(it);
}

struct db_buffer *db_registry_next_buffer(struct db_registry_iter *it)
{
	return iter_next(it);
}

struct db_token *db_registry_next_token(struct db_registry_iter *it)
{
	return iter_next(it);
}

void db_registry_set_limits(struct db_registry *reg, const struct db_limits *limits)
{
	reg->limits = *limits;
}

int db_registry_note_exceeded(struct db_registry *reg, const char *limit, uint64_t value)
{
	reg->exceeded_limit = limit;
	reg->exceeded_value = value;
	return -EDQUOT;
}

static int exceeded(struct db_registry *reg, const char *limit, uint64_t value)
{
	return db_registry_note_exceeded(reg, limit, value);
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
	if (u->bytes == 0 && u->buffers == 0 && u->tokens == 0 && u->clients == 0 &&
	    u->lingering == 0)
		g_hash_table_remove(reg->uids, GUINT_TO_POINTER(u->uid));
}

static void charge(struct db_registry *reg, struct db_uid_usage *usage, uint64_t bytes)
{
	usage->bytes += bytes;
	reg->bytes_in_use += bytes;
}

static void uncharge(struct db_registry *reg, struct db_uid_usage *usage, uint64_t bytes)
{
	usage->bytes -= bytes;
	reg->bytes_in_use -= bytes;
}

/* Tells the observer (the journal) about one change: see enum db_change_type. */
static void emit(struct db_registry *reg, enum db_change_type type, struct db_client *c,
		 struct db_buffer *buf, struct db_attachment *a, struct db_token *t)
{
	if (reg->hooks.changed)
		reg->hooks.changed(&(struct db_change){.type = type,
						       .client = c,
						       .buffer = buf,
						       .attachment = a,
						       .token = t},
				   reg->hooks.userdata);
}

static void emit_attachment(struct db_registry *reg, enum db_change_type type,
			    struct db_attachment *a)
{
	emit(reg, type, a->client, a->buffer, a, NULL);
}

static void emit_token(struct db_registry *reg, enum db_change_type type, struct db_token *t)
{
	emit(reg, type, t->issuer, t->buffer, NULL, t);
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
	/* Names become dma-buf names in /proc and debugfs: printable ASCII only. */
	int r = db_text_check(name, reg->limits.max_name_length, DB_TEXT_ASCII, NULL);

	return r == -ENAMETOOLONG ? r : r < 0 ? -EINVAL : 0;
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
		if (n_devices >= MAX_DEVICES ||
		    db_text_check(devices[n_devices], 255, 0, NULL) < 0 ||
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
	emit(reg, DB_CHANGE_CLIENT_ADDED, c, NULL, NULL, NULL);
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

struct db_token *db_registry_find_token(struct db_registry *reg, const struct db_token_bytes *bytes)
{
	return g_hash_table_lookup(reg->tokens, bytes);
}

struct db_buffer *db_registry_find_buffer(struct db_registry *reg, uint64_t id)
{
	return g_hash_table_lookup(reg->buffers, &id);
}

static void token_remove(struct db_registry *reg, struct db_token *t)
{
	emit_token(reg, DB_CHANGE_TOKEN_REMOVED, t);
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
		emit_token(reg, DB_CHANGE_TOKEN_REMOVED, t);
		t->issuer->n_tokens--;
		t->issuer->usage->tokens--;
		t->buffer->n_tokens--;
		g_hash_table_iter_remove(&it);
	}
}

static void buffer_free(struct db_registry *reg, struct db_buffer *buf)
{
	emit(reg, DB_CHANGE_BUFFER_FREED, NULL, buf, NULL, NULL);
	tokens_remove_matching(reg, buf, NULL);
	g_hash_table_remove(reg->buffers, &buf->id);
	if (buf->lingering) {
		g_queue_delete_link(&reg->lingering, buf->linger_link);
		buf->usage->lingering--;
	}
	/* A second backing is charged while a move makes it or waits for holders. */
	uncharge(reg, buf->usage, buf->moving || buf->old_fd >= 0 ? 2 * buf->size : buf->size);
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
	/* Keep the last few, newest at the end. */
	if (buf->n_recent_holders == ARRAY_SIZE(buf->recent_holders))
		memmove(buf->recent_holders, buf->recent_holders + 1,
			--buf->n_recent_holders * sizeof(buf->recent_holders[0]));
	buf->recent_holders[buf->n_recent_holders++] = c->id;
	g_ptr_array_remove_fast(c->attachments, a);
	g_ptr_array_remove_fast(buf->attachments, a);
	g_free(a);
}

static void move_settle(struct db_registry *reg, struct db_buffer *buf)
{
	if (buf->old_fd >= 0 && buf->n_pending_reacquire == 0) {
		emit(reg, DB_CHANGE_MOVE_FINISHED, NULL, buf, NULL, NULL);
		close(buf->old_fd);
		buf->old_fd = -1;
		uncharge(reg, buf->usage, buf->size);
	}
}

/*
 * The last attachment of buf went (released, revoked, or its holder left). Its memory is
 * freed with it, unless the kernel says someone outside still reaches the pages: then it
 * lingers, charged to its owner, and no client can name it any more.
 */
static void buffer_released(struct db_registry *reg, struct db_buffer *buf)
{
	if (buf->attachments->len > 0) {
		move_settle(reg, buf);
		return;
	}
	if (!reg->hooks.outside_refs || reg->hooks.outside_refs(buf, reg->hooks.userdata) <= 0) {
		buffer_free(reg, buf);
		return;
	}
	tokens_remove_matching(reg, buf, NULL);
	/* Nobody is left to reacquire: the old backing of a move goes now. */
	buf->n_pending_reacquire = 0;
	move_settle(reg, buf);
	buf->lingering = true;
	buf->usage->lingering++;
	g_queue_push_tail(&reg->lingering, buf);
	buf->linger_link = reg->lingering.tail;
}

/*
 * Frees the lingering buffers (of one uid, or all with NULL) whose pages nothing outside
 * reaches any more. Called only when a quota would otherwise refuse a request.
 */
static void sweep_lingering(struct db_registry *reg, struct db_uid_usage *usage)
{
	guint n = reg->lingering.length, checked = 0;
	GList *l = reg->lingering.head;

	if (!reg->hooks.outside_refs || (usage && usage->lingering == 0))
		return;
	/*
	 * Each check reads the kernel's count: a refused request (which costs its sender
	 * nothing) pays for at most DB_LINGER_CHECKS of them; the queue's rotation makes the
	 * next refusal look at others.
	 */
	for (guint i = 0; l && i < n && checked < DB_LINGER_CHECKS; i++) {
		struct db_buffer *buf = l->data;
		GList *next = l->next;

		if (!usage || buf->usage == usage) {
			checked++;
			if (reg->hooks.outside_refs(buf, reg->hooks.userdata) <= 0) {
				buffer_free(reg, buf);
			} else {
				g_queue_unlink(&reg->lingering, l);
				g_queue_push_tail_link(&reg->lingering, l);
			}
		}
		l = next;
	}
}

/* The lingering buffers c let go of last: it leaving may have closed what kept them. */
static void sweep_lingering_of(struct db_registry *reg, const struct db_client *c)
{
	g_autoptr(GPtrArray) gone = g_ptr_array_new();

	if (!reg->hooks.outside_refs)
		return;
	for (GList *l = reg->lingering.head; l; l = l->next) {
		struct db_buffer *buf = l->data;
		bool held = buf->owner_client_id == c->id;

		for (unsigned i = 0; i < buf->n_recent_holders; i++)
			held |= buf->recent_holders[i] == c->id;
		if (held && reg->hooks.outside_refs(buf, reg->hooks.userdata) <= 0)
			g_ptr_array_add(gone, buf);
	}
	for (guint i = 0; i < gone->len; i++)
		buffer_free(reg, g_ptr_array_index(gone, i));
}

void db_registry_sweep_lingering(struct db_registry *reg)
{
	sweep_lingering(reg, NULL);
}

unsigned db_registry_count_lingering(const struct db_registry *reg)
{
	return reg->lingering.length;
}

void db_registry_remove_client(struct db_registry *reg, struct db_client *c)
{
	/* First: what the client's connection still holds must not count as a reference
	 * outside when its buffers are let go of below. */
	if (reg->hooks.client_leaving)
		reg->hooks.client_leaving(c, reg->hooks.userdata);
	tokens_remove_matching(reg, NULL, c);
	while (c->attachments->len > 0) {
		struct db_attachment *a =
			g_ptr_array_index(c->attachments, c->attachments->len - 1);
		struct db_buffer *buf = a->buffer;

		emit_attachment(reg, DB_CHANGE_DETACHED, a);
		attachment_unlink(a);
		buffer_released(reg, buf);
	}
	/*
	 * A client that leaves has usually closed what it held just before: look again at the
	 * buffers it let go of, so their memory goes without waiting for a quota check.
	 */
	sweep_lingering_of(reg, c);
	/* Buffers it owned or exported but no longer holds live on for their holders; they
	 * name it by id, which is never reused. */
	emit(reg, DB_CHANGE_CLIENT_REMOVED, c, NULL, NULL, NULL);
	if (reg->hooks.client_freed)
		reg->hooks.client_freed(c, reg->hooks.userdata);
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

/* The owner's uid and the daemon as a whole could take bytes more in count more buffers. */
static int check_charge_once(struct db_registry *reg, struct db_uid_usage *usage, uint64_t bytes,
			     unsigned count)
{
	if (usage->buffers + count > reg->limits.max_buffers_per_uid)
		return exceeded(reg, "MaxBuffersPerUid", reg->limits.max_buffers_per_uid);
	if (usage->bytes + bytes > reg->limits.max_bytes_per_uid || usage->bytes + bytes < bytes)
		return exceeded(reg, "MaxBytesPerUid", reg->limits.max_bytes_per_uid);
	if (g_hash_table_size(reg->buffers) + (uint64_t)count > reg->limits.max_buffers_total)
		return exceeded(reg, "MaxBuffersTotal", reg->limits.max_buffers_total);
	if (reg->bytes_in_use + bytes > reg->limits.max_bytes_total ||
	    reg->bytes_in_use + bytes < bytes)
		return exceeded(reg, "MaxBytesTotal", reg->limits.max_bytes_total);
	return 0;
}

/*
 * Lingering buffers count until the kernel says their pages are unreachable; that is asked
 * only here, when a limit would refuse: first for the owner's own, then for everyone's
 * (a daemon-wide limit).
 */
static int check_charge(struct db_registry *reg, struct db_uid_usage *usage, uint64_t bytes,
			unsigned count)
{
	int r = check_charge_once(reg, usage, bytes, count);

	if (r == 0 || reg->lingering.length == 0)
		return r;
	sweep_lingering(reg, usage);
	r = check_charge_once(reg, usage, bytes, count);
	if (r == 0 || (strcmp(reg->exceeded_limit, "MaxBuffersTotal") != 0 &&
		       strcmp(reg->exceeded_limit, "MaxBytesTotal") != 0))
		return r;
	sweep_lingering(reg, NULL);
	return check_charge_once(reg, usage, bytes, count);
}

int db_registry_check_allocation(struct db_registry *reg, struct db_client *owner, size_t size,
				 unsigned count)
{
	int r;

	if (size > reg->limits.max_buffer_size)
		return exceeded(reg, "MaxBufferSize", reg->limits.max_buffer_size);
	r = check_holder_limits(reg, owner, size, count);
	if (r < 0)
		return r;
	/* No overflow: checked with the holder's limits. */
	return check_charge(reg, owner->usage, (uint64_t)size * count, count);
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
			   const struct db_layout *layout, const char *backend, unsigned flags,
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
	buf->is_dmabuf = flags & DB_BUFFER_DMABUF;
	buf->contiguous = flags & DB_BUFFER_CONTIGUOUS;
	buf->client_memory = flags & DB_BUFFER_CLIENT_MEMORY;
	buf->name = g_strdup(name ? name : "");
	buf->owner_uid = owner->uid;
	buf->owner_client_id = owner->id;
	/* The daemon's backends can re-back a buffer, so they export as dynamic. */
	buf->exporter_client_id = exporter ? exporter->id : 0;
	buf->exporter_dynamic = exporter ? exporter->dynamic : true;
	buf->attachments = g_ptr_array_new();
	buf->usage = owner->usage;
	charge(reg, buf->usage, size);
	buf->usage->buffers++;
	g_hash_table_insert(reg->buffers, &buf->id, buf);
	emit(reg, DB_CHANGE_BUFFER_ADDED, owner, buf, NULL, NULL);
	emit_attachment(reg, DB_CHANGE_ATTACHED, attachment_new(owner, buf));
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
		emit_attachment(reg, DB_CHANGE_ATTACHED, a);
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
	emit_attachment(reg, DB_CHANGE_DETACHED, a);
	attachment_unlink(a);
	buffer_released(reg, buf);
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
		emit_token(reg, DB_CHANGE_TOKEN_REMOVED, t);
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
	emit_token(reg, DB_CHANGE_TOKEN_ADDED, t);
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
	while (buf->attachments->len > 0) {
		struct db_attachment *a =
			g_ptr_array_index(buf->attachments, buf->attachments->len - 1);

		emit_attachment(reg, DB_CHANGE_DETACHED, a);
		attachment_unlink(a);
	}
	/* Revocation is cooperative: what holders still map stays charged until they let go. */
	buffer_released(reg, buf);
}

int db_registry_reserve_move(struct db_registry *reg, struct db_buffer *buf)
{
	int r;

	if (db_buffer_is_pinned(buf) || buf->old_fd >= 0 || buf->moving || buf->lingering)
		return -EBUSY;
	r = check_charge(reg, buf->usage, buf->size, 0);
	if (r < 0)
		return r;
	charge(reg, buf->usage, buf->size);
	buf->moving = true;
	return 0;
}

void db_registry_cancel_move(struct db_registry *reg, struct db_buffer *buf)
{
	if (!buf->moving)
		return;
	buf->moving = false;
	uncharge(reg, buf->usage, buf->size);
}

int db_registry_begin_move(struct db_registry *reg, struct db_buffer *buf, int new_fd)
{
	if (!buf->moving)
		return -EINVAL;
	if (db_buffer_is_pinned(buf) || buf->old_fd >= 0) {
		db_registry_cancel_move(reg, buf);
		return -EBUSY;
	}
	buf->moving = false;
	/* The new backing is the daemon's, even where the old one was the owner's memfd. */
	buf->client_memory = false;
	buf->old_fd = buf->fd;
	buf->fd = new_fd;
	for (guint i = 0; i < buf->attachments->len; i++) {
		struct db_attachment *a = g_ptr_array_index(buf->attachments, i);

		a->needs_reacquire = true;
	}
	buf->n_pending_reacquire = buf->attachments->len;
	buf->n_moves++;
	emit(reg, DB_CHANGE_MOVE_BEGUN, NULL, buf, NULL, NULL);
	move_settle(reg, buf);
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
		emit_attachment(reg, DB_CHANGE_REACQUIRED, a);
		move_settle(reg, buf);
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
	move_settle(reg, buf);
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
	buf->contiguous = tmpl->contiguous;
	buf->client_memory = tmpl->client_memory;
	buf->name = g_strdup(tmpl->name ? tmpl->name : "");
	buf->owner_uid = tmpl->owner_uid;
	buf->owner_client_id = tmpl->owner_client_id;
	buf->exporter_client_id = tmpl->exporter_client_id;
	buf->exporter_dynamic = tmpl->exporter_dynamic;
	buf->attachments = g_ptr_array_new();
	buf->usage = uid_usage_get(reg, buf->owner_uid);
	charge(reg, buf->usage, buf->size);
	buf->usage->buffers++;
	buf->n_moves = tmpl->n_moves;
	g_hash_table_insert(reg->buffers, &buf->id, buf);
	emit(reg, DB_CHANGE_BUFFER_ADDED, NULL, buf, NULL, NULL);
	*ret = buf;
	return 0;
}

void db_registry_restore_attachment(struct db_registry *reg, struct db_client *c,
				    struct db_buffer *buf)
{
	(void)reg;
	/* What was held before the restart stays held, whatever the limits say now. */
	if (!db_buffer_find_attachment(buf, c))
		emit_attachment(reg, DB_CHANGE_ATTACHED, attachment_new(c, buf));
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
	emit_token(reg, DB_CHANGE_TOKEN_ADDED, t);
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

void db_registry_restore_move(struct db_registry *reg, struct db_buffer *buf, int old_fd,
			      const uint64_t *pending, size_t n_pending)
{
	if (buf->old_fd >= 0 || buf->moving) {
		if (old_fd >= 0)
			close(old_fd);
		return;
	}
	buf->old_fd = old_fd;
	/* The old backing stays charged until the move settles, as after begin_move. */
	charge(reg, buf->usage, buf->size);
	for (guint i = 0; i < buf->attachments->len; i++) {
		struct db_attachment *a = g_ptr_array_index(buf->attachments, i);

		for (size_t k = 0; k < n_pending; k++) {
			if (a->client->id == pending[k]) {
				a->needs_reacquire = true;
				buf->n_pending_reacquire++;
				break;
			}
		}
	}
	emit(reg, DB_CHANGE_MOVE_BEGUN, NULL, buf, NULL, NULL);
	move_settle(reg, buf);
}
