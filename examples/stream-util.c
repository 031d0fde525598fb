// SPDX-License-Identifier: MIT
#include "stream-util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <linux/dma-buf.h>
#include <xf86drm.h>

/* include/uapi/drm/vgem_drm.h: no distribution ships it to userspace. */
struct stream_vgem_fence_attach {
	uint32_t handle;
	uint32_t flags;
#define STREAM_VGEM_FENCE_WRITE 0x1
	uint32_t out_fence;
	uint32_t pad;
};

struct stream_vgem_fence_signal {
	uint32_t fence;
	uint32_t flags;
};

#define STREAM_IOCTL_VGEM_FENCE_ATTACH \
	DRM_IOWR(DRM_COMMAND_BASE + 0x1, struct stream_vgem_fence_attach)
#define STREAM_IOCTL_VGEM_FENCE_SIGNAL \
	DRM_IOW(DRM_COMMAND_BASE + 0x2, struct stream_vgem_fence_signal)

#define STREAM_MAX_BUFFERS 64
#define STREAM_MAX_KEEP 16
/* How long a producer with a fence waits between queueing a frame and writing its marker:
 * long enough that a consumer which does not wait for the fence reads the old marker. */
#define STREAM_FENCE_WINDOW_US 3000

static const uint64_t marker_magic = 0x6d61727365727331ull;

void stream_write_marker(uint8_t *p, uint64_t size, uint64_t marker)
{
	uint64_t m[2] = {marker, ~marker ^ marker_magic};

	memcpy(p + size - STREAM_MARKER_SIZE, m, sizeof(m));
}

uint64_t stream_read_marker(const uint8_t *p, uint64_t size)
{
	uint64_t m[2];

	memcpy(m, p + size - STREAM_MARKER_SIZE, sizeof(m));
	return m[1] == (~m[0] ^ marker_magic) ? m[0] : 0;
}

