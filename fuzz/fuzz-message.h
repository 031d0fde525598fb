/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

/*
 * Turns fuzz bytes into a sealed, readable message holding one a{sv} dictionary, as a client
 * would send it: the bytes pick keys (the ones the parsers know, and others), the variant's
 * type (right or wrong), and the values. The daemon's parsers then read it as they read a
 * client's call.
 */
int fuzz_dict_message(const uint8_t *data, size_t size, sd_bus_message **ret);

/* --- the pieces, for harnesses that build other messages --- */

struct fuzz_reader {
	const uint8_t *p;
	size_t left;
};

/* The next byte, or 0 past the end. */
uint8_t fuzz_take8(struct fuzz_reader *r);
uint64_t fuzz_take64(struct fuzz_reader *r);

/*
 * A number as clients send them to break things: an integer edge (0, 1, 2^31, 2^32 - 1,
 * 2^63, 2^64 - 1 and neighbours), a value of the domain (fourccs, page and huge-page sizes,
 * common widths), a small one, or 64 raw bits; the first byte says which.
 */
uint64_t fuzz_take_number(struct fuzz_reader *r);

/*
 * A string of up to len - 1 bytes: printable ASCII, and from the other byte values line
 * breaks, escapes, C1 and bidi controls, multi-byte characters and printf conversions. Always
 * UTF-8 (sd-bus refuses anything else), so the daemon's own check is what is tested.
 */
void fuzz_take_string(struct fuzz_reader *r, char *out, size_t len);

/* A method call on an unstarted peer connection, to fill and then seal with
 * fuzz_message_seal (which rewinds it for reading). */
int fuzz_message_new(const char *member, sd_bus_message **ret);
int fuzz_message_seal(sd_bus_message *m);

/*
 * Appends one a{sv}: keys[i] takes a value of type types[i] ("s", "b", "u", "t", "au", "at",
 * "as") most of the time, of another type now and then; now and then a key nobody knows.
 */
int fuzz_append_dict(sd_bus_message *m, struct fuzz_reader *r, const char *const *keys,
		     const char *const *types, size_t n_keys);

/* The same, where nested_key takes a dictionary built from the nested tables (CreateStream's
 * "format", JoinStream's "constraints"). */
int fuzz_append_dict_nested(sd_bus_message *m, struct fuzz_reader *r, const char *const *keys,
			    const char *const *types, size_t n_keys, const char *nested_key,
			    const char *const *nested_keys, const char *const *nested_types,
			    size_t n_nested);

/* SetCollectionConstraints' keys, each with the type the contract gives it: both the
 * collection fuzzer and the method fuzzer build constraint dictionaries from them. */
#define FUZZ_N_CONSTRAINT_KEYS 26
extern const char *const fuzz_constraint_keys[FUZZ_N_CONSTRAINT_KEYS];
extern const char *const fuzz_constraint_types[FUZZ_N_CONSTRAINT_KEYS];
