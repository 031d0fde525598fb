// SPDX-License-Identifier: MIT
#include "libdmabroker-private.h"

/* --- buffer objects, the calls on them and their answers --- */

static struct dmabroker_buffer *buffer_new(struct dmabroker *ctx, const char *path, int fd)
{
	struct dmabroker_buffer *buf = calloc(1, sizeof(*buf));

	if (!buf)
		return NULL;
	buf->path = strdup(path);
	if (!buf->path) {
		free(buf);
		return NULL;
	}
	buf->ctx = ctx;
	buf->fd = fd;
	buf->next = ctx->buffers;
	if (ctx->buffers)
		ctx->buffers->prev = buf;
	ctx->buffers = buf;
	return buf;
}

static void buffer_unmap(struct dmabroker_buffer *buf)
{
	if (buf->map)
		munmap(buf->map, buf->map_size);
	buf->map = NULL;
}

/* Unmaps the buffer and closes its fd, keeping the object (its path) for a last call. */
void buffer_let_go(struct dmabroker_buffer *buf)
{
	buffer_unmap(buf);
	if (buf->fd >= 0)
		close(buf->fd);
	buf->fd = -1;
}

struct dmabroker_buffer *buffer_free(struct dmabroker_buffer *buf)
{
	struct dmabroker *ctx = buf->ctx;

	/* Calls still in flight for it must not touch it when their answer comes. */
	for (struct dmabroker_call *c = ctx->calls; c; c = c->next)
		if (c->buf == buf)
			c->buf = NULL;
	if (buf->prev)
		buf->prev->next = buf->next;
	else
		ctx->buffers = buf->next;
	if (buf->next)
		buf->next->prev = buf->prev;
	buffer_unmap(buf);
	if (buf->fd >= 0)
		close(buf->fd);
	free(buf->path);
	free(buf);
	return NULL;
}

/*
 * Reads a layout dictionary with the daemon's own encoding (common/layout-bus.c). We register
 * with "compact_layouts": an absent key is what our spec said (asked, for an allocation), else
 * zero. A full dictionary reads the same.
 */
int read_layout(sd_bus_message *m, const struct db_layout *asked, struct dmabroker_buffer *buf)
{
	struct db_layout_dict d, implied = {0};
	int r;

	if (asked)
		implied.layout = *asked;
	r = db_layout_dict_read_over(m, &implied, &d);
	if (r < 0)
		return r;
	buf->layout = d.layout;
	if (d.backend)
		snprintf(buf->backend, sizeof(buf->backend), "%s", d.backend);
	buf->dmabuf = d.is_dmabuf;
	return 0;
}

/* A buffer from a path and a borrowed fd in a reply. */
int buffer_from_reply(struct dmabroker *ctx, const char *path, int borrowed_fd,
		      struct dmabroker_buffer **ret)
{
	struct dmabroker_buffer *buf;
	int fd;

	fd = fd_dup_cloexec(borrowed_fd);
	if (fd < 0)
		return fd;
	buf = buffer_new(ctx, path, fd);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	*ret = buf;
	return 0;
}

/*
 * What the spec itself says, as the daemon's spec parser records it (daemon/bus/spec.c): a plain
 * buffer's size rounded up to the page size, or an image's width, height, fourcc and
 * modifier. A compact reply leaves these out. Mirrors append_spec()'s choice.
 */
static void spec_asked(const struct dmabroker_alloc_spec *spec, struct db_layout *ret)
{
	size_t aligned = 0;

	*ret = (struct db_layout){0};
	if (spec->size || (!spec->width && !spec->height && !spec->fourcc)) {
		if (db_size_page_align(spec->size, &aligned) == 0)
			ret->size = aligned;
		return;
	}
	ret->width = spec->width;
	ret->height = spec->height;
	ret->fourcc = spec->fourcc;
	ret->modifier = spec->modifier;
}

