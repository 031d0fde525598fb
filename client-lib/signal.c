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

/* --- after a restart, and reconciling --- */

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

struct paths {
	char **v;
	size_t n;
};

static void paths_free(struct paths *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->v[i]);
	free(p->v);
	*p = (struct paths){0};
}

static bool paths_have(const struct paths *p, const char *path)
{
	for (size_t i = 0; i < p->n; i++)
		if (strcmp(p->v[i], path) == 0)
			return true;
	return false;
}

/* Reads an "ao" (the Buffers property's value). */
static int read_paths(sd_bus_message *m, struct paths *ret)
{
	const char *path;
	int r;

	r = sd_bus_message_enter_container(m, 'a', "o");
	while (r >= 0 && (r = sd_bus_message_read_basic(m, 'o', &path)) > 0) {
		char **v = realloc(ret->v, (ret->n + 1) * sizeof(char *));

		if (!v)
			return -ENOMEM;
		ret->v = v;
		if (!(ret->v[ret->n] = strdup(path)))
			return -ENOMEM;
		ret->n++;
	}
	if (r >= 0)
		r = sd_bus_message_exit_container(m);
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

/* Lists the buffers the daemon holds for us (Client1.Buffers). */
int list_buffers(struct dmabroker *ctx, dmabroker_buffers_func_t cb, void *userdata,
		 struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	if (!ctx->client_path)
		return -ENOTCONN;
	r = sd_bus_message_new_method_call(ctx->bus.bus, &m, DB_BUS_NAME, ctx->client_path,
					   "org.freedesktop.DBus.Properties", "Get");
	if (r >= 0)
		r = sd_bus_message_append(m, "ss", DB_IFACE_CLIENT, "Buffers");
	if (r < 0)
		return r;
	if (!cb)
		return call_start_internal(ctx, CALL_LIST_BUFFERS, m, false, NULL);
	return call_start(ctx, CALL_LIST_BUFFERS, m, (void *)cb, userdata, ret_call, NULL);
}

/* Releases a buffer by path: one we do not know, or whose handle is gone. */
static void release_path(struct dmabroker *ctx, const char *path)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;

	if (build_on_buffer(ctx, CALL_RELEASE, path, NULL, &m) >= 0)
		(void)call_start_internal(ctx, CALL_RELEASE, m, false, NULL);
}

/* Reconciling: every buffer the daemon holds for us that the library does not know goes back. */
static void reconcile(struct dmabroker *ctx, const struct paths *held)
{
	unsigned released = 0;

	/* Not quiet after all (a buffer whose answer is still coming could be among them):
	 * later. */
	if (ctx->n_making || collections_pending(ctx)) {
		ctx->reconcile = true;
		return;
	}
	for (size_t i = 0; i < held->n; i++)
		if (!find_buffer(ctx, held->v[i])) {
			release_path(ctx, held->v[i]);
			released++;
		}
	if (released)
		log_msg(DMABROKER_LOG_INFO,
			"dmabroker: released %u buffers the daemon made for calls whose outcome "
			"was unknown",
			released);
}

/* dmabroker_adopt_buffers(): Reacquire the next unknown buffer; 1 if a call was sent. */
static int adopt_next(struct dmabroker_call *call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	if (call->adopt_next >= call->n_adopt)
		return 0;
	call->kind = CALL_ADOPT_ONE;
	r = build_on_buffer(call->ctx, CALL_REACQUIRE, call->adopt[call->adopt_next], NULL, &m);
	if (r >= 0)
		r = call_next(call, m);
	return r < 0 ? r : 1;
}

/*
 * The answers of a listing (Client1.Buffers) and of the Reacquires that adopt what it found.
 * Returns 1 while a next step is on its way, else runs the caller's callback (adopting) and 0.
 */
