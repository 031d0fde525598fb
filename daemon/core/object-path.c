// SPDX-License-Identifier: MIT
#include "object-path.h"

#include <inttypes.h>
#include <stdio.h>

#include "protocol.h"
#include "registry.h"

const char *db_bus_buffer_path(const struct db_buffer *buf, char *out, size_t len)
{
	snprintf(out, len, DB_BUFFER_PATH_PREFIX "/%" PRIu64, buf->id);
	return out;
}

const char *db_bus_client_path(const struct db_client *c, char *out, size_t len)
{
	snprintf(out, len, DB_CLIENT_PATH_PREFIX "/%" PRIu64, c->id);
	return out;
}
