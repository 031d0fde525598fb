// SPDX-License-Identifier: MIT
/*
 * Streams: who produces and who consumes, the links the broker makes between them, and the
 * methods members call. The broker never sees a frame: it makes a link, hands the consumer its
 * end in JoinStream's answer and keeps the producer's end until the producer takes it
 * (TakeStreamLink) or its deadline passes, then holds nothing of it, so either end's hang-up
 * reaches the other. Descriptors only travel in answers to a client's own calls: a client's
 * call window bounds them, and a producer that reads nothing makes nothing pile up.
 */
#include "stream.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "args.h"
#include "broker.h"
#include "bus-objects.h"
#include "bus-text.h"
#include "collection.h"
#include "fdstore.h"
#include "join-tokens.h"
#include "log.h"
#include "macros.h"
#include "monitor.h"
#include "protocol.h"
#include "token.h"

struct stream;

/* The producer's end of a consumer's link, waiting for TakeStreamLink. Not journaled: a
 * descriptor does not survive a restart. */
struct pending_link {
	struct stream *s;
	uint32_t consumer;
	int fd; /* owned: the producer's end */
	sd_event_source *deadline; /* owned: StreamLinkTimeoutSec */
};

struct stream {
	struct db_broker *b;
	struct db_jstream *rec; /* the membership, as journaled, owned */
	/* Single-use tokens that let a client of any uid join (CreateStreamToken). */
	struct db_join_tokens *tokens;
	GPtrArray *pending; /* struct pending_link *, owned; at most one per consumer */
};

struct db_streams {
	GHashTable *by_id; /* &id -> struct stream *, owned */
	uint64_t next_id;
	GPtrArray *snapshot; /* the records a journal snapshot borrows */
};

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static const char *stream_path(const struct stream *s, char *out, size_t len)
{
	snprintf(out, len, DB_STREAM_PATH_PREFIX "/%" PRIu64, s->rec->id);
	return out;
}

static const char *mode_name(enum db_stream_mode mode)
{
	return mode == DB_STREAM_LATEST ? "latest" : "fifo";
}

static void pending_free(struct pending_link *p)
{
	if (!p)
		return;
	sd_event_source_disable_unref(p->deadline);
	closep(&p->fd);
	g_free(p);
}

static struct stream *stream_new(struct db_broker *b)
{
	struct stream *s = g_new0(struct stream, 1);

	s->b = b;
	s->tokens = db_join_tokens_new();
	s->pending = g_ptr_array_new_with_free_func((GDestroyNotify)pending_free);
	return s;
}

static void stream_free(struct stream *s)
{
	if (!s)
		return;
	/* The ends nobody took close with it. */
	g_ptr_array_unref(s->pending);
	db_jstream_free(s->rec);
	db_join_tokens_free(s->tokens);
	g_free(s);
}

int db_streams_new(struct db_broker *b)
{
	struct db_streams *ss = g_new0(struct db_streams, 1);

	ss->by_id = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL,
					  (GDestroyNotify)stream_free);
	ss->next_id = 1;
	ss->snapshot = g_ptr_array_new();
	b->streams = ss;
	return 0;
}

void db_streams_free(struct db_broker *b)
{
	struct db_streams *ss = b->streams;

	if (!ss)
		return;
	g_hash_table_unref(ss->by_id);
	g_ptr_array_unref(ss->snapshot);
	g_free(ss);
	b->streams = NULL;
}

static struct db_jconsumer *find_consumer(const struct stream *s, uint64_t client_id,
					  guint *ret_index)
{
	for (guint i = 0; i < s->rec->consumers->len; i++) {
		struct db_jconsumer *k = g_ptr_array_index(s->rec->consumers, i);

		if (k->client_id == client_id) {
			if (ret_index)
				*ret_index = i;
			return k;
		}
	}
	return NULL;
}

static bool is_member(const struct stream *s, uint64_t client_id)
{
	return s->rec->producer_id == client_id || find_consumer(s, client_id, NULL);
}

static unsigned streams_of_client(struct db_broker *b, uint64_t client_id)
{
	GHashTableIter it;
	gpointer v;
	unsigned n = 0;

	g_hash_table_iter_init(&it, b->streams->by_id);
	while (g_hash_table_iter_next(&it, NULL, &v))
		n += is_member(v, client_id);
	return n;
}

/* --- the producers' ends waiting to be taken --- */

static struct pending_link *find_pending(const struct stream *s, uint32_t consumer,
					 guint *ret_index)
{
	for (guint i = 0; i < s->pending->len; i++) {
		struct pending_link *p = g_ptr_array_index(s->pending, i);

		if (p->consumer == consumer) {
			if (ret_index)
				*ret_index = i;
			return p;
		}
	}
	return NULL;
}

