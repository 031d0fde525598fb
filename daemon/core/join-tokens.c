// SPDX-License-Identifier: MIT
#include "join-tokens.h"

#include <glib.h>

struct join_token {
	struct db_token_bytes bytes;
	uint64_t expires_usec;
};

struct db_join_tokens {
	GArray *tokens; /* struct join_token */
};

struct db_join_tokens *db_join_tokens_new(void)
{
	struct db_join_tokens *set = g_new0(struct db_join_tokens, 1);

	set->tokens = g_array_new(FALSE, FALSE, sizeof(struct join_token));
	return set;
}

void db_join_tokens_free(struct db_join_tokens *set)
{
	if (!set)
		return;
	g_array_unref(set->tokens);
	g_free(set);
}

int db_join_tokens_add(struct db_join_tokens *set, uint64_t expires_usec,
		       struct db_token_bytes *ret)
{
	struct join_token t;
	int r;

	r = db_token_generate(&t.bytes);
	if (r < 0)
		return r;
	t.expires_usec = expires_usec;
	g_array_append_val(set->tokens, t);
	*ret = t.bytes;
	return 0;
}

bool db_join_tokens_find(const struct db_join_tokens *set, const struct db_token_bytes *token,
			 uint64_t now, unsigned *index)
{
	bool found = false;

	for (guint i = 0; i < set->tokens->len; i++) {
		const struct join_token *t = &g_array_index(set->tokens, struct join_token, i);

		/* Constant time per token: the lookup must not tell a near guess. */
		if (db_token_equal(&t->bytes, token) && t->expires_usec > now) {
			found = true;
			*index = i;
		}
	}
	return found;
}

void db_join_tokens_take(struct db_join_tokens *set, unsigned index)
{
	g_array_remove_index_fast(set->tokens, index);
}

void db_join_tokens_expire(struct db_join_tokens *set, uint64_t now)
{
	for (guint i = set->tokens->len; i-- > 0;)
		if (g_array_index(set->tokens, struct join_token, i).expires_usec <= now)
			g_array_remove_index_fast(set->tokens, i);
}

void db_join_tokens_clear(struct db_join_tokens *set)
{
	g_array_set_size(set->tokens, 0);
}

unsigned db_join_tokens_count(const struct db_join_tokens *set)
{
	return set->tokens->len;
}
