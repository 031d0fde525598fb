// SPDX-License-Identifier: MIT
/*
 * The dmabroker GStreamer plugin: dmabrokersink (a stream's producer, with a buffer pool
 * backed by a broker collection) and dmabrokersrc (a stream's consumer). docs/gstreamer.md.
 */
#include <gst/gst.h>

#include "gstdmabrokerconn.h"
#include "gstdmabrokersink.h"
#include "gstdmabrokersrc.h"

GST_DEBUG_CATEGORY(gst_dmabroker_debug);

static gboolean plugin_init(GstPlugin *plugin)
{
	gboolean ok = FALSE;

	GST_DEBUG_CATEGORY_INIT(
		gst_dmabroker_debug, "dmabroker", 0,
		"dmabroker: the connection to dmabrokerd and libdmabroker's messages");
	ok |= GST_ELEMENT_REGISTER(dmabrokersink, plugin);
	ok |= GST_ELEMENT_REGISTER(dmabrokersrc, plugin);
	return ok;
}

GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, dmabroker,
		  "Streams of dma-bufs brokered by dmabrokerd", plugin_init, VERSION, GST_LICENSE,
		  GST_PACKAGE_NAME, GST_PACKAGE_ORIGIN)
