/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>

#include "registry.h"

struct db_broker;

/*
 * Subscribers to the daemon's events (Subscribe, for `dmabrokerctl monitor`): each gets the
 * Event signal unicast, for the objects the visibility rule lets its uid see (root: all;
 * anyone else: the clients of its uid and the buffers its uid owns or holds). Never a
 * broadcast: on a system bus that would show every user's objects to everyone.
 */
struct db_monitor;

int db_monitor_new(struct db_monitor **ret);
struct db_monitor *db_monitor_free(struct db_monitor *mon);

/* The registry's change, told to the subscribers that may see it. */
void db_monitor_changed(struct db_broker *b, const struct db_change *change);

/* An event the registry does not see (Revoke's reason). */
void db_monitor_revoked(struct db_broker *b, struct db_buffer *buf, const char *reason);

/* A collection was allocated or failed (kind "collection-allocated", "collection-failed"):
 * told to root and to the uids of its participants. */
void db_monitor_collection(struct db_broker *b, const char *kind, const char *path,
			   const char *outcome, const uid_t *uids, size_t n_uids);

/* A stream's event (stream-created, stream-joined, stream-left, stream-ended): told to root and
 * to the uids of the stream's members. */
struct db_monitor_stream_event {
	const char *kind;
	const char *stream_path;
	const char *client_path; /* "client", or NULL */
	bool has_consumer; /* "consumer" */
	uint32_t consumer;
	const char *reason; /* or NULL */
	const uid_t *uids;
	size_t n_uids;
};
void db_monitor_stream(struct db_broker *b, const struct db_monitor_stream_event *e);

/* A bus name left: its subscription goes with it. */
void db_monitor_name_gone(struct db_broker *b, const char *bus_name);

/* The Subscribe, Unsubscribe and AcknowledgeEvents methods. */
int db_monitor_subscribe(struct db_broker *b, sd_bus_message *m, sd_bus_error *error);
int db_monitor_unsubscribe(struct db_broker *b, sd_bus_message *m, sd_bus_error *error);
int db_monitor_acknowledge(struct db_broker *b, sd_bus_message *m, sd_bus_error *error);
