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
	SD_BUS_ERROR_MAP(DB_ERROR_FAILED, EIO),
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
	case ENOBUFS:
	case EMFILE:
	case ENFILE:
		return DB_ERROR_NO_MEMORY;
	case EINVAL:
	case EBADMSG: /* sd-bus: an argument of the wrong type or shape */
	case E2BIG:
	case ERANGE:
	case EOVERFLOW:
	case ENAMETOOLONG:
		return DB_ERROR_INVALID_ARGUMENT;
	default:
		/* Not the client's fault, and not one of the named conditions. */
		return DB_ERROR_FAILED;
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
