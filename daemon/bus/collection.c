// SPDX-License-Identifier: MIT
/*
 * Buffer collections: the state of each negotiation, its deadline, the allocation that ends it,
 * and the methods participants call. The intersection itself is constraints.c.
 */
#include "collection.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "backend.h"
#include "broker.h"
#include "bus-dict.h"
#include "bus-objects.h"
#include "bus-text.h"
#include "constraints.h"
#include "fd-util.h"
#include "fdstore.h"
#include "join-tokens.h"
#include "log.h"
#include "macros.h"
#include "monitor.h"
#include "protocol.h"
#include "text.h"
#include "token.h"

enum collection_state {
	COLLECTION_NEGOTIATING,
	COLLECTION_ALLOCATED,
	COLLECTION_FAILED,
};

static const char *const state_names[] = {
	[COLLECTION_NEGOTIATING] = "negotiating",
	[COLLECTION_ALLOCATED] = "allocated",
	[COLLECTION_FAILED] = "failed",
};

struct participant {
	uint64_t client_id;
	char label[192]; /* "media-client (vivid, /dev/video1)": what messages name */
	bool has_constraints;
	struct db_constraint_args sc; /* device: NULL, the message is gone */
	bool allocated; /* attached to the collection's buffers */
	enum db_attach_path path;
	sd_bus_message *wait; /* a WaitCollection to answer, owned reference */
};

struct collection {
	struct db_broker *b;
	uint64_t id;
	char name[64];
	uint64_t creator_id;
	enum collection_state state;
	bool committed;
	uint32_t expected; /* allocate once this many participants have set constraints */
	GPtrArray *participants; /* struct participant *, owned */
	struct db_join_tokens *tokens;
	struct db_collection_plan plan;
	GArray *buffer_ids; /* uint64_t, the allocated buffers in order */
	const char *failure_name; /* the error every call gets after a failure */
	char failure[DB_CONSTRAINTS_MESSAGE_MAX + 128];
	sd_event_source *deadline;
	bool dirty; /* to look at again from the defer source */
};

struct db_collections {
	GHashTable *by_id; /* &id -> struct collection *, owned */
	uint64_t next_id;
	/* Re-checks collections a departure changed, outside the registry's hooks. */
	sd_event_source *recheck;
};

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static const char *collection_path(const struct collection *col, char *out, size_t len)
{
	snprintf(out, len, DB_COLLECTION_PATH_PREFIX "/%" PRIu64, col->id);
	return out;
}

static void participant_free(struct participant *p)
{
	if (!p)
		return;
	db_constraint_args_clear(&p->sc);
	sd_bus_message_unref(p->wait);
	g_free(p);
}

static void collection_free(struct collection *col)
{
	sd_event_source_disable_unref(col->deadline);
	g_ptr_array_unref(col->participants);
	db_join_tokens_free(col->tokens);
	g_array_unref(col->buffer_ids);
	g_free(col);
}

int db_collections_new(struct db_broker *b)
{
	struct db_collections *cs = g_new0(struct db_collections, 1);

	cs->by_id = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL,
					  (GDestroyNotify)collection_free);
	cs->next_id = 1;
	b->collections = cs;
	return 0;
}

void db_collections_free(struct db_broker *b)
{
	struct db_collections *cs = b->collections;

	if (!cs)
		return;
	sd_event_source_disable_unref(cs->recheck);
	g_hash_table_unref(cs->by_id);
	g_free(cs);
	b->collections = NULL;
}

unsigned db_collections_count(const struct db_broker *b)
{
	return b->collections ? g_hash_table_size(b->collections->by_id) : 0;
}

static struct participant *find_participant(struct collection *col, uint64_t client_id,
					    guint *ret_index)
{
	for (guint i = 0; i < col->participants->len; i++) {
		struct participant *p = g_ptr_array_index(col->participants, i);

		if (p->client_id == client_id) {
			if (ret_index)
				*ret_index = i;
			return p;
		}
	}
	return NULL;
}

static unsigned collections_of_client(struct db_broker *b, uint64_t client_id)
{
	GHashTableIter it;
	gpointer v;
	unsigned n = 0;

	g_hash_table_iter_init(&it, b->collections->by_id);
	while (g_hash_table_iter_next(&it, NULL, &v))
		n += find_participant(v, client_id, NULL) != NULL;
	return n;
}

/* --- answering waits --- */

/* A WaitCollection was answered (on a peer, the wire takes the answer from sd-bus). */
static void wait_answered(struct db_broker *b, struct participant *p)
{
	p->wait = sd_bus_message_unref(p->wait);
}

static void reply_wait_error(struct db_broker *b, struct participant *p, const char *name,
			     const char *message)
{
	_cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;

	if (!p->wait)
		return;
	sd_bus_error_set(&error, name, message);
	/* The caller may be gone, or its peer cut off for not reading: nobody to tell then. */
	(void)sd_bus_reply_method_error(p->wait, &error);
	wait_answered(b, p);
}

static int append_outcome(sd_bus_message *reply, struct collection *col, struct participant *p)
{
	struct db_broker *b = col->b;
	const struct db_collection_plan *plan = &col->plan;
	struct db_buffer *first =
		db_registry_find_buffer(b->reg, g_array_index(col->buffer_ids, uint64_t, 0));
	int r;

	r = sd_bus_message_open_container(reply, 'a', "{sv}");
	if (r >= 0)
		r = sd_bus_message_append(
			reply, "{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}", "buffer-count", "u",
			plan->buffer_count, "camping", "u", plan->camping_total, "size", "t",
			(uint64_t)plan->size, "backend", "s", plan->backend, "contiguous", "b",
			(int)plan->contiguous, "dmabuf", "b", (int)plan->is_dmabuf, "max-segment",
			"t", plan->max_segment, "path", "s", db_attach_path_name(p->path), "note",
			"s", plan->note);
	if (r >= 0)
		r = sd_bus_message_open_container(reply, 'e', "sv");
	if (r >= 0)
		r = sd_bus_message_append_basic(reply, 's', "flags");
	if (r >= 0)
		r = sd_bus_message_open_container(reply, 'v', "as");
	if (r >= 0)
		r = sd_bus_message_open_container(reply, 'a', "s");
	if (r >= 0 && (plan->flags & DB_COLLECTION_SEGMENT_LIMIT_NOT_MET))
		r = sd_bus_message_append_basic(reply, 's', "segment-limit-not-met");
	if (r >= 0 && (plan->flags & DB_COLLECTION_ADDRESS_BITS_UNCHECKED))
		r = sd_bus_message_append_basic(reply, 's', "address-bits-unchecked");
	for (int k = 0; r >= 0 && k < 4; k++)
		r = sd_bus_message_close_container(reply);
	if (r < 0)
		return r;
	/* Every buffer has the same layout; the first one stands for all. */
	if (!first)
		return -ENOENT;
	return db_bus_append_layout(reply, first, NULL, NULL);
}

