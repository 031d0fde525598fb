// SPDX-License-Identifier: MIT
/*
 * libdmabroker: the client side. Calls go over a private peer connection once registered
 * (one hop, no bus daemon in the path), or over the bus until then or when asked to stay.
 */
#include "dmabroker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/dma-buf.h>
#include <systemd/sd-bus.h>

#include "bus-open.h"
#include "errors.h"
#include "fd-util.h"
#include "layout-bus.h"
#include "layout.h"
#include "macros.h"
#include "protocol.h"
#include "token.h"

struct dmabroker {
	sd_bus *bus;
	sd_bus *peer; /* NULL until registered (or with DMABROKER_CONNECT_NO_PEER) */
	int epoll_fd; /* owned; watches bus and peer for dmabroker_get_fd() */
	uint32_t flags;
	char *client_path;
	char default_backend[16]; /* the daemon's, read at dmabroker_register() */
	char last_error[256];
	struct dmabroker_event_handlers handlers;
	void *userdata;
	struct dmabroker_buffer *buffers; /* live buffers, for routing signals */
	int handled_events; /* by the current dmabroker_dispatch() */
};

struct dmabroker_buffer {
	struct dmabroker *ctx;
	char *path;
	int fd; /* owned by the buffer */
	struct dmabroker_layout layout;
	char backend[16];
	bool dmabuf;
	enum dmabroker_path attach_path;
	void *map; /* owned mapping of layout.size bytes, or NULL */
	struct dmabroker_buffer *prev, *next;
};

static dmabroker_log_func_t log_func;
static void *log_userdata;

void dmabroker_set_log_handler(dmabroker_log_func_t func, void *userdata)
{
	log_func = func;
	log_userdata = userdata;
}

_printf_(2, 3) static void log_msg(enum dmabroker_log_level level, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	if (!log_func)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_func(level, buf, log_userdata);
}

static sd_bus *call_bus(struct dmabroker *ctx)
{
	return ctx->peer ? ctx->peer : ctx->bus;
}

static int set_error(struct dmabroker *ctx, const sd_bus_error *error, int r)
{
	if (error && sd_bus_error_is_set(error)) {
		snprintf(ctx->last_error, sizeof(ctx->last_error), "%s: %s", error->name,
			 error->message ? error->message : "");
		r = -sd_bus_error_get_errno(error);
	} else {
		snprintf(ctx->last_error, sizeof(ctx->last_error), "%s", strerror(-r));
	}
	log_msg(DMABROKER_LOG_DEBUG, "dmabroker: %s", ctx->last_error);
	return r;
}

const char *dmabroker_last_error(struct dmabroker *ctx)
{
	return ctx ? ctx->last_error : "";
}

const char *dmabroker_client_path(struct dmabroker *ctx)
{
	return ctx->client_path;
}

static int new_call(struct dmabroker *ctx, const char *member, sd_bus_message **ret)
{
	return sd_bus_message_new_method_call(call_bus(ctx), ret, ctx->peer ? NULL : DB_BUS_NAME,
					      DB_OBJECT_PATH, DB_IFACE_BROKER, member);
}

/*
 * The daemon restarted (or closed our peer connection): the registration it restored lives on
 * the bus, so drop the peer and carry on there.
 */
static void drop_peer(struct dmabroker *ctx)
{
	epoll_ctl(ctx->epoll_fd, EPOLL_CTL_DEL, sd_bus_get_fd(ctx->peer), NULL);
	ctx->peer = sd_bus_flush_close_unref(ctx->peer);
	log_msg(DMABROKER_LOG_INFO, "dmabroker: the peer connection closed; using the bus");
}

static bool is_disconnect(int r)
{
	return r == -ECONNRESET || r == -ENOTCONN || r == -EPIPE || r == -ESHUTDOWN;
}

