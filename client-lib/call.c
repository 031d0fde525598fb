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
	[CALL_LIMITS] = {"Get", true},
	[CALL_OPEN_PEER] = {"OpenPeer", false},
	[CALL_CHECK_CLIENT] = {"GetAll", true},
	[CALL_LIST_BUFFERS] = {"Get", true},
	[CALL_ADOPT_ONE] = {"Reacquire", true},
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
	[CALL_STREAM_CREATE] = {"CreateStream", false},
	[CALL_STREAM_TOKEN] = {"CreateStreamToken", false},
	[CALL_STREAM_JOIN] = {"JoinStream", false},
	[CALL_STREAM_JOIN_TOKEN] = {"JoinStreamWithToken", false},
	[CALL_STREAM_LEAVE] = {"LeaveStream", false},
	[CALL_STREAM_END] = {"EndStream", false},
	/* A second one is NotFound, which nobody hears. */
	[CALL_STREAM_END_LINK] = {"EndStreamLink", true},
	/* A second one is NotFound: a first whose answer was lost took the link with it. */
	[CALL_STREAM_TAKE_LINK] = {"TakeStreamLink", false},
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
	if (error && sd_bus_error_has_name(error, SD_BUS_ERROR_LIMITS_EXCEEDED))
		/* Only a blocking call gets here (the queue sends an asynchronous one again). */
		return set_error_msg(ctx, -EAGAIN, "the bus refused the call: too many in flight");
	if (r == -ETIMEDOUT)
		return set_error_msg(
			ctx, -ETIMEDOUT,
			methods[kind].repeatable
				? "no answer from the daemon in time"
				: "no answer from the daemon in time; whether it carried "
				  "out the call is unknown");
	/* No answer came: the connection or the daemon died under the call. */
	if (methods[kind].repeatable) {
		if (bus_open(ctx->bus.bus) && (bus != ctx->bus.bus || error))
			return 1;
		return set_error_msg(ctx, -ECONNRESET, "no answer from the daemon");
	}
	return set_error_msg(ctx, -ECONNABORTED,
			     "the connection died before the daemon answered; "
			     "whether it carried out the call is unknown");
}