static void reply_wait_allocated(struct collection *col, struct participant *p)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	int r;

	if (!p->wait)
		return;
	r = sd_bus_message_new_method_return(p->wait, &reply);
	if (r >= 0)
		r = append_outcome(reply, col, p);
	if (r < 0)
		return reply_wait_error(col->b, p, DB_ERROR_FAILED,
					"the outcome could not be sent");
	(void)sd_bus_send(NULL, reply, NULL);
	wait_answered(col->b, p);
}

/* What was allocated, in one line (free it). */
static char *describe_outcome(const struct collection *col)
{
	return g_strdup_printf("%u x %zu bytes from %s%s%s%s", col->plan.buffer_count,
			       col->plan.size, col->plan.backend,
			       col->plan.contiguous ? ", contiguous" : "",
			       col->plan.note[0] ? "; " : "", col->plan.note);
}

/* Tells event subscribers (dmabrokerctl monitor) who may see the collection. */
static void tell_monitor(struct collection *col, const char *kind, const char *outcome)
{
	g_autofree uid_t *uids = g_new0(uid_t, col->participants->len + 1);
	size_t n = 0;
	char path[128];

	for (guint i = 0; i < col->participants->len; i++) {
		const struct participant *p = g_ptr_array_index(col->participants, i);
		struct db_client *c = db_registry_find_client(col->b->reg, p->client_id);

		if (c)
			uids[n++] = c->uid;
	}
	db_monitor_collection(col->b, kind, collection_path(col, path, sizeof(path)), outcome, uids,
			      n);
}

static void fail(struct collection *col, const char *name, const char *fmt, ...) _printf_(3, 4);

/* Ends the negotiation: every participant's wait (now or later) gets this error. */
static void fail(struct collection *col, const char *name, const char *fmt, ...)
{
	char path[128];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(col->failure, sizeof(col->failure), fmt, ap);
	va_end(ap);
	/* Cut at its size, it may end mid-character: sd-bus would refuse to send it, and every
	 * WaitCollection would go unanswered. */
	db_text_sanitize(col->failure);
	col->failure_name = name;
	col->state = COLLECTION_FAILED;
	db_join_tokens_clear(col->tokens);
	col->deadline = sd_event_source_disable_unref(col->deadline);
	log_info("Collection %s failed: %s", collection_path(col, path, sizeof(path)),
		 col->failure);
	tell_monitor(col, "collection-failed", col->failure);
	for (guint i = 0; i < col->participants->len; i++)
		reply_wait_error(col->b, g_ptr_array_index(col->participants, i), name,
				 col->failure);
}

/* --- allocation --- */

struct machine {
	struct db_machine_info info;
	char heap_names[8][DB_HEAP_NAME_MAX];
	bool heap_contiguous[8];
	struct db_heap_info heaps[8];
};

static void describe_machine(struct db_broker *b, struct machine *m)
{
	/* Any heap counts, a CMA one without the system heap too. */
	size_t n = db_dma_heaps_list(m->heap_names, m->heap_contiguous, 8);

	memset(&m->info, 0, sizeof(m->info));
	for (size_t i = 0; i < n; i++)
		m->heaps[i] = (struct db_heap_info){.name = m->heap_names[i],
						    .contiguous = m->heap_contiguous[i]};
	m->info.heaps = m->heaps;
	m->info.n_heaps = n;
	m->info.udmabuf = db_backend_available(&db_backend_udmabuf);
	m->info.udmabuf_size_limit = db_udmabuf_size_limit();
	/*
	 * Only when a huge page is free now: the solver would promise what cannot be made. And
	 * only without a CMA heap: as for single allocations, a CMA heap comes first for
	 * contiguous memory (the solver tries udmabuf, hugetlb included, before heaps), since a
	 * huge page caps a buffer and the pool is small.
	 */
	m->info.huge_page_size = m->info.udmabuf ? db_huge_page_size_if_free() : 0;
	for (size_t i = 0; i < n; i++)
		if (m->heaps[i].contiguous)
			m->info.huge_page_size = 0;
	m->info.hugetlb_vmap_safe = db_backend_hugetlb_vmap_safe();
	m->info.memfd = true;
	m->info.max_buffer_size = db_registry_limits(b->reg)->max_buffer_size;
}

static int allocate_backing(const struct db_collection_plan *plan, const char **ret_backend,
			    int *ret_fd)
{
	switch (plan->kind) {
	case DB_BACKEND_UDMABUF:
		*ret_backend = db_backend_udmabuf.name;
		return db_backend_udmabuf.allocate(plan->size, false, ret_fd);
	case DB_BACKEND_UDMABUF_HUGETLB:
		*ret_backend = db_backend_udmabuf.name;
		return db_backend_udmabuf.allocate(plan->size, true, ret_fd);
	case DB_BACKEND_HEAP: {
		const char *heap = strchr(plan->backend, ':');

		*ret_backend = db_backend_dma_heap.name;
		return db_dma_heap_allocate_from(heap ? heap + 1 : "system", plan->size, ret_fd);
	}
	case DB_BACKEND_MEMFD:
		*ret_backend = db_backend_memfd.name;
		return db_backend_memfd.allocate(plan->size, false, ret_fd);
	}
	return -EINVAL;
}

