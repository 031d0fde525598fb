// SPDX-License-Identifier: MIT
/*
 * GstDmabrokerBufferPool: a GstVideoBufferPool whose buffers are a dmabrokerd collection's.
 *
 * The configuration (caps, size, counts, GstVideoAlignment, the video-meta option) becomes the
 * pool's constraints as a collection participant, negotiated in set_config. A count over the
 * daemon's MaxBuffersPerCollection comes back as a corrected configuration (the counts the
 * broker can give), a size the broker rounded up as the configuration's size; any other
 * refusal is an error of the element that owns the pool. Activation creates the stream
 * whose producer the pool is: which buffer is free is the stream's to say (a buffer the
 * consumers hold is not), so acquire takes the index dmabroker_stream_get_free() gives.
 *
 * Each index is in one of these states, under the pool's lock:
 *   out      the GstBuffer is handed out (acquired, not yet back in release_buffer)
 *   taken    the stream gave the index to the producer and it was not queued since
 *   queued   queued to the consumers; the pool holds a reference (held) until it is returned
 * A buffer that comes back taken but not queued (upstream dropped it) is a spare: acquire
 * hands it out again before asking the stream.
 */
#include "gstdmabrokerpool.h"
#include "gstdmabrokerv4l2.h"

#include <errno.h>
#include <string.h>
#include <gst/allocators/gstdmabuf.h>
#include <gst/video/gstvideometa.h>

GST_DEBUG_CATEGORY_STATIC(gst_dmabroker_pool_debug);
#define GST_CAT_DEFAULT gst_dmabroker_pool_debug

struct slot {
	GstBuffer *buffer; /* owned while home (not out); the pool's wrapping of the index */
	GstMemory *memory; /* borrowed from buffer: how a buffer that kept its memory is known */
	GstBuffer *held; /* a reference while queued */
	gboolean out, taken, queued;
};

struct _GstDmabrokerBufferPool {
	GstVideoBufferPool parent;

	GWeakRef owner; /* the element errors and messages are posted on */
	struct gst_dmabroker_conn *conn; /* owned reference */
	struct gst_dmabroker_pool_params params;
	char *name, *device; /* owned copies behind params.name and params.device */
	GstAllocator *allocator; /* GstDmaBufAllocator */

	/* Set by set_config. */
	GstVideoInfo info;
	GstCaps *caps;
	struct dmabroker_collection *col; /* owned, with the conn locked */
	GstStructure *negotiated; /* the configuration col was negotiated for */
	char *refusal; /* the broker's last refusal, posted once */

	/* Under lock. */
	GMutex lock;
	GCond cond;
	guint64 generation; /* moves whenever an index may have become free */
	gboolean flushing, unlocked, ended;
	struct dmabroker_stream *stream; /* owned; calls on it with the conn locked */
	struct slot *slots;
	guint n_slots;
};

#define gst_dmabroker_buffer_pool_parent_class parent_class
G_DEFINE_TYPE(GstDmabrokerBufferPool, gst_dmabroker_buffer_pool, GST_TYPE_VIDEO_BUFFER_POOL);

static GQuark index_quark(void)
{
	static GQuark quark;

	if (!quark)
		quark = g_quark_from_static_string("GstDmabrokerBufferPoolIndex");
	return quark;
}

static const gchar **pool_get_options(GstBufferPool *bpool)
{
	static const gchar *options[] = {GST_BUFFER_POOL_OPTION_VIDEO_META,
					 GST_BUFFER_POOL_OPTION_VIDEO_ALIGNMENT, NULL};

	return options;
}

static void post_refusal(GstDmabrokerBufferPool *pool, const char *what, const char *reason)
{
	GstElement *owner = g_weak_ref_get(&pool->owner);

	GST_ERROR_OBJECT(pool, "%s: %s", what, reason);
	if (pool->refusal && g_str_equal(pool->refusal, reason)) {
		/* Said once already: the caller retries the same configuration. */
		g_clear_object(&owner);
		return;
	}
	g_free(pool->refusal);
	pool->refusal = g_strdup(reason);
	if (owner) {
		GST_ELEMENT_ERROR(owner, RESOURCE, SETTINGS, ("%s: %s", what, reason),
				  ("the broker's answer to the buffer pool's constraints"));
		gst_object_unref(owner);
	}
}

static void leave_collection(GstDmabrokerBufferPool *pool)
{
	gst_dmabroker_conn_lock(pool->conn);
	if (pool->col)
		dmabroker_collection_leave(pool->col);
	pool->col = NULL;
	gst_dmabroker_conn_unlock(pool->conn);
	g_clear_pointer(&pool->negotiated, gst_structure_free);
}

/*
 * The configuration as constraints. Without GstVideoMeta the consumer of the buffers
 * (upstream, writing them) assumes GStreamer's default layout: the strides are then exact.
 */