int append_spec(sd_bus_message *m, const struct dmabroker_alloc_spec *spec)
{
	int r;

	r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r < 0)
		return r;
	if (spec->size || (!spec->width && !spec->height && !spec->fourcc))
		r = sd_bus_message_append(m, "{sv}", "size", "t", spec->size);
	else
		r = sd_bus_message_append(m, "{sv}{sv}{sv}{sv}", "width", "u", spec->width,
					  "height", "u", spec->height, "fourcc", "u", spec->fourcc,
					  "modifier", "t", spec->modifier);
	if (r >= 0 && spec->stride_align)
		r = sd_bus_message_append(m, "{sv}", "stride_align", "u", spec->stride_align);
	if (r >= 0 && spec->backend)
		r = append_str_entry(m, "backend", spec->backend);
	if (r >= 0 && spec->name)
		r = append_str_entry(m, "name", spec->name);
	if (r >= 0 && spec->contiguous)
		r = sd_bus_message_append(m, "{sv}", "contiguous", "b", 1);
	if (r < 0)
		return r;
	return sd_bus_message_close_container(m);
}

static int build_allocate(struct dmabroker *ctx, const struct dmabroker_alloc_spec *caller_spec,
			  size_t spec_size, sd_bus_message **ret, struct db_layout *ret_asked)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	_cleanup_(closep) int memfd = -1;
	struct dmabroker_alloc_spec spec;
	sd_bus *bus;
	int r;

	if (!caller_spec)
		return -EINVAL;
	r = copy_sized(&spec, sizeof(spec), ALLOC_SPEC_SIZE_V1, caller_spec, spec_size);
	if (r < 0)
		return r;
	if (memory_is_ours(ctx, &spec)) {
		r = make_memfd(ctx, &spec, &memfd);
		if (r == -ENOMEM || r == -EDQUOT || r == -EMFILE || r == -ENFILE)
			return r;
		/* Anything else: let the daemon judge the spec and say what is wrong. */
	}
	bus = call_bus(ctx, CALL_ALLOCATE); /* one look at the peer */
	r = sd_bus_message_new_method_call(bus, &m, bus == ctx->bus.bus ? DB_BUS_NAME : NULL,
					   DB_OBJECT_PATH, DB_IFACE_BROKER,
					   memfd >= 0 ? "AllocateWithMemfd" : "Allocate");
	/* The message keeps its own duplicate of the memfd. */
	if (r >= 0 && memfd >= 0)
		r = sd_bus_message_append_basic(m, 'h', &memfd);
	if (r >= 0)
		r = append_spec(m, &spec);
	if (r < 0)
		return r;
	spec_asked(&spec, ret_asked);
	*ret = take_ptr(m);
	return 0;
}

int read_allocate(struct dmabroker *ctx, sd_bus_message *reply, bool import,
		  const struct db_layout *asked, struct dmabroker_buffer **ret)
{
	const char *path, *attach_path = "direct";
	struct dmabroker_buffer *buf;
	int fd, r;

	if (import)
		r = sd_bus_message_read(reply, "ohs", &path, &fd, &attach_path);
	else
		r = sd_bus_message_read(reply, "oh", &path, &fd);
	if (r < 0)
		return r;
	/*
	 * The daemon answers an import of a buffer this client holds with the attachment it
	 * has: a second handle would release that attachment under the first one.
	 */
	if (import && find_buffer(ctx, path))
		return set_error_msg(ctx, -EALREADY, "this context holds the buffer already");
	r = buffer_from_reply(ctx, path, fd, &buf);
	if (r < 0)
		return r;
	r = read_layout(reply, asked, buf);
	if (r < 0) {
		buffer_free(buf);
		return r;
	}
	buf->attach_path =
		strcmp(attach_path, "cached") == 0 ? DMABROKER_PATH_CACHED : DMABROKER_PATH_DIRECT;
	*ret = buf;
	return 0;
}

static int build_allocate_many(struct dmabroker *ctx,
			       const struct dmabroker_alloc_spec *caller_spec, size_t spec_size,
			       unsigned count, sd_bus_message **ret, struct db_layout *ret_asked)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_alloc_spec spec;
	int r;

	if (!caller_spec || count == 0 || count > DMABROKER_ALLOCATE_MANY_MAX)
		return -EINVAL;
	r = copy_sized(&spec, sizeof(spec), ALLOC_SPEC_SIZE_V1, caller_spec, spec_size);
	if (r >= 0)
		r = new_call(ctx, CALL_ALLOCATE_MANY, &m);
	if (r >= 0)
		r = sd_bus_message_append(m, "u", count);
	if (r >= 0)
		r = append_spec(m, &spec);
	if (r < 0)
		return r;
	spec_asked(&spec, ret_asked);
	*ret = take_ptr(m);
	return 0;
}

