/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>

/*
 * The fixed part of a D-Bus message, enough to know what the rest will cost before it is
 * read: the endianness byte, the type, the flags, the protocol version, the body length
 * (offset 4), the serial and the length of the header-field array (offset 12). The message
 * is those 16 bytes, the fields padded to 8, and the body.
 */
#define DB_FRAME_FIXED_SIZE 16

enum db_frame_type {
	DB_FRAME_INVALID = 0,
	DB_FRAME_METHOD_CALL = 1,
	DB_FRAME_METHOD_RETURN = 2,
	DB_FRAME_ERROR = 3,
	DB_FRAME_SIGNAL = 4,
};

#define DB_FRAME_NO_REPLY_EXPECTED 0x1

struct db_frame_info {
	uint64_t size; /* the whole message, fixed part included */
	uint8_t type; /* enum db_frame_type */
	uint8_t flags;
};

/*
 * Reads the fixed part. -EBADMSG for an unknown endianness, type or protocol version
 * (nothing a peer of this daemon sends); the size is computed in 64 bits, so no declared
 * length can wrap it.
 */
int db_frame_parse(const uint8_t fixed[DB_FRAME_FIXED_SIZE], struct db_frame_info *ret);

/*
 * The number of descriptors a whole message's header declares (its UNIX_FDS field, 0 when
 * absent), walking the header-field array of data (info->size bytes, as parsed). -EBADMSG
 * for a field array that does not parse: a field of a type the specification does not give
 * it, or one that runs past the array.
 */
int db_frame_unix_fds(const uint8_t *data, const struct db_frame_info *info, uint32_t *ret);

/* Does this message expect a reply (a method call without NO_REPLY_EXPECTED)? */
static inline int db_frame_wants_reply(const struct db_frame_info *f)
{
	return f->type == DB_FRAME_METHOD_CALL && !(f->flags & DB_FRAME_NO_REPLY_EXPECTED);
}

/* Is this message an answer to a call (a method return or an error)? */
static inline int db_frame_is_reply(const struct db_frame_info *f)
{
	return f->type == DB_FRAME_METHOD_RETURN || f->type == DB_FRAME_ERROR;
}