/* Closes the daemon's copy of consumer's producer end, if it still holds one. */
static void drop_pending(struct stream *s, uint32_t consumer)
{
	guint index;

	if (find_pending(s, consumer, &index))
		g_ptr_array_remove_index_fast(s->pending, index);
}

/* The ends the producers of uid have not taken, over all their streams. */
static uint64_t pending_of_uid(struct db_broker *b, uid_t uid)
{
	GHashTableIter it;
	gpointer v;
	uint64_t n = 0;

	g_hash_table_iter_init(&it, b->streams->by_id);
	while (g_hash_table_iter_next(&it, NULL, &v)) {
		const struct stream *s = v;

		if (s->rec->uid == uid)
			n += s->pending->len;
	}
	return n;
}

/* --- telling --- */

static void journal(struct stream *s, enum db_stream_change_type type, const struct db_jconsumer *k)
{
	struct db_stream_change ch = {.type = type, .stream = s->rec, .consumer = k};

	db_fdstore_stream_changed(s->b, &ch);
}

/* The monitor's event, seen by root and the uids of the members. */
static void tell_monitor(struct stream *s, const char *kind, struct db_client *about,
			 const struct db_jconsumer *k, const char *reason)
{
	struct db_broker *b = s->b;
	g_autofree uid_t *uids = g_new0(uid_t, s->rec->consumers->len + 2);
	struct db_client *producer = db_registry_find_client(b->reg, s->rec->producer_id);
	char path[128], cpath[128];
	size_t n = 0;

	uids[n++] = s->rec->uid;
	if (producer)
		uids[n++] = producer->uid;
	for (guint i = 0; i < s->rec->consumers->len; i++) {
		const struct db_jconsumer *c = g_ptr_array_index(s->rec->consumers, i);
		struct db_client *cl = db_registry_find_client(b->reg, c->client_id);

		if (cl)
			uids[n++] = cl->uid;
	}
	db_monitor_stream(
		b, &(struct db_monitor_stream_event){
			   .kind = kind,
			   .stream_path = stream_path(s, path, sizeof(path)),
			   .client_path =
				   about ? db_bus_client_path(about, cpath, sizeof(cpath)) : NULL,
			   .has_consumer = k != NULL,
			   .consumer = k ? k->number : 0,
			   .reason = reason,
			   .uids = uids,
			   .n_uids = n,
		   });
}

/* StreamLinkEnded to one end; a client that is gone has nothing to close. */
static void send_link_ended(struct stream *s, uint64_t client_id, uint32_t consumer,
			    const char *reason)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *sig = NULL;
	struct db_client *c = db_registry_find_client(s->b->reg, client_id);
	char path[128];
	int r;

	if (!c)
		return;
	r = db_bus_new_client_signal(s->b, c, "StreamLinkEnded", &sig);
	if (r >= 0)
		r = sd_bus_message_append(sig, "ous", stream_path(s, path, sizeof(path)), consumer,
					  reason);
	if (r >= 0)
		r = db_bus_send_to_client(s->b, c, sig);
	if (r < 0)
		log_debug("Failed to tell client %" PRIu64 " that link %u ended: %s", client_id,
			  consumer, strerror(-r));
}

/*
 * Ends consumer index's link: both ends are told (skipping gone, a client that left), the
 * consumer is no member any more.
 */
static void end_link(struct stream *s, guint index, const char *reason, uint64_t gone)
{
	struct db_jconsumer *k = g_ptr_array_index(s->rec->consumers, index);
	struct db_client *c = db_registry_find_client(s->b->reg, k->client_id);
	char path[128];

	log_debug("Stream %s: link %u ended: %s", stream_path(s, path, sizeof(path)), k->number,
		  reason);
	/* Closed before anyone is told: the consumer's end reads end of file by then. */
	drop_pending(s, k->number);
	if (k->client_id != gone)
		send_link_ended(s, k->client_id, k->number, reason);
	if (s->rec->producer_id != gone)
		send_link_ended(s, s->rec->producer_id, k->number, reason);
	journal(s, DB_STREAM_LEFT, k);
	tell_monitor(s, "stream-left", c, k, reason);
	g_ptr_array_remove_index(s->rec->consumers, index);
}

/* StreamEnded to one member; a client that is gone hears nothing. */
static void send_ended(struct stream *s, uint64_t client_id, const char *path, const char *reason)
{
	struct db_client *c = db_registry_find_client(s->b->reg, client_id);

	if (c && db_bus_emit_to_client(s->b, c, "StreamEnded", path, reason) < 0)
		log_debug("Failed to tell client %" PRIu64 " that stream %s ended", client_id,
			  path);
}