int read_allocate_many(struct dmabroker *ctx, sd_bus_message *reply, unsigned count,
		       const struct db_layout *asked, struct dmabroker_buffer **ret)
{
	const char *paths[DMABROKER_ALLOCATE_MANY_MAX];
	int fds[DMABROKER_ALLOCATE_MANY_MAX];
	struct dmabroker_buffer probe = {0};
	unsigned n = 0, n_fds = 0;
	int r;

	r = sd_bus_message_enter_container(reply, 'a', "o");
	while (r >= 0 && n < count && (r = sd_bus_message_read_basic(reply, 'o', &paths[n])) > 0)
		n++;
	if (r >= 0)
		r = sd_bus_message_exit_container(reply);
	if (r >= 0)
		r = sd_bus_message_enter_container(reply, 'a', "h");
	while (r >= 0 && n_fds < n && (r = sd_bus_message_read_basic(reply, 'h', &fds[n_fds])) > 0)
		n_fds++;
	if (r >= 0)
		r = sd_bus_message_exit_container(reply);
	if (r >= 0)
		r = read_layout(reply, asked, &probe);
	if (r < 0)
		return r;
	if (n != count || n_fds != count)
		return -EBADMSG;
	for (unsigned i = 0; i < n; i++) {
		r = buffer_from_reply(ctx, paths[i], fds[i], &ret[i]);
		if (r < 0) {
			while (i-- > 0)
				ret[i] = buffer_free(ret[i]);
			return r;
		}
		ret[i]->layout = probe.layout;
		ret[i]->dmabuf = probe.dmabuf;
		memcpy(ret[i]->backend, probe.backend, sizeof(probe.backend));
	}
	return 0;
}

static int build_export(struct dmabroker *ctx, int fd, const struct dmabroker_export_info *info,
			sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	r = new_call(ctx, CALL_EXPORT, &m);
	if (r >= 0)
		r = sd_bus_message_append(m, "h", fd);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0 && info->name)
		r = append_str_entry(m, "name", info->name);
	if (r >= 0 && info->fourcc) {
		r = sd_bus_message_append(m, "{sv}{sv}{sv}{sv}", "width", "u", info->width,
					  "height", "u", info->height, "fourcc", "u", info->fourcc,
					  "modifier", "t", info->modifier);
		if (r >= 0)
			r = db_dict_append_u32_array(m, "offsets", info->offsets, info->n_planes);
		if (r >= 0)
			r = db_dict_append_u32_array(m, "strides", info->strides, info->n_planes);
	}
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r < 0)
		return r;
	*ret = take_ptr(m);
	return 0;
}

/* own_fd: our duplicate of the exported fd, taken by the buffer on success. */
int read_export(struct dmabroker *ctx, sd_bus_message *reply, int *own_fd,
		const struct dmabroker_export_info *info, struct dmabroker_buffer **ret)
{
	struct dmabroker_buffer *buf;
	const char *path;
	size_t size;
	int r;

	r = sd_bus_message_read(reply, "o", &path);
	if (r < 0)
		return r;
	buf = buffer_new(ctx, path, *own_fd);
	if (!buf)
		return -ENOMEM;
	*own_fd = -1;
	if (info && info->fourcc) {
		buf->layout = (struct db_layout){
			.width = info->width,
			.height = info->height,
			.fourcc = info->fourcc,
			.modifier = info->modifier,
			.n_planes = info->n_planes,
		};
		memcpy(buf->layout.offsets, info->offsets, sizeof(buf->layout.offsets));
		memcpy(buf->layout.strides, info->strides, sizeof(buf->layout.strides));
	}
	if (fd_get_size(buf->fd, &size) == 0)
		buf->layout.size = size;
	snprintf(buf->backend, sizeof(buf->backend), "export");
	buf->dmabuf = true;
	*ret = buf;
	return 0;
}

static int build_share(struct dmabroker_buffer *buf, const struct dmabroker_share_opts *caller_opts,
		       size_t opts_size, sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_share_opts opts;
	int r;

	r = copy_sized(&opts, sizeof(opts), SHARE_OPTS_SIZE_V1, caller_opts, opts_size);
	if (r >= 0)
		r = new_call(buf->ctx, CALL_SHARE, &m);
	if (r >= 0)
		r = sd_bus_message_append(m, "o", buf->path);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0 && opts.reusable)
		r = sd_bus_message_append(m, "{sv}", "single_use", "b", 0);
	if (r >= 0 && opts.expires_in_ms)
		r = sd_bus_message_append(m, "{sv}", "expires_in_ms", "t", opts.expires_in_ms);
	if (r >= 0 && opts.bind_uid)
		r = sd_bus_message_append(m, "{sv}", "uid", "u", opts.uid);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r < 0)
		return r;
	*ret = take_ptr(m);
	return 0;
}

