/* SPDX-License-Identifier: MIT */
#ifndef DMABROKER_H
#define DMABROKER_H

/*
 * libdmabroker: the client side of dmabrokerd.
 *
 * Errors. Every function that can fail returns a negative errno value (0 or a positive value
 * on success). The daemon's errors map to errno values as follows:
 *   InvalidArgument -EINVAL, NotRegistered -ENOTCONN, NotFound -ENOENT,
 *   PermissionDenied -EACCES, QuotaExceeded -EDQUOT, Unsupported -EOPNOTSUPP,
 *   NoDevice -ENODEV, Busy -EBUSY, NoMemory -ENOMEM, Failed -EIO.
 * The connection's own failures never use those values:
 *   -ECONNRESET    the daemon cannot be reached (the bus connection is gone, or the daemon
 *                  left and nobody took its name); the call was not carried out;
 *   -ECONNABORTED  the connection (or the daemon) died after the call was sent: whether the
 *                  daemon carried it out is unknown;
 *   -ETIMEDOUT     no answer within the call timeout (dmabroker_set_call_timeout(), counted
 *                  from when the call was sent): for a call that is not harmless to repeat,
 *                  whether the daemon carried it out is unknown;
 *   -ENOBUFS       (an _async function only) DMABROKER_MAX_QUEUED_CALLS calls already wait
 *                  to be sent: nothing was sent;
 *   -EAGAIN        (a blocking call only) the bus refused it: too many calls of this
 *                  connection in flight (dbus-daemon's max_replies_per_connection); not
 *                  delivered.
 * The library never sends a call twice when doing it twice is not harmless (Allocate, Share,
 * Import, Export, Move, ...). After -ECONNABORTED or -ETIMEDOUT on a call that makes buffers,
 * the library reconciles on its own: once no such call is in flight, it lists what the daemon
 * holds for this client (Client1.Buffers) and releases every buffer it never handed out, so
 * nothing stays charged; dmabroker_adopt_buffers() hands them to the caller instead. Calls
 * that are harmless to repeat (Release, Reacquire, Revoke) are resent on the bus when the
 * peer connection dies under them, or the daemon leaves the bus before answering (a restart),
 * until the daemon answers.
 * The usual argument checks (-EINVAL, also for an fd argument that is not open; -E2BIG for
 * a struct; -EALREADY for a second registration), a size over the daemon's MaxBufferSize or
 * MaxBytesPerClient (-EDQUOT, known from its Limits once registered: nothing is made for
 * it) and local failures (-ENOMEM, also when this process may not size the memfd of a plain
 * buffer; -EMFILE or -ENFILE when no fd is left for a plain buffer's memfd or a duplicate)
 * come before anything is sent, each with its message in dmabroker_last_error(). dmabroker_last_error(ctx) returns a
 * message for the last failure on a context.
 *
 * Blocking and asynchronous calls. Every call exists twice: dmabroker_X() waits for the
 * daemon's answer; dmabroker_X_async() returns at once, never waiting on the daemon or the
 * bus, and its callback runs later from dmabroker_dispatch() with the result. A compositor's
 * frame loop uses the _async forms only. Both wait for an answer at most the context's call
 * timeout (25 s unless dmabroker_set_call_timeout() says otherwise), counted from when the
 * call is actually sent; an answer that arrived is delivered as what it is however late the
 * application dispatches (no deadline is looked at before everything that arrived is read).
 *
 * Flow control. The library keeps no more calls in flight than the connection they go on
 * takes without cutting anyone off: on the peer connection, the window the daemon advertises
 * in its Limits property (PeerWindowCalls, PeerWindowBytes; without them 16 calls and
 * 256 KiB of answers); on the bus, 120 calls (dbus-daemon refuses more than 128 per
 * connection, its system bus's and built-in max_replies_per_connection) and answers bringing
 * at most 32 fds (it drops replies beyond max_outgoing_unix_fds, 64). The rest waits in the
 * library's own queue, oldest first, up to DMABROKER_MAX_QUEUED_CALLS (a plain allocation
 * waiting there holds its memfd, so RLIMIT_NOFILE bounds those first); the queue is visible:
 * dmabroker_get_fd() and dmabroker_get_timeout() wake the loop when it can move. Calls made
 * while the peer connection's handshake is going on wait in the queue for it (a call timeout
 * at most; then they go on the bus). A call the bus refused for its limits (LimitsExceeded
 * from the bus driver) was never delivered: it is queued again, never reported. A blocking
 * call goes out at once, outside the queue.
 *
 * Daemon restarts. A daemon restarted with its store keeps this client: buffers it no longer
 * has are reported revoked. A daemon restarted without it does not know this client: the
 * context registers again on its own (with what dmabroker_register() was given) and reports
 * every buffer revoked with the reason DMABROKER_REVOKED_DAEMON_RESTARTED; releasing such a
 * buffer then sends nothing.
 *
 * Event loop integration (as sd-bus and libwayland do it): poll dmabroker_get_fd() for
 * dmabroker_get_events(), wake up at dmabroker_get_timeout() at the latest, and call
 * dmabroker_dispatch() when either happens. The library never keeps anything queued while
 * that fd is quiet: a message read by a blocking call (a Moved arriving while the library
 * waited for its own answer) makes the fd readable until dmabroker_dispatch() delivers it.
 * Ready-made glue: dmabroker_attach_event() (sd-event, below), libdmabroker-glib
 * (dmabroker-glib.h), and examples/wl-event-loop.c (libwayland-server's wl_event_loop).
 *
 * Callbacks (event handlers and _async completions) run only from dmabroker_dispatch().
 * Inside one, any call on any context is allowed (blocking ones too, though a frame loop
 * should not make them) except dmabroker_dispatch() on the same context (-EBUSY); a
 * dmabroker_disconnect() of the context being dispatched is carried out when dispatch
 * returns, and no further callback of that context runs after the call, not even in the
 * same dispatch. Releasing the buffer a callback was given is allowed; it must not be used
 * after.
 *
 * Structs. The library's objects are opaque. The structs a caller fills in
 * (dmabroker_alloc_spec, dmabroker_export_info, dmabroker_share_opts,
 * dmabroker_event_handlers) are passed with their size (sizeof as the caller compiled it):
 * fields are only ever appended, a newer library reads no further than the caller's size and
 * treats what is missing as zero, and an older library refuses a larger struct whose extra
 * fields are not zero (-E2BIG), as the kernel does for openat2() and clone3(). A size
 * smaller than the struct's first published version is refused (-EINVAL), as there.
 *
 * Getters accept NULL and then return NULL, 0 or -EINVAL. The library never logs on its own;
 * install a handler with dmabroker_set_log_handler(). A context is not thread-safe: use it
 * (and its buffers) from one thread at a time.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DMABROKER_MAX_PLANES 4
#define DMABROKER_TOKEN_SIZE 16
/* Bytes dmabroker_token_to_string() writes: 32 hex characters and a NUL. */
#define DMABROKER_TOKEN_STRING_SIZE (2 * DMABROKER_TOKEN_SIZE + 1)
/* The most buffers one dmabroker_allocate_many() call can return (the bus's fd cap). */
#define DMABROKER_ALLOCATE_MANY_MAX 16
/* The most callbacks one dmabroker_dispatch() runs: a frame loop's turn stays short. */
#define DMABROKER_DISPATCH_BUDGET 256
/* The most _async calls that wait in a context's queue to be sent (then -ENOBUFS). */
#define DMABROKER_MAX_QUEUED_CALLS 65536
/* The reason of the revoked event for every buffer when the daemon restarted without its
 * store (and so no longer knows them). */
