// SPDX-License-Identifier: MIT
#include "collection.h"
#include "broker.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "bus-creds.h"
#include "bus-objects.h"
#include "client-memory.h"
#include "fdstore.h"
#include "kernel-view.h"
#include "log.h"
#include "macros.h"
#include "monitor.h"
#include "move.h"
#include "peer.h"
#include "stream.h"

/*
 * References to a buffer's memory outside the daemon, as the kernel counts them: the
 * dma-buf's file count less the daemon's own fd and the fd store's copy. A memfd's count is
 * not visible from userspace (the degraded mode), so its charge ends with the last release:
 * a client's own memfd stays the client's memory, and a memfd the daemon allocated gives its
 * pages back now, so that a holder keeping it keeps no memory of the daemon's.
 */
static int on_outside_refs(struct db_buffer *buf, void *userdata)
{
	struct db_broker *b = userdata;
	long count, own = b->fdstore ? 2 : 1;

	if (!buf->is_dmabuf) {
		if (!buf->client_memory)
			db_daemon_memfd_reclaim(buf->fd, buf->size);
		return -1;
	}
	/* Unreadable: keep charging, a later quota check asks again. */
	if (db_kernel_view_read_file_count(buf->fd, &count) < 0)
		return 1;
	return count > own ? (int)MIN(count - own, (long)INT_MAX) : 0;
}

/* Every change goes to the journal first (before its call is answered), then to the
 * subscribers' events. */
static void on_changed(const struct db_change *change, void *userdata)
{
	db_fdstore_changed(change, userdata);
	db_monitor_changed(userdata, change);
}

/*
 * A client that dies mid-call may leave the fd of a reply in flight (in the bus daemon's
 * queue, or a socket being torn down) when the daemon looks at the buffers it let go of:
 * they would linger until some quota check. So after a client leaves, the lingering buffers
 * are asked about again a few times, 250 ms, 1 s, 4 s and 16 s later (each time at most
 * DB_LINGER_CHECKS fdinfo reads): bounded work, started by an event, never a periodic poll.
 */
#define LINGER_RECHECK_USEC (250 * 1000ull)
#define LINGER_RECHECK_TRIES 4

