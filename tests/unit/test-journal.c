// SPDX-License-Identifier: MIT
/*
 * The registry's journal without a bus or systemd: every record round-trips, a torn tail or
 * garbage is ignored, compaction keeps the state, and replaying into a new registry gives
 * the registry the changes were made in.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"
#include "macros.h"
#include "registry.h"
#include "tap.h"

#define NOW (1000ull * 1000000ull) /* "now", in CLOCK_MONOTONIC microseconds */

/* The observer under test: the journal's encoding of every change, in memory. */
static void record_change(const struct db_change *change, void *userdata)
{
	db_journal_encode_change(userdata, change, NOW);
}

static int some_fd(void)
{
	return memfd_create("test", MFD_CLOEXEC);
}

static struct db_client *client(struct db_registry *reg, const char *bus_name, uid_t uid,
				bool dynamic)
{
	const char *const devices[] = {"/dev/dri/renderD128", "/dev/video0", NULL};
	struct db_client *c = NULL;

	tap_require(db_registry_add_client(reg, bus_name, uid, 42, "gpu", dynamic, "app", devices,
					   &c) == 0,
		    "register %s", bus_name);
	return c;
}

static struct db_buffer *buffer(struct db_registry *reg, struct db_client *owner,
				struct db_client *exporter, size_t size)
{
	struct db_layout layout = {
		.width = 64, .height = 16, .fourcc = 0x34325258, .n_planes = 1, .strides = {256}};
	struct db_buffer *buf = NULL;

	/* Quiet when it works: the cost test adds thousands. */
	if (db_registry_add_buffer(reg, owner, some_fd(), size, &layout,
				   exporter ? "export" : "memfd", exporter ? DB_BUFFER_DMABUF : 0,
				   "buf", exporter, &buf) < 0)
		tap_require(false, "add a buffer");
	return buf;
}

static struct db_token *share(struct db_registry *reg, struct db_client *c, struct db_buffer *buf,
			      bool single_use, uint64_t expires, bool bound)
{
	struct db_token *t = NULL;

	tap_require(db_registry_share(reg, c, buf, single_use, expires, bound, c->uid, NOW, &t) ==
			    0,
		    "share");
	return t;
}

static void move(struct db_registry *reg, struct db_buffer *buf)
{
	tap_require(db_registry_reserve_move(reg, buf) == 0 &&
			    db_registry_begin_move(reg, buf, some_fd()) == 0,
		    "begin a move of buffer %" PRIu64, buf->id);
}

/* A registry that went through every kind of change. */
static struct db_registry *busy_registry(GByteArray *log)
{
	struct db_limits limits;
	struct db_registry *reg;
	struct db_client *a, *b, *c, *gone;
	struct db_buffer *x, *y, *z, *freed;
	struct db_token *t;
	struct db_attachment *att;

	db_limits_init_default(&limits);
	reg = db_registry_new(&limits);
	if (log) {
		db_registry_set_hooks(reg, &(struct db_registry_hooks){
						   .changed = record_change,
						   .userdata = log,
					   });
		db_journal_encode_snapshot(log, reg, NULL, 1, NOW);
	}
	a = client(reg, ":1.10", 1000, true);
	b = client(reg, ":1.11", 1001, false);
	c = client(reg, ":1.12", 1000, true);
	x = buffer(reg, a, NULL, 1 << 20);
	y = buffer(reg, b, b, 4096); /* exported by a static client: b's attachment is direct */
	z = buffer(reg, a, NULL, 8192);
	db_registry_attach(reg, b, x, NULL); /* b is static, x dynamic: cached, pinned */
	db_registry_attach(reg, c, z, NULL);
	db_registry_attach(reg, a, y, NULL);
	share(reg, a, x, false, 0, false);
	share(reg, a, x, false, NOW + 3600ull * 1000000, true);
	t = share(reg, a, z, true, 0, false);
	tap_require(db_registry_redeem(reg, c, &t->bytes, NOW, &att) == 0, "redeem (used up)");
	share(reg, c, z, true, NOW + 1, false); /* expires before the restore */
	/* A move waiting for one of two holders, and one that was finished. */
	move(reg, z);
	db_registry_reacquire(reg, c, z);
	freed = buffer(reg, c, NULL, 4096);
	move(reg, freed);
	db_registry_finish_move(reg, freed);
	/* A client that came and went, a buffer freed, an attachment dropped. */
	gone = client(reg, ":1.13", 1002, false);
	db_registry_attach(reg, gone, x, NULL);
	share(reg, gone, x, false, 0, false);
	db_registry_remove_client(reg, gone);
	db_registry_detach(reg, c, freed);
	db_registry_detach(reg, a, y); /* y lives on for b */
	return reg;
}

