// SPDX-License-Identifier: MIT
#include "fdstore.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "journal.h"
#include "log.h"
#include "macros.h"

struct db_fdstore {
	struct db_journal *journal;
	unsigned n_fds; /* entries the store holds for us: the journal, backings */
	unsigned env_max; /* systemd's $FDSTORE (FileDescriptorStoreMax=, v254+), or 0 */
	sd_event_source *compaction; /* a compaction waiting for the loop to be idle */
	bool failed_logged;
};

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void journal_fdname(uint64_t generation, char *out, size_t len)
{
	snprintf(out, len, DB_JOURNAL_FDNAME_PREFIX "%" PRIu64, generation);
}

/*
 * One datagram socket toward $NOTIFY_SOCKET for the daemon's life. sd_notify() opens, sizes
 * and closes a socket for every message (eleven syscalls), and the store takes one message
 * per buffer made or freed: on the allocation path that is most of the store's cost.
 */
static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_addr_len;

static int notify_open(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	size_t len;

	if (notify_fd >= 0)
		return 0;
	if (!path || (path[0] != '/' && path[0] != '@'))
		return -ENOTCONN;
	len = strlen(path);
	if (len >= sizeof(notify_addr.sun_path))
		return -EINVAL;
	notify_addr.sun_family = AF_UNIX;
	memcpy(notify_addr.sun_path, path, len);
	if (path[0] == '@')
		notify_addr.sun_path[0] = '\0'; /* abstract */
	notify_addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
				      (path[0] == '/' ? 1 : 0));
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	return notify_fd < 0 ? -errno : 0;
}

