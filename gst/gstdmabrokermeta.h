/* SPDX-License-Identifier: MIT */
#ifndef GST_DMABROKER_META_H
#define GST_DMABROKER_META_H

#include <stdint.h>

/*
 * What dmabrokersink sends in a frame's opaque metadata so that dmabrokersrc gives the buffer
 * back as it was (v4l2src puts the driver's sequence number in the offset). Little-endian on
 * the machine both run on; recognised by its magic and size.
 */
#define GST_DMABROKER_META_MAGIC 0x31545347u /* "GST1" */

struct gst_dmabroker_meta {
	uint32_t magic;
	uint32_t flags; /* GstBufferFlags of the buffer (the frame's own flags aside) */
	uint64_t offset;
	uint64_t offset_end;
	uint64_t duration;
};

#endif /* GST_DMABROKER_META_H */