static void config_to_constraints(GstDmabrokerBufferPool *pool, GstStructure *config,
				  const GstVideoInfo *info, guint size, guint min, guint max,
				  struct dmabroker_constraints *c, uint32_t *fourcc,
				  uint64_t *modifier)
{
	gboolean video_meta =
		gst_buffer_pool_config_has_option(config, GST_BUFFER_POOL_OPTION_VIDEO_META);
	GstVideoAlignment align;
	GstVideoInfo ainfo = *info;
	guint stride_align = 0;
	guint32 stride, size_image;

	gst_video_alignment_reset(&align);
	if (gst_buffer_pool_config_has_option(config, GST_BUFFER_POOL_OPTION_VIDEO_ALIGNMENT))
		gst_buffer_pool_config_get_video_alignment(config, &align);
	gst_video_info_align(&ainfo, &align);
	for (guint i = 0; i < GST_VIDEO_INFO_N_PLANES(info); i++)
		stride_align |= align.stride_align[i];

	*fourcc = gst_dmabroker_fourcc_from_format(GST_VIDEO_INFO_FORMAT(info));
	*modifier = 0; /* DRM_FORMAT_MOD_LINEAR */
	*c = (struct dmabroker_constraints){
		.device = pool->params.device,
		/* Upstream holds what it asks for at once (v4l2: its driver queue); the
		 * consumers' frames come on top, within upstream's maximum. Consumers join
		 * late and camp on the rest. */
		.min_buffers_for_camping = min,
		.min_buffers = max ? MIN(min + pool->params.consumer_frames, max)
				   : min + pool->params.consumer_frames,
		.max_buffers = max,
		.min_size = MAX((guint64)size, (guint64)GST_VIDEO_INFO_SIZE(&ainfo)),
		.fourccs = fourcc,
		.n_fourccs = 1,
		.modifiers = modifier,
		.n_modifiers = 1,
		.width = (uint32_t)GST_VIDEO_INFO_WIDTH(info),
		.height = (uint32_t)GST_VIDEO_INFO_HEIGHT(info),
		/* GstVideoAlignment's stride_align is a mask: align - 1. */
		.stride_divisor = stride_align + 1,
		.contiguous = pool->params.contiguous,
		.max_segment_size = pool->params.max_segment_size,
		.dma_address_bits = pool->params.dma_address_bits,
		.device_import = !pool->params.cpu_only,
		.cpu_read = TRUE,
		.cpu_write = TRUE,
	};
	for (guint i = 0; i < GST_VIDEO_INFO_N_PLANES(info) && i < DMABROKER_MAX_PLANES; i++) {
		c->min_strides[i] = (uint32_t)GST_VIDEO_INFO_PLANE_STRIDE(&ainfo, i);
		if (!video_meta)
			c->max_strides[i] = c->min_strides[i];
	}
	/* A V4L2 capture device writes rows of its own bytesperline into what it imports: a
	 * one-plane frame's stride is the device's, exactly. */
	if (pool->params.device && GST_VIDEO_INFO_N_PLANES(info) == 1 &&
	    gst_dmabroker_v4l2_layout(pool->params.device, *fourcc, c->width, c->height, &stride,
				      &size_image) &&
	    stride >= c->min_strides[0] && (!c->max_strides[0] || stride <= c->max_strides[0])) {
		c->min_strides[0] = c->max_strides[0] = stride;
		c->min_size = MAX(c->min_size, (guint64)size_image);
	}
}

/* Whether the allocated layout is GStreamer's default one for info (what a producer without
 * GstVideoMeta writes). */
static gboolean layout_is_default(struct dmabroker_collection *col, const GstVideoInfo *info)
{
	struct dmabroker_buffer *b = dmabroker_collection_get_buffer(col, 0);

	for (guint i = 0; i < GST_VIDEO_INFO_N_PLANES(info); i++)
		if (dmabroker_buffer_get_stride(b, i) !=
			    (uint32_t)GST_VIDEO_INFO_PLANE_STRIDE(info, i) ||
		    dmabroker_buffer_get_offset(b, i) !=
			    (uint32_t)GST_VIDEO_INFO_PLANE_OFFSET(info, i))
			return FALSE;
	return TRUE;
}

/* Creates, constrains and waits for the collection; the broker's reason on failure. */
static int negotiate(GstDmabrokerBufferPool *pool, const struct dmabroker_constraints *c,
		     char **ret_reason)
{
	struct dmabroker *ctx = gst_dmabroker_conn_get_ctx(pool->conn);
	struct dmabroker_collection *col = NULL;
	int r;

	gst_dmabroker_conn_lock(pool->conn);
	r = dmabroker_collection_create(ctx, pool->params.name, 1, &col);
	if (r >= 0)
		r = dmabroker_collection_set_constraints(col, c, sizeof(*c));
	if (r >= 0)
		r = dmabroker_collection_wait(col);
	if (r < 0) {
		*ret_reason = g_strdup_printf("%s (%s)", dmabroker_last_error(ctx), g_strerror(-r));
		dmabroker_collection_leave(col);
	} else {
		pool->col = col;
	}
	gst_dmabroker_conn_unlock(pool->conn);
	return r;
}

/* The daemon's MaxBuffersPerCollection as its QuotaExceeded refusal of a collection's count
 * states it ("... over MaxBuffersPerCollection (32)"); 0 for any other refusal. */
static guint refused_count_limit(const char *reason)
{
	static const char key[] = "over MaxBuffersPerCollection (";
	const char *p = strstr(reason, key);
	guint64 v;
	char *end;

	if (!p || !strstr(reason, "QuotaExceeded"))
		return 0;
	v = g_ascii_strtoull(p + sizeof(key) - 1, &end, 10);
	return *end == ')' && v > 0 && v <= G_MAXUINT ? (guint)v : 0;
}