static bool client_alive(const struct db_jclient *c, void *userdata)
{
	return true;
}

static int take_new_fd(const char *name, void *userdata)
{
	return some_fd();
}

static struct db_registry *replay(const struct db_jstate *s, uint64_t now)
{
	struct db_jrestore_ops ops = {
		.client_alive = client_alive, .take_fd = take_new_fd, .now_usec = now};
	struct db_limits limits;
	struct db_registry *reg;

	db_limits_init_default(&limits);
	reg = db_registry_new(&limits);
	db_jstate_restore(s, reg, &ops, NULL);
	return reg;
}

static struct db_attachment *find_by_id(struct db_buffer *buf, uint64_t client_id)
{
	for (guint i = 0; i < buf->attachments->len; i++) {
		struct db_attachment *a = g_ptr_array_index(buf->attachments, i);

		if (a->client->id == client_id)
			return a;
	}
	return NULL;
}

/* Says the first difference between two registries, or NULL. tokens_expired: tokens of a
 * that expire before now are not expected in b. */
static const char *differs(struct db_registry *a, struct db_registry *b, uint64_t now)
{
	static char why[256];
	uint64_t a_client, a_buffer, b_client, b_buffer;
	struct db_registry_iter it;
	unsigned live_tokens = 0;
	struct db_client *xc;
	struct db_buffer *xb;
	struct db_token *xt;

	db_registry_next_ids(a, &a_client, &a_buffer);
	db_registry_next_ids(b, &b_client, &b_buffer);
	if (a_client != b_client || a_buffer != b_buffer)
		return "next ids";
	if (db_registry_n_clients(a) != db_registry_n_clients(b) ||
	    db_registry_n_buffers(a) != db_registry_n_buffers(b))
		return "number of clients or buffers";
	if (db_registry_bytes_in_use(a) != db_registry_bytes_in_use(b))
		return "bytes in use";
	db_registry_iter_clients(a, &it);
	while ((xc = db_registry_next_client(&it))) {
		struct db_client *x = xc, *y = db_registry_find_client(b, x->id);

		if (!y || strcmp(x->bus_name, y->bus_name) || x->uid != y->uid ||
		    x->pid != y->pid || strcmp(x->role, y->role) || x->dynamic != y->dynamic ||
		    strcmp(x->name, y->name) || g_strv_length(x->devices) != 2 ||
		    !g_strv_equal((const char *const *)x->devices,
				  (const char *const *)y->devices) ||
		    x->bytes_held != y->bytes_held) {
			snprintf(why, sizeof(why), "client %" PRIu64, x->id);
			return why;
		}
	}
	db_registry_iter_buffers(a, &it);
	while ((xb = db_registry_next_buffer(&it))) {
		struct db_buffer *x = xb, *y = db_registry_find_buffer(b, x->id);

		snprintf(why, sizeof(why), "buffer %" PRIu64, x->id);
		if (!y || x->size != y->size || memcmp(&x->layout, &y->layout, sizeof(x->layout)) ||
		    strcmp(x->backend, y->backend) || x->is_dmabuf != y->is_dmabuf ||
		    x->contiguous != y->contiguous || x->client_memory != y->client_memory ||
		    strcmp(x->name, y->name) || x->owner_uid != y->owner_uid ||
		    x->owner_client_id != y->owner_client_id ||
		    x->exporter_client_id != y->exporter_client_id ||
		    x->exporter_dynamic != y->exporter_dynamic || x->n_moves != y->n_moves ||
		    (x->old_fd >= 0) != (y->old_fd >= 0) || x->n_cached != y->n_cached ||
		    x->n_pending_reacquire != y->n_pending_reacquire ||
		    x->attachments->len != y->attachments->len)
			return why;
		for (guint i = 0; i < x->attachments->len; i++) {
			struct db_attachment *ax = g_ptr_array_index(x->attachments, i);
			struct db_attachment *ay = find_by_id(y, ax->client->id);

			if (!ay || ax->path != ay->path ||
			    ax->needs_reacquire != ay->needs_reacquire)
				return "an attachment";
		}
	}
	db_registry_iter_tokens(a, &it);
	while ((xt = db_registry_next_token(&it))) {
		struct db_token *x = xt, *y;

		if (x->expires_usec && x->expires_usec <= now)
			continue;
		live_tokens++;
		y = db_registry_find_token(b, &x->bytes);
		if (!y || y->buffer->id != x->buffer->id || y->issuer->id != x->issuer->id ||
		    y->single_use != x->single_use || y->expires_usec != x->expires_usec ||
		    y->uid_bound != x->uid_bound || y->uid != x->uid)
			return "a token";
	}
	if (live_tokens != db_registry_n_tokens(b))
		return "number of tokens";
	return NULL;
}

