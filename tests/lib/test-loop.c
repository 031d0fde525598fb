// SPDX-License-Identifier: MIT
/*
 * A compositor's frame loop over the asynchronous API, on libwayland-server's wl_event_loop
 * and on a GLib main loop (libdmabroker-glib): two clients allocate, share, import, move
 * and revoke while the daemon is stopped (SIGSTOP). The loop must keep producing frames
 * while nothing answers, and after SIGCONT every answer and every Moved/Revoked the daemon
 * sent must arrive (counted on both sides), including those read by a blocking call. No
 * wall-clock budget is asserted: the proof is that frames keep coming and nothing is lost.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <wayland-server-core.h>

#include "dmabroker-glib.h"
#include "dmabroker.h"
#include "fixture.h"
#include "tap.h"

/* tap_is() with a formatted description. */
#define is(got, want, ...)                                               \
	({                                                               \
		long long _g = (long long)(got), _w = (long long)(want); \
		bool _ok = tap_ok(_g == _w, __VA_ARGS__);                \
		if (!_ok)                                                \
			tap_diag("  got %lld, want %lld", _g, _w);       \
		_ok;                                                     \
	})

#define N_BUFFERS 6 /* 0..2 moved, 3..5 revoked */
#define STOPPED_FRAMES 40
#define MAX_FRAMES 200000 /* only so that a bug fails instead of hanging */

struct client {
	struct dmabroker *ctx;
	int moved, revoked; /* events received */
	int reacquired;
};

static struct scenario {
	struct fixture *f;
	struct client owner, holder;
	struct dmabroker_buffer *owned[N_BUFFERS], *held[N_BUFFERS];
	int registered, allocated, imported;
	int moves_ok, revokes_ok, replies; /* answers to the calls made while stopped */
	int calls_while_stopped;
	int frames, frames_at_stop, frames_at_cont;
	int replies_while_stopped; /* answers seen before SIGCONT: must stay 0 */
	bool stopped, resumed, blocking_done, finished;
	int phase;
	int failures;
} sc;

static void on_moved(struct dmabroker_buffer *buf, void *userdata)
{
	struct client *c = userdata;

	c->moved++;
	if (dmabroker_buffer_reacquire_async(buf, NULL, NULL, NULL) == 0)
		c->reacquired++;
}

static void on_revoked(struct dmabroker_buffer *buf, const char *reason, void *userdata)
{
	struct client *c = userdata;

	(void)buf;
	(void)reason;
	c->revoked++;
}

static void on_registered(int r, void *userdata)
{
	(void)userdata;
	if (r < 0)
		sc.failures++;
	sc.registered++;
}

static void on_imported(int r, struct dmabroker_buffer *buf, void *userdata)
{
	intptr_t i = (intptr_t)userdata;

	if (r < 0)
		sc.failures++;
	sc.held[i] = buf;
	sc.imported++;
}

static void on_shared(int r, const struct dmabroker_token *token, void *userdata)
{
	if (r < 0 || dmabroker_import_async(sc.holder.ctx, token, on_imported, userdata, NULL) < 0)
		sc.failures++;
}

static void on_allocated(int r, struct dmabroker_buffer *buf, void *userdata)
{
	intptr_t i = (intptr_t)userdata;

	sc.allocated++;
	sc.owned[i] = buf;
	if (r < 0 || dmabroker_share_async(buf, NULL, 0, on_shared, userdata, NULL) < 0)
		sc.failures++;
}

static void on_stopped_reply(int r, void *userdata)
{
	bool move = userdata != NULL;

	if (!sc.resumed)
		sc.replies_while_stopped++;
	sc.replies++;
	if (r < 0)
		tap_diag("%s: %s", move ? "move" : "revoke", strerror(-r));
	if (r == 0 && move)
		sc.moves_ok++;
	else if (r == 0)
		sc.revokes_ok++;
}

