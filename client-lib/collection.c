// SPDX-License-Identifier: MIT
#include "libdmabroker-private.h"

/* --- buffer collections --- */

/* A collection whose buffers the daemon holds for us but we have not all fetched yet. */
bool collections_pending(struct dmabroker *ctx)
{
	for (struct dmabroker_collection *col = ctx->collections; col; col = col->next)
		if (!col->buffers || col->n_fetched < col->info.buffer_count)
			return true;
	return false;
}

struct dmabroker_collection *collection_new(struct dmabroker *ctx, const char *path)
{
	struct dmabroker_collection *col = calloc(1, sizeof(*col));

	if (!col)
		return NULL;
	col->path = strdup(path);
	if (!col->path) {
		free(col);
		return NULL;
	}
	col->ctx = ctx;
	col->next = ctx->collections;
	if (ctx->collections)
		ctx->collections->prev = col;
	ctx->collections = col;
	return col;
}

void collection_free(struct dmabroker_collection *col)
{
	struct dmabroker *ctx = col->ctx;

	for (struct dmabroker_call *c = ctx->calls; c; c = c->next)
		if (c->col == col)
			c->col = NULL;
	for (unsigned i = 0; i < col->n_fetched; i++)
		buffer_free(col->buffers[i]);
	free(col->buffers);
	if (col->prev)
		col->prev->next = col->next;
	else
		ctx->collections = col->next;
	if (col->next)
		col->next->prev = col->prev;
	free(col->path);
	free(col);
}

static int new_collection_call(struct dmabroker *ctx, enum call_kind kind, const char *path,
			       sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	r = new_call(ctx, kind, &m);
	if (r >= 0 && path)
		r = sd_bus_message_append(m, "o", path);
	if (r < 0)
		return r;
	*ret = take_ptr(m);
	return 0;
}

static int build_collection_create(struct dmabroker *ctx, const char *name, unsigned participants,
				   sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	r = new_collection_call(ctx, CALL_COLLECTION_CREATE, NULL, &m);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0 && name)
		r = append_str_entry(m, "name", name);
	if (r >= 0 && participants)
		r = sd_bus_message_append(m, "{sv}", "participants", "u", participants);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r < 0)
		return r;
	*ret = take_ptr(m);
	return 0;
}

static int read_collection_path(struct dmabroker *ctx, sd_bus_message *reply,
				struct dmabroker_collection **ret)
{
	const char *path;
	int r;

	r = sd_bus_message_read_basic(reply, 'o', &path);
	if (r < 0)
		return r;
	*ret = collection_new(ctx, path);
	return *ret ? 0 : -ENOMEM;
}

static int build_collection_join(struct dmabroker *ctx, const struct dmabroker_token *token,
				 sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	if (!token)
		return -EINVAL;
	r = new_collection_call(ctx, CALL_COLLECTION_JOIN, NULL, &m);
	if (r >= 0)
		r = sd_bus_message_append_array(m, 'y', token->bytes, DMABROKER_TOKEN_SIZE);
	if (r < 0)
		return r;
	*ret = take_ptr(m);
	return 0;
}

static int append_u32_entry(sd_bus_message *m, const char *key, uint32_t v)
{
	return v ? sd_bus_message_append(m, "{sv}", key, "u", v) : 0;
}

static int append_u64_entry(sd_bus_message *m, const char *key, uint64_t v)
{
	return v ? sd_bus_message_append(m, "{sv}", key, "t", v) : 0;
}

static int append_bool_entry(sd_bus_message *m, const char *key, bool v)
{
	return v ? sd_bus_message_append(m, "{sv}", key, "b", 1) : 0;
}

static unsigned planes_set(const uint32_t *v)
{
	unsigned n = 0;

	for (unsigned i = 0; i < DMABROKER_MAX_PLANES; i++)
		if (v[i])
			n = i + 1;
	return n;
}

