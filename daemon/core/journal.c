// SPDX-License-Identifier: MIT
#include "journal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend.h"
#include "fd-util.h"
#include "macros.h"

#define JOURNAL_MAGIC 0x314a4244u /* "DBJ1" */
#define JOURNAL_VERSION 1u
#define RECORD_HEADER 8u
#define RECORD_OVERHEAD (RECORD_HEADER + 4u)
/* Bounds on what the decoder accepts, whatever a corrupted journal claims. */
#define MAX_STRING 4096u
#define MAX_DEVICES 16u
#define MAX_HOLDERS (1u << 22)
/* MaxConsumersPerStream's own bound. */
#define MAX_CONSUMERS 1024u
/* Compaction once the changes outgrow the snapshot this many times (plus some slack, so an
 * empty registry is not rewritten at every other change). */
#define COMPACT_FACTOR 4u
#define COMPACT_SLACK (64u << 10)

/* --- CRC-32C (Castagnoli): cheap, and it catches torn and garbage records --- */

static uint32_t crc_table[256];

uint32_t db_journal_crc32c(const void *data, size_t n)
{
	const uint8_t *p = data;
	uint32_t crc = ~0u;

	if (!crc_table[1]) {
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;

			for (int k = 0; k < 8; k++)
				c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
			crc_table[i] = c;
		}
	}
	while (n--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* --- encoding --- */

static void put_u8(GByteArray *out, uint8_t v)
{
	g_byte_array_append(out, &v, 1);
}

static void put_u16(GByteArray *out, uint16_t v)
{
	uint8_t b[2] = {v & 0xff, v >> 8};

	g_byte_array_append(out, b, sizeof(b));
}

static void put_u32(GByteArray *out, uint32_t v)
{
	uint8_t b[4];

	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	g_byte_array_append(out, b, sizeof(b));
}

static void put_u64(GByteArray *out, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	g_byte_array_append(out, b, sizeof(b));
}

static void put_str(GByteArray *out, const char *s)
{
	size_t len = s ? strlen(s) : 0;

	/* The registry bounds every string far below this; cut rather than write a record
	 * the decoder would refuse. */
	if (len > MAX_STRING)
		len = MAX_STRING;
	put_u16(out, (uint16_t)len);
	g_byte_array_append(out, (const guint8 *)(s ? s : ""), (guint)len);
}

static void set_u32_at(GByteArray *out, size_t at, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		out->data[at + i] = (uint8_t)(v >> (8 * i));
}

/* Starts a record; returns where it starts, for record_end(). */
static size_t record_begin(GByteArray *out, enum db_jrecord type)
{
	size_t at = out->len;

	put_u32(out, 0);
	put_u16(out, (uint16_t)type);
	put_u16(out, 0);
	return at;
}

static void record_end(GByteArray *out, size_t at)
{
	set_u32_at(out, at, (uint32_t)(out->len - at + 4));
	put_u32(out, db_journal_crc32c(out->data + at, out->len - at));
}

static void encode_client(GByteArray *out, const struct db_client *c)
{
	size_t at = record_begin(out, DB_JR_CLIENT_ADDED);
	unsigned n = 0;

	put_u64(out, c->id);
	put_str(out, c->bus_name);
	put_u32(out, c->uid);
	put_u32(out, (uint32_t)c->pid);
	put_str(out, c->role);
	put_u8(out, c->dynamic);
	put_str(out, c->name);
	while (c->devices && c->devices[n] && n < MAX_DEVICES)
		n++;
	put_u8(out, (uint8_t)n);
	for (unsigned i = 0; i < n; i++)
		put_str(out, c->devices[i]);
	record_end(out, at);
}

static void encode_buffer(GByteArray *out, const struct db_buffer *buf, uint64_t move_begun)
{
	size_t at = record_begin(out, DB_JR_BUFFER_ADDED);
	uint32_t n_planes = MIN(buf->layout.n_planes, (uint32_t)DMABROKER_MAX_PLANES);

	put_u64(out, buf->id);
	put_u64(out, buf->size);
	put_u32(out, buf->layout.width);
	put_u32(out, buf->layout.height);
	put_u32(out, buf->layout.fourcc);
	put_u64(out, buf->layout.modifier);
	put_u8(out, (uint8_t)n_planes);
	for (uint32_t i = 0; i < n_planes; i++) {
		put_u32(out, buf->layout.offsets[i]);
		put_u32(out, buf->layout.strides[i]);
	}
	put_str(out, buf->backend);
	/* Bit 0 was is_dmabuf alone in the first journals: they read the same. */
	put_u8(out, (buf->is_dmabuf ? DB_BUFFER_DMABUF : 0) |
			    (buf->contiguous ? DB_BUFFER_CONTIGUOUS : 0) |
			    (buf->client_memory ? DB_BUFFER_CLIENT_MEMORY : 0));
	put_str(out, buf->name);
	put_u32(out, buf->owner_uid);
	put_u64(out, buf->owner_client_id);
	put_u64(out, buf->exporter_client_id);
	put_u8(out, buf->exporter_dynamic);
	put_u32(out, buf->n_moves);
	/* A snapshot carries a pending move; a change record never does (MOVE_BEGUN does). */
	put_u8(out, move_begun != 0);
	put_u64(out, move_begun);
	record_end(out, at);
}

static void encode_id(GByteArray *out, enum db_jrecord type, uint64_t id)
{
	size_t at = record_begin(out, type);

	put_u64(out, id);
	record_end(out, at);
}

static void encode_attachment(GByteArray *out, enum db_jrecord type, const struct db_attachment *a)
{
	size_t at = record_begin(out, type);

	put_u64(out, a->buffer->id);
	put_u64(out, a->client->id);
	if (type == DB_JR_ATTACHED)
		put_u8(out, a->needs_reacquire);
	record_end(out, at);
}

static void encode_token(GByteArray *out, const struct db_token *t)
{
	size_t at = record_begin(out, DB_JR_TOKEN_ADDED);

	g_byte_array_append(out, t->bytes.b, DB_TOKEN_SIZE);
	put_u64(out, t->buffer->id);
	put_u64(out, t->issuer->id);
	put_u8(out, t->single_use);
	put_u64(out, t->expires_usec);
	put_u8(out, t->uid_bound);
	put_u32(out, t->uid);
	record_end(out, at);
}

struct db_jstream *db_jstream_new(void)
{
	struct db_jstream *s = g_new0(struct db_jstream, 1);

	s->name = g_strdup("");
	s->collection = g_strdup("/");
	s->consumers = g_ptr_array_new_with_free_func((GDestroyNotify)db_jconsumer_free);
	return s;
}

void db_jconsumer_free(struct db_jconsumer *c)
{
	if (!c)
		return;
	g_free(c->label);
	g_free(c);
}

void db_jstream_free(struct db_jstream *s)
{
	if (!s)
		return;
	g_free(s->name);
	g_free(s->collection);
	g_ptr_array_unref(s->consumers);
	g_free(s);
}

static void encode_stream(GByteArray *out, const struct db_jstream *st)
{
	size_t at = record_begin(out, DB_JR_STREAM_CREATED);

	put_u64(out, st->id);
	put_str(out, st->name);
	put_u64(out, st->producer_id);
	put_u32(out, st->uid);
	put_u8(out, (uint8_t)st->mode);
	put_u32(out, st->max_consumers);
	put_u32(out, st->format.fourcc);
	put_u32(out, st->format.width);
	put_u32(out, st->format.height);
	put_u32(out, st->format.framerate_num);
	put_u32(out, st->format.framerate_den);
	put_str(out, st->collection);
	put_u32(out, st->next_consumer);
	record_end(out, at);
}

static void encode_consumer(GByteArray *out, enum db_jrecord type, const struct db_jstream *st,
			    const struct db_jconsumer *c)
{
	size_t at = record_begin(out, type);

	put_u64(out, st->id);
	put_u32(out, c->number);
	if (type == DB_JR_STREAM_JOINED) {
		put_u64(out, c->client_id);
		put_u8(out, c->required);
		put_str(out, c->label);
	}
	record_end(out, at);
}

void db_journal_encode_stream_change(GByteArray *out, const struct db_stream_change *ch)
{
	switch (ch->type) {
	case DB_STREAM_CREATED:
		encode_stream(out, ch->stream);
		break;
	case DB_STREAM_JOINED:
		encode_consumer(out, DB_JR_STREAM_JOINED, ch->stream, ch->consumer);
		break;
	case DB_STREAM_LEFT:
		encode_consumer(out, DB_JR_STREAM_LEFT, ch->stream, ch->consumer);
		break;
	case DB_STREAM_ENDED:
		encode_id(out, DB_JR_STREAM_ENDED, ch->stream->id);
		break;
	}
}

void db_journal_encode_change(GByteArray *out, const struct db_change *ch, uint64_t now_usec)
{
	size_t at;

	switch (ch->type) {
	case DB_CHANGE_CLIENT_ADDED:
		encode_client(out, ch->client);
		break;
	case DB_CHANGE_CLIENT_REMOVED:
		encode_id(out, DB_JR_CLIENT_REMOVED, ch->client->id);
		break;
	case DB_CHANGE_BUFFER_ADDED:
		encode_buffer(out, ch->buffer, 0);
		break;
	case DB_CHANGE_BUFFER_FREED:
		encode_id(out, DB_JR_BUFFER_FREED, ch->buffer->id);
		break;
	case DB_CHANGE_ATTACHED:
		encode_attachment(out, DB_JR_ATTACHED, ch->attachment);
		break;
	case DB_CHANGE_DETACHED:
		encode_attachment(out, DB_JR_DETACHED, ch->attachment);
		break;
	case DB_CHANGE_REACQUIRED:
		encode_attachment(out, DB_JR_REACQUIRED, ch->attachment);
		break;
	case DB_CHANGE_TOKEN_ADDED:
		encode_token(out, ch->token);
		break;
	case DB_CHANGE_TOKEN_REMOVED:
		at = record_begin(out, DB_JR_TOKEN_REMOVED);
		g_byte_array_append(out, ch->token->bytes.b, DB_TOKEN_SIZE);
		record_end(out, at);
		break;
	case DB_CHANGE_MOVE_BEGUN:
		at = record_begin(out, DB_JR_MOVE_BEGUN);
		put_u64(out, ch->buffer->id);
		put_u32(out, ch->buffer->n_moves);
		/* CLOCK_MONOTONIC runs on across a restart: the deadline can be kept. */
		put_u64(out, now_usec);
		record_end(out, at);
		break;
	case DB_CHANGE_MOVE_FINISHED:
		encode_id(out, DB_JR_MOVE_FINISHED, ch->buffer->id);
		break;
	}
}

void db_journal_encode_snapshot(GByteArray *out, const struct db_registry *reg,
				const struct db_journal_streams *streams, uint64_t generation,
				uint64_t now_usec)
{
	uint64_t n = 0, next_client, next_buffer;
	struct db_registry_iter it;
	struct db_client *c;
	struct db_buffer *buf;
	struct db_token *t;
	size_t at;

	at = record_begin(out, DB_JR_HEADER);
	put_u32(out, JOURNAL_MAGIC);
	put_u32(out, JOURNAL_VERSION);
	put_u64(out, generation);
	record_end(out, at);

	db_registry_next_ids(reg, &next_client, &next_buffer);
	at = record_begin(out, DB_JR_NEXT_IDS);
	put_u64(out, next_client);
	put_u64(out, next_buffer);
	record_end(out, at);
	n++;
	db_registry_iter_clients(reg, &it);
	while ((c = db_registry_next_client(&it))) {
		encode_client(out, c);
		n++;
	}
	db_registry_iter_buffers(reg, &it);
	while ((buf = db_registry_next_buffer(&it))) {
		/* When the move began is not kept in the registry: its deadline restarts. */
		encode_buffer(out, buf, buf->old_fd >= 0 ? MAX(now_usec, 1) : 0);
		n++;
		for (guint i = 0; i < buf->attachments->len; i++) {
			encode_attachment(out, DB_JR_ATTACHED,
					  g_ptr_array_index(buf->attachments, i));
			n++;
		}
	}
	db_registry_iter_tokens(reg, &it);
	while ((t = db_registry_next_token(&it))) {
		encode_token(out, t);
		n++;
	}
	if (streams) {
		at = record_begin(out, DB_JR_NEXT_STREAM_ID);
		put_u64(out, streams->next_id);
		record_end(out, at);
		n++;
		for (guint i = 0; streams->streams && i < streams->streams->len; i++) {
			const struct db_jstream *st = g_ptr_array_index(streams->streams, i);

			encode_stream(out, st);
			n++;
			for (guint k = 0; k < st->consumers->len; k++) {
				encode_consumer(out, DB_JR_STREAM_JOINED, st,
						g_ptr_array_index(st->consumers, k));
				n++;
			}
		}
	}
	at = record_begin(out, DB_JR_SNAPSHOT_END);
	put_u64(out, n);
	record_end(out, at);
}

void db_journal_buffer_fdname(uint64_t id, uint32_t n_moves, char *out, size_t len)
{
	if (n_moves == 0)
		snprintf(out, len, "buf-%" PRIu64, id);
	else
		snprintf(out, len, "buf-%" PRIu64 ".%" PRIu32, id, n_moves);
}

/* --- the writer --- */

static int write_all_at(int fd, const uint8_t *p, size_t len, uint64_t offset)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)offset);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		offset += (uint64_t)n;
	}
	return 0;
}

