// SPDX-License-Identifier: MIT
/*
 * libdmabroker: the client side. Calls go over a private peer connection once registered
 * (one hop, no bus daemon in the path), or over the bus until then or when asked to stay.
 *
 * Every call is built by one function and its answer read by one function; the blocking
 * form sends it with sd_bus_call(), the asynchronous form with sd_bus_call_async() and reads
 * the answer in on_reply(). Both judge a failure the same way (judge_failure()): an answer
 * from the daemon is an errno, and a call that got no answer is resent on the bus only if
 * doing it twice is harmless; any other fails with -ECONNABORTED (outcome unknown).
 *
 * The loop integration is one epoll fd holding the connections' sockets, a timerfd armed to
 * sd-bus's next call timeout, and an eventfd kicked whenever sd-bus has something queued that
 * its socket no longer shows (a blocking call reads every message until its answer), so the
 * fd is never quiet while work is waiting (update()).
 */
#include "dmabroker.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <linux/dma-buf.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bus-open.h"
#include "errors.h"
#include "fd-util.h"
#include "layout-bus.h"
#include "layout.h"
#include "macros.h"
#include "protocol.h"
#include "token.h"

#define DBUS_NAME "org.freedesktop.DBus"
#define DBUS_PATH "/org/freedesktop/DBus"
/* Peers that died and are still being drained of their pending calls' failures. */
#define MAX_OLD_PEERS 4

#define offsetofend(type, member) (offsetof(type, member) + sizeof(((type *)0)->member))

/* The smallest size each caller-filled struct ever had (its first version). */
#define ALLOC_SPEC_SIZE_V1 offsetofend(struct dmabroker_alloc_spec, contiguous)
#define EXPORT_INFO_SIZE_V1 offsetofend(struct dmabroker_export_info, strides)
#define SHARE_OPTS_SIZE_V1 offsetofend(struct dmabroker_share_opts, uid)
#define HANDLERS_SIZE_V1 offsetofend(struct dmabroker_event_handlers, revoked)
#define CONSTRAINTS_SIZE_V1 offsetofend(struct dmabroker_constraints, cpu_write)

_Static_assert(DMABROKER_ALLOCATE_MANY_MAX == DB_ALLOCATE_MANY_MAX, "one fd cap");
_Static_assert(DMABROKER_TOKEN_STRING_SIZE == DB_TOKEN_HEX_LEN + 1, "one token text size");

enum call_kind {
	CALL_NAME_OWNER, /* GetNameOwner of the broker's name (internal) */
	CALL_REGISTER,
	CALL_BACKENDS, /* the Backends property: the default backend (internal or a step) */
	CALL_OPEN_PEER,
	CALL_ALLOCATE,
	CALL_ALLOCATE_MANY,
	CALL_EXPORT,
	CALL_SHARE,
	CALL_IMPORT,
	CALL_RELEASE,
	CALL_REACQUIRE,
	CALL_MOVE,
	CALL_REVOKE,
	/* Buffer collections */
	CALL_COLLECTION_CREATE,
	CALL_COLLECTION_TOKEN,
	CALL_COLLECTION_JOIN,
	CALL_COLLECTION_SET,
	CALL_COLLECTION_COMMIT,
	CALL_COLLECTION_WAIT,
	CALL_COLLECTION_BUFFERS, /* a step of a wait: the next batch of buffers */
	CALL_COLLECTION_LEAVE,
};

static const struct {
	const char *member;
	/* Carrying it out twice leaves the daemon as once: safe to resend when unanswered. */
	bool repeatable;
} methods[] = {
	[CALL_NAME_OWNER] = {"GetNameOwner", true},
	[CALL_REGISTER] = {"Register", false},
	[CALL_BACKENDS] = {"Get", true},
	[CALL_OPEN_PEER] = {"OpenPeer", false},
	[CALL_ALLOCATE] = {"Allocate", false},
	[CALL_ALLOCATE_MANY] = {"AllocateMany", false},
	[CALL_EXPORT] = {"Export", false},
	[CALL_SHARE] = {"Share", false},
	[CALL_IMPORT] = {"Import", false}, /* a single-use token works once */
	[CALL_RELEASE] = {"Release", true},
	[CALL_REACQUIRE] = {"Reacquire", true},
	[CALL_MOVE] = {"Move", false},
	[CALL_REVOKE] = {"Revoke", true},
	[CALL_COLLECTION_CREATE] = {"CreateCollection", false},
	[CALL_COLLECTION_TOKEN] = {"CreateCollectionToken", false},
	[CALL_COLLECTION_JOIN] = {"JoinCollection", false},
	[CALL_COLLECTION_SET] = {"SetCollectionConstraints", false},
	[CALL_COLLECTION_COMMIT] = {"CommitCollection", true},
	[CALL_COLLECTION_WAIT] = {"WaitCollection", true},
	[CALL_COLLECTION_BUFFERS] = {"GetCollectionBuffers", true},
	[CALL_COLLECTION_LEAVE] = {"LeaveCollection", true},
};

struct watch {
	sd_bus *bus; /* owned reference */
	int fd; /* the fd registered in the epoll set (sd-bus owns it) */
	uint32_t events;
};

/* cgroup levels looked at above this process: deeper hierarchies are rare. */
#define MAX_MEMCG_LEVELS 16

struct dmabroker {
	struct watch bus;
	struct watch peer; /* bus NULL until registered (or with DMABROKER_CONNECT_NO_PEER) */
	struct watch old_peers[MAX_OLD_PEERS]; /* dead peers, drained then freed by dispatch */
	int epoll_fd; /* owned; what dmabroker_get_fd() returns */
	int kick_fd; /* owned eventfd in epoll_fd: sd-bus has work its sockets do not show */
	int timer_fd; /* owned timerfd in epoll_fd: sd-bus's next call timeout */
	uint64_t timer_deadline; /* what timer_fd was last armed to (UINT64_MAX: disarmed) */
	bool timer_fired; /* drained since it was armed: arm it again even if unchanged */
	bool kicked; /* kick_fd is readable: no need to write it again until it is drained */
	uint64_t timeout; /* for dmabroker_get_timeout() */
	uint32_t flags;
	char *owner; /* unique name owning DB_BUS_NAME, NULL if none: the only sender we trust */
	char *client_path;
	char default_backend[16]; /* the daemon's, read at registration */
	/* cgroup v2 directories above this process that set memory.max, found at the first
	 * allocation of our own memory (n_memcg_limits < 0: not looked yet) */
	char *memcg_limits[MAX_MEMCG_LEVELS];
	int n_memcg_limits;
	char last_error[256];
	struct dmabroker_event_handlers handlers;
	void *userdata;
	struct dmabroker_buffer *buffers; /* live buffers, for routing signals */
	struct dmabroker_collection *collections; /* live collections (they own buffers) */
	struct dmabroker_call *calls; /* calls in flight */
	sd_event_source *event_source; /* from dmabroker_attach_event(), owned */
	int handled; /* callbacks run by the current dmabroker_dispatch() */
	bool dispatching;
	bool bus_dead; /* dispatch reported -ECONNRESET: stop waking the loop for it */
	bool disconnect_requested; /* dmabroker_disconnect() from a callback */
};

