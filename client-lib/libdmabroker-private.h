/* SPDX-License-Identifier: MIT */
/*
 * libdmabroker's private header: the objects every part of the library shares, and the
 * functions each part offers the others. The parts, one concern each (as sd-bus's sources):
 *   connection.c  connecting, registering, the peer connection, logging and errors
 *   loop.c        the loop integration: one epoll fd, its timer and kick, dispatch, sd-event
 *   call.c        the calls: the queue and its windows, sending, the answers, timeouts,
 *                 judging failures
 *   buffer.c      buffer objects and the calls on them, their getters and CPU access
 *   memory.c      making a plain buffer's memory in this process (memfd, memory cgroup)
 *   signal.c      Moved, Revoked, the broker's name owner, and what follows a restart
 *   reconcile.c   the daemon's list of this client's buffers: releasing or adopting
 *   collection.c  buffer collections
 *   stream*.c     streams: their calls and objects (stream.c), the producer's side, the
 *                 consumer's, fences, the broker's signals, one end of a link (stream-link.c);
 *                 stream-private.h says which file does what
 */
#pragma once

#include "dmabroker.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
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

/*
 * Flow control (call.c). The peer's window is what the daemon's Limits property advertises
 * (PeerWindowCalls, PeerWindowBytes); a daemon that does not advertise one cuts a peer at 32
 * messages it could not write, so a conservative window is used then. On the bus,
 * dbus-daemon refuses more than max_replies_per_connection (128, the system bus's and the
 * built-in default) pending calls per connection, and drops a reply when more than
 * max_outgoing_unix_fds (64) fds wait in its queue toward us: a few calls are left for
 * blocking calls and sd-bus's own, and at most half the fds.
 */
#define PEER_WINDOW_CALLS 16
#define PEER_WINDOW_BYTES (256u * 1024)
#define BUS_WINDOW_CALLS 120
#define BUS_WINDOW_FDS 32
#define DEFAULT_CALL_TIMEOUT (25ull * 1000000)
/* WaitCollection is answered when the participants are done: at the latest at the daemon's
 * CollectionDeadlineSec (at most an hour). */
#define COLLECTION_WAIT_TIMEOUT (3700ull * 1000000)
/* Resends of a repeatable call whose connection died under it, before it fails. */
#define MAX_RESENDS 4

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
	CALL_LIMITS, /* the Limits property: the peer's window (a step of registering) */
	CALL_OPEN_PEER,
	CALL_CHECK_CLIENT, /* Client1's properties after a restart: does the daemon know us? */
	CALL_LIST_BUFFERS, /* Client1.Buffers: reconciling, or dmabroker_adopt_buffers() */
	CALL_ADOPT_ONE, /* a step of dmabroker_adopt_buffers(): Reacquire one */
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
	/* Streams */
	CALL_STREAM_CREATE,
	CALL_STREAM_TOKEN,
	CALL_STREAM_JOIN,
	CALL_STREAM_JOIN_TOKEN,
	CALL_STREAM_LEAVE,
	CALL_STREAM_END,
	CALL_STREAM_END_LINK,
	CALL_STREAM_TAKE_LINK, /* count: the consumer whose link it takes */
};

/* What each call is on the wire. */
struct call_method {
	const char *member;
	/* Carrying it out twice leaves the daemon as once: safe to resend when unanswered. */
	bool repeatable;
};
extern const struct call_method methods[];

