/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>

struct db_broker;
struct db_buffer;
struct db_client;

/*
 * Moving a buffer to new backing. The new memory is allocated and the contents copied on a
 * worker thread, so a large buffer does not stall the event loop; the Move call is answered
 * when the copy is done. The new backing is charged to the owner for the whole move, keeps
 * the buffer's backing class (contiguous stays contiguous), and the old one is freed when
 * every holder has reacquired or MoveDeadlineSec has passed. A buffer whose memory was its
 * owner's memfd (AllocateWithMemfd) is re-backed by the daemon's own memory: the daemon
 * cannot allocate in another process's cgroup; the owner's uid stays charged for it.
 */

/* At most this many copies run at once; more get Busy. */
#define DB_MOVES_MAX_RUNNING 2

/* Starts moving buf for the Move call m (answered later, or now with an error). */
int db_move_start(struct db_broker *b, sd_bus_message *m, struct db_buffer *buf,
		  sd_bus_error *error);

/* Arms the deadline of a move that is waiting for holders (after a restart, say). */
int db_move_arm_deadline(struct db_broker *b, struct db_buffer *buf);

/* Waits for running copies and drops every pending deadline (at exit). */
void db_moves_free(struct db_broker *b);