/* Ends the stream for every member (but gone, a client that left) and frees it. */
static void end_stream(struct stream *s, const char *reason, uint64_t gone)
{
	struct db_broker *b = s->b;
	char path[128];

	log_info("Stream %s ended: %s", stream_path(s, path, sizeof(path)), reason);
	for (guint i = 0; i < s->rec->consumers->len; i++) {
		const struct db_jconsumer *k = g_ptr_array_index(s->rec->consumers, i);

		if (k->client_id != gone)
			send_ended(s, k->client_id, path, reason);
	}
	if (s->rec->producer_id != gone)
		send_ended(s, s->rec->producer_id, path, reason);
	journal(s, DB_STREAM_ENDED, NULL);
	tell_monitor(s, "stream-ended", NULL, NULL, reason);
	g_hash_table_remove(b->streams->by_id, &s->rec->id);
}

/* --- reading arguments --- */

static struct stream *stream_from_path(struct db_broker *b, const char *path)
{
	const char *tail = g_str_has_prefix(path, DB_STREAM_PATH_PREFIX "/")
				   ? path + strlen(DB_STREAM_PATH_PREFIX "/")
				   : NULL;
	uint64_t id;
	char *end;

	if (!tail || *tail < '1' || *tail > '9')
		return NULL;
	id = g_ascii_strtoull(tail, &end, 10);
	return *end == '\0' ? g_hash_table_lookup(b->streams->by_id, &id) : NULL;
}

/* The caller and the stream argument (read, not yet looked up). */
static int read_call(struct db_broker *b, sd_bus_message *m, struct db_client **ret_c,
		     const char **ret_path, sd_bus_error *error)
{
	int r;

	r = db_bus_get_caller(b, m, ret_c, error);
	if (r < 0)
		return r;
	return db_bus_read_path(m, "stream", ret_path, error);
}

/* The stream at path that c is a member of (NotFound otherwise: streams are private, not
 * being a member is answered like not existing). */
static int find_membership(struct db_broker *b, const char *path, struct db_client *c,
			   struct stream **ret_s, sd_bus_error *error)
{
	struct stream *s = stream_from_path(b, path);

	if (!s || !is_member(s, c->id))
		return sd_bus_error_setf(error, DB_ERROR_NOT_FOUND,
					 "no stream %s that you take part in", path);
	*ret_s = s;
	return 0;
}

static int enter_method(struct db_broker *b, sd_bus_message *m, struct db_client **ret_c,
			struct stream **ret_s, sd_bus_error *error)
{
	const char *path;
	int r;

	r = read_call(b, m, ret_c, &path, error);
	if (r < 0)
		return r;
	return find_membership(b, path, *ret_c, ret_s, error);
}

static int check_label(struct db_broker *b, const char *what, const char *text, sd_bus_error *error)
{
	if (db_registry_check_name(b->reg, text) < 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "%s is longer than MaxNameLength (%" PRIu64
					 ") or not printable ASCII",
					 what, db_registry_limits(b->reg)->max_name_length);
	return 0;
}

/* --- methods --- */

int db_stream_method_create(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	const struct db_limits *limits = db_registry_limits(b->reg);
	struct db_stream_args args;
	const char *collection;
	uint32_t n_buffers;
	struct db_client *c;
	struct stream *s;
	GHashTableIter it;
	gpointer v;
	char path[128];
	int r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = db_bus_read_path(m, "collection", &collection, error);
	if (r < 0)
		return r;
	r = db_args_create_stream(m, &args, error);
	if (r < 0)
		return r;
	r = check_label(b, "options: 'name'", args.name, error);
	if (r < 0)
		return r;
	if (args.max_consumers > limits->max_consumers_per_stream)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "options: 'max-consumers' %u is over "
					 "MaxConsumersPerStream (%" PRIu64 ")",
					 args.max_consumers, limits->max_consumers_per_stream);
	if (streams_of_client(b, c->id) >= limits->max_streams_per_client)
		return sd_bus_error_setf(error, DB_ERROR_QUOTA_EXCEEDED,
					 "MaxStreamsPerClient (%" PRIu64 ") would be exceeded",
					 limits->max_streams_per_client);
	r = db_collection_check_holder(b, collection, c, &n_buffers, error);
	if (r < 0)
		return r;
	g_hash_table_iter_init(&it, b->streams->by_id);
	while (args.name[0] && g_hash_table_iter_next(&it, NULL, &v)) {
		struct stream *other = v;

		if (other->rec->uid == c->uid && strcmp(other->rec->name, args.name) == 0)
			return sd_bus_error_setf(error, DB_ERROR_BUSY,
						 "a live stream of your uid is called '%s' already "
						 "(%s)",
						 args.name, stream_path(other, path, sizeof(path)));
	}
	s = stream_new(b);
	s->rec = db_jstream_new();
	s->rec->id = b->streams->next_id++;
	g_free(s->rec->name);
	s->rec->name = g_strdup(args.name);
	s->rec->producer_id = c->id;
	s->rec->uid = c->uid;
	s->rec->mode = args.mode;
	s->rec->max_consumers = args.max_consumers ? args.max_consumers
						   : (uint32_t)limits->max_consumers_per_stream;
	s->rec->format = args.format;
	g_free(s->rec->collection);
	s->rec->collection = g_strdup(collection);
	s->rec->next_consumer = 1;
	g_hash_table_insert(b->streams->by_id, &s->rec->id, s);
	journal(s, DB_STREAM_CREATED, NULL);
	tell_monitor(s, "stream-created", c, NULL, NULL);
	log_debug("Client %" PRIu64 " created stream %s over %s (%u buffers)", c->id,
		  stream_path(s, path, sizeof(path)), collection, n_buffers);
	return sd_bus_reply_method_return(m, "o", path);
}