/* The same request, for another connection (or again): a sealed message cannot be resent. */
static int copy_to(struct dmabroker *ctx, sd_bus *bus, sd_bus_message *m, sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *again = NULL;
	uint64_t cookie;
	int r;

	/*
	 * Only a sealed message can be read. A queued one was never sent: seal it with a
	 * cookie of its own (its connection never sees it: the copy goes instead).
	 */
	if (sd_bus_message_get_cookie(m, &cookie) < 0) {
		r = sd_bus_message_seal(m, UINT32_MAX, 0);
		if (r < 0)
			return r;
	}
	r = sd_bus_message_new_method_call(
		bus, &again, bus == ctx->bus.bus ? DB_BUS_NAME : NULL, sd_bus_message_get_path(m),
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

/* The context's call timeout; WaitCollection waits for the participants (see its define). */
static uint64_t call_timeout(const struct dmabroker *ctx, enum call_kind kind)
{
	if (kind == CALL_COLLECTION_WAIT && ctx->call_timeout < COLLECTION_WAIT_TIMEOUT)
		return COLLECTION_WAIT_TIMEOUT;
	/* sd-bus takes 0 as its own default: the shortest timeout it understands instead. */
	return ctx->call_timeout ? ctx->call_timeout : 1;
}

static bool makes_buffers(enum call_kind kind)
{
	return kind == CALL_ALLOCATE || kind == CALL_ALLOCATE_MANY || kind == CALL_EXPORT ||
	       kind == CALL_IMPORT;
}

/* A call that may have made a buffer got no answer: compare with the daemon's list later. */
static void note_unknown(struct dmabroker *ctx, enum call_kind kind)
{
	if (makes_buffers(kind))
		ctx->reconcile = true;
}

/* Sends m and waits for the answer (at most the context's call timeout). */
int call_sync(struct dmabroker *ctx, enum call_kind kind, sd_bus_message *m, sd_bus_message **reply)
{
	sd_bus *bus = sd_bus_message_get_bus(m);
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r;

	ctx->last_error[0] = '\0';
	if (!bus_open(bus))
		return set_error_msg(ctx, -ECONNRESET, "not connected");
	r = sd_bus_call(bus, m, call_timeout(ctx, kind), &error, reply);
	if (r >= 0)
		return 0; /* sd_bus_call() returns 1 on success; the public API promises 0 */
	r = judge_failure(ctx, kind, bus, &error, r);
	sd_bus_error_free(&error);
	if (r == -ETIMEDOUT || r == -ECONNABORTED)
		note_unknown(ctx, kind);
	if (r == 1) {
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *again = NULL;

		r = copy_to(ctx, ctx->bus.bus, m, &again);
		if (r < 0)
			return r;
		r = sd_bus_call(ctx->bus.bus, again, call_timeout(ctx, kind), &error, reply);
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

/* --- the call queue and flow control --- */

uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* The fds an answer brings: dbus-daemon's queue toward us holds only so many. */
static unsigned reply_fds(const struct dmabroker_call *call)
{
	switch (call->kind) {
	case CALL_ALLOCATE:
	case CALL_IMPORT:
	case CALL_REACQUIRE:
	case CALL_ADOPT_ONE:
	case CALL_OPEN_PEER:
	case CALL_STREAM_JOIN:
	case CALL_STREAM_JOIN_TOKEN:
		return 1;
	case CALL_ALLOCATE_MANY:
		return call->count;
	case CALL_COLLECTION_BUFFERS:
		return DMABROKER_ALLOCATE_MANY_MAX;
	default:
		return 0;
	}
}

/* An upper estimate of an answer's bytes (a path, a compact layout, a token, per fd a path
 * more): what the daemon may queue toward the peer for this call. */
static uint64_t reply_bytes(const struct dmabroker_call *call)
{
	return 1024 + 256 * (uint64_t)reply_fds(call);
}

static uint64_t timeout_of(const struct dmabroker_call *call)
{
	uint64_t t = call->ctx->call_timeout;

	if (call->kind == CALL_COLLECTION_WAIT && t < COLLECTION_WAIT_TIMEOUT)
		t = COLLECTION_WAIT_TIMEOUT;
	return t;
}

/* Takes the call out of its connection's window: its answer came, or never will. */
static void call_unaccount(struct dmabroker_call *call)
{
	struct dmabroker *ctx = call->ctx;

	if (!call->in_flight)
		return;
	if (call->on_peer) {
		ctx->peer_calls--;
		ctx->peer_bytes -= call->bytes;
	} else {
		ctx->bus_calls--;
		ctx->bus_fds -= call->fds;
	}
	call->in_flight = false;
}

static void call_unmake(struct dmabroker_call *call)
{
	if (call->making) {
		call->making = false;
		call->ctx->n_making--;
	}
}

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
	/* An adoption takes what reconciling would release: reconciling waits for it too. */
	if (makes_buffers(kind) || (kind == CALL_LIST_BUFFERS && cb)) {
		call->making = true;
		ctx->n_making++;
	}
	return call;
}

static void queue_remove(struct dmabroker_call *call)
{
	struct dmabroker *ctx = call->ctx;

	if (!call->queued)
		return;
	if (call->qprev)
		call->qprev->qnext = call->qnext;
	else
		ctx->queue_head = call->qnext;
	if (call->qnext)
		call->qnext->qprev = call->qprev;
	else
		ctx->queue_tail = call->qprev;
	call->qnext = call->qprev = NULL;
	call->queued = false;
	ctx->n_queued--;
	call->pending = sd_bus_message_unref(call->pending);
}

/*
 * Call handles. What an _async function gives the caller is not the call's address but a
 * number that is never reused, looked up in a table of the calls that still have one: so a
 * handle can be cancelled at any time, after its callback ran or its context is gone too (it
 * then names nothing). The table is the process's, as handles carry no context; contexts may
 * live in different threads, so it has a lock.
 */
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dmabroker_call **handles; /* ordered by handle: handles only grow */
static size_t n_handles, max_handles;
static uintptr_t last_handle;

static struct dmabroker_call *handle_new(struct dmabroker_call *call)
{
	struct dmabroker_call *ret = NULL;

	pthread_mutex_lock(&handles_lock);
	if (n_handles == max_handles) {
		size_t n = max_handles ? 2 * max_handles : 64;
		struct dmabroker_call **v = realloc(handles, n * sizeof(*v));

		if (v) {
			handles = v;
			max_handles = n;
		}
	}
	if (n_handles < max_handles) {
		call->handle = ++last_handle;
		handles[n_handles++] = call;
		ret = (struct dmabroker_call *)call->handle;
	}
	pthread_mutex_unlock(&handles_lock);
	/* Without memory for the table the call simply has no handle: cancelling it is a
	 * no-op (NULL). */
	return ret;
}

/* Where call is in the table, or n_handles. Called with the lock held. */
static size_t handle_find(uintptr_t handle)
{
	size_t lo = 0, hi = n_handles;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (handles[mid]->handle < handle)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n_handles && handles[lo]->handle == handle ? lo : n_handles;
}

static void handle_free(struct dmabroker_call *call)
{
	size_t i;

	if (!call->handle)
		return;
	pthread_mutex_lock(&handles_lock);
	i = handle_find(call->handle);
	if (i < n_handles) {
		memmove(&handles[i], &handles[i + 1], (n_handles - i - 1) * sizeof(*handles));
		n_handles--;
	}
	if (n_handles == 0) {
		free(handles);
		handles = NULL;
		max_handles = 0;
	}
	pthread_mutex_unlock(&handles_lock);
	call->handle = 0;
}

void call_free(struct dmabroker_call *call)
{
	struct dmabroker *ctx = call->ctx;

	queue_remove(call);
	call_unaccount(call);
	call_unmake(call);
	handle_free(call);
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
	for (size_t i = 0; i < call->n_adopt; i++)
		free(call->adopt[i]);
	free(call->adopt);
	free(call->adopted);
	free(call);
}

/*
 * Sends m for call now, whatever the windows say (the queue looks at them first). No timeout
 * is given to sd-bus: it would fail an answer that sits unread in the socket when the
 * application dispatches late, before reading it. The library's own deadline counts, and
 * dispatch reads everything before it looks at deadlines (calls_complete()).
 */
int call_send(struct dmabroker_call *call, sd_bus_message *m)
{
	struct dmabroker *ctx = call->ctx;
	sd_bus *bus = sd_bus_message_get_bus(m);
	uint64_t t = timeout_of(call);
	int r;

	if (!bus_open(bus))
		return -ECONNRESET;
	call_unaccount(call);
	call->slot = sd_bus_slot_unref(call->slot);
	r = sd_bus_call_async(bus, &call->slot, m, on_reply, call, UINT64_MAX);
	if (r < 0)
		return r == -ENOTCONN ? -ECONNRESET : r;
	call->bus = bus;
	call->on_peer = bus != ctx->bus.bus;
	call->fds = reply_fds(call);
	call->bytes = reply_bytes(call);
	call->in_flight = true;
	if (call->on_peer) {
		ctx->peer_calls++;
		ctx->peer_bytes += call->bytes;
	} else {
		ctx->bus_calls++;
		ctx->bus_fds += call->fds;
	}
	call->deadline = t == UINT64_MAX ? UINT64_MAX : now_usec() + t;
	if (call->deadline < ctx->next_deadline)
		ctx->next_deadline = call->deadline;
	/* Kept to send it again: after a LimitsExceeded (the bus), or when the peer dies under
	 * a repeatable call. Not otherwise: a plain allocation's message holds its memfd. */
	sd_bus_message_unref(call->m);
	call->m = !call->on_peer || methods[call->kind].repeatable ? sd_bus_message_ref(m) : NULL;
	return 0;
}

/* Puts call in the queue with m, at the end (a new call) or the front (its next step, or
 * the same request again). */
static void queue_put(struct dmabroker_call *call, sd_bus_message *m, bool front)
{
	struct dmabroker *ctx = call->ctx;

	sd_bus_message_ref(m);
	sd_bus_message_unref(call->pending);
	call->pending = m;
	if (call->queued)
		return;
	call->queued = true;
	ctx->n_queued++;
	if (front) {
		call->qnext = ctx->queue_head;
		if (ctx->queue_head)
			ctx->queue_head->qprev = call;
		ctx->queue_head = call;
		if (!ctx->queue_tail)
			ctx->queue_tail = call;
	} else {
		call->qprev = ctx->queue_tail;
		if (ctx->queue_tail)
			ctx->queue_tail->qnext = call;
		else
			ctx->queue_head = call;
		ctx->queue_tail = call;
	}
}

/* A call that failed without being answered: dispatch completes it, never the caller's
 * _async function. */
static void call_defer(struct dmabroker_call *call, int r)
{
	queue_remove(call);
	call_unaccount(call);
	call->deferred = r;
	call->ctx->completions = true;
}

/* The next step of a call (or its request again): sent before anything new. */
int call_next(struct dmabroker_call *call, sd_bus_message *m)
{
	queue_put(call, m, true);
	queue_pump(call->ctx);
	return 0;
}

/*
 * Calls only the bus can carry: the bus driver's (GetNameOwner), those that make or open the
 * registration (Register, OpenPeer), and those that read other objects' properties (Limits,
 * Client1): the peer serves the broker's methods alone.
 */
static bool bus_only(enum call_kind kind)
{
	return kind == CALL_NAME_OWNER || kind == CALL_REGISTER || kind == CALL_OPEN_PEER ||
	       kind == CALL_LIMITS || kind == CALL_CHECK_CLIENT || kind == CALL_LIST_BUFFERS;
}

enum peer_state {
	PEER_NONE, /* calls go on the bus */
	PEER_WAIT, /* its handshake is going on: calls wait for it */
	PEER_READY,
};

static enum peer_state peer_state(struct dmabroker *ctx)
{
	if (!bus_open(ctx->peer.bus))
		return PEER_NONE;
	if (sd_bus_is_ready(ctx->peer.bus) <= 0) {
		if (now_usec() - ctx->peer_started < ctx->call_timeout)
			return PEER_WAIT;
		/* The daemon did not answer the handshake in a call's time: do without. */
		log_msg(DMABROKER_LOG_INFO, "dmabroker: the peer's handshake timed out");
		retire_peer(ctx);
		return PEER_NONE;
	}
	return PEER_READY;
}

/*
 * Sends what the queue holds, oldest first, while the connection it goes to has room in its
 * window: the peer once its handshake is done (calls wait for it meanwhile, a call's timeout
 * at most), else the bus once its Hello is answered. Never blocks; whatever it cannot send
 * waits for an answer to free a place, and dispatch runs it again.
 */
void queue_pump(struct dmabroker *ctx)
{
	enum peer_state peer = PEER_NONE;
	bool looked = false, alive = false;

	while (ctx->queue_head) {
		struct dmabroker_call *call = ctx->queue_head;
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *copy = NULL;
		sd_bus_message *m = call->pending;
		sd_bus *to;
		int r;

		/* Registering again after a restart: the library's own calls go first. */
		if (ctx->registering && !call->internal)
			return;
		if (!looked) {
			peer = peer_state(ctx);
			looked = true;
		}
		/*
		 * A daemon that died left the peer hung up, perhaps unnoticed: a call that must
		 * not run twice goes there only if it still looks alive (one poll per pump). One
		 * built on the peer had that look when it was built (call_bus()); a repeatable
		 * one needs none (it is resent on the bus).
		 */
		if (peer == PEER_READY && !alive && !bus_only(call->kind) &&
		    !methods[call->kind].repeatable && sd_bus_message_get_bus(m) != ctx->peer.bus) {
			if (!peer_usable(ctx)) {
				retire_peer(ctx);
				peer = PEER_NONE;
			}
			alive = true;
		}
		if (peer == PEER_WAIT && !bus_only(call->kind))
			return;
		if (peer == PEER_READY && !bus_only(call->kind)) {
			if (ctx->peer_calls >= ctx->peer_window_calls ||
			    (ctx->peer_calls &&
			     ctx->peer_bytes + reply_bytes(call) > ctx->peer_window_bytes))
				return;
			to = ctx->peer.bus;
		} else {
			if (!bus_open(ctx->bus.bus)) {
				call_defer(call, set_error_msg(ctx, -ECONNRESET, "not connected"));
				continue;
			}
			if (sd_bus_is_ready(ctx->bus.bus) <= 0 ||
			    ctx->bus_calls >= ctx->bus_window_calls ||
			    (ctx->bus_fds && ctx->bus_fds + reply_fds(call) > BUS_WINDOW_FDS))
				return;
			to = ctx->bus.bus;
		}
		if (sd_bus_message_get_bus(m) != to) {
			r = copy_to(ctx, to, m, &copy);
			if (r < 0) {
				call_defer(call, r);
				continue;
			}
			m = copy;
		}
		r = call_send(call, m);
		if (r == -ECONNRESET && to == ctx->peer.bus) {
			retire_peer(ctx);
			looked = false;
			continue;
		}
		if (r < 0) {
			call_defer(call, set_error_msg(ctx, r, "could not send the call"));
			continue;
		}
		queue_remove(call);
	}
}

/* A new call that sends m: queued, and sent at once if there is room. Fails (nothing sent,
 * nobody called) only if the queue is full. */
int call_start(struct dmabroker *ctx, enum call_kind kind, sd_bus_message *m, void *cb,
	       void *userdata, struct dmabroker_call **ret_call,
	       struct dmabroker_call **ret_internal)
{
	struct dmabroker_call *call;
	int r;

	if (ctx->n_queued >= DMABROKER_MAX_QUEUED_CALLS)
		return set_error_msg(ctx, -ENOBUFS, "too many calls wait to be sent");
	call = call_new(ctx, kind, cb, userdata);
	if (!call)
		return -ENOMEM;
	queue_put(call, m, false);
	queue_pump(ctx);
	if (call->deferred < 0) {
		/* It could not even be sent: say so now, as before it was queued. */
		r = call->deferred;
		call_free(call);
		return r;
	}
	if (ret_call)
		*ret_call = handle_new(call);
	if (ret_internal)
		*ret_internal = call;
	return 0;
}

/* The library's own call (nobody is told), at the front of the queue or its end. */
int call_start_internal(struct dmabroker *ctx, enum call_kind kind, sd_bus_message *m, bool first,
			struct dmabroker_call **ret)
{
	struct dmabroker_call *call = call_new(ctx, kind, NULL, NULL);
	int r;

	if (!call)
		return -ENOMEM;
	call->internal = true;
	queue_put(call, m, first);
	queue_pump(ctx);
	if (call->deferred < 0) {
		r = call->deferred;
		call_free(call);
		return r;
	}
	if (ret)
		*ret = call;
	return 0;
}

int dmabroker_set_call_timeout(struct dmabroker *ctx, uint64_t usec)
{
	if (!ctx)
		return -EINVAL;
	ctx->call_timeout = usec ? usec : DEFAULT_CALL_TIMEOUT;
	return 0;
}

void dmabroker_call_cancel(struct dmabroker_call *handle)
{
	size_t i;

	if (!handle)
		return;
	pthread_mutex_lock(&handles_lock);
	i = handle_find((uintptr_t)handle);
	if (i < n_handles)
		handles[i]->cancelled = true;
	pthread_mutex_unlock(&handles_lock);
}

bool call_silenced(const struct dmabroker_call *call)
{
	return call->cancelled || call->internal || call->ctx->disconnect_requested;
}

/* A cancelled call's buffer: nobody wants it, so the daemon need not keep it. */
static void release_unwanted(struct dmabroker_buffer *buf)
{
	if (buf)
		(void)dmabroker_release_async(buf, NULL, NULL, NULL);
}

static void complete_buffer(struct dmabroker_call *call, int r, struct dmabroker_buffer *buf)
{
	if (call_silenced(call) || !call->cb.buffer)
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
	} else if (call->step == 2) {
		call->kind = CALL_LIMITS;
		r = build_limits(ctx, &m);
	} else if (call->step == 3 && !(ctx->flags & DMABROKER_CONNECT_NO_PEER)) {
		call->kind = CALL_OPEN_PEER;
		r = new_call(ctx, CALL_OPEN_PEER, &m);
	} else {
		return 0;
	}
	if (r >= 0)
		r = call_next(call, m);
	return r < 0 ? r : 1;
}

/* Whether an error is the bus driver's refusal to deliver the call (never delivered). */
static bool refused_by_bus(struct dmabroker_call *call, sd_bus_message *reply)
{
	const sd_bus_error *e = sd_bus_message_get_error(reply);

	return !call->on_peer && e && sd_bus_error_has_name(e, SD_BUS_ERROR_LIMITS_EXCEEDED) &&
	       streq_ptr(sd_bus_message_get_sender(reply), DBUS_NAME);
}

/* Whether a call that timed out still waits for its answer: what the daemon made for it
 * (buffers, a collection) must go back when it comes. */
static bool waits_late(const struct dmabroker_call *call)
{
	return !call->internal &&
	       (makes_buffers(call->kind) || call->kind == CALL_COLLECTION_CREATE ||
		call->kind == CALL_COLLECTION_JOIN);
}

/* Ends a call: frees it, unless it timed out just now and waits for a late answer. */
static void call_end(struct dmabroker_call *call, bool told)
{
	struct dmabroker *ctx = call->ctx;

	if (told)
		ctx->handled++;
	if (call->expiring) {
		/* The answer may still come: it is then only cleaned up (release_unwanted()). */
		call->expiring = false;
		call->timed_out = true;
		call->cancelled = true;
		return;
	}
	call_free(call);
}

/*
 * Completes a call with r and, when r >= 0, its answer: reads it, runs the caller's callback,
 * or sends the next step. reply is NULL for a call that got no answer.
 */
static void call_finish(struct dmabroker_call *call, sd_bus_message *reply, int r)
{
	struct dmabroker *ctx = call->ctx;
	struct dmabroker_buffer *buf = NULL, *bufs[DMABROKER_ALLOCATE_MANY_MAX] = {0};
	struct dmabroker_token token = {{0}};
	bool told = !call_silenced(call) && call->cb.done;

	if (!reply && r >= 0)
		r = -EIO;
	switch (call->kind) {
	case CALL_NAME_OWNER: {
		const char *owner;

		free(ctx->owner);
		ctx->owner = NULL;
		if (r >= 0 && sd_bus_message_read(reply, "s", &owner) > 0)
			ctx->owner = strdup(owner);
		call_end(call, false);
		return;
	}
	case CALL_REGISTER:
		if (r >= 0)
			r = read_register(ctx, reply);
		if (r >= 0 && (r = register_next_step(call)) > 0)
			return;
		if (call->internal)
			registered_again(ctx, r);
		else if (r < 0 && !ctx->client_path)
			/* Not registered: dmabroker_register() may be called again. */
			forget_registration(ctx);
		break;
	case CALL_BACKENDS:
	case CALL_LIMITS:
		if (r >= 0 && call->kind == CALL_BACKENDS)
			read_backends(ctx, reply);
		else if (r >= 0)
			read_limits(ctx, reply);
		/* Both are hints: go on without them. */
		if (call->step && (r = register_next_step(call)) > 0)
			return;
		if (call->step && call->internal)
			registered_again(ctx, 0);
		r = 0;
		break;
	case CALL_OPEN_PEER:
		if (r >= 0)
			r = read_open_peer(ctx, reply);
		if (r < 0)
			/* The bus still works; only the fast path is missing. */
			log_msg(DMABROKER_LOG_INFO,
				"dmabroker: no peer connection, staying on the bus: %s",
				strerror(-r));
		if (call->step && call->internal)
			registered_again(ctx, 0);
		r = 0;
		break;
	case CALL_CHECK_CLIENT:
		client_checked(ctx, reply, r);
		break;
	case CALL_LIST_BUFFERS:
	case CALL_ADOPT_ONE:
		if (buffers_on_reply(call, reply, r) > 0)
			return;
		call_end(call, told);
		return;
	case CALL_ALLOCATE:
	case CALL_IMPORT:
		if (r >= 0)
			r = read_allocate(ctx, reply, call->kind == CALL_IMPORT,
					  call->kind == CALL_IMPORT ? NULL : &call->asked, &buf);
		complete_buffer(call, r, buf);
		call_end(call, told);
		return;
	case CALL_EXPORT:
		if (r >= 0)
			r = read_export(ctx, reply, &call->fd, &call->info, &buf);
		complete_buffer(call, r, buf);
		call_end(call, told);
		return;
	case CALL_ALLOCATE_MANY:
		if (r >= 0)
			r = read_allocate_many(ctx, reply, call->count, &call->asked, bufs);
		if (call_silenced(call) || !call->cb.buffers) {
			for (unsigned i = 0; r >= 0 && i < call->count; i++)
				release_unwanted(bufs[i]);
		} else {
			call->cb.buffers(r, r >= 0 ? bufs : NULL, r >= 0 ? call->count : 0,
					 call->userdata);
		}
		call_end(call, told);
		return;
	case CALL_SHARE:
		if (r >= 0)
			r = read_share(reply, &token);
		if (!call_silenced(call) && call->cb.token)
			call->cb.token(r, r >= 0 ? &token : NULL, call->userdata);
		call_end(call, told);
		return;
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
			return; /* a next step was sent */
		call_end(call, told);
		return;
	case CALL_STREAM_CREATE:
	case CALL_STREAM_TOKEN:
	case CALL_STREAM_JOIN:
	case CALL_STREAM_JOIN_TOKEN:
	case CALL_STREAM_LEAVE:
	case CALL_STREAM_END:
	case CALL_STREAM_END_LINK:
	case CALL_STREAM_TAKE_LINK:
		(void)stream_on_reply(call, reply, r);
		call_end(call, told);
		return;
	}
	if (!call_silenced(call) && call->cb.done)
		call->cb.done(r, call->userdata);
	call_end(call, told);
}

int on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
	struct dmabroker_call *call = userdata;
	struct dmabroker *ctx = call->ctx;
	const sd_bus_error *e = sd_bus_message_get_error(reply);
	int r = 0;

	(void)ret_error;
	call_unaccount(call);
	call->slot = sd_bus_slot_unref(call->slot);
	if (refused_by_bus(call, reply) && call->m) {
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *again = NULL;

		/* Never delivered: send it again once a call in flight has left room, and
		 * take the bus's word for how many fit from then on. */
		ctx->bus_window_calls = ctx->bus_calls > 1 ? ctx->bus_calls : 1;
		log_msg(DMABROKER_LOG_DEBUG,
			"dmabroker: the bus refused a call (LimitsExceeded); queued again, "
			"window %u",
			ctx->bus_window_calls);
		if (copy_to(ctx, ctx->bus.bus, call->m, &again) >= 0)
			return call_next(call, again);
	}
	if (call->kind == CALL_REGISTER && call->plain && refused_compact(e)) {
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *plain = take_ptr(call->plain);

		return call_next(call, plain); /* its answer comes here again */
	}
	if (e && call->resends > 0 && call->kind == CALL_RELEASE &&
	    sd_bus_error_has_name(e, DB_ERROR_NOT_FOUND)) {
		/* The copy sent on the peer before it died was carried out: released. */
		e = NULL;
	}
	if (e) {
		r = judge_failure(ctx, call->kind, call->bus, e, -EIO);
		/* Again and again only while the daemon keeps leaving under it: a bound. */
		if (r == 1 && call->resends >= MAX_RESENDS)
			r = set_error_msg(ctx, -ECONNRESET, "no answer from the daemon");
		if (r == 1 && call->m) {
			_cleanup_(sd_bus_message_unrefp) sd_bus_message *again = NULL;

			/* Repeatable, and only its connection (or the daemon) died: again, on
			 * the bus, to whoever owns the name now. */
			call->resends++;
			r = copy_to(ctx, ctx->bus.bus, call->m, &again);
			if (r >= 0)
				return call_next(call, again);
		}
		if (r == -ECONNABORTED)
			note_unknown(ctx, call->kind);
	}
	if (call->timed_out) {
		/* Its callback ran already: what the daemon made for it goes back. */
		call_finish(call, r >= 0 ? reply : NULL, r);
		return 0;
	}
	call_unmake(call);
	call_finish(call, reply, r);
	return 0;
}

/*
 * What dispatch does once every connection is read: completes the calls that failed without
 * an answer and those whose answer did not come in time, and reconciles when an outcome was
 * unknown and nothing that makes buffers is in flight. Returns true if anything ran.
 */
bool calls_complete(struct dmabroker *ctx)
{
	uint64_t now = now_usec(), next = UINT64_MAX;
	bool ran = false;

	if (ctx->completions || now >= ctx->next_deadline) {
		struct dmabroker_call *due = NULL, **tail = &due;

		ctx->completions = false;
		for (struct dmabroker_call *c = ctx->calls; c; c = c->next) {
			if (c->deferred < 0) {
				*tail = c;
				tail = &c->due;
				continue;
			}
			if (c->timed_out || !c->in_flight)
				continue;
			if (c->deadline <= now) {
				c->expiring = true;
				*tail = c;
				tail = &c->due;
			} else if (c->deadline < next) {
				next = c->deadline;
			}
		}
		*tail = NULL;
		ctx->next_deadline = next;
		/*
		 * A callback frees no call but its own here (this runs inside dispatch, where
		 * dmabroker_disconnect() waits for the end), so the list of calls due stays
		 * valid while it runs.
		 */
		while (due) {
			struct dmabroker_call *c = due;
			int r;

			due = c->due;
			c->due = NULL;
			ran = true;
			if (c->deferred < 0) {
				r = c->deferred;
				c->deferred = 0;
				call_unmake(c);
				call_finish(c, NULL, r);
				continue;
			}
			if (methods[c->kind].repeatable && c->on_peer && c->m &&
			    bus_open(ctx->bus.bus)) {
				_cleanup_(sd_bus_message_unrefp) sd_bus_message *again = NULL;

				/* The peer may be wedged: the bus, once, before giving up. */
				c->expiring = false;
				call_unaccount(c);
				c->slot = sd_bus_slot_unref(c->slot);
				if (copy_to(ctx, ctx->bus.bus, c->m, &again) >= 0) {
					call_next(c, again);
					continue;
				}
				c->expiring = true;
			}
			call_unmake(c);
			note_unknown(ctx, c->kind);
			r = judge_failure(ctx, c->kind, c->bus, NULL, -ETIMEDOUT);
			if (!waits_late(c)) {
				/* Nothing to clean up after it: a late answer is ignored. */
				c->expiring = false;
				call_unaccount(c);
				c->slot = sd_bus_slot_unref(c->slot);
			}
			call_finish(c, NULL, r);
		}
	}
	if (ctx->reconcile && ctx->n_making == 0 && ctx->client_path && !ctx->registering &&
	    !ctx->disconnect_requested) {
		ctx->reconcile = false;
		(void)list_buffers(ctx, NULL, NULL, NULL);
		ran = true;
	}
	return ran;
}
