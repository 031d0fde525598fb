/* SPDX-License-Identifier: MIT */
#ifndef GST_DMABROKER_CONN_H
#define GST_DMABROKER_CONN_H

#include <gst/gst.h>
#include <gst/video/video.h>

#include "dmabroker.h"

G_BEGIN_DECLS

/*
 * One libdmabroker context of an element, shared with the buffer pool it makes: the context is
 * not thread-safe, so every call on it (and on its buffers, collections and streams) is made
 * with the connection locked (gst_dmabroker_conn_lock()). A thread of its own dispatches the
 * context; the stream callbacks run there, with the lock held.
 */
struct gst_dmabroker_conn;

/* Connects (address: NULL for $DMABROKER_BUS_ADDRESS or the system bus) and registers with
 * role, the element's name and devices (NULL-terminated, may be NULL). On failure, NULL with
 * the library's message in *error. */
struct gst_dmabroker_conn *gst_dmabroker_conn_new(const char *role, const char *name,
						  const char *const *devices, GError **error);
struct gst_dmabroker_conn *gst_dmabroker_conn_ref(struct gst_dmabroker_conn *conn);
/* The last unref stops the dispatch thread and disconnects. Accepts NULL. */
void gst_dmabroker_conn_unref(struct gst_dmabroker_conn *conn);

void gst_dmabroker_conn_lock(struct gst_dmabroker_conn *conn);
void gst_dmabroker_conn_unlock(struct gst_dmabroker_conn *conn);
/* The context: use it with the connection locked. */
struct dmabroker *gst_dmabroker_conn_get_ctx(struct gst_dmabroker_conn *conn);
/* The library's message for the last failure (a copy: g_free() it). Locked or not. */
char *gst_dmabroker_conn_last_error(struct gst_dmabroker_conn *conn);

/* DRM fourcc <-> GstVideoFormat for the linear formats the plugin carries; 0 or
 * GST_VIDEO_FORMAT_UNKNOWN for the others. */
uint32_t gst_dmabroker_fourcc_from_format(GstVideoFormat format);
GstVideoFormat gst_dmabroker_format_from_fourcc(uint32_t fourcc);
/* "{ YUY2, UYVY, ... }": the formats of the pad templates. */
#define GST_DMABROKER_VIDEO_FORMATS                                                        \
	"{ YUY2, UYVY, NV12, NV21, NV16, I420, YV12, BGRx, BGRA, RGBx, RGBA, xRGB, ARGB, " \
	"RGB16, GRAY8 }"

GST_DEBUG_CATEGORY_EXTERN(gst_dmabroker_debug);

G_END_DECLS

#endif /* GST_DMABROKER_CONN_H */
