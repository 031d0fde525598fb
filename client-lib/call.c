// SPDX-License-Identifier: MIT
/*
 * The calls. Every call is built by one function and its answer read by one function; the
 * blocking form sends it with sd_bus_call(), the asynchronous form with sd_bus_call_async()
 * and reads the answer in on_reply(). Both judge a failure the same way (judge_failure()): an
 * answer from the daemon is an errno, and a call that got no answer is resent on the bus only
 * if doing it twice is harmless; any other fails with -ECONNABORTED (outcome unknown).
 */
#include "libdmabroker-private.h"

const struct call_method methods[] = {
	[CALL_NAME_OWNER] = {"GetNameOwner", true},
	[CALL_REGISTER] = {"Register", false},
	[CALL_BACKENDS] = {"Get", true},
	[CALL_OPEN_PEER] = {"OpenPeer", false},
	[CALL_ALLOCATE] = {"Allocate", false},
	[CALL_ALLOCATE_MANY] = {"AllocateMany", false},
	[CALL_EXPORT] = {"Export", false},
	[CALL_SHARE] = {"Share", false},
	[CALL_IMPORT] = {"Import", false}, /* a single-use token works once */
	[CALL_RELEASE] = {"Release", true},
	[CALL_REACQUIRE] = {"Reacquire", true},
	[CALL_MOVE] = {"Move", false},
	[CALL_REVOKE] = {"Revoke", true},
	[CALL_COLLECTION_CREATE] = {"CreateCollection", false},
	[CALL_COLLECTION_TOKEN] = {"CreateCollectionToken", false},
	[CALL_COLLECTION_JOIN] = {"JoinCollection", false},
	[CALL_COLLECTION_SET] = {"SetCollectionConstraints", false},
	[CALL_COLLECTION_COMMIT] = {"CommitCollection", true},
	[CALL_COLLECTION_WAIT] = {"WaitCollection", true},
	[CALL_COLLECTION_BUFFERS] = {"GetCollectionBuffers", true},
	[CALL_COLLECTION_LEAVE] = {"LeaveCollection", true},
};

/* --- judging failures --- */

static bool error_from_bus_driver_only(const sd_bus_error *e)
{
	/* The bus could not deliver the call: it was not carried out. */
	return sd_bus_error_has_name(e, SD_BUS_ERROR_SERVICE_UNKNOWN) ||
	       sd_bus_error_has_name(e, SD_BUS_ERROR_NAME_HAS_NO_OWNER);
}

/* An answer from the daemon (or from sd-bus on its side, e.g. an unknown method). */
static bool error_is_answer(const sd_bus_error *e)
{
	static const char *const answers[] = {
		SD_BUS_ERROR_UNKNOWN_METHOD,	SD_BUS_ERROR_UNKNOWN_OBJECT,
		SD_BUS_ERROR_UNKNOWN_INTERFACE, SD_BUS_ERROR_UNKNOWN_PROPERTY,
		SD_BUS_ERROR_INVALID_ARGS,	SD_BUS_ERROR_INVALID_SIGNATURE,
		SD_BUS_ERROR_ACCESS_DENIED,
	};

	if (!sd_bus_error_is_set(e))
		return false;
	if (strncmp(e->name, "org.dmabroker.Error.", 20) == 0)
		return true;
	for (size_t i = 0; i < ARRAY_SIZE(answers); i++)
		if (sd_bus_error_has_name(e, answers[i]))
			return true;
	return false;
}

/*
 * What a failed call means. bus: where it went; error: the error it got, if any; r: the
 * errno sd-bus returned. Returns the errno to report, or 1 if the call should be sent
 * again on the bus (it is repeatable and only the peer under it died).
 */
