/* SPDX-License-Identifier: MIT */
#ifndef GST_DMABROKER_SRC_H
#define GST_DMABROKER_SRC_H

#include <gst/gst.h>
#include <gst/base/gstpushsrc.h>

G_BEGIN_DECLS

#define GST_TYPE_DMABROKER_SRC (gst_dmabroker_src_get_type())
G_DECLARE_FINAL_TYPE(GstDmabrokerSrc, gst_dmabroker_src, GST, DMABROKER_SRC, GstPushSrc)

GST_ELEMENT_REGISTER_DECLARE(dmabrokersrc);

G_END_DECLS

#endif /* GST_DMABROKER_SRC_H */