int db_journal_new(const struct db_registry *reg, const struct db_journal_streams *streams,
		   uint64_t generation, uint64_t now_usec, struct db_journal **ret)
{
	g_autoptr(GByteArray) out = g_byte_array_new();
	_cleanup_(closep) int fd = -1;
	struct db_journal *j;
	int r;

	fd = memfd_create("dmabroker-journal", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	db_journal_encode_snapshot(out, reg, streams, generation, now_usec);
	r = write_all_at(fd, out->data, out->len, 0);
	if (r < 0)
		return r;
	j = g_new0(struct db_journal, 1);
	j->fd = take_fd(&fd);
	j->generation = generation;
	j->size = out->len;
	j->snapshot_size = out->len;
	*ret = j;
	return 0;
}

struct db_journal *db_journal_free(struct db_journal *j)
{
	if (!j)
		return NULL;
	if (j->fd >= 0)
		close(j->fd);
	g_free(j);
	return NULL;
}

/* One write, at the end of the last whole record: a torn one is written over. */
static int append_encoded(struct db_journal *j, const GByteArray *out)
{
	int r;

	if (out->len == 0)
		return 0;
	if (j->size + out->len > DB_JOURNAL_MAX_SIZE) {
		j->last_error = -EFBIG;
		return -EFBIG;
	}
	r = write_all_at(j->fd, out->data, out->len, j->size);
	if (r < 0) {
		j->last_error = r;
		return r;
	}
	j->size += out->len;
	j->n_appended++;
	return 0;
}

/* Reused: no allocation per change once it has grown (the daemon has one thread). */
static GByteArray *append_buffer(void)
{
	static GByteArray *out;

	if (!out)
		out = g_byte_array_sized_new(512);
	g_byte_array_set_size(out, 0);
	return out;
}

int db_journal_append(struct db_journal *j, const struct db_change *change, uint64_t now_usec)
{
	GByteArray *out = append_buffer();

	db_journal_encode_change(out, change, now_usec);
	return append_encoded(j, out);
}

int db_journal_append_stream(struct db_journal *j, const struct db_stream_change *change)
{
	GByteArray *out = append_buffer();

	db_journal_encode_stream_change(out, change);
	return append_encoded(j, out);
}

bool db_journal_wants_compaction(const struct db_journal *j)
{
	return j->last_error != 0 ||
	       j->size - j->snapshot_size > COMPACT_FACTOR * j->snapshot_size + COMPACT_SLACK;
}

/* --- the decoder --- */

struct reader {
	const uint8_t *p;
	const uint8_t *end;
	bool bad;
};

static bool need(struct reader *r, size_t n)
{
	if (r->bad || (size_t)(r->end - r->p) < n) {
		r->bad = true;
		return false;
	}
	return true;
}

static uint8_t get_u8(struct reader *r)
{
	if (!need(r, 1))
		return 0;
	return *r->p++;
}

static uint16_t get_u16(struct reader *r)
{
	uint16_t v;

	if (!need(r, 2))
		return 0;
	v = (uint16_t)(r->p[0] | r->p[1] << 8);
	r->p += 2;
	return v;
}

static uint32_t get_u32(struct reader *r)
{
	uint32_t v = 0;

	if (!need(r, 4))
		return 0;
	for (int i = 0; i < 4; i++)
		v |= (uint32_t)r->p[i] << (8 * i);
	r->p += 4;
	return v;
}

static uint64_t get_u64(struct reader *r)
{
	uint64_t v = 0;

	if (!need(r, 8))
		return 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)r->p[i] << (8 * i);
	r->p += 8;
	return v;
}