static int build_collection_set(struct dmabroker_collection *col,
				const struct dmabroker_constraints *caller, size_t size,
				sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_constraints c;
	int r;

	r = copy_sized(&c, sizeof(c), CONSTRAINTS_SIZE_V1, caller, size);
	if (r < 0)
		return r;
	if ((c.n_fourccs && !c.fourccs) || (c.n_modifiers && !c.modifiers))
		return -EINVAL;
	r = new_collection_call(col->ctx, CALL_COLLECTION_SET, col->path, &m);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0 && c.device)
		r = append_str_entry(m, "device", c.device);
	if (r >= 0)
		r = append_u32_entry(m, "min-buffers-for-camping", c.min_buffers_for_camping);
	if (r >= 0)
		r = append_u32_entry(m, "min-buffers", c.min_buffers);
	if (r >= 0)
		r = append_u32_entry(m, "max-buffers", c.max_buffers);
	if (r >= 0)
		r = append_u64_entry(m, "min-size", c.min_size);
	if (r >= 0)
		r = append_u64_entry(m, "max-size", c.max_size);
	if (r >= 0)
		r = append_u32_entry(m, "size-divisor", c.size_divisor);
	if (r >= 0 && c.n_fourccs)
		r = db_dict_append_u32_array(m, "fourccs", c.fourccs, c.n_fourccs);
	if (r >= 0 && c.n_modifiers) {
		r = sd_bus_message_open_container(m, 'e', "sv");
		if (r >= 0)
			r = sd_bus_message_append_basic(m, 's', "modifiers");
		if (r >= 0)
			r = sd_bus_message_open_container(m, 'v', "at");
		if (r >= 0)
			r = sd_bus_message_append_array(m, 't', c.modifiers,
							c.n_modifiers * sizeof(uint64_t));
		if (r >= 0)
			r = sd_bus_message_close_container(m);
		if (r >= 0)
			r = sd_bus_message_close_container(m);
	}
	if (r >= 0)
		r = append_u32_entry(m, "width", c.width);
	if (r >= 0)
		r = append_u32_entry(m, "height", c.height);
	if (r >= 0)
		r = append_u32_entry(m, "min-width", c.min_width);
	if (r >= 0)
		r = append_u32_entry(m, "max-width", c.max_width);
	if (r >= 0)
		r = append_u32_entry(m, "min-height", c.min_height);
	if (r >= 0)
		r = append_u32_entry(m, "max-height", c.max_height);
	if (r >= 0 && planes_set(c.min_strides))
		r = db_dict_append_u32_array(m, "min-strides", c.min_strides,
					     planes_set(c.min_strides));
	if (r >= 0 && planes_set(c.max_strides))
		r = db_dict_append_u32_array(m, "max-strides", c.max_strides,
					     planes_set(c.max_strides));
	if (r >= 0)
		r = append_u32_entry(m, "stride-divisor", c.stride_divisor);
	if (r >= 0)
		r = append_u32_entry(m, "offset-divisor", c.offset_divisor);
	if (r >= 0)
		r = append_bool_entry(m, "contiguous", c.contiguous);
	if (r >= 0)
		r = append_u64_entry(m, "max-segment-size", c.max_segment_size);
	if (r >= 0)
		r = append_u32_entry(m, "dma-address-bits", c.dma_address_bits);
	if (r >= 0)
		r = append_bool_entry(m, "device-import", c.device_import);
	if (r >= 0 && c.backends) {
		r = sd_bus_message_open_container(m, 'e', "sv");
		if (r >= 0)
			r = sd_bus_message_append_basic(m, 's', "backends");
		if (r >= 0)
			r = sd_bus_message_open_container(m, 'v', "as");
		if (r >= 0)
			r = sd_bus_message_append_strv(m, (char **)c.backends);
		if (r >= 0)
			r = sd_bus_message_close_container(m);
		if (r >= 0)
			r = sd_bus_message_close_container(m);
	}
	if (r >= 0)
		r = append_bool_entry(m, "cpu-read", c.cpu_read);
	if (r >= 0)
		r = append_bool_entry(m, "cpu-write", c.cpu_write);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r < 0)
		return r;
	*ret = take_ptr(m);
	return 0;
}

