// SPDX-License-Identifier: MIT
/**
 * SECTION:element-dmabrokersink
 * @title: dmabrokersink
 *
 * The producer end of a dmabrokerd stream. Offers upstream a pool whose buffers are a broker
 * collection's, so that `v4l2src io-mode=dmabuf-import` captures straight into them, and
 * hands each frame to the stream's consumers (dmabrokersrc, or any libdmabroker client) by
 * buffer index: no copy. Buffers that come from elsewhere are copied into a free one.
 *
 * |[
 * gst-launch-1.0 v4l2src device=/dev/video0 io-mode=dmabuf-import ! \
 *     video/x-raw,format=YUY2,width=640,height=360 ! \
 *     dmabrokersink device=/dev/video0 stream-name=camera
 * ]|
 */
#include "gstdmabrokersink.h"

#include <gst/video/video.h>

#include "gstdmabrokerconn.h"
#include "gstdmabrokermeta.h"
#include "gstdmabrokerpool.h"
#include "gstdmabrokerv4l2.h"

GST_DEBUG_CATEGORY_STATIC(gst_dmabroker_sink_debug);
#define GST_CAT_DEFAULT gst_dmabroker_sink_debug

/* How long the end of the stream waits for the consumers to give every buffer back. */
#define DRAIN_TIMEOUT_US (10 * G_USEC_PER_SEC)
/* Buffers proposed upstream beyond what the consumers hold. */
#define PROPOSED_MIN_BUFFERS 2
/* Buffers for the consumers' frames, beyond what upstream holds. */
#define CONSUMER_FRAMES 4

enum {
	PROP_0,
	PROP_STREAM_NAME,
	PROP_MODE,
	PROP_DEVICE,
	PROP_CONTIGUOUS,
	PROP_MAX_SEGMENT_SIZE,
	PROP_TOKENS,
};

struct _GstDmabrokerSink {
	GstBaseSink parent;

	/* Properties, under the object lock. */
	char *stream_name;
	char *device;
	gboolean contiguous;
	guint64 max_segment_size;
	enum dmabroker_stream_mode mode;
	guint tokens;

	/* From start to stop. */
	struct gst_dmabroker_conn *conn;
	struct gst_dmabroker_pool_params params; /* properties and what the device says */
	GstVideoInfo info;
	GstCaps *caps;
	GstBufferPool *pool; /* under the object lock */
	gboolean pool_is_ours; /* activated by the sink itself (the copy path) */
};

static GstStaticPadTemplate sink_template =
	GST_STATIC_PAD_TEMPLATE("sink", GST_PAD_SINK, GST_PAD_ALWAYS,
				GST_STATIC_CAPS(GST_VIDEO_CAPS_MAKE(GST_DMABROKER_VIDEO_FORMATS)));

#define gst_dmabroker_sink_parent_class parent_class
G_DEFINE_TYPE(GstDmabrokerSink, gst_dmabroker_sink, GST_TYPE_BASE_SINK);
GST_ELEMENT_REGISTER_DEFINE(dmabrokersink, "dmabrokersink", GST_RANK_NONE, GST_TYPE_DMABROKER_SINK);

#define GST_TYPE_DMABROKER_STREAM_MODE (gst_dmabroker_stream_mode_get_type())
static GType gst_dmabroker_stream_mode_get_type(void)
{
	static const GEnumValue values[] = {
		{DMABROKER_STREAM_FIFO, "Every consumer gets every frame; the producer waits",
		 "fifo"},
		{DMABROKER_STREAM_LATEST,
		 "A consumer that falls behind gets the newest frame; the producer never waits",
		 "latest"},
		{0, NULL, NULL},
	};
	static gsize type;

	if (g_once_init_enter(&type))
		g_once_init_leave(&type, g_enum_register_static("GstDmabrokerStreamMode", values));
	return (GType)type;
}

