// SPDX-License-Identifier: MIT
/*
 * A stream's consumer: the HELLO that says it is ready, frames coming in on its link (each
 * one in FIFO mode, the newest in LATEST mode with the older ones released at once), handing
 * them to the frame callback or wait_frame(), its releases going out, and its end.
 */
#include "libdmabroker-private.h"

#include "stream-link.h"
#include "stream-private.h"

/* The consumer's end of the stream: its link closes, ended is told once. In dispatch. */
void consumer_end(struct dmabroker_stream *s, const char *reason)
{
	struct dmabroker *ctx = s->ctx;

	if (s->link) {
		link_drop(ctx, s->link);
		s->link = NULL;
	}
	if (!s->ended) {
		s->ended = true;
		snprintf(s->end_reason, sizeof(s->end_reason), "%s", reason);
	}
	if (s->ended_told || ctx->disconnect_requested)
		return;
	s->ended_told = true;
	ctx->handled++;
	if (s->handlers.ended)
		s->handlers.ended(s, s->end_reason, s->userdata);
}

/*
 * The buffers are here: HELLO says the consumer is ready. The link goes into the loop only
 * with a frame callback: without one its frames wait for wait_frame(), and a link in the loop
 * with unread frames would keep the context's fd readable (a poll loop would spin).
 */
int consumer_ready(struct dmabroker_stream *s)
{
	union db_wire_record hello = {.hello = {.header = {.type = DMABROKER_WIRE_HELLO}}};
	const char *reason = NULL;
	int r;

	if (dmabroker_collection_get_buffer_count(s->col) != s->buffer_count)
		return -EBADMSG;
	hello.hello.buffer_count = s->buffer_count;
	hello.hello.max_held = s->max_held;
	r = s->handlers.frame ? link_watch(s->ctx, s->link) : 0;
	if (r >= 0)
		r = link_send(s->link, &hello, -1, &reason);
	if (r < 0)
		log_msg(DMABROKER_LOG_DEBUG, "dmabroker: stream %s: hello not sent: %s", s->path,
			reason ? reason : strerror(-r));
	return r;
}

/* A frame received by the consumer, as the application sees it. */
static void frame_from_wire(const union db_wire_record *rec, int fence, struct dmabroker_frame *f)
{
	*f = (struct dmabroker_frame){
		.index = rec->frame.index,
		.flags = rec->frame.flags & ~DMABROKER_WIRE_FENCE,
		.seq = rec->frame.seq,
		.timestamp_ns = rec->frame.timestamp_ns,
		.meta_type = rec->frame.meta_type,
		.meta_size = rec->frame.meta_size,
		.acquire_fence = fence,
	};
	memcpy(f->meta, rec->frame.meta, sizeof(f->meta));
}

static int consumer_send_release(struct dmabroker_stream *s, uint32_t index, int fence)
{
	union db_wire_record rec = {.release = {.header = {.type = DMABROKER_WIRE_RELEASE},
						.index = index,
						.flags = fence >= 0 ? DMABROKER_WIRE_FENCE : 0}};
	struct stream_link *l = s->link;
	const char *reason = NULL;
	int r;

	rec.release.seq = l->held[index];
	link_unhold(l, index);
	r = link_send(l, &rec, fence, &reason);
	if (r < 0 && !s->link_failed[0])
		/* Told from dispatch: this may run from the application's call. A hang-up
		 * reads as the one the link's reading end sees. */
		snprintf(s->link_failed, sizeof(s->link_failed), "%s",
			 r == -EPIPE || r == -ECONNRESET ? "producer gone" : reason);
	return r;
}

/* Hands a frame to the application: wait_frame()'s, or the frame callback's. */
static void consumer_deliver(struct dmabroker_stream *s, struct dmabroker_frame *f)
{
	struct dmabroker *ctx = s->ctx;

	if (f->acquire_fence >= 0 && s->sync == DMABROKER_SYNC_IMPLICIT &&
	    import_fence(stream_buffer(s, f->index), f->acquire_fence, DMA_BUF_SYNC_WRITE))
		close_fd(&f->acquire_fence);
	ctx->handled++;
	if (s->wanted) {
		/* The fence is the caller's now. */
		*s->wanted = *f;
		s->wanted = NULL;
		s->got_frame = true;
		return;
	}
	s->handlers.frame(s, f, s->userdata);
	if (f->acquire_fence >= 0)
		close(f->acquire_fence);
}