int db_stream_method_token(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	const struct db_limits *limits = db_registry_limits(b->reg);
	struct db_token_bytes t;
	uint64_t now = now_usec();
	struct db_client *c;
	struct stream *s;
	int r;

	r = enter_method(b, m, &c, &s, error);
	if (r < 0)
		return r;
	if (c->id != s->rec->producer_id)
		return sd_bus_error_setf(error, DB_ERROR_PERMISSION_DENIED,
					 "only the stream's producer makes its tokens");
	db_join_tokens_expire(s->tokens, now);
	/* Every token may become a participant of the collection, as a collection's does. */
	if (1 + s->rec->consumers->len + db_join_tokens_count(s->tokens) >=
	    limits->max_participants_per_collection)
		return sd_bus_error_setf(error, DB_ERROR_QUOTA_EXCEEDED,
					 "MaxParticipantsPerCollection (%" PRIu64
					 ") would be exceeded (producer, consumers and unused "
					 "tokens)",
					 limits->max_participants_per_collection);
	r = db_join_tokens_add(s->tokens, now + (uint64_t)b->config.collection_deadline_ms * 1000,
			       &t);
	if (r < 0)
		return r;
	return db_bus_reply_token(m, &t);
}

static int append_format(sd_bus_message *reply, const struct stream *s, uint32_t n_buffers)
{
	const struct db_stream_format *f = &s->rec->format;

	return sd_bus_message_append(reply, "a{sv}", 7, "fourcc", "u", f->fourcc, "width", "u",
				     f->width, "height", "u", f->height, "framerate-num", "u",
				     f->framerate_num, "framerate-den", "u", f->framerate_den,
				     "mode", "s", mode_name(s->rec->mode), "buffer-count", "u",
				     n_buffers);
}

/* Tells the producer that a consumer joined and who it is: it takes its end with
 * TakeStreamLink. No descriptor: a producer that reads nothing makes nothing pile up. */
static int send_link(struct stream *s, struct db_client *producer, struct db_client *consumer,
		     const struct db_jconsumer *k)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *sig = NULL;
	char path[128], cpath[128];
	int r;

	r = db_bus_new_client_signal(s->b, producer, "StreamLink", &sig);
	if (r >= 0)
		r = sd_bus_message_append(sig, "ou", stream_path(s, path, sizeof(path)), k->number);
	if (r >= 0)
		r = sd_bus_message_append(sig, "a{sv}", 4, "client", "o",
					  db_bus_client_path(consumer, cpath, sizeof(cpath)), "uid",
					  "u", (uint32_t)consumer->uid, "label", "s", k->label,
					  "required", "b", (int)k->required);
	if (r < 0)
		return r;
	return db_bus_send_to_client(s->b, producer, sig);
}

/* The producer did not take consumer's end in time: the daemon closes it and the consumer,
 * whose link leads nowhere, is no member any more, required or not (the fault is the
 * producer's, not the consumer's). */
static int on_link_deadline(sd_event_source *source, uint64_t usec, void *userdata)
{
	struct pending_link *p = userdata;
	struct stream *s = p->s;
	uint32_t consumer = p->consumer;
	guint index;

	(void)source;
	(void)usec;
	for (index = 0; index < s->rec->consumers->len; index++)
		if (((struct db_jconsumer *)g_ptr_array_index(s->rec->consumers, index))->number ==
		    consumer)
			break;
	if (index < s->rec->consumers->len)
		end_link(s, index, "the producer did not take the link in time", 0);
	else
		drop_pending(s, consumer);
	return 0;
}

/* Keeps fd (taken) for consumer until the producer takes it or StreamLinkTimeoutSec. */
static int add_pending(struct stream *s, uint32_t consumer, int fd)
{
	struct pending_link *p = g_new0(struct pending_link, 1);
	int r;

	p->s = s;
	p->consumer = consumer;
	p->fd = fd;
	r = s->b->event ? sd_event_add_time_relative(s->b->event, &p->deadline, CLOCK_MONOTONIC,
						     (uint64_t)s->b->config.stream_link_timeout_ms *
							     1000,
						     0, on_link_deadline, p)
			: -ENOTCONN;
	if (r < 0) {
		pending_free(p);
		return r;
	}
	g_ptr_array_add(s->pending, p);
	return 0;
}

