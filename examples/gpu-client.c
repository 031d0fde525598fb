// SPDX-License-Identifier: MIT
/*
 * gpu-client: the GPU side, on vgem (DRM/PRIME). Imports a broker buffer into the GPU with
 * drmPrimeFDToHandle (a real kernel attachment, static: vgem maps at attach), or creates a
 * dumb buffer, exports it with drmPrimeHandleToFD and hands it to the broker with Export.
 *
 *   gpu-client import TOKEN [--dynamic]
 *   gpu-client collection TOKEN [--stride-divisor N]
 *   gpu-client export [--width W --height H] [--dynamic]
 *   gpu-client stream NAME [--explicit] [--keep K] [--report N]
 *
 * stream: a consumer that PRIME-imports every buffer a frame comes in and checks each frame
 * against the producer's checksum, with implicit sync (the library imports each frame's
 * acquire fence into the buffer, as a GPU driver waits on the dma-buf's own fences).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <drm_fourcc.h>
#include <xf86drm.h>

#include "example-util.h"
#include "stream-util.h"

static int cmd_import(struct example *ex, const char *hex)
{
	struct dmabroker_buffer *buf;
	struct dmabroker_token token;
	uint64_t sum;
	uint32_t handle;
	char node[64];
	int drm, r;

	drm = stream_open_vgem("renderD", 128, node, sizeof(node));
	if (drm < 0)
		example_die(ex, "no vgem render node");
	example_parse_token(ex, hex, &token);
	r = dmabroker_import(ex->ctx, &token, &buf);
	if (r < 0)
		example_die(ex, "import: %s", strerror(-r));
	example_say("buffer", "%s", dmabroker_buffer_get_path(buf));
	example_say("path", "%s",
		    dmabroker_buffer_get_attach_path(buf) == DMABROKER_PATH_CACHED ? "cached"
										   : "direct");
	/* The kernel attaches vgem's device to the dma-buf here. */
	r = drmPrimeFDToHandle(drm, dmabroker_buffer_get_fd(buf), &handle);
	if (r < 0) {
		int err = errno;

		if (!dmabroker_buffer_is_dmabuf(buf))
			example_die(ex,
				    "drmPrimeFDToHandle on %s: %s: the buffer is a %s, not a "
				    "dma-buf, and a device imports only dma-bufs",
				    node, strerror(err), dmabroker_buffer_get_backend(buf));
		example_die(ex, "drmPrimeFDToHandle on %s: %s", node, strerror(err));
	}
	example_say("gem-handle", "%u", handle);
	r = example_checksum_fd(dmabroker_buffer_get_fd(buf), dmabroker_buffer_get_size(buf), &sum);
	if (r == 0)
		example_say("checksum", "%016llx", (unsigned long long)sum);
	example_say("ready", "holding");
	example_hold();
	drmCloseBufferHandle(drm, handle);
	close(drm);
	dmabroker_release(buf);
	return 0;
}

/*
 * Joins a buffer collection as the GPU participant. vgem publishes no constraints of its own;
 * a real GPU's stride alignment is declared here as a GPU driver would know it. Once the media
 * side says its frames are in (a line on stdin), imports every buffer with PRIME and reads it.
 */
static int cmd_collection(struct example *ex, const char *hex, uint32_t stride_divisor,
			  const char *device)
{
	const uint64_t linear = DRM_FORMAT_MOD_LINEAR;
	struct dmabroker_constraints c = {
		.device = device,
		.min_buffers_for_camping = 2, /* one scanned out, one being composited */
		.modifiers = &linear,
		.n_modifiers = 1,
		.stride_divisor = stride_divisor,
		.device_import = true,
	};
	const struct dmabroker_collection_info *info;
	struct dmabroker_collection *col;
	char node[64];
	int drm, r;

	drm = stream_open_vgem("renderD", 128, node, sizeof(node));
	if (drm < 0)
		example_die(ex, "no vgem render node");
	col = example_join_collection(ex, hex, &c);
	info = dmabroker_collection_get_info(col);
	example_say("path", "%s", info->path == DMABROKER_PATH_CACHED ? "cached" : "direct");
	example_say("ready", "waiting for frames");
	if (!example_wait_line())
		example_die(ex, "the driver went away");
	for (unsigned i = 0; i < dmabroker_collection_get_buffer_count(col); i++) {
		struct dmabroker_buffer *buf = dmabroker_collection_get_buffer(col, i);
		uint64_t sum;
		uint32_t handle;

		/* The kernel attaches vgem's device to each dma-buf here. */
		if (drmPrimeFDToHandle(drm, dmabroker_buffer_get_fd(buf), &handle) < 0)
			example_die(ex, "drmPrimeFDToHandle of buffer %u: %s", i, strerror(errno));
		r = example_checksum_fd(dmabroker_buffer_get_fd(buf),
					dmabroker_buffer_get_size(buf), &sum);
		if (r < 0)
			example_die(ex, "read buffer %u: %s", i, strerror(-r));
		example_say("checksum", "%016llx", (unsigned long long)sum);
		drmCloseBufferHandle(drm, handle);
	}
	example_say("done", "imported");
	example_hold();
	dmabroker_collection_leave(col);
	close(drm);
	return 0;
}

