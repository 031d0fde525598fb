// SPDX-License-Identifier: MIT
/*
 * Against a daemon (run under with-daemon): a frame dmabrokersrc pushed and downstream still
 * holds stays valid after the source stopped (its fd open, the same file, the frame's
 * content), and a pool configuration the broker cannot meet is refused with its reason (or,
 * where only the count is what it refuses, corrected: tests/gst/gst-pool.c). The
 * producer is the library's (dmabrokersink's buffers must be dma-bufs: a host without udmabuf
 * or a dma-heap has memfds only).
 *   gst-held
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <gst/allocators/gstdmabuf.h>
#include <gst/gst.h>
#include <gst/video/video.h>

#include "dmabroker.h"
#include "tap.h"

#define CAPS "video/x-raw,format=GRAY8,width=64,height=16,framerate=30/1"
#define FRAME_BYTES (64 * 16)

static GstBuffer *held;
static gint producing = 1;

/* Queues a frame into every free buffer, each byte its sequence number, until told to stop. */
static gpointer produce(gpointer data)
{
	struct dmabroker_stream *s = data;
	struct dmabroker_collection *col = dmabroker_stream_get_collection(s);
	struct dmabroker_frame f = {.acquire_fence = -1};
	uint32_t index;
	void *p;
	int r;

	for (guint8 seq = 1; g_atomic_int_get(&producing); seq++) {
		r = dmabroker_stream_wait_free(s, &index, 100000);
		if (r == -ETIMEDOUT)
			continue;
		if (r < 0 || dmabroker_buffer_map(dmabroker_collection_get_buffer(col, index), &p) < 0)
			break;
		memset(p, seq, FRAME_BYTES);
		f.index = index;
		if (dmabroker_stream_queue(s, &f) < 0)
			break;
		g_usleep(20000);
	}
	return NULL;
}

static struct dmabroker_stream *start_producer(struct dmabroker **ret_ctx)
{
	uint32_t fourcc = 0x20203852; /* DRM_FORMAT_R8: "R8  " */
	uint64_t modifier = 0;
	struct dmabroker_constraints c = {.min_size = FRAME_BYTES,
					  .min_buffers_for_camping = 2,
					  .fourccs = &fourcc,
					  .n_fourccs = 1,
					  .modifiers = &modifier,
					  .n_modifiers = 1,
					  .width = 64,
					  .height = 16,
					  .min_strides = {64},
					  .max_strides = {64},
					  .cpu_write = true,
					  .cpu_read = true};
	struct dmabroker_stream_options o = {
		.name = "held", .format = {.fourcc = fourcc, .width = 64, .height = 16}};
	struct dmabroker_stream_handlers h = {0};
	struct dmabroker_collection *col = NULL;
	struct dmabroker_stream *s = NULL;
	struct dmabroker *ctx = NULL;

	if (dmabroker_connect(&ctx, NULL, 0) < 0 ||
	    dmabroker_register(ctx, "cpu", true, "producer", NULL) < 0 ||
	    dmabroker_collection_create(ctx, "held", 1, &col) < 0 ||
	    dmabroker_collection_set_constraints(col, &c, sizeof(c)) < 0 ||
	    dmabroker_collection_commit(col) < 0 || dmabroker_collection_wait(col) < 0 ||
	    dmabroker_stream_create(col, &o, sizeof(o), &h, sizeof(h), NULL, &s) < 0) {
		tap_diag("producer: %s", ctx ? dmabroker_last_error(ctx) : "no connection");
		return NULL;
	}
	*ret_ctx = ctx;
	return s;
}

static void on_handoff(GstElement *sink, GstBuffer *buf, GstPad *pad, gpointer data)
{
	if (!held)
		held = gst_buffer_ref(buf);
}

static GstMessage *wait_message(GstElement *pipeline, GstMessageType types)
{
	GstBus *bus = gst_element_get_bus(pipeline);
	GstMessage *msg = gst_bus_timed_pop_filtered(bus, 20 * GST_SECOND, types);

	gst_object_unref(bus);
	return msg;
}