static void test_round_trip(void)
{
	g_autoptr(GByteArray) log = g_byte_array_new();
	struct db_registry *a = busy_registry(log), *b;
	_cleanup_(db_jstate_freep) struct db_jstate *s = db_jstate_new();
	const char *why;

	tap_is(db_jstate_load(s, log->data, log->len), 0, "the journal decodes");
	tap_ok(!s->torn && s->n_skipped == 0 && s->bytes_used == log->len,
	       "every byte is whole records of known types (%zu records, %u bytes)", s->n_records,
	       log->len);
	tap_is(g_hash_table_size(s->tokens), 3, "it has the live tokens, the expiring one too");
	b = replay(s, NOW + 10);
	why = differs(a, b, NOW + 10);
	tap_ok(!why, "replaying it gives the same registry%s%s", why ? ": differs in " : "",
	       why ? why : "");
	tap_is(db_registry_n_tokens(b), 2, "the expired token stays gone");
	{
		struct db_buffer *z = db_registry_find_buffer(b, 3);

		tap_ok(z && z->old_fd >= 0 && z->n_pending_reacquire == 1 && z->n_moves == 1,
		       "the pending move is back, waiting for the one holder that did not "
		       "reacquire");
	}
	tap_ok(db_registry_find_buffer(b, 4) == NULL, "a freed buffer stays freed");
	tap_ok(db_registry_find_client(b, 4) == NULL, "a removed client stays removed");
	db_registry_free(b);
	db_registry_free(a);
}

static void test_torn_tail(void)
{
	g_autoptr(GByteArray) log = g_byte_array_new();
	struct db_registry *a = busy_registry(log);
	size_t snapshot_len, bad = 0, not_prefix = 0;
	size_t prev_records = 0;

	/* The journal's own snapshot is the first thing in it. */
	{
		struct db_limits l;
		struct db_registry *empty;
		g_autoptr(GByteArray) e = g_byte_array_new();

		db_limits_init_default(&l);
		empty = db_registry_new(&l);
		db_journal_encode_snapshot(e, empty, NULL, 1, NOW);
		snapshot_len = e->len;
		db_registry_free(empty);
	}
	for (size_t len = 0; len <= log->len; len++) {
		_cleanup_(db_jstate_freep) struct db_jstate *s = db_jstate_new();
		int r = db_jstate_load(s, log->data, len);

		if (len < snapshot_len) {
			bad += r != -EBADMSG;
			continue;
		}
		if (r != 0 || s->bytes_used > len || s->n_records < prev_records ||
		    s->torn != (s->bytes_used != len))
			not_prefix++;
		prev_records = s->n_records;
	}
	tap_is(bad, 0, "cut inside the header or snapshot: refused as a whole");
	tap_is(not_prefix, 0,
	       "cut anywhere after: the whole records before the cut, the rest "
	       "ignored");
	db_registry_free(a);
}