/*
 * The counts the broker can give under its limit. The consumers' frames come on top of
 * upstream's minimum within its maximum (config_to_constraints), so a maximum of the limit is
 * enough while the minimum fits: the minimum stays, and GStreamer's callers accept the answer
 * (gst_buffer_pool_config_validate_params() wants the minimum they asked, or more). A minimum
 * over the limit cannot be met: the answer is the limit less the consumers' frames, which
 * such a caller refuses (it falls back to another pool) and one that can do with fewer sets.
 */
static void correct_counts(GstDmabrokerBufferPool *pool, guint limit, guint min, guint max,
			   guint *ret_min, guint *ret_max)
{
	guint frames = pool->params.consumer_frames;

	*ret_max = max ? MIN(max, limit) : limit;
	if (min <= *ret_max)
		*ret_min = min;
	else
		*ret_min = MIN(*ret_max, limit > frames ? limit - frames : limit);
}

static gboolean pool_set_config(GstBufferPool *bpool, GstStructure *config)
{
	GstDmabrokerBufferPool *pool = GST_DMABROKER_BUFFER_POOL(bpool);
	const struct dmabroker_collection_info *out;
	struct dmabroker_constraints c;
	GstCaps *caps = NULL;
	GstVideoInfo info;
	guint size, min, max, count;
	uint32_t fourcc;
	uint64_t modifier;
	char *reason = NULL;
	gboolean fits;
	guint limit;

	if (!gst_buffer_pool_config_get_params(config, &caps, &size, &min, &max) || !caps ||
	    !gst_video_info_from_caps(&info, caps)) {
		GST_WARNING_OBJECT(pool, "a configuration without video caps: %" GST_PTR_FORMAT,
				   config);
		return FALSE;
	}
	if (!gst_dmabroker_fourcc_from_format(GST_VIDEO_INFO_FORMAT(&info))) {
		GST_WARNING_OBJECT(pool, "no DRM fourcc for %s",
				   gst_video_format_to_string(GST_VIDEO_INFO_FORMAT(&info)));
		return FALSE;
	}
	config_to_constraints(pool, config, &info, size, min, max, &c, &fourcc, &modifier);
	GST_DEBUG_OBJECT(pool,
			 "constraints: %ux%u %" GST_FOURCC_FORMAT " size >= %" G_GUINT64_FORMAT
			 " buffers %u..%u stride >= %u (divisor %u%s) contiguous %d segment "
			 "%" G_GUINT64_FORMAT,
			 c.width, c.height, GST_FOURCC_ARGS(fourcc), c.min_size, c.min_buffers, max,
			 c.min_strides[0], c.stride_divisor, c.max_strides[0] ? ", exact" : "",
			 c.contiguous, c.max_segment_size);

	if (pool->col && pool->negotiated && gst_structure_is_equal(pool->negotiated, config)) {
		/* The same configuration again (a caller setting it twice): the same answer. */
		GST_DEBUG_OBJECT(pool, "the collection negotiated for this configuration stays");
	} else {
		/* A new configuration: the old collection goes, its buffers with it. */
		leave_collection(pool);
		g_clear_pointer(&pool->negotiated, gst_structure_free);
		if (negotiate(pool, &c, &reason) < 0) {
			limit = refused_count_limit(reason);
			if (limit) {
				guint cmin, cmax;

				/* Not an error: GStreamer's caller validates the corrected
				 * configuration and sets it again (or fails itself). */
				correct_counts(pool, limit, min, max, &cmin, &cmax);
				GST_INFO_OBJECT(pool,
						"asked %u..%u buffers (%u with the consumers'): the "
						"broker gives at most %u; answering %u..%u: %s",
						min, max, c.min_buffers, limit, cmin, cmax, reason);
				gst_buffer_pool_config_set_params(config, caps, size, cmin, cmax);
				g_free(reason);
				return FALSE;
			}
			post_refusal(pool, "dmabrokerd refused the buffers", reason);
			g_free(reason);
			return FALSE;
		}
		pool->negotiated = gst_structure_copy(config);
	}
	g_clear_pointer(&pool->refusal, g_free);
	gst_dmabroker_conn_lock(pool->conn);
	out = dmabroker_collection_get_info(pool->col);
	count = out->buffer_count;
	GST_INFO_OBJECT(
		pool, "collection %s: %u buffers of %" G_GUINT64_FORMAT " bytes, %s, stride %u%s%s",
		dmabroker_collection_get_path(pool->col), count, out->size, out->backend,
		dmabroker_buffer_get_stride(dmabroker_collection_get_buffer(pool->col, 0), 0),
		out->note[0] ? ": " : "", out->note);
	fits = layout_is_default(pool->col, &info) ||
	       gst_buffer_pool_config_has_option(config, GST_BUFFER_POOL_OPTION_VIDEO_META);
	gst_dmabroker_conn_unlock(pool->conn);
	if (!fits) {
		leave_collection(pool);
		post_refusal(pool, "dmabrokerd laid the buffers out differently",
			     "the producer writes GStreamer's default layout without GstVideoMeta");
		return FALSE;
	}

	gst_caps_replace(&pool->caps, caps);
	pool->info = info;
	/* The broker's count is the constraints' minimum (never below min, never above max: a
	 * count over its limit was answered above) and its size at least the one asked. A size
	 * it rounded up is accepted as GstVideoBufferPool accepts its own aligned size: TRUE,
	 * the configuration (which the pool keeps, and get_config gives) saying the real size;
	 * gst_buffer_pool_config_validate_params() accepts a larger size. */
	if (out->size != size)
		GST_INFO_OBJECT(pool, "asked %u bytes: the broker's are %" G_GUINT64_FORMAT, size,
				out->size);
	gst_buffer_pool_config_set_params(config, caps, (guint)out->size, min, max);
	return GST_BUFFER_POOL_CLASS(parent_class)->set_config(bpool, config);
}

