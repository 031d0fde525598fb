// SPDX-License-Identifier: MIT
/*
 * gst-frames: runs a GStreamer pipeline and says, one line per event, what a test needs to
 * know of it:
 *
 *   frame OFFSET CHECKSUM dmabuf=0|1 exp=EXPORTER name=NAME stride=STRIDE
 *                                                            each buffer reaching the element
 *                                                            named "check" (its sink pad)
 *   stream NAME PATH BUFFERS BACKEND                         dmabrokersink created its stream
 *   token HEX                                                a stream token dmabrokersink made
 *   error MESSAGE                                            the first error (exit status 1)
 *   eos                                                      the end (exit status 0)
 *
 *   gst-frames [--timeout SEC] PIPELINE-DESCRIPTION
 *
 * OFFSET is the buffer's offset (v4l2src: the driver's sequence number). CHECKSUM is FNV-1a
 * over the visible bytes of every row of every plane, read through the buffer's GstVideoMeta,
 * so buffers of different strides holding the same image agree. EXPORTER and NAME come from
 * /proc/self/fdinfo of the buffer's dma-buf ("-" when it is not one), STRIDE from its
 * GstVideoMeta (plane 0; -1 without one).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <gst/allocators/gstdmabuf.h>
#include <gst/gst.h>
#include <gst/video/video.h>

struct run {
	GMainLoop *loop;
	GstVideoInfo info;
	gboolean have_info;
	int status;
};

static uint64_t checksum_frame(GstVideoFrame *frame)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (guint p = 0; p < GST_VIDEO_FRAME_N_PLANES(frame); p++) {
		const guint8 *data = GST_VIDEO_FRAME_PLANE_DATA(frame, p);
		gint stride = GST_VIDEO_FRAME_PLANE_STRIDE(frame, p);
		gint comp[GST_VIDEO_MAX_COMPONENTS];
		gint width, rows, pstride;

		gst_video_format_info_component(frame->info.finfo, p, comp);
		width = GST_VIDEO_FRAME_COMP_WIDTH(frame, comp[0]);
		rows = GST_VIDEO_FRAME_COMP_HEIGHT(frame, comp[0]);
		pstride = GST_VIDEO_FRAME_COMP_PSTRIDE(frame, comp[0]);
		for (gint y = 0; y < rows; y++) {
			const guint8 *row = data + (gsize)y * (gsize)stride;

			for (gint x = 0; x < width * pstride; x++) {
				h ^= row[x];
				h *= 0x100000001b3ull;
			}
		}
	}
	return h;
}

/* The "exp_name:" and "name:" lines of a dma-buf's fdinfo. */
static void read_fdinfo(int fd, char *exp, size_t exp_len, char *name, size_t name_len)
{
	char path[64], line[256];
	FILE *f;

	snprintf(exp, exp_len, "-");
	snprintf(name, name_len, "-");
	if (fd < 0)
		return;
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		if (!strncmp(line, "exp_name:", 9))
			snprintf(exp, exp_len, "%s", line + 9 + strspn(line + 9, " \t"));
		else if (!strncmp(line, "name:", 5))
			snprintf(name, name_len, "%s", line + 5 + strspn(line + 5, " \t"));
	}
	fclose(f);
}

static GstPadProbeReturn on_buffer(GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
	struct run *run = data;
	GstBuffer *buf = GST_PAD_PROBE_INFO_BUFFER(info);
	GstMemory *mem = gst_buffer_n_memory(buf) ? gst_buffer_peek_memory(buf, 0) : NULL;
	gboolean dmabuf = mem && gst_is_dmabuf_memory(mem);
	char exp[64], name[64];
	GstVideoMeta *vmeta;
	GstVideoFrame frame;
	uint64_t sum = 0;

	if (!run->have_info) {
		GstCaps *caps = gst_pad_get_current_caps(pad);

		run->have_info = caps && gst_video_info_from_caps(&run->info, caps);
		if (caps)
			gst_caps_unref(caps);
	}
	if (run->have_info && gst_video_frame_map(&frame, &run->info, buf, GST_MAP_READ)) {
		sum = checksum_frame(&frame);
		gst_video_frame_unmap(&frame);
	}
	read_fdinfo(dmabuf ? gst_dmabuf_memory_get_fd(mem) : -1, exp, sizeof(exp), name,
		    sizeof(name));
	vmeta = gst_buffer_get_video_meta(buf);
	printf("frame %" G_GUINT64_FORMAT " %016" G_GINT64_MODIFIER
	       "x dmabuf=%d exp=%s name=%s stride=%d\n",
	       GST_BUFFER_OFFSET(buf), (guint64)sum, dmabuf, exp, name,
	       vmeta ? vmeta->stride[0] : -1);
	return GST_PAD_PROBE_OK;
}

