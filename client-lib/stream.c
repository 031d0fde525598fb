// SPDX-License-Identifier: MIT
/*
 * Streams (include/dmabroker.h, docs/streams.md): the calls that make, join and end them, the
 * broker's signals about their links, and what runs on the links from dispatch. The links'
 * sockets and the checks on what they carry are stream-link.c's.
 *
 * Callbacks run from dmabroker_dispatch() only: what an API call causes that a callback must
 * tell (a link that failed while sending, a frame that nobody took) is noted here and
 * streams_pending() keeps the context's fd readable until dispatch tells it.
 */
#include "libdmabroker-private.h"

#include <linux/sync_file.h>

#include "stream-link.h"

#define STREAM_OPTS_SIZE_V1 offsetofend(struct dmabroker_stream_options, label)
#define STREAM_HANDLERS_SIZE_V1 offsetofend(struct dmabroker_stream_handlers, consumer_left)
#define REASON_MAX 256

/* Each of the producer's buffers. */
enum buffer_state {
	BUF_FREE,
	BUF_TAKEN, /* the producer's: get_free handed it out, not queued yet */
	BUF_OUT, /* queued: consumers hold it */
	BUF_RETURNING, /* back: buffer_returned is told from dispatch, then it is free */
};

struct stream_buffer {
	enum buffer_state state;
	unsigned holders; /* links that hold it (their held[] say which) */
	int release_fence; /* owned: what the releases brought (explicit sync), or -1 */
};

struct dmabroker_stream {
	struct dmabroker *ctx;
	bool producer;
	char *path; /* NULL until the daemon answered */
	/* The producer's: the caller's (borrowed). A consumer's: the one joined, owned. */
	struct dmabroker_collection *col;
	unsigned buffer_count;
	struct dmabroker_stream_format format;
	enum dmabroker_stream_mode mode;
	enum dmabroker_sync sync;
	uint32_t max_held; /* consumer */
	struct dmabroker_stream_handlers handlers;
	void *userdata;
	bool ended; /* over: no link is left, nothing more is sent */
	bool ended_told; /* the ended callback ran (or must not run: freed) */
	/* Freed from a callback while dispatch walks the streams: freed at the walk's end. */
	bool zombie;
	char end_reason[REASON_MAX];
	/* Producer */
	struct stream_link *links;
	struct stream_buffer *buffers;
	uint64_t next_seq;
	/* Consumer */
	uint32_t consumer_id;
	struct stream_link *link; /* NULL once ended */
	char link_failed[REASON_MAX]; /* a send failed: dispatch ends the link with this */
	struct dmabroker_frame *wanted; /* wait_frame()'s frame to fill, or NULL */
	bool got_frame;
	/* join_async: the caller's callback once the buffers are fetched */
	dmabroker_stream_func_t join_done;
	void *join_userdata;
	struct dmabroker_stream *prev, *next;
};

/* --- objects --- */

static struct dmabroker_stream *stream_new(struct dmabroker *ctx, bool producer,
					   const struct dmabroker_stream_options *o,
					   const struct dmabroker_stream_handlers *h,
					   void *userdata)
{
	struct dmabroker_stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->ctx = ctx;
	s->producer = producer;
	s->mode = o->mode;
	s->sync = o->sync;
	s->format = o->format;
	s->max_held = o->max_held ? o->max_held : 1;
	s->handlers = *h;
	s->userdata = userdata;
	s->next = ctx->streams;
	if (ctx->streams)
		ctx->streams->prev = s;
	ctx->streams = s;
	return s;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void link_unwatch(struct dmabroker *ctx, struct stream_link *l)
{
	if (l->in_epoll)
		(void)epoll_ctl(ctx->epoll_fd, EPOLL_CTL_DEL, l->fd, NULL);
	l->in_epoll = false;
}

static void link_drop(struct dmabroker *ctx, struct stream_link *l)
{
	link_unwatch(ctx, l);
	link_free(l);
}

/* Frees s and its links; a consumer's collection stays (the caller leaves or frees it). */
static void stream_free_local(struct dmabroker_stream *s)
{
	struct dmabroker *ctx = s->ctx;

	for (struct dmabroker_call *c = ctx->calls; c; c = c->next)
		if (c->stream == s)
			c->stream = NULL;
	while (s->links) {
		struct stream_link *l = s->links;

		s->links = l->next;
		link_drop(ctx, l);
	}
	if (s->link)
		link_drop(ctx, s->link);
	for (unsigned i = 0; s->buffers && i < s->buffer_count; i++)
		close_fd(&s->buffers[i].release_fence);
	free(s->buffers);
	if (s->prev)
		s->prev->next = s->next;
	else
		ctx->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	free(s->path);
	free(s);
}

void streams_free_all(struct dmabroker *ctx)
{
	while (ctx->streams)
		stream_free_local(ctx->streams);
}

static int link_watch(struct dmabroker *ctx, struct stream_link *l)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};

	if (epoll_ctl(ctx->epoll_fd, EPOLL_CTL_ADD, l->fd, &ev) < 0)
		return -errno;
	l->in_epoll = true;
	return 0;
}

static struct dmabroker_stream *find_stream(struct dmabroker *ctx, const char *path)
{
	for (struct dmabroker_stream *s = ctx->streams; s; s = s->next)
		if (streq_ptr(s->path, path))
			return s;
	return NULL;
}

static struct dmabroker_buffer *stream_buffer(const struct dmabroker_stream *s, uint32_t index)
{
	return dmabroker_collection_get_buffer(s->col, index);
}

/* --- fences --- */

/* The fences of a dma-buf as one sync_file (owned), or -1 when it is no dma-buf. */
static int export_fence(struct dmabroker_buffer *buf, uint32_t flags)
{
	struct dma_buf_export_sync_file e = {.flags = flags, .fd = -1};

	if (!buf || !buf->dmabuf)
		return -1;
	if (ioctl(buf->fd, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, &e) < 0) {
		log_msg(DMABROKER_LOG_DEBUG, "dmabroker: exporting a fence failed: %m");
		return -1;
	}
	return e.fd;
}

/* Puts fence into a dma-buf's own fences; false when it is no dma-buf (nothing done). */
static bool import_fence(struct dmabroker_buffer *buf, int fence, uint32_t flags)
{
	struct dma_buf_import_sync_file i = {.flags = flags, .fd = fence};

	if (!buf || !buf->dmabuf)
		return false;
	if (ioctl(buf->fd, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, &i) < 0) {
		/* The device does not take it: waiting here keeps the order it stands for. */
		log_msg(DMABROKER_LOG_DEBUG, "dmabroker: importing a fence failed: %m");
		(void)dmabroker_fence_wait(fence, UINT64_MAX);
	}
	return true;
}