/* Sends m and waits for the reply; a named error becomes errno plus last_error. */
static int call(struct dmabroker *ctx, sd_bus_message *m, sd_bus_message **reply)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r;

	ctx->last_error[0] = '\0';
	r = sd_bus_call(call_bus(ctx), m, 0, &error, reply);
	if (r < 0 && ctx->peer && sd_bus_message_get_bus(m) == ctx->peer && is_disconnect(r)) {
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *again = NULL;

		sd_bus_error_free(&error);
		drop_peer(ctx);
		/* The same call, rebuilt for the bus: a sealed message cannot change bus. */
		r = sd_bus_message_new_method_call(
			ctx->bus, &again, DB_BUS_NAME, sd_bus_message_get_path(m),
			sd_bus_message_get_interface(m), sd_bus_message_get_member(m));
		if (r >= 0)
			r = sd_bus_message_rewind(m, true);
		if (r >= 0)
			r = sd_bus_message_copy(again, m, true);
		if (r >= 0)
			r = sd_bus_call(ctx->bus, again, 0, &error, reply);
	}
	if (r < 0)
		r = set_error(ctx, &error, r);
	sd_bus_error_free(&error);
	/* sd_bus_call() returns 1 on success; the public API promises 0. */
	return r < 0 ? r : 0;
}

static int on_signal(sd_bus_message *m, void *userdata, sd_bus_error *error);

static int add_watch(struct dmabroker *ctx, sd_bus *bus)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = bus};
	int r;

	r = sd_bus_match_signal(bus, NULL, bus == ctx->bus ? DB_BUS_NAME : NULL, DB_OBJECT_PATH,
				DB_IFACE_BROKER, NULL, on_signal, ctx);
	if (r < 0)
		return r;
	if (epoll_ctl(ctx->epoll_fd, EPOLL_CTL_ADD, sd_bus_get_fd(bus), &ev) < 0)
		return -errno;
	return 0;
}

int dmabroker_connect(struct dmabroker **ret, const char *address, uint32_t flags)
{
	struct dmabroker *ctx;
	int r;

	if (!ret || (flags & ~(uint32_t)(DMABROKER_CONNECT_USER | DMABROKER_CONNECT_NO_PEER)))
		return -EINVAL;
	db_errors_register();
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	ctx->flags = flags;
	ctx->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (ctx->epoll_fd < 0) {
		r = -errno;
		goto fail;
	}
	if (!address)
		address = secure_getenv(DB_ENV_BUS_ADDRESS);
	if (address)
		r = db_bus_open_address(address, &ctx->bus);
	else if (flags & DMABROKER_CONNECT_USER) {
		r = sd_bus_open_user(&ctx->bus);
	} else {
		r = sd_bus_open_system(&ctx->bus);
	}
	if (r < 0)
		goto fail;
	r = add_watch(ctx, ctx->bus);
	if (r < 0)
		goto fail;
	*ret = ctx;
	return 0;
fail:
	dmabroker_disconnect(ctx);
	return r;
}

static struct dmabroker_buffer *buffer_free(struct dmabroker_buffer *buf)
{
	struct dmabroker *ctx = buf->ctx;

	if (buf->prev)
		buf->prev->next = buf->next;
	else
		ctx->buffers = buf->next;
	if (buf->next)
		buf->next->prev = buf->prev;
	if (buf->map)
		munmap(buf->map, buf->layout.size);
	if (buf->fd >= 0)
		close(buf->fd);
	free(buf->path);
	free(buf);
	return NULL;
}

struct dmabroker *dmabroker_disconnect(struct dmabroker *ctx)
{
	if (!ctx)
		return NULL;
	while (ctx->buffers)
		buffer_free(ctx->buffers);
	sd_bus_flush_close_unref(ctx->peer);
	sd_bus_flush_close_unref(ctx->bus);
	if (ctx->epoll_fd >= 0)
		close(ctx->epoll_fd);
	free(ctx->client_path);
	free(ctx);
	return NULL;
}