static bool get_bool(struct reader *r)
{
	uint8_t v = get_u8(r);

	if (v > 1)
		r->bad = true;
	return v == 1;
}

/* A string of printable bytes (no NUL inside), bounded by max. */
static char *get_str(struct reader *r, size_t max)
{
	uint16_t len = get_u16(r);
	char *s;

	if (len > max || !need(r, len)) {
		r->bad = true;
		return NULL;
	}
	if (memchr(r->p, '\0', len)) {
		r->bad = true;
		return NULL;
	}
	s = g_strndup((const char *)r->p, len);
	r->p += len;
	return s;
}

static void get_token(struct reader *r, struct db_token_bytes *t)
{
	if (!need(r, DB_TOKEN_SIZE))
		return;
	memcpy(t->b, r->p, DB_TOKEN_SIZE);
	r->p += DB_TOKEN_SIZE;
}

static void jclient_free(gpointer p)
{
	struct db_jclient *c = p;

	if (!c)
		return;
	g_free(c->bus_name);
	g_free(c->role);
	g_free(c->name);
	g_strfreev(c->devices);
	g_free(c);
}

static void jbuffer_free(gpointer p)
{
	struct db_jbuffer *b = p;

	if (!b)
		return;
	g_free(b->backend);
	g_free(b->name);
	if (b->holders)
		g_array_unref(b->holders);
	g_free(b);
}

