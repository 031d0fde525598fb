// SPDX-License-Identifier: MIT
#include "config.h"

#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "macros.h"

void db_config_init_default(struct db_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	db_limits_init_default(&cfg->limits);
	cfg->move_deadline_ms = 5000;
	cfg->peer_auth_timeout_ms = 5000;
	cfg->peer_message_timeout_ms = 5000;
	cfg->peer_stall_timeout_ms = 60000;
	cfg->collection_deadline_ms = 30000;
	cfg->stream_link_timeout_ms = 10000;
	/* The unit's FileDescriptorStoreMax=. */
	cfg->fd_store_max = 16384;
}

int db_config_parse_size(const char *s, uint64_t *ret)
{
	uint64_t v = 0, mult = 1;
	const char *p = s;

	if (!*p)
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *p - '0', &v))
			return -ERANGE;
	}
	if (p == s)
		return -EINVAL;
	switch (*p) {
	case '\0':
		break;
	case 'K':
		mult = 1ull << 10;
		p++;
		break;
	case 'M':
		mult = 1ull << 20;
		p++;
		break;
	case 'G':
		mult = 1ull << 30;
		p++;
		break;
	case 'T':
		mult = 1ull << 40;
		p++;
		break;
	default:
		return -EINVAL;
	}
	if (*p)
		return -EINVAL;
	if (__builtin_mul_overflow(v, mult, &v))
		return -ERANGE;
	*ret = v;
	return 0;
}

struct limit_key {
	const char *key;
	size_t offset;
	uint64_t min;
	uint64_t max;
};

#define LIMIT(k, field, lo, hi)                              \
	{                                                    \
		k, offsetof(struct db_limits, field), lo, hi \
	}
static const struct limit_key limit_keys[] = {
	LIMIT("MaxBufferSize", max_buffer_size, 4096, 1ull << 40),
	LIMIT("MaxBytesPerClient", max_bytes_per_client, 4096, 1ull << 44),
	LIMIT("MaxBuffersPerClient", max_buffers_per_client, 1, 1u << 20),
	LIMIT("MaxTokensPerClient", max_tokens_per_client, 0, 1u << 20),
	LIMIT("MaxBytesPerUid", max_bytes_per_uid, 4096, 1ull << 44),
	LIMIT("MaxBuffersPerUid", max_buffers_per_uid, 1, 1u << 22),
	LIMIT("MaxTokensPerUid", max_tokens_per_uid, 0, 1u << 22),
	LIMIT("MaxClients", max_clients, 1, 1u << 20),
	LIMIT("MaxClientsPerUid", max_clients_per_uid, 1, 1u << 20),
	LIMIT("MaxBytesTotal", max_bytes_total, 4096, 1ull << 46),
	LIMIT("MaxBuffersTotal", max_buffers_total, 1, 1u << 24),
	/* The largest legitimate call is a few KiB; sd-bus itself would take 128 MiB. */
	LIMIT("MaxMessageSize", max_message_size, 4096, 16u << 20),
	LIMIT("PeerWindowCalls", peer_window_calls, 1, 4096),
	LIMIT("PeerWindowBytes", peer_window_bytes, 64 * 1024, 256u << 20),
	LIMIT("PeerWindowBytesPerUid", peer_window_bytes_per_uid, 64 * 1024, 1ull << 32),
	LIMIT("PeerWindowFdsPerUid", peer_window_fds_per_uid, 16, 65536),
	LIMIT("SubscriberWindowBytes", subscriber_window_bytes, 16 * 1024, 256u << 20),
	/* The kernel keeps 31 bytes of a dma-buf's name. */
	LIMIT("MaxNameLength", max_name_length, 1, 255),
	LIMIT("MaxCollectionsPerClient", max_collections_per_client, 0, 1024),
	/* The solver names conflicts among at most 64 (constraints.h). */
	LIMIT("MaxParticipantsPerCollection", max_participants_per_collection, 1, 64),
	LIMIT("MaxBuffersPerCollection", max_buffers_per_collection, 1, 256),
	LIMIT("MaxStreamsPerClient", max_streams_per_client, 0, 1024),
	/* The journal's decoder takes at most 1024 consumers of a stream. */
	LIMIT("MaxConsumersPerStream", max_consumers_per_stream, 1, 1024),
	/* Each an fd the daemon holds until its producer takes it. */
	LIMIT("MaxPendingLinksPerUid", max_pending_links_per_uid, 1, 4096),
};

/* [Daemon] durations, given in seconds and kept in milliseconds. */
struct seconds_key {
	const char *key;
	size_t offset;
	uint32_t max;
};

static const struct seconds_key seconds_keys[] = {
	{"MoveDeadlineSec", offsetof(struct db_config, move_deadline_ms), 3600},
	{"PeerAuthTimeoutSec", offsetof(struct db_config, peer_auth_timeout_ms), 60},
	{"PeerMessageTimeoutSec", offsetof(struct db_config, peer_message_timeout_ms), 60},
	{"PeerStallTimeoutSec", offsetof(struct db_config, peer_stall_timeout_ms), 3600},
	{"CollectionDeadlineSec", offsetof(struct db_config, collection_deadline_ms), 3600},
	{"StreamLinkTimeoutSec", offsetof(struct db_config, stream_link_timeout_ms), 3600},
};

size_t db_config_limit_count(void)
{
	return ARRAY_SIZE(limit_keys);
}

const char *db_config_limit_name(size_t i)
{
	return limit_keys[i].key;
}

uint64_t db_config_limit_value(const struct db_limits *l, size_t i)
{
	return *(const uint64_t *)((const char *)l + limit_keys[i].offset);
}

