// SPDX-License-Identifier: MIT
#include "bus-creds.h"

#include <errno.h>
#include <glib.h>
#include <string.h>

#include "errors.h"
#include "log.h"
#include "macros.h"
#include "protocol.h"

struct name_creds {
	struct db_bus_creds *owner;
	char *name; /* owned; also the key */
	bool known;
	uid_t uid;
	pid_t pid;
	sd_bus_slot *lookup; /* owned, while GetConnectionCredentials is under way */
	GQueue held; /* sd_bus_message *, referenced: calls waiting for the answer */
};

struct db_bus_creds {
	sd_bus *bus; /* referenced */
	sd_bus_slot *filter; /* owned */
	GHashTable *names; /* char * -> struct name_creds *, owned */
	unsigned n_pending;
};

static void name_creds_free(gpointer p)
{
	struct name_creds *n = p;
	sd_bus_message *m;

	if (n->lookup) {
		n->owner->n_pending--;
		sd_bus_slot_unref(n->lookup);
	}
	while ((m = g_queue_pop_head(&n->held)))
		sd_bus_message_unref(m);
	g_free(n->name);
	g_free(n);
}

static int on_credentials(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
	struct name_creds *n = userdata;
	struct db_bus_creds *creds = n->owner;
	const sd_bus_error *e = sd_bus_message_get_error(reply);
	sd_bus_message *m;
	bool have_uid = false;
	uint32_t value;
	const char *key;
	int r;

	(void)ret_error;
	n->lookup = sd_bus_slot_unref(n->lookup);
	creds->n_pending--;
	if (e) {
		/* It left before the bus answered: its calls have nobody to answer to. */
		log_debug("No credentials for %s: %s", n->name, e->message);
		g_hash_table_remove(creds->names, n->name);
		return 0;
	}
	r = sd_bus_message_enter_container(reply, 'a', "{sv}");
	while (r > 0) {
		r = sd_bus_message_enter_container(reply, 'e', "sv");
		if (r <= 0)
			break;
		r = sd_bus_message_read(reply, "s", &key);
		if (r >= 0 && (strcmp(key, "UnixUserID") == 0 || strcmp(key, "ProcessID") == 0)) {
			r = sd_bus_message_read(reply, "v", "u", &value);
			if (r >= 0 && key[0] == 'U') {
				n->uid = (uid_t)value;
				have_uid = true;
			} else if (r >= 0) {
				n->pid = (pid_t)value;
			}
		} else if (r >= 0) {
			r = sd_bus_message_skip(reply, "v");
		}
		if (r >= 0)
			r = sd_bus_message_exit_container(reply);
	}
	if (r < 0 || !have_uid) {
		log_warning("The bus gave no uid for %s: refusing its calls", n->name);
		while ((m = g_queue_pop_head(&n->held))) {
			(void)sd_bus_reply_method_errorf(m, DB_ERROR_FAILED,
							 "the bus did not say who you are");
			sd_bus_message_unref(m);
		}
		g_hash_table_remove(creds->names, n->name);
		return 0;
	}
	n->known = true;
	/* Back into sd-bus's read queue, in the order they came: the filter lets them pass. */
	while ((m = g_queue_pop_head(&n->held))) {
		r = sd_bus_enqueue_for_read(creds->bus, m);
		if (r < 0)
			log_warning("Failed to requeue a call of %s: %s", n->name, strerror(-r));
		sd_bus_message_unref(m);
	}
	return 0;
}

static int refuse_busy(sd_bus_message *m, const char *why)
{
	(void)sd_bus_reply_method_errorf(m, DB_ERROR_BUSY, "%s", why);
	return 1;
}

static int on_message(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct db_bus_creds *creds = userdata;
	const char *sender = sd_bus_message_get_sender(m);
	struct name_creds *n;
	uint8_t type = 0;
	int r;

	(void)ret_error;
	if (sd_bus_message_get_type(m, &type) < 0 || type != SD_BUS_MESSAGE_METHOD_CALL ||
	    !sender || strcmp(sender, "org.freedesktop.DBus") == 0)
		return 0;
	n = g_hash_table_lookup(creds->names, sender);
	if (n && n->known)
		return 0;
	if (!n) {
		if (creds->n_pending >= DB_BUS_CREDS_PENDING_NAMES)
			return refuse_busy(m, "too many callers are waiting for the bus to say who "
					      "they are; try again");
		n = g_new0(struct name_creds, 1);
		n->owner = creds;
		n->name = g_strdup(sender);
		g_queue_init(&n->held);
		r = sd_bus_call_method_async(creds->bus, &n->lookup, "org.freedesktop.DBus",
					     "/org/freedesktop/DBus", "org.freedesktop.DBus",
					     "GetConnectionCredentials", on_credentials, n, "s",
					     sender);
		if (r < 0) {
			name_creds_free(n);
			log_warning("Failed to ask the bus about %s: %s", sender, strerror(-r));
			return refuse_busy(m, "the bus could not be asked who you are");
		}
		creds->n_pending++;
		g_hash_table_insert(creds->names, n->name, n);
	}
	if (g_queue_get_length(&n->held) >= DB_BUS_CREDS_HELD_PER_NAME)
		return refuse_busy(m, "too many calls before the bus said who you are");
	g_queue_push_tail(&n->held, sd_bus_message_ref(m));
	return 1; /* held: dispatched again once the answer is in */
}

int db_bus_creds_new(sd_bus *bus, struct db_bus_creds **ret)
{
	struct db_bus_creds *creds = g_new0(struct db_bus_creds, 1);
	int r;

	creds->bus = sd_bus_ref(bus);
	creds->names = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, name_creds_free);
	r = sd_bus_add_filter(bus, &creds->filter, on_message, creds);
	if (r < 0) {
		db_bus_creds_free(creds);
		return r;
	}
	*ret = creds;
	return 0;
}

struct db_bus_creds *db_bus_creds_free(struct db_bus_creds *creds)
{
	if (!creds)
		return NULL;
	sd_bus_slot_unref(creds->filter);
	g_hash_table_destroy(creds->names);
	sd_bus_unref(creds->bus);
	g_free(creds);
	return NULL;
}

int db_bus_creds_get(struct db_bus_creds *creds, const char *name, uid_t *ret_uid, pid_t *ret_pid)
{
	struct name_creds *n = name ? g_hash_table_lookup(creds->names, name) : NULL;

	if (!n || !n->known)
		return -ENOENT;
	if (ret_uid)
		*ret_uid = n->uid;
	if (ret_pid)
		*ret_pid = n->pid;
	return 0;
}

void db_bus_creds_forget(struct db_bus_creds *creds, const char *name)
{
	if (creds)
		g_hash_table_remove(creds->names, name);
}

unsigned db_bus_creds_count(const struct db_bus_creds *creds)
{
	return g_hash_table_size(creds->names);
}