static int cmd_export(struct example *ex, uint32_t width, uint32_t height)
{
	struct drm_mode_create_dumb create = {.width = width, .height = height, .bpp = 32};
	struct dmabroker_export_info layout = {.name = "vgem-dumb"};
	struct dmabroker_buffer *buf;
	char node[64];
	uint32_t *p;
	int card, prime, r;

	/* Dumb buffers are made on the primary node. */
	card = stream_open_vgem("card", 0, node, sizeof(node));
	if (card < 0)
		example_die(ex, "no vgem card node");
	if (drmIoctl(card, DRM_IOCTL_MODE_CREATE_DUMB, &create) < 0)
		example_die(ex, "create dumb %ux%u: %s", width, height, strerror(errno));
	r = drmPrimeHandleToFD(card, create.handle, DRM_CLOEXEC | DRM_RDWR, &prime);
	if (r < 0)
		example_die(ex, "drmPrimeHandleToFD: %s", strerror(errno));
	p = mmap(NULL, create.size, PROT_READ | PROT_WRITE, MAP_SHARED, prime, 0);
	if (p == MAP_FAILED)
		example_die(ex, "mmap the PRIME fd: %s", strerror(errno));
	/* A gradient the importer can recognise: pixel (x, y) = y << 16 | x. */
	for (uint32_t y = 0; y < height; y++)
		for (uint32_t x = 0; x < width; x++)
			p[y * (create.pitch / 4) + x] = y << 16 | x;
	example_say("checksum", "%016llx", (unsigned long long)example_checksum(p, create.size));
	munmap(p, create.size);

	layout.width = width;
	layout.height = height;
	layout.fourcc = DRM_FORMAT_XRGB8888;
	layout.modifier = DRM_FORMAT_MOD_LINEAR;
	layout.n_planes = 1;
	layout.strides[0] = create.pitch;
	r = dmabroker_export(ex->ctx, prime, &layout, sizeof(layout), &buf);
	if (r < 0)
		example_die(ex, "Export: %s", strerror(-r));
	close(prime); /* the broker holds its own reference now */
	example_say("buffer", "%s", dmabroker_buffer_get_path(buf));
	example_share(ex, buf);
	example_say("ready", "holding");
	example_hold();
	dmabroker_release(buf);
	drmIoctl(card, DRM_IOCTL_MODE_DESTROY_DUMB,
		 &(struct drm_mode_destroy_dumb){.handle = create.handle});
	close(card);
	return 0;
}

static int cmd_stream(struct example *ex, int argc, char **argv)
{
	struct stream_consumer_opts o = {
		.name = argc > 0 ? argv[0] : NULL,
		.label = "vgem",
		.implicit = true,
	};
	char node[64];
	int r;

	if (!o.name)
		example_die(ex, "stream NAME");
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--explicit"))
			o.implicit = false;
		else if (!strcmp(argv[i], "--keep") && i + 1 < argc)
			o.keep = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--report") && i + 1 < argc)
			o.report = (unsigned)atoi(argv[++i]);
	}
	o.drm = stream_open_vgem("renderD", 128, node, sizeof(node));
	if (o.drm < 0)
		example_die(ex, "no vgem render node");
	r = stream_consume(ex, &o);
	close(o.drm);
	return r;
}

int main(int argc, char **argv)
{
	const char *devices[] = {NULL, NULL};
	uint32_t width = 256, height = 128, stride_divisor = 256;
	bool dynamic = false;
	struct example ex = {.prog = "gpu-client"};
	char node[64];
	int fd, r;

	if (argc < 2) {
		fprintf(stderr, "usage: gpu-client import TOKEN | export [--width W --height H]\n");
		return 2;
	}
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--dynamic"))
			dynamic = true;
		else if (!strcmp(argv[i], "--width") && i + 1 < argc)
			width = (uint32_t)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--height") && i + 1 < argc)
			height = (uint32_t)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--stride-divisor") && i + 1 < argc)
			stride_divisor = (uint32_t)atoi(argv[++i]);
	}
	/* Declare the render node so the daemon can predict how the kernel attaches. */
	fd = stream_open_vgem("renderD", 128, node, sizeof(node));
	if (fd >= 0) {
		devices[0] = node;
		close(fd);
	}
	example_start(&ex, "gpu-client", "gpu", dynamic, devices[0] ? devices : NULL);
	if (!strcmp(argv[1], "import"))
		r = cmd_import(&ex, argc > 2 ? argv[2] : NULL);
	else if (!strcmp(argv[1], "export"))
		r = cmd_export(&ex, width, height);
	else if (!strcmp(argv[1], "collection"))
		r = cmd_collection(&ex, argc > 2 ? argv[2] : NULL, stride_divisor, devices[0]);
	else if (!strcmp(argv[1], "stream"))
		r = cmd_stream(&ex, argc - 2, argv + 2);
	else
		example_die(&ex, "unknown command %s", argv[1]);
	example_finish(&ex);
	return r;
}