static gboolean on_message(GstBus *bus, GstMessage *msg, gpointer data)
{
	struct run *run = data;
	const GstStructure *s;
	GError *error = NULL;
	char *debug = NULL;

	switch (GST_MESSAGE_TYPE(msg)) {
	case GST_MESSAGE_ERROR:
		gst_message_parse_error(msg, &error, &debug);
		printf("error %s\n", error->message);
		fprintf(stderr, "gst-frames: error from %s: %s (%s)\n", GST_OBJECT_NAME(msg->src),
			error->message, debug ? debug : "");
		g_error_free(error);
		g_free(debug);
		run->status = 1;
		g_main_loop_quit(run->loop);
		break;
	case GST_MESSAGE_EOS:
		printf("eos\n");
		g_main_loop_quit(run->loop);
		break;
	case GST_MESSAGE_ELEMENT:
		s = gst_message_get_structure(msg);
		if (gst_structure_has_name(s, "dmabrokersink-stream")) {
			guint buffers = 0;

			gst_structure_get_uint(s, "buffers", &buffers);
			printf("stream %s %s %u %s\n", gst_structure_get_string(s, "name"),
			       gst_structure_get_string(s, "path"), buffers,
			       gst_structure_get_string(s, "backend"));
		} else if (gst_structure_has_name(s, "dmabrokersink-token")) {
			printf("token %s\n", gst_structure_get_string(s, "token"));
		}
		break;
	default:
		break;
	}
	return G_SOURCE_CONTINUE;
}

static gboolean on_timeout(gpointer data)
{
	struct run *run = data;

	printf("error gst-frames: timed out\n");
	run->status = 2;
	g_main_loop_quit(run->loop);
	return G_SOURCE_REMOVE;
}

int main(int argc, char **argv)
{
	struct run run = {0};
	GstElement *pipeline, *check;
	GError *error = NULL;
	guint timeout = 300;
	int i = 1;

	setvbuf(stdout, NULL, _IOLBF, 0);
	gst_init(&argc, &argv);
	if (i + 1 < argc && !strcmp(argv[i], "--timeout")) {
		timeout = (guint)atoi(argv[i + 1]);
		i += 2;
	}
	if (i + 1 != argc) {
		fprintf(stderr, "usage: gst-frames [--timeout SEC] PIPELINE-DESCRIPTION\n");
		return 2;
	}
	pipeline = gst_parse_launch(argv[i], &error);
	if (!pipeline) {
		printf("error %s\n", error->message);
		g_error_free(error);
		return 1;
	}
	run.loop = g_main_loop_new(NULL, FALSE);
	check = gst_bin_get_by_name(GST_BIN(pipeline), "check");
	if (check) {
		GstPad *pad = gst_element_get_static_pad(check, "sink");

		gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, on_buffer, &run, NULL);
		gst_object_unref(pad);
		gst_object_unref(check);
	}
	gst_bus_add_watch(GST_ELEMENT_BUS(pipeline), on_message, &run);
	g_timeout_add_seconds(timeout, on_timeout, &run);
	if (gst_element_set_state(pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
		/* The error message says why; it is on the bus. */
		run.status = 1;
	}
	g_main_loop_run(run.loop);
	gst_element_set_state(pipeline, GST_STATE_NULL);
	gst_object_unref(pipeline);
	g_main_loop_unref(run.loop);
	return run.status;
}
