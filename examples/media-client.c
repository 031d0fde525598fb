// SPDX-License-Identifier: MIT
/*
 * media-client: the V4L2 side, on vivid. Captures a frame into a broker buffer it allocates
 * (V4L2_MEMORY_DMABUF), or captures into vivid's own buffer and hands it to the broker with
 * VIDIOC_EXPBUF + Export.
 *
 *   media-client capture [--instance 0|1] [--contiguous] [--backend B] [--dynamic]
 *                        [--tokens N] [--move]
 *   media-client export [--instance 0|1] [--dynamic]
 *   media-client collection [--instance 0|1] [--participants N] [--renegotiate WxH]
 *   media-client stream NAME [--instance 0|1] [--frames N] [--consumers K] [--after-left N]
 *                            [--buffers N] [--fence]
 *
 * stream: vivid captures into a collection's buffers and each frame goes to the stream's
 * consumers (examples/stream-util.h); vivid shows 75% colour bars without on-screen text, so
 * that a consumer can check every frame at any row.
 * vivid instance 0 uses vb2-vmalloc (it vmaps an imported dma-buf, no attachment), instance 1
 * vb2-dma-contig (a real attachment; it needs physically contiguous memory). With --move
 * (and --dynamic, so that the buffer is not pinned) the frame buffer is moved to new backing
 * after the first capture and a second frame is captured into the new backing: on instance 1
 * that only works if the move kept the buffer physically contiguous.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <drm_fourcc.h>
#include <linux/videodev2.h>

#include "example-util.h"
#include "stream-util.h"

#define WIDTH 640
#define HEIGHT 360

static int xioctl(int fd, unsigned long req, void *arg)
{
	int r;

	do {
		r = ioctl(fd, req, arg);
	} while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

/* vivid's video capture node of one instance (bus_info "platform:vivid-00N"). */
static int open_vivid_capture(int instance, char *path, size_t len)
{
	char want[32];

	snprintf(want, sizeof(want), "platform:vivid-%03d", instance);
	for (int i = 0; i < 64; i++) {
		struct v4l2_capability cap = {0};
		int fd;

		snprintf(path, len, "/dev/video%d", i);
		fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
		if (fd < 0)
			continue;
		if (xioctl(fd, VIDIOC_QUERYCAP, &cap) == 0 &&
		    strcmp((char *)cap.driver, "vivid") == 0 &&
		    strcmp((char *)cap.bus_info, want) == 0 &&
		    (cap.device_caps & V4L2_CAP_VIDEO_CAPTURE) &&
		    (cap.device_caps & V4L2_CAP_STREAMING))
			return fd;
		close(fd);
	}
	return -ENODEV;
}

static int set_format(struct example *ex, int fd, struct v4l2_format *fmt)
{
	int input = 0; /* the webcam input offers 640x360 */

	xioctl(fd, VIDIOC_S_INPUT, &input);
	memset(fmt, 0, sizeof(*fmt));
	fmt->type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
	fmt->fmt.pix.width = WIDTH;
	fmt->fmt.pix.height = HEIGHT;
	fmt->fmt.pix.pixelformat = V4L2_PIX_FMT_YUYV;
	fmt->fmt.pix.field = V4L2_FIELD_NONE;
	if (xioctl(fd, VIDIOC_S_FMT, fmt) < 0)
		example_die(ex, "VIDIOC_S_FMT: %s", strerror(errno));
	if (fmt->fmt.pix.width != WIDTH || fmt->fmt.pix.height != HEIGHT ||
	    fmt->fmt.pix.pixelformat != V4L2_PIX_FMT_YUYV)
		example_die(ex, "vivid chose %ux%u instead", fmt->fmt.pix.width,
			    fmt->fmt.pix.height);
	example_say("format", "%ux%u YUYV stride %u size %u", fmt->fmt.pix.width,
		    fmt->fmt.pix.height, fmt->fmt.pix.bytesperline, fmt->fmt.pix.sizeimage);
	return 0;
}

