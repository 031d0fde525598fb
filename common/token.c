// SPDX-License-Identifier: MIT
#include "token.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

int db_token_generate(struct db_token_bytes *ret)
{
	size_t done = 0;

	while (done < sizeof(ret->b)) {
		ssize_t n = getrandom(ret->b + done, sizeof(ret->b) - done, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)n;
	}
	return 0;
}

void db_token_to_hex(const struct db_token_bytes *t, char out[static DB_TOKEN_HEX_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < DB_TOKEN_SIZE; i++) {
		out[2 * i] = digits[t->b[i] >> 4];
		out[2 * i + 1] = digits[t->b[i] & 0xf];
	}
	out[DB_TOKEN_HEX_LEN] = '\0';
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int db_token_from_hex(const char *s, struct db_token_bytes *ret)
{
	struct db_token_bytes t;

	if (!s || strlen(s) != DB_TOKEN_HEX_LEN)
		return -EINVAL;
	for (size_t i = 0; i < DB_TOKEN_SIZE; i++) {
		int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		t.b[i] = (uint8_t)(hi << 4 | lo);
	}
	*ret = t;
	return 0;
}

bool db_token_equal(const struct db_token_bytes *a, const struct db_token_bytes *b)
{
	uint8_t diff = 0;

	for (size_t i = 0; i < DB_TOKEN_SIZE; i++)
		diff |= a->b[i] ^ b->b[i];
	return diff == 0;
}
