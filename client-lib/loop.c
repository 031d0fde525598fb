// SPDX-License-Identifier: MIT
/*
 * The loop integration is one epoll fd holding the connections' sockets, a timerfd armed to
 * sd-bus's next call timeout, and an eventfd kicked whenever sd-bus has something queued that
 * its socket no longer shows (a blocking call reads every message until its answer), so the
 * fd is never quiet while work is waiting (loop_update()).
 */
#include "libdmabroker-private.h"

static void loop_kick(struct dmabroker *ctx)
{
	uint64_t one = 1;

	if (!ctx->kicked && write(ctx->kick_fd, &one, sizeof(one)) == sizeof(one))
		ctx->kicked = true;
}

static void drain(int fd)
{
	uint64_t v;

	(void)!read(fd, &v, sizeof(v));
}

/*
 * Dispatch's start: the eventfd is emptied, and the timer may have fired. Only what can be
 * readable is read: the eventfd is written by loop_kick() alone, and the timer only when the
 * epoll set showed one of the context's own fds (a disarmed timer has nothing to read:
 * timerfd_settime() clears its expirations). A timer that fires during dispatch stays
 * readable: the next dispatch sees it.
 */
static void loop_drain_all(struct dmabroker *ctx, bool timer)
{
	if (ctx->kicked) {
		drain(ctx->kick_fd);
		ctx->kicked = false;
	}
	if (timer && ctx->timer_deadline != UINT64_MAX) {
		drain(ctx->timer_fd);
		ctx->timer_fired = true;
	}
}

/*
 * Asks the epoll set, without waiting, what is ready, so that dispatch reads only that: a
 * link shown readable is read again (stream_link_readable()); true when one of the context's
 * own fds (a connection's socket, the kick, the timer: registered without a pointer) is
 * ready, or when the set had more than fits here and anything may be.
 */
static bool loop_poll(struct dmabroker *ctx)
{
	struct epoll_event evs[32];
	bool own = false;
	int n;

	n = epoll_wait(ctx->epoll_fd, evs, ARRAY_SIZE(evs), 0);
	if (n < 0 || n == (int)ARRAY_SIZE(evs)) {
		streams_links_readable(ctx);
		return true;
	}
	for (int i = 0; i < n; i++) {
		if (evs[i].data.ptr)
			stream_link_readable(evs[i].data.ptr);
		else
			own = true;
	}
	return own;
}

/* sd-bus holds work its sockets do not show (a message read by a blocking call, a closing
 * connection): what loop_update() kicks for. Asks sd-bus only, no syscall. */
static bool watch_queued(const struct watch *w)
{
	uint64_t t;

	if (!w->bus)
		return false;
	return sd_bus_get_events(w->bus) < 0 || (sd_bus_get_timeout(w->bus, &t) > 0 && t == 0);
}

static bool buses_queued(struct dmabroker *ctx)
{
	if (ctx->bus_dead || watch_queued(&ctx->bus) || watch_queued(&ctx->peer))
		return true;
	for (unsigned i = 0; i < MAX_OLD_PEERS; i++)
		if (watch_queued(&ctx->old_peers[i]))
			return true;
	return false;
}

static void update_watch(struct dmabroker *ctx, struct watch *w, bool *now, uint64_t *deadline)
{
	struct epoll_event ev = {.events = EPOLLIN};
	uint64_t t;
	int events, r;

	if (!w->bus)
		return;
	events = sd_bus_get_events(w->bus);
	if (events < 0) {
		/* Closing or closed: dispatch has to see it. */
		*now = true;
		return;
	}
	if (events & POLLOUT)
		ev.events |= EPOLLOUT;
	if (ev.events != w->events && w->fd >= 0 &&
	    epoll_ctl(ctx->epoll_fd, EPOLL_CTL_MOD, w->fd, &ev) == 0)
		w->events = ev.events;
	r = sd_bus_get_timeout(w->bus, &t);
	if (r > 0 && t == 0)
		*now = true; /* messages sit in sd-bus's queue: the socket will not show them */
	else if (r > 0 && t < *deadline)
		*deadline = t;
}

