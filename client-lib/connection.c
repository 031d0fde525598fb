// SPDX-License-Identifier: MIT
/*
 * libdmabroker: the client side. Calls go over a private peer connection once registered
 * (one hop, no bus daemon in the path), or over the bus until then or when asked to stay.
 * This part connects, registers and opens the peer connection.
 */
#include "libdmabroker-private.h"

static dmabroker_log_func_t log_func;
static void *log_userdata;

void dmabroker_set_log_handler(dmabroker_log_func_t func, void *userdata)
{
	log_func = func;
	log_userdata = userdata;
}

_printf_(2, 3) void log_msg(enum dmabroker_log_level level, const char *fmt, ...)
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
int set_error_msg(struct dmabroker *ctx, int r, const char *msg)
{
	if (msg != ctx->last_error)
		snprintf(ctx->last_error, sizeof(ctx->last_error), "%s", msg);
	log_msg(DMABROKER_LOG_DEBUG, "dmabroker: %s", ctx->last_error);
	return r;
}

/* Copies a caller's struct of src_size bytes into ours, as the kernel's
 * copy_struct_from_user() does: missing fields are zero, unknown ones must be. */
int copy_sized(void *dst, size_t dst_size, size_t min_size, const void *src, size_t src_size)
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

/* --- connections --- */

bool bus_open(sd_bus *bus)
{
	return bus && sd_bus_is_open(bus) > 0;
}

/*
 * Whether a call may go on the peer connection. A daemon that died (a crash, a restart) left
 * the peer hung up, perhaps unnoticed yet: a call sent there would be lost, and one that must
 * not run twice could then not be retried. So look (one poll, no wait) before sending; a
 * dead peer is freed by dispatch, and the call goes on the bus to whoever owns the name now.
 */
bool peer_usable(struct dmabroker *ctx)
{
	struct pollfd p = {.events = POLLRDHUP};

	if (!bus_open(ctx->peer.bus))
		return false;
	p.fd = sd_bus_get_fd(ctx->peer.bus);
	return p.fd >= 0 && (poll(&p, 1, 0) == 0 || !(p.revents & (POLLRDHUP | POLLHUP | POLLERR)));
}

/*
 * Where a call is built: the peer once its handshake is done, else the bus. A call is never
 * sent on a peer whose handshake is still going on: sd-bus would wait there for the daemon
 * (to learn whether fds may pass). A repeatable call needs no look first: if the peer turns
 * out dead it is resent on the bus (call_sync(), on_reply()). An asynchronous call may still
 * change connection in the queue (queue_pump()).
 */
sd_bus *call_bus(struct dmabroker *ctx, enum call_kind kind)
{
	if (!bus_open(ctx->peer.bus) || sd_bus_is_ready(ctx->peer.bus) <= 0)
		return ctx->bus.bus;
	if (methods[kind].repeatable)
		return ctx->peer.bus;
	return peer_usable(ctx) ? ctx->peer.bus : ctx->bus.bus;
}

/*
 * The epoll set holds a duplicate of the connection's fd that the watch owns, never sd-bus's
 * own: sd-bus closes its fd when the connection closes, in the middle of sd_bus_process(),
 * and a new connection (a peer opened by the very callbacks that run then) may be handed the
 * same number before this watch is freed. Deleting that number from the set would then drop
 * the new connection's registration, and its socket would never show in the fd again. The
 * duplicate's number stays this watch's until watch_unwatch().
 */
