/* SPDX-License-Identifier: MIT */
#pragma once

#include "broker.h"

/*
 * Restart without loss: with --fd-store, every buffer's fd is handed to systemd's fd store
 * (FDSTORE=1, FDNAME=buf-ID) as it is made and removed as it is freed; on a clean stop the
 * registry (clients, buffers, attachments, tokens) is serialized into a memfd stored as
 * FDNAME=registry. A restarted daemon gets them back with sd_listen_fds_with_names() and
 * restores the registry for clients still on the bus.
 */

void db_fdstore_add_buffer(struct db_broker *b, struct db_buffer *buf);
void db_fdstore_buffer_freed(struct db_buffer *buf, void *userdata);

/* Serializes the registry into the store; called once on a clean stop. */
int db_fdstore_save(struct db_broker *b);

/* Restores from the fds systemd passed at start (none: nothing to do). Returns the number
 * of buffers restored. */
int db_fdstore_restore(struct db_broker *b);
