// SPDX-License-Identifier: MIT
/**
 * SECTION:element-dmabrokersrc
 * @title: dmabrokersrc
 *
 * A consumer of a dmabrokerd stream. Joins it by name (a stream of the same uid) or with a
 * token (any uid), and pushes each frame as a buffer wrapping the broker's dma-buf (no copy),
 * with the stream's layout in a GstVideoMeta. The frame goes back to the producer when the
 * memory is freed downstream. The acquire fence is waited on before the frame is pushed: no
 * element of GStreamer 1.22 takes one. Linear layouts only. The stream's end is EOS.
 *
 * |[
 * gst-launch-1.0 dmabrokersrc stream-name=camera ! videoconvert ! autovideosink
 * ]|
 */
#include "gstdmabrokersrc.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <gst/allocators/gstdmabuf.h>
#include <gst/video/video.h>

#include "gstdmabrokerconn.h"
#include "gstdmabrokermeta.h"

GST_DEBUG_CATEGORY_STATIC(gst_dmabroker_src_debug);
#define GST_CAT_DEFAULT gst_dmabroker_src_debug

/* Frames held at once by default: the one downstream keeps, and the next. */
#define DEFAULT_MAX_HELD 2
/* The longest wait on a frame's acquire fence. */
#define FENCE_TIMEOUT_US (5 * G_USEC_PER_SEC)

enum {
	PROP_0,
	PROP_STREAM_NAME,
	PROP_TOKEN,
	PROP_MAX_HELD,
	PROP_REQUIRED,
};

struct pending_frame {
	uint32_t index;
	uint32_t flags;
	uint64_t timestamp_ns;
	gboolean has_meta;
	struct gst_dmabroker_meta meta;
	int fence; /* owned: a duplicate of the frame's acquire fence, or -1 */
};

struct _GstDmabrokerSrc {
	GstPushSrc parent;

	/* Properties, under the object lock. */
	char *stream_name;
	char *token;
	guint max_held;
	gboolean required;

	/* From start to stop. */
	struct gst_dmabroker_conn *conn;
	struct join *join; /* a reference: the stream joined */
	GstAllocator *allocator;
	GstVideoInfo info; /* the stream's format and the collection's layout */
	GstCaps *caps;
	gboolean default_layout;
	gboolean copy; /* downstream takes no GstVideoMeta and the layout is not the default */

	/* Frames from the stream, under lock. */
	GMutex lock;
	GCond cond;
	GQueue frames;
	gboolean ended, unlocked;
	char *end_reason;
};

/*
 * One join of the stream, refcounted apart from the element: the element holds a reference
 * from start to stop, each pushed memory one until it is freed. The buffers' fds are the
 * stream's, so the stream is freed (and the fds closed) with the last reference: a memory
 * still held downstream when the element stops keeps its fd open. Its fields are read and
 * changed with the conn locked (the stream callbacks run so).
 */
struct join {
	gint refcount;
	struct gst_dmabroker_conn *conn; /* a reference */
	struct dmabroker_stream *stream; /* owned */
	GstDmabrokerSrc *src; /* not a reference; NULL once the element stopped */
	gboolean ended; /* the stream ended: the buffers stay this consumer's until it leaves */
};

/* Attached to each pushed memory: the frame goes back when the memory is freed. */
struct release {
	struct join *join; /* a reference */
	guint index;
};

static GstStaticPadTemplate src_template =
	GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS,
				GST_STATIC_CAPS(GST_VIDEO_CAPS_MAKE(GST_DMABROKER_VIDEO_FORMATS)));

#define gst_dmabroker_src_parent_class parent_class
G_DEFINE_TYPE(GstDmabrokerSrc, gst_dmabroker_src, GST_TYPE_PUSH_SRC);
GST_ELEMENT_REGISTER_DEFINE(dmabrokersrc, "dmabrokersrc", GST_RANK_NONE, GST_TYPE_DMABROKER_SRC);

static GQuark release_quark(void)
{
	static GQuark quark;

	if (!quark)
		quark = g_quark_from_static_string("GstDmabrokerSrcRelease");
	return quark;
}