static int apply_keyfile(struct db_config *cfg, GKeyFile *kf, char *errbuf, size_t errlen)
{
	g_auto(GStrv) groups = g_key_file_get_groups(kf, NULL);
	struct db_config next = *cfg;

	for (size_t g = 0; groups[g]; g++) {
		g_auto(GStrv) keys = g_key_file_get_keys(kf, groups[g], NULL, NULL);
		bool is_limits = strcmp(groups[g], "Limits") == 0;

		if (!is_limits && strcmp(groups[g], "Daemon") != 0) {
			snprintf(errbuf, errlen, "unknown section [%s]", groups[g]);
			return -EINVAL;
		}
		for (size_t k = 0; keys && keys[k]; k++) {
			g_autofree char *value =
				g_key_file_get_string(kf, groups[g], keys[k], NULL);
			const struct limit_key *lk = NULL;
			bool handled = false;
			uint64_t v;

			if (!value)
				continue;
			if (!is_limits && strcmp(keys[k], "DefaultBackend") == 0) {
				if (*value && !db_backend_find(value)) {
					snprintf(errbuf, errlen,
						 "DefaultBackend=%s: not one of udmabuf, dma-heap, "
						 "memfd",
						 value);
					return -EINVAL;
				}
				snprintf(next.default_backend, sizeof(next.default_backend), "%s",
					 value);
				continue;
			}
			if (!is_limits && strcmp(keys[k], "FdStoreMax") == 0) {
				/* The journal and a spare entry for its compaction need two. */
				if (db_config_parse_size(value, &v) < 0 || v < 3 || v > 1u << 20) {
					snprintf(errbuf, errlen,
						 "FdStoreMax=%s: want 3 to 1048576 entries", value);
					return -EINVAL;
				}
				next.fd_store_max = (uint32_t)v;
				continue;
			}
			for (size_t i = 0; !is_limits && i < ARRAY_SIZE(seconds_keys); i++) {
				const struct seconds_key *sk = &seconds_keys[i];

				if (strcmp(keys[k], sk->key) != 0)
					continue;
				if (db_config_parse_size(value, &v) < 0 || v == 0 || v > sk->max) {
					snprintf(errbuf, errlen, "%s=%s: want 1 to %u seconds",
						 sk->key, value, sk->max);
					return -EINVAL;
				}
				*(uint32_t *)((char *)&next + sk->offset) = (uint32_t)(v * 1000);
				handled = true;
			}
			if (handled)
				continue;
			for (size_t i = 0; is_limits && i < ARRAY_SIZE(limit_keys); i++)
				if (strcmp(keys[k], limit_keys[i].key) == 0)
					lk = &limit_keys[i];
			if (!lk) {
				snprintf(errbuf, errlen, "unknown key %s in [%s]", keys[k],
					 groups[g]);
				return -EINVAL;
			}
			if (db_config_parse_size(value, &v) < 0 || v < lk->min || v > lk->max) {
				snprintf(errbuf, errlen,
					 "%s=%s: want a number from %llu to %llu (K, M, G allowed)",
					 lk->key, value, (unsigned long long)lk->min,
					 (unsigned long long)lk->max);
				return -EINVAL;
			}
			*(uint64_t *)((char *)&next.limits + lk->offset) = v;
		}
	}
	*cfg = next;
	return 0;
}

int db_config_apply_data(struct db_config *cfg, const char *data, size_t len, char *errbuf,
			 size_t errlen)
{
	g_autoptr(GKeyFile) kf = g_key_file_new();
	g_autoptr(GError) error = NULL;

	if (!g_key_file_load_from_data(kf, data, len, G_KEY_FILE_NONE, &error)) {
		snprintf(errbuf, errlen, "%s", error->message);
		return -EINVAL;
	}
	return apply_keyfile(cfg, kf, errbuf, errlen);
}

static int apply_file(struct db_config *cfg, const char *path, char *errbuf, size_t errlen)
{
	g_autofree char *data = NULL;
	g_autoptr(GError) error = NULL;
	gsize len;
	char inner[256];
	int r;

	if (!g_file_get_contents(path, &data, &len, &error)) {
		if (g_error_matches(error, G_FILE_ERROR, G_FILE_ERROR_NOENT))
			return 0;
		snprintf(errbuf, errlen, "%s", error->message);
		return -EIO;
	}
	if (len > 64 * 1024) {
		snprintf(errbuf, errlen, "%s: larger than 64 KiB", path);
		return -EFBIG;
	}
	r = db_config_apply_data(cfg, data, len, inner, sizeof(inner));
	if (r < 0)
		snprintf(errbuf, errlen, "%s: %s", path, inner);
	return r;
}

static gint compare_names(gconstpointer a, gconstpointer b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int db_config_load(struct db_config *ret, const char *path, char *errbuf, size_t errlen)
{
	struct db_config cfg;
	g_autofree char *dropin_dir = g_strconcat(path, ".d", NULL);
	g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
	GDir *dir;
	int r;

	db_config_init_default(&cfg);
	r = apply_file(&cfg, path, errbuf, errlen);
	if (r < 0)
		return r;
	dir = g_dir_open(dropin_dir, 0, NULL);
	if (dir) {
		const char *name;

		while ((name = g_dir_read_name(dir)))
			if (g_str_has_suffix(name, ".conf"))
				g_ptr_array_add(names, g_build_filename(dropin_dir, name, NULL));
		g_dir_close(dir);
	}
	g_ptr_array_sort(names, compare_names);
	for (guint i = 0; i < names->len; i++) {
		r = apply_file(&cfg, g_ptr_array_index(names, i), errbuf, errlen);
		if (r < 0)
			return r;
	}
	*ret = cfg;
	return 0;
}
