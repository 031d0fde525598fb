// SPDX-License-Identifier: MIT
#include "monitor.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "broker.h"
#include "bus-creds.h"
#include "bus-dict.h"
#include "budget.h"
#include "bus-objects.h"
#include "log.h"
#include "macros.h"
#include "peer.h"
#include "protocol.h"

/* Subscribers in all and per uid: each costs a signal per change it may see. */
#define DB_MONITOR_MAX 64
#define DB_MONITOR_MAX_PER_UID 4

/* An event sent and not yet acknowledged: its sequence number and what it was counted. */
struct unacked {
	uint64_t seq;
	uint64_t cost;
};

struct subscriber {
	char *bus_name; /* unique name on the bus */
	uid_t uid;
	/*
	 * Bytes of events sent and not acknowledged (AcknowledgeEvents): on the bus they sit in
	 * dbus-daemon's queue toward a subscriber that does not read, and, once dbus-daemon
	 * stops reading, in the daemon's. Past SubscriberWindowBytes an event is counted as
	 * missed instead; the subscriber is told how many, once, when it has room again.
	 */
	struct db_budget window;
	GArray *unacked; /* struct unacked, oldest first */
	uint64_t next_seq;
	uint64_t missed;
};

struct db_monitor {
	GPtrArray *subscribers; /* struct subscriber *, owned */
};

static void subscriber_free(gpointer p)
{
	struct subscriber *s = p;

	g_free(s->bus_name);
	g_array_unref(s->unacked);
	g_free(s);
}

int db_monitor_new(struct db_monitor **ret)
{
	struct db_monitor *mon = g_new0(struct db_monitor, 1);

	mon->subscribers = g_ptr_array_new_with_free_func(subscriber_free);
	*ret = mon;
	return 0;
}

struct db_monitor *db_monitor_free(struct db_monitor *mon)
{
	if (!mon)
		return NULL;
	g_ptr_array_unref(mon->subscribers);
	g_free(mon);
	return NULL;
}

static struct subscriber *find(struct db_monitor *mon, const char *bus_name, guint *ret_index)
{
	for (guint i = 0; i < mon->subscribers->len; i++) {
		struct subscriber *s = g_ptr_array_index(mon->subscribers, i);

		if (strcmp(s->bus_name, bus_name) == 0) {
			if (ret_index)
				*ret_index = i;
			return s;
		}
	}
	return NULL;
}

/* What an event names: one object, and the details a{sv} that describe it. */
struct event {
	const char *kind;
	const char *object;
	struct db_client *client; /* the client it is about or that acted, may be NULL */
	struct db_buffer *buffer; /* may be NULL */
	const char *path; /* attachment path, or NULL */
	const char *reason; /* Revoke's, or NULL */
	/* A collection's outcome: seen by root and by these uids (its participants'). */
	const char *outcome;
	/* Set for a collection's or stream's event: seen by root and by these uids only. */
	const uid_t *uids;
	size_t n_uids;
	/* A stream's: the client it is about ("client" o) and the consumer's number. */
	const char *member_path;
	bool has_consumer;
	uint32_t consumer;
	uint64_t missed; /* "events-missed": how many */
};

static uint64_t str_cost(const char *s)
{
	/* A string on the wire: its length, its NUL and the padding before it, and its key. */
	return s ? strlen(s) + 24 : 0;
}

/*
 * What an event costs on the wire, as an upper bound: the fixed header with its fields
 * (path, interface, member, signature, sender and destination), then every string the
 * details may hold and room for the numbers.
 */
static uint64_t event_cost(const struct event *e, const struct subscriber *sub)
{
	uint64_t n = 192 + str_cost(sub->bus_name) + str_cost(e->kind) + str_cost(e->object);

	n += str_cost(e->path) + str_cost(e->reason) + str_cost(e->outcome);
	n += str_cost(e->member_path) + (e->has_consumer ? 32 : 0);
	if (e->client)
		n += 256 + str_cost(e->client->role) + str_cost(e->client->name);
	if (e->buffer)
		n += 256 + str_cost(e->buffer->backend) + str_cost(e->buffer->name);
	return n;
}

