/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * What the stream files share (one concern each):
 *   stream.c           the objects, the calls (create, join, token, free) and their answers,
 *                      the getters, the walk dispatch makes over the streams
 *   stream-producer.c  the producer's buffers, queueing, releases coming back, links ending
 *   stream-consumer.c  frames coming in (FIFO, LATEST), wait_frame(), releases going out
 *   stream-fence.c     sync_files: a dma-buf's fences out and in, merging, waiting
 *   stream-signal.c    StreamLink, StreamLinkEnded, StreamEnded
 *   stream-link.c      one end of a link: its socket and the checks on what it receives
 * The struct is opaque outside them (include/dmabroker.h).
 */
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "dmabroker.h"

struct dmabroker;
struct dmabroker_buffer;
struct stream_link;

#define REASON_MAX 256

/* Each of the producer's buffers. */
enum buffer_state {
	BUF_FREE,
	BUF_TAKEN, /* the producer's: get_free handed it out, not queued yet */
	BUF_OUT, /* queued: consumers hold it */
	BUF_RETURNING, /* back: buffer_returned is told from dispatch, then it is free */
};

struct stream_buffer {
	enum buffer_state state;
	unsigned holders; /* links that hold it (their held[] say which) */
	int release_fence; /* owned: what the releases brought (explicit sync), or -1 */
};

struct dmabroker_stream {
	struct dmabroker *ctx;
	bool producer;
	char *path; /* NULL until the daemon answered */
	/* The producer's: the caller's (borrowed). A consumer's: the one joined, owned. */
	struct dmabroker_collection *col;
	unsigned buffer_count;
	struct dmabroker_stream_format format;
	enum dmabroker_stream_mode mode;
	enum dmabroker_sync sync;
	uint32_t max_held; /* consumer */
	struct dmabroker_stream_handlers handlers;
	void *userdata;
	bool ended; /* over: no link is left, nothing more is sent */
	bool ended_told; /* the ended callback ran (or must not run: freed) */
	/* Freed from a callback while dispatch walks the streams, or while stream_wait_until()
	 * waits on it: freed at the walk's end, or when the last waiter returns. */
	bool zombie;
	unsigned waiters; /* stream_wait_until() calls on s, nested in callbacks perhaps */
	char end_reason[REASON_MAX];
	/* Producer */
	struct stream_link *links;
	struct stream_buffer *buffers;
	uint64_t next_seq;
	/* Consumer */
	uint32_t consumer_id;
	struct stream_link *link; /* NULL once ended */
	char link_failed[REASON_MAX]; /* a send failed: dispatch ends the link with this */
	struct dmabroker_frame *wanted; /* wait_frame()'s frame to fill, or NULL */
	bool got_frame;
	/* join_async: the caller's callback once the buffers are fetched */
	dmabroker_stream_func_t join_done;
	void *join_userdata;
	struct dmabroker_stream *prev, *next;
};

static inline void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* stream.c */
/* Puts l's fd into the context's epoll set, or takes it out (harmless when it is not in). */
int link_watch(struct dmabroker *ctx, struct stream_link *l);
void link_unwatch(struct dmabroker *ctx, struct stream_link *l);
/* Out of the epoll set, closed and freed. */
void link_drop(struct dmabroker *ctx, struct stream_link *l);
struct dmabroker_buffer *stream_buffer(const struct dmabroker_stream *s, uint32_t index);
/* The producer's link to consumer, or NULL. */
struct stream_link *stream_find_link(const struct dmabroker_stream *s, uint32_t consumer);
/*
 * Dispatches s's context until done(s) or the deadline (-ETIMEDOUT); -EPIPE: s ended, or a
 * callback freed it. The caller holds s meanwhile (stream_hold()): a callback that frees s
 * leaves it allocated, a zombie, until stream_unhold(), which says whether it was freed.
 */
void stream_hold(struct dmabroker_stream *s);
bool stream_unhold(struct dmabroker_stream *s);
int stream_wait_until(struct dmabroker_stream *s, bool (*done)(struct dmabroker_stream *s),
		      uint64_t timeout_usec);

/* stream-producer.c */
/* Everything l held is back (a consumer gone); its fences go with it. */
void link_return_all(struct dmabroker_stream *s, struct stream_link *l);
/* Ends one consumer's link (in dispatch); by_us: the library ended it, the broker is told. */
void producer_end_link(struct dmabroker_stream *s, struct stream_link *l, const char *reason,
		       bool by_us);
void producer_dispatch(struct dmabroker_stream *s, bool *progress);

/* stream-consumer.c */
/* The consumer's end of the stream: its link closes, ended is told once (in dispatch). */
void consumer_end(struct dmabroker_stream *s, const char *reason);
/* The buffers are here: HELLO to the producer. */
int consumer_ready(struct dmabroker_stream *s);
void consumer_dispatch(struct dmabroker_stream *s, bool *progress);

/* stream-fence.c */
/* The fences of a dma-buf as one sync_file (owned), or -1 when it is no dma-buf. */
int export_fence(struct dmabroker_buffer *buf, uint32_t flags);
/* Puts fence into a dma-buf's own fences; false when it is no dma-buf (nothing done). */
bool import_fence(struct dmabroker_buffer *buf, int fence, uint32_t flags);
/* One sync_file that signals when both do (owned); a and b are taken. */
int merge_fences(int a, int b);