/* Brings the fd up to date with sd-bus's state; run at the end of every entry point. */
static void loop_update(struct dmabroker *ctx)
{
	struct itimerspec its = {0};
	uint64_t deadline = UINT64_MAX;
	bool now = false;

	if (!ctx->bus_dead)
		update_watch(ctx, &ctx->bus, &now, &deadline);
	update_watch(ctx, &ctx->peer, &now, &deadline);
	for (unsigned i = 0; i < MAX_OLD_PEERS; i++)
		update_watch(ctx, &ctx->old_peers[i], &now, &deadline);
	/* The library's own deadlines: the first call in flight to time out, and the peer's
	 * handshake, which queued calls wait for. */
	if (ctx->next_deadline < deadline)
		deadline = ctx->next_deadline;
	if (ctx->peer.bus && ctx->queue_head && sd_bus_is_ready(ctx->peer.bus) <= 0 &&
	    ctx->peer_started + ctx->call_timeout < deadline)
		deadline = ctx->peer_started + ctx->call_timeout;
	if (ctx->completions || streams_pending(ctx) || (ctx->reconcile && ctx->n_making == 0 && !ctx->registering))
		now = true;
	if (now)
		loop_kick(ctx);
	ctx->timeout = now ? 0 : deadline;
	/* A blocking call leaves the deadline as it was: no syscall then. */
	if (deadline == ctx->timer_deadline && !ctx->timer_fired)
		return;
	if (deadline != UINT64_MAX) {
		its.it_value.tv_sec = (time_t)(deadline / 1000000);
		its.it_value.tv_nsec = (long)(deadline % 1000000) * 1000;
		if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
			its.it_value.tv_nsec = 1; /* 0 would disarm it */
	}
	if (timerfd_settime(ctx->timer_fd, TFD_TIMER_ABSTIME, &its, NULL) == 0) {
		ctx->timer_deadline = deadline;
		ctx->timer_fired = false;
	}
}

/* Ends a public entry point: the queue sends what it can, and the fd must show whatever the
 * call left waiting. */
int api_return(struct dmabroker *ctx, int r)
{
	if (ctx && !ctx->dispatching) {
		queue_pump(ctx);
		loop_update(ctx);
	}
	return r;
}

/* --- events and the loop --- */

int dmabroker_get_fd(struct dmabroker *ctx)
{
	return ctx ? ctx->epoll_fd : -EINVAL;
}

int dmabroker_get_events(struct dmabroker *ctx)
{
	/* The sockets' own POLLOUT needs are inside the epoll set: outside, it is readable. */
	return ctx ? POLLIN : -EINVAL;
}

int dmabroker_get_timeout(struct dmabroker *ctx, uint64_t *ret_usec)
{
	if (!ctx || !ret_usec)
		return -EINVAL;
	*ret_usec = ctx->timeout;
	return 0;
}

/* Runs what a connection has, up to the dispatch's budget of callbacks; < 0 once it is closed
 * and drained. What is left shows on the loop's fd (loop_update). */
static int process_all(struct dmabroker *ctx, sd_bus *bus, bool *progress)
{
	int r = 0;

	/* A callback may retire or replace it: keep it alive while sd-bus works on it. */
	sd_bus_ref(bus);
	while (ctx->handled < DMABROKER_DISPATCH_BUDGET && (r = sd_bus_process(bus, NULL)) > 0)
		*progress = true;
	sd_bus_unref(bus);
	return r;
}