#define DMABROKER_REVOKED_DAEMON_RESTARTED "daemon restarted without its store"

struct dmabroker;
struct dmabroker_buffer;
/* A call in flight, from a dmabroker_*_async() function (see dmabroker_call_cancel()). */
struct dmabroker_call;
/* sd-event's loop (systemd/sd-event.h), for dmabroker_attach_event(). */
struct sd_event;

enum dmabroker_connect_flags {
	/* Connect to the session bus (a user instance of the daemon) instead of the system bus. */
	DMABROKER_CONNECT_USER = 1 << 0,
	/* Stay on the bus: do not open a private peer connection after dmabroker_register(). */
	DMABROKER_CONNECT_NO_PEER = 1 << 1,
	/*
	 * Let the daemon allocate plain buffers. By default dmabroker_allocate() makes the
	 * memory in the calling process (a sealed memfd whose pages are allocated here, so they
	 * count against this process's memory cgroup, as they would with /dev/udmabuf of its
	 * own) and the daemon turns it into a udmabuf. Heap and contiguous buffers always come
	 * from the daemon.
	 */
	DMABROKER_CONNECT_DAEMON_MEMORY = 1 << 2,
};

enum dmabroker_path {
	DMABROKER_PATH_DIRECT = 0,
	DMABROKER_PATH_CACHED = 1,
};

/* Describes a buffer to allocate; passed with its size. Zero what you do not set. */
struct dmabroker_alloc_spec {
	/* Either size (bytes) for a plain buffer, or width, height and fourcc for an image. */
	uint64_t size;
	uint32_t width;
	uint32_t height;
	uint32_t fourcc; /* DRM fourcc (drm_fourcc.h) */
	uint64_t modifier; /* DRM_FORMAT_MOD_LINEAR (0) is the only one supported */
	uint32_t stride_align; /* 0 for the daemon's default (64) */
	const char *backend; /* "udmabuf", "dma-heap", "memfd" or NULL for the default */
	const char *name; /* shown in /proc and debugfs; NULL for none */
	bool contiguous; /* must be physically contiguous (e.g. V4L2 dma-contig) */
};

/* Describes a dma-buf handed to dmabroker_export(); passed with its size. fourcc 0: no
 * image layout, only the bytes. */
struct dmabroker_export_info {
	const char *name; /* NULL for none */
	uint32_t width;
	uint32_t height;
	uint32_t fourcc;
	uint64_t modifier;
	uint32_t n_planes;
	uint32_t offsets[DMABROKER_MAX_PLANES];
	uint32_t strides[DMABROKER_MAX_PLANES];
};

/* How a token works; passed with its size. */
struct dmabroker_share_opts {
	bool reusable; /* false (default): the token works once */
	uint64_t expires_in_ms; /* 0: never */
	bool bind_uid; /* true: only a client with uid can import */
	uint32_t uid;
};

struct dmabroker_token {
	uint8_t bytes[DMABROKER_TOKEN_SIZE];
};

