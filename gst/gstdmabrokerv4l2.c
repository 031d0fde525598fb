// SPDX-License-Identifier: MIT
/*
 * What a V4L2 capture device needs of imported buffers, which GStreamer 1.22's allocation
 * query does not carry: asked of the device where it says, declared where it does not.
 */
#include "gstdmabrokerv4l2.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/videodev2.h>

static int xioctl(int fd, unsigned long req, void *arg)
{
	int r;

	do {
		r = ioctl(fd, req, arg);
	} while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

/* vivid's allocator for an instance (its "allocators" module parameter): 1 is dma-contig. */
static gboolean vivid_is_contiguous(guint instance)
{
	char line[128] = "", *p = line;
	FILE *f = fopen("/sys/module/vivid/parameters/allocators", "re");

	if (!f)
		return FALSE;
	if (!fgets(line, sizeof(line), f))
		line[0] = 0;
	fclose(f);
	for (guint i = 0; i < instance && p; i++) {
		p = strchr(p, ',');
		p = p ? p + 1 : NULL;
	}
	return p && atoi(p) == 1;
}

gboolean gst_dmabroker_v4l2_needs(const char *path, struct gst_dmabroker_v4l2_needs *ret,
				  GError **error)
{
	struct v4l2_capability cap = {0};
	guint instance;
	int fd, r;

	*ret = (struct gst_dmabroker_v4l2_needs){0};
	fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_READ_WRITE,
			    "Cannot open the device %s: %s", path, g_strerror(errno));
		return FALSE;
	}
	r = xioctl(fd, VIDIOC_QUERYCAP, &cap);
	close(fd);
	if (r < 0) {
		g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS,
			    "%s is not a V4L2 device: %s", path, g_strerror(-r));
		return FALSE;
	}
	g_strlcpy(ret->driver, (const char *)cap.driver, sizeof(ret->driver));
	g_strlcpy(ret->bus_info, (const char *)cap.bus_info, sizeof(ret->bus_info));
	if (g_str_equal(ret->driver, "vivid") &&
	    sscanf(ret->bus_info, "platform:vivid-%u", &instance) == 1) {
		ret->contiguous = vivid_is_contiguous(instance);
		ret->max_segment_size = 64 * 1024;
		ret->dma_address_bits = 32;
	}
	return TRUE;
}

gboolean gst_dmabroker_v4l2_layout(const char *path, guint32 fourcc, guint width, guint height,
				   guint32 *ret_stride, guint32 *ret_size)
{
	struct v4l2_format fmt = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
	int fd, r;

	fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return FALSE;
	fmt.fmt.pix.width = width;
	fmt.fmt.pix.height = height;
	fmt.fmt.pix.pixelformat = fourcc;
	fmt.fmt.pix.field = V4L2_FIELD_NONE;
	r = xioctl(fd, VIDIOC_TRY_FMT, &fmt);
	close(fd);
	if (r < 0 || fmt.fmt.pix.pixelformat != fourcc || fmt.fmt.pix.width != width ||
	    fmt.fmt.pix.height != height)
		return FALSE;
	*ret_stride = fmt.fmt.pix.bytesperline;
	*ret_size = fmt.fmt.pix.sizeimage;
	return TRUE;
}