int read_share(sd_bus_message *reply, struct dmabroker_token *ret)
{
	const void *bytes;
	size_t size;
	int r;

	r = sd_bus_message_read_array(reply, 'y', &bytes, &size);
	if (r < 0)
		return r;
	if (size != DMABROKER_TOKEN_SIZE)
		return -EBADMSG;
	memcpy(ret->bytes, bytes, DMABROKER_TOKEN_SIZE);
	return 0;
}

static int build_import(struct dmabroker *ctx, const struct dmabroker_token *token,
			sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	r = new_call(ctx, CALL_IMPORT, &m);
	if (r >= 0)
		r = sd_bus_message_append_array(m, 'y', token->bytes, DMABROKER_TOKEN_SIZE);
	if (r < 0)
		return r;
	*ret = take_ptr(m);
	return 0;
}

/* Release, Reacquire, Move, Revoke: a buffer path and perhaps a reason. */
int build_on_buffer(struct dmabroker *ctx, enum call_kind kind, const char *path,
		    const char *reason, sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	r = new_call(ctx, kind, &m);
	if (r >= 0)
		r = sd_bus_message_append(m, "o", path);
	if (r >= 0 && kind == CALL_REVOKE)
		r = sd_bus_message_append(m, "s", reason ? reason : "");
	if (r < 0)
		return r;
	*ret = take_ptr(m);
	return 0;
}

int read_reacquire(struct dmabroker_buffer *buf, sd_bus_message *reply)
{
	struct dmabroker_buffer probe = {0};
	int borrowed, fd, r;

	r = sd_bus_message_read(reply, "h", &borrowed);
	if (r < 0)
		return r;
	r = read_layout(reply, NULL, &probe);
	if (r < 0)
		return r;
	if (!buf)
		return 0; /* released meanwhile */
	fd = fd_dup_cloexec(borrowed);
	if (fd < 0)
		return fd;
	buffer_unmap(buf);
	close(buf->fd);
	buf->fd = fd;
	buf->layout = probe.layout;
	buf->dmabuf = probe.dmabuf;
	if (probe.backend[0])
		memcpy(buf->backend, probe.backend, sizeof(buf->backend));
	return 0;
}

int dmabroker_allocate(struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec,
		       size_t spec_size, struct dmabroker_buffer **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	struct db_layout asked;
	int r;

	if (!ctx || !ret)
		return -EINVAL;
	r = build_allocate(ctx, spec, spec_size, &m, &asked);
	if (r >= 0)
		r = call_sync(ctx, CALL_ALLOCATE, m, &reply);
	if (r >= 0)
		r = read_allocate(ctx, reply, false, &asked, ret);
	return api_return(ctx, r);
}

int dmabroker_allocate_async(struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec,
			     size_t spec_size, dmabroker_buffer_func_t cb, void *userdata,
			     struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_call *call = NULL;
	struct db_layout asked;
	int r;

	if (!ctx)
		return -EINVAL;
	r = build_allocate(ctx, spec, spec_size, &m, &asked);
	if (r >= 0)
		r = call_start(ctx, CALL_ALLOCATE, m, (void *)cb, userdata, ret_call, &call);
	if (r >= 0)
		call->asked = asked;
	return api_return(ctx, r);
}

int dmabroker_allocate_many(struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec,
			    size_t spec_size, unsigned count, struct dmabroker_buffer **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	struct db_layout asked;
	int r;

	if (!ctx || !ret)
		return -EINVAL;
	r = build_allocate_many(ctx, spec, spec_size, count, &m, &asked);
	if (r >= 0)
		r = call_sync(ctx, CALL_ALLOCATE_MANY, m, &reply);
	if (r >= 0)
		r = read_allocate_many(ctx, reply, count, &asked, ret);
	return api_return(ctx, r);
}

int dmabroker_allocate_many_async(struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec,
				  size_t spec_size, unsigned count, dmabroker_buffers_func_t cb,
				  void *userdata, struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_call *call;
	struct db_layout asked;
	int r;

	if (!ctx)
		return -EINVAL;
	r = build_allocate_many(ctx, spec, spec_size, count, &m, &asked);
	if (r >= 0)
		r = call_start(ctx, CALL_ALLOCATE_MANY, m, (void *)cb, userdata, ret_call, &call);
	if (r >= 0) {
		call->count = count;
		call->asked = asked;
	}
	return api_return(ctx, r);
}