/* What the daemon tells a client about its buffers; passed with its size. */
struct dmabroker_event_handlers {
	/* The buffer was re-backed: reacquire it (dmabroker_buffer_reacquire_async()), then
	 * use its new fd. */
	void (*moved)(struct dmabroker_buffer *buf, void *userdata);
	/* The buffer was revoked: stop using it and release it. */
	void (*revoked)(struct dmabroker_buffer *buf, const char *reason, void *userdata);
};

enum dmabroker_log_level {
	DMABROKER_LOG_ERROR = 3,
	DMABROKER_LOG_INFO = 6,
	DMABROKER_LOG_DEBUG = 7,
};

typedef void (*dmabroker_log_func_t)(enum dmabroker_log_level level, const char *msg,
				     void *userdata);

/*
 * Completion callbacks of the _async calls. result is what the blocking call would have
 * returned. A buffer handed to a callback with result 0 belongs to the caller from then on
 * (release it with dmabroker_release()); the token is valid during the callback only.
 */
typedef void (*dmabroker_done_func_t)(int result, void *userdata);
typedef void (*dmabroker_buffer_func_t)(int result, struct dmabroker_buffer *buf, void *userdata);
typedef void (*dmabroker_buffers_func_t)(int result, struct dmabroker_buffer *const *bufs,
					 unsigned count, void *userdata);
typedef void (*dmabroker_token_func_t)(int result, const struct dmabroker_token *token,
				       void *userdata);

/* Routes the library's messages (debug level only, by default discarded) to func. */
void dmabroker_set_log_handler(dmabroker_log_func_t func, void *userdata);

/*
 * Connects to the daemon: to address if not NULL (a D-Bus address such as
 * "unix:path=/run/x"), else to $DMABROKER_BUS_ADDRESS if set, else the system bus
 * (the session bus with DMABROKER_CONNECT_USER). Does not wait for the daemon.
 */
int dmabroker_connect(struct dmabroker **ret, const char *address, uint32_t flags);

/* Closes the connection; the daemon drops this client's attachments and tokens. Buffers
 * still held are freed too (their fds closed); calls in flight are dropped without their
 * callbacks. Accepts NULL; returns NULL. */
struct dmabroker *dmabroker_disconnect(struct dmabroker *ctx);

/*
 * Registers with the daemon. role: "gpu", "media", "cpu" or "compositor". dynamic: true if
 * the client handles Moved (re-imports), false if its buffers must never move. devices: a
 * NULL-terminated list of device nodes it imports into (or NULL). name may be NULL.
 * Opens the private peer connection unless DMABROKER_CONNECT_NO_PEER was given.
 */
int dmabroker_register(struct dmabroker *ctx, const char *role, bool dynamic, const char *name,
		       const char *const *devices);
int dmabroker_register_async(struct dmabroker *ctx, const char *role, bool dynamic,
			     const char *name, const char *const *devices,
			     dmabroker_done_func_t done, void *userdata,
			     struct dmabroker_call **ret_call);

/* A message for the last failure on ctx, or "" (borrowed, valid until the next call). */
const char *dmabroker_last_error(struct dmabroker *ctx);

/* The client's object path (borrowed), after registration; NULL before. */
const char *dmabroker_client_path(struct dmabroker *ctx);

/* Allocates a buffer. The new buffer object is owned by the caller. */
int dmabroker_allocate(struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec,
		       size_t spec_size, struct dmabroker_buffer **ret);
int dmabroker_allocate_async(struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec,
			     size_t spec_size, dmabroker_buffer_func_t done, void *userdata,
			     struct dmabroker_call **ret_call);

/* Allocates count (1..DMABROKER_ALLOCATE_MANY_MAX) identical buffers in one call: all or none.
 * ret must have room for count pointers. */
int dmabroker_allocate_many(struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec,
			    size_t spec_size, unsigned count, struct dmabroker_buffer **ret);
int dmabroker_allocate_many_async(struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec,
				  size_t spec_size, unsigned count, dmabroker_buffers_func_t done,
				  void *userdata, struct dmabroker_call **ret_call);

/*
 * Hands a dma-buf the caller exported (PRIME, VIDIOC_EXPBUF) to the daemon. fd is borrowed:
 * the caller keeps and closes its own (the _async form duplicates it at once). info may be
 * NULL (info_size is then ignored).
 */
int dmabroker_export(struct dmabroker *ctx, int fd, const struct dmabroker_export_info *info,
		     size_t info_size, struct dmabroker_buffer **ret);
int dmabroker_export_async(struct dmabroker *ctx, int fd, const struct dmabroker_export_info *info,
			   size_t info_size, dmabroker_buffer_func_t done, void *userdata,
			   struct dmabroker_call **ret_call);

/* Makes a token another client can import this buffer with. opts may be NULL. */
int dmabroker_share(struct dmabroker_buffer *buf, const struct dmabroker_share_opts *opts,
		    size_t opts_size, struct dmabroker_token *ret);
int dmabroker_share_async(struct dmabroker_buffer *buf, const struct dmabroker_share_opts *opts,
			  size_t opts_size, dmabroker_token_func_t done, void *userdata,
			  struct dmabroker_call **ret_call);

/* Imports the buffer a token names. -EALREADY if this context holds that buffer already (its
 * handle stays the one to use; nothing new was made). */