static int open_peer(struct dmabroker *ctx)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	_cleanup_(closep) int fd = -1;
	sd_bus *peer = NULL;
	int borrowed, r;

	r = new_call(ctx, "OpenPeer", &m);
	if (r < 0)
		return r;
	r = call(ctx, m, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_read(reply, "h", &borrowed);
	if (r < 0)
		return r;
	/* The reply owns the received fd. */
	fd = fd_dup_cloexec(borrowed);
	if (fd < 0)
		return fd;
	r = sd_bus_new(&peer);
	if (r < 0)
		return r;
	r = sd_bus_set_fd(peer, fd, fd);
	if (r >= 0) {
		fd = -1; /* the connection owns it */
		/* The daemon authenticated us over the bus when it handed out the socket. */
		r = sd_bus_set_anonymous(peer, 1);
	}
	if (r >= 0)
		r = sd_bus_negotiate_fds(peer, 1);
	if (r >= 0)
		r = sd_bus_start(peer);
	if (r < 0) {
		sd_bus_unref(peer);
		return r;
	}
	ctx->peer = peer;
	r = add_watch(ctx, peer);
	if (r < 0) {
		ctx->peer = sd_bus_flush_close_unref(peer);
		return r;
	}
	return 0;
}

/* The daemon's default backend: the first of its Backends property. */
static void read_default_backend(struct dmabroker *ctx)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	const char *name;

	ctx->default_backend[0] = '\0';
	if (sd_bus_get_property(call_bus(ctx), DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
				"Backends", NULL, &reply, "as") < 0 ||
	    sd_bus_message_enter_container(reply, 'a', "s") <= 0 ||
	    sd_bus_message_read_basic(reply, 's', &name) <= 0)
		return;
	snprintf(ctx->default_backend, sizeof(ctx->default_backend), "%s", name);
}

int dmabroker_register(struct dmabroker *ctx, const char *role, bool dynamic, const char *name,
		       const char *const *devices)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	const char *path;
	int r;

	if (!ctx || !role)
		return -EINVAL;
	if (ctx->client_path)
		return -EALREADY;
	r = new_call(ctx, "Register", &m);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0)
		r = sd_bus_message_append(m, "{sv}{sv}", "role", "s", role, "dynamic", "b",
					  (int)dynamic);
	if (r >= 0 && name)
		r = sd_bus_message_append(m, "{sv}", "name", "s", name);
	if (r >= 0 && devices) {
		r = sd_bus_message_open_container(m, 'e', "sv");
		if (r >= 0)
			r = sd_bus_message_append_basic(m, 's', "devices");
		if (r >= 0)
			r = sd_bus_message_open_container(m, 'v', "as");
		if (r >= 0)
			r = sd_bus_message_append_strv(m, (char **)devices);
		if (r >= 0)
			r = sd_bus_message_close_container(m);
		if (r >= 0)
			r = sd_bus_message_close_container(m);
	}
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r < 0)
		return r;
	r = call(ctx, m, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_read(reply, "o", &path);
	if (r < 0)
		return r;
	ctx->client_path = strdup(path);
	if (!ctx->client_path)
		return -ENOMEM;
	read_default_backend(ctx);
	if (!(ctx->flags & DMABROKER_CONNECT_NO_PEER)) {
		r = open_peer(ctx);
		if (r < 0)
			/* The bus still works; only the fast path is missing. */
			log_msg(DMABROKER_LOG_INFO,
				"dmabroker: no peer connection, staying on the bus: %s",
				strerror(-r));
	}
	return 0;
}

static int append_spec(sd_bus_message *m, const struct dmabroker_alloc_spec *spec)
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
		r = sd_bus_message_append(m, "{sv}", "backend", "s", spec->backend);
	if (r >= 0 && spec->name)
		r = sd_bus_message_append(m, "{sv}", "name", "s", spec->name);
	if (r >= 0 && spec->contiguous)
		r = sd_bus_message_append(m, "{sv}", "contiguous", "b", 1);
	if (r < 0)
		return r;
	return sd_bus_message_close_container(m);
}

