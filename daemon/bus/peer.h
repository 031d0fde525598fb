/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>

struct db_broker;
struct db_client;

/*
 * A private peer-to-peer connection handed to one client by OpenPeer. The daemon reads and
 * writes the client's socket itself (peer-wire.h: message size, partial messages, the
 * window of calls and bytes in flight, authentication and stall deadlines); sd-bus
 * processes only whole, checked messages. Closed without flushing.
 */
struct db_peer;

/* Opens a peer connection for c (which must have none); *ret_client_fd is the other end of
 * the socket pair, owned by the caller. */
int db_peer_open(struct db_broker *b, struct db_client *c, int *ret_client_fd);

/* Closes the connection without flushing what it has not written, and detaches it from its
 * client. Accepts NULL. */
void db_peer_close(struct db_peer *peer);

/* The peer connection a message came in on, or NULL for the bus. */
struct db_peer *db_peer_of_message(struct db_broker *b, sd_bus_message *m);

/* The registered client the peer acts for (it may have left: NULL then). */
struct db_client *db_peer_client(struct db_peer *peer);

/* Sends m on the peer's connection; it counts toward the client's window (never dropped:
 * Moved and Revoked go this way). */
int db_peer_send(struct db_peer *peer, sd_bus_message *m);

sd_bus *db_peer_get_bus(struct db_peer *peer);

/* Closes every peer connection (at exit). */
void db_peers_close_all(struct db_broker *b);
