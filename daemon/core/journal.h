/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The registry's journal: an append-only memfd kept in systemd's fd store, so the registry
 * survives any death of the daemon (SIGKILL, abort, the watchdog), not only a clean stop.
 *
 * A journal is a sequence of records, each one self-delimiting and checked:
 *
 *	u32 length   whole record, header and checksum included (12 .. DB_JOURNAL_RECORD_MAX)
 *	u16 type     enum db_jrecord
 *	u16 zero
 *	...          payload (little-endian integers; strings as u16 length + bytes)
 *	u32 crc32c   of everything before it
 *
 * It starts with a header (magic, version, generation) and a snapshot of the live registry
 * (one record per client, buffer, attachment and token, then the next ids), closed by a
 * snapshot-end record that counts them; every change is then appended as one record with
 * one pwrite(). Replay stops at the first record that is not whole (a write torn by a kill,
 * or garbage): what follows it was never answered.
 *
 * Compaction writes a new journal (generation + 1) from the live registry, stores it, and
 * only then removes the old one: a restart finding both takes the higher generation whose
 * snapshot is whole.
 */

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "layout.h"
#include "registry.h"
#include "token.h"

#define DB_JOURNAL_FDNAME_PREFIX "journal-"
/* A journal larger than this is not one we wrote: compaction keeps it far smaller. */
#define DB_JOURNAL_MAX_SIZE (512ull << 20)
#define DB_JOURNAL_RECORD_MAX (64u << 10)

enum db_jrecord {
	DB_JR_HEADER = 1,
	DB_JR_SNAPSHOT_END,
	DB_JR_NEXT_IDS,
	DB_JR_CLIENT_ADDED,
	DB_JR_CLIENT_REMOVED,
	DB_JR_BUFFER_ADDED,
	DB_JR_BUFFER_FREED,
	DB_JR_ATTACHED,
	DB_JR_DETACHED,
	DB_JR_TOKEN_ADDED,
	DB_JR_TOKEN_REMOVED,
	DB_JR_MOVE_BEGUN,
	DB_JR_REACQUIRED,
	DB_JR_MOVE_FINISHED,
	/* Streams (stream.c): membership, never links. */
	DB_JR_STREAM_CREATED,
	DB_JR_STREAM_JOINED,
	DB_JR_STREAM_LEFT,
	DB_JR_STREAM_ENDED,
	DB_JR_NEXT_STREAM_ID,
};

/* --- streams, as the journal keeps them --- */

enum db_stream_mode {
	DB_STREAM_FIFO, /* the producer waits for a free buffer */
	DB_STREAM_LATEST, /* a consumer that falls behind gets the newest frame */
};

/* CreateStream's "format": what the frames are; the layout is the collection's. */
struct db_stream_format {
	uint32_t fourcc;
	uint32_t width;
	uint32_t height;
	uint32_t framerate_num;
	uint32_t framerate_den;
};

struct db_jconsumer {
	uint32_t number; /* never reused in its stream */
	uint64_t client_id;
	bool required;
	char *label; /* owned */
};

/* One stream's membership. stream.c keeps its live streams in these, so the journal writes
 * what the daemon answers with and a restart reads back the same. */
struct db_jstream {
	uint64_t id;
	char *name; /* owned; "" for a stream joined by token only */
	uint64_t producer_id;
	uid_t uid; /* the producer's */
	enum db_stream_mode mode;
	uint32_t max_consumers;
	struct db_stream_format format;
	char *collection; /* owned: the collection's object path */
	uint32_t next_consumer;
	GPtrArray *consumers; /* struct db_jconsumer *, owned */
};

struct db_jstream *db_jstream_new(void);
void db_jstream_free(struct db_jstream *s);
void db_jconsumer_free(struct db_jconsumer *c);

enum db_stream_change_type {
	DB_STREAM_CREATED,
	DB_STREAM_JOINED,
	DB_STREAM_LEFT,
	DB_STREAM_ENDED,
};

struct db_stream_change {
	enum db_stream_change_type type;
	const struct db_jstream *stream;
	const struct db_jconsumer *consumer; /* JOINED, LEFT */
};

/* What a snapshot holds of the streams (the fd store asks stream.c through a hook). */
struct db_journal_streams {
	const GPtrArray *streams; /* const struct db_jstream *, borrowed */
	uint64_t next_id;
};

/* --- writing --- */

struct db_journal {
	int fd; /* the memfd; the store holds the same file */
	uint64_t generation;
	uint64_t size; /* end of the last whole record: where the next one goes */
	uint64_t snapshot_size; /* header and snapshot: the live registry when it was written */
	uint64_t n_appended;
	int last_error; /* of the last append that failed, else 0 */
};

/* A new journal (memfd) holding a snapshot of reg and the streams (may be NULL). */
int db_journal_new(const struct db_registry *reg, const struct db_journal_streams *streams,
		   uint64_t generation, uint64_t now_usec, struct db_journal **ret);
struct db_journal *db_journal_free(struct db_journal *j);