static int judge_failure(struct dmabroker *ctx, enum call_kind kind, sd_bus *bus,
			 const sd_bus_error *error, int r)
{
	if (error && error_is_answer(error)) {
		snprintf(ctx->last_error, sizeof(ctx->last_error), "%s: %s", error->name,
			 error->message ? error->message : "");
		r = -sd_bus_error_get_errno(error);
		/* A name outside the contract (none should reach us) must still fail. */
		return set_error_msg(ctx, r < 0 ? r : -EIO, ctx->last_error);
	}
	if (error && error_from_bus_driver_only(error)) {
		snprintf(ctx->last_error, sizeof(ctx->last_error), "the daemon is not running: %s",
			 error->message ? error->message : error->name);
		return set_error_msg(ctx, -ECONNRESET, ctx->last_error);
	}
	/* No answer came: the connection died, the daemon died, or the call timed out. */
	if (methods[kind].repeatable) {
		if (bus != ctx->bus.bus && !bus_open(bus) && bus_open(ctx->bus.bus))
			return 1;
		return set_error_msg(ctx, bus_open(bus) ? -ETIMEDOUT : -ECONNRESET,
				     "no answer from the daemon");
	}
	return set_error_msg(ctx, -ECONNABORTED,
			     "the connection died (or timed out) before the daemon answered; "
			     "whether it carried out the call is unknown");
}

/* The same request, for the bus: a sealed message cannot change connection. */
static int copy_for_bus(struct dmabroker *ctx, sd_bus_message *m, sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *again = NULL;
	int r;

	r = sd_bus_message_new_method_call(
		ctx->bus.bus, &again, DB_BUS_NAME, sd_bus_message_get_path(m),
		sd_bus_message_get_interface(m), sd_bus_message_get_member(m));
	if (r >= 0)
		r = sd_bus_message_rewind(m, true);
	if (r >= 0)
		r = sd_bus_message_copy(again, m, true);
	if (r < 0)
		return r;
	*ret = take_ptr(again);
	return 0;
}

/*
 * sd-bus's default (25 s) for every call but WaitCollection, which the daemon answers when the
 * participants are done, at the latest at its CollectionDeadlineSec (at most an hour).
 */
static uint64_t call_timeout(enum call_kind kind)
{
	return kind == CALL_COLLECTION_WAIT ? 3700ull * 1000000 : 0;
}

/* Sends m and waits for the answer. */
int call_sync(struct dmabroker *ctx, enum call_kind kind, sd_bus_message *m, sd_bus_message **reply)
{
	sd_bus *bus = sd_bus_message_get_bus(m);
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r;

	ctx->last_error[0] = '\0';
	if (!bus_open(bus))
		return set_error_msg(ctx, -ECONNRESET, "not connected");
	r = sd_bus_call(bus, m, call_timeout(kind), &error, reply);
	if (r >= 0)
		return 0; /* sd_bus_call() returns 1 on success; the public API promises 0 */
	r = judge_failure(ctx, kind, bus, &error, r);
	sd_bus_error_free(&error);
	if (r == 1) {
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *again = NULL;

		r = copy_for_bus(ctx, m, &again);
		if (r < 0)
			return r;
		r = sd_bus_call(ctx->bus.bus, again, call_timeout(kind), &error, reply);
		if (r < 0)
			r = judge_failure(ctx, kind, ctx->bus.bus, &error, r);
		sd_bus_error_free(&error);
	}
	return r < 0 ? r : 0;
}

int new_call(struct dmabroker *ctx, enum call_kind kind, sd_bus_message **ret)
{
	sd_bus *bus = call_bus(ctx, kind);

	if (!bus_open(bus))
		return set_error_msg(ctx, -ECONNRESET, "not connected");
	return sd_bus_message_new_method_call(bus, ret, bus == ctx->bus.bus ? DB_BUS_NAME : NULL,
					      DB_OBJECT_PATH, DB_IFACE_BROKER,
					      methods[kind].member);
}

/* --- asynchronous calls --- */

