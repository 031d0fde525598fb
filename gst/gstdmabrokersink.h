/* SPDX-License-Identifier: MIT */
#ifndef GST_DMABROKER_SINK_H
#define GST_DMABROKER_SINK_H

#include <gst/gst.h>
#include <gst/base/gstbasesink.h>

G_BEGIN_DECLS

#define GST_TYPE_DMABROKER_SINK (gst_dmabroker_sink_get_type())
G_DECLARE_FINAL_TYPE(GstDmabrokerSink, gst_dmabroker_sink, GST, DMABROKER_SINK, GstBaseSink)

GST_ELEMENT_REGISTER_DECLARE(dmabrokersink);

G_END_DECLS

#endif /* GST_DMABROKER_SINK_H */