static void test_garbage(void)
{
	g_autoptr(GByteArray) log = g_byte_array_new();
	struct db_registry *a = busy_registry(log), *b;
	_cleanup_(db_jstate_freep) struct db_jstate *s = db_jstate_new();
	size_t whole = log->len;
	unsigned crashes_or_errors = 0;
	const char *why;
	uint8_t junk[64];

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 37 + 11);
	g_byte_array_append(log, junk, sizeof(junk));
	tap_is(db_jstate_load(s, log->data, log->len), 0, "garbage after the records: decodes");
	tap_ok(s->torn && s->bytes_used == whole, "and the garbage is ignored");
	b = replay(s, NOW + 10);
	why = differs(a, b, NOW + 10);
	tap_ok(!why, "to the same registry%s%s", why ? ": differs in " : "", why ? why : "");
	db_registry_free(b);

	/* A flipped byte anywhere: never a crash, never a record past the damage. */
	g_byte_array_set_size(log, whole);
	for (size_t at = 0; at < whole; at += 7) {
		_cleanup_(db_jstate_freep) struct db_jstate *t = db_jstate_new();
		int r;

		log->data[at] ^= 0x5a;
		r = db_jstate_load(t, log->data, log->len);
		if (r == 0 && t->bytes_used > at)
			crashes_or_errors++;
		else if (r != 0 && r != -EBADMSG)
			crashes_or_errors++;
		log->data[at] ^= 0x5a;
	}
	tap_is(crashes_or_errors, 0, "a damaged byte ends the replay at the record it is in");

	/* Random data: refused. */
	{
		GRand *rand = g_rand_new_with_seed(1);
		unsigned accepted = 0;

		for (int round = 0; round < 2000; round++) {
			_cleanup_(db_jstate_freep) struct db_jstate *t = db_jstate_new();
			size_t len = g_rand_int_range(rand, 0, 512);
			uint8_t buf[512];

			for (size_t i = 0; i < len; i++)
				buf[i] = (uint8_t)g_rand_int(rand);
			accepted += db_jstate_load(t, buf, len) == 0;
		}
		g_rand_free(rand);
		tap_is(accepted, 0, "random bytes are not a journal");
	}
	db_registry_free(a);
}

/* Hostile but checksummed: lengths and counts beyond the bounds are refused, not trusted. */
static void test_bounds(void)
{
	g_autoptr(GByteArray) log = g_byte_array_new();
	struct db_limits l;
	struct db_registry *reg;
	_cleanup_(db_jstate_freep) struct db_jstate *s = db_jstate_new();

	db_limits_init_default(&l);
	reg = db_registry_new(&l);
	db_journal_encode_snapshot(log, reg, NULL, 1, NOW);
	db_registry_free(reg);
	{
		/* A client record whose device count says 200. */
		static const uint8_t payload[] = {
			1,   0, 0,   0,	  0,   0, 0, 0, /* id */
			1,   0, 'x', /* bus name */
			0,   0, 0,   0,	  0,   0, 0, 0, /* uid, pid */
			3,   0, 'c', 'p', 'u', 0, /* role, dynamic */
			0,   0, /* name */
			200, /* devices */
		};
		size_t at = log->len, rec_len = 8 + sizeof(payload) + 4;
		uint8_t hdr[8] = {(uint8_t)rec_len, 0, 0, 0, DB_JR_CLIENT_ADDED, 0, 0, 0};
		uint8_t crc[4];
		uint32_t v;

		g_byte_array_append(log, hdr, sizeof(hdr));
		g_byte_array_append(log, payload, sizeof(payload));
		/* Checksummed as the daemon would: only the bound on devices refuses it. */
		v = db_journal_crc32c(log->data + at, log->len - at);
		for (int i = 0; i < 4; i++)
			crc[i] = (uint8_t)(v >> (8 * i));
		g_byte_array_append(log, crc, sizeof(crc));
	}
	tap_is(db_jstate_load(s, log->data, log->len), 0,
	       "a checksummed record claiming 200 devices");
	tap_ok(s->torn && g_hash_table_size(s->clients) == 0, "is refused, not trusted");
}

