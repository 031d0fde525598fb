// SPDX-License-Identifier: MIT
/*
 * A stream's producer: its buffers (free, taken, out to consumers, coming back), queueing a
 * frame to the ready consumers, the releases that come back on the links, and consumers that
 * say hello or whose links end.
 */
#include "libdmabroker-private.h"

#include "stream-link.h"
#include "stream-private.h"

/* --- buffers and links --- */

/* A buffer no consumer holds any more: buffer_returned, from dispatch. */
static void buffer_back(struct dmabroker_stream *s, uint32_t index)
{
	struct stream_buffer *b = &s->buffers[index];

	if (b->state == BUF_OUT && b->holders == 0)
		b->state = BUF_RETURNING;
}

/* Everything l held is back (a consumer gone); its fences go with it. */
void link_return_all(struct dmabroker_stream *s, struct stream_link *l)
{
	for (uint32_t i = 0; i < l->buffer_count; i++) {
		if (!l->held[i])
			continue;
		link_unhold(l, i);
		if (s->buffers[i].holders > 0)
			s->buffers[i].holders--;
		buffer_back(s, i);
	}
}

static void tell_consumer_left(struct dmabroker_stream *s, uint32_t consumer, bool was_ready,
			       const char *reason)
{
	struct dmabroker *ctx = s->ctx;

	log_msg(DMABROKER_LOG_DEBUG, "dmabroker: stream %s: consumer %" PRIu32 " left: %s", s->path,
		consumer, reason);
	if (!was_ready || ctx->disconnect_requested)
		return;
	ctx->handled++;
	if (s->handlers.consumer_left)
		s->handlers.consumer_left(s, consumer, reason, s->userdata);
}

/* Tells the daemon that the producer ended a consumer's link, so that it counts the consumer
 * a member no more. Nobody waits for the answer: the application heard consumer_left. */
static void tell_daemon_link_ended(struct dmabroker_stream *s, uint32_t consumer,
				   const char *reason)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker *ctx = s->ctx;
	int r;

	if (!s->path || ctx->disconnect_requested)
		return;
	r = new_call(ctx, CALL_STREAM_END_LINK, &m);
	if (r >= 0)
		r = sd_bus_message_append(m, "ous", s->path, consumer, reason);
	if (r >= 0)
		r = call_start(ctx, CALL_STREAM_END_LINK, m, NULL, NULL, NULL, NULL);
	if (r < 0)
		log_msg(DMABROKER_LOG_DEBUG,
			"dmabroker: stream %s: the daemon was not told of link %" PRIu32
			"'s end: %s",
			s->path, consumer, strerror(-r));
}

/*
 * Ends one consumer's link on the producer: its buffers are back at once. Runs in dispatch.
 * by_us: the library ended it (not the daemon's StreamLinkEnded): the daemon is told.
 */
void producer_end_link(struct dmabroker_stream *s, struct stream_link *l, const char *reason,
		       bool by_us)
{
	bool ready = l->ready;
	uint32_t consumer = l->consumer;

	for (struct stream_link **p = &s->links; *p; p = &(*p)->next)
		if (*p == l) {
			*p = l->next;
			break;
		}
	link_return_all(s, l);
	link_drop(s->ctx, l);
	if (by_us)
		tell_daemon_link_ended(s, consumer, reason);
	tell_consumer_left(s, consumer, ready, reason);
}

/* Tells buffer_returned for the buffers back; false when the budget ran out first. */
static bool deliver_returns(struct dmabroker_stream *s)
{
	struct dmabroker *ctx = s->ctx;

	for (uint32_t i = 0; s->buffers && i < s->buffer_count; i++) {
		struct stream_buffer *b = &s->buffers[i];
		int fence;

		if (b->state != BUF_RETURNING)
			continue;
		if (ctx->handled >= DMABROKER_DISPATCH_BUDGET || ctx->disconnect_requested)
			return false;
		b->state = BUF_FREE;
		fence = b->release_fence;
		b->release_fence = -1;
		if (s->handlers.buffer_returned) {
			ctx->handled++;
			s->handlers.buffer_returned(s, i, fence, s->userdata);
		} else if (fence >= 0) {
			/* Nobody takes the fence: the buffer is free once it signals. */
			(void)dmabroker_fence_wait(fence, UINT64_MAX);
		}
		if (fence >= 0)
			close(fence);
		/* The callback may have freed s: it waits for the dispatch's end. */
		if (s->zombie)
			return false;
	}
	return true;
}

