// SPDX-License-Identifier: MIT
/*
 * Peer connections: the hot path. The socket pair is the daemon's own, so a client that
 * stops reading (or never speaks) must not make the daemon wait or queue without bound:
 * every bound here is checked from the event loop, never by blocking.
 */
#include "peer.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <systemd/sd-id128.h>

#include "broker.h"
#include "budget.h"
#include "peer-wire.h"
#include "log.h"
#include "macros.h"

/* Bytes the kernel may hold for a peer that does not read (the kernel doubles it). */
#define DB_PEER_SNDBUF (64 * 1024)

/*
 * What the peers of one uid have queued for their clients, together: per peer the window
 * bounds it, but one uid may open as many peers as it has clients, so the sum is bounded
 * too. Freed with the uid's last peer.
 */
struct peer_uid {
	uid_t uid;
	struct db_budget bytes;
	struct db_budget fds;
	GPtrArray *peers; /* struct db_peer *, not owned */
};

struct db_peer {
	struct db_broker *broker;
	struct peer_uid *owner_uid; /* shared with the uid's other peers */
	sd_bus *bus; /* owned: a server on the daemon's own socket pair, fed by the wire */
	struct db_peer_wire *wire; /* owned: the client's socket */
	uint64_t client_id;
};

static void peer_uid_leave(struct db_peer *peer)
{
	struct peer_uid *pu = peer->owner_uid;

	if (!pu)
		return;
	g_ptr_array_remove_fast(pu->peers, peer);
	if (pu->peers->len == 0) {
		g_hash_table_remove(peer->broker->peer_uids, &pu->uid);
		g_ptr_array_unref(pu->peers);
		g_free(pu);
	}
	peer->owner_uid = NULL;
}

static void peer_free(struct db_peer *peer)
{
	/* The wire gives the uid's budgets back first: they may go with the uid's last peer. */
	db_peer_wire_free(peer->wire);
	peer_uid_leave(peer);
	/*
	 * Close, never flush: a flush would wait for the wire to read. What is unwritten is
	 * dropped.
	 */
	sd_bus_close(peer->bus);
	sd_bus_unref(peer->bus);
	g_free(peer);
}

void db_peer_close(struct db_peer *peer)
{
	struct db_broker *b;
	struct db_client *c;

	if (!peer)
		return;
	b = peer->broker;
	c = db_registry_find_client(b->reg, peer->client_id);
	if (c && c->bus_data == peer)
		c->bus_data = NULL;
	g_hash_table_remove(b->peers, peer->bus);
	peer_free(peer);
}

void db_peers_close_all(struct db_broker *b)
{
	GHashTableIter it;
	gpointer value;

	while (g_hash_table_size(b->peers) > 0) {
		g_hash_table_iter_init(&it, b->peers);
		g_hash_table_iter_next(&it, NULL, &value);
		db_peer_close(value);
	}
}

struct db_peer *db_peer_of_message(struct db_broker *b, sd_bus_message *m)
{
	return g_hash_table_lookup(b->peers, sd_bus_message_get_bus(m));
}

struct db_client *db_peer_client(struct db_peer *peer)
{
	return db_registry_find_client(peer->broker->reg, peer->client_id);
}

sd_bus *db_peer_get_bus(struct db_peer *peer)
{
	return peer->bus;
}

int db_peer_send(struct db_peer *peer, sd_bus_message *m)
{
	/* The wire counts it toward the client's window when it comes out of sd-bus. */
	return sd_bus_send(peer->bus, m, NULL);
}

/*
 * Processes everything sd-bus has: the wire hands it one whole message at a time, so nothing
 * read stays unprocessed until the client sends more. A handler may close the peer (its
 * client leaving): the bus is looked up again after each round.
 */
static int peer_deliver(void *userdata)
{
	struct db_peer *peer = userdata;
	struct db_broker *b = peer->broker;
	sd_bus *bus = sd_bus_ref(peer->bus);
	int r;

	do
		r = sd_bus_process(bus, NULL);
	while (r > 0 && g_hash_table_lookup(b->peers, bus));
	sd_bus_unref(bus);
	return r < 0 ? r : 0;
}

/* sd-bus's socket pair had no room for all it wrote: let it write the rest. */
static int peer_pump(void *userdata)
{
	struct db_peer *peer = userdata;
	uint64_t before = 0, after = 0;
	int r;

	if (sd_bus_get_n_queued_write(peer->bus, &before) < 0 || before == 0)
		return 0;
	r = sd_bus_process(peer->bus, NULL);
	if (r < 0)
		return r;
	(void)sd_bus_get_n_queued_write(peer->bus, &after);
	return after < before;
}

