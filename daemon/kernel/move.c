// SPDX-License-Identifier: MIT
#include "move.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "backend.h"
#include "broker.h"
#include "errors.h"
#include "fd-util.h"
#include "fdstore.h"
#include "log.h"
#include "macros.h"
#include "object-path.h"
#include "protocol.h"

struct db_move {
	struct db_broker *broker;
	uint64_t buffer_id; /* ids are never reused: a freed buffer is just not found */
	sd_bus_message *call; /* the Move call, answered when the copy is done */
	/* The copy, on the worker thread: it owns src_fd (the old backing, dup'd so that a
	 * release on the main loop cannot close it under the copy) until it is joined. */
	const struct db_backend *backend;
	size_t size;
	bool contiguous;
	int src_fd;
	int new_fd; /* the result: owned by the move until handed to the registry */
	int result;
	pthread_t thread;
	bool thread_running;
	int done_fd; /* eventfd the thread signals, owned */
	sd_event_source *done_source;
	sd_event_source *deadline; /* while holders reacquire */
};

static void move_free(struct db_move *mv)
{
	if (mv->thread_running) {
		pthread_join(mv->thread, NULL);
		mv->broker->n_moves_running--;
	}
	sd_event_source_disable_unref(mv->done_source);
	sd_event_source_disable_unref(mv->deadline);
	sd_bus_message_unref(mv->call);
	if (mv->src_fd >= 0)
		close(mv->src_fd);
	if (mv->new_fd >= 0)
		close(mv->new_fd);
	if (mv->done_fd >= 0)
		close(mv->done_fd);
	g_free(mv);
}

static void move_remove(struct db_move *mv)
{
	g_hash_table_remove(mv->broker->moves, &mv->buffer_id);
	move_free(mv);
}

static void *copy_thread(void *userdata)
{
	struct db_move *mv = userdata;
	int fd = -1, r;

	r = mv->backend->allocate(mv->size, mv->contiguous, &fd);
	if (r >= 0) {
		r = db_buffer_copy(fd, mv->src_fd, mv->size);
		if (r < 0) {
			close(fd);
			fd = -1;
		}
	}
	mv->new_fd = fd;
	mv->result = r;
	/* The main loop reads the result only after this. */
	eventfd_write(mv->done_fd, 1);
	return NULL;
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct db_move *mv = userdata;
	struct db_broker *b = mv->broker;
	struct db_buffer *buf = db_registry_find_buffer(b->reg, mv->buffer_id);

	(void)s;
	(void)usec;
	if (buf && buf->old_fd >= 0) {
		log_info("Buffer %" PRIu64 ": %u holder(s) did not reacquire in time; dropping "
			 "the old backing",
			 mv->buffer_id, buf->n_pending_reacquire);
		db_registry_finish_move(b->reg, buf);
	}
	move_remove(mv);
	return 0;
}

static int arm_deadline(struct db_move *mv)
{
	struct db_broker *b = mv->broker;

	return sd_event_add_time_relative(b->event, &mv->deadline, CLOCK_MONOTONIC,
					  (uint64_t)b->config.move_deadline_ms * 1000, 0,
					  on_deadline, mv);
}

static void reply_error(struct db_move *mv, const char *name, const char *fmt, ...) _printf_(3, 4);

static void reply_error(struct db_move *mv, const char *name, const char *fmt, ...)
{
	_cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
	va_list ap;

	va_start(ap, fmt);
	sd_bus_error_setfv(&error, name, fmt, ap);
	va_end(ap);
	/* The caller may be gone: then there is nobody to tell. */
	(void)sd_bus_reply_method_error(mv->call, &error);
}

/* Sends Moved to every holder: each must call Reacquire. */
static void notify_holders(struct db_broker *b, struct db_buffer *buf)
{
	g_autoptr(GArray) holders = g_array_new(FALSE, FALSE, sizeof(uint64_t));
	char path[128];

	db_bus_buffer_path(buf, path, sizeof(path));
	/* By id: a holder whose peer is cut off for not reading may be dropped meanwhile. */
	for (guint i = 0; i < buf->attachments->len; i++) {
		struct db_attachment *a = g_ptr_array_index(buf->attachments, i);

		g_array_append_val(holders, a->client->id);
	}
	for (guint i = 0; i < holders->len; i++) {
		struct db_client *c =
			db_registry_find_client(b->reg, g_array_index(holders, uint64_t, i));

		if (c)
			b->hooks.emit_to_client(b, c, "Moved", path, NULL);
	}
}