static int append_details(sd_bus_message *s, const struct event *e, uint64_t seq, bool show_client)
{
	char p[128];
	int r;

	r = sd_bus_message_open_container(s, 'a', "{sv}");
	if (r >= 0)
		r = sd_bus_message_append(s, "{sv}", "seq", "t", seq);
	if (r >= 0 && e->client && show_client)
		r = sd_bus_message_append(s, "{sv}{sv}{sv}{sv}{sv}{sv}", "client", "o",
					  db_bus_client_path(e->client, p, sizeof(p)), "uid", "u",
					  (uint32_t)e->client->uid, "pid", "u",
					  (uint32_t)e->client->pid, "role", "s", e->client->role,
					  "client-name", "s", e->client->name, "dynamic", "b",
					  (int)e->client->dynamic);
	if (r >= 0 && e->buffer)
		r = sd_bus_message_append(s, "{sv}{sv}{sv}{sv}{sv}", "buffer", "o",
					  db_bus_buffer_path(e->buffer, p, sizeof(p)), "size", "t",
					  (uint64_t)e->buffer->size, "backend", "s",
					  e->buffer->backend, "name", "s", e->buffer->name,
					  "owner-uid", "u", (uint32_t)e->buffer->owner_uid);
	if (r >= 0 && e->path)
		r = sd_bus_message_append(s, "{sv}", "path", "s", e->path);
	if (r >= 0 && e->reason)
		r = sd_bus_message_append(s, "{sv}", "reason", "s", e->reason);
	if (r >= 0 && e->outcome)
		r = sd_bus_message_append(s, "{sv}", "outcome", "s", e->outcome);
	if (r >= 0 && e->member_path)
		r = sd_bus_message_append(s, "{sv}", "client", "o", e->member_path);
	if (r >= 0 && e->has_consumer)
		r = sd_bus_message_append(s, "{sv}", "consumer", "u", e->consumer);
	if (r >= 0 && e->missed)
		r = sd_bus_message_append(s, "{sv}", "missed", "t", e->missed);
	if (r < 0)
		return r;
	return sd_bus_message_close_container(s);
}

/* An event about a buffer goes to whoever may see the buffer; the client in it (a holder of
 * another uid) is named only to those who may see that client too. */
static bool visible(const struct subscriber *sub, const struct event *e)
{
	if (e->missed)
		return true; /* built for this one subscriber */
	if (e->uids) {
		for (size_t i = 0; i < e->n_uids; i++)
			if (e->uids[i] == sub->uid)
				return true;
		return sub->uid == 0;
	}
	if (e->buffer)
		return db_bus_buffer_visible(e->buffer, sub->uid);
	return db_bus_client_visible(e->client, sub->uid);
}

static int send_one(struct db_broker *b, struct subscriber *sub, const struct event *e)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *s = NULL;
	uint64_t cost = event_cost(e, sub);
	struct unacked u;
	int r;

	if (!db_budget_fits(&sub->window, cost)) {
		sub->missed++;
		return 0;
	}
	u.seq = ++sub->next_seq;
	u.cost = cost;
	r = sd_bus_message_new_signal(b->bus, &s, DB_OBJECT_PATH, DB_IFACE_BROKER, "Event");
	if (r >= 0)
		r = sd_bus_message_set_destination(s, sub->bus_name);
	if (r >= 0)
		r = sd_bus_message_append(s, "so", e->kind, e->object);
	if (r >= 0)
		r = append_details(s, e, u.seq,
				   e->client && db_bus_client_visible(e->client, sub->uid));
	/* Never waits: sd-bus queues it; the window bounds how much can queue. */
	if (r >= 0)
		r = sd_bus_send(b->bus, s, NULL);
	if (r < 0) {
		log_debug("Failed to send an event to %s: %s", sub->bus_name, strerror(-r));
		return r;
	}
	db_budget_charge(&sub->window, cost);
	g_array_append_val(sub->unacked, u);
	return 1;
}

static void send_event(struct db_broker *b, const struct event *e)
{
	struct db_monitor *mon = b->monitor;

	for (guint i = 0; i < mon->subscribers->len; i++) {
		struct subscriber *sub = g_ptr_array_index(mon->subscribers, i);

		if (visible(sub, e))
			(void)send_one(b, sub, e);
	}
}