static int export_info(const struct dmabroker_export_info *caller, size_t size,
		       struct dmabroker_export_info *ret)
{
	int r;

	r = copy_sized(ret, sizeof(*ret), EXPORT_INFO_SIZE_V1, caller, size);
	if (r < 0)
		return r;
	return ret->n_planes > DMABROKER_MAX_PLANES ? -EINVAL : 0;
}

int dmabroker_export(struct dmabroker *ctx, int fd, const struct dmabroker_export_info *caller_info,
		     size_t info_size, struct dmabroker_buffer **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	_cleanup_(closep) int own = -1;
	struct dmabroker_export_info info;
	int r;

	if (!ctx || fd < 0 || !ret)
		return -EINVAL;
	r = export_info(caller_info, info_size, &info);
	if (r < 0)
		return r;
	own = fd_dup_cloexec(fd);
	if (own == -EBADF)
		return set_error_msg(ctx, -EINVAL, "the fd to export is not open");
	if (own < 0)
		return own;
	r = build_export(ctx, own, &info, &m);
	if (r >= 0)
		r = call_sync(ctx, CALL_EXPORT, m, &reply);
	if (r >= 0)
		r = read_export(ctx, reply, &own, &info, ret);
	return api_return(ctx, r);
}

int dmabroker_export_async(struct dmabroker *ctx, int fd,
			   const struct dmabroker_export_info *caller_info, size_t info_size,
			   dmabroker_buffer_func_t cb, void *userdata,
			   struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	_cleanup_(closep) int own = -1;
	struct dmabroker_export_info info;
	struct dmabroker_call *call;
	int r;

	if (!ctx || fd < 0)
		return -EINVAL;
	r = export_info(caller_info, info_size, &info);
	if (r < 0)
		return r;
	/* The caller may close its fd as soon as we return. */
	own = fd_dup_cloexec(fd);
	if (own == -EBADF)
		return set_error_msg(ctx, -EINVAL, "the fd to export is not open");
	if (own < 0)
		return own;
	r = build_export(ctx, own, &info, &m);
	if (r >= 0)
		r = call_start(ctx, CALL_EXPORT, m, (void *)cb, userdata, ret_call, &call);
	if (r >= 0) {
		call->fd = take_fd(&own);
		call->info = info;
		call->info.name = NULL; /* the caller's string may be gone by then */
	}
	return api_return(ctx, r);
}

int dmabroker_share(struct dmabroker_buffer *buf, const struct dmabroker_share_opts *opts,
		    size_t opts_size, struct dmabroker_token *ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	int r;

	if (!buf || !ret)
		return -EINVAL;
	r = build_share(buf, opts, opts_size, &m);
	if (r >= 0)
		r = call_sync(buf->ctx, CALL_SHARE, m, &reply);
	if (r >= 0)
		r = read_share(reply, ret);
	return api_return(buf->ctx, r);
}

int dmabroker_share_async(struct dmabroker_buffer *buf, const struct dmabroker_share_opts *opts,
			  size_t opts_size, dmabroker_token_func_t cb, void *userdata,
			  struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_call *call;
	int r;

	if (!buf)
		return -EINVAL;
	r = build_share(buf, opts, opts_size, &m);
	if (r >= 0)
		r = call_start(buf->ctx, CALL_SHARE, m, (void *)cb, userdata, ret_call, &call);
	if (r >= 0)
		call->buf = buf;
	return api_return(buf->ctx, r);
}

int dmabroker_import(struct dmabroker *ctx, const struct dmabroker_token *token,
		     struct dmabroker_buffer **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	int r;

	if (!ctx || !token || !ret)
		return -EINVAL;
	r = build_import(ctx, token, &m);
	if (r >= 0)
		r = call_sync(ctx, CALL_IMPORT, m, &reply);
	if (r >= 0)
		r = read_allocate(ctx, reply, true, NULL, ret);
	return api_return(ctx, r);
}