static struct dmabroker_call *call_new(struct dmabroker *ctx, enum call_kind kind, void *cb,
				       void *userdata)
{
	struct dmabroker_call *call = calloc(1, sizeof(*call));

	if (!call)
		return NULL;
	call->ctx = ctx;
	call->kind = kind;
	call->fd = -1;
	/* All members of the union are function pointers of the same size. */
	call->cb.done = (dmabroker_done_func_t)cb;
	call->userdata = userdata;
	call->next = ctx->calls;
	if (ctx->calls)
		ctx->calls->prev = call;
	ctx->calls = call;
	return call;
}

void call_free(struct dmabroker_call *call)
{
	struct dmabroker *ctx = call->ctx;

	if (call->prev)
		call->prev->next = call->next;
	else
		ctx->calls = call->next;
	if (call->next)
		call->next->prev = call->prev;
	sd_bus_slot_unref(call->slot);
	sd_bus_message_unref(call->m);
	sd_bus_message_unref(call->plain);
	if (call->fd >= 0)
		close(call->fd);
	free(call);
}

/* Sends m for call; a repeatable request is kept to be resent if the peer dies. */
int call_send(struct dmabroker_call *call, sd_bus_message *m)
{
	sd_bus *bus = sd_bus_message_get_bus(m);
	int r;

	if (!bus_open(bus))
		return -ECONNRESET;
	call->slot = sd_bus_slot_unref(call->slot);
	r = sd_bus_call_async(bus, &call->slot, m, on_reply, call, call_timeout(call->kind));
	if (r < 0)
		return r == -ENOTCONN ? -ECONNRESET : r;
	call->bus = bus;
	sd_bus_message_unref(call->m);
	call->m = methods[call->kind].repeatable ? sd_bus_message_ref(m) : NULL;
	return 0;
}

/* A new call that sends m; on failure nothing was sent and nobody will be called. */
int call_start(struct dmabroker *ctx, enum call_kind kind, sd_bus_message *m, void *cb,
	       void *userdata, struct dmabroker_call **ret_call,
	       struct dmabroker_call **ret_internal)
{
	struct dmabroker_call *call;
	int r;

	call = call_new(ctx, kind, cb, userdata);
	if (!call)
		return -ENOMEM;
	r = call_send(call, m);
	if (r < 0) {
		call_free(call);
		return set_error_msg(ctx, r, "could not send the call");
	}
	if (ret_call)
		*ret_call = call;
	if (ret_internal)
		*ret_internal = call;
	return 0;
}

void dmabroker_call_cancel(struct dmabroker_call *call)
{
	if (call)
		call->cancelled = true;
}

/* A cancelled call's buffer: nobody wants it, so the daemon need not keep it. */
static void release_unwanted(struct dmabroker_buffer *buf)
{
	if (buf)
		(void)dmabroker_release_async(buf, NULL, NULL, NULL);
}

static void complete_buffer(struct dmabroker_call *call, int r, struct dmabroker_buffer *buf)
{
	if (call->cancelled || !call->cb.buffer)
		release_unwanted(r >= 0 ? buf : NULL);
	else
		call->cb.buffer(r, r >= 0 ? buf : NULL, call->userdata);
}

/* The next step of a registration; 1 if one was sent. */
static int register_next_step(struct dmabroker_call *call)
{
	struct dmabroker *ctx = call->ctx;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	call->step++;
	if (call->step == 1) {
		call->kind = CALL_BACKENDS;
		r = build_backends(ctx, &m);
	} else if (call->step == 2 && !(ctx->flags & DMABROKER_CONNECT_NO_PEER)) {
		call->kind = CALL_OPEN_PEER;
		r = new_call(ctx, CALL_OPEN_PEER, &m);
	} else {
		return 0;
	}
	if (r >= 0)
		r = call_send(call, m);
	return r < 0 ? r : 1;
}

