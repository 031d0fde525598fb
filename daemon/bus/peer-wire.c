// SPDX-License-Identifier: MIT
/*
 * A peer connection's socket, read and written by the daemon (see peer-wire.h for the
 * bounds). Two sockets per peer: the client's (client_fd) and a pair of the daemon's own
 * whose other end sd-bus uses (bus_fd here). Messages are read whole, one at a time, from
 * either side, so descriptors always travel with the message they belong to.
 */
#include "peer-wire.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>
#include <systemd/sd-id128.h>

#include "budget.h"
#include "dbus-frame.h"
#include "macros.h"

/* A client's SASL lines: sd-bus sends about 70 bytes in all. */
#define AUTH_LINE_MAX 512
#define AUTH_BYTES_MAX 4096
/* The socket pair to sd-bus is the daemon's own: room for the largest message twice. */
#define BUS_SOCKET_BUFFER (4 * 1024 * 1024)

/* One message on its way in either direction: bytes, and the descriptors it carries. */
struct frame {
	uint8_t fixed[DB_FRAME_FIXED_SIZE];
	struct db_frame_info info;
	uint8_t *data; /* info.size bytes once the fixed part is known, owned */
	size_t got; /* bytes read (or written) so far */
	int fds[DB_PEER_WIRE_MAX_FDS]; /* owned */
	unsigned n_fds;
	bool fds_sent;
};

/* A message or raw handshake text waiting for the client to read it. */
struct out_item {
	struct frame f; /* f.data holds f.info.size bytes; f.got is what was written */
	bool is_reply;
};

struct db_peer_wire {
	unsigned ref;
	bool dead; /* closed() was called or the owner freed it: do nothing more */
	sd_event *event;
	int client_fd; /* owned */
	int bus_fd; /* owned: our end of the pair sd-bus reads and writes */
	struct db_peer_wire_limits limits;
	struct db_peer_wire_hooks hooks;
	void *userdata;

	sd_event_source *client_io; /* owned */
	sd_event_source *bus_io; /* owned */
	sd_event_source *auth_timer; /* owned until the client said BEGIN */
	sd_event_source *message_timer; /* owned: armed while a client message is partial */
	sd_event_source *stall_timer; /* owned: armed while the client reads nothing */

	/* The client's side of the handshake. */
	bool client_running; /* BEGIN seen */
	bool client_authed;
	bool client_fds; /* NEGOTIATE_UNIX_FD agreed */
	bool got_nul;
	size_t auth_bytes;
	/* sd-bus's side: its two answer lines to our handshake are still to be read. */
	unsigned bus_auth_lines;

	struct frame in; /* the client's message being read */
	struct frame to_bus; /* a whole client message sd-bus has not taken yet */
	bool to_bus_pending;
	struct frame from_bus; /* sd-bus's message being read */

	GQueue out; /* struct out_item *, owned: to the client, in order */
	struct db_budget window; /* bytes in out */
	uint64_t calls_in_flight;
};

static void frame_clear(struct frame *f)
{
	for (unsigned i = 0; i < f->n_fds; i++)
		if (f->fds[i] >= 0)
			close(f->fds[i]);
	g_free(f->data);
	memset(f, 0, sizeof(*f));
}

/* Big answers are where glibc keeps freed heap: give it back once one is gone. */
#define TRIM_AFTER (1024 * 1024)

static void out_item_free(struct out_item *it)
{
	bool big = it->f.info.size >= TRIM_AFTER;

	frame_clear(&it->f);
	g_free(it);
	if (big)
		malloc_trim(0);
}

/* Charges (sign 1) or gives back (sign -1) an item's bytes and descriptors to the budgets. */
static void account(struct db_peer_wire *w, uint64_t bytes, unsigned fds, int sign)
{
	if (sign > 0) {
		db_budget_charge(&w->window, bytes);
		if (w->limits.uid_bytes)
			db_budget_charge(w->limits.uid_bytes, bytes);
		if (w->limits.uid_fds)
			db_budget_charge(w->limits.uid_fds, fds);
		return;
	}
	db_budget_release(&w->window, bytes);
	if (w->limits.uid_bytes)
		db_budget_release(w->limits.uid_bytes, bytes);
	if (w->limits.uid_fds)
		db_budget_release(w->limits.uid_fds, fds);
}