struct dmabroker_buffer {
	struct dmabroker *ctx;
	char *path;
	int fd; /* owned by the buffer */
	struct db_layout layout;
	char backend[16];
	bool dmabuf;
	enum dmabroker_path attach_path;
	void *map; /* owned mapping of map_size bytes, or NULL */
	size_t map_size;
	struct dmabroker_buffer *prev, *next;
};

struct dmabroker_call {
	struct dmabroker *ctx;
	enum call_kind kind;
	unsigned step; /* registration: 0 Register, 1 Backends, 2 OpenPeer */
	sd_bus_slot *slot; /* owned: the pending answer */
	sd_bus *bus; /* borrowed: where it went (ctx keeps it until the answer came) */
	sd_bus_message *m; /* owned: a repeatable request, kept to resend it on the bus */
	sd_bus_message *plain; /* owned: Register without "compact_layouts", for an older daemon */
	struct dmabroker_buffer *buf; /* what it acts on; NULL once released */
	struct dmabroker_collection *col; /* what it acts on; NULL once left */
	int fd; /* owned: Export's duplicate of the caller's fd, or -1 */
	struct dmabroker_export_info info; /* Export's layout (its name is not kept) */
	struct db_layout asked; /* Allocate*: what the spec says (see spec_asked()) */
	unsigned count;
	bool internal; /* the library's own: nobody is told */
	bool cancelled;
	union {
		dmabroker_done_func_t done;
		dmabroker_buffer_func_t buffer;
		dmabroker_buffers_func_t buffers;
		dmabroker_token_func_t token;
		dmabroker_collection_func_t collection;
	} cb;
	void *userdata;
	struct dmabroker_call *prev, *next;
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

/* msg may be ctx->last_error itself (already written). */
static int set_error_msg(struct dmabroker *ctx, int r, const char *msg)
{
	if (msg != ctx->last_error)
		snprintf(ctx->last_error, sizeof(ctx->last_error), "%s", msg);
	log_msg(DMABROKER_LOG_DEBUG, "dmabroker: %s", ctx->last_error);
	return r;
}

/* Copies a caller's struct of src_size bytes into ours, as the kernel's
 * copy_struct_from_user() does: missing fields are zero, unknown ones must be. */
static int copy_sized(void *dst, size_t dst_size, size_t min_size, const void *src, size_t src_size)
{
	memset(dst, 0, dst_size);
	if (!src)
		return 0;
	if (src_size < min_size)
		return -EINVAL;
	for (size_t i = dst_size; i < src_size; i++)
		if (((const uint8_t *)src)[i])
			return -E2BIG;
	memcpy(dst, src, src_size < dst_size ? src_size : dst_size);
	return 0;
}

/* --- connections and the loop integration --- */

static bool bus_open(sd_bus *bus)
{
	return bus && sd_bus_is_open(bus) > 0;
}

/* Where calls go: the peer while it lives, else the bus. */
/*
 * Whether a call may go on the peer connection. A daemon that died (a crash, a restart) left
 * the peer hung up, perhaps unnoticed yet: a call sent there would be lost, and one that must
 * not run twice could then not be retried. So look (one poll, no wait) before sending; a
 * dead peer is freed by dispatch, and the call goes on the bus to whoever owns the name now.
 */
static bool peer_usable(struct dmabroker *ctx)
{
	struct pollfd p = {.events = POLLRDHUP};

	if (!bus_open(ctx->peer.bus))
		return false;
	p.fd = sd_bus_get_fd(ctx->peer.bus);
	return p.fd >= 0 && (poll(&p, 1, 0) == 0 || !(p.revents & (POLLRDHUP | POLLHUP | POLLERR)));
}

/*
 * A repeatable call needs no look first: if the peer turns out dead it is resent on the bus
 * (call_sync(), on_reply()), so it goes to the peer whenever sd-bus has it open.
 */
static sd_bus *call_bus(struct dmabroker *ctx, enum call_kind kind)
{
	if (methods[kind].repeatable)
		return bus_open(ctx->peer.bus) ? ctx->peer.bus : ctx->bus.bus;
	return peer_usable(ctx) ? ctx->peer.bus : ctx->bus.bus;
}

static int watch_add(struct dmabroker *ctx, struct watch *w, sd_bus *bus)
{
	struct epoll_event ev = {.events = EPOLLIN};
	int fd = sd_bus_get_fd(bus);

	if (fd < 0)
		return fd;
	if (epoll_ctl(ctx->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	*w = (struct watch){.bus = bus, .fd = fd, .events = EPOLLIN};
	return 0;
}

/* Forgets w; the connection is closed and freed (its pending calls were failed already). */
static void watch_free(struct dmabroker *ctx, struct watch *w)
{
	if (!w->bus)
		return;
	epoll_ctl(ctx->epoll_fd, EPOLL_CTL_DEL, w->fd, NULL);
	sd_bus_flush_close_unref(w->bus);
	*w = (struct watch){.fd = -1};
}

/*
 * The peer died (or a new one replaces it): stop sending on it, but keep it until
 * dispatch has drained it, so that every call still pending there gets its answer (sd-bus
 * fails them one by one while closing) and nothing is freed under a callback.
 */
static void retire_peer(struct dmabroker *ctx)
{
	struct watch *slot = NULL;

	if (!ctx->peer.bus)
		return;
	for (unsigned i = 0; i < MAX_OLD_PEERS && !slot; i++)
		if (!ctx->old_peers[i].bus)
			slot = &ctx->old_peers[i];
	if (!slot) {
		/* Never more than one dies at a time in practice; make room the hard way. */
		slot = &ctx->old_peers[0];
		watch_free(ctx, slot);
	}
	*slot = ctx->peer;
	ctx->peer = (struct watch){.fd = -1};
	log_msg(DMABROKER_LOG_INFO, "dmabroker: the peer connection closed; using the bus");
}

/* Makes the fd readable; once is enough until dispatch drains it. */
static void kick(struct dmabroker *ctx)
{
	uint64_t one = 1;

	if (!ctx->kicked && write(ctx->kick_fd, &one, sizeof(one)) == sizeof(one))
		ctx->kicked = true;
}

static void drain(int fd)
{
	uint64_t v;

	(void)!read(fd, &v, sizeof(v));
}

/*
 * Dispatch's start and end: the eventfd is emptied, and the timer may have fired. Only what
 * can be readable is read: the eventfd is written by kick() alone, and a disarmed timer
 * (timerfd_settime() clears its expirations) has nothing to read.
 */
static void drain_all(struct dmabroker *ctx)
{
	if (ctx->kicked) {
		drain(ctx->kick_fd);
		ctx->kicked = false;
	}
	if (ctx->timer_deadline != UINT64_MAX) {
		drain(ctx->timer_fd);
		ctx->timer_fired = true;
	}
}

static void update_watch(struct dmabroker *ctx, struct watch *w, bool *now, uint64_t *deadline)
{
	struct epoll_event ev = {.events = EPOLLIN};
	uint64_t t;
	int events, r;

	if (!w->bus)
		return;
	events = sd_bus_get_events(w->bus);
	if (events < 0) {
		/* Closing or closed: dispatch has to see it. */
		*now = true;
		return;
	}
	if (events & POLLOUT)
		ev.events |= EPOLLOUT;
	if (ev.events != w->events && epoll_ctl(ctx->epoll_fd, EPOLL_CTL_MOD, w->fd, &ev) == 0)
		w->events = ev.events;
	r = sd_bus_get_timeout(w->bus, &t);
	if (r > 0 && t == 0)
		*now = true; /* messages sit in sd-bus's queue: the socket will not show them */
	else if (r > 0 && t < *deadline)
		*deadline = t;
}

/* Brings the fd up to date with sd-bus's state; run at the end of every entry point. */
static void update(struct dmabroker *ctx)
{
	struct itimerspec its = {0};
	uint64_t deadline = UINT64_MAX;
	bool now = false;

	if (!ctx->bus_dead)
		update_watch(ctx, &ctx->bus, &now, &deadline);
	update_watch(ctx, &ctx->peer, &now, &deadline);
	for (unsigned i = 0; i < MAX_OLD_PEERS; i++)
		update_watch(ctx, &ctx->old_peers[i], &now, &deadline);
	if (now)
		kick(ctx);
	ctx->timeout = now ? 0 : deadline;
	/* A blocking call leaves the deadline as it was: no syscall then. */
	if (deadline == ctx->timer_deadline && !ctx->timer_fired)
		return;
	if (deadline != UINT64_MAX) {
		its.it_value.tv_sec = (time_t)(deadline / 1000000);
		its.it_value.tv_nsec = (long)(deadline % 1000000) * 1000;
		if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
			its.it_value.tv_nsec = 1; /* 0 would disarm it */
	}
	if (timerfd_settime(ctx->timer_fd, TFD_TIMER_ABSTIME, &its, NULL) == 0) {
		ctx->timer_deadline = deadline;
		ctx->timer_fired = false;
	}
}

/* Ends a public entry point: the fd must show whatever the call left queued. */
static int done(struct dmabroker *ctx, int r)
{
	if (ctx)
		update(ctx);
	return r;
}

/* --- judging failures --- */

static bool error_from_bus_driver_only(const sd_bus_error *e)
{
	/* The bus could not deliver the call: it was not carried out. */
	return sd_bus_error_has_name(e, SD_BUS_ERROR_SERVICE_UNKNOWN) ||
	       sd_bus_error_has_name(e, SD_BUS_ERROR_NAME_HAS_NO_OWNER);
}

/* An answer from the daemon (or from sd-bus on its side, e.g. an unknown method). */
static bool error_is_answer(const sd_bus_error *e)
{
	static const char *const answers[] = {
		SD_BUS_ERROR_UNKNOWN_METHOD,	SD_BUS_ERROR_UNKNOWN_OBJECT,
		SD_BUS_ERROR_UNKNOWN_INTERFACE, SD_BUS_ERROR_UNKNOWN_PROPERTY,
		SD_BUS_ERROR_INVALID_ARGS,	SD_BUS_ERROR_INVALID_SIGNATURE,
		SD_BUS_ERROR_ACCESS_DENIED,
	};

	if (!sd_bus_error_is_set(e))
		return false;
	if (strncmp(e->name, "org.dmabroker.Error.", 20) == 0)
		return true;
	for (size_t i = 0; i < ARRAY_SIZE(answers); i++)
		if (sd_bus_error_has_name(e, answers[i]))
			return true;
	return false;
}

/*
 * What a failed call means. bus: where it went; error: the error it got, if any; r: the
 * errno sd-bus returned. Returns the errno to report, or 1 if the call should be sent
 * again on the bus (it is repeatable and only the peer under it died).
 */
static int judge_failure(struct dmabroker *ctx, enum call_kind kind, sd_bus *bus,
			 const sd_bus_error *error, int r)
{
	if (error && error_is_answer(error)) {
		snprintf(ctx->last_error, sizeof(ctx->last_error), "%s: %s", error->name,
			 error->message ? error->message : "");
		r = -sd_bus_error_get_errno(error);
		/* A name outside the contract (none should reach us) must still fail. */
		return set_error_msg(ctx, r < 0 ? r : -EIO, ctx->last_error);
	}
	if (error && error_from_bus_driver_only(error)) {
		snprintf(ctx->last_error, sizeof(ctx->last_error), "the daemon is not running: %s",
			 error->message ? error->message : error->name);
		return set_error_msg(ctx, -ECONNRESET, ctx->last_error);
	}
	/* No answer came: the connection died, the daemon died, or the call timed out. */
	if (methods[kind].repeatable) {
		if (bus != ctx->bus.bus && !bus_open(bus) && bus_open(ctx->bus.bus))
			return 1;
		return set_error_msg(ctx, bus_open(bus) ? -ETIMEDOUT : -ECONNRESET,
				     "no answer from the daemon");
	}
	return set_error_msg(ctx, -ECONNABORTED,
			     "the connection died (or timed out) before the daemon answered; "
			     "whether it carried out the call is unknown");
}

/* The same request, for the bus: a sealed message cannot change connection. */
static int copy_for_bus(struct dmabroker *ctx, sd_bus_message *m, sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *again = NULL;
	int r;

	r = sd_bus_message_new_method_call(
		ctx->bus.bus, &again, DB_BUS_NAME, sd_bus_message_get_path(m),
		sd_bus_message_get_interface(m), sd_bus_message_get_member(m));
	if (r >= 0)
		r = sd_bus_message_rewind(m, true);
	if (r >= 0)
		r = sd_bus_message_copy(again, m, true);
	if (r < 0)
		return r;
	*ret = take_ptr(again);
	return 0;
}

/*
 * sd-bus's default (25 s) for every call but WaitCollection, which the daemon answers when the
 * participants are done, at the latest at its CollectionDeadlineSec (at most an hour).
 */
static uint64_t call_timeout(enum call_kind kind)
{
	return kind == CALL_COLLECTION_WAIT ? 3700ull * 1000000 : 0;
}

/* Sends m and waits for the answer. */
static int call_sync(struct dmabroker *ctx, enum call_kind kind, sd_bus_message *m,
		     sd_bus_message **reply)
{
	sd_bus *bus = sd_bus_message_get_bus(m);
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r;

	ctx->last_error[0] = '\0';
	if (!bus_open(bus))
		return set_error_msg(ctx, -ECONNRESET, "not connected");
	r = sd_bus_call(bus, m, call_timeout(kind), &error, reply);
	if (r >= 0)
		return 0; /* sd_bus_call() returns 1 on success; the public API promises 0 */
	r = judge_failure(ctx, kind, bus, &error, r);
	sd_bus_error_free(&error);
	if (r == 1) {
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *again = NULL;

		r = copy_for_bus(ctx, m, &again);
		if (r < 0)
			return r;
		r = sd_bus_call(ctx->bus.bus, again, call_timeout(kind), &error, reply);
		if (r < 0)
			r = judge_failure(ctx, kind, ctx->bus.bus, &error, r);
		sd_bus_error_free(&error);
	}
	return r < 0 ? r : 0;
}

static int new_call(struct dmabroker *ctx, enum call_kind kind, sd_bus_message **ret)
{
	sd_bus *bus = call_bus(ctx, kind);

	if (!bus_open(bus))
		return set_error_msg(ctx, -ECONNRESET, "not connected");
	return sd_bus_message_new_method_call(bus, ret, bus == ctx->bus.bus ? DB_BUS_NAME : NULL,
					      DB_OBJECT_PATH, DB_IFACE_BROKER,
					      methods[kind].member);
}

/* --- buffers --- */

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
static void buffer_let_go(struct dmabroker_buffer *buf)
{
	buffer_unmap(buf);
	if (buf->fd >= 0)
		close(buf->fd);
	buf->fd = -1;
}

static struct dmabroker_buffer *buffer_free(struct dmabroker_buffer *buf)
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
static int read_layout(sd_bus_message *m, const struct db_layout *asked,
		       struct dmabroker_buffer *buf)
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
static int buffer_from_reply(struct dmabroker *ctx, const char *path, int borrowed_fd,
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

/* --- building calls and reading their answers --- */

static int append_str_entry(sd_bus_message *m, const char *key, const char *v)
{
	return sd_bus_message_append(m, "{sv}", key, "s", v);
}

static int build_register(struct dmabroker *ctx, const char *role, bool dynamic, const char *name,
			  const char *const *devices, bool compact, sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	r = sd_bus_message_new_method_call(ctx->bus.bus, &m, DB_BUS_NAME, DB_OBJECT_PATH,
					   DB_IFACE_BROKER, "Register");
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0)
		r = sd_bus_message_append(m, "{sv}{sv}", "role", "s", role, "dynamic", "b",
					  (int)dynamic);
	/* Layouts in replies without what our spec said or what is zero: a plain buffer's is
	 * one entry, not eleven (read_layout()). */
	if (r >= 0 && compact)
		r = sd_bus_message_append(m, "{sv}", "compact_layouts", "b", 1);
	if (r >= 0 && name)
		r = append_str_entry(m, "name", name);
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
	*ret = take_ptr(m);
	return 0;
}

/*
 * A daemon older than "compact_layouts" refuses Register with it as an unknown key, before it
 * registers anything: then Register is sent again without it, and replies carry full layouts
 * (which read_layout() reads as well).
 */
static bool refused_compact(const sd_bus_error *e)
{
	return e && sd_bus_error_has_name(e, "org.dmabroker.Error.InvalidArgument") && e->message &&
	       strstr(e->message, "'compact_layouts'");
}

static int read_register(struct dmabroker *ctx, sd_bus_message *reply)
{
	const char *path;
	int r;

	r = sd_bus_message_read(reply, "o", &path);
	if (r < 0)
		return r;
	free(ctx->client_path);
	ctx->client_path = strdup(path);
	return ctx->client_path ? 0 : -ENOMEM;
}

static int build_backends(struct dmabroker *ctx, sd_bus_message **ret)
{
	sd_bus *bus = call_bus(ctx, CALL_BACKENDS);

	return sd_bus_message_new_method_call(bus, ret, bus == ctx->bus.bus ? DB_BUS_NAME : NULL,
					      DB_OBJECT_PATH, "org.freedesktop.DBus.Properties",
					      "Get") < 0 ||
			       sd_bus_message_append(*ret, "ss", DB_IFACE_BROKER, "Backends") < 0
		       ? -ENOMEM
		       : 0;
}

/* The daemon's default backend: the first of its Backends property. */
static void read_backends(struct dmabroker *ctx, sd_bus_message *reply)
{
	const char *name;

	ctx->default_backend[0] = '\0';
	if (sd_bus_message_enter_container(reply, 'v', "as") <= 0 ||
	    sd_bus_message_enter_container(reply, 'a', "s") <= 0 ||
	    sd_bus_message_read_basic(reply, 's', &name) <= 0)
		return;
	snprintf(ctx->default_backend, sizeof(ctx->default_backend), "%s", name);
}

static int on_signal(sd_bus_message *m, void *userdata, sd_bus_error *error);

/* Sets up the peer connection from OpenPeer's answer. */
static int read_open_peer(struct dmabroker *ctx, sd_bus_message *reply)
{
	_cleanup_(closep) int fd = -1;
	sd_bus *peer = NULL;
	int borrowed, r;

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
	/* Not a bus client: this adds the match locally, with no round trip. Everything on
	 * this socket comes from the daemon, so no sender is checked. */
	if (r >= 0)
		r = sd_bus_match_signal(peer, NULL, NULL, DB_OBJECT_PATH, DB_IFACE_BROKER, NULL,
					on_signal, ctx);
	if (r < 0) {
		sd_bus_flush_close_unref(peer);
		return r;
	}
	retire_peer(ctx);
	r = watch_add(ctx, &ctx->peer, peer);
	if (r < 0)
		sd_bus_flush_close_unref(peer);
	return r;
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
 * is asked). The size is the daemon's own computation (common/layout.c). This is local
 * work, the same in the asynchronous form: no wait on the daemon.
 */
/* Finds the cgroup v2 levels, from ours up, that set a memory.max. */
static void find_memcg_limits(struct dmabroker *ctx)
{
	_cleanup_(freep) char *cgroup = NULL;
	char dir[4096];
	char *path, *end;

	ctx->n_memcg_limits = 0;
	if (read_small_file("/proc/self/cgroup", &cgroup, 8192) < 0)
		return;
	/* cgroup v2 is the "0::" line. */
	path = strstr(cgroup, "0::/");
	if (!path || (path != cgroup && path[-1] != '\n'))
		return;
	path += 3;
	end = strchr(path, '\n');
	if (end)
		*end = '\0';
	while (ctx->n_memcg_limits < MAX_MEMCG_LEVELS) {
		_cleanup_(freep) char *max = NULL;
		char file[4200];
		char *slash;

		snprintf(dir, sizeof(dir), "/sys/fs/cgroup%s", strcmp(path, "/") ? path : "");
		snprintf(file, sizeof(file), "%s/memory.max", dir);
		if (read_small_file(file, &max, 64) > 0 && strncmp(max, "max", 3) != 0)
			ctx->memcg_limits[ctx->n_memcg_limits++] = strdup(dir);
		slash = strrchr(path, '/');
		if (!slash || slash == path)
			break;
		*slash = '\0';
	}
}

static int read_u64_file(const char *dir, const char *name, uint64_t *ret)
{
	_cleanup_(freep) char *text = NULL;
	char file[4200];
	char *end;

	snprintf(file, sizeof(file), "%s/%s", dir, name);
	if (read_small_file(file, &text, 64) <= 0)
		return -ENOENT;
	errno = 0;
	*ret = strtoull(text, &end, 10);
	return errno || end == text ? -EINVAL : 0;
}

/*
 * Past its memory.max a cgroup's allocation does not fail: the kernel's OOM killer picks a
 * process in it. So ask first: -ENOMEM if size more bytes would take any limited level above
 * us past its limit. (Another thread allocating at the same time can still get there first.)
 */
static int check_memcg_headroom(struct dmabroker *ctx, size_t size)
{
	if (ctx->n_memcg_limits < 0)
		find_memcg_limits(ctx);
	for (int i = 0; i < ctx->n_memcg_limits; i++) {
		uint64_t max, current;

		if (read_u64_file(ctx->memcg_limits[i], "memory.max", &max) < 0 ||
		    read_u64_file(ctx->memcg_limits[i], "memory.current", &current) < 0)
			continue; /* "max" again, or gone: no limit to respect */
		if (current + size > max) {
			snprintf(ctx->last_error, sizeof(ctx->last_error),
				 "%zu more bytes would take %s past its memory.max (%" PRIu64
				 " of %" PRIu64 " bytes in use)",
				 size, ctx->memcg_limits[i], current, max);
			return -ENOMEM;
		}
	}
	return 0;
}

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
	r = check_memcg_headroom(ctx, aligned);
	if (r < 0)
		return r;
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

/*
 * What the spec itself says, as the daemon's spec parser records it (daemon/spec.c): a plain
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
		if (r == -ENOMEM || r == -EFBIG)
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

static int read_allocate(struct dmabroker *ctx, sd_bus_message *reply, bool import,
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

static int read_allocate_many(struct dmabroker *ctx, sd_bus_message *reply, unsigned count,
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
static int read_export(struct dmabroker *ctx, sd_bus_message *reply, int *own_fd,
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

static int read_share(sd_bus_message *reply, struct dmabroker_token *ret)
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
static int build_on_buffer(struct dmabroker *ctx, enum call_kind kind, const char *path,
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

static int read_reacquire(struct dmabroker_buffer *buf, sd_bus_message *reply)
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

/* --- asynchronous calls --- */

static struct dmabroker_call *call_new(struct dmabroker *ctx, enum call_kind kind, void *cb,
				       void *userdata)
{
	struct dmabroker_call *call = calloc(1, sizeof(*call));

	if (!call)
		return NULL;
	call->ctx = ctx;
	call->kind = kind;
	call->fd = -1;
	/* All members of the union are function pointers of the same size. */
	call->cb.done = (dmabroker_done_func_t)cb;
	call->userdata = userdata;
	call->next = ctx->calls;
	if (ctx->calls)
		ctx->calls->prev = call;
	ctx->calls = call;
	return call;
}

static void call_free(struct dmabroker_call *call)
{
	struct dmabroker *ctx = call->ctx;

	if (call->prev)
		call->prev->next = call->next;
	else
		ctx->calls = call->next;
	if (call->next)
		call->next->prev = call->prev;
	sd_bus_slot_unref(call->slot);
	sd_bus_message_unref(call->m);
	sd_bus_message_unref(call->plain);
	if (call->fd >= 0)
		close(call->fd);
	free(call);
}

static int on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error);

/* Sends m for call; a repeatable request is kept to be resent if the peer dies. */
static int call_send(struct dmabroker_call *call, sd_bus_message *m)
{
	sd_bus *bus = sd_bus_message_get_bus(m);
	int r;

	if (!bus_open(bus))
		return -ECONNRESET;
	call->slot = sd_bus_slot_unref(call->slot);
	r = sd_bus_call_async(bus, &call->slot, m, on_reply, call, call_timeout(call->kind));
	if (r < 0)
		return r == -ENOTCONN ? -ECONNRESET : r;
	call->bus = bus;
	sd_bus_message_unref(call->m);
	call->m = methods[call->kind].repeatable ? sd_bus_message_ref(m) : NULL;
	return 0;
}

/* A new call that sends m; on failure nothing was sent and nobody will be called. */
static int call_start(struct dmabroker *ctx, enum call_kind kind, sd_bus_message *m, void *cb,
		      void *userdata, struct dmabroker_call **ret_call,
		      struct dmabroker_call **ret_internal)
{
	struct dmabroker_call *call;
	int r;

	call = call_new(ctx, kind, cb, userdata);
	if (!call)
		return -ENOMEM;
	r = call_send(call, m);
	if (r < 0) {
		call_free(call);
		return set_error_msg(ctx, r, "could not send the call");
	}
	if (ret_call)
		*ret_call = call;
	if (ret_internal)
		*ret_internal = call;
	return 0;
}

void dmabroker_call_cancel(struct dmabroker_call *call)
{
	if (call)
		call->cancelled = true;
}

/* A cancelled call's buffer: nobody wants it, so the daemon need not keep it. */
static void release_unwanted(struct dmabroker_buffer *buf)
{
	if (buf)
		(void)dmabroker_release_async(buf, NULL, NULL, NULL);
}

static void complete_buffer(struct dmabroker_call *call, int r, struct dmabroker_buffer *buf)
{
	if (call->cancelled || !call->cb.buffer)
		release_unwanted(r >= 0 ? buf : NULL);
	else
		call->cb.buffer(r, r >= 0 ? buf : NULL, call->userdata);
}

/* The next step of a registration; 1 if one was sent. */
static int register_next_step(struct dmabroker_call *call)
{
	struct dmabroker *ctx = call->ctx;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	call->step++;
	if (call->step == 1) {
		call->kind = CALL_BACKENDS;
		r = build_backends(ctx, &m);
	} else if (call->step == 2 && !(ctx->flags & DMABROKER_CONNECT_NO_PEER)) {
		call->kind = CALL_OPEN_PEER;
		r = new_call(ctx, CALL_OPEN_PEER, &m);
	} else {
		return 0;
	}
	if (r >= 0)
		r = call_send(call, m);
	return r < 0 ? r : 1;
}

static int collection_on_reply(struct dmabroker_call *call, sd_bus_message *reply, int r);
static void collection_free(struct dmabroker_collection *col);

static int on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
	struct dmabroker_call *call = userdata;
	struct dmabroker *ctx = call->ctx;
	const sd_bus_error *e = sd_bus_message_get_error(reply);
	struct dmabroker_buffer *buf = NULL, *bufs[DMABROKER_ALLOCATE_MANY_MAX] = {0};
	struct dmabroker_token token = {{0}};
	int r = 0;

	(void)ret_error;
	if (call->kind == CALL_REGISTER && call->plain && refused_compact(e)) {
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *plain = take_ptr(call->plain);

		if (call_send(call, plain) >= 0)
			return 0; /* its answer comes here again */
	}
	if (e) {
		r = judge_failure(ctx, call->kind, call->bus, e, -EIO);
		if (r == 1) {
			_cleanup_(sd_bus_message_unrefp) sd_bus_message *again = NULL;

			r = copy_for_bus(ctx, call->m, &again);
			if (r >= 0)
				r = call_send(call, again);
			if (r >= 0)
				return 0; /* its answer comes on the bus */
		}
	}
	switch (call->kind) {
	case CALL_NAME_OWNER: {
		const char *owner;

		free(ctx->owner);
		ctx->owner = NULL;
		if (r >= 0 && sd_bus_message_read(reply, "s", &owner) > 0)
			ctx->owner = strdup(owner);
		call_free(call);
		return 0;
	}
	case CALL_REGISTER:
		if (r >= 0)
			r = read_register(ctx, reply);
		if (r >= 0 && (r = register_next_step(call)) > 0)
			return 0;
		break;
	case CALL_BACKENDS:
		if (r >= 0)
			read_backends(ctx, reply);
		/* The default backend is only an optimisation hint: go on without it. */
		if (call->step && (r = register_next_step(call)) > 0)
			return 0;
		break;
	case CALL_OPEN_PEER:
		if (r >= 0)
			r = read_open_peer(ctx, reply);
		if (r < 0)
			/* The bus still works; only the fast path is missing. */
			log_msg(DMABROKER_LOG_INFO,
				"dmabroker: no peer connection, staying on the bus: %s",
				strerror(-r));
		r = 0;
		break;
	case CALL_ALLOCATE:
	case CALL_IMPORT:
		if (r >= 0)
			r = read_allocate(ctx, reply, call->kind == CALL_IMPORT,
					  call->kind == CALL_IMPORT ? NULL : &call->asked, &buf);
		complete_buffer(call, r, buf);
		call_free(call);
		return 0;
	case CALL_EXPORT:
		if (r >= 0)
			r = read_export(ctx, reply, &call->fd, &call->info, &buf);
		complete_buffer(call, r, buf);
		call_free(call);
		return 0;
	case CALL_ALLOCATE_MANY:
		if (r >= 0)
			r = read_allocate_many(ctx, reply, call->count, &call->asked, bufs);
		if (call->cancelled || !call->cb.buffers) {
			for (unsigned i = 0; r >= 0 && i < call->count; i++)
				release_unwanted(bufs[i]);
		} else {
			call->cb.buffers(r, r >= 0 ? bufs : NULL, r >= 0 ? call->count : 0,
					 call->userdata);
		}
		call_free(call);
		return 0;
	case CALL_SHARE:
		if (r >= 0)
			r = read_share(reply, &token);
		if (!call->cancelled && call->cb.token)
			call->cb.token(r, r >= 0 ? &token : NULL, call->userdata);
		call_free(call);
		return 0;
	case CALL_REACQUIRE:
		if (r >= 0)
			r = read_reacquire(call->buf, reply);
		break;
	case CALL_RELEASE:
	case CALL_MOVE:
	case CALL_REVOKE:
		break;
	case CALL_COLLECTION_CREATE:
	case CALL_COLLECTION_TOKEN:
	case CALL_COLLECTION_JOIN:
	case CALL_COLLECTION_SET:
	case CALL_COLLECTION_COMMIT:
	case CALL_COLLECTION_WAIT:
	case CALL_COLLECTION_BUFFERS:
	case CALL_COLLECTION_LEAVE:
		if (collection_on_reply(call, reply, r) > 0)
			return 0; /* a next step was sent */
		call_free(call);
		return 0;
	}
	if (!call->internal && !call->cancelled && call->cb.done)
		call->cb.done(r, call->userdata);
	call_free(call);
	return 0;
}

/* --- signals --- */

static struct dmabroker_buffer *find_buffer(struct dmabroker *ctx, const char *path)
{
	for (struct dmabroker_buffer *buf = ctx->buffers; buf; buf = buf->next)
		if (strcmp(buf->path, path) == 0)
			return buf;
	return NULL;
}

static int on_signal(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct dmabroker *ctx = userdata;
	const char *member = sd_bus_message_get_member(m);
	const char *path, *reason = "";
	struct dmabroker_buffer *buf;

	(void)error;
	/* On the bus anyone can send us a signal: only the broker's current owner counts. On
	 * the peer connection, only the daemon is at the other end. */
	if (sd_bus_message_get_bus(m) == ctx->bus.bus &&
	    !streq_ptr(sd_bus_message_get_sender(m), ctx->owner)) {
		log_msg(DMABROKER_LOG_DEBUG, "dmabroker: ignoring %s from %s, not the broker",
			member, sd_bus_message_get_sender(m));
		return 0;
	}
	if (sd_bus_message_read_basic(m, 'o', &path) <= 0)
		return 0;
	buf = find_buffer(ctx, path);
	if (!buf)
		return 0;
	/* The callback may release buf: nothing touches it afterwards. */
	if (strcmp(member, "Moved") == 0) {
		ctx->handled++;
		if (ctx->handlers.moved)
			ctx->handlers.moved(buf, ctx->userdata);
	} else if (strcmp(member, "Revoked") == 0) {
		(void)sd_bus_message_read_basic(m, 's', &reason);
		ctx->handled++;
		if (ctx->handlers.revoked)
			ctx->handlers.revoked(buf, reason, ctx->userdata);
	}
	return 0;
}

/* The daemon came, went or was replaced: follow it. */
static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct dmabroker *ctx = userdata;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *get = NULL, *open = NULL;
	struct dmabroker_call *call;
	const char *name, *old_owner, *new_owner;