/* What the capture device needs that 1.22's allocation query does not say. */
static gboolean derive_from_device(GstDmabrokerSink *sink, const char *path)
{
	struct gst_dmabroker_v4l2_needs needs;
	GError *error = NULL;

	if (!gst_dmabroker_v4l2_needs(path, &needs, &error)) {
		GST_ELEMENT_ERROR(sink, RESOURCE, SETTINGS, ("%s", error->message), (NULL));
		g_error_free(error);
		return FALSE;
	}
	sink->params.contiguous |= needs.contiguous;
	if (!sink->params.max_segment_size)
		sink->params.max_segment_size = needs.max_segment_size;
	sink->params.dma_address_bits = needs.dma_address_bits;
	GST_INFO_OBJECT(sink,
			"%s (%s, %s): contiguous %d, DMA segments up to %" G_GUINT64_FORMAT
			", address bits %u",
			path, needs.driver, needs.bus_info, sink->params.contiguous,
			sink->params.max_segment_size, sink->params.dma_address_bits);
	return TRUE;
}

static gboolean gst_dmabroker_sink_start(GstBaseSink *bsink)
{
	GstDmabrokerSink *sink = GST_DMABROKER_SINK(bsink);
	const char *devices[2] = {NULL, NULL};
	GError *error = NULL;
	char *name = gst_element_get_name(sink);

	GST_OBJECT_LOCK(sink);
	sink->params = (struct gst_dmabroker_pool_params){
		.name = sink->stream_name,
		.device = sink->device,
		.contiguous = sink->contiguous,
		.max_segment_size = sink->max_segment_size,
		.mode = sink->mode,
		.consumer_frames = CONSUMER_FRAMES,
		.tokens = sink->tokens,
	};
	GST_OBJECT_UNLOCK(sink);
	if (sink->params.device && !derive_from_device(sink, sink->params.device)) {
		g_free(name);
		return FALSE;
	}
	devices[0] = sink->params.device;
	sink->conn = gst_dmabroker_conn_new("media", name, devices, &error);
	g_free(name);
	if (!sink->conn) {
		GST_ELEMENT_ERROR(sink, RESOURCE, OPEN_READ_WRITE, ("%s", error->message), (NULL));
		g_error_free(error);
		return FALSE;
	}
	return TRUE;
}

/* Ends the pool's stream and lets it go (upstream deactivates it when it is done). */
static void drop_pool(GstDmabrokerSink *sink, const char *reason)
{
	GstBufferPool *pool;
	gboolean ours;

	GST_OBJECT_LOCK(sink);
	pool = sink->pool;
	ours = sink->pool_is_ours;
	sink->pool = NULL;
	sink->pool_is_ours = FALSE;
	GST_OBJECT_UNLOCK(sink);
	if (!pool)
		return;
	gst_dmabroker_buffer_pool_end_stream(GST_DMABROKER_BUFFER_POOL(pool), reason);
	if (ours)
		gst_buffer_pool_set_active(pool, FALSE);
	gst_object_unref(pool);
}

static gboolean gst_dmabroker_sink_stop(GstBaseSink *bsink)
{
	GstDmabrokerSink *sink = GST_DMABROKER_SINK(bsink);

	drop_pool(sink, "the producer stopped");
	gst_clear_caps(&sink->caps);
	g_clear_pointer(&sink->conn, gst_dmabroker_conn_unref);
	return TRUE;
}

static GstBufferPool *get_pool(GstDmabrokerSink *sink)
{
	GstBufferPool *pool;

	GST_OBJECT_LOCK(sink);
	pool = sink->pool ? gst_object_ref(sink->pool) : NULL;
	GST_OBJECT_UNLOCK(sink);
	return pool;
}

/* The pool for caps: the current one if it is for them, else a new one (a new stream). */
static GstBufferPool *ensure_pool(GstDmabrokerSink *sink, GstCaps *caps)
{
	GstBufferPool *pool = get_pool(sink);

	if (pool) {
		GstStructure *config = gst_buffer_pool_get_config(pool);
		GstCaps *pool_caps = NULL;
		gboolean same;

		gst_buffer_pool_config_get_params(config, &pool_caps, NULL, NULL, NULL);
		same = !pool_caps || gst_caps_is_equal(pool_caps, caps);
		gst_structure_free(config);
		if (same)
			return pool;
		gst_object_unref(pool);
		drop_pool(sink, "the format changed");
	}
	pool = gst_dmabroker_buffer_pool_new(GST_ELEMENT(sink), sink->conn, &sink->params);
	GST_OBJECT_LOCK(sink);
	gst_object_replace((GstObject **)&sink->pool, GST_OBJECT(pool));
	GST_OBJECT_UNLOCK(sink);
	return pool;
}

