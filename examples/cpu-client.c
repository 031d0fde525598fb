// SPDX-License-Identifier: MIT
/*
 * cpu-client: the udmabuf/CPU side. Allocates from the broker and writes through its mapping,
 * or imports what others share and reads it, always inside DMA_BUF_IOCTL_SYNC begin/end.
 *
 *   cpu-client allocate [--size N] [--backend B] [--fill BYTE] [--name S] [--dynamic]
 *                       [--tokens N]
 *   cpu-client read TOKEN [--dynamic] [--vivid-yuyv WxH] [--hold]
 *   cpu-client stream NAME [--implicit] [--keep K] [--report N] [--bars] [--label L]
 *                          [--allow-missed]
 *   cpu-client stream-produce NAME [--frames N] [--consumers K] [--after-left N]
 *                                  [--interval-ms N] [--buffers N] [--fence]
 *
 * stream: a consumer that waits for each frame's acquire fence itself (explicit sync; with
 * --implicit the library imports it and DMA_BUF_IOCTL_SYNC waits) and checks every frame
 * (examples/stream-util.h). stream-produce: a producer without a camera, drawing vivid's
 * colour bars (640x360 YUYV) into a collection's buffers.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <drm_fourcc.h>

#include "example-util.h"
#include "stream-util.h"

static bool dynamic;

/*
 * vivid's default test pattern is 75% colour bars: eight vertical bars whose luma falls from
 * white to black. Sample the middle row (the text overlay is at the top) at each bar's centre.
 */
static bool is_vivid_colorbar_yuyv(const uint8_t *p, uint32_t width, uint32_t height,
				   uint32_t stride)
{
	const uint8_t *row = p + (size_t)stride * (height * 3 / 4);
	int last = 256;

	for (int bar = 0; bar < 8; bar++) {
		uint32_t x = (uint32_t)((2 * bar + 1) * width / 16) & ~1u;
		int y = row[x * 2]; /* YUYV: luma at even bytes */

		example_say("vivid-bar", "%d luma %d", bar, y);
		if (y >= last)
			return false;
		last = y;
	}
	/* 75% white is well above 150, black near 16: not just any falling ramp. */
	return row[(width / 16) * 2] > 150 && last < 40;
}

/*
 * Joins a buffer collection as the CPU participant (it reads what the camera captured). Once
 * told the frames are in, checks vivid's colour bars in every buffer, near the top and in the
 * last row (the whole frame was written, not its first pages), and prints each checksum.
 */
static int cmd_collection(struct example *ex, int argc, char **argv)
{
	const struct dmabroker_constraints c = {
		.min_buffers_for_camping = 1,
		.cpu_read = true,
	};
	struct dmabroker_collection *col;
	unsigned n_ok = 0, n;
	int r;

	col = example_join_collection(ex, argc > 0 ? argv[0] : NULL, &c);
	n = dmabroker_collection_get_buffer_count(col);
	example_say("ready", "waiting for frames");
	if (!example_wait_line())
		example_die(ex, "the driver went away");
	for (unsigned i = 0; i < n; i++) {
		struct dmabroker_buffer *buf = dmabroker_collection_get_buffer(col, i);
		uint32_t w = dmabroker_buffer_get_width(buf), h = dmabroker_buffer_get_height(buf);
		uint32_t stride = dmabroker_buffer_get_stride(buf, 0);
		const uint8_t *p;
		bool ok;

		r = dmabroker_buffer_map(buf, (void **)&p);
		if (r < 0)
			example_die(ex, "map buffer %u: %s", i, strerror(-r));
		dmabroker_buffer_begin_cpu_access(buf, DMABROKER_ACCESS_READ);
		ok = is_vivid_colorbar_yuyv(p, w, h, stride) &&
		     is_vivid_colorbar_yuyv(p + (size_t)stride * (h / 4 - 1), w, h, stride);
		example_say(
			"checksum", "%016llx",
			(unsigned long long)example_checksum(p, dmabroker_buffer_get_size(buf)));
		dmabroker_buffer_end_cpu_access(buf, DMABROKER_ACCESS_READ);
		n_ok += ok;
	}
	example_say("colour-bars", "%u of %u", n_ok, n);
	example_say("done", "read");
	example_hold();
	dmabroker_collection_leave(col);
	return 0;
}