int dmabroker_import(struct dmabroker *ctx, const struct dmabroker_token *token,
		     struct dmabroker_buffer **ret);
int dmabroker_import_async(struct dmabroker *ctx, const struct dmabroker_token *token,
			   dmabroker_buffer_func_t done, void *userdata,
			   struct dmabroker_call **ret_call);

/* Token <-> 32 hex characters, for passing tokens through text channels. */
void dmabroker_token_to_string(const struct dmabroker_token *token,
			       char out[DMABROKER_TOKEN_STRING_SIZE]);
int dmabroker_token_from_string(const char *s, struct dmabroker_token *ret);

/* Drops this client's attachment and frees buf (closing its fd) at once; the daemon's answer
 * is returned (or passed to done). Accepts NULL. */
int dmabroker_release(struct dmabroker_buffer *buf);
int dmabroker_release_async(struct dmabroker_buffer *buf, dmabroker_done_func_t done,
			    void *userdata, struct dmabroker_call **ret_call);

/* The buffer's fd: owned by buf, valid until dmabroker_release() or a reacquire; duplicate
 * it (F_DUPFD_CLOEXEC) to keep it longer. */
int dmabroker_buffer_get_fd(const struct dmabroker_buffer *buf);

/* The buffer's bytes. */
uint64_t dmabroker_buffer_get_size(const struct dmabroker_buffer *buf);
/* Its image layout (all 0 for a plain byte buffer), as libgbm's gbm_bo_get_*() give it. */
uint32_t dmabroker_buffer_get_width(const struct dmabroker_buffer *buf);
uint32_t dmabroker_buffer_get_height(const struct dmabroker_buffer *buf);
uint32_t dmabroker_buffer_get_format(const struct dmabroker_buffer *buf);
uint64_t dmabroker_buffer_get_modifier(const struct dmabroker_buffer *buf);
uint32_t dmabroker_buffer_get_plane_count(const struct dmabroker_buffer *buf);
/* Offset and stride of a plane; 0 for a plane it does not have. */
uint32_t dmabroker_buffer_get_offset(const struct dmabroker_buffer *buf, unsigned plane);
uint32_t dmabroker_buffer_get_stride(const struct dmabroker_buffer *buf, unsigned plane);
/* The D-Bus object path of the buffer (borrowed). */
const char *dmabroker_buffer_get_path(const struct dmabroker_buffer *buf);
/* The backend's name: "udmabuf", "dma-heap", "memfd" or "export" (borrowed). */
const char *dmabroker_buffer_get_backend(const struct dmabroker_buffer *buf);
/* true if the fd is a real dma-buf (false for the memfd backend). */
bool dmabroker_buffer_is_dmabuf(const struct dmabroker_buffer *buf);
/* direct or cached: how this client is attached. */
enum dmabroker_path dmabroker_buffer_get_attach_path(const struct dmabroker_buffer *buf);

/* Maps the whole buffer read-write (shared); the mapping is owned by buf and undone at
 * release or reacquire. Repeated calls return the same mapping. */
int dmabroker_buffer_map(struct dmabroker_buffer *buf, void **ret);

enum dmabroker_access {
	DMABROKER_ACCESS_READ = 1 << 0,
	DMABROKER_ACCESS_WRITE = 1 << 1,
};

/* Brackets CPU access to the mapping (DMA_BUF_IOCTL_SYNC start/end); no-ops for memfd. */
int dmabroker_buffer_begin_cpu_access(struct dmabroker_buffer *buf, uint32_t access);
int dmabroker_buffer_end_cpu_access(struct dmabroker_buffer *buf, uint32_t access);

/* After a moved event: fetches the new fd (the old one is closed and any mapping undone
 * when the answer arrives). */
int dmabroker_buffer_reacquire(struct dmabroker_buffer *buf);
int dmabroker_buffer_reacquire_async(struct dmabroker_buffer *buf, dmabroker_done_func_t done,
				     void *userdata, struct dmabroker_call **ret_call);

/* Asks the daemon to move (re-back) a buffer the caller owns. */
int dmabroker_buffer_move(struct dmabroker_buffer *buf);
int dmabroker_buffer_move_async(struct dmabroker_buffer *buf, dmabroker_done_func_t done,
				void *userdata, struct dmabroker_call **ret_call);

/* Asks the daemon to revoke a buffer the caller owns: every holder gets revoked. */
int dmabroker_buffer_revoke(struct dmabroker_buffer *buf, const char *reason);
int dmabroker_buffer_revoke_async(struct dmabroker_buffer *buf, const char *reason,
				  dmabroker_done_func_t done, void *userdata,
				  struct dmabroker_call **ret_call);

/*
 * The _async calls: return 0 once the call is queued or on its way (done then runs exactly
 * once, from dmabroker_dispatch(), never from inside the _async function), or a negative
 * errno (nothing was sent; done never runs). done may be NULL. With ret_call, *ret_call
 * is a handle on the call: a number the library never reuses, not an address, so it is
 * safe to pass to dmabroker_call_cancel() at any time, also after done ran or the context
 * was disconnected (it then names nothing). *ret_call may be NULL (no memory for the
 * handle): the call goes on all the same.
 */

/* Forgets a call in flight: its callback never runs. What the daemon made for it (buffers)
 * is released when the answer arrives. A handle whose call completed (or whose context is
 * gone) names nothing: a no-op, as for NULL. */
