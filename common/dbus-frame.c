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
