// SPDX-License-Identifier: MIT
#include "dbus-frame.h"

#include <errno.h>

static uint32_t read_u32(const uint8_t *p, int little)
{
	if (little)
		return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
		       (uint32_t)p[3] << 24;
	return (uint32_t)p[3] | (uint32_t)p[2] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[0] << 24;
}

int db_frame_parse(const uint8_t fixed[DB_FRAME_FIXED_SIZE], struct db_frame_info *ret)
{
	uint64_t fields, body;
	int little;

	if (fixed[0] != 'l' && fixed[0] != 'B')
		return -EBADMSG;
	/* Version 1 is the only one dbus-daemon and sd-bus speak on a socket. */
	if (fixed[3] != 1)
		return -EBADMSG;
	if (fixed[1] < DB_FRAME_METHOD_CALL || fixed[1] > DB_FRAME_SIGNAL)
		return -EBADMSG;
	little = fixed[0] == 'l';
	body = read_u32(fixed + 4, little);
	fields = read_u32(fixed + 12, little);
	ret->size = DB_FRAME_FIXED_SIZE + ((fields + 7) & ~(uint64_t)7) + body;
	ret->type = fixed[1];
	ret->flags = fixed[2];
	return 0;
}

/*
 * The header fields are an array of (byte code, variant), each entry 8-aligned; every
 * defined field has one fixed type: PATH o, INTERFACE s, MEMBER s, ERROR_NAME s, REPLY_SERIAL
 * u, DESTINATION s, SENDER s, SIGNATURE g, UNIX_FDS u. Unknown codes must be skipped by the
 * specification, so their variants are walked too (basic types only: nothing a peer needs).
 */
int db_frame_unix_fds(const uint8_t *data, const struct db_frame_info *info, uint32_t *ret)
{
	int little = data[0] == 'l';
	uint64_t len = read_u32(data + 12, little);
	uint64_t pos = DB_FRAME_FIXED_SIZE, end = DB_FRAME_FIXED_SIZE + len;
	uint32_t n = 0;

	if (end > info->size)
		return -EBADMSG;
	while (pos < end) {
		uint8_t code, siglen;
		char type;

		pos = (pos + 7) & ~(uint64_t)7;
		if (pos >= end)
			break;
		/* code, signature length (1), the type, its NUL */
		if (pos + 4 > end)
			return -EBADMSG;
		code = data[pos];
		siglen = data[pos + 1];
		type = (char)data[pos + 2];
		if (siglen != 1 || data[pos + 3] != 0)
			return -EBADMSG;
		pos += 4;
		if (code == 9 && type != 'u')
			return -EBADMSG;
		switch (type) {
		case 'o':
		case 's': {
			uint64_t l;

			pos = (pos + 3) & ~(uint64_t)3;
			if (pos + 4 > end)
				return -EBADMSG;
			l = read_u32(data + pos, little);
			pos += 4 + l + 1;
			break;
		}
		case 'g':
			if (pos + 1 > end)
				return -EBADMSG;
			pos += 1 + (uint64_t)data[pos] + 1;
			break;
		case 'u':
			pos = (pos + 3) & ~(uint64_t)3;
			if (pos + 4 > end)
				return -EBADMSG;
			if (code == 9)
				n = read_u32(data + pos, little);
			pos += 4;
			break;
		case 'y':
			pos += 1;
			break;
		default:
			return -EBADMSG;
		}
		if (pos > end)
			return -EBADMSG;
	}
	*ret = n;
	return 0;
}
