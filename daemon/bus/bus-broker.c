// SPDX-License-Identifier: MIT
/*
 * org.dmabroker.Broker1: the methods clients call. Each handler reads and checks its
 * arguments, asks the registry, and answers with the buffer's fd or a named error.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "backend.h"
#include "broker.h"
#include "client-memory.h"
#include "collection.h"
#include "bus-creds.h"
#include "bus-dict.h"
#include "bus-objects.h"
#include "bus-text.h"
#include "errors.h"
#include "fd-util.h"
#include "fdstore.h"
#include "log.h"
#include "macros.h"
#include "monitor.h"
#include "move.h"
#include "peer.h"
#include "protocol.h"
#include "spec.h"
#include "stream.h"

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int quota_error(struct db_broker *b, sd_bus_error *error)
{
	uint64_t value;
	const char *limit = db_registry_exceeded(b->reg, &value);

	return sd_bus_error_setf(error, DB_ERROR_QUOTA_EXCEEDED,
				 "%s (%" PRIu64 ") would be exceeded", limit, value);
}

/* The registered client a call comes from: by its peer connection, or its unique name. */
int db_bus_get_caller(struct db_broker *b, sd_bus_message *m, struct db_client **ret,
		      sd_bus_error *error)
{
	struct db_peer *peer = db_peer_of_message(b, m);
	struct db_client *c = NULL;

	if (peer)
		c = db_peer_client(peer);
	else if (sd_bus_message_get_sender(m))
		c = db_registry_find_client_by_name(b->reg, sd_bus_message_get_sender(m));
	if (!c)
		return sd_bus_error_setf(error, DB_ERROR_NOT_REGISTERED, "call Register before %s",
					 sd_bus_message_get_member(m));
	*ret = c;
	return 0;
}

enum buffer_access {
	ACCESS_HOLDER, /* the caller holds an attachment */
	ACCESS_OWNER, /* the caller has the owner's uid, or is root: move, revoke */
};

/* A buffer path argument, checked to exist and to be within the caller's reach. */
static int read_buffer(struct db_broker *b, sd_bus_message *m, struct db_client *c,
		       enum buffer_access access, struct db_buffer **ret, sd_bus_error *error)
{
	struct db_buffer *buf;
	const char *path;
	int r;

	r = db_bus_read_path(m, "buffer", &path, error);
	if (r < 0)
		return r;
	buf = db_bus_buffer_from_path(b, path);
	/* A buffer the caller may not see does not exist for it: no error says whose it is. */
	if (!buf || buf->lingering || !db_bus_buffer_visible(buf, c->uid))
		return sd_bus_error_setf(error, DB_ERROR_NOT_FOUND, "no buffer %s", path);
	if (access == ACCESS_HOLDER && !db_buffer_find_attachment(buf, c))
		return sd_bus_error_setf(error, DB_ERROR_PERMISSION_DENIED, "you do not hold %s",
					 path);
	if (access == ACCESS_OWNER && c->uid != buf->owner_uid && c->uid != 0)
		return sd_bus_error_setf(error, DB_ERROR_PERMISSION_DENIED,
					 "%s belongs to another uid", path);
	*ret = buf;
	return 0;
}

static int method_register(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	_cleanup_(db_register_args_clear) struct db_register_args info = {0};
	const char *sender;
	struct db_client *c;
	char path[128];
	uid_t uid;
	pid_t pid;
	int r;

	if (db_peer_of_message(b, m))
		return sd_bus_error_setf(
			error, DB_ERROR_INVALID_ARGUMENT,
			"a peer connection belongs to a registered client already");
	sender = sd_bus_message_get_sender(m);
	c = sender ? db_registry_find_client_by_name(b->reg, sender) : NULL;
	if (c)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "%s is registered already, as %s", sender,
					 db_bus_client_path(c, path, sizeof(path)));
	r = db_args_register(m, &info, error);
	if (r < 0)
		return r;
	/* Credentials come from the bus, never from arguments; learned before dispatch. */
	r = db_bus_creds_get(b->creds, sender, &uid, &pid);
	if (r < 0)
		return sd_bus_error_setf(error, DB_ERROR_FAILED, "the bus did not say who you are");
	r = db_registry_add_client(b->reg, sender, uid, pid, info.role, info.dynamic, info.name,
				   (const char *const *)info.devices, &c);
	if (r == -EDQUOT)
		return quota_error(b, error);
	if (r == -ENAMETOOLONG || r == -EINVAL)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "name is longer than MaxNameLength (%" PRIu64
					 ") or not printable ASCII",
					 db_registry_limits(b->reg)->max_name_length);
	if (r < 0)
		return r;
	c->compact_layouts = info.compact_layouts;
	log_debug("Registered %s as client %" PRIu64 " (uid %u, pid %d, %s, %s)", sender, c->id,
		  (unsigned)uid, (int)pid, info.role, info.dynamic ? "dynamic" : "static");
	return sd_bus_reply_method_return(m, "o", db_bus_client_path(c, path, sizeof(path)));
}

