// SPDX-License-Identifier: MIT
/*
 * The collection path, as the daemon runs it: each participant's constraints arrive as an
 * a{sv} (its numbers mostly at the integer edges and among the domain's values), go through
 * the bus decoder and the validation, and then the participants' intersection against a
 * machine from the input gives a plan or a refusal. What must hold: no crash; a plan that
 * every participant fits as a late joiner would; refusal text that is text, naming a set of
 * participants that exists.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "constraints.h"
#include "fuzz-message.h"
#include "text.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_PARTS 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(bool ok)
{
	if (!ok)
		abort();
}

static bool is_text(const char *s, size_t max)
{
	return db_text_check(s, max, 0, NULL) == 0;
}

/* One participant's constraints through the bus decoder. 0, or it was refused (in text). */
static int decode(struct fuzz_reader *rd, struct db_constraint_args *ret)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL;
	int r;

	r = fuzz_message_new("SetCollectionConstraints", &m);
	if (r >= 0)
		r = fuzz_append_dict(m, rd, fuzz_constraint_keys, fuzz_constraint_types,
				     FUZZ_N_CONSTRAINT_KEYS);
	if (r >= 0)
		r = fuzz_message_seal(m);
	if (r >= 0) {
		r = db_args_constraints(m, ret, &error);
		if (r < 0)
			require(sd_bus_error_is_set(&error) && is_text(error.message, 4096));
	}
	sd_bus_error_free(&error);
	/* The device string points into the message: the daemon keeps none of it either. */
	if (r >= 0)
		ret->device = NULL;
	sd_bus_message_unref(m);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[MAX_PARTS] = {"a (client 1)", "b (vivid, /dev/video1)",
						     "c (client 3)", "d (client 4)"};
	struct db_heap_info heaps[2] = {{"system", false}, {"linux,cma", true}};
	struct db_constraint_args args[MAX_PARTS];
	/*
	 * The participants behind a poisoned neighbour: a message that names a participant
	 * before the first (an index of -1, the crash this target was written for) prints the
	 * poison and fails the text check, whatever else the memory there holds.
	 */
	struct db_constraints slots[1 + MAX_PARTS] = {{.name = "\n\x1b[31mnot a participant"}};
	struct db_constraints *parts = slots + 1;
	struct fuzz_reader rd = {data, size};
	struct db_constraints_error err;
	struct db_collection_plan plan;
	struct db_machine_info mach;
	size_t want, n = 0;
	uint8_t mb, fb;
	unsigned flags;
	int r;

	if (size < 3)
		return 0;
	want = 1 + fuzz_take8(&rd) % MAX_PARTS;
	mb = fuzz_take8(&rd);
	fb = fuzz_take8(&rd);
	mach = (struct db_machine_info){
		.udmabuf = mb & 1,
		.memfd = mb & 2,
		.heaps = heaps,
		.n_heaps = (mb >> 2) % 3,
		.huge_page_size = mb & 16 ? 2u << 20 : 0,
		.hugetlb_vmap_safe = mb & 32,
		.udmabuf_size_limit = mb & 64 ? 64u << 20 : 0,
		.max_buffer_size = mb & 128 ? 1ull << 30 : 0,
		.page_size = 4096,
	};
	flags = fb & 1 ? DB_CONSTRAINTS_STRICT_SEGMENTS : 0;
	for (size_t i = 0; i < want; i++) {
		uint8_t pb = fuzz_take8(&rd);

		if (decode(&rd, &args[n]) < 0)
			continue;
		args[n].c.name = names[n];
		args[n].c.dynamic = pb & 1;
		parts[n] = args[n].c;
		n++;
	}
	if (n == 0)
		return 0;

	memset(&err, 0, sizeof(err));
	r = db_constraints_intersect(parts, n, &mach, flags, &plan, &err);
	require(r == 0 || r == -EINVAL || r == -EOPNOTSUPP || r == -ENODEV);
	if (r < 0) {
		/* The refusal is what WaitCollection, the log and ListCollections show. */
		require(err.message[0] && is_text(err.message, sizeof(err.message) - 1));
		if (r == -EOPNOTSUPP)
			require(err.conflict != 0 && (err.conflict >> n) == 0);
	} else {
		require(is_text(plan.note, sizeof(plan.note) - 1));
		require(plan.buffer_count >= 1 && plan.buffer_count <= DB_CONSTRAINTS_MAX_BUFFERS);
		require(plan.size > 0 && plan.size % 4096 == 0 && plan.layout.size == plan.size);
		require(plan.camping_total <= plan.buffer_count);
		/* Every participant, its own camping taken out, fits what was allocated. */
		for (size_t i = 0; i < n; i++) {
			struct db_collection_plan q = plan;
			struct db_constraints_fit fit;

			q.camping_total -= parts[i].min_buffer_count_for_camping;
			r = db_constraints_check_joiner(&q, &parts[i], flags, &fit, &err);
			if (r != 0)
				fprintf(stderr, "participant %zu does not fit: %s\n", i,
					err.message);
			require(r == 0 && fit.path == plan.paths[i]);
		}
	}
	for (size_t i = 0; i < n; i++)
		db_constraint_args_clear(&args[i]);
	return 0;
}