/* One sync_file that signals when both do (owned); a and b are taken. */
static int merge_fences(int a, int b)
{
	struct sync_merge_data m = {.name = "dmabroker", .fd2 = b};

	if (a < 0)
		return b;
	if (b < 0)
		return a;
	if (ioctl(a, SYNC_IOC_MERGE, &m) < 0) {
		/* Nothing to hand on that stands for both: wait for one, keep the other. */
		(void)dmabroker_fence_wait(a, UINT64_MAX);
		close(a);
		return b;
	}
	close(a);
	close(b);
	return m.fence;
}

int dmabroker_fence_wait(int fence, uint64_t timeout_usec)
{
	uint64_t deadline = timeout_usec == UINT64_MAX ? UINT64_MAX : now_usec() + timeout_usec;

	if (fence < 0)
		return 0;
	for (;;) {
		struct pollfd p = {.fd = fence, .events = POLLIN};
		uint64_t now = now_usec();
		int ms = deadline == UINT64_MAX ? -1
			 : deadline <= now	? 0
						: (int)((deadline - now + 999) / 1000);
		int r;

		if (deadline != UINT64_MAX && deadline - now > (uint64_t)INT32_MAX * 1000)
			ms = INT32_MAX;
		r = poll(&p, 1, ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r > 0)
			return p.revents & POLLNVAL ? -EBADF : 0;
		if (now_usec() >= deadline)
			return -ETIMEDOUT;
	}
}

/* --- the producer's buffers and links --- */

/* A buffer no consumer holds any more: buffer_returned, from dispatch. */
static void buffer_back(struct dmabroker_stream *s, uint32_t index)
{
	struct stream_buffer *b = &s->buffers[index];

	if (b->state == BUF_OUT && b->holders == 0)
		b->state = BUF_RETURNING;
}

/* Everything l held is back (a consumer gone); its fences go with it. */
static void link_return_all(struct dmabroker_stream *s, struct stream_link *l)
{
	for (uint32_t i = 0; i < l->buffer_count; i++) {
		if (!l->held[i])
			continue;
		link_unhold(l, i);
		if (s->buffers[i].holders > 0)
			s->buffers[i].holders--;
		buffer_back(s, i);
	}
}

static void tell_consumer_left(struct dmabroker_stream *s, uint32_t consumer, bool was_ready,
			       const char *reason)
{
	struct dmabroker *ctx = s->ctx;

	log_msg(DMABROKER_LOG_DEBUG, "dmabroker: stream %s: consumer %" PRIu32 " left: %s", s->path,
		consumer, reason);
	if (!was_ready || ctx->disconnect_requested)
		return;
	ctx->handled++;
	if (s->handlers.consumer_left)
		s->handlers.consumer_left(s, consumer, reason, s->userdata);
}

/* Tells the daemon that the producer ended a consumer's link, so that it counts the consumer
 * a member no more. Nobody waits for the answer: the application heard consumer_left. */
static void tell_daemon_link_ended(struct dmabroker_stream *s, uint32_t consumer,
				   const char *reason)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker *ctx = s->ctx;
	int r;

	if (!s->path || ctx->disconnect_requested)
		return;
	r = new_call(ctx, CALL_STREAM_END_LINK, &m);
	if (r >= 0)
		r = sd_bus_message_append(m, "ous", s->path, consumer, reason);
	if (r >= 0)
		r = call_start(ctx, CALL_STREAM_END_LINK, m, NULL, NULL, NULL, NULL);
	if (r < 0)
		log_msg(DMABROKER_LOG_DEBUG,
			"dmabroker: stream %s: the daemon was not told of link %" PRIu32
			"'s end: %s",
			s->path, consumer, strerror(-r));
}

/*
 * Ends one consumer's link on the producer: its buffers are back at once. Runs in dispatch.
 * by_us: the library ended it (not the daemon's StreamLinkEnded): the daemon is told.
 */
static void producer_end_link(struct dmabroker_stream *s, struct stream_link *l, const char *reason,
			      bool by_us)
{
	bool ready = l->ready;
	uint32_t consumer = l->consumer;

	for (struct stream_link **p = &s->links; *p; p = &(*p)->next)
		if (*p == l) {
			*p = l->next;
			break;
		}
	link_return_all(s, l);
	link_drop(s->ctx, l);
	if (by_us)
		tell_daemon_link_ended(s, consumer, reason);
	tell_consumer_left(s, consumer, ready, reason);
}

/* The consumer's end of the stream: its link closes, ended is told once. In dispatch. */
static void consumer_end(struct dmabroker_stream *s, const char *reason)
{
	struct dmabroker *ctx = s->ctx;

	if (s->link) {
		link_drop(ctx, s->link);
		s->link = NULL;
	}
	if (!s->ended) {
		s->ended = true;
		snprintf(s->end_reason, sizeof(s->end_reason), "%s", reason);
	}
	if (s->ended_told || ctx->disconnect_requested)
		return;
	s->ended_told = true;
	ctx->handled++;
	if (s->handlers.ended)
		s->handlers.ended(s, s->end_reason, s->userdata);
}

/* The whole stream is over (StreamEnded): every link closes, ended is told once. */
static void stream_end(struct dmabroker_stream *s, const char *reason)
{
	struct dmabroker *ctx = s->ctx;

	if (!s->producer) {
		consumer_end(s, reason);
		return;
	}
	while (s->links) {
		struct stream_link *l = s->links;

		s->links = l->next;
		link_return_all(s, l);
		link_drop(ctx, l);
	}
	if (!s->ended) {
		s->ended = true;
		snprintf(s->end_reason, sizeof(s->end_reason), "%s", reason);
	}
	if (s->ended_told || ctx->disconnect_requested)
		return;
	s->ended_told = true;
	ctx->handled++;
	if (s->handlers.ended)
		s->handlers.ended(s, s->end_reason, s->userdata);
}

/* Tells buffer_returned for the buffers back; false when the budget ran out first. */
static bool deliver_returns(struct dmabroker_stream *s)
{
	struct dmabroker *ctx = s->ctx;

	for (uint32_t i = 0; s->buffers && i < s->buffer_count; i++) {
		struct stream_buffer *b = &s->buffers[i];
		int fence;

		if (b->state != BUF_RETURNING)
			continue;
		if (ctx->handled >= DMABROKER_DISPATCH_BUDGET || ctx->disconnect_requested)
			return false;
		b->state = BUF_FREE;
		fence = b->release_fence;
		b->release_fence = -1;
		if (s->handlers.buffer_returned) {
			ctx->handled++;
			s->handlers.buffer_returned(s, i, fence, s->userdata);
		} else if (fence >= 0) {
			/* Nobody takes the fence: the buffer is free once it signals. */
			(void)dmabroker_fence_wait(fence, UINT64_MAX);
		}
		if (fence >= 0)
			close(fence);
		/* The callback may have freed s: it waits for the dispatch's end. */
		if (s->zombie)
			return false;
	}
	return true;
}

