// SPDX-License-Identifier: MIT
/*
 * Streams (include/dmabroker.h, docs/streams.md): the objects, the calls that make, join and
 * end them with the broker's answers, the getters, and the walk that dispatch makes over them.
 * What runs on the links is the producer's (stream-producer.c) and the consumer's
 * (stream-consumer.c); fences are stream-fence.c's, the broker's signals stream-signal.c's,
 * the links' sockets and checks stream-link.c's.
 *
 * Callbacks run from dmabroker_dispatch() only: what an API call causes that a callback must
 * tell (a link that failed while sending, a frame that nobody took) is noted on the stream and
 * streams_pending() keeps the context's fd readable until dispatch tells it.
 */
#include "libdmabroker-private.h"

#include "stream-link.h"
#include "stream-private.h"

#define STREAM_OPTS_SIZE_V1 offsetofend(struct dmabroker_stream_options, label)
#define STREAM_HANDLERS_SIZE_V1 offsetofend(struct dmabroker_stream_handlers, consumer_left)

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

void link_unwatch(struct dmabroker *ctx, struct stream_link *l)
{
	if (l->in_epoll)
		(void)epoll_ctl(ctx->epoll_fd, EPOLL_CTL_DEL, l->fd, NULL);
	l->in_epoll = false;
}

void link_drop(struct dmabroker *ctx, struct stream_link *l)
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

int link_watch(struct dmabroker *ctx, struct stream_link *l)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};

	if (epoll_ctl(ctx->epoll_fd, EPOLL_CTL_ADD, l->fd, &ev) < 0)
		return -errno;
	l->in_epoll = true;
	/* What came while it was out of the set is read without waiting for the set to say. */
	l->drained = false;
	return 0;
}

void stream_link_readable(void *link)
{
	struct stream_link *l = link;

	l->drained = false;
}

void streams_links_readable(struct dmabroker *ctx)
{
	for (struct dmabroker_stream *s = ctx->streams; s; s = s->next) {
		for (struct stream_link *l = s->links; l; l = l->next)
			l->drained = false;
		if (s->link)
			s->link->drained = false;
	}
}

struct dmabroker_buffer *stream_buffer(const struct dmabroker_stream *s, uint32_t index)
{
	return dmabroker_collection_get_buffer(s->col, index);
}

struct stream_link *stream_find_link(const struct dmabroker_stream *s, uint32_t consumer)
{
	for (struct stream_link *l = s->links; l; l = l->next)
		if (l->consumer == consumer)
			return l;
	return NULL;
}

/* TakeStreamLink's answer: the producer's end of consumer's link, adopted as the producer's
 * (the fd is the message's: a duplicate is kept). */
static int adopt_link(struct dmabroker_stream *s, uint32_t consumer, sd_bus_message *reply)
{
	struct stream_link *l;
	int fd, r;

	if (!s->producer || s->ended || s->zombie || stream_find_link(s, consumer))
		return 0;
	r = sd_bus_message_read_basic(reply, 'h', &fd);
	if (r <= 0)
		return r < 0 ? r : -EBADMSG;
	fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return -errno;
	l = link_new(fd, consumer, true, s->buffer_count);
	if (!l) {
		close(fd);
		return -ENOMEM;
	}
	r = link_watch(s->ctx, l);
	if (r < 0) {
		link_free(l);
		return r;
	}
	l->next = s->links;
	s->links = l;
	return 0;
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
	if (s->producer)
		producer_dispatch(s, progress);
	else
		consumer_dispatch(s, progress);
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
		if (s->zombie && !s->waiters)
			stream_free_local(s);
	}
}

/* Dispatches ctx until done(s) or the deadline; the caller holds s. */
int stream_wait_until(struct dmabroker_stream *s, bool (*done)(struct dmabroker_stream *s),
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
		/* A callback freed s: held, it is a zombie until the caller lets go. */
		if (s->zombie)
			return -EPIPE;
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

void stream_hold(struct dmabroker_stream *s)
{
	s->waiters++;
}

bool stream_unhold(struct dmabroker_stream *s)
{
	bool gone = s->zombie;

	s->waiters--;
	if (gone && !s->waiters && !s->ctx->streams_walking)
		stream_free_local(s);
	return gone;
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
	case CALL_STREAM_TAKE_LINK:
		/* NotFound: the link ended or expired before; StreamLinkEnded says so. */
		if (r >= 0 && s)
			r = adopt_link(s, call->count, reply);
		if (r < 0 && s)
			log_msg(DMABROKER_LOG_DEBUG, "dmabroker: stream %s: link %u not taken: %s",
				s->path, call->count, strerror(-r));
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
	if (ctx->streams_walking || s->waiters)
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
