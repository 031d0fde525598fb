/* SPDX-License-Identifier: MIT */
#ifndef GST_DMABROKER_POOL_H
#define GST_DMABROKER_POOL_H

#include <gst/gst.h>
#include <gst/video/video.h>
#include <gst/video/gstvideopool.h>

#include "gstdmabrokerconn.h"

G_BEGIN_DECLS

#define GST_TYPE_DMABROKER_BUFFER_POOL (gst_dmabroker_buffer_pool_get_type())
G_DECLARE_FINAL_TYPE(GstDmabrokerBufferPool, gst_dmabroker_buffer_pool, GST, DMABROKER_BUFFER_POOL,
		     GstVideoBufferPool)

/* What the pool adds to the constraints a configuration gives, and how its stream works. */
struct gst_dmabroker_pool_params {
	const char *name; /* the collection's and the stream's name (NULL: unnamed stream) */
	const char *device; /* a device the connection registered, or NULL */
	gboolean contiguous;
	guint64 max_segment_size;
	guint dma_address_bits;
	enum dmabroker_stream_mode mode;
	guint consumer_frames; /* buffers the consumers may hold besides the producer's */
	guint tokens; /* single-use stream tokens to announce once the stream exists */
	gboolean cpu_only; /* no device imports the buffers, so they need not be dma-bufs (a
			    * CPU-only producer; dmabrokersink never sets it) */
};

/*
 * A pool whose buffers are a dmabrokerd collection's, and the producer's end of a stream on
 * it: set_config negotiates the collection (a count over the broker's limit is answered with
 * a corrected configuration; any other refusal is posted as an error of owner), activation
 * creates the stream. Buffers are handed out in the order the stream
 * frees them; each is one dma-buf memory (GstDmaBufAllocator, the fd stays the library's)
 * with a GstVideoMeta of the negotiated layout.
 */
GstBufferPool *gst_dmabroker_buffer_pool_new(GstElement *owner, struct gst_dmabroker_conn *conn,
					     const struct gst_dmabroker_pool_params *params);

/* The collection index of buf if it is this pool's own buffer, as the pool made it (and the
 * stream let the producer have it); -1 otherwise. */
gint gst_dmabroker_buffer_pool_get_index(GstDmabrokerBufferPool *pool, GstBuffer *buf);

/* Queues frame index of buf (a buffer of the pool: see get_index) to the consumers; the
 * pool holds a reference on buf until the stream gives the index back. */
GstFlowReturn gst_dmabroker_buffer_pool_queue(GstDmabrokerBufferPool *pool, GstBuffer *buf,
					      guint index, guint64 timestamp_ns, guint32 flags,
					      const void *meta, guint meta_size);

/* Sends the end-of-stream frame; then waits at most timeout_us for the consumers to give
 * every buffer back (FALSE if they did not, or the pool was flushed). */
gboolean gst_dmabroker_buffer_pool_drain(GstDmabrokerBufferPool *pool, gint64 timeout_us);

/* Ends the stream for its consumers (reason may be NULL) and drops the buffers they held. */
void gst_dmabroker_buffer_pool_end_stream(GstDmabrokerBufferPool *pool, const char *reason);

/* Stops (TRUE) or lets again (FALSE) a blocking acquire or drain wait. */
void gst_dmabroker_buffer_pool_set_unlocked(GstDmabrokerBufferPool *pool, gboolean unlocked);

/* Whether the pool has a live stream. */
gboolean gst_dmabroker_buffer_pool_has_stream(GstDmabrokerBufferPool *pool);

/* The buffer's mapping bracket (DMA_BUF_IOCTL_SYNC) for a CPU copy into it. */
void gst_dmabroker_buffer_pool_cpu_access(GstDmabrokerBufferPool *pool, guint index,
					  gboolean begin);

G_END_DECLS

#endif /* GST_DMABROKER_POOL_H */