static guint token_hash(gconstpointer key)
{
	guint h;

	memcpy(&h, ((const struct db_token_bytes *)key)->b, sizeof(h));
	return h;
}

static gboolean token_equal(gconstpointer a, gconstpointer b)
{
	return memcmp(a, b, DB_TOKEN_SIZE) == 0;
}

struct db_jstate *db_jstate_new(void)
{
	struct db_jstate *s = g_new0(struct db_jstate, 1);

	s->next_client_id = 1;
	s->next_buffer_id = 1;
	s->clients = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, jclient_free);
	s->buffers = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, jbuffer_free);
	s->tokens = g_hash_table_new_full(token_hash, token_equal, NULL, g_free);
	s->streams = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL,
					   (GDestroyNotify)db_jstream_free);
	s->next_stream_id = 1;
	return s;
}

void db_jstate_free(struct db_jstate *s)
{
	if (!s)
		return;
	g_hash_table_unref(s->clients);
	g_hash_table_unref(s->buffers);
	g_hash_table_unref(s->tokens);
	g_hash_table_unref(s->streams);
	g_free(s);
}

static void see_client_id(struct db_jstate *s, uint64_t id)
{
	if (id != UINT64_MAX && id >= s->next_client_id)
		s->next_client_id = id + 1;
}

static void see_buffer_id(struct db_jstate *s, uint64_t id)
{
	if (id != UINT64_MAX && id >= s->next_buffer_id)
		s->next_buffer_id = id + 1;
}