static void wire_release(struct db_peer_wire *w)
{
	struct out_item *it;

	if (--w->ref > 0)
		return;
	sd_event_source_disable_unref(w->client_io);
	sd_event_source_disable_unref(w->bus_io);
	sd_event_source_disable_unref(w->auth_timer);
	sd_event_source_disable_unref(w->message_timer);
	sd_event_source_disable_unref(w->stall_timer);
	while ((it = g_queue_pop_head(&w->out))) {
		account(w, it->f.info.size - it->f.got, it->f.fds_sent ? 0 : it->f.n_fds, -1);
		out_item_free(it);
	}
	frame_clear(&w->in);
	frame_clear(&w->to_bus);
	frame_clear(&w->from_bus);
	if (w->client_fd >= 0)
		close(w->client_fd);
	if (w->bus_fd >= 0)
		close(w->bus_fd);
	g_free(w);
}

/* Gives back to the uid's shared budgets what the queue holds, at once: the owner may free
 * them before the wire's last reference goes. */
static void detach_shared(struct db_peer_wire *w)
{
	for (GList *l = w->out.head; l; l = l->next) {
		struct out_item *it = l->data;

		if (w->limits.uid_bytes)
			db_budget_release(w->limits.uid_bytes, it->f.info.size - it->f.got);
		if (w->limits.uid_fds && !it->f.fds_sent)
			db_budget_release(w->limits.uid_fds, it->f.n_fds);
	}
	w->limits.uid_bytes = NULL;
	w->limits.uid_fds = NULL;
}

void db_peer_wire_free(struct db_peer_wire *w)
{
	if (!w || w->dead)
		return;
	w->dead = true;
	detach_shared(w);
	wire_release(w);
}

static void wire_close(struct db_peer_wire *w, const char *reason)
{
	if (w->dead)
		return;
	w->dead = true;
	/* Stop every source now: the owner frees its side in closed(). */
	(void)sd_event_source_set_enabled(w->client_io, SD_EVENT_OFF);
	(void)sd_event_source_set_enabled(w->bus_io, SD_EVENT_OFF);
	detach_shared(w);
	w->hooks.closed(w->userdata, reason);
	wire_release(w);
}

uint64_t db_peer_wire_queued_bytes(const struct db_peer_wire *w)
{
	return w->window.used;
}

uint64_t db_peer_wire_calls_in_flight(const struct db_peer_wire *w)
{
	return w->calls_in_flight;
}

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Arms (or leaves armed) a one-shot timer usec from now; keep: don't move an armed one. */
static int timer_arm(struct db_peer_wire *w, sd_event_source *s, uint64_t usec, bool keep)
{
	int enabled = SD_EVENT_OFF;

	if (keep && sd_event_source_get_enabled(s, &enabled) >= 0 && enabled != SD_EVENT_OFF)
		return 0;
	(void)sd_event_source_set_time(s, now_usec() + usec);
	return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

static void timer_disarm(sd_event_source *s)
{
	(void)sd_event_source_set_enabled(s, SD_EVENT_OFF);
}

/* Keeps the descriptors of a received SCM_RIGHTS in f; -ETOOMANYREFS past the cap. */
static int take_fds(struct frame *f, struct msghdr *mh)
{
	int r = 0;

	if (mh->msg_flags & MSG_CTRUNC)
		r = -ETOOMANYREFS;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		size_t n;
		int *fds;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		fds = (int *)(void *)CMSG_DATA(c);
		for (size_t i = 0; i < n; i++) {
			if (f->n_fds < DB_PEER_WIRE_MAX_FDS)
				f->fds[f->n_fds++] = fds[i];
			else {
				close(fds[i]);
				r = -ETOOMANYREFS;
			}
		}
	}
	return r;
}