	(void)error;
	/* Only the bus driver speaks for names; anyone else's NameOwnerChanged is a forgery. */
	if (!streq_ptr(sd_bus_message_get_sender(m), DBUS_NAME) ||
	    sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 ||
	    strcmp(name, DB_BUS_NAME) != 0)
		return 0;
	free(ctx->owner);
	ctx->owner = new_owner[0] ? strdup(new_owner) : NULL;
	log_msg(DMABROKER_LOG_INFO, "dmabroker: the broker is now %s",
		new_owner[0] ? new_owner : "gone");
	if (!new_owner[0] || !ctx->client_path)
		return 0;
	/* A restarted daemon restores registrations on the bus: the old peer went with the old
	 * daemon, so ask the new one for the default backend and a new peer. */
	if (bus_open(ctx->peer.bus))
		retire_peer(ctx);
	if (build_backends(ctx, &get) >= 0 &&
	    call_start(ctx, CALL_BACKENDS, get, NULL, NULL, NULL, &call) >= 0)
		call->internal = true;
	if (!(ctx->flags & DMABROKER_CONNECT_NO_PEER) &&
	    new_call(ctx, CALL_OPEN_PEER, &open) >= 0 &&
	    call_start(ctx, CALL_OPEN_PEER, open, NULL, NULL, NULL, &call) >= 0)
		call->internal = true;
	return 0;
}