void dmabroker_call_cancel(struct dmabroker_call *call);

/*
 * The timeout of every call of ctx, blocking or not, counted from when the call is sent:
 * usec microseconds (0: the default, 25 s; UINT64_MAX: never). WaitCollection waits at least
 * an hour (the daemon answers it by its CollectionDeadlineSec). Calls already sent keep theirs.
 */
int dmabroker_set_call_timeout(struct dmabroker *ctx, uint64_t usec);

/*
 * Lists the buffers the daemon holds for this client that the library does not know (made
 * for calls whose outcome was unknown) and hands them to the caller: each fetched with
 * Reacquire, owned by the caller as an allocation's would be. count may be 0. The blocking
 * form returns an array in *ret (free() it; the buffers are the caller's) and its length in
 * *ret_count.
 */
int dmabroker_adopt_buffers(struct dmabroker *ctx, struct dmabroker_buffer ***ret,
			    unsigned *ret_count);
int dmabroker_adopt_buffers_async(struct dmabroker *ctx, dmabroker_buffers_func_t done,
				  void *userdata, struct dmabroker_call **ret_call);

/* Sets the event callbacks; handlers may be NULL to remove them. handlers is copied. */
int dmabroker_set_event_handlers(struct dmabroker *ctx,
				 const struct dmabroker_event_handlers *handlers,
				 size_t handlers_size, void *userdata);

/* A descriptor that is readable whenever dmabroker_dispatch() has work: add it to any event
 * loop for dmabroker_get_events(). Owned by ctx; the same for ctx's whole life. */
int dmabroker_get_fd(struct dmabroker *ctx);

/* The poll(2) events to wait for on dmabroker_get_fd() (POLLIN). */
int dmabroker_get_events(struct dmabroker *ctx);

/*
 * When dmabroker_dispatch() must run at the latest even if the fd stays quiet (a call
 * timing out), as an absolute CLOCK_MONOTONIC time in microseconds: 0 for now, UINT64_MAX
 * for never. Read it again after every dispatch and every call. (The fd becomes readable
 * at that time too, so a loop that cannot take timeouts may ignore it.)
 */
int dmabroker_get_timeout(struct dmabroker *ctx, uint64_t *ret_usec);

/* Processes pending messages without blocking and runs callbacks, at most
 * DMABROKER_DISPATCH_BUDGET of them per call (what is left keeps dmabroker_get_fd() readable
 * and dmabroker_get_timeout() at 0, so the loop comes back at once); returns the number of
 * callbacks run (events and completions, also when one of them disconnected the context),
 * or a negative errno (-ECONNRESET once the bus connection is gone, -EBUSY when called from
 * inside a callback of the same context). */
int dmabroker_dispatch(struct dmabroker *ctx);

/*
 * Runs ctx from an sd-event loop (NULL: the thread's default loop) at priority: one I/O
 * source on dmabroker_get_fd() that dispatches. ctx keeps a reference to the loop until
 * dmabroker_detach_event() or dmabroker_disconnect().
 */
int dmabroker_attach_event(struct dmabroker *ctx, struct sd_event *event, int64_t priority);
int dmabroker_detach_event(struct dmabroker *ctx);

/*
 * Buffer collections: every participant states its constraints, and the daemon allocates one
 * set of buffers that satisfies all of them (or says who conflicts). A creator makes the
 * collection and hands a token to each other participant (dmabroker_token_to_string() for
 * text channels); each joins, sets its constraints, and waits. When all are set (and the
 * creator committed, or the expected number joined) every participant gets the same buffers.
 * The buffers belong to the collection object: dmabroker_collection_leave() releases them.
 */
struct dmabroker_collection;

/* One participant's constraints; passed with its size. Zero (or NULL) means no constraint. */
struct dmabroker_constraints {
	/* The device this participant speaks for: one given to dmabroker_register(). */
	const char *device;
	uint32_t min_buffers_for_camping; /* held at once by this participant; summed */
	uint32_t min_buffers;
	uint32_t max_buffers;
	uint64_t min_size;
	uint64_t max_size;
	uint32_t size_divisor;
	/* Allowed DRM fourccs and modifiers (only DRM_FORMAT_MOD_LINEAR is laid out); no fourcc
	 * from anyone: plain bytes. */
	const uint32_t *fourccs;
	uint32_t n_fourccs;
	const uint64_t *modifiers;
	uint32_t n_modifiers;
	uint32_t width, height; /* what is asked for; else the smallest the ranges allow */
	uint32_t min_width, max_width;
	uint32_t min_height, max_height;
	uint32_t min_strides[DMABROKER_MAX_PLANES];
	uint32_t max_strides[DMABROKER_MAX_PLANES];
	uint32_t stride_divisor;
	uint32_t offset_divisor;
	bool contiguous; /* physically contiguous memory */
	uint64_t max_segment_size; /* the device's DMA segment limit */
	uint32_t dma_address_bits;
	bool device_import; /* a device imports the buffers: they must be dma-bufs */
	/* NULL-terminated: "udmabuf", "memfd", "dma-heap", "dma-heap:NAME"; NULL: any. */
	const char *const *backends;
	bool cpu_read;
	bool cpu_write;
};