static void register_both(void)
{
	struct dmabroker_event_handlers h = {.moved = on_moved, .revoked = on_revoked};

	dmabroker_set_event_handlers(sc.owner.ctx, &h, sizeof(h), &sc.owner);
	dmabroker_set_event_handlers(sc.holder.ctx, &h, sizeof(h), &sc.holder);
	if (dmabroker_register_async(sc.owner.ctx, "compositor", true, "owner", NULL, on_registered,
				     NULL, NULL) < 0 ||
	    dmabroker_register_async(sc.holder.ctx, "cpu", true, "holder", NULL, on_registered,
				     NULL, NULL) < 0)
		sc.failures++;
}

/* One frame: the scenario advances on what the callbacks reported, never waits. */
static void frame(void)
{
	struct dmabroker_alloc_spec spec = {.width = 64, .height = 64, .fourcc = 0x34325258};

	sc.frames++;
	switch (sc.phase) {
	case 0:
		register_both();
		sc.phase++;
		break;
	case 1:
		if (sc.registered < 2)
			break;
		for (intptr_t i = 0; i < N_BUFFERS; i++)
			if (dmabroker_allocate_async(sc.owner.ctx, &spec, sizeof(spec),
						     on_allocated, (void *)i, NULL) < 0)
				sc.failures++;
		sc.phase++;
		break;
	case 2:
		if (sc.imported < N_BUFFERS)
			break;
		/* The daemon stops answering; the frame loop must not notice. */
		kill(sc.f->daemon_pid, SIGSTOP);
		sc.stopped = true;
		sc.frames_at_stop = sc.frames;
		for (int i = 0; i < N_BUFFERS; i++) {
			int r = i < 3 ? dmabroker_buffer_move_async(sc.owned[i], on_stopped_reply,
								    &sc, NULL)
				      : dmabroker_buffer_revoke_async(sc.owned[i], "test",
								      on_stopped_reply, NULL, NULL);

			sc.calls_while_stopped += r == 0;
		}
		sc.phase++;
		break;
	case 3:
		if (sc.frames < sc.frames_at_stop + STOPPED_FRAMES)
			break;
		sc.frames_at_cont = sc.frames;
		sc.resumed = true;
		kill(sc.f->daemon_pid, SIGCONT);
		/*
		 * A blocking call right away: the daemon first works off what queued up, so the
		 * holder's Moved and Revoked arrive while the library waits for this answer.
		 * They must still be delivered by the loop, not sit in sd-bus's queue.
		 */
		{
			struct dmabroker_token token;

			if (dmabroker_share(sc.held[0], NULL, 0, &token) < 0)
				sc.failures++;
		}
		sc.blocking_done = true;
		sc.phase++;
		break;
	case 4:
		if (sc.replies == sc.calls_while_stopped && sc.holder.moved == sc.moves_ok &&
		    sc.holder.revoked == sc.revokes_ok && sc.owner.moved == sc.moves_ok)
			sc.finished = true;
		break;
	}
	if (sc.frames > MAX_FRAMES)
		sc.finished = true;
}

static void setup(struct fixture *f)
{
	memset(&sc, 0, sizeof(sc));
	sc.f = f;
	tap_require(dmabroker_connect(&sc.owner.ctx, NULL, 0) == 0 &&
			    dmabroker_connect(&sc.holder.ctx, NULL, 0) == 0,
		    "two clients connect");
}