/*
 * Reads at most the rest of one message from fd into f: 1 when it is whole, 0 when the
 * socket has no more now, negative errno on a broken or hostile stream (-ECONNRESET at the
 * end of the stream, -EMSGSIZE past max_size, -EBADMSG for a fixed part no peer sends).
 */
static int frame_read(int fd, struct frame *f, uint64_t max_size)
{
	union {
		struct cmsghdr align;
		/* Room for more than the cap, so that an excess is seen, not truncated. */
		char buf[CMSG_SPACE(sizeof(int) * 253)];
	} control;

	for (;;) {
		struct iovec iov;
		struct msghdr mh = {
			.msg_iov = &iov,
			.msg_iovlen = 1,
			.msg_control = &control,
			.msg_controllen = sizeof(control),
		};
		ssize_t n;
		int r;

		if (f->got < DB_FRAME_FIXED_SIZE) {
			iov.iov_base = f->fixed + f->got;
			iov.iov_len = DB_FRAME_FIXED_SIZE - f->got;
		} else {
			iov.iov_base = f->data + f->got;
			iov.iov_len = f->info.size - f->got;
		}
		n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -errno;
		r = take_fds(f, &mh);
		if (r < 0)
			return r;
		if (n == 0)
			return -ECONNRESET;
		f->got += (size_t)n;
		if (f->got == DB_FRAME_FIXED_SIZE && !f->data) {
			r = db_frame_parse(f->fixed, &f->info);
			if (r < 0)
				return r;
			if (f->info.size > max_size)
				return -EMSGSIZE;
			f->data = g_malloc(f->info.size);
			memcpy(f->data, f->fixed, DB_FRAME_FIXED_SIZE);
		}
		if (f->data && f->got == f->info.size)
			return 1;
	}
}

/*
 * Writes what is left of f to fd, its descriptors with the first byte: 1 when all is
 * written, 0 when the socket is full, negative errno when it is gone.
 */
static int frame_write(int fd, struct frame *f)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * DB_PEER_WIRE_MAX_FDS)];
	} control;

	while (f->got < f->info.size) {
		struct iovec iov = {f->data + f->got, f->info.size - f->got};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
		ssize_t n;

		if (!f->fds_sent && f->n_fds > 0) {
			struct cmsghdr *c;

			memset(&control, 0, sizeof(control));
			mh.msg_control = &control;
			mh.msg_controllen = CMSG_SPACE(sizeof(int) * f->n_fds);
			c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int) * f->n_fds);
			memcpy(CMSG_DATA(c), f->fds, sizeof(int) * f->n_fds);
		}
		n = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -errno;
		if (!f->fds_sent) {
			/* The kernel holds its own references now. */
			f->fds_sent = true;
			for (unsigned i = 0; i < f->n_fds; i++) {
				close(f->fds[i]);
				f->fds[i] = -1;
			}
		}
		f->got += (size_t)n;
	}
	return 1;
}

static void queue_out(struct db_peer_wire *w, struct out_item *it)
{
	account(w, it->f.info.size, it->f.n_fds, 1);
	g_queue_push_tail(&w->out, it);
}

static void queue_text(struct db_peer_wire *w, const char *text)
{
	struct out_item *it = g_new0(struct out_item, 1);

	it->f.info.size = strlen(text);
	it->f.data = (uint8_t *)g_strdup(text);
	queue_out(w, it);
}