/* Gives back what an allocation made so far: detaching every holder frees each buffer. */
static void undo_buffers(struct collection *col)
{
	struct db_broker *b = col->b;

	for (guint i = 0; i < col->buffer_ids->len; i++) {
		struct db_buffer *buf = db_registry_find_buffer(
			b->reg, g_array_index(col->buffer_ids, uint64_t, i));

		while (buf && buf->attachments->len > 0) {
			struct db_attachment *a = g_ptr_array_index(buf->attachments, 0);
			bool last = buf->attachments->len == 1;

			db_registry_detach(b->reg, a->client, buf);
			if (last)
				break;
		}
	}
	g_array_set_size(col->buffer_ids, 0);
}

static void allocate(struct collection *col)
{
	struct db_broker *b = col->b;
	const struct db_limits *limits = db_registry_limits(b->reg);
	size_t n = col->participants->len;
	g_autofree struct db_constraints *parts = g_new0(struct db_constraints, n);
	struct db_constraints_error err = {0};
	struct db_client *owner = db_registry_find_client(b->reg, col->creator_id);
	struct machine m;
	char path[128];
	int r;

	for (size_t i = 0; i < n; i++) {
		struct participant *p = g_ptr_array_index(col->participants, i);
		struct db_client *c = db_registry_find_client(b->reg, p->client_id);

		parts[i] = p->sc.c;
		parts[i].name = p->label;
		/* The capability the client registered with decides its attachment path. */
		parts[i].dynamic = c && c->dynamic;
	}
	describe_machine(b, &m);
	r = db_constraints_intersect(parts, n, &m.info, 0, &col->plan, &err);
	if (r == -EOPNOTSUPP)
		return fail(col, DB_ERROR_UNSUPPORTED, "%s", err.message);
	if (r == -ENODEV)
		return fail(col, DB_ERROR_NO_DEVICE, "%s", err.message);
	if (r < 0)
		return fail(col, DB_ERROR_INVALID_ARGUMENT, "%s", err.message);
	if (col->plan.buffer_count > limits->max_buffers_per_collection)
		return fail(col, DB_ERROR_QUOTA_EXCEEDED,
			    "the participants need %u buffers (%u for camping), over "
			    "MaxBuffersPerCollection (%" PRIu64 ")",
			    col->plan.buffer_count, col->plan.camping_total,
			    limits->max_buffers_per_collection);
	if (!owner)
		return fail(col, DB_ERROR_FAILED, "the creator is gone");
	if (db_registry_check_allocation(b->reg, owner, col->plan.size, col->plan.buffer_count) <
		    0 ||
	    db_fdstore_reserve(b, col->plan.buffer_count) < 0) {
		uint64_t value;
		const char *limit = db_registry_exceeded(b->reg, &value);

		return fail(col, DB_ERROR_QUOTA_EXCEEDED,
			    "%u buffers of %zu bytes for the creator (%s): %s (%" PRIu64
			    ") would be exceeded",
			    col->plan.buffer_count, col->plan.size, owner->name, limit, value);
	}
	for (uint32_t k = 0; k < col->plan.buffer_count; k++) {
		_cleanup_(closep) int fd = -1;
		const char *backend = NULL;
		struct db_buffer *buf;
		char name[64];
		size_t size;

		r = allocate_backing(&col->plan, &backend, &fd);
		if (r < 0) {
			undo_buffers(col);
			return fail(col, r == -ENOMEM ? DB_ERROR_NO_MEMORY : DB_ERROR_NO_DEVICE,
				    "%s could not allocate buffer %u of %u (%zu bytes): %s",
				    col->plan.backend, k + 1, col->plan.buffer_count,
				    col->plan.size, strerror(-r));
		}
		if (fd_get_size(fd, &size) < 0 || size < col->plan.size)
			size = col->plan.size;
		snprintf(name, sizeof(name), "%s", col->name[0] ? col->name : "collection");
		if (col->plan.is_dmabuf)
			(void)db_dmabuf_set_name(fd, name);
		r = db_registry_add_buffer(
			b->reg, owner, fd, size, &col->plan.layout, backend,
			(col->plan.is_dmabuf ? DB_BUFFER_DMABUF : 0) |
				(col->plan.contiguous ? DB_BUFFER_CONTIGUOUS : 0),
			name, NULL, &buf);
		if (r < 0) {
			uint64_t value;
			const char *limit = db_registry_exceeded(b->reg, &value);

			undo_buffers(col);
			return fail(col, DB_ERROR_QUOTA_EXCEEDED,
				    "buffer %u of %u for the creator: %s (%" PRIu64
				    ") would be exceeded",
				    k + 1, col->plan.buffer_count, limit, value);
		}
		fd = -1; /* the registry owns it */
		g_array_append_val(col->buffer_ids, buf->id);
		for (guint i = 0; i < n; i++) {
			struct participant *p = g_ptr_array_index(col->participants, i);
			struct db_client *c = db_registry_find_client(b->reg, p->client_id);
			struct db_attachment *a;

			if (!c)
				continue;
			r = db_registry_attach(b->reg, c, buf, &a);
			if (r < 0) {
				uint64_t value;
				const char *limit = db_registry_exceeded(b->reg, &value);

				undo_buffers(col);
				return fail(col, DB_ERROR_QUOTA_EXCEEDED,
					    "%s cannot hold %u more buffers: %s (%" PRIu64
					    ") would be exceeded",
					    p->label, col->plan.buffer_count, limit, value);
			}
			p->path = a->path;
		}
	}
	col->state = COLLECTION_ALLOCATED;
	col->deadline = sd_event_source_disable_unref(col->deadline);
	log_info("Collection %s allocated %u x %zu bytes from %s for %zu participant(s)%s%s",
		 collection_path(col, path, sizeof(path)), col->plan.buffer_count, col->plan.size,
		 col->plan.backend, n, col->plan.note[0] ? ": " : "", col->plan.note);
	{
		g_autofree char *outcome = describe_outcome(col);

		tell_monitor(col, "collection-allocated", outcome);
	}
	for (guint i = 0; i < n; i++) {
		struct participant *p = g_ptr_array_index(col->participants, i);

		p->allocated = true;
		reply_wait_allocated(col, p);
	}
}

/* Allocates when every participant has set constraints and the creator committed (or the
 * expected number is there); force: the deadline passed, the silent ones are gone. */
