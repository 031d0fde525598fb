// SPDX-License-Identifier: MIT
/*
 * The broker's signals about streams: StreamLink (a consumer joined, to the producer, which
 * takes its end of the link with TakeStreamLink),
 * StreamLinkEnded (one link is over, to both ends) and StreamEnded (the stream is over, to
 * every member). Only signals from the broker get here (signal.c's on_signal checks the
 * sender).
 */
#include "libdmabroker-private.h"

#include "stream-link.h"
#include "stream-private.h"

static struct dmabroker_stream *find_stream(struct dmabroker *ctx, const char *path)
{
	for (struct dmabroker_stream *s = ctx->streams; s; s = s->next)
		if (streq_ptr(s->path, path))
			return s;
	return NULL;
}

/* The whole stream is over (StreamEnded): every link closes, ended is told once. */
static void stream_end(struct dmabroker_stream *s, const char *reason)
{
	struct dmabroker *ctx = s->ctx;

	if (!s->producer) {
		consumer_end(s, reason);
		return;
	}
	while (s->links) {
		struct stream_link *l = s->links;

		s->links = l->next;
		link_return_all(s, l);
		link_drop(ctx, l);
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

/* The call taking consumer's link, if one is on its way. */
static struct dmabroker_call *find_take(struct dmabroker_stream *s, uint32_t consumer)
{
	for (struct dmabroker_call *c = s->ctx->calls; c; c = c->next)
		if (c->kind == CALL_STREAM_TAKE_LINK && c->stream == s && c->count == consumer)
			return c;
	return NULL;
}

/* A consumer joined: its link is taken with TakeStreamLink, through the call queue like any
 * call (its answer carries the descriptor, so the call window bounds what comes). */
static void on_stream_link(struct dmabroker_stream *s, sd_bus_message *m)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *call_m = NULL;
	struct dmabroker_call *call;
	uint32_t consumer;
	int r;

	if (!s->producer || s->ended || sd_bus_message_read(m, "u", &consumer) < 0)
		return;
	/* A consumer's number is never reused: a second StreamLink for it is no new one. */
	if (stream_find_link(s, consumer) || find_take(s, consumer))
		return;
	r = new_call(s->ctx, CALL_STREAM_TAKE_LINK, &call_m);
	if (r >= 0)
		r = sd_bus_message_append(call_m, "ou", s->path, consumer);
	if (r >= 0)
		r = call_start(s->ctx, CALL_STREAM_TAKE_LINK, call_m, NULL, NULL, NULL, &call);
	if (r < 0) {
		log_msg(DMABROKER_LOG_DEBUG,
			"dmabroker: stream %s: could not take link %" PRIu32 ": %s", s->path,
			consumer, strerror(-r));
		return;
	}
	call->stream = s;
	call->count = consumer;
}

static void on_stream_link_ended(struct dmabroker_stream *s, sd_bus_message *m)
{
	const char *reason;
	uint32_t consumer;

	if (sd_bus_message_read(m, "us", &consumer, &reason) < 0)
		return;
	if (!s->producer) {
		if (consumer == s->consumer_id)
			consumer_end(s, reason);
		return;
	}
	for (struct stream_link *l = s->links; l; l = l->next)
		if (l->consumer == consumer) {
			producer_end_link(s, l, reason, false);
			return;
		}
	/* Ended before its link came: an answer still on its way is dropped. */
	for (struct dmabroker_call *c; (c = find_take(s, consumer));)
		c->stream = NULL;
}

bool stream_on_signal(struct dmabroker *ctx, sd_bus_message *m)
{
	const char *member = sd_bus_message_get_member(m), *path, *reason;
	struct dmabroker_stream *s;

	if (!member ||
	    (strcmp(member, "StreamLink") != 0 && strcmp(member, "StreamLinkEnded") != 0 &&
	     strcmp(member, "StreamEnded") != 0))
		return false;
	if (sd_bus_message_read_basic(m, 'o', &path) <= 0 || ctx->disconnect_requested)
		return true;
	s = find_stream(ctx, path);
	if (!s || s->zombie)
		return true;
	if (strcmp(member, "StreamLink") == 0)
		on_stream_link(s, m);
	else if (strcmp(member, "StreamLinkEnded") == 0)
		on_stream_link_ended(s, m);
	else if (sd_bus_message_read_basic(m, 's', &reason) > 0)
		stream_end(s, reason);
	return true;
}