static int on_linger_recheck(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct db_broker *b = userdata;

	(void)usec;
	db_registry_sweep_lingering(b->reg);
	if (db_registry_count_lingering(b->reg) == 0 || ++b->linger_tries >= LINGER_RECHECK_TRIES)
		return sd_event_source_set_enabled(s, SD_EVENT_OFF);
	(void)sd_event_source_set_time_relative(s, LINGER_RECHECK_USEC << (2 * b->linger_tries));
	return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

static void schedule_linger_recheck(struct db_broker *b)
{
	b->linger_tries = 0;
	if (!b->event)
		return;
	if (!b->linger_timer) {
		if (sd_event_add_time_relative(b->event, &b->linger_timer, CLOCK_MONOTONIC,
					       LINGER_RECHECK_USEC, 0, on_linger_recheck, b) < 0)
			b->linger_timer = NULL;
		return;
	}
	(void)sd_event_source_set_time_relative(b->linger_timer, LINGER_RECHECK_USEC);
	(void)sd_event_source_set_enabled(b->linger_timer, SD_EVENT_ONESHOT);
}

/* A client that goes loses its peer connection first: unsent replies there hold fds. */
static void on_client_leaving(struct db_client *c, void *userdata)
{
	struct db_broker *b = userdata;

	/* Its streams first: their ends are told while the collections still stand. */
	db_streams_client_leaving(b, c);
	db_collections_client_leaving(b, c);
	db_peer_close(c->bus_data);
}

static void on_client_freed(struct db_client *c, void *userdata)
{
	struct db_broker *b = userdata;

	if (db_registry_count_lingering(b->reg) > 0)
		schedule_linger_recheck(b);
}

static void on_devices_changed(void *userdata)
{
	struct db_broker *b = userdata;

	/* udmabuf or a heap may have come or gone. */
	db_backends_refresh();
	log_debug("Devices changed: %u known", b->devices ? db_devices_list(b->devices)->len : 0);
}

int db_broker_new(struct db_broker **ret, sd_event *event, sd_bus *bus, const char *config_path)
{
	struct db_broker *b = g_new0(struct db_broker, 1);
	char err[512];
	int r;

	b->hooks = (struct db_broker_hooks){
		.emit_to_client = db_bus_emit_to_client,
		.add_objects = db_broker_add_objects,
		.restored_pending_move = db_move_arm_deadline,
		.journal_streams = db_streams_journal_snapshot,
		.restore_streams = db_streams_restore,
	};
	b->event = sd_event_ref(event);
	b->bus = bus ? sd_bus_ref(bus) : NULL;
	b->config_path = g_strdup(config_path);
	b->kernel_report = "unknown";
	r = db_config_load(&b->config, b->config_path, err, sizeof(err));
	if (r < 0) {
		log_error("Failed to load the configuration: %s", err);
		db_broker_free(b);
		return r;
	}
	b->reg = db_registry_new(&b->config.limits);
	/* Every change is journaled into the fd store (with --fd-store, once restored). */
	db_registry_set_hooks(b->reg, &(struct db_registry_hooks){
					      .client_leaving = on_client_leaving,
					      .client_freed = on_client_freed,
					      .outside_refs = on_outside_refs,
					      .changed = on_changed,
					      .userdata = b,
				      });
	if (b->bus) {
		r = db_bus_creds_new(b->bus, &b->creds);
		if (r < 0) {
			db_broker_free(b);
			return r;
		}
	}
	b->peers = g_hash_table_new(g_direct_hash, g_direct_equal);
	b->peer_uids = g_hash_table_new(g_int_hash, g_int_equal);
	b->moves = g_hash_table_new(g_int64_hash, g_int64_equal);
	db_monitor_new(&b->monitor);
	db_collections_new(b);
	db_streams_new(b);
	r = db_devices_new(&b->devices, on_devices_changed, b);
	if (r < 0)
		log_warning("Failed to enumerate devices, continuing without: %s", strerror(-r));
	*ret = b;
	return 0;
}

struct db_broker *db_broker_free(struct db_broker *b)
{
	if (!b)
		return NULL;
	/* Tearing down is no change to keep: the store stays as the journal left it. */
	db_fdstore_stop(b);
	/* Copies under way hold their own fds; wait for them before the buffers go. */
	db_moves_free(b);
	/* udmabuf helpers still at work are killed; their calls go unanswered. */
	db_client_memory_free(b);
	/* Streams go with nobody told: links never passed through the daemon, and the journal
	 * keeps the membership for the next start. */
	db_streams_free(b);
	/* Waits owed to participants are dropped with their messages. */
	db_collections_free(b);
	/* Clients go first: that closes their peer connections and frees every buffer. */
	if (b->reg)
		db_registry_free(b->reg);
	if (b->peers)
		g_hash_table_unref(b->peers);
	if (b->peer_uids)
		g_hash_table_unref(b->peer_uids);
	db_monitor_free(b->monitor);
	sd_event_source_disable_unref(b->udev_source);
	sd_event_source_disable_unref(b->linger_timer);
	db_devices_free(b->devices);
	db_bus_creds_free(b->creds);
	sd_bus_unref(b->bus);
	sd_event_unref(b->event);
	g_free(b->config_path);
	g_free(b);
	return NULL;
}

int db_broker_reload(struct db_broker *b)
{
	struct db_config cfg;
	char err[512];
	int r;

	r = db_config_load(&cfg, b->config_path, err, sizeof(err));
	if (r < 0) {
		log_error("Failed to reload the configuration, keeping the old one: %s", err);
		return r;
	}
	b->config = cfg;
	db_registry_set_limits(b->reg, &cfg.limits);
	db_backends_refresh();
	if (b->devices)
		db_devices_rescan(b->devices);
	log_info("Reloaded the configuration");
	return 0;
}

void db_broker_probe_kernel_report(struct db_broker *b)
{
	const struct db_backend *be = NULL;
	struct db_kernel_view view;
	_cleanup_(closep) int fd = -1;

	if (db_backend_available(&db_backend_udmabuf))
		be = &db_backend_udmabuf;
	else if (db_backend_available(&db_backend_dma_heap))
		be = &db_backend_dma_heap;
	if (!be || be->allocate((size_t)sysconf(_SC_PAGESIZE), false, &fd) < 0 ||
	    db_kernel_view_read(fd, &view) < 0) {
		b->kernel_report = "unknown";
		return;
	}
	b->kernel_report = view.available ? "available" : "unavailable";
	/* The series that adds the report also fixes udmabuf's vmap of huge pages. */
	db_backend_set_hugetlb_vmap_safe(view.available);
	log_info("The kernel's dma-buf attachment report is %s", b->kernel_report);
}