/* Queues buffer 0 (already set up), streams one frame, dequeues it; says key. */
static void capture_one(struct example *ex, int fd, struct v4l2_buffer *vb, const char *key)
{
	enum v4l2_buf_type type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
	struct pollfd pfd = {fd, POLLIN, 0};
	int r;

	r = xioctl(fd, VIDIOC_QBUF, vb);
	if (r < 0)
		example_die(ex, "VIDIOC_QBUF: %s", strerror(-r));
	r = xioctl(fd, VIDIOC_STREAMON, &type);
	if (r < 0)
		example_die(ex, "VIDIOC_STREAMON: %s", strerror(-r));
	/* TCG is slow: give vivid's kthread time. */
	if (poll(&pfd, 1, 30000) <= 0)
		example_die(ex, "no frame within 30 s");
	r = xioctl(fd, VIDIOC_DQBUF, vb);
	if (r < 0)
		example_die(ex, "VIDIOC_DQBUF: %s", strerror(-r));
	example_say(key, "%u bytes", vb->bytesused);
	xioctl(fd, VIDIOC_STREAMOFF, &type);
}

static int cmd_capture(struct example *ex, int instance, bool contiguous, const char *backend,
		       int tokens, bool move)
{
	struct dmabroker_alloc_spec spec = {
		.width = WIDTH,
		.height = HEIGHT,
		.fourcc = DRM_FORMAT_YUYV,
		.stride_align = 1, /* V4L2 wants bytesperline = width * 2 */
		.backend = backend,
		.name = "vivid-frame",
		.contiguous = contiguous,
	};
	struct v4l2_requestbuffers req = {
		.count = 1, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_DMABUF};
	struct dmabroker_buffer *buf;
	struct v4l2_format fmt;
	struct v4l2_buffer vb = {0};
	char node[64];
	int fd, r;

	fd = open_vivid_capture(instance, node, sizeof(node));
	if (fd < 0)
		example_die(ex, "no vivid instance %d", instance);
	example_say("device", "%s", node);
	set_format(ex, fd, &fmt);
	r = dmabroker_allocate(ex->ctx, &spec, sizeof(spec), &buf);
	if (r < 0)
		example_die(ex, "allocate a %ux%u YUYV frame: %s", WIDTH, HEIGHT, strerror(-r));
	example_say("buffer", "%s", dmabroker_buffer_get_path(buf));
	example_say("backend", "%s", dmabroker_buffer_get_backend(buf));
	if (xioctl(fd, VIDIOC_REQBUFS, &req) < 0)
		example_die(ex, "VIDIOC_REQBUFS(DMABUF): %s", strerror(errno));
	vb.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
	vb.memory = V4L2_MEMORY_DMABUF;
	vb.index = 0;
	vb.m.fd = dmabroker_buffer_get_fd(buf);
	vb.length = (uint32_t)dmabroker_buffer_get_size(buf);
	capture_one(ex, fd, &vb, "captured");
	if (move) {
		/* The owner moves it, then reacquires its new fd like any holder. */
		r = dmabroker_buffer_move(buf);
		if (r >= 0)
			r = dmabroker_buffer_reacquire(buf);
		if (r < 0)
			example_die(ex, "move: %s (%s)", strerror(-r),
				    dmabroker_last_error(ex->ctx));
		example_say("moved", "%s", dmabroker_buffer_get_backend(buf));
		vb.m.fd = dmabroker_buffer_get_fd(buf);
		capture_one(ex, fd, &vb, "captured-after-move");
	}
	/* The frame is in the broker's buffer: free the device for other clients. */
	req.count = 0;
	xioctl(fd, VIDIOC_REQBUFS, &req);
	close(fd);
	for (int i = 0; i < tokens; i++)
		example_share(ex, buf);
	example_say("ready", "holding");
	example_hold();
	dmabroker_release(buf);
	return 0;
}

