// SPDX-License-Identifier: MIT
/*
 * The connection an element keeps with dmabrokerd: one libdmabroker context, a lock around
 * every use of it, and a thread that polls its fd and dispatches, so that stream callbacks
 * (frames, returned buffers, the end) arrive while the streaming threads block elsewhere.
 */
#include "gstdmabrokerconn.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <drm_fourcc.h>

#define GST_CAT_DEFAULT gst_dmabroker_debug

struct gst_dmabroker_conn {
	gint refcount;
	GRecMutex lock;
	struct dmabroker *ctx; /* owned; used with lock held */
	GThread *thread;
	int wake_fd; /* owned: an eventfd that tells the thread to stop */
};

static gpointer dispatch_thread(gpointer data)
{
	struct gst_dmabroker_conn *conn = data;
	struct pollfd fds[2] = {
		{.fd = dmabroker_get_fd(conn->ctx), .events = POLLIN},
		{.fd = conn->wake_fd, .events = POLLIN},
	};

	gboolean dead = FALSE;

	for (;;) {
		uint64_t when = UINT64_MAX;
		int timeout = -1, r;

		gst_dmabroker_conn_lock(conn);
		fds[0].events = (short)dmabroker_get_events(conn->ctx);
		if (!dead && dmabroker_get_timeout(conn->ctx, &when) >= 0 && when != UINT64_MAX) {
			gint64 now = g_get_monotonic_time();

			timeout = (gint64)when <= now
					  ? 0
					  : (int)MIN(((gint64)when - now + 999) / 1000, G_MAXINT);
		}
		gst_dmabroker_conn_unlock(conn);
		r = poll(fds, 2, timeout);
		if (r < 0 && errno != EINTR) {
			GST_ERROR("poll: %s", g_strerror(errno));
			break;
		}
		if (fds[1].revents)
			break;
		if (dead)
			continue;
		gst_dmabroker_conn_lock(conn);
		r = dmabroker_dispatch(conn->ctx);
		gst_dmabroker_conn_unlock(conn);
		if (r == -ECONNRESET) {
			/* Nothing more will come: wait for the stop. */
			GST_WARNING("the connection to dmabrokerd is gone");
			fds[0].fd = -1;
			dead = TRUE;
		}
	}
	return NULL;
}

static void log_handler(enum dmabroker_log_level level, const char *msg, void *userdata)
{
	if (level <= DMABROKER_LOG_ERROR)
		GST_WARNING("libdmabroker: %s", msg);
	else
		GST_DEBUG("libdmabroker: %s", msg);
}

struct gst_dmabroker_conn *gst_dmabroker_conn_new(const char *role, const char *name,
						  const char *const *devices, GError **error)
{
	static gsize log_once;
	struct gst_dmabroker_conn *conn;
	int r;

	if (g_once_init_enter(&log_once)) {
		dmabroker_set_log_handler(log_handler, NULL);
		g_once_init_leave(&log_once, 1);
	}
	conn = g_new0(struct gst_dmabroker_conn, 1);
	conn->refcount = 1;
	conn->wake_fd = -1;
	g_rec_mutex_init(&conn->lock);
	r = dmabroker_connect(&conn->ctx, NULL, 0);
	if (r < 0) {
		g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_READ_WRITE,
			    "cannot connect to dmabrokerd: %s", g_strerror(-r));
		goto fail;
	}
	r = dmabroker_register(conn->ctx, role, false, name, (const char *const *)devices);
	if (r < 0) {
		g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_READ_WRITE,
			    "cannot register with dmabrokerd: %s (%s)", g_strerror(-r),
			    dmabroker_last_error(conn->ctx));
		goto fail;
	}
	conn->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (conn->wake_fd < 0) {
		g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_FAILED, "eventfd: %s",
			    g_strerror(errno));
		goto fail;
	}
	conn->thread = g_thread_new("dmabroker", dispatch_thread, conn);
	GST_DEBUG("registered as %s", dmabroker_client_path(conn->ctx));
	return conn;

