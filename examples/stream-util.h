/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "example-util.h"

/*
 * Streams in the example clients: one producer loop fed by a source (vivid, or the CPU drawing
 * colour bars) and one consumer loop that checks every frame it gets. Both print "key value"
 * lines for their driver (the guest tests, the demo) like every example client.
 *
 * Every frame carries, in its metadata (DMABROKER_FRAME_META_OPAQUE, struct stream_meta), the
 * checksum the producer computed of the whole buffer and a per-frame marker that the producer
 * also writes into the buffer's last STREAM_MARKER_SIZE bytes. With --fence the producer
 * writes that marker only after queueing the frame and before signalling the frame's vgem
 * write fence: a consumer that reads without waiting for the fence sees the previous frame's
 * marker, and its check fails. Every other frame's fence is on the buffer itself (the
 * library exports it, implicit sync); the others' is on a vgem buffer of the producer's own,
 * handed to the frame as its sync_file, so that the frame's buffer has no fence and only
 * the consumer (or its library's import) can order its reads.
 */

#define STREAM_MARKER_SIZE 16

struct stream_meta {
	uint64_t checksum; /* FNV-1a of the buffer with its marker in place */
	uint64_t marker; /* the producer's frame number, from 1 */
};

/* The marker's bytes: the number and its complement, so that zeroes never pass. */
void stream_write_marker(uint8_t *p, uint64_t size, uint64_t marker);
/* The marker in a buffer, 0 when its bytes are no marker. */
uint64_t stream_read_marker(const uint8_t *p, uint64_t size);
/* The checksum of the buffer as it is once marker is written in it. */
uint64_t stream_checksum(const uint8_t *p, uint64_t size, uint64_t marker);

/* vivid's 75% colour bars (YUYV) at one row: eight bars, luma falling white to black. */
bool stream_colour_bars_yuyv(const uint8_t *p, uint32_t width, uint32_t stride, uint32_t row);
/* Draws the same bars (luma as vivid's; grey chroma) for a source without a camera. */
void stream_draw_colour_bars_yuyv(uint8_t *p, uint32_t width, uint32_t height, uint32_t stride);

/* The first vgem node of a kind ("renderD" from 128, "card" from 0); -ENODEV if none. */
int stream_open_vgem(const char *prefix, int first, char *path, size_t len);

/*
 * Where frames come from. give(): a free buffer is the source's to fill. take(): a filled
 * buffer (-EAGAIN: none yet; fd polls POLLIN when there may be one). stop(): the source ends
 * and hands back every buffer it holds through ret_index (at most n); it may start again.
 */
struct stream_source {
	int fd;
	int (*give)(struct stream_source *src, uint32_t index);
	int (*take)(struct stream_source *src, uint32_t *ret_index, uint64_t *ret_timestamp_ns);
	unsigned (*stop)(struct stream_source *src, uint32_t *ret_index, unsigned n);
};

struct stream_producer_opts {
	const char *name;
	unsigned frames; /* say "sent N" after this many; with after_left 0, end the stream */
	unsigned consumers; /* wait for this many ready consumers before the first frame */
	unsigned after_left; /* once a consumer left: this many more frames, then pause */
	unsigned interval_ms; /* at least this long between frames (0: as fast as they go) */
	bool fence; /* a vgem write fence per frame; the marker written after queueing */
	struct dmabroker_stream_format format;
};

/*
 * Streams the buffers of col (allocated) from src until done: says "stream PATH" and
 * "ready waiting", then "joined ID" per consumer, "sent N", "left ID REASON", and after the
 * last frame "outstanding K" (the buffers still out once no more came back) and "ready
 * paused"; then holds until stdin ends, and ends the stream.
 */
int stream_produce(struct example *ex, struct dmabroker_collection *col, struct stream_source *src,
		   const struct stream_producer_opts *opts);

struct stream_consumer_opts {
	const char *name;
	const char *label;
	bool implicit; /* DMABROKER_SYNC_IMPLICIT: the library imports the acquire fence */
	unsigned keep; /* frames held at once (the newest); 0: 1 */
	unsigned report; /* say "checked ..." after every this many frames (0: never) */
	bool colour_bars; /* check vivid's bars in every frame */
	int drm; /* a vgem node: PRIME-import every buffer a frame comes in, or -1 */
	bool allow_missed; /* frames may be missed (a producer restarted): seq only increases */
};

/*
 * Joins the stream called name and checks every frame: says "stream PATH", "consumer ID",
 * "ready joined"; then "checked N bad B fenced F pending P imported I bars K" on every
 * report, on each line read from stdin and at the end of the stream; "first-bad WHY" once;
 * "ended REASON" when the stream ends, followed by "held-after-end N ok M" (the frames it
 * still holds, read again); at stdin's end it leaves.
 */
int stream_consume(struct example *ex, const struct stream_consumer_opts *opts);

/* A source that draws vivid's colour bars (YUYV, the buffers' layout) into each buffer. */
struct stream_source *stream_cpu_source_new(struct example *ex, struct dmabroker_collection *col);
