/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 128 random bits: guessing one is hopeless, so a token is a capability. */
#define DB_TOKEN_SIZE 16
#define DB_TOKEN_HEX_LEN (2 * DB_TOKEN_SIZE)

struct db_token_bytes {
	uint8_t b[DB_TOKEN_SIZE];
};

/* Fills a token from the kernel's random pool (getrandom). */
int db_token_generate(struct db_token_bytes *ret);

/* Lower-case hex, DB_TOKEN_HEX_LEN characters plus NUL. */
void db_token_to_hex(const struct db_token_bytes *t, char out[static DB_TOKEN_HEX_LEN + 1]);

/* Parses exactly DB_TOKEN_HEX_LEN hex digits; -EINVAL otherwise. */
int db_token_from_hex(const char *s, struct db_token_bytes *ret);

/* Constant-time comparison: a lookup must not tell how much of a guess was right. */
bool db_token_equal(const struct db_token_bytes *a, const struct db_token_bytes *b);