static void test_compaction(void)
{
	struct db_registry *a = busy_registry(NULL), *b;
	_cleanup_(db_jstate_freep) struct db_jstate *s = db_jstate_new();
	_cleanup_(db_jstate_freep) struct db_jstate *s2 = db_jstate_new();
	struct db_journal *j = NULL;
	struct db_client *c;
	const char *why;
	unsigned n = 0;

	tap_is(db_journal_new(a, NULL, 7, NOW, &j), 0, "a journal from a registry's snapshot");
	tap_is(db_jstate_load_fd(s, j->fd), 0, "decodes");
	tap_is(s->generation, 7, "with its generation");
	b = replay(s, NOW + 10);
	why = differs(a, b, NOW + 10);
	tap_ok(!why, "the snapshot replays to the same registry%s%s", why ? ": differs in " : "",
	       why ? why : "");
	db_registry_free(b);

	/* Changes appended to it, until it asks for compaction. */
	db_registry_stop_changes(a);
	c = db_registry_find_client(a, 1);
	while (!db_journal_wants_compaction(j) && n < 100000) {
		struct db_buffer *buf = buffer(a, c, NULL, 4096);
		struct db_change ch = {.type = DB_CHANGE_BUFFER_ADDED, .buffer = buf};
		struct db_attachment *att = find_by_id(buf, c->id);

		db_journal_append(j, &ch, NOW);
		ch = (struct db_change){.type = DB_CHANGE_ATTACHED, .attachment = att};
		db_journal_append(j, &ch, NOW);
		ch = (struct db_change){.type = DB_CHANGE_DETACHED, .attachment = att};
		db_journal_append(j, &ch, NOW);
		ch = (struct db_change){.type = DB_CHANGE_BUFFER_FREED, .buffer = buf};
		db_journal_append(j, &ch, NOW);
		db_registry_detach(a, c, buf);
		n++;
	}
	tap_ok(db_journal_wants_compaction(j) && n < 100000,
	       "the journal asks for compaction after %u allocations (%" PRIu64 " bytes, "
	       "snapshot %" PRIu64 ")",
	       n, j->size, j->snapshot_size);
	db_journal_free(j);
	tap_is(db_journal_new(a, NULL, 8, NOW, &j), 0, "compacted into a new journal");
	tap_ok(j->size < 4096, "which is only the live state (%" PRIu64 " bytes)", j->size);
	tap_is(db_jstate_load_fd(s2, j->fd), 0, "decodes");
	b = replay(s2, NOW + 10);
	why = differs(a, b, NOW + 10);
	tap_ok(!why, "to the same registry, ids included%s%s", why ? ": differs in " : "",
	       why ? why : "");
	db_registry_free(b);
	db_journal_free(j);
	db_registry_free(a);
}

static double elapsed_us(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e6 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e3;
}

/* Appends the BUFFER_ADDED record of n buffers of reg; returns microseconds per append. */
static double time_appends(struct db_journal *j, struct db_buffer **bufs, unsigned n)
{
	struct timespec t0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned i = 0; i < n; i++) {
		struct db_change ch = {.type = DB_CHANGE_BUFFER_ADDED, .buffer = bufs[i]};

		db_journal_append(j, &ch, NOW);
	}
	return elapsed_us(&t0) / n;
}

/* The cost of one change at 10,000 buffers: one pwrite of one record, independent of size. */
static void test_cost(void)
{
	enum {
		N = 2000,
		LARGE = 10000
	};
	g_autofree struct db_buffer **bufs = g_new0(struct db_buffer *, LARGE + N);
	struct db_limits l;
	struct db_registry *reg;
	struct db_journal *j = NULL;
	struct db_client *c;
	struct timespec t0;
	double small_us, large_us;

	db_limits_init_default(&l);
	l.max_buffers_per_client = l.max_buffers_per_uid = 1u << 20;
	reg = db_registry_new(&l);
	c = client(reg, ":1.1", 1000, true);
	for (int i = 0; i < LARGE + N; i++)
		bufs[i] = buffer(reg, c, NULL, 4096);
	tap_require(db_journal_new(reg, NULL, 1, NOW, &j) == 0, "journal");
	small_us = time_appends(j, bufs, N);
	large_us = time_appends(j, bufs + LARGE, N);
	tap_diag("one change journaled: %.2f us (first %d), %.2f us (with %u buffers live)",
		 small_us, N, large_us, db_registry_n_buffers(reg));
	tap_ok(large_us < 5 * small_us + 20,
	       "a change costs one record, whatever the registry's size (no rewrite)");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	db_journal_free(j);
	tap_require(db_journal_new(reg, NULL, 2, NOW, &j) == 0, "snapshot");
	tap_diag("a snapshot (compaction) of %u buffers: %.0f us, %" PRIu64 " bytes",
		 db_registry_n_buffers(reg), elapsed_us(&t0), j->size);
	db_journal_free(j);
	db_registry_free(reg);
}