static void try_allocate(struct collection *col, bool force)
{
	unsigned n_set = 0;

	if (col->state != COLLECTION_NEGOTIATING)
		return;
	for (guint i = 0; i < col->participants->len; i++)
		n_set += ((struct participant *)g_ptr_array_index(col->participants, i))
				 ->has_constraints;
	if (!force) {
		if (n_set < col->participants->len)
			return;
		if (!col->committed && !(col->expected && n_set >= col->expected))
			return;
	}
	if (n_set == 0)
		return fail(col, DB_ERROR_INVALID_ARGUMENT,
			    "no participant set constraints within CollectionDeadlineSec (%u s)",
			    col->b->config.collection_deadline_ms / 1000);
	allocate(col);
}

/* Takes p out of col (p is freed). Before allocation the rest may now be complete. */
static void remove_participant(struct collection *col, guint index, bool detach, const char *why)
{
	struct db_broker *b = col->b;
	struct participant *p = g_ptr_array_index(col->participants, index);
	struct db_client *c = db_registry_find_client(b->reg, p->client_id);

	reply_wait_error(b, p, DB_ERROR_NOT_FOUND, why);
	if (detach && c && p->allocated)
		for (guint i = 0; i < col->buffer_ids->len; i++) {
			struct db_buffer *buf = db_registry_find_buffer(
				b->reg, g_array_index(col->buffer_ids, uint64_t, i));

			/* It may have released some itself. */
			if (buf && db_buffer_find_attachment(buf, c))
				db_registry_detach(b->reg, c, buf);
		}
	g_ptr_array_remove_index(col->participants, index);
}

static void destroy(struct collection *col)
{
	struct db_broker *b = col->b;

	for (guint i = 0; i < col->participants->len; i++)
		reply_wait_error(b, g_ptr_array_index(col->participants, i), DB_ERROR_NOT_FOUND,
				 "the collection is gone");
	g_hash_table_remove(b->collections->by_id, &col->id);
}

/*
 * A participant leaves (or its client goes). The creator leaving a negotiation ends it for
 * everyone; anyone else is dropped and the rest go on. An empty collection goes.
 * Returns true if col was freed.
 */
static bool leave(struct collection *col, guint index, bool detach)
{
	struct participant *p = g_ptr_array_index(col->participants, index);
	bool creator = p->client_id == col->creator_id;
	char label[sizeof(p->label)];

	snprintf(label, sizeof(label), "%s", p->label);
	remove_participant(col, index, detach, "you left the collection");
	if (creator && col->state == COLLECTION_NEGOTIATING)
		fail(col, DB_ERROR_NOT_FOUND, "its creator, %s, left before the allocation", label);
	if (col->participants->len == 0) {
		destroy(col);
		return true;
	}
	col->dirty = true;
	return false;
}

static int on_recheck(sd_event_source *s, void *userdata)
{
	struct db_broker *b = userdata;
	GHashTableIter it;
	gpointer v;

	/* try_allocate() adds no collection and removes none: the walk stays valid. */
	g_hash_table_iter_init(&it, b->collections->by_id);
	while (g_hash_table_iter_next(&it, NULL, &v)) {
		struct collection *col = v;

		if (col->dirty) {
			col->dirty = false;
			try_allocate(col, false);
		}
	}
	return 0;
}

static void schedule_recheck(struct db_broker *b)
{
	struct db_collections *cs = b->collections;

	if (!cs->recheck && sd_event_add_defer(b->event, &cs->recheck, on_recheck, b) < 0)
		return;
	(void)sd_event_source_set_enabled(cs->recheck, SD_EVENT_ONESHOT);
}

void db_collections_client_leaving(struct db_broker *b, struct db_client *c)
{
	GHashTableIter it;
	gpointer v;
	bool any = false;

	if (!b->collections)
		return;
	g_hash_table_iter_init(&it, b->collections->by_id);
	while (g_hash_table_iter_next(&it, NULL, &v)) {
		struct collection *col = v;
		guint index;
		struct participant *p = find_participant(col, c->id, &index);

		if (!p)
			continue;
		/* Its connection is gone: there is nobody to answer. */
		p->wait = sd_bus_message_unref(p->wait);
		/* The registry is dropping its attachments itself; allocating here would change
		 * the registry inside its own hook, so that waits for the defer source. */
		if (!leave(col, index, false))
			any = true;
		else
			g_hash_table_iter_init(&it, b->collections->by_id);
	}
	if (any)
		schedule_recheck(b);
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct collection *col = userdata;
	char path[128];

	col->deadline = sd_event_source_disable_unref(col->deadline);
	if (col->state != COLLECTION_NEGOTIATING)
		return 0;
	db_join_tokens_clear(col->tokens);
	/* The creator stays (its buffers are charged to it); silent others are dropped. */
	for (guint i = col->participants->len; i-- > 0;) {
		struct participant *p = g_ptr_array_index(col->participants, i);

		if (p->has_constraints || p->client_id == col->creator_id)
			continue;
		log_info("Collection %s: dropping %s, which set no constraints within "
			 "CollectionDeadlineSec",
			 collection_path(col, path, sizeof(path)), p->label);
		remove_participant(col, i, false,
				   "dropped: no constraints were set within CollectionDeadlineSec");
	}
	{
		struct participant *creator = find_participant(col, col->creator_id, NULL);

		/* A silent creator takes the buffers as they come. */
		if (creator && !creator->has_constraints)
			creator->has_constraints = true;
	}
	try_allocate(col, true);
	return 0;
}

/* --- reading arguments --- */

static int get_collection(struct db_broker *b, sd_bus_message *m, struct db_client *c,
			  struct collection **ret_col, struct participant **ret_p, guint *ret_index,
			  sd_bus_error *error)
{
	const char *path, *tail;
	struct collection *col = NULL;
	struct participant *p;
	uint64_t id = 0;
	char *end;
	int r;

	r = db_bus_read_path(m, "collection", &path, error);
	if (r < 0)
		return r;
	tail = g_str_has_prefix(path, DB_COLLECTION_PATH_PREFIX "/")
		       ? path + strlen(DB_COLLECTION_PATH_PREFIX "/")
		       : NULL;
	if (tail && *tail >= '1' && *tail <= '9') {
		id = g_ascii_strtoull(tail, &end, 10);
		if (*end == '\0')
			col = g_hash_table_lookup(b->collections->by_id, &id);
	}
	/* Not taking part is answered like not existing: collections are private. */
	p = col ? find_participant(col, c->id, ret_index) : NULL;
	if (!p)
		return sd_bus_error_setf(error, DB_ERROR_NOT_FOUND,
					 "no collection %s that you take part in", path);
	*ret_col = col;
	*ret_p = p;
	return 0;
}