/* Reads a layout dictionary with the daemon's own encoding (common/layout-bus.c): keys this
 * version does not know are skipped, a known key of another type is -EBADMSG. */
static int read_layout(sd_bus_message *m, struct dmabroker_buffer *buf)
{
	struct db_layout_dict d;
	int r;

	r = db_layout_dict_read(m, &d);
	if (r < 0)
		return r;
	db_layout_to_public(&d.layout, &buf->layout);
	if (d.backend)
		snprintf(buf->backend, sizeof(buf->backend), "%s", d.backend);
	buf->dmabuf = d.is_dmabuf;
	return 0;
}

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

/* A buffer from a path and a borrowed fd in a reply, then its layout. */
static int buffer_from_reply(struct dmabroker *ctx, const char *path, int borrowed_fd,
			     sd_bus_message *reply, bool read_layout_now,
			     struct dmabroker_buffer **ret)
{
	struct dmabroker_buffer *buf;
	int fd, r;

	fd = fd_dup_cloexec(borrowed_fd);
	if (fd < 0)
		return fd;
	buf = buffer_new(ctx, path, fd);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	if (read_layout_now) {
		r = read_layout(reply, buf);
		if (r < 0) {
			buffer_free(buf);
			return r;
		}
	}
	*ret = buf;
	return 0;
}

/*
 * Whether this allocation's memory is made here: a plain (not contiguous) buffer of the
 * daemon's default backend, when that is udmabuf or memfd.
 */
static bool memory_is_ours(const struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec)
{
	const char *def = ctx->default_backend;

	if ((ctx->flags & DMABROKER_CONNECT_DAEMON_MEMORY) || spec->contiguous)
		return false;
	if (strcmp(def, "udmabuf") != 0 && strcmp(def, "memfd") != 0)
		return false;
	return !spec->backend || strcmp(spec->backend, def) == 0;
}

/*
 * A sealed memfd of the spec's size with its pages allocated now, by this process, so that
 * its memory cgroup is charged (and its memory.max can refuse: -ENOMEM, before the daemon
 * is asked). The size is the daemon's own computation (common/layout.c).
 */
static int make_memfd(struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec, int *ret_fd)
{
	_cleanup_(closep) int fd = -1;
	struct db_layout layout;
	uint64_t size = spec->size;
	size_t aligned;
	int r;

	if (!size) {
		r = db_layout_compute(spec->width, spec->height, spec->fourcc, spec->modifier,
				      spec->stride_align ? spec->stride_align : 64, &layout);
		if (r < 0)
			return r; /* the daemon would refuse it too; let it say why */
		size = layout.size;
	}
	if (db_size_page_align(size, &aligned) < 0)
		return -EOVERFLOW;
	fd = memfd_create("dmabroker", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)aligned) < 0)
		return -errno;
	if (fallocate(fd, 0, 0, (off_t)aligned) < 0) {
		r = -errno;
		snprintf(ctx->last_error, sizeof(ctx->last_error),
			 "could not allocate %zu bytes in this process: %s", aligned, strerror(-r));
		return r == -ENOSPC ? -ENOMEM : r;
	}
	/* It can neither shrink under the holders' mappings nor be sealed read-only. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		return -errno;
	*ret_fd = take_fd(&fd);
	return 0;
}

int dmabroker_allocate(struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec,
		       struct dmabroker_buffer **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	_cleanup_(closep) int memfd = -1;
	const char *path;
	int fd, r;

	if (!ctx || !spec || !ret)
		return -EINVAL;
	if (memory_is_ours(ctx, spec)) {
		r = make_memfd(ctx, spec, &memfd);
		if (r == -ENOMEM || r == -EFBIG)
			return r;
		/* Anything else: let the daemon judge the spec and say what is wrong. */
	}
	r = new_call(ctx, memfd >= 0 ? "AllocateWithMemfd" : "Allocate", &m);
	if (r >= 0 && memfd >= 0)
		r = sd_bus_message_append_basic(m, 'h', &memfd);
	if (r >= 0)
		r = append_spec(m, spec);
	if (r < 0)
		return r;
	r = call(ctx, m, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_read(reply, "oh", &path, &fd);
	if (r < 0)
		return r;
	return buffer_from_reply(ctx, path, fd, reply, true, ret);
}

