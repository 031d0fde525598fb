/* SPDX-License-Identifier: MIT */
#ifndef DMABROKER_WIRE_H
#define DMABROKER_WIRE_H

/*
 * The stream link's wire format (docs/streams.md). A link is one SOCK_SEQPACKET socket pair
 * between a stream's producer and one consumer, made by the daemon and handed to both over
 * D-Bus, each end in the answer to a call of its own (JoinStream, TakeStreamLink); the daemon
 * keeps no end once both are taken. Every packet is exactly one record; every record has a fixed
 * size for its type, little-endian fields, and zero in every reserved byte. A record carries
 * at most one descriptor (SCM_RIGHTS), a sync_file fence, and only when its flags say so.
 *
 *	consumer -> producer   HELLO once, when it holds the collection's buffers; RELEASE per
 *	                       frame it is done with (with a release fence or none)
 *	producer -> consumer   FRAME per frame (with an acquire fence or none); a FRAME with
 *	                       END_OF_STREAM and index DMABROKER_WIRE_NO_BUFFER ends the stream
 *
 * The receiving side checks everything (version, type, size, reserved bytes, flags, index in
 * range and, for RELEASE, sent to that consumer and not yet released, descriptor count, that
 * a fence is a sync_file) and ends the link on the first violation.
 */

#include <stdint.h>

#define DMABROKER_WIRE_VERSION 1

enum dmabroker_wire_type {
	DMABROKER_WIRE_HELLO = 1,
	DMABROKER_WIRE_FRAME = 2,
	DMABROKER_WIRE_RELEASE = 3,
};

struct dmabroker_wire_header {
	uint16_t version; /* DMABROKER_WIRE_VERSION */
	uint16_t type;    /* enum dmabroker_wire_type */
	uint32_t size;    /* the whole record, header included: the type's size exactly */
};

/* HELLO flags: none defined yet. */
struct dmabroker_wire_hello {
	struct dmabroker_wire_header header;
	uint32_t buffer_count; /* the buffers the consumer holds: the collection's count */
	uint32_t max_held;     /* frames it holds at once (1 .. buffer_count) */
	uint32_t flags;
	uint32_t reserved;
};

/* FRAME and RELEASE flags. */
#define DMABROKER_WIRE_FENCE (1u << 0)          /* a sync_file descriptor comes with it */
#define DMABROKER_WIRE_END_OF_STREAM (1u << 1)  /* FRAME only */
#define DMABROKER_WIRE_DISCONTINUITY (1u << 2)  /* FRAME only */
#define DMABROKER_WIRE_FRAME_FLAGS                                                          \
	(DMABROKER_WIRE_FENCE | DMABROKER_WIRE_END_OF_STREAM | DMABROKER_WIRE_DISCONTINUITY)
#define DMABROKER_WIRE_RELEASE_FLAGS DMABROKER_WIRE_FENCE

/* The index of an END_OF_STREAM frame that carries no buffer (and then no fence). */
#define DMABROKER_WIRE_NO_BUFFER UINT32_MAX
#define DMABROKER_WIRE_META_MAX 64

/* Metadata types; the bytes past meta_size are zero. */
enum dmabroker_wire_meta {
	DMABROKER_WIRE_META_NONE = 0,
	/* meta_size 16: u32 x, y, width, height (damage or crop, in pixels) */
	DMABROKER_WIRE_META_RECT = 1,
	/* the application's own bytes */
	DMABROKER_WIRE_META_OPAQUE = 2,
};

struct dmabroker_wire_frame {
	struct dmabroker_wire_header header;
	uint32_t index; /* buffer index in the collection, or DMABROKER_WIRE_NO_BUFFER */
	uint32_t flags;
	uint64_t seq;          /* strictly increasing per link */
	uint64_t timestamp_ns; /* CLOCK_MONOTONIC; 0: none */
	uint32_t meta_type;
	uint32_t meta_size; /* 0 .. DMABROKER_WIRE_META_MAX */
	uint8_t meta[DMABROKER_WIRE_META_MAX];
};

struct dmabroker_wire_release {
	struct dmabroker_wire_header header;
	uint32_t index;
	uint32_t flags;
	uint64_t seq; /* the seq of the frame released */
};

#define DMABROKER_WIRE_RECORD_MAX sizeof(struct dmabroker_wire_frame)

#ifndef __cplusplus
_Static_assert(sizeof(struct dmabroker_wire_hello) == 24, "wire hello size");
_Static_assert(sizeof(struct dmabroker_wire_frame) == 104, "wire frame size");
_Static_assert(sizeof(struct dmabroker_wire_release) == 24, "wire release size");
#endif

#endif /* DMABROKER_WIRE_H */