/* Appends one change with one pwrite(). A failed write leaves no partial record behind
 * (the next one is written over it) and makes the journal ask for compaction. */
int db_journal_append(struct db_journal *j, const struct db_change *change, uint64_t now_usec);

/* The appended changes outgrow the snapshot (or a write failed): time to compact. */
bool db_journal_wants_compaction(const struct db_journal *j);

/* Appends one stream change, as db_journal_append does a registry change. */
int db_journal_append_stream(struct db_journal *j, const struct db_stream_change *change);

/* The encodings, into memory (the writer uses them; tests build journals with them). */
void db_journal_encode_change(GByteArray *out, const struct db_change *change, uint64_t now_usec);
void db_journal_encode_stream_change(GByteArray *out, const struct db_stream_change *change);
/* Header, snapshot (the streams may be NULL) and snapshot end. */
void db_journal_encode_snapshot(GByteArray *out, const struct db_registry *reg,
				const struct db_journal_streams *streams, uint64_t generation,
				uint64_t now_usec);

/* The records' checksum (CRC-32C). */
uint32_t db_journal_crc32c(const void *data, size_t n);

/* The fd-store name of a buffer's backing after n_moves moves: buf-ID, then buf-ID.N.
 * systemd keeps one file once only, so a move's new backing needs a name of its own. */
void db_journal_buffer_fdname(uint64_t id, uint32_t n_moves, char *out, size_t len);

/* --- reading --- */

struct db_jclient {
	uint64_t id;
	char *bus_name;
	uid_t uid;
	pid_t pid;
	char *role;
	bool dynamic;
	char *name;
	char **devices;
};

struct db_jholder {
	uint64_t client_id;
	bool needs_reacquire;
};

struct db_jbuffer {
	uint64_t id;
	uint64_t size;
	struct db_layout layout;
	char *backend;
	bool is_dmabuf;
	bool contiguous;
	bool client_memory;
	char *name;
	uid_t owner_uid;
	uint64_t owner_client_id;
	uint64_t exporter_client_id;
	bool exporter_dynamic;
	uint32_t n_moves;
	bool moving; /* a move waits for holders: the old backing is n_moves - 1 */
	uint64_t move_begun_usec;
	GArray *holders; /* struct db_jholder */
};

struct db_jtoken {
	struct db_token_bytes bytes;
	uint64_t buffer_id;
	uint64_t issuer_id;
	bool single_use;
	uint64_t expires_usec;
	bool uid_bound;
	uid_t uid;
};

/* The registry a journal describes: ids, no pointers, no fds. */
struct db_jstate {
	uint64_t generation;
	uint64_t next_client_id;
	uint64_t next_buffer_id;
	GHashTable *clients; /* &id -> struct db_jclient *, owned */
	GHashTable *buffers; /* &id -> struct db_jbuffer *, owned */
	GHashTable *tokens; /* &bytes -> struct db_jtoken *, owned */
	GHashTable *streams; /* &id -> struct db_jstream *, owned */
	uint64_t next_stream_id;
	/* What the decoder found. */
	size_t n_records;
	size_t n_skipped; /* whole records of a type this version does not know */
	size_t bytes_used; /* up to the end of the last whole record */
	bool torn; /* bytes after that: a torn write or garbage, ignored */
};

struct db_jstate *db_jstate_new(void);
void db_jstate_free(struct db_jstate *s);
static inline void db_jstate_freep(struct db_jstate **s)
{
	db_jstate_free(*s);
}

/*
 * Decodes a journal into s (new). The data may come from a corrupted or hostile source: every
 * length and count is bounded. -EBADMSG if the header or snapshot is not whole (nothing in it
 * can be trusted); a torn tail after them is not an error (s->torn says so).
 */
int db_jstate_load(struct db_jstate *s, const void *data, size_t len);
/* The same from a journal's fd (read with pread, the fd's offset is left alone). */
int db_jstate_load_fd(struct db_jstate *s, int fd);

struct db_jrestore_ops {
	/* Is the client still there (its bus name still owned, by the same uid)? */
	bool (*client_alive)(const struct db_jclient *c, void *userdata);
	/* Hands over the fd stored under name, or -1. */
	int (*take_fd)(const char *name, void *userdata);
	void *userdata;
	uint64_t now_usec; /* CLOCK_MONOTONIC: expired tokens stay gone */
};

struct db_jrestore_stats {
	unsigned clients;
	unsigned clients_gone;
	unsigned buffers;
	unsigned buffers_missing; /* no fd in the store */
	unsigned tokens;
	unsigned moves;
};

/*
 * Rebuilds the registry s describes into reg (empty): clients that are still there, buffers
 * whose fds are found, the attachments between them, live tokens and pending moves. Ids are
 * never reused: reg's next ids continue after every id s has seen. Buffers nobody holds any
 * more are dropped.
 */
int db_jstate_restore(const struct db_jstate *s, struct db_registry *reg,
		      const struct db_jrestore_ops *ops, struct db_jrestore_stats *stats);
