/* SPDX-License-Identifier: MIT */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "devices.h"
#include "journal.h"
#include "registry.h"

struct db_broker;

/*
 * What the upper layers do for the lower ones. The registry, backends, moves and the fd
 * store never call up into the D-Bus layer; they tell through these, which the composition
 * root (db_broker_new) fills in.
 */
struct db_broker_hooks {
	/* Sends a signal (Moved, Revoked) to one client, never waiting for it. */
	int (*emit_to_client)(struct db_broker *b, struct db_client *c, const char *member,
			      const char *buffer_path, const char *reason);
	/* Puts the D-Bus objects on a connection (the bus, a new peer). */
	int (*add_objects)(struct db_broker *b, sd_bus *bus);
	/* A restored buffer's move still waits for holders: its deadline must run again. */
	int (*restored_pending_move)(struct db_broker *b, struct db_buffer *buf);
	/* The streams a journal snapshot holds (stream.c's, borrowed until the next change). */
	void (*journal_streams)(struct db_broker *b, struct db_journal_streams *ret);
	/* After the registry came back from the journal: the streams it describes. */
	void (*restore_streams)(struct db_broker *b, const struct db_jstate *state);
};

struct db_broker {
	struct db_broker_hooks hooks;
	sd_event *event;
	sd_bus *bus; /* the system, session or given bus */
	struct db_registry *reg;
	struct db_config config;
	char *config_path;
	struct db_devices *devices;
	sd_event_source *udev_source;
	/* After a client left: lingering buffers asked about again a few times (see broker.c). */
	sd_event_source *linger_timer;
	unsigned linger_tries;
	struct db_bus_creds *creds; /* uids of bus callers, learned once (bus-creds.c), owned */
	GHashTable *peers; /* sd_bus * -> struct db_peer *, owned */
	GHashTable *peer_uids; /* &uid -> what a uid's peers queued together (peer.c), owned */
	GHashTable *moves; /* &buffer id -> struct db_move *, owned (move.c) */
	struct db_monitor *monitor; /* event subscribers, owned (monitor.c) */
	struct db_collections *collections; /* buffer collections, owned (collection.c) */
	struct db_streams *streams; /* streams over collections, owned (stream.c) */
	unsigned n_moves_running; /* copies on worker threads now */
	const char *kernel_report; /* "unknown", "available", "unavailable" */
	bool fdstore; /* keep buffers in systemd's fd store across restarts */
	struct db_fdstore *fdstore_state; /* the journal and what the store holds (fdstore.c) */
};

int db_broker_new(struct db_broker **ret, sd_event *event, sd_bus *bus, const char *config_path);
struct db_broker *db_broker_free(struct db_broker *b);

/* Re-reads the configuration: new limits apply to new requests; nothing held is dropped. */
int db_broker_reload(struct db_broker *b);

/* The vtables, for the bus layer and the introspection of peer connections. */
int db_broker_add_objects(struct db_broker *b, sd_bus *bus);

/* Checks the running kernel's attachment report once, with a small dma-buf. */
void db_broker_probe_kernel_report(struct db_broker *b);