/* JoinStream and JoinStreamWithToken, once the stream is found. */
static int join(struct db_broker *b, sd_bus_message *m, struct db_client *c, struct stream *s,
		struct db_join_stream_args *args, sd_bus_error *error)
{
	const struct db_limits *limits = db_registry_limits(b->reg);
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_(closep) int consumer_end = -1, producer_end = -1;
	struct db_client *producer = db_registry_find_client(b->reg, s->rec->producer_id);
	struct db_jconsumer *k;
	uint32_t n_buffers = 0;
	bool joined = false;
	int fds[2], r;
	char path[128];

	r = check_label(b, "options: 'label'", args->label, error);
	if (r < 0)
		return r;
	if (c->id == s->rec->producer_id)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "you produce %s: a producer cannot consume its own stream",
					 stream_path(s, path, sizeof(path)));
	if (find_consumer(s, c->id, NULL))
		return sd_bus_error_setf(error, DB_ERROR_BUSY, "you consume %s already",
					 stream_path(s, path, sizeof(path)));
	if (s->rec->consumers->len >= s->rec->max_consumers)
		return sd_bus_error_setf(error, DB_ERROR_QUOTA_EXCEEDED,
					 "the stream is full: %u consumers (its max-consumers)",
					 s->rec->max_consumers);
	if (streams_of_client(b, c->id) >= limits->max_streams_per_client)
		return sd_bus_error_setf(error, DB_ERROR_QUOTA_EXCEEDED,
					 "MaxStreamsPerClient (%" PRIu64 ") would be exceeded",
					 limits->max_streams_per_client);
	if (!producer)
		return sd_bus_error_setf(error, DB_ERROR_NOT_FOUND,
					 "the stream's producer is gone");
	if (pending_of_uid(b, s->rec->uid) >= limits->max_pending_links_per_uid)
		return sd_bus_error_setf(error, DB_ERROR_BUSY,
					 "the producer's uid has not taken the links of "
					 "MaxPendingLinksPerUid (%" PRIu64
					 ") consumers yet; try again later",
					 limits->max_pending_links_per_uid);
	r = db_collection_join_for_stream(b, s->rec->collection, c,
					  args->has_constraints ? &args->constraints : NULL,
					  &n_buffers, &joined, error);
	args->has_constraints = false; /* taken */
	if (r < 0)
		return r;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) < 0) {
		r = -errno;
		goto undo;
	}
	consumer_end = fds[0];
	producer_end = fds[1];
	k = g_new0(struct db_jconsumer, 1);
	k->number = s->rec->next_consumer;
	k->client_id = c->id;
	k->required = args->required;
	k->label = g_strdup(args->label);
	r = sd_bus_message_new_method_return(m, &reply);
	if (r >= 0)
		r = sd_bus_message_append(reply, "oou", stream_path(s, path, sizeof(path)),
					  s->rec->collection, k->number);
	if (r >= 0)
		r = append_format(reply, s, n_buffers);
	if (r >= 0)
		r = sd_bus_message_append(reply, "h", consumer_end);
	if (r >= 0)
		r = add_pending(s, k->number, take_fd(&producer_end));
	if (r < 0) {
		db_jconsumer_free(k);
		goto undo;
	}
	/* Numbers are never reused, even if what follows fails. */
	s->rec->next_consumer++;
	g_ptr_array_add(s->rec->consumers, k);
	journal(s, DB_STREAM_JOINED, k);
	r = send_link(s, producer, c, k);
	if (r < 0) {
		/* The producer cannot be told: the link would lead nowhere. */
		log_debug("Stream %s: failed to hand the producer link %u: %s", path, k->number,
			  strerror(-r));
		end_link(s, s->rec->consumers->len - 1, "the producer could not be reached", c->id);
		goto undo;
	}
	tell_monitor(s, "stream-joined", c, k, NULL);
	log_debug("Client %" PRIu64 " joined stream %s as consumer %u", c->id, path, k->number);
	/* The answer holds its own copy: ours closes at return. The producer's end waits
	 * for TakeStreamLink. */
	return sd_bus_send(NULL, reply, NULL);
undo:
	if (joined)
		db_collection_drop_participant(b, s->rec->collection, c);
	return r;
}