/* vivid's allocator for an instance (its "allocators" module parameter): 1 is dma-contig. */
static bool vivid_needs_contiguous(int instance)
{
	char buf[128], *p = buf;
	FILE *f = fopen("/sys/module/vivid/parameters/allocators", "re");
	bool contig = false;

	if (!f)
		return false;
	if (fgets(buf, sizeof(buf), f)) {
		for (int i = 0; i < instance && p; i++) {
			p = strchr(p, ',');
			p = p ? p + 1 : NULL;
		}
		contig = p && atoi(p) == 1;
	}
	fclose(f);
	return contig;
}

/*
 * What this capture queue needs, asked of the device rather than assumed: the format's
 * minimum bytesperline and sizeimage (VIDIOC_TRY_FMT), the buffers vb2 keeps queued
 * (VIDIOC_REQBUFS raises the count to its minimum), and contiguity from the instance's
 * allocator. vivid's DMA segment limit (dma_set_max_seg_size(64 KiB)) and 32-bit DMA mask are
 * not published to userspace, so they are declared as its driver sets them.
 */
static void derive_constraints(struct example *ex, int fd, int instance, uint32_t w, uint32_t h,
			       struct dmabroker_constraints *c, const char *device)
{
	static uint32_t yuyv = DRM_FORMAT_YUYV;
	struct v4l2_format fmt = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
	struct v4l2_requestbuffers req = {
		.count = 1, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_DMABUF};
	int input = 0;

	xioctl(fd, VIDIOC_S_INPUT, &input);
	fmt.fmt.pix.width = w;
	fmt.fmt.pix.height = h;
	fmt.fmt.pix.pixelformat = V4L2_PIX_FMT_YUYV;
	fmt.fmt.pix.field = V4L2_FIELD_NONE;
	if (xioctl(fd, VIDIOC_TRY_FMT, &fmt) < 0 || fmt.fmt.pix.width != w ||
	    fmt.fmt.pix.height != h)
		example_die(ex, "vivid cannot capture %ux%u YUYV", w, h);
	if (xioctl(fd, VIDIOC_REQBUFS, &req) < 0)
		example_die(ex, "VIDIOC_REQBUFS(DMABUF): %s", strerror(errno));
	example_say("device-minimums", "stride %u size %u buffers %u", fmt.fmt.pix.bytesperline,
		    fmt.fmt.pix.sizeimage, req.count);
	*c = (struct dmabroker_constraints){
		.device = device,
		.min_buffers_for_camping = req.count,
		.fourccs = &yuyv,
		.n_fourccs = 1,
		.width = w,
		.height = h,
		.min_strides = {fmt.fmt.pix.bytesperline},
		.min_size = fmt.fmt.pix.sizeimage,
		.contiguous = vivid_needs_contiguous(instance),
		.max_segment_size = 64 * 1024,
		.dma_address_bits = 32,
		.device_import = true,
	};
	req.count = 0;
	xioctl(fd, VIDIOC_REQBUFS, &req);
}