static int cmd_allocate(struct example *ex, int argc, char **argv)
{
	struct dmabroker_alloc_spec spec = {.size = 1 << 20};
	struct dmabroker_buffer *buf;
	int fill = 0x5a, tokens = 1, r;
	uint8_t *p;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--size") && i + 1 < argc)
			spec.size = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--backend") && i + 1 < argc)
			spec.backend = argv[++i];
		else if (!strcmp(argv[i], "--fill") && i + 1 < argc)
			fill = (int)strtol(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--name") && i + 1 < argc)
			spec.name = argv[++i];
		else if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
			tokens = atoi(argv[++i]);
	}
	r = dmabroker_allocate(ex->ctx, &spec, sizeof(spec), &buf);
	if (r < 0)
		example_die(ex, "allocate %llu bytes: %s", (unsigned long long)spec.size,
			    strerror(-r));
	example_say("buffer", "%s", dmabroker_buffer_get_path(buf));
	example_say("backend", "%s", dmabroker_buffer_get_backend(buf));
	example_say("dmabuf", "%d", dmabroker_buffer_is_dmabuf(buf));
	r = dmabroker_buffer_map(buf, (void **)&p);
	if (r < 0)
		example_die(ex, "map: %s", strerror(-r));
	dmabroker_buffer_begin_cpu_access(buf, DMABROKER_ACCESS_WRITE);
	for (uint64_t i = 0; i < dmabroker_buffer_get_size(buf); i++)
		p[i] = (uint8_t)(fill + i / 4096);
	dmabroker_buffer_end_cpu_access(buf, DMABROKER_ACCESS_WRITE);
	dmabroker_buffer_begin_cpu_access(buf, DMABROKER_ACCESS_READ);
	example_say("checksum", "%016llx",
		    (unsigned long long)example_checksum(p, dmabroker_buffer_get_size(buf)));
	dmabroker_buffer_end_cpu_access(buf, DMABROKER_ACCESS_READ);
	for (int i = 0; i < tokens; i++)
		example_share(ex, buf);
	example_say("ready", "holding");
	example_hold();
	dmabroker_release(buf);
	return 0;
}

/* The name the kernel keeps for a dma-buf (DMA_BUF_SET_NAME), from this process's fdinfo. */
static void say_kernel_name(int fd)
{
	char path[64], line[256];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "name:", 5) == 0) {
			line[strcspn(line, "\n")] = '\0';
			example_say("kernel-name", "%s", line + 5 + strspn(line + 5, "\t "));
		}
	fclose(f);
}

static int cmd_read(struct example *ex, int argc, char **argv)
{
	struct dmabroker_buffer *buf;
	struct dmabroker_token token;
	uint32_t vivid_w = 0, vivid_h = 0;
	bool hold = false;
	const uint8_t *p;
	int r;

	example_parse_token(ex, argc > 0 ? argv[0] : NULL, &token);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--vivid-yuyv") && i + 1 < argc)
			sscanf(argv[++i], "%ux%u", &vivid_w, &vivid_h);
		else if (!strcmp(argv[i], "--hold"))
			hold = true;
	}
	r = dmabroker_import(ex->ctx, &token, &buf);
	if (r < 0)
		example_die(ex, "import: %s", strerror(-r));
	example_say("buffer", "%s", dmabroker_buffer_get_path(buf));
	example_say("path", "%s",
		    dmabroker_buffer_get_attach_path(buf) == DMABROKER_PATH_CACHED ? "cached"
										   : "direct");
	example_say("size", "%llu", (unsigned long long)dmabroker_buffer_get_size(buf));
	say_kernel_name(dmabroker_buffer_get_fd(buf));
	r = dmabroker_buffer_map(buf, (void **)&p);
	if (r < 0)
		example_die(ex, "map: %s", strerror(-r));
	dmabroker_buffer_begin_cpu_access(buf, DMABROKER_ACCESS_READ);
	example_say("checksum", "%016llx",
		    (unsigned long long)example_checksum(p, dmabroker_buffer_get_size(buf)));
	if (vivid_w) {
		uint32_t stride = dmabroker_buffer_get_plane_count(buf)
					  ? dmabroker_buffer_get_stride(buf, 0)
					  : vivid_w * 2;

		example_say("vivid-pattern", "%s",
			    is_vivid_colorbar_yuyv(p, vivid_w, vivid_h, stride) ? "ok" : "absent");
	}
	dmabroker_buffer_end_cpu_access(buf, DMABROKER_ACCESS_READ);
	if (hold) {
		example_say("ready", "holding");
		example_hold();
	}
	dmabroker_release(buf);
	return 0;
}