/*
 * A client that registered devices imports its buffers into them, and no device imports a
 * memfd: where the default backend is memfd (a kernel without udmabuf and dma-heaps, such as
 * Debian 12's 6.1), say so instead of handing out a buffer its devices will refuse. A client
 * that asks for backend memfd by name gets one.
 */
static int refuse_memfd_for_devices(const struct db_client *c, const struct db_backend *be,
				    sd_bus_error *error)
{
	if (be->is_dmabuf || !c->devices || !c->devices[0])
		return 0;
	return sd_bus_error_setf(error, DB_ERROR_UNSUPPORTED,
				 "the buffer would be a memfd, which %s cannot import: this kernel "
				 "has no dma-buf allocator (%s); ask for backend memfd for a "
				 "CPU-only buffer",
				 c->devices[0], db_backend_missing_reason());
}

/*
 * Picks the backend for a plan: the one asked for, else the configured or first available
 * default. Contiguous memory narrows the choice to a CMA heap or a hugetlb udmabuf; a default
 * udmabuf too small for the size (its size_limit_mb) gives way to the system heap.
 */
static int choose_backend(struct db_broker *b, const struct db_client *c,
			  const struct db_alloc_plan *plan, const struct db_backend **ret,
			  sd_bus_error *error)
{
	size_t udmabuf_limit = db_udmabuf_size_limit();
	const struct db_backend *be;
	int r;

	if (plan->backend) {
		be = db_backend_find(plan->backend);
		if (!be)
			return sd_bus_error_setf(
				error, DB_ERROR_INVALID_ARGUMENT,
				"backend '%s' is not one of udmabuf, dma-heap, memfd",
				plan->backend);
		if (!db_backend_available(be))
			return sd_bus_error_setf(error, DB_ERROR_NO_DEVICE,
						 "backend %s is not available on this machine",
						 be->name);
		if (be == &db_backend_udmabuf && udmabuf_limit && plan->size > udmabuf_limit)
			return sd_bus_error_setf(
				error, DB_ERROR_UNSUPPORTED,
				"udmabuf caps a buffer at %zu MiB (its size_limit_mb "
				"module parameter); %zu bytes need another backend",
				udmabuf_limit >> 20, plan->size);
	} else if (plan->contiguous) {
		/* A CMA heap first: it is not limited to one huge page. */
		be = db_backend_available(&db_backend_dma_heap) ? &db_backend_dma_heap
								: &db_backend_udmabuf;
	} else {
		be = b->config.default_backend[0] ? db_backend_find(b->config.default_backend)
						  : NULL;
		if (!be || !db_backend_available(be))
			be = db_backend_default();
		if (be == &db_backend_udmabuf && udmabuf_limit && plan->size > udmabuf_limit &&
		    db_backend_available(&db_backend_dma_heap))
			be = &db_backend_dma_heap;
		r = refuse_memfd_for_devices(c, be, error);
		if (r < 0)
			return r;
	}
	*ret = be;
	return 0;
}

static int allocate_one(struct db_broker *b, struct db_client *c, const struct db_alloc_plan *plan,
			const struct db_backend *be, struct db_buffer **ret, sd_bus_error *error)
{
	_cleanup_(closep) int fd = -1;
	size_t size;
	int r;

	r = be->allocate(plan->size, plan->contiguous, &fd);
	if (r == -EOPNOTSUPP && plan->contiguous && !plan->backend && be == &db_backend_dma_heap &&
	    db_backend_available(&db_backend_udmabuf)) {
		/* No CMA heap: one huge page of a hugetlb udmabuf is contiguous too. */
		be = &db_backend_udmabuf;
		r = be->allocate(plan->size, true, &fd);
	}
	if (r == -EOPNOTSUPP && plan->contiguous)
		return sd_bus_error_setf(error, DB_ERROR_UNSUPPORTED,
					 "no backend can allocate %zu physically contiguous bytes: "
					 "there is no CMA heap under " DB_DMA_HEAP_DIR
					 ", and a hugetlb udmabuf needs a size up to the huge page "
					 "size, free huge pages and a kernel with the vmap fix",
					 plan->size);
	if (r == -ENOMEM)
		return sd_bus_error_setf(error, DB_ERROR_NO_MEMORY,
					 "%s could not allocate %zu bytes", be->name, plan->size);
	if (r == -ENODEV || r == -ENOENT)
		return sd_bus_error_setf(error, DB_ERROR_NO_DEVICE, "%s: the device is gone",
					 be->name);
	if (r < 0)
		return sd_bus_error_setf(error, DB_ERROR_NO_DEVICE, "%s refused %zu bytes: %s",
					 be->name, plan->size, strerror(-r));
	/* A contiguous buffer may take a whole huge page: charge what it takes. */
	if (fd_get_size(fd, &size) < 0 || size < plan->size)
		size = plan->size;
	if (be->is_dmabuf)
		/* Best effort: a name only helps /proc and debugfs readers. */
		(void)db_dmabuf_set_name(fd, plan->name[0] ? plan->name : "dmabroker");
	r = db_registry_add_buffer(b->reg, c, fd, size, &plan->layout, be->name,
				   (be->is_dmabuf ? DB_BUFFER_DMABUF : 0) |
					   (plan->contiguous ? DB_BUFFER_CONTIGUOUS : 0),
				   plan->name, NULL, ret);
	if (r == -EDQUOT)
		return quota_error(b, error);
	if (r < 0)
		return r;
	fd = -1; /* the registry owns it now */
	return 0;
}