/* WaitCollection's answer: the outcome and the layout. */
static int read_collection_wait(struct dmabroker_collection *col, sd_bus_message *reply)
{
	struct dmabroker_collection_info *info = &col->info;
	int r;

	r = sd_bus_message_enter_container(reply, 'a', "{sv}");
	while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
		const char *key, *s;
		int b;

		r = sd_bus_message_read_basic(reply, 's', &key);
		if (r < 0)
			break;
		if (strcmp(key, "buffer-count") == 0)
			r = sd_bus_message_read(reply, "v", "u", &info->buffer_count);
		else if (strcmp(key, "camping") == 0)
			r = sd_bus_message_read(reply, "v", "u", &info->camping);
		else if (strcmp(key, "size") == 0)
			r = sd_bus_message_read(reply, "v", "t", &info->size);
		else if (strcmp(key, "max-segment") == 0)
			r = sd_bus_message_read(reply, "v", "t", &info->max_segment);
		else if (strcmp(key, "backend") == 0 &&
			 (r = sd_bus_message_read(reply, "v", "s", &s)) >= 0)
			snprintf(info->backend, sizeof(info->backend), "%s", s);
		else if (strcmp(key, "note") == 0 &&
			 (r = sd_bus_message_read(reply, "v", "s", &s)) >= 0)
			snprintf(info->note, sizeof(info->note), "%s", s);
		else if (strcmp(key, "path") == 0 &&
			 (r = sd_bus_message_read(reply, "v", "s", &s)) >= 0)
			info->path = strcmp(s, "cached") == 0 ? DMABROKER_PATH_CACHED
							      : DMABROKER_PATH_DIRECT;
		else if (strcmp(key, "contiguous") == 0 &&
			 (r = sd_bus_message_read(reply, "v", "b", &b)) >= 0)
			info->contiguous = b;
		else if (strcmp(key, "dmabuf") == 0 &&
			 (r = sd_bus_message_read(reply, "v", "b", &b)) >= 0)
			info->dmabuf = b;
		else if (strcmp(key, "flags") == 0) {
			r = sd_bus_message_enter_container(reply, 'v', "as");
			if (r >= 0)
				r = sd_bus_message_enter_container(reply, 'a', "s");
			while (r >= 0 && (r = sd_bus_message_read_basic(reply, 's', &s)) > 0) {
				info->segment_limit_not_met |=
					strcmp(s, "segment-limit-not-met") == 0;
				info->address_bits_unchecked |=
					strcmp(s, "address-bits-unchecked") == 0;
			}
			if (r >= 0)
				r = sd_bus_message_exit_container(reply);
			if (r >= 0)
				r = sd_bus_message_exit_container(reply);
		} else if (r >= 0)
			/* A newer daemon may say more. */
			r = sd_bus_message_skip(reply, "v");
		if (r >= 0)
			r = sd_bus_message_exit_container(reply);
	}
	if (r >= 0)
		r = sd_bus_message_exit_container(reply);
	if (r >= 0)
		r = read_layout(reply, NULL, &col->probe);
	if (r < 0)
		return r;
	if (info->buffer_count == 0 || info->buffer_count > 4096)
		return -EBADMSG;
	free(col->buffers);
	col->n_fetched = 0;
	col->buffers = calloc(info->buffer_count, sizeof(*col->buffers));
	return col->buffers ? 0 : -ENOMEM;
}

static int build_collection_buffers(struct dmabroker_collection *col, sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	unsigned count = col->info.buffer_count - col->n_fetched;
	int r;

	if (count > DMABROKER_ALLOCATE_MANY_MAX)
		count = DMABROKER_ALLOCATE_MANY_MAX;
	r = new_collection_call(col->ctx, CALL_COLLECTION_BUFFERS, col->path, &m);
	if (r >= 0)
		r = sd_bus_message_append(m, "uu", col->n_fetched, count);
	if (r < 0)
		return r;
	*ret = take_ptr(m);
	return 0;
}