static gboolean gst_dmabroker_sink_set_caps(GstBaseSink *bsink, GstCaps *caps)
{
	GstDmabrokerSink *sink = GST_DMABROKER_SINK(bsink);
	GstVideoInfo info;

	if (!gst_video_info_from_caps(&info, caps)) {
		GST_ERROR_OBJECT(sink, "not video caps: %" GST_PTR_FORMAT, caps);
		return FALSE;
	}
	if (sink->caps && !gst_caps_is_equal(sink->caps, caps))
		drop_pool(sink, "the format changed");
	sink->info = info;
	gst_caps_replace(&sink->caps, caps);
	GST_INFO_OBJECT(sink, "caps %" GST_PTR_FORMAT, caps);
	return TRUE;
}

static gboolean gst_dmabroker_sink_propose_allocation(GstBaseSink *bsink, GstQuery *query)
{
	GstDmabrokerSink *sink = GST_DMABROKER_SINK(bsink);
	GstBufferPool *pool;
	GstCaps *caps;
	GstVideoInfo info;
	gboolean need_pool;

	gst_query_parse_allocation(query, &caps, &need_pool);
	if (!caps || !gst_video_info_from_caps(&info, caps))
		return FALSE;
	pool = ensure_pool(sink, caps);
	/* Offered unconfigured: the configuration upstream sets is what is negotiated. */
	gst_query_add_allocation_pool(query, pool, (guint)GST_VIDEO_INFO_SIZE(&info),
				      PROPOSED_MIN_BUFFERS, 0);
	gst_query_add_allocation_meta(query, GST_VIDEO_META_API_TYPE, NULL);
	gst_object_unref(pool);
	GST_DEBUG_OBJECT(sink, "offered the pool for %" GST_PTR_FORMAT, caps);
	return TRUE;
}

/* The copy path: the sink configures and activates the pool itself when upstream did not. */
static gboolean activate_pool(GstDmabrokerSink *sink, GstBufferPool *pool)
{
	guint size = (guint)GST_VIDEO_INFO_SIZE(&sink->info);
	GstStructure *config;

	if (gst_buffer_pool_is_active(pool))
		return TRUE;
	config = gst_buffer_pool_get_config(pool);
	gst_buffer_pool_config_set_params(config, sink->caps, size, PROPOSED_MIN_BUFFERS, 0);
	gst_buffer_pool_config_add_option(config, GST_BUFFER_POOL_OPTION_VIDEO_META);
	if (!gst_buffer_pool_set_config(pool, config)) {
		config = gst_buffer_pool_get_config(pool);
		if (!gst_buffer_pool_config_validate_params(config, sink->caps, size,
							    PROPOSED_MIN_BUFFERS, 0) ||
		    !gst_buffer_pool_set_config(pool, config))
			return FALSE;
	}
	if (!gst_buffer_pool_set_active(pool, TRUE))
		return FALSE;
	GST_OBJECT_LOCK(sink);
	sink->pool_is_ours = TRUE;
	GST_OBJECT_UNLOCK(sink);
	return TRUE;
}

