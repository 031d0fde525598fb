/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>
#include <systemd/sd-event.h>

/*
 * The daemon's end of a peer connection's socket, read and written by the daemon itself and
 * never by sd-bus. sd-bus reads a message's fixed header and then allocates whatever the
 * header declares (up to 128 MiB), and keeps bytes that arrived behind BEGIN in its own
 * buffer; so the wire reads the client's socket one message at a time, checks its declared
 * size before reading the rest, and hands sd-bus (on a socket pair of the daemon's own) only
 * whole, checked messages. Everything sd-bus writes comes back through the wire, which
 * counts it toward the client's window before writing it to the client.
 *
 * Bounds, all checked from the event loop:
 * - a message declaring more than max_message_size closes the connection;
 * - a message still partial after message_timeout_us closes it;
 * - no more than max_fds_per_message descriptors travel with one message;
 * - authentication (ANONYMOUS, with or without NEGOTIATE_UNIX_FD) is done by the wire,
 *   within auth_timeout_us and 4 KiB of lines;
 * - the window: while window_calls calls wait for their answers, or window_bytes of answers
 *   and signals wait for the client to read them, the wire reads nothing more from the
 *   client (back-pressure, not a cut-off);
 * - a client that reads nothing for stall_timeout_us while answers wait, or whose window
 *   stays full of calls that get no answer (malformed ones sd-bus drops) that long, loses the
 *   connection; so does one whose queue holds twice its window when a signal comes (it
 *   does not read at all: Moved and Revoked are never dropped, so the peer is);
 * - descriptors only after NEGOTIATE_UNIX_FD, and exactly as many as the message's header
 *   declares (UNIX_FDS); anything else closes the connection.
 */
struct db_peer_wire;

struct db_budget;

struct db_peer_wire_limits {
	uint64_t max_message_size;
	uint64_t window_bytes;
	uint64_t window_calls;
	/* Shared by every peer of the client's uid (may be NULL): bytes and descriptors
	 * waiting for those clients to read. While either is full no peer of the uid is read;
	 * the owner re-arms them (db_peer_wire_rearm) when there is room again. */
	struct db_budget *uid_bytes;
	struct db_budget *uid_fds;
	uint64_t auth_timeout_us;
	uint64_t message_timeout_us;
	uint64_t stall_timeout_us;
};

#define DB_PEER_WIRE_MAX_FDS 16

struct db_peer_wire_hooks {
	/* A checked message (or the handshake) reached sd-bus's end: let sd-bus process all it
	 * has. Negative errno closes the wire. */
	int (*deliver)(void *userdata);
	/* The wire took sd-bus's output: if sd-bus holds more it could not write, let it write
	 * now. 1 if it wrote more, 0 if it had nothing, negative errno closes the wire. */
	int (*pump)(void *userdata);
	/* The wire wrote to its client and gave room back to the uid's shared budgets: the
	 * owner may re-arm the uid's other peers. May be NULL. */
	void (*uid_room)(void *userdata);
	/* The wire is done (the client hung up, broke a bound, a deadline passed): reason says
	 * which, for the log. Called once, from the event loop; the wire is freed after it. */
	void (*closed)(void *userdata, const char *reason);
};

/*
 * Takes client_fd (the daemon's end of the client's socket pair; owned by the wire from now
 * on, even on failure) and returns in *ret_bus_fd the socket sd-bus is to use for both
 * directions (owned by the caller: give it to sd_bus_set_fd()). The sd-bus side must be a
 * started server that accepts ANONYMOUS and unix fds; the wire authenticates to it.
 */
int db_peer_wire_new(sd_event *event, int client_fd, const struct db_peer_wire_limits *limits,
		     const struct db_peer_wire_hooks *hooks, void *userdata, int *ret_bus_fd,
		     struct db_peer_wire **ret);

/* Looks again at whether the wire may read its client (the uid's budgets had room again). */
void db_peer_wire_rearm(struct db_peer_wire *w);

/* Stops the wire without calling closed(); nothing unwritten is written. Accepts NULL. */
void db_peer_wire_free(struct db_peer_wire *w);

/* Bytes and calls in flight toward the client (for inspection and tests). */
uint64_t db_peer_wire_queued_bytes(const struct db_peer_wire *w);
uint64_t db_peer_wire_calls_in_flight(const struct db_peer_wire *w);