static struct join *join_ref(struct join *join)
{
	g_atomic_int_inc(&join->refcount);
	return join;
}

/* The last reference leaves the stream (which closes its buffers' fds): from any thread. */
static void join_unref(struct join *join)
{
	struct gst_dmabroker_conn *conn = join->conn;

	if (!g_atomic_int_dec_and_test(&join->refcount))
		return;
	gst_dmabroker_conn_lock(conn);
	/* Leaving releases every frame this consumer holds. */
	dmabroker_stream_free(join->stream, NULL);
	gst_dmabroker_conn_unlock(conn);
	g_free(join);
	gst_dmabroker_conn_unref(conn);
}

/* Stream callbacks: from the connection's dispatch thread, the conn locked. */
static void on_frame(struct dmabroker_stream *s, const struct dmabroker_frame *f, void *userdata)
{
	struct join *join = userdata;
	GstDmabrokerSrc *src = join->src;
	struct pending_frame *p;

	if (!src) {
		/* Stopped, its memories still out: a frame now goes back at once. */
		if (f->index != DMABROKER_FRAME_NO_BUFFER)
			dmabroker_stream_release(s, f->index, -1);
		return;
	}
	p = g_new0(struct pending_frame, 1);
	p->index = f->index;
	p->flags = f->flags;
	p->timestamp_ns = f->timestamp_ns;
	p->fence = f->acquire_fence >= 0 ? fcntl(f->acquire_fence, F_DUPFD_CLOEXEC, 3) : -1;
	if (f->meta_type == DMABROKER_FRAME_META_OPAQUE && f->meta_size == sizeof(p->meta)) {
		memcpy(&p->meta, f->meta, sizeof(p->meta));
		p->has_meta = p->meta.magic == GST_DMABROKER_META_MAGIC;
	}
	GST_LOG_OBJECT(src, "frame %" G_GUINT64_FORMAT " in buffer %u", f->seq, f->index);
	g_mutex_lock(&src->lock);
	g_queue_push_tail(&src->frames, p);
	g_cond_broadcast(&src->cond);
	g_mutex_unlock(&src->lock);
}

static void on_ended(struct dmabroker_stream *s, const char *reason, void *userdata)
{
	struct join *join = userdata;
	GstDmabrokerSrc *src = join->src;

	join->ended = TRUE;
	if (!src)
		return;
	GST_INFO_OBJECT(src, "the stream ended: %s", reason);
	g_mutex_lock(&src->lock);
	src->ended = TRUE;
	g_free(src->end_reason);
	src->end_reason = g_strdup(reason);
	g_cond_broadcast(&src->cond);
	g_mutex_unlock(&src->lock);
}

static void pending_frame_free(struct pending_frame *p)
{
	if (p->fence >= 0)
		close(p->fence);
	g_free(p);
}

/* Hands a frame back to the producer: from any thread. */
static void release_frame(struct join *join, guint index)
{
	int r = 0;

	gst_dmabroker_conn_lock(join->conn);
	/* After the end the buffers stay this consumer's until it leaves. */
	if (!join->ended)
		r = dmabroker_stream_release(join->stream, index, -1);
	gst_dmabroker_conn_unlock(join->conn);
	if (r < 0)
		GST_WARNING("cannot release buffer %u: %s", index, g_strerror(-r));
	else
		GST_LOG("released buffer %u", index);
}

static void release_notify(gpointer data)
{
	struct release *rel = data;

	release_frame(rel->join, rel->index);
	join_unref(rel->join);
	g_free(rel);
}