/* --- connecting --- */

/* Asks, without waiting, who owns the broker's name now and from then on. */
static int follow_owner(struct dmabroker *ctx)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_call *call;
	int r;

	r = sd_bus_add_match_async(ctx->bus.bus, NULL,
				   "type='signal',sender='" DBUS_NAME "',path='" DBUS_PATH
				   "',interface='" DBUS_NAME "',member='NameOwnerChanged',"
				   "arg0='" DB_BUS_NAME "'",
				   on_name_owner_changed, NULL, ctx);
	if (r < 0)
		return r;
	/* Unicast signals reach us without a match; sd-bus needs it to route them to us. */
	r = sd_bus_match_signal_async(ctx->bus.bus, NULL, NULL, DB_OBJECT_PATH, DB_IFACE_BROKER,
				      NULL, on_signal, NULL, ctx);
	if (r < 0)
		return r;
	/* After the match: whatever changes from here on is seen in order. */
	r = sd_bus_message_new_method_call(ctx->bus.bus, &m, DBUS_NAME, DBUS_PATH, DBUS_NAME,
					   "GetNameOwner");
	if (r >= 0)
		r = sd_bus_message_append(m, "s", DB_BUS_NAME);
	if (r >= 0)
		r = call_start(ctx, CALL_NAME_OWNER, m, NULL, NULL, NULL, &call);
	if (r >= 0)
		call->internal = true;
	return r;
}

