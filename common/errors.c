// SPDX-License-Identifier: MIT
#include "errors.h"

#include <errno.h>

#include "protocol.h"

const sd_bus_error_map db_error_map[] = {
	SD_BUS_ERROR_MAP(DB_ERROR_INVALID_ARGUMENT, EINVAL),
	SD_BUS_ERROR_MAP(DB_ERROR_NOT_REGISTERED, ENOTCONN),
	SD_BUS_ERROR_MAP(DB_ERROR_NOT_FOUND, ENOENT),
	SD_BUS_ERROR_MAP(DB_ERROR_PERMISSION_DENIED, EACCES),
	SD_BUS_ERROR_MAP(DB_ERROR_QUOTA_EXCEEDED, EDQUOT),
	SD_BUS_ERROR_MAP(DB_ERROR_UNSUPPORTED, EOPNOTSUPP),
	SD_BUS_ERROR_MAP(DB_ERROR_NO_DEVICE, ENODEV),
	SD_BUS_ERROR_MAP(DB_ERROR_BUSY, EBUSY),
	SD_BUS_ERROR_MAP(DB_ERROR_NO_MEMORY, ENOMEM),
	SD_BUS_ERROR_MAP_END,
};

const char *db_error_name_for_errno(int err)
{
	switch (err < 0 ? -err : err) {
	case ENOTCONN:
		return DB_ERROR_NOT_REGISTERED;
	case ENOENT:
		return DB_ERROR_NOT_FOUND;
	case EACCES:
	case EPERM:
		return DB_ERROR_PERMISSION_DENIED;
	case EDQUOT:
		return DB_ERROR_QUOTA_EXCEEDED;
	case EOPNOTSUPP:
		return DB_ERROR_UNSUPPORTED;
	case ENODEV:
	case ENXIO:
		return DB_ERROR_NO_DEVICE;
	case EBUSY:
		return DB_ERROR_BUSY;
	case ENOMEM:
		return DB_ERROR_NO_MEMORY;
	default:
		return DB_ERROR_INVALID_ARGUMENT;
	}
}

void db_errors_register(void)
{
	static int done;

	if (!done) {
		sd_bus_error_add_map(db_error_map);
		done = 1;
	}
}
