// SPDX-License-Identifier: MIT
/*
 * libdmabroker-glib: a GSource over libdmabroker's loop contract, as sd-bus's users write
 * one for GLib: poll the fd for its events, wake at its timeout, dispatch.
 */
#include "dmabroker-glib.h"

#include <stdint.h>

struct dmabroker_source {
	GSource source;
	struct dmabroker *ctx; /* borrowed: outlives the source */
	gpointer tag; /* from g_source_add_unix_fd() */
};

static gboolean source_prepare(GSource *source, gint *timeout)
{
	struct dmabroker_source *s = (struct dmabroker_source *)source;
	uint64_t when;
	gint64 now;

	*timeout = -1;
	if (dmabroker_get_timeout(s->ctx, &when) < 0 || when == UINT64_MAX)
		return FALSE;
	if (when == 0)
		return TRUE;
	/* Both are CLOCK_MONOTONIC microseconds. */
	now = g_get_monotonic_time();
	if ((gint64)when <= now)
		return TRUE;
	*timeout = (gint)MIN(((gint64)when - now + 999) / 1000, G_MAXINT);
	return FALSE;
}

static gboolean source_check(GSource *source)
{
	struct dmabroker_source *s = (struct dmabroker_source *)source;
	uint64_t when = UINT64_MAX;

	if (g_source_query_unix_fd(source, s->tag) & (G_IO_IN | G_IO_HUP | G_IO_ERR))
		return TRUE;
	dmabroker_get_timeout(s->ctx, &when);
	return when != UINT64_MAX && (gint64)when <= g_get_monotonic_time();
}

static gboolean source_dispatch(GSource *source, GSourceFunc callback, gpointer userdata)
{
	struct dmabroker_source *s = (struct dmabroker_source *)source;

	if (dmabroker_dispatch(s->ctx) < 0 && callback)
		return callback(userdata);
	return G_SOURCE_CONTINUE;
}

static GSourceFuncs source_funcs = {
	.prepare = source_prepare,
	.check = source_check,
	.dispatch = source_dispatch,
};

GSource *dmabroker_glib_source_new(struct dmabroker *ctx)
{
	struct dmabroker_source *s;
	int fd, events;

	if (!ctx)
		return NULL;
	fd = dmabroker_get_fd(ctx);
	events = dmabroker_get_events(ctx);
	if (fd < 0 || events < 0)
		return NULL;
	s = (struct dmabroker_source *)g_source_new(&source_funcs, sizeof(*s));
	s->ctx = ctx;
	s->tag = g_source_add_unix_fd(&s->source, fd, (GIOCondition)events);
	g_source_set_name(&s->source, "dmabroker");
	return &s->source;
}