int buffers_on_reply(struct dmabroker_call *call, sd_bus_message *reply, int r)
{
	struct dmabroker *ctx = call->ctx;
	_cleanup_(paths_free) struct paths held = {0};

	if (call->kind == CALL_LIST_BUFFERS) {
		if (r >= 0)
			r = sd_bus_message_enter_container(reply, 'v', "ao");
		if (r >= 0)
			r = read_paths(reply, &held);
		if (r < 0)
			log_msg(DMABROKER_LOG_INFO,
				"dmabroker: could not list the daemon's buffers: %s", strerror(-r));
		if (r >= 0 && call->internal)
			reconcile(ctx, &held);
		if (r < 0 || call->internal)
			goto done;
		call->adopt = calloc(held.n ? held.n : 1, sizeof(char *));
		call->adopted = calloc(held.n ? held.n : 1, sizeof(*call->adopted));
		if (!call->adopt || !call->adopted) {
			r = -ENOMEM;
			goto done;
		}
		for (size_t i = 0; i < held.n; i++)
			if (!find_buffer(ctx, held.v[i]))
				call->adopt[call->n_adopt++] = take_ptr(held.v[i]);
	} else {
		const char *path = call->adopt[call->adopt_next++];
		struct dmabroker_buffer *buf;
		int fd;

		/* One released meanwhile (NotFound) is simply not adopted. */
		if (r >= 0 && sd_bus_message_read(reply, "h", &fd) > 0 &&
		    buffer_from_reply(ctx, path, fd, &buf) >= 0) {
			if (read_layout(reply, NULL, buf) < 0)
				buffer_free(buf);
			else
				call->adopted[call->n_adopted++] = buf;
		}
		r = 0;
	}
	r = adopt_next(call);
	if (r > 0)
		return 1;
done:
	if (call->internal)
		return 0;
	if (call_silenced(call) || !call->cb.buffers || r < 0) {
		for (unsigned i = 0; i < call->n_adopted; i++)
			(void)dmabroker_release_async(call->adopted[i], NULL, NULL, NULL);
		call->n_adopted = 0;
	}
	if (!call_silenced(call) && call->cb.buffers)
		call->cb.buffers(r, r >= 0 ? call->adopted : NULL, r >= 0 ? call->n_adopted : 0,
				 call->userdata);
	return 0;
}

int dmabroker_adopt_buffers_async(struct dmabroker *ctx, dmabroker_buffers_func_t cb,
				  void *userdata, struct dmabroker_call **ret_call)
{
	if (!ctx)
		return -EINVAL;
	return api_return(ctx, list_buffers(ctx, cb, userdata, ret_call));
}

/*
 * The blocking form: the same steps, waited for here. Only this call's answers are taken
 * from the connections; anything else that arrives waits for dmabroker_dispatch() (sd-bus
 * keeps it, and the fd says so).
 */
int dmabroker_adopt_buffers(struct dmabroker *ctx, struct dmabroker_buffer ***ret,
			    unsigned *ret_count)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	_cleanup_(paths_free) struct paths held = {0};
	struct dmabroker_buffer **bufs;
	unsigned n = 0;
	int r;

	if (!ctx || !ret || !ret_count)
		return -EINVAL;
	if (!ctx->client_path)
		return -ENOTCONN;
	r = sd_bus_message_new_method_call(ctx->bus.bus, &m, DB_BUS_NAME, ctx->client_path,
					   "org.freedesktop.DBus.Properties", "Get");
	if (r >= 0)
		r = sd_bus_message_append(m, "ss", DB_IFACE_CLIENT, "Buffers");
	if (r >= 0)
		r = call_sync(ctx, CALL_LIST_BUFFERS, m, &reply);
	if (r >= 0)
		r = sd_bus_message_enter_container(reply, 'v', "ao");
	if (r >= 0)
		r = read_paths(reply, &held);
	if (r < 0)
		return api_return(ctx, r);
	bufs = calloc(held.n ? held.n : 1, sizeof(*bufs));
	if (!bufs)
		return api_return(ctx, -ENOMEM);
	for (size_t i = 0; i < held.n; i++) {
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *rm = NULL, *rreply = NULL;
		struct dmabroker_buffer *buf;
		int fd;

		if (find_buffer(ctx, held.v[i]))
			continue;
		if (build_on_buffer(ctx, CALL_REACQUIRE, held.v[i], NULL, &rm) < 0 ||
		    call_sync(ctx, CALL_REACQUIRE, rm, &rreply) < 0 ||
		    sd_bus_message_read(rreply, "h", &fd) <= 0 ||
		    buffer_from_reply(ctx, held.v[i], fd, &buf) < 0)
			continue; /* released meanwhile, or gone: not adopted */
		if (read_layout(rreply, NULL, buf) < 0)
			buffer_free(buf);
		else
			bufs[n++] = buf;
	}
	*ret = bufs;
	*ret_count = n;
	return api_return(ctx, 0);
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