/* A frame held past the source's stop. */
static void held_frame(void)
{
	struct dmabroker *ctx = NULL;
	struct dmabroker_stream *stream = start_producer(&ctx);
	GstElement *cons, *sink;
	GThread *thread;
	GstMapInfo map;
	GstMemory *mem;
	struct stat before, after;
	guint8 copy[FRAME_BYTES];
	void *p;
	int fd;

	tap_require(stream != NULL, "a producer: a stream of the library's");
	thread = g_thread_new("producer", produce, stream);
	cons = gst_parse_launch("dmabrokersrc stream-name=held ! fakesink name=sink "
				"signal-handoffs=true sync=false",
				NULL);
	sink = gst_bin_get_by_name(GST_BIN(cons), "sink");
	g_signal_connect(sink, "handoff", G_CALLBACK(on_handoff), NULL);
	gst_object_unref(sink);
	tap_require(gst_element_set_state(cons, GST_STATE_PLAYING) != GST_STATE_CHANGE_FAILURE,
		    "a consumer: dmabrokersrc into fakesink");
	for (int i = 0; i < 200 && !g_atomic_pointer_get(&held); i++)
		g_usleep(50000);
	tap_require(held != NULL, "the consumer got a frame");
	mem = gst_buffer_peek_memory(held, 0);
	fd = gst_fd_memory_get_fd(mem);
	tap_require(fd >= 0 && fstat(fd, &before) == 0, "the frame is fd memory (fd %d)", fd);
	tap_require(gst_buffer_map(held, &map, GST_MAP_READ), "the frame maps");
	tap_require(map.size >= FRAME_BYTES && map.data[0] != 0 &&
			    map.data[FRAME_BYTES - 1] == map.data[0],
		    "the frame is one the producer filled (%" G_GSIZE_FORMAT " bytes of %u)",
		    map.size, map.data[0]);
	memcpy(copy, map.data, FRAME_BYTES);
	gst_buffer_unmap(held, &map);

	gst_element_set_state(cons, GST_STATE_NULL);
	gst_object_unref(cons);
	tap_ok(fstat(fd, &after) == 0 && after.st_dev == before.st_dev &&
		       after.st_ino == before.st_ino,
	       "after the consumer's pipeline went to NULL the frame's fd is the same file");
	p = mmap(NULL, FRAME_BYTES, PROT_READ, MAP_SHARED, fd, 0);
	tap_ok(p != MAP_FAILED && memcmp(p, copy, FRAME_BYTES) == 0,
	       "and maps to the frame's content");
	if (p != MAP_FAILED)
		munmap(p, FRAME_BYTES);
	tap_ok(gst_buffer_map(held, &map, GST_MAP_READ) &&
		       memcmp(map.data, copy, FRAME_BYTES) == 0,
	       "the held GstBuffer still maps to the frame");
	gst_buffer_unmap(held, &map);

	/* The last reference leaves the stream: the producer gets every buffer back. */
	gst_clear_buffer(&held);
	tap_ok(fcntl(fd, F_GETFD) < 0 && errno == EBADF,
	       "freeing the held buffer leaves the stream and closes the fd");
	g_atomic_int_set(&producing, 0);
	g_thread_join(thread);
	dmabroker_stream_free(stream, NULL);
	dmabroker_disconnect(ctx);
}

/* set_config with a configuration the broker must refuse. */
static void refused_config(void)
{
	GstElement *pipeline = gst_pipeline_new(NULL);
	GstElement *sink = gst_element_factory_make("dmabrokersink", "refusing");
	GstCaps *caps = gst_caps_from_string(CAPS);
	GstBufferPool *pool = NULL;
	GstStructure *config;
	GstQuery *query;
	GstMessage *msg;
	GstPad *pad;
	GError *error = NULL;
	guint max = 0;

	gst_bin_add(GST_BIN(pipeline), sink);
	tap_require(gst_element_set_state(pipeline, GST_STATE_PAUSED) !=
				    GST_STATE_CHANGE_FAILURE,
		    "dmabrokersink started");
	query = gst_query_new_allocation(caps, TRUE);
	pad = gst_element_get_static_pad(sink, "sink");
	tap_require(gst_pad_query(pad, query) &&
			    gst_query_get_n_allocation_pools(query) > 0,
		    "the sink proposes its pool");
	gst_query_parse_nth_allocation_pool(query, 0, &pool, NULL, NULL, NULL);
	gst_query_unref(query);
	gst_object_unref(pad);

	/* More buffers than the daemon's MaxBuffersPerCollection (32). On a host without
	 * udmabuf or a dma-heap the memfd backend is refused first (the sink's buffers must be
	 * dma-bufs): an error with the broker's reason, about this participant. Where the
	 * buffers can be dma-bufs the count is what the broker refuses, and that is answered
	 * with a corrected configuration, not an error (tests/gst/gst-pool.c). */
	config = gst_buffer_pool_get_config(pool);
	gst_buffer_pool_config_set_params(config, caps, FRAME_BYTES, 40, 0);
	gst_buffer_pool_config_add_option(config, GST_BUFFER_POOL_OPTION_VIDEO_META);
	tap_ok(!gst_buffer_pool_set_config(pool, config), "40 buffers: set_config refuses");
	config = gst_buffer_pool_get_config(pool);
	gst_buffer_pool_config_get_params(config, NULL, NULL, NULL, &max);
	gst_structure_free(config);
	if (max) {
		msg = gst_bus_pop_filtered(GST_ELEMENT_BUS(pipeline), GST_MESSAGE_ERROR);
		tap_ok(!msg && max <= 32,
		       "dma-bufs here: the count is corrected (at most %u), not an error", max);
		gst_clear_message(&msg);
		goto out;
	}
	msg = wait_message(pipeline, GST_MESSAGE_ERROR);
	if (msg)
		gst_message_parse_error(msg, &error, NULL);
	tap_ok(error && g_str_has_prefix(error->message, "dmabrokerd refused the buffers: ") &&
		       strstr(error->message, "refusing (client "),
	       "the sink posts the broker's reason: %s", error ? error->message : "no error");
	g_clear_error(&error);
	gst_clear_message(&msg);
out:
	gst_object_unref(pool);
	gst_caps_unref(caps);
	gst_element_set_state(pipeline, GST_STATE_NULL);
	gst_object_unref(pipeline);
}

int main(int argc, char **argv)
{
	gst_init(&argc, &argv);
	held_frame();
	refused_config();
	return tap_done();
}