/* A RELEASE from l, checked: the buffer is back when no consumer holds it any more. */
static void producer_released(struct dmabroker_stream *s, struct stream_link *l,
			      const union db_wire_record *rec, int fence)
{
	uint32_t index = rec->release.index;
	struct stream_buffer *b = &s->buffers[index];

	link_apply(l, rec);
	if (b->holders > 0)
		b->holders--;
	if (fence >= 0) {
		if (s->sync == DMABROKER_SYNC_IMPLICIT &&
		    import_fence(stream_buffer(s, index), fence, DMA_BUF_SYNC_READ))
			close(fence);
		else
			b->release_fence = merge_fences(b->release_fence, fence);
	}
	buffer_back(s, index);
}

/* Reads what l has, within the budget; false when l was ended (freed). */
static bool producer_read(struct dmabroker_stream *s, struct stream_link *l, bool *progress)
{
	struct dmabroker *ctx = s->ctx;

	while (ctx->handled < DMABROKER_DISPATCH_BUDGET && !s->zombie) {
		union db_wire_record rec;
		const char *reason = NULL;
		int fence = -1, r;

		r = link_recv(l, &rec, &fence, &reason);
		if (r == -EAGAIN)
			return true;
		*progress = true;
		if (r == 0) {
			producer_end_link(s, l, "the consumer's link hung up", true);
			return false;
		}
		if (r < 0) {
			char why[REASON_MAX];

			snprintf(why, sizeof(why), "the consumer broke the link's protocol: %s",
				 reason ? reason : strerror(-r));
			producer_end_link(s, l, why, true);
			return false;
		}
		if (r == DMABROKER_WIRE_HELLO) {
			link_apply(l, &rec);
			ctx->handled++;
			if (s->handlers.consumer_joined)
				s->handlers.consumer_joined(s, l->consumer, s->userdata);
		} else {
			producer_released(s, l, &rec, fence);
			/* A record that tells nothing counts too: a flood cannot starve the rest. */
			ctx->handled++;
		}
	}
	return true;
}

/* A frame received by the consumer, as the application sees it. */
static void frame_from_wire(const union db_wire_record *rec, int fence, struct dmabroker_frame *f)
{
	*f = (struct dmabroker_frame){
		.index = rec->frame.index,
		.flags = rec->frame.flags & ~DMABROKER_WIRE_FENCE,
		.seq = rec->frame.seq,
		.timestamp_ns = rec->frame.timestamp_ns,
		.meta_type = rec->frame.meta_type,
		.meta_size = rec->frame.meta_size,
		.acquire_fence = fence,
	};
	memcpy(f->meta, rec->frame.meta, sizeof(f->meta));
}

static int consumer_send_release(struct dmabroker_stream *s, uint32_t index, int fence)
{
	union db_wire_record rec = {.release = {.header = {.type = DMABROKER_WIRE_RELEASE},
						.index = index,
						.flags = fence >= 0 ? DMABROKER_WIRE_FENCE : 0}};
	struct stream_link *l = s->link;
	const char *reason = NULL;
	int r;

	rec.release.seq = l->held[index];
	link_unhold(l, index);
	r = link_send(l, &rec, fence, &reason);
	if (r < 0 && !s->link_failed[0])
		/* Told from dispatch: this may run from the application's call. */
		snprintf(s->link_failed, sizeof(s->link_failed), "%s", reason);
	return r;
}

/* Hands a frame to the application: wait_frame()'s, or the frame callback's. */
static void consumer_deliver(struct dmabroker_stream *s, struct dmabroker_frame *f)
{
	struct dmabroker *ctx = s->ctx;

	if (f->acquire_fence >= 0 && s->sync == DMABROKER_SYNC_IMPLICIT &&
	    import_fence(stream_buffer(s, f->index), f->acquire_fence, DMA_BUF_SYNC_WRITE))
		close_fd(&f->acquire_fence);
	ctx->handled++;
	if (s->wanted) {
		/* The fence is the caller's now. */
		*s->wanted = *f;
		s->wanted = NULL;
		s->got_frame = true;
		return;
	}
	s->handlers.frame(s, f, s->userdata);
	if (f->acquire_fence >= 0)
		close(f->acquire_fence);
}

/*
 * Reads the consumer's link: each frame in FIFO mode; in LATEST mode everything waiting,
 * releasing every frame but the newest at once (with its own acquire fence as the release
 * fence: the producer must not write before its own write is done). Frames are read only
 * when someone takes them: the frame callback or wait_frame(); else they stay in the link.
 */
static void consumer_read(struct dmabroker_stream *s, bool *progress)
{
	struct dmabroker *ctx = s->ctx;
	struct dmabroker_frame newest;
	bool have = false;

	while (s->link && !s->zombie && ctx->handled < DMABROKER_DISPATCH_BUDGET &&
	       (s->handlers.frame || s->wanted)) {
		union db_wire_record rec;
		const char *reason = NULL;
		int fence = -1, r;

		r = link_recv(s->link, &rec, &fence, &reason);
		if (r == -EAGAIN)
			break;
		*progress = true;
		if (r <= 0) {
			char why[REASON_MAX];

			if (have && newest.index != DMABROKER_FRAME_NO_BUFFER)
				(void)consumer_send_release(s, newest.index, newest.acquire_fence);
			if (have)
				close_fd(&newest.acquire_fence);
			have = false;
			if (r == 0)
				snprintf(why, sizeof(why), "producer gone");
			else
				snprintf(why, sizeof(why),
					 "the producer broke the link's protocol: %s",
					 reason ? reason : strerror(-r));
			consumer_end(s, why);
			return;
		}
		link_apply(s->link, &rec);
		if (have) {
			/* LATEST: a newer one came; the older goes back unseen. */
			if (newest.index != DMABROKER_FRAME_NO_BUFFER)
				(void)consumer_send_release(s, newest.index, newest.acquire_fence);
			close_fd(&newest.acquire_fence);
			have = false;
			ctx->handled++;
		}
		frame_from_wire(&rec, fence, &newest);
		have = true;
		if (s->mode == DMABROKER_STREAM_FIFO ||
		    (rec.frame.flags & DMABROKER_WIRE_END_OF_STREAM)) {
			consumer_deliver(s, &newest);
			have = false;
		}
	}
	if (have)
		consumer_deliver(s, &newest);
}

/* --- dispatch --- */