/* The stream's format and the collection's layout, as video info; FALSE with an error. */
static gboolean read_format(GstDmabrokerSrc *src)
{
	const struct dmabroker_stream_format *fmt = dmabroker_stream_get_format(src->join->stream);
	struct dmabroker_buffer *b = dmabroker_stream_get_buffer(src->join->stream, 0);
	GstVideoFormat format = gst_dmabroker_format_from_fourcc(fmt->fourcc);
	GstVideoInfo info;
	GstCaps *caps;

	if (format == GST_VIDEO_FORMAT_UNKNOWN) {
		GST_ELEMENT_ERROR(src, STREAM, FORMAT,
				  ("The stream's format %" GST_FOURCC_FORMAT " is not supported",
				   GST_FOURCC_ARGS(fmt->fourcc)),
				  (NULL));
		return FALSE;
	}
	if (!b || dmabroker_buffer_get_modifier(b) != 0) {
		GST_ELEMENT_ERROR(src, STREAM, FORMAT,
				  ("The stream's buffers are not laid out linearly"), (NULL));
		return FALSE;
	}
	if (!gst_video_info_set_format(&info, format, fmt->width, fmt->height)) {
		GST_ELEMENT_ERROR(
			src, STREAM, FORMAT,
			("The stream's size %ux%u is not supported", fmt->width, fmt->height),
			(NULL));
		return FALSE;
	}
	GST_VIDEO_INFO_FPS_N(&info) = (gint)fmt->framerate_num;
	GST_VIDEO_INFO_FPS_D(&info) = fmt->framerate_den ? (gint)fmt->framerate_den : 1;
	src->default_layout = TRUE;
	for (guint p = 0; p < GST_VIDEO_INFO_N_PLANES(&info); p++) {
		if (dmabroker_buffer_get_stride(b, p) !=
			    (uint32_t)GST_VIDEO_INFO_PLANE_STRIDE(&info, p) ||
		    dmabroker_buffer_get_offset(b, p) !=
			    (uint32_t)GST_VIDEO_INFO_PLANE_OFFSET(&info, p))
			src->default_layout = FALSE;
		GST_VIDEO_INFO_PLANE_STRIDE(&info, p) = (gint)dmabroker_buffer_get_stride(b, p);
		GST_VIDEO_INFO_PLANE_OFFSET(&info, p) = dmabroker_buffer_get_offset(b, p);
	}
	GST_VIDEO_INFO_SIZE(&info) = (gsize)dmabroker_buffer_get_size(b);
	src->info = info;
	caps = gst_video_info_to_caps(&info);
	GST_OBJECT_LOCK(src);
	gst_caps_take(&src->caps, caps);
	GST_OBJECT_UNLOCK(src);
	return TRUE;
}

static gboolean gst_dmabroker_src_start(GstBaseSrc *bsrc)
{
	GstDmabrokerSrc *src = GST_DMABROKER_SRC(bsrc);
	static const struct dmabroker_stream_handlers handlers = {
		.frame = on_frame,
		.ended = on_ended,
	};
	struct dmabroker_stream_options opts = {.sync = DMABROKER_SYNC_EXPLICIT};
	struct dmabroker_token token;
	struct dmabroker *ctx;
	struct join *join;
	char *name = gst_element_get_name(src), *stream_name, *token_hex;
	GError *error = NULL;
	gboolean ok = FALSE;
	int r;

	GST_OBJECT_LOCK(src);
	stream_name = g_strdup(src->stream_name);
	token_hex = g_strdup(src->token);
	opts.max_held = src->max_held;
	opts.required = src->required;
	GST_OBJECT_UNLOCK(src);
	opts.label = name;
	if (token_hex && dmabroker_token_from_string(token_hex, &token) < 0) {
		GST_ELEMENT_ERROR(src, RESOURCE, SETTINGS,
				  ("\"%s\" is not a stream token (32 hex characters)", token_hex),
				  (NULL));
		goto out;
	}
	if (!token_hex && !stream_name) {
		GST_ELEMENT_ERROR(src, RESOURCE, SETTINGS, ("Neither a stream name nor a token"),
				  (NULL));
		goto out;
	}
	src->conn = gst_dmabroker_conn_new("cpu", name, NULL, &error);
	if (!src->conn) {
		GST_ELEMENT_ERROR(src, RESOURCE, OPEN_READ, ("%s", error->message), (NULL));
		g_error_free(error);
		goto out;
	}
	g_mutex_lock(&src->lock);
	src->ended = FALSE;
	g_clear_pointer(&src->end_reason, g_free);
	g_mutex_unlock(&src->lock);

	ctx = gst_dmabroker_conn_get_ctx(src->conn);
	join = g_new0(struct join, 1);
	join->refcount = 1;
	join->conn = gst_dmabroker_conn_ref(src->conn);
	join->src = src;
	gst_dmabroker_conn_lock(src->conn);
	r = dmabroker_stream_join(ctx, token_hex ? NULL : stream_name, token_hex ? &token : NULL,
				  &opts, sizeof(opts), &handlers, sizeof(handlers), join,
				  &join->stream);
	if (r < 0) {
		join->stream = NULL;
		GST_ELEMENT_ERROR(src, RESOURCE, OPEN_READ,
				  ("Cannot join the stream %s: %s (%s)",
				   token_hex ? "of the token" : stream_name,
				   dmabroker_last_error(ctx), g_strerror(-r)),
				  (NULL));
	} else {
		src->join = join;
		ok = read_format(src);
		GST_INFO_OBJECT(src, "consumer %u of %s: %" GST_PTR_FORMAT ", %u buffers",
				dmabroker_stream_get_consumer_id(join->stream),
				dmabroker_stream_get_path(join->stream), src->caps,
				dmabroker_collection_get_buffer_count(
					dmabroker_stream_get_collection(join->stream)));
	}
	gst_dmabroker_conn_unlock(src->conn);
	if (r < 0)
		join_unref(join);
out:
	g_free(name);
	g_free(stream_name);
	g_free(token_hex);
	return ok;
}

