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
	uint64_t max_bytes_total; /* every buffer the daemon keeps alive, whoever owns it */
	uint64_t max_buffers_total;
	/* One message a client sends on its peer connection (peer-wire.h): checked from its
	 * fixed header before the rest is read. */
	uint64_t max_message_size;
	/* A peer's window: calls waiting for answers, and bytes of answers and signals waiting
	 * for the client to read them. While either is reached the daemon reads nothing more
	 * from that peer. */
	uint64_t peer_window_calls;
	uint64_t peer_window_bytes;
	/* The same for every peer of one uid together, bytes and descriptors: one uid may have
	 * as many peers as it has clients. */
	uint64_t peer_window_bytes_per_uid;
	uint64_t peer_window_fds_per_uid;
	/* Bytes of events sent to one subscriber and not yet acknowledged (monitor.c): past
	 * it events are counted as missed, and the subscriber is told once. */
	uint64_t subscriber_window_bytes;
	/* Buffer collections (collection.c): those a client takes part in, the participants
	 * and unused join tokens of one collection, and the buffers one allocates. */
	uint64_t max_collections_per_client;
	uint64_t max_participants_per_collection;
	uint64_t max_buffers_per_collection;
	/* Streams (stream.c): those a client takes part in (producing or consuming), and the
	 * consumers of one stream (each a link, a socket pair, between two clients). */
	uint64_t max_streams_per_client;
	uint64_t max_consumers_per_stream;
	/* The producers' ends of new links that the producers of one uid have not taken yet
	 * (TakeStreamLink): each is an fd the daemon holds until taken or its deadline. */
	uint64_t max_pending_links_per_uid;
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
	uint64_t lingering; /* of its buffers, those that linger */
};