/* A buffer from elsewhere, copied into a free buffer of the stream. */
static GstFlowReturn copy_into_pool(GstDmabrokerSink *sink, GstBufferPool *pool, GstBuffer *buf,
				    GstBuffer **ret, gint *ret_index)
{
	GstVideoFrame in, out;
	GstBuffer *dst = NULL;
	GstFlowReturn flow;
	gboolean copied;

	if (!activate_pool(sink, pool)) {
		/* The pool posted the broker's reason. */
		return GST_FLOW_NOT_NEGOTIATED;
	}
	flow = gst_buffer_pool_acquire_buffer(pool, &dst, NULL);
	if (flow != GST_FLOW_OK)
		return flow;
	*ret_index = gst_dmabroker_buffer_pool_get_index(GST_DMABROKER_BUFFER_POOL(pool), dst);
	if (*ret_index < 0 || !gst_video_frame_map(&in, &sink->info, buf, GST_MAP_READ)) {
		gst_buffer_unref(dst);
		GST_ELEMENT_ERROR(sink, STREAM, FAILED, ("Cannot read the frame"), (NULL));
		return GST_FLOW_ERROR;
	}
	gst_dmabroker_buffer_pool_cpu_access(GST_DMABROKER_BUFFER_POOL(pool), (guint)*ret_index,
					     TRUE);
	copied = gst_video_frame_map(&out, &sink->info, dst, GST_MAP_WRITE);
	if (copied) {
		copied = gst_video_frame_copy(&out, &in);
		gst_video_frame_unmap(&out);
	}
	gst_dmabroker_buffer_pool_cpu_access(GST_DMABROKER_BUFFER_POOL(pool), (guint)*ret_index,
					     FALSE);
	gst_video_frame_unmap(&in);
	if (!copied) {
		gst_buffer_unref(dst);
		GST_ELEMENT_ERROR(sink, STREAM, FAILED, ("Cannot copy the frame"), (NULL));
		return GST_FLOW_ERROR;
	}
	gst_buffer_copy_into(dst, buf, GST_BUFFER_COPY_FLAGS | GST_BUFFER_COPY_TIMESTAMPS, 0, -1);
	GST_LOG_OBJECT(sink, "copied a frame into buffer %d", *ret_index);
	*ret = dst;
	return GST_FLOW_OK;
}

static GstFlowReturn gst_dmabroker_sink_render(GstBaseSink *bsink, GstBuffer *buf)
{
	GstDmabrokerSink *sink = GST_DMABROKER_SINK(bsink);
	struct gst_dmabroker_meta meta = {
		.magic = GST_DMABROKER_META_MAGIC,
		.flags = GST_BUFFER_FLAGS(buf),
		.offset = GST_BUFFER_OFFSET(buf),
		.offset_end = GST_BUFFER_OFFSET_END(buf),
		.duration = GST_BUFFER_DURATION(buf),
	};
	GstBufferPool *pool;
	GstBuffer *frame = NULL;
	GstClockTime running;
	guint64 timestamp = 0;
	guint32 flags = 0;
	GstFlowReturn flow;
	gint index;

	if (!sink->caps)
		return GST_FLOW_NOT_NEGOTIATED;
	pool = ensure_pool(sink, sink->caps);
	index = gst_dmabroker_buffer_pool_get_index(GST_DMABROKER_BUFFER_POOL(pool), buf);
	if (index >= 0) {
		frame = gst_buffer_ref(buf);
	} else {
		flow = copy_into_pool(sink, pool, buf, &frame, &index);
		if (flow != GST_FLOW_OK) {
			gst_object_unref(pool);
			return flow;
		}
	}
	/* The frame's time on the pipeline clock (the system clock: CLOCK_MONOTONIC). */
	running =
		gst_segment_to_running_time(&bsink->segment, GST_FORMAT_TIME, GST_BUFFER_PTS(buf));
	if (GST_CLOCK_TIME_IS_VALID(running))
		timestamp = running + gst_element_get_base_time(GST_ELEMENT(sink));
	if (GST_BUFFER_FLAG_IS_SET(buf, GST_BUFFER_FLAG_DISCONT))
		flags |= DMABROKER_FRAME_DISCONTINUITY;
	flow = gst_dmabroker_buffer_pool_queue(GST_DMABROKER_BUFFER_POOL(pool), frame, (guint)index,
					       timestamp, flags, &meta, sizeof(meta));
	GST_LOG_OBJECT(sink, "frame offset %" G_GUINT64_FORMAT " in buffer %d: %s",
		       GST_BUFFER_OFFSET(buf), index, gst_flow_get_name(flow));
	gst_buffer_unref(frame);
	gst_object_unref(pool);
	if (flow == GST_FLOW_ERROR)
		GST_ELEMENT_ERROR(sink, RESOURCE, WRITE, ("Cannot hand the frame to the stream"),
				  (NULL));
	return flow;
}