bool streams_pending(struct dmabroker *ctx)
{
	for (struct dmabroker_stream *s = ctx->streams; s; s = s->next) {
		if (s->link_failed[0] || s->zombie)
			return true;
		for (uint32_t i = 0; s->buffers && i < s->buffer_count; i++)
			if (s->buffers[i].state == BUF_RETURNING)
				return true;
		for (struct stream_link *l = s->links; l; l = l->next)
			if (l->fail_reason[0])
				return true;
	}
	return false;
}

static void stream_dispatch_one(struct dmabroker_stream *s, bool *progress)
{
	struct dmabroker *ctx = s->ctx;

	if (!s->producer) {
		if (s->link_failed[0] && s->link) {
			char why[REASON_MAX];

			snprintf(why, sizeof(why), "%s", s->link_failed);
			s->link_failed[0] = 0;
			*progress = true;
			consumer_end(s, why);
			return;
		}
		consumer_read(s, progress);
		return;
	}
	/* Links that failed while sending were noted hung up; ended here, in dispatch. */
	for (struct stream_link *l = s->links, *next; l && !s->zombie; l = next) {
		next = l->next;
		if (ctx->handled >= DMABROKER_DISPATCH_BUDGET)
			return;
		if (l->hung_up && l->fail_reason[0]) {
			char why[REASON_MAX];

			snprintf(why, sizeof(why), "%s", l->fail_reason);
			*progress = true;
			producer_end_link(s, l, why, true);
			continue;
		}
		(void)producer_read(s, l, progress);
	}
	if (!s->zombie && !deliver_returns(s))
		*progress = true;
}

void streams_dispatch(struct dmabroker *ctx, bool *progress)
{
	ctx->streams_walking = true;
	for (struct dmabroker_stream *s = ctx->streams; s; s = s->next) {
		if (ctx->handled >= DMABROKER_DISPATCH_BUDGET || ctx->disconnect_requested)
			break;
		if (!s->zombie)
			stream_dispatch_one(s, progress);
	}
	ctx->streams_walking = false;
	for (struct dmabroker_stream *s = ctx->streams, *next; s; s = next) {
		next = s->next;
		if (s->zombie)
			stream_free_local(s);
	}
}

/* --- signals --- */

static void on_stream_link(struct dmabroker_stream *s, sd_bus_message *m)
{
	struct stream_link *l;
	uint32_t consumer;
	int fd, own;

	if (!s->producer || s->ended || sd_bus_message_read(m, "uh", &consumer, &fd) < 0)
		return;
	/* A consumer's number is never reused: a second link for it is no new consumer. */
	for (l = s->links; l; l = l->next)
		if (l->consumer == consumer)
			return;
	/* The fd is the message's: keep a duplicate. */
	own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (own < 0)
		return;
	l = link_new(own, consumer, true, s->buffer_count);
	if (!l)
		return;
	if (link_watch(s->ctx, l) < 0) {
		link_free(l);
		return;
	}
	l->next = s->links;
	s->links = l;
}

static void on_stream_link_ended(struct dmabroker_stream *s, sd_bus_message *m)
{
	const char *reason;
	uint32_t consumer;

	if (sd_bus_message_read(m, "us", &consumer, &reason) < 0)
		return;
	if (!s->producer) {
		if (consumer == s->consumer_id)
			consumer_end(s, reason);
		return;
	}
	for (struct stream_link *l = s->links; l; l = l->next)
		if (l->consumer == consumer) {
			producer_end_link(s, l, reason, false);
			return;
		}
}

bool stream_on_signal(struct dmabroker *ctx, sd_bus_message *m)
{
	const char *member = sd_bus_message_get_member(m), *path, *reason;
	struct dmabroker_stream *s;

	if (!member ||
	    (strcmp(member, "StreamLink") != 0 && strcmp(member, "StreamLinkEnded") != 0 &&
	     strcmp(member, "StreamEnded") != 0))
		return false;
	if (sd_bus_message_read_basic(m, 'o', &path) <= 0 || ctx->disconnect_requested)
		return true;
	s = find_stream(ctx, path);
	if (!s || s->zombie)
		return true;
	if (strcmp(member, "StreamLink") == 0)
		on_stream_link(s, m);
	else if (strcmp(member, "StreamLinkEnded") == 0)
		on_stream_link_ended(s, m);
	else if (sd_bus_message_read_basic(m, 's', &reason) > 0)
		stream_end(s, reason);
	return true;
}

/* --- calls --- */

static int copy_args(const struct dmabroker_stream_options *opts, size_t opts_size,
		     const struct dmabroker_stream_handlers *handlers, size_t handlers_size,
		     struct dmabroker_stream_options *o, struct dmabroker_stream_handlers *h)
{
	int r;

	r = copy_sized(o, sizeof(*o), STREAM_OPTS_SIZE_V1, opts, opts_size);
	if (r >= 0)
		r = copy_sized(h, sizeof(*h), STREAM_HANDLERS_SIZE_V1, handlers, handlers_size);
	if (r < 0)
		return r;
	if (o->mode != DMABROKER_STREAM_FIFO && o->mode != DMABROKER_STREAM_LATEST)
		return -EINVAL;
	if (o->sync != DMABROKER_SYNC_EXPLICIT && o->sync != DMABROKER_SYNC_IMPLICIT)
		return -EINVAL;
	return 0;
}

static int append_format(sd_bus_message *m, const struct dmabroker_stream_format *f)
{
	int r;

	r = sd_bus_message_open_container(m, 'e', "sv");
	if (r >= 0)
		r = sd_bus_message_append_basic(m, 's', "format");
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'v', "a{sv}");
	if (r >= 0)
		r = sd_bus_message_append(m, "a{sv}", 5, "fourcc", "u", f->fourcc, "width", "u",
					  f->width, "height", "u", f->height, "framerate-num", "u",
					  f->framerate_num, "framerate-den", "u", f->framerate_den);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	return r;
}

static int build_create(struct dmabroker_collection *col, const struct dmabroker_stream_options *o,
			sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	/* A stream hands out the collection's buffers: they must all be here. */
	if (!col->buffers || col->n_fetched != col->info.buffer_count)
		return -EINVAL;
	r = new_call(col->ctx, CALL_STREAM_CREATE, &m);
	if (r >= 0)
		r = sd_bus_message_append(m, "o", col->path);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0 && o->name)
		r = append_str_entry(m, "name", o->name);
	if (r >= 0)
		r = append_str_entry(m, "mode",
				     o->mode == DMABROKER_STREAM_LATEST ? "latest" : "fifo");
	if (r >= 0 && o->max_consumers)
		r = sd_bus_message_append(m, "{sv}", "max-consumers", "u", o->max_consumers);
	if (r >= 0)
		r = append_format(m, &o->format);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r < 0)
		return r;
	*ret = take_ptr(m);
	return 0;
}

