// SPDX-License-Identifier: MIT
/*
 * Peer connections: the hot path. The socket pair is the daemon's own, so a client that
 * stops reading (or never speaks) must not make the daemon wait or queue without bound:
 * every bound here is checked from the event loop, never by blocking.
 */
#include "peer.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <sys/epoll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <systemd/sd-id128.h>

#include "broker.h"
#include "log.h"
#include "macros.h"

/* Bytes of replies the kernel may hold for a peer that does not read (the kernel doubles it). */
#define DB_PEER_SNDBUF (64 * 1024)

struct db_peer {
	struct db_broker *broker;
	sd_bus *bus; /* owned */
	uint64_t client_id;
	sd_event_source *auth_timer; /* owned, until the peer has authenticated */
	sd_event_source *io; /* owned: the socket */
	sd_event_source *more; /* owned defer, one-shot: sd-bus has work the socket does not show */
};

static void peer_free(struct db_peer *peer)
{
	sd_event_source_disable_unref(peer->auth_timer);
	sd_event_source_disable_unref(peer->io);
	sd_event_source_disable_unref(peer->more);
	/*
	 * Close, never flush: a flush writes what the client has not read, and a client that
	 * never reads would hold the daemon there. What is unwritten is dropped.
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

static bool peer_over_limit(struct db_peer *peer)
{
	uint64_t queued = 0;

	if (sd_bus_get_n_queued_write(peer->bus, &queued) < 0)
		return true;
	return queued >= db_registry_limits(peer->broker->reg)->max_peer_queued_messages;
}

static void peer_drop_slow(struct db_peer *peer)
{
	log_notice("Client %" PRIu64 " does not read its peer connection (%" PRIu64
		   " messages waiting): closing it",
		   peer->client_id,
		   db_registry_limits(peer->broker->reg)->max_peer_queued_messages);
	db_peer_close(peer);
}

/*
 * What the loop watches on the peer, brought up to date after anything touched it (no
 * syscall when nothing changed): its input; output while sd-bus holds bytes the kernel did
 * not take; and another round at once while messages wait in sd-bus's queue, or the
 * connection is closing and its Disconnected is still to be dispatched.
 *
 * Why not sd_bus_attach_event(): it gives every connection a prepare callback that sd-event
 * runs on every loop iteration, so each call on any connection paid for every open peer
 * (sd_bus_get_events, sd_bus_get_timeout and two source updates per peer). The peer makes
 * no method calls of its own, so sd-bus has no timeouts here that matter: the
 * authentication deadline is auth_timer's.
 */
static void peer_arm(struct db_peer *peer)
{
	int events = sd_bus_get_events(peer->bus);
	uint32_t io = EPOLLIN;
	bool now = events < 0;
	uint64_t t;

	if (events > 0 && (events & POLLOUT))
		io |= EPOLLOUT;
	if (!now && sd_bus_get_timeout(peer->bus, &t) > 0 && t == 0)
		now = true;
	(void)sd_event_source_set_io_events(peer->io, io);
	if (now)
		(void)sd_event_source_set_enabled(peer->more, SD_EVENT_ONESHOT);
}

int db_peer_send(struct db_peer *peer, sd_bus_message *m)
{
	int r;

	if (peer_over_limit(peer)) {
		peer_drop_slow(peer);
		return -ENOBUFS;
	}
	r = sd_bus_send(peer->bus, m, NULL);
	peer_arm(peer);
	return r;
}

void db_peer_sent(struct db_broker *b, sd_bus *bus)
{
	struct db_peer *peer = bus ? g_hash_table_lookup(b->peers, bus) : NULL;

	if (peer)
		peer_arm(peer);
}

/* One message per wake-up, as sd-bus's own loop glue does: other peers get their turn. */
static int peer_run(struct db_peer *peer)
{
	struct db_broker *b = peer->broker;
	sd_bus *bus = sd_bus_ref(peer->bus);
	int r;

	r = sd_bus_process(bus, NULL);
	/* A handler may have closed it (Disconnected, a peer cut off for not reading). */
	peer = g_hash_table_lookup(b->peers, bus);
	if (peer && r < 0) {
		log_debug("Peer connection of client %" PRIu64 " failed: %s", peer->client_id,
			  strerror(-r));
		db_peer_close(peer);
		peer = NULL;
	}
	if (peer)
		peer_arm(peer);
	sd_bus_unref(bus);
	return 0;
}

static int on_peer_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	(void)s;
	(void)fd;
	(void)revents;
	return peer_run(userdata);
}

static int on_peer_more(sd_event_source *s, void *userdata)
{
	(void)s;
	return peer_run(userdata);
}