static int cmd_stream(struct example *ex, int argc, char **argv)
{
	struct stream_consumer_opts o = {
		.name = argc > 0 ? argv[0] : NULL, .label = "cpu", .drm = -1};

	if (!o.name)
		example_die(ex, "stream NAME");
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--implicit"))
			o.implicit = true;
		else if (!strcmp(argv[i], "--bars"))
			o.colour_bars = true;
		else if (!strcmp(argv[i], "--allow-missed"))
			o.allow_missed = true;
		else if (!strcmp(argv[i], "--keep") && i + 1 < argc)
			o.keep = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--report") && i + 1 < argc)
			o.report = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--label") && i + 1 < argc)
			o.label = argv[++i];
	}
	return stream_consume(ex, &o);
}

static int cmd_stream_produce(struct example *ex, int argc, char **argv)
{
	static const uint32_t yuyv = DRM_FORMAT_YUYV;
	struct stream_producer_opts o = {
		.name = argc > 0 ? argv[0] : NULL,
		.consumers = 1,
		.format = {.fourcc = DRM_FORMAT_YUYV, .width = 640, .height = 360},
	};
	struct dmabroker_constraints c = {
		.min_buffers_for_camping = 1,
		.min_buffers = 6,
		.fourccs = &yuyv,
		.n_fourccs = 1,
		.width = 640,
		.height = 360,
		.cpu_write = true,
	};
	struct dmabroker_collection *col;
	int r;

	if (!o.name)
		example_die(ex, "stream-produce NAME");
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--fence"))
			o.fence = true;
		else if (!strcmp(argv[i], "--frames") && i + 1 < argc)
			o.frames = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--consumers") && i + 1 < argc)
			o.consumers = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--after-left") && i + 1 < argc)
			o.after_left = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--interval-ms") && i + 1 < argc)
			o.interval_ms = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--buffers") && i + 1 < argc)
			c.min_buffers = (uint32_t)atoi(argv[++i]);
	}
	/* Only this participant: the consumers join the stream, and the collection, later. */
	r = dmabroker_collection_create(ex->ctx, o.name, 1, &col);
	if (r >= 0)
		r = dmabroker_collection_set_constraints(col, &c, sizeof(c));
	if (r >= 0)
		r = dmabroker_collection_wait(col);
	if (r < 0)
		example_die(ex, "collection: %s", strerror(-r));
	example_say("backend", "%s", dmabroker_collection_get_info(col)->backend);
	r = stream_produce(ex, col, stream_cpu_source_new(ex, col), &o);
	dmabroker_collection_leave(col);
	return r;
}

int main(int argc, char **argv)
{
	struct example ex;
	int r;

	if (argc < 2) {
		fprintf(stderr,
			"usage: cpu-client allocate|read|collection|stream|stream-produce ...\n");
		return 2;
	}
	for (int i = 2; i < argc; i++)
		if (!strcmp(argv[i], "--dynamic"))
			dynamic = true;
	example_start(&ex, "cpu-client", "cpu", dynamic, NULL);
	if (!strcmp(argv[1], "allocate"))
		r = cmd_allocate(&ex, argc - 2, argv + 2);
	else if (!strcmp(argv[1], "read"))
		r = cmd_read(&ex, argc - 2, argv + 2);
	else if (!strcmp(argv[1], "collection"))
		r = cmd_collection(&ex, argc - 2, argv + 2);
	else if (!strcmp(argv[1], "stream"))
		r = cmd_stream(&ex, argc - 2, argv + 2);
	else if (!strcmp(argv[1], "stream-produce"))
		r = cmd_stream_produce(&ex, argc - 2, argv + 2);
	else
		example_die(&ex, "unknown command %s", argv[1]);
	example_finish(&ex);
	return r;
}