struct watch {
	sd_bus *bus; /* owned reference */
	int fd; /* owned duplicate of sd-bus's fd, registered in the epoll set (watch_add()) */
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
	struct dmabroker_stream *streams; /* live streams (they own their links) */
	bool streams_walking; /* dispatch walks the streams: one freed waits for its end */
	struct dmabroker_call *calls; /* every call not completed: queued, in flight, timed out */
	/*
	 * The call queue (call.c): calls not sent yet, oldest first. A call is sent when the
	 * connection it goes to is ready and its window has room; the windows are counted here.
	 */
	struct dmabroker_call *queue_head, *queue_tail;
	unsigned n_queued;
	unsigned peer_calls; /* in flight on the peer */
	uint64_t peer_bytes; /* what their answers may bring (reply_bytes()) */
	unsigned bus_calls; /* in flight on the bus */
	unsigned bus_fds; /* fds their answers bring */
	unsigned peer_window_calls; /* the daemon's PeerWindowCalls, or PEER_WINDOW_CALLS */
	uint64_t peer_window_bytes; /* the daemon's PeerWindowBytes, or PEER_WINDOW_BYTES */
	/* The daemon's MaxBufferSize and MaxBytesPerClient (0: not known): checked before this
	 * process makes a buffer's memory, so that a size the daemon refuses costs nothing. */
	uint64_t max_buffer_size;
	uint64_t max_bytes_per_client;
	unsigned bus_window_calls; /* BUS_WINDOW_CALLS, less after a LimitsExceeded */
	uint64_t call_timeout; /* per call, from when it is sent (dmabroker_set_call_timeout()) */
	uint64_t next_deadline; /* no call in flight times out before (may be early) */
	uint64_t peer_started; /* when the peer's handshake began (0: no handshake going on) */
	bool completions; /* calls wait for dispatch to complete them (call->deferred) */
	unsigned n_making; /* calls in flight that make buffers: reconcile waits for them */
	bool reconcile; /* an outcome is unknown: compare with the daemon's list when quiet */
	bool registering; /* registering again after a restart: the queue waits */
	/* What dmabroker_register() was given, to register again after a restart. */
	char *role, *name;
	char **devices;
	bool dynamic;
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
	bool lost; /* the daemon no longer has it (restart): released here only */
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
	sd_bus_message *m; /* owned: the request sent, kept to resend it (peer death, limits) */
	sd_bus_message *pending; /* owned: the request while it waits in the queue */
	struct dmabroker_call *qprev, *qnext; /* the queue's order */
	struct dmabroker_call *due; /* calls_complete()'s list of calls to complete now */
	bool queued;
	bool in_flight; /* sent and counted in its connection's window */
	bool on_peer;
	unsigned fds; /* what it counts in the windows while in flight */
	uint64_t bytes;
	uint64_t deadline; /* CLOCK_MONOTONIC usec by which its answer must come */
	int deferred; /* < 0: failed without an answer; dispatch completes it */
	bool expiring; /* its deadline passed: dispatch completes it with -ETIMEDOUT */
	bool timed_out; /* its callback ran with -ETIMEDOUT: a late answer is only cleaned up */
	bool making; /* counted in ctx->n_making */
	uintptr_t handle; /* what the caller was given (call.c's table), 0 if nothing */
	unsigned resends; /* times a repeatable call was sent again */
	/* dmabroker_adopt_buffers(): the paths to adopt (owned), and the buffers made so far */
	char **adopt;
	size_t n_adopt, adopt_next;
	struct dmabroker_buffer **adopted;
	unsigned n_adopted;
	sd_bus_message *plain; /* owned: Register without "compact_layouts", for an older daemon */
	struct dmabroker_buffer *buf; /* what it acts on; NULL once released */
	struct dmabroker_collection *col; /* what it acts on; NULL once left */
	struct dmabroker_stream *stream; /* what it makes or acts on; NULL once freed */
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
		dmabroker_stream_func_t stream;
	} cb;
	void *userdata;
	struct dmabroker_call *prev, *next;
};

struct dmabroker_collection {
	struct dmabroker *ctx;
	char *path;
	struct dmabroker_collection_info info;
	struct dmabroker_buffer probe; /* the layout every buffer has */
	struct dmabroker_buffer **buffers; /* info.buffer_count, fetched in batches */
	unsigned n_fetched;
	struct dmabroker_collection *prev, *next;
};

/* connection.c */
_printf_(2, 3) void log_msg(enum dmabroker_log_level level, const char *fmt, ...);
int set_error_msg(struct dmabroker *ctx, int r, const char *msg);
int copy_sized(void *dst, size_t dst_size, size_t min_size, const void *src, size_t src_size);
/* Drops what dmabroker_register() was given, so that it may be called again. */
void forget_registration(struct dmabroker *ctx);
bool bus_open(sd_bus *bus);
sd_bus *call_bus(struct dmabroker *ctx, enum call_kind kind);
void watch_unwatch(struct dmabroker *ctx, struct watch *w);
void watch_free(struct dmabroker *ctx, struct watch *w);
void retire_peer(struct dmabroker *ctx);
int append_str_entry(sd_bus_message *m, const char *key, const char *v);
bool refused_compact(const sd_bus_error *e);
int read_register(struct dmabroker *ctx, sd_bus_message *reply);
int build_backends(struct dmabroker *ctx, sd_bus_message **ret);
void read_backends(struct dmabroker *ctx, sd_bus_message *reply);
int read_open_peer(struct dmabroker *ctx, sd_bus_message *reply);
bool peer_usable(struct dmabroker *ctx);
int build_limits(struct dmabroker *ctx, sd_bus_message **ret);
void read_limits(struct dmabroker *ctx, sd_bus_message *reply);
void registered_again(struct dmabroker *ctx, int r);
int register_again(struct dmabroker *ctx);