/* Wraps index i of the collection: one dma-buf memory and the video meta of its layout. */
static GstBuffer *wrap_buffer(GstDmabrokerBufferPool *pool, guint i)
{
	struct dmabroker_buffer *b = dmabroker_collection_get_buffer(pool->col, i);
	gsize offsets[GST_VIDEO_MAX_PLANES] = {0};
	gint strides[GST_VIDEO_MAX_PLANES] = {0};
	guint n_planes = GST_VIDEO_INFO_N_PLANES(&pool->info);
	GstVideoMeta *vmeta;
	GstMemory *mem;
	GstBuffer *buf;

	mem = gst_dmabuf_allocator_alloc_with_flags(pool->allocator, dmabroker_buffer_get_fd(b),
						    (gsize)dmabroker_buffer_get_size(b),
						    GST_FD_MEMORY_FLAG_DONT_CLOSE);
	if (!mem)
		return NULL;
	buf = gst_buffer_new();
	gst_buffer_append_memory(buf, mem);
	for (guint p = 0; p < n_planes; p++) {
		offsets[p] = dmabroker_buffer_get_offset(b, p);
		strides[p] = (gint)dmabroker_buffer_get_stride(b, p);
	}
	vmeta = gst_buffer_add_video_meta_full(
		buf, GST_VIDEO_FRAME_FLAG_NONE, GST_VIDEO_INFO_FORMAT(&pool->info),
		GST_VIDEO_INFO_WIDTH(&pool->info), GST_VIDEO_INFO_HEIGHT(&pool->info), n_planes,
		offsets, strides);
	GST_META_FLAG_SET(vmeta, GST_META_FLAG_POOLED);
	GST_META_FLAG_SET(vmeta, GST_META_FLAG_LOCKED);
	gst_mini_object_set_qdata(GST_MINI_OBJECT(buf), index_quark(), GUINT_TO_POINTER(i + 1),
				  NULL);
	/* As the pool made it: a buffer that comes back with this flag had its memory changed. */
	GST_BUFFER_FLAG_UNSET(buf, GST_BUFFER_FLAG_TAG_MEMORY);
	pool->slots[i].buffer = buf;
	pool->slots[i].memory = mem;
	return buf;
}

/* Stream callbacks: from the connection's dispatch thread, the conn locked. */
static void on_buffer_returned(struct dmabroker_stream *s, uint32_t index, int release_fence,
			       void *userdata)
{
	GstDmabrokerBufferPool *pool = userdata;
	GstBuffer *held = NULL;

	g_mutex_lock(&pool->lock);
	if (index < pool->n_slots) {
		held = pool->slots[index].held;
		pool->slots[index].held = NULL;
		pool->slots[index].queued = FALSE;
	}
	pool->generation++;
	g_cond_broadcast(&pool->cond);
	g_mutex_unlock(&pool->lock);
	GST_LOG_OBJECT(pool, "buffer %u is back", index);
	/* Back into release_buffer once nobody else holds it. */
	if (held)
		gst_buffer_unref(held);
}

static void on_ended(struct dmabroker_stream *s, const char *reason, void *userdata)
{
	GstDmabrokerBufferPool *pool = userdata;

	GST_WARNING_OBJECT(pool, "the stream ended: %s", reason);
	g_mutex_lock(&pool->lock);
	pool->ended = TRUE;
	g_cond_broadcast(&pool->cond);
	g_mutex_unlock(&pool->lock);
}

static void on_consumer_joined(struct dmabroker_stream *s, uint32_t consumer, void *userdata)
{
	GstDmabrokerBufferPool *pool = userdata;

	GST_INFO_OBJECT(pool, "consumer %u joined (%u linked)", consumer,
			dmabroker_stream_get_consumer_count(s));
}

static void on_consumer_left(struct dmabroker_stream *s, uint32_t consumer, const char *reason,
			     void *userdata)
{
	GstDmabrokerBufferPool *pool = userdata;

	GST_INFO_OBJECT(pool, "consumer %u left: %s (%u linked)", consumer, reason,
			dmabroker_stream_get_consumer_count(s));
}

static void post_stream_message(GstDmabrokerBufferPool *pool, const char *token)
{
	GstElement *owner = g_weak_ref_get(&pool->owner);
	GstStructure *s;

	if (!owner)
		return;
	if (token)
		s = gst_structure_new("dmabrokersink-token", "token", G_TYPE_STRING, token, NULL);
	else {
		gst_dmabroker_conn_lock(pool->conn);
		s = gst_structure_new("dmabrokersink-stream", "name", G_TYPE_STRING,
				      pool->params.name ? pool->params.name : "", "path",
				      G_TYPE_STRING, dmabroker_stream_get_path(pool->stream),
				      "buffers", G_TYPE_UINT, pool->n_slots, "backend",
				      G_TYPE_STRING,
				      dmabroker_collection_get_info(pool->col)->backend, NULL);
		gst_dmabroker_conn_unlock(pool->conn);
	}
	gst_element_post_message(owner, gst_message_new_element(GST_OBJECT(owner), s));
	gst_object_unref(owner);
}