/* Who calls and on which collection: the start of every method on a collection. */
struct method_call {
	struct db_client *c;
	struct collection *col;
	struct participant *p;
	guint index;
};

/* Reads the caller and the collection argument; a failed collection answers with its
 * failure unless the method works on failed ones too (leaving). */
static int enter_method(struct db_broker *b, sd_bus_message *m, bool failed_ok,
			struct method_call *ret, sd_bus_error *error)
{
	int r;

	r = db_bus_get_caller(b, m, &ret->c, error);
	if (r < 0)
		return r;
	r = get_collection(b, m, ret->c, &ret->col, &ret->p, &ret->index, error);
	if (r < 0)
		return r;
	if (!failed_ok && ret->col->state == COLLECTION_FAILED)
		return sd_bus_error_setf(error, ret->col->failure_name, "%s", ret->col->failure);
	return 0;
}

/* Sets p's constraints from sc (taken, cleared on error); the last ones stay on error. */
static int apply_constraints(struct db_broker *b, struct db_client *c, struct participant *p,
			     struct db_constraint_args sc, sd_bus_error *error)
{
	struct db_constraints_error err = {0};
	const struct db_device *dev = NULL;
	char label[sizeof(p->label)];
	const char *device;
	bool known_device = false;
	int r;

	device = sc.device ? sc.device : "";
	sc.device = NULL;
	for (size_t i = 0; c->devices && c->devices[i]; i++)
		known_device |= strcmp(c->devices[i], device) == 0;
	if (device[0] && !known_device) {
		char shown[80];

		db_constraint_args_clear(&sc);
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "constraints: device '%s' is not one this client "
					 "registered",
					 db_text_escape(device, shown, sizeof(shown)));
	}
	if (!device[0] && c->devices && c->devices[0] && !c->devices[1])
		device = c->devices[0];
	if (device[0] && b->devices)
		dev = db_devices_find(b->devices, device);
	/* Names and devices come from the registration, which checked them as text. */
	if (device[0])
		snprintf(label, sizeof(label), "%s (%s%s%s)", c->name[0] ? c->name : "client",
			 dev && dev->driver[0] ? dev->driver : "",
			 dev && dev->driver[0] ? ", " : "", device);
	else
		snprintf(label, sizeof(label), "%s (client %" PRIu64 ")",
			 c->name[0] ? c->name : "client", c->id);
	sc.c.name = label;
	sc.c.dynamic = c->dynamic;
	r = db_constraints_validate(&sc.c, &err);
	if (r < 0) {
		/* What the participant set before stays. */
		db_constraint_args_clear(&sc);
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT, "constraints: %s",
					 err.message);
	}
	memcpy(p->label, label, sizeof(label));
	db_constraint_args_clear(&p->sc);
	p->sc = sc;
	/* Point into the stored copy. */
	p->sc.c.name = p->label;
	db_constraint_args_relink(&p->sc);
	return 0;
}

static int read_constraints(struct db_broker *b, sd_bus_message *m, struct db_client *c,
			    struct participant *p, sd_bus_error *error)
{
	struct db_constraint_args sc;
	int r;

	r = db_args_constraints(m, &sc, error);
	if (r < 0)
		return r;
	return apply_constraints(b, c, p, sc, error);
}

/* --- methods --- */

int db_collection_method_create(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	const struct db_limits *limits = db_registry_limits(b->reg);
	struct db_collection_args args;
	const char *name;
	uint32_t expected;
	struct collection *col;
	struct participant *p;
	struct db_client *c;
	char path[128];
	int r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = db_args_create_collection(m, &args, error);
	if (r < 0)
		return r;
	name = args.name;
	expected = args.participants;
	if (db_registry_check_name(b->reg, name) < 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "name is longer than MaxNameLength (%" PRIu64
					 ") or not printable ASCII",
					 limits->max_name_length);
	if (expected > limits->max_participants_per_collection)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "participants: %u is over MaxParticipantsPerCollection "
					 "(%" PRIu64 ")",
					 expected, limits->max_participants_per_collection);
	if (collections_of_client(b, c->id) >= limits->max_collections_per_client)
		return sd_bus_error_setf(error, DB_ERROR_QUOTA_EXCEEDED,
					 "MaxCollectionsPerClient (%" PRIu64 ") would be exceeded",
					 limits->max_collections_per_client);
	col = g_new0(struct collection, 1);
	col->b = b;
	col->id = b->collections->next_id++;
	snprintf(col->name, sizeof(col->name), "%s", name);
	col->creator_id = c->id;
	col->expected = expected;
	col->participants = g_ptr_array_new_with_free_func((GDestroyNotify)participant_free);
	col->tokens = db_join_tokens_new();
	col->buffer_ids = g_array_new(FALSE, FALSE, sizeof(uint64_t));
	p = g_new0(struct participant, 1);
	p->client_id = c->id;
	snprintf(p->label, sizeof(p->label), "%s (client %" PRIu64 ")",
		 c->name[0] ? c->name : "client", c->id);
	g_ptr_array_add(col->participants, p);
	r = sd_event_add_time_relative(b->event, &col->deadline, CLOCK_MONOTONIC,
				       (uint64_t)b->config.collection_deadline_ms * 1000, 0,
				       on_deadline, col);
	if (r < 0) {
		collection_free(col);
		return r;
	}
	g_hash_table_insert(b->collections->by_id, &col->id, col);
	log_debug("Client %" PRIu64 " created collection %s", c->id,
		  collection_path(col, path, sizeof(path)));
	return sd_bus_reply_method_return(m, "o", path);
}