static int read_collection_buffers(struct dmabroker_collection *col, sd_bus_message *reply)
{
	const char *paths[DMABROKER_ALLOCATE_MANY_MAX];
	int fds[DMABROKER_ALLOCATE_MANY_MAX];
	unsigned want = col->info.buffer_count - col->n_fetched, n = 0, n_fds = 0;
	int r;

	if (want > DMABROKER_ALLOCATE_MANY_MAX)
		want = DMABROKER_ALLOCATE_MANY_MAX;
	r = sd_bus_message_enter_container(reply, 'a', "o");
	while (r >= 0 && n < want && (r = sd_bus_message_read_basic(reply, 'o', &paths[n])) > 0)
		n++;
	if (r >= 0)
		r = sd_bus_message_exit_container(reply);
	if (r >= 0)
		r = sd_bus_message_enter_container(reply, 'a', "h");
	while (r >= 0 && n_fds < n && (r = sd_bus_message_read_basic(reply, 'h', &fds[n_fds])) > 0)
		n_fds++;
	if (r >= 0)
		r = sd_bus_message_exit_container(reply);
	if (r < 0)
		return r;
	if (n != want || n_fds != want)
		return -EBADMSG;
	for (unsigned i = 0; i < n; i++) {
		struct dmabroker_buffer *buf;

		r = buffer_from_reply(col->ctx, paths[i], fds[i], &buf);
		if (r < 0)
			return r;
		buf->layout = col->probe.layout;
		buf->dmabuf = col->probe.dmabuf;
		buf->attach_path = col->info.path;
		memcpy(buf->backend, col->probe.backend, sizeof(buf->backend));
		col->buffers[col->n_fetched++] = buf;
	}
	return 0;
}

/* The next step of an asynchronous wait (a batch of buffers); 1 if one was sent. */
static int collection_next_batch(struct dmabroker_call *call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	if (call->col->n_fetched >= call->col->info.buffer_count)
		return 0;
	call->kind = CALL_COLLECTION_BUFFERS;
	r = build_collection_buffers(call->col, &m);
	if (r >= 0)
		r = call_next(call, m);
	return r < 0 ? r : 1;
}

int collection_on_reply(struct dmabroker_call *call, sd_bus_message *reply, int r)
{
	struct dmabroker *ctx = call->ctx;
	struct dmabroker_collection *col = NULL;
	struct dmabroker_token token = {{0}};

	switch (call->kind) {
	case CALL_COLLECTION_CREATE:
	case CALL_COLLECTION_JOIN:
		if (r >= 0)
			r = read_collection_path(ctx, reply, &col);
		if (call_silenced(call) || !call->cb.collection) {
			/* Nobody wants it: leave it, without waiting (this runs in dispatch). */
			if (r >= 0)
				(void)dmabroker_collection_leave_async(col, NULL, NULL, NULL);
		} else {
			call->cb.collection(r, r >= 0 ? col : NULL, call->userdata);
		}
		return 0;
	case CALL_COLLECTION_TOKEN:
		if (r >= 0)
			r = read_share(reply, &token);
		if (!call_silenced(call) && call->cb.token)
			call->cb.token(r, r >= 0 ? &token : NULL, call->userdata);
		return 0;
	case CALL_COLLECTION_WAIT:
		if (r >= 0 && !call->col)
			r = -ECANCELED;
		if (r >= 0)
			r = read_collection_wait(call->col, reply);
		if (r >= 0 && (r = collection_next_batch(call)) > 0)
			return 1;
		break;
	case CALL_COLLECTION_LEAVE:
		if (call->col) {
			struct dmabroker_collection *gone = call->col;

			/* After a daemon restart: give the buffers back one by one. */
			for (unsigned i = 0; r == -ENOENT && i < gone->n_fetched; i++)
				(void)dmabroker_release_async(gone->buffers[i], NULL, NULL, NULL);
			if (r == -ENOENT) {
				r = 0;
				gone->n_fetched = 0; /* the buffers are freed */
			}
			collection_free(gone);
		}
		break;
	case CALL_COLLECTION_BUFFERS:
		if (r >= 0 && !call->col)
			r = -ECANCELED;
		if (r >= 0)
			r = read_collection_buffers(call->col, reply);
		if (r >= 0 && (r = collection_next_batch(call)) > 0)
			return 1;
		break;
	default:
		break;
	}
	if (!call_silenced(call) && call->cb.done)
		call->cb.done(r, call->userdata);
	return 0;
}

static int collection_call_sync(struct dmabroker *ctx, enum call_kind kind, sd_bus_message *m,
				sd_bus_message **reply)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *ignored = NULL;

	return call_sync(ctx, kind, m, reply ? reply : &ignored);
}

int dmabroker_collection_create(struct dmabroker *ctx, const char *name, unsigned participants,
				struct dmabroker_collection **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	int r;

	if (!ctx || !ret)
		return -EINVAL;
	r = build_collection_create(ctx, name, participants, &m);
	if (r >= 0)
		r = collection_call_sync(ctx, CALL_COLLECTION_CREATE, m, &reply);
	if (r >= 0)
		r = read_collection_path(ctx, reply, ret);
	return api_return(ctx, r);
}