int db_stream_method_take_link(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	struct db_take_link_args args;
	struct pending_link *p;
	struct db_client *c;
	struct stream *s;
	uint32_t consumer;
	char path[128];
	int r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = db_args_take_stream_link(m, &args, error);
	if (r < 0)
		return r;
	r = find_membership(b, args.stream, c, &s, error);
	if (r < 0)
		return r;
	consumer = args.consumer;
	stream_path(s, path, sizeof(path));
	if (c->id != s->rec->producer_id)
		return sd_bus_error_setf(error, DB_ERROR_PERMISSION_DENIED,
					 "only the stream's producer takes its links");
	p = find_pending(s, consumer, NULL);
	if (!p)
		return sd_bus_error_setf(error, DB_ERROR_NOT_FOUND,
					 "no link of consumer %u waits in %s (taken, expired, or "
					 "the consumer is gone)",
					 consumer, path);
	r = sd_bus_message_new_method_return(m, &reply);
	if (r >= 0)
		r = sd_bus_message_append(reply, "h", p->fd);
	if (r < 0)
		return r;
	/* The answer holds its own copy, which goes once it is sent: the daemon keeps
	 * nothing of the link. */
	drop_pending(s, consumer);
	log_debug("Stream %s: the producer took link %u", path, consumer);
	return sd_bus_send(NULL, reply, NULL);
}

int db_stream_method_join(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	_cleanup_(db_join_stream_args_clear) struct db_join_stream_args args = {0};
	struct stream *found = NULL;
	struct db_client *c;
	const char *name;
	GHashTableIter it;
	gpointer v;
	int r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = db_bus_read_text(m, "name", 255, DB_TEXT_ASCII, &name, error);
	if (r < 0)
		return r;
	r = db_args_join_stream(m, &args, error);
	if (r < 0)
		return r;
	g_hash_table_iter_init(&it, b->streams->by_id);
	/* An unnamed stream is joined by token only. */
	if (!name[0])
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "name: empty; an unnamed stream is joined with a token");
	while (g_hash_table_iter_next(&it, NULL, &v)) {
		struct stream *s = v;

		if (s->rec->uid == c->uid && strcmp(s->rec->name, name) == 0)
			found = s;
	}
	if (!found)
		return sd_bus_error_setf(error, DB_ERROR_NOT_FOUND,
					 "no live stream called '%s' whose producer has your uid",
					 name);
	return join(b, m, c, found, &args, error);
}

int db_stream_method_join_with_token(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	_cleanup_(db_join_stream_args_clear) struct db_join_stream_args args = {0};
	struct db_token_bytes token;
	struct stream *found = NULL;
	uint64_t now = now_usec();
	unsigned found_index = 0;
	struct db_client *c;
	GHashTableIter it;
	gpointer v;
	int r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = db_bus_read_token(m, &token, error);
	if (r < 0)
		return r;
	r = db_args_join_stream(m, &args, error);
	if (r < 0)
		return r;
	g_hash_table_iter_init(&it, b->streams->by_id);
	while (g_hash_table_iter_next(&it, NULL, &v)) {
		struct stream *s = v;
		unsigned i;

		/* Every stream is looked at: no early exit here either. */
		if (db_join_tokens_find(s->tokens, &token, now, &i)) {
			found = s;
			found_index = i;
		}
	}
	if (!found)
		return sd_bus_error_setf(error, DB_ERROR_NOT_FOUND,
					 "no such stream token: it was never issued, was used, "
					 "expired, or its stream ended");
	r = join(b, m, c, found, &args, error);
	/* Single use: the token became this consumer. */
	if (r >= 0 && g_hash_table_lookup(b->streams->by_id, &found->rec->id) == found)
		db_join_tokens_take(found->tokens, found_index);
	return r;
}

int db_stream_method_leave(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	struct db_client *c;
	struct stream *s;
	guint index;
	int r;

	r = enter_method(b, m, &c, &s, error);
	if (r < 0)
		return r;
	/* Answered first: the caller's signals then come after its answer. */
	r = sd_bus_reply_method_return(m, NULL);
	if (c->id == s->rec->producer_id)
		end_stream(s, "producer left", 0);
	else if (find_consumer(s, c->id, &index))
		end_link(s, index, "consumer left", 0);
	return r;
}

int db_stream_method_end(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	const char *path, *reason;
	struct db_client *c;
	struct stream *s;
	int r;

	r = read_call(b, m, &c, &path, error);
	if (r < 0)
		return r;
	/* It reaches every member and the daemon's log. */
	r = db_bus_read_text(m, "reason", DB_TEXT_MAX, 0, &reason, error);
	if (r < 0)
		return r;
	r = find_membership(b, path, c, &s, error);
	if (r < 0)
		return r;
	if (c->id != s->rec->producer_id)
		return sd_bus_error_setf(error, DB_ERROR_PERMISSION_DENIED,
					 "only the stream's producer ends it");
	r = sd_bus_reply_method_return(m, NULL);
	end_stream(s, reason[0] ? reason : "ended by the producer", 0);
	return r;
}

/*
 * The producer's library ended a consumer's link (it broke the link's protocol, or its link
 * hung up): the consumer is no member any more. That is the consumer's failure, as its
 * disconnection would be: a required one's ends the stream, whichever the daemon hears first.
 */