/* Answers an allocation: the buffer's path, its fd and layout. A reply that cannot be made
 * gives the buffer back. */
static int reply_allocated(struct db_broker *b, sd_bus_message *m, struct db_client *c,
			   struct db_buffer *buf, const struct db_alloc_plan *plan)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	char path[128];
	int r;

	r = sd_bus_message_new_method_return(m, &reply);
	if (r >= 0)
		r = sd_bus_message_append(reply, "oh", db_bus_buffer_path(buf, path, sizeof(path)),
					  buf->fd);
	if (r >= 0)
		r = db_bus_append_layout(reply, buf, c, plan);
	if (r < 0) {
		db_registry_detach(b->reg, c, buf);
		return r;
	}
	return sd_bus_send(NULL, reply, NULL);
}

/* The end of AllocateWithMemfd, once the buffer's fd (owned) exists. */
static int memfd_admitted(struct db_broker *b, sd_bus_message *m, struct db_client *c,
			  const struct db_alloc_plan *plan, int fd, sd_bus_error *error)
{
	const struct db_backend *be =
		fd_is_dmabuf(fd) == 1 ? &db_backend_udmabuf : &db_backend_memfd;
	struct db_buffer *buf;
	int r;

	if (be->is_dmabuf)
		(void)db_dmabuf_set_name(fd, plan->name[0] ? plan->name : "dmabroker");
	r = db_registry_add_buffer(b->reg, c, fd, plan->size, &plan->layout, be->name,
				   (be->is_dmabuf ? DB_BUFFER_DMABUF : 0) | DB_BUFFER_CLIENT_MEMORY,
				   plan->name, NULL, &buf);
	if (r == -EDQUOT)
		r = quota_error(b, error);
	if (r < 0) {
		close(fd);
		return r;
	}
	return reply_allocated(b, m, c, buf, plan);
}

/*
 * AllocateWithMemfd: the memory is the client's own memfd, whose pages were allocated (and
 * charged to the client's memory cgroup) by the client; the daemon turns it into a udmabuf,
 * or keeps it as the buffer where udmabuf is missing (memfd mode). So the client's
 * memory.max bounds what it holds, as it would with /dev/udmabuf of its own. What keeps the
 * charge on the client is client-memory.c's.
 */
static int method_allocate_with_memfd(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	const struct db_backend *be = db_backend_default();
	struct db_alloc_plan plan;
	struct db_client *c;
	int memfd, fd, r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = sd_bus_message_read_basic(m, 'h', &memfd);
	if (r < 0)
		return r;
	r = db_spec_parse_alloc(m, b->reg, &plan, error);
	if (r < 0)
		return r;
	if (plan.contiguous || (plan.backend && strcmp(plan.backend, be->name) != 0) ||
	    be == &db_backend_dma_heap)
		return sd_bus_error_setf(
			error, DB_ERROR_UNSUPPORTED,
			"%s: call Allocate for contiguous memory, a dma-heap, or "
			"a backend other than the default (%s)",
			plan.contiguous		     ? "contiguous memory cannot come from a memfd"
			: be == &db_backend_dma_heap ? "the default backend here is a dma-heap"
						     : "another backend was asked for",
			be->name);
	if (!plan.backend) {
		r = refuse_memfd_for_devices(c, be, error);
		if (r < 0)
			return r;
	}
	r = db_client_memfd_check(memfd, plan.size, error);
	if (r < 0)
		return r;
	if (db_registry_check_allocation(b->reg, c, plan.size, 1) < 0 ||
	    db_fdstore_reserve(b, 1) < 0)
		return quota_error(b, error);
	if (be == &db_backend_udmabuf)
		return db_client_udmabuf_admit(b, m, c, memfd, &plan, memfd_admitted, error);
	fd = fd_dup_cloexec(memfd);
	if (fd < 0)
		return fd;
	return memfd_admitted(b, m, c, &plan, fd, error);
}

static int method_allocate(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	const struct db_backend *be;
	struct db_alloc_plan plan;
	struct db_client *c;
	struct db_buffer *buf;
	int r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = db_spec_parse_alloc(m, b->reg, &plan, error);
	if (r < 0)
		return r;
	if (db_registry_check_allocation(b->reg, c, plan.size, 1) < 0 ||
	    db_fdstore_reserve(b, 1) < 0)
		return quota_error(b, error);
	r = choose_backend(b, c, &plan, &be, error);
	if (r < 0)
		return r;
	r = allocate_one(b, c, &plan, be, &buf, error);
	if (r < 0)
		return r;
	return reply_allocated(b, m, c, buf, &plan);
}

