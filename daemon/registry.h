/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The broker's state: clients, buffers, the attachments between them, and tokens.
 * No D-Bus here: the bus layer translates calls into these functions, so the rules
 * (paths, pinning, privacy, quotas, lifetime) are unit-tested without a bus.
 */

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "layout.h"
#include "protocol.h"
#include "token.h"

struct db_limits {
	uint64_t max_buffer_size;
	uint64_t max_bytes_per_client;
	uint64_t max_buffers_per_client; /* attachments a client may hold */
	uint64_t max_tokens_per_client;
	uint64_t max_bytes_per_uid; /* bytes of buffers a uid owns */
	uint64_t max_buffers_per_uid;
	uint64_t max_tokens_per_uid;
	uint64_t max_clients;
	uint64_t max_clients_per_uid;
	uint64_t max_name_length;
};

/* The defaults: generous for a desktop, small enough that one client cannot exhaust the
 * daemon (or its fd limit). */
void db_limits_init_default(struct db_limits *l);

struct db_uid_usage {
	uid_t uid;
	uint64_t bytes;
	uint64_t buffers;
	uint64_t tokens;
	uint64_t clients;
};

struct db_client {
	uint64_t id;
	char *bus_name; /* unique name; the identity of the client */
	uid_t uid;
	pid_t pid;
	char *role;
	bool dynamic;
	char *name;
	char **devices; /* NULL-terminated */
	GPtrArray *attachments; /* struct db_attachment *, owned by the buffer */
	uint64_t bytes_held;
	uint64_t n_tokens;
	struct db_uid_usage *usage;
	void *bus_data; /* the bus layer's per-client state (peer connection) */
};

struct db_buffer {
	uint64_t id;
	int fd; /* owned: the daemon's reference to the memory */
	int old_fd; /* owned: the old backing while a move waits for holders, else -1 */
	size_t size;
	struct db_layout layout;
	const char *backend; /* static string */
	bool is_dmabuf;
	char *name;
	uid_t owner_uid;
	uint64_t owner_client_id; /* resolve with db_registry_find_client(): it may have left */
	uint64_t exporter_client_id; /* 0: the daemon exported it */
	bool exporter_dynamic;
	GPtrArray *attachments; /* struct db_attachment *, owned */
	uint32_t n_cached;
	uint32_t n_pending_reacquire;
	uint64_t n_tokens; /* live tokens naming this buffer */
	struct db_uid_usage *usage;
	void *kernel_view; /* the kernel-view layer's cache, freed with the buffer */
};

struct db_attachment {
	struct db_buffer *buffer;
	struct db_client *client;
	enum db_attach_path path;
	bool needs_reacquire;
};

struct db_token {
	struct db_token_bytes bytes;
	struct db_buffer *buffer;
	struct db_client *issuer;
	bool single_use;
	uint64_t expires_usec; /* CLOCK_MONOTONIC; 0 = never */
	bool uid_bound;
	uid_t uid;
};

struct db_registry {
	struct db_limits limits;
	uint64_t next_client_id;
	uint64_t next_buffer_id;
	GHashTable *clients; /* &id -> struct db_client *, owned */
	GHashTable *clients_by_name; /* bus name -> struct db_client * */
	GHashTable *buffers; /* &id -> struct db_buffer *, owned */
	GHashTable *tokens; /* &bytes -> struct db_token *, owned */
	GHashTable *uids; /* uid -> struct db_uid_usage *, owned */
	uint64_t bytes_in_use;
	/* The limit the last -EDQUOT hit, for the error message. */
	const char *exceeded_limit;
	uint64_t exceeded_value;
	/* Called before a buffer is freed (e.g. to drop its fd-store entry). */
	void (*buffer_freed)(struct db_buffer *buf, void *userdata);
	void (*client_freed)(struct db_client *c, void *userdata);
	void *hook_userdata;
};

struct db_registry *db_registry_new(const struct db_limits *limits);
struct db_registry *db_registry_free(struct db_registry *reg);

/* Roles a client may declare. */
bool db_role_is_valid(const char *role);

/* Checks a client-supplied name: length within max_name_length, printable ASCII only. */
int db_registry_check_name(const struct db_registry *reg, const char *name);

/*
 * Registers a client. -EEXIST: the bus name is registered; -EINVAL: bad role or name;
 * -EDQUOT: MaxClients or MaxClientsPerUid.
 */
int db_registry_add_client(struct db_registry *reg, const char *bus_name, uid_t uid, pid_t pid,
			   const char *role, bool dynamic, const char *name,
			   const char *const *devices, struct db_client **ret);

/* Drops a client: its attachments (freeing buffers nobody else holds) and its tokens. */
void db_registry_remove_client(struct db_registry *reg, struct db_client *c);