int db_collection_method_token(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	const struct db_limits *limits = db_registry_limits(b->reg);
	struct method_call mc;
	struct db_token_bytes t;
	uint64_t now = now_usec();
	int r;

	r = enter_method(b, m, false, &mc, error);
	if (r < 0)
		return r;
	db_join_tokens_expire(mc.col->tokens, now);
	/* Every token may become a participant: both count against the one limit. */
	if (mc.col->participants->len + db_join_tokens_count(mc.col->tokens) >=
	    limits->max_participants_per_collection)
		return sd_bus_error_setf(error, DB_ERROR_QUOTA_EXCEEDED,
					 "MaxParticipantsPerCollection (%" PRIu64
					 ") would be exceeded (participants and unused tokens)",
					 limits->max_participants_per_collection);
	r = db_join_tokens_add(mc.col->tokens,
			       now + (uint64_t)b->config.collection_deadline_ms * 1000, &t);
	if (r < 0)
		return r;
	return db_bus_reply_token(m, &t);
}

int db_collection_method_join(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	const struct db_limits *limits = db_registry_limits(b->reg);
	struct db_token_bytes token;
	struct collection *found = NULL;
	struct participant *p;
	struct db_client *c;
	GHashTableIter it;
	uint64_t now = now_usec();
	unsigned found_index = 0;
	gpointer v;
	char path[128];
	int r;

	r = db_bus_get_caller(b, m, &c, error);
	if (r < 0)
		return r;
	r = db_bus_read_token(m, &token, error);
	if (r < 0)
		return r;
	g_hash_table_iter_init(&it, b->collections->by_id);
	while (g_hash_table_iter_next(&it, NULL, &v)) {
		struct collection *col = v;
		unsigned i;

		/* Every collection is looked at: no early exit here either. */
		if (db_join_tokens_find(col->tokens, &token, now, &i)) {
			found = col;
			found_index = i;
		}
	}
	if (!found)
		return sd_bus_error_setf(error, DB_ERROR_NOT_FOUND,
					 "no such collection token: it was never issued, was "
					 "used, expired, or its collection ended");
	if (find_participant(found, c->id, NULL))
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "you take part in %s already",
					 collection_path(found, path, sizeof(path)));
	if (collections_of_client(b, c->id) >= limits->max_collections_per_client)
		return sd_bus_error_setf(error, DB_ERROR_QUOTA_EXCEEDED,
					 "MaxCollectionsPerClient (%" PRIu64 ") would be exceeded",
					 limits->max_collections_per_client);
	if (found->state == COLLECTION_FAILED)
		return sd_bus_error_setf(error, found->failure_name, "%s", found->failure);
	/* Single use: the token becomes this participant. */
	db_join_tokens_take(found->tokens, found_index);
	p = g_new0(struct participant, 1);
	p->client_id = c->id;
	snprintf(p->label, sizeof(p->label), "%s (client %" PRIu64 ")",
		 c->name[0] ? c->name : "client", c->id);
	g_ptr_array_add(found->participants, p);
	log_debug("Client %" PRIu64 " joined collection %s", c->id,
		  collection_path(found, path, sizeof(path)));
	return sd_bus_reply_method_return(m, "o", path);
}

/* A participant that joins an allocated collection: does it fit what is there? */
static int join_late(struct collection *col, struct participant *p, struct db_client *c,
		     sd_bus_error *error)
{
	struct db_broker *b = col->b;
	struct db_constraints_error err = {0};
	struct db_constraints_fit fit;
	struct db_constraints cons = p->sc.c;
	guint attached = 0;
	int r;

	cons.name = p->label;
	cons.dynamic = c->dynamic;
	r = db_constraints_check_joiner(&col->plan, &cons, 0, &fit, &err);
	if (r == -EOPNOTSUPP)
		return sd_bus_error_setf(error, DB_ERROR_UNSUPPORTED,
					 "the collection's buffers do not fit %s: %s", p->label,
					 err.message);
	if (r < 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT, "constraints: %s",
					 err.message);
	for (guint i = 0; i < col->buffer_ids->len; i++) {
		struct db_buffer *buf = db_registry_find_buffer(
			b->reg, g_array_index(col->buffer_ids, uint64_t, i));
		struct db_attachment *a;

		if (!buf || buf->lingering)
			continue;
		r = db_registry_attach(b->reg, c, buf, &a);
		if (r < 0) {
			uint64_t value;
			const char *limit = db_registry_exceeded(b->reg, &value);

			for (guint k = 0; k < i; k++) {
				struct db_buffer *done = db_registry_find_buffer(
					b->reg, g_array_index(col->buffer_ids, uint64_t, k));

				if (done && db_buffer_find_attachment(done, c))
					db_registry_detach(b->reg, c, done);
			}
			return sd_bus_error_setf(error, DB_ERROR_QUOTA_EXCEEDED,
						 "%s (%" PRIu64 ") would be exceeded", limit,
						 value);
		}
		p->path = a->path;
		attached++;
	}
	if (!attached)
		return sd_bus_error_setf(error, DB_ERROR_NOT_FOUND,
					 "every buffer of the collection is gone");
	col->plan.camping_total += p->sc.c.min_buffer_count_for_camping;
	p->allocated = true;
	return 0;
}

int db_collection_method_set_constraints(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	struct method_call mc;
	int r;

	r = enter_method(b, m, false, &mc, error);
	if (r < 0)
		return r;
	if (mc.p->allocated)
		return sd_bus_error_setf(error, DB_ERROR_BUSY,
					 "the buffers are allocated: leave, and negotiate a new "
					 "collection for other constraints");
	r = read_constraints(b, m, mc.c, mc.p, error);
	if (r < 0)
		return r;
	if (mc.col->state == COLLECTION_ALLOCATED) {
		r = join_late(mc.col, mc.p, mc.c, error);
		if (r < 0)
			return r;
		mc.p->has_constraints = true;
		r = sd_bus_reply_method_return(m, NULL);
		reply_wait_allocated(mc.col, mc.p);
		return r;
	}
	mc.p->has_constraints = true;
	r = sd_bus_reply_method_return(m, NULL);
	try_allocate(mc.col, false);
	return r;
}

int db_collection_method_commit(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	struct method_call mc;
	int r;

	r = enter_method(b, m, false, &mc, error);
	if (r < 0)
		return r;
	if (mc.c->id != mc.col->creator_id)
		return sd_bus_error_setf(error, DB_ERROR_PERMISSION_DENIED,
					 "only the collection's creator commits it");
	mc.col->committed = true;
	r = sd_bus_reply_method_return(m, NULL);
	try_allocate(mc.col, false);
	return r;
}