static int method_allocate_many(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	struct db_buffer *bufs[DB_ALLOCATE_MANY_MAX] = {0};
	const struct db_backend *be;
	struct db_alloc_plan plan;
	struct db_client *c;
	uint32_t count, n = 0;
	int r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = sd_bus_message_read_basic(m, 'u', &count);
	if (r < 0)
		return r;
	if (count == 0 || count > DB_ALLOCATE_MANY_MAX)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "count %u is not from 1 to %d (the bus carries at most "
					 "16 descriptors in one message)",
					 count, DB_ALLOCATE_MANY_MAX);
	r = db_spec_parse_alloc(m, b->reg, &plan, error);
	if (r < 0)
		return r;
	if (db_registry_check_allocation(b->reg, c, plan.size, count) < 0 ||
	    db_fdstore_reserve(b, count) < 0)
		return quota_error(b, error);
	r = choose_backend(b, c, &plan, &be, error);
	if (r < 0)
		return r;
	for (; n < count; n++) {
		r = allocate_one(b, c, &plan, be, &bufs[n], error);
		if (r < 0)
			goto undo;
	}
	r = sd_bus_message_new_method_return(m, &reply);
	if (r < 0)
		goto undo;
	r = db_bus_append_buffers(reply, bufs, n);
	if (r >= 0)
		r = db_bus_append_layout(reply, bufs[0], c, &plan);
	if (r < 0)
		goto undo;
	return sd_bus_send(NULL, reply, NULL);
undo:
	/* All or none: what was made goes again. */
	while (n-- > 0)
		db_registry_detach(b->reg, c, bufs[n]);
	return r;
}

/* Says what an fd is, for the error when it is not a dma-buf. */
static const char *describe_fd(int fd, char *buf, size_t len)
{
	char link[64];
	struct stat st;
	ssize_t n;

	if (fstat(fd, &st) < 0)
		return "not an open file";
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, buf, len - 1);
	buf[n > 0 ? n : 0] = '\0';
	if (S_ISFIFO(st.st_mode))
		return "a pipe";
	if (S_ISSOCK(st.st_mode))
		return "a socket";
	if (S_ISREG(st.st_mode))
		return g_str_has_prefix(buf, "/memfd:") ? "a memfd" : "a regular file";
	if (S_ISCHR(st.st_mode))
		return "a character device";
	if (S_ISDIR(st.st_mode))
		return "a directory";
	if (g_str_has_prefix(buf, "anon_inode:"))
		return buf + strlen("anon_inode:");
	return "not a dma-buf";
}

static int method_export(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	_cleanup_(closep) int fd = -1;
	struct db_layout layout;
	struct db_client *c;
	struct db_buffer *buf;
	const char *name;
	char what[128], path[128];
	size_t size;
	int borrowed, r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = sd_bus_message_read_basic(m, 'h', &borrowed);
	if (r < 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "fd: the message carries no valid descriptor");
	r = fd_is_dmabuf(borrowed);
	if (r <= 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "fd is not a dma-buf: it is %s",
					 describe_fd(borrowed, what, sizeof(what)));
	/* The message owns the received fd; keep our own. */
	fd = fd_dup_cloexec(borrowed);
	if (fd < 0)
		return fd;
	r = fd_get_size(fd, &size);
	if (r < 0 || size == 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "the dma-buf's size cannot be read");
	r = db_spec_parse_export(m, b->reg, size, &layout, &name, error);
	if (r < 0)
		return r;
	if (db_fdstore_reserve(b, 1) < 0)
		return quota_error(b, error);
	if (name[0])
		(void)db_dmabuf_set_name(fd, name);
	r = db_registry_add_buffer(b->reg, c, fd, size, &layout, "export", DB_BUFFER_DMABUF, name,
				   c, &buf);
	if (r == -EDQUOT)
		return quota_error(b, error);
	if (r < 0)
		return r;
	fd = -1;
	return sd_bus_reply_method_return(m, "o", db_bus_buffer_path(buf, path, sizeof(path)));
}

static int method_share(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	struct db_share_opts opts;
	struct db_client *c;
	struct db_buffer *buf;
	struct db_token *t;
	uint64_t now = now_usec();
	int r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = read_buffer(b, m, c, ACCESS_HOLDER, &buf, error);
	if (r < 0)
		return r;
	r = db_spec_parse_share(m, now, &opts, error);
	if (r < 0)
		return r;
	r = db_registry_share(b->reg, c, buf, opts.single_use, opts.expires_usec, opts.uid_bound,
			      opts.uid, now, &t);
	if (r == -EDQUOT)
		return quota_error(b, error);
	if (r < 0)
		return r;
	r = sd_bus_message_new_method_return(m, &reply);
	if (r >= 0)
		r = sd_bus_message_append_array(reply, 'y', t->bytes.b, sizeof(t->bytes.b));
	if (r < 0)
		return r;
	return sd_bus_send(NULL, reply, NULL);
}