/* Writes to the client what it will take. Negative errno when the client is gone. */
static int flush_client(struct db_peer_wire *w)
{
	struct out_item *it;
	bool progress = false;
	int r = 1;

	while ((it = g_queue_peek_head(&w->out))) {
		size_t before = it->f.got;
		bool had_fds = !it->f.fds_sent && it->f.n_fds > 0;

		r = frame_write(w->client_fd, &it->f);
		if (r < 0)
			return r;
		progress |= it->f.got > before;
		account(w, it->f.got - before, had_fds && it->f.fds_sent ? it->f.n_fds : 0, -1);
		if (r == 0)
			break;
		/* A call is in flight until the client has its answer, descriptors included. */
		if (it->is_reply && w->calls_in_flight > 0)
			w->calls_in_flight--;
		g_queue_pop_head(&w->out);
		out_item_free(it);
	}
	if (progress && w->hooks.uid_room)
		w->hooks.uid_room(w->userdata);
	if (g_queue_is_empty(&w->out) && w->calls_in_flight < w->limits.window_calls)
		timer_disarm(w->stall_timer);
	else if (progress)
		timer_arm(w, w->stall_timer, w->limits.stall_timeout_us, false);
	else
		timer_arm(w, w->stall_timer, w->limits.stall_timeout_us, true);
	return 0;
}

/* Reads sd-bus's answers to the wire's own handshake: "OK <guid>" and "AGREE_UNIX_FD". */
static int read_bus_auth_line(struct db_peer_wire *w)
{
	char line[256];
	ssize_t n;
	char *end;

	n = recv(w->bus_fd, line, sizeof(line) - 1, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0)
		return errno == EAGAIN ? 0 : -errno;
	if (n == 0)
		return -ECONNRESET;
	line[n] = '\0';
	end = strstr(line, "\r\n");
	if (!end)
		return n == (ssize_t)sizeof(line) - 1 ? -EBADMSG : 0;
	*end = '\0';
	if (w->bus_auth_lines == 2 ? strncmp(line, "OK ", 3) != 0
				   : strcmp(line, "AGREE_UNIX_FD") != 0)
		return -EBADMSG;
	(void)!recv(w->bus_fd, line, (size_t)(end - line) + 2, MSG_DONTWAIT);
	w->bus_auth_lines--;
	return 1;
}

/* Moves everything sd-bus wrote into the client's queue. sd-bus's messages are the daemon's
 * own: no size cap but sd-bus's. */
static int drain_bus_once(struct db_peer_wire *w)
{
	int r;

	while (w->bus_auth_lines > 0) {
		r = read_bus_auth_line(w);
		if (r <= 0)
			return r;
	}
	for (;;) {
		struct out_item *it;

		r = frame_read(w->bus_fd, &w->from_bus, UINT32_MAX);
		if (r <= 0)
			return r;
		it = g_new0(struct out_item, 1);
		it->f = w->from_bus;
		it->f.got = 0;
		it->is_reply = db_frame_is_reply(&it->f.info);
		memset(&w->from_bus, 0, sizeof(w->from_bus));
		queue_out(w, it);
		/* Signals come whether the client reads or not (its own bus calls, others'
		 * moves): one that does not read at all is closed, not queued for. */
		if (it->f.info.type == DB_FRAME_SIGNAL &&
		    w->window.used > 2 * w->limits.window_bytes)
			return -ENOBUFS;
	}
}

/* Drains sd-bus, and lets it write again what its socket had no room for, until it is
 * done: a reply larger than the socket pair's buffer comes across in several rounds. */
static int drain_bus(struct db_peer_wire *w)
{
	int r;

	for (;;) {
		r = drain_bus_once(w);
		if (r < 0 || w->dead)
			return r;
		r = w->hooks.pump(w->userdata);
		if (r <= 0 || w->dead)
			return r;
	}
}

/* Hands the whole client message to sd-bus: 1 when it took it, 0 when its socket is full. */
static int feed_bus(struct db_peer_wire *w)
{
	int r = frame_write(w->bus_fd, &w->to_bus);

	if (r <= 0)
		return r;
	frame_clear(&w->to_bus);
	w->to_bus_pending = false;
	return 1;
}