int dmabroker_dispatch(struct dmabroker *ctx)
{
	bool progress = true, buses;
	int r = 0;

	if (!ctx)
		return -EINVAL;
	if (ctx->dispatching)
		return -EBUSY;
	ctx->dispatching = true;
	ctx->handled = 0;
	buses = loop_poll(ctx);
	loop_drain_all(ctx, buses);
	/*
	 * Round after round, reading the connections afresh each time: a callback can retire
	 * the peer, open a new one, or queue messages on a connection already done. Deadlines
	 * are looked at only once everything that arrived is read: an answer that came is
	 * delivered as what it is, however late the application dispatches. No callback runs
	 * once dmabroker_disconnect() was called from one. The connections are read only once
	 * the epoll set or sd-bus shows them work: a frame alone costs no sd-bus reads. What
	 * arrives after loop_poll() keeps the fd readable for the next dispatch.
	 */
	while (progress && r >= 0 && !ctx->disconnect_requested &&
	       ctx->handled < DMABROKER_DISPATCH_BUDGET) {
		progress = false;
		if (!buses)
			buses = buses_queued(ctx);
		for (unsigned i = 0; buses && i < MAX_OLD_PEERS; i++) {
			sd_bus *old = ctx->old_peers[i].bus;

			if (old && process_all(ctx, old, &progress) < 0 &&
			    ctx->old_peers[i].bus == old)
				watch_free(ctx, &ctx->old_peers[i]);
		}
		if (buses && ctx->peer.bus) {
			sd_bus *peer = ctx->peer.bus;

			if (process_all(ctx, peer, &progress) < 0 && ctx->peer.bus == peer) {
				retire_peer(ctx);
				progress = true; /* drain and free it next round */
			}
		}
		if (buses && process_all(ctx, ctx->bus.bus, &progress) < 0) {
			r = -ECONNRESET;
			ctx->bus_dead = true;
			watch_unwatch(ctx, &ctx->bus);
		}
		/* After the connections: a StreamEnded that came with a link's hang-up gives
		 * the daemon's reason, not the hang-up's. */
		if (!ctx->disconnect_requested)
			streams_dispatch(ctx, &progress);
		queue_pump(ctx);
		if (!progress && !ctx->disconnect_requested && calls_complete(ctx))
			progress = true;
	}
	if (r < 0 && !ctx->disconnect_requested) {
		/* The bus is gone: what waits in the queue fails now, not never. */
		queue_pump(ctx);
		calls_complete(ctx);
	}
	ctx->dispatching = false;
	if (ctx->disconnect_requested) {
		int handled = ctx->handled;

		dmabroker_disconnect(ctx);
		return r < 0 ? r : handled;
	}
	loop_drain_all(ctx, false);
	return api_return(ctx, r < 0 ? r : ctx->handled);
}

/* --- sd-event --- */

static int on_event_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	(void)s;
	(void)fd;
	(void)revents;
	/* A dead connection shows in every later call's result; the loop keeps running. */
	(void)dmabroker_dispatch(userdata);
	return 0;
}

int dmabroker_attach_event(struct dmabroker *ctx, struct sd_event *event, int64_t priority)
{
	_cleanup_(sd_event_unrefp) sd_event *e = NULL;
	int r;

	if (!ctx)
		return -EINVAL;
	if (ctx->event_source)
		return -EBUSY;
	if (event)
		e = sd_event_ref(event);
	else if ((r = sd_event_default(&e)) < 0)
		return r;
	r = sd_event_add_io(e, &ctx->event_source, ctx->epoll_fd, EPOLLIN, on_event_io, ctx);
	if (r < 0)
		return r;
	r = sd_event_source_set_priority(ctx->event_source, priority);
	if (r >= 0)
		(void)sd_event_source_set_description(ctx->event_source, "dmabroker");
	if (r < 0)
		ctx->event_source = sd_event_source_unref(ctx->event_source);
	return r < 0 ? r : 0;
}

int dmabroker_detach_event(struct dmabroker *ctx)
{
	if (!ctx)
		return -EINVAL;
	ctx->event_source = sd_event_source_disable_unref(ctx->event_source);
	return 0;
}
