/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/*
 * What the daemon queues toward one receiver (a peer connection, an event subscriber),
 * counted in bytes because bytes are what it costs. Every path that queues for a client
 * charges the receiver's budget and every write or acknowledgement releases it; whether more
 * may be queued is asked of the budget, never decided by the path itself.
 */
struct db_budget {
	uint64_t used;
	uint64_t limit; /* 0: nothing may be queued */
};

static inline void db_budget_init(struct db_budget *b, uint64_t limit)
{
	b->used = 0;
	b->limit = limit;
}

/* Would n more bytes stay within the budget? */
static inline bool db_budget_fits(const struct db_budget *b, uint64_t n)
{
	return b->used <= b->limit && n <= b->limit - b->used;
}

/* Has the receiver reached its budget (nothing more should be produced for it)? */
static inline bool db_budget_full(const struct db_budget *b)
{
	return b->used >= b->limit;
}

static inline void db_budget_charge(struct db_budget *b, uint64_t n)
{
	b->used = n > UINT64_MAX - b->used ? UINT64_MAX : b->used + n;
}

static inline void db_budget_release(struct db_budget *b, uint64_t n)
{
	b->used = n > b->used ? 0 : b->used - n;
}