/* One SASL line from the client (without its CRLF). */
static int client_auth_line(struct db_peer_wire *w, const char *line)
{
	if (strncmp(line, "AUTH", 4) == 0 && (line[4] == ' ' || !line[4])) {
		const char *mech = line[4] ? line + 5 : "";

		/* The bus authenticated the client when it handed the socket out. */
		if (strncmp(mech, "ANONYMOUS", 9) == 0 && (mech[9] == ' ' || !mech[9])) {
			sd_id128_t id;
			char text[64];

			if (sd_id128_randomize(&id) < 0)
				return -EIO;
			snprintf(text, sizeof(text), "OK " SD_ID128_FORMAT_STR "\r\n",
				 SD_ID128_FORMAT_VAL(id));
			w->client_authed = true;
			queue_text(w, text);
		} else {
			queue_text(w, "REJECTED ANONYMOUS\r\n");
		}
	} else if (strcmp(line, "NEGOTIATE_UNIX_FD") == 0) {
		w->client_fds = w->client_authed;
		queue_text(w, w->client_authed ? "AGREE_UNIX_FD\r\n" : "ERROR\r\n");
	} else if (strcmp(line, "BEGIN") == 0) {
		if (!w->client_authed)
			return -EPERM;
		w->client_running = true;
		w->auth_timer = sd_event_source_disable_unref(w->auth_timer);
	} else if (strncmp(line, "CANCEL", 6) == 0 || strncmp(line, "DATA", 4) == 0 ||
		   strncmp(line, "ERROR", 5) == 0) {
		w->client_authed = false;
		queue_text(w, "REJECTED ANONYMOUS\r\n");
	} else {
		queue_text(w, "ERROR\r\n");
	}
	return 0;
}

/* Consumes exactly len bytes of handshake; descriptors have no place in it. */
static int consume_auth_line(int fd, size_t len)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 16)];
	} control;
	char sink[AUTH_LINE_MAX];
	struct iovec iov = {sink, len};
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = &control,
		.msg_controllen = sizeof(control),
	};
	struct frame scratch = {0};
	int r;

	if (recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) != (ssize_t)len)
		return -EIO;
	r = take_fds(&scratch, &mh);
	if (scratch.n_fds > 0 || r < 0) {
		frame_clear(&scratch);
		return -EBADMSG;
	}
	return 0;
}

/*
 * Reads the client's handshake one line at a time, never past BEGIN's line: what follows it
 * is the first message, which the framed reader must see from its first byte.
 */
static int read_client_auth(struct db_peer_wire *w)
{
	char buf[AUTH_LINE_MAX + 1];
	ssize_t n;
	char *end;
	size_t len;
	int r;

	if (!w->got_nul) {
		n = recv(w->client_fd, buf, 1, MSG_DONTWAIT);
		if (n < 0)
			return errno == EAGAIN ? 0 : -errno;
		if (n == 0)
			return -ECONNRESET;
		if (buf[0] != '\0')
			return -EBADMSG;
		w->got_nul = true;
		w->auth_bytes++;
		return 1;
	}
	n = recv(w->client_fd, buf, AUTH_LINE_MAX, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0)
		return errno == EAGAIN ? 0 : -errno;
	if (n == 0)
		return -ECONNRESET;
	buf[n] = '\0';
	end = memmem(buf, (size_t)n, "\r\n", 2);
	if (!end)
		return n == AUTH_LINE_MAX ? -EMSGSIZE : 0;
	len = (size_t)(end - buf) + 2;
	w->auth_bytes += len;
	if (w->auth_bytes > AUTH_BYTES_MAX)
		return -EMSGSIZE;
	*end = '\0';
	if (strlen(buf) != len - 2)
		return -EBADMSG; /* a NUL inside a line */
	r = consume_auth_line(w->client_fd, len);
	if (r < 0)
		return r;
	r = client_auth_line(w, buf);
	return r < 0 ? r : 1;
}

