/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Buffer collections on the bus: a client creates one, hands join tokens to the other
 * participants, each sets its constraints, and once all have (or the creator commits, or the
 * deadline passes) the broker intersects them (constraints.c), allocates the buffers once and
 * attaches every participant to all of them. The collection itself is not journaled: after a
 * restart the allocated buffers are ordinary buffers of their holders, and a negotiation that
 * was under way has to start again.
 */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

struct db_broker;
struct db_client;
struct db_constraint_args;

int db_collections_new(struct db_broker *b);
void db_collections_free(struct db_broker *b);

/* The client goes: it leaves every collection (from the registry's client_leaving hook: the
 * registry drops its attachments itself). */
void db_collections_client_leaving(struct db_broker *b, struct db_client *c);

/* Collections in all, for the status output. */
unsigned db_collections_count(const struct db_broker *b);

/* org.dmabroker.Broker1 methods (bus-broker.c puts them in its vtable). */
int db_collection_method_create(sd_bus_message *m, void *userdata, sd_bus_error *error);
int db_collection_method_token(sd_bus_message *m, void *userdata, sd_bus_error *error);
int db_collection_method_join(sd_bus_message *m, void *userdata, sd_bus_error *error);
int db_collection_method_set_constraints(sd_bus_message *m, void *userdata, sd_bus_error *error);
int db_collection_method_commit(sd_bus_message *m, void *userdata, sd_bus_error *error);
int db_collection_method_wait(sd_bus_message *m, void *userdata, sd_bus_error *error);
int db_collection_method_get_buffers(sd_bus_message *m, void *userdata, sd_bus_error *error);
int db_collection_method_leave(sd_bus_message *m, void *userdata, sd_bus_error *error);
int db_collection_method_list(sd_bus_message *m, void *userdata, sd_bus_error *error);

/*
 * For streams (stream.c). check_holder: c takes part in the allocated collection at path and
 * holds its buffers (NotFound, Busy or the collection's failure otherwise); the number of
 * buffers in *ret_buffer_count.
 */
int db_collection_check_holder(struct db_broker *b, const char *path, struct db_client *c,
			       uint32_t *ret_buffer_count, sd_bus_error *error);
/*
 * A stream's consumer becomes a participant of the stream's collection if it is not one: a late
 * joiner, with the constraints sc (may be NULL; taken), attached to every buffer (Unsupported
 * with the reason if they do not fit). NotFound when the collection is gone (a restored stream).
 * *ret_joined: c was added (db_collection_drop_participant undoes it).
 */
int db_collection_join_for_stream(struct db_broker *b, const char *path, struct db_client *c,
				  struct db_constraint_args *sc, uint32_t *ret_buffer_count,
				  bool *ret_joined, sd_bus_error *error);
void db_collection_drop_participant(struct db_broker *b, const char *path, struct db_client *c);
