/* SPDX-License-Identifier: MIT */
#ifndef DMABROKER_H
#define DMABROKER_H

/*
 * libdmabroker: the client side of dmabrokerd.
 *
 * Every function that can fail returns a negative errno value (and 0 or a positive value on
 * success). Daemon errors map to errno values as follows:
 *   InvalidArgument -EINVAL, NotRegistered -ENOTCONN, NotFound -ENOENT,
 *   PermissionDenied -EACCES, QuotaExceeded -EDQUOT, Unsupported -EOPNOTSUPP,
 *   NoDevice -ENODEV, Busy -EBUSY, NoMemory -ENOMEM.
 * dmabroker_last_error() returns the daemon's message for the last failure on a context.
 *
 * The library never logs on its own; install a handler with dmabroker_set_log_handler().
 * A context is not thread-safe: use it from one thread at a time.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DMABROKER_MAX_PLANES 4
#define DMABROKER_TOKEN_SIZE 16
/* The most buffers one dmabroker_allocate_many() call can return (the bus's fd cap). */
#define DMABROKER_ALLOCATE_MANY_MAX 16

struct dmabroker;
struct dmabroker_buffer;

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

/* Describes a buffer to allocate. Zero-initialise it; fields are only ever appended. */
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

struct dmabroker_layout {
	uint64_t size;
	uint32_t width;
	uint32_t height;
	uint32_t fourcc;
	uint64_t modifier;
	uint32_t n_planes;
	uint32_t offsets[DMABROKER_MAX_PLANES];
	uint32_t strides[DMABROKER_MAX_PLANES];
};

struct dmabroker_share_opts {
	bool reusable; /* false (default): the token works once */
	uint64_t expires_in_ms; /* 0: never */
	bool bind_uid; /* true: only a client with uid can import */
	uint32_t uid;
};

struct dmabroker_token {
	uint8_t bytes[DMABROKER_TOKEN_SIZE];
};