int db_stream_method_end_link(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	struct db_end_link_args args;
	struct db_jconsumer *k;
	struct db_client *c;
	struct stream *s;
	guint index;
	int r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = db_args_end_stream_link(m, &args, error);
	if (r < 0)
		return r;
	r = find_membership(b, args.stream, c, &s, error);
	if (r < 0)
		return r;
	if (c->id != s->rec->producer_id)
		return sd_bus_error_setf(error, DB_ERROR_PERMISSION_DENIED,
					 "only the stream's producer ends a consumer's link");
	for (index = 0; index < s->rec->consumers->len; index++)
		if (((struct db_jconsumer *)g_ptr_array_index(s->rec->consumers, index))->number ==
		    args.consumer)
			break;
	if (index == s->rec->consumers->len)
		return sd_bus_error_setf(error, DB_ERROR_NOT_FOUND,
					 "no consumer %u in the stream (never joined, or gone)",
					 args.consumer);
	/* Answered first: the caller's signals then come after its answer. */
	r = sd_bus_reply_method_return(m, NULL);
	k = g_ptr_array_index(s->rec->consumers, index);
	if (k->required) {
		char reason[64];

		snprintf(reason, sizeof(reason), "required consumer %u failed", k->number);
		end_stream(s, reason, 0);
	} else {
		end_link(s, index, args.reason[0] ? args.reason : "ended by the producer", 0);
	}
	return r;
}

/* --- disconnection and restore --- */

/* Returns true if s was freed. */
static bool client_leaves(struct stream *s, struct db_client *c)
{
	char reason[64];
	guint index;
	struct db_jconsumer *k;

	if (c->id == s->rec->producer_id) {
		end_stream(s, "producer disconnected", c->id);
		return true;
	}
	k = find_consumer(s, c->id, &index);
	if (!k)
		return false;
	if (k->required) {
		snprintf(reason, sizeof(reason), "required consumer %u failed", k->number);
		end_stream(s, reason, c->id);
		return true;
	}
	end_link(s, index, "consumer disconnected", c->id);
	return false;
}

void db_streams_client_leaving(struct db_broker *b, struct db_client *c)
{
	GHashTableIter it;
	gpointer v;

	if (!b->streams)
		return;
	g_hash_table_iter_init(&it, b->streams->by_id);
	while (g_hash_table_iter_next(&it, NULL, &v))
		if (client_leaves(v, c))
			g_hash_table_iter_init(&it, b->streams->by_id);
}

void db_streams_journal_snapshot(struct db_broker *b, struct db_journal_streams *ret)
{
	struct db_streams *ss = b->streams;
	GHashTableIter it;
	gpointer v;

	g_ptr_array_set_size(ss->snapshot, 0);
	g_hash_table_iter_init(&it, ss->by_id);
	while (g_hash_table_iter_next(&it, NULL, &v))
		g_ptr_array_add(ss->snapshot, ((struct stream *)v)->rec);
	ret->streams = ss->snapshot;
	ret->next_id = ss->next_id;
}

static struct db_jstream *copy_record(const struct db_jstream *from)
{
	struct db_jstream *rec = db_jstream_new();

	g_free(rec->name);
	g_free(rec->collection);
	*rec = (struct db_jstream){
		.id = from->id,
		.name = g_strdup(from->name),
		.producer_id = from->producer_id,
		.uid = from->uid,
		.mode = from->mode,
		.max_consumers = from->max_consumers,
		.format = from->format,
		.collection = g_strdup(from->collection),
		.next_consumer = from->next_consumer,
		.consumers = rec->consumers,
	};
	return rec;
}

static void restore_one(struct db_broker *b, const struct db_jstream *js)
{
	struct stream *s = stream_new(b);
	char path[128], reason[64] = "";

	s->rec = copy_record(js);
	g_hash_table_insert(b->streams->by_id, &s->rec->id, s);
	stream_path(s, path, sizeof(path));
	if (!db_registry_find_client(b->reg, js->producer_id))
		snprintf(reason, sizeof(reason), "producer disconnected");
	/* Members that did not come back left as a disconnection leaves. */
	for (guint i = 0; !reason[0] && i < js->consumers->len; i++) {
		const struct db_jconsumer *jk = g_ptr_array_index(js->consumers, i);
		struct db_jconsumer *k;

		if (!db_registry_find_client(b->reg, jk->client_id)) {
			if (jk->required)
				snprintf(reason, sizeof(reason), "required consumer %u failed",
					 jk->number);
			else
				send_link_ended(s, js->producer_id, jk->number,
						"consumer disconnected");
			continue;
		}
		k = g_new0(struct db_jconsumer, 1);
		k->number = jk->number;
		k->client_id = jk->client_id;
		k->required = jk->required;
		k->label = g_strdup(jk->label);
		g_ptr_array_add(s->rec->consumers, k);
	}
	if (reason[0]) {
		log_info("Stream %s is not restored: %s", path, reason);
		end_stream(s, reason, 0);
		return;
	}
	log_info("Restored stream %s ('%s') with %u consumer(s)", path, s->rec->name,
		 s->rec->consumers->len);
}