static int method_import(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	struct db_token_bytes token;
	struct db_attachment *a;
	struct db_client *c;
	char path[128];
	int r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = db_bus_read_token(m, &token, error);
	if (r < 0)
		return r;
	r = db_registry_redeem(b->reg, c, &token, now_usec(), &a);
	if (r == -ENOENT)
		return sd_bus_error_setf(error, DB_ERROR_NOT_FOUND,
					 "no such token: it was never issued, was used, expired, "
					 "or its issuer or buffer is gone");
	if (r == -EACCES)
		return sd_bus_error_setf(error, DB_ERROR_PERMISSION_DENIED,
					 "the token is bound to another uid");
	if (r == -EDQUOT)
		return quota_error(b, error);
	if (r < 0)
		return r;
	r = sd_bus_message_new_method_return(m, &reply);
	if (r >= 0)
		r = sd_bus_message_append(reply, "ohs",
					  db_bus_buffer_path(a->buffer, path, sizeof(path)),
					  a->buffer->fd, db_attach_path_name(a->path));
	if (r >= 0)
		r = db_bus_append_layout(reply, a->buffer, c, NULL);
	if (r < 0)
		return r;
	return sd_bus_send(NULL, reply, NULL);
}

static int method_release(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	struct db_client *c;
	struct db_buffer *buf;
	int r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = read_buffer(b, m, c, ACCESS_HOLDER, &buf, error);
	if (r < 0)
		return r;
	db_registry_detach(b->reg, c, buf);
	return sd_bus_reply_method_return(m, NULL);
}

static int method_reacquire(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	struct db_client *c;
	struct db_buffer *buf;
	int r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = read_buffer(b, m, c, ACCESS_HOLDER, &buf, error);
	if (r < 0)
		return r;
	r = sd_bus_message_new_method_return(m, &reply);
	if (r >= 0)
		r = sd_bus_message_append(reply, "h", buf->fd);
	if (r >= 0)
		r = db_bus_append_layout(reply, buf, c, NULL);
	if (r < 0)
		return r;
	/* Settle after the reply holds its own copy of the fd. */
	db_registry_reacquire(b->reg, c, buf);
	return sd_bus_send(NULL, reply, NULL);
}

/* A signal for one client: on its peer connection if it has one, else unicast on the bus. */
int db_bus_new_client_signal(struct db_broker *b, struct db_client *c, const char *member,
			     sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *s = NULL;
	struct db_peer *peer = c->bus_data;
	int r;

	r = sd_bus_message_new_signal(peer ? db_peer_get_bus(peer) : b->bus, &s, DB_OBJECT_PATH,
				      DB_IFACE_BROKER, member);
	if (r < 0)
		return r;
	if (!peer) {
		r = sd_bus_message_set_destination(s, c->bus_name);
		if (r < 0)
			return r;
	}
	*ret = take_ptr(s);
	return 0;
}

int db_bus_send_to_client(struct db_broker *b, struct db_client *c, sd_bus_message *s)
{
	struct db_peer *peer = c->bus_data;

	/* Never waits for the client: a peer that reads nothing is cut off, and the bus
	 * daemon applies its own limits to a client on the bus. */
	return peer ? db_peer_send(peer, s) : sd_bus_send(b->bus, s, NULL);
}

/* Sends a signal to one client: over its peer connection if it has one, else unicast. */
int db_bus_emit_to_client(struct db_broker *b, struct db_client *c, const char *member,
			  const char *buffer_path, const char *reason)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *s = NULL;
	int r;

	r = db_bus_new_client_signal(b, c, member, &s);
	if (r < 0)
		return r;
	r = reason ? sd_bus_message_append(s, "os", buffer_path, reason)
		   : sd_bus_message_append(s, "o", buffer_path);
	if (r < 0)
		return r;
	return db_bus_send_to_client(b, c, s);
}

static int method_move(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	struct db_client *c;
	struct db_buffer *buf;
	int r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = read_buffer(b, m, c, ACCESS_OWNER, &buf, error);
	if (r < 0)
		return r;
	/* The new backing takes a second entry in the fd store until the move settles. */
	if (db_fdstore_reserve(b, 1) < 0)
		return quota_error(b, error);
	return db_move_start(b, m, buf, error);
}