static gboolean gst_dmabroker_src_stop(GstBaseSrc *bsrc)
{
	GstDmabrokerSrc *src = GST_DMABROKER_SRC(bsrc);
	struct pending_frame *p;
	GQueue frames = G_QUEUE_INIT;

	if (src->join) {
		/* From now on the stream's callbacks leave the element alone. */
		gst_dmabroker_conn_lock(src->conn);
		src->join->src = NULL;
		gst_dmabroker_conn_unlock(src->conn);
	}
	g_mutex_lock(&src->lock);
	while ((p = g_queue_pop_head(&src->frames)))
		g_queue_push_tail(&frames, p);
	g_mutex_unlock(&src->lock);
	while ((p = g_queue_pop_head(&frames))) {
		if (src->join && p->index != DMABROKER_FRAME_NO_BUFFER)
			release_frame(src->join, p->index);
		pending_frame_free(p);
	}
	/* The stream stays until the memories still out downstream are freed. */
	g_clear_pointer(&src->join, join_unref);
	g_clear_pointer(&src->conn, gst_dmabroker_conn_unref);
	GST_OBJECT_LOCK(src);
	gst_clear_caps(&src->caps);
	GST_OBJECT_UNLOCK(src);
	return TRUE;
}

static GstCaps *gst_dmabroker_src_get_caps(GstBaseSrc *bsrc, GstCaps *filter)
{
	GstDmabrokerSrc *src = GST_DMABROKER_SRC(bsrc);
	GstCaps *caps;

	GST_OBJECT_LOCK(src);
	caps = src->caps ? gst_caps_ref(src->caps)
			 : gst_pad_get_pad_template_caps(GST_BASE_SRC_PAD(bsrc));
	GST_OBJECT_UNLOCK(src);
	if (filter) {
		GstCaps *both = gst_caps_intersect_full(filter, caps, GST_CAPS_INTERSECT_FIRST);

		gst_caps_unref(caps);
		caps = both;
	}
	return caps;
}

static gboolean gst_dmabroker_src_decide_allocation(GstBaseSrc *bsrc, GstQuery *query)
{
	GstDmabrokerSrc *src = GST_DMABROKER_SRC(bsrc);
	gboolean video_meta = gst_query_find_allocation_meta(query, GST_VIDEO_META_API_TYPE, NULL);

	/* The frames are the broker's buffers: no pool of ours. Without GstVideoMeta
	 * downstream reads the default layout, so another layout is copied. */
	src->copy = !video_meta && !src->default_layout;
	if (src->copy)
		GST_WARNING_OBJECT(src, "downstream takes no GstVideoMeta: copying each frame");
	return TRUE;
}