int dmabroker_connect(struct dmabroker **ret, const char *address, uint32_t flags)
{
	struct epoll_event ev = {.events = EPOLLIN};
	struct dmabroker *ctx;
	sd_bus *bus = NULL;
	int r;

	if (!ret || (flags & ~(uint32_t)(DMABROKER_CONNECT_USER | DMABROKER_CONNECT_NO_PEER |
					 DMABROKER_CONNECT_DAEMON_MEMORY)))
		return -EINVAL;
	db_errors_register();
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	ctx->flags = flags;
	ctx->bus.fd = ctx->peer.fd = -1;
	ctx->kick_fd = ctx->timer_fd = -1;
	ctx->timer_deadline = UINT64_MAX; /* a new timerfd is disarmed */
	ctx->n_memcg_limits = -1;
	for (unsigned i = 0; i < MAX_OLD_PEERS; i++)
		ctx->old_peers[i].fd = -1;
	ctx->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	ctx->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ctx->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (ctx->epoll_fd < 0 || ctx->kick_fd < 0 || ctx->timer_fd < 0 ||
	    epoll_ctl(ctx->epoll_fd, EPOLL_CTL_ADD, ctx->kick_fd, &ev) < 0 ||
	    epoll_ctl(ctx->epoll_fd, EPOLL_CTL_ADD, ctx->timer_fd, &ev) < 0) {
		r = -errno;
		goto fail;
	}
	if (!address)
		address = secure_getenv(DB_ENV_BUS_ADDRESS);
	if (address)
		r = db_bus_open_address(address, &bus);
	else if (flags & DMABROKER_CONNECT_USER)
		r = sd_bus_open_user(&bus);
	else
		r = sd_bus_open_system(&bus);
	if (r < 0)
		goto fail;
	r = watch_add(ctx, &ctx->bus, bus);
	if (r < 0) {
		sd_bus_unref(bus);
		goto fail;
	}
	r = follow_owner(ctx);
	if (r < 0)
		goto fail;
	*ret = ctx;
	return done(ctx, 0);
fail:
	dmabroker_disconnect(ctx);
	return r;
}