/* Sets the negotiated layout on the queue and captures one frame into every buffer. */
static void capture_all(struct example *ex, int fd, struct dmabroker_collection *col)
{
	unsigned n = dmabroker_collection_get_buffer_count(col);
	struct dmabroker_buffer *first = dmabroker_collection_get_buffer(col, 0);
	enum v4l2_buf_type type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
	struct v4l2_requestbuffers req = {
		.count = n, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_DMABUF};
	struct v4l2_format fmt = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
	unsigned full = 0;
	int r;

	fmt.fmt.pix.width = dmabroker_buffer_get_width(first);
	fmt.fmt.pix.height = dmabroker_buffer_get_height(first);
	fmt.fmt.pix.pixelformat = V4L2_PIX_FMT_YUYV;
	fmt.fmt.pix.field = V4L2_FIELD_NONE;
	fmt.fmt.pix.bytesperline = dmabroker_buffer_get_stride(first, 0);
	if (xioctl(fd, VIDIOC_S_FMT, &fmt) < 0)
		example_die(ex, "VIDIOC_S_FMT: %s", strerror(errno));
	if (fmt.fmt.pix.bytesperline != dmabroker_buffer_get_stride(first, 0))
		example_die(ex, "vivid took stride %u, not the negotiated %u",
			    fmt.fmt.pix.bytesperline, dmabroker_buffer_get_stride(first, 0));
	example_say("format", "%ux%u YUYV stride %u size %u", fmt.fmt.pix.width, fmt.fmt.pix.height,
		    fmt.fmt.pix.bytesperline, fmt.fmt.pix.sizeimage);
	if (xioctl(fd, VIDIOC_REQBUFS, &req) < 0 || req.count < n)
		example_die(ex, "VIDIOC_REQBUFS(%u, DMABUF): %s", n, strerror(errno));
	for (unsigned i = 0; i < n; i++) {
		struct dmabroker_buffer *buf = dmabroker_collection_get_buffer(col, i);
		struct v4l2_buffer vb = {
			.type = V4L2_BUF_TYPE_VIDEO_CAPTURE,
			.memory = V4L2_MEMORY_DMABUF,
			.index = i,
			.length = (uint32_t)dmabroker_buffer_get_size(buf),
		};

		vb.m.fd = dmabroker_buffer_get_fd(buf);
		/* dma-contig checks here that the memory is one contiguous chunk. */
		r = xioctl(fd, VIDIOC_QBUF, &vb);
		if (r < 0)
			example_die(ex, "VIDIOC_QBUF of buffer %u: %s", i, strerror(-r));
	}
	r = xioctl(fd, VIDIOC_STREAMON, &type);
	if (r < 0)
		example_die(ex, "VIDIOC_STREAMON: %s", strerror(-r));
	for (unsigned i = 0; i < n; i++) {
		struct pollfd pfd = {fd, POLLIN, 0};
		struct v4l2_buffer vb = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE,
					 .memory = V4L2_MEMORY_DMABUF};

		/* TCG is slow: give vivid's kthread time. */
		if (poll(&pfd, 1, 30000) <= 0)
			example_die(ex, "frame %u did not come within 30 s", i);
		r = xioctl(fd, VIDIOC_DQBUF, &vb);
		if (r < 0)
			example_die(ex, "VIDIOC_DQBUF: %s", strerror(-r));
		full += vb.bytesused == fmt.fmt.pix.sizeimage && !(vb.flags & V4L2_BUF_FLAG_ERROR);
	}
	xioctl(fd, VIDIOC_STREAMOFF, &type);
	req.count = 0;
	xioctl(fd, VIDIOC_REQBUFS, &req);
	example_say("captured-all", "%u of %u full frames of %u bytes", full, n,
		    fmt.fmt.pix.sizeimage);
}

static void say_outcome(struct dmabroker_collection *col)
{
	const struct dmabroker_collection_info *info = dmabroker_collection_get_info(col);

	example_say("buffers", "%u", info->buffer_count);
	example_say("backend", "%s", info->backend);
	example_say("contiguous", "%d", info->contiguous);
	example_say("stride", "%u",
		    dmabroker_buffer_get_stride(dmabroker_collection_get_buffer(col, 0), 0));
	example_say("segment-limit", "%s", info->segment_limit_not_met ? "not-met" : "met");
	if (info->note[0])
		example_say("note", "%s", info->note);
}

/*
 * The camera's side of a buffer collection: creates it, hands out tokens for the GPU and CPU
 * participants, states what vivid needs, captures into every buffer. With --renegotiate, a
 * format change afterwards: the old collection is left (its buffers released) and a new one
 * negotiated for the new size.
 */