struct db_client *db_registry_find_client(struct db_registry *reg, uint64_t id);
struct db_client *db_registry_find_client_by_name(struct db_registry *reg, const char *bus_name);
struct db_buffer *db_registry_find_buffer(struct db_registry *reg, uint64_t id);

/* Would allocating count buffers of size bytes stay within owner's limits? -EDQUOT or
 * -EINVAL (size over MaxBufferSize, which is a per-buffer limit, also -EDQUOT). */
int db_registry_check_allocation(struct db_registry *reg, struct db_client *owner, size_t size,
				 unsigned count);

/*
 * Adds a buffer whose memory is fd (taken on success) and attaches owner to it.
 * exporter: NULL when the daemon's backend exported it (dynamic), else the exporting
 * client (its declared capability is the exporter's). -EDQUOT on limits.
 */
int db_registry_add_buffer(struct db_registry *reg, struct db_client *owner, int fd, size_t size,
			   const struct db_layout *layout, const char *backend, bool is_dmabuf,
			   const char *name, struct db_client *exporter, struct db_buffer **ret);

struct db_attachment *db_buffer_find_attachment(struct db_buffer *buf, struct db_client *c);
static inline bool db_buffer_is_pinned(const struct db_buffer *buf)
{
	return buf->n_cached > 0;
}

/* Attaches c to buf with the path the rule gives; an existing attachment is returned as is.
 * -EDQUOT on the holder's limits. */
int db_registry_attach(struct db_registry *reg, struct db_client *c, struct db_buffer *buf,
		       struct db_attachment **ret);

/* Drops c's attachment to buf; frees buf if it was the last. -ENOENT if c does not hold it. */
int db_registry_detach(struct db_registry *reg, struct db_client *c, struct db_buffer *buf);

/*
 * Issues a token for buf. c must hold buf (-EACCES). -EDQUOT on token limits (expired
 * tokens are swept first). expires_usec is absolute (0: never).
 */
int db_registry_share(struct db_registry *reg, struct db_client *c, struct db_buffer *buf,
		      bool single_use, uint64_t expires_usec, bool uid_bound, uid_t uid,
		      uint64_t now_usec, struct db_token **ret);

/*
 * Imports with a token: -ENOENT for an unknown or expired token, -EACCES when the token is
 * bound to another uid (it stays valid), -EDQUOT on the importer's limits (the token stays
 * valid). A single-use token is consumed on success.
 */
int db_registry_redeem(struct db_registry *reg, struct db_client *c,
		       const struct db_token_bytes *token, uint64_t now_usec,
		       struct db_attachment **ret);

/* Drops every attachment and token of buf and frees it. */
void db_registry_revoke(struct db_registry *reg, struct db_buffer *buf);

/*
 * Starts moving buf to new_fd (taken on success): -EBUSY if it is pinned or a move is
 * pending. Every holder must then reacquire; the old backing is kept until they have.
 */
int db_registry_begin_move(struct db_registry *reg, struct db_buffer *buf, int new_fd);

/* c has fetched the new backing. -ENOENT if c does not hold buf. */
int db_registry_reacquire(struct db_registry *reg, struct db_client *c, struct db_buffer *buf);

/* Ends a pending move now (deadline passed): the old backing is dropped. */
void db_registry_finish_move(struct db_registry *reg, struct db_buffer *buf);

/* Replaces the limits; what is held already stays, new requests meet the new limits. */
void db_registry_set_limits(struct db_registry *reg, const struct db_limits *limits);

/* --- restoring after a restart (fdstore.c) --- */

/* A client with its old id; -EINVAL if the id is taken. */
int db_registry_restore_client(struct db_registry *reg, uint64_t id, const char *bus_name,
			       uid_t uid, pid_t pid, const char *role, bool dynamic,
			       const char *name, const char *const *devices,
			       struct db_client **ret);

/* A buffer like tmpl (id, size, layout, backend, name, owner, exporter) on fd (taken on
 * success), with no attachment yet. */
int db_registry_restore_buffer(struct db_registry *reg, const struct db_buffer *tmpl, int fd,
			       struct db_buffer **ret);

/* Re-attaches c to buf, limits notwithstanding: it held the buffer before the restart. */
void db_registry_restore_attachment(struct db_registry *reg, struct db_client *c,
				    struct db_buffer *buf);

/* A token like tmpl (issuer and buffer already restored). */
int db_registry_restore_token(struct db_registry *reg, const struct db_token *tmpl);

/* Frees restored buffers nobody holds any more (their holders left during the restart). */
void db_registry_drop_orphans(struct db_registry *reg);