void db_monitor_changed(struct db_broker *b, const struct db_change *ch)
{
	struct event e = {0};
	char object[128];

	if (!b->monitor || b->monitor->subscribers->len == 0)
		return;
	switch (ch->type) {
	case DB_CHANGE_CLIENT_ADDED:
	case DB_CHANGE_CLIENT_REMOVED:
		e.kind = ch->type == DB_CHANGE_CLIENT_ADDED ? "client-registered" : "client-left";
		e.client = ch->client;
		e.object = db_bus_client_path(ch->client, object, sizeof(object));
		break;
	case DB_CHANGE_BUFFER_ADDED:
	case DB_CHANGE_BUFFER_FREED:
	case DB_CHANGE_MOVE_BEGUN:
	case DB_CHANGE_MOVE_FINISHED:
		e.kind = ch->type == DB_CHANGE_BUFFER_ADDED
				 ? (ch->buffer->exporter_client_id ? "buffer-exported"
								   : "buffer-allocated")
			 : ch->type == DB_CHANGE_BUFFER_FREED ? "buffer-freed"
			 : ch->type == DB_CHANGE_MOVE_BEGUN   ? "moved"
							      : "move-finished";
		e.buffer = ch->buffer;
		e.object = db_bus_buffer_path(ch->buffer, object, sizeof(object));
		break;
	case DB_CHANGE_ATTACHED:
	case DB_CHANGE_DETACHED:
	case DB_CHANGE_REACQUIRED:
		e.kind = ch->type == DB_CHANGE_ATTACHED	  ? "attached"
			 : ch->type == DB_CHANGE_DETACHED ? "detached"
							  : "reacquired";
		e.client = ch->attachment->client;
		e.buffer = ch->attachment->buffer;
		e.path = db_attach_path_name(ch->attachment->path);
		e.object = db_bus_buffer_path(e.buffer, object, sizeof(object));
		break;
	case DB_CHANGE_TOKEN_ADDED:
		/* Never the token's bytes: they are the capability. */
		e.kind = "shared";
		e.client = ch->token->issuer;
		e.buffer = ch->token->buffer;
		e.object = db_bus_buffer_path(e.buffer, object, sizeof(object));
		break;
	case DB_CHANGE_TOKEN_REMOVED:
		return;
	}
	send_event(b, &e);
}

void db_monitor_revoked(struct db_broker *b, struct db_buffer *buf, const char *reason)
{
	char object[128];
	struct event e = {
		.kind = "revoked",
		.buffer = buf,
		.reason = reason,
		.object = db_bus_buffer_path(buf, object, sizeof(object)),
	};

	if (b->monitor && b->monitor->subscribers->len > 0)
		send_event(b, &e);
}

void db_monitor_collection(struct db_broker *b, const char *kind, const char *path,
			   const char *outcome, const uid_t *uids, size_t n_uids)
{
	struct event e = {
		.kind = kind,
		.object = path,
		.outcome = outcome,
		.uids = uids,
		.n_uids = n_uids,
	};

	if (b->monitor && b->monitor->subscribers->len > 0)
		send_event(b, &e);
}

void db_monitor_stream(struct db_broker *b, const struct db_monitor_stream_event *se)
{
	struct event e = {
		.kind = se->kind,
		.object = se->stream_path,
		.member_path = se->client_path,
		.has_consumer = se->has_consumer,
		.consumer = se->consumer,
		.reason = se->reason,
		.uids = se->uids,
		.n_uids = se->n_uids,
	};

	if (b->monitor && b->monitor->subscribers->len > 0)
		send_event(b, &e);
}

void db_monitor_name_gone(struct db_broker *b, const char *bus_name)
{
	guint i;

	if (b->monitor && find(b->monitor, bus_name, &i))
		g_ptr_array_remove_index_fast(b->monitor->subscribers, i);
}

/* Tells the new subscriber of every object it may see, as if each had just come. */
static void send_snapshot(struct db_broker *b, struct subscriber *sub)
{
	struct db_registry_iter it;
	struct db_client *c;
	struct db_buffer *buf;
	GPtrArray *all = b->monitor->subscribers;
	GPtrArray *only = g_ptr_array_new();

	/* send_event() walks the subscriber list: give it just this one. */
	g_ptr_array_add(only, sub);
	b->monitor->subscribers = only;
	db_registry_iter_clients(b->reg, &it);
	while ((c = db_registry_next_client(&it)))
		db_monitor_changed(
			b, &(struct db_change){.type = DB_CHANGE_CLIENT_ADDED, .client = c});
	db_registry_iter_buffers(b->reg, &it);
	while ((buf = db_registry_next_buffer(&it))) {
		if (buf->lingering)
			continue;
		db_monitor_changed(
			b, &(struct db_change){.type = DB_CHANGE_BUFFER_ADDED, .buffer = buf});
		for (guint i = 0; i < buf->attachments->len; i++)
			db_monitor_changed(b, &(struct db_change){.type = DB_CHANGE_ATTACHED,
								  .attachment = g_ptr_array_index(
									  buf->attachments, i)});
	}
	b->monitor->subscribers = all;
	g_ptr_array_unref(only);
}