static int cmd_collection(struct example *ex, int instance, unsigned participants, uint32_t new_w,
			  uint32_t new_h)
{
	struct dmabroker_constraints c;
	struct dmabroker_collection *col;
	struct dmabroker_token token;
	char node[64], hex[DMABROKER_TOKEN_STRING_SIZE];
	int fd, r;

	fd = open_vivid_capture(instance, node, sizeof(node));
	if (fd < 0)
		example_die(ex, "no vivid instance %d", instance);
	example_say("device", "%s", node);
	derive_constraints(ex, fd, instance, WIDTH, HEIGHT, &c, node);
	r = dmabroker_collection_create(ex->ctx, "camera", participants, &col);
	for (unsigned i = 1; r >= 0 && i < participants; i++) {
		r = dmabroker_collection_token(col, &token);
		dmabroker_token_to_string(&token, hex);
		if (r >= 0)
			example_say("token", "%s", hex);
	}
	if (r >= 0)
		r = dmabroker_collection_set_constraints(col, &c, sizeof(c));
	if (r < 0)
		example_die(ex, "collection: %s", dmabroker_last_error(ex->ctx));
	example_say("ready", "negotiating");
	r = dmabroker_collection_wait(col);
	if (r < 0) {
		/* The daemon's reason, for whoever drives us. */
		example_say("refused", "%s", dmabroker_last_error(ex->ctx));
		example_die(ex, "the collection failed");
	}
	say_outcome(col);
	capture_all(ex, fd, col);
	example_say("ready", "captured");
	/* The driver says when the others are done; at end of file there is nothing more. */
	if (example_wait_line() && new_w) {
		/* A format change: a new negotiation, the old buffers released first. */
		dmabroker_collection_leave(col);
		derive_constraints(ex, fd, instance, new_w, new_h, &c, node);
		r = dmabroker_collection_create(ex->ctx, "camera-2", 1, &col);
		if (r >= 0)
			r = dmabroker_collection_set_constraints(col, &c, sizeof(c));
		if (r >= 0)
			r = dmabroker_collection_wait(col);
		if (r < 0)
			example_die(ex, "renegotiation: %s", dmabroker_last_error(ex->ctx));
		say_outcome(col);
		capture_all(ex, fd, col);
		example_say("ready", "holding");
		example_hold();
	}
	dmabroker_collection_leave(col);
	close(fd);
	return 0;
}

static int cmd_export(struct example *ex, int instance)
{
	struct v4l2_requestbuffers req = {
		.count = 1, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP};
	struct v4l2_exportbuffer exp = {
		.type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .index = 0, .flags = O_RDWR | O_CLOEXEC};
	struct dmabroker_export_info layout = {.name = "vivid-expbuf"};
	struct dmabroker_buffer *buf;
	struct v4l2_format fmt;
	struct v4l2_buffer vb = {0};
	char node[64];
	uint64_t sum;
	size_t size;
	void *p;
	int fd, r;

	fd = open_vivid_capture(instance, node, sizeof(node));
	if (fd < 0)
		example_die(ex, "no vivid instance %d", instance);
	example_say("device", "%s", node);
	set_format(ex, fd, &fmt);
	if (xioctl(fd, VIDIOC_REQBUFS, &req) < 0)
		example_die(ex, "VIDIOC_REQBUFS(MMAP): %s", strerror(errno));
	vb.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
	vb.memory = V4L2_MEMORY_MMAP;
	vb.index = 0;
	if (xioctl(fd, VIDIOC_QUERYBUF, &vb) < 0)
		example_die(ex, "VIDIOC_QUERYBUF: %s", strerror(errno));
	capture_one(ex, fd, &vb, "captured");
	/* The frame through V4L2's own mapping, as vivid wrote it. */
	p = mmap(NULL, vb.length, PROT_READ, MAP_SHARED, fd, vb.m.offset);
	if (p == MAP_FAILED)
		example_die(ex, "mmap the V4L2 buffer: %s", strerror(errno));
	example_say("frame-checksum", "%016llx",
		    (unsigned long long)example_checksum(p, vb.bytesused));
	munmap(p, vb.length);
	r = xioctl(fd, VIDIOC_EXPBUF, &exp);
	if (r < 0)
		example_die(ex, "VIDIOC_EXPBUF: %s", strerror(-r));
	/* The whole dma-buf (page-aligned, larger than the frame), as an importer sees it. */
	size = (size_t)lseek(exp.fd, 0, SEEK_END);
	if (example_checksum_fd(exp.fd, size, &sum) < 0)
		example_die(ex, "read the exported dma-buf: %s", strerror(errno));
	example_say("checksum", "%016llx", (unsigned long long)sum);
	layout.width = fmt.fmt.pix.width;
	layout.height = fmt.fmt.pix.height;
	layout.fourcc = DRM_FORMAT_YUYV;
	layout.n_planes = 1;
	layout.strides[0] = fmt.fmt.pix.bytesperline;
	r = dmabroker_export(ex->ctx, exp.fd, &layout, sizeof(layout), &buf);
	if (r < 0)
		example_die(ex, "Export: %s", strerror(-r));
	close(exp.fd);
	example_say("buffer", "%s", dmabroker_buffer_get_path(buf));
	example_share(ex, buf);
	example_say("ready", "holding");
	example_hold();
	dmabroker_release(buf);
	req.count = 0;
	xioctl(fd, VIDIOC_REQBUFS, &req);
	close(fd);
	return 0;
}

