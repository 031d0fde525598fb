/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-bus.h>

#include "layout.h"
#include "registry.h"

/* An allocation request, checked: what Allocate and AllocateMany will make. */
struct db_alloc_plan {
	size_t size; /* page-aligned */
	struct db_layout layout; /* fourcc 0 for a plain buffer */
	/* What the spec itself says, the rest zero: a plain buffer's page-aligned size, or an
	 * image's width, height, fourcc and modifier. A client that registered with
	 * "compact_layouts" knows these: the reply leaves them out. */
	struct db_layout asked;
	const char *backend; /* borrowed from the message; NULL: the default */
	const char *name; /* borrowed from the message; never NULL */
	bool contiguous;
};

/*
 * Reads and checks an allocation spec (a{sv}) against the limits: sizes (zero, over
 * MaxBufferSize, overflowing), formats, modifiers, names. Errors carry a message that says
 * what was wrong. Does not look at which backends exist.
 */
int db_spec_parse_alloc(sd_bus_message *m, const struct db_registry *reg, struct db_alloc_plan *ret,
			sd_bus_error *error);

/* The same for Export's info: an optional name and layout, checked against size. */
int db_spec_parse_export(sd_bus_message *m, const struct db_registry *reg, size_t size,
			 struct db_layout *ret_layout, const char **ret_name, sd_bus_error *error);

/* Share's options. now_usec gives the absolute expiry. */
struct db_share_opts {
	bool single_use;
	uint64_t expires_usec;
	bool uid_bound;
	uint32_t uid;
};
int db_spec_parse_share(sd_bus_message *m, uint64_t now_usec, struct db_share_opts *ret,
			sd_bus_error *error);