static gboolean gst_dmabroker_sink_event(GstBaseSink *bsink, GstEvent *event)
{
	GstDmabrokerSink *sink = GST_DMABROKER_SINK(bsink);

	if (GST_EVENT_TYPE(event) == GST_EVENT_EOS) {
		GstBufferPool *pool = get_pool(sink);

		if (pool) {
			gst_dmabroker_buffer_pool_drain(GST_DMABROKER_BUFFER_POOL(pool),
							DRAIN_TIMEOUT_US);
			gst_object_unref(pool);
		}
	}
	return GST_BASE_SINK_CLASS(parent_class)->event(bsink, event);
}

static gboolean set_unlocked(GstDmabrokerSink *sink, gboolean unlocked)
{
	GstBufferPool *pool = get_pool(sink);

	if (pool) {
		gst_dmabroker_buffer_pool_set_unlocked(GST_DMABROKER_BUFFER_POOL(pool), unlocked);
		gst_object_unref(pool);
	}
	return TRUE;
}

static gboolean gst_dmabroker_sink_unlock(GstBaseSink *bsink)
{
	return set_unlocked(GST_DMABROKER_SINK(bsink), TRUE);
}

static gboolean gst_dmabroker_sink_unlock_stop(GstBaseSink *bsink)
{
	return set_unlocked(GST_DMABROKER_SINK(bsink), FALSE);
}

static void gst_dmabroker_sink_set_property(GObject *object, guint prop_id, const GValue *value,
					    GParamSpec *pspec)
{
	GstDmabrokerSink *sink = GST_DMABROKER_SINK(object);

	GST_OBJECT_LOCK(sink);
	switch (prop_id) {
	case PROP_STREAM_NAME:
		g_free(sink->stream_name);
		sink->stream_name = g_value_dup_string(value);
		break;
	case PROP_MODE:
		sink->mode = (enum dmabroker_stream_mode)g_value_get_enum(value);
		break;
	case PROP_DEVICE:
		g_free(sink->device);
		sink->device = g_value_dup_string(value);
		break;
	case PROP_CONTIGUOUS:
		sink->contiguous = g_value_get_boolean(value);
		break;
	case PROP_MAX_SEGMENT_SIZE:
		sink->max_segment_size = g_value_get_uint64(value);
		break;
	case PROP_TOKENS:
		sink->tokens = g_value_get_uint(value);
		break;
	default:
		G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
		break;
	}
	GST_OBJECT_UNLOCK(sink);
}

static void gst_dmabroker_sink_get_property(GObject *object, guint prop_id, GValue *value,
					    GParamSpec *pspec)
{
	GstDmabrokerSink *sink = GST_DMABROKER_SINK(object);

	GST_OBJECT_LOCK(sink);
	switch (prop_id) {
	case PROP_STREAM_NAME:
		g_value_set_string(value, sink->stream_name);
		break;
	case PROP_MODE:
		g_value_set_enum(value, (gint)sink->mode);
		break;
	case PROP_DEVICE:
		g_value_set_string(value, sink->device);
		break;
	case PROP_CONTIGUOUS:
		g_value_set_boolean(value, sink->contiguous);
		break;
	case PROP_MAX_SEGMENT_SIZE:
		g_value_set_uint64(value, sink->max_segment_size);
		break;
	case PROP_TOKENS:
		g_value_set_uint(value, sink->tokens);
		break;
	default:
		G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
		break;
	}
	GST_OBJECT_UNLOCK(sink);
}

static void gst_dmabroker_sink_finalize(GObject *object)
{
	GstDmabrokerSink *sink = GST_DMABROKER_SINK(object);

	g_free(sink->stream_name);
	g_free(sink->device);
	G_OBJECT_CLASS(parent_class)->finalize(object);
}

