/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The decoders of the methods' arguments (their a{sv} and EndStreamLink's) whose checks need no
 * broker state: a message in, a checked struct out, InvalidArgument naming the key otherwise. The handlers call
 * them, and fuzz/fuzz-methods runs the same code on messages made from fuzz input, without
 * a bus. (Allocate's, Export's and Share's are spec.c's.)
 */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "constraints.h"
#include "journal.h"

/* Register's info. Strings point into the message; devices are owned. */
struct db_register_args {
	const char *role; /* one of the roles (db_role_is_valid) */
	const char *name; /* text; MaxNameLength is the registry's to check */
	char **devices; /* at most 16 device nodes under /dev, or NULL */
	bool dynamic;
	bool compact_layouts;
};
int db_args_register(sd_bus_message *m, struct db_register_args *ret, sd_bus_error *error);
void db_register_args_clear(struct db_register_args *a);

/* CreateCollection's options. name points into the message. */
struct db_collection_args {
	const char *name;
	uint32_t participants;
};
int db_args_create_collection(sd_bus_message *m, struct db_collection_args *ret,
			      sd_bus_error *error);

/*
 * SetCollectionConstraints' constraints, with the storage c's sets point into. c.name and
 * c.dynamic are the caller's to fill; device points into the message ("" when absent).
 * The sets that are given are not empty; the rest is db_constraints_validate's.
 */
struct db_constraint_args {
	struct db_constraints c;
	uint32_t fourccs[DB_CONSTRAINTS_MAX_SET];
	uint64_t modifiers[DB_CONSTRAINTS_MAX_SET];
	char **backends; /* owned */
	const char *device;
};
int db_args_constraints(sd_bus_message *m, struct db_constraint_args *ret, sd_bus_error *error);
void db_constraint_args_clear(struct db_constraint_args *a);
/* Points c's sets into a's own storage again, after a was copied. */
void db_constraint_args_relink(struct db_constraint_args *a);

/* CreateStream's options. name points into the message ("" when absent); max_consumers 0
 * when absent (the limit applies); the format's framerate is 0/0 or has a denominator. */
struct db_stream_args {
	const char *name;
	enum db_stream_mode mode;
	uint32_t max_consumers;
	struct db_stream_format format;
};
int db_args_create_stream(sd_bus_message *m, struct db_stream_args *ret, sd_bus_error *error);

/* JoinStream's and JoinStreamWithToken's options. label points into the message ("" when
 * absent); the constraints are owned when has_constraints. */
struct db_join_stream_args {
	bool required;
	const char *label;
	bool has_constraints;
	struct db_constraint_args constraints;
};
int db_args_join_stream(sd_bus_message *m, struct db_join_stream_args *ret, sd_bus_error *error);
void db_join_stream_args_clear(struct db_join_stream_args *a);

/* EndStreamLink's arguments: the stream's path, the consumer's number and the reason (text of
 * at most DB_TEXT_MAX bytes), the strings pointing into the message. */
struct db_end_link_args {
	const char *stream;
	uint32_t consumer;
	const char *reason;
};
int db_args_end_stream_link(sd_bus_message *m, struct db_end_link_args *ret, sd_bus_error *error);

/* TakeStreamLink's arguments: the stream's path (pointing into the message) and the
 * consumer's number. */
struct db_take_link_args {
	const char *stream;
	uint32_t consumer;
};
int db_args_take_stream_link(sd_bus_message *m, struct db_take_link_args *ret, sd_bus_error *error);