/* What the daemon allocated for a collection. */
struct dmabroker_collection_info {
	uint32_t buffer_count;
	uint32_t camping; /* the camping minimums the count covers */
	uint64_t size;
	char backend[80]; /* "udmabuf", "dma-heap:linux,cma", ... */
	bool contiguous;
	bool dmabuf;
	uint64_t max_segment; /* the largest DMA segment of a buffer */
	enum dmabroker_path path; /* how this participant is attached */
	bool segment_limit_not_met; /* a participant's max_segment_size is below max_segment */
	bool address_bits_unchecked;
	char note[512]; /* what the flags mean, naming participants */
};

typedef void (*dmabroker_collection_func_t)(int result, struct dmabroker_collection *col,
					    void *userdata);

/* Creates a collection. participants: allocate once that many have set constraints (0: wait
 * for dmabroker_collection_commit()). name may be NULL. */
int dmabroker_collection_create(struct dmabroker *ctx, const char *name, unsigned participants,
				struct dmabroker_collection **ret);
int dmabroker_collection_create_async(struct dmabroker *ctx, const char *name,
				      unsigned participants, dmabroker_collection_func_t done,
				      void *userdata, struct dmabroker_call **ret_call);

/* A single-use token another client joins with (any participant may make them). */
int dmabroker_collection_token(struct dmabroker_collection *col, struct dmabroker_token *ret);
int dmabroker_collection_token_async(struct dmabroker_collection *col, dmabroker_token_func_t done,
				     void *userdata, struct dmabroker_call **ret_call);

int dmabroker_collection_join(struct dmabroker *ctx, const struct dmabroker_token *token,
			      struct dmabroker_collection **ret);
int dmabroker_collection_join_async(struct dmabroker *ctx, const struct dmabroker_token *token,
				    dmabroker_collection_func_t done, void *userdata,
				    struct dmabroker_call **ret_call);

/* Sets (before the allocation: replaces) this participant's constraints. -EOPNOTSUPP for a
 * late joiner the buffers do not fit (dmabroker_last_error() says why). */
int dmabroker_collection_set_constraints(struct dmabroker_collection *col,
					 const struct dmabroker_constraints *constraints,
					 size_t constraints_size);
int dmabroker_collection_set_constraints_async(struct dmabroker_collection *col,
					       const struct dmabroker_constraints *constraints,
					       size_t constraints_size, dmabroker_done_func_t done,
					       void *userdata, struct dmabroker_call **ret_call);

/* The creator: nobody else comes before the allocation. */
int dmabroker_collection_commit(struct dmabroker_collection *col);
int dmabroker_collection_commit_async(struct dmabroker_collection *col, dmabroker_done_func_t done,
				      void *userdata, struct dmabroker_call **ret_call);

/*
 * Waits for the allocation and fetches every buffer (in batches the bus can carry). A
 * conflict is -EOPNOTSUPP with the daemon's message naming the conflicting participants in
 * dmabroker_last_error(); a creator that left, -ENOENT.
 */
int dmabroker_collection_wait(struct dmabroker_collection *col);
int dmabroker_collection_wait_async(struct dmabroker_collection *col, dmabroker_done_func_t done,
				    void *userdata, struct dmabroker_call **ret_call);

/* After a successful wait: what was allocated, and the buffers (owned by col). */
const struct dmabroker_collection_info *
dmabroker_collection_get_info(const struct dmabroker_collection *col);
unsigned dmabroker_collection_get_buffer_count(const struct dmabroker_collection *col);
struct dmabroker_buffer *dmabroker_collection_get_buffer(const struct dmabroker_collection *col,
							 unsigned index);
/* The collection's D-Bus object path (borrowed). */
const char *dmabroker_collection_get_path(const struct dmabroker_collection *col);

/* Leaves the collection and frees col with its buffers (their fds are closed, mappings
 * undone); the daemon drops this client's attachments. Accepts NULL. */
int dmabroker_collection_leave(struct dmabroker_collection *col);
/* The same without waiting: col must not be used after the call; done gets the result. */
int dmabroker_collection_leave_async(struct dmabroker_collection *col, dmabroker_done_func_t done,
				     void *userdata, struct dmabroker_call **ret_call);