static gint compare_ids(gconstpointer a, gconstpointer b)
{
	uint64_t x = (*(const struct db_jstream *const *)a)->id,
		 y = (*(const struct db_jstream *const *)b)->id;

	return x < y ? -1 : x > y;
}

void db_streams_restore(struct db_broker *b, const struct db_jstate *state)
{
	g_autoptr(GPtrArray) streams = g_ptr_array_new();
	GHashTableIter it;
	gpointer v;

	/* In the order they were made: a restore is deterministic. */
	g_hash_table_iter_init(&it, state->streams);
	while (g_hash_table_iter_next(&it, NULL, &v))
		g_ptr_array_add(streams, v);
	g_ptr_array_sort(streams, compare_ids);
	b->streams->next_id = MAX(b->streams->next_id, state->next_stream_id);
	for (guint i = 0; i < streams->len; i++) {
		const struct db_jstream *js = g_ptr_array_index(streams, i);

		b->streams->next_id = MAX(b->streams->next_id, js->id + 1);
		if (!g_hash_table_contains(b->streams->by_id, &js->id))
			restore_one(b, js);
	}
}

/* --- listing --- */

static bool stream_visible(struct db_broker *b, const struct stream *s, uid_t uid)
{
	if (uid == 0 || s->rec->uid == uid)
		return true;
	for (guint i = 0; i < s->rec->consumers->len; i++) {
		const struct db_jconsumer *k = g_ptr_array_index(s->rec->consumers, i);
		struct db_client *c = db_registry_find_client(b->reg, k->client_id);

		if (c && c->uid == uid)
			return true;
	}
	return false;
}

static int append_stream(struct db_broker *b, sd_bus_message *reply, struct stream *s)
{
	struct db_client *producer = db_registry_find_client(b->reg, s->rec->producer_id);
	const struct db_stream_format *f = &s->rec->format;
	char path[128], cpath[128];
	int r;

	r = sd_bus_message_open_container(reply, 'a', "{sv}");
	if (r >= 0)
		r = sd_bus_message_append(
			reply, "{sv}{sv}{sv}{sv}{sv}{sv}", "stream", "o",
			stream_path(s, path, sizeof(path)), "name", "s", s->rec->name, "collection",
			"o", s->rec->collection, "mode", "s", mode_name(s->rec->mode), "producer",
			"o", producer ? db_bus_client_path(producer, cpath, sizeof(cpath)) : "/",
			"max-consumers", "u", s->rec->max_consumers);
	if (r >= 0)
		r = sd_bus_message_append(reply, "{sv}", "format", "a{sv}", 5, "fourcc", "u",
					  f->fourcc, "width", "u", f->width, "height", "u",
					  f->height, "framerate-num", "u", f->framerate_num,
					  "framerate-den", "u", f->framerate_den);
	if (r >= 0)
		r = sd_bus_message_open_container(reply, 'e', "sv");
	if (r >= 0)
		r = sd_bus_message_append_basic(reply, 's', "consumers");
	if (r >= 0)
		r = sd_bus_message_open_container(reply, 'v', "aa{sv}");
	if (r >= 0)
		r = sd_bus_message_open_container(reply, 'a', "a{sv}");
	for (guint i = 0; r >= 0 && i < s->rec->consumers->len; i++) {
		const struct db_jconsumer *k = g_ptr_array_index(s->rec->consumers, i);
		struct db_client *c = db_registry_find_client(b->reg, k->client_id);

		r = sd_bus_message_append(
			reply, "a{sv}", 4, "consumer", "u", k->number, "client", "o",
			c ? db_bus_client_path(c, cpath, sizeof(cpath)) : "/", "label", "s",
			k->label, "required", "b", (int)k->required);
	}
	for (int n = 0; r >= 0 && n < 4; n++)
		r = sd_bus_message_close_container(reply);
	return r;
}

int db_stream_method_list(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	GHashTableIter it;
	gpointer v;
	uid_t uid;
	int r;

	r = db_bus_caller_uid(b, m, &uid);
	if (r < 0)
		return r;
	r = sd_bus_message_new_method_return(m, &reply);
	if (r >= 0)
		r = sd_bus_message_open_container(reply, 'a', "a{sv}");
	g_hash_table_iter_init(&it, b->streams->by_id);
	while (r >= 0 && g_hash_table_iter_next(&it, NULL, &v))
		if (stream_visible(b, v, uid))
			r = append_stream(b, reply, v);
	if (r >= 0)
		r = sd_bus_message_close_container(reply);
	if (r < 0)
		return r;
	return sd_bus_send(NULL, reply, NULL);
}