static void gst_dmabroker_sink_class_init(GstDmabrokerSinkClass *klass)
{
	GObjectClass *gobject_class = G_OBJECT_CLASS(klass);
	GstElementClass *element_class = GST_ELEMENT_CLASS(klass);
	GstBaseSinkClass *basesink_class = GST_BASE_SINK_CLASS(klass);
	const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY;

	gobject_class->set_property = gst_dmabroker_sink_set_property;
	gobject_class->get_property = gst_dmabroker_sink_get_property;
	gobject_class->finalize = gst_dmabroker_sink_finalize;

	g_object_class_install_property(
		gobject_class, PROP_STREAM_NAME,
		g_param_spec_string("stream-name", "Stream name",
				    "The name consumers of the same uid join the stream by "
				    "(NULL: unnamed, joined with tokens only)",
				    "gst", rw));
	g_object_class_install_property(
		gobject_class, PROP_MODE,
		g_param_spec_enum("mode", "Mode", "What happens when a consumer falls behind",
				  GST_TYPE_DMABROKER_STREAM_MODE, DMABROKER_STREAM_FIFO, rw));
	g_object_class_install_property(
		gobject_class, PROP_DEVICE,
		g_param_spec_string("device", "Device",
				    "The V4L2 device that writes the buffers (e.g. v4l2src's): "
				    "its needs (contiguity, DMA segment size) are derived from it "
				    "and the broker is told it imports them",
				    NULL, rw));
	g_object_class_install_property(
		gobject_class, PROP_CONTIGUOUS,
		g_param_spec_boolean("contiguous", "Contiguous",
				     "The buffers must be physically contiguous (e.g. a V4L2 "
				     "dma-contig device without an IOMMU)",
				     FALSE, rw));
	g_object_class_install_property(
		gobject_class, PROP_MAX_SEGMENT_SIZE,
		g_param_spec_uint64("max-segment-size", "Maximum DMA segment size",
				    "The largest DMA segment the upstream device maps, in bytes "
				    "(0: no limit)",
				    0, G_MAXUINT64, 0, rw));
	g_object_class_install_property(
		gobject_class, PROP_TOKENS,
		g_param_spec_uint("tokens", "Tokens",
				  "Single-use stream tokens to make once the stream exists, for "
				  "consumers of other uids; each is posted as a "
				  "\"dmabrokersink-token\" element message (field \"token\")",
				  0, 64, 0, rw));

	gst_element_class_set_static_metadata(
		element_class, "dmabroker stream sink", "Sink/Video",
		"Hands frames to the consumers of a dmabrokerd stream, in buffers the broker "
		"allocated (zero-copy from v4l2src io-mode=dmabuf-import)",
		"dmabroker maintainers");
	gst_element_class_add_static_pad_template(element_class, &sink_template);

	basesink_class->start = gst_dmabroker_sink_start;
	basesink_class->stop = gst_dmabroker_sink_stop;
	basesink_class->set_caps = gst_dmabroker_sink_set_caps;
	basesink_class->propose_allocation = gst_dmabroker_sink_propose_allocation;
	basesink_class->render = gst_dmabroker_sink_render;
	basesink_class->event = gst_dmabroker_sink_event;
	basesink_class->unlock = gst_dmabroker_sink_unlock;
	basesink_class->unlock_stop = gst_dmabroker_sink_unlock_stop;

	gst_type_mark_as_plugin_api(GST_TYPE_DMABROKER_STREAM_MODE, 0);
	GST_DEBUG_CATEGORY_INIT(gst_dmabroker_sink_debug, "dmabrokersink", 0,
				"dmabroker stream sink");
}

static void gst_dmabroker_sink_init(GstDmabrokerSink *sink)
{
	sink->stream_name = g_strdup("gst");
	sink->mode = DMABROKER_STREAM_FIFO;
	/* A frame goes to the consumers as it comes; the last one is not kept (it would keep a
	 * buffer from the stream). */
	gst_base_sink_set_sync(GST_BASE_SINK(sink), FALSE);
	gst_base_sink_set_last_sample_enabled(GST_BASE_SINK(sink), FALSE);
}