static struct db_jholder *find_holder(struct db_jbuffer *b, uint64_t client_id, guint *index)
{
	for (guint i = 0; i < b->holders->len; i++) {
		struct db_jholder *h = &g_array_index(b->holders, struct db_jholder, i);

		if (h->client_id == client_id) {
			if (index)
				*index = i;
			return h;
		}
	}
	return NULL;
}

static int apply_client(struct db_jstate *s, struct reader *r)
{
	struct db_jclient *c = g_new0(struct db_jclient, 1);
	unsigned n;

	c->id = get_u64(r);
	c->bus_name = get_str(r, 255);
	c->uid = get_u32(r);
	c->pid = (pid_t)get_u32(r);
	c->role = get_str(r, 32);
	c->dynamic = get_bool(r);
	c->name = get_str(r, 255);
	n = get_u8(r);
	if (n > MAX_DEVICES)
		r->bad = true;
	c->devices = g_new0(char *, MAX_DEVICES + 1);
	for (unsigned i = 0; !r->bad && i < n; i++)
		c->devices[i] = get_str(r, 255);
	if (r->bad || c->id == 0) {
		jclient_free(c);
		return -EBADMSG;
	}
	see_client_id(s, c->id);
	g_hash_table_replace(s->clients, &c->id, c);
	return 0;
}

static int apply_buffer(struct db_jstate *s, struct reader *r)
{
	struct db_jbuffer *b = g_new0(struct db_jbuffer, 1);
	unsigned n_planes, flags;

	b->id = get_u64(r);
	b->size = get_u64(r);
	b->layout.width = get_u32(r);
	b->layout.height = get_u32(r);
	b->layout.fourcc = get_u32(r);
	b->layout.modifier = get_u64(r);
	n_planes = get_u8(r);
	if (n_planes > DMABROKER_MAX_PLANES)
		r->bad = true;
	for (unsigned i = 0; !r->bad && i < n_planes; i++) {
		b->layout.offsets[i] = get_u32(r);
		b->layout.strides[i] = get_u32(r);
	}
	b->layout.n_planes = n_planes;
	b->layout.size = (size_t)b->size;
	b->backend = get_str(r, 32);
	flags = get_u8(r);
	if (flags & ~(DB_BUFFER_DMABUF | DB_BUFFER_CONTIGUOUS | DB_BUFFER_CLIENT_MEMORY))
		r->bad = true;
	b->is_dmabuf = flags & DB_BUFFER_DMABUF;
	b->contiguous = flags & DB_BUFFER_CONTIGUOUS;
	b->client_memory = flags & DB_BUFFER_CLIENT_MEMORY;
	b->name = get_str(r, 255);
	b->owner_uid = get_u32(r);
	b->owner_client_id = get_u64(r);
	b->exporter_client_id = get_u64(r);
	b->exporter_dynamic = get_bool(r);
	b->n_moves = get_u32(r);
	b->moving = get_bool(r);
	b->move_begun_usec = get_u64(r);
	b->holders = g_array_new(FALSE, FALSE, sizeof(struct db_jholder));
	if (r->bad || b->id == 0 || b->size == 0 || b->size > SIZE_MAX ||
	    (b->moving && b->n_moves == 0)) {
		jbuffer_free(b);
		return -EBADMSG;
	}
	see_buffer_id(s, b->id);
	see_client_id(s, b->owner_client_id);
	see_client_id(s, b->exporter_client_id);
	g_hash_table_replace(s->buffers, &b->id, b);
	return 0;
}

static int apply_token(struct db_jstate *s, struct reader *r)
{
	struct db_jtoken *t = g_new0(struct db_jtoken, 1);

	get_token(r, &t->bytes);
	t->buffer_id = get_u64(r);
	t->issuer_id = get_u64(r);
	t->single_use = get_bool(r);
	t->expires_usec = get_u64(r);
	t->uid_bound = get_bool(r);
	t->uid = get_u32(r);
	if (r->bad) {
		g_free(t);
		return -EBADMSG;
	}
	g_hash_table_replace(s->tokens, &t->bytes, t);
	return 0;
}

static int apply_stream(struct db_jstate *s, struct reader *r)
{
	struct db_jstream *st = db_jstream_new();
	uint8_t mode;

	st->id = get_u64(r);
	g_free(st->name);
	st->name = get_str(r, 255);
	st->producer_id = get_u64(r);
	st->uid = get_u32(r);
	mode = get_u8(r);
	st->mode = mode == DB_STREAM_LATEST ? DB_STREAM_LATEST : DB_STREAM_FIFO;
	st->max_consumers = get_u32(r);
	st->format.fourcc = get_u32(r);
	st->format.width = get_u32(r);
	st->format.height = get_u32(r);
	st->format.framerate_num = get_u32(r);
	st->format.framerate_den = get_u32(r);
	g_free(st->collection);
	st->collection = get_str(r, 255);
	st->next_consumer = get_u32(r);
	if (r->bad || st->id == 0 || st->id == UINT64_MAX || mode > DB_STREAM_LATEST ||
	    st->max_consumers == 0 || st->max_consumers > MAX_CONSUMERS) {
		db_jstream_free(st);
		return -EBADMSG;
	}
	if (st->id >= s->next_stream_id)
		s->next_stream_id = st->id + 1;
	see_client_id(s, st->producer_id);
	g_hash_table_replace(s->streams, &st->id, st);
	return 0;
}