/* Sends msg (with fd, if not -1) to the service manager: one sendmsg(). */
static int notify_send(const char *msg, int fd)
{
	union {
		struct cmsghdr cmsg;
		uint8_t buf[CMSG_SPACE(sizeof(int))];
	} control = {0};
	struct iovec iov = {.iov_base = (void *)msg, .iov_len = strlen(msg)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	int r = notify_open();

	if (r < 0)
		return r;
	mh.msg_name = &notify_addr;
	mh.msg_namelen = notify_addr_len;
	if (fd >= 0) {
		struct cmsghdr *c;

		mh.msg_control = &control;
		mh.msg_controllen = sizeof(control.buf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	/* The manager's socket passes our credentials itself (SO_PASSCRED). */
	return sendmsg(notify_fd, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

static void store_remove(const char *name)
{
	char msg[128];

	snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
	(void)notify_send(msg, -1);
}

/* 0 when the notification left; -ENOTCONN when there is nobody to send it to. */
static int store_add(int fd, const char *name)
{
	char msg[128];

	snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
	return notify_send(msg, fd);
}

static void store_add_logged(struct db_fdstore *s, int fd, const char *name)
{
	int r = store_add(fd, name);

	if (r < 0 && !s->failed_logged) {
		log_warning("Failed to keep %s in the fd store: %s", name, strerror(-r));
		s->failed_logged = true;
	}
}

static void buffer_fdname(const struct db_buffer *buf, uint32_t n_moves, char *out, size_t len)
{
	db_journal_buffer_fdname(buf->id, n_moves, out, len);
}

/* The streams a snapshot holds, from the bus layer that keeps them; NULL without one. */
static const struct db_journal_streams *snapshot_streams(struct db_broker *b,
							 struct db_journal_streams *out)
{
	*out = (struct db_journal_streams){0};
	if (!b->hooks.journal_streams)
		return NULL;
	b->hooks.journal_streams(b, out);
	return out;
}

/*
 * Writes a new journal from the live registry, stores it, and only then removes the old one.
 * Killed before the new one is stored: the old one is whole. Killed after: the next start
 * finds both and takes the higher generation (its snapshot is whole: it was written first).
 */
static int compact(struct db_broker *b)
{
	struct db_fdstore *s = b->fdstore_state;
	struct db_journal_streams streams;
	struct db_journal *j;
	char name[64];
	int r;

	r = db_journal_new(b->reg, snapshot_streams(b, &streams), s->journal->generation + 1,
			   now_usec(), &j);
	if (r < 0)
		return r;
	journal_fdname(j->generation, name, sizeof(name));
	r = store_add(j->fd, name);
	if (r < 0) {
		db_journal_free(j);
		return r;
	}
	journal_fdname(s->journal->generation, name, sizeof(name));
	store_remove(name);
	log_debug("Compacted the journal: %" PRIu64 " bytes to %" PRIu64 " (generation %" PRIu64
		  ")",
		  s->journal->size, j->size, j->generation);
	db_journal_free(s->journal);
	s->journal = j;
	return 0;
}

static int on_compaction(sd_event_source *source, void *userdata)
{
	struct db_broker *b = userdata;
	struct db_fdstore *s = b->fdstore_state;
	int r;

	s->compaction = sd_event_source_disable_unref(source);
	if (!s->journal)
		return 0;
	r = compact(b);
	if (r < 0) {
		log_warning("Failed to compact the journal, keeping the old one: %s", strerror(-r));
		/* Not again at every change: the next try comes after as much again. */
		s->journal->snapshot_size = s->journal->size;
		s->journal->last_error = 0;
	}
	return 0;
}

/* Compaction waits for the loop: mid-call the registry may be between two changes of one
 * operation (a client leaving drops its attachments one by one). */
static void schedule_compaction(struct db_broker *b)
{
	struct db_fdstore *s = b->fdstore_state;

	if (s->compaction)
		return;
	if (!b->event || sd_event_add_defer(b->event, &s->compaction, on_compaction, b) < 0) {
		s->compaction = NULL;
		(void)compact(b);
	}
}

void db_fdstore_changed(const struct db_change *ch, void *userdata)
{
	struct db_broker *b = userdata;
	struct db_fdstore *s = b->fdstore_state;
	char name[64];
	int r;

	if (!s || !s->journal)
		return;
	/* A new backing goes to the store before the record that names it, a freed one leaves
	 * after the record that drops it: killed in between, the store holds an fd no record
	 * names, and the next start drops it. */
	if (ch->type == DB_CHANGE_BUFFER_ADDED || ch->type == DB_CHANGE_MOVE_BEGUN) {
		buffer_fdname(ch->buffer, ch->buffer->n_moves, name, sizeof(name));
		store_add_logged(s, ch->buffer->fd, name);
		s->n_fds++;
	}
	r = db_journal_append(s->journal, ch, now_usec());
	if (r < 0)
		log_error("Failed to journal a change (a restart would not see it): %s",
			  strerror(-r));
	if (ch->type == DB_CHANGE_BUFFER_FREED) {
		buffer_fdname(ch->buffer, ch->buffer->n_moves, name, sizeof(name));
		store_remove(name);
		s->n_fds--;
	}
	if ((ch->type == DB_CHANGE_BUFFER_FREED || ch->type == DB_CHANGE_MOVE_FINISHED) &&
	    ch->buffer->old_fd >= 0 && ch->buffer->n_moves > 0) {
		buffer_fdname(ch->buffer, ch->buffer->n_moves - 1, name, sizeof(name));
		store_remove(name);
		s->n_fds--;
	}
	if (db_journal_wants_compaction(s->journal))
		schedule_compaction(b);
}

void db_fdstore_stream_changed(struct db_broker *b, const struct db_stream_change *change)
{
	struct db_fdstore *s = b->fdstore_state;
	int r;

	if (!s || !s->journal)
		return;
	r = db_journal_append_stream(s->journal, change);
	if (r < 0)
		log_error("Failed to journal a stream's change (a restart would not see it): %s",
			  strerror(-r));
	if (db_journal_wants_compaction(s->journal))
		schedule_compaction(b);
}

static unsigned store_max(struct db_broker *b)
{
	struct db_fdstore *s = b->fdstore_state;
	unsigned max = b->config.fd_store_max;

	/* systemd says its own limit where it can: the lower one wins. */
	if (s && s->env_max && s->env_max < max)
		max = s->env_max;
	return max;
}

int db_fdstore_reserve(struct db_broker *b, unsigned n_fds)
{
	struct db_fdstore *s = b->fdstore_state;
	unsigned max = store_max(b);

	if (!b->fdstore || !s || !s->journal)
		return 0;
	/* One entry stays free: compaction stores the new journal before removing the old.
	 * Lingering buffers hold entries too: see whether some can go before refusing. */
	if ((uint64_t)s->n_fds + n_fds + 1 > max)
		db_registry_sweep_lingering(b->reg);
	if ((uint64_t)s->n_fds + n_fds + 1 > max) {
		db_registry_note_exceeded(b->reg, "FdStoreMax", max);
		return -EDQUOT;
	}
	return 0;
}

/* --- restoring --- */

struct restore_ctx {
	struct db_broker *broker;
	GHashTable *fds; /* name -> fd (as pointer), owned names */
	GPtrArray *taken; /* names handed to the registry, owned */
};

/*
 * A client comes back only if its unique name is still on the bus and still belongs to the
 * uid it registered with. A bus never hands a unique name out twice, so this is the client
 * that registered; an error (the name has no owner) means it left during the restart.
 */
static bool client_alive(const struct db_jclient *c, void *userdata)
{
	struct restore_ctx *ctx = userdata;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	uint32_t uid;

	if (!ctx->broker->bus ||
	    sd_bus_call_method(ctx->broker->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
			       "org.freedesktop.DBus", "GetConnectionUnixUser", NULL, &reply, "s",
			       c->bus_name) < 0 ||
	    sd_bus_message_read(reply, "u", &uid) < 0) {
		log_info("Client %" PRIu64 " (%s) left during the restart", c->id, c->bus_name);
		return false;
	}
	if (uid != c->uid) {
		log_warning("Client %" PRIu64 " (%s) is now uid %u, not %u: dropping it", c->id,
			    c->bus_name, uid, (unsigned)c->uid);
		return false;
	}
	return true;
}

static int take_stored_fd(const char *name, void *userdata)
{
	struct restore_ctx *ctx = userdata;
	gpointer value;
	int fd;

	if (!g_hash_table_lookup_extended(ctx->fds, name, NULL, &value))
		return -1;
	fd = GPOINTER_TO_INT(value);
	g_hash_table_remove(ctx->fds, name);
	g_ptr_array_add(ctx->taken, g_strdup(name));
	return fd;
}

/* The journal with the highest generation whose snapshot is whole, decoded. */
static struct db_jstate *load_journal(GHashTable *fds, uint64_t *ret_max_generation)
{
	struct db_jstate *best = NULL;
	GHashTableIter it;
	gpointer key, value;

	*ret_max_generation = 0;
	g_hash_table_iter_init(&it, fds);
	while (g_hash_table_iter_next(&it, &key, &value)) {
		const char *name = key;
		struct db_jstate *s;
		uint64_t gen;
		char *end;
		int r;

		if (!g_str_has_prefix(name, DB_JOURNAL_FDNAME_PREFIX))
			continue;
		errno = 0;
		gen = strtoull(name + strlen(DB_JOURNAL_FDNAME_PREFIX), &end, 10);
		if (errno || *end)
			continue;
		*ret_max_generation = MAX(*ret_max_generation, gen);
		if (best && best->generation >= gen)
			continue;
		s = db_jstate_new();
		r = db_jstate_load_fd(s, GPOINTER_TO_INT(value));
		if (r < 0 || s->generation != gen) {
			log_warning("The journal %s in the fd store is unreadable: %s", name,
				    r < 0 ? strerror(-r) : "wrong generation");
			db_jstate_free(s);
			continue;
		}
		if (s->torn)
			log_notice(
				"The journal %s ends in an incomplete record (%zu of its bytes "
				"are whole): a change the daemon was killed while writing, which "
				"was never answered",
				name, s->bytes_used);
		db_jstate_free(best);
		best = s;
	}
	return best;
}

/* Pending moves come back with a fresh deadline: the holders may never have been told. */
static void rearm_moves(struct db_broker *b)
{
	struct db_registry_iter it;
	struct db_buffer *buf;

	/* Arming and finishing change no set the iterator walks. */
	db_registry_iter_buffers(b->reg, &it);
	while ((buf = db_registry_next_buffer(&it))) {
		int r;

		if (buf->old_fd < 0)
			continue;
		r = b->hooks.restored_pending_move(b, buf);
		if (r < 0) {
			log_warning("Buffer %" PRIu64
				    ": failed to arm the restored move's deadline, "
				    "finishing it now: %s",
				    buf->id, strerror(-r));
			db_registry_finish_move(b->reg, buf);
		}
	}
}

/* The store names of every backing reg holds. */
static GHashTable *kept_names(struct db_registry *reg)
{
	GHashTable *kept = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	struct db_registry_iter it;
	struct db_buffer *buf;
	char name[64];

	db_registry_iter_buffers(reg, &it);
	while ((buf = db_registry_next_buffer(&it))) {
		db_journal_buffer_fdname(buf->id, buf->n_moves, name, sizeof(name));
		g_hash_table_add(kept, g_strdup(name));
		if (buf->old_fd >= 0 && buf->n_moves > 0) {
			db_journal_buffer_fdname(buf->id, buf->n_moves - 1, name, sizeof(name));
			g_hash_table_add(kept, g_strdup(name));
		}
	}
	return kept;
}

static unsigned count_backings(struct db_registry *reg)
{
	struct db_registry_iter it;
	struct db_buffer *buf;
	unsigned n = 0;

	db_registry_iter_buffers(reg, &it);
	while ((buf = db_registry_next_buffer(&it)))
		n += buf->old_fd >= 0 ? 2 : 1;
	return n;
}

/* Starts journaling: a new journal (one generation up) from the restored registry. */
static int start_journal(struct db_broker *b, uint64_t generation)
{
	struct db_fdstore *s = b->fdstore_state;
	const char *env = getenv("FDSTORE");
	struct db_journal_streams streams;
	struct db_journal *j;
	char name[64];
	int r;

	if (env)
		s->env_max = (unsigned)MIN(strtoul(env, NULL, 10), (unsigned long)UINT32_MAX);
	r = db_journal_new(b->reg, snapshot_streams(b, &streams), generation, now_usec(), &j);
	if (r < 0)
		return r;
	journal_fdname(generation, name, sizeof(name));
	r = store_add(j->fd, name);
	if (r < 0) {
		db_journal_free(j);
		return r;
	}
	s->journal = j;
	s->n_fds = 1 + count_backings(b->reg);
	return 0;
}

int db_fdstore_restore(struct db_broker *b)
{
	g_autoptr(GHashTable) fds = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	_cleanup_(db_jstate_freep) struct db_jstate *state = NULL;
	g_autoptr(GPtrArray) taken = g_ptr_array_new_with_free_func(g_free);
	g_autoptr(GHashTable) kept = NULL;
	struct restore_ctx ctx = {.broker = b, .fds = fds, .taken = taken};
	struct db_jrestore_ops ops = {
		.client_alive = client_alive,
		.take_fd = take_stored_fd,
		.userdata = &ctx,
		.now_usec = now_usec(),
	};
	struct db_jrestore_stats st = {0};
	uint64_t max_generation = 0;
	char **names = NULL;
	GHashTableIter it;
	gpointer key, value;
	int n, r, n_restored = 0;

	if (!b->fdstore_state)
		b->fdstore_state = g_new0(struct db_fdstore, 1);
	n = sd_listen_fds_with_names(1, &names);
	if (n < 0)
		log_warning("Failed to read the fds passed at start: %s", strerror(-n));
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;

		if (g_hash_table_contains(fds, names[i])) {
			/* Two fds under one name: only the first is ours to use. */
			log_warning("The fd store holds %s twice: dropping one", names[i]);
			close(fd);
			free(names[i]);
			continue;
		}
		g_hash_table_insert(fds, names[i], GINT_TO_POINTER(fd));
	}
	free(names);

	if (n > 0) {
		state = load_journal(fds, &max_generation);
		if (state) {
			db_jstate_restore(state, b->reg, &ops, &st);
			n_restored = (int)st.buffers;
			log_info("Restored %u buffer(s), %u client(s), %u token(s) and %u pending "
				 "move(s) from the journal (generation %" PRIu64 ", %zu records); "
				 "%u client(s) left meanwhile, %u buffer(s) had no fd",
				 st.buffers, st.clients, st.tokens, st.moves, state->generation,
				 state->n_records, st.clients_gone, st.buffers_missing);
			rearm_moves(b);
			if (b->hooks.restore_streams)
				b->hooks.restore_streams(b, state);
		} else {
			log_warning("The fd store holds %d fd(s) but no readable journal: dropping "
				    "them",
				    n);
		}
	}
	if (b->fdstore) {
		r = start_journal(b, max_generation + 1);
		if (r < 0) {
			/* Without a journal nothing survives a restart: keep what the store has
			 * (the old journal describes a superset) and say so. */
			log_error("Failed to start the journal in the fd store, buffers will not "
				  "survive a restart: %s",
				  strerror(-r));
			b->fdstore = false;
		}
	}
	/* Whatever no restored buffer took is gone for good, the old journal with it (after
	 * the new one is stored). */
	g_hash_table_iter_init(&it, fds);
	while (g_hash_table_iter_next(&it, &key, &value)) {
		if (b->fdstore || !g_str_has_prefix(key, DB_JOURNAL_FDNAME_PREFIX))
			store_remove(key);
		close(GPOINTER_TO_INT(value));
	}
	/* Restored, then dropped (nobody holds them any more): their entries go too. */
	kept = kept_names(b->reg);
	for (guint i = 0; i < taken->len; i++)
		if (!g_hash_table_contains(kept, taken->pdata[i]))
			store_remove(taken->pdata[i]);
	return n_restored;
}

void db_fdstore_stop(struct db_broker *b)
{
	struct db_fdstore *s = b->fdstore_state;

	if (b->reg)
		db_registry_stop_changes(b->reg);
	if (!s)
		return;
	s->compaction = sd_event_source_disable_unref(s->compaction);
	db_journal_free(s->journal);
	g_free(s);
	b->fdstore_state = NULL;
}