struct dmabroker_event_handlers {
	/* The buffer was re-backed: call dmabroker_buffer_reacquire(), then use its new fd. */
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

/* Routes the library's messages (debug level only, by default discarded) to func. */
void dmabroker_set_log_handler(dmabroker_log_func_t func, void *userdata);

/*
 * Connects to the daemon: to address if not NULL (a D-Bus address such as
 * "unix:path=/run/x"), else to $DMABROKER_BUS_ADDRESS if set, else the system bus
 * (the session bus with DMABROKER_CONNECT_USER).
 */
int dmabroker_connect(struct dmabroker **ret, const char *address, uint32_t flags);

/* Closes the connection; the daemon drops this client's attachments and tokens. Buffers
 * still held are freed too (their fds closed). Accepts NULL; returns NULL. */
struct dmabroker *dmabroker_disconnect(struct dmabroker *ctx);

/*
 * Registers with the daemon. role: "gpu", "media", "cpu" or "compositor". dynamic: true if
 * the client handles Moved (re-imports), false if its buffers must never move. devices: a
 * NULL-terminated list of device nodes it imports into (or NULL). name may be NULL.
 * Opens the private peer connection unless DMABROKER_CONNECT_NO_PEER was given.
 */
int dmabroker_register(struct dmabroker *ctx, const char *role, bool dynamic, const char *name,
		       const char *const *devices);

/* The message of the daemon's last error on this context, or "" (borrowed). */
const char *dmabroker_last_error(struct dmabroker *ctx);

/* The client's object path (borrowed), after dmabroker_register(). */
const char *dmabroker_client_path(struct dmabroker *ctx);

/* Allocates a buffer. The new buffer object is owned by the caller. */
int dmabroker_allocate(struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec,
		       struct dmabroker_buffer **ret);

/* Allocates count (1..DMABROKER_ALLOCATE_MANY_MAX) identical buffers in one call: all or none.
 * ret must have room for count pointers. */
int dmabroker_allocate_many(struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec,
			    unsigned count, struct dmabroker_buffer **ret);

/*
 * Hands a dma-buf the caller exported (PRIME, VIDIOC_EXPBUF) to the daemon. fd is borrowed:
 * the caller keeps and closes its own. layout may be NULL; name may be NULL.
 */
int dmabroker_export(struct dmabroker *ctx, int fd, const struct dmabroker_layout *layout,
		     const char *name, struct dmabroker_buffer **ret);

/* Makes a token another client can import this buffer with. opts may be NULL. */
int dmabroker_share(struct dmabroker_buffer *buf, const struct dmabroker_share_opts *opts,
		    struct dmabroker_token *ret);

/* Imports the buffer a token names. */
int dmabroker_import(struct dmabroker *ctx, const struct dmabroker_token *token,
		     struct dmabroker_buffer **ret);

/* Token <-> 32 hex characters, for passing tokens through text channels. out needs 33 bytes. */
void dmabroker_token_to_string(const struct dmabroker_token *token, char out[33]);
int dmabroker_token_from_string(const char *s, struct dmabroker_token *ret);

/* Drops this client's attachment and frees buf (closing its fd). Accepts NULL. Returns the
 * daemon's answer; buf is freed either way. */
int dmabroker_release(struct dmabroker_buffer *buf);

/* The buffer's fd: owned by buf, valid until dmabroker_release() or a reacquire; duplicate
 * it (F_DUPFD_CLOEXEC) to keep it longer. */
int dmabroker_buffer_get_fd(const struct dmabroker_buffer *buf);

const struct dmabroker_layout *dmabroker_buffer_get_layout(const struct dmabroker_buffer *buf);
uint64_t dmabroker_buffer_get_size(const struct dmabroker_buffer *buf);
/* The D-Bus object path of the buffer (borrowed). */
const char *dmabroker_buffer_get_path(const struct dmabroker_buffer *buf);
/* The backend's name: "udmabuf", "dma-heap", "memfd" or "export" (borrowed). */
const char *dmabroker_buffer_get_backend(const struct dmabroker_buffer *buf);
/* true if the fd is a real dma-buf (false for the memfd backend). */
bool dmabroker_buffer_is_dmabuf(const struct dmabroker_buffer *buf);
/* direct or cached: how this client is attached. */
enum dmabroker_path dmabroker_buffer_get_attach_path(const struct dmabroker_buffer *buf);

/* Maps the whole buffer read-write (shared); the mapping is owned by buf and undone at
 * release. Repeated calls return the same mapping. */
int dmabroker_buffer_map(struct dmabroker_buffer *buf, void **ret);

enum dmabroker_access {
	DMABROKER_ACCESS_READ = 1 << 0,
	DMABROKER_ACCESS_WRITE = 1 << 1,
};

/* Brackets CPU access to the mapping (DMA_BUF_IOCTL_SYNC start/end); no-ops for memfd. */
int dmabroker_buffer_begin_cpu_access(struct dmabroker_buffer *buf, uint32_t access);
int dmabroker_buffer_end_cpu_access(struct dmabroker_buffer *buf, uint32_t access);

/* After a moved event: fetches the new fd (the old one is closed and any mapping undone). */
int dmabroker_buffer_reacquire(struct dmabroker_buffer *buf);

/* Asks the daemon to move (re-back) a buffer the caller owns. */
int dmabroker_buffer_move(struct dmabroker_buffer *buf);

/* Asks the daemon to revoke a buffer the caller owns: every holder gets revoked. */
int dmabroker_buffer_revoke(struct dmabroker_buffer *buf, const char *reason);

/* Sets the event callbacks; handlers may be NULL to remove them. handlers is copied. */
void dmabroker_set_event_handlers(struct dmabroker *ctx,
				  const struct dmabroker_event_handlers *handlers, void *userdata);

/* A descriptor that becomes readable when dmabroker_dispatch() has work: add it to any
 * event loop (poll for POLLIN). Owned by ctx. */
int dmabroker_get_fd(struct dmabroker *ctx);

/* Processes pending messages without blocking and runs callbacks; returns the number of
 * events handled, or a negative errno (-ECONNRESET once the daemon is gone). */
int dmabroker_dispatch(struct dmabroker *ctx);

#ifdef __cplusplus
}
#endif

#endif /* DMABROKER_H */