int db_collection_method_wait(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	struct method_call mc;
	int r;

	r = enter_method(b, m, false, &mc, error);
	if (r < 0)
		return r;
	/* One answer owed per participant bounds what the daemon keeps for it. */
	if (mc.p->wait)
		return sd_bus_error_setf(error, DB_ERROR_BUSY,
					 "a WaitCollection of yours is waiting already");
	mc.p->wait = sd_bus_message_ref(m);
	if (mc.p->allocated)
		reply_wait_allocated(mc.col, mc.p);
	return 1;
}

int db_collection_method_get_buffers(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	struct db_buffer *bufs[DB_ALLOCATE_MANY_MAX];
	struct method_call mc;
	uint32_t first, count;
	int r;

	r = enter_method(b, m, false, &mc, error);
	if (r < 0)
		return r;
	r = sd_bus_message_read(m, "uu", &first, &count);
	if (r < 0)
		return r;
	if (!mc.p->allocated)
		return sd_bus_error_setf(error, DB_ERROR_BUSY,
					 "the collection has no buffers for you yet: call "
					 "WaitCollection first");
	if (count == 0 || count > DB_ALLOCATE_MANY_MAX || first >= mc.col->buffer_ids->len ||
	    count > mc.col->buffer_ids->len - first)
		return sd_bus_error_setf(
			error, DB_ERROR_INVALID_ARGUMENT,
			"%u buffers from buffer %u: the collection has %u; ask for 1 "
			"to %d at a time (the bus carries at most 16 descriptors in "
			"one message)",
			count, first, mc.col->buffer_ids->len, DB_ALLOCATE_MANY_MAX);
	for (uint32_t i = 0; i < count; i++) {
		bufs[i] = db_registry_find_buffer(
			b->reg, g_array_index(mc.col->buffer_ids, uint64_t, first + i));
		if (!bufs[i] || bufs[i]->lingering || !db_buffer_find_attachment(bufs[i], mc.c))
			return sd_bus_error_setf(error, DB_ERROR_NOT_FOUND,
						 "you released buffer %u of the collection",
						 first + i);
	}
	r = sd_bus_message_new_method_return(m, &reply);
	if (r >= 0)
		r = db_bus_append_buffers(reply, bufs, count);
	if (r < 0)
		return r;
	return sd_bus_send(NULL, reply, NULL);
}

int db_collection_method_leave(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	struct method_call mc;
	int r;

	r = enter_method(b, m, true, &mc, error);
	if (r < 0)
		return r;
	if (!leave(mc.col, mc.index, true))
		try_allocate(mc.col, false);
	return sd_bus_reply_method_return(m, NULL);
}

/* --- listing --- */

static void describe_constraints(const struct db_constraints *c, char *out, size_t len)
{
	GString *s = g_string_new(NULL);
	char f[5];

	if (c->min_buffer_count_for_camping)
		g_string_append_printf(s, ", camping %u", c->min_buffer_count_for_camping);
	if (c->min_buffer_count || c->max_buffer_count)
		g_string_append_printf(s, ", buffers %u..%u", c->min_buffer_count,
				       c->max_buffer_count);
	if (c->min_size || c->max_size)
		g_string_append_printf(s, ", size %" PRIu64 "..%" PRIu64, c->min_size, c->max_size);
	for (size_t i = 0; i < c->n_fourccs; i++)
		g_string_append_printf(s, "%s%s", i ? "/" : ", ", db_fourcc_str(c->fourccs[i], f));
	if (c->width || c->height)
		g_string_append_printf(s, ", %ux%u", c->width, c->height);
	if (c->min_stride[0])
		g_string_append_printf(s, ", stride >= %u", c->min_stride[0]);
	if (c->stride_divisor)
		g_string_append_printf(s, ", stride %% %u", c->stride_divisor);
	if (c->offset_divisor)
		g_string_append_printf(s, ", offset %% %u", c->offset_divisor);
	if (c->contiguous)
		g_string_append(s, ", contiguous");
	if (c->max_segment_size)
		g_string_append_printf(s, ", segments <= %" PRIu64, c->max_segment_size);
	if (c->dma_address_bits)
		g_string_append_printf(s, ", %u-bit DMA", c->dma_address_bits);
	if (c->device)
		g_string_append(s, ", device import");
	for (size_t i = 0; i < c->n_backends; i++)
		g_string_append_printf(s, "%s%s", i ? "/" : ", backends ", c->backends[i]);
	if (c->cpu_read || c->cpu_write)
		g_string_append_printf(s, ", CPU %s%s", c->cpu_read ? "r" : "",
				       c->cpu_write ? "w" : "");
	snprintf(out, len, "%s", s->len ? s->str + 2 : "none");
	g_string_free(s, TRUE);
}

static bool collection_visible(struct db_broker *b, const struct collection *col, uid_t uid)
{
	if (uid == 0)
		return true;
	for (guint i = 0; i < col->participants->len; i++) {
		const struct participant *p = g_ptr_array_index(col->participants, i);
		struct db_client *c = db_registry_find_client(b->reg, p->client_id);

		if (c && c->uid == uid)
			return true;
	}
	return false;
}