/* A RELEASE from l, checked: the buffer is back when no consumer holds it any more. */
static void producer_released(struct dmabroker_stream *s, struct stream_link *l,
			      const union db_wire_record *rec, int fence)
{
	uint32_t index = rec->release.index;
	struct stream_buffer *b = &s->buffers[index];

	link_apply(l, rec);
	if (b->holders > 0)
		b->holders--;
	if (fence >= 0) {
		if (s->sync == DMABROKER_SYNC_IMPLICIT &&
		    import_fence(stream_buffer(s, index), fence, DMA_BUF_SYNC_READ))
			close(fence);
		else
			b->release_fence = merge_fences(b->release_fence, fence);
	}
	buffer_back(s, index);
}

/* Reads what l has, within the budget; false when l was ended (freed). */
static bool producer_read(struct dmabroker_stream *s, struct stream_link *l, bool *progress)
{
	struct dmabroker *ctx = s->ctx;

	while (ctx->handled < DMABROKER_DISPATCH_BUDGET && !s->zombie) {
		union db_wire_record rec;
		const char *reason = NULL;
		int fence = -1, r;

		r = link_recv(l, &rec, &fence, &reason);
		if (r == -EAGAIN)
			return true;
		*progress = true;
		if (r == 0) {
			producer_end_link(s, l, "the consumer's link hung up", true);
			return false;
		}
		if (r < 0) {
			char why[REASON_MAX];

			snprintf(why, sizeof(why), "the consumer broke the link's protocol: %s",
				 reason ? reason : strerror(-r));
			producer_end_link(s, l, why, true);
			return false;
		}
		if (r == DMABROKER_WIRE_HELLO) {
			link_apply(l, &rec);
			ctx->handled++;
			if (s->handlers.consumer_joined)
				s->handlers.consumer_joined(s, l->consumer, s->userdata);
		} else {
			producer_released(s, l, &rec, fence);
			/* A record that tells nothing counts too: a flood cannot starve the rest. */
			ctx->handled++;
		}
	}
	return true;
}

/* The producer's part of dispatch: links that failed while sending were noted hung up and
 * end here; then what each link has; then buffer_returned for the buffers back. */
void producer_dispatch(struct dmabroker_stream *s, bool *progress)
{
	struct dmabroker *ctx = s->ctx;

	for (struct stream_link *l = s->links, *next; l && !s->zombie; l = next) {
		next = l->next;
		if (ctx->handled >= DMABROKER_DISPATCH_BUDGET)
			return;
		if (l->hung_up && l->fail_reason[0]) {
			char why[REASON_MAX];

			snprintf(why, sizeof(why), "%s", l->fail_reason);
			*progress = true;
			producer_end_link(s, l, why, true);
			continue;
		}
		(void)producer_read(s, l, progress);
	}
	if (!s->zombie && !deliver_returns(s))
		*progress = true;
}

/* --- frames --- */

int dmabroker_stream_get_free(struct dmabroker_stream *s, uint32_t *ret_index)
{
	if (!s || !ret_index || !s->producer)
		return -EINVAL;
	if (s->ended)
		return -EPIPE;
	for (uint32_t i = 0; i < s->buffer_count; i++)
		if (s->buffers[i].state == BUF_FREE) {
			s->buffers[i].state = BUF_TAKEN;
			*ret_index = i;
			return 0;
		}
	return -EAGAIN;
}

/* Sends a frame to one consumer; a link that cannot take it is ended from dispatch. */
static bool send_frame(struct dmabroker_stream *s, struct stream_link *l,
		       const union db_wire_record *rec, int fence)
{
	const char *reason = NULL;
	int r;

	r = link_send(l, rec, fence, &reason);
	if (r < 0) {
		l->hung_up = true;
		snprintf(l->fail_reason, sizeof(l->fail_reason), "%s",
			 r == -EPIPE || r == -ECONNRESET ? "the consumer's link hung up" : reason);
		return false;
	}
	l->last_seq = rec->frame.seq;
	if (rec->frame.index != DMABROKER_WIRE_NO_BUFFER)
		link_hold(l, rec->frame.index, rec->frame.seq);
	return true;
}