/*
 * Reads the consumer's link: each frame in FIFO mode; in LATEST mode everything waiting,
 * releasing every frame but the newest at once (with its own acquire fence as the release
 * fence: the producer must not write before its own write is done). Frames are read only
 * when someone takes them: the frame callback or wait_frame(); else they stay in the link.
 */
static void consumer_read(struct dmabroker_stream *s, bool *progress)
{
	struct dmabroker *ctx = s->ctx;
	struct dmabroker_frame newest;
	bool have = false;

	while (s->link && !s->zombie && ctx->handled < DMABROKER_DISPATCH_BUDGET &&
	       (s->handlers.frame || s->wanted)) {
		union db_wire_record rec;
		const char *reason = NULL;
		int fence = -1, r;

		r = link_recv(s->link, &rec, &fence, &reason);
		if (r == -EAGAIN)
			break;
		*progress = true;
		if (r <= 0) {
			char why[REASON_MAX];

			if (have && newest.index != DMABROKER_FRAME_NO_BUFFER)
				(void)consumer_send_release(s, newest.index, newest.acquire_fence);
			if (have)
				close_fd(&newest.acquire_fence);
			have = false;
			if (r == 0)
				snprintf(why, sizeof(why), "producer gone");
			else
				snprintf(why, sizeof(why),
					 "the producer broke the link's protocol: %s",
					 reason ? reason : strerror(-r));
			consumer_end(s, why);
			return;
		}
		link_apply(s->link, &rec);
		if (have) {
			/* LATEST: a newer one came; the older goes back unseen. */
			if (newest.index != DMABROKER_FRAME_NO_BUFFER)
				(void)consumer_send_release(s, newest.index, newest.acquire_fence);
			close_fd(&newest.acquire_fence);
			have = false;
			ctx->handled++;
		}
		frame_from_wire(&rec, fence, &newest);
		have = true;
		if (s->mode == DMABROKER_STREAM_FIFO ||
		    (rec.frame.flags & DMABROKER_WIRE_END_OF_STREAM)) {
			consumer_deliver(s, &newest);
			have = false;
		}
	}
	if (have)
		consumer_deliver(s, &newest);
}

/* The consumer's part of dispatch: a link that failed while sending ends here; frames in. */
void consumer_dispatch(struct dmabroker_stream *s, bool *progress)
{
	if (s->link_failed[0] && s->link) {
		char why[REASON_MAX];

		snprintf(why, sizeof(why), "%s", s->link_failed);
		s->link_failed[0] = 0;
		*progress = true;
		consumer_end(s, why);
		return;
	}
	consumer_read(s, progress);
}

int dmabroker_stream_release(struct dmabroker_stream *s, uint32_t index, int release_fence)
{
	_cleanup_(closep) int exported = -1;
	int fence = release_fence;

	if (!s || s->producer)
		return -EINVAL;
	if (release_fence >= 0 && fence_check(release_fence) < 0)
		return -EINVAL;
	/* After the end there is nobody to tell: the buffer stays the consumer's. */
	if (!s->link)
		return s->ended ? 0 : -EINVAL;
	if (index >= s->buffer_count || !s->link->held[index])
		return -EINVAL;
	if (fence < 0 && s->sync == DMABROKER_SYNC_IMPLICIT)
		fence = exported = export_fence(stream_buffer(s, index), DMA_BUF_SYNC_WRITE);
	(void)consumer_send_release(s, index, fence);
	return api_return(s->ctx, 0);
}

static bool frame_taken(struct dmabroker_stream *s)
{
	return s->got_frame;
}

int dmabroker_stream_wait_frame(struct dmabroker_stream *s, struct dmabroker_frame *f,
				uint64_t timeout_usec)
{
	int r;

	if (!s || !f || s->producer || s->ctx->dispatching)
		return -EINVAL;
	if (s->ended)
		return -EPIPE;
	/* Without a frame callback the link is in the loop only while this waits. */
	if (s->link && !s->link->in_epoll) {
		r = link_watch(s->ctx, s->link);
		if (r < 0)
			return r;
	}
	s->wanted = f;
	s->got_frame = false;
	stream_hold(s);
	r = stream_wait_until(s, frame_taken, timeout_usec);
	if (s->zombie) {
		/* A callback freed s: its link is closed, what the frame holds goes back. */
		if (s->got_frame)
			close_fd(&f->acquire_fence);
		(void)stream_unhold(s);
		return -EPIPE;
	}
	(void)stream_unhold(s);
	s->wanted = NULL;
	if (s->link && !s->handlers.frame)
		link_unwatch(s->ctx, s->link);
	if (s->got_frame) {
		s->got_frame = false;
		return 0;
	}
	return r < 0 ? r : -EIO;
}