struct db_client {
	uint64_t id;
	char *bus_name; /* unique name; the identity of the client */
	uid_t uid;
	pid_t pid;
	char *role;
	bool dynamic;
	bool compact_layouts; /* Register's "compact_layouts": replies carry compact layouts */
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
	uint32_t n_moves; /* moves put in place: names the backing's fd-store entry */
	size_t size; /* what the memory takes, and what its owner is charged */
	struct db_layout layout;
	const char *backend; /* static string */
	bool is_dmabuf;
	bool contiguous; /* physically contiguous: a move must keep it so */
	bool client_memory; /* the pages are a client's memfd (charged to its cgroup) */
	bool moving; /* new backing being made (its size is charged already) */
	/* No attachment is left, but the pages are still reachable outside the daemon (a
	 * client kept its fd or a mapping): it stays charged to its owner until they are not. */
	bool lingering;
	GList *linger_link; /* in the registry's lingering queue */
	/* The last clients that let go of it: when one of them leaves, its pages may have
	 * become unreachable. */
	uint64_t recent_holders[4];
	unsigned n_recent_holders;
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
	bool kernel_mismatch_logged; /* a disagreement with the kernel is logged once */
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

/* What changed, for the registry's observer (the journal that a restart replays). */
enum db_change_type {
	DB_CHANGE_CLIENT_ADDED, /* client */
	DB_CHANGE_CLIENT_REMOVED, /* client, after its attachments and tokens went */
	DB_CHANGE_BUFFER_ADDED, /* buffer, before its first attachment */
	DB_CHANGE_BUFFER_FREED, /* buffer, before its tokens go and it is freed */
	DB_CHANGE_ATTACHED, /* attachment */
	DB_CHANGE_DETACHED, /* attachment, before it is freed */
	DB_CHANGE_TOKEN_ADDED, /* token */
	DB_CHANGE_TOKEN_REMOVED, /* token (used up, expired, revoked), before it is freed */
	DB_CHANGE_MOVE_BEGUN, /* buffer: fd is the new backing, old_fd the old one */
	DB_CHANGE_REACQUIRED, /* attachment: its holder has fetched the new backing */
	DB_CHANGE_MOVE_FINISHED, /* buffer, before its old backing is closed */
};

struct db_change {
	enum db_change_type type;
	struct db_client *client;
	struct db_buffer *buffer;
	struct db_attachment *attachment;
	struct db_token *token;
};

/*
 * The registry itself is private to registry.c: other modules read it through the functions
 * below, and are told of changes through the hooks.
 */
struct db_registry;

struct db_registry_hooks {
	/* A client is about to go: before its attachments (the bus layer closes its peer
	 * connection, whose unsent replies hold copies of buffer fds). */
	void (*client_leaving)(struct db_client *c, void *userdata);
	/* A client went: its attachments are gone (some buffers may linger). */
	void (*client_freed)(struct db_client *c, void *userdata);
	/*
	 * How many references to buf's memory exist outside the daemon (held fds, mappings,
	 * fds in flight), as the kernel counts them; negative when it cannot tell. Asked when
	 * the last attachment goes, and again for lingering buffers only when a quota check
	 * would otherwise fail: never by polling.
	 */
	int (*outside_refs)(struct db_buffer *buf, void *userdata);
	/*
	 * Called at every change, in order and before the call that made it is answered: what
	 * it records is what a restart gets back. It must not change the registry.
	 */
	void (*changed)(const struct db_change *change, void *userdata);
	void *userdata;
};

/* Replaces every hook (NULL members: none). */
void db_registry_set_hooks(struct db_registry *reg, const struct db_registry_hooks *hooks);
/* Stops telling changes (the fd store at exit), keeping the other hooks. */
void db_registry_stop_changes(struct db_registry *reg);

const struct db_limits *db_registry_limits(const struct db_registry *reg);
unsigned db_registry_n_clients(const struct db_registry *reg);
unsigned db_registry_n_buffers(const struct db_registry *reg);
unsigned db_registry_n_tokens(const struct db_registry *reg);
/* Every byte charged: buffers, lingering ones, and second backings of moves. */
uint64_t db_registry_bytes_in_use(const struct db_registry *reg);

/* The limit the last -EDQUOT hit, and its value, for the error message. */
const char *db_registry_exceeded(const struct db_registry *reg, uint64_t *ret_value);
/* Records a limit kept outside the registry (FdStoreMax) as the one that was hit. */
int db_registry_note_exceeded(struct db_registry *reg, const char *limit, uint64_t value);

/* The ids the next client and buffer will get; ids are never reused. */
void db_registry_next_ids(const struct db_registry *reg, uint64_t *ret_client,
			  uint64_t *ret_buffer);
/* Makes sure no id below these is handed out again (after a restart). */
void db_registry_raise_next_ids(struct db_registry *reg, uint64_t client, uint64_t buffer);

/* Walks clients, buffers or tokens, in no order. The registry must not change meanwhile. */
struct db_registry_iter {
	GHashTableIter it;
};
void db_registry_iter_clients(const struct db_registry *reg, struct db_registry_iter *it);
void db_registry_iter_buffers(const struct db_registry *reg, struct db_registry_iter *it);
void db_registry_iter_tokens(const struct db_registry *reg, struct db_registry_iter *it);
struct db_client *db_registry_next_client(struct db_registry_iter *it);
struct db_buffer *db_registry_next_buffer(struct db_registry_iter *it);
struct db_token *db_registry_next_token(struct db_registry_iter *it);

struct db_registry *db_registry_new(const struct db_limits *limits);
struct db_registry *db_registry_free(struct db_registry *reg);

/* Roles a client may declare. */
bool db_role_is_valid(const char *role);

/* Checks a client-supplied name: length within max_name_length (-ENAMETOOLONG), printable
 * ASCII only (-EINVAL). */
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
struct db_token *db_registry_find_token(struct db_registry *reg,
					const struct db_token_bytes *bytes);

/* Would allocating count buffers of size bytes stay within owner's limits? -EDQUOT or
 * -EINVAL (size over MaxBufferSize, which is a per-buffer limit, also -EDQUOT). */
int db_registry_check_allocation(struct db_registry *reg, struct db_client *owner, size_t size,
				 unsigned count);

/*
 * Adds a buffer whose memory is fd (taken on success) and attaches owner to it.
 * exporter: NULL when the daemon's backend exported it (dynamic), else the exporting
 * client (its declared capability is the exporter's). -EDQUOT on limits.
 */
enum {
	DB_BUFFER_DMABUF = 1 << 0, /* fd is a dma-buf (not a memfd) */
	DB_BUFFER_CONTIGUOUS = 1 << 1, /* physically contiguous memory */
	DB_BUFFER_CLIENT_MEMORY = 1 << 2, /* the pages are the owner's memfd */
};

int db_registry_add_buffer(struct db_registry *reg, struct db_client *owner, int fd, size_t size,
			   const struct db_layout *layout, const char *backend, unsigned flags,
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

/* Drops every attachment and token of buf and frees it (or lets it linger, charged, while
 * its pages are reachable outside). */
void db_registry_revoke(struct db_registry *reg, struct db_buffer *buf);

/* Buffers released by every holder whose pages are still reachable outside the daemon. */
unsigned db_registry_count_lingering(const struct db_registry *reg);

/* Asks the kernel again about (at most a few) lingering buffers and frees those nothing
 * outside reaches: for limits kept outside the registry (FdStoreMax) before they refuse. */
void db_registry_sweep_lingering(struct db_registry *reg);

/*
 * Reserves a move of buf: -EBUSY if it is pinned, lingering, or a move is under way or
 * pending; -EDQUOT if the owner (or the daemon) cannot be charged for a second backing for
 * the time of the move. On success the new backing is charged and buf->moving is set.
 */
int db_registry_reserve_move(struct db_registry *reg, struct db_buffer *buf);

/* Gives back a reservation whose new backing could not be made. */
void db_registry_cancel_move(struct db_registry *reg, struct db_buffer *buf);

/*
 * Puts a reserved move in place: buf's memory is new_fd (taken) from now on. Every holder
 * must then reacquire; the old backing (and its charge) is kept until they have. -EBUSY if
 * a cached attachment came while the backing was made (the reservation is given back).
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

/* A move a restart interrupted: old_fd (taken) stays the old backing until the holders in
 * pending (client ids) reacquire or the move is finished. */
void db_registry_restore_move(struct db_registry *reg, struct db_buffer *buf, int old_fd,
			      const uint64_t *pending, size_t n_pending);

/* Frees restored buffers nobody holds any more (their holders left during the restart). */
void db_registry_drop_orphans(struct db_registry *reg);