int dmabroker_stream_queue(struct dmabroker_stream *s, struct dmabroker_frame *f)
{
	union db_wire_record rec = {.frame = {.header = {.type = DMABROKER_WIRE_FRAME}}};
	_cleanup_(closep) int exported = -1;
	struct stream_buffer *b = NULL;
	const char *reason = NULL;
	int fence;

	if (!s || !f || !s->producer)
		return -EINVAL;
	if (s->ended)
		return api_return(s->ctx, -EPIPE);
	if (f->index != DMABROKER_FRAME_NO_BUFFER) {
		if (f->index >= s->buffer_count || s->buffers[f->index].state != BUF_TAKEN)
			return -EINVAL;
		b = &s->buffers[f->index];
	} else if (!(f->flags & DMABROKER_FRAME_END_OF_STREAM) || f->acquire_fence >= 0) {
		return -EINVAL;
	}
	if (f->acquire_fence >= 0 && fence_check(f->acquire_fence) < 0)
		return -EINVAL;
	fence = f->acquire_fence;
	if (fence < 0 && b && s->sync == DMABROKER_SYNC_IMPLICIT)
		fence = exported = export_fence(stream_buffer(s, f->index), DMA_BUF_SYNC_WRITE);
	rec.frame.index = f->index;
	rec.frame.flags =
		(f->flags & (DMABROKER_FRAME_END_OF_STREAM | DMABROKER_FRAME_DISCONTINUITY)) |
		(fence >= 0 ? DMABROKER_WIRE_FENCE : 0);
	rec.frame.seq = s->next_seq + 1;
	rec.frame.timestamp_ns = f->timestamp_ns;
	rec.frame.meta_type = f->meta_type;
	rec.frame.meta_size = f->meta_size;
	if (f->meta_size <= DMABROKER_FRAME_META_MAX)
		memcpy(rec.frame.meta, f->meta, f->meta_size);
	/* What no consumer may accept is refused here, before anything is sent. */
	{
		uint8_t scratch[DMABROKER_WIRE_RECORD_MAX];

		if (db_wire_encode(&rec, scratch, &reason) < 0) {
			log_msg(DMABROKER_LOG_DEBUG, "dmabroker: a frame refused: %s", reason);
			return -EINVAL;
		}
	}
	f->seq = ++s->next_seq;
	if (b)
		b->state = BUF_OUT;
	for (struct stream_link *l = s->links; l; l = l->next) {
		if (!l->ready || l->hung_up)
			continue;
		/* LATEST: a consumer that holds all it may is skipped, never waited for. A frame
		 * without a buffer (the end of the stream) takes nothing: everyone gets it. */
		if (s->mode == DMABROKER_STREAM_LATEST && b && l->n_held >= l->max_held)
			continue;
		if (send_frame(s, l, &rec, fence) && b)
			b->holders++;
	}
	/* Nobody took it: back at once (told from dispatch). */
	if (b)
		buffer_back(s, f->index);
	return api_return(s->ctx, 0);
}

static bool has_free_buffer(struct dmabroker_stream *s)
{
	for (uint32_t i = 0; i < s->buffer_count; i++)
		if (s->buffers[i].state == BUF_FREE)
			return true;
	return false;
}

int dmabroker_stream_wait_free(struct dmabroker_stream *s, uint32_t *ret_index,
			       uint64_t timeout_usec)
{
	int r;

	if (!s || !ret_index || !s->producer || s->ctx->dispatching)
		return -EINVAL;
	r = dmabroker_stream_get_free(s, ret_index);
	if (r != -EAGAIN)
		return r;
	stream_hold(s);
	r = stream_wait_until(s, has_free_buffer, timeout_usec);
	if (stream_unhold(s))
		return -EPIPE; /* a callback freed s */
	return r < 0 ? r : dmabroker_stream_get_free(s, ret_index);
}
