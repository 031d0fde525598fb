/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-bus.h>

#include "broker.h"
#include "spec.h"

#include "object-path.h"

/* The buffer or client an object path names, or NULL. */ struct db_buffer *
db_bus_buffer_from_path(struct db_broker *b, const char *path);
struct db_client *db_bus_client_from_path(struct db_broker *b, const char *path);

/* Sends a signal (Moved, Revoked) to one client: over its peer connection if it has one,
 * else unicast on the bus. Never waits for the client. */
int db_bus_emit_to_client(struct db_broker *b, struct db_client *c, const char *member,
			  const char *buffer_path, const char *reason);

/* A signal for one client (*ret, to fill), and its sending (over its peer connection if it has
 * one, else unicast on the bus; never waiting): for signals of other arguments. */
int db_bus_new_client_signal(struct db_broker *b, struct db_client *c, const char *member,
			     sd_bus_message **ret);
int db_bus_send_to_client(struct db_broker *b, struct db_client *c, sd_bus_message *s);

/* Appends n buffers as their paths and their fds (ao, ah): AllocateMany, GetCollectionBuffers. */
int db_bus_append_buffers(sd_bus_message *m, struct db_buffer *const *bufs, size_t n);

/* Reads a 128-bit token argument (ay): InvalidArgument for another length. */
int db_bus_read_token(sd_bus_message *m, struct db_token_bytes *ret, sd_bus_error *error);

/* Answers m with a token (ay): CreateCollectionToken, CreateStreamToken. */
int db_bus_reply_token(sd_bus_message *m, const struct db_token_bytes *t);

/*
 * Appends the buffer's layout dictionary (a{sv}) for client c: in the full form, or in the
 * compact form (common/layout-bus.h) if c registered with "compact_layouts", against asked
 * (the values the client's own spec gave, see struct db_alloc_plan) or zeros if NULL.
 * c NULL: the full form.
 */
int db_bus_append_layout(sd_bus_message *m, const struct db_buffer *buf, const struct db_client *c,
			 const struct db_alloc_plan *asked);

/* The visibility rule every listing and event follows: root sees everything; anyone else sees
 * the clients of its own uid and the buffers its uid owns or holds. */
bool db_bus_client_visible(const struct db_client *c, uid_t uid);
bool db_bus_buffer_visible(const struct db_buffer *buf, uid_t uid);

/* The registered client a call comes from (NotRegistered otherwise). */
int db_bus_get_caller(struct db_broker *b, sd_bus_message *m, struct db_client **ret,
		      sd_bus_error *error);
/* The uid of whoever sent the message being handled (for the visibility rule). */
int db_bus_caller_uid(struct db_broker *b, sd_bus_message *m, uid_t *ret);

/* The org.dmabroker.Buffer1 and Client1 objects, looked up by path on demand. */
int db_bus_add_inspection_objects(struct db_broker *b, sd_bus *bus);