/* The menu item called item of vivid's control called name (VIDIOC_QUERY_EXT_CTRL, by name:
 * vivid's private control ids are not in the uapi headers). */
static int set_menu_control(int fd, const char *name, const char *item)
{
	struct v4l2_query_ext_ctrl q = {.id = V4L2_CTRL_FLAG_NEXT_CTRL};

	while (xioctl(fd, VIDIOC_QUERY_EXT_CTRL, &q) == 0) {
		if (q.type == V4L2_CTRL_TYPE_MENU && strcmp(q.name, name) == 0) {
			for (int64_t i = q.minimum; i <= q.maximum; i++) {
				struct v4l2_querymenu m = {.id = q.id, .index = (uint32_t)i};
				struct v4l2_control c = {.id = q.id, .value = (int32_t)i};

				if (xioctl(fd, VIDIOC_QUERYMENU, &m) == 0 &&
				    strcmp((char *)m.name, item) == 0)
					return xioctl(fd, VIDIOC_S_CTRL, &c);
			}
			return -ENOENT;
		}
		q.id |= V4L2_CTRL_FLAG_NEXT_CTRL;
	}
	return -ENOENT;
}

/* vivid as a stream source: a free buffer is queued to the capture queue, a captured one is
 * dequeued. */
struct vivid_source {
	struct stream_source src;
	struct example *ex;
	struct dmabroker_collection *col;
	bool queued[64];
	unsigned n_queued;
	bool streaming;
};

static int vivid_give(struct stream_source *src, uint32_t index)
{
	struct vivid_source *vs = (struct vivid_source *)src;
	struct dmabroker_buffer *buf = dmabroker_collection_get_buffer(vs->col, index);
	struct v4l2_buffer vb = {
		.type = V4L2_BUF_TYPE_VIDEO_CAPTURE,
		.memory = V4L2_MEMORY_DMABUF,
		.index = index,
		.length = (uint32_t)dmabroker_buffer_get_size(buf),
	};
	enum v4l2_buf_type type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
	int r;

	vb.m.fd = dmabroker_buffer_get_fd(buf);
	r = xioctl(src->fd, VIDIOC_QBUF, &vb);
	if (r < 0)
		return r;
	vs->queued[index] = true;
	vs->n_queued++;
	/* vb2 starts vivid once its minimum is queued: two buffers. */
	if (!vs->streaming && vs->n_queued >= 2) {
		r = xioctl(src->fd, VIDIOC_STREAMON, &type);
		if (r < 0)
			return r;
		vs->streaming = true;
	}
	return 0;
}