static int watch_add(struct dmabroker *ctx, struct watch *w, sd_bus *bus)
{
	struct epoll_event ev = {.events = EPOLLIN};
	int fd = sd_bus_get_fd(bus);

	if (fd < 0)
		return fd;
	fd = fd_dup_cloexec(fd);
	if (fd < 0)
		return fd;
	if (epoll_ctl(ctx->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	*w = (struct watch){.bus = bus, .fd = fd, .events = EPOLLIN};
	return 0;
}

/* Takes a closed connection's socket out of the epoll set (else it would show as hung up
 * for ever); the connection itself stays until watch_free(). */
void watch_unwatch(struct dmabroker *ctx, struct watch *w)
{
	if (w->fd < 0)
		return;
	(void)epoll_ctl(ctx->epoll_fd, EPOLL_CTL_DEL, w->fd, NULL);
	close(w->fd);
	w->fd = -1;
}

/* Forgets w; the connection is closed and freed (its pending calls were failed already). */
void watch_free(struct dmabroker *ctx, struct watch *w)
{
	if (!w->bus)
		return;
	watch_unwatch(ctx, w);
	sd_bus_flush_close_unref(w->bus);
	*w = (struct watch){.fd = -1};
}

/*
 * The peer died (or a new one replaces it): stop sending on it, but keep it until
 * dispatch has drained it, so that every call still pending there gets its answer (sd-bus
 * fails them one by one while closing) and nothing is freed under a callback.
 */
void retire_peer(struct dmabroker *ctx)
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

/* --- registration: its calls and their answers --- */

int append_str_entry(sd_bus_message *m, const char *key, const char *v)
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
bool refused_compact(const sd_bus_error *e)
{
	return e && sd_bus_error_has_name(e, "org.dmabroker.Error.InvalidArgument") && e->message &&
	       strstr(e->message, "'compact_layouts'");
}

int read_register(struct dmabroker *ctx, sd_bus_message *reply)
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

int build_backends(struct dmabroker *ctx, sd_bus_message **ret)
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
void read_backends(struct dmabroker *ctx, sd_bus_message *reply)
{
	const char *name;

	ctx->default_backend[0] = '\0';
	if (sd_bus_message_enter_container(reply, 'v', "as") <= 0 ||
	    sd_bus_message_enter_container(reply, 'a', "s") <= 0 ||
	    sd_bus_message_read_basic(reply, 's', &name) <= 0)
		return;
	snprintf(ctx->default_backend, sizeof(ctx->default_backend), "%s", name);
}

int build_limits(struct dmabroker *ctx, sd_bus_message **ret)
{
	return sd_bus_message_new_method_call(ctx->bus.bus, ret, DB_BUS_NAME, DB_OBJECT_PATH,
					      "org.freedesktop.DBus.Properties", "Get") < 0 ||
			       sd_bus_message_append(*ret, "ss", DB_IFACE_BROKER, "Limits") < 0
		       ? -ENOMEM
		       : 0;
}

/* The peer's window, if the daemon advertises one (else the conservative default stays). */
void read_limits(struct dmabroker *ctx, sd_bus_message *reply)
{
	const char *key;
	uint64_t v;

	if (sd_bus_message_enter_container(reply, 'v', "a{st}") <= 0 ||
	    sd_bus_message_enter_container(reply, 'a', "{st}") <= 0)
		return;
	while (sd_bus_message_read(reply, "{st}", &key, &v) > 0) {
		if (strcmp(key, "PeerWindowCalls") == 0 && v > 0)
			ctx->peer_window_calls = v > 65536 ? 65536 : (unsigned)v;
		else if (strcmp(key, "PeerWindowBytes") == 0 && v > 0)
			ctx->peer_window_bytes = v;
		else if (strcmp(key, "MaxBufferSize") == 0)
			ctx->max_buffer_size = v;
		else if (strcmp(key, "MaxBytesPerClient") == 0)
			ctx->max_bytes_per_client = v;
	}
}

/* Sets up the peer connection from OpenPeer's answer. */
int read_open_peer(struct dmabroker *ctx, sd_bus_message *reply)
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
		r = sd_bus_set_method_call_timeout(peer, UINT64_MAX);
	if (r >= 0) {
		/* Said before the first handshake byte leaves (tests stop the daemon here). */
		log_msg(DMABROKER_LOG_DEBUG, "dmabroker: peer handshake starts");
		r = sd_bus_start(peer);
	}
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
	/* Its handshake goes on in dispatch; calls wait for it a call's timeout at most. */
	ctx->peer_started = now_usec();
	return r;
}

/*
 * A blocking registration finishes the peer's handshake itself (a call's timeout at most), so
 * that asynchronous calls made right after it go to the peer at once.
 */
static void peer_wait_ready(struct dmabroker *ctx)
{
	uint64_t end = now_usec() + ctx->call_timeout, now;
	sd_bus *peer = ctx->peer.bus;
	int r;

	while (bus_open(peer) && sd_bus_is_ready(peer) <= 0 && (now = now_usec()) < end) {
		r = sd_bus_process(peer, NULL);
		if (r < 0)
			break;
		if (r == 0)
			(void)sd_bus_wait(peer, end - now);
	}
}

/* The daemon came back without its store and we registered again (or could not). */
void registered_again(struct dmabroker *ctx, int r)
{
	if (r < 0)
		log_msg(DMABROKER_LOG_INFO, "dmabroker: could not register again: %s",
			strerror(-r));
	ctx->registering = false;
	queue_pump(ctx);
}

/* What dmabroker_register() was given: a daemon restarted without its store gets it again. */
static int keep_registration(struct dmabroker *ctx, const char *role, bool dynamic,
			     const char *name, const char *const *devices)
{
	size_t n = 0;

	ctx->role = strdup(role);
	ctx->name = name ? strdup(name) : NULL;
	ctx->dynamic = dynamic;
	while (devices && devices[n])
		n++;
	if (devices) {
		ctx->devices = calloc(n + 1, sizeof(char *));
		for (size_t i = 0; ctx->devices && i < n; i++)
			if (!(ctx->devices[i] = strdup(devices[i])))
				return -ENOMEM;
	}
	return ctx->role && (!name || ctx->name) && (!devices || ctx->devices) ? 0 : -ENOMEM;
}

void forget_registration(struct dmabroker *ctx)
{
	free(ctx->role);
	free(ctx->name);
	for (size_t i = 0; ctx->devices && ctx->devices[i]; i++)
		free(ctx->devices[i]);
	free(ctx->devices);
	ctx->role = ctx->name = NULL;
	ctx->devices = NULL;
}

/* Registers again with what the caller gave first: internal, the queue waits for it. */
int register_again(struct dmabroker *ctx)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct dmabroker_call *call;
	int r;

	if (!ctx->role)
		return -EINVAL;
	free(ctx->client_path);
	ctx->client_path = NULL;
	r = build_register(ctx, ctx->role, ctx->dynamic, ctx->name,
			   (const char *const *)ctx->devices, true, &m);
	if (r < 0)
		return r;
	/* The queue waits for the new registration: it goes first. */
	ctx->registering = true;
	r = call_start_internal(ctx, CALL_REGISTER, m, true, &call);
	if (r < 0)
		ctx->registering = false;
	return r;
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

/*
 * Opens the bus as sd_bus_open_system()/_user() would, but with no sd-bus timeout on its
 * calls (Hello, AddMatch): sd-bus fails a call whose answer sits unread in the socket once
 * its timeout passed, and a failed AddMatch closes the connection, so an application that
 * dispatched late would lose the bus. The library times its own calls.
 */
static int open_bus(const char *address, uint32_t flags, sd_bus **ret)
{
	_cleanup_(freep) char *user = NULL;
	sd_bus *bus = NULL;
	const char *e;
	int r;

	if (!address && (flags & DMABROKER_CONNECT_USER)) {
		address = secure_getenv("DBUS_SESSION_BUS_ADDRESS");
		e = secure_getenv("XDG_RUNTIME_DIR");
		if (!address && !e)
			return -ENOMEDIUM;
		if (!address && asprintf(&user, "unix:path=%s/bus", e) < 0)
			return -ENOMEM;
		if (!address)
			address = user;
	} else if (!address) {
		address = secure_getenv("DBUS_SYSTEM_BUS_ADDRESS");
		if (!address)
			address = "unix:path=/run/dbus/system_bus_socket";
	}
	r = sd_bus_new(&bus);
	if (r < 0)
		return r;
	r = sd_bus_set_address(bus, address);
	if (r >= 0)
		r = sd_bus_set_bus_client(bus, 1);
	if (r >= 0)
		r = sd_bus_negotiate_fds(bus, 1);
	if (r >= 0)
		r = sd_bus_set_method_call_timeout(bus, UINT64_MAX);
	if (r >= 0)
		r = sd_bus_start(bus);
	if (r < 0) {
		sd_bus_unref(bus);
		return r;
	}
	*ret = bus;
	return 0;
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
	ctx->peer_window_calls = PEER_WINDOW_CALLS;
	ctx->peer_window_bytes = PEER_WINDOW_BYTES;
	ctx->bus_window_calls = BUS_WINDOW_CALLS;
	ctx->call_timeout = DEFAULT_CALL_TIMEOUT;
	ctx->next_deadline = UINT64_MAX;
	if (!address)
		address = secure_getenv(DB_ENV_BUS_ADDRESS);
	r = open_bus(address, flags, &bus);
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
	return api_return(ctx, 0);
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
	streams_free_all(ctx);
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
	forget_registration(ctx);
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

/* --- registering: blocking, then asynchronous --- */

int dmabroker_register(struct dmabroker *ctx, const char *role, bool dynamic, const char *name,
		       const char *const *devices)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	int r;

	if (!ctx || !role)
		return -EINVAL;
	if (ctx->client_path || ctx->role)
		return set_error_msg(ctx, -EALREADY, "the context is registered already");
	r = keep_registration(ctx, role, dynamic, name, devices);
	if (r < 0) {
		forget_registration(ctx);
		return r;
	}
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
	if (r < 0) {
		forget_registration(ctx);
		return api_return(ctx, r);
	}
	m = sd_bus_message_unref(m);
	reply = sd_bus_message_unref(reply);
	if (build_backends(ctx, &m) >= 0 && call_sync(ctx, CALL_BACKENDS, m, &reply) >= 0)
		read_backends(ctx, reply);
	m = sd_bus_message_unref(m);
	reply = sd_bus_message_unref(reply);
	if (build_limits(ctx, &m) >= 0 && call_sync(ctx, CALL_LIMITS, m, &reply) >= 0)
		read_limits(ctx, reply);
	if (!(ctx->flags & DMABROKER_CONNECT_NO_PEER)) {
		m = sd_bus_message_unref(m);
		reply = sd_bus_message_unref(reply);
		r = new_call(ctx, CALL_OPEN_PEER, &m);
		if (r >= 0)
			r = call_sync(ctx, CALL_OPEN_PEER, m, &reply);
		if (r >= 0)
			r = read_open_peer(ctx, reply);
		if (r >= 0)
			peer_wait_ready(ctx);
		if (r < 0)
			/* The bus still works; only the fast path is missing. */
			log_msg(DMABROKER_LOG_INFO,
				"dmabroker: no peer connection, staying on the bus: %s",
				strerror(-r));
	}
	return api_return(ctx, 0);
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
	if (ctx->client_path || ctx->role)
		return set_error_msg(ctx, -EALREADY, "the context is registered already");
	r = keep_registration(ctx, role, dynamic, name, devices);
	if (r >= 0)
		r = build_register(ctx, role, dynamic, name, devices, true, &m);
	if (r >= 0)
		r = build_register(ctx, role, dynamic, name, devices, false, &plain);
	if (r >= 0)
		r = call_start(ctx, CALL_REGISTER, m, (void *)cb, userdata, ret_call, &call);
	if (r >= 0)
		call->plain = take_ptr(plain);
	else
		forget_registration(ctx);
	return api_return(ctx, r);
}