/* The broker's buffer as a GstBuffer; the frame goes back when its memory is freed. */
static GstBuffer *wrap_frame(GstDmabrokerSrc *src, const struct pending_frame *p)
{
	struct dmabroker_buffer *b;
	struct release *rel;
	gsize offsets[GST_VIDEO_MAX_PLANES] = {0};
	gint strides[GST_VIDEO_MAX_PLANES] = {0};
	GstMemory *mem = NULL;
	GstBuffer *buf;
	gsize size = 0;
	int fd = -1;

	gst_dmabroker_conn_lock(src->conn);
	b = dmabroker_stream_get_buffer(src->join->stream, p->index);
	if (b) {
		fd = dmabroker_buffer_get_fd(b);
		size = (gsize)dmabroker_buffer_get_size(b);
	}
	if (fd >= 0)
		mem = gst_dmabuf_allocator_alloc_with_flags(src->allocator, fd, size,
							    GST_FD_MEMORY_FLAG_DONT_CLOSE);
	gst_dmabroker_conn_unlock(src->conn);
	if (!mem) {
		release_frame(src->join, p->index);
		return NULL;
	}
	rel = g_new0(struct release, 1);
	rel->join = join_ref(src->join);
	rel->index = p->index;
	gst_mini_object_set_qdata(GST_MINI_OBJECT(mem), release_quark(), rel, release_notify);
	buf = gst_buffer_new();
	gst_buffer_append_memory(buf, mem);
	for (guint i = 0; i < GST_VIDEO_INFO_N_PLANES(&src->info); i++) {
		offsets[i] = GST_VIDEO_INFO_PLANE_OFFSET(&src->info, i);
		strides[i] = GST_VIDEO_INFO_PLANE_STRIDE(&src->info, i);
	}
	gst_buffer_add_video_meta_full(
		buf, GST_VIDEO_FRAME_FLAG_NONE, GST_VIDEO_INFO_FORMAT(&src->info),
		GST_VIDEO_INFO_WIDTH(&src->info), GST_VIDEO_INFO_HEIGHT(&src->info),
		GST_VIDEO_INFO_N_PLANES(&src->info), offsets, strides);
	return buf;
}

/* For downstream without GstVideoMeta: the frame in the default layout, in system memory. */
static GstBuffer *copy_frame(GstDmabrokerSrc *src, GstBuffer *buf)
{
	GstVideoInfo plain;
	GstVideoFrame in, out;
	GstBuffer *copy;
	gboolean ok = FALSE;

	gst_video_info_set_format(&plain, GST_VIDEO_INFO_FORMAT(&src->info),
				  GST_VIDEO_INFO_WIDTH(&src->info),
				  GST_VIDEO_INFO_HEIGHT(&src->info));
	copy = gst_buffer_new_allocate(NULL, GST_VIDEO_INFO_SIZE(&plain), NULL);
	if (gst_video_frame_map(&in, &src->info, buf, GST_MAP_READ)) {
		if (gst_video_frame_map(&out, &plain, copy, GST_MAP_WRITE)) {
			ok = gst_video_frame_copy(&out, &in);
			gst_video_frame_unmap(&out);
		}
		gst_video_frame_unmap(&in);
	}
	gst_buffer_copy_into(copy, buf, GST_BUFFER_COPY_FLAGS | GST_BUFFER_COPY_TIMESTAMPS, 0, -1);
	gst_buffer_unref(buf);
	if (!ok)
		gst_clear_buffer(&copy);
	return copy;
}

