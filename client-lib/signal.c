// SPDX-License-Identifier: MIT
#include "libdmabroker-private.h"

/* --- signals --- */

static struct dmabroker_buffer *find_buffer(struct dmabroker *ctx, const char *path)
{
	for (struct dmabroker_buffer *buf = ctx->buffers; buf; buf = buf->next)
		if (strcmp(buf->path, path) == 0)
			return buf;
	return NULL;
}

int on_signal(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct dmabroker *ctx = userdata;
	const char *member = sd_bus_message_get_member(m);
	const char *path, *reason = "";
	struct dmabroker_buffer *buf;

	(void)error;
	/* On the bus anyone can send us a signal: only the broker's current owner counts. On
	 * the peer connection, only the daemon is at the other end. */
	if (sd_bus_message_get_bus(m) == ctx->bus.bus &&
	    !streq_ptr(sd_bus_message_get_sender(m), ctx->owner)) {
		log_msg(DMABROKER_LOG_DEBUG, "dmabroker: ignoring %s from %s, not the broker",
			member, sd_bus_message_get_sender(m));
		return 0;
	}
	if (sd_bus_message_read_basic(m, 'o', &path) <= 0)
		return 0;
	buf = find_buffer(ctx, path);
	if (!buf)
		return 0;
	/* The callback may release buf: nothing touches it afterwards. */
	if (strcmp(member, "Moved") == 0) {
		ctx->handled++;
		if (ctx->handlers.moved)
			ctx->handlers.moved(buf, ctx->userdata);
	} else if (strcmp(member, "Revoked") == 0) {
		(void)sd_bus_message_read_basic(m, 's', &reason);
		ctx->handled++;
		if (ctx->handlers.revoked)
			ctx->handlers.revoked(buf, reason, ctx->userdata);
	}
	return 0;
}

/* The daemon came, went or was replaced: follow it. */
int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct dmabroker *ctx = userdata;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *get = NULL, *open = NULL;
	struct dmabroker_call *call;
	const char *name, *old_owner, *new_owner;

	(void)error;
	/* Only the bus driver speaks for names; anyone else's NameOwnerChanged is a forgery. */
	if (!streq_ptr(sd_bus_message_get_sender(m), DBUS_NAME) ||
	    sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 ||
	    strcmp(name, DB_BUS_NAME) != 0)
		return 0;
	free(ctx->owner);
	ctx->owner = new_owner[0] ? strdup(new_owner) : NULL;
	log_msg(DMABROKER_LOG_INFO, "dmabroker: the broker is now %s",
		new_owner[0] ? new_owner : "gone");
	if (!new_owner[0] || !ctx->client_path)
		return 0;
	/* A restarted daemon restores registrations on the bus: the old peer went with the old
	 * daemon, so ask the new one for the default backend and a new peer. */
	if (bus_open(ctx->peer.bus))
		retire_peer(ctx);
	if (build_backends(ctx, &get) >= 0 &&
	    call_start(ctx, CALL_BACKENDS, get, NULL, NULL, NULL, &call) >= 0)
		call->internal = true;
	if (!(ctx->flags & DMABROKER_CONNECT_NO_PEER) &&
	    new_call(ctx, CALL_OPEN_PEER, &open) >= 0 &&
	    call_start(ctx, CALL_OPEN_PEER, open, NULL, NULL, NULL, &call) >= 0)
		call->internal = true;
	return 0;
}

int dmabroker_set_event_handlers(struct dmabroker *ctx,
				 const struct dmabroker_event_handlers *handlers,
				 size_t handlers_size, void *userdata)
{
	struct dmabroker_event_handlers h;
	int r;

	if (!ctx)
		return -EINVAL;
	r = copy_sized(&h, sizeof(h), HANDLERS_SIZE_V1, handlers, handlers_size);
	if (r < 0)
		return r;
	ctx->handlers = h;
	ctx->userdata = userdata;
	return 0;
}