/*
 * Streams (docs/streams.md): frames handed through a collection's buffers by index. The
 * producer creates a stream on a collection it holds the buffers of; each consumer joins it
 * (by name, same uid; or with a stream token, any uid), becoming a participant of the
 * collection if it was not one. The daemon gives each producer-consumer pair a direct link
 * (include/dmabroker-wire.h) and is told nothing per frame. Links live inside the context's
 * one fd: their records are read and their callbacks run from dmabroker_dispatch(), within
 * DMABROKER_DISPATCH_BUDGET, and a link's unread records stay in its socket, not in the
 * library (nothing is queued while the fd is quiet).
 *
 * Buffers. The producer takes a free buffer (dmabroker_stream_get_free()), fills it and
 * queues it; the frame goes to every consumer linked and ready (said HELLO) at that moment;
 * the buffer is free again when each has released it (a consumer that dies or leaves
 * releases everything it held at once: its link hangs up). Consumers hold a frame's buffer
 * from the frame callback until dmabroker_stream_release().
 *
 * Back-pressure. FIFO (the default): every ready consumer gets every frame; a producer with
 * no free buffer waits (-EAGAIN from get_free, and the buffer_returned callback when one is
 * back); a consumer that holds everything stalls the producer until it releases or is gone.
 * LATEST: a consumer holding max_held frames is skipped (it misses frames, never stalls the
 * producer), and a consumer that falls behind gets only the newest frame waiting on its
 * link: the older ones go back to the producer at once.
 *
 * Sync. An acquire fence (a sync_file) may come with a frame, a release fence with a
 * release. DMABROKER_SYNC_EXPLICIT hands the fences to the application. DMABROKER_SYNC_IMPLICIT
 * is for devices that use the dma-buf's own fences: the producer's library sends the fence
 * it exports from the buffer (DMA_BUF_IOCTL_EXPORT_SYNC_FILE) when the application gives
 * none, and imports release fences into the buffer; a consumer's library imports the acquire
 * fence into the buffer (DMA_BUF_IOCTL_IMPORT_SYNC_FILE) before the frame callback and
 * exports its release fence. Buffers that are not dma-bufs (memfd: Debian 12's stock kernel)
 * carry frames without fences. CPU access: dmabroker_fence_wait(), or the buffer's
 * DMA_BUF_IOCTL_SYNC, which waits on the buffer's fences.
 *
 * Failure. Everything that arrives on a link is checked; the first violation ends that link
 * only (consumer_left on the producer, ended with the reason on the consumer). A producer
 * that dies ends the stream for its consumers (ended, with the daemon's reason); the buffers
 * they hold stay valid until they leave. A required consumer's failure ends the stream; a
 * dispensable one's leaves it running. The daemon restarting interrupts no stream.
 */
struct dmabroker_stream;

enum dmabroker_stream_mode {
	DMABROKER_STREAM_FIFO = 0,
	DMABROKER_STREAM_LATEST = 1,
};

enum dmabroker_sync {
	DMABROKER_SYNC_EXPLICIT = 0,
	DMABROKER_SYNC_IMPLICIT = 1,
};

/* The stream's format record: the layout (strides, offsets) is the collection's. */
struct dmabroker_stream_format {
	uint32_t fourcc; /* DRM fourcc; 0: plain bytes */
	uint32_t width, height;
	uint32_t framerate_num, framerate_den; /* 0/0: unknown */
};

#define DMABROKER_FRAME_END_OF_STREAM (1u << 1)
#define DMABROKER_FRAME_DISCONTINUITY (1u << 2)
/* The index of an end-of-stream frame without a buffer. */
#define DMABROKER_FRAME_NO_BUFFER UINT32_MAX
#define DMABROKER_FRAME_META_MAX 64

/* Metadata kinds (meta_type). */
#define DMABROKER_FRAME_META_NONE 0
#define DMABROKER_FRAME_META_RECT 1 /* meta_size 16: uint32_t x, y, width, height */
#define DMABROKER_FRAME_META_OPAQUE 2

struct dmabroker_frame {
	uint32_t index; /* buffer index in the collection */
	uint32_t flags; /* DMABROKER_FRAME_* */
	uint64_t seq;   /* set by the library when queued; strictly increasing */
	uint64_t timestamp_ns; /* CLOCK_MONOTONIC; 0: none */
	uint32_t meta_type;
	uint32_t meta_size; /* 0 .. DMABROKER_FRAME_META_MAX */
	uint8_t meta[DMABROKER_FRAME_META_MAX];
	/* Queue: a sync_file the frame's readers must wait on, or -1 (borrowed: the library
	 * sends a duplicate). Delivered: borrowed, valid during the callback, -1 when there is
	 * none or the library imported it (DMABROKER_SYNC_IMPLICIT). */
	int acquire_fence;
};

struct dmabroker_stream_options {
	const char *name; /* producer: the stream's name (NULL: unnamed, token only) */
	enum dmabroker_stream_mode mode;     /* producer */
	uint32_t max_consumers;              /* producer; 0: the daemon's limit */
	struct dmabroker_stream_format format; /* producer */
	enum dmabroker_sync sync;            /* both */
	bool required;                       /* consumer: its failure ends the stream */
	uint32_t max_held;                   /* consumer: frames held at once; 0: 1 */
	const char *label;                   /* consumer: shown in listings */
};

/* Stream callbacks, run from dmabroker_dispatch(); passed with their size. */
struct dmabroker_stream_handlers {
	/* Consumer: a frame is ready; buffer f->index is the consumer's until
	 * dmabroker_stream_release(). An end-of-stream frame may carry no buffer. */
	void (*frame)(struct dmabroker_stream *s, const struct dmabroker_frame *f, void *userdata);
	/* Producer: buffer index is free again. release_fence: borrowed, -1 when none (or
	 * imported: DMABROKER_SYNC_IMPLICIT). */
	void (*buffer_returned)(struct dmabroker_stream *s, uint32_t index, int release_fence,
				void *userdata);
	/* Both: the stream is over (consumer: the producer ended it, died, or this link was
	 * ended). The stream object stays until dmabroker_stream_free(). */
	void (*ended)(struct dmabroker_stream *s, const char *reason, void *userdata);
	/* Producer: a consumer is ready (it holds the buffers) / is gone (its buffers are back). */
	void (*consumer_joined)(struct dmabroker_stream *s, uint32_t consumer, void *userdata);
	void (*consumer_left)(struct dmabroker_stream *s, uint32_t consumer, const char *reason,
			      void *userdata);
};

