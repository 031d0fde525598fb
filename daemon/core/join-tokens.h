/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * A set of single-use, expiring join tokens: what CreateCollectionToken and
 * CreateStreamToken hand out, and JoinCollection and JoinStreamWithToken take back.
 * No D-Bus and no clock here: the caller says what time it is.
 */

#include <stdbool.h>
#include <stdint.h>

#include "token.h"

struct db_join_tokens;

struct db_join_tokens *db_join_tokens_new(void);
void db_join_tokens_free(struct db_join_tokens *set);

/* Issues a fresh token (*ret) that is good until expires_usec; nothing is added on failure. */
int db_join_tokens_add(struct db_join_tokens *set, uint64_t expires_usec,
		       struct db_token_bytes *ret);

/* Looks token up among the unexpired ones, comparing every token without an early exit, so
 * that the time taken tells nothing of a near guess. True and *index if found. */
bool db_join_tokens_find(const struct db_join_tokens *set, const struct db_token_bytes *token,
			 uint64_t now, unsigned *index);

/* Removes the token at index (from db_join_tokens_find): a token is used once. */
void db_join_tokens_take(struct db_join_tokens *set, unsigned index);

/* Removes every token whose time is up at now. */
void db_join_tokens_expire(struct db_join_tokens *set, uint64_t now);

/* Removes every token. */
void db_join_tokens_clear(struct db_join_tokens *set);

unsigned db_join_tokens_count(const struct db_join_tokens *set);