static int producer_setup(struct dmabroker_stream *s, struct dmabroker_collection *col)
{
	s->col = col;
	s->buffer_count = col->info.buffer_count;
	s->buffers = calloc(s->buffer_count, sizeof(*s->buffers));
	if (!s->buffers)
		return -ENOMEM;
	for (unsigned i = 0; i < s->buffer_count; i++)
		s->buffers[i].release_fence = -1;
	return 0;
}

static int read_stream_path(struct dmabroker_stream *s, sd_bus_message *reply)
{
	const char *path;
	int r;

	r = sd_bus_message_read_basic(reply, 'o', &path);
	if (r < 0)
		return r;
	s->path = strdup(path);
	return s->path ? 0 : -ENOMEM;
}

int dmabroker_stream_create(struct dmabroker_collection *col,
			    const struct dmabroker_stream_options *opts, size_t opts_size,
			    const struct dmabroker_stream_handlers *handlers, size_t handlers_size,
			    void *userdata, struct dmabroker_stream **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	struct dmabroker_stream_options o;
	struct dmabroker_stream_handlers h;
	struct dmabroker_stream *s = NULL;
	int r;

	if (!col || !ret)
		return -EINVAL;
	r = copy_args(opts, opts_size, handlers, handlers_size, &o, &h);
	if (r >= 0)
		r = build_create(col, &o, &m);
	if (r >= 0)
		r = call_sync(col->ctx, CALL_STREAM_CREATE, m, &reply);
	if (r >= 0 && !(s = stream_new(col->ctx, true, &o, &h, userdata)))
		r = -ENOMEM;
	if (r >= 0)
		r = producer_setup(s, col);
	if (r >= 0)
		r = read_stream_path(s, reply);
	if (r < 0 && s)
		stream_free_local(s);
	if (r >= 0)
		*ret = s;
	return api_return(col->ctx, r);
}

int dmabroker_stream_create_async(struct dmabroker_collection *col,
				  const struct dmabroker_stream_options *opts, size_t opts_size,
				  const struct dmabroker_stream_handlers *handlers,
				  size_t handlers_size, void *userdata,
				  dmabroker_stream_func_t done, struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_stream_options o;
	struct dmabroker_stream_handlers h;
	struct dmabroker_stream *s;
	struct dmabroker_call *call;
	int r;

	if (!col)
		return -EINVAL;
	r = copy_args(opts, opts_size, handlers, handlers_size, &o, &h);
	if (r >= 0)
		r = build_create(col, &o, &m);
	if (r < 0)
		return api_return(col->ctx, r);
	s = stream_new(col->ctx, true, &o, &h, userdata);
	if (!s)
		return api_return(col->ctx, -ENOMEM);
	r = producer_setup(s, col);
	if (r >= 0)
		r = call_start(col->ctx, CALL_STREAM_CREATE, m, (void *)done, userdata, ret_call,
			       &call);
	if (r < 0) {
		stream_free_local(s);
		return api_return(col->ctx, r);
	}
	call->stream = s;
	return api_return(col->ctx, 0);
}

int dmabroker_stream_token(struct dmabroker_stream *s, struct dmabroker_token *ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	int r;

	if (!s || !ret || !s->producer || !s->path)
		return -EINVAL;
	r = new_call(s->ctx, CALL_STREAM_TOKEN, &m);
	if (r >= 0)
		r = sd_bus_message_append(m, "o", s->path);
	if (r >= 0)
		r = call_sync(s->ctx, CALL_STREAM_TOKEN, m, &reply);
	if (r >= 0)
		r = read_share(reply, ret);
	return api_return(s->ctx, r);
}

int dmabroker_stream_token_async(struct dmabroker_stream *s, dmabroker_token_func_t done,
				 void *userdata, struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_call *call;
	int r;

	if (!s || !s->producer || !s->path)
		return -EINVAL;
	r = new_call(s->ctx, CALL_STREAM_TOKEN, &m);
	if (r >= 0)
		r = sd_bus_message_append(m, "o", s->path);
	if (r >= 0)
		r = call_start(s->ctx, CALL_STREAM_TOKEN, m, (void *)done, userdata, ret_call,
			       &call);
	if (r >= 0)
		call->stream = s;
	return api_return(s->ctx, r);
}

static int build_join(struct dmabroker *ctx, const char *name, const struct dmabroker_token *token,
		      const struct dmabroker_stream_options *o, sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	enum call_kind kind = token ? CALL_STREAM_JOIN_TOKEN : CALL_STREAM_JOIN;
	int r;

	if (!token && !name)
		return -EINVAL;
	r = new_call(ctx, kind, &m);
	if (r >= 0 && token)
		r = sd_bus_message_append_array(m, 'y', token->bytes, DMABROKER_TOKEN_SIZE);
	else if (r >= 0)
		r = sd_bus_message_append_basic(m, 's', name);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0 && o->required)
		r = sd_bus_message_append(m, "{sv}", "required", "b", 1);
	if (r >= 0 && o->label)
		r = append_str_entry(m, "label", o->label);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r < 0)
		return r;
	*ret = take_ptr(m);
	return 0;
}