static int on_copy_done(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct db_move *mv = userdata;
	struct db_broker *b = mv->broker;
	struct db_buffer *buf = db_registry_find_buffer(b->reg, mv->buffer_id);
	eventfd_t v;
	int r;

	(void)s;
	(void)revents;
	(void)eventfd_read(fd, &v);
	pthread_join(mv->thread, NULL);
	mv->thread_running = false;
	b->n_moves_running--;
	mv->done_source = sd_event_source_disable_unref(mv->done_source);
	close(mv->done_fd);
	mv->done_fd = -1;
	close(mv->src_fd);
	mv->src_fd = -1;

	if (!buf || buf->lingering) {
		/* A lingering buffer stays charged for its one backing, not for the new one. */
		if (buf)
			db_registry_cancel_move(b->reg, buf);
		reply_error(mv, DB_ERROR_NOT_FOUND,
			    "buffer %" PRIu64 " was released during the move", mv->buffer_id);
		move_remove(mv);
		return 0;
	}
	if (mv->result < 0) {
		db_registry_cancel_move(b->reg, buf);
		reply_error(mv,
			    mv->result == -EOPNOTSUPP ? DB_ERROR_UNSUPPORTED : DB_ERROR_NO_MEMORY,
			    "%s could not make the new backing: %s", mv->backend->name,
			    strerror(-mv->result));
		move_remove(mv);
		return 0;
	}
	if (mv->backend->is_dmabuf)
		(void)db_dmabuf_set_name(mv->new_fd, buf->name[0] ? buf->name : "dmabroker");
	r = db_registry_begin_move(b->reg, buf, mv->new_fd);
	if (r < 0) {
		reply_error(mv, DB_ERROR_BUSY,
			    "a cached attachment pinned the buffer while it was being moved");
		move_remove(mv);
		return 0;
	}
	mv->new_fd = -1; /* the registry owns it now (its observer stores the fd) */
	r = arm_deadline(mv);
	if (r < 0) {
		/* Without a deadline nobody would ever free the old backing: free it now. */
		log_warning("Failed to arm the move deadline: %s", strerror(-r));
		db_registry_finish_move(b->reg, buf);
	}
	/* The caller may be gone: then there is nobody to tell. */
	(void)sd_bus_reply_method_return(mv->call, NULL);
	mv->call = sd_bus_message_unref(mv->call);
	notify_holders(b, buf);
	if (r < 0)
		move_remove(mv);
	return 0;
}

int db_move_start(struct db_broker *b, sd_bus_message *m, struct db_buffer *buf,
		  sd_bus_error *error)
{
	const struct db_backend *be = db_backend_find(buf->backend);
	struct db_move *mv, *stale;
	int r;

	if (buf->exporter_client_id)
		return sd_bus_error_setf(error, DB_ERROR_UNSUPPORTED,
					 "an exported buffer's memory belongs to its exporter");

	if (db_buffer_is_pinned(buf))
		return sd_bus_error_setf(error, DB_ERROR_BUSY,
					 "the buffer is pinned by %u cached attachment(s)",
					 buf->n_cached);
	if (buf->moving || buf->old_fd >= 0)
		return sd_bus_error_setf(error, DB_ERROR_BUSY,
					 "a move is under way or waiting for %u holder(s) to "
					 "reacquire",
					 buf->n_pending_reacquire);
	if (!be || !db_backend_available(be))
		return sd_bus_error_setf(error, DB_ERROR_NO_DEVICE, "backend %s is gone",
					 buf->backend);
	if (b->n_moves_running >= DB_MOVES_MAX_RUNNING)
		return sd_bus_error_setf(error, DB_ERROR_BUSY,
					 "%d moves are being copied already; try again",
					 DB_MOVES_MAX_RUNNING);
	r = db_registry_reserve_move(b->reg, buf);
	if (r == -EDQUOT) {
		uint64_t value;
		const char *limit = db_registry_exceeded(b->reg, &value);

		return sd_bus_error_setf(error, DB_ERROR_QUOTA_EXCEEDED,
					 "a move needs a second backing of %zu bytes for a while: "
					 "%s (%" PRIu64 ") would be exceeded",
					 buf->size, limit, value);
	}
	if (r < 0)
		return sd_bus_error_setf(error, DB_ERROR_BUSY, "the buffer cannot move now");

	/* An earlier move of this buffer that settled before its deadline. */
	stale = g_hash_table_lookup(b->moves, &buf->id);
	if (stale)
		move_remove(stale);

	mv = g_new0(struct db_move, 1);
	mv->broker = b;
	mv->buffer_id = buf->id;
	mv->backend = be;
	mv->size = buf->size;
	mv->contiguous = buf->contiguous;
	mv->new_fd = -1;
	mv->src_fd = fd_dup_cloexec(buf->fd);
	mv->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (mv->src_fd < 0 || mv->done_fd < 0) {
		r = -errno;
		goto fail;
	}
	r = sd_event_add_io(b->event, &mv->done_source, mv->done_fd, EPOLLIN, on_copy_done, mv);
	if (r < 0)
		goto fail;
	r = -pthread_create(&mv->thread, NULL, copy_thread, mv);
	if (r < 0)
		goto fail;
	mv->thread_running = true;
	mv->call = sd_bus_message_ref(m);
	g_hash_table_insert(b->moves, &mv->buffer_id, mv);
	b->n_moves_running++;
	return 1; /* answered when the copy is done */
fail:
	db_registry_cancel_move(b->reg, buf);
	move_free(mv);
	return r;
}

int db_move_arm_deadline(struct db_broker *b, struct db_buffer *buf)
{
	struct db_move *mv;
	int r;

	if (buf->old_fd < 0 || g_hash_table_contains(b->moves, &buf->id))
		return 0;
	mv = g_new0(struct db_move, 1);
	mv->broker = b;
	mv->buffer_id = buf->id;
	mv->src_fd = mv->new_fd = mv->done_fd = -1;
	r = arm_deadline(mv);
	if (r < 0) {
		move_free(mv);
		return r;
	}
	g_hash_table_insert(b->moves, &mv->buffer_id, mv);
	return 0;
}

void db_moves_free(struct db_broker *b)
{
	GHashTableIter it;
	gpointer value;

	if (!b->moves)
		return;
	g_hash_table_iter_init(&it, b->moves);
	while (g_hash_table_iter_next(&it, NULL, &value)) {
		g_hash_table_iter_steal(&it);
		move_free(value);
	}
	g_hash_table_unref(b->moves);
	b->moves = NULL;
}