static int apply_consumer(struct db_jstate *s, enum db_jrecord type, struct reader *r)
{
	uint64_t id = get_u64(r);
	uint32_t number = get_u32(r);
	struct db_jstream *st;
	struct db_jconsumer *c;
	guint i;

	if (type == DB_JR_STREAM_LEFT) {
		if (r->bad)
			return -EBADMSG;
		st = g_hash_table_lookup(s->streams, &id);
		for (i = 0; st && i < st->consumers->len; i++)
			if (((struct db_jconsumer *)g_ptr_array_index(st->consumers, i))->number ==
			    number) {
				g_ptr_array_remove_index(st->consumers, i);
				break;
			}
		return 0;
	}
	c = g_new0(struct db_jconsumer, 1);
	c->number = number;
	c->client_id = get_u64(r);
	c->required = get_bool(r);
	c->label = get_str(r, 255);
	st = g_hash_table_lookup(s->streams, &id);
	if (r->bad || number == UINT32_MAX || (st && st->consumers->len >= MAX_CONSUMERS)) {
		db_jconsumer_free(c);
		return -EBADMSG;
	}
	see_client_id(s, c->client_id);
	if (!st) {
		db_jconsumer_free(c);
		return 0;
	}
	st->next_consumer = MAX(st->next_consumer, number + 1);
	g_ptr_array_add(st->consumers, c);
	return 0;
}

/* Applies one whole record's payload. -EBADMSG: its contents are not what its type says. */
static int apply(struct db_jstate *s, enum db_jrecord type, struct reader *r)
{
	struct db_token_bytes tb;
	struct db_jbuffer *b;
	struct db_jholder *h;
	uint64_t id, cid;
	bool flag;
	guint idx = 0;

	switch (type) {
	case DB_JR_NEXT_IDS:
		id = get_u64(r);
		cid = get_u64(r);
		if (r->bad)
			return -EBADMSG;
		s->next_client_id = MAX(s->next_client_id, id);
		s->next_buffer_id = MAX(s->next_buffer_id, cid);
		return 0;
	case DB_JR_CLIENT_ADDED:
		return apply_client(s, r);
	case DB_JR_CLIENT_REMOVED:
		id = get_u64(r);
		if (r->bad)
			return -EBADMSG;
		/* Its attachments and tokens went in records of their own before. */
		g_hash_table_remove(s->clients, &id);
		return 0;
	case DB_JR_BUFFER_ADDED:
		return apply_buffer(s, r);
	case DB_JR_BUFFER_FREED:
		id = get_u64(r);
		if (r->bad)
			return -EBADMSG;
		g_hash_table_remove(s->buffers, &id);
		return 0;
	case DB_JR_ATTACHED:
	case DB_JR_DETACHED:
	case DB_JR_REACQUIRED:
		id = get_u64(r);
		cid = get_u64(r);
		flag = type == DB_JR_ATTACHED ? get_bool(r) : false;
		if (r->bad)
			return -EBADMSG;
		see_client_id(s, cid);
		b = g_hash_table_lookup(s->buffers, &id);
		if (!b)
			return 0;
		h = find_holder(b, cid, &idx);
		if (type == DB_JR_ATTACHED && !h) {
			struct db_jholder nh = {.client_id = cid, .needs_reacquire = flag};

			if (b->holders->len >= MAX_HOLDERS)
				return -EBADMSG;
			g_array_append_val(b->holders, nh);
		} else if (type == DB_JR_ATTACHED) {
			h->needs_reacquire = flag;
		} else if (type == DB_JR_DETACHED && h) {
			g_array_remove_index_fast(b->holders, idx);
		} else if (h) {
			h->needs_reacquire = false;
		}
		return 0;
	case DB_JR_TOKEN_ADDED:
		return apply_token(s, r);
	case DB_JR_TOKEN_REMOVED:
		get_token(r, &tb);
		if (r->bad)
			return -EBADMSG;
		g_hash_table_remove(s->tokens, &tb);
		return 0;
	case DB_JR_MOVE_BEGUN:
		id = get_u64(r);
		idx = get_u32(r);
		cid = get_u64(r); /* when it began */
		if (r->bad || idx == 0)
			return -EBADMSG;
		b = g_hash_table_lookup(s->buffers, &id);
		if (!b)
			return 0;
		b->n_moves = idx;
		b->moving = true;
		b->move_begun_usec = cid;
		b->client_memory = false; /* the new backing is the daemon's */
		for (guint i = 0; i < b->holders->len; i++)
			g_array_index(b->holders, struct db_jholder, i).needs_reacquire = true;
		return 0;
	case DB_JR_MOVE_FINISHED:
		id = get_u64(r);
		if (r->bad)
			return -EBADMSG;
		b = g_hash_table_lookup(s->buffers, &id);
		if (!b)
			return 0;
		b->moving = false;
		for (guint i = 0; i < b->holders->len; i++)
			g_array_index(b->holders, struct db_jholder, i).needs_reacquire = false;
		return 0;
	case DB_JR_STREAM_CREATED:
		return apply_stream(s, r);
	case DB_JR_STREAM_JOINED:
	case DB_JR_STREAM_LEFT:
		return apply_consumer(s, type, r);
	case DB_JR_STREAM_ENDED:
		id = get_u64(r);
		if (r->bad)
			return -EBADMSG;
		g_hash_table_remove(s->streams, &id);
		return 0;
	case DB_JR_NEXT_STREAM_ID:
		id = get_u64(r);
		if (r->bad)
			return -EBADMSG;
		s->next_stream_id = MAX(s->next_stream_id, id);
		return 0;
	case DB_JR_HEADER:
	case DB_JR_SNAPSHOT_END:
		/* Only where db_jstate_load() expects them. */
		return -EBADMSG;
	}
	s->n_skipped++;
	return 0;
}