typedef void (*dmabroker_stream_func_t)(int result, struct dmabroker_stream *s, void *userdata);

/* Creates a stream on col (allocated; col must outlive the stream). opts and handlers are
 * copied; userdata goes to the handlers and to done. */
int dmabroker_stream_create(struct dmabroker_collection *col,
			    const struct dmabroker_stream_options *opts, size_t opts_size,
			    const struct dmabroker_stream_handlers *handlers, size_t handlers_size,
			    void *userdata, struct dmabroker_stream **ret);
int dmabroker_stream_create_async(struct dmabroker_collection *col,
				  const struct dmabroker_stream_options *opts, size_t opts_size,
				  const struct dmabroker_stream_handlers *handlers,
				  size_t handlers_size, void *userdata, dmabroker_stream_func_t done,
				  struct dmabroker_call **ret_call);

/* A single-use token that lets a client of any uid join (producer only). */
int dmabroker_stream_token(struct dmabroker_stream *s, struct dmabroker_token *ret);
int dmabroker_stream_token_async(struct dmabroker_stream *s, dmabroker_token_func_t done,
				 void *userdata, struct dmabroker_call **ret_call);

/* Joins as a consumer: by name (a stream of this uid) when token is NULL, else with the
 * token. Fetches the buffers, then says HELLO: frames come from then on. */
int dmabroker_stream_join(struct dmabroker *ctx, const char *name,
			  const struct dmabroker_token *token,
			  const struct dmabroker_stream_options *opts, size_t opts_size,
			  const struct dmabroker_stream_handlers *handlers, size_t handlers_size,
			  void *userdata, struct dmabroker_stream **ret);
int dmabroker_stream_join_async(struct dmabroker *ctx, const char *name,
				const struct dmabroker_token *token,
				const struct dmabroker_stream_options *opts, size_t opts_size,
				const struct dmabroker_stream_handlers *handlers,
				size_t handlers_size, void *userdata, dmabroker_stream_func_t done,
				struct dmabroker_call **ret_call);

/* Producer: a free buffer's index, now the producer's to fill (-EAGAIN: none free). */
int dmabroker_stream_get_free(struct dmabroker_stream *s, uint32_t *ret_index);
/* Producer: sends the frame f->index (taken with get_free) to the ready consumers; f->seq
 * is set. No consumer takes it: it is free again at once (buffer_returned runs). An
 * end-of-stream frame may have index DMABROKER_FRAME_NO_BUFFER. */
int dmabroker_stream_queue(struct dmabroker_stream *s, struct dmabroker_frame *f);

/* Consumer: done with the frame's buffer; release_fence: -1 or a sync_file (borrowed) the
 * producer must wait on before writing it again. */
int dmabroker_stream_release(struct dmabroker_stream *s, uint32_t index, int release_fence);

/* Blocking helpers for simple programs: dispatch ctx until a frame is ready (consumer) or a
 * buffer is free (producer), at most timeout_usec (UINT64_MAX: no limit; -ETIMEDOUT).
 * Without a frame handler, frames are taken by dmabroker_stream_wait_frame() only, and
 * f->acquire_fence is then the caller's to close; the link is watched only while it runs, so
 * frames waiting in between do not make dmabroker_get_fd() readable, and a hang-up of the link
 * is seen at the next wait_frame() (or at free). -EPIPE: the stream ended, or a callback run
 * meanwhile freed s (s is gone then: the caller must not use it). */
int dmabroker_stream_wait_frame(struct dmabroker_stream *s, struct dmabroker_frame *f,
				uint64_t timeout_usec);
int dmabroker_stream_wait_free(struct dmabroker_stream *s, uint32_t *ret_index,
			       uint64_t timeout_usec);

/* Waits until a sync_file fence signals (-1: at once), at most timeout_usec (-ETIMEDOUT). */
int dmabroker_fence_wait(int fence, uint64_t timeout_usec);

/* Getters. The collection is the one given to create, or the one joined (owned by s). */
struct dmabroker_collection *dmabroker_stream_get_collection(const struct dmabroker_stream *s);
struct dmabroker_buffer *dmabroker_stream_get_buffer(const struct dmabroker_stream *s,
						     uint32_t index);
const struct dmabroker_stream_format *
dmabroker_stream_get_format(const struct dmabroker_stream *s);
const char *dmabroker_stream_get_path(const struct dmabroker_stream *s);
bool dmabroker_stream_is_producer(const struct dmabroker_stream *s);
/* Producer: consumers linked and ready. */
unsigned dmabroker_stream_get_consumer_count(const struct dmabroker_stream *s);
/* Consumer: its number in the stream. */
uint32_t dmabroker_stream_get_consumer_id(const struct dmabroker_stream *s);

/* Producer: ends the stream for everyone (reason may be NULL) and frees s; a consumer: leaves
 * and frees s (with the collection it joined through the stream, and its buffers). After
 * ended: frees s. Accepts NULL. */
int dmabroker_stream_free(struct dmabroker_stream *s, const char *reason);
int dmabroker_stream_free_async(struct dmabroker_stream *s, const char *reason,
				dmabroker_done_func_t done, void *userdata,
				struct dmabroker_call **ret_call);

#ifdef __cplusplus
}
#endif

#endif /* DMABROKER_H */