uint64_t stream_checksum(const uint8_t *p, uint64_t size, uint64_t marker)
{
	uint64_t m[2] = {marker, ~marker ^ marker_magic};
	const uint8_t *b = (const uint8_t *)m;
	uint64_t h = 0xcbf29ce484222325ull;

	for (uint64_t i = 0; i < size - STREAM_MARKER_SIZE; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	for (size_t i = 0; i < sizeof(m); i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* vivid's 75% colour bars: white, yellow, cyan, green, magenta, red, blue, black. */
static const uint8_t bar_luma[8] = {180, 162, 131, 112, 84, 65, 35, 16};

bool stream_colour_bars_yuyv(const uint8_t *p, uint32_t width, uint32_t stride, uint32_t row)
{
	const uint8_t *line = p + (size_t)stride * row;
	int last = 256;

	for (int bar = 0; bar < 8; bar++) {
		uint32_t x = (uint32_t)((2 * bar + 1) * width / 16) & ~1u;
		int y = line[x * 2]; /* YUYV: luma at even bytes */

		if (y >= last)
			return false;
		last = y;
	}
	/* 75% white is well above 150, black near 16: not just any falling ramp. */
	return line[(width / 16) * 2] > 150 && last < 40;
}

void stream_draw_colour_bars_yuyv(uint8_t *p, uint32_t width, uint32_t height, uint32_t stride)
{
	for (uint32_t y = 0; y < height; y++) {
		uint8_t *line = p + (size_t)stride * y;

		for (uint32_t x = 0; x < width; x++) {
			line[2 * x] = bar_luma[x * 8 / width];
			line[2 * x + 1] = 128;
		}
	}
}

int stream_open_vgem(const char *prefix, int first, char *path, size_t len)
{
	for (int i = first; i < first + 64; i++) {
		drmVersionPtr v;
		int fd;

		snprintf(path, len, "/dev/dri/%s%d", prefix, i);
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			continue;
		v = drmGetVersion(fd);
		if (v && strcmp(v->name, "vgem") == 0) {
			drmFreeVersion(v);
			return fd;
		}
		if (v)
			drmFreeVersion(v);
		close(fd);
	}
	return -ENODEV;
}

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void sync_fd(int fd, uint64_t flags)
{
	struct dma_buf_sync sync = {.flags = flags};

	/* ENOTTY on a memfd: nothing to synchronise. */
	while (ioctl(fd, DMA_BUF_IOCTL_SYNC, &sync) < 0 && (errno == EINTR || errno == EAGAIN))
		;
}

enum {
	POLL_CTX,
	POLL_STDIN,
	POLL_EXTRA,
	POLL_N
};

/*
 * Waits for the context, stdin (unless closed) or extra (when >= 0), at most timeout_ms (-1:
 * as long as the context allows), and dispatches the context. Returns the revents of stdin
 * and extra through the pointers; negative errno when the context failed.
 */
static int wait_and_dispatch(struct dmabroker *ctx, bool watch_stdin, int extra, int timeout_ms,
			     short *ret_stdin, short *ret_extra)
{
	struct pollfd p[POLL_N] = {
		[POLL_CTX] = {dmabroker_get_fd(ctx), (short)dmabroker_get_events(ctx), 0},
		[POLL_STDIN] = {watch_stdin ? STDIN_FILENO : -1, POLLIN, 0},
		[POLL_EXTRA] = {extra, POLLIN, 0},
	};
	uint64_t until;
	int r;

	if (dmabroker_get_timeout(ctx, &until) >= 0 && until != UINT64_MAX) {
		uint64_t now = now_usec();
		int ms = until <= now ? 0 : (int)((until - now + 999) / 1000);

		if (timeout_ms < 0 || ms < timeout_ms)
			timeout_ms = ms;
	}
	r = poll(p, POLL_N, timeout_ms);
	if (r < 0 && errno != EINTR)
		return -errno;
	*ret_stdin = r > 0 ? p[POLL_STDIN].revents : 0;
	*ret_extra = r > 0 ? p[POLL_EXTRA].revents : 0;
	r = dmabroker_dispatch(ctx);
	return r < 0 ? r : 0;
}

/* Reads what stdin has: false at its end. */
static bool stdin_alive(void)
{
	char buf[64];
	ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));

	return n > 0 || (n < 0 && (errno == EINTR || errno == EAGAIN));
}

/* --- the producer --- */

enum buffer_state {
	BUFFER_FREE, /* the stream's: dmabroker_stream_get_free() hands it out */
	BUFFER_TAKEN, /* taken from the stream, not with the source (it stopped) */
	BUFFER_SOURCE, /* being filled */
	BUFFER_OUT, /* queued to the stream, not yet back */
};

struct producer {
	struct example *ex;
	const struct stream_producer_opts *o;
	struct stream_source *src;
	struct dmabroker_stream *s;
	unsigned n;
	uint8_t *map[STREAM_MAX_BUFFERS];
	uint64_t size[STREAM_MAX_BUFFERS];
	uint32_t handle[STREAM_MAX_BUFFERS];
	enum buffer_state state[STREAM_MAX_BUFFERS];
	int drm; /* vgem, for the fences; -1 without */
	/* A vgem buffer of its own whose fence is not on the frame's buffer: every other frame
	 * gets its acquire fence from there, so that only the consumer's wait (or its library's
	 * import, in implicit sync) orders its reads after the marker. */
	int fence_card, fence_prime;
	uint32_t fence_handle;
	unsigned joined;
	uint64_t sent, sent_after_left, marker;
	uint64_t last_return_usec;
	bool capturing, left, ended;
};

static unsigned producer_outstanding(const struct producer *p)
{
	unsigned out = 0;

	for (unsigned i = 0; i < p->n; i++)
		out += p->state[i] == BUFFER_OUT;
	return out;
}

static void producer_give(struct producer *p, uint32_t index)
{
	int r;

	p->state[index] = BUFFER_SOURCE;
	r = p->src->give(p->src, index);
	if (r < 0)
		example_die(p->ex, "the source refused buffer %u: %s", index, strerror(-r));
}

/* Every buffer the producer may write goes to the source: those it took before, then every
 * free one the stream has. */
static void producer_refill(struct producer *p)
{
	uint32_t index;
	int r;

	for (unsigned i = 0; i < p->n; i++)
		if (p->state[i] == BUFFER_TAKEN)
			producer_give(p, i);
	while ((r = dmabroker_stream_get_free(p->s, &index)) >= 0) {
		if (index >= p->n || p->state[index] != BUFFER_FREE)
			example_die(p->ex, "get_free handed out buffer %u, which is not free",
				    index);
		producer_give(p, index);
	}
	if (r != -EAGAIN)
		example_die(p->ex, "get_free: %s", strerror(-r));
}

static void on_buffer_returned(struct dmabroker_stream *s, uint32_t index, int release_fence,
			       void *userdata)
{
	struct producer *p = userdata;

	if (index >= p->n || p->state[index] != BUFFER_OUT)
		example_die(p->ex, "buffer %u came back but was not out", index);
	p->state[index] = BUFFER_FREE;
	p->last_return_usec = now_usec();
	/* A release fence (explicit consumers) must signal before the buffer is written. */
	if (release_fence >= 0 && dmabroker_fence_wait(release_fence, 20 * 1000000ull) < 0)
		example_die(p->ex, "the release fence of buffer %u never signalled", index);
}

static void on_producer_ended(struct dmabroker_stream *s, const char *reason, void *userdata)
{
	struct producer *p = userdata;

	p->ended = true;
	example_say("ended", "%s", reason ? reason : "");
}

static void on_joined(struct dmabroker_stream *s, uint32_t consumer, void *userdata)
{
	struct producer *p = userdata;

	p->joined++;
	example_say("joined", "%u", consumer);
}

static void on_left(struct dmabroker_stream *s, uint32_t consumer, const char *reason,
		    void *userdata)
{
	struct producer *p = userdata;

	p->left = true;
	example_say("left", "%u %s", consumer, reason ? reason : "");
}

static void producer_map(struct producer *p, struct dmabroker_collection *col)
{
	char node[64];
	int r;

	p->n = dmabroker_collection_get_buffer_count(col);
	if (p->n > STREAM_MAX_BUFFERS)
		example_die(p->ex, "%u buffers, at most %d here", p->n, STREAM_MAX_BUFFERS);
	p->drm = p->fence_card = p->fence_prime = -1;
	if (p->o->fence) {
		struct drm_mode_create_dumb dumb = {.width = 64, .height = 64, .bpp = 32};

		p->drm = stream_open_vgem("renderD", 128, node, sizeof(node));
		p->fence_card = stream_open_vgem("card", 0, node, sizeof(node));
		if (p->drm < 0 || p->fence_card < 0)
			example_die(p->ex, "--fence needs vgem: no vgem node");
		if (drmIoctl(p->fence_card, DRM_IOCTL_MODE_CREATE_DUMB, &dumb) < 0 ||
		    drmPrimeHandleToFD(p->fence_card, dumb.handle, DRM_CLOEXEC | DRM_RDWR,
				       &p->fence_prime) < 0)
			example_die(p->ex, "a vgem buffer for detached fences: %s",
				    strerror(errno));
		p->fence_handle = dumb.handle;
	}
	for (unsigned i = 0; i < p->n; i++) {
		struct dmabroker_buffer *buf = dmabroker_collection_get_buffer(col, i);

		p->size[i] = dmabroker_buffer_get_size(buf);
		r = dmabroker_buffer_map(buf, (void **)&p->map[i]);
		if (r < 0)
			example_die(p->ex, "map buffer %u: %s", i, strerror(-r));
		/* The buffer's own reservation takes the fence: import it into vgem once. */
		if (p->drm >= 0 &&
		    drmPrimeFDToHandle(p->drm, dmabroker_buffer_get_fd(buf), &p->handle[i]) < 0)
			example_die(p->ex, "drmPrimeFDToHandle of buffer %u: %s%s", i,
				    strerror(errno),
				    dmabroker_buffer_is_dmabuf(buf) ? "" : " (not a dma-buf)");
	}
}

static void producer_emit(struct producer *p, uint32_t index, uint64_t timestamp_ns)
{
	struct dmabroker_collection *col = dmabroker_stream_get_collection(p->s);
	int fd = dmabroker_buffer_get_fd(dmabroker_collection_get_buffer(col, index));
	struct dmabroker_frame f = {
		.index = index,
		.timestamp_ns = timestamp_ns,
		.meta_type = DMABROKER_FRAME_META_OPAQUE,
		.meta_size = sizeof(struct stream_meta),
		.acquire_fence = -1,
	};
	struct stream_vgem_fence_attach attach = {0};
	struct stream_meta meta;
	/* Odd frames: the fence is elsewhere and handed over explicitly. */
	bool detached = p->drm >= 0 && p->marker % 2 == 0;
	int fence_fd = detached ? p->fence_card : p->drm;
	int r;

	meta.marker = ++p->marker;
	sync_fd(fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ);
	meta.checksum = stream_checksum(p->map[index], p->size[index], meta.marker);
	sync_fd(fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ);
	memcpy(f.meta, &meta, sizeof(meta));
	if (p->drm < 0) {
		/* No fence to order it: the marker goes in before the frame leaves. */
		sync_fd(fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE);
		stream_write_marker(p->map[index], p->size[index], meta.marker);
		sync_fd(fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE);
	} else {
		/* Even frames: an unsignalled write fence on the buffer itself, which the
		 * library (implicit sync) exports as the frame's acquire fence. Odd frames: the
		 * fence of the producer's own vgem buffer, exported here and given to the frame:
		 * the frame's buffer then has no fence of its own. */
		attach.handle = detached ? p->fence_handle : p->handle[index];
		attach.flags = STREAM_VGEM_FENCE_WRITE;
		if (drmIoctl(fence_fd, STREAM_IOCTL_VGEM_FENCE_ATTACH, &attach) < 0)
			example_die(p->ex, "DRM_IOCTL_VGEM_FENCE_ATTACH: %s", strerror(errno));
		if (detached) {
			struct dma_buf_export_sync_file exp = {.flags = DMA_BUF_SYNC_READ,
							       .fd = -1};

			if (ioctl(p->fence_prime, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, &exp) < 0)
				example_die(p->ex, "DMA_BUF_IOCTL_EXPORT_SYNC_FILE: %s",
					    strerror(errno));
			f.acquire_fence = exp.fd;
		}
	}
	p->state[index] = BUFFER_OUT;
	r = dmabroker_stream_queue(p->s, &f);
	if (f.acquire_fence >= 0)
		close(f.acquire_fence); /* borrowed by the queue: the library sent its own */
	if (r < 0)
		example_die(p->ex, "queue buffer %u: %s", index, strerror(-r));
	if (p->drm >= 0) {
		struct stream_vgem_fence_signal signal = {.fence = attach.out_fence};

		/* The frame is out and its consumers may look: the marker comes only now, the
		 * way a device's write lands after the work was queued, and no
		 * DMA_BUF_IOCTL_SYNC here (it would wait for our own fence). */
		usleep(STREAM_FENCE_WINDOW_US);
		stream_write_marker(p->map[index], p->size[index], meta.marker);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (drmIoctl(fence_fd, STREAM_IOCTL_VGEM_FENCE_SIGNAL, &signal) < 0)
			example_die(p->ex, "DRM_IOCTL_VGEM_FENCE_SIGNAL: %s", strerror(errno));
	}
	p->sent++;
	if (p->left)
		p->sent_after_left++;
	if (p->sent == p->o->frames)
		example_say("sent", "%llu", (unsigned long long)p->sent);
}

/* Stops the source, ends the stream when asked, and waits until no buffer came back for a
 * second: what is still out then is held by the consumers. */
static void producer_pause(struct producer *p, bool end_of_stream)
{
	uint32_t back[STREAM_MAX_BUFFERS];
	unsigned n_back;
	short in, extra;
	int r;

	p->capturing = false;
	n_back = p->src->stop(p->src, back, STREAM_MAX_BUFFERS);
	for (unsigned i = 0; i < n_back; i++)
		p->state[back[i]] = BUFFER_TAKEN;
	if (end_of_stream) {
		struct dmabroker_frame eos = {
			.index = DMABROKER_FRAME_NO_BUFFER,
			.flags = DMABROKER_FRAME_END_OF_STREAM,
			.acquire_fence = -1,
		};

		r = dmabroker_stream_queue(p->s, &eos);
		if (r < 0)
			example_die(p->ex, "queue the end of the stream: %s", strerror(-r));
	}
	p->last_return_usec = now_usec();
	while (producer_outstanding(p) > 0 && now_usec() - p->last_return_usec < 1000000) {
		r = wait_and_dispatch(p->ex->ctx, false, -1, 100, &in, &extra);
		if (r < 0)
			example_die(p->ex, "dispatch: %s", strerror(-r));
	}
	example_say("outstanding", "%u", producer_outstanding(p));
	example_say("ready", "paused");
}

int stream_produce(struct example *ex, struct dmabroker_collection *col, struct stream_source *src,
		   const struct stream_producer_opts *o)
{
	const struct dmabroker_stream_handlers handlers = {
		.buffer_returned = on_buffer_returned,
		.ended = on_producer_ended,
		.consumer_joined = on_joined,
		.consumer_left = on_left,
	};
	struct dmabroker_stream_options so = {
		.name = o->name,
		.mode = DMABROKER_STREAM_FIFO,
		.format = o->format,
		.sync = DMABROKER_SYNC_IMPLICIT,
	};
	struct producer p = {.ex = ex, .o = o, .src = src};
	uint64_t next_usec = 0;
	bool paused = false;
	int r;

	producer_map(&p, col);
	r = dmabroker_stream_create(col, &so, sizeof(so), &handlers, sizeof(handlers), &p, &p.s);
	if (r < 0)
		example_die(ex, "create the stream: %s", strerror(-r));
	example_say("stream", "%s", dmabroker_stream_get_path(p.s));
	example_say("buffers", "%u", p.n);
	example_say("fence", "%s", p.drm >= 0 ? "vgem" : "none");
	example_say("ready", "waiting");
	for (;;) {
		short in = 0, extra = 0;
		int timeout = -1;

		/* Once every consumer is there, the source gets every buffer it can. */
		if (!p.capturing && !paused && !p.ended && p.joined >= o->consumers)
			p.capturing = true;
		if (p.capturing && !p.ended)
			producer_refill(&p);
		while (p.capturing && !p.ended) {
			uint64_t ts, now = now_usec();
			uint32_t index;

			if (now < next_usec) {
				timeout = (int)((next_usec - now + 999) / 1000);
				break;
			}
			r = src->take(src, &index, &ts);
			if (r == -EAGAIN)
				break;
			if (r < 0)
				example_die(ex, "the source failed: %s", strerror(-r));
			producer_emit(&p, index, ts);
			next_usec = now + (uint64_t)o->interval_ms * 1000;
			if ((o->after_left && p.left && p.sent_after_left >= o->after_left) ||
			    (!o->after_left && o->frames && p.sent >= o->frames)) {
				producer_pause(&p, !o->after_left);
				paused = true;
			}
			/* Returned buffers and newly joined consumers between frames. */
			break;
		}
		r = wait_and_dispatch(ex->ctx, true, p.capturing ? src->fd : -1, timeout, &in,
				      &extra);
		if (r < 0)
			example_die(ex, "dispatch: %s", strerror(-r));
		if ((in & (POLLIN | POLLHUP)) && !stdin_alive())
			break;
	}
	if (p.capturing) {
		uint32_t back[STREAM_MAX_BUFFERS];

		src->stop(src, back, STREAM_MAX_BUFFERS);
	}
	dmabroker_stream_free(p.s, "the producer is done");
	if (p.drm >= 0) {
		for (unsigned i = 0; i < p.n; i++)
			drmCloseBufferHandle(p.drm, p.handle[i]);
		close(p.drm);
		close(p.fence_prime);
		drmIoctl(p.fence_card, DRM_IOCTL_MODE_DESTROY_DUMB,
			 &(struct drm_mode_destroy_dumb){.handle = p.fence_handle});
		close(p.fence_card);
	}
	return 0;
}

/* --- the consumer --- */

struct held_frame {
	uint32_t index;
	struct stream_meta meta;
};

struct consumer {
	struct example *ex;
	const struct stream_consumer_opts *o;
	struct dmabroker_stream *s;
	unsigned keep;
	uint32_t handle[STREAM_MAX_BUFFERS];
	bool imported[STREAM_MAX_BUFFERS];
	struct held_frame held[STREAM_MAX_KEEP + 1];
	unsigned n_held;
	uint64_t last_seq, last_marker;
	uint64_t checked, bad, fenced, pending, bars, imports;
	char first_bad[256];
	bool ended, eos;
};

__attribute__((format(printf, 2, 3))) static void consumer_bad(struct consumer *c, const char *fmt,
							       ...)
{
	va_list ap;

	c->bad++;
	if (c->first_bad[0])
		return;
	va_start(ap, fmt);
	vsnprintf(c->first_bad, sizeof(c->first_bad), fmt, ap);
	va_end(ap);
	example_say("first-bad", "%s", c->first_bad);
}

static void consumer_report(const struct consumer *c)
{
	example_say("checked", "%llu bad %llu fenced %llu pending %llu imported %llu bars %llu",
		    (unsigned long long)c->checked, (unsigned long long)c->bad,
		    (unsigned long long)c->fenced, (unsigned long long)c->pending,
		    (unsigned long long)c->imports, (unsigned long long)c->bars);
}

/* The buffer's bytes against the producer's checksum; with its mapping and size. */
static bool consumer_read(struct consumer *c, uint32_t index, const struct stream_meta *meta,
			  bool *ret_bars, uint64_t *ret_marker)
{
	struct dmabroker_buffer *buf = dmabroker_stream_get_buffer(c->s, index);
	const struct dmabroker_stream_format *fmt = dmabroker_stream_get_format(c->s);
	uint64_t size = dmabroker_buffer_get_size(buf);
	const uint8_t *p;
	bool same;
	int r;

	r = dmabroker_buffer_map(buf, (void **)&p);
	if (r < 0) {
		consumer_bad(c, "map buffer %u: %s", index, strerror(-r));
		return false;
	}
	/* On a dma-buf this waits for the buffer's fences (the implicit consumer's only
	 * wait): the acquire fence the library imported, and the producer's own. */
	dmabroker_buffer_begin_cpu_access(buf, DMABROKER_ACCESS_READ);
	*ret_marker = stream_read_marker(p, size);
	same = example_checksum(p, size) == meta->checksum;
	if (ret_bars && fmt->width && fmt->height) {
		uint32_t stride = dmabroker_buffer_get_plane_count(buf)
					  ? dmabroker_buffer_get_stride(buf, 0)
					  : fmt->width * 2;

		*ret_bars = stream_colour_bars_yuyv(p, fmt->width, stride, 0) &&
			    stream_colour_bars_yuyv(p, fmt->width, stride, fmt->height / 2) &&
			    stream_colour_bars_yuyv(p, fmt->width, stride, fmt->height - 1);
	}
	dmabroker_buffer_end_cpu_access(buf, DMABROKER_ACCESS_READ);
	return same;
}

static void on_frame(struct dmabroker_stream *s, const struct dmabroker_frame *f, void *userdata)
{
	struct consumer *c = userdata;
	struct stream_meta meta;
	uint64_t marker = 0;
	bool bars = false;
	int r;

	if (f->flags & DMABROKER_FRAME_END_OF_STREAM && f->index == DMABROKER_FRAME_NO_BUFFER) {
		c->eos = true;
		consumer_report(c);
		example_say("done", "end-of-stream");
		return;
	}
	c->checked++;
	if (f->seq <= c->last_seq && c->checked > 1)
		consumer_bad(c, "seq %llu after %llu", (unsigned long long)f->seq,
			     (unsigned long long)c->last_seq);
	c->last_seq = f->seq;
	if (f->meta_type != DMABROKER_FRAME_META_OPAQUE || f->meta_size != sizeof(meta)) {
		consumer_bad(c, "frame %llu: metadata type %u size %u", (unsigned long long)f->seq,
			     f->meta_type, f->meta_size);
		memset(&meta, 0, sizeof(meta));
	} else {
		memcpy(&meta, f->meta, sizeof(meta));
	}
	if (!c->o->allow_missed && c->last_marker && meta.marker != c->last_marker + 1)
		consumer_bad(c, "frame %llu came after %llu (FIFO loses none)",
			     (unsigned long long)meta.marker, (unsigned long long)c->last_marker);
	c->last_marker = meta.marker;
	if (f->acquire_fence >= 0) {
		struct pollfd pfd = {f->acquire_fence, POLLIN, 0};

		c->fenced++;
		/* Not signalled yet: the producer is still writing, so the wait below matters. */
		if (poll(&pfd, 1, 0) == 0)
			c->pending++;
		r = dmabroker_fence_wait(f->acquire_fence, 20 * 1000000ull);
		if (r < 0)
			consumer_bad(c, "frame %llu: the acquire fence: %s",
				     (unsigned long long)meta.marker, strerror(-r));
		/* The explicit consumer's check: after the fence alone, before any
		 * DMA_BUF_IOCTL_SYNC (which would wait on the buffer's fences itself). */
		if (!c->o->implicit) {
			struct dmabroker_buffer *buf = dmabroker_stream_get_buffer(s, f->index);
			const uint8_t *p;

			if (dmabroker_buffer_map(buf, (void **)&p) >= 0 &&
			    stream_read_marker(p, dmabroker_buffer_get_size(buf)) != meta.marker)
				consumer_bad(c,
					     "frame %llu: its marker was not there once its "
					     "acquire fence signalled",
					     (unsigned long long)meta.marker);
		}
	}
	if (c->o->drm >= 0 && f->index < STREAM_MAX_BUFFERS && !c->imported[f->index]) {
		int fd = dmabroker_buffer_get_fd(dmabroker_stream_get_buffer(s, f->index));

		/* The kernel attaches vgem's device to the dma-buf here. */
		if (drmPrimeFDToHandle(c->o->drm, fd, &c->handle[f->index]) < 0) {
			consumer_bad(c, "drmPrimeFDToHandle of buffer %u: %s", f->index,
				     strerror(errno));
		} else {
			c->imported[f->index] = true;
			c->imports++;
		}
	}
	if (!consumer_read(c, f->index, &meta, c->o->colour_bars ? &bars : NULL, &marker))
		consumer_bad(c, "frame %llu: checksum differs from the producer's (marker %llu)",
			     (unsigned long long)meta.marker, (unsigned long long)marker);
	if (marker != meta.marker)
		consumer_bad(c, "frame %llu: buffer %u holds marker %llu",
			     (unsigned long long)meta.marker, f->index, (unsigned long long)marker);
	if (c->o->colour_bars) {
		if (bars)
			c->bars++;
		else
			consumer_bad(c, "frame %llu: no colour bars",
				     (unsigned long long)meta.marker);
	}
	/* Hold the newest frames, give back the oldest. */
	c->held[c->n_held++] = (struct held_frame){f->index, meta};
	while (c->n_held > c->keep) {
		r = dmabroker_stream_release(s, c->held[0].index, -1);
		if (r < 0)
			consumer_bad(c, "release buffer %u: %s", c->held[0].index, strerror(-r));
		memmove(c->held, c->held + 1, --c->n_held * sizeof(c->held[0]));
	}
	if (c->o->report && c->checked % c->o->report == 0)
		consumer_report(c);
}

static void on_consumer_ended(struct dmabroker_stream *s, const char *reason, void *userdata)
{
	struct consumer *c = userdata;
	unsigned ok = 0;

	c->ended = true;
	example_say("ended", "%s", reason ? reason : "");
	/* What it holds stays readable once its producer is gone. */
	for (unsigned i = 0; i < c->n_held; i++) {
		uint64_t marker;

		ok += consumer_read(c, c->held[i].index, &c->held[i].meta, NULL, &marker) &&
		      marker == c->held[i].meta.marker;
	}
	example_say("held-after-end", "%u ok %u", c->n_held, ok);
}

int stream_consume(struct example *ex, const struct stream_consumer_opts *o)
{
	const struct dmabroker_stream_handlers handlers = {
		.frame = on_frame,
		.ended = on_consumer_ended,
	};
	struct consumer c = {.ex = ex, .o = o, .keep = o->keep ? o->keep : 1};
	struct dmabroker_stream_options so = {
		.sync = o->implicit ? DMABROKER_SYNC_IMPLICIT : DMABROKER_SYNC_EXPLICIT,
		.label = o->label,
		/* Holding keep frames, it gets the next before giving back the oldest. */
		.max_held = c.keep + 1,
	};
	int r;

	if (c.keep > STREAM_MAX_KEEP)
		example_die(ex, "--keep %u: at most %d", c.keep, STREAM_MAX_KEEP);
	r = dmabroker_stream_join(ex->ctx, o->name, NULL, &so, sizeof(so), &handlers,
				  sizeof(handlers), &c, &c.s);
	if (r < 0)
		example_die(ex, "join stream %s: %s", o->name, strerror(-r));
	example_say("stream", "%s", dmabroker_stream_get_path(c.s));
	example_say("consumer", "%u", dmabroker_stream_get_consumer_id(c.s));
	example_say("buffers", "%u",
		    dmabroker_collection_get_buffer_count(dmabroker_stream_get_collection(c.s)));
	example_say("ready", "joined");
	for (;;) {
		short in = 0, extra = 0;

		r = wait_and_dispatch(ex->ctx, true, -1, -1, &in, &extra);
		if (r < 0)
			example_die(ex, "dispatch: %s", strerror(-r));
		if (in & (POLLIN | POLLHUP)) {
			if (!stdin_alive())
				break;
			consumer_report(&c);
		}
	}
	if (!c.ended)
		for (unsigned i = 0; i < c.n_held; i++)
			dmabroker_stream_release(c.s, c.held[i].index, -1);
	for (unsigned i = 0; o->drm >= 0 && i < STREAM_MAX_BUFFERS; i++)
		if (c.imported[i])
			drmCloseBufferHandle(o->drm, c.handle[i]);
	dmabroker_stream_free(c.s, NULL);
	return 0;
}

/* --- a source without a camera: the CPU draws the bars (it lives as long as the process) --- */

struct cpu_source {
	struct stream_source src;
	struct example *ex;
	struct dmabroker_collection *col;
	uint32_t ready[STREAM_MAX_BUFFERS];
	unsigned n_ready;
};

static int cpu_give(struct stream_source *src, uint32_t index)
{
	struct cpu_source *cs = (struct cpu_source *)src;
	struct dmabroker_buffer *buf = dmabroker_collection_get_buffer(cs->col, index);
	uint32_t w = dmabroker_buffer_get_width(buf), h = dmabroker_buffer_get_height(buf);
	uint64_t one = 1;
	uint8_t *p;
	int r;

	r = dmabroker_buffer_map(buf, (void **)&p);
	if (r < 0)
		return r;
	if (w && h) {
		dmabroker_buffer_begin_cpu_access(buf, DMABROKER_ACCESS_WRITE);
		stream_draw_colour_bars_yuyv(p, w, h, dmabroker_buffer_get_stride(buf, 0));
		dmabroker_buffer_end_cpu_access(buf, DMABROKER_ACCESS_WRITE);
	}
	cs->ready[cs->n_ready++] = index;
	return write(src->fd, &one, sizeof(one)) == sizeof(one) ? 0 : -errno;
}

static int cpu_take(struct stream_source *src, uint32_t *ret_index, uint64_t *ret_timestamp_ns)
{
	struct cpu_source *cs = (struct cpu_source *)src;
	uint64_t one;

	if (read(src->fd, &one, sizeof(one)) != sizeof(one))
		return errno == EAGAIN ? -EAGAIN : -errno;
	*ret_index = cs->ready[0];
	memmove(cs->ready, cs->ready + 1, --cs->n_ready * sizeof(cs->ready[0]));
	*ret_timestamp_ns = now_usec() * 1000;
	return 0;
}

static unsigned cpu_stop(struct stream_source *src, uint32_t *ret_index, unsigned n)
{
	struct cpu_source *cs = (struct cpu_source *)src;
	unsigned got = 0;
	uint64_t one;

	while (read(src->fd, &one, sizeof(one)) == sizeof(one))
		;
	for (; got < cs->n_ready && got < n; got++)
		ret_index[got] = cs->ready[got];
	cs->n_ready = 0;
	return got;
}

struct stream_source *stream_cpu_source_new(struct example *ex, struct dmabroker_collection *col)
{
	struct cpu_source *cs;

	if (dmabroker_collection_get_buffer_count(col) > STREAM_MAX_BUFFERS)
		example_die(ex, "at most %d buffers", STREAM_MAX_BUFFERS);
	cs = calloc(1, sizeof(*cs));
	if (!cs)
		example_die(ex, "out of memory");
	cs->src = (struct stream_source){.give = cpu_give, .take = cpu_take, .stop = cpu_stop};
	cs->ex = ex;
	cs->col = col;
	/* A semaphore: one count per buffer drawn and not yet taken. */
	cs->src.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE);
	if (cs->src.fd < 0)
		example_die(ex, "eventfd: %s", strerror(errno));
	return &cs->src;
}