static gboolean pool_start(GstBufferPool *bpool)
{
	GstDmabrokerBufferPool *pool = GST_DMABROKER_BUFFER_POOL(bpool);
	static const struct dmabroker_stream_handlers handlers = {
		.buffer_returned = on_buffer_returned,
		.ended = on_ended,
		.consumer_joined = on_consumer_joined,
		.consumer_left = on_consumer_left,
	};
	struct dmabroker_stream_options opts = {
		.name = pool->params.name,
		.mode = pool->params.mode,
		.sync = DMABROKER_SYNC_EXPLICIT,
	};
	struct dmabroker *ctx = gst_dmabroker_conn_get_ctx(pool->conn);
	struct dmabroker_stream *stream = NULL;
	GstStructure *config;
	char *reason = NULL;
	guint n;
	int r;

	if (!pool->col) {
		/* Activated again after a stop: the same configuration, negotiated again. */
		struct dmabroker_constraints c;
		guint size, min, max;
		uint32_t fourcc;
		uint64_t modifier;

		config = gst_buffer_pool_get_config(bpool);
		gst_buffer_pool_config_get_params(config, NULL, &size, &min, &max);
		config_to_constraints(pool, config, &pool->info, size, min, max, &c, &fourcc,
				      &modifier);
		gst_structure_free(config);
		if (negotiate(pool, &c, &reason) < 0) {
			post_refusal(pool, "dmabrokerd refused the buffers", reason);
			g_free(reason);
			return FALSE;
		}
	}
	opts.format = (struct dmabroker_stream_format){
		.fourcc = gst_dmabroker_fourcc_from_format(GST_VIDEO_INFO_FORMAT(&pool->info)),
		.width = (uint32_t)GST_VIDEO_INFO_WIDTH(&pool->info),
		.height = (uint32_t)GST_VIDEO_INFO_HEIGHT(&pool->info),
		.framerate_num = (uint32_t)MAX(GST_VIDEO_INFO_FPS_N(&pool->info), 0),
		.framerate_den = (uint32_t)MAX(GST_VIDEO_INFO_FPS_D(&pool->info), 0),
	};
	if (!opts.format.framerate_num)
		opts.format.framerate_den = 0;

	gst_dmabroker_conn_lock(pool->conn);
	n = dmabroker_collection_get_buffer_count(pool->col);
	r = dmabroker_stream_create(pool->col, &opts, sizeof(opts), &handlers, sizeof(handlers),
				    pool, &stream);
	if (r < 0)
		reason = g_strdup_printf("%s (%s)", dmabroker_last_error(ctx), g_strerror(-r));
	gst_dmabroker_conn_unlock(pool->conn);
	if (r < 0) {
		post_refusal(pool, "dmabrokerd refused the stream", reason);
		g_free(reason);
		leave_collection(pool);
		return FALSE;
	}

	gst_dmabroker_conn_lock(pool->conn);
	g_mutex_lock(&pool->lock);
	pool->slots = g_new0(struct slot, n);
	pool->n_slots = n;
	pool->stream = stream;
	pool->ended = FALSE;
	pool->flushing = FALSE;
	for (guint i = 0; i < n && r >= 0; i++) {
		if (!wrap_buffer(pool, i)) {
			GST_ERROR_OBJECT(pool, "cannot wrap buffer %u", i);
			r = -ENOMEM;
		}
	}
	g_mutex_unlock(&pool->lock);
	gst_dmabroker_conn_unlock(pool->conn);
	if (r < 0) {
		gst_dmabroker_buffer_pool_end_stream(pool, "the producer failed");
		return FALSE;
	}
	GST_INFO_OBJECT(pool, "stream %s (%s) on %u buffers", dmabroker_stream_get_path(stream),
			pool->params.name ? pool->params.name : "unnamed", n);
	post_stream_message(pool, NULL);
	for (guint i = 0; i < pool->params.tokens; i++) {
		struct dmabroker_token token;
		char hex[DMABROKER_TOKEN_STRING_SIZE];

		gst_dmabroker_conn_lock(pool->conn);
		r = dmabroker_stream_token(stream, &token);
		if (r < 0)
			reason = g_strdup(dmabroker_last_error(ctx));
		gst_dmabroker_conn_unlock(pool->conn);
		if (r < 0) {
			post_refusal(pool, "dmabrokerd refused a stream token", reason);
			g_free(reason);
			return FALSE;
		}
		dmabroker_token_to_string(&token, hex);
		post_stream_message(pool, hex);
	}
	return TRUE;
}