/* May the wire read another message from the client now (the window)? */
static bool window_open(const struct db_peer_wire *w)
{
	return !w->to_bus_pending && !db_budget_full(&w->window) &&
	       w->calls_in_flight < w->limits.window_calls &&
	       !(w->limits.uid_bytes && db_budget_full(w->limits.uid_bytes)) &&
	       !(w->limits.uid_fds && db_budget_full(w->limits.uid_fds));
}

/* Reads at most one client message and hands it to sd-bus. 1 when one was delivered. */
static int read_client(struct db_peer_wire *w)
{
	int r;

	if (!w->client_running) {
		r = read_client_auth(w);
		return r < 0 ? r : 0;
	}
	r = frame_read(w->client_fd, &w->in, w->limits.max_message_size);
	if (r <= 0) {
		if (r == 0 && w->in.got > 0)
			timer_arm(w, w->message_timer, w->limits.message_timeout_us, true);
		return r;
	}
	timer_disarm(w->message_timer);
	/* Descriptors only as agreed and as declared: sd-bus would keep any others. */
	if (w->in.n_fds > 0 && !w->client_fds)
		return -EBADMSG;
	{
		uint32_t declared;

		r = db_frame_unix_fds(w->in.data, &w->in.info, &declared);
		if (r < 0)
			return r;
		if (declared != w->in.n_fds)
			return -ETOOMANYREFS;
	}
	if (db_frame_wants_reply(&w->in.info))
		w->calls_in_flight++;
	w->to_bus = w->in;
	w->to_bus.got = 0;
	w->to_bus_pending = true;
	memset(&w->in, 0, sizeof(w->in));
	r = feed_bus(w);
	if (r < 0)
		return r;
	return 1;
}

static const char *reason_for(int r)
{
	switch (-r) {
	case ECONNRESET:
	case EPIPE:
		return NULL; /* it hung up: nothing to log */
	case EMSGSIZE:
		return "sent a message larger than MaxMessageSize";
	case ETOOMANYREFS:
		return "sent descriptors its message does not declare, or more than 16";
	case ENOBUFS:
		return "does not read: its queue holds twice its window";
	case EBADMSG:
		return "sent something that is not a D-Bus message";
	case EPERM:
		return "began without authenticating";
	default:
		return "broke its connection";
	}
}

/* Sets what the loop watches: the client's input only while the window is open. */
static void wire_arm(struct db_peer_wire *w)
{
	uint32_t io = 0;

	if (window_open(w))
		io |= EPOLLIN;
	if (!g_queue_is_empty(&w->out))
		io |= EPOLLOUT;
	(void)sd_event_source_set_io_events(w->client_io, io);
	/* A window full of calls that get no answer (malformed ones sd-bus drops, a client
	 * waiting on nothing) is a stall too. */
	if (g_queue_is_empty(&w->out) && w->calls_in_flight >= w->limits.window_calls)
		timer_arm(w, w->stall_timer, w->limits.stall_timeout_us, true);
	(void)sd_event_source_set_io_events(w->bus_io,
					    w->to_bus_pending ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

void db_peer_wire_rearm(struct db_peer_wire *w)
{
	if (w && !w->dead)
		wire_arm(w);
}

/*
 * Everything the wire does, from any wake-up: sd-bus's output to the client, then at most one
 * client message to sd-bus (other peers get their turn: the loop comes back while input
 * waits), which sd-bus then processes whole, then its answers out again.
 */
static void wire_run(struct db_peer_wire *w, bool bus_readable)
{
	bool delivered = false;
	int r = 0;

	w->ref++;
	/* sd-bus writes only while it processes, or when a deferred answer or signal is sent
	 * (then its socket wakes us): no read to find nothing when the client woke us. */
	if (bus_readable)
		r = drain_bus(w);
	if (r >= 0)
		r = flush_client(w);
	if (r >= 0 && w->to_bus_pending) {
		r = feed_bus(w);
		delivered = r > 0;
	} else if (r >= 0 && window_open(w)) {
		r = read_client(w);
		delivered = r > 0 && !w->to_bus_pending;
	}
	if (r >= 0 && delivered && !w->dead) {
		r = w->hooks.deliver(w->userdata);
		if (r >= 0 && !w->dead)
			r = drain_bus(w);
		if (r >= 0 && !w->dead)
			r = flush_client(w);
	}
	if (r < 0)
		wire_close(w, reason_for(r));
	else if (!w->dead)
		wire_arm(w);
	wire_release(w);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct db_peer_wire *w = userdata;

	(void)s;
	(void)fd;
	if (s == w->client_io && (revents & (EPOLLHUP | EPOLLERR)) && !(revents & EPOLLIN)) {
		wire_close(w, NULL);
		return 0;
	}
	wire_run(w, s == w->bus_io);
	return 0;
}

static int on_auth_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	(void)s;
	(void)usec;
	wire_close(userdata, "did not authenticate in time");
	return 0;
}

static int on_message_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	(void)s;
	(void)usec;
	wire_close(userdata, "left a message partial past PeerMessageTimeoutSec");
	return 0;
}