int on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
	struct dmabroker_call *call = userdata;
	struct dmabroker *ctx = call->ctx;
	const sd_bus_error *e = sd_bus_message_get_error(reply);
	struct dmabroker_buffer *buf = NULL, *bufs[DMABROKER_ALLOCATE_MANY_MAX] = {0};
	struct dmabroker_token token = {{0}};
	int r = 0;

	(void)ret_error;
	if (call->kind == CALL_REGISTER && call->plain && refused_compact(e)) {
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *plain = take_ptr(call->plain);

		if (call_send(call, plain) >= 0)
			return 0; /* its answer comes here again */
	}
	if (e) {
		r = judge_failure(ctx, call->kind, call->bus, e, -EIO);
		if (r == 1) {
			_cleanup_(sd_bus_message_unrefp) sd_bus_message *again = NULL;

			r = copy_for_bus(ctx, call->m, &again);
			if (r >= 0)
				r = call_send(call, again);
			if (r >= 0)
				return 0; /* its answer comes on the bus */
		}
	}
	switch (call->kind) {
	case CALL_NAME_OWNER: {
		const char *owner;

		free(ctx->owner);
		ctx->owner = NULL;
		if (r >= 0 && sd_bus_message_read(reply, "s", &owner) > 0)
			ctx->owner = strdup(owner);
		call_free(call);
		return 0;
	}
	case CALL_REGISTER:
		if (r >= 0)
			r = read_register(ctx, reply);
		if (r >= 0 && (r = register_next_step(call)) > 0)
			return 0;
		break;
	case CALL_BACKENDS:
		if (r >= 0)
			read_backends(ctx, reply);
		/* The default backend is only an optimisation hint: go on without it. */
		if (call->step && (r = register_next_step(call)) > 0)
			return 0;
		break;
	case CALL_OPEN_PEER:
		if (r >= 0)
			r = read_open_peer(ctx, reply);
		if (r < 0)
			/* The bus still works; only the fast path is missing. */
			log_msg(DMABROKER_LOG_INFO,
				"dmabroker: no peer connection, staying on the bus: %s",
				strerror(-r));
		r = 0;
		break;
	case CALL_ALLOCATE:
	case CALL_IMPORT:
		if (r >= 0)
			r = read_allocate(ctx, reply, call->kind == CALL_IMPORT,
					  call->kind == CALL_IMPORT ? NULL : &call->asked, &buf);
		complete_buffer(call, r, buf);
		call_free(call);
		return 0;
	case CALL_EXPORT:
		if (r >= 0)
			r = read_export(ctx, reply, &call->fd, &call->info, &buf);
		complete_buffer(call, r, buf);
		call_free(call);
		return 0;
	case CALL_ALLOCATE_MANY:
		if (r >= 0)
			r = read_allocate_many(ctx, reply, call->count, &call->asked, bufs);
		if (call->cancelled || !call->cb.buffers) {
			for (unsigned i = 0; r >= 0 && i < call->count; i++)
				release_unwanted(bufs[i]);
		} else {
			call->cb.buffers(r, r >= 0 ? bufs : NULL, r >= 0 ? call->count : 0,
					 call->userdata);
		}
		call_free(call);
		return 0;
	case CALL_SHARE:
		if (r >= 0)
			r = read_share(reply, &token);
		if (!call->cancelled && call->cb.token)
			call->cb.token(r, r >= 0 ? &token : NULL, call->userdata);
		call_free(call);
		return 0;
	case CALL_REACQUIRE:
		if (r >= 0)
			r = read_reacquire(call->buf, reply);
		break;
	case CALL_RELEASE:
	case CALL_MOVE:
	case CALL_REVOKE:
		break;
	case CALL_COLLECTION_CREATE:
	case CALL_COLLECTION_TOKEN:
	case CALL_COLLECTION_JOIN:
	case CALL_COLLECTION_SET:
	case CALL_COLLECTION_COMMIT:
	case CALL_COLLECTION_WAIT:
	case CALL_COLLECTION_BUFFERS:
	case CALL_COLLECTION_LEAVE:
		if (collection_on_reply(call, reply, r) > 0)
			return 0; /* a next step was sent */
		call_free(call);
		return 0;
	}
	if (!call->internal && !call->cancelled && call->cb.done)
		call->cb.done(r, call->userdata);
	call_free(call);
	return 0;
}
