// SPDX-License-Identifier: MIT
#include "bus-text.h"

#include <errno.h>
#include <string.h>

#include "protocol.h"

int db_bus_check_text(const char *what, const char *key, const char *s, size_t max, unsigned flags,
		      sd_bus_error *error)
{
	size_t offset;
	int r;

	if (max == 0)
		max = DB_TEXT_MAX;
	r = db_text_check(s, max, flags, &offset);
	if (r == 0)
		return 0;
	/* The message names the argument and the byte, never the bytes: they are the trouble. */
	if (r == -ENAMETOOLONG)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "%s%s%s%s is longer than %zu bytes", what,
					 key ? ": '" : "", key ? key : "", key ? "'" : "", max);
	return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT, "%s%s%s%s %s (at byte %zu)",
				 what, key ? ": '" : "", key ? key : "", key ? "'" : "",
				 r == -EILSEQ ? "is not UTF-8"
				 : (flags & DB_TEXT_ASCII)
					 ? "may hold printable ASCII only"
					 : "may not hold control characters or line breaks",
				 offset);
}

int db_bus_read_text(sd_bus_message *m, const char *what, size_t max, unsigned flags,
		     const char **ret, sd_bus_error *error)
{
	const char *s;
	int r;

	r = sd_bus_message_read_basic(m, 's', &s);
	if (r <= 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "%s: expected a string (s)", what);
	r = db_bus_check_text(what, NULL, s, max, flags, error);
	if (r < 0)
		return r;
	*ret = s;
	return 0;
}

int db_bus_read_path(sd_bus_message *m, const char *what, const char **ret, sd_bus_error *error)
{
	const char *s;
	int r;

	r = sd_bus_message_read_basic(m, 'o', &s);
	if (r <= 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "%s: expected an object path (o)", what);
	r = db_bus_check_text(what, NULL, s, DB_BUS_PATH_MAX, DB_TEXT_ASCII, error);
	if (r < 0)
		return r;
	*ret = s;
	return 0;
}