static int append_collection(struct db_broker *b, sd_bus_message *reply, struct collection *col)
{
	struct db_client *creator = db_registry_find_client(b->reg, col->creator_id);
	char path[128], cpath[128], text[512];
	int r;

	r = sd_bus_message_open_container(reply, 'a', "{sv}");
	if (r >= 0)
		r = sd_bus_message_append(
			reply, "{sv}{sv}{sv}{sv}{sv}", "collection", "o",
			collection_path(col, path, sizeof(path)), "name", "s", col->name, "state",
			"s", state_names[col->state], "committed", "b", (int)col->committed,
			"creator", "o",
			creator ? db_bus_client_path(creator, cpath, sizeof(cpath)) : "/");
	if (r >= 0 && col->state == COLLECTION_FAILED)
		r = sd_bus_message_append(reply, "{sv}", "outcome", "s", col->failure);
	if (r >= 0 && col->state == COLLECTION_ALLOCATED) {
		g_autofree char *outcome = describe_outcome(col);

		r = sd_bus_message_append(reply, "{sv}", "outcome", "s", outcome);
	}
	if (r >= 0)
		r = sd_bus_message_open_container(reply, 'e', "sv");
	if (r >= 0)
		r = sd_bus_message_append_basic(reply, 's', "participants");
	if (r >= 0)
		r = sd_bus_message_open_container(reply, 'v', "aa{sv}");
	if (r >= 0)
		r = sd_bus_message_open_container(reply, 'a', "a{sv}");
	for (guint i = 0; r >= 0 && i < col->participants->len; i++) {
		struct participant *p = g_ptr_array_index(col->participants, i);
		struct db_client *c = db_registry_find_client(b->reg, p->client_id);

		if (p->has_constraints)
			describe_constraints(&p->sc.c, text, sizeof(text));
		else
			snprintf(text, sizeof(text), "not set");
		r = sd_bus_message_append(reply, "a{sv}", 4, "client", "o",
					  c ? db_bus_client_path(c, cpath, sizeof(cpath)) : "/",
					  "label", "s", p->label, "constraints", "s", text, "path",
					  "s", p->allocated ? db_attach_path_name(p->path) : "");
	}
	for (int k = 0; r >= 0 && k < 4; k++)
		r = sd_bus_message_close_container(reply);
	return r;
}

int db_collection_method_list(sd_bus_message *m, void *userdata, sd_bus_error *error)
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
	g_hash_table_iter_init(&it, b->collections->by_id);
	while (r >= 0 && g_hash_table_iter_next(&it, NULL, &v))
		if (collection_visible(b, v, uid))
			r = append_collection(b, reply, v);
	if (r >= 0)
		r = sd_bus_message_close_container(reply);
	if (r < 0)
		return r;
	return sd_bus_send(NULL, reply, NULL);
}

/* --- for streams (stream.c) --- */

static struct collection *collection_from_path(struct db_broker *b, const char *path)
{
	const char *tail = g_str_has_prefix(path, DB_COLLECTION_PATH_PREFIX "/")
				   ? path + strlen(DB_COLLECTION_PATH_PREFIX "/")
				   : NULL;
	uint64_t id;
	char *end;

	if (!tail || *tail < '1' || *tail > '9')
		return NULL;
	id = g_ascii_strtoull(tail, &end, 10);
	return *end == '\0' ? g_hash_table_lookup(b->collections->by_id, &id) : NULL;
}

int db_collection_check_holder(struct db_broker *b, const char *path, struct db_client *c,
			       uint32_t *ret_buffer_count, sd_bus_error *error)
{
	struct collection *col = collection_from_path(b, path);
	struct participant *p = col ? find_participant(col, c->id, NULL) : NULL;

	if (!p)
		return sd_bus_error_setf(error, DB_ERROR_NOT_FOUND,
					 "no collection %s that you take part in", path);
	if (col->state == COLLECTION_FAILED)
		return sd_bus_error_setf(error, col->failure_name, "%s", col->failure);
	if (!p->allocated)
		return sd_bus_error_setf(error, DB_ERROR_BUSY,
					 "the collection %s has no buffers for you yet: a stream "
					 "needs an allocated collection (WaitCollection first)",
					 path);
	*ret_buffer_count = col->buffer_ids->len;
	return 0;
}

int db_collection_join_for_stream(struct db_broker *b, const char *path, struct db_client *c,
				  struct db_constraint_args *sc, uint32_t *ret_buffer_count,
				  bool *ret_joined, sd_bus_error *error)
{
	const struct db_limits *limits = db_registry_limits(b->reg);
	struct collection *col = collection_from_path(b, path);
	struct participant *p;
	guint index;
	int r;

	*ret_joined = false;
	if (!col || col->state != COLLECTION_ALLOCATED) {
		if (sc)
			db_constraint_args_clear(sc);
		return sd_bus_error_setf(error, DB_ERROR_NOT_FOUND,
					 "the stream's collection %s is gone (collections do not "
					 "survive a restart of the broker): the stream takes no "
					 "new consumers",
					 path);
	}
	p = find_participant(col, c->id, NULL);
	if (p) {
		if (sc)
			db_constraint_args_clear(sc);
		if (!p->allocated)
			return sd_bus_error_setf(error, DB_ERROR_BUSY,
						 "you take part in %s, and have set no constraints "
						 "yet: set them, or join the stream without",
						 path);
		*ret_buffer_count = col->buffer_ids->len;
		return 0;
	}
	if (collections_of_client(b, c->id) >= limits->max_collections_per_client) {
		if (sc)
			db_constraint_args_clear(sc);
		return sd_bus_error_setf(error, DB_ERROR_QUOTA_EXCEEDED,
					 "joining the stream's collection: MaxCollectionsPerClient "
					 "(%" PRIu64 ") would be exceeded",
					 limits->max_collections_per_client);
	}
	if (col->participants->len >= limits->max_participants_per_collection) {
		if (sc)
			db_constraint_args_clear(sc);
		return sd_bus_error_setf(error, DB_ERROR_QUOTA_EXCEEDED,
					 "joining the stream's collection: "
					 "MaxParticipantsPerCollection (%" PRIu64
					 ") would be exceeded",
					 limits->max_participants_per_collection);
	}
	p = g_new0(struct participant, 1);
	p->client_id = c->id;
	snprintf(p->label, sizeof(p->label), "%s (client %" PRIu64 ")",
		 c->name[0] ? c->name : "client", c->id);
	g_ptr_array_add(col->participants, p);
	index = col->participants->len - 1;
	r = sc ? apply_constraints(b, c, p, *sc, error) : 0;
	if (sc)
		*sc = (struct db_constraint_args){0}; /* p's now, or cleared */
	if (r >= 0)
		r = join_late(col, p, c, error);
	if (r < 0) {
		g_ptr_array_remove_index(col->participants, index);
		return r;
	}
	p->has_constraints = true;
	*ret_buffer_count = col->buffer_ids->len;
	*ret_joined = true;
	return 0;
}

void db_collection_drop_participant(struct db_broker *b, const char *path, struct db_client *c)
{
	struct collection *col = collection_from_path(b, path);
	guint index;

	if (col && find_participant(col, c->id, &index))
		(void)leave(col, index, true);
}