int dmabroker_import_async(struct dmabroker *ctx, const struct dmabroker_token *token,
			   dmabroker_buffer_func_t cb, void *userdata,
			   struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	if (!ctx || !token)
		return -EINVAL;
	r = build_import(ctx, token, &m);
	if (r >= 0)
		r = call_start(ctx, CALL_IMPORT, m, (void *)cb, userdata, ret_call, NULL);
	return api_return(ctx, r);
}

void dmabroker_token_to_string(const struct dmabroker_token *token,
			       char out[DMABROKER_TOKEN_STRING_SIZE])
{
	db_token_to_hex((const struct db_token_bytes *)token->bytes, out);
}

int dmabroker_token_from_string(const char *s, struct dmabroker_token *ret)
{
	if (!s || !ret)
		return -EINVAL;
	return db_token_from_hex(s, (struct db_token_bytes *)ret->bytes);
}

/* A blocking call on a buffer with no result but the daemon's answer (and Reacquire's fd). */
int sync_on_buffer(struct dmabroker_buffer *buf, enum call_kind kind, const char *reason)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	int r;

	r = build_on_buffer(buf->ctx, kind, buf->path, reason, &m);
	if (r >= 0)
		r = call_sync(buf->ctx, kind, m, &reply);
	if (r >= 0 && kind == CALL_REACQUIRE)
		r = read_reacquire(buf, reply);
	return r;
}

static int async_on_buffer(struct dmabroker_buffer *buf, enum call_kind kind, const char *reason,
			   dmabroker_done_func_t cb, void *userdata,
			   struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_call *call;
	int r;

	r = build_on_buffer(buf->ctx, kind, buf->path, reason, &m);
	if (r >= 0)
		r = call_start(buf->ctx, kind, m, (void *)cb, userdata, ret_call, &call);
	if (r >= 0 && kind != CALL_RELEASE)
		call->buf = buf;
	return r;
}

int dmabroker_release(struct dmabroker_buffer *buf)
{
	struct dmabroker *ctx;
	int r;

	if (!buf)
		return 0;
	ctx = buf->ctx;
	/*
	 * The daemon asks the kernel who still reaches the buffer when its last attachment goes:
	 * let go of ours first, or it counts us and keeps the memory charged (lingering).
	 */
	buffer_let_go(buf);
	/* A buffer the daemon no longer has (it restarted without its store) is only ours. */
	r = buf->lost ? 0 : sync_on_buffer(buf, CALL_RELEASE, NULL);
	buffer_free(buf);
	return api_return(ctx, r);
}

int dmabroker_release_async(struct dmabroker_buffer *buf, dmabroker_done_func_t cb, void *userdata,
			    struct dmabroker_call **ret_call)
{
	struct dmabroker *ctx;
	int r;

	if (!buf)
		return 0;
	ctx = buf->ctx;
	buffer_let_go(buf); /* as in dmabroker_release() */
	/*
	 * The handle goes now; the call is its tombstone: it stays until the daemon answers,
	 * resent on the bus if the peer dies under it. A lost buffer has nothing to release.
	 */
	r = buf->lost ? 0 : async_on_buffer(buf, CALL_RELEASE, NULL, cb, userdata, ret_call);
	buffer_free(buf);
	return api_return(ctx, r);
}

int dmabroker_buffer_reacquire(struct dmabroker_buffer *buf)
{
	return buf ? api_return(buf->ctx, sync_on_buffer(buf, CALL_REACQUIRE, NULL)) : -EINVAL;
}

int dmabroker_buffer_reacquire_async(struct dmabroker_buffer *buf, dmabroker_done_func_t cb,
				     void *userdata, struct dmabroker_call **ret_call)
{
	if (!buf)
		return -EINVAL;
	return api_return(buf->ctx,
			  async_on_buffer(buf, CALL_REACQUIRE, NULL, cb, userdata, ret_call));
}

int dmabroker_buffer_move(struct dmabroker_buffer *buf)
{
	return buf ? api_return(buf->ctx, sync_on_buffer(buf, CALL_MOVE, NULL)) : -EINVAL;
}

int dmabroker_buffer_move_async(struct dmabroker_buffer *buf, dmabroker_done_func_t cb,
				void *userdata, struct dmabroker_call **ret_call)
{
	if (!buf)
		return -EINVAL;
	return api_return(buf->ctx, async_on_buffer(buf, CALL_MOVE, NULL, cb, userdata, ret_call));
}

int dmabroker_buffer_revoke(struct dmabroker_buffer *buf, const char *reason)
{
	return buf ? api_return(buf->ctx, sync_on_buffer(buf, CALL_REVOKE, reason)) : -EINVAL;
}