static int vivid_take(struct stream_source *src, uint32_t *ret_index, uint64_t *ret_timestamp_ns)
{
	struct vivid_source *vs = (struct vivid_source *)src;
	struct v4l2_buffer vb = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_DMABUF};
	int r;

	r = xioctl(src->fd, VIDIOC_DQBUF, &vb);
	if (r < 0)
		return r;
	if (vb.flags & V4L2_BUF_FLAG_ERROR)
		example_die(vs->ex, "vivid marked buffer %u as failed", vb.index);
	vs->queued[vb.index] = false;
	vs->n_queued--;
	*ret_index = vb.index;
	*ret_timestamp_ns = (uint64_t)vb.timestamp.tv_sec * 1000000000u +
			    (uint64_t)vb.timestamp.tv_usec * 1000u;
	return 0;
}

static unsigned vivid_stop(struct stream_source *src, uint32_t *ret_index, unsigned n)
{
	struct vivid_source *vs = (struct vivid_source *)src;
	enum v4l2_buf_type type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
	unsigned got = 0;

	/* STREAMOFF hands every queued buffer back, filled or not. */
	xioctl(src->fd, VIDIOC_STREAMOFF, &type);
	vs->streaming = false;
	for (uint32_t i = 0; i < 64 && got < n; i++)
		if (vs->queued[i]) {
			vs->queued[i] = false;
			ret_index[got++] = i;
		}
	vs->n_queued = 0;
	return got;
}

/*
 * vivid as a stream's producer: a collection negotiated for vivid alone (the consumers join it
 * through the stream), vivid set to a fixed pattern, then every captured frame queued.
 */
static int cmd_stream(struct example *ex, int argc, char **argv, int instance)
{
	struct stream_producer_opts o = {
		.name = argc > 0 ? argv[0] : NULL,
		.consumers = 1,
		.format = {.fourcc = DRM_FORMAT_YUYV, .width = WIDTH, .height = HEIGHT},
	};
	struct v4l2_requestbuffers req = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE,
					  .memory = V4L2_MEMORY_DMABUF};
	struct v4l2_format fmt = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
	struct v4l2_streamparm parm = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
	struct vivid_source vs = {.ex = ex};
	struct dmabroker_constraints c;
	struct dmabroker_collection *col;
	struct dmabroker_buffer *first;
	uint32_t buffers = 8;
	char node[64];
	int fd, r;

	if (!o.name)
		example_die(ex, "stream NAME");
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--fence"))
			o.fence = true;
		else if (!strcmp(argv[i], "--frames") && i + 1 < argc)
			o.frames = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--consumers") && i + 1 < argc)
			o.consumers = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--after-left") && i + 1 < argc)
			o.after_left = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--buffers") && i + 1 < argc)
			buffers = (uint32_t)atoi(argv[++i]);
	}
	fd = open_vivid_capture(instance, node, sizeof(node));
	if (fd < 0)
		example_die(ex, "no vivid instance %d", instance);
	example_say("device", "%s", node);
	derive_constraints(ex, fd, instance, WIDTH, HEIGHT, &c, node);
	/* vivid camps on its minimum; the consumers hold some: the rest keeps frames flowing. */
	c.min_buffers = buffers;
	r = dmabroker_collection_create(ex->ctx, o.name, 1, &col);
	if (r >= 0)
		r = dmabroker_collection_set_constraints(col, &c, sizeof(c));
	if (r >= 0)
		r = dmabroker_collection_wait(col);
	if (r < 0)
		example_die(ex, "collection: %s", strerror(-r));
	say_outcome(col);
	r = set_menu_control(fd, "Test Pattern", "75% Colorbar");
	if (r >= 0)
		r = set_menu_control(fd, "OSD Text Mode", "None");
	if (r < 0)
		example_die(ex, "set vivid's pattern: %s", strerror(-r));
	first = dmabroker_collection_get_buffer(col, 0);
	fmt.fmt.pix.width = WIDTH;
	fmt.fmt.pix.height = HEIGHT;
	fmt.fmt.pix.pixelformat = V4L2_PIX_FMT_YUYV;
	fmt.fmt.pix.field = V4L2_FIELD_NONE;
	fmt.fmt.pix.bytesperline = dmabroker_buffer_get_stride(first, 0);
	if (xioctl(fd, VIDIOC_S_FMT, &fmt) < 0 ||
	    fmt.fmt.pix.bytesperline != dmabroker_buffer_get_stride(first, 0))
		example_die(ex, "vivid does not take the negotiated stride %u",
			    dmabroker_buffer_get_stride(first, 0));
	/* vivid's webcam starts at 5 frames/s: ask for 60 (it takes the nearest it offers). */
	parm.parm.capture.timeperframe = (struct v4l2_fract){1, 60};
	if (xioctl(fd, VIDIOC_S_PARM, &parm) == 0)
		example_say("interval", "%u/%u", parm.parm.capture.timeperframe.numerator,
			    parm.parm.capture.timeperframe.denominator);
	req.count = dmabroker_collection_get_buffer_count(col);
	if (xioctl(fd, VIDIOC_REQBUFS, &req) < 0 || req.count < buffers)
		example_die(ex, "VIDIOC_REQBUFS(%u, DMABUF): %s", buffers, strerror(errno));
	vs.src = (struct stream_source){
		.fd = fd, .give = vivid_give, .take = vivid_take, .stop = vivid_stop};
	vs.col = col;
	r = stream_produce(ex, col, &vs.src, &o);
	req.count = 0;
	xioctl(fd, VIDIOC_REQBUFS, &req);
	close(fd);
	dmabroker_collection_leave(col);
	return r;
}