static int method_revoke(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	g_autoptr(GArray) holders = g_array_new(FALSE, FALSE, sizeof(uint64_t));
	struct db_client *c;
	struct db_buffer *buf;
	const char *reason;
	char path[128];
	int r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = read_buffer(b, m, c, ACCESS_OWNER, &buf, error);
	if (r < 0)
		return r;
	/* It reaches the holders and the daemon's log. */
	r = db_bus_read_text(m, "reason", 256, 0, &reason, error);
	if (r < 0)
		return r;
	db_bus_buffer_path(buf, path, sizeof(path));
	for (guint i = 0; i < buf->attachments->len; i++) {
		struct db_attachment *a = g_ptr_array_index(buf->attachments, i);

		g_array_append_val(holders, a->client->id);
	}
	log_info("Revoking buffer %s (%u holder(s)): %s", path, holders->len, reason);
	db_monitor_revoked(b, buf, reason);
	db_registry_revoke(b->reg, buf);
	for (guint i = 0; i < holders->len; i++) {
		struct db_client *h =
			db_registry_find_client(b->reg, g_array_index(holders, uint64_t, i));

		if (h)
			db_bus_emit_to_client(b, h, "Revoked", path, reason);
	}
	return sd_bus_reply_method_return(m, NULL);
}

static int method_subscribe(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	return db_monitor_subscribe(userdata, m, error);
}

static int method_unsubscribe(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	return db_monitor_unsubscribe(userdata, m, error);
}

static int method_acknowledge_events(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	return db_monitor_acknowledge(userdata, m, error);
}

static int method_open_peer(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	_cleanup_(closep) int theirs = -1;
	struct db_client *c;
	int r;

	if (db_peer_of_message(b, m))
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "this is a peer connection already");
	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = db_peer_open(b, c, &theirs);
	if (r == -EBUSY)
		return sd_bus_error_setf(error, DB_ERROR_BUSY,
					 "the client has a peer connection already");
	if (r < 0)
		return r;
	return sd_bus_reply_method_return(m, "h", theirs);
}

/*
 * One path from any failure to a contract error: a handler that set a named error keeps it;
 * one that returned a bare errno (a failed read of its arguments, a syscall) gets the name
 * that errno maps to and a message naming the call, never a System.Error.* name.
 */
static int reply_failure(sd_bus_message *m, int r, sd_bus_error *error)
{
	if (r >= 0 ||
	    (sd_bus_error_is_set(error) && strncmp(error->name, "org.dmabroker.Error.", 20) == 0))
		return r;
	sd_bus_error_free(error);
	return sd_bus_error_setf(error, db_error_name_for_errno(r), "%s failed: %s",
				 sd_bus_message_get_member(m), strerror(-r));
}

#define DB_CHECKED_METHOD(fn)                                                           \
	static int fn##_checked(sd_bus_message *m, void *userdata, sd_bus_error *error) \
	{                                                                               \
		return reply_failure(m, fn(m, userdata, error), error);                 \
	}

DB_CHECKED_METHOD(method_register)
DB_CHECKED_METHOD(method_allocate)
DB_CHECKED_METHOD(method_allocate_with_memfd)
DB_CHECKED_METHOD(method_allocate_many)
DB_CHECKED_METHOD(method_export)
DB_CHECKED_METHOD(method_share)
DB_CHECKED_METHOD(method_import)
DB_CHECKED_METHOD(method_release)
DB_CHECKED_METHOD(method_reacquire)
DB_CHECKED_METHOD(method_move)
DB_CHECKED_METHOD(method_revoke)
DB_CHECKED_METHOD(method_open_peer)
DB_CHECKED_METHOD(method_subscribe)
DB_CHECKED_METHOD(method_unsubscribe)
DB_CHECKED_METHOD(method_acknowledge_events)
DB_CHECKED_METHOD(db_collection_method_create)
DB_CHECKED_METHOD(db_collection_method_token)
DB_CHECKED_METHOD(db_collection_method_join)
DB_CHECKED_METHOD(db_collection_method_set_constraints)
DB_CHECKED_METHOD(db_collection_method_commit)
DB_CHECKED_METHOD(db_collection_method_wait)
DB_CHECKED_METHOD(db_collection_method_get_buffers)
DB_CHECKED_METHOD(db_collection_method_leave)
DB_CHECKED_METHOD(db_collection_method_list)
DB_CHECKED_METHOD(db_stream_method_create)
DB_CHECKED_METHOD(db_stream_method_token)
DB_CHECKED_METHOD(db_stream_method_join)
DB_CHECKED_METHOD(db_stream_method_join_with_token)
DB_CHECKED_METHOD(db_stream_method_leave)
DB_CHECKED_METHOD(db_stream_method_end)
DB_CHECKED_METHOD(db_stream_method_end_link)
DB_CHECKED_METHOD(db_stream_method_take_link)
DB_CHECKED_METHOD(db_stream_method_list)

/* --- properties --- */

static int prop_version(sd_bus *bus, const char *path, const char *interface, const char *property,
			sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
	return sd_bus_message_append(reply, "s", DMABROKER_VERSION);
}