void gst_dmabroker_buffer_pool_end_stream(GstDmabrokerBufferPool *pool, const char *reason)
{
	struct dmabroker_stream *stream;
	GPtrArray *held = g_ptr_array_new_with_free_func((GDestroyNotify)gst_buffer_unref);

	g_mutex_lock(&pool->lock);
	stream = pool->stream;
	pool->stream = NULL;
	pool->ended = TRUE;
	g_cond_broadcast(&pool->cond);
	g_mutex_unlock(&pool->lock);
	if (!stream) {
		g_ptr_array_unref(held);
		return;
	}
	gst_dmabroker_conn_lock(pool->conn);
	dmabroker_stream_free(stream, reason);
	gst_dmabroker_conn_unlock(pool->conn);
	GST_INFO_OBJECT(pool, "stream ended: %s", reason ? reason : "by the producer");

	/* Nothing is the consumers' any more, nor the stream's to hand out. */
	g_mutex_lock(&pool->lock);
	for (guint i = 0; i < pool->n_slots; i++) {
		if (pool->slots[i].held)
			g_ptr_array_add(held, pool->slots[i].held);
		pool->slots[i].held = NULL;
		pool->slots[i].queued = FALSE;
		pool->slots[i].taken = TRUE;
	}
	pool->generation++;
	g_mutex_unlock(&pool->lock);
	g_ptr_array_unref(held);
}

static gboolean pool_stop(GstBufferPool *bpool)
{
	GstDmabrokerBufferPool *pool = GST_DMABROKER_BUFFER_POOL(bpool);

	gst_dmabroker_buffer_pool_end_stream(pool, "the producer stopped");
	g_mutex_lock(&pool->lock);
	for (guint i = 0; i < pool->n_slots; i++) {
		/* Every buffer is home: stop runs once none is outstanding. */
		if (pool->slots[i].buffer)
			gst_buffer_unref(pool->slots[i].buffer);
	}
	g_clear_pointer(&pool->slots, g_free);
	pool->n_slots = 0;
	g_mutex_unlock(&pool->lock);
	leave_collection(pool);
	return TRUE;
}

static gint find_spare(GstDmabrokerBufferPool *pool)
{
	for (guint i = 0; i < pool->n_slots; i++) {
		struct slot *s = &pool->slots[i];

		if (s->taken && !s->out && !s->queued && s->buffer)
			return (gint)i;
	}
	return -1;
}

static GstFlowReturn pool_acquire_buffer(GstBufferPool *bpool, GstBuffer **ret,
					 GstBufferPoolAcquireParams *params)
{
	GstDmabrokerBufferPool *pool = GST_DMABROKER_BUFFER_POOL(bpool);
	gboolean dontwait = params && (params->flags & GST_BUFFER_POOL_ACQUIRE_FLAG_DONTWAIT);
	GstFlowReturn flow = GST_FLOW_OK;

	g_mutex_lock(&pool->lock);
	for (;;) {
		guint64 generation;
		uint32_t index;
		gint spare;
		int r;

		if (pool->flushing || pool->unlocked) {
			flow = GST_FLOW_FLUSHING;
			break;
		}
		if (!pool->stream) {
			flow = pool->ended ? GST_FLOW_EOS : GST_FLOW_FLUSHING;
			break;
		}
		spare = find_spare(pool);
		if (spare >= 0) {
			pool->slots[spare].out = TRUE;
			*ret = pool->slots[spare].buffer;
			pool->slots[spare].buffer = NULL;
			GST_LOG_OBJECT(pool, "acquired spare buffer %d", spare);
			break;
		}
		generation = pool->generation;
		g_mutex_unlock(&pool->lock);
		gst_dmabroker_conn_lock(pool->conn);
		/* The stream may have ended meanwhile: it is read again under the conn lock,
		 * which end_stream takes to free it. */
		g_mutex_lock(&pool->lock);
		r = pool->stream ? 0 : -EPIPE;
		g_mutex_unlock(&pool->lock);
		if (r == 0)
			r = dmabroker_stream_get_free(pool->stream, &index);
		gst_dmabroker_conn_unlock(pool->conn);
		g_mutex_lock(&pool->lock);
		if (r == 0 && index < pool->n_slots) {
			struct slot *s = &pool->slots[index];

			s->taken = TRUE;
			s->queued = FALSE;
			if (s->out || !s->buffer) {
				/* Still held elsewhere: a spare when it comes back. */
				GST_DEBUG_OBJECT(pool, "buffer %u is free but still in use", index);
				continue;
			}
			s->out = TRUE;
			*ret = s->buffer;
			s->buffer = NULL;
			GST_LOG_OBJECT(pool, "acquired buffer %u", index);
			break;
		}
		if (r == -EAGAIN) {
			if (dontwait) {
				flow = GST_FLOW_EOS;
				break;
			}
			while (generation == pool->generation && !pool->flushing &&
			       !pool->unlocked && pool->stream && !pool->ended)
				g_cond_wait(&pool->cond, &pool->lock);
			if (pool->ended && pool->stream) {
				flow = GST_FLOW_ERROR;
				break;
			}
			continue;
		}
		if (r == -EPIPE) {
			flow = GST_FLOW_EOS;
			break;
		}
		GST_ERROR_OBJECT(pool, "no free buffer: %s", g_strerror(r < 0 ? -r : EINVAL));
		flow = GST_FLOW_ERROR;
		break;
	}
	g_mutex_unlock(&pool->lock);
	return flow;
}