int dmabroker_collection_create_async(struct dmabroker *ctx, const char *name,
				      unsigned participants, dmabroker_collection_func_t cb,
				      void *userdata, struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	if (!ctx)
		return -EINVAL;
	r = build_collection_create(ctx, name, participants, &m);
	if (r >= 0)
		r = call_start(ctx, CALL_COLLECTION_CREATE, m, (void *)cb, userdata, ret_call,
			       NULL);
	return api_return(ctx, r);
}

int dmabroker_collection_token(struct dmabroker_collection *col, struct dmabroker_token *ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	int r;

	if (!col || !ret)
		return -EINVAL;
	r = new_collection_call(col->ctx, CALL_COLLECTION_TOKEN, col->path, &m);
	if (r >= 0)
		r = collection_call_sync(col->ctx, CALL_COLLECTION_TOKEN, m, &reply);
	if (r >= 0)
		r = read_share(reply, ret);
	return api_return(col->ctx, r);
}

int dmabroker_collection_token_async(struct dmabroker_collection *col, dmabroker_token_func_t cb,
				     void *userdata, struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_call *call;
	int r;

	if (!col)
		return -EINVAL;
	r = new_collection_call(col->ctx, CALL_COLLECTION_TOKEN, col->path, &m);
	if (r >= 0)
		r = call_start(col->ctx, CALL_COLLECTION_TOKEN, m, (void *)cb, userdata, ret_call,
			       &call);
	if (r >= 0)
		call->col = col;
	return api_return(col->ctx, r);
}

int dmabroker_collection_join(struct dmabroker *ctx, const struct dmabroker_token *token,
			      struct dmabroker_collection **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	int r;

	if (!ctx || !ret)
		return -EINVAL;
	r = build_collection_join(ctx, token, &m);
	if (r >= 0)
		r = collection_call_sync(ctx, CALL_COLLECTION_JOIN, m, &reply);
	if (r >= 0)
		r = read_collection_path(ctx, reply, ret);
	return api_return(ctx, r);
}

int dmabroker_collection_join_async(struct dmabroker *ctx, const struct dmabroker_token *token,
				    dmabroker_collection_func_t cb, void *userdata,
				    struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	if (!ctx)
		return -EINVAL;
	r = build_collection_join(ctx, token, &m);
	if (r >= 0)
		r = call_start(ctx, CALL_COLLECTION_JOIN, m, (void *)cb, userdata, ret_call, NULL);
	return api_return(ctx, r);
}

int dmabroker_collection_set_constraints(struct dmabroker_collection *col,
					 const struct dmabroker_constraints *constraints,
					 size_t constraints_size)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	if (!col)
		return -EINVAL;
	r = build_collection_set(col, constraints, constraints_size, &m);
	if (r >= 0)
		r = collection_call_sync(col->ctx, CALL_COLLECTION_SET, m, NULL);
	return api_return(col->ctx, r);
}

int dmabroker_collection_set_constraints_async(struct dmabroker_collection *col,
					       const struct dmabroker_constraints *constraints,
					       size_t constraints_size, dmabroker_done_func_t cb,
					       void *userdata, struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_call *call;
	int r;

	if (!col)
		return -EINVAL;
	r = build_collection_set(col, constraints, constraints_size, &m);
	if (r >= 0)
		r = call_start(col->ctx, CALL_COLLECTION_SET, m, (void *)cb, userdata, ret_call,
			       &call);
	if (r >= 0)
		call->col = col;
	return api_return(col->ctx, r);
}

int dmabroker_collection_commit(struct dmabroker_collection *col)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	if (!col)
		return -EINVAL;
	r = new_collection_call(col->ctx, CALL_COLLECTION_COMMIT, col->path, &m);
	if (r >= 0)
		r = collection_call_sync(col->ctx, CALL_COLLECTION_COMMIT, m, NULL);
	return api_return(col->ctx, r);
}