static void report(const char *loop)
{
	is(sc.failures, 0, "%s: every call of the run succeeded", loop);
	tap_ok(sc.frames >= sc.frames_at_stop + STOPPED_FRAMES && sc.frames_at_cont > 0,
	       "%s: %d frames while the daemon was stopped", loop,
	       sc.frames_at_cont - sc.frames_at_stop);
	is(sc.replies_while_stopped, 0, "%s: no answer came while it was stopped", loop);
	is(sc.calls_while_stopped, N_BUFFERS, "%s: %d calls were made while it was stopped", loop,
	   N_BUFFERS);
	is(sc.replies, sc.calls_while_stopped, "%s: every one was answered after SIGCONT", loop);
	/* The daemon may answer Busy to a move queued behind others; what counts is that every
	 * Moved it did send arrives. */
	tap_ok(sc.moves_ok >= 1, "%s: %d of 3 moves succeeded", loop, sc.moves_ok);
	is(sc.revokes_ok, 3, "%s: the revocations succeeded", loop);
	is(sc.holder.moved, sc.moves_ok, "%s: the holder got every Moved sent (%d)", loop,
	   sc.holder.moved);
	is(sc.owner.moved, sc.moves_ok, "%s: so did the owner, a holder too (%d)", loop,
	   sc.owner.moved);
	is(sc.holder.revoked, sc.revokes_ok, "%s: the holder got every Revoked sent (%d)", loop,
	   sc.holder.revoked);
	tap_ok(sc.blocking_done, "%s: a blocking call ran while events were arriving", loop);
	for (int i = 0; i < N_BUFFERS; i++) {
		dmabroker_release(sc.held[i]);
		dmabroker_release(sc.owned[i]);
	}
	dmabroker_disconnect(sc.holder.ctx);
	dmabroker_disconnect(sc.owner.ctx);
}

/* --- wl_event_loop, the way a wlroots-style compositor runs it --- */

static int wl_on_fd(int fd, uint32_t mask, void *data)
{
	(void)fd;
	(void)mask;
	(void)dmabroker_dispatch(data);
	return 0;
}

static int wl_on_frame(void *data)
{
	struct wl_event_source **timer = data;

	frame();
	/* The next frame in 1 ms: a busy compositor's vblank. */
	wl_event_source_timer_update(*timer, 1);
	return 0;
}

static struct wl_event_source *wl_add_client(struct wl_event_loop *loop, struct dmabroker *ctx)
{
	uint32_t mask = dmabroker_get_events(ctx) & POLLIN ? WL_EVENT_READABLE : 0;

	/* The fd also fires at dmabroker_get_timeout(): no timer is needed for the library. */
	return wl_event_loop_add_fd(loop, dmabroker_get_fd(ctx), mask, wl_on_fd, ctx);
}

static void run_wayland(struct fixture *f)
{
	struct wl_event_loop *loop = wl_event_loop_create();
	struct wl_event_source *timer, *a, *b;

	setup(f);
	a = wl_add_client(loop, sc.owner.ctx);
	b = wl_add_client(loop, sc.holder.ctx);
	timer = wl_event_loop_add_timer(loop, wl_on_frame, &timer);
	wl_event_source_timer_update(timer, 1);
	while (!sc.finished)
		wl_event_loop_dispatch(loop, -1);
	wl_event_source_remove(timer);
	wl_event_source_remove(a);
	wl_event_source_remove(b);
	wl_event_loop_destroy(loop);
	report("wl_event_loop");
}

/* --- GLib --- */

static gboolean glib_on_frame(gpointer data)
{
	frame();
	if (sc.finished)
		g_main_loop_quit(data);
	return G_SOURCE_CONTINUE;
}

static void run_glib(struct fixture *f)
{
	GMainLoop *loop = g_main_loop_new(NULL, FALSE);
	GSource *a, *b;
	guint timer;

	setup(f);
	a = dmabroker_glib_source_new(sc.owner.ctx);
	b = dmabroker_glib_source_new(sc.holder.ctx);
	g_source_attach(a, NULL);
	g_source_attach(b, NULL);
	timer = g_timeout_add(1, glib_on_frame, loop);
	g_main_loop_run(loop);
	g_source_remove(timer);
	g_source_destroy(a);
	g_source_destroy(b);
	g_source_unref(a);
	g_source_unref(b);
	g_main_loop_unref(loop);
	report("GLib");
}

int main(int argc, char **argv)
{
	struct fixture f;

	(void)argc;
	fixture_wrap_self(argv);

	tap_require(fixture_start(&f, NULL) == 0, "start a private bus and the daemon");
	run_wayland(&f);
	run_glib(&f);
	tap_ok(fixture_wait_clients(&f, 0, 5000), "every client is gone");
	is(fixture_stop(&f), 0, "the daemon exits cleanly");
	return tap_done();
}