static void pool_release_buffer(GstBufferPool *bpool, GstBuffer *buf)
{
	GstDmabrokerBufferPool *pool = GST_DMABROKER_BUFFER_POOL(bpool);
	guint index =
		GPOINTER_TO_UINT(gst_mini_object_get_qdata(GST_MINI_OBJECT(buf), index_quark())) -
		1;
	gboolean intact;

	g_mutex_lock(&pool->lock);
	if (index >= pool->n_slots || !pool->slots[index].out) {
		g_mutex_unlock(&pool->lock);
		GST_WARNING_OBJECT(pool, "a buffer that is not out came back");
		gst_buffer_unref(buf);
		return;
	}
	/* Whatever was done to it, the slot is the collection's buffer again. */
	intact = !GST_BUFFER_FLAG_IS_SET(buf, GST_BUFFER_FLAG_TAG_MEMORY) &&
		 gst_buffer_n_memory(buf) == 1 &&
		 gst_buffer_peek_memory(buf, 0) == pool->slots[index].memory &&
		 gst_buffer_is_all_memory_writable(buf);
	if (intact) {
		gsize offset, maxsize, size = gst_buffer_get_sizes(buf, &offset, &maxsize);

		if (offset || size != maxsize)
			gst_buffer_resize(buf, -(gssize)offset, (gssize)maxsize);
		pool->slots[index].buffer = buf;
	}
	pool->slots[index].out = FALSE;
	pool->generation++;
	g_cond_broadcast(&pool->cond);
	g_mutex_unlock(&pool->lock);
	if (!intact) {
		GST_DEBUG_OBJECT(pool, "buffer %u came back changed: wrapped again", index);
		gst_buffer_unref(buf);
		gst_dmabroker_conn_lock(pool->conn);
		g_mutex_lock(&pool->lock);
		if (pool->col && !wrap_buffer(pool, index))
			GST_ERROR_OBJECT(pool, "cannot wrap buffer %u again", index);
		g_mutex_unlock(&pool->lock);
		gst_dmabroker_conn_unlock(pool->conn);
	}
}

static void pool_flush_start(GstBufferPool *bpool)
{
	GstDmabrokerBufferPool *pool = GST_DMABROKER_BUFFER_POOL(bpool);

	g_mutex_lock(&pool->lock);
	pool->flushing = TRUE;
	g_cond_broadcast(&pool->cond);
	g_mutex_unlock(&pool->lock);
}

static void pool_flush_stop(GstBufferPool *bpool)
{
	GstDmabrokerBufferPool *pool = GST_DMABROKER_BUFFER_POOL(bpool);

	g_mutex_lock(&pool->lock);
	pool->flushing = FALSE;
	g_mutex_unlock(&pool->lock);
}

gint gst_dmabroker_buffer_pool_get_index(GstDmabrokerBufferPool *pool, GstBuffer *buf)
{
	guint index;
	gint ret = -1;

	if (buf->pool != GST_BUFFER_POOL(pool))
		return -1;
	index = GPOINTER_TO_UINT(gst_mini_object_get_qdata(GST_MINI_OBJECT(buf), index_quark())) -
		1;
	g_mutex_lock(&pool->lock);
	if (index < pool->n_slots && pool->slots[index].out && pool->slots[index].taken &&
	    !pool->slots[index].queued && gst_buffer_n_memory(buf) == 1 &&
	    gst_buffer_peek_memory(buf, 0) == pool->slots[index].memory)
		ret = (gint)index;
	g_mutex_unlock(&pool->lock);
	return ret;
}

GstFlowReturn gst_dmabroker_buffer_pool_queue(GstDmabrokerBufferPool *pool, GstBuffer *buf,
					      guint index, guint64 timestamp_ns, guint32 flags,
					      const void *meta, guint meta_size)
{
	struct dmabroker_frame f = {
		.index = index,
		.flags = flags,
		.timestamp_ns = timestamp_ns,
		.acquire_fence = -1,
	};
	int r;

	if (meta && meta_size && meta_size <= sizeof(f.meta)) {
		f.meta_type = DMABROKER_FRAME_META_OPAQUE;
		f.meta_size = meta_size;
		memcpy(f.meta, meta, meta_size);
	}
	g_mutex_lock(&pool->lock);
	if (index >= pool->n_slots || !pool->stream) {
		g_mutex_unlock(&pool->lock);
		return GST_FLOW_FLUSHING;
	}
	pool->slots[index].taken = FALSE;
	pool->slots[index].queued = TRUE;
	pool->slots[index].held = gst_buffer_ref(buf);
	g_mutex_unlock(&pool->lock);

	gst_dmabroker_conn_lock(pool->conn);
	r = pool->stream ? dmabroker_stream_queue(pool->stream, &f) : -EPIPE;
	gst_dmabroker_conn_unlock(pool->conn);
	if (r < 0) {
		GstBuffer *held;

		g_mutex_lock(&pool->lock);
		held = pool->slots[index].held;
		pool->slots[index].held = NULL;
		pool->slots[index].queued = FALSE;
		pool->slots[index].taken = TRUE;
		g_mutex_unlock(&pool->lock);
		gst_clear_buffer(&held);
		GST_ERROR_OBJECT(pool, "cannot queue frame %u: %s", index, g_strerror(-r));
		return r == -EPIPE ? GST_FLOW_EOS : GST_FLOW_ERROR;
	}
	GST_LOG_OBJECT(pool, "queued buffer %u as frame %" G_GUINT64_FORMAT, index, f.seq);
	return GST_FLOW_OK;
}

