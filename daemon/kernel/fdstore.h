/* SPDX-License-Identifier: MIT */
#pragma once

#include "broker.h"

/*
 * Restart without loss, whatever ends the daemon: with --fd-store, every buffer's fd is
 * handed to systemd's fd store (FDSTORE=1, FDNAME=buf-ID, buf-ID.N after N moves) as it is
 * made and removed as it is freed, and every change of the registry is appended to a journal
 * (journal.h) kept in the store as FDNAME=journal-GENERATION, before the call that made the
 * change is answered. A restarted daemon gets them back with sd_listen_fds_with_names() and
 * replays the journal: clients still on the bus (same unique name, same uid), their buffers,
 * attachments, live tokens and pending moves come back; ids continue where they stopped.
 */

/* The registry's observer (set by the broker): journals the change and keeps the store in
 * step with it. Does nothing until db_fdstore_restore() has opened the journal. */
void db_fdstore_changed(const struct db_change *change, void *userdata);

/* A stream's membership changed (stream.c): journaled before the call is answered. */
void db_fdstore_stream_changed(struct db_broker *b, const struct db_stream_change *change);

/*
 * Would n_fds more entries fit in the store (FdStoreMax=, one entry kept free for the
 * journal's compaction)? -EDQUOT, with reg->exceeded_limit set to "FdStoreMax", when they
 * would not; 0 when they would or the store is not in use. Called before anything is made,
 * so a full store refuses the request instead of losing the buffer at the next restart.
 */
int db_fdstore_reserve(struct db_broker *b, unsigned n_fds);

/*
 * At start: restores the registry from the fds systemd passed (none: nothing to do) and the
 * streams whose producers came back (b->hooks.restore_streams), then,
 * with --fd-store, starts the journal. Returns the number of buffers restored.
 */
int db_fdstore_restore(struct db_broker *b);

/* At exit: stops journaling, so tearing the registry down keeps the store as it is (the
 * journal is complete already: a clean stop is no different from a crash). */
void db_fdstore_stop(struct db_broker *b);