static int prop_backends(sd_bus *bus, const char *path, const char *interface, const char *property,
			 sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	const struct db_backend *def =
		b->config.default_backend[0] ? db_backend_find(b->config.default_backend) : NULL;
	int r;

	if (!def || !db_backend_available(def))
		def = db_backend_default();
	r = sd_bus_message_open_container(reply, 'a', "s");
	if (r >= 0)
		r = sd_bus_message_append_basic(reply, 's', def->name);
	for (size_t i = 0; r >= 0 && db_backends[i]; i++)
		if (db_backends[i] != def && db_backend_available(db_backends[i]))
			r = sd_bus_message_append_basic(reply, 's', db_backends[i]->name);
	if (r < 0)
		return r;
	return sd_bus_message_close_container(reply);
}

static int prop_devices(sd_bus *bus, const char *path, const char *interface, const char *property,
			sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	GPtrArray *list = b->devices ? db_devices_list(b->devices) : NULL;
	int r;

	r = sd_bus_message_open_container(reply, 'a', "(ssss)");
	for (guint i = 0; r >= 0 && list && i < list->len; i++) {
		const struct db_device *d = g_ptr_array_index(list, i);

		r = sd_bus_message_append(reply, "(ssss)", d->subsystem, d->devnode, d->driver,
					  d->import_mode);
	}
	if (r < 0)
		return r;
	return sd_bus_message_close_container(reply);
}

static int prop_counts(sd_bus *bus, const char *path, const char *interface, const char *property,
		       sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;

	if (strcmp(property, "NClients") == 0)
		return sd_bus_message_append(reply, "u", db_registry_n_clients(b->reg));
	if (strcmp(property, "NBuffers") == 0)
		return sd_bus_message_append(reply, "u", db_registry_n_buffers(b->reg));
	return sd_bus_message_append(reply, "t", db_registry_bytes_in_use(b->reg));
}

static int prop_limits(sd_bus *bus, const char *path, const char *interface, const char *property,
		       sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	int r;

	r = sd_bus_message_open_container(reply, 'a', "{st}");
	for (size_t i = 0; r >= 0 && i < db_config_limit_count(); i++)
		r = sd_bus_message_append(reply, "{st}", db_config_limit_name(i),
					  db_config_limit_value(db_registry_limits(b->reg), i));
	if (r < 0)
		return r;
	return sd_bus_message_close_container(reply);
}

static int prop_kernel_report(sd_bus *bus, const char *path, const char *interface,
			      const char *property, sd_bus_message *reply, void *userdata,
			      sd_bus_error *error)
{
	struct db_broker *b = userdata;

	return sd_bus_message_append(reply, "s", b->kernel_report);
}