int main(int argc, char **argv)
{
	struct example ex = {.prog = "media-client"};
	const char *devices[] = {NULL, NULL};
	const char *backend = NULL;
	bool dynamic = false, contiguous = false, move = false;
	int instance = 0, tokens = 1, fd, r;
	unsigned participants = 3, new_w = 0, new_h = 0;
	char node[64];

	if (argc < 2) {
		fprintf(stderr, "usage: media-client capture|export [--instance N] ...\n");
		return 2;
	}
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--dynamic"))
			dynamic = true;
		else if (!strcmp(argv[i], "--contiguous"))
			contiguous = true;
		else if (!strcmp(argv[i], "--move"))
			move = true;
		else if (!strcmp(argv[i], "--instance") && i + 1 < argc)
			instance = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--backend") && i + 1 < argc)
			backend = argv[++i];
		else if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
			tokens = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--participants") && i + 1 < argc)
			participants = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--renegotiate") && i + 1 < argc)
			sscanf(argv[++i], "%ux%u", &new_w, &new_h);
	}
	fd = open_vivid_capture(instance, node, sizeof(node));
	if (fd >= 0) {
		devices[0] = node;
		close(fd);
	}
	example_start(&ex, "media-client", "media", dynamic, devices[0] ? devices : NULL);
	if (!strcmp(argv[1], "capture"))
		r = cmd_capture(&ex, instance, contiguous, backend, tokens, move);
	else if (!strcmp(argv[1], "export"))
		r = cmd_export(&ex, instance);
	else if (!strcmp(argv[1], "collection"))
		r = cmd_collection(&ex, instance, participants, new_w, new_h);
	else if (!strcmp(argv[1], "stream"))
		r = cmd_stream(&ex, argc - 2, argv + 2, instance);
	else
		example_die(&ex, "unknown command %s", argv[1]);
	example_finish(&ex);
	return r;
}