struct dmabroker *dmabroker_disconnect(struct dmabroker *ctx)
{
	if (!ctx)
		return NULL;
	if (ctx->dispatching) {
		/* Inside a callback: sd-bus is still working on these connections. */
		ctx->disconnect_requested = true;
		return NULL;
	}
	while (ctx->calls)
		call_free(ctx->calls);
	while (ctx->collections)
		collection_free(ctx->collections);
	while (ctx->buffers)
		buffer_free(ctx->buffers);
	dmabroker_detach_event(ctx);
	watch_free(ctx, &ctx->peer);
	for (unsigned i = 0; i < MAX_OLD_PEERS; i++)
		watch_free(ctx, &ctx->old_peers[i]);
	watch_free(ctx, &ctx->bus);
	if (ctx->epoll_fd >= 0)
		close(ctx->epoll_fd);
	if (ctx->kick_fd >= 0)
		close(ctx->kick_fd);
	if (ctx->timer_fd >= 0)
		close(ctx->timer_fd);
	free(ctx->owner);
	free(ctx->client_path);
	for (int i = 0; i < ctx->n_memcg_limits; i++)
		free(ctx->memcg_limits[i]);
	free(ctx);
	return NULL;
}

const char *dmabroker_last_error(struct dmabroker *ctx)
{
	return ctx ? ctx->last_error : "";
}