static const sd_bus_vtable broker_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_METHOD_WITH_ARGS("Register", SD_BUS_ARGS("a{sv}", info), SD_BUS_RESULT("o", client),
				method_register_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("Allocate", SD_BUS_ARGS("a{sv}", spec),
				SD_BUS_RESULT("o", buffer, "h", fd, "a{sv}", layout),
				method_allocate_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("AllocateWithMemfd", SD_BUS_ARGS("h", memfd, "a{sv}", spec),
				SD_BUS_RESULT("o", buffer, "h", fd, "a{sv}", layout),
				method_allocate_with_memfd_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("AllocateMany", SD_BUS_ARGS("u", count, "a{sv}", spec),
				SD_BUS_RESULT("ao", buffers, "ah", fds, "a{sv}", layout),
				method_allocate_many_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("Export", SD_BUS_ARGS("h", fd, "a{sv}", info),
				SD_BUS_RESULT("o", buffer), method_export_checked,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("Share", SD_BUS_ARGS("o", buffer, "a{sv}", options),
				SD_BUS_RESULT("ay", token), method_share_checked,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("Import", SD_BUS_ARGS("ay", token),
				SD_BUS_RESULT("o", buffer, "h", fd, "s", path, "a{sv}", layout),
				method_import_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("Release", SD_BUS_ARGS("o", buffer), SD_BUS_NO_RESULT,
				method_release_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("Reacquire", SD_BUS_ARGS("o", buffer),
				SD_BUS_RESULT("h", fd, "a{sv}", layout), method_reacquire_checked,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("Move", SD_BUS_ARGS("o", buffer), SD_BUS_NO_RESULT,
				method_move_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("Revoke", SD_BUS_ARGS("o", buffer, "s", reason), SD_BUS_NO_RESULT,
				method_revoke_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("OpenPeer", SD_BUS_NO_ARGS, SD_BUS_RESULT("h", socket),
				method_open_peer_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("Subscribe", SD_BUS_ARGS("a{sv}", options), SD_BUS_NO_RESULT,
				method_subscribe_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("Unsubscribe", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT,
				method_unsubscribe_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("AcknowledgeEvents", SD_BUS_ARGS("t", seq), SD_BUS_NO_RESULT,
				method_acknowledge_events_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("CreateCollection", SD_BUS_ARGS("a{sv}", options),
				SD_BUS_RESULT("o", collection), db_collection_method_create_checked,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("CreateCollectionToken", SD_BUS_ARGS("o", collection),
				SD_BUS_RESULT("ay", token), db_collection_method_token_checked,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("JoinCollection", SD_BUS_ARGS("ay", token),
				SD_BUS_RESULT("o", collection), db_collection_method_join_checked,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("SetCollectionConstraints",
				SD_BUS_ARGS("o", collection, "a{sv}", constraints),
				SD_BUS_NO_RESULT, db_collection_method_set_constraints_checked,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("CommitCollection", SD_BUS_ARGS("o", collection), SD_BUS_NO_RESULT,
				db_collection_method_commit_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("WaitCollection", SD_BUS_ARGS("o", collection),
				SD_BUS_RESULT("a{sv}", outcome, "a{sv}", layout),
				db_collection_method_wait_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS(
		"GetCollectionBuffers", SD_BUS_ARGS("o", collection, "u", first, "u", count),
		SD_BUS_RESULT("ao", buffers, "ah", fds), db_collection_method_get_buffers_checked,
		SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("LeaveCollection", SD_BUS_ARGS("o", collection), SD_BUS_NO_RESULT,
				db_collection_method_leave_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("ListCollections", SD_BUS_NO_ARGS,
				SD_BUS_RESULT("aa{sv}", collections),
				db_collection_method_list_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("CreateStream", SD_BUS_ARGS("o", collection, "a{sv}", options),
				SD_BUS_RESULT("o", stream), db_stream_method_create_checked,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("CreateStreamToken", SD_BUS_ARGS("o", stream),
				SD_BUS_RESULT("ay", token), db_stream_method_token_checked,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("JoinStream", SD_BUS_ARGS("s", name, "a{sv}", options),
				SD_BUS_RESULT("o", stream, "o", collection, "u", consumer, "a{sv}",
					      format, "h", link),
				db_stream_method_join_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("JoinStreamWithToken", SD_BUS_ARGS("ay", token, "a{sv}", options),
				SD_BUS_RESULT("o", stream, "o", collection, "u", consumer, "a{sv}",
					      format, "h", link),
				db_stream_method_join_with_token_checked,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("LeaveStream", SD_BUS_ARGS("o", stream), SD_BUS_NO_RESULT,
				db_stream_method_leave_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("EndStream", SD_BUS_ARGS("o", stream, "s", reason),
				SD_BUS_NO_RESULT, db_stream_method_end_checked,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS(
		"EndStreamLink", SD_BUS_ARGS("o", stream, "u", consumer, "s", reason),
		SD_BUS_NO_RESULT, db_stream_method_end_link_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("TakeStreamLink", SD_BUS_ARGS("o", stream, "u", consumer),
				SD_BUS_RESULT("h", link), db_stream_method_take_link_checked,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("ListStreams", SD_BUS_NO_ARGS, SD_BUS_RESULT("aa{sv}", streams),
				db_stream_method_list_checked, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_SIGNAL_WITH_ARGS("Moved", SD_BUS_ARGS("o", buffer), 0),
	SD_BUS_SIGNAL_WITH_ARGS("Event", SD_BUS_ARGS("s", kind, "o", object, "a{sv}", details), 0),
	SD_BUS_SIGNAL_WITH_ARGS("Revoked", SD_BUS_ARGS("o", buffer, "s", reason), 0),
	SD_BUS_SIGNAL_WITH_ARGS("StreamLink",
				SD_BUS_ARGS("o", stream, "u", consumer, "a{sv}", info), 0),
	SD_BUS_SIGNAL_WITH_ARGS("StreamLinkEnded",
				SD_BUS_ARGS("o", stream, "u", consumer, "s", reason), 0),
	SD_BUS_SIGNAL_WITH_ARGS("StreamEnded", SD_BUS_ARGS("o", stream, "s", reason), 0),
	SD_BUS_PROPERTY("Version", "s", prop_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Backends", "as", prop_backends, 0, 0),
	SD_BUS_PROPERTY("Devices", "a(ssss)", prop_devices, 0, 0),
	SD_BUS_PROPERTY("NClients", "u", prop_counts, 0, 0),
	SD_BUS_PROPERTY("NBuffers", "u", prop_counts, 0, 0),
	SD_BUS_PROPERTY("BytesInUse", "t", prop_counts, 0, 0),
	SD_BUS_PROPERTY("Limits", "a{st}", prop_limits, 0, 0),
	SD_BUS_PROPERTY("KernelAttachmentReport", "s", prop_kernel_report, 0, 0),
	SD_BUS_VTABLE_END,
};

int db_broker_add_objects(struct db_broker *b, sd_bus *bus)
{
	int r;

	r = sd_bus_add_object_vtable(bus, NULL, DB_OBJECT_PATH, DB_IFACE_BROKER, broker_vtable, b);
	if (r < 0)
		return r;
	r = db_bus_add_inspection_objects(b, bus);
	if (r < 0)
		return r;
	return sd_bus_add_object_manager(bus, NULL, DB_OBJECT_PATH);
}
