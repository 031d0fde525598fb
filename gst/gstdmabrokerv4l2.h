/* SPDX-License-Identifier: MIT */
#ifndef GST_DMABROKER_V4L2_H
#define GST_DMABROKER_V4L2_H

#include <gst/gst.h>

G_BEGIN_DECLS

/* What a V4L2 capture device needs of the buffers it imports. */
struct gst_dmabroker_v4l2_needs {
	gboolean contiguous;
	guint64 max_segment_size; /* 0: not known */
	guint dma_address_bits; /* 0: not known */
	char driver[32];
	char bus_info[64];
};

/*
 * Asks the device at path what it needs, where it says (the driver, the instance), and
 * declares what its driver sets where it does not (vivid's 64 KiB DMA segment limit and
 * 32-bit DMA mask are not published to userspace), as the project's media example does.
 * FALSE with errno's message in *error when it is no V4L2 device.
 */
gboolean gst_dmabroker_v4l2_needs(const char *path, struct gst_dmabroker_v4l2_needs *ret,
				  GError **error);

/*
 * The layout the device writes a frame of fourcc (a DRM fourcc that is also the V4L2 pixel
 * format: YUYV, UYVY, NV12...) and size in (VIDIOC_TRY_FMT): bytesperline and sizeimage.
 * FALSE when the device does not take that format and size as they are.
 */
gboolean gst_dmabroker_v4l2_layout(const char *path, guint32 fourcc, guint width, guint height,
				   guint32 *ret_stride, guint32 *ret_size);

G_END_DECLS

#endif /* GST_DMABROKER_V4L2_H */