fail:
	gst_dmabroker_conn_unref(conn);
	return NULL;
}

struct gst_dmabroker_conn *gst_dmabroker_conn_ref(struct gst_dmabroker_conn *conn)
{
	g_atomic_int_inc(&conn->refcount);
	return conn;
}

void gst_dmabroker_conn_unref(struct gst_dmabroker_conn *conn)
{
	uint64_t one = 1;

	if (!conn || !g_atomic_int_dec_and_test(&conn->refcount))
		return;
	if (conn->thread) {
		if (write(conn->wake_fd, &one, sizeof(one)) < 0)
			GST_ERROR("cannot wake the dispatch thread: %s", g_strerror(errno));
		g_thread_join(conn->thread);
	}
	if (conn->wake_fd >= 0)
		close(conn->wake_fd);
	conn->ctx = dmabroker_disconnect(conn->ctx);
	g_rec_mutex_clear(&conn->lock);
	g_free(conn);
}

void gst_dmabroker_conn_lock(struct gst_dmabroker_conn *conn)
{
	g_rec_mutex_lock(&conn->lock);
}

void gst_dmabroker_conn_unlock(struct gst_dmabroker_conn *conn)
{
	g_rec_mutex_unlock(&conn->lock);
}

struct dmabroker *gst_dmabroker_conn_get_ctx(struct gst_dmabroker_conn *conn)
{
	return conn->ctx;
}

char *gst_dmabroker_conn_last_error(struct gst_dmabroker_conn *conn)
{
	char *msg;

	gst_dmabroker_conn_lock(conn);
	msg = g_strdup(dmabroker_last_error(conn->ctx));
	gst_dmabroker_conn_unlock(conn);
	return msg;
}

static const struct {
	GstVideoFormat format;
	uint32_t fourcc;
} formats[] = {
	{GST_VIDEO_FORMAT_YUY2, DRM_FORMAT_YUYV},     {GST_VIDEO_FORMAT_UYVY, DRM_FORMAT_UYVY},
	{GST_VIDEO_FORMAT_NV12, DRM_FORMAT_NV12},     {GST_VIDEO_FORMAT_NV21, DRM_FORMAT_NV21},
	{GST_VIDEO_FORMAT_NV16, DRM_FORMAT_NV16},     {GST_VIDEO_FORMAT_I420, DRM_FORMAT_YUV420},
	{GST_VIDEO_FORMAT_YV12, DRM_FORMAT_YVU420},   {GST_VIDEO_FORMAT_BGRx, DRM_FORMAT_XRGB8888},
	{GST_VIDEO_FORMAT_BGRA, DRM_FORMAT_ARGB8888}, {GST_VIDEO_FORMAT_RGBx, DRM_FORMAT_XBGR8888},
	{GST_VIDEO_FORMAT_RGBA, DRM_FORMAT_ABGR8888}, {GST_VIDEO_FORMAT_xRGB, DRM_FORMAT_BGRX8888},
	{GST_VIDEO_FORMAT_ARGB, DRM_FORMAT_BGRA8888}, {GST_VIDEO_FORMAT_RGB16, DRM_FORMAT_RGB565},
	{GST_VIDEO_FORMAT_GRAY8, DRM_FORMAT_R8},
};

uint32_t gst_dmabroker_fourcc_from_format(GstVideoFormat format)
{
	for (size_t i = 0; i < G_N_ELEMENTS(formats); i++)
		if (formats[i].format == format)
			return formats[i].fourcc;
	return 0;
}

GstVideoFormat gst_dmabroker_format_from_fourcc(uint32_t fourcc)
{
	for (size_t i = 0; i < G_N_ELEMENTS(formats); i++)
		if (formats[i].fourcc == fourcc)
			return formats[i].format;
	return GST_VIDEO_FORMAT_UNKNOWN;
}
