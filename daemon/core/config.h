/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry.h"

#define DB_CONFIG_FILE SYSCONFDIR "/dmabroker/dmabroker.conf"

struct db_config {
	struct db_limits limits;
	char default_backend[16]; /* "" = the first available */
	uint32_t move_deadline_ms; /* how long a move waits for holders to reacquire */
	uint32_t peer_auth_timeout_ms; /* how long a new peer connection may take to authenticate */
	uint32_t peer_message_timeout_ms; /* how long a peer's message may stay partial */
	/* How long a peer may read nothing while answers wait for it before it is closed. */
	uint32_t peer_stall_timeout_ms;
	/* How long a buffer collection waits for its participants' constraints (and how long a
	 * join token lives) before the silent ones are dropped. */
	uint32_t collection_deadline_ms;
	/* How long the producer's end of a new consumer's link waits in the daemon for the
	 * producer to take it (TakeStreamLink) before it is closed and the consumer removed. */
	uint32_t stream_link_timeout_ms;
	/* Entries the fd store holds (the unit's FileDescriptorStoreMax=): the buffers' backings,
	 * the journal and one spare. Requests that would need more are refused. */
	uint32_t fd_store_max;
};

void db_config_init_default(struct db_config *cfg);

/*
 * Applies one GKeyFile text on top of cfg. Unknown groups and keys are errors, so a typo
 * does not silently leave a limit at its default. On error cfg is unchanged and errbuf
 * says what was wrong.
 */
int db_config_apply_data(struct db_config *cfg, const char *data, size_t len, char *errbuf,
			 size_t errlen);

/*
 * Loads path (a missing file is not an error) and then path.d/ *.conf in name order,
 * each on top of the last, starting from the defaults.
 */
int db_config_load(struct db_config *ret, const char *path, char *errbuf, size_t errlen);

/* The [Limits] keys in order, with their values: the Limits property. */
size_t db_config_limit_count(void);
const char *db_config_limit_name(size_t i);
uint64_t db_config_limit_value(const struct db_limits *l, size_t i);

/* Parses "123", "64K", "16M", "2G" (powers of 1024) into bytes or counts. */
int db_config_parse_size(const char *s, uint64_t *ret);
