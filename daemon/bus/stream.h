/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Streams over allocated collections (docs/streams.md): a producer and its consumers, each
 * consumer with one link, a SOCK_SEQPACKET socket pair whose ends the broker hands out (one in
 * JoinStream's answer, one in TakeStreamLink's answer to the producer, which StreamLink tells
 * of) and keeps neither of once taken: frames never pass through the broker. The broker keeps
 * the membership, journals it (a restarted broker knows its streams; the producers' ends not
 * taken yet are not journaled) and ends links and streams by telling both ends.
 */

#include <systemd/sd-bus.h>

#include "journal.h"

struct db_broker;
struct db_client;

int db_streams_new(struct db_broker *b);
void db_streams_free(struct db_broker *b);

/* The client goes (the registry's client_leaving hook): it leaves every stream, as
 * org.dmabroker.Broker1.xml says for a disconnection. */
void db_streams_client_leaving(struct db_broker *b, struct db_client *c);

/* The broker's hooks for the fd store: what a journal snapshot holds, and the streams a
 * journal describes (after the registry's restore: members that did not come back are
 * dropped, as their disconnection would have). */
void db_streams_journal_snapshot(struct db_broker *b, struct db_journal_streams *ret);
void db_streams_restore(struct db_broker *b, const struct db_jstate *state);

/* org.dmabroker.Broker1 methods (bus-broker.c puts them in its vtable). */
int db_stream_method_create(sd_bus_message *m, void *userdata, sd_bus_error *error);
int db_stream_method_token(sd_bus_message *m, void *userdata, sd_bus_error *error);
int db_stream_method_join(sd_bus_message *m, void *userdata, sd_bus_error *error);
int db_stream_method_join_with_token(sd_bus_message *m, void *userdata, sd_bus_error *error);
int db_stream_method_leave(sd_bus_message *m, void *userdata, sd_bus_error *error);
int db_stream_method_end(sd_bus_message *m, void *userdata, sd_bus_error *error);
int db_stream_method_end_link(sd_bus_message *m, void *userdata, sd_bus_error *error);
int db_stream_method_take_link(sd_bus_message *m, void *userdata, sd_bus_error *error);
int db_stream_method_list(sd_bus_message *m, void *userdata, sd_bus_error *error);
