/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The stream link's records (include/dmabroker-wire.h): one encoder and one decoder, shared by
 * the library and its tests and fuzzer. Pure: no I/O, no state. What depends on a link's state
 * (an index in range for the collection, a RELEASE of a frame that was sent, a strictly
 * increasing seq) is the caller's to check after decoding.
 */
#include <stddef.h>
#include <stdint.h>

#include "dmabroker-wire.h"

/* A record in host byte order. */
union db_wire_record {
	struct dmabroker_wire_header header;
	struct dmabroker_wire_hello hello;
	struct dmabroker_wire_frame frame;
	struct dmabroker_wire_release release;
};

/* The size of a record of type, 0 for an unknown type. */
size_t db_wire_record_size(uint16_t type);

/*
 * Decodes and checks one received record of len bytes that came with n_fds descriptors:
 * the version, the type, the exact size for the type, the reserved bytes, the flags the
 * type allows, meta_size and the bytes past it, END_OF_STREAM without a buffer only without
 * a fence, and n_fds equal to the FENCE flag. Returns the record's type, or -EPROTO for an
 * unknown version, -EBADMSG for anything else; *ret_reason (may be NULL) says which rule was
 * broken, a static string.
 */
int db_wire_decode(const void *buf, size_t len, unsigned n_fds, union db_wire_record *ret,
		   const char **ret_reason);

/*
 * Encodes rec (its type in rec->header.type; the version and size are set here) into out,
 * which has room for DMABROKER_WIRE_RECORD_MAX bytes. The record is checked as
 * db_wire_decode() would check it (with as many descriptors as its FENCE flag says), so that
 * nothing sent is refused by a peer that checks: returns the size, or -EBADMSG/-EPROTO with
 * *ret_reason as db_wire_decode().
 */
int db_wire_encode(const union db_wire_record *rec, void *out, const char **ret_reason);