int dmabroker_allocate_many(struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec,
			    unsigned count, struct dmabroker_buffer **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	const char *paths[DMABROKER_ALLOCATE_MANY_MAX];
	int fds[DMABROKER_ALLOCATE_MANY_MAX];
	struct dmabroker_layout layout = {0};
	struct dmabroker_buffer probe = {0};
	unsigned n = 0, n_fds = 0;
	int r;

	if (!ctx || !spec || !ret || count == 0 || count > DMABROKER_ALLOCATE_MANY_MAX)
		return -EINVAL;
	r = new_call(ctx, "AllocateMany", &m);
	if (r >= 0)
		r = sd_bus_message_append(m, "u", count);
	if (r >= 0)
		r = append_spec(m, spec);
	if (r < 0)
		return r;
	r = call(ctx, m, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_enter_container(reply, 'a', "o");
	while (r >= 0 && (r = sd_bus_message_read_basic(reply, 'o', &paths[n])) > 0)
		if (++n >= count)
			break;
	if (r >= 0)
		r = sd_bus_message_exit_container(reply);
	if (r >= 0)
		r = sd_bus_message_enter_container(reply, 'a', "h");
	while (r >= 0 && n_fds < n && (r = sd_bus_message_read_basic(reply, 'h', &fds[n_fds])) > 0)
		n_fds++;
	if (r >= 0)
		r = sd_bus_message_exit_container(reply);
	if (r >= 0)
		r = read_layout(reply, &probe);
	if (r < 0)
		return r;
	if (n != count || n_fds != count)
		return -EBADMSG;
	layout = probe.layout;
	for (unsigned i = 0; i < n; i++) {
		r = buffer_from_reply(ctx, paths[i], fds[i], reply, false, &ret[i]);
		if (r < 0) {
			while (i-- > 0)
				ret[i] = buffer_free(ret[i]);
			return r;
		}
		ret[i]->layout = layout;
		ret[i]->dmabuf = probe.dmabuf;
		memcpy(ret[i]->backend, probe.backend, sizeof(probe.backend));
	}
	return 0;
}

static int append_u32_entry(sd_bus_message *m, const char *key, const uint32_t *v, uint32_t n)
{
	int r;

	r = sd_bus_message_open_container(m, 'e', "sv");
	if (r >= 0)
		r = sd_bus_message_append_basic(m, 's', key);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'v', "au");
	if (r >= 0)
		r = sd_bus_message_append_array(m, 'u', v, n * sizeof(uint32_t));
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	return r;
}

int dmabroker_export(struct dmabroker *ctx, int fd, const struct dmabroker_layout *layout,
		     const char *name, struct dmabroker_buffer **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	struct dmabroker_buffer *buf;
	const char *path;
	size_t size;
	int r, own;

	if (!ctx || fd < 0 || !ret || (layout && layout->n_planes > DMABROKER_MAX_PLANES))
		return -EINVAL;
	r = new_call(ctx, "Export", &m);
	if (r >= 0)
		r = sd_bus_message_append(m, "h", fd);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0 && name)
		r = sd_bus_message_append(m, "{sv}", "name", "s", name);
	if (r >= 0 && layout && layout->fourcc) {
		r = sd_bus_message_append(m, "{sv}{sv}{sv}{sv}", "width", "u", layout->width,
					  "height", "u", layout->height, "fourcc", "u",
					  layout->fourcc, "modifier", "t", layout->modifier);
		if (r >= 0)
			r = append_u32_entry(m, "offsets", layout->offsets, layout->n_planes);
		if (r >= 0)
			r = append_u32_entry(m, "strides", layout->strides, layout->n_planes);
	}
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r < 0)
		return r;
	r = call(ctx, m, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_read(reply, "o", &path);
	if (r < 0)
		return r;
	own = fd_dup_cloexec(fd);
	if (own < 0)
		return own;
	buf = buffer_new(ctx, path, own);
	if (!buf) {
		close(own);
		return -ENOMEM;
	}
	if (layout)
		buf->layout = *layout;
	if (fd_get_size(own, &size) == 0)
		buf->layout.size = size;
	snprintf(buf->backend, sizeof(buf->backend), "export");
	buf->dmabuf = true;
	*ret = buf;
	return 0;
}

