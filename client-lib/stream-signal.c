// SPDX-License-Identifier: MIT
/*
 * The broker's signals about streams: StreamLink (a consumer's link, to the producer),
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

static void on_stream_link(struct dmabroker_stream *s, sd_bus_message *m)
{
	struct stream_link *l;
	uint32_t consumer;
	int fd, own;

	if (!s->producer || s->ended || sd_bus_message_read(m, "uh", &consumer, &fd) < 0)
		return;
	/* A consumer's number is never reused: a second link for it is no new consumer. */
	for (l = s->links; l; l = l->next)
		if (l->consumer == consumer)
			return;
	/* The fd is the message's: keep a duplicate. */
	own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (own < 0)
		return;
	l = link_new(own, consumer, true, s->buffer_count);
	if (!l)
		return;
	if (link_watch(s->ctx, l) < 0) {
		link_free(l);
		return;
	}
	l->next = s->links;
	s->links = l;
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