static int on_stall_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	(void)s;
	(void)usec;
	wire_close(userdata, "read nothing for PeerStallTimeoutSec while answers waited (or its "
			     "window stayed full of calls that get no answer)");
	return 0;
}

static int add_timer(struct db_peer_wire *w, sd_event_source **ret, sd_event_time_handler_t handler)
{
	int r = sd_event_add_time(w->event, ret, CLOCK_MONOTONIC, UINT64_MAX, 0, handler, w);

	if (r >= 0)
		r = sd_event_source_set_enabled(*ret, SD_EVENT_OFF);
	return r;
}

int db_peer_wire_new(sd_event *event, int client_fd, const struct db_peer_wire_limits *limits,
		     const struct db_peer_wire_hooks *hooks, void *userdata, int *ret_bus_fd,
		     struct db_peer_wire **ret)
{
	/* With a trace token ("dmabroker" in hex): without one sd-bus asks for DATA first. */
	static const char handshake[] =
		"\0AUTH ANONYMOUS 646d6162726f6b6572\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n";
	struct db_peer_wire *w;
	int sv[2], r;

	w = g_new0(struct db_peer_wire, 1);
	w->ref = 1;
	w->event = event;
	w->client_fd = client_fd;
	w->bus_fd = -1;
	w->limits = *limits;
	w->hooks = *hooks;
	w->userdata = userdata;
	w->bus_auth_lines = 2;
	g_queue_init(&w->out);
	db_budget_init(&w->window, limits->window_bytes);

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0) {
		r = -errno;
		goto fail;
	}
	w->bus_fd = sv[0];
	(void)setsockopt(w->bus_fd, SOL_SOCKET, SO_SNDBUF, &(int){BUS_SOCKET_BUFFER}, sizeof(int));
	/* The handshake to sd-bus fits any socket buffer: it is read at the first delivery. */
	if (send(w->bus_fd, handshake, sizeof(handshake) - 1, MSG_DONTWAIT | MSG_NOSIGNAL) !=
	    (ssize_t)sizeof(handshake) - 1) {
		r = -errno;
		close(sv[1]);
		goto fail;
	}
	r = sd_event_add_io(event, &w->client_io, client_fd, EPOLLIN, on_io, w);
	if (r >= 0)
		r = sd_event_add_io(event, &w->bus_io, w->bus_fd, EPOLLIN, on_io, w);
	if (r >= 0)
		r = add_timer(w, &w->message_timer, on_message_timeout);
	if (r >= 0)
		r = add_timer(w, &w->stall_timer, on_stall_timeout);
	if (r >= 0)
		r = sd_event_add_time_relative(event, &w->auth_timer, CLOCK_MONOTONIC,
					       limits->auth_timeout_us, 0, on_auth_timeout, w);
	if (r < 0) {
		close(sv[1]);
		goto fail;
	}
	*ret_bus_fd = sv[1];
	*ret = w;
	return 0;
fail:
	w->dead = true;
	wire_release(w);
	return r;
}