int dmabroker_share(struct dmabroker_buffer *buf, const struct dmabroker_share_opts *opts,
		    struct dmabroker_token *ret)
{
	struct dmabroker *ctx = buf ? buf->ctx : NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	const void *bytes;
	size_t size;
	int r;

	if (!ctx || !ret)
		return -EINVAL;
	r = new_call(ctx, "Share", &m);
	if (r >= 0)
		r = sd_bus_message_append(m, "o", buf->path);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0 && opts && opts->reusable)
		r = sd_bus_message_append(m, "{sv}", "single_use", "b", 0);
	if (r >= 0 && opts && opts->expires_in_ms)
		r = sd_bus_message_append(m, "{sv}", "expires_in_ms", "t", opts->expires_in_ms);
	if (r >= 0 && opts && opts->bind_uid)
		r = sd_bus_message_append(m, "{sv}", "uid", "u", opts->uid);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r < 0)
		return r;
	r = call(ctx, m, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_read_array(reply, 'y', &bytes, &size);
	if (r < 0)
		return r;
	if (size != DMABROKER_TOKEN_SIZE)
		return -EBADMSG;
	memcpy(ret->bytes, bytes, DMABROKER_TOKEN_SIZE);
	return 0;
}

int dmabroker_import(struct dmabroker *ctx, const struct dmabroker_token *token,
		     struct dmabroker_buffer **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	const char *path, *attach_path;
	int fd, r;

	if (!ctx || !token || !ret)
		return -EINVAL;
	r = new_call(ctx, "Import", &m);
	if (r >= 0)
		r = sd_bus_message_append_array(m, 'y', token->bytes, DMABROKER_TOKEN_SIZE);
	if (r < 0)
		return r;
	r = call(ctx, m, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_read(reply, "ohs", &path, &fd, &attach_path);
	if (r < 0)
		return r;
	r = buffer_from_reply(ctx, path, fd, reply, true, ret);
	if (r < 0)
		return r;
	(*ret)->attach_path =
		strcmp(attach_path, "cached") == 0 ? DMABROKER_PATH_CACHED : DMABROKER_PATH_DIRECT;
	return 0;
}

void dmabroker_token_to_string(const struct dmabroker_token *token, char out[33])
{
	db_token_to_hex((const struct db_token_bytes *)token->bytes, out);
}

int dmabroker_token_from_string(const char *s, struct dmabroker_token *ret)
{
	return db_token_from_hex(s, (struct db_token_bytes *)ret->bytes);
}

static int call_on_buffer(struct dmabroker_buffer *buf, const char *member, const char *reason,
			  sd_bus_message **reply)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	r = new_call(buf->ctx, member, &m);
	if (r >= 0)
		r = sd_bus_message_append(m, "o", buf->path);
	if (r >= 0 && reason)
		r = sd_bus_message_append(m, "s", reason);
	if (r < 0)
		return r;
	return call(buf->ctx, m, reply);
}

int dmabroker_release(struct dmabroker_buffer *buf)
{
	int r;

	if (!buf)
		return 0;
	r = call_on_buffer(buf, "Release", NULL, NULL);
	buffer_free(buf);
	return r;
}

int dmabroker_buffer_get_fd(const struct dmabroker_buffer *buf)
{
	return buf ? buf->fd : -EINVAL;
}