static struct db_jconsumer *consumer(uint32_t number, uint64_t client_id, bool required,
				     const char *label)
{
	struct db_jconsumer *k = g_new0(struct db_jconsumer, 1);

	*k = (struct db_jconsumer){number, client_id, required, g_strdup(label)};
	return k;
}

/* A stream's membership: in a snapshot, then as changes; what is read back is what was
 * written, and a stream that ended is gone. */
static void test_streams(void)
{
	struct db_limits limits;
	struct db_registry *reg;
	g_autoptr(GByteArray) log = g_byte_array_new();
	g_autoptr(GPtrArray) list = g_ptr_array_new();
	_cleanup_(db_jstate_freep) struct db_jstate *state = db_jstate_new();
	struct db_jstream *cam = db_jstream_new(), *other = db_jstream_new(), *got;
	struct db_jconsumer *k2, *k3, *read_k;
	struct db_journal_streams streams = {.streams = list, .next_id = 9};

	db_limits_init_default(&limits);
	reg = db_registry_new(&limits);
	g_free(cam->name);
	g_free(cam->collection);
	cam->id = 7;
	cam->name = g_strdup("cam");
	cam->producer_id = 3;
	cam->uid = 1000;
	cam->mode = DB_STREAM_LATEST;
	cam->max_consumers = 4;
	cam->format = (struct db_stream_format){0x34325258, 1920, 1080, 30, 1};
	cam->collection = g_strdup("/org/dmabroker/Broker1/collection/2");
	cam->next_consumer = 3;
	g_ptr_array_add(cam->consumers, consumer(1, 4, false, "viewer"));
	g_ptr_array_add(cam->consumers, k2 = consumer(2, 5, true, "recorder"));
	other->id = 8;
	other->producer_id = 3;
	other->max_consumers = 1;
	g_ptr_array_add(list, cam);
	g_ptr_array_add(list, other);
	db_journal_encode_snapshot(log, reg, &streams, 1, NOW);
	k3 = consumer(3, 6, false, "late");
	g_ptr_array_add(cam->consumers, k3);
	db_journal_encode_stream_change(
		log, &(struct db_stream_change){DB_STREAM_JOINED, .stream = cam, .consumer = k3});
	db_journal_encode_stream_change(
		log, &(struct db_stream_change){DB_STREAM_LEFT, .stream = cam, .consumer = k2});
	db_journal_encode_stream_change(
		log, &(struct db_stream_change){DB_STREAM_ENDED, .stream = other});
	tap_is(db_jstate_load(state, log->data, log->len), 0, "a journal with streams loads");
	tap_is(g_hash_table_size(state->streams), 1, "the stream that ended is gone");
	tap_is(state->next_stream_id, 9, "the next stream id is kept");
	got = g_hash_table_lookup(state->streams, &cam->id);
	tap_require(got != NULL, "the live stream is there");
	tap_ok(strcmp(got->name, "cam") == 0 && got->producer_id == 3 && got->uid == 1000 &&
		       got->mode == DB_STREAM_LATEST && got->max_consumers == 4 &&
		       got->format.fourcc == 0x34325258 && got->format.width == 1920 &&
		       got->format.height == 1080 && got->format.framerate_num == 30 &&
		       got->format.framerate_den == 1 &&
		       strcmp(got->collection, "/org/dmabroker/Broker1/collection/2") == 0,
	       "what the stream was created with round-trips");
	tap_is(got->consumers->len, 2, "consumer 2 left, consumer 3 joined");
	read_k = got->consumers->len == 2 ? g_ptr_array_index(got->consumers, 1) : NULL;
	tap_ok(read_k && read_k->number == 3 && read_k->client_id == 6 && !read_k->required &&
		       strcmp(read_k->label, "late") == 0,
	       "a consumer's number, client, required and label round-trip");
	tap_ok(got->next_consumer >= 4, "consumer numbers are not reused (next %u)",
	       got->next_consumer);
	db_jstream_free(cam);
	db_jstream_free(other);
	db_registry_free(reg);
}

int main(void)
{
	test_round_trip();
	test_torn_tail();
	test_garbage();
	test_bounds();
	test_compaction();
	test_cost();
	test_streams();
	return tap_done();
}