/* One entry of the format record (a newer daemon may say more: skipped). */
static int read_format_entry(struct dmabroker_stream *s, sd_bus_message *m, const char *key,
			     unsigned *buffer_count)
{
	struct dmabroker_stream_format *f = &s->format;
	const char *mode;
	int r;

	if (strcmp(key, "fourcc") == 0)
		return sd_bus_message_read(m, "v", "u", &f->fourcc);
	if (strcmp(key, "width") == 0)
		return sd_bus_message_read(m, "v", "u", &f->width);
	if (strcmp(key, "height") == 0)
		return sd_bus_message_read(m, "v", "u", &f->height);
	if (strcmp(key, "framerate-num") == 0)
		return sd_bus_message_read(m, "v", "u", &f->framerate_num);
	if (strcmp(key, "framerate-den") == 0)
		return sd_bus_message_read(m, "v", "u", &f->framerate_den);
	if (strcmp(key, "buffer-count") == 0)
		return sd_bus_message_read(m, "v", "u", buffer_count);
	if (strcmp(key, "mode") == 0) {
		r = sd_bus_message_read(m, "v", "s", &mode);
		if (r >= 0)
			s->mode = strcmp(mode, "latest") == 0 ? DMABROKER_STREAM_LATEST
							      : DMABROKER_STREAM_FIFO;
		return r;
	}
	if (strcmp(key, "format") == 0) {
		/* The record nested in its own dict. */
		r = sd_bus_message_enter_container(m, 'v', "a{sv}");
		if (r < 0)
			return sd_bus_message_skip(m, "v");
		r = sd_bus_message_enter_container(m, 'a', "{sv}");
		while (r >= 0 && (r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
			const char *k;

			r = sd_bus_message_read_basic(m, 's', &k);
			if (r >= 0)
				r = read_format_entry(s, m, k, buffer_count);
			if (r >= 0)
				r = sd_bus_message_exit_container(m);
		}
		if (r >= 0)
			r = sd_bus_message_exit_container(m);
		if (r >= 0)
			r = sd_bus_message_exit_container(m);
		return r;
	}
	return sd_bus_message_skip(m, "v");
}

/* JoinStream's answer: the stream, its collection (a new object, owned by s), the link. */
static int read_join(struct dmabroker_stream *s, sd_bus_message *reply)
{
	const char *col_path;
	unsigned buffer_count = 0;
	int fd, r;

	r = read_stream_path(s, reply);
	if (r >= 0)
		r = sd_bus_message_read(reply, "ou", &col_path, &s->consumer_id);
	if (r >= 0)
		r = sd_bus_message_enter_container(reply, 'a', "{sv}");
	while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
		const char *key;

		r = sd_bus_message_read_basic(reply, 's', &key);
		if (r >= 0)
			r = read_format_entry(s, reply, key, &buffer_count);
		if (r >= 0)
			r = sd_bus_message_exit_container(reply);
	}
	if (r >= 0)
		r = sd_bus_message_exit_container(reply);
	if (r >= 0)
		r = sd_bus_message_read_basic(reply, 'h', &fd);
	if (r < 0)
		return r;
	if (buffer_count == 0 || buffer_count > 4096)
		return -EBADMSG;
	s->buffer_count = buffer_count;
	if (s->max_held > buffer_count)
		s->max_held = buffer_count;
	/* The fd is the message's: keep a duplicate. */
	fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return -errno;
	s->link = link_new(fd, s->consumer_id, false, buffer_count);
	if (!s->link)
		return -ENOMEM;
	s->col = collection_new(s->ctx, col_path);
	return s->col ? 0 : -ENOMEM;
}

/*
 * The buffers are here: HELLO says the consumer is ready. The link goes into the loop only
 * with a frame callback: without one its frames wait for wait_frame(), and a link in the loop
 * with unread frames would keep the context's fd readable (a poll loop would spin).
 */
static int consumer_ready(struct dmabroker_stream *s)
{
	union db_wire_record hello = {.hello = {.header = {.type = DMABROKER_WIRE_HELLO}}};
	const char *reason = NULL;
	int r;

	if (dmabroker_collection_get_buffer_count(s->col) != s->buffer_count)
		return -EBADMSG;
	hello.hello.buffer_count = s->buffer_count;
	hello.hello.max_held = s->max_held;
	r = s->handlers.frame ? link_watch(s->ctx, s->link) : 0;
	if (r >= 0)
		r = link_send(s->link, &hello, -1, &reason);
	if (r < 0)
		log_msg(DMABROKER_LOG_DEBUG, "dmabroker: stream %s: hello not sent: %s", s->path,
			reason ? reason : strerror(-r));
	return r;
}

/* Undoes a join that failed half-way: leaves what was joined, quietly. */
static void join_undo(struct dmabroker_stream *s)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker *ctx = s->ctx;

	if (s->path && new_call(ctx, CALL_STREAM_LEAVE, &m) >= 0 &&
	    sd_bus_message_append(m, "o", s->path) >= 0)
		(void)call_start(ctx, CALL_STREAM_LEAVE, m, NULL, NULL, NULL, NULL);
	if (s->col)
		(void)dmabroker_collection_leave_async(s->col, NULL, NULL, NULL);
	s->col = NULL;
	stream_free_local(s);
}

int dmabroker_stream_join(struct dmabroker *ctx, const char *name,
			  const struct dmabroker_token *token,
			  const struct dmabroker_stream_options *opts, size_t opts_size,
			  const struct dmabroker_stream_handlers *handlers, size_t handlers_size,
			  void *userdata, struct dmabroker_stream **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	struct dmabroker_stream_options o;
	struct dmabroker_stream_handlers h;
	struct dmabroker_stream *s = NULL;
	int r;

	if (!ctx || !ret)
		return -EINVAL;
	r = copy_args(opts, opts_size, handlers, handlers_size, &o, &h);
	if (r >= 0)
		r = build_join(ctx, name, token, &o, &m);
	if (r >= 0)
		r = call_sync(ctx, token ? CALL_STREAM_JOIN_TOKEN : CALL_STREAM_JOIN, m, &reply);
	if (r >= 0 && !(s = stream_new(ctx, false, &o, &h, userdata)))
		r = -ENOMEM;
	if (r >= 0)
		r = read_join(s, reply);
	if (r >= 0)
		r = dmabroker_collection_wait(s->col);
	if (r >= 0)
		r = consumer_ready(s);
	if (r < 0 && s)
		join_undo(s);
	if (r >= 0)
		*ret = s;
	return api_return(ctx, r);
}

static void join_waited(int r, void *userdata)
{
	struct dmabroker_stream *s = userdata;
	dmabroker_stream_func_t done = s->join_done;
	void *done_userdata = s->join_userdata;

	if (r >= 0)
		r = consumer_ready(s);
	if (r < 0) {
		join_undo(s);
		s = NULL;
	}
	if (done)
		done(r, s, done_userdata);
}

int dmabroker_stream_join_async(struct dmabroker *ctx, const char *name,
				const struct dmabroker_token *token,
				const struct dmabroker_stream_options *opts, size_t opts_size,
				const struct dmabroker_stream_handlers *handlers,
				size_t handlers_size, void *userdata, dmabroker_stream_func_t done,
				struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	enum call_kind kind = token ? CALL_STREAM_JOIN_TOKEN : CALL_STREAM_JOIN;
	struct dmabroker_stream_options o;
	struct dmabroker_stream_handlers h;
	struct dmabroker_stream *s;
	struct dmabroker_call *call;
	int r;

	if (!ctx)
		return -EINVAL;
	r = copy_args(opts, opts_size, handlers, handlers_size, &o, &h);
	if (r >= 0)
		r = build_join(ctx, name, token, &o, &m);
	if (r < 0)
		return api_return(ctx, r);
	s = stream_new(ctx, false, &o, &h, userdata);
	if (!s)
		return api_return(ctx, -ENOMEM);
	s->join_done = done;
	s->join_userdata = userdata;
	r = call_start(ctx, kind, m, NULL, userdata, ret_call, &call);
	if (r < 0) {
		stream_free_local(s);
		return api_return(ctx, r);
	}
	call->stream = s;
	return api_return(ctx, 0);
}

