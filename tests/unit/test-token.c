// SPDX-License-Identifier: MIT
#include <errno.h>
#include <string.h>

#include "tap.h"
#include "token.h"

int main(void)
{
	struct db_token_bytes a, b, c;
	char hex[DB_TOKEN_HEX_LEN + 1];
	int distinct = 0;

	tap_is(db_token_generate(&a), 0, "generate");
	db_token_generate(&b);
	tap_ok(!db_token_equal(&a, &b), "two tokens differ");
	db_token_to_hex(&a, hex);
	tap_is(strlen(hex), 32, "hex is 32 characters");
	tap_is(db_token_from_hex(hex, &c), 0, "round trip parses");
	tap_ok(db_token_equal(&a, &c), "round trip is equal");
	tap_is(db_token_from_hex("xyz", &c), -EINVAL, "short text refused");
	hex[5] = 'g';
	tap_is(db_token_from_hex(hex, &c), -EINVAL, "non-hex refused");
	/* 128 random bits: every bit position should vary across a few hundred tokens. */
	{
		uint8_t or_all[DB_TOKEN_SIZE] = {0}, and_all[DB_TOKEN_SIZE];

		memset(and_all, 0xff, sizeof(and_all));
		for (int i = 0; i < 256; i++) {
			db_token_generate(&c);
			for (int k = 0; k < DB_TOKEN_SIZE; k++) {
				or_all[k] |= c.b[k];
				and_all[k] &= c.b[k];
			}
		}
		for (int k = 0; k < DB_TOKEN_SIZE; k++)
			distinct += or_all[k] == 0xff && and_all[k] == 0;
	}
	tap_is(distinct, DB_TOKEN_SIZE, "every bit of the token varies");
	return tap_done();
}
