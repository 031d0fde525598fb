// SPDX-License-Identifier: MIT
/*
 * wl-event-loop: libdmabroker driven from libwayland-server's wl_event_loop, as a
 * wlroots-style compositor would run it. The frame timer never waits on the daemon: every
 * call is asynchronous, and the library's one fd (which also fires at its timeout) is an
 * ordinary fd source of the compositor's loop.
 *
 *   wl-event-loop [FRAMES]   allocate a buffer, share it, move it, and count frames
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wayland-server-core.h>

#include <dmabroker.h>

struct compositor {
	struct wl_event_loop *loop;
	struct wl_event_source *frame_timer;
	struct dmabroker *broker;
	struct dmabroker_buffer *buf;
	int frames, max_frames;
	bool moved;
};

/* The library has work: let it run its callbacks. Never blocks. */
static int on_broker_fd(int fd, uint32_t mask, void *data)
{
	struct compositor *c = data;
	int r = dmabroker_dispatch(c->broker);

	if (r < 0 && r != -EBUSY)
		fprintf(stderr, "wl-event-loop: the broker is gone: %s\n", strerror(-r));
	return 0;
}

static void on_moved(struct dmabroker_buffer *buf, void *data)
{
	struct compositor *c = data;

	/* Scan-out keeps using the old fd until the new one is here. */
	dmabroker_buffer_reacquire_async(buf, NULL, NULL, NULL);
	c->moved = true;
}

static void on_revoked(struct dmabroker_buffer *buf, const char *reason, void *data)
{
	struct compositor *c = data;

	printf("revoked: %s\n", reason);
	if (c->buf == buf)
		c->buf = NULL;
	dmabroker_release_async(buf, NULL, NULL, NULL);
}

static void on_shared(int r, const struct dmabroker_token *token, void *data)
{
	char text[DMABROKER_TOKEN_STRING_SIZE];

	if (r < 0) {
		fprintf(stderr, "share: %s\n", strerror(-r));
		return;
	}
	dmabroker_token_to_string(token, text);
	printf("token %s\n", text);
}

static void on_allocated(int r, struct dmabroker_buffer *buf, void *data)
{
	struct compositor *c = data;

	if (r < 0) {
		fprintf(stderr, "allocate: %s\n", strerror(-r));
		return;
	}
	c->buf = buf;
	printf("buffer %s, %ux%u, stride %u\n", dmabroker_buffer_get_path(buf),
	       dmabroker_buffer_get_width(buf), dmabroker_buffer_get_height(buf),
	       dmabroker_buffer_get_stride(buf, 0));
	dmabroker_share_async(buf, NULL, 0, on_shared, c, NULL);
	dmabroker_buffer_move_async(buf, NULL, NULL, NULL);
}

static void on_registered(int r, void *data)
{
	struct compositor *c = data;
	struct dmabroker_alloc_spec spec = {
		.width = 256, .height = 256, .fourcc = 0x34325258 /* XR24 */};

	if (r < 0) {
		fprintf(stderr, "register: %s\n", strerror(-r));
		return;
	}
	dmabroker_allocate_async(c->broker, &spec, sizeof(spec), on_allocated, c, NULL);
}

static int on_frame(void *data)
{
	struct compositor *c = data;

	c->frames++;
	/* ... render and present ... */
	wl_event_source_timer_update(c->frame_timer, 16);
	return 0;
}

int main(int argc, char **argv)
{
	struct dmabroker_event_handlers handlers = {.moved = on_moved, .revoked = on_revoked};
	struct compositor c = {.max_frames = argc > 1 ? atoi(argv[1]) : 60};
	struct wl_event_source *broker_source;
	int r;

	r = dmabroker_connect(&c.broker, NULL, 0);
	if (r < 0) {
		fprintf(stderr, "connect: %s\n", strerror(-r));
		return 1;
	}
	dmabroker_set_event_handlers(c.broker, &handlers, sizeof(handlers), &c);
	c.loop = wl_event_loop_create();
	broker_source = wl_event_loop_add_fd(
		c.loop, dmabroker_get_fd(c.broker),
		dmabroker_get_events(c.broker) & POLLIN ? WL_EVENT_READABLE : 0, on_broker_fd, &c);
	c.frame_timer = wl_event_loop_add_timer(c.loop, on_frame, &c);
	wl_event_source_timer_update(c.frame_timer, 16);
	r = dmabroker_register_async(c.broker, "compositor", true, "wl-event-loop", NULL,
				     on_registered, &c, NULL);
	if (r < 0)
		fprintf(stderr, "register: %s\n", strerror(-r));
	while (c.frames < c.max_frames)
		wl_event_loop_dispatch(c.loop, -1);
	printf("frames %d, moved %s\n", c.frames, c.moved ? "yes" : "no");
	wl_event_source_remove(c.frame_timer);
	wl_event_source_remove(broker_source);
	wl_event_loop_destroy(c.loop);
	dmabroker_release(c.buf);
	dmabroker_disconnect(c.broker);
	return 0;
}