int stream_on_reply(struct dmabroker_call *call, sd_bus_message *reply, int r)
{
	struct dmabroker_stream *s = call->stream;
	struct dmabroker_token token = {{0}};

	switch (call->kind) {
	case CALL_STREAM_CREATE:
		if (r >= 0 && !s)
			r = -ECANCELED;
		if (r >= 0)
			r = read_stream_path(s, reply);
		if (r < 0 && s) {
			stream_free_local(s);
			s = NULL;
		}
		if (call_silenced(call) || !call->cb.stream) {
			/* Nobody wants it: end it, without waiting (this runs in dispatch). */
			if (s)
				(void)dmabroker_stream_free_async(s, NULL, NULL, NULL, NULL);
		} else {
			call->cb.stream(r, s, call->userdata);
		}
		return 0;
	case CALL_STREAM_JOIN:
	case CALL_STREAM_JOIN_TOKEN:
		if (r >= 0 && !s)
			r = -ECANCELED;
		if (r >= 0)
			r = read_join(s, reply);
		if (r >= 0)
			r = dmabroker_collection_wait_async(s->col, join_waited, s, NULL);
		if (r < 0 && s) {
			dmabroker_stream_func_t done = s->join_done;

			join_undo(s);
			if (!call_silenced(call) && done)
				done(r, NULL, call->userdata);
		}
		return 0;
	case CALL_STREAM_TOKEN:
		if (r >= 0)
			r = read_share(reply, &token);
		if (!call_silenced(call) && call->cb.token)
			call->cb.token(r, r >= 0 ? &token : NULL, call->userdata);
		return 0;
	default:
		if (!call_silenced(call) && call->cb.done)
			call->cb.done(r, call->userdata);
		return 0;
	}
}

/* --- frames --- */

int dmabroker_stream_get_free(struct dmabroker_stream *s, uint32_t *ret_index)
{
	if (!s || !ret_index || !s->producer)
		return -EINVAL;
	if (s->ended)
		return -EPIPE;
	for (uint32_t i = 0; i < s->buffer_count; i++)
		if (s->buffers[i].state == BUF_FREE) {
			s->buffers[i].state = BUF_TAKEN;
			*ret_index = i;
			return 0;
		}
	return -EAGAIN;
}

/* Sends a frame to one consumer; a link that cannot take it is ended from dispatch. */
static bool send_frame(struct dmabroker_stream *s, struct stream_link *l,
		       const union db_wire_record *rec, int fence)
{
	const char *reason = NULL;

	if (link_send(l, rec, fence, &reason) < 0) {
		l->hung_up = true;
		snprintf(l->fail_reason, sizeof(l->fail_reason), "%s", reason);
		return false;
	}
	l->last_seq = rec->frame.seq;
	if (rec->frame.index != DMABROKER_WIRE_NO_BUFFER)
		link_hold(l, rec->frame.index, rec->frame.seq);
	return true;
}

int dmabroker_stream_queue(struct dmabroker_stream *s, struct dmabroker_frame *f)
{
	union db_wire_record rec = {.frame = {.header = {.type = DMABROKER_WIRE_FRAME}}};
	_cleanup_(closep) int exported = -1;
	struct stream_buffer *b = NULL;
	const char *reason = NULL;
	int fence;

	if (!s || !f || !s->producer)
		return -EINVAL;
	if (s->ended)
		return api_return(s->ctx, -EPIPE);
	if (f->index != DMABROKER_FRAME_NO_BUFFER) {
		if (f->index >= s->buffer_count || s->buffers[f->index].state != BUF_TAKEN)
			return -EINVAL;
		b = &s->buffers[f->index];
	} else if (!(f->flags & DMABROKER_FRAME_END_OF_STREAM) || f->acquire_fence >= 0) {
		return -EINVAL;
	}
	if (f->acquire_fence >= 0 && fence_check(f->acquire_fence) < 0)
		return -EINVAL;
	fence = f->acquire_fence;
	if (fence < 0 && b && s->sync == DMABROKER_SYNC_IMPLICIT)
		fence = exported = export_fence(stream_buffer(s, f->index), DMA_BUF_SYNC_WRITE);
	rec.frame.index = f->index;
	rec.frame.flags =
		(f->flags & (DMABROKER_FRAME_END_OF_STREAM | DMABROKER_FRAME_DISCONTINUITY)) |
		(fence >= 0 ? DMABROKER_WIRE_FENCE : 0);
	rec.frame.seq = s->next_seq + 1;
	rec.frame.timestamp_ns = f->timestamp_ns;
	rec.frame.meta_type = f->meta_type;
	rec.frame.meta_size = f->meta_size;
	if (f->meta_size <= DMABROKER_FRAME_META_MAX)
		memcpy(rec.frame.meta, f->meta, f->meta_size);
	/* What no consumer may accept is refused here, before anything is sent. */
	{
		uint8_t scratch[DMABROKER_WIRE_RECORD_MAX];

		if (db_wire_encode(&rec, scratch, &reason) < 0) {
			log_msg(DMABROKER_LOG_DEBUG, "dmabroker: a frame refused: %s", reason);
			return -EINVAL;
		}
	}
	f->seq = ++s->next_seq;
	if (b)
		b->state = BUF_OUT;
	for (struct stream_link *l = s->links; l; l = l->next) {
		if (!l->ready || l->hung_up)
			continue;
		/* LATEST: a consumer that holds all it may is skipped, never waited for. A frame
		 * without a buffer (the end of the stream) takes nothing: everyone gets it. */
		if (s->mode == DMABROKER_STREAM_LATEST && b && l->n_held >= l->max_held)
			continue;
		if (send_frame(s, l, &rec, fence) && b)
			b->holders++;
	}
	/* Nobody took it: back at once (told from dispatch). */
	if (b)
		buffer_back(s, f->index);
	return api_return(s->ctx, 0);
}

int dmabroker_stream_release(struct dmabroker_stream *s, uint32_t index, int release_fence)
{
	_cleanup_(closep) int exported = -1;
	int fence = release_fence;

	if (!s || s->producer)
		return -EINVAL;
	if (release_fence >= 0 && fence_check(release_fence) < 0)
		return -EINVAL;
	/* After the end there is nobody to tell: the buffer stays the consumer's. */
	if (!s->link)
		return s->ended ? 0 : -EINVAL;
	if (index >= s->buffer_count || !s->link->held[index])
		return -EINVAL;
	if (fence < 0 && s->sync == DMABROKER_SYNC_IMPLICIT)
		fence = exported = export_fence(stream_buffer(s, index), DMA_BUF_SYNC_WRITE);
	(void)consumer_send_release(s, index, fence);
	return api_return(s->ctx, 0);
}

