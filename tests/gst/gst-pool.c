// SPDX-License-Identifier: MIT
/*
 * Against a daemon (run under with-daemon): GstDmabrokerBufferPool as a unit, made with the
 * constructor dmabrokersink uses. A count over the daemon's MaxBuffersPerCollection (32 by
 * default) is answered as GStreamer's set_config contract says: FALSE, with the configuration
 * corrected to counts the broker can give (and no error posted). The caller checks it with
 * gst_buffer_pool_config_validate_params() as GStreamer's elements do: a minimum within the
 * limit is kept (the answer validates), one over it cannot be (the caller would fall back to
 * another pool). Set again, the corrected configuration is accepted and the pool activates.
 * The pool is CPU-only here (a host with memfds only would otherwise refuse it first: the
 * sink's buffers must be dma-bufs).
 *   gst-pool
 */
#include <gst/gst.h>
#include <gst/video/video.h>

#include "gstdmabrokerpool.h"
#include "tap.h"

GST_DEBUG_CATEGORY(gst_dmabroker_debug);

#define CAPS "video/x-raw,format=GRAY8,width=64,height=16,framerate=30/1"
#define FRAME_BYTES (64 * 16)
#define CONSUMER_FRAMES 4 /* as dmabrokersink */
#define LIMIT 32 /* the daemon's default MaxBuffersPerCollection */

static GstElement *pipeline, *owner;
static struct gst_dmabroker_conn *conn;
static GstCaps *caps;

/* set_config with min buffers (max 0); the corrected configuration is set again. */
static void corrected(guint asked, gboolean keeps_min)
{
	struct gst_dmabroker_pool_params params = {
		.name = "pool-unit",
		.mode = DMABROKER_STREAM_FIFO,
		.consumer_frames = CONSUMER_FRAMES,
		.cpu_only = TRUE,
	};
	GstBufferPool *pool = gst_dmabroker_buffer_pool_new(owner, conn, &params);
	GstStructure *config = gst_buffer_pool_get_config(pool);
	GstCaps *got_caps = NULL; /* the configuration's */
	GstBuffer *buf = NULL;
	GstMessage *msg;
	guint size = 0, min = 0, max = 0;

	gst_buffer_pool_config_set_params(config, caps, FRAME_BYTES, asked, 0);
	gst_buffer_pool_config_add_option(config, GST_BUFFER_POOL_OPTION_VIDEO_META);
	tap_ok(!gst_buffer_pool_set_config(pool, config),
	       "%u buffers and the consumers' %d, over the broker's %d: set_config answers FALSE",
	       asked, CONSUMER_FRAMES, LIMIT);

	config = gst_buffer_pool_get_config(pool);
	gst_buffer_pool_config_get_params(config, &got_caps, &size, &min, &max);
	tap_ok(got_caps && gst_caps_is_equal(got_caps, caps) && size == FRAME_BYTES,
	       "the corrected configuration keeps the caps and the size (%u)", size);
	tap_ok(min > 0 && max >= min && max <= LIMIT,
	       "it carries counts the broker can give: %u..%u (limit %d)", min, max, LIMIT);
	if (keeps_min)
		tap_ok(min == asked && gst_buffer_pool_config_validate_params(
						config, caps, FRAME_BYTES, asked, 0),
		       "the minimum fits: it stays, and the caller's validation accepts the answer");
	else
		tap_ok(min + CONSUMER_FRAMES <= LIMIT &&
			       !gst_buffer_pool_config_validate_params(config, caps, FRAME_BYTES,
								       asked, 0) &&
			       gst_buffer_pool_config_validate_params(config, caps, FRAME_BYTES,
								      min, max),
		       "the minimum cannot be met: %u, the consumers' frames beside it, which a "
		       "caller needing %u refuses and one doing with fewer accepts",
		       min, asked);
	msg = gst_bus_pop_filtered(GST_ELEMENT_BUS(pipeline), GST_MESSAGE_ERROR);
	tap_ok(!msg, "a correction is not an error of the owner");
	gst_clear_message(&msg);

	tap_ok(gst_buffer_pool_set_config(pool, config),
	       "the corrected configuration, set again, is accepted");
	config = gst_buffer_pool_get_config(pool);
	gst_buffer_pool_config_get_params(config, NULL, &size, NULL, NULL);
	tap_ok(size >= FRAME_BYTES &&
		       gst_buffer_pool_config_validate_params(config, caps, FRAME_BYTES, min, max),
	       "and says the broker's size (%u; %d asked), which validates", size, FRAME_BYTES);
	gst_structure_free(config);
	tap_ok(gst_buffer_pool_set_active(pool, TRUE), "the pool activates");
	tap_ok(gst_buffer_pool_acquire_buffer(pool, &buf, NULL) == GST_FLOW_OK && buf &&
		       gst_buffer_get_size(buf) >= FRAME_BYTES,
	       "a buffer of the pool is acquired");
	if (buf)
		gst_buffer_unref(buf);
	tap_ok(gst_buffer_pool_set_active(pool, FALSE), "and the pool deactivates");
	msg = gst_bus_pop_filtered(GST_ELEMENT_BUS(pipeline), GST_MESSAGE_ERROR);
	tap_ok(!msg, "no error was posted");
	gst_clear_message(&msg);
	gst_object_unref(pool);
}

int main(int argc, char **argv)
{
	GError *error = NULL;

	gst_init(&argc, &argv);
	GST_DEBUG_CATEGORY_INIT(gst_dmabroker_debug, "dmabroker", 0, "dmabroker");
	pipeline = gst_pipeline_new(NULL);
	owner = gst_element_factory_make("fakesink", "pool-owner");
	gst_bin_add(GST_BIN(pipeline), owner);
	conn = gst_dmabroker_conn_new("media", "pool-unit", NULL, &error);
	tap_require(conn, "connected: %s", error ? error->message : "registered");
	caps = gst_caps_from_string(CAPS);

	corrected(30, TRUE);
	corrected(40, FALSE);

	gst_caps_unref(caps);
	gst_dmabroker_conn_unref(conn);
	gst_object_unref(pipeline);
	return tap_done();
}
