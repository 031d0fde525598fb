// SPDX-License-Identifier: MIT
/*
 * Reconciling with the daemon's state: the buffers it holds for this client (Client1.Buffers)
 * that the library never handed out, made for calls whose outcome was unknown, go back
 * (reconcile()) or to the caller (dmabroker_adopt_buffers()).
 */
#include "libdmabroker-private.h"

void paths_free(struct paths *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->v[i]);
	free(p->v);
	*p = (struct paths){0};
}

bool paths_have(const struct paths *p, const char *path)
{
	for (size_t i = 0; i < p->n; i++)
		if (strcmp(p->v[i], path) == 0)
			return true;
	return false;
}

/* Reads an "ao" (the Buffers property's value). */
int read_paths(sd_bus_message *m, struct paths *ret)
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