/* Dispatches ctx until done(s) or the deadline. */
static int wait_until(struct dmabroker_stream *s, bool (*done)(struct dmabroker_stream *s),
		      uint64_t timeout_usec)
{
	struct dmabroker *ctx = s->ctx;
	uint64_t deadline = timeout_usec == UINT64_MAX ? UINT64_MAX : now_usec() + timeout_usec;
	int r;

	for (;;) {
		struct pollfd p = {.fd = ctx->epoll_fd, .events = POLLIN};
		uint64_t now = now_usec(), next = deadline, t = UINT64_MAX;
		int ms;

		r = dmabroker_dispatch(ctx);
		if (r < 0 && r != -EBUSY)
			return r;
		if (done(s))
			return 0;
		if (s->ended)
			return -EPIPE;
		now = now_usec();
		if (now >= deadline)
			return -ETIMEDOUT;
		if (dmabroker_get_timeout(ctx, &t) >= 0 && t < next)
			next = t;
		ms = next == UINT64_MAX ? -1
		     : next <= now	? 0
					: (int)((next - now + 999) / 1000 > INT32_MAX
							? INT32_MAX
							: (next - now + 999) / 1000);
		if (poll(&p, 1, ms) < 0 && errno != EINTR)
			return -errno;
	}
}

static bool frame_taken(struct dmabroker_stream *s)
{
	return s->got_frame;
}

int dmabroker_stream_wait_frame(struct dmabroker_stream *s, struct dmabroker_frame *f,
				uint64_t timeout_usec)
{
	int r;

	if (!s || !f || s->producer || s->ctx->dispatching)
		return -EINVAL;
	if (s->ended)
		return -EPIPE;
	/* Without a frame callback the link is in the loop only while this waits. */
	if (s->link && !s->link->in_epoll) {
		r = link_watch(s->ctx, s->link);
		if (r < 0)
			return r;
	}
	s->wanted = f;
	s->got_frame = false;
	r = wait_until(s, frame_taken, timeout_usec);
	s->wanted = NULL;
	if (s->link && !s->handlers.frame)
		link_unwatch(s->ctx, s->link);
	if (s->got_frame) {
		s->got_frame = false;
		return 0;
	}
	return r < 0 ? r : -EIO;
}

static bool has_free_buffer(struct dmabroker_stream *s)
{
	for (uint32_t i = 0; i < s->buffer_count; i++)
		if (s->buffers[i].state == BUF_FREE)
			return true;
	return false;
}

int dmabroker_stream_wait_free(struct dmabroker_stream *s, uint32_t *ret_index,
			       uint64_t timeout_usec)
{
	int r;

	if (!s || !ret_index || !s->producer || s->ctx->dispatching)
		return -EINVAL;
	r = dmabroker_stream_get_free(s, ret_index);
	if (r != -EAGAIN)
		return r;
	r = wait_until(s, has_free_buffer, timeout_usec);
	return r < 0 ? r : dmabroker_stream_get_free(s, ret_index);
}

/* --- getters --- */

struct dmabroker_collection *dmabroker_stream_get_collection(const struct dmabroker_stream *s)
{
	return s ? s->col : NULL;
}

struct dmabroker_buffer *dmabroker_stream_get_buffer(const struct dmabroker_stream *s,
						     uint32_t index)
{
	return s ? stream_buffer(s, index) : NULL;
}

const struct dmabroker_stream_format *dmabroker_stream_get_format(const struct dmabroker_stream *s)
{
	return s ? &s->format : NULL;
}

const char *dmabroker_stream_get_path(const struct dmabroker_stream *s)
{
	return s ? s->path : NULL;
}

bool dmabroker_stream_is_producer(const struct dmabroker_stream *s)
{
	return s && s->producer;
}

unsigned dmabroker_stream_get_consumer_count(const struct dmabroker_stream *s)
{
	unsigned n = 0;

	if (!s || !s->producer)
		return 0;
	for (const struct stream_link *l = s->links; l; l = l->next)
		n += l->ready && !l->hung_up;
	return n;
}

uint32_t dmabroker_stream_get_consumer_id(const struct dmabroker_stream *s)
{
	return s && !s->producer ? s->consumer_id : 0;
}

/* --- the end --- */

static int build_end(struct dmabroker_stream *s, const char *reason, enum call_kind *kind,
		     sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	*kind = s->producer ? CALL_STREAM_END : CALL_STREAM_LEAVE;
	r = new_call(s->ctx, *kind, &m);
	if (r >= 0)
		r = sd_bus_message_append(m, "o", s->path);
	if (r >= 0 && s->producer)
		r = sd_bus_message_append_basic(m, 's', reason ? reason : "");
	if (r < 0)
		return r;
	*ret = take_ptr(m);
	return 0;
}

/* Frees s here, or at the end of dispatch's walk when a callback frees it. */
static void stream_release_local(struct dmabroker_stream *s)
{
	struct dmabroker *ctx = s->ctx;

	/* Links close now: the other ends see it at once. */
	while (s->links) {
		struct stream_link *l = s->links;

		s->links = l->next;
		link_drop(ctx, l);
	}
	if (s->link) {
		link_drop(ctx, s->link);
		s->link = NULL;
	}
	s->col = NULL;
	s->ended = s->ended_told = true;
	s->handlers = (struct dmabroker_stream_handlers){0};
	if (ctx->streams_walking)
		s->zombie = true;
	else
		stream_free_local(s);
}

int dmabroker_stream_free(struct dmabroker_stream *s, const char *reason)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_collection *col;
	struct dmabroker *ctx;
	enum call_kind kind;
	int r = 0;

	if (!s || s->zombie)
		return 0;
	ctx = s->ctx;
	col = s->producer ? NULL : s->col;
	/* After the stream ended the daemon knows it no more: nothing to say. */
	if (!s->ended && s->path) {
		r = build_end(s, reason, &kind, &m);
		if (r >= 0)
			r = call_sync(ctx, kind, m, NULL);
		if (r == -ENOENT)
			r = 0;
	}
	stream_release_local(s);
	if (col) {
		int k = dmabroker_collection_leave(col);

		if (r >= 0 && k < 0 && k != -ENOENT)
			r = k;
	}
	return api_return(ctx, r);
}

int dmabroker_stream_free_async(struct dmabroker_stream *s, const char *reason,
				dmabroker_done_func_t done, void *userdata,
				struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_collection *col;
	struct dmabroker *ctx;
	enum call_kind kind;
	int r = 0;

	if (!s || s->zombie)
		return 0;
	ctx = s->ctx;
	col = s->producer ? NULL : s->col;
	if (!s->ended && s->path) {
		r = build_end(s, reason, &kind, &m);
		if (r >= 0)
			r = call_start(ctx, kind, m, (void *)done, userdata, ret_call, NULL);
	}
	stream_release_local(s);
	if (col)
		(void)dmabroker_collection_leave_async(col, NULL, NULL, NULL);
	return api_return(ctx, r);
}