static GstFlowReturn gst_dmabroker_src_create(GstPushSrc *psrc, GstBuffer **ret)
{
	GstDmabrokerSrc *src = GST_DMABROKER_SRC(psrc);
	struct pending_frame *p;
	GstClockTime base_time;
	GstBuffer *buf;
	int r;

	g_mutex_lock(&src->lock);
	while (g_queue_is_empty(&src->frames) && !src->ended && !src->unlocked)
		g_cond_wait(&src->cond, &src->lock);
	if (src->unlocked) {
		g_mutex_unlock(&src->lock);
		return GST_FLOW_FLUSHING;
	}
	p = g_queue_pop_head(&src->frames);
	if (!p) {
		GST_INFO_OBJECT(src, "end of stream: %s", src->end_reason);
		g_mutex_unlock(&src->lock);
		return GST_FLOW_EOS;
	}
	g_mutex_unlock(&src->lock);

	if (p->flags & DMABROKER_FRAME_END_OF_STREAM) {
		GST_INFO_OBJECT(src, "the producer ended the stream");
		if (p->index != DMABROKER_FRAME_NO_BUFFER)
			release_frame(src->join, p->index);
		pending_frame_free(p);
		return GST_FLOW_EOS;
	}
	if (p->fence >= 0) {
		r = dmabroker_fence_wait(p->fence, FENCE_TIMEOUT_US);
		if (r < 0)
			GST_WARNING_OBJECT(src, "the acquire fence of buffer %u: %s", p->index,
					   g_strerror(-r));
	}
	buf = wrap_frame(src, p);
	if (!buf) {
		pending_frame_free(p);
		GST_ELEMENT_ERROR(src, RESOURCE, READ, ("Cannot wrap the stream's buffer"), (NULL));
		return GST_FLOW_ERROR;
	}
	base_time = gst_element_get_base_time(GST_ELEMENT(src));
	if (p->timestamp_ns && p->timestamp_ns >= base_time)
		GST_BUFFER_PTS(buf) = p->timestamp_ns - base_time;
	if (p->has_meta) {
		GST_BUFFER_OFFSET(buf) = p->meta.offset;
		GST_BUFFER_OFFSET_END(buf) = p->meta.offset_end;
		GST_BUFFER_DURATION(buf) = p->meta.duration;
	}
	if (p->flags & DMABROKER_FRAME_DISCONTINUITY)
		GST_BUFFER_FLAG_SET(buf, GST_BUFFER_FLAG_DISCONT);
	pending_frame_free(p);
	if (src->copy) {
		buf = copy_frame(src, buf);
		if (!buf) {
			GST_ELEMENT_ERROR(src, STREAM, FAILED, ("Cannot copy the frame"), (NULL));
			return GST_FLOW_ERROR;
		}
	}
	*ret = buf;
	return GST_FLOW_OK;
}

static gboolean gst_dmabroker_src_unlock(GstBaseSrc *bsrc)
{
	GstDmabrokerSrc *src = GST_DMABROKER_SRC(bsrc);

	g_mutex_lock(&src->lock);
	src->unlocked = TRUE;
	g_cond_broadcast(&src->cond);
	g_mutex_unlock(&src->lock);
	return TRUE;
}

static gboolean gst_dmabroker_src_unlock_stop(GstBaseSrc *bsrc)
{
	GstDmabrokerSrc *src = GST_DMABROKER_SRC(bsrc);

	g_mutex_lock(&src->lock);
	src->unlocked = FALSE;
	g_mutex_unlock(&src->lock);
	return TRUE;
}

static void gst_dmabroker_src_set_property(GObject *object, guint prop_id, const GValue *value,
					   GParamSpec *pspec)
{
	GstDmabrokerSrc *src = GST_DMABROKER_SRC(object);

	GST_OBJECT_LOCK(src);
	switch (prop_id) {
	case PROP_STREAM_NAME:
		g_free(src->stream_name);
		src->stream_name = g_value_dup_string(value);
		break;
	case PROP_TOKEN:
		g_free(src->token);
		src->token = g_value_dup_string(value);
		break;
	case PROP_MAX_HELD:
		src->max_held = g_value_get_uint(value);
		break;
	case PROP_REQUIRED:
		src->required = g_value_get_boolean(value);
		break;
	default:
		G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
		break;
	}
	GST_OBJECT_UNLOCK(src);
}

static void gst_dmabroker_src_get_property(GObject *object, guint prop_id, GValue *value,
					   GParamSpec *pspec)
{
	GstDmabrokerSrc *src = GST_DMABROKER_SRC(object);

	GST_OBJECT_LOCK(src);
	switch (prop_id) {
	case PROP_STREAM_NAME:
		g_value_set_string(value, src->stream_name);
		break;
	case PROP_TOKEN:
		g_value_set_string(value, src->token);
		break;
	case PROP_MAX_HELD:
		g_value_set_uint(value, src->max_held);
		break;
	case PROP_REQUIRED:
		g_value_set_boolean(value, src->required);
		break;
	default:
		G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
		break;
	}
	GST_OBJECT_UNLOCK(src);
}