const char *dmabroker_client_path(struct dmabroker *ctx)
{
	return ctx ? ctx->client_path : NULL;
}

/* --- the public calls: blocking, then asynchronous --- */

int dmabroker_register(struct dmabroker *ctx, const char *role, bool dynamic, const char *name,
		       const char *const *devices)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	int r;

	if (!ctx || !role)
		return -EINVAL;
	if (ctx->client_path)
		return -EALREADY;
	r = build_register(ctx, role, dynamic, name, devices, true, &m);
	if (r >= 0)
		r = call_sync(ctx, CALL_REGISTER, m, &reply);
	if (r == -EINVAL && strstr(ctx->last_error, "'compact_layouts'")) {
		m = sd_bus_message_unref(m);
		r = build_register(ctx, role, dynamic, name, devices, false, &m);
		if (r >= 0)
			r = call_sync(ctx, CALL_REGISTER, m, &reply);
	}
	if (r >= 0)
		r = read_register(ctx, reply);
	if (r < 0)
		return done(ctx, r);
	m = sd_bus_message_unref(m);
	reply = sd_bus_message_unref(reply);
	if (build_backends(ctx, &m) >= 0 && call_sync(ctx, CALL_BACKENDS, m, &reply) >= 0)
		read_backends(ctx, reply);
	if (!(ctx->flags & DMABROKER_CONNECT_NO_PEER)) {
		m = sd_bus_message_unref(m);
		reply = sd_bus_message_unref(reply);
		r = new_call(ctx, CALL_OPEN_PEER, &m);
		if (r >= 0)
			r = call_sync(ctx, CALL_OPEN_PEER, m, &reply);
		if (r >= 0)
			r = read_open_peer(ctx, reply);
		if (r < 0)
			/* The bus still works; only the fast path is missing. */
			log_msg(DMABROKER_LOG_INFO,
				"dmabroker: no peer connection, staying on the bus: %s",
				strerror(-r));
	}
	return done(ctx, 0);
}

int dmabroker_register_async(struct dmabroker *ctx, const char *role, bool dynamic,
			     const char *name, const char *const *devices, dmabroker_done_func_t cb,
			     void *userdata, struct dmabroker_call **ret_call)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *plain = NULL;
	struct dmabroker_call *call = NULL;
	int r;

	if (!ctx || !role)
		return -EINVAL;
	if (ctx->client_path)
		return -EALREADY;
	r = build_register(ctx, role, dynamic, name, devices, true, &m);
	if (r >= 0)
		r = build_register(ctx, role, dynamic, name, devices, false, &plain);
	if (r >= 0)
		r = call_start(ctx, CALL_REGISTER, m, (void *)cb, userdata, ret_call, &call);
	if (r >= 0)
		call->plain = take_ptr(plain);
	return done(ctx, r);
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
	return done(ctx, r);
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
	return done(ctx, r);
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
	return done(ctx, r);
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
	return done(ctx, r);
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
	if (own < 0)
		return own;
	r = build_export(ctx, own, &info, &m);
	if (r >= 0)
		r = call_sync(ctx, CALL_EXPORT, m, &reply);
	if (r >= 0)
		r = read_export(ctx, reply, &own, &info, ret);
	return done(ctx, r);
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
	return done(ctx, r);
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
	return done(buf->ctx, r);
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
	return done(buf->ctx, r);
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
	return done(ctx, r);
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
	return done(ctx, r);
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
static int sync_on_buffer(struct dmabroker_buffer *buf, enum call_kind kind, const char *reason)
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
	r = sync_on_buffer(buf, CALL_RELEASE, NULL);
	buffer_free(buf);
	return done(ctx, r);
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
	r = async_on_buffer(buf, CALL_RELEASE, NULL, cb, userdata, ret_call);
	buffer_free(buf);
	return done(ctx, r);
}

int dmabroker_buffer_reacquire(struct dmabroker_buffer *buf)
{
	return buf ? done(buf->ctx, sync_on_buffer(buf, CALL_REACQUIRE, NULL)) : -EINVAL;
}

int dmabroker_buffer_reacquire_async(struct dmabroker_buffer *buf, dmabroker_done_func_t cb,
				     void *userdata, struct dmabroker_call **ret_call)
{
	if (!buf)
		return -EINVAL;
	return done(buf->ctx, async_on_buffer(buf, CALL_REACQUIRE, NULL, cb, userdata, ret_call));
}

int dmabroker_buffer_move(struct dmabroker_buffer *buf)
{
	return buf ? done(buf->ctx, sync_on_buffer(buf, CALL_MOVE, NULL)) : -EINVAL;
}