int dmabroker_collection_commit_async(struct dmabroker_collection *col, dmabroker_done_func_t cb,
				      void *userdata, struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_call *call;
	int r;

	if (!col)
		return -EINVAL;
	r = new_collection_call(col->ctx, CALL_COLLECTION_COMMIT, col->path, &m);
	if (r >= 0)
		r = call_start(col->ctx, CALL_COLLECTION_COMMIT, m, (void *)cb, userdata, ret_call,
			       &call);
	if (r >= 0)
		call->col = col;
	return api_return(col->ctx, r);
}

int dmabroker_collection_wait(struct dmabroker_collection *col)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	int r;

	if (!col)
		return -EINVAL;
	r = new_collection_call(col->ctx, CALL_COLLECTION_WAIT, col->path, &m);
	if (r >= 0)
		r = collection_call_sync(col->ctx, CALL_COLLECTION_WAIT, m, &reply);
	if (r >= 0)
		r = read_collection_wait(col, reply);
	while (r >= 0 && col->n_fetched < col->info.buffer_count) {
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *bm = NULL, *breply = NULL;

		r = build_collection_buffers(col, &bm);
		if (r >= 0)
			r = collection_call_sync(col->ctx, CALL_COLLECTION_BUFFERS, bm, &breply);
		if (r >= 0)
			r = read_collection_buffers(col, breply);
	}
	return api_return(col->ctx, r);
}

int dmabroker_collection_wait_async(struct dmabroker_collection *col, dmabroker_done_func_t cb,
				    void *userdata, struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_call *call;
	int r;

	if (!col)
		return -EINVAL;
	r = new_collection_call(col->ctx, CALL_COLLECTION_WAIT, col->path, &m);
	if (r >= 0)
		r = call_start(col->ctx, CALL_COLLECTION_WAIT, m, (void *)cb, userdata, ret_call,
			       &call);
	if (r >= 0)
		call->col = col;
	return api_return(col->ctx, r);
}

const struct dmabroker_collection_info *
dmabroker_collection_get_info(const struct dmabroker_collection *col)
{
	return col && col->buffers ? &col->info : NULL;
}

unsigned dmabroker_collection_get_buffer_count(const struct dmabroker_collection *col)
{
	return col ? col->n_fetched : 0;
}

struct dmabroker_buffer *dmabroker_collection_get_buffer(const struct dmabroker_collection *col,
							 unsigned index)
{
	return col && index < col->n_fetched ? col->buffers[index] : NULL;
}

const char *dmabroker_collection_get_path(const struct dmabroker_collection *col)
{
	return col ? col->path : NULL;
}

int dmabroker_collection_leave(struct dmabroker_collection *col)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker *ctx;
	int r;

	if (!col)
		return 0;
	ctx = col->ctx;
	/* As Release: let go of our fds first, so the kernel does not count them as ours. */
	for (unsigned i = 0; i < col->n_fetched; i++)
		buffer_let_go(col->buffers[i]);
	r = new_collection_call(ctx, CALL_COLLECTION_LEAVE, col->path, &m);
	if (r >= 0)
		r = collection_call_sync(ctx, CALL_COLLECTION_LEAVE, m, NULL);
	/*
	 * A daemon that restarted kept the buffers (they are journaled) but not the negotiation:
	 * give them back one by one.
	 */
	for (unsigned i = 0; r == -ENOENT && i < col->n_fetched; i++) {
		int k = sync_on_buffer(col->buffers[i], CALL_RELEASE, NULL);

		if (k < 0 && k != -ENOENT)
			r = k;
		else if (i == col->n_fetched - 1)
			r = 0;
	}
	collection_free(col);
	return api_return(ctx, r);
}

int dmabroker_collection_leave_async(struct dmabroker_collection *col, dmabroker_done_func_t cb,
				     void *userdata, struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_call *call;
	struct dmabroker *ctx;
	int r;

	if (!col)
		return 0;
	ctx = col->ctx;
	for (unsigned i = 0; i < col->n_fetched; i++)
		buffer_let_go(col->buffers[i]);
	r = new_collection_call(ctx, CALL_COLLECTION_LEAVE, col->path, &m);
	if (r >= 0)
		r = call_start(ctx, CALL_COLLECTION_LEAVE, m, (void *)cb, userdata, ret_call,
			       &call);
	if (r < 0) {
		collection_free(col);
		return api_return(ctx, r);
	}
	/* Freed when the answer comes (or with the context); the caller is done with it now. */
	call->col = col;
	return api_return(ctx, 0);
}