/* One of the uid's peers was read: the others may read again if the uid has room now. */
static void peer_uid_room(void *userdata)
{
	struct peer_uid *pu = ((struct db_peer *)userdata)->owner_uid;

	if (!pu || pu->peers->len < 2 || db_budget_full(&pu->bytes) || db_budget_full(&pu->fds))
		return;
	for (guint i = 0; i < pu->peers->len; i++)
		db_peer_wire_rearm(((struct db_peer *)g_ptr_array_index(pu->peers, i))->wire);
}

static void peer_closed(void *userdata, const char *reason)
{
	struct db_peer *peer = userdata;

	if (reason)
		log_notice("Client %" PRIu64 " %s: closing its peer connection", peer->client_id,
			   reason);
	db_peer_close(peer);
}

static const struct db_peer_wire_hooks wire_hooks = {
	.deliver = peer_deliver,
	.pump = peer_pump,
	.uid_room = peer_uid_room,
	.closed = peer_closed,
};

int db_peer_open(struct db_broker *b, struct db_client *c, int *ret_client_fd)
{
	const struct db_limits *l = db_registry_limits(b->reg);
	struct db_peer_wire_limits wl = {
		.max_message_size = l->max_message_size,
		.window_bytes = l->peer_window_bytes,
		.window_calls = l->peer_window_calls,
		.auth_timeout_us = (uint64_t)b->config.peer_auth_timeout_ms * 1000,
		.message_timeout_us = (uint64_t)b->config.peer_message_timeout_ms * 1000,
		.stall_timeout_us = (uint64_t)b->config.peer_stall_timeout_ms * 1000,
	};
	_cleanup_(closep) int theirs = -1, bus_fd = -1;
	struct db_peer *peer;
	sd_id128_t id;
	int sv[2], r;

	if (c->bus_data)
		return -EBUSY;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
		return -errno;
	theirs = sv[1];
	/* The client's end is its own business: it gets it blocking, as before. */
	if (fcntl(theirs, F_SETFL, 0) < 0)
		return -errno;
	/*
	 * The kernel's share of what waits for a client that does not read stays small; the
	 * rest is the wire's, counted against the window.
	 */
	(void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &(int){DB_PEER_SNDBUF}, sizeof(int));

	peer = g_new0(struct db_peer, 1);
	peer->broker = b;
	peer->client_id = c->id;
	peer->owner_uid = g_hash_table_lookup(b->peer_uids, &c->uid);
	if (!peer->owner_uid) {
		peer->owner_uid = g_new0(struct peer_uid, 1);
		peer->owner_uid->uid = c->uid;
		peer->owner_uid->peers = g_ptr_array_new();
		db_budget_init(&peer->owner_uid->bytes, l->peer_window_bytes_per_uid);
		db_budget_init(&peer->owner_uid->fds, l->peer_window_fds_per_uid);
		g_hash_table_insert(b->peer_uids, &peer->owner_uid->uid, peer->owner_uid);
	}
	g_ptr_array_add(peer->owner_uid->peers, peer);
	wl.uid_bytes = &peer->owner_uid->bytes;
	wl.uid_fds = &peer->owner_uid->fds;
	r = db_peer_wire_new(b->event, sv[0], &wl, &wire_hooks, peer, &bus_fd, &peer->wire);
	if (r < 0) {
		peer_uid_leave(peer);
		g_free(peer);
		return r;
	}
	r = sd_bus_new(&peer->bus);
	if (r >= 0)
		r = sd_id128_randomize(&id);
	/*
	 * The socket pair is ours, so SO_PEERCRED would name the daemon, not the client:
	 * the client was authenticated by the bus when it asked, so the peer is anonymous.
	 */
	if (r >= 0)
		r = sd_bus_set_fd(peer->bus, bus_fd, bus_fd);
	if (r >= 0) {
		bus_fd = -1; /* the bus owns it now */
		r = sd_bus_set_server(peer->bus, 1, id);
	}
	if (r >= 0)
		r = sd_bus_set_anonymous(peer->bus, 1);
	if (r >= 0)
		r = sd_bus_negotiate_fds(peer->bus, 1);
	if (r >= 0)
		r = b->hooks.add_objects(b, peer->bus);
	if (r >= 0)
		r = sd_bus_start(peer->bus);
	/* The wire's own handshake is in the socket already: sd-bus answers it now, without
	 * waiting for anyone. */
	for (int i = 0; r >= 0 && i < 8 && sd_bus_is_ready(peer->bus) <= 0; i++)
		r = sd_bus_process(peer->bus, NULL);
	if (r >= 0 && sd_bus_is_ready(peer->bus) <= 0)
		r = -EPROTO;
	if (r < 0) {
		peer_free(peer);
		return r;
	}
	g_hash_table_insert(b->peers, peer->bus, peer);
	c->bus_data = peer;
	*ret_client_fd = take_fd(&theirs);
	return 0;
}