int dmabroker_buffer_move_async(struct dmabroker_buffer *buf, dmabroker_done_func_t cb,
				void *userdata, struct dmabroker_call **ret_call)
{
	if (!buf)
		return -EINVAL;
	return done(buf->ctx, async_on_buffer(buf, CALL_MOVE, NULL, cb, userdata, ret_call));
}

int dmabroker_buffer_revoke(struct dmabroker_buffer *buf, const char *reason)
{
	return buf ? done(buf->ctx, sync_on_buffer(buf, CALL_REVOKE, reason)) : -EINVAL;
}

int dmabroker_buffer_revoke_async(struct dmabroker_buffer *buf, const char *reason,
				  dmabroker_done_func_t cb, void *userdata,
				  struct dmabroker_call **ret_call)
{
	if (!buf)
		return -EINVAL;
	return done(buf->ctx, async_on_buffer(buf, CALL_REVOKE, reason, cb, userdata, ret_call));
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

/* --- events and the loop --- */

int dmabroker_set_event_handlers(struct dmabroker *ctx,
				 const struct dmabroker_event_handlers *handlers,
				 size_t handlers_size, void *userdata)
{
	struct dmabroker_event_handlers h;
	int r;

	if (!ctx)
		return -EINVAL;
	r = copy_sized(&h, sizeof(h), HANDLERS_SIZE_V1, handlers, handlers_size);
	if (r < 0)
		return r;
	ctx->handlers = h;
	ctx->userdata = userdata;
	return 0;
}

int dmabroker_get_fd(struct dmabroker *ctx)
{
	return ctx ? ctx->epoll_fd : -EINVAL;
}

int dmabroker_get_events(struct dmabroker *ctx)
{
	/* The sockets' own POLLOUT needs are inside the epoll set: outside, it is readable. */
	return ctx ? POLLIN : -EINVAL;
}

int dmabroker_get_timeout(struct dmabroker *ctx, uint64_t *ret_usec)
{
	if (!ctx || !ret_usec)
		return -EINVAL;
	*ret_usec = ctx->timeout;
	return 0;
}

/* Runs everything a connection has; < 0 once it is closed and drained. */
static int process_all(sd_bus *bus, bool *progress)
{
	int r;

	/* A callback may retire or replace it: keep it alive while sd-bus works on it. */
	sd_bus_ref(bus);
	while ((r = sd_bus_process(bus, NULL)) > 0)
		*progress = true;
	sd_bus_unref(bus);
	return r;
}

int dmabroker_dispatch(struct dmabroker *ctx)
{
	bool progress = true;
	int r = 0;

	if (!ctx)
		return -EINVAL;
	if (ctx->dispatching)
		return -EBUSY;
	ctx->dispatching = true;
	ctx->handled = 0;
	drain_all(ctx);
	/* Round after round, reading the connections afresh each time: a callback can retire
	 * the peer, open a new one, or queue messages on a connection already done. */
	while (progress && r >= 0) {
		progress = false;
		for (unsigned i = 0; i < MAX_OLD_PEERS; i++) {
			sd_bus *old = ctx->old_peers[i].bus;

			if (old && process_all(old, &progress) < 0 && ctx->old_peers[i].bus == old)
				watch_free(ctx, &ctx->old_peers[i]);
		}
		if (ctx->peer.bus) {
			sd_bus *peer = ctx->peer.bus;

			if (process_all(peer, &progress) < 0 && ctx->peer.bus == peer) {
				retire_peer(ctx);
				progress = true; /* drain and free it next round */
			}
		}
		if (process_all(ctx->bus.bus, &progress) < 0) {
			r = -ECONNRESET;
			ctx->bus_dead = true;
		}
	}
	ctx->dispatching = false;
	if (ctx->disconnect_requested) {
		dmabroker_disconnect(ctx);
		return r < 0 ? r : 0;
	}
	drain_all(ctx);
	return done(ctx, r < 0 ? r : ctx->handled);
}

/* --- sd-event --- */

static int on_event_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	(void)s;
	(void)fd;
	(void)revents;
	/* A dead connection shows in every later call's result; the loop keeps running. */
	(void)dmabroker_dispatch(userdata);
	return 0;
}

int dmabroker_attach_event(struct dmabroker *ctx, struct sd_event *event, int64_t priority)
{
	_cleanup_(sd_event_unrefp) sd_event *e = NULL;
	int r;

	if (!ctx)
		return -EINVAL;
	if (ctx->event_source)
		return -EBUSY;
	if (event)
		e = sd_event_ref(event);
	else if ((r = sd_event_default(&e)) < 0)
		return r;
	r = sd_event_add_io(e, &ctx->event_source, ctx->epoll_fd, EPOLLIN, on_event_io, ctx);
	if (r < 0)
		return r;
	r = sd_event_source_set_priority(ctx->event_source, priority);
	if (r >= 0)
		(void)sd_event_source_set_description(ctx->event_source, "dmabroker");
	if (r < 0)
		ctx->event_source = sd_event_source_unref(ctx->event_source);
	return r < 0 ? r : 0;
}

int dmabroker_detach_event(struct dmabroker *ctx)
{
	if (!ctx)
		return -EINVAL;
	ctx->event_source = sd_event_source_disable_unref(ctx->event_source);
	return 0;
}

/* --- buffer collections --- */

struct dmabroker_collection {
	struct dmabroker *ctx;
	char *path;
	struct dmabroker_collection_info info;
	struct dmabroker_buffer probe; /* the layout every buffer has */
	struct dmabroker_buffer **buffers; /* info.buffer_count, fetched in batches */
	unsigned n_fetched;
	struct dmabroker_collection *prev, *next;
};

static struct dmabroker_collection *collection_new(struct dmabroker *ctx, const char *path)
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

static void collection_free(struct dmabroker_collection *col)
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
		r = call_send(call, m);
	return r < 0 ? r : 1;
}

static int collection_on_reply(struct dmabroker_call *call, sd_bus_message *reply, int r)
{
	struct dmabroker *ctx = call->ctx;
	struct dmabroker_collection *col = NULL;
	struct dmabroker_token token = {{0}};

	switch (call->kind) {
	case CALL_COLLECTION_CREATE:
	case CALL_COLLECTION_JOIN:
		if (r >= 0)
			r = read_collection_path(ctx, reply, &col);
		if (call->cancelled || !call->cb.collection) {
			/* Nobody wants it: leave it at once. */
			if (r >= 0)
				(void)dmabroker_collection_leave(col);
		} else {
			call->cb.collection(r, r >= 0 ? col : NULL, call->userdata);
		}
		return 0;
	case CALL_COLLECTION_TOKEN:
		if (r >= 0)
			r = read_share(reply, &token);
		if (!call->cancelled && call->cb.token)
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
	if (!call->cancelled && call->cb.done)
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
	return done(ctx, r);
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
	return done(ctx, r);
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
	return done(col->ctx, r);
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
	return done(col->ctx, r);
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
	return done(ctx, r);
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
	return done(ctx, r);
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
	return done(col->ctx, r);
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
	return done(col->ctx, r);
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
	return done(col->ctx, r);
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
	return done(col->ctx, r);
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
	return done(col->ctx, r);
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
	return done(col->ctx, r);
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
	return done(ctx, r);
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
		return done(ctx, r);
	}
	/* Freed when the answer comes (or with the context); the caller is done with it now. */
	call->col = col;
	return done(ctx, 0);
}