/* The next whole record at data + *off: its type and payload. 0: none (torn or garbage). */
static bool next_record(const uint8_t *data, size_t len, size_t *off, enum db_jrecord *type,
			struct reader *payload)
{
	const uint8_t *p = data + *off;
	size_t left = len - *off;
	uint32_t rlen, crc;

	if (left < RECORD_OVERHEAD)
		return false;
	rlen = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
	if (rlen < RECORD_OVERHEAD || rlen > DB_JOURNAL_RECORD_MAX || rlen > left)
		return false;
	crc = (uint32_t)p[rlen - 4] | (uint32_t)p[rlen - 3] << 8 | (uint32_t)p[rlen - 2] << 16 |
	      (uint32_t)p[rlen - 1] << 24;
	if (crc != db_journal_crc32c(p, rlen - 4) || p[6] != 0 || p[7] != 0)
		return false;
	*type = (enum db_jrecord)(p[4] | p[5] << 8);
	*payload = (struct reader){.p = p + RECORD_HEADER, .end = p + rlen - 4};
	*off += rlen;
	return true;
}

int db_jstate_load(struct db_jstate *s, const void *data_, size_t len)
{
	const uint8_t *data = data_;
	enum db_jrecord type;
	struct reader r;
	uint64_t n_snapshot = 0, counted;
	size_t off = 0;
	bool in_snapshot = true;

	if (len > DB_JOURNAL_MAX_SIZE)
		return -EFBIG;
	if (!next_record(data, len, &off, &type, &r) || type != DB_JR_HEADER)
		return -EBADMSG;
	if (get_u32(&r) != JOURNAL_MAGIC || get_u32(&r) != JOURNAL_VERSION)
		return -EBADMSG;
	s->generation = get_u64(&r);
	if (r.bad)
		return -EBADMSG;
	s->n_records = 1;
	for (;;) {
		size_t start = off;

		if (!next_record(data, len, &off, &type, &r)) {
			s->torn = off < len;
			break;
		}
		if (in_snapshot && type == DB_JR_SNAPSHOT_END) {
			counted = get_u64(&r);
			if (r.bad || counted != n_snapshot)
				return -EBADMSG;
			in_snapshot = false;
		} else if (apply(s, type, &r) < 0 || r.bad || r.p != r.end) {
			/* A whole record that does not say what its type says: nothing after it
			 * can be trusted either. */
			off = start;
			s->torn = true;
			break;
		}
		if (in_snapshot)
			n_snapshot++;
		s->n_records++;
	}
	s->bytes_used = off;
	return in_snapshot ? -EBADMSG : 0;
}