gboolean gst_dmabroker_buffer_pool_drain(GstDmabrokerBufferPool *pool, gint64 timeout_us)
{
	struct dmabroker_frame f = {
		.index = DMABROKER_FRAME_NO_BUFFER,
		.flags = DMABROKER_FRAME_END_OF_STREAM,
		.acquire_fence = -1,
	};
	gint64 deadline = g_get_monotonic_time() + timeout_us;
	guint queued = 0;
	int r;

	gst_dmabroker_conn_lock(pool->conn);
	r = pool->stream ? dmabroker_stream_queue(pool->stream, &f) : -EPIPE;
	gst_dmabroker_conn_unlock(pool->conn);
	if (r < 0) {
		GST_WARNING_OBJECT(pool, "cannot send the end of the stream: %s", g_strerror(-r));
		return FALSE;
	}
	g_mutex_lock(&pool->lock);
	for (;;) {
		queued = 0;
		for (guint i = 0; i < pool->n_slots; i++)
			queued += pool->slots[i].queued;
		if (!queued || pool->unlocked || pool->flushing || !pool->stream)
			break;
		if (!g_cond_wait_until(&pool->cond, &pool->lock, deadline))
			break;
	}
	g_mutex_unlock(&pool->lock);
	if (queued)
		GST_WARNING_OBJECT(pool, "%u buffers are still with the consumers", queued);
	else
		GST_INFO_OBJECT(pool, "end of stream: every buffer is back");
	return queued == 0;
}

void gst_dmabroker_buffer_pool_set_unlocked(GstDmabrokerBufferPool *pool, gboolean unlocked)
{
	g_mutex_lock(&pool->lock);
	pool->unlocked = unlocked;
	g_cond_broadcast(&pool->cond);
	g_mutex_unlock(&pool->lock);
}

gboolean gst_dmabroker_buffer_pool_has_stream(GstDmabrokerBufferPool *pool)
{
	gboolean ret;

	g_mutex_lock(&pool->lock);
	ret = pool->stream != NULL;
	g_mutex_unlock(&pool->lock);
	return ret;
}

void gst_dmabroker_buffer_pool_cpu_access(GstDmabrokerBufferPool *pool, guint index, gboolean begin)
{
	struct dmabroker_buffer *b;

	gst_dmabroker_conn_lock(pool->conn);
	b = pool->col ? dmabroker_collection_get_buffer(pool->col, index) : NULL;
	if (b && begin)
		dmabroker_buffer_begin_cpu_access(b, DMABROKER_ACCESS_WRITE);
	else if (b)
		dmabroker_buffer_end_cpu_access(b, DMABROKER_ACCESS_WRITE);
	gst_dmabroker_conn_unlock(pool->conn);
}

static void gst_dmabroker_buffer_pool_finalize(GObject *object)
{
	GstDmabrokerBufferPool *pool = GST_DMABROKER_BUFFER_POOL(object);

	gst_dmabroker_buffer_pool_end_stream(pool, "the producer left");
	leave_collection(pool);
	g_weak_ref_clear(&pool->owner);
	gst_dmabroker_conn_unref(pool->conn);
	gst_clear_caps(&pool->caps);
	g_clear_object(&pool->allocator);
	g_free(pool->slots);
	g_free(pool->refusal);
	if (pool->negotiated)
		gst_structure_free(pool->negotiated);
	g_free(pool->name);
	g_free(pool->device);
	g_mutex_clear(&pool->lock);
	g_cond_clear(&pool->cond);
	G_OBJECT_CLASS(parent_class)->finalize(object);
}

static void gst_dmabroker_buffer_pool_class_init(GstDmabrokerBufferPoolClass *klass)
{
	GObjectClass *gobject_class = G_OBJECT_CLASS(klass);
	GstBufferPoolClass *pool_class = GST_BUFFER_POOL_CLASS(klass);

	gobject_class->finalize = gst_dmabroker_buffer_pool_finalize;
	pool_class->get_options = pool_get_options;
	pool_class->set_config = pool_set_config;
	pool_class->start = pool_start;
	pool_class->stop = pool_stop;
	pool_class->acquire_buffer = pool_acquire_buffer;
	pool_class->release_buffer = pool_release_buffer;
	pool_class->flush_start = pool_flush_start;
	pool_class->flush_stop = pool_flush_stop;
	GST_DEBUG_CATEGORY_INIT(gst_dmabroker_pool_debug, "dmabrokerpool", 0,
				"dmabroker buffer pool");
}

static void gst_dmabroker_buffer_pool_init(GstDmabrokerBufferPool *pool)
{
	g_mutex_init(&pool->lock);
	g_cond_init(&pool->cond);
	pool->allocator = gst_dmabuf_allocator_new();
}

GstBufferPool *gst_dmabroker_buffer_pool_new(GstElement *owner, struct gst_dmabroker_conn *conn,
					     const struct gst_dmabroker_pool_params *params)
{
	GstDmabrokerBufferPool *pool = g_object_new(GST_TYPE_DMABROKER_BUFFER_POOL, NULL);

	gst_object_ref_sink(pool);
	g_weak_ref_init(&pool->owner, owner);
	pool->conn = gst_dmabroker_conn_ref(conn);
	pool->params = *params;
	pool->name = g_strdup(params->name);
	pool->device = g_strdup(params->device);
	pool->params.name = pool->name;
	pool->params.device = pool->device;
	return GST_BUFFER_POOL(pool);
}