const struct dmabroker_layout *dmabroker_buffer_get_layout(const struct dmabroker_buffer *buf)
{
	return &buf->layout;
}

uint64_t dmabroker_buffer_get_size(const struct dmabroker_buffer *buf)
{
	return buf->layout.size;
}

const char *dmabroker_buffer_get_path(const struct dmabroker_buffer *buf)
{
	return buf->path;
}

const char *dmabroker_buffer_get_backend(const struct dmabroker_buffer *buf)
{
	return buf->backend;
}

bool dmabroker_buffer_is_dmabuf(const struct dmabroker_buffer *buf)
{
	return buf->dmabuf;
}

enum dmabroker_path dmabroker_buffer_get_attach_path(const struct dmabroker_buffer *buf)
{
	return buf->attach_path;
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

int dmabroker_buffer_reacquire(struct dmabroker_buffer *buf)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	int borrowed, fd, r;

	if (!buf)
		return -EINVAL;
	r = call_on_buffer(buf, "Reacquire", NULL, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_read(reply, "h", &borrowed);
	if (r < 0)
		return r;
	fd = fd_dup_cloexec(borrowed);
	if (fd < 0)
		return fd;
	if (buf->map) {
		munmap(buf->map, buf->layout.size);
		buf->map = NULL;
	}
	close(buf->fd);
	buf->fd = fd;
	r = read_layout(reply, buf);
	return r < 0 ? r : 0;
}

int dmabroker_buffer_move(struct dmabroker_buffer *buf)
{
	return buf ? call_on_buffer(buf, "Move", NULL, NULL) : -EINVAL;
}

int dmabroker_buffer_revoke(struct dmabroker_buffer *buf, const char *reason)
{
	return buf ? call_on_buffer(buf, "Revoke", reason ? reason : "", NULL) : -EINVAL;
}

void dmabroker_set_event_handlers(struct dmabroker *ctx,
				  const struct dmabroker_event_handlers *handlers, void *userdata)
{
	if (handlers)
		ctx->handlers = *handlers;
	else
		memset(&ctx->handlers, 0, sizeof(ctx->handlers));
	ctx->userdata = userdata;
}

static int on_signal(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct dmabroker *ctx = userdata;
	const char *member = sd_bus_message_get_member(m);
	const char *path, *reason = "";
	struct dmabroker_buffer *buf;
	int r;

	(void)error;
	r = sd_bus_message_read_basic(m, 'o', &path);
	if (r <= 0)
		return 0;
	for (buf = ctx->buffers; buf; buf = buf->next)
		if (strcmp(buf->path, path) == 0)
			break;
	if (!buf)
		return 0;
	if (strcmp(member, "Moved") == 0) {
		ctx->handled_events++;
		if (ctx->handlers.moved)
			ctx->handlers.moved(buf, ctx->userdata);
	} else if (strcmp(member, "Revoked") == 0) {
		(void)sd_bus_message_read_basic(m, 's', &reason);
		ctx->handled_events++;
		if (ctx->handlers.revoked)
			ctx->handlers.revoked(buf, reason, ctx->userdata);
	}
	return 0;
}

int dmabroker_get_fd(struct dmabroker *ctx)
{
	return ctx ? ctx->epoll_fd : -EINVAL;
}

int dmabroker_dispatch(struct dmabroker *ctx)
{
	sd_bus *buses[2];
	int r;

	if (!ctx)
		return -EINVAL;
	buses[0] = ctx->bus;
	buses[1] = ctx->peer;
	ctx->handled_events = 0;
	for (int i = 0; i < 2; i++) {
		if (!buses[i])
			continue;
		do {
			r = sd_bus_process(buses[i], NULL);
		} while (r > 0);
		if (r < 0 && buses[i] == ctx->peer && is_disconnect(r)) {
			drop_peer(ctx);
			continue;
		}
		if (r < 0)
			return is_disconnect(r) ? -ECONNRESET : r;
	}
	return ctx->handled_events;
}