int dmabroker_buffer_revoke_async(struct dmabroker_buffer *buf, const char *reason,
				  dmabroker_done_func_t cb, void *userdata,
				  struct dmabroker_call **ret_call)
{
	if (!buf)
		return -EINVAL;
	return api_return(buf->ctx,
			  async_on_buffer(buf, CALL_REVOKE, reason, cb, userdata, ret_call));
}

/* --- buffer getters and CPU access --- */

int dmabroker_buffer_get_fd(const struct dmabroker_buffer *buf)
{
	return buf ? buf->fd : -EINVAL;
}

uint64_t dmabroker_buffer_get_size(const struct dmabroker_buffer *buf)
{
	return buf ? buf->layout.size : 0;
}

uint32_t dmabroker_buffer_get_width(const struct dmabroker_buffer *buf)
{
	return buf ? buf->layout.width : 0;
}

uint32_t dmabroker_buffer_get_height(const struct dmabroker_buffer *buf)
{
	return buf ? buf->layout.height : 0;
}

uint32_t dmabroker_buffer_get_format(const struct dmabroker_buffer *buf)
{
	return buf ? buf->layout.fourcc : 0;
}

uint64_t dmabroker_buffer_get_modifier(const struct dmabroker_buffer *buf)
{
	return buf ? buf->layout.modifier : 0;
}

uint32_t dmabroker_buffer_get_plane_count(const struct dmabroker_buffer *buf)
{
	return buf ? buf->layout.n_planes : 0;
}

uint32_t dmabroker_buffer_get_offset(const struct dmabroker_buffer *buf, unsigned plane)
{
	return buf && plane < buf->layout.n_planes ? buf->layout.offsets[plane] : 0;
}

uint32_t dmabroker_buffer_get_stride(const struct dmabroker_buffer *buf, unsigned plane)
{
	return buf && plane < buf->layout.n_planes ? buf->layout.strides[plane] : 0;
}

const char *dmabroker_buffer_get_path(const struct dmabroker_buffer *buf)
{
	return buf ? buf->path : NULL;
}

const char *dmabroker_buffer_get_backend(const struct dmabroker_buffer *buf)
{
	return buf ? buf->backend : NULL;
}

bool dmabroker_buffer_is_dmabuf(const struct dmabroker_buffer *buf)
{
	return buf ? buf->dmabuf : false;
}

enum dmabroker_path dmabroker_buffer_get_attach_path(const struct dmabroker_buffer *buf)
{
	return buf ? buf->attach_path : DMABROKER_PATH_DIRECT;
}

int dmabroker_buffer_map(struct dmabroker_buffer *buf, void **ret)
{
	void *p;

	if (!buf || !ret || buf->layout.size == 0)
		return -EINVAL;
	if (!buf->map) {
		p = mmap(NULL, buf->layout.size, PROT_READ | PROT_WRITE, MAP_SHARED, buf->fd, 0);
		if (p == MAP_FAILED)
			return -errno;
		buf->map = p;
		buf->map_size = buf->layout.size;
	}
	*ret = buf->map;
	return 0;
}

static int sync_access(struct dmabroker_buffer *buf, uint32_t access, uint64_t when)
{
	struct dma_buf_sync sync = {.flags = when};

	if (!buf || !access ||
	    (access & ~(uint32_t)(DMABROKER_ACCESS_READ | DMABROKER_ACCESS_WRITE)))
		return -EINVAL;
	if (!buf->dmabuf)
		return 0; /* memfd: plain memory, nothing to flush */
	if (access & DMABROKER_ACCESS_READ)
		sync.flags |= DMA_BUF_SYNC_READ;
	if (access & DMABROKER_ACCESS_WRITE)
		sync.flags |= DMA_BUF_SYNC_WRITE;
	while (ioctl(buf->fd, DMA_BUF_IOCTL_SYNC, &sync) < 0) {
		if (errno != EINTR && errno != EAGAIN)
			return -errno;
	}
	return 0;
}

int dmabroker_buffer_begin_cpu_access(struct dmabroker_buffer *buf, uint32_t access)
{
	return sync_access(buf, access, DMA_BUF_SYNC_START);
}

int dmabroker_buffer_end_cpu_access(struct dmabroker_buffer *buf, uint32_t access)
{
	return sync_access(buf, access, DMA_BUF_SYNC_END);
}