int db_jstate_load_fd(struct db_jstate *s, int fd)
{
	g_autofree uint8_t *data = NULL;
	size_t size = 0, done = 0;
	int r;

	r = fd_get_size(fd, &size);
	if (r < 0)
		return r;
	if (size > DB_JOURNAL_MAX_SIZE)
		return -EFBIG;
	data = g_malloc(MAX(size, 1));
	while (done < size) {
		ssize_t n = pread(fd, data + done, size - done, (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return db_jstate_load(s, data, done);
}

/* --- restoring into a registry --- */

static gint compare_u64(gconstpointer a, gconstpointer b)
{
	uint64_t x = **(const uint64_t *const *)a, y = **(const uint64_t *const *)b;

	return x < y ? -1 : x > y;
}

/* The keys of a table keyed by &u64, in increasing order: a restore is deterministic. */
static GPtrArray *sorted_ids(GHashTable *table)
{
	GPtrArray *ids = g_ptr_array_new();
	GHashTableIter it;
	gpointer key;

	g_hash_table_iter_init(&it, table);
	while (g_hash_table_iter_next(&it, &key, NULL))
		g_ptr_array_add(ids, key);
	g_ptr_array_sort(ids, compare_u64);
	return ids;
}

static void restore_buffer(const struct db_jbuffer *jb, struct db_registry *reg,
			   const struct db_jrestore_ops *ops, struct db_jrestore_stats *st)
{
	const struct db_backend *be = db_backend_find(jb->backend);
	struct db_buffer tmpl = {0}, *buf;
	g_autoptr(GArray) pending = g_array_new(FALSE, FALSE, sizeof(uint64_t));
	_cleanup_(closep) int fd = -1, old_fd = -1;
	uint32_t n_moves = jb->n_moves;
	bool moving = jb->moving;
	char name[64];

	db_journal_buffer_fdname(jb->id, n_moves, name, sizeof(name));
	fd = ops->take_fd(name, ops->userdata);
	if (moving) {
		db_journal_buffer_fdname(jb->id, n_moves - 1, name, sizeof(name));
		old_fd = ops->take_fd(name, ops->userdata);
		if (fd < 0) {
			/* Killed before the new backing reached the store: the old one is what the
			 * holders have, and the move never happened. */
			fd = take_fd(&old_fd);
			n_moves--;
			moving = false;
		} else if (old_fd < 0) {
			moving = false;
		}
	}
	if (fd < 0) {
		st->buffers_missing++;
		return;
	}
	tmpl.id = jb->id;
	tmpl.size = (size_t)jb->size;
	tmpl.layout = jb->layout;
	/* Backends are static strings; an exported buffer's is "export". */
	tmpl.backend = be ? be->name : "export";
	tmpl.is_dmabuf = jb->is_dmabuf;
	tmpl.contiguous = jb->contiguous;
	tmpl.client_memory = jb->client_memory;
	tmpl.name = jb->name;
	tmpl.owner_uid = jb->owner_uid;
	tmpl.owner_client_id = jb->owner_client_id;
	tmpl.exporter_client_id = jb->exporter_client_id;
	tmpl.exporter_dynamic = jb->exporter_dynamic;
	tmpl.n_moves = n_moves;
	if (db_registry_restore_buffer(reg, &tmpl, fd, &buf) < 0)
		return;
	fd = -1; /* the registry's now */
	buf->n_moves = n_moves;
	for (guint i = 0; i < jb->holders->len; i++) {
		const struct db_jholder *h = &g_array_index(jb->holders, struct db_jholder, i);
		struct db_client *c = db_registry_find_client(reg, h->client_id);

		if (!c)
			continue;
		db_registry_restore_attachment(reg, c, buf);
		if (h->needs_reacquire)
			g_array_append_val(pending, h->client_id);
	}
	if (moving && buf->attachments->len > 0) {
		db_registry_restore_move(reg, buf, take_fd(&old_fd),
					 (const uint64_t *)pending->data, pending->len);
		st->moves++;
	}
	st->buffers++;
}

int db_jstate_restore(const struct db_jstate *s, struct db_registry *reg,
		      const struct db_jrestore_ops *ops, struct db_jrestore_stats *stats)
{
	struct db_jrestore_stats st = {0};
	g_autoptr(GPtrArray) ids = NULL;
	GHashTableIter it;
	gpointer value;

	ids = sorted_ids(s->clients);
	for (guint i = 0; i < ids->len; i++) {
		const struct db_jclient *jc = g_hash_table_lookup(s->clients, ids->pdata[i]);
		struct db_client *c;

		if (ops->client_alive && !ops->client_alive(jc, ops->userdata)) {
			st.clients_gone++;
			continue;
		}
		if (db_registry_restore_client(reg, jc->id, jc->bus_name, jc->uid, jc->pid,
					       jc->role, jc->dynamic, jc->name,
					       (const char *const *)jc->devices, &c) < 0) {
			st.clients_gone++;
			continue;
		}
		st.clients++;
	}
	g_ptr_array_unref(ids);
	ids = sorted_ids(s->buffers);
	for (guint i = 0; i < ids->len; i++)
		restore_buffer(g_hash_table_lookup(s->buffers, ids->pdata[i]), reg, ops, &st);
	g_hash_table_iter_init(&it, s->tokens);
	while (g_hash_table_iter_next(&it, NULL, &value)) {
		const struct db_jtoken *jt = value;
		struct db_token t = {0};

		if (jt->expires_usec && jt->expires_usec <= ops->now_usec)
			continue;
		t.bytes = jt->bytes;
		t.buffer = db_registry_find_buffer(reg, jt->buffer_id);
		t.issuer = db_registry_find_client(reg, jt->issuer_id);
		if (!t.buffer || !t.issuer || t.buffer->attachments->len == 0)
			continue;
		t.single_use = jt->single_use;
		t.expires_usec = jt->expires_usec;
		t.uid_bound = jt->uid_bound;
		t.uid = jt->uid;
		if (db_registry_restore_token(reg, &t) == 0)
			st.tokens++;
	}
	/* Ids are never reused, not even across a restart. */
	db_registry_raise_next_ids(reg, s->next_client_id, s->next_buffer_id);
	db_registry_drop_orphans(reg);
	st.buffers = db_registry_n_buffers(reg);
	if (stats)
		*stats = st;
	return 0;
}
