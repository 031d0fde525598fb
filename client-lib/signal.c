// SPDX-License-Identifier: MIT
#include "libdmabroker-private.h"

/* --- signals --- */

static int check_client(struct dmabroker *ctx);

struct dmabroker_buffer *find_buffer(struct dmabroker *ctx, const char *path)
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
	/* The streams' signals have their home in stream.c. */
	if (stream_on_signal(ctx, m))
		return 0;
	if (sd_bus_message_read_basic(m, 'o', &path) <= 0)
		return 0;
	buf = find_buffer(ctx, path);
	/* No callback runs once dmabroker_disconnect() was called, even from a callback. */
	if (!buf || ctx->disconnect_requested)
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
	/* The old peer went with the old daemon. Whether the new one knows us depends on its
	 * store: ask it first, and let the queue wait for the answer. */
	if (bus_open(ctx->peer.bus))
		retire_peer(ctx);
	if (check_client(ctx) < 0)
		(void)register_again(ctx);
	return 0;
}

/* --- after a restart --- */

/* Asks the daemon for our client object: first in the queue, which waits for the answer. */
static int check_client(struct dmabroker *ctx)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	r = sd_bus_message_new_method_call(ctx->bus.bus, &m, DB_BUS_NAME, ctx->client_path,
					   "org.freedesktop.DBus.Properties", "GetAll");
	if (r >= 0)
		r = sd_bus_message_append(m, "s", DB_IFACE_CLIENT);
	if (r < 0)
		return r;
	ctx->registering = true;
	r = call_start_internal(ctx, CALL_CHECK_CLIENT, m, true, NULL);
	if (r < 0)
		ctx->registering = false;
	return r;
}

/*
 * Tells the caller about every buffer the daemon no longer has (not in held, or all when held
 * is NULL): revoked, with reason. Such a buffer is released here only (dmabroker_release()
 * sends nothing for it). A callback may release any buffer: look again after each.
 */
static void revoke_lost(struct dmabroker *ctx, const struct paths *held, const char *reason)
{
	for (;;) {
		struct dmabroker_buffer *buf = ctx->buffers;

		while (buf && (buf->lost || (held && paths_have(held, buf->path))))
			buf = buf->next;
		if (!buf)
			return;
		buf->lost = true;
		if (ctx->disconnect_requested)
			continue;
		ctx->handled++;
		if (ctx->handlers.revoked)
			ctx->handlers.revoked(buf, reason, ctx->userdata);
	}
}

/* The new daemon's Backends and a new peer, as after registering. */
static void reopen(struct dmabroker *ctx)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *get = NULL, *open = NULL;

	if (build_backends(ctx, &get) >= 0)
		(void)call_start_internal(ctx, CALL_BACKENDS, get, false, NULL);
	if (!(ctx->flags & DMABROKER_CONNECT_NO_PEER) && new_call(ctx, CALL_OPEN_PEER, &open) >= 0)
		(void)call_start_internal(ctx, CALL_OPEN_PEER, open, false, NULL);
}

/*
 * The answer about our client object after a restart. Restored from the store (our object,
 * with our bus name): buffers it no longer has are revoked, and those it has that we do not
 * know are released once quiet (reconcile). Started afresh: every buffer is revoked and the
 * context registers again with what it was given first.
 */
void client_checked(struct dmabroker *ctx, sd_bus_message *reply, int r)
{
	_cleanup_(paths_free) struct paths held = {0};
	const char *me = NULL, *key, *bus_name = NULL;

	while (r >= 0 && reply && (r = sd_bus_message_enter_container(reply, 'a', "{sv}")) >= 0) {
		while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
			r = sd_bus_message_read_basic(reply, 's', &key);
			if (r >= 0 && strcmp(key, "BusName") == 0)
				r = sd_bus_message_read(reply, "v", "s", &bus_name);
			else if (r >= 0 && strcmp(key, "Buffers") == 0 &&
				 (r = sd_bus_message_enter_container(reply, 'v', "ao")) >= 0) {
				r = read_paths(reply, &held);
				if (r >= 0)
					r = sd_bus_message_exit_container(reply);
			} else if (r >= 0)
				r = sd_bus_message_skip(reply, "v");
			if (r >= 0)
				r = sd_bus_message_exit_container(reply);
			if (r < 0)
				break;
		}
		break;
	}
	(void)sd_bus_get_unique_name(ctx->bus.bus, &me);
	if (r < 0 || !bus_name || !streq_ptr(bus_name, me)) {
		log_msg(DMABROKER_LOG_INFO, "dmabroker: the daemon restarted without its store; "
					    "registering again");
		revoke_lost(ctx, NULL, DMABROKER_REVOKED_DAEMON_RESTARTED);
		r = register_again(ctx);
		if (r < 0)
			registered_again(ctx, r);
		return;
	}
	revoke_lost(ctx, &held, "the daemon restarted and no longer has this buffer");
	ctx->reconcile = true;
	ctx->registering = false;
	reopen(ctx);
	queue_pump(ctx);
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