int db_monitor_subscribe(struct db_broker *b, sd_bus_message *m, sd_bus_error *error)
{
	struct db_monitor *mon = b->monitor;
	const char *sender = sd_bus_message_get_sender(m);
	bool snapshot = false;
	struct db_dict_field f[] = {
		{"snapshot", DB_DICT_BOOL, &snapshot},
	};
	struct subscriber *sub;
	unsigned same_uid = 0;
	uid_t uid;
	int r;

	if (db_peer_of_message(b, m) || !sender)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "subscribe on the bus, not on a peer connection");
	r = db_dict_read(m, f, ARRAY_SIZE(f), "options", error);
	if (r < 0)
		return r;
	if (find(mon, sender, NULL))
		return sd_bus_error_setf(error, DB_ERROR_BUSY, "%s is subscribed already", sender);
	r = db_bus_creds_get(b->creds, sender, &uid, NULL);
	if (r < 0)
		return sd_bus_error_setf(error, DB_ERROR_FAILED, "the bus did not say who you are");
	for (guint i = 0; i < mon->subscribers->len; i++)
		same_uid +=
			((struct subscriber *)g_ptr_array_index(mon->subscribers, i))->uid == uid;
	if (mon->subscribers->len >= DB_MONITOR_MAX || same_uid >= DB_MONITOR_MAX_PER_UID)
		return sd_bus_error_setf(error, DB_ERROR_QUOTA_EXCEEDED,
					 "at most %d subscribers, %d per uid", DB_MONITOR_MAX,
					 DB_MONITOR_MAX_PER_UID);
	sub = g_new0(struct subscriber, 1);
	sub->bus_name = g_strdup(sender);
	sub->uid = uid;
	sub->unacked = g_array_new(FALSE, FALSE, sizeof(struct unacked));
	db_budget_init(&sub->window, db_registry_limits(b->reg)->subscriber_window_bytes);
	g_ptr_array_add(mon->subscribers, sub);
	/* Answer first: the snapshot's events come after the reply. */
	r = sd_bus_reply_method_return(m, NULL);
	if (r >= 0 && snapshot)
		send_snapshot(b, sub);
	return r;
}

int db_monitor_unsubscribe(struct db_broker *b, sd_bus_message *m, sd_bus_error *error)
{
	const char *sender = sd_bus_message_get_sender(m);
	guint i;

	if (!sender || !find(b->monitor, sender, &i))
		return sd_bus_error_setf(error, DB_ERROR_NOT_FOUND, "not subscribed");
	g_ptr_array_remove_index_fast(b->monitor->subscribers, i);
	return sd_bus_reply_method_return(m, NULL);
}

int db_monitor_acknowledge(struct db_broker *b, sd_bus_message *m, sd_bus_error *error)
{
	const char *sender = sd_bus_message_get_sender(m);
	struct subscriber *sub;
	char object[128];
	guint n = 0;
	uint64_t seq;
	int r;

	r = sd_bus_message_read(m, "t", &seq);
	if (r < 0)
		return r;
	sub = sender ? find(b->monitor, sender, NULL) : NULL;
	if (!sub)
		return sd_bus_error_setf(error, DB_ERROR_NOT_FOUND, "not subscribed");
	if (seq > sub->next_seq)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "event %" PRIu64 " was not sent yet (the last is %" PRIu64
					 ")",
					 seq, sub->next_seq);
	while (n < sub->unacked->len && g_array_index(sub->unacked, struct unacked, n).seq <= seq)
		db_budget_release(&sub->window,
				  g_array_index(sub->unacked, struct unacked, n++).cost);
	g_array_remove_range(sub->unacked, 0, n);
	r = sd_bus_reply_method_return(m, NULL);
	if (r >= 0 && sub->missed > 0) {
		/* Told once, so that the subscriber can look at the state again (a snapshot). */
		struct event e = {
			.kind = "events-missed",
			.object = strcpy(object, DB_OBJECT_PATH),
			.missed = sub->missed,
		};

		if (send_one(b, sub, &e) > 0)
			sub->missed = 0;
	}
	return r;
}