/* loop.c */
int api_return(struct dmabroker *ctx, int r);

/* call.c */
int call_sync(struct dmabroker *ctx, enum call_kind kind, sd_bus_message *m,
	      sd_bus_message **reply);
int new_call(struct dmabroker *ctx, enum call_kind kind, sd_bus_message **ret);
void call_free(struct dmabroker_call *call);
int call_send(struct dmabroker_call *call, sd_bus_message *m);
int call_start(struct dmabroker *ctx, enum call_kind kind, sd_bus_message *m, void *cb,
	       void *userdata, struct dmabroker_call **ret_call,
	       struct dmabroker_call **ret_internal);
int on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error);
uint64_t now_usec(void);
int call_next(struct dmabroker_call *call, sd_bus_message *m);
void queue_pump(struct dmabroker *ctx);
bool call_silenced(const struct dmabroker_call *call);
bool calls_complete(struct dmabroker *ctx);
int call_start_internal(struct dmabroker *ctx, enum call_kind kind, sd_bus_message *m, bool first,
			struct dmabroker_call **ret);

/* buffer.c */
void buffer_let_go(struct dmabroker_buffer *buf);
struct dmabroker_buffer *buffer_free(struct dmabroker_buffer *buf);
int read_layout(sd_bus_message *m, const struct db_layout *asked, struct dmabroker_buffer *buf);
int buffer_from_reply(struct dmabroker *ctx, const char *path, int borrowed_fd,
		      struct dmabroker_buffer **ret);
int append_spec(sd_bus_message *m, const struct dmabroker_alloc_spec *spec);
int read_allocate(struct dmabroker *ctx, sd_bus_message *reply, bool import,
		  const struct db_layout *asked, struct dmabroker_buffer **ret);
int read_allocate_many(struct dmabroker *ctx, sd_bus_message *reply, unsigned count,
		       const struct db_layout *asked, struct dmabroker_buffer **ret);
int read_export(struct dmabroker *ctx, sd_bus_message *reply, int *own_fd,
		const struct dmabroker_export_info *info, struct dmabroker_buffer **ret);
int read_share(sd_bus_message *reply, struct dmabroker_token *ret);
int read_reacquire(struct dmabroker_buffer *buf, sd_bus_message *reply);
int build_on_buffer(struct dmabroker *ctx, enum call_kind kind, const char *path,
		    const char *reason, sd_bus_message **ret);
int sync_on_buffer(struct dmabroker_buffer *buf, enum call_kind kind, const char *reason);

/* memory.c */
bool memory_is_ours(const struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec);
int make_memfd(struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec, int *ret_fd);

/* signal.c */
struct dmabroker_buffer *find_buffer(struct dmabroker *ctx, const char *path);
void client_checked(struct dmabroker *ctx, sd_bus_message *reply, int r);

/* reconcile.c */
/* Object paths, as the Buffers property lists them. */
struct paths {
	char **v;
	size_t n;
};
void paths_free(struct paths *p);
bool paths_have(const struct paths *p, const char *path);
int read_paths(sd_bus_message *m, struct paths *ret);
int buffers_on_reply(struct dmabroker_call *call, sd_bus_message *reply, int r);
int list_buffers(struct dmabroker *ctx, dmabroker_buffers_func_t cb, void *userdata,
		 struct dmabroker_call **ret_call);
int on_signal(sd_bus_message *m, void *userdata, sd_bus_error *error);
int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *error);

/* collection.c */
bool collections_pending(struct dmabroker *ctx);
struct dmabroker_collection *collection_new(struct dmabroker *ctx, const char *path);
void collection_free(struct dmabroker_collection *col);
int collection_on_reply(struct dmabroker_call *call, sd_bus_message *reply, int r);

/* stream.c (stream_on_signal: stream-signal.c) */
int stream_on_reply(struct dmabroker_call *call, sd_bus_message *reply, int r);
/* StreamLink, StreamLinkEnded, StreamEnded (from the broker): true if m was one. */
bool stream_on_signal(struct dmabroker *ctx, sd_bus_message *m);
/* Reads the links and runs the streams' callbacks, within the dispatch's budget. */
void streams_dispatch(struct dmabroker *ctx, bool *progress);
/* The epoll set showed the link registered with this pointer readable: read it again. */
void stream_link_readable(void *link);
/* The epoll set's answer was cut short: every link may be readable. */
void streams_links_readable(struct dmabroker *ctx);
/* Work that dispatch must do without a link showing it (a link to end, a buffer back). */
bool streams_pending(struct dmabroker *ctx);
void streams_free_all(struct dmabroker *ctx);
