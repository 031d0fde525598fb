// SPDX-License-Identifier: MIT
#include "join-tokens.h"
#include "tap.h"

int main(void)
{
	struct db_join_tokens *set = db_join_tokens_new();
	struct db_token_bytes a, b, guess;
	unsigned index = 99;

	tap_is(db_join_tokens_add(set, 100, &a), 0, "add a (expires at 100)");
	tap_is(db_join_tokens_add(set, 200, &b), 0, "add b (expires at 200)");
	tap_is(db_join_tokens_count(set), 2, "two tokens");
	tap_ok(db_join_tokens_find(set, &b, 50, &index), "b is found");
	tap_is(index, 1, "at its index");
	guess = a;
	guess.b[DB_TOKEN_SIZE - 1] ^= 1;
	tap_ok(!db_join_tokens_find(set, &guess, 50, &index), "a near guess is not found");
	tap_ok(!db_join_tokens_find(set, &a, 100, &index), "a is not found once its time is up");
	db_join_tokens_expire(set, 100);
	tap_is(db_join_tokens_count(set), 1, "expire removes a only");
	tap_ok(db_join_tokens_find(set, &b, 100, &index), "b is still found");
	db_join_tokens_take(set, index);
	tap_is(db_join_tokens_count(set), 0, "take removes it");
	tap_ok(!db_join_tokens_find(set, &b, 100, &index), "a taken token is gone");
	db_join_tokens_add(set, 300, &a);
	db_join_tokens_clear(set);
	tap_is(db_join_tokens_count(set), 0, "clear removes every token");
	db_join_tokens_free(set);
	return tap_done();
}