static void gst_dmabroker_src_finalize(GObject *object)
{
	GstDmabrokerSrc *src = GST_DMABROKER_SRC(object);

	g_free(src->stream_name);
	g_free(src->token);
	g_free(src->end_reason);
	g_clear_object(&src->allocator);
	g_mutex_clear(&src->lock);
	g_cond_clear(&src->cond);
	G_OBJECT_CLASS(parent_class)->finalize(object);
}

static void gst_dmabroker_src_class_init(GstDmabrokerSrcClass *klass)
{
	GObjectClass *gobject_class = G_OBJECT_CLASS(klass);
	GstElementClass *element_class = GST_ELEMENT_CLASS(klass);
	GstBaseSrcClass *basesrc_class = GST_BASE_SRC_CLASS(klass);
	GstPushSrcClass *pushsrc_class = GST_PUSH_SRC_CLASS(klass);
	const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY;

	gobject_class->set_property = gst_dmabroker_src_set_property;
	gobject_class->get_property = gst_dmabroker_src_get_property;
	gobject_class->finalize = gst_dmabroker_src_finalize;

	g_object_class_install_property(
		gobject_class, PROP_STREAM_NAME,
		g_param_spec_string("stream-name", "Stream name",
				    "The stream to join by name: one whose producer has this "
				    "process's uid (ignored when a token is given)",
				    "gst", rw));
	g_object_class_install_property(
		gobject_class, PROP_TOKEN,
		g_param_spec_string("token", "Token",
				    "A single-use stream token (32 hex characters, as "
				    "dmabrokersink's \"dmabrokersink-token\" message gives it) to "
				    "join a stream of any uid",
				    NULL, rw));
	g_object_class_install_property(
		gobject_class, PROP_MAX_HELD,
		g_param_spec_uint(
			"max-held", "Frames held",
			"Frames this consumer holds at once in a \"latest\" stream before "
			"it is skipped: downstream keeps one (a sink's last frame) while the "
			"next is on its way",
			1, 256, DEFAULT_MAX_HELD, rw));
	g_object_class_install_property(
		gobject_class, PROP_REQUIRED,
		g_param_spec_boolean("required", "Required",
				     "The stream ends when this consumer fails (else it goes on "
				     "without it)",
				     FALSE, rw));

	gst_element_class_set_static_metadata(
		element_class, "dmabroker stream source", "Source/Video",
		"Consumes a dmabrokerd stream: each frame is the broker's dma-buf, pushed "
		"without a copy",
		"dmabroker maintainers");
	gst_element_class_add_static_pad_template(element_class, &src_template);

	basesrc_class->start = gst_dmabroker_src_start;
	basesrc_class->stop = gst_dmabroker_src_stop;
	basesrc_class->get_caps = gst_dmabroker_src_get_caps;
	basesrc_class->decide_allocation = gst_dmabroker_src_decide_allocation;
	basesrc_class->unlock = gst_dmabroker_src_unlock;
	basesrc_class->unlock_stop = gst_dmabroker_src_unlock_stop;
	pushsrc_class->create = gst_dmabroker_src_create;

	GST_DEBUG_CATEGORY_INIT(gst_dmabroker_src_debug, "dmabrokersrc", 0,
				"dmabroker stream source");
}

static void gst_dmabroker_src_init(GstDmabrokerSrc *src)
{
	src->stream_name = g_strdup("gst");
	src->max_held = DEFAULT_MAX_HELD;
	src->allocator = gst_dmabuf_allocator_new();
	g_mutex_init(&src->lock);
	g_cond_init(&src->cond);
	g_queue_init(&src->frames);
	gst_base_src_set_live(GST_BASE_SRC(src), TRUE);
	gst_base_src_set_format(GST_BASE_SRC(src), GST_FORMAT_TIME);
}