/*
 * Runs before any call on the connection is dispatched: a client that sends calls but does
 * not read the replies is cut off here, before the daemon makes (and duplicates fds into)
 * one more reply it cannot deliver.
 */
static int on_peer_message(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_peer *peer = userdata;
	uint8_t type = 0;

	(void)error;
	/* A message means the peer authenticated: its timer would only wake the daemon idly. */
	if (peer->auth_timer)
		peer->auth_timer = sd_event_source_disable_unref(peer->auth_timer);
	if (sd_bus_message_get_type(m, &type) < 0 || type != SD_BUS_MESSAGE_METHOD_CALL ||
	    !peer_over_limit(peer))
		return 0;
	peer_drop_slow(peer);
	return 1; /* handled: nothing more happens on this connection */
}

static int on_peer_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	(void)m;
	(void)error;
	/* sd-bus holds a reference while it dispatches, so the bus may go here. */
	db_peer_close(userdata);
	return 0;
}

static int on_auth_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct db_peer *peer = userdata;

	(void)s;
	(void)usec;
	if (sd_bus_is_ready(peer->bus) > 0) {
		peer->auth_timer = sd_event_source_disable_unref(peer->auth_timer);
		return 0;
	}
	log_notice("Client %" PRIu64 " did not authenticate its peer connection in time: "
		   "closing it",
		   peer->client_id);
	db_peer_close(peer);
	return 0;
}

int db_peer_open(struct db_broker *b, struct db_client *c, int *ret_client_fd)
{
	_cleanup_(closep) int ours = -1, theirs = -1;
	struct db_peer *peer;
	sd_id128_t id;
	int sv[2], r;

	if (c->bus_data)
		return -EBUSY;
	/* sd-bus makes its own end non-blocking; the client's end is its own business. */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	ours = sv[0];
	theirs = sv[1];

	peer = g_new0(struct db_peer, 1);
	peer->broker = b;
	peer->client_id = c->id;
	r = sd_bus_new(&peer->bus);
	if (r < 0) {
		g_free(peer);
		return r;
	}
	r = sd_id128_randomize(&id);
	/*
	 * The socket pair is ours, so SO_PEERCRED would name the daemon, not the client:
	 * the client was authenticated by the bus when it asked, so the peer is anonymous.
	 */
	if (r >= 0)
		r = sd_bus_set_fd(peer->bus, ours, ours);
	if (r >= 0) {
		ours = -1; /* the bus owns it now */
		r = sd_bus_set_server(peer->bus, 1, id);
	}
	if (r >= 0)
		r = sd_bus_set_anonymous(peer->bus, 1);
	if (r >= 0)
		r = sd_bus_negotiate_fds(peer->bus, 1);
	if (r >= 0)
		r = sd_bus_add_filter(peer->bus, NULL, on_peer_message, peer);
	if (r >= 0)
		r = db_broker_add_objects(b, peer->bus);
	if (r >= 0)
		r = sd_bus_match_signal(peer->bus, NULL, "org.freedesktop.DBus.Local",
					"/org/freedesktop/DBus/Local", "org.freedesktop.DBus.Local",
					"Disconnected", on_peer_disconnected, peer);
	if (r >= 0)
		r = sd_event_add_time_relative(b->event, &peer->auth_timer, CLOCK_MONOTONIC,
					       (uint64_t)b->config.peer_auth_timeout_ms * 1000, 0,
					       on_auth_timeout, peer);
	if (r >= 0)
		r = sd_bus_start(peer->bus);
	if (r >= 0)
		r = sd_event_add_io(b->event, &peer->io, sd_bus_get_fd(peer->bus), EPOLLIN,
				    on_peer_io, peer);
	if (r >= 0)
		r = sd_event_add_defer(b->event, &peer->more, on_peer_more, peer);
	if (r >= 0)
		r = sd_event_source_set_enabled(peer->more, SD_EVENT_OFF);
	/*
	 * sd-bus asks for 8 MiB of socket buffer: tens of thousands of unread replies (with the
	 * descriptors they carry) would sit in the kernel for a client that never reads. Keep
	 * the kernel's share small, so that MaxPeerQueuedMessages is reached soon.
	 */
	if (r >= 0 && setsockopt(sd_bus_get_fd(peer->bus), SOL_SOCKET, SO_SNDBUF,
				 &(int){DB_PEER_SNDBUF}, sizeof(int)) < 0)
		r = -errno;
	if (r < 0) {
		peer_free(peer);
		return r;
	}
	g_hash_table_insert(b->peers, peer->bus, peer);
	c->bus_data = peer;
	*ret_client_fd = take_fd(&theirs);
	return 0;
}
