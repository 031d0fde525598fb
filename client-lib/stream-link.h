/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * One end of a stream link (include/dmabroker-wire.h): its socket I/O and what the end knows
 * of the other, so that every record received is checked against it. Depends on nothing else
 * of the library: the fuzzer drives this receive path as the library runs it.
 */
#include <stdbool.h>
#include <stdint.h>

#include "stream-wire.h"

struct stream_link {
	int fd; /* owned: this end of the link's SOCK_SEQPACKET socket */
	uint32_t consumer; /* the consumer's number in the stream */
	bool producer; /* this end is the producer's */
	unsigned buffer_count; /* the collection's */
	/* Per buffer, the seq of the frame the consumer holds in it, 0 when it holds none: on
	 * the producer, sent and not released; on the consumer, received and not released. */
	uint64_t *held;
	unsigned n_held;
	uint32_t max_held; /* producer: from the consumer's HELLO; 0 before it */
	bool ready; /* producer: the consumer said HELLO */
	uint64_t
		last_seq; /* the last FRAME's seq (received on the consumer, sent on the producer) */
	bool in_epoll; /* fd is in the context's epoll set */
	/* In the set, read until EAGAIN and not shown readable by it since: link_recv() does not
	 * ask the socket again (a dispatch reads each link until EAGAIN once). */
	bool drained;
	bool hung_up; /* the other end closed (EOF was read), or fail_reason says why not usable */
	char fail_reason[128]; /* a send failed: the owner ends the link with this, later */
	struct stream_link *next;
};

/* A link end over fd (taken: closed by link_free() even on failure). */
struct stream_link *link_new(int fd, uint32_t consumer, bool producer, unsigned buffer_count);
/* Closes the fd and frees l (which must be out of any epoll set); accepts NULL. */
void link_free(struct stream_link *l);

/*
 * Reads one record. Returns its type (with *ret_fence the fence that came with it, owned, or
 * -1), -EAGAIN when nothing is waiting (or, l->drained, nothing was and the epoll set did not
 * show more since), 0 at the end (the other end closed), or a negative
 * errno with *ret_reason when the record breaks a rule: of the socket (truncated, descriptors
 * that are not what the record says or not a sync_file), of the codec (db_wire_decode()), or
 * of this link's state (link_check()). The record is not applied: see link_apply().
 */
int link_recv(struct stream_link *l, union db_wire_record *rec, int *ret_fence,
	      const char **ret_reason);

/* What the link's state says of a record received: a HELLO once and first, from a consumer
 * with the collection's buffers; a RELEASE of a frame sent and not released; a FRAME with a
 * greater seq into a buffer in range that the consumer does not hold. 0 or -EBADMSG. */
int link_check(const struct stream_link *l, const union db_wire_record *rec,
	       const char **ret_reason);

/* Applies a record received and checked to the state (a HELLO, a frame held, a release). */
void link_apply(struct stream_link *l, const union db_wire_record *rec);

/* Notes that a frame was sent (producer) with seq in index. */
void link_hold(struct stream_link *l, uint32_t index, uint64_t seq);
/* Notes that index was released (consumer: it sent the release). */
void link_unhold(struct stream_link *l, uint32_t index);

/*
 * Sends a record with fence (borrowed; -1: none; its FENCE flag must say so), without
 * blocking: a full socket means the other end does not read, -EAGAIN, and the caller ends
 * the link. -EPIPE when the other end is gone.
 */
int link_send(struct stream_link *l, const union db_wire_record *rec, int fence,
	      const char **ret_reason);

/* 0 if fd is a sync_file, -EBADF/-EINVAL/... otherwise. */
int fence_check(int fd);
